//! ICE-lite for one participant: the SFU answers the browser's connectivity
//! checks and never sends its own (RFC 8445 §2.5 lite implementation, STUN per
//! RFC 8489, consent freshness per RFC 7675, credentials per RFC 8839 §5.4).
//!
//! The node's routing table (`crate::routing`) finds the agent by the local
//! ufrag of a binding request; the agent decides whether the request is
//! valid and answers it. Sans-IO: [`IceLite::handle_stun`] and
//! [`IceLite::handle_timeout`] in; [`IceLite::poll_transmit`],
//! [`IceLite::poll_event`] and [`IceLite::poll_timeout`] out. Call the
//! `poll_*`s after every `handle_*` until they return `None`.
//!
//! What is answered, and how (checked in this order, RFC 8489 §6.3):
//! - not STUN, not a well-formed message, no FINGERPRINT as the last
//!   attribute, a wrong FINGERPRINT: dropped silently (RFC 8489 §7.3,
//!   RFC 8445 §7.2.2 makes FINGERPRINT mandatory for ICE);
//! - anything but a binding request (indications, responses, other methods):
//!   dropped (a lite agent sends no requests, so it expects no responses);
//! - no USERNAME or no MESSAGE-INTEGRITY: `400 Bad Request` (RFC 8489 §9.1.3);
//! - USERNAME's left half is not one of our ufrags: dropped. It is not ours
//!   to answer: routing only hands us requests naming our ufrag, so this is
//!   an old ufrag after an ICE restart or a confused peer, and a 401 would
//!   only tell a stranger which credentials are live;
//! - USERNAME's right half is not the remote ufrag from the offer, or the
//!   MESSAGE-INTEGRITY does not verify with our password:
//!   `401 Unauthorized` without MESSAGE-INTEGRITY (RFC 8489 §9.1.3);
//! - otherwise: a success response with XOR-MAPPED-ADDRESS (the path's remote
//!   address), MESSAGE-INTEGRITY (our password) and FINGERPRINT.
//!
//! Nomination: a valid check carrying USE-CANDIDATE selects its path; a later
//! nominated check on another path moves the selection there (Chromium
//! renominates when it switches networks, a TURN relay path and a UDP path
//! are both paths). Consent (RFC 7675): the browser keeps checking the
//! selected path; with no valid check there for [`DISCONNECTED_AFTER`] the
//! agent is `Disconnected`, for [`CONSENT_TIMEOUT`] (30 s, RFC 7675 §5.1)
//! `Failed`. A valid check on the selected path brings `Disconnected` back to
//! `Connected`; `Failed` only an ICE restart repairs.
//!
//! ICE restart (RFC 8445 §9, JSEP): [`IceLite::restart`] installs new
//! credentials next to the old ones. The selected path and the old
//! credentials keep working until the first valid check with the new ones;
//! from then on only the new credentials are accepted
//! ([`IceEvent::RestartCompleted`]).
//!
//! Not implemented, because a lite agent facing a browser does not need it:
//! ICE-CONTROLLED/ICE-CONTROLLING role conflicts (a lite agent is always
//! controlled, RFC 8445 §6.1.1), 420 for unknown comprehension-required
//! attributes, MESSAGE-INTEGRITY-SHA256.

use crate::routing::PathAddr;
use crate::stun::is_stun;
use rtc::crypto::providers::RingCrypto;
use rtc::stun::attributes::{ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_USERNAME, ATTR_USE_CANDIDATE};
use rtc::stun::error_code::{ErrorCode, ErrorCodeAttribute, CODE_BAD_REQUEST, CODE_UNAUTHORIZED};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter, TransactionId, BINDING_ERROR, BINDING_REQUEST, BINDING_SUCCESS};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// No valid check on the selected path for this long: `Disconnected`
/// (Chromium checks the selected path every ~5 s, so this is two missed
/// checks; the browser's own view turns "disconnected" at a similar point).
pub const DISCONNECTED_AFTER: Duration = Duration::from_secs(10);
/// No valid check on the selected path for this long: consent expired,
/// `Failed` (RFC 7675 §5.1).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Characters of `ice-char` (RFC 8839 §5.4: ALPHA / DIGIT / "+" / "/").
const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Our ufrag length: RFC 8839 asks for at least 4 characters and 24 bits of
/// randomness; 8 characters give 48 bits and keep routing keys short.
const UFRAG_LEN: usize = 8;
/// Our password length: RFC 8839 asks for at least 22 characters (128 bits).
const PWD_LEN: usize = 24;
/// MESSAGE-INTEGRITY (HMAC-SHA1) is 20 bytes (RFC 8489 §14.5).
const MESSAGE_INTEGRITY_LEN: usize = 20;

/// One side's ICE username fragment and password (`a=ice-ufrag`, `a=ice-pwd`).
#[derive(Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

impl std::fmt::Debug for IceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password authenticates checks: keep it out of logs.
        f.debug_struct("IceCredentials")
            .field("ufrag", &self.ufrag)
            .finish_non_exhaustive()
    }
}

impl IceCredentials {
    /// Fresh random credentials (8-character ufrag, 24-character password,
    /// both from RFC 8839's `ice-char` set) drawn from `rng`.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut draw = |n: usize| -> String {
            (0..n)
                .map(|_| char::from(ICE_CHARS[rng.random_range(0..ICE_CHARS.len())]))
                .collect()
        };
        let ufrag = draw(UFRAG_LEN);
        let pwd = draw(PWD_LEN);
        IceCredentials { ufrag, pwd }
    }
}

/// The agent's connectivity, as the node needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceState {
    /// No nominated path yet.
    New,
    /// A nominated path is selected and consent is fresh.
    Connected,
    /// No valid check on the selected path for [`DISCONNECTED_AFTER`];
    /// media may still flow, a check brings it back.
    Disconnected,
    /// Consent expired ([`CONSENT_TIMEOUT`]): stop sending media to the path
    /// (RFC 7675 §5.1). Only an ICE restart recovers.
    Failed,
}

/// Something the node must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceEvent {
    /// Media now goes to this path (first selection, or a move).
    Selected(PathAddr),
    /// The state changed (see [`IceState`]).
    State(IceState),
    /// A check with the credentials of the last [`IceLite::restart`] was
    /// valid: the old credentials are no longer accepted (the node can stop
    /// routing the old ufrag).
    RestartCompleted,
}

/// A datagram to send: a STUN response to the path the request came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub path: PathAddr,
    pub data: Vec<u8>,
}

/// Why a datagram was not a valid check. Whether an error response was
/// queued is said per variant (see the module docs for the rules).
#[derive(Debug, thiserror::Error)]
pub enum IceError {
    /// Not a STUN message (RFC 7983 demux, length field): dropped.
    #[error("not a STUN message")]
    NotStun,
    /// A STUN header but the attributes do not parse: dropped.
    #[error("malformed STUN message: {0}")]
    Malformed(#[source] rtc::shared::error::Error),
    /// FINGERPRINT is absent or not the last attribute: dropped.
    #[error("STUN message without a final FINGERPRINT")]
    MissingFingerprint,
    /// FINGERPRINT does not match the message: dropped.
    #[error("STUN FINGERPRINT mismatch")]
    BadFingerprint,
    /// Not a binding request (indication, response, other method): dropped.
    #[error("not a binding request")]
    NotBindingRequest,
    /// USERNAME or MESSAGE-INTEGRITY missing or malformed: 400 queued.
    #[error("binding request without a usable {0}")]
    BadRequest(&'static str),
    /// USERNAME's local ufrag is none of ours: dropped (not ours to answer).
    #[error("binding request for another ufrag")]
    NotOurUfrag,
    /// USERNAME's remote half is not the peer's ufrag: 401 queued.
    #[error("binding request names another remote ufrag")]
    WrongRemoteUfrag,
    /// MESSAGE-INTEGRITY does not verify with our password: 401 queued.
    #[error("binding request fails MESSAGE-INTEGRITY")]
    BadIntegrity,
    /// Building a response failed (cannot happen for the attributes we add).
    #[error("building a STUN response: {0}")]
    Build(#[source] rtc::shared::error::Error),
}

/// The selected path and when consent was last refreshed on it.
#[derive(Clone, Copy, Debug)]
struct Selected {
    path: PathAddr,
    last_valid: Instant,
}

/// A local/remote credential pair the agent accepts checks for.
#[derive(Clone, Debug)]
struct Pair {
    local: IceCredentials,
    remote_ufrag: String,
}

/// The ICE-lite agent of one participant.
#[derive(Debug)]
pub struct IceLite {
    /// The credentials checks are verified against.
    current: Pair,
    /// Credentials of a restart, accepted next to `current` until one valid
    /// check proves them; then they replace `current`.
    pending: Option<Pair>,
    selected: Option<Selected>,
    state: IceState,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceEvent>,
}

/// The outcome of authenticating a check: which credentials it proved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proved {
    Current,
    Pending,
}

impl IceLite {
    /// An agent answering checks for `local` (ours, from the answer) whose
    /// USERNAME names `remote_ufrag` (the offer's `a=ice-ufrag`).
    pub fn new(local: IceCredentials, remote_ufrag: &str) -> Self {
        IceLite {
            current: Pair {
                local,
                remote_ufrag: remote_ufrag.to_owned(),
            },
            pending: None,
            selected: None,
            state: IceState::New,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Our credentials for the next answer: a pending restart's, else the
    /// current ones.
    pub fn local_credentials(&self) -> &IceCredentials {
        &self.pending.as_ref().unwrap_or(&self.current).local
    }

    /// The ufrags whose checks this agent accepts now (the current one, and a
    /// pending restart's), for the node's routing table.
    pub fn local_ufrags(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.current.local.ufrag.as_str())
            .chain(self.pending.as_ref().map(|p| p.local.ufrag.as_str()))
    }

    pub fn state(&self) -> IceState {
        self.state
    }

    /// Where media goes, if a path was nominated.
    pub fn selected_path(&self) -> Option<PathAddr> {
        self.selected.map(|s| s.path)
    }

    /// ICE restart (a new offer with a new `a=ice-ufrag`): accept checks with
    /// `new_local`/`new_remote_ufrag` as well as the old credentials until the
    /// first valid check with the new ones. The selected path is kept. A
    /// second restart before the first completed replaces the pending one.
    pub fn restart(&mut self, new_local: IceCredentials, new_remote_ufrag: &str) {
        self.pending = Some(Pair {
            local: new_local,
            remote_ufrag: new_remote_ufrag.to_owned(),
        });
    }

    /// A STUN datagram from `path`. A valid binding request is answered
    /// (see [`IceLite::poll_transmit`]); an invalid one gives its reason, and
    /// a 400/401 error response is queued where the module docs say so.
    pub fn handle_stun(&mut self, path: PathAddr, buf: &[u8], now: Instant) -> Result<(), IceError> {
        let mut msg = parse_binding_request(buf)?;
        let proved = match self.authenticate(&mut msg) {
            Ok(proved) => proved,
            Err(err) => {
                let code = match err {
                    IceError::BadRequest(_) => Some(CODE_BAD_REQUEST),
                    IceError::WrongRemoteUfrag | IceError::BadIntegrity => Some(CODE_UNAUTHORIZED),
                    _ => None,
                };
                if let Some(code) = code {
                    let data = error_response(msg.transaction_id, code)?;
                    self.transmits.push_back(Transmit { path, data });
                }
                return Err(err);
            }
        };
        let pwd = match proved {
            Proved::Current => &self.current.local.pwd,
            Proved::Pending => match &self.pending {
                Some(p) => &p.local.pwd,
                None => &self.current.local.pwd,
            },
        };
        let data = success_response(msg.transaction_id, path, pwd)?;
        self.transmits.push_back(Transmit { path, data });
        if proved == Proved::Pending {
            if let Some(p) = self.pending.take() {
                self.current = p;
                self.events.push_back(IceEvent::RestartCompleted);
                if self.state == IceState::Failed {
                    // Consent on the old path is gone for good; the restart's
                    // nomination decides where media goes now.
                    self.selected = None;
                    self.set_state(IceState::New);
                }
            }
        }
        self.on_valid_check(path, msg.contains(ATTR_USE_CANDIDATE), now);
        Ok(())
    }

    /// Which credentials the request proves: USERNAME `ours:theirs` and
    /// MESSAGE-INTEGRITY keyed with our password.
    fn authenticate(&self, msg: &mut Message) -> Result<Proved, IceError> {
        let username =
            TextAttribute::get_from_as(msg, ATTR_USERNAME).map_err(|_| IceError::BadRequest("USERNAME"))?;
        let integrity_ok = msg
            .attributes
            .0
            .iter()
            .any(|a| a.typ == ATTR_MESSAGE_INTEGRITY && usize::from(a.length) == MESSAGE_INTEGRITY_LEN);
        if !integrity_ok {
            return Err(IceError::BadRequest("MESSAGE-INTEGRITY"));
        }
        let (ours, theirs) = username
            .text
            .split_once(':')
            .ok_or(IceError::BadRequest("USERNAME"))?;
        let (proved, pair) = if ours == self.current.local.ufrag {
            (Proved::Current, &self.current)
        } else {
            match &self.pending {
                Some(p) if ours == p.local.ufrag => (Proved::Pending, p),
                _ => return Err(IceError::NotOurUfrag),
            }
        };
        if theirs != pair.remote_ufrag {
            return Err(IceError::WrongRemoteUfrag);
        }
        MessageIntegrity::check(msg, pair.local.pwd.as_bytes(), &RingCrypto)
            .map_err(|_| IceError::BadIntegrity)?;
        Ok(proved)
    }

    /// Nomination and consent bookkeeping after a valid check.
    fn on_valid_check(&mut self, path: PathAddr, nominated: bool, now: Instant) {
        match &mut self.selected {
            Some(sel) if sel.path == path => sel.last_valid = now,
            _ if nominated => {
                self.selected = Some(Selected {
                    path,
                    last_valid: now,
                });
                self.events.push_back(IceEvent::Selected(path));
            }
            _ => return,
        }
        // A valid check on the selected path refreshes consent. Failed is
        // left only through a completed restart (which resets to New).
        if matches!(self.state, IceState::New | IceState::Disconnected) {
            self.set_state(IceState::Connected);
        }
    }

    fn set_state(&mut self, state: IceState) {
        if self.state != state {
            self.state = state;
            self.events.push_back(IceEvent::State(state));
        }
    }

    /// Advances consent timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(sel) = self.selected else { return };
        let quiet = now.saturating_duration_since(sel.last_valid);
        if quiet >= CONSENT_TIMEOUT {
            self.set_state(IceState::Failed);
        } else if quiet >= DISCONNECTED_AFTER && self.state == IceState::Connected {
            self.set_state(IceState::Disconnected);
        }
    }

    /// When [`IceLite::handle_timeout`] must run next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sel = self.selected?;
        match self.state {
            IceState::Connected => Some(sel.last_valid + DISCONNECTED_AFTER),
            IceState::Disconnected => Some(sel.last_valid + CONSENT_TIMEOUT),
            IceState::New | IceState::Failed => None,
        }
    }

    /// The next STUN response to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the node.
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }
}

/// Parses `buf` as a STUN binding request with a valid final FINGERPRINT.
fn parse_binding_request(buf: &[u8]) -> Result<Message, IceError> {
    if !is_stun(buf) {
        return Err(IceError::NotStun);
    }
    let mut msg = Message::new();
    msg.unmarshal_binary(buf).map_err(IceError::Malformed)?;
    if msg.attributes.0.last().map(|a| a.typ) != Some(ATTR_FINGERPRINT) {
        return Err(IceError::MissingFingerprint);
    }
    FINGERPRINT.check(&msg).map_err(|_| IceError::BadFingerprint)?;
    if msg.typ != BINDING_REQUEST {
        return Err(IceError::NotBindingRequest);
    }
    Ok(msg)
}

fn success_response(id: TransactionId, path: PathAddr, pwd: &str) -> Result<Vec<u8>, IceError> {
    let addr = path.addr();
    let mut out = Message::new();
    let setters: [Box<dyn Setter>; 5] = [
        Box::new(BINDING_SUCCESS),
        Box::new(id),
        Box::new(XorMappedAddress {
            ip: addr.ip(),
            port: addr.port(),
        }),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            pwd.to_owned(),
            &RingCrypto,
        )),
        Box::new(FINGERPRINT),
    ];
    out.build(&setters).map_err(IceError::Build)?;
    Ok(out.raw)
}

fn error_response(id: TransactionId, code: ErrorCode) -> Result<Vec<u8>, IceError> {
    let reason: &[u8] = if code == CODE_UNAUTHORIZED {
        b"Unauthorized"
    } else {
        b"Bad Request"
    };
    let mut out = Message::new();
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(BINDING_ERROR),
        Box::new(id),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.to_vec(),
        }),
        Box::new(FINGERPRINT),
    ];
    out.build(&setters).map_err(IceError::Build)?;
    Ok(out.raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rtc::stun::attributes::{ATTR_ICE_CONTROLLING, ATTR_PRIORITY};
    use rtc::stun::message::{Getter, MessageType, CLASS_ERROR_RESPONSE, CLASS_INDICATION, METHOD_BINDING};
    use std::net::SocketAddr;

    fn udp(port: u16) -> PathAddr {
        PathAddr::Udp(SocketAddr::from(([192, 0, 2, 1], port)))
    }

    fn turn(port: u16) -> PathAddr {
        PathAddr::Turn(SocketAddr::from(([198, 51, 100, 7], port)))
    }

    fn creds(seed: u64) -> IceCredentials {
        IceCredentials::random(&mut rand::rngs::StdRng::seed_from_u64(seed))
    }

    /// What the browser puts in a check (RFC 8445 §7.1.1), built with `rtc::stun`.
    struct Check<'a> {
        username: Option<String>,
        /// The password the MESSAGE-INTEGRITY is keyed with (the SFU's).
        pwd: Option<&'a str>,
        nominate: bool,
        fingerprint: bool,
        id: u8,
    }

    impl<'a> Check<'a> {
        fn new(sfu: &'a IceCredentials, client_ufrag: &str) -> Self {
            Check {
                username: Some(format!("{}:{client_ufrag}", sfu.ufrag)),
                pwd: Some(&sfu.pwd),
                nominate: false,
                fingerprint: true,
                id: 1,
            }
        }
        fn nominated(mut self) -> Self {
            self.nominate = true;
            self
        }
        fn build(&self) -> Vec<u8> {
            let mut m = Message::new();
            m.build(&[
                Box::new(BINDING_REQUEST) as Box<dyn Setter>,
                Box::new(TransactionId([self.id; 12])),
            ])
            .expect("header");
            if let Some(u) = &self.username {
                m.add(ATTR_USERNAME, u.as_bytes());
            }
            m.add(ATTR_PRIORITY, &1_853_824_767u32.to_be_bytes());
            m.add(ATTR_ICE_CONTROLLING, &[1, 2, 3, 4, 5, 6, 7, 8]);
            if self.nominate {
                m.add(ATTR_USE_CANDIDATE, &[]);
            }
            if let Some(pwd) = self.pwd {
                MessageIntegrity::new_short_term_integrity_with_provider(pwd.to_owned(), &RingCrypto)
                    .add_to(&mut m)
                    .expect("integrity");
            }
            if self.fingerprint {
                FINGERPRINT.add_to(&mut m).expect("fingerprint");
            }
            m.raw
        }
    }

    /// The client's view of a success response (RFC 8445 §7.2.5.2): right
    /// class and transaction, integrity with the SFU's password, fingerprint;
    /// returns XOR-MAPPED-ADDRESS.
    fn client_accepts(resp: &[u8], id: u8, sfu_pwd: &str) -> SocketAddr {
        let mut m = Message::new();
        m.unmarshal_binary(resp).expect("response parses");
        assert_eq!(m.typ, BINDING_SUCCESS);
        assert_eq!(m.transaction_id, TransactionId([id; 12]));
        MessageIntegrity::check(&mut m, sfu_pwd.as_bytes(), &RingCrypto).expect("integrity verifies");
        FINGERPRINT.check(&m).expect("fingerprint verifies");
        let mut xma = XorMappedAddress::default();
        xma.get_from(&m).expect("xor-mapped-address");
        SocketAddr::new(xma.ip, xma.port)
    }

    fn error_code(resp: &[u8]) -> u16 {
        let mut m = Message::new();
        m.unmarshal_binary(resp).expect("error response parses");
        assert_eq!(m.typ.class, CLASS_ERROR_RESPONSE);
        assert!(
            !m.contains(ATTR_MESSAGE_INTEGRITY),
            "an auth failure is answered without integrity"
        );
        FINGERPRINT.check(&m).expect("fingerprint verifies");
        let mut e = ErrorCodeAttribute::default();
        e.get_from(&m).expect("error code");
        e.code.0
    }

    fn events(agent: &mut IceLite) -> Vec<IceEvent> {
        std::iter::from_fn(|| agent.poll_event()).collect()
    }

    #[test]
    fn credentials_are_random_ice_chars_of_rfc_8839_lengths() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = IceCredentials::random(&mut rng);
        let b = IceCredentials::random(&mut rng);
        assert_ne!(a, b);
        for c in [&a, &b] {
            assert_eq!(c.ufrag.len(), UFRAG_LEN);
            assert!(c.ufrag.len() >= 4 && c.pwd.len() >= 22);
            assert!(c
                .ufrag
                .bytes()
                .chain(c.pwd.bytes())
                .all(|ch| ICE_CHARS.contains(&ch)));
        }
        assert!(!format!("{a:?}").contains(&a.pwd), "Debug hides the password");
    }

    #[test]
    fn a_valid_check_gets_a_success_response_a_stun_client_accepts() {
        let sfu = creds(1);
        let now = Instant::now();
        for path in [
            udp(40_000),
            turn(50_000),
            PathAddr::Udp("[2001:db8::5]:4242".parse().expect("v6 addr")),
        ] {
            let mut agent = IceLite::new(sfu.clone(), "cli1");
            agent
                .handle_stun(path, &Check::new(&sfu, "cli1").build(), now)
                .expect("valid check");
            let t = agent.poll_transmit().expect("a response");
            assert_eq!(t.path, path);
            assert_eq!(client_accepts(&t.data, 1, &sfu.pwd), path.addr());
            assert!(agent.poll_transmit().is_none());
            assert_eq!(agent.state(), IceState::New, "no nomination yet");
        }
    }

    #[test]
    fn a_wrong_password_or_remote_ufrag_gets_401() {
        let sfu = creds(1);
        let mut agent = IceLite::new(sfu.clone(), "cli1");
        let now = Instant::now();
        let mut c = Check::new(&sfu, "cli1");
        c.pwd = Some("not-the-password-at-all");
        let err = agent
            .handle_stun(udp(1), &c.build(), now)
            .expect_err("bad integrity");
        assert!(matches!(err, IceError::BadIntegrity), "{err}");
        assert_eq!(error_code(&agent.poll_transmit().expect("401").data), 401);

        let err = agent
            .handle_stun(udp(1), &Check::new(&sfu, "other").build(), now)
            .expect_err("wrong remote ufrag");
        assert!(matches!(err, IceError::WrongRemoteUfrag), "{err}");
        assert_eq!(error_code(&agent.poll_transmit().expect("401").data), 401);
        assert_eq!(agent.selected_path(), None);
        assert!(events(&mut agent).is_empty());
    }

    #[test]
    fn a_request_without_username_or_integrity_gets_400() {
        let sfu = creds(1);
        let mut agent = IceLite::new(sfu.clone(), "cli1");
        let now = Instant::now();
        let mut no_user = Check::new(&sfu, "cli1");
        no_user.username = None;
        let mut no_mi = Check::new(&sfu, "cli1");
        no_mi.pwd = None;
        let mut no_colon = Check::new(&sfu, "cli1");
        no_colon.username = Some(sfu.ufrag.clone());
        for c in [no_user, no_mi, no_colon] {
            let err = agent
                .handle_stun(udp(1), &c.build(), now)
                .expect_err("bad request");
            assert!(matches!(err, IceError::BadRequest(_)), "{err}");
            assert_eq!(error_code(&agent.poll_transmit().expect("400").data), 400);
        }
    }

    #[test]
    fn another_ufrag_is_not_ours_and_gets_no_answer() {
        let sfu = creds(1);
        let stranger = creds(2);
        let mut agent = IceLite::new(sfu, "cli1");
        let err = agent
            .handle_stun(udp(1), &Check::new(&stranger, "cli1").build(), Instant::now())
            .expect_err("not ours");
        assert!(matches!(err, IceError::NotOurUfrag), "{err}");
        assert!(agent.poll_transmit().is_none());
    }

    #[test]
    fn missing_fingerprint_garbage_and_non_requests_are_dropped_with_typed_errors() {
        let sfu = creds(1);
        let mut agent = IceLite::new(sfu.clone(), "cli1");
        let now = Instant::now();
        let mut no_fp = Check::new(&sfu, "cli1");
        no_fp.fingerprint = false;
        let err = agent
            .handle_stun(udp(1), &no_fp.build(), now)
            .expect_err("no fingerprint");
        assert!(matches!(err, IceError::MissingFingerprint), "{err}");

        let mut bad_fp = Check::new(&sfu, "cli1").build();
        let last = bad_fp.len() - 1;
        bad_fp[last] ^= 1;
        let err = agent
            .handle_stun(udp(1), &bad_fp, now)
            .expect_err("bad fingerprint");
        assert!(matches!(err, IceError::BadFingerprint), "{err}");

        let err = agent
            .handle_stun(udp(1), b"\x16\xfe\xfd not stun", now)
            .expect_err("garbage");
        assert!(matches!(err, IceError::NotStun), "{err}");

        // A STUN header whose attribute claims more bytes than there are.
        let mut torn = Check::new(&sfu, "cli1").build();
        torn[22..24].copy_from_slice(&200u16.to_be_bytes());
        let err = agent.handle_stun(udp(1), &torn, now).expect_err("torn attribute");
        assert!(matches!(err, IceError::Malformed(_)), "{err}");

        let mut ind = Message::new();
        ind.build(&[
            Box::new(MessageType::new(METHOD_BINDING, CLASS_INDICATION)) as Box<dyn Setter>,
            Box::new(TransactionId([3; 12])),
            Box::new(FINGERPRINT),
        ])
        .expect("indication");
        let err = agent.handle_stun(udp(1), &ind.raw, now).expect_err("indication");
        assert!(matches!(err, IceError::NotBindingRequest), "{err}");
        assert!(agent.poll_transmit().is_none(), "nothing above is answered");
    }

    #[test]
    fn nomination_selects_the_path_and_a_later_nomination_moves_it() {
        let sfu = creds(1);
        let mut agent = IceLite::new(sfu.clone(), "cli1");
        let now = Instant::now();
        agent
            .handle_stun(udp(1), &Check::new(&sfu, "cli1").build(), now)
            .expect("check");
        assert_eq!(
            agent.selected_path(),
            None,
            "an unnominated check selects nothing"
        );
        agent
            .handle_stun(udp(1), &Check::new(&sfu, "cli1").nominated().build(), now)
            .expect("nominated check");
        assert_eq!(agent.selected_path(), Some(udp(1)));
        assert_eq!(
            events(&mut agent),
            [IceEvent::Selected(udp(1)), IceEvent::State(IceState::Connected)]
        );
        // An unnominated check elsewhere is answered but moves nothing.
        agent
            .handle_stun(turn(9), &Check::new(&sfu, "cli1").build(), now)
            .expect("check");
        assert_eq!(agent.selected_path(), Some(udp(1)));
        // The browser falls back to its TURN relay and nominates it.
        agent
            .handle_stun(turn(9), &Check::new(&sfu, "cli1").nominated().build(), now)
            .expect("nominated relay check");
        assert_eq!(agent.selected_path(), Some(turn(9)));
        assert_eq!(events(&mut agent), [IceEvent::Selected(turn(9))]);
        // ... and back to UDP.
        agent
            .handle_stun(udp(1), &Check::new(&sfu, "cli1").nominated().build(), now)
            .expect("nominated check");
        assert_eq!(agent.selected_path(), Some(udp(1)));
        assert_eq!(agent.poll_transmit().map(|t| t.path), Some(udp(1)));
    }

    #[test]
    fn consent_lapses_to_disconnected_then_failed_without_checks() {
        let sfu = creds(1);
        let mut agent = IceLite::new(sfu.clone(), "cli1");
        let t0 = Instant::now();
        assert_eq!(agent.poll_timeout(), None);
        agent
            .handle_stun(udp(1), &Check::new(&sfu, "cli1").nominated().build(), t0)
            .expect("nominated check");
        events(&mut agent);
        // A consent check every 5 s keeps it connected.
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_secs(5);
            agent.handle_timeout(now);
            agent
                .handle_stun(udp(1), &Check::new(&sfu, "cli1").build(), now)
                .expect("consent check");
        }
        assert_eq!(agent.state(), IceState::Connected);
        // Checks on another path do not refresh the selected path's consent.
        let last = now;
        assert_eq!(agent.poll_timeout(), Some(last + DISCONNECTED_AFTER));
        now += DISCONNECTED_AFTER;
        agent
            .handle_stun(udp(2), &Check::new(&sfu, "cli1").build(), now)
            .expect("check");
        agent.handle_timeout(now);
        assert_eq!(agent.state(), IceState::Disconnected);
        assert_eq!(events(&mut agent), [IceEvent::State(IceState::Disconnected)]);
        // A check on the selected path brings it back.
        agent
            .handle_stun(udp(1), &Check::new(&sfu, "cli1").build(), now)
            .expect("check");
        assert_eq!(events(&mut agent), [IceEvent::State(IceState::Connected)]);
        let last = now;
        agent.handle_timeout(last + CONSENT_TIMEOUT - Duration::from_millis(1));
        assert_eq!(agent.state(), IceState::Disconnected);
        assert_eq!(agent.poll_timeout(), Some(last + CONSENT_TIMEOUT));
        agent.handle_timeout(last + CONSENT_TIMEOUT);
        assert_eq!(agent.state(), IceState::Failed);
        assert_eq!(
            events(&mut agent),
            [
                IceEvent::State(IceState::Disconnected),
                IceEvent::State(IceState::Failed)
            ]
        );
        assert_eq!(agent.poll_timeout(), None);
        // A late check with the old credentials does not revive it.
        agent
            .handle_stun(
                udp(1),
                &Check::new(&sfu, "cli1").nominated().build(),
                last + CONSENT_TIMEOUT,
            )
            .expect("still a valid check");
        assert_eq!(agent.state(), IceState::Failed);
    }

    #[test]
    fn a_restart_keeps_the_old_path_until_the_new_credentials_are_proven() {
        let old = creds(1);
        let new = creds(2);
        let mut agent = IceLite::new(old.clone(), "cli1");
        let now = Instant::now();
        agent
            .handle_stun(udp(1), &Check::new(&old, "cli1").nominated().build(), now)
            .expect("nominated check");
        events(&mut agent);
        agent.restart(new.clone(), "cli2");
        assert_eq!(agent.local_credentials(), &new);
        assert_eq!(
            agent.local_ufrags().collect::<Vec<_>>(),
            [&*old.ufrag, &*new.ufrag]
        );
        // Until the browser checks with the new credentials, the old ones work
        // and media stays on the old path.
        agent
            .handle_stun(udp(1), &Check::new(&old, "cli1").build(), now)
            .expect("old creds still valid");
        assert_eq!(agent.selected_path(), Some(udp(1)));
        // The new password with the old remote ufrag is refused.
        let err = agent
            .handle_stun(udp(2), &Check::new(&new, "cli1").build(), now)
            .expect_err("mixed");
        assert!(matches!(err, IceError::WrongRemoteUfrag), "{err}");
        while agent.poll_transmit().is_some() {}
        // The first check with the new credentials (not nominated) completes
        // the restart without moving media.
        agent
            .handle_stun(udp(2), &Check::new(&new, "cli2").build(), now)
            .expect("new creds");
        assert_eq!(
            client_accepts(&agent.poll_transmit().expect("answer").data, 1, &new.pwd),
            udp(2).addr()
        );
        assert_eq!(events(&mut agent), [IceEvent::RestartCompleted]);
        assert_eq!(agent.selected_path(), Some(udp(1)));
        assert_eq!(agent.local_ufrags().collect::<Vec<_>>(), [&*new.ufrag]);
        // From now on the old credentials are not ours.
        let err = agent
            .handle_stun(udp(1), &Check::new(&old, "cli1").build(), now)
            .expect_err("old creds");
        assert!(matches!(err, IceError::NotOurUfrag), "{err}");
        // The new nomination moves media.
        agent
            .handle_stun(udp(2), &Check::new(&new, "cli2").nominated().build(), now)
            .expect("nominated");
        assert_eq!(agent.selected_path(), Some(udp(2)));
        assert_eq!(agent.state(), IceState::Connected);
    }

    #[test]
    fn a_failed_agent_recovers_through_a_restart() {
        let old = creds(1);
        let new = creds(2);
        let mut agent = IceLite::new(old.clone(), "cli1");
        let t0 = Instant::now();
        agent
            .handle_stun(udp(1), &Check::new(&old, "cli1").nominated().build(), t0)
            .expect("nominated");
        let now = t0 + CONSENT_TIMEOUT;
        agent.handle_timeout(now);
        assert_eq!(agent.state(), IceState::Failed);
        events(&mut agent);
        agent.restart(new.clone(), "cli2");
        agent
            .handle_stun(turn(3), &Check::new(&new, "cli2").nominated().build(), now)
            .expect("restart check");
        assert_eq!(
            events(&mut agent),
            [
                IceEvent::RestartCompleted,
                IceEvent::State(IceState::New),
                IceEvent::Selected(turn(3)),
                IceEvent::State(IceState::Connected)
            ]
        );
        assert_eq!(agent.selected_path(), Some(turn(3)));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let sfu = creds(1);
            let mut agent = IceLite::new(sfu, "cli1");
            let _ = agent.handle_stun(udp(1), &data, Instant::now());
        }

        /// Corrupting a valid check anywhere gives an error or a valid answer,
        /// never a panic (reaches deeper than random bytes, which rarely pass
        /// the header checks).
        #[test]
        fn corrupted_checks_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            fix_length in any::<bool>(),
        ) {
            let sfu = creds(1);
            let mut agent = IceLite::new(sfu.clone(), "cli1");
            let mut m = Check::new(&sfu, "cli1").nominated().build();
            for (at, v) in flips {
                let i = at.index(m.len());
                m[i] = v;
            }
            m.truncate(20 + cut.index(m.len() - 19));
            if fix_length {
                // Keep the length field consistent so the parser goes deeper.
                let len = u16::try_from(m.len() - 20).expect("short");
                m[2..4].copy_from_slice(&len.to_be_bytes());
                m[0] &= 0x3f;
                m[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            }
            let _ = agent.handle_stun(udp(1), &m, Instant::now());
        }
    }
}
