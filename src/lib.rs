//! bilge keeps Docker hosts from running out of disk.
//!
//! The library holds everything; `main.rs` only parses the command line, starts tracing and maps
//! the result to an exit code. Plain logic (summaries, plans, classification, payloads) is pure and
//! unit-tested; I/O lives at thin edges (`collect`, `docker`, `store`, `server`).

pub mod builds;
pub mod chart;
pub mod cleanup;
pub mod cli;
pub mod collect;
pub mod config;
pub mod df;
pub mod docker;
pub mod error;
pub mod format;
pub mod history;
pub mod host;
pub mod http_error;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod page;
pub mod running;
pub mod serve;
pub mod server;
pub mod store;
pub mod sync;
pub mod tally;
pub mod web;
pub mod webhook;

pub use error::{Error, Result};

/// The version compiled in, for `bilge_exporter_build_info` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision compiled in (`build.rs`: `BILGE_REVISION`, else git), or "unknown".
pub const REVISION: &str = env!("BILGE_BUILD_REVISION");

/// The version of rustc that compiled bilge, e.g. `1.95.0`.
pub const RUST_VERSION: &str = env!("BILGE_BUILD_RUSTC");

pub use web::health::{HealthcheckSettings, healthcheck};
