#!/usr/bin/env bash
# Read latency of the HTTP API under ingestion (issue 10): `GET /v1/vex/consensus` of one
# pair at 200 concurrent connections (wrk, apt package `wrk`) for DURATION seconds while
# the embedded service ingests a steady OBS_PER_SEC observations/s (generated OpenVEX
# documents, one per 100 ms, written into the watched directory). Prints wrk's p50/p95/p99
# and the ingest rate measured from /metrics over the same window. A measurement, not a
# CI gate. Everything stays on 127.0.0.1.
#   scripts/api-bench.sh                 (DURATION=20 CONNECTIONS=200 OBS_PER_SEC=200)
#   VEXLENS_BIN=target/release/vex-lens scripts/api-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
BIN=${VEXLENS_BIN:-target/release/vex-lens}
[[ -x $BIN ]] || BIN=target/debug/vex-lens
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-200}
OBS_PER_SEC=${OBS_PER_SEC:-200}
tmp=$(mktemp -d)
serve_pid=""
gen_pid=""
cleanup() {
  [[ -n $gen_pid ]] && kill "$gen_pid" 2>/dev/null || true
  [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/in"
cp examples/*.json "$tmp/in/"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
"$BIN" serve --ingest-dir "$tmp/in" --data-dir "$tmp/data" --listen "127.0.0.1:$port" >"$tmp/serve.log" 2>&1 &
serve_pid=$!
pair="$base/v1/vex/consensus?artifact=pkg:npm/acme-widget@2.4.1&vulnerability=CVE-2024-3094"
for _ in $(seq 1 120); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$pair" || true) == 200 ]] && break
  sleep 0.5
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "$pair") == 200 ]] || { tail -20 "$tmp/serve.log"; exit 1; }

# Steady ingestion: every 100 ms one document of OBS_PER_SEC/10 new statements.
python3 - "$tmp/in" "$OBS_PER_SEC" >"$tmp/gen.log" 2>&1 <<'PY' &
import json, os, sys, time
out, rate = sys.argv[1], int(sys.argv[2])
per_doc = max(1, rate // 10)
n = 0
start = time.monotonic()
while True:
    stmts = [{"vulnerability": {"name": f"CVE-2025-{10000 + (n * per_doc + i) % 90000}"},
              "products": [{"@id": f"pkg:npm/bench-{(n * per_doc + i) // 50}@1.0.{i % 7}"}],
              "status": ["affected", "not_affected", "fixed"][i % 3],
              "impact_statement": "bench"} for i in range(per_doc)]
    doc = {"@context": "https://openvex.dev/ns/v0.2.0", "@id": f"https://bench.example/vex/{n}",
           "author": "bench", "timestamp": "2025-01-01T00:00:00Z", "version": 1, "statements": stmts}
    tmp = os.path.join(out, f".bench-{n}.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, os.path.join(out, f"bench-{n}.json"))
    n += 1
    time.sleep(max(0.0, start + n * 0.1 - time.monotonic()))
PY
gen_pid=$!
sleep 3
applied() { curl -s "$base/metrics" | awk '/^vex_observations_applied_total /{print $2}'; }
before=$(applied)
cat >"$tmp/p95.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("wrk: requests=%d errors(status)=%d errors(socket)=%d p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
LUA
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$tmp/p95.lua" "$pair" | grep -E '^wrk:|Requests/sec'
after=$(applied)
python3 -c "print(f'ingest during the run: {(float($after) - float($before)) / $DURATION:.0f} observations/s (target $OBS_PER_SEC); binary $BIN')"
