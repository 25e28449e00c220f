//! bilge keeps Docker hosts from running out of disk.
//!
//! The library holds everything; `main.rs` only parses the command line, starts tracing and maps
//! the result to an exit code. Plain logic (summaries, plans, classification, payloads) is pure and
//! unit-tested; I/O lives at thin edges (`collect`, `docker`, `store`, `server`).

pub mod build;
pub mod cleanup;
pub mod cli;
pub mod collect;
pub mod config;
pub mod df;
pub mod docker;
pub mod error;
pub mod format;
pub mod logging;
pub mod metrics;
pub mod page;
pub mod serve;
pub mod server;
pub mod store;

pub use error::{Error, Result};

/// The version compiled in, for `bilge_exporter_build_info` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision compiled in (set by CI through `BILGE_REVISION`), or "unknown".
pub const REVISION: &str = match option_env!("BILGE_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// `bilge healthcheck`: succeeds when `url` answers 2xx within five seconds.
pub async fn healthcheck(url: &str) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Other(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| Error::Other(format!("{url}: {e}")))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(Error::Other(format!("{url}: {}", resp.status())))
    }
}
