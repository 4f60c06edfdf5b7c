//! `roundtable join LINK --name NAME`: the terminal client.
//!
//! Authenticates with the link's token, joins the first shared session (or `--session`), and
//! prints chat, streamed agent text, roster changes, turns, votes and lobby state. Each stdin line
//! is a message, except the commands listed in [`HELP`] (unknown `/words` such as the demo agent's
//! `/plan` are sent as messages; `//x` sends `/x`).
//!
//! Resilience: when the connection drops, the client reconnects on its own with exponential
//! backoff (capped at 5 s), authenticates with its resume token (so it keeps its participant id,
//! turn and ballots within the grace period), and rejoins every session with `since_seq` = the last
//! seq it saw. Session events are deduplicated by seq, so nothing is shown twice and nothing is
//! missed. Messages typed while disconnected are sent after reconnecting with the same
//! `client_msg_id`, which the host treats idempotently.
//!
//! The resume token is also kept in `DATA_DIR/resume/` (one file per host and link, mode 0600),
//! so a `join` restarted within the grace period — after Ctrl-C, a closed terminal or a crash —
//! is the same participant again instead of "Ann (2)". Ctrl-C and `/quit` leave cleanly: the
//! host is told (`leave_session`, then a close handshake), so nobody sees a ghost "reconnecting".
//!
//! `--json` prints every frame from the host (events and responses) as one JSON object per line
//! and accepts raw JSON requests on stdin (lines starting with `{`); human notes go to stderr.

use crate::app::nearby;
use crate::app::render::{closing_text, Renderer};
use crate::app::JoinArgs;
use crate::client_session::{Attempt, ClientSession, Closed, GiveUp, Identity, Reconnect, Then, TRANSIENT_PATIENCE};
use crate::ids::{SessionId, VoteId};
use crate::net::client::{Client, ClientError, ClientEvent, Events, Response, Route};
use crate::net::known_hosts::{KnownHosts, Pairing};
use crate::net::link::Link;
use crate::protocol::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;

/// `join --help`: the line commands, after the options.
pub const LINE_COMMANDS_HELP: &str = concat!(
    "Once joined, type lines: a plain line is a prompt to the agent; these are commands:\n",
    "  /chat TEXT (/c)    say something to the people in the session, never the agent\n",
    "  /quote N [M...]    put room chat lines N, M... (with who said them) in your next prompt\n",
    "  /approve           approve the plan waiting for a vote\n",
    "  /deny REASON       deny the plan, with a reason everyone sees\n",
    "  /answer A[|B...]   answer the agent's question(s), one answer per question\n",
    "  /cancel            cancel the running turn (turn holder or host)\n",
    "  /older  /who  /sessions  /switch ID  /leave  /help  /quit\n",
    "Any other /word (e.g. /plan) goes to the agent; //TEXT sends a line starting with /.\n",
    "Ctrl-C or /quit leaves cleanly; started again within 30 s you are the same participant."
);

/// Command help, printed by `/help`.
pub const HELP: &str = "\
commands:
  TEXT              send a message (it starts an agent turn if nobody holds the turn)
  /chat TEXT        say something to the people in the session, not the agent (also while
                    someone holds the turn; shown as \"(room N) Name: TEXT\"); /c for short
  /quote N [M...]   put room chat lines N, M… (with who said them) in your next message
  /model NAME       the agent's model in this session, for every turn from the next on (everyone
                    sees it; /model default goes back; /model alone shows the settings)
  /approve          approve the plan waiting for a vote
  /deny REASON      deny the plan, with a reason everyone sees
  /answer A[|B...]  answer the agent's question(s), one answer per question
  /cancel           cancel the running turn (turn holder or host)
  /older            show earlier messages of this session (a page at a time)
  /who              who is in this session
  /sessions         sessions shared with you
  /switch ID        join another session and make it current
  /leave            leave the current session
  /quit             leave and exit
  /help             this help
  //TEXT            send a message starting with / — how to reach an agent's own command,
                    e.g. //compact (only the host clears a session: room and agent memory)";

/// What `/clear` says in `join`: clearing is one thing (the room's history and the agent's
/// memory together), and only the host does it; an agent's own `/clear` is reached on purpose.
pub const CLEAR_IS_THE_HOSTS: &str =
    "! only the host can clear a session: that empties its history for everyone and starts \
the agent on a new conversation. To send /clear to the agent itself (it forgets, the room does not), type //clear";

/// A prompt with quoted room chat lines ahead of it, each naming its author.
pub fn quote_into(quoted: &[(String, String)], prompt: &str) -> String {
    if quoted.is_empty() {
        return prompt.to_string();
    }
    let mut text: String = quoted.iter().map(|(who, line)| format!("> {who} (room chat): {line}\n")).collect();
    text.push('\n');
    text.push_str(prompt);
    text
}

/// Runs `join` until `/quit`, end of input, or a final disconnect.
pub async fn join(args: JoinArgs, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    if args.lists_nearby_only() {
        return list_nearby(&args).await;
    }
    let link = Link::parse(&args.link()?)?;
    let out = Out { json: args.json };
    let name = args
        .name
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "guest".into());
    let resume = ResumeStore::new(&data_dir, &link);
    let mut joiner = Joiner {
        link,
        name,
        wanted: args.session.as_deref().map(SessionId::from),
        out,
        renderer: Renderer::new(!args.json),
        session: ClientSession::new(resume.load()),
        resume,
        reconnect: Reconnect::default(),
        current: None,
        unsent: Vec::new(),
        tag: format!("{:08x}", rand::random::<u32>()),
        sent: 0,
        quoted: Vec::new(),
        nearby: args.nearby.then(|| Duration::from_secs(args.nearby_seconds)),
        path: None,
    };
    // Ctrl-C is taken over before anything else happens (a signal stream registers at once; the
    // `ctrl_c()` future only when first polled), so an early Ctrl-C is a clean leave too.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))?;
    let mut stdin = crate::app::console::stdin_lines();
    // The first connection's failures are reported, not retried (the link is probably wrong) —
    // except a host that refuses for now (it cannot store, or asks to slow down): that is waited
    // out, saying so.
    let interrupted = || Ok(ExitCode::from(130));
    let (client, events) = loop {
        let connected = tokio::select! {
            connected = joiner.connect() => connected,
            _ = interrupt.recv() => return interrupted(),
        };
        let (e, attempt) = match connected {
            Ok(c) => break c,
            Err(Failure::Busy(e, wait)) => (e, Attempt::Busy(wait)),
            Err(Failure::Retry(e)) => (e, Attempt::Unreachable),
            Err(Failure::Final(e)) => return Err(connect_hint(e, &joiner.link)),
        };
        match joiner.reconnect.after(attempt, std::time::Instant::now()) {
            Ok(wait) => {
                joiner.out.note(&format!(
                    "* the host cannot take you right now ({e:#}); trying again in {:.1}s…",
                    wait.as_secs_f32()
                ));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = interrupt.recv() => return interrupted(),
                }
            }
            Err(_) => return Err(connect_hint(e, &joiner.link)),
        }
    };
    // Only a host that proved it holds the pinned certificate is remembered (a wrong link must
    // not become "presented before"); over iroh it proved the endpoint key instead.
    if joiner.path.is_none() {
        for note in remember_host(&data_dir, &joiner.link) {
            joiner.out.note(&note);
        }
    }
    joiner.run(client, events, &mut stdin, &mut interrupt).await
}

/// Records the link's fingerprint in `DATA_DIR/known_hosts.json` (shared with the remote
/// window). Returns notes for the person: a host that presented another certificate before, or a
/// known_hosts file that could not be read or written (never fatal: the link's fingerprint is
/// what is pinned).
pub fn remember_host(data_dir: &std::path::Path, link: &Link) -> Vec<String> {
    let Some(fp) = &link.fingerprint else { return Vec::new() };
    let mut known = match KnownHosts::load(data_dir) {
        Ok(k) => k,
        Err(e) => return vec![format!("warning: {e}")],
    };
    let mut notes = Vec::new();
    if let Pairing::Changed { previous } = known.pair(&link.authority(), fp) {
        notes.push(format!(
            "note: {} presented another certificate before (sha256={previous}); this link pins sha256={fp}",
            link.authority()
        ));
    }
    if let Err(e) = known.save() {
        notes.push(format!("warning: {e}"));
    }
    notes
}

/// The resume token of one host and link, kept in `DATA_DIR/resume/` between runs (shared by
/// `join` and the remote window).
pub struct ResumeStore {
    file: crate::app::paths::SecretFile,
}

impl ResumeStore {
    /// The store for `link` under `data_dir`.
    pub fn new(data_dir: &std::path::Path, link: &Link) -> Self {
        use sha2::Digest as _;
        let key = sha2::Sha256::digest(format!("{}/{}", link.authority(), link.token));
        let name: String = key.iter().take(12).map(|b| format!("{b:02x}")).collect();
        Self { file: crate::app::paths::SecretFile::new(data_dir.join("resume").join(name)) }
    }

    /// The token an earlier run kept, if any.
    pub fn load(&self) -> Option<String> {
        self.file.load()
    }

    /// Keeps `token` (mode 0600: it lets its holder be you). Failures only cost the resume.
    pub fn save(&self, token: &str) {
        self.file.save(token, "the resume token");
    }

    /// Drops the token (the host refused the link, or kicked or revoked us).
    pub fn forget(&self) {
        self.file.forget();
    }
}

/// A first connection that failed, with what to check.
fn connect_hint(e: anyhow::Error, link: &Link) -> anyhow::Error {
    let refused = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    }) || e.to_string().contains("Connection refused");
    if refused {
        anyhow::anyhow!(
            "nothing is listening at {}: is the host running (`roundtable host` or `roundtable serve`), and is this its address and port?",
            link.authority()
        )
    } else {
        e
    }
}

/// Where output goes: stdout for the user's content; notes to stdout (human) or stderr (json).
struct Out {
    json: bool,
}

impl Out {
    /// A frame as received (json mode only).
    fn raw(&self, raw: &str) {
        if self.json {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{raw}");
            let _ = o.flush();
        }
    }

    /// Rendered text (human mode only), printed as is.
    fn text(&self, text: &str) {
        if !self.json && !text.is_empty() {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(text.as_bytes());
            let _ = o.flush();
        }
    }

    /// A note for the person (status, errors).
    fn note(&self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{text}");
            let _ = o.flush();
        }
    }
}

/// Why connecting failed, and whether trying again can help.
enum Failure {
    Retry(anyhow::Error),
    /// The host refused for now (`storage_unavailable`, `rate_limited`): retry after the wait.
    Busy(anyhow::Error, Duration),
    Final(anyhow::Error),
}

/// Whether the loop goes on.
enum Flow {
    Continue,
    Quit,
}

struct Joiner {
    link: Link,
    name: String,
    wanted: Option<SessionId>,
    out: Out,
    renderer: Renderer,
    /// Followed sessions and their seqs, the resume token, admission: the protocol's client
    /// rules, shared with the window and the scenario runner.
    session: ClientSession,
    /// Where the resume token is kept between runs.
    resume: ResumeStore,
    reconnect: Reconnect,
    current: Option<SessionId>,
    /// Messages (`false`) and room chat (`true`) not confirmed because the connection dropped;
    /// resent after reconnecting.
    unsent: Vec<(bool, SendMessageParams)>,
    /// Random prefix of our client_msg_ids.
    tag: String,
    sent: u64,
    /// Room chat lines `/quote` put into the next prompt: (author, text).
    quoted: Vec<(String, String)>,
    /// `--nearby` with a link: how long to look on the LAN for the link's host when its address
    /// does not answer.
    nearby: Option<Duration>,
    /// The iroh path of the newest connection, when it went through iroh (relayed or direct),
    /// handed to the event loop, which says when it changes.
    path: Option<tokio::sync::watch::Receiver<crate::net::relay::PathKind>>,
}

/// The next change of an iroh connection's path; never, for a TCP connection.
async fn next_path(
    path: &mut Option<tokio::sync::watch::Receiver<crate::net::relay::PathKind>>,
) -> Option<crate::net::relay::PathKind> {
    let Some(rx) = path else { return std::future::pending().await };
    match rx.changed().await {
        Ok(()) => Some(rx.borrow_and_update().clone()),
        Err(_) => {
            *path = None;
            None
        }
    }
}

/// `join --nearby` without a link: lists the hosts advertised on the LAN. Exits 1 when none (and
/// for `connect` without a link, which did not connect).
async fn list_nearby(args: &JoinArgs) -> anyhow::Result<ExitCode> {
    let out = Out { json: args.json };
    if args.connect_without_link {
        out.note(
            "roundtable connect needs the share link the host sent you (its token is what lets you in): \
             roundtable connect LINK --name NAME. Without a window to paste it into, here are the hosts on the LAN.",
        );
    }
    out.note(&format!("looking for roundtable hosts on the LAN for {} s…", args.nearby_seconds));
    let hosts = nearby::browse(Duration::from_secs(args.nearby_seconds)).await?;
    if hosts.is_empty() {
        out.note(
            "no roundtable host found on the LAN. A host is advertised when it listens on the LAN \
             (`roundtable host --lan` or `serve --lan`, without --no-mdns); mDNS uses UDP port 5353 and \
             does not cross routers.",
        );
        return Ok(ExitCode::FAILURE);
    }
    for host in &hosts {
        if args.json {
            let line = serde_json::json!({
                "name": host.name,
                "instance": host.instance,
                "version": host.version,
                "addresses": host.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "fingerprint_prefix": host.fingerprint_prefix,
            });
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        } else {
            out.note(&format!("  {}", nearby::line(host)));
        }
    }
    out.note(&format!(
        "found {} host{}. To join, ask its host for a link (`roundtable share mint`, or Invite people in the host's \
         window): the link's token is what lets you in, and its certificate fingerprint proves the host. \
         Then: roundtable {} LINK --name NAME",
        hosts.len(),
        if hosts.len() == 1 { "" } else { "s" },
        if args.connect_without_link { "connect" } else { "join" }
    ));
    Ok(if args.connect_without_link { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

impl Joiner {
    async fn run(
        mut self,
        mut client: Client,
        mut events: Events,
        stdin: &mut mpsc::UnboundedReceiver<String>,
        interrupt: &mut tokio::signal::unix::Signal,
    ) -> anyhow::Result<ExitCode> {
        let mut path = self.path.take();
        loop {
            tokio::select! {
                // Ctrl-C first: a busy event stream must not keep it waiting.
                biased;
                _ = interrupt.recv() => {
                    self.out.note("* leaving…");
                    self.quit(&client, &mut events).await;
                    return Ok(ExitCode::SUCCESS);
                }
                line = stdin.recv() => {
                    let flow = match line {
                        Some(line) => self.on_line(&client, &line).await,
                        None => Flow::Quit,
                    };
                    if let Flow::Quit = flow {
                        self.quit(&client, &mut events).await;
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                Some(now) = next_path(&mut path) => {
                    self.out.note(&format!("* the connection to the host is now {now}"));
                }
                ev = events.recv() => match ev {
                    Some(ClientEvent::Event { frame, raw }) => match self.on_event(&frame, &raw) {
                        Then::Nothing => {}
                        Then::Join(joins) => {
                            for params in joins {
                                self.join_session(&client, params).await;
                            }
                        }
                        Then::Enter => self.enter(&client).await,
                        Then::Refused => {
                            client.close();
                            return Ok(ExitCode::FAILURE);
                        }
                    },
                    Some(ClientEvent::Answered { id, ok }) => self.session.answered(&id, ok),
                    Some(ClientEvent::Response { raw }) => self.on_unsolicited(&raw),
                    Some(ClientEvent::Other { raw }) => self.out.raw(&raw),
                    closed @ (Some(ClientEvent::Closed { .. }) | None) => {
                        let close_frame_reason = match closed {
                            Some(ClientEvent::Closed { reason }) => reason,
                            _ => None,
                        };
                        if let Closed::Final(r) = self.session.closed(close_frame_reason) {
                            self.resume.forget();
                            self.out.note(&format!("disconnected: {}", closing_text(&r)));
                            return Ok(ExitCode::FAILURE);
                        }
                        match self.reconnect(stdin).await? {
                            Some((c, e)) => {
                                client = c;
                                events = e;
                                path = self.path.take();
                            }
                            None => return Ok(ExitCode::SUCCESS),
                        }
                    }
                },
            }
        }
    }

    /// `--nearby` with a link whose address did not answer: looks on the LAN for a host
    /// advertising the link's fingerprint prefix and tries its addresses with the link's token and
    /// pinned fingerprint (so a different host is refused by TLS as ever). The first that answers
    /// becomes the link's address for this run's reconnects.
    async fn connect_nearby(&mut self) -> Option<(Client, Events)> {
        let window = self.nearby?;
        self.link.fingerprint.as_ref()?;
        self.out.note(&format!("* {} does not answer; looking for the host on the LAN…", self.link.authority()));
        let hosts = match nearby::browse(window).await {
            Ok(hosts) => hosts,
            Err(e) => {
                self.out.note(&format!("* {e}"));
                return None;
            }
        };
        let Some((link, client, events)) = nearby::connect_fallback(&self.link, &hosts, &[]).await else {
            self.out.note("* no nearby host with the link's certificate answered");
            return None;
        };
        self.out.note(&format!(
            "* found the host on the LAN at {} (mDNS; same certificate as the link pins)",
            link.authority()
        ));
        self.link = link;
        Some((client, events))
    }

    /// Connects, authenticates (resuming when we have a resume token) and enters the sessions.
    async fn connect(&mut self) -> Result<(Client, Events), Failure> {
        let classify = |e: ClientError| match e {
            ClientError::FingerprintMismatch { .. } | ClientError::TlsSetup(_) => Failure::Final(e.into()),
            e => Failure::Retry(e.into()),
        };
        let (client, events, via) = match Client::connect_via(&self.link).await {
            Ok(connected) => connected,
            Err(e @ ClientError::Connect { .. }) => match self.connect_nearby().await {
                Some((client, events)) => (client, events, Route::Address(self.link.authority())),
                None => return Err(classify(e)),
            },
            Err(e) => return Err(classify(e)),
        };
        let auth = match self.authenticate(&client).await {
            Ok(a) => a,
            Err(e) if e.is_transient_refusal() => {
                let wait = e.retry_after();
                client.close();
                return Err(Failure::Busy(e.into(), wait));
            }
            Err(e @ ClientError::Protocol(_)) => {
                self.resume.forget();
                self.session.forget_resume();
                return Err(Failure::Final(anyhow::anyhow!("the host refused the link: {e}")));
            }
            Err(e) => return Err(Failure::Retry(e.into())),
        };
        let identity = self.session.authenticated(&auth);
        self.reconnect.connected();
        self.path = match &via {
            Route::Iroh(path) => {
                // What it is now is said below; the event loop says what it becomes.
                let mut path = path.clone();
                path.borrow_and_update();
                Some(path)
            }
            Route::Address(_) => None,
        };
        self.resume.save(&auth.resume_token);
        self.renderer.me = Some(auth.participant_id.clone());
        if let Identity::Resumed = identity {
            self.out.note(&format!("* reconnected as {} (via {via})", auth.display_name));
        } else if let Identity::Replaced = identity {
            self.out.note(&format!(
                "* reconnected, but you were away too long: you are back as a new participant, {} ({})",
                auth.display_name, auth.participant_id
            ));
        } else {
            // A first connection (perhaps resuming the participant an earlier run left).
            let again = if identity == Identity::Restored { ", the same participant as before" } else { "" };
            self.out.note(&format!(
                "connected to {via} as {} ({}, {}){again}. Type /help for commands.",
                auth.display_name,
                auth.participant_id,
                auth.role.as_str()
            ));
        }
        match auth.admission {
            Admission::Admitted => self.enter(&client).await,
            Admission::Pending => self.out.note("* waiting in the lobby until the host lets you in…"),
            Admission::Refused => return Err(Failure::Final(anyhow::anyhow!("the host refused to let you in"))),
        }
        Ok((client, events))
    }

    async fn authenticate(&mut self, client: &Client) -> Result<AuthenticateResult, ClientError> {
        let params = self.session.authenticate(&self.link.token, &self.name);
        let value = self.request(client, Method::Authenticate(params)).await?;
        serde_json::from_value(value)
            .map_err(|e| ClientError::BadResult { method: "authenticate", detail: e.to_string() })
    }

    /// Sends a request, printing the raw response in json mode.
    async fn request(&self, client: &Client, method: Method) -> Result<serde_json::Value, ClientError> {
        let Response { outcome, raw, .. } = client.request_full(method).await?;
        self.out.raw(&raw);
        outcome.map_err(ClientError::Protocol)
    }

    /// After admission: join the chosen session (first time) or rejoin every session from its
    /// last seq (after a reconnect), then resend unconfirmed messages.
    async fn enter(&mut self, client: &Client) {
        let rejoins = self.session.rejoins();
        if rejoins.is_empty() {
            let Some(list) = self.list_sessions(client, false).await else { return };
            let pick = match &self.wanted {
                Some(w) => list.iter().find(|s| &s.id == w).map(|s| s.id.clone()),
                None => list.first().map(|s| s.id.clone()),
            };
            match pick {
                Some(id) => self.join_session(client, JoinSessionParams { session_id: id, since_seq: None }).await,
                None if self.wanted.is_some() => self.out.note(&format!(
                    "! no session {} is shared with you; type /sessions",
                    self.wanted.as_ref().unwrap()
                )),
                None => self.out.note("* no session is shared with you yet; type /sessions to look again"),
            }
        } else {
            for params in rejoins {
                self.join_session(client, params).await;
            }
        }
        for (room, msg) in std::mem::take(&mut self.unsent) {
            self.send_message(client, room, msg).await;
        }
    }

    async fn join_session(&mut self, client: &Client, params: JoinSessionParams) {
        let session = &params.session_id.clone();
        let first = !self.session.follows(session);
        // A host that cannot store right now refuses joins (a replay could show unstored events):
        // wait it out, saying so once, instead of missing the session.
        let started = std::time::Instant::now();
        let mut told = false;
        let response = loop {
            let state = &mut self.session;
            let join = Method::JoinSession(params.clone());
            let response = client.request_full_with(join, |id| state.join_sent(&params, id.clone())).await;
            let refused = match &response {
                Ok(r) => r.outcome.as_ref().err().map(|e| ClientError::Protocol(e.clone())),
                Err(_) => None,
            };
            match refused {
                Some(e) if e.is_transient_refusal() && started.elapsed() < TRANSIENT_PATIENCE => {
                    if !told {
                        self.out
                            .note(&format!("* cannot join {session} right now ({}); trying again…", error_text(&e)));
                        told = true;
                    }
                    // Ctrl-C ends the wait; the main loop, which hears it too, then leaves.
                    tokio::select! {
                        _ = tokio::time::sleep(e.retry_after()) => {}
                        _ = tokio::signal::ctrl_c() => break response,
                    }
                }
                _ => break response,
            }
        };
        if let Ok(r) = &response {
            self.out.raw(&r.raw);
        }
        match response.and_then(|r| r.outcome.map_err(ClientError::Protocol)) {
            Ok(value) => {
                let Ok(result) = serde_json::from_value::<JoinSessionResult>(value) else {
                    return self.out.note("! unexpected join_session result");
                };
                self.session.joined(&result);
                if self.current.is_none() {
                    self.current = Some(session.clone());
                }
                self.renderer.prefix_sessions = self.session.followed().count() > 1;
                let text = self.renderer.joined(&result.session, &result.roster);
                // A snapshot follows and prints the session itself; otherwise show it on first join.
                if first && result.catch_up != CatchUp::Snapshot {
                    self.out.text(&text);
                }
            }
            Err(ClientError::Protocol(e)) => self.out.note(&format!("! cannot join {session}: {}", e.message)),
            Err(e) => tracing::debug!("join_session {session}: {e}"),
        }
    }

    async fn list_sessions(&self, client: &Client, print: bool) -> Option<Vec<SessionInfo>> {
        let params = ListSessionsParams { workspace_id: None };
        match self.request(client, Method::ListSessions(params)).await {
            Ok(v) => {
                let list: Vec<SessionInfo> = serde_json::from_value::<ListSessionsResult>(v).ok()?.sessions;
                if print {
                    if list.is_empty() {
                        self.out.note("* no sessions are shared with you");
                    }
                    for s in &list {
                        let marker = if self.current.as_ref() == Some(&s.id) { " (current)" } else { "" };
                        self.out.note(&format!(
                            "  {} \"{}\" — {}, {} present{marker}",
                            s.id,
                            s.title,
                            s.status.as_str(),
                            s.participant_count
                        ));
                    }
                }
                Some(list)
            }
            Err(e) => {
                self.out.note(&format!("! cannot list sessions: {e}"));
                None
            }
        }
    }

    /// Shows an event if it is new and in order ([`ClientSession::event`]); says what must follow.
    fn on_event(&mut self, frame: &EventFrame, raw: &str) -> Then {
        // `--json` prints every frame as received, replays and repeats included (documented:
        // scripts deduplicate by seq); the human view below shows each event once.
        self.out.raw(raw);
        let handled = self.session.event(frame);
        if handled.show {
            let text = self.renderer.event(frame);
            self.out.text(&text);
        }
        handled.then
    }

    /// A response to a raw JSON request from stdin.
    fn on_unsolicited(&self, raw: &str) {
        if self.out.json {
            return self.out.raw(raw);
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) {
            if let Some(msg) = v.pointer("/error/message").and_then(|m| m.as_str()) {
                self.out.note(&format!("! {msg}"));
            }
        }
    }

    async fn on_line(&mut self, client: &Client, line: &str) -> Flow {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Flow::Continue;
        }
        if line.trim_start().starts_with('{') && self.out.json {
            if let Err(e) = client.send_raw(line.trim().to_string()) {
                self.out.note(&format!("! not sent: {e}"));
            }
            return Flow::Continue;
        }
        let (word, rest) = match line.strip_prefix('/') {
            Some(cmd) if !cmd.starts_with('/') => {
                let (w, r) = cmd.split_once(' ').unwrap_or((cmd, ""));
                (Some(w), r.trim())
            }
            _ => (None, ""),
        };
        match word {
            Some("quit" | "exit") => return Flow::Quit,
            Some("help" | "?") => self.out.note(HELP),
            Some("who") => match &self.current {
                Some(s) => {
                    let who = self.renderer.who(s);
                    self.out.note(who.trim_end());
                }
                None => self.out.note("* you are not in a session"),
            },
            Some("sessions") => {
                self.list_sessions(client, true).await;
            }
            _ if !self.session.admitted() => {
                self.out.note("! you are waiting in the lobby; the host has not let you in yet")
            }
            Some("older") => self.older(client).await,
            _ if !self.session.admitted() => {
                self.out.note("! you are waiting in the lobby; the host has not let you in yet")
            }
            Some("approve") => self.vote_plan(client, true, None).await,
            Some("deny") => {
                let reason = (!rest.is_empty()).then(|| rest.to_string());
                self.vote_plan(client, false, reason).await;
            }
            Some("answer") => self.answer(client, rest).await,
            Some("clear") => self.out.note(CLEAR_IS_THE_HOSTS),
            Some("model") => {
                let Some(session) = self.current_or_note() else { return Flow::Continue };
                if rest.is_empty() {
                    let settings =
                        self.renderer.session(&session).map(|v| v.agent_settings.clone()).unwrap_or_default();
                    let now = crate::app::render::agent_settings_text(&settings);
                    self.out.note(&format!("* the agent in {session} uses {now}; /model NAME to choose a model"));
                } else {
                    let model = if rest == "default" { String::new() } else { rest.to_string() };
                    let params =
                        SetAgentSettingsParams { session_id: session, model: Some(model), permission_mode: None };
                    if let Err(e) = self.request(client, Method::SetAgentSettings(params)).await {
                        self.out.note(&format!("! {}", error_text(&e)));
                    }
                }
            }
            Some("cancel") => {
                if let Some(session) = self.current_or_note() {
                    if let Err(e) = self.request(client, Method::CancelTurn(SessionRef { session_id: session })).await {
                        self.out.note(&format!("! {}", error_text(&e)));
                    }
                }
            }
            Some("switch") => {
                if rest.is_empty() {
                    self.out.note("usage: /switch SESSION_ID (see /sessions)");
                } else {
                    let id = SessionId::from(rest);
                    if !self.session.follows(&id) {
                        self.join_session(client, JoinSessionParams { session_id: id.clone(), since_seq: None }).await;
                    }
                    if self.session.follows(&id) {
                        self.out.note(&format!("* now in {id}"));
                        self.current = Some(id);
                    }
                }
            }
            Some("leave") => {
                if let Some(session) = self.current_or_note() {
                    let r =
                        self.request(client, Method::LeaveSession(SessionRef { session_id: session.clone() })).await;
                    match r {
                        Ok(_) => {
                            self.session.left(&session);
                            self.renderer.forget(&session);
                            self.current = self.session.followed().next().cloned();
                            self.renderer.prefix_sessions = self.session.followed().count() > 1;
                            match &self.current {
                                Some(c) => self.out.note(&format!("* left {session}; now in {c}")),
                                None => self.out.note(&format!("* left {session}; /sessions to join another")),
                            }
                        }
                        Err(e) => self.out.note(&format!("! {}", error_text(&e))),
                    }
                }
            }
            Some("quote") => {
                let Some(session) = self.current_or_note() else { return Flow::Continue };
                let lines = self.renderer.session(&session).map(|v| v.room_lines.clone()).unwrap_or_default();
                let picked: Option<Vec<(String, String)>> = rest
                    .split_whitespace()
                    .map(|n| n.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|i| lines.get(i).cloned()))
                    .collect();
                match picked {
                    Some(picked) if !picked.is_empty() => {
                        let who: Vec<&str> = picked.iter().map(|(a, _)| a.as_str()).collect();
                        self.out.note(&format!("* your next message quotes {}", who.join(", ")));
                        self.quoted.extend(picked);
                    }
                    _ => self.out.note("usage: /quote N [M…] — the numbers of room chat lines, as in \"(room N)\""),
                }
            }
            Some("chat" | "c") if rest.is_empty() => {
                self.out.note("usage: /chat TEXT (to the people here, not the agent)")
            }
            Some("chat" | "c") => {
                // Room chat: to the people in the session, never to the agent; fine mid-turn.
                let Some(session) = self.current_or_note() else { return Flow::Continue };
                self.send_new(client, true, session, rest.to_string()).await;
            }
            _ => {
                // A message (including `/plan ...` and other words the agent understands).
                let text = line.strip_prefix('/').filter(|t| t.starts_with('/')).unwrap_or(line);
                let Some(session) = self.current_or_note() else { return Flow::Continue };
                // Quoted room chat goes first, saying who said what: the agent sees only what
                // the prompt's author chose to show it.
                let text = quote_into(&std::mem::take(&mut self.quoted), text);
                self.send_new(client, false, session, text).await;
            }
        }
        Flow::Continue
    }

    /// `/older`: the page of messages before the oldest one shown.
    async fn older(&mut self, client: &Client) {
        let Some(session) = self.current_or_note() else { return };
        let Some(before) = self.renderer.older_from(&session) else {
            self.out.note("* this is the start of the session: there are no earlier messages");
            return;
        };
        let params = FetchHistoryParams { session_id: session.clone(), before_seq: Some(before), limit: None };
        match self.request(client, Method::FetchHistory(params)).await {
            Ok(v) => match serde_json::from_value::<FetchHistoryResult>(v) {
                Ok(page) => {
                    let text = self.renderer.older_page(&session, &page);
                    self.out.text(&format!("{text}\n"));
                }
                Err(e) => self.out.note(&format!("! unexpected history page from the host: {e}")),
            },
            Err(e) => self.out.note(&format!("! {}", error_text(&e))),
        }
    }

    fn current_or_note(&self) -> Option<SessionId> {
        if self.current.is_none() {
            self.out.note("! you are not in a session; /sessions lists them, /switch ID joins one");
        }
        self.current.clone()
    }

    /// Sends a new prompt, or room chat (`room`), with the next `client_msg_id`.
    async fn send_new(&mut self, client: &Client, room: bool, session_id: SessionId, text: String) {
        self.sent += 1;
        let msg = SendMessageParams { session_id, text, client_msg_id: format!("{}-{}", self.tag, self.sent) };
        self.send_message(client, room, msg).await;
    }

    /// Sends a prompt, or room chat (`room`); kept for a resend when the connection is down.
    async fn send_message(&mut self, client: &Client, room: bool, msg: SendMessageParams) {
        let method = if room { Method::SendChat(msg.clone()) } else { Method::SendMessage(msg.clone()) };
        match self.request(client, method).await {
            Ok(_) => {}
            Err(ClientError::Protocol(e)) if e.code == ErrorCode::TurnLocked => {
                self.out.note(&self.renderer.turn_locked_text(&msg.session_id))
            }
            Err(ClientError::Protocol(e)) => self.out.note(&format!("! {}", e.message)),
            Err(_) => {
                self.out.note("* not delivered yet; it will be sent when the connection is back");
                self.unsent.push((room, msg));
            }
        }
    }

    /// The newest open vote of the current session whose subject matches `plan` / question.
    fn open_vote(&self, plan: bool) -> Option<VoteId> {
        let session = self.current.as_ref()?;
        let view = self.renderer.session(session)?;
        view.votes
            .values()
            .rev()
            .find(|v| {
                matches!(v.subject, VoteSubject::Plan { .. }) == plan && !matches!(v.subject, VoteSubject::Tool { .. })
            })
            .map(|v| v.vote_id.clone())
    }

    async fn vote_plan(&mut self, client: &Client, approve: bool, reason: Option<String>) {
        let Some(vote_id) = self.open_vote(true) else {
            return self.out.note("! no plan is waiting for a vote in this session");
        };
        if let Err(e) =
            self.request(client, Method::VotePlan(VotePlanParams { vote_id, approve, reason, always: false })).await
        {
            self.out.note(&format!("! {}", error_text(&e)));
        }
    }

    async fn answer(&mut self, client: &Client, rest: &str) {
        if rest.is_empty() {
            return self.out.note("usage: /answer ANSWER (several questions: /answer A|B)");
        }
        let Some(vote_id) = self.open_vote(false) else {
            return self.out.note("! no question is waiting for an answer in this session");
        };
        let answers = rest.split('|').map(|a| a.trim().to_string()).collect();
        let params = AnswerQuestionParams { vote_id, answers };
        if let Err(e) = self.request(client, Method::AnswerQuestion(params)).await {
            self.out.note(&format!("! {}", error_text(&e)));
        }
    }

    /// Leaves every session and closes the connection cleanly.
    async fn quit(&mut self, client: &Client, events: &mut Events) {
        let sessions: Vec<SessionId> = self.session.followed().cloned().collect();
        for session in sessions {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                client.request(Method::LeaveSession(SessionRef { session_id: session })),
            )
            .await;
        }
        client.close();
        // Wait (briefly) for the close handshake so the host sees a clean goodbye.
        let closed = async {
            while let Some(ev) = events.recv().await {
                if matches!(ev, ClientEvent::Closed { .. }) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
    }

    /// Reconnects with backoff ([`Reconnect`]). `Ok(None)`: the user quit meanwhile.
    async fn reconnect(
        &mut self,
        stdin: &mut mpsc::UnboundedReceiver<String>,
    ) -> anyhow::Result<Option<(Client, Events)>> {
        let mut attempt = Attempt::Dropped;
        let mut typed: Vec<String> = Vec::new();
        loop {
            let delay = match self.reconnect.after(attempt, std::time::Instant::now()) {
                Ok(delay) => delay,
                Err(GiveUp::NeverConnected | GiveUp::OutOfPatience) => {
                    anyhow::bail!("the host kept refusing for {} minutes; giving up", TRANSIENT_PATIENCE.as_secs() / 60)
                }
            };
            self.out.note(&format!("* connection lost; reconnecting in {:.1}s…", delay.as_secs_f32()));
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = tokio::signal::ctrl_c() => return Ok(None),
                    line = stdin.recv() => match line {
                        None => return Ok(None),
                        Some(l) if matches!(l.trim(), "/quit" | "/exit") => return Ok(None),
                        Some(l) => typed.push(l),
                    },
                }
            }
            match self.connect().await {
                Ok((client, events)) => {
                    for line in typed {
                        self.on_line(&client, &line).await;
                    }
                    return Ok(Some((client, events)));
                }
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(e)) => {
                    tracing::debug!("reconnect failed: {e:#}");
                    attempt = Attempt::Unreachable;
                }
                Err(Failure::Busy(e, wait)) => {
                    self.out.note(&format!("* the host cannot take you right now ({e:#})"));
                    attempt = Attempt::Busy(wait);
                }
            }
        }
    }
}

fn error_text(e: &ClientError) -> String {
    match e {
        ClientError::Protocol(p) => p.message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn quoted_room_chat_goes_ahead_of_the_prompt_naming_who_said_it() {
        assert_eq!(quote_into(&[], "fix it"), "fix it");
        let quoted = [("Bob".to_string(), "don't touch the migrations".to_string())];
        assert_eq!(quote_into(&quoted, "fix it"), "> Bob (room chat): don't touch the migrations\n\nfix it");
    }

    use super::*;

    fn joiner() -> Joiner {
        Joiner {
            link: Link::parse("roundtable://127.0.0.1:7447/tok#insecure").expect("a link"),
            name: "Ann".into(),
            wanted: None,
            out: Out { json: true },
            renderer: Renderer::new(false),
            session: ClientSession::new(None),
            resume: ResumeStore {
                file: crate::app::paths::SecretFile::new(
                    std::env::temp_dir().join("roundtable-unit-test-resume-unused"),
                ),
            },
            reconnect: Reconnect::default(),
            current: None,
            unsent: Vec::new(),
            tag: "t".into(),
            sent: 0,
            quoted: Vec::new(),
            nearby: None,
            path: None,
        }
    }

    fn message(seq: u64) -> (EventFrame, String) {
        let raw = format!(
            r#"{{"event":"message","session_id":"s1","seq":{seq},"payload":{{"message_id":"m{seq}","author_id":"p2","author_name":"Bob","text":"hi {seq}"}}}}"#
        );
        (serde_json::from_str(&raw).expect("an event frame"), raw)
    }

    #[test]
    fn a_seq_gap_makes_join_rejoin_from_the_last_seq_it_has() {
        let mut j = joiner();
        let s1 = SessionId::from("s1");
        j.session.join_sent(&JoinSessionParams { session_id: s1.clone(), since_seq: None }, 1.into());
        j.session.answered(&1.into(), true);
        let (f, raw) = message(1);
        assert_eq!(j.on_event(&f, &raw), Then::Nothing);
        let (f, raw) = message(2);
        assert_eq!(j.on_event(&f, &raw), Then::Nothing);
        let (f, raw) = message(5);
        let rejoin = JoinSessionParams { session_id: s1.clone(), since_seq: Some(2) };
        assert_eq!(j.on_event(&f, &raw), Then::Join(vec![rejoin]), "3 and 4 are missing: the replay brings 3, 4, 5");
        let (f, raw) = message(2);
        assert_eq!(j.on_event(&f, &raw), Then::Nothing, "a duplicate is dropped");
    }
}
