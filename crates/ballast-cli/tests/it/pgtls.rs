//! PostgreSQL over TLS: a private cluster that accepts TLS connections only, with a certificate
//! from a test CA. The server's certificate must verify (against `sslrootcert=`), a plaintext
//! connection is refused by the cluster, and a certificate from an unknown CA is refused by
//! Ballast — so the working connection really is verified TLS.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use serde_json::{json, Value};

use crate::dboutage::PgCluster;
use crate::support::{admin_token, bin, ServerProc};

/// A CA, and a server certificate it signed for 127.0.0.1: (CA PEM, certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ballast test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// `ballast migrate` against `url`: (success, stdout + stderr).
fn migrate(url: &str, data: &std::path::Path) -> (bool, String) {
    let out = Command::new(bin())
        .args(["migrate", "--json", "--database-url", url, "--data-dir"])
        .arg(data)
        .env("BALLAST_DATABASE_CONNECT_TIMEOUT_SECS", "5")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let Some(pg) = tokio::task::spawn_blocking(PgCluster::init).await.unwrap() else {
        eprintln!("skipped: PostgreSQL is not installed");
        return;
    };
    let (ca, cert, key) = certificates();
    let cluster = std::path::PathBuf::from(pg.data());
    for (name, pem, mode) in [("server.crt", &cert, 0o644), ("server.key", &key, 0o600)] {
        let path = cluster.join(name);
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        pg.give(&path);
    }
    let mut conf = std::fs::read_to_string(cluster.join("postgresql.conf")).unwrap();
    conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    std::fs::write(cluster.join("postgresql.conf"), conf).unwrap();
    // TCP connections must use TLS.
    std::fs::write(
        cluster.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    let pg = std::sync::Arc::new(pg);
    {
        let pg = std::sync::Arc::clone(&pg);
        tokio::task::spawn_blocking(move || pg.start()).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let data = dir.path().join("data");
    let base = pg.url();

    let (ok, out) = migrate(&format!("{base}?sslmode=disable"), &data);
    assert!(
        !ok,
        "a plaintext connection must be refused by the cluster: {out}"
    );
    assert!(out.contains("no encryption") || out.contains("pg_hba"), "{out}");

    let (ok, out) = migrate(&format!("{base}?sslmode=require"), &data);
    assert!(!ok, "a certificate from an unknown CA must be refused: {out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");

    let verified = format!("{base}?sslmode=verify-full&sslrootcert={}", ca_file.display());
    let (ok, out) = migrate(&verified, &data);
    assert!(ok, "migrate over verified TLS: {out}");

    // A server on the TLS connection serves reads and writes.
    let server = ServerProc::start_with(&data, &["--database-url", &verified], &[]).await;
    let token = admin_token(&data);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/models", server.url))
        .bearer_auth(&token)
        .json(&json!({"name": "tls/model"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let got: Value = client
        .get(format!("{}/v1/models/tls/model", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "tls/model");
}
