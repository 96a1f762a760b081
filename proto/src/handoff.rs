//! The datagram hand-off between an in-process TURN relay and the SFU.
//!
//! With the in-process relay backend an allocation's relay address is
//! virtual: what a TURN client sends to the SFU's media address is handed
//! straight to the SFU's input, and what the SFU sends to a relay address is
//! handed straight back to TURN. No relay sockets, no second trip through
//! the kernel. `sfu` and `turn-relay` never depend on each other; `duet`
//! creates a [`pair`] and gives one end to each.
//!
//! Both directions carry the same [`RelayedDatagram`]: `relay_addr` is the
//! virtual relay address of the TURN allocation (the SFU sees it as the
//! remote address of the 5-tuple), `sfu_addr` is the SFU's media address the
//! client addressed (or the SFU sent from).
//!
//! A datagram crosses without being copied: its [`DatagramBuf`] is the very
//! buffer the sender received it into (TURN) or built it in (the SFU), moved
//! to the other side, with room before and after the datagram so that the
//! SFU can decrypt, rewrite and re-encrypt it in place. Buffers come back
//! the other way with the other direction's datagrams; when more flow one
//! way than the other, the side that gathers too many passes them back
//! through [`SpareBuffers`] (once per batch, never per datagram).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// Bytes kept free in front of a datagram in a hand-off buffer (a header
/// may grow in place there).
pub const HEADROOM: usize = 64;
/// Largest datagram a hand-off buffer holds.
pub const MAX_DATAGRAM: usize = 2_048;
/// Bytes kept free after the largest datagram (an SRTP tag may be added).
pub const TAILROOM: usize = 32;
/// Length of a hand-off buffer.
pub const BUFFER_LEN: usize = HEADROOM + MAX_DATAGRAM + TAILROOM;

/// An owned buffer holding one datagram at `data[range]`.
pub struct DatagramBuf {
    data: Vec<u8>,
    range: Range<usize>,
}

impl DatagramBuf {
    /// Takes `data` with the datagram at `range` (clamped into `data`).
    pub fn from_parts(data: Vec<u8>, range: Range<usize>) -> Self {
        let end = range.end.min(data.len());
        let start = range.start.min(end);
        DatagramBuf {
            data,
            range: start..end,
        }
    }

    /// A new buffer of [`BUFFER_LEN`] holding a copy of `bytes` after
    /// [`HEADROOM`] (cut at [`MAX_DATAGRAM`]): for input that did not arrive
    /// in a buffer of its own (a TCP stream, tests).
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::copy_into(vec![0; BUFFER_LEN], bytes)
    }

    /// Like [`Self::copy_from`] into a spare buffer (grown to
    /// [`BUFFER_LEN`] if it is shorter).
    pub fn copy_into(mut data: Vec<u8>, bytes: &[u8]) -> Self {
        if data.len() < BUFFER_LEN {
            data.resize(BUFFER_LEN, 0);
        }
        let n = bytes.len().min(MAX_DATAGRAM);
        data[HEADROOM..HEADROOM + n].copy_from_slice(&bytes[..n]);
        DatagramBuf {
            data,
            range: HEADROOM..HEADROOM + n,
        }
    }

    /// The buffer and where the datagram lies in it.
    pub fn into_parts(self) -> (Vec<u8>, Range<usize>) {
        (self.data, self.range)
    }

    /// The datagram.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.range.clone()]
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

impl std::ops::Deref for DatagramBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Equal when the datagrams are (whatever lies around them).
impl PartialEq for DatagramBuf {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for DatagramBuf {}

impl std::fmt::Debug for DatagramBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramBuf")
            .field("len", &self.len())
            .field("range", &self.range)
            .finish()
    }
}

/// One datagram crossing between TURN and the SFU.
#[derive(Debug, PartialEq, Eq)]
pub struct RelayedDatagram {
    /// The TURN allocation's (virtual) relay address.
    pub relay_addr: SocketAddr,
    /// The SFU media address on the other side.
    pub sfu_addr: SocketAddr,
    pub payload: DatagramBuf,
}

/// Empty buffers passed between the two ends so that neither allocates
/// when more datagrams flow one way than the other. Each side touches it at
/// most once per batch, never per datagram.
#[derive(Clone, Debug, Default)]
pub struct SpareBuffers {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl SpareBuffers {
    /// Most buffers kept (about 2 MiB); more are freed.
    pub const KEEP: usize = 1_024;

    /// Moves the buffers of `from` here (as many as fit; the rest are freed).
    pub fn put(&self, from: &mut Vec<Vec<u8>>) {
        // A poisoned lock only means another thread panicked while moving
        // buffers: the list itself is still a list of buffers.
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let room = Self::KEEP.saturating_sub(free.len());
        let n = from.len().min(room);
        free.extend(from.drain(..n));
        from.clear();
    }

    /// Moves up to `n` buffers into `into`; returns how many.
    pub fn take(&self, n: usize, into: &mut Vec<Vec<u8>>) -> usize {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let n = n.min(free.len());
        let at = free.len() - n;
        into.extend(free.drain(at..));
        n
    }

    /// Buffers waiting.
    pub fn len(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sending half: never blocks; a full queue drops (as a congested UDP
/// socket would) and reports it so the caller can count the drop.
#[derive(Clone, Debug)]
pub struct HandoffSender {
    tx: mpsc::Sender<RelayedDatagram>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error("hand-off queue full")]
    Full,
    #[error("other side gone")]
    Closed,
}

impl HandoffSender {
    pub fn send(&self, dgram: RelayedDatagram) -> Result<(), HandoffError> {
        self.tx.try_send(dgram).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => HandoffError::Full,
            mpsc::error::TrySendError::Closed(_) => HandoffError::Closed,
        })
    }
}

/// What became of a batch given to [`HandoffSender::send_batch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchSent {
    pub sent: u64,
    /// Dropped because the queue was full.
    pub full: u64,
    /// Dropped because the other side is gone.
    pub closed: u64,
}

impl BatchSent {
    pub fn dropped(&self) -> u64 {
        self.full + self.closed
    }
}

impl HandoffSender {
    /// Sends a batch (e.g. everything one socket read produced): the
    /// receiver is woken once for it rather than once per datagram when it
    /// is already waiting. Never blocks; what does not fit is dropped.
    pub fn send_batch(&self, batch: impl IntoIterator<Item = RelayedDatagram>) -> BatchSent {
        let mut out = BatchSent::default();
        for d in batch {
            match self.tx.try_send(d) {
                Ok(()) => out.sent += 1,
                Err(mpsc::error::TrySendError::Full(_)) => out.full += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => out.closed += 1,
            }
        }
        out
    }
}

/// Receiving half, polled by the owner's event loop.
#[derive(Debug)]
pub struct HandoffReceiver {
    rx: mpsc::Receiver<RelayedDatagram>,
}

impl HandoffReceiver {
    pub async fn recv(&mut self) -> Option<RelayedDatagram> {
        self.rx.recv().await
    }

    /// Receives up to `limit` datagrams already queued, waiting for at least one.
    pub async fn recv_many(&mut self, buf: &mut Vec<RelayedDatagram>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit).await
    }

    pub fn try_recv(&mut self) -> Option<RelayedDatagram> {
        self.rx.try_recv().ok()
    }
}

/// The SFU's end: receives what TURN clients relay to the SFU, sends the
/// SFU's datagrams for relay addresses back to TURN.
#[derive(Debug)]
pub struct SfuEnd {
    pub from_turn: HandoffReceiver,
    pub to_turn: HandoffSender,
    /// Shared with the TURN end.
    pub spares: SpareBuffers,
}

/// The TURN relay's end.
#[derive(Debug)]
pub struct TurnEnd {
    pub from_sfu: HandoffReceiver,
    pub to_sfu: HandoffSender,
    /// Shared with the SFU end.
    pub spares: SpareBuffers,
}

/// Creates the two connected ends, each queue holding up to `capacity` datagrams.
pub fn pair(capacity: usize) -> (SfuEnd, TurnEnd) {
    let (to_sfu, from_turn) = mpsc::channel(capacity);
    let (to_turn, from_sfu) = mpsc::channel(capacity);
    let spares = SpareBuffers::default();
    (
        SfuEnd {
            from_turn: HandoffReceiver { rx: from_turn },
            to_turn: HandoffSender { tx: to_turn },
            spares: spares.clone(),
        },
        TurnEnd {
            from_sfu: HandoffReceiver { rx: from_sfu },
            to_sfu: HandoffSender { tx: to_sfu },
            spares,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dgram(payload: &[u8]) -> RelayedDatagram {
        RelayedDatagram {
            relay_addr: "127.0.0.1:40000".parse().unwrap(),
            sfu_addr: "127.0.0.1:50000".parse().unwrap(),
            payload: DatagramBuf::copy_from(payload),
        }
    }

    #[tokio::test]
    async fn datagrams_cross_both_ways_and_full_queue_drops() {
        let (mut sfu, mut turn) = pair(1);
        turn.to_sfu.send(dgram(b"x")).unwrap();
        assert_eq!(turn.to_sfu.send(dgram(b"x")), Err(HandoffError::Full));
        assert_eq!(sfu.from_turn.recv().await.unwrap(), dgram(b"x"));
        sfu.to_turn.send(dgram(b"x")).unwrap();
        assert_eq!(turn.from_sfu.recv().await.unwrap(), dgram(b"x"));
    }

    #[tokio::test]
    async fn a_batch_arrives_in_order_and_what_does_not_fit_is_counted() {
        let (mut sfu, turn) = pair(2);
        let sent = turn.to_sfu.send_batch((0..3u8).map(|n| dgram(&[n])));
        assert_eq!((sent.sent, sent.full, sent.dropped()), (2, 1, 1));
        let mut got = Vec::new();
        sfu.from_turn.recv_many(&mut got, 8).await;
        assert_eq!(got, vec![dgram(&[0]), dgram(&[1])]);
    }

    #[tokio::test]
    async fn the_buffer_a_datagram_was_received_into_is_the_one_that_arrives() {
        let (mut sfu, turn) = pair(1);
        let mut buf = vec![0u8; BUFFER_LEN];
        buf[HEADROOM..HEADROOM + 5].copy_from_slice(b"media");
        let at = buf.as_ptr();
        turn.to_sfu
            .send(RelayedDatagram {
                payload: DatagramBuf::from_parts(buf, HEADROOM..HEADROOM + 5),
                ..dgram(b"")
            })
            .unwrap();
        let (data, range) = sfu.from_turn.recv().await.unwrap().payload.into_parts();
        assert_eq!((data.as_ptr(), &data[range.clone()]), (at, &b"media"[..]));
        assert_eq!(range, HEADROOM..HEADROOM + 5, "the room around it is kept");
    }

    #[test]
    fn a_range_outside_the_buffer_is_clamped() {
        let d = DatagramBuf::from_parts(vec![1, 2, 3], 2..9);
        assert_eq!(d.as_slice(), &[3]);
        let d = DatagramBuf::from_parts(vec![1, 2, 3], 7..9);
        assert!(d.is_empty());
        assert_eq!(DatagramBuf::copy_from(&[7; 3000]).len(), MAX_DATAGRAM);
    }

    #[test]
    fn spare_buffers_pass_between_the_ends_up_to_a_limit() {
        let (sfu, turn) = pair(1);
        let mut give: Vec<Vec<u8>> = (0..SpareBuffers::KEEP + 5).map(|_| Vec::new()).collect();
        sfu.spares.put(&mut give);
        assert!(give.is_empty());
        assert_eq!(turn.spares.len(), SpareBuffers::KEEP);
        let mut got = Vec::new();
        assert_eq!(turn.spares.take(10, &mut got), 10);
        assert_eq!((got.len(), sfu.spares.len()), (10, SpareBuffers::KEEP - 10));
    }
}
