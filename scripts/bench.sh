#!/usr/bin/env bash
# The benchmark of issue 7, from one command. Prints every figure with the command that
# produced it; ratios are measured in the same run (the machine is shared and noisy).
#   scripts/bench.sh           full: release build; core figures (consensus vs normalise
#                              on vexhub, cargo bench --bench consensus and --bench
#                              incremental at >= 1 M observations), end to end on real
#                              Kafka + MongoDB-wire server (7 renamed copies of vexhub,
#                              >= 100k observations), latency at 500 observations/s for 60 s
#   scripts/bench.sh --quick   the same steps, small: the test-profile binary (no release
#                              build), 1 copy of 6 vexhub documents, 10 s of latency, a
#                              small incremental run (cargo bench --profile dev); CI runs
#                              it (asserting nothing; < 2 minutes)
# Starts the services (scripts/services.sh) when they are not running and stops what it
# started. Figures go to stdout; docs/performance.md records a full run.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1
corpus="${VEXLENS_CORPUS:-../shared/corpus}/vexhub"
[[ -d "$corpus" ]] || { echo "bench: $corpus not found" >&2; exit 1; }

if [[ $quick == 1 ]]; then
  cargo build --locked --quiet
  bin=target/debug/vex-lens
  e2e_args=(--copies 1 --docs 6 --rate 200 --latency-seconds 10 --timeout 300)
else
  cargo build --locked --release --quiet
  bin=target/release/vex-lens
  e2e_args=(--copies 7 --rate 500 --latency-seconds 60)
fi
bin="$(pwd)/$bin"

# seconds and peak RSS (KiB) of a command, output discarded
measure() { /usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -n 1; }

echo "== core: $bin consensus vs normalise on $corpus"
runs=$([[ $quick == 1 ]] && echo 1 || echo 5)
# Best of $runs each, the two commands alternating so that both meet the same machine.
ns="" nm="" cs="" cm=""
for ((i = 0; i < runs; i++)); do
  for cmd in normalise consensus; do
    out="$(measure "$bin" "$cmd" "$corpus")"
    s="${out% *}"
    m="${out#* }"
    if [[ $cmd == normalise ]]; then
      if [[ -z "$ns" ]] || awk "BEGIN{exit !($s < $ns)}"; then ns=$s nm=$m; fi
    elif [[ -z "$cs" ]] || awk "BEGIN{exit !($s < $cs)}"; then
      cs=$s cm=$m
    fi
  done
done
echo "vex-lens normalise $corpus: ${ns} s, peak RSS $((nm / 1024)) MiB (best of $runs)"
echo "vex-lens consensus $corpus: ${cs} s, peak RSS $((cm / 1024)) MiB (best of $runs)"
awk "BEGIN{printf \"consensus / normalise = %.2f (target <= 1.5)\n\", $cs / $ns}"

if [[ $quick == 0 ]]; then
  echo "== core: cargo bench --bench consensus"
  cargo bench --locked --bench consensus
  echo "== core: cargo bench --bench incremental -- --copies 66 (>= 1 M observations, >= 10 k packages)"
  cargo bench --locked --bench incremental -- --copies 66
else
  echo "== core: cargo bench --profile dev --bench incremental -- --copies 10 --docs 3 (small; figures of the test profile)"
  cargo bench --locked --profile dev --bench incremental -- --copies 10 --docs 3
fi

# The services start only now: the core figures above are taken on a machine that is not
# also starting a broker and a database server.
# shellcheck source=scripts/with-services.sh
source scripts/with-services.sh

echo "== end to end: scripts/bench_e2e.py ${e2e_args[*]}"
"$py" scripts/bench_e2e.py --binary "$bin" --corpus "$corpus" --brokers "$VEXLENS_KAFKA_BROKERS" \
  --mongo-uri "$VEXLENS_MONGODB_URI" "${e2e_args[@]}"
