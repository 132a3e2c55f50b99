#!/bin/sh
# runway hooks for an app run as a systemd unit, as the agent's [app] hooks
# (config lines: deploy/hooks/README.md).
#
#   hook.sh maintenance-on    MAINTENANCE_MODE=true in the unit's env file,
#                             `systemctl restart UNIT`, wait until healthy
#   hook.sh maintenance-off   the same with false (both idempotent)
#   hook.sh deploy            install $RUNWAY_APP_VERSION with HOOK_INSTALL,
#                             `systemctl restart UNIT`, wait until healthy
#   hook.sh version           print the version the last deploy installed
#
# Configured by its environment (the agent's `[app] hook_env`):
#
#   HOOK_UNIT              the app's unit, e.g. myapp.service (required)
#   HOOK_ENV_FILE          a file the unit reads with `EnvironmentFile=`;
#                          the hook keeps one line `MAINTENANCE_MODE=…` in it
#                          and leaves the others (required for maintenance)
#   HOOK_MAINTENANCE_VAR   that variable's name (default MAINTENANCE_MODE)
#   HOOK_INSTALL           the command that puts a version in place (split
#                          on spaces; gets the version as its last argument
#                          and in RUNWAY_APP_VERSION), e.g.
#                          `/usr/local/bin/myapp-install` running
#                          `apt-get install myapp=VERSION` or unpacking a
#                          release; required for a nonempty version
#   HOOK_VERSION_FILE      where deploy records the version it installed,
#                          read by `version` (optional)
#   HOOK_HEALTH_URL        polled after every restart until it answers 2xx
#                          (optional: without it the hook only checks that
#                          the unit is active)
#   HOOK_HEALTH_TIMEOUT    seconds that may take (default 60)
#   HOOK_SYSTEMCTL         the systemctl command (default systemctl)
#
# The agent runs as `runway` with NoNewPrivileges=yes: no sudo. It may
# restart the unit through polkit (deploy/polkit/50-runway.rules); the env
# file, the version file and whatever HOOK_INSTALL writes must be writable
# by it (ReadWritePaths= in a drop-in for runway-agent.service).
#
# Not run by runway's tests (they have no systemd as PID 1): they check it with `sh -n`
# and shellcheck only.
set -eu

say() { echo "systemd hook: $*"; }
die() {
    echo "systemd hook: error: $*" >&2
    exit 1
}

action=${1:-}
unit=${HOOK_UNIT:-}
maintenance_var=${HOOK_MAINTENANCE_VAR:-MAINTENANCE_MODE}
health_timeout=${HOOK_HEALTH_TIMEOUT:-60}
systemctl_cmd=${HOOK_SYSTEMCTL:-systemctl}

case "$health_timeout" in
'' | *[!0-9]*) die "HOOK_HEALTH_TIMEOUT must be a number of seconds, not '$health_timeout'" ;;
esac
case "$maintenance_var" in
'' | [0-9]* | *[!A-Za-z0-9_]*) die "HOOK_MAINTENANCE_VAR must be a variable name, not '$maintenance_var'" ;;
esac

need_unit() {
    [ -n "$unit" ] || die "HOOK_UNIT is not set (the app's unit) in the agent's [app] hook_env"
}

# systemctl, split on spaces on purpose.
sctl() {
    # shellcheck disable=SC2086
    $systemctl_cmd "$@"
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

# Waits until the unit is active and, with HOOK_HEALTH_URL, answers 2xx.
wait_healthy() {
    deadline=$(($(date +%s) + health_timeout))
    while :; do
        if sctl is-active --quiet "$unit"; then
            if [ -z "${HOOK_HEALTH_URL:-}" ]; then
                say "$unit is active"
                return 0
            fi
            if http_ok "$HOOK_HEALTH_URL"; then
                say "$unit is healthy at $HOOK_HEALTH_URL"
                return 0
            fi
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            die "$unit not healthy within ${health_timeout}s (systemctl says: $(sctl is-active "$unit" || true)); see \`journalctl -u $unit\`"
        fi
        sleep 1
    done
}

restart() {
    say "systemctl restart $unit"
    sctl restart "$unit" || die "systemctl restart $unit failed (allowed by polkit? see deploy/polkit/50-runway.rules)"
    wait_healthy
}

# Sets KEY=VALUE in env file $1, keeping its other lines; atomic (a
# temporary file beside it, then mv).
set_env_line() {
    file=$1
    key=$2
    value=$3
    tmp="$file.runway-tmp.$$"
    {
        if [ -f "$file" ]; then grep -v "^$key=" "$file" || true; fi
        echo "$key=$value"
    } >"$tmp" || die "cannot write $tmp"
    mv -f "$tmp" "$file" || die "cannot replace $file"
}

maintenance() {
    want=$1
    need_unit
    file=${HOOK_ENV_FILE:-}
    [ -n "$file" ] || die "HOOK_ENV_FILE is not set (the EnvironmentFile= of $unit that holds $maintenance_var)"
    if [ -f "$file" ] && grep -qx "$maintenance_var=$want" "$file" && sctl is-active --quiet "$unit"; then
        say "$maintenance_var is already $want for $unit"
        return 0
    fi
    set_env_line "$file" "$maintenance_var" "$want"
    say "$maintenance_var=$want in $file"
    restart
}

deploy() {
    need_unit
    version=${RUNWAY_APP_VERSION:-}
    if [ -n "$version" ]; then
        case "$version" in
        -*) die "refusing version '$version': it starts with '-'" ;;
        esac
        [ -n "${HOOK_INSTALL:-}" ] || die "HOOK_INSTALL is not set (the command that installs a version)"
        say "installing $version: $HOOK_INSTALL $version"
        # shellcheck disable=SC2086
        $HOOK_INSTALL "$version" || die "installing $version failed ($HOOK_INSTALL)"
    else
        say "no RUNWAY_APP_VERSION: restarting the version installed"
    fi
    restart
    if [ -n "$version" ] && [ -n "${HOOK_VERSION_FILE:-}" ]; then
        echo "$version" >"$HOOK_VERSION_FILE" || die "cannot write $HOOK_VERSION_FILE"
    fi
}

case "$action" in
maintenance-on) maintenance true ;;
maintenance-off) maintenance false ;;
deploy | restart) deploy ;;
version)
    [ -n "${HOOK_VERSION_FILE:-}" ] || die "HOOK_VERSION_FILE is not set: no version recorded"
    [ -s "$HOOK_VERSION_FILE" ] || die "$HOOK_VERSION_FILE is empty or missing: no deploy recorded yet"
    tail -n 1 "$HOOK_VERSION_FILE"
    ;;
*)
    echo "usage: hook.sh maintenance-on|maintenance-off|deploy|version (got '$action')" >&2
    exit 2
    ;;
esac
