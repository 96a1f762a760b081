//! Prometheus metrics (`duet_turn_*`), bounded labels only.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Direction label values.
pub const TO_PEER: &str = "to_peer";
pub const TO_CLIENT: &str = "to_client";

/// Reasons for `duet_turn_auth_failures_total`.
pub mod auth_reason {
    pub const STALE_NONCE: &str = "stale_nonce";
    pub const BAD_NONCE: &str = "bad_nonce";
    pub const EXPIRED: &str = "expired";
    pub const MALFORMED_USERNAME: &str = "malformed_username";
    pub const BAD_INTEGRITY: &str = "bad_integrity";
    pub const WRONG_REALM: &str = "wrong_realm";
    pub const MISSING_ATTRIBUTES: &str = "missing_attributes";
    pub const WRONG_CREDENTIALS: &str = "wrong_credentials";
    pub const ALL: &[&str] = &[
        STALE_NONCE,
        BAD_NONCE,
        EXPIRED,
        MALFORMED_USERNAME,
        BAD_INTEGRITY,
        WRONG_REALM,
        MISSING_ATTRIBUTES,
        WRONG_CREDENTIALS,
    ];
}

/// Quota names for `duet_turn_quota_hits_total`.
pub mod quota {
    pub const USER_ALLOCATIONS: &str = "user_allocations";
    pub const TOTAL_ALLOCATIONS: &str = "total_allocations";
    pub const PERMISSIONS: &str = "permissions";
    pub const CHANNELS: &str = "channels";
    pub const BANDWIDTH: &str = "bandwidth";
    pub const UNAUTH_RATE: &str = "unauth_rate";
    pub const RELAY_PORTS: &str = "relay_ports";
    pub const ALL: &[&str] = &[
        USER_ALLOCATIONS,
        TOTAL_ALLOCATIONS,
        PERMISSIONS,
        CHANNELS,
        BANDWIDTH,
        UNAUTH_RATE,
        RELAY_PORTS,
    ];
}

/// Reasons for `duet_turn_dropped_total`.
pub mod drop_reason {
    pub const MALFORMED: &str = "malformed";
    pub const BAD_FINGERPRINT: &str = "bad_fingerprint";
    pub const NO_ALLOCATION: &str = "no_allocation";
    pub const NO_PERMISSION: &str = "no_permission";
    pub const NO_CHANNEL: &str = "no_channel";
    pub const UNEXPECTED: &str = "unexpected_message";
    pub const BACKEND: &str = "backend";
    pub const ALL: &[&str] = &[
        MALFORMED,
        BAD_FINGERPRINT,
        NO_ALLOCATION,
        NO_PERMISSION,
        NO_CHANNEL,
        UNEXPECTED,
        BACKEND,
    ];
}

/// All metrics of the TURN relay.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub allocations: IntGauge,
    pub permissions: IntGauge,
    pub channels: IntGauge,
    pub relayed_packets: IntCounterVec,
    pub relayed_bytes: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub policy_denials: IntCounter,
    pub quota_hits: IntCounterVec,
    pub dropped: IntCounterVec,
    pub requests: IntCounterVec,
    hot: [(IntCounter, IntCounter); 2],
}

impl Metrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.allocations.clone()))?;
        registry.register(Box::new(m.permissions.clone()))?;
        registry.register(Box::new(m.channels.clone()))?;
        registry.register(Box::new(m.relayed_packets.clone()))?;
        registry.register(Box::new(m.relayed_bytes.clone()))?;
        registry.register(Box::new(m.auth_failures.clone()))?;
        registry.register(Box::new(m.policy_denials.clone()))?;
        registry.register(Box::new(m.quota_hits.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        Ok(m)
    }

    /// Metrics not registered anywhere (for tests and tools).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        let relayed_packets = IntCounterVec::new(
            Opts::new(
                "duet_turn_relayed_packets_total",
                "Datagrams relayed, by direction",
            ),
            &["direction"],
        )?;
        let relayed_bytes = IntCounterVec::new(
            Opts::new(
                "duet_turn_relayed_bytes_total",
                "Payload bytes relayed, by direction",
            ),
            &["direction"],
        )?;
        let hot = [
            (
                relayed_packets.with_label_values(&[TO_PEER]),
                relayed_bytes.with_label_values(&[TO_PEER]),
            ),
            (
                relayed_packets.with_label_values(&[TO_CLIENT]),
                relayed_bytes.with_label_values(&[TO_CLIENT]),
            ),
        ];
        let m = Metrics {
            hot,
            allocations: IntGauge::new("duet_turn_allocations", "Live TURN allocations")?,
            permissions: IntGauge::new("duet_turn_permissions", "Live TURN permissions")?,
            channels: IntGauge::new("duet_turn_channels", "Live TURN channel bindings")?,
            relayed_packets,
            relayed_bytes,
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "duet_turn_auth_failures_total",
                    "Rejected authentications, by reason",
                ),
                &["reason"],
            )?,
            policy_denials: IntCounter::new(
                "duet_turn_policy_denials_total",
                "Peer addresses refused by the relay policy",
            )?,
            quota_hits: IntCounterVec::new(
                Opts::new(
                    "duet_turn_quota_hits_total",
                    "Requests or datagrams refused by a quota",
                ),
                &["quota"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new("duet_turn_dropped_total", "Inbound datagrams dropped, by reason"),
                &["reason"],
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "duet_turn_requests_total",
                    "STUN/TURN requests handled, by method",
                ),
                &["method"],
            )?,
        };
        // Pre-create every label so that series exist from the start.
        for r in auth_reason::ALL {
            m.auth_failures.with_label_values(&[r]);
        }
        for q in quota::ALL {
            m.quota_hits.with_label_values(&[q]);
        }
        for r in drop_reason::ALL {
            m.dropped.with_label_values(&[r]);
        }
        Ok(m)
    }

    /// Counts one relayed datagram (`to_peer` = true for client -> peer).
    pub(crate) fn relayed(&self, to_peer: bool, bytes: usize) {
        let (p, b) = &self.hot[usize::from(!to_peer)];
        p.inc();
        b.inc_by(bytes as u64);
    }

    pub(crate) fn drop(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }

    pub(crate) fn quota(&self, which: &str) {
        self.quota_hits.with_label_values(&[which]).inc();
    }

    pub(crate) fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }
}
