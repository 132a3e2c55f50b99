#!/usr/bin/env bash
# runway quick start: on one machine, starts etcd, a throwaway PostgreSQL,
# two coordinators, one DB agent and two app agents (each fronting a tiny
# sample HTTP app), then runs a sample rollout with live progress (after a
# first rollout that lays down the sample app's existing schema). Every
# hop is mutual TLS, etcd included: `runway certs` makes a throwaway CA and
# a certificate for each part (in the work dir's pki/).
#
#   deploy/quickstart.sh         set up and run the sample rollout
#   deploy/quickstart.sh stop    stop everything the last run started
#
# etcd serves the coordinators only: `runway etcd init-auth` turns on its
# own authentication (agent and operator certificates get nothing).
#
# Installs what is missing (etcd, protoc, PostgreSQL 15) with apt.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
state_file="$repo/.quickstart/state"

stop_all() {
    [ -f "$state_file" ] || return 0
    # shellcheck disable=SC1090
    . "$state_file"
    for pid in ${PIDS:-}; do kill "$pid" 2>/dev/null || true; done
    for dir in ${APP_DIRS:-}; do [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true; done
    if [ -n "${PG_PID:-}" ]; then kill -QUIT "$PG_PID" 2>/dev/null || true; fi
    rm -f "$state_file"
    echo "stopped the quick start's processes"
}

if [ "${1:-}" = "stop" ]; then
    stop_all
    exit 0
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "error: nothing listens on port $1 after 10 s (see $work/*.log)" >&2
    exit 1
}

stop_all
echo "==> checking dependencies"
./deploy/install-deps.sh
echo "==> building runway (cargo build --workspace --bins)"
cargo build --workspace --bins --quiet
bin="$repo/target/debug"

work=$(mktemp -d /tmp/runway-quickstart.XXXXXX)
chmod 755 "$work"
mkdir -p "$repo/.quickstart"
pids=()
app_dirs=()
save_state() {
    printf 'PIDS="%s"\nAPP_DIRS="%s"\nPG_PID="%s"\nWORK="%s"\n' "${pids[*]}" "${app_dirs[*]}" "${pg_pid:-}" "$work" >"$state_file"
}
trap save_state EXIT

echo "==> making a CA and certificates (runway certs, in $work/pki)"
pki="$work/pki"
certs() { "$bin/runway" certs "$@" --dir "$pki" >/dev/null; }
certs init
certs server etcd --host 127.0.0.1 --host localhost
certs coordinator coord-1 --host 127.0.0.1
certs coordinator coord-2 --host 127.0.0.1
certs agent db-1 --env staging
certs agent app-1 --env staging
certs agent app-2 --env staging
# You: an operator who may sign migrations for staging.
certs operator quickstart --deploy staging --restore staging
# etcd's administrator (common name root), for `runway etcd init-auth`.
certs etcd-root
tls_toml() { printf '[tls]\nca = "%s"\ncert = "%s"\nkey = "%s"\n' "$pki/ca.pem" "$pki/$1.pem" "$pki/$1.key"; }

echo "==> starting etcd (client certificates required)"
etcd_port=$(free_port)
etcd_peer=$(free_port)
ETCD_UNSUPPORTED_ARCH=$(uname -m) etcd --name quickstart --data-dir "$work/etcd" \
    --listen-client-urls "https://127.0.0.1:$etcd_port" --advertise-client-urls "https://127.0.0.1:$etcd_port" \
    --cert-file "$pki/etcd.pem" --key-file "$pki/etcd.key" --trusted-ca-file "$pki/ca.pem" --client-cert-auth \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "quickstart=http://127.0.0.1:$etcd_peer" >"$work/etcd.log" 2>&1 &
pids+=($!)
wait_for_port "$etcd_port"
echo "==> etcd for the coordinators only (runway etcd init-auth)"
"$bin/runway" etcd init-auth --endpoints "https://127.0.0.1:$etcd_port" --ca "$pki/ca.pem" \
    --cert "$pki/etcd-root.pem" --key "$pki/etcd-root.key" --prefix /runway \
    --coordinator coord-1 --coordinator coord-2

echo "==> starting a throwaway PostgreSQL 15"
pg_port=$(free_port)
pgbin=/usr/lib/postgresql/15/bin
mkdir -p "$work/pg"
chown postgres:postgres "$work/pg"
if [ "$(id -u)" -eq 0 ]; then
    as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups)
else
    as_postgres=(sudo -u postgres)
fi
"${as_postgres[@]}" "$pgbin/initdb" --no-sync -A trust -U postgres -D "$work/pg/data" >/dev/null
"${as_postgres[@]}" "$pgbin/postgres" -D "$work/pg/data" -p "$pg_port" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$work/pg" -c fsync=off >"$work/postgres.log" 2>&1 &
pg_pid=$!
wait_for_port "$pg_port"
sleep 0.5
"$pgbin/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -c 'CREATE DATABASE app' >/dev/null
database_url="postgres://postgres@127.0.0.1:$pg_port/app"

echo "==> starting two coordinators"
coords=()
for i in 1 2; do
    port=$(free_port)
    cat >"$work/coord-$i.toml" <<TOML
name = "coord-$i"
listen = "127.0.0.1:$port"
etcd_endpoints = ["https://127.0.0.1:$etcd_port"]
lease_ttl = "3s"
[environments.staging]
roles = { quickstart = ["view", "deploy", "restore", "approve"] }
[environments.production]
roles = { quickstart = ["view"] }
$(tls_toml "coordinator-coord-$i")
TOML
    "$bin/runway-coordinator" --config "$work/coord-$i.toml" >"$work/coord-$i.log" 2>&1 &
    pids+=($!)
    coords+=("https://127.0.0.1:$port")
    wait_for_port "$port"
done
coord_list=$(IFS=,; echo "${coords[*]}")
toml_coords="[\"${coords[0]}\", \"${coords[1]}\"]"

echo "==> starting the DB agent"
cat >"$work/db-1.toml" <<TOML
name = "db-1"
environment = "staging"
coordinators = $toml_coords
roles = ["db"]
state_dir = "$work/db-1-state"
[database]
url = "$database_url"
[backup]
dir = "$work/backups"
pg_bin_dir = "$pgbin"
$(tls_toml agent-staging-db-1)
TOML
"$bin/runway-agent" --config "$work/db-1.toml" >"$work/db-1.log" 2>&1 &
pids+=($!)

echo "==> starting two sample apps and their agents"
hook="$repo/deploy/sample-app/hook.sh"
for i in 1 2; do
    dir="$work/app-$i"
    mkdir -p "$dir"
    app_port=$(free_port)
    echo "$app_port" >"$dir/port"
    echo "$bin/runway-sample-app" >"$dir/bin"
    RUNWAY_APP_VERSION=v1 "$hook" restart "$dir" >/dev/null
    app_dirs+=("$dir")
    cat >"$work/app-$i.toml" <<TOML
name = "app-$i"
environment = "staging"
coordinators = $toml_coords
roles = ["app"]
state_dir = "$work/app-$i-state"
[app]
maintenance_on = ["$hook", "maintenance-on", "$dir"]
maintenance_off = ["$hook", "maintenance-off", "$dir"]
restart = ["$hook", "restart", "$dir"]
health_url = "http://127.0.0.1:$app_port/health"
version = "v1"
$(tls_toml "agent-staging-app-$i")
TOML
    "$bin/runway-agent" --config "$work/app-$i.toml" >"$work/app-$i.log" 2>&1 &
    pids+=($!)
done
save_state

export RUNWAY_COORDINATOR="$coord_list"
export RUNWAY_CA="$pki/ca.pem" RUNWAY_CERT="$pki/operator-quickstart.pem" RUNWAY_KEY="$pki/operator-quickstart.key"
echo "==> waiting for the agents to register"
for _ in $(seq 1 100); do
    [ "$("$bin/runway" agents --output json 2>/dev/null | wc -l)" -ge 3 ] && break
    sleep 0.2
done
"$bin/runway" agents

echo
echo "==> the sample app's existing schema: the first two migrations, rolled out as v1"
baseline="$work/migrations-v1"
mkdir -p "$baseline"
cp -r deploy/quickstart/migrations/migration_lock.toml deploy/quickstart/migrations/20240101000000_init \
    deploy/quickstart/migrations/20240115093000_posts "$baseline/"
if ! "$bin/runway" rollout start --env staging --migrations "$baseline" --app-version v1 --watch \
    >"$work/rollout-v1.log" 2>&1; then
    echo "the first rollout failed; its output is in $work/rollout-v1.log"
    exit 1
fi
echo "rolled out: User and Post exist, the apps run v1"

echo
echo "==> what the rollout would do (runway rollout plan: changes nothing; each down is proven)"
set +e
"$bin/runway" rollout plan --env staging --migrations deploy/quickstart/migrations
set -e

echo
echo "==> rolling out deploy/quickstart/migrations to staging (app version v2)"
set +e
"$bin/runway" rollout start --env staging --migrations deploy/quickstart/migrations --app-version v2 --watch
code=$?
set -e
echo
if [ $code -eq 0 ]; then
    echo "The sample rollout succeeded. Things to look at:"
else
    echo "The sample rollout did not succeed (exit code $code). Logs are in $work/*.log"
fi
cat <<TEXT
  export RUNWAY_COORDINATOR=$coord_list
  export RUNWAY_CA=$pki/ca.pem RUNWAY_CERT=$pki/operator-quickstart.pem RUNWAY_KEY=$pki/operator-quickstart.key
  $bin/runway status                             # on call: leader, coordinators, agents, rollouts
  $bin/runway rollout list                       # the rollout and its state
  $bin/runway rollout show <id>                  # its steps, plan and backup
  $bin/runway rollout rollback <id>              # which way back, and what each way would lose
  $bin/runway rollout rollback <id> --yes --watch   # by its proven downs: rows written since stay; v1 back
  $bin/runway agents                             # the connected agents
  psql -h 127.0.0.1 -p $pg_port -U postgres app -c 'select migration_name, finished_at from _prisma_migrations'
  ls $work/backups/*                             # the backup: dump + manifest.json
  curl http://127.0.0.1:$(cat "$work/app-1/port")/health   # app-1 now runs v2
  # refused (permission denied): etcd serves the coordinators only, not your certificate
  ETCDCTL_API=3 etcdctl --endpoints https://127.0.0.1:$etcd_port --cacert $pki/ca.pem --cert $pki/operator-quickstart.pem --key $pki/operator-quickstart.key get --prefix /runway/
  tail $work/*.log                               # every process's log
  deploy/quickstart.sh stop                      # stop everything
TEXT
exit $code
