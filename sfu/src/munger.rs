//! Per-outgoing-track RTP munger (plain data, `now` passed in).
//!
//! One munger sits on every outgoing audio and video track. It rewrites the
//! SSRC and payload type to the ones negotiated on the subscriber's leg and
//! keeps sequence numbers and timestamps continuous across source switches:
//! the first packet forwarded after a switch gets `last_seq + 1` and a
//! timestamp advanced by the wall-clock time since the last forwarded
//! packet, so a switch reads neither as loss nor as a time jump. After a
//! switch a video munger drops until the new source's next keyframe.

use crate::routing::Key;
use std::time::{Duration, Instant};

/// Why the munger dropped a packet (bounded set, used as a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MungeDrop {
    /// The packet is not from this track's current source.
    NotCurrentSource,
    /// After a switch: waiting for the new source's keyframe.
    WaitingKeyframe,
    /// Older than the switch point (would reuse sequence numbers).
    BeforeSwitch,
}

impl MungeDrop {
    pub fn label(self) -> &'static str {
        match self {
            MungeDrop::NotCurrentSource => "not_current_source",
            MungeDrop::WaitingKeyframe => "waiting_keyframe",
            MungeDrop::BeforeSwitch => "before_switch",
        }
    }
}

/// The header fields to write on the outgoing packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Munged {
    pub ssrc: u32,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
}

#[derive(Debug, Clone)]
pub struct Munger {
    out_ssrc: u32,
    out_pt: u8,
    clock_rate: u32,
    video: bool,
    source: Option<Key>,
    src_ssrc: Option<u32>,
    waiting_keyframe: bool,
    need_resync: bool,
    base_in_seq: u16,
    seq_offset: u16,
    ts_offset: u32,
    last_out: Option<(u16, u32, Instant)>,
}

fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl Munger {
    pub fn new(out_ssrc: u32, out_pt: u8, clock_rate: u32, video: bool) -> Self {
        Self {
            out_ssrc,
            out_pt,
            clock_rate,
            video,
            source: None,
            src_ssrc: None,
            waiting_keyframe: video,
            need_resync: true,
            base_in_seq: 0,
            seq_offset: 0,
            ts_offset: 0,
            last_out: None,
        }
    }

    /// The payload type written on this leg (it may be learned after creation).
    pub fn set_payload_type(&mut self, pt: u8) {
        self.out_pt = pt;
    }

    pub fn out_ssrc(&self) -> u32 {
        self.out_ssrc
    }

    pub fn is_video(&self) -> bool {
        self.video
    }

    pub fn payload_type(&self) -> u8 {
        self.out_pt
    }

    /// What the current source's timestamps are shifted by on this leg.
    pub fn timestamp_offset(&self) -> u32 {
        self.ts_offset
    }

    /// The current source's sequence number that went out as `out_seq`
    /// (for answering a NACK), if the numbering since the last switch
    /// covers it.
    pub fn source_seq(&self, out_seq: u16) -> Option<u16> {
        if self.source.is_none() || self.need_resync {
            return None;
        }
        let seq = out_seq.wrapping_sub(self.seq_offset);
        (!seq_newer(self.base_in_seq, seq)).then_some(seq)
    }

    pub fn source(&self) -> Option<Key> {
        self.source
    }

    /// Whether the munger waits for a keyframe of its current source.
    pub fn waiting_keyframe(&self) -> bool {
        self.source.is_some() && self.waiting_keyframe
    }

    /// Switches to another source (or none). The next forwarded packet
    /// continues the outgoing numbering; video waits for a keyframe.
    pub fn switch_source(&mut self, source: Option<Key>) {
        if source != self.source {
            self.source = source;
            self.src_ssrc = None;
            self.need_resync = true;
            self.waiting_keyframe = self.video;
        }
    }

    /// Decides about one packet of `source` (stream `ssrc`).
    /// `keyframe_start`: the packet starts a keyframe (video only).
    pub fn munge(
        &mut self,
        source: Key,
        ssrc: u32,
        seq: u16,
        ts: u32,
        keyframe_start: bool,
        now: Instant,
    ) -> Result<Munged, MungeDrop> {
        if self.source != Some(source) {
            return Err(MungeDrop::NotCurrentSource);
        }
        if self.src_ssrc != Some(ssrc) {
            // The source restarted its stream (new SSRC): same as a switch.
            self.src_ssrc = Some(ssrc);
            self.need_resync = true;
            self.waiting_keyframe = self.video;
        }
        if self.waiting_keyframe {
            if !keyframe_start {
                return Err(MungeDrop::WaitingKeyframe);
            }
            self.waiting_keyframe = false;
        }
        if self.need_resync {
            let (out_seq, out_ts) = match self.last_out {
                Some((last_seq, last_ts, at)) => {
                    let elapsed = now.saturating_duration_since(at);
                    (
                        last_seq.wrapping_add(1),
                        last_ts.wrapping_add(self.ticks(elapsed).max(1)),
                    )
                }
                None => (seq, ts),
            };
            self.seq_offset = out_seq.wrapping_sub(seq);
            self.ts_offset = out_ts.wrapping_sub(ts);
            self.base_in_seq = seq;
            self.need_resync = false;
        } else if seq_newer(self.base_in_seq, seq) {
            return Err(MungeDrop::BeforeSwitch);
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        match self.last_out {
            Some((last_seq, _, _)) if !seq_newer(out_seq, last_seq) => {}
            _ => self.last_out = Some((out_seq, out_ts, now)),
        }
        Ok(Munged {
            ssrc: self.out_ssrc,
            payload_type: self.out_pt,
            sequence_number: out_seq,
            timestamp: out_ts,
        })
    }

    fn ticks(&self, d: Duration) -> u32 {
        let t = d.as_micros().saturating_mul(u128::from(self.clock_rate)) / 1_000_000;
        u32::try_from(t).unwrap_or(u32::MAX / 2).min(u32::MAX / 2)
    }
}

/// Rate limit for keyframe requests towards one source.
#[derive(Debug, Clone)]
pub struct Throttle {
    min_interval: Duration,
    last: Option<Instant>,
}

impl Throttle {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last: None,
        }
    }

    /// Whether an event may pass now (and records it if so).
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.min_interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// Lets the next event pass regardless of the interval.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn switch_keeps_numbering_continuous_and_waits_for_keyframe() {
        let t0 = Instant::now();
        let mut m = Munger::new(1111, 96, 90_000, true);
        m.switch_source(Some(1));
        assert_eq!(
            m.munge(1, 10, 100, 5000, false, t0),
            Err(MungeDrop::WaitingKeyframe)
        );
        let a = m.munge(1, 10, 101, 5000, true, t0).unwrap();
        assert_eq!((a.ssrc, a.payload_type), (1111, 96));
        let b = m.munge(1, 10, 102, 8000, false, t0).unwrap();
        assert_eq!(b.sequence_number, a.sequence_number.wrapping_add(1));
        m.switch_source(Some(2));
        assert_eq!(
            m.munge(1, 10, 103, 9000, false, t0),
            Err(MungeDrop::NotCurrentSource)
        );
        assert_eq!(
            m.munge(2, 20, 60000, 1, false, t0),
            Err(MungeDrop::WaitingKeyframe)
        );
        let c = m
            .munge(2, 20, 60001, 2, true, t0 + Duration::from_millis(100))
            .unwrap();
        assert_eq!(c.sequence_number, b.sequence_number.wrapping_add(1));
        assert_eq!(c.timestamp, b.timestamp.wrapping_add(9000), "100 ms at 90 kHz");
        assert_eq!(m.munge(2, 20, 59999, 1, false, t0), Err(MungeDrop::BeforeSwitch));
    }

    #[test]
    fn audio_switches_without_waiting() {
        let t0 = Instant::now();
        let mut m = Munger::new(5, 111, 48_000, false);
        m.switch_source(Some(1));
        let a = m.munge(1, 1, 7, 960, false, t0).unwrap();
        m.switch_source(Some(2));
        let b = m
            .munge(2, 2, 30000, 77, false, t0 + Duration::from_millis(20))
            .unwrap();
        assert_eq!(b.sequence_number, a.sequence_number.wrapping_add(1));
        assert_eq!(b.timestamp, a.timestamp.wrapping_add(960));
    }

    #[test]
    fn throttle_spaces_requests() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_millis(500));
        assert!(t.allow(t0));
        assert!(!t.allow(t0 + Duration::from_millis(100)));
        assert!(t.allow(t0 + Duration::from_millis(600)));
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Switch(u8),
        Packet { keyframe: bool, gap_ms: u8 },
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            1 => (0..3u8).prop_map(Ev::Switch),
            8 => (any::<bool>(), 0..40u8).prop_map(|(keyframe, gap_ms)| Ev::Packet { keyframe, gap_ms }),
        ]
    }

    proptest! {
        /// Whatever the switch sequence, forwarded sequence numbers are
        /// consecutive (sources send without loss here, so any gap would be a
        /// munger bug) and timestamps never go backwards.
        #[test]
        fn random_switches_keep_seq_consecutive_and_time_monotonic(
            video in any::<bool>(),
            starts in proptest::collection::vec((any::<u16>(), any::<u32>()), 3),
            evs in proptest::collection::vec(ev(), 1..400),
        ) {
            let mut now = Instant::now();
            let mut m = Munger::new(42, 96, 90_000, video);
            let mut src: Vec<(u16, u32)> = starts.clone();
            let mut current = 0u8;
            m.switch_source(Some(0));
            let mut last: Option<(u16, u32)> = None;
            for e in evs {
                match e {
                    Ev::Switch(s) => { current = s; m.switch_source(Some(u64::from(s))); }
                    Ev::Packet { keyframe, gap_ms } => {
                        now += Duration::from_millis(u64::from(gap_ms));
                        // All sources keep sending; only the current one passes.
                        for s in 0..3u8 {
                            let (seq, ts) = &mut src[s as usize];
                            *seq = seq.wrapping_add(1);
                            *ts = ts.wrapping_add(u32::from(gap_ms) * 90);
                            let r = m.munge(u64::from(s), 1000 + u32::from(s), *seq, *ts, keyframe, now);
                            if s != current {
                                prop_assert_eq!(r, Err(MungeDrop::NotCurrentSource));
                                continue;
                            }
                            if let Ok(out) = r {
                                prop_assert_eq!(out.ssrc, 42);
                                if let Some((lseq, lts)) = last {
                                    prop_assert_eq!(out.sequence_number, lseq.wrapping_add(1));
                                    prop_assert!(out.timestamp.wrapping_sub(lts) < 0x8000_0000, "time went backwards");
                                }
                                last = Some((out.sequence_number, out.timestamp));
                            } else {
                                prop_assert!(video, "audio never waits");
                            }
                        }
                    }
                }
            }
        }
    }
}
