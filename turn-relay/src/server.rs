//! The I/O driver: UDP, TCP and TLS listeners around the sans-IO core.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use proto::handoff::{HandoffReceiver, RelayedDatagram, TurnEnd};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::backend::{InProcessRelay, PeerPacket, RelayBackend, SocketRelay};
use crate::core::{CoreConfig, FiveTuple, Millis, Transmit, Transport, TurnCore};
use crate::metrics::{drop_reason, Metrics};
use crate::policy::PeerPolicy;
use crate::wire::{self, Frame};
use crate::{RelayConfig, TurnConfig, TurnError};

/// Stream connections open at once (TCP + TLS).
const MAX_STREAMS: usize = 16_384;
/// A stream with no inbound frame for this long is closed (allocations
/// need a Refresh every 10 minutes at most, so a live client is never idle
/// this long).
const STREAM_IDLE: Duration = Duration::from_secs(15 * 60);
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
const STREAM_QUEUE: usize = 512;
const PEER_QUEUE: usize = 8192;
const BATCH: usize = 64;
/// Kernel buffer size asked for the UDP listener (capped by the sysctls).
const LISTENER_BUFFER: usize = 4 << 20;

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Shared {
    core: Mutex<TurnCore>,
    /// Send side of the UDP listener: a clone of the socket used with plain
    /// non-blocking `sendto` (independent of tokio's readiness tracking).
    udp_tx: Option<std::net::UdpSocket>,
    streams: Mutex<HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>>,
    metrics: Metrics,
}

impl Shared {
    /// Runs `f` on the core and sends what it produced (outside the lock).
    fn with_core(&self, f: impl FnOnce(&mut TurnCore)) {
        let mut out: Vec<Transmit> = Vec::new();
        {
            let mut core = self.core.lock();
            f(&mut core);
            while let Some(t) = core.poll_transmit() {
                out.push(t);
            }
        }
        self.send_all(out);
    }

    fn send_all(&self, out: Vec<Transmit>) {
        if out.is_empty() {
            return;
        }
        let mut streams = None;
        for t in out {
            match t.to.transport {
                Transport::Udp => {
                    if let Some(udp) = &self.udp_tx {
                        if udp.send_to(&t.payload, t.to.client).is_err() {
                            self.metrics.drop(drop_reason::BACKEND);
                        }
                    }
                }
                Transport::Tcp | Transport::Tls => {
                    let map = streams.get_or_insert_with(|| self.streams.lock());
                    if let Some(tx) = map.get(&t.to) {
                        if tx.try_send(t.payload).is_err() {
                            self.metrics.drop(drop_reason::BACKEND);
                        }
                    }
                }
            }
        }
    }
}

/// A bound TURN server; [`TurnServer::run`] serves until shut down.
pub struct TurnServer {
    shared: Arc<Shared>,
    udp: Option<Arc<UdpSocket>>,
    tcp: Option<TcpListener>,
    tls: Option<(TcpListener, TlsAcceptor)>,
    peer_rx: Option<mpsc::Receiver<PeerPacket>>,
    from_sfu: Option<HandoffReceiver>,
    local_udp: Option<SocketAddr>,
    local_tcp: Option<SocketAddr>,
    local_tls: Option<SocketAddr>,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("udp", &self.local_udp)
            .field("tcp", &self.local_tcp)
            .field("tls", &self.local_tls)
            .finish()
    }
}

impl TurnServer {
    /// Validates `config`, binds the listeners, registers metrics into
    /// `metrics`. `handoff` is the TURN end of the in-process SFU hand-off
    /// (used with [`RelayConfig::InProcess`]).
    pub async fn bind(
        config: TurnConfig,
        handoff: Option<TurnEnd>,
        metrics: &prometheus::Registry,
    ) -> Result<TurnServer, TurnError> {
        config.validate()?;
        let m = Metrics::new(metrics)?;
        let tls_acceptor = match (&config.listen_tls, &config.tls_cert, &config.tls_key) {
            (Some(_), Some(c), Some(k)) => Some(TlsAcceptor::from(crate::tls::server_config(c, k)?)),
            _ => None,
        };
        let (udp, udp_tx) = match config.listen_udp {
            Some(a) => {
                let s = std::net::UdpSocket::bind(a).map_err(|e| TurnError::io(format!("UDP {a}"), e))?;
                s.set_nonblocking(true)
                    .map_err(|e| TurnError::io(format!("UDP {a}"), e))?;
                crate::backend::tune_udp_buffers(&s, LISTENER_BUFFER);
                let tx = s.try_clone().map_err(|e| TurnError::io(format!("UDP {a}"), e))?;
                let rx = UdpSocket::from_std(s).map_err(|e| TurnError::io(format!("UDP {a}"), e))?;
                (Some(Arc::new(rx)), Some(tx))
            }
            None => (None, None),
        };
        let tcp = match config.listen_tcp {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|e| TurnError::io(format!("TCP {a}"), e))?,
            ),
            None => None,
        };
        let tls = match (config.listen_tls, tls_acceptor) {
            (Some(a), Some(acc)) => Some((
                TcpListener::bind(a)
                    .await
                    .map_err(|e| TurnError::io(format!("TLS {a}"), e))?,
                acc,
            )),
            _ => None,
        };
        let local =
            |r: std::io::Result<SocketAddr>, what: &str| r.map_err(|e| TurnError::io(what.to_string(), e));
        let local_udp = udp
            .as_ref()
            .map(|s| local(s.local_addr(), "UDP local address"))
            .transpose()?;
        let local_tcp = tcp
            .as_ref()
            .map(|s| local(s.local_addr(), "TCP local address"))
            .transpose()?;
        let local_tls = tls
            .as_ref()
            .map(|(s, _)| local(s.local_addr(), "TLS local address"))
            .transpose()?;

        let mut seed = [0u8; 32];
        rand::rng().fill(&mut seed);
        let (mut peer_rx, mut from_sfu) = (None, None);
        let backend: Box<dyn RelayBackend> = match &config.relay {
            RelayConfig::InProcess { relay_ip, sfu_addrs } => {
                let to_sfu = handoff.map(|h| {
                    from_sfu = Some(h.from_sfu);
                    h.to_sfu
                });
                if to_sfu.is_none() {
                    tracing::warn!("in-process TURN relay without an SFU hand-off: relayed data is dropped");
                }
                Box::new(InProcessRelay::new(*relay_ip, sfu_addrs.clone(), to_sfu))
            }
            RelayConfig::Sockets {
                relay_ip,
                port_range,
                allow_peers,
            } => {
                if handoff.is_some() {
                    tracing::warn!("SFU hand-off ignored: the socket relay backend does not use it");
                }
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                peer_rx = Some(rx);
                let start = u16::from_be_bytes([seed[0], seed[1]]);
                let relay = SocketRelay::new(
                    *relay_ip,
                    port_range.clone(),
                    PeerPolicy::new(allow_peers.clone()),
                    tx,
                    start,
                );
                Box::new(match config.relay_public_ip {
                    Some(ip) => relay.with_public_ip(ip),
                    None => relay,
                })
            }
        };
        let core = TurnCore::new(
            CoreConfig::from_turn_config(&config),
            backend,
            m.clone(),
            seed,
            now_ms(),
        );
        tracing::info!(?local_udp, ?local_tcp, ?local_tls, realm = %config.realm, "TURN relay bound");
        Ok(TurnServer {
            shared: Arc::new(Shared {
                core: Mutex::new(core),
                udp_tx,
                streams: Mutex::new(HashMap::new()),
                metrics: m,
            }),
            udp,
            tcp,
            tls,
            peer_rx,
            from_sfu,
            local_udp,
            local_tcp,
            local_tls,
        })
    }

    pub fn local_udp_addr(&self) -> Option<SocketAddr> {
        self.local_udp
    }

    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        self.local_tcp
    }

    pub fn local_tls_addr(&self) -> Option<SocketAddr> {
        self.local_tls
    }

    /// Serves until `shutdown` is cancelled; then closes every listener,
    /// connection and relay socket.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), TurnError> {
        let TurnServer {
            shared,
            udp,
            tcp,
            tls,
            peer_rx,
            from_sfu,
            ..
        } = self;
        let mut tasks = JoinSet::new();
        let conns = Arc::new(Semaphore::new(MAX_STREAMS));
        if let Some(udp) = udp {
            tasks.spawn(udp_loop(Arc::clone(&shared), udp));
        }
        if let Some(l) = tcp {
            tasks.spawn(accept_loop(
                Arc::clone(&shared),
                l,
                None,
                Arc::clone(&conns),
                shutdown.clone(),
            ));
        }
        if let Some((l, acc)) = tls {
            tasks.spawn(accept_loop(
                Arc::clone(&shared),
                l,
                Some(acc),
                Arc::clone(&conns),
                shutdown.clone(),
            ));
        }
        if let Some(rx) = peer_rx {
            tasks.spawn(peer_loop(Arc::clone(&shared), rx));
        }
        if let Some(rx) = from_sfu {
            tasks.spawn(sfu_loop(Arc::clone(&shared), rx));
        }
        tasks.spawn(timer_loop(Arc::clone(&shared)));
        tokio::select! {
            _ = shutdown.cancelled() => {}
            Some(res) = tasks.join_next() => {
                if let Err(e) = res {
                    tracing::error!(error = %e, "TURN task ended unexpectedly");
                }
                shutdown.cancel();
            }
        }
        tasks.shutdown().await;
        // Release relay sockets and allocations.
        {
            let mut core = shared.core.lock();
            core.handle_timeout(u64::MAX);
        }
        tracing::info!("TURN relay stopped");
        Ok(())
    }
}

async fn udp_loop(shared: Arc<Shared>, udp: Arc<UdpSocket>) {
    let server = udp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut buf = vec![0u8; 65536];
    loop {
        match udp.recv_from(&mut buf).await {
            Ok((n, client)) => {
                let ft = FiveTuple {
                    transport: Transport::Udp,
                    client,
                    server,
                };
                let data = &buf[..n];
                shared.with_core(|c| c.handle_client(ft, data, now_ms()));
            }
            Err(e) => {
                // ICMP-induced errors (e.g. port unreachable) are per-packet; keep serving.
                tracing::trace!(error = %e, "UDP receive error");
            }
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    conns: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let server = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let ft = FiveTuple {
                        transport: Transport::Tcp,
                        client,
                        server,
                    };
                    serve_stream(shared, stream, ft, shutdown).await;
                }
                Some(acc) => {
                    let ft = FiveTuple {
                        transport: Transport::Tls,
                        client,
                        server,
                    };
                    match tokio::time::timeout(TLS_HANDSHAKE, acc.accept(stream)).await {
                        Ok(Ok(s)) => serve_stream(shared, s, ft, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, %client, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_stream<S>(shared: Arc<Shared>, stream: S, ft: FiveTuple, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    shared.streams.lock().insert(ft, tx);
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if wr.write_all(&first).await.is_err() {
                return;
            }
            // Coalesce what is already queued before flushing.
            while let Ok(more) = rx.try_recv() {
                if wr.write_all(&more).await.is_err() {
                    return;
                }
            }
            if wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    'conn: loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(STREAM_IDLE, rd.read(&mut chunk)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => n,
            },
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut off = 0;
        loop {
            match wire::frame_len(&buf[off..]) {
                Frame::Incomplete => break,
                Frame::Invalid => {
                    shared.metrics.drop(drop_reason::MALFORMED);
                    break 'conn;
                }
                Frame::Complete(len) => {
                    let frame = &buf[off..off + len];
                    shared.with_core(|c| c.handle_client(ft, frame, now_ms()));
                    off += len;
                }
            }
        }
        buf.drain(..off);
        if buf.len() > wire::MAX_FRAME {
            shared.metrics.drop(drop_reason::MALFORMED);
            break;
        }
    }
    shared.with_core(|c| c.handle_connection_closed(ft));
    shared.streams.lock().remove(&ft);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

async fn peer_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<PeerPacket>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        shared.with_core(|c| {
            let now = now_ms();
            for p in batch.drain(..) {
                c.handle_peer(p.relay, p.peer, &p.payload, now);
            }
        });
    }
}

async fn sfu_loop(shared: Arc<Shared>, mut rx: HandoffReceiver) {
    let mut batch: Vec<RelayedDatagram> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        shared.with_core(|c| {
            let now = now_ms();
            for d in batch.drain(..) {
                c.handle_peer(d.relay_addr, d.sfu_addr, &d.payload, now);
            }
        });
    }
    // The SFU is gone; keep serving TURN (nothing else to relay to).
    std::future::pending::<()>().await;
}

async fn timer_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        shared.with_core(|c| c.handle_timeout(now_ms()));
    }
}
