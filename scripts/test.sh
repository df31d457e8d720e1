#!/usr/bin/env bash
# The project's test command: installs missing system packages, starts the real
# services the integration tests need (Kafka, the MongoDB-wire server, Jaeger for the
# trace test: built once from the Go module proxy and cached in ~/.cache/vex-lens) on
# 127.0.0.1, runs every test, and stops the services it started.
#   scripts/test.sh            all tests
#   scripts/test.sh -- ARGS    extra arguments for `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
# tests/it_traces.rs needs Jaeger (the OTLP trace backend).
export VEXLENS_JAEGER=1
started=0
if ! scripts/services.sh status >/dev/null 2>&1; then
  scripts/services.sh up
  started=1
fi
cleanup() { if [[ $started == 1 ]]; then scripts/services.sh down || true; fi; }
trap cleanup EXIT
eval "$(scripts/services.sh env)"
# Integration tests (tests/it_*.rs) fail, instead of skipping, when a service is missing.
export VEXLENS_REQUIRE_SERVICES=1
[[ "${1:-}" == "--" ]] && shift
cargo test --locked "$@"
# The MongoDB outage test stops the shared server: run it alone, after everything else.
# Then the API fuzzer (schemathesis against the running service: no 5xx, no response
# outside docs/openapi.json; fixed seed and examples, at most 2 minutes), the short soak
# (it stops and restarts the servers too; < 3 minutes, exits 1 on any loss; the full one
# is scripts/soak.sh), then the short benchmark (figures only, asserts nothing; the full
# one is scripts/bench.sh).
if [[ $# -eq 0 ]]; then
  VEXLENS_IT_MONGO_OUTAGE=1 cargo test --locked --test it_serve_mongo_outage
  scripts/api-fuzz.sh
  scripts/soak.sh --quick
  scripts/bench.sh --quick
fi
