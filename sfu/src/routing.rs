//! The 5-tuple / ufrag routing table (plain data, `now` passed in).
//!
//! A datagram from a path (remote address over UDP or over the in-process
//! TURN hand-off) is routed to a participant by:
//! 1. the path map, if the path is known (pinned or candidate);
//! 2. otherwise, if it is a STUN binding request whose USERNAME names a
//!    local ufrag we issued, a *candidate* entry is created for that path.
//!
//! Candidates become *pinned* only once the participant's ICE agent accepted
//! a message from the path (the engine sees the agent answer to that
//! address). Candidates expire quickly, pinned entries expire when idle.
//! Every source address that proves the right ufrag gets an entry
//! (Chromium checks from every interface), so the path the agent finally
//! selects is always routable.

use crate::stun;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Participant key inside one engine (unique for the engine's lifetime).
pub type Key = u64;

/// Where a remote is: a real UDP address, or a TURN allocation's (virtual)
/// relay address reached through the in-process hand-off. The two never
/// compare equal, so a virtual relay address can't collide with a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathAddr {
    Udp(SocketAddr),
    Turn(SocketAddr),
}

impl PathAddr {
    pub fn addr(&self) -> SocketAddr {
        match self {
            PathAddr::Udp(a) | PathAddr::Turn(a) => *a,
        }
    }
    pub fn is_turn(&self) -> bool {
        matches!(self, PathAddr::Turn(_))
    }
}

/// How long an unconfirmed candidate path lives.
pub const CANDIDATE_TTL: Duration = Duration::from_secs(10);
/// How long a pinned path lives without traffic.
pub const PINNED_IDLE_TTL: Duration = Duration::from_secs(30);
/// Most unconfirmed candidate paths per participant.
pub const MAX_CANDIDATES_PER_PARTICIPANT: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    key: Key,
    pinned: bool,
    last_seen: Instant,
}

/// The routing decision for one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A pinned path of this participant.
    Pinned(Key),
    /// A candidate path (not yet accepted by the ICE agent): hand it to the
    /// participant's agent, which decides.
    Candidate(Key),
    /// Nobody: drop.
    Unknown(UnknownReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownReason {
    /// Not a binding request naming one of our ufrags.
    NoUfrag,
    /// Too many unknown datagrams lately.
    RateLimited,
    /// The participant has too many unconfirmed paths.
    TooManyCandidates,
}

/// Token bucket for datagrams from unknown paths.
#[derive(Debug)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self {
            rate_per_sec: f64::from(rate_per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// Takes one token; false if the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate_per_sec).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub struct RoutingTable {
    ufrags: HashMap<String, Key>,
    paths: HashMap<PathAddr, Entry>,
    candidates_per_key: HashMap<Key, usize>,
    unknown: TokenBucket,
}

impl Default for RoutingTable {
    fn default() -> Self {
        Self::new(2_000, 1_000)
    }
}

impl RoutingTable {
    /// `unknown_rate`/`unknown_burst`: datagrams per second from unknown
    /// paths that are examined at all.
    pub fn new(unknown_rate: u32, unknown_burst: u32) -> Self {
        Self {
            ufrags: HashMap::new(),
            paths: HashMap::new(),
            candidates_per_key: HashMap::new(),
            unknown: TokenBucket::new(unknown_rate, unknown_burst),
        }
    }

    /// Routes binding requests naming `ufrag` to `key` (replaces older).
    pub fn register_ufrag(&mut self, ufrag: &str, key: Key) {
        self.ufrags.insert(ufrag.to_owned(), key);
    }

    /// `ufrag` becomes `key`'s only ufrag (a new answer replaced the
    /// credentials of the previous one).
    pub fn replace_ufrag(&mut self, key: Key, ufrag: &str) {
        self.ufrags.retain(|_, k| *k != key);
        self.ufrags.insert(ufrag.to_owned(), key);
    }

    /// Routes one datagram.
    pub fn route(&mut self, path: PathAddr, datagram: &[u8], now: Instant) -> Route {
        if let Some(entry) = self.paths.get_mut(&path) {
            // A known path may start naming another participant's ufrag
            // (address reuse, ICE restart): the binding request decides.
            if stun::is_stun(datagram) {
                if let Some(ufrag) = stun::binding_request_local_ufrag(datagram) {
                    match self.ufrags.get(ufrag).copied() {
                        // Nobody's ufrag (any more): no agent would accept it.
                        None => return Route::Unknown(UnknownReason::NoUfrag),
                        Some(owner) if owner != entry.key => {
                            let old = *entry;
                            self.remove_path(path, old);
                            return self.add_candidate(path, owner, now);
                        }
                        Some(_) => {}
                    }
                }
            }
            entry.last_seen = now;
            return if entry.pinned {
                Route::Pinned(entry.key)
            } else {
                Route::Candidate(entry.key)
            };
        }
        if !self.unknown.take(now) {
            return Route::Unknown(UnknownReason::RateLimited);
        }
        match stun::binding_request_local_ufrag(datagram).and_then(|u| self.ufrags.get(u).copied()) {
            Some(key) => self.add_candidate(path, key, now),
            None => Route::Unknown(UnknownReason::NoUfrag),
        }
    }

    fn add_candidate(&mut self, path: PathAddr, key: Key, now: Instant) -> Route {
        let n = self.candidates_per_key.entry(key).or_insert(0);
        if *n >= MAX_CANDIDATES_PER_PARTICIPANT {
            return Route::Unknown(UnknownReason::TooManyCandidates);
        }
        *n += 1;
        self.paths.insert(
            path,
            Entry {
                key,
                pinned: false,
                last_seen: now,
            },
        );
        Route::Candidate(key)
    }

    fn remove_path(&mut self, path: PathAddr, entry: Entry) {
        self.paths.remove(&path);
        if !entry.pinned {
            self.dec_candidates(entry.key);
        }
    }

    fn dec_candidates(&mut self, key: Key) {
        if let Some(n) = self.candidates_per_key.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.candidates_per_key.remove(&key);
            }
        }
    }

    /// The participant's ICE agent accepted traffic from `path` (it answered
    /// there): pin it. Only a candidate of the same participant is pinned.
    pub fn confirm(&mut self, path: PathAddr, key: Key, now: Instant) -> bool {
        match self.paths.get_mut(&path) {
            Some(entry) if entry.key == key => {
                entry.last_seen = now;
                if !entry.pinned {
                    entry.pinned = true;
                    self.dec_candidates(key);
                }
                true
            }
            _ => false,
        }
    }

    /// Whether `path` is a (pinned or candidate) path of `key`.
    pub fn is_path_of(&self, path: PathAddr, key: Key) -> bool {
        self.paths.get(&path).is_some_and(|e| e.key == key)
    }

    /// Drops expired entries.
    pub fn expire(&mut self, now: Instant) {
        let mut dead = Vec::new();
        for (path, e) in &self.paths {
            let ttl = if e.pinned { PINNED_IDLE_TTL } else { CANDIDATE_TTL };
            if now.saturating_duration_since(e.last_seen) > ttl {
                dead.push((*path, *e));
            }
        }
        for (path, e) in dead {
            self.remove_path(path, e);
        }
    }

    /// Forgets everything about a participant.
    pub fn remove_participant(&mut self, key: Key) {
        self.ufrags.retain(|_, k| *k != key);
        self.paths.retain(|_, e| e.key != key);
        self.candidates_per_key.remove(&key);
    }

    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    pub fn ufrag_count(&self) -> usize {
        self.ufrags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::tests::binding_request;
    use proptest::prelude::*;

    fn udp(port: u16) -> PathAddr {
        PathAddr::Udp(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn binding_request_creates_candidate_and_confirm_pins_it() {
        let now = Instant::now();
        let mut t = RoutingTable::default();
        t.register_ufrag("aaaa", 1);
        assert_eq!(
            t.route(udp(1), b"garbage", now),
            Route::Unknown(UnknownReason::NoUfrag)
        );
        assert_eq!(
            t.route(udp(1), &binding_request("aaaa:x"), now),
            Route::Candidate(1)
        );
        assert_eq!(t.route(udp(1), b"dtls", now), Route::Candidate(1));
        assert!(t.confirm(udp(1), 1, now));
        assert_eq!(t.route(udp(1), b"dtls", now), Route::Pinned(1));
        assert!(!t.confirm(udp(2), 1, now));
    }

    #[test]
    fn every_address_that_proves_the_ufrag_is_mapped() {
        let now = Instant::now();
        let mut t = RoutingTable::default();
        t.register_ufrag("aaaa", 1);
        assert_eq!(
            t.route(udp(1), &binding_request("aaaa:x"), now),
            Route::Candidate(1)
        );
        assert_eq!(
            t.route(udp(2), &binding_request("aaaa:x"), now),
            Route::Candidate(1)
        );
        assert!(t.confirm(udp(2), 1, now));
        assert_eq!(t.route(udp(1), b"x", now), Route::Candidate(1));
        assert_eq!(t.route(udp(2), b"x", now), Route::Pinned(1));
    }

    #[test]
    fn turn_and_udp_paths_with_the_same_address_never_collide() {
        let now = Instant::now();
        let mut t = RoutingTable::default();
        t.register_ufrag("aaaa", 1);
        t.register_ufrag("bbbb", 2);
        let a = SocketAddr::from(([127, 0, 0, 1], 5000));
        assert_eq!(
            t.route(PathAddr::Udp(a), &binding_request("aaaa:x"), now),
            Route::Candidate(1)
        );
        assert_eq!(
            t.route(PathAddr::Turn(a), &binding_request("bbbb:x"), now),
            Route::Candidate(2)
        );
        t.confirm(PathAddr::Udp(a), 1, now);
        t.confirm(PathAddr::Turn(a), 2, now);
        assert_eq!(t.route(PathAddr::Udp(a), b"x", now), Route::Pinned(1));
        assert_eq!(t.route(PathAddr::Turn(a), b"x", now), Route::Pinned(2));
    }

    #[test]
    fn entries_expire_candidates_first() {
        let now = Instant::now();
        let mut t = RoutingTable::default();
        t.register_ufrag("aaaa", 1);
        t.route(udp(1), &binding_request("aaaa:x"), now);
        t.route(udp(2), &binding_request("aaaa:x"), now);
        t.confirm(udp(2), 1, now);
        t.expire(now + CANDIDATE_TTL + Duration::from_millis(1));
        assert_eq!(t.path_count(), 1);
        t.expire(now + PINNED_IDLE_TTL + Duration::from_millis(1));
        assert_eq!(t.path_count(), 0);
    }

    #[test]
    fn unknown_sources_are_rate_limited() {
        let now = Instant::now();
        let mut t = RoutingTable::new(10, 5);
        let limited = (0..100u16)
            .filter(|p| t.route(udp(*p), b"junk", now) == Route::Unknown(UnknownReason::RateLimited))
            .count();
        assert_eq!(limited, 95);
    }

    #[test]
    fn spoofed_candidates_are_capped_per_participant() {
        let now = Instant::now();
        let mut t = RoutingTable::new(100_000, 100_000);
        t.register_ufrag("aaaa", 1);
        for p in 0..100u16 {
            t.route(udp(p), &binding_request("aaaa:x"), now);
        }
        assert_eq!(t.path_count(), MAX_CANDIDATES_PER_PARTICIPANT);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Stun { port: u16, key: u8 },
        Data { port: u16 },
        Confirm { port: u16, key: u8 },
        Advance { ms: u32 },
        Remove { key: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..20u16, 0..4u8).prop_map(|(port, key)| Op::Stun { port, key }),
            (0..20u16).prop_map(|port| Op::Data { port }),
            (0..20u16, 0..4u8).prop_map(|(port, key)| Op::Confirm { port, key }),
            (0..40_000u32).prop_map(|ms| Op::Advance { ms }),
            (0..4u8).prop_map(|key| Op::Remove { key }),
        ]
    }

    proptest! {
        /// A path only ever routes to a participant whose ufrag it proved,
        /// a removed participant is never routed to, and pinning requires
        /// an earlier proof.
        #[test]
        fn routes_only_to_proven_live_participants(ops in proptest::collection::vec(op(), 1..200)) {
            let mut now = Instant::now();
            let mut t = RoutingTable::new(1_000_000, 1_000_000);
            let mut live = [true; 4];
            for k in 0..4u8 { t.register_ufrag(&format!("u{k}"), u64::from(k)); }
            let mut proven: std::collections::HashSet<(u16, u64)> = Default::default();
            for op in ops {
                match op {
                    Op::Stun { port, key } => {
                        let r = t.route(udp(port), &binding_request(&format!("u{key}:c")), now);
                        if live[key as usize] {
                            match r {
                                Route::Candidate(k) | Route::Pinned(k) => { prop_assert_eq!(k, u64::from(key)); proven.insert((port, k)); }
                                Route::Unknown(_) => {}
                            }
                        } else {
                            prop_assert!(matches!(r, Route::Unknown(_)));
                        }
                    }
                    Op::Data { port } => {
                        if let Route::Candidate(k) | Route::Pinned(k) = t.route(udp(port), b"x", now) {
                            prop_assert!(live[k as usize]);
                            prop_assert!(proven.contains(&(port, k)));
                        }
                    }
                    Op::Confirm { port, key } => {
                        if t.confirm(udp(port), u64::from(key), now) {
                            prop_assert!(proven.contains(&(port, u64::from(key))));
                        }
                    }
                    Op::Advance { ms } => { now += Duration::from_millis(u64::from(ms)); t.expire(now); }
                    Op::Remove { key } => { t.remove_participant(u64::from(key)); live[key as usize] = false; }
                }
            }
        }
    }
}
