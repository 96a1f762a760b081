//! Command line: one typed config per role. Every option is a flag, a
//! `DUET_*` environment variable, and a key of the optional TOML file given
//! with `--config` (precedence: flag, then env, then file, then default).

use crate::config_file;
use crate::secret::Secret;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "duet",
    version,
    about = "Random 1:1 video and text chat through your own SFU and TURN relay."
)]
pub struct Cli {
    /// TOML file with options for the subcommand (keys are the long flag names).
    #[arg(long, env = "DUET_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process with embedded defaults (SQLite, in-memory queue and registry, self-signed TLS for TURN).
    Up(Box<UpArgs>),
    /// The signaling role: HTTP API, WebSockets, matching, pages (production; Redis + PostgreSQL).
    Signaling(SignalingArgs),
    /// An SFU node with its TURN relay beside it (production).
    Sfu(SfuArgs),
    /// A standalone TURN relay with real relay sockets (a coturn replacement).
    Turn(TurnArgs),
    /// A screener: scores live calls' snapshots with an ONNX model and flags risky calls for moderators.
    Screen(ScreenArgs),
    /// Administration: moderator accounts.
    Admin(AdminArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IcePolicy {
    All,
    Relay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// Logging options shared by every role.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "DUET_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax, e.g. `info,sfu=debug`); RUST_LOG also works.
    #[arg(long, env = "DUET_LOG", default_value = "info")]
    pub log: String,
    /// OTLP/HTTP receiver for traces (e.g. `http://otel-collector:4318`); tracing is off without one.
    /// The standard OTEL_EXPORTER_OTLP_ENDPOINT is read too.
    #[arg(long, env = "DUET_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Share of visits traced, 0 to 1 (a visit's later spans follow its first one's decision).
    #[arg(
        long,
        env = "DUET_OTLP_SAMPLING_RATIO",
        default_value_t = 1.0,
        value_name = "RATIO"
    )]
    pub otlp_sampling_ratio: f64,
}

impl LogArgs {
    /// The tracing settings: the flag (or DUET_OTLP_ENDPOINT), else OTEL_EXPORTER_OTLP_ENDPOINT.
    pub fn trace_config(&self) -> crate::telemetry::TraceConfig {
        let endpoint = self
            .otlp_endpoint
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .filter(|e| !e.trim().is_empty());
        crate::telemetry::TraceConfig {
            endpoint,
            sampling_ratio: self.otlp_sampling_ratio,
        }
    }
}

/// Secrets shared between roles. Not given: generated for this run (only
/// sensible when all roles run in one process).
#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// HMAC key for visitors' session tokens.
    #[arg(
        long,
        env = "DUET_SESSION_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub session_secret: Option<Secret>,
    /// HMAC key for SFU tokens (signaling mints, SFU nodes verify).
    #[arg(
        long,
        env = "DUET_SFU_TOKEN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub sfu_token_secret: Option<Secret>,
    /// TURN REST secret (signaling mints credentials, TURN verifies).
    #[arg(long, env = "DUET_TURN_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub turn_secret: Option<Secret>,
    /// Earlier TURN REST secrets still accepted by TURN relays (repeatable; for rotation without a gap).
    #[arg(
        long = "turn-secret-previous",
        env = "DUET_TURN_SECRETS_PREVIOUS",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub turn_secrets_previous: Vec<Secret>,
    /// Bearer token for the SFU's internal API (signaling -> SFU).
    #[arg(
        long,
        env = "DUET_INTERNAL_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub internal_token: Option<Secret>,
}

/// Matching and safety options of signaling.
#[derive(Debug, Clone, Args)]
pub struct MatchingArgs {
    /// Seconds of waiting after which matching ignores interests.
    #[arg(long, env = "DUET_WIDEN_AFTER_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub widen_after_secs: u64,
    /// Seconds before the same two devices may meet again.
    #[arg(long, env = "DUET_COOLDOWN_SECS", default_value_t = 600)]
    pub cooldown_secs: u64,
    /// iceTransportPolicy for browsers (`relay` forces every call through TURN).
    #[arg(long, env = "DUET_ICE_TRANSPORT_POLICY", value_enum, default_value = "all")]
    pub ice_transport_policy: IcePolicy,
    /// Rate limits on sessions, messages, Next presses and reports (`off` only for tests and benches).
    #[arg(long, env = "DUET_RATE_LIMITS", value_enum, default_value = "on")]
    pub rate_limits: OnOff,
    /// Word masked in chat (repeatable).
    #[arg(long = "filter-word", env = "DUET_FILTER_WORDS", value_delimiter = ',')]
    pub filter_words: Vec<String>,
    #[command(flatten)]
    pub captcha: CaptchaArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptchaProvider {
    Turnstile,
    Hcaptcha,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailMode {
    Closed,
    Open,
}

/// Challenges on abuse (off unless a site key and a secret are given; see docs/security.md).
#[derive(Debug, Clone, Args)]
pub struct CaptchaArgs {
    /// Challenge provider: which widget the page loads (both verify with the `siteverify` protocol).
    #[arg(long, env = "DUET_CAPTCHA_PROVIDER", value_enum, default_value = "turnstile")]
    pub captcha_provider: CaptchaProvider,
    /// Public site key of the widget. With --captcha-secret it turns challenges on.
    #[arg(long, env = "DUET_CAPTCHA_SITE_KEY", value_name = "KEY")]
    pub captcha_site_key: Option<String>,
    /// Secret for the provider's siteverify endpoint.
    #[arg(
        long,
        env = "DUET_CAPTCHA_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub captcha_secret: Option<Secret>,
    /// siteverify URL (default: the provider's).
    #[arg(long, env = "DUET_CAPTCHA_VERIFY_URL", value_name = "URL")]
    pub captcha_verify_url: Option<String>,
    /// Widget script URL (default: the provider's).
    #[arg(long, env = "DUET_CAPTCHA_SCRIPT_URL", value_name = "URL")]
    pub captcha_script_url: Option<String>,
    /// Milliseconds to wait for the verifier.
    #[arg(long, env = "DUET_CAPTCHA_TIMEOUT_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub captcha_timeout_ms: u64,
    /// When the verifier cannot answer: `closed` refuses the visitor, `open` lets them in.
    #[arg(long, env = "DUET_CAPTCHA_FAIL_MODE", value_enum, default_value = "closed")]
    pub captcha_fail_mode: FailMode,
    /// Rate-limit hits of one IP or device within the window that demand a challenge (0: never).
    #[arg(long, env = "DUET_CAPTCHA_RATE_LIMIT_HITS", default_value_t = 3)]
    pub captcha_rate_limit_hits: u32,
    /// Next presses of one device within the window that demand a challenge (0: never).
    #[arg(long, env = "DUET_CAPTCHA_NEXT_BURST", default_value_t = 30)]
    pub captcha_next_burst: u32,
    /// Reports against one device within the window that demand a challenge (0: never).
    #[arg(long, env = "DUET_CAPTCHA_REPORTS", default_value_t = 2)]
    pub captcha_reports: u32,
    /// Window of the thresholds, in seconds.
    #[arg(long, env = "DUET_CAPTCHA_WINDOW_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub captcha_window_secs: u64,
    /// Seconds a solved challenge exempts the visitor.
    #[arg(long, env = "DUET_CAPTCHA_PASS_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub captcha_pass_secs: u64,
}

/// Timeouts and connection cap of every HTTP listener of a role.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Seconds a client has to send a request's headers; also how long an idle keep-alive connection stays open.
    #[arg(long, env = "DUET_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout_secs: u64,
    /// Seconds from a request's headers to its answer (body upload included); 408 after that.
    #[arg(long, env = "DUET_HTTP_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_request_timeout_secs: u64,
    /// Open connections per listener at most (WebSockets included); more are closed at once.
    #[arg(long, env = "DUET_HTTP_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_max_connections: u64,
}

impl HttpArgs {
    pub fn limits(&self) -> signaling::server::HttpLimits {
        signaling::server::HttpLimits {
            header_timeout: std::time::Duration::from_secs(self.http_header_timeout_secs),
            request_timeout: std::time::Duration::from_secs(self.http_request_timeout_secs),
            max_connections: self.http_max_connections as usize,
        }
    }
}

/// Limits on what one visitor (one address) and the moderator login may use.
#[derive(Debug, Clone, Args)]
pub struct AbuseArgs {
    /// Open visitor WebSockets per client IP at most [default: 64; unlimited with --rate-limits off].
    #[arg(long, env = "DUET_WS_MAX_PER_IP", value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_max_per_ip: Option<u64>,
    /// WebSocket pings per client IP per second (burst 10) [default: 1; unlimited with --rate-limits off].
    #[arg(long, env = "DUET_WS_PINGS_PER_SEC")]
    pub ws_pings_per_sec: Option<f64>,
    /// Seconds a visitor WebSocket may send nothing (not even a pong to the server's pings) before it is closed.
    #[arg(long, env = "DUET_WS_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(3..=86_400))]
    pub ws_idle_timeout_secs: u64,
    /// argon2 password checks running at once at most (each takes ~19 MiB); more logins get 503 with Retry-After.
    #[arg(long, env = "DUET_MAX_PASSWORD_CHECKS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub max_password_checks: u64,
}

/// TURN listeners beside an SFU.
#[derive(Debug, Clone, Args)]
pub struct TurnListenArgs {
    /// TURN over UDP.
    #[arg(
        long,
        env = "DUET_TURN_LISTEN_UDP",
        default_value = "127.0.0.1:3478",
        value_name = "ADDR"
    )]
    pub turn_listen_udp: SocketAddr,
    /// TURN over TCP.
    #[arg(
        long,
        env = "DUET_TURN_LISTEN_TCP",
        default_value = "127.0.0.1:3478",
        value_name = "ADDR"
    )]
    pub turn_listen_tcp: SocketAddr,
    /// TURN over TLS (`turns:`; use 443 in production).
    #[arg(
        long,
        env = "DUET_TURN_LISTEN_TLS",
        default_value = "127.0.0.1:5349",
        value_name = "ADDR"
    )]
    pub turn_listen_tls: SocketAddr,
    /// TLS certificate (PEM) for TURN/TLS; `up` generates a self-signed one when not given.
    #[arg(long, env = "DUET_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for TURN/TLS.
    #[arg(long, env = "DUET_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// TURN realm.
    #[arg(long, env = "DUET_TURN_REALM", default_value = "duet")]
    pub turn_realm: String,
    /// Host name or IP browsers use in `turn:`/`turns:` URLs (default: the public IP).
    #[arg(long, env = "DUET_TURN_HOST")]
    pub turn_host: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// HTTP: pages, REST, WebSockets (signaling and SFU).
    #[arg(
        long,
        env = "DUET_HTTP_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub http_listen: SocketAddr,
    /// The SFU's internal API (signaling -> SFU). Keep it private.
    #[arg(
        long,
        env = "DUET_INTERNAL_LISTEN",
        default_value = "127.0.0.1:7001",
        value_name = "ADDR"
    )]
    pub internal_listen: SocketAddr,
    /// The SFU's one UDP media socket.
    #[arg(
        long,
        env = "DUET_MEDIA_LISTEN",
        default_value = "127.0.0.1:50000",
        value_name = "ADDR"
    )]
    pub media_listen: SocketAddr,
    /// Address announced to browsers for media and TURN (default: the media listen IP).
    #[arg(long, env = "DUET_PUBLIC_IP", value_name = "IP")]
    pub public_ip: Option<IpAddr>,
    #[command(flatten)]
    pub turn: TurnListenArgs,
    /// Folder for the SQLite database and the generated TLS certificate.
    #[arg(
        long,
        env = "DUET_DATA_DIR",
        default_value = "./duet-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Region name of this node.
    #[arg(long, env = "DUET_REGION", default_value = "local")]
    pub region: String,
    /// Participants this node accepts at most.
    #[arg(long, env = "DUET_MAX_PARTICIPANTS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_participants: u32,
    #[command(flatten)]
    pub matching: MatchingArgs,
    #[command(flatten)]
    pub abuse: AbuseArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    /// /metrics, /healthz and /readyz (kept off the public HTTP port; loopback by default).
    #[arg(
        long,
        env = "DUET_METRICS_LISTEN",
        default_value = "127.0.0.1:9090",
        value_name = "ADDR"
    )]
    pub metrics_listen: SocketAddr,
    #[command(flatten)]
    pub secrets: SecretArgs,
    /// Seconds to let calls finish after SIGTERM before exiting.
    #[arg(long, env = "DUET_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,
    #[command(flatten)]
    pub screening: ScreeningArgs,
    #[command(flatten)]
    pub hold: HoldArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SignalingArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// HTTP: pages, REST, WebSocket, /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "DUET_HTTP_LISTEN",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    pub http_listen: SocketAddr,
    /// Database URL (`postgres://…` in production, `sqlite:…` works too).
    #[arg(long, env = "DUET_DATABASE_URL", value_name = "URL")]
    pub database_url: String,
    /// Redis URL for the shared queue, events and the node registry.
    #[arg(long, env = "DUET_REDIS_URL", value_name = "URL")]
    pub redis_url: String,
    /// Prefix of every Redis key (several deployments can share one Redis).
    #[arg(long, env = "DUET_REDIS_PREFIX", default_value = "duet:")]
    pub redis_prefix: String,
    /// Default region for visitors without a region header.
    #[arg(long, env = "DUET_REGION", default_value = "local")]
    pub region: String,
    /// Regions to try, in order, when a visitor's region has no capacity.
    #[arg(
        long = "region-fallback",
        env = "DUET_REGION_FALLBACKS",
        value_delimiter = ','
    )]
    pub region_fallbacks: Vec<String>,
    /// Take the client IP from `X-Forwarded-For` (only behind a trusted ingress; otherwise clients could forge it).
    #[arg(long, env = "DUET_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// Internal API for screeners (`duet screen`); off unless given. Keep it private.
    #[arg(long, env = "DUET_INTERNAL_LISTEN", value_name = "ADDR")]
    pub internal_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub hold: HoldArgs,
    #[command(flatten)]
    pub matching: MatchingArgs,
    #[command(flatten)]
    pub abuse: AbuseArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SfuArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// This node's id (unique in the deployment).
    #[arg(long, env = "DUET_NODE_ID")]
    pub node_id: String,
    /// This node's region.
    #[arg(long, env = "DUET_REGION", default_value = "local")]
    pub region: String,
    /// HTTP: the browsers' SFU WebSocket (/sfu/ws), /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "DUET_HTTP_LISTEN",
        default_value = "0.0.0.0:8081",
        value_name = "ADDR"
    )]
    pub http_listen: SocketAddr,
    /// The internal API for signaling. Keep it private.
    #[arg(
        long,
        env = "DUET_INTERNAL_LISTEN",
        default_value = "0.0.0.0:7001",
        value_name = "ADDR"
    )]
    pub internal_listen: SocketAddr,
    /// The one UDP media socket.
    #[arg(
        long,
        env = "DUET_MEDIA_LISTEN",
        default_value = "0.0.0.0:50000",
        value_name = "ADDR"
    )]
    pub media_listen: SocketAddr,
    /// Public IP announced to browsers for media and TURN.
    #[arg(long, env = "DUET_PUBLIC_IP", value_name = "IP")]
    pub public_ip: Option<IpAddr>,
    /// Public WebSocket URL of this node (e.g. wss://eu-1.example.org/sfu/ws).
    #[arg(long, env = "DUET_PUBLIC_WS_URL", value_name = "URL")]
    pub public_ws_url: Option<String>,
    /// Internal API URL signaling uses (e.g. http://10.0.0.5:7001).
    #[arg(long, env = "DUET_INTERNAL_URL", value_name = "URL")]
    pub internal_url: Option<String>,
    #[command(flatten)]
    pub turn: TurnListenArgs,
    /// Redis URL of the node registry (heartbeat with TTL).
    #[arg(long, env = "DUET_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key.
    #[arg(long, env = "DUET_REDIS_PREFIX", default_value = "duet:")]
    pub redis_prefix: String,
    /// Participants this node accepts at most.
    #[arg(long, env = "DUET_MAX_PARTICIPANTS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_participants: u32,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
    /// Seconds to let calls finish after SIGTERM before exiting.
    #[arg(long, env = "DUET_DRAIN_TIMEOUT_SECS", default_value_t = 600)]
    pub drain_timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct TurnArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// TURN over UDP.
    #[arg(
        long,
        env = "DUET_LISTEN_UDP",
        default_value = "0.0.0.0:3478",
        value_name = "ADDR"
    )]
    pub listen_udp: Option<SocketAddr>,
    /// TURN over TCP.
    #[arg(
        long,
        env = "DUET_LISTEN_TCP",
        default_value = "0.0.0.0:3478",
        value_name = "ADDR"
    )]
    pub listen_tcp: Option<SocketAddr>,
    /// TURN over TLS (443 in production).
    #[arg(long, env = "DUET_LISTEN_TLS", value_name = "ADDR")]
    pub listen_tls: Option<SocketAddr>,
    /// TLS certificate (PEM).
    #[arg(long, env = "DUET_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "DUET_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Realm.
    #[arg(long, env = "DUET_REALM", default_value = "duet")]
    pub realm: String,
    /// TURN REST secret; repeat to accept several during rotation.
    #[arg(
        long = "auth-secret",
        env = "DUET_AUTH_SECRETS",
        value_delimiter = ',',
        hide_env_values = true,
        required = true
    )]
    pub auth_secrets: Vec<Secret>,
    /// IP of the relay sockets (announced as XOR-RELAYED-ADDRESS).
    #[arg(long, env = "DUET_RELAY_IP", value_name = "IP")]
    pub relay_ip: IpAddr,
    /// Relay port range.
    #[arg(long, env = "DUET_RELAY_PORTS", default_value = "40000-60000", value_parser = config_file::parse_port_range)]
    pub relay_ports: std::ops::RangeInclusive<u16>,
    /// Peer CIDR allowed despite the default deny of private/loopback/… ranges (repeatable).
    #[arg(
        long = "allow-peer",
        env = "DUET_ALLOW_PEERS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub allow_peers: Vec<String>,
    /// Allocations per username at most.
    #[arg(long, env = "DUET_MAX_ALLOCATIONS_PER_USER", default_value_t = 10)]
    pub max_allocations_per_user: u32,
    /// Allocations in total at most.
    #[arg(long, env = "DUET_MAX_ALLOCATIONS", default_value_t = 10_000)]
    pub max_allocations: u32,
    /// Permissions per allocation at most.
    #[arg(long, env = "DUET_MAX_PERMISSIONS", default_value_t = 32)]
    pub max_permissions: u32,
    /// Bandwidth cap per allocation, bytes per second.
    #[arg(long, env = "DUET_BANDWIDTH_BYTES_PER_SEC", default_value_t = 2_000_000)]
    pub bandwidth_bytes_per_sec: u64,
    /// Worker threads, each owning a share of the allocations (its own
    /// SO_REUSEPORT UDP socket, connections and relay sockets); 0 = one per CPU.
    #[arg(long, env = "DUET_TURN_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// HTTP listener for /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "DUET_METRICS_LISTEN",
        default_value = "127.0.0.1:9478",
        value_name = "ADDR"
    )]
    pub metrics_listen: SocketAddr,
}

/// Automatic screening: the model and how often calls are sampled (`duet screen`; `duet up` screens in-process
/// when a model is given).
#[derive(Debug, Clone, Args)]
pub struct ScreeningArgs {
    /// ONNX image model to screen snapshots with (duet ships none; see docs/screening.md).
    #[arg(long, env = "DUET_SCREEN_MODEL", value_name = "FILE")]
    pub screen_model: Option<PathBuf>,
    /// The model's config (TOML): input size and layout, output kind and labels, categories and thresholds.
    #[arg(long, env = "DUET_SCREEN_MODEL_CONFIG", value_name = "FILE")]
    pub screen_model_config: Option<PathBuf>,
    /// Seconds between two samples of one side of a call.
    #[arg(long, env = "DUET_SCREEN_EVERY_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub screen_every_secs: u64,
    /// Milliseconds from a match to its first sample.
    #[arg(long, env = "DUET_SCREEN_FIRST_AFTER_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub screen_first_after_ms: u64,
    /// Milliseconds between two listings of the live calls.
    #[arg(long, env = "DUET_SCREEN_LIST_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub screen_list_ms: u64,
    /// Inference threads (0: one per CPU).
    #[arg(long, env = "DUET_SCREEN_WORKERS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=256))]
    pub screen_workers: u64,
    /// Snapshots waiting for an inference thread at most; more are dropped and counted.
    #[arg(long, env = "DUET_SCREEN_QUEUE", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub screen_queue: u64,
}

/// What signaling does with a call automatic screening flagged above the high threshold.
#[derive(Debug, Clone, Args)]
pub struct HoldArgs {
    /// `on`: the flagged side's video stops reaching the stranger (who is told why; audio and chat go on) until a
    /// moderator clears the flag.
    #[arg(long, env = "DUET_SCREEN_HOLD_VIDEO", value_enum, default_value = "off")]
    pub screen_hold_video: OnOff,
}

#[derive(Debug, Clone, Args)]
pub struct ScreenArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// Signaling's internal listener (its --internal-listen), e.g. http://signaling-internal:7002.
    #[arg(long, env = "DUET_SIGNALING_INTERNAL_URL", value_name = "URL")]
    pub signaling_internal_url: String,
    /// Bearer token of the internal APIs (the --internal-token signaling and the SFU nodes have).
    #[arg(
        long,
        env = "DUET_INTERNAL_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub internal_token: Secret,
    /// This screener's name in claims, results and the audit log (default: `screen-` and a random suffix).
    #[arg(long, env = "DUET_SCREENER_ID")]
    pub screener_id: Option<String>,
    #[command(flatten)]
    pub screening: ScreeningArgs,
    /// /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "DUET_METRICS_LISTEN",
        default_value = "127.0.0.1:9479",
        value_name = "ADDR"
    )]
    pub metrics_listen: SocketAddr,
}

#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Database URL (default: the SQLite file `duet up` uses with its default --data-dir).
    #[arg(
        long,
        env = "DUET_DATABASE_URL",
        default_value = "sqlite://./duet-data/duet.db?mode=rwc",
        value_name = "URL",
        global = true
    )]
    pub database_url: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Creates a moderator account (password prompted, or read from stdin with --password-stdin).
    CreateModerator(CreateModeratorArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeratorRoleArg {
    Moderator,
    Senior,
    Admin,
}

#[derive(Debug, Clone, Args)]
pub struct CreateModeratorArgs {
    /// The moderator's email (their login).
    #[arg(long)]
    pub email: String,
    /// moderator: temporary bans, end calls; senior: also permanent bans and appeals; admin: also accounts and settings.
    #[arg(long, value_enum)]
    pub role: ModeratorRoleArg,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("{0}")]
    Config(String),
}

/// Parses the process arguments, merging the `--config` TOML file.
pub fn parse_from_env() -> Result<Cli, CliError> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    config_file::parse_with_file(args)
}

/// The first line of a clap error, without the `error: ` prefix.
pub fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    first.trim_start_matches("error: ").to_owned()
}
