//! The media loop's side of the in-process TURN hand-off
//! ([`proto::handoff`]). Datagrams cross in the buffers they live in: one a
//! TURN client relayed arrives in the buffer TURN received it into and
//! becomes the node's [`PacketBuf`] as it is; one the node sends to a relay
//! address leaves in its own buffer, and all of a loop turn's leave
//! together. The node's buffer pool and TURN's stay level through
//! [`SpareBuffers`], touched at most once per loop turn.

use std::net::SocketAddr;

use proto::handoff::{DatagramBuf, HandoffSender, RelayedDatagram, SfuEnd, SpareBuffers, HEADROOM};

use crate::metrics::Metrics;
use crate::node::buffer::PacketBuf;
use crate::node::Node;

/// How far the buffers that came from TURN and those that went to it may
/// drift apart before the difference is evened out through the spares.
const BALANCE_STEP: i64 = 64;

pub(crate) struct TurnLink {
    to_turn: HandoffSender,
    spares: SpareBuffers,
    /// What the node sent to relay addresses this loop turn.
    out: Vec<RelayedDatagram>,
    /// Buffers received from TURN minus buffers sent to it, not yet evened out.
    owed: i64,
    /// Scratch list for moving spare buffers.
    moving: Vec<Vec<u8>>,
    metrics: Metrics,
}

impl TurnLink {
    /// Takes the sending half and the spares of the SFU's end; the caller
    /// keeps the receiving half to wait on.
    pub(crate) fn new(end: SfuEnd, metrics: Metrics) -> (Self, proto::handoff::HandoffReceiver) {
        let link = TurnLink {
            to_turn: end.to_turn,
            spares: end.spares,
            out: Vec::with_capacity(64),
            owed: 0,
            moving: Vec::with_capacity(BALANCE_STEP as usize),
            metrics,
        };
        (link, end.from_turn)
    }

    /// A datagram from TURN as a node buffer: the buffer it arrived in when
    /// that leaves the node the room it needs, otherwise a copy.
    pub(crate) fn adopt(&mut self, node: &mut Node, d: DatagramBuf) -> PacketBuf {
        self.metrics.handoff_in.inc();
        self.owed += 1;
        let (data, range) = d.into_parts();
        match PacketBuf::adopt(data, range) {
            Ok(buf) => buf,
            Err((data, range)) => {
                let mut buf = node.buffer();
                let n = range.len().min(buf.receive_space().len());
                buf.receive_space()[..n].copy_from_slice(&data[range.start..range.start + n]);
                buf.set_received(n);
                buf
            }
        }
    }

    /// Queues a datagram the node sends from `sfu_addr` to relay address
    /// `relay_addr`; its buffer goes with it.
    pub(crate) fn queue(&mut self, relay_addr: SocketAddr, sfu_addr: SocketAddr, buf: PacketBuf) {
        let (data, range) = buf.into_parts();
        self.out.push(RelayedDatagram {
            relay_addr,
            sfu_addr,
            payload: DatagramBuf::from_parts(data, range),
        });
    }

    /// Hands this turn's datagrams to TURN in one batch and evens out the
    /// buffer pools.
    pub(crate) fn flush(&mut self, node: &mut Node) {
        if !self.out.is_empty() {
            self.owed -= self.out.len() as i64;
            let sent = self.to_turn.send_batch(self.out.drain(..));
            self.metrics.handoff_out.inc_by(sent.sent);
            for _ in 0..sent.full {
                self.metrics.drop("handoff_full");
            }
            for _ in 0..sent.closed {
                self.metrics.drop("write_failed");
            }
        }
        if self.owed > BALANCE_STEP {
            // TURN sends more than it gets back: give it buffers.
            for _ in 0..BALANCE_STEP {
                self.moving.push(node.buffer().into_parts().0);
            }
            self.spares.put(&mut self.moving);
            self.owed -= BALANCE_STEP;
        } else if self.owed < -BALANCE_STEP {
            // The node sends more to TURN than it gets back: take buffers.
            self.spares.take(BALANCE_STEP as usize, &mut self.moving);
            for data in self.moving.drain(..) {
                if let Ok(buf) = PacketBuf::adopt(data, HEADROOM..HEADROOM) {
                    node.recycle(buf);
                }
            }
            self.owed += BALANCE_STEP;
        }
    }
}
