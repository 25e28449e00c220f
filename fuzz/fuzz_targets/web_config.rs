//! Fuzzes the web configuration parser, `bilge::web::config::parse`: exporter-toolkit's YAML
//! (`--web.config.file`), re-read whenever the file changes, so a bad edit must be refused with
//! a message, never crash the server.
//!
//! Promises checked on every file it accepts, besides "no panic" and no runaway (YAML aliases
//! must not expand without bound): a TLS plan offers versions in order; a client CA is there
//! exactly when the client auth policy verifies certificates; every certificate, key and CA file
//! is an absolute path (relative ones resolved against the file's directory); inline PEM is not
//! blank; user names are non-empty and have no `:` (basic auth could not carry them); the
//! headers are among the five exporter-toolkit allows; parsing is deterministic.

#![no_main]

use std::path::Path;

use bilge::web::config::{Pem, WebConfig, parse};
use libfuzzer_sys::fuzz_target;

/// The headers a file may set (compared case-insensitively: header names are lower-cased).
const HEADERS: [&str; 5] = [
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "x-xss-protection",
    "strict-transport-security",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = Path::new("/etc/bilge");
    let Ok(c) = parse(text, dir) else {
        return;
    };
    check(&c);
    assert_eq!(parse(text, dir), Ok(c), "parsing twice differs");
});

/// Asserts the promises on one accepted configuration.
fn check(c: &WebConfig) {
    if let Some(tls) = &c.tls {
        assert!(tls.min_version <= tls.max_version, "{tls:?}");
        assert_eq!(
            tls.client_auth.verifies(),
            tls.client_ca.is_some(),
            "{tls:?}"
        );
        for pem in [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
            .into_iter()
            .flatten()
        {
            match pem {
                Pem::File(p) => assert!(p.is_absolute(), "{p:?}"),
                Pem::Inline(s) => assert!(!s.trim().is_empty(), "blank inline PEM"),
            }
        }
    }
    for user in c.users.keys() {
        assert!(!user.is_empty() && !user.contains(':'), "user {user:?}");
    }
    for (name, _) in &c.headers {
        assert!(HEADERS.contains(&name.as_str()), "header {name}");
    }
}
