//! What the node keeps per participant: its transport leg, the streams it
//! publishes, the tracks it receives, and its lifecycle times. One owner:
//! the [`super::Node`]'s participant map.

use super::leg::Leg;
use crate::extensions::LegExtensions;
use crate::munger::{Munger, Throttle};
use crate::remb::RateMeter;
use crate::routing::{Key, PathAddr};
use crate::stream::history::SendHistory;
use crate::stream::nack::NackGenerator;
use crate::stream::reports::{RecvStats, SendStats};
use crate::vp8::KeyframeAssembler;
use proto::token::SfuRole;
use proto::ParticipantId;
use std::time::Instant;

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Video,
}

/// One outgoing track on a subscriber's leg.
#[derive(Debug)]
pub struct OutTrack {
    /// Continuous numbering across source switches, the leg's SSRC and PT.
    pub munger: Munger,
    /// The leg's RTX stream for this track (SSRC, payload type), if the
    /// subscriber negotiated RTX.
    pub rtx: Option<(u32, u8)>,
    /// Next sequence number on the RTX stream.
    pub rtx_seq: u16,
    /// Counts and timing for this track's sender reports.
    pub report: SendStats,
}

/// One outgoing slot (a user has one, a watcher two): audio and video of
/// one source.
#[derive(Debug)]
pub struct OutSlot {
    pub audio: OutTrack,
    pub video: OutTrack,
    /// The latest switch to a new source, until its first keyframe went out.
    pub switch: Option<SwitchWatch>,
}

/// How a switch progresses, for the timing log and the
/// switch-to-keyframe histogram.
#[derive(Debug, Clone, Copy)]
pub struct SwitchWatch {
    pub at: Instant,
    /// The new source's first video packet after the switch (forwarded or not).
    pub first_packet: Option<Instant>,
}

impl OutSlot {
    pub fn track(&mut self, kind: Kind) -> &mut OutTrack {
        match kind {
            Kind::Audio => &mut self.audio,
            Kind::Video => &mut self.video,
        }
    }

    /// Notes a video packet of the slot's source; once one is `forwarded`
    /// after a switch (the new source's first keyframe), returns that
    /// switch's timing and stops watching.
    pub fn switch_progress(&mut self, forwarded: bool, now: Instant) -> Option<SwitchWatch> {
        let w = self.switch.as_mut()?;
        w.first_packet.get_or_insert(now);
        if forwarded {
            self.switch.take()
        } else {
            None
        }
    }
}

/// One stream a participant publishes.
#[derive(Debug)]
pub struct InStream {
    pub kind: Kind,
    pub ssrc: u32,
    /// The publisher's RTX stream for this one, if any.
    pub rtx_ssrc: Option<u32>,
    /// Highest extended sequence number received.
    pub highest_seq: Option<u64>,
    /// Recent packets for answering subscribers' NACKs (video only).
    pub history: Option<SendHistory>,
    /// The largest round-trip time a subscriber of this stream reported
    /// lately, and when: it sizes the history's window.
    pub subscriber_rtt: Option<(std::time::Duration, Instant)>,
    /// Asks the publisher again for packets lost on its uplink (video only).
    pub nack: Option<NackGenerator>,
    /// Loss and jitter for our receiver reports to the publisher.
    pub report: RecvStats,
}

/// Counters of one participant's traffic (the internal API lists them).
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Video RTP bytes received (for the REMB relay's rate).
    pub video_bytes_in: u64,
}

#[derive(Debug)]
pub struct Participant {
    pub key: Key,
    pub pid: ParticipantId,
    pub role: SfuRole,
    /// The WebSocket session the participant's signaling arrives on.
    pub session: Option<u64>,
    /// The answer's `o=` session id and version (bumped per answer).
    pub sdp_session: (u64, u64),
    /// When the last sender/receiver reports went out.
    pub last_report: Option<Instant>,
    /// ICE, DTLS and SRTP: created by the first offer.
    pub leg: Option<Leg>,
    pub slots: Vec<OutSlot>,
    pub incoming: Vec<InStream>,
    /// Payload types the participant's offer uses for what it publishes.
    pub pts: PublishedPts,
    /// Header extension ids this participant's leg negotiated.
    pub extensions: LegExtensions,
    /// Media flows (ICE and DTLS up).
    pub connected: bool,
    pub ice_connected_at: Option<Instant>,
    pub via_turn: bool,
    pub traffic: Traffic,
    pub video_rate: RateMeter,
    pub snapshot: KeyframeAssembler,
    pub keyframe_throttle: Throttle,
    pub last_periodic: Instant,
    pub admitted_at: Instant,
    pub joined_at: Option<Instant>,
    /// Why it is being removed (set once; removal happens in the next turn).
    pub removed: Option<&'static str>,
}

/// The publisher-side payload types from the participant's offer.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublishedPts {
    pub opus: Option<u8>,
    pub vp8: Option<u8>,
    pub vp8_rtx: Option<u8>,
}

impl Participant {
    pub fn new(key: Key, pid: ParticipantId, role: SfuRole, throttle: Throttle, now: Instant) -> Self {
        Self {
            key,
            pid,
            role,
            session: None,
            sdp_session: (0, 0),
            last_report: None,
            leg: None,
            slots: Vec::new(),
            incoming: Vec::new(),
            pts: PublishedPts::default(),
            extensions: LegExtensions::default(),
            connected: false,
            ice_connected_at: None,
            via_turn: false,
            traffic: Traffic::default(),
            video_rate: RateMeter::default(),
            snapshot: KeyframeAssembler::default(),
            keyframe_throttle: throttle,
            last_periodic: now,
            admitted_at: now,
            joined_at: None,
            removed: None,
        }
    }

    pub fn video_ssrc(&self) -> Option<u32> {
        self.incoming
            .iter()
            .find(|i| i.kind == Kind::Video)
            .map(|i| i.ssrc)
    }

    /// The selected path of the leg, where everything for this participant goes.
    pub fn path(&self) -> Option<PathAddr> {
        self.leg.as_ref().and_then(Leg::selected_path)
    }

    /// The outgoing slot and kind whose media SSRC is `ssrc`.
    pub fn slot_of_ssrc(&self, ssrc: u32) -> Option<(usize, Kind)> {
        self.slots.iter().enumerate().find_map(|(i, s)| {
            if s.video.munger.out_ssrc() == ssrc {
                Some((i, Kind::Video))
            } else if s.audio.munger.out_ssrc() == ssrc {
                Some((i, Kind::Audio))
            } else {
                None
            }
        })
    }
}
