//! One visit, one trace: `duet up --otlp-endpoint` sends its spans over
//! OTLP/HTTP to a receiver in this test, which decodes the real OTLP
//! protobuf. Two visitors go session -> SFU (admission, WebSocket join) ->
//! signaling WebSocket join -> match -> chat -> Next -> report, and each
//! visit's spans, signaling's and the SFU's, share one trace id with the
//! right parents; no attribute holds an IP address or the chat text. Without
//! an endpoint nothing is sent.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use futures::{SinkExt, StreamExt};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use proto::signal::{ServerMsg, SessionResponse};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Hang guard of every wait, never a timing assertion.
const WAIT: Duration = Duration::from_secs(30);
const CHAT: &str = "tracing must never carry these chat words";

#[derive(Clone, Debug)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attrs: Vec<(String, String)>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

type Received = Arc<Mutex<(usize, Vec<Span>)>>;

/// An OTLP/HTTP receiver: `(base URL, (requests, spans))`.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::new(Mutex::new((0, Vec::new())));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                let mut got = sink.lock().unwrap();
                got.0 += 1;
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| r.attributes.iter())
                        .find(|kv| kv.key == "service.name")
                        .map(text)
                        .unwrap_or_default();
                    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        got.1.push(Span {
                            service: service.clone(),
                            name: span.name.clone(),
                            trace_id: span.trace_id.clone(),
                            span_id: span.span_id.clone(),
                            parent: span.parent_span_id.clone(),
                            attrs: span
                                .attributes
                                .iter()
                                .map(|kv| (kv.key.clone(), text(kv)))
                                .collect(),
                        });
                    }
                }
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn session(http: &str, device: &str) -> SessionResponse {
    let resp = reqwest::Client::new()
        .post(format!("{http}/api/session"))
        .json(&json!({"accept_rules": true, "device_id": device}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn ws(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send(ws: &mut Ws, msg: serde_json::Value) {
    ws.send(Message::Text(msg.to_string().into())).await.unwrap();
}

/// The next server message of `kind` (`"matched"`, ...), skipping others.
async fn expect(ws: &mut Ws, kind: &str) -> ServerMsg {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await.expect("socket open").unwrap() {
                Message::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == kind {
                        return serde_json::from_value(v).unwrap();
                    }
                }
                Message::Close(c) => panic!("closed while waiting for {kind}: {c:?}"),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} within {WAIT:?}"))
}

/// A visitor up to the match: session, SFU WebSocket, signaling WebSocket.
struct Visitor {
    session: SessionResponse,
    _sfu: Ws,
    signal: Ws,
}

async fn visitor(http: &str, device: &str) -> Visitor {
    let session = session(http, device).await;
    let sfu = ws(&format!("{}?token={}", session.sfu.url, session.sfu.token)).await;
    let ws_url = format!("{}/ws?token={}", http.replacen("http", "ws", 1), session.token);
    let mut signal = ws(&ws_url).await;
    send(&mut signal, json!({"type": "join", "mode": "video"})).await;
    expect(&mut signal, "queued").await;
    Visitor {
        session,
        _sfu: sfu,
        signal,
    }
}

fn stop(mut up: support::Up) -> tokio::task::JoinHandle<std::process::ExitStatus> {
    // SIGTERM: the process sends what is left before it exits.
    tokio::task::spawn_blocking(move || up.terminate())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_is_one_trace_across_signaling_and_the_sfu_and_no_endpoint_sends_nothing() {
    let (endpoint, got) = receiver().await;
    let dir = support::temp_dir("tracing");
    let up = support::Up::start_with(
        &dir,
        &[
            "--rate-limits=off",
            "--drain-timeout-secs=0",
            "--otlp-endpoint",
            &endpoint,
        ],
    );
    let http = up.http();

    let mut a = visitor(&http, "trace-visitor-a").await;
    let mut b = visitor(&http, "trace-visitor-b").await;
    expect(&mut a.signal, "matched").await;
    expect(&mut b.signal, "matched").await;
    send(&mut a.signal, json!({"type": "chat", "text": CHAT})).await;
    expect(&mut b.signal, "chat").await;
    send(&mut a.signal, json!({"type": "next"})).await;
    expect(&mut b.signal, "partner_left").await;
    let report = reqwest::Client::new()
        .post(format!("{http}/api/reports"))
        .bearer_auth(&a.session.token)
        .json(&json!({"category": "spam", "text": CHAT}))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 201);
    assert!(stop(up).await.unwrap().success());

    let spans = got.lock().unwrap().1.clone();
    let root = |v: &Visitor| {
        spans
            .iter()
            .find(|s| {
                s.name == "session" && s.attr("participant_id") == Some(v.session.participant_id.as_str())
            })
            .unwrap_or_else(|| panic!("no session span for {}: {spans:#?}", v.session.participant_id))
            .clone()
    };
    for (v, who) in [(&a, "a"), (&b, "b")] {
        let session = root(v);
        assert!(
            session.parent.is_empty(),
            "a visit's first span is its trace's root"
        );
        let trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == session.trace_id).collect();
        let named = |name: &str| -> Vec<&Span> { trace.iter().copied().filter(|s| s.name == name).collect() };
        let one = |name: &str| -> &Span {
            named(name)
                .first()
                .copied()
                .unwrap_or_else(|| panic!("visitor {who}: no `{name}` span in its trace: {trace:#?}"))
        };
        // Session: ban check and placement under it; the SFU's admission under the placement.
        assert_eq!(one("ban_check").parent, session.span_id);
        let placement = one("placement");
        assert_eq!(placement.parent, session.span_id);
        let admit = named("sfu.internal")
            .into_iter()
            .find(|s| s.attr("operation") == Some("admit"))
            .unwrap_or_else(|| panic!("visitor {who}: no admission span: {trace:#?}"));
        assert_eq!(admit.service, "duet-sfu");
        assert_eq!(admit.parent, placement.span_id);
        // The SFU WebSocket joins the visit the session began.
        let join = one("sfu.join");
        assert_eq!(join.service, "duet-sfu");
        assert_eq!(join.parent, session.span_id);
        // The signaling WebSocket: the wait in the queue.
        assert_eq!(one("queue").parent, session.span_id);
        assert_eq!(one("session").service, "duet-signaling");
    }
    // The match is in the trace of the side it was made for, with the SFU's link under it.
    let matched: Vec<&Span> = spans.iter().filter(|s| s.name == "match").collect();
    assert!(!matched.is_empty(), "no match span: {spans:#?}");
    let m = matched[0];
    let link = spans
        .iter()
        .find(|s| s.name == "sfu.internal" && s.attr("operation") == Some("link"))
        .expect("the SFU's link span");
    assert_eq!(
        (link.trace_id.clone(), link.parent.clone()),
        (m.trace_id.clone(), m.span_id.clone())
    );
    // Next and the report are in A's trace; Next's unlink reaches the SFU in it.
    let a_trace = root(&a).trace_id;
    for name in ["next", "report"] {
        assert!(
            spans.iter().any(|s| s.name == name && s.trace_id == a_trace),
            "no `{name}` span in A's trace"
        );
    }
    assert!(spans
        .iter()
        .any(|s| s.name == "sfu.internal" && s.attr("operation") == Some("unlink") && s.trace_id == a_trace));
    // Ids only: no attribute is an IP address or carries the chat text.
    for s in &spans {
        for (k, v) in &s.attrs {
            assert!(
                v.parse::<std::net::IpAddr>().is_err(),
                "{}: {k} = {v} is an IP address",
                s.name
            );
            assert!(!v.contains("chat words"), "{}: {k} carries chat text", s.name);
        }
    }

    // Without an endpoint: a session and nothing reaches the receiver.
    let before = got.lock().unwrap().0;
    let dir2 = support::temp_dir("tracing-off");
    let up = support::Up::start_with(&dir2, &["--rate-limits=off", "--drain-timeout-secs=0"]);
    session(&up.http(), "trace-visitor-c").await;
    assert!(stop(up).await.unwrap().success());
    assert_eq!(got.lock().unwrap().0, before, "no endpoint, no export");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}
