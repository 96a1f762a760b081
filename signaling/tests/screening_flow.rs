//! Signaling's half of automatic screening, through its internal API and
//! the moderator API: screeners list the live video calls and keep
//! keyframes coming, each sample is claimed once, a flagged result puts its
//! call at the top of the wall with its score, a high one files one
//! automatic report with the snapshot, the audit log names the screener,
//! nothing is banned, and a moderator's clear stops the flagging.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod admin_support;
mod common;

use admin_support::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Bytes posted as the flagged snapshot (only its WebP header is checked).
const FLAGGED_WEBP: &[u8] = b"RIFF\x14\x00\x00\x00WEBPVP8 flagged-keyframe";

struct Internal {
    base: String,
    http: reqwest::Client,
}

impl Internal {
    async fn start(server: &Server) -> Self {
        let (addr, _cancel) =
            serve_on_port_0(signaling::screening::internal_router(server.state.clone())).await;
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.bearer_auth(INTERNAL_TOKEN).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn calls(&self) -> Value {
        let url = format!(
            "{}/internal/v1/screening/calls?keyframe_interval_ms=5000",
            self.base
        );
        let (st, v) = self.send(self.http.get(url)).await;
        assert_eq!(st, 200, "{v}");
        v
    }

    async fn claim(&self, pairing: &str, side: &str, slot: u32) -> usize {
        let body = json!({"screener": "s-1", "ttl_ms": 10_000,
            "samples": [{"pairing_id": pairing, "side": side, "slot": slot}]});
        let url = format!("{}/internal/v1/screening/claims", self.base);
        let (st, v) = self.send(self.http.post(url).json(&body)).await;
        assert_eq!(st, 200, "{v}");
        v["samples"].as_array().unwrap().len()
    }

    /// Posts a result for `side` of `call` (an entry of the listing).
    async fn result(&self, call: &Value, side: &str, score: f32, level: &str) -> Value {
        let participant = call["sides"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["side"] == side)
            .unwrap()["participant"]
            .clone();
        let snapshot = (level != "clear").then(|| base64(FLAGGED_WEBP));
        let body = json!({
            "screener": "s-1", "model": "colour-test",
            "sample": {"pairing_id": call["pairing_id"], "side": side, "slot": 0},
            "participant": participant,
            "scores": [{"category": "red", "score": score, "level": level, "report_category": "nudity"}],
            "snapshot_webp_b64": snapshot, "snapshot_age_ms": 40,
        });
        let url = format!("{}/internal/v1/screening/results", self.base);
        let (st, v) = self.send(self.http.post(url).json(&body)).await;
        assert_eq!(st, 200, "{v}");
        v
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn call<'a>(calls: &'a Value, pairing: &str) -> &'a Value {
    calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["pairing_id"] == pairing)
        .unwrap()
}

fn wall_order(wall: &Value) -> Vec<String> {
    wall["pairings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pairing_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_flagged_call_tops_the_wall_files_one_report_and_is_audited_without_a_ban() {
    let mut config = test_config();
    config.admin.wall_open_ttl = Duration::from_secs(3);
    let (sfu, server) = server_with(config).await;
    let internal = Internal::start(&server).await;
    let m = moderator(&server, "screen@example.org", "moderator").await;
    let (_sa, _wa, _sb, _wb, older) = video_call(&server, "device-scrna001", "device-scrnb001").await;
    let (_sc, _wc, _sd, _wd, newer) = video_call(&server, "device-scrnc001", "device-scrnd001").await;

    // Screeners see both calls with their node; listing keeps keyframes coming.
    let calls = internal.calls().await;
    assert_eq!(calls["calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        call(&calls, &older)["internal_url"],
        format!("http://{}", sfu.addr)
    );
    assert_eq!(call(&calls, &older)["cleared"], false);
    sfu.wait_call("screening keyframes", |c| c == "keyframes 5000")
        .await;

    // A sample goes to the first screener that claims it.
    assert_eq!(internal.claim(&older, "b", 0).await, 1);
    assert_eq!(internal.claim(&older, "b", 0).await, 0);

    // Unflagged, the wall keeps its order: longest-running first.
    let (_, wall) = m.get("/api/admin/wall").await;
    assert_eq!(wall_order(&wall), vec![older.clone(), newer.clone()]);

    // A clear result stores nothing; review flags; high reports.
    let r = internal.result(call(&calls, &older), "a", 0.1, "clear").await;
    assert_eq!(r["outcome"], "clear");
    let r = internal.result(call(&calls, &older), "b", 0.6, "review").await;
    assert_eq!(r["outcome"], "flagged");
    let r = internal.result(call(&calls, &newer), "a", 0.9, "high").await;
    assert_eq!(r["outcome"], "reported");
    let report_id = r["report_id"].as_str().unwrap().to_owned();
    // The same side flagged high again: still one report.
    let again = internal.result(call(&calls, &newer), "a", 0.95, "high").await;
    assert_eq!(again["outcome"], "flagged");
    assert_eq!(again["report_id"], report_id.as_str());

    // The riskiest call first, with its score.
    let (_, wall) = m.get("/api/admin/wall").await;
    assert_eq!(wall_order(&wall), vec![newer.clone(), older.clone()]);
    let top = &wall["pairings"][0]["screening"];
    assert_eq!(
        (top["level"].as_str(), top["side"].as_str()),
        (Some("high"), Some("a"))
    );
    assert!((top["score"].as_f64().unwrap() - 0.95).abs() < 1e-6, "{top}");
    assert_eq!(top["samples"], 2);
    assert_eq!(top["report_id"], report_id.as_str());
    assert_eq!(wall["pairings"][1]["screening"]["level"], "review");

    // The automatic report in the queue, with the snapshot and the model's score.
    let (_, queue) = m.get("/api/admin/reports").await;
    let auto: Vec<&Value> = queue["reports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reporter_device"] == "(screening)")
        .collect();
    assert_eq!(auto.len(), 1, "{queue}");
    assert_eq!(
        (auto[0]["id"].as_str(), auto[0]["category"].as_str()),
        (Some(report_id.as_str()), Some("nudity"))
    );
    let (_, detail) = m.get(&format!("/api/admin/reports/{report_id}")).await;
    assert_eq!(detail["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(detail["screening"][0]["model"], "colour-test");
    let snap = detail["snapshots"][0]["id"].as_str().unwrap();
    let (_, image) = m.report_snapshot(&report_id, snap).await;
    assert_eq!(image, FLAGGED_WEBP);

    // The audit log names the screener and the model; nobody was banned.
    let (_, audit) = m.get("/api/admin/audit?actor=screener:s-1").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "screen_flag").count(),
        2,
        "{audit}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "screen_report").count(),
        1,
        "{audit}"
    );
    let flag = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "screen_report")
        .unwrap();
    assert_eq!(flag["details"]["model"], "colour-test");
    let (_, bans) = m.get("/api/admin/bans?state=all").await;
    assert_eq!(bans["total"], 0, "{bans}");

    // A moderator clears the call: it drops to its place and is not flagged again.
    let (st, _) = m
        .post(&format!("/api/admin/pairings/{newer}/screening/clear"), json!({}))
        .await;
    assert_eq!(st, 204);
    let calls = internal.calls().await;
    assert_eq!(call(&calls, &newer)["cleared"], true);
    let r = internal.result(call(&calls, &newer), "a", 0.99, "high").await;
    assert_eq!(r["outcome"], "cleared");
    let (_, wall) = m.get("/api/admin/wall").await;
    assert_eq!(wall_order(&wall), vec![older.clone(), newer.clone()]);
    assert_eq!(wall["pairings"][1]["screening"]["cleared"], true);
    let (_, audit) = m.get("/api/admin/audit?action=screen_clear").await;
    assert_eq!(audit["entries"][0]["actor"], "screen@example.org", "{audit}");
    server.stop().await;
}

#[tokio::test]
async fn the_internal_api_needs_the_internal_token_and_refuses_malformed_results() {
    let (_sfu, server) = server_with(test_config()).await;
    let internal = Internal::start(&server).await;
    let url = format!("{}/internal/v1/screening/calls", internal.base);
    let r = internal.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = internal
        .http
        .get(&url)
        .bearer_auth("wrong-token-of-same-len")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (_sa, _wa, _sb, _wb, pairing) = video_call(&server, "device-scrne001", "device-scrnf001").await;
    let calls = internal.calls().await;
    let c = call(&calls, &pairing);
    // Flagged without a snapshot, a score out of range, a category that is not a label value.
    let url = format!("{}/internal/v1/screening/results", internal.base);
    let part = &c["sides"][0]["participant"];
    for (score, level, snapshot, category) in [
        (0.9, "high", Value::Null, "red"),
        (1.5, "high", json!(base64(FLAGGED_WEBP)), "red"),
        (0.9, "high", json!(base64(b"GIF89a not webp")), "red"),
        (0.9, "high", json!(base64(FLAGGED_WEBP)), "Red Things"),
    ] {
        let body = json!({
            "screener": "s-1", "model": "m", "sample": {"pairing_id": pairing, "side": "a", "slot": 0},
            "participant": part, "snapshot_webp_b64": snapshot, "snapshot_age_ms": 0,
            "scores": [{"category": category, "score": score, "level": level, "report_category": "nudity"}],
        });
        let (st, v) = internal.send(internal.http.post(&url).json(&body)).await;
        assert_eq!((st, v["code"].as_str()), (400, Some("bad_result")), "{body}: {v}");
    }
    // A call that ended is gone, not an error.
    let body = json!({
        "screener": "s-1", "model": "m", "sample": {"pairing_id": "no-such-pairing", "side": "a", "slot": 0},
        "participant": part, "snapshot_webp_b64": base64(FLAGGED_WEBP), "snapshot_age_ms": 0,
        "scores": [{"category": "red", "score": 0.9, "level": "high", "report_category": "nudity"}],
    });
    let (st, v) = internal.send(internal.http.post(&url).json(&body)).await;
    assert_eq!((st, v["outcome"].as_str()), (200, Some("gone")), "{v}");
    server.stop().await;
}
