//! SDP offer/answer for the SFU: read what a browser offers, write the answer
//! duet's endpoint can keep. Parsing and writing go through `rtc::sdp`; this
//! file decides what the SFU needs and accepts.
//!
//! Follows SDP (RFC 8866), JSEP (RFC 8829), BUNDLE (RFC 8843), ICE in SDP with
//! an ICE-lite answerer (RFC 8839), DTLS-SRTP in SDP (RFC 8842, fingerprints
//! per RFC 8122), RTP/RTCP multiplexing and reduced-size RTCP (RFC 5761,
//! RFC 5506), RTCP feedback (RFC 4585, RFC 5104), RTX (RFC 4588), header
//! extensions (RFC 8285), source attributes (RFC 5576) and msid (RFC 8830).
//!
//! The answer (one per offer, also for an ICE restart, which keeps the
//! m-sections and changes `a=ice-ufrag`/`a=ice-pwd`) carries:
//! `a=ice-lite`, our ICE credentials and DTLS fingerprint, `a=setup:passive`
//! (we are the DTLS server), our host candidate in the first bundled section,
//! `a=rtcp-mux`, `a=rtcp-rsize`, Opus and VP8 (+ RTX) under the offer's
//! payload types, the feedback we act on (`nack`, `nack pli`, `ccm fir`,
//! `goog-remb`; no `transport-cc`: there is no send-side bandwidth
//! estimation), the header extensions we keep (audio level, video
//! orientation, abs-send-time, and mid, which the browser's BUNDLE demux
//! uses) under the offer's ids, and per section we send on our SSRC, RTX SSRC
//! (`a=ssrc-group:FID`), cname and msid. Sections we cannot serve
//! (another codec, data channels) are rejected with port 0 and left out of
//! BUNDLE.

use crate::endpoint::dtls::{Fingerprint, FingerprintParseError};
use crate::endpoint::ice::IceCredentials;
use rtc::sdp::description::common::{Address, Attribute, ConnectionInformation};
use rtc::sdp::description::media::{MediaName, RangedPort};
use rtc::sdp::description::session::{Origin, TimeDescription, Timing};
use rtc::sdp::extmap::{ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, SDES_MID_URI, VIDEO_ORIENTATION_URI};
use rtc::sdp::{MediaDescription, SessionDescription};
use std::net::SocketAddr;

/// Offers bigger than this are refused before parsing (Chromium's offer with
/// four m-sections is ~14 KB).
pub const MAX_OFFER_BYTES: usize = 128 * 1024;
/// Most m-sections an offer may have (a watcher needs four).
pub const MAX_MEDIA_SECTIONS: usize = 16;

/// The feedback the SFU acts on (RFC 4585/5104, REMB), as `a=rtcp-fb` values.
const VIDEO_FEEDBACK: [&str; 4] = ["goog-remb", "ccm fir", "nack", "nack pli"];
/// Host candidate priority (RFC 8445 §5.1.2.1: type preference 126, local
/// preference 65535, component 1).
const HOST_PRIORITY: u32 = (126 << 24) | (65_535 << 8) | (256 - 1);

/// The offerer's DTLS role attribute (RFC 8842 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    ActPass,
    Active,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    /// Anything else (`application` for data channels, …): rejected.
    /// Audio or video without Opus/VP8, or with port 0, is rejected too.
    Other,
}

/// An m-section's direction, from the offerer's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn sdp(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn offerer_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    fn offerer_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One offered m-section, reduced to what the SFU uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedMedia {
    pub mid: String,
    pub kind: MediaKind,
    pub direction: Direction,
    /// Opus (audio) or VP8 (video) payload type; `None`: not offered, the
    /// section is rejected.
    pub payload_type: Option<u8>,
    /// The RTX payload type whose `apt` is `payload_type` (video).
    pub rtx_payload_type: Option<u8>,
    /// `a=rtcp-fb` values offered for `payload_type` (`nack`, `nack pli`, …),
    /// `*` entries included.
    pub feedback: Vec<String>,
    /// `a=extmap` ids by URI, in offer order.
    pub extmaps: Vec<(u8, String)>,
    /// The offerer's media SSRC (first of `a=ssrc-group:FID`, else the first
    /// `a=ssrc`).
    pub ssrc: Option<u32>,
    /// The offerer's RTX SSRC (second of `a=ssrc-group:FID`).
    pub rtx_ssrc: Option<u32>,
    /// `a=msid` (`<stream> <track>`), or the `msid` of the media SSRC.
    pub msid: Option<String>,
    pub rtcp_rsize: bool,
    /// The offered `m=` line's media, protos and formats, mirrored when the
    /// section is rejected (RFC 8829 §5.3.1).
    m_line: (String, Vec<String>, Vec<String>),
}

impl OfferedMedia {
    /// The offer's id for a header extension URI.
    pub fn extmap_id(&self, uri: &str) -> Option<u8> {
        self.extmaps.iter().find(|(_, u)| u == uri).map(|(id, _)| *id)
    }

    /// Whether the SFU can serve this section (audio with Opus, video with
    /// VP8) and it is not rejected by the offerer.
    pub fn accepted(&self) -> bool {
        self.kind != MediaKind::Other && self.payload_type.is_some()
    }

    fn offers_feedback(&self, fb: &str) -> bool {
        self.feedback.iter().any(|f| f == fb)
    }
}

/// What the node needs from an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The offerer's ICE credentials (its checks name `ours:ice.ufrag`).
    pub ice: IceCredentials,
    /// The certificate the offerer's DTLS client must present.
    pub fingerprint: Fingerprint,
    pub setup: Setup,
    /// The mids of the BUNDLE group, in order.
    pub bundle: Vec<String>,
    /// Every m-section in offer order (the answer has one per section).
    pub media: Vec<OfferedMedia>,
}

impl Offer {
    /// Whether this offer restarts ICE relative to `previous` (JSEP §5.2.1:
    /// new `ice-ufrag`/`ice-pwd`).
    pub fn is_ice_restart_of(&self, previous: &Offer) -> bool {
        self.ice.ufrag != previous.ice.ufrag || self.ice.pwd != previous.ice.pwd
    }
}

/// What the SFU sends on one m-section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingStream {
    pub ssrc: u32,
    /// RTX SSRC (video); announced only if RTX was negotiated.
    pub rtx_ssrc: Option<u32>,
    /// `a=msid` stream and track ids.
    pub stream_id: String,
    pub track_id: String,
}

/// Our side of the answer.
#[derive(Clone, Debug)]
pub struct AnswerParams<'a> {
    /// `o=` session id (random per participant) and version (increase it
    /// with every answer of one participant, RFC 8866 §5.2).
    pub session_id: u64,
    pub session_version: u64,
    /// Our ICE credentials (from [`crate::endpoint::ice::IceLite`]).
    pub ice: &'a IceCredentials,
    /// Our DTLS certificate's fingerprint.
    pub fingerprint: &'a Fingerprint,
    /// Our host candidate (the node's public IP and media port).
    pub candidate: SocketAddr,
    /// RTCP cname of everything the SFU sends to this participant.
    pub cname: &'a str,
    /// What we send, per offered m-section (index as in `Offer::media`);
    /// `None` or a missing entry: we send nothing there.
    pub senders: &'a [Option<OutgoingStream>],
}

#[derive(Debug, thiserror::Error)]
pub enum SdpError {
    /// The offer exceeds [`MAX_OFFER_BYTES`].
    #[error("offer of {0} bytes is too large")]
    TooLarge(usize),
    /// `rtc::sdp` could not parse the text.
    #[error("SDP does not parse: {0}")]
    Parse(#[source] rtc::shared::error::Error),
    #[error("offer has {0} m-sections, at most {MAX_MEDIA_SECTIONS} are accepted")]
    TooManySections(usize),
    #[error("offer has no a=ice-ufrag/a=ice-pwd")]
    MissingIceCredentials,
    /// Bundled sections must share one transport, so one set of credentials.
    #[error("bundled m-sections carry different ICE credentials")]
    InconsistentIceCredentials,
    #[error("offer has no a=fingerprint")]
    MissingFingerprint,
    /// Not `<hash> <hex:hex:…>` with SHA-256/384/512 (see `dtls::Fingerprint`).
    #[error("unusable a=fingerprint: {0}")]
    BadFingerprint(#[source] FingerprintParseError),
    /// We are always the DTLS server, so the offerer must be able to be the
    /// client (`actpass` or `active`).
    #[error("offer's a=setup:{0} leaves us no DTLS server role")]
    UnsupportedSetup(String),
    #[error("m-section {0} has no a=mid")]
    MissingMid(usize),
    #[error("a=mid:{0} appears twice")]
    DuplicateMid(String),
    /// Every served section must share the one transport (max-bundle).
    #[error("m-section {0} is not in the BUNDLE group")]
    NotBundled(String),
    #[error("m-section {0} does not multiplex RTCP (a=rtcp-mux)")]
    NoRtcpMux(String),
    /// Neither audio with Opus nor video with VP8 is offered.
    #[error("offer has no m-section the SFU can serve")]
    NothingToServe,
}

/// Parses an offer into what the node needs, or says why it cannot be served.
pub fn parse_offer(sdp: &str) -> Result<Offer, SdpError> {
    if sdp.len() > MAX_OFFER_BYTES {
        return Err(SdpError::TooLarge(sdp.len()));
    }
    let desc =
        SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.as_bytes())).map_err(SdpError::Parse)?;
    if desc.media_descriptions.len() > MAX_MEDIA_SECTIONS {
        return Err(SdpError::TooManySections(desc.media_descriptions.len()));
    }
    let bundle: Vec<String> = session_value(&desc, "group")
        .and_then(|g| g.strip_prefix("BUNDLE"))
        .map(|mids| mids.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut media: Vec<OfferedMedia> = Vec::with_capacity(desc.media_descriptions.len());
    for (i, md) in desc.media_descriptions.iter().enumerate() {
        let m = parse_media(i, md)?;
        if media.iter().any(|o| o.mid == m.mid) {
            return Err(SdpError::DuplicateMid(m.mid));
        }
        media.push(m);
    }
    // Transport attributes come from the served sections (all bundled).
    let served: Vec<&MediaDescription> = desc
        .media_descriptions
        .iter()
        .zip(&media)
        .filter(|(_, m)| m.accepted())
        .map(|(md, _)| md)
        .collect();
    if served.is_empty() {
        return Err(SdpError::NothingToServe);
    }
    for m in media.iter().filter(|m| m.accepted()) {
        if !bundle.contains(&m.mid) {
            return Err(SdpError::NotBundled(m.mid.clone()));
        }
    }
    let ice = ice_credentials(&desc, &served)?;
    let fingerprint = transport_value(&desc, &served, "fingerprint")
        .ok_or(SdpError::MissingFingerprint)?
        .parse::<Fingerprint>()
        .map_err(SdpError::BadFingerprint)?;
    let setup = match transport_value(&desc, &served, "setup").map(str::trim) {
        None | Some("actpass") => Setup::ActPass,
        Some("active") => Setup::Active,
        Some(other) => return Err(SdpError::UnsupportedSetup(other.chars().take(40).collect())),
    };
    Ok(Offer {
        ice,
        fingerprint,
        setup,
        bundle,
        media,
    })
}

fn session_value<'a>(desc: &'a SessionDescription, key: &str) -> Option<&'a str> {
    desc.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_deref())
}

fn media_value<'a>(md: &'a MediaDescription, key: &str) -> Option<&'a str> {
    md.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_deref())
}

/// A transport attribute: the first served section's, else the session's.
fn transport_value<'a>(
    desc: &'a SessionDescription,
    served: &[&'a MediaDescription],
    key: &str,
) -> Option<&'a str> {
    served
        .first()
        .and_then(|md| media_value(md, key))
        .or_else(|| session_value(desc, key))
}

fn ice_credentials(
    desc: &SessionDescription,
    served: &[&MediaDescription],
) -> Result<IceCredentials, SdpError> {
    fn pair<'a>(
        desc: &'a SessionDescription,
        md: Option<&'a MediaDescription>,
    ) -> Option<(&'a str, &'a str)> {
        let get = |k| {
            md.and_then(|m| media_value(m, k))
                .or_else(|| session_value(desc, k))
        };
        Some((get("ice-ufrag")?.trim(), get("ice-pwd")?.trim()))
    }
    let (ufrag, pwd) = pair(desc, served.first().copied()).ok_or(SdpError::MissingIceCredentials)?;
    if ufrag.is_empty() || pwd.is_empty() {
        return Err(SdpError::MissingIceCredentials);
    }
    if served.iter().any(|md| pair(desc, Some(md)) != Some((ufrag, pwd))) {
        return Err(SdpError::InconsistentIceCredentials);
    }
    Ok(IceCredentials {
        ufrag: ufrag.to_owned(),
        pwd: pwd.to_owned(),
    })
}

fn parse_media(index: usize, md: &MediaDescription) -> Result<OfferedMedia, SdpError> {
    let mid = media_value(md, "mid")
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .ok_or(SdpError::MissingMid(index))?
        .to_owned();
    let kind = match md.media_name.media.as_str() {
        "audio" => MediaKind::Audio,
        "video" => MediaKind::Video,
        _ => MediaKind::Other,
    };
    // Port 0: the offerer itself rejects the section.
    let rejected = md.media_name.port.value == 0;
    let direction = [
        Direction::SendRecv,
        Direction::SendOnly,
        Direction::RecvOnly,
        Direction::Inactive,
    ]
    .into_iter()
    .find(|d| md.has_attribute(d.sdp()))
    .unwrap_or(Direction::SendRecv);
    let codecs = Codecs::of(md);
    let payload_type = match kind {
        _ if rejected => None,
        MediaKind::Audio => codecs.find("opus", 48_000),
        MediaKind::Video => codecs.find("vp8", 90_000),
        MediaKind::Other => None,
    };
    let rtx_payload_type = payload_type
        .filter(|_| kind == MediaKind::Video)
        .and_then(|pt| codecs.rtx_for(pt));
    let feedback = payload_type.map(|pt| codecs.feedback(pt)).unwrap_or_default();
    if payload_type.is_some() && !md.has_attribute("rtcp-mux") {
        return Err(SdpError::NoRtcpMux(mid));
    }
    let (ssrc, rtx_ssrc, ssrc_msid) = ssrcs(md);
    let msid = media_value(md, "msid").map(|v| v.trim().to_owned()).or(ssrc_msid);
    Ok(OfferedMedia {
        mid,
        kind,
        direction,
        payload_type,
        rtx_payload_type,
        feedback,
        extmaps: extmaps(md),
        ssrc,
        rtx_ssrc,
        msid,
        rtcp_rsize: md.has_attribute("rtcp-rsize"),
        m_line: (
            md.media_name.media.clone(),
            md.media_name.protos.clone(),
            md.media_name.formats.clone(),
        ),
    })
}

/// The `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines of one m-section, for
/// the few questions the SFU asks of them.
struct Codecs<'a> {
    /// Payload types of the `m=` line, in preference order.
    formats: Vec<u8>,
    attributes: &'a [Attribute],
}

impl<'a> Codecs<'a> {
    fn of(md: &'a MediaDescription) -> Self {
        Codecs {
            formats: md
                .media_name
                .formats
                .iter()
                .filter_map(|f| f.parse().ok())
                .collect(),
            attributes: &md.attributes,
        }
    }

    /// `(pt, rest)` of every `a=<key>:<pt> <rest>`.
    fn per_pt(&self, key: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.attributes
            .iter()
            .filter(move |a| a.key == key)
            .filter_map(|a| a.value.as_deref()?.trim().split_once(' '))
    }

    /// The first payload type in `m=` order whose rtpmap names `name/clock`.
    fn find(&self, name: &str, clock: u32) -> Option<u8> {
        let mapped: Vec<u8> = self
            .per_pt("rtpmap")
            .filter(|(_, enc)| {
                let mut parts = enc.trim().split('/');
                parts.next().is_some_and(|n| n.eq_ignore_ascii_case(name))
                    && parts.next().and_then(|c| c.parse::<u32>().ok()) == Some(clock)
            })
            .filter_map(|(pt, _)| pt.parse().ok())
            .collect();
        self.formats.iter().copied().find(|pt| mapped.contains(pt))
    }

    /// The payload type of an `rtx` codec with `apt=<pt>`, in `m=` order.
    fn rtx_for(&self, pt: u8) -> Option<u8> {
        let rtx = self.find("rtx", 90_000);
        rtx?;
        let apt = format!("apt={pt}");
        let with_apt: Vec<u8> = self
            .per_pt("fmtp")
            .filter(|(_, params)| params.split(';').any(|p| p.trim() == apt))
            .filter_map(|(p, _)| p.parse().ok())
            .collect();
        let rtx_pts: Vec<u8> = self
            .per_pt("rtpmap")
            .filter(|(_, enc)| enc.trim().to_ascii_lowercase().starts_with("rtx/"))
            .filter_map(|(p, _)| p.parse().ok())
            .collect();
        self.formats
            .iter()
            .copied()
            .find(|p| with_apt.contains(p) && rtx_pts.contains(p))
    }

    /// `a=rtcp-fb` values for `pt` and for `*`.
    fn feedback(&self, pt: u8) -> Vec<String> {
        let pt = pt.to_string();
        let mut out: Vec<String> = Vec::new();
        for a in self.attributes.iter().filter(|a| a.key == "rtcp-fb") {
            let Some((p, fb)) = a.value.as_deref().and_then(|v| v.trim().split_once(' ')) else {
                continue;
            };
            let fb = fb.split_whitespace().collect::<Vec<_>>().join(" ");
            if (p == pt || p == "*") && !out.contains(&fb) {
                out.push(fb);
            }
        }
        out
    }
}

/// `a=extmap:<id>[/<direction>] <uri> [attributes]`.
fn extmaps(md: &MediaDescription) -> Vec<(u8, String)> {
    md.attributes
        .iter()
        .filter(|a| a.key == "extmap")
        .filter_map(|a| {
            let mut parts = a.value.as_deref()?.split_whitespace();
            let id = parts.next()?.split('/').next()?.parse::<u8>().ok()?;
            // RFC 8285: ids 1-14 (one-byte) and 1-255 (two-byte); 0 is invalid.
            (id != 0).then_some(())?;
            Some((id, parts.next()?.to_owned()))
        })
        .collect()
}

/// (media SSRC, RTX SSRC, the media SSRC's msid) from `a=ssrc-group:FID`
/// and `a=ssrc`.
fn ssrcs(md: &MediaDescription) -> (Option<u32>, Option<u32>, Option<String>) {
    let fid = md
        .attributes
        .iter()
        .filter(|a| a.key == "ssrc-group")
        .filter_map(|a| a.value.as_deref())
        .find_map(|v| {
            let mut parts = v.split_whitespace();
            (parts.next()? == "FID").then_some(())?;
            let media = parts.next()?.parse::<u32>().ok()?;
            let rtx = parts.next()?.parse::<u32>().ok()?;
            Some((media, rtx))
        });
    let lines: Vec<(u32, &str)> = md
        .attributes
        .iter()
        .filter(|a| a.key == "ssrc")
        .filter_map(|a| {
            let (id, rest) = a.value.as_deref()?.trim().split_once(' ')?;
            Some((id.parse().ok()?, rest))
        })
        .collect();
    let (media, rtx) = match fid {
        Some((m, r)) => (Some(m), Some(r)),
        None => (lines.first().map(|(id, _)| *id), None),
    };
    let msid = media.and_then(|m| {
        lines
            .iter()
            .find_map(|(id, rest)| (*id == m).then(|| rest.strip_prefix("msid:")).flatten())
            .map(|v| v.trim().to_owned())
    });
    (media, rtx, msid)
}

/// The `a=candidate` value of our host candidate (also sent on its own as a
/// trickled candidate).
pub fn host_candidate(addr: SocketAddr) -> String {
    format!(
        "1 1 udp {HOST_PRIORITY} {} {} typ host generation 0",
        addr.ip(),
        addr.port()
    )
}

/// Writes the answer to `offer` (see the module docs for what it carries).
pub fn write_answer(offer: &Offer, params: &AnswerParams<'_>) -> String {
    let (addr_type, ip) = match params.candidate {
        SocketAddr::V4(a) => ("IP4", a.ip().to_string()),
        SocketAddr::V6(a) => ("IP6", a.ip().to_string()),
    };
    let accepted: Vec<&str> = offer
        .media
        .iter()
        .filter(|m| m.accepted())
        .map(|m| m.mid.as_str())
        .collect();
    let mut attributes = vec![
        attr("group", Some(format!("BUNDLE {}", accepted.join(" ")))),
        attr("ice-lite", None),
        attr("msid-semantic", Some("WMS *".to_owned())),
    ];
    if accepted.is_empty() {
        attributes.remove(0);
    }
    let first = offer.media.iter().position(OfferedMedia::accepted);
    let media_descriptions = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let sender = params.senders.get(i).and_then(Option::as_ref);
            if m.accepted() {
                answer_media(m, params, sender, first == Some(i), (addr_type, &ip))
            } else {
                rejected_media(m)
            }
        })
        .collect();
    SessionDescription {
        version: 0,
        origin: Origin {
            username: "-".to_owned(),
            session_id: params.session_id,
            session_version: params.session_version,
            network_type: "IN".to_owned(),
            address_type: addr_type.to_owned(),
            unicast_address: ip.clone(),
        },
        session_name: "-".to_owned(),
        session_information: None,
        uri: None,
        email_address: None,
        phone_number: None,
        connection_information: None,
        bandwidth: vec![],
        time_descriptions: vec![TimeDescription {
            timing: Timing {
                start_time: 0,
                stop_time: 0,
            },
            repeat_times: vec![],
        }],
        time_zones: vec![],
        encryption_key: None,
        attributes,
        media_descriptions,
    }
    .marshal()
}

fn attr(key: &str, value: Option<String>) -> Attribute {
    Attribute::new(key.to_owned(), value)
}

fn media_name(media: &str, port: isize, formats: Vec<String>) -> MediaName {
    MediaName {
        media: media.to_owned(),
        port: RangedPort {
            value: port,
            range: None,
        },
        protos: ["UDP", "TLS", "RTP", "SAVPF"].map(str::to_owned).to_vec(),
        formats,
    }
}

/// A rejected section (RFC 8829 §5.3.1: port 0, the offered m= line's
/// media, protos and formats, the mid kept).
fn rejected_media(m: &OfferedMedia) -> MediaDescription {
    let (media, protos, formats) = m.m_line.clone();
    MediaDescription {
        media_name: MediaName {
            media,
            port: RangedPort {
                value: 0,
                range: None,
            },
            protos,
            formats,
        },
        media_title: None,
        connection_information: Some(connection("IP4", "0.0.0.0")),
        bandwidth: vec![],
        encryption_key: None,
        attributes: vec![attr("mid", Some(m.mid.clone())), attr("inactive", None)],
    }
}

fn connection(addr_type: &str, ip: &str) -> ConnectionInformation {
    ConnectionInformation {
        network_type: "IN".to_owned(),
        address_type: addr_type.to_owned(),
        address: Some(Address {
            address: ip.to_owned(),
            ttl: None,
            range: None,
        }),
    }
}

/// The extensions the SFU keeps for a kind (see `crate::extensions`), plus
/// mid for BUNDLE.
fn kept_extensions(kind: MediaKind) -> &'static [&'static str] {
    match kind {
        MediaKind::Audio => &[AUDIO_LEVEL_URI, ABS_SEND_TIME_URI, SDES_MID_URI],
        MediaKind::Video => &[VIDEO_ORIENTATION_URI, ABS_SEND_TIME_URI, SDES_MID_URI],
        MediaKind::Other => &[],
    }
}

fn answer_direction(offered: Direction, we_send: bool) -> Direction {
    match (offered.offerer_sends(), offered.offerer_receives() && we_send) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::RecvOnly,
        (false, true) => Direction::SendOnly,
        (false, false) => Direction::Inactive,
    }
}

fn answer_media(
    m: &OfferedMedia,
    p: &AnswerParams<'_>,
    sender: Option<&OutgoingStream>,
    with_candidate: bool,
    (addr_type, ip): (&str, &str),
) -> MediaDescription {
    let Some(pt) = m.payload_type else {
        return rejected_media(m);
    };
    let direction = answer_direction(m.direction, sender.is_some());
    let sender = sender.filter(|_| m.direction.offerer_receives());
    let rtx = m.rtx_payload_type.filter(|_| m.kind == MediaKind::Video);
    let mut formats = vec![pt.to_string()];
    formats.extend(rtx.map(|r| r.to_string()));
    let mut a = vec![
        attr("mid", Some(m.mid.clone())),
        attr("ice-ufrag", Some(p.ice.ufrag.clone())),
        attr("ice-pwd", Some(p.ice.pwd.clone())),
        attr("fingerprint", Some(p.fingerprint.to_string())),
        attr("setup", Some("passive".to_owned())),
    ];
    for uri in kept_extensions(m.kind) {
        if let Some(id) = m.extmap_id(uri) {
            a.push(attr("extmap", Some(format!("{id} {uri}"))));
        }
    }
    a.push(attr(direction.sdp(), None));
    if let Some(s) = sender {
        a.push(attr("msid", Some(format!("{} {}", s.stream_id, s.track_id))));
    }
    a.push(attr("rtcp-mux", None));
    if m.rtcp_rsize {
        a.push(attr("rtcp-rsize", None));
    }
    if m.kind == MediaKind::Audio {
        a.push(attr("rtpmap", Some(format!("{pt} opus/48000/2"))));
        a.push(attr("fmtp", Some(format!("{pt} minptime=10;useinbandfec=1"))));
    } else {
        a.push(attr("rtpmap", Some(format!("{pt} VP8/90000"))));
        for fb in VIDEO_FEEDBACK.iter().filter(|fb| m.offers_feedback(fb)) {
            a.push(attr("rtcp-fb", Some(format!("{pt} {fb}"))));
        }
        if let Some(r) = rtx {
            a.push(attr("rtpmap", Some(format!("{r} rtx/90000"))));
            a.push(attr("fmtp", Some(format!("{r} apt={pt}"))));
        }
    }
    if let Some(s) = sender {
        let rtx_ssrc = s.rtx_ssrc.filter(|_| rtx.is_some());
        if let Some(r) = rtx_ssrc {
            a.push(attr("ssrc-group", Some(format!("FID {} {r}", s.ssrc))));
        }
        for ssrc in std::iter::once(s.ssrc).chain(rtx_ssrc) {
            a.push(attr("ssrc", Some(format!("{ssrc} cname:{}", p.cname))));
            a.push(attr(
                "ssrc",
                Some(format!("{ssrc} msid:{} {}", s.stream_id, s.track_id)),
            ));
        }
    }
    if with_candidate {
        a.push(attr("candidate", Some(host_candidate(p.candidate))));
        a.push(attr("end-of-candidates", None));
    }
    MediaDescription {
        media_name: media_name(
            if m.kind == MediaKind::Audio {
                "audio"
            } else {
                "video"
            },
            // u16 always fits; 9 (the JSEP placeholder) is never used.
            isize::try_from(p.candidate.port()).unwrap_or(9),
            formats,
        ),
        media_title: None,
        connection_information: Some(connection(addr_type, ip)),
        bandwidth: vec![],
        encryption_key: None,
        attributes: a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::dtls::FingerprintAlgorithm;
    use proptest::prelude::*;
    use rtc::peer_connection::configuration::media_engine::MediaEngine;
    use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
    use rtc::peer_connection::configuration::RTCConfigurationBuilder;
    use rtc::peer_connection::sdp::RTCSessionDescription;
    use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
    use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
    use std::time::Instant;

    /// Chromium 156's offers, made as client-web (a user: sendrecv audio +
    /// video of one camera stream) and admin-web's watch page (two recvonly
    /// audio + video pairs) make them; the restart offer is the user's
    /// `createOffer({iceRestart: true})`.
    const CHROMIUM_USER: &str = include_str!("testdata/chromium-user-offer.sdp");
    const CHROMIUM_RESTART: &str = include_str!("testdata/chromium-user-restart-offer.sdp");
    const CHROMIUM_WATCHER: &str = include_str!("testdata/chromium-watcher-offer.sdp");
    /// The `rtc` test client's offers (sfu/tests/common's configuration).
    const RTC_USER: &str = include_str!("testdata/rtc-user-offer.sdp");
    const RTC_WATCHER: &str = include_str!("testdata/rtc-watcher-offer.sdp");

    const TWCC_URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

    fn our_ice() -> IceCredentials {
        IceCredentials {
            ufrag: "sfuUfrag".to_owned(),
            pwd: "sfuPasswordOf24Chars+/ab".to_owned(),
        }
    }

    fn our_fingerprint() -> Fingerprint {
        Fingerprint {
            algorithm: FingerprintAlgorithm::Sha256,
            bytes: (0..32).collect(),
        }
    }

    fn stream(slot: u32, video: bool) -> OutgoingStream {
        OutgoingStream {
            ssrc: 1000 + slot * 10 + u32::from(video),
            rtx_ssrc: video.then_some(2000 + slot),
            stream_id: format!("duet-{slot}"),
            track_id: format!("{}-{slot}", if video { "video" } else { "audio" }),
        }
    }

    /// Our sender for each section: slot = section index / 2 (a watcher's
    /// sections are audio, video, audio, video).
    fn senders(offer: &Offer) -> Vec<Option<OutgoingStream>> {
        offer
            .media
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.accepted()
                    .then(|| stream(i as u32 / 2, m.kind == MediaKind::Video))
            })
            .collect()
    }

    fn answer(offer: &Offer) -> String {
        let (ice, fp, senders) = (our_ice(), our_fingerprint(), senders(offer));
        write_answer(
            offer,
            &AnswerParams {
                session_id: 42,
                session_version: 2,
                ice: &ice,
                fingerprint: &fp,
                candidate: "203.0.113.9:3478".parse().expect("addr"),
                cname: "duet",
                senders: &senders,
            },
        )
    }

    fn unmarshal(sdp: &str) -> SessionDescription {
        SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.as_bytes())).expect("rtc::sdp parses")
    }

    fn values<'a>(md: &'a MediaDescription, key: &str) -> Vec<&'a str> {
        md.attributes
            .iter()
            .filter(|a| a.key == key)
            .map(|a| a.value.as_deref().unwrap_or(""))
            .collect()
    }

    #[test]
    fn chromium_user_offer_parses_into_the_expected_values() {
        let o = parse_offer(CHROMIUM_USER).expect("offer");
        assert_eq!(o.ice.ufrag, "5TIo");
        assert_eq!(o.ice.pwd, "nAg9AQe4quHWoiWLFsk+q7Gt");
        assert_eq!(o.fingerprint.algorithm, FingerprintAlgorithm::Sha256);
        assert_eq!(o.fingerprint.bytes[..3], [0x3E, 0x45, 0xFB]);
        assert_eq!(o.fingerprint.bytes[31], 0xA1);
        assert_eq!(o.setup, Setup::ActPass);
        assert_eq!(o.bundle, ["0", "1"]);
        let [audio, video] = &o.media[..] else {
            panic!("two sections: {:?}", o.media)
        };
        assert_eq!(
            (audio.mid.as_str(), audio.kind, audio.direction),
            ("0", MediaKind::Audio, Direction::SendRecv)
        );
        assert_eq!((audio.payload_type, audio.rtx_payload_type), (Some(111), None));
        assert_eq!(audio.feedback, ["transport-cc"]);
        assert_eq!(audio.extmap_id(AUDIO_LEVEL_URI), Some(1));
        assert_eq!(audio.extmap_id(ABS_SEND_TIME_URI), Some(2));
        assert_eq!(audio.extmap_id(SDES_MID_URI), Some(4));
        assert_eq!((audio.ssrc, audio.rtx_ssrc), (Some(2_054_482_212), None));
        assert_eq!(
            audio.msid.as_deref(),
            Some("4f37c948-291d-4204-9c81-bd49f275f19e 0066f0cd-7d94-4dae-9e98-356920465f13")
        );
        assert_eq!(
            (video.mid.as_str(), video.kind, video.direction),
            ("1", MediaKind::Video, Direction::SendRecv)
        );
        assert_eq!((video.payload_type, video.rtx_payload_type), (Some(96), Some(97)));
        assert_eq!(
            video.feedback,
            ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
        );
        assert_eq!(video.extmap_id(VIDEO_ORIENTATION_URI), Some(13));
        assert_eq!(video.extmap_id(ABS_SEND_TIME_URI), Some(2));
        assert_eq!(video.extmap_id(TWCC_URI), Some(3));
        assert_eq!(
            (video.ssrc, video.rtx_ssrc),
            (Some(1_348_710_380), Some(3_353_276_925))
        );
        assert!(video.rtcp_rsize);
    }

    #[test]
    fn chromium_ice_restart_offer_is_recognised() {
        let first = parse_offer(CHROMIUM_USER).expect("offer");
        let restart = parse_offer(CHROMIUM_RESTART).expect("restart offer");
        assert_eq!(restart.ice.ufrag, "OAHo");
        assert!(restart.is_ice_restart_of(&first));
        assert!(!first.is_ice_restart_of(&first.clone()));
        // Same transport certificate, same sections and SSRCs.
        assert_eq!(restart.fingerprint, first.fingerprint);
        assert_eq!(restart.media, first.media);
    }

    #[test]
    fn chromium_watcher_offer_has_two_recvonly_pairs() {
        let o = parse_offer(CHROMIUM_WATCHER).expect("offer");
        assert_eq!(o.ice.ufrag, "fELA");
        assert_eq!(o.fingerprint.bytes[..2], [0xD6, 0xD4]);
        assert_eq!(o.bundle, ["0", "1", "2", "3"]);
        let kinds: Vec<_> = o
            .media
            .iter()
            .map(|m| (m.mid.as_str(), m.kind, m.payload_type, m.rtx_payload_type))
            .collect();
        assert_eq!(
            kinds,
            [
                ("0", MediaKind::Audio, Some(111), None),
                ("1", MediaKind::Video, Some(96), Some(97)),
                ("2", MediaKind::Audio, Some(111), None),
                ("3", MediaKind::Video, Some(96), Some(97)),
            ]
        );
        for m in &o.media {
            assert_eq!(m.direction, Direction::RecvOnly);
            assert_eq!((m.ssrc, m.rtx_ssrc, m.msid.as_deref()), (None, None, None));
        }
    }

    #[test]
    fn rtc_client_offers_parse_into_the_expected_values() {
        let o = parse_offer(RTC_USER).expect("offer");
        assert_eq!(o.ice.ufrag, "rtcUserUfragFixture");
        assert_eq!(o.bundle, ["0", "1"]);
        let [audio, video] = &o.media[..] else {
            panic!("two sections: {:?}", o.media)
        };
        assert_eq!(
            (audio.kind, audio.payload_type, audio.ssrc),
            (MediaKind::Audio, Some(111), Some(11))
        );
        assert_eq!(
            (video.kind, video.payload_type, video.rtx_payload_type),
            (MediaKind::Video, Some(96), Some(97))
        );
        assert_eq!((video.ssrc, video.rtx_ssrc), (Some(22), Some(33)));
        assert!(video.feedback.iter().any(|f| f == "nack pli"));
        assert!(video.extmap_id(ABS_SEND_TIME_URI).is_some());
        assert_eq!(video.msid.as_deref(), Some("alice alice-v"));
        let w = parse_offer(RTC_WATCHER).expect("watcher offer");
        assert_eq!(w.media.len(), 4);
        assert!(w
            .media
            .iter()
            .all(|m| m.direction == Direction::RecvOnly && m.ssrc.is_none() && m.accepted()));
    }

    #[test]
    fn the_answer_carries_what_chromium_needs_and_no_transport_cc() {
        let offer = parse_offer(CHROMIUM_USER).expect("offer");
        let text = answer(&offer);
        assert!(
            !text.contains("transport-cc") && !text.contains(TWCC_URI),
            "{text}"
        );
        let a = unmarshal(&text);
        assert!(a.has_attribute("ice-lite"));
        assert_eq!(a.attribute("group").map(String::as_str), Some("BUNDLE 0 1"));
        let [audio, video] = &a.media_descriptions[..] else {
            panic!("two sections")
        };
        for (md, mid) in [(audio, "0"), (video, "1")] {
            assert_eq!(values(md, "mid"), [mid]);
            assert_eq!(values(md, "ice-ufrag"), ["sfuUfrag"]);
            assert_eq!(values(md, "ice-pwd"), ["sfuPasswordOf24Chars+/ab"]);
            assert_eq!(values(md, "setup"), ["passive"]);
            assert_eq!(values(md, "fingerprint"), [our_fingerprint().to_string()]);
            assert!(
                md.has_attribute("rtcp-mux")
                    && md.has_attribute("rtcp-rsize")
                    && md.has_attribute("sendrecv")
            );
        }
        assert_eq!(audio.media_name.formats, ["111"]);
        assert_eq!(values(audio, "rtpmap"), ["111 opus/48000/2"]);
        assert_eq!(values(audio, "fmtp"), ["111 minptime=10;useinbandfec=1"]);
        assert_eq!(
            values(audio, "extmap"),
            [
                format!("1 {AUDIO_LEVEL_URI}"),
                format!("2 {ABS_SEND_TIME_URI}"),
                format!("4 {SDES_MID_URI}")
            ]
        );
        assert_eq!(
            values(audio, "ssrc"),
            ["1000 cname:duet", "1000 msid:duet-0 audio-0"]
        );
        assert_eq!(
            values(audio, "candidate"),
            [host_candidate("203.0.113.9:3478".parse().expect("addr"))]
        );
        assert_eq!(video.media_name.formats, ["96", "97"]);
        assert_eq!(values(video, "rtpmap"), ["96 VP8/90000", "97 rtx/90000"]);
        assert_eq!(values(video, "fmtp"), ["97 apt=96"]);
        assert_eq!(
            values(video, "rtcp-fb"),
            ["96 goog-remb", "96 ccm fir", "96 nack", "96 nack pli"]
        );
        assert_eq!(
            values(video, "extmap"),
            [
                format!("13 {VIDEO_ORIENTATION_URI}"),
                format!("2 {ABS_SEND_TIME_URI}"),
                format!("4 {SDES_MID_URI}")
            ]
        );
        assert_eq!(values(video, "ssrc-group"), ["FID 1001 2000"]);
        assert_eq!(
            values(video, "ssrc"),
            [
                "1001 cname:duet",
                "1001 msid:duet-0 video-0",
                "2000 cname:duet",
                "2000 msid:duet-0 video-0"
            ]
        );
        assert_eq!(values(video, "msid"), ["duet-0 video-0"]);
        assert!(
            values(video, "candidate").is_empty(),
            "the candidate is in the first bundled section only"
        );
    }

    #[test]
    fn the_watchers_answer_sends_two_slots_on_four_sections() {
        let offer = parse_offer(CHROMIUM_WATCHER).expect("offer");
        let a = unmarshal(&answer(&offer));
        assert_eq!(a.attribute("group").map(String::as_str), Some("BUNDLE 0 1 2 3"));
        let ssrcs: Vec<Vec<&str>> = a
            .media_descriptions
            .iter()
            .map(|md| values(md, "ssrc-group"))
            .collect();
        assert_eq!(
            ssrcs,
            [vec![], vec!["FID 1001 2000"], vec![], vec!["FID 1011 2001"]]
        );
        assert!(a.media_descriptions.iter().all(|md| md.has_attribute("sendonly")));
    }

    /// The `rtc` client as sfu/tests/common builds it.
    fn rtc_client(watcher: bool) -> RTCPeerConnection {
        let (me, registry) =
            crate::peer::media_engine_and_registry_from(MediaEngine::default()).expect("media engine");
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(SettingEngineBuilder::new().build())
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .expect("peer connection");
        if watcher {
            for kind in [
                RtpCodecKind::Audio,
                RtpCodecKind::Video,
                RtpCodecKind::Audio,
                RtpCodecKind::Video,
            ] {
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                };
                pc.add_transceiver_from_kind(kind, Some(init))
                    .expect("transceiver");
            }
        } else {
            for (kind, id, ssrc, rtx) in [
                (RtpCodecKind::Audio, "alice-a", 11, None),
                (RtpCodecKind::Video, "alice-v", 22, Some(33)),
            ] {
                pc.add_track(crate::peer::outgoing_track("alice", id, kind, ssrc, rtx))
                    .expect("track");
            }
        }
        pc
    }

    /// The real proof: the `rtc` client takes our answer.
    #[test]
    fn the_rtc_client_accepts_the_answer() {
        for watcher in [false, true] {
            let mut pc = rtc_client(watcher);
            let offer = pc.create_offer(None).expect("create offer");
            pc.set_local_description(Instant::now(), offer.clone())
                .expect("local description");
            let parsed = parse_offer(&offer.sdp).expect("our parser takes the rtc offer");
            let text = answer(&parsed);
            let answer = RTCSessionDescription::answer(text.clone()).expect("answer");
            pc.set_remote_description(Instant::now(), answer)
                .unwrap_or_else(|e| panic!("rtc refused the answer ({e}):\n{text}"));
        }
    }

    /// Regenerates the `rtc` client fixtures: `cargo test -p sfu -- --ignored write_rtc_fixtures`.
    #[test]
    #[ignore = "writes fixtures"]
    fn write_rtc_fixtures() {
        for (watcher, file, ufrag) in [
            (false, "rtc-user-offer.sdp", "rtcUserUfragFixture"),
            (true, "rtc-watcher-offer.sdp", "rtcWatcherUfragFixture"),
        ] {
            let mut pc = rtc_client(watcher);
            let offer = pc.create_offer(None).expect("create offer");
            // Fixed credentials so the fixture's expectations are stable.
            let old = parse_offer(&offer.sdp).expect("offer");
            let sdp = offer.sdp.replace(
                &format!("a=ice-ufrag:{}", old.ice.ufrag),
                &format!("a=ice-ufrag:{ufrag}"),
            );
            let path = format!("{}/src/endpoint/testdata/{file}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(path, sdp).expect("write fixture");
        }
    }

    fn offer_with(from: &str, to: &str) -> String {
        assert!(CHROMIUM_USER.contains(from), "{from}");
        CHROMIUM_USER.replace(from, to)
    }

    #[test]
    fn unusable_offers_get_typed_errors() {
        type Expect = fn(&SdpError) -> bool;
        let cases: Vec<(String, Expect)> = vec![
            (offer_with("a=ice-ufrag:5TIo\r\n", ""), |e| {
                matches!(e, SdpError::MissingIceCredentials)
            }),
            (
                CHROMIUM_USER.replacen("a=ice-ufrag:5TIo", "a=ice-ufrag:zzzz", 1),
                |e| matches!(e, SdpError::InconsistentIceCredentials),
            ),
            (
                offer_with("a=fingerprint:sha-256 3E:45", "a=fingerprint:sha-256 3E:4"),
                |e| matches!(e, SdpError::BadFingerprint(_)),
            ),
            (offer_with("a=fingerprint:sha-256", "a=fingerprint:md5"), |e| {
                matches!(e, SdpError::BadFingerprint(_))
            }),
            (offer_with("a=setup:actpass", "a=setup:passive"), |e| {
                matches!(e, SdpError::UnsupportedSetup(_))
            }),
            (
                offer_with("a=group:BUNDLE 0 1", "a=group:BUNDLE 0"),
                |e| matches!(e, SdpError::NotBundled(m) if m == "1"),
            ),
            (offer_with("a=mid:1\r\n", "a=mid:0\r\n"), |e| {
                matches!(e, SdpError::DuplicateMid(_))
            }),
            (offer_with("a=mid:1\r\n", ""), |e| {
                matches!(e, SdpError::MissingMid(1))
            }),
            (
                offer_with("a=rtcp-mux\r\n", ""),
                |e| matches!(e, SdpError::NoRtcpMux(m) if m == "0"),
            ),
            (
                offer_with("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 foo/48000/2")
                    .replace("VP8/90000", "VP9/90000"),
                |e| matches!(e, SdpError::NothingToServe),
            ),
            ("v=0\r\nthis is not sdp".to_owned(), |e| {
                matches!(e, SdpError::Parse(_))
            }),
            (
                format!("{CHROMIUM_USER}{}", "a=x\r\n".repeat(MAX_OFFER_BYTES / 5)),
                |e| matches!(e, SdpError::TooLarge(_)),
            ),
        ];
        for (sdp, want) in cases {
            let err = parse_offer(&sdp).expect_err("refused");
            assert!(want(&err), "unexpected error: {err}");
        }
    }

    #[test]
    fn sections_we_cannot_serve_are_rejected_and_left_out_of_bundle() {
        // A data channel section and an H264-only video section.
        let extra = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=sctp-port:5000\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:3\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\n";
        let sdp = format!("{}{extra}", CHROMIUM_USER.replace("BUNDLE 0 1", "BUNDLE 0 1 2 3"));
        let offer = parse_offer(&sdp).expect("offer");
        assert_eq!(
            offer.media.iter().map(OfferedMedia::accepted).collect::<Vec<_>>(),
            [true, true, false, false]
        );
        let a = unmarshal(&answer(&offer));
        assert_eq!(a.attribute("group").map(String::as_str), Some("BUNDLE 0 1"));
        let data = &a.media_descriptions[2];
        assert_eq!(data.media_name.port.value, 0);
        assert_eq!(data.media_name.media, "application");
        assert_eq!(data.media_name.protos, ["UDP", "DTLS", "SCTP"]);
        assert_eq!(values(data, "mid"), ["2"]);
        assert_eq!(a.media_descriptions[3].media_name.port.value, 0);
        assert_eq!(a.media_descriptions[3].media_name.formats, ["102"]);
    }

    #[test]
    fn the_answers_fingerprint_reads_back_as_ours() {
        let offer = parse_offer(CHROMIUM_USER).expect("offer");
        let a = unmarshal(&answer(&offer));
        for md in &a.media_descriptions {
            let fp: Fingerprint = values(md, "fingerprint")[0].parse().expect("parses");
            assert_eq!(fp, our_fingerprint());
        }
    }

    /// SDP-ish text: lines of a real offer, shuffled, dropped, duplicated or
    /// with their values replaced.
    fn sdp_like() -> impl Strategy<Value = String> {
        let lines: Vec<String> = CHROMIUM_WATCHER.lines().map(str::to_owned).collect();
        let n = lines.len();
        let edit = prop_oneof![
            Just(Edit::Keep),
            (0..n).prop_map(Edit::Drop),
            (0..n, ".{0,30}").prop_map(|(i, v)| Edit::Value(i, v)),
            (0..n, 0..n).prop_map(|(i, j)| Edit::Copy(i, j)),
        ];
        proptest::collection::vec(edit, 0..40).prop_map(move |edits| {
            let mut out = lines.clone();
            for e in edits {
                match e {
                    Edit::Keep => {}
                    Edit::Drop(i) => {
                        if i < out.len() {
                            out.remove(i);
                        }
                    }
                    Edit::Value(i, v) => {
                        if let Some(l) = out.get_mut(i) {
                            let key = l.split_once(':').map_or(l.as_str(), |(k, _)| k).to_owned();
                            *l = format!("{key}:{v}");
                        }
                    }
                    Edit::Copy(i, j) => {
                        if let Some(l) = out.get(i).cloned() {
                            out.insert(j.min(out.len()), l);
                        }
                    }
                }
            }
            out.join("\r\n") + "\r\n"
        })
    }

    #[derive(Debug, Clone)]
    enum Edit {
        Keep,
        Drop(usize),
        Value(usize, String),
        Copy(usize, usize),
    }

    proptest! {
        /// Whatever `rtc::sdp` accepts gives an `Offer` or a typed error,
        /// and every `Offer` gets an answer `rtc::sdp` parses.
        #[test]
        fn any_offer_rtc_sdp_accepts_yields_an_offer_or_a_typed_error(sdp in sdp_like()) {
            if SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.as_bytes())).is_ok() {
                if let Ok(offer) = parse_offer(&sdp) {
                    let text = answer(&offer);
                    prop_assert!(
                        SessionDescription::unmarshal(&mut std::io::Cursor::new(text.as_bytes())).is_ok(),
                        "answer does not parse:\n{}", text
                    );
                }
            }
        }

        #[test]
        fn random_text_never_panics(sdp in "(v=0\r\n)?([a-z]=[ -~]{0,40}\r\n){0,30}") {
            let _ = parse_offer(&sdp);
        }
    }
}
