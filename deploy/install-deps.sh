#!/usr/bin/env bash
# Installs what runway's build, tests and quick start need and the machine
# lacks: etcd, protoc, PostgreSQL 15 server binaries, iptables/nftables,
# systemd-analyze and node (the systemd unit and polkit rule tests),
# promtool (Debian's prometheus package: the alert rules test), the moto
# S3 server for the backup tests, npm, pm2 and shellcheck (the hook scripts
# in deploy/hooks/ and their pm2 end-to-end test), and for the Debian
# packages (deploy/debian/build.sh, tests/tests/packages.rs) cargo-deb,
# lintian and man, and mdbook (the book in docs/, tests/tests/book.rs).
# Safe to run again.
set -euo pipefail

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || missing+=(etcd-server etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || missing+=(libclang-dev)
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15 postgresql-client-15)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
command -v man >/dev/null 2>&1 || missing+=(man-db)

if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v moto_server >/dev/null 2>&1; then
    echo "==> installing moto[server] (S3 API server for the backup tests)"
    python3 -m pip install --quiet 'moto[server]'
fi

# pm2 from the npm registry, into target/tools/npm where
# tests/tests/pm2_hooks.rs looks for it (about 6 s here, 77 packages).
pm2_prefix="$(cd "$(dirname "$0")/.." && pwd)/target/tools/npm"
if ! command -v pm2 >/dev/null 2>&1 && [ ! -x "$pm2_prefix/bin/pm2" ]; then
    echo "==> installing pm2 into $pm2_prefix (npm registry)"
    npm install --global --prefix "$pm2_prefix" --no-audit --no-fund --loglevel=error 'pm2@7'
fi
if ! command -v cargo-deb >/dev/null 2>&1; then
    # From crates.io (Debian has none); about 1.5 min on 2 cores.
    echo "==> installing cargo-deb (builds the Debian packages)"
    cargo install --quiet --locked cargo-deb
fi
if ! command -v mdbook >/dev/null 2>&1; then
    # From crates.io (Debian has none). Only what `mdbook build` needs: no
    # serve or watch (no web server, no file watcher): 2.7 CPU-minutes, 8.7 min
    # on 2 cores shared with a workspace build (2026-12-07).
    echo "==> installing mdbook (builds the book in docs/)"
    cargo install --quiet --locked mdbook@0.5.4 --no-default-features --features search
fi
