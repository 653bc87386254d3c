//! Running one check: an HTTP(S) GET that must answer 2xx, or a TCP connect.
//!
//! Every HTTP check opens its own connection (and closes it after the status line): a check
//! then tests what a new client meets, accept queue and TLS handshake included, rather than a
//! pooled connection that may outlive the listener's health. HTTPS uses rustls with the
//! aws-lc-rs provider, as the rest of the workspace does. Certificates are verified against
//! the system's roots (read once, at the first HTTPS check: `rustls-native-certs`, the same
//! store reqwest's platform verifier reads on Linux) plus the CA certificates of
//! `check_ca_cert`; a check with `tls_skip_verify` accepts any certificate.

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header, uri::Scheme};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::OnceCell,
};
use tokio_rustls::TlsConnector;
use waypost_model::Check;

use crate::SidecarError;

/// Runs checks; holds the TLS settings they share.
#[derive(Debug)]
pub(crate) struct Prober {
    provider: Arc<CryptoProvider>,
    /// CA certificates of `check_ca_cert`, trusted besides the system's.
    extra_roots: Vec<CertificateDer<'static>>,
    /// Verifying configuration, built at the first HTTPS check that needs it.
    verified: OnceCell<Arc<ClientConfig>>,
    /// For `tls_skip_verify`.
    unverified: Arc<ClientConfig>,
}

impl Prober {
    /// Reads `ca` (PEM) if given; the system's roots are read later, only if an HTTPS check
    /// runs.
    pub(crate) fn new(ca: Option<&Path>) -> Result<Self, SidecarError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let extra_roots = match ca {
            None => Vec::new(),
            Some(path) => {
                let fail = |detail: String| SidecarError::CheckCa {
                    path: path.display().to_string(),
                    detail,
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| fail(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| fail(e.to_string()))?;
                if certs.is_empty() {
                    return Err(fail("no PEM certificate in the file".into()));
                }
                // Fails early on a certificate rustls cannot use as a root.
                let mut roots = RootCertStore::empty();
                for cert in &certs {
                    roots.add(cert.clone()).map_err(|e| fail(e.to_string()))?;
                }
                certs
            }
        };
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| SidecarError::CheckTls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                provider: provider.clone(),
            }))
            .with_no_client_auth();
        Ok(Self {
            provider,
            extra_roots,
            verified: OnceCell::new(),
            unverified: Arc::new(with_http1(unverified)),
        })
    }

    /// Runs `check` once, within `timeout`: `Ok` when it passes, else what went wrong.
    pub(crate) async fn probe(&self, check: &Check, timeout: Duration) -> Result<(), String> {
        match (&check.http, &check.tcp) {
            (Some(url), _) => {
                match tokio::time::timeout(timeout, self.get(url, check.tls_skip_verify)).await {
                    Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
                    Ok(Err(err)) => Err(format!("GET {url}: {err}")),
                    Ok(Ok(status)) if status.is_success() => Ok(()),
                    Ok(Ok(status)) => Err(format!("GET {url}: {status}")),
                }
            }
            (None, Some(addr)) => {
                match tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await {
                    Err(_) => Err(format!("connect {addr}: no answer within {timeout:?}")),
                    Ok(Err(err)) => Err(format!("connect {addr}: {err}")),
                    Ok(Ok(_)) => Ok(()),
                }
            }
            (None, None) => Ok(()),
        }
    }

    /// One GET on a new connection; the status of the answer.
    async fn get(&self, url: &str, skip_verify: bool) -> Result<StatusCode, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let authority = uri.authority().ok_or("the URL has no host")?.clone();
        // `Uri::host` keeps an IPv6 address's brackets; connecting and TLS want it bare.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, authority.as_str())
            .header(header::USER_AGENT, "waypost-sidecar")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // Small request, answer awaited at once: no reason to wait for more to send.
        let _ = tcp.set_nodelay(true);
        if !https {
            return exchange(tcp, request).await;
        }
        let config = if skip_verify {
            self.unverified.clone()
        } else {
            self.verified().await?
        };
        let name = ServerName::try_from(host).map_err(|e| format!("TLS server name: {e}"))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(tls, request).await
    }

    /// The verifying configuration: the system's roots and `check_ca_cert`'s.
    async fn verified(&self) -> Result<Arc<ClientConfig>, String> {
        self.verified
            .get_or_try_init(|| async {
                let provider = self.provider.clone();
                let extra = self.extra_roots.clone();
                // Reading the system's store is blocking file I/O (a few hundred files).
                tokio::task::spawn_blocking(move || verifying_config(provider, extra))
                    .await
                    .map_err(|e| format!("loading the system's CA certificates: {e}"))?
            })
            .await
            .cloned()
    }
}

fn verifying_config(
    provider: Arc<CryptoProvider>,
    extra: Vec<CertificateDer<'static>>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::warn!(%err, "reading the system's CA certificates for HTTPS checks");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system CA certificates for HTTPS checks");
    for cert in extra {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(with_http1(config)))
}

/// Checks speak HTTP/1.1: offered by ALPN, so that a server preferring HTTP/2 does not pick it.
fn with_http1(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Sends `request` over `io` (HTTP/1.1) and returns the answer's status; the connection is
/// dropped with the body unread.
async fn exchange<S>(io: S, request: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    // The connection is driven here, beside the request, not by a spawned task: when this
    // future ends (answered, or cut off by the check's timeout) the connection goes with it.
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        answer = sender.send_request(request) => {
            answer.map(|r| r.status()).map_err(|e| e.to_string())
        }
        ended = &mut connection => Err(match ended {
            Ok(()) => "the connection closed without an answer".to_owned(),
            Err(e) => e.to_string(),
        }),
    }
}

/// `tls_skip_verify`: any certificate is accepted. The handshake's signatures are still
/// checked against the certificate presented, so the connection is encrypted to whoever holds
/// that certificate's key; who that is, nothing says.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
