//! Prometheus metrics, prefix `duet_signaling_`, bounded labels only.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub sessions_created: IntCounter,
    pub online: IntGauge,
    /// label `mode` = video | text
    pub waiting: IntGaugeVec,
    pub matches: IntCounter,
    pub time_to_match: Histogram,
    /// From a Next to the new pair's link on the SFU, when someone was
    /// waiting (the server's share of a switch).
    pub next_to_link: Histogram,
    pub chat_messages: IntCounter,
    pub reports: IntCounter,
    /// label `kind` = session | ws_message | next | report | ws_per_ip |
    /// ws_ping | login
    pub rate_limited: IntCounterVec,
    /// label `kind` = bad_json | unknown_type | bad_message | too_large |
    /// binary | bad_token | invalid | bad_utf8 | protocol
    pub bad_input: IntCounterVec,
    /// Visitor WebSockets closed for sending nothing for `ws_idle_timeout`.
    pub ws_idle_closed: IntCounter,
    pub sfu_errors: IntCounter,
    /// Visitors moved to another SFU node; labels `reason` = match | node_lost
    /// | draining, `result` = ok | failed.
    pub relocations: IntCounterVec,
    /// Screening results received; label `outcome` = clear | flagged |
    /// reported | cleared | gone (see `proto::screen_api::ResultOutcome`).
    pub screening_results: IntCounterVec,
    /// 1 while a dependency answers, 0 while it does not; label
    /// `dependency` = database | redis (checked by every tick, ban refresh
    /// and readiness probe).
    pub dependency_up: IntGaugeVec,
    /// Times this replica found the live state lost (Redis restarted empty)
    /// and put its visitors back.
    pub live_state_lost: IntCounter,
}

fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, prometheus::Error> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self::register(r)?;
        // Every relocation series exists from the start (at 0), for rate() and alerts.
        for reason in ["match", "node_lost", "draining"] {
            for result in ["ok", "failed"] {
                m.relocations.with_label_values(&[reason, result]);
            }
        }
        for outcome in ["clear", "flagged", "reported", "cleared", "gone"] {
            m.screening_results.with_label_values(&[outcome]);
        }
        for dependency in ["database", "redis"] {
            m.dependency_up.with_label_values(&[dependency]).set(1);
        }
        Ok(m)
    }

    fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            sessions_created: reg(
                r,
                IntCounter::new("duet_signaling_sessions_created_total", "Sessions created")?,
            )?,
            online: reg(
                r,
                IntGauge::new("duet_signaling_online", "Open visitor WebSockets on this replica")?,
            )?,
            waiting: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("duet_signaling_waiting", "Visitors waiting for a partner"),
                    &["mode"],
                )?,
            )?,
            matches: reg(
                r,
                IntCounter::new("duet_signaling_matches_total", "Pairings made")?,
            )?,
            time_to_match: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("duet_signaling_time_to_match_seconds", "Time from join to match")
                        .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
                )?,
            )?,
            next_to_link: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "duet_signaling_next_to_link_seconds",
                        "From a Next to the new pair's link on the SFU, when a partner was waiting",
                    )
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
                )?,
            )?,
            chat_messages: reg(
                r,
                IntCounter::new("duet_signaling_chat_messages_total", "Chat messages relayed")?,
            )?,
            reports: reg(
                r,
                IntCounter::new("duet_signaling_reports_total", "Reports stored")?,
            )?,
            rate_limited: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "duet_signaling_rate_limited_total",
                        "Requests refused by a rate limit",
                    ),
                    &["kind"],
                )?,
            )?,
            bad_input: reg(
                r,
                IntCounterVec::new(
                    Opts::new("duet_signaling_bad_input_total", "Malformed client input refused"),
                    &["kind"],
                )?,
            )?,
            ws_idle_closed: reg(
                r,
                IntCounter::new(
                    "duet_signaling_ws_idle_closed_total",
                    "Visitor WebSockets closed after ws_idle_timeout without a frame",
                )?,
            )?,
            sfu_errors: reg(
                r,
                IntCounter::new(
                    "duet_signaling_sfu_errors_total",
                    "Failed calls to SFU internal APIs",
                )?,
            )?,
            relocations: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "duet_signaling_relocations_total",
                        "Visitors moved to another SFU node",
                    ),
                    &["reason", "result"],
                )?,
            )?,
            screening_results: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "duet_signaling_screening_results_total",
                        "Screening results received from screeners, by what was done",
                    ),
                    &["outcome"],
                )?,
            )?,
            live_state_lost: reg(
                r,
                IntCounter::new(
                    "duet_signaling_live_state_lost_total",
                    "Times the live state was found lost (Redis restarted empty) and visitors re-queued",
                )?,
            )?,
            dependency_up: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "duet_signaling_dependency_up",
                        "Whether a dependency answered its last use (1) or not (0)",
                    ),
                    &["dependency"],
                )?,
            )?,
        })
    }
}
