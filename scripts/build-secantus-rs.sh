#!/usr/bin/env bash
# Builds SecantusDB's Rust MongoDB-wire server (`secantusd-rs`, multi-threaded: its request
# path runs off Python's GIL) from the secantusdb sdist on PyPI and caches the binary OUTSIDE
# the clone, by version:
#   ${VEXLENS_CACHE_DIR:-$HOME/.cache/vex-lens}/secantusd-rs-<version>/secantusd-rs
# Prints the binary's path on stdout. Does nothing when the binary is already cached.
# Used only by the benchmarks (scripts/bench.sh, VEXLENS_BENCH_MONGO=rust): the tests
# and CI run the Python server (scripts/services.sh), the conformance leader.
#
# The sdist as published needs two things done by hand (measured on 0.7.0b3):
#   * every crate declares rust-version 1.98, but builds with 1.95 (no warning): cargo
#     runs with --ignore-rust-version;
#   * the patched WiredTiger copy the -sys crate builds from is not shipped: the sdist's
#     own scripts/wt_sys_refresh.py --check writes it from vendor/wiredtiger and checks
#     its digest against the shipped crates/secantus-wiredtiger-sys/wiredtiger.sha256.
# Cold: ~5 min on 2 cores (WiredTiger's C sources included); needs cargo, cmake, a C
# compiler, python3 and curl.
set -euo pipefail
VERSION="${VEXLENS_SECANTUS_VERSION:-0.7.0b3}"
CACHE="${VEXLENS_CACHE_DIR:-$HOME/.cache/vex-lens}/secantusd-rs-$VERSION"
BIN="$CACHE/secantusd-rs"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
for tool in cargo cmake cc python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "build-secantus-rs: $tool not found" >&2; exit 1; }
done
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
start=$(date +%s)
# The sdist's address and SHA-256 from PyPI's simple index (PEP 503: #sha256=<hex>).
link="$(curl -sSf "https://pypi.org/simple/secantusdb/" \
  | grep -o "https://[^\"#]*/secantusdb-$VERSION\.tar\.gz#sha256=[0-9a-f]*" | head -n 1)" \
  || { echo "build-secantus-rs: no sdist of secantusdb $VERSION on PyPI" >&2; exit 1; }
url="${link%%#*}"
sha="${link##*#sha256=}"
curl -sSfL -o "$CACHE/sdist.tar.gz" "$url"
echo "$sha  $CACHE/sdist.tar.gz" | sha256sum -c --quiet - >&2 \
  || { echo "build-secantus-rs: $url does not match PyPI's sha256" >&2; exit 1; }
rm -rf "$CACHE/src"; mkdir -p "$CACHE/src"
tar xzf "$CACHE/sdist.tar.gz" -C "$CACHE/src" --strip-components=1
cd "$CACHE/src"
# Writes the copy and compares its digest with the shipped stamp (fails if they differ).
python3 scripts/wt_sys_refresh.py --check >&2
cd crates/secantusdb
cargo build --release --locked --ignore-rust-version -j "$(nproc)" >&2
cp target/release/secantusd-rs "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
rm -rf "$CACHE/src" "$CACHE/sdist.tar.gz"
echo "build-secantus-rs: built $BIN in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
