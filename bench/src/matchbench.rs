//! `bench match`: pairs per second and decision time of signaling's
//! matching backends (`LiveState`: in-memory and Redis) with N users
//! waiting. The one exception to "the bench talks to servers over the
//! network only": it links the `signaling` crate and calls the backends in
//! process (Redis is still a real server at --redis, under its own prefix).
//!
//! The waiting pool: N users each with three interests nobody else has, so
//! they never match each other (widening is off). A probe joins with three
//! interests, one of them shared with one random waiting user: the join
//! must find that user among N and pair them — the decision being timed.
//! Then a new waiting user joins (timed apart as "enqueue") so the pool
//! stays at N.

use crate::procfs;
use crate::report::{self, MatchResult, OutputArgs, Report};
use crate::stats::{Histogram, LatencySummary};
use anyhow::{bail, Context};
use futures::StreamExt;
use proto::signal::Mode;
use proto::{DeviceId, NodeId, ParticipantId};
use signaling::conns::LocalConns;
use signaling::live::memory::MemoryLive;
use signaling::live::redis::RedisLive;
use signaling::live::LiveState;
use signaling::matching::{MatchEvent, MatchRules, Ticket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Memory,
    Redis,
}

#[derive(Debug, clap::Args)]
pub struct MatchArgs {
    #[command(flatten)]
    pub out: OutputArgs,
    /// Users waiting in the queue while probes join.
    #[arg(long, default_value_t = 10_000)]
    pub waiting: usize,
    /// Probe joins (each makes one pair) per backend.
    #[arg(long, default_value_t = 20_000)]
    pub probes: usize,
    /// Probes in flight at once (1: decision times without contention).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Backends to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["memory", "redis"])]
    pub backends: Vec<Backend>,
    /// Redis for the Redis backend (a unique key prefix is used and removed afterwards).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    #[arg(long)]
    pub quiet: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ticket(user: String, interests: Vec<String>) -> anyhow::Result<Ticket> {
    let device = DeviceId::parse(&format!("dev-{user}-bench")).context("device id")?;
    Ok(Ticket {
        participant: ParticipantId::new(format!("p-{user}")),
        user,
        device,
        node: NodeId::new("bench-node"),
        mode: Mode::Video,
        lang: None,
        interests,
    })
}

fn filler(tag: &str, i: usize) -> anyhow::Result<Ticket> {
    ticket(
        format!("{tag}f{i}"),
        vec![
            format!("{tag}i{i}a"),
            format!("{tag}i{i}b"),
            format!("{tag}i{i}c"),
        ],
    )
}

fn rules() -> MatchRules {
    // No widening during the run: waiting users stay interest-only.
    MatchRules {
        widen_after: Duration::from_secs(24 * 3600),
        cooldown: Duration::from_secs(600),
    }
}

async fn bench_backend(
    name: &str,
    live: Arc<dyn LiveState>,
    a: &MatchArgs,
    tag: &str,
) -> anyhow::Result<MatchResult> {
    // Fill the pool.
    let t0 = Instant::now();
    let fills: Vec<anyhow::Result<()>> = futures::stream::iter(0..a.waiting)
        .map(|i| {
            let live = live.clone();
            async move {
                let ev = live
                    .join(filler(tag, i)?, now_ms())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if ev.iter().any(|e| matches!(e, MatchEvent::Matched(_))) {
                    bail!("a waiting user matched another: the pool is not disjoint");
                }
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for f in fills {
        f?;
    }
    let (video, _) = live.waiting().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if !a.quiet {
        eprintln!(
            "[match {name}] {video} waiting (filled in {:.1}s)",
            t0.elapsed().as_secs_f64()
        );
    }
    if (video as usize) < a.waiting {
        bail!(
            "{name}: only {video} of {} users waiting after the fill",
            a.waiting
        );
    }
    // Probes.
    let mut pool: Vec<usize> = (0..a.waiting).collect();
    let mut next_filler = a.waiting;
    let mut decision = Histogram::new();
    let mut enqueue = Histogram::new();
    let mut pairs = 0u64;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut done = 0usize;
    while done < a.probes {
        let batch = a.concurrency.max(1).min(a.probes - done);
        let mut jobs = Vec::with_capacity(batch);
        for k in 0..batch {
            let idx = rand::random_range(0..pool.len());
            let target = pool.swap_remove(idx);
            let probe = ticket(
                format!("{tag}p{}", done + k),
                vec![
                    format!("{tag}nohit{}a", done + k),
                    format!("{tag}i{target}b"),
                    format!("{tag}nohit{}c", done + k),
                ],
            )?;
            jobs.push((probe, next_filler));
            pool.push(next_filler);
            next_filler += 1;
        }
        let results = futures::future::join_all(jobs.into_iter().map(|(probe, fill)| {
            let live = live.clone();
            async move {
                let t = Instant::now();
                let ev = live
                    .join(probe, now_ms())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let d = t.elapsed();
                let matched = ev.iter().any(|e| matches!(e, MatchEvent::Matched(_)));
                let f = filler(tag, fill)?;
                let t = Instant::now();
                live.join(f, now_ms()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::Ok((d, matched, t.elapsed()))
            }
        }))
        .await;
        for r in results {
            let (d, matched, e) = r?;
            if !matched {
                bail!("{name}: a probe sharing an interest with a waiting user was not matched");
            }
            decision.record(d.as_nanos() as u64);
            enqueue.record(e.as_nanos() as u64);
            pairs += 1;
        }
        done += batch;
        if !a.quiet && last_progress.elapsed() > Duration::from_millis(500) {
            eprint!(
                "\r[match {name}] {done}/{} probes, {:.0} pairs/s   ",
                a.probes,
                pairs as f64 / started.elapsed().as_secs_f64()
            );
            last_progress = Instant::now();
        }
    }
    // Pairs/s counts only the deciding joins' time (the refill joins are timed apart).
    let decide_secs =
        decision.mean().unwrap_or(0.0) * decision.count() as f64 / 1e9 / a.concurrency.max(1) as f64;
    if !a.quiet {
        eprintln!();
    }
    Ok(MatchResult {
        backend: name.to_owned(),
        waiting: a.waiting,
        pairs,
        seconds: decide_secs,
        pairs_per_second: if decide_secs > 0.0 {
            pairs as f64 / decide_secs
        } else {
            0.0
        },
        decision: LatencySummary::from_histogram(&decision),
        enqueue: LatencySummary::from_histogram(&enqueue),
    })
}

async fn delete_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    for chunk in keys.chunks(500) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
    }
    Ok(())
}

pub async fn run(a: MatchArgs) -> anyhow::Result<()> {
    let mut report = Report::new("match", procfs::machine());
    report.notes.push("bench match links the signaling crate and calls its LiveState backends in process (the one exception to network-only benches); Redis is a real server".into());
    report.notes.push(format!(
        "pool: {} waiting users with 3 unique interests each (never matching each other); a probe shares one interest with one random waiting user; decision = one join() that pairs; enqueue = one join() that only queues; concurrency {}",
        a.waiting, a.concurrency
    ));
    for b in &a.backends {
        let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        match b {
            Backend::Memory => {
                let live: Arc<dyn LiveState> = Arc::new(MemoryLive::new(
                    rules(),
                    Arc::new(LocalConns::default()),
                    100,
                    600_000,
                ));
                report
                    .matching
                    .push(bench_backend("memory", live, &a, &tag).await?);
            }
            Backend::Redis => {
                let prefix = format!("bench:{tag}:");
                let cancel = CancellationToken::new();
                let live = RedisLive::connect(
                    &a.redis,
                    prefix.clone(),
                    rules(),
                    600_000,
                    100,
                    format!("bench-{tag}"),
                    Arc::new(LocalConns::default()),
                    cancel.clone(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {}: {e}", a.redis))?;
                let r = bench_backend("redis", live, &a, &tag).await;
                cancel.cancel();
                if let Err(e) = delete_prefix(&a.redis, &prefix).await {
                    report
                        .notes
                        .push(format!("could not delete Redis keys {prefix}*: {e}"));
                }
                report.matching.push(r?);
                report.notes.push(format!(
                    "redis: {} with key prefix bench:<random>: (deleted afterwards)",
                    a.redis
                ));
            }
        }
    }
    report::emit(&report, &a.out)
}
