//! Credentials and trace context that arrive from the network: session,
//! SFU and moderator tokens (query strings, headers, cookies), W3C
//! `traceparent` headers and TURN REST usernames. A token is tried as
//! given, and its claims are also signed with the key first, so that claim
//! parsing and validation (expiry, audience) are reached behind the HMAC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::token::{ModeratorClaims, SessionClaims, SfuClaims, TokenKey};
use proto::trace::TraceParent;
use proto::turn_cred;
use std::sync::OnceLock;

fn key() -> &'static TokenKey {
    static KEY: OnceLock<TokenKey> = OnceLock::new();
    KEY.get_or_init(|| TokenKey::new(b"fuzz-secret-of-32-bytes-or-more!"))
}

fn verify_all(token: &str) {
    let _ = key().verify::<SessionClaims>(token);
    let _ = key().verify::<SfuClaims>(token);
    let _ = key().verify::<ModeratorClaims>(token);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    verify_all(text);
    let _ = TraceParent::parse(text);
    let _ = turn_cred::parse_username(text);
    let _ = turn_cred::check_expiry(text, 1_700_000_000);
    let _ = turn_cred::password_for(b"secret", text);
    if let Ok(claims) = serde_json::from_str::<serde_json::Value>(text) {
        if let Ok(token) = key().mint(&claims) {
            verify_all(&token);
        }
    }
});
