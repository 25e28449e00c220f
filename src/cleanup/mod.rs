//! The cleanup engine: a pure policy and planner ([`policy`]) and the executor that runs a plan
//! through Docker's prune endpoints.

pub mod policy;
