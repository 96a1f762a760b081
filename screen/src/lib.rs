//! duet's automatic screening of live calls.
//!
//! A screener samples the latest keyframe snapshot of every side of every
//! live video call (right after the match, then every period), decodes it
//! (pure Rust), resizes it and scores it with the operator's ONNX model on
//! tract, a pure-Rust runtime, on a pool of worker threads of its own. A
//! small config ([`ModelConfig`]) says what the model takes and gives and
//! which of its labels count as which category at which thresholds. Results
//! go to signaling, which flags calls for the moderators' wall and files an
//! automatic report above the high threshold; a human decides.
//!
//! Parts: [`config`] (the model config), [`image`] (decode and resize),
//! [`model`] (tract), [`mapping`] (output to categories), [`schedule`] (the
//! sans-IO sampling schedule), [`pool`] (the blocking workers), [`screener`]
//! (the run loop), [`client`] (HTTP), [`testmodel`] (a tiny colour model for
//! tests and benches). The project ships no weights; docs/screening.md
//! names a real model that works and how to install it.

pub mod client;
pub mod config;
pub mod error;
pub mod image;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod schedule;
pub mod screener;
pub mod testmodel;

pub use config::ModelConfig;
pub use error::{ConfigError, ModelError, SampleError};
pub use metrics::Metrics;
pub use model::{Model, Screened};
pub use schedule::ScheduleConfig;
pub use screener::{run, ScreenerConfig, ScreenerError};
