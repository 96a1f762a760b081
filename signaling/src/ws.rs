//! `GET /ws?token=<session JWT>`: the visitor's signaling WebSocket.

use crate::api::{check_ban, client_ip, verify_session};
use crate::conns::{ConnEntry, Outbound, Visit, OUTBOUND_QUEUE};
use crate::error::ApiError;
use crate::matching::{normalize_interests, Ticket};
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use proto::signal::{
    ClientMsg, ErrorBody, Mode, PartnerLeftReason, ServerMsg, MAX_CHAT_CHARS, MAX_INTERESTS,
    MAX_INTEREST_CHARS, MAX_WS_MESSAGE_BYTES,
};
use proto::token::SessionClaims;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Frames above this are cut off by the WebSocket layer itself; between
/// [`MAX_WS_MESSAGE_BYTES`] and this we answer `message_too_large` and close.
const HARD_FRAME_LIMIT: usize = 64 * 1024;
/// Malformed messages tolerated per connection before it is closed.
const MAX_BAD_MESSAGES: u32 = 20;

const KNOWN_TYPES: [&str; 5] = ["join", "chat", "typing", "next", "stop"];

/// How much the WebSocket reads per call. tungstenite's default (128 KiB)
/// is zero-filled on the first read, so every visitor's socket would hold
/// 128 KiB for messages of a few hundred bytes; a larger message still
/// arrives whole, the buffer grows for it.
const WS_READ_CHUNK_BYTES: usize = 4 * 1024;

/// Upgrade handler. Token and ban are checked before the upgrade, so
/// refusals are plain JSON HTTP answers.
pub async fn ws_handler(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ci: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ip = client_ip(&state, &headers, ci.as_ref().map(|e| &e.0));
    let token = query.as_deref().and_then(|q| url_param(q, "token"));
    let Some(token) = token else {
        return ApiError::unauthorized("missing ?token=<session token>").into_response();
    };
    let claims = match verify_session(&state, &token) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = check_ban(&state, Some(claims.device.as_str()), ip).await {
        return e.into_response();
    }
    let slot = match ip.map(|ip| state.inner.limits.ws_open_ip.try_take(ip)) {
        Some(None) => return too_many_sockets(&state).into_response(),
        Some(Some(slot)) => Some(slot),
        None => None,
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(_) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "not_websocket",
                "this endpoint needs a WebSocket upgrade",
            )
            .into_response()
        }
    };
    upgrade
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .read_buffer_size(WS_READ_CHUNK_BYTES)
        .on_upgrade(move |socket| async move {
            handle_socket(state, claims, ip, socket).await;
            drop(slot);
        })
}

/// The address has `ws_per_ip` sockets open already.
fn too_many_sockets(state: &AppState) -> ApiError {
    state
        .inner
        .metrics
        .rate_limited
        .with_label_values(&["ws_per_ip"])
        .inc();
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_connections",
        format!(
            "at most {} open connections per address; close another tab first",
            state.inner.limits.ws_open_ip.max()
        ),
    )
}

/// The close code and `bad_input` kind for a frame the WebSocket layer
/// refused (RFC 6455 section 7.4.1): 1009 for a frame or message over the
/// limit, 1007 for text that is not UTF-8, 1002 for any other protocol
/// violation (unmasked client frame, reserved bits, unknown opcode, ...).
fn read_error_close(e: axum::Error) -> (u16, &'static str, &'static str) {
    use tungstenite::error::Error as WsError;
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => (1009, "too_large", "message too large"),
        Some(WsError::Utf8(_)) => (1007, "bad_utf8", "text frame is not UTF-8"),
        Some(WsError::Protocol(_)) => (1002, "protocol", "WebSocket protocol error"),
        _ => (1002, "protocol", "WebSocket read error"),
    }
}

fn url_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.replace("%2E", ".").replace("%2e", "."))
    })
}

fn error_msg(code: &str, message: impl Into<String>) -> ServerMsg {
    ServerMsg::Error(ErrorBody {
        code: code.into(),
        message: message.into(),
        ban: None,
    })
}

struct Conn {
    state: AppState,
    claims: SessionClaims,
    ip_key: String,
    tx: mpsc::Sender<Outbound>,
    bad: u32,
    last_join: Option<JoinChoice>,
}

/// A client message refused before it is acted on: the `bad_input` metric's
/// kind, the error code sent back, and the text of the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput {
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl BadInput {
    fn new(kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }
}

/// Reads one text message of `/ws`; a refusal says whether it was not
/// JSON, of an unknown type, or a known type with bad fields.
pub fn parse_client_msg(text: &str) -> Result<ClientMsg, BadInput> {
    serde_json::from_str(text).map_err(|e| {
        let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
        let ty = value
            .as_ref()
            .and_then(|v| v.get("type"))
            .and_then(|t| t.as_str());
        match (value.is_some(), ty) {
            (false, _) => BadInput::new("bad_json", "bad_json", format!("not valid JSON: {e}")),
            (true, Some(t)) if !KNOWN_TYPES.contains(&t) => {
                let t: String = t.chars().take(32).collect();
                BadInput::new(
                    "unknown_type",
                    "unknown_type",
                    format!("unknown message type `{t}`"),
                )
            }
            (true, None) => BadInput::new("bad_message", "bad_message", "missing `type`"),
            (true, Some(_)) => BadInput::new("bad_message", "bad_message", format!("invalid message: {e}")),
        }
    })
}

/// Checks a `join`'s interests and language; returns the language tag
/// (lowercase, `None` if absent or empty) and the normalized interests.
pub fn check_join(
    interests: &[String],
    lang: Option<String>,
) -> Result<(Option<String>, Vec<String>), BadInput> {
    if interests.len() > MAX_INTERESTS {
        return Err(BadInput::new(
            "invalid",
            "too_many_interests",
            format!("at most {MAX_INTERESTS} interests"),
        ));
    }
    if interests.iter().any(|i| i.chars().count() > MAX_INTEREST_CHARS) {
        return Err(BadInput::new(
            "invalid",
            "interest_too_long",
            format!("interests are limited to {MAX_INTEREST_CHARS} characters"),
        ));
    }
    if interests
        .iter()
        .any(|i| i.chars().any(|c| c.is_control() || c == ',' || c == '|'))
    {
        return Err(BadInput::new(
            "invalid",
            "bad_interest",
            "interests may not contain commas, `|` or control characters",
        ));
    }
    let lang = match lang {
        None => None,
        Some(l) if l.is_empty() => None,
        Some(l) if (2..=8).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') => {
            Some(l.to_ascii_lowercase())
        }
        Some(_) => {
            return Err(BadInput::new(
                "invalid",
                "bad_lang",
                "lang must be a language tag like `en`",
            ))
        }
    };
    Ok((lang, normalize_interests(interests)))
}

enum Flow {
    Continue,
    Close,
}

impl Conn {
    fn user(&self) -> &str {
        &self.claims.sub
    }

    fn send(&self, msg: ServerMsg) {
        let _ = self.tx.try_send(Outbound::Msg(msg));
    }

    fn close(&self, code: u16, reason: &'static str) {
        let _ = self.tx.try_send(Outbound::Close(code, reason));
    }

    fn bad_input(&mut self, kind: &str, code: &str, message: impl Into<String>) -> Flow {
        self.state
            .inner
            .metrics
            .bad_input
            .with_label_values(&[kind])
            .inc();
        self.send(error_msg(code, message));
        self.bad += 1;
        if self.bad >= MAX_BAD_MESSAGES {
            self.send(error_msg("too_many_errors", "too many malformed messages"));
            self.close(1008, "too many malformed messages");
            return Flow::Close;
        }
        Flow::Continue
    }

    fn rate_limited(&self, kind: &str, wait: u64) -> Flow {
        self.state
            .inner
            .metrics
            .rate_limited
            .with_label_values(&[kind])
            .inc();
        if let Some(c) = &self.state.inner.captcha {
            let device = Some(self.claims.device.as_str());
            c.note(
                device,
                self.ip(),
                crate::captcha::Signal::RateLimited,
                Instant::now(),
            );
        }
        self.send(error_msg(
            "rate_limited",
            format!("too many messages; retry in {wait} s"),
        ));
        self.close(1008, "rate limited");
        Flow::Close
    }

    fn ip(&self) -> Option<std::net::IpAddr> {
        self.ip_key.parse().ok()
    }

    /// Whether this session must solve a challenge before it joins the queue
    /// (it is then told `captcha_required` and not queued).
    fn challenged(&self) -> bool {
        let Some(c) = &self.state.inner.captcha else {
            return false;
        };
        let now_unix = crate::now_secs();
        if c.join_needs_challenge(
            self.claims.device.as_str(),
            self.ip(),
            self.claims.captcha_at,
            Instant::now(),
            now_unix,
        ) {
            self.send(error_msg(
                "captcha_required",
                "please solve the challenge to continue",
            ));
            return true;
        }
        false
    }

    /// A client ping (the WebSocket layer answers it by itself): limited per
    /// IP, since browsers never send any and each one costs an answer.
    fn on_ping(&self) -> Flow {
        let limits = &self.state.inner.limits;
        if limits.ws_ping_ip.check(&self.ip_key, Instant::now()).is_err() {
            self.state
                .inner
                .metrics
                .rate_limited
                .with_label_values(&["ws_ping"])
                .inc();
            self.close(1008, "too many pings");
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Join and Next: ends the current pairing and queues `ticket` (none:
    /// the visitor must solve a challenge first). `next_at`: when a Next
    /// arrived (for the next-to-link histogram).
    async fn end_and_requeue(
        &self,
        ticket: Option<Ticket>,
        next_at: Option<Instant>,
    ) -> Result<(), crate::SignalingError> {
        let inner = &self.state.inner;
        let user = self.user();
        // The unlink lands before the re-queue: a match made meanwhile could
        // pair the same two again (no cooldown) and race its link against
        // this unlink on the node. It costs well under a millisecond on a
        // local node (the `unlinked` timing event's `unlink_ms`).
        inner.end_pairing(user, PartnerLeftReason::Next).await?;
        let paired = match ticket {
            Some(t) => inner.join(t).await,
            None => Ok(false),
        };
        if let (true, Some(at)) = (paired?, next_at) {
            inner.metrics.next_to_link.observe(at.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn ticket(&self, mode: Mode, lang: Option<String>, interests: Vec<String>) -> Ticket {
        let inner = &self.state.inner;
        let entry = inner.conns.get(self.user());
        Ticket {
            user: self.user().to_owned(),
            device: self.claims.device.clone(),
            participant: entry
                .as_ref()
                .map(|e| e.participant.clone())
                .unwrap_or_else(|| self.claims.participant.clone()),
            node: entry.map(|e| e.node).unwrap_or_else(|| self.claims.node.clone()),
            mode,
            lang,
            interests,
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        if text.len() > MAX_WS_MESSAGE_BYTES {
            self.state
                .inner
                .metrics
                .bad_input
                .with_label_values(&["too_large"])
                .inc();
            self.send(error_msg(
                "message_too_large",
                format!("messages are limited to {MAX_WS_MESSAGE_BYTES} bytes"),
            ));
            self.close(1009, "message too large");
            return Flow::Close;
        }
        let now = Instant::now();
        let limits = &self.state.inner.limits;
        if let Err(wait) = limits.ws_device.check(self.claims.device.as_str(), now) {
            return self.rate_limited("ws_message", wait);
        }
        if let Err(wait) = limits.ws_ip.check(&self.ip_key, now) {
            return self.rate_limited("ws_message", wait);
        }
        let msg = match parse_client_msg(text) {
            Ok(m) => m,
            Err(bad) => return self.bad_input(bad.kind, bad.code, bad.message),
        };
        match self.on_msg(msg).await {
            Ok(flow) => flow,
            Err(e) => {
                tracing::warn!(error = %e, "handling a WebSocket message failed");
                self.send(error_msg("unavailable", "temporarily unavailable, try again"));
                Flow::Continue
            }
        }
    }

    /// A span of this visit (a child of its session span, across replicas).
    fn visit_span(&self, span: tracing::Span) -> tracing::Span {
        proto::trace::set_parent(&span, self.claims.tp.as_ref());
        span
    }

    async fn on_msg(&mut self, msg: ClientMsg) -> Result<Flow, crate::SignalingError> {
        let span = match &msg {
            ClientMsg::Join { mode, .. } => self.visit_span(tracing::info_span!(
                target: "signaling::visit",
                "queue",
                mode = mode.as_str(),
                participant_id = self.claims.participant.as_str(),
            )),
            ClientMsg::Next => self.visit_span(tracing::info_span!(
                target: "signaling::visit",
                "next",
                participant_id = self.claims.participant.as_str(),
            )),
            ClientMsg::Stop => self.visit_span(tracing::info_span!(
                target: "signaling::visit",
                "stop",
                participant_id = self.claims.participant.as_str(),
            )),
            // Chat and typing: no span (and never the text).
            ClientMsg::Chat { .. } | ClientMsg::Typing => tracing::Span::none(),
        };
        self.on_msg_in(msg).instrument(span).await
    }

    async fn on_msg_in(&mut self, msg: ClientMsg) -> Result<Flow, crate::SignalingError> {
        let inner = self.state.inner.clone();
        let user = self.user().to_owned();
        match msg {
            ClientMsg::Join {
                mode,
                interests,
                lang,
            } => {
                let (lang, interests) = match check_join(&interests, lang) {
                    Ok(checked) => checked,
                    Err(bad) => return Ok(self.bad_input(bad.kind, bad.code, bad.message)),
                };
                self.last_join = Some((mode, lang.clone(), interests.clone()));
                let ticket = (!self.challenged()).then(|| self.ticket(mode, lang, interests));
                self.end_and_requeue(ticket, None).await?;
            }
            ClientMsg::Next => {
                let asked = Instant::now();
                tracing::debug!(target: "duet::timing", participant = %self.claims.participant, "next received");
                if let Err(wait) = inner
                    .limits
                    .next
                    .check(self.claims.device.as_str(), Instant::now())
                {
                    return Ok(self.rate_limited("next", wait));
                }
                let Some((mode, lang, interests)) = self.last_join.clone() else {
                    self.send(error_msg("not_joined", "send `join` first"));
                    return Ok(Flow::Continue);
                };
                if let Some(c) = &inner.captcha {
                    let device = Some(self.claims.device.as_str());
                    c.note(device, None, crate::captcha::Signal::Next, Instant::now());
                }
                let ticket = (!self.challenged()).then(|| self.ticket(mode, lang, interests));
                self.end_and_requeue(ticket, Some(asked)).await?;
            }
            ClientMsg::Stop => {
                inner.conns.set_visit(&user, Visit::Idle);
                inner.live.leave(&user).await?;
                inner.end_pairing(&user, PartnerLeftReason::Stop).await?;
            }
            ClientMsg::Chat { text } => {
                let text = crate::chat::clean_text(&text);
                if text.chars().count() > MAX_CHAT_CHARS {
                    return Ok(self.bad_input(
                        "invalid",
                        "chat_too_long",
                        format!("chat messages are limited to {MAX_CHAT_CHARS} characters"),
                    ));
                }
                if text.is_empty() {
                    return Ok(self.bad_input("invalid", "empty_chat", "empty chat message"));
                }
                if !inner.chat(&user, &text).await? {
                    self.send(error_msg("not_paired", "no partner to chat with"));
                }
            }
            ClientMsg::Typing => {
                inner.typing(&user).await?;
            }
        }
        Ok(Flow::Continue)
    }
}

/// What a visitor asked for in its last `join`: mode, language, interests
/// (Next queues again with it).
type JoinChoice = (Mode, Option<String>, Vec<String>);

/// A page that opens its WebSocket again (its replica died, the network
/// blinked) keeps its call: while its pairing is on and the partner is
/// connected it hears `matched` again with the same pairing id, and the page
/// goes on without joining again; the join it made is taken from the
/// pairing, so that Next works. A pairing whose partner is gone is ended and
/// the page hears `partner_left`. Nothing is sent to a first connection.
async fn resume(inner: &crate::Inner, user: &str) -> Option<JoinChoice> {
    let pairing = match inner.live.current_pairing(user).await {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "could not look up a reconnecting visitor's pairing");
            return None;
        }
    };
    let (me, partner) = pairing.sides_for(user)?;
    let choice = (pairing.mode, me.lang.clone(), me.interests.clone());
    if inner.live.is_attached(&partner.user).await.unwrap_or(true) {
        tracing::info!(pairing = %pairing.pairing_id, "visitor reconnected; its pairing goes on");
        inner.send_local(
            user,
            ServerMsg::Matched {
                pairing_id: pairing.pairing_id.clone(),
                common_interests: pairing.common_interests.clone(),
            },
        );
        return Some(choice);
    }
    if let Err(e) = inner.end_pairing(user, PartnerLeftReason::Disconnected).await {
        tracing::warn!(error = %e, "ending a reconnecting visitor's orphaned pairing failed");
    }
    inner.send_local(
        user,
        ServerMsg::PartnerLeft {
            reason: PartnerLeftReason::Disconnected,
        },
    );
    Some(choice)
}

async fn handle_socket(state: AppState, claims: SessionClaims, ip: Option<IpAddr>, socket: WebSocket) {
    let inner = state.inner.clone();
    let user = claims.sub.clone();
    let (tx, mut rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    let conn_id = inner.conns.next_conn_id();
    // The token names the first node; the media may have moved since.
    let node = match inner.live.user_node(&user).await {
        Ok(Some(n)) => n,
        _ => claims.node.clone(),
    };
    inner.conns.insert(
        &user,
        ConnEntry {
            conn_id,
            tx: tx.clone(),
            participant: claims.participant.clone(),
            node,
            media_connected: false,
            trace: claims.tp,
            visit: Visit::Idle,
        },
    );
    if let Err(e) = inner.live.attach(&user).await {
        tracing::warn!(error = %e, "could not register the connection");
    }
    inner.metrics.online.set(inner.conns.len() as i64);
    let last_join = resume(&inner, &user).await;

    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Outbound::Msg(msg) => {
                    let Ok(text) = serde_json::to_string(&msg) else {
                        continue;
                    };
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Outbound::Ping => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
                Outbound::Close(code, reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });

    let mut conn = Conn {
        state: state.clone(),
        claims,
        ip_key: ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into()),
        tx,
        bad: 0,
        last_join,
    };
    let cancel = inner.cancel.clone();
    let idle_timeout = inner
        .config
        .ws_idle_timeout
        .max(std::time::Duration::from_millis(30));
    let mut pinger = tokio::time::interval(idle_timeout / 3);
    pinger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pinger.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = pinger.tick() => {
                if last_heard.elapsed() >= idle_timeout {
                    inner.metrics.ws_idle_closed.inc();
                    conn.close(1001, "idle timeout");
                    break;
                }
                let _ = conn.tx.try_send(Outbound::Ping);
                continue;
            }
            n = stream.next() => n,
        };
        last_heard = tokio::time::Instant::now();
        let flow = match next {
            None => break,
            Some(Ok(Message::Text(t))) => conn.on_text(t.as_str()).await,
            Some(Ok(Message::Binary(_))) => {
                conn.bad_input("binary", "binary_not_supported", "send JSON text frames")
            }
            Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Ping(_))) => conn.on_ping(),
            Some(Ok(_)) => Flow::Continue, // pong
            Some(Err(e)) => {
                let (code, kind, reason) = read_error_close(e);
                inner.metrics.bad_input.with_label_values(&[kind]).inc();
                tracing::debug!(code, reason, "WebSocket read error");
                if code == 1009 {
                    conn.send(error_msg(
                        "message_too_large",
                        format!("messages are limited to {MAX_WS_MESSAGE_BYTES} bytes"),
                    ));
                }
                conn.close(code, reason);
                break;
            }
        };
        if let Flow::Close = flow {
            break;
        }
    }
    drop(conn);
    if inner.conns.remove(&user, conn_id) {
        if let Err(e) = inner.live.detach(&user).await {
            tracing::warn!(error = %e, "could not unregister the connection");
        }
        // The page may have reconnected to another replica already (this
        // socket's end was noticed late): its visit goes on there.
        if !inner.live.is_attached(&user).await.unwrap_or(false) {
            inner.leave_all(&user, PartnerLeftReason::Disconnected).await;
        }
    }
    inner.metrics.online.set(inner.conns.len() as i64);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
}
