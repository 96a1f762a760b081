//! Client of the SFU nodes' internal API (proto::sfu_api).

use crate::error::SignalingError;
use futures::StreamExt;
use proto::registry::NodeRecord;
use proto::sfu_api::{self, AdmitRequest, LinkRequest, SfuEvent};
use proto::token::SfuRole;
use proto::ParticipantId;
use reqwest::StatusCode;
use std::time::Duration;

/// The current span's W3C `traceparent`, so the node's spans join the
/// visit's trace (empty when tracing is off).
fn trace_header() -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    if let Some(tp) = proto::trace::current() {
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&tp.to_string()) {
            h.insert(proto::trace::HEADER, v);
        }
    }
    h
}

#[derive(Clone)]
pub struct SfuClient {
    http: reqwest::Client,
    /// Without a timeout, for the long-lived event streams.
    stream_http: reqwest::Client,
    token: String,
}

/// Largest snapshot accepted from a node.
pub const MAX_SNAPSHOT_BYTES: usize = 4 * 1024 * 1024;

impl SfuClient {
    pub fn new(token: String, timeout: Duration) -> Result<Self, SignalingError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| SignalingError::Config(format!("http client: {e}")))?;
        let stream_http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .map_err(|e| SignalingError::Config(format!("http client: {e}")))?;
        Ok(Self {
            http,
            stream_http,
            token,
        })
    }

    fn url(node: &NodeRecord, path: &str) -> String {
        format!("{}{}", node.internal_url.trim_end_matches('/'), path)
    }

    fn err(node: &NodeRecord, message: impl std::fmt::Display) -> SignalingError {
        SignalingError::Sfu {
            node: node.node_id.to_string(),
            message: message.to_string(),
        }
    }

    /// Reserves a slot for `participant` on `node`.
    pub async fn admit(&self, node: &NodeRecord, participant: &ParticipantId) -> Result<(), SignalingError> {
        let body = AdmitRequest {
            participant_id: participant.clone(),
            role: SfuRole::User,
        };
        let resp = self
            .http
            .post(Self::url(node, sfu_api::PATH_PARTICIPANTS))
            .bearer_auth(&self.token)
            .headers(trace_header())
            .json(&body)
            .send()
            .await
            .map_err(|e| Self::err(node, e))?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT => Err(SignalingError::SfuFull {
                node: node.node_id.to_string(),
            }),
            s => Err(Self::err(node, format!("admit answered {s}"))),
        }
    }

    async fn post_link(
        &self,
        node: &NodeRecord,
        path: &str,
        a: &ParticipantId,
        b: &ParticipantId,
        gone_is_fine: bool,
    ) -> Result<(), SignalingError> {
        let body = LinkRequest {
            a: a.clone(),
            b: b.clone(),
        };
        let resp = self
            .http
            .post(Self::url(node, path))
            .bearer_auth(&self.token)
            .headers(trace_header())
            .json(&body)
            .send()
            .await
            .map_err(|e| Self::err(node, e))?;
        if resp.status().is_success() || (gone_is_fine && resp.status() == StatusCode::NOT_FOUND) {
            Ok(())
        } else {
            Err(Self::err(node, format!("{path} answered {}", resp.status())))
        }
    }

    pub async fn link(
        &self,
        node: &NodeRecord,
        a: &ParticipantId,
        b: &ParticipantId,
    ) -> Result<(), SignalingError> {
        self.post_link(node, sfu_api::PATH_LINK, a, b, false).await
    }

    pub async fn unlink(
        &self,
        node: &NodeRecord,
        a: &ParticipantId,
        b: &ParticipantId,
    ) -> Result<(), SignalingError> {
        // A participant the node no longer knows (it left) is unlinked already.
        self.post_link(node, sfu_api::PATH_UNLINK, a, b, true).await
    }

    /// The participant's latest snapshot (`image/webp`), `None` if the node has none.
    pub async fn snapshot(
        &self,
        node: &NodeRecord,
        participant: &ParticipantId,
    ) -> Result<Option<(String, Vec<u8>)>, SignalingError> {
        let url = Self::url(
            node,
            &format!("{}/{}/snapshot", sfu_api::PATH_PARTICIPANTS, participant),
        );
        let resp = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .headers(trace_header())
            .send()
            .await
            .map_err(|e| Self::err(node, e))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(Self::err(node, format!("snapshot answered {}", resp.status())));
        }
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("image/webp")
            .to_owned();
        let mut bytes = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Self::err(node, e))?;
            if bytes.len() + chunk.len() > MAX_SNAPSHOT_BYTES {
                return Err(Self::err(node, "snapshot too large"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some((ctype, bytes)))
    }

    /// The node's own view of itself (`GET /internal/v1/node`), within `limit`:
    /// a liveness probe that does not depend on the registry.
    pub async fn node_info(&self, node: &NodeRecord, limit: Duration) -> Result<NodeRecord, SignalingError> {
        let req = self
            .http
            .get(Self::url(node, sfu_api::PATH_NODE))
            .bearer_auth(&self.token)
            .timeout(limit)
            .send();
        let resp = req.await.map_err(|e| Self::err(node, e))?;
        if !resp.status().is_success() {
            return Err(Self::err(node, format!("node answered {}", resp.status())));
        }
        resp.json::<NodeRecord>().await.map_err(|e| Self::err(node, e))
    }

    /// Streams the node's events into `on_event` until the stream ends or
    /// fails; `on_open` runs once the stream is open.
    pub async fn events<O: FnOnce(), F: FnMut(SfuEvent)>(
        &self,
        node: &NodeRecord,
        on_open: O,
        mut on_event: F,
    ) -> Result<(), SignalingError> {
        let resp = self
            .stream_http
            .get(Self::url(node, sfu_api::PATH_EVENTS))
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| Self::err(node, e))?;
        if !resp.status().is_success() {
            return Err(Self::err(node, format!("events answered {}", resp.status())));
        }
        on_open();
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Self::err(node, e))?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if let Some(data) = line.strip_prefix("data:") {
                    match serde_json::from_str::<SfuEvent>(data.trim()) {
                        Ok(ev) => on_event(ev),
                        Err(e) => tracing::debug!(error = %e, "unknown SFU event"),
                    }
                }
            }
            if buf.len() > 64 * 1024 {
                return Err(Self::err(node, "event line too long"));
            }
        }
        Ok(())
    }
}
