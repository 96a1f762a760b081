//! The parts of the `duet` binary that are more than its entry point's
//! glue: the command line, the TOML config file, secrets and trace export
//! settings. A library so that the fuzz targets (`fuzz/`) can read config
//! files exactly as the binary does.

pub mod cli;
pub mod config_file;
pub mod secret;
pub mod telemetry;
