//! RTCP sender and receiver report state (RFC 3550 6.4, appendix A).
//!
//! - [`SendStats`], one per outgoing stream: packet and octet counts and
//!   the RTP↔NTP mapping for the sender report (SR), so receivers can sync
//!   audio to video and compute the round-trip time; also reads the RTT
//!   back from the receiver's report block about this stream.
//! - [`RecvStats`], one per incoming stream: sequence tracking (A.1), loss
//!   (A.3), interarrival jitter (A.8) and the LSR/DLSR of the remote's SRs,
//!   for the reception report block of our SR/RR.
//! - [`write_compound`] writes an SR or RR followed by an SDES CNAME
//!   (a compound packet, RFC 3550 6.1) with `rtc::rtcp`'s types.
//!
//! The wall clock is not read here: the caller passes a [`WallClock`]
//! (one `SystemTime` reading paired with the `Instant` it was taken at).

use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtc::shared::marshal::{Marshal, MarshalSize};
use std::time::{Duration, Instant};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// Maps `Instant`s to wall-clock time: `since_unix_epoch` was the wall
/// clock at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    pub at: Instant,
    pub since_unix_epoch: Duration,
}

impl WallClock {
    /// The 64-bit NTP timestamp (32.32 fixed point seconds since 1900) of `now`.
    pub fn ntp(&self, now: Instant) -> u64 {
        let unix = if now >= self.at {
            self.since_unix_epoch + (now - self.at)
        } else {
            self.since_unix_epoch.saturating_sub(self.at - now)
        };
        let secs = unix.as_secs() + NTP_UNIX_OFFSET_SECS;
        let frac = (u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }
}

/// The middle 32 bits of an NTP timestamp (the "compact" form of LSR).
fn ntp_mid(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// `d` in units of 1/65536 s (DLSR), saturating.
fn to_compact(d: Duration) -> u32 {
    u32::try_from(d.as_nanos() * 65_536 / 1_000_000_000).unwrap_or(u32::MAX)
}

/// `d` in RTP timestamp units of `clock_rate`, modulo 2^32.
fn to_rtp_units(d: Duration, clock_rate: u32) -> u32 {
    (d.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32
}

/// Sender state of one outgoing RTP stream.
#[derive(Clone, Debug)]
pub struct SendStats {
    clock_rate: u32,
    packets: u32,
    /// Payload octets (header and padding excluded, RFC 3550 6.4.1).
    octets: u32,
    /// RTP timestamp of the latest packet sent, and when it was sent.
    last: Option<(u32, Instant)>,
}

impl SendStats {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            packets: 0,
            octets: 0,
            last: None,
        }
    }

    /// Records a packet sent at `now` with timestamp `rtp_ts` and
    /// `payload_len` octets of payload.
    pub fn on_sent(&mut self, rtp_ts: u32, payload_len: usize, now: Instant) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        self.last = Some((rtp_ts, now));
    }

    /// The SR of this stream at `now` (no report blocks): NTP time of
    /// `now`, the RTP timestamp the stream would have at `now`
    /// (extrapolated from the latest packet at the clock rate) and the
    /// counts. `None` until a packet was sent.
    pub fn sender_report(&self, ssrc: u32, now: Instant, wall: &WallClock) -> Option<SenderReport> {
        let (ts, at) = self.last?;
        Some(SenderReport {
            ssrc,
            ntp_time: wall.ntp(now),
            rtp_time: ts.wrapping_add(to_rtp_units(now.saturating_duration_since(at), self.clock_rate)),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }

    /// The round-trip time from a receiver's report block about this
    /// stream, received at `now` (RFC 3550 6.4.1: now − LSR − DLSR).
    /// `None` if the receiver has no SR of ours yet or the result is not
    /// plausible (negative).
    pub fn rtt_from(report: &ReceptionReport, now: Instant, wall: &WallClock) -> Option<Duration> {
        if report.last_sender_report == 0 {
            return None;
        }
        let rtt = ntp_mid(wall.ntp(now))
            .wrapping_sub(report.last_sender_report)
            .wrapping_sub(report.delay);
        (rtt < 1 << 31).then(|| Duration::from_nanos(u64::from(rtt) * 1_000_000_000 / 65_536))
    }
}

const SEQ_MOD: u32 = 1 << 16;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u32 = 100;

/// Receiver state of one incoming RTP stream.
#[derive(Clone, Debug)]
pub struct RecvStats {
    clock_rate: u32,
    /// Per RFC 3550 A.1 (`max_seq`, `cycles`, ...); `None` before the first packet.
    seq: Option<SeqState>,
    /// First arrival: the origin of arrival times in RTP units.
    first_arrival: Option<Instant>,
    /// Previous packet's relative transit time (A.8).
    transit: Option<u32>,
    /// Interarrival jitter × 16 (A.8's integer form).
    jitter_q4: u32,
    /// LSR of the latest SR from the source, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

#[derive(Clone, Copy, Debug)]
struct SeqState {
    max_seq: u16,
    /// Shifted count of sequence number wraps.
    cycles: u32,
    base_seq: u32,
    /// Last "bad" sequence number + 1 (a second packet after it
    /// confirms a jump as a restart).
    bad_seq: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
}

impl SeqState {
    fn new(seq: u16) -> Self {
        Self {
            max_seq: seq,
            cycles: 0,
            base_seq: u32::from(seq),
            bad_seq: SEQ_MOD + 1,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
        }
    }

    /// RFC 3550 A.1 `update_seq` (without probation): whether the packet
    /// counts as received.
    fn update(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += SEQ_MOD;
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= SEQ_MOD - MAX_MISORDER {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a jump: the source restarted.
                *self = Self::new(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD - 1);
                return false;
            }
        }
        self.received += 1;
        true
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }
}

impl RecvStats {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            seq: None,
            first_arrival: None,
            transit: None,
            jitter_q4: 0,
            last_sr: None,
        }
    }

    /// Records a packet with `seq` and `rtp_ts` arriving at `now`.
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, now: Instant) {
        let state = self.seq.get_or_insert_with(|| SeqState::new(seq));
        if !state.update(seq) {
            return;
        }
        let first = *self.first_arrival.get_or_insert(now);
        let arrival = to_rtp_units(now.saturating_duration_since(first), self.clock_rate);
        let transit = arrival.wrapping_sub(rtp_ts);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            // J += (|D| − J) / 16, kept ×16 to stay in integers (A.8).
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Records an SR from the source (its NTP timestamp) arriving at `now`.
    pub fn on_sender_report(&mut self, ntp_time: u64, now: Instant) {
        self.last_sr = Some((ntp_mid(ntp_time), now));
    }

    /// The interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// The report block about this stream (`ssrc`: the source's SSRC) to
    /// send at `now`; starts a new loss interval. `None` before the first
    /// packet.
    pub fn reception_report(&mut self, ssrc: u32, now: Instant) -> Option<ReceptionReport> {
        let s = self.seq.as_mut()?;
        let extended_max = s.extended_max();
        let expected = extended_max.wrapping_sub(s.base_seq).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(s.received);
        let expected_interval = expected.wrapping_sub(s.expected_prior);
        let received_interval = s.received.wrapping_sub(s.received_prior);
        s.expected_prior = expected;
        s.received_prior = s.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sender_report, delay) = match self.last_sr {
            Some((lsr, at)) => (lsr, to_compact(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        Some(ReceptionReport {
            ssrc,
            fraction_lost,
            // 24-bit signed on the wire (two's complement when duplicates
            // outnumber losses).
            total_lost: (lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0xff_ffff,
            last_sequence_number: extended_max,
            jitter: self.jitter(),
            last_sender_report,
            delay,
        })
    }
}

/// The report that opens an RTCP compound packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportPacket {
    Sender(SenderReport),
    Receiver(ReceiverReport),
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("output buffer too small for the report ({need} bytes)")]
    BufferTooSmall { need: usize },
    #[error("report not encodable: {0}")]
    Encode(#[from] rtc::shared::error::Error),
}

/// Writes `report` then an SDES with the reporter's `cname` into `out`
/// (RFC 3550 6.1: a compound starts with SR/RR and carries a CNAME).
/// Returns the length.
pub fn write_compound(report: &ReportPacket, cname: &str, out: &mut [u8]) -> Result<usize, ReportError> {
    let sdes = |ssrc: u32| SourceDescription {
        chunks: vec![SourceDescriptionChunk {
            source: ssrc,
            items: vec![SourceDescriptionItem {
                sdes_type: SdesType::SdesCname,
                text: bytes::Bytes::copy_from_slice(cname.as_bytes()),
            }],
        }],
    };
    let (first, sdes): (&dyn Marshal, SourceDescription) = match report {
        ReportPacket::Sender(sr) => (sr, sdes(sr.ssrc)),
        ReportPacket::Receiver(rr) => (rr, sdes(rr.ssrc)),
    };
    let need = first.marshal_size() + sdes.marshal_size();
    if out.len() < need {
        return Err(ReportError::BufferTooSmall { need });
    }
    let n = first.marshal_to(out)?;
    Ok(n + sdes.marshal_to(&mut out[n..])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rtc::rtcp::packet::unmarshal;

    const MS: Duration = Duration::from_millis(1);

    fn wall(t0: Instant) -> WallClock {
        // 2020-09-13T12:26:40Z.
        WallClock {
            at: t0,
            since_unix_epoch: Duration::from_secs(1_600_000_000),
        }
    }

    #[test]
    fn ntp_time_is_the_wall_clock_plus_the_elapsed_instant() {
        let t0 = Instant::now();
        let w = wall(t0);
        let secs = 1_600_000_000u64 + NTP_UNIX_OFFSET_SECS;
        assert_eq!(w.ntp(t0), secs << 32);
        // Half a second later: fraction 0x8000_0000.
        assert_eq!(w.ntp(t0 + 500 * MS), (secs << 32) | 0x8000_0000);
        assert_eq!(
            ntp_mid(w.ntp(t0 + 500 * MS)),
            ((secs as u32 & 0xffff) << 16) | 0x8000
        );
    }

    #[test]
    fn sender_report_extrapolates_the_rtp_timestamp_and_counts_payload() {
        let t0 = Instant::now();
        let mut s = SendStats::new(90_000);
        assert!(s.sender_report(7, t0, &wall(t0)).is_none());
        s.on_sent(1_000, 1_100, t0);
        s.on_sent(4_000, 900, t0 + 10 * MS);
        let sr = s.sender_report(7, t0 + 110 * MS, &wall(t0)).expect("sent");
        assert_eq!(sr.ssrc, 7);
        // 100 ms after the last packet at 90 kHz: +9000.
        assert_eq!(sr.rtp_time, 13_000);
        assert_eq!((sr.packet_count, sr.octet_count), (2, 2_000));
        assert_eq!(sr.ntp_time, wall(t0).ntp(t0 + 110 * MS));
    }

    #[test]
    fn rtt_is_now_minus_lsr_minus_dlsr() {
        let t0 = Instant::now();
        let w = wall(t0);
        let lsr = ntp_mid(w.ntp(t0));
        // The receiver held our SR for 30 ms and its report reached us 80 ms after the SR left.
        let rr = ReceptionReport {
            last_sender_report: lsr,
            delay: to_compact(30 * MS),
            ..Default::default()
        };
        let rtt = SendStats::rtt_from(&rr, t0 + 80 * MS, &w).expect("plausible");
        assert!(rtt.abs_diff(50 * MS) < Duration::from_micros(100), "{rtt:?}");
        let none = ReceptionReport::default();
        assert_eq!(SendStats::rtt_from(&none, t0, &w), None);
    }

    #[test]
    fn jitter_follows_appendix_a8_for_a_known_arrival_pattern() {
        // 8 kHz audio, a packet every 20 ms (160 units); the third arrives
        // 5 ms late. Transit (units): 0, 0, 40, 0 → |D| = 0, 40, 40.
        // J×16: 0 → 0 + 0 − 0 = 0 → 0 + 40 − 0 = 40 → 40 + 40 − 3 = 77; J = 77 >> 4 = 4.
        let t0 = Instant::now();
        let mut r = RecvStats::new(8_000);
        for (i, arrival_ms) in [0u64, 20, 45, 60].into_iter().enumerate() {
            r.on_packet(i as u16, 160 * i as u32, t0 + Duration::from_millis(arrival_ms));
        }
        assert_eq!(r.jitter(), 4);
        assert_eq!(r.reception_report(1, t0 + 60 * MS).expect("received").jitter, 4);
    }

    #[test]
    fn steady_arrivals_have_zero_jitter_whatever_the_offset() {
        let t0 = Instant::now();
        let mut r = RecvStats::new(90_000);
        for i in 0..100u32 {
            r.on_packet(
                i as u16,
                5_000_000 + 3_000 * i,
                t0 + Duration::from_micros(33_333) * i,
            );
        }
        assert!(r.jitter() <= 1, "{}", r.jitter());
    }

    #[test]
    fn loss_is_counted_per_interval_and_cumulatively() {
        let t0 = Instant::now();
        let mut r = RecvStats::new(90_000);
        for seq in (0u16..10).filter(|s| *s != 3 && *s != 4) {
            r.on_packet(seq, 0, t0);
        }
        let rep = r.reception_report(9, t0).expect("received");
        // 2 of 10 lost: (2 << 8) / 10 = 51.
        assert_eq!(
            (rep.fraction_lost, rep.total_lost, rep.last_sequence_number),
            (51, 2, 9)
        );
        for seq in 10u16..20 {
            r.on_packet(seq, 0, t0);
        }
        let rep = r.reception_report(9, t0).expect("received");
        assert_eq!((rep.fraction_lost, rep.total_lost), (0, 2));
        r.on_packet(3, 0, t0); // late, repaired
        let rep = r.reception_report(9, t0).expect("received");
        assert_eq!((rep.fraction_lost, rep.total_lost), (0, 1));
    }

    #[test]
    fn extended_highest_sequence_counts_wraps() {
        let t0 = Instant::now();
        let mut r = RecvStats::new(90_000);
        for i in 0..20u32 {
            r.on_packet(65_530u16.wrapping_add(i as u16), 0, t0);
        }
        let rep = r.reception_report(1, t0).expect("received");
        assert_eq!(rep.last_sequence_number, (1 << 16) + 13);
        assert_eq!(rep.total_lost, 0);
    }

    #[test]
    fn a_jump_confirmed_by_a_second_packet_restarts_the_stream() {
        let t0 = Instant::now();
        let mut r = RecvStats::new(90_000);
        for seq in 0u16..5 {
            r.on_packet(seq, 0, t0);
        }
        r.on_packet(30_000, 0, t0); // ignored once
        assert_eq!(
            r.reception_report(1, t0).expect("received").last_sequence_number,
            4
        );
        r.on_packet(30_001, 0, t0);
        let rep = r.reception_report(1, t0).expect("received");
        assert_eq!((rep.last_sequence_number, rep.total_lost), (30_001, 0));
    }

    #[test]
    fn lsr_and_dlsr_come_from_the_latest_sender_report() {
        let t0 = Instant::now();
        let mut r = RecvStats::new(48_000);
        r.on_packet(1, 0, t0);
        assert_eq!(r.reception_report(1, t0).expect("received").last_sender_report, 0);
        let ntp = 0x1122_3344_5566_7788u64;
        r.on_sender_report(ntp, t0);
        let rep = r.reception_report(1, t0 + 250 * MS).expect("received");
        assert_eq!(rep.last_sender_report, 0x3344_5566);
        assert_eq!(rep.delay, 16_384); // 0.25 s × 65536
    }

    #[test]
    fn compound_is_the_report_then_the_cname() {
        let sr = SenderReport {
            ssrc: 0xdead_beef,
            ntp_time: 1,
            rtp_time: 2,
            packet_count: 3,
            octet_count: 4,
            ..Default::default()
        };
        let mut out = [0u8; 256];
        let n = write_compound(&ReportPacket::Sender(sr.clone()), "duet", &mut out).expect("fits");
        let packets = unmarshal(&mut &out[..n]).expect("valid compound");
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].as_any().downcast_ref::<SenderReport>(), Some(&sr));
        let sdes = packets[1]
            .as_any()
            .downcast_ref::<SourceDescription>()
            .expect("SDES");
        assert_eq!(sdes.chunks[0].source, 0xdead_beef);
        assert_eq!(&sdes.chunks[0].items[0].text[..], b"duet");
        let rr = ReportPacket::Receiver(ReceiverReport {
            ssrc: 5,
            ..Default::default()
        });
        assert!(matches!(
            write_compound(&rr, "duet", &mut [0u8; 8]),
            Err(ReportError::BufferTooSmall { .. })
        ));
    }

    proptest! {
        #[test]
        fn cumulative_loss_equals_the_numbers_never_received(
            start in any::<u16>(),
            lost in proptest::collection::vec(any::<bool>(), 2..2000),
        ) {
            let t0 = Instant::now();
            let mut r = RecvStats::new(90_000);
            let n = lost.len();
            let mut missing = 0u32;
            for (i, &l) in lost.iter().enumerate() {
                if l && i != 0 && i != n - 1 {
                    missing += 1;
                } else {
                    r.on_packet(start.wrapping_add(i as u16), 0, t0);
                }
            }
            let rep = r.reception_report(1, t0).expect("received");
            prop_assert_eq!(rep.total_lost, missing);
            prop_assert_eq!(rep.last_sequence_number, u32::from(start) + n as u32 - 1);
        }
    }
}
