//! Errors: [`SignalingError`] for the library, [`ApiError`] for answers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use proto::signal::{BanNotice, ErrorBody};

/// The `retry-after` of a refusal because the database is unavailable.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 30;

/// Failures of signaling's own machinery (database, Redis, SFU, config).
#[derive(Debug, thiserror::Error)]
pub enum SignalingError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("SFU node {node}: {message}")]
    Sfu { node: String, message: String },
    #[error("SFU node {node} has no room")]
    SfuFull { node: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("token: {0}")]
    Token(#[from] proto::token::TokenError),
    #[error("data: {0}")]
    Data(String),
}

/// An error answer: status code plus [`ErrorBody`] JSON (and `retry-after`).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Box<ErrorBody>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ErrorBody {
                code: code.to_owned(),
                message: message.into(),
                ban: None,
            }),
            retry_after_secs: None,
        }
    }
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests, slow down",
            )
        }
    }
    pub fn banned(notice: BanNotice) -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            "banned",
            format!("banned: {}", notice.reason),
        );
        e.body.ban = Some(notice);
        e
    }
    pub fn no_capacity() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_capacity",
            "no media server has room, try again soon",
        )
    }
    /// 503 `database_unavailable` with `retry-after`: nothing was stored.
    pub fn database_unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after_secs: Some(DATABASE_RETRY_AFTER_SECS),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", message)
        }
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl SignalingError {
    /// Whether the database could not be reached (down, restarting, the
    /// network to it cut, the pool waited in vain for a connection), as
    /// opposed to a query that failed on a database that answers.
    pub fn is_database_unavailable(&self) -> bool {
        let SignalingError::Db(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            // Class 08: connection exception; 57P01-57P03: shut down by an
            // administrator, crashed, or not accepting connections yet.
            sqlx::Error::Database(d) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&c.as_ref())),
            _ => false,
        }
    }
}

impl From<SignalingError> for ApiError {
    fn from(e: SignalingError) -> Self {
        match e {
            SignalingError::SfuFull { .. } => ApiError::no_capacity(),
            ref db if db.is_database_unavailable() => {
                tracing::warn!(error = %db, "database unavailable");
                ApiError::database_unavailable("the database is unavailable; try again in a minute")
            }
            SignalingError::Sfu { .. } | SignalingError::Redis(_) => {
                tracing::warn!(error = %e, "dependency unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "service temporarily unavailable",
                )
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(*self.body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
