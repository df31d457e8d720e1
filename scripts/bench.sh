#!/usr/bin/env bash
# The benchmark of issues 7 and 20, from one command. Prints every figure with the command
# that produced it; ratios are measured in the same run (the machine is shared and noisy).
#   scripts/bench.sh           full: release build; core figures (consensus vs normalise
#                              on vexhub, cargo bench --bench consensus and --bench
#                              incremental at >= 1 M observations), the store path
#                              (serve --once on the embedded store / consensus on vexhub,
#                              7 copies of it and >= 50 MB of csaf-ciq copies; consensus
#                              against $VEXLENS_BASELINE_BIN when set), end to end on real
#                              Kafka + MongoDB-wire server (7 renamed copies of vexhub,
#                              >= 100k observations), latency at 500 observations/s for 60 s;
#                              with VEXLENS_BASELINE_BIN also the baseline's drain, latency
#                              (VEXLENS_LATENCY_ROUNDS alternating runs each, default 3)
#                              and writes per observation in the same run, and the ratios
#   scripts/bench.sh --quick   the same steps, small: the test-profile binary (no release
#                              build), 1 copy of 6 vexhub documents, 10 s of latency,
#                              3 MB of csaf-ciq copies for the store path, a small incremental run (cargo bench --profile dev); CI runs
#                              it (asserting nothing; < 2 minutes)
# Starts the services (scripts/services.sh) when they are not running and stops what it
# started. Figures go to stdout; docs/performance.md records a full run.
# VEXLENS_BENCH_MONGO=rust: the end-to-end part (latency, drain, writes) runs on SecantusDB's
# Rust server (scripts/services.sh start-mongo-rs; built on first use, ~5 min) instead of
# the Python one the tests use: a server whose request path is not one busy core, so the
# latency is the service's rather than the server's queue (docs/performance.md, session 28).
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

# The store path (issue 20): what README command 1 runs (serve --once, embedded redb store)
# against the core (consensus, no store), wall and peak RSS, on vexhub (a renamed copy,
# written compact), on K renamed copies of it and on a CSAF corpus of renamed csaf-ciq
# copies (scripts/corpus_copies.py); the store's file size per record, before and after
# `vex-lens compact`, and the tables' bytes.
echo "== store path: serve --once (embedded) / consensus"
work="$(mktemp -d)"
ciq="${VEXLENS_CORPUS:-../shared/corpus}/csaf-ciq"
if [[ $quick == 1 ]]; then
  # small, for CI: 6 vexhub documents, 3 MB of CSAF
  ciq_bytes=3000000 big_copies=2 docs=(--docs 6)
else
  ciq_bytes=50000000 big_copies=7 docs=()
fi
python3 scripts/corpus_copies.py "$ciq" "$work/ciq" --min-bytes "$ciq_bytes" >&2
python3 scripts/corpus_copies.py "$corpus" "$work/vexhub" --copies 1 "${docs[@]}" >&2
python3 scripts/corpus_copies.py "$corpus" "$work/vexhub-x$big_copies" --copies "$big_copies" "${docs[@]}" >&2
# The copies are settled files (modified a minute ago): serve --once would otherwise wait
# up to ingest.settle_ms (1 s) for files written moments before, which is not the store's
# cost.
find "$work" -type f -exec touch -d "@$(( $(date +%s) - 60 ))" {} +
# best wall (and its peak RSS) of $runs runs, the two commands alternating
store_path() {
  local name="$1" dir="$2" cs="" cm="" ss="" sm="" out s m records size
  for ((i = 0; i < runs; i++)); do
    out="$(measure "$bin" consensus "$dir")"
    s="${out% *}" m="${out#* }"
    if [[ -z "$cs" ]] || awk "BEGIN{exit !($s < $cs)}"; then cs=$s cm=$m; fi
    rm -rf "$work/data"
    out="$(measure "$bin" serve --once --ingest-dir "$dir" --data-dir "$work/data" --listen 127.0.0.1:0)"
    s="${out% *}" m="${out#* }"
    if [[ -z "$ss" ]] || awk "BEGIN{exit !($s < $ss)}"; then ss=$s sm=$m; fi
  done
  records="$("$bin" consensus "$dir" 2>/dev/null | wc -l)"
  size="$(stat -c %s "$work/data/vex-lens.redb")"
  echo "$name: consensus ${cs} s ${cm} KiB; serve --once ${ss} s ${sm} KiB; $records records" \
    "($(du -sb "$dir" | cut -f1) bytes of input; best of $runs)"
  awk "BEGIN{printf \"$name: serve --once / consensus: wall %.2f, peak RSS %.2f (targets <= 3, <= 3)\n\", $ss / $cs, $sm / $cm}"
  awk "BEGIN{printf \"$name: redb file %d bytes, %.0f bytes per record before compaction\n\", $size, $size / $records}"
  # vex-lens compact: the file shortened (when at least half its end is free), with each
  # table's bytes; the pages in use do not depend on the step of redb's growth a run reached
  "$bin" compact --data-dir "$work/data" 2>/dev/null | python3 -c '
import json, sys
name, records = sys.argv[1], int(sys.argv[2])
c = json.load(sys.stdin)
after = c["bytes_after"]
print(f"{name}: redb file after compact {after} bytes, {after / records:.0f} bytes per record (target <= 2048)")
pages = sum(t["stored_bytes"] + t["metadata_bytes"] + t["fragmented_bytes"] for t in c["tables"])
print(f"{name}: pages in use by the tables {pages} bytes, {pages / records:.0f} per record (the file is 1-2x this)")
big = [t for t in c["tables"] if t["stored_bytes"] * 100 >= after]
parts = ", ".join(t["table"] + " " + str(round(t["stored_bytes"] / records)) for t in big)
print(f"{name}: stored key+value bytes per record, by table: {parts}")
' "$name" "$records"
  last_rss=$sm
}
store_path vexhub "$work/vexhub"
one_rss=$last_rss
store_path "vexhub-x$big_copies" "$work/vexhub-x$big_copies"
awk "BEGIN{printf \"serve --once peak RSS, vexhub x$big_copies / vexhub x1: %.2f (target <= 1.3)\n\", $last_rss / $one_rss}"
store_path csaf-ciq-copies "$work/ciq"
read -r lines bytes < <("$bin" consensus "$corpus" 2>/dev/null | wc -lc)
awk "BEGIN{printf \"mean record size (consensus NDJSON line, vexhub): %.0f bytes (target <= 1536)\n\", $bytes / $lines}"
# The core must not have become slower: this binary against a baseline's, same run
# (VEXLENS_BASELINE_BIN, e.g. a release build of bafbf91; skipped, and said, without one).
if [[ -n "${VEXLENS_BASELINE_BIN:-}" ]]; then
  bs="" ns=""
  for ((i = 0; i < runs; i++)); do
    out="$(measure "$VEXLENS_BASELINE_BIN" consensus "$corpus")"
    if [[ -z "$bs" ]] || awk "BEGIN{exit !(${out% *} < $bs)}"; then bs=${out% *}; fi
    out="$(measure "$bin" consensus "$corpus")"
    if [[ -z "$ns" ]] || awk "BEGIN{exit !(${out% *} < $ns)}"; then ns=${out% *}; fi
  done
  awk "BEGIN{printf \"consensus vexhub, this binary / $VEXLENS_BASELINE_BIN: %.2f (%s s / %s s; target <= 1.05)\n\", $ns / $bs, $ns, $bs}"
else
  echo "consensus vs a baseline binary: not measured (set VEXLENS_BASELINE_BIN)"
fi
rm -rf "$work"

# The services start only now: the core figures above are taken on a machine that is not
# also starting a broker and a database server.
# shellcheck source=scripts/with-services.sh
source scripts/with-services.sh

# With VEXLENS_BASELINE_BIN the baseline's latency, drain and counted writes too, in the
# same run on the same services, and the ratios new / baseline. An older binary refuses
# this tree's config/default.toml for the keys added since: its own commit's file goes
# to it (VEXLENS_BASELINE_CONFIG, a file, or VEXLENS_BASELINE_COMMIT, e.g. bafbf91, whose
# config/default.toml is used).
# The latency runs alternate VEXLENS_LATENCY_ROUNDS times (3 in a full run, 1 with --quick)
# and the ratio is of the medians: one run's p99 is one server queue.
if [[ -n "${VEXLENS_BASELINE_BIN:-}" ]]; then
  e2e_args+=(--baseline-binary "$VEXLENS_BASELINE_BIN")
  e2e_args+=(--latency-rounds "${VEXLENS_LATENCY_ROUNDS:-$((quick == 1 ? 1 : 3))}")
  if [[ -n "${VEXLENS_BASELINE_CONFIG:-}" ]]; then
    e2e_args+=(--baseline-config "$VEXLENS_BASELINE_CONFIG")
  elif [[ -n "${VEXLENS_BASELINE_COMMIT:-}" ]]; then
    base_config="$(mktemp --suffix=.toml)"
    git show "$VEXLENS_BASELINE_COMMIT:config/default.toml" >"$base_config"
    e2e_args+=(--baseline-config "$base_config")
  fi
fi
mongo_uri="$VEXLENS_MONGODB_URI"
case "${VEXLENS_BENCH_MONGO:-python}" in
  python) ;;
  rust)
    rs_started=0
    if ! scripts/services.sh env | grep -q VEXLENS_MONGODB_RS_URI; then
      scripts/services.sh start-mongo-rs >&2
      rs_started=1
    fi
    bench_rs_cleanup() {
      if [[ $rs_started == 1 ]]; then scripts/services.sh stop-mongo-rs >&2 || true; fi
      vexlens_services_cleanup
    }
    trap bench_rs_cleanup EXIT
    eval "$(scripts/services.sh env)"
    mongo_uri="$VEXLENS_MONGODB_RS_URI"
    ;;
  *) echo "bench: VEXLENS_BENCH_MONGO must be python or rust, not ${VEXLENS_BENCH_MONGO}" >&2; exit 2 ;;
esac
echo "== end to end: scripts/bench_e2e.py ${e2e_args[*]} (MongoDB-wire server: $mongo_uri)"
"$py" scripts/bench_e2e.py --binary "$bin" --corpus "$corpus" --brokers "$VEXLENS_KAFKA_BROKERS" \
  --mongo-uri "$mongo_uri" "${e2e_args[@]}"
if [[ -n "${base_config:-}" ]]; then rm -f "$base_config"; fi
