//! What every load subcommand shares: load flags, the measurement
//! procedure (wait until flowing, warm up, measure with /proc readings,
//! progress line), ramps, child servers with a ready line.

use crate::engine::{EngineHandle, Profile};
use crate::procfs::{self, Usage};
use crate::report::{self, RampResult, Run};
use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Parses `10s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (use e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" | "min" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Load shape and measurement flags shared by `floor`, `sfu` and `turn`.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadArgs {
    /// Pairs of participants (each participant publishes video + audio to its partner).
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Measurement window.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Media flowing before the window opens.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Video packet size in bytes (RTP header included, before SRTP).
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u64).range(48..=1400))]
    pub video_bytes: u64,
    /// Video bitrate per participant, kbit/s.
    #[arg(long, default_value_t = 1500)]
    pub video_kbps: u32,
    /// Video frames per second (each frame is a burst of packets).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=240))]
    pub fps: u32,
    /// Audio packet size in bytes (RTP header included).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(48..=1400))]
    pub audio_bytes: u64,
    /// Audio packets per second (Opus 20 ms frames: 50).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub audio_pps: u32,
    /// Keyframe at least this often, ms.
    #[arg(long, default_value_t = 3000)]
    pub keyframe_interval_ms: u64,
    /// No video (audio only).
    #[arg(long)]
    pub no_video: bool,
    /// No audio (video only).
    #[arg(long)]
    pub no_audio: bool,
    /// Pin the server process (SFU, floor forwarder, TURN server) to this CPU.
    #[arg(long, value_name = "CPU")]
    pub pin_sfu: Option<usize>,
    /// Pin the load generator thread to this CPU.
    #[arg(long, value_name = "CPU")]
    pub pin_load: Option<usize>,
    /// SCHED_FIFO (chrt) for the server process and the load thread, so other work on a shared
    /// machine does not preempt them (root or CAP_SYS_NICE).
    #[arg(long)]
    pub realtime: bool,
    /// Add pairs step by step until loss > 1% or p99 > 10 ms; report the highest sustainable rate.
    #[arg(long)]
    pub ramp: bool,
    /// Pairs added per ramp step (default: --pairs).
    #[arg(long)]
    pub ramp_step: Option<usize>,
    /// Stop the ramp at this many pairs.
    #[arg(long, default_value_t = 2000)]
    pub ramp_max_pairs: usize,
    /// Measurement window of each ramp step.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub step_duration: Duration,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    pub fn profile(&self) -> Profile {
        Profile {
            video_bytes: self.video_bytes as usize,
            video_kbps: self.video_kbps,
            fps: self.fps,
            audio_bytes: self.audio_bytes as usize,
            audio_pps: self.audio_pps,
            keyframe_interval_ms: self.keyframe_interval_ms,
            publish_video: !self.no_video,
            publish_audio: !self.no_audio,
        }
    }

    /// The pair counts to measure: one, or the ramp's steps.
    pub fn steps(&self) -> Vec<usize> {
        if !self.ramp {
            return vec![self.pairs];
        }
        let step = self.ramp_step.unwrap_or(self.pairs).max(1);
        let mut v = Vec::new();
        let mut n = self.pairs.max(1);
        while n <= self.ramp_max_pairs {
            v.push(n);
            n += step;
        }
        v
    }

    pub fn window(&self) -> Duration {
        if self.ramp {
            self.step_duration
        } else {
            self.duration
        }
    }
}

/// A server process the bench measures.
#[derive(Clone, Copy, Debug)]
pub struct Server {
    pub pid: u32,
    /// RSS before any participant joined.
    pub rss_idle: u64,
}

/// Waits until every participant is ready and `flowing` video streams
/// carry media, warms up, measures for `window`, and builds the [`Run`].
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    name: &str,
    handle: EngineHandle,
    server: Option<Server>,
    pairs: usize,
    expect_flowing: usize,
    warmup: Duration,
    window: Duration,
    quiet: bool,
) -> anyhow::Result<Run> {
    let participants = handle.participants;
    let p = handle.progress.clone();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30) + Duration::from_millis(20 * participants as u64);
    let mut last_line = String::new();
    loop {
        let ready = p.ready.load(Ordering::Relaxed);
        let flowing = p.flowing.load(Ordering::Relaxed);
        let failed = p.failed.load(Ordering::Relaxed);
        let line = format!(
            "[{name}] connecting: {ready}/{participants} ready, {flowing}/{expect_flowing} video streams flowing, {failed} failed"
        );
        if !quiet && line != last_line {
            eprint!("\r{line}   ");
            last_line = line;
        }
        if ready == participants && flowing >= expect_flowing {
            break;
        }
        if Instant::now() > deadline {
            if !quiet {
                eprintln!();
            }
            bail!(
                "{name}: only {ready}/{participants} participants ready and {flowing}/{expect_flowing} video streams flowing after {:.0}s ({failed} failed)",
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(warmup).await;
    let usage = match server {
        Some(s) => Some(Usage::start(s.pid)?),
        None => None,
    };
    let started = Instant::now();
    handle.start_measure();
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(250).min(window.saturating_sub(started.elapsed()))).await;
        if !quiet {
            let cpu = usage
                .as_ref()
                .and_then(|u| u.finish().ok())
                .map(|(c, _, _)| {
                    format!(
                        ", server {:.2} cores",
                        c / started.elapsed().as_secs_f64().max(1e-3)
                    )
                })
                .unwrap_or_default();
            eprint!(
                "\r[{name}] {pairs} pairs {:>4.1}/{:.0}s: {} pkts/s received, p99 {:.0} µs{cpu}        ",
                started.elapsed().as_secs_f64(),
                window.as_secs_f64(),
                p.recent_pps.load(Ordering::Relaxed),
                p.recent_p99_ns.load(Ordering::Relaxed) as f64 / 1000.0,
            );
        }
    }
    handle.stop_measure();
    let measured = started.elapsed().as_secs_f64();
    let server_figures = match (server, usage) {
        (Some(s), Some(u)) => Some((s, u.finish()?)),
        _ => None,
    };
    let result = tokio::task::spawn_blocking(move || handle.finish())
        .await
        .context("load thread")??;
    if !quiet {
        eprintln!();
    }
    let usage = server_figures.map(|(s, (cpu, _rss0, rss))| {
        report::server_usage(
            s.pid,
            cpu,
            measured,
            result.received_packets,
            s.rss_idle,
            rss,
            participants,
        )
    });
    Ok(Run::from_engine(name, pairs, participants, &result, usage))
}

/// Runs `one(pairs)` for each step; stops at the first unsustainable step.
pub async fn ramp<F, Fut>(
    name: &str,
    load: &LoadArgs,
    mut one: F,
) -> anyhow::Result<(Vec<Run>, Option<RampResult>)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Run>>,
{
    let mut runs = Vec::new();
    let mut best: Option<(f64, usize)> = None;
    let mut stopped = "reached --ramp-max-pairs".to_owned();
    for pairs in load.steps() {
        let run = match one(pairs).await {
            Ok(r) => r,
            Err(e) if load.ramp && !runs.is_empty() => {
                stopped = format!("step with {pairs} pairs failed: {e:#}");
                break;
            }
            Err(e) => return Err(e),
        };
        let ok = run.sustainable;
        let why = format!(
            "{pairs} pairs: loss {:.2}% (limit {}%), p99 {:.0} µs (limit {:.0} µs)",
            run.loss_pct,
            report::LOSS_LIMIT_PCT,
            run.latency.p99_us,
            report::P99_LIMIT_US
        );
        if ok {
            best = Some((run.received_pps, pairs));
        }
        runs.push(run);
        if !ok {
            stopped = why;
            break;
        }
    }
    let ramp = load.ramp.then(|| RampResult {
        name: name.to_owned(),
        highest_sustainable_pps: best.map(|b| b.0).unwrap_or(0.0),
        at_pairs: best.map(|b| b.1).unwrap_or(0),
        stopped_because: stopped,
    });
    Ok((runs, ramp))
}

/// Servers' logs stay out of the report unless `BENCH_SERVER_LOGS=1`.
fn server_stderr() -> Stdio {
    if std::env::var_os("BENCH_SERVER_LOGS").is_some_and(|v| v == "1") {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// A child process that prints a ready line with JSON on stdout.
pub struct ChildServer {
    pub child: Child,
    pub ready: serde_json::Value,
    pub name: String,
}

impl ChildServer {
    /// Spawns `cmd` and waits (up to `timeout`) for a stdout line starting
    /// with `prefix`, followed by JSON.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<ChildServer> {
        cmd.stdout(Stdio::piped())
            .stdin(Stdio::null())
            .stderr(server_stderr());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let prefix = prefix.to_owned();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(rest) = line.strip_prefix(&prefix) {
                        let _ = tx.send(rest.trim().to_owned());
                        sent = true;
                    }
                }
                // Keep draining so the child never blocks on a full pipe.
            }
        });
        let line = match rx.recv_timeout(timeout) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{name} printed no ready line within {:.0}s",
                    timeout.as_secs_f64()
                );
            }
        };
        let ready: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{name}: ready line is not JSON: {line}"))?;
        Ok(ChildServer {
            child,
            ready,
            name: name.to_owned(),
        })
    }

    /// Spawns `cmd` without waiting for a ready line (stdout is drained);
    /// the caller probes readiness itself.
    pub fn spawn_unready(name: &str, mut cmd: Command) -> anyhow::Result<ChildServer> {
        cmd.stdout(Stdio::piped())
            .stdin(Stdio::null())
            .stderr(server_stderr());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || for _ in BufReader::new(stdout).lines().map_while(Result::ok) {});
        }
        Ok(ChildServer {
            child,
            ready: serde_json::Value::Null,
            name: name.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self, key: &str) -> anyhow::Result<std::net::SocketAddr> {
        self.ready
            .get(key)
            .and_then(|v| v.as_str())
            .with_context(|| format!("{}: ready line has no {key:?}", self.name))?
            .parse()
            .with_context(|| format!("{}: {key} is not an address", self.name))
    }

    /// Applies `--pin-sfu` and `--realtime` to the server process.
    pub fn prepare(&self, load: &LoadArgs) -> anyhow::Result<()> {
        if let Some(cpu) = load.pin_sfu {
            procfs::pin(self.pid(), cpu)?;
        }
        if load.realtime {
            procfs::realtime(self.pid(), true, 10)?;
        }
        Ok(())
    }

    pub fn server(&self) -> anyhow::Result<Server> {
        Ok(Server {
            pid: self.pid(),
            rss_idle: procfs::process_rss(self.pid())?,
        })
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        // SIGKILL our own child; it holds no state worth a graceful stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Binds a participant socket on 127.0.0.1 (any port).
pub fn participant_socket() -> anyhow::Result<std::net::UdpSocket> {
    std::net::UdpSocket::bind("127.0.0.1:0").context("cannot bind a participant socket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
