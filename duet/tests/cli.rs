#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is a test failure
//! The binary as a user runs it: start-up, health, metrics, bad config.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn duet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_duet"));
    c.env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("DUET_") {
            c.env_remove(k);
        }
    }
    c
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("duet-test-{tag}-{}-{}", std::process::id(), rand_u32()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_u32() -> u32 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos())
        ^ 0x9e37_79b9
}

/// A `duet up` on free ports; killed on drop.
struct Up {
    child: Child,
    ready: serde_json::Value,
}

impl Up {
    fn start(data_dir: &std::path::Path) -> Up {
        let mut child = duet()
            .args([
                "up",
                "--http-listen=127.0.0.1:0",
                "--internal-listen=127.0.0.1:0",
                "--media-listen=127.0.0.1:0",
                "--turn-listen-udp=127.0.0.1:0",
                "--turn-listen-tcp=127.0.0.1:0",
                "--turn-listen-tls=127.0.0.1:0",
                "--log-format=json",
            ])
            .arg(format!("--data-dir={}", data_dir.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn duet up");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(json) = line.strip_prefix("duet ready ") {
                    let _ = tx.send(json.to_owned());
                }
            }
        });
        let json = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("duet up printed no ready line in 60 s");
        Up {
            child,
            ready: serde_json::from_str(&json).unwrap(),
        }
    }

    fn http(&self) -> String {
        format!("http://{}", self.ready["http"].as_str().unwrap())
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "duet did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn up_serves_health_and_metrics_that_promtool_accepts_then_stops_on_sigterm() {
    let dir = temp_dir("up");
    let mut up = Up::start(&dir);
    let client = reqwest::Client::new();
    let health = client.get(format!("{}/healthz", up.http())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(format!("{}/readyz", up.http())).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap_or_default());
    let metrics = client
        .get(format!("{}/metrics", up.http()))
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
