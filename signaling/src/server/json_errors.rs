//! Every error answer carries the documented JSON body.
//!
//! The handlers answer with [`ApiError`](crate::ApiError) already; what does
//! not go through them is axum's own refusals (405 for a known path with
//! another method, 413 from the body limit, a rejection's plain text), the
//! request timeout's 408, and other routers served on the same listener (the
//! SFU's WebSocket endpoint, `/readyz`). Those are rewritten here: the status
//! and headers (`Allow`, `Retry-After`) stay, the body becomes an
//! [`ErrorBody`] whose message is the original text when there was one.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use proto::signal::ErrorBody;

/// Longest original body kept as the message (axum's rejection texts are short).
const MAX_MESSAGE_BYTES: usize = 512;

/// Middleware: error answers without a JSON body get one.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let (code, default_message) = error_code(status);
    let body = ErrorBody {
        code: code.to_owned(),
        message: text.unwrap_or_else(|| default_message.to_owned()),
        ban: None,
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(bytes))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The documented error `code` (and a default message) for a status.
pub fn error_code(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("bad_request", "malformed request"),
        401 => ("unauthorized", "authentication required"),
        403 => ("forbidden", "not allowed"),
        404 => ("not_found", "no such endpoint"),
        405 => ("method_not_allowed", "this endpoint does not take that method"),
        408 => ("request_timeout", "the request took too long"),
        411 => ("length_required", "a Content-Length is required"),
        413 => ("payload_too_large", "request body too large"),
        414 => ("uri_too_long", "the request URI is too long"),
        415 => (
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        422 => ("bad_request", "the request body does not fit this endpoint"),
        426 => ("upgrade_required", "this endpoint needs a WebSocket upgrade"),
        429 => ("rate_limited", "too many requests, slow down"),
        431 => ("headers_too_large", "the request headers are too large"),
        503 => ("unavailable", "service temporarily unavailable"),
        s if s >= 500 => ("internal", "internal error"),
        _ => ("bad_request", "the request was refused"),
    }
}
