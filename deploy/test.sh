#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end tests against real etcd,
# real PostgreSQL and the real runway binaries. Installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
# The end-to-end tests run these binaries; a workspace build includes
# runway-tests and with it the test-only `failpoints` feature.
cargo build --workspace --bins
cargo test --workspace "$@"
