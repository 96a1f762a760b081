//! One participant's transport: its ICE-lite agent, its passive DTLS
//! handshake and, once that is done, its SRTP session. The leg knows
//! nothing of tracks or forwarding; the node asks it to accept datagrams
//! and to protect or unprotect packets.

use crate::endpoint::dtls::{DtlsEvent, DtlsIdentity, DtlsServer, Fingerprint};
use crate::endpoint::ice::{IceCredentials, IceEvent, IceLite, IceState};
use crate::endpoint::srtp::{SrtpProfile, SrtpSession};
use crate::routing::PathAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a datagram given to the leg led to.
#[derive(Debug, Default)]
pub struct LegOutput {
    /// Datagrams to send (STUN answers, DTLS flights), each to its path.
    pub transmits: Vec<(PathAddr, Vec<u8>)>,
    /// The ICE agent accepted a check from this path.
    pub confirmed_path: Option<PathAddr>,
}

/// A change of the leg's state for the node to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    IceConnected,
    /// Media now goes to this path.
    PathSelected(PathAddr),
    /// A check with the credentials of the last restart succeeded: only
    /// the new ufrag routes from now on.
    IceRestartCompleted,
    /// ICE consent expired (RFC 7675).
    IceFailed,
    /// DTLS is up and SRTP keyed.
    MediaReady(SrtpProfile),
    DtlsFailed,
    Closed,
}

pub struct Leg {
    pub ice: IceLite,
    dtls: DtlsServer,
    pub srtp: Option<Box<SrtpSession>>,
    events: Vec<LegEvent>,
}

impl std::fmt::Debug for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leg")
            .field("ice", &self.ice)
            .field("keyed", &self.srtp.is_some())
            .finish_non_exhaustive()
    }
}

impl Leg {
    pub fn new(
        local: IceCredentials,
        remote: IceCredentials,
        identity: Arc<DtlsIdentity>,
        remote_fingerprint: Fingerprint,
        dtls_timeout: Duration,
        now: Instant,
    ) -> Self {
        Self {
            ice: IceLite::new(local, &remote.ufrag),
            dtls: DtlsServer::new(&identity, remote_fingerprint, dtls_timeout, now),
            srtp: None,
            events: Vec::new(),
        }
    }

    pub fn selected_path(&self) -> Option<PathAddr> {
        self.ice.selected_path()
    }

    /// A STUN datagram from `path`.
    pub fn handle_stun(&mut self, path: PathAddr, datagram: &[u8], now: Instant, out: &mut LegOutput) {
        match self.ice.handle_stun(path, datagram, now) {
            Ok(()) => out.confirmed_path = Some(path),
            Err(e) => tracing::debug!(error = %e, "binding request refused"),
        }
        self.drain_ice(out);
    }

    fn drain_ice(&mut self, out: &mut LegOutput) {
        while let Some(t) = self.ice.poll_transmit() {
            out.transmits.push((t.path, t.data));
        }
        while let Some(ev) = self.ice.poll_event() {
            self.events.push(match ev {
                IceEvent::Selected(path) => LegEvent::PathSelected(path),
                IceEvent::State(IceState::Connected) => LegEvent::IceConnected,
                IceEvent::State(IceState::Failed) => LegEvent::IceFailed,
                IceEvent::State(_) => continue,
                IceEvent::RestartCompleted => LegEvent::IceRestartCompleted,
            });
        }
    }

    /// The client's packet authenticated under the SRTP keys: the DTLS
    /// association is no longer needed ([`DtlsServer::release`]).
    pub fn on_authenticated_media(&mut self) {
        if !self.dtls.is_released() {
            self.dtls.release();
        }
    }

    /// Keys SRTP as a finished handshake would, without one, so that the
    /// fuzz targets reach the SRTP, RTP and RTCP paths with keys they hold
    /// themselves. Only in builds with `--cfg fuzzing` (never in the server).
    #[cfg(fuzzing)]
    pub fn key_without_handshake(&mut self, srtp: Box<SrtpSession>) {
        self.events.push(LegEvent::MediaReady(srtp.profile()));
        self.srtp = Some(srtp);
    }

    /// A DTLS datagram from `path`.
    pub fn handle_dtls(&mut self, path: PathAddr, datagram: &[u8], now: Instant, out: &mut LegOutput) {
        self.dtls.handle_datagram(datagram, now);
        self.drain_dtls(path, out);
    }

    fn drain_dtls(&mut self, path: PathAddr, out: &mut LegOutput) {
        let dest = self.selected_path().unwrap_or(path);
        while let Some(d) = self.dtls.poll_transmit() {
            out.transmits.push((dest, d));
        }
        while let Some(ev) = self.dtls.poll_event() {
            match ev {
                DtlsEvent::Connected { profile, srtp } => {
                    self.srtp = Some(srtp);
                    self.events.push(LegEvent::MediaReady(profile));
                }
                DtlsEvent::Failed(e) => {
                    tracing::debug!(error = %e, "dtls failed");
                    self.events.push(LegEvent::DtlsFailed);
                }
                DtlsEvent::Closed => self.events.push(LegEvent::Closed),
            }
        }
    }

    /// Timers of ICE (consent) and DTLS (retransmission, handshake timeout).
    pub fn handle_timeout(&mut self, now: Instant, out: &mut LegOutput) {
        if self.ice.poll_timeout().is_some_and(|t| t <= now) {
            self.ice.handle_timeout(now);
            self.drain_ice(out);
        }
        if self.dtls.poll_timeout().is_some_and(|t| t <= now) {
            self.dtls.handle_timeout(now);
            if let Some(path) = self.selected_path() {
                self.drain_dtls(path, out);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.ice.poll_timeout(), self.dtls.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn poll_event(&mut self) -> Option<LegEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    /// An ICE restart: new credentials on both sides; DTLS and SRTP stay.
    pub fn restart_ice(&mut self, local: IceCredentials, remote: &IceCredentials) {
        self.ice.restart(local, &remote.ufrag);
    }

    /// Says goodbye (DTLS close_notify) on the selected path.
    pub fn close(&mut self, now: Instant, out: &mut LegOutput) {
        self.dtls.close(now);
        if let Some(path) = self.selected_path() {
            self.drain_dtls(path, out);
        }
    }
}
