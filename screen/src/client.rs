//! HTTP client of signaling's internal screening API and of the SFU nodes'
//! snapshot endpoint (both with the deployment's internal token).

use proto::screen_api::{
    ClaimGranted, ClaimRequest, ResultAccepted, ScreeningCalls, ScreeningResult, PATH_CALLS, PATH_CLAIMS,
    PATH_RESULTS,
};
use proto::sfu_api::PATH_PARTICIPANTS;
use proto::ParticipantId;
use std::time::Duration;

/// Largest snapshot taken from a node (the SFU keeps keyframes up to 2 MiB).
pub const MAX_SNAPSHOT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer (connection refused, timeout, broken body).
    #[error("{what}: {message}")]
    Http { what: &'static str, message: String },
    /// An answer other than success.
    #[error("{what} answered {status}")]
    Status { what: &'static str, status: u16 },
    /// A snapshot over [`MAX_SNAPSHOT_BYTES`].
    #[error("snapshot larger than {MAX_SNAPSHOT_BYTES} bytes")]
    TooLarge,
}

/// A snapshot and how old it was when served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub webp: Vec<u8>,
    pub age_ms: u64,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    signaling: String,
    token: String,
}

impl Client {
    pub fn new(signaling_url: &str, token: String, timeout: Duration) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| ClientError::Http {
                what: "http client",
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            signaling: signaling_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        what: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let http = |e: reqwest::Error| ClientError::Http {
            what,
            message: e.to_string(),
        };
        let resp = req.send().await.map_err(http)?;
        if !resp.status().is_success() {
            return Err(ClientError::Status {
                what,
                status: resp.status().as_u16(),
            });
        }
        resp.json().await.map_err(http)
    }

    /// The live video calls; asks signaling to keep keyframes coming at
    /// least every `keyframe_interval_ms` while screening runs.
    pub async fn calls(&self, keyframe_interval_ms: u64) -> Result<ScreeningCalls, ClientError> {
        let url = format!(
            "{}{PATH_CALLS}?keyframe_interval_ms={keyframe_interval_ms}",
            self.signaling
        );
        Self::json("listing calls", self.http.get(url).bearer_auth(&self.token)).await
    }

    pub async fn claim(&self, req: &ClaimRequest) -> Result<ClaimGranted, ClientError> {
        let url = format!("{}{PATH_CLAIMS}", self.signaling);
        Self::json(
            "claiming samples",
            self.http.post(url).bearer_auth(&self.token).json(req),
        )
        .await
    }

    pub async fn post_result(&self, r: &ScreeningResult) -> Result<ResultAccepted, ClientError> {
        let url = format!("{}{PATH_RESULTS}", self.signaling);
        Self::json(
            "posting a result",
            self.http.post(url).bearer_auth(&self.token).json(r),
        )
        .await
    }

    /// The participant's latest snapshot on the node at `internal_url`
    /// (`None`: no keyframe from them yet).
    pub async fn snapshot(
        &self,
        internal_url: &str,
        participant: &ParticipantId,
    ) -> Result<Option<Snapshot>, ClientError> {
        let what = "fetching a snapshot";
        let http = |e: reqwest::Error| ClientError::Http {
            what,
            message: e.to_string(),
        };
        let url = format!(
            "{}{PATH_PARTICIPANTS}/{}/snapshot",
            internal_url.trim_end_matches('/'),
            participant.as_str()
        );
        let mut resp = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(http)?;
        match resp.status().as_u16() {
            404 => return Ok(None),
            s if !(200..300).contains(&s) => return Err(ClientError::Status { what, status: s }),
            _ => {}
        }
        let age_ms = resp
            .headers()
            .get("x-snapshot-age-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if resp
            .content_length()
            .is_some_and(|n| n as usize > MAX_SNAPSHOT_BYTES)
        {
            return Err(ClientError::TooLarge);
        }
        let mut webp = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            if webp.len() + chunk.len() > MAX_SNAPSHOT_BYTES {
                return Err(ClientError::TooLarge);
            }
            webp.extend_from_slice(&chunk);
        }
        Ok(Some(Snapshot { webp, age_ms }))
    }
}
