#!/usr/bin/env bash
# Property-based fuzzing of the HTTP API against its contract (issue 10): schemathesis
# (PyPI, pinned, in a venv under the services directory) generates requests from
# docs/openapi.json for every operation (valid and invalid inputs, a fixed number of
# examples per operation, a fixed seed) and runs them against a real `vex-lens serve`
# (embedded mode, the examples ingested, two tenants' data, no tokens: the loopback
# mode). It fails on any 5xx, any response that violates the documented schema, status
# code or content type. Before fuzzing, the store is seeded through the API (an export
# job with its bundle, a trust change with its audit entry), and the operations that
# name a stored thing get real values (schemathesis.toml written beside the run: the
# export id and file, an artifact/vulnerability pair of tenant acme); the request bodies
# are generated from docs/openapi.json, which states what the handlers accept. Any
# schemathesis warning (e.g. an operation that only answered 404, "missing test data",
# or whose generated requests were mostly refused, "schema validation mismatch") fails
# the run. Bounded to FUZZ_TIMEOUT seconds (default 120). Everything stays
# on 127.0.0.1. The change stream (an endless response) is left out: tests/api_stream.rs
# covers it.
#   scripts/api-fuzz.sh                       (FUZZ_EXAMPLES=100 FUZZ_SEED=20261130)
#   VEXLENS_BIN=target/release/vex-lens scripts/api-fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VEXLENS_BIN:-target/debug/vex-lens}
[[ -x $BIN ]] || { echo "api-fuzz: $BIN not built (cargo build)" >&2; exit 1; }
ST_VERSION=${VEXLENS_SCHEMATHESIS_VERSION:-4.32.5}
SERVICES_DIR=${VEXLENS_SERVICES_DIR:-$PWD/.services}
VENV="$SERVICES_DIR/venv-schemathesis-$ST_VERSION"
EXAMPLES=${FUZZ_EXAMPLES:-100}
SEED=${FUZZ_SEED:-20261130}
TIMEOUT=${FUZZ_TIMEOUT:-120}

if [[ ! -x $VENV/bin/schemathesis ]]; then
  mkdir -p "$SERVICES_DIR"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$ST_VERSION" \
    || { echo "api-fuzz: pip install schemathesis==$ST_VERSION failed" >&2; exit 1; }
fi

tmp=$(mktemp -d)
serve_pid=""
cleanup() {
  [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/acme" "$tmp/globex"
cp examples/*.json "$tmp/acme/"
cp examples/scanner.cdx.json "$tmp/globex/"
for t in acme globex; do
  "$BIN" serve --once --ingest-dir "$tmp/$t" --data-dir "$tmp/data" --tenant "$t" --listen 127.0.0.1:0 \
    >"$tmp/ingest-$t.log" 2>&1 || { cat "$tmp/ingest-$t.log" >&2; exit 1; }
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
# No per-tenant rate on export jobs and simulate here: the fuzzer calls them hundreds of
# times a minute, and a 429 for most calls would leave their handlers unfuzzed.
# The same for trust changes; and the seeded bundle is kept however many jobs the fuzzer runs.
VEXLENS_API__EXPORT_JOBS_PER_MINUTE=0 VEXLENS_API__SIMULATIONS_PER_MINUTE=0 \
VEXLENS_API__ADMIN_CHANGES_PER_MINUTE=0 VEXLENS_EXPORT__KEEP_PER_TENANT=1000000 \
VEXLENS_EXPORT__DIR="$tmp/exports" "$BIN" serve --data-dir "$tmp/data" --listen "127.0.0.1:$port" \
  >"$tmp/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 120); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$base/health/readiness" || true) == 200 ]] && break
  sleep 0.5
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "$base/health/readiness") == 200 ]] || { tail -20 "$tmp/serve.log" >&2; exit 1; }

# Seed: an export job of tenant acme (its id and a file name), a trust change (an audit
# entry), and a stored pair; then the configuration that hands them to the operations
# that need them.
seed=$(python3 - "$base" <<'PY'
import json, sys, urllib.request
base = sys.argv[1]
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"X-Tenant": "acme", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)
job = call("POST", "/v1/vex/export", {"format": "json"})
files = call("GET", "/v1/vex/exports/" + job["job_id"])["files"]
call("PUT", "/v1/vex/trust/issuers/example-scanner", {"weight": 0.4, "reason": "api-fuzz seed"})
records = call("GET", "/v1/vex/consensus?page_size=1")["items"]
assert job["result"] == "success" and files and records, (job, files, records)
print(json.dumps({"export_id": job["job_id"], "file": files[0],
                  "artifact": records[0]["artifact"], "vulnerability": records[0]["vulnerability"]}))
PY
) || { echo "api-fuzz: seeding failed" >&2; tail -20 "$tmp/serve.log" >&2; exit 1; }
python3 - "$seed" "$tmp/schemathesis.toml" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
q = json.dumps  # a TOML basic string is a JSON string
with open(sys.argv[2], "w") as f:
    f.write("# Written by scripts/api-fuzz.sh from the seeded store.\n")
    f.write("[warnings]\nfail-on = true\n")
    for op in ("explainConsensus", "consensusHistory"):
        f.write(f'\n[[operations]]\ninclude-operation-id = "{op}"\n')
        f.write(f'parameters = {{ "header.X-Tenant" = "acme", "query.artifact" = {q(s["artifact"])}, '
                f'"query.vulnerability" = {q(s["vulnerability"])} }}\n')
    f.write('\n[[operations]]\ninclude-operation-id = "getExport"\n')
    f.write(f'parameters = {{ "header.X-Tenant" = "acme", "path.id" = {q(s["export_id"])} }}\n')
    f.write('\n[[operations]]\ninclude-operation-id = "downloadExportFile"\n')
    f.write(f'parameters = {{ "header.X-Tenant" = "acme", "path.id" = {q(s["export_id"])}, "path.name" = {q(s["file"])} }}\n')
PY
echo "api-fuzz: seeded $seed"

echo "api-fuzz: schemathesis $ST_VERSION, $EXAMPLES examples per operation, seed $SEED, against $base"
status=0
# Run from the temporary directory: schemathesis keeps a cache in ./.schemathesis.
schema="$PWD/docs/openapi.json"
(cd "$tmp" && timeout --signal=INT --kill-after=10 "$TIMEOUT" "$VENV/bin/schemathesis" \
  --config-file "$tmp/schemathesis.toml" --no-color run "$schema" \
  --url "$base" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "$EXAMPLES" \
  --seed "$SEED" \
  --exclude-path /v1/vex/consensus/stream \
  --phases examples,coverage,fuzzing \
  --generation-database none \
  --workers 2 \
  --request-timeout 30) >"$tmp/fuzz.log" 2>&1 || status=$?
cat "$tmp/fuzz.log"
if [[ $status == 124 ]]; then
  echo "api-fuzz: schemathesis did not finish within ${TIMEOUT}s" >&2
fi
if [[ $status != 0 ]]; then
  echo "api-fuzz: FAILED (exit $status); service log tail:" >&2
  tail -20 "$tmp/serve.log" >&2
  exit 1
fi
echo "api-fuzz: passed"
