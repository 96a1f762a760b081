//! SRTP cost per packet, each profile, ours (in place) beside rtc-srtp's
//! `Context` (which allocates per packet): a quick look, not a benchmark
//! suite. Run with `cargo run --release -p sfu --example srtp_micro [packets]`.
//! Measures wall time on whatever else the machine is doing; read the load
//! average beside the numbers.

use rtc::srtp::config::Config;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use sfu::endpoint::srtp::{DtlsRole, SrtpProfile, SrtpSession, SRTP_MAX_OVERHEAD};
use std::hint::black_box;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 1188; // a 1200-byte RTP packet with a 12-byte header
const BATCH: usize = 1000;

fn main() {
    let packets: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    println!("{packets} packets of {} bytes; ns per packet", 12 + PAYLOAD);
    println!(
        "{:<30} {:>9} {:>11} {:>13} {:>15}",
        "profile", "protect", "unprotect", "rtc protect", "rtc unprotect"
    );
    for profile in SrtpProfile::PREFERENCE {
        let (protect, unprotect) = ours(profile, packets);
        let (rtc_protect, rtc_unprotect) = rtc_srtp(profile, packets);
        println!(
            "{:<30} {:>9.0} {:>11.0} {:>13.0} {:>15.0}",
            profile.name(),
            per_packet(protect, packets),
            per_packet(unprotect, packets),
            per_packet(rtc_protect, packets),
            per_packet(rtc_unprotect, packets),
        );
    }
}

fn per_packet(total: Duration, packets: usize) -> f64 {
    total.as_nanos() as f64 / packets as f64
}

fn material(profile: SrtpProfile) -> Vec<u8> {
    (0..profile.keying_material_len()).map(|i| i as u8).collect()
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut packet = vec![0x80, 96];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78]);
    packet.resize(12 + PAYLOAD, 0xab);
    packet
}

/// Protect time and unprotect time for `packets`, in batches so the two are timed apart.
fn ours(profile: SrtpProfile, packets: usize) -> (Duration, Duration) {
    let material = material(profile);
    let mut sender = SrtpSession::new(profile, &material, DtlsRole::Client).expect("keys");
    let mut receiver = SrtpSession::new(profile, &material, DtlsRole::Server).expect("keys");
    let plain = rtp(0);
    let mut buffers = vec![vec![0u8; plain.len() + SRTP_MAX_OVERHEAD]; BATCH];
    let mut lens = vec![0usize; BATCH];
    let (mut protect, mut unprotect) = (Duration::ZERO, Duration::ZERO);
    let mut seq = 0u16;
    for _ in 0..packets.div_ceil(BATCH) {
        let start = Instant::now();
        for (buf, len) in buffers.iter_mut().zip(&mut lens) {
            buf[..plain.len()].copy_from_slice(&plain);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            seq = seq.wrapping_add(1);
            *len = sender.protect_rtp(buf, plain.len()).expect("protects");
        }
        protect += start.elapsed();
        let start = Instant::now();
        for (buf, len) in buffers.iter_mut().zip(&lens) {
            black_box(receiver.unprotect_rtp(&mut buf[..*len]).expect("unprotects"));
        }
        unprotect += start.elapsed();
    }
    (protect, unprotect)
}

fn rtc_srtp(profile: SrtpProfile, packets: usize) -> (Duration, Duration) {
    let mut config = Config {
        profile: match profile {
            SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
            SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        },
        ..Default::default()
    };
    config
        .set_session_keys_from_keying_material(&material(profile), true)
        .expect("length");
    let provider = rtc::crypto::default_provider().expect("ring");
    let keys = &config.keys;
    let context = |key: &[u8], salt: &[u8]| {
        Context::new(key, salt, config.profile, None, None, provider.crypto()).expect("keys")
    };
    let mut sender = context(&keys.local_master_key, &keys.local_master_salt);
    let mut receiver = context(&keys.local_master_key, &keys.local_master_salt);
    let mut plain = rtp(0);
    let mut wires = Vec::with_capacity(BATCH);
    let (mut protect, mut unprotect) = (Duration::ZERO, Duration::ZERO);
    let mut seq = 0u16;
    for _ in 0..packets.div_ceil(BATCH) {
        wires.clear();
        let start = Instant::now();
        for _ in 0..BATCH {
            plain[2..4].copy_from_slice(&seq.to_be_bytes());
            seq = seq.wrapping_add(1);
            wires.push(sender.encrypt_rtp(&plain).expect("protects"));
        }
        protect += start.elapsed();
        let start = Instant::now();
        for wire in &wires {
            black_box(receiver.decrypt_rtp(wire).expect("unprotects"));
        }
        unprotect += start.elapsed();
    }
    (protect, unprotect)
}
