//! Scenario runner, simulator and benchmarks: QA's headless, deterministic view of the engine.
//!
//! - [`format`]: the TOML scenario format (docs/SCENARIOS.md documents it for scenario writers).
//! - [`runner`]: drives one engine through one scenario on a virtual clock; [`expect`] checks
//!   the outcome.
//! - [`transport`]: how the runner's clients reach the engine — in memory, or over real TLS
//!   WebSockets through the production server ([`ws`]), with the same per-participant events.
//! - [`agents`]: real `command` / `claude` agent processes in scenarios, kept in step with the
//!   virtual clock.
//! - [`simulate`]: VOPR-style random flows from a seed, with shrinking to a minimal scenario.
//! - [`bench`]: fan-out throughput as a ratio against a one-client reference.
//!
//! Everything here is deterministic: one seed drives every random choice, time moves only when
//! the runner ticks, and transcripts of the same file and seed are byte-identical.

pub mod agents;
pub mod bench;
pub mod expect;
pub mod format;
pub mod runner;
pub mod simulate;
pub mod transport;
pub mod ws;

pub use format::{expand_paths, Scenario, ScenarioError};
pub use runner::{run_scenario, Failure, RunOptions, RunReport};
pub use transport::TransportKind;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// `roundtable scenario ...`
#[derive(clap::Subcommand, Debug)]
pub enum ScenarioCmd {
    /// Run scenario files (directories expand to their *.toml files).
    Run {
        /// Scenario files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Override every scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Write the transcript (every frame to every participant, then the state digest) here.
        #[arg(long, value_name = "FILE")]
        transcript: Option<PathBuf>,
        /// Transport: `memory` (in-process) or `ws` (real TLS WebSockets on loopback, through the
        /// production server; every participant gets the same events as in memory).
        #[arg(long, value_enum, default_value_t = TransportKind::Memory)]
        transport: TransportKind,
        /// Print every unmet expectation, not only the first.
        #[arg(long)]
        all_failures: bool,
    },
}

/// `roundtable simulate`
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    pub start_seed: u64,
    /// Steps per flow (roughly one step per 3 ticks).
    #[arg(long, default_value_t = 300)]
    pub ticks: u64,
    /// Directory for minimal scenarios of failing seeds.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// Do not shrink failing flows (faster).
    #[arg(long)]
    pub no_shrink: bool,
}

/// `roundtable bench`
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which benchmark.
    #[arg(value_enum, default_value_t = bench::BenchKind::Fanout)]
    pub kind: bench::BenchKind,
    /// Clients in the measured run.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Ticks per run.
    #[arg(long, default_value_t = 2000)]
    pub ticks: u64,
}

/// Loads every scenario under `paths`.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Scenario)>, ScenarioError> {
    expand_paths(paths)?.into_iter().map(|p| Scenario::load(&p).map(|s| (p, s))).collect()
}

/// `roundtable scenario run`.
pub fn run_cli(cmd: ScenarioCmd) -> anyhow::Result<ExitCode> {
    let ScenarioCmd::Run { paths, seed, transcript, transport, all_failures } = cmd;
    let scenarios = load_all(&paths)?;
    if scenarios.is_empty() {
        anyhow::bail!("no scenario files found in {paths:?}");
    }
    let options = RunOptions { seed, transport, ..Default::default() };
    let mut transcript_file = match &transcript {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?,
        )),
        None => None,
    };
    let (mut passed, mut failed) = (0, 0);
    for (path, scenario) in &scenarios {
        let report = run_scenario(scenario, &options);
        if report.passed() {
            passed += 1;
            println!("PASS {} ({} ms)", report.name, report.wall.as_millis());
        } else {
            failed += 1;
            let extra = report.failures.len() - 1;
            let more = if extra > 0 { format!(" (+{extra} more)") } else { String::new() };
            println!("FAIL {} ({}){more}", report.name, report.failures[0]);
            println!("     file {}, seed {}", path.display(), report.seed);
            if all_failures {
                for f in &report.failures[1..] {
                    println!("     {f}");
                }
            }
        }
        if let Some(w) = transcript_file.as_mut() {
            w.write_all(report.transcript.as_bytes())?;
        }
    }
    if let Some(mut w) = transcript_file {
        w.flush()?;
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `roundtable simulate`.
pub fn run_simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    simulate::run(&args)
}

/// `roundtable bench`.
pub fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    bench::run(&args)
}
