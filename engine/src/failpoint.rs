//! Failpoints: faults the end-to-end tests switch on through environment
//! variables.
//!
//! They exist only in builds with the `failpoints` feature (turned on by
//! the agent's feature of the same name, which only the test crate turns
//! on); without it every function here is a constant "off" and the
//! variables' names are not in the binary. With the feature, an unset
//! variable (the default) changes nothing.
//!
//! - `RUNWAY_FAILPOINT_FLIP_DUMP_BYTE=N`: while a custom-format backup is
//!   written, byte N of the dump file gets one bit flipped on disk after it
//!   was hashed, as a failing disk would; verification must catch it.

/// The offset of the dump byte to flip, if the failpoint is on. Read each
/// time (tests set it per agent process).
#[cfg(feature = "failpoints")]
pub fn flip_dump_byte() -> Option<u64> {
    std::env::var("RUNWAY_FAILPOINT_FLIP_DUMP_BYTE").ok().and_then(|v| v.parse().ok())
}

/// Never, without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
pub fn flip_dump_byte() -> Option<u64> {
    None
}
