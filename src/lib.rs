//! bilge keeps Docker hosts from running out of disk.
//!
//! The library holds everything; `main.rs` only parses the command line, starts tracing and maps
//! the result to an exit code. Plain logic (summaries, plans, classification, payloads) is pure and
//! unit-tested; I/O lives at thin edges (`collect`, `docker`, `store`, `server`).

pub mod builds;
pub mod cleanup;
pub mod cli;
pub mod collect;
pub mod config;
pub mod df;
pub mod docker;
pub mod error;
pub mod format;
pub mod host;
pub mod http_error;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod page;
pub mod serve;
pub mod server;
pub mod store;
pub mod sync;
pub mod webhook;

pub use error::{Error, Result};

/// The version compiled in, for `bilge_exporter_build_info` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision compiled in (set by CI through `BILGE_REVISION`), or "unknown".
pub const REVISION: &str = match option_env!("BILGE_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// The URL `bilge healthcheck` asks: the explicit one, else `/-/healthy` on loopback at the port
/// of the server's listen address (`BILGE_WEB_LISTEN_ADDRESS`), else on 9830.
pub fn healthcheck_url(explicit: Option<String>, listen: Option<String>) -> String {
    if let Some(u) = explicit {
        return u;
    }
    let port = listen
        .and_then(|l| config::parse_listen(&l).ok())
        .map_or(9830, |a| a.port());
    format!("http://127.0.0.1:{port}/-/healthy")
}

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

#[cfg(test)]
mod tests {
    use super::healthcheck_url;

    #[test]
    fn the_healthcheck_follows_the_servers_listen_address() {
        assert_eq!(
            healthcheck_url(None, None),
            "http://127.0.0.1:9830/-/healthy"
        );
        assert_eq!(
            healthcheck_url(None, Some(":9999".into())),
            "http://127.0.0.1:9999/-/healthy"
        );
        assert_eq!(healthcheck_url(Some("http://x/".into()), None), "http://x/");
    }
}
