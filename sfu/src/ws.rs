//! The browser's WebSocket: `GET /sfu/ws?token=…`.
//!
//! The token (audience `duet-sfu`) must name this node, and its participant
//! must have been admitted through the internal API (with the same role)
//! and not be attached to another WebSocket. Any failure: one JSON
//! `error` message, then close.

use crate::engine::Command;
use crate::Shared;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use proto::sfu_ws::{SfuClientMsg, SfuServerMsg, MAX_SFU_WS_MESSAGE_BYTES};
use proto::token::{SfuClaims, TokenError};
use proto::ParticipantId;
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most bad messages a session may send before it is closed.
const MAX_BAD_MESSAGES: u32 = 10;
/// The first message (the offer) must arrive within this time.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/sfu/ws", get(upgrade)).with_state(shared)
}

/// How much the WebSocket reads per call. tungstenite's default (128 KiB)
/// is zero-filled on the first read, so every open session would hold
/// 128 KiB for messages of a few hundred bytes (an offer is a few KiB);
/// a larger message still arrives whole, the buffer grows for it.
const WS_READ_CHUNK_BYTES: usize = 4 * 1024;

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let admitted = authorize(&shared, q.token.as_deref());
    if let Ok((pid, _, tp)) = &admitted {
        // The visit's WebSocket reached its node: a span in the visit's trace.
        let span = tracing::info_span!(target: "sfu::ws", "sfu.join", participant_id = pid.as_str());
        proto::trace::set_parent(&span, tp.as_ref());
    }
    let shared2 = shared.clone();
    ws.max_message_size(MAX_SFU_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_SFU_WS_MESSAGE_BYTES)
        .read_buffer_size(WS_READ_CHUNK_BYTES)
        .on_upgrade(move |socket| async move {
            let _guard = TaskGuard::new(&shared2);
            match admitted {
                Ok((pid, session, _)) => session_loop(shared2, socket, pid, session).await,
                Err((code, message)) => refuse(socket, code, message).await,
            }
        })
}

/// Counts live session tasks (leak checks) and open sessions (metrics).
struct TaskGuard(Arc<Shared>);

impl TaskGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.tasks.fetch_add(1, Ordering::SeqCst);
        shared.metrics.ws_sessions.inc();
        Self(shared.clone())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.tasks.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.ws_sessions.dec();
    }
}

/// An admitted participant's id, session number and the trace of its visit.
type Authorized = (ParticipantId, u64, Option<proto::trace::TraceParent>);

fn authorize(shared: &Shared, token: Option<&str>) -> Result<Authorized, (&'static str, String)> {
    let token = token.ok_or(("unauthorized", "token missing".to_owned()))?;
    let claims: SfuClaims = shared.token_key.verify(token).map_err(|e| match e {
        TokenError::Expired => ("token_expired", "token expired".to_owned()),
        _ => ("unauthorized", format!("token refused: {e}")),
    })?;
    if claims.node != shared.config.node_id {
        return Err(("wrong_node", "token is for another node".to_owned()));
    }
    let mut adm = shared.admissions();
    let a = adm
        .get_mut(&claims.sub)
        .ok_or(("not_admitted", "participant not admitted on this node".to_owned()))?;
    if a.role != claims.role {
        return Err((
            "wrong_role",
            "token role differs from the admitted role".to_owned(),
        ));
    }
    if a.session.is_some() {
        return Err((
            "already_connected",
            "participant already has a session".to_owned(),
        ));
    }
    let session = shared.next_session.fetch_add(1, Ordering::SeqCst);
    a.session = Some(session);
    Ok((claims.sub, session, claims.tp))
}

fn text(msg: &SfuServerMsg) -> Message {
    // Serializing these plain enums cannot fail; an empty object is a safe fallback.
    Message::Text(Utf8Bytes::from(
        serde_json::to_string(msg).unwrap_or_else(|_| "{}".to_owned()),
    ))
}

async fn refuse(mut socket: WebSocket, code: &'static str, message: String) {
    let _ = socket
        .send(text(&SfuServerMsg::Error {
            code: code.to_owned(),
            message,
        }))
        .await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 4401,
            reason: Utf8Bytes::from_static("refused"),
        })))
        .await;
}

async fn session_loop(shared: Arc<Shared>, mut socket: WebSocket, pid: ParticipantId, session: u64) {
    let (tx, mut rx) = mpsc::channel::<SfuServerMsg>(64);
    if shared
        .commands
        .send(Command::Join {
            pid: pid.clone(),
            session,
            tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let mut bad = 0u32;
    let mut reason = "ws_closed";
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(m) => {
                    if socket.send(text(&m)).await.is_err() {
                        break;
                    }
                }
                None => {
                    // The media loop removed the participant (kick, failure, timeout).
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1000, reason: Utf8Bytes::from_static("closed") }))).await;
                    reason = "removed";
                    break;
                }
            },
            incoming = tokio::time::timeout(IDLE_TIMEOUT, socket.recv()) => {
                let msg = match incoming {
                    Err(_) => { reason = "ws_timeout"; break; }
                    Ok(None) | Ok(Some(Err(_))) => break,
                    Ok(Some(Ok(m))) => m,
                };
                let parsed = match &msg {
                    Message::Text(t) => serde_json::from_str::<SfuClientMsg>(t.as_str()).map_err(|e| e.to_string()),
                    Message::Binary(_) => Err("binary messages are not accepted".to_owned()),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                let cmd = match parsed {
                    Ok(SfuClientMsg::Offer { sdp }) => Command::Offer { pid: pid.clone(), session, sdp },
                    Ok(SfuClientMsg::Candidate { candidate }) => Command::Candidate { pid: pid.clone(), session, candidate },
                    Ok(SfuClientMsg::EndOfCandidates) => continue,
                    Ok(SfuClientMsg::Ping) => {
                        if socket.send(text(&SfuServerMsg::Pong)).await.is_err() { break; }
                        continue;
                    }
                    Err(e) => {
                        shared.metrics.drop("bad_ws_message");
                        bad += 1;
                        let err = SfuServerMsg::Error { code: "bad_message".into(), message: e };
                        if socket.send(text(&err)).await.is_err() || bad >= MAX_BAD_MESSAGES {
                            reason = "bad_messages";
                            break;
                        }
                        continue;
                    }
                };
                if shared.commands.send(cmd).await.is_err() {
                    break;
                }
            }
        }
    }
    // The loop removes the participant and its admission.
    let _ = shared
        .commands
        .send(Command::Leave { pid, session, reason })
        .await;
}
