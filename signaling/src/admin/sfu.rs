//! The SFU internal API calls moderation makes (proto::sfu_api): watcher
//! admission, watch, kick, keyframe interval, participant list, snapshots.
//! The browser never talks to these; signaling does, with the internal token.

use crate::error::SignalingError;
use crate::sfu_client::MAX_SNAPSHOT_BYTES;
use futures::StreamExt;
use proto::registry::NodeRecord;
use proto::sfu_api::{self, AdmitRequest, KeyframeInterval, ParticipantInfo, ParticipantList, WatchRequest};
use proto::token::SfuRole;
use proto::ParticipantId;
use reqwest::StatusCode;
use std::time::Duration;

#[derive(Clone)]
pub(crate) struct SfuOps {
    http: reqwest::Client,
    token: String,
}

fn err(node: &NodeRecord, message: impl std::fmt::Display) -> SignalingError {
    SignalingError::Sfu {
        node: node.node_id.to_string(),
        message: message.to_string(),
    }
}

fn url(node: &NodeRecord, path: &str) -> String {
    format!("{}{}", node.internal_url.trim_end_matches('/'), path)
}

impl SfuOps {
    pub fn new(token: String, timeout: Duration) -> Result<Self, SignalingError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| SignalingError::Config(format!("http client: {e}")))?;
        Ok(Self { http, token })
    }

    async fn expect_ok(node: &NodeRecord, what: &str, resp: reqwest::Response) -> Result<(), SignalingError> {
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(err(node, format!("{what} answered {}", resp.status())))
        }
    }

    /// Reserves a slot for a hidden receive-only watcher.
    pub async fn admit_watcher(&self, node: &NodeRecord, pid: &ParticipantId) -> Result<(), SignalingError> {
        let resp = self
            .http
            .post(url(node, sfu_api::PATH_PARTICIPANTS))
            .bearer_auth(&self.token)
            .json(&AdmitRequest {
                participant_id: pid.clone(),
                role: SfuRole::Watcher,
            })
            .send()
            .await
            .map_err(|e| err(node, e))?;
        match resp.status() {
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT => Err(SignalingError::SfuFull {
                node: node.node_id.to_string(),
            }),
            _ => Self::expect_ok(node, "admit", resp).await,
        }
    }

    pub async fn watch(&self, node: &NodeRecord, req: &WatchRequest) -> Result<(), SignalingError> {
        let resp = self
            .http
            .post(url(node, sfu_api::PATH_WATCH))
            .bearer_auth(&self.token)
            .json(req)
            .send()
            .await
            .map_err(|e| err(node, e))?;
        Self::expect_ok(node, "watch", resp).await
    }

    /// Removes a participant; an unknown one is fine (already gone).
    pub async fn kick(&self, node: &NodeRecord, pid: &ParticipantId) -> Result<(), SignalingError> {
        let resp = self
            .http
            .delete(url(node, &format!("{}/{}", sfu_api::PATH_PARTICIPANTS, pid)))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| err(node, e))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Self::expect_ok(node, "kick", resp).await
    }

    pub async fn keyframe_interval(
        &self,
        node: &NodeRecord,
        interval_ms: Option<u64>,
    ) -> Result<(), SignalingError> {
        let resp = self
            .http
            .put(url(node, sfu_api::PATH_KEYFRAME_INTERVAL))
            .bearer_auth(&self.token)
            .json(&KeyframeInterval { interval_ms })
            .send()
            .await
            .map_err(|e| err(node, e))?;
        Self::expect_ok(node, "keyframe-interval", resp).await
    }

    /// Holds or releases `pid`'s video towards its partner (automatic screening's optional block).
    pub async fn hold_video(
        &self,
        node: &NodeRecord,
        pid: &ParticipantId,
        held: bool,
    ) -> Result<(), SignalingError> {
        let resp = self
            .http
            .put(url(
                node,
                &format!("{}/{}/video-hold", sfu_api::PATH_PARTICIPANTS, pid),
            ))
            .bearer_auth(&self.token)
            .json(&sfu_api::VideoHold { held })
            .send()
            .await
            .map_err(|e| err(node, e))?;
        Self::expect_ok(node, "video-hold", resp).await
    }

    pub async fn participants(&self, node: &NodeRecord) -> Result<Vec<ParticipantInfo>, SignalingError> {
        let resp = self
            .http
            .get(url(node, sfu_api::PATH_PARTICIPANTS))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| err(node, e))?;
        if !resp.status().is_success() {
            return Err(err(node, format!("participants answered {}", resp.status())));
        }
        Ok(resp
            .json::<ParticipantList>()
            .await
            .map_err(|e| err(node, e))?
            .participants)
    }

    /// The participant's latest snapshot (`image/webp`), `None` if there is none yet.
    pub async fn snapshot(
        &self,
        node: &NodeRecord,
        pid: &ParticipantId,
    ) -> Result<Option<(String, Vec<u8>)>, SignalingError> {
        let resp = self
            .http
            .get(url(
                node,
                &format!("{}/{}/snapshot", sfu_api::PATH_PARTICIPANTS, pid),
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| err(node, e))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(err(node, format!("snapshot answered {}", resp.status())));
        }
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|c| c.starts_with("image/"))
            .unwrap_or("image/webp")
            .to_owned();
        let mut bytes = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| err(node, e))?;
            if bytes.len() + chunk.len() > MAX_SNAPSHOT_BYTES {
                return Err(err(node, "snapshot too large"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some((ctype, bytes)))
    }
}
