//! Shared helpers for the end-to-end network tests: a real host (engine thread + TLS WebSocket
//! server + SQLite file in a temp dir) on a free loopback port, and remotes connecting to it
//! through share links, exactly like `roundtable join` does.

#![allow(dead_code)]

pub mod netns;
pub mod proc;

use roundtable::app::host::{Host, HostOptions};
use roundtable::ids::{ParticipantId, SessionId, WorkspaceId};
use roundtable::net::client::{Client, ClientError, ClientEvent, Events};
use roundtable::net::link::Link;
use roundtable::protocol::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long any single expectation may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A host on 127.0.0.1 with one workspace (`w1`, demo agent) and its session.
pub struct TestHost {
    pub host: Host,
    pub events: Events,
    pub dir: PathBuf,
    pub workspace: WorkspaceId,
    pub session: SessionId,
    _temp: Option<tempfile::TempDir>,
}

/// Host options for tests: TLS, free port, invariant checks on, fixed seed.
pub fn options(dir: &Path) -> HostOptions {
    let mut o = HostOptions::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    o.engine.seed = 7;
    o.engine.check_invariants = true;
    o
}

impl TestHost {
    /// A fresh host with default test options.
    pub async fn start() -> TestHost {
        Self::start_with(|_| {}).await
    }

    /// A fresh host; `tweak` adjusts the options first.
    pub async fn start_with(tweak: impl FnOnce(&mut HostOptions)) -> TestHost {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut o = options(&dir);
        tweak(&mut o);
        let (host, events) = Host::start(o).await.expect("host starts");
        host.open();
        let mut t = TestHost {
            host,
            events,
            dir,
            workspace: WorkspaceId::nth(0),
            session: SessionId::nth(0),
            _temp: Some(temp),
        };
        let (w, s) = t.add_workspace("alpha").await;
        t.workspace = w;
        t.session = s;
        t
    }

    /// Starts a host on an existing data dir (a restart), on `bind`.
    pub async fn restart_on(dir: PathBuf, bind: std::net::SocketAddr, temp: Option<tempfile::TempDir>) -> TestHost {
        let mut o = options(&dir);
        o.bind = bind;
        let (host, events) = Host::start(o).await.expect("host restarts");
        host.open();
        let sessions = host_call::<ListSessionsResult>(
            &host.client,
            Method::ListSessions(ListSessionsParams { workspace_id: None }),
        )
        .await
        .sessions;
        let first = sessions.first().expect("a session survived");
        TestHost { host, events, dir, workspace: first.workspace_id.clone(), session: first.id.clone(), _temp: temp }
    }

    /// Kills the host (no close frames, no last tick) and returns its data dir and address.
    pub async fn kill(mut self) -> (PathBuf, std::net::SocketAddr, Option<tempfile::TempDir>) {
        let addr = self.host.local_addr;
        let temp = self._temp.take();
        self.host.kill().await;
        (self.dir, addr, temp)
    }

    /// Registers a workspace (demo agent) with one session; returns their ids.
    pub async fn add_workspace(&self, name: &str) -> (WorkspaceId, SessionId) {
        let dir = self.dir.join(format!("ws-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let before = self.workspace_ids().await;
        self.call::<serde_json::Value>(Method::AddWorkspace(AddWorkspaceParams {
            name: name.into(),
            dir: dir.display().to_string(),
            agent: None,
        }))
        .await;
        let after = self.workspace_ids().await;
        let w = after.into_iter().find(|w| !before.contains(w)).expect("a new workspace");
        self.call::<serde_json::Value>(Method::CreateSession(CreateSessionParams {
            workspace_id: w.clone(),
            title: format!("{name} session"),
            vote_deadline_ms: None,
            plan_first: None,
        }))
        .await;
        let sessions = self
            .call::<ListSessionsResult>(Method::ListSessions(ListSessionsParams { workspace_id: Some(w.clone()) }))
            .await
            .sessions;
        (w, sessions[0].id.clone())
    }

    async fn workspace_ids(&self) -> Vec<WorkspaceId> {
        self.call::<ListWorkspacesResult>(Method::ListWorkspaces(Empty {}))
            .await
            .workspaces
            .into_iter()
            .map(|w| w.id)
            .collect()
    }

    /// The host sends `n` messages to its session (`text(i)`), cancelling each turn at once: a
    /// long history, quickly.
    pub async fn flood(&self, n: usize, text: impl Fn(usize) -> String) {
        for i in 0..n {
            self.call::<serde_json::Value>(Method::SendMessage(SendMessageParams {
                session_id: self.session.clone(),
                text: text(i),
                client_msg_id: format!("flood-{i}"),
            }))
            .await;
            self.call::<serde_json::Value>(Method::CancelTurn(SessionRef { session_id: self.session.clone() })).await;
        }
    }

    /// A host-only request that must succeed.
    pub async fn call<T: serde::de::DeserializeOwned>(&self, method: Method) -> T {
        host_call(&self.host.client, method).await
    }

    /// A host request that may fail.
    pub async fn try_call(&self, method: Method) -> Result<serde_json::Value, ClientError> {
        self.host.client.request(method).await
    }

    /// Mints a share for the first workspace; `tweak` adjusts the defaults.
    pub async fn mint(&self, tweak: impl FnOnce(&mut MintShareParams)) -> (Link, MintShareResult) {
        let mut params = MintShareParams::team("test", vec![self.workspace.clone()]);
        tweak(&mut params);
        let result: MintShareResult = self.call(Method::MintShare(params)).await;
        let link = Link::parse(result.link.as_deref().expect("the host formats links")).expect("a valid link");
        (link, result)
    }
}

pub async fn host_call<T: serde::de::DeserializeOwned>(client: &Client, method: Method) -> T {
    let name = method.name();
    match client.call::<T>(method).await {
        Ok(v) => v,
        Err(e) => panic!("host request {name} failed: {e}"),
    }
}

/// A remote participant over a real socket.
pub struct Remote {
    pub client: Client,
    pub events: Events,
    pub me: ParticipantId,
    pub resume_token: String,
    pub link: Link,
    /// Every event seen so far (for diagnostics and for `closing`).
    pub seen: Vec<EventFrame>,
}

/// Connects and authenticates; panics on failure.
pub async fn remote(link: &Link, name: &str) -> Remote {
    let (client, events) = Client::connect(link).await.expect("connects");
    let auth: AuthenticateResult = client
        .call(Method::Authenticate(AuthenticateParams {
            token: link.token.clone(),
            display_name: name.into(),
            resume_token: None,
        }))
        .await
        .expect("authenticates");
    Remote {
        client,
        events,
        me: auth.participant_id,
        resume_token: auth.resume_token,
        link: link.clone(),
        seen: Vec::new(),
    }
}

/// Connects and authenticates with a resume token.
pub async fn resume(link: &Link, name: &str, resume_token: &str) -> Result<(Remote, AuthenticateResult), ClientError> {
    let (client, events) = Client::connect(link).await?;
    let auth: AuthenticateResult = client
        .call(Method::Authenticate(AuthenticateParams {
            token: link.token.clone(),
            display_name: name.into(),
            resume_token: Some(resume_token.into()),
        }))
        .await?;
    let r = Remote {
        client,
        events,
        me: auth.participant_id.clone(),
        resume_token: auth.resume_token.clone(),
        link: link.clone(),
        seen: Vec::new(),
    };
    Ok((r, auth))
}

impl Remote {
    /// Joins a session; `since` as in `join_session`.
    pub async fn join(&self, session: &SessionId, since: Option<u64>) -> JoinSessionResult {
        self.client
            .call(Method::JoinSession(JoinSessionParams { session_id: session.clone(), since_seq: since }))
            .await
            .expect("join_session")
    }

    /// Sends a chat message with a fresh client_msg_id.
    pub async fn say(&self, session: &SessionId, text: &str) -> Result<SendMessageResult, ClientError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.client
            .call(Method::SendMessage(SendMessageParams {
                session_id: session.clone(),
                text: text.into(),
                client_msg_id: format!("t{n}"),
            }))
            .await
    }

    /// Waits for an event matching `pred`; panics (listing what was seen) after [`WAIT`].
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&EventFrame) -> bool) -> EventFrame {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ClientEvent::Event { frame, .. })) => {
                    self.seen.push((*frame).clone());
                    if pred(&frame) {
                        return *frame;
                    }
                }
                Ok(Some(ClientEvent::Closed { reason })) => {
                    panic!("connection closed ({reason:?}) while waiting for {what}; seen: {:#?}", names(&self.seen))
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; seen: {:#?}", names(&self.seen)),
            }
        }
    }

    /// Waits for the answer to a raw request (sent with `send_raw`); returns it parsed.
    pub async fn expect_response(&mut self) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ClientEvent::Response { raw })) => return serde_json::from_str(&raw).expect("JSON response"),
                Ok(Some(ClientEvent::Event { frame, .. })) => self.seen.push(*frame),
                Ok(Some(ClientEvent::Closed { reason })) => {
                    panic!("connection closed ({reason:?}) while waiting for a response")
                }
                Ok(Some(ClientEvent::Other { raw })) => panic!("unexpected frame {raw}"),
                Ok(Some(ClientEvent::Answered { .. })) => {}
                Ok(None) => panic!("event stream ended while waiting for a response"),
                Err(_) => panic!("timed out waiting for a response"),
            }
        }
    }

    /// Seqs of the session events seen so far for `session`, in arrival order.
    pub fn seqs(&self, session: &SessionId) -> Vec<u64> {
        self.seen.iter().filter(|f| f.session_id.as_ref() == Some(session)).filter_map(|f| f.seq).collect()
    }

    /// Waits until the connection closes; returns the reason of the `closing` event (if one came)
    /// and the close frame's reason.
    pub async fn expect_closed(&mut self) -> (Option<String>, Option<String>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut closing = None;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ClientEvent::Event { frame, .. })) => {
                    if let Event::Closing(c) = &frame.body {
                        closing = Some(c.reason.clone());
                    }
                    self.seen.push(*frame);
                }
                Ok(Some(ClientEvent::Closed { reason })) => return (closing, reason),
                Ok(Some(_)) => {}
                Ok(None) => return (closing, None),
                Err(_) => panic!("the connection was not closed within {WAIT:?}; seen: {:#?}", names(&self.seen)),
            }
        }
    }
}

/// `event(seq)` names, for failure messages.
pub fn names(frames: &[EventFrame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match (&f.session_id, f.seq) {
            (Some(s), Some(q)) => format!("{}({s}#{q})", f.body.name()),
            _ => f.body.name().to_string(),
        })
        .collect()
}

/// The protocol error code of a failed request.
pub fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Protocol(e)) => e.code,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// Polls `check` until it returns true (every 20 ms, up to [`WAIT`]).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Holds tokio's clock still until dropped, in a `#[tokio::test(start_paused = true)]` test:
/// time then moves only when the test calls `tokio::time::advance`, so the host's keepalive
/// timers count exactly the time the test moves on, however slow the machine is. (A paused clock
/// that is not held jumps to the next timer whenever the runtime has nothing to do — and with
/// real sockets and the engine's own thread, that is whenever it waits for the kernel or the
/// engine, so timers would fire at moments nobody chose. A running `spawn_blocking` task stops
/// those jumps, as `tokio::time::pause` documents.) Tokio's timeouts do not fire while it is
/// held: bound the waits with [`within`].
pub struct HeldClock {
    _release: std::sync::mpsc::Sender<()>,
}

pub fn hold_clock() -> HeldClock {
    let (release, held) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = held.recv(); // returns when the `HeldClock` is dropped
    });
    HeldClock { _release: release }
}

/// Awaits `fut`, failing the test after [`WAIT`] of real time (tokio's own timeouts do not fire
/// while its clock is held, see [`hold_clock`]).
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let (expire, expired) = tokio::sync::oneshot::channel::<()>();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(WAIT) {
            let _ = expire.send(());
        }
    });
    let result = tokio::select! {
        result = fut => result,
        _ = expired => panic!("timed out waiting for {what} ({WAIT:?} of real time)"),
    };
    drop(done);
    result
}
