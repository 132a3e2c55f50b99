//! The configuration reference in the book is what `runway config
//! reference` prints from the config types: a key added, renamed or
//! documented differently changes the output, and this test fails until
//! the committed file is regenerated.

use std::process::Command;

use runway_tests::process::{bin, workspace_root};

/// Where the book keeps the reference.
const REFERENCE: &str = "docs/src/reference/configuration.md";

/// What regenerates it (also in `runway_cli::config_reference::REGENERATE`).
const REGENERATE: &str =
    "cargo run -q -p runway-cli --bin runway -- config reference > docs/src/reference/configuration.md";

#[test]
fn the_committed_configuration_reference_is_what_the_binary_prints() {
    let out = Command::new(bin("runway")).args(["config", "reference"]).output().expect("run runway");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).expect("UTF-8 reference");
    let path = workspace_root().join(REFERENCE);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != printed {
        let line = committed.lines().zip(printed.lines()).position(|(a, b)| a != b).map_or_else(
            || "its end".to_owned(),
            |i| {
                format!(
                    "line {}: committed {:?}, printed {:?}",
                    i + 1,
                    committed.lines().nth(i),
                    printed.lines().nth(i)
                )
            },
        );
        panic!(
            "{REFERENCE} is not what `runway config reference` prints (first difference at {line}): the config \
             types or their doc comments changed, or the file was edited by hand. Regenerate it with\n\n    {REGENERATE}\n\nand commit it"
        );
    }
    for needle in ["## Agent config", "## Coordinator config", "| `lease_ttl` | duration | `\"5s\"` |"] {
        assert!(printed.contains(needle), "{needle:?} in:\n{printed}");
    }
}
