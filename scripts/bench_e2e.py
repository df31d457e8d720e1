#!/usr/bin/env python3
"""End-to-end benchmark of `vex-lens serve` on the real services (issue 7).

Run by scripts/bench.sh (which builds the binary and starts the services); prints each
figure with what produced it. Measured in the same run, so ratios hold on a noisy machine:

  workload   vexhub's OpenVEX documents, copied K times with every purl renamed
             (`<name>` -> `<name>-s<k>`), so each copy is a new set of packages
  (a) broker limit   kcat reading the documents topic to /dev/null
  (b) store limit    the documents serve wrote (observations, records, history,
                     conflicts) inserted again with pymongo, unordered insert_many of 500,
                     into a fresh database on the same server (not through our store code)
  (b+)               the same into collections with the service's secondary indexes
  drain              serve (Kafka + MongoDB) from first fetch to the last durable record
  writes             documents and index entries serve wrote to MongoDB per observation
                     (vex_store_writes_total / vex_observations_applied_total, after the drain)
  latency            documents of 10 statements about fresh packages at a fixed offered
                     rate; produce -> durable (the record's changed_at_ms) per document,
                     and vex_consensus_latency_seconds from /metrics; measured (and
                     printed) first, on a server busy with nothing else

Nothing is asserted: the figures are for docs/performance.md and the issue note.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pymongo
import pymongo.errors

from corpus_copies import rename_purls  # scripts/, beside this file


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def load_vexhub(corpus, limit):
    files = sorted(f for f in os.listdir(corpus) if f.endswith('.json'))[:limit]
    return [json.load(open(os.path.join(corpus, f))) for f in files]


def workload(docs, copies):
    """Documents (compact JSON, one per line) of `copies` renamed copies of `docs`."""
    out = []
    for k in range(copies):
        for i, d in enumerate(docs):
            c = rename_purls(d, f"-s{k}")
            c["@id"] = f"{d.get('@id', 'doc')}#bench-s{k}-{i}"
            out.append(json.dumps(c, separators=(',', ':')))
    return out


def small_docs(docs, per_doc, count):
    """`count` documents of `per_doc` statements, each about packages no other one names."""
    statements = [s for d in docs for s in d.get("statements", [])]
    out = []
    for i in range(count):
        chunk = [statements[(i * per_doc + j) % len(statements)] for j in range(per_doc)]
        doc = {
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": f"https://bench.vex-lens.invalid/lat-{i}",
            "author": "Bench Latency",
            "timestamp": "2024-07-09T11:38:00Z",
            "version": 1,
            "statements": rename_purls(chunk, f"-l{i}"),
        }
        out.append(json.dumps(doc, separators=(',', ':')))
    return out


def count_lines(cmd, stdin_lines):
    p = subprocess.run(cmd, input="\n".join(stdin_lines) + "\n", capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {p.stderr[-2000:]}")
    return [l for l in p.stdout.splitlines() if l.strip()]


def expected(binary, lines, tmp):
    """(unique observation ids, records) that `vex-lens` computes from the documents."""
    d = tempfile.mkdtemp(dir=tmp)
    for i, l in enumerate(lines):
        with open(os.path.join(d, f"{i:06d}.json"), "w") as f:
            f.write(l)
    obs = subprocess.run([binary, "normalise", d], capture_output=True, text=True, check=True).stdout
    ids = {json.loads(l)["id"] for l in obs.splitlines() if l.strip()}
    recs = subprocess.run([binary, "consensus", d], capture_output=True, text=True, check=True).stdout
    n_recs = sum(1 for l in recs.splitlines() if l.strip())
    return len(ids), n_recs


def produce(brokers, topic, lines):
    p = subprocess.Popen(["kcat", "-P", "-b", brokers, "-t", topic, "-X", "message.max.bytes=16000000"],
                         stdin=subprocess.PIPE, text=True)
    for l in lines:
        p.stdin.write(l + "\n")
    p.stdin.close()
    if p.wait() != 0:
        raise SystemExit("kcat produce failed")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Serve:
    def __init__(self, binary, brokers, mongo_uri, db, topic, group, tmp):
        self.port = free_port()
        self.logf = open(os.path.join(tmp, f"serve-{db}.log"), "w")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        # Kafka mode refuses to start without the observations topic's HMAC key.
        env.setdefault("VEXLENS_KAFKA__OBSERVATIONS_HMAC_KEY", "vex-lens-bench-hmac-key-0123456789abcdef")
        self.proc = subprocess.Popen(
            [binary, "serve", "--kafka-brokers", brokers, "--mongo-uri", mongo_uri, "--mongo-db", db,
             "--topic", topic, "--observations-topic", topic + ".obs", "--group-id", group,
             "--listen", f"127.0.0.1:{self.port}", "--data-dir", os.path.join(tmp, db)],
            stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/readiness", timeout=2).status == 200:
                    return
            except Exception:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited ({self.proc.returncode}); log {self.logf.name}")
            time.sleep(0.2)
        raise SystemExit(f"serve not ready; log {self.logf.name}")

    def metrics(self):
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def counted(db):
    return db.vex_observations.estimated_document_count(), db.vex_consensus.estimated_document_count()


def applied(serve):
    m = re.search(r"^vex_observations_applied_total(?:\{[^}]*\})? (\S+)$", serve.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def store_writes(metrics_text):
    """vex_store_writes_total of the MongoDB store by (kind, collection), and the
    observations applied, from one /metrics scrape."""
    writes = {}
    for m in re.finditer(r'^vex_store_writes_total\{([^}]*)\} (\S+)$', metrics_text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("store") == "mongodb":
            key = (labels["kind"], labels["collection"])
            writes[key] = writes.get(key, 0.0) + float(m.group(2))
    a = re.search(r"^vex_observations_applied_total(?:\{[^}]*\})? (\S+)$", metrics_text, re.M)
    return writes, float(a.group(1)) if a else 0.0


def writes_per_observation(metrics_text):
    """The line the bench prints: documents and index entries written per observation."""
    writes, obs = store_writes(metrics_text)
    if obs <= 0:
        return "writes per observation: no observation applied"
    per = lambda kind: sum(v for (k, _), v in writes.items() if k == kind) / obs
    by = ", ".join(f"{c} {v / obs:.2f}" for (k, c), v in sorted(writes.items()) if k == "document" and v > 0)
    return (f"MongoDB writes per observation (vex_store_writes_total / vex_observations_applied_total): "
            f"{per('document'):.2f} documents + {per('index_entry'):.2f} index entries = "
            f"{per('document') + per('index_entry'):.2f} (documents by collection: {by})")


def wait_durable(db, n_obs, n_recs, timeout, serve=None):
    """The time at which all observations and records are durable. With `serve`, polls its
    own count of durable observations (vex_observations_applied_total; an observation is
    counted once its records are durable too), then checks the store's counts once: a
    count on SecantusDB scans the collection and holds the server for ~0.5 s, so polling
    it would slow down the very writes being timed. Without, or if the check falls short,
    polls the counts."""
    start = time.time()
    if serve is not None:
        while time.time() - start < timeout and applied(serve) < n_obs:
            time.sleep(0.05)
        done = time.time()
        o, r = counted(db)
        if o >= n_obs and r >= n_recs:
            return done
    while time.time() - start < timeout:
        o, r = counted(db)
        if o >= n_obs and r >= n_recs:
            return time.time()
        time.sleep(0.25)
    o, r = counted(db)
    raise SystemExit(f"not durable after {timeout}s: {o}/{n_obs} observations, {r}/{n_recs} records")


def quantile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def histogram_quantiles(metrics_text, name):
    buckets = []
    for line in metrics_text.splitlines():
        m = re.match(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, float(m.group(2))))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    out = {}
    for q in (0.5, 0.95, 0.99):
        out[q] = next(le for le, c in buckets if c >= q * total)
    return out, int(total)


def drop(client, name):
    """Drops a database of the run; a failure is reported, not fatal (the figures are out).
    SecantusDB keeps the space of dropped databases: stop the server and delete its data
    directory between full runs (a full run writes ~10 GB)."""
    try:
        client.drop_database(name)
    except pymongo.errors.PyMongoError as e:
        log(f"warning: database {name} not dropped: {e}")


def measure_latency(args, client, docs, run, tmp):
    """Latency at a fixed offered rate, on a server busy with nothing else (run first:
    after the drain the server is still reclaiming the dropped databases, which shows as
    stalls in the tail). Returns the lines to print."""
    per_doc = 10
    docs_per_s = max(1, args.rate // per_doc)
    count = docs_per_s * args.latency_seconds
    lat_lines = small_docs(docs, per_doc, count)
    lat_obs, lat_recs = expected(args.binary, lat_lines, tmp)
    lat_run = run + "lat"
    serve = Serve(args.binary, args.brokers, args.mongo_uri, lat_run, lat_run + ".documents", lat_run, tmp)
    # Warm up: one document through the whole path, so the consumer group has its
    # partitions before the clock starts.
    warm = small_docs(docs, per_doc, count + 1)[count:]
    warm_obs, warm_recs = expected(args.binary, warm, tmp)
    produce(args.brokers, lat_run + ".documents", warm)
    wait_durable(client[lat_run], warm_obs, warm_recs, args.timeout, serve)
    p = subprocess.Popen(["kcat", "-P", "-b", args.brokers, "-t", lat_run + ".documents", "-T"],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, bufsize=1)
    sent = {}
    start = time.time()
    for i, l in enumerate(lat_lines):
        due = start + i / docs_per_s
        now = time.time()
        if due > now:
            time.sleep(due - now)
        p.stdin.write(l + "\n")
        p.stdin.flush()
        sent[i] = time.time() * 1000.0
    p.stdin.close()
    p.wait()
    offered = lat_obs / (time.time() - start)
    wait_durable(client[lat_run], lat_obs + warm_obs, lat_recs + warm_recs, args.timeout, serve)
    durable = {}
    for d in client[lat_run].vex_consensus.find({}, {"package": 1, "changed_at_ms": 1}):
        m = re.search(r"-l(\d+)$", d["package"])
        if m and int(m.group(1)) < count:
            i = int(m.group(1))
            durable[i] = max(durable.get(i, 0), d["changed_at_ms"])
    lat = [durable[i] - sent[i] for i in sent if i in durable]
    hist = histogram_quantiles(serve.metrics(), "vex_consensus_latency_seconds")
    serve.stop()
    drop(client, lat_run)
    out = []
    out.append(f"latency: {len(lat)} documents of {per_doc} statements at {offered:,.0f} observations/s offered "
          f"({lat_obs} observations, {lat_recs} records)")
    out.append(f"latency (bench clock, produce -> durable record): p50 {quantile(lat, 0.5):.0f} ms, "
          f"p95 {quantile(lat, 0.95):.0f} ms, p99 {quantile(lat, 0.99):.0f} ms (target p99 < 100 ms)")
    if hist:
        q, n = hist
        out.append(f"latency (vex_consensus_latency_seconds, bucket upper bounds, {n} observations): "
                      f"p50 <= {q[0.5]} s, p95 <= {q[0.95]} s, p99 <= {q[0.99]} s")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--mongo-uri", required=True)
    ap.add_argument("--copies", type=int, default=7)
    ap.add_argument("--docs", type=int, default=1000, help="vexhub documents per copy")
    ap.add_argument("--rate", type=int, default=500, help="offered observations/s for the latency run")
    ap.add_argument("--latency-seconds", type=int, default=60)
    ap.add_argument("--timeout", type=int, default=1800)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="vexlens-bench-")
    run = f"bench{int(time.time())}"
    client = pymongo.MongoClient(args.mongo_uri)

    docs = load_vexhub(args.corpus, args.docs)
    lines = workload(docs, args.copies)
    n_obs, n_recs = expected(args.binary, lines, tmp)
    log(f"workload: {len(lines)} documents ({args.copies} renamed copies of {len(docs)} vexhub documents), "
        f"{n_obs} observations, {n_recs} records")
    for line in measure_latency(args, client, docs, run, tmp):
        print(line, flush=True)

    topic = f"{run}.documents"
    produce(args.brokers, topic, lines)

    # (a) the broker limit: read the whole topic to /dev/null.
    t0 = time.time()
    subprocess.run(["kcat", "-C", "-b", args.brokers, "-t", topic, "-o", "beginning", "-e", "-q",
                    "-X", "fetch.message.max.bytes=16000000", "-f", "%s\n"], stdout=subprocess.DEVNULL, check=True)
    broker_s = time.time() - t0
    broker_rate = n_obs / broker_s

    # drain: serve from start to the last durable record.
    t0 = time.time()
    serve = Serve(args.binary, args.brokers, args.mongo_uri, run, topic, run, tmp)
    ready = time.time()
    done = wait_durable(client[run], n_obs, n_recs, args.timeout, serve)
    drain_s = done - ready
    drain_rate = n_obs / drain_s
    writes_line = writes_per_observation(serve.metrics())
    serve.stop()

    # (b) the store limit: the same documents, raw driver, unordered batches of 500.
    src, dst = client[run], client[run + "_raw"]
    collections = ["vex_observations", "vex_consensus_history", "vex_conflict_queue", "vex_consensus"]
    data = {c: list(src[c].find({})) for c in collections}
    written = sum(len(v) for v in data.values())
    def insert_all(db):
        """Seconds to insert every collection's documents, unordered batches of 500."""
        t0 = time.time()
        for c in collections:
            docs_c = data[c]
            for i in range(0, len(docs_c), 500):
                db[c].insert_many(docs_c[i:i + 500], ordered=False)
        return time.time() - t0

    store_s = insert_all(dst)
    store_rate = n_obs / store_s
    # (b+) the same into collections with the secondary indexes the service's reads need
    # (issue 7 asks for them; SecantusDB maintains each index per document in Python).
    dst_i = client[run + "_raw_indexed"]
    for c in collections:
        for name, info in src[c].index_information().items():
            if name != "_id_":
                dst_i[c].create_index(info["key"], name=name, unique=info.get("unique", False))
    store_i_s = insert_all(dst_i)
    store_i_rate = n_obs / store_i_s
    # For the profile: the same, with the current records as bulk ReplaceOne upserts of 500
    # (what keeping one current record per pair costs on this server; not the bar).
    dst2 = client[run + "_raw_upsert"]
    t0 = time.time()
    for c in collections:
        docs_c = data[c]
        for i in range(0, len(docs_c), 500):
            if c == "vex_consensus":
                dst2[c].bulk_write([pymongo.ReplaceOne({"_id": d["_id"]}, d, upsert=True)
                                    for d in docs_c[i:i + 500]], ordered=False)
            else:
                dst2[c].insert_many(docs_c[i:i + 500], ordered=False)
    upsert_s = time.time() - t0

    limit = min(broker_rate, store_rate)
    print(f"e2e workload: {len(lines)} documents, {n_obs} observations, {n_recs} records "
          f"({written} documents written to MongoDB)")
    print(f"(a) broker limit: kcat -C to /dev/null: {broker_s:.2f} s = {broker_rate:,.0f} observations/s")
    print(f"(b) store limit: pymongo insert_many(ordered=False) x500 of the {written} written documents: "
          f"{store_s:.2f} s = {store_rate:,.0f} observations/s")
    print(f"(b+) the same into collections with the service's secondary indexes: "
          f"{store_i_s:.2f} s = {store_i_rate:,.0f} observations/s")
    print(f"(b') the same with vex_consensus as bulk ReplaceOne upserts of 500: {upsert_s:.2f} s = "
          f"{n_obs / upsert_s:,.0f} observations/s (for the profile, not the bar)")
    print(f"drain: vex-lens serve (Kafka + MongoDB), ready -> all durable: {drain_s:.2f} s = "
          f"{drain_rate:,.0f} observations/s")
    print(f"drain / min(a, b) = {drain_rate / limit:.2f} (target >= 0.7)")
    print(writes_line)
    print(f"drain / min(a, b+) = {drain_rate / min(broker_rate, store_i_rate):.2f} (the bar with the same indexes)")
    drop(client, run + "_raw")
    drop(client, run + "_raw_indexed")
    drop(client, run + "_raw_upsert")
    drop(client, run)


if __name__ == "__main__":
    main()
