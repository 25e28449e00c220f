//! Delivering a build outcome so that none is lost: to a running `bilge serve` (`--server`) when
//! one answers, else straight into the local store (`--state.path`), else — the disk may be the
//! very thing that is full — as one JSON line on stderr, for the CI log to keep. An https server
//! is verified against `--server.ca-file` (or the system's roots); redirects are not followed.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::{BuildRecord, Store};
use crate::web::tls::Trust;

/// How long the server may take to take an outcome.
const SERVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A `bilge serve` to send outcomes to.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    /// Its base URL, `http://host:port` or `https://host:port`, without a trailing slash.
    pub url: String,
    /// The API token, if one was given.
    pub token: Option<String>,
    /// What an https server's certificate must chain to (`--server.ca-file`, else the system's).
    pub trust: Trust,
}

/// Where an outcome ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The server took it.
    Server,
    /// It was written to the local store at this path.
    Store(PathBuf),
    /// Nowhere but stderr.
    Stderr,
}

/// Sends outcomes to the server or the store.
#[derive(Debug)]
pub struct Recorder {
    /// The server, when one was named.
    server: Option<ServerTarget>,
    /// The local store.
    store: Store,
}

impl Recorder {
    /// A recorder for `server` (if any) with `store` as the fallback.
    pub fn new(server: Option<ServerTarget>, store: Store) -> Recorder {
        Recorder { server, store }
    }

    /// Records one outcome, telling the user on stderr whenever it did not go where it should.
    pub async fn record(&self, rec: &BuildRecord) -> Recorded {
        if let Some(server) = &self.server {
            match post(server, rec).await {
                Ok(()) => return Recorded::Server,
                Err(why) => eprintln!(
                    "bilge: could not send the outcome to {} ({why}); recording it in {} instead",
                    server.url,
                    self.store.path().display()
                ),
            }
        }
        let store = self.store.clone();
        let row = rec.clone();
        let written = tokio::task::spawn_blocking(move || store.insert_build(&row))
            .await
            .map_err(|e| crate::Error::Other(e.to_string()))
            .and_then(|r| r);
        match written {
            Ok(_) => Recorded::Store(self.store.path().to_path_buf()),
            Err(e) => {
                let json = serde_json::to_string(rec).unwrap_or_default();
                eprintln!(
                    "bilge: could not record the outcome in {} ({e}); here it is: {json}",
                    self.store.path().display()
                );
                Recorded::Stderr
            }
        }
    }
}

/// POSTs the outcome; the error says why the server did not take it.
async fn post(server: &ServerTarget, rec: &BuildRecord) -> Result<(), String> {
    // No redirects: the token goes to the server named and nowhere else.
    let client = crate::web::tls::client_builder(&server.trust, None)?
        .timeout(SERVER_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client
        .post(format!("{}/api/v1/builds", server.url))
        .json(rec);
    if let Some(t) = &server.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| without_url(&e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let msg = body["error"].as_str().unwrap_or("no explanation");
    Err(format!("{status}: {msg}"))
}

/// reqwest's error in a few words: what failed and the root cause (its text names the URL,
/// which the message already shows).
fn without_url(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    let what = if e.is_timeout() {
        format!("no answer within {}s", SERVER_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    if std::ptr::addr_eq(root, e as &dyn std::error::Error) {
        what
    } else {
        format!("{what}: {root}")
    }
}
