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

use bytes::Bytes;
use std::net::SocketAddr;
use tokio::sync::mpsc;

/// One datagram crossing between TURN and the SFU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayedDatagram {
    /// The TURN allocation's (virtual) relay address.
    pub relay_addr: SocketAddr,
    /// The SFU media address on the other side.
    pub sfu_addr: SocketAddr,
    pub payload: Bytes,
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
}

/// The TURN relay's end.
#[derive(Debug)]
pub struct TurnEnd {
    pub from_sfu: HandoffReceiver,
    pub to_sfu: HandoffSender,
}

/// Creates the two connected ends, each queue holding up to `capacity` datagrams.
pub fn pair(capacity: usize) -> (SfuEnd, TurnEnd) {
    let (to_sfu, from_turn) = mpsc::channel(capacity);
    let (to_turn, from_sfu) = mpsc::channel(capacity);
    (
        SfuEnd {
            from_turn: HandoffReceiver { rx: from_turn },
            to_turn: HandoffSender { tx: to_turn },
        },
        TurnEnd {
            from_sfu: HandoffReceiver { rx: from_sfu },
            to_sfu: HandoffSender { tx: to_sfu },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_cross_both_ways_and_full_queue_drops() {
        let (mut sfu, mut turn) = pair(1);
        let d = RelayedDatagram {
            relay_addr: "127.0.0.1:40000".parse().unwrap(),
            sfu_addr: "127.0.0.1:50000".parse().unwrap(),
            payload: Bytes::from_static(b"x"),
        };
        turn.to_sfu.send(d.clone()).unwrap();
        assert_eq!(turn.to_sfu.send(d.clone()), Err(HandoffError::Full));
        assert_eq!(sfu.from_turn.recv().await.unwrap(), d);
        sfu.to_turn.send(d.clone()).unwrap();
        assert_eq!(turn.from_sfu.recv().await.unwrap(), d);
    }

    #[tokio::test]
    async fn a_batch_arrives_in_order_and_what_does_not_fit_is_counted() {
        let (mut sfu, turn) = pair(2);
        let d = |n: u8| RelayedDatagram {
            relay_addr: "127.0.0.1:40000".parse().unwrap(),
            sfu_addr: "127.0.0.1:50000".parse().unwrap(),
            payload: Bytes::from(vec![n]),
        };
        let sent = turn.to_sfu.send_batch((0..3).map(d));
        assert_eq!((sent.sent, sent.full, sent.dropped()), (2, 1, 1));
        let mut got = Vec::new();
        sfu.from_turn.recv_many(&mut got, 8).await;
        assert_eq!(got, vec![d(0), d(1)]);
    }
}
