//! A report survives a restart of signaling (state dropped, a new one built
//! on the same database) with its transcript and snapshot bytes: SQLite
//! (temp file) and PostgreSQL (fresh database per test).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::*;
use proto::signal::{ReportCreated, ServerMsg};
use serde_json::json;
use sqlx::Connection;

async fn matched(ws: &mut Ws) {
    ws.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
}

/// Pairs two users, chats, reports; returns the report id.
async fn make_report(database_url: &str, sfu: &FakeSfu) -> String {
    let server = Server::start(signaling::SignalingConfig {
        database_url: database_url.into(),
        ..test_config()
    })
    .await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    let sa = server.session("device-alice").await;
    let sb = server.session("device-bob01").await;
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    a.send_json(json!({"type":"join","mode":"video"})).await;
    b.send_json(json!({"type":"join","mode":"video"})).await;
    matched(&mut a).await;
    matched(&mut b).await;
    a.send_json(json!({"type":"chat","text":"evidence line one"}))
        .await;
    assert_eq!(
        b.recv().await,
        ServerMsg::Chat {
            text: "evidence line one".into()
        }
    );
    b.send_json(json!({"type":"chat","text":"evidence line two"}))
        .await;
    assert_eq!(
        a.recv().await,
        ServerMsg::Chat {
            text: "evidence line two".into()
        }
    );
    let resp = reqwest::Client::new()
        .post(server.url("/api/reports"))
        .bearer_auth(&sb.token)
        .json(&json!({"category":"minor","text":"looks under 18"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<ReportCreated>().await.unwrap().report_id;
    drop(a);
    drop(b);
    server.state.store().close().await;
    server.stop().await;
    id
}

async fn check_report(database_url: &str, id: &str) -> Server {
    let server = Server::start(signaling::SignalingConfig {
        database_url: database_url.into(),
        ..test_config()
    })
    .await;
    let stored = server
        .state
        .store()
        .get_report(id)
        .await
        .unwrap()
        .expect("report survived the restart");
    assert_eq!(stored.report.category, "minor");
    assert_eq!(stored.report.severity, 5);
    assert_eq!(stored.report.text, "looks under 18");
    assert_eq!(stored.report.reported_device, "device-alice");
    assert_eq!(stored.report.reporter_device, "device-bob01");
    let lines: Vec<signaling::live::ChatLine> = serde_json::from_str(&stored.report.transcript).unwrap();
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, vec!["evidence line one", "evidence line two"]);
    assert_eq!(lines[0].device, "device-alice");
    assert_eq!(stored.report.snapshots.len(), 1);
    assert_eq!(stored.report.snapshots[0].data, SNAPSHOT);
    assert_eq!(stored.report.snapshots[0].content_type, "image/webp");
    assert_eq!(stored.status, "open");
    server
}

#[tokio::test]
async fn report_survives_restart_on_sqlite() {
    let path = std::env::temp_dir().join(format!(
        "duet-signaling-test-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let url = format!("sqlite://{}", path.display());
    let sfu = FakeSfu::start().await;
    let id = make_report(&url, &sfu).await;
    let server = check_report(&url, &id).await;

    // The reporter and the reported still never meet after the restart.
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    let sa = server.session("device-alice").await;
    let sb = server.session("device-bob01").await;
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    a.send_json(json!({"type":"join","mode":"text"})).await;
    b.send_json(json!({"type":"join","mode":"text"})).await;
    assert!(matches!(a.recv().await, ServerMsg::Queued { .. }));
    assert!(matches!(b.recv().await, ServerMsg::Queued { .. }));
    let stats = server.state.stats().await.unwrap();
    assert_eq!(stats.waiting_text, 2, "blocked pair stays apart");
    server.state.store().close().await;
    server.stop().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn report_survives_restart_on_postgres() {
    let db = format!("duet_test_{}", uuid::Uuid::new_v4().simple());
    let admin_url = "postgres://root@127.0.0.1:5432/postgres";
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("postgres://root@127.0.0.1:5432/{db}");
    let sfu = FakeSfu::start().await;
    let id = make_report(&url, &sfu).await;
    let server = check_report(&url, &id).await;

    // The audit log is append-only.
    let store = server.state.store().clone();
    store
        .audit("mod-1", "view_evidence", "report", &id, &json!({}))
        .await
        .unwrap();
    assert_eq!(store.audit_entries(10).await.unwrap().len(), 1);
    if let signaling::Store::Postgres(pool) = &store {
        assert!(sqlx::query("DELETE FROM audit_log").execute(pool).await.is_err());
        assert!(sqlx::query("UPDATE audit_log SET actor = 'x'")
            .execute(pool)
            .await
            .is_err());
    } else {
        panic!("expected PostgreSQL");
    }
    store.close().await;
    server.stop().await;
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn sqlite_audit_log_is_append_only_and_passwords_are_argon2id() {
    let store = signaling::Store::connect("sqlite::memory:").await.unwrap();
    store
        .audit("mod-1", "ban", "device", "device-x", &json!({"reason":"r"}))
        .await
        .unwrap();
    if let signaling::Store::Sqlite(pool) = &store {
        assert!(sqlx::query("DELETE FROM audit_log").execute(pool).await.is_err());
        assert!(sqlx::query("UPDATE audit_log SET actor = 'x'")
            .execute(pool)
            .await
            .is_err());
    }
    let hash = signaling::store::hash_password("correct horse").unwrap();
    assert!(hash.starts_with("$argon2id$"));
    store
        .insert_moderator("m@example.org", &hash, "senior")
        .await
        .unwrap();
    let m = store.moderator_by_email("m@example.org").await.unwrap().unwrap();
    assert!(signaling::store::verify_password(
        "correct horse",
        &m.password_hash
    ));
    assert!(!signaling::store::verify_password("wrong", &m.password_hash));
    assert_eq!(m.role, "senior");
}
