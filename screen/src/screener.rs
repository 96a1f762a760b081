//! The screener's run loop, a thin shell around the [`Scheduler`]: list the
//! live calls, take the due samples there is room for, claim them, and for
//! each claimed one fetch the snapshot, screen it on the worker pool and
//! post the result. Async tasks only move bytes; the model runs on the
//! pool's threads.

use crate::client::{Client, ClientError};
use crate::metrics::Metrics;
use crate::model::Model;
use crate::pool::{Pool, QueueFull};
use crate::schedule::{Due, ScheduleConfig, Scheduler};
use base64::Engine;
use proto::screen_api::{ClaimRequest, Level, ScreeningResult, MAX_CLAIMS};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How one screener runs (the model is loaded separately, see [`Model::load`]).
#[derive(Clone, Debug)]
pub struct ScreenerConfig {
    /// Names this screener in claims, results and the audit log.
    pub screener_id: String,
    /// Signaling's internal listener (`http://host:port`).
    pub signaling_url: String,
    /// The deployment's internal token (signaling and SFU nodes take it).
    pub internal_token: String,
    pub schedule: ScheduleConfig,
    /// How often the live calls are listed.
    pub list_every: Duration,
    /// Inference threads.
    pub workers: usize,
    /// Snapshots waiting for a worker at most; more are dropped and counted.
    pub queue: usize,
    /// Timeout of each HTTP request.
    pub http_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ScreenerError {
    #[error("cannot start the inference workers: {0}")]
    Workers(#[from] std::io::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What every sample task needs.
struct Shared {
    config: ScreenerConfig,
    model: Model,
    client: Client,
    pool: Pool,
    metrics: Metrics,
    /// Samples between claim and result (bounds what is claimed).
    in_flight: AtomicUsize,
}

/// Runs until `shutdown`: screening failures are logged and counted, never
/// fatal; only a pool that cannot start is an error.
pub async fn run(
    config: ScreenerConfig,
    model: Model,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), ScreenerError> {
    let client = Client::new(
        &config.signaling_url,
        config.internal_token.clone(),
        config.http_timeout,
    )?;
    let pool = Pool::start(model.clone(), config.workers, config.queue, metrics.clone())?;
    let shared = Arc::new(Shared {
        config,
        model,
        client,
        pool,
        metrics,
        in_flight: AtomicUsize::new(0),
    });
    let mut scheduler = Scheduler::new(shared.config.schedule);
    let mut tasks = JoinSet::new();
    // Signaling's clock minus ours: slots are named by signaling's match times.
    let mut offset_ms: i64 = 0;
    let mut tick = tokio::time::interval(shared.config.list_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(model = shared.model.id(), screener = %shared.config.screener_id, "screening");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        while tasks.try_join_next().is_some() {}
        match shared.client.calls(shared.config.schedule.period_ms).await {
            Ok(list) => {
                offset_ms = list.now_ms as i64 - unix_ms() as i64;
                scheduler.handle_calls(list.calls);
            }
            // The last listing stays in force; its samples are still worth taking.
            Err(e) => tracing::warn!(error = %e, "cannot list the live calls"),
        }
        let now = unix_ms().saturating_add_signed(offset_ms);
        let room = shared
            .pool
            .capacity()
            .saturating_sub(shared.in_flight.load(Ordering::SeqCst))
            .min(MAX_CLAIMS);
        let due = scheduler.poll_due(now, room);
        let m = &shared.metrics;
        m.missed.inc_by(scheduler.take_missed());
        m.lag_seconds.set((scheduler.lag_ms(now) / 1000) as i64);
        m.calls.set(scheduler.len() as i64);
        for d in claim(&shared, due).await {
            shared.in_flight.fetch_add(1, Ordering::SeqCst);
            m.in_flight.set(shared.in_flight.load(Ordering::SeqCst) as i64);
            let due_at = Instant::now()
                .checked_sub(Duration::from_millis(now.saturating_sub(d.due_ms)))
                .unwrap_or_else(Instant::now);
            let s = shared.clone();
            tasks.spawn(async move {
                sample(&s, d, due_at).await;
                s.in_flight.fetch_sub(1, Ordering::SeqCst);
                s.metrics.in_flight.set(s.in_flight.load(Ordering::SeqCst) as i64);
            });
        }
    }
    // Samples under way get a moment to post their results.
    let grace = tokio::time::sleep(shared.config.http_timeout);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = &mut grace => break,
            next = tasks.join_next() => if next.is_none() { break },
        }
    }
    tasks.abort_all();
    drop(tasks);
    if let Some(shared) = Arc::into_inner(shared) {
        tokio::task::spawn_blocking(move || shared.pool.shutdown(Duration::from_secs(5)))
            .await
            .ok();
    }
    Ok(())
}

/// The due samples this screener won.
async fn claim(shared: &Shared, due: Vec<Due>) -> Vec<Due> {
    if due.is_empty() {
        return due;
    }
    let req = ClaimRequest {
        screener: shared.config.screener_id.clone(),
        samples: due.iter().map(|d| d.key.clone()).collect(),
        ttl_ms: shared.config.schedule.period_ms,
    };
    match shared.client.claim(&req).await {
        Ok(granted) => {
            let won: Vec<Due> = due
                .into_iter()
                .filter(|d| granted.samples.contains(&d.key))
                .collect();
            shared.metrics.claims(won.len(), req.samples.len() - won.len());
            won
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim samples");
            Vec::new()
        }
    }
}

/// One sample: fetch, screen on the pool, post.
async fn sample(shared: &Shared, d: Due, due_at: Instant) {
    let m = &shared.metrics;
    let snapshot = match shared.client.snapshot(&d.internal_url, &d.participant).await {
        Ok(Some(s)) => s,
        Ok(None) => return m.failure("no_snapshot"),
        Err(e) => {
            tracing::debug!(error = %e, "snapshot fetch failed");
            return m.failure("fetch");
        }
    };
    let rx = match shared.pool.try_submit(snapshot.webp.clone(), due_at) {
        Ok(rx) => rx,
        Err(QueueFull) => return m.failure("queue_full"),
    };
    let screened = match rx.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, pairing = %d.key.pairing_id, "screening a snapshot failed");
            return m.failure(e.kind());
        }
        // The pool shut down under us.
        Err(_) => return,
    };
    let result = ScreeningResult {
        screener: shared.config.screener_id.clone(),
        model: shared.model.id().to_owned(),
        sample: d.key.clone(),
        participant: d.participant.clone(),
        snapshot_webp_b64: None,
        snapshot_age_ms: snapshot.age_ms,
        scores: screened.scores,
    };
    let level = result.level();
    m.sample(level);
    for s in result.scores.iter().filter(|s| s.level >= Level::Review) {
        m.flag(&s.category, s.level);
    }
    // Pictures of clear samples never leave the screener.
    let result = if level >= Level::Review {
        ScreeningResult {
            snapshot_webp_b64: Some(base64::engine::general_purpose::STANDARD.encode(&snapshot.webp)),
            ..result
        }
    } else {
        result
    };
    match shared.client.post_result(&result).await {
        Ok(accepted) if level >= Level::Review => tracing::info!(
            pairing = %d.key.pairing_id,
            side = d.key.side.as_str(),
            level = level.as_str(),
            outcome = accepted.outcome.as_str(),
            "flagged a call"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot post a screening result");
            m.failure("post");
        }
    }
}
