//! The moderator API against a stand-in SFU: the wall lists live pairings
//! with snapshots fetched through signaling, turns periodic keyframes on
//! while open and off after; watching admits a hidden watcher and stops it;
//! ending a call tells both sides; the report queue shows evidence, views
//! are audited, a ban refuses the device with the statement and appeal
//! state; the block list exports and imports CSV and bulk-unbans.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod admin_support;
mod common;

use admin_support::*;
use common::*;
use proto::signal::{PartnerLeftReason, ServerMsg};
use serde_json::{json, Value};
use std::time::Duration;

fn config() -> signaling::SignalingConfig {
    let mut c = test_config();
    c.admin.wall_open_ttl = Duration::from_secs(3);
    c.admin.wall_keyframe_interval = Duration::from_millis(2500);
    c
}

#[tokio::test]
async fn wall_shows_live_calls_with_proxied_snapshots_and_drives_keyframes() {
    let (sfu, server) = server_with(config()).await;
    let m = moderator(&server, "wall@example.org", "moderator").await;
    let (sa, _wa, sb, _wb, pairing) = video_call(&server, "device-walla001", "device-wallb001").await;
    // A text chat is counted but not on the wall.
    let (_ta, _twa, _tb, _twb) = {
        let ta = server.session("device-texta001").await;
        let tb = server.session("device-textb001").await;
        let mut a = server.ws(&ta.token).await;
        let mut b = server.ws(&tb.token).await;
        a.send_json(json!({"type":"join","mode":"text"})).await;
        b.send_json(json!({"type":"join","mode":"text"})).await;
        a.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
        b.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
        (ta, a, tb, b)
    };

    let (st, wall) = m.get("/api/admin/wall").await;
    assert_eq!(st, 200, "{wall}");
    assert_eq!(wall["total"], 1);
    assert_eq!(wall["text_pairings"], 1);
    let p = &wall["pairings"][0];
    assert_eq!(p["pairing_id"], pairing.as_str());
    assert_eq!(p["node_id"], "n1");
    assert_eq!(p["region"], "local");
    let devices = [
        p["a"]["device"].as_str().unwrap(),
        p["b"]["device"].as_str().unwrap(),
    ];
    assert!(devices.contains(&"device-walla001") && devices.contains(&"device-wallb001"));
    let parts = [
        p["a"]["participant"].as_str().unwrap().to_owned(),
        p["b"]["participant"].as_str().unwrap().to_owned(),
    ];
    assert!(parts.contains(&sa.participant_id.to_string()) && parts.contains(&sb.participant_id.to_string()));
    assert_eq!(p["a"]["snapshot_age_ms"], 100);
    assert_eq!(p["report_count"], 0);
    // Opening the wall is recorded once per opening, not per refresh.
    assert_eq!(m.get("/api/admin/wall").await.0, 200);
    let (_, log) = m.get("/api/admin/audit?action=view_wall").await;
    assert_eq!(log["entries"].as_array().unwrap().len(), 1, "{log}");

    // Snapshots come through signaling, from the pair's node, unchanged.
    for side in ["a", "b"] {
        let r = m
            .raw(
                reqwest::Method::GET,
                &format!("/api/admin/pairings/{pairing}/snapshot/{side}"),
            )
            .await
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/webp");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.bytes().await.unwrap().as_ref(), SNAPSHOT);
    }
    assert!(sfu.calls().iter().any(|c| c == &format!("snapshot {}", parts[0])));
    let (st, body) = m.get(&format!("/api/admin/pairings/{pairing}/snapshot/c")).await;
    assert_eq!((st, body["code"].as_str()), (400, Some("bad_side")));
    let (st, _) = m.get("/api/admin/pairings/nosuchpairing/snapshot/a").await;
    assert_eq!(st, 404);

    // The wall being open turns periodic keyframes on at the node …
    sfu.wait_call("keyframes on", |c| c == "keyframes 2500").await;
    // … and off once no wall has refreshed for a while.
    sfu.wait_call("keyframes off", |c| c == "keyframes off").await;
    let on = sfu.calls().iter().position(|c| c == "keyframes 2500").unwrap();
    let off = sfu.calls().iter().position(|c| c == "keyframes off").unwrap();
    assert!(on < off);

    // Unblurring is an evidence view, recorded.
    let (st, _) = m
        .post(
            &format!("/api/admin/pairings/{pairing}/view"),
            json!({"side":"a"}),
        )
        .await;
    assert_eq!(st, 204);
    let (_, log) = m.get("/api/admin/audit?action=view_snapshot").await;
    assert_eq!(log["entries"][0]["target_id"], pairing.as_str());
    assert_eq!(log["entries"][0]["actor"], "wall@example.org");
    server.stop().await;
}

#[tokio::test]
async fn watching_admits_a_hidden_watcher_and_leaving_stops_it() {
    let (sfu, server) = server_with(config()).await;
    let m = moderator(&server, "watch@example.org", "moderator").await;
    let other = moderator(&server, "other@example.org", "moderator").await;
    let (sa, mut wa, sb, mut wb, pairing) = video_call(&server, "device-watcha01", "device-watchb01").await;

    let (st, w) = m
        .post(&format!("/api/admin/pairings/{pairing}/watch"), json!({}))
        .await;
    assert_eq!(st, 200, "{w}");
    let watch_id = w["watch_id"].as_str().unwrap().to_owned();
    assert_eq!(w["sfu"]["node_id"], "n1");
    assert_eq!(w["sfu"]["url"], format!("ws://{}/sfu/ws", sfu.addr));
    // The watcher token is for that node, role watcher.
    let claims: proto::token::SfuClaims = proto::token::TokenKey::new(&test_config().sfu_token_secret)
        .verify(w["sfu"]["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.role, proto::token::SfuRole::Watcher);
    assert_eq!(claims.node, proto::NodeId::new("n1"));
    let watcher = claims.sub.to_string();
    assert!(w["ice_servers"][0]["urls"][0]
        .as_str()
        .unwrap()
        .starts_with("turn:"));
    sfu.wait_call("watcher admission", |c| c == format!("admit {watcher} watcher"))
        .await;
    let watch_call = sfu
        .wait_call("watch", |c| c.starts_with(&format!("watch {watcher} ")))
        .await;
    assert!(
        watch_call.contains(sa.participant_id.as_str()) && watch_call.contains(sb.participant_id.as_str())
    );

    // Someone else's watch is not theirs to stop.
    let (st, _) = other
        .req("DELETE", &format!("/api/admin/watches/{watch_id}"), None)
        .await;
    assert_eq!(st, 403);
    let (st, _) = m
        .req("DELETE", &format!("/api/admin/watches/{watch_id}"), None)
        .await;
    assert_eq!(st, 204);
    sfu.wait_call("watch stop", |c| {
        c.starts_with(&format!("watch {watcher} ")) && c.ends_with(" stop")
    })
    .await;
    sfu.wait_call("watcher removed", |c| c == format!("kick {watcher}"))
        .await;
    let (st, _) = m
        .req("DELETE", &format!("/api/admin/watches/{watch_id}"), None)
        .await;
    assert_eq!(st, 404);
    let (_, log) = m.get(&format!("/api/admin/audit?target={pairing}")).await;
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["watch_stop", "watch_start"]);

    // A watcher whose page went away is noticed and recorded.
    let (_, w2) = m
        .post(&format!("/api/admin/pairings/{pairing}/watch"), json!({}))
        .await;
    let watcher2: proto::token::SfuClaims = proto::token::TokenKey::new(&test_config().sfu_token_secret)
        .verify(w2["sfu"]["token"].as_str().unwrap())
        .unwrap();
    sfu.drop_participant(watcher2.sub.as_str());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, log) = m.get("/api/admin/audit?action=watch_stop").await;
        if log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["details"]["reason"] == "disconnected")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gone watcher was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Users were told nothing about any of this.
    wa.send_json(json!({"type":"chat","text":"still here"})).await;
    assert_eq!(
        wb.recv().await,
        ServerMsg::Chat {
            text: "still here".into()
        }
    );
    let _ = &mut wa;
    server.stop().await;
}

#[tokio::test]
async fn ending_a_call_tells_both_sides_and_is_audited() {
    let (sfu, server) = server_with(config()).await;
    let m = moderator(&server, "end@example.org", "moderator").await;
    let (sa, mut wa, sb, mut wb, pairing) = video_call(&server, "device-enda0001", "device-endb0001").await;
    let (st, body) = m
        .post(&format!("/api/admin/pairings/{pairing}/end"), json!({}))
        .await;
    assert_eq!(st, 204, "{body}");
    for ws in [&mut wa, &mut wb] {
        let left = ws
            .recv_until(|m| matches!(m, ServerMsg::PartnerLeft { .. }))
            .await;
        assert_eq!(
            left,
            ServerMsg::PartnerLeft {
                reason: PartnerLeftReason::Ended
            }
        );
    }
    sfu.wait_call("unlink", |c| c.starts_with("unlink ")).await;
    let (st, _) = m
        .post(&format!("/api/admin/pairings/{pairing}/end"), json!({}))
        .await;
    assert_eq!(st, 404, "already over");
    let (_, log) = m.get("/api/admin/audit?action=end_call").await;
    assert_eq!(log["entries"][0]["target_id"], pairing.as_str());
    let _ = (sa, sb);
    server.stop().await;
}

#[tokio::test]
async fn report_queue_shows_evidence_and_a_ban_refuses_the_device_with_its_statement() {
    let (_sfu, server) = server_with(config()).await;
    let m = moderator(&server, "queue@example.org", "moderator").await;

    // Two reports: a spam report first, then a more severe one (minor).
    let (s1, _w1, _s2, mut w2, _) = video_call(&server, "device-qa000001", "device-qb000001").await;
    let spam = report(&server, &s1, "spam").await;
    let (s3, mut w3, _s4, mut w4, _) = video_call(&server, "device-qc000001", "device-qd000001").await;
    w3.send_json(json!({"type":"chat","text":"how old are you"}))
        .await;
    w4.recv_until(|m| matches!(m, ServerMsg::Chat { .. })).await;
    w4.send_json(json!({"type":"chat","text":"fifteen"})).await;
    w3.recv_until(|m| matches!(m, ServerMsg::Chat { .. })).await;
    let minor = report(&server, &s3, "minor").await;

    let (st, q) = m.get("/api/admin/reports").await;
    assert_eq!(st, 200);
    assert_eq!(q["total"], 2);
    assert_eq!(q["reports"][0]["id"], minor.as_str(), "most severe first");
    assert_eq!(q["reports"][1]["id"], spam.as_str());
    let (_, q) = m.get("/api/admin/reports?sort=newest").await;
    assert_eq!(q["reports"][0]["id"], minor.as_str());
    let (st, body) = m.get("/api/admin/reports?status=bogus").await;
    assert_eq!((st, body["code"].as_str()), (400, Some("bad_status")));

    // Evidence: transcript, snapshot, session details, device history.
    let (st, d) = m.get(&format!("/api/admin/reports/{minor}")).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["report"]["reported_device"], "device-qd000001");
    assert_eq!(d["report"]["category"], "minor");
    let lines: Vec<&str> = d["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(lines, vec!["how old are you", "fifteen"]);
    assert_eq!(d["snapshots"].as_array().unwrap().len(), 1);
    let snap = d["snapshots"][0]["id"].as_str().unwrap();
    let (status, image) = m.report_snapshot(&minor, snap).await;
    assert_eq!(status, 200);
    assert_eq!(image, SNAPSHOT);
    assert_eq!(d["history"]["reports"].as_array().unwrap().len(), 0);
    let (_, log) = m.get(&format!("/api/admin/audit?target={minor}")).await;
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["view_report_snapshot", "view_report"],
        "evidence views are audited"
    );

    // Warn about one (its page is told), ban the other (a preset duration, a statement).
    let (st, _) = m
        .post(
            &format!("/api/admin/reports/{spam}/action"),
            json!({"action":"warn","template":"spam","statement":"No advertising, please."}),
        )
        .await;
    assert_eq!(st, 200);
    let warned = w2
        .recv_until(|m| matches!(m, ServerMsg::Error(e) if e.code == "warning"))
        .await;
    let ServerMsg::Error(w) = warned else {
        unreachable!()
    };
    assert!(w.message.contains("No advertising, please."));
    let (st, body) = m
        .post(
            &format!("/api/admin/reports/{minor}/action"),
            json!({"action":"temporary_ban","duration_secs":604800,"template":"minor",
                   "statement":"You appear to be under 18. duet is only for adults."}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "banned");
    let (st, body) = m
        .post(
            &format!("/api/admin/reports/{minor}/action"),
            json!({"action":"dismiss","template":"other"}),
        )
        .await;
    assert_eq!((st, body["code"].as_str()), (409, Some("already_resolved")));
    let (_, q) = m.get("/api/admin/reports").await;
    assert_eq!(q["total"], 0, "the queue is empty");

    // The banned device's page is told at once …
    let refusal = w4
        .recv_until(|m| matches!(m, ServerMsg::Error(e) if e.code == "banned"))
        .await;
    let ServerMsg::Error(e) = refusal else {
        unreachable!()
    };
    let notice = e.ban.unwrap();
    assert_eq!(
        notice.reason,
        "You appear to be under 18. duet is only for adults."
    );
    assert!(notice.appeal_token.is_some());
    // … and its next session is refused with the statement.
    let (st, body) = try_session(&server, "device-qd000001").await;
    assert_eq!(st, 403);
    assert_eq!(
        body["ban"]["reason"],
        "You appear to be under 18. duet is only for adults."
    );
    assert!(body["ban"]["expires_at"].as_u64().unwrap() > 0);
    // The device history now shows the ban.
    let (_, bans) = m.get("/api/admin/bans?q=device-qd000001").await;
    assert_eq!(bans["total"], 1);
    assert_eq!(bans["bans"][0]["report_id"], minor.as_str());

    // The device appeals; another senior lifts the ban; the next visit is
    // told once, the one after is not.
    let r = reqwest::Client::new()
        .post(server.url("/api/appeals"))
        .json(&json!({"appeal_token": body["ban"]["appeal_token"], "text": "I am 34, see my ID."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    let other = moderator(&server, "other-senior@example.org", "senior").await;
    let (_, appeals) = other.get("/api/admin/appeals").await;
    let appeal_id = appeals["appeals"][0]["id"].as_str().unwrap().to_owned();
    let (st, decided) = other
        .post(
            &format!("/api/admin/appeals/{appeal_id}/decision"),
            json!({"decision":"lift","reason":"Adult, verified."}),
        )
        .await;
    assert_eq!(st, 200, "{decided}");
    let (st, first) = try_session(&server, "device-qd000001").await;
    assert_eq!(st, 200, "{first}");
    let told = first["notice"].as_str().unwrap_or_default();
    assert!(
        told.contains("appeal was accepted") && told.contains("Adult, verified."),
        "{first}"
    );
    let (st, second) = try_session(&server, "device-qd000001").await;
    assert_eq!(st, 200);
    assert!(second.get("notice").is_none(), "shown once only: {second}");
    server.stop().await;
}

#[tokio::test]
async fn block_list_searches_exports_imports_and_bulk_unbans() {
    let (_sfu, server) = server_with(config()).await;
    let s = moderator(&server, "list@example.org", "senior").await;
    for (kind, value, dur) in [
        ("device", "device-list0001", json!(3600)),
        ("ip", "203.0.113.7", json!(86400)),
        ("cidr", "198.51.100.0/24", Value::Null),
    ] {
        let (st, body) = s
            .post(
                "/api/admin/bans",
                json!({"kind": kind, "value": value, "reason": format!("abuse from {value}, \"quoted\""), "duration_secs": dur}),
            )
            .await;
        assert_eq!(st, 201, "{body}");
    }
    // Bad values are refused clearly.
    for (kind, value, code) in [
        ("ip", "300.1.1.1", "bad_value"),
        ("cidr", "10.0.0.0/4", "bad_value"),
        ("device", "x", "bad_value"),
        ("planet", "mars", "bad_value"),
    ] {
        let (st, body) = s
            .post(
                "/api/admin/bans",
                json!({"kind": kind, "value": value, "reason": "r", "duration_secs": 60}),
            )
            .await;
        assert_eq!(
            (st, body["code"].as_str()),
            (400, Some(code)),
            "{kind} {value}: {body}"
        );
    }
    // The IP and the range refuse sessions from them.
    let ban_ip = server
        .state
        .store()
        .active_ban(None, Some("198.51.100.9".parse().unwrap()), 0)
        .await
        .unwrap();
    assert!(ban_ip.is_some());

    let (_, found) = s.get("/api/admin/bans?q=203.0.113").await;
    assert_eq!(found["total"], 1);
    let (_, found) = s.get("/api/admin/bans?kind=cidr").await;
    assert_eq!(found["bans"][0]["value"], "198.51.100.0/24");

    let r = s
        .raw(reqwest::Method::GET, "/api/admin/bans/export")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = r.text().await.unwrap();
    assert!(csv.starts_with("id,kind,value,reason,"));
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.contains("\"abuse from 203.0.113.7, \"\"quoted\"\"\""));

    // Unban everything in bulk; the list is empty.
    let (_, all) = s.get("/api/admin/bans").await;
    let ids: Vec<Value> = all["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].clone())
        .collect();
    let (st, body) = s
        .post(
            "/api/admin/bans/unban",
            json!({"ids": ids, "reason": "moving to a new list"}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(body["lifted"], 3, "{body}");
    let (_, active) = s.get("/api/admin/bans").await;
    assert_eq!(active["total"], 0);
    let (_, lifted) = s.get("/api/admin/bans?state=lifted").await;
    assert_eq!(lifted["total"], 3);

    // The export imports back (lifted rows are skipped; active ones come back).
    let import = |body: String| {
        let s = s.clone();
        async move {
            let r = s
                .raw(reqwest::Method::POST, "/api/admin/bans/import")
                .await
                .header("content-type", "text/csv")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, body) = import(csv.clone()).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["imported"], 3);
    let (_, active) = s.get("/api/admin/bans").await;
    assert_eq!(active["total"], 3);
    // A bad row: nothing is imported, and the line is named.
    let (st, body) =
        import("kind,value,reason,expires_at\r\ndevice,device-good0001,ok,\r\nip,not-an-ip,bad,\r\n".into())
            .await;
    assert_eq!((st, body["code"].as_str()), (400, Some("bad_rows")));
    assert!(body["message"].as_str().unwrap().contains("line 3"), "{body}");
    let (_, found) = s.get("/api/admin/bans?q=device-good0001").await;
    assert_eq!(found["total"], 0);
    let (st, body) = import("\"unterminated".into()).await;
    assert_eq!((st, body["code"].as_str()), (400, Some("bad_csv")));
    // A moderator cannot import permanent bans.
    let m = moderator(&server, "junior@example.org", "moderator").await;
    let r = m
        .raw(reqwest::Method::POST, "/api/admin/bans/import")
        .await
        .header("content-type", "text/csv")
        .body("kind,value,reason\ndevice,device-perm0009,forever\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("senior"));

    // The audit log has it all, filterable and exportable.
    let (_, log) = s.get("/api/admin/audit?actor=list@").await;
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["ban_create", "bans_export", "ban_lift", "ban_import", "login"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    let r = s
        .raw(reqwest::Method::GET, "/api/admin/audit/export?action=ban_lift")
        .await
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn analytics_report_the_services_own_figures() {
    let (_sfu, server) = server_with(config()).await;
    let m = moderator(&server, "stats@example.org", "moderator").await;
    let (_sa, mut wa, _sb, _wb, _p) = video_call(&server, "device-sta00001", "device-stb00001").await;
    wa.send_json(json!({"type":"next"})).await;
    wa.recv_until(|m| matches!(m, ServerMsg::Queued { .. })).await;
    let (st, a) = m.get("/api/admin/analytics").await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["online"], 2);
    // A pressed Next: A waits again, B (told its partner left) waits for its own choice.
    assert_eq!(a["waiting"]["video"], 1);
    assert_eq!(a["active_pairings"], 0);
    assert_eq!(a["pairings_total"], 1);
    assert_eq!(a["calls_ended_total"], 1);
    assert_eq!(a["next_rate"], 1.0);
    assert!(a["time_to_match_p50_secs"].as_f64().is_some());
    assert!(a["avg_call_secs"].as_f64().is_some());
    assert_eq!(a["nodes"], 1);
    server.stop().await;
}
