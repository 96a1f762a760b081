//! The forwarding graph (plain data): who feeds whose outgoing tracks.
//!
//! Every participant has outgoing *slots*; a slot is one outgoing audio
//! track plus one outgoing video track. A user has one slot (its partner),
//! a watcher has two (`a` and `b`). Each slot has at most one source; a
//! source feeds any number of slots (one source -> N sinks).

use crate::routing::Key;
use std::collections::HashMap;

/// One outgoing slot: (sink participant, slot index).
pub type SlotRef = (Key, u8);

#[derive(Debug, Default)]
pub struct ForwardingGraph {
    source_of: HashMap<SlotRef, Key>,
    sinks_of: HashMap<Key, Vec<SlotRef>>,
}

/// What a graph change means for the media plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Slots whose source changed (to `Some(new)` or to nothing).
    pub switched: Vec<(SlotRef, Option<Key>)>,
}

impl ForwardingGraph {
    /// Points `slot` at `source` (replacing any earlier source).
    pub fn set_source(&mut self, slot: SlotRef, source: Key) -> Option<Key> {
        let old = self.source_of.insert(slot, source);
        if let Some(old) = old {
            self.detach_sink(old, slot);
        }
        self.sinks_of.entry(source).or_default().push(slot);
        old
    }

    /// Clears `slot`'s source.
    pub fn clear_source(&mut self, slot: SlotRef) -> Option<Key> {
        let old = self.source_of.remove(&slot);
        if let Some(old) = old {
            self.detach_sink(old, slot);
        }
        old
    }

    fn detach_sink(&mut self, source: Key, slot: SlotRef) {
        if let Some(v) = self.sinks_of.get_mut(&source) {
            v.retain(|s| *s != slot);
            if v.is_empty() {
                self.sinks_of.remove(&source);
            }
        }
    }

    /// `a` receives `b` and `b` receives `a` (slot 0 of each). Replaces
    /// earlier partners; the earlier partners' slots are cleared (one
    /// partner at a time).
    pub fn link(&mut self, a: Key, b: Key) -> Change {
        let mut switched = Vec::new();
        for (sink, src) in [(a, b), (b, a)] {
            // The old partner of `sink` no longer receives `sink`.
            if let Some(old) = self.source_of.get(&(sink, 0)).copied() {
                if old != src && self.source_of.get(&(old, 0)) == Some(&sink) {
                    self.clear_source((old, 0));
                    switched.push(((old, 0), None));
                }
            }
        }
        for (sink, src) in [(a, b), (b, a)] {
            if self.source_of.get(&(sink, 0)) != Some(&src) {
                self.set_source((sink, 0), src);
                switched.push(((sink, 0), Some(src)));
            }
        }
        Change { switched }
    }

    /// Ends the link between `a` and `b` (only the slots that point at each other).
    pub fn unlink(&mut self, a: Key, b: Key) -> Change {
        let mut switched = Vec::new();
        for (sink, src) in [(a, b), (b, a)] {
            if self.source_of.get(&(sink, 0)) == Some(&src) {
                self.clear_source((sink, 0));
                switched.push(((sink, 0), None));
            }
        }
        Change { switched }
    }

    /// A watcher receives `a` on slot 0 and `b` on slot 1.
    pub fn watch(&mut self, watcher: Key, a: Key, b: Key) -> Change {
        let mut switched = Vec::new();
        for (slot, src) in [(0u8, a), (1u8, b)] {
            if self.source_of.get(&(watcher, slot)) != Some(&src) {
                self.set_source((watcher, slot), src);
                switched.push(((watcher, slot), Some(src)));
            }
        }
        Change { switched }
    }

    /// The watcher stops watching (both slots cleared).
    pub fn unwatch(&mut self, watcher: Key) -> Change {
        let mut switched = Vec::new();
        for slot in [0u8, 1u8] {
            if self.clear_source((watcher, slot)).is_some() {
                switched.push(((watcher, slot), None));
            }
        }
        Change { switched }
    }

    /// Removes a participant: its slots and every slot it fed.
    pub fn remove(&mut self, key: Key) -> Change {
        let mut switched = Vec::new();
        for slot in [0u8, 1u8] {
            self.clear_source((key, slot));
        }
        if let Some(sinks) = self.sinks_of.remove(&key) {
            for s in sinks {
                self.source_of.remove(&s);
                switched.push((s, None));
            }
        }
        Change { switched }
    }

    pub fn source(&self, slot: SlotRef) -> Option<Key> {
        self.source_of.get(&slot).copied()
    }

    pub fn sinks(&self, source: Key) -> &[SlotRef] {
        self.sinks_of.get(&source).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Number of user links (pairs of slot-0 sinks pointing at each other).
    pub fn link_count(&self) -> usize {
        self.source_of
            .iter()
            .filter(|((sink, slot), src)| {
                *slot == 0 && sink < src && self.source_of.get(&(**src, 0)) == Some(sink)
            })
            .count()
    }

    /// Checks the two indexes agree (for tests).
    pub fn is_consistent(&self) -> bool {
        let forward = self
            .source_of
            .iter()
            .all(|(slot, src)| self.sinks(*src).contains(slot));
        let backward = self.sinks_of.iter().all(|(src, sinks)| {
            !sinks.is_empty() && sinks.iter().all(|s| self.source_of.get(s) == Some(src))
        });
        forward && backward
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn link_feeds_both_ways_and_relink_replaces_the_partner() {
        let mut g = ForwardingGraph::default();
        g.link(1, 2);
        assert_eq!(g.source((1, 0)), Some(2));
        assert_eq!(g.source((2, 0)), Some(1));
        assert_eq!(g.link_count(), 1);
        let c = g.link(1, 3);
        assert_eq!(g.source((1, 0)), Some(3));
        assert_eq!(g.source((3, 0)), Some(1));
        assert_eq!(g.source((2, 0)), None, "old partner no longer receives 1");
        assert!(c.switched.contains(&((2, 0), None)));
        assert_eq!(g.link_count(), 1);
        assert!(g.is_consistent());
    }

    #[test]
    fn watcher_receives_both_and_survives_unlink_until_removed() {
        let mut g = ForwardingGraph::default();
        g.link(1, 2);
        g.watch(9, 1, 2);
        assert_eq!(g.sinks(1).len(), 2);
        g.unlink(1, 2);
        assert_eq!(g.source((9, 0)), Some(1));
        let c = g.remove(1);
        assert!(c.switched.contains(&((9, 0), None)));
        g.unwatch(9);
        assert!(g.sinks(2).is_empty());
        assert!(g.is_consistent());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Link(u64, u64),
        Unlink(u64, u64),
        Watch(u64, u64, u64),
        Unwatch(u64),
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6u64, 0..6u64)
                .prop_filter("distinct", |(a, b)| a != b)
                .prop_map(|(a, b)| Op::Link(a, b)),
            (0..6u64, 0..6u64).prop_map(|(a, b)| Op::Unlink(a, b)),
            (6..8u64, 0..6u64, 0..6u64).prop_map(|(w, a, b)| Op::Watch(w, a, b)),
            (6..8u64).prop_map(Op::Unwatch),
            (0..8u64).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Indexes stay consistent, a user has at most one partner and
        /// links are symmetric, whatever the sequence of operations.
        #[test]
        fn graph_stays_consistent_and_links_symmetric(ops in proptest::collection::vec(op(), 1..100)) {
            let mut g = ForwardingGraph::default();
            for op in ops {
                match op {
                    Op::Link(a, b) => { g.link(a, b); }
                    Op::Unlink(a, b) => { g.unlink(a, b); }
                    Op::Watch(w, a, b) => { g.watch(w, a, b); }
                    Op::Unwatch(w) => { g.unwatch(w); }
                    Op::Remove(k) => { g.remove(k); prop_assert!(g.sinks(k).is_empty()); }
                }
                prop_assert!(g.is_consistent());
                for a in 0..6u64 {
                    if let Some(b) = g.source((a, 0)) {
                        prop_assert_eq!(g.source((b, 0)), Some(a));
                    }
                }
            }
        }
    }
}
