//! The bans in force, kept in memory, so that the join path (session
//! creation, WebSocket connect) never waits for the database.
//!
//! A burst of visitors (hundreds within a second, every evening) used to
//! make two or three queries each; with a handful of pooled connections and
//! a busy CPU the queue outgrew the pool's wait and visitors got 500s. Bans
//! change rarely and are few next to visits, so each replica keeps the
//! active ones: loaded in full at start and every [`FULL_RELOAD`], and every
//! `ban_refresh` it reads the bans created or lifted since its last read (an
//! index on each column). The replica where a moderator bans or lifts reads
//! at once, before answering; the others within `ban_refresh`.
//!
//! The same refresh keeps the set of devices whose appeal was accepted and
//! who have not been told yet, so only those visitors' sessions touch the
//! database (to mark the notice shown).

use crate::error::SignalingError;
use crate::store::{canonical_ip, Ban, Store};
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Everything is read again this often (also drops expired bans).
pub const FULL_RELOAD: Duration = Duration::from_secs(300);
/// Rows created or lifted this many seconds before the last read are read
/// again: covers clocks of replicas that differ a little, and the second a
/// read happened in.
const OVERLAP_SECS: i64 = 10;

/// A ban as the cache keeps it: the row plus whether it was lifted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanChange {
    pub ban: Ban,
    pub lifted: bool,
}

#[derive(Debug, Default)]
struct Snapshot {
    by_id: HashMap<String, Ban>,
    device: HashMap<String, Vec<Ban>>,
    ip: HashMap<IpAddr, Vec<Ban>>,
    cidr: Vec<(ipnet::IpNet, Ban)>,
    /// Devices with an accepted appeal they have not been told about.
    outcomes: HashSet<String>,
}

impl Snapshot {
    fn reindex(&mut self) {
        self.device.clear();
        self.ip.clear();
        self.cidr.clear();
        for b in self.by_id.values() {
            match b.kind.as_str() {
                "device" => self.device.entry(b.value.clone()).or_default().push(b.clone()),
                "ip" => {
                    if let Ok(ip) = b.value.parse::<IpAddr>() {
                        self.ip.entry(canonical_ip(ip)).or_default().push(b.clone());
                    }
                }
                "cidr" => {
                    if let Ok(net) = b.value.parse::<ipnet::IpNet>() {
                        self.cidr.push((net, b.clone()));
                    }
                }
                _ => {}
            }
        }
    }
}

/// The active bans of the deployment, as last read.
#[derive(Debug, Default)]
pub struct BanList {
    snap: RwLock<Snapshot>,
    /// `(unix seconds, Instant)` the last read started at, and of the last full read.
    marks: parking_lot::Mutex<Option<(i64, Instant)>>,
}

impl BanList {
    /// The ban in force for this device or IP at `now` (unix seconds), the
    /// longest-lasting one if several (as [`Store::active_ban`]).
    pub fn active(&self, device: Option<&str>, ip: Option<IpAddr>, now: i64) -> Option<Ban> {
        let snap = self.snap.read();
        let ip = ip.map(canonical_ip);
        let by_device = device.and_then(|d| snap.device.get(d)).into_iter().flatten();
        let by_ip = ip.and_then(|i| snap.ip.get(&i)).into_iter().flatten();
        let by_cidr = snap
            .cidr
            .iter()
            .filter(|(net, _)| ip.is_some_and(|i| net.contains(&i)))
            .map(|(_, b)| b);
        by_device
            .chain(by_ip)
            .chain(by_cidr)
            .filter(|b| b.expires_at.is_none_or(|e| e > now))
            .max_by_key(|b| b.expires_at.unwrap_or(i64::MAX))
            .cloned()
    }

    /// Whether `device` has an appeal outcome waiting to be shown.
    pub fn has_outcome(&self, device: &str) -> bool {
        self.snap.read().outcomes.contains(device)
    }

    /// The outcome was shown (this replica stops asking the database).
    pub fn outcome_shown(&self, device: &str) {
        self.snap.write().outcomes.remove(device);
    }

    /// Active bans in the cache.
    pub fn len(&self) -> usize {
        self.snap.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces everything with `bans` (a full read).
    pub fn replace(&self, bans: Vec<Ban>, outcomes: HashSet<String>) {
        let mut snap = self.snap.write();
        snap.by_id = bans.into_iter().map(|b| (b.id.clone(), b)).collect();
        snap.outcomes = outcomes;
        snap.reindex();
    }

    /// Applies bans created or lifted since the last read.
    pub fn apply(&self, changes: Vec<BanChange>, outcomes: HashSet<String>) {
        let mut snap = self.snap.write();
        let mut changed = false;
        for c in changes {
            let old = if c.lifted {
                snap.by_id.remove(&c.ban.id)
            } else {
                snap.by_id.insert(c.ban.id.clone(), c.ban.clone())
            };
            changed |= match old {
                Some(old) => c.lifted || old != c.ban,
                None => !c.lifted,
            };
        }
        if changed {
            snap.reindex();
        }
        snap.outcomes = outcomes;
    }

    /// Reads what changed from `store` (everything, the first time and every
    /// [`FULL_RELOAD`]).
    pub async fn refresh(&self, store: &Store) -> Result<(), SignalingError> {
        let now = crate::now_secs() as i64;
        let last = *self.marks.lock();
        let outcomes: HashSet<String> = store.devices_with_untold_outcome().await?.into_iter().collect();
        match last {
            Some((since, full_at)) if full_at.elapsed() < FULL_RELOAD => {
                let changes = store.bans_changed_since(since - OVERLAP_SECS).await?;
                self.apply(changes, outcomes);
                *self.marks.lock() = Some((now, full_at));
            }
            _ => {
                let bans = store.active_bans(now).await?;
                self.replace(bans, outcomes);
                *self.marks.lock() = Some((now, Instant::now()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(id: &str, kind: &str, value: &str, expires_at: Option<i64>) -> Ban {
        Ban {
            id: id.into(),
            kind: kind.into(),
            value: value.into(),
            reason: format!("reason {id}"),
            created_by: "mod".into(),
            created_at: 0,
            expires_at,
        }
    }

    #[test]
    fn device_ip_and_cidr_bans_match_and_the_longest_wins() {
        let list = BanList::default();
        list.replace(
            vec![
                ban("d", "device", "dev-1", Some(100)),
                ban("i", "ip", "192.0.2.7", Some(200)),
                ban("c", "cidr", "198.51.100.0/24", None),
            ],
            HashSet::new(),
        );
        let ip7: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(list.active(Some("dev-1"), None, 50).unwrap().id, "d");
        assert_eq!(list.active(Some("dev-1"), Some(ip7), 50).unwrap().id, "i");
        // An IPv4-mapped IPv6 address is the same address.
        let mapped: IpAddr = "::ffff:198.51.100.9".parse().unwrap();
        assert_eq!(list.active(None, Some(mapped), 50).unwrap().id, "c");
        // Expired bans do nothing.
        assert_eq!(list.active(Some("dev-1"), None, 100), None);
        assert_eq!(
            list.active(Some("dev-2"), Some("203.0.113.1".parse().unwrap()), 0),
            None
        );
    }

    #[test]
    fn changes_add_and_lift_bans() {
        let list = BanList::default();
        list.replace(vec![ban("a", "device", "dev-a", None)], HashSet::new());
        list.apply(
            vec![
                BanChange {
                    ban: ban("a", "device", "dev-a", None),
                    lifted: true,
                },
                BanChange {
                    ban: ban("b", "device", "dev-b", None),
                    lifted: false,
                },
            ],
            ["dev-a".to_owned()].into_iter().collect(),
        );
        assert_eq!(list.active(Some("dev-a"), None, 0), None);
        assert_eq!(list.active(Some("dev-b"), None, 0).unwrap().id, "b");
        assert!(list.has_outcome("dev-a"));
        list.outcome_shown("dev-a");
        assert!(!list.has_outcome("dev-a"));
        assert_eq!(list.len(), 1);
    }
}
