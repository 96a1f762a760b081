//! RTCP both ways: what subscribers ask for (keyframes, retransmissions,
//! bandwidth) and what the node tells publishers (PLI, NACK, REMB) and
//! everyone (sender and receiver reports).

use super::participant::Kind;
use super::rtp::{rewrite_for_leg, wrap_rtx_in_place, LegHeader, RtpView};
use super::Node;
use crate::endpoint::srtp::SRTP_MAX_OVERHEAD;
use crate::routing::Key;
use crate::stream::history::HistoryConfig;
use crate::stream::reports::{write_compound, ReportPacket, SendStats};
use proto::token::SfuRole;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport as RtcpReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport as RtcpSenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::shared::marshal::Marshal;
use std::time::{Duration, Instant};

/// Shortest window of a source's NACK history. A subscriber notices a loss
/// when the next packet arrives and asks at once, so even with no round
/// trip at all a request can come a frame interval or two later.
const HISTORY_MIN_WINDOW: Duration = Duration::from_millis(150);
/// How long a subscriber's round-trip time keeps counting for its source's
/// history after its last report (reports come about once a second).
const RTT_MEMORY: Duration = Duration::from_secs(5);

/// How long a source keeps packets for retransmission, given the largest
/// round-trip time its subscribers reported: room for a request and two
/// retries, never more than the history's own window (500 ms). Until a
/// subscriber reports, the minimum: it keeps the memory of a source near
/// its rate × 150 ms (about 28 KB at 1.5 Mbit/s) instead of rate × 500 ms.
pub(super) fn history_window(rtt: Option<Duration>) -> Duration {
    (HISTORY_MIN_WINDOW + 3 * rtt.unwrap_or_default()).min(HistoryConfig::default().window)
}

/// The RTCP CNAME of everything the node sends (also in its answers).
pub(super) const CNAME: &str = "duet";

/// How often each leg gets sender and receiver reports (RFC 3550 allows
/// more; browsers send about one a second too).
const REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Node {
    /// A compound RTCP packet (already decrypted) from participant `key`.
    pub(super) fn on_rtcp(&mut self, key: Key, packet: &[u8], now: Instant) {
        let mut rd = packet;
        let Ok(pkts) = rtc::rtcp::packet::unmarshal(&mut rd) else {
            self.metrics.drop("bad_rtcp");
            return;
        };
        for pkt in &pkts {
            let any = pkt.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                self.keyframe_wanted(key, pli.media_ssrc, now);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                for e in &fir.fir {
                    self.keyframe_wanted(key, e.ssrc, now);
                }
            } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                self.on_remb(key, remb, now);
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                self.on_nack(key, nack, now);
            } else if let Some(sr) = any.downcast_ref::<RtcpSenderReport>() {
                if let Some(s) = self
                    .participants
                    .get_mut(&key)
                    .and_then(|p| p.incoming.iter_mut().find(|s| s.ssrc == sr.ssrc))
                {
                    s.report.on_sender_report(sr.ntp_time, now);
                }
                for block in &sr.reports {
                    self.on_reception_report(key, block, now);
                }
            } else if let Some(rr) = any.downcast_ref::<RtcpReceiverReport>() {
                for block in &rr.reports {
                    self.on_reception_report(key, block, now);
                }
            }
        }
    }

    /// A subscriber's report block about one of its outgoing tracks: its
    /// round-trip time sizes the NACK history of the track's source.
    fn on_reception_report(&mut self, key: Key, block: &ReceptionReport, now: Instant) {
        let wall = self.wallclock();
        let Some(rtt) = SendStats::rtt_from(block, now, &wall) else {
            return;
        };
        let slot = self
            .participants
            .get(&key)
            .and_then(|p| p.slot_of_ssrc(block.ssrc));
        let Some((slot, Kind::Video)) = slot else {
            return;
        };
        let Some(src) = self.graph.source((key, slot as u8)) else {
            return;
        };
        let Some(stream) = self
            .participants
            .get_mut(&src)
            .and_then(|p| p.incoming.iter_mut().find(|s| s.kind == Kind::Video))
        else {
            return;
        };
        // The slowest subscriber counts; its figure is forgotten once stale.
        let larger_and_recent = stream
            .subscriber_rtt
            .is_some_and(|(r, at)| r > rtt && now.saturating_duration_since(at) < RTT_MEMORY);
        if !larger_and_recent {
            stream.subscriber_rtt = Some((rtt, now));
        }
        let window = history_window(stream.subscriber_rtt.map(|(r, _)| r));
        if let Some(h) = stream.history.as_mut() {
            h.set_window(window);
        }
    }

    /// A subscriber asked for a keyframe on its outgoing track `ssrc`.
    fn keyframe_wanted(&mut self, key: Key, ssrc: u32, now: Instant) {
        let slot = self.participants.get(&key).and_then(|p| p.slot_of_ssrc(ssrc));
        if let Some((slot, Kind::Video)) = slot {
            if let Some(src) = self.graph.source((key, slot as u8)) {
                self.request_keyframe(src, "subscriber", false, now);
            }
        }
    }

    /// A subscriber's bandwidth estimate: relayed to the source only when it
    /// limits (see `remb`). A hidden watcher's estimate never counts.
    fn on_remb(&mut self, key: Key, remb: &ReceiverEstimatedMaximumBitrate, now: Instant) {
        let Some(p) = self.participants.get(&key).filter(|p| p.role == SfuRole::User) else {
            return;
        };
        let slot = remb
            .ssrcs
            .iter()
            .find_map(|s| p.slot_of_ssrc(*s))
            .map(|(slot, _)| slot);
        let Some(src) = slot.and_then(|slot| self.graph.source((key, slot as u8))) else {
            return;
        };
        if !(remb.bitrate.is_finite() && remb.bitrate > 0.0) {
            return;
        }
        let source_bps = self.participants.get(&src).map_or(0, |p| p.video_rate.bps());
        if let Some(send) = self
            .remb
            .handle_estimate(src, key, remb.bitrate as u64, source_bps, now)
        {
            self.send_remb(src, send, now);
        }
    }

    /// A subscriber lost packets of its outgoing track: answer from the
    /// source's history, on the subscriber's RTX stream where it has one.
    fn on_nack(&mut self, key: Key, nack: &TransportLayerNack, now: Instant) {
        let Some((slot, Kind::Video)) = self
            .participants
            .get(&key)
            .and_then(|p| p.slot_of_ssrc(nack.media_ssrc))
        else {
            return;
        };
        let Some(src) = self.graph.source((key, slot as u8)) else {
            return;
        };
        for pair in &nack.nacks {
            for out_seq in pair.packet_list() {
                self.retransmit(key, slot, src, out_seq, now);
            }
        }
    }

    fn retransmit(&mut self, key: Key, slot: usize, src: Key, out_seq: u16, now: Instant) {
        let Some(source_seq) = self
            .participants
            .get(&key)
            .and_then(|p| p.slots.get(slot))
            .and_then(|s| s.video.munger.source_seq(out_seq))
        else {
            return;
        };
        let mut buf = self.pool.take();
        let found = self.participants.get(&src).and_then(|p| {
            let s = p.incoming.iter().find(|s| s.kind == Kind::Video)?;
            s.history.as_ref()?.get_seq16(source_seq, now)
        });
        let Some(original) = found else {
            self.metrics.drop("nack_miss");
            self.pool.put(buf);
            return;
        };
        buf.fill(original);
        let from = self
            .participants
            .get(&src)
            .map(|p| p.extensions.video)
            .unwrap_or_default();
        let Some(sp) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(path) = sp.path() else { return };
        let to = sp.extensions.video;
        let Some(track) = sp.slots.get_mut(slot).map(|s| &mut s.video) else {
            return;
        };
        let Ok(view) = RtpView::parse(buf.as_slice()) else {
            return;
        };
        let munged = crate::munger::Munged {
            ssrc: track.munger.out_ssrc(),
            payload_type: track.munger.payload_type(),
            sequence_number: out_seq,
            timestamp: view.timestamp.wrapping_add(track.munger.timestamp_offset()),
        };
        let send_time = now.saturating_duration_since(self.epoch);
        let leg = LegHeader {
            munged,
            from: &from,
            to: &to,
            send_time,
        };
        let (data, start, end) = buf.parts();
        let Ok(mut start) = rewrite_for_leg(data, start, end, &view, &leg) else {
            return;
        };
        if let Some((rtx_ssrc, rtx_pt)) = track.rtx {
            // The retransmission travels on the RTX stream with its own numbering.
            let Ok(rewritten) = RtpView::parse(&data[start..end]) else {
                return;
            };
            let seq = track.rtx_seq;
            track.rtx_seq = track.rtx_seq.wrapping_add(1);
            let Ok(s) = wrap_rtx_in_place(data, start, &rewritten, rtx_ssrc, rtx_pt, seq) else {
                return;
            };
            start = s;
        }
        let Some(srtp) = sp.leg.as_mut().and_then(|l| l.srtp.as_mut()) else {
            return;
        };
        if let Ok(len) = srtp.protect_rtp(&mut data[start..], end - start) {
            buf.set_range(start, start + len);
            self.metrics.rtx_sent.inc();
            self.transmit(key, path, buf);
        }
    }

    /// Sends a PLI to `source`'s video stream (throttled unless `force`).
    pub(super) fn request_keyframe(&mut self, source: Key, cause: &'static str, force: bool, now: Instant) {
        let Some(p) = self.participants.get_mut(&source) else {
            return;
        };
        if !p.connected {
            return;
        }
        let Some(media_ssrc) = p.video_ssrc() else { return };
        if force {
            p.keyframe_throttle.reset();
        }
        if !p.keyframe_throttle.allow(now) {
            return;
        }
        let sender_ssrc = p.slots.first().map_or(1, |s| s.video.munger.out_ssrc());
        let pli = PictureLossIndication {
            sender_ssrc,
            media_ssrc,
        };
        if self.send_rtcp(source, &[&pli]) {
            self.metrics.keyframe_requests.with_label_values(&[cause]).inc();
            if let Some(p) = self.participants.get(&source) {
                tracing::debug!(target: "duet::timing", source = %p.pid, cause, force, "keyframe requested");
            }
        }
    }

    /// Sends `source` a REMB for its media streams.
    pub(super) fn send_remb(&mut self, source: Key, bps: u64, _now: Instant) {
        let Some(p) = self.participants.get(&source).filter(|p| p.connected) else {
            return;
        };
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: p.slots.first().map_or(1, |s| s.video.munger.out_ssrc()),
            bitrate: bps as f32,
            ssrcs: p.incoming.iter().map(|i| i.ssrc).collect(),
        };
        if self.send_rtcp(source, &[&remb]) {
            self.metrics.remb_relayed.inc();
        }
    }

    /// Marshals, protects and queues an RTCP compound to `key`.
    fn send_rtcp(&mut self, key: Key, pkts: &[&dyn MarshalRtcp]) -> bool {
        self.send_rtcp_with(key, |space| {
            let mut len = 0;
            for p in pkts {
                len += p.marshal_into(&mut space[len..]).ok()?;
            }
            Some(len)
        })
    }

    /// Protects and queues to `key` the RTCP that `write` puts in a buffer.
    fn send_rtcp_with(&mut self, key: Key, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let mut buf = self.pool.take();
        let space = buf.build_space();
        let room = space.len().saturating_sub(SRTP_MAX_OVERHEAD);
        let Some(len) = write(&mut space[..room]) else {
            self.pool.put(buf);
            return false;
        };
        let Some(p) = self.participants.get_mut(&key) else {
            self.pool.put(buf);
            return false;
        };
        let (Some(path), Some(srtp)) = (p.path(), p.leg.as_mut().and_then(|l| l.srtp.as_mut())) else {
            self.pool.put(buf);
            return false;
        };
        let (data, start, _) = buf.parts();
        match srtp.protect_rtcp(&mut data[start..], len) {
            Ok(n) => {
                buf.set_range(start, start + n);
                self.transmit(key, path, buf);
                true
            }
            Err(_) => {
                self.pool.put(buf);
                false
            }
        }
    }

    /// Every tick: NACKs for publishers' lost packets, and reports when due.
    pub(super) fn feedback_tick(&mut self, now: Instant) {
        let keys: Vec<Key> = self
            .participants
            .values()
            .filter(|p| p.connected)
            .map(|p| p.key)
            .collect();
        for key in keys {
            self.send_uplink_nacks(key, now);
            self.send_reports(key, now);
        }
    }

    fn send_uplink_nacks(&mut self, key: Key, now: Instant) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let sender_ssrc = p.slots.first().map_or(1, |s| s.video.munger.out_ssrc());
        let mut nacks = Vec::new();
        for s in &mut p.incoming {
            if let Some(n) = s
                .nack
                .as_mut()
                .and_then(|g| g.poll_nack(now, sender_ssrc, s.ssrc))
            {
                nacks.push(n);
            }
        }
        for n in nacks {
            if self.send_rtcp(key, &[&n]) {
                self.metrics.nacks_sent.inc();
            }
        }
    }

    /// Sender reports for each outgoing track that sent something, and one
    /// receiver report for what the participant publishes.
    fn send_reports(&mut self, key: Key, now: Instant) {
        let wall = self.wallclock();
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if p.last_report
            .is_some_and(|t| now.saturating_duration_since(t) < REPORT_INTERVAL)
        {
            return;
        }
        p.last_report = Some(now);
        let reporter = p.slots.first().map_or(1, |s| s.video.munger.out_ssrc());
        let mut packets = Vec::new();
        for slot in &mut p.slots {
            for kind in [Kind::Audio, Kind::Video] {
                let t = slot.track(kind);
                if let Some(sr) = t.report.sender_report(t.munger.out_ssrc(), now, &wall) {
                    packets.push(ReportPacket::Sender(sr));
                }
            }
        }
        let reports: Vec<_> = p
            .incoming
            .iter_mut()
            .filter_map(|s| s.report.reception_report(s.ssrc, now))
            .collect();
        if !reports.is_empty() {
            packets.push(ReportPacket::Receiver(RtcpReceiverReport {
                ssrc: reporter,
                reports,
                ..Default::default()
            }));
        }
        for packet in packets {
            self.send_rtcp_with(key, |out| write_compound(&packet, CNAME, out).ok());
        }
    }
}

/// RTCP packets the node writes.
pub(super) trait MarshalRtcp {
    fn marshal_into(&self, buf: &mut [u8]) -> Result<usize, rtc::shared::error::Error>;
}

impl<T: Marshal> MarshalRtcp for T {
    fn marshal_into(&self, buf: &mut [u8]) -> Result<usize, rtc::shared::error::Error> {
        Marshal::marshal_to(self, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_window_grows_with_the_slowest_rtt_up_to_the_cap() {
        assert_eq!(history_window(None), HISTORY_MIN_WINDOW);
        assert_eq!(
            history_window(Some(Duration::from_millis(50))),
            Duration::from_millis(300)
        );
        assert_eq!(
            history_window(Some(Duration::from_secs(2))),
            HistoryConfig::default().window
        );
    }
}
