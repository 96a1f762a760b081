//! The media duet speaks — VP8 (PT 96, RTX PT 97) and Opus (PT 111), their
//! clock rates, the header extensions the SFU forwards — and the `rtc` peer
//! connection pieces of the clients that talk to it: the bench's load
//! generator and the test suites build their participants (an `rtc`
//! `RTCPeerConnection`, an implementation independent of the SFU's own
//! endpoint) from these, with NACK/PLI/FIR/REMB/TWCC feedback, the default
//! interceptors, and an interceptor that lets inbound PLI/FIR/REMB reach the
//! application. The SFU itself uses only the constants.

use crate::extensions::FORWARDED_EXTENSIONS;
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error as RtcError;
use std::collections::VecDeque;
use std::time::Instant;

pub const VP8_PT: u8 = 96;
pub const OPUS_PT: u8 = 111;
pub const VIDEO_CLOCK: u32 = 90_000;
pub const AUDIO_CLOCK: u32 = 48_000;

/// Interceptor position: after every default interceptor (the report
/// generators sit at 10 000 and 11 000), so they have all seen the RTCP.
const FEEDBACK_MARKER_SLOT: usize = 11_500;

pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: VIDEO_CLOCK,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![
            RTCPFeedback {
                typ: "goog-remb".to_owned(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "ccm".to_owned(),
                parameter: "fir".to_owned(),
            },
        ],
    }
}

pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: AUDIO_CLOCK,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

pub const VP8_RTX_PT: u8 = 97;

/// RTX for VP8 (RFC 4588): retransmissions travel on their own SSRC, so
/// they do not disturb the media stream's loss and jitter statistics.
pub fn vp8_rtx_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_RTX.to_owned(),
        clock_rate: VIDEO_CLOCK,
        channels: 0,
        sdp_fmtp_line: format!("apt={VP8_PT}"),
        rtcp_feedback: vec![],
    }
}

/// One media engine per peer connection (VP8 with RTX, Opus, the header
/// extensions the SFU forwards) and the interceptor registry (defaults:
/// NACK generator/responder, TWCC receiver, RTCP reports; plus the marker
/// that lets keyframe requests and REMB reach the application).
pub fn media_engine_and_registry() -> Result<(MediaEngine, Registry), RtcError> {
    media_engine_and_registry_from(MediaEngine::default())
}

/// As [`media_engine_and_registry`], starting from `me` (a test client
/// registers an extension of its own first, so its ids differ from ours).
pub fn media_engine_and_registry_from(mut me: MediaEngine) -> Result<(MediaEngine, Registry), RtcError> {
    let codecs = [
        (vp8_codec(), VP8_PT, RtpCodecKind::Video),
        (vp8_rtx_codec(), VP8_RTX_PT, RtpCodecKind::Video),
        (opus_codec(), OPUS_PT, RtpCodecKind::Audio),
    ];
    for (rtp_codec, payload_type, kind) in codecs {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec,
                payload_type,
            },
            kind,
        )?;
    }
    for &(uri, audio, video) in FORWARDED_EXTENSIONS {
        for (wanted, kind) in [(audio, RtpCodecKind::Audio), (video, RtpCodecKind::Video)] {
            if wanted {
                me.register_header_extension(
                    RTCRtpHeaderExtensionCapability { uri: uri.to_owned() },
                    kind,
                    None,
                )?;
            }
        }
    }
    let registry = register_default_interceptors(Registry::new(), &mut me)?;
    let registry = registry.with(Slot::from(FEEDBACK_MARKER_SLOT), FeedbackToApplication::default());
    Ok((me, registry))
}

/// An outgoing track with a fixed SSRC; video also names its RTX SSRC
/// (used only if the remote accepts RTX).
pub fn outgoing_track(
    stream: &str,
    track_id: &str,
    kind: RtpCodecKind,
    ssrc: u32,
    rtx_ssrc: Option<u32>,
) -> MediaStreamTrack {
    let codec = if kind == RtpCodecKind::Video {
        vp8_codec()
    } else {
        opus_codec()
    };
    MediaStreamTrack::new(
        stream.to_owned(),
        track_id.to_owned(),
        track_id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rtx: rtx_ssrc
                    .filter(|_| kind == RtpCodecKind::Video)
                    .map(|ssrc| RTCRtpRtxParameters { ssrc }),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )
}

/// Marks inbound PLI, FIR and REMB `DeliverToApplication`, so they come
/// out of `poll_read` (rtc's chain ends consume unmarked RTCP, so without
/// this a client would never see them). Other RTCP passes unmarked and
/// stops at the chain's end as usual.
#[derive(Default)]
pub struct FeedbackToApplication {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

fn is_relayed_feedback(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<ReceiverEstimatedMaximumBitrate>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            if packets.iter().any(|p| is_relayed_feedback(p.as_ref())) {
                packets.retain(|p| is_relayed_feedback(p.as_ref()));
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }
}

impl Interceptor for FeedbackToApplication {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The `a=ice-ufrag` of an SDP (first one).
pub fn sdp_ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ufrag_is_found_in_sdp() {
        assert_eq!(
            sdp_ice_ufrag("v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:x\r\n"),
            Some("abcd")
        );
        assert_eq!(sdp_ice_ufrag("v=0\r\n"), None);
    }
}
