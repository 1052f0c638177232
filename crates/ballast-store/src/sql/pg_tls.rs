//! TLS toward PostgreSQL with rustls (ring): the server's certificate is always verified against
//! the web PKI roots, or against the CA file given with `sslrootcert=`, and its host name.
//!
//! `sslmode` follows libpq's names: `disable` (no TLS), `prefer` (the default: TLS when the
//! server offers it), `require`, `verify-ca` and `verify-full` (TLS or no connection). Whenever
//! TLS is used the certificate is verified, so `require` already means what libpq calls
//! `verify-full`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ballast_core::ErrorCode;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{StoreError, StoreResult};

/// What the URL asked of TLS, after taking out what the driver does not parse itself.
pub(super) struct TlsSettings {
    /// The URL to give the driver.
    pub url: String,
    /// CA certificates (PEM) to trust instead of the web PKI roots.
    pub root_cert: Option<std::path::PathBuf>,
}

fn bad_url(message: impl Into<String>) -> StoreError {
    StoreError::new(ErrorCode::InvalidArgument, message)
}

/// Takes `sslrootcert=` out of the URL and maps `verify-ca`/`verify-full` to `require` (the
/// driver knows only disable/prefer/require; verification is always on here).
pub(super) fn settings(url: &str) -> TlsSettings {
    let Some((base, query)) = url.split_once('?') else {
        return TlsSettings {
            url: url.to_owned(),
            root_cert: None,
        };
    };
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", path)) => root_cert = Some(std::path::PathBuf::from(path)),
            Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require".to_owned()),
            _ => kept.push(pair.to_owned()),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    TlsSettings { url, root_cert }
}

/// Builds the connector: trusted roots from `root_cert` (PEM) or the web PKI.
pub(super) fn connector(root_cert: Option<&std::path::Path>) -> StoreResult<MakeRustls> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| bad_url(format!("cannot read sslrootcert {}: {e}", path.display())))?;
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| bad_url(format!("sslrootcert {} is not PEM: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| bad_url(format!("sslrootcert {}: {e}", path.display())))?;
                found += 1;
            }
            if found == 0 {
                return Err(bad_url(format!(
                    "sslrootcert {} holds no certificate",
                    path.display()
                )));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::internal(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustls(Arc::new(config)))
}

/// Makes a TLS connector per connection.
#[derive(Clone)]
pub(super) struct MakeRustls(Arc<rustls::ClientConfig>);

/// Connects one stream for one host.
pub(super) struct Rustls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

/// A TLS session toward the database.
pub(super) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = Rustls;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Rustls, io::Error> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Rustls {
            config: Arc::clone(&self.0),
            name,
        })
    }
}

impl<S> TlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::settings;

    #[test]
    fn driver_unknown_options_are_taken_out() {
        let s =
            settings("postgres://u@db:5432/b?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x");
        assert_eq!(s.url, "postgres://u@db:5432/b?sslmode=require&application_name=x");
        assert_eq!(s.root_cert.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        let s = settings("postgres://u@db/b?sslrootcert=/ca.pem");
        assert_eq!(s.url, "postgres://u@db/b");
        assert_eq!(settings("postgres://u@db/b").url, "postgres://u@db/b");
    }
}
