//! Relay backends: where an allocation's relay address lives and how relayed
//! datagrams reach peers.
//!
//! The core decides everything about TURN state; a backend only hands out
//! relay addresses, says which peers are reachable, and sends datagrams
//! towards peers without blocking. Datagrams *from* peers are fed back into
//! the core by whoever drives it ([`crate::TurnServer`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use bytes::Bytes;
use proto::handoff::{HandoffError, HandoffSender, RelayedDatagram};
use tokio::sync::mpsc;

use crate::policy::PeerPolicy;

/// Why a relay address could not be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocFailure {
    /// No free port / socket (508 Insufficient Capacity).
    NoCapacity,
}

/// Why a datagram towards a peer was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelaySendError {
    /// The peer is not reachable through this backend.
    Unreachable,
    /// Queue or socket buffer full: dropped as a congested link would.
    Congested,
    /// No such relay address or the other side is gone.
    Closed,
}

/// A relay backend (see the module docs).
pub trait RelayBackend: Send {
    /// The IP address of the relay addresses (its family is the only one
    /// allocations can have).
    fn relay_ip(&self) -> IpAddr;
    /// Reserves a relay address (an even port if `even_port`).
    fn allocate(&mut self, even_port: bool) -> Result<SocketAddr, AllocFailure>;
    /// Reserves an even port P and P+1 (EVEN-PORT with the R bit, RFC 8656
    /// §7.2): P is for the allocation, P+1 is held for a later Allocate with
    /// the RESERVATION-TOKEN. Both are given back with `release`.
    fn allocate_pair(&mut self) -> Result<(SocketAddr, SocketAddr), AllocFailure> {
        Err(AllocFailure::NoCapacity)
    }
    /// Gives a relay address back.
    fn release(&mut self, relay: SocketAddr);
    /// Whether a permission for `peer` may be installed; `false` answers 403.
    fn permits(&self, peer: IpAddr) -> bool;
    /// Whether datagrams may go to exactly `peer`.
    fn reaches(&self, peer: SocketAddr) -> bool {
        self.permits(peer.ip())
    }
    /// Sends `payload` from `relay` to `peer`. Never blocks.
    fn send(&mut self, relay: SocketAddr, peer: SocketAddr, payload: &[u8]) -> Result<(), RelaySendError>;
}

/// Virtual port range of the in-process backend. It lies below the
/// ephemeral port ranges of Linux (32768-60999), Windows and macOS
/// (49152-65535), so a virtual relay address is unlikely to equal the host
/// address of a direct client on the same IP (e.g. a browser on the same
/// laptop as `duet up`), which the SFU could otherwise confuse.
pub const VIRTUAL_PORTS: RangeInclusive<u16> = 16384..=32767;

/// The in-process backend: virtual relay addresses, the SFU's media
/// addresses as the only peers, datagrams handed over through
/// [`proto::handoff`].
#[derive(Debug)]
pub struct InProcessRelay {
    relay_ip: IpAddr,
    sfu_addrs: Vec<SocketAddr>,
    to_sfu: Option<HandoffSender>,
    used: HashSet<u16>,
    next: u16,
}

impl InProcessRelay {
    /// `to_sfu` is `None` when no SFU is wired (datagrams are then dropped).
    pub fn new(relay_ip: IpAddr, sfu_addrs: Vec<SocketAddr>, to_sfu: Option<HandoffSender>) -> Self {
        InProcessRelay {
            relay_ip,
            sfu_addrs,
            to_sfu,
            used: HashSet::new(),
            next: *VIRTUAL_PORTS.start(),
        }
    }
}

impl RelayBackend for InProcessRelay {
    fn relay_ip(&self) -> IpAddr {
        self.relay_ip
    }

    fn allocate(&mut self, even_port: bool) -> Result<SocketAddr, AllocFailure> {
        let span = u32::from(*VIRTUAL_PORTS.end() - *VIRTUAL_PORTS.start()) + 1;
        let mut port = self.next;
        for _ in 0..span {
            let candidate = port;
            port = if port == *VIRTUAL_PORTS.end() {
                *VIRTUAL_PORTS.start()
            } else {
                port + 1
            };
            if (even_port && candidate & 1 == 1) || self.used.contains(&candidate) {
                continue;
            }
            self.used.insert(candidate);
            self.next = port;
            return Ok(SocketAddr::new(self.relay_ip, candidate));
        }
        Err(AllocFailure::NoCapacity)
    }

    fn allocate_pair(&mut self) -> Result<(SocketAddr, SocketAddr), AllocFailure> {
        let mut p = *VIRTUAL_PORTS.start();
        while p < *VIRTUAL_PORTS.end() {
            if !self.used.contains(&p) && !self.used.contains(&(p + 1)) {
                self.used.insert(p);
                self.used.insert(p + 1);
                return Ok((
                    SocketAddr::new(self.relay_ip, p),
                    SocketAddr::new(self.relay_ip, p + 1),
                ));
            }
            p += 2;
        }
        Err(AllocFailure::NoCapacity)
    }

    fn release(&mut self, relay: SocketAddr) {
        self.used.remove(&relay.port());
    }

    fn permits(&self, peer: IpAddr) -> bool {
        self.sfu_addrs.iter().any(|a| a.ip() == peer)
    }

    fn reaches(&self, peer: SocketAddr) -> bool {
        self.sfu_addrs.contains(&peer)
    }

    fn send(&mut self, relay: SocketAddr, peer: SocketAddr, payload: &[u8]) -> Result<(), RelaySendError> {
        if !self.sfu_addrs.contains(&peer) {
            return Err(RelaySendError::Unreachable);
        }
        let Some(tx) = &self.to_sfu else {
            return Err(RelaySendError::Closed);
        };
        tx.send(RelayedDatagram {
            relay_addr: relay,
            sfu_addr: peer,
            payload: Bytes::copy_from_slice(payload),
        })
        .map_err(|e| match e {
            HandoffError::Full => RelaySendError::Congested,
            HandoffError::Closed => RelaySendError::Closed,
        })
    }
}

/// Raises a UDP socket's kernel buffers (capped by `net.core.rmem_max` /
/// `wmem_max`) so bursts are not dropped; failures only lose the tuning.
pub fn tune_udp_buffers(sock: &std::net::UdpSocket, bytes: usize) {
    let s = socket2::SockRef::from(sock);
    if let Err(e) = s.set_recv_buffer_size(bytes) {
        tracing::debug!(error = %e, "SO_RCVBUF not raised");
    }
    if let Err(e) = s.set_send_buffer_size(bytes) {
        tracing::debug!(error = %e, "SO_SNDBUF not raised");
    }
}

/// Kernel buffer size asked for each relay socket.
const RELAY_SOCKET_BUFFER: usize = 1 << 20;

/// A datagram a relay socket received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPacket {
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    pub payload: Bytes,
}

struct RelaySocket {
    /// A clone of the socket used for sends: a plain non-blocking `sendto`
    /// that does not depend on tokio's write-readiness state.
    sender: std::net::UdpSocket,
    reader: tokio::task::JoinHandle<()>,
}

/// Real UDP relay sockets from a port range, with a [`PeerPolicy`].
///
/// `allocate` binds a socket synchronously and spawns its reader task, so it
/// must be called inside a tokio runtime. Received datagrams go to the
/// channel given to [`SocketRelay::new`].
pub struct SocketRelay {
    /// Address the relay sockets bind to.
    bind_ip: IpAddr,
    /// Address announced in XOR-RELAYED-ADDRESS (differs behind 1:1 NAT).
    public_ip: IpAddr,
    ports: RangeInclusive<u16>,
    policy: PeerPolicy,
    sockets: HashMap<SocketAddr, RelaySocket>,
    next: u16,
    from_peers: mpsc::Sender<PeerPacket>,
}

impl std::fmt::Debug for SocketRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketRelay")
            .field("bind_ip", &self.bind_ip)
            .field("ports", &self.ports)
            .field("sockets", &self.sockets.len())
            .finish()
    }
}

/// How many ports `allocate` tries before giving up (bounds the work of one
/// request when the range is crowded by other processes).
const BIND_ATTEMPTS: usize = 64;
const PEER_READ_BUF: usize = 65536;

impl SocketRelay {
    pub fn new(
        relay_ip: IpAddr,
        ports: RangeInclusive<u16>,
        policy: PeerPolicy,
        from_peers: mpsc::Sender<PeerPacket>,
        start_seed: u16,
    ) -> Self {
        let span = u32::from(ports.end().saturating_sub(*ports.start())) + 1;
        let next = (u32::from(*ports.start()) + u32::from(start_seed) % span) as u16;
        SocketRelay {
            bind_ip: relay_ip,
            public_ip: relay_ip,
            ports,
            policy,
            sockets: HashMap::new(),
            next,
            from_peers,
        }
    }

    /// Announces `public_ip` in relay addresses while binding `relay_ip`
    /// (a host behind 1:1 NAT, e.g. a cloud VM's private interface).
    pub fn with_public_ip(mut self, public_ip: IpAddr) -> Self {
        self.public_ip = public_ip;
        self
    }

    fn advance(&self, p: u16) -> u16 {
        if p >= *self.ports.end() {
            *self.ports.start()
        } else {
            p + 1
        }
    }

    /// Binds `port` and starts its reader task.
    fn open(&mut self, port: u16) -> std::io::Result<()> {
        let std_sock = std::net::UdpSocket::bind(SocketAddr::new(self.bind_ip, port))?;
        std_sock.set_nonblocking(true)?;
        tune_udp_buffers(&std_sock, RELAY_SOCKET_BUFFER);
        let sender = std_sock.try_clone()?;
        let socket = tokio::net::UdpSocket::from_std(std_sock)?;
        let addr = SocketAddr::new(self.public_ip, port);
        let reader_sock = socket;
        let tx = self.from_peers.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; PEER_READ_BUF];
            loop {
                match reader_sock.recv_from(&mut buf).await {
                    Ok((n, peer)) => {
                        let pkt = PeerPacket {
                            relay: addr,
                            peer,
                            payload: Bytes::copy_from_slice(&buf[..n]),
                        };
                        match tx.try_send(pkt) {
                            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    // ICMP errors surface as receive errors on Linux; keep reading.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                        ) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, relay = %addr, "relay socket read failed");
                        return;
                    }
                }
            }
        });
        self.sockets.insert(addr, RelaySocket { sender, reader });
        Ok(())
    }
}

impl RelayBackend for SocketRelay {
    fn relay_ip(&self) -> IpAddr {
        self.public_ip
    }

    fn allocate(&mut self, even_port: bool) -> Result<SocketAddr, AllocFailure> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(AllocFailure::NoCapacity);
        }
        let mut port = self.next;
        let mut attempts = 0;
        let span = u32::from(self.ports.end().saturating_sub(*self.ports.start())) + 1;
        for _ in 0..span {
            let candidate = port;
            port = self.advance(port);
            let addr = SocketAddr::new(self.public_ip, candidate);
            if (even_port && candidate & 1 == 1) || self.sockets.contains_key(&addr) {
                continue;
            }
            attempts += 1;
            if attempts > BIND_ATTEMPTS {
                break;
            }
            if self.open(candidate).is_ok() {
                self.next = port;
                return Ok(addr);
            }
        }
        Err(AllocFailure::NoCapacity)
    }

    fn allocate_pair(&mut self) -> Result<(SocketAddr, SocketAddr), AllocFailure> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(AllocFailure::NoCapacity);
        }
        let mut port = self.next;
        let span = u32::from(self.ports.end().saturating_sub(*self.ports.start())) + 1;
        let mut attempts = 0;
        for _ in 0..span {
            let p = port;
            port = self.advance(port);
            if p & 1 == 1 || p == u16::MAX || p + 1 > *self.ports.end() {
                continue;
            }
            let (a, b) = (
                SocketAddr::new(self.public_ip, p),
                SocketAddr::new(self.public_ip, p + 1),
            );
            if self.sockets.contains_key(&a) || self.sockets.contains_key(&b) {
                continue;
            }
            attempts += 1;
            if attempts > BIND_ATTEMPTS {
                break;
            }
            if self.open(p).is_err() {
                continue;
            }
            if self.open(p + 1).is_err() {
                self.release(a);
                continue;
            }
            self.next = self.advance(p + 1);
            return Ok((a, b));
        }
        Err(AllocFailure::NoCapacity)
    }

    fn release(&mut self, relay: SocketAddr) {
        if let Some(s) = self.sockets.remove(&relay) {
            s.reader.abort();
        }
    }

    fn permits(&self, peer: IpAddr) -> bool {
        // The relay's own address is refused too (no relay loops through
        // our own relay ports) unless explicitly allow-listed.
        let own = peer == self.bind_ip || peer == self.public_ip;
        self.policy.allows(peer) && (!own || self.policy.allow_listed(peer))
    }

    fn send(&mut self, relay: SocketAddr, peer: SocketAddr, payload: &[u8]) -> Result<(), RelaySendError> {
        if !self.permits(peer.ip()) {
            return Err(RelaySendError::Unreachable);
        }
        let Some(s) = self.sockets.get(&relay) else {
            return Err(RelaySendError::Closed);
        };
        match s.sender.send_to(payload, peer) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(RelaySendError::Congested),
            Err(_) => Err(RelaySendError::Unreachable),
        }
    }
}

impl Drop for SocketRelay {
    fn drop(&mut self) {
        for (_, s) in self.sockets.drain() {
            s.reader.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_ports_are_unique_and_reused_after_release() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut r = InProcessRelay::new(ip, vec!["192.0.2.9:5000".parse().unwrap()], None);
        let a = r.allocate(false).unwrap();
        let b = r.allocate(true).unwrap();
        assert_ne!(a, b);
        assert_eq!(b.port() % 2, 0);
        r.release(a);
        assert!(r.permits("192.0.2.9".parse().unwrap()));
        assert!(!r.permits("192.0.2.8".parse().unwrap()));
        assert!(r.reaches("192.0.2.9:5000".parse().unwrap()));
        assert!(!r.reaches("192.0.2.9:5001".parse().unwrap()));
        assert_eq!(
            r.send(b, "192.0.2.9:5000".parse().unwrap(), b"x"),
            Err(RelaySendError::Closed)
        );
    }

    #[tokio::test]
    async fn socket_relay_binds_in_range_and_reads_peers() {
        let (tx, mut rx) = mpsc::channel(8);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let allow = crate::policy::parse_peer_allow_list(&["127.0.0.1/32".into()]).unwrap();
        let mut r = SocketRelay::new(ip, 40000..=60000, PeerPolicy::new(allow), tx, 1234);
        let a = r.allocate(false).unwrap();
        assert!((40000..=60000).contains(&a.port()));
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        r.send(a, peer.local_addr().unwrap(), b"hello").unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], a));
        peer.send_to(b"back", a).await.unwrap();
        let pkt = rx.recv().await.unwrap();
        assert_eq!(pkt.payload, Bytes::from_static(b"back"));
        assert_eq!(pkt.relay, a);
        r.release(a);
    }

    #[tokio::test]
    async fn socket_relay_refuses_its_own_address_unless_allow_listed() {
        let (tx, _rx) = mpsc::channel(8);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let r = SocketRelay::new(ip, 40000..=40001, PeerPolicy::default(), tx.clone(), 0);
        assert!(!r.permits(ip));
        assert!(r.permits("192.0.2.2".parse().unwrap()));
        let allow = crate::policy::parse_peer_allow_list(&["192.0.2.1/32".into()]).unwrap();
        let r = SocketRelay::new(ip, 40000..=40001, PeerPolicy::new(allow), tx, 0);
        assert!(r.permits(ip));
    }
}
