//! The upstream client's TLS: rustls with the `ring` provider, HTTP/1.1 and HTTP/2 (ALPN).
//!
//! # Which roots
//!
//! The gateway trusts Mozilla's root programme as compiled in by `webpki-roots`, plus the
//! certificates of `upstream.ca_file`. Not the OS store: the gateway usually runs in a container,
//! and slim images (distroless, scratch, alpine without `ca-certificates`) have no store, which
//! would turn every call to api.openai.com into a 502 that only shows at run time. Compiled-in
//! roots trust the same public CAs on every machine and read no file at start; a private CA (a
//! company gateway, a test server) is added with `ca_file`. The cost: a root added or removed
//! by Mozilla reaches the gateway with a rebuild.
//!
//! `ring` rather than `aws-lc-rs` (rustls' default) keeps the build free of cmake and a C
//! library build; OpenSSL is banned by `deny.toml`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::{ClientConfig, RootCertStore};

/// The upstream client: `http://` as it is, `https://` through rustls.
pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for upstream calls: no Nagle delay, pooled connections, TLS with the compiled-in
/// roots plus `extra_roots`; over TLS, HTTP/2 when the server offers it.
pub(crate) fn http_client(
    connect_timeout: Duration,
    extra_roots: &[CertificateDer<'static>],
) -> Result<UpstreamClient, String> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    // The TLS connector hands `https://` URIs to the TCP connector.
    connector.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(client_config(extra_roots)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector))
}

/// The rustls settings: the ring provider, its safe default protocol versions (TLS 1.2, 1.3),
/// the roots, no client certificate.
fn client_config(extra_roots: &[CertificateDer<'static>]) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (i, cert) in extra_roots.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("certificate {} is not a usable root ({e})", i + 1))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The certificates of a PEM file of extra roots, checked: the file exists, holds at least one
/// `CERTIFICATE` block, and each is usable as a root. The error says which of these failed
/// (and names the file; a certificate is public, but it is never echoed).
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| format!("{shown} is not valid PEM ({e})"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown} holds no certificate (a PEM file with -----BEGIN CERTIFICATE----- blocks)"
        ));
    }
    // Fails here, at start, rather than on the first call.
    client_config(&certs).map_err(|e| format!("{shown}: {e}"))?;
    Ok(certs)
}

/// Whether a failed call failed on the upstream's certificate: a name mismatch, an unknown
/// issuer (a private CA missing from `ca_file`), an expired certificate.
pub(crate) fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    // The rustls error sits inside `io::Error`s (tokio-rustls wraps it in one, hyper-rustls
    // wraps that in another), whose `source` skips what they wrap: so an `io::Error` is opened
    // rather than walked past.
    let mut next = Some(error);
    for _ in 0..32 {
        let Some(error) = next else { break };
        if let Some(e) = error.downcast_ref::<rustls::Error>() {
            return matches!(e, rustls::Error::InvalidCertificate(_));
        }
        next = match error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner),
            None => error.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name` in `dir`, holding `contents`.
    fn temp(dir: &tempfile::TempDir, name: &str, contents: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_bad_ca_file_is_refused_with_the_reason() {
        let missing = Path::new("/nonexistent/ca.pem");
        let err = read_ca_file(missing).unwrap_err();
        assert!(
            err.starts_with("cannot read /nonexistent/ca.pem: "),
            "{err}"
        );

        // Removed when dropped, also when an assertion fails.
        let dir = tempfile::Builder::new()
            .prefix("tollgate-tls-")
            .tempdir()
            .unwrap();
        let empty = temp(&dir, "empty.pem", "not a certificate\n");
        let err = read_ca_file(&empty).unwrap_err();
        assert!(
            err.ends_with(
                "holds no certificate (a PEM file with -----BEGIN CERTIFICATE----- blocks)"
            ),
            "{err}"
        );

        let broken = temp(
            &dir,
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let err = read_ca_file(&broken).unwrap_err();
        assert!(err.contains("is not valid PEM"), "{err}");

        // Valid base64, but not a certificate.
        let garbage = temp(
            &dir,
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let err = read_ca_file(&garbage).unwrap_err();
        assert!(err.contains("certificate 1 is not a usable root"), "{err}");
    }

    #[test]
    fn a_certificate_error_is_found_inside_nested_io_errors() {
        use rustls::CertificateError;
        let rustls_error = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        // As tokio-rustls and then hyper-rustls hand it on.
        let nested = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls_error,
        ));
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(nested);
        assert!(is_certificate_error(boxed.as_ref()));
        let other = std::io::Error::other(rustls::Error::General("no".to_owned()));
        assert!(!is_certificate_error(&other));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_certificate_error(&refused));
    }

    #[test]
    fn the_client_builds_with_the_compiled_in_roots() {
        assert!(http_client(Duration::from_secs(1), &[]).is_ok());
        assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
    }
}
