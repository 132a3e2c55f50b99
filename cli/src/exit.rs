//! Exit codes scripts can rely on.

/// Success: the rollout succeeded, or the command did what it said.
pub const OK: i32 = 0;
/// The rollout failed (or a watched rollout ended failed).
pub const FAILED: i32 = 1;
/// Bad input: arguments, migrations folder, unknown environment, no
/// suitable agents. Nothing was changed.
pub const INVALID: i32 = 2;
/// No coordinator could be reached, or none is leader.
pub const UNREACHABLE: i32 = 3;
/// The rollout was cancelled.
pub const CANCELLED: i32 = 4;
