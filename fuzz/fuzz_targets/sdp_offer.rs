//! An SDP offer as the SFU reads it from a participant's WebSocket (always
//! UTF-8 text): `sdp::parse_offer`, then for an accepted offer the answer
//! the node would write, which must itself be SDP that parses, and the
//! header extension ids read back from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtc::sdp::SessionDescription;
use sfu::endpoint::dtls::{Fingerprint, FingerprintAlgorithm};
use sfu::endpoint::ice::IceCredentials;
use sfu::endpoint::sdp::{self, AnswerParams, OutgoingStream};
use sfu::extensions::LegExtensions;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = LegExtensions::from_sdp(text);
    let Ok(offer) = sdp::parse_offer(text) else {
        return;
    };
    let ice = IceCredentials {
        ufrag: "fuzzUfrg".into(),
        pwd: "fuzzfuzzfuzzfuzzfuzzfuzz".into(),
    };
    let fingerprint = Fingerprint::of_certificate(FingerprintAlgorithm::Sha256, b"fuzz certificate");
    let senders: Vec<Option<OutgoingStream>> = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.accepted().then(|| OutgoingStream {
                ssrc: 1000 + i as u32,
                rtx_ssrc: m.rtx_payload_type.map(|_| 2000 + i as u32),
                stream_id: "duet-0".into(),
                track_id: format!("track-{i}"),
            })
        })
        .collect();
    let params = AnswerParams {
        session_id: 1,
        session_version: 1,
        ice: &ice,
        fingerprint: &fingerprint,
        candidate: "192.0.2.1:40000".parse().expect("valid address literal"),
        cname: "duet",
        senders: &senders,
    };
    let answer = sdp::write_answer(&offer, &params);
    if let Err(e) = SessionDescription::unmarshal(&mut std::io::Cursor::new(answer.as_bytes())) {
        panic!("the answer to an accepted offer does not parse: {e}\n{answer}");
    }
    let _ = LegExtensions::from_sdp(&answer);
});
