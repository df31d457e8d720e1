#!/usr/bin/env bash
# Smoke test for scripts/services.sh, with real traffic, after `scripts/services.sh up`:
#   Kafka:    kcat produces 3 keyed messages with headers to a fresh topic and consumes them
#             back in a consumer group (-G); a second run of the same group gets nothing
#             (offsets were committed); a 5 MiB message goes through (message.max.bytes).
#   SecantusDB: pymongo insert + find + unique index (duplicate rejected) + upsert; then
#             `stop-mongo` / `start-mongo`, and the data and the index are still there,
#             also through the same client object (driver reconnects).
# Exits non-zero with a message on the first failure. Leaves the servers running.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
SERVICES="$SCRIPT_DIR/services.sh"
SERVICES_DIR="${VEXLENS_SERVICES_DIR:-$REPO_DIR/.services}"
KAFKA_PORT="${VEXLENS_KAFKA_PORT:-9092}"
MONGO_PORT="${VEXLENS_MONGO_PORT:-27017}"
BROKER="127.0.0.1:$KAFKA_PORT"
PY="$(ls -d "$SERVICES_DIR"/venv-secantus-*/bin/python 2>/dev/null | head -n 1)"

fail() { printf 'SMOKE FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf 'smoke ok: %s\n' "$*"; }

"$SERVICES" status >/dev/null || { "$SERVICES" status >&2 || true; fail "services are not all up; run scripts/services.sh up first"; }
[[ -x "$PY" ]] || fail "no venv with pymongo under $SERVICES_DIR/venv-secantus-* (scripts/services.sh up creates it)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
RUN_ID="$(date +%s)-$$-$RANDOM"

# ------------------------------------------------------------------ Kafka + kcat
TOPIC="vexlens-smoke-$RUN_ID"
GROUP="vexlens-smoke-group-$RUN_ID"

printf 'k1:v1\nk2:v2\nk3:v3\n' |
  kcat -b "$BROKER" -P -t "$TOPIC" -K: -H smoke=yes -H run="$RUN_ID" -X message.timeout.ms=30000 \
  2>"$WORK/produce.err" || { cat "$WORK/produce.err" >&2; fail "kcat could not produce to $TOPIC"; }
ok "kcat produced 3 messages with headers to $TOPIC"

kcat -b "$BROKER" -L -t "$TOPIC" >"$WORK/md.txt" 2>&1 || fail "kcat -L -t $TOPIC failed"
parts="$(grep -c 'partition [0-9]*, leader 1' "$WORK/md.txt" || true)"
[[ "$parts" == 6 ]] || { cat "$WORK/md.txt" >&2; fail "auto-created topic has $parts partitions, expected 6 (num.partitions)"; }
ok "topic auto-created with 6 partitions"

consume_group() { # -> prints "key=value|headers" lines
  timeout 60 kcat -b "$BROKER" -G "$GROUP" -q -e \
    -X auto.offset.reset=earliest -X enable.auto.commit=true -X auto.commit.interval.ms=100 \
    -f '%k=%s|%h\n' "$TOPIC" 2>"$WORK/consume.err"
}

consume_group >"$WORK/consumed.txt" || { cat "$WORK/consume.err" >&2; fail "kcat consumer group run failed (exit $?)"; }
sort "$WORK/consumed.txt" >"$WORK/consumed.sorted"
printf 'k1=v1|smoke=yes,run=%s\nk2=v2|smoke=yes,run=%s\nk3=v3|smoke=yes,run=%s\n' "$RUN_ID" "$RUN_ID" "$RUN_ID" >"$WORK/expected.txt"
if ! diff -u "$WORK/expected.txt" "$WORK/consumed.sorted" >&2; then
  cat "$WORK/consume.err" >&2
  fail "kcat -G did not get back the 3 messages with their headers"
fi
ok "kcat consumer group $GROUP got the 3 messages back with headers"

consume_group >"$WORK/consumed2.txt" || { cat "$WORK/consume.err" >&2; fail "second kcat consumer group run failed"; }
[[ ! -s "$WORK/consumed2.txt" ]] || { cat "$WORK/consumed2.txt" >&2; fail "group $GROUP re-read messages: offsets were not committed"; }
ok "group offsets committed (second run of the group reads nothing)"

BIG_TOPIC="vexlens-smoke-big-$RUN_ID"
head -c $((5 * 1024 * 1024)) /dev/zero | tr '\0' 'x' >"$WORK/big.bin"
kcat -b "$BROKER" -P -t "$BIG_TOPIC" -p 0 -X message.max.bytes=16777216 -X compression.codec=none \
  "$WORK/big.bin" 2>"$WORK/big.err" || { cat "$WORK/big.err" >&2; fail "could not produce a 5 MiB message"; }
got="$(timeout 60 kcat -b "$BROKER" -C -t "$BIG_TOPIC" -p 0 -o beginning -c 1 -e -q -f '%S\n' 2>"$WORK/big.err" || true)"
[[ "$got" == "$((5 * 1024 * 1024))" ]] || { cat "$WORK/big.err" >&2; fail "5 MiB message: consumed size '$got'"; }
ok "5 MiB message produced and consumed"

# ------------------------------------------------------------------ SecantusDB + pymongo
DB="vexlens_smoke_${RUN_ID//-/_}"
"$PY" - "$MONGO_PORT" "$DB" "$SERVICES" <<'EOF' || fail "MongoDB-wire checks failed (see above)"
import subprocess, sys, time
import pymongo
from pymongo.errors import DuplicateKeyError, PyMongoError

port, dbname, services = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def client():
    return pymongo.MongoClient(host="127.0.0.1", port=port, directConnection=True,
                               serverSelectionTimeoutMS=30000)

def check(cond, msg):
    if not cond:
        print(f"SMOKE FAIL: {msg}", file=sys.stderr)
        sys.exit(1)
    print(f"smoke ok: {msg}")

c = client()
coll = c[dbname]["statements"]
coll.insert_one({"_id": "s1", "vuln": "CVE-2024-0001", "product": "pkg:cargo/a@1", "status": "affected"})
coll.insert_many([{"_id": "s2", "vuln": "CVE-2024-0002", "product": "pkg:cargo/b@1", "status": "fixed"}])
docs = list(coll.find({}, sort=[("_id", 1)]))
check([d["_id"] for d in docs] == ["s1", "s2"], "insert_one/insert_many + find")

name = coll.create_index([("vuln", 1), ("product", 1)], unique=True)
try:
    coll.insert_one({"_id": "dup", "vuln": "CVE-2024-0001", "product": "pkg:cargo/a@1"})
    check(False, "unique index rejects a duplicate")
except DuplicateKeyError:
    check(True, f"unique index {name} rejects a duplicate")

r = coll.update_one({"vuln": "CVE-2024-0003", "product": "pkg:cargo/c@1"},
                    {"$set": {"status": "not_affected"}}, upsert=True)
check(r.upserted_id is not None, "update_one upsert inserts")
r = coll.update_one({"vuln": "CVE-2024-0003", "product": "pkg:cargo/c@1"},
                    {"$set": {"status": "under_investigation"}}, upsert=True)
check(r.matched_count == 1 and r.upserted_id is None, "update_one upsert updates the existing doc")
check(coll.count_documents({}) == 3, "3 documents before restart")

# restart the server with the same data
for cmd in ("stop-mongo", "start-mongo"):
    p = subprocess.run([services, cmd], capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout, p.stderr, file=sys.stderr)
        check(False, f"services.sh {cmd}")
print("smoke ok: stop-mongo + start-mongo")

# same client object: the driver must reconnect by itself
deadline = time.time() + 30
while True:
    try:
        n = coll.count_documents({})
        break
    except PyMongoError as e:
        if time.time() > deadline:
            check(False, f"old client reconnects after restart ({e})")
        time.sleep(0.5)
check(n == 3, "old client sees the 3 documents after restart")

c2 = client()
coll2 = c2[dbname]["statements"]
doc = coll2.find_one({"vuln": "CVE-2024-0003"})
check(doc is not None and doc["status"] == "under_investigation", "upserted doc survived the restart")
idx = coll2.index_information()
check(any(v.get("unique") for v in idx.values()), "unique index survived the restart")
try:
    coll2.insert_one({"_id": "dup2", "vuln": "CVE-2024-0001", "product": "pkg:cargo/a@1"})
    check(False, "unique index still enforced after restart")
except DuplicateKeyError:
    check(True, "unique index still enforced after restart")

c2.drop_database(dbname)
c2.close()
c.close()
EOF

echo "SMOKE PASSED: kcat <-> Kafka (produce, headers, consumer group, commit, 5 MiB) and pymongo <-> SecantusDB (insert, find, unique index, upsert, restart)"
