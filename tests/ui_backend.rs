//! The window's backend keeps the protocol's client rules (`ClientSession`, shared with
//! `roundtable join` and the scenario runner): fed by a scripted engine on the host's in-process
//! connection, it shows each event once and in order, rejoins from the last seq it has after a
//! gap, and starts a session afresh after `history_replaced`.

use crossbeam_channel::{Receiver, Sender};
use roundtable::engine::{FrameSink, Inbound};
use roundtable::ids::{ConnId, SessionId};
use roundtable::net::client::Client;
use roundtable::ui::backend::{self, Outbox};
use roundtable::ui::model::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The engine's end of the host connection, on its own thread: answers the window's requests;
/// each `join_session` is handed to the test, which says what the host sends before the answer
/// (live broadcasts) and after it (the catch-up).
struct Script {
    sink: Arc<dyn FrameSink>,
    joins: Receiver<Value>,
    around: Sender<(Vec<Value>, Vec<Value>)>,
    done: Receiver<()>,
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
                    "list_sessions" => json!({"sessions": [session(2)]}),
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
        Script { sink, joins, around, done }
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
    script.send(json!({"event": "history_replaced", "session_id": "s1", "seq": 8, "payload": {"reason": "cleared"}}));
    assert_eq!(script.join(&[], &[]), json!({"session_id": "s1"}));
    drop(actions_tx);
}
