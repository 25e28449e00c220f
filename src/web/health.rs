//! `bilge healthcheck`: asks a bilge server's `/-/healthy` (or `/-/ready`) the way that server
//! is configured to be asked: over https trusting exactly the certificate its web config names,
//! with a basic-auth user and a client certificate when given. Exits 0 on a 2xx within five
//! seconds, for container HEALTHCHECKs and Kubernetes exec probes.

use crate::{Error, Result};

/// What `bilge healthcheck` asks and how (see `Config::healthcheck`).
#[derive(Debug)]
pub struct HealthcheckSettings {
    /// The URL: `/-/healthy` (or `/-/ready`) on loopback at the server's port by default.
    pub url: String,
    /// What the server's certificate must be (its own, from the web config, by default).
    pub trust: super::tls::Trust,
    /// A client certificate chain and key, when the server requires one.
    pub identity: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
    /// A basic-auth user and password.
    pub credentials: Option<(String, String)>,
}

/// `bilge healthcheck`: succeeds when the server answers 2xx within five seconds.
pub async fn healthcheck(h: HealthcheckSettings) -> Result<()> {
    let url = h.url.clone();
    let client = super::tls::client_builder(&h.trust, h.identity)
        .map_err(Error::Other)?
        .timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Other(e.to_string()))?;
    let mut req = client.get(&url);
    if let Some((user, password)) = &h.credentials {
        req = req.basic_auth(user, Some(password));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Error::Other(format!("{url}: {}", root_cause(&e))))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(Error::Other(format!("{url}: {}", resp.status())))
    }
}

/// The innermost error under `e` (reqwest's own text only names the URL).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut root = e;
    while let Some(s) = root.source() {
        root = s;
    }
    if std::ptr::addr_eq(root, e) {
        e.to_string()
    } else {
        format!("{e}: {root}")
    }
}
