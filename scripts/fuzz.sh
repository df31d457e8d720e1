#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz + libFuzzer, nightly toolchain) one after
# the other, each for SECONDS (default 60), with the corpora kept under fuzz/corpus/ and
# seeded from the repository's sample documents and keys. Not part of CI: a crash found
# here becomes an ordinary regression test in tests/ (tests/fuzz_regressions.rs).
#   scripts/fuzz.sh                 every target, 60 s each
#   scripts/fuzz.sh -t 600          every target, 600 s each
#   scripts/fuzz.sh -t 120 vers     only the named targets
# Prints, per target, the seconds run, the executions and the outcome; exits non-zero if
# any target crashed (the reproducer is under fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
while getopts "t:" opt; do
  case $opt in
    t) seconds=$OPTARG ;;
    *) echo "usage: $0 [-t SECONDS] [TARGET...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if (( seconds < 60 )) && [[ -z "${VEXLENS_FUZZ_SHORT:-}" ]]; then
  echo "each target runs at least 60 s (VEXLENS_FUZZ_SHORT=1 allows less)" >&2
  exit 2
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh needs a nightly toolchain (rustup toolchain list)" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
targets=("$@")
if (( ${#targets[@]} == 0 )); then
  targets=(normalise dsse_envelope keys purl vers names)
fi

# Seed corpora (copied once; libFuzzer adds what it finds).
seed() {
  local dir=fuzz/corpus/$1
  shift
  mkdir -p "$dir"
  if [[ -z "$(ls -A "$dir")" ]]; then
    for f in "$@"; do [[ -f $f ]] && cp "$f" "$dir/" || true; done
  fi
}
corpus=../shared/corpus
shopt -s nullglob
seed normalise examples/*.json "$corpus"/openvex/*.json "$corpus"/csaf/*.json "$corpus"/cyclonedx/*.json
seed dsse_envelope "$corpus"/dsse/*.json "$corpus"/dsse/*/*.json
seed keys "$corpus"/dsse/*.pem "$corpus"/dsse/*/*.pem "$corpus"/dsse/*/*.pub
seed purl
seed vers
seed names
if [[ -z "$(ls -A fuzz/corpus/purl)" ]]; then
  printf 'pkg:npm/%%40scope/name@1.0.0-rc1?b=2&a=1#sub/path' > fuzz/corpus/purl/1
  printf 'pkg:maven/g/a@vers:maven/>=1.0|<2.0?type=jar' > fuzz/corpus/purl/2
  printf 'urn:cdx:abc/1#comp@vers:npm/<2.0.0' > fuzz/corpus/purl/3
  printf 'cpe:2.3:a:acme:box:1.0:*:*:*:*:*:*:*' > fuzz/corpus/purl/4
fi
if [[ -z "$(ls -A fuzz/corpus/vers)" ]]; then
  printf 'vers:npm/>=1.0.0-rc1|<2.0.0\n1.5.0' > fuzz/corpus/vers/1
  printf 'vers:pypi/<1.0\n1.0rc1' > fuzz/corpus/vers/2
  printf 'vers:deb/>=1:1.0~rc1|<1:2.0\n1:1.5-1' > fuzz/corpus/vers/3
  printf 'vers:rpm/<1.0^git1\n1.0~rc1' > fuzz/corpus/vers/4
  printf '>= 1.2, < 1.4\n1.3' > fuzz/corpus/vers/5
  printf 'vers:maven/<2.10.5\n2.10.5-rc1' > fuzz/corpus/vers/6
fi

if [[ -z "$(ls -A fuzz/corpus/names)" ]]; then
  printf 'aarch64\nfirefox-115.13.0-3.el8_6.86ciq_lts.aarch64' > fuzz/corpus/names/1
  printf 'src\npki-servlet-engine' > fuzz/corpus/names/2
  printf 'hivex-0:1.3.15-7.module+el8.1.0+4066+0f1aadab.s390x' > fuzz/corpus/names/3
  printf 'openssl_3.0.11-1~deb12u2_amd64' > fuzz/corpus/names/4
  printf 'registry.k8s.io/kube-apiserver:v1.26.0' > fuzz/corpus/names/5
  printf 'ghcr.io/test/image@sha256:74634d9736a45ca9f6e1187e783492199e020f4a5c19d0b1abc2b604f894ac99' > fuzz/corpus/names/6
fi

status=0
summary=()
for t in "${targets[@]}"; do
  log=fuzz/artifacts/$t.log
  mkdir -p "fuzz/artifacts/$t"
  echo "== $t: ${seconds}s"
  start=$(date +%s)
  set +e
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 2>&1 | tee "$log" | grep -E "^(#[0-9]+ *(DONE|NEW|REDUCE|pulse)|==|SUMMARY|stat::number_of_executed_units|Done)" | tail -n 5
  rc=${PIPESTATUS[0]}
  set -e
  ran=$(( $(date +%s) - start ))
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
  if [[ $rc == 0 ]]; then outcome=ok; else outcome="CRASH (rc $rc, see fuzz/artifacts/$t/ and $log)"; status=1; fi
  summary+=("$t: ${ran}s wall (incl. build), ${execs:-?} executions, $outcome")
done
echo
echo "fuzz summary"
printf '  %s\n' "${summary[@]}"
exit $status
