//! In-place SRTP and SRTCP for the three protection profiles duet negotiates:
//! AEAD_AES_128_GCM and AEAD_AES_256_GCM (RFC 7714) and AES128_CM_HMAC_SHA1_80
//! (RFC 3711), keyed from DTLS-SRTP exported keying material (RFC 5764 §4.2).
//!
//! Every operation works on the caller's buffer: `unprotect_*` verifies and
//! decrypts in place and returns the plain length, `protect_*` encrypts in place
//! and appends the tag (and the SRTCP index) into the room the caller left after
//! the packet ([`SRTP_MAX_OVERHEAD`] bytes are always enough). Nothing is
//! allocated per packet; per-SSRC state (rollover counter, replay window, SRTCP
//! index) is created on an SSRC's first authenticated packet only.
//!
//! - Session keys come from the RFC 3711 §4.3 key derivation (AES-CM PRF, key
//!   derivation rate 0 as RFC 5764 requires), with AES-256 for the 256-bit
//!   profile (RFC 6188 §5.3, RFC 7714 §11).
//! - The rollover counter is estimated per RFC 3711 §3.3.1 and a 128-packet
//!   replay window (RFC 3711 §3.3.2) guards every inbound SSRC, for SRTP by packet
//!   index and for SRTCP by SRTCP index.
//! - The RTP header, CSRCs and header extensions stay in the clear and are
//!   authenticated (HMAC input, or the AEAD's associated data, RFC 7714 §8.2);
//!   SRTCP carries the E bit and 31-bit index (RFC 3711 §3.4, RFC 7714 §9).

use aes::cipher::consts::U16;
use aes::cipher::{BlockEncrypt, InnerIvInit, KeyInit, StreamCipher};
use aes::{Aes128Enc, Aes256Enc};
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use sha1::Sha1;
use std::collections::HashMap;

/// The most bytes protecting adds to a packet, over every profile and both RTP
/// and RTCP (SRTCP with GCM: a 16-byte tag and the 4-byte E bit + index).
pub const SRTP_MAX_OVERHEAD: usize = 20;

/// How many SSRCs one direction tracks for RTP (and, separately, for RTCP). A
/// participant sends a handful (audio, video, RTX); the cap bounds what a peer
/// holding the keys can make us keep.
pub const MAX_SSRCS: usize = 64;

/// Packets behind the highest index still accepted once (RFC 3711 §3.3.2 asks
/// for at least 64; libsrtp uses 128 too).
const REPLAY_WINDOW: u64 = 128;
const RTP_HEADER_LEN: usize = 12;
const RTCP_HEADER_LEN: usize = 8;
const SRTCP_TRAILER_LEN: usize = 4;
const GCM_TAG_LEN: usize = 16;
/// AES128_CM_HMAC_SHA1_80 truncates HMAC-SHA1 to 80 bits for RTP and RTCP alike.
const HMAC_TAG_LEN: usize = 10;
const HMAC_KEY_LEN: usize = 20;
const SRTCP_E_BIT: u32 = 1 << 31;
const MAX_SRTCP_INDEX: u32 = SRTCP_E_BIT - 1;
/// The packet index is 48 bits: 32 of rollover counter, 16 of sequence number.
const MAX_PACKET_INDEX: u64 = (1 << 48) - 1;

// RFC 3711 §4.3.1 key derivation labels.
const LABEL_RTP_KEY: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_KEY: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

/// An SRTP protection profile negotiated through DTLS `use_srtp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `SRTP_AEAD_AES_128_GCM` (RFC 7714): the cheapest per packet, our first choice.
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM` (RFC 7714).
    AeadAes256Gcm,
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 3711, RFC 5764): what every WebRTC
    /// stack supports, kept for clients that offer nothing else.
    Aes128CmHmacSha1_80,
}

impl SrtpProfile {
    /// Our preference, best first: GCM costs a fraction of AES-CM + HMAC-SHA1
    /// per packet, and 128-bit keys are enough for media.
    pub const PREFERENCE: [SrtpProfile; 3] = [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
        SrtpProfile::Aes128CmHmacSha1_80,
    ];

    /// The profile's id in the DTLS `use_srtp` extension (RFC 5764 §4.1.2, RFC 7714 §14.2).
    pub const fn dtls_id(self) -> u16 {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 => 0x0001,
            SrtpProfile::AeadAes128Gcm => 0x0007,
            SrtpProfile::AeadAes256Gcm => 0x0008,
        }
    }

    /// The profile a `use_srtp` id names, if it is one we implement.
    pub const fn from_dtls_id(id: u16) -> Option<SrtpProfile> {
        match id {
            0x0001 => Some(SrtpProfile::Aes128CmHmacSha1_80),
            0x0007 => Some(SrtpProfile::AeadAes128Gcm),
            0x0008 => Some(SrtpProfile::AeadAes256Gcm),
            _ => None,
        }
    }

    /// The IANA profile name, as Chromium's `getStats()` reports it in `srtpCipher`.
    pub const fn name(self) -> &'static str {
        match self {
            SrtpProfile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            SrtpProfile::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
            SrtpProfile::Aes128CmHmacSha1_80 => "SRTP_AES128_CM_HMAC_SHA1_80",
        }
    }

    /// Our best profile among `offered` (ids in any order), if any is ours.
    pub fn preferred_among(offered: &[u16]) -> Option<SrtpProfile> {
        Self::PREFERENCE
            .into_iter()
            .find(|profile| offered.contains(&profile.dtls_id()))
    }

    /// Master key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes128Gcm | SrtpProfile::Aes128CmHmacSha1_80 => 16,
            SrtpProfile::AeadAes256Gcm => 32,
        }
    }

    /// Master salt length in bytes (RFC 7714 §12: 96 bits for GCM; RFC 3711: 112 for AES-CM).
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 12,
            SrtpProfile::Aes128CmHmacSha1_80 => 14,
        }
    }

    /// How many bytes of DTLS exported keying material the profile takes
    /// (RFC 5764 §4.2: two keys and two salts).
    pub const fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    /// Bytes protecting adds to an RTP packet.
    pub const fn rtp_overhead(self) -> usize {
        self.tag_len()
    }

    /// Bytes protecting adds to an RTCP packet (tag and the E bit + SRTCP index).
    pub const fn rtcp_overhead(self) -> usize {
        self.tag_len() + SRTCP_TRAILER_LEN
    }

    const fn tag_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => GCM_TAG_LEN,
            SrtpProfile::Aes128CmHmacSha1_80 => HMAC_TAG_LEN,
        }
    }

    const fn is_gcm(self) -> bool {
        !matches!(self, SrtpProfile::Aes128CmHmacSha1_80)
    }
}

impl std::fmt::Display for SrtpProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which side of the DTLS handshake we were: it decides which half of the
/// keying material protects what we send (RFC 5764 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsRole {
    /// We sent the ClientHello: we protect with the client write key.
    Client,
    /// We answered it: we protect with the server write key.
    Server,
}

/// Why a packet could not be protected or unprotected, or a session not keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The exported keying material does not have the profile's length.
    #[error("{profile} takes {expected} bytes of keying material, got {actual}")]
    KeyingMaterialLength {
        /// The profile being keyed.
        profile: SrtpProfile,
        /// What the profile takes.
        expected: usize,
        /// What was given.
        actual: usize,
    },
    /// Not a version-2 RTP/RTCP packet, or shorter than its header (with CSRCs
    /// and extension) plus the tag.
    #[error("malformed packet")]
    Malformed,
    /// The tag did not verify: wrong keys, or a forged or damaged packet.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// A packet with this index was already accepted.
    #[error("replayed packet")]
    Replayed,
    /// The index is behind the replay window (or before the stream's start).
    #[error("packet older than the replay window")]
    TooOld,
    /// The buffer has no room for the tag after `len`.
    #[error("buffer has {available} bytes, protecting needs {needed}")]
    BufferTooSmall {
        /// Bytes the protected packet takes.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// A new SSRC beyond [`MAX_SSRCS`] in one direction.
    #[error("too many SSRCs")]
    TooManySsrcs,
    /// The 48-bit packet index or 31-bit SRTCP index ran out: the keys must not
    /// be used further (RFC 3711 §9.2).
    #[error("the keys protected the most packets they may")]
    KeysExhausted,
}

/// One DTLS-SRTP association's SRTP and SRTCP state, both directions.
pub struct SrtpSession {
    profile: SrtpProfile,
    /// Keyed with the remote's write key: what we unprotect.
    inbound: Inbound,
    /// Keyed with our write key: what we protect.
    outbound: Outbound,
}

impl SrtpSession {
    /// Keys a session from RFC 5764 exported keying material (client key,
    /// server key, client salt, server salt); `role` says which half is ours.
    pub fn new(
        profile: SrtpProfile,
        keying_material: &[u8],
        role: DtlsRole,
    ) -> Result<SrtpSession, SrtpError> {
        if keying_material.len() != profile.keying_material_len() {
            return Err(SrtpError::KeyingMaterialLength {
                profile,
                expected: profile.keying_material_len(),
                actual: keying_material.len(),
            });
        }
        let (keys, salts) = keying_material.split_at(2 * profile.key_len());
        let (client_key, server_key) = keys.split_at(profile.key_len());
        let (client_salt, server_salt) = salts.split_at(profile.salt_len());
        let client = MasterKey {
            key: client_key,
            salt: client_salt,
        };
        let server = MasterKey {
            key: server_key,
            salt: server_salt,
        };
        let (ours, theirs) = match role {
            DtlsRole::Client => (client, server),
            DtlsRole::Server => (server, client),
        };
        Ok(SrtpSession {
            profile,
            inbound: Inbound::new(Keys::derive(profile, &theirs)),
            outbound: Outbound::new(Keys::derive(profile, &ours)),
        })
    }

    /// The negotiated profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Verifies and decrypts the SRTP packet that fills `buf`, in place.
    /// Returns the length of the plain RTP packet at the start of `buf`. On
    /// error the buffer's content is unspecified and the packet must be dropped.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let header_len = rtp_header_len(buf, self.profile.tag_len())?;
        let ssrc = read_u32(buf, 8);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let index = self.inbound.rtp_index(ssrc, seq)?;
        let len = self.inbound.keys.rtp.open_rtp(buf, header_len, ssrc, index)?;
        self.inbound.accept_rtp(ssrc, index);
        Ok(len)
    }

    /// Encrypts the plain RTP packet in `buf[..len]` in place and appends its
    /// tag; `buf` needs [`SrtpProfile::rtp_overhead`] bytes of room after `len`.
    /// Returns the protected length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        room_for(buf, len, self.profile.rtp_overhead())?;
        let header_len = rtp_header_len(&buf[..len], 0)?;
        let ssrc = read_u32(buf, 8);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let index = self.outbound.rtp_index(ssrc, seq)?;
        let protected = self.outbound.keys.rtp.seal_rtp(buf, len, header_len, ssrc, index);
        self.outbound.accept_rtp(ssrc, index);
        Ok(protected)
    }

    /// Verifies and (if its E bit says so) decrypts the SRTCP packet that fills
    /// `buf`, in place. Returns the length of the plain RTCP compound packet.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let trailer = self.profile.rtcp_overhead();
        if buf.len() < RTCP_HEADER_LEN + trailer || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = read_u32(buf, 4);
        let word_at = match self.profile.is_gcm() {
            true => buf.len() - SRTCP_TRAILER_LEN,
            false => buf.len() - SRTCP_TRAILER_LEN - HMAC_TAG_LEN,
        };
        let word = read_u32(buf, word_at);
        let index = word & MAX_SRTCP_INDEX;
        self.inbound.check_rtcp(ssrc, index)?;
        let len = self.inbound.keys.rtcp.open_rtcp(buf, ssrc, word)?;
        self.inbound.accept_rtcp(ssrc, index);
        Ok(len)
    }

    /// Encrypts the plain RTCP compound packet in `buf[..len]` in place and
    /// appends the tag and the E bit + SRTCP index; `buf` needs
    /// [`SrtpProfile::rtcp_overhead`] bytes of room after `len`. Returns the
    /// protected length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        room_for(buf, len, self.profile.rtcp_overhead())?;
        if len < RTCP_HEADER_LEN || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = read_u32(buf, 4);
        let index = self.outbound.next_rtcp_index(ssrc)?;
        Ok(self.outbound.keys.rtcp.seal_rtcp(buf, len, ssrc, index))
    }
}

impl std::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("SrtpSession")
            .field("profile", &self.profile)
            .field("inbound_ssrcs", &self.inbound.rtp.len())
            .field("outbound_ssrcs", &self.outbound.rtp.len())
            .finish_non_exhaustive()
    }
}

fn room_for(buf: &[u8], len: usize, overhead: usize) -> Result<(), SrtpError> {
    let needed = len.saturating_add(overhead);
    if buf.len() < needed {
        return Err(SrtpError::BufferTooSmall {
            needed,
            available: buf.len(),
        });
    }
    Ok(())
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// The RTP header's length (fixed part, CSRCs, header extension), checked to
/// leave `tag_len` bytes after it in `buf` (RFC 3550 §5.1, §5.3.1).
fn rtp_header_len(buf: &[u8], tag_len: usize) -> Result<usize, SrtpError> {
    if buf.len() < RTP_HEADER_LEN + tag_len || buf[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let csrc_count = usize::from(buf[0] & 0x0f);
    let mut len = RTP_HEADER_LEN + 4 * csrc_count;
    if buf[0] & 0x10 != 0 {
        if buf.len() < len + 4 {
            return Err(SrtpError::Malformed);
        }
        let words = usize::from(u16::from_be_bytes([buf[len + 2], buf[len + 3]]));
        len += 4 + 4 * words;
    }
    if len + tag_len > buf.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(len)
}

/// RFC 3711 §3.3.1: the packet index most likely meant by `seq`, given the
/// highest index seen on the SSRC. Refused when it would fall before index 0
/// (older than the stream's first packet: a peer's ROC would wrap to 2^32 - 1)
/// or past the 48-bit limit.
fn estimate_index(highest: u64, seq: u16) -> Result<u64, SrtpError> {
    let roc = highest >> 16;
    let last_seq = highest as u16;
    let guessed_roc = if last_seq < 0x8000 {
        if seq > last_seq && seq - last_seq > 0x8000 {
            roc.checked_sub(1).ok_or(SrtpError::TooOld)?
        } else {
            roc
        }
    } else if last_seq - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    let index = guessed_roc << 16 | u64::from(seq);
    match index <= MAX_PACKET_INDEX {
        true => Ok(index),
        false => Err(SrtpError::KeysExhausted),
    }
}

/// RFC 3711 §3.3.2 replay list: the highest index accepted and a bitmap of
/// the [`REPLAY_WINDOW`] indices at and below it (bit `n` = `top - n` seen).
#[derive(Clone, Copy, Debug)]
struct ReplayWindow {
    top: u64,
    seen: u128,
}

impl ReplayWindow {
    fn starting_at(index: u64) -> ReplayWindow {
        ReplayWindow { top: index, seen: 1 }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.top {
            return Ok(());
        }
        let behind = self.top - index;
        if behind >= REPLAY_WINDOW {
            return Err(SrtpError::TooOld);
        }
        match self.seen >> behind & 1 {
            0 => Ok(()),
            _ => Err(SrtpError::Replayed),
        }
    }

    /// Records `index` (already checked and authenticated).
    fn accept(&mut self, index: u64) {
        if index > self.top {
            let ahead = index - self.top;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.top = index;
        } else {
            self.seen |= 1 << (self.top - index);
        }
    }
}

/// What we unprotect: the remote's keys and, per SSRC, the replay windows
/// (whose top is also the highest packet index, for ROC estimation).
struct Inbound {
    keys: Keys,
    rtp: HashMap<u32, ReplayWindow>,
    rtcp: HashMap<u32, ReplayWindow>,
}

impl Inbound {
    fn new(keys: Keys) -> Inbound {
        Inbound {
            keys,
            rtp: HashMap::new(),
            rtcp: HashMap::new(),
        }
    }

    /// The packet index of an arriving packet, refused early if it is a replay
    /// or would need state we may not create.
    fn rtp_index(&self, ssrc: u32, seq: u16) -> Result<u64, SrtpError> {
        match self.rtp.get(&ssrc) {
            Some(window) => {
                let index = estimate_index(window.top, seq)?;
                window.check(index)?;
                Ok(index)
            }
            // RFC 3711 §3.3.1: a receiver starts with ROC 0.
            None if self.rtp.len() < MAX_SSRCS => Ok(u64::from(seq)),
            None => Err(SrtpError::TooManySsrcs),
        }
    }

    fn accept_rtp(&mut self, ssrc: u32, index: u64) {
        self.rtp
            .entry(ssrc)
            .and_modify(|window| window.accept(index))
            .or_insert_with(|| ReplayWindow::starting_at(index));
    }

    fn check_rtcp(&self, ssrc: u32, index: u32) -> Result<(), SrtpError> {
        match self.rtcp.get(&ssrc) {
            Some(window) => window.check(u64::from(index)),
            None if self.rtcp.len() < MAX_SSRCS => Ok(()),
            None => Err(SrtpError::TooManySsrcs),
        }
    }

    fn accept_rtcp(&mut self, ssrc: u32, index: u32) {
        let index = u64::from(index);
        self.rtcp
            .entry(ssrc)
            .and_modify(|window| window.accept(index))
            .or_insert_with(|| ReplayWindow::starting_at(index));
    }
}

/// What we protect: our keys, per SSRC the highest packet index sent (for our
/// own ROC) and the next SRTCP index.
struct Outbound {
    keys: Keys,
    rtp: HashMap<u32, u64>,
    rtcp: HashMap<u32, u32>,
}

impl Outbound {
    fn new(keys: Keys) -> Outbound {
        Outbound {
            keys,
            rtp: HashMap::new(),
            rtcp: HashMap::new(),
        }
    }

    fn rtp_index(&self, ssrc: u32, seq: u16) -> Result<u64, SrtpError> {
        match self.rtp.get(&ssrc) {
            // A sender's own sequence runs forward, so the same estimation tells
            // a wrap (seq 65535 → 0) from a late retransmission.
            Some(&highest) => estimate_index(highest, seq),
            None if self.rtp.len() < MAX_SSRCS => Ok(u64::from(seq)),
            None => Err(SrtpError::TooManySsrcs),
        }
    }

    fn accept_rtp(&mut self, ssrc: u32, index: u64) {
        let highest = self.rtp.entry(ssrc).or_insert(index);
        *highest = (*highest).max(index);
    }

    /// The SRTCP index for the next packet on `ssrc` (from 0, RFC 3711 §3.3.2).
    fn next_rtcp_index(&mut self, ssrc: u32) -> Result<u32, SrtpError> {
        if !self.rtcp.contains_key(&ssrc) && self.rtcp.len() >= MAX_SSRCS {
            return Err(SrtpError::TooManySsrcs);
        }
        let next = self.rtcp.entry(ssrc).or_insert(0);
        let index = *next;
        if index > MAX_SRTCP_INDEX {
            return Err(SrtpError::KeysExhausted);
        }
        *next = index + 1;
        Ok(index)
    }
}

/// A master key and salt: one half of the RFC 5764 keying material.
struct MasterKey<'a> {
    key: &'a [u8],
    salt: &'a [u8],
}

/// One direction's session keys, for SRTP and SRTCP.
struct Keys {
    rtp: SessionKeys,
    rtcp: SessionKeys,
}

impl Keys {
    fn derive(profile: SrtpProfile, master: &MasterKey<'_>) -> Keys {
        Keys {
            rtp: SessionKeys::derive(profile, master, [LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT]),
            rtcp: SessionKeys::derive(
                profile,
                master,
                [LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT],
            ),
        }
    }
}

/// A keyed transform: the cipher (and MAC) are set up once here so a packet
/// costs only the cipher pass.
// Four per session, built once and never moved per packet: boxing the larger
// variant would only add an indirection to every packet.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    Gcm(LessSafeKey),
    CmSha1 { aes: Aes128Enc, mac: Hmac<Sha1> },
}

/// Session keys for SRTP or for SRTCP: the keyed cipher and the session salt
/// (12 bytes used for GCM, 14 for AES-CM).
struct SessionKeys {
    cipher: Cipher,
    salt: [u8; 14],
}

impl SessionKeys {
    /// RFC 3711 §4.3: derives the session key, salt and (AES-CM) auth key with
    /// `labels` = [key, auth, salt] from the master key.
    fn derive(profile: SrtpProfile, master: &MasterKey<'_>, labels: [u8; 3]) -> SessionKeys {
        let [key_label, auth_label, salt_label] = labels;
        let mut key = [0u8; 32];
        let key = &mut key[..profile.key_len()];
        kdf(master, key_label, key);
        let mut salt = [0u8; 14];
        kdf(master, salt_label, &mut salt[..profile.salt_len()]);
        let mut auth = [0u8; HMAC_KEY_LEN];
        if !profile.is_gcm() {
            kdf(master, auth_label, &mut auth);
        }
        SessionKeys::from_session_keys(profile, key, &salt[..profile.salt_len()], &auth)
    }

    fn from_session_keys(profile: SrtpProfile, key: &[u8], salt: &[u8], auth: &[u8]) -> SessionKeys {
        let cipher = match profile {
            SrtpProfile::AeadAes128Gcm => Cipher::Gcm(gcm_key(&ring::aead::AES_128_GCM, key)),
            SrtpProfile::AeadAes256Gcm => Cipher::Gcm(gcm_key(&ring::aead::AES_256_GCM, key)),
            SrtpProfile::Aes128CmHmacSha1_80 => Cipher::CmSha1 {
                aes: Aes128Enc::new(key.into()),
                mac: <Hmac<Sha1> as KeyInit>::new_from_slice(auth).expect("HMAC takes a key of any length"),
            },
        };
        let mut session_salt = [0u8; 14];
        session_salt[..salt.len()].copy_from_slice(salt);
        SessionKeys {
            cipher,
            salt: session_salt,
        }
    }

    /// Opens `buf` (header, encrypted payload, tag) in place; returns the plain length.
    fn open_rtp(&self, buf: &mut [u8], header_len: usize, ssrc: u32, index: u64) -> Result<usize, SrtpError> {
        match &self.cipher {
            Cipher::Gcm(key) => {
                // RFC 7714 §8.2: the header is the associated data.
                let nonce = self.gcm_nonce(ssrc, index);
                let (header, sealed) = buf.split_at_mut(header_len);
                let plain = key
                    .open_in_place(nonce, Aad::from(&*header), sealed)
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
                Ok(header_len + plain.len())
            }
            Cipher::CmSha1 { aes, mac } => {
                let end = buf.len() - HMAC_TAG_LEN;
                let (packet, tag) = buf.split_at_mut(end);
                // RFC 3711 §4.2: the tag covers the packet and the ROC.
                let roc = ((index >> 16) as u32).to_be_bytes();
                let mut mac = mac.clone();
                mac.update(packet);
                mac.update(&roc);
                mac.verify_truncated_left(tag)
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
                self.cm_keystream(aes, ssrc, index, &mut packet[header_len..]);
                Ok(end)
            }
        }
    }

    /// Seals `buf[..len]` in place, appending the tag; returns the protected length.
    fn seal_rtp(&self, buf: &mut [u8], len: usize, header_len: usize, ssrc: u32, index: u64) -> usize {
        match &self.cipher {
            Cipher::Gcm(key) => {
                let nonce = self.gcm_nonce(ssrc, index);
                let (header, payload) = buf[..len].split_at_mut(header_len);
                let tag = seal(key, nonce, header, payload);
                buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                len + GCM_TAG_LEN
            }
            Cipher::CmSha1 { aes, mac } => {
                self.cm_keystream(aes, ssrc, index, &mut buf[header_len..len]);
                let roc = ((index >> 16) as u32).to_be_bytes();
                let mut mac = mac.clone();
                mac.update(&buf[..len]);
                mac.update(&roc);
                let tag = mac.finalize().into_bytes();
                buf[len..len + HMAC_TAG_LEN].copy_from_slice(&tag[..HMAC_TAG_LEN]);
                len + HMAC_TAG_LEN
            }
        }
    }

    /// Opens an SRTCP packet filling `buf` whose E bit + index word is `word`;
    /// returns the plain RTCP length.
    fn open_rtcp(&self, buf: &mut [u8], ssrc: u32, word: u32) -> Result<usize, SrtpError> {
        let index = u64::from(word & MAX_SRTCP_INDEX);
        let encrypted = word & SRTCP_E_BIT != 0;
        match &self.cipher {
            Cipher::Gcm(key) => {
                let nonce = self.gcm_nonce(ssrc, index);
                let plain_len = buf.len() - GCM_TAG_LEN - SRTCP_TRAILER_LEN;
                let opened = match encrypted {
                    true => open_srtcp_encrypted(key, nonce, buf, word),
                    false => open_srtcp_authenticated(key, nonce, buf),
                };
                opened.map(|()| plain_len)
            }
            Cipher::CmSha1 { aes, mac } => {
                let end = buf.len() - HMAC_TAG_LEN;
                let (packet, tag) = buf.split_at_mut(end);
                // RFC 3711 §3.4: the tag covers the packet and the E bit + index.
                let mut mac = mac.clone();
                mac.update(packet);
                mac.verify_truncated_left(tag)
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
                let plain_len = end - SRTCP_TRAILER_LEN;
                if encrypted {
                    self.cm_keystream(aes, ssrc, index, &mut packet[RTCP_HEADER_LEN..plain_len]);
                }
                Ok(plain_len)
            }
        }
    }

    /// Seals `buf[..len]` (always encrypted: E = 1) with SRTCP `index`.
    fn seal_rtcp(&self, buf: &mut [u8], len: usize, ssrc: u32, index: u32) -> usize {
        let word = (SRTCP_E_BIT | index).to_be_bytes();
        match &self.cipher {
            Cipher::Gcm(key) => {
                // RFC 7714 §9.3: AAD is the first 8 header bytes and the word;
                // the tag sits between the payload and the word.
                let nonce = self.gcm_nonce(ssrc, u64::from(index));
                let aad = srtcp_aad(&buf[..RTCP_HEADER_LEN], word);
                let tag = seal(key, nonce, &aad, &mut buf[RTCP_HEADER_LEN..len]);
                buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                let end = len + GCM_TAG_LEN;
                buf[end..end + SRTCP_TRAILER_LEN].copy_from_slice(&word);
                end + SRTCP_TRAILER_LEN
            }
            Cipher::CmSha1 { aes, mac } => {
                self.cm_keystream(aes, ssrc, u64::from(index), &mut buf[RTCP_HEADER_LEN..len]);
                buf[len..len + SRTCP_TRAILER_LEN].copy_from_slice(&word);
                let end = len + SRTCP_TRAILER_LEN;
                let mut mac = mac.clone();
                mac.update(&buf[..end]);
                let tag = mac.finalize().into_bytes();
                buf[end..end + HMAC_TAG_LEN].copy_from_slice(&tag[..HMAC_TAG_LEN]);
                end + HMAC_TAG_LEN
            }
        }
    }

    /// RFC 7714 §8.1 / §9.1: 0x0000 ‖ SSRC ‖ 48-bit index (ROC ‖ SEQ for SRTP,
    /// 0 ‖ 31-bit SRTCP index for SRTCP), XORed with the 12-byte session salt.
    fn gcm_nonce(&self, ssrc: u32, index: u64) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        for (byte, salt) in iv.iter_mut().zip(&self.salt) {
            *byte ^= salt;
        }
        Nonce::assume_unique_for_key(iv)
    }

    /// RFC 3711 §4.1.1: XORs the AES-CM keystream for (SSRC, index) into
    /// `data`; IV = (salt · 2^16) ⊕ (SSRC · 2^64) ⊕ (index · 2^16).
    fn cm_keystream(&self, aes: &Aes128Enc, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[4..8].copy_from_slice(&ssrc.to_be_bytes());
        iv[8..14].copy_from_slice(&index.to_be_bytes()[2..]);
        for (byte, salt) in iv.iter_mut().zip(&self.salt) {
            *byte ^= salt;
        }
        // The key schedule is cloned (a copy, no allocation) rather than redone.
        let core = ctr::CtrCore::<Aes128Enc, ctr::flavors::Ctr128BE>::inner_iv_init(aes.clone(), &iv.into());
        ctr::Ctr128BE::<Aes128Enc>::from_core(core).apply_keystream(data);
    }
}

fn gcm_key(algorithm: &'static ring::aead::Algorithm, key: &[u8]) -> LessSafeKey {
    let key = UnboundKey::new(algorithm, key).expect("the profile fixes the GCM key length");
    LessSafeKey::new(key)
}

fn seal(key: &LessSafeKey, nonce: Nonce, aad: &[u8], in_out: &mut [u8]) -> Tag {
    key.seal_in_place_separate_tag(nonce, Aad::from(aad), in_out)
        .expect("an SRTP packet is far below GCM's 64 GiB plaintext limit")
}

fn srtcp_aad(header: &[u8], word: [u8; 4]) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..RTCP_HEADER_LEN].copy_from_slice(&header[..RTCP_HEADER_LEN]);
    aad[RTCP_HEADER_LEN..].copy_from_slice(&word);
    aad
}

/// RFC 7714 §9.2 with E = 1: header ‖ ciphertext ‖ tag ‖ word, AAD = header ‖ word.
fn open_srtcp_encrypted(key: &LessSafeKey, nonce: Nonce, buf: &mut [u8], word: u32) -> Result<(), SrtpError> {
    let aad = srtcp_aad(buf, word.to_be_bytes());
    let end = buf.len() - SRTCP_TRAILER_LEN;
    key.open_in_place(nonce, Aad::from(aad), &mut buf[RTCP_HEADER_LEN..end])
        .map(|_| ())
        .map_err(|_| SrtpError::AuthenticationFailed)
}

/// RFC 7714 §9.2 with E = 0: header ‖ payload ‖ tag ‖ word, nothing encrypted,
/// AAD = header ‖ payload ‖ word. The tag and word swap places so the AAD is
/// one slice (the packet is dropped or truncated before the tag either way).
fn open_srtcp_authenticated(key: &LessSafeKey, nonce: Nonce, buf: &mut [u8]) -> Result<(), SrtpError> {
    let tag_at = buf.len() - GCM_TAG_LEN - SRTCP_TRAILER_LEN;
    buf[tag_at..].rotate_left(GCM_TAG_LEN);
    let (aad, tag) = buf.split_at_mut(buf.len() - GCM_TAG_LEN);
    key.open_in_place(nonce, Aad::from(&*aad), tag)
        .map(|_| ())
        .map_err(|_| SrtpError::AuthenticationFailed)
}

/// RFC 3711 §4.3.1 / §4.3.3 AES-CM PRF with key derivation rate 0: the
/// keystream of AES(master key) from IV = (master salt ⊕ label · 2^48) · 2^16,
/// the 14-byte salt left-aligned (12-byte GCM salts are zero-padded, RFC 7714 §11).
fn kdf(master: &MasterKey<'_>, label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..master.salt.len()].copy_from_slice(master.salt);
    iv[7] ^= label;
    match master.key.len() {
        32 => prf_blocks(&Aes256Enc::new(master.key.into()), iv, out),
        _ => prf_blocks(&Aes128Enc::new(master.key.into()), iv, out),
    }
}

fn prf_blocks(aes: &impl BlockEncrypt<BlockSize = U16>, iv: [u8; 16], out: &mut [u8]) {
    for (counter, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = iv;
        block[14..].copy_from_slice(&(counter as u16).to_be_bytes());
        aes.encrypt_block((&mut block).into());
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use rtc::srtp::config::Config as RtcConfig;
    use rtc::srtp::context::Context as RtcContext;
    use rtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
    use rtc::srtp::protection_profile::ProtectionProfile;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("hex digits are ASCII");
                u8::from_str_radix(pair, 16).expect("two hex digits")
            })
            .collect()
    }

    /// A session whose *session* keys (no KDF) are `key`/`salt` both ways, as
    /// the RFC 7714 §16–17 vectors are given.
    fn with_session_keys(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> SrtpSession {
        let keys = || Keys {
            rtp: SessionKeys::from_session_keys(profile, key, salt, &[]),
            rtcp: SessionKeys::from_session_keys(profile, key, salt, &[]),
        };
        SrtpSession {
            profile,
            inbound: Inbound::new(keys()),
            outbound: Outbound::new(keys()),
        }
    }

    fn material(profile: SrtpProfile, seed: u8) -> Vec<u8> {
        (0..profile.keying_material_len())
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Our server side and our client side of one DTLS-SRTP association.
    fn pair(profile: SrtpProfile) -> (SrtpSession, SrtpSession) {
        let material = material(profile, 7);
        (
            SrtpSession::new(profile, &material, DtlsRole::Server).expect("right length"),
            SrtpSession::new(profile, &material, DtlsRole::Client).expect("right length"),
        )
    }

    /// An RTP packet with two CSRCs and a one-byte-header extension (RFC 8285).
    fn rtp_packet(ssrc: u32, seq: u16, payload_len: usize) -> Vec<u8> {
        let mut packet = vec![0x92, 0x60];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(&0x1111_1111u32.to_be_bytes());
        packet.extend_from_slice(&0x2222_2222u32.to_be_bytes());
        packet.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00]);
        packet.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
        packet
    }

    const RTP_HEADER_WITH_EXTENSION: usize = 12 + 8 + 8;

    /// A receiver report with one report block (RFC 3550 §6.4.2).
    fn rtcp_packet(ssrc: u32, marker: u8) -> Vec<u8> {
        let mut packet = vec![0x81, 201, 0x00, 0x07];
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
        packet.extend((0..20).map(|i| i as u8 ^ marker));
        packet
    }

    fn protect_rtp(session: &mut SrtpSession, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + SRTP_MAX_OVERHEAD, 0);
        let len = session.protect_rtp(&mut buf, plain.len()).expect("protects");
        buf.truncate(len);
        buf
    }

    fn protect_rtcp(session: &mut SrtpSession, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + SRTP_MAX_OVERHEAD, 0);
        let len = session.protect_rtcp(&mut buf, plain.len()).expect("protects");
        buf.truncate(len);
        buf
    }

    fn unprotect_rtp(session: &mut SrtpSession, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = wire.to_vec();
        let len = session.unprotect_rtp(&mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }

    fn unprotect_rtcp(session: &mut SrtpSession, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = wire.to_vec();
        let len = session.unprotect_rtcp(&mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }

    // ---- key derivation -------------------------------------------------

    #[test]
    fn key_derivation_matches_rfc3711_appendix_b3() {
        let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let master = MasterKey {
            key: &key,
            salt: &salt,
        };
        let mut out = [0u8; 20];
        kdf(&master, LABEL_RTP_KEY, &mut out[..16]);
        assert_eq!(out[..16], hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
        kdf(&master, LABEL_RTP_SALT, &mut out[..14]);
        assert_eq!(out[..14], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
        kdf(&master, LABEL_RTP_AUTH, &mut out);
        assert_eq!(out[..], hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")[..]);
    }

    #[test]
    fn key_derivation_with_a_256_bit_key_matches_rfc6188() {
        let key = hex("F0F04914B513F2763A1B1FA130F10E2998F6F6E43E4309D1E622A0E332B9F1B6");
        let salt = hex("3B04803DE51EE7C96423AB5B78D2");
        let master = MasterKey {
            key: &key,
            salt: &salt,
        };
        let mut out = [0u8; 32];
        kdf(&master, LABEL_RTP_KEY, &mut out);
        let expected = "5BA1064E30EC51613CAD926C5A28EF731EC7FB397F70A960653CAF06554CD8C4";
        assert_eq!(out[..], hex(expected)[..]);
        kdf(&master, LABEL_RTP_SALT, &mut out[..14]);
        assert_eq!(out[..14], hex("FA31791685CA444A9E07C6C64E93")[..]);
        kdf(&master, LABEL_RTP_AUTH, &mut out[..20]);
        assert_eq!(out[..20], hex("FD9C32D39ED5FBB5A9DC96B30818454D1313DC05")[..]);
    }

    #[test]
    fn aes_cm_keystream_matches_rfc3711_appendix_b2() {
        let keys = SessionKeys::from_session_keys(
            SrtpProfile::Aes128CmHmacSha1_80,
            &hex("2B7E151628AED2A6ABF7158809CF4F3C"),
            &hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"),
            &[],
        );
        let Cipher::CmSha1 { aes, .. } = &keys.cipher else {
            panic!("an AES-CM profile keys AES-CM");
        };
        let mut keystream = [0u8; 48];
        keys.cm_keystream(aes, 0, 0, &mut keystream);
        let expected = "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
                        41E95B3BB0A2E8DD477901E4FCA894C0";
        assert_eq!(keystream[..], hex(expected)[..]);
    }

    #[test]
    fn keying_material_of_the_wrong_length_is_refused() {
        for profile in SrtpProfile::PREFERENCE {
            let short = vec![0u8; profile.keying_material_len() - 1];
            assert_eq!(
                SrtpSession::new(profile, &short, DtlsRole::Server).err(),
                Some(SrtpError::KeyingMaterialLength {
                    profile,
                    expected: profile.keying_material_len(),
                    actual: short.len(),
                })
            );
        }
        assert_eq!(SrtpProfile::AeadAes128Gcm.keying_material_len(), 56);
        assert_eq!(SrtpProfile::AeadAes256Gcm.keying_material_len(), 88);
        assert_eq!(SrtpProfile::Aes128CmHmacSha1_80.keying_material_len(), 60);
    }

    #[test]
    fn profile_choice_follows_our_preference_not_the_offer_order() {
        // Chromium's order: AES-CM-SHA1-80, GCM-256, GCM-128.
        let chromium = [0x0001, 0x0008, 0x0007];
        assert_eq!(
            SrtpProfile::preferred_among(&chromium),
            Some(SrtpProfile::AeadAes128Gcm)
        );
        assert_eq!(
            SrtpProfile::preferred_among(&[0x0002, 0x0001]),
            Some(SrtpProfile::Aes128CmHmacSha1_80)
        );
        assert_eq!(SrtpProfile::preferred_among(&[0x0002]), None);
        for profile in SrtpProfile::PREFERENCE {
            assert_eq!(SrtpProfile::from_dtls_id(profile.dtls_id()), Some(profile));
        }
    }

    // ---- RFC 7714 packet vectors ---------------------------------------

    const GCM_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
    const GCM_KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    /// "Quid pro quo"
    const GCM_SALT: &str = "517569642070726f2071756f";
    const VECTOR_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                              20646976 69736120 696e2070 61727465 73207472 6573";
    const VECTOR_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                               4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
    const VECTOR_RTCP_SSRC: u32 = 0x4d61_7273;
    const VECTOR_RTCP_INDEX: u32 = 0x5d4;

    fn vector_session(profile: SrtpProfile) -> SrtpSession {
        let key = match profile {
            SrtpProfile::AeadAes256Gcm => hex(GCM_KEY_256),
            _ => hex(GCM_KEY_128),
        };
        with_session_keys(profile, &key, &hex(GCM_SALT))
    }

    #[test]
    fn gcm_rtp_matches_rfc7714_section_16() {
        let cases = [
            (
                SrtpProfile::AeadAes128Gcm,
                "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
                 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
            ),
            (
                SrtpProfile::AeadAes256Gcm,
                "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238
                 9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
            ),
        ];
        for (profile, protected) in cases {
            let mut sender = vector_session(profile);
            assert_eq!(protect_rtp(&mut sender, &hex(VECTOR_RTP)), hex(protected));
            let mut receiver = vector_session(profile);
            assert_eq!(unprotect_rtp(&mut receiver, &hex(protected)), Ok(hex(VECTOR_RTP)));
        }
    }

    #[test]
    fn gcm_rtcp_matches_rfc7714_section_17() {
        let mut sender = vector_session(SrtpProfile::AeadAes128Gcm);
        sender.outbound.rtcp.insert(VECTOR_RTCP_SSRC, VECTOR_RTCP_INDEX);
        let encrypted_128 = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
                             6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458
                             96cf4d2f c5abf872 45d9eade 800005d4";
        assert_eq!(protect_rtcp(&mut sender, &hex(VECTOR_RTCP)), hex(encrypted_128));

        let encrypted_256 = "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d
                             bffe0a50 a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c
                             4446839f 57ff6f6c b26ac3be 800005d4";
        let mut receiver = vector_session(SrtpProfile::AeadAes256Gcm);
        assert_eq!(
            unprotect_rtcp(&mut receiver, &hex(encrypted_256)),
            Ok(hex(VECTOR_RTCP))
        );
    }

    #[test]
    fn gcm_srtcp_with_the_e_bit_clear_is_authenticated_only_per_rfc7714_section_17() {
        let cases = [
            (SrtpProfile::AeadAes128Gcm, "841dd968 3dd78ec9 2ae58790 125f62b3"),
            (SrtpProfile::AeadAes256Gcm, "91db4afb feee5a97 8fab4393 ed2615fe"),
        ];
        for (profile, tag) in cases {
            let mut wire = hex(VECTOR_RTCP);
            wire.extend(hex(tag));
            wire.extend(hex("000005d4"));
            let mut receiver = vector_session(profile);
            assert_eq!(unprotect_rtcp(&mut receiver, &wire), Ok(hex(VECTOR_RTCP)));

            let mut forged = hex(VECTOR_RTCP);
            forged[20] ^= 1;
            forged.extend(hex(tag));
            forged.extend(hex("000005d5"));
            let mut receiver = vector_session(profile);
            assert_eq!(
                unprotect_rtcp(&mut receiver, &forged),
                Err(SrtpError::AuthenticationFailed)
            );
        }
    }

    // ---- behaviour ------------------------------------------------------

    #[test]
    fn each_side_unprotects_what_the_other_protects_with_its_half_of_the_keys() {
        for profile in SrtpProfile::PREFERENCE {
            let (mut server, mut client) = pair(profile);
            let plain = rtp_packet(0x1234, 100, 300);
            let wire = protect_rtp(&mut client, &plain);
            assert_eq!(wire.len(), plain.len() + profile.rtp_overhead());
            assert_eq!(unprotect_rtp(&mut server, &wire), Ok(plain.clone()));
            let wire = protect_rtp(&mut server, &plain);
            assert_eq!(unprotect_rtp(&mut client, &wire), Ok(plain.clone()));
            // Our own outbound keys do not open what we sent.
            let mut looped = pair(profile).0;
            let wire = protect_rtp(&mut looped, &plain);
            assert_eq!(
                unprotect_rtp(&mut looped, &wire),
                Err(SrtpError::AuthenticationFailed),
                "{profile}"
            );
            let report = rtcp_packet(0x1234, 1);
            let wire = protect_rtcp(&mut client, &report);
            assert_eq!(wire.len(), report.len() + profile.rtcp_overhead());
            assert_eq!(unprotect_rtcp(&mut server, &wire), Ok(report));
        }
    }

    #[test]
    fn the_header_csrcs_and_extension_stay_clear_and_are_authenticated() {
        for profile in SrtpProfile::PREFERENCE {
            let (mut server, mut client) = pair(profile);
            let plain = rtp_packet(0x1234, 100, 64);
            let wire = protect_rtp(&mut client, &plain);
            assert_eq!(
                wire[..RTP_HEADER_WITH_EXTENSION],
                plain[..RTP_HEADER_WITH_EXTENSION]
            );
            assert_ne!(
                wire[RTP_HEADER_WITH_EXTENSION..plain.len()],
                plain[RTP_HEADER_WITH_EXTENSION..]
            );
            for at in [
                1,
                13,
                21,
                RTP_HEADER_WITH_EXTENSION - 1,
                RTP_HEADER_WITH_EXTENSION + 3,
            ] {
                let mut tampered = wire.clone();
                tampered[at] ^= 0x01;
                assert_eq!(
                    unprotect_rtp(&mut server, &tampered),
                    Err(SrtpError::AuthenticationFailed),
                    "{profile}: byte {at} flipped"
                );
            }
            assert_eq!(unprotect_rtp(&mut server, &wire), Ok(plain));
        }
    }

    #[test]
    fn a_replayed_packet_is_refused_and_a_reordered_one_accepted() {
        for profile in SrtpProfile::PREFERENCE {
            let (mut server, mut client) = pair(profile);
            let wires: Vec<Vec<u8>> = (0..200)
                .map(|seq| protect_rtp(&mut client, &rtp_packet(9, seq, 20)))
                .collect();
            for seq in [0, 1, 3, 2] {
                assert!(unprotect_rtp(&mut server, &wires[seq]).is_ok(), "{profile} {seq}");
            }
            assert_eq!(unprotect_rtp(&mut server, &wires[2]), Err(SrtpError::Replayed));
            for seq in [150, 100] {
                assert!(unprotect_rtp(&mut server, &wires[seq]).is_ok(), "{profile} {seq}");
            }
            assert_eq!(unprotect_rtp(&mut server, &wires[150]), Err(SrtpError::Replayed));
            assert_eq!(unprotect_rtp(&mut server, &wires[100]), Err(SrtpError::Replayed));
            // 150 - 128 = 22: anything at or below it is behind the window.
            assert_eq!(unprotect_rtp(&mut server, &wires[22]), Err(SrtpError::TooOld));
            assert!(unprotect_rtp(&mut server, &wires[23]).is_ok());

            let reports: Vec<Vec<u8>> = (0..3)
                .map(|i| protect_rtcp(&mut client, &rtcp_packet(9, i)))
                .collect();
            assert!(unprotect_rtcp(&mut server, &reports[1]).is_ok());
            assert!(unprotect_rtcp(&mut server, &reports[0]).is_ok());
            assert_eq!(unprotect_rtcp(&mut server, &reports[1]), Err(SrtpError::Replayed));
        }
    }

    #[test]
    fn the_rollover_counter_follows_a_sequence_wrap_and_late_packets_across_it() {
        for profile in SrtpProfile::PREFERENCE {
            let (mut server, mut client) = pair(profile);
            let seqs: Vec<u16> = (65_530..=65_535).chain(0..10).collect();
            let wires: Vec<Vec<u8>> = seqs
                .iter()
                .map(|&seq| protect_rtp(&mut client, &rtp_packet(5, seq, 40)))
                .collect();
            // In order up to the wrap, then one late packet from before it.
            for (i, wire) in wires.iter().enumerate() {
                if i == 4 {
                    continue;
                }
                assert_eq!(
                    unprotect_rtp(&mut server, wire),
                    Ok(rtp_packet(5, seqs[i], 40)),
                    "{profile}"
                );
            }
            assert_eq!(
                unprotect_rtp(&mut server, &wires[4]),
                Ok(rtp_packet(5, 65_534, 40))
            );
            assert_eq!(server.inbound.rtp[&5].top, (1 << 16) + 9);
        }
    }

    #[test]
    fn forged_packets_neither_pass_nor_create_ssrc_state() {
        let (mut server, _) = pair(SrtpProfile::AeadAes128Gcm);
        for ssrc in 0..(MAX_SSRCS as u32 * 2) {
            let mut client = pair(SrtpProfile::AeadAes128Gcm).1;
            let mut wire = protect_rtp(&mut client, &rtp_packet(ssrc, 1, 30));
            let last = wire.len() - 1;
            wire[last] ^= 0x80;
            assert_eq!(
                unprotect_rtp(&mut server, &wire),
                Err(SrtpError::AuthenticationFailed)
            );
        }
        assert!(server.inbound.rtp.is_empty());
    }

    #[test]
    fn new_ssrcs_beyond_the_cap_are_refused() {
        let (mut server, mut client) = pair(SrtpProfile::AeadAes128Gcm);
        for ssrc in 0..MAX_SSRCS as u32 {
            let wire = protect_rtp(&mut client, &rtp_packet(ssrc, 1, 30));
            assert!(unprotect_rtp(&mut server, &wire).is_ok());
        }
        let mut buf = rtp_packet(9999, 1, 30);
        buf.resize(buf.len() + SRTP_MAX_OVERHEAD, 0);
        assert_eq!(client.protect_rtp(&mut buf, 58), Err(SrtpError::TooManySsrcs));
        let wire = protect_rtp(&mut pair(SrtpProfile::AeadAes128Gcm).1, &rtp_packet(9999, 1, 30));
        assert_eq!(unprotect_rtp(&mut server, &wire), Err(SrtpError::TooManySsrcs));
    }

    #[test]
    fn protecting_without_room_for_the_tag_is_refused() {
        let (mut server, _) = pair(SrtpProfile::Aes128CmHmacSha1_80);
        let mut buf = rtp_packet(1, 1, 30);
        let len = buf.len();
        assert_eq!(
            server.protect_rtp(&mut buf, len),
            Err(SrtpError::BufferTooSmall {
                needed: len + 10,
                available: len
            })
        );
        let mut buf = rtcp_packet(1, 0);
        let len = buf.len();
        assert!(matches!(
            server.protect_rtcp(&mut buf, len),
            Err(SrtpError::BufferTooSmall { .. })
        ));
    }

    #[test]
    fn short_or_non_version_2_packets_are_malformed() {
        let (mut server, _) = pair(SrtpProfile::AeadAes128Gcm);
        assert_eq!(server.unprotect_rtp(&mut [0x80; 20]), Err(SrtpError::Malformed));
        assert_eq!(server.unprotect_rtp(&mut [0x40; 64]), Err(SrtpError::Malformed));
        // Extension header claims 1000 words.
        let mut packet = rtp_packet(1, 1, 60);
        packet[22..24].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(server.unprotect_rtp(&mut packet), Err(SrtpError::Malformed));
        assert_eq!(server.unprotect_rtcp(&mut [0x80; 27]), Err(SrtpError::Malformed));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), profile in 0..3usize) {
            let (mut server, _) = pair(SrtpProfile::PREFERENCE[profile]);
            let mut buf = bytes.clone();
            prop_assert!(server.unprotect_rtp(&mut buf).is_err());
            let mut buf = bytes.clone();
            prop_assert!(server.unprotect_rtcp(&mut buf).is_err());
            let mut buf = bytes.clone();
            let len = buf.len().saturating_sub(SRTP_MAX_OVERHEAD);
            let _ = server.protect_rtp(&mut buf, len);
            let _ = server.protect_rtcp(&mut buf, len);
        }

        #[test]
        fn the_index_estimate_is_exact_within_half_the_sequence_space(
            highest in 0u64..(1 << 47),
            offset in -32_767i64..=32_767,
        ) {
            let index = highest as i64 + offset;
            prop_assume!(index >= 0);
            prop_assert_eq!(estimate_index(highest, index as u16), Ok(index as u64));
        }

        #[test]
        fn reordered_authentic_packets_are_accepted_exactly_once(
            start in any::<u16>(),
            delays in proptest::collection::vec(0u16..60, 300),
        ) {
            let (mut server, mut client) = pair(SrtpProfile::AeadAes128Gcm);
            let mut wires: Vec<(u16, Vec<u8>)> = (0..300u16)
                .map(|i| {
                    let seq = start.wrapping_add(i);
                    (i + delays[usize::from(i)], protect_rtp(&mut client, &rtp_packet(3, seq, 10)))
                })
                .collect();
            // Each packet arrives up to 60 places late: well inside the window.
            wires.sort_by_key(|(arrival, _)| *arrival);
            for (_, wire) in &wires {
                let seq = u16::from_be_bytes([wire[2], wire[3]]);
                prop_assert_eq!(unprotect_rtp(&mut server, wire), Ok(rtp_packet(3, seq, 10)));
            }
            for (_, wire) in &wires {
                let again = unprotect_rtp(&mut server, wire);
                prop_assert!(matches!(again, Err(SrtpError::Replayed | SrtpError::TooOld)));
            }
        }
    }

    #[test]
    fn protecting_and_unprotecting_allocates_nothing_after_an_ssrcs_first_packet() {
        for profile in SrtpProfile::PREFERENCE {
            let (mut server, mut client) = pair(profile);
            let mut buf = vec![0u8; 1500];
            let mut packet = rtp_packet(77, 0, 1100);
            let report = rtcp_packet(77, 0);
            let mut exchange = |from: &mut SrtpSession, to: &mut SrtpSession, seq: u16| {
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                buf[..packet.len()].copy_from_slice(&packet);
                let len = from.protect_rtp(&mut buf, packet.len()).expect("protects");
                to.unprotect_rtp(&mut buf[..len]).expect("unprotects");
                buf[..report.len()].copy_from_slice(&report);
                let len = from.protect_rtcp(&mut buf, report.len()).expect("protects");
                to.unprotect_rtcp(&mut buf[..len]).expect("unprotects");
            };
            exchange(&mut client, &mut server, 65_000);
            exchange(&mut server, &mut client, 65_000);
            let ((), allocations) = crate::test_alloc::allocations_during(|| {
                for seq in 65_001..65_001 + 5_000u32 {
                    exchange(&mut client, &mut server, seq as u16);
                    exchange(&mut server, &mut client, seq as u16);
                }
            });
            assert_eq!(allocations, 0, "{profile}");
        }
    }

    // ---- interop with rtc-srtp ------------------------------------------

    fn rtc_profile(profile: SrtpProfile) -> ProtectionProfile {
        match profile {
            SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
            SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        }
    }

    /// rtc-srtp's (outbound, inbound) contexts for the DTLS client, keyed from
    /// the same exported material the way `rtc`'s peer connection keys them.
    pub(crate) fn rtc_client_contexts(
        profile: SrtpProfile,
        keying_material: &[u8],
    ) -> (RtcContext, RtcContext) {
        let mut config = RtcConfig {
            profile: rtc_profile(profile),
            ..Default::default()
        };
        config
            .set_session_keys_from_keying_material(keying_material, true)
            .expect("the profile's length");
        let provider = rtc::crypto::default_provider().expect("ring is built in");
        let outbound = RtcContext::new(
            &config.keys.local_master_key,
            &config.keys.local_master_salt,
            config.profile,
            None,
            None,
            provider.crypto(),
        )
        .expect("keys fit the profile");
        let inbound = RtcContext::new(
            &config.keys.remote_master_key,
            &config.keys.remote_master_salt,
            config.profile,
            Some(srtp_replay_protection(64)),
            Some(srtcp_replay_protection(64)),
            provider.crypto(),
        )
        .expect("keys fit the profile");
        (outbound, inbound)
    }

    #[test]
    fn rtc_srtp_and_we_open_each_others_packets_across_a_sequence_wrap() {
        for profile in SrtpProfile::PREFERENCE {
            let material = material(profile, 99);
            let mut ours = SrtpSession::new(profile, &material, DtlsRole::Server).expect("keys");
            let (mut rtc_out, mut rtc_in) = rtc_client_contexts(profile, &material);
            for seq in (65_500..=65_535).chain(0..40) {
                let plain = rtp_packet(0xabcd, seq, 200);
                let wire = rtc_out.encrypt_rtp(&plain).expect("rtc protects");
                assert_eq!(
                    unprotect_rtp(&mut ours, &wire),
                    Ok(plain.clone()),
                    "{profile} {seq}"
                );
                let wire = protect_rtp(&mut ours, &plain);
                let opened = rtc_in.decrypt_rtp(&wire).expect("rtc unprotects ours");
                assert_eq!(opened[..], plain[..], "{profile} {seq}");
            }
            // Replays are refused on both sides.
            let plain = rtp_packet(0xabcd, 41, 200);
            let wire = rtc_out.encrypt_rtp(&plain).expect("rtc protects");
            assert!(unprotect_rtp(&mut ours, &wire).is_ok());
            assert_eq!(unprotect_rtp(&mut ours, &wire), Err(SrtpError::Replayed));
            let wire = protect_rtp(&mut ours, &plain);
            assert!(rtc_in.decrypt_rtp(&wire).is_ok());
            assert!(
                rtc_in.decrypt_rtp(&wire).is_err(),
                "{profile}: rtc refuses our replay"
            );
        }
    }

    #[test]
    fn rtc_srtcp_and_we_open_each_others_reports() {
        for profile in SrtpProfile::PREFERENCE {
            let material = material(profile, 3);
            let mut ours = SrtpSession::new(profile, &material, DtlsRole::Server).expect("keys");
            let (mut rtc_out, mut rtc_in) = rtc_client_contexts(profile, &material);
            for marker in 0..20 {
                let plain = rtcp_packet(0x5151, marker);
                let wire = rtc_out.encrypt_rtcp(&plain).expect("rtc protects");
                assert_eq!(unprotect_rtcp(&mut ours, &wire), Ok(plain.clone()), "{profile}");
                let wire = protect_rtcp(&mut ours, &plain);
                let opened = rtc_in.decrypt_rtcp(&wire).expect("rtc unprotects ours");
                assert_eq!(opened[..], plain[..], "{profile}");
            }
            let wire = rtc_out
                .encrypt_rtcp(&rtcp_packet(0x5151, 99))
                .expect("rtc protects");
            assert!(unprotect_rtcp(&mut ours, &wire).is_ok());
            assert_eq!(unprotect_rtcp(&mut ours, &wire), Err(SrtpError::Replayed));
            let wire = protect_rtcp(&mut ours, &rtcp_packet(0x5151, 98));
            assert!(rtc_in.decrypt_rtcp(&wire).is_ok());
            assert!(
                rtc_in.decrypt_rtcp(&wire).is_err(),
                "{profile}: rtc refuses our replay"
            );
        }
    }
}
