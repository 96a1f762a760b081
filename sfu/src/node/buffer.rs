//! Datagram buffers that travel from the socket through the node and back
//! to the socket without being copied or reallocated.
//!
//! The I/O loop takes a buffer from the node's pool, receives a datagram
//! into it (after [`HEADROOM`] bytes kept free for a header that grows), and
//! hands it to the node, which decrypts, rewrites and re-encrypts the packet
//! inside the same buffer and returns it as a [`Transmit`]. After sending,
//! the loop gives the buffer back ([`BufferPool::put`]). In steady state no
//! buffer is allocated.

use std::ops::Range;

use super::rtp::HEADROOM;

// Buffers cross the in-process TURN hand-off both ways without a copy, so
// the hand-off's layout must leave the room the node needs.
const _: () = assert!(
    proto::handoff::HEADROOM >= HEADROOM
        && proto::handoff::TAILROOM >= TAILROOM
        && proto::handoff::BUFFER_LEN == BUFFER_LEN
);

/// Room after a datagram for an SRTP tag and SRTCP index (GCM: 16 + 4).
pub const TAILROOM: usize = 32;
/// Largest datagram a buffer holds: above the node's limit (1,600 by
/// default), so an oversized datagram is seen whole and counted as such.
pub const MAX_DATAGRAM: usize = 2_048;
/// Size of one buffer.
pub const BUFFER_LEN: usize = HEADROOM + MAX_DATAGRAM + TAILROOM;

/// One datagram in a reusable buffer: the bytes are `data[start..end]`.
#[derive(Debug)]
pub struct PacketBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl PacketBuf {
    fn new() -> Self {
        Self {
            data: vec![0; BUFFER_LEN],
            start: HEADROOM,
            end: HEADROOM,
        }
    }

    /// A buffer holding a copy of `bytes` (tests, hand-off input, GRO
    /// segments). Too long input is cut at [`MAX_DATAGRAM`].
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut b = Self::new();
        let n = bytes.len().min(MAX_DATAGRAM);
        b.data[HEADROOM..HEADROOM + n].copy_from_slice(&bytes[..n]);
        b.end = HEADROOM + n;
        b
    }

    /// Takes a buffer that crossed the TURN hand-off holding a datagram at
    /// `data[range]`, without copying it. When it lacks the room the node
    /// needs around the datagram it comes back as `Err` (copy it instead).
    pub fn adopt(data: Vec<u8>, range: Range<usize>) -> Result<Self, (Vec<u8>, Range<usize>)> {
        let fits = data.len() == BUFFER_LEN
            && range.start >= HEADROOM
            && range.start <= range.end
            && range.len() <= MAX_DATAGRAM
            && range.end + TAILROOM <= data.len();
        if !fits {
            return Err((data, range));
        }
        Ok(Self {
            data,
            start: range.start,
            end: range.end,
        })
    }

    /// The buffer and where the datagram lies in it (to hand it to TURN).
    pub fn into_parts(self) -> (Vec<u8>, Range<usize>) {
        (self.data, self.start..self.end)
    }

    /// Where the socket writes a received datagram; then call [`Self::set_received`].
    pub fn receive_space(&mut self) -> &mut [u8] {
        &mut self.data[HEADROOM..HEADROOM + MAX_DATAGRAM]
    }

    /// Marks `len` bytes of [`Self::receive_space`] as the datagram.
    pub fn set_received(&mut self, len: usize) {
        self.start = HEADROOM;
        self.end = HEADROOM + len.min(MAX_DATAGRAM);
    }

    /// The datagram.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The whole buffer and the datagram's range, for in-place work.
    pub(super) fn parts(&mut self) -> (&mut [u8], usize, usize) {
        (&mut self.data, self.start, self.end)
    }

    pub(super) fn set_range(&mut self, start: usize, end: usize) {
        debug_assert!(start <= end && end <= self.data.len());
        self.start = start;
        self.end = end;
    }

    /// Replaces the content with `bytes` (at the usual headroom).
    pub(super) fn fill(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(MAX_DATAGRAM + TAILROOM);
        self.data[HEADROOM..HEADROOM + n].copy_from_slice(&bytes[..n]);
        self.start = HEADROOM;
        self.end = HEADROOM + n;
    }

    /// The plain-text region after the datagram, for building a packet in
    /// place (`data[HEADROOM..]`).
    pub(super) fn build_space(&mut self) -> &mut [u8] {
        &mut self.data[HEADROOM..]
    }
}

/// Free buffers, reused for every datagram.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Vec<PacketBuf>,
    allocated: usize,
}

impl BufferPool {
    /// Most buffers kept free; more are dropped when returned.
    const KEEP: usize = 4_096;

    /// A free buffer (allocated only when the pool is empty).
    pub fn take(&mut self) -> PacketBuf {
        self.free.pop().unwrap_or_else(|| {
            self.allocated += 1;
            PacketBuf::new()
        })
    }

    /// Gives a buffer back (emptied: its next user starts at the headroom).
    pub fn put(&mut self, mut buf: PacketBuf) {
        if self.free.len() < Self::KEEP {
            buf.start = HEADROOM;
            buf.end = HEADROOM;
            self.free.push(buf);
        }
    }

    /// Buffers ever allocated (a steady count means no allocation per packet).
    pub fn allocated(&self) -> usize {
        self.allocated
    }
}

/// A datagram for the network: to `path`, the bytes of `buf`.
#[derive(Debug)]
pub struct Transmit {
    pub path: crate::routing::PathAddr,
    pub buf: PacketBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_off_buffer_is_adopted_as_it_is_and_given_back_the_same_way() {
        let mut data = vec![0u8; BUFFER_LEN];
        data[HEADROOM..HEADROOM + 4].copy_from_slice(b"srtp");
        let at = data.as_ptr();
        let buf = PacketBuf::adopt(data, HEADROOM..HEADROOM + 4).expect("hand-off layout");
        assert_eq!(buf.as_slice(), b"srtp");
        let (data, range) = buf.into_parts();
        assert_eq!(
            (data.as_ptr(), range),
            (at, HEADROOM..HEADROOM + 4),
            "no copy either way"
        );
    }

    #[test]
    fn a_buffer_without_room_around_the_datagram_is_refused() {
        let refused = |len: usize, range: Range<usize>| PacketBuf::adopt(vec![0; len], range).is_err();
        assert!(refused(BUFFER_LEN, 0..4), "no headroom");
        assert!(refused(BUFFER_LEN, HEADROOM..BUFFER_LEN), "no tailroom");
        assert!(
            refused(BUFFER_LEN - 1, HEADROOM..HEADROOM + 4),
            "not a pool buffer"
        );
        let (start, end) = (HEADROOM + 8, HEADROOM + 4);
        assert!(refused(BUFFER_LEN, start..end), "reversed range");
        assert!(!refused(BUFFER_LEN, HEADROOM + 32..BUFFER_LEN - TAILROOM));
    }
}
