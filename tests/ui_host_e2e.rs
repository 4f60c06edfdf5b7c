//! The window's backend against a real host (engine thread, TLS WebSocket server, SQLite): the
//! host window's model follows the host's in-process connection, and a remote window's model
//! follows a network connection made from a share link.

mod support;

use roundtable::ids::{ParticipantId, SessionId};
use roundtable::net::client::ClientEvent;
use roundtable::net::link::Link;
use roundtable::protocol::*;
use roundtable::ui::app::RoundtableApp;
use roundtable::ui::backend::{self, Outbox, RemoteOptions};
use roundtable::ui::model::*;
use std::sync::Arc;
use std::time::Duration;
use support::{remote, TestHost, WAIT};

type ActionTx = tokio::sync::mpsc::UnboundedSender<Action>;
type ActionRx = tokio::sync::mpsc::UnboundedReceiver<Action>;

/// A window without pixels: the app (model + channels) as the UI thread would hold it, the
/// backend's ends of the channels, and a sender for the test's own "clicks".
fn window(is_host: bool) -> (RoundtableApp, ActionTx, ActionRx, Outbox) {
    let (actions_tx, actions_rx) = tokio::sync::mpsc::unbounded_channel();
    let (updates_tx, updates_rx) = std::sync::mpsc::channel();
    let app = RoundtableApp::new(ViewModel::new(is_host), actions_tx.clone(), updates_rx);
    (app, actions_tx, actions_rx, Outbox::new(updates_tx, Arc::new(|| {})))
}

/// Pumps updates into the app until `check` holds.
async fn until(app: &mut RoundtableApp, what: &str, check: impl Fn(&ViewModel) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        app.pump();
        if check(&app.model) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}; model: {:#?}", app.model);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has_message(m: &ViewModel, session: &SessionId, author: &str, text: &str) -> bool {
    m.sessions.get(session).is_some_and(|s| {
        s.timeline
            .iter()
            .any(|e| matches!(e, Entry::Message(msg) if msg.message.author_name == author && msg.message.text == text))
    })
}

/// Sends an action as a click in the window would.
fn act(tx: &ActionTx, action: Action) {
    tx.send(action).expect("the backend is running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_window_mints_a_share_shows_a_remote_message_and_decides_a_plan() {
    let mut t = TestHost::start().await;
    let events = std::mem::replace(&mut t.events, tokio::sync::mpsc::unbounded_channel().1);
    let (mut app, tx, rx, out) = window(true);
    let task = tokio::spawn(backend::run_host(t.host.client.clone(), events, rx, out));
    let session = t.session.clone();

    until(&mut app, "the host window shows its session", |m| m.sessions.get(&session).is_some_and(|s| s.loaded)).await;
    assert_eq!(app.model.me, Some(ParticipantId::host()));

    // Mint through the window's path: action → mint_share → the link is shown once.
    let params = MintShareParams {
        label: "ui".into(),
        workspaces: vec![t.workspace.clone()],
        collaborative: true,
        consensus_required: true,
        admission_required: false,
        role: Role::Participant,
        expires_in_ms: None,
        max_uses: Some(5),
        vote_deadline_ms: None,
    };
    act(&tx, Action::Call(Method::MintShare(params)));
    until(&mut app, "the minted link is shown", |m| m.minted.as_ref().is_some_and(|r| r.link.is_some())).await;
    let link = Link::parse(app.model.minted.as_ref().unwrap().link.as_deref().unwrap()).expect("a valid link");
    until(&mut app, "the share list has the share", |m| m.shares.iter().any(|s| s.max_uses == Some(5))).await;

    // A remote joins with it and talks; the host window shows her and her message.
    let ann = remote(&link, "Ann").await;
    ann.join(&session, None).await;
    until(&mut app, "Ann is in the roster", |m| m.sessions[&session].roster.values().any(|r| r.display_name == "Ann"))
        .await;
    ann.say(&session, "hello from Ann").await.expect("sent");
    until(&mut app, "Ann's message is shown", |m| has_message(m, &session, "Ann", "hello from Ann")).await;
    until(&mut app, "the agent's reply replaced the stream", |m| {
        let s = &m.sessions[&session];
        s.timeline.iter().any(|e| matches!(e, Entry::Message(msg) if msg.message.author_id == AGENT_ID))
            && s.holder().is_none()
    })
    .await;

    // Ann asks for a plan; the host window sees the vote and decides it alone.
    ann.say(&session, "/plan tidy up").await.expect("sent");
    until(&mut app, "the plan vote is open", |m| m.sessions[&session].votes.values().any(|c| c.is_open())).await;
    assert_eq!(app.model.composer_lock(), Some(ComposerLock::WaitingFor("Ann".into())));
    let vote_id = app.model.sessions[&session].votes.values().find(|c| c.is_open()).unwrap().opened.vote_id.clone();
    act(
        &tx,
        Action::Call(Method::VotePlan(VotePlanParams {
            vote_id: vote_id.clone(),
            approve: true,
            reason: None,
            always: false,
        })),
    );
    until(&mut app, "the vote resolved approved by the host", |m| {
        m.sessions[&session].votes[&vote_id]
            .resolved
            .as_ref()
            .is_some_and(|r| r.outcome == VoteOutcome::Approved && r.resolved_by == "host")
    })
    .await;

    // The audit log is readable from the window.
    act(&tx, Action::LoadAudit);
    until(&mut app, "the audit log is loaded", |m| !m.audit.is_empty()).await;

    drop((tx, app));
    tokio::time::timeout(WAIT, task).await.expect("the backend stops when the window closes").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_window_connects_from_a_link_and_chats_with_the_host() {
    let mut t = TestHost::start().await;
    let (link, _) = t.mint(|_| {}).await;
    let (mut app, tx, rx, out) = window(false);
    let known = tempfile::tempdir().unwrap();
    let pinned = (link.authority(), link.fingerprint.clone());
    let relink = link.clone();
    let options = RemoteOptions { link, name: "Bob".into(), session: None, data_dir: Some(known.path().to_path_buf()) };
    let task = tokio::spawn(backend::run_remote(options, rx, out));
    let session = t.session.clone();

    until(&mut app, "the remote window joined the shared session", |m| {
        m.connection == ConnectionState::Connected && m.sessions.get(&session).is_some_and(|s| s.loaded)
    })
    .await;
    assert_eq!(app.model.my_name, "Bob");
    assert!(app.model.sessions[&session].roster.values().any(|r| r.role == Role::Host), "the host is listed");
    if let (authority, Some(fp)) = pinned {
        let hosts = roundtable::net::known_hosts::KnownHosts::load(known.path()).unwrap().hosts;
        assert_eq!(hosts.get(&authority), Some(&fp), "a host that proved its certificate is remembered");
    }

    // The host says something; the remote window shows it.
    t.call::<serde_json::Value>(Method::SendMessage(SendMessageParams {
        session_id: session.clone(),
        text: "welcome, Bob".into(),
        client_msg_id: "h-1".into(),
    }))
    .await;
    until(&mut app, "the host's message is shown", |m| has_message(m, &session, "Host", "welcome, Bob")).await;
    until(&mut app, "the host's turn ended", |m| m.sessions[&session].holder().is_none()).await;

    // The remote window sends; its own message comes back as Bob's.
    act(
        &tx,
        Action::Call(Method::SendMessage(SendMessageParams {
            session_id: session.clone(),
            text: "thanks".into(),
            client_msg_id: "b-1".into(),
        })),
    );
    until(&mut app, "Bob's message is shown", |m| has_message(m, &session, "Bob", "thanks")).await;
    let me = app.model.me.clone().expect("identity known");
    assert!(app.model.is_me(me.as_str()));

    // A host-only method from the remote window is refused and reported.
    act(&tx, Action::Call(Method::ListShares(Empty {})));
    until(&mut app, "the refusal is reported", |m| {
        m.status.as_ref().is_some_and(|s| s.text == "Could not list the links: only the host can do that")
    })
    .await;

    // Closing the window leaves the session (a departure, not a lost connection).
    drop((tx, app));
    tokio::time::timeout(WAIT, task).await.expect("the backend stops when the window closes").unwrap();
    let left = async {
        while let Some(ev) = t.events.recv().await {
            if let ClientEvent::Event { frame, .. } = ev {
                if matches!(&frame.body, Event::ParticipantLeft(l) if l.participant_id == me && l.reason == "left") {
                    return;
                }
            }
        }
        panic!("the host connection ended");
    };
    tokio::time::timeout(WAIT, left).await.expect("the host sees Bob leave");

    // Opened again within grace (the same data directory): the same participant, not "Bob (2)".
    let (mut app, _tx, rx, out) = window(false);
    let options =
        RemoteOptions { link: relink, name: "Bob".into(), session: None, data_dir: Some(known.path().to_path_buf()) };
    let _task = tokio::spawn(backend::run_remote(options, rx, out));
    until(&mut app, "the reopened window is connected", |m| {
        m.connection == ConnectionState::Connected && m.me.is_some()
    })
    .await;
    assert_eq!(app.model.me.as_ref(), Some(&me), "resumed with the token the first window kept");
    assert_eq!(app.model.my_name, "Bob");
}

/// Starts the host window's backend on `t`'s host connection, with its own event stream.
fn host_window(t: &mut TestHost) -> (RoundtableApp, ActionTx, tokio::task::JoinHandle<()>) {
    let events = std::mem::replace(&mut t.events, tokio::sync::mpsc::unbounded_channel().1);
    let (app, tx, rx, out) = window(true);
    let task = tokio::spawn(backend::run_host(t.host.client.clone(), events, rx, out));
    (app, tx, task)
}

fn messages(m: &ViewModel, session: &SessionId) -> Vec<String> {
    m.sessions[session]
        .timeline
        .iter()
        .filter_map(|e| match e {
            Entry::Message(msg) => Some(msg.message.text.clone()),
            Entry::Note(_) | Entry::Failure(_) => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_window_shows_people_already_waiting_and_admits_them() {
    let mut t = TestHost::start().await;
    let (link, minted) = t.mint(|p| p.admission_required = true).await;
    let mut dan = remote(&link, "Dan").await;
    // The host connection saw the live `lobby` event before the window opened; drop it so the
    // window can only learn of Dan by asking (`list_lobby`).
    let seen = async {
        while let Some(ev) = t.events.recv().await {
            if matches!(&ev, ClientEvent::Event { frame, .. } if matches!(frame.body, Event::Lobby(_))) {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, seen).await.expect("the host saw Dan arrive");

    let (mut app, tx, task) = host_window(&mut t);
    until(&mut app, "Dan is listed in the lobby", |m| m.lobby.contains_key(&dan.me)).await;
    let waiting = &app.model.lobby[&dan.me];
    assert_eq!((waiting.display_name.as_str(), &waiting.share_id), ("Dan", &minted.share.share_id));
    act(&tx, Action::Call(Method::Admit(ParticipantRef { participant_id: dan.me.clone() })));
    dan.expect("Dan is admitted", |f| matches!(&f.body, Event::Admission(a) if a.admission == Admission::Admitted))
        .await;
    until(&mut app, "the live lobby event removes Dan", |m| m.lobby.is_empty()).await;

    drop((tx, app));
    tokio::time::timeout(WAIT, task).await.expect("the backend stops").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_window_fork_switches_to_the_copy_and_clear_refetches_an_empty_chat() {
    let mut t = TestHost::start().await;
    let (mut app, tx, task) = host_window(&mut t);
    let session = t.session.clone();
    until(&mut app, "the session is loaded", |m| m.sessions.get(&session).is_some_and(|s| s.loaded)).await;
    act(
        &tx,
        Action::Call(Method::SendMessage(SendMessageParams {
            session_id: session.clone(),
            text: "keep this".into(),
            client_msg_id: "h-1".into(),
        })),
    );
    until(&mut app, "the agent answered", |m| {
        messages(m, &session).len() == 2 && m.sessions[&session].holder().is_none()
    })
    .await;

    act(&tx, Action::Call(Method::ForkSession(ForkSessionParams { session_id: session.clone(), title: None })));
    until(&mut app, "the window shows the loaded fork", |m| {
        m.current.as_ref().is_some_and(|c| c != &session && m.sessions[c].loaded)
    })
    .await;
    let fork = app.model.current.clone().unwrap();
    assert_eq!(messages(&app.model, &fork), messages(&app.model, &session), "the fork copies the chat");
    assert!(app.model.sessions[&fork].info.as_ref().unwrap().title.ends_with("(fork)"));

    act(&tx, Action::Call(Method::ClearSession(SessionRef { session_id: session.clone() })));
    // history_replaced empties and unloads the session; only the refetched snapshot loads it again.
    until(&mut app, "the cleared session is refetched without messages", |m| {
        m.sessions[&session].loaded && messages(m, &session).is_empty()
    })
    .await;
    assert_eq!(messages(&app.model, &fork).len(), 2, "the fork keeps its copy");

    drop((tx, app));
    tokio::time::timeout(WAIT, task).await.expect("the backend stops").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_window_adds_a_workspace_and_reads_files_named_by_plans() {
    let mut t = TestHost::start().await;
    let (mut app, tx, task) = host_window(&mut t);
    let session = t.session.clone();
    until(&mut app, "the session is loaded", |m| m.sessions.get(&session).is_some_and(|s| s.loaded)).await;

    // A workspace file, and one the host must refuse.
    std::fs::write(t.dir.join("ws-alpha").join("notes.txt"), "hello notes\n").unwrap();
    let read = |path: &str| {
        Action::Call(Method::ReadWorkspaceFile(ReadFileParams { session_id: session.clone(), path: path.into() }))
    };
    act(&tx, read("notes.txt"));
    until(&mut app, "the file is shown", |m| {
        m.file_view.as_ref().is_some_and(|v| v.result.as_ref().is_ok_and(|f| f.content == "hello notes\n"))
    })
    .await;
    act(&tx, read("../roundtable.db"));
    until(&mut app, "the refusal is shown", |m| {
        m.file_view.as_ref().is_some_and(|v| v.result.as_ref().is_err_and(|e| e.starts_with("file_refused")))
    })
    .await;

    let dir = t.dir.join("ws-beta");
    std::fs::create_dir_all(&dir).unwrap();
    let params = AddWorkspaceParams { name: "beta".into(), dir: dir.display().to_string(), agent: None };
    act(&tx, Action::Call(Method::AddWorkspace(params)));
    until(&mut app, "the first session is offered", |m| m.added_workspace.as_ref().is_some_and(|w| w.name == "beta"))
        .await;
    let beta = app.model.added_workspace.clone().unwrap().id;
    assert!(app.model.workspaces.iter().any(|w| w.id == beta));
    let create = CreateSessionParams {
        workspace_id: beta.clone(),
        title: "first".into(),
        vote_deadline_ms: None,
        plan_first: None,
    };
    act(&tx, Action::Call(Method::CreateSession(create)));
    until(&mut app, "the new session is shown", |m| {
        m.current_session().and_then(|s| s.info.as_ref()).is_some_and(|i| i.workspace_id == beta && i.title == "first")
    })
    .await;

    drop((tx, app));
    tokio::time::timeout(WAIT, task).await.expect("the backend stops").unwrap();
}

/// The window's backend keeps the protocol's client rules (`ClientSession`, shared with
/// `roundtable join` and the scenario runner): fed by a scripted engine on the host's in-process
/// connection, it shows each event once and in order, rejoins from the last seq it has after a
/// gap, and starts a session afresh after `history_replaced`.
mod scripted_engine {
    use crossbeam_channel::{Receiver, Sender};
    use roundtable::engine::{FrameSink, Inbound};
    use roundtable::ids::{ConnId, SessionId};
    use roundtable::net::client::Client;
    use roundtable::ui::backend::{self, Outbox};
    use roundtable::ui::model::*;
    use serde_json::{json, Value};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// The engine's end of the host connection, on its own thread: answers the window's requests;
    /// each `join_session` is handed to the test, which says what the host sends before the answer
    /// (live broadcasts) and after it (the catch-up).
    struct Script {
        sink: Arc<dyn FrameSink>,
        joins: Receiver<Value>,
        around: Sender<(Vec<Value>, Vec<Value>)>,
        done: Receiver<()>,
        /// One message per `list_sessions` answered.
        listed: Receiver<()>,
        /// The title `list_sessions` answers with.
        title: Arc<Mutex<String>>,
    }

    impl Script {
        fn start(inbox: Receiver<Inbound>) -> Script {
            let Ok(Inbound::OpenedHost { sink, .. }) = inbox.recv_timeout(Duration::from_secs(10)) else {
                panic!("the host connection opens")
            };
            let (joins_tx, joins) = crossbeam_channel::unbounded();
            let (around, around_rx) = crossbeam_channel::unbounded::<(Vec<Value>, Vec<Value>)>();
            let (done_tx, done) = crossbeam_channel::unbounded();
            let out = sink.clone();
            let (counter, listed) = crossbeam_channel::unbounded();
            let title = Arc::new(Mutex::new("Fix login".to_string()));
            let titled = title.clone();
            std::thread::spawn(move || {
                let send = |frame: Value| assert!(out.try_send(&Arc::from(frame.to_string())));
                while let Ok(inbound) = inbox.recv() {
                    let Inbound::Frame { text, .. } = inbound else { continue };
                    let req: Value = serde_json::from_str(&text).expect("a request");
                    let id = req["id"].clone();
                    let result = match req["method"].as_str().expect("a method") {
                        "join_session" => {
                            let since = &req["params"]["since_seq"];
                            let _ = joins_tx.send(req["params"].clone());
                            let (before, after) = around_rx.recv().expect("the test answers");
                            before.into_iter().for_each(&send);
                            let catch_up = if since.is_null() { "snapshot" } else { "events" };
                            send(json!({"id": id, "result": {"session": session(2), "roster": [], "you": "host",
                                "catch_up": catch_up}}));
                            after.into_iter().for_each(&send);
                            let _ = done_tx.send(());
                            continue;
                        }
                        "list_sessions" => {
                            let mut s = session(2);
                            s["title"] = json!(titled.lock().unwrap().clone());
                            let _ = counter.send(());
                            json!({"sessions": [s]})
                        }
                        "list_workspaces" => json!({"workspaces": []}),
                        "list_shares" => json!({"shares": []}),
                        "list_lobby" => json!({"waiting": []}),
                        other => {
                            send(json!({"id": id, "error": {"code": "not_found", "message": other}}));
                            continue;
                        }
                    };
                    send(json!({"id": id, "result": result}));
                }
            });
            Script { sink, joins, around, done, listed, title }
        }

        fn send(&self, frame: Value) {
            assert!(self.sink.try_send(&Arc::from(frame.to_string())));
        }

        /// The next `join_session`'s params, once `before`, its answer and `after` are sent.
        fn join(&self, before: &[Value], after: &[Value]) -> Value {
            let params = self.joins.recv_timeout(Duration::from_secs(10)).expect("a join_session");
            self.around.send((before.to_vec(), after.to_vec())).expect("the script runs");
            self.done.recv_timeout(Duration::from_secs(10)).expect("the script answered");
            params
        }
    }

    fn session(last_seq: u64) -> Value {
        json!({"id": "s1", "workspace_id": "w1", "title": "Fix login", "status": "idle", "turn_holder": null,
            "participant_count": 1, "agent": "demo", "last_seq": last_seq})
    }

    fn message(seq: u64) -> Value {
        json!({"event": "message", "session_id": "s1", "seq": seq,
            "payload": {"message_id": format!("m{seq}"), "author_id": "p2", "author_name": "Bob", "text": format!("hi {seq}")}})
    }

    fn texts(updates: &std::sync::mpsc::Receiver<Update>, model: &mut ViewModel) -> Vec<String> {
        while let Ok(u) = updates.try_recv() {
            model.apply(u);
        }
        let s1 = SessionId::from("s1");
        model.sessions.get(&s1).map_or(Vec::new(), |s| {
            s.timeline
                .iter()
                .filter_map(|e| match e {
                    Entry::Message(m) => Some(m.message.text.clone()),
                    _ => None,
                })
                .collect()
        })
    }

    /// Waits until the model shows `want` (the backend runs on other tasks).
    async fn shows(updates: &std::sync::mpsc::Receiver<Update>, model: &mut ViewModel, want: &[&str]) {
        for _ in 0..500 {
            if texts(updates, model) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(texts(updates, model), want);
    }

    /// The periodic refresh wakes the window only when a list changed (issue 26: the idle
    /// window redrew every 5 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_window_is_not_woken_by_a_refresh_that_finds_nothing_new() {
        let (engine, inbox) = crossbeam_channel::unbounded();
        let (client, events) = Client::in_process(engine, ConnId(1));
        let script = Script::start(inbox);
        let (actions_tx, actions) = tokio::sync::mpsc::unbounded_channel();
        let (updates_tx, updates) = std::sync::mpsc::channel();
        let wakes = Arc::new(AtomicUsize::new(0));
        let woken = wakes.clone();
        let out = Outbox::new(updates_tx, Arc::new(move || _ = woken.fetch_add(1, Ordering::SeqCst)));
        let every = Duration::from_millis(20);
        tokio::spawn(backend::run_host_every(client, events, actions, out, every));
        let snapshot = json!({"event": "snapshot", "session_id": "s1", "payload": {"session": session(2), "roster": [],
            "messages": [], "votes": [], "last_seq": 2}});
        script.join(&[], &[snapshot]);
        // Waits for the script's answers (not for a timer): `n` more refreshes answered.
        let refreshed = |n: usize| {
            for _ in 0..n {
                script.listed.recv_timeout(Duration::from_secs(20)).expect("a refresh");
            }
        };
        refreshed(2);
        let mut model = ViewModel::new(true);
        while let Ok(u) = updates.try_recv() {
            model.apply(u);
        }
        let before = wakes.load(Ordering::SeqCst);
        refreshed(5);
        // The last of those answers may still be on its way to the UI: one more round settles it.
        refreshed(1);
        let lists: Vec<Update> = updates.try_iter().collect();
        assert!(lists.is_empty(), "nothing new, nothing sent: {lists:?}");
        assert_eq!(wakes.load(Ordering::SeqCst), before, "and the window was not woken");
        // A change is sent at the next refresh.
        *script.title.lock().unwrap() = "Fix logout".into();
        loop {
            let update = updates.recv_timeout(Duration::from_secs(20)).expect("the renamed session reaches the window");
            if matches!(&update, Update::Sessions(s) if s[0].title == "Fix logout") {
                break;
            }
        }
        drop(actions_tx);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_window_shows_each_event_once_and_rejoins_from_its_last_seq_after_a_gap() {
        let (engine, inbox) = crossbeam_channel::unbounded();
        let (client, events) = Client::in_process(engine, ConnId(1));
        let script = Script::start(inbox);
        let (actions_tx, actions) = tokio::sync::mpsc::unbounded_channel();
        let (updates_tx, updates) = std::sync::mpsc::channel();
        tokio::spawn(backend::run_host(client, events, actions, Outbox::new(updates_tx, Arc::new(|| {}))));
        let mut model = ViewModel::new(true);

        // The host window follows every session: a fresh join, answered by a snapshot.
        let snapshot = json!({"event": "snapshot", "session_id": "s1", "payload": {"session": session(2), "roster": [],
            "messages": [], "votes": [], "last_seq": 2}});
        assert_eq!(script.join(&[message(2)], &[snapshot]), json!({"session_id": "s1"}));
        script.send(message(2)); // already in the snapshot
        script.send(message(3));
        script.send(message(3)); // a duplicate
        shows(&updates, &mut model, &["hi 3"]).await;

        // 4 and 5 go missing: the backend rejoins from 3 and shows nothing past the gap meanwhile;
        // 7, broadcast before the join's answer, is covered by the replay that follows it.
        script.send(message(6));
        let replay: Vec<Value> = (4..=7).map(message).collect();
        assert_eq!(script.join(&[message(7)], &replay), json!({"session_id": "s1", "since_seq": 3}));
        shows(&updates, &mut model, &["hi 3", "hi 4", "hi 5", "hi 6", "hi 7"]).await;

        // The history was cleared: the session starts afresh from a snapshot.
        script
            .send(json!({"event": "history_replaced", "session_id": "s1", "seq": 8, "payload": {"reason": "cleared"}}));
        assert_eq!(script.join(&[], &[]), json!({"session_id": "s1"}));
        drop(actions_tx);
    }
}
