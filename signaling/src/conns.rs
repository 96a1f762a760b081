//! The WebSocket connections this replica holds, by user (session id).

use crate::matching::Ticket;
use parking_lot::Mutex;
use proto::signal::ServerMsg;
use proto::{NodeId, PairingId, ParticipantId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Per-connection outgoing queue depth; a client that does not read is
/// dropped rather than buffered without bound.
pub const OUTBOUND_QUEUE: usize = 256;

#[derive(Debug)]
pub enum Outbound {
    Msg(ServerMsg),
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
    /// A WebSocket ping (liveness: a browser answers it by itself).
    Ping,
}

/// Where a visitor stands in matching, as this replica last saw it: what it
/// puts back when the live state was lost (Redis restarted empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Visit {
    /// Neither waiting nor paired (before `join`, after Stop, after the
    /// partner left).
    #[default]
    Idle,
    /// In the queue with this ticket.
    Queued(Ticket),
    /// In this pairing.
    Paired(PairingId),
}

#[derive(Debug, Clone)]
pub struct ConnEntry {
    pub conn_id: u64,
    pub tx: mpsc::Sender<Outbound>,
    pub participant: ParticipantId,
    /// The SFU node the visitor's media is on now (changes on relocation).
    pub node: NodeId,
    /// Whether the node reported this participant's media connected. A
    /// text-mode visitor never connects media, so the node's "admission
    /// expired" must not end their chat.
    pub media_connected: bool,
    /// Where the visit's trace began (from the session token), for the
    /// spans of what happens to this visitor on this replica.
    pub trace: Option<proto::trace::TraceParent>,
    /// Queued or paired, as far as this replica knows (kept by `join`, Stop
    /// and the `matched` / `partner_left` messages handed to the socket).
    pub visit: Visit,
}

#[derive(Debug, Default)]
pub struct LocalConns {
    map: Mutex<HashMap<String, ConnEntry>>,
    next_id: AtomicU64,
}

impl LocalConns {
    pub fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a connection; an older connection of the same user is told to close.
    pub fn insert(&self, user: &str, entry: ConnEntry) {
        let old = self.map.lock().insert(user.to_owned(), entry);
        if let Some(old) = old {
            let _ = old
                .tx
                .try_send(Outbound::Close(4000, "replaced by a newer connection"));
        }
    }

    /// Removes the connection if it is still `conn_id`; `true` if removed.
    pub fn remove(&self, user: &str, conn_id: u64) -> bool {
        let mut map = self.map.lock();
        if map.get(user).is_some_and(|e| e.conn_id == conn_id) {
            map.remove(user);
            true
        } else {
            false
        }
    }

    pub fn get(&self, user: &str) -> Option<ConnEntry> {
        self.map.lock().get(user).cloned()
    }

    pub fn contains(&self, user: &str) -> bool {
        self.map.lock().contains_key(user)
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn users(&self) -> Vec<String> {
        self.map.lock().keys().cloned().collect()
    }

    /// `(user, participant, node)` of every connection here.
    pub fn placements(&self) -> Vec<(String, ParticipantId, NodeId)> {
        self.map
            .lock()
            .iter()
            .map(|(u, e)| (u.clone(), e.participant.clone(), e.node.clone()))
            .collect()
    }

    /// Users whose media is `participant` on `node`.
    pub fn find_participant(&self, node: &NodeId, participant: &ParticipantId) -> Option<(String, u64)> {
        self.map
            .lock()
            .iter()
            .find(|(_, e)| &e.node == node && &e.participant == participant)
            .map(|(u, e)| (u.clone(), e.conn_id))
    }

    /// Records that `participant`'s media connected on `node`.
    pub fn mark_media_connected(&self, node: &NodeId, participant: &ParticipantId) {
        if let Some(e) = self
            .map
            .lock()
            .values_mut()
            .find(|e| &e.node == node && &e.participant == participant)
        {
            e.media_connected = true;
        }
    }

    /// Whether `user`'s media ever connected on its current node.
    pub fn media_connected(&self, user: &str) -> bool {
        self.map.lock().get(user).is_some_and(|e| e.media_connected)
    }

    /// Records where `user` stands in matching.
    pub fn set_visit(&self, user: &str, visit: Visit) {
        if let Some(e) = self.map.lock().get_mut(user) {
            e.visit = visit;
        }
    }

    /// `(user, participant, node, visit)` of every connection here.
    pub fn visits(&self) -> Vec<(String, ParticipantId, NodeId, Visit)> {
        self.map
            .lock()
            .iter()
            .map(|(u, e)| (u.clone(), e.participant.clone(), e.node.clone(), e.visit.clone()))
            .collect()
    }

    /// Hands `msg` to `user`'s socket if it is here; `true` if handed over.
    pub fn deliver(&self, user: &str, msg: ServerMsg) -> bool {
        let mut map = self.map.lock();
        let Some(entry) = map.get_mut(user) else {
            return false;
        };
        match &msg {
            ServerMsg::Relocate { sfu, .. } => {
                entry.node = sfu.node_id.clone();
                entry.media_connected = false;
            }
            ServerMsg::Matched { pairing_id, .. } => entry.visit = Visit::Paired(pairing_id.clone()),
            ServerMsg::PartnerLeft { .. } if matches!(entry.visit, Visit::Paired(_)) => {
                entry.visit = Visit::Idle;
            }
            _ => {}
        }
        match entry.tx.try_send(Outbound::Msg(msg)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("client not reading its WebSocket; dropping a message");
                let _ = entry.tx.try_send(Outbound::Close(1008, "not reading"));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
