//! The load generator and receiver: ONE thread, one `mio` poll over every
//! participant's UDP socket, batched reads (recvmmsg via quinn-udp, GRO)
//! and batched writes (GSO via quinn-udp), paced streams, and the receive
//! statistics. Participants are plain UDP (floor), TURN ChannelData, or a
//! sans-IO `rtc` peer connection (SFU); all share the same loop.

use crate::payload::{self, BenchHeader, FramePart, RtpFields, RTP_HEADER};
use crate::procfs;
use crate::stats::{Histogram, Jitter, LatencySummary, LossWindow};
use bytes::BytesMut;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Media each participant publishes.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    /// Video packet size, RTP header included (before SRTP's 10-byte tag).
    pub video_bytes: usize,
    pub video_kbps: u32,
    pub fps: u32,
    pub audio_bytes: usize,
    pub audio_pps: u32,
    /// A keyframe at least this often (and on every frame until the stream's first packet arrives).
    pub keyframe_interval_ms: u64,
    /// Only these participants publish (all when `None`).
    #[serde(skip)]
    pub publish_video: bool,
    #[serde(skip)]
    pub publish_audio: bool,
}

impl Profile {
    /// Video packets per frame: the bitrate split into `video_bytes` packets.
    pub fn video_packets_per_frame(&self) -> u32 {
        let per_frame = f64::from(self.video_kbps) * 1000.0 / 8.0 / f64::from(self.fps.max(1));
        ((per_frame / self.video_bytes as f64).round() as u32).max(1)
    }
    /// Packets per second one participant sends.
    pub fn packets_per_second(&self) -> f64 {
        let mut pps = 0.0;
        if self.publish_video {
            pps += f64::from(self.video_packets_per_frame() * self.fps);
        }
        if self.publish_audio {
            pps += f64::from(self.audio_pps);
        }
        pps
    }
    /// Bits per second one participant sends (RTP packets, without UDP/IP headers).
    pub fn bits_per_second(&self) -> f64 {
        let mut bps = 0.0;
        if self.publish_video {
            bps += f64::from(self.video_packets_per_frame() * self.fps) * self.video_bytes as f64 * 8.0;
        }
        if self.publish_audio {
            bps += f64::from(self.audio_pps) * self.audio_bytes as f64 * 8.0;
        }
        bps
    }
}

/// How a participant's datagrams travel.
pub enum Link {
    /// Plain RTP to `dest` (the floor forwarder or a TURN relay address).
    /// `register`: a hello the floor forwarder must acknowledge first.
    Plain {
        dest: SocketAddr,
        register: Option<Vec<u8>>,
    },
    /// Wrapped in TURN ChannelData to `server` on `channel`.
    Channel { server: SocketAddr, channel: u16 },
    /// A WebRTC peer connection (SRTP), already given the remote description.
    /// `via`: its only candidate is a TURN relay; datagrams travel as
    /// ChannelData through that allocation.
    Rtc {
        pc: Box<RTCPeerConnection>,
        video_ssrc: u32,
        audio_ssrc: u32,
        video_pt: u8,
        audio_pt: u8,
        via: Option<TurnPath>,
    },
}

/// A TURN allocation an rtc participant sends through.
#[derive(Clone, Copy, Debug)]
pub struct TurnPath {
    pub server: SocketAddr,
    pub channel: u16,
    /// The allocation's relayed address (the local address of the relay candidate).
    pub relayed: SocketAddr,
    /// The one peer bound to `channel` (the SFU's media address).
    pub peer: SocketAddr,
}

fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + data.len());
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn parse_channel_data(d: &[u8]) -> Option<&[u8]> {
    if d.len() >= 4 && (0x40..=0x7f).contains(&d[0]) {
        let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
        return d.get(4..4 + len);
    }
    None
}

pub struct ParticipantSetup {
    pub socket: std::net::UdpSocket,
    pub link: Link,
    /// Publishes media (receivers-only participants, e.g. TURN peers, may too).
    pub publish: bool,
}

enum Cmd {
    Measure,
    Stop,
    Quit,
}

/// Live figures for the progress line.
#[derive(Default)]
pub struct Progress {
    pub ready: AtomicUsize,
    pub failed: AtomicUsize,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Latency p99 over the last progress interval, ns.
    pub recent_p99_ns: AtomicU64,
    pub recent_pps: AtomicU64,
    /// Video streams whose first packet arrived.
    pub flowing: AtomicUsize,
}

pub struct EngineHandle {
    cmd: mpsc::Sender<Cmd>,
    waker: Arc<mio::Waker>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<EngineResult>>>,
    pub progress: Arc<Progress>,
    pub participants: usize,
}

/// Figures of one measurement window.
#[derive(Clone, Debug, Serialize)]
pub struct EngineResult {
    pub window_s: f64,
    /// Packets the schedule asked for in the window.
    pub offered_packets: u64,
    pub sent_packets: u64,
    pub received_packets: u64,
    pub received_bytes: u64,
    pub lost_packets: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub latency: LatencySummary,
    /// Mean of the per-stream RFC 3550 jitter, µs.
    pub jitter_us: f64,
    /// The SRTP profile the WebRTC clients negotiated ("mixed" if they
    /// differ); `None` without WebRTC clients.
    pub srtp_profile: Option<String>,
    pub generator: GeneratorHealth,
}

/// Is the generator the bottleneck?
#[derive(Clone, Debug, Serialize, Default)]
pub struct GeneratorHealth {
    /// CPU of the load thread / wall time (1.0 = one full core).
    pub load_thread_cpu: f64,
    /// Sent / offered packets.
    pub send_ratio: f64,
    /// Largest delay of a scheduled send behind its time, ms.
    pub max_send_lag_ms: f64,
    /// Mean delay of scheduled sends, ms.
    pub mean_send_lag_ms: f64,
    pub send_errors: u64,
    pub bottleneck: bool,
    pub verdict: String,
}

impl EngineHandle {
    fn send(&self, c: Cmd) {
        let _ = self.cmd.send(c);
        let _ = self.waker.wake();
    }
    pub fn start_measure(&self) {
        self.send(Cmd::Measure);
    }
    pub fn stop_measure(&self) {
        self.send(Cmd::Stop);
    }
    /// Ends the loop and returns the window's figures.
    pub fn finish(mut self) -> anyhow::Result<EngineResult> {
        self.send(Cmd::Quit);
        let t = self
            .thread
            .take()
            .ok_or_else(|| anyhow::anyhow!("engine already finished"))?;
        t.join().map_err(|_| anyhow::anyhow!("load thread panicked"))?
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.cmd.send(Cmd::Quit);
            let _ = self.waker.wake();
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
}

struct SendStream {
    endpoint: usize,
    kind: Kind,
    interval: Duration,
    packets_per_tick: u32,
    size: usize,
    seq: u64,
    rtp_seq: u16,
    rtp_ts: u32,
    ts_step: u32,
    ssrc: u32,
    pt: u8,
    last_key: Option<Instant>,
    /// The stream's first packet arrived somewhere (no more forced keyframes).
    confirmed: bool,
    /// Sequence number at the start of the measurement window.
    window_start: Option<u64>,
    window_end: Option<u64>,
}

struct RecvStream {
    loss: Option<LossWindow>,
    jitter: Jitter,
    jitter_samples: u64,
}

struct Endpoint {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    local: SocketAddr,
    link: Link,
    ready: bool,
    failed: bool,
    /// The SRTP profile negotiated (rtc's transport stats `srtp_cipher`,
    /// read once the peer connection is connected).
    srtp_cipher: Option<String>,
    out: Vec<(SocketAddr, Vec<u8>)>,
    queued: bool,
    /// Next registration resend (Plain with `register`).
    next_hello: Instant,
    scheduled_timeout: Option<Instant>,
}

struct Loop {
    base: Instant,
    endpoints: Vec<Endpoint>,
    streams: Vec<SendStream>,
    recv: Vec<RecvStream>,
    sends: BinaryHeap<Reverse<(Instant, usize)>>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    dirty: Vec<usize>,
    profile: Profile,
    measuring: bool,
    measured_from: Option<Instant>,
    measured_to: Option<Instant>,
    window_ns: (u64, u64),
    hist: Histogram,
    recent: Histogram,
    recent_count: u64,
    received_bytes: u64,
    sent_in_window: u64,
    offered_in_window: u64,
    lag_sum_ns: u128,
    lag_n: u64,
    lag_max_ns: u64,
    send_errors: u64,
    cpu_start: Option<f64>,
    cpu_end: Option<f64>,
    progress: Arc<Progress>,
    gso: Vec<u8>,
}

/// Starts the load thread. `pin`: CPU to pin it to.
pub fn spawn(
    participants: Vec<ParticipantSetup>,
    profile: Profile,
    pin: Option<usize>,
    realtime: bool,
) -> anyhow::Result<EngineHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), Token(usize::MAX))?);
    let base = Instant::now();
    let mut endpoints = Vec::with_capacity(participants.len());
    let mut streams = Vec::new();
    let mut rng_phase = rand::random::<u64>();
    let mut next_phase = |interval: Duration| {
        rng_phase ^= rng_phase << 13;
        rng_phase ^= rng_phase >> 7;
        rng_phase ^= rng_phase << 17;
        Duration::from_nanos(rng_phase % (interval.as_nanos() as u64).max(1))
    };
    let ppf = profile.video_packets_per_frame();
    for (i, p) in participants.into_iter().enumerate() {
        p.socket.set_nonblocking(true)?;
        let sock2 = socket2::Socket::from(p.socket);
        let _ = sock2.set_recv_buffer_size(2 * 1024 * 1024);
        let _ = sock2.set_send_buffer_size(2 * 1024 * 1024);
        let std_sock: std::net::UdpSocket = sock2.into();
        let local = std_sock.local_addr()?;
        let mut socket = UdpSocket::from_std(std_sock);
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        poll.registry()
            .register(&mut socket, Token(i), Interest::READABLE)?;
        let (video_ssrc, audio_ssrc, video_pt, audio_pt) = match &p.link {
            Link::Rtc {
                video_ssrc,
                audio_ssrc,
                video_pt,
                audio_pt,
                ..
            } => (*video_ssrc, *audio_ssrc, *video_pt, *audio_pt),
            _ => (rand::random::<u32>() | 1, rand::random::<u32>() | 1, 96, 111),
        };
        let ready = matches!(&p.link, Link::Channel { .. } | Link::Plain { register: None, .. });
        if p.publish {
            let frame = Duration::from_nanos(1_000_000_000 / u64::from(profile.fps.max(1)));
            if profile.publish_video {
                streams.push(SendStream {
                    endpoint: i,
                    kind: Kind::Video,
                    interval: frame,
                    packets_per_tick: ppf,
                    size: profile.video_bytes,
                    seq: 0,
                    rtp_seq: rand::random(),
                    rtp_ts: rand::random(),
                    ts_step: 90_000 / profile.fps.max(1),
                    ssrc: video_ssrc,
                    pt: video_pt,
                    last_key: None,
                    confirmed: false,
                    window_start: None,
                    window_end: None,
                });
            }
            if profile.publish_audio {
                let iv = Duration::from_nanos(1_000_000_000 / u64::from(profile.audio_pps.max(1)));
                streams.push(SendStream {
                    endpoint: i,
                    kind: Kind::Audio,
                    interval: iv,
                    packets_per_tick: 1,
                    size: profile.audio_bytes,
                    seq: 0,
                    rtp_seq: rand::random(),
                    rtp_ts: rand::random(),
                    ts_step: 48_000 / profile.audio_pps.max(1),
                    ssrc: audio_ssrc,
                    pt: audio_pt,
                    last_key: None,
                    confirmed: true,
                    window_start: None,
                    window_end: None,
                });
            }
        }
        endpoints.push(Endpoint {
            socket,
            state,
            local,
            link: p.link,
            ready,
            failed: false,
            srtp_cipher: None,
            out: Vec::new(),
            queued: false,
            next_hello: base,
            scheduled_timeout: None,
        });
    }
    let mut sends = BinaryHeap::new();
    for (i, s) in streams.iter().enumerate() {
        sends.push(Reverse((base + next_phase(s.interval), i)));
    }
    let recv = (0..streams.len())
        .map(|_| RecvStream {
            loss: None,
            jitter: Jitter::default(),
            jitter_samples: 0,
        })
        .collect();
    let progress = Arc::new(Progress::default());
    let n_participants = endpoints.len();
    let mut lp = Loop {
        base,
        endpoints,
        streams,
        recv,
        sends,
        timers: BinaryHeap::new(),
        dirty: Vec::new(),
        profile,
        measuring: false,
        measured_from: None,
        measured_to: None,
        window_ns: (0, u64::MAX),
        hist: Histogram::new(),
        recent: Histogram::new(),
        recent_count: 0,
        received_bytes: 0,
        sent_in_window: 0,
        offered_in_window: 0,
        lag_sum_ns: 0,
        lag_n: 0,
        lag_max_ns: 0,
        send_errors: 0,
        cpu_start: None,
        cpu_end: None,
        progress: progress.clone(),
        gso: Vec::with_capacity(64 * 1024),
    };
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            if let Some(cpu) = pin {
                procfs::pin_current_thread(cpu)?;
            }
            if realtime {
                procfs::realtime(procfs::current_tid()?, false, 10)?;
            }
            lp.run(poll, rx)
        })?;
    Ok(EngineHandle {
        cmd: tx,
        waker,
        thread: Some(thread),
        progress,
        participants: n_participants,
    })
}

const MAX_DATAGRAM: usize = 64 * 1024;

impl Loop {
    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn run(&mut self, mut poll: Poll, rx: mpsc::Receiver<Cmd>) -> anyhow::Result<EngineResult> {
        let mut events = Events::with_capacity(1024);
        let batch = quinn_udp::BATCH_SIZE;
        let mut bufs: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; MAX_DATAGRAM]).collect();
        let mut metas = vec![quinn_udp::RecvMeta::default(); batch];
        let mut last_progress = Instant::now();
        // Every rtc peer needs its first timeout handled to start ICE.
        let now = Instant::now();
        for i in 0..self.endpoints.len() {
            if matches!(self.endpoints[i].link, Link::Rtc { .. }) {
                self.timers.push(Reverse((now, i)));
            }
        }
        let mut quit_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            while let Ok(c) = rx.try_recv() {
                match c {
                    Cmd::Measure => self.start_window(now),
                    Cmd::Stop => self.stop_window(now),
                    Cmd::Quit => {
                        if self.measuring {
                            self.stop_window(now);
                        }
                        // Let packets in flight arrive.
                        quit_at.get_or_insert(now + Duration::from_millis(300));
                    }
                }
            }
            if quit_at.is_some_and(|q| now >= q) {
                break;
            }
            let mut next = now + Duration::from_millis(20);
            if let Some(Reverse((t, _))) = self.sends.peek() {
                next = next.min(*t);
            }
            if let Some(Reverse((t, _))) = self.timers.peek() {
                next = next.min(*t);
            }
            let timeout = next.saturating_duration_since(now);
            poll.poll(&mut events, Some(timeout))?;
            let now = Instant::now();
            for ev in events.iter() {
                let Token(i) = ev.token();
                if i < self.endpoints.len() {
                    self.read_endpoint(i, &mut bufs, &mut metas, now);
                }
            }
            self.timers_due(now);
            self.sends_due(now);
            self.hellos(now);
            self.service_dirty(now);
            if now.duration_since(last_progress) >= Duration::from_millis(500) {
                let p = &self.progress;
                let dt = now.duration_since(last_progress).as_secs_f64();
                p.recent_p99_ns
                    .store(self.recent.percentile(99.0).unwrap_or(0), Ordering::Relaxed);
                p.recent_pps
                    .store((self.recent_count as f64 / dt) as u64, Ordering::Relaxed);
                p.ready.store(
                    self.endpoints.iter().filter(|e| e.ready).count(),
                    Ordering::Relaxed,
                );
                p.failed.store(
                    self.endpoints.iter().filter(|e| e.failed).count(),
                    Ordering::Relaxed,
                );
                p.flowing.store(
                    self.streams
                        .iter()
                        .filter(|s| s.kind == Kind::Video && s.confirmed)
                        .count(),
                    Ordering::Relaxed,
                );
                self.recent = Histogram::new();
                self.recent_count = 0;
                last_progress = now;
            }
        }
        Ok(self.result())
    }

    fn start_window(&mut self, now: Instant) {
        self.measuring = true;
        self.measured_from = Some(now);
        self.window_ns.0 = self.ns(now);
        self.cpu_start = procfs::thread_cpu_seconds();
        for (i, s) in self.streams.iter_mut().enumerate() {
            s.window_start = Some(s.seq);
            self.recv[i].loss = Some(LossWindow::open(s.seq));
        }
    }

    fn stop_window(&mut self, now: Instant) {
        if !self.measuring {
            return;
        }
        self.measuring = false;
        self.measured_to = Some(now);
        self.window_ns.1 = self.ns(now);
        self.cpu_end = procfs::thread_cpu_seconds();
        for (i, s) in self.streams.iter_mut().enumerate() {
            s.window_end = Some(s.seq);
            if let Some(l) = self.recv[i].loss.as_mut() {
                l.close(s.seq);
            }
        }
    }

    fn result(&self) -> EngineResult {
        let window = match (self.measured_from, self.measured_to) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let (mut lost, mut received, mut dups, mut reord) = (0u64, 0u64, 0u64, 0u64);
        let mut sent = 0u64;
        for (s, r) in self.streams.iter().zip(&self.recv) {
            if let (Some(a), Some(b)) = (s.window_start, s.window_end) {
                sent += b - a;
            }
            if let Some(l) = &r.loss {
                lost += l.lost();
                received += l.received();
                dups += l.duplicates();
                reord += l.reordered();
            }
        }
        let jit: Vec<f64> = self
            .recv
            .iter()
            .filter(|r| r.jitter_samples > 1)
            .map(|r| r.jitter.value())
            .collect();
        let jitter_us = if jit.is_empty() {
            0.0
        } else {
            jit.iter().sum::<f64>() / jit.len() as f64 / 1000.0
        };
        let cpu = match (self.cpu_start, self.cpu_end) {
            (Some(a), Some(b)) if window > 0.0 => (b - a) / window,
            _ => 0.0,
        };
        let send_ratio = if self.offered_in_window > 0 {
            self.sent_in_window as f64 / self.offered_in_window as f64
        } else {
            0.0
        };
        let max_lag_ms = self.lag_max_ns as f64 / 1e6;
        let mean_lag_ms = if self.lag_n > 0 {
            self.lag_sum_ns as f64 / self.lag_n as f64 / 1e6
        } else {
            0.0
        };
        let mut reasons = Vec::new();
        if cpu > 0.85 {
            reasons.push(format!("load thread at {:.0}% of a core", cpu * 100.0));
        }
        if send_ratio < 0.99 {
            reasons.push(format!(
                "sent only {:.1}% of the offered packets",
                send_ratio * 100.0
            ));
        }
        if mean_lag_ms > 2.0 {
            reasons.push(format!("sends {mean_lag_ms:.1} ms behind schedule on average"));
        }
        let bottleneck = !reasons.is_empty();
        let verdict = if bottleneck {
            format!("generator may be the bottleneck: {}", reasons.join("; "))
        } else {
            format!(
                "generator not the bottleneck (load thread {:.0}% of a core, {:.1}% of offered packets sent on time, mean lag {:.2} ms)",
                cpu * 100.0,
                send_ratio * 100.0,
                mean_lag_ms
            )
        };
        EngineResult {
            window_s: window,
            offered_packets: self.offered_in_window,
            sent_packets: sent,
            received_packets: received,
            received_bytes: self.received_bytes,
            lost_packets: lost,
            duplicates: dups,
            reordered: reord,
            latency: LatencySummary::from_histogram(&self.hist),
            jitter_us,
            srtp_profile: agreed_profile(self.endpoints.iter().filter_map(|e| match e.link {
                Link::Rtc { .. } => Some(e.srtp_cipher.as_deref().unwrap_or("")),
                _ => None,
            })),
            generator: GeneratorHealth {
                load_thread_cpu: cpu,
                send_ratio,
                max_send_lag_ms: max_lag_ms,
                mean_send_lag_ms: mean_lag_ms,
                send_errors: self.send_errors,
                bottleneck,
                verdict,
            },
        }
    }

    // ---- receive ------------------------------------------------------

    fn read_endpoint(
        &mut self,
        i: usize,
        bufs: &mut [Vec<u8>],
        metas: &mut [quinn_udp::RecvMeta],
        now: Instant,
    ) {
        loop {
            let n = {
                let ep = &self.endpoints[i];
                let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                match ep.state.recv((&ep.socket).into(), &mut slices, metas) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(_) => return,
                }
            };
            if n == 0 {
                return;
            }
            let arrival = self.ns(now);
            for (meta, buf) in metas.iter().zip(bufs.iter()).take(n) {
                let stride = meta.stride.max(1);
                let data = &buf[..meta.len.min(buf.len())];
                for dgram in data.chunks(stride) {
                    self.input(i, meta.addr, dgram, arrival, now);
                }
            }
        }
    }

    fn input(&mut self, i: usize, from: SocketAddr, dgram: &[u8], arrival: u64, now: Instant) {
        let ep = &mut self.endpoints[i];
        match &mut ep.link {
            Link::Plain { register, .. } => {
                if register.as_deref().is_some_and(|r| dgram == r) {
                    ep.ready = true;
                    return;
                }
                if let Some(h) = payload::read_rtp(dgram) {
                    self.record(h, dgram.len(), arrival);
                }
            }
            Link::Channel { .. } => {
                if let Some(h) = parse_channel_data(dgram).and_then(payload::read_rtp) {
                    self.record(h, dgram.len(), arrival);
                }
            }
            Link::Rtc { pc, via, .. } => {
                let (local_addr, peer_addr, data) = match via {
                    None => (ep.local, from, dgram),
                    Some(v) => match parse_channel_data(dgram) {
                        Some(d) => (v.relayed, v.peer, d),
                        // TURN responses (refreshes) are not for the peer connection.
                        None => return,
                    },
                };
                let msg = TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr,
                        peer_addr,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: BytesMut::from(data),
                };
                let _ = pc.handle_read(msg);
                let mut got = Vec::new();
                while let Some(m) = pc.poll_read() {
                    if let RTCMessage::RtpPacket(_, pkt) = m.message {
                        if let Some(h) = payload::read_payload(&pkt.payload) {
                            got.push(h);
                        }
                    }
                }
                let wire = dgram.len();
                for h in got {
                    self.record(h, wire, arrival);
                }
                self.mark_dirty(i);
            }
        }
    }

    fn record(&mut self, h: BenchHeader, wire_bytes: usize, arrival: u64) {
        let Some(r) = self.recv.get_mut(h.stream as usize) else {
            return;
        };
        if let Some(s) = self.streams.get_mut(h.stream as usize) {
            s.confirmed = true;
        }
        let lat = arrival.saturating_sub(h.send_ns);
        self.recent.record(lat);
        self.recent_count += 1;
        self.progress.received.fetch_add(1, Ordering::Relaxed);
        r.jitter.record(h.send_ns, arrival);
        r.jitter_samples += 1;
        if let Some(l) = r.loss.as_mut() {
            if h.seq >= l.start() && h.send_ns >= self.window_ns.0 && h.send_ns < self.window_ns.1 {
                l.record(h.seq);
                self.hist.record(lat);
                self.received_bytes += wire_bytes as u64;
            }
        }
    }

    // ---- rtc housekeeping ----------------------------------------------

    fn mark_dirty(&mut self, i: usize) {
        if !self.endpoints[i].queued {
            self.endpoints[i].queued = true;
            self.dirty.push(i);
        }
    }

    fn timers_due(&mut self, now: Instant) {
        while let Some(Reverse((t, i))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let ep = &mut self.endpoints[i];
            if ep.scheduled_timeout.is_some_and(|s| s != t) {
                continue;
            }
            ep.scheduled_timeout = None;
            if let Link::Rtc { pc, .. } = &mut ep.link {
                let _ = pc.handle_timeout(now);
            }
            self.mark_dirty(i);
        }
    }

    /// Drains writes/events of touched endpoints and flushes their output.
    fn service_dirty(&mut self, now: Instant) {
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.endpoints[i].queued = false;
            let ep = &mut self.endpoints[i];
            if let Link::Rtc { pc, via, .. } = &mut ep.link {
                while let Some(w) = pc.poll_write() {
                    match via {
                        None => ep.out.push((w.transport.peer_addr, w.message.to_vec())),
                        Some(v) => ep.out.push((v.server, channel_data(v.channel, &w.message))),
                    }
                }
                while let Some(e) = pc.poll_event() {
                    if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = e {
                        match s {
                            RTCPeerConnectionState::Connected => {
                                ep.ready = true;
                                let stats = pc.get_stats(now, StatsSelector::None);
                                ep.srtp_cipher = stats.transport().map(|t| t.srtp_cipher.clone());
                            }
                            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                                ep.ready = false;
                                ep.failed = true;
                            }
                            _ => {}
                        }
                    }
                }
                // RTCP the peer may deliver (keyframe requests are ignored:
                // keyframes follow our own schedule).
                while pc.poll_read().is_some() {}
                if let Some(t) = pc.poll_timeout() {
                    if ep.scheduled_timeout.is_none_or(|s| t < s) {
                        ep.scheduled_timeout = Some(t);
                        self.timers.push(Reverse((t.max(now), i)));
                        if t < now {
                            ep.scheduled_timeout = Some(t.max(now));
                        }
                    }
                }
            }
            self.flush(i);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn flush(&mut self, i: usize) {
        let ep = &mut self.endpoints[i];
        if ep.out.is_empty() {
            return;
        }
        let max_seg = ep.state.max_gso_segments().max(1);
        let out = std::mem::take(&mut ep.out);
        let mut k = 0;
        while k < out.len() {
            let (dest, first) = (out[k].0, &out[k].1);
            let seg = first.len();
            let mut j = k + 1;
            while max_seg > 1 && j < out.len() && j - k < max_seg && out[j].0 == dest && out[j].1.len() <= seg
            {
                let last = out[j].1.len() < seg;
                j += 1;
                if last {
                    break;
                }
            }
            let contents: &[u8] = if j - k == 1 {
                first
            } else {
                self.gso.clear();
                for (_, b) in &out[k..j] {
                    self.gso.extend_from_slice(b);
                }
                &self.gso
            };
            let t = quinn_udp::Transmit {
                destination: dest,
                ecn: None,
                contents,
                segment_size: (j - k > 1).then_some(seg),
                src_ip: None,
            };
            if ep.state.try_send((&ep.socket).into(), &t).is_err() {
                self.send_errors += (j - k) as u64;
            }
            k = j;
        }
        let mut out = out;
        out.clear();
        ep.out = out;
    }

    fn hellos(&mut self, now: Instant) {
        for i in 0..self.endpoints.len() {
            let ep = &mut self.endpoints[i];
            if ep.ready || now < ep.next_hello {
                continue;
            }
            if let Link::Plain {
                dest,
                register: Some(hello),
            } = &ep.link
            {
                ep.out.push((*dest, hello.clone()));
                ep.next_hello = now + Duration::from_millis(100);
                self.mark_dirty(i);
            }
        }
    }

    // ---- send ----------------------------------------------------------

    fn sends_due(&mut self, now: Instant) {
        while let Some(Reverse((t, si))) = self.sends.peek().copied() {
            if t > now {
                break;
            }
            self.sends.pop();
            let interval = self.streams[si].interval;
            self.sends.push(Reverse((t + interval, si)));
            let ep_i = self.streams[si].endpoint;
            if !self.endpoints[ep_i].ready {
                continue;
            }
            let lag = now.saturating_duration_since(t).as_nanos() as u64;
            let n = self.streams[si].packets_per_tick;
            if self.measuring {
                self.offered_in_window += u64::from(n);
                self.lag_sum_ns += u128::from(lag);
                self.lag_n += 1;
                self.lag_max_ns = self.lag_max_ns.max(lag);
            }
            self.send_tick(si, now);
        }
    }

    fn send_tick(&mut self, si: usize, now: Instant) {
        let key_iv = Duration::from_millis(self.profile.keyframe_interval_ms.max(1));
        let s = &mut self.streams[si];
        let key = s.kind == Kind::Video
            && (!s.confirmed
                || s.last_key
                    .is_none_or(|k| now.saturating_duration_since(k) >= key_iv));
        if key {
            s.last_key = Some(now);
        }
        let n = s.packets_per_tick;
        let ts = s.rtp_ts;
        s.rtp_ts = s.rtp_ts.wrapping_add(s.ts_step);
        let size = s.size;
        let send_ns = now.saturating_duration_since(self.base).as_nanos() as u64;
        for k in 0..n {
            let s = &mut self.streams[si];
            let part = match (s.kind, k) {
                (Kind::Video, 0) if key => FramePart::KeyStart,
                (Kind::Video, 0) => FramePart::InterStart,
                _ => FramePart::Continuation,
            };
            let marker = k + 1 == n;
            let h = BenchHeader {
                stream: si as u32,
                seq: s.seq,
                send_ns,
            };
            let rtp = RtpFields {
                marker,
                payload_type: s.pt,
                sequence_number: s.rtp_seq,
                timestamp: ts,
                ssrc: s.ssrc,
            };
            s.seq += 1;
            s.rtp_seq = s.rtp_seq.wrapping_add(1);
            let ep_i = s.endpoint;
            let ep = &mut self.endpoints[ep_i];
            match &mut ep.link {
                Link::Plain { dest, .. } => {
                    let mut buf = vec![0u8; size];
                    payload::write_rtp(&mut buf, &rtp, part, &h);
                    ep.out.push((*dest, buf));
                }
                Link::Channel { server, channel } => {
                    // Over UDP, ChannelData needs no padding (RFC 8656 §12.5).
                    let mut buf = vec![0u8; 4 + size];
                    buf[0..2].copy_from_slice(&channel.to_be_bytes());
                    buf[2..4].copy_from_slice(&(size as u16).to_be_bytes());
                    payload::write_rtp(&mut buf[4..4 + size], &rtp, part, &h);
                    ep.out.push((*server, buf));
                }
                Link::Rtc { pc, .. } => {
                    let mut body = vec![0u8; size - RTP_HEADER];
                    payload::write_payload(&mut body, part, &h);
                    let pkt = rtc::rtp::Packet {
                        header: rtc::rtp::header::Header {
                            version: 2,
                            marker,
                            payload_type: rtp.payload_type,
                            sequence_number: rtp.sequence_number,
                            timestamp: rtp.timestamp,
                            ssrc: rtp.ssrc,
                            ..Default::default()
                        },
                        payload: body.into(),
                    };
                    let msg = TaggedRTCMessage {
                        now,
                        message: RTCMessage::RtpPacket(String::new(), pkt),
                    };
                    if pc.handle_write(msg).is_err() {
                        self.send_errors += 1;
                        continue;
                    }
                }
            }
            self.progress.sent.fetch_add(1, Ordering::Relaxed);
            if self.measuring {
                self.sent_in_window += 1;
            }
            self.mark_dirty(ep_i);
        }
    }
}

/// What the clients' SRTP profiles say as one value: the profile if every
/// client reports the same, "mixed" if they differ ("unknown" stands for a
/// client that reported none), `None` without clients.
pub fn agreed_profile<'a>(ciphers: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut agreed: Option<&str> = None;
    for c in ciphers {
        let c = if c.is_empty() { "unknown" } else { c };
        match agreed {
            None => agreed = Some(c),
            Some(a) if a != c => return Some("mixed".to_owned()),
            Some(_) => {}
        }
    }
    agreed.map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::agreed_profile;

    #[test]
    fn one_profile_for_all_clients_is_reported_as_is() {
        let all = ["SRTP_AES128_CM_HMAC_SHA1_80"; 3];
        assert_eq!(
            agreed_profile(all).as_deref(),
            Some("SRTP_AES128_CM_HMAC_SHA1_80")
        );
    }

    #[test]
    fn clients_that_disagree_are_reported_as_mixed() {
        let some = ["SRTP_AEAD_AES_128_GCM", "SRTP_AES128_CM_HMAC_SHA1_80"];
        assert_eq!(agreed_profile(some).as_deref(), Some("mixed"));
        assert_eq!(
            agreed_profile(["SRTP_AEAD_AES_128_GCM", ""]).as_deref(),
            Some("mixed")
        );
    }

    #[test]
    fn no_webrtc_clients_report_no_profile() {
        assert_eq!(agreed_profile([]), None);
        assert_eq!(agreed_profile([""]).as_deref(), Some("unknown"));
    }
}
