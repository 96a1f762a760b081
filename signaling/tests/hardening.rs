//! What an attacker or a crowd does to the HTTP port: connections that send
//! nothing or half a request, bad methods and content types, huge URLs,
//! WebSocket protocol violations, many sockets and pings from one address,
//! joins while the database is unavailable, disguised chat text, headers.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use proto::signal::ServerMsg;
use serde_json::{json, Value};
use signaling::{RateLimit, SignalingConfig};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn started(config: SignalingConfig) -> (FakeSfu, Server) {
    let sfu = FakeSfu::start().await;
    let server = Server::start(config).await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    (sfu, server)
}

/// A parsed HTTP answer.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The documented error body: JSON with a `code` and a `message`.
    fn assert_error_body(&self, what: &str) {
        assert!(
            self.status >= 400 && self.content_type.starts_with("application/json"),
            "{what}: {} {} {:?}",
            self.status,
            self.content_type,
            self.body
        );
        let v = self.json();
        assert!(
            v["code"].as_str().is_some_and(|c| !c.is_empty()) && v["message"].is_string(),
            "{what}: {} {:?}",
            self.status,
            self.body
        );
    }
}

/// Sends `request` as is on a fresh connection and reads the answer (the
/// request asks for `connection: close`, or is one the server closes after).
async fn raw(server: &Server, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        body: body.to_owned(),
    }
}

fn request(method: &str, path: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: duet.test\r\nconnection: close\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Every route of the service: `(method, path)` with parameters filled in.
fn routes() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        ("POST", "/api/session"),
        ("POST", "/api/reports"),
        ("GET", "/api/stats"),
        ("POST", "/api/admin/login"),
        ("POST", "/api/appeals"),
        ("GET", "/ws"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    for r in signaling::admin::route_table() {
        let mut path = String::new();
        for seg in r.path.split('/').skip(1) {
            path.push('/');
            path.push_str(if seg.starts_with('{') { "x1" } else { seg });
        }
        out.push((r.method.to_string(), path));
    }
    out
}

#[tokio::test]
async fn every_route_answers_bad_method_bad_content_type_and_oversized_url_with_the_json_error_body() {
    let (_sfu, server) = started(test_config()).await;
    // The ones an outside probe found answering with an empty body.
    for (method, path) in [
        ("GET", "/api/session"),
        ("PUT", "/api/session"),
        ("DELETE", "/api/reports"),
        ("POST", "/api/stats"),
        ("POST", "/ws"),
    ] {
        let a = raw(&server, &request(method, path, "", "")).await;
        a.assert_error_body(&format!("{method} {path}"));
        assert_eq!(a.status, 405, "{method} {path}");
        assert_eq!(a.json()["code"], "method_not_allowed", "{method} {path}");
    }
    let huge_query = format!("q={}", "a".repeat(100 * 1024));
    for (method, path) in routes() {
        let what = format!("{method} {path}");
        // A method no route takes.
        raw(&server, &request("TRACE", &path, "", ""))
            .await
            .assert_error_body(&format!("TRACE {path}"));
        // A content type that is not JSON, and one the HTTP parser refuses.
        let a = raw(
            &server,
            &request(&method, &path, "content-type: text/plain\r\n", "{}"),
        )
        .await;
        if a.status >= 400 {
            a.assert_error_body(&format!("{what} text/plain"));
        }
        let a = raw(
            &server,
            &request(&method, &path, "content-type: \x01\x02garbage\r\n", "{}"),
        )
        .await;
        a.assert_error_body(&format!("{what} garbage content-type"));
        assert_eq!(a.status, 400, "{what}");
        // A 100 kB query string.
        let a = raw(
            &server,
            &request(&method, &format!("{path}?{huge_query}"), "", ""),
        )
        .await;
        a.assert_error_body(&format!("{what} 100 kB URL"));
        assert_eq!(a.status, 414, "{what}");
        assert_eq!(a.json()["code"], "uri_too_long");
    }
    // The pages answer the same way for another method.
    raw(&server, &request("DELETE", "/", "", ""))
        .await
        .assert_error_body("DELETE /");
    // And the server is fine afterwards.
    server.session("device-after-probe").await;
    server.stop().await;
}

#[tokio::test]
async fn idle_and_slowloris_connections_are_closed_within_the_header_timeout() {
    let mut config = test_config();
    config.http.header_timeout = Duration::from_secs(1);
    let (_sfu, server) = started(config).await;

    /// Seconds until the server closes `s` (reading and dropping what comes).
    async fn closed_after(mut s: TcpStream, started: Instant, trickle: bool) -> f64 {
        let mut buf = [0u8; 4096];
        let guard = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < guard, "connection still open after 20 s");
            if trickle {
                // One more header line every 200 ms: never a complete head.
                let _ = s.write_all(b"x-slow: 1\r\n").await;
            }
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed().as_secs_f64(),
                Ok(Ok(_)) | Err(_) => {}
            }
        }
    }

    let t = Instant::now();
    let idle = TcpStream::connect(server.addr).await.unwrap();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: duet.test\r\n")
        .await
        .unwrap();
    // A keep-alive connection after its answer.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /api/stats HTTP/1.1\r\nhost: duet.test\r\n\r\n")
        .await
        .unwrap();
    let (a, b, c) = tokio::join!(closed_after(idle, t, false), closed_after(slow, t, true), async {
        let mut buf = [0u8; 1024];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        closed_after(kept, Instant::now(), false).await
    },);
    // Configured 1 s; the upper bound only guards against "never".
    for (what, secs) in [("idle", a), ("slowloris", b), ("keep-alive idle", c)] {
        assert!((0.9..10.0).contains(&secs), "{what} closed after {secs:.2} s");
    }
    let timeouts = server
        .metrics
        .gather()
        .into_iter()
        .find(|f| f.name() == "duet_http_timeouts_total")
        .expect("duet_http_timeouts_total");
    let header: f64 = timeouts
        .get_metric()
        .iter()
        .filter(|m| m.get_label().iter().any(|l| l.value() == "header"))
        .map(|m| m.get_counter().get_value())
        .sum();
    assert!(header >= 3.0, "header timeouts counted: {header}");
    server.session("device-after-slowloris").await;
    server.stop().await;
}

/// A WebSocket opened by hand on a raw connection, to send malformed frames.
async fn raw_ws(server: &Server, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /ws?token={token} HTTP/1.1\r\nhost: duet.test\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A client frame with the mask bit set (`masked`) and the key 0.
fn frame(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    let mask = if masked { 0x80 } else { 0 };
    if payload.len() < 126 {
        f.push(mask | payload.len() as u8);
    } else {
        f.push(mask | 127);
        f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    if masked {
        f.extend_from_slice(&[0, 0, 0, 0]);
    }
    f.extend_from_slice(payload);
    f
}

/// Reads server frames until the close frame; its code.
async fn close_code(s: &mut TcpStream) -> Option<u16> {
    let read = async {
        loop {
            let mut h = [0u8; 2];
            s.read_exact(&mut h).await.ok()?;
            let mut len = (h[1] & 0x7f) as usize;
            if len == 126 {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.ok()?;
                len = u16::from_be_bytes(l) as usize;
            } else if len == 127 {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.ok()?;
                len = u64::from_be_bytes(l) as usize;
            }
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.ok()?;
            if h[0] & 0x0f == 0x8 {
                return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("no close frame")
}

#[tokio::test]
async fn each_websocket_protocol_violation_closes_with_its_code() {
    let (_sfu, server) = started(test_config()).await;
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("unmasked frame", frame(0x81, false, b"{}"), 1002),
        ("reserved bit set", frame(0x81 | 0x40, true, b"{}"), 1002),
        ("unknown opcode", frame(0x83, true, b""), 1002),
        (
            "text that is not UTF-8",
            frame(0x81, true, &[0x7b, 0xff, 0xfe, 0x7d]),
            1007,
        ),
        (
            "frame over 64 KiB",
            frame(0x81, true, &vec![b'a'; 70 * 1024]),
            1009,
        ),
    ];
    for (i, (what, bytes, code)) in cases.into_iter().enumerate() {
        let s = server.session(&format!("device-proto-{i}")).await;
        let mut ws = raw_ws(&server, &s.token).await;
        ws.write_all(&bytes).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(code), "{what}");
    }
    server.session("device-after-frames").await;
    server.stop().await;
}

#[tokio::test]
async fn the_per_ip_websocket_cap_refuses_the_next_socket_with_too_many_connections() {
    let mut config = test_config();
    config.rate_limits.ws_per_ip = 3;
    let (_sfu, server) = started(config).await;
    let mut open = Vec::new();
    for i in 0..3 {
        let s = server.session(&format!("device-cap-{i}")).await;
        open.push(server.ws(&s.token).await);
    }
    let s = server.session("device-cap-over").await;
    let upgrade = |token: String| {
        reqwest::Client::new()
            .get(server.url(&format!("/ws?token={token}")))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
    };
    let resp = upgrade(s.token.clone()).await.unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "too_many_connections", "{v}");
    // A socket that closes gives its slot back.
    let mut first = open.remove(0);
    first.ws.close(None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let status = upgrade(s.token.clone()).await.unwrap().status();
        if status == 101 {
            break;
        }
        assert_eq!(status, 429);
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = server
        .metrics
        .gather()
        .into_iter()
        .find(|f| f.name() == "duet_signaling_rate_limited_total")
        .expect("rate_limited_total");
    assert!(refused
        .get_metric()
        .iter()
        .any(|m| m.get_label().iter().any(|l| l.value() == "ws_per_ip")));
    server.stop().await;
}

#[tokio::test]
async fn a_ping_flood_is_closed_with_policy_violation() {
    let mut config = test_config();
    config.rate_limits.ws_ping_per_ip = RateLimit::new(0.01, 5);
    let (_sfu, server) = started(config).await;
    let s = server.session("device-pinger").await;
    let mut ws = server.ws(&s.token).await;
    for _ in 0..20 {
        if ws.ws.send(Message::Ping(vec![1, 2, 3].into())).await.is_err() {
            break;
        }
    }
    assert_eq!(ws.closed().await, Some(1008));
    server.session("device-after-pings").await;
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_that_answers_nothing_is_closed_after_the_idle_timeout() {
    let mut config = test_config();
    config.ws_idle_timeout = Duration::from_secs(1);
    let (_sfu, server) = started(config).await;
    // A live client (it answers the server's pings while reading) stays.
    let s = server.session("device-live").await;
    let mut live = server.ws(&s.token).await;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(200), live.ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("the live socket got {other:?}"),
        }
    }
    live.send_json(json!({"type":"join","mode":"text"})).await;
    assert!(matches!(live.recv().await, ServerMsg::Queued { .. }));
    // A client that answers no ping (a raw socket reads the frames but
    // sends nothing back) is closed.
    let s = server.session("device-dead").await;
    let mut dead = raw_ws(&server, &s.token).await;
    assert_eq!(close_code(&mut dead).await, Some(1001));
    server.stop().await;
}

#[tokio::test]
async fn joins_succeed_while_the_database_is_unavailable() {
    let (_sfu, server) = started(test_config()).await;
    // The join path (session, WebSocket, join) must not need the database:
    // with the pool closed, every query fails at once.
    server.state.store().close().await;
    let joins = (0..100).map(|i| {
        let server = &server;
        async move {
            let resp = reqwest::Client::new()
                .post(server.url("/api/session"))
                .json(&json!({"accept_rules": true, "device_id": format!("device-nodb-{i}")}))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert_eq!(status, 200, "session {i}: {body}");
            let s: proto::signal::SessionResponse = serde_json::from_str(&body).unwrap();
            let mut ws = server.ws(&s.token).await;
            ws.send_json(json!({"type":"join","mode":"text"})).await;
            assert!(matches!(ws.recv().await, ServerMsg::Queued { .. }));
            ws
        }
    });
    let sockets = futures::future::join_all(joins).await;
    assert_eq!(sockets.len(), 100);
    server.stop().await;
}

#[tokio::test]
async fn chat_strips_bidi_overrides_and_zero_width_characters() {
    let (_sfu, server) = started(test_config()).await;
    let a = server.session("device-chat-a").await;
    let b = server.session("device-chat-b").await;
    let mut wa = server.ws(&a.token).await;
    let mut wb = server.ws(&b.token).await;
    for ws in [&mut wa, &mut wb] {
        ws.send_json(json!({"type":"join","mode":"text"})).await;
    }
    for ws in [&mut wa, &mut wb] {
        ws.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
    }
    wa.send_json(
        json!({"type":"chat","text":"see \u{202E}moc.evil\u{202C} ev\u{200B}il \u{1F44B}\u{1F3FD}"}),
    )
    .await;
    match wb.recv_until(|m| matches!(m, ServerMsg::Chat { .. })).await {
        ServerMsg::Chat { text } => assert_eq!(text, "see moc.evil evil \u{1F44B}\u{1F3FD}"),
        _ => unreachable!(),
    }
    // Nothing but invisible characters is an empty message.
    wa.send_json(json!({"type":"chat","text":"\u{200B}\u{202E}"}))
        .await;
    match wa.recv_until(|m| matches!(m, ServerMsg::Error(_))).await {
        ServerMsg::Error(e) => assert_eq!(e.code, "empty_chat"),
        _ => unreachable!(),
    }
    server.stop().await;
}

#[tokio::test]
async fn token_answers_are_not_cached_and_the_csp_names_only_known_origins() {
    let (_sfu, server) = started(test_config()).await;
    let client = reqwest::Client::new();
    let resp = client
        .post(server.url("/api/session"))
        .json(&json!({"accept_rules": true, "device_id": "device-cache"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let resp = client
        .post(server.url("/api/admin/login"))
        .json(&json!({"email": "nobody@example.org", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["cache-control"], "no-store");

    let host = server.addr.to_string();
    let sfu_origin = format!("ws://{}", _sfu.addr);
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = client.get(server.url("/")).send().await.unwrap();
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        let connect = csp
            .split(';')
            .find_map(|d| d.trim().strip_prefix("connect-src "))
            .unwrap()
            .to_owned();
        let sources: Vec<&str> = connect.split_whitespace().collect();
        assert!(
            !sources.contains(&"ws:") && !sources.contains(&"wss:"),
            "no WebSocket to any host: {csp}"
        );
        for s in &sources {
            assert!(
                *s == "'self'" || s.ends_with(&host) || *s == sfu_origin,
                "unexpected source {s} in {csp}"
            );
        }
        // The node's origin appears once the registry has been read.
        if sources.contains(&sfu_origin.as_str()) {
            assert!(sources.contains(&format!("ws://{host}").as_str()), "{csp}");
            break;
        }
        assert!(Instant::now() < deadline, "the SFU origin never appeared: {csp}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}
