//! Retention with the clock passed in, on SQLite and PostgreSQL: evidence of
//! dismissed reports goes after 30 days, of actioned ones after 90 days,
//! except while an appeal of a ban from that report is pending; open
//! reports keep theirs; the report rows (the device's history) stay; the
//! audit log is untouched.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use serde_json::json;
use signaling::admin::{RetentionCounts, RetentionPolicy};
use signaling::store::{NewReport, Snapshot};
use signaling::Store;
use sqlx::Connection;

const DAY: i64 = 86_400;
/// "Now" for the test: any fixed time works, the job takes it as an argument.
const NOW: i64 = 2_000_000_000;

fn report(device: &str) -> NewReport {
    NewReport {
        category: "harassment".into(),
        severity: 2,
        text: format!("report about {device}"),
        pairing_id: format!("pair-{device}"),
        mode: "video".into(),
        reporter_session: "s-reporter".into(),
        reporter_device: "device-reporter".into(),
        reporter_ip: Some("192.0.2.1".into()),
        reported_session: "s-reported".into(),
        reported_device: device.into(),
        reported_participant: "p-reported".into(),
        reported_node: "n1".into(),
        transcript: r#"[{"at_ms":1,"from":"a","device":"d","text":"evidence"}]"#.into(),
        snapshots: vec![Snapshot {
            participant_id: "p-reported".into(),
            content_type: "image/webp".into(),
            data: b"RIFF....WEBPVP8 snapshot".to_vec(),
            captured_at: 1,
        }],
    }
}

/// Runs `sql` with `binds` (text) on whichever database.
async fn exec(store: &Store, sql: &str, binds: &[&str]) {
    match store {
        Store::Sqlite(p) => {
            let mut q = sqlx::query(sql);
            for b in binds {
                q = q.bind(*b);
            }
            q.execute(p).await.unwrap();
        }
        Store::Postgres(p) => {
            let mut q = sqlx::query(sql);
            for b in binds {
                q = q.bind(*b);
            }
            q.execute(p).await.unwrap();
        }
    }
}

/// Marks a report decided `days_ago` with `status`.
async fn decide(store: &Store, id: &str, status: &str, days_ago: i64) {
    let at = (NOW - days_ago * DAY).to_string();
    exec(
        store,
        &format!("UPDATE reports SET status = $1, resolved_by = 'mod@example.org', resolved_at = {at} WHERE id = $2"),
        &[status, id],
    )
    .await;
}

/// A ban from report `id`, with an appeal in `appeal` state (if any).
async fn ban_with_appeal(store: &Store, report_id: &str, appeal: Option<&str>) {
    let ban = format!("ban-{report_id}");
    exec(
        store,
        "INSERT INTO bans (id, kind, value, reason, created_by, created_at, expires_at, report_id) \
         VALUES ($1, 'device', 'device-x', 'r', 'mod@example.org', 0, NULL, $2)",
        &[&ban, report_id],
    )
    .await;
    if let Some(status) = appeal {
        exec(
            store,
            "INSERT INTO appeals (id, ban_id, text, created_at, status) VALUES ($1, $2, 'please', 0, $3)",
            &[&format!("appeal-{report_id}"), &ban, status],
        )
        .await;
    }
}

struct Evidence {
    snapshots: usize,
    transcript_empty: bool,
    deleted: bool,
}

async fn evidence(store: &Store, id: &str) -> Evidence {
    let r = store.get_report(id).await.unwrap().expect("the report row stays");
    let full = store.report_full(id).await.unwrap().unwrap();
    Evidence {
        snapshots: r.report.snapshots.len(),
        transcript_empty: r.report.transcript == "[]" && r.report.text.is_empty(),
        deleted: full.item.evidence_deleted_at.is_some(),
    }
}

async fn retention_on(store: Store) {
    let policy = RetentionPolicy::default();
    let mut ids = std::collections::HashMap::new();
    for name in [
        "open_old",
        "dismissed_31d",
        "dismissed_29d",
        "warned_91d",
        "banned_91d_appeal_pending",
        "banned_91d_appeal_upheld",
        "banned_89d",
    ] {
        ids.insert(
            name,
            store
                .insert_report(&report(&format!("device-{name}")))
                .await
                .unwrap(),
        );
    }
    store
        .audit(
            "mod@example.org",
            "view_report",
            "report",
            &ids["dismissed_31d"],
            &json!({}),
        )
        .await
        .unwrap();
    // open_old stays open: never decided, evidence kept whatever its age.
    decide(&store, &ids["dismissed_31d"], "dismissed", 31).await;
    decide(&store, &ids["dismissed_29d"], "dismissed", 29).await;
    decide(&store, &ids["warned_91d"], "warned", 91).await;
    decide(&store, &ids["banned_91d_appeal_pending"], "banned", 91).await;
    decide(&store, &ids["banned_91d_appeal_upheld"], "banned", 91).await;
    decide(&store, &ids["banned_89d"], "banned", 89).await;
    ban_with_appeal(&store, &ids["banned_91d_appeal_pending"], Some("pending")).await;
    ban_with_appeal(&store, &ids["banned_91d_appeal_upheld"], Some("upheld")).await;
    ban_with_appeal(&store, &ids["banned_89d"], None).await;

    let counts = signaling::admin::retention::run(&store, NOW, &policy)
        .await
        .unwrap();
    assert_eq!(
        counts,
        RetentionCounts {
            dismissed_reports: 1,
            actioned_reports: 2,
            snapshots: 3,
            kept_for_appeal: 1,
            moderator_sessions: 0,
            screening_samples: 0,
        }
    );
    for (name, gone) in [
        ("open_old", false),
        ("dismissed_31d", true),
        ("dismissed_29d", false),
        ("warned_91d", true),
        ("banned_91d_appeal_pending", false),
        ("banned_91d_appeal_upheld", true),
        ("banned_89d", false),
    ] {
        let e = evidence(&store, &ids[name]).await;
        assert_eq!(e.deleted, gone, "{name}");
        assert_eq!(e.snapshots, if gone { 0 } else { 1 }, "{name}");
        assert_eq!(e.transcript_empty, gone, "{name}");
    }

    // A second run at the same time deletes nothing more.
    let again = signaling::admin::retention::run(&store, NOW, &policy)
        .await
        .unwrap();
    assert_eq!(
        (again.dismissed_reports, again.actioned_reports, again.snapshots),
        (0, 0, 0)
    );

    // Once the appeal is decided, the next run takes that evidence too;
    // two days later the 89-day one has passed 90 days.
    exec(
        &store,
        "UPDATE appeals SET status = 'lifted' WHERE id = $1",
        &[&format!("appeal-{}", ids["banned_91d_appeal_pending"])],
    )
    .await;
    let later = signaling::admin::retention::run(&store, NOW + 2 * DAY, &policy)
        .await
        .unwrap();
    assert_eq!(later.actioned_reports, 2, "{later:?}");
    assert_eq!(later.dismissed_reports, 1, "dismissed_29d is now 31 days old");
    assert_eq!(later.kept_for_appeal, 0);
    for name in ["banned_91d_appeal_pending", "banned_89d", "dismissed_29d"] {
        assert!(evidence(&store, &ids[name]).await.deleted, "{name}");
    }
    assert!(!evidence(&store, &ids["open_old"]).await.deleted);
    // The audit log is untouched by retention.
    assert_eq!(store.audit_entries(10).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn retention_deletes_expired_evidence_and_keeps_evidence_under_appeal_sqlite() {
    retention_on(Store::connect("sqlite::memory:").await.unwrap()).await;
}

#[tokio::test]
async fn retention_deletes_expired_evidence_and_keeps_evidence_under_appeal_postgres() {
    let db = format!("duet_test_{}", uuid::Uuid::new_v4().simple());
    let admin_url = "postgres://root@127.0.0.1:5432/postgres";
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let store = Store::connect(&format!("postgres://root@127.0.0.1:5432/{db}"))
        .await
        .unwrap();
    retention_on(store).await;
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[test]
fn a_custom_policy_moves_the_cutoffs() {
    let p = RetentionPolicy {
        dismissed_after: std::time::Duration::from_secs(DAY as u64),
        actioned_after: std::time::Duration::from_secs(2 * DAY as u64),
    };
    assert_eq!(
        signaling::admin::retention::cutoffs(NOW, &p),
        (NOW - DAY, NOW - 2 * DAY)
    );
}
