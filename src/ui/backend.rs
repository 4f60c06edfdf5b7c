//! The window's network side: a tokio task that owns a protocol [`Client`] and connects the UI
//! thread to the host through two channels.
//!
//! - UI → backend: [`Action`]s on an unbounded tokio channel (sending never blocks the UI).
//! - backend → UI: [`Update`]s on a std channel the UI drains each frame; every update also
//!   wakes the UI (`request_repaint`) through a [`Waker`].
//!
//! [`run_host`] drives the host's own in-process connection (host-only methods allowed).
//! [`run_remote`] drives a remote's network connection: it authenticates with the link's token,
//! waits in the lobby when asked to, and — like `roundtable join` — reconnects with backoff when
//! the connection drops, resumes with its resume token, rejoins its sessions with `since_seq`, and
//! resends messages whose answer was lost (same `client_msg_id`, so the host treats them
//! idempotently). Each request runs on its own task so a slow answer never holds up the others.
//! [`run_start`] serves a remote window opened without a link: it browses the LAN (mDNS, on a
//! thread of its own) for the start screen's nearby list until Connect, then runs the remote
//! connection with the pasted link, falling back to a nearby host advertising the link's
//! certificate when the link's own addresses do not answer (as `join --nearby LINK` does).

use super::model::{Action, ConnectionState, NearbyChange, NearbyHost, Update};
use crate::app::nearby;
use crate::client_session::{Attempt, ClientSession, Closed, GiveUp, Identity, Reconnect, Then};
use crate::ids::{ParticipantId, SessionId, WorkspaceId};
use crate::net::client::{Client, ClientError, ClientEvent, Events, Route};
use crate::net::discovery::Browser;
use crate::net::link::Link;
use crate::protocol::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often session and share lists are refreshed (status and counts of sessions the window
/// does not follow, share usage).
pub const REFRESH_PERIOD: Duration = Duration::from_secs(5);

/// How many audit rows the audit view loads.
pub const AUDIT_ROWS: u32 = 500;

/// Wakes the UI thread after an update (normally `egui::Context::request_repaint`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The sending half of the UI's update channel, with its waker.
#[derive(Clone)]
pub struct Outbox {
    tx: std::sync::mpsc::Sender<Update>,
    wake: Waker,
}

impl Outbox {
    /// An outbox over `tx` that calls `wake` after each update.
    pub fn new(tx: std::sync::mpsc::Sender<Update>, wake: Waker) -> Self {
        Self { tx, wake }
    }

    /// Sends an update and wakes the UI. A closed window is ignored.
    pub fn send(&self, update: Update) {
        let _ = self.tx.send(update);
        (self.wake)();
    }

    fn failed(&self, method: &str, error: &ClientError) {
        self.send(Update::Failed { method: method.to_string(), code: error.code(), message: error_message(error) });
    }

    /// A result the window could not read (the host answered something unexpected).
    fn unreadable(&self, method: &str) {
        self.send(Update::Failed {
            method: method.to_string(),
            code: None,
            message: "the host's answer could not be read".into(),
        });
    }

    /// A message from the composer was accepted, or kept for a resend.
    fn sent(&self, method: &Method) {
        if let Method::SendMessage(p) | Method::SendChat(p) = method {
            self.send(Update::Sent { client_msg_id: p.client_msg_id.clone() });
        }
    }
}

/// What went wrong, for people, when it was not the host's answer (the window words the host's
/// error codes itself): never a method name.
fn error_message(error: &ClientError) -> String {
    match error {
        ClientError::Protocol(p) => p.message.clone(),
        ClientError::Timeout { .. } => "the host did not answer in time".into(),
        ClientError::BadResult { .. } => "the host's answer could not be read".into(),
        ClientError::Closed(_) => "the connection to the host is closed".into(),
        other => other.to_string(),
    }
}

/// Drives the host's own connection until the UI drops its action sender or the engine closes
/// the connection.
pub async fn run_host(client: Client, events: Events, actions: mpsc::UnboundedReceiver<Action>, out: Outbox) {
    run_host_every(client, events, actions, out, REFRESH_PERIOD).await
}

/// [`run_host`], refreshing the lists every `refresh` (tests make it short).
pub async fn run_host_every(
    client: Client,
    mut events: Events,
    mut actions: mpsc::UnboundedReceiver<Action>,
    out: Outbox,
    refresh: Duration,
) {
    let worker = Worker {
        client: client.clone(),
        out: out.clone(),
        unsent: None,
        state: Arc::default(),
        listed: Arc::default(),
    };
    out.send(Update::Identity { me: ParticipantId::host(), name: "Host".into(), role: Role::Host });
    out.send(Update::Connection(ConnectionState::Connected));
    // People already waiting when the window opens (the `lobby` event announces only changes;
    // live events take precedence).
    worker.load_lobby().await;
    worker.refresh(true).await;
    worker.refresh_shares().await;
    worker.call(Method::GetSettings(Empty {})).await;
    let mut refresh = tokio::time::interval(refresh);
    refresh.tick().await;
    loop {
        tokio::select! {
            action = actions.recv() => match action {
                Some(action) => worker.spawn(action),
                None => return,
            },
            ev = events.recv() => match ev {
                Some(ClientEvent::Event { frame, .. }) => {
                    worker.forward(*frame);
                }
                Some(ClientEvent::Answered { id, ok }) => worker.answered(&id, ok),
                Some(ClientEvent::Closed { reason }) => {
                    let why = reason.unwrap_or_else(|| "the engine stopped".into());
                    out.send(Update::Connection(ConnectionState::Closed(format!("host connection closed: {why}"))));
                    return;
                }
                None => {
                    let why = "the engine stopped";
                    out.send(Update::Connection(ConnectionState::Closed(format!("host connection closed: {why}"))));
                    return;
                }
                Some(_) => {}
            },
            _ = refresh.tick() => {
                let w = worker.clone();
                tokio::spawn(async move {
                    w.refresh(true).await;
                    w.refresh_shares().await;
                });
            }
        }
    }
}

/// Shared by the host and remote loops: runs actions as protocol requests.
#[derive(Clone)]
struct Worker {
    client: Client,
    out: Outbox,
    /// Remote only: messages whose answer was lost with the connection (resent after reconnect).
    unsent: Option<Arc<Mutex<Vec<Method>>>>,
    /// Followed sessions and their seqs, resume token, admission: the protocol's client rules,
    /// shared with `roundtable join` and the scenario runner. Every event passes through it.
    state: Arc<Mutex<ClientSession>>,
    /// The lists last sent to the UI, by kind: a refresh that finds nothing new sends nothing,
    /// so an idle window is not woken to redraw every [`REFRESH_PERIOD`].
    listed: Arc<Mutex<BTreeMap<&'static str, Update>>>,
}

impl Worker {
    /// Sends a refreshed list unless it is what the UI already has.
    fn send_list(&self, kind: &'static str, update: Update) {
        let mut listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        if listed.get(kind) != Some(&update) {
            listed.insert(kind, update.clone());
            drop(listed);
            self.out.send(update);
        }
    }

    fn spawn(&self, action: Action) {
        let w = self.clone();
        tokio::spawn(async move { w.run(action).await });
    }

    async fn run(&self, action: Action) {
        match action {
            Action::Call(method) => self.call(method).await,
            Action::Join(session_id) => self.join(JoinSessionParams { session_id, since_seq: None }).await,
            Action::RefreshSessions => {
                self.refresh(false).await;
            }
            Action::RefreshShares => self.refresh_shares().await,
            Action::LoadAudit => self.load_audit().await,
            Action::LoadWorkspaceAgents => {
                self.refresh(false).await;
            }
            // Only the start screen connects, before there is a connection.
            Action::Connect { .. } => {}
        }
    }

    /// The people waiting in the lobby (`list_lobby`, host only).
    async fn load_lobby(&self) {
        match self.client.call::<ListLobbyResult>(Method::ListLobby(Empty {})).await {
            Ok(r) => self.out.send(Update::LobbySeed(r.waiting)),
            Err(e) => self.out.failed("list_lobby", &e),
        }
    }

    /// The newest rows of the audit log (`fetch_audit`, host only).
    async fn load_audit(&self) {
        let params = FetchAuditParams { limit: Some(AUDIT_ROWS) };
        match self.client.call::<FetchAuditResult>(Method::FetchAudit(params)).await {
            Ok(r) => self.out.send(Update::Audit(r.entries)),
            Err(e) => self.out.failed("fetch_audit", &e),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClientSession> {
        lock_state(&self.state)
    }

    /// Forwards an event to the UI if it is new and in order ([`ClientSession::event`]), and
    /// sends the rejoins it calls for. Returns what else must follow (entering, after admission).
    fn forward(&self, frame: EventFrame) -> Then {
        let handled = self.state().event(&frame);
        if handled.show {
            self.out.send(Update::Event(Box::new(frame)));
        }
        match handled.then {
            Then::Join(joins) => {
                for params in joins {
                    let w = self.clone();
                    tokio::spawn(async move { w.join(params).await });
                }
                Then::Nothing
            }
            then => then,
        }
    }

    /// A request's answer was reached in the event stream (a join's catch-up follows it).
    fn answered(&self, id: &serde_json::Value, ok: bool) {
        self.state().answered(id, ok);
    }

    async fn call(&self, method: Method) {
        let name = method.name();
        let result = self.client.request(method.clone()).await;
        if let Method::ReadWorkspaceFile(params) = &method {
            return self.file_read(params, result);
        }
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                if let (true, Some(unsent)) = (is_send(&method), &self.unsent) {
                    if !matches!(e, ClientError::Protocol(_)) {
                        self.out.sent(&method);
                        unsent.lock().expect("unsent lock").push(method);
                        self.out.send(Update::Notice(
                            "not delivered yet; it will be sent when the connection is back".into(),
                        ));
                        return;
                    }
                }
                if let Method::SendMessage(p) | Method::SendChat(p) = &method {
                    // The composer keeps (or gets back) the text.
                    return self.out.send(Update::SendFailed {
                        session_id: p.session_id.clone(),
                        client_msg_id: p.client_msg_id.clone(),
                        text: p.text.clone(),
                        code: e.code(),
                        message: error_message(&e),
                    });
                }
                if is_background(&method) {
                    // Nothing the person asked for: a refused marker or typing note is not news.
                    tracing::debug!("{name} failed: {e}");
                    return;
                }
                return self.out.failed(name, &e);
            }
        };
        match method {
            Method::SendMessage(_) | Method::SendChat(_) => self.out.sent(&method),
            Method::MintShare(_) | Method::RotateShare(_) => {
                match serde_json::from_value::<MintShareResult>(value) {
                    Ok(m) => self.out.send(Update::Minted(m)),
                    Err(_) => self.out.unreadable(name),
                }
                self.refresh_shares().await;
            }
            Method::RevokeShare(_) => self.refresh_shares().await,
            Method::FetchHistory(params) => match serde_json::from_value::<FetchHistoryResult>(value) {
                Ok(page) => self.out.send(Update::HistoryPage { session_id: params.session_id, page }),
                Err(_) => self.out.unreadable(name),
            },
            Method::CreateSession(_) | Method::ForkSession(_) => match serde_json::from_value::<SessionInfo>(value) {
                Ok(info) => {
                    self.refresh(false).await;
                    self.join(JoinSessionParams { session_id: info.id.clone(), since_seq: None }).await;
                    // A new session (or the fork) is what the person wants to see next.
                    self.out.send(Update::Open(info.id));
                }
                Err(_) => self.out.unreadable(name),
            },
            Method::GetSettings(_) | Method::UpdateSettings(_) => match serde_json::from_value::<HostSettings>(value) {
                Ok(s) => {
                    if matches!(method, Method::UpdateSettings(_)) {
                        self.out.send(Update::Notice("settings saved".into()));
                    }
                    self.out.send(Update::HostSettings(s));
                }
                Err(_) => self.out.unreadable(name),
            },
            Method::AddWorkspace(_) => {
                match serde_json::from_value::<WorkspaceInfo>(value) {
                    Ok(info) => self.out.send(Update::WorkspaceAdded(info)),
                    Err(_) => self.out.unreadable(name),
                }
                self.refresh(false).await;
            }
            _ => {}
        }
    }

    /// A `read_workspace_file` answer goes to the file viewer, refusals included, with the
    /// error code so `file_refused` is recognisable.
    fn file_read(&self, params: &ReadFileParams, result: Result<serde_json::Value, ClientError>) {
        let result = match result {
            Ok(value) => serde_json::from_value::<ReadFileResult>(value).map_err(|e| format!("bad answer: {e}")),
            Err(ClientError::Protocol(p)) => Err(format!("{}: {}", p.code.as_str(), p.message)),
            Err(e) => Err(e.to_string()),
        };
        self.out.send(Update::FileRead { session_id: params.session_id.clone(), path: params.path.clone(), result });
    }

    /// Joins (or rejoins, with `since_seq`) a session; its catch-up follows in the event stream.
    async fn join(&self, params: JoinSessionParams) {
        let join = Method::JoinSession(params.clone());
        let response = self.client.request_full_with(join, |id| self.state().join_sent(&params, id.clone())).await;
        let result = response.and_then(|r| r.outcome.map_err(ClientError::Protocol)).and_then(|v| {
            serde_json::from_value::<JoinSessionResult>(v)
                .map_err(|e| ClientError::BadResult { method: "join_session", detail: e.to_string() })
        });
        match result {
            Ok(result) => {
                self.state().joined(&result);
                self.out.send(Update::Joined(result));
            }
            Err(e) => self.out.failed("join_session", &e),
        }
    }

    /// Lists workspaces and sessions; with `join_all`, joins (for a snapshot) every session
    /// not followed yet — the host's window follows all of them.
    async fn refresh(&self, join_all: bool) -> Option<Vec<SessionInfo>> {
        match self.client.call::<ListWorkspacesResult>(Method::ListWorkspaces(Empty {})).await {
            Ok(w) => {
                // The host learns each workspace's agent as registered (command line included).
                let agents: BTreeMap<WorkspaceId, String> =
                    w.workspaces.iter().filter_map(|w| Some((w.id.clone(), w.agent_detail.clone()?))).collect();
                if !agents.is_empty() {
                    self.send_list("agents", Update::WorkspaceAgents(agents));
                }
                self.send_list("workspaces", Update::Workspaces(w.workspaces))
            }
            Err(e) => self.out.failed("list_workspaces", &e),
        }
        let params = ListSessionsParams { workspace_id: None };
        let sessions = match self.client.call::<ListSessionsResult>(Method::ListSessions(params)).await {
            Ok(s) => s.sessions,
            Err(e) => {
                self.out.failed("list_sessions", &e);
                return None;
            }
        };
        self.send_list("sessions", Update::Sessions(sessions.clone()));
        if join_all {
            let new: Vec<SessionId> = {
                let state = self.state();
                sessions.iter().filter(|s| !state.follows(&s.id)).map(|s| s.id.clone()).collect()
            };
            for session_id in new {
                self.join(JoinSessionParams { session_id, since_seq: None }).await;
            }
        }
        Some(sessions)
    }

    async fn refresh_shares(&self) {
        match self.client.call::<ListSharesResult>(Method::ListShares(Empty {})).await {
            Ok(s) => self.send_list("shares", Update::Shares(s.shares)),
            Err(e) => self.out.failed("list_shares", &e),
        }
    }
}

/// What a remote window connects with.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    pub link: Link,
    /// Requested display name.
    pub name: String,
    /// Session to open first (default: the first one shared).
    pub session: Option<SessionId>,
    /// Where `known_hosts.json` is kept (shared with `join`); `None`: nothing is recorded.
    pub data_dir: Option<std::path::PathBuf>,
}

/// Why a connection attempt failed, and whether trying again can help.
enum Failure {
    Retry(String),
    /// The host refused for now (`storage_unavailable`, `rate_limited`): retry after the wait,
    /// also on the first connection.
    Busy(String, Duration),
    Final(String),
}

/// Where a remote looks for its host on the LAN when the link's own addresses do not answer
/// (`connect --nearby LINK`, or a link pasted on the start screen), as `join --nearby` does: at the
/// addresses of nearby hosts advertising the link's certificate fingerprint
/// ([`crate::app::nearby::fallback_addresses`]), with the link's token and pinned certificate.
#[derive(Clone, Debug, Default)]
pub struct NearbyFallback {
    /// Hosts already seen (the start screen's list when Connect was clicked).
    pub known: Vec<NearbyHost>,
    /// How long to look on the LAN when none of them answers; `None`: do not look (and, with no
    /// hosts known, no fallback at all — `connect LINK` without `--nearby`).
    pub browse: Option<Duration>,
}

/// How a remote connection ended.
enum Ended {
    /// The window closed.
    WindowClosed,
    /// The first connection never worked, and why.
    NeverConnected(String),
    /// Over for good after it had worked, and why.
    Over(String),
}

/// Drives a remote's connection until the UI drops its action sender.
pub async fn run_remote(options: RemoteOptions, actions: mpsc::UnboundedReceiver<Action>, out: Outbox) {
    run_remote_with(options, NearbyFallback::default(), actions, out).await
}

/// [`run_remote`], falling back to a nearby host advertising the link's certificate when the
/// link's addresses do not answer.
pub async fn run_remote_with(
    options: RemoteOptions,
    nearby: NearbyFallback,
    mut actions: mpsc::UnboundedReceiver<Action>,
    out: Outbox,
) {
    match drive_remote(options, nearby, &mut actions, &out).await {
        Ended::WindowClosed => {}
        Ended::NeverConnected(why) | Ended::Over(why) => {
            out.send(Update::Connection(ConnectionState::Closed(why)));
            refuse_all(actions, out).await
        }
    }
}

/// What a start screen connects with (the link comes from the screen).
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// Session to open first (default: the first one shared).
    pub session: Option<SessionId>,
    /// Where `known_hosts.json` and resume tokens are kept; `None`: nothing is recorded.
    pub data_dir: Option<std::path::PathBuf>,
    /// How long to look on the LAN for the link's host when neither the link's addresses nor the
    /// nearby hosts listed answer.
    pub nearby_window: Duration,
}

/// How often the start screen asks the LAN again (hosts still there are seen again).
pub const NEARBY_ASK_EVERY: Duration = Duration::from_secs(10);

/// A remote window opened without a link: browses the LAN for the start screen's nearby list
/// (on its own thread) until Connect, then connects with the pasted link, falling back to a
/// listed host advertising the link's certificate. A first connection that never works shows the
/// start screen again (browsing again).
pub async fn run_start(options: StartOptions, mut actions: mpsc::UnboundedReceiver<Action>, out: Outbox) {
    loop {
        let browsing = Browsing::start(out.clone());
        let (link, name) = loop {
            match actions.recv().await {
                None => return,
                Some(Action::Connect { link, name }) => break (link, name),
                Some(_) => {}
            }
        };
        let known = browsing.stop();
        let remote = RemoteOptions { link, name, session: options.session.clone(), data_dir: options.data_dir.clone() };
        let nearby = NearbyFallback { known, browse: Some(options.nearby_window) };
        match drive_remote(remote, nearby, &mut actions, &out).await {
            Ended::WindowClosed => return,
            Ended::NeverConnected(why) => out.send(Update::BackToStart(why)),
            Ended::Over(why) => {
                out.send(Update::Connection(ConnectionState::Closed(why)));
                return refuse_all(actions, out).await;
            }
        }
    }
}

/// The start screen's mDNS browsing, on a thread of its own (the mDNS calls block); stops when
/// dropped.
struct Browsing {
    stop: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, NearbyHost>>>,
}

impl Browsing {
    fn start(out: Outbox) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen: Arc<Mutex<BTreeMap<String, NearbyHost>>> = Arc::default();
        let (stopping, hosts) = (stop.clone(), seen.clone());
        let browse = move || {
            let mut browser = match Browser::start() {
                Ok(b) => b,
                Err(e) => return out.send(Update::NearbyUnavailable(e.to_string())),
            };
            let mut asked = std::time::Instant::now();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                if asked.elapsed() >= NEARBY_ASK_EVERY {
                    asked = std::time::Instant::now();
                    if let Err(e) = browser.ask_again() {
                        return out.send(Update::NearbyUnavailable(e.to_string()));
                    }
                }
                match browser.next(Duration::from_millis(250)) {
                    Ok(Some(change)) => {
                        let mut hosts = hosts.lock().expect("nearby lock");
                        match &change {
                            NearbyChange::Seen(host) => hosts.insert(host.instance.clone(), host.clone()),
                            NearbyChange::Gone(instance) => hosts.remove(instance),
                        };
                        out.send(Update::Nearby(change));
                    }
                    Ok(None) => {}
                    Err(e) => return out.send(Update::NearbyUnavailable(e.to_string())),
                }
            }
        };
        if let Err(e) = std::thread::Builder::new().name("mdns-browse".into()).spawn(browse) {
            tracing::warn!("cannot look for hosts on the LAN: {e}");
        }
        Browsing { stop, seen }
    }

    /// Stops browsing (the thread ends within a quarter of a second); the hosts seen.
    fn stop(self) -> Vec<NearbyHost> {
        self.seen.lock().expect("nearby lock").values().cloned().collect()
    }
}

impl Drop for Browsing {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs a remote's connection, reconnecting, until the window closes or it is over.
async fn drive_remote(
    options: RemoteOptions,
    nearby: NearbyFallback,
    actions: &mut mpsc::UnboundedReceiver<Action>,
    out: &Outbox,
) -> Ended {
    // A token kept by an earlier window or `join` for this link: within grace, the same participant.
    let resume = options.data_dir.as_deref().map(|dir| crate::app::join::ResumeStore::new(dir, &options.link));
    let resume_token = resume.as_ref().and_then(|r| r.load());
    let mut remote = Remote {
        options,
        nearby,
        resume,
        unsent: Arc::default(),
        state: Arc::new(Mutex::new(ClientSession::new(resume_token))),
    };
    let mut reconnect = Reconnect::default();
    loop {
        let state = if reconnect.has_connected() { ConnectionState::Reconnecting } else { ConnectionState::Connecting };
        out.send(Update::Connection(state));
        let (attempt, why) = match remote.connect(out).await {
            Ok((client, events, admission)) => {
                reconnect.connected();
                match remote.serve(client, events, admission, actions, out).await {
                    Some(final_reason) => {
                        remote.forget();
                        return Ended::Over(final_reason);
                    }
                    None if actions.is_closed() => return Ended::WindowClosed,
                    None => (Attempt::Dropped, String::new()),
                }
            }
            Err(Failure::Final(why)) => {
                remote.forget();
                return if reconnect.has_connected() { Ended::Over(why) } else { Ended::NeverConnected(why) };
            }
            Err(Failure::Busy(why, wait)) => (Attempt::Busy(wait), why),
            Err(Failure::Retry(why)) => (Attempt::Unreachable, why),
        };
        let delay = match reconnect.after(attempt, std::time::Instant::now()) {
            Ok(delay) => delay,
            Err(GiveUp::NeverConnected) => return Ended::NeverConnected(format!("cannot connect: {why}")),
            Err(GiveUp::OutOfPatience) => return Ended::Over(format!("cannot connect: {why}")),
        };
        match attempt {
            Attempt::Busy(_) => {
                out.send(Update::Notice(format!("the host cannot take you right now ({why}); trying again…")))
            }
            Attempt::Unreachable => tracing::debug!("reconnect failed: {why}"),
            Attempt::Dropped => {}
        }
        // Wait before the next attempt, keeping the UI's actions flowing.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                action = actions.recv() => match action {
                    None => return Ended::WindowClosed,
                    Some(Action::Call(method)) if is_send(&method) => {
                        out.sent(&method);
                        remote.unsent.lock().expect("unsent lock").push(method);
                        out.send(Update::Notice("not delivered yet; it will be sent when the connection is back".into()));
                    }
                    Some(Action::Call(method)) if is_background(&method) => {}
                    Some(_) => out.send(Update::Notice("not connected; reconnecting…".into())),
                },
            }
        }
    }
}

/// Tells the window which way the connection reaches the host, and over iroh every change
/// (relayed → direct when hole punching succeeds) for as long as the connection lives.
fn follow_route(route: Route, out: Outbox) {
    match route {
        Route::Address(addr) => out.send(Update::Route(format!("direct to {addr}"))),
        Route::Iroh(mut path) => {
            out.send(Update::Route(path.borrow_and_update().to_string()));
            tokio::spawn(async move {
                while path.changed().await.is_ok() {
                    let now = path.borrow_and_update().to_string();
                    out.send(Update::Route(now));
                }
            });
        }
    }
}

/// After a final disconnect: answer every action with a note until the window closes.
async fn refuse_all(mut actions: mpsc::UnboundedReceiver<Action>, out: Outbox) {
    while actions.recv().await.is_some() {
        out.send(Update::Notice("disconnected from the host".into()));
    }
}

struct Remote {
    options: RemoteOptions,
    /// Where to look for the host when the link's addresses do not answer.
    nearby: NearbyFallback,
    /// Where the resume token is kept between runs (`None`: not kept).
    resume: Option<crate::app::join::ResumeStore>,
    unsent: Arc<Mutex<Vec<Method>>>,
    state: Arc<Mutex<ClientSession>>,
}

impl Remote {
    async fn connect(&mut self, out: &Outbox) -> Result<(Client, Events, Admission), Failure> {
        let (client, events, route) = match Client::connect_via(&self.options.link).await {
            Ok(connected) => connected,
            Err(e @ ClientError::Connect { .. }) => match self.connect_nearby(out).await {
                Some((client, events)) => (client, events, Route::Address(self.options.link.authority())),
                None => return Err(Failure::Retry(e.to_string())),
            },
            Err(e @ (ClientError::FingerprintMismatch { .. } | ClientError::TlsSetup(_))) => {
                return Err(Failure::Final(e.to_string()))
            }
            Err(e) => return Err(Failure::Retry(e.to_string())),
        };
        // The host proved it holds the pinned certificate: remember it (once per window), and
        // say so if it presented another one before. (Over iroh it proved the endpoint key.)
        if let Some(dir) = self.options.data_dir.take_if(|_| matches!(route, Route::Address(_))) {
            let notes = crate::app::join::remember_host(&dir, &self.options.link);
            if !notes.is_empty() {
                out.send(Update::Warning(notes.join("\n")));
            }
        }
        let params = self.state().authenticate(&self.options.link.token, &self.options.name);
        let auth: AuthenticateResult = match client.call(Method::Authenticate(params)).await {
            Ok(a) => a,
            Err(e) if e.is_transient_refusal() => {
                client.close();
                let wait = e.retry_after();
                return Err(Failure::Busy(e.to_string(), wait));
            }
            Err(ClientError::Protocol(e)) => {
                self.state().forget_resume();
                return Err(Failure::Final(format!("the host refused the link: {}", e.message)));
            }
            Err(e) => return Err(Failure::Retry(e.to_string())),
        };
        let identity = self.state().authenticated(&auth);
        if identity == Identity::Replaced {
            // Away too long: a new participant; its sessions are rejoined from where it was.
            out.send(Update::Notice(format!("you were away too long and are back as {}", auth.display_name)));
        }
        if let Some(store) = &self.resume {
            store.save(&auth.resume_token);
        }
        follow_route(route, out.clone());
        out.send(Update::Identity { me: auth.participant_id, name: auth.display_name, role: auth.role });
        Ok((client, events, auth.admission))
    }

    /// The link's addresses did not answer: tries the nearby hosts advertising its certificate
    /// (those known first, then those found by looking on the LAN, when allowed). The first that
    /// answers becomes the link's address for later reconnects, as in `join --nearby`.
    async fn connect_nearby(&mut self, out: &Outbox) -> Option<(Client, Events)> {
        self.options.link.fingerprint.as_ref()?;
        let mut found = nearby::connect_fallback(&self.options.link, &self.nearby.known, &[]).await;
        if found.is_none() {
            let window = self.nearby.browse?;
            let tried = nearby::fallback_addresses(&self.options.link, &self.nearby.known);
            out.send(Update::Notice(format!(
                "{} does not answer; looking for the host on the LAN…",
                self.options.link.authority()
            )));
            match nearby::browse(window).await {
                Ok(hosts) => {
                    found = nearby::connect_fallback(&self.options.link, &hosts, &tried).await;
                    self.nearby.known = hosts;
                }
                Err(e) => out.send(Update::Notice(e.to_string())),
            }
        }
        let Some((link, client, events)) = found else {
            if self.nearby.browse.is_some() {
                out.send(Update::Notice("no nearby host with the link's certificate answered".into()));
            }
            return None;
        };
        out.send(Update::Notice(format!(
            "found the host on the LAN at {} (mDNS; same certificate as the link pins)",
            link.authority()
        )));
        self.options.link = link;
        Some((client, events))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClientSession> {
        lock_state(&self.state)
    }

    /// The host ended this participant for good: a later window starts afresh.
    fn forget(&self) {
        if let Some(store) = &self.resume {
            store.forget();
        }
    }

    fn worker(&self, client: &Client, out: &Outbox) -> Worker {
        Worker {
            client: client.clone(),
            out: out.clone(),
            unsent: Some(self.unsent.clone()),
            state: self.state.clone(),
            // A new connection: its first lists are sent whatever the last one showed.
            listed: Arc::default(),
        }
    }

    /// Runs one connection. `Some(reason)`: disconnected for good; `None`: reconnect (or the UI
    /// closed, when the action channel is closed).
    async fn serve(
        &mut self,
        client: Client,
        mut events: Events,
        admission: Admission,
        actions: &mut mpsc::UnboundedReceiver<Action>,
        out: &Outbox,
    ) -> Option<String> {
        let worker = self.worker(&client, out);
        // A pending participant waits for an `admission` event before entering.
        let admitted = admission == Admission::Admitted;
        let mut refresh = tokio::time::interval(REFRESH_PERIOD);
        refresh.tick().await;
        if admitted {
            out.send(Update::Connection(ConnectionState::Connected));
            self.enter(&worker).await;
        } else {
            out.send(Update::Connection(ConnectionState::Lobby));
        }
        loop {
            tokio::select! {
                action = actions.recv() => match action {
                    Some(action) => worker.spawn(action),
                    None => {
                        self.leave(&client, &mut events).await;
                        return None;
                    }
                },
                ev = events.recv() => match ev {
                    Some(ClientEvent::Event { frame, .. }) => {
                        if let Then::Enter = worker.forward(*frame) {
                            self.enter(&worker).await;
                        }
                    }
                    Some(ClientEvent::Answered { id, ok }) => worker.answered(&id, ok),
                    Some(ClientEvent::Closed { reason }) => return self.closed(reason),
                    None => return self.closed(None),
                    Some(_) => {}
                },
                _ = refresh.tick(), if worker.state().admitted() => {
                    let w = worker.clone();
                    tokio::spawn(async move { w.refresh(false).await; });
                }
            }
        }
    }

    /// The window closed: leave every followed session (like `join`'s `/quit`) so the others
    /// see a departure rather than a lost connection, then close politely.
    async fn leave(&self, client: &Client, events: &mut Events) {
        let followed: Vec<SessionId> = self.state().followed().cloned().collect();
        for session_id in followed {
            let leave = client.request(Method::LeaveSession(SessionRef { session_id }));
            let _ = tokio::time::timeout(Duration::from_secs(2), leave).await;
        }
        client.close();
        let closed = async { while !matches!(events.recv().await, Some(ClientEvent::Closed { .. }) | None) {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
    }

    fn closed(&self, reason: Option<String>) -> Option<String> {
        match self.state().closed(reason) {
            Closed::Final(reason) => Some(format!("disconnected: {}", crate::app::render::closing_text(&reason))),
            Closed::Reconnect => None,
        }
    }

    /// After admission: list what is shared, join the chosen session (first time) or rejoin every
    /// followed session from its last seq, then resend unconfirmed messages.
    async fn enter(&self, worker: &Worker) {
        let sessions = worker.refresh(false).await.unwrap_or_default();
        let rejoins = worker.state().rejoins();
        if rejoins.is_empty() {
            let pick = match &self.options.session {
                Some(w) => sessions.iter().find(|s| &s.id == w),
                None => sessions.first(),
            };
            match pick {
                Some(s) => worker.join(JoinSessionParams { session_id: s.id.clone(), since_seq: None }).await,
                None => worker.out.send(Update::Notice("no session is shared with you yet".into())),
            }
        } else {
            for params in rejoins {
                worker.join(params).await;
            }
        }
        let unsent = std::mem::take(&mut *self.unsent.lock().expect("unsent lock"));
        for method in unsent {
            worker.call(method).await;
        }
    }
}

/// The client's protocol state, shared by a connection's tasks.
fn lock_state(state: &Mutex<ClientSession>) -> std::sync::MutexGuard<'_, ClientSession> {
    state.lock().expect("client state lock")
}

/// Messages kept and sent again once the connection is back (prompts and room chat; their
/// `client_msg_id` makes a resend that did arrive the first time harmless).
fn is_send(method: &Method) -> bool {
    matches!(method, Method::SendMessage(_) | Method::SendChat(_))
}

/// Requests the window makes on its own (read markers, "typing"): dropped quietly when they fail
/// or the host is away.
fn is_background(method: &Method) -> bool {
    matches!(method, Method::MarkRead(_) | Method::Typing(_))
}
