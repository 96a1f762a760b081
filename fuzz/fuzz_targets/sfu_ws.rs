//! A text message on a participant's SFU WebSocket, read as the session
//! loop reads it (`SfuClientMsg`), and an offer in it parsed as the node
//! would. What parses must serialize and read back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::sfu_ws::SfuClientMsg;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(msg) = serde_json::from_str::<SfuClientMsg>(text) else {
        return;
    };
    let again = serde_json::to_string(&msg).expect("a parsed message serializes");
    let back: SfuClientMsg = serde_json::from_str(&again).expect("a serialized message parses");
    assert_eq!(back, msg, "round trip changed the message");
    if let SfuClientMsg::Offer { sdp } = &msg {
        let _ = sfu::endpoint::sdp::parse_offer(sdp);
    }
});
