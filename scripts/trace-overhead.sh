#!/usr/bin/env bash
# What exporting traces costs the embedded pipeline: `vex-lens serve --once` over the
# corpus (../shared/corpus), with export off and on (to the OTLP endpoint in
# VEXLENS_JAEGER_OTLP_ENDPOINT, e.g. from `VEXLENS_JAEGER=1 scripts/services.sh env`),
# alternating, ROUNDS times each; prints each run and the on/off ratio of the medians,
# measured in the same run. Uses the dev-profile binary (cargo build first).
set -euo pipefail
cd "$(dirname "$0")/.."
ENDPOINT="${VEXLENS_JAEGER_OTLP_ENDPOINT:?set VEXLENS_JAEGER_OTLP_ENDPOINT (an OTLP/HTTP collector, e.g. Jaeger)}"
ROUNDS="${ROUNDS:-3}"
BIN="${VEXLENS_BIN:-target/debug/vex-lens}"
CORPUS="${CORPUS:-../shared/corpus}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
run() { # on|off -> seconds
  local dir="$tmp/$1-$RANDOM$RANDOM"
  local start end
  start=$(date +%s.%N)
  VEXLENS_TELEMETRY__EXPORT_ENABLED=$([[ $1 == on ]] && echo true || echo false) \
    VEXLENS_TELEMETRY__OTLP_ENDPOINT="$ENDPOINT" VEXLENS_TELEMETRY__SERVICE_NAME=vex-lens-overhead \
    RUST_LOG=warn "$BIN" serve --once --ingest-dir "$CORPUS" --data-dir "$dir" --listen 127.0.0.1:0 \
    --log-format json 2>"$dir.log" >/dev/null
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }'
}
off=(); on=()
for ((i = 0; i < ROUNDS; i++)); do
  t=$(run off); off+=("$t"); echo "off: ${t}s"
  t=$(run on); on+=("$t"); echo "on:  ${t}s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_off=$(median "${off[@]}"); m_on=$(median "${on[@]}")
echo "median off ${m_off}s, on ${m_on}s, on/off $(awk -v a="$m_off" -v b="$m_on" 'BEGIN { printf "%.3f", b / a }')"
