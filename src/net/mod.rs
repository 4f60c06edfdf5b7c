//! Network transport: the TLS WebSocket host (`serve`), pairing links, and the `join` client.
//!
//! - [`host`]: the engine driver thread + server + the host's in-process connection, as one unit.
//! - [`server`]: accept loop, TLS, WebSocket, and the bounded per-connection queues.
//! - [`serve`]: the headless host command (`roundtable serve`): setup, links, activity log.
//! - [`client`]: connect from a link (pinned TLS), request/response matching, events.
//! - [`join`]: the terminal client (`roundtable join`), with reconnect and resume.
//! - [`render`]: human-readable lines for events (shared by `serve` and `join`).
//! - [`known_hosts`]: remembered host fingerprints.
//! - `tls`, `link`: the host's certificate and the share link format.

pub mod client;
pub mod console;
pub mod host;
pub mod join;
pub mod known_hosts;
pub mod link;
pub mod render;
pub mod serve;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

/// Default listen address: this machine only.
pub const DEFAULT_BIND: &str = "127.0.0.1:7447";

/// Arguments of `roundtable serve` / `roundtable host`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Host console (when headless): type on stdin — plain text chats as the host; /help lists the host console's commands (/who, /kick, /approve, /mint, /quit…)."
)]
pub struct ServeArgs {
    /// Address to listen on. The default only accepts connections from this machine;
    /// `--bind 0.0.0.0:7447` exposes the host on your LAN, and then links need
    /// `--public-host` naming an address the others can reach (e.g. your LAN IP).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,

    /// Host name or address (optionally with :PORT) written into share links, when it differs
    /// from the bind address (e.g. `--public-host 192.168.1.20` or `--public-host me.example.org:443`).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub public_host: Option<String>,

    /// Serve plain `ws://` without TLS. Only allowed when binding a loopback address.
    #[arg(long)]
    pub insecure: bool,

    /// Mint a share link at startup (all workspaces, collaborative, consensus) and print it.
    #[arg(long)]
    pub mint: bool,

    /// The Claude Code CLI used by workspaces with `--agent claude` (name on PATH or a path).
    #[arg(long, value_name = "PATH", default_value = "claude")]
    pub claude_bin: String,

    /// A tool the `claude` agent may use without asking (repeatable), e.g. `--allowed-tool Read`.
    /// Other tool uses become host decisions shown to everyone.
    #[arg(long, value_name = "TOOL")]
    pub allowed_tool: Vec<String>,

    /// Seconds an external agent may stay silent mid-turn before it is stopped and the turn fails.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub agent_timeout: u64,

    /// Default vote deadline in seconds (a vote still open then is denied "timed out").
    #[arg(long, value_name = "SECS")]
    pub vote_deadline: Option<u64>,

    /// Extra secret pattern (a regex) masked in text sent to remotes, besides the built-in ones
    /// (private keys, common API key prefixes, password=... pairs). Repeatable.
    #[arg(long, value_name = "REGEX")]
    pub mask: Vec<String>,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND.parse().expect("valid default"),
            public_host: None,
            insecure: false,
            mint: false,
            claude_bin: "claude".into(),
            allowed_tool: Vec::new(),
            agent_timeout: 600,
            vote_deadline: None,
            mask: Vec::new(),
        }
    }
}

/// Arguments of `roundtable join` / `roundtable connect`.
#[derive(clap::Args, Debug, Clone)]
pub struct JoinArgs {
    /// The share link (`roundtable://HOST:PORT/TOKEN#sha256=FINGERPRINT`).
    pub link: String,

    /// Your display name (made unique by the host: a second "Ann" becomes "Ann (2)").
    /// Defaults to $USER.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Join this session instead of the first one shared with you.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,

    /// Machine mode: print every frame from the host as one JSON object per line, and accept
    /// raw JSON requests on stdin (lines starting with `{`). Human messages go to stderr.
    #[arg(long)]
    pub json: bool,
}

/// `roundtable host`: the host with its desktop window; without a display (or when the window
/// cannot open) it runs headless, like `roundtable serve`.
pub fn run_host(args: ServeArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    if !crate::ui::has_display() {
        serve::say(
            "no display found (DISPLAY / WAYLAND_DISPLAY unset) — running headless (same as `roundtable serve`)\n",
        );
        return run_serve(args, data_dir);
    }
    match crate::ui::run_host_window(&args, data_dir)? {
        Some(code) => Ok(code),
        None => run_serve(args, data_dir),
    }
}

/// `roundtable serve`: the headless host.
pub fn run_serve(args: ServeArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let data_dir = crate::paths::data_dir(data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("net").build()?;
    let code = runtime.block_on(serve::serve(args, data_dir));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// `roundtable connect`: the graphical client; without a display (or when the window cannot
/// open) it runs `join` in terminal line mode.
pub fn run_connect(args: JoinArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    if !crate::ui::has_display() {
        eprintln!("no display found (DISPLAY / WAYLAND_DISPLAY unset) — joining in terminal line mode (same as `roundtable join`).");
        return run_join(args, data_dir);
    }
    match crate::ui::run_connect_window(&args, data_dir)? {
        Some(code) => Ok(code),
        None => run_join(args, data_dir),
    }
}

/// `roundtable join`: the terminal client.
pub fn run_join(args: JoinArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let data_dir = crate::paths::data_dir(data_dir)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).thread_name("net").build()?;
    let code = runtime.block_on(join::join(args, data_dir));
    // stdin is read on a detached thread that may still be blocked in `read`; don't wait for it.
    runtime.shutdown_background();
    code
}
