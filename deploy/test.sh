#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end tests against real etcd,
# real PostgreSQL and the real runway binaries. Installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
cargo build --workspace --bins
cargo test --workspace "$@"
