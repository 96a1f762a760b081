//! The sans-IO TURN server core, in the shape of Firezone's relay: every
//! side effect comes back as a value.
//!
//! Inputs, each with `now` (Unix milliseconds):
//! * [`TurnCore::handle_client`]: a datagram or stream frame from a client.
//!   ChannelData and Send indications for a permitted peer come back at once
//!   as a [`ToPeer`] (which part of the input to send from which relay
//!   address to which peer), so the shell relays them straight from its
//!   receive buffer, without a copy or an allocation.
//!   A Send indication is read in place (`indication.rs`), never through
//!   the general STUN parser.
//! * [`TurnCore::handle_peer`]: a datagram a relay address received. It
//!   comes back as a [`ToClient`]: the shell writes the ChannelData header
//!   (over a channel) or the Data indication around the payload straight
//!   into its send buffer, so nothing is allocated for it.
//! * [`TurnCore::handle_relay_opened`]: the shell's answer to
//!   [`Command::OpenRelay`]. An allocation is answered only once its relay
//!   address is open; if the port cannot be opened another one is tried.
//! * [`TurnCore::handle_connection_closed`], [`TurnCore::handle_timeout`].
//!
//! Outputs: [`TurnCore::poll_command`] until it returns `None` after every
//! input (and answer each `OpenRelay` before polling on), and
//! [`TurnCore::poll_timeout`]. The core never binds a socket, never spawns,
//! never reads a clock; all randomness comes from the seed given to `new`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::error_code::{ErrorCode, ErrorCodeAttribute};
use stun::message::*;
use stun::textattrs::TextAttribute;
use stun::uattrs::UnknownAttributes;
use stun::xoraddr::XorMappedAddress;

pub use crate::addr::{ClientAddr, PeerAddr, RelayAddr};
use crate::auth::{rest_keys, NonceError, NonceKey};
use crate::indication::{self, SendIndication};
use crate::metrics::{auth_reason, drop_reason, quota, Metrics};
use crate::quota::{Quotas, TokenBucket, UnauthLimiter};
use crate::relay::{Ledger, LedgerRefusal, PeerRules, PortPool};
use crate::wire::{self, IntegrityKind, Kind, ParseError, Parsed};

/// Unix time in milliseconds.
pub type Millis = u64;

/// Default allocation lifetime (RFC 8656).
pub const DEFAULT_LIFETIME_S: u64 = 600;
/// Permission lifetime (RFC 8656).
pub const PERMISSION_LIFETIME_S: u64 = 300;
/// Channel binding lifetime (RFC 8656).
pub const CHANNEL_LIFETIME_S: u64 = 600;
/// How many ports an Allocate tries when the shell cannot open them (other
/// processes crowd the range) before it is answered 508.
pub const OPEN_ATTEMPTS: u8 = 16;

const PROTO_UDP: u8 = 17;
const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;
const ATTR_ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8000);

/// The transport between a client and the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// A client's 5-tuple as seen by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: ClientAddr,
    pub server: SocketAddr,
}

/// A side effect for the shell to carry out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start relaying on `relay` (bind its UDP socket, or register the
    /// virtual port). Answer with [`TurnCore::handle_relay_opened`] before
    /// polling the next command.
    OpenRelay { relay: RelayAddr },
    /// Stop relaying on `relay` (close its socket); it was opened before and
    /// is freed exactly once. Its permissions and channels go with it.
    FreeRelay { relay: RelayAddr },
    /// A permission for `peer` on `relay` was installed.
    AddPermission { relay: RelayAddr, peer: IpAddr },
    /// A permission expired.
    RemovePermission { relay: RelayAddr, peer: IpAddr },
    /// Channel `number` of `relay` now leads to `peer`.
    BindChannel {
        relay: RelayAddr,
        peer: PeerAddr,
        number: u16,
    },
    /// A channel binding expired.
    UnbindChannel {
        relay: RelayAddr,
        peer: PeerAddr,
        number: u16,
    },
    /// Send `payload` to a client (responses; relayed data comes back from
    /// `handle_client` / `handle_peer` instead).
    SendToClient { to: FiveTuple, payload: Vec<u8> },
}

/// A client's datagram to relay: send `input[payload]` from `relay` to `peer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToPeer {
    pub relay: RelayAddr,
    pub peer: PeerAddr,
    /// Where the application data lies in the input given to
    /// [`TurnCore::handle_client`].
    pub payload: Range<usize>,
}

/// A peer's datagram to relay to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToClient {
    pub to: FiveTuple,
    pub framing: Framing,
}

/// How a peer's datagram reaches the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// As ChannelData on this channel number.
    Channel(u16),
    /// As a Data indication (no channel bound to the peer), with the
    /// transaction id the core drew for it.
    DataIndication { peer: PeerAddr, transaction: [u8; 12] },
}

impl ToClient {
    /// Appends the message carrying `data` to `out`: ChannelData (padded to
    /// 4 bytes on streams, RFC 8656 §12.5) or a Data indication.
    pub fn encode_into(&self, data: &[u8], out: &mut Vec<u8>) {
        match self.framing {
            Framing::Channel(number) => {
                wire::write_channel_data(number, data, self.to.transport != Transport::Udp, out)
            }
            Framing::DataIndication { peer, transaction } => {
                indication::write_data_indication(transaction, peer.0, data, out)
            }
        }
    }
}

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub realm: String,
    pub secrets: Vec<Vec<u8>>,
    pub nonce_ttl_s: u64,
    pub max_lifetime_s: u64,
    pub quotas: Quotas,
    pub software: Option<String>,
}

impl CoreConfig {
    pub fn from_turn_config(c: &crate::TurnConfig) -> Self {
        CoreConfig {
            realm: c.realm.clone(),
            secrets: c.auth_secrets.clone(),
            nonce_ttl_s: c.nonce_ttl.as_secs().max(1),
            max_lifetime_s: c.max_lifetime.as_secs().max(DEFAULT_LIFETIME_S),
            quotas: c.quotas.clone(),
            software: c.software.clone(),
        }
    }
}

/// Where the core's relay addresses come from and which peers they reach.
#[derive(Clone, Debug)]
pub struct RelaySpace {
    /// The IP announced in relay addresses (its family is the only one
    /// allocations can have).
    pub ip: IpAddr,
    /// The ports this core hands out.
    pub ports: PortPool,
    pub peers: PeerRules,
}

/// What the cores of all workers share: metrics, the quota ledger and the
/// nonce key (a nonce issued by one worker is good at every other).
#[derive(Clone, Debug)]
pub struct CoreShared {
    pub metrics: Metrics,
    pub ledger: Arc<Ledger>,
    pub nonce: NonceKey,
}

impl CoreShared {
    pub fn new(metrics: Metrics, nonce_key: [u8; 32]) -> Self {
        CoreShared {
            metrics,
            ledger: Arc::default(),
            nonce: NonceKey::new(nonce_key),
        }
    }
}

#[derive(Clone, Debug)]
struct Channel {
    peer: PeerAddr,
    expires: Millis,
}

/// What is needed to answer an Allocate once its relay address is open.
#[derive(Debug)]
struct PendingAnswer {
    txn: TransactionId,
    auth: Authed,
    lifetime: u64,
    /// Ports tried so far.
    attempts: u8,
    /// Relay addresses still being opened (1, or 2 with a reservation).
    awaiting: u8,
}

#[derive(Debug)]
struct Allocation {
    relay: RelayAddr,
    username: String,
    expires: Millis,
    /// Transaction of the Allocate that created it (retransmissions get the
    /// same success response again).
    alloc_txn: TransactionId,
    /// RESERVATION-TOKEN handed out with this allocation (EVEN-PORT R=1).
    token: Option<[u8; 8]>,
    /// Whether the port had to be even (a retry keeps it so).
    even_port: bool,
    /// Set while the relay address is being opened; the client is answered
    /// when it is cleared.
    opening: Option<PendingAnswer>,
    permissions: HashMap<IpAddr, Millis>,
    channels: HashMap<u16, Channel>,
    channel_of_peer: HashMap<PeerAddr, u16>,
    bucket: Option<TokenBucket>,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Millis) -> bool {
        self.permissions.get(&ip).is_some_and(|&e| e > now)
    }

    /// Relaying needs a live, open allocation.
    fn live(&self, now: Millis) -> bool {
        self.expires > now && self.opening.is_none()
    }
}

#[derive(Debug)]
struct Reservation {
    relay: RelayAddr,
    username: String,
    expires: Millis,
}

/// How long a reserved relay address (EVEN-PORT R=1) is held.
pub const RESERVATION_LIFETIME_S: u64 = 30;

/// The key and attribute kind that authenticated a request; responses are
/// protected the same way.
#[derive(Clone, Debug)]
struct Authed {
    username: String,
    key: Vec<u8>,
    kind: IntegrityKind,
}

/// What a response answers: the request's method and transaction.
#[derive(Clone, Copy, Debug)]
struct ReplyTo {
    method: Method,
    txn: TransactionId,
}

impl ReplyTo {
    fn of(m: &Message) -> Self {
        ReplyTo {
            method: m.typ.method,
            txn: m.transaction_id,
        }
    }
}

/// A snapshot of table sizes (for tests and introspection).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocations: usize,
    pub permissions: usize,
    pub channels: usize,
}

/// Gauge values this core has added to the shared gauges (several cores
/// share one set of gauges, so each adds its own changes).
#[derive(Clone, Copy, Debug, Default)]
struct Reported {
    allocations: i64,
    permissions: i64,
    channels: i64,
}

/// The TURN server state machine.
pub struct TurnCore {
    cfg: CoreConfig,
    /// Announced relay IP, port pool and peer rules.
    space: RelaySpace,
    nonce: NonceKey,
    limiter: UnauthLimiter,
    metrics: Metrics,
    ledger: Arc<Ledger>,
    rng: StdRng,
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<RelayAddr, FiveTuple>,
    /// Allocations per user on this core (the ledger holds the server's).
    per_user: HashMap<String, u32>,
    /// Relay addresses held for a later Allocate with RESERVATION-TOKEN.
    reservations: HashMap<[u8; 8], Reservation>,
    /// Relay addresses asked to be opened and not yet answered, with the
    /// allocation waiting for them. One whose allocation is gone by the time
    /// it opens is freed at once.
    opening: HashMap<RelayAddr, FiveTuple>,
    n_permissions: usize,
    n_channels: usize,
    reported: Reported,
    commands: VecDeque<Command>,
    last_sweep: Millis,
}

impl std::fmt::Debug for TurnCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCore").field("stats", &self.stats()).finish()
    }
}

fn parse_error_reason(e: ParseError) -> &'static str {
    match e {
        ParseError::Malformed => drop_reason::MALFORMED,
        ParseError::BadFingerprint => drop_reason::BAD_FINGERPRINT,
    }
}

fn method_label(m: Method) -> &'static str {
    match m {
        METHOD_BINDING => "binding",
        METHOD_ALLOCATE => "allocate",
        METHOD_REFRESH => "refresh",
        METHOD_CREATE_PERMISSION => "create_permission",
        METHOD_CHANNEL_BIND => "channel_bind",
        _ => "other",
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

/// Comprehension-required attributes we understand in requests.
fn known_required(t: AttrType) -> bool {
    matches!(
        t,
        ATTR_MAPPED_ADDRESS
            | ATTR_CHANGE_REQUEST
            | ATTR_USERNAME
            | ATTR_MESSAGE_INTEGRITY
            | ATTR_ERROR_CODE
            | ATTR_UNKNOWN_ATTRIBUTES
            | ATTR_CHANNEL_NUMBER
            | ATTR_LIFETIME
            | ATTR_XOR_PEER_ADDRESS
            | ATTR_DATA
            | ATTR_REALM
            | ATTR_NONCE
            | ATTR_XOR_RELAYED_ADDRESS
            | ATTR_REQUESTED_ADDRESS_FAMILY
            | ATTR_EVEN_PORT
            | ATTR_REQUESTED_TRANSPORT
            | ATTR_DONT_FRAGMENT
            | ATTR_MESSAGE_INTEGRITY_SHA256
            | ATTR_PASSWORD_ALGORITHM
            | ATTR_USER_HASH
            | ATTR_XORMAPPED_ADDRESS
            | ATTR_RESERVATION_TOKEN
            | ATTR_PRIORITY
            | ATTR_USE_CANDIDATE
    )
}

/// Decodes an XOR-address attribute value strictly (exact lengths).
pub fn decode_xor_addr(v: &[u8], txn: &TransactionId) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (v.get(1)?, v.len()) {
        (&FAMILY_V4, 8) => {
            let mut ip = [0u8; 4];
            for i in 0..4 {
                ip[i] = v[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        (&FAMILY_V6, 20) => {
            let mut ip = [0u8; 16];
            for i in 0..16 {
                let k = if i < 4 { cookie[i] } else { txn.0[i - 4] };
                ip[i] = v[4 + i] ^ k;
            }
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        _ => None,
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

impl From<&Message> for ReplyTo {
    fn from(m: &Message) -> Self {
        ReplyTo::of(m)
    }
}

fn attr(m: &Message, t: AttrType) -> Option<&[u8]> {
    m.attributes
        .0
        .iter()
        .find(|a| a.typ == t)
        .map(|a| a.value.as_slice())
}

fn text_attr(m: &Message, t: AttrType) -> Option<String> {
    attr(m, t)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

/// Outcome of a request handler: an error code to answer, or done.
type Handled = Result<(), u16>;

impl TurnCore {
    /// A core handing out relay addresses from `space`. `seed` provides all
    /// randomness of this core (transaction ids, tokens, hash seeds); `now`
    /// is Unix milliseconds.
    pub fn new(cfg: CoreConfig, space: RelaySpace, shared: CoreShared, seed: [u8; 32], now: Millis) -> Self {
        let mut rng = StdRng::from_seed(seed);
        let limiter = UnauthLimiter::new(&cfg.quotas, rng.random(), now);
        TurnCore {
            cfg,
            space,
            nonce: shared.nonce,
            limiter,
            metrics: shared.metrics,
            ledger: shared.ledger,
            rng,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            reservations: HashMap::new(),
            opening: HashMap::new(),
            n_permissions: 0,
            n_channels: 0,
            reported: Reported::default(),
            commands: VecDeque::new(),
            last_sweep: now,
        }
    }

    /// The next side effect to carry out.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`TurnCore::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Millis {
        self.last_sweep.saturating_add(1000)
    }

    /// Table sizes.
    pub fn stats(&self) -> Stats {
        Stats {
            allocations: self.allocations.len(),
            permissions: self.n_permissions,
            channels: self.n_channels,
        }
    }

    /// The relay address of the allocation on `ft`, if any.
    pub fn relay_addr(&self, ft: &FiveTuple) -> Option<RelayAddr> {
        self.allocations.get(ft).map(|a| a.relay)
    }

    /// The announced relay IP.
    pub fn relay_ip(&self) -> IpAddr {
        self.space.ip
    }

    // ---------------------------------------------------------------- inputs

    /// A datagram (UDP) or a complete frame (TCP/TLS) from a client. Returns
    /// the part of `data` to relay to a peer, if any.
    pub fn handle_client(&mut self, ft: FiveTuple, data: &[u8], now: Millis) -> Option<ToPeer> {
        match wire::classify(data) {
            Kind::Stun if indication::is_send_indication(data) => {
                match indication::parse_send_indication(data) {
                    Ok(s) => self.handle_send(ft, s, now),
                    Err(e) => {
                        self.metrics.drop(parse_error_reason(e));
                        None
                    }
                }
            }
            Kind::Stun => match wire::parse_stun(data) {
                Ok(p) => self.handle_stun(ft, p, now),
                Err(e) => {
                    self.metrics.drop(parse_error_reason(e));
                    None
                }
            },
            Kind::ChannelData => self.handle_channel_data(ft, data, now),
            Kind::Garbage => {
                self.metrics.drop(drop_reason::MALFORMED);
                None
            }
        }
    }

    /// A datagram received on relay address `relay` from `peer`. Returns the
    /// client to relay it to and how to frame it (nothing is queued).
    pub fn handle_peer(
        &mut self,
        relay: RelayAddr,
        peer: PeerAddr,
        data: &[u8],
        now: Millis,
    ) -> Option<ToClient> {
        let Some(&ft) = self.by_relay.get(&relay) else {
            self.metrics.drop(drop_reason::NO_ALLOCATION);
            return None;
        };
        let a = self.allocations.get_mut(&ft)?;
        if !a.live(now) {
            self.metrics.drop(drop_reason::NO_ALLOCATION);
            return None;
        }
        if !a.permitted(peer.ip(), now) {
            self.metrics.drop(drop_reason::NO_PERMISSION);
            return None;
        }
        if let Some(b) = a.bucket.as_mut() {
            if !b.try_take(data.len() as u64, now) {
                self.metrics.quota(quota::BANDWIDTH);
                return None;
            }
        }
        let channel = a
            .channel_of_peer
            .get(&peer)
            .copied()
            .filter(|n| a.channels.get(n).is_some_and(|c| c.expires > now));
        let framing = match channel {
            Some(number) => Framing::Channel(number),
            None if data.len() > indication::MAX_DATA_INDICATION_PAYLOAD => {
                // Its length would overflow the indication's length field.
                self.metrics.drop(drop_reason::MALFORMED);
                return None;
            }
            None => Framing::DataIndication {
                peer,
                transaction: self.rng.random(),
            },
        };
        self.metrics.relayed(false, data.len());
        Some(ToClient { to: ft, framing })
    }

    /// The shell's answer to [`Command::OpenRelay`]: `opened` is false when
    /// the port could not be opened (another process holds it).
    pub fn handle_relay_opened(&mut self, relay: RelayAddr, opened: bool, now: Millis) {
        let Some(ft) = self.opening.remove(&relay) else {
            return;
        };
        let owner = self.by_relay.get(&relay) == Some(&ft)
            || self
                .reservations
                .values()
                .any(|r| r.relay == relay && self.allocations.contains_key(&ft));
        if !owner {
            // Its allocation went away meanwhile (the other half of a pair
            // failed): nothing will use it.
            if opened {
                self.free_relay(relay);
            } else {
                self.space.ports.refuse(relay.port(), now);
            }
            return;
        }
        if opened {
            self.relay_opened(ft, now);
        } else {
            self.space.ports.refuse(relay.port(), now);
            self.retry_open(ft, relay);
        }
    }

    /// A TCP/TLS connection closed: its allocation goes with it.
    pub fn handle_connection_closed(&mut self, ft: FiveTuple) {
        self.remove_allocation(&ft);
    }

    /// Expires allocations, reservations, permissions and channels.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.last_sweep = now;
        let expired: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(ft, _)| *ft)
            .collect();
        for ft in expired {
            self.remove_allocation(&ft);
        }
        let stale: Vec<[u8; 8]> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            if let Some(r) = self.reservations.remove(&t) {
                self.ledger.give_back_reservation();
                self.release_relay(r.relay);
            }
        }
        self.space.ports.expire(now);
        let mut removed_perms = 0;
        let mut removed_chans = 0;
        for a in self.allocations.values_mut() {
            let relay = a.relay;
            let commands = &mut self.commands;
            let before = a.permissions.len();
            a.permissions.retain(|ip, e| {
                let keep = *e > now;
                if !keep {
                    commands.push_back(Command::RemovePermission { relay, peer: *ip });
                }
                keep
            });
            removed_perms += before - a.permissions.len();
            let dead: Vec<u16> = a
                .channels
                .iter()
                .filter(|(_, c)| c.expires <= now)
                .map(|(n, _)| *n)
                .collect();
            for number in dead {
                if let Some(c) = a.channels.remove(&number) {
                    a.channel_of_peer.remove(&c.peer);
                    removed_chans += 1;
                    commands.push_back(Command::UnbindChannel {
                        relay,
                        peer: c.peer,
                        number,
                    });
                }
            }
        }
        self.n_permissions -= removed_perms;
        self.n_channels -= removed_chans;
        self.sync_gauges();
    }

    // ------------------------------------------------------------ internals

    /// Adds this core's changes to the shared gauges.
    fn sync_gauges(&mut self) {
        let now = Reported {
            allocations: self.allocations.len() as i64,
            permissions: self.n_permissions as i64,
            channels: self.n_channels as i64,
        };
        self.metrics
            .allocations
            .add(now.allocations - self.reported.allocations);
        self.metrics
            .permissions
            .add(now.permissions - self.reported.permissions);
        self.metrics.channels.add(now.channels - self.reported.channels);
        self.reported = now;
    }

    /// Closes an open relay address and gives its port back.
    fn free_relay(&mut self, relay: RelayAddr) {
        self.commands.push_back(Command::FreeRelay { relay });
        self.space.ports.release(relay.port());
    }

    /// A relay address nothing owns any more: freed now if open, or when
    /// its opening is answered.
    fn release_relay(&mut self, relay: RelayAddr) {
        if !self.opening.contains_key(&relay) {
            self.free_relay(relay);
        }
    }

    fn remove_allocation(&mut self, ft: &FiveTuple) {
        let Some(a) = self.allocations.remove(ft) else {
            return;
        };
        self.by_relay.remove(&a.relay);
        self.release_relay(a.relay);
        self.ledger.give_back_allocation(&a.username);
        self.n_permissions -= a.permissions.len();
        self.n_channels -= a.channels.len();
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
        self.sync_gauges();
    }

    /// One awaited relay address of `ft`'s allocation is open; the client
    /// is answered when the last one is.
    fn relay_opened(&mut self, ft: FiveTuple, now: Millis) {
        let Some(a) = self.allocations.get_mut(&ft) else {
            return;
        };
        let Some(p) = a.opening.as_mut() else {
            return;
        };
        p.awaiting = p.awaiting.saturating_sub(1);
        if p.awaiting > 0 {
            return;
        }
        let Some(p) = a.opening.take() else {
            return;
        };
        let (relay, token) = (a.relay, a.token);
        let lifetime = a.expires.saturating_sub(now).div_ceil(1000).min(p.lifetime);
        let to = ReplyTo {
            method: METHOD_ALLOCATE,
            txn: p.txn,
        };
        self.allocate_success(ft, to, &p.auth, relay, lifetime, token);
    }

    /// `failed` could not be opened for `ft`'s allocation: another port, or
    /// 508 after [`OPEN_ATTEMPTS`] (or at once for a reserved pair).
    fn retry_open(&mut self, ft: FiveTuple, failed: RelayAddr) {
        let Some(a) = self.allocations.get_mut(&ft) else {
            return;
        };
        let Some(p) = a.opening.as_mut() else {
            return;
        };
        p.attempts += 1;
        let single = a.token.is_none() && a.relay == failed;
        let next = if single && p.attempts < OPEN_ATTEMPTS {
            self.space.ports.take(a.even_port)
        } else {
            None
        };
        if let Some(port) = next {
            let relay = RelayAddr(SocketAddr::new(self.space.ip, port));
            a.relay = relay;
            self.by_relay.remove(&failed);
            self.by_relay.insert(relay, ft);
            self.opening.insert(relay, ft);
            self.commands.push_back(Command::OpenRelay { relay });
            return;
        }
        // Give up: answer 508 and undo the allocation (and its reservation).
        let Some(p) = a.opening.take() else {
            return;
        };
        let (relay, token) = (a.relay, a.token);
        if let Some(r) = token.and_then(|t| self.reservations.remove(&t)) {
            self.ledger.give_back_reservation();
            if r.relay != failed {
                self.release_relay(r.relay);
            }
        }
        if relay == failed {
            // Never opened: nothing to free, and the port is refused already.
            self.by_relay.remove(&relay);
            self.remove_unopened_allocation(&ft);
        } else {
            self.remove_allocation(&ft);
        }
        self.metrics.quota(quota::RELAY_PORTS);
        let to = ReplyTo {
            method: METHOD_ALLOCATE,
            txn: p.txn,
        };
        self.respond_error(ft, to, 508, Some(&p.auth), |_| {});
    }

    /// Removes an allocation whose relay address never opened.
    fn remove_unopened_allocation(&mut self, ft: &FiveTuple) {
        let Some(a) = self.allocations.remove(ft) else {
            return;
        };
        self.ledger.give_back_allocation(&a.username);
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
        self.sync_gauges();
    }

    fn handle_stun(&mut self, ft: FiveTuple, p: Parsed, now: Millis) -> Option<ToPeer> {
        let class = p.msg.typ.class;
        let method = p.msg.typ.method;
        if class == CLASS_REQUEST {
            self.metrics
                .requests
                .with_label_values(&[method_label(method)])
                .inc();
            self.handle_request(ft, p, now);
            None
        } else {
            // Send indications never get here (read in place above).
            self.metrics.drop(drop_reason::UNEXPECTED);
            None
        }
    }

    fn handle_request(&mut self, ft: FiveTuple, p: Parsed, now: Millis) {
        let method = p.msg.typ.method;
        let unknown: Vec<AttrType> = p
            .msg
            .attributes
            .0
            .iter()
            .map(|a| a.typ)
            .filter(|t| t.required() && !known_required(*t))
            .collect();
        if !unknown.is_empty() {
            if self.unauth_allowed(ft, now) {
                self.respond_error(ft, &p.msg, 420, None, |m| {
                    let _ = UnknownAttributes(unknown).add_to(m);
                });
            }
            return;
        }
        match method {
            METHOD_BINDING => {
                if self.unauth_allowed(ft, now) {
                    self.respond(ft, &p.msg, CLASS_SUCCESS_RESPONSE, None, |m| {
                        let _ = XorMappedAddress {
                            ip: ft.client.ip(),
                            port: ft.client.port(),
                        }
                        .add_to(m);
                    });
                }
            }
            METHOD_ALLOCATE | METHOD_REFRESH | METHOD_CREATE_PERMISSION | METHOD_CHANNEL_BIND => {
                let Some(auth) = self.authenticate(ft, &p, now) else {
                    return;
                };
                let result = match method {
                    METHOD_ALLOCATE => self.allocate(ft, &p.msg, &auth, now),
                    METHOD_REFRESH => self.refresh(ft, &p.msg, &auth, now),
                    METHOD_CREATE_PERMISSION => self.create_permission(ft, &p.msg, &auth, now),
                    _ => self.channel_bind(ft, &p.msg, &auth, now),
                };
                if let Err(code) = result {
                    self.respond_error(ft, &p.msg, code, Some(&auth), |m| {
                        if code == 420 {
                            let _ = UnknownAttributes(vec![ATTR_DONT_FRAGMENT]).add_to(m);
                        }
                    });
                }
            }
            _ => {
                if self.unauth_allowed(ft, now) {
                    self.respond_error(ft, &p.msg, 400, None, |_| {});
                }
            }
        }
    }

    /// Rate limit for anything answered without valid credentials.
    ///
    /// Only UDP is limited: a UDP source address can be spoofed (floods,
    /// reflection), a TCP/TLS peer has completed a handshake, and a stream
    /// client would wait forever for a silently dropped answer since nothing
    /// retransmits over a reliable transport. Streams are bounded by the
    /// connection limit and TCP flow control instead.
    fn unauth_allowed(&mut self, ft: FiveTuple, now: Millis) -> bool {
        if ft.transport != Transport::Udp || self.limiter.allow(ft.client.ip(), now) {
            true
        } else {
            self.metrics.quota(quota::UNAUTH_RATE);
            false
        }
    }

    fn challenge(&mut self, ft: FiveTuple, req: &Message, code: u16, now: Millis) {
        if !self.unauth_allowed(ft, now) {
            return;
        }
        let nonce = self.nonce.issue(ft.client.ip(), now / 1000);
        let realm = self.cfg.realm.clone();
        self.respond_error(ft, req, code, None, |m| {
            let _ = TextAttribute::new(ATTR_REALM, realm).add_to(m);
            let _ = TextAttribute::new(ATTR_NONCE, nonce).add_to(m);
        });
    }

    /// Long-term credential check (RFC 8489 §9.2.4). On failure the answer
    /// is queued (or dropped by the rate limit) and `None` returned. Nothing
    /// is stored for a request that fails.
    fn authenticate(&mut self, ft: FiveTuple, p: &Parsed, now: Millis) -> Option<Authed> {
        let req = &p.msg;
        let Some(ig) = &p.integrity else {
            self.challenge(ft, req, 401, now);
            return None;
        };
        let (Some(username), Some(realm), Some(nonce)) = (
            text_attr(req, ATTR_USERNAME),
            text_attr(req, ATTR_REALM),
            text_attr(req, ATTR_NONCE),
        ) else {
            self.metrics.auth_failure(auth_reason::MISSING_ATTRIBUTES);
            if self.unauth_allowed(ft, now) {
                self.respond_error(ft, req, 400, None, |_| {});
            }
            return None;
        };
        match self
            .nonce
            .check(&nonce, ft.client.ip(), now / 1000, self.cfg.nonce_ttl_s)
        {
            Ok(()) => {}
            Err(NonceError::Stale) => {
                self.metrics.auth_failure(auth_reason::STALE_NONCE);
                self.challenge(ft, req, 438, now);
                return None;
            }
            Err(NonceError::Invalid) => {
                self.metrics.auth_failure(auth_reason::BAD_NONCE);
                self.challenge(ft, req, 401, now);
                return None;
            }
        }
        if realm != self.cfg.realm {
            self.metrics.auth_failure(auth_reason::WRONG_REALM);
            self.challenge(ft, req, 401, now);
            return None;
        }
        match proto::turn_cred::check_expiry(&username, now / 1000) {
            Ok(()) => {}
            Err(proto::turn_cred::TurnCredError::Expired) => {
                self.metrics.auth_failure(auth_reason::EXPIRED);
                self.challenge(ft, req, 401, now);
                return None;
            }
            Err(proto::turn_cred::TurnCredError::Malformed) => {
                self.metrics.auth_failure(auth_reason::MALFORMED_USERNAME);
                self.challenge(ft, req, 401, now);
                return None;
            }
        }
        let key = rest_keys(&self.cfg.secrets, &username, &self.cfg.realm)
            .find(|k| wire::verify_integrity(&req.raw, ig, k));
        let Some(key) = key else {
            self.metrics.auth_failure(auth_reason::BAD_INTEGRITY);
            self.challenge(ft, req, 401, now);
            return None;
        };
        Some(Authed {
            username,
            key,
            kind: ig.kind,
        })
    }

    fn desired_lifetime_s(&self, req: &Message) -> Result<u64, u16> {
        match attr(req, ATTR_LIFETIME) {
            None => Ok(DEFAULT_LIFETIME_S),
            Some(v) if v.len() == 4 => {
                let asked = u64::from(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                if asked == 0 {
                    return Ok(0);
                }
                Ok(asked.min(self.cfg.max_lifetime_s).max(DEFAULT_LIFETIME_S))
            }
            Some(_) => Err(400),
        }
    }

    fn allocate(&mut self, ft: FiveTuple, req: &Message, auth: &Authed, now: Millis) -> Handled {
        if let Some(a) = self.allocations.get(&ft) {
            if a.alloc_txn == req.transaction_id && a.username == auth.username {
                if a.opening.is_some() {
                    // Answered once the relay address is open.
                    return Ok(());
                }
                // Retransmission: same answer again.
                let (relay, left, token) = (a.relay, a.expires.saturating_sub(now) / 1000, a.token);
                self.allocate_success(ft, req, auth, relay, left, token);
                return Ok(());
            }
            return Err(437);
        }
        match attr(req, ATTR_REQUESTED_TRANSPORT) {
            None => return Err(400),
            Some(v) if v.len() != 4 => return Err(400),
            Some(v) if v[0] != PROTO_UDP => return Err(442),
            Some(_) => {}
        }
        if attr(req, ATTR_DONT_FRAGMENT).is_some() {
            // We cannot set DF on relayed datagrams: treat it as unknown (RFC 8656 §7.2).
            return Err(420);
        }
        let even = attr(req, ATTR_EVEN_PORT);
        let token = attr(req, ATTR_RESERVATION_TOKEN);
        let family = attr(req, ATTR_REQUESTED_ADDRESS_FAMILY);
        if token.is_some() && (even.is_some() || family.is_some()) {
            return Err(400);
        }
        let token: Option<[u8; 8]> = match token {
            None => None,
            Some(t) => Some(t.try_into().map_err(|_| 400u16)?),
        };
        if let Some(t) = &token {
            // Only a live reservation of the same user is valid.
            if !self
                .reservations
                .get(t)
                .is_some_and(|r| r.expires > now && r.username == auth.username)
            {
                return Err(508);
            }
        }
        let (even_port, reserve_next) = match even {
            None => (false, false),
            Some(v) if v.len() != 1 => return Err(400),
            Some(v) => (true, v[0] & 0x80 != 0),
        };
        let want_v6 = match family {
            None => false,
            Some(v) if v.len() != 4 => return Err(400),
            Some(v) if v[0] == FAMILY_V4 => false,
            Some(v) if v[0] == FAMILY_V6 => true,
            Some(_) => return Err(400),
        };
        if attr(req, ATTR_ADDITIONAL_ADDRESS_FAMILY).is_some() && family.is_some() {
            return Err(400);
        }
        if want_v6 != self.space.ip.is_ipv6() {
            return Err(440);
        }
        let lifetime = match self.desired_lifetime_s(req)? {
            0 => DEFAULT_LIFETIME_S,
            l => l,
        };
        // A claimed reservation turns into an allocation (net zero); EVEN-PORT
        // with R takes two relay addresses.
        let slots = if token.is_some() {
            0
        } else if reserve_next {
            2
        } else {
            1
        };
        match self.ledger.take(&auth.username, slots, &self.cfg.quotas) {
            Ok(()) => {}
            Err(LedgerRefusal::Total) => {
                self.metrics.quota(quota::TOTAL_ALLOCATIONS);
                return Err(508);
            }
            Err(LedgerRefusal::User) => {
                self.metrics.quota(quota::USER_ALLOCATIONS);
                return Err(486);
            }
        }
        let claimed = token.and_then(|t| self.reservations.remove(&t));
        let mut new_token = None;
        let mut to_open: Vec<RelayAddr> = Vec::new();
        let relay = if let Some(r) = claimed {
            r.relay
        } else {
            let port = if reserve_next {
                self.space.ports.take_pair()
            } else {
                self.space.ports.take(even_port)
            };
            let Some(port) = port else {
                self.ledger.give_back_allocation(&auth.username);
                for _ in 1..slots {
                    self.ledger.give_back_reservation();
                }
                self.metrics.quota(quota::RELAY_PORTS);
                return Err(508);
            };
            let relay = RelayAddr(SocketAddr::new(self.space.ip, port));
            to_open.push(relay);
            if reserve_next {
                let reserved = RelayAddr(SocketAddr::new(self.space.ip, port + 1));
                let t: [u8; 8] = self.rng.random();
                self.reservations.insert(
                    t,
                    Reservation {
                        relay: reserved,
                        username: auth.username.clone(),
                        expires: now.saturating_add(RESERVATION_LIFETIME_S * 1000),
                    },
                );
                new_token = Some(t);
                to_open.push(reserved);
            }
            relay
        };
        let bw = self.cfg.quotas.bandwidth_bytes_per_sec;
        let opening = (!to_open.is_empty()).then(|| PendingAnswer {
            txn: req.transaction_id,
            auth: auth.clone(),
            lifetime,
            attempts: 0,
            awaiting: to_open.len() as u8,
        });
        let a = Allocation {
            relay,
            username: auth.username.clone(),
            expires: now.saturating_add(lifetime * 1000),
            alloc_txn: req.transaction_id,
            token: new_token,
            even_port,
            opening,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_of_peer: HashMap::new(),
            bucket: (bw > 0).then(|| TokenBucket::new(bw, bw, now)),
        };
        self.allocations.insert(ft, a);
        self.by_relay.insert(relay, ft);
        *self.per_user.entry(auth.username.clone()).or_insert(0) += 1;
        self.sync_gauges();
        if to_open.is_empty() {
            self.allocate_success(ft, req, auth, relay, lifetime, None);
        }
        for relay in to_open {
            self.opening.insert(relay, ft);
            self.commands.push_back(Command::OpenRelay { relay });
        }
        Ok(())
    }

    fn allocate_success(
        &mut self,
        ft: FiveTuple,
        req: impl Into<ReplyTo>,
        auth: &Authed,
        relay: RelayAddr,
        lifetime: u64,
        token: Option<[u8; 8]>,
    ) {
        self.respond(ft, req, CLASS_SUCCESS_RESPONSE, Some(auth), |m| {
            let _ = XorMappedAddress {
                ip: relay.ip(),
                port: relay.port(),
            }
            .add_to_as(m, ATTR_XOR_RELAYED_ADDRESS);
            m.add(ATTR_LIFETIME, &(lifetime as u32).to_be_bytes());
            if let Some(t) = token {
                m.add(ATTR_RESERVATION_TOKEN, &t);
            }
            let _ = XorMappedAddress {
                ip: ft.client.ip(),
                port: ft.client.port(),
            }
            .add_to(m);
        });
    }

    fn owned_allocation(&self, ft: &FiveTuple, auth: &Authed) -> Result<(), u16> {
        match self.allocations.get(ft) {
            None => Err(437),
            Some(a) if a.username != auth.username => Err(441),
            Some(_) => Ok(()),
        }
    }

    fn refresh(&mut self, ft: FiveTuple, req: &Message, auth: &Authed, now: Millis) -> Handled {
        if let Err(code) = self.owned_allocation(&ft, auth) {
            if code == 441 {
                self.metrics.auth_failure(auth_reason::WRONG_CREDENTIALS);
            }
            return Err(code);
        }
        if let Some(v) = attr(req, ATTR_REQUESTED_ADDRESS_FAMILY) {
            let relay_v6 = self.space.ip.is_ipv6();
            let ok = v.len() == 4 && ((v[0] == FAMILY_V4 && !relay_v6) || (v[0] == FAMILY_V6 && relay_v6));
            if !ok {
                return Err(443);
            }
        }
        let lifetime = self.desired_lifetime_s(req)?;
        if lifetime == 0 {
            self.remove_allocation(&ft);
        } else if let Some(a) = self.allocations.get_mut(&ft) {
            a.expires = now.saturating_add(lifetime * 1000);
        }
        self.respond(ft, req, CLASS_SUCCESS_RESPONSE, Some(auth), |m| {
            m.add(ATTR_LIFETIME, &(lifetime as u32).to_be_bytes());
        });
        Ok(())
    }

    /// Peer addresses of all XOR-PEER-ADDRESS attributes (400 if malformed).
    fn peer_addrs(req: &Message) -> Result<Vec<PeerAddr>, u16> {
        let mut out = Vec::new();
        for a in req.attributes.0.iter().filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS) {
            out.push(PeerAddr(
                decode_xor_addr(&a.value, &req.transaction_id).ok_or(400u16)?,
            ));
        }
        if out.is_empty() {
            return Err(400);
        }
        Ok(out)
    }

    /// Policy and family checks for a peer (403 / 443). The policy comes
    /// first: a denied address is refused with 403 whatever its family.
    fn check_peer(&self, relay: RelayAddr, peer: PeerAddr) -> Result<(), u16> {
        if !self.space.peers.permits(peer.ip()) {
            self.metrics.policy_denials.inc();
            return Err(403);
        }
        if !same_family(relay.ip(), peer.ip()) {
            return Err(443);
        }
        Ok(())
    }

    fn create_permission(&mut self, ft: FiveTuple, req: &Message, auth: &Authed, now: Millis) -> Handled {
        self.owned_allocation(&ft, auth)?;
        let peers = Self::peer_addrs(req)?;
        let relay = self.allocations.get(&ft).map(|a| a.relay).ok_or(437u16)?;
        for p in &peers {
            self.check_peer(relay, *p)?;
        }
        let max = self.cfg.quotas.max_permissions_per_allocation as usize;
        let a = self.allocations.get_mut(&ft).ok_or(437u16)?;
        let mut new_ips: Vec<IpAddr> = peers
            .iter()
            .map(|p| p.ip())
            .filter(|ip| !a.permissions.contains_key(ip))
            .collect();
        new_ips.sort();
        new_ips.dedup();
        if a.permissions.len() + new_ips.len() > max {
            self.metrics.quota(quota::PERMISSIONS);
            return Err(508);
        }
        let expires = now.saturating_add(PERMISSION_LIFETIME_S * 1000);
        for p in &peers {
            a.permissions.insert(p.ip(), expires);
        }
        self.n_permissions += new_ips.len();
        for peer in new_ips {
            self.commands.push_back(Command::AddPermission { relay, peer });
        }
        self.sync_gauges();
        self.respond(ft, req, CLASS_SUCCESS_RESPONSE, Some(auth), |_| {});
        Ok(())
    }

    fn channel_bind(&mut self, ft: FiveTuple, req: &Message, auth: &Authed, now: Millis) -> Handled {
        self.owned_allocation(&ft, auth)?;
        let number = match attr(req, ATTR_CHANNEL_NUMBER) {
            Some(v) if v.len() == 4 => u16::from_be_bytes([v[0], v[1]]),
            _ => return Err(400),
        };
        if !(0x4000..=0x7fff).contains(&number) {
            return Err(400);
        }
        let peers = Self::peer_addrs(req)?;
        let peer = peers[0];
        let relay = self.allocations.get(&ft).map(|a| a.relay).ok_or(437u16)?;
        self.check_peer(relay, peer)?;
        let q = self.cfg.quotas.clone();
        let a = self.allocations.get_mut(&ft).ok_or(437u16)?;
        // Rebinding rules (RFC 8656 §11.2): a number stays with its peer and
        // a peer with its number while bound.
        if a.channels.get(&number).is_some_and(|c| c.peer != peer) {
            return Err(400);
        }
        if a.channel_of_peer.get(&peer).is_some_and(|&n| n != number) {
            return Err(400);
        }
        let new_channel = !a.channels.contains_key(&number);
        let new_perm = !a.permissions.contains_key(&peer.ip());
        if new_channel && a.channels.len() >= q.max_channels_per_allocation as usize {
            self.metrics.quota(quota::CHANNELS);
            return Err(508);
        }
        if new_perm && a.permissions.len() >= q.max_permissions_per_allocation as usize {
            self.metrics.quota(quota::PERMISSIONS);
            return Err(508);
        }
        a.channels.insert(
            number,
            Channel {
                peer,
                expires: now.saturating_add(CHANNEL_LIFETIME_S * 1000),
            },
        );
        a.channel_of_peer.insert(peer, number);
        a.permissions
            .insert(peer.ip(), now.saturating_add(PERMISSION_LIFETIME_S * 1000));
        self.n_channels += usize::from(new_channel);
        self.n_permissions += usize::from(new_perm);
        if new_perm {
            self.commands.push_back(Command::AddPermission {
                relay,
                peer: peer.ip(),
            });
        }
        if new_channel {
            self.commands
                .push_back(Command::BindChannel { relay, peer, number });
        }
        self.sync_gauges();
        self.respond(ft, req, CLASS_SUCCESS_RESPONSE, Some(auth), |_| {});
        Ok(())
    }

    /// The checks every relayed datagram passes on its way to a peer
    /// (bandwidth, reachability); `payload` is where its data lies.
    fn relay_to_peer(
        &mut self,
        ft: FiveTuple,
        peer: PeerAddr,
        payload: Range<usize>,
        now: Millis,
    ) -> Option<ToPeer> {
        let a = self.allocations.get_mut(&ft)?;
        let len = payload.len();
        if let Some(b) = a.bucket.as_mut() {
            if !b.try_take(len as u64, now) {
                self.metrics.quota(quota::BANDWIDTH);
                return None;
            }
        }
        if !self.space.peers.reaches(peer) {
            self.metrics.policy_denials.inc();
            return None;
        }
        self.metrics.relayed(true, len);
        Some(ToPeer {
            relay: a.relay,
            peer,
            payload,
        })
    }

    fn handle_send(&mut self, ft: FiveTuple, s: SendIndication, now: Millis) -> Option<ToPeer> {
        let Some(a) = self.allocations.get(&ft) else {
            self.metrics.drop(drop_reason::NO_ALLOCATION);
            return None;
        };
        if !a.live(now) {
            self.metrics.drop(drop_reason::NO_ALLOCATION);
            return None;
        }
        let (Some(peer), Some(data)) = (s.peer, s.data) else {
            self.metrics.drop(drop_reason::MALFORMED);
            return None;
        };
        if !same_family(a.relay.ip(), peer.ip()) || !a.permitted(peer.ip(), now) {
            self.metrics.drop(drop_reason::NO_PERMISSION);
            return None;
        }
        self.relay_to_peer(ft, PeerAddr(peer), data, now)
    }

    fn handle_channel_data(&mut self, ft: FiveTuple, raw: &[u8], now: Millis) -> Option<ToPeer> {
        let Some(cd) = wire::parse_channel_data(raw) else {
            self.metrics.drop(drop_reason::MALFORMED);
            return None;
        };
        let Some(a) = self.allocations.get(&ft) else {
            self.metrics.drop(drop_reason::NO_ALLOCATION);
            return None;
        };
        if !a.live(now) {
            self.metrics.drop(drop_reason::NO_ALLOCATION);
            return None;
        }
        let Some(peer) = a
            .channels
            .get(&cd.number)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
        else {
            self.metrics.drop(drop_reason::NO_CHANNEL);
            return None;
        };
        if !a.permitted(peer.ip(), now) {
            self.metrics.drop(drop_reason::NO_PERMISSION);
            return None;
        }
        self.relay_to_peer(
            ft,
            peer,
            wire::CHANNEL_DATA_HEADER..wire::CHANNEL_DATA_HEADER + cd.data.len(),
            now,
        )
    }

    fn respond_error(
        &mut self,
        ft: FiveTuple,
        req: impl Into<ReplyTo>,
        code: u16,
        auth: Option<&Authed>,
        extra: impl FnOnce(&mut Message),
    ) {
        self.respond(ft, req, CLASS_ERROR_RESPONSE, auth, |m| {
            let _ = ErrorCodeAttribute {
                code: ErrorCode(code),
                reason: reason(code).as_bytes().to_vec(),
            }
            .add_to(m);
            extra(m);
        });
    }

    fn respond(
        &mut self,
        ft: FiveTuple,
        req: impl Into<ReplyTo>,
        class: MessageClass,
        auth: Option<&Authed>,
        attrs: impl FnOnce(&mut Message),
    ) {
        let req = req.into();
        let mut m = Message::new();
        m.typ = MessageType::new(req.method, class);
        m.transaction_id = req.txn;
        m.write_header();
        attrs(&mut m);
        if let Some(sw) = &self.cfg.software {
            let _ = TextAttribute::new(ATTR_SOFTWARE, sw.clone()).add_to(&mut m);
        }
        if let Some(a) = auth {
            match a.kind {
                IntegrityKind::Sha1 => wire::add_integrity_sha1(&mut m, &a.key),
                IntegrityKind::Sha256 => wire::add_integrity_sha256(&mut m, &a.key),
            }
        }
        wire::add_fingerprint(&mut m);
        self.commands.push_back(Command::SendToClient {
            to: ft,
            payload: m.raw,
        });
    }

    /// Checks the internal tables for consistency; returns a description of
    /// the first problem found. Used by tests (property tests run it after
    /// every step).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.by_relay.len() != self.allocations.len() {
            return Err(format!(
                "by_relay {} != allocations {}",
                self.by_relay.len(),
                self.allocations.len()
            ));
        }
        let mut per_user: HashMap<&str, u32> = HashMap::new();
        let (mut perms, mut chans) = (0, 0);
        for (ft, a) in &self.allocations {
            if self.by_relay.get(&a.relay) != Some(ft) {
                return Err(format!("relay {} does not map back to its 5-tuple", a.relay));
            }
            *per_user.entry(a.username.as_str()).or_insert(0) += 1;
            if a.channels.len() != a.channel_of_peer.len() {
                return Err("channel maps differ in size".into());
            }
            for (n, c) in &a.channels {
                if !(0x4000..=0x7fff).contains(n) {
                    return Err(format!("channel number {n:#x} out of range"));
                }
                if a.channel_of_peer.get(&c.peer) != Some(n) {
                    return Err(format!("channel {n:#x} and peer {} disagree", c.peer));
                }
                if !same_family(c.peer.ip(), a.relay.ip()) {
                    return Err("channel peer of the wrong family".into());
                }
            }
            if a.permissions.len() > self.cfg.quotas.max_permissions_per_allocation as usize {
                return Err("permission quota exceeded".into());
            }
            if a.channels.len() > self.cfg.quotas.max_channels_per_allocation as usize {
                return Err("channel quota exceeded".into());
            }
            if a.permissions.keys().any(|ip| !self.space.peers.permits(*ip)) {
                return Err("a permission the policy denies".into());
            }
            perms += a.permissions.len();
            chans += a.channels.len();
        }
        if perms != self.n_permissions || chans != self.n_channels {
            return Err(format!(
                "counters {}/{} != tables {perms}/{chans}",
                self.n_permissions, self.n_channels
            ));
        }
        if per_user.len() != self.per_user.len()
            || per_user.iter().any(|(u, n)| self.per_user.get(*u) != Some(n))
        {
            return Err("per-user counts disagree".into());
        }
        if per_user
            .values()
            .any(|&n| n > self.cfg.quotas.max_allocations_per_user)
        {
            return Err("per-user quota exceeded".into());
        }
        if self
            .reservations
            .values()
            .any(|r| self.by_relay.contains_key(&r.relay))
        {
            return Err("a reserved relay address is also allocated".into());
        }
        let relays = self
            .allocations
            .values()
            .map(|a| a.relay)
            .chain(self.reservations.values().map(|r| r.relay));
        for relay in relays {
            if !self.space.ports.is_used(relay.port()) {
                return Err(format!("relay {relay} is live but its port is free"));
            }
        }
        if self.opening.values().any(|ft| !self.allocations.contains_key(ft)) && self.commands.is_empty() {
            return Err("a relay address is being opened for no allocation".into());
        }
        if self.allocations.len() + self.reservations.len() > self.cfg.quotas.max_allocations_total as usize {
            return Err("total quota exceeded".into());
        }
        if self.metrics.allocations.get() != self.allocations.len() as i64
            || self.metrics.permissions.get() != self.n_permissions as i64
            || self.metrics.channels.get() != self.n_channels as i64
        {
            return Err("gauges disagree with tables".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
