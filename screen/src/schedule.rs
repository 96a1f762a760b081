//! The sampling schedule, sans-IO: every side of every live video call is
//! sampled right after the match (`first_after`) and then every `period`.
//! Slot `k` of a call is due at `matched + first_after + k * period`; every
//! screener computes the same slots, which is what lets several screeners
//! share the work by claiming `(pairing, side, slot)` (see
//! `proto::screen_api`). A screener that fell behind takes the latest due
//! slot and counts the ones it skipped, instead of working off a backlog of
//! stale pictures.
//!
//! Drive it with [`Scheduler::handle_calls`] (each listing of live calls),
//! then [`Scheduler::poll_due`] (what to sample now, at most as many as
//! there is room for), and sleep until [`Scheduler::poll_timeout`]. Time is
//! Unix milliseconds handed in; nothing here reads a clock.

use proto::screen_api::{SampleKey, ScreeningCall, Side};
use proto::{PairingId, ParticipantId};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Between two samples of one side.
    pub period_ms: u64,
    /// From the match to the first sample (the SFU asks for a keyframe when
    /// it links a pair, so a fresh snapshot exists soon after).
    pub first_after_ms: u64,
}

/// A sample to take now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    pub key: SampleKey,
    pub participant: ParticipantId,
    /// The node's internal API (where the snapshot is).
    pub internal_url: String,
    /// When it fell due (queue age is measured from here).
    pub due_ms: u64,
}

#[derive(Debug)]
struct Call {
    call: ScreeningCall,
    /// Next slot to take, per side (`[a, b]`).
    next: [u32; 2],
}

fn index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

#[derive(Debug)]
pub struct Scheduler {
    config: ScheduleConfig,
    calls: HashMap<PairingId, Call>,
    /// Slots passed over because a later one was already due.
    missed: u64,
}

impl Scheduler {
    pub fn new(config: ScheduleConfig) -> Self {
        Self {
            config: ScheduleConfig {
                period_ms: config.period_ms.max(1),
                ..config
            },
            calls: HashMap::new(),
            missed: 0,
        }
    }

    /// Takes a fresh listing of the live calls: new calls join the schedule,
    /// ended and cleared ones leave it, moved ones get their new node.
    pub fn handle_calls(&mut self, calls: Vec<ScreeningCall>) {
        let mut live: HashMap<PairingId, ScreeningCall> = calls
            .into_iter()
            .filter(|c| !c.cleared)
            .map(|c| (c.pairing_id.clone(), c))
            .collect();
        self.calls.retain(|id, _| live.contains_key(id));
        for (id, call) in live.drain() {
            match self.calls.get_mut(&id) {
                Some(known) => known.call = call,
                None => {
                    self.calls.insert(id, Call { call, next: [0, 0] });
                }
            }
        }
    }

    fn due_at(&self, call: &ScreeningCall, slot: u32) -> u64 {
        call.matched_ms
            .saturating_add(self.config.first_after_ms)
            .saturating_add(u64::from(slot).saturating_mul(self.config.period_ms))
    }

    /// The latest slot due at `now`, if the next one to take is due.
    fn latest_due(&self, call: &ScreeningCall, next: u32, now: u64) -> Option<u32> {
        if self.due_at(call, next) > now {
            return None;
        }
        let since_first = now - call.matched_ms.saturating_add(self.config.first_after_ms);
        let latest = u32::try_from(since_first / self.config.period_ms).unwrap_or(u32::MAX);
        Some(latest.max(next))
    }

    /// Samples due at `now`, oldest first, at most `room`; each is taken
    /// (not offered again) whether or not its claim is won.
    pub fn poll_due(&mut self, now: u64, room: usize) -> Vec<Due> {
        let mut due = Vec::new();
        for (id, c) in &self.calls {
            for s in &c.call.sides {
                let next = c.next[index(s.side)];
                if let Some(slot) = self.latest_due(&c.call, next, now) {
                    due.push((self.due_at(&c.call, slot), id.clone(), s.side, slot));
                }
            }
        }
        due.sort();
        due.truncate(room);
        let mut out = Vec::with_capacity(due.len());
        for (due_ms, id, side, slot) in due {
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            let i = index(side);
            self.missed += u64::from(slot - c.next[i]);
            c.next[i] = slot.saturating_add(1);
            let Some(s) = c.call.sides.iter().find(|s| s.side == side) else {
                continue;
            };
            out.push(Due {
                key: SampleKey {
                    pairing_id: id,
                    side,
                    slot,
                },
                participant: s.participant.clone(),
                internal_url: c.call.internal_url.clone(),
                due_ms,
            });
        }
        out
    }

    /// When the next sample falls due (`None`: no calls).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.calls
            .values()
            .flat_map(|c| {
                c.call
                    .sides
                    .iter()
                    .map(move |s| self.due_at(&c.call, c.next[index(s.side)]))
            })
            .min()
    }

    /// Age of the oldest sample that is due and not taken (0: keeping up).
    pub fn lag_ms(&self, now: u64) -> u64 {
        self.poll_timeout().map_or(0, |t| now.saturating_sub(t))
    }

    /// Slots skipped since the last call (a screener that falls behind).
    pub fn take_missed(&mut self) -> u64 {
        std::mem::take(&mut self.missed)
    }

    /// Calls on the schedule.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::screen_api::CallSide;
    use proto::NodeId;

    const PERIOD: u64 = 10_000;
    const FIRST: u64 = 1_000;

    fn call(id: &str, matched_ms: u64) -> ScreeningCall {
        ScreeningCall {
            pairing_id: PairingId::new(id),
            matched_ms,
            node_id: NodeId::new("n1"),
            internal_url: "http://n1".into(),
            sides: vec![
                CallSide {
                    side: Side::A,
                    participant: ParticipantId::new(format!("{id}-a")),
                },
                CallSide {
                    side: Side::B,
                    participant: ParticipantId::new(format!("{id}-b")),
                },
            ],
            cleared: false,
        }
    }

    fn scheduler() -> Scheduler {
        Scheduler::new(ScheduleConfig {
            period_ms: PERIOD,
            first_after_ms: FIRST,
        })
    }

    fn slots(d: &[Due]) -> Vec<(String, Side, u32)> {
        d.iter()
            .map(|d| (d.key.pairing_id.to_string(), d.key.side, d.key.slot))
            .collect()
    }

    #[test]
    fn a_new_pairing_is_sampled_right_after_the_match_then_every_period() {
        let mut s = scheduler();
        s.handle_calls(vec![call("p", 100_000)]);
        assert!(s.poll_due(100_000 + FIRST - 1, 10).is_empty());
        assert_eq!(s.poll_timeout(), Some(100_000 + FIRST));
        let first = s.poll_due(100_000 + FIRST, 10);
        assert_eq!(
            slots(&first),
            vec![("p".into(), Side::A, 0), ("p".into(), Side::B, 0)]
        );
        assert_eq!(first[0].participant.as_str(), "p-a");
        // Taken: not offered again before the next slot.
        assert!(s.poll_due(100_000 + FIRST + PERIOD - 1, 10).is_empty());
        let second = s.poll_due(100_000 + FIRST + PERIOD, 10);
        assert_eq!(slots(&second)[0].2, 1);
        assert_eq!(s.take_missed(), 0);
    }

    #[test]
    fn a_screener_that_fell_behind_takes_the_latest_slot_and_counts_the_skipped() {
        let mut s = scheduler();
        s.handle_calls(vec![call("p", 0)]);
        let d = s.poll_due(FIRST + 3 * PERIOD + 5, 10);
        assert_eq!(
            slots(&d),
            vec![("p".into(), Side::A, 3), ("p".into(), Side::B, 3)]
        );
        assert_eq!(d[0].due_ms, FIRST + 3 * PERIOD);
        assert_eq!(s.take_missed(), 6);
        assert_eq!(s.take_missed(), 0);
    }

    #[test]
    fn room_limits_the_samples_and_the_oldest_go_first() {
        let mut s = scheduler();
        s.handle_calls(vec![call("late", 5_000), call("early", 0)]);
        let now = 5_000 + FIRST;
        let d = s.poll_due(now, 2);
        assert_eq!(
            slots(&d),
            vec![("early".into(), Side::A, 0), ("early".into(), Side::B, 0)]
        );
        // The rest stay due and show as lag until there is room.
        assert_eq!(s.lag_ms(now), 0);
        assert_eq!(s.lag_ms(now + 2_000), 2_000);
        assert_eq!(slots(&s.poll_due(now, 10)).len(), 2);
    }

    #[test]
    fn ended_and_cleared_calls_leave_the_schedule_and_moves_keep_the_slot() {
        let mut s = scheduler();
        s.handle_calls(vec![call("p", 0), call("q", 0)]);
        assert_eq!(s.poll_due(FIRST, 10).len(), 4);
        let mut moved = call("p", 0);
        moved.internal_url = "http://n2".into();
        let mut cleared = call("q", 0);
        cleared.cleared = true;
        s.handle_calls(vec![moved, cleared]);
        assert_eq!(s.len(), 1);
        let d = s.poll_due(FIRST + PERIOD, 10);
        assert_eq!(
            slots(&d),
            vec![("p".into(), Side::A, 1), ("p".into(), Side::B, 1)]
        );
        assert_eq!(d[0].internal_url, "http://n2");
        s.handle_calls(vec![]);
        assert!(s.is_empty());
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn two_screeners_compute_the_same_slots_for_the_same_call() {
        let (mut x, mut y) = (scheduler(), scheduler());
        x.handle_calls(vec![call("p", 42)]);
        y.handle_calls(vec![call("p", 42)]);
        // y looks later than x, but both name the slot by the match time.
        let dx = x.poll_due(42 + FIRST + 100, 10);
        let dy = y.poll_due(42 + FIRST + 9_000, 10);
        assert_eq!(slots(&dx), slots(&dy));
    }
}
