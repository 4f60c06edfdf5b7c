//! The host's cryptographic identity and the TLS configurations built from it.
//!
//! On first run the host generates a self-signed certificate (rcgen, ECDSA P-256) and keeps it in
//! the data directory as PEM (`tls-cert.pem`, `tls-key.pem`; the key is mode 0600 on unix). Every
//! later run reuses it, so share links stay valid across restarts.
//!
//! Remotes do not use a CA: the share link carries the SHA-256 fingerprint of the certificate and
//! the client accepts exactly that certificate ([`client_config_pinned`]). Hostname and validity
//! dates are deliberately ignored — the pin is the trust anchor — but the handshake signatures are
//! still verified, so only the holder of the private key can complete the handshake.
//!
//! Both configurations use the ring provider explicitly (`builder_with_provider`), so nothing
//! depends on a process-wide default provider being installed.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the certificate (PEM) in the data directory.
pub const CERT_FILE: &str = "tls-cert.pem";
/// File name of the private key (PEM, PKCS#8) in the data directory.
pub const KEY_FILE: &str = "tls-key.pem";

/// The host's certificate and key.
#[derive(Clone)]
pub struct Identity {
    /// The certificate, DER-encoded.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// Lower-case hex SHA-256 of `cert_der` (what share links pin).
    pub fingerprint: String,
}

impl fmt::Debug for Identity {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot {action} {path}: {error}")]
    Io { action: &'static str, path: PathBuf, error: std::io::Error },
    #[error("cannot generate the TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path} is not a valid PEM {what}: {detail}; delete {cert} and {key} in the data directory to generate a new certificate (existing share links will stop working)", cert = CERT_FILE, key = KEY_FILE)]
    BadPem { path: PathBuf, what: &'static str, detail: String },
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("invalid certificate fingerprint \"{0}\": expected 64 hex digits (SHA-256)")]
    BadFingerprint(String),
}

/// The pinned certificate did not match. Carried inside the rustls error of a refused handshake;
/// [`fingerprint_mismatch`] digs it out of an `io::Error`.
#[derive(Clone, PartialEq, Eq)]
pub struct FingerprintMismatch {
    /// The fingerprint from the link.
    pub expected: String,
    /// The fingerprint of the certificate the server presented.
    pub got: String,
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's certificate fingerprint did not match the link: expected sha256={}, got sha256={} \
             (the link is wrong or outdated, or someone is intercepting the connection)",
            self.expected, self.got
        )
    }
}

/// Debug prints the same sentence: rustls shows the inner error with `{:?}`.
impl fmt::Debug for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for FingerprintMismatch {}

/// The crypto provider used everywhere in roundtable.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Lower-case hex SHA-256 of a DER certificate.
pub fn fingerprint(cert_der: &[u8]) -> String {
    crate::token::hex(&Sha256::digest(cert_der))
}

/// Loads the identity from `data_dir`, generating and saving a new one if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<Identity, TlsError> {
    let cert_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let identity = load(&cert_path, &key_path)?;
            tracing::debug!(fingerprint = %identity.fingerprint, "loaded TLS identity");
            Ok(identity)
        }
        (cert_exists, key_exists) => {
            if cert_exists || key_exists {
                tracing::warn!(
                    "only one of {CERT_FILE} / {KEY_FILE} exists in {}; generating a new certificate (old links stop working)",
                    data_dir.display()
                );
            }
            std::fs::create_dir_all(data_dir).map_err(|error| TlsError::Io {
                action: "create",
                path: data_dir.to_path_buf(),
                error,
            })?;
            let (identity, cert_pem, key_pem) = generate()?;
            // Key first: a crash between the two writes leaves no certificate, which regenerates.
            write_file(&key_path, key_pem.as_bytes(), true)?;
            write_file(&cert_path, cert_pem.as_bytes(), false)?;
            tracing::info!(fingerprint = %identity.fingerprint, "generated a new self-signed TLS certificate");
            Ok(identity)
        }
    }
}

/// Generates a fresh self-signed identity (not saved). Returns it with its PEM texts.
pub fn generate() -> Result<(Identity, String, String), TlsError> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Some(host) = machine_hostname() {
        if !names.contains(&host) {
            names.push(host);
        }
    }
    let mut params = rcgen::CertificateParams::new(names.clone()).or_else(|e| {
        // A hostname rcgen refuses must not stop the host from starting.
        tracing::debug!("hostname not usable as a certificate name ({e}); using loopback names only");
        rcgen::CertificateParams::new(names[..3].to_vec())
    })?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "roundtable host");
    params.distinguished_name = dn;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let cert_der = cert.der().to_vec();
    let identity = Identity { fingerprint: fingerprint(&cert_der), cert_der, key_der: key.serialize_der() };
    Ok((identity, cert.pem(), key.serialize_pem()))
}

fn load(cert_path: &Path, key_path: &Path) -> Result<Identity, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| TlsError::Io { action: "read", path: path.to_path_buf(), error })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let cert = CertificateDer::from_pem_slice(&cert_pem).map_err(|e| TlsError::BadPem {
        path: cert_path.to_path_buf(),
        what: "certificate",
        detail: e.to_string(),
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadPem {
        path: key_path.to_path_buf(),
        what: "private key",
        detail: e.to_string(),
    })?;
    tighten_key_permissions(key_path);
    let cert_der = cert.to_vec();
    let identity = Identity { fingerprint: fingerprint(&cert_der), cert_der, key_der: key.secret_der().to_vec() };
    // Fails early (with a clear message) when the key does not belong to the certificate.
    server_config(&identity).map_err(|e| TlsError::BadPem {
        path: key_path.to_path_buf(),
        what: "private key for the certificate",
        detail: e.to_string(),
    })?;
    Ok(identity)
}

/// Writes a file atomically (temp file + rename); `secret` files are created with mode 0600.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), TlsError> {
    let tmp = path.with_extension("pem.tmp");
    let io = |action, error| TlsError::Io { action, path: path.to_path_buf(), error };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(|e| io("create", e))?;
    file.write_all(bytes).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("write", e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io("rename into place", e))
}

/// Resets a group/world-readable key file to 0600 (and says so).
fn tighten_key_permissions(key_path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(key_path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!("{} was readable by other users; setting its mode to 0600", key_path.display());
                if let Err(e) = std::fs::set_permissions(key_path, std::fs::Permissions::from_mode(0o600)) {
                    tracing::warn!("cannot change the mode of {}: {e}", key_path.display());
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = key_path;
}

/// The machine's host name, if it can be found and is a plausible DNS name.
fn machine_hostname() -> Option<String> {
    let candidates = [
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::fs::read_to_string("/etc/hostname").ok(),
        std::env::var("HOSTNAME").ok(),
        std::env::var("COMPUTERNAME").ok(),
    ];
    candidates.into_iter().flatten().map(|h| h.trim().to_ascii_lowercase()).find(|h| {
        !h.is_empty()
            && h.len() <= 253
            && h != "localhost"
            && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    })
}

/// Server configuration presenting `identity` (TLS 1.2 and 1.3, no client auth).
pub fn server_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert = CertificateDer::from(identity.cert_der.clone());
    let key = PrivateKeyDer::try_from(identity.key_der.clone())
        .map_err(|e| TlsError::Config(rustls::Error::General(format!("bad private key: {e}"))))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    Ok(Arc::new(config))
}

/// Client configuration that accepts exactly the certificate whose SHA-256 is `fingerprint`
/// (64 hex digits, either case).
pub fn client_config_pinned(fingerprint: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let expected = super::link::parse_fingerprint(fingerprint)
        .map_err(|_| TlsError::BadFingerprint(fingerprint.chars().take(80).collect()))?;
    let provider = provider();
    let verifier = Arc::new(PinnedCertVerifier { expected, provider: provider.clone() });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server name to hand to the TLS connector for `host`. Pinning ignores it, but rustls
/// needs one (and sends it as SNI for DNS names).
pub fn server_name(host: &str) -> ServerName<'static> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return ServerName::IpAddress(ip.into());
    }
    ServerName::try_from(bare.to_string()).unwrap_or_else(|_| ServerName::try_from("localhost").expect("valid name"))
}

/// Finds a [`FingerprintMismatch`] inside an error returned by a TLS connect (an `io::Error`
/// wrapping a `rustls::Error`), to show the user the clean message.
pub fn fingerprint_mismatch(err: &(dyn std::error::Error + 'static)) -> Option<FingerprintMismatch> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(m) = e.downcast_ref::<FingerprintMismatch>() {
            return Some(m.clone());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = fingerprint_mismatch(inner) {
                    return Some(found);
                }
            }
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) =
            e.downcast_ref::<rustls::Error>()
        {
            if let Some(m) = inner.downcast_ref::<FingerprintMismatch>() {
                return Some(m.clone());
            }
        }
        current = e.source();
    }
    None
}

/// Accepts exactly one certificate, identified by its SHA-256.
#[derive(Debug)]
struct PinnedCertVerifier {
    expected: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity.as_ref());
        if got == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = FingerprintMismatch { expected: self.expected.clone(), got };
            tracing::warn!("{mismatch}");
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(mismatch)))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let second = load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.cert_der, second.cert_der);
        assert_eq!(first.key_der, second.key_der);
    }

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_certificate_der() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(dir.path()).unwrap();
        assert_eq!(id.fingerprint.len(), 64);
        assert!(id.fingerprint.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(id.fingerprint, crate::token::hex(&Sha256::digest(&id.cert_der)));
    }

    #[cfg(unix)]
    #[test]
    fn the_private_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_missing_key_regenerates_a_new_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let second = load_or_create(dir.path()).unwrap();
        assert_ne!(first.fingerprint, second.fingerprint);
    }

    #[test]
    fn a_corrupt_certificate_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        let err = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains(CERT_FILE) && err.contains("certificate"), "{err}");
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let (_, _, other_key_pem) = generate().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), other_key_pem).unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(TlsError::BadPem { .. })));
    }

    #[test]
    fn malformed_pins_are_refused() {
        assert!(matches!(client_config_pinned("abc"), Err(TlsError::BadFingerprint(_))));
        assert!(client_config_pinned(&"AB".repeat(32)).is_ok());
    }

    #[test]
    fn server_names_accept_ips_and_dns_names() {
        assert!(matches!(server_name("::1"), ServerName::IpAddress(_)));
        assert!(matches!(server_name("[::1]"), ServerName::IpAddress(_)));
        assert!(matches!(server_name("127.0.0.1"), ServerName::IpAddress(_)));
        assert!(matches!(server_name("example.org"), ServerName::DnsName(_)));
    }
}
