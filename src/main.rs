//! The `rapr` binary: parses the command line and hands over to `rapr::cli` / `rapr::runtime`.

#![forbid(unsafe_code)]

use clap::Parser;

/// jemalloc with its background purging thread instead of glibc malloc or mimalloc. After a burst
/// of 10,000 concurrent connections, glibc's per-thread arenas kept their pages and grew from one
/// identical round to the next; mimalloc returned a thread's freed pages only when that thread
/// allocated again, so what an idle worker had been freed by others stayed resident (RSS after a
/// round varied 100-440 MiB). jemalloc's background thread decays dirty pages whatever the
/// workers do: RSS settles to the same level after every round (tests/it/invoke_faults.rs).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use rapr::cli::{Cli, Command};
use rapr::config::flags::normalize_go_flags;

fn main() {
    let cli = Cli::parse_from(normalize_go_flags(std::env::args()));
    let _failpoints = rapr::runtime::failpoints::setup();
    // Before any worker thread exists; without it the purge waits for allocator calls (see GLOBAL).
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("warning: jemalloc background purging unavailable: {e}");
    }
    // The load generator of `rapr bench` keeps to one pinned core: a current-thread runtime.
    let mut builder = match cli.command {
        Command::Bench(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match cli.command {
        Command::Sidecar(args) => {
            // daprd's `--version`, `--build-info` and `--wait` run alone and exit.
            if let Some(code) = runtime.block_on(args.one_shot()) {
                std::process::exit(code);
            }
            if let Err(e) = rapr::runtime::logging::init_to(&args.log_level, args.log_as_json, Some(&args.app_id), args.log_file.as_deref()) {
                eprintln!("{e}");
                std::process::exit(1);
            }
            runtime.block_on(rapr::sidecar::run_sidecar(*args))
        }
        Command::Run(args) => {
            let level = match &args.run_file {
                Some(f) => rapr::cli::run_file::log_level_for(f, &args.log_level),
                None => args.log_level.clone(),
            };
            rapr::runtime::logging::init(&level, args.log_as_json, None);
            runtime.block_on(rapr::cli::run::run(*args))
        }
        Command::Placement(args) => {
            rapr::runtime::logging::init(&args.log_level, args.log_as_json, None);
            runtime.block_on(rapr::placement::server::run_placement(*args))
        }
        Command::ControlPlane(args) => {
            rapr::runtime::logging::init(&args.placement.log_level, args.placement.log_as_json, None);
            runtime.block_on(rapr::cli::control_plane::run_control_plane(*args))
        }
        Command::Init => rapr::cli::init::run_init(),
        Command::List(args) => rapr::cli::list::run_list(&args),
        Command::Stop(args) => runtime.block_on(rapr::cli::stop::run_stop(&args)),
        Command::Bench(args) => runtime.block_on(rapr::bench::run_bench(*args)),
        Command::BenchEcho(args) => runtime.block_on(rapr::bench::echo::run_echo(args)),
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
