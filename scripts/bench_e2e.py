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
                     printed) first, on a server busy with nothing else; with the CPU
                     seconds serve and (when it runs here) the server used meanwhile

With --baseline-binary B (issue 20), the latency and the drain are measured for B and for
--binary in the same run on the same services, alternating (baseline first unless
--new-first; fresh database, topic and group names per binary, the same workload lines;
every database is dropped only at the end, so neither binary meets the other's reclaim),
each binary's figures printed labelled, then the ratios new / baseline of the drain's
observations/s and of the latency p99 (bench clock; the median of --latency-rounds runs
per binary, alternating, and the medians of their CPU seconds). The baseline (bafbf91) has
no vex_store_writes_total, and SecantusDB's serverStatus has no document counters, so the
writes of both binaries are also counted by a proxy on loopback between serve and the
server (WriteCounter: it forwards every byte and reads the replies of the write
commands, as the new binary's metric does) in one more drain of --writes-copies copies
per binary; the new binary's own metric from that drain is printed beside it as a check.
Counting what each collection holds after the drain would not be writes (a document
replaced ten times is there once).

Nothing is asserted: the figures are for docs/performance.md and the issue note.
"""
import argparse
import atexit
import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import bson
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


# Every `serve` this bench started and has not stopped: stopped when the bench exits for any
# reason (an exception, Ctrl-C, SIGTERM), so a failed run leaves no service behind to
# compete with the next run for the machine and the database server.
_RUNNING = []


def _stop_running():
    for s in list(_RUNNING):
        s.stop()


atexit.register(_stop_running)
# SIGTERM ends the bench through SystemExit, so the atexit handler runs.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


class Serve:
    def __init__(self, binary, brokers, mongo_uri, db, topic, group, tmp, config=None):
        self.port = free_port()
        self.logf = open(os.path.join(tmp, f"serve-{db}.log"), "w")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        # Kafka mode refuses to start without the observations topic's HMAC key.
        env.setdefault("VEXLENS_KAFKA__OBSERVATIONS_HMAC_KEY", "vex-lens-bench-hmac-key-0123456789abcdef")
        self.proc = subprocess.Popen(
            [binary, "serve", "--kafka-brokers", brokers, "--mongo-uri", mongo_uri, "--mongo-db", db,
             "--topic", topic, "--observations-topic", topic + ".obs", "--group-id", group,
             "--listen", f"127.0.0.1:{self.port}", "--data-dir", os.path.join(tmp, db)]
            + (["--config", config] if config else []),
            stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        _RUNNING.append(self)
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
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def counted(db):
    return db.vex_observations.estimated_document_count(), db.vex_consensus.estimated_document_count()


def applied(serve):
    return applied_from(serve.metrics())


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


def process_cpu_seconds(pid):
    """User + system CPU seconds of a process on this machine, or None (not here, gone)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def server_pid(client):
    """The MongoDB-wire server's process id when it runs on this machine (serverStatus
    names it and the address is loopback), else None: its CPU is then not measured."""
    host = (client.address or ("", 0))[0]
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    try:
        pid = client.admin.command("serverStatus").get("pid")
    except pymongo.errors.PyMongoError:
        return None
    return pid if isinstance(pid, int) and process_cpu_seconds(pid) is not None else None


def measure_latency(args, client, docs, run, tmp, binary, drop_db=True, config=None):
    """Latency of `binary` at a fixed offered rate, on a server busy with nothing else (run
    first: after the drain the server is still reclaiming the dropped databases, which
    shows as stalls in the tail). Returns the lines to print, the p99 (ms, bench clock)
    and the CPU seconds of serve and of the server in the timed window (from the first
    document produced to the last record durable; the server's None when it is not on
    this machine); with drop_db=False the caller drops database `run + "lat"`. On a
    server that is near one core's worth of work at this rate (SecantusDB is one Python
    process) p99 is the server's queue, and it moves with the server's CPU per run, which
    moves with the machine: the CPU line says which case a run was."""
    per_doc = 10
    docs_per_s = max(1, args.rate // per_doc)
    count = docs_per_s * args.latency_seconds
    lat_lines = small_docs(docs, per_doc, count)
    lat_obs, lat_recs = expected(binary, lat_lines, tmp)
    lat_run = run + "lat"
    serve = Serve(binary, args.brokers, args.mongo_uri, lat_run, lat_run + ".documents", lat_run, tmp, config)
    # Warm up: one document through the whole path, so the consumer group has its
    # partitions before the clock starts.
    warm = small_docs(docs, per_doc, count + 1)[count:]
    warm_obs, warm_recs = expected(binary, warm, tmp)
    produce(args.brokers, lat_run + ".documents", warm)
    wait_durable(client[lat_run], warm_obs, warm_recs, args.timeout, serve)
    p = subprocess.Popen(["kcat", "-P", "-b", args.brokers, "-t", lat_run + ".documents", "-T"],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, bufsize=1)
    sent = {}
    spid = server_pid(client)
    cpu0 = (process_cpu_seconds(serve.proc.pid), process_cpu_seconds(spid) if spid else None)
    start = time.time()
    for i, l in enumerate(lat_lines):
        due = start + i / docs_per_s
        now = time.time()
        if due > now:
            time.sleep(due - now)
        try:
            p.stdin.write(l + "\n")
            p.stdin.flush()
        except BrokenPipeError:
            raise SystemExit(f"kcat (the latency run's producer) exited with {p.wait()} after {i} documents")
        sent[i] = time.time() * 1000.0
    p.stdin.close()
    p.wait()
    offered = lat_obs / (time.time() - start)
    wait_durable(client[lat_run], lat_obs + warm_obs, lat_recs + warm_recs, args.timeout, serve)
    window = time.time() - start
    cpu1 = (process_cpu_seconds(serve.proc.pid), process_cpu_seconds(spid) if spid else None)
    cpu = {who: (b - a if a is not None and b is not None else None)
           for who, a, b in (("serve", cpu0[0], cpu1[0]), ("server", cpu0[1], cpu1[1]))}
    durable = {}
    for d in client[lat_run].vex_consensus.find({}, {"package": 1, "changed_at_ms": 1}):
        m = re.search(r"-l(\d+)$", d["package"])
        if m and int(m.group(1)) < count:
            i = int(m.group(1))
            durable[i] = max(durable.get(i, 0), d["changed_at_ms"])
    lat = [durable[i] - sent[i] for i in sent if i in durable]
    hist = histogram_quantiles(serve.metrics(), "vex_consensus_latency_seconds")
    serve.stop()
    if drop_db:
        drop(client, lat_run)
    out = []
    out.append(f"latency: {len(lat)} documents of {per_doc} statements at {offered:,.0f} observations/s offered "
          f"({lat_obs} observations, {lat_recs} records)")
    p99 = quantile(lat, 0.99)
    out.append(f"latency (bench clock, produce -> durable record): p50 {quantile(lat, 0.5):.0f} ms, "
          f"p95 {quantile(lat, 0.95):.0f} ms, p99 {p99:.0f} ms (target p99 < 100 ms)")
    if hist:
        q, n = hist
        out.append(f"latency (vex_consensus_latency_seconds, bucket upper bounds, {n} observations): "
                      f"p50 <= {q[0.5]} s, p95 <= {q[0.95]} s, p99 <= {q[0.99]} s")
    server = (f"MongoDB server {cpu['server']:.1f} s ({cpu['server'] / window:.0%} of one core)"
              if cpu["server"] is not None else "MongoDB server not on this machine")
    serve_cpu = f"{cpu['serve']:.1f} s" if cpu["serve"] is not None else "?"
    out.append(f"latency CPU in the timed window ({window:.0f} s): serve {serve_cpu}, {server}")
    return out, p99, cpu


def drain(args, client, binary, run, topic, n_obs, n_recs, tmp, mongo_uri=None, config=None):
    """serve `binary` on `topic` (already produced) from ready to the last durable record.
    Returns (seconds, observations/s, the /metrics text after the drain)."""
    serve = Serve(binary, args.brokers, mongo_uri or args.mongo_uri, run, topic, run, tmp, config)
    ready = time.time()
    done = wait_durable(client[run], n_obs, n_recs, args.timeout, serve)
    drain_s = done - ready
    metrics_text = serve.metrics()
    serve.stop()
    return drain_s, n_obs / drain_s, metrics_text


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def op_msg_sections(body):
    """(the kind-0 body document, {identifier: [documents]} of the kind-1 sections) of an
    OP_MSG message after its 16-byte header."""
    flags = struct.unpack_from("<I", body, 0)[0]
    end = len(body) - (4 if flags & 1 else 0)  # checksumPresent
    pos, main, seqs = 4, None, {}
    while pos < end:
        kind = body[pos]
        pos += 1
        size = struct.unpack_from("<i", body, pos)[0]
        if kind == 0:
            main = bson.decode(body[pos:pos + size])
        else:
            nul = body.index(b"\0", pos + 4)
            ident = body[pos + 4:nul].decode()
            seqs[ident] = bson.decode_all(body[nul + 1:pos + size])
        pos += size
    return main, seqs


WRITE_COMMANDS = ("insert", "update", "delete", "findandmodify")


class WriteCounter:
    """A counting proxy on 127.0.0.1 in front of the MongoDB-wire server: forwards every
    message unchanged and, for each acknowledged write command (insert, update, delete,
    findAndModify), keeps what its reply says was written, by the rule of the new binary's
    vex_store_writes_total (src/stores/mongo: documents inserted, upserted or deleted
    count whole, each with one entry in every secondary index; documents modified in
    place count with the secondary indexes the update's fields can change: every one for
    a replacement or pipeline, those whose key fields a `$` operator names otherwise).
    A replacement is thus an upper bound: the new binary knows a replaced vex_consensus
    record changes only `changed_at_ms` of the indexed fields and counts 1 index, the
    proxy, not seeing the stored document, all 3 (on vexhub ~0.1 index entries per
    observation more than the new binary's own metric; the same rule for both binaries).
    The drivers here send OP_MSG without compression (none is asked for in the URI)."""

    def __init__(self, upstream_uri):
        u = urllib.parse.urlsplit(upstream_uri)
        self.upstream = (u.hostname, u.port or 27017)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        port = self.listener.getsockname()[1]
        self.uri = urllib.parse.urlunsplit(u._replace(netloc=f"127.0.0.1:{port}"))
        self.lock = threading.Lock()
        self.writes = []  # (db, command, collection, [fields or None per update], reply)
        self.socks = []
        self.unparsed = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            for s in (c, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.socks += [c, up]
            pending = {}
            threading.Thread(target=self._pump, args=(c, up, pending, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, c, pending, False), daemon=True).start()

    @staticmethod
    def _update_fields(update):
        """The top-level paths an update statement can change; None: any (replacement)."""
        u = update.get("u")
        if not isinstance(u, dict) or not u or not next(iter(u)).startswith("$"):
            return None
        return {f for op, spec in u.items() if op != "$setOnInsert" and isinstance(spec, dict) for f in spec}

    def _pump(self, src, dst, pending, request):
        try:
            while True:
                hdr = recv_exact(src, 16)
                length, req_id, resp_to, opcode = struct.unpack("<iiii", hdr)
                body = recv_exact(src, length - 16)
                if opcode == 2013:  # OP_MSG; parsed before forwarding, so the reply finds it
                    try:
                        main, seqs = op_msg_sections(body)
                    except Exception as e:  # counted as unparsed; the bytes still go through
                        with self.lock:
                            self.unparsed.append(repr(e))
                        main, seqs = None, {}
                    if request and main:
                        cmd = next(iter(main))
                        if cmd.lower() in WRITE_COMMANDS:
                            ups = seqs.get("updates", main.get("updates", [])) if cmd == "update" else []
                            pending[req_id] = (main.get("$db"), cmd.lower(), main[cmd],
                                               [self._update_fields(x) for x in ups])
                    elif not request and resp_to in pending and main is not None:
                        db, cmd, coll, fields = pending.pop(resp_to)
                        with self.lock:
                            self.writes.append((db, cmd, coll, fields, main))
                dst.sendall(hdr + body)
        except (OSError, EOFError):
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass

    def count(self, client, db):
        """{collection: [documents, index entries]} written to database `db`, the
        secondary indexes read from the server (listIndexes) after the drain."""
        indexes = {}
        for c in client[db].list_collection_names():
            indexes[c] = [[k for k, _ in info["key"]] for name, info in client[db][c].index_information().items()
                          if name != "_id_"]
        def touched(coll, fields):
            idx = indexes.get(coll, [])
            if fields is None:
                return len(idx)
            hit = lambda key, f: key == f or key.startswith(f + ".") or f.startswith(key + ".")
            return sum(1 for keys in idx if any(hit(k, f) for k in keys for f in fields))
        out = {}
        with self.lock:
            writes = [w for w in self.writes if w[0] == db]
        for _, cmd, coll, fields, reply in writes:
            n_idx = len(indexes.get(coll, []))
            lem = reply.get("lastErrorObject", {})
            if cmd == "update":
                whole, modified = len(reply.get("upserted", [])), int(reply.get("nModified", 0))
                t = max([touched(coll, f) for f in fields], default=0)
            elif cmd == "findandmodify":  # one document; in place unless upserted
                up = "upserted" in lem
                whole, modified = int(up), int(bool(lem.get("updatedExisting")) and not up)
                t = n_idx
            else:
                whole, modified, t = int(reply.get("n", 0)), 0, 0
            acc = out.setdefault(coll, [0, 0])
            acc[0] += whole + modified
            acc[1] += whole * n_idx + modified * t
        return out


def proxy_writes(args, client, binary, run, topic, n_obs, n_recs, tmp, config=None):
    """One drain of `binary` through a WriteCounter: (documents, index entries) per
    observation applied, the by-collection documents, and the /metrics text."""
    proxy = WriteCounter(args.mongo_uri)
    try:
        _, _, metrics_text = drain(args, client, binary, run, topic, n_obs, n_recs, tmp, mongo_uri=proxy.uri,
                                   config=config)
        time.sleep(0.5)  # the replies of the last writes, forwarded before serve stopped
        by = proxy.count(client, run)
    finally:
        proxy.close()
    if proxy.unparsed:
        log(f"warning: {len(proxy.unparsed)} OP_MSG messages not parsed (not counted): {proxy.unparsed[:3]}")
    obs = applied_from(metrics_text)
    docs_w = sum(v[0] for v in by.values())
    idx_w = sum(v[1] for v in by.values())
    return docs_w / obs, idx_w / obs, {c: v[0] / obs for c, v in by.items()}, metrics_text, obs


def applied_from(metrics_text):
    a = re.search(r"^vex_observations_applied_total(?:\{[^}]*\})? (\S+)$", metrics_text, re.M)
    return float(a.group(1)) if a else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--baseline-binary", help="also measure this binary (latency, drain, writes) in the same run "
                    "and print new / baseline ratios")
    ap.add_argument("--baseline-config", help="with --baseline-binary: the configuration file its serve gets "
                    "(--config), e.g. `git show bafbf91:config/default.toml`: an older binary refuses this "
                    "tree's config/default.toml for the keys added since")
    ap.add_argument("--new-first", action="store_true", help="with --baseline-binary: --binary's runs first")
    ap.add_argument("--writes-copies", type=int, default=1,
                    help="with --baseline-binary: copies of the drain counted through the write-counting proxy")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--mongo-uri", required=True)
    ap.add_argument("--copies", type=int, default=7)
    ap.add_argument("--docs", type=int, default=1000, help="vexhub documents per copy")
    ap.add_argument("--rate", type=int, default=500, help="offered observations/s for the latency run")
    ap.add_argument("--latency-seconds", type=int, default=60)
    ap.add_argument("--latency-rounds", type=int, default=1,
                    help="with --baseline-binary: latency runs per binary, alternating (the ratio is of the "
                    "medians); one run is 1-2 minutes")
    ap.add_argument("--timeout", type=int, default=1800)
    args = ap.parse_args()
    if args.latency_rounds < 1:
        ap.error("--latency-rounds must be at least 1")
    tmp = tempfile.mkdtemp(prefix="vexlens-bench-")
    run = f"bench{int(time.time())}"
    client = pymongo.MongoClient(args.mongo_uri)

    docs = load_vexhub(args.corpus, args.docs)
    lines = workload(docs, args.copies)
    n_obs, n_recs = expected(args.binary, lines, tmp)
    log(f"workload: {len(lines)} documents ({args.copies} renamed copies of {len(docs)} vexhub documents), "
        f"{n_obs} observations, {n_recs} records")
    if args.baseline_binary:
        return compare(args, client, docs, lines, run, tmp, n_obs, n_recs)
    for line in measure_latency(args, client, docs, run, tmp, args.binary)[0]:
        print(line, flush=True)

    topic = f"{run}.documents"
    produce(args.brokers, topic, lines)
    broker_s, broker_rate = broker_limit(args, topic, n_obs)

    # drain: serve from start to the last durable record.
    drain_s, drain_rate, metrics_text = drain(args, client, args.binary, run, topic, n_obs, n_recs, tmp)
    writes_line = writes_per_observation(metrics_text)
    store_limit(args, client, run, lines, n_obs, n_recs, broker_s, broker_rate, drain_s, drain_rate, writes_line)
    drop(client, run)


def broker_limit(args, topic, n_obs):
    """(a) the broker limit: read the whole topic to /dev/null."""
    t0 = time.time()
    subprocess.run(["kcat", "-C", "-b", args.brokers, "-t", topic, "-o", "beginning", "-e", "-q",
                    "-X", "fetch.message.max.bytes=16000000", "-f", "%s\n"], stdout=subprocess.DEVNULL, check=True)
    broker_s = time.time() - t0
    return broker_s, n_obs / broker_s


def store_limit(args, client, run, lines, n_obs, n_recs, broker_s, broker_rate, drain_s, drain_rate, writes_line):
    """(b) the store limit on what `run`'s drain wrote, and the lines of the drain's figures."""
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


def compare(args, client, docs, lines, run, tmp, n_obs, n_recs):
    """--baseline-binary: latency, drain and counted writes of both binaries in the same
    run on the same services, alternating, each under its own database, topic and group
    names (`<run>n...` new, `<run>b...` baseline); then (a)/(b) on the new binary's drain.
    The baseline (bafbf91) takes the same `serve` flags and environment as the new binary
    (`serve --help` is identical but for the program name), but not this tree's
    config/default.toml (it stops at the keys added since, e.g. api.export_jobs_per_minute):
    it gets --config --baseline-config, its own commit's file (the keys both know have the
    same values at bafbf91 and 032db2d)."""
    base_obs, base_recs = expected(args.baseline_binary, lines, tmp)
    if (base_obs, base_recs) != (n_obs, n_recs):
        log(f"note: the baseline computes {base_obs} observations, {base_recs} records from the same workload")
    bins = {"new": (args.binary, run + "n", n_obs, n_recs),
            "baseline": (args.baseline_binary, run + "b", base_obs, base_recs)}
    config = {"new": None, "baseline": args.baseline_config}
    order = ["new", "baseline"] if args.new_first else ["baseline", "new"]
    label = lambda who: f"[{who} {os.path.basename(bins[who][0])}]"
    to_drop = []

    # Latency: --latency-rounds rounds, the order reversed every other round; the ratio
    # is of the medians (one run's p99 is one queue on a server near its capacity).
    p99 = {who: [] for who in order}
    cpu = {who: [] for who in order}
    for k in range(args.latency_rounds):
        for who in (order if k % 2 == 0 else order[::-1]):
            binary, r, _, _ = bins[who]
            log(f"latency: {who} {binary} (round {k + 1} of {args.latency_rounds})")
            lr = r if k == 0 else f"{r}r{k}"
            out, p, c = measure_latency(args, client, docs, lr, tmp, binary, drop_db=False, config=config[who])
            p99[who].append(p)
            cpu[who].append(c)
            to_drop.append(lr + "lat")
            for line in out:
                print(f"{label(who)} {line}", flush=True)

    for who in order:
        produce(args.brokers, bins[who][1] + ".documents", lines)
    rate, metrics = {}, {}
    for who in order:
        binary, r, o, n = bins[who]
        log(f"drain: {who} {binary}")
        drain_s, rate[who], metrics[who] = drain(args, client, binary, r, r + ".documents", o, n, tmp,
                                                 config=config[who])
        to_drop.append(r)
        print(f"{label(who)} drain: vex-lens serve (Kafka + MongoDB), ready -> all durable: {drain_s:.2f} s = "
              f"{rate[who]:,.0f} observations/s ({len(lines)} documents, {o} observations, {n} records)", flush=True)
    print(f"{label('new')} {writes_per_observation(metrics['new'])}")
    print(f"{label('baseline')} vex_store_writes_total: not in this binary")

    # Writes, counted by the proxy for both (same instrument), on a drain of
    # --writes-copies copies (a smaller one: the proxy costs CPU, so it is not on the timed
    # drain; the copies are renamed, so each is the same work on new packages).
    wlines = workload(docs, args.writes_copies)
    wexp = {"new": expected(args.binary, wlines, tmp), "baseline": (base_obs, base_recs) if args.writes_copies ==
            args.copies else expected(args.baseline_binary, wlines, tmp)}
    per = {}
    for who in order:
        produce(args.brokers, bins[who][1] + "w.documents", wlines)
    for who in order:
        binary, r, _, _ = bins[who]
        log(f"writes through the counting proxy: {who} {binary}")
        d, i, by, mtext, obs = proxy_writes(args, client, binary, r + "w", r + "w.documents", *wexp[who], tmp,
                                            config=config[who])
        to_drop.append(r + "w")
        per[who] = d + i
        cols = ", ".join(f"{c} {v:.2f}" for c, v in sorted(by.items()) if v > 0)
        print(f"{label(who)} MongoDB writes per observation, counted by a proxy on loopback "
              f"({args.writes_copies} copies, {obs:.0f} observations applied): {d:.2f} documents + "
              f"{i:.2f} index entries = {d + i:.2f} (documents by collection: {cols})", flush=True)
        if who == "new":
            print(f"{label(who)} the same drain's own metric: {writes_per_observation(mtext)}", flush=True)

    print(f"drain obs/s new / baseline = {rate['new'] / rate['baseline']:.3f} "
          f"({rate['new']:,.1f} / {rate['baseline']:,.1f}; target >= 1.5)")
    med = {who: statistics.median(p99[who]) for who in order}
    runs = lambda who: ", ".join(f"{p:.0f}" for p in p99[who])
    print(f"latency p99 new / baseline = {med['new'] / med['baseline']:.3f} "
          f"({med['new']:.1f} ms / {med['baseline']:.1f} ms, bench clock, median of {args.latency_rounds} "
          f"run(s) each: new {runs('new')}, baseline {runs('baseline')}; target <= 1.1)")
    for what in ("serve", "server"):
        got = {who: [c[what] for c in cpu[who] if c[what] is not None] for who in order}
        if all(got.values()):
            new, base = statistics.median(got["new"]), statistics.median(got["baseline"])
            print(f"latency CPU of {'serve' if what == 'serve' else 'the MongoDB server'} in the timed window, "
                  f"new / baseline = {new / base:.3f} ({new:.1f} s / {base:.1f} s, medians)")
    print(f"MongoDB documents + index entries written per observation new / baseline = "
          f"{per['new'] / per['baseline']:.3f} ({per['new']:.3f} / {per['baseline']:.3f}, counted by the proxy; "
          f"target <= 0.5)", flush=True)

    # (a)/(b) on the new binary's drain, as in the single-binary run.
    print(f"{label('new')} (a)/(b) on this binary's drain, as in a single-binary run:")
    binary, r, o, n = bins["new"]
    broker_s, broker_rate = broker_limit(args, r + ".documents", o)
    drain_s = o / rate["new"]
    store_limit(args, client, r, lines, o, n, broker_s, broker_rate, drain_s, rate["new"],
                writes_per_observation(metrics["new"]))
    for name in to_drop:
        drop(client, name)


if __name__ == "__main__":
    main()
