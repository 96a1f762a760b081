//! duet's own WebRTC endpoint for the media plane, built on public protocol crates.
pub mod dtls;
pub mod ice;
pub mod sdp;
pub mod srtp;
