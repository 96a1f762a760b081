//! The TOML config files an operator writes: `duet --config FILE <role>`
//! read as the binary reads it (TOML, keys matched to the role's flags,
//! values through the flags' own parsers), and a screening model's config
//! (`screen::config::ModelConfig`). Bad files must be refused with an
//! error, never a panic. The first byte picks the role.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::ffi::OsString;
use std::io::Write;

const ROLES: [&str; 6] = ["up", "signaling", "sfu", "turn", "screen", "admin"];

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let _ = screen::config::ModelConfig::parse(text);
    // The binary reads the file by path: give it one (one per process).
    let path = std::env::temp_dir().join(format!("duet-fuzz-config-{}.toml", std::process::id()));
    let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(body));
    if written.is_err() {
        return;
    }
    let role = ROLES[usize::from(*which) % ROLES.len()];
    let args: Vec<OsString> = ["duet", "--config", path.to_str().unwrap_or_default(), role]
        .iter()
        .map(OsString::from)
        .collect();
    let _ = duet::config_file::parse_with_file(args);
});
