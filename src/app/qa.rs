//! `roundtable scenario run`, `roundtable simulate` and `roundtable bench`: the command-line
//! front-ends of the scenario layer (argument parsing and printing; the work is in
//! `crate::scenario`).

use crate::scenario::bench::{self, BenchKind, BenchOptions};
use crate::scenario::simulate::{self, SimulateOptions};
use crate::scenario::{load_all, run_scenario, RunOptions, TransportKind};
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
        #[arg(long, value_enum, default_value_t = TransportArg::Memory)]
        transport: TransportArg,
        /// Print every unmet expectation, not only the first.
        #[arg(long)]
        all_failures: bool,
    },
}

/// `--transport` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportArg {
    /// In-process: sinks record frames, client frames go straight into the engine's channel.
    #[default]
    Memory,
    /// Real TLS WebSockets on loopback, through the production server.
    Ws,
}

impl From<TransportArg> for TransportKind {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Memory => TransportKind::Memory,
            TransportArg::Ws => TransportKind::Ws,
        }
    }
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
    /// Threads running seeds (default: one per CPU). The report is the same for any number:
    /// seeds are reported in order.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

/// `roundtable bench`
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which benchmark.
    #[arg(value_enum, default_value_t = BenchArg::Fanout)]
    pub kind: BenchArg,
    /// Clients in the measured run (fanout; soak: people talking).
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Ticks per run (fanout).
    #[arg(long, default_value_t = 2000)]
    pub ticks: u64,
    /// Deltas the agent streams or messages the host sends, per round (wire).
    #[arg(long, default_value_t = 400)]
    pub sends: usize,
    /// Milliseconds between sends (wire; 2 = 500/s).
    #[arg(long, value_name = "MS", default_value_t = 2)]
    pub every_ms: u64,
    /// Sends per second (wire; overrides `--every-ms`, e.g. 4000 for half the maximum load).
    #[arg(long, value_name = "N")]
    pub rate: Option<u64>,
    /// What the sides send (wire): agent deltas at the set rate, or host chat messages.
    #[arg(long, value_enum, default_value_t = super::bench_wire::Workload::Deltas)]
    pub workload: super::bench_wire::Workload,
    /// Alternating rounds of each side (wire): the report gives each side's median round.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Roundtable over TLS (wire; the reference is plain ws, so compare without it).
    #[arg(long)]
    pub tls: bool,
    /// Also measure roundtable relayed through this iroh relay (wire): the host's iroh endpoint
    /// waits at it and the remotes reach it only through it (no direct path), measured beside
    /// the direct TLS run. Start a local one with `iroh-relay --dev` (http://127.0.0.1:3340).
    #[arg(long, value_name = "URL")]
    pub relay: Option<String>,
    /// Seconds to run (soak).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Mean milliseconds between kills of the host (soak).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub kill_every: u64,
    /// Soak through a flaky TCP proxy that also cuts connections at random.
    #[arg(long)]
    pub flaky: bool,
    /// Soak with storage faults too: a full disk, a read-only file system (tmpfs, as root) and
    /// the database's -wal/-shm deleted under the running host.
    #[arg(long)]
    pub storage_faults: bool,
    /// Which storage faults `--storage-faults` makes (comma-separated: full, read-only, wal).
    #[arg(long, value_delimiter = ',', default_value = "full,read-only,wal", value_name = "KINDS")]
    pub fault_kinds: Vec<String>,
    /// Soak with the host's wall clock stepped too: back or forward by up to a day, half the
    /// time with a restart after it; a participant dropped after each step must be gone one
    /// grace period later (not a day later, not at once) and history must stay in time order.
    #[arg(long)]
    pub clock_steps: bool,
    /// Seed of the soak's random choices (kill times, pauses).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Messages in the long session (history, default 100 000); stored messages (startup,
    /// default 1 000 000); 32 KB messages in the large session (hostile, default 288: 9 MB).
    #[arg(long, value_name = "N")]
    pub messages: Option<usize>,
    /// Size of the agent turn (stream) or of the masked output (mask).
    #[arg(long, value_name = "MB", default_value_t = 10)]
    pub megabytes: usize,
    /// Bytes per agent delta (mask).
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub delta_bytes: usize,
    /// Agent deltas per second (stream).
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub deltas_per_second: u64,
    /// Sessions in the world (tick); stored sessions (startup with `--events-per-session`).
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Startup with many sessions: events stored per session (`--sessions` of them), against the
    /// same database started with every session's tails loaded at start (as before issue 25).
    #[arg(long, value_name = "N")]
    pub events_per_session: Option<usize>,
    /// Startup with many sessions: messages stored per session (default 200).
    #[arg(long, value_name = "N")]
    pub messages_per_session: Option<usize>,
    /// Connected remotes per session (tick).
    #[arg(long, default_value_t = 8)]
    pub per_session: usize,
    /// Connections to open (idle).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Authenticate every connection and join it to a session, at three head-counts (idle).
    #[arg(long)]
    pub join: bool,
    /// Participants stored (auth).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub participants: usize,
    /// Plain `ws://` instead of TLS (idle, startup).
    #[arg(long)]
    pub insecure: bool,
    /// Empty the page cache before each start of a host, for cold-disk figures (startup; root
    /// only: writes /proc/sys/vm/drop_caches).
    #[arg(long)]
    pub drop_caches: bool,
    /// Print the result as one JSON object (idle, history, startup, wire, soak, mask, auth).
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// Sends per second of `bench wire` and its agent: `--rate`, else one every `--every-ms`.
    fn wire_rate(&self) -> u64 {
        self.rate.unwrap_or(1000 / self.every_ms.max(1))
    }
}

/// Available benchmarks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchArg {
    /// Ticks per second with N clients in one session, against one client.
    Fanout,
    /// Resident memory of a real `serve` per idle WebSocket connection (`--connections N`;
    /// `--join`: authenticated and joined to a session, at three head-counts).
    Idle,
    /// Engine start, first screen and paging of a long session (`--messages N`), against a
    /// one-page session in the same engine.
    History,
    /// Send→receive latency over real WebSockets (`--clients`, `--sends`, `--every-ms` or
    /// `--rate`, `--workload`, `--tls`) against a raw tokio-tungstenite broadcast server fed the
    /// same frames in the same run, with and without an fsync per frame.
    Wire,
    /// The agent `bench wire` streams from (a `command` agent; not a benchmark).
    #[value(hide = true)]
    WireAgent,
    /// Kill the host (SIGKILL) every `--kill-every` ms for `--seconds` while `--clients` people
    /// talk; then prove every acknowledged message is stored once and delivered once to all.
    Soak,
    /// Spawn → listening → authenticated → first page of a host with `--messages N` stored
    /// messages in 10 sessions, and its memory, against 10 stored messages (TLS; `--insecure`
    /// for plain ws). With `--events-per-session`/`--messages-per-session`: `--sessions` stored
    /// sessions, ready time and memory before and after joining one, against the same database
    /// with every session's tails loaded at start.
    Startup,
    /// Engine time per tick with `--sessions` sessions × `--per-session` connected remotes, idle
    /// and busy, against one session in the same run.
    Tick,
    /// What misbehaving clients cost a real `serve`: `--clients` remotes that ask for snapshots
    /// of a `--messages` × 32 KB session and never read, then a remote repeating 32 KB messages
    /// for `--seconds`; host RSS and a well-behaved remote's worst ping.
    Hostile,
    /// Engine time per tick at the start and at the end of one long agent turn (`--megabytes`,
    /// `--deltas-per-second`, `--clients` remotes), on a SQLite file.
    Stream,
    /// Secret masking per streamed agent delta (`--megabytes` of code and prose with occasional
    /// secrets, `--delta-bytes` per delta) through a `StreamMasker`, against copying the same
    /// deltas with `push_str`.
    Mask,
    /// Engine time per authentication (by resume token, and as a newcomer) with
    /// `--participants N` stored participants, all within their grace period, against 10
    /// stored, in alternating rounds.
    Auth,
}

/// `roundtable scenario run`.
pub fn run_cli(cmd: ScenarioCmd) -> anyhow::Result<ExitCode> {
    let ScenarioCmd::Run { paths, seed, transcript, transport, all_failures } = cmd;
    let scenarios = load_all(&paths)?;
    if scenarios.is_empty() {
        anyhow::bail!("no scenario files found in {paths:?}");
    }
    let options = RunOptions { seed, transport: transport.into(), reference_model: true, ..Default::default() };
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
    let options = SimulateOptions {
        seeds: args.seeds,
        start_seed: args.start_seed,
        ticks: args.ticks,
        out: args.out,
        no_shrink: args.no_shrink,
        jobs: args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1),
    };
    let failed = simulate::run(&options, &mut std::io::stdout().lock())?;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `roundtable bench`.
pub fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.kind {
        BenchArg::Idle if args.join => {
            super::bench_idle::run_joined(args.connections, args.insecure, args.json, &mut std::io::stdout().lock())?;
        }
        BenchArg::Idle => {
            super::bench_idle::run(args.connections, args.insecure, args.json, &mut std::io::stdout().lock())?;
        }
        BenchArg::Wire => {
            let options = super::bench_wire::WireOptions {
                clients: args.clients,
                sends: args.sends,
                per_second: args.wire_rate(),
                workload: args.workload,
                tls: args.tls || args.relay.is_some(),
                relay: args.relay.clone(),
                rounds: args.rounds,
            };
            super::bench_wire::run(&options, args.json, &mut std::io::stdout().lock())?;
        }
        BenchArg::WireAgent => super::bench_wire::run_agent(args.sends, args.wire_rate())?,
        BenchArg::Soak => {
            let options = super::bench_soak::SoakOptions {
                clients: args.clients,
                seconds: args.seconds,
                kill_every_ms: args.kill_every.max(50),
                seed: args.seed,
                flaky: args.flaky,
                storage_faults: args.storage_faults,
                fault_kinds: args.fault_kinds.clone(),
                clock_steps: args.clock_steps,
            };
            let report = super::bench_soak::run(&options, args.json, &mut std::io::stdout().lock())?;
            if !report.passed() {
                return Ok(ExitCode::FAILURE);
            }
        }
        BenchArg::Stream => {
            let mut bar: Option<super::progress::Progress> = None;
            let mut progress = |done: usize, total: usize| {
                let bar =
                    bar.get_or_insert_with(|| super::progress::Progress::new("streaming", total as u64, args.json));
                bar.set(done as u64);
            };
            let out = &mut std::io::stdout().lock();
            bench::stream(args.megabytes, args.deltas_per_second, args.clients, out, args.json, &mut progress)?;
        }
        BenchArg::Hostile => {
            let out = &mut std::io::stdout().lock();
            super::bench_hostile::run(args.messages.unwrap_or(288), args.clients, args.seconds, args.json, out)?;
        }
        BenchArg::Tick => {
            let mut bar: Option<super::progress::Progress> = None;
            let mut progress = |what: &str, done: usize, total: usize| {
                let bar = bar.get_or_insert_with(|| super::progress::Progress::new(what, total as u64, args.json));
                bar.set(done as u64);
            };
            bench::tick(
                args.sessions,
                args.per_session,
                args.ticks.min(2_000),
                &mut std::io::stdout().lock(),
                args.json,
                &mut progress,
            )?;
        }
        BenchArg::Startup if args.events_per_session.is_some() || args.messages_per_session.is_some() => {
            let messages = args.messages_per_session.unwrap_or(crate::persist::HISTORY_TAIL);
            super::bench_startup::run_sessions(
                super::bench_startup::SessionsShape {
                    sessions: args.sessions,
                    events: args.events_per_session.unwrap_or(crate::persist::EVENT_TAIL).max(messages),
                    messages,
                },
                !args.insecure,
                args.json,
                &mut std::io::stdout().lock(),
            )?;
        }
        BenchArg::Startup => {
            super::bench_startup::run(
                args.messages.unwrap_or(1_000_000),
                !args.insecure,
                args.drop_caches,
                args.json,
                &mut std::io::stdout().lock(),
            )?;
        }
        BenchArg::Auth => {
            super::bench_auth::run(args.participants, args.json, &mut std::io::stdout().lock())?;
        }
        BenchArg::Mask => {
            super::bench_mask::run(args.megabytes, args.delta_bytes, args.json, &mut std::io::stdout().lock())?;
        }
        BenchArg::History => {
            bench::history(args.messages.unwrap_or(100_000), &mut std::io::stdout().lock(), args.json)?;
        }
        BenchArg::Fanout => {
            if args.insecure {
                anyhow::bail!("--insecure applies to `bench idle` and `bench startup` only");
            }
            let options =
                BenchOptions { kind: BenchKind::Fanout, clients: args.clients, ticks: args.ticks, json: args.json };
            bench::run(&options, &mut std::io::stdout().lock())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
