//! Results: one [`Report`] per invocation, printed as a table (stdout),
//! JSON (`--json`), Markdown (`--markdown`) and an SVG plot of throughput
//! against latency (`--svg FILE`).

use crate::engine::{EngineResult, GeneratorHealth};
use crate::procfs::Machine;
use crate::stats::{loss_fraction, LatencySummary};
use anyhow::Context;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bench: String,
    pub command: String,
    pub machine: Machine,
    pub started_unix: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<serde_json::Value>,
    pub runs: Vec<Run>,
    pub ratios: Vec<Ratio>,
    pub ramps: Vec<RampResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matching: Vec<MatchResult>,
    pub notes: Vec<String>,
}

/// One measurement window against one server.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub name: String,
    pub pairs: usize,
    pub participants: usize,
    pub window_s: f64,
    /// Packets/s the schedule offered (all senders).
    pub offered_pps: f64,
    pub sent_pps: f64,
    /// Packets/s that arrived at the receivers (forwarded / relayed).
    pub received_pps: f64,
    /// Mbit/s of datagrams that arrived (UDP payload).
    pub received_mbps: f64,
    pub loss_pct: f64,
    pub lost_packets: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub latency: LatencySummary,
    pub jitter_us: f64,
    /// SRTP profile the WebRTC clients negotiated (their getStats
    /// `srtpCipher`; "mixed" if they differ); null on plain-UDP runs.
    pub srtp_profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerUsage>,
    pub generator: GeneratorHealth,
    /// loss <= 1% and p99 <= 10 ms.
    pub sustainable: bool,
}

/// /proc readings of the server process over the window.
#[derive(Clone, Debug, Serialize)]
pub struct ServerUsage {
    pub pid: u32,
    pub cpu_seconds: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Received (forwarded) packets per CPU-second of the server.
    pub packets_per_cpu_second: f64,
    pub cpu_ns_per_packet: f64,
    pub rss_before_participants_bytes: u64,
    pub rss_bytes: u64,
    pub rss_per_participant_bytes: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub name: String,
    pub metric: String,
    pub numerator: f64,
    pub denominator: f64,
    pub value: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RampResult {
    pub name: String,
    pub highest_sustainable_pps: f64,
    pub at_pairs: usize,
    pub stopped_because: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct MatchResult {
    pub backend: String,
    pub waiting: usize,
    pub pairs: u64,
    pub seconds: f64,
    pub pairs_per_second: f64,
    /// Time of one `join` that produced a match, µs.
    pub decision: LatencySummary,
    /// Time of one `join` that only queued (refilling the waiting pool), µs.
    pub enqueue: LatencySummary,
}

pub const LOSS_LIMIT_PCT: f64 = 1.0;
pub const P99_LIMIT_US: f64 = 10_000.0;

impl Run {
    pub fn from_engine(
        name: &str,
        pairs: usize,
        participants: usize,
        r: &EngineResult,
        server: Option<ServerUsage>,
    ) -> Run {
        let w = r.window_s.max(1e-9);
        let expected = r.received_packets + r.lost_packets;
        let loss_pct = if expected > 0 {
            loss_fraction(r.lost_packets, expected) * 100.0
        } else {
            100.0
        };
        let sustainable =
            r.received_packets > 0 && loss_pct <= LOSS_LIMIT_PCT && r.latency.p99_us <= P99_LIMIT_US;
        Run {
            name: name.to_owned(),
            pairs,
            participants,
            window_s: r.window_s,
            offered_pps: r.offered_packets as f64 / w,
            sent_pps: r.sent_packets as f64 / w,
            received_pps: r.received_packets as f64 / w,
            received_mbps: r.received_bytes as f64 * 8.0 / w / 1e6,
            loss_pct,
            lost_packets: r.lost_packets,
            duplicates: r.duplicates,
            reordered: r.reordered,
            latency: r.latency.clone(),
            jitter_us: r.jitter_us,
            srtp_profile: r.srtp_profile.clone(),
            server,
            generator: r.generator.clone(),
            sustainable,
        }
    }
}

/// Builds the server figures from CPU seconds and RSS readings.
pub fn server_usage(
    pid: u32,
    cpu_seconds: f64,
    window_s: f64,
    packets: u64,
    rss_idle: u64,
    rss: u64,
    participants: usize,
) -> ServerUsage {
    ServerUsage {
        pid,
        cpu_seconds,
        cpu_cores: cpu_seconds / window_s.max(1e-9),
        packets_per_cpu_second: if cpu_seconds > 0.0 {
            packets as f64 / cpu_seconds
        } else {
            0.0
        },
        cpu_ns_per_packet: if packets > 0 {
            cpu_seconds * 1e9 / packets as f64
        } else {
            0.0
        },
        rss_before_participants_bytes: rss_idle,
        rss_bytes: rss,
        rss_per_participant_bytes: if participants > 0 {
            rss.saturating_sub(rss_idle) as f64 / participants as f64
        } else {
            0.0
        },
    }
}

impl Report {
    /// Records the media profile and what it offers per participant.
    pub fn set_profile(&mut self, p: &crate::engine::Profile) {
        self.profile = serde_json::to_value(p).ok();
        self.notes.push(format!(
            "each participant sends {:.0} pkts/s, {:.2} Mbit/s (video {} B x {} pkts/frame x {} fps, audio {} B x {}/s, keyframe every {} ms)",
            p.packets_per_second(),
            p.bits_per_second() / 1e6,
            p.video_bytes,
            p.video_packets_per_frame(),
            p.fps,
            p.audio_bytes,
            p.audio_pps,
            p.keyframe_interval_ms
        ));
    }

    /// Ratios of two runs (same load) and, with ramps, of their highest sustainable rates.
    pub fn compare(&mut self, label: &str, num: &str, den: &str) {
        let best = |n: &str| {
            self.ramps
                .iter()
                .find(|r| r.name == n)
                .map(|r| (r.highest_sustainable_pps, r.at_pairs))
        };
        match (best(num), best(den)) {
            (Some((a, pa)), Some((b, _))) => {
                self.ratios.push(Ratio {
                    name: format!("{label} highest sustainable pkts/s"),
                    metric: "highest_sustainable_pps".into(),
                    numerator: a,
                    denominator: b,
                    value: if b > 0.0 { a / b } else { 0.0 },
                });
                // CPU efficiency at the same load: the numerator's best step.
                if pa > 0 {
                    self.add_ratio(
                        &format!("{label} pkts per CPU-second"),
                        num,
                        den,
                        "packets_per_cpu_second",
                        Some(pa),
                    );
                }
            }
            _ => {
                self.add_ratio(
                    &format!("{label} received pkts/s"),
                    num,
                    den,
                    "received_pps",
                    None,
                );
                self.add_ratio(
                    &format!("{label} pkts per CPU-second"),
                    num,
                    den,
                    "packets_per_cpu_second",
                    None,
                );
            }
        }
    }

    pub fn new(bench: &str, machine: Machine) -> Self {
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        Report {
            bench: bench.to_owned(),
            command,
            machine,
            started_unix,
            profile: None,
            runs: Vec::new(),
            ratios: Vec::new(),
            ramps: Vec::new(),
            matching: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// `numerator / denominator` of `metric` (`received_pps` or
    /// `packets_per_cpu_second`) of the runs with those names at `pairs`
    /// pairs (the last runs with those names when `None`).
    pub fn add_ratio(&mut self, name: &str, num: &str, den: &str, metric: &str, pairs: Option<usize>) {
        let value_of = |r: &Run| match metric {
            "packets_per_cpu_second" => r.server.as_ref().map(|s| s.packets_per_cpu_second),
            _ => Some(r.received_pps),
        };
        let pick = |n: &str| {
            self.runs
                .iter()
                .rev()
                .find(|r| r.name == n && pairs.is_none_or(|p| r.pairs == p))
                .and_then(value_of)
        };
        let name = match pairs {
            Some(p) => format!("{name} at {p} pairs"),
            None => name.to_owned(),
        };
        if let (Some(a), Some(b)) = (pick(num), pick(den)) {
            self.ratios.push(Ratio {
                name,
                metric: metric.to_owned(),
                numerator: a,
                denominator: b,
                value: if b > 0.0 { a / b } else { 0.0 },
            });
        }
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "machine: {} ({} CPUs), kernel {}, load avg at start {:.2}",
            self.machine.cpu_model, self.machine.cpus, self.machine.kernel, self.machine.loadavg_1m
        );
        if !self.runs.is_empty() {
            let _ = writeln!(
                s,
                "{:<16} {:>5} {:>10} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>6} {:>11} {:>8} {:>9} {:>5}  SRTP",
                "run",
                "pairs",
                "pkts/s",
                "Mbit/s",
                "loss%",
                "p50 µs",
                "p99 µs",
                "p99.9µs",
                "jit µs",
                "cores",
                "pkts/CPU-s",
                "CPU ns/p",
                "KiB/part",
                "gen"
            );
            for r in &self.runs {
                let (cores, ppc, nspp, kib) = match &r.server {
                    Some(u) => (
                        format!("{:.2}", u.cpu_cores),
                        format!("{:.0}", u.packets_per_cpu_second),
                        format!("{:.0}", u.cpu_ns_per_packet),
                        format!("{:.0}", u.rss_per_participant_bytes / 1024.0),
                    ),
                    None => ("-".into(), "-".into(), "-".into(), "-".into()),
                };
                let _ = writeln!(
                    s,
                    "{:<16} {:>5} {:>10.0} {:>9.1} {:>7.3} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>6} {:>11} {:>8} {:>9} {:>5}  {}",
                    r.name,
                    r.pairs,
                    r.received_pps,
                    r.received_mbps,
                    r.loss_pct,
                    r.latency.p50_us,
                    r.latency.p99_us,
                    r.latency.p999_us,
                    r.jitter_us,
                    cores,
                    ppc,
                    nspp,
                    kib,
                    if r.generator.bottleneck { "BUSY" } else { "ok" },
                    r.srtp_profile.as_deref().unwrap_or("-")
                );
            }
            for r in &self.runs {
                let _ = writeln!(s, "  {} ({} pairs): {}", r.name, r.pairs, r.generator.verdict);
            }
        }
        for m in &self.matching {
            let _ = writeln!(
                s,
                "match {:<8} waiting {:>6}: {:>9.0} pairs/s; decision p50 {:.1} µs p99 {:.1} µs p99.9 {:.1} µs; enqueue p50 {:.1} µs p99 {:.1} µs",
                m.backend,
                m.waiting,
                m.pairs_per_second,
                m.decision.p50_us,
                m.decision.p99_us,
                m.decision.p999_us,
                m.enqueue.p50_us,
                m.enqueue.p99_us
            );
        }
        for r in &self.ramps {
            let _ = writeln!(
                s,
                "ramp {}: highest sustainable {:.0} pkts/s at {} pairs (stopped: {})",
                r.name, r.highest_sustainable_pps, r.at_pairs, r.stopped_because
            );
        }
        for r in &self.ratios {
            let _ = writeln!(
                s,
                "ratio {}: {:.3} ({:.0} / {:.0} {})",
                r.name, r.value, r.numerator, r.denominator, r.metric
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "`{}`\n", self.command);
        let _ = writeln!(
            s,
            "Machine: {} ({} CPUs), kernel {}, load average {:.2} at start.\n",
            self.machine.cpu_model, self.machine.cpus, self.machine.kernel, self.machine.loadavg_1m
        );
        if !self.runs.is_empty() {
            let _ = writeln!(
                s,
                "| run | pairs | SRTP | pkts/s | Mbit/s | loss % | p50 µs | p99 µs | p99.9 µs | jitter µs | server cores | pkts per CPU-s | CPU ns/pkt | RSS KiB/participant | generator |"
            );
            let _ = writeln!(
                s,
                "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            for r in &self.runs {
                let (cores, ppc, nspp, kib) = match &r.server {
                    Some(u) => (
                        format!("{:.2}", u.cpu_cores),
                        format!("{:.0}", u.packets_per_cpu_second),
                        format!("{:.0}", u.cpu_ns_per_packet),
                        format!("{:.0}", u.rss_per_participant_bytes / 1024.0),
                    ),
                    None => ("–".into(), "–".into(), "–".into(), "–".into()),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.0} | {:.1} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
                    r.name,
                    r.pairs,
                    r.srtp_profile.as_deref().unwrap_or("–"),
                    r.received_pps,
                    r.received_mbps,
                    r.loss_pct,
                    r.latency.p50_us,
                    r.latency.p99_us,
                    r.latency.p999_us,
                    r.jitter_us,
                    cores,
                    ppc,
                    nspp,
                    kib,
                    if r.generator.bottleneck { "busy" } else { "ok" }
                );
            }
            s.push('\n');
        }
        if !self.matching.is_empty() {
            let _ = writeln!(
                s,
                "| backend | waiting | pairs/s | decision p50 µs | p99 µs | p99.9 µs | enqueue p50 µs | enqueue p99 µs |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
            for m in &self.matching {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    m.backend,
                    m.waiting,
                    m.pairs_per_second,
                    m.decision.p50_us,
                    m.decision.p99_us,
                    m.decision.p999_us,
                    m.enqueue.p50_us,
                    m.enqueue.p99_us
                );
            }
            s.push('\n');
        }
        for r in &self.ramps {
            let _ = writeln!(
                s,
                "- ramp **{}**: highest sustainable {:.0} pkts/s at {} pairs (stopped: {})",
                r.name, r.highest_sustainable_pps, r.at_pairs, r.stopped_because
            );
        }
        for r in &self.ratios {
            let _ = writeln!(
                s,
                "- ratio **{}** = {:.3} ({:.0} / {:.0} {})",
                r.name, r.value, r.numerator, r.denominator, r.metric
            );
        }
        for r in &self.runs {
            let _ = writeln!(s, "- {} ({} pairs): {}", r.name, r.pairs, r.generator.verdict);
        }
        for n in &self.notes {
            let _ = writeln!(s, "- note: {n}");
        }
        s
    }

    /// Throughput (x) against latency p50/p99 (y, log scale) for every run.
    pub fn svg(&self, path: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let runs: Vec<&Run> = self.runs.iter().filter(|r| r.received_pps > 0.0).collect();
        let max_x = runs.iter().map(|r| r.received_pps).fold(1.0f64, f64::max) * 1.1;
        let max_y = runs.iter().map(|r| r.latency.p99_us).fold(10.0f64, f64::max) * 2.0;
        let min_y = runs
            .iter()
            .map(|r| r.latency.p50_us)
            .fold(max_y, f64::min)
            .max(1.0)
            / 2.0;
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("svg: {e}"))?;
        let title = format!(
            "bench {}: throughput vs latency ({})",
            self.bench, self.machine.cpu_model
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_x, (min_y..max_y).log_scale())
            .map_err(|e| anyhow::anyhow!("svg: {e}"))?;
        chart
            .configure_mesh()
            .x_desc("packets/s received (forwarded)")
            .y_desc("one-way latency, µs (log)")
            .draw()
            .map_err(|e| anyhow::anyhow!("svg: {e}"))?;
        let mut names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        names.dedup();
        let mut seen = Vec::new();
        for n in names {
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
        for (ci, name) in seen.iter().enumerate() {
            let color = Palette99::pick(ci).to_rgba();
            let mut pts: Vec<&&Run> = runs.iter().filter(|r| r.name == *name).collect();
            pts.sort_by(|a, b| a.received_pps.total_cmp(&b.received_pps));
            let p50: Vec<(f64, f64)> = pts
                .iter()
                .map(|r| (r.received_pps, r.latency.p50_us.max(min_y)))
                .collect();
            let p99: Vec<(f64, f64)> = pts
                .iter()
                .map(|r| (r.received_pps, r.latency.p99_us.max(min_y)))
                .collect();
            chart
                .draw_series(LineSeries::new(p50.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("svg: {e}"))?
                .label(format!("{name} p50"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(p50.iter().map(|&(x, y)| Circle::new((x, y), 4, color.filled())))
                .map_err(|e| anyhow::anyhow!("svg: {e}"))?;
            chart
                .draw_series(LineSeries::new(p99.clone(), color.stroke_width(1)))
                .map_err(|e| anyhow::anyhow!("svg: {e}"))?
                .label(format!("{name} p99"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1)));
            chart
                .draw_series(
                    p99.iter()
                        .map(|&(x, y)| TriangleMarker::new((x, y), 5, color.filled())),
                )
                .map_err(|e| anyhow::anyhow!("svg: {e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow::anyhow!("svg: {e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("svg: {e}"))?;
        Ok(())
    }
}

/// Output options shared by every subcommand.
#[derive(Clone, Debug, clap::Args)]
pub struct OutputArgs {
    /// Print the report as JSON on stdout (instead of the table).
    #[arg(long)]
    pub json: bool,
    /// Print the report as Markdown on stdout (instead of the table).
    #[arg(long)]
    pub markdown: bool,
    /// Write a throughput-vs-latency plot (SVG) to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<std::path::PathBuf>,
}

pub fn emit(report: &Report, out: &OutputArgs) -> anyhow::Result<()> {
    if let Some(p) = &out.svg {
        report
            .svg(p)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let json = serde_json::to_string_pretty(report)?;
    if let Some(p) = &out.json_out {
        std::fs::write(p, &json).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if out.json {
        println!("{json}");
    } else if out.markdown {
        print!("{}", report.markdown());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
