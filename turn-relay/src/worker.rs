//! One worker: a thread with its own single-threaded runtime that owns a
//! share of the allocations — its own [`TurnCore`], its own `SO_REUSEPORT`
//! UDP listen socket (the kernel keeps a client's 5-tuple on one socket),
//! the TCP/TLS connections assigned to it at accept, and the relay sockets
//! of its allocations. Nothing on the per-datagram path is shared with
//! another thread, so nothing is locked: the tasks of a worker share its
//! state through an `Rc<RefCell<_>>` and never hold it across an `.await`.
//!
//! Each task turns readiness into core inputs, carries out the commands the
//! core returns, and flushes the batched sends (GSO) before it waits again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::handoff::{DatagramBuf, HandoffReceiver, HandoffSender, RelayedDatagram, SpareBuffers};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio::task::{JoinHandle, LocalSet};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::core::{
    ClientAddr, Command, FiveTuple, Millis, PeerAddr, RelayAddr, ToClient, ToPeer, Transport, TurnCore,
};
use crate::metrics::{drop_reason, Metrics};
use crate::udp::{tune_udp_buffers, Received, RecvBufs, SendBatch, UdpIo, RELAY_SOCKET_BUFFER};
use crate::wire::{self, Frame};

/// A stream with no inbound frame for this long is closed (allocations
/// need a Refresh every 10 minutes at most, so a live client is never idle
/// this long).
const STREAM_IDLE: Duration = Duration::from_secs(15 * 60);
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// Bytes queued towards one stream client before more frames are dropped.
const STREAM_QUEUE_BYTES: usize = 1 << 20;
/// Batches one task reads before it lets the worker's other tasks run.
const BATCHES_PER_WAKE: usize = 16;
/// Datagrams taken from the SFU hand-off at once.
const HANDOFF_BATCH: usize = 64;
/// Hand-off buffers a worker keeps for itself; beyond twice this many it
/// passes the rest to the SFU through the spares.
const FREE_KEEP: usize = 128;

pub(crate) fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where relayed datagrams to peers go.
pub(crate) enum RelayIo {
    /// One UDP socket per relay address, bound on `bind_ip`.
    Sockets { bind_ip: IpAddr },
    /// Handed to the SFU in the same process (`None`: no SFU wired,
    /// dropped), in the buffers they arrived in; `spares` keeps the two
    /// sides' buffer pools level.
    InProcess {
        to_sfu: Option<HandoffSender>,
        spares: SpareBuffers,
    },
}

/// A TCP connection accepted for this worker.
pub(crate) struct NewStream {
    pub stream: std::net::TcpStream,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Present for the TLS listener: the handshake runs on the worker.
    pub tls: Option<TlsAcceptor>,
    /// Holds one of the server's stream slots while the connection lives.
    pub permit: OwnedSemaphorePermit,
}

/// What a worker thread starts from.
pub(crate) struct Worker {
    pub index: usize,
    pub core: TurnCore,
    pub udp: Option<std::net::UdpSocket>,
    pub relay_io: RelayIo,
    pub from_sfu: Option<HandoffReceiver>,
    pub streams: mpsc::UnboundedReceiver<NewStream>,
    pub metrics: Metrics,
}

impl Worker {
    /// Starts the worker's thread, which ends after `stop` (with every relay
    /// address released). A worker that ends on its own cancels `stop`, so
    /// the server stops rather than serve a share of its clients no more.
    pub(crate) fn spawn(self, stop: CancellationToken) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("turn-worker-{}", self.index))
            .spawn(move || {
                let _stop_all = stop.clone().drop_guard();
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => LocalSet::new().block_on(&rt, self.run(stop)),
                    Err(e) => tracing::error!(error = %e, "TURN worker runtime"),
                }
            })
    }

    async fn run(self, shutdown: CancellationToken) {
        let Worker {
            index,
            core,
            udp,
            relay_io,
            from_sfu,
            mut streams,
            metrics,
        } = self;
        let in_process = matches!(relay_io, RelayIo::InProcess { .. });
        // In process, each datagram gets a slot of its own in the hand-off
        // layout, so that a slot can go to the SFU as it is.
        let udp = match udp.map(|s| UdpIo::new(s, !in_process)).transpose() {
            Ok(u) => u.map(Rc::new),
            Err(e) => {
                tracing::error!(error = %e, worker = index, "TURN UDP listener");
                return;
            }
        };
        let server = udp
            .as_ref()
            .and_then(|u| u.local_addr().ok())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let bufs = Rc::new(RefCell::new(if in_process {
            RecvBufs::for_handoff()
        } else {
            RecvBufs::new()
        }));
        let state = Rc::new_cyclic(|me| {
            RefCell::new(State {
                core,
                udp: udp.clone(),
                relays: HashMap::new(),
                relay_io,
                streams: HashMap::new(),
                to_clients: SendBatch::new(),
                to_peers: SendBatch::new(),
                to_sfu: Vec::with_capacity(HANDOFF_BATCH),
                free: Vec::new(),
                moving: Vec::new(),
                metrics,
                bufs: Rc::clone(&bufs),
                me: me.clone(),
            })
        });
        let mut tasks = Vec::new();
        if let Some(udp) = udp {
            tasks.push(tokio::task::spawn_local(listen_loop(
                Rc::clone(&state),
                udp,
                server,
                Rc::clone(&bufs),
            )));
        }
        if let Some(rx) = from_sfu {
            tasks.push(tokio::task::spawn_local(sfu_loop(Rc::clone(&state), rx)));
        }
        tasks.push(tokio::task::spawn_local(timer_loop(Rc::clone(&state))));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                s = streams.recv() => match s {
                    Some(s) => {
                        tokio::task::spawn_local(serve_new_stream(Rc::clone(&state), s, shutdown.clone()));
                    }
                    None => {
                        shutdown.cancelled().await;
                        break;
                    }
                },
            }
        }
        for t in tasks {
            t.abort();
        }
        let mut st = state.borrow_mut();
        st.core.handle_timeout(u64::MAX);
        st.drain(u64::MAX);
        st.flush();
        for (_, r) in st.relays.drain() {
            r.reader.abort();
        }
    }
}

/// An open relay socket and the task reading it.
struct RelaySocket {
    io: Rc<UdpIo>,
    reader: JoinHandle<()>,
}

/// A worker's state, shared by its tasks on one thread.
struct State {
    core: TurnCore,
    /// This worker's UDP listen socket (sends to UDP clients).
    udp: Option<Rc<UdpIo>>,
    relays: HashMap<RelayAddr, RelaySocket>,
    relay_io: RelayIo,
    /// Output buffers of the stream clients on this worker.
    streams: HashMap<FiveTuple, Rc<StreamOut>>,
    to_clients: SendBatch<()>,
    to_peers: SendBatch<RelayAddr>,
    /// Datagrams for the SFU, handed over together at the next flush.
    to_sfu: Vec<RelayedDatagram>,
    /// Empty hand-off buffers (come back from the SFU with its datagrams).
    free: Vec<Vec<u8>>,
    /// Scratch list for passing buffers to the spares.
    moving: Vec<Vec<u8>>,
    metrics: Metrics,
    /// Receive slots shared by the worker's sockets (one task reads at a time).
    bufs: Rc<RefCell<RecvBufs>>,
    /// Itself, for the reader tasks of relay sockets it opens.
    me: Weak<RefCell<State>>,
}

impl State {
    /// A frame from a stream client.
    fn client_input(&mut self, ft: FiveTuple, data: &[u8], now: Millis) {
        if let Some(t) = self.core.handle_client(ft, data, now) {
            self.queue_to_peer(t, data);
        }
        self.drain(now);
    }

    /// A datagram from a UDP client, in a receive slot. What goes to the
    /// SFU leaves in its slot's buffer (no copy), another takes its place.
    fn client_datagram(&mut self, ft: FiveTuple, bufs: &mut RecvBufs, r: Received, now: Millis) {
        if let Some(t) = self.core.handle_client(ft, bufs.bytes(&r), now) {
            if r.alone && bufs.is_handoff() && matches!(self.relay_io, RelayIo::InProcess { .. }) {
                let data = bufs.take(r.slot, self.spare_buffer());
                let payload = r.range.start + t.payload.start..r.range.start + t.payload.end;
                self.to_sfu.push(RelayedDatagram {
                    relay_addr: t.relay.0,
                    sfu_addr: t.peer.0,
                    payload: DatagramBuf::from_parts(data, payload),
                });
            } else {
                self.queue_to_peer(t, bufs.bytes(&r));
            }
        }
        self.drain(now);
    }

    /// An empty hand-off buffer: one the SFU sent back, or a new one.
    fn spare_buffer(&mut self) -> Vec<u8> {
        if self.free.is_empty() {
            if let RelayIo::InProcess { spares, .. } = &self.relay_io {
                spares.take(FREE_KEEP, &mut self.free);
            }
        }
        self.free
            .pop()
            .unwrap_or_else(|| vec![0; proto::handoff::BUFFER_LEN])
    }

    /// Passes hand-off buffers beyond what this worker needs to the SFU.
    fn level_spares(&mut self) {
        if self.free.len() > 2 * FREE_KEEP {
            if let RelayIo::InProcess { spares, .. } = &self.relay_io {
                self.moving.extend(self.free.drain(FREE_KEEP..));
                spares.put(&mut self.moving);
            }
        }
    }

    /// A datagram for relay address `relay` from `peer`.
    fn peer_input(&mut self, relay: RelayAddr, peer: PeerAddr, data: &[u8], now: Millis) {
        if let Some(t) = self.core.handle_peer(relay, peer, data, now) {
            self.queue_to_client(t, data);
        }
        self.drain(now);
    }

    fn queue_to_peer(&mut self, t: ToPeer, data: &[u8]) {
        let Some(payload) = data.get(t.payload.clone()) else {
            return;
        };
        match &self.relay_io {
            RelayIo::Sockets { .. } => {
                self.to_peers
                    .push_with(t.relay, t.peer.0, |b| b.extend_from_slice(payload));
            }
            RelayIo::InProcess { .. } => {
                // A stream frame (or a coalesced read): copied once into a
                // hand-off buffer.
                let payload = DatagramBuf::copy_into(self.spare_buffer(), payload);
                self.to_sfu.push(RelayedDatagram {
                    relay_addr: t.relay.0,
                    sfu_addr: t.peer.0,
                    payload,
                });
            }
        }
    }

    fn queue_to_client(&mut self, t: ToClient, data: &[u8]) {
        match t.to.transport {
            Transport::Udp => self
                .to_clients
                .push_with((), t.to.client.0, |b| t.encode_into(data, b)),
            Transport::Tcp | Transport::Tls => self.send_to_stream(&t.to, |b| t.encode_into(data, b)),
        }
    }

    /// Appends a frame to a stream client's output buffer.
    fn send_to_stream(&self, to: &FiveTuple, write: impl FnOnce(&mut Vec<u8>)) {
        if let Some(out) = self.streams.get(to) {
            if !out.push_with(write) {
                self.metrics.drop(drop_reason::BACKEND);
            }
        }
    }

    /// Carries out the core's commands.
    fn drain(&mut self, now: Millis) {
        while let Some(cmd) = self.core.poll_command() {
            match cmd {
                Command::OpenRelay { relay } => {
                    let opened = self.open_relay(relay);
                    self.core.handle_relay_opened(relay, opened, now);
                }
                Command::FreeRelay { relay } => {
                    if let Some(r) = self.relays.remove(&relay) {
                        r.reader.abort();
                    }
                }
                Command::SendToClient { to, payload } => match to.transport {
                    Transport::Udp => self
                        .to_clients
                        .push_with((), to.client.0, |b| b.extend_from_slice(&payload)),
                    Transport::Tcp | Transport::Tls => {
                        self.send_to_stream(&to, |b| b.extend_from_slice(&payload))
                    }
                },
                // The core checks permissions and channels itself; the
                // shell has nothing to install.
                Command::AddPermission { .. }
                | Command::RemovePermission { .. }
                | Command::BindChannel { .. }
                | Command::UnbindChannel { .. } => {}
            }
        }
    }

    /// Binds the relay socket of `relay` and starts its reader (socket
    /// relay); nothing to do for a virtual address.
    fn open_relay(&mut self, relay: RelayAddr) -> bool {
        let RelayIo::Sockets { bind_ip } = self.relay_io else {
            return true;
        };
        let Some(me) = self.me.upgrade() else {
            return false;
        };
        let io = match std::net::UdpSocket::bind(SocketAddr::new(bind_ip, relay.port())) {
            Ok(s) => {
                tune_udp_buffers(&s, RELAY_SOCKET_BUFFER);
                match UdpIo::new(s, true) {
                    Ok(io) => Rc::new(io),
                    Err(e) => {
                        tracing::debug!(error = %e, %relay, "relay socket setup failed");
                        return false;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, %relay, "relay port not available");
                return false;
            }
        };
        let reader = tokio::task::spawn_local(relay_loop(me, Rc::clone(&io), relay, Rc::clone(&self.bufs)));
        self.relays.insert(relay, RelaySocket { io, reader });
        true
    }

    /// Sends everything queued.
    fn flush(&mut self) {
        let State {
            udp,
            relays,
            to_clients,
            to_peers,
            to_sfu,
            relay_io,
            metrics,
            ..
        } = self;
        let mut failed = 0;
        if !to_clients.is_empty() {
            let udp: Option<&UdpIo> = udp.as_deref();
            failed += to_clients.flush(move |()| udp);
        }
        if !to_peers.is_empty() {
            let relays: &HashMap<RelayAddr, RelaySocket> = relays;
            failed += to_peers.flush(move |relay| relays.get(&relay).map(|r| &*r.io));
        }
        if !to_sfu.is_empty() {
            failed += match relay_io {
                RelayIo::InProcess { to_sfu: Some(tx), .. } => tx.send_batch(to_sfu.drain(..)).dropped(),
                _ => {
                    let n = to_sfu.len() as u64;
                    to_sfu.clear();
                    n
                }
            };
        }
        if failed > 0 {
            metrics
                .dropped
                .with_label_values(&[drop_reason::BACKEND])
                .inc_by(failed);
        }
    }
}

fn is_icmp_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    )
}

/// Reads batches from `io` and feeds each datagram to `input`; returns
/// when the socket fails for good.
async fn read_batches(
    state: &Rc<RefCell<State>>,
    io: &UdpIo,
    bufs: &Rc<RefCell<RecvBufs>>,
    mut input: impl FnMut(&mut State, &mut RecvBufs, Received, Millis),
) {
    loop {
        if io.readable().await.is_err() {
            return;
        }
        let mut drained = false;
        for _ in 0..BATCHES_PER_WAKE {
            let mut bufs = bufs.borrow_mut();
            let n = match io.try_recv(&mut bufs) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                // ICMP errors surface as receive errors on Linux; keep reading.
                Err(e) if is_icmp_error(&e) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive failed");
                    return;
                }
            };
            let mut st = state.borrow_mut();
            let now = now_ms();
            for i in 0..n {
                let mut k = 0;
                while let Some(r) = bufs.datagram(i, k) {
                    input(&mut st, &mut bufs, r, now);
                    k += 1;
                }
            }
            st.flush();
        }
        if !drained {
            // Still more queued: let the worker's other sockets have a turn.
            tokio::task::yield_now().await;
        }
    }
}

async fn listen_loop(
    state: Rc<RefCell<State>>,
    udp: Rc<UdpIo>,
    server: SocketAddr,
    bufs: Rc<RefCell<RecvBufs>>,
) {
    read_batches(&state, &udp, &bufs, |st, bufs, r, now| {
        let ft = FiveTuple {
            transport: Transport::Udp,
            client: ClientAddr(r.from),
            server,
        };
        st.client_datagram(ft, bufs, r, now);
    })
    .await;
}

async fn relay_loop(state: Rc<RefCell<State>>, io: Rc<UdpIo>, relay: RelayAddr, bufs: Rc<RefCell<RecvBufs>>) {
    read_batches(&state, &io, &bufs, |st, bufs, r, now| {
        st.peer_input(relay, PeerAddr(r.from), bufs.bytes(&r), now);
    })
    .await;
}

async fn sfu_loop(state: Rc<RefCell<State>>, mut rx: HandoffReceiver) {
    let mut batch: Vec<RelayedDatagram> = Vec::with_capacity(HANDOFF_BATCH);
    while rx.recv_many(&mut batch, HANDOFF_BATCH).await > 0 {
        let mut st = state.borrow_mut();
        let now = now_ms();
        for d in batch.drain(..) {
            let (data, range) = d.payload.into_parts();
            st.peer_input(
                RelayAddr(d.relay_addr),
                PeerAddr(d.sfu_addr),
                data.get(range).unwrap_or(&[]),
                now,
            );
            // The buffer stays here for the next datagram to the SFU.
            st.free.push(data);
        }
        st.level_spares();
        st.flush();
    }
    // The SFU is gone; TURN keeps serving (nothing else to relay to).
}

async fn timer_loop(state: Rc<RefCell<State>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let mut st = state.borrow_mut();
        let now = now_ms();
        st.core.handle_timeout(now);
        st.drain(now);
        st.flush();
    }
}

async fn serve_new_stream(state: Rc<RefCell<State>>, s: NewStream, shutdown: CancellationToken) {
    let _permit = s.permit;
    let stream = match tokio::net::TcpStream::from_std(s.stream) {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "stream setup failed");
            return;
        }
    };
    let client = ClientAddr(s.client);
    match s.tls {
        None => {
            let ft = FiveTuple {
                transport: Transport::Tcp,
                client,
                server: s.server,
            };
            serve_stream(state, stream, ft, shutdown).await;
        }
        Some(acc) => {
            let ft = FiveTuple {
                transport: Transport::Tls,
                client,
                server: s.server,
            };
            match tokio::time::timeout(TLS_HANDSHAKE, acc.accept(stream)).await {
                Ok(Ok(s)) => serve_stream(state, s, ft, shutdown).await,
                Ok(Err(e)) => tracing::debug!(error = %e, %client, "TLS handshake failed"),
                Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
            }
        }
    }
}

/// What waits to be written to one stream client: frames are appended in
/// place (no buffer per frame) and the writer task takes the whole batch
/// by swapping it with the buffer it wrote last, so both are reused.
#[derive(Default)]
struct StreamOut {
    pending: RefCell<Vec<u8>>,
    /// Wakes the writer when `pending` stops being empty or the stream ends.
    wake: Notify,
    /// The reader is done: write what is pending, then shut down.
    closed: Cell<bool>,
}

impl StreamOut {
    /// Appends one frame; false (dropped) when the client is so far behind
    /// that `STREAM_QUEUE_BYTES` are already waiting.
    fn push_with(&self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut pending = self.pending.borrow_mut();
        if pending.len() >= STREAM_QUEUE_BYTES {
            return false;
        }
        let was_empty = pending.is_empty();
        write(&mut pending);
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    fn close(&self) {
        self.closed.set(true);
        self.wake.notify_one();
    }
}

async fn stream_writer<W: AsyncWrite + Unpin>(mut wr: W, out: Rc<StreamOut>) {
    let mut writing: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        {
            let mut pending = out.pending.borrow_mut();
            if !pending.is_empty() {
                std::mem::swap(&mut *pending, &mut writing);
            }
        }
        if writing.is_empty() {
            if out.closed.get() {
                break;
            }
            out.wake.notified().await;
            continue;
        }
        // Everything queued since the last write leaves in one write.
        if wr.write_all(&writing).await.is_err() || wr.flush().await.is_err() {
            return;
        }
        writing.clear();
    }
    let _ = wr.shutdown().await;
}

async fn serve_stream<S>(state: Rc<RefCell<State>>, stream: S, ft: FiveTuple, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let out = Rc::new(StreamOut::default());
    state.borrow_mut().streams.insert(ft, Rc::clone(&out));
    let writer = tokio::task::spawn_local(stream_writer(wr, Rc::clone(&out)));
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
        let mut st = state.borrow_mut();
        let now = now_ms();
        loop {
            match wire::frame_len(&buf[off..]) {
                Frame::Incomplete => break,
                Frame::Invalid => {
                    st.metrics.drop(drop_reason::MALFORMED);
                    break 'conn;
                }
                Frame::Complete(len) => {
                    st.client_input(ft, &buf[off..off + len], now);
                    off += len;
                }
            }
        }
        st.flush();
        drop(st);
        buf.drain(..off);
        if buf.len() > wire::MAX_FRAME {
            state.borrow().metrics.drop(drop_reason::MALFORMED);
            break;
        }
    }
    {
        let mut st = state.borrow_mut();
        st.core.handle_connection_closed(ft);
        st.drain(now_ms());
        st.flush();
        st.streams.remove(&ft);
    }
    out.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}
