//! Failpoints: faults the end-to-end tests switch on through environment
//! variables. Unset (the default) they change nothing.
//!
//! - `RUNWAY_FAILPOINT_FLIP_DUMP_BYTE=N`: while a custom-format backup is
//!   written, byte N of the dump file gets one bit flipped on disk after it
//!   was hashed, as a failing disk would; verification must catch it.

/// The offset of the dump byte to flip, if the failpoint is on. Read each
/// time (tests set it per agent process).
pub fn flip_dump_byte() -> Option<u64> {
    std::env::var("RUNWAY_FAILPOINT_FLIP_DUMP_BYTE").ok().and_then(|v| v.parse().ok())
}
