//! Forwarding alerts for other fleet members to their bilge: the one HTTP client, the
//! `X-Bilge-Relayed` header and the bounds.
//!
//! [`Relayer::perform`] takes the relays [`decide`](super::decide()) chose ([`Forward`]s, one per
//! listed member) and posts each to the member's webhook URL, built from the targets file
//! ([`super::targets`]), never from the alert. Each carries the delivery as received but with
//! only that member's alerts, the credential the delivery was authenticated with, and an
//! `X-Bilge-Relayed` header naming this host, so the receiver never relays it again.
//!
//! The client trusts no one by default:
//! - rustls only (the `ring` provider); an https member is verified against
//!   `--webhook.relay-ca-file` or, without it, the system's roots;
//! - no redirect is followed (a 3xx is a failed relay), no proxy is used, no connection is kept;
//! - each relay takes at most [`RELAY_TIMEOUT`] (connecting at most [`RELAY_CONNECT_TIMEOUT`]),
//!   and all the relays of one delivery together at most [`RELAY_DEADLINE`];
//! - at most [`RELAYS_PER_DELIVERY`] relays of one delivery, and [`RELAYS_IN_FLIGHT`] of all
//!   deliveries, run at once;
//! - the member's answer is never read: only its status counts. What went wrong goes to the
//!   log (in the delivery's one summary line), never to the sender, who is told `relayed` or
//!   `relay failed` and nothing else: bilge is no oracle for what answers where.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::sync::Semaphore;

use super::payload::RawDelivery;
use super::targets::{Target, TargetsFile};
use super::tokens::Credential;

/// The header that marks a request relayed by another bilge (its value names the relayer).
pub const RELAYED_HEADER: &str = "x-bilge-relayed";
/// Longest time one relay may take, connecting included.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time connecting to a member may take.
pub const RELAY_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time all the relays of one delivery may take together; relays still waiting then fail.
pub const RELAY_DEADLINE: Duration = Duration::from_secs(20);
/// Most relays of one delivery in flight at once.
pub const RELAYS_PER_DELIVERY: usize = 8;
/// Most relays of all deliveries in flight at once.
pub const RELAYS_IN_FLIGHT: usize = 32;

/// How `--webhook.relay` runs, assembled at start-up.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The fleet members alerts may be relayed to (`--webhook.relay-targets`).
    pub targets: Arc<TargetsFile>,
    /// What an https member is verified against.
    pub tls: Arc<rustls::ClientConfig>,
}

/// Reads `--webhook.relay-ca-file`: one or more PEM certificates.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The TLS configuration of relays: trust `ca` when given, else the system's roots (as
/// `bilge build --server` does). A CA that rustls cannot use is an error.
pub fn client_tls(ca: Option<&[CertificateDer<'static>]>) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(crate::web::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match ca {
        Some(certs) => {
            builder.with_root_certificates(crate::web::tls::root_store(certs.iter().cloned())?)
        }
        None => {
            let roots = crate::web::tls::system_roots();
            if roots.is_empty() {
                tracing::warn!(
                    "no system CA certificates found: relays to https members will fail; give --webhook.relay-ca-file"
                );
            }
            builder.with_root_certificates(roots)
        }
    };
    Ok(builder.with_no_client_auth())
}

/// One relay to make: a listed member and the indices of the delivery's alerts that go there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The member, from the targets file.
    pub target: Target,
    /// Indices into the delivery's `alerts`, in their order.
    pub alerts: Vec<usize>,
}

/// What came of one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The member took the delivery (a 2xx answer).
    Delivered,
    /// It did not, and why (for this host's log only).
    Failed(String),
}

/// What a member's answer status means for the relay.
pub fn judge(status: StatusCode) -> Outcome {
    if status.is_success() {
        Outcome::Delivered
    } else if status.is_redirection() {
        Outcome::Failed(format!("answered {status}; redirects are not followed"))
    } else {
        Outcome::Failed(format!("answered {status}"))
    }
}

/// An error and its causes on one line, clipped as alert text is.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    super::payload::clip(&text).into_owned()
}

/// Sends relays: the HTTP client, the name to put in the header and the global bound.
#[derive(Debug, Clone)]
pub struct Relayer {
    /// The client (see the module doc); or why it could not be built.
    client: Result<reqwest::Client, String>,
    /// This host's name, the value of [`RELAYED_HEADER`].
    from: HeaderValue,
    /// Permits for relays in flight, shared by every delivery.
    in_flight: Arc<Semaphore>,
}

impl Relayer {
    /// A relayer that verifies https members with `tls` and names itself `from`.
    pub fn new(tls: &rustls::ClientConfig, from: &str) -> Relayer {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(RELAY_TIMEOUT)
            .connect_timeout(RELAY_CONNECT_TIMEOUT)
            // Relays go host to host inside the fleet, never through an HTTP proxy.
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| {
                // Building fails only when the system's resolver setup cannot load; every
                // relay then fails with this error instead of bilge not starting.
                tracing::warn!(error = %e, "cannot build the HTTP client for --webhook.relay");
                format!("no HTTP client: {e}")
            });
        Relayer {
            client,
            from: HeaderValue::from_str(from).unwrap_or(HeaderValue::from_static("bilge")),
            in_flight: Arc::new(Semaphore::new(RELAYS_IN_FLIGHT)),
        }
    }

    /// Performs `forwards` for the delivery `raw`, presenting `credential`; each comes back with
    /// its outcome (in the order they finished).
    pub async fn perform(
        &self,
        raw: &RawDelivery,
        forwards: Vec<Forward>,
        credential: &Credential,
    ) -> Vec<(Forward, Outcome)> {
        let bearer = [b"Bearer ".as_slice(), credential.as_bytes()].concat();
        let auth = HeaderValue::from_bytes(&bearer).map(|mut v| {
            v.set_sensitive(true);
            v
        });
        let deadline = tokio::time::Instant::now() + RELAY_DEADLINE;
        let auth = &auth;
        futures_util::stream::iter(forwards)
            .map(|f| async move {
                let outcome = match auth {
                    Ok(auth) => {
                        let send = self.send(&f.target, raw.body_for(&f.alerts), auth);
                        tokio::time::timeout_at(deadline, send)
                            .await
                            .unwrap_or_else(|_| {
                                Outcome::Failed(format!(
                                    "not sent within the delivery's {}s for relays",
                                    RELAY_DEADLINE.as_secs()
                                ))
                            })
                    }
                    Err(_) => Outcome::Failed(
                        "the delivery's credential cannot be sent in a header".into(),
                    ),
                };
                (f, outcome)
            })
            .buffer_unordered(RELAYS_PER_DELIVERY)
            .collect()
            .await
    }

    /// Posts `body` to `target`'s webhook and says what came of it; the answer is not read.
    async fn send(&self, target: &Target, body: Vec<u8>, auth: &HeaderValue) -> Outcome {
        let client = match &self.client {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e.clone()),
        };
        // The semaphore is never closed, so acquiring only waits.
        let Ok(_permit) = self.in_flight.acquire().await else {
            return Outcome::Failed("relays are shutting down".into());
        };
        let sent = client
            .post(target.url())
            .header(AUTHORIZATION, auth.clone())
            .header(RELAYED_HEADER, self.from.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(answer) => judge(answer.status()),
            Err(e) => Outcome::Failed(describe(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[test]
    fn only_a_2xx_answer_is_a_relay_and_a_redirect_is_not_followed() {
        assert_eq!(judge(StatusCode::OK), Outcome::Delivered);
        assert_eq!(judge(StatusCode::ACCEPTED), Outcome::Delivered);
        assert_eq!(
            judge(StatusCode::FOUND),
            Outcome::Failed("answered 302 Found; redirects are not followed".into())
        );
        assert_eq!(
            judge(StatusCode::UNAUTHORIZED),
            Outcome::Failed("answered 401 Unauthorized".into())
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_what_to_write() {
        let p = std::env::temp_dir().join(format!("bilge-ca-{}.pem", std::process::id()));
        std::fs::write(&p, "not a certificate\n").unwrap();
        let e = read_ca_file(&p).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_file(&p);
        let e = read_ca_file(std::path::Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    /// A relayer as `bilge serve` makes one, trusting the system's roots.
    fn relayer() -> Relayer {
        Relayer::new(&client_tls(None).unwrap(), "web1:9830")
    }

    /// A delivery of `n` alerts, as parsed.
    fn delivery(n: usize) -> super::super::payload::Delivery {
        let alerts = vec!["{}"; n].join(",");
        super::super::payload::parse(format!(r#"{{"alerts": [{alerts}]}}"#).as_bytes(), 64).unwrap()
    }

    /// Loopback members that each hold a request for `hold` before answering 200, and the
    /// highest number of requests they held at once.
    async fn slow_members(n: usize, hold: Duration) -> (Vec<Forward>, Arc<AtomicUsize>) {
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut forwards = Vec::new();
        for i in 0..n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = l.local_addr().unwrap().to_string();
            let (now, most) = (now.clone(), most.clone());
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(held, Ordering::SeqCst);
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(hold).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
            forwards.push(Forward {
                target: Target {
                    scheme: super::super::targets::Scheme::Http,
                    address,
                },
                alerts: vec![i],
            });
        }
        (forwards, most)
    }

    #[tokio::test]
    async fn at_most_eight_relays_of_one_delivery_are_in_flight_at_once() {
        let (forwards, most) = slow_members(20, Duration::from_millis(300)).await;
        let done = relayer()
            .perform(&delivery(20).raw, forwards, &Credential::new("t"))
            .await;
        assert_eq!(done.len(), 20);
        assert!(
            done.iter().all(|(_, o)| *o == Outcome::Delivered),
            "{done:?}"
        );
        let most = most.load(Ordering::SeqCst);
        assert!(
            (2..=RELAYS_PER_DELIVERY).contains(&most),
            "{most} relays were in flight at once"
        );
    }

    #[tokio::test]
    async fn a_member_that_answers_with_an_endless_body_is_not_read() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\n";
                    if s.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    while s.write_all(&chunk).await.is_ok() {}
                });
            }
        });
        let forward = Forward {
            target: Target {
                scheme: super::super::targets::Scheme::Http,
                address,
            },
            alerts: vec![0],
        };
        let start = std::time::Instant::now();
        let done = relayer()
            .perform(&delivery(1).raw, vec![forward], &Credential::new("t"))
            .await;
        assert_eq!(done[0].1, Outcome::Delivered);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn the_system_roots_make_a_tls_configuration() {
        // Debian's ca-certificates is installed on the build machines; without it this still
        // builds (and warns), and https relays fail.
        assert!(client_tls(None).is_ok());
    }
}
