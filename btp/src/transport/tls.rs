//! TLS for `btp+wss` (rustls through tokio-rustls, ring provider).
//!
//! **Server** ([`TlsServerConfig`]): the legacy `listener: {cert, key, ca}` options are PEM file paths. The
//! ilp-bridge configuration requires `ca` with `cert` and `key` (the legacy listener silently never starts
//! without it, so a legacy configuration without `ca` never served TLS); this type also takes none, for other
//! callers. The `ca` certificates are appended to the chain the server presents (after the ones in `cert`, skipping duplicates),
//! which is what Node/OpenSSL does with a `ca` that holds intermediates. Client certificates are never asked
//! for: peers authenticate with the BTP auth handshake.
//!
//! **Client** ([`TlsClientConfig`]): trusts the Mozilla root set compiled into `webpki-roots` (the same on
//! every machine, independent of the OS store) plus, optionally, extra CA certificates from a PEM file (the
//! counterpart of legacy `NODE_EXTRA_CA_CERTS`, and the way to trust a self-signed peer).

use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use thiserror::Error;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why a TLS configuration could not be built.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file is larger than [`MAX_PEM_FILE_BYTES`] (or never ends, as `/dev/zero`): not a certificate or
    /// key file.
    #[error("{path} is larger than {MAX_PEM_FILE_BYTES} bytes: not a PEM certificate or key file")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// PEM text could not be parsed.
    #[error("invalid pem in {what}: {source}")]
    Pem {
        /// Which input (`cert`, `key`, `ca`).
        what: &'static str,
        /// The parse error.
        source: std::io::Error,
    },
    /// The certificate input holds no certificate.
    #[error("no certificate found in {0}")]
    NoCertificate(&'static str),
    /// The key input holds no private key.
    #[error("no private key found")]
    NoPrivateKey,
    /// rustls refused the certificate, key or a CA certificate.
    #[error("tls configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Largest PEM file read (certificate chains, keys, CA bundles): Mozilla's whole root set as PEM is about
/// 220 KiB.
pub const MAX_PEM_FILE_BYTES: u64 = 4 << 20;

/// Reads a PEM file, at most [`MAX_PEM_FILE_BYTES`]: a larger file, or one that never ends, is refused after
/// reading one byte more than that.
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read as _;
    let read_error = |source| TlsError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(TlsError::TooLarge {
            path: path.display().to_string(),
        });
    }
    Ok(bytes)
}

fn parse_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what));
    }
    Ok(certs)
}

/// Server-side TLS settings for a BTP listener. Cheap to clone.
#[derive(Clone)]
pub struct TlsServerConfig {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServerConfig")
    }
}

impl TlsServerConfig {
    /// Reads the legacy `listener.cert`, `listener.key` and `listener.ca` PEM files (`ca` may be `None` here;
    /// the ilp-bridge configuration always gives it).
    pub fn from_pem_files(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<Self, TlsError> {
        let ca = ca.map(read_file).transpose()?;
        Self::from_pem(&read_file(cert)?, &read_file(key)?, ca.as_deref())
    }

    /// Builds from PEM text: a certificate chain, a private key (PKCS#8, PKCS#1 or SEC1) and optional extra
    /// chain certificates.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, TlsError> {
        let mut chain = parse_certs(cert_pem, "cert")?;
        if let Some(ca_pem) = ca_pem {
            for cert in parse_certs(ca_pem, "ca")? {
                if !chain.contains(&cert) {
                    chain.push(cert);
                }
            }
        }
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut BufReader::new(key_pem))
            .map_err(|source| TlsError::Pem {
                what: "key",
                source,
            })?
            .ok_or(TlsError::NoPrivateKey)?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// Uses a ready rustls configuration.
    pub fn from_rustls(config: Arc<ServerConfig>) -> Self {
        TlsServerConfig {
            acceptor: TlsAcceptor::from(config),
        }
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Client-side TLS settings for `btp+wss` URLs. Cheap to clone.
#[derive(Clone)]
pub struct TlsClientConfig {
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClientConfig")
    }
}

fn webpki_root_store() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

impl TlsClientConfig {
    /// Trusts the `webpki-roots` Mozilla set only. Built once per process.
    pub fn webpki_roots() -> Self {
        static DEFAULT: OnceLock<TlsClientConfig> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                Self::with_roots(webpki_root_store())
                    .expect("the ring provider supports the safe default protocol versions")
            })
            .clone()
    }

    /// Trusts the `webpki-roots` set plus every certificate in `ca_pem` (PEM text).
    pub fn with_extra_ca_pem(ca_pem: &[u8]) -> Result<Self, TlsError> {
        let mut roots = webpki_root_store();
        for cert in parse_certs(ca_pem, "ca")? {
            roots.add(cert)?;
        }
        Self::with_roots(roots)
    }

    /// Trusts the `webpki-roots` set plus every certificate in the PEM file at `path`.
    pub fn with_extra_ca_file(path: &Path) -> Result<Self, TlsError> {
        Self::with_extra_ca_pem(&read_file(path)?)
    }

    /// Uses a ready rustls configuration.
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        TlsClientConfig {
            connector: TlsConnector::from(config),
        }
    }

    fn with_roots(roots: RootCertStore) -> Result<Self, TlsError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::from_rustls(Arc::new(config)))
    }

    pub(crate) fn connector(&self) -> &TlsConnector {
        &self.connector
    }
}

impl Default for TlsClientConfig {
    fn default() -> Self {
        Self::webpki_roots()
    }
}
