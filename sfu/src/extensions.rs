//! RTP header extensions across the SFU (plain data, time passed in).
//!
//! Extension ids are negotiated per leg (`a=extmap:<id> <uri>` in each
//! participant's answer), so a forwarded packet cannot keep the publisher's
//! ids: the subscriber could read them as something else. Each forwarded
//! packet's extensions are rebuilt for the subscriber's leg:
//!
//! - `ssrc-audio-level` and `urn:3gpp:video-orientation` describe the media
//!   itself and are carried over under the subscriber's id (without the
//!   orientation a phone's portrait video arrives on its side);
//! - `abs-send-time` is written fresh with the SFU's own send time, so the
//!   subscriber's receive-side bandwidth estimator measures the SFU→subscriber
//!   path and answers with REMB (relayed upstream by [`crate::remb`]);
//! - everything else (transport-cc numbers, mid, rid) belongs to one
//!   transport and is dropped; the leg's own interceptors add what it needs.

use rtc::rtp::header::{Extension, Header, EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE};
use rtc::sdp::extmap::{ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, VIDEO_ORIENTATION_URI};
use std::time::Duration;

/// The URIs the SFU negotiates beyond `rtc`'s defaults, by media kind
/// (`(uri, audio, video)`).
pub const FORWARDED_EXTENSIONS: &[(&str, bool, bool)] = &[
    (AUDIO_LEVEL_URI, true, false),
    (VIDEO_ORIENTATION_URI, false, true),
    (ABS_SEND_TIME_URI, true, true),
];

/// The ids one leg negotiated for the extensions the SFU forwards or writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtensionIds {
    pub audio_level: Option<u8>,
    pub video_orientation: Option<u8>,
    pub abs_send_time: Option<u8>,
}

/// One leg's negotiated ids, per media kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegExtensions {
    pub audio: ExtensionIds,
    pub video: ExtensionIds,
}

impl LegExtensions {
    /// Reads the `a=extmap` lines of a negotiated SDP (the answer holds only
    /// accepted extensions). The first audio and the first video m-section
    /// decide; BUNDLE requires the same id for a URI in every section.
    pub fn from_sdp(sdp: &str) -> Self {
        let mut leg = LegExtensions::default();
        let mut current: Option<(bool, bool)> = None; // (is_video, already_filled)
        let (mut seen_audio, mut seen_video) = (false, false);
        for line in sdp.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("m=") {
                current = if m.starts_with("audio") {
                    let filled = seen_audio;
                    seen_audio = true;
                    Some((false, filled))
                } else if m.starts_with("video") {
                    let filled = seen_video;
                    seen_video = true;
                    Some((true, filled))
                } else {
                    None
                };
                continue;
            }
            let Some((is_video, false)) = current else {
                continue;
            };
            let Some((id, uri)) = parse_extmap(line) else {
                continue;
            };
            let ids = if is_video { &mut leg.video } else { &mut leg.audio };
            match uri {
                AUDIO_LEVEL_URI => ids.audio_level = Some(id),
                VIDEO_ORIENTATION_URI => ids.video_orientation = Some(id),
                ABS_SEND_TIME_URI => ids.abs_send_time = Some(id),
                _ => {}
            }
        }
        leg
    }

    pub fn for_kind(&self, video: bool) -> &ExtensionIds {
        if video {
            &self.video
        } else {
            &self.audio
        }
    }
}

/// `a=extmap:<id>[/<direction>] <uri> [<attributes>]` → `(id, uri)`.
fn parse_extmap(line: &str) -> Option<(u8, &str)> {
    let rest = line.strip_prefix("a=extmap:")?;
    let (id_part, rest) = rest.split_once(' ')?;
    let id = id_part.split('/').next()?.parse::<u8>().ok()?;
    let uri = rest.split_whitespace().next()?;
    (1..=255).contains(&id).then_some((id, uri))
}

/// abs-send-time: 24-bit 6.18 fixed-point seconds (wraps every 64 s).
pub fn abs_send_time(since_epoch: Duration) -> [u8; 3] {
    let v = ((since_epoch.as_nanos() << 18) / 1_000_000_000) as u32 & 0x00FF_FFFF;
    let b = v.to_be_bytes();
    [b[1], b[2], b[3]]
}

/// Rebuilds `header`'s extensions for the subscriber's leg: media
/// extensions move from the publisher's ids (`from`) to the subscriber's
/// (`to`), abs-send-time is set to `send_time` where `to` negotiated it, and
/// everything else is dropped.
pub fn rewrite(header: &mut Header, from: &ExtensionIds, to: &ExtensionIds, send_time: Duration) {
    let carried = |from_id: Option<u8>, to_id: Option<u8>| -> Option<Extension> {
        let (f, t) = (from_id?, to_id?);
        let payload = header
            .extensions
            .iter()
            .find(|e| e.id == f)
            .map(|e| e.payload.clone())?;
        Some(Extension { id: t, payload })
    };
    let mut out: Vec<Extension> = Vec::with_capacity(3);
    out.extend(carried(from.audio_level, to.audio_level));
    out.extend(carried(from.video_orientation, to.video_orientation));
    if let Some(id) = to.abs_send_time {
        out.push(Extension {
            id,
            payload: bytes::Bytes::copy_from_slice(&abs_send_time(send_time)),
        });
    }
    header.extensions_padding = 0;
    if out.is_empty() {
        header.extension = false;
        header.extension_profile = 0;
        header.extensions = out;
        return;
    }
    // One-byte form (RFC 8285) when every id and length fits, else two-byte.
    let one_byte = out
        .iter()
        .all(|e| (1..=14).contains(&e.id) && (1..=16).contains(&e.payload.len()));
    header.extension = true;
    header.extension_profile = if one_byte {
        EXTENSION_PROFILE_ONE_BYTE
    } else {
        EXTENSION_PROFILE_TWO_BYTE
    };
    header.extensions = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use rtc::rtp::header::Header;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

    fn sdp(audio: &[(u8, &str)], video: &[(u8, &str)]) -> String {
        let mut s = String::from("v=0\r\ns=-\r\nt=0 0\r\n");
        s.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
        for (id, uri) in audio {
            s.push_str(&format!("a=extmap:{id} {uri}\r\n"));
        }
        s.push_str("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n");
        for (id, uri) in video {
            s.push_str(&format!("a=extmap:{id}/sendrecv {uri}\r\n"));
        }
        s
    }

    #[test]
    fn from_sdp_reads_ids_per_kind_and_ignores_unknown_uris() {
        let leg = LegExtensions::from_sdp(&sdp(
            &[(1, AUDIO_LEVEL_URI), (2, ABS_SEND_TIME_URI), (3, TWCC)],
            &[(13, VIDEO_ORIENTATION_URI), (2, ABS_SEND_TIME_URI), (3, TWCC)],
        ));
        assert_eq!(
            leg.audio,
            ExtensionIds {
                audio_level: Some(1),
                video_orientation: None,
                abs_send_time: Some(2)
            }
        );
        assert_eq!(
            leg.video,
            ExtensionIds {
                audio_level: None,
                video_orientation: Some(13),
                abs_send_time: Some(2)
            }
        );
    }

    #[test]
    fn from_sdp_tolerates_garbage_lines() {
        let s = "m=video 9 X 96\r\na=extmap:\r\na=extmap:x y\r\na=extmap:0 urn:3gpp:video-orientation\r\na=extmap:300 urn:3gpp:video-orientation\r\n";
        assert_eq!(LegExtensions::from_sdp(s), LegExtensions::default());
    }

    fn header_with(exts: &[(u8, &[u8])]) -> Header {
        let mut h = Header {
            version: 2,
            payload_type: 96,
            sequence_number: 7,
            timestamp: 9,
            ssrc: 1,
            ..Default::default()
        };
        for (id, p) in exts {
            h.set_extension(*id, Bytes::copy_from_slice(p)).unwrap();
        }
        h
    }

    #[test]
    fn rewrite_moves_media_extensions_to_the_subscribers_ids_and_drops_transport_ones() {
        let from = ExtensionIds {
            audio_level: None,
            video_orientation: Some(4),
            abs_send_time: Some(2),
        };
        let to = ExtensionIds {
            audio_level: None,
            video_orientation: Some(11),
            abs_send_time: Some(5),
        };
        // id 3 is the publisher's transport-cc number; id 2 its own send time.
        let mut h = header_with(&[(3, &[0, 42]), (4, &[0x01]), (2, &[9, 9, 9])]);
        rewrite(&mut h, &from, &to, Duration::from_secs(1));
        assert_eq!(h.get_extension(11).as_deref(), Some(&[0x01][..]));
        assert_eq!(
            h.get_extension(5).as_deref(),
            Some(&[4, 0, 0][..]),
            "1 s in 6.18 fixed point"
        );
        assert_eq!(h.get_extension(3), None);
        assert_eq!(h.get_extension(4), None);
        assert_eq!(h.get_extension(2), None);
    }

    #[test]
    fn rewrite_without_anything_to_carry_removes_the_extension_block() {
        let mut h = header_with(&[(3, &[0, 42])]);
        rewrite(
            &mut h,
            &ExtensionIds::default(),
            &ExtensionIds::default(),
            Duration::ZERO,
        );
        assert!(!h.extension && h.extensions.is_empty());
        let raw = h.marshal().unwrap();
        assert_eq!(raw.len(), 12);
    }

    #[test]
    fn abs_send_time_is_six_dot_eighteen_fixed_point_and_wraps_at_64_s() {
        assert_eq!(abs_send_time(Duration::from_millis(500)), [0x02, 0x00, 0x00]);
        assert_eq!(abs_send_time(Duration::from_secs(64)), [0, 0, 0]);
        assert_eq!(
            abs_send_time(Duration::from_secs(65)),
            abs_send_time(Duration::from_secs(1))
        );
    }

    proptest! {
        /// Whatever the publisher sent and whatever ids either leg chose,
        /// the rewritten header marshals, parses back to the same
        /// extensions, and carries only ids the subscriber negotiated.
        #[test]
        fn rewritten_headers_round_trip_and_use_only_subscriber_ids(
            in_exts in proptest::collection::vec((1u8..=14, proptest::collection::vec(any::<u8>(), 1..=16)), 0..6),
            from in (proptest::option::of(1u8..=255), proptest::option::of(1u8..=255), proptest::option::of(1u8..=255)),
            to in (proptest::option::of(1u8..=255), proptest::option::of(1u8..=255), proptest::option::of(1u8..=255)),
            ms in 0u64..1_000_000,
        ) {
            let mut h = Header { version: 2, ssrc: 5, ..Default::default() };
            for (id, p) in &in_exts {
                let _ = h.set_extension(*id, Bytes::copy_from_slice(p));
            }
            let from = ExtensionIds { audio_level: from.0, video_orientation: from.1, abs_send_time: from.2 };
            let mut to = ExtensionIds { audio_level: to.0, video_orientation: to.1, abs_send_time: to.2 };
            // A leg negotiates distinct ids for distinct URIs.
            if to.video_orientation.is_some() && to.video_orientation == to.audio_level { to.video_orientation = None; }
            if to.abs_send_time.is_some() && (to.abs_send_time == to.audio_level || to.abs_send_time == to.video_orientation) { to.abs_send_time = None; }
            rewrite(&mut h, &from, &to, Duration::from_millis(ms));
            let allowed = [to.audio_level, to.video_orientation, to.abs_send_time];
            prop_assert!(h.extensions.iter().all(|e| allowed.contains(&Some(e.id))));
            let raw = h.marshal().unwrap();
            let mut buf = &raw[..];
            let back = Header::unmarshal(&mut buf).unwrap();
            prop_assert_eq!(back.extensions.len(), h.extensions.len());
            for e in &h.extensions {
                prop_assert_eq!(back.get_extension(e.id), Some(e.payload.clone()));
            }
        }
    }
}
