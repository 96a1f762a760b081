//! The server: binds the listeners, builds one core per worker, starts the
//! workers and the TCP/TLS accept loops, and stops them all on shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use proto::handoff::{HandoffReceiver, SpareBuffers, TurnEnd};
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::core::{CoreConfig, CoreShared, RelaySpace, TurnCore};
use crate::metrics::Metrics;
use crate::policy::PeerPolicy;
use crate::relay::{PeerRules, PortPool, Share, VIRTUAL_PORTS};
use crate::udp::{tune_udp_buffers, LISTENER_BUFFER};
use crate::worker::{now_ms, NewStream, RelayIo, Worker};
use crate::{RelayConfig, TurnConfig, TurnError};

/// Stream connections open at once (TCP + TLS).
const MAX_STREAMS: usize = 16_384;

/// A bound TURN server; [`TurnServer::run`] serves until shut down.
pub struct TurnServer {
    workers: Vec<Worker>,
    /// Hands accepted connections to the workers (round robin).
    streams: Vec<mpsc::UnboundedSender<NewStream>>,
    tcp: Option<TcpListener>,
    tls: Option<(TcpListener, TlsAcceptor)>,
    local_udp: Option<SocketAddr>,
    local_tcp: Option<SocketAddr>,
    local_tls: Option<SocketAddr>,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("workers", &self.workers.len())
            .field("udp", &self.local_udp)
            .field("tcp", &self.local_tcp)
            .field("tls", &self.local_tls)
            .finish()
    }
}

/// Binds one UDP socket per worker on `addr`; with several workers they
/// share the port through `SO_REUSEPORT`, and the kernel hashes each
/// client's 5-tuple onto one of them.
fn bind_udp(addr: SocketAddr, workers: usize) -> Result<Vec<std::net::UdpSocket>, TurnError> {
    let err = |e| TurnError::io(format!("UDP {addr}"), e);
    let mut out: Vec<std::net::UdpSocket> = Vec::with_capacity(workers);
    let mut at = addr;
    for _ in 0..workers {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(at),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(err)?;
        if workers > 1 {
            s.set_reuse_port(true).map_err(err)?;
        }
        if at.is_ipv6() {
            // As std does: an IPv6 listener takes IPv4 too unless the OS says otherwise.
            let _ = s.set_only_v6(false);
        }
        s.bind(&at.into()).map_err(err)?;
        let s: std::net::UdpSocket = s.into();
        tune_udp_buffers(&s, LISTENER_BUFFER);
        // Port 0: the others join the port the first one got.
        at = s.local_addr().map_err(err)?;
        out.push(s);
    }
    Ok(out)
}

/// Where relay addresses come from and go to, for each worker.
struct RelayPlan {
    announced: IpAddr,
    ports: std::ops::RangeInclusive<u16>,
    peers: PeerRules,
    bind_ip: Option<IpAddr>,
}

impl RelayPlan {
    fn of(config: &TurnConfig) -> Self {
        match &config.relay {
            RelayConfig::InProcess { relay_ip, sfu_addrs } => RelayPlan {
                announced: *relay_ip,
                ports: VIRTUAL_PORTS,
                peers: PeerRules::Sfu(sfu_addrs.clone()),
                bind_ip: None,
            },
            RelayConfig::Sockets {
                relay_ip,
                port_range,
                allow_peers,
            } => {
                let announced = config.relay_public_ip.unwrap_or(*relay_ip);
                RelayPlan {
                    announced,
                    ports: port_range.clone(),
                    peers: PeerRules::Policy {
                        policy: PeerPolicy::new(allow_peers.clone()),
                        own: vec![*relay_ip, announced],
                    },
                    bind_ip: Some(*relay_ip),
                }
            }
        }
    }
}

impl TurnServer {
    /// Validates `config`, binds the listeners, registers metrics into
    /// `metrics`. `handoff` is the TURN end of the in-process SFU hand-off
    /// (used with [`RelayConfig::InProcess`], which runs one worker).
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
        let in_process = matches!(config.relay, RelayConfig::InProcess { .. });
        let n = if in_process { 1 } else { config.workers.max(1) };
        let mut udp: Vec<Option<std::net::UdpSocket>> = match config.listen_udp {
            Some(a) => bind_udp(a, n)?.into_iter().map(Some).collect(),
            None => (0..n).map(|_| None).collect(),
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
            .first()
            .and_then(|s| s.as_ref())
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

        let mut rng = rand::rng();
        let shared = CoreShared::new(m.clone(), rng.random());
        let plan = RelayPlan::of(&config);
        let (mut to_sfu, mut from_sfu): (_, Option<HandoffReceiver>) = (None, None);
        let mut spares = SpareBuffers::default();
        match (&config.relay, handoff) {
            (RelayConfig::InProcess { .. }, Some(h)) => {
                to_sfu = Some(h.to_sfu);
                from_sfu = Some(h.from_sfu);
                spares = h.spares;
            }
            (RelayConfig::InProcess { .. }, None) => {
                tracing::warn!("in-process TURN relay without an SFU hand-off: relayed data is dropped")
            }
            (RelayConfig::Sockets { .. }, Some(_)) => {
                tracing::warn!("SFU hand-off ignored: the socket relay backend does not use it")
            }
            (RelayConfig::Sockets { .. }, None) => {}
        }
        let mut workers = Vec::with_capacity(n);
        let mut streams = Vec::with_capacity(n);
        for index in 0..n {
            let share = Share {
                index: index as u16,
                count: n as u16,
            };
            let space = RelaySpace {
                ip: plan.announced,
                ports: PortPool::new(&plan.ports, share, rng.random()),
                peers: plan.peers.clone(),
            };
            let core = TurnCore::new(
                CoreConfig::from_turn_config(&config),
                space,
                shared.clone(),
                rng.random(),
                now_ms(),
            );
            let relay_io = match plan.bind_ip {
                Some(bind_ip) => RelayIo::Sockets { bind_ip },
                None => RelayIo::InProcess {
                    to_sfu: to_sfu.take(),
                    spares: spares.clone(),
                },
            };
            let (tx, rx) = mpsc::unbounded_channel();
            streams.push(tx);
            workers.push(Worker {
                index,
                core,
                udp: udp.get_mut(index).and_then(Option::take),
                relay_io,
                from_sfu: from_sfu.take(),
                streams: rx,
                metrics: m.clone(),
            });
        }
        tracing::info!(?local_udp, ?local_tcp, ?local_tls, workers = n, realm = %config.realm, "TURN relay bound");
        Ok(TurnServer {
            workers,
            streams,
            tcp,
            tls,
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
            workers,
            streams,
            tcp,
            tls,
            ..
        } = self;
        // Cancelled on shutdown, and by a worker that stops on its own.
        let stop = shutdown.child_token();
        let mut threads = Vec::with_capacity(workers.len());
        for w in workers {
            match w.spawn(stop.clone()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.cancel();
                    join_workers(threads).await;
                    return Err(TurnError::io("TURN worker thread", e));
                }
            }
        }
        let mut tasks = JoinSet::new();
        let conns = Arc::new(Semaphore::new(MAX_STREAMS));
        let streams = Arc::new(streams);
        if let Some(l) = tcp {
            tasks.spawn(accept_loop(l, None, Arc::clone(&conns), Arc::clone(&streams)));
        }
        if let Some((l, acc)) = tls {
            tasks.spawn(accept_loop(
                l,
                Some(acc),
                Arc::clone(&conns),
                Arc::clone(&streams),
            ));
        }
        tokio::select! {
            _ = stop.cancelled() => {
                if !shutdown.is_cancelled() {
                    tracing::error!("a TURN worker stopped unexpectedly");
                }
            }
            Some(res) = tasks.join_next() => {
                if let Err(e) = res {
                    tracing::error!(error = %e, "TURN accept loop ended unexpectedly");
                }
            }
        }
        stop.cancel();
        tasks.shutdown().await;
        join_workers(threads).await;
        tracing::info!("TURN relay stopped");
        Ok(())
    }
}

/// Waits for the worker threads to finish (each releases its allocations).
async fn join_workers(threads: Vec<std::thread::JoinHandle<()>>) {
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a TURN worker panicked");
            }
        }
    })
    .await;
    if joined.is_err() {
        tracing::error!("joining the TURN workers failed");
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    conns: Arc<Semaphore>,
    workers: Arc<Vec<mpsc::UnboundedSender<NewStream>>>,
) {
    let mut next = 0usize;
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
        let (Ok(server), Ok(stream)) = (stream.local_addr(), stream.into_std()) else {
            continue;
        };
        let Some(worker) = workers.get(next % workers.len().max(1)) else {
            return;
        };
        next = next.wrapping_add(1);
        let new = NewStream {
            stream,
            client,
            server,
            tls: tls.clone(),
            permit,
        };
        if worker.send(new).is_err() {
            // The worker is gone: the server is stopping.
            return;
        }
    }
}
