#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is a test failure
//! The binary as a user runs it: start-up, health, metrics, bad config.

mod support;

use std::process::{Command, Stdio};
use support::{duet, temp_dir, Up};

#[tokio::test]
async fn up_serves_health_and_metrics_that_promtool_accepts_then_stops_on_sigterm() {
    let dir = temp_dir("up");
    let mut up = Up::start(&dir);
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", up.metrics()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("{}/readyz", up.metrics()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap_or_default());
    // /metrics and /readyz are on their own (loopback) listener, not the public port.
    let public = client.get(format!("{}/metrics", up.http())).send().await.unwrap();
    assert_eq!(public.status(), 404, "/metrics must not be on the public port");
    assert!(public.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let metrics = client
        .get(format!("{}/metrics", up.metrics()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("duet_build_info"), "{metrics}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: apt-get install -y --no-install-recommends prometheus");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The embedded database and TLS certificate were created in the data dir.
    assert!(dir.join("duet.db").exists());
    assert!(dir.join("tls").join("cert.pem").exists());

    let status = up.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn assert_one_line_error(out: std::process::Output, must_contain: &str) {
    assert!(!out.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].contains(must_contain), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn unknown_flag_is_refused_with_one_line() {
    let out = duet().args(["up", "--no-such-flag"]).output().unwrap();
    assert_one_line_error(out, "--no-such-flag");
}

#[test]
fn unknown_toml_key_is_refused_with_one_line_naming_it() {
    let dir = temp_dir("cfg1");
    let f = dir.join("duet.toml");
    std::fs::write(&f, "http-listen = \"127.0.0.1:0\"\nmystery_option = true\n").unwrap();
    let out = duet().arg("--config").arg(&f).arg("up").output().unwrap();
    assert_one_line_error(out, "mystery_option");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_port_in_toml_is_refused_with_one_line_naming_the_key() {
    let dir = temp_dir("cfg2");
    let f = dir.join("duet.toml");
    std::fs::write(&f, "media-listen = \"127.0.0.1:99999\"\n").unwrap();
    let out = duet().arg("--config").arg(&f).arg("up").output().unwrap();
    assert_one_line_error(out, "media-listen");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_value_in_environment_is_refused_with_one_line() {
    let out = duet()
        .args(["up"])
        .env("DUET_HTTP_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_one_line_error(out, "http-listen");
}

#[test]
fn help_explains_options_and_their_env_vars() {
    let out = duet().args(["up", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--http-listen") && help.contains("DUET_HTTP_LISTEN"),
        "{help}"
    );
    assert!(help.contains("--public-ip"), "{help}");
}

#[test]
fn production_roles_refuse_to_start_without_their_secrets() {
    let out = duet()
        .args([
            "sfu",
            "--node-id=n1",
            "--http-listen=127.0.0.1:0",
            "--internal-listen=127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_one_line_error(out, "--sfu-token-secret");
}
