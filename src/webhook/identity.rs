//! The names this host answers to in an alert's `instance` label: `--webhook.instance` when
//! given, else the hostname, every interface address and the loopback names, each with the
//! listen port, as Prometheus would write the scrape target. Compared case-insensitively.

use std::collections::HashSet;
use std::net::SocketAddr;

/// The `instance` values that name this host (lower-cased).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identities(HashSet<String>);

impl Identities {
    /// `configured` when given; else hostname, interface addresses and loopback names, each
    /// with the listen port.
    pub fn new(configured: &[String], listen: SocketAddr) -> Identities {
        let names: Vec<String> = if configured.iter().any(|c| !c.trim().is_empty()) {
            configured.iter().map(|c| c.trim().to_string()).collect()
        } else {
            default_identities(listen.port())
        };
        Identities(
            names
                .into_iter()
                .filter(|n| !n.is_empty())
                .map(|n| n.to_ascii_lowercase())
                .collect(),
        )
    }

    /// Exactly these names (for tests).
    pub fn of(names: &[&str]) -> Identities {
        Identities(names.iter().map(|n| n.to_ascii_lowercase()).collect())
    }

    /// True when `instance` names this host.
    pub fn matches(&self, instance: &str) -> bool {
        self.0.contains(&instance.trim().to_ascii_lowercase())
    }

    /// One name, for the relay header and logs.
    pub fn first(&self) -> String {
        let mut v: Vec<&String> = self.0.iter().collect();
        v.sort();
        v.first().map(|s| s.to_string()).unwrap_or_default()
    }
}

/// Hostname, every interface address and the loopback names, with `port`.
fn default_identities(port: u16) -> Vec<String> {
    let mut v = vec![
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    if let Some(h) = crate::host::hostname() {
        v.push(format!("{h}:{port}"));
    }
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => {
            for a in addrs {
                let Some(addr) = a.address else { continue };
                if let Some(v4) = addr.as_sockaddr_in() {
                    v.push(format!("{}:{port}", v4.ip()));
                } else if let Some(v6) = addr.as_sockaddr_in6() {
                    v.push(format!("[{}]:{port}", v6.ip()));
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this host's addresses for --webhook.instance; set it explicitly")
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_identities_include_loopback_with_the_listen_port() {
        let ids = Identities::new(
            &[],
            "0.0.0.0:9830".parse().unwrap_or_else(|_| unreachable!()),
        );
        for n in ["localhost:9830", "127.0.0.1:9830", "[::1]:9830"] {
            assert!(ids.matches(n), "{n}");
        }
        assert!(!ids.matches("127.0.0.1:9831"));
        let only = Identities::new(
            &["ci-7:9830".into()],
            "0.0.0.0:9830".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(only.matches("ci-7:9830") && !only.matches("localhost:9830"));
    }
}
