//! `bench turn`: relayed packets/s and latency through `duet turn` and
//! coturn's `turnserver` (same load, same machine, one after the other in
//! one run, ratio printed), and through duet's in-process TURN → SFU path.
//!
//! Each pair is a TURN client (allocation + permission + channel on the
//! server under test, data as ChannelData) and a plain UDP peer; both
//! publish the same media as `bench sfu` participants, so packets are
//! relayed client → relay → peer and peer → relay → client.

use crate::common::{self, ChildServer, LoadArgs, Server};
use crate::engine::{self, Link, ParticipantSetup};
use crate::procfs;
use crate::report::{self, OutputArgs, Report, Run};
use crate::sfu::{self, Place, SfuArgs};
use crate::turnclient::{self, Credentials};
use anyhow::{bail, Context};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct TurnArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub out: OutputArgs,
    /// The duet binary (`duet turn`, and `duet up` for the in-process path).
    #[arg(long, default_value = "target/release/duet", value_name = "PATH")]
    pub duet_bin: PathBuf,
    /// coturn's server binary; skipped (with a note) when not installed.
    #[arg(long, default_value = "turnserver", value_name = "PATH")]
    pub coturn_bin: PathBuf,
    /// Relay port range of `duet turn`.
    #[arg(long, default_value = "40000-49999")]
    pub duet_relay_ports: String,
    /// Relay port range of coturn.
    #[arg(long, default_value = "50000-59999")]
    pub coturn_relay_ports: String,
    #[arg(long)]
    pub skip_duet: bool,
    #[arg(long)]
    pub skip_coturn: bool,
    /// Skip the in-process TURN → SFU path (and its direct-SFU comparison).
    #[arg(long)]
    pub skip_sfu_path: bool,
    /// Relay threads of each server: `duet turn --workers N` and coturn
    /// `--relay-threads=N`, so both get the same number.
    #[arg(long, default_value_t = 1)]
    pub relay_threads: usize,
    /// SRTP profiles the WebRTC clients of the TURN → SFU path offer (see `bench sfu --help`).
    #[arg(long, value_enum, default_value = "chromium")]
    pub srtp_profile: crate::rtcpeer::SrtpOffer,
}

fn secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn free_port() -> anyhow::Result<u16> {
    // Free for UDP and TCP at the moment of asking (coturn needs a fixed port).
    for _ in 0..20 {
        let u = UdpSocket::bind("127.0.0.1:0")?;
        let port = u.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port")
}

fn split_range(r: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = r.split_once('-').context("port range is A-B")?;
    Ok((a.trim().parse()?, b.trim().parse()?))
}

fn start_duet_turn(a: &TurnArgs, secret: &str) -> anyhow::Result<(ChildServer, SocketAddr)> {
    if !a.duet_bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p duet`",
            a.duet_bin.display()
        );
    }
    let mut cmd = Command::new(&a.duet_bin);
    cmd.args([
        "turn",
        "--listen-udp",
        "127.0.0.1:0",
        "--listen-tcp",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--auth-secret",
        secret,
        "--relay-ip",
        "127.0.0.1",
        "--relay-ports",
        &a.duet_relay_ports,
        "--allow-peer",
        "127.0.0.1/32",
        "--max-allocations-per-user",
        "10",
        "--max-allocations",
        "100000",
        // No per-allocation cap: coturn has none by default either.
        "--bandwidth-bytes-per-sec",
        "1000000000",
        "--log",
        "warn",
    ]);
    cmd.arg("--workers").arg(a.relay_threads.to_string());
    let child = ChildServer::spawn("duet turn", cmd, "duet ready ", Duration::from_secs(30))?;
    child.prepare(&a.load)?;
    let udp = child.addr("turn_udp")?;
    Ok((child, udp))
}

fn start_coturn(a: &TurnArgs, secret: &str) -> anyhow::Result<(ChildServer, SocketAddr)> {
    let port = free_port()?;
    let (min, max) = split_range(&a.coturn_relay_ports)?;
    let mut cmd = Command::new(&a.coturn_bin);
    cmd.args(["-n", "--use-auth-secret"])
        .arg(format!("--static-auth-secret={secret}"))
        .args(["--realm=duet", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
        .arg(format!("--listening-port={port}"))
        .arg(format!("--min-port={min}"))
        .arg(format!("--max-port={max}"))
        .arg(format!("--relay-threads={}", a.relay_threads))
        .args([
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--no-multicast-peers",
            "--log-file=stdout",
            "--simple-log",
        ]);
    let child = ChildServer::spawn_unready("coturn", cmd)?;
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let probe = UdpSocket::bind("127.0.0.1:0")?;
    let t0 = Instant::now();
    while !turnclient::ping(&probe, server) {
        if t0.elapsed() > Duration::from_secs(15) {
            bail!("coturn did not answer on {server}");
        }
    }
    child.prepare(&a.load)?;
    Ok((child, server))
}

/// One measurement: `pairs` allocations, each with a peer.
async fn turn_step(
    name: &str,
    server_addr: SocketAddr,
    secret: &str,
    srv: &ChildServer,
    load: &LoadArgs,
    pairs: usize,
    step: usize,
) -> anyhow::Result<Run> {
    let secret = secret.to_owned();
    let run_tag = format!("{:06x}s{step}", rand::random::<u32>() & 0xff_ffff);
    let setups = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<ParticipantSetup>> {
        let mut v = Vec::with_capacity(pairs * 2);
        for i in 0..pairs {
            let peer = common::participant_socket()?;
            let creds = Credentials::rest(&secret, &format!("bench{run_tag}x{i}"), Duration::from_secs(3600));
            // A new socket may get the port of an earlier step's socket whose
            // allocation still lives on the server (437): take another port.
            let mut held = Vec::new();
            let (client, mut alloc) = loop {
                let client = common::participant_socket()?;
                match turnclient::allocate(&client, server_addr, &creds) {
                    Ok(a) => break (client, a),
                    Err(e) if e.to_string().contains("error 437") && held.len() < 20 => held.push(client),
                    Err(e) => return Err(e.context(format!("allocation {i} on {server_addr}"))),
                }
            };
            drop(held);
            let channel = 0x4000 + (i % 0x3fff) as u16;
            alloc
                .bind_channel(&client, peer.local_addr()?, channel)
                .with_context(|| format!("channel {i}"))?;
            v.push(ParticipantSetup {
                socket: client,
                link: Link::Channel {
                    server: server_addr,
                    channel,
                },
                publish: true,
            });
            v.push(ParticipantSetup {
                socket: peer,
                link: Link::Plain {
                    dest: alloc.relayed,
                    register: None,
                },
                publish: true,
            });
        }
        Ok(v)
    })
    .await??;
    let server = Server {
        pid: srv.pid(),
        rss_idle: procfs::process_rss(srv.pid())?,
    };
    let profile = load.profile();
    let handle = engine::spawn(setups, profile.clone(), load.pin_load, load.realtime)?;
    let flowing = if profile.publish_video { pairs * 2 } else { 0 };
    common::measure(
        name,
        handle,
        Some(server),
        pairs,
        flowing,
        load.warmup,
        load.window(),
        load.quiet,
    )
    .await
}

async fn measure_server(
    name: &str,
    srv: &ChildServer,
    addr: SocketAddr,
    secret: &str,
    load: &LoadArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut step = 0usize;
    let (runs, ramp) = common::ramp(name, load, |pairs| {
        step += 1;
        let s = step;
        async move { turn_step(name, addr, secret, srv, load, pairs, s).await }
    })
    .await?;
    report.runs.extend(runs);
    report.ramps.extend(ramp);
    Ok(())
}

fn installed(bin: &PathBuf) -> bool {
    if bin.components().count() > 1 {
        return bin.exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

pub async fn run(a: TurnArgs) -> anyhow::Result<()> {
    let mut report = Report::new("turn", procfs::machine());
    report.set_profile(&a.load.profile());
    report.notes.push(
        "each pair: a TURN client (UDP allocation, permission, channel; ChannelData) and a plain UDP peer on 127.0.0.1; both publish, so relayed pkts/s counts both directions".into(),
    );
    if !a.skip_duet {
        let s = secret();
        let (child, addr) = start_duet_turn(&a, &s)?;
        measure_server("duet-turn", &child, addr, &s, &a.load, &mut report).await?;
        report.notes.push(format!(
            "duet turn: {} worker(s), real relay sockets ({}), --allow-peer 127.0.0.1/32, no bandwidth cap",
            a.relay_threads, a.duet_relay_ports
        ));
    }
    if !a.skip_coturn {
        if installed(&a.coturn_bin) {
            let s = secret();
            let (child, addr) = start_coturn(&a, &s)?;
            measure_server("coturn", &child, addr, &s, &a.load, &mut report).await?;
            let v = Command::new(&a.coturn_bin).arg("--version").output().ok();
            let version = v
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            report.notes.push(format!(
                "coturn {version}: --use-auth-secret, --allow-loopback-peers, relay ports {}, --relay-threads={}",
                a.coturn_relay_ports, a.relay_threads
            ));
        } else {
            report.notes.push(format!(
                "coturn not measured: {} is not installed (apt-get install coturn)",
                a.coturn_bin.display()
            ));
        }
    }
    report.compare("duet/coturn relayed", "duet-turn", "coturn");
    if !a.skip_sfu_path {
        let sa = SfuArgs {
            load: LoadArgs {
                ramp: false,
                ..a.load.clone()
            },
            out: a.out.clone(),
            target: None,
            duet_bin: a.duet_bin.clone(),
            place: Place::Browser,
            internal: None,
            internal_token: None,
            sfu_token_secret: None,
            sfu_pid: None,
            with_floor: false,
            setup_concurrency: 16,
            via_turn: true,
            srtp_profile: a.srtp_profile,
        };
        let mut t = sfu::target(&sa, &mut report).await?;
        let via = sfu::run_step(&sa, &mut t, a.load.pairs, 1, true, "turn→sfu").await;
        match via {
            Ok(r) => {
                report.runs.push(r);
                let direct = sfu::run_step(&sa, &mut t, a.load.pairs, 2, false, "sfu-direct").await?;
                report.runs.push(direct);
                report.add_ratio(
                    "turn→sfu / sfu-direct pkts/s",
                    "turn→sfu",
                    "sfu-direct",
                    "received_pps",
                    None,
                );
                report.add_ratio(
                    "turn→sfu / sfu-direct pkts per CPU-second",
                    "turn→sfu",
                    "sfu-direct",
                    "packets_per_cpu_second",
                    None,
                );
                report.notes.push("turn→sfu: rtc clients whose only ICE candidate is a relay on `duet up`'s TURN (UDP, ChannelData); the in-process hand-off carries media into the SFU; sfu-direct: same clients with host candidates, same duet process".into());
            }
            Err(e) => report
                .notes
                .push(format!("in-process TURN → SFU path failed: {e:#}")),
        }
    }
    report::emit(&report, &a.out)
}
