//! `runway completions SHELL` and `runway man-pages --dir DIR`: shell
//! completion scripts and man pages, both generated from the clap
//! definitions ([`crate::command`]) so they cannot drift from the flags.
//!
//! The Debian package ships both (`deploy/debian/build.sh` runs these two
//! commands on the release binary before `cargo deb`); from a clone,
//! `source <(runway completions bash)` works too.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::exit::Exit;
use crate::output::{Failure, Output};

/// The commands of this module, flattened into [`crate::Command`].
#[derive(Subcommand, Debug)]
pub enum ManualCommand {
    /// Print the completion script for SHELL on stdout. Bash: `source
    /// <(runway completions bash)`, or save it as
    /// /usr/share/bash-completion/completions/runway (the runway package
    /// installs it there, and zsh's and fish's in theirs).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages (runway.1, runway-rollout.1, …, each with the
    /// exit-code table) into DIR. The runway package installs them.
    #[command(hide = true)]
    ManPages {
        /// Where to write them (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Runs `runway completions …` or `runway man-pages …`.
pub fn run(output: Output, command: ManualCommand) -> Result<Exit, Failure> {
    match command {
        ManualCommand::Completions { shell } => {
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(shell, &mut crate::command(), "runway", &mut stdout);
            stdout
                .flush()
                .map_err(|e| Failure::new(Exit::Failed, format!("cannot write the completions: {e}")))?;
            Ok(Exit::Success)
        }
        ManualCommand::ManPages { dir } => {
            let written = man_pages(&dir).map_err(|e| {
                Failure::new(Exit::Failed, format!("cannot write man pages into {}: {e}", dir.display()))
            })?;
            output.result(
                format!("{} man pages written into {}", written.len(), dir.display()),
                &serde_json::json!({ "dir": dir, "pages": written }),
            );
            Ok(Exit::Success)
        }
    }
}

/// Writes one page per command (`runway.1`, `runway-rollout.1`,
/// `runway-rollout-start.1`, …: the names the SUBCOMMANDS sections refer
/// to) into `dir`; returns their paths.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut command = crate::command().disable_help_subcommand(true);
    command.build();
    let mut written = Vec::new();
    write_pages(command, dir, &mut written)?;
    Ok(written)
}

fn write_pages(command: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    let man = Man::new(command.clone()).manual("runway manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    render(&man, &command, &mut page)?;
    std::fs::write(&path, page)?;
    written.push(path);
    Ok(())
}

/// clap_mangen's sections, with an EXIT STATUS section from [`Exit::ALL`]
/// in place of the `--help` text's copy of the table.
fn render(man: &Man, command: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if command.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    exit_status().to_writer(out)?;
    if command.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// The EXIT STATUS section: one entry per code, the same lines as `--help`.
fn exit_status() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman("The same for every subcommand:")]);
    for exit in Exit::ALL {
        roff.control("TP", []);
        roff.text([bold(exit.code().to_string())]);
        roff.text([roman(exit.meaning())]);
    }
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_the_exit_codes_and_every_referenced_page_exists() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pages = man_pages(dir.path()).expect("write man pages");
        let names: Vec<String> =
            pages.iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
        for name in ["runway.1", "runway-rollout.1", "runway-rollout-start.1", "runway-config-check.1"] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        for page in &pages {
            let text = std::fs::read_to_string(page).expect("read page");
            assert!(text.contains(".SH \"EXIT STATUS\""), "{}", page.display());
            assert!(!text.contains(".SH EXTRA"), "{}: the --help copy of the table", page.display());
            // Every `runway-…(1)` a SUBCOMMANDS section names was written.
            for word in text.split(|c: char| c.is_whitespace()) {
                if let Some(name) = word.strip_suffix("(1)").filter(|w| w.starts_with("runway")) {
                    let name = name.replace("\\-", "-");
                    assert!(names.contains(&format!("{name}.1")), "{} names {name}(1)", page.display());
                }
            }
        }
    }
}
