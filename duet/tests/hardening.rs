#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is a test failure
//! `duet up` under what a crowd and an attacker do: a burst of visitors
//! joining at once, a flood of wrong-password logins.

mod support;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::Duration;
use support::{temp_dir, Up};
use tokio_tungstenite::tungstenite::Message;

/// Hang guard for one visitor's steps (not a timing assertion).
const WAIT: Duration = Duration::from_secs(60);

/// `VmRSS`/`VmHWM` of process `pid`, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Each argon2id check holds its memory cost (argon2's default, 19 MiB).
const ARGON2_MIB: u64 = 19;
/// `duet up`'s default `--max-password-checks`.
const MAX_CHECKS: u64 = 4;
/// Allocator and thread-stack slack on top of the checks' memory.
const SLACK_MIB: u64 = 64;

#[tokio::test]
async fn concurrent_wrong_password_logins_keep_rss_under_the_password_check_bound() {
    let dir = temp_dir("logins");
    let up = Up::start(&dir);
    let pid = up.pid();
    // Reset the peak (Linux: 5 > clear_refs), so VmHWM is this test's peak.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before = proc_kib(pid, "VmRSS:");
    // 64 logins at once, from 64 loopback addresses (one each, inside the
    // per-IP login limit), for unknown accounts: each is an argon2 check.
    let url = format!("{}/api/admin/login", up.http());
    let logins = (2..66u8).map(|i| {
        let url = url.clone();
        async move {
            let client = reqwest::Client::builder()
                .local_address(IpAddr::from([127, 0, 0, i]))
                .build()
                .unwrap();
            let resp = client
                .post(&url)
                .json(&json!({"email": format!("nobody{i}@example.org"), "password": "not the password"}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").cloned();
            let body: Value = resp.json().await.unwrap();
            if status == 503 {
                assert_eq!(body["code"], "busy", "{body}");
                assert!(retry_after.is_some(), "503 without Retry-After");
            } else {
                assert_eq!(
                    (status, body["code"].as_str()),
                    (401, Some("bad_credentials")),
                    "{body}"
                );
            }
            status
        }
    });
    let statuses = futures::future::join_all(logins).await;
    let peak = proc_kib(pid, "VmHWM:");
    let grew_mib = peak.saturating_sub(before) / 1024;
    let bound = MAX_CHECKS * ARGON2_MIB + SLACK_MIB;
    let refused = statuses.iter().filter(|s| **s == 503).count();
    eprintln!(
        "RSS before {} MiB, peak {} MiB (+{grew_mib} MiB, bound {bound} MiB); {refused} of 64 refused busy",
        before / 1024,
        peak / 1024
    );
    assert!(
        grew_mib < bound,
        "64 concurrent logins grew RSS by {grew_mib} MiB (bound {bound} MiB)"
    );
    assert!(statuses.contains(&401), "some checks ran");
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One visitor: a session, the signaling WebSocket, a text-mode join.
async fn join(http: &str, ws_base: &str, i: usize) -> Result<(), String> {
    let resp = reqwest::Client::new()
        .post(format!("{http}/api/session"))
        .json(&json!({"accept_rules": true, "device_id": format!("device-burst-{i:04}")}))
        .send()
        .await
        .map_err(|e| format!("session {i}: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("session {i}: {e}"))?;
    if status != 200 {
        return Err(format!("session {i}: {status} {body}"));
    }
    let token = body["token"].as_str().unwrap_or_default();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{ws_base}/ws?token={token}"))
        .await
        .map_err(|e| format!("ws {i}: {e}"))?;
    ws.send(Message::text(json!({"type":"join","mode":"text"}).to_string()))
        .await
        .map_err(|e| format!("join {i}: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                match v["type"].as_str() {
                    Some("queued") | Some("matched") => return Ok(()),
                    Some("error") => return Err(format!("join {i}: {v}")),
                    _ => {}
                }
            }
            Some(Ok(_)) => {}
            other => return Err(format!("join {i}: {other:?}")),
        }
    }
}

#[tokio::test]
async fn four_hundred_visitors_joining_at_once_on_up_with_sqlite_all_get_in() {
    let dir = temp_dir("burst");
    // Rate limits off: all visitors come from 127.0.0.1.
    let up = Up::start_with(&dir, &["--rate-limits=off", "--max-participants=1000"]);
    let http = up.http();
    let ws_base = http.replacen("http://", "ws://", 1);
    let visitors = (0..400).map(|i| {
        let (http, ws_base) = (http.clone(), ws_base.clone());
        tokio::spawn(async move {
            tokio::time::timeout(WAIT, join(&http, &ws_base, i))
                .await
                .unwrap_or_else(|_| Err(format!("visitor {i} hung")))
        })
    });
    let results = futures::future::join_all(visitors).await;
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.unwrap().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 400 joins failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
}
