//! Start-up checks of a daemon's config, shared by the agent, the
//! coordinator and `runway config check` (which runs the very same checks
//! without starting anything).
//!
//! A check looks at every key and collects every problem ([`Problems`]),
//! not just the first, each naming its file, table and key:
//! `agent.toml: [databases.app] url: invalid port number`. With
//! [`Files::Check`], what a daemon always does, it also looks at this host:
//! files that must be readable (TLS), programs that must be executable
//! (hooks, `pg_dump`), directories that must be writable or creatable.
//! Run as the daemon's own user, so that "readable" means the same.
//!
//! A daemon whose config has problems exits with [`EXIT_INVALID_CONFIG`]
//! before it binds, connects or writes anything ([`refuse`]).
//!
//! Keys renamed since a config was written (durations that were
//! `*_secs = N`) are still read, with a warning ([`renamed`], [`warn`]).

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use runway_identity::tls::{Security, TlsError, TlsFiles};
use rustix::fs::{Access, access};

pub mod renamed;
pub use renamed::{ParseError, Parsed, Renamed, duration_schema, format_duration, host_dependent};

/// The exit code of a daemon refusing its config: 2, "bad input", the
/// same number as in `runway --help`'s exit-code table (the CLI's tests
/// hold the two equal). Not worth a restart: systemd units list it in
/// `RestartPreventExitStatus=`.
pub const EXIT_INVALID_CONFIG: u8 = 2;

/// Whether a check looks at this host as well as at the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// Every file, program and directory the config names must be usable
    /// here: what a daemon checks at start-up.
    Check,
    /// Only the keys' values: for a config written for another host (e.g.
    /// the examples in `deploy/`, checked in CI).
    Skip,
}

/// Everything wrong with one config file. Each problem names its key.
#[derive(Debug, Clone)]
pub struct Problems {
    file: PathBuf,
    found: Vec<String>,
}

impl Problems {
    /// No problem found yet in `file` (what every line starts with).
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self { file: file.into(), found: Vec::new() }
    }

    /// `key` (`state_dir`, `[tls] cert`, `[databases.app] url`) has `problem`.
    pub fn add(&mut self, key: impl fmt::Display, problem: impl fmt::Display) {
        self.found.push(format!("{key}: {problem}"));
    }

    /// A problem whose message already starts with its key (a check
    /// shared with code that reports it elsewhere too).
    pub fn add_named(&mut self, problem: impl fmt::Display) {
        self.found.push(problem.to_string());
    }

    /// Adds `key`'s problem when `result` is one.
    pub fn check<T, E: fmt::Display>(&mut self, key: impl fmt::Display, result: Result<T, E>) -> Option<T> {
        result.map_err(|problem| self.add(key, problem)).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The file the problems are in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Each problem, `key: what`, without the file.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.found.iter().map(String::as_str)
    }

    /// `Ok` when nothing was found.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

/// One line per problem: `FILE: KEY: WHAT`.
impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.found.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {problem}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Prints why `daemon` does not start (`error`: a config that cannot be
/// read, parsed or used) and returns [`EXIT_INVALID_CONFIG`], for `main`.
pub fn refuse(daemon: &str, error: &dyn fmt::Display, check: &str) -> ExitCode {
    eprintln!("{error}");
    eprintln!(
        "{daemon}: not started: fix the config (`runway config check {check}` runs these checks alone)"
    );
    ExitCode::from(EXIT_INVALID_CONFIG)
}

/// Prints the warnings of a config a daemon starts with (old keys it
/// still reads, see [`renamed`]) to stderr, before logging is set up.
pub fn warn(warnings: &[String]) {
    for warning in warnings {
        eprintln!("{warning}");
    }
}

/// `path` is a file this user can read.
pub fn readable_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        Ok(meta) if !meta.is_file() => Err(format!("{} is not a file", path.display())),
        Ok(_) => {
            std::fs::File::open(path).map(drop).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
    }
}

/// Where `program` (a command's first word) is found and that it may be
/// run: with a `/`, that file; without, the first match in `search_path`
/// (a `PATH` value), as `execvp` looks it up.
pub fn executable(program: &str, search_path: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return runnable(&path).map(|()| path);
    }
    std::env::split_paths(search_path)
        .map(|dir| dir.join(program))
        .find(|path| runnable(path).is_ok())
        .ok_or_else(|| format!("{program:?} is not found in PATH ({search_path}); give its full path"))
}

/// `path` is a file this user may execute.
fn runnable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(meta) if !meta.is_file() => Err(format!("{} is not a file", path.display())),
        Ok(_) => {
            access(path, Access::EXEC_OK).map_err(|e| format!("{} is not executable: {e}", path.display()))
        }
    }
}

/// `dir` is a directory this user can write, or one it can create: its
/// nearest existing ancestor is a writable directory.
pub fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    loop {
        let here = if existing.as_os_str().is_empty() { Path::new(".") } else { existing };
        match std::fs::metadata(here) {
            Ok(meta) if !meta.is_dir() => return Err(format!("{} is not a directory", here.display())),
            Ok(_) => {
                return access(here, Access::WRITE_OK).map_err(|e| {
                    if here == dir {
                        format!("{} is not writable: {e}", dir.display())
                    } else {
                        format!(
                            "{} does not exist and {} is not writable: {e}",
                            dir.display(),
                            here.display()
                        )
                    }
                });
            }
            // Walk up to what exists (past a file on the way, which the next round names).
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                match existing.parent() {
                    Some(parent) => existing = parent,
                    None => return Err(format!("{}: {e}", dir.display())),
                }
            }
            Err(e) => return Err(format!("{}: {e}", here.display())),
        }
    }
}

/// Checks `[tls]`: nothing in insecure mode; else `ca`, `cert` and `key`
/// are set and, with [`Files::Check`], readable (and `crl` when set), and they load (PEM, the
/// certificate chains to the CA, the key is the certificate's). Returns
/// what loaded, for the caller to check the identity it names.
pub fn tls(tls: &TlsFiles, files: Files, problems: &mut Problems) -> Option<Security> {
    if tls.insecure {
        return Some(Security::Insecure);
    }
    let keys = [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)];
    let unset: Vec<&str> = keys.iter().filter(|(_, path)| path.is_none()).map(|(key, _)| *key).collect();
    if !unset.is_empty() {
        problems.add(
            "[tls]",
            format!(
                "{} not set: TLS is on unless `insecure = true` and needs the runway CA (`ca`), this \
                 holder's certificate (`cert`) and its key (`key`); `runway certs` makes them",
                unset.join(", ")
            ),
        );
        return None;
    }
    if files == Files::Skip {
        return None;
    }
    let before = problems.found.len();
    for (key, path) in keys {
        if let Some(path) = path {
            problems.check(format_args!("[tls] {key}"), readable_file(path));
        }
    }
    if let Some(crl) = &tls.crl {
        problems.check("[tls] crl", readable_file(crl));
    }
    if problems.found.len() > before {
        return None;
    }
    let key_of =
        |path: &Path| keys.iter().find(|(_, p)| p.as_deref() == Some(path)).map_or("", |(key, _)| *key);
    let key = |key: &str| if key.is_empty() { "[tls]".to_owned() } else { format!("[tls] {key}") };
    match tls.load("`[tls] ca, cert and key`") {
        Ok(security) => Some(security),
        Err(error) => {
            let which = match &error {
                TlsError::Read { path, .. }
                | TlsError::NoPem { path, .. }
                | TlsError::Identity { path, .. } => key_of(path),
                TlsError::Crl { .. } => "crl",
                TlsError::NotFromCa { .. } => "cert",
                TlsError::KeyMismatch { .. } => "key",
                _ => "",
            };
            problems.add(key(which), error);
            None
        }
    }
}

/// `text` is an `http://` or `https://` URL with a host.
pub fn http_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} is not an http:// or https:// URL"));
    }
    if url.host().is_none() {
        return Err(format!("{text:?} names no host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_a_line_naming_the_file_and_the_key() {
        let mut problems = Problems::new("/etc/runway/agent.toml");
        assert!(problems.clone().into_result().is_ok());
        problems.add("[databases.app] url", "invalid port number");
        assert_eq!(problems.check("state_dir", Ok::<_, String>(7)), Some(7));
        problems.check("state_dir", Err::<(), _>("/nope is not writable"));
        assert_eq!(
            problems.to_string(),
            "/etc/runway/agent.toml: [databases.app] url: invalid port number\n\
             /etc/runway/agent.toml: state_dir: /nope is not writable"
        );
        assert_eq!(problems.into_result().unwrap_err().iter().count(), 2);
    }

    #[test]
    fn files_programs_and_directories_are_checked_as_they_will_be_used() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "x").unwrap();
        readable_file(&file).unwrap();
        assert!(readable_file(&dir.path().join("missing.pem")).unwrap_err().contains("missing.pem"));
        assert!(readable_file(dir.path()).unwrap_err().contains("is not a file"));

        assert_eq!(executable("sh", "/nonexistent:/bin").unwrap(), Path::new("/bin/sh"));
        assert!(executable("sh", "/nonexistent").unwrap_err().contains("not found in PATH"));
        assert!(executable(file.to_str().unwrap(), "").unwrap_err().contains("not executable"));
        assert!(executable("/no/such/hook", "").unwrap_err().contains("/no/such/hook"));

        writable_dir(dir.path()).unwrap();
        writable_dir(&dir.path().join("state/journal")).unwrap();
        assert!(writable_dir(&file.join("state")).unwrap_err().contains("is not a directory"));

        http_url("https://hooks.example/x").unwrap();
        assert!(http_url("http://127.0.0.1:notaport/").unwrap_err().contains("invalid port number"));
        assert!(http_url("ftp://x/").is_err());
    }
}
