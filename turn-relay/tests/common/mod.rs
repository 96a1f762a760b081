//! Shared helpers for the real-socket tests: start our server on
//! 127.0.0.1 with port 0, mint REST credentials, and a small TURN client
//! over UDP, TCP or TLS built on `turn_relay::client`.
#![allow(dead_code)]
// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use turn_relay::client::{parse_incoming, Client, Incoming, Response};
use turn_relay::wire::{frame_len, Frame};
use turn_relay::{parse_peer_allow_list, Quotas, RelayConfig, TurnConfig, TurnServer};

pub const SECRET: &[u8] = b"test-secret";
pub const REALM: &str = "duet.test";

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// REST credentials for `id` valid for `ttl_s` seconds (negative: expired).
pub fn creds(secret: &[u8], id: &str, ttl_s: i64) -> (String, String) {
    let expiry = (unix_now() as i64 + ttl_s) as u64;
    let c = proto::turn_cred::mint(secret, id, expiry);
    (c.username, c.password)
}

pub struct TestServer {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub cert: Option<PathBuf>,
    pub shutdown: CancellationToken,
    pub registry: prometheus::Registry,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn test_config(relay: RelayConfig) -> TurnConfig {
    let mut cfg = TurnConfig::new(REALM, vec![b"old-secret".to_vec(), SECRET.to_vec()], relay);
    cfg.listen_udp = Some("127.0.0.1:0".parse().unwrap());
    cfg.listen_tcp = Some("127.0.0.1:0".parse().unwrap());
    cfg.quotas = Quotas {
        max_allocations_per_user: 100,
        bandwidth_bytes_per_sec: 0,
        unauth_per_sec: 1000,
        unauth_burst: 1000,
        ..Quotas::default()
    };
    cfg
}

pub fn sockets_relay(allow: &[&str]) -> RelayConfig {
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    RelayConfig::Sockets {
        relay_ip: "127.0.0.1".parse().unwrap(),
        port_range: 40000..=60000,
        allow_peers: parse_peer_allow_list(&allow).unwrap(),
    }
}

pub async fn start(mut cfg: TurnConfig, tls: bool, handoff: Option<proto::handoff::TurnEnd>) -> TestServer {
    let mut cert = None;
    if tls {
        let dir =
            std::env::temp_dir().join(format!("duet-turn-test-{}-{}", std::process::id(), rand_suffix()));
        let (c, k) =
            turn_relay::generate_self_signed(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        cfg.listen_tls = Some("127.0.0.1:0".parse().unwrap());
        cfg.tls_cert = Some(c.clone());
        cfg.tls_key = Some(k);
        cert = Some(c);
    }
    let registry = prometheus::Registry::new();
    let server = TurnServer::bind(cfg, handoff, &registry).await.unwrap();
    let shutdown = CancellationToken::new();
    let (udp, tcp, tls) = (
        server.local_udp_addr().unwrap(),
        server.local_tcp_addr().unwrap(),
        server.local_tls_addr(),
    );
    let sd = shutdown.clone();
    let task = tokio::spawn(async move {
        server.run(sd).await.unwrap();
    });
    TestServer {
        udp,
        tcp,
        tls,
        cert,
        shutdown,
        registry,
        task,
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_now());
    h.finish()
}

/// Sum of a metric's samples whose labels contain `label` (or all samples).
pub fn metric(registry: &prometheus::Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let mut total = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (n, labels) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            continue;
        }
        if let Some((k, v)) = label {
            if !labels.contains(&format!("{k}=\"{v}\"")) {
                continue;
            }
        }
        total += value.parse::<f64>().unwrap();
    }
    total
}

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A connection from a test TURN client to the server.
pub enum Conn {
    Udp(UdpSocket, SocketAddr),
    Stream(Box<dyn Stream>, Vec<u8>),
}

pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

impl Conn {
    pub async fn udp(server: SocketAddr) -> Conn {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Conn::Udp(s, server)
    }

    pub async fn tcp(server: SocketAddr) -> Conn {
        Conn::Stream(Box::new(TcpStream::connect(server).await.unwrap()), Vec::new())
    }

    pub async fn tls(server: SocketAddr, cert: &std::path::Path) -> Conn {
        let mut roots = rustls::RootCertStore::empty();
        for c in turn_relay::tls::load_certs(cert).unwrap() {
            roots.add(c).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = TcpStream::connect(server).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        Conn::Stream(Box::new(tls), Vec::new())
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Conn::Stream(..))
    }

    pub async fn send(&mut self, b: &[u8]) {
        match self {
            Conn::Udp(s, to) => {
                s.send_to(b, *to).await.unwrap();
            }
            Conn::Stream(s, _) => {
                s.write_all(b).await.unwrap();
                s.flush().await.unwrap();
            }
        }
    }

    /// Next datagram/frame, or None after RECV_TIMEOUT.
    pub async fn recv_timeout(&mut self, t: Duration) -> Option<Vec<u8>> {
        match self {
            Conn::Udp(s, _) => {
                let mut buf = vec![0u8; 65536];
                let (n, _) = tokio::time::timeout(t, s.recv_from(&mut buf)).await.ok()?.ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Conn::Stream(s, buf) => {
                let deadline = tokio::time::Instant::now() + t;
                loop {
                    if let Frame::Complete(n) = frame_len(buf) {
                        let frame = buf[..n].to_vec();
                        buf.drain(..n);
                        return Some(frame);
                    }
                    let mut chunk = [0u8; 4096];
                    let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
                        .await
                        .ok()?
                        .ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.recv_timeout(RECV_TIMEOUT).await
    }

    /// Next parsed message, skipping nothing.
    pub async fn incoming(&mut self) -> Option<Incoming> {
        parse_incoming(&self.recv().await?)
    }

    /// Sends a request and returns the response with the same transaction id.
    pub async fn request(&mut self, m: &stun::message::Message) -> Response {
        self.send(&m.raw).await;
        loop {
            match self.incoming().await {
                Some(Incoming::Response(r)) if r.transaction_id == m.transaction_id => return r,
                Some(_) => continue,
                None => panic!("no response to {}", m.typ),
            }
        }
    }

    /// Sends a request built by `build`, answering a 401/438 challenge once.
    pub async fn transact(
        &mut self,
        client: &mut Client,
        build: impl Fn(&Client) -> stun::message::Message,
    ) -> Response {
        let r = self.request(&build(client)).await;
        if client.learn(&r) {
            return self.request(&build(client)).await;
        }
        r
    }
}

/// Allocates with `client` over `conn`; panics unless it succeeds.
pub async fn allocate(conn: &mut Conn, client: &mut Client) -> SocketAddr {
    let r = conn.transact(client, |c| c.allocate()).await;
    assert!(r.is_success(), "allocate failed: {:?}", r.error);
    r.relayed.expect("XOR-RELAYED-ADDRESS")
}
