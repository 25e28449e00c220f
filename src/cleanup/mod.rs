//! The cleanup engine: a pure policy and planner ([`policy`]), whether a run may start
//! ([`admission`]), the executor that runs a plan through Docker's prune endpoints ([`engine`]),
//! the `bilge clean` command ([`cli`]) and what `bilge serve` runs on its own: the watermark
//! watcher ([`watermark`]) and the schedules ([`schedule`]).

pub mod admission;
pub mod cli;
pub mod engine;
pub mod logs;
pub mod policy;
pub mod schedule;
pub mod watermark;

pub use admission::Refusal;
pub use engine::{Engine, Report, Request, Trigger};
pub use policy::{Level, Plan, Policy};
