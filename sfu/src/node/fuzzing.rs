//! What the fuzz targets need of the node beyond its public input: keying a
//! participant's SRTP without a DTLS handshake. A handshake per input would
//! cost milliseconds and keys the target cannot know; with the keys handed
//! in, the target protects its RTP and RTCP like a browser would, and every
//! input reaches the parsers behind SRTP authentication. Compiled only with
//! `--cfg fuzzing` (scripts/fuzz), never into the server.

use super::leg::LegOutput;
use super::Node;
use crate::endpoint::srtp::{DtlsRole, SrtpError, SrtpProfile, SrtpSession};
use proto::ParticipantId;
use std::time::Instant;

/// Why a participant could not be keyed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No such participant, or it has no leg yet (no offer was answered).
    #[error("participant has no leg")]
    NoLeg,
    /// The keying material does not fit the profile.
    #[error(transparent)]
    Srtp(#[from] SrtpError),
}

impl Node {
    /// Keys `pid`'s leg from RFC 5764 keying material (client key, server
    /// key, client salt, server salt) as if its DTLS handshake had ended
    /// with `profile`: the node is the DTLS server, the caller holds the
    /// client's half. The participant becomes connected as after a real
    /// handshake (events and keyframe requests included).
    pub fn key_without_handshake(
        &mut self,
        pid: &ParticipantId,
        profile: SrtpProfile,
        keying_material: &[u8],
        now: Instant,
    ) -> Result<(), KeyError> {
        let srtp = SrtpSession::new(profile, keying_material, DtlsRole::Server)?;
        let key = *self.by_pid.get(pid).ok_or(KeyError::NoLeg)?;
        let leg = self
            .participants
            .get_mut(&key)
            .and_then(|p| p.leg.as_mut())
            .ok_or(KeyError::NoLeg)?;
        leg.key_without_handshake(Box::new(srtp));
        self.send_leg_output(key, LegOutput::default(), now);
        self.remove_marked(now);
        Ok(())
    }
}
