//! A text message on a visitor's signaling WebSocket (`/ws`), read as the
//! connection reads it: `ws::parse_client_msg` (JSON, type, fields), then
//! what the message's handler checks before acting: a `join`'s interests
//! and language (`ws::check_join`), a `chat`'s text (`chat::clean_text`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::signal::ClientMsg;
use signaling::{chat, ws};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(msg) = ws::parse_client_msg(text) else {
        return;
    };
    match msg {
        ClientMsg::Join { interests, lang, .. } => {
            if let Ok((lang, interests)) = ws::check_join(&interests, lang) {
                assert!(
                    lang.is_none_or(|l| !l.is_empty()),
                    "an empty language tag survived"
                );
                assert!(
                    interests.iter().all(|i| !i.contains(',') && !i.contains('|')),
                    "a separator survived in {interests:?}"
                );
            }
        }
        ClientMsg::Chat { text } => {
            let _ = chat::clean_text(&text);
        }
        ClientMsg::Typing | ClientMsg::Next | ClientMsg::Stop => {}
    }
});
