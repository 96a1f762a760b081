//! `bench floor`: the physical floor of this machine. A minimal forwarder
//! (`bench floor-server`, its own process so /proc readings compare with
//! the SFU's) with one UDP socket, batched receive (recvmmsg + GRO via
//! quinn-udp) and batched send (GSO), no SRTP, forwards each participant's
//! datagrams to its partner. Same load generator, same packet sizes.

use crate::common::{self, ChildServer, LoadArgs};
use crate::engine::{self, Link, ParticipantSetup};
use crate::report::{RampResult, Run};
use anyhow::Context;
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const HELLO: &[u8; 4] = b"DFHL";

/// The registration datagram: participant `id` wants its partner's media.
pub fn hello(id: u32, partner: u32) -> Vec<u8> {
    let mut v = HELLO.to_vec();
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&partner.to_be_bytes());
    v
}

fn parse_hello(d: &[u8]) -> Option<(u32, u32)> {
    if d.len() != 12 || &d[0..4] != HELLO {
        return None;
    }
    Some((
        u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
    ))
}

/// Forwarding table: learned from hellos, then one lookup per datagram.
#[derive(Default)]
pub struct Table {
    addr_of: HashMap<u32, SocketAddr>,
    partner_of: HashMap<u32, u32>,
    routes: HashMap<SocketAddr, SocketAddr>,
}

impl Table {
    /// Handles one datagram; returns where to send what.
    pub fn route(&mut self, from: SocketAddr, d: &[u8]) -> Option<SocketAddr> {
        if let Some((id, partner)) = parse_hello(d) {
            self.addr_of.insert(id, from);
            self.partner_of.insert(id, partner);
            if let Some(&pa) = self.addr_of.get(&partner) {
                self.routes.insert(from, pa);
                if self.partner_of.get(&partner) == Some(&id) {
                    self.routes.insert(pa, from);
                }
            }
            return Some(from); // acknowledge: echo the hello
        }
        self.routes.get(&from).copied()
    }
}

/// `bench floor-server`: runs the forwarder until killed.
pub fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(listen), socket2::Type::DGRAM, None)?;
    let _ = sock.set_recv_buffer_size(4 * 1024 * 1024);
    let _ = sock.set_send_buffer_size(4 * 1024 * 1024);
    sock.bind(&listen.into())?;
    let socket: std::net::UdpSocket = sock.into();
    let state = quinn_udp::UdpSocketState::new((&socket).into())?;
    // Non-blocking + epoll: a blocking recvmmsg would wait for a full batch.
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    let mut socket = mio::net::UdpSocket::from_std(socket);
    let mut poll = mio::Poll::new()?;
    poll.registry()
        .register(&mut socket, mio::Token(0), mio::Interest::READABLE)?;
    let mut events = mio::Events::with_capacity(8);
    println!("floor ready {}", serde_json::json!({ "udp": addr.to_string() }));
    let batch = quinn_udp::BATCH_SIZE;
    let mut bufs: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; 64 * 1024]).collect();
    let mut metas = vec![quinn_udp::RecvMeta::default(); batch];
    let mut table = Table::default();
    let mut out: Vec<(SocketAddr, usize, usize, usize)> = Vec::with_capacity(batch * 4);
    let max_seg = state.max_gso_segments().max(1);
    let mut gso = Vec::with_capacity(64 * 1024);
    loop {
        let n = {
            let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match state.recv((&socket).into(), &mut slices, &mut metas) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    drop(slices);
                    match poll.poll(&mut events, None) {
                        Ok(()) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e).context("poll"),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("recv"),
            }
        };
        out.clear();
        for (bi, meta) in metas.iter().enumerate().take(n) {
            let stride = meta.stride.max(1);
            let mut off = 0;
            while off < meta.len {
                let len = stride.min(meta.len - off);
                if let Some(dest) = table.route(meta.addr, &bufs[bi][off..off + len]) {
                    out.push((dest, bi, off, len));
                }
                off += len;
            }
        }
        // Send, coalescing same-destination same-size runs into GSO batches.
        let mut k = 0;
        while k < out.len() {
            let (dest, bi, off, len) = out[k];
            let mut j = k + 1;
            while max_seg > 1 && j < out.len() && j - k < max_seg && out[j].0 == dest && out[j].3 <= len {
                let last = out[j].3 < len;
                j += 1;
                if last {
                    break;
                }
            }
            let contents: &[u8] = if j - k == 1 {
                &bufs[bi][off..off + len]
            } else {
                gso.clear();
                for &(_, b, o, l) in &out[k..j] {
                    gso.extend_from_slice(&bufs[b][o..o + l]);
                }
                &gso
            };
            let t = quinn_udp::Transmit {
                destination: dest,
                ecn: None,
                contents,
                segment_size: (j - k > 1).then_some(len),
                src_ip: None,
            };
            // A full send buffer drops (as a congested forwarder would); so do errors.
            let _ = state.try_send((&socket).into(), &t);
            k = j;
        }
    }
}

/// Starts a floor forwarder process (this binary, `floor-server`).
pub fn start_server(load: &LoadArgs) -> anyhow::Result<ChildServer> {
    let exe = std::env::current_exe().context("cannot find the bench binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["floor-server", "--listen", "127.0.0.1:0"]);
    let child = ChildServer::spawn("floor forwarder", cmd, "floor ready ", Duration::from_secs(10))?;
    child.prepare(load)?;
    Ok(child)
}

/// Measures `pairs` pairs through a running forwarder. `id_base` keeps
/// participant ids unique across ramp steps on one forwarder.
pub async fn run_once(
    server: &ChildServer,
    load: &LoadArgs,
    pairs: usize,
    id_base: u32,
    name: &str,
) -> anyhow::Result<Run> {
    let fwd = server.addr("udp")?;
    let mut parts = Vec::with_capacity(pairs * 2);
    for p in 0..pairs as u32 {
        let (a, b) = (id_base + 2 * p, id_base + 2 * p + 1);
        for (me, partner) in [(a, b), (b, a)] {
            parts.push(ParticipantSetup {
                socket: common::participant_socket()?,
                link: Link::Plain {
                    dest: fwd,
                    register: Some(hello(me, partner)),
                },
                publish: true,
            });
        }
    }
    let srv = server.server()?;
    let profile = load.profile();
    let handle = engine::spawn(parts, profile.clone(), load.pin_load, load.realtime)?;
    let flowing = if profile.publish_video { pairs * 2 } else { 0 };
    common::measure(
        name,
        handle,
        Some(srv),
        pairs,
        flowing,
        load.warmup,
        load.window(),
        load.quiet,
    )
    .await
}

/// `bench floor` (also used by `bench sfu --with-floor`).
pub async fn run(load: &LoadArgs, name: &str) -> anyhow::Result<(Vec<Run>, Option<RampResult>)> {
    let server = start_server(load)?;
    let mut next_id = 0u32;
    common::ramp(name, load, |pairs| {
        let base = next_id;
        next_id += 2 * pairs as u32;
        let server = &server;
        async move { run_once(server, load, pairs, base, name).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_routes_each_participant_to_its_partner_once_both_said_hello() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let mut t = Table::default();
        assert_eq!(t.route(a, b"media"), None);
        assert_eq!(t.route(a, &hello(1, 2)), Some(a));
        assert_eq!(t.route(a, b"media"), None); // partner unknown yet
        assert_eq!(t.route(b, &hello(2, 1)), Some(b));
        assert_eq!(t.route(a, b"media"), Some(b));
        assert_eq!(t.route(b, b"media"), Some(a));
    }
}
