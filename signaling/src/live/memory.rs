//! In-memory live state for one process (`duet up`).

use super::{ChatLine, Delivery, LiveState};
use crate::conns::LocalConns;
use crate::error::SignalingError;
use crate::matching::{MatchEvent, MatchRules, Matcher, Pairing, Ticket};
use parking_lot::Mutex;
use proto::signal::Mode;
use proto::{DeviceId, NodeId, PairingId};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

struct Inner {
    matcher: Matcher,
    current: HashMap<String, Arc<Pairing>>,
    /// user -> (pairing, ended_ms)
    last: HashMap<String, (Arc<Pairing>, u64)>,
    transcripts: HashMap<PairingId, VecDeque<ChatLine>>,
    /// user -> (node the media moved to, expires_ms)
    user_nodes: HashMap<String, (NodeId, u64)>,
    /// claim key -> (token, expires_ms)
    claims: HashMap<String, (String, u64)>,
}

pub struct MemoryLive {
    inner: Mutex<Inner>,
    conns: Arc<LocalConns>,
    transcript_max: usize,
    report_window_ms: u64,
}

impl MemoryLive {
    pub fn new(
        rules: MatchRules,
        conns: Arc<LocalConns>,
        transcript_max: usize,
        report_window_ms: u64,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner {
                matcher: Matcher::new(rules),
                current: HashMap::new(),
                last: HashMap::new(),
                transcripts: HashMap::new(),
                user_nodes: HashMap::new(),
                claims: HashMap::new(),
            }),
            conns,
            transcript_max,
            report_window_ms,
        }
    }

    fn drain(inner: &mut Inner) -> Vec<MatchEvent> {
        let mut out = Vec::new();
        while let Some(ev) = inner.matcher.poll_event() {
            if let MatchEvent::Matched(p) = &ev {
                let p = Arc::new(p.clone());
                inner.current.insert(p.a.user.clone(), p.clone());
                inner.current.insert(p.b.user.clone(), p.clone());
                inner.transcripts.entry(p.pairing_id.clone()).or_default();
            }
            out.push(ev);
        }
        out
    }
}

#[async_trait::async_trait]
impl LiveState for MemoryLive {
    async fn join(&self, ticket: Ticket, now_ms: u64) -> Result<Vec<MatchEvent>, SignalingError> {
        let mut inner = self.inner.lock();
        inner.matcher.handle_join(ticket, now_ms);
        Ok(Self::drain(&mut inner))
    }

    async fn leave(&self, user: &str) -> Result<bool, SignalingError> {
        Ok(self.inner.lock().matcher.handle_leave(user))
    }

    async fn tick(&self, now_ms: u64) -> Result<Vec<MatchEvent>, SignalingError> {
        let mut inner = self.inner.lock();
        inner.matcher.handle_tick(now_ms);
        // Forget pairings older than the report window.
        let window = self.report_window_ms;
        let mut expired = Vec::new();
        inner.last.retain(|_, (p, ended)| {
            let keep = ended.saturating_add(window) > now_ms;
            if !keep {
                expired.push(p.pairing_id.clone());
            }
            keep
        });
        inner.user_nodes.retain(|_, (_, until)| *until > now_ms);
        inner.claims.retain(|_, (_, until)| *until > now_ms);
        for pid in expired {
            let still_used = inner.current.values().any(|p| p.pairing_id == pid)
                || inner.last.values().any(|(p, _)| p.pairing_id == pid);
            if !still_used {
                inner.transcripts.remove(&pid);
            }
        }
        Ok(Self::drain(&mut inner))
    }

    async fn block(&self, a: &DeviceId, b: &DeviceId) -> Result<(), SignalingError> {
        self.inner.lock().matcher.handle_block(a, b);
        Ok(())
    }

    async fn current_pairing(&self, user: &str) -> Result<Option<Pairing>, SignalingError> {
        Ok(self.inner.lock().current.get(user).map(|p| (**p).clone()))
    }

    async fn end_pairing(&self, user: &str, now_ms: u64) -> Result<Option<Pairing>, SignalingError> {
        let mut inner = self.inner.lock();
        let Some(p) = inner.current.remove(user) else {
            return Ok(None);
        };
        let other = if p.a.user == user {
            p.b.user.clone()
        } else {
            p.a.user.clone()
        };
        if inner
            .current
            .get(&other)
            .is_some_and(|q| q.pairing_id == p.pairing_id)
        {
            inner.current.remove(&other);
        }
        inner.last.insert(p.a.user.clone(), (p.clone(), now_ms));
        inner.last.insert(p.b.user.clone(), (p.clone(), now_ms));
        Ok(Some((*p).clone()))
    }

    async fn current_pairings(&self, limit: usize) -> Result<Vec<Pairing>, SignalingError> {
        let inner = self.inner.lock();
        let mut seen = std::collections::HashSet::new();
        Ok(inner
            .current
            .values()
            .filter(|p| seen.insert(p.pairing_id.clone()))
            .take(limit)
            .map(|p| (**p).clone())
            .collect())
    }

    async fn last_pairing(&self, user: &str) -> Result<Option<Pairing>, SignalingError> {
        let inner = self.inner.lock();
        if let Some(p) = inner.current.get(user) {
            return Ok(Some((**p).clone()));
        }
        Ok(inner.last.get(user).map(|(p, _)| (**p).clone()))
    }

    async fn append_chat(&self, pairing: &PairingId, line: ChatLine) -> Result<(), SignalingError> {
        let mut inner = self.inner.lock();
        if let Some(t) = inner.transcripts.get_mut(pairing) {
            t.push_back(line);
            while t.len() > self.transcript_max {
                t.pop_front();
            }
        }
        Ok(())
    }

    async fn transcript(&self, pairing: &PairingId) -> Result<Vec<ChatLine>, SignalingError> {
        Ok(self
            .inner
            .lock()
            .transcripts
            .get(pairing)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn waiting(&self) -> Result<(u64, u64), SignalingError> {
        let inner = self.inner.lock();
        Ok((
            inner.matcher.waiting_count(Mode::Video) as u64,
            inner.matcher.waiting_count(Mode::Text) as u64,
        ))
    }

    async fn online(&self) -> Result<u64, SignalingError> {
        Ok(self.conns.len() as u64)
    }

    async fn attach(&self, _user: &str) -> Result<(), SignalingError> {
        Ok(())
    }

    async fn detach(&self, _user: &str) -> Result<(), SignalingError> {
        Ok(())
    }

    async fn is_attached(&self, user: &str) -> Result<bool, SignalingError> {
        Ok(self.conns.contains(user))
    }

    async fn deliver(&self, d: Delivery) -> Result<(), SignalingError> {
        self.conns.deliver(&d.user, d.msg);
        Ok(())
    }

    async fn housekeeping(&self, _now_ms: u64) -> Result<(), SignalingError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), SignalingError> {
        Ok(())
    }

    async fn user_node(&self, user: &str) -> Result<Option<NodeId>, SignalingError> {
        let now = crate::now_ms();
        Ok(self
            .inner
            .lock()
            .user_nodes
            .get(user)
            .filter(|(_, until)| *until > now)
            .map(|(n, _)| n.clone()))
    }

    async fn set_user_node(&self, user: &str, node: &NodeId, ttl_ms: u64) -> Result<(), SignalingError> {
        let until = crate::now_ms().saturating_add(ttl_ms);
        self.inner
            .lock()
            .user_nodes
            .insert(user.to_owned(), (node.clone(), until));
        Ok(())
    }

    async fn set_pairing_node(&self, pairing: &PairingId, node: &NodeId) -> Result<(), SignalingError> {
        let mut inner = self.inner.lock();
        let moved = |p: &Arc<Pairing>| {
            let mut q = (**p).clone();
            q.a.node = node.clone();
            q.b.node = node.clone();
            Arc::new(q)
        };
        for p in inner.current.values_mut() {
            if &p.pairing_id == pairing {
                *p = moved(p);
            }
        }
        for (p, _) in inner.last.values_mut() {
            if &p.pairing_id == pairing {
                *p = moved(p);
            }
        }
        Ok(())
    }

    async fn claim(&self, key: &str, ttl_ms: u64) -> Result<Option<String>, SignalingError> {
        let now = crate::now_ms();
        let mut inner = self.inner.lock();
        if inner.claims.get(key).is_some_and(|(_, until)| *until > now) {
            return Ok(None);
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        inner
            .claims
            .insert(key.to_owned(), (token.clone(), now.saturating_add(ttl_ms)));
        Ok(Some(token))
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), SignalingError> {
        let mut inner = self.inner.lock();
        if inner.claims.get(key).is_some_and(|(t, _)| t == token) {
            inner.claims.remove(key);
        }
        Ok(())
    }
}
