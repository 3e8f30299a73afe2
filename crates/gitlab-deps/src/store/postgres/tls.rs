//! TLS for PostgreSQL connections, with the `sslmode` meanings PostgreSQL's own clients (libpq)
//! give them, so a URL that works with `psql` works here:
//!
//! - `disable`: no TLS; `allow`, `prefer` (the default): TLS when the server offers it;
//!   `require`: TLS or no connection. These encrypt without checking the server's certificate,
//!   unless `sslrootcert` names a CA file, which makes `require` check as `verify-ca` does.
//! - `verify-ca`: the certificate must chain to a trusted CA; `verify-full`: and name the host.
//!   Trusted CAs: those in the `sslrootcert` file, else the system's.
//!
//! tokio-postgres reads `disable`, `prefer` and `require` only; the rest is taken out of the URL
//! here and applied in the rustls configuration.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Not at all (encryption only).
    None,
    /// It chains to a trusted CA.
    Ca,
    /// It chains to a trusted CA and names the host.
    Full,
}

/// The TLS part of a connection URL.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Settings {
    /// The URL as tokio-postgres reads it.
    pub url: String,
    pub check: Check,
    /// `sslrootcert`: the trusted CAs (PEM), instead of the system's.
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslrootcert` out of the URL and maps `verify-ca`/`verify-full`/`allow` to what
/// tokio-postgres reads. A URL without them is passed on unchanged.
pub(super) fn settings(raw: &str) -> Settings {
    let unchanged = |check| Settings {
        url: raw.to_owned(),
        check,
        root_cert: None,
    };
    let Ok(mut url) = url::Url::parse(raw) else {
        // tokio-postgres says what is wrong with it.
        return unchanged(Check::None);
    };
    let mut mode: Option<String> = None;
    let mut root_cert: Option<String> = None;
    let mut others: Vec<(String, String)> = Vec::new();
    for (key, value) in url.query_pairs() {
        match &*key {
            "sslmode" => mode = Some(value.into_owned()),
            "sslrootcert" => root_cert = Some(value.into_owned()),
            _ => others.push((key.into_owned(), value.into_owned())),
        }
    }
    let (passed, check) = match mode.as_deref() {
        Some("verify-full") => ("require", Check::Full),
        Some("verify-ca") => ("require", Check::Ca),
        Some("require") if root_cert.is_some() => ("require", Check::Ca),
        Some("allow") => ("prefer", Check::None),
        Some(other) => (other, Check::None),
        None => ("prefer", Check::None),
    };
    if root_cert.is_none()
        && !matches!(mode.as_deref(), Some("verify-full" | "verify-ca" | "allow"))
    {
        return unchanged(check);
    }
    {
        let mut query = url.query_pairs_mut();
        query.clear().extend_pairs(others);
        if mode.is_some() {
            query.append_pair("sslmode", passed);
        }
    }
    Settings {
        url: url.to_string(),
        check,
        // libpq's `system` means the system's CAs, as here without the parameter.
        root_cert: root_cert.filter(|r| r != "system").map(PathBuf::from),
    }
}

/// The rustls connector for `settings`.
pub(super) fn connector(settings: &Settings) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (settings.check, &settings.root_cert) {
        (Check::None, _) => Arc::new(EncryptOnly(Arc::clone(&provider))),
        (check, Some(file)) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("cannot read sslrootcert {}: {e}", file.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("cannot read sslrootcert {}: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
            }
            let full =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
            by_check(check, full)
        }
        (check, None) => {
            let full = rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
                .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?;
            by_check(check, Arc::new(full))
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn by_check(check: Check, full: Arc<dyn ServerCertVerifier>) -> Arc<dyn ServerCertVerifier> {
    match check {
        Check::Ca => Arc::new(AnyName(full)),
        _ => full,
    }
}

/// `prefer`/`require`: any certificate, but the handshake's signatures are still checked (the
/// server holds the certificate's key).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full check, less the host name.
#[derive(Debug)]
struct AnyName(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmodes_map_to_what_tokio_postgres_reads() {
        let plain = settings("postgres://h/db?sslmode=require");
        assert_eq!(
            (plain.url.as_str(), plain.check),
            ("postgres://h/db?sslmode=require", Check::None)
        );
        let full = settings("postgres://h/db?sslmode=verify-full&application_name=x");
        assert_eq!(full.check, Check::Full);
        assert_eq!(
            full.url,
            "postgres://h/db?application_name=x&sslmode=require"
        );
        let ca = settings("postgres://h/db?sslmode=require&sslrootcert=/etc/ca.pem");
        assert_eq!(ca.check, Check::Ca);
        assert_eq!(ca.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(ca.url, "postgres://h/db?sslmode=require");
        let system = settings("postgres://h/db?sslmode=verify-ca&sslrootcert=system");
        assert_eq!((system.check, system.root_cert), (Check::Ca, None));
        assert_eq!(settings("postgres://h/db").check, Check::None);
    }
}
