#!/bin/sh
# Hooks for runway's sample app, used by the quick start and the end-to-end
# tests. A real deployment points the agent's [app] hooks at its own scripts
# (systemctl, a load balancer API, a deploy tool); these show the contract:
#
#   hook.sh maintenance-on  DIR   turn maintenance mode on (idempotent)
#   hook.sh maintenance-off DIR   turn it off (idempotent)
#   hook.sh restart         DIR   deploy $RUNWAY_APP_VERSION and restart
#   hook.sh version         DIR   print the version running now (version_command)
#
# DIR holds the app's state: `bin` (path of runway-sample-app), `port`,
# optionally `addr` (default 127.0.0.1), `pid` (the running app),
# `maintenance` (present while in maintenance).
set -eu
action=$1
dir=$2

case "$action" in
maintenance-on)
    touch "$dir/maintenance"
    echo "maintenance mode on"
    ;;
maintenance-off)
    rm -f "$dir/maintenance"
    echo "maintenance mode off"
    ;;
restart)
    if [ -f "$dir/pid" ]; then
        old=$(cat "$dir/pid")
        if kill "$old" 2>/dev/null; then
            i=0
            while kill -0 "$old" 2>/dev/null && [ $i -lt 100 ]; do
                sleep 0.1
                i=$((i + 1))
            done
            echo "stopped app pid $old"
        fi
    fi
    version=${RUNWAY_APP_VERSION:-unknown}
    addr=127.0.0.1
    [ -f "$dir/addr" ] && addr=$(cat "$dir/addr")
    setsid "$(cat "$dir/bin")" --addr "$addr" --port "$(cat "$dir/port")" --dir "$dir" --version "$version" \
        >>"$dir/app.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    echo "$version" >"$dir/version"
    echo "started app version $version as pid $!"
    ;;
version)
    cat "$dir/version"
    ;;
*)
    echo "unknown action $action (maintenance-on, maintenance-off, restart, version)" >&2
    exit 2
    ;;
esac
