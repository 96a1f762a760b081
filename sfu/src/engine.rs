//! The media loop: the thin I/O shell around the sans-IO [`Node`]. One task
//! owns the UDP socket, the TURN hand-off and the node; it moves datagrams
//! between them, turns router [`Command`]s into node commands, and delivers
//! the node's events. Nothing on the packet path takes a lock.

use crate::endpoint::dtls::DtlsIdentity;
use crate::node::buffer::{PacketBuf, Transmit};
use crate::node::{CommandResult, Node, NodeCommand, NodeConfig, NodeError, NodeEvent};
use crate::routing::PathAddr;
use crate::turn_link::TurnLink;
use crate::{SfuError, Shared};
use proto::handoff::{HandoffReceiver, RelayedDatagram, SfuEnd};
use proto::sfu_api::{ParticipantInfo, WatchRequest};
use proto::sfu_ws::{IceCandidate, SfuServerMsg};
use proto::token::SfuRole;
use proto::ParticipantId;
use rand::SeedableRng;
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Errors the internal API maps to HTTP statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    NotFound(String),
    BadRequest(String),
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotFound(_) => ApiError::NotFound(e.to_string()),
            NodeError::BadRequest(_) => ApiError::BadRequest(e.to_string()),
        }
    }
}

/// What the routers ask of the media loop.
pub enum Command {
    /// A participant was admitted (slot reserved).
    Admit {
        pid: ParticipantId,
        role: SfuRole,
    },
    /// A WebSocket session attached to an admitted participant.
    Join {
        pid: ParticipantId,
        session: u64,
        tx: mpsc::Sender<SfuServerMsg>,
    },
    Offer {
        pid: ParticipantId,
        session: u64,
        sdp: String,
    },
    Candidate {
        pid: ParticipantId,
        session: u64,
        candidate: IceCandidate,
    },
    /// The WebSocket session ended.
    Leave {
        pid: ParticipantId,
        session: u64,
        reason: &'static str,
    },
    Kick {
        pid: ParticipantId,
        reply: oneshot::Sender<bool>,
    },
    Link {
        a: ParticipantId,
        b: ParticipantId,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Unlink {
        a: ParticipantId,
        b: ParticipantId,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Watch {
        req: WatchRequest,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    KeyframeInterval {
        interval: Option<Duration>,
    },
    HoldVideo {
        pid: ParticipantId,
        held: bool,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    List {
        reply: oneshot::Sender<Vec<ParticipantInfo>>,
    },
    /// Latest keyframe as WebP, and its age.
    Snapshot {
        pid: ParticipantId,
        reply: oneshot::Sender<Option<(Vec<u8>, Duration)>>,
    },
}

/// Binds the node's one UDP socket (non-blocking, large buffers).
pub fn bind_media_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, SfuError> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 * 1024 * 1024);
    let _ = s.set_send_buffer_size(4 * 1024 * 1024);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

pub(crate) struct Engine {
    shared: Arc<Shared>,
    socket: Option<std::net::UdpSocket>,
    handoff: Option<SfuEnd>,
    commands: mpsc::Receiver<Command>,
}

/// The sockets and the buffers in flight.
struct Io {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    /// The in-process TURN relay, when there is one.
    turn: Option<TurnLink>,
    /// One receive buffer per slot of a `recvmmsg` batch.
    recv: Vec<PacketBuf>,
    metas: Vec<quinn_udp::RecvMeta>,
    /// Datagrams the node produced this turn, sent in one batch.
    out: Vec<Transmit>,
    /// Contiguous segments for one GSO send.
    gso: Vec<u8>,
    metrics: crate::metrics::Metrics,
}

impl Engine {
    pub(crate) fn new(
        shared: Arc<Shared>,
        socket: std::net::UdpSocket,
        handoff: Option<SfuEnd>,
        commands: mpsc::Receiver<Command>,
    ) -> Result<Self, SfuError> {
        Ok(Self {
            shared,
            socket: Some(socket),
            handoff,
            commands,
        })
    }

    fn node(&self) -> Result<Node, SfuError> {
        let c = &self.shared.config;
        let config = NodeConfig {
            advertised: self.shared.advertised,
            admit_ttl: c.admit_ttl,
            connect_timeout: c.connect_timeout,
            dtls_timeout: c.dtls_timeout,
            keyframe_request_min_interval: c.keyframe_request_min_interval,
            unknown_rate_per_sec: c.unknown_rate_per_sec,
            unknown_burst: c.unknown_burst,
            max_datagram_bytes: c.max_datagram_bytes,
        };
        let identity =
            DtlsIdentity::generate().map_err(|e| SfuError::Config(format!("DTLS certificate: {e}")))?;
        let rng = Box::new(rand::rngs::StdRng::from_os_rng());
        let metrics = self.shared.metrics.clone();
        Ok(Node::new(
            config,
            Arc::new(identity),
            rng,
            metrics,
            SystemTime::now(),
            Instant::now(),
        ))
    }

    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> Result<(), SfuError> {
        let socket = self.socket.take().ok_or(SfuError::AlreadyRunning)?;
        let socket = UdpSocket::from_std(socket)?;
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        // quinn-udp turns GRO on; a coalesced read needs buffers of 64 KiB,
        // while the node receives each datagram into its own small buffer
        // and forwards it from there. Where turning it off fails, coalesced
        // reads are still split (with a copy) below.
        if let Err(e) =
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::UdpGroSegment, &false)
        {
            debug!(error = %e, "could not turn UDP GRO off");
        }
        let mut node = self.node()?;
        let (turn, mut from_turn) = match self.handoff.take() {
            Some(end) => {
                let (link, rx) = TurnLink::new(end, self.shared.metrics.clone());
                (Some(link), Some(rx))
            }
            None => (None, None),
        };
        let mut io = Io {
            socket,
            state,
            turn,
            recv: (0..quinn_udp::BATCH_SIZE).map(|_| node.buffer()).collect(),
            metas: vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE],
            out: Vec::with_capacity(1024),
            gso: Vec::with_capacity(64 * 1024),
            metrics: self.shared.metrics.clone(),
        };
        let mut clients: HashMap<ParticipantId, (u64, mpsc::Sender<SfuServerMsg>)> = HashMap::new();
        let mut relayed: Vec<RelayedDatagram> = Vec::with_capacity(64);
        info!(media = %self.shared.advertised, "sfu media loop running");
        // One timer, moved only when the node's deadline moves: a new
        // `Sleep` per wake-up would register with the timer wheel each time.
        let mut deadline = node.poll_timeout();
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
        tokio::pin!(sleep);
        loop {
            let next = node.poll_timeout();
            if next != deadline {
                deadline = next;
                sleep.as_mut().reset(tokio::time::Instant::from_std(deadline));
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = io.socket.readable() => {
                    if r.is_ok() {
                        io.read_socket(&mut node);
                    }
                }
                n = recv_turn(&mut from_turn, &mut relayed) => {
                    if n == 0 {
                        from_turn = None; // TURN side gone: stop polling it.
                    }
                    let now = Instant::now();
                    if let Some(link) = io.turn.as_mut() {
                        for d in relayed.drain(..) {
                            let buf = link.adopt(&mut node, d.payload);
                            node.handle_datagram(PathAddr::Turn(d.relay_addr), buf, now);
                        }
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => command(&mut node, &mut clients, cmd, Instant::now()),
                    None => break,
                },
                _ = &mut sleep => node.handle_timeout(Instant::now()),
            }
            self.deliver_events(&mut node, &mut clients);
            io.flush(&mut node, self.shared.advertised).await;
        }
        node.close_all(Instant::now());
        self.deliver_events(&mut node, &mut clients);
        io.flush(&mut node, self.shared.advertised).await;
        Ok(())
    }

    fn deliver_events(
        &self,
        node: &mut Node,
        clients: &mut HashMap<ParticipantId, (u64, mpsc::Sender<SfuServerMsg>)>,
    ) {
        while let Some(ev) = node.poll_event() {
            match ev {
                NodeEvent::ToClient { pid, session, msg } => {
                    if let Some((s, tx)) = clients.get(&pid) {
                        if *s == session {
                            // A full queue means a stuck client: drop the message rather than block media.
                            let _ = tx.try_send(msg);
                        }
                    }
                }
                NodeEvent::Sfu(e) => {
                    let _ = self.shared.events.send(e);
                }
                NodeEvent::Removed { pid, reason } => {
                    clients.remove(&pid);
                    let mut adm = self.shared.admissions();
                    adm.remove(&pid);
                    self.shared.metrics.participants.set(adm.len() as i64);
                    debug!(participant = %pid, reason, "participant removed");
                }
            }
        }
    }
}

/// Hands a router command to the node and answers its reply channel.
fn command(
    node: &mut Node,
    clients: &mut HashMap<ParticipantId, (u64, mpsc::Sender<SfuServerMsg>)>,
    cmd: Command,
    now: Instant,
) {
    let run = |node: &mut Node, c: NodeCommand| node.handle_command(c, now).map_err(ApiError::from);
    match cmd {
        Command::Admit { pid, role } => drop(run(node, NodeCommand::Admit { pid, role })),
        Command::Join { pid, session, tx } => {
            if run(
                node,
                NodeCommand::Join {
                    pid: pid.clone(),
                    session,
                },
            )
            .is_ok()
            {
                clients.entry(pid).or_insert((session, tx));
            }
        }
        Command::Offer { pid, session, sdp } => drop(run(node, NodeCommand::Offer { pid, session, sdp })),
        Command::Candidate {
            pid,
            session,
            candidate,
        } => {
            drop(run(
                node,
                NodeCommand::Candidate {
                    pid,
                    session,
                    candidate,
                },
            ));
        }
        Command::Leave { pid, session, reason } => {
            drop(run(node, NodeCommand::Leave { pid, session, reason }))
        }
        Command::Kick { pid, reply } => {
            let found = matches!(
                run(node, NodeCommand::Kick { pid }),
                Ok(CommandResult::Found(true))
            );
            let _ = reply.send(found);
        }
        Command::Link { a, b, reply } => {
            let _ = reply.send(run(node, NodeCommand::Link { a, b }).map(drop));
        }
        Command::Unlink { a, b, reply } => {
            let _ = reply.send(run(node, NodeCommand::Unlink { a, b }).map(drop));
        }
        Command::Watch { req, reply } => {
            let _ = reply.send(run(node, NodeCommand::Watch(req)).map(drop));
        }
        Command::KeyframeInterval { interval } => drop(run(node, NodeCommand::KeyframeInterval(interval))),
        Command::HoldVideo { pid, held, reply } => {
            let _ = reply.send(run(node, NodeCommand::HoldVideo { pid, held }).map(drop));
        }
        Command::List { reply } => {
            let _ = reply.send(node.list(now));
        }
        Command::Snapshot { pid, reply } => {
            let _ = reply.send(node.snapshot(&pid, now));
        }
    }
}

async fn recv_turn(rx: &mut Option<HandoffReceiver>, buf: &mut Vec<RelayedDatagram>) -> usize {
    match rx {
        Some(rx) => rx.recv_many(buf, 64).await,
        None => std::future::pending().await,
    }
}

impl Io {
    /// Reads every datagram waiting (batches of `recvmmsg`) into the node.
    fn read_socket(&mut self, node: &mut Node) {
        loop {
            let r = {
                let mut bufs = self.recv.iter_mut();
                let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] = std::array::from_fn(|_| {
                    let b = bufs.next().expect("one receive buffer per batch slot");
                    IoSliceMut::new(b.receive_space())
                });
                let (socket, state, metas) = (&self.socket, &self.state, &mut self.metas);
                socket.try_io(Interest::READABLE, || {
                    state.recv(socket.into(), &mut slices, metas)
                })
            };
            let n = match r {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(error = %e, "udp recv");
                    return;
                }
            };
            let now = Instant::now();
            for i in 0..n {
                let meta = self.metas[i];
                let path = PathAddr::Udp(meta.addr);
                let stride = meta.stride.max(1);
                if meta.len <= stride {
                    // One datagram: the buffer itself goes to the node.
                    let mut buf = std::mem::replace(&mut self.recv[i], node.buffer());
                    buf.set_received(meta.len);
                    node.handle_datagram(path, buf, now);
                } else {
                    // Coalesced by GRO: each segment gets its own buffer.
                    let data = &self.recv[i].receive_space()[..meta.len];
                    let segments: Vec<PacketBuf> = data.chunks(stride).map(PacketBuf::from_slice).collect();
                    for seg in segments {
                        node.handle_datagram(path, seg, now);
                    }
                }
            }
            if n == 0 {
                return;
            }
        }
    }

    /// Sends what the node produced; consecutive equal-size datagrams to
    /// one destination go out as one GSO batch where the kernel supports it.
    async fn flush(&mut self, node: &mut Node, local: SocketAddr) {
        while let Some(t) = node.poll_transmit() {
            match t.path {
                PathAddr::Udp(_) => self.out.push(t),
                PathAddr::Turn(relay_addr) => match self.turn.as_mut() {
                    Some(link) => link.queue(relay_addr, local, t.buf),
                    None => {
                        self.metrics.drop("write_failed");
                        node.recycle(t.buf);
                    }
                },
            }
        }
        if let Some(link) = self.turn.as_mut() {
            link.flush(node);
        }
        if self.out.is_empty() {
            return;
        }
        let max_segments = self.state.max_gso_segments().max(1);
        let mut i = 0;
        while i < self.out.len() {
            let dest = self.out[i].path.addr();
            let seg = self.out[i].buf.len();
            let mut j = i + 1;
            if max_segments > 1 {
                while j < self.out.len()
                    && j - i < max_segments
                    && self.out[j].path.addr() == dest
                    && self.out[j].buf.len() <= seg
                {
                    let last = self.out[j].buf.len() < seg;
                    j += 1;
                    if last {
                        break;
                    }
                }
            }
            let contents: &[u8] = if j - i == 1 {
                self.out[i].buf.as_slice()
            } else {
                self.gso.clear();
                for t in &self.out[i..j] {
                    self.gso.extend_from_slice(t.buf.as_slice());
                }
                &self.gso
            };
            let transmit = quinn_udp::Transmit {
                destination: dest,
                ecn: None,
                contents,
                segment_size: (j - i > 1).then_some(seg),
                src_ip: None,
            };
            let mut ok = self.socket.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            });
            if matches!(&ok, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                && self.socket.writable().await.is_ok()
            {
                ok = self.socket.try_io(Interest::WRITABLE, || {
                    self.state.try_send((&self.socket).into(), &transmit)
                });
            }
            if ok.is_err() {
                debug!("udp send failed");
            }
            i = j;
        }
        for t in self.out.drain(..) {
            node.recycle(t.buf);
        }
    }
}
