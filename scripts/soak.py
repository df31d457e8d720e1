#!/usr/bin/env python3
"""Soak of `vex-lens serve` under faults, on the real services (issue 8). Run by
scripts/soak.sh, which builds the binary and starts the services.

A steady producer (kcat) publishes OpenVEX documents at a fixed rate to a fresh
documents topic while, on a timeline scaled to --duration:
  * serve is killed (SIGKILL) and restarted
  * the MongoDB-wire server is stopped for 20 s (scripts/services.sh stop-mongo/start-mongo)
  * the Kafka broker is restarted (scripts/services.sh stop-kafka/start-kafka)
  * poison is produced: not JSON, binary, 10 MB, wrong schema, deep nesting on the
    documents topic, and a forged `verified` observation (no HMAC tag) on the
    observations topic
  * a second instance joins the group for a while, then is stopped (SIGTERM)
At the end:
  * every produced document is accounted for: all its observations durable in
    vex_observations, or the document in the DLQ with a reason; the forged observation is
    stored as unsigned (`unauthenticated_claim`); every poison message is in a DLQ with a
    reason
  * the stored consensus equals a clean replay: the same documents topic plus the
    observation produced directly (to a fresh observations topic, same key), consumed by
    a fresh group into a fresh database, digest for digest
  * serve's resident memory stayed under --rss-limit-mib (VmHWM/VmRSS of /proc/PID/status,
    sampled every 0.5 s, every instance)
Prints the counts (produced, durable, dead-lettered by reason, duplicates suppressed) and
the peak RSS; exits 1 on any loss, mismatch or bound exceeded.
"""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pymongo

HMAC_KEY = "vex-lens-soak-hmac-key-0123456789abcdef"
ISSUERS = ["ACME Product Security", "Example Linux Security Team", "Scanner Co"]
STATUSES = ["affected", "not_affected", "fixed", "under_investigation"]


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def document(i, rng, packages, vulns):
    """Document i: 3 statements about a small shared pool of pairs, so records change."""
    statements = []
    for j in range(3):
        st = rng.choice(STATUSES)
        s = {
            "vulnerability": {"name": f"CVE-2024-{1000 + rng.randrange(vulns)}"},
            "products": [{"@id": f"pkg:npm/soak-{rng.randrange(packages)}@1.{rng.randrange(3)}.0"}],
            "status": st,
        }
        if st == "not_affected":
            s["justification"] = "vulnerable_code_not_in_execute_path"
        if st == "affected":
            s["action_statement"] = "Upgrade."
        statements.append(s)
    return {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": f"https://soak.vex-lens.invalid/doc-{i}",
        "author": ISSUERS[i % len(ISSUERS)],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + i * 60)),
        "version": 1,
        "statements": statements,
    }


def forged_observation():
    return {
        "tenant": "default",
        "issuer": "ACME Product Security",
        "issuer_source": "document",
        "artifact": "pkg:npm/soak-forged@1.0.0",
        "package": "pkg:npm/soak-forged",
        "vulnerability": "CVE-2024-9999",
        "aliases": ["CVE-2024-9999"],
        "status": "not_affected",
        "status_original": "not_affected",
        "impact_statement": "forged",
        "timestamp": "2024-05-01T10:00:00Z",
        "timestamp_source": "statement",
        "document_id": "https://soak.vex-lens.invalid/forged",
        "document_digest": "sha256:" + "0" * 64,
        "position": 0,
        "format": "openvex",
        "signature": {"status": "verified", "keyid": "acme-key"},
    }


class Kcat:
    def __init__(self, brokers):
        self.brokers = brokers

    def produce_file(self, topic, key, path):
        subprocess.run(["kcat", "-P", "-b", self.brokers, "-t", topic, "-k", key, "-X", "message.max.bytes=16000000",
                        path], check=True, timeout=120)

    def consume(self, topic, fmt):
        r = subprocess.run(["kcat", "-C", "-b", self.brokers, "-t", topic, "-e", "-q", "-f", fmt, "-X",
                            "fetch.message.max.bytes=16000000"], capture_output=True, timeout=300)
        return r.stdout.decode("utf-8", "replace") if r.returncode == 0 else ""


class Producer(threading.Thread):
    """Produces documents at a fixed rate (key = `doc-<n>`): each second's documents go
    through one `kcat -P`, retried until kcat exits 0 (all acknowledged), so a broker
    restart delays documents but loses none (a retry may duplicate some on the topic:
    the same observations, which the store keeps once)."""

    def __init__(self, brokers, topic, rate, seed):
        super().__init__(daemon=True)
        self.brokers, self.topic = brokers, topic
        self.rate, self.rng, self.stop, self.sent, self.retries = rate, random.Random(seed), threading.Event(), {}, 0

    def send(self, lines):
        while True:
            r = subprocess.run(["kcat", "-P", "-b", self.brokers, "-t", self.topic, "-K", "\t", "-X", "acks=all",
                                "-X", "message.timeout.ms=10000"], input="".join(lines).encode(),
                               capture_output=True, timeout=120)
            if r.returncode == 0:
                return
            self.retries += 1
            time.sleep(1)

    def run(self):
        i, t0 = 0, time.time()
        while not self.stop.is_set():
            lines = []
            target = int((time.time() - t0 + 1) * self.rate)
            while i < target:
                doc = document(i, self.rng, packages=40, vulns=15)
                lines.append(f"doc-{i}\t" + json.dumps(doc, separators=(",", ":")) + "\n")
                self.sent[f"doc-{i}"] = doc
                i += 1
            if lines:
                self.send(lines)
            time.sleep(max(0.0, t0 + i / self.rate - time.time()))

    def finish(self):
        self.stop.set()
        self.join()
        return f"{self.retries} kcat retries"


class Serve:
    def __init__(self, args, names, name, tmp, group=None, obs_topic=None, dlq=None, db=None):
        self.port = free_port()
        self.log = os.path.join(tmp, f"serve-{name}.log")
        env = dict(os.environ, RUST_LOG="info", VEXLENS_KAFKA__OBSERVATIONS_HMAC_KEY=HMAC_KEY,
                   VEXLENS_KAFKA__SESSION_TIMEOUT_MS="6000", VEXLENS_KAFKA__DRAIN_TIMEOUT_MS="3000")
        cmd = [args.binary, "serve", "--kafka-brokers", args.brokers, "--topic", names["topic"],
               "--observations-topic", obs_topic or names["obs"], "--dlq-topic", dlq or names["dlq"],
               "--group-id", group or names["group"], "--mongo-uri", args.mongo_uri, "--mongo-db", db or names["db"],
               "--listen", f"127.0.0.1:{self.port}"]
        self.name = name
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=args.repo)

    def ready(self, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/liveness", timeout=2) as r:
                    if r.status == 200:
                        return True
            except Exception:
                pass
            time.sleep(0.5)
        return False

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def terminate(self, timeout=180):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            self.kill9()
            return False


class RssSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.serves, self.peak_kib, self.stop = [], 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            for s in list(self.serves):
                try:
                    status = open(f"/proc/{s.proc.pid}/status").read()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith(("VmHWM:", "VmRSS:")):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            time.sleep(0.5)


def services(args, *cmd):
    subprocess.run([os.path.join(args.repo, "scripts/services.sh"), *cmd], check=True, stdout=sys.stderr,
                   timeout=600)


def stored_observations(db):
    out = {}
    for d in db.vex_observations.find({}, {"observation_json": 1}):
        out[d["_id"]] = json.loads(d["observation_json"])
    return out


def consensus(db):
    return {(d["tenant"], d["artifact"], d["vulnerability"]): d["consensus_digest"]
            for d in db.vex_consensus.find({}, {"tenant": 1, "artifact": 1, "vulnerability": 1,
                                               "consensus_digest": 1})}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--mongo-uri", required=True)
    ap.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--duration", type=float, default=420, help="seconds of producing")
    ap.add_argument("--rate", type=float, default=10, help="documents per second")
    ap.add_argument("--mongo-outage", type=float, default=20)
    ap.add_argument("--settle", type=float, default=240, help="seconds to wait for the backlog")
    ap.add_argument("--rss-limit-mib", type=int, default=512)
    args = ap.parse_args()
    base = f"soak_{os.getpid()}_{int(time.time())}"
    names = {"topic": f"{base}.documents", "obs": f"{base}.observations", "dlq": f"{base}.documents.dlq",
             "group": base, "db": base}
    tmp = tempfile.mkdtemp(prefix="vex-lens-soak-")
    kcat = Kcat(args.brokers)
    client = pymongo.MongoClient(args.mongo_uri, serverSelectionTimeoutMS=5000)
    failures = []
    log(f"names {base}; logs in {tmp}; {args.duration:.0f} s at {args.rate}/s")

    rss = RssSampler()
    rss.start()
    a = Serve(args, names, "a1", tmp)
    rss.serves.append(a)
    if not a.ready():
        sys.exit(f"serve did not start; see {a.log}")
    producer = Producer(args.brokers, names["topic"], args.rate, seed=8)
    producer.start()
    t0 = time.time()
    at = lambda f: time.sleep(max(0.0, t0 + f * args.duration - time.time()))  # noqa: E731

    at(0.08)
    log("kill -9 serve, restart it")
    a.kill9()
    a = Serve(args, names, "a2", tmp)
    rss.serves.append(a)
    a.ready()

    at(0.18)
    log(f"stop the MongoDB-wire server for {args.mongo_outage:.0f} s")
    services(args, "stop-mongo")
    time.sleep(args.mongo_outage)
    services(args, "start-mongo")

    at(0.40)
    log("restart the Kafka broker")
    services(args, "stop-kafka")
    services(args, "start-kafka")

    at(0.52)
    log("poison")
    poison = {}
    p = os.path.join(tmp, "not-json")
    open(p, "wb").write(b"{this is not json")
    poison["poison-not-json"] = p
    p = os.path.join(tmp, "binary")
    open(p, "wb").write(bytes(random.Random(1).randrange(256) for _ in range(4096)))
    poison["poison-binary"] = p
    p = os.path.join(tmp, "huge")
    big = document(10**6, random.Random(2), 40, 15)
    big["padding"] = "x" * (10 * 1024 * 1024)
    open(p, "w").write(json.dumps(big))
    poison["poison-10mb"] = p
    p = os.path.join(tmp, "wrong-schema")
    open(p, "w").write('{"hello": "world", "statements": 5}')
    poison["poison-wrong-schema"] = p
    p = os.path.join(tmp, "deep")
    open(p, "w").write("[" * 100000 + "]" * 100000)
    poison["poison-deep"] = p
    for key, path in poison.items():
        kcat.produce_file(names["topic"], key, path)
    forged_path = os.path.join(tmp, "forged.json")
    open(forged_path, "w").write(json.dumps(forged_observation()))
    forged_key = "default/pkg:npm/soak-forged"
    kcat.produce_file(names["obs"], forged_key, forged_path)

    at(0.60)
    log("a second instance joins")
    b = Serve(args, names, "b", tmp)
    rss.serves.append(b)
    b.ready()
    joined = time.time()
    at(0.80)
    time.sleep(max(0.0, joined + 10 - time.time()))
    log("the second instance leaves (SIGTERM)")
    if not b.terminate():
        failures.append("the second instance did not exit 0 on SIGTERM")
    rss.serves.remove(b)

    at(1.0)
    producer_err = producer.finish()
    sent = producer.sent
    log(f"produced {len(sent)} documents ({producer_err}); waiting for the backlog")

    # --- accounting ------------------------------------------------------------------------
    on_topic = set(k for k in kcat.consume(names["topic"], "%k\n").splitlines() if k.startswith("doc-"))
    not_acked = set(sent) - on_topic
    if not_acked:
        log(f"WARNING: {len(not_acked)} documents the producer sent are not on the topic (kcat: "
            f"{producer_err.strip()[:300]})")
    db = client[names["db"]]
    expected = {k: {d["@id"]} for k, d in sent.items() if k in on_topic}
    want_obs = {k: len(d["statements"]) for k, d in sent.items() if k in on_topic}

    def account():
        obs = stored_observations(db)
        per_doc = {}
        for o in obs.values():
            per_doc[o.get("document_id")] = per_doc.get(o.get("document_id"), 0) + 1
        dlq = {}
        for line in kcat.consume(names["dlq"], "%k\t%h\n").splitlines():
            key, _, headers = line.partition("\t")
            reason = next((h.split("=", 1)[1] for h in headers.split(",") if h.startswith("vex-lens-error=")), None)
            dlq[key] = reason
        for line in kcat.consume(names["obs"] + ".dlq", "%k\t%h\n").splitlines():
            key, _, headers = line.partition("\t")
            reason = next((h.split("=", 1)[1] for h in headers.split(",") if h.startswith("vex-lens-error=")), None)
            dlq["obs:" + key] = reason
        durable = {k for k, d in sent.items() if k in on_topic and per_doc.get(d["@id"], 0) >= want_obs[k]}
        dead = {k for k in on_topic if k in dlq}
        return obs, dlq, durable, dead

    end = time.time() + args.settle
    while True:
        obs, dlq, durable, dead = account()
        lost = set(expected) - durable - dead
        poison_done = all(k in dlq for k in poison)
        forged = [o for o in obs.values() if o.get("artifact") == "pkg:npm/soak-forged@1.0.0"]
        if (not lost and poison_done and forged) or time.time() > end:
            break
        time.sleep(3)
    # Records settle after their observations (same batch): wait until they stop changing.
    stable, last = 0, None
    while stable < 2 and time.time() < end + 30:
        now = consensus(db)
        stable = stable + 1 if now == last else 0
        last = now
        time.sleep(2)
    main_records = last or {}
    log("stopping serve")
    if not a.terminate():
        failures.append("serve did not exit 0 on SIGTERM")
    rss.stop.set()

    # --- clean replay ----------------------------------------------------------------------
    log("clean replay: fresh group, fresh observations topic, fresh database")
    replay = {"group": base + "_replay", "obs": base + ".replay.observations", "dlq": base + ".replay.dlq",
              "db": base + "_replay"}
    r = Serve(args, names, "replay", tmp, group=replay["group"], obs_topic=replay["obs"], dlq=replay["dlq"],
              db=replay["db"])
    r.ready()
    time.sleep(2)
    kcat.produce_file(replay["obs"], forged_key, forged_path)
    rdb = client[replay["db"]]
    want_ids = set(obs)
    end = time.time() + args.settle
    stable, last_r = 0, None
    while time.time() < end:
        got_ids = set(d["_id"] for d in rdb.vex_observations.find({}, {"_id": 1}))
        now = consensus(rdb)
        if got_ids >= want_ids:
            stable = stable + 1 if now == last_r else 0
            if stable >= 2:
                break
        last_r = now
        time.sleep(2)
    replay_records = last_r or {}
    if not r.terminate():
        failures.append("the replay serve did not exit 0 on SIGTERM")

    # --- report ----------------------------------------------------------------------------
    obs_messages = len(kcat.consume(names["obs"], "%o\n").splitlines())
    reasons = {}
    for k, v in dlq.items():
        reasons[v] = reasons.get(v, 0) + 1
    forged_ok = bool(forged) and all(o["signature"]["status"] == "unsigned"
                                     and o["signature"].get("reason") == "unauthenticated_claim" for o in forged)
    diff = {k for k in set(main_records) | set(replay_records) if main_records.get(k) != replay_records.get(k)}
    peak_mib = rss.peak_kib / 1024
    print(f"produced: {len(sent)} documents ({len(on_topic)} acknowledged on the topic), "
          f"{len(poison)} poison documents, 1 forged observation")
    print(f"durable: {len(durable)} documents (all their observations stored), "
          f"{len(obs)} distinct observations stored")
    print(f"dead-lettered: {len(dlq)} ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items(), key=str))}); "
          f"good documents among them: {len(dead)}")
    print(f"lost: {len(lost)}")
    print(f"duplicates suppressed: {obs_messages - len(obs)} "
          f"({obs_messages} messages on the observations topic, {len(obs)} distinct observations)")
    print(f"consensus: {len(main_records)} records; clean replay {len(replay_records)}; differing pairs {len(diff)}")
    print(f"forged verified observation stored as unsigned/unauthenticated_claim: {forged_ok}")
    print(f"serve peak RSS (VmHWM/VmRSS, every instance): {peak_mib:.0f} MiB (limit {args.rss_limit_mib} MiB)")
    if lost:
        failures.append(f"{len(lost)} documents lost, e.g. {sorted(lost)[:5]}")
    missing_poison = [k for k in poison if not dlq.get(k)]
    if missing_poison:
        failures.append(f"poison not dead-lettered with a reason: {missing_poison}")
    if not forged_ok:
        failures.append("the forged observation is not stored as unsigned")
    if diff or not main_records:
        failures.append(f"stored consensus != clean replay ({len(diff)} pairs differ, e.g. {sorted(diff)[:3]})")
    if peak_mib >= args.rss_limit_mib:
        failures.append(f"peak RSS {peak_mib:.0f} MiB >= {args.rss_limit_mib} MiB")
    for d in (names["db"], replay["db"]):
        client.drop_database(d)
    if failures:
        for f in failures:
            print(f"FAIL: {f}")
        print(f"logs: {tmp}")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
