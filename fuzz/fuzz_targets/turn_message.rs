//! Fuzzes the wire parsers: STUN/ChannelData classification, Send
//! indications read in place, STUN parsing
//! with FINGERPRINT and integrity checks, stream framing, and the client-side
//! parser. None of them may panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turn_relay::{client, indication, wire};

fuzz_target!(|data: &[u8]| {
    let _ = wire::classify(data);
    let _ = wire::frame_len(data);
    let _ = wire::parse_channel_data(data);
    if indication::is_send_indication(data) {
        let _ = indication::parse_send_indication(data);
    }
    if let Ok(p) = wire::parse_stun(data) {
        if let Some(ig) = &p.integrity {
            let _ = wire::verify_integrity(data, ig, b"fuzz-key");
        }
    }
    let _ = client::parse_incoming(data);
});
