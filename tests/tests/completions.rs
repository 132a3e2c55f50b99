//! `runway completions bash|zsh|fish` prints a completion script made from
//! the clap definitions, and `runway man-pages` writes man pages with the
//! exit-code table; both are what the `runway` package installs
//! (`deploy/debian/build.sh`).
//!
//! The bash script is sourced in a real `bash`, which is then asked for
//! completions the way readline asks: `COMP_WORDS`, `COMP_CWORD` and the
//! function `complete -p runway` names. The man page is rendered by `man -l`.

use std::path::Path;
use std::process::Command;

use runway_tests::manual::{assert_exit_codes, man};
use runway_tests::process::bin;

/// What bash offers after `words` (the last one being completed), with
/// the completion script `runway completions bash` printed.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = r#"
source "$1"; shift
spec=$(complete -p runway) || exit 3
function=$(printf '%s\n' "$spec" | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
[ -n "$function" ] || { echo "no function in: $spec" >&2; exit 4; }
COMP_LINE="$1"; shift
COMP_POINT=${#COMP_LINE}
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMPREPLY=()
"$function" runway "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = Command::new("bash")
        .arg("-c")
        .arg(program)
        .arg("bash")
        .arg(script)
        .arg(&line)
        .args(words)
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash completing {line:?}: {}", String::from_utf8_lossy(&out.stderr));
    let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    found.sort();
    found
}

#[test]
fn bash_completes_subcommands_and_flags_from_the_sourced_script() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("runway.bash");
    let out = Command::new(bin("runway")).args(["completions", "bash"]).output().expect("run runway");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&script, &out.stdout).expect("write the script");

    assert_eq!(bash_completes(&script, &["runway", "ro"]), ["rollout"]);
    assert_eq!(bash_completes(&script, &["runway", "rollout", "st"]), ["start"]);
    assert_eq!(bash_completes(&script, &["runway", "rollout", "re"]), ["reject"]);
    assert_eq!(bash_completes(&script, &["runway", "config", "check", "--sk"]), ["--skip-files"]);
    assert_eq!(bash_completes(&script, &["runway", "rollout", "start", "--allow-d"]), ["--allow-danger"]);
    // Every rollout subcommand, and only those (plus help flags), after `rollout `.
    let all = bash_completes(&script, &["runway", "rollout", ""]);
    for sub in ["approve", "cancel", "list", "plan", "reject", "rollback", "show", "start", "watch"] {
        assert!(all.iter().any(|s| s == sub), "{sub} in {all:?}");
    }
    assert!(!all.iter().any(|s| s == "migrate"), "a top-level command offered under rollout: {all:?}");
    // The control: a word nothing starts with gets nothing.
    assert_eq!(bash_completes(&script, &["runway", "rollout", "zz"]), Vec::<String>::new());

    // zsh and fish get theirs (not run here: neither shell is installed).
    for (shell, needle) in [("zsh", "#compdef runway"), ("fish", "complete -c runway")] {
        let out = Command::new(bin("runway")).args(["completions", shell]).output().expect("run runway");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(needle), "{shell}: {text:.200}");
        assert!(text.contains("rollout") && text.contains("skip-files"), "{shell}");
    }
    let out = Command::new(bin("runway")).args(["completions", "tcsh"]).output().expect("run runway");
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn man_renders_runway_1_with_the_exit_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(bin("runway"))
        .arg("man-pages")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run runway");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = man(&dir.path().join("runway.1"));
    for needle in
        ["NAME", "runway - runway: database migrations", "SYNOPSIS", "runway-rollout(1)", "EXIT STATUS"]
    {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    assert_exit_codes(&text);
    let text = man(&dir.path().join("runway-config-check.1"));
    assert!(text.contains("--skip-files"), "{text}");
    assert_exit_codes(&text);
}
