//! What the core decides about relay addresses, without any I/O: which
//! ports it hands out ([`PortPool`]), which peers are reachable
//! ([`PeerRules`]), and the allocation counts that the cores of all workers
//! share for the quotas ([`Ledger`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use parking_lot::Mutex;

use crate::addr::PeerAddr;
use crate::core::Millis;
use crate::policy::PeerPolicy;
use crate::quota::Quotas;

/// Virtual port range of the in-process relay. It lies below the ephemeral
/// port ranges of Linux (32768-60999), Windows and macOS (49152-65535), so a
/// virtual relay address is unlikely to equal the host address of a direct
/// client on the same IP (e.g. a browser on the same laptop as `duet up`),
/// which the SFU could otherwise confuse.
pub const VIRTUAL_PORTS: RangeInclusive<u16> = 16384..=32767;

/// How long a port that another process held when we tried to bind it is
/// skipped before it is tried again.
pub const REFUSED_PORT_MS: Millis = 60_000;

/// Which peers a relay may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRules {
    /// The in-process relay: only the SFU's media addresses (any other IP
    /// gets 403; another port of the SFU's IP is dropped).
    Sfu(Vec<SocketAddr>),
    /// The socket relay: the peer policy; the relay's own addresses are
    /// refused too (no loops through our own relay ports) unless allow-listed.
    Policy { policy: PeerPolicy, own: Vec<IpAddr> },
}

impl PeerRules {
    /// Whether a permission for `ip` may be installed (`false` answers 403).
    pub fn permits(&self, ip: IpAddr) -> bool {
        match self {
            PeerRules::Sfu(addrs) => addrs.iter().any(|a| a.ip() == ip),
            PeerRules::Policy { policy, own } => {
                policy.allows(ip) && (!own.contains(&ip) || policy.allow_listed(ip))
            }
        }
    }

    /// Whether datagrams may go to exactly `peer`.
    pub fn reaches(&self, peer: PeerAddr) -> bool {
        match self {
            PeerRules::Sfu(addrs) => addrs.contains(&peer.0),
            PeerRules::Policy { .. } => self.permits(peer.ip()),
        }
    }
}

/// One worker's part of a port range: worker `index` of `count` owns the
/// `index`-th of `count` contiguous blocks (the last block takes the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub index: u16,
    pub count: u16,
}

impl Share {
    /// The whole range (one worker).
    pub const WHOLE: Share = Share { index: 0, count: 1 };

    /// The block of `range` this share owns (empty if the range has fewer
    /// ports than there are shares).
    pub fn block(self, range: &RangeInclusive<u16>) -> RangeInclusive<u16> {
        let (start, end) = (u32::from(*range.start()), u32::from(*range.end()));
        let count = u32::from(self.count.max(1));
        let span = (end + 1).saturating_sub(start);
        let size = span / count;
        if size == 0 || end < start {
            // Empty (`RangeInclusive` has no other way to say it).
            #[allow(clippy::reversed_empty_ranges)]
            return 1..=0;
        }
        let first = start + size * u32::from(self.index);
        let last = if u32::from(self.index) + 1 == count {
            end
        } else {
            first + size - 1
        };
        (first as u16)..=(last as u16)
    }

    /// Which of `count` shares of `range` holds `port`, if any.
    pub fn of_port(range: &RangeInclusive<u16>, count: u16, port: u16) -> Option<u16> {
        (0..count).find(|&index| Share { index, count }.block(range).contains(&port))
    }
}

/// The relay ports one core hands out. Pure bookkeeping: the shell binds
/// (or registers) a port when told to by [`crate::core::Command::OpenRelay`].
#[derive(Clone, Debug)]
pub struct PortPool {
    ports: RangeInclusive<u16>,
    used: HashSet<u16>,
    /// Ports the shell could not open (another process holds them), with
    /// the time until which they are skipped.
    refused: HashMap<u16, Millis>,
    /// Where the next search starts (round robin, so a freed port is not
    /// reused at once).
    next: u16,
}

impl PortPool {
    /// `start_seed` picks where the round robin starts (random per process,
    /// so restarts do not reuse the same ports first).
    pub fn new(range: &RangeInclusive<u16>, share: Share, start_seed: u16) -> Self {
        let ports = share.block(range);
        let span = Self::span_of(&ports).max(1);
        let next = (u32::from(*ports.start()) + u32::from(start_seed) % span) as u16;
        PortPool {
            ports,
            used: HashSet::new(),
            refused: HashMap::new(),
            next,
        }
    }

    fn span_of(r: &RangeInclusive<u16>) -> u32 {
        if r.is_empty() {
            0
        } else {
            u32::from(*r.end()) - u32::from(*r.start()) + 1
        }
    }

    /// The ports this pool hands out.
    pub fn ports(&self) -> &RangeInclusive<u16> {
        &self.ports
    }

    /// Ports taken (allocations, reservations, and those being opened).
    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    pub fn is_used(&self, port: u16) -> bool {
        self.used.contains(&port)
    }

    fn free(&self, p: u16) -> bool {
        !self.used.contains(&p) && !self.refused.contains_key(&p)
    }

    fn advance(&self, p: u16) -> u16 {
        if p >= *self.ports.end() {
            *self.ports.start()
        } else {
            p + 1
        }
    }

    /// Takes a free port (an even one if `even`).
    pub fn take(&mut self, even: bool) -> Option<u16> {
        let mut p = self.next;
        for _ in 0..Self::span_of(&self.ports) {
            let candidate = p;
            p = self.advance(p);
            if (even && candidate & 1 == 1) || !self.free(candidate) {
                continue;
            }
            self.used.insert(candidate);
            self.next = p;
            return Some(candidate);
        }
        None
    }

    /// Takes an even port P and P+1 (EVEN-PORT with the R bit); returns P.
    pub fn take_pair(&mut self) -> Option<u16> {
        let mut p = self.next;
        for _ in 0..Self::span_of(&self.ports) {
            let candidate = p;
            p = self.advance(p);
            if candidate & 1 == 1 || candidate >= *self.ports.end() {
                continue;
            }
            if !self.free(candidate) || !self.free(candidate + 1) {
                continue;
            }
            self.used.insert(candidate);
            self.used.insert(candidate + 1);
            self.next = self.advance(candidate + 1);
            return Some(candidate);
        }
        None
    }

    /// Gives a port back.
    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }

    /// The shell could not open `port`: skip it for [`REFUSED_PORT_MS`].
    pub fn refuse(&mut self, port: u16, now: Millis) {
        self.used.remove(&port);
        self.refused.insert(port, now.saturating_add(REFUSED_PORT_MS));
    }

    /// Forgets refusals that are old enough to try again.
    pub fn expire(&mut self, now: Millis) {
        self.refused.retain(|_, until| *until > now);
    }
}

/// Why the [`Ledger`] refused an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerRefusal {
    /// `max_allocations_total` (allocations plus reservations) reached.
    Total,
    /// `max_allocations_per_user` reached.
    User,
}

/// Allocation counts shared by the cores of all workers, so that the
/// per-user and total quotas hold for the server rather than per worker.
/// Locked only when an allocation or reservation is created or freed, never
/// per datagram.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<LedgerCounts>,
}

#[derive(Debug, Default)]
struct LedgerCounts {
    /// Allocations plus reservations.
    slots: usize,
    per_user: HashMap<String, u32>,
}

impl Ledger {
    /// Counts one new allocation of `user` taking `slots` relay addresses
    /// against the total (0 when it claims a reservation, 2 with a new
    /// reservation), or refuses it.
    pub fn take(&self, user: &str, slots: usize, q: &Quotas) -> Result<(), LedgerRefusal> {
        let mut c = self.inner.lock();
        if c.slots + slots > q.max_allocations_total as usize {
            return Err(LedgerRefusal::Total);
        }
        let n = c.per_user.get(user).copied().unwrap_or(0);
        if n >= q.max_allocations_per_user {
            return Err(LedgerRefusal::User);
        }
        c.slots += slots;
        c.per_user.insert(user.to_owned(), n + 1);
        Ok(())
    }

    /// An allocation of `user` is gone (its relay address with it).
    pub fn give_back_allocation(&self, user: &str) {
        let mut c = self.inner.lock();
        c.slots = c.slots.saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                c.per_user.remove(user);
            }
        }
    }

    /// A reservation is gone without being claimed.
    pub fn give_back_reservation(&self) {
        let mut c = self.inner.lock();
        c.slots = c.slots.saturating_sub(1);
    }

    /// Allocations plus reservations counted.
    pub fn slots(&self) -> usize {
        self.inner.lock().slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_a_range_into_disjoint_blocks_covering_it() {
        let range = 40000..=49999;
        let blocks: Vec<_> = (0..3)
            .map(|index| Share { index, count: 3 }.block(&range))
            .collect();
        assert_eq!(blocks[0], 40000..=43332);
        assert_eq!(blocks[1], 43333..=46665);
        assert_eq!(blocks[2], 46666..=49999);
        assert_eq!(Share::of_port(&range, 3, 43333), Some(1));
        assert_eq!(Share::of_port(&range, 3, 50000), None);
        assert!(Share { index: 0, count: 4 }.block(&(10..=12)).is_empty());
    }

    #[test]
    fn pool_hands_out_each_port_once_and_skips_refused_ports_for_a_while() {
        let mut pool = PortPool::new(&(100..=103), Share::WHOLE, 0);
        let a = pool.take(false).unwrap();
        pool.refuse(101, 0);
        let b = pool.take(true).unwrap();
        assert_eq!(b % 2, 0);
        let c = pool.take(false).unwrap();
        assert_eq!(pool.take(false), None, "100, 102, 103 taken, 101 refused");
        assert!(![a, b, c].contains(&101));
        pool.expire(REFUSED_PORT_MS);
        assert_eq!(pool.take(false), Some(101));
        pool.release(a);
        assert_eq!(pool.take(false), Some(a));
    }

    #[test]
    fn pool_pairs_are_even_and_adjacent() {
        let mut pool = PortPool::new(&(101..=106), Share::WHOLE, 0);
        let p = pool.take_pair().unwrap();
        assert_eq!(p % 2, 0);
        assert!(pool.is_used(p) && pool.is_used(p + 1));
    }

    #[test]
    fn ledger_counts_users_and_slots_across_cores() {
        let q = Quotas {
            max_allocations_per_user: 2,
            max_allocations_total: 3,
            ..Quotas::default()
        };
        let l = Ledger::default();
        l.take("a", 1, &q).unwrap();
        l.take("a", 1, &q).unwrap();
        assert_eq!(l.take("a", 1, &q), Err(LedgerRefusal::User));
        assert_eq!(l.take("b", 2, &q), Err(LedgerRefusal::Total));
        l.give_back_allocation("a");
        l.take("b", 2, &q).unwrap();
        assert_eq!(l.slots(), 3);
    }
}
