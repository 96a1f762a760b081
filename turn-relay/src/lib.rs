//! duet's TURN relay (RFC 8656 over UDP, TCP and TLS).
//!
//! * [`core::TurnCore`] is a sans-IO state machine: datagrams/frames go in with
//!   `handle_*(…, now)`; side effects come back as [`core::Command`]s (open or
//!   free a relay address, send to a client, permissions and channels), and
//!   relayed datagrams as [`core::ToPeer`] / [`core::ToClient`] values that
//!   point into the input buffer. Time and randomness are passed in. It uses
//!   the `stun` and `turn` crates' message and attribute types.
//! * [`relay`] holds the core's pure relay bookkeeping: the port pool, the
//!   peer rules (the SFU only, in process; otherwise a [`policy`] that denies
//!   internal addresses unless allow-listed) and the quota ledger.
//! * [`TurnServer`] binds the UDP/TCP/TLS listeners and runs N workers, each
//!   a thread owning one core, its `SO_REUSEPORT` UDP socket, its stream
//!   connections and its relay sockets (or the in-process hand-off to the SFU).
//!
//! See `docs/turn.md` for the design, configuration and operations.

pub mod addr;
pub mod auth;
pub mod client;
pub mod core;
pub mod indication;
pub mod metrics;
pub mod policy;
pub mod quota;
pub mod relay;
mod server;
pub mod tls;
mod udp;
pub mod wire;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::policy::parse_peer_allow_list;
pub use crate::quota::Quotas;
pub use crate::server::TurnServer;
pub use crate::tls::generate_self_signed;

/// Default TURN port for UDP and TCP (RFC 8656).
pub const DEFAULT_PORT: u16 = 3478;
/// Default TURN-over-TLS port (RFC 8656). Use 443 in production so that
/// networks that only let HTTPS out still reach the relay.
pub const DEFAULT_TLS_PORT: u16 = 5349;

/// Errors of the TURN relay (start-up and configuration; network input never
/// produces one, it is dropped and counted instead).
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid peer allow-list entry {entry:?}: {reason}")]
    AllowList { entry: String, reason: String },
    #[error("I/O error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("certificate generation: {0}")]
    CertGen(String),
    #[error("metrics registration: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl TurnError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        TurnError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Where relayed datagrams go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayConfig {
    /// TURN beside the SFU in the same process: relay addresses are virtual
    /// (`relay_ip` plus a virtual port per allocation) and the only reachable
    /// peers are the SFU's media addresses `sfu_addrs`; datagrams cross
    /// through [`proto::handoff::TurnEnd`].
    InProcess {
        relay_ip: IpAddr,
        sfu_addrs: Vec<SocketAddr>,
    },
    /// Standalone relay (`duet turn`, a coturn replacement): one real UDP
    /// socket per allocation on `relay_ip` with a port from `port_range`
    /// (each worker owns one contiguous block of it); peers are checked by
    /// [`policy::PeerPolicy`] (internal ranges denied unless in
    /// `allow_peers`).
    Sockets {
        relay_ip: IpAddr,
        port_range: RangeInclusive<u16>,
        allow_peers: Vec<ipnet::IpNet>,
    },
}

/// Configuration of a [`TurnServer`].
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// UDP listener (default `0.0.0.0:3478`); `None` disables it.
    pub listen_udp: Option<SocketAddr>,
    /// TCP listener (default `0.0.0.0:3478`); `None` disables it.
    pub listen_tcp: Option<SocketAddr>,
    /// TLS-over-TCP listener (default port 5349, 443 in production); needs
    /// `tls_cert` and `tls_key`.
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain for TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// Realm for long-term credentials.
    pub realm: String,
    /// TURN REST shared secrets; any of them is accepted (rotation). At
    /// least one is required.
    pub auth_secrets: Vec<Vec<u8>>,
    /// Relay backend.
    pub relay: RelayConfig,
    /// With [`RelayConfig::Sockets`]: the address announced to clients in
    /// XOR-RELAYED-ADDRESS when it differs from the bound `relay_ip` (1:1
    /// NAT, e.g. a cloud VM); `None` announces `relay_ip`.
    pub relay_public_ip: Option<IpAddr>,
    /// Quotas and rate limits.
    pub quotas: Quotas,
    /// How long a nonce stays fresh before 438 Stale Nonce (default 600 s).
    pub nonce_ttl: Duration,
    /// Maximum allocation lifetime a client may ask for (default 3600 s).
    pub max_lifetime: Duration,
    /// SOFTWARE attribute in responses (`None` to omit).
    pub software: Option<String>,
    /// Worker threads (default 1), each owning a share of the allocations
    /// (see the crate docs). The in-process relay always runs one.
    pub workers: usize,
}

impl Default for TurnConfig {
    /// Default ports, realm `duet`, no secrets (set at least one), socket
    /// relay on 40000-60000 with no relay IP (set one): `validate` refuses
    /// it until those are filled in.
    fn default() -> Self {
        TurnConfig::new(
            "duet",
            Vec::new(),
            RelayConfig::Sockets {
                relay_ip: IpAddr::from([0, 0, 0, 0]),
                port_range: 40000..=60000,
                allow_peers: Vec::new(),
            },
        )
    }
}

impl TurnConfig {
    /// A configuration with the default ports on all interfaces, no TLS, and
    /// the given realm, secrets and relay backend.
    pub fn new(realm: impl Into<String>, auth_secrets: Vec<Vec<u8>>, relay: RelayConfig) -> Self {
        TurnConfig {
            listen_udp: Some(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
            listen_tcp: Some(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
            listen_tls: None,
            tls_cert: None,
            tls_key: None,
            realm: realm.into(),
            auth_secrets,
            relay,
            relay_public_ip: None,
            quotas: Quotas::default(),
            nonce_ttl: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            software: Some("duet-turn".to_string()),
            workers: 1,
        }
    }

    /// Checks what can be checked without binding anything.
    pub fn validate(&self) -> Result<(), TurnError> {
        if self.auth_secrets.is_empty() || self.auth_secrets.iter().any(|s| s.is_empty()) {
            return Err(TurnError::Config(
                "at least one non-empty auth secret is required".into(),
            ));
        }
        if self.realm.is_empty() || self.realm.len() > 127 {
            return Err(TurnError::Config("realm must be 1..=127 bytes".into()));
        }
        if self.listen_tls.is_some() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err(TurnError::Config("listen_tls needs tls_cert and tls_key".into()));
        }
        if self.listen_udp.is_none() && self.listen_tcp.is_none() && self.listen_tls.is_none() {
            return Err(TurnError::Config("no listener configured".into()));
        }
        if let Some(ip) = self.relay_public_ip {
            if ip.is_unspecified() {
                return Err(TurnError::Config(
                    "relay_public_ip must be a concrete address".into(),
                ));
            }
            if let RelayConfig::Sockets { relay_ip, .. } = &self.relay {
                if relay_ip.is_ipv4() != ip.is_ipv4() {
                    return Err(TurnError::Config(
                        "relay_public_ip and relay_ip differ in family".into(),
                    ));
                }
            }
        }
        if self.nonce_ttl.is_zero() {
            return Err(TurnError::Config("nonce_ttl must be > 0".into()));
        }
        match &self.relay {
            RelayConfig::InProcess { relay_ip, sfu_addrs } => {
                if sfu_addrs.is_empty() {
                    return Err(TurnError::Config(
                        "in-process relay needs at least one SFU address".into(),
                    ));
                }
                if relay_ip.is_unspecified() {
                    return Err(TurnError::Config("relay_ip must be a concrete address".into()));
                }
            }
            RelayConfig::Sockets {
                port_range, relay_ip, ..
            } => {
                if relay_ip.is_unspecified() && self.relay_public_ip.is_none() {
                    return Err(TurnError::Config(
                        "relay_ip 0.0.0.0/:: needs relay_public_ip (the address clients are told)".into(),
                    ));
                }
                if port_range.is_empty() || *port_range.start() == 0 {
                    return Err(TurnError::Config(
                        "relay port range must be non-empty and exclude 0".into(),
                    ));
                }
                let span = usize::from(*port_range.end() - *port_range.start()) + 1;
                if self.workers > span || self.workers > usize::from(u16::MAX) {
                    return Err(TurnError::Config(
                        "more workers than relay ports (each worker needs its own ports)".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}
