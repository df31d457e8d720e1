# Sourced by scripts that need the real services (bench.sh, soak.sh): starts them with
# scripts/services.sh unless they already run, stops on exit only what it started, and
# exports their addresses (VEXLENS_KAFKA_BROKERS, VEXLENS_MONGODB_URI, ...) and `py`, the
# Python of the SecantusDB venv (which has pymongo). Run from the repository root.
vexlens_services_started=0
if ! scripts/services.sh status >/dev/null 2>&1; then
  scripts/services.sh up >&2
  vexlens_services_started=1
fi
vexlens_services_cleanup() {
  if [[ $vexlens_services_started == 1 ]]; then scripts/services.sh down >&2 || true; fi
}
trap vexlens_services_cleanup EXIT
eval "$(scripts/services.sh env)"
py="$(ls -d "${VEXLENS_SERVICES_DIR:-.services}"/venv-secantus-*/bin/python | head -n 1)"
