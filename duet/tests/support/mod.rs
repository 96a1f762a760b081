//! Running the binary in tests: `duet up` on free ports, killed on drop;
//! several roles as separate processes ([`cluster`]) with synthetic visitors
//! ([`visitor`], [`media`]); a test's own Redis and PostgreSQL ([`services`]).
#![allow(clippy::unwrap_used, dead_code)] // test helpers may unwrap: a failure is a test failure

/// Hang guard of every wait ("within N seconds"), never a timing assertion.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Packets (audio + video, 100 per second) that count as "media flows".
pub const FLOWING: usize = 40;

/// Waits until `$cond` (an expression that may `.await`) is `Some(v)`; gives `v`.
#[allow(unused_macros)] // not every test file waits
macro_rules! wait_for {
    ($what:expr, $cond:expr) => {{
        let deadline = tokio::time::Instant::now() + $crate::support::WAIT;
        loop {
            if let Some(v) = $cond {
                break v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {:?} for {}",
                $crate::support::WAIT,
                $what
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}

pub mod cluster;
pub mod media;
pub mod services;
pub mod visitor;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary, without the developer's DUET_* variables or RUST_LOG.
pub fn duet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_duet"));
    c.env_remove("RUST_LOG");
    // Nor a developer's trace collector.
    c.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    for (k, _) in std::env::vars() {
        if k.starts_with("DUET_") {
            c.env_remove(k);
        }
    }
    c
}

pub fn temp_dir(tag: &str) -> std::path::PathBuf {
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
pub struct Up {
    pub child: Child,
    pub ready: serde_json::Value,
}

impl Up {
    pub fn start(data_dir: &std::path::Path) -> Up {
        Self::start_with(data_dir, &[])
    }

    /// With `extra` flags after the defaults (a later flag wins).
    pub fn start_with(data_dir: &std::path::Path, extra: &[&str]) -> Up {
        let mut child = duet()
            .args([
                "up",
                "--http-listen=127.0.0.1:0",
                "--internal-listen=127.0.0.1:0",
                "--metrics-listen=127.0.0.1:0",
                "--media-listen=127.0.0.1:0",
                "--turn-listen-udp=127.0.0.1:0",
                "--turn-listen-tcp=127.0.0.1:0",
                "--turn-listen-tls=127.0.0.1:0",
                "--log-format=json",
            ])
            .arg(format!("--data-dir={}", data_dir.display()))
            .args(extra)
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

    pub fn http(&self) -> String {
        format!("http://{}", self.ready["http"].as_str().unwrap())
    }

    pub fn metrics(&self) -> String {
        format!("http://{}", self.ready["metrics"].as_str().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
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
