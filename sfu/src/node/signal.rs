//! Commands (admission, WebSocket sessions, offers, links, watching), the
//! legs' handshakes (STUN, DTLS) and housekeeping.

use super::leg::{Leg, LegEvent, LegOutput};
use super::participant::{Kind, OutSlot, OutTrack, Participant, PublishedPts};
use super::{CommandResult, Node, NodeCommand, NodeError, NodeEvent};
use crate::endpoint::ice::IceCredentials;
use crate::endpoint::sdp::{self, AnswerParams, Direction, MediaKind, Offer, OutgoingStream};
use crate::extensions::LegExtensions;
use crate::graph::Change;
use crate::munger::{Munger, Throttle};
use crate::peer::{AUDIO_CLOCK, OPUS_PT, VIDEO_CLOCK, VP8_PT};
use crate::routing::{Key, PathAddr};
use crate::stream::reports::SendStats;
use proto::sfu_api::{SfuEvent, WatchRequest};
use proto::sfu_ws::{IceCandidate, PeerState, SfuServerMsg};
use proto::token::SfuRole;
use proto::ParticipantId;
use std::time::Instant;

impl Node {
    pub(super) fn command(&mut self, cmd: NodeCommand, now: Instant) -> Result<CommandResult, NodeError> {
        match cmd {
            NodeCommand::Admit { pid, role } => self.admit(pid, role, now),
            NodeCommand::Join { pid, session } => {
                let key = *self.by_pid.get(&pid).ok_or(NodeError::NotFound(pid))?;
                if let Some(p) = self.participants.get_mut(&key) {
                    if p.session.is_none() {
                        p.session = Some(session);
                        p.joined_at = Some(now);
                    }
                }
            }
            NodeCommand::Offer { pid, session, sdp } => {
                if let Some(key) = self.session_key(&pid, session) {
                    self.offer(key, &sdp, now);
                }
            }
            // ICE-lite answers the browser's checks: remote candidates are
            // learnt from those checks, never from signaling.
            NodeCommand::Candidate { .. } => {}
            NodeCommand::Leave { pid, session, reason } => {
                if let Some(key) = self.session_key(&pid, session) {
                    self.mark_removed(key, reason);
                }
            }
            NodeCommand::Kick { pid } => {
                let found = self.by_pid.get(&pid).copied();
                if let Some(key) = found {
                    self.mark_removed(key, "kicked");
                }
                return Ok(CommandResult::Found(found.is_some()));
            }
            NodeCommand::Link { a, b } => {
                let (ka, kb) = self.users(&a, &b)?;
                tracing::debug!(target: "duet::timing", %a, %b, "link applied");
                let c = self.graph.link(ka, kb);
                self.apply(c, now);
            }
            NodeCommand::Unlink { a, b } => {
                let (ka, kb) = self.users(&a, &b)?;
                let c = self.graph.unlink(ka, kb);
                self.apply(c, now);
            }
            NodeCommand::Watch(req) => self.watch(req, now)?,
            NodeCommand::KeyframeInterval(iv) => self.keyframe_interval = iv,
            NodeCommand::HoldVideo { pid, held } => {
                let key = *self.by_pid.get(&pid).ok_or(NodeError::NotFound(pid))?;
                self.hold_video(key, held, now);
            }
        }
        Ok(CommandResult::Done)
    }

    /// The partner's video track stops taking (or takes again) this source's
    /// packets: its munger loses (or regains) the source, so numbering stays
    /// continuous and a release waits for a keyframe. The next link sets the
    /// track's source afresh, which ends a hold with the pairing.
    fn hold_video(&mut self, key: Key, held: bool, now: Instant) {
        let sinks: Vec<_> = self.graph.sinks(key).to_vec();
        for (sink, slot) in sinks {
            let Some(p) = self.participants.get_mut(&sink) else {
                continue;
            };
            if p.role != SfuRole::User {
                continue;
            }
            if let Some(out) = p.slots.get_mut(usize::from(slot)) {
                out.video.munger.switch_source((!held).then_some(key));
            }
        }
        if !held {
            self.request_keyframe(key, "switch", true, now);
        }
    }

    fn admit(&mut self, pid: ParticipantId, role: SfuRole, now: Instant) {
        if self.by_pid.contains_key(&pid) {
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.by_pid.insert(pid.clone(), key);
        let throttle = Throttle::new(self.config.keyframe_request_min_interval);
        self.participants
            .insert(key, Participant::new(key, pid, role, throttle, now));
    }

    fn session_key(&self, pid: &ParticipantId, session: u64) -> Option<Key> {
        let key = *self.by_pid.get(pid)?;
        (self.participants.get(&key)?.session == Some(session)).then_some(key)
    }

    fn users(&self, a: &ParticipantId, b: &ParticipantId) -> Result<(Key, Key), NodeError> {
        if a == b {
            return Err(NodeError::BadRequest("a and b must differ"));
        }
        let key = |pid: &ParticipantId| -> Result<Key, NodeError> {
            let k = *self
                .by_pid
                .get(pid)
                .ok_or_else(|| NodeError::NotFound(pid.clone()))?;
            match self.participants.get(&k) {
                Some(p) if p.role == SfuRole::User => Ok(k),
                Some(_) => Err(NodeError::BadRequest("only users can be linked")),
                None => Err(NodeError::NotFound(pid.clone())),
            }
        };
        Ok((key(a)?, key(b)?))
    }

    fn watch(&mut self, req: WatchRequest, now: Instant) -> Result<(), NodeError> {
        let w = *self
            .by_pid
            .get(&req.watcher)
            .ok_or_else(|| NodeError::NotFound(req.watcher.clone()))?;
        if self.participants.get(&w).map(|p| p.role) != Some(SfuRole::Watcher) {
            return Err(NodeError::BadRequest(
                "watcher must be admitted with role watcher",
            ));
        }
        let change = if req.stop {
            self.graph.unwatch(w)
        } else {
            let (a, b) = self.users(&req.a, &req.b)?;
            self.graph.watch(w, a, b)
        };
        self.apply(change, now);
        Ok(())
    }

    /// Points the mungers at their new sources and asks those for keyframes.
    pub(super) fn apply(&mut self, change: Change, now: Instant) {
        for ((sink, slot), src) in change.switched {
            let sink_connected = self.participants.get(&sink).is_some_and(|p| p.connected);
            if let Some(out) = self
                .participants
                .get_mut(&sink)
                .and_then(|p| p.slots.get_mut(usize::from(slot)))
            {
                if let Some(old) = out.video.munger.source().filter(|old| Some(*old) != src) {
                    self.remb.unsubscribe(old, sink);
                }
                out.audio.munger.switch_source(src);
                out.video.munger.switch_source(src);
                out.switch = src.map(|_| super::participant::SwitchWatch {
                    at: now,
                    first_packet: None,
                });
            }
            // A sink still connecting could not receive the keyframe, and
            // its connection asks for one (`on_media_ready`): a request now
            // would only spend the publisher's budget, since libwebrtc
            // ignores a keyframe request within 300 ms of the one before
            // (kMinKeyframeSendIntervalMs, video/encoder_rtcp_feedback.cc).
            if let (Some(src), true) = (src, sink_connected) {
                self.request_keyframe(src, "switch", true, now);
            }
        }
    }

    // ---- offer / answer ---------------------------------------------------

    fn offer(&mut self, key: Key, text: &str, now: Instant) {
        let result = sdp::parse_offer(text)
            .map_err(|e| e.to_string())
            .and_then(|offer| {
                let answer = if self.participants.get(&key).is_some_and(|p| p.leg.is_some()) {
                    self.restart(key, &offer)
                } else {
                    self.first_offer(key, &offer, now)
                }?;
                Ok((answer, self.host_candidate(&offer)))
            });
        match result {
            Ok((answer, candidate)) => {
                self.send_to_client(key, SfuServerMsg::Answer { sdp: answer });
                self.send_to_client(key, SfuServerMsg::Candidate { candidate });
            }
            Err(message) => {
                tracing::debug!(%message, "offer refused");
                self.send_to_client(
                    key,
                    SfuServerMsg::Error {
                        code: "bad_offer".into(),
                        message,
                    },
                );
            }
        }
    }

    fn host_candidate(&self, offer: &Offer) -> IceCandidate {
        let (index, mid) = offer
            .media
            .iter()
            .enumerate()
            .find(|(_, m)| m.accepted())
            .map_or((0, "0".to_owned()), |(i, m)| (i, m.mid.clone()));
        IceCandidate {
            candidate: format!("candidate:{}", sdp::host_candidate(self.config.advertised)),
            sdp_mid: Some(mid),
            sdp_mline_index: u16::try_from(index).ok(),
        }
    }

    fn new_ssrc(&mut self) -> u32 {
        self.rng.next_u32() | 1
    }

    fn first_offer(&mut self, key: Key, offer: &Offer, now: Instant) -> Result<String, String> {
        let role = self.participants.get(&key).ok_or("gone")?.role;
        let n_slots = if role == SfuRole::Watcher { 2 } else { 1 };
        let pts = published_pts(offer);
        let mut slots = Vec::new();
        for _ in 0..n_slots {
            let (a, v, rtx) = (self.new_ssrc(), self.new_ssrc(), self.new_ssrc());
            slots.push(OutSlot {
                audio: out_track(
                    Munger::new(a, pts.opus.unwrap_or(OPUS_PT), AUDIO_CLOCK, false),
                    None,
                ),
                video: out_track(
                    Munger::new(v, pts.vp8.unwrap_or(VP8_PT), VIDEO_CLOCK, true),
                    pts.vp8_rtx.map(|pt| (rtx, pt)),
                ),
                switch: None,
            });
        }
        for (i, s) in slots.iter_mut().enumerate() {
            let src = self.graph.source((key, i as u8));
            s.audio.munger.switch_source(src);
            s.video.munger.switch_source(src);
            // Linked before its offer: the switch counts from here.
            s.switch = src.map(|_| super::participant::SwitchWatch {
                at: now,
                first_packet: None,
            });
        }
        let local = IceCredentials::random(&mut *self.rng);
        let session_id = self.rng.next_u64() >> 2;
        let answer = self.write_answer(offer, &local, &slots, session_id, 1);
        let leg = Leg::new(
            local.clone(),
            offer.ice.clone(),
            self.identity.clone(),
            offer.fingerprint.clone(),
            self.config.dtls_timeout,
            now,
        );
        let p = self.participants.get_mut(&key).ok_or("gone")?;
        p.slots = slots;
        p.leg = Some(leg);
        p.sdp_session = (session_id, 1);
        p.pts = pts;
        p.incoming = published_streams(offer);
        p.extensions = LegExtensions::from_sdp(&answer);
        self.routing.replace_ufrag(key, &local.ufrag);
        Ok(answer)
    }

    /// A later offer: an ICE restart (new credentials both ways); tracks,
    /// SSRCs, DTLS and SRTP stay.
    fn restart(&mut self, key: Key, offer: &Offer) -> Result<String, String> {
        let local = IceCredentials::random(&mut *self.rng);
        let p = self.participants.get_mut(&key).ok_or("gone")?;
        p.sdp_session.1 += 1;
        let (session_id, version) = p.sdp_session;
        let p = self.participants.get(&key).ok_or("gone")?;
        let answer = self.write_answer(offer, &local, &p.slots, session_id, version);
        let p = self.participants.get_mut(&key).ok_or("gone")?;
        if let Some(leg) = p.leg.as_mut() {
            leg.restart_ice(local.clone(), &offer.ice);
        }
        p.extensions = LegExtensions::from_sdp(&answer);
        // The old ufrag keeps routing until a check proves the new one.
        self.routing.register_ufrag(&local.ufrag, key);
        Ok(answer)
    }

    fn write_answer(
        &self,
        offer: &Offer,
        local: &IceCredentials,
        slots: &[OutSlot],
        session_id: u64,
        session_version: u64,
    ) -> String {
        let senders = outgoing_streams(offer, slots);
        let params = AnswerParams {
            session_id,
            session_version,
            ice: local,
            fingerprint: self.identity.fingerprint(),
            candidate: self.config.advertised,
            cname: super::feedback::CNAME,
            senders: &senders,
        };
        sdp::write_answer(offer, &params)
    }

    // ---- handshakes -------------------------------------------------------

    pub(super) fn on_stun(&mut self, key: Key, path: PathAddr, buf: super::buffer::PacketBuf, now: Instant) {
        let mut out = LegOutput::default();
        if let Some(leg) = self.participants.get_mut(&key).and_then(|p| p.leg.as_mut()) {
            leg.handle_stun(path, buf.as_slice(), now, &mut out);
        } else {
            self.metrics.drop("unknown_path");
        }
        self.pool.put(buf);
        if let Some(confirmed) = out.confirmed_path.take() {
            self.routing.confirm(confirmed, key, now);
        }
        self.send_leg_output(key, out, now);
    }

    pub(super) fn on_dtls(&mut self, key: Key, path: PathAddr, buf: super::buffer::PacketBuf, now: Instant) {
        let mut out = LegOutput::default();
        if let Some(leg) = self.participants.get_mut(&key).and_then(|p| p.leg.as_mut()) {
            leg.handle_dtls(path, buf.as_slice(), now, &mut out);
        }
        self.pool.put(buf);
        self.send_leg_output(key, out, now);
    }

    pub(super) fn leg_timeout(&mut self, key: Key, now: Instant) {
        let mut out = LegOutput::default();
        if let Some(leg) = self.participants.get_mut(&key).and_then(|p| p.leg.as_mut()) {
            leg.handle_timeout(now, &mut out);
        }
        self.send_leg_output(key, out, now);
    }

    /// Sends what a leg produced and acts on its state changes.
    pub(super) fn send_leg_output(&mut self, key: Key, out: LegOutput, now: Instant) {
        for (path, bytes) in out.transmits {
            self.transmit_copy(key, path, &bytes);
        }
        while let Some(ev) = self
            .participants
            .get_mut(&key)
            .and_then(|p| p.leg.as_mut())
            .and_then(Leg::poll_event)
        {
            self.on_leg_event(key, ev, now);
        }
    }

    fn on_leg_event(&mut self, key: Key, ev: LegEvent, now: Instant) {
        match ev {
            LegEvent::IceConnected => {
                if let Some(p) = self.participants.get_mut(&key) {
                    p.ice_connected_at.get_or_insert(now);
                    p.via_turn = p.path().is_some_and(|path| path.is_turn());
                }
                self.send_to_client(
                    key,
                    SfuServerMsg::State {
                        state: PeerState::Connecting,
                    },
                );
            }
            LegEvent::PathSelected(path) => {
                if let Some(p) = self.participants.get_mut(&key) {
                    p.via_turn = path.is_turn();
                }
            }
            LegEvent::IceRestartCompleted => {
                let ufrag = self
                    .participants
                    .get(&key)
                    .and_then(|p| p.leg.as_ref())
                    .map(|l| l.ice.local_credentials().ufrag.clone());
                if let Some(ufrag) = ufrag {
                    self.routing.replace_ufrag(key, &ufrag);
                }
            }
            LegEvent::IceFailed => self.mark_removed(key, "ice_failed"),
            LegEvent::DtlsFailed => self.mark_removed(key, "dtls_failed"),
            LegEvent::Closed => self.mark_removed(key, "connection_closed"),
            LegEvent::MediaReady(profile) => self.on_media_ready(key, profile, now),
        }
    }

    fn on_media_ready(&mut self, key: Key, profile: crate::endpoint::srtp::SrtpProfile, now: Instant) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if p.connected {
            return;
        }
        p.connected = true;
        p.via_turn = p.path().is_some_and(|path| path.is_turn());
        tracing::debug!(participant = %p.pid, profile = profile.name(), "media ready");
        let pid = p.pid.clone();
        let sources: Vec<Key> = (0..p.slots.len() as u8)
            .filter_map(|s| self.graph.source((key, s)))
            .collect();
        self.send_to_client(
            key,
            SfuServerMsg::State {
                state: PeerState::Connected,
            },
        );
        self.events
            .push_back(NodeEvent::Sfu(SfuEvent::Connected { participant_id: pid }));
        // Whatever this participant receives starts with a keyframe.
        for s in sources {
            self.request_keyframe(s, "switch", true, now);
        }
    }

    // ---- housekeeping -----------------------------------------------------

    pub(super) fn tick(&mut self, now: Instant) {
        self.routing.expire(now);
        let (admit_ttl, connect_timeout, dtls_timeout) = (
            self.config.admit_ttl,
            self.config.connect_timeout,
            self.config.dtls_timeout,
        );
        let mut expired = Vec::new();
        let mut periodic = Vec::new();
        let mut oldest_snapshot = std::time::Duration::ZERO;
        for p in self.participants.values_mut() {
            p.video_rate.update(p.traffic.video_bytes_in, now);
            match p.joined_at {
                None if now.saturating_duration_since(p.admitted_at) > admit_ttl => {
                    expired.push((p.key, "admission_expired"));
                }
                Some(j) if !p.connected && now.saturating_duration_since(j) > connect_timeout => {
                    expired.push((p.key, "connect_timeout"));
                }
                _ => {}
            }
            if let Some(ice_at) = p.ice_connected_at {
                if !p.connected && now.saturating_duration_since(ice_at) > dtls_timeout {
                    expired.push((p.key, "dtls_failed"));
                }
            }
            if p.connected && p.role == SfuRole::User {
                if let Some(k) = p.snapshot.latest() {
                    oldest_snapshot = oldest_snapshot.max(now.saturating_duration_since(k.at));
                }
                if let Some(iv) = self.keyframe_interval {
                    if now.saturating_duration_since(p.last_periodic) >= iv {
                        p.last_periodic = now;
                        periodic.push(p.key);
                    }
                }
            }
        }
        for (k, reason) in expired {
            self.mark_removed(k, reason);
        }
        for k in periodic {
            self.request_keyframe(k, "periodic", false, now);
        }
        for source in self.remb.releases_due(now) {
            self.send_remb(source, crate::remb::RELEASE_BPS, now);
        }
        self.feedback_tick(now);
        self.metrics
            .snapshot_age_seconds
            .set(oldest_snapshot.as_secs() as i64);
    }
}

fn out_track(munger: Munger, rtx: Option<(u32, u8)>) -> OutTrack {
    let munger_is_video = munger.is_video();
    OutTrack {
        report: SendStats::new(if munger_is_video { VIDEO_CLOCK } else { AUDIO_CLOCK }),
        munger,
        rtx,
        rtx_seq: 0,
    }
}

/// The payload types the offerer uses for Opus, VP8 and VP8's RTX.
fn published_pts(offer: &Offer) -> PublishedPts {
    let first = |kind: MediaKind| offer.media.iter().find(|m| m.kind == kind && m.accepted());
    PublishedPts {
        opus: first(MediaKind::Audio).and_then(|m| m.payload_type),
        vp8: first(MediaKind::Video).and_then(|m| m.payload_type),
        vp8_rtx: first(MediaKind::Video).and_then(|m| m.rtx_payload_type),
    }
}

fn sends(d: Direction) -> bool {
    matches!(d, Direction::SendRecv | Direction::SendOnly)
}

fn receives(d: Direction) -> bool {
    matches!(d, Direction::SendRecv | Direction::RecvOnly)
}

/// The streams the offerer publishes whose SSRCs it announced (others are
/// learnt from their payload type when they arrive).
fn published_streams(offer: &Offer) -> Vec<super::participant::InStream> {
    offer
        .media
        .iter()
        .filter(|m| m.accepted() && sends(m.direction))
        .filter_map(|m| {
            let kind = if m.kind == MediaKind::Video {
                Kind::Video
            } else {
                Kind::Audio
            };
            Some(super::forward::in_stream(kind, m.ssrc?, m.rtx_ssrc))
        })
        .collect()
}

/// What we send on each offered m-section: the n-th receiving audio (video)
/// section carries slot n's audio (video).
fn outgoing_streams(offer: &Offer, slots: &[OutSlot]) -> Vec<Option<OutgoingStream>> {
    let (mut audio, mut video) = (0usize, 0usize);
    offer
        .media
        .iter()
        .map(|m| {
            if !m.accepted() || !receives(m.direction) {
                return None;
            }
            let (counter, kind) = match m.kind {
                MediaKind::Audio => (&mut audio, Kind::Audio),
                MediaKind::Video => (&mut video, Kind::Video),
                MediaKind::Other => return None,
            };
            let slot_index = *counter;
            *counter += 1;
            let slot = slots.get(slot_index)?;
            let (track, name) = match kind {
                Kind::Audio => (&slot.audio, "audio"),
                Kind::Video => (&slot.video, "video"),
            };
            Some(OutgoingStream {
                ssrc: track.munger.out_ssrc(),
                rtx_ssrc: track.rtx.map(|(ssrc, _)| ssrc),
                stream_id: format!("duet-{slot_index}"),
                track_id: format!("{name}-{slot_index}"),
            })
        })
        .collect()
}

impl Kind {
    pub fn is_video(self) -> bool {
        self == Kind::Video
    }
}
