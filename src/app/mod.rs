//! The application layer: everything a person runs. `main.rs` parses [`Cli`] and dispatches
//! here (and to `crate::ui` for the two windowed commands).
//!
//! - [`Cli`], [`Command`]: the whole command line (clap).
//! - [`host`]: the host as one unit — engine driver thread, agents, server, the host's
//!   in-process connection ([`host::Host`]); used by `serve` and by the host window.
//! - [`serve`]: `roundtable serve` — setup, links, activity log, the [`console`] on stdin.
//! - [`join`]: `roundtable join`, the terminal client with reconnect and resume.
//! - [`nearby`]: hosts found on the LAN (mDNS) and the fallback to them, for `join --nearby` and
//!   the remote window.
//! - [`render`]: human-readable lines for events (shared by `serve`, `join` and the windows).
//! - [`admin`]: `roundtable workspace ...` / `roundtable share ...` and link printing.
//! - [`qa`]: `roundtable scenario ...`, `simulate` and `bench` front-ends; [`bench_idle`]:
//!   `bench idle`, the memory of idle connections to a real `serve`; [`bench_soak`]: `bench soak`,
//!   kills of a real `serve` while people talk, checked against its database; [`bench_wire`]:
//!   `bench wire`, latency over real sockets against a raw broadcast server; [`bench_mask`]:
//!   `bench mask`, secret masking per streamed agent delta against copying the text;
//!   [`bench_auth`]: `bench auth`, engine time per authentication with many stored participants.
//! - [`paths`]: where the data directory is; [`lock`]: one host per data directory.
//! - [`install`]: the one-line install (the release's installers) shown beside share links.

pub mod admin;
pub mod bench_auth;
pub mod bench_hostile;
pub mod bench_idle;
pub mod bench_mask;
pub mod bench_soak;
pub mod bench_startup;
pub mod bench_wire;
pub mod console;
pub mod host;
pub mod install;
pub mod join;
pub mod lock;
pub mod nearby;
pub mod paths;
pub mod progress;
pub mod qa;
pub mod render;
pub mod serve;
pub mod serve_child;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run an AI coding agent on your machine and invite others into the same live sessions.
///
/// With no subcommand, runs the host (`roundtable host`).
#[derive(Parser, Debug)]
#[command(name = "roundtable", version, about, long_about = None)]
pub struct Cli {
    /// Data directory (database, TLS certificate, known hosts).
    #[arg(long, global = true, env = "ROUNDTABLE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Every subcommand. `main.rs` hands `host` and `connect` to `crate::ui` (they open windows
/// when there is a display) and everything else to [`run`].
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the host (falls back to headless `serve` when there is no display).
    Host(ServeArgs),
    /// Run the host headless: no window, same engine, prints share links and activity.
    Serve(ServeArgs),
    /// Open a share link as a remote (graphical client; falls back to `join` line mode).
    Connect(JoinArgs),
    /// Join a share link in terminal line mode (`--json` for scripts).
    #[command(after_help = join::LINE_COMMANDS_HELP)]
    Join(JoinArgs),
    /// Register and list workspaces (directories the agent works in).
    #[command(subcommand)]
    Workspace(admin::WorkspaceCmd),
    /// Mint, list, revoke and rotate share links. Takes effect on a running host within one tick.
    #[command(subcommand)]
    Share(admin::ShareCmd),
    /// Run scenario files headlessly and deterministically.
    #[command(subcommand)]
    Scenario(qa::ScenarioCmd),
    /// Random multi-user flows with injected faults and invariant checks.
    Simulate(qa::SimulateArgs),
    /// Benchmarks, reported as ratios against a reference measured in the same run.
    Bench(qa::BenchArgs),
}

/// Logs go to stderr through `tracing` (`-v` levels; `RUST_LOG` overrides).
pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_log_filter(verbose)));
    // Colours only on a terminal (and not with NO_COLOR): piped logs stay plain text.
    use std::io::IsTerminal as _;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).try_init();
}

/// What is logged without `RUST_LOG`. Without `-v` our own warnings and everyone's errors: the
/// windowing and graphics libraries warn about things a user can do nothing about (an X input
/// method missing under Xvfb, a Wayland protocol not offered), which only made the terminal look
/// broken. `-v` and more show every library's lines too.
fn default_log_filter(verbose: u8) -> &'static str {
    match verbose {
        // Targets match by prefix: `roundtable` covers every roundtable_* crate.
        0 => "error,roundtable=warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Runs a command that needs no window. `host` and `connect` run headless here (as `serve` and
/// `join`); `crate::ui` calls these as its fallbacks.
pub fn run(command: Command, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Host(args) | Command::Serve(args) => run_serve(args, data_dir),
        Command::Connect(args) => run_join(args.for_terminal_connect(), data_dir),
        Command::Join(args) => run_join(args, data_dir),
        Command::Workspace(cmd) => admin::run_workspace(cmd, data_dir),
        Command::Share(cmd) => admin::run_share(cmd, data_dir),
        Command::Scenario(cmd) => qa::run_cli(cmd),
        Command::Simulate(args) => qa::run_simulate(args),
        Command::Bench(args) => qa::run_bench(args),
    }
}

/// The process exit code for a command's result; errors are printed once, with their causes.
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            // Not eprintln!: a stderr that cannot be written (a full disk) must not turn the
            // error into a panic.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Default listen address: this machine only.
pub const DEFAULT_BIND: &str = "127.0.0.1:7447";

/// Arguments of `roundtable serve` / `roundtable host`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Host console (when headless): type on stdin — plain text chats as the host; /help lists the host console's commands (/who, /kick, /approve, /mint, /quit…)."
)]
pub struct ServeArgs {
    /// Address to listen on. The default only accepts connections from this machine; `--lan`
    /// is the one-flag way to be reachable from your LAN (`--bind 0.0.0.0:7447 --public-host
    /// YOUR_LAN_IP` does the same by hand).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,

    /// Be reachable from your LAN: listen on every interface (0.0.0.0, on the port of `--bind`,
    /// 7447 by default), write this machine's LAN address into links (unless `--public-host`
    /// names another) and advertise the host by mDNS so `roundtable join --nearby` finds it
    /// (not with `--no-mdns`). TLS only: refused with `--insecure`.
    #[arg(long)]
    pub lan: bool,

    /// Do not advertise the host on the LAN by mDNS (a host listening on a non-loopback address
    /// is advertised by default: its name, version and certificate fingerprint prefix — never a
    /// token).
    #[arg(long)]
    pub no_mdns: bool,

    /// Reach remotes anywhere, through NAT: `default` uses iroh's public relays (remotes connect
    /// by the host's key; hole punching makes the path direct when it can, the relay forwards
    /// end-to-end encrypted bytes when it cannot), a URL uses your own `iroh-relay`
    /// (e.g. `https://relay.example.org`), `off` stays direct-only (links name only the host's
    /// addresses). Not with `--insecure`. See docs/NETWORKING.md.
    #[arg(long, value_name = "default|off|URL", default_value = "default", env = "ROUNDTABLE_RELAY")]
    pub relay: crate::net::relay::RelayChoice,

    /// Host name or address (optionally with :PORT) written into share links, when it differs
    /// from the bind address (e.g. `--public-host 192.168.1.20` or `--public-host me.example.org:443`).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub public_host: Option<String>,

    /// Serve plain `ws://` without TLS. Only allowed when binding a loopback address (so never
    /// with `--lan`).
    #[arg(long)]
    pub insecure: bool,

    /// Print a share link at startup (all workspaces, collaborative, consensus). The link an
    /// earlier `--mint` start made is printed again while it still lets people in to every
    /// workspace (kept in the data directory's `minted-link`, mode 0600); otherwise a new one is
    /// minted.
    #[arg(long)]
    pub mint: bool,

    /// The agent of the workspace registered for the current directory when there is none yet:
    /// `demo` (the built-in demo agent), `claude` or `codex` (the CLI of `--claude-bin` /
    /// `--codex-bin`, every turn planning first). Workspaces already registered keep theirs
    /// (`roundtable workspace add` registers more).
    #[arg(long, value_enum, value_name = "KIND", default_value = "demo")]
    pub agent: crate::app::admin::AgentKind,

    /// The Claude Code CLI used by workspaces with `--agent claude` (name on PATH or a path).
    #[arg(long, value_name = "PATH", default_value = "claude")]
    pub claude_bin: String,

    /// The OpenAI Codex CLI used by workspaces with `--agent codex` (name on PATH or a path),
    /// run as `codex app-server`; it must be the pinned version (docs/AGENTS.md).
    #[arg(long, value_name = "PATH", default_value = "codex")]
    pub codex_bin: String,

    /// A tool the `claude` agent may use without asking (repeatable), e.g. `--allowed-tool Read`.
    /// Other tool uses become host decisions shown to everyone.
    #[arg(long, value_name = "TOOL")]
    pub allowed_tool: Vec<String>,

    /// Seconds an external agent may stay silent mid-turn before it is stopped and the turn fails
    /// (at least 1).
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub agent_timeout: u64,

    /// Milliseconds a cancelled external agent gets to stop on its own before it is killed.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub agent_cancel_grace: u64,

    /// Milliseconds an external agent gets to exit after its stdin is closed (a finished
    /// `claude` run; any agent at host shutdown, and again after SIGTERM) before the next step.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub agent_exit_grace: u64,

    /// Longest line an external agent may write on stdout; a longer one fails the turn (at least
    /// 1024: every line of the protocol, its hello included, must fit).
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024, value_parser = parse_line_bytes)]
    pub agent_max_line_bytes: usize,

    /// Default vote deadline in seconds (a vote still open then is denied "timed out").
    #[arg(long, value_name = "SECS")]
    pub vote_deadline: Option<u64>,

    /// Start with an empty database although this data directory was used before (it has the
    /// host's certificate or serve.json) and its database is missing, or has lost everything
    /// (no workspaces and no shares). Without it the host refuses to start, so a deleted, moved
    /// or emptied database is never silently replaced by an empty one.
    #[arg(long)]
    pub fresh: bool,

    /// Extra secret pattern (a regex) masked in text sent to remotes, besides the built-in ones
    /// (private keys, provider tokens and keys, JWTs, Authorization headers, passwords in URLs,
    /// password=... pairs: docs/AGENTS.md "Secret masking"). Repeatable.
    #[arg(long, value_name = "REGEX")]
    pub mask: Vec<String>,

    /// Extra argument for every `claude` run (repeatable), e.g. `--claude-arg --model
    /// --claude-arg sonnet`, or `--claude-arg --permission-mode --claude-arg plan` so the agent
    /// plans first and its plan goes to a vote (docs/AGENTS.md).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub claude_arg: Vec<String>,

    /// What a plan approved by the participants lets the `claude` agent do next: change files
    /// inside the workspace (Edit, Write, MultiEdit, NotebookEdit) until the turn ends without
    /// another vote — shell commands and every other tool still need one — or ask for every edit
    /// and command (docs/AGENTS.md).
    #[arg(long, value_enum, value_name = "MODE", default_value = "edit-workspace")]
    pub after_plan_approval: AfterPlanArg,

    /// Testing aid (docs/RELIABILITY.md): while FILE exists every commit fails as on a full
    /// disk, so `bench soak --storage-faults` can prove nothing unstored is acknowledged.
    #[arg(long, value_name = "FILE", hide = true)]
    pub inject_storage_faults: Option<PathBuf>,

    /// Testing aid (docs/RELIABILITY.md): the host's wall clock reads the system's moved by the
    /// signed number of milliseconds in FILE, so `bench soak --clock-steps` can step it.
    #[arg(long, value_name = "FILE", hide = true)]
    pub wall_clock_offset_file: Option<PathBuf>,

    /// Testing aid (docs/PERFORMANCE.md): load every session's history tails at start, as
    /// before they were loaded on demand, so `bench startup --events-per-session` can compare.
    #[arg(long, hide = true)]
    pub eager_tails: bool,

    /// How long someone whose connection dropped keeps their place — identity, sessions, votes
    /// and the turn — while they reconnect; after it they are gone and a turn they held ends.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reconnect_grace: u64,
}

/// `--agent-max-line-bytes`: a number of bytes no agent line of the protocol is too long for.
fn parse_line_bytes(text: &str) -> Result<usize, String> {
    const AT_LEAST: usize = 1024;
    let bytes: usize = text.trim().parse().map_err(|_| format!("\"{text}\" is not a number of bytes"))?;
    if bytes < AT_LEAST {
        return Err(format!(
            "{bytes} is too small: at least {AT_LEAST} bytes, or every agent line (its hello included) fails the turn"
        ));
    }
    Ok(bytes)
}

/// `serve --after-plan-approval`: what an approved plan lets the `claude` agent do next.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterPlanArg {
    /// Carry the plan out: file edits inside the workspace need no further vote until the turn
    /// ends; commands and other tools still do. (`accept-edits`, its old name, still works.)
    #[value(alias = "accept-edits")]
    EditWorkspace,
    /// Ask the host for every edit and command, as before the plan.
    AskEachTool,
}

impl From<AfterPlanArg> for crate::agent::claude::AfterPlan {
    fn from(arg: AfterPlanArg) -> Self {
        match arg {
            AfterPlanArg::EditWorkspace => crate::agent::claude::AfterPlan::EditWorkspace,
            AfterPlanArg::AskEachTool => crate::agent::claude::AfterPlan::AskEachTool,
        }
    }
}

impl ServeArgs {
    /// Where to listen: `--bind`, or with `--lan` every interface on `--bind`'s port.
    pub fn listen_addr(&self) -> SocketAddr {
        if self.lan {
            SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), self.bind.port())
        } else {
            self.bind
        }
    }
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND.parse().expect("valid default"),
            lan: false,
            no_mdns: false,
            // As on the command line: `--relay` defaults to iroh's public relays, ROUNDTABLE_RELAY
            // overrides it.
            relay: std::env::var("ROUNDTABLE_RELAY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(crate::net::relay::RelayChoice::Public),
            public_host: None,
            insecure: false,
            mint: false,
            agent: crate::app::admin::AgentKind::Demo,
            claude_bin: "claude".into(),
            codex_bin: "codex".into(),
            allowed_tool: Vec::new(),
            agent_timeout: 600,
            agent_cancel_grace: 5000,
            agent_exit_grace: 3000,
            agent_max_line_bytes: 1024 * 1024,
            vote_deadline: None,
            fresh: false,
            mask: Vec::new(),
            inject_storage_faults: None,
            wall_clock_offset_file: None,
            eager_tails: false,
            reconnect_grace: 30,
            claude_arg: Vec::new(),
            after_plan_approval: AfterPlanArg::EditWorkspace,
        }
    }
}

/// Arguments of `roundtable join` / `roundtable connect`.
#[derive(clap::Args, Debug, Clone)]
pub struct JoinArgs {
    /// The share link (`roundtable://HOST:PORT/TOKEN#sha256=FINGERPRINT`). A link on the command
    /// line is visible to other users of this computer (`ps`); `--link-file` or
    /// `ROUNDTABLE_LINK` keep it out of sight. `connect` without one opens the window on a start
    /// screen to paste it into, listing the hosts on the LAN (without a display: as `join --nearby`).
    #[arg(env = "ROUNDTABLE_LINK", hide_env_values = true)]
    pub link: Option<String>,

    /// Read the share link from this file (`-`: the first line of stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "link")]
    pub link_file: Option<PathBuf>,

    /// Your display name (made unique by the host: a second "Ann" becomes "Ann (2)").
    /// Defaults to $USER.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Join this session instead of the first one shared with you.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,

    /// Machine mode: print every frame from the host as one JSON object per line, as received
    /// (after a reconnect the replay may repeat events already printed: deduplicate by
    /// `session_id` + `seq`), and accept raw JSON requests on stdin (lines starting with `{`).
    /// Human messages go to stderr.
    #[arg(long)]
    pub json: bool,

    /// Look for hosts on the LAN (mDNS, hosts started with `--lan`). Without a link: list them
    /// (name, version, addresses, fingerprint prefix) and exit (`connect` opens its start screen,
    /// which lists them live); joining still needs a link from the host, since its token is what
    /// lets you in. With a link: when the link's address does
    /// not answer, try the addresses of a nearby host advertising the link's certificate
    /// fingerprint (the link's token and pinned certificate still decide).
    #[arg(long)]
    pub nearby: bool,

    /// How long `--nearby` listens for hosts.
    #[arg(long, value_name = "SECONDS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub nearby_seconds: u64,

    /// `connect` without a link in a terminal: the nearby list says a link is needed to connect.
    #[arg(skip)]
    pub connect_without_link: bool,
}

impl JoinArgs {
    /// Whether a link was given (on the command line, in `ROUNDTABLE_LINK` or with `--link-file`).
    pub fn has_link(&self) -> bool {
        self.link.is_some() || self.link_file.is_some()
    }

    /// `join --nearby` without any link: only list the hosts found.
    pub fn lists_nearby_only(&self) -> bool {
        self.nearby && !self.has_link()
    }

    /// `connect` in a terminal (no display, no window): as `join`, and without a link as
    /// `join --nearby` — the hosts on the LAN, and that connecting needs the link.
    pub fn for_terminal_connect(mut self) -> Self {
        if !self.has_link() {
            self.nearby = true;
            self.connect_without_link = true;
        }
        self
    }

    /// The share link: from the command line, `ROUNDTABLE_LINK`, or `--link-file` (a file, or
    /// `-` for the first line of stdin).
    pub fn link(&self) -> anyhow::Result<String> {
        use anyhow::Context as _;
        if let Some(link) = &self.link {
            return Ok(link.trim().to_string());
        }
        let Some(file) = &self.link_file else {
            anyhow::bail!(
                "give the share link: as an argument, with --link-file FILE (or - for stdin), or in ROUNDTABLE_LINK \
                 (--nearby lists the hosts on the LAN, but joining needs the link's token)"
            );
        };
        let text = if file.as_os_str() == "-" {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)
                .context("cannot read the link from stdin")?;
            line
        } else {
            std::fs::read_to_string(file).with_context(|| format!("cannot read the link from {}", file.display()))?
        };
        let link = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
        anyhow::ensure!(
            !link.is_empty(),
            "{} holds no link",
            if file.as_os_str() == "-" { "stdin".into() } else { file.display().to_string() }
        );
        Ok(link.to_string())
    }
}

/// `roundtable serve`: the headless host.
pub fn run_serve(args: ServeArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let data_dir = paths::data_dir(data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("net").build()?;
    let code = runtime.block_on(serve::serve(args, data_dir));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// `roundtable join`: the terminal client.
pub fn run_join(args: JoinArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let data_dir = paths::data_dir(data_dir)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).thread_name("net").build()?;
    let code = runtime.block_on(join::join(args, data_dir));
    // stdin is read on a detached thread that may still be blocked in `read`; don't wait for it.
    runtime.shutdown_background();
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the default filter lets through, by target and level.
    fn logged(verbose: u8) -> String {
        #[derive(Clone, Default)]
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(default_log_filter(verbose)))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "winit::platform_impl::linux::x11", "XIM not available");
            tracing::error!(target: "eframe::native", "cannot open the window");
            tracing::warn!(target: "roundtable_engine::systems", "a warning of ours");
            tracing::warn!(target: "roundtable::app::serve", "another of ours");
            tracing::info!(target: "roundtable::app::serve", "an info line");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn by_default_only_our_warnings_and_everyones_errors_are_logged() {
        let quiet = logged(0);
        assert!(!quiet.contains("XIM"), "a library's warning is not shown: {quiet}");
        for shown in ["cannot open the window", "a warning of ours", "another of ours"] {
            assert!(quiet.contains(shown), "{shown}: {quiet}");
        }
        assert!(!quiet.contains("an info line"));
        let verbose = logged(1);
        assert!(verbose.contains("XIM") && verbose.contains("an info line"), "-v shows everything: {verbose}");
    }

    #[test]
    fn serve_passes_claude_arguments_that_look_like_flags_and_the_after_plan_mode() {
        let cli = Cli::try_parse_from([
            "roundtable",
            "serve",
            "--claude-arg",
            "--permission-mode",
            "--claude-arg",
            "plan",
            "--after-plan-approval",
            "ask-each-tool",
        ])
        .expect("parses");
        let Some(Command::Serve(args)) = cli.command else { panic!("serve") };
        assert_eq!(args.claude_arg, ["--permission-mode", "plan"]);
        assert_eq!(args.after_plan_approval, AfterPlanArg::AskEachTool);
        let cli = Cli::try_parse_from(["roundtable", "serve"]).expect("parses");
        let Some(Command::Serve(args)) = cli.command else { panic!("serve") };
        assert_eq!(args.after_plan_approval, AfterPlanArg::EditWorkspace, "the default");
    }

    #[test]
    fn serve_takes_the_codex_binary_and_workspace_add_takes_the_codex_agent() {
        let cli = Cli::try_parse_from(["roundtable", "serve", "--codex-bin", "/opt/codex/bin/codex"]).expect("parses");
        let Some(Command::Serve(args)) = cli.command else { panic!("serve") };
        assert_eq!(args.codex_bin, "/opt/codex/bin/codex");
        let cli = Cli::try_parse_from(["roundtable", "serve"]).expect("parses");
        let Some(Command::Serve(args)) = cli.command else { panic!("serve") };
        assert_eq!(args.codex_bin, "codex", "the default: codex on PATH");
        Cli::try_parse_from(["roundtable", "workspace", "add", ".", "--agent", "codex"]).expect("--agent codex parses");
    }
}
