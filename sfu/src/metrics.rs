//! Prometheus metrics (`duet_sfu_*`), registered into the caller's registry.
//! Labels are bounded: direction, drop reason, path kind.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every drop reason (the `reason` label's whole value set).
/// Why a participant left the node (bounded set, used as a metric label).
pub const REMOVAL_REASONS: &[&str] = &[
    "ws_closed",
    "ws_timeout",
    "bad_messages",
    "removed",
    "kicked",
    "admission_expired",
    "connect_timeout",
    "ice_failed",
    "dtls_failed",
    "connection_failed",
    "connection_closed",
    "shutdown",
];

pub const DROP_REASONS: &[&str] = &[
    "short",
    "oversized",
    "unknown_path",
    "rate_limited",
    "too_many_candidates",
    "not_rtc",
    "rejected_by_peer",
    "not_current_source",
    "waiting_keyframe",
    "before_switch",
    "write_failed",
    "handoff_full",
    "bad_ws_message",
    "not_ready",
    "srtp_failed",
    "bad_rtp",
    "bad_rtcp",
    "unknown_ssrc",
    "nack_miss",
];

#[derive(Clone)]
pub struct Metrics {
    pub participants: IntGauge,
    pub links: IntGauge,
    pub packets_in: IntCounter,
    pub packets_out: IntCounter,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub rtp_forwarded: IntCounter,
    /// Bandwidth estimates (REMB) sent to publishers on behalf of their subscribers.
    pub remb_relayed: IntCounter,
    /// Retransmissions sent to subscribers that reported loss (NACK).
    pub rtx_sent: IntCounter,
    /// NACKs sent to publishers for packets lost on their uplink.
    pub nacks_sent: IntCounter,
    removals: IntCounterVec,
    drops: IntCounterVec,
    drop_handles: Vec<(&'static str, IntCounter)>,
    pub keyframe_requests: IntCounterVec,
    pub snapshot_age_seconds: IntGauge,
    pub snapshot_served_age: Histogram,
    /// From a slot's switch to a new source until that source's first
    /// keyframe goes out on it: how long a subscriber sees no new picture.
    pub switch_to_keyframe: Histogram,
    pub handoff_in: IntCounter,
    pub handoff_out: IntCounter,
    pub ws_sessions: IntGauge,
    /// `max_participants` of this node, so dashboards can compute spare capacity.
    pub capacity: IntGauge,
    /// 1 while the node drains (takes no new visitors).
    pub draining: IntGauge,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let mut m = Self {
            participants: IntGauge::new(
                "duet_sfu_participants",
                "Participants on this node (admitted or connected)",
            )?,
            links: IntGauge::new("duet_sfu_links", "Linked pairs")?,
            packets_in: IntCounter::new(
                "duet_sfu_packets_in_total",
                "Datagrams received (UDP and TURN hand-off)",
            )?,
            packets_out: IntCounter::new(
                "duet_sfu_packets_out_total",
                "Datagrams sent (UDP and TURN hand-off)",
            )?,
            bytes_in: IntCounter::new("duet_sfu_bytes_in_total", "Bytes received")?,
            bytes_out: IntCounter::new("duet_sfu_bytes_out_total", "Bytes sent")?,
            rtp_forwarded: IntCounter::new(
                "duet_sfu_rtp_forwarded_total",
                "RTP packets forwarded to a subscriber",
            )?,
            remb_relayed: IntCounter::new(
                "duet_sfu_remb_relayed_total",
                "Subscriber bandwidth estimates (REMB) sent to publishers",
            )?,
            rtx_sent: IntCounter::new(
                "duet_sfu_rtx_sent_total",
                "Retransmissions sent to subscribers that reported loss (NACK).",
            )?,
            nacks_sent: IntCounter::new(
                "duet_sfu_nacks_sent_total",
                "NACKs sent to publishers for packets lost on their uplink.",
            )?,
            removals: IntCounterVec::new(
                Opts::new(
                    "duet_sfu_participants_removed_total",
                    "Participants that left the node, by reason",
                ),
                &["reason"],
            )?,
            drops: IntCounterVec::new(
                Opts::new(
                    "duet_sfu_drops_total",
                    "Dropped datagrams/packets/messages by reason",
                ),
                &["reason"],
            )?,
            drop_handles: Vec::new(),
            keyframe_requests: IntCounterVec::new(
                Opts::new(
                    "duet_sfu_keyframe_requests_total",
                    "Keyframe requests sent to publishers by cause",
                ),
                &["cause"],
            )?,
            snapshot_age_seconds: IntGauge::new(
                "duet_sfu_snapshot_oldest_age_seconds",
                "Age of the oldest latest-keyframe among connected video publishers",
            )?,
            snapshot_served_age: Histogram::with_opts(
                HistogramOpts::new(
                    "duet_sfu_snapshot_served_age_seconds",
                    "Age of snapshots when served",
                )
                .buckets(vec![0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
            )?,
            switch_to_keyframe: Histogram::with_opts(
                HistogramOpts::new(
                    "duet_sfu_switch_to_keyframe_seconds",
                    "From a subscriber's switch to a new source until its first keyframe is forwarded",
                )
                .buckets(vec![0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0]),
            )?,
            handoff_in: IntCounter::new(
                "duet_sfu_turn_handoff_in_total",
                "Datagrams received via the TURN hand-off",
            )?,
            handoff_out: IntCounter::new(
                "duet_sfu_turn_handoff_out_total",
                "Datagrams sent via the TURN hand-off",
            )?,
            ws_sessions: IntGauge::new("duet_sfu_ws_sessions", "Open client WebSocket sessions")?,
            capacity: IntGauge::new("duet_sfu_capacity", "Participants this node accepts at most")?,
            draining: IntGauge::new(
                "duet_sfu_draining",
                "1 while this node drains and takes no new visitors",
            )?,
        };
        registry.register(Box::new(m.participants.clone()))?;
        registry.register(Box::new(m.links.clone()))?;
        registry.register(Box::new(m.packets_in.clone()))?;
        registry.register(Box::new(m.packets_out.clone()))?;
        registry.register(Box::new(m.bytes_in.clone()))?;
        registry.register(Box::new(m.bytes_out.clone()))?;
        registry.register(Box::new(m.rtp_forwarded.clone()))?;
        registry.register(Box::new(m.remb_relayed.clone()))?;
        registry.register(Box::new(m.rtx_sent.clone()))?;
        registry.register(Box::new(m.nacks_sent.clone()))?;
        registry.register(Box::new(m.removals.clone()))?;
        registry.register(Box::new(m.drops.clone()))?;
        registry.register(Box::new(m.keyframe_requests.clone()))?;
        registry.register(Box::new(m.snapshot_age_seconds.clone()))?;
        registry.register(Box::new(m.snapshot_served_age.clone()))?;
        registry.register(Box::new(m.switch_to_keyframe.clone()))?;
        registry.register(Box::new(m.handoff_in.clone()))?;
        registry.register(Box::new(m.handoff_out.clone()))?;
        registry.register(Box::new(m.ws_sessions.clone()))?;
        registry.register(Box::new(m.capacity.clone()))?;
        registry.register(Box::new(m.draining.clone()))?;
        m.drop_handles = DROP_REASONS
            .iter()
            .map(|r| (*r, m.drops.with_label_values(&[*r])))
            .collect();
        for r in REMOVAL_REASONS {
            m.removals.with_label_values(&[*r]);
        }
        for c in ["switch", "subscriber", "periodic"] {
            m.keyframe_requests.with_label_values(&[c]);
        }
        Ok(m)
    }

    /// Counts a participant's removal; a reason outside
    /// [`REMOVAL_REASONS`] is counted as "other" so the label set stays bounded.
    pub fn removed(&self, reason: &str) {
        let label = if REMOVAL_REASONS.contains(&reason) {
            reason
        } else {
            "other"
        };
        self.removals.with_label_values(&[label]).inc();
    }

    /// Counts a drop; `reason` must be one of [`DROP_REASONS`].
    pub fn drop(&self, reason: &'static str) {
        match self.drop_handles.iter().find(|(r, _)| *r == reason) {
            Some((_, c)) => c.inc(),
            None => self.drops.with_label_values(&[reason]).inc(),
        }
    }

    pub fn drops(&self, reason: &str) -> u64 {
        self.drops.with_label_values(&[reason]).get()
    }
}
