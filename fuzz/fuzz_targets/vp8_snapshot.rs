//! The snapshot path of a participant's video: VP8 RTP payloads (RFC 7741)
//! into the keyframe assembler, the latest keyframe wrapped as WebP, and
//! that WebP decoded and sampled as the screening worker does. A hostile
//! participant chooses every byte of it.
//!
//! The input is a list of packets, each `[flags][len: u16 BE][payload]`:
//! flag bit 0 is the RTP marker, bit 1 skips a sequence number (a loss),
//! bit 2 starts a new timestamp. The whole input is also wrapped and
//! decoded as if it were one keyframe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use screen::config::ModelConfig;
use sfu::vp8::{self, KeyframeAssembler};
use std::sync::OnceLock;
use std::time::Instant;

/// A model config the sampling step resizes to (one parse per process).
fn input_config() -> &'static ModelConfig {
    static CONFIG: OnceLock<ModelConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        ModelConfig::parse(include_str!("../../screen/models/nudenet-320n.toml"))
            .expect("the shipped model config is valid")
    })
}

/// Decodes a snapshot and turns it into model input, as screening does.
fn screen(webp: &[u8]) {
    if let Ok(rgb) = screen::image::decode_webp(webp) {
        let _ = screen::image::to_input(&rgb, &input_config().input);
    }
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut assembler = KeyframeAssembler::default();
    let (mut seq, mut ts) = (65_530u16, 1u32);
    let mut rest = data;
    while let [flags, len_hi, len_lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*len_hi, *len_lo])).min(tail.len());
        let (payload, after) = tail.split_at(len);
        rest = after;
        if flags & 0x02 != 0 {
            seq = seq.wrapping_add(1);
        }
        if flags & 0x04 != 0 {
            ts = ts.wrapping_add(3000);
        }
        let _ = vp8::parse_descriptor(payload);
        let _ = vp8::is_keyframe_start(payload);
        assembler.push(seq, ts, flags & 0x01 != 0, payload, now);
        seq = seq.wrapping_add(1);
    }
    if let Some(k) = assembler.latest() {
        assert!(
            k.data.len() <= vp8::MAX_KEYFRAME_BYTES,
            "kept keyframe over the limit"
        );
        screen(&vp8::webp_from_keyframe(&k.data));
    }
    let _ = vp8::keyframe_size(data);
    screen(&vp8::webp_from_keyframe(data));
});
