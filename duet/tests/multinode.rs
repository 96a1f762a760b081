//! Several nodes on one machine, started as an operator starts them: two
//! `duet signaling` replicas and three `duet sfu` nodes in two regions (eu:
//! two nodes, us: one), with real Redis and PostgreSQL, and synthetic
//! visitors that speak the signaling WebSocket and real WebRTC (ICE, DTLS,
//! SRTP) to the SFU nodes, sending media labelled with their names.
//!
//! It proves: visitors are placed on their region's nodes; after SIGKILL of a
//! node its pair is told to move (`relocate`) to the other node of the region,
//! is matched again and media flows there, while the calls on the other nodes
//! go on undisturbed and no process logs an error; SIGTERM drains a node: its
//! record says draining, new and idle visitors go elsewhere, its call goes on
//! until the two leave, then the process exits 0.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use proto::registry::{redis_keys, NodeRecord};
use proto::sfu_api::ParticipantList;
use proto::sfu_ws::{SfuClientMsg, SfuServerMsg};
use proto::signal::{ServerMsg, SessionResponse, SfuPlacement};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const REDIS: &str = "redis://127.0.0.1:6379";
const POSTGRES: &str = "postgres://root@127.0.0.1:5432";
const SESSION_SECRET: &str = "multinode-session-secret-0123456789";
const SFU_TOKEN_SECRET: &str = "multinode-sfu-token-secret-0123456789";
const TURN_SECRET: &str = "multinode-turn-secret-0123456789";
const INTERNAL_TOKEN: &str = "multinode-internal-token-0123456789";
/// Hang guard of every wait ("within N seconds"), never a timing assertion.
const WAIT: Duration = Duration::from_secs(30);
/// Packets (audio + video, 100 per second) that count as "media flows".
const FLOWING: usize = 40;

/// Waits until `$cond` (an expression that may `.await`) is `Some(v)`; gives `v`.
macro_rules! wait_for {
    ($what:expr, $cond:expr) => {{
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(v) = $cond {
                break v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {:?} for {}",
                WAIT,
                $what
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos & 0xff_ffff_ffff)
}

// ---------------------------------------------------------------- cluster

struct Proc {
    name: String,
    child: tokio::process::Child,
    ready: serde_json::Value,
    log: PathBuf,
}

impl Proc {
    fn http(&self) -> String {
        self.ready["http"].as_str().unwrap().to_owned()
    }

    fn internal(&self) -> String {
        format!("http://{}", self.ready["internal"].as_str().unwrap())
    }

    /// SIGTERM (with `kill`, as an orchestrator would; no unsafe `libc::kill` here).
    fn terminate(&self) {
        let pid = self.child.id().expect("process still running");
        let rc = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(rc.success(), "kill -TERM {pid}");
    }

    /// Error lines of duet's own code in the process log.
    fn errors(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\""))
            .map(str::to_owned)
            .collect()
    }
}

struct Cluster {
    tag: String,
    prefix: String,
    db: String,
    dir: PathBuf,
    procs: Vec<Proc>,
    node_ids: Vec<String>,
}

impl Cluster {
    async fn new() -> Cluster {
        let tag = unique();
        let db = format!("duet_multinode_{tag}");
        let admin: sqlx::PgPool = sqlx::PgPool::connect(&format!("{POSTGRES}/postgres"))
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (user root, trust auth)");
        sqlx::query(&format!("CREATE DATABASE \"{db}\""))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let dir = std::env::temp_dir().join(format!("duet-multinode-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        Cluster {
            prefix: format!("duet_multinode_{tag}:"),
            tag,
            db,
            dir,
            procs: Vec::new(),
            node_ids: Vec::new(),
        }
    }

    async fn spawn(&mut self, name: &str, args: Vec<String>, env: &[(&str, &str)]) -> usize {
        let log = self.dir.join(format!("{name}.log"));
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_duet"));
        cmd.env_remove("RUST_LOG");
        for (k, _) in std::env::vars() {
            if k.starts_with("DUET_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn duet");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(90), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(json) = line.strip_prefix("duet ready ") {
                    return Some(serde_json::from_str::<serde_json::Value>(json).unwrap());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "{name} printed no ready line; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        // Keep reading stdout so that the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            ready,
            log,
        });
        self.procs.len() - 1
    }

    async fn sfu(&mut self, name: &str, region: &str) -> (usize, String) {
        let node_id = format!("{name}-{}", self.tag);
        self.node_ids.push(node_id.clone());
        let args = [
            "sfu",
            "--node-id",
            &node_id,
            "--region",
            region,
            "--http-listen=127.0.0.1:0",
            "--internal-listen=127.0.0.1:0",
            "--media-listen=127.0.0.1:0",
            "--turn-listen-udp=127.0.0.1:0",
            "--turn-listen-tcp=127.0.0.1:0",
            "--turn-listen-tls=127.0.0.1:0",
            "--redis-url",
            REDIS,
            "--redis-prefix",
            &self.prefix,
            "--max-participants=20",
            // Longer than the test: the node must exit because its calls ended.
            "--drain-timeout-secs=300",
            "--log-format=json",
        ]
        .map(str::to_owned)
        .to_vec();
        let env = [
            ("DUET_SFU_TOKEN_SECRET", SFU_TOKEN_SECRET),
            ("DUET_TURN_SECRET", TURN_SECRET),
            ("DUET_INTERNAL_TOKEN", INTERNAL_TOKEN),
        ];
        (self.spawn(name, args, &env).await, node_id)
    }

    async fn signaling(&mut self, name: &str, region: &str, fallback: &str) -> usize {
        let database = format!("{POSTGRES}/{}", self.db);
        let args = [
            "signaling",
            "--http-listen=127.0.0.1:0",
            "--database-url",
            &database,
            "--redis-url",
            REDIS,
            "--redis-prefix",
            &self.prefix,
            "--region",
            region,
            "--region-fallback",
            fallback,
            "--rate-limits=off",
            "--widen-after-secs=0",
            "--log-format=json",
        ]
        .map(str::to_owned)
        .to_vec();
        let env = [
            ("DUET_SESSION_SECRET", SESSION_SECRET),
            ("DUET_SFU_TOKEN_SECRET", SFU_TOKEN_SECRET),
            ("DUET_TURN_SECRET", TURN_SECRET),
            ("DUET_INTERNAL_TOKEN", INTERNAL_TOKEN),
        ];
        self.spawn(name, args, &env).await
    }

    /// Registry records in Redis, as the nodes wrote them.
    async fn records(&self) -> HashMap<String, NodeRecord> {
        let client = redis::Client::open(REDIS).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(redis_keys::node_index(&self.prefix))
            .query_async(&mut c)
            .await
            .unwrap();
        let mut out = HashMap::new();
        for id in ids {
            let key = redis_keys::node(&self.prefix, &proto::NodeId::new(id.as_str()));
            let v: Option<String> = redis::cmd("GET").arg(key).query_async(&mut c).await.unwrap();
            if let Some(rec) = v.and_then(|v| serde_json::from_str::<NodeRecord>(&v).ok()) {
                out.insert(id, rec);
            }
        }
        out
    }

    /// `name`'s counter (summed over label sets matching `labels`) on `/metrics` of process `i`.
    async fn metric(&self, i: usize, name: &str, labels: &[&str]) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.procs[i].http()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.start_kill();
        }
        for p in &mut self.procs {
            for _ in 0..100 {
                if !matches!(p.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Leave nothing behind: Redis keys, the database, generated certificates.
        if let Ok(mut c) = redis::Client::open(REDIS).and_then(|c| c.get_connection()) {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut c)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut c);
            }
        }
        let db = self.db.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(&format!("{POSTGRES}/postgres")).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
        for id in &self.node_ids {
            let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("duet-sfu-{id}")));
        }
        if std::thread::panicking() || std::env::var_os("MULTINODE_KEEP_LOGS").is_some() {
            eprintln!("multinode: process logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------- visitors

/// A synthetic visitor: a session, the signaling WebSocket, and a WebRTC
/// peer connection to its SFU node that it moves on `relocate`, as the page does.
struct Visitor {
    name: String,
    session: SessionResponse,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    media: Option<Media>,
    /// The node its media is on now.
    node: String,
    /// Every signaling message it received.
    heard: Vec<ServerMsg>,
}

impl Visitor {
    async fn arrive(signaling_http: &str, name: &str, region: &str) -> Visitor {
        let resp = reqwest::Client::new()
            .post(format!("http://{signaling_http}/api/session"))
            .json(&json!({
                "accept_rules": true,
                "device_id": format!("device-{name}-{}", unique()),
                "region": region,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "session for {name}: {}",
            resp.text().await.unwrap()
        );
        let session: SessionResponse = resp.json().await.unwrap();
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{signaling_http}/ws?token={}", session.token))
                .await
                .unwrap();
        let mut v = Visitor {
            name: name.to_owned(),
            node: String::new(),
            ws,
            media: None,
            heard: Vec::new(),
            session: session.clone(),
        };
        v.move_media(&session.sfu).await;
        v
    }

    /// A new peer connection on `placement`'s node (the old one is closed first).
    async fn move_media(&mut self, placement: &SfuPlacement) {
        if let Some(old) = self.media.take() {
            old.stop().await;
        }
        let media = Media::connect(&placement.url, &placement.token, &self.name).await;
        self.node = placement.node_id.to_string();
        media.wait_connected(&self.name).await;
        self.media = Some(media);
    }

    async fn send(&mut self, v: serde_json::Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    /// The next message; a `relocate` is followed at once.
    async fn recv(&mut self) -> ServerMsg {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no message within {WAIT:?}", self.name));
            let msg: ServerMsg = match m {
                Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("{}: signaling socket ended: {other:?}", self.name),
            };
            self.heard.push(msg.clone());
            if let ServerMsg::Relocate { sfu, .. } = &msg {
                self.move_media(sfu).await;
            }
            return msg;
        }
    }

    async fn recv_until(&mut self, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let m = self.recv().await;
            if pred(&m) {
                return m;
            }
        }
    }

    /// Takes in the messages already waiting (relocations included).
    async fn catch_up(&mut self) {
        while let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(20), self.ws.next()).await
        {
            let msg: ServerMsg = serde_json::from_str(t.as_str()).unwrap();
            self.heard.push(msg.clone());
            if let ServerMsg::Relocate { sfu, .. } = &msg {
                self.move_media(sfu).await;
            }
        }
    }

    /// Packets received on the current peer connection from `who`.
    fn from(&self, who: &str) -> usize {
        self.media.as_ref().map_or(0, |m| m.count(who))
    }

    async fn leave(mut self) {
        if let Some(m) = self.media.take() {
            m.stop().await;
        }
        let _ = self.ws.close(None).await;
    }
}

/// Joins `x` then `y` (video) and waits until they are matched and each
/// receives the other's media; the pairing id.
async fn pair(x: &mut Visitor, y: &mut Visitor) -> String {
    x.send(json!({"type": "join", "mode": "video"})).await;
    x.recv_until(|m| matches!(m, ServerMsg::Queued { .. })).await;
    y.send(json!({"type": "join", "mode": "video"})).await;
    let px = pairing_id(&x.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await);
    let py = pairing_id(&y.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await);
    assert_eq!(px, py, "{} and {} are one pairing", x.name, y.name);
    media_flows(x, y).await;
    px
}

fn pairing_id(m: &ServerMsg) -> String {
    match m {
        ServerMsg::Matched { pairing_id, .. } => pairing_id.to_string(),
        other => panic!("not a match: {other:?}"),
    }
}

/// Waits until each receives at least [`FLOWING`] more packets from the other.
async fn media_flows(x: &mut Visitor, y: &mut Visitor) {
    let (bx, by) = (x.from(&y.name), y.from(&x.name));
    let what = format!("media between {} and {}", x.name, y.name);
    wait_for!(
        what,
        (x.from(&y.name) >= bx + FLOWING && y.from(&x.name) >= by + FLOWING).then_some(())
    );
}

fn disturbed(v: &Visitor, since: usize) -> Vec<&ServerMsg> {
    v.heard[since..]
        .iter()
        .filter(|m| {
            matches!(
                m,
                ServerMsg::Relocate { .. } | ServerMsg::PartnerLeft { .. } | ServerMsg::Error(_)
            )
        })
        .collect()
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_place_by_region_move_a_killed_nodes_pair_and_drain_a_node_on_sigterm() {
    let mut cl = Cluster::new().await;
    let (eu1, eu1_id) = cl.sfu("eu-1", "eu").await;
    let (eu2, eu2_id) = cl.sfu("eu-2", "eu").await;
    let (us1, us1_id) = cl.sfu("us-1", "us").await;
    let sig1 = cl.signaling("signaling-1", "eu", "us").await;
    let sig2 = cl.signaling("signaling-2", "us", "eu").await;
    let (s1, s2) = (cl.procs[sig1].http(), cl.procs[sig2].http());
    wait_for!(
        "the three nodes in the registry",
        (cl.records().await.len() == 3).then_some(())
    );

    // ---- placement by region; pairs across the two replicas
    let mut a1 = Visitor::arrive(&s1, "a1", "eu").await;
    let mut a2 = Visitor::arrive(&s2, "a2", "eu").await;
    let mut u1 = Visitor::arrive(&s2, "u1", "us").await;
    let mut u2 = Visitor::arrive(&s1, "u2", "us").await;
    for v in [&a1, &a2] {
        assert!(
            [&eu1_id, &eu2_id].contains(&&v.node),
            "{} (eu) on {}",
            v.name,
            v.node
        );
        assert_eq!(v.session.sfu.region, "eu");
    }
    for v in [&u1, &u2] {
        assert_eq!(v.node, us1_id, "{} (us) on the us node", v.name);
    }
    let a_pairing = pair(&mut a1, &mut a2).await;
    assert_eq!(a1.node, a2.node, "a pair is linked on one node");
    let u_pairing = pair(&mut u1, &mut u2).await;
    let u_mark = (u1.heard.len(), u2.heard.len());
    assert!(!u_pairing.is_empty());

    // The node with the a-pair is the victim; a second eu pair goes to the other one.
    let (victim, victim_id, survivor_id) = if a1.node == eu1_id {
        (eu1, eu1_id.clone(), eu2_id.clone())
    } else {
        (eu2, eu2_id.clone(), eu1_id.clone())
    };
    wait_for!(
        "the victim's load in its record",
        cl.records()
            .await
            .get(&victim_id)
            .and_then(|r| (r.load >= 2).then_some(()))
    );
    let mut b1 = Visitor::arrive(&s1, "b1", "eu").await;
    let mut b2 = Visitor::arrive(&s2, "b2", "eu").await;
    pair(&mut b1, &mut b2).await;
    assert_eq!(
        b1.node, survivor_id,
        "least-loaded placement puts the b pair on the other eu node"
    );
    assert_eq!(b2.node, survivor_id);
    let b_mark = (b1.heard.len(), b2.heard.len());

    // ---- SIGKILL the victim: its pair moves to the other eu node and is matched again
    cl.procs[victim].child.start_kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    for (me, partner) in [(&mut a1, "a2"), (&mut a2, "a1")] {
        let m = me.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
        assert_eq!(pairing_id(&m), a_pairing, "{partner}'s partner again");
        assert_eq!(me.node, survivor_id, "{} moved within the region", me.name);
        assert!(
            me.heard
                .iter()
                .any(|m| matches!(m, ServerMsg::Relocate { sfu, .. } if sfu.node_id.as_str() == survivor_id)),
            "{} was told to relocate",
            me.name
        );
    }
    // Media flows between them through the new node (fresh peer connections).
    media_flows(&mut a1, &mut a2).await;
    eprintln!(
        "multinode: SIGKILL {victim_id}: pair moved to {survivor_id}, matched and media flowing after {:?}",
        killed.elapsed()
    );
    // The calls on the other nodes went on.
    media_flows(&mut b1, &mut b2).await;
    media_flows(&mut u1, &mut u2).await;
    for v in [&mut b1, &mut b2, &mut u1, &mut u2] {
        v.catch_up().await;
    }
    for (v, mark) in [(&b1, b_mark.0), (&b2, b_mark.1), (&u1, u_mark.0), (&u2, u_mark.1)] {
        assert!(
            disturbed(v, mark).is_empty(),
            "{} was disturbed: {:?}",
            v.name,
            disturbed(v, mark)
        );
    }
    // On the survivor both pairs are linked.
    let survivor = if victim == eu1 { eu2 } else { eu1 };
    let list: ParticipantList = reqwest::Client::new()
        .get(format!(
            "{}/internal/v1/participants",
            cl.procs[survivor].internal()
        ))
        .bearer_auth(INTERNAL_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (x, y) in [(&a1, &a2), (&a2, &a1), (&b1, &b2), (&b2, &b1)] {
        let p = list
            .participants
            .iter()
            .find(|p| p.participant_id == x.session.participant_id)
            .unwrap_or_else(|| panic!("{} not on the survivor", x.name));
        assert!(p.connected, "{} connected", x.name);
        assert_eq!(
            p.linked_to.as_ref(),
            Some(&y.session.participant_id),
            "{} linked",
            x.name
        );
    }
    // The victim is out of placement: a new eu visitor goes to the survivor,
    // and its record leaves the registry.
    let e1 = Visitor::arrive(&s1, "e1", "eu").await;
    assert_eq!(e1.node, survivor_id);
    wait_for!(
        "the killed node's record to expire",
        (!cl.records().await.contains_key(&victim_id)).then_some(())
    );
    let moved: f64 = cl
        .metric(sig1, "duet_signaling_relocations_total", &["node_lost", "\"ok\""])
        .await
        + cl.metric(sig2, "duet_signaling_relocations_total", &["node_lost", "\"ok\""])
            .await;
    assert_eq!(moved, 2.0, "two visitors moved off the killed node");

    // ---- SIGTERM the us node: it drains without cutting its call
    let mut u3 = Visitor::arrive(&s2, "u3", "us").await;
    assert_eq!(u3.node, us1_id, "an idle visitor on the us node");
    let u_mark = (u1.heard.len(), u2.heard.len());
    cl.procs[us1].terminate();
    let terminated = Instant::now();
    wait_for!(
        "the us node's record to say draining",
        cl.records()
            .await
            .get(&us1_id)
            .and_then(|r| r.draining.then_some(()))
    );
    // The idle visitor moves at once, to the fallback region; so does a new one.
    let m = u3.recv_until(|m| matches!(m, ServerMsg::Relocate { .. })).await;
    assert!(matches!(m, ServerMsg::Relocate { ref sfu, .. } if sfu.region == "eu"));
    assert_eq!(u3.node, survivor_id);
    let u4 = Visitor::arrive(&s1, "u4", "us").await;
    assert_eq!(u4.node, survivor_id, "nobody new on a draining node");
    // The call on the draining node goes on, and the node waits for it.
    media_flows(&mut u1, &mut u2).await;
    u1.catch_up().await;
    u2.catch_up().await;
    assert!(
        disturbed(&u1, u_mark.0).is_empty(),
        "u1: {:?}",
        disturbed(&u1, u_mark.0)
    );
    assert!(
        disturbed(&u2, u_mark.1).is_empty(),
        "u2: {:?}",
        disturbed(&u2, u_mark.1)
    );
    assert!(
        cl.procs[us1].child.try_wait().unwrap().is_none(),
        "the draining node waits for its call"
    );
    // They leave; the node exits 0 (its drain timeout is far away).
    u1.leave().await;
    u2.leave().await;
    let left = Instant::now();
    let status = wait_for!(
        "the drained node to exit",
        cl.procs[us1].child.try_wait().unwrap()
    );
    eprintln!(
        "multinode: SIGTERM {us1_id}: exited ({status}) {:?} after SIGTERM, {:?} after its call ended",
        terminated.elapsed(),
        left.elapsed()
    );
    assert!(status.success(), "drained node exit status: {status}");
    let drained = cl
        .metric(sig1, "duet_signaling_relocations_total", &["draining", "\"ok\""])
        .await
        + cl.metric(sig2, "duet_signaling_relocations_total", &["draining", "\"ok\""])
            .await;
    assert!(drained >= 1.0, "the idle visitor counted as moved for draining");

    // ---- nothing logged an error (the killed node aside)
    for p in &cl.procs {
        if p.name == cl.procs[victim].name {
            continue;
        }
        let errors = p.errors();
        assert!(
            errors.is_empty(),
            "{} logged errors:\n{}",
            p.name,
            errors.join("\n")
        );
    }
    for v in [a1, a2, b1, b2, e1, u3, u4] {
        v.leave().await;
    }
}

// ---------------------------------------------------------------- WebRTC client

#[derive(Default)]
struct MediaState {
    connected: bool,
    /// Packets received per sender name (from the `from-NAME:` labels).
    from: HashMap<String, usize>,
}

enum MediaCmd {
    Stop,
}

/// A WebRTC participant (sans-IO `rtc`, one UDP socket): offers one audio
/// and one video track, sends a labelled packet on each every 20 ms.
struct Media {
    state: Arc<Mutex<MediaState>>,
    cmd: mpsc::Sender<MediaCmd>,
    task: tokio::task::JoinHandle<()>,
}

type WsTx = futures::stream::SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type WsRx = futures::stream::SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>;

impl Media {
    async fn connect(url: &str, token: &str, name: &str) -> Media {
        let (ws, _) = tokio_tungstenite::connect_async(format!("{url}?token={token}"))
            .await
            .unwrap_or_else(|e| panic!("{name}: SFU WebSocket {url}: {e}"));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let (me, registry) = sfu::peer::media_engine_and_registry().unwrap();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(SettingEngineBuilder::new().build())
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .unwrap();
        let (audio_ssrc, video_ssrc) = (rand::random::<u32>(), rand::random::<u32>());
        let audio = pc
            .add_track(sfu::peer::outgoing_track(
                name,
                &format!("{name}-a"),
                RtpCodecKind::Audio,
                audio_ssrc,
                None,
            ))
            .unwrap();
        let video = pc
            .add_track(sfu::peer::outgoing_track(
                name,
                &format!("{name}-v"),
                RtpCodecKind::Video,
                video_ssrc,
                None,
            ))
            .unwrap();
        let offer = pc.create_offer(None).unwrap();
        pc.set_local_description(Instant::now(), offer.clone()).unwrap();
        let cand = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .unwrap();
        pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().unwrap())
            .unwrap();
        let (mut ws_tx, mut ws_rx) = ws.split();
        let offer = serde_json::to_string(&SfuClientMsg::Offer { sdp: offer.sdp }).unwrap();
        ws_tx.send(Message::Text(offer.into())).await.unwrap();
        let answer = loop {
            let m = tokio::time::timeout(WAIT, ws_rx.next())
                .await
                .unwrap_or_else(|_| panic!("{name}: no answer from the SFU"));
            let Some(Ok(Message::Text(t))) = m else {
                panic!("{name}: SFU WebSocket closed before the answer: {m:?}")
            };
            match serde_json::from_str::<SfuServerMsg>(&t).unwrap() {
                SfuServerMsg::Answer { sdp } => break sdp,
                SfuServerMsg::Error { code, message } => panic!("{name}: SFU refused: {code}: {message}"),
                _ => {}
            }
        };
        pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(answer).unwrap())
            .unwrap();
        let state = Arc::new(Mutex::new(MediaState::default()));
        let (cmd, cmd_rx) = mpsc::channel(4);
        let task = tokio::spawn(drive(
            pc,
            socket,
            local,
            (audio, video),
            (audio_ssrc, video_ssrc),
            state.clone(),
            cmd_rx,
            (ws_tx, ws_rx),
            name.to_owned(),
        ));
        Media { state, cmd, task }
    }

    async fn wait_connected(&self, name: &str) {
        let what = format!("{name}'s ICE/DTLS to the SFU");
        wait_for!(what, self.state.lock().unwrap().connected.then_some(()));
    }

    fn count(&self, who: &str) -> usize {
        self.state.lock().unwrap().from.get(who).copied().unwrap_or(0)
    }

    async fn stop(self) {
        let _ = self.cmd.send(MediaCmd::Stop).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

fn sender_name(payload: &[u8]) -> Option<String> {
    let at = payload.windows(5).position(|w| w == b"from-")? + 5;
    let rest = &payload[at..];
    let end = rest.iter().position(|b| *b == b':')?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    mut pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    senders: (RTCRtpSenderId, RTCRtpSenderId),
    ssrcs: (u32, u32),
    state: Arc<Mutex<MediaState>>,
    mut cmd_rx: mpsc::Receiver<MediaCmd>,
    (mut ws_tx, mut ws_rx): (WsTx, WsRx),
    name: String,
) {
    let mut buf = vec![0u8; 2048];
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let (mut aseq, mut vseq) = (rand::random::<u16>(), rand::random::<u16>());
    let (mut ats, mut vts) = (rand::random::<u32>(), rand::random::<u32>());
    let mut want_key = true;
    let mut counter = 0u64;
    let mut ws_open = true;
    loop {
        while let Some(w) = pc.poll_write() {
            let _ = socket.send_to(&w.message, w.transport.peer_addr).await;
        }
        while let Some(e) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = e
            {
                state.lock().unwrap().connected = true;
            }
        }
        while let Some(m) = pc.poll_read() {
            match m.message {
                RTCMessage::RtpPacket(_, p) => {
                    if let Some(who) = sender_name(&p.payload) {
                        *state.lock().unwrap().from.entry(who).or_default() += 1;
                    }
                }
                RTCMessage::RtcpPacket(_, _) => want_key = true,
                _ => {}
            }
        }
        let deadline = pc
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let _ = pc.handle_timeout(Instant::now());
            }
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, peer)) = r {
                    let _ = pc.handle_read(TaggedBytesMut {
                        now: Instant::now(),
                        transport: TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::UDP },
                        message: BytesMut::from(&buf[..n]),
                    });
                }
            }
            m = ws_rx.next(), if ws_open => match m {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(SfuServerMsg::Candidate { candidate }) = serde_json::from_str::<SfuServerMsg>(&t) {
                        let _ = pc.add_remote_candidate(RTCIceCandidateInit {
                            candidate: candidate.candidate,
                            sdp_mid: candidate.sdp_mid,
                            sdp_mline_index: candidate.sdp_mline_index,
                            ..Default::default()
                        });
                    }
                }
                Some(Ok(_)) => {}
                _ => ws_open = false,
            },
            c = cmd_rx.recv() => match c {
                Some(MediaCmd::Stop) | None => break,
            },
            _ = ticker.tick() => {
                counter += 1;
                let label = format!("from-{name}:{counter}");
                aseq = aseq.wrapping_add(1);
                ats = ats.wrapping_add(960);
                send_rtp(&mut pc, senders.0, ssrcs.0, sfu::peer::OPUS_PT, aseq, ats, label.clone().into_bytes());
                vseq = vseq.wrapping_add(1);
                vts = vts.wrapping_add(1800);
                // One-packet VP8 frame: descriptor (S=1), frame tag (key or delta), the label.
                let key = std::mem::take(&mut want_key);
                let mut frame = vec![0x10, if key { 0x10 } else { 0x11 }, 0, 0];
                frame.extend_from_slice(label.as_bytes());
                send_rtp(&mut pc, senders.1, ssrcs.1, sfu::peer::VP8_PT, vseq, vts, frame);
            }
        }
    }
    let _ = pc.close();
    while let Some(w) = pc.poll_write() {
        let _ = socket.send_to(&w.message, w.transport.peer_addr).await;
    }
    let _ = ws_tx.send(Message::Close(None)).await;
}

fn send_rtp(
    pc: &mut RTCPeerConnection,
    sender: RTCRtpSenderId,
    ssrc: u32,
    pt: u8,
    seq: u16,
    ts: u32,
    payload: Vec<u8>,
) {
    let pkt = rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker: true,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    };
    if let Some(mut s) = pc.rtp_sender(sender) {
        let _ = s.write_rtp(Instant::now(), pkt);
    }
}
