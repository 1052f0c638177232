//! Webhook deliveries survive a SIGKILL: events committed while the receiver was down are all
//! delivered after the server restarts.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::{free_port, ServerProc};

/// A minimal HTTP receiver that answers 200 and records (delivery id, event id) pairs.
async fn receiver(port: u16, seen: Arc<Mutex<BTreeSet<(u64, u64)>>>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(sock);
            loop {
                let mut delivery = None;
                let mut len = 0usize;
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            "x-ballast-delivery" => delivery = v.trim().parse::<u64>().ok(),
                            _ => {}
                        }
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).await.is_err() {
                    return;
                }
                let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let (Some(d), Some(e)) = (delivery, event["id"].as_u64()) {
                    seen.lock().unwrap().insert((d, e));
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                if reader.get_mut().write_all(ok).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let server = ServerProc::start(&data).await;
    let c = crate::support::authed_client(&data);
    let url = server.url.clone();
    let hook: Value = c
        .post(format!("{url}/v1/webhooks"))
        .json(&json!({ "url": format!("http://127.0.0.1:{port}/hook") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hook_id = hook["id"].as_u64().unwrap();
    // The receiver is down: every change leaves an undelivered event behind.
    let r = c
        .post(format!("{url}/v1/models"))
        .json(&json!({"name": "hooks/m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for _ in 0..25 {
        let r = c
            .post(format!("{url}/v1/models/hooks/m/versions"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let events: Value = c
        .get(format!("{url}/v1/events?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected: BTreeSet<u64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            let t = e["type"].as_str().unwrap_or_default();
            t != "webhook.created" && !t.starts_with("token.") && !t.starts_with("role.")
        })
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(expected.len(), 26);
    server.kill9();

    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    tokio::spawn(receiver(port, seen.clone()));
    let server = ServerProc::start(&data).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: BTreeSet<u64> = seen.lock().unwrap().iter().map(|(_, e)| *e).collect();
        if expected.is_subset(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} events delivered after the restart",
            got.intersection(&expected).count(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every delivery id maps to one event (ids are stable, one per event and webhook).
    let pairs = seen.lock().unwrap().clone();
    let ids: BTreeSet<u64> = pairs.iter().map(|(d, _)| *d).collect();
    assert_eq!(
        ids.len(),
        pairs.iter().map(|(_, e)| *e).collect::<BTreeSet<_>>().len()
    );
    // Deliveries are marked delivered once the receiver answered.
    let pending_url = format!("{}/v1/webhooks/{hook_id}/deliveries?status=pending", server.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Value = c.get(&pending_url).send().await.unwrap().json().await.unwrap();
        let pending = list["deliveries"].as_array().unwrap().len();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} deliveries still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
