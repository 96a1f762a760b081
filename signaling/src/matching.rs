//! The matching core: a pure state machine (no I/O, time passed in).
//!
//! `handle_join` / `handle_leave` / `handle_tick(now)` go in, [`MatchEvent`]s
//! come out of `poll_event`. Rules, in order:
//! - queues per mode and per language (a visitor who gives a language only
//!   meets visitors who gave the same one; no language = the common queue);
//! - never a user with itself, never two sessions of one device;
//! - a visitor with interests first waits for someone sharing one; after
//!   `widen_after` it is *widened* (told with [`MatchEvent::Widened`]) and
//!   matches anyone who is open too (visitors without interests are open from
//!   the start);
//! - candidates rank by number of shared interests, then same SFU node, then
//!   the oldest waiter;
//! - two devices that met do not meet again before `cooldown`;
//! - a reporter and the device it reported never meet again (`handle_block`).
//!
//! Times are Unix milliseconds (`now_ms`), so the Redis backend's Lua script
//! can follow exactly the same rules on shared state.

use proto::signal::Mode;
use proto::{DeviceId, NodeId, PairingId, ParticipantId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

/// Candidates examined per interest / per open queue when looking for a
/// partner, so that one join costs bounded work with 10k visitors waiting.
pub const SCAN_LIMIT: usize = 512;

/// A visitor asking for a partner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Session id (one visit).
    pub user: String,
    pub device: DeviceId,
    pub participant: ParticipantId,
    /// SFU node the visitor's media is on.
    pub node: NodeId,
    pub mode: Mode,
    pub lang: Option<String>,
    /// Normalised (lower case, trimmed, unique) interests.
    pub interests: Vec<String>,
}

/// One side of a pairing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairSide {
    pub user: String,
    pub device: DeviceId,
    pub participant: ParticipantId,
    pub node: NodeId,
    /// How long this side waited in the queue.
    pub waited_ms: u64,
    pub lang: Option<String>,
    pub interests: Vec<String>,
}

impl PairSide {
    /// The ticket that puts this side back in the queue.
    pub fn ticket(&self, mode: Mode) -> Ticket {
        Ticket {
            user: self.user.clone(),
            device: self.device.clone(),
            participant: self.participant.clone(),
            node: self.node.clone(),
            mode,
            lang: self.lang.clone(),
            interests: self.interests.clone(),
        }
    }
}

/// Two visitors paired. `a` is the side that waited longer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pairing {
    pub pairing_id: PairingId,
    pub mode: Mode,
    pub a: PairSide,
    pub b: PairSide,
    pub common_interests: Vec<String>,
    pub matched_ms: u64,
}

impl Pairing {
    /// `(me, partner)` for `user`, if `user` is in this pairing.
    pub fn sides_for(&self, user: &str) -> Option<(&PairSide, &PairSide)> {
        if self.a.user == user {
            Some((&self.a, &self.b))
        } else if self.b.user == user {
            Some((&self.b, &self.a))
        } else {
            None
        }
    }
}

// Events are short-lived; boxing the pairing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchEvent {
    Matched(Pairing),
    /// The user waited `widen_after` without an interest match and now
    /// matches anyone.
    Widened {
        user: String,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct MatchRules {
    pub widen_after: Duration,
    pub cooldown: Duration,
}

impl Default for MatchRules {
    fn default() -> Self {
        Self {
            widen_after: Duration::from_secs(5),
            cooldown: Duration::from_secs(600),
        }
    }
}

/// Canonical (sorted) pair of devices.
pub fn device_pair(a: &DeviceId, b: &DeviceId) -> (DeviceId, DeviceId) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct QueueKey {
    mode: Mode,
    lang: Option<String>,
}

#[derive(Default, Debug)]
struct Queue {
    by_interest: HashMap<String, BTreeSet<u64>>,
    /// Users who accept anyone (no interests, or widened).
    open: BTreeSet<u64>,
    open_by_node: HashMap<NodeId, BTreeSet<u64>>,
}

#[derive(Debug)]
struct Waiting {
    ticket: Ticket,
    seq: u64,
    joined_ms: u64,
    open: bool,
}

/// The matching state machine.
#[derive(Debug)]
pub struct Matcher {
    rules: MatchRules,
    next_seq: u64,
    waiting: HashMap<String, Waiting>,
    by_seq: HashMap<u64, String>,
    queues: HashMap<QueueKey, Queue>,
    /// Users with interests not yet widened, oldest first.
    pending_widen: BTreeSet<(u64, u64)>, // (joined_ms, seq)
    by_device: HashMap<DeviceId, HashSet<String>>,
    cooldowns: HashMap<(DeviceId, DeviceId), u64>,
    cooldown_order: VecDeque<(u64, (DeviceId, DeviceId))>,
    blocks: HashSet<(DeviceId, DeviceId)>,
    events: VecDeque<MatchEvent>,
}

impl Matcher {
    pub fn new(rules: MatchRules) -> Self {
        Self {
            rules,
            next_seq: 0,
            waiting: HashMap::new(),
            by_seq: HashMap::new(),
            queues: HashMap::new(),
            pending_widen: BTreeSet::new(),
            by_device: HashMap::new(),
            cooldowns: HashMap::new(),
            cooldown_order: VecDeque::new(),
            blocks: HashSet::new(),
            events: VecDeque::new(),
        }
    }

    pub fn rules(&self) -> MatchRules {
        self.rules
    }

    /// Puts `ticket` in the queue (replacing an earlier ticket of the same
    /// user) and pairs it at once if a partner is waiting.
    pub fn handle_join(&mut self, ticket: Ticket, now_ms: u64) {
        self.handle_leave(&ticket.user);
        let seq = self.next_seq;
        self.next_seq += 1;
        let open = ticket.interests.is_empty();
        let key = QueueKey {
            mode: ticket.mode,
            lang: ticket.lang.clone(),
        };
        let q = self.queues.entry(key).or_default();
        for i in &ticket.interests {
            q.by_interest.entry(i.clone()).or_default().insert(seq);
        }
        if open {
            q.open.insert(seq);
            q.open_by_node.entry(ticket.node.clone()).or_default().insert(seq);
        } else {
            self.pending_widen.insert((now_ms, seq));
        }
        self.by_device
            .entry(ticket.device.clone())
            .or_default()
            .insert(ticket.user.clone());
        self.by_seq.insert(seq, ticket.user.clone());
        let user = ticket.user.clone();
        self.waiting.insert(
            user.clone(),
            Waiting {
                ticket,
                seq,
                joined_ms: now_ms,
                open,
            },
        );
        self.try_match(&user, now_ms);
    }

    /// Takes `user` out of the queue; `true` if it was waiting.
    pub fn handle_leave(&mut self, user: &str) -> bool {
        let Some(w) = self.waiting.remove(user) else {
            return false;
        };
        self.by_seq.remove(&w.seq);
        self.pending_widen.remove(&(w.joined_ms, w.seq));
        if let Some(set) = self.by_device.get_mut(&w.ticket.device) {
            set.remove(user);
            if set.is_empty() {
                self.by_device.remove(&w.ticket.device);
            }
        }
        let key = QueueKey {
            mode: w.ticket.mode,
            lang: w.ticket.lang.clone(),
        };
        if let Some(q) = self.queues.get_mut(&key) {
            for i in &w.ticket.interests {
                if let Some(set) = q.by_interest.get_mut(i) {
                    set.remove(&w.seq);
                    if set.is_empty() {
                        q.by_interest.remove(i);
                    }
                }
            }
            q.open.remove(&w.seq);
            if let Some(set) = q.open_by_node.get_mut(&w.ticket.node) {
                set.remove(&w.seq);
                if set.is_empty() {
                    q.open_by_node.remove(&w.ticket.node);
                }
            }
            if q.open.is_empty() && q.by_interest.is_empty() {
                self.queues.remove(&key);
            }
        }
        true
    }

    /// The reporter and the reported device never meet again.
    pub fn handle_block(&mut self, a: &DeviceId, b: &DeviceId) {
        self.blocks.insert(device_pair(a, b));
    }

    /// Records that two devices met at `now_ms` (cooldown starts).
    pub fn handle_met(&mut self, a: &DeviceId, b: &DeviceId, now_ms: u64) {
        let until = now_ms.saturating_add(self.rules.cooldown.as_millis() as u64);
        let pair = device_pair(a, b);
        self.cooldowns.insert(pair.clone(), until);
        self.cooldown_order.push_back((until, pair));
    }

    /// Widens visitors who waited long enough, ends expired cooldowns and
    /// retries the visitors they concern.
    pub fn handle_tick(&mut self, now_ms: u64) {
        let widen_ms = self.rules.widen_after.as_millis() as u64;
        let mut retry: Vec<String> = Vec::new();
        while let Some(&(joined, seq)) = self.pending_widen.first() {
            if joined.saturating_add(widen_ms) > now_ms {
                break;
            }
            self.pending_widen.remove(&(joined, seq));
            let Some(user) = self.by_seq.get(&seq).cloned() else {
                continue;
            };
            let Some(w) = self.waiting.get_mut(&user) else {
                continue;
            };
            w.open = true;
            let key = QueueKey {
                mode: w.ticket.mode,
                lang: w.ticket.lang.clone(),
            };
            let node = w.ticket.node.clone();
            let q = self.queues.entry(key).or_default();
            q.open.insert(seq);
            q.open_by_node.entry(node).or_default().insert(seq);
            self.events.push_back(MatchEvent::Widened { user: user.clone() });
            retry.push(user);
        }
        while let Some((until, _)) = self.cooldown_order.front() {
            if *until > now_ms {
                break;
            }
            let Some((until, pair)) = self.cooldown_order.pop_front() else {
                break;
            };
            if self.cooldowns.get(&pair) == Some(&until) {
                self.cooldowns.remove(&pair);
                for d in [&pair.0, &pair.1] {
                    if let Some(users) = self.by_device.get(d) {
                        retry.extend(users.iter().cloned());
                    }
                }
            }
        }
        // Oldest first.
        retry.sort_by_key(|u| self.waiting.get(u).map(|w| w.seq).unwrap_or(u64::MAX));
        retry.dedup();
        for user in retry {
            if self.waiting.contains_key(&user) {
                self.try_match(&user, now_ms);
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<MatchEvent> {
        self.events.pop_front()
    }

    pub fn is_waiting(&self, user: &str) -> bool {
        self.waiting.contains_key(user)
    }

    /// Visitors waiting in `mode`.
    pub fn waiting_count(&self, mode: Mode) -> usize {
        self.waiting.values().filter(|w| w.ticket.mode == mode).count()
    }

    fn allowed(&self, me: &Waiting, other: &Waiting, now_ms: u64) -> bool {
        if me.ticket.user == other.ticket.user || me.ticket.device == other.ticket.device {
            return false;
        }
        if me.ticket.mode != other.ticket.mode || me.ticket.lang != other.ticket.lang {
            return false;
        }
        let pair = device_pair(&me.ticket.device, &other.ticket.device);
        if self.blocks.contains(&pair) {
            return false;
        }
        !matches!(self.cooldowns.get(&pair), Some(until) if *until > now_ms)
    }

    fn try_match(&mut self, user: &str, now_ms: u64) {
        let Some(me) = self.waiting.get(user) else { return };
        let key = QueueKey {
            mode: me.ticket.mode,
            lang: me.ticket.lang.clone(),
        };
        let Some(q) = self.queues.get(&key) else { return };

        // 1. Shared interests: most shared, then same node, then oldest.
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for i in &me.ticket.interests {
            if let Some(set) = q.by_interest.get(i) {
                for seq in set.iter().take(SCAN_LIMIT) {
                    if *seq != me.seq {
                        *counts.entry(*seq).or_default() += 1;
                    }
                }
            }
        }
        let mut best: Option<(usize, bool, u64)> = None;
        for (seq, n) in counts {
            let Some(other) = self.by_seq.get(&seq).and_then(|u| self.waiting.get(u)) else {
                continue;
            };
            if !self.allowed(me, other, now_ms) {
                continue;
            }
            let same_node = other.ticket.node == me.ticket.node;
            let cand = (n, same_node, seq);
            let better = match best {
                None => true,
                Some((bn, bs, bseq)) => {
                    (n, same_node, std::cmp::Reverse(seq)) > (bn, bs, std::cmp::Reverse(bseq))
                }
            };
            if better {
                best = Some(cand);
            }
        }
        let mut partner = best.map(|(_, _, seq)| seq);

        // 2. Anyone open, when I am open too: same node first, then oldest.
        if partner.is_none() && me.open {
            let first_allowed = |set: Option<&BTreeSet<u64>>| -> Option<u64> {
                set?.iter()
                    .filter(|s| **s != me.seq)
                    .take(SCAN_LIMIT)
                    .find(|s| {
                        self.by_seq
                            .get(s)
                            .and_then(|u| self.waiting.get(u))
                            .is_some_and(|o| self.allowed(me, o, now_ms))
                    })
                    .copied()
            };
            partner =
                first_allowed(q.open_by_node.get(&me.ticket.node)).or_else(|| first_allowed(Some(&q.open)));
        }

        let Some(pseq) = partner else { return };
        let Some(puser) = self.by_seq.get(&pseq).cloned() else {
            return;
        };
        let me_user = user.to_owned();
        let (Some(w1), Some(w2)) = (self.take(&me_user), self.take(&puser)) else {
            return;
        };
        // `a` waited longer.
        let (wa, wb) = if w1.seq < w2.seq { (w1, w2) } else { (w2, w1) };
        let common: Vec<String> = wa
            .ticket
            .interests
            .iter()
            .filter(|i| wb.ticket.interests.contains(i))
            .cloned()
            .collect();
        self.handle_met(&wa.ticket.device, &wb.ticket.device, now_ms);
        let side = |w: Waiting| PairSide {
            waited_ms: now_ms.saturating_sub(w.joined_ms),
            user: w.ticket.user,
            device: w.ticket.device,
            participant: w.ticket.participant,
            node: w.ticket.node,
            lang: w.ticket.lang,
            interests: w.ticket.interests,
        };
        let mode = wa.ticket.mode;
        self.events.push_back(MatchEvent::Matched(Pairing {
            pairing_id: PairingId::random(),
            mode,
            a: side(wa),
            b: side(wb),
            common_interests: common,
            matched_ms: now_ms,
        }));
    }

    fn take(&mut self, user: &str) -> Option<Waiting> {
        let seq = self.waiting.get(user)?.seq;
        let joined = self.waiting.get(user)?.joined_ms;
        // Re-use leave's index cleanup, then hand back the record.
        let ticket = self.waiting.get(user)?.ticket.clone();
        let open = self.waiting.get(user)?.open;
        self.handle_leave(user);
        Some(Waiting {
            ticket,
            seq,
            joined_ms: joined,
            open,
        })
    }
}

/// Normalises interests: trimmed, lower case, non-empty, unique, in order.
pub fn normalize_interests(raw: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in raw {
        let s = r.trim().to_lowercase();
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}
