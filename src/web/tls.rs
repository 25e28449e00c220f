//! TLS with rustls and its `ring` provider: the server's configuration built from a checked
//! [`TlsPlan`], the client-certificate policies Go names, and what bilge's own clients trust
//! (`bilge build --server https://…` and `bilge healthcheck`).
//!
//! Every reader of PEM here says which file held nothing usable. A key that does not belong to
//! its certificate is refused (rustls compares them), so a half-replaced pair never goes live.

use std::sync::{Arc, Once};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::config::{ClientAuth, Pem, TlsPlan, TlsVersion};

/// The crypto provider of every TLS endpoint: rustls's `ring` backend.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process's default provider, once, so that any rustls user that asks for the
/// default (reqwest builds its clients that way) finds one instead of panicking. Harmless when
/// called again or when another provider is already installed.
pub fn install_default_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only means a default was already installed: that one stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The certificates of a PEM document; at least one.
pub fn certificates(pem: &Pem, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = pem.read()?;
    parse_certificates(&bytes, &pem.describe(what))
}

/// The certificates in PEM `bytes`, named `source` in errors; at least one.
pub fn parse_certificates(
    bytes: &[u8],
    source: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{source}: not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err(format!(
            "{source} holds no certificate (a PEM \"BEGIN CERTIFICATE\" block)"
        ));
    }
    Ok(certs)
}

/// The private key of a PEM document (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = pem.read()?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        format!(
            "{} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            pem.describe("key")
        )
    })
}

/// A root store of every certificate in `pem`.
fn roots(pem: &Pem, what: &str) -> Result<RootCertStore, String> {
    root_store(certificates(pem, what)?).map_err(|e| format!("{}: {e}", pem.describe(what)))
}

/// A root store of exactly `certs`: the trust of every client and server that is given its own CA
/// certificates (a client CA, `--server.ca-file`, `--webhook.relay-ca-file`, Docker's `ca.pem`).
pub fn root_store(
    certs: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in certs {
        store
            .add(c)
            .map_err(|e| format!("not a usable CA certificate ({e})"))?;
    }
    Ok(store)
}

/// The protocol versions from `min` to `max`.
fn versions(min: TlsVersion, max: TlsVersion) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if min <= TlsVersion::Tls13 && max >= TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    if min <= TlsVersion::Tls12 && max >= TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// Reads the plan's files and builds the server's TLS configuration (HTTP/1.1 over ALPN).
pub fn server_config(plan: &TlsPlan) -> Result<rustls::ServerConfig, String> {
    let provider = provider();
    let certs = certificates(&plan.cert, "cert")?;
    let key = private_key(&plan.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(plan.min_version, plan.max_version))
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let verifier: Arc<dyn ClientCertVerifier> = match (plan.client_auth, &plan.client_ca) {
        (ClientAuth::NoClientCert, _) => Arc::new(rustls::server::NoClientAuth),
        (ClientAuth::RequestClientCert, _) => Arc::new(AnyClientCert {
            mandatory: false,
            algorithms: provider.signature_verification_algorithms,
        }),
        (ClientAuth::RequireAnyClientCert, _) => Arc::new(AnyClientCert {
            mandatory: true,
            algorithms: provider.signature_verification_algorithms,
        }),
        (policy, Some(ca)) => {
            let builder = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca, "client_ca")?),
                provider.clone(),
            );
            let builder = if policy.requires() {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            builder
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
        }
        (policy, None) => {
            return Err(format!(
                "tls_server_config.client_auth_type {} needs client_ca_file",
                policy.as_str()
            ));
        }
    };
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {} do not make a certificate and its key: {e}",
                plan.cert.describe("cert"),
                plan.key.describe("key")
            )
        })?;
    config.ignore_client_order = plan.prefer_server_order;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Go's `RequestClientCert` and `RequireAnyClientCert`: a client certificate is asked for (and
/// with `mandatory` required) and its handshake signature checked, but no CA vouches for it.
#[derive(Debug)]
struct AnyClientCert {
    /// Whether a certificate is required.
    mandatory: bool,
    /// The provider's signature algorithms.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The system's CA certificates, found where curl and the docker CLI find them (Debian's
/// ca-certificates bundle, `SSL_CERT_FILE`, `SSL_CERT_DIR`). Possibly none: a scratch image or a
/// slim CI image has no bundle, and then plain http still works and an https server fails its
/// verification with an unknown-issuer error, rather than the client failing to be built.
pub fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (_added, _unparsable) = store.add_parsable_certificates(found.certs);
    store
}

/// What a client of bilge's own server trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The system's CA certificates ([`system_roots`]).
    System,
    /// Only these CA certificates (`--server.ca-file`).
    Roots(Vec<CertificateDer<'static>>),
    /// Exactly this server certificate, whatever names it carries: `bilge healthcheck` talking
    /// to its own server over loopback, with the certificate that server is configured to show.
    Pinned(CertificateDer<'static>),
}

/// A reqwest client builder that trusts `trust` and, when given, presents a client
/// certificate (`identity`: chain and key).
pub fn client_builder(
    trust: &Trust,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<reqwest::ClientBuilder, String> {
    install_default_provider();
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(TlsVersion::Tls12, TlsVersion::Tls13))
        .map_err(|e| e.to_string())?;
    let builder = match trust {
        Trust::System => builder.with_root_certificates(system_roots()),
        Trust::Roots(certs) => builder.with_root_certificates(root_store(certs.iter().cloned())?),
        Trust::Pinned(cert) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer {
                cert: cert.clone(),
                algorithms: provider.signature_verification_algorithms,
            })),
    };
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the client certificate and key do not match: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(reqwest::Client::builder().tls_backend_preconfigured(config))
}

/// Trusts one exact end-entity certificate (see [`Trust::Pinned`]); handshake signatures are
/// still checked, so only the holder of its key can answer.
#[derive(Debug)]
struct PinnedServer {
    /// The certificate the server must present.
    cert: CertificateDer<'static>,
    /// The provider's signature algorithms.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server does not present the certificate of its web config file".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_says_so() {
        let e = parse_certificates(b"hello\n", "ca.pem").unwrap_err();
        assert!(e.contains("ca.pem holds no certificate"), "{e}");
        let e = private_key(&Pem::Inline("-----BEGIN CERTIFICATE-----\n".into())).unwrap_err();
        assert!(e.contains("no usable private key"), "{e}");
    }

    #[test]
    fn versions_run_from_the_minimum_to_the_maximum() {
        assert_eq!(versions(TlsVersion::Tls12, TlsVersion::Tls13).len(), 2);
        assert_eq!(
            versions(TlsVersion::Tls13, TlsVersion::Tls13)[0].version,
            rustls::ProtocolVersion::TLSv1_3
        );
        assert_eq!(
            versions(TlsVersion::Tls12, TlsVersion::Tls12)[0].version,
            rustls::ProtocolVersion::TLSv1_2
        );
    }
}
