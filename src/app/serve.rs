//! `roundtable serve`: the headless host.
//!
//! Starts the [`Host`] (engine thread + TLS WebSocket server), then uses the host's own
//! in-process connection — the same protocol a remote speaks, with host rights — to make the
//! host usable at once: register the current directory as a demo workspace when none exists,
//! open a "Session 1" in every workspace without a session, optionally mint a link (`--mint`),
//! and follow every session to print a readable activity log. Lines typed on stdin go to the
//! host console ([`crate::app::console`]): chat as the host, moderate, vote, manage sessions and
//! shares. End of stdin only turns the console off. Ctrl-C, SIGTERM or `/quit` shut down
//! gracefully: every client gets a `closing` event and a close frame, and the engine commits a
//! last tick.

use crate::app::console::{host_roster, stdin_lines, Console};
use crate::app::host::{write_serve_json, Host, HostOptions};
use crate::app::render::Renderer;
use crate::app::ServeArgs;
use crate::ids::WorkspaceId;
use crate::net::client::ClientError;
use crate::net::client::{Client, ClientEvent, Events};
use crate::persist::AgentSpec;
use crate::protocol::*;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Title of the session `serve` opens in a workspace that has none.
pub const FIRST_SESSION_TITLE: &str = "Session 1";

/// Host options from the command line (shared by `serve` and the host window).
pub fn host_options(args: &ServeArgs, data_dir: &std::path::Path) -> anyhow::Result<HostOptions> {
    if args.lan && args.insecure {
        anyhow::bail!(
            "--lan and --insecure cannot be used together: --insecure serves plain ws:// without encryption, \
             so it is only allowed on a loopback address, and --lan listens on every interface. Drop --insecure \
             to serve TLS (the default; links pin the host's certificate)."
        );
    }
    let bind = args.listen_addr();
    if args.insecure && !bind.ip().is_loopback() {
        anyhow::bail!(
            "--insecure serves plain ws:// without encryption, so it is only allowed on a loopback address \
             (e.g. --bind 127.0.0.1:7447); {bind} is not loopback. Drop --insecure to serve TLS (the default)."
        );
    }
    if let Err(e) = crate::engine::mask::Masker::new(&args.mask) {
        anyhow::bail!("invalid --mask pattern: {e}");
    }
    let mut options = HostOptions::new(data_dir.to_path_buf(), bind);
    options.public_host = args.public_host.clone().or_else(|| if args.lan { lan_link_host() } else { None });
    options.insecure = args.insecure;
    options.mdns = !args.no_mdns;
    options.relay = args.relay.clone();
    options.fresh = args.fresh;
    options.inject_storage_faults = args.inject_storage_faults.clone();
    options.wall_clock = crate::app::host::WallClock { offset_file: args.wall_clock_offset_file.clone() };
    options.engine.grace_ms = args.reconnect_grace * 1000;
    options.engine.eager_tails = args.eager_tails;
    options.engine.mask_patterns = args.mask.clone();
    options.engine.default_vote_deadline_ms = args.vote_deadline.map(|s| s * 1000);
    options.engine.vote_deadline_pinned = args.vote_deadline.is_some();
    options.agents.claude_binary = args.claude_bin.clone();
    options.agents.codex_binary = args.codex_bin.clone();
    options.agents.allowed_tools = args.allowed_tool.clone();
    options.agents.claude_args = args.claude_arg.clone();
    options.agents.after_plan = args.after_plan_approval.into();
    options.agents.hang_timeout = std::time::Duration::from_secs(args.agent_timeout);
    options.agents.cancel_grace = std::time::Duration::from_millis(args.agent_cancel_grace);
    options.agents.exit_grace = std::time::Duration::from_millis(args.agent_exit_grace);
    options.agents.max_line_bytes = args.agent_max_line_bytes;
    options.engine.resolve_agent = Some(resolve_in_host_dir);
    Ok(options)
}

/// `--lan` without `--public-host`: this machine's primary LAN IPv4 address for links. With none
/// (no network) links name loopback, and `serve` says so at startup.
fn lan_link_host() -> Option<String> {
    let addrs =
        crate::net::discovery::ipv4_addresses().inspect_err(|e| tracing::warn!("--lan: {e}")).unwrap_or_default();
    crate::net::discovery::primary_lan_ipv4(&addrs, crate::net::discovery::default_route_ipv4())
        .map(|ip| ip.to_string())
}

/// `add_workspace`'s agent command resolved against the host's working directory and `PATH`
/// (see `agent::resolve`).
fn resolve_in_host_dir(spec: &AgentSpec) -> Result<AgentSpec, String> {
    let here = std::env::current_dir().map_err(|e| format!("cannot read the host's working directory: {e}"))?;
    let path = std::env::var_os("PATH");
    crate::agent::resolve::resolve_spec(spec, &here, path.as_deref()).map_err(|e| e.to_string())
}

/// What [`prepare_host`] did.
pub struct Prepared {
    pub workspaces: Vec<WorkspaceInfo>,
    /// The directory registered as a demo workspace because there was none.
    pub demo_registered: Option<String>,
    /// The link `--mint` asked for.
    pub minted: Option<Minted>,
}

/// The agent of the workspace a host registers for its directory when it has none (`--agent`).
fn first_agent(kind: crate::app::admin::AgentKind) -> anyhow::Result<AgentSpec> {
    use crate::app::admin::AgentKind;
    match kind {
        AgentKind::Demo => Ok(AgentSpec::demo()),
        // The CLIs of `--claude-bin` / `--codex-bin`; both plan first by default.
        AgentKind::Claude | AgentKind::Codex => {
            Ok(AgentSpec { kind: kind.as_str().into(), command: None, args: Vec::new(), plan_first: None })
        }
        AgentKind::Command => anyhow::bail!(
            "--agent command needs the agent's program: register the directory with \
             `roundtable workspace add DIR --agent command --agent-cmd PATH`, then start the host"
        ),
    }
}

/// The link `--mint` prints: minted now, or the one an earlier start minted, still valid.
pub struct Minted {
    pub result: MintShareResult,
    /// Minted at an earlier start and printed again (not a new share).
    pub reused: bool,
}

impl Minted {
    /// What the terminal shows: the link, how to use it and how to install.
    pub fn invite_text(&self) -> Option<String> {
        let link = self.result.link.as_deref()?;
        Some(if self.reused {
            let uses = match self.result.share.uses {
                0 => "not used yet".to_string(),
                1 => "used once".to_string(),
                n => format!("used {n} times"),
            };
            invite_text_headed(
                &format!(
                    "share link (the same as at the last start: share {}, {uses}; `roundtable share revoke {}` ends it):",
                    self.result.share.share_id, self.result.share.share_id
                ),
                link,
            )
        } else {
            invite_text(link)
        })
    }
}

/// The file in the data directory where `--mint` keeps the share id and token of the link it
/// printed (mode 0600), so the next `--mint` start prints the same link instead of minting one
/// more.
pub const MINTED_LINK_FILE: &str = "minted-link";

/// How long the host's own start-up requests wait for a database that refuses writes.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs `request` again while the host refuses it with `storage_unavailable` (a full disk at
/// start-up), saying once what it waits for; any other outcome is returned. After
/// [`PATIENCE`] the refusal itself is returned, with what was waited for.
pub async fn patiently<T, F, Fut>(what: &str, mut request: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut told = false;
    let started = std::time::Instant::now();
    loop {
        match request().await {
            Err(ClientError::Protocol(mut refusal)) if refusal.code == ErrorCode::StorageUnavailable => {
                if started.elapsed() >= PATIENCE {
                    refusal.message = format!(
                        "{what}: gave up after {} s waiting for the database to take writes again: {}",
                        PATIENCE.as_secs(),
                        refusal.message
                    );
                    return Err(ClientError::Protocol(refusal));
                }
                if !told {
                    tracing::warn!("{what}: waiting for the database to take writes again: {}", refusal.message);
                    told = true;
                }
                tokio::time::sleep(refusal.retry_after()).await;
            }
            other => return other,
        }
    }
}

/// Makes a fresh host usable (shared by `serve` and the host window): registers the current
/// directory as a demo workspace when none exists, opens a first session in every workspace
/// without one, and with `mint` mints a link to every workspace.
///
/// A link that `--mint` made at an earlier start is printed again while it still lets people in
/// to every workspace (not revoked, rotated, expired or used up), so restarts do not pile up
/// unused links; otherwise a new one is minted and kept for the next start.
pub async fn prepare_host(
    host: &Host,
    data_dir: &std::path::Path,
    args: &ServeArgs,
    label: &str,
) -> anyhow::Result<Prepared> {
    let (client, mint) = (&host.client, args.mint);
    let mut workspaces = list_workspaces(client).await?;
    let mut demo_registered = None;
    if workspaces.is_empty() {
        let agent = first_agent(args.agent)?;
        let dir = std::env::current_dir().context("cannot read the current directory")?;
        let dir = dir.canonicalize().unwrap_or(dir);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "workspace".into());
        let params = AddWorkspaceParams { name, dir: dir.to_string_lossy().into_owned(), agent: Some(agent) };
        patiently("registering a workspace", || client.request(Method::AddWorkspace(params.clone())))
            .await
            .context("cannot register the current directory as a workspace")?;
        demo_registered = Some(dir.display().to_string());
        workspaces = list_workspaces(client).await?;
    }
    let sessions = list_sessions(client).await?;
    for w in &workspaces {
        if !sessions.iter().any(|s| s.workspace_id == w.id) {
            let params = CreateSessionParams {
                workspace_id: w.id.clone(),
                title: FIRST_SESSION_TITLE.into(),
                vote_deadline_ms: None,
                plan_first: None,
            };
            patiently("opening a session", || client.request(Method::CreateSession(params.clone())))
                .await
                .with_context(|| format!("cannot open a session in workspace {}", w.id))?;
        }
    }
    let minted = if mint && !workspaces.is_empty() {
        let kept = crate::app::paths::SecretFile::new(data_dir.join(MINTED_LINK_FILE));
        let ids: Vec<WorkspaceId> = workspaces.iter().map(|w| w.id.clone()).collect();
        match still_valid(host, data_dir, &kept, &ids) {
            Some(result) => Some(Minted { result, reused: true }),
            None => {
                let params = MintShareParams::team(label, ids);
                let result: MintShareResult =
                    patiently("minting a link", || client.call(Method::MintShare(params.clone())))
                        .await
                        .context("cannot mint a share link")?;
                kept.save(&format!("{} {}", result.share.share_id, result.token), "the minted link");
                Some(Minted { result, reused: false })
            }
        }
    } else {
        None
    };
    Ok(Prepared { workspaces, demo_registered, minted })
}

/// The link kept in `kept`, if its share still lets people in to every one of `workspaces`:
/// there, not revoked, its token not rotated, not expired, not used up. Read from the database
/// (as `share list` does): only it knows the token's hash.
fn still_valid(
    host: &Host,
    data_dir: &std::path::Path,
    kept: &crate::app::paths::SecretFile,
    workspaces: &[WorkspaceId],
) -> Option<MintShareResult> {
    let text = kept.load()?;
    let (id, token) = text.split_once(' ')?;
    let admin = crate::store::Admin::open(&crate::app::paths::database(data_dir))
        .inspect_err(|e| tracing::warn!("cannot read the shares to reuse the minted link: {e}"))
        .ok()?;
    let shares = admin.list_shares().inspect_err(|e| tracing::warn!("cannot list the shares: {e}")).ok()?;
    let row = shares.iter().find(|s| s.id.to_string() == id)?;
    let now = crate::app::host::wall_ms();
    let usable = !row.revoked
        && crate::token::matches(token, &row.token_hash)
        && row.expires_at.is_none_or(|at| at > now)
        && row.max_uses.is_none_or(|max| row.uses < max)
        && workspaces.iter().all(|w| row.workspaces.contains(w));
    usable.then(|| MintShareResult {
        share: ShareInfo::new(row, 0),
        token: token.to_string(),
        link: Some(host.link_for(token)),
    })
}

/// The host is ready (its sessions are open): `serve.json` names its address and pid — the
/// readiness signal `share mint` and the benches wait for — and then it accepts remotes.
pub fn announce_ready(host: &Host, data_dir: &std::path::Path, insecure: bool) {
    if let Err(e) = write_serve_json(data_dir, &host.link_authority, &host.link_also, host.link_iroh.as_ref(), insecure)
    {
        // Only `share mint` and the benches read it; a full disk must not stop the host.
        tracing::warn!("{e:#}; `roundtable share mint` will not know this host's address (pass it --host)");
    }
    host.open();
}

/// Runs the headless host until Ctrl-C / SIGTERM.
pub async fn serve(args: ServeArgs, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let options = host_options(&args, &data_dir)?;
    let (mut host, mut events) = Host::start(options).await?;

    let mut log = Renderer::new(false);
    log.prefix_sessions = true;
    let setup = setup(&host, &data_dir, &mut log, &args).await;
    let setup = match setup {
        Ok(s) => s,
        Err(e) => {
            host.shutdown().await;
            return Err(e);
        }
    };
    announce_ready(&host, &data_dir, args.insecure);
    say(&banner(&host, &data_dir, &setup, Some(&args)));
    if host.local_addr.ip().is_unspecified() && host.link_authority.starts_with("127.0.0.1:") {
        say(&format!(
            "note: listening on every interface, but links name {}; pass --public-host with an address the others can reach\n",
            host.link_authority
        ));
    }

    let current = setup.sessions.first().map(|s| s.id.clone());
    let mut console = Console::new(host.client.clone(), current);
    let outcome = watch(&mut host, &mut events, &mut log, &mut console).await;
    say("shutting down: closing connections and saving state…\n");
    host.shutdown().await;
    say("stopped.\n");
    outcome
}

/// Prints activity and runs console lines until a stop signal or `/quit`; returns the exit code.
async fn watch(
    host: &mut Host,
    events: &mut Events,
    log: &mut Renderer,
    console: &mut Console,
) -> anyhow::Result<ExitCode> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let mut stdin = stdin_lines();
    let mut reading = true;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(ExitCode::SUCCESS),
            _ = term.recv() => return Ok(ExitCode::SUCCESS),
            _ = host.engine_stopped() => anyhow::bail!("the engine stopped unexpectedly (see the log above)"),
            line = stdin.recv(), if reading => match line {
                Some(line) => {
                    let reply = console.line(&line, log).await;
                    say(&reply.text);
                    if reply.quit {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                None => {
                    // No more input (`< /dev/null`, a closed pipe, CI): keep serving.
                    reading = false;
                    say("* stdin closed: the host console is off; the host keeps running (stop it with Ctrl-C)\n");
                }
            },
            ev = events.recv() => match ev {
                Some(ClientEvent::Event { mut frame, .. }) => {
                    if let Event::Snapshot(snapshot) = &mut frame.body {
                        // The host's row is marked `you`; the activity log speaks of nobody as "you".
                        snapshot.roster.iter_mut().for_each(|r| r.you = false);
                    }
                    say(&log.event(&frame));
                    say(&console.after_event(&frame).await);
                }
                Some(ClientEvent::Closed { reason }) => {
                    anyhow::bail!("the engine closed the host connection ({})", reason.unwrap_or_default())
                }
                Some(_) => {}
                None => anyhow::bail!("the host connection ended"),
            },
        }
    }
}

/// Writes to stdout, ignoring failures: a closed pipe (`serve | head`) must not stop the host
/// or interrupt its graceful shutdown.
pub fn say(text: &str) {
    if !text.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// A freshly minted link and how to use it, for the terminal (with the one-line install for
/// people who do not have roundtable yet).
pub fn invite_text(link: &str) -> String {
    invite_text_headed("share link (shown once — send it to the people you invite):", link)
}

/// [`invite_text`] under another first line.
fn invite_text_headed(heading: &str, link: &str) -> String {
    format!(
        "{heading}\n  {link}\n  \
         they run: roundtable connect '{link}' --name THEIR_NAME   (a window; or `join` in a terminal)\n  \
         {}\n",
        crate::app::install::install_hint()
    )
}

/// What [`setup_host`] found and did, for the banner (shared by `serve` and the host window).
pub struct Setup {
    pub workspaces: Vec<WorkspaceInfo>,
    pub sessions: Vec<SessionInfo>,
    pub demo_registered: Option<String>,
    pub minted: Option<Minted>,
}

/// Makes a fresh host usable ([`prepare_host`]) and lists its sessions.
pub async fn setup_host(
    host: &Host,
    data_dir: &std::path::Path,
    args: &ServeArgs,
    label: &str,
) -> anyhow::Result<Setup> {
    let prepared = prepare_host(host, data_dir, args, label).await?;
    let sessions = list_sessions(&host.client).await?;
    Ok(Setup {
        workspaces: prepared.workspaces,
        sessions,
        demo_registered: prepared.demo_registered,
        minted: prepared.minted,
    })
}

/// Makes a fresh host usable: a workspace, a session per workspace, an optional link; then
/// follows every session for the activity log.
async fn setup(host: &Host, data_dir: &std::path::Path, log: &mut Renderer, args: &ServeArgs) -> anyhow::Result<Setup> {
    let setup = setup_host(host, data_dir, args, "serve --mint").await?;
    // The host is always present in its sessions and receives their events without joining;
    // the renderer learns titles and who is in (restored participants included), for names.
    for s in &setup.sessions {
        let joined = patiently("following a session", || host_roster(&host.client, &s.id)).await?;
        log.joined(&joined.session, &joined.roster);
    }
    Ok(setup)
}

// Reads too are retried: the replies of the tick whose commit failed are all refused.
async fn list_sessions(client: &Client) -> anyhow::Result<Vec<SessionInfo>> {
    let list = || client.call::<ListSessionsResult>(Method::ListSessions(ListSessionsParams { workspace_id: None }));
    Ok(patiently("listing sessions", list).await?.sessions)
}

async fn list_workspaces(client: &Client) -> anyhow::Result<Vec<WorkspaceInfo>> {
    let list = || client.call::<ListWorkspacesResult>(Method::ListWorkspaces(Empty {}));
    Ok(patiently("listing workspaces", list).await?.workspaces)
}

/// What the host prints once it is ready: where it listens and how to reach it, the data
/// directory, the workspaces and their sessions, the link `--mint` asked for. `console` is the
/// headless host's arguments (it adds how to mint and the console's use); the host window passes
/// `None`.
pub fn banner(host: &Host, data_dir: &std::path::Path, setup: &Setup, console: Option<&ServeArgs>) -> String {
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(out, "roundtable host running ({})", if console.is_some() { "headless" } else { "window" });
    let listening = host.listening_text();
    match &host.fingerprint {
        Some(fp) => {
            let _ = writeln!(out, "  listening on {listening} — TLS, certificate sha256={fp}");
        }
        None => {
            let _ = writeln!(out, "  listening on {listening} — plain ws:// (--insecure, loopback only)");
        }
    }
    if let Some(name) = host.advertised_as() {
        let _ = writeln!(out, "  advertised on the LAN by mDNS as \"{name}\" (`roundtable join --nearby` lists it; --no-mdns turns it off)");
    }
    match host.relay_text() {
        Some(relay) => {
            let _ = writeln!(out, "  reachable from anywhere: {relay} (--relay off: direct addresses only)");
        }
        None if host.fingerprint.is_some() => {
            let _ = writeln!(out, "  relay off: remotes reach this host only at the addresses above");
        }
        None => {}
    }
    let _ = writeln!(out, "  data directory: {}", data_dir.display());
    if let Some(dir) = &setup.demo_registered {
        let _ = writeln!(
            out,
            "  no workspace was registered, so the current directory {dir} was registered as one (its agent: `--agent`, \
             demo by default).\n  Register others with: roundtable workspace add DIR"
        );
    }
    for w in &setup.workspaces {
        let sessions: Vec<String> = setup
            .sessions
            .iter()
            .filter(|s| s.workspace_id == w.id)
            .map(|s| format!("{} \"{}\"", s.id, s.title))
            .collect();
        let _ = writeln!(out, "  workspace {} \"{}\" ({} agent): {}", w.id, w.name, w.agent, sessions.join(", "));
    }
    if setup.workspaces.iter().any(|w| w.agent == crate::agent::demo::KIND) {
        let _ = writeln!(
            out,
            "  the demo agent echoes a prompt; \"/plan GOAL\" makes it propose a plan to vote on, \"/ask TOPIC\" ask a question"
        );
    }
    let Some(args) = console else {
        if let Some(text) = setup.minted.as_ref().and_then(Minted::invite_text) {
            out.push_str(&text);
        }
        return out;
    };
    match setup.minted.as_ref().and_then(Minted::invite_text) {
        Some(text) => out.push_str(&text),
        None if args.mint => {}
        None => {
            let workspace = setup.workspaces.first().map_or("ID".to_string(), |w| w.id.to_string());
            let _ = writeln!(
                out,
                "mint a share link with /mint on this console, or: roundtable share mint --workspace {workspace}   (or restart with --mint)"
            );
        }
    }
    if let Some(s) = setup.sessions.first() {
        let _ = writeln!(out, "host console: type a line to chat in {} \"{}\", or /help for commands", s.id, s.title);
    } else {
        let _ = writeln!(out, "host console: type /help for commands");
    }
    let _ = writeln!(out, "activity follows; stop with /quit or Ctrl-C");
    out
}
