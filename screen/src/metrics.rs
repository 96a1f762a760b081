//! Prometheus metrics of a screener (`duet_screen_*`), registered into the
//! caller's registry. Labels are bounded: outcome and failure kind are fixed
//! sets, categories come from the model config (at most 32).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every `outcome` of `duet_screen_samples_total`.
pub const OUTCOMES: &[&str] = &["clear", "review", "high"];
/// Every `kind` of `duet_screen_failures_total`.
pub const FAILURES: &[&str] = &[
    "fetch",
    "no_snapshot",
    "decode",
    "inference",
    "output",
    "post",
    "queue_full",
];

#[derive(Clone)]
pub struct Metrics {
    samples: IntCounterVec,
    failures: IntCounterVec,
    flags: IntCounterVec,
    claims: IntCounterVec,
    /// Slots passed over because the screener fell behind.
    pub missed: IntCounter,
    /// Decode and resize.
    pub prepare: Histogram,
    /// Model run and output mapping.
    pub inference: Histogram,
    /// From a sample falling due to its inference starting.
    pub queue_age: Histogram,
    /// Age of the oldest due sample not taken yet (0: keeping up).
    pub lag_seconds: IntGauge,
    /// Live video calls on the schedule.
    pub calls: IntGauge,
    /// Samples between claim and result.
    pub in_flight: IntGauge,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Result<Histogram, prometheus::Error> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
}

impl Metrics {
    pub fn new(registry: &Registry, categories: &[String]) -> Result<Self, prometheus::Error> {
        let m = Self {
            samples: IntCounterVec::new(
                Opts::new("duet_screen_samples_total", "Snapshots screened, by highest level reached"),
                &["outcome"],
            )?,
            failures: IntCounterVec::new(
                Opts::new(
                    "duet_screen_failures_total",
                    "Samples that could not be screened (fetch, no snapshot, decode, inference, output, post, queue full)",
                ),
                &["kind"],
            )?,
            flags: IntCounterVec::new(
                Opts::new("duet_screen_flags_total", "Samples at review or high, by category"),
                &["category", "level"],
            )?,
            claims: IntCounterVec::new(
                Opts::new("duet_screen_claims_total", "Sample claims, won or taken by another screener"),
                &["result"],
            )?,
            missed: IntCounter::new(
                "duet_screen_missed_slots_total",
                "Sampling slots skipped because a later one was already due (the screener fell behind)",
            )?,
            prepare: histogram(
                "duet_screen_prepare_seconds",
                "Snapshot decode and resize time",
                vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1],
            )?,
            inference: histogram(
                "duet_screen_inference_seconds",
                "Model inference time per snapshot",
                vec![0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0],
            )?,
            queue_age: histogram(
                "duet_screen_queue_age_seconds",
                "From a sample falling due to its inference starting",
                vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0],
            )?,
            lag_seconds: IntGauge::new(
                "duet_screen_lag_seconds",
                "Age of the oldest sample that is due and not taken yet",
            )?,
            calls: IntGauge::new("duet_screen_calls", "Live video calls on the schedule")?,
            in_flight: IntGauge::new("duet_screen_in_flight", "Samples between claim and result")?,
        };
        registry.register(Box::new(m.samples.clone()))?;
        registry.register(Box::new(m.failures.clone()))?;
        registry.register(Box::new(m.flags.clone()))?;
        registry.register(Box::new(m.claims.clone()))?;
        registry.register(Box::new(m.missed.clone()))?;
        registry.register(Box::new(m.prepare.clone()))?;
        registry.register(Box::new(m.inference.clone()))?;
        registry.register(Box::new(m.queue_age.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        registry.register(Box::new(m.calls.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        // Every series exists from the start, so rates and alerts see zeros.
        for o in OUTCOMES {
            m.samples.with_label_values(&[o]);
        }
        for f in FAILURES {
            m.failures.with_label_values(&[f]);
        }
        for c in categories {
            for level in ["review", "high"] {
                m.flags.with_label_values(&[c.as_str(), level]);
            }
        }
        for r in ["won", "lost"] {
            m.claims.with_label_values(&[r]);
        }
        Ok(m)
    }

    pub fn sample(&self, outcome: proto::screen_api::Level) {
        self.samples.with_label_values(&[outcome.as_str()]).inc();
    }

    pub fn failure(&self, kind: &'static str) {
        self.failures.with_label_values(&[kind]).inc();
    }

    /// `category` is one of the config's (bounded).
    pub fn flag(&self, category: &str, level: proto::screen_api::Level) {
        self.flags.with_label_values(&[category, level.as_str()]).inc();
    }

    pub fn claims(&self, won: usize, lost: usize) {
        self.claims.with_label_values(&["won"]).inc_by(won as u64);
        self.claims.with_label_values(&["lost"]).inc_by(lost as u64);
    }

    /// Samples screened so far, by outcome (tests, benches).
    pub fn samples(&self, outcome: &str) -> u64 {
        self.samples.with_label_values(&[outcome]).get()
    }

    /// Failures so far of `kind` (tests).
    pub fn failures(&self, kind: &str) -> u64 {
        self.failures.with_label_values(&[kind]).get()
    }
}
