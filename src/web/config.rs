//! The web configuration file (`--web.config.file`): the YAML that Prometheus's exporter-toolkit
//! reads for node_exporter, Prometheus and Alertmanager, so operators reuse the files they have.
//!
//! [`parse`] is pure: it turns the text into a checked [`WebConfig`] or one line saying what is
//! wrong and what to write instead. Unknown keys are refused at every level, and so are the keys
//! exporter-toolkit knows that bilge does not carry out (cipher suites, curves, SAN filters, rate
//! limits, HTTP/2), each with its own reason: a file that says more than bilge does must not look
//! as if it were obeyed. Relative paths are taken from the file's directory, as exporter-toolkit
//! does. Reading the certificates is [`super::tls`]'s job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

/// The file as written: every key exporter-toolkit documents, so each can get its own answer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// TLS for the listener.
    tls_server_config: Option<RawTls>,
    /// HTTP options.
    http_server_config: Option<RawHttp>,
    /// User name to bcrypt hash.
    basic_auth_users: Option<BTreeMap<String, String>>,
    /// exporter-toolkit's token bucket: not carried out.
    rate_limit: Option<serde_yaml_ng::Value>,
}

/// `tls_server_config` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    /// PEM file of the certificate chain.
    cert_file: Option<String>,
    /// PEM file of the private key.
    key_file: Option<String>,
    /// The certificate chain, inline PEM.
    cert: Option<String>,
    /// The private key, inline PEM.
    key: Option<String>,
    /// Go's `tls.ClientAuthType` name.
    client_auth_type: Option<String>,
    /// PEM file of the CAs that sign client certificates.
    client_ca_file: Option<String>,
    /// The same CAs, inline PEM.
    client_ca: Option<String>,
    /// Not carried out.
    client_allowed_sans: Option<serde_yaml_ng::Value>,
    /// `TLS12` or `TLS13`.
    min_version: Option<String>,
    /// `TLS12` or `TLS13`.
    max_version: Option<String>,
    /// Not carried out.
    cipher_suites: Option<serde_yaml_ng::Value>,
    /// Whether the server's suite order wins.
    prefer_server_cipher_suites: Option<bool>,
    /// Not carried out.
    curve_preferences: Option<serde_yaml_ng::Value>,
}

/// `http_server_config` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// bilge serves HTTP/1.1 only: `false` is accepted, `true` refused.
    http2: Option<bool>,
    /// Security headers added to every answer.
    headers: Option<BTreeMap<String, String>>,
}

/// Where a PEM document comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    /// A file (absolute, or resolved against the config file's directory).
    File(PathBuf),
    /// Inline text from the config file.
    Inline(String),
}

impl Pem {
    /// The file, if this PEM lives in one (to watch it for changes).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Pem::File(p) => Some(p),
            Pem::Inline(_) => None,
        }
    }

    /// Its bytes.
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Pem::File(p) => {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
            Pem::Inline(s) => Ok(s.as_bytes().to_vec()),
        }
    }

    /// How to name it in a message.
    pub fn describe(&self, inline_key: &str) -> String {
        match self {
            Pem::File(p) => p.display().to_string(),
            Pem::Inline(_) => format!("the inline {inline_key}"),
        }
    }
}

/// Go's client authentication policies, as exporter-toolkit names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    NoClientCert,
    /// Asked for, not required, not verified.
    RequestClientCert,
    /// Required, not verified.
    RequireAnyClientCert,
    /// Verified against the client CA when given.
    VerifyClientCertIfGiven,
    /// Required and verified against the client CA.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    /// Every policy, in Go's order.
    pub const ALL: [ClientAuth; 5] = [
        ClientAuth::NoClientCert,
        ClientAuth::RequestClientCert,
        ClientAuth::RequireAnyClientCert,
        ClientAuth::VerifyClientCertIfGiven,
        ClientAuth::RequireAndVerifyClientCert,
    ];

    /// Its name in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::NoClientCert => "NoClientCert",
            ClientAuth::RequestClientCert => "RequestClientCert",
            ClientAuth::RequireAnyClientCert => "RequireAnyClientCert",
            ClientAuth::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            ClientAuth::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        }
    }

    /// Whether a client CA checks the certificates.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }

    /// Whether a client must present a certificate.
    pub fn requires(self) -> bool {
        matches!(
            self,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// The TLS versions rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// A checked `tls_server_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    /// The certificate chain.
    pub cert: Pem,
    /// Its private key.
    pub key: Pem,
    /// Who must show a client certificate.
    pub client_auth: ClientAuth,
    /// The CAs that sign client certificates (with a verifying policy only).
    pub client_ca: Option<Pem>,
    /// Lowest version offered.
    pub min_version: TlsVersion,
    /// Highest version offered.
    pub max_version: TlsVersion,
    /// The server's cipher suite order wins over the client's.
    pub prefer_server_order: bool,
}

/// A checked web configuration. The default is plain HTTP without users, as without a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    /// TLS, when the file configures a certificate.
    pub tls: Option<TlsPlan>,
    /// User name to bcrypt hash; empty means no basic auth.
    pub users: BTreeMap<String, String>,
    /// Headers added to every answer.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The security headers exporter-toolkit lets a file set, with the values it accepts (`None`:
/// any value).
const HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

/// Parses and checks the file's text; `dir` is the file's directory, for relative paths.
pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
    // An empty file (or one of comments only) is an empty configuration, as in exporter-toolkit.
    let raw: RawFile = serde_yaml_ng::from_str::<Option<RawFile>>(text)
        .map_err(|e| format!("not a web configuration: {e}"))?
        .unwrap_or_default();
    if raw.rate_limit.is_some() {
        return Err(unsupported(
            "rate_limit",
            "bilge bounds requests with --web.max-connections and its timeouts instead",
        ));
    }
    let tls = match raw.tls_server_config {
        Some(t) => tls_plan(t, dir)?,
        None => None,
    };
    let headers = match raw.http_server_config {
        Some(h) => http_plan(h)?,
        None => Vec::new(),
    };
    let users = raw.basic_auth_users.unwrap_or_default();
    for (user, hash) in &users {
        check_user(user, hash)?;
    }
    Ok(WebConfig {
        tls,
        users,
        headers,
    })
}

/// The message for a key exporter-toolkit has and bilge does not carry out.
fn unsupported(key: &str, why: &str) -> String {
    format!("{key} is not supported: {why}; remove it")
}

/// Checks `tls_server_config`; `None` when it names no certificate at all (plain HTTP, as
/// exporter-toolkit serves an empty TLS section).
fn tls_plan(t: RawTls, dir: &Path) -> Result<Option<TlsPlan>, String> {
    let key = "tls_server_config";
    if t.cipher_suites.is_some() {
        return Err(unsupported(
            &format!("{key}.cipher_suites"),
            "bilge's TLS (rustls) offers only its own short list of modern suites",
        ));
    }
    if t.curve_preferences.is_some() {
        return Err(unsupported(
            &format!("{key}.curve_preferences"),
            "bilge's TLS (rustls) picks among its own modern key exchange groups",
        ));
    }
    if t.client_allowed_sans.is_some() {
        return Err(unsupported(
            &format!("{key}.client_allowed_sans"),
            "bilge does not filter client certificates by name; give them their own client CA",
        ));
    }
    let pem = |file: Option<String>, inline: Option<String>, name: &str| match (file, inline) {
        (Some(_), Some(_)) => Err(format!("{key}: give {name}_file or {name}, not both")),
        (Some(f), None) if f.trim().is_empty() => Ok(None),
        (Some(f), None) => Ok(Some(Pem::File(dir.join(f)))),
        (None, Some(s)) if s.trim().is_empty() => Ok(None),
        (None, Some(s)) => Ok(Some(Pem::Inline(s))),
        (None, None) => Ok(None),
    };
    let cert = pem(t.cert_file, t.cert, "cert")?;
    let private = pem(t.key_file, t.key, "key")?;
    let client_ca = pem(t.client_ca_file, t.client_ca, "client_ca")?;
    let client_auth = match t.client_auth_type.as_deref().map(str::trim) {
        None | Some("") => ClientAuth::NoClientCert,
        Some(name) => ClientAuth::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = ClientAuth::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "{key}.client_auth_type {name:?} is not one of {}",
                    names.join(", ")
                )
            })?,
    };
    let version = |field: &str, v: Option<String>, default: TlsVersion| match v.as_deref() {
        None | Some("") => Ok(default),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some("TLS10" | "TLS11") => Err(format!(
            "{key}.{field}: bilge speaks TLS 1.2 and 1.3 only; use TLS12 or TLS13"
        )),
        Some(other) => Err(format!("{key}.{field} {other:?} is not TLS12 or TLS13")),
    };
    let min_version = version("min_version", t.min_version, TlsVersion::Tls12)?;
    let max_version = version("max_version", t.max_version, TlsVersion::Tls13)?;
    let (cert, private) = match (cert, private) {
        (Some(c), Some(k)) => (c, k),
        (None, None) if client_ca.is_none() && client_auth == ClientAuth::NoClientCert => {
            return Ok(None);
        }
        (None, _) => return Err(format!("{key} needs cert_file (the server's certificate)")),
        (_, None) => {
            return Err(format!(
                "{key} needs key_file (the certificate's private key)"
            ));
        }
    };
    if min_version > max_version {
        return Err(format!("{key}: min_version is above max_version"));
    }
    match (client_auth.verifies(), &client_ca) {
        (true, None) => {
            return Err(format!(
                "{key}.client_auth_type {} needs client_ca_file (the CA that signs client certificates)",
                client_auth.as_str()
            ));
        }
        (false, Some(_)) => {
            return Err(format!(
                "{key}: client_ca_file is set but client_auth_type {} does not verify client certificates; set client_auth_type: RequireAndVerifyClientCert (or remove client_ca_file)",
                client_auth.as_str()
            ));
        }
        _ => {}
    }
    Ok(Some(TlsPlan {
        cert,
        key: private,
        client_auth,
        client_ca,
        min_version,
        max_version,
        prefer_server_order: t.prefer_server_cipher_suites.unwrap_or(true),
    }))
}

/// Checks `http_server_config`; returns the headers to add.
fn http_plan(h: RawHttp) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    if h.http2 == Some(true) {
        return Err(unsupported(
            "http_server_config.http2: true",
            "bilge serves HTTP/1.1 only (set http2: false or leave it out)",
        ));
    }
    let mut out = Vec::new();
    for (name, value) in h.headers.unwrap_or_default() {
        let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "http_server_config.headers: {name:?} cannot be set; the headers are {}",
                names.join(", ")
            ));
        };
        if value.is_empty() {
            continue;
        }
        if let Some(allowed) = allowed
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value))
        {
            return Err(format!(
                "http_server_config.headers.{name}: {value:?} is not one of {}",
                allowed.join(", ")
            ));
        }
        let header = HeaderName::from_str(&name).map_err(|e| format!("header {name}: {e}"))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("http_server_config.headers.{name}: not a header value"))?;
        out.push((header, value));
    }
    Ok(out)
}

/// Checks one `basic_auth_users` entry: a name basic auth can carry and a bcrypt hash.
fn check_user(user: &str, hash: &str) -> Result<(), String> {
    if user.is_empty() || user.contains(':') {
        return Err(format!(
            "basic_auth_users: user name {user:?} must be non-empty and without ':'"
        ));
    }
    if bcrypt::HashParts::from_str(hash).is_err() {
        return Err(format!(
            "basic_auth_users.{user}: the password is not a bcrypt hash; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real bcrypt hash (cost 4, of "pw"), made once.
    fn hash() -> String {
        bcrypt::hash("pw", 4).unwrap_or_default()
    }

    fn ok(text: &str) -> WebConfig {
        match parse(text, Path::new("/etc/bilge")) {
            Ok(c) => c,
            Err(e) => panic!("{text} was refused: {e}"),
        }
    }

    fn refused(text: &str) -> String {
        match parse(text, Path::new("/etc/bilge")) {
            Ok(c) => panic!("{text} was accepted: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn an_empty_file_is_plain_http_without_users() {
        assert_eq!(ok(""), WebConfig::default());
        assert_eq!(ok("# nothing yet\n"), WebConfig::default());
        assert_eq!(ok("tls_server_config: {}\n"), WebConfig::default());
    }

    #[test]
    fn a_node_exporter_file_is_read_with_paths_from_its_directory() {
        let c = ok(&format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  min_version: TLS13\nbasic_auth_users:\n  prometheus: {}\n",
            hash()
        ));
        let Some(tls) = c.tls else { panic!("no TLS") };
        assert_eq!(tls.cert, Pem::File("/etc/bilge/server.crt".into()));
        assert_eq!(tls.key, Pem::File("/abs/server.key".into()));
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(tls.max_version, TlsVersion::Tls13);
        assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
        assert!(tls.prefer_server_order);
        assert!(c.users.contains_key("prometheus"));
    }

    #[test]
    fn client_certificates_need_a_ca_exactly_when_they_are_verified() {
        let c = ok(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
        );
        assert_eq!(
            c.tls.map(|t| (t.client_auth, t.client_ca)),
            Some((
                ClientAuth::RequireAndVerifyClientCert,
                Some(Pem::File("/etc/bilge/ca.crt".into()))
            ))
        );
        assert!(
            refused("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: VerifyClientCertIfGiven\n")
                .contains("needs client_ca_file")
        );
        assert!(
            refused(
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: ca.crt\n"
            )
            .contains("RequireAndVerifyClientCert")
        );
        assert!(
            refused(
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Always\n"
            )
            .contains("is not one of")
        );
    }

    #[test]
    fn mistakes_and_unsupported_keys_are_refused_with_what_to_do() {
        for (text, says) in [
            ("tls_server_config:\n  cert_file: a\n", "needs key_file"),
            ("tls_server_config:\n  key_file: a\n", "needs cert_file"),
            (
                "tls_server_config:\n  cert_file: a\n  cert: x\n  key_file: b\n",
                "not both",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
                "TLS 1.2 and 1.3 only",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
                "above max_version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "cipher_suites is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [X25519]\n",
                "curve_preferences is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n",
                "client_allowed_sans is not supported",
            ),
            (
                "tls_server_config:\n  cert_flie: a\n",
                "unknown field `cert_flie`",
            ),
            ("http_server_config:\n  http2: true\n", "HTTP/1.1 only"),
            (
                "http_server_config:\n  keepalive: 3\n",
                "unknown field `keepalive`",
            ),
            (
                "http_server_config:\n  headers:\n    Server: bilge\n",
                "cannot be set",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "deny, sameorigin",
            ),
            (
                "rate_limit:\n  interval: 1s\n  burst: 2\n",
                "rate_limit is not supported",
            ),
            ("basic_auth_users:\n  alice: hunter2\n", "not a bcrypt hash"),
            ("basic_auth_userz: {}\n", "unknown field `basic_auth_userz`"),
            ("- a list\n", "not a web configuration"),
        ] {
            let e = refused(text);
            assert!(e.contains(says), "{text:?}: {e:?} does not say {says:?}");
        }
        let e = refused(&format!("basic_auth_users:\n  'a:b': {}\n", hash()));
        assert!(e.contains("without ':'"), "{e}");
    }

    #[test]
    fn security_headers_are_added_as_written() {
        let c = ok(
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"default-src 'self'\"\n    X-XSS-Protection: ''\n",
        );
        let names: Vec<&str> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-security-policy", "x-frame-options"]);
    }
}
