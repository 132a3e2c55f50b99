#!/bin/sh
# runway hooks for a Node app that pm2 runs from a git checkout: the
# runbook's `export MAINTENANCE_MODE=true; pm2 restart api`, `git checkout`,
# `pnpm install --frozen-lockfile`, `pnpm build`, `pm2 restart api`, as the
# agent's [app] hooks (example: agent-app.toml beside this file).
#
#   hook.sh maintenance-on    the app in maintenance mode (idempotent)
#   hook.sh maintenance-off   the app out of it (idempotent)
#   hook.sh deploy            check out $RUNWAY_APP_VERSION, install, build,
#                             `pm2 reload`, wait until healthy
#   hook.sh version           print the version checked out (version_command)
#
# Configured by its environment (the agent's `[app] hook_env`):
#
#   HOOK_PM2_APP           the app's name in pm2 (required)
#   HOOK_APP_DIR           the app's git checkout, the one pm2 runs (required
#                          for deploy and version)
#   PM2_HOME               the pm2 daemon to talk to (pm2's default:
#                          ~/.pm2 of the user running the hook)
#   HOOK_HEALTH_URL        polled after every restart until it answers 2xx
#                          (optional: without it the hook only checks that
#                          pm2 reports the app online)
#   HOOK_HEALTH_TIMEOUT    seconds that may take (default 60)
#   HOOK_MAINTENANCE_VAR   the variable the app reads, set to `true` or
#                          `false` with `pm2 restart --update-env` (default
#                          MAINTENANCE_MODE)
#   HOOK_MAINTENANCE_FILE  if set, maintenance mode is this file existing
#                          instead: created and removed, no restart (for an
#                          app that checks the file on each request)
#   HOOK_GIT_REMOTE        the remote to fetch tags from (default origin; a
#                          checkout without it uses the tags it has)
#   HOOK_PM2               the pm2 command (default pm2; split on spaces,
#                          e.g. `/opt/pm2/bin/pm2`)
#
# RUNWAY_APP_VERSION (set by the agent for the restart hook) is a tag or
# commit of the checkout; empty means "keep the current one": the hook then
# reloads the checkout as it is.
#
# `--update-env` merges the hook's environment into the app's: pm2 keeps the
# app's other variables (PORT, secrets given at `pm2 start`), and the app
# also sees PATH, HOME and the HOOK_* / RUNWAY_* variables of the hook.
#
# Every failure exits nonzero with a line saying what failed; the agent puts
# the last lines of output into the rollout's error.
set -eu

say() { echo "pm2 hook: $*"; }
die() {
    echo "pm2 hook: error: $*" >&2
    exit 1
}

action=${1:-}
app=${HOOK_PM2_APP:-}
maintenance_var=${HOOK_MAINTENANCE_VAR:-MAINTENANCE_MODE}
health_timeout=${HOOK_HEALTH_TIMEOUT:-60}
remote=${HOOK_GIT_REMOTE:-origin}
pm2_cmd=${HOOK_PM2:-pm2}

case "$health_timeout" in
'' | *[!0-9]*) die "HOOK_HEALTH_TIMEOUT must be a number of seconds, not '$health_timeout'" ;;
esac
case "$maintenance_var" in
'' | [0-9]* | *[!A-Za-z0-9_]*) die "HOOK_MAINTENANCE_VAR must be a variable name, not '$maintenance_var'" ;;
esac

need_app() {
    [ -n "$app" ] || die "HOOK_PM2_APP is not set (the app's name in pm2) in the agent's [app] hook_env"
    need_daemon
}

need_dir() {
    [ -n "${HOOK_APP_DIR:-}" ] || die "HOOK_APP_DIR is not set (the app's git checkout) in the agent's [app] hook_env"
    [ -d "$HOOK_APP_DIR/.git" ] || die "HOOK_APP_DIR=$HOOK_APP_DIR is not a git checkout"
}

# pm2 with colours off; $pm2_cmd is split on spaces on purpose. Prints
# pm2's own `[PM2]` lines (not its process table), everything on failure.
pm2_run() {
    # shellcheck disable=SC2086
    if out=$($pm2_cmd "$@" --no-color 2>&1); then
        printf '%s\n' "$out" | grep '^\[PM2\]' || true
    else
        printf '%s\n' "$out" >&2
        return 1
    fi
}

# The pm2 daemon must already run, as a service of its own (`pm2 startup`):
# a pm2 command with none starts one, which would run the app inside the
# agent's service, sandbox and lifetime.
need_daemon() {
    pm2_home=${PM2_HOME:-${HOME:-}/.pm2}
    [ -S "$pm2_home/rpc.sock" ] ||
        die "no pm2 daemon at $pm2_home (no rpc.sock): start pm2 as its own service (pm2 startup) and set PM2_HOME in hook_env"
}

# `pm2 jlist` read with node (pm2 needs node, so it is here): prints
# `<status> <value of $maintenance_var>` of each process named $app.
pm2_state() {
    # shellcheck disable=SC2086,SC2016
    $pm2_cmd jlist --no-color | node -e '
        let text = "";
        process.stdin.on("data", (chunk) => (text += chunk));
        process.stdin.on("end", () => {
            // pm2 may print notices before the JSON array.
            const list = JSON.parse(text.slice(text.indexOf("[")));
            for (const p of list) {
                if (p.name !== process.argv[1]) continue;
                const env = (p.pm2_env && p.pm2_env.env) || {};
                console.log(`${p.pm2_env.status} ${env[process.argv[2]] ?? ""}`);
            }
        });' "$app" "$maintenance_var"
}

# 0 when $1 answers 2xx within 2 s.
http_ok() {
    node -e '
        const url = process.argv[1];
        const lib = require(url.startsWith("https:") ? "https" : "http");
        const req = lib.get(url, { timeout: 2000 }, (res) => {
            res.resume();
            process.exit(res.statusCode >= 200 && res.statusCode < 300 ? 0 : 1);
        });
        req.on("timeout", () => req.destroy(new Error("timeout")));
        req.on("error", () => process.exit(1));' "$1"
}

# Waits until pm2 reports every process of the app online and, with
# HOOK_HEALTH_URL, until it answers 2xx; fails after HOOK_HEALTH_TIMEOUT.
wait_healthy() {
    deadline=$(($(date +%s) + health_timeout))
    while :; do
        state=$(pm2_state) || die "pm2 jlist failed"
        [ -n "$state" ] || die "pm2 (PM2_HOME=${PM2_HOME:-~/.pm2}) knows no app named $app"
        if ! echo "$state" | grep -qv '^online '; then
            if [ -z "${HOOK_HEALTH_URL:-}" ]; then
                say "$app is online"
                return 0
            fi
            if http_ok "$HOOK_HEALTH_URL"; then
                say "$app is healthy at $HOOK_HEALTH_URL"
                return 0
            fi
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            die "$app not healthy within ${health_timeout}s (pm2 says: $(echo "$state" | cut -d' ' -f1 | tr '\n' ' ')); see \`pm2 logs $app\`"
        fi
        sleep 0.5
    done
}

maintenance() {
    want=$1
    need_app
    if [ -n "${HOOK_MAINTENANCE_FILE:-}" ]; then
        if [ "$want" = true ]; then
            touch "$HOOK_MAINTENANCE_FILE" || die "cannot create $HOOK_MAINTENANCE_FILE"
        else
            rm -f "$HOOK_MAINTENANCE_FILE" || die "cannot remove $HOOK_MAINTENANCE_FILE"
        fi
        say "maintenance mode $([ "$want" = true ] && echo on || echo off) ($HOOK_MAINTENANCE_FILE)"
        return 0
    fi
    state=$(pm2_state) || die "pm2 jlist failed"
    [ -n "$state" ] || die "pm2 (PM2_HOME=${PM2_HOME:-~/.pm2}) knows no app named $app"
    # Already as wanted everywhere: no restart (a retried hook does not
    # bounce the app again).
    if ! echo "$state" | grep -qv "^online $want\$"; then
        say "$maintenance_var is already $want for $app"
        return 0
    fi
    say "restarting $app with $maintenance_var=$want"
    export "$maintenance_var=$want"
    pm2_run restart "$app" --update-env || die "pm2 restart $app --update-env failed"
    wait_healthy
}

# Checks out $1 in HOOK_APP_DIR (already the working directory).
checkout() {
    version=$1
    case "$version" in
    -*) die "refusing version '$version': it starts with '-'" ;;
    esac
    if git remote | grep -qx "$remote"; then
        say "fetching tags from $remote"
        git fetch --quiet --tags --force "$remote" || die "git fetch --tags $remote failed in $HOOK_APP_DIR"
    else
        say "no git remote '$remote' in $HOOK_APP_DIR: using the tags it has"
    fi
    git rev-parse --quiet --verify "$version^{commit}" >/dev/null ||
        die "version '$version' is not a tag or commit of $HOOK_APP_DIR"
    git diff --quiet HEAD -- ||
        die "$HOOK_APP_DIR has uncommitted changes to tracked files; refusing to check out over them"
    git checkout --quiet --detach "$version" || die "git checkout $version failed in $HOOK_APP_DIR"
    say "checked out $version ($(git rev-parse --short HEAD))"
}

# 0 when JavaScript expression $1 about package.json (`p`) is true.
package_json() {
    [ -f package.json ] || return 1
    node -e "const p = require('./package.json'); process.exit(($1) ? 0 : 1)"
}

# The frozen install the lockfile asks for, then the build script if any.
install_and_build() {
    runner=npm
    if [ -f pnpm-lock.yaml ]; then
        command -v pnpm >/dev/null || die "pnpm-lock.yaml found but pnpm is not on PATH ($PATH)"
        say "pnpm install --frozen-lockfile"
        pnpm install --frozen-lockfile || die "pnpm install --frozen-lockfile failed"
        runner=pnpm
    elif [ -f package-lock.json ] || [ -f npm-shrinkwrap.json ]; then
        say "npm ci"
        npm ci --no-audit --no-fund || die "npm ci failed"
    elif package_json 'Object.keys(p.dependencies || {}).length > 0'; then
        die "package.json has dependencies but there is no pnpm-lock.yaml or package-lock.json to install them frozen"
    else
        say "no dependencies to install"
    fi
    if package_json 'p.scripts && p.scripts.build'; then
        say "$runner run build"
        "$runner" run build || die "$runner run build failed"
    else
        say "no build script"
    fi
}

deploy() {
    need_app
    need_dir
    cd "$HOOK_APP_DIR" || die "cannot enter $HOOK_APP_DIR"
    version=${RUNWAY_APP_VERSION:-}
    if [ -n "$version" ]; then
        checkout "$version"
        install_and_build
    else
        say "no RUNWAY_APP_VERSION: reloading the current checkout"
    fi
    say "pm2 reload $app --update-env"
    pm2_run reload "$app" --update-env || die "pm2 reload $app --update-env failed"
    wait_healthy
}

case "$action" in
maintenance-on) maintenance true ;;
maintenance-off) maintenance false ;;
deploy | restart) deploy ;;
version)
    need_dir
    git -C "$HOOK_APP_DIR" describe --tags --exact-match HEAD 2>/dev/null ||
        git -C "$HOOK_APP_DIR" rev-parse HEAD ||
        die "cannot tell the version checked out in $HOOK_APP_DIR"
    ;;
*)
    echo "usage: hook.sh maintenance-on|maintenance-off|deploy|version (got '$action')" >&2
    exit 2
    ;;
esac
