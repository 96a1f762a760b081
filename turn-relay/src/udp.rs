//! Batched UDP I/O for the workers, through `quinn-udp` (as the SFU does):
//! `recvmmsg` with GRO on the way in, `sendmsg` with GSO for runs of
//! equal-size datagrams to one destination on the way out. Buffers are
//! reused, so relaying allocates nothing per datagram.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::ops::Range;

use proto::handoff;
use tokio::io::Interest;

/// Kernel buffer size asked for each relay socket.
pub(crate) const RELAY_SOCKET_BUFFER: usize = 1 << 20;
/// Kernel buffer size asked for a UDP listener (capped by the sysctls).
pub(crate) const LISTENER_BUFFER: usize = 4 << 20;
/// One receive slot: a GRO batch may hold up to 64 KiB.
const SLOT: usize = 64 * 1024;

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

/// A UDP socket of a worker: the tokio socket waits for readability, a
/// clone of it sends with plain non-blocking `sendmsg` (independent of
/// tokio's write-readiness state: a full buffer drops the datagram, as a
/// congested link would).
pub(crate) struct UdpIo {
    socket: tokio::net::UdpSocket,
    sender: std::net::UdpSocket,
    state: quinn_udp::UdpSocketState,
}

impl UdpIo {
    /// Must be called inside the worker's runtime. Without `gro` every
    /// datagram is read into a slot of its own (the hand-off layout needs
    /// that; `quinn-udp` turns GRO on).
    pub(crate) fn new(std_sock: std::net::UdpSocket, gro: bool) -> io::Result<Self> {
        std_sock.set_nonblocking(true)?;
        let sender = std_sock.try_clone()?;
        let state = quinn_udp::UdpSocketState::new((&std_sock).into())?;
        if !gro {
            // Where this fails, coalesced reads are still split (with a copy).
            if let Err(e) =
                nix::sys::socket::setsockopt(&std_sock, nix::sys::socket::sockopt::UdpGroSegment, &false)
            {
                tracing::debug!(error = %e, "could not turn UDP GRO off");
            }
        }
        let socket = tokio::net::UdpSocket::from_std(std_sock)?;
        Ok(UdpIo {
            socket,
            sender,
            state,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sender.local_addr()
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads one batch into `bufs`; `WouldBlock` when nothing is queued.
    pub(crate) fn try_recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        let RecvBufs {
            slots,
            metas,
            at,
            room,
            ..
        } = bufs;
        let mut slots = slots.iter_mut();
        let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] = std::array::from_fn(|_| {
            let slot = slots.next().expect("one receive slot per batch entry");
            IoSliceMut::new(&mut slot[*at..*at + *room])
        });
        self.socket.try_io(Interest::READABLE, || {
            self.state.recv((&self.socket).into(), &mut slices, metas)
        })
    }

    fn send(&self, destination: SocketAddr, contents: &[u8], segment_size: Option<usize>) -> io::Result<()> {
        let t = quinn_udp::Transmit {
            destination,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        self.state.try_send((&self.sender).into(), &t)
    }

    fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }
}

/// Receive slots and their metadata, reused for every batch.
pub(crate) struct RecvBufs {
    slots: Vec<Vec<u8>>,
    metas: Vec<quinn_udp::RecvMeta>,
    /// Where a datagram starts in its slot.
    at: usize,
    /// How many bytes a slot takes from `at` on.
    room: usize,
    /// Slots are in the hand-off layout.
    handoff: bool,
}

/// One datagram of a batch: where it lies in which slot.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub slot: usize,
    pub from: SocketAddr,
    pub range: Range<usize>,
    /// It is its slot's only datagram, so the slot may be taken whole.
    pub alone: bool,
}

impl RecvBufs {
    /// Slots of 64 KiB, for GRO batches (the socket relay).
    pub(crate) fn new() -> Self {
        Self::with_layout(SLOT, 0, SLOT, false)
    }

    /// Slots in the hand-off layout ([`proto::handoff`]): a ChannelData
    /// payload lands at `HEADROOM`, so a slot can go to the SFU as it is
    /// ([`Self::take`]). The socket must not coalesce (no GRO).
    pub(crate) fn for_handoff() -> Self {
        let at = handoff::HEADROOM - crate::wire::CHANNEL_DATA_HEADER;
        let room = handoff::BUFFER_LEN - handoff::TAILROOM - at;
        Self::with_layout(handoff::BUFFER_LEN, at, room, true)
    }

    fn with_layout(len: usize, at: usize, room: usize, handoff: bool) -> Self {
        RecvBufs {
            slots: (0..quinn_udp::BATCH_SIZE).map(|_| vec![0u8; len]).collect(),
            metas: vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE],
            at,
            room,
            handoff,
        }
    }

    /// The `k`-th datagram of slot `i` of the last batch (GRO batches are
    /// split by their stride), if there is one.
    pub(crate) fn datagram(&self, i: usize, k: usize) -> Option<Received> {
        let meta = self.metas.get(i)?;
        let len = meta.len.min(self.room);
        let stride = meta.stride.max(1);
        let start = k.checked_mul(stride)?;
        if start >= len {
            return None;
        }
        let end = (start + stride).min(len);
        Some(Received {
            slot: i,
            from: meta.addr,
            range: self.at + start..self.at + end,
            alone: len <= stride,
        })
    }

    /// The bytes of a received datagram.
    pub(crate) fn bytes(&self, r: &Received) -> &[u8] {
        self.slots
            .get(r.slot)
            .and_then(|s| s.get(r.range.clone()))
            .unwrap_or(&[])
    }

    /// Takes the buffer of slot `i` (to hand it over as it is) and puts
    /// `fresh` in its place (grown to the slot length if it is shorter).
    pub(crate) fn take(&mut self, i: usize, mut fresh: Vec<u8>) -> Vec<u8> {
        // Same length as the others, so the receive region always fits.
        fresh.resize(self.slots[i].len(), 0);
        std::mem::replace(&mut self.slots[i], fresh)
    }

    /// Whether slots are in the hand-off layout.
    pub(crate) fn is_handoff(&self) -> bool {
        self.handoff
    }
}

/// Datagrams waiting to be sent: their bytes back to back in one reused
/// buffer, each with its socket key and destination.
pub(crate) struct SendBatch<K> {
    bytes: Vec<u8>,
    items: Vec<(K, SocketAddr, Range<usize>)>,
}

impl<K: Copy + PartialEq> SendBatch<K> {
    pub(crate) fn new() -> Self {
        SendBatch {
            bytes: Vec::with_capacity(SLOT),
            items: Vec::with_capacity(quinn_udp::BATCH_SIZE),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues a datagram whose bytes `write` appends to the buffer.
    pub(crate) fn push_with(&mut self, key: K, to: SocketAddr, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        write(&mut self.bytes);
        self.items.push((key, to, start..self.bytes.len()));
    }

    /// Sends everything queued: runs of datagrams with the same key and
    /// destination and equal sizes (the last may be shorter) leave in one
    /// GSO `sendmsg`. Returns how many datagrams could not be sent.
    pub(crate) fn flush<'a>(&mut self, mut socket_of: impl FnMut(K) -> Option<&'a UdpIo>) -> u64 {
        let mut failed = 0;
        let mut i = 0;
        while i < self.items.len() {
            let (key, to, first) = self.items[i].clone();
            let Some(io) = socket_of(key) else {
                failed += 1;
                i += 1;
                continue;
            };
            let seg = first.len();
            let max = io.max_segments();
            let mut j = i + 1;
            while j < self.items.len() && j - i < max {
                let (k, d, r) = &self.items[j];
                // Contiguous in the buffer by construction (pushed in order).
                if *k != key || *d != to || r.len() > seg {
                    break;
                }
                j += 1;
                if r.len() < seg {
                    break;
                }
            }
            let span = first.start..self.items[j - 1].2.end;
            let segment = (j - i > 1).then_some(seg);
            if io.send(to, &self.bytes[span], segment).is_err() {
                failed += (j - i) as u64;
            }
            i = j;
        }
        self.items.clear();
        self.bytes.clear();
        failed
    }
}
