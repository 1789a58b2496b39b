//! The command line: `rapr sidecar`, `rapr run` (one app, or several with `-f`), `rapr init`,
//! `rapr list`, `rapr stop`, `rapr bench`.

pub mod app_process;
pub mod control_plane;
pub mod init;
pub mod launch;
pub mod list;
pub mod multi_run;
pub mod run;
pub mod run_control;
pub mod run_file;
pub mod run_flags;
pub mod runs;
pub mod sidecar_host;
pub mod status;
pub mod stop;

use clap::{Parser, Subcommand};

use crate::config::SidecarArgs;

/// rapr: a distributed application runtime that speaks Dapr's language.
#[derive(Debug, Parser)]
#[command(name = "rapr", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar alone (daprd's role and flags).
    Sidecar(Box<SidecarArgs>),
    /// Run an app with its sidecar on embedded defaults.
    Run(Box<run::RunArgs>),
    /// Write the default components under ~/.rapr.
    Init,
    /// List the apps `rapr run` started on this machine.
    List(list::ListArgs),
    /// Run the actor placement service (daprd placement's role and flags).
    Placement(Box<crate::placement::server::PlacementArgs>),
    /// Run every control-plane service in one process (today: placement, on `--placement-port`).
    ControlPlane(Box<control_plane::ControlPlaneArgs>),
    /// Stop an app by id (its app and sidecar stop cleanly), or every app of a run file.
    Stop(stop::StopArgs),
    /// Measure latency, throughput, memory and startup against direct calls and nginx.
    Bench(Box<crate::bench::BenchArgs>),
    /// The echo app `rapr bench` measures against.
    #[command(hide = true)]
    BenchEcho(crate::bench::echo::EchoArgs),
}

/// Sidecar flags with their defaults (for `rapr run`, which sets what it needs).
pub fn default_sidecar_args() -> SidecarArgs {
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SidecarArgs,
    }
    Wrapper::parse_from(["rapr"]).args
}
