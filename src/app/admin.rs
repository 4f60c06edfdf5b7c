//! `roundtable workspace ...` and `roundtable share ...`: edit the data directory's database.
//!
//! These commands write the same SQLite file a running host uses. The host polls
//! `PRAGMA data_version` every tick, so a mint, revoke or rotate takes effect on it within one
//! tick (a revoked share's sockets are closed, a rotated share's old token is refused).
//!
//! Share links need the host's address and certificate fingerprint. The address comes from
//! `--host`, else from `serve.json` in the data directory (written by a host once it is ready,
//! just before it accepts anyone), else `127.0.0.1:7447`; the fingerprint from the data
//! directory's TLS certificate (created here if the host never ran). Beside a host that is still
//! starting (it holds the data dir's lock but has not written its `serve.json` yet) the command
//! waits for it, saying so, rather than print a link with an address the host may not have.

use crate::ids::{ShareId, WorkspaceId};
use crate::net::link::{self, Link};
use crate::net::tls;
use crate::persist::{AgentSpec, ShareRow};
use crate::protocol::{MintShareParams, Role};
use crate::store::Admin;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The address used in links when neither `--host` nor `serve.json` gives one.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7447";

/// File in the data directory where a running `serve` announces its address.
pub const SERVE_INFO_FILE: &str = "serve.json";

/// Contents of `serve.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeInfo {
    /// `HOST:PORT` the host listens on (`[V6]:PORT` for IPv6).
    pub addr: String,
    /// The host's other addresses, which links name after `addr` (a host on every interface).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
    /// The host's iroh endpoint id (hex), which links name after the addresses (`--relay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iroh: Option<String>,
    /// The relay the host's iroh endpoint waits at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Plain `ws://` (loopback only) instead of TLS.
    #[serde(default)]
    pub insecure: bool,
    /// The process id of the host that wrote it (absent in files of older versions). Written
    /// only once that host is ready: its sessions are open and it accepts connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// How long `share mint` waits for a host that is starting to become ready.
pub const STARTING_HOST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `serve.json` as it should be read for printing a link: waits while a host holds the data
/// dir's lock but has not announced itself yet (it is starting), for at most `wait`.
/// `Ok(None)`: no host is running and none ever announced itself.
pub fn ready_serve_info(data_dir: &Path, wait: std::time::Duration) -> anyhow::Result<Option<ServeInfo>> {
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        let info = read_serve_info(data_dir);
        let Some(holder) = crate::app::lock::running_host(data_dir) else {
            return Ok(info); // nobody runs here: the last address a host announced, if any
        };
        if info.as_ref().is_some_and(|i| i.pid == Some(holder)) {
            return Ok(info);
        }
        if started.elapsed() >= wait {
            anyhow::bail!(
                "the host on {} (PID {holder}) is still starting after {} s: it has not written its {} yet, so \
                 its address is unknown. Try again in a moment, or pass --host HOST:PORT.",
                data_dir.display(),
                wait.as_secs(),
                SERVE_INFO_FILE
            );
        }
        if !told {
            eprintln!("waiting for the host (PID {holder}) to finish starting…");
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Reads `serve.json` from the data directory, if present and readable.
pub fn read_serve_info(data_dir: &Path) -> Option<ServeInfo> {
    let path = data_dir.join(SERVE_INFO_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str(&text) {
        Ok(info) => Some(info),
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            None
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKind {
    /// Built-in deterministic demo agent (no setup needed).
    Demo,
    /// The Claude Code CLI (`claude`, or the binary given with --agent-cmd).
    Claude,
    /// The OpenAI Codex CLI as `codex app-server` (`codex`, or the binary given with --agent-cmd).
    Codex,
    /// Any executable speaking roundtable's JSON-lines agent protocol (needs --agent-cmd).
    Command,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Demo => "demo",
            AgentKind::Claude => "claude",
            AgentKind::Codex => "codex",
            AgentKind::Command => "command",
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum WorkspaceCmd {
    /// Register a directory as a workspace the agent works in.
    ///
    /// Prints the new workspace id (`w1`, `w2`, ...), which `share mint --workspace` takes.
    Add {
        /// Directory the agent works in (must exist; stored canonicalised).
        dir: PathBuf,
        /// Display name (default: the directory's name).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Agent backend for sessions in this workspace.
        #[arg(long, value_enum, default_value = "demo", value_name = "KIND")]
        agent: AgentKind,
        /// Executable for `--agent command` (required), `--agent claude` (default: `claude` on PATH)
        /// or `--agent codex` (default: serve's `--codex-bin`),
        /// with its arguments (`"python3 -u my_agent.py"`). Resolved now: a path relative to this
        /// directory, a bare name on PATH; script arguments that are files here are made absolute
        /// too. A missing or non-executable program is refused.
        #[arg(long, value_name = "PATH")]
        agent_cmd: Option<String>,
        /// Extra argument passed to the agent executable (repeat for several).
        #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
        agent_args: Vec<String>,
        /// `--agent claude` or `codex`: do not start turns in plan mode. By default every claude
        /// turn starts in plan mode (`--permission-mode plan`), and every codex turn in Codex's
        /// plan mode, so the agent's plan goes to a consensus vote before it changes anything;
        /// for claude an explicit `--agent-arg --permission-mode` also overrides it.
        #[arg(long)]
        no_plan_first: bool,
    },
    /// List registered workspaces with their agents and session counts.
    List,
}

/// Where the printed link points and how it is secured.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LinkArgs {
    /// Address remotes connect to, as HOST:PORT ([V6]:PORT for IPv6). Default: the running
    /// host's address from DATA_DIR/serve.json, else 127.0.0.1:7447.
    #[arg(long, value_name = "HOST:PORT")]
    pub host: Option<String>,
    /// Print a plain `#insecure` link (no TLS) for a host run with `serve --insecure`; loopback
    /// hosts only. Implied when serve.json says the host is insecure.
    #[arg(long)]
    pub insecure: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum ShareCmd {
    /// Mint a share link for one or more workspaces.
    ///
    /// The link (`roundtable://HOST:PORT/TOKEN#sha256=FINGERPRINT`) is printed once, alone on
    /// stdout (everything else goes to stderr, so `LINK=$(roundtable share mint ...)` works);
    /// roundtable keeps only a hash of its token. Lost it? `share rotate ID` prints a new one.
    Mint {
        /// Workspace the share gives access to, by id or name (repeat for several; see
        /// `workspace list`).
        #[arg(long = "workspace", short = 'w', value_name = "ID|NAME", required = true)]
        workspaces: Vec<String>,
        /// A label to recognise the share by (e.g. who it is for).
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
        /// Remotes can read but not send, vote or answer.
        #[arg(long)]
        observer: bool,
        /// 1:1 remote control: at most one remote at a time, no consensus.
        #[arg(long)]
        one_to_one: bool,
        /// Plan approvals and questions are decided by the turn holder alone, not by everyone.
        #[arg(long)]
        no_consensus: bool,
        /// New participants wait in a lobby until the host admits them.
        #[arg(long)]
        admission: bool,
        /// The link stops working after this long (e.g. 90s, 30m, 2h, 1d, 1h30m).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
        expires_in: Option<u64>,
        /// The link can be used to join this many times.
        #[arg(long, value_name = "N")]
        max_uses: Option<u32>,
        /// Votes opened in these participants' turns resolve as denied after this long (e.g. 2m).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
        vote_deadline: Option<u64>,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// List shares (never their tokens): scope, role, flags, uses, expiry, status.
    List,
    /// Revoke a share: its link stops working and its live connections are closed.
    Revoke {
        /// Share id (see `share list`).
        id: String,
    },
    /// Give a share a new link: the old link stops working, live connections stay.
    Rotate {
        /// Share id (see `share list`).
        id: String,
        #[command(flatten)]
        link: LinkArgs,
    },
}

/// Runs `roundtable workspace ...`.
pub fn run_workspace(cmd: WorkspaceCmd, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let dir = crate::app::paths::data_dir(data_dir)?;
    let mut admin = open_admin(&dir)?;
    match cmd {
        WorkspaceCmd::Add { dir: work_dir, name, agent, agent_cmd, agent_args, no_plan_first } => {
            let plan_first = no_plan_first.then_some(false);
            let spec = AgentSpec { kind: agent.as_str().into(), command: agent_cmd, args: agent_args, plan_first };
            // Resolved here, where the command was typed (not in the workspace at turn time).
            let here = std::env::current_dir()?;
            let path = std::env::var_os("PATH");
            let spec = crate::agent::resolve::resolve_spec(&spec, &here, path.as_deref())?;
            let row = admin.add_workspace(name.as_deref(), &work_dir, spec, crate::app::host::wall_ms())?;
            println!("Added workspace {} \"{}\" ({}, agent {})", row.id, row.name, row.dir, row.agent.label());
            if matches!(row.agent.kind.as_str(), "claude" | "codex") && row.agent.plan_first() {
                println!("Plan first: each turn starts in plan mode; the plan goes to a vote before the agent edits anything.");
            }
            println!("Share it with: roundtable share mint --workspace {}", row.id);
        }
        WorkspaceCmd::List => {
            let workspaces = admin.list_workspaces()?;
            if workspaces.is_empty() {
                println!("No workspaces yet. Add one with: roundtable workspace add DIR");
                return Ok(ExitCode::SUCCESS);
            }
            let sessions = admin.list_sessions()?;
            let rows = workspaces
                .iter()
                .map(|w| {
                    let count = sessions.iter().filter(|s| s.session.workspace == w.id).count();
                    vec![w.id.to_string(), w.name.clone(), w.agent.label(), count.to_string(), w.dir.clone()]
                })
                .collect();
            print!("{}", table(&["ID", "NAME", "AGENT", "SESSIONS", "DIR"], rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `roundtable share ...`.
pub fn run_share(cmd: ShareCmd, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let dir = crate::app::paths::data_dir(data_dir)?;
    let mut admin = open_admin(&dir)?;
    let now = crate::app::host::wall_ms();
    match cmd {
        ShareCmd::Mint {
            workspaces,
            label,
            observer,
            one_to_one,
            no_consensus,
            admission,
            expires_in,
            max_uses,
            vote_deadline,
            link,
        } => {
            // Work out the link first, so a bad --host fails before anything is minted.
            let target = LinkTarget::resolve(&dir, &link)?;
            let known = admin.list_workspaces()?;
            let workspaces = workspaces.iter().map(|w| workspace_by_id_or_name(&known, w)).collect::<Result<_, _>>()?;
            let params = MintShareParams {
                label: label.unwrap_or_default(),
                workspaces,
                collaborative: !one_to_one,
                consensus_required: !no_consensus && !one_to_one,
                admission_required: admission,
                role: if observer { Role::Observer } else { Role::Participant },
                expires_in_ms: expires_in,
                max_uses,
                vote_deadline_ms: vote_deadline,
            };
            let (row, token) = admin.mint_share(&params, now)?;
            eprintln!("Minted share {}: {}", row.id, describe_share(&row, now, &known));
            print_link_once(&target.link(token), &row.id);
        }
        ShareCmd::List => {
            let shares = admin.list_shares()?;
            if shares.is_empty() {
                println!("No shares yet. Mint one with: roundtable share mint --workspace ID");
            } else {
                print!("{}", shares_table(&shares, now, &admin.list_workspaces()?));
            }
        }
        ShareCmd::Revoke { id } => {
            let (row, newly) = admin.revoke_share(&ShareId(id.trim().to_string()), now)?;
            if newly {
                println!(
                    "Revoked share {}; its link no longer works and a running host closes its connections.",
                    row.id
                );
            } else {
                println!("Share {} was already revoked.", row.id);
            }
        }
        ShareCmd::Rotate { id, link } => {
            let target = LinkTarget::resolve(&dir, &link)?;
            let (row, token) = admin.rotate_share(&ShareId(id.trim().to_string()), now)?;
            eprintln!("Rotated share {}: the old link no longer works; live connections stay.", row.id);
            print_link_once(&target.link(token), &row.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A workspace named by id (`w1`) or by name (`proj`); a name two workspaces share is refused.
fn workspace_by_id_or_name(known: &[crate::persist::WorkspaceRow], given: &str) -> anyhow::Result<WorkspaceId> {
    let given = given.trim();
    if let Some(w) = known.iter().find(|w| w.id.as_str() == given) {
        return Ok(w.id.clone());
    }
    let named: Vec<&crate::persist::WorkspaceRow> = known.iter().filter(|w| w.name == given).collect();
    match named[..] {
        [w] => Ok(w.id.clone()),
        [] => {
            let list: Vec<String> = known.iter().map(|w| format!("{} ({})", w.id, w.name)).collect();
            anyhow::bail!(
                "no workspace has the id or name \"{given}\"; workspaces: {}",
                if list.is_empty() { "none yet (roundtable workspace add DIR)".into() } else { list.join(", ") }
            )
        }
        _ => anyhow::bail!("several workspaces are named \"{given}\"; give the id (see `roundtable workspace list`)"),
    }
}

fn open_admin(data_dir: &Path) -> anyhow::Result<Admin> {
    let db = crate::app::paths::database(data_dir);
    Admin::open(&db).with_context(|| format!("cannot open the database in {}", data_dir.display()))
}

/// Host, port and security of links printed by this command.
struct LinkTarget {
    host: String,
    port: u16,
    fingerprint: Option<String>,
    also: Vec<(String, u16)>,
    iroh: Option<link::IrohAddr>,
}

impl LinkTarget {
    fn resolve(data_dir: &Path, args: &LinkArgs) -> anyhow::Result<LinkTarget> {
        Self::resolve_within(data_dir, args, STARTING_HOST_WAIT)
    }

    fn resolve_within(data_dir: &Path, args: &LinkArgs, wait: std::time::Duration) -> anyhow::Result<LinkTarget> {
        let serve = match &args.host {
            Some(_) => read_serve_info(data_dir),
            None => ready_serve_info(data_dir, wait)?,
        };
        let insecure = args.insecure || serve.as_ref().is_some_and(|s| s.insecure);
        let (host, port) = match (&args.host, &serve) {
            (Some(h), _) => link::parse_host_port(h).with_context(|| format!("invalid --host \"{h}\""))?,
            (None, Some(s)) => {
                let (host, port) = link::parse_host_port(&s.addr)
                    .with_context(|| format!("invalid addr \"{}\" in {}", s.addr, SERVE_INFO_FILE))?;
                (advertised_host(host), port)
            }
            (None, None) => link::parse_host_port(DEFAULT_ADDR).expect("the default address is valid"),
        };
        if insecure && !link::is_loopback_host(&host) {
            anyhow::bail!(
                "insecure (plain ws://) links only work on loopback, but the host is {host}; \
                 run the host with TLS (without --insecure) to share beyond this machine"
            );
        }
        let fingerprint = if insecure {
            None
        } else {
            let identity = tls::load_or_create(data_dir).context("cannot load the host's TLS certificate")?;
            Some(identity.fingerprint)
        };
        // The running host's other addresses, unless --host names the one to use.
        let also = match (&args.host, &serve) {
            (None, Some(s)) => s.also.iter().filter_map(|a| link::parse_host_port(a).ok()).collect(),
            _ => Vec::new(),
        };
        // The running host's iroh endpoint: reachable by it wherever `--host` points.
        let iroh = serve.as_ref().filter(|_| !insecure).and_then(|s| {
            let id = s.iroh.clone().filter(|id| crate::net::relay::is_endpoint_id(id))?;
            Some(link::IrohAddr { id, relay: s.relay.clone().filter(|r| crate::net::relay::is_relay_url(r)) })
        });
        Ok(LinkTarget { host, port, fingerprint, also, iroh })
    }

    fn link(&self, token: String) -> Link {
        Link {
            also: self.also.clone(),
            iroh: self.iroh.clone(),
            ..Link::new(self.host.clone(), self.port, token, self.fingerprint.clone())
        }
    }
}

/// A host listening on every interface (`0.0.0.0`, `::`) is advertised by the machine's name
/// when known (else loopback); `--host` overrides.
fn advertised_host(bound: String) -> String {
    let unspecified = bound.parse::<std::net::IpAddr>().map(|ip| ip.is_unspecified()).unwrap_or(false);
    if !unspecified {
        return bound;
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    let host = name.unwrap_or_else(|| "127.0.0.1".to_string());
    eprintln!("note: the host listens on all interfaces; the link uses {host} (pass --host HOST:PORT to choose)");
    host
}

fn print_link_once(link: &Link, id: &ShareId) {
    println!("{link}");
    eprintln!();
    eprintln!("This link is shown only once: roundtable stores only a hash of its token.");
    eprintln!("If you lose it, run `roundtable share rotate {id}` for a new link (the old one stops working).");
}

/// The backend and the command line it runs (`command (/usr/bin/python3 -u /home/me/agent.py)`).
/// A workspace's agent for people: `command (/abs/agent.py --fast)`, `claude, plan first`.
fn flags(s: &ShareRow) -> String {
    share_flags(s.collaborative, s.consensus_required, s.admission_required)
}

/// A share's flags as listed by `share list` and the host console: `collab,consensus,admission`.
pub fn share_flags(collaborative: bool, consensus: bool, admission: bool) -> String {
    let mut f = vec![if collaborative { "collab" } else { "1:1" }];
    if consensus {
        f.push("consensus");
    }
    if admission {
        f.push("admission");
    }
    f.join(",")
}

fn status(s: &ShareRow, now: u64) -> &'static str {
    share_status(s.revoked, s.expires_at, s.max_uses, s.uses, now)
}

/// A share's status at `now`: `revoked`, `expired`, `used up` or `active`.
pub fn share_status(
    revoked: bool,
    expires_at: Option<u64>,
    max_uses: Option<u32>,
    uses: u32,
    now: u64,
) -> &'static str {
    if revoked {
        "revoked"
    } else if expires_at.is_some_and(|t| t <= now) {
        "expired"
    } else if max_uses.is_some_and(|m| uses >= m) {
        "used up"
    } else {
        "active"
    }
}

/// A workspace as people know it: its name in quotes, or its id when it has none (or is gone).
pub fn workspace_label(name: Option<&str>, id: &WorkspaceId) -> String {
    match name {
        Some(name) if !name.is_empty() => format!("\"{name}\""),
        _ => id.to_string(),
    }
}

fn known_label(known: &[crate::persist::WorkspaceRow], id: &WorkspaceId) -> String {
    workspace_label(known.iter().find(|w| &w.id == id).map(|w| w.name.as_str()), id)
}

fn describe_share(s: &ShareRow, now: u64, known: &[crate::persist::WorkspaceRow]) -> String {
    let scope: Vec<String> = s.workspaces.iter().map(|w| known_label(known, w)).collect();
    let mut text = format!("{} for {} ({})", s.role.as_str(), scope.join(", "), flags(s));
    if !s.label.is_empty() {
        text = format!("\"{}\", {text}", s.label);
    }
    if let Some(t) = s.expires_at {
        text.push_str(&format!(", expires {}", relative(t, now)));
    }
    if let Some(m) = s.max_uses {
        text.push_str(&format!(", max {m} uses"));
    }
    if let Some(d) = s.vote_deadline_ms {
        text.push_str(&format!(", vote deadline {}", human_duration(d)));
    }
    text
}

fn shares_table(shares: &[ShareRow], now: u64, known: &[crate::persist::WorkspaceRow]) -> String {
    let rows = shares
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                if s.label.is_empty() { "-".into() } else { s.label.clone() },
                s.workspaces
                    .iter()
                    .map(|w| match known.iter().find(|k| &k.id == w) {
                        Some(k) if !k.name.is_empty() => format!("{} ({w})", k.name),
                        _ => w.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                s.role.as_str().to_string(),
                flags(s),
                match s.max_uses {
                    Some(m) => format!("{}/{m}", s.uses),
                    None => format!("{}/-", s.uses),
                },
                s.expires_at.map(|t| relative(t, now)).unwrap_or_else(|| "never".into()),
                status(s, now).to_string(),
            ]
        })
        .collect();
    table(&["ID", "LABEL", "WORKSPACES", "ROLE", "FLAGS", "USES", "EXPIRES", "STATUS"], rows)
}

/// Left-aligned columns separated by two spaces.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_cells: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_cells).chain(rows.iter()) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// "in 2h 5m" / "3m 10s ago".
fn relative(at: u64, now: u64) -> String {
    if at > now {
        format!("in {}", human_duration(at - now))
    } else {
        format!("{} ago", human_duration(now - at))
    }
}

/// A duration in ms as its two largest units: "1d 2h", "5m 3s", "900ms".
pub fn human_duration(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let mut parts = Vec::new();
    let mut rest = ms;
    for (size, unit) in UNITS {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 || (!parts.is_empty() && rest == 0) {
            break;
        }
    }
    parts.join(" ")
}

/// Parses a duration such as `90s`, `30m`, `2h`, `1d`, `500ms` or `1h30m` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration (examples: 90s, 30m, 2h, 1d)".into());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration \"{text}\" (examples: 90s, 30m, 2h, 1d, 1h30m)"));
        }
        let number: u64 = rest[..digits].parse().map_err(|_| format!("number too large in \"{text}\""))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("duration \"{text}\" needs a unit: ms, s, m, h or d (e.g. 30m)")),
            other => return Err(format!("unknown unit \"{other}\" in \"{text}\" (use ms, s, m, h or d)")),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration \"{text}\" is too long"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_documented_units() {
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("30m"), Ok(1_800_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
    }

    #[test]
    fn durations_without_a_unit_or_with_junk_are_refused() {
        assert!(parse_duration_ms("90").unwrap_err().contains("needs a unit"));
        assert!(parse_duration_ms("5y").unwrap_err().contains("unknown unit"));
        assert!(parse_duration_ms("m").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
    }

    #[test]
    fn human_durations_show_two_units() {
        assert_eq!(human_duration(500), "500ms");
        assert_eq!(human_duration(90_000), "1m 30s");
        assert_eq!(human_duration(7_200_000), "2h");
        assert_eq!(human_duration(90_061_000), "1d 1h");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["ID", "NAME"], vec![vec!["w1".into(), "alpha".into()], vec!["w10".into(), "b".into()]]);
        assert_eq!(t, "ID   NAME\nw1   alpha\nw10  b\n");
    }

    #[test]
    fn serve_info_reads_the_running_hosts_address() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_serve_info(dir.path()), None);
        std::fs::write(dir.path().join(SERVE_INFO_FILE), r#"{"addr":"[::1]:9000","insecure":true}"#).unwrap();
        let target = LinkTarget::resolve(dir.path(), &LinkArgs::default()).unwrap();
        assert_eq!((target.host.as_str(), target.port, target.fingerprint), ("::1", 9000, None));
    }

    #[test]
    fn a_link_beside_a_starting_host_waits_for_its_address_and_never_uses_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        // A stale serve.json from an earlier host, and a host that holds the lock but is still
        // starting (this process stands in for it).
        std::fs::write(dir.path().join(SERVE_INFO_FILE), r#"{"addr":"127.0.0.1:1111","insecure":true,"pid":1}"#)
            .unwrap();
        let lock = crate::app::lock::DataDirLock::acquire(dir.path()).unwrap();
        let err = LinkTarget::resolve_within(dir.path(), &LinkArgs::default(), std::time::Duration::ZERO)
            .err()
            .expect("a starting host's address is unknown")
            .to_string();
        assert!(err.contains("still starting") && err.contains("--host"), "{err}");

        // It becomes ready while we wait: its own address is used.
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            LinkTarget::resolve_within(&path, &LinkArgs::default(), std::time::Duration::from_secs(30)).unwrap()
        });
        crate::app::host::write_serve_json(dir.path(), "127.0.0.1:2222", &[], None, true).unwrap();
        let target = waiter.join().unwrap();
        assert_eq!((target.host.as_str(), target.port), ("127.0.0.1", 2222));

        // Once no host runs, the last announced address is used without waiting.
        drop(lock);
        let target = LinkTarget::resolve_within(dir.path(), &LinkArgs::default(), std::time::Duration::ZERO).unwrap();
        assert_eq!(target.port, 2222);
    }

    #[test]
    fn insecure_links_are_refused_for_non_loopback_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let args = LinkArgs { host: Some("example.org:7447".into()), insecure: true };
        let err = LinkTarget::resolve(dir.path(), &args).err().unwrap().to_string();
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn secure_links_pin_the_data_dirs_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let args = LinkArgs { host: Some("example.org:7447".into()), insecure: false };
        let target = LinkTarget::resolve(dir.path(), &args).unwrap();
        let identity = tls::load_or_create(dir.path()).unwrap();
        let link = target.link("tok".into());
        assert_eq!(link.to_string(), format!("roundtable://example.org:7447/tok#sha256={}", identity.fingerprint));
    }
}
