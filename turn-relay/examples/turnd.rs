//! A minimal standalone TURN server for manual testing and benchmarks
//! (the real CLI is `duet turn`).
//!
//! `cargo run -p turn-relay --example turnd -- <udp/tcp listen> <relay ip> <secret> [allow CIDR...]`
//! e.g. `... -- 127.0.0.1:3478 127.0.0.1 s3cret 127.0.0.1/32`

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use turn_relay::{parse_peer_allow_list, RelayConfig, TurnConfig, TurnServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: turnd <listen addr> <relay ip> <secret> [allow CIDR...]");
        std::process::exit(2);
    }
    let listen: SocketAddr = args[0].parse()?;
    let relay_ip = args[1].parse()?;
    let allow = parse_peer_allow_list(&args[3..])?;
    let mut cfg = TurnConfig::new(
        "duet",
        vec![args[2].as_bytes().to_vec()],
        RelayConfig::Sockets {
            relay_ip,
            port_range: 40000..=60000,
            allow_peers: allow,
        },
    );
    cfg.listen_udp = Some(listen);
    cfg.listen_tcp = Some(listen);
    cfg.quotas.max_allocations_per_user = 1000;
    cfg.quotas.bandwidth_bytes_per_sec = 0;
    let registry = prometheus::Registry::new();
    let server = TurnServer::bind(cfg, None, &registry).await?;
    let shutdown = CancellationToken::new();
    let s2 = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s2.cancel();
    });
    server.run(shutdown).await?;
    Ok(())
}
