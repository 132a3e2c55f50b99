//! Man pages as a reader sees them: `man -l PAGE` (Debian's man-db, which
//! also reads a `.gz` page), and the exit-code table every runway page ends
//! with (`runway completions` and the package tests check it).

use std::path::Path;
use std::process::Command;

/// `man -l PAGE` as plain text, wide enough that no line of the exit-code
/// table wraps.
pub fn man(page: &Path) -> String {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "400")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("LANG", "C.UTF-8")
        .env_remove("MAN_KEEP_FORMATTING")
        .output()
        .expect("run man (Debian's man-db)");
    assert!(out.status.success(), "man -l {}: {}", page.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Without a terminal man prints no bold or underline (overstrikes).
    assert!(!text.contains('\u{8}'), "formatting left in:\n{text}");
    text
}

/// Each code of `runway --help`'s table, in order, at the start of a line
/// of the EXIT STATUS section, followed by its meaning.
pub fn assert_exit_codes(text: &str) {
    let section = text.split_once("EXIT STATUS").map(|(_, rest)| rest).expect("an EXIT STATUS section");
    let lines: Vec<&str> = section.lines().map(str::trim).collect();
    let mut at = 0;
    for (code, start_of_meaning) in [
        (0, "success;"),
        (1, "failed: the rollout or operation ran and failed"),
        (2, "bad input or refused before anything changed"),
        (3, "unreachable: no coordinator answered as leader"),
        (4, "the rollout was cancelled"),
        (5, "busy: another runner holds the migrations advisory lock"),
        (6, "integrity: the backup is corrupt"),
        (7, "needs attention:"),
        (8, "blocked:"),
        (9, "diverged:"),
        (10, "denied:"),
    ] {
        // `.TP`: the code, then its meaning on the same line when the code
        // is narrower than the indent, else on the next line.
        let found = lines[at..]
            .iter()
            .position(|l| l.split_whitespace().next() == Some(code.to_string().as_str()))
            .unwrap_or_else(|| panic!("exit code {code} missing after line {at} of:\n{section}"));
        at += found;
        let same_line = lines[at][code.to_string().len()..].trim();
        let meaning = if same_line.is_empty() {
            lines[at + 1..].iter().find(|l| !l.is_empty()).copied()
        } else {
            Some(same_line)
        };
        assert!(
            meaning.is_some_and(|m| m.starts_with(start_of_meaning)),
            "code {code}: {meaning:?} in:\n{section}"
        );
        at += 1;
    }
}
