#!/usr/bin/env bash
# make e2e-swarm: deploy/swarm/stack.yaml on a real single-node Docker Swarm; any deviation fails.
#   swarm init (unless this engine is already in a swarm) -> make secrets -> build the images ->
#   docker stack deploy: 3 api replicas (keys on, internal routes on 9000), the HAProxy edge
#   (https on a host-mode port, http redirecting), PostgreSQL (db, on this node, labelled
#   tagger.db=true; password from secrets/postgres-password), the trainer job trains a quick
#   model -> db healthy -> the edge from outside (tests/swarm/edge_checks.py: TLS with the test
#   certificate, http redirected, /metrics /model /docs /openapi.json 404, /predict 401 without
#   a key or with a wrong one, 200 with it) and /metrics on 9000 inside an api task (404 on
#   8000) -> 50 answers in a row through the edge name it, from every replica -> 16 clients
#   poll through the edge from here on -> the trainer job again (forced promotion): every
#   replica serves the new version within 15 s, no failed request -> docker service update
#   --image to a rebuilt api image (start-first, one at a time): no failed request, every new
#   replica serves -> scale to 1 and back to 3 -> the figures; every prediction of
#   the last phase is a row in the stack's PostgreSQL (counted by request id) -> rollout under
#   16 clients through the edge, the store's CLI in one-off containers of the trainer image on
#   the stack's artefacts volume: a copy of the served version as the shadow candidate (every
#   replica reports it in /model, shadow rows in PostgreSQL, pinning 200/409) -> canary 10% ->
#   promote -> shadow the old version -> abort; no failed request, every answer from one of the
#   two, p99 during the moves within 2x of steady (tests/e2e/rollout.py) -> the key is in no
#   line the api replicas or the edge logged -> docker stack rm,
#   its volumes and the rebuilt image removed, the node label removed if this script added it,
#   swarm left if this script made it (also on failure). E2E_SWARM_ONLY=rollout: the first
#   model, then the rollout stages only (for working on them).
# Talks to the API only through the edge's https port on 127.0.0.1 (secrets/edge.crt as the CA,
# the key secrets/api-key), and to each replica's internal port (9000) through the edge
# container (Docker's DNS, tasks.api) to read what every replica serves.
set -euo pipefail
cd "$(dirname "$0")/../.."

STACK=${SWARM_STACK:-tagger-swarm-e2e}
export EDGE_PORT=${E2E_SWARM_PORT:-18100}
export EDGE_TLS_PORT=${E2E_SWARM_TLS_PORT:-18143}
# Every client here is one source address (127.0.0.1, through the host-mode port): the edge's
# per-source rate limit (500 requests in 10 s by default) would answer most of the load 429.
# tests/test_edge.py checks the limits on the same haproxy.cfg.
export EDGE_SOURCE_MAX_REQUESTS_10S=1000000
export TRAIN_CONFIG=train-quick.yaml
export API_POLL_INTERVAL_S=1
export API_REPLICAS=3
# Two cores run three replicas, the edge, 16 clients and a training: one thread for the
# trainer (two threads of a contended CPU made a 400-question epoch take minutes), and each
# replica capped at half a core.
export TRAINER_THREADS=1
export API_CPUS=0.5 API_TORCH_THREADS=1
export TAG=${TAG:-latest}
URL="https://127.0.0.1:${EDGE_TLS_PORT}"
HTTP_URL="http://127.0.0.1:${EDGE_PORT}"
CA=secrets/edge.crt
KEY_FILE=secrets/api-key
# For tests/e2e/rollout.py's requests through the edge.
export E2E_CA_FILE=$PWD/$CA
REBUILT="tagger-api:swarm-e2e-rebuilt"
CLIENTS=16

WORK=$(mktemp -d)
echo steady > "$WORK/phase"
made_swarm=false
labelled=false
node=
loader=

phase() {  # PHASE [FOLDER]: the load client's phase (replaced atomically: clients read it)
  local folder=${2:-$WORK}
  echo "$1" > "$folder/phase.tmp"; mv "$folder/phase.tmp" "$folder/phase"
}
step() { printf '\n== e2e-swarm %s: %s\n' "$(date +%T)" "$*"; }
fail() {
  echo "E2E-SWARM FAILED: $*" >&2
  docker service ls >&2 || true
  docker service ps --no-trunc "${STACK}_api" >&2 || true
  docker service logs --raw --tail 30 "${STACK}_edge" >&2 || true
  docker service logs --raw --tail 30 "${STACK}_api" >&2 || true
  exit 1
}
remove_stack() {
  docker stack rm "$STACK" >/dev/null 2>&1 || true
  # A job's containers (the trainer's) outlive `docker stack rm`, even a running one.
  docker ps -aq --filter "label=com.docker.swarm.service.name=${STACK}_trainer" \
    | xargs -r docker rm -f >/dev/null
  for _ in $(seq 1 60); do  # then the volumes can go, once the network is gone too
    [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] \
      && [ -z "$(docker network ls -q --filter "label=com.docker.stack.namespace=$STACK")" ] && break
    sleep 1
  done
  docker volume rm "${STACK}_artefacts" "${STACK}_data" "${STACK}_database" >/dev/null 2>&1 || true
}
cleanup() {
  step "clean up: stack, volumes, rebuilt image$($made_swarm && echo ', swarm')"
  touch "$WORK/stop" "$WORK/rollout/stop" 2>/dev/null || true
  [ -n "$loader" ] && wait "$loader" 2>/dev/null || true
  remove_stack
  docker image rm "$REBUILT" >/dev/null 2>&1 || true
  if $labelled && ! $made_swarm; then docker node update --label-rm tagger.db "$node" >/dev/null 2>&1 || true; fi
  if $made_swarm; then docker swarm leave --force >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

snap() {  # a Python expression over the load client's snapshot `s`
  python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
    "$WORK/snapshot.json" "$1" 2>/dev/null || echo ""
}
run_trainer_job() {  # waits for the job; prints the version it published
  local before
  before=$(docker service ps -q "${STACK}_trainer" | wc -l)
  if [ "$#" -gt 0 ]; then docker service update --detach --force "$@" "${STACK}_trainer" >/dev/null; fi
  for _ in $(seq 1 600); do
    local tasks states
    tasks=$(docker service ps -q "${STACK}_trainer" | wc -l)
    states=$(docker service ps --format '{{.CurrentState}}' "${STACK}_trainer" | head -1)
    if [ "$tasks" -gt "$before" ] || [ "$#" -eq 0 ]; then
      case "$states" in
        Complete*) break ;;
        Failed*|Rejected*) docker service logs --raw --tail 20 "${STACK}_trainer" >&2; fail "trainer job: $states" ;;
      esac
    fi
    sleep 1
  done
  docker service logs --raw "${STACK}_trainer" 2>/dev/null \
    | sed -n 's/^published \([^ ]*\) .*/\1/p' | sort | tail -1
}
replica_versions() {  # what every api task serves, asked through the edge container
  local edge
  edge=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_edge" | head -1)
  docker exec "$edge" python3 -c '
import json, socket, urllib.request as u
addresses = sorted({a[4][0] for a in socket.getaddrinfo("tasks.api", 9000, proto=socket.IPPROTO_TCP)})
out = {}
for a in addresses:
    try:
        out[a] = json.load(u.urlopen(f"http://{a}:9000/model", timeout=3))["version"]
    except Exception as exc:
        out[a] = f"error {exc!r}"[:80]
print(json.dumps(out))'
}
all_serve() {  # VERSION N: exactly N replicas and all serve VERSION
  python3 -c 'import json, sys; v = json.loads(sys.argv[1]); sys.exit(not (len(v) == int(sys.argv[3]) and set(v.values()) == {sys.argv[2]}))' \
    "$(replica_versions)" "$1" "$2"
}
db_healthy() {  # the db task runs, healthy, within 120 s
  local container
  for _ in $(seq 1 120); do
    container=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_db" | head -1)
    [ -n "$container" ] && [ "$(docker inspect -f '{{.State.Health.Status}}' "$container" 2>/dev/null)" = healthy ] && return 0
    sleep 1
  done
  return 1
}
wait_converged() {  # SERVICE: its last update or scale has finished
  for _ in $(seq 1 300); do
    local state
    state=$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$1")
    case "$state" in
      ""|completed) [ "$(docker service ls --filter "name=$1" --format '{{.Replicas}}' | awk -F/ '{print ($1 == $2)}')" = 1 ] && return 0 ;;
      rollback_*|paused) fail "$1 update ended in state $state" ;;
    esac
    sleep 1
  done
  fail "$1 did not converge in 300 s"
}
store_cli() {  # python ARGS in a one-off trainer container on the stack's artefacts volume
  docker run --rm -i -v "${STACK}_artefacts:/artefacts" -e TAGGER_ARTEFACTS_DIR=/artefacts \
    -e TRAINER_LOG_FORMAT=text --entrypoint python "tagger-trainer:$TAG" "$@"
}
versions_cli() {  # the store's CLI, as an operator runs it on a Swarm
  store_cli -m trainer.versions "$@" 2>"$WORK/versions.log" \
    || { cat "$WORK/versions.log" >&2; fail "versions $*"; }
}
on_every_replica() {  # rollout.py ARGS... run in the edge container against every api task
  local edge urls
  edge=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_edge" | head -1)
  urls=$(docker exec "$edge" python3 -c 'import socket
print(" ".join(sorted({f"http://{a[4][0]}:9000" for a in socket.getaddrinfo("tasks.api", 9000, proto=socket.IPPROTO_TCP)})))')
  # shellcheck disable=SC2086
  docker exec -i "$edge" python3 - "$@" $urls < tests/e2e/rollout.py
}
rollout() {  # the rollout stages through the edge, 16 clients
  local stable v3 loads="$WORK/rollout" shadow_rows db unloaded
  stable=$(latest_version)
  unloaded=$([ "$v1" != "$stable" ] && echo "$v1" || echo 20000101T000000000Z-000000)
  mkdir -p "$loads"; phase steady "$loads"
  step "rollout: $CLIENTS clients on $stable (steady); a copy of it published beside it"
  python3 tests/swarm/load.py "$URL" "$loads" --clients "$CLIENTS" --ids swarm-r \
    --cacert "$CA" --key-file "$KEY_FILE" > "$WORK/rollout.json" &
  loader=$!
  v3=$(store_cli -c 'import shutil
from shared.store import MANIFEST_FILE, ArtefactStore
store = ArtefactStore("/artefacts")
with store.staging() as (version, folder):
    for path in (store.root / store.latest()).iterdir():
        if path.name != MANIFEST_FILE:
            shutil.copy(path, folder / path.name)
print(version)' 2>/dev/null | tail -1)
  [ -n "$v3" ] || fail "could not publish a copy of $stable"
  sleep 4
  phase shadow-cli "$loads"; versions_cli shadow "$v3"
  phase shadow-move "$loads"
  on_every_replica wait "$stable" "$v3" shadow || fail "not every replica has $v3 as its shadow"
  sleep 2; phase shadow "$loads"; sleep 8
  python3 tests/e2e/rollout.py pin "$URL" "$stable" "$v3" "$unloaded" || fail "pinning through the edge"
  # The clients saturate the replicas' half cores, so the shadow sheds nearly everything, as
  # it must; a spell of single requests gives it room.
  phase pause "$loads"
  python3 tests/e2e/rollout.py light "$URL" data/sample/valid.tsv 150 swarm-light \
    || fail "requests one at a time, with feedback"
  phase shadow "$loads"
  db=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_db" | head -1)
  for _ in $(seq 1 20); do
    shadow_rows=$(docker exec "$db" psql -d tagger -tAc "SELECT count(*) FROM predictions
      WHERE role = 'shadow' AND version = '$v3' AND agree_top1 IS NOT NULL")
    [ "$shadow_rows" -gt 0 ] && break
    sleep 1
  done
  echo "shadow rows of $v3 in the stack's PostgreSQL: $shadow_rows"
  [ "$shadow_rows" -gt 0 ] || fail "no shadow row of $v3 in PostgreSQL"

  step "rollout: canary $v3 at 10%, promote; shadow $stable, abort"
  phase canary-cli "$loads"; versions_cli canary "$v3" --fraction 0.1
  phase canary-move "$loads"
  on_every_replica wait "$stable" "$v3" canary || fail "canary on every replica"
  sleep 2; phase canary "$loads"; sleep 10
  python3 tests/e2e/rollout.py keys "$URL" "$v3" 0.1 || fail "rollout keys through the edge"
  phase promote-cli "$loads"; versions_cli promote "$v3"
  phase promote-move "$loads"
  on_every_replica wait "$v3" none - || fail "promote on every replica"
  sleep 2; phase promoted "$loads"; sleep 5
  phase shadow-old-cli "$loads"; versions_cli shadow "$stable"
  phase shadow-old-move "$loads"
  on_every_replica wait "$v3" "$stable" shadow || fail "shadow old on every replica"
  sleep 2; phase abort-cli "$loads"; versions_cli abort --reason "e2e-swarm: the abort path"
  phase abort-move "$loads"
  on_every_replica wait "$v3" none - || fail "abort on every replica"
  sleep 2; phase aborted "$loads"; sleep 4
  touch "$loads/stop"; wait "$loader"; loader=
  versions_cli status
  python3 tests/e2e/rollout.py summary "$WORK/rollout.json" "$stable" "$v3" 0.1 \
    || fail "requests failed, answers from another version, or p99 during the moves too high"
}
internal_metrics() {  # /metrics answers on an api task's internal port, 404 on its public one
  local api
  api=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_api" | head -1)
  docker exec "$api" python -c '
import urllib.error, urllib.request as u
metrics = u.urlopen("http://127.0.0.1:9000/metrics", timeout=5).read().decode()
assert "tagger_http_requests_total" in metrics, metrics[:300]
try:
    u.urlopen("http://127.0.0.1:8000/metrics", timeout=5)
    raise SystemExit("/metrics answered on the public port 8000")
except urllib.error.HTTPError as exc:
    assert exc.code == 404, exc.code
print(f"ok   /metrics in an api task: 9000 200 ({len(metrics.splitlines())} lines), 8000 404")' \
    || fail "/metrics on the internal port"
}
no_key_logged() {  # the key is in no log line of any api or edge container, old ones included
  # (docker logs of each: `docker service logs` can hang once tasks have been replaced)
  local service container lines found total
  for service in api edge; do
    lines=0; found=0
    for container in $(docker ps -aq --filter "label=com.docker.swarm.service.name=${STACK}_$service"); do
      total=$(timeout 120 docker logs "$container" 2>&1 | wc -l)
      lines=$((lines + total))
      found=$((found + $(timeout 120 docker logs "$container" 2>&1 | grep -cF "$E2E_API_KEY" || true)))
    done
    [ "$lines" -gt 0 ] || fail "no log line of ${STACK}_$service to look in"
    [ "$found" = 0 ] || fail "the API key is in $found log lines of ${STACK}_$service"
    echo "ok   the key is in none of the $lines lines that ${STACK}_$service's containers logged"
  done
}
latest_version() {  # what LATEST names, read from the stack's volume
  store_cli -c 'from shared.store import ArtefactStore; print(ArtefactStore("/artefacts").latest())' 2>/dev/null | tail -1
}
SECONDS=0

step "swarm"
case "$(docker info --format '{{.Swarm.LocalNodeState}}')" in
  active) echo "this engine is already in a swarm: using it, leaving it as it is" ;;
  inactive) docker swarm init --advertise-addr 127.0.0.1 >/dev/null; made_swarm=true; echo "swarm initialised (left again at the end)" ;;
  *) fail "swarm state $(docker info --format '{{.Swarm.LocalNodeState}}')" ;;
esac

remove_stack  # what a killed earlier run may have left
# The db's placement: this node. Its password: the secret file (`make secrets` makes the same).
node=$(docker info --format '{{.Swarm.NodeID}}')  # (docker node update takes no "self")
if [ -z "$(docker node inspect -f '{{index .Spec.Labels "tagger.db"}}' "$node")" ]; then
  docker node update --label-add tagger.db=true "$node" >/dev/null; labelled=true
fi
sh database/make-secret.sh
sh deploy/make-secrets.sh  # the edge's certificate, the default API key, the stats password
[ -s "$KEY_FILE" ] || fail "no $KEY_FILE (the plain key of secrets/api-keys): delete secrets/api-keys and run make secrets"
E2E_API_KEY=$(cat "$KEY_FILE"); export E2E_API_KEY

step "build the images (api, edge, trainer, db)"
docker compose -f deploy/swarm/stack.yaml build --quiet

step "docker stack deploy: 3 api replicas, the edge, db, the trainer job (quick config, embedded sample)"
docker stack deploy --resolve-image never -c deploy/swarm/stack.yaml "$STACK"
v1=$(run_trainer_job); [ -n "$v1" ] || fail "the first trainer job published nothing"
echo "v1 = $v1 (trained ${SECONDS} s after the start)"
db_healthy || fail "db not healthy: $(docker service ps --no-trunc "${STACK}_db" | tail -n +2 | head -3)"
echo "db: $(docker service ls --filter "name=${STACK}_db" --format '{{.Replicas}}') healthy"

step "every replica serves $v1 (their internal port, through the edge container)"
for i in $(seq 1 60); do all_serve "$v1" 3 && break; [ "$i" -lt 60 ] || fail "replicas: $(replica_versions)"; sleep 1; done
echo "replicas: $(replica_versions)"

step "the edge from outside: TLS, the redirect, internal routes, keys; /metrics on 9000 inside"
python3 tests/swarm/edge_checks.py "$URL" "$HTTP_URL" "$CA" "$KEY_FILE" || fail "the edge's checks"
internal_metrics

step "50 answers in a row through the edge (https, the key) name $v1, from every replica"
python3 tests/swarm/load.py "$URL" "$WORK" --clients "$CLIENTS" --ids swarm \
  --cacert "$CA" --key-file "$KEY_FILE" > "$WORK/load.json" &
loader=$!
for i in $(seq 1 120); do
  [ "$(snap 's["streak"]["version"] == "'"$v1"'" and s["streak"]["count"] >= 50')" = True ] && break
  [ "$i" -lt 120 ] || fail "no 50 answers in a row naming $v1: $(cat "$WORK/snapshot.json")"
  sleep 0.5
done
[ "$(snap 'len(s["replicas"])')" = 3 ] || fail "answers did not come from 3 replicas: $(snap 's["replicas"]')"
echo "50 in a row: $(snap 's["streak"]'); answered by $(snap 'sorted(s["replicas"])')"
if [ "${E2E_SWARM_ONLY:-}" = rollout ]; then
  touch "$WORK/stop"; wait "$loader"; loader=
  rollout; no_key_logged; step "passed in ${SECONDS} s"; exit 0
fi

step "retrain (the trainer job again, forced promotion) while $CLIENTS clients poll"
phase retrain
v2=$(run_trainer_job --env-add TRAINER_FORCE_PROMOTE=true)
[ -n "$v2" ] && [ "$v2" != "$v1" ] || fail "the second trainer job published no new version"
published=$SECONDS
until all_serve "$v2" 3; do
  [ $((SECONDS - published)) -le 15 ] || fail "not every replica serves $v2 15 s after the job ended: $(replica_versions)"
  sleep 0.2
done
# Counted from the trainer's "published" line (Docker's timestamp on it; LATEST moved just
# before), not from the end of the job, which Swarm reports a few seconds later.
every_replica_s=$(python3 -c 'import sys, datetime as d
line = d.datetime.fromisoformat(sys.argv[1][:26].rstrip("Z") + "+00:00")
print(f"{d.datetime.now(d.timezone.utc).timestamp() - line.timestamp():.1f}")' \
  "$(docker service logs --raw --timestamps "${STACK}_trainer" 2>/dev/null | grep " published $v2 " | cut -d' ' -f1)")
python3 -c 'import sys; sys.exit(float(sys.argv[1]) > 15)' "$every_replica_s" \
  || fail "every replica served $v2 only ${every_replica_s} s after it was published"
echo "v2 = $v2: every replica serves it ${every_replica_s} s after the trainer's published line"
sleep 2

step "rolling update of the api to a rebuilt image ($REBUILT) while $CLIENTS clients poll"
phase rolling
# The image just built with one label more: a new image id, as a new release has, built in a
# second (a from-scratch build of the same Dockerfile would test pip, not the rollout).
printf 'FROM tagger-api:%s\nLABEL tagger.e2e.rebuilt="%s"\n' "$TAG" "$(date -u +%FT%TZ)" \
  | docker build --quiet -t "$REBUILT" - >/dev/null
[ "$(docker image inspect -f '{{.Id}}' "$REBUILT")" != "$(docker image inspect -f '{{.Id}}' "tagger-api:$TAG")" ] \
  || fail "the rebuilt image is the same image"
rolled_at=$SECONDS
docker service update --quiet --detach=false --no-resolve-image --image "$REBUILT" "${STACK}_api" \
  || fail "docker service update did not converge"
wait_converged "${STACK}_api"
rolling_s=$((SECONDS - rolled_at))
images=$(docker service ps --filter desired-state=running --format '{{.Image}}' "${STACK}_api" | sort -u)
[ "$images" = "$REBUILT" ] || fail "running api tasks: $images"
all_serve "$v2" 3 || fail "after the update: $(replica_versions)"
echo "rolled in ${rolling_s} s; replicas: $(replica_versions)"

step "scale the api to 1, then back to 3, while $CLIENTS clients poll"
phase scaling
docker service scale --detach=false "${STACK}_api=1" >/dev/null
wait_converged "${STACK}_api"
for i in $(seq 1 30); do all_serve "$v2" 1 && break; [ "$i" -lt 30 ] || fail "at 1: $(replica_versions)"; sleep 1; done
phase one-replica; sleep 15  # the rate of one replica, for the capacity table
phase scaling
docker service scale --detach=false "${STACK}_api=3" >/dev/null
wait_converged "${STACK}_api"
for i in $(seq 1 60); do all_serve "$v2" 3 && break; [ "$i" -lt 60 ] || fail "back at 3: $(replica_versions)"; sleep 1; done
echo "replicas: $(replica_versions)"
phase three-replicas; sleep 15

touch "$WORK/stop"; wait "$loader"; loader=
python3 - "$WORK/load.json" "$v1" "$v2" "$every_replica_s" "$rolling_s" <<'PY' || fail "requests failed, or answers named the wrong versions"
import json, sys
load = json.load(open(sys.argv[1]))
v1, v2, every_s, rolling_s = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
phases = load["phases"]
for name in ("steady", "retrain", "rolling", "scaling", "one-replica", "three-replicas"):
    p = phases[name]
    rate = p["ok"] / max(p["last"] - p["first"], 1e-9)
    print(
        f"{name:14} {p['ok']:6} ok {p['failed']:3} failed {rate:6.1f}/s  versions {p['versions']}"
        f"  {p['errors'][:3]}"
    )
assert all(p["failed"] == 0 for p in phases.values()), "failed requests"
assert set(phases["retrain"]["versions"]) <= {v1, v2} and v2 in phases["retrain"]["versions"]
for name in ("rolling", "scaling", "one-replica", "three-replicas"):
    assert set(phases[name]["versions"]) == {v2}, (name, phases[name]["versions"])
total = sum(p["ok"] for p in phases.values())
print(
    f"swarm: {total} requests at concurrency 16 in {load['now']:.0f} s, 0 failed; every replica "
    f"on the new version {every_s} s after it was published; rolling update of 3 replicas {rolling_s} s, "
    f"{phases['rolling']['ok']} requests during it, 0 failed"
)
PY

step "the replicas log to the stack's PostgreSQL: every answer of the last phase is a row"
db=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_db" | head -1)
[ -n "$db" ] || fail "no running db task"
answered=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["phases"]["three-replicas"]["ok"])' "$WORK/load.json")
for _ in $(seq 1 30); do  # each replica's writer flushes every API_PREDICTION_LOG_FLUSH_S
  logged=$(docker exec "$db" psql -d tagger -tAc "SELECT count(*) FROM predictions WHERE request_id LIKE 'swarm-three-replicas-%'")
  [ "$logged" = "$answered" ] && break
  sleep 1
done
echo "predictions of the last phase: $answered answered, $logged rows in PostgreSQL"
echo "rows of the whole load: $(docker exec "$db" psql -d tagger -tAc "SELECT count(*) FROM predictions WHERE request_id LIKE 'swarm-%'") of $(python3 -c 'import json, sys; print(sum(p["ok"] for p in json.load(open(sys.argv[1]))["phases"].values()))' "$WORK/load.json") answered"
[ "$logged" = "$answered" ] || fail "$logged rows logged of $answered predictions answered"

rollout
no_key_logged

step "passed in ${SECONDS} s"
echo "e2e-swarm: 1 passed, 0 failed"
