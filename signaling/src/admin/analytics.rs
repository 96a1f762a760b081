//! The analytics page's figures, from the service's own state and metrics:
//! online users and waiting per mode (shared live state), matches per
//! minute, time-to-match p50/p95, average call length, Next rate, reports
//! per 1,000 pairings (this replica's counters), TURN share of media
//! connections (the SFU nodes' participant lists). Also the moderation
//! metrics (`duet_admin_*`, `duet_signaling_call_seconds`,
//! `duet_signaling_pairings_ended_total`).

use super::Me;
use crate::error::ApiError;
use crate::matching::Pairing;
use crate::{AppState, Inner};
use axum::extract::State;
use axum::{Extension, Json};
use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use proto::signal::PartnerLeftReason;
use proto::token::SfuRole;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Rates are over this window (or since start, if shorter).
pub const RATE_WINDOW: Duration = Duration::from_secs(5 * 60);
const KEEP_SAMPLES: usize = (RATE_WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize + 2;

#[derive(Clone)]
pub(crate) struct AdminMetrics {
    pub call_seconds: Histogram,
    /// label `reason` = next | stop | disconnected | reported | ended
    pub pairings_ended: IntCounterVec,
    /// label `result` = ok | bad | locked | rate_limited | busy
    pub logins: IntCounterVec,
    /// argon2 checks/hashes running now (bounded by `max_password_checks`).
    pub password_checks: IntGauge,
    /// label `action` = the audit action (a fixed set in code)
    pub actions: IntCounterVec,
    /// label `kind` = dismissed | actioned
    pub retention_deleted: IntCounterVec,
    pub wall_open: IntGauge,
    pub watches: IntGauge,
}

fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, prometheus::Error> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl AdminMetrics {
    pub fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            call_seconds: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("duet_signaling_call_seconds", "Length of pairings, match to end")
                        .buckets(vec![5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]),
                )?,
            )?,
            pairings_ended: reg(
                r,
                IntCounterVec::new(
                    Opts::new("duet_signaling_pairings_ended_total", "Pairings ended, by why"),
                    &["reason"],
                )?,
            )?,
            logins: reg(
                r,
                IntCounterVec::new(
                    Opts::new("duet_admin_logins_total", "Moderator login attempts"),
                    &["result"],
                )?,
            )?,
            password_checks: reg(
                r,
                IntGauge::new(
                    "duet_admin_password_checks_running",
                    "argon2 password checks and hashes running now",
                )?,
            )?,
            actions: reg(
                r,
                IntCounterVec::new(
                    Opts::new("duet_admin_actions_total", "Moderator actions and evidence views"),
                    &["action"],
                )?,
            )?,
            retention_deleted: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "duet_admin_retention_reports_total",
                        "Reports whose evidence the retention job deleted",
                    ),
                    &["kind"],
                )?,
            )?,
            wall_open: reg(
                r,
                IntGauge::new(
                    "duet_admin_wall_open",
                    "1 while a moderator's snapshot wall is open",
                )?,
            )?,
            watches: reg(
                r,
                IntGauge::new("duet_admin_watches", "Moderators watching a call live")?,
            )?,
        })
    }

    pub(crate) fn pairing_ended(&self, p: &Pairing, reason: PartnerLeftReason, now_ms: u64) {
        let label = match reason {
            PartnerLeftReason::Next => "next",
            PartnerLeftReason::Stop => "stop",
            PartnerLeftReason::Disconnected => "disconnected",
            PartnerLeftReason::Reported => "reported",
            PartnerLeftReason::Ended => "ended",
        };
        self.pairings_ended.with_label_values(&[label]).inc();
        self.call_seconds
            .observe(now_ms.saturating_sub(p.matched_ms) as f64 / 1000.0);
    }
}

/// Counters at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    at: Instant,
    matches: u64,
    ended: u64,
    nexts: u64,
}

fn counters(inner: &Inner) -> Sample {
    let m = &inner.admin.metrics;
    let ended: u64 = ["next", "stop", "disconnected", "reported", "ended"]
        .iter()
        .map(|r| m.pairings_ended.with_label_values(&[r]).get())
        .sum();
    Sample {
        at: Instant::now(),
        matches: inner.metrics.matches.get(),
        ended,
        nexts: m.pairings_ended.with_label_values(&["next"]).get(),
    }
}

pub(crate) fn sample(inner: &Inner) {
    let s = counters(inner);
    let mut q = inner.admin.samples.lock();
    q.push_back(s);
    while q.len() > KEEP_SAMPLES {
        q.pop_front();
    }
}

/// Quantile `q` of a histogram given as `(upper bound, cumulative count)`
/// buckets, interpolating linearly inside a bucket (as Prometheus'
/// `histogram_quantile`). `None` without observations.
pub fn histogram_quantile(buckets: &[(f64, u64)], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut lower = 0.0;
    let mut below = 0u64;
    for &(upper, cum) in buckets {
        if cum as f64 >= rank {
            let in_bucket = cum.saturating_sub(below);
            if in_bucket == 0 {
                return Some(upper);
            }
            let frac = (rank - below as f64) / in_bucket as f64;
            return Some(lower + (upper - lower) * frac.clamp(0.0, 1.0));
        }
        lower = upper;
        below = cum;
    }
    // Above the last finite bucket: its bound is the best estimate.
    Some(lower)
}

fn buckets(h: &Histogram) -> (Vec<(f64, u64)>, u64, f64) {
    let families = h.collect();
    let Some(m) = families.first().and_then(|f| f.get_metric().first()) else {
        return (Vec::new(), 0, 0.0);
    };
    let hist = m.get_histogram();
    let b = hist
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    (b, hist.get_sample_count(), hist.get_sample_sum())
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Waiting {
    pub video: u64,
    pub text: u64,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Analytics {
    pub online: u64,
    pub waiting: Waiting,
    /// Calls running now (video and text).
    pub active_pairings: usize,
    /// Over the last `window_secs` (up to 5 minutes).
    pub matches_per_minute: Option<f64>,
    pub nexts_per_minute: Option<f64>,
    pub window_secs: u64,
    pub time_to_match_p50_secs: Option<f64>,
    pub time_to_match_p95_secs: Option<f64>,
    pub avg_call_secs: Option<f64>,
    /// Share of ended calls that ended with Next.
    pub next_rate: Option<f64>,
    /// Share of connected users' media going through TURN.
    pub turn_share: Option<f64>,
    pub media_connections: u64,
    pub reports_per_1000_pairings: Option<f64>,
    /// This replica's counters since it started.
    pub pairings_total: u64,
    pub calls_ended_total: u64,
    pub reports_total: u64,
    /// Reports stored, all time.
    pub reports_stored: i64,
    pub nodes: usize,
}

/// `GET /api/admin/analytics`.
pub async fn get(
    State(state): State<AppState>,
    Extension(_me): Extension<Me>,
) -> Result<Json<Analytics>, ApiError> {
    let inner = &state.inner;
    let (video, text) = inner.live.waiting().await?;
    let online = inner.live.online().await?;
    let active_pairings = inner.live.current_pairings(100_000).await?.len();
    let now = counters(inner);
    let (matches_per_minute, nexts_per_minute, window) = {
        let q = inner.admin.samples.lock();
        let base = q
            .iter()
            .find(|s| now.at.saturating_duration_since(s.at) <= RATE_WINDOW + SAMPLE_EVERY)
            .copied();
        match base {
            Some(b) if now.at.saturating_duration_since(b.at) >= Duration::from_secs(1) => {
                let mins = now.at.saturating_duration_since(b.at).as_secs_f64() / 60.0;
                (
                    Some(now.matches.saturating_sub(b.matches) as f64 / mins),
                    Some(now.nexts.saturating_sub(b.nexts) as f64 / mins),
                    now.at.saturating_duration_since(b.at).as_secs(),
                )
            }
            _ => (None, None, 0),
        }
    };
    let (tb, tcount, _) = buckets(&inner.metrics.time_to_match);
    let (_, ccount, csum) = buckets(&inner.admin.metrics.call_seconds);
    let nodes = inner.registry.nodes().await?;
    let (mut users, mut via_turn) = (0u64, 0u64);
    for node in &nodes {
        match inner.admin.sfu.participants(node).await {
            Ok(list) => {
                for p in list.iter().filter(|p| p.role == SfuRole::User && p.connected) {
                    users += 1;
                    via_turn += p.via_turn as u64;
                }
            }
            Err(e) => tracing::warn!(error = %e, "participant list for analytics failed"),
        }
    }
    let reports_total = inner.metrics.reports.get();
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    Ok(Json(Analytics {
        online,
        waiting: Waiting { video, text },
        active_pairings,
        matches_per_minute,
        nexts_per_minute,
        window_secs: window,
        time_to_match_p50_secs: histogram_quantile(&tb, tcount, 0.5),
        time_to_match_p95_secs: histogram_quantile(&tb, tcount, 0.95),
        avg_call_secs: (ccount > 0).then(|| csum / ccount as f64),
        next_rate: ratio(now.nexts, now.ended),
        turn_share: ratio(via_turn, users),
        media_connections: users,
        reports_per_1000_pairings: ratio(reports_total, now.matches).map(|r| r * 1000.0),
        pairings_total: now.matches,
        calls_ended_total: now.ended,
        reports_total,
        reports_stored: inner.store.report_total().await?,
        nodes: nodes.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        // 10 observations: 4 ≤ 0.1 s, 4 in (0.1, 0.5], 2 in (0.5, 1].
        let b = [(0.1, 4), (0.5, 8), (1.0, 10), (f64::INFINITY, 10)];
        assert_eq!(histogram_quantile(&b, 0, 0.5), None);
        let p50 = histogram_quantile(&b, 10, 0.5).unwrap();
        assert!((p50 - 0.2).abs() < 1e-9, "{p50}");
        let p95 = histogram_quantile(&b, 10, 0.95).unwrap();
        assert!((p95 - 0.875).abs() < 1e-9, "{p95}");
        let p0 = histogram_quantile(&b, 10, 0.0).unwrap();
        assert!(p0 <= 0.1);
    }
}
