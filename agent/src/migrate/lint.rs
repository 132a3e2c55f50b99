//! placeholder
use serde::Serialize;
#[derive(Debug, Clone, Default, Serialize)]
pub struct LintReport {}
pub fn lint() {}
