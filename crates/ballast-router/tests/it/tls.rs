//! HTTPS upstreams: rustls (ring) trusting the Web PKI roots plus a private CA, against a
//! loopback HTTPS server whose certificate is issued at test time.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use crate::support::{target, TestRouter};

/// A private CA (PEM) and a certificate for 127.0.0.1 issued by it, with its key.
fn issue() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ballast test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    (ca.pem(), leaf.der().clone(), key)
}

/// An HTTPS server on loopback answering every request with `{"upstream":"tls","path":…}`.
async fn https_upstream(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> (String, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    conns.spawn(async move {
                        // A client that does not trust us ends the handshake: nothing to serve.
                        let Ok(tls) = acceptor.accept(stream).await else { return };
                        let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                            let body = serde_json::json!({"upstream": "tls", "path": req.uri().path()}).to_string();
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    (url, task)
}

#[tokio::test]
async fn https_targets_are_served_over_tls_verified_against_the_private_ca() {
    let (ca_pem, cert, key) = issue();
    let (url, server) = https_upstream(cert, key).await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_path = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\nhealth = {{ consecutive_failures = 100 }}\n{}",
        target("t", &url, "eu", "m/bot/1")
    );

    let router = TestRouter::start_with("eu", &toml, |c| c.upstream_ca = Some(ca_path.clone())).await;
    let r = router.chat("bot").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.upstream().as_str(), r.header("x-ballast-target").as_str()),
        ("tls", "t")
    );
    assert_eq!(r.json()["path"], "/v1/chat/completions");

    // Without the private CA only the Web PKI roots are trusted: the handshake fails and the
    // attempt counts as a connect error.
    let untrusting = TestRouter::start("eu", &toml).await;
    let r = untrusting.chat("bot").await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["attempts"][0]["error"], "connect", "{}", r.body);
    server.abort();
}
