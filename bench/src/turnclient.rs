//! A minimal TURN client (RFC 8656) on the `stun` crate's message types:
//! Allocate with long-term credentials (401 challenge, then USERNAME,
//! REALM, NONCE, MESSAGE-INTEGRITY), CreatePermission, ChannelBind. The
//! control plane is blocking on the participant's socket before the load
//! loop takes it; the data path is ChannelData (see `engine`).

use anyhow::{bail, Context};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::*;
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;

/// TURN REST credentials (coturn's `use-auth-secret`).
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn rest(secret: &str, id: &str, ttl: Duration) -> Self {
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + ttl.as_secs();
        let c = proto::turn_cred::mint(secret.as_bytes(), id, expiry);
        Self {
            username: c.username,
            password: c.password,
        }
    }
}

struct Auth {
    realm: String,
    nonce: String,
}

/// One client's allocation on a TURN server.
pub struct Allocation {
    pub server: SocketAddr,
    pub relayed: SocketAddr,
    creds: Credentials,
    auth: Auth,
}

fn build(
    method: Method,
    attrs: impl FnOnce(&mut Message) -> Result<(), stun::Error>,
    creds: Option<(&Credentials, &Auth)>,
) -> anyhow::Result<Message> {
    let mut m = Message::new();
    m.typ = MessageType::new(method, CLASS_REQUEST);
    m.transaction_id = TransactionId::new();
    m.write_header();
    attrs(&mut m)?;
    if let Some((c, a)) = creds {
        TextAttribute::new(ATTR_USERNAME, c.username.clone()).add_to(&mut m)?;
        TextAttribute::new(ATTR_REALM, a.realm.clone()).add_to(&mut m)?;
        TextAttribute::new(ATTR_NONCE, a.nonce.clone()).add_to(&mut m)?;
        MessageIntegrity::new_long_term_integrity(c.username.clone(), a.realm.clone(), c.password.clone())
            .add_to(&mut m)?;
    }
    FINGERPRINT.add_to(&mut m)?;
    Ok(m)
}

/// Sends `req` and waits for the response with its transaction id (retransmits).
fn transact(sock: &UdpSocket, server: SocketAddr, req: &Message) -> anyhow::Result<Message> {
    let mut buf = vec![0u8; 2048];
    for attempt in 0..6 {
        sock.send_to(&req.raw, server)?;
        sock.set_read_timeout(Some(Duration::from_millis(200 << attempt.min(3))))?;
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == server => {
                    let mut m = Message::new();
                    if m.unmarshal_binary(&buf[..n]).is_err() {
                        continue;
                    }
                    if m.transaction_id == req.transaction_id {
                        return Ok(m);
                    }
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    bail!("no answer from TURN server {server}")
}

fn error_of(m: &Message) -> Option<(u16, String)> {
    if m.typ.class != CLASS_ERROR_RESPONSE {
        return None;
    }
    let mut ec = ErrorCodeAttribute::default();
    ec.get_from(m).ok()?;
    Some((ec.code.0, String::from_utf8_lossy(&ec.reason).into_owned()))
}

fn ok_or_error(m: &Message, what: &str) -> anyhow::Result<()> {
    if m.typ.class == CLASS_SUCCESS_RESPONSE {
        return Ok(());
    }
    match error_of(m) {
        Some((code, reason)) => bail!("{what}: error {code} {reason}"),
        None => bail!("{what}: unexpected {}", m.typ),
    }
}

/// A STUN Binding request: does a server answer on `server` yet?
pub fn ping(sock: &UdpSocket, server: SocketAddr) -> bool {
    match build(METHOD_BINDING, |_| Ok(()), None) {
        Ok(req) => transact(sock, server, &req).is_ok(),
        Err(_) => false,
    }
}

/// Allocates a UDP relay on `server` from `sock`.
pub fn allocate(sock: &UdpSocket, server: SocketAddr, creds: &Credentials) -> anyhow::Result<Allocation> {
    let transport = |m: &mut Message| {
        m.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        Ok(())
    };
    let first = transact(sock, server, &build(METHOD_ALLOCATE, transport, None)?)?;
    let (code, _) = error_of(&first).context("Allocate without credentials was not challenged")?;
    if code != 401 {
        bail!("Allocate: error {code}");
    }
    let realm = TextAttribute::get_from_as(&first, ATTR_REALM)
        .context("401 without REALM")?
        .text;
    let nonce = TextAttribute::get_from_as(&first, ATTR_NONCE)
        .context("401 without NONCE")?
        .text;
    let mut auth = Auth { realm, nonce };
    let mut resp = transact(
        sock,
        server,
        &build(METHOD_ALLOCATE, transport, Some((creds, &auth)))?,
    )?;
    if let Some((438, _)) = error_of(&resp) {
        auth.nonce = TextAttribute::get_from_as(&resp, ATTR_NONCE)
            .context("438 without NONCE")?
            .text;
        resp = transact(
            sock,
            server,
            &build(METHOD_ALLOCATE, transport, Some((creds, &auth)))?,
        )?;
    }
    ok_or_error(&resp, "Allocate")?;
    let mut relayed = XorMappedAddress::default();
    relayed
        .get_from_as(&resp, ATTR_XOR_RELAYED_ADDRESS)
        .context("no XOR-RELAYED-ADDRESS")?;
    Ok(Allocation {
        server,
        relayed: SocketAddr::new(relayed.ip, relayed.port),
        creds: creds.clone(),
        auth,
    })
}

impl Allocation {
    /// CreatePermission for `peer`, then ChannelBind `channel` (0x4000..=0x7FFF) to it.
    pub fn bind_channel(&mut self, sock: &UdpSocket, peer: SocketAddr, channel: u16) -> anyhow::Result<()> {
        let peer_attr = |m: &mut Message| {
            XorMappedAddress {
                ip: peer.ip(),
                port: peer.port(),
            }
            .add_to_as(m, ATTR_XOR_PEER_ADDRESS)
        };
        let req = build(
            METHOD_CREATE_PERMISSION,
            peer_attr,
            Some((&self.creds, &self.auth)),
        )?;
        let resp = transact(sock, self.server, &req)?;
        ok_or_error(&resp, "CreatePermission")?;
        let req = build(
            METHOD_CHANNEL_BIND,
            |m| {
                m.add(ATTR_CHANNEL_NUMBER, &[(channel >> 8) as u8, channel as u8, 0, 0]);
                peer_attr(m)
            },
            Some((&self.creds, &self.auth)),
        )?;
        let resp = transact(sock, self.server, &req)?;
        ok_or_error(&resp, "ChannelBind")?;
        Ok(())
    }
}
