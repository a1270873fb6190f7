#!/usr/bin/env bash
# make e2e: the used-by flow against a real Docker Engine; any deviation fails the run.
#   the password secret (secrets/postgres-password, as make secrets writes it) -> build the
#   images -> train (quick config) on the sample the image carries, with an empty data folder
#   as on a fresh clone -> up db (PostgreSQL) -> healthy -> up api -> healthy ->
#   /predict names the new version -> /docs, /openapi.json -> retrain while a client polls:
#   new version served within seconds, zero failed requests -> the lean API image has no torch
#   and serves ONNX; a version without model.onnx is refused with the reason in /model while
#   the previous one serves on -> restart api: the newest servable version served ->
#   monitoring profile with two api replicas: Prometheus scrapes both and counts exactly the
#   requests sent; the api logs JSON lines carrying the request ids ->
#   the inference log (tests/e2e/live.py): predictions are rows in the db service's PostgreSQL,
#   feedback is accepted (an unknown id is a JSON 404), the live gauges reach Prometheus ->
#   drift: an in-distribution replay leaves TaggerInputDrift silent for longer than its `for`,
#   one window of shifted titles makes it fire -> a new tag: questions about a made-up
#   framework reported with it through POST /feedback, a retrain --with-feedback publishes a
#   version that puts it first on held-out titles; the live figures of both versions ->
#   faults under 64 clients: the db stopped, started, SIGKILLed, up again: no failed
#   prediction, dropped rows counted (TaggerPredictionLogDropping fires), rows logged again ->
#   rollout (tests/e2e/rollout.py), 64 clients: a retrain with TRAINER_ROLLOUT=shadow is the
#   shadow candidate on every replica (LATEST unchanged), pinned requests 200 and 409, shadow
#   rows in PostgreSQL, `versions compare` -> canary 10% (the share, a key always on one
#   version) -> promote -> shadow the old version -> abort: no failed request, every answer
#   from one of the two, p99 during the moves within 2x of steady ->
#   docker compose down -v (also on failure). E2E_ONLY=rollout: the first model, then the
#   rollout stages only (for working on them).
# Talks to the services only through the port published on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-tagger-e2e}
export API_PORT=${E2E_PORT:-18000}
export API_PORT_2=$((API_PORT + 1))
export PROMETHEUS_PORT=${E2E_PROMETHEUS_PORT:-19090}
export API_POLL_INTERVAL_S=1
export TRAIN_CONFIG=train-quick.yaml
export DATASET_FILE=
export VALID_PATH=
# A small window refreshed often: the drift stages fill one in seconds (defaults: 1000, 15 s).
export API_LIVE_WINDOW_ROWS=300
export API_LIVE_REFRESH_S=2
URL="http://127.0.0.1:${API_PORT}"
PROM="http://127.0.0.1:${PROMETHEUS_PORT}"
SOURCE=${E2E_DATA:-data/sample/train.tsv}

WORK=$(mktemp -d)
export DATA_DIR="$WORK/data"
mkdir -p "$DATA_DIR"   # empty, as ./data/raw on a fresh clone
chmod -R a+rX "$WORK"

step() { printf '\n== e2e %s: %s\n' "$(date +%T)" "$*"; }
fail() {
  echo "E2E FAILED: $*" >&2
  docker compose --profile monitoring logs --no-color --tail 50 api db prometheus >&2 || true
  exit 1
}
loader=
cleanup() {
  step "docker compose down -v"
  touch "$WORK/stop"
  if [ -n "$loader" ]; then
    touch "$WORK/faults/stop" "$WORK/rollout/stop" 2>/dev/null || true
    wait "$loader" 2>/dev/null || true
  fi
  docker compose --profile monitoring --profile train down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

get() { python3 -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"; }
status() { python3 -c 'import sys, urllib.request as u, urllib.error as e
try: print(u.urlopen(sys.argv[1], timeout=5).status)
except e.HTTPError as x: print(x.code)
except Exception: print(0)' "$1"; }
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
train() {  # [docker compose run options] [-- trainer options]
  local opts=() args=()
  while [ "$#" -gt 0 ]; do
    if [ "$1" = -- ]; then shift; args=("$@"); break; fi
    opts+=("$1"); shift
  done
  docker compose run --rm -T "${opts[@]+"${opts[@]}"}" trainer "${args[@]+"${args[@]}"}" \
    2>"$WORK/train.log" | tee "$WORK/train.out" >&2 \
    || { tail -20 "$WORK/train.log" >&2; fail "trainer run failed"; }
  grep -m1 'dataset' "$WORK/train.log" >&2 || true
  sed -n 's/^published \([^ ]*\) .*/\1/p' "$WORK/train.out" | tail -1
}
wait_healthy() {  # [replicas]: every api container healthy
  local want=${1:-1} state
  for _ in $(seq 1 120); do
    state=$(docker compose ps -q api | xargs -r docker inspect -f '{{.State.Health.Status}}' 2>/dev/null | sort | uniq -c | xargs || true)
    [ "$state" = "$want healthy" ] && return 0
    sleep 1
  done
  fail "api not healthy after 120 s (want $want healthy, got: ${state:-none})"
}
wait_db() {  # the db container healthy
  local state
  for _ in $(seq 1 120); do
    state=$(docker compose ps -q db | xargs -r docker inspect -f '{{.State.Health.Status}}' 2>/dev/null || true)
    [ "$state" = healthy ] && return 0
    sleep 1
  done
  fail "db not healthy after 120 s (got: ${state:-none})"
}
phase() {  # PHASE [FOLDER]: the load client's phase (replaced atomically: clients read it)
  local folder=${2:-$WORK/faults}
  echo "$1" > "$folder/phase.tmp"; mv "$folder/phase.tmp" "$folder/phase"
}
versions_cli() {  # the store's CLI in a one-off trainer container (as an operator runs it)
  docker compose run --rm -T --no-deps --entrypoint python trainer -m trainer.versions "$@" \
    2>"$WORK/versions.log" || { cat "$WORK/versions.log" >&2; fail "versions $*"; }
}
rollout() {  # API_URL...: the rollout stages against these replicas (the load on the first)
  local urls=("$@") stable v5 unloaded loads="$WORK/rollout" shadow_rows
  stable=$(get "$URL/model" | field version)
  unloaded=$([ "$v1" != "$stable" ] && echo "$v1" || echo 20000101T000000000Z-000000)
  mkdir -p "$loads"; phase steady "$loads"
  step "rollout: 64 clients on $stable (steady), then a retrain with TRAINER_ROLLOUT=shadow"
  python3 tests/swarm/load.py "$URL" "$loads" --clients 64 --ids e2e-r > "$WORK/rollout.json" &
  loader=$!
  sleep 8
  phase pause "$loads"  # two cores: the clients wait while the trainer trains
  # Another seed: a candidate that differs from the served version (forced past the gate).
  v5=$(train -e TRAINER_ROLLOUT=shadow -e TRAINER_FORCE_PROMOTE=true -e TRAINER_SEED=7)
  [ -n "$v5" ] && [ "$v5" != "$stable" ] || fail "the shadow retrain published nothing new"
  grep -m1 'candidate' "$WORK/train.out" "$WORK/train.log" >&2 || true
  python3 tests/e2e/rollout.py wait "$stable" "$v5" shadow "${urls[@]}" \
    || fail "$v5 is not the shadow candidate beside $stable on every replica"
  phase shadow "$loads"; sleep 8
  python3 tests/e2e/rollout.py pin "$URL" "$stable" "$v5" "$unloaded" || fail "pinning"
  # 64 clients saturate two cores, so the shadow sheds all but a few texts, as it must; a
  # spell of single requests (held-out titles, their tags reported as feedback) gives it room.
  phase pause "$loads"
  python3 tests/e2e/rollout.py light "$URL" data/sample/valid.tsv 200 e2e-light \
    || fail "requests one at a time, with feedback"
  phase shadow "$loads"
  for _ in $(seq 1 20); do  # the writer flushes every API_PREDICTION_LOG_FLUSH_S (0.5 s)
    shadow_rows=$(docker compose exec -T -u postgres db psql -d tagger -tAc "SELECT count(*)
      FROM predictions WHERE role = 'shadow' AND version = '$v5' AND agree_top1 IS NOT NULL
      AND jaccard IS NOT NULL AND score_delta IS NOT NULL")
    [ "$shadow_rows" -gt 0 ] && break
    sleep 1
  done
  echo "shadow rows of $v5 in PostgreSQL: $shadow_rows"
  [ "$shadow_rows" -gt 0 ] || fail "no shadow row of $v5 with its agreement in PostgreSQL"
  versions_cli compare || fail "versions compare"
  versions_cli status

  step "rollout: canary $v5 at 10%, then promote it"
  phase canary-cli "$loads"; versions_cli canary "$v5" --fraction 0.1
  phase canary-move "$loads"
  python3 tests/e2e/rollout.py wait "$stable" "$v5" canary "${urls[@]}" || fail "canary"
  sleep 2; phase canary "$loads"; sleep 10
  python3 tests/e2e/rollout.py keys "$URL" "$v5" 0.1 || fail "rollout keys"
  phase promote-cli "$loads"; versions_cli promote "$v5"
  phase promote-move "$loads"
  python3 tests/e2e/rollout.py wait "$v5" none - "${urls[@]}" || fail "promote"
  sleep 2; phase promoted "$loads"; sleep 5

  step "rollout: shadow the old version $stable, then abort"
  phase shadow-old-cli "$loads"; versions_cli shadow "$stable"
  phase shadow-old-move "$loads"
  python3 tests/e2e/rollout.py wait "$v5" "$stable" shadow "${urls[@]}" || fail "shadow old"
  sleep 2; phase abort-cli "$loads"; versions_cli abort --reason "e2e: the abort path"
  phase abort-move "$loads"
  python3 tests/e2e/rollout.py wait "$v5" none - "${urls[@]}" || fail "abort"
  sleep 2; phase aborted "$loads"; sleep 4
  touch "$loads/stop"; wait "$loader"; loader=
  versions_cli list
  python3 tests/e2e/rollout.py summary "$WORK/rollout.json" "$stable" "$v5" 0.1 \
    || fail "requests failed, answers from another version, or p99 during the moves too high"
}
SECONDS=0

sh database/make-secret.sh

step "build the images (api, trainer, prometheus, db)"
docker compose --profile train --profile monitoring build

step "train v1 with the quick config, no data given: the embedded sample in the image"
v1=$(train); [ -n "$v1" ] || fail "trainer printed no version"
grep -q 'embedded sample /app/data/sample/train.tsv' "$WORK/train.log" \
  || fail "the trainer did not say it used the embedded sample"
echo "v1 = $v1"

step "docker compose up -d db, then api"
docker compose up -d db
wait_db
docker compose up -d api
wait_healthy
[ "$(get "$URL/ready" | field model_version)" = "$v1" ] || fail "/ready does not name $v1"
answer=$(python3 -c 'import json, sys, urllib.request as u
r = u.Request(sys.argv[1] + "/predict", json.dumps({"text": "How to read a CSV file with pandas?"}).encode(), {"Content-Type": "application/json"})
print(u.urlopen(r, timeout=30).read().decode())' "$URL")
echo "$answer"
[ "$(echo "$answer" | field model_version)" = "$v1" ] || fail "/predict did not answer with $v1"
[ "$(status "$URL/docs")" = 200 ] || fail "/docs"
[ "$(status "$URL/openapi.json")" = 200 ] || fail "/openapi.json"
[ "$(status "$URL/nope")" = 404 ] || fail "unknown route is not 404"
[ "$(get "$URL/model" | field backend)" = onnx ] || fail "/model does not say backend onnx"
docker compose run --rm -T --no-deps --entrypoint python api -c \
  'import importlib.util as u, sys; sys.exit(bool([m for m in ("torch", "transformers") if u.find_spec(m)]))' \
  || fail "the API image has torch or transformers installed"
if [ "${E2E_ONLY:-}" = rollout ]; then rollout "$URL"; step "passed in ${SECONDS} s"; exit 0; fi

step "retrain on a data folder with 800 real questions while a client polls /predict"
# Another data set than v1's: the gate could rightly keep v1, so this run is forced.
head -n 801 "$SOURCE" > "$DATA_DIR/train.tsv"   # header + 800 questions
chmod a+r "$DATA_DIR/train.tsv"
python3 tests/e2e/poll.py "$URL" "$WORK/stop" 3600 > "$WORK/poll.json" &
poller=$!
v2=$(train -e TRAINER_FORCE_PROMOTE=true); [ -n "$v2" ] && [ "$v2" != "$v1" ] || fail "second training did not publish a new version"
published=$SECONDS
until [ "$(get "$URL/model" | field version)" = "$v2" ]; do
  [ $((SECONDS - published)) -le 15 ] || fail "/model still not $v2 after 15 s"
  sleep 0.2
done
echo "v2 = $v2 served $((SECONDS - published)) s after publishing"
sleep 2
touch "$WORK/stop"; wait "$poller"
cat "$WORK/poll.json"
python3 - "$WORK/poll.json" "$v1" "$v2" <<'PY' || fail "requests failed or versions wrong during the hot reload"
import json, sys
poll = json.load(open(sys.argv[1]))
assert poll["ok"] > 0 and poll["failed"] == 0, poll
assert poll["versions"] == [sys.argv[2], sys.argv[3]], poll["versions"]
PY

step "publish a version without model.onnx (as before the export): refused, $v2 serves on"
v3=$(docker compose run --rm -T --entrypoint python trainer -c '
import shutil
from shared.store import MANIFEST_FILE, ArtefactStore
store = ArtefactStore("/artefacts")
source = store.root / store.latest()
with store.staging() as (version, folder):
    for path in source.iterdir():
        if path.name != MANIFEST_FILE and path.suffix != ".onnx":
            shutil.copy(path, folder / path.name)
store.set_latest(version)
print(version)' 2>/dev/null | tail -1)
[ -n "$v3" ] || fail "could not publish a version without a graph"
published=$SECONDS
until get "$URL/model" | grep -q "$v3 has no model.onnx"; do
  [ $((SECONDS - published)) -le 15 ] || fail "/model does not list $v3 as refused after 15 s"
  sleep 0.2
done
get "$URL/model" | python3 -c 'import json, sys; print(json.load(sys.stdin)["failed_versions"])'
[ "$(get "$URL/model" | field version)" = "$v2" ] || fail "$v2 stopped serving"

step "restart the api: it serves the newest version it can ($v2; LATEST names $v3)"
docker compose stop api
docker compose up -d api
wait_healthy
[ "$(get "$URL/model" | field version)" = "$v2" ] || fail "restarted api does not serve $v2"

step "monitoring profile, two api replicas: Prometheus scrapes both, counts what is sent"
replicas=(-f compose.yaml -f tests/e2e/compose.replicas.yaml)
docker compose "${replicas[@]}" --profile monitoring up -d --scale api=2 api prometheus
wait_healthy 2
for _ in $(seq 1 60); do [ "$(status "$PROM/-/ready")" = 200 ] && break; sleep 1; done
[ "$(status "$PROM/-/ready")" = 200 ] || fail "prometheus not ready after 60 s"
python3 tests/e2e/monitoring.py "$PROM" 2 "$URL" "http://127.0.0.1:${API_PORT_2}" \
  || fail "Prometheus did not scrape every replica or count the requests sent"

step "the api logs one JSON object per line, with the request ids sent"
sleep 1  # access lines are written in batches, every API_LOG_FLUSH_S (0.5 s)
docker compose logs --no-color --no-log-prefix api > "$WORK/api.log"
python3 - "$WORK/api.log" <<'PY' || fail "api log lines are not JSON or lack the request ids"
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ids = {r.get("request_id") for r in lines if r["logger"] == "api.access"}
assert {"e2e-0-0", "e2e-1-0", "e2e-invalid-0"} <= ids, sorted(i for i in ids if i)[:10]
sample = next(r for r in lines if r.get("request_id") == "e2e-0-0")
assert sample["route"] == "/predict" and sample["status"] == 200 and sample["texts"] == 1
print(f"{len(lines)} JSON log lines; sample:", json.dumps(sample))
PY

before_live=$SECONDS
step "the inference log: rows in PostgreSQL, feedback, live gauges in Prometheus"
python3 tests/e2e/live.py logging "$URL" "$PROM" || fail "the inference log or feedback"

step "drift: an in-distribution replay is silent, one window of shifted titles fires"
python3 tests/e2e/live.py drift "$URL" "$PROM" data/sample/valid.tsv "$API_LIVE_WINDOW_ROWS" \
  || fail "TaggerInputDrift did not behave"

step "a new tag from feedback: predicted, reported, retrain --with-feedback"
python3 tests/e2e/live.py newtag-send "$URL" "$WORK" || fail "could not report the new tag"
v4=$(train -- --with-feedback); [ -n "$v4" ] && [ "$v4" != "$v2" ] || fail "the retrain with feedback published nothing new"
grep -m1 -i 'feedback' "$WORK/train.log" >&2 || true
published=$SECONDS
until [ "$(get "$URL/model" | field version)" = "$v4" ]; do
  [ $((SECONDS - published)) -le 15 ] || fail "/model still not $v4 after 15 s (promoted?)"
  sleep 0.2
done
echo "v4 = $v4 served $((SECONDS - published)) s after publishing"
python3 tests/e2e/live.py newtag-check "$URL" "$PROM" "$WORK" "$v2" "$v4" \
  || fail "$v4 did not learn the new tag, or the live figures of $v2 and $v4 are not both there"

step "faults under 64 clients: db stopped, started, SIGKILLed, up again"
mkdir -p "$WORK/faults"; phase steady
dropped_before=$(python3 tests/e2e/live.py dropped "$URL")
python3 tests/swarm/load.py "$URL" "$WORK/faults" --clients 64 --ids e2e-f > "$WORK/faults.json" &
loader=$!
sleep 4
phase stopped; docker compose "${replicas[@]}" stop db >/dev/null 2>&1; sleep 6
phase starting; docker compose "${replicas[@]}" start db >/dev/null 2>&1; wait_db
phase up; sleep 4
phase killed; docker compose "${replicas[@]}" kill -s SIGKILL db >/dev/null 2>&1; sleep 6
phase recovering; docker compose "${replicas[@]}" up -d db >/dev/null 2>&1; wait_db
phase back; sleep 6
touch "$WORK/faults/stop"; wait "$loader"; loader=
dropped_after=$(python3 tests/e2e/live.py dropped "$URL")
for _ in $(seq 1 30); do  # the writer flushes every API_PREDICTION_LOG_FLUSH_S (0.5 s)
  back_rows=$(python3 tests/e2e/live.py rows e2e-f-back-)
  [ "$back_rows" = "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["phases"]["back"]["ok"])' "$WORK/faults.json")" ] && break
  sleep 1
done
python3 - "$WORK/faults.json" "$dropped_before" "$dropped_after" "$back_rows" <<'PY' || fail "a fault of the db failed predictions, or the log did not count or resume"
import json, sys
load = json.load(open(sys.argv[1]))
before, after, back_rows = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
for name in ("steady", "stopped", "starting", "up", "killed", "recovering", "back"):
    p = load["phases"][name]
    print(f"{name:11} {p['ok']:6} ok {p['failed']:3} failed  {p['errors'][:2]}")
total = sum(p["ok"] for p in load["phases"].values())
failed = sum(p["failed"] for p in load["phases"].values())
back = load["phases"]["back"]["ok"]
print(
    f"faults: {total} predictions at concurrency 64 in {load['now']:.0f} s, {failed} failed; "
    f"dropped rows counter {before:.0f} -> {after:.0f}; after the db was back: {back_rows} rows "
    f"logged of {back} answered"
)
assert failed == 0, "failed predictions"
assert after > before, "no dropped row counted"
assert back_rows == back > 0, "not every prediction logged once the db was back"
PY
python3 tests/e2e/live.py firing "$PROM" TaggerPredictionLogDropping \
  || fail "Prometheus did not fire TaggerPredictionLogDropping"
echo "live stages took $((SECONDS - before_live)) s"

rollout "$URL" "http://127.0.0.1:${API_PORT_2}"

step "passed in ${SECONDS} s"
echo "e2e: 1 passed, 0 failed"
