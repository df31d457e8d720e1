#!/usr/bin/env bash
# Installs the Debian packages that the VEX Lens build, its tests and
# scripts/services.sh need. Idempotent: does nothing (and never touches apt)
# when everything is already present. Debian 12, run as root (or with sudo).
#
# What is needed and why:
#   gcc make perl pkg-config zlib1g-dev  - rdkafka crate's bundled librdkafka
#                                          (default features: libz only; no
#                                          ssl/sasl/curl features are enabled)
#   kcat                                 - Kafka health check + smoke tests
#   prometheus                           - gives `promtool` (rule/config checks)
#   jq curl                              - used by scripts and tests
#   default-jre-headless, maven          - run Apache Kafka from Maven Central jars
#   python3-venv                         - venvs: SecantusDB (the MongoDB-wire test server) and pymongo;
#                                          schemathesis (scripts/api-fuzz.sh)
#   wrk                                  - HTTP load for scripts/api-bench.sh
#   gnupg                                - `gpg`: tests/keys_cli.rs checks `keys show` against
#                                          GnuPG's own reading of a certificate
#   docker-compose                       - `docker-compose config` resolves docker-compose.yml
#                                          without an engine (tests/compose.rs); brings PyYAML
set -euo pipefail

# package -> command that proves it is present ("-" = check dpkg only)
PKGS=(
  "gcc:gcc"
  "make:make"
  "perl:perl"
  "pkg-config:pkg-config"
  "zlib1g-dev:-"
  "kcat:kcat"
  "prometheus:promtool"
  "jq:jq"
  "curl:curl"
  "default-jre-headless:java"
  "maven:mvn"
  "python3-venv:-"
  "wrk:wrk"
  "docker-compose:docker-compose"
  "gnupg:gpg"
)

missing=()
for entry in "${PKGS[@]}"; do
  pkg="${entry%%:*}"
  cmd="${entry#*:}"
  if [[ "$cmd" != "-" ]]; then
    command -v "$cmd" >/dev/null 2>&1 && continue
  else
    # python3-venv: accept any python3 that can create a venv with pip
    if [[ "$pkg" == "python3-venv" ]] && command -v python3 >/dev/null 2>&1 \
       && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      continue
    fi
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' && continue
  fi
  missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "install-system-deps: all present, nothing to do"
else
  echo "install-system-deps: installing: ${missing[*]}"
  SUDO=""
  if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

