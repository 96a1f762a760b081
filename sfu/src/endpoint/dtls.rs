//! The passive (server) side of DTLS-SRTP for one participant (RFC 5763,
//! RFC 5764, over DTLS 1.2 / RFC 6347 from `rtc::dtls`), and the node's
//! certificate identity.
//!
//! - [`DtlsIdentity`]: one self-signed ECDSA P-256 certificate per node; its
//!   SHA-256 fingerprint goes into every answer's `a=fingerprint` (RFC 8122).
//! - [`DtlsServer`]: sans-IO, driven with `handle_datagram(…, now)` /
//!   `handle_timeout(now)` and drained with `poll_transmit()` (handshake
//!   flights and alerts), `poll_event()` and `poll_timeout()`. It accepts the
//!   client only if its certificate matches the offer's fingerprint, and on
//!   success hands over an [`SrtpSession`] keyed from the RFC 5764 exporter.
//!
//! The SRTP profile follows *our* preference (GCM first) among what the client
//! offers: rtc-dtls would pick by the client's order, and Chromium lists
//! AES-CM-SHA1-80 first. So the ClientHello's `use_srtp` extension (RFC 5764
//! §4.1.1) is read before the handshake starts and the server is configured
//! with the single best common profile.

use crate::endpoint::srtp::{DtlsRole, SrtpError, SrtpProfile, SrtpSession};
use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::error::Error as RtcError;
use rtc::shared::TransportProtocol;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RFC 5764 §4.2 exporter label for the SRTP keying material.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// `rtc::dtls::endpoint::Endpoint` multiplexes associations by address; a
/// `DtlsServer` serves exactly one, whatever path its datagrams take, so both
/// ends of that association get a fixed placeholder address.
const PLACEHOLDER_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9);

/// A hash function for certificate fingerprints (RFC 8122 §5, the ones WebRTC uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FingerprintAlgorithm {
    /// `sha-256`: what browsers send and what we answer with.
    Sha256,
    /// `sha-384`.
    Sha384,
    /// `sha-512`.
    Sha512,
}

impl FingerprintAlgorithm {
    /// The SDP token (RFC 8122 §5, lowercase as browsers write it).
    pub const fn name(self) -> &'static str {
        match self {
            FingerprintAlgorithm::Sha256 => "sha-256",
            FingerprintAlgorithm::Sha384 => "sha-384",
            FingerprintAlgorithm::Sha512 => "sha-512",
        }
    }

    fn digest(self) -> &'static ring::digest::Algorithm {
        match self {
            FingerprintAlgorithm::Sha256 => &ring::digest::SHA256,
            FingerprintAlgorithm::Sha384 => &ring::digest::SHA384,
            FingerprintAlgorithm::Sha512 => &ring::digest::SHA512,
        }
    }
}

/// A certificate fingerprint as `a=fingerprint` carries it (RFC 8122 §5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// The hash function.
    pub algorithm: FingerprintAlgorithm,
    /// The hash of the DER-encoded certificate.
    pub bytes: Vec<u8>,
}

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_certificate(algorithm: FingerprintAlgorithm, der: &[u8]) -> Fingerprint {
        Fingerprint {
            algorithm,
            bytes: ring::digest::digest(algorithm.digest(), der).as_ref().to_vec(),
        }
    }

    /// Whether `der` is the certificate this fingerprint names.
    pub fn matches(&self, der: &[u8]) -> bool {
        ring::digest::digest(self.algorithm.digest(), der).as_ref() == self.bytes.as_slice()
    }
}

/// Why an `a=fingerprint` value did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintParseError {
    /// A hash function other than SHA-256/384/512 (RFC 8122 lists older ones
    /// WebRTC forbids, RFC 8827 §6.5).
    #[error("unsupported fingerprint hash function {0:?}")]
    UnsupportedAlgorithm(String),
    /// Not colon-separated hex pairs of the hash's length.
    #[error("malformed fingerprint value")]
    Malformed,
}

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    /// Parses `sha-256 AB:CD:…` (the value after `a=fingerprint:`).
    fn from_str(value: &str) -> Result<Fingerprint, FingerprintParseError> {
        let (name, hex) = value
            .trim()
            .split_once(' ')
            .ok_or(FingerprintParseError::Malformed)?;
        let algorithm = match name.to_ascii_lowercase().as_str() {
            "sha-256" => FingerprintAlgorithm::Sha256,
            "sha-384" => FingerprintAlgorithm::Sha384,
            "sha-512" => FingerprintAlgorithm::Sha512,
            _ => return Err(FingerprintParseError::UnsupportedAlgorithm(name.to_owned())),
        };
        let bytes = hex
            .trim()
            .split(':')
            .map(|pair| match pair.len() {
                2 => u8::from_str_radix(pair, 16).map_err(|_| FingerprintParseError::Malformed),
                _ => Err(FingerprintParseError::Malformed),
            })
            .collect::<Result<Vec<u8>, _>>()?;
        if bytes.len() != algorithm.digest().output_len() {
            return Err(FingerprintParseError::Malformed);
        }
        Ok(Fingerprint { algorithm, bytes })
    }
}

impl fmt::Display for Fingerprint {
    /// `sha-256 AB:CD:…`, uppercase hex as RFC 8122 §5 writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.algorithm.name())?;
        for (i, byte) in self.bytes.iter().enumerate() {
            let separator = if i == 0 { ' ' } else { ':' };
            write!(f, "{separator}{byte:02X}")?;
        }
        Ok(())
    }
}

/// Why a DTLS association failed (or could not be set up).
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    /// The client's certificate is not the one the offer's `a=fingerprint` names.
    #[error("the client's certificate does not match the offer's fingerprint")]
    FingerprintMismatch,
    /// The ClientHello offers no SRTP profile we implement (or no `use_srtp`).
    #[error("the client offers no SRTP profile we implement")]
    NoCommonSrtpProfile,
    /// A fatal alert was received or sent.
    #[error("the handshake ended with a fatal alert")]
    FatalAlert,
    /// The handshake made no progress for the configured time, or the peer
    /// stopped answering our retransmitted flights.
    #[error("no DTLS handshake progress within {0:?}")]
    HandshakeTimeout(Duration),
    /// Any other protocol failure `rtc::dtls` reports.
    #[error("DTLS handshake failed: {0}")]
    Handshake(#[source] RtcError),
    /// Keying SRTP from the exported material failed.
    #[error("keying SRTP: {0}")]
    Srtp(#[from] SrtpError),
    /// Generating or loading the certificate, or building the DTLS
    /// configuration, failed.
    #[error("setting DTLS up: {0}")]
    Setup(#[source] RtcError),
}

/// The node's DTLS certificate: self-signed ECDSA P-256, generated once per
/// node and shared by every participant's [`DtlsServer`].
#[derive(Clone)]
pub struct DtlsIdentity {
    certificate: Certificate,
    fingerprint: Fingerprint,
    provider: Arc<dyn RTCCryptoProvider>,
}

impl DtlsIdentity {
    /// Generates a fresh key pair and certificate (ring's system randomness:
    /// a private key is not something to seed from a test RNG).
    pub fn generate() -> Result<DtlsIdentity, DtlsError> {
        let provider = rtc::crypto::default_provider()
            .map_err(|err| DtlsError::Setup(RtcError::Crypto(err.to_string())))?;
        let certificate = Certificate::generate_self_signed_with_alg(
            vec!["duet".to_owned()],
            &rcgen::PKCS_ECDSA_P256_SHA256,
            provider.crypto(),
        )
        .map_err(DtlsError::Setup)?;
        let der = certificate
            .certificate
            .first()
            .expect("a generated certificate has one DER entry");
        let fingerprint = Fingerprint::of_certificate(FingerprintAlgorithm::Sha256, der.as_ref());
        Ok(DtlsIdentity {
            certificate,
            fingerprint,
            provider,
        })
    }

    /// The SHA-256 fingerprint for the answer's `a=fingerprint`.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }
}

impl fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint.to_string())
            .finish_non_exhaustive()
    }
}

/// What a [`DtlsServer`] reports.
#[derive(Debug)]
pub enum DtlsEvent {
    /// The handshake completed with the expected certificate: SRTP is keyed.
    Connected {
        /// The negotiated profile.
        profile: SrtpProfile,
        /// Unprotects the client's packets, protects ours (boxed: a few KiB
        /// of keyed ciphers).
        srtp: Box<SrtpSession>,
    },
    /// The association failed (also after `Connected`, e.g. on a fatal alert);
    /// nothing more will be accepted.
    Failed(DtlsError),
    /// The client closed the association (close_notify, answered in kind).
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No ClientHello yet: the endpoint has no association and no configuration.
    AwaitingHello,
    Handshaking,
    Connected,
    /// Connected, and the association's state was dropped
    /// ([`DtlsServer::release`]): DTLS input is ignored.
    Released,
    /// Failed or closed: input is ignored.
    Done,
}

/// The passive DTLS side of one participant's transport.
///
/// Call order, like quinn-proto: feed `handle_datagram`/`handle_timeout`, then
/// drain `poll_transmit` (send each datagram to the participant's selected
/// path) and `poll_event`, then sleep until `poll_timeout`. Keep feeding DTLS
/// datagrams after `Connected`: a client that lost our last flight repeats its
/// own (answered here), and its close_notify arrives the same way.
pub struct DtlsServer {
    /// The node's certificate, shared by every participant.
    identity: Arc<DtlsIdentity>,
    /// From the offer: the only certificate the client may present.
    remote_fingerprint: Fingerprint,
    endpoint: Endpoint,
    phase: Phase,
    /// Set by the certificate check inside the handshake, so its failure can be
    /// told from others (rtc::dtls only returns the callback's error).
    fingerprint_mismatch: Arc<AtomicBool>,
    handshake_timeout: Duration,
    /// When the handshake fails unless it progresses; moved forward by the
    /// first ClientHello and by every datagram we answer.
    deadline: Instant,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<DtlsEvent>,
    /// A ClientHello split across records (Chromium's, with its DTLS 1.3
    /// extensions, can be): its datagrams are held back until it is whole,
    /// so the profile is chosen from the complete `use_srtp` list.
    hello_fragments: HelloFragments,
}

/// The pieces of a fragmented ClientHello and the datagrams that carried them.
#[derive(Default)]
struct HelloFragments {
    body: Vec<u8>,
    covered: Vec<bool>,
    datagrams: Vec<Vec<u8>>,
}

impl HelloFragments {
    /// Most datagrams held for one ClientHello (a hello fits in a few).
    const MAX_DATAGRAMS: usize = 8;

    /// Adds one fragment; returns the whole body once every byte arrived.
    fn add(&mut self, datagram: &[u8], fragment: &HelloFragment<'_>) -> Option<Vec<u8>> {
        if self.datagrams.len() >= Self::MAX_DATAGRAMS || fragment.message_len > MAX_CLIENT_HELLO {
            return None;
        }
        if self.body.len() != fragment.message_len {
            self.body = vec![0; fragment.message_len];
            self.covered = vec![false; fragment.message_len];
        }
        let end = fragment.offset.checked_add(fragment.bytes.len())?;
        if end > fragment.message_len {
            return None;
        }
        self.body[fragment.offset..end].copy_from_slice(fragment.bytes);
        self.covered[fragment.offset..end]
            .iter_mut()
            .for_each(|c| *c = true);
        self.datagrams.push(datagram.to_vec());
        self.covered
            .iter()
            .all(|c| *c)
            .then(|| std::mem::take(&mut self.body))
    }
}

/// Largest ClientHello reassembled (Chromium's is about 1 KiB).
const MAX_CLIENT_HELLO: usize = 16 * 1024;

impl DtlsServer {
    /// A server for one participant whose offer carried `remote_fingerprint`.
    /// The handshake fails if it makes no progress for `handshake_timeout`
    /// (counted from `now` until the first ClientHello).
    pub fn new(
        identity: &Arc<DtlsIdentity>,
        remote_fingerprint: Fingerprint,
        handshake_timeout: Duration,
        now: Instant,
    ) -> DtlsServer {
        DtlsServer {
            identity: Arc::clone(identity),
            remote_fingerprint,
            endpoint: Endpoint::new(PLACEHOLDER_ADDR, TransportProtocol::UDP, None),
            phase: Phase::AwaitingHello,
            fingerprint_mismatch: Arc::new(AtomicBool::new(false)),
            handshake_timeout,
            deadline: now + handshake_timeout,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            hello_fragments: HelloFragments::default(),
        }
    }

    /// Feeds one DTLS datagram from the participant (RFC 7983 first byte 20–63).
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Instant) {
        match self.phase {
            Phase::Done | Phase::Released => return,
            Phase::AwaitingHello => {
                // Nothing but a ClientHello can start an association; anything
                // else before it is dropped unseen.
                let Some(hello) = read_client_hello(datagram) else {
                    return;
                };
                let hello = match hello {
                    ClientHello::Fragment(fragment) => match self.hello_fragments.add(datagram, &fragment) {
                        Some(body) => read_client_hello_body(&body).unwrap_or(ClientHello::WithoutUseSrtp),
                        None => return, // wait for the rest
                    },
                    whole => whole,
                };
                if let Err(err) = self.configure(hello) {
                    self.transmits.push_back(handshake_failure_alert().to_vec());
                    return self.fail(err);
                }
                self.phase = Phase::Handshaking;
                self.deadline = now + self.handshake_timeout;
                // Earlier pieces of a fragmented hello go in first, in order.
                let held = std::mem::take(&mut self.hello_fragments.datagrams);
                if let Some((_, earlier)) = held.split_last() {
                    for d in earlier {
                        let result = self
                            .endpoint
                            .read(now, PLACEHOLDER_ADDR, None, BytesMut::from(&d[..]));
                        self.drain_endpoint();
                        if let Err(err) = result {
                            return self.fail(self.classify(err));
                        }
                    }
                }
            }
            Phase::Handshaking | Phase::Connected => {}
        }
        let result = self
            .endpoint
            .read(now, PLACEHOLDER_ADDR, None, BytesMut::from(datagram));
        let answered = self.drain_endpoint();
        if answered && self.phase == Phase::Handshaking {
            self.deadline = now + self.handshake_timeout;
        }
        match result {
            Ok(events) => events.into_iter().for_each(|event| self.on_endpoint_event(event)),
            Err(err) => self.fail(self.classify(err)),
        }
    }

    /// Retransmits flights whose timer expired and fails a stalled handshake.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::AwaitingHello | Phase::Handshaking) {
            return;
        }
        if now >= self.deadline {
            return self.fail(DtlsError::HandshakeTimeout(self.handshake_timeout));
        }
        if self.endpoint.get_connection_state(PLACEHOLDER_ADDR).is_none() {
            return;
        }
        let result = self.endpoint.handle_timeout(PLACEHOLDER_ADDR, now);
        self.drain_endpoint();
        if result.is_err() {
            // rtc::dtls gives up after its retransmission budget.
            self.fail(DtlsError::HandshakeTimeout(self.handshake_timeout));
        }
    }

    /// When [`DtlsServer::handle_timeout`] is next due, while handshaking.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingHello | Phase::Handshaking => {
                let retransmit = self.endpoint.poll_timeout(&PLACEHOLDER_ADDR);
                Some(retransmit.map_or(self.deadline, |at| at.min(self.deadline)))
            }
            Phase::Connected | Phase::Released | Phase::Done => None,
        }
    }

    /// The next datagram to send to the participant.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// Drops the association (handshake transcript, both certificates,
    /// record-layer keys: over ten KiB per participant) once it can no longer
    /// be needed. Call it when the client's first packet authenticates under
    /// the SRTP keys: the client derived them, so it finished its handshake,
    /// and it never needs our last flight again. From then on DTLS datagrams
    /// are ignored, so a later close_notify or alert goes unseen: a leaving
    /// participant is noticed by its signaling and by ICE consent freshness.
    pub fn release(&mut self) {
        if self.phase != Phase::Connected {
            return;
        }
        self.endpoint = Endpoint::new(PLACEHOLDER_ADDR, TransportProtocol::UDP, None);
        self.hello_fragments = HelloFragments::default();
        self.transmits = VecDeque::new();
        self.phase = Phase::Released;
    }

    /// Whether [`DtlsServer::release`] dropped the association.
    pub fn is_released(&self) -> bool {
        self.phase == Phase::Released
    }

    /// Sends close_notify (if an association exists) and stops; no event follows.
    pub fn close(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        if self.phase == Phase::Released {
            // No keys left to write a close_notify with.
            self.phase = Phase::Done;
            return;
        }
        // `Endpoint::close` cannot fail; its `Result` is for API symmetry.
        let _ = self.endpoint.close(now);
        self.drain_endpoint();
        self.phase = Phase::Done;
    }

    /// Configures the endpoint for the profile we prefer among the hello's offer.
    fn configure(&mut self, hello: ClientHello<'_>) -> Result<(), DtlsError> {
        let profiles = match hello {
            ClientHello::Offers(ids) => {
                vec![SrtpProfile::preferred_among(&ids).ok_or(DtlsError::NoCommonSrtpProfile)?]
            }
            ClientHello::WithoutUseSrtp => return Err(DtlsError::NoCommonSrtpProfile),
            // Fragments are reassembled before `configure` is called.
            ClientHello::Fragment(_) => SrtpProfile::PREFERENCE.to_vec(),
        };
        let expected = self.remote_fingerprint.clone();
        let mismatch = Arc::clone(&self.fingerprint_mismatch);
        let check = move |certificates: &[Vec<u8>], _: &[_]| -> Result<(), RtcError> {
            match certificates.first() {
                Some(der) if expected.matches(der) => Ok(()),
                _ => {
                    mismatch.store(true, Ordering::Relaxed);
                    Err(RtcError::ErrNoMatchingCertificateFingerprint)
                }
            }
        };
        let config = ConfigBuilder::default()
            .with_crypto_provider(Arc::clone(&self.identity.provider))
            .with_certificates(vec![self.identity.certificate.clone()])
            .with_srtp_protection_profiles(profiles.into_iter().map(dtls_profile).collect())
            // WebRTC authenticates by fingerprint, not by a CA chain (RFC 8827 §6.5).
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(Arc::new(check)))
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(false, None)
            .map_err(DtlsError::Setup)?;
        self.endpoint.set_server_config(Some(Arc::new(config)));
        Ok(())
    }

    /// Moves the endpoint's queued datagrams to ours; whether there were any.
    fn drain_endpoint(&mut self) -> bool {
        let before = self.transmits.len();
        while let Some(transmit) = self.endpoint.poll_transmit() {
            self.transmits.push_back(transmit.message.to_vec());
        }
        self.transmits.len() > before
    }

    fn on_endpoint_event(&mut self, event: EndpointEvent) {
        match event {
            EndpointEvent::HandshakeComplete => match self.keyed_srtp() {
                Ok((profile, srtp)) => {
                    self.phase = Phase::Connected;
                    let srtp = Box::new(srtp);
                    self.events.push_back(DtlsEvent::Connected { profile, srtp });
                }
                Err(err) => self.fail(err),
            },
            EndpointEvent::PeerClosed => {
                self.phase = Phase::Done;
                self.events.push_back(DtlsEvent::Closed);
            }
            // No data channels on this endpoint: application data is dropped.
            _ => {}
        }
    }

    /// Checks the completed association's certificate and keys SRTP from it.
    fn keyed_srtp(&self) -> Result<(SrtpProfile, SrtpSession), DtlsError> {
        let state = self
            .endpoint
            .get_connection_state(PLACEHOLDER_ADDR)
            .ok_or(DtlsError::Handshake(RtcError::ErrConnClosed))?;
        // Checked during the handshake already; checked again here so no path
        // through rtc::dtls can hand out keys for another certificate.
        match state.peer_certificates.first() {
            Some(der) if self.remote_fingerprint.matches(der) => {}
            _ => return Err(DtlsError::FingerprintMismatch),
        }
        let profile = srtp_profile(state.srtp_protection_profile()).ok_or(DtlsError::NoCommonSrtpProfile)?;
        let material = state
            .export_keying_material(SRTP_EXPORTER_LABEL, &[], profile.keying_material_len())
            .map_err(DtlsError::Handshake)?;
        let srtp = SrtpSession::new(profile, material.as_ref(), DtlsRole::Server)?;
        Ok((profile, srtp))
    }

    fn classify(&self, err: RtcError) -> DtlsError {
        if self.fingerprint_mismatch.load(Ordering::Relaxed) {
            return DtlsError::FingerprintMismatch;
        }
        match err {
            RtcError::ErrAlertFatalOrClose => DtlsError::FatalAlert,
            RtcError::ErrServerNoMatchingSrtpProfile => DtlsError::NoCommonSrtpProfile,
            other => DtlsError::Handshake(other),
        }
    }

    fn fail(&mut self, err: DtlsError) {
        self.phase = Phase::Done;
        self.events.push_back(DtlsEvent::Failed(err));
    }
}

impl fmt::Debug for DtlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsServer")
            .field("phase", &self.phase)
            .field("remote_fingerprint", &self.remote_fingerprint.to_string())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

fn dtls_profile(profile: SrtpProfile) -> SrtpProtectionProfile {
    match profile {
        SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        SrtpProfile::AeadAes256Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
        SrtpProfile::Aes128CmHmacSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
    }
}

fn srtp_profile(profile: SrtpProtectionProfile) -> Option<SrtpProfile> {
    match profile {
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Some(SrtpProfile::AeadAes128Gcm),
        SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => Some(SrtpProfile::AeadAes256Gcm),
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => Some(SrtpProfile::Aes128CmHmacSha1_80),
        _ => None,
    }
}

/// What the first record of a datagram says about the client's SRTP offer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ClientHello<'a> {
    /// The `use_srtp` profile ids, in the client's order.
    Offers(Vec<u16>),
    /// A complete ClientHello without `use_srtp`.
    WithoutUseSrtp,
    /// One fragment of a ClientHello split across records.
    Fragment(HelloFragment<'a>),
}

/// Where one fragment of a ClientHello body goes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HelloFragment<'a> {
    message_len: usize,
    offset: usize,
    bytes: &'a [u8],
}

const CONTENT_TYPE_ALERT: u8 = 21;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;

/// A plaintext DTLS 1.2 fatal `handshake_failure` alert (RFC 5246 §7.2), for a
/// ClientHello we refuse before any association exists to send one.
fn handshake_failure_alert() -> [u8; 15] {
    let mut record = [0u8; 15];
    record[0] = CONTENT_TYPE_ALERT;
    record[1..3].copy_from_slice(&[0xfe, 0xfd]); // DTLS 1.2
                                                 // epoch 0, sequence number 0
    record[11..13].copy_from_slice(&2u16.to_be_bytes());
    record[13] = 2; // fatal
    record[14] = 40; // handshake_failure
    record
}
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;
const EXTENSION_USE_SRTP: u16 = 14;

/// Reads a datagram's first record as a DTLS ClientHello (RFC 6347 §4.1,
/// §4.2.2, RFC 5246 §7.4.1.2) down to its `use_srtp` extension (RFC 5764
/// §4.1.1). `None` if it is not one, or is truncated.
fn read_client_hello(datagram: &[u8]) -> Option<ClientHello<'_>> {
    let mut record = Reader(datagram);
    if record.u8()? != CONTENT_TYPE_HANDSHAKE {
        return None;
    }
    record.skip(2 + 2 + 6)?; // version, epoch, sequence number
    let len = usize::from(record.u16()?);
    let mut handshake = Reader(record.take(len)?);
    if handshake.u8()? != HANDSHAKE_TYPE_CLIENT_HELLO {
        return None;
    }
    let message_len = handshake.u24()?;
    handshake.skip(2)?; // message sequence
    let (fragment_offset, fragment_len) = (handshake.u24()?, handshake.u24()?);
    if fragment_offset != 0 || fragment_len != message_len {
        let bytes = handshake.take(fragment_len)?;
        return Some(ClientHello::Fragment(HelloFragment {
            message_len,
            offset: fragment_offset,
            bytes,
        }));
    }
    read_client_hello_body(handshake.take(message_len)?)
}

/// The ClientHello body (after the handshake header): its `use_srtp` offer.
fn read_client_hello_body(body: &[u8]) -> Option<ClientHello<'static>> {
    let mut body = Reader(body);
    body.skip(2 + 32)?; // client version, random
    let session_id = usize::from(body.u8()?);
    body.skip(session_id)?;
    let cookie = usize::from(body.u8()?);
    body.skip(cookie)?;
    let suites = usize::from(body.u16()?);
    body.skip(suites)?;
    let compression = usize::from(body.u8()?);
    body.skip(compression)?;
    if body.0.is_empty() {
        return Some(ClientHello::WithoutUseSrtp);
    }
    let extensions_len = usize::from(body.u16()?);
    let mut extensions = Reader(body.take(extensions_len)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let len = usize::from(extensions.u16()?);
        let data = extensions.take(len)?;
        if kind == EXTENSION_USE_SRTP {
            return read_use_srtp(data).map(ClientHello::Offers);
        }
    }
    Some(ClientHello::WithoutUseSrtp)
}

/// RFC 5764 §4.1.1: `SRTPProtectionProfiles` (u16-length list of u16) then `srtp_mki`.
fn read_use_srtp(data: &[u8]) -> Option<Vec<u16>> {
    let mut reader = Reader(data);
    let len = usize::from(reader.u16()?);
    let mut profiles = Reader(reader.take(len)?);
    let mut ids = Vec::with_capacity(len / 2);
    while !profiles.0.is_empty() {
        ids.push(profiles.u16()?);
    }
    Some(ids)
}

/// A big-endian cursor that reports running out as `None`.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }

    fn skip(&mut self, len: usize) -> Option<()> {
        self.take(len).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|bytes| bytes[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|bytes| u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|bytes| usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::srtp::tests::rtc_client_contexts;
    use proptest::prelude::*;
    use rtc::dtls::config::HandshakeConfig;

    const CLIENT_ADDR: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
        50_000,
    );
    const SERVER_ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)), 3478);
    const TIMEOUT: Duration = Duration::from_secs(10);
    const CHROMIUM_ORDER: [SrtpProtectionProfile; 3] = [
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    ];

    /// An `rtc::dtls` client, as a browser would be: its own certificate and
    /// the server's expected fingerprint (from our answer).
    struct Client {
        endpoint: Endpoint,
        fingerprint: Fingerprint,
        complete: bool,
        error: Option<RtcError>,
    }

    impl Client {
        fn connect(
            profiles: &[SrtpProtectionProfile],
            server_fingerprint: Fingerprint,
            now: Instant,
        ) -> Client {
            let provider = rtc::crypto::default_provider().expect("ring is built in");
            let certificate = Certificate::generate_self_signed(vec!["client".to_owned()], provider.crypto())
                .expect("generates");
            let fingerprint = Fingerprint::of_certificate(
                FingerprintAlgorithm::Sha256,
                certificate.certificate[0].as_ref(),
            );
            let check = move |certificates: &[Vec<u8>], _: &[_]| match certificates.first() {
                Some(der) if server_fingerprint.matches(der) => Ok(()),
                _ => Err(RtcError::ErrNoMatchingCertificateFingerprint),
            };
            let config: HandshakeConfig = ConfigBuilder::default()
                .with_crypto_provider(provider)
                .with_certificates(vec![certificate])
                .with_srtp_protection_profiles(profiles.to_vec())
                .with_insecure_skip_verify(true)
                .with_verify_peer_certificate(Some(Arc::new(check)))
                .build(true, Some(SERVER_ADDR))
                .expect("a valid client configuration");
            let mut endpoint = Endpoint::new(CLIENT_ADDR, TransportProtocol::UDP, None);
            endpoint
                .connect(now, SERVER_ADDR, Arc::new(config), None)
                .expect("starts the handshake");
            Client {
                endpoint,
                fingerprint,
                complete: false,
                error: None,
            }
        }

        fn receive(&mut self, datagram: &[u8], now: Instant) {
            match self
                .endpoint
                .read(now, SERVER_ADDR, None, BytesMut::from(datagram))
            {
                Ok(events) => {
                    let completed = events
                        .iter()
                        .any(|event| matches!(event, EndpointEvent::HandshakeComplete));
                    self.complete |= completed;
                }
                Err(err) => self.error = Some(err),
            }
        }

        fn keying_material(&self, profile: SrtpProfile) -> Vec<u8> {
            let state = self
                .endpoint
                .get_connection_state(SERVER_ADDR)
                .expect("a connected client has its association");
            assert_eq!(state.srtp_protection_profile(), dtls_profile(profile));
            state
                .export_keying_material(SRTP_EXPORTER_LABEL, &[], profile.keying_material_len())
                .expect("exports after the handshake")
                .as_ref()
                .to_vec()
        }
    }

    /// Shuttles datagrams between the two on a simulated clock (10 ms a round,
    /// timers fired when due) until both sides settle; returns the server's events.
    fn run(client: &mut Client, server: &mut DtlsServer, now: &mut Instant) -> Vec<DtlsEvent> {
        let mut events = Vec::new();
        for _ in 0..2_000 {
            while let Some(transmit) = client.endpoint.poll_transmit() {
                server.handle_datagram(&transmit.message, *now);
            }
            while let Some(datagram) = server.poll_transmit() {
                client.receive(&datagram, *now);
            }
            events.extend(std::iter::from_fn(|| server.poll_event()));
            let server_settled =
                events.iter().any(|event| !matches!(event, DtlsEvent::Closed)) || server.phase == Phase::Done;
            if server_settled && (client.complete || client.error.is_some()) {
                break;
            }
            *now += Duration::from_millis(10);
            if server.poll_timeout().is_some_and(|at| at <= *now) {
                server.handle_timeout(*now);
            }
            if client
                .endpoint
                .poll_timeout(&SERVER_ADDR)
                .is_some_and(|at| at <= *now)
            {
                let _ = client.endpoint.handle_timeout(SERVER_ADDR, *now);
            }
        }
        events
    }

    fn rtp_packet(seq: u16) -> Vec<u8> {
        let mut packet = vec![0x80, 96];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0x10, 0, 0xca, 0xfe, 0xba, 0xbe]);
        packet.extend_from_slice(b"a VP8 payload, say");
        packet
    }

    fn handshake(profiles: &[SrtpProtectionProfile]) -> (Client, SrtpProfile, Box<SrtpSession>) {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let mut now = Instant::now();
        let mut client = Client::connect(profiles, identity.fingerprint().clone(), now);
        let mut server = DtlsServer::new(&identity, client.fingerprint.clone(), TIMEOUT, now);
        let mut events = run(&mut client, &mut server, &mut now).into_iter();
        assert!(client.complete, "client: {:?}", client.error);
        match events.next() {
            Some(DtlsEvent::Connected { profile, srtp }) => (client, profile, srtp),
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    #[test]
    fn a_client_in_chromiums_order_gets_gcm_and_its_rtp_opens_with_our_keys() {
        let (client, profile, mut srtp) = handshake(&CHROMIUM_ORDER);
        assert_eq!(profile, SrtpProfile::AeadAes128Gcm);
        assert_eq!(srtp.profile(), SrtpProfile::AeadAes128Gcm);

        let material = client.keying_material(profile);
        let (mut client_out, mut client_in) = rtc_client_contexts(profile, &material);
        let plain = rtp_packet(4242);
        let mut wire = client_out
            .encrypt_rtp(&plain)
            .expect("the client protects")
            .to_vec();
        let len = srtp
            .unprotect_rtp(&mut wire)
            .expect("we open the client's packet");
        assert_eq!(wire[..len], plain[..]);

        let mut buf = plain.clone();
        buf.resize(plain.len() + crate::endpoint::srtp::SRTP_MAX_OVERHEAD, 0);
        let len = srtp.protect_rtp(&mut buf, plain.len()).expect("protects");
        let opened = client_in.decrypt_rtp(&buf[..len]).expect("the client opens ours");
        assert_eq!(opened[..], plain[..]);
    }

    /// Splits a one-record ClientHello datagram into two datagrams, one
    /// record each, each carrying half of the handshake body as a fragment.
    fn split_hello(datagram: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (record_header, handshake) = datagram.split_at(13);
        let (handshake_header, body) = handshake.split_at(12);
        let half = body.len() / 2;
        let piece = |offset: usize, bytes: &[u8], seq_bump: u8| {
            let mut out = record_header.to_vec();
            out[10] = out[10].wrapping_add(seq_bump); // record sequence number, low byte
            out[11..13].copy_from_slice(&((12 + bytes.len()) as u16).to_be_bytes());
            let mut hs = handshake_header.to_vec();
            hs[6..9].copy_from_slice(&(offset as u32).to_be_bytes()[1..]);
            hs[9..12].copy_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&hs);
            out.extend_from_slice(bytes);
            out
        };
        (piece(0, &body[..half], 0), piece(half, &body[half..], 1))
    }

    #[test]
    fn a_client_hello_split_across_records_still_gets_our_preferred_profile() {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let mut now = Instant::now();
        let mut client = Client::connect(&CHROMIUM_ORDER, identity.fingerprint().clone(), now);
        let mut server = DtlsServer::new(&identity, client.fingerprint.clone(), TIMEOUT, now);
        let hello = client.endpoint.poll_transmit().expect("a ClientHello");
        let (first, second) = split_hello(&hello.message);
        server.handle_datagram(&first, now);
        assert!(server.poll_transmit().is_none(), "no answer to half a hello");
        server.handle_datagram(&second, now);
        let events = run(&mut client, &mut server, &mut now);
        assert!(client.complete, "client: {:?}", client.error);
        match events.first() {
            Some(DtlsEvent::Connected { profile, .. }) => assert_eq!(*profile, SrtpProfile::AeadAes128Gcm),
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    #[test]
    fn a_client_offering_only_aes_cm_sha1_80_gets_it() {
        let (client, profile, mut srtp) = handshake(&[SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80]);
        assert_eq!(profile, SrtpProfile::Aes128CmHmacSha1_80);
        let (mut client_out, _) = rtc_client_contexts(profile, &client.keying_material(profile));
        let mut wire = client_out.encrypt_rtp(&rtp_packet(1)).expect("protects").to_vec();
        let len = srtp
            .unprotect_rtp(&mut wire)
            .expect("we open the client's packet");
        assert_eq!(wire[..len], rtp_packet(1)[..]);
    }

    #[test]
    fn a_client_offering_gcm_256_first_still_gets_gcm_128() {
        let (_, profile, _) = handshake(&[
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        ]);
        assert_eq!(profile, SrtpProfile::AeadAes128Gcm);
        let (_, profile, _) = handshake(&[SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm]);
        assert_eq!(profile, SrtpProfile::AeadAes256Gcm);
    }

    #[test]
    fn a_certificate_other_than_the_offers_fingerprint_fails_the_handshake() {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let someone_else = DtlsIdentity::generate().expect("generates");
        let mut now = Instant::now();
        let mut client = Client::connect(&CHROMIUM_ORDER, identity.fingerprint().clone(), now);
        let expected = someone_else.fingerprint().clone();
        let mut server = DtlsServer::new(&identity, expected, TIMEOUT, now);
        let events = run(&mut client, &mut server, &mut now);
        assert!(
            matches!(
                events.as_slice(),
                [DtlsEvent::Failed(DtlsError::FingerprintMismatch)]
            ),
            "{events:?}"
        );
        assert!(!client.complete);
        // Once failed, the server accepts nothing more.
        server.handle_datagram(&[22; 40], now);
        assert!(server.poll_event().is_none() && server.poll_timeout().is_none());
    }

    #[test]
    fn a_handshake_that_never_starts_times_out() {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let start = Instant::now();
        let mut server = DtlsServer::new(&identity, identity.fingerprint().clone(), TIMEOUT, start);
        // Anything but a ClientHello neither starts nor fails it.
        server.handle_datagram(&[23, 0xfe, 0xfd, 0, 1], start);
        assert_eq!(server.poll_timeout(), Some(start + TIMEOUT));
        server.handle_timeout(start + TIMEOUT - Duration::from_millis(1));
        assert!(server.poll_event().is_none());
        server.handle_timeout(start + TIMEOUT);
        assert!(matches!(
            server.poll_event(),
            Some(DtlsEvent::Failed(DtlsError::HandshakeTimeout(TIMEOUT)))
        ));
    }

    #[test]
    fn a_client_that_goes_silent_mid_handshake_times_out() {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let start = Instant::now();
        let mut client = Client::connect(&CHROMIUM_ORDER, identity.fingerprint().clone(), start);
        let mut server = DtlsServer::new(
            &identity,
            client.fingerprint.clone(),
            Duration::from_secs(30),
            start,
        );
        while let Some(transmit) = client.endpoint.poll_transmit() {
            server.handle_datagram(&transmit.message, start);
        }
        let mut now;
        let mut retransmitted = 0;
        let failure = loop {
            now = server.poll_timeout().expect("a handshaking server has a timer");
            server.handle_timeout(now);
            retransmitted += std::iter::from_fn(|| server.poll_transmit()).count();
            if let Some(event) = server.poll_event() {
                break event;
            }
        };
        assert!(matches!(
            failure,
            DtlsEvent::Failed(DtlsError::HandshakeTimeout(_))
        ));
        assert!(retransmitted > 0, "the server retransmitted before giving up");
        assert!(now <= start + Duration::from_secs(30));
    }

    #[test]
    fn a_fatal_alert_from_the_client_fails_the_handshake() {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let now = Instant::now();
        let mut client = Client::connect(&CHROMIUM_ORDER, identity.fingerprint().clone(), now);
        let mut server = DtlsServer::new(&identity, client.fingerprint.clone(), TIMEOUT, now);
        while let Some(transmit) = client.endpoint.poll_transmit() {
            server.handle_datagram(&transmit.message, now);
        }
        let mut alert = handshake_failure_alert();
        alert[10] = 9; // a fresh record sequence number
        server.handle_datagram(&alert, now);
        assert!(matches!(
            server.poll_event(),
            Some(DtlsEvent::Failed(DtlsError::FatalAlert))
        ));
    }

    #[test]
    fn a_client_without_a_common_srtp_profile_is_refused_with_an_alert() {
        for profiles in [&[][..], &[SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32][..]] {
            let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
            let now = Instant::now();
            let mut client = Client::connect(profiles, identity.fingerprint().clone(), now);
            let mut server = DtlsServer::new(&identity, client.fingerprint.clone(), TIMEOUT, now);
            while let Some(transmit) = client.endpoint.poll_transmit() {
                server.handle_datagram(&transmit.message, now);
            }
            assert!(matches!(
                server.poll_event(),
                Some(DtlsEvent::Failed(DtlsError::NoCommonSrtpProfile))
            ));
            let alert = server.poll_transmit().expect("the refusal is sent");
            client.receive(&alert, now);
            assert!(client.error.is_some(), "the client learns it was refused");
        }
    }

    /// A client in Chromium's profile order and a server, handshaken.
    fn connected(identity: &Arc<DtlsIdentity>) -> (Client, DtlsServer, Instant) {
        let mut now = Instant::now();
        let mut client = Client::connect(&CHROMIUM_ORDER, identity.fingerprint().clone(), now);
        let mut server = DtlsServer::new(identity, client.fingerprint.clone(), TIMEOUT, now);
        let events = run(&mut client, &mut server, &mut now);
        assert!(matches!(events.as_slice(), [DtlsEvent::Connected { .. }]));
        (client, server, now)
    }

    #[test]
    fn the_clients_close_notify_closes_the_association() {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let (mut client, mut server, now) = connected(&identity);
        assert_eq!(server.poll_timeout(), None, "a connected server has no timer");
        client.endpoint.close(now).expect("closes");
        while let Some(transmit) = client.endpoint.poll_transmit() {
            server.handle_datagram(&transmit.message, now);
        }
        assert!(matches!(server.poll_event(), Some(DtlsEvent::Closed)));
        assert!(server.poll_transmit().is_some(), "close_notify is answered");
    }

    #[test]
    fn a_released_association_ignores_dtls_and_closes_without_a_word() {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let (mut client, mut server, now) = connected(&identity);
        server.release();
        assert!(server.is_released());
        client.endpoint.close(now).expect("closes");
        while let Some(transmit) = client.endpoint.poll_transmit() {
            server.handle_datagram(&transmit.message, now);
        }
        assert!(
            server.poll_event().is_none(),
            "no keys: the close_notify is not read"
        );
        assert!(server.poll_transmit().is_none());
        server.close(now);
        assert!(
            server.poll_transmit().is_none(),
            "no keys to write a close_notify with"
        );
        assert_eq!(server.poll_timeout(), None);
    }

    #[test]
    fn release_before_the_handshake_completes_changes_nothing() {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let mut now = Instant::now();
        let mut client = Client::connect(&CHROMIUM_ORDER, identity.fingerprint().clone(), now);
        let mut server = DtlsServer::new(&identity, client.fingerprint.clone(), TIMEOUT, now);
        server.release();
        assert!(!server.is_released());
        let events = run(&mut client, &mut server, &mut now);
        assert!(matches!(events.as_slice(), [DtlsEvent::Connected { .. }]));
    }

    #[test]
    fn the_use_srtp_offer_is_read_in_the_clients_order() {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let mut client = Client::connect(&CHROMIUM_ORDER, identity.fingerprint().clone(), Instant::now());
        let hello = client.endpoint.poll_transmit().expect("a ClientHello");
        assert_eq!(
            read_client_hello(&hello.message),
            Some(ClientHello::Offers(vec![0x0001, 0x0008, 0x0007]))
        );
        // The first fragment of a split hello (fragment length < message length).
        let mut first_fragment = hello.message.to_vec();
        first_fragment[13 + 11] = first_fragment[13 + 11].wrapping_sub(1);
        assert!(matches!(
            read_client_hello(&first_fragment),
            Some(ClientHello::Fragment(_))
        ));
        // Truncated anywhere, it is not mistaken for something else.
        for len in 0..hello.message.len() {
            let read = read_client_hello(&hello.message[..len]);
            assert!(
                read.is_none() || matches!(read, Some(ClientHello::Fragment(_))),
                "{len}"
            );
        }
    }

    #[test]
    fn fingerprints_parse_and_print_as_sdp_writes_them() {
        let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
        let printed = identity.fingerprint().to_string();
        assert!(printed.starts_with("sha-256 "));
        assert_eq!(printed.len(), "sha-256 ".len() + 32 * 3 - 1);
        assert_eq!(
            printed.parse::<Fingerprint>().as_ref(),
            Ok(identity.fingerprint())
        );
        assert_eq!(
            printed
                .to_lowercase()
                .replace("sha-256", "SHA-256")
                .parse::<Fingerprint>()
                .as_ref(),
            Ok(identity.fingerprint())
        );
        assert!(matches!(
            "sha-1 AB:CD".parse::<Fingerprint>(),
            Err(FingerprintParseError::UnsupportedAlgorithm(_))
        ));
        assert_eq!(
            "sha-256 AB:CD".parse::<Fingerprint>(),
            Err(FingerprintParseError::Malformed)
        );
        assert_eq!(
            "sha-256".parse::<Fingerprint>(),
            Err(FingerprintParseError::Malformed)
        );
    }

    proptest! {
        // Each case generates two certificates: fewer cases keep it quick.
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn arbitrary_datagrams_never_panic_the_server(
            datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
            hello_first in any::<bool>(),
        ) {
            let identity = Arc::new(DtlsIdentity::generate().expect("generates"));
            let now = Instant::now();
            let mut server = DtlsServer::new(&identity, identity.fingerprint().clone(), TIMEOUT, now);
            if hello_first {
                let mut client =
                    Client::connect(&CHROMIUM_ORDER, identity.fingerprint().clone(), now);
                while let Some(transmit) = client.endpoint.poll_transmit() {
                    server.handle_datagram(&transmit.message, now);
                }
            }
            for mut datagram in datagrams {
                if let Some(first) = datagram.first_mut() {
                    *first = 20 + *first % 4; // a DTLS content type
                }
                server.handle_datagram(&datagram, now);
                let _ = read_client_hello(&datagram);
            }
            server.handle_timeout(now + TIMEOUT);
            while server.poll_transmit().is_some() {}
            let mut failed = false;
            while let Some(event) = server.poll_event() {
                failed |= matches!(event, DtlsEvent::Failed(_));
            }
            prop_assert!(failed, "random input cannot complete a handshake, so the timeout fails it");
        }
    }
}
