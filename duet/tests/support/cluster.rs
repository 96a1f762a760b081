//! Several `duet` processes started as an operator starts them (`duet
//! signaling` replicas, `duet sfu` nodes) against one Redis and one
//! PostgreSQL: the shared test services, or a test's own
//! ([`super::services`]). Logs per process in a temp folder, everything
//! killed and cleaned up on drop.

use proto::registry::{redis_keys, NodeRecord};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
pub const SHARED_POSTGRES: &str = "postgres://root@127.0.0.1:5432";
pub const SESSION_SECRET: &str = "multinode-session-secret-0123456789";
pub const SFU_TOKEN_SECRET: &str = "multinode-sfu-token-secret-0123456789";
pub const TURN_SECRET: &str = "multinode-turn-secret-0123456789";
pub const INTERNAL_TOKEN: &str = "multinode-internal-token-0123456789";

pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos & 0xff_ffff_ffff)
}

pub struct Proc {
    pub name: String,
    pub child: tokio::process::Child,
    pub ready: serde_json::Value,
    pub log: PathBuf,
    /// The command line, to start the same process again.
    pub args: Vec<String>,
}

impl Proc {
    pub fn http(&self) -> String {
        self.ready["http"].as_str().unwrap().to_owned()
    }

    pub fn internal(&self) -> String {
        format!("http://{}", self.ready["internal"].as_str().unwrap())
    }

    /// SIGTERM (with `kill`, as an orchestrator would; no unsafe `libc::kill` here).
    pub fn terminate(&self) {
        let pid = self.child.id().expect("process still running");
        let rc = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(rc.success(), "kill -TERM {pid}");
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    /// Error lines of duet's own code in the process log.
    pub fn errors(&self) -> Vec<String> {
        self.log_lines("\"level\":\"ERROR\"")
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

pub struct Cluster {
    pub tag: String,
    pub prefix: String,
    pub db: String,
    pub redis: String,
    pub postgres: String,
    pub dir: PathBuf,
    pub procs: Vec<Proc>,
    pub node_ids: Vec<String>,
}

impl Cluster {
    /// On the shared Redis and PostgreSQL (a key prefix and a database of its own).
    pub async fn new() -> Cluster {
        Self::on(SHARED_REDIS, SHARED_POSTGRES).await
    }

    /// On the Redis at `redis` and the PostgreSQL server at `postgres`
    /// (`postgres://user@host:port`, trust auth); creates a fresh database.
    pub async fn on(redis: &str, postgres: &str) -> Cluster {
        let tag = unique();
        let db = format!("duet_multinode_{tag}");
        let admin: sqlx::PgPool = sqlx::PgPool::connect(&format!("{postgres}/postgres"))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {postgres} (trust auth): {e}"));
        sqlx::query(&format!("CREATE DATABASE \"{db}\""))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let dir = std::env::temp_dir().join(format!("duet-multinode-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        Cluster {
            prefix: format!("duet_multinode_{tag}:"),
            tag,
            db,
            redis: redis.to_owned(),
            postgres: postgres.to_owned(),
            dir,
            procs: Vec::new(),
            node_ids: Vec::new(),
        }
    }

    pub fn database_url(&self) -> String {
        format!("{}/{}", self.postgres, self.db)
    }

    /// Starts `duet ARGS` and waits for its ready line; its index in `procs`.
    pub async fn spawn(&mut self, name: &str, args: Vec<String>) -> usize {
        let proc = self.start(name, args).await;
        self.procs.push(proc);
        self.procs.len() - 1
    }

    /// Starts process `i` again with the same command line (after it died).
    pub async fn restart(&mut self, i: usize) {
        let (name, args) = (self.procs[i].name.clone(), self.procs[i].args.clone());
        self.procs[i] = self.start(&name, args).await;
    }

    async fn start(&self, name: &str, args: Vec<String>) -> Proc {
        let log = self.dir.join(format!("{name}.log"));
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_duet"));
        cmd.env_remove("RUST_LOG");
        for (k, _) in std::env::vars() {
            if k.starts_with("DUET_") {
                cmd.env_remove(k);
            }
        }
        let env = [
            ("DUET_SESSION_SECRET", SESSION_SECRET),
            ("DUET_SFU_TOKEN_SECRET", SFU_TOKEN_SECRET),
            ("DUET_TURN_SECRET", TURN_SECRET),
            ("DUET_INTERNAL_TOKEN", INTERNAL_TOKEN),
        ];
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        cmd.args(&args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn duet");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(90), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(json) = line.strip_prefix("duet ready ") {
                    return Some(serde_json::from_str::<serde_json::Value>(json).unwrap());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "{name} printed no ready line; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        // Keep reading stdout so that the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Proc {
            name: name.to_owned(),
            child,
            ready,
            log,
            args,
        }
    }

    /// A `duet sfu` node of `region`; its index and node id.
    pub async fn sfu(&mut self, name: &str, region: &str) -> (usize, String) {
        let node_id = format!("{name}-{}", self.tag);
        self.node_ids.push(node_id.clone());
        let args = [
            "sfu",
            "--node-id",
            &node_id,
            "--region",
            region,
            "--http-listen=127.0.0.1:0",
            "--internal-listen=127.0.0.1:0",
            "--media-listen=127.0.0.1:0",
            "--turn-listen-udp=127.0.0.1:0",
            "--turn-listen-tcp=127.0.0.1:0",
            "--turn-listen-tls=127.0.0.1:0",
            "--redis-url",
            &self.redis,
            "--redis-prefix",
            &self.prefix,
            "--max-participants=20",
            // Longer than the test: the node must exit because its calls ended.
            "--drain-timeout-secs=300",
            "--log-format=json",
        ]
        .map(str::to_owned)
        .to_vec();
        (self.spawn(name, args).await, node_id)
    }

    /// A `duet signaling` replica of `region` (no rate limits, widening at once).
    pub async fn signaling(&mut self, name: &str, region: &str, fallback: &str) -> usize {
        self.signaling_with(name, region, fallback, &[]).await
    }

    /// As [`Cluster::signaling`], with `extra` flags after the defaults.
    pub async fn signaling_with(
        &mut self,
        name: &str,
        region: &str,
        fallback: &str,
        extra: &[&str],
    ) -> usize {
        let database = self.database_url();
        let mut args: Vec<String> = [
            "signaling",
            "--http-listen=127.0.0.1:0",
            "--database-url",
            &database,
            "--redis-url",
            &self.redis,
            "--redis-prefix",
            &self.prefix,
            "--region",
            region,
            "--region-fallback",
            fallback,
            "--rate-limits=off",
            "--widen-after-secs=0",
            "--log-format=json",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.spawn(name, args).await
    }

    /// Registry records in Redis, as the nodes wrote them.
    pub async fn records(&self) -> HashMap<String, NodeRecord> {
        let client = redis::Client::open(self.redis.as_str()).unwrap();
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return HashMap::new();
        };
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(redis_keys::node_index(&self.prefix))
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        let mut out = HashMap::new();
        for id in ids {
            let key = redis_keys::node(&self.prefix, &proto::NodeId::new(id.as_str()));
            let v: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut c)
                .await
                .unwrap_or(None);
            if let Some(rec) = v.and_then(|v| serde_json::from_str::<NodeRecord>(&v).ok()) {
                out.insert(id, rec);
            }
        }
        out
    }

    /// `name`'s counter (summed over label sets matching `labels`) on `/metrics` of process `i`.
    pub async fn metric(&self, i: usize, name: &str, labels: &[&str]) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.procs[i].http()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.start_kill();
        }
        for p in &mut self.procs {
            for _ in 0..100 {
                if !matches!(p.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Leave nothing behind: Redis keys, the database, generated certificates.
        if let Ok(mut c) = redis::Client::open(self.redis.as_str()).and_then(|c| c.get_connection()) {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut c)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut c);
            }
        }
        let (db, postgres) = (self.db.clone(), self.postgres.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let url = format!("{postgres}/postgres");
                let connect = sqlx::PgPool::connect(&url);
                if let Ok(Ok(admin)) = tokio::time::timeout(Duration::from_secs(5), connect).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
        for id in &self.node_ids {
            let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("duet-sfu-{id}")));
        }
        if std::thread::panicking() || std::env::var_os("MULTINODE_KEEP_LOGS").is_some() {
            eprintln!("multinode: process logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
