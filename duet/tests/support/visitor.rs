//! A synthetic visitor as the page behaves: a session, the signaling
//! WebSocket, and a WebRTC peer connection to its SFU node ([`Media`]) that it
//! moves on `relocate`.

use super::cluster::unique;
use super::media::Media;
use super::{FLOWING, WAIT};
use futures::{SinkExt, StreamExt};
use proto::signal::{ServerMsg, SessionResponse, SfuPlacement};
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A synthetic visitor: a session, the signaling WebSocket, and a WebRTC
/// peer connection to its SFU node that it moves on `relocate`, as the page does.
pub struct Visitor {
    pub name: String,
    pub session: SessionResponse,
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub media: Option<Media>,
    /// The node its media is on now.
    pub node: String,
    /// Every signaling message it received.
    pub heard: Vec<ServerMsg>,
}

impl Visitor {
    pub async fn arrive(signaling_http: &str, name: &str, region: &str) -> Visitor {
        let resp = reqwest::Client::new()
            .post(format!("http://{signaling_http}/api/session"))
            .json(&json!({
                "accept_rules": true,
                "device_id": format!("device-{name}-{}", unique()),
                "region": region,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "session for {name}: {}",
            resp.text().await.unwrap()
        );
        let session: SessionResponse = resp.json().await.unwrap();
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{signaling_http}/ws?token={}", session.token))
                .await
                .unwrap();
        let mut v = Visitor {
            name: name.to_owned(),
            node: String::new(),
            ws,
            media: None,
            heard: Vec::new(),
            session: session.clone(),
        };
        v.move_media(&session.sfu).await;
        v
    }

    /// A new peer connection on `placement`'s node (the old one is closed first).
    pub async fn move_media(&mut self, placement: &SfuPlacement) {
        if let Some(old) = self.media.take() {
            old.stop().await;
        }
        let media = Media::connect(&placement.url, &placement.token, &self.name).await;
        self.node = placement.node_id.to_string();
        media.wait_connected(&self.name).await;
        self.media = Some(media);
    }

    pub async fn send(&mut self, v: serde_json::Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    /// The next message, or `None` once the signaling socket closed or
    /// broke (its replica died); a `relocate` is followed at once.
    pub async fn recv_or_closed(&mut self) -> Option<ServerMsg> {
        // One deadline for the call: the server's pings must not extend it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no message within {WAIT:?}", self.name));
            let msg: ServerMsg = match m {
                Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            };
            self.heard.push(msg.clone());
            if let ServerMsg::Relocate { sfu, .. } = &msg {
                self.move_media(sfu).await;
            }
            return Some(msg);
        }
    }

    /// A new signaling WebSocket with the same session token at
    /// `signaling_http`, as the page opens one after its socket closed; the
    /// media stays as it is.
    pub async fn reconnect(&mut self, signaling_http: &str) {
        let (ws, _) = tokio_tungstenite::connect_async(format!(
            "ws://{signaling_http}/ws?token={}",
            self.session.token
        ))
        .await
        .unwrap_or_else(|e| panic!("{}: reconnecting to {signaling_http}: {e}", self.name));
        self.ws = ws;
    }

    /// The next message; a `relocate` is followed at once.
    pub async fn recv(&mut self) -> ServerMsg {
        // One deadline for the call: the server's pings must not extend it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no message within {WAIT:?}", self.name));
            let msg: ServerMsg = match m {
                Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("{}: signaling socket ended: {other:?}", self.name),
            };
            self.heard.push(msg.clone());
            if let ServerMsg::Relocate { sfu, .. } = &msg {
                self.move_media(sfu).await;
            }
            return msg;
        }
    }

    pub async fn recv_until(&mut self, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let m = self.recv().await;
            if pred(&m) {
                return m;
            }
        }
    }

    /// Takes in the messages already waiting (relocations included).
    pub async fn catch_up(&mut self) {
        while let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(20), self.ws.next()).await
        {
            let msg: ServerMsg = serde_json::from_str(t.as_str()).unwrap();
            self.heard.push(msg.clone());
            if let ServerMsg::Relocate { sfu, .. } = &msg {
                self.move_media(sfu).await;
            }
        }
    }

    /// Packets received on the current peer connection from `who`.
    pub fn from(&self, who: &str) -> usize {
        self.media.as_ref().map_or(0, |m| m.count(who))
    }

    pub async fn leave(mut self) {
        if let Some(m) = self.media.take() {
            m.stop().await;
        }
        let _ = self.ws.close(None).await;
    }
}

/// Joins `x` then `y` (video) and waits until they are matched and each
/// receives the other's media; the pairing id.
pub async fn pair(x: &mut Visitor, y: &mut Visitor) -> String {
    x.send(json!({"type": "join", "mode": "video"})).await;
    x.recv_until(|m| matches!(m, ServerMsg::Queued { .. })).await;
    y.send(json!({"type": "join", "mode": "video"})).await;
    let px = pairing_id(&x.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await);
    let py = pairing_id(&y.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await);
    assert_eq!(px, py, "{} and {} are one pairing", x.name, y.name);
    media_flows(x, y).await;
    px
}

pub fn pairing_id(m: &ServerMsg) -> String {
    match m {
        ServerMsg::Matched { pairing_id, .. } => pairing_id.to_string(),
        other => panic!("not a match: {other:?}"),
    }
}

/// Waits until each receives at least [`FLOWING`] more packets from the other.
pub async fn media_flows(x: &mut Visitor, y: &mut Visitor) {
    let (bx, by) = (x.from(&y.name), y.from(&x.name));
    let what = format!("media between {} and {}", x.name, y.name);
    wait_for!(
        what,
        (x.from(&y.name) >= bx + FLOWING && y.from(&x.name) >= by + FLOWING).then_some(())
    );
}

pub fn disturbed(v: &Visitor, since: usize) -> Vec<&ServerMsg> {
    v.heard[since..]
        .iter()
        .filter(|m| {
            matches!(
                m,
                ServerMsg::Relocate { .. } | ServerMsg::PartnerLeft { .. } | ServerMsg::Error(_)
            )
        })
        .collect()
}
