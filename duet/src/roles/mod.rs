//! The roles `duet` can run. Each module turns its typed args into the
//! library configs, binds every listener (port 0 works), runs until
//! SIGINT/SIGTERM and shuts down within a bound.

mod admin;
mod heartbeat;
mod screen_role;
mod serve;
mod sfu_node;
mod signaling_role;
mod turn_role;
mod up;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up::run(*args).await,
        Command::Signaling(args) => signaling_role::run(args).await,
        Command::Sfu(args) => sfu_node::run(args).await,
        Command::Turn(args) => turn_role::run(args).await,
        Command::Screen(args) => screen_role::run(args).await,
        Command::Admin(args) => admin::run(args).await,
    }
}
