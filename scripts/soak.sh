#!/usr/bin/env bash
# The soak of issue 8, from one command: `vex-lens serve` on the real Kafka and
# MongoDB-wire server under a steady producer while it is killed -9 and restarted, the
# MongoDB-wire server is stopped for 20 s, the broker is restarted, poison is produced and
# a second instance comes and goes; then every produced message must be accounted for,
# the stored consensus must equal a clean replay, and serve's RSS must stay < 512 MiB
# (scripts/soak.py says how each is checked). Prints the counts; exits 1 on any loss.
#   scripts/soak.sh           ~10 minutes (7 min of producing at 10 documents/s)
#   scripts/soak.sh --quick   < 3 minutes (75 s at 4 documents/s); CI runs it
# Starts the services (scripts/services.sh) when they are not running and stops what it
# started. It stops and restarts them during the run: do not share them with other tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--quick" ]]; then
  args=(--duration 75 --rate 4 --settle 45)
else
  args=(--duration 420 --rate 10 --settle 150)
fi
cargo build --locked --quiet
bin="$(pwd)/target/debug/vex-lens"
# shellcheck source=scripts/with-services.sh
source scripts/with-services.sh
"$py" scripts/soak.py --binary "$bin" --brokers "$VEXLENS_KAFKA_BROKERS" --mongo-uri "$VEXLENS_MONGODB_URI" "${args[@]}"
