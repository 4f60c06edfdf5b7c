//! The `roundtable` command line.

use clap::{Parser, Subcommand};
use roundtable::{net, scenario, store};
use std::path::PathBuf;
use std::process::ExitCode;

/// Run an AI coding agent on your machine and invite others into the same live sessions.
///
/// With no subcommand, runs the host (`roundtable host`).
#[derive(Parser, Debug)]
#[command(name = "roundtable", version, about, long_about = None)]
struct Cli {
    /// Data directory (database, TLS certificate, known hosts).
    #[arg(long, global = true, env = "ROUNDTABLE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the host (falls back to headless `serve` when there is no display).
    Host(net::ServeArgs),
    /// Run the host headless: no window, same engine, prints share links and activity.
    Serve(net::ServeArgs),
    /// Open a share link as a remote (graphical client; falls back to `join` line mode).
    Connect(net::JoinArgs),
    /// Join a share link in terminal line mode (`--json` for scripts).
    Join(net::JoinArgs),
    /// Register and list workspaces (directories the agent works in).
    #[command(subcommand)]
    Workspace(store::cli::WorkspaceCmd),
    /// Mint, list, revoke and rotate share links. Takes effect on a running host within one tick.
    #[command(subcommand)]
    Share(store::cli::ShareCmd),
    /// Run scenario files headlessly and deterministically.
    #[command(subcommand)]
    Scenario(scenario::ScenarioCmd),
    /// Random multi-user flows with injected faults and invariant checks.
    Simulate(scenario::SimulateArgs),
    /// Benchmarks, reported as ratios against a reference measured in the same run.
    Bench(scenario::BenchArgs),
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let data_dir = cli.data_dir.as_deref();
    let result = match cli.command {
        None => net::run_host(net::ServeArgs::default(), data_dir),
        Some(Command::Host(args)) => net::run_host(args, data_dir),
        Some(Command::Serve(args)) => net::run_serve(args, data_dir),
        Some(Command::Connect(args)) => net::run_connect(args, data_dir),
        Some(Command::Join(args)) => net::run_join(args, data_dir),
        Some(Command::Workspace(cmd)) => store::cli::run_workspace(cmd, data_dir),
        Some(Command::Share(cmd)) => store::cli::run_share(cmd, data_dir),
        Some(Command::Scenario(cmd)) => scenario::run_cli(cmd),
        Some(Command::Simulate(args)) => scenario::run_simulate(args),
        Some(Command::Bench(args)) => scenario::run_bench(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
