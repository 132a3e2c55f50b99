#!/usr/bin/env bash
# Builds the three Debian packages — runway (the CLI), runway-agent and
# runway-coordinator — into target/debian/ (or $CARGO_TARGET_DIR/debian/).
#
#   1. one release build of the three binaries (alone: without the test
#      crate, so without its test-only failpoints);
#   2. the CLI's completions and man pages from that binary, into
#      target/debian-assets/ (the `runway` package's assets point there);
#   3. `cargo deb --no-build` per package, from each crate's
#      [package.metadata.deb] (cargo-deb from crates.io; deploy/install-deps.sh
#      installs it).
#
# Prints the path of each .deb, one per line, last. Then: `lintian
# target/debian/*.deb`, and `apt install ./target/debian/runway-agent_*.deb`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

command -v cargo-deb >/dev/null 2>&1 || {
    echo "cargo-deb is missing: deploy/install-deps.sh installs it (cargo install cargo-deb --locked)" >&2
    exit 1
}

cargo build --release --locked -p runway-cli -p runway-agent -p runway-coordinator >&2

target="${CARGO_TARGET_DIR:-$root/target}"
assets="$root/target/debian-assets"
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"
runway="$target/release/runway"
"$runway" completions bash >"$assets/completions/runway"
"$runway" completions zsh >"$assets/completions/_runway"
"$runway" completions fish >"$assets/completions/runway.fish"
"$runway" man-pages --dir "$assets/man" >&2

# cargo-deb warns that the ../target/debian-assets/ paths "will not be
# built": right, step 2 made them.
debs=()
for package in runway-cli runway-agent runway-coordinator; do
    debs+=("$(cargo deb --no-build --locked -p "$package" "$@")")
done
printf '%s\n' "${debs[@]}"
