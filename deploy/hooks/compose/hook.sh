#!/bin/sh
# runway hooks for an app run with docker compose, as the agent's [app]
# hooks (config lines: deploy/hooks/README.md).
#
#   hook.sh maintenance-on    MAINTENANCE_MODE=true in the project's env
#                             file, `docker compose up -d` (recreates what
#                             changed), wait until healthy
#   hook.sh maintenance-off   the same with false (both idempotent)
#   hook.sh deploy            APP_VERSION=$RUNWAY_APP_VERSION in the env file,
#                             `docker compose pull`, `up -d`, wait until healthy
#   hook.sh version           print APP_VERSION from the env file
#
# The compose file takes both from the env file by interpolation:
#
#   services:
#     api:
#       image: registry.example.com/api:${APP_VERSION:?}
#       environment:
#         MAINTENANCE_MODE: ${MAINTENANCE_MODE:-false}
#
# Configured by its environment (the agent's `[app] hook_env`):
#
#   HOOK_COMPOSE_DIR       the compose project's directory (required)
#   HOOK_COMPOSE_FILE      its compose file (default: compose's own lookup,
#                          compose.yaml in HOOK_COMPOSE_DIR)
#   HOOK_SERVICES          the services to pull and recreate, space-separated
#                          (default: all of them)
#   HOOK_ENV_FILE          the env file holding both variables (default
#                          .env in HOOK_COMPOSE_DIR, which compose reads by
#                          itself; another file is passed with --env-file);
#                          the hook rewrites only its two lines
#   HOOK_VERSION_VAR       the image tag's variable (default APP_VERSION)
#   HOOK_MAINTENANCE_VAR   the maintenance variable (default MAINTENANCE_MODE)
#   HOOK_HEALTH_URL        polled after every `up` until it answers 2xx
#                          (optional: without it the hook only checks that
#                          compose reports the services running)
#   HOOK_HEALTH_TIMEOUT    seconds that may take (default 60)
#   HOOK_DOCKER            the docker command (default docker)
#
# The agent's user must be allowed to use the docker socket (the `docker`
# group: that is root-equivalent on the host; a rootless docker of the same
# user is the safer choice).
#
# Not run by runway's tests (no docker on the test machines): they check it with `sh -n`
# and shellcheck only.
set -eu

say() { echo "compose hook: $*"; }
die() {
    echo "compose hook: error: $*" >&2
    exit 1
}

action=${1:-}
dir=${HOOK_COMPOSE_DIR:-}
version_var=${HOOK_VERSION_VAR:-APP_VERSION}
maintenance_var=${HOOK_MAINTENANCE_VAR:-MAINTENANCE_MODE}
health_timeout=${HOOK_HEALTH_TIMEOUT:-60}
docker_cmd=${HOOK_DOCKER:-docker}
services=${HOOK_SERVICES:-}

case "$health_timeout" in
'' | *[!0-9]*) die "HOOK_HEALTH_TIMEOUT must be a number of seconds, not '$health_timeout'" ;;
esac
for var in "$version_var" "$maintenance_var"; do
    case "$var" in
    '' | [0-9]* | *[!A-Za-z0-9_]*) die "'$var' is not a variable name (HOOK_VERSION_VAR, HOOK_MAINTENANCE_VAR)" ;;
    esac
done

[ -n "$dir" ] || die "HOOK_COMPOSE_DIR is not set (the compose project's directory) in the agent's [app] hook_env"
[ -d "$dir" ] || die "HOOK_COMPOSE_DIR=$dir is not a directory"
env_file=${HOOK_ENV_FILE:-$dir/.env}

# docker compose for the project; $docker_cmd is split on spaces on purpose.
compose() {
    # shellcheck disable=SC2086
    if [ -n "${HOOK_COMPOSE_FILE:-}" ] && [ -n "${HOOK_ENV_FILE:-}" ]; then
        $docker_cmd compose --project-directory "$dir" -f "$HOOK_COMPOSE_FILE" --env-file "$env_file" "$@"
    elif [ -n "${HOOK_COMPOSE_FILE:-}" ]; then
        $docker_cmd compose --project-directory "$dir" -f "$HOOK_COMPOSE_FILE" "$@"
    elif [ -n "${HOOK_ENV_FILE:-}" ]; then
        $docker_cmd compose --project-directory "$dir" --env-file "$env_file" "$@"
    else
        $docker_cmd compose --project-directory "$dir" "$@"
    fi
}

# 0 when $1 answers 2xx within 2 s.
http_ok() {
    if command -v curl >/dev/null; then
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
    elif command -v wget >/dev/null; then
        wget -q -O /dev/null -T 2 "$1"
    else
        die "HOOK_HEALTH_URL needs curl or wget on PATH ($PATH)"
    fi
}

# Waits until no service is anything but running and, with
# HOOK_HEALTH_URL, until it answers 2xx.
wait_healthy() {
    deadline=$(($(date +%s) + health_timeout))
    while :; do
        # shellcheck disable=SC2086
        states=$(compose ps --all --format '{{.State}}' $services) || die "docker compose ps failed"
        if [ -n "$states" ] && ! echo "$states" | grep -qvx running; then
            if [ -z "${HOOK_HEALTH_URL:-}" ]; then
                say "services running"
                return 0
            fi
            if http_ok "$HOOK_HEALTH_URL"; then
                say "healthy at $HOOK_HEALTH_URL"
                return 0
            fi
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            die "not healthy within ${health_timeout}s (compose says: $(echo "$states" | tr '\n' ' ')); see \`docker compose logs\` in $dir"
        fi
        sleep 1
    done
}

up() {
    say "docker compose up -d ${services:-(all services)}"
    # shellcheck disable=SC2086
    compose up -d $services || die "docker compose up -d failed in $dir"
    wait_healthy
}

# The value of $1 in the env file (empty when absent).
env_value() {
    [ -f "$env_file" ] || return 0
    sed -n "s/^$1=//p" "$env_file" | tail -n 1
}

# Sets KEY=VALUE in the env file, keeping its other lines; atomic.
set_env_line() {
    key=$1
    value=$2
    tmp="$env_file.runway-tmp.$$"
    {
        if [ -f "$env_file" ]; then grep -v "^$key=" "$env_file" || true; fi
        echo "$key=$value"
    } >"$tmp" || die "cannot write $tmp"
    mv -f "$tmp" "$env_file" || die "cannot replace $env_file"
}

maintenance() {
    want=$1
    if [ "$(env_value "$maintenance_var")" = "$want" ]; then
        say "$maintenance_var is already $want in $env_file"
    else
        set_env_line "$maintenance_var" "$want"
        say "$maintenance_var=$want in $env_file"
    fi
    # Recreates only what changed: nothing when it already was as wanted.
    up
}

deploy() {
    version=${RUNWAY_APP_VERSION:-}
    if [ -n "$version" ]; then
        # A tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} (docker's own rule).
        case "$version" in
        [!A-Za-z0-9_]* | *[!A-Za-z0-9_.-]*) die "version '$version' is not a valid image tag" ;;
        esac
        # Pulled before the env file changes, so a tag that does not exist
        # leaves it as it was (a variable of the shell wins over the file).
        say "docker compose pull ${services:-(all services)} with $version_var=$version"
        (
            export "$version_var=$version"
            # shellcheck disable=SC2086
            compose pull $services
        ) || die "docker compose pull failed for $version_var=$version"
        set_env_line "$version_var" "$version"
        say "$version_var=$version in $env_file"
    else
        say "no RUNWAY_APP_VERSION: recreating what changed with $version_var=$(env_value "$version_var")"
    fi
    up
}

case "$action" in
maintenance-on) maintenance true ;;
maintenance-off) maintenance false ;;
deploy | restart) deploy ;;
version)
    current=$(env_value "$version_var")
    [ -n "$current" ] || die "$version_var is not set in $env_file"
    echo "$current"
    ;;
*)
    echo "usage: hook.sh maintenance-on|maintenance-off|deploy|version (got '$action')" >&2
    exit 2
    ;;
esac
