//! Synthetic WebRTC participants: one sans-IO `rtc` peer connection each,
//! the offerer (full ICE, controlling; DTLS client because the SFU answers
//! `setup:passive`), sendrecv VP8 (PT 96) + Opus (PT 111) like a browser,
//! no interceptors (no NACK, TWCC or reports: the generator stays cheap).
//! The SRTP protection profiles offered in the DTLS ClientHello are chosen
//! with [`SrtpOffer`] (by default Chromium's list, so the SFU negotiates what
//! it negotiates with browsers).
//! The signaling (offer/answer over the SFU WebSocket) happens before the
//! peer is handed to the load loop, which then drives ICE, DTLS and media.

use anyhow::Context;
use proto::sfu_ws::IceCandidate;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, CandidateRelayConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use std::net::SocketAddr;
use std::time::Instant;

/// Which SRTP protection profiles the clients offer, in which order (the
/// DTLS server picks the first of the client's list it supports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SrtpOffer {
    /// libwebrtc's order (Chromium): AES128_CM_HMAC_SHA1_80, AEAD_AES_256_GCM, AEAD_AES_128_GCM.
    Chromium,
    /// AEAD_AES_128_GCM only.
    Gcm,
    /// AES128_CM_HMAC_SHA1_80 only.
    CmSha1,
}

impl SrtpOffer {
    pub fn profiles(self) -> Vec<SrtpProtectionProfile> {
        use SrtpProtectionProfile::*;
        match self {
            SrtpOffer::Chromium => vec![
                Srtp_Aes128_Cm_Hmac_Sha1_80,
                Srtp_Aead_Aes_256_Gcm,
                Srtp_Aead_Aes_128_Gcm,
            ],
            SrtpOffer::Gcm => vec![Srtp_Aead_Aes_128_Gcm],
            SrtpOffer::CmSha1 => vec![Srtp_Aes128_Cm_Hmac_Sha1_80],
        }
    }

    /// The flag value, for notes.
    pub fn name(self) -> &'static str {
        match self {
            SrtpOffer::Chromium => "chromium",
            SrtpOffer::Gcm => "gcm",
            SrtpOffer::CmSha1 => "cm-sha1",
        }
    }
}

pub const VP8_PT: u8 = 96;
pub const OPUS_PT: u8 = 111;

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: "pli".to_owned(),
            },
            RTCPFeedback {
                typ: "ccm".to_owned(),
                parameter: "fir".to_owned(),
            },
        ],
    }
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn track(kind: RtpCodecKind, id: &str, ssrc: u32) -> MediaStreamTrack {
    let codec = if kind == RtpCodecKind::Video {
        vp8()
    } else {
        opus()
    };
    MediaStreamTrack::new(
        "bench".to_owned(),
        id.to_owned(),
        id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )
}

/// A participant before its answer: the peer connection and its offer.
pub struct Offerer {
    pub pc: RTCPeerConnection,
    pub offer_sdp: String,
    pub video_ssrc: u32,
    pub audio_ssrc: u32,
}

/// Builds a peer connection for a participant bound at `local` and creates
/// its offer. With `relayed`, its only candidate is that TURN relay address.
/// `srtp`: the SRTP profiles its DTLS ClientHello offers.
pub fn offer(local: SocketAddr, relayed: Option<SocketAddr>, srtp: SrtpOffer) -> anyhow::Result<Offerer> {
    let now = Instant::now();
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8(),
            payload_type: VP8_PT,
        },
        RtpCodecKind::Video,
    )
    .context("register VP8")?;
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus(),
            payload_type: OPUS_PT,
        },
        RtpCodecKind::Audio,
    )
    .context("register Opus")?;
    let se = SettingEngineBuilder::new()
        .with_srtp_protection_profiles(srtp.profiles())
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(se)
        .with_media_engine(me)
        .with_interceptor_registry(Registry::new())
        .build(now)
        .context("build peer connection")?;
    let (video_ssrc, audio_ssrc) = (rand::random::<u32>() | 1, rand::random::<u32>() | 1);
    pc.add_track(track(RtpCodecKind::Audio, "audio", audio_ssrc))
        .context("add audio track")?;
    pc.add_track(track(RtpCodecKind::Video, "video", video_ssrc))
        .context("add video track")?;
    let offer = pc.create_offer(None).context("create offer")?;
    pc.set_local_description(now, offer.clone())
        .context("set local description")?;
    let cand = match relayed {
        None => CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .context("host candidate")?,
        Some(r) => CandidateRelayConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: r.ip().to_string(),
                port: r.port(),
                component: 1,
                ..Default::default()
            },
            rel_addr: local.ip().to_string(),
            rel_port: local.port(),
            ..Default::default()
        }
        .new_candidate_relay()
        .context("relay candidate")?,
    };
    let init = RTCIceCandidate::from(&cand)
        .to_json()
        .context("host candidate json")?;
    pc.add_local_candidate(init).context("add local candidate")?;
    Ok(Offerer {
        pc,
        offer_sdp: offer.sdp,
        video_ssrc,
        audio_ssrc,
    })
}

/// Applies the SFU's answer and candidates.
pub fn answer(o: &mut Offerer, sdp: String, candidates: &[IceCandidate]) -> anyhow::Result<()> {
    let desc = RTCSessionDescription::answer(sdp).context("parse answer")?;
    o.pc.set_remote_description(Instant::now(), desc)
        .context("set remote description")?;
    for c in candidates {
        o.pc.add_remote_candidate(RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mid: c.sdp_mid.clone(),
            sdp_mline_index: c.sdp_mline_index,
            ..Default::default()
        })
        .context("add remote candidate")?;
    }
    Ok(())
}
