//! Runs the real binary: `bench floor` for one second over loopback and
//! parses its JSON report. No timing thresholds: only that packets made the
//! trip, that loss was computed from what was sent, and that the report
//! has the fields docs/benchmarks.md relies on.

use std::process::Command;

#[test]
fn floor_run_reports_received_packets_and_computed_loss_as_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "floor",
            "--pairs",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "300ms",
            "--json",
            "--quiet",
        ])
        .output()
        .expect("the bench binary runs");
    assert!(
        out.status.success(),
        "bench floor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON report");
    assert_eq!(v["bench"], "floor");
    let run = &v["runs"][0];
    assert_eq!(run["name"], "floor");
    assert_eq!(run["participants"], 8);
    let received = run["latency"]["samples"].as_u64().expect("latency samples");
    assert!(received > 0, "no packet came back through the forwarder: {run}");
    assert!(run["received_pps"].as_f64().expect("received_pps") > 0.0);
    let loss = run["loss_pct"].as_f64().expect("loss_pct is a number");
    assert!((0.0..=100.0).contains(&loss), "loss {loss}");
    assert!(run["lost_packets"].as_u64().is_some(), "lost_packets computed");
    assert!(run["sent_pps"].as_f64().expect("sent_pps") > 0.0);
    // The server's /proc readings and the generator's self-check are there.
    assert!(run["server"]["cpu_seconds"].as_f64().is_some());
    assert!(run["server"]["rss_bytes"].as_u64().expect("rss") > 0);
    assert!(run["generator"]["verdict"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
}

#[test]
fn bad_flags_are_refused_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["floor", "--duration", "ten"])
        .output()
        .expect("the bench binary runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad duration"));
}
