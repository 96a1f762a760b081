//! Who may do what in the moderator API: every moderator route refuses
//! missing, malformed, forged, expired, wrong-audience, user (session),
//! revoked and disabled-account tokens; roles are enforced on the server
//! (a moderator cannot ban permanently nor decide appeals; nobody decides
//! an appeal of their own ban); logins are rate limited and lock accounts.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod admin_support;
mod common;

use admin_support::*;
use common::*;
use proto::token::{ModeratorClaims, ModeratorRole, AUD_MODERATOR, AUD_SESSION};
use serde_json::{json, Value};
use signaling::admin::{route_table, AdminRoute};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The route's path with sample ids in place of its parameters.
fn concrete(r: &AdminRoute) -> String {
    r.path
        .replace("{side}", "a")
        .replace("{pairing}", "p0000")
        .replace("{report}", "r0000")
        .replace("{snapshot}", "s0000")
        .replace("{watch}", "w0000")
        .replace("{appeal}", "a0000")
        .replace("{moderator}", "m0000")
}

/// Sends `r` with `token` (and a harmless body); returns status and JSON body.
async fn call(server: &Server, r: &AdminRoute, token: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(r.method.clone(), server.url(&concrete(r)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if r.method != reqwest::Method::GET && r.method != reqwest::Method::DELETE {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn mint(config: &signaling::SignalingConfig, claims: &ModeratorClaims) -> String {
    signaling::admin::moderator_key(config)
        .unwrap()
        .mint(claims)
        .unwrap()
}

#[tokio::test]
async fn every_moderator_route_refuses_expired_user_forged_and_revoked_tokens() {
    let mut config = test_config();
    config.admin.login_per_ip = signaling::RateLimit::UNLIMITED;
    let (_sfu, server) = server_with(config.clone()).await;
    let routes = route_table();
    assert!(routes.len() >= 25, "the table lists every moderator route");

    let admin = moderator(&server, "admin@example.org", "admin").await;
    let me: Value = admin.get("/api/admin/me").await.1;
    let admin_id = me["id"].as_str().unwrap().to_owned();

    // A visitor's session token (audience duet-session, the session key).
    let user = server.session("device-user0001").await.token;
    // Right key and audience, real session id, but expired.
    let jti_of = |t: &str| {
        let body = t.split('.').nth(1).unwrap();
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap();
        serde_json::from_slice::<Value>(&raw).unwrap()["jti"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let live_jti = jti_of(&admin.token);
    let claims = |aud: &str, exp: u64| ModeratorClaims {
        sub: admin_id.clone(),
        aud: aud.into(),
        exp,
        iat: now() - 3600,
        role: ModeratorRole::Admin,
        jti: live_jti.clone(),
    };
    let expired = mint(&config, &claims(AUD_MODERATOR, now() - 600));
    // Right key, wrong audience.
    let wrong_aud = mint(&config, &claims(AUD_SESSION, now() + 600));
    // Moderator claims signed with the session key (someone holding only that secret).
    let forged = proto::token::TokenKey::new(&config.session_secret)
        .mint(&claims(AUD_MODERATOR, now() + 600))
        .unwrap();
    // Right key, valid, but for a session that never existed.
    let mut unknown = claims(AUD_MODERATOR, now() + 600);
    unknown.jti = "no-such-session".into();
    let unknown = mint(&config, &unknown);
    // A token that was valid until its moderator logged out.
    let gone = moderator(&server, "gone@example.org", "admin").await;
    assert_eq!(gone.post("/api/admin/logout", json!({})).await.0, 204);
    // A token of an account an admin disabled afterwards.
    let disabled = moderator(&server, "off@example.org", "senior").await;
    let off_id = disabled.get("/api/admin/me").await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = admin
        .req(
            "PATCH",
            &format!("/api/admin/moderators/{off_id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, 200);

    let bad: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "unauthorized"),
        ("garbage", Some("not.a.jwt".into()), "bad_token"),
        ("user session token", Some(user), "bad_token"),
        ("expired", Some(expired), "token_expired"),
        ("wrong audience", Some(wrong_aud), "bad_token"),
        ("forged", Some(forged), "bad_token"),
        ("unknown session", Some(unknown), "bad_token"),
        ("logged out", Some(gone.token.clone()), "token_revoked"),
        (
            "disabled account",
            Some(disabled.token.clone()),
            "account_disabled",
        ),
    ];
    for r in &routes {
        for (what, token, code) in &bad {
            let (status, body) = call(&server, r, token.as_deref()).await;
            assert_eq!(status, 401, "{} {} with {what}: {body}", r.method, r.path);
            assert_eq!(body["code"], *code, "{} {} with {what}: {body}", r.method, r.path);
        }
        // With a valid admin token the route exists and lets it through the
        // guard (whatever the handler then says about the sample ids). A
        // fresh login each time: logout and refresh end the token they use.
        let fresh = login(&server, "admin@example.org").await;
        let (status, body) = call(&server, r, Some(&fresh.token)).await;
        assert!(
            status != 401 && status != 403,
            "{} {} refused a valid admin: {status} {body}",
            r.method,
            r.path
        );
        assert!(
            !(status == 404 && body["message"] == "no such API endpoint"),
            "{} {} is not routed",
            r.method,
            r.path
        );
    }
    // Unknown admin paths and wrong methods get JSON refusals too.
    let admin = login(&server, "admin@example.org").await;
    let (s, b) = admin.get("/api/admin/nope").await;
    assert_eq!((s, b["code"].as_str()), (404, Some("not_found")));
    let (s, b) = admin.get("/api/admin/logout").await;
    assert_eq!((s, b["code"].as_str()), (405, Some("method_not_allowed")), "{b}");
    let (s, b) = admin.req("PUT", "/api/appeals", Some(json!({}))).await;
    assert_eq!((s, b["code"].as_str()), (405, Some("method_not_allowed")), "{b}");
    // Public bodies are small; bad JSON is a JSON 400.
    let big = json!({"appeal_token": "x", "text": "y".repeat(64 * 1024)});
    let (s, b) = admin.post("/api/appeals", big).await;
    assert_eq!((s, b["code"].as_str()), (413, Some("payload_too_large")), "{b}");
    let (s, b) = admin.post("/api/admin/login", json!({"email": 1})).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("bad_json")), "{b}");
    server.stop().await;
}

#[tokio::test]
async fn roles_are_enforced_per_route_and_per_action() {
    let (_sfu, server) = server_with(test_config()).await;
    let m = moderator(&server, "mod@example.org", "moderator").await;
    let s = moderator(&server, "senior@example.org", "senior").await;

    // Routes above a role refuse it with 403; the same route works for the role it names.
    for r in route_table() {
        for (who, role) in [(&m, ModeratorRole::Moderator), (&s, ModeratorRole::Senior)] {
            if r.min_role > role {
                let (status, body) = call(&server, &r, Some(&who.token)).await;
                assert_eq!(status, 403, "{} {} as {role:?}: {body}", r.method, r.path);
                assert_eq!(body["code"], "forbidden");
            }
        }
    }

    // A moderator makes temporary bans but not permanent ones.
    let (st, body) = m
        .post(
            "/api/admin/bans",
            json!({"kind":"device","value":"device-perm0001","reason":"spam links"}),
        )
        .await;
    assert_eq!((st, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (st, body) = m
        .post(
            "/api/admin/bans",
            json!({"kind":"device","value":"device-temp0001","reason":"spam links","duration_secs":3600}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    // … and, from a report, only with a preset duration; permanent is senior.
    let (sa, _wa, _sb, _wb, _p) = video_call(&server, "device-repa0001", "device-repb0001").await;
    let rid = report(&server, &sa, "spam").await;
    let perm = json!({"action":"permanent_ban","template":"spam","statement":"You spammed people."});
    let (st, body) = m
        .post(&format!("/api/admin/reports/{rid}/action"), perm.clone())
        .await;
    assert_eq!((st, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let odd = json!({"action":"temporary_ban","duration_secs":1234,"template":"spam","statement":"x"});
    let (st, body) = m.post(&format!("/api/admin/reports/{rid}/action"), odd).await;
    assert_eq!((st, body["code"].as_str()), (400, Some("bad_duration")), "{body}");
    let (st, body) = s.post(&format!("/api/admin/reports/{rid}/action"), perm).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["expires_at"], Value::Null, "permanent");
    // Lifting a permanent ban is a senior's too.
    let ban_id = body["ban_id"].as_str().unwrap().to_owned();
    let (st, body) = m
        .post(
            "/api/admin/bans/unban",
            json!({"ids":[ban_id], "reason":"mistake"}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(body["lifted"], 0, "{body}");
    assert!(body["skipped"][0]["why"].as_str().unwrap().contains("senior"));
    assert_eq!(body["skipped"][0]["code"], "needs_senior", "{body}");
    server.stop().await;
}

#[tokio::test]
async fn nobody_decides_an_appeal_of_their_own_ban_and_moderators_decide_none() {
    let (_sfu, server) = server_with(test_config()).await;
    let banner = moderator(&server, "banner@example.org", "senior").await;
    let other = moderator(&server, "other@example.org", "senior").await;
    let junior = moderator(&server, "junior@example.org", "moderator").await;

    let (sa, _wa, _sb, _wb, _p) = video_call(&server, "device-vica0001", "device-offb0001").await;
    let rid = report(&server, &sa, "harassment").await;
    let (st, body) = banner
        .post(
            &format!("/api/admin/reports/{rid}/action"),
            json!({"action":"temporary_ban","duration_secs":86400,"template":"harassment",
                   "statement":"You insulted the person you talked to."}),
        )
        .await;
    assert_eq!(st, 200, "{body}");

    // The banned device is refused with the statement and an appeal token.
    let (st, refusal) = try_session(&server, "device-offb0001").await;
    assert_eq!(st, 403);
    assert_eq!(refusal["code"], "banned");
    assert_eq!(refusal["ban"]["reason"], "You insulted the person you talked to.");
    let token = refusal["ban"]["appeal_token"].as_str().unwrap().to_owned();
    let appeal = |text: String| {
        let (url, token) = (server.url("/api/appeals"), token.clone());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&json!({"appeal_token": token, "text": text}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, body) = appeal("x".repeat(1025)).await;
    assert_eq!((st, body["code"].as_str()), (400, Some("text_too_long")));
    let (st, body) = appeal("I was quoting a film, sorry.".into()).await;
    assert_eq!(st, 201, "{body}");
    let appeal_id = body["appeal_id"].as_str().unwrap().to_owned();
    let (st, body) = appeal("again".into()).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (409, Some("already_appealed")),
        "once per ban"
    );
    let (st, refusal) = try_session(&server, "device-offb0001").await;
    assert_eq!(st, 403);
    assert_eq!(refusal["ban"]["appeal_status"], "pending");
    assert_eq!(refusal["ban"]["can_appeal"], false);
    assert!(refusal["ban"].get("appeal_token").is_none());

    let decide = json!({"decision":"lift","reason":"Context shows a quote."});
    let path = format!("/api/admin/appeals/{appeal_id}/decision");
    let (st, body) = banner.post(&path, decide.clone()).await;
    assert_eq!((st, body["code"].as_str()), (403, Some("own_ban")), "{body}");
    let (st, body) = junior.post(&path, decide.clone()).await;
    assert_eq!((st, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    // The list says who may decide, and why not as a code the page translates.
    let (_, list) = banner.get("/api/admin/appeals").await;
    assert_eq!(list["appeals"][0]["can_decide"], false);
    assert_eq!(list["appeals"][0]["cannot_decide_code"], "own_ban");
    let (_, list) = junior.get("/api/admin/appeals").await;
    assert_eq!(list["appeals"][0]["cannot_decide_code"], "needs_senior");
    let (_, list) = other.get("/api/admin/appeals").await;
    assert_eq!(list["appeals"][0]["can_decide"], true);
    assert_eq!(list["appeals"][0]["cannot_decide_code"], Value::Null);
    let (st, body) = other.post(&path, decide.clone()).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "lifted");
    let (st, body) = other.post(&path, decide).await;
    assert_eq!((st, body["code"].as_str()), (409, Some("already_decided")));

    // Lifted: the device gets in again; the decision is in the audit log.
    assert_eq!(try_session(&server, "device-offb0001").await.0, 200);
    let (_, log) = junior.get("/api/admin/audit?action=appeal_decide").await;
    let e = &log["entries"][0];
    assert_eq!(e["actor"], "other@example.org");
    assert_eq!(e["target_id"], appeal_id.as_str());
    assert_eq!(e["details"]["decision"], "lifted");
    assert_eq!(e["details"]["banned_by"], "banner@example.org");
    server.stop().await;
}

#[tokio::test]
async fn logins_are_rate_limited_per_ip_and_lock_an_account_after_wrong_passwords() {
    let mut config = test_config();
    config.admin.lockout_after = 3;
    config.admin.login_per_ip = signaling::RateLimit::new(0.001, 8);
    let (_sfu, server) = server_with(config).await;
    account(&server, "lock@example.org", "moderator").await;
    let client = reqwest::Client::new();
    let attempt = |password: &'static str| {
        let (client, url) = (client.clone(), server.url("/api/admin/login"));
        async move {
            let r = client
                .post(url)
                .json(&json!({"email":"lock@example.org","password": password}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").is_some();
            (status, r.json::<Value>().await.unwrap(), retry)
        }
    };
    for _ in 0..3 {
        let (st, body, _) = attempt("wrong password!").await;
        assert_eq!((st, body["code"].as_str()), (401, Some("bad_credentials")));
    }
    // Locked now: even the right password is refused, with Retry-After.
    let (st, body, retry) = attempt(PASSWORD).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (429, Some("account_locked")),
        "{body}"
    );
    assert!(retry);
    // An admin unlocks it.
    let admin = moderator(&server, "root@example.org", "admin").await;
    let id = admin.get("/api/admin/moderators").await.1["moderators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "lock@example.org")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) = admin
        .req(
            "PATCH",
            &format!("/api/admin/moderators/{id}"),
            Some(json!({"unlock": true})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(attempt(PASSWORD).await.0, 200);
    // 8 attempts per IP were allowed (3 wrong, 1 locked, 1 admin, 1 right): the rest is 429.
    let mut limited = false;
    for _ in 0..4 {
        let (st, body, retry) = attempt("wrong password!").await;
        if st == 429 && body["code"] == "rate_limited" {
            assert!(retry);
            limited = true;
        }
    }
    assert!(limited, "the per-IP login limit refused");
    // Failed logins are audited.
    let (_, log) = admin.get("/api/admin/audit?action=login_failed").await;
    assert!(log["entries"].as_array().unwrap().len() >= 3);
    server.stop().await;
}
