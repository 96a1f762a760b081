//! `bench screen`: snapshots screened per second per core and the time of
//! each step, with a real model (default: the NudeNet 320n detector that
//! `scripts/fetch-models` caches, with the config duet ships for it). Like
//! `bench match`, it links the crate it measures (`screen`) and runs it in
//! process: one thread, the way one worker of `duet screen` runs it.
//!
//! Snapshots are 640x480 WebP files of synthetic scenes (the camera size
//! Chromium sends by default): lossless WebP from `image-webp`'s encoder,
//! or, with `--snapshots DIR`, the `.webp` files of a folder (e.g. lossy ones
//! made with `cwebp`, or snapshots saved from the moderators' wall).

use crate::procfs;
use crate::stats::percentile_sorted;
use anyhow::{bail, Context};
use screen::image::encode_webp_lossless;
use screen::{Model, ModelConfig};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct ScreenArgs {
    /// ONNX model (default: the cached NudeNet 320n of scripts/fetch-models).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Its config (default: screen/models/nudenet-320n.toml).
    #[arg(long, value_name = "FILE")]
    pub model_config: Option<PathBuf>,
    /// Folder of `.webp` snapshots to screen instead of the synthetic ones.
    #[arg(long, value_name = "DIR")]
    pub snapshots: Option<PathBuf>,
    /// Snapshots screened (after the warm-up).
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Snapshots screened first and not counted.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Sampling period the capacity figure is computed for.
    #[arg(long, default_value_t = 10)]
    pub every_secs: u64,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Millis {
    p50: f64,
    p99: f64,
    mean: f64,
}

#[derive(Debug, Serialize)]
struct ScreenReport {
    machine: procfs::Machine,
    model: String,
    snapshots: String,
    samples: usize,
    /// Screened per CPU-second of the screening thread.
    per_cpu_second: f64,
    /// Screened per second of wall time (one thread).
    per_second: f64,
    prepare_ms: Millis,
    inference_ms: Millis,
    total_ms: Millis,
    every_secs: u64,
    /// Calls (two sides each) one core screens every `every_secs`.
    calls_per_core: f64,
}

fn cache_model() -> PathBuf {
    let base = std::env::var_os("DUET_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("duet")
                .join("models")
        });
    base.join("nudenet-320n.onnx")
}

fn snapshots(dir: Option<&Path>) -> anyhow::Result<(String, Vec<Vec<u8>>)> {
    let Some(dir) = dir else {
        let scenes = screen::testmodel::scenes(640, 480);
        let files = scenes
            .iter()
            .map(|(_, img)| encode_webp_lossless(img).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok((
            format!("{} synthetic 640x480 scenes, lossless WebP", files.len()),
            files,
        ));
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "webp") {
            files.push(std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?);
        }
    }
    if files.is_empty() {
        bail!("no .webp files in {}", dir.display());
    }
    Ok((format!("{} files from {}", files.len(), dir.display()), files))
}

fn millis(mut v: Vec<u64>) -> Millis {
    v.sort_unstable();
    let ms = |us: Option<u64>| us.unwrap_or(0) as f64 / 1000.0;
    let mean = v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1000.0;
    Millis {
        p50: ms(percentile_sorted(&v, 50.0)),
        p99: ms(percentile_sorted(&v, 99.0)),
        mean,
    }
}

pub async fn run(a: ScreenArgs) -> anyhow::Result<()> {
    let machine = procfs::machine();
    let model_path = a.model.clone().unwrap_or_else(cache_model);
    if !model_path.is_file() {
        bail!(
            "{} not found: run scripts/fetch-models or pass --model",
            model_path.display()
        );
    }
    let config = match &a.model_config {
        Some(p) => ModelConfig::load(p)?,
        None => ModelConfig::parse(include_str!("../../screen/models/nudenet-320n.toml"))?,
    };
    let model = Model::load(&model_path, config)?;
    let (what, files) = snapshots(a.snapshots.as_deref())?;
    let (samples, warmup) = (a.samples.max(1), a.warmup);
    // One thread of its own, as a worker of `duet screen` is.
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<ScreenReport> {
        for f in files.iter().cycle().take(warmup) {
            model.screen(f)?;
        }
        let (mut prepare, mut infer, mut total) = (Vec::new(), Vec::new(), Vec::new());
        let cpu0 = procfs::thread_cpu_seconds();
        let t0 = Instant::now();
        for f in files.iter().cycle().take(samples) {
            let s = model.screen(f)?;
            prepare.push(s.prepare.as_micros() as u64);
            infer.push(s.infer.as_micros() as u64);
            total.push((s.prepare + s.infer).as_micros() as u64);
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = match (cpu0, procfs::thread_cpu_seconds()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => wall,
        };
        let per_cpu_second = samples as f64 / cpu;
        Ok(ScreenReport {
            machine,
            model: model.id().to_owned(),
            snapshots: what,
            samples,
            per_cpu_second,
            per_second: samples as f64 / wall,
            prepare_ms: millis(prepare),
            inference_ms: millis(infer),
            total_ms: millis(total),
            every_secs: a.every_secs,
            calls_per_core: per_cpu_second * a.every_secs as f64 / 2.0,
        })
    })
    .await??;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_markdown(&report);
    }
    Ok(())
}

fn print_markdown(r: &ScreenReport) {
    println!(
        "Machine: {} ({} CPUs, load {:.2} at start), kernel {}",
        r.machine.cpu_model, r.machine.cpus, r.machine.loadavg_1m, r.machine.kernel
    );
    println!(
        "Model: {}; snapshots: {}; {} samples on one thread.\n",
        r.model, r.snapshots, r.samples
    );
    println!("| step | p50 ms | p99 ms | mean ms |");
    println!("|---|---:|---:|---:|");
    for (name, m) in [
        ("decode + resize", &r.prepare_ms),
        ("inference + mapping", &r.inference_ms),
        ("total", &r.total_ms),
    ] {
        println!("| {name} | {:.2} | {:.2} | {:.2} |", m.p50, m.p99, m.mean);
    }
    println!(
        "\nSnapshots per CPU-second: {:.1} ({:.1} per wall second). One core screens {:.0} calls \
         (both sides) every {} s.",
        r.per_cpu_second, r.per_second, r.calls_per_core, r.every_secs
    );
}
