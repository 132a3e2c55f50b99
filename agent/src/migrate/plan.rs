//! placeholder
use serde::Serialize;
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanReport {}
pub fn plan() {}
