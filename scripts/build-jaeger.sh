#!/usr/bin/env bash
# Builds Jaeger (the OTLP trace backend the trace test sends to) from the Go module
# proxy and caches the binary OUTSIDE the clone, by version:
#   ${VEXLENS_CACHE_DIR:-$HOME/.cache/vex-lens}/jaeger-<version>/jaeger
# Prints the binary's path on stdout. Does nothing when the binary is already cached.
# `go install ...@version` fails (Jaeger's go.mod has a replace directive), so a small
# wrapper module of our own pulls cmd/jaeger in as a tool dependency and builds it.
# Cold: ~2 min to fetch 1.3 GB of modules and ~5 min to build; needs Go 1.24+.
set -euo pipefail
VERSION="${VEXLENS_JAEGER_VERSION:-v1.75.0}"
CACHE="${VEXLENS_CACHE_DIR:-$HOME/.cache/vex-lens}/jaeger-${VERSION#v}"
BIN="$CACHE/jaeger"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "build-jaeger: go not found (need Go 1.24+ on PATH)" >&2; exit 1; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
start=$(date +%s)
work="$CACHE/wrapper"
rm -rf "$work"; mkdir -p "$work"
cd "$work"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export GOTOOLCHAIN=local
go mod init vexlens.local/jaeger-wrapper >&2
go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@${VERSION}" >&2
go build -o "$BIN.tmp" github.com/jaegertracing/jaeger/cmd/jaeger >&2
mv "$BIN.tmp" "$BIN"
echo "build-jaeger: built $BIN in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
