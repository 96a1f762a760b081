//! The forwarding path: SRTP in, header rewritten per subscriber, SRTP out,
//! all inside the buffer the datagram arrived in.

use super::buffer::PacketBuf;
use super::participant::{InStream, Kind};
use super::rtp::{extend_seq, rewrite_for_leg, unwrap_rtx_in_place, LegHeader, RtpView};
use super::Node;
use crate::routing::{Key, PathAddr};
use crate::stream::history::{HistoryConfig, SendHistory};
use crate::stream::nack::{NackConfig, NackGenerator};
use crate::stream::reports::RecvStats;
use crate::stream::ExtSeq;
use crate::vp8;
use proto::token::SfuRole;
use std::time::Instant;

/// RFC 5761: RTCP packet types 192..=223 in the second byte.
fn is_rtcp(second_byte: u8) -> bool {
    (192..=223).contains(&second_byte)
}

pub(super) fn in_stream(kind: Kind, ssrc: u32, rtx_ssrc: Option<u32>) -> InStream {
    let video = kind == Kind::Video;
    InStream {
        kind,
        ssrc,
        rtx_ssrc,
        highest_seq: None,
        history: video.then(|| {
            let mut h = SendHistory::new(HistoryConfig::default());
            h.set_window(super::feedback::history_window(None));
            h
        }),
        subscriber_rtt: None,
        nack: video.then(|| NackGenerator::new(NackConfig::default())),
        report: RecvStats::new(if video {
            crate::peer::VIDEO_CLOCK
        } else {
            crate::peer::AUDIO_CLOCK
        }),
    }
}

/// Which published stream a packet belongs to.
enum Stream {
    Media(usize),
    /// A retransmission on the RTX stream of `incoming[i]`.
    Rtx(usize),
}

impl Node {
    pub(super) fn on_srtp(&mut self, key: Key, _path: PathAddr, mut buf: PacketBuf, now: Instant) {
        let Some(leg) = self.participants.get_mut(&key).and_then(|p| p.leg.as_mut()) else {
            self.metrics.drop("not_ready");
            self.pool.put(buf);
            return;
        };
        let Some(srtp) = leg.srtp.as_mut() else {
            self.metrics.drop("not_ready");
            self.pool.put(buf);
            return;
        };
        let (data, start, end) = buf.parts();
        let rtcp = is_rtcp(data[start + 1]);
        let plain = if rtcp {
            srtp.unprotect_rtcp(&mut data[start..end])
        } else {
            srtp.unprotect_rtp(&mut data[start..end])
        };
        let Ok(n) = plain else {
            self.metrics.drop("srtp_failed");
            self.pool.put(buf);
            return;
        };
        buf.set_range(start, start + n);
        leg.on_authenticated_media();
        if rtcp {
            self.on_rtcp(key, buf.as_slice(), now);
            self.pool.put(buf);
        } else {
            self.on_rtp(key, buf, now);
        }
    }

    fn on_rtp(&mut self, key: Key, mut buf: PacketBuf, now: Instant) {
        let Ok(mut view) = RtpView::parse(buf.as_slice()) else {
            self.metrics.drop("bad_rtp");
            self.pool.put(buf);
            return;
        };
        let Some(p) = self.participants.get_mut(&key) else {
            self.pool.put(buf);
            return;
        };
        if p.role == SfuRole::Watcher {
            // Watchers send nothing anyone receives.
            self.pool.put(buf);
            return;
        }
        let Some(stream) = classify(p, &view) else {
            self.metrics.drop("unknown_ssrc");
            self.pool.put(buf);
            return;
        };
        let idx = match stream {
            Stream::Media(i) => i,
            Stream::Rtx(i) => {
                let media_pt = p.pts.vp8.unwrap_or(crate::peer::VP8_PT);
                match unwrap_rtx(&mut buf, &view, p.incoming[i].ssrc, media_pt) {
                    Some(v) => view = v,
                    None => {
                        self.pool.put(buf); // padding-only probe or garbage
                        return;
                    }
                }
                i
            }
        };
        let s = &mut p.incoming[idx];
        let ext = extend_seq(
            s.highest_seq.unwrap_or(u64::from(view.sequence_number)),
            view.sequence_number,
        );
        s.highest_seq = Some(s.highest_seq.map_or(ext, |h| h.max(ext)));
        s.report.on_packet(view.sequence_number, view.timestamp, now);
        if let Some(nack) = s.nack.as_mut() {
            nack.handle_packet(view.sequence_number, now);
        }
        let kind = s.kind;
        let payload = view.payload(buf.as_slice());
        if kind == Kind::Video {
            p.traffic.video_bytes_in += (view.payload_end - view.payload_start + 12) as u64;
            p.snapshot
                .push(view.sequence_number, view.timestamp, view.marker, payload, now);
            if let Some(h) = s.history.as_mut() {
                h.put(ExtSeq(ext), buf.as_slice(), now);
            }
        }
        let keyframe = kind == Kind::Video && vp8::is_keyframe_start(payload);
        self.forward(key, kind, view, keyframe, buf, now);
    }

    /// Sends one published packet to every slot that `key` feeds.
    fn forward(&mut self, key: Key, kind: Kind, view: RtpView, keyframe: bool, buf: PacketBuf, now: Instant) {
        let mut sinks = std::mem::take(&mut self.scratch_sinks);
        sinks.clear();
        sinks.extend_from_slice(self.graph.sinks(key));
        let from = match self.participants.get(&key) {
            Some(p) => *p.extensions.for_kind(kind.is_video()),
            None => Default::default(),
        };
        let send_time = now.saturating_duration_since(self.epoch);
        let mut need_keyframe = false;
        let mut original = Some(buf);
        let n = sinks.len();
        for (i, &(sink, slot)) in sinks.iter().enumerate() {
            let Some(src_buf) = original.as_ref() else { break };
            let Some(sp) = self.participants.get_mut(&sink) else {
                continue;
            };
            if !sp.connected {
                continue;
            }
            let Some(path) = sp.path() else { continue };
            let Some(out) = sp.slots.get_mut(usize::from(slot)) else {
                continue;
            };
            let munge = out.track(kind).munger.munge(
                key,
                view.ssrc,
                view.sequence_number,
                view.timestamp,
                keyframe,
                now,
            );
            if kind == Kind::Video {
                if let Some(done) = out.switch_progress(munge.is_ok(), now) {
                    let ms = |t: Instant| t.saturating_duration_since(done.at).as_secs_f64() * 1000.0;
                    let waited = now.saturating_duration_since(done.at);
                    self.metrics.switch_to_keyframe.observe(waited.as_secs_f64());
                    tracing::debug!(
                        target: "duet::timing",
                        sink = %sp.pid,
                        first_packet_ms = done.first_packet.map_or(0.0, ms),
                        keyframe_ms = ms(now),
                        "switch: first keyframe forwarded"
                    );
                }
            }
            let track = out.track(kind);
            let munged = match munge {
                Ok(m) => m,
                Err(e) => {
                    need_keyframe |= e == crate::munger::MungeDrop::WaitingKeyframe;
                    self.metrics.drop(e.label());
                    continue;
                }
            };
            // The last sink takes the received buffer; earlier ones a copy.
            let mut pkt = if i + 1 == n {
                original
                    .take()
                    .expect("checked above: the original is still here")
            } else {
                let mut copy = self.pool.take();
                copy.fill(src_buf.as_slice());
                copy
            };
            let to = *sp.extensions.for_kind(kind.is_video());
            let leg = LegHeader {
                munged,
                from: &from,
                to: &to,
                send_time,
            };
            let (data, start, end) = pkt.parts();
            let Ok(new_start) = rewrite_for_leg(data, start, end, &view, &leg) else {
                self.metrics.drop("write_failed");
                self.pool.put(pkt);
                continue;
            };
            let payload_len = view.payload_end - view.payload_start;
            track.report.on_sent(munged.timestamp, payload_len, now);
            let Some(srtp) = sp.leg.as_mut().and_then(|l| l.srtp.as_mut()) else {
                self.pool.put(pkt);
                continue;
            };
            match srtp.protect_rtp(&mut data[new_start..], end - new_start) {
                Ok(len) => {
                    pkt.set_range(new_start, new_start + len);
                    self.metrics.rtp_forwarded.inc();
                    self.transmit(sink, path, pkt);
                }
                Err(_) => {
                    self.metrics.drop("write_failed");
                    self.pool.put(pkt);
                }
            }
        }
        if let Some(unused) = original {
            self.pool.put(unused);
        }
        self.scratch_sinks = sinks;
        if need_keyframe {
            self.request_keyframe(key, "switch", false, now);
        }
    }
}

/// [`unwrap_rtx_in_place`] on a buffer: the view of the original, if any.
fn unwrap_rtx(buf: &mut PacketBuf, view: &RtpView, media_ssrc: u32, media_pt: u8) -> Option<RtpView> {
    let (data, start, end) = buf.parts();
    let s = unwrap_rtx_in_place(data, start, view, media_ssrc, media_pt)?;
    buf.set_range(s, end);
    RtpView::parse(buf.as_slice()).ok()
}

/// Finds (or learns, by payload type) the published stream of a packet.
fn classify(p: &mut super::participant::Participant, view: &RtpView) -> Option<Stream> {
    for (i, s) in p.incoming.iter().enumerate() {
        if s.ssrc == view.ssrc {
            return Some(Stream::Media(i));
        }
        if s.rtx_ssrc == Some(view.ssrc) {
            return Some(Stream::Rtx(i));
        }
    }
    // A stream the offer did not name: learn it from its payload type.
    let pts = p.pts;
    let kind = if Some(view.payload_type) == pts.vp8 {
        Kind::Video
    } else if Some(view.payload_type) == pts.opus {
        Kind::Audio
    } else if Some(view.payload_type) == pts.vp8_rtx {
        let i = p
            .incoming
            .iter()
            .position(|s| s.kind == Kind::Video && s.rtx_ssrc.is_none())?;
        p.incoming[i].rtx_ssrc = Some(view.ssrc);
        return Some(Stream::Rtx(i));
    } else {
        return None;
    };
    // A publisher that restarts its stream (new SSRC) replaces the old one.
    p.incoming.retain(|s| s.kind != kind);
    p.incoming.push(in_stream(kind, view.ssrc, None));
    Some(Stream::Media(p.incoming.len() - 1))
}
