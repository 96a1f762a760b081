//! Interop with coturn's own test clients (Debian `coturn`):
//! `turnutils_peer` as the peer and `turnutils_uclient` as the TURN client,
//! against our server (socket relay backend, allow-list 127.0.0.1/32) on
//! 127.0.0.1, over UDP and TCP, with channels and with Send indications.
//! `turnutils_uclient` exits 0 even with loss, so its summary is parsed.
//!
//! The tools are required: install them with `apt-get install coturn`.

// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::process::Command;

const CLIENTS: u64 = 10;
const MESSAGES: u64 = 100;

fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} not found: the coturn interop tests need coturn's test tools; run `apt-get install coturn`"
    );
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Debug, PartialEq)]
struct Summary {
    sent: u64,
    received: u64,
    lost: u64,
    lost_line: String,
}

/// Parses `start_mclient: tot_send_msgs=N, tot_recv_msgs=M` and
/// `Total lost packets N (x%)` from uclient's output.
fn parse_summary(out: &str) -> Option<Summary> {
    let mut sent_recv = None;
    let mut lost = None;
    for line in out.lines() {
        if let Some(rest) = line.split("start_mclient: tot_send_msgs=").nth(1) {
            let (s, r) = rest.split_once(", tot_recv_msgs=")?;
            sent_recv = Some((s.trim().parse().ok()?, r.trim().parse().ok()?));
        }
        if let Some(rest) = line.split("Total lost packets ").nth(1) {
            let n = rest.split_whitespace().next()?.parse().ok()?;
            lost = Some((n, line.trim().to_string()));
        }
    }
    let ((sent, received), (lost, lost_line)) = (sent_recv?, lost?);
    Some(Summary {
        sent,
        received,
        lost,
        lost_line,
    })
}

#[test]
#[should_panic(expected = "apt-get install coturn")]
fn missing_coturn_tools_fail_with_the_install_hint() {
    require_tool("turnutils_uclient_that_does_not_exist");
}

#[test]
fn summary_parser_reads_uclient_output() {
    let out = "6: : start_mclient: msz=10, tot_send_msgs=981, tot_recv_msgs=981, tot_send_bytes ~ 1\n\
               6: : start_mclient: tot_send_msgs=1000, tot_recv_msgs=998\n\
               6: : Total lost packets 2 (0.200000%), total send dropped 0 (0.000000%)\n";
    let s = parse_summary(out).unwrap();
    assert_eq!((s.sent, s.received, s.lost), (1000, 998, 2));
    assert!(parse_summary("0: : Cannot complete Allocation").is_none());
}

async fn run_uclient(server_port: u16, extra: &[&str]) -> Summary {
    require_tool("turnutils_uclient");
    require_tool("turnutils_peer");
    let peer_port = free_udp_port();
    let mut peer = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn turnutils_peer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (user, pass) = creds(SECRET, "coturn-client", 3600);
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "-u",
            &user,
            "-w",
            &pass,
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "-m",
            &CLIENTS.to_string(),
            "-l",
            "170",
            "-n",
            &MESSAGES.to_string(),
            "-p",
            &server_port.to_string(),
            "127.0.0.1",
        ]
        .map(String::from),
    );
    let child = Command::new("turnutils_uclient")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn turnutils_uclient");
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("turnutils_uclient timed out")
        .expect("turnutils_uclient output");
    let _ = peer.kill().await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = parse_summary(&text).unwrap_or_else(|| panic!("no uclient summary in output:\n{text}"));
    eprintln!(
        "uclient {:?}: sent={} received={} | {}",
        extra, summary.sent, summary.received, summary.lost_line
    );
    summary
}

async fn interop(extra: &[&str]) {
    let tls = extra.contains(&"-S");
    let srv = start(test_config(sockets_relay(&["127.0.0.1/32"])), tls, None).await;
    let port = if tls {
        srv.tls.expect("TLS listener").port()
    } else if extra.contains(&"-t") {
        srv.tcp.port()
    } else {
        srv.udp.port()
    };
    let s = run_uclient(port, extra).await;
    assert_eq!(s.sent, CLIENTS * MESSAGES, "all messages sent");
    assert_eq!(s.received, s.sent, "every message came back through the relay");
    assert_eq!(s.lost, 0, "loss reported: {}", s.lost_line);
    assert!(
        metric(
            &srv.registry,
            "duet_turn_relayed_packets_total",
            Some(("direction", "to_peer"))
        ) >= s.sent as f64
    );
    assert!(
        metric(
            &srv.registry,
            "duet_turn_relayed_packets_total",
            Some(("direction", "to_client"))
        ) >= s.received as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_over_udp_with_channels_has_no_loss() {
    interop(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_over_udp_with_send_indications_has_no_loss() {
    interop(&["-s"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_over_tcp_with_channels_has_no_loss() {
    interop(&["-t"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_over_tcp_with_send_indications_has_no_loss() {
    interop(&["-t", "-s"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_without_rtcp_pairs_over_udp_has_no_loss() {
    // `-c`: one allocation per client instead of an RTP/RTCP pair (no EVEN-PORT reservation).
    interop(&["-c"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_over_tls_with_channels_has_no_loss() {
    interop(&["-t", "-S"]).await;
}
