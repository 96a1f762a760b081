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
//!   transport and is dropped.
//!
//! The rewrite itself happens in place, in the node's buffers
//! (`node::rtp::rewrite_for_leg`).

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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn abs_send_time_is_six_dot_eighteen_fixed_point_and_wraps_at_64_s() {
        assert_eq!(abs_send_time(Duration::from_millis(500)), [0x02, 0x00, 0x00]);
        assert_eq!(abs_send_time(Duration::from_secs(64)), [0, 0, 0]);
        assert_eq!(
            abs_send_time(Duration::from_secs(65)),
            abs_send_time(Duration::from_secs(1))
        );
    }
}
