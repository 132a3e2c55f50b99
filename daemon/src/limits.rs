//! Process limits a daemon sets for itself.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit, as far as
/// `wanted`, and returns the soft limit now in force. Every connection
/// is a file: a coordinator's connection caps mean nothing under the
/// 1024 many systems start processes with.
pub fn raise_open_files(wanted: u64) -> u64 {
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(u64::MAX);
    let hard = now.maximum.unwrap_or(u64::MAX);
    let target = wanted.min(hard);
    if soft >= target {
        return soft;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: now.maximum }) {
        Ok(()) => target,
        Err(e) => {
            tracing::warn!(soft, wanted = target, error = %e, "cannot raise the open-files limit");
            soft
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_never_goes_down() {
        let before = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        assert!(raise_open_files(1) >= before);
        assert_eq!(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX), before);
    }
}
