//! `bench`: duet's bench harness. See docs/benchmarks.md.
//!
//! * `bench floor`: a minimal batched UDP forwarder under the same load (the machine's floor).
//! * `bench sfu`: synthetic WebRTC pairs through a real duet SFU (optionally `--with-floor`).
//! * `bench turn`: relayed packets through `duet turn`, coturn's `turnserver`, and duet's in-process TURN → SFU path.
//! * `bench match`: the matching backends (in-memory, Redis) at 10k waiting users.
//! * `bench screen`: snapshots screened per second per core with a real model, and each step's time.

mod common;
mod engine;
mod floor;
#[cfg(feature = "match")]
mod matchbench;
mod payload;
mod procfs;
mod report;
mod rtcpeer;
#[cfg(feature = "screen")]
mod screenbench;
mod sfu;
mod stats;
mod turn;
mod turnclient;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    version,
    about = "duet's bench harness: SFU forwarding, raw UDP floor, TURN vs coturn, matching, screening."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The physical floor: a minimal recvmmsg/GSO UDP forwarder (no SRTP) under the same load.
    Floor(FloorArgs),
    /// Synthetic WebRTC pairs through a duet SFU: forwarded packets/s, loss, latency, CPU per packet.
    Sfu(sfu::SfuArgs),
    /// Relayed packets/s and latency through duet's TURN and coturn (ratio), and TURN → SFU in process.
    Turn(turn::TurnArgs),
    /// Pairs per second and decision time of the matching backends at 10k waiting users.
    #[cfg(feature = "match")]
    Match(matchbench::MatchArgs),
    /// Snapshots screened per second per core and inference p50/p99 with a real model.
    #[cfg(feature = "screen")]
    Screen(screenbench::ScreenArgs),
    /// (internal) The floor forwarder process.
    #[command(hide = true)]
    FloorServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct FloorArgs {
    #[command(flatten)]
    load: common::LoadArgs,
    #[command(flatten)]
    out: report::OutputArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::FloorServer { listen } = cli.command {
        return match floor::serve(listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench floor-server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BENCH_LOG")
                .unwrap_or_else(|_| "warn,rtc_dtls=error".into()),
        )
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Cmd::Floor(a) => run_floor(a).await,
            Cmd::Sfu(a) => sfu::run(a).await,
            Cmd::Turn(a) => turn::run(a).await,
            #[cfg(feature = "match")]
            Cmd::Match(a) => matchbench::run(a).await,
            #[cfg(feature = "screen")]
            Cmd::Screen(a) => screenbench::run(a).await,
            Cmd::FloorServer { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_floor(a: FloorArgs) -> anyhow::Result<()> {
    let mut report = report::Report::new("floor", procfs::machine());
    report.set_profile(&a.load.profile());
    let (runs, ramp) = floor::run(&a.load, "floor").await?;
    report.runs = runs;
    report.ramps.extend(ramp);
    report.notes.push(
        "floor: one forwarder process, one UDP socket, recvmmsg+GRO in, GSO out, a hash lookup per datagram, no SRTP"
            .into(),
    );
    report::emit(&report, &a.out)
}
