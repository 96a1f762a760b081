//! `bench sfu`: N pairs of synthetic WebRTC participants through a duet SFU.
//!
//! Placement, `--place browser` (default): exactly what a browser does —
//! `POST /api/session`, the SFU WebSocket (`offer` → `answer` +
//! `candidate`), then the signaling WebSocket `/ws` with `join`; the
//! queue pairs participants and signaling links them on the SFU.
//! `--place internal`: the bench itself admits participants through the
//! SFU's internal API, mints their SFU tokens (needs the SFU token secret)
//! and links pairs with `POST /internal/v1/link` (signaling is not involved).
//!
//! Media: every participant is a sans-IO `rtc` peer connection driven by
//! the one load thread (see `engine`), publishing VP8-like video and
//! Opus-like audio; receivers measure what the SFU forwards.

use crate::common::{self, ChildServer, LoadArgs, Server};
use crate::engine::{self, Link, ParticipantSetup, TurnPath};
use crate::floor;
use crate::procfs;
use crate::report::{self, OutputArgs, Report, Run};
use crate::rtcpeer;
use crate::turnclient;
use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use proto::sfu_api::{AdmitRequest, LinkRequest, PATH_LINK, PATH_NODE, PATH_PARTICIPANTS};
use proto::sfu_ws::{IceCandidate, SfuClientMsg, SfuServerMsg};
use proto::signal::{ClientMsg, Mode, ServerMsg, SessionRequest, SessionResponse};
use proto::token::{SfuClaims, SfuRole, TokenKey, AUD_SFU};
use proto::ParticipantId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Place {
    /// Sessions, SFU WebSocket, signaling queue (as browsers do).
    Browser,
    /// SFU internal API: admit, self-minted SFU tokens, link.
    Internal,
}

#[derive(Debug, clap::Args)]
pub struct SfuArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub out: OutputArgs,
    /// A running duet (signaling base URL, e.g. http://127.0.0.1:8080; start it with
    /// `duet up --rate-limits off`). Not given: the bench starts `duet up` itself.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// The duet binary to start when no --target is given.
    #[arg(long, default_value = "target/release/duet", value_name = "PATH")]
    pub duet_bin: PathBuf,
    /// How participants are placed and linked.
    #[arg(long, value_enum, default_value = "browser")]
    pub place: Place,
    /// The SFU internal API base URL (for --place internal with --target).
    #[arg(long, value_name = "URL")]
    pub internal: Option<String>,
    /// Bearer token of the SFU internal API.
    #[arg(long, value_name = "TOKEN")]
    pub internal_token: Option<String>,
    /// The SFU token secret (to mint participants' SFU tokens with --place internal).
    #[arg(long, value_name = "SECRET")]
    pub sfu_token_secret: Option<String>,
    /// PID of the duet process behind --target, for /proc readings (default: found from the SFU's media port).
    #[arg(long)]
    pub sfu_pid: Option<u32>,
    /// Also run the raw-UDP floor under the same load in this run and print SFU/floor.
    #[arg(long)]
    pub with_floor: bool,
    /// Participants set up concurrently.
    #[arg(long, default_value_t = 16)]
    pub setup_concurrency: usize,
    /// SRTP profiles the clients offer: `chromium` (libwebrtc's order, AES-CM-SHA1-80 first, then
    /// GCM-256, GCM-128: what the SFU negotiates with browsers), `gcm` (AES-128-GCM only) or
    /// `cm-sha1` (AES-CM-HMAC-SHA1-80 only).
    #[arg(long, value_enum, default_value = "chromium")]
    pub srtp_profile: rtcpeer::SrtpOffer,
    /// Every participant offers only a TURN relay candidate on duet's TURN (UDP):
    /// media goes client → TURN → in-process hand-off → SFU and back.
    #[arg(long)]
    pub via_turn: bool,
}

/// Where the SFU under test is and how to reach its APIs.
pub struct Target {
    http: String,
    internal: Option<(String, String)>,
    sfu_secret: Option<String>,
    pid: Option<u32>,
    _child: Option<ChildServer>,
    _data_dir: Option<TempDir>,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn random_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
}

/// Starts `duet up` on loopback with port 0 everywhere and known secrets.
pub fn start_duet(
    bin: &PathBuf,
    max_participants: usize,
    load: &LoadArgs,
) -> anyhow::Result<(ChildServer, Secrets, PathBuf)> {
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p duet` or give --duet-bin / --target",
            bin.display()
        );
    }
    let secrets = Secrets {
        sfu_token: random_secret(),
        internal: random_secret(),
        turn: random_secret(),
        session: random_secret(),
    };
    let dir = std::env::temp_dir().join(format!(
        "bench-duet-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "up",
        "--http-listen",
        "127.0.0.1:0",
        "--internal-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--media-listen",
        "127.0.0.1:0",
        "--turn-listen-udp",
        "127.0.0.1:0",
        "--turn-listen-tcp",
        "127.0.0.1:0",
        "--turn-listen-tls",
        "127.0.0.1:0",
        "--rate-limits",
        "off",
        "--log",
        "warn",
        "--max-participants",
        &max_participants.to_string(),
        "--data-dir",
    ])
    .arg(&dir)
    .args(["--sfu-token-secret", &secrets.sfu_token])
    .args(["--internal-token", &secrets.internal])
    .args(["--turn-secret", &secrets.turn])
    .args(["--session-secret", &secrets.session]);
    let child = ChildServer::spawn("duet up", cmd, "duet ready ", Duration::from_secs(60))?;
    child.prepare(load)?;
    Ok((child, secrets, dir))
}

pub struct Secrets {
    pub sfu_token: String,
    pub internal: String,
    pub turn: String,
    #[allow(dead_code)]
    pub session: String,
}

pub async fn target(a: &SfuArgs, report: &mut Report) -> anyhow::Result<Target> {
    if let Some(t) = &a.target {
        let internal = match (&a.internal, &a.internal_token) {
            (Some(u), Some(t)) => Some((u.trim_end_matches('/').to_owned(), t.clone())),
            _ => None,
        };
        if a.place == Place::Internal && (internal.is_none() || a.sfu_token_secret.is_none()) {
            bail!("--place internal with --target needs --internal, --internal-token and --sfu-token-secret");
        }
        report.notes.push(format!("target: running duet at {t}"));
        return Ok(Target {
            http: t.trim_end_matches('/').to_owned(),
            internal,
            sfu_secret: a.sfu_token_secret.clone(),
            // The process listening on the target's HTTP port (`duet up`), unless given.
            pid: a.sfu_pid.or_else(|| url_port(t).and_then(pid_of_tcp_port)),
            _child: None,
            _data_dir: None,
        });
    }
    let max = (a.load.steps().last().copied().unwrap_or(a.load.pairs) * 2 + 16).max(500);
    let (child, secrets, dir) = start_duet(&a.duet_bin, max, &a.load)?;
    let http = format!("http://{}", child.addr("http")?);
    let internal = format!("http://{}", child.addr("internal")?);
    report.notes.push(format!(
        "target: `{} up` started by the bench (loopback, port 0, --rate-limits off, --max-participants {max})",
        a.duet_bin.display()
    ));
    Ok(Target {
        http,
        internal: Some((internal, secrets.internal)),
        sfu_secret: Some(secrets.sfu_token),
        pid: Some(child.pid()),
        _child: Some(child),
        _data_dir: Some(TempDir(dir)),
    })
}

/// The port of an `http://host:port/…` URL.
fn url_port(u: &str) -> Option<u16> {
    let rest = u.split_once("://").map(|(_, r)| r).unwrap_or(u);
    let hostport = rest.split('/').next()?;
    hostport.rsplit_once(':')?.1.parse().ok()
}

fn ws_url(http: &str) -> String {
    if let Some(r) = http.strip_prefix("https://") {
        format!("wss://{r}")
    } else if let Some(r) = http.strip_prefix("http://") {
        format!("ws://{r}")
    } else {
        http.to_owned()
    }
}

/// One placed participant: its media setup and the WebSockets kept open.
struct Placed {
    setup: ParticipantSetup,
    session_token: Option<String>,
    participant: ParticipantId,
    media: Option<SocketAddr>,
}

/// A TURN server and credentials a participant relays through.
#[derive(Clone, Debug)]
pub struct ViaTurn {
    pub server: SocketAddr,
    pub creds: turnclient::Credentials,
    pub channel: u16,
}

/// SFU WebSocket: offer, answer + candidates; the socket then stays open
/// (closing it removes the participant) until `stop`. With `turn`, the
/// participant allocates a relay first and offers only that candidate.
async fn sfu_handshake(
    url: &str,
    token: &str,
    stop: CancellationToken,
    turn: Option<ViaTurn>,
    srtp: rtcpeer::SrtpOffer,
) -> anyhow::Result<(ParticipantSetup, Option<SocketAddr>)> {
    let mut socket = common::participant_socket()?;
    let local = socket.local_addr()?;
    let mut alloc = None;
    if let Some(v) = &turn {
        let v = v.clone();
        let (s, a) = tokio::task::spawn_blocking(move || {
            let a = turnclient::allocate(&socket, v.server, &v.creds);
            (socket, a)
        })
        .await?;
        socket = s;
        alloc = Some(a.context("TURN allocation for the relay candidate")?);
    }
    let mut off = rtcpeer::offer(local, alloc.as_ref().map(|a| a.relayed), srtp)?;
    let sep = if url.contains('?') { '&' } else { '?' };
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}{sep}token={token}"))
        .await
        .with_context(|| format!("SFU WebSocket {url}"))?;
    let offer = serde_json::to_string(&SfuClientMsg::Offer {
        sdp: off.offer_sdp.clone(),
    })?;
    ws.send(Message::text(offer)).await?;
    let mut answer = None;
    let mut cands: Vec<IceCandidate> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while answer.is_none() || cands.is_empty() {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("no answer and candidate from the SFU within 15 s")?
            .context("SFU WebSocket closed")??;
        let Message::Text(t) = msg else { continue };
        match serde_json::from_str::<SfuServerMsg>(t.as_str()) {
            Ok(SfuServerMsg::Answer { sdp }) => answer = Some(sdp),
            Ok(SfuServerMsg::Candidate { candidate }) => cands.push(candidate),
            Ok(SfuServerMsg::Error { code, message }) => bail!("SFU refused: {code}: {message}"),
            _ => {}
        }
    }
    let sdp = answer.context("no answer")?;
    let media = cands.iter().find_map(|c| candidate_addr(&c.candidate));
    rtcpeer::answer(&mut off, sdp, &cands)?;
    let via = match (alloc, turn) {
        (Some(mut a), Some(v)) => {
            let peer = media.context("the SFU sent no usable candidate")?;
            let channel = v.channel;
            let (s, r) = tokio::task::spawn_blocking(move || {
                let r = a.bind_channel(&socket, peer, channel).map(|()| a);
                (socket, r)
            })
            .await?;
            socket = s;
            let a = r.context("TURN permission/channel to the SFU")?;
            Some(TurnPath {
                server: a.server,
                channel,
                relayed: a.relayed,
                peer,
            })
        }
        _ => None,
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    break;
                }
                m = ws.next() => if m.is_none() || matches!(m, Some(Err(_))) { break },
            }
        }
    });
    let setup = ParticipantSetup {
        socket,
        link: Link::Rtc {
            pc: Box::new(off.pc),
            video_ssrc: off.video_ssrc,
            audio_ssrc: off.audio_ssrc,
            video_pt: rtcpeer::VP8_PT,
            audio_pt: rtcpeer::OPUS_PT,
            via,
        },
        publish: true,
    };
    Ok((setup, media))
}

/// `candidate:… 1 udp PRIO IP PORT typ host` → IP:PORT.
fn candidate_addr(c: &str) -> Option<SocketAddr> {
    let f: Vec<&str> = c.split_whitespace().collect();
    let ip = f.get(4)?;
    let port = f.get(5)?;
    format!("{ip}:{port}").parse().ok()
}

/// The UDP TURN server and credentials of a session's `ice_servers`.
fn turn_of(s: &SessionResponse, i: usize) -> anyhow::Result<ViaTurn> {
    for srv in &s.ice_servers {
        for url in &srv.urls {
            let Some(rest) = url.strip_prefix("turn:") else {
                continue;
            };
            let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
            if !(query.is_empty() || query.contains("transport=udp")) {
                continue;
            }
            let server: SocketAddr = hostport.parse().with_context(|| format!("TURN URL {url}"))?;
            let (Some(u), Some(p)) = (&srv.username, &srv.credential) else {
                continue;
            };
            return Ok(ViaTurn {
                server,
                creds: turnclient::Credentials {
                    username: u.clone(),
                    password: p.clone(),
                },
                channel: 0x4000 + (i % 0x3fff) as u16,
            });
        }
    }
    bail!("the session's ice_servers have no turn:…?transport=udp with credentials")
}

async fn place_browser(
    http: &reqwest::Client,
    t: &Target,
    run_id: &str,
    i: usize,
    stop: CancellationToken,
    via_turn: bool,
    srtp: rtcpeer::SrtpOffer,
) -> anyhow::Result<Placed> {
    let req = SessionRequest {
        accept_rules: true,
        device_id: format!("bench{run_id}x{i}"),
        region: None,
    };
    let resp = http
        .post(format!("{}/api/session", t.http))
        .json(&req)
        .send()
        .await
        .context("POST /api/session")?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!("POST /api/session: {status}: {body}");
    }
    let s: SessionResponse = resp.json().await.context("session response")?;
    let turn = if via_turn { Some(turn_of(&s, i)?) } else { None };
    let (setup, media) = sfu_handshake(&s.sfu.url, &s.sfu.token, stop, turn, srtp).await?;
    Ok(Placed {
        setup,
        session_token: Some(s.token),
        participant: s.participant_id,
        media,
    })
}

struct InternalApi {
    base: String,
    token: String,
    key: TokenKey,
    node: proto::NodeId,
    ws_url: String,
}

async fn internal_api(http: &reqwest::Client, t: &Target) -> anyhow::Result<InternalApi> {
    let (base, token) = t.internal.clone().context("no internal API")?;
    let secret = t.sfu_secret.clone().context("no SFU token secret")?;
    let node: proto::registry::NodeRecord = http
        .get(format!("{base}{PATH_NODE}"))
        .bearer_auth(&token)
        .send()
        .await
        .context("GET node")?
        .error_for_status()
        .context("GET node")?
        .json()
        .await?;
    Ok(InternalApi {
        base,
        token,
        key: TokenKey::new(secret.as_bytes()),
        node: node.node_id,
        ws_url: node.public_ws_url,
    })
}

async fn place_internal(
    http: &reqwest::Client,
    api: &InternalApi,
    run_id: &str,
    i: usize,
    stop: CancellationToken,
    srtp: rtcpeer::SrtpOffer,
) -> anyhow::Result<Placed> {
    let pid = ParticipantId::new(format!("bench{run_id}x{i}"));
    http.post(format!("{}{PATH_PARTICIPANTS}", api.base))
        .bearer_auth(&api.token)
        .json(&AdmitRequest {
            participant_id: pid.clone(),
            role: SfuRole::User,
        })
        .send()
        .await
        .context("admit")?
        .error_for_status()
        .context("admit")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token = api.key.mint(&SfuClaims {
        sub: pid.clone(),
        aud: AUD_SFU.into(),
        exp: now + 3600,
        iat: now,
        node: api.node.clone(),
        role: SfuRole::User,
        tp: None,
    })?;
    let (setup, media) = sfu_handshake(&api.ws_url, &token, stop, None, srtp).await?;
    Ok(Placed {
        setup,
        session_token: None,
        participant: pid,
        media,
    })
}

/// Signaling WebSocket: `join` (video), wait for `matched`; stays open until `stop`.
async fn join_queue(ws_base: &str, token: &str, stop: CancellationToken) -> anyhow::Result<String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{ws_base}/ws?token={token}"))
        .await
        .context("signaling WebSocket")?;
    let join = serde_json::to_string(&ClientMsg::Join {
        mode: Mode::Video,
        interests: vec![],
        lang: None,
    })?;
    ws.send(Message::text(join)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let pairing = loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("not matched within 30 s")?
            .context("signaling WebSocket closed")??;
        let Message::Text(t) = msg else { continue };
        match serde_json::from_str::<ServerMsg>(t.as_str()) {
            Ok(ServerMsg::Matched { pairing_id, .. }) => break pairing_id.to_string(),
            Ok(ServerMsg::Error(e)) => bail!("signaling: {}: {}", e.code, e.message),
            _ => {}
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    break;
                }
                m = ws.next() => if m.is_none() || matches!(m, Some(Err(_))) { break },
            }
        }
    });
    Ok(pairing)
}

/// Finds the process holding the UDP socket bound to `port` (/proc/net/udp + fds).
fn pid_of_udp_port(port: u16) -> Option<u32> {
    pid_of_port(&["/proc/net/udp", "/proc/net/udp6"], port)
}

/// Finds the process listening on TCP `port` (the target's HTTP port).
fn pid_of_tcp_port(port: u16) -> Option<u32> {
    pid_of_port(&["/proc/net/tcp", "/proc/net/tcp6"], port)
}

fn pid_of_port(tables: &[&str], port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in tables {
        let Ok(s) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in s.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(local) = f.get(1) else { continue };
            let Some((_, p)) = local.rsplit_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() == Some(port) {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.to_str() == Some(i.as_str())) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// One measurement with `pairs` pairs against the target; `via_turn`:
/// every participant reaches the SFU only through duet's TURN (UDP).
pub async fn run_step(
    a: &SfuArgs,
    t: &mut Target,
    pairs: usize,
    step: usize,
    via_turn: bool,
    name: &str,
) -> anyhow::Result<Run> {
    if via_turn && a.place != Place::Browser {
        bail!("--via-turn needs --place browser (TURN credentials come with the session)");
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let run_id = format!("{:08x}s{step}", rand::random::<u32>());
    let rss_idle: Option<u64> = match t.pid {
        Some(pid) => procfs::process_rss(pid).ok(),
        None => None,
    };
    let n = pairs * 2;
    let api = if a.place == Place::Internal {
        Some(internal_api(&http, t).await?)
    } else {
        None
    };
    let mut placed: Vec<Placed> = Vec::with_capacity(n);
    {
        let results: Vec<anyhow::Result<Placed>> = futures::stream::iter(0..n)
            .map(|i| {
                let (http, t, api, run_id, stop) = (&http, &*t, api.as_ref(), run_id.as_str(), stop.clone());
                async move {
                    match api {
                        Some(api) => place_internal(http, api, run_id, i, stop, a.srtp_profile).await,
                        None => place_browser(http, t, run_id, i, stop, via_turn, a.srtp_profile).await,
                    }
                }
            })
            .buffer_unordered(a.setup_concurrency.max(1))
            .collect()
            .await;
        for r in results {
            placed.push(r?);
        }
        if !a.load.quiet {
            eprintln!("[{name}] {n} participants placed ({:?})", a.place);
        }
    }
    // The process holding the SFU's media socket is the one to read (a
    // guess from the HTTP port may have named signaling in a split setup).
    let mut rss_idle = rss_idle;
    if a.sfu_pid.is_none() {
        if let Some(port) = placed.iter().find_map(|p| p.media).map(|m| m.port()) {
            if let Some(media_pid) = pid_of_udp_port(port) {
                if t.pid != Some(media_pid) {
                    t.pid = Some(media_pid);
                    // No baseline before the participants: RSS per participant reads ~0.
                    rss_idle = procfs::process_rss(media_pid).ok();
                }
            }
        }
    }
    let tokens: Vec<Option<String>> = placed.iter().map(|p| p.session_token.clone()).collect();
    let pids: Vec<ParticipantId> = placed.iter().map(|p| p.participant.clone()).collect();
    let setups: Vec<ParticipantSetup> = placed.into_iter().map(|p| p.setup).collect();
    let profile = a.load.profile();
    let handle = engine::spawn(setups, profile.clone(), a.load.pin_load, a.load.realtime)?;
    // ICE + DTLS up for everybody before anyone is linked.
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(30) + Duration::from_millis(30 * n as u64);
    let mut last_line = String::new();
    loop {
        let ready = handle.progress.ready.load(std::sync::atomic::Ordering::Relaxed);
        let failed = handle.progress.failed.load(std::sync::atomic::Ordering::Relaxed);
        let line = format!("[{name}] ICE+DTLS: {ready}/{n} connected, {failed} failed");
        if !a.load.quiet && line != last_line {
            eprint!("\r{line}   ");
            last_line = line;
        }
        if ready == n {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("only {ready}/{n} participants connected to the SFU ({failed} failed)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !a.load.quiet {
        eprintln!();
    }
    match &api {
        Some(api) => {
            for pair in pids.chunks(2) {
                if let [x, y] = pair {
                    http.post(format!("{}{PATH_LINK}", api.base))
                        .bearer_auth(&api.token)
                        .json(&LinkRequest {
                            a: x.clone(),
                            b: y.clone(),
                        })
                        .send()
                        .await
                        .context("link")?
                        .error_for_status()
                        .context("link")?;
                }
            }
        }
        None => {
            let ws_base = ws_url(&t.http);
            let joins: Vec<anyhow::Result<String>> = futures::stream::iter(tokens.iter().flatten())
                .map(|tok| join_queue(&ws_base, tok, stop.clone()))
                .buffer_unordered(64)
                .collect()
                .await;
            let mut pairings = std::collections::HashMap::<String, usize>::new();
            for j in joins {
                *pairings.entry(j?).or_default() += 1;
            }
            if pairings.len() != pairs || pairings.values().any(|&c| c != 2) {
                bail!(
                    "the queue formed {} pairings for {} participants",
                    pairings.len(),
                    n
                );
            }
        }
    }
    let server = match (t.pid, rss_idle) {
        (Some(pid), Some(rss_idle)) => Some(Server { pid, rss_idle }),
        _ => None,
    };
    let flowing = if profile.publish_video { n } else { 0 };
    let run = common::measure(
        name,
        handle,
        server,
        pairs,
        flowing,
        a.load.warmup,
        a.load.window(),
        a.load.quiet,
    )
    .await;
    stop.cancel();
    // Let the SFU notice the closed WebSockets before the next step.
    tokio::time::sleep(Duration::from_millis(500)).await;
    run
}

pub async fn run(a: SfuArgs) -> anyhow::Result<()> {
    let mut report = Report::new("sfu", procfs::machine());
    report.set_profile(&a.load.profile());
    let mut t = target(&a, &mut report).await?;
    report.notes.push(match a.place {
        Place::Browser => "placement: as browsers (POST /api/session, SFU WebSocket offer/answer, signaling /ws join; the queue pairs them, signaling links them on the SFU)".into(),
        Place::Internal => "placement: SFU internal API (admit, bench-minted SFU tokens, POST /internal/v1/link); signaling not involved".into(),
    });
    report.notes.push("clients: webrtc-rs sans-IO rtc 0.21.1 peer connections (offerer, full ICE controlling, DTLS client), all driven by one mio/recvmmsg loop; latency includes the clients' SRTP protect/unprotect".into());
    report.notes.push(format!(
        "SRTP: the clients offer --srtp-profile {} ({}); the SFU picks; each row's `srtp` is what the clients negotiated (getStats srtpCipher)",
        a.srtp_profile.name(),
        a.srtp_profile
            .profiles()
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut step = 0usize;
    let (runs, ramp) = {
        let a = &a;
        let t = &mut t;
        let mut results = Vec::new();
        let mut best: Option<(f64, usize)> = None;
        let mut stopped = "reached --ramp-max-pairs".to_owned();
        for pairs in a.load.steps() {
            step += 1;
            let run = match run_step(a, t, pairs, step, a.via_turn, "sfu").await {
                Ok(r) => r,
                Err(e) if a.load.ramp && !results.is_empty() => {
                    stopped = format!("step with {pairs} pairs failed: {e:#}");
                    break;
                }
                Err(e) => return Err(e),
            };
            let ok = run.sustainable;
            if ok {
                best = Some((run.received_pps, pairs));
            } else {
                stopped = format!(
                    "{pairs} pairs: loss {:.2}% (limit {}%), p99 {:.0} µs (limit {:.0} µs)",
                    run.loss_pct,
                    report::LOSS_LIMIT_PCT,
                    run.latency.p99_us,
                    report::P99_LIMIT_US
                );
            }
            results.push(run);
            if !ok {
                break;
            }
        }
        let ramp = a.load.ramp.then(|| report::RampResult {
            name: "sfu".into(),
            highest_sustainable_pps: best.map(|b| b.0).unwrap_or(0.0),
            at_pairs: best.map(|b| b.1).unwrap_or(0),
            stopped_because: stopped,
        });
        (results, ramp)
    };
    if t.pid.is_none() {
        report.notes.push("server CPU/RSS not measured: give --sfu-pid (the SFU's process was not found from its media port)".into());
    } else {
        report.notes.push("server CPU is the whole duet process (SFU media loop, TURN, signaling, HTTP); only the media loop is busy during the window".into());
    }
    report.runs.extend(runs);
    report.ramps.extend(ramp);
    drop(t);
    if a.with_floor {
        let (runs, ramp) = floor::run(&a.load, "floor").await?;
        report.runs.extend(runs);
        report.ramps.extend(ramp);
        report.compare("sfu/floor", "sfu", "floor");
    }
    report::emit(&report, &a.out)
}
