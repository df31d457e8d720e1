#!/usr/bin/env bash
# Real servers on loopback for VEX Lens tests and CI, without Docker:
#   * Apache Kafka (KRaft, one node that is broker + controller), from Maven Central jars
#   * SecantusDB (a MongoDB-wire server on WiredTiger, from PyPI, in a venv), run as a
#     standalone server like the compose stack's mongo:7
#   * SecantusDB's Rust server (secantusd-rs, multi-threaded; built from the PyPI sdist by
#     scripts/build-secantus-rs.sh, cached outside the clone), only with `start-mongo-rs`:
#     for the benchmarks (scripts/bench.sh, VEXLENS_BENCH_MONGO=rust), on its own port
#   * Jaeger v2 (OTLP trace backend; built from the Go module proxy by
#     scripts/build-jaeger.sh, cached outside the clone), only with `start-jaeger` or
#     VEXLENS_JAEGER=1: every port on 127.0.0.1 (config written to the data dir)
#
# Usage: scripts/services.sh up|down|status|env|start-kafka|stop-kafka|start-mongo|stop-mongo|start-mongo-rs|stop-mongo-rs|start-jaeger|stop-jaeger|reset
#   up           install/build what is missing, start what is not running, wait until healthy
#   down         stop the servers this script started (only the PIDs in its pid files); keeps data
#   status       print up/down for each server; exit 0 only if all are up
#   env          print `export` lines for the endpoints (eval "$(scripts/services.sh env)")
#   start-mongo  start (and wait for) only the MongoDB-wire server, same data
#   stop-mongo   stop only the MongoDB-wire server, keeps its data
#   start-kafka / stop-kafka   the same for Kafka
#   start-mongo-rs / stop-mongo-rs  the Rust MongoDB-wire server (builds it first if it is
#                not cached; ~5 min cold), standalone, with its own data dir and port
#   start-jaeger / stop-jaeger Jaeger (builds it first if it is not cached; ~7-20 min cold)
#   reset        down, then delete data, logs and pid files; keeps downloads and the venv
#
# Environment (all optional):
#   VEXLENS_SERVICES_DIR        data dir owned by this script (default <repo>/.services)
#   VEXLENS_KAFKA_PORT          Kafka PLAINTEXT listener port (default 9092)
#   VEXLENS_KAFKA_CONTROLLER_PORT  KRaft controller port (default 9093)
#   VEXLENS_MONGO_PORT          MongoDB-wire listener port (default 27017)
#   VEXLENS_MONGO_RS_PORT       the Rust server's port (default 27018)
#   VEXLENS_KAFKA_VERSION       org.apache.kafka:kafka_2.13 version (default 4.4.0, what CI
#                               runs; 3.9.2 is still supported: the Kafka 3.x line)
#   VEXLENS_KAFKA_HEAP          JVM heap for Kafka (default 512m)
#   VEXLENS_SERVICES_TIMEOUT    seconds to wait for each server to be healthy (default 120)
#   VEXLENS_PYMONGO_VERSION     pymongo used for the health ping (default 4.20.0)
#   VEXLENS_SECANTUS_VERSION    SecantusDB from PyPI (default 0.7.0b3)
#   VEXLENS_JAEGER              1: `up` also starts Jaeger (default 0)
#   VEXLENS_JAEGER_OTLP_PORT    Jaeger OTLP/HTTP receiver port (default 4318; OTLP/gRPC is +1)
#   VEXLENS_JAEGER_QUERY_PORT   Jaeger query HTTP API port (default 16686; its gRPC is +1,
#                               its health check +2)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"

SERVICES_DIR="${VEXLENS_SERVICES_DIR:-$REPO_DIR/.services}"
KAFKA_PORT="${VEXLENS_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${VEXLENS_KAFKA_CONTROLLER_PORT:-9093}"
MONGO_PORT="${VEXLENS_MONGO_PORT:-27017}"
MONGO_RS_PORT="${VEXLENS_MONGO_RS_PORT:-27018}"
KAFKA_VERSION="${VEXLENS_KAFKA_VERSION:-4.4.0}"
KAFKA_HEAP="${VEXLENS_KAFKA_HEAP:-512m}"
TIMEOUT="${VEXLENS_SERVICES_TIMEOUT:-120}"
PYMONGO_VERSION="${VEXLENS_PYMONGO_VERSION:-4.20.0}"
SECANTUS_VERSION="${VEXLENS_SECANTUS_VERSION:-0.7.0b3}"
JAEGER="${VEXLENS_JAEGER:-0}"
JAEGER_OTLP_PORT="${VEXLENS_JAEGER_OTLP_PORT:-4318}"
JAEGER_QUERY_PORT="${VEXLENS_JAEGER_QUERY_PORT:-16686}"
HOST=127.0.0.1

# --- layout of the data dir ------------------------------------------------------------
# downloads / builds (kept by `reset`)
KAFKA_DIST="$SERVICES_DIR/downloads/kafka-$KAFKA_VERSION"   # pom.xml + libs/
VENV="$SERVICES_DIR/venv-secantus-$SECANTUS_VERSION"
MONGO_BIN="$VENV/bin/secantusd-py"
# state (deleted by `reset`)
RUN_DIR="$SERVICES_DIR/run"
LOG_DIR="$SERVICES_DIR/logs"
KAFKA_DATA="$SERVICES_DIR/data/kafka"
KAFKA_CONF_DIR="$SERVICES_DIR/data/kafka-config"
MONGO_DATA="$SERVICES_DIR/data/secantusdb"
MONGO_RS_DATA="$SERVICES_DIR/data/secantusd-rs"
JAEGER_CONF="$SERVICES_DIR/data/jaeger/config.yaml"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found; run scripts/install-system-deps.sh (${2:-})"
}

# --- process bookkeeping ------------------------------------------------------------------
# A pid counts as ours only if it is alive, not a zombie, and its command line still
# contains the marker we started it with (guards against pid reuse).
pid_file() { echo "$RUN_DIR/$1.pid"; }

marker_for() {
  case "$1" in
    kafka) echo "$KAFKA_CONF_DIR/server.properties" ;;
    mongo) echo "$MONGO_DATA" ;;
    mongo-rs) echo "$MONGO_RS_DATA" ;;
    jaeger) echo "$JAEGER_CONF" ;;
  esac
}

recorded_pid() {
  local f
  f="$(pid_file "$1")"
  [[ -s "$f" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$f")"
  [[ -n "$pid" ]] || return 1
  echo "$pid"
}

pid_is_ours() { # name pid
  local name="$1" pid="$2" state cmdline
  [[ -r "/proc/$pid/stat" ]] || return 1
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ -n "$state" && "$state" != "Z" && "$state" != "X" ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *"$(marker_for "$name")"* ]]
}

running_pid() { # prints pid if the service is running (started by us)
  local pid
  pid="$(recorded_pid "$1")" || return 1
  pid_is_ours "$1" "$pid" || return 1
  echo "$pid"
}

port_open() { # port
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

stop_service() { # name
  local name="$1" pid i
  if ! pid="$(recorded_pid "$name")"; then
    log "$name: not running (no pid file)"
    return 0
  fi
  if ! pid_is_ours "$name" "$pid"; then
    log "$name: stale pid file (pid $pid is not ours or gone); removing it"
    rm -f "$(pid_file "$name")"
    return 0
  fi
  log "$name: stopping pid $pid (TERM)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do # up to 30 s
    pid_is_ours "$name" "$pid" || break
    sleep 0.1
  done
  if pid_is_ours "$name" "$pid"; then
    log "$name: still alive after 30 s; sending KILL to pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_is_ours "$name" "$pid" || break
      sleep 0.1
    done
  fi
  rm -f "$(pid_file "$name")"
  log "$name: stopped"
}

# start_detached name logfile cmd... : runs cmd in its own session, records its pid
start_detached() {
  local name="$1" logfile="$2"
  shift 2
  local pf
  pf="$(pid_file "$name")"
  rm -f "$pf"
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  printf '\n===== %s start %s =====\n' "$name" "$(date -u +%FT%TZ)" >>"$logfile"
  # The inner bash writes its own pid, then execs the server: same pid.
  nohup setsid bash -c 'echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' \
    "$pf" "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s "$pf" ]] && return 0
    sleep 0.05
  done
  die "$name: did not record its pid in $pf"
}

wait_healthy() { # name check_fn logfile
  local name="$1" check="$2" logfile="$3" start now pid
  start=$(date +%s)
  while true; do
    if "$check"; then
      return 0
    fi
    if ! pid="$(running_pid "$name")"; then
      log "$name: process exited during startup; last log lines ($logfile):"
      tail -n 40 "$logfile" >&2 || true
      die "$name failed to start"
    fi
    now=$(date +%s)
    if ((now - start >= TIMEOUT)); then
      log "$name: not healthy after ${TIMEOUT}s; last log lines ($logfile):"
      tail -n 40 "$logfile" >&2 || true
      die "$name did not become healthy (pid $pid left running; 'scripts/services.sh down' stops it)"
    fi
    sleep 0.5
  done
}

# --- Kafka ------------------------------------------------------------------------------------
kafka_major() { echo "${KAFKA_VERSION%%.*}"; }

ensure_kafka_jars() {
  if [[ -f "$KAFKA_DIST/libs/.complete" ]]; then
    return 0
  fi
  need mvn "maven"
  need java "default-jre-headless"
  log "kafka: fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies (Maven)"
  mkdir -p "$KAFKA_DIST"
  local binding
  if [[ "$(kafka_major)" -ge 4 ]]; then
    # Kafka 4.x logs through log4j2 (slf4j 1.7 API)
    binding='<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>'
  else
    # Kafka 3.x logs through reload4j (log4j 1.x API)
    binding='<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>'
  fi
  cat >"$KAFKA_DIST/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <!-- generated by scripts/services.sh: gathers the Kafka broker's runtime classpath -->
  <groupId>vexlens.services</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    $binding
  </dependencies>
</project>
EOF
  rm -rf "$KAFKA_DIST/libs.tmp"
  mkdir -p "$LOG_DIR"
  if ! mvn -B -q -f "$KAFKA_DIST/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_DIST/libs.tmp" >"$LOG_DIR/maven-kafka.log" 2>&1; then
    tail -n 30 "$LOG_DIR/maven-kafka.log" >&2 || true
    die "kafka: maven could not fetch kafka_2.13:$KAFKA_VERSION (log: $LOG_DIR/maven-kafka.log)"
  fi
  [[ -f "$KAFKA_DIST/libs.tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka: kafka_2.13-$KAFKA_VERSION.jar missing after maven"
  touch "$KAFKA_DIST/libs.tmp/.complete"
  rm -rf "$KAFKA_DIST/libs"
  mv "$KAFKA_DIST/libs.tmp" "$KAFKA_DIST/libs"
  log "kafka: $(find "$KAFKA_DIST/libs" -name '*.jar' | wc -l) jars in $KAFKA_DIST/libs"
}

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"; else echo java; fi
}

write_kafka_config() {
  mkdir -p "$KAFKA_CONF_DIR" "$KAFKA_DATA"
  cat >"$KAFKA_CONF_DIR/server.properties.tmp" <<EOF
# generated by scripts/services.sh on every start; edit the script, not this file
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=6
default.replication.factor=1
auto.create.topics.enable=true
delete.topic.enable=true
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
replica.fetch.response.max.bytes=16777216
socket.request.max.bytes=104857600
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.retention.hours=24
EOF
  if [[ "$(kafka_major)" -ge 4 ]]; then
    cat >>"$KAFKA_CONF_DIR/server.properties.tmp" <<EOF
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
  fi
  mv "$KAFKA_CONF_DIR/server.properties.tmp" "$KAFKA_CONF_DIR/server.properties"

  # logging config: log4j 1.x (reload4j) for 3.x, log4j2 for 4.x
  cat >"$KAFKA_CONF_DIR/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.log.LogManager=WARN
EOF
  cat >"$KAFKA_CONF_DIR/log4j2.properties" <<'EOF'
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

kafka_logging_opts() {
  if [[ "$(kafka_major)" -ge 4 ]]; then
    echo "-Dlog4j2.configurationFile=$KAFKA_CONF_DIR/log4j2.properties"
  else
    echo "-Dlog4j.configuration=file:$KAFKA_CONF_DIR/log4j.properties"
  fi
}

format_kafka_storage() {
  local stamp="$KAFKA_DATA/.vexlens-kafka-version"
  if [[ -f "$KAFKA_DATA/meta.properties" ]]; then
    if [[ -f "$stamp" && "$(cat "$stamp")" != "$KAFKA_VERSION" ]]; then
      die "kafka: data in $KAFKA_DATA was formatted by Kafka $(cat "$stamp"), not $KAFKA_VERSION; run 'scripts/services.sh reset'"
    fi
    return 0
  fi
  local cp="$KAFKA_DIST/libs/*" id java
  java="$(java_bin)"
  id="$("$java" -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
  [[ -n "$id" ]] || die "kafka: StorageTool random-uuid gave nothing"
  log "kafka: formatting storage in $KAFKA_DATA (cluster id $id)"
  # shellcheck disable=SC2046
  if ! "$java" $(kafka_logging_opts) -cp "$cp" kafka.tools.StorageTool format \
      -t "$id" -c "$KAFKA_CONF_DIR/server.properties" >>"$LOG_DIR/kafka-format.log" 2>&1; then
    tail -n 20 "$LOG_DIR/kafka-format.log" >&2 || true
    die "kafka: storage format failed (log: $LOG_DIR/kafka-format.log)"
  fi
  echo "$KAFKA_VERSION" >"$stamp"
}

kafka_healthy() {
  port_open "$KAFKA_PORT" || return 1
  local md
  md="$(kcat -b "$HOST:$KAFKA_PORT" -L -m 5 -X topic.metadata.refresh.interval.ms=-1 2>/dev/null)" || return 1
  grep -q "broker 1 at $HOST:$KAFKA_PORT" <<<"$md"
}

start_kafka() {
  local pid
  if pid="$(running_pid kafka)"; then
    log "kafka: already running (pid $pid)"
    wait_healthy kafka kafka_healthy "$LOG_DIR/kafka.log"
    return 0
  fi
  need kcat "kcat"
  need java "default-jre-headless"
  ensure_kafka_jars
  if port_open "$KAFKA_PORT" || port_open "$KAFKA_CONTROLLER_PORT"; then
    die "kafka: port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT on $HOST is already in use by a process this script did not start"
  fi
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  write_kafka_config
  format_kafka_storage
  log "kafka: starting Kafka $KAFKA_VERSION on $HOST:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT)"
  # shellcheck disable=SC2046
  start_detached kafka "$LOG_DIR/kafka.log" \
    "$(java_bin)" -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true $(kafka_logging_opts) -Dkafka.logs.dir="$LOG_DIR" \
    -cp "$KAFKA_DIST/libs/*" kafka.Kafka "$KAFKA_CONF_DIR/server.properties"
  wait_healthy kafka kafka_healthy "$LOG_DIR/kafka.log"
  log "kafka: up (pid $(recorded_pid kafka))"
}

# --- SecantusDB (MongoDB wire) ---------------------------------------------------------------
# FerretDB 1.24 used no index for any lookup (see ../shared/SERVICES.md); SecantusDB uses
# real indexes. It runs with --standalone (no replica set), as mongo:7 does in the compose
# stack, so the store code cannot come to rely on transactions or change streams.
ensure_venv() {
  if [[ -x "$MONGO_BIN" ]] && "$VENV/bin/python" -c 'import pymongo' >/dev/null 2>&1; then
    return 0
  fi
  need python3 "python3"
  log "secantusdb: creating $VENV with secantusdb==$SECANTUS_VERSION and pymongo==$PYMONGO_VERSION (PyPI)"
  rm -rf "$VENV"
  mkdir -p "$LOG_DIR"
  python3 -m venv "$VENV" >"$LOG_DIR/venv.log" 2>&1 || { cat "$LOG_DIR/venv.log" >&2; die "python3 -m venv failed"; }
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check "secantusdb==$SECANTUS_VERSION" \
      "pymongo==$PYMONGO_VERSION" >>"$LOG_DIR/venv.log" 2>&1; then
    tail -n 20 "$LOG_DIR/venv.log" >&2 || true
    rm -rf "$VENV"
    die "pip install secantusdb failed (log: $LOG_DIR/venv.log)"
  fi
}

mongo_ping() { # [port]
  "$VENV/bin/python" - "$HOST" "${1:-$MONGO_PORT}" <<'EOF' >/dev/null 2>&1
import sys, pymongo
c = pymongo.MongoClient(host=sys.argv[1], port=int(sys.argv[2]), serverSelectionTimeoutMS=2000,
                        connectTimeoutMS=2000, directConnection=True)
try:
    assert c.admin.command("ping").get("ok") == 1.0
finally:
    c.close()
EOF
}

mongo_healthy() {
  port_open "$MONGO_PORT" || return 1
  mongo_ping
}

start_mongo() {
  local pid
  ensure_venv
  if pid="$(running_pid mongo)"; then
    log "secantusdb: already running (pid $pid)"
    wait_healthy mongo mongo_healthy "$LOG_DIR/secantusdb.log"
    return 0
  fi
  if port_open "$MONGO_PORT"; then
    die "secantusdb: port $MONGO_PORT on $HOST is already in use by a process this script did not start"
  fi
  mkdir -p "$MONGO_DATA" "$LOG_DIR" "$RUN_DIR"
  log "secantusdb: starting SecantusDB $SECANTUS_VERSION on $HOST:$MONGO_PORT (data $MONGO_DATA)"
  start_detached mongo "$LOG_DIR/secantusdb.log" \
    "$MONGO_BIN" --host "$HOST" --port "$MONGO_PORT" --storage-path "$MONGO_DATA" --standalone --log-level WARNING
  wait_healthy mongo mongo_healthy "$LOG_DIR/secantusdb.log"
  log "secantusdb: up (pid $(recorded_pid mongo))"
}

# The Rust server: the same wire protocol and WiredTiger, its request path off Python's GIL
# (SecantusDB's docs: 92 % of pymongo's suite against the Python server's 99.2 %). The
# benchmarks use it to measure the service against a server that is not one busy core.
mongo_rs_healthy() {
  port_open "$MONGO_RS_PORT" || return 1
  mongo_ping "$MONGO_RS_PORT"
}

start_mongo_rs() {
  local pid bin
  ensure_venv
  bin="$("$SCRIPT_DIR/build-secantus-rs.sh")"
  if pid="$(running_pid mongo-rs)"; then
    log "secantusd-rs: already running (pid $pid)"
    wait_healthy mongo-rs mongo_rs_healthy "$LOG_DIR/secantusd-rs.log"
    return 0
  fi
  if port_open "$MONGO_RS_PORT"; then
    die "secantusd-rs: port $MONGO_RS_PORT on $HOST is already in use by a process this script did not start"
  fi
  mkdir -p "$MONGO_RS_DATA" "$LOG_DIR" "$RUN_DIR"
  log "secantusd-rs: starting $bin on $HOST:$MONGO_RS_PORT (data $MONGO_RS_DATA)"
  # From its data dir: it reads a secantusd.toml found in its working directory, so one in
  # the caller's directory must not be.
  (cd "$MONGO_RS_DATA" && start_detached mongo-rs "$LOG_DIR/secantusd-rs.log" \
    "$bin" --host "$HOST" --port "$MONGO_RS_PORT" --storage-path "$MONGO_RS_DATA" --standalone --log-level WARNING)
  wait_healthy mongo-rs mongo_rs_healthy "$LOG_DIR/secantusd-rs.log"
  log "secantusd-rs: up (pid $(recorded_pid mongo-rs))"
}

# --- Jaeger (OTLP trace backend) ---------------------------------------------------------------
write_jaeger_config() {
  mkdir -p "$(dirname "$JAEGER_CONF")"
  cat >"$JAEGER_CONF" <<EOF
# Written by scripts/services.sh: Jaeger v2 with in-memory storage, every port on $HOST.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: $HOST:$((JAEGER_QUERY_PORT + 2))
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: $HOST:$JAEGER_QUERY_PORT
    grpc:
      endpoint: $HOST:$((JAEGER_QUERY_PORT + 1))
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: $HOST:$JAEGER_OTLP_PORT
      grpc:
        endpoint: $HOST:$((JAEGER_OTLP_PORT + 1))
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
}

jaeger_healthy() {
  curl -sf "http://$HOST:$((JAEGER_QUERY_PORT + 2))/status" >/dev/null 2>&1 \
    && curl -sf "http://$HOST:$JAEGER_QUERY_PORT/api/services" >/dev/null 2>&1
}

start_jaeger() {
  local pid bin p
  need curl "curl"
  bin="$("$SCRIPT_DIR/build-jaeger.sh")"
  if pid="$(running_pid jaeger)"; then
    log "jaeger: already running (pid $pid)"
    wait_healthy jaeger jaeger_healthy "$LOG_DIR/jaeger.log"
    return 0
  fi
  for p in "$JAEGER_OTLP_PORT" $((JAEGER_OTLP_PORT + 1)) "$JAEGER_QUERY_PORT" $((JAEGER_QUERY_PORT + 1)) $((JAEGER_QUERY_PORT + 2)); do
    if port_open "$p"; then
      die "jaeger: port $p on $HOST is already in use by a process this script did not start"
    fi
  done
  write_jaeger_config
  log "jaeger: starting $bin (OTLP http $HOST:$JAEGER_OTLP_PORT, query $HOST:$JAEGER_QUERY_PORT)"
  start_detached jaeger "$LOG_DIR/jaeger.log" "$bin" --config "file:$JAEGER_CONF"
  wait_healthy jaeger jaeger_healthy "$LOG_DIR/jaeger.log"
  log "jaeger: up (pid $(recorded_pid jaeger))"
}

# --- commands ---------------------------------------------------------------------------------
print_env() {
  cat <<EOF
export VEXLENS_KAFKA_BROKERS=$HOST:$KAFKA_PORT
export VEXLENS_MONGODB_URI="mongodb://$HOST:$MONGO_PORT/?directConnection=true"
export VEXLENS_SERVICES_DIR=$SERVICES_DIR
EOF
  if running_pid mongo-rs >/dev/null 2>&1; then
    echo "export VEXLENS_MONGODB_RS_URI=\"mongodb://$HOST:$MONGO_RS_PORT/?directConnection=true\""
  fi
  if [[ "$JAEGER" == 1 ]] || running_pid jaeger >/dev/null 2>&1; then
    echo "export VEXLENS_JAEGER_OTLP_ENDPOINT=http://$HOST:$JAEGER_OTLP_PORT"
    echo "export VEXLENS_JAEGER_QUERY_URL=http://$HOST:$JAEGER_QUERY_PORT"
  fi
}

cmd_status() {
  local ok=0 pid
  if pid="$(running_pid kafka)"; then
    if kafka_healthy; then
      echo "kafka:    up    pid $pid  $HOST:$KAFKA_PORT (Kafka $KAFKA_VERSION, KRaft)"
    else
      echo "kafka:    unhealthy  pid $pid running but $HOST:$KAFKA_PORT not answering metadata"
      ok=1
    fi
  else
    echo "kafka:    down"
    ok=1
  fi
  if pid="$(running_pid mongo)"; then
    if port_open "$MONGO_PORT" && { [[ ! -x "$VENV/bin/python" ]] || mongo_ping; }; then
      echo "mongo:    up    pid $pid  mongodb://$HOST:$MONGO_PORT/ (SecantusDB $SECANTUS_VERSION, standalone)"
    else
      echo "mongo:    unhealthy  pid $pid running but $HOST:$MONGO_PORT not answering ping"
      ok=1
    fi
  else
    echo "mongo:    down"
    ok=1
  fi
  if pid="$(running_pid mongo-rs)"; then
    echo "mongo-rs: up    pid $pid  mongodb://$HOST:$MONGO_RS_PORT/ (secantusd-rs, standalone)"
  fi
  if pid="$(running_pid jaeger)"; then
    echo "jaeger:   up    pid $pid  OTLP http://$HOST:$JAEGER_OTLP_PORT, query http://$HOST:$JAEGER_QUERY_PORT"
  elif [[ "$JAEGER" == 1 ]]; then
    echo "jaeger:   down"
    ok=1
  fi
  return $ok
}

cmd_up() {
  local t0
  t0=$(date +%s)
  mkdir -p "$SERVICES_DIR"
  start_kafka
  start_mongo
  if [[ "$JAEGER" == 1 ]]; then start_jaeger; fi
  log "all up in $(($(date +%s) - t0))s; data dir $SERVICES_DIR"
  cmd_status || true
  print_env
}

cmd_down() {
  stop_service jaeger
  stop_service mongo-rs
  stop_service mongo
  stop_service kafka
}

cmd_reset() {
  cmd_down
  # make sure nothing of ours still runs before deleting its data
  if running_pid kafka >/dev/null || running_pid mongo >/dev/null || running_pid mongo-rs >/dev/null \
    || running_pid jaeger >/dev/null; then
    die "a server is still running; not deleting data"
  fi
  log "reset: deleting $SERVICES_DIR/{data,logs,run} (keeping downloads and the venv)"
  rm -rf "$SERVICES_DIR/data" "$LOG_DIR" "$RUN_DIR"
}

usage() {
  sed -n '2,41p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Serialise concurrent invocations (e.g. two test processes calling `up` at once).
# fd 9 is closed in the servers (see start_detached) so they never hold the lock.
take_lock() {
  mkdir -p "$SERVICES_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$SERVICES_DIR/.lock"
    flock -w 600 9 || die "could not lock $SERVICES_DIR/.lock within 600 s"
  fi
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    up | down | start-mongo | stop-mongo | start-mongo-rs | stop-mongo-rs | start-kafka | stop-kafka | start-jaeger | stop-jaeger | reset) take_lock ;;
  esac
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) print_env ;;
    start-mongo) start_mongo ;;
    stop-mongo) stop_service mongo ;;
    start-mongo-rs) start_mongo_rs ;;
    stop-mongo-rs) stop_service mongo-rs ;;
    start-kafka) start_kafka ;;
    stop-kafka) stop_service kafka ;;
    start-jaeger) start_jaeger ;;
    stop-jaeger) stop_service jaeger ;;
    reset) cmd_reset ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
