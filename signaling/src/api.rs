//! REST handlers: `POST /api/session`, `POST /api/reports`, `GET /api/stats`,
//! and the extractors that keep every error JSON.

use crate::error::ApiError;
use crate::store::{Ban, NewReport, Snapshot};
use crate::{now_secs, AppState};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use proto::signal::{
    BanNotice, PartnerLeftReason, ReportCreated, ReportRequest, SessionRequest, SessionResponse,
    MAX_REPORT_TEXT_BYTES,
};
use proto::token::{SessionClaims, TokenError, AUD_SESSION};
use proto::{DeviceId, ParticipantId};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tracing::Instrument;

/// Header an ingress sets with the visitor's region.
pub const REGION_HEADER: &str = "x-duet-region";

/// Header of `POST /api/session` carrying a solved challenge's token.
pub const CAPTCHA_HEADER: &str = "x-captcha-token";

/// JSON body extractor whose rejections are [`ApiError`]s (never axum's plain text).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body too large",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        _ => ApiError::bad_request("bad_json", rej.body_text()),
    }
}

/// The client's IP: the socket peer, or the first `X-Forwarded-For` entry
/// when `trust_forwarded_for` is set.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(
            state,
            &parts.headers,
            parts.extensions.get::<ConnectInfo<SocketAddr>>(),
        )))
    }
}

pub(crate) fn client_ip(
    state: &AppState,
    headers: &HeaderMap,
    ci: Option<&ConnectInfo<SocketAddr>>,
) -> Option<IpAddr> {
    if state.inner.config.trust_forwarded_for {
        if let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return Some(crate::store::canonical_ip(ip));
        }
    }
    ci.map(|c| crate::store::canonical_ip(c.0.ip()))
}

/// A verified session token from `Authorization: Bearer`.
pub struct SessionAuth(pub SessionClaims);

pub(crate) fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Expired => {
            ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", "session token expired")
        }
        _ => ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", "session token invalid"),
    }
}

impl FromRequestParts<AppState> for SessionAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <session token>"))?;
        let claims = verify_session(state, token)?;
        Ok(SessionAuth(claims))
    }
}

pub(crate) fn verify_session(state: &AppState, token: &str) -> Result<SessionClaims, ApiError> {
    if token.len() > 4096 {
        state
            .inner
            .metrics
            .bad_input
            .with_label_values(&["bad_token"])
            .inc();
        return Err(token_error(TokenError::Malformed));
    }
    state
        .inner
        .session_key
        .verify::<SessionClaims>(token)
        .map_err(|e| {
            state
                .inner
                .metrics
                .bad_input
                .with_label_values(&["bad_token"])
                .inc();
            token_error(e)
        })
}

fn limited(
    state: &AppState,
    kind: &str,
    checks: &[(&crate::ratelimit::Limiter, &str)],
) -> Result<(), ApiError> {
    let now = Instant::now();
    for (limiter, key) in checks {
        if let Err(wait) = limiter.check(key, now) {
            state.inner.metrics.rate_limited.with_label_values(&[kind]).inc();
            if let Some(c) = &state.inner.captcha {
                // Keys are IP addresses or device ids (which never parse as one).
                match key.parse::<IpAddr>() {
                    Ok(ip) => c.note(None, Some(ip), crate::captcha::Signal::RateLimited, now),
                    Err(_) => c.note(Some(key), None, crate::captcha::Signal::RateLimited, now),
                }
            }
            return Err(ApiError::rate_limited(wait));
        }
    }
    Ok(())
}

/// The ban in force for a device/IP, as a refusal. Reads the in-memory ban
/// list: the join path does not wait for the database.
pub(crate) async fn check_ban(
    state: &AppState,
    device: Option<&str>,
    ip: Option<IpAddr>,
) -> Result<(), ApiError> {
    let ban = state.inner.bans.active(device, ip, now_secs() as i64);
    match ban {
        Some(ban) => Err(ApiError::banned(ban_notice(state, &ban).await?)),
        None => Ok(()),
    }
}

async fn ban_notice(state: &AppState, ban: &Ban) -> Result<BanNotice, ApiError> {
    // With the appeal state and, while appealable, a token for one appeal.
    Ok(crate::admin::appeals::notice(&state.inner, ban).await?)
}

fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `POST /api/session`: the first span of a visit's trace.
pub async fn create_session(
    state: State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    req: ApiJson<SessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let span = tracing::info_span!(
        target: "signaling::visit",
        "session",
        participant_id = tracing::field::Empty,
        node_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let result = session_in(state, ip, headers, req).instrument(span.clone()).await;
    span.record("outcome", outcome(&result));
    result
}

/// A bounded label for a span's outcome: `ok` or the error's code.
pub(crate) fn outcome<T>(r: &Result<T, ApiError>) -> &str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.body.code.as_str(),
    }
}

async fn session_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let inner = &state.inner;
    if !req.accept_rules {
        return Err(ApiError::bad_request(
            "rules_not_accepted",
            "you must accept the rules (18+) to continue",
        ));
    }
    let device = DeviceId::parse(&req.device_id).ok_or_else(|| {
        ApiError::bad_request(
            "bad_device_id",
            "device_id must be 8-64 characters of A-Z a-z 0-9 _ -",
        )
    })?;
    let ip_key = ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into());
    limited(
        &state,
        "session",
        &[
            (&inner.limits.session_ip, &ip_key),
            (&inner.limits.session_device, device.as_str()),
        ],
    )?;
    check_ban(&state, Some(device.as_str()), ip)
        .instrument(tracing::info_span!(target: "signaling::visit", "ban_check"))
        .await?;
    let solved = match &inner.captcha {
        Some(c) => {
            let token = headers.get(CAPTCHA_HEADER).and_then(|v| v.to_str().ok());
            c.check_session(device.as_str(), ip, token, Instant::now())
                .await?
        }
        None => false,
    };

    let region = match (
        &req.region,
        headers.get(REGION_HEADER).and_then(|v| v.to_str().ok()),
    ) {
        (Some(r), _) => r.clone(),
        (None, Some(h)) => h.to_owned(),
        (None, None) => inner.config.region.clone(),
    };
    if !valid_region(&region) {
        return Err(ApiError::bad_request(
            "bad_region",
            "region must be 1-32 characters of a-z 0-9 _ -",
        ));
    }
    let participant = ParticipantId::random();
    tracing::Span::current().record("participant_id", participant.as_str());
    let placement =
        tracing::info_span!(target: "signaling::visit", "placement", node_id = tracing::field::Empty);
    let node = async {
        let nodes = inner.healthy_nodes().await?;
        let order = crate::registry::placement_order(&nodes, &region, &inner.config.region_fallbacks);
        for node in order.into_iter().take(4) {
            match inner.sfu.admit(&node, &participant).await {
                Ok(()) => return Ok(node),
                Err(e) => {
                    inner.metrics.sfu_errors.inc();
                    tracing::warn!(error = %e, "admission refused; trying the next node");
                }
            }
        }
        Err(ApiError::no_capacity())
    }
    .instrument(placement.clone())
    .await?;
    placement.record("node_id", node.node_id.as_str());
    tracing::Span::current().record("node_id", node.node_id.as_str());

    let now = now_secs();
    let exp = now + inner.config.session_ttl.as_secs();
    let session_id = uuid::Uuid::new_v4().simple().to_string();
    let claims = SessionClaims {
        sub: session_id.clone(),
        aud: AUD_SESSION.into(),
        exp,
        iat: now,
        device: device.clone(),
        participant: participant.clone(),
        node: node.node_id.clone(),
        captcha_at: solved.then_some(now),
        tp: proto::trace::current(),
    };
    let token = inner
        .session_key
        .mint(&claims)
        .map_err(crate::SignalingError::from)?;
    let sfu = inner.placement(&node, &participant)?;
    let ice_servers = inner.ice_servers(&node, &participant);
    inner.metrics.sessions_created.inc();
    let notice = appeal_outcome(&state, &device, now).await;
    Ok(Json(SessionResponse {
        session_id,
        token,
        participant_id: participant,
        expires_at: exp,
        sfu,
        ice_servers,
        ice_transport_policy: inner.config.ice_transport_policy,
        notice,
    }))
}

/// The accepted appeal's notice, once. Only a device the ban list names
/// as waiting for one costs a database query.
async fn appeal_outcome(state: &AppState, device: &DeviceId, now: u64) -> Option<String> {
    let inner = &state.inner;
    if !inner.bans.has_outcome(device.as_str()) {
        return None;
    }
    match inner
        .store
        .take_appeal_outcome(device.as_str(), i64::try_from(now).unwrap_or(i64::MAX))
        .await
    {
        Ok(n) => {
            inner.bans.outcome_shown(device.as_str());
            n
        }
        Err(e) => {
            // The visit goes on; the notice is shown on a later visit.
            tracing::warn!(error = %e, "could not look up an appeal outcome");
            None
        }
    }
}

/// `POST /api/reports`, a span of the reporter's visit.
pub async fn create_report(
    state: State<AppState>,
    ip: ClientIp,
    auth: SessionAuth,
    req: ApiJson<ReportRequest>,
) -> Result<Response, ApiError> {
    let span = tracing::info_span!(
        target: "signaling::visit",
        "report",
        participant_id = auth.0.participant.as_str(),
        outcome = tracing::field::Empty,
    );
    proto::trace::set_parent(&span, auth.0.tp.as_ref());
    let result = report_in(state, ip, auth, req).instrument(span.clone()).await;
    span.record("outcome", outcome(&result));
    result
}

async fn report_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    SessionAuth(claims): SessionAuth,
    ApiJson(req): ApiJson<ReportRequest>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let ip_key = ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into());
    limited(
        &state,
        "report",
        &[
            (&inner.limits.report_ip, &ip_key),
            (&inner.limits.report_device, claims.device.as_str()),
        ],
    )?;
    if req.text.len() > MAX_REPORT_TEXT_BYTES {
        return Err(ApiError::bad_request(
            "text_too_long",
            format!("report text is limited to {MAX_REPORT_TEXT_BYTES} bytes"),
        ));
    }
    let user = claims.sub.as_str();
    let pairing = inner.live.last_pairing(user).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_pairing",
            "no current or recent pairing to report",
        )
    })?;
    let (me, other) = pairing
        .sides_for(user)
        .map(|(a, b)| (a.clone(), b.clone()))
        .ok_or_else(ApiError::internal)?;
    let transcript = inner.live.transcript(&pairing.pairing_id).await?;
    let transcript = serde_json::to_string(&transcript).map_err(|_| ApiError::internal())?;

    // The reported side's latest snapshot, from the node its media is on.
    let mut snapshots = Vec::new();
    if pairing.mode == proto::signal::Mode::Video {
        match inner.node(&pairing.a.node).await {
            Ok(Some(node)) => match inner.sfu.snapshot(&node, &other.participant).await {
                Ok(Some((content_type, data))) => snapshots.push(Snapshot {
                    participant_id: other.participant.to_string(),
                    content_type,
                    data,
                    captured_at: now_secs() as i64,
                }),
                Ok(None) => {}
                Err(e) => {
                    inner.metrics.sfu_errors.inc();
                    tracing::warn!(error = %e, "snapshot for a report failed; storing without it");
                }
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "registry unavailable for a report snapshot"),
        }
    }
    let report = NewReport {
        category: serde_json::to_value(req.category)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "other".into()),
        severity: req.category.severity() as i64,
        text: req.text,
        pairing_id: pairing.pairing_id.to_string(),
        mode: pairing.mode.as_str().into(),
        reporter_session: user.to_owned(),
        reporter_device: me.device.to_string(),
        reporter_ip: ip.map(|i| i.to_string()),
        reported_session: other.user.clone(),
        reported_device: other.device.to_string(),
        reported_participant: other.participant.to_string(),
        reported_node: pairing.a.node.to_string(),
        transcript,
        snapshots,
    };
    // Committed before we answer: without the database the visitor hears
    // so (503, nothing stored, the call goes on) and may send it again.
    let report_id = inner.store.insert_report(&report).await.map_err(|e| {
        if e.is_database_unavailable() {
            tracing::warn!(error = %e, "report refused: database unavailable");
            ApiError::database_unavailable(
                "reports cannot be stored right now and this one was not; please send it again in a minute",
            )
        } else {
            ApiError::from(e)
        }
    })?;
    inner.metrics.reports.inc();
    if let Some(c) = &inner.captcha {
        let reported = Some(other.device.as_str());
        c.note(reported, None, crate::captcha::Signal::Reported, Instant::now());
    }
    inner.live.block(&me.device, &other.device).await?;
    // Unlink if still paired; the reported side is told the call ended.
    if let Some(ended) = inner.end_pairing(user, PartnerLeftReason::Ended).await? {
        if ended.pairing_id == pairing.pairing_id {
            inner
                .send_local_or_deliver(
                    user,
                    proto::signal::ServerMsg::PartnerLeft {
                        reason: PartnerLeftReason::Reported,
                    },
                )
                .await;
        }
    }
    Ok((StatusCode::CREATED, Json(ReportCreated { report_id })).into_response())
}

/// `GET /api/stats`.
pub async fn stats(State(state): State<AppState>) -> Result<Json<proto::signal::Stats>, ApiError> {
    Ok(Json(state.stats().await?))
}

/// `GET /api/captcha`: whether challenges are on and how the page renders one.
pub async fn captcha_widget(State(state): State<AppState>) -> Json<crate::captcha::WidgetConfig> {
    Json(match &state.inner.captcha {
        Some(c) => c.widget(),
        None => crate::captcha::WidgetConfig {
            enabled: false,
            provider: None,
            site_key: None,
            script_url: None,
        },
    })
}

/// Unknown `/api/...` path.
pub async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API endpoint")
}

impl crate::Inner {
    pub(crate) async fn send_local_or_deliver(&self, user: &str, msg: proto::signal::ServerMsg) {
        if self.conns.contains(user) {
            self.send_local(user, msg);
        } else {
            self.deliver(user, msg).await;
        }
    }
}
