//! Storage faults in a run: the `storage_fault` / `storage_heal` steps, how well-behaved clients
//! answer `storage_unavailable`, and what the runner checks of docs/RELIABILITY.md's "Storage
//! faults" on what clients received and what the store holds.
//!
//! The run's store sits behind a [`FaultyStore`](crate::store::fault::FaultyStore); a
//! `storage_fault` step turns its switch on for `ms` of engine time (or until `storage_heal`),
//! and the switch is set before every tick, so a fault starts and ends at tick boundaries of the
//! virtual clock. The reference model predicts the gate (`storage_unavailable`), when the store
//! fails and heals, and which replies are held until stored ([`super::model`]); the checks here
//! hold on every run, with or without the model:
//!
//! - **Nothing delivered before it is stored.** A seq'd event reaches a client only once a tick
//!   ended with the store working after it was made: its seq is at most what the store holds.
//! - **Nothing refused is kept.** A `send_message` / `send_chat` refused with
//!   `storage_unavailable` (and not sent again with the same `client_msg_id`) is never stored
//!   and never delivered to anyone.
//! - **Everyone is told.** Every open connection that reads gets `storage` with
//!   `available: false` in the tick the store starts failing and `available: true` in the tick
//!   it works again; a connection's `storage` events alternate; none is left believing the store
//!   fails once it works.
//!
//! While the store fails, agent deltas are dropped by design: the check that a turn's deltas add
//! up to a prefix of the agent's reply skips turns that ran during a failing tick.
//!
//! A well-behaved client sends its own requests — a join, the authentication of a reconnect —
//! again `retry_after_ms` after `storage_unavailable`, as `roundtable join` does; requests of
//! steps are the scenario's to repeat.

use super::{Pending, Purpose, Runner};
use crate::engine::components::EventLog;
use crate::engine::components::Session;
use crate::engine::systems::persist_tick::StorageHealth;
use crate::format::Step;
use crate::model;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A message by its idempotency key: (session, author id, client_msg_id).
type MessageKey = (String, String, String);

/// What a run knows and remembers about storage faults.
#[derive(Default)]
pub(super) struct StorageFaults {
    /// The switch of the store under the engine (kept across host restarts with the store).
    pub switch: Arc<AtomicBool>,
    /// The store fails at engine times before this (`u64::MAX`: until a `storage_heal`).
    until: Option<u64>,
    /// The engine's store failed after the last tick.
    pub failing: bool,
    /// Per session: the last seq the store holds.
    committed: BTreeMap<String, u64>,
    /// Requests a client sends again once their time comes, in the order they were refused.
    retries: Vec<Retry>,
    /// Messages refused as `storage_unavailable` and not sent again since → their text.
    refused: BTreeMap<MessageKey, String>,
    /// The latest send of each message key: the sending client's request order.
    last_sent: BTreeMap<MessageKey, u64>,
    /// Message keys sent more than once (`retry-me`): an earlier send may be stored legitimately.
    reused: BTreeSet<MessageKey>,
    /// The ticks whose commit failed (the store worked before them).
    failed_ticks: BTreeSet<u64>,
}

/// A request a client sends again after `storage_unavailable`.
struct Retry {
    due: u64,
    name: String,
    index: usize,
    p: Pending,
}

/// When a step's effect ends: a storage fault's window and the retry that heals the store after
/// it count, so that a run settles after the store works again.
pub(super) fn step_end(step: &Step) -> u64 {
    match (step.action.as_str(), step.params.get("ms").and_then(toml::Value::as_integer)) {
        ("storage_fault", Some(ms)) => step.at + ms.max(0) as u64 + model::STORAGE_RETRY_MS,
        _ => step.at,
    }
}

impl StorageFaults {
    /// A `storage_fault` (for `ms`, or until healed) or `storage_heal` step at `now`.
    pub fn step(&mut self, action: &str, ms: Option<u64>, now: u64) {
        self.until = match action {
            "storage_fault" => Some(ms.map_or(u64::MAX, |ms| now.saturating_add(ms))),
            _ => None,
        };
    }

    /// Sets the store's switch for a tick at `now`; returns whether the store fails in it.
    pub fn switch_for(&mut self, now: u64) -> bool {
        let on = self.until.is_some_and(|until| now < until);
        self.switch.store(on, Ordering::SeqCst);
        on
    }
}

impl Runner<'_> {
    /// After an engine tick: whether the store fails now, and what it holds when it works.
    /// Returns whether it failed before the tick.
    pub(super) fn storage_after_tick(&mut self) -> bool {
        let was = self.storage.failing;
        let world = &mut self.engine.as_mut().expect("engine running").world;
        let failing = world.resource::<StorageHealth>().is_failing();
        if !failing {
            let mut q = world.query::<(&Session, &EventLog)>();
            for (s, log) in q.iter(world) {
                self.storage.committed.insert(s.id.to_string(), log.last_seq());
            }
        }
        self.storage.failing = failing;
        if failing && !was {
            self.storage.failed_ticks.insert(self.tick);
        }
        was
    }

    /// A storage check failed (counted like a client-side check).
    fn storage_violation(&mut self, name: &str, what: String) {
        let msg = format!("storage check: {what}");
        self.client_violations.push(format!("[tick {}, t={}ms, {name}] {msg}", self.tick, self.now));
        self.fail(Some(name), msg);
    }

    /// A seq'd event a client received: the store must hold it, and it must not be a message
    /// refused as not kept.
    pub(super) fn check_seq_is_stored(
        &mut self,
        name: &str,
        index: usize,
        session: &str,
        seq: u64,
        event: &str,
        payload: &Value,
    ) {
        let conn = self.clients[name].conns[index].id;
        let stored = self.storage.committed.get(session).copied().unwrap_or(0);
        if seq > stored {
            let what = format!(
                "{name} on {conn} received `{event}` {session}#{seq}, but the store holds {session} only up to seq {stored}"
            );
            self.storage_violation(name, what);
        }
        if event != "message" {
            return;
        }
        let field = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let key = (session.to_string(), field("author_id"), field("client_msg_id"));
        if let Some(text) = self.storage.refused.get(&key) {
            let what = format!(
                "{name} on {conn} received message {text:?} ({}, client_msg_id {}), which was refused as storage_unavailable",
                key.1, key.2
            );
            self.storage_violation(name, what);
        }
    }

    /// A `storage` event: `available` alternates on a connection.
    pub(super) fn on_storage_event(&mut self, name: &str, index: usize, payload: &Value) {
        let available = payload.get("available").and_then(Value::as_bool).unwrap_or(true);
        let tick = self.tick;
        let cn = &mut self.clients.get_mut(name).expect("client").conns[index];
        let (conn, before) = (cn.id, cn.storage.replace((available, tick)));
        if before.is_some_and(|(was, _)| was == available) {
            let what = format!("{name} on {conn} was told `storage` available: {available} twice in a row");
            self.storage_violation(name, what);
        }
    }

    /// After a tick's frames were read: when the store started failing or works again in this
    /// tick, every open connection that reads was told in this tick. (And the preview check is
    /// off for the turns running while it fails.)
    pub(super) fn check_storage_notices(&mut self, was_failing: bool) {
        let failing = self.storage.failing;
        if failing || was_failing {
            // A failing tick's agent deltas are dropped by design (the agent's message is the
            // authoritative text), and a turn start held back meanwhile arrives with the heal:
            // no connection's preview of a turn running now can be checked.
            for cn in self.clients.values_mut().flat_map(|c| c.conns.iter_mut()) {
                cn.previews.values_mut().for_each(|p| *p = None);
            }
        }
        if failing == was_failing {
            return;
        }
        let tick = self.tick;
        let mut missed = Vec::new();
        for (name, c) in &self.clients {
            for cn in c.conns.iter().filter(|cn| cn.open && !cn.slow) {
                if cn.storage != Some((!failing, tick)) {
                    missed.push((name.clone(), cn.id));
                }
            }
        }
        for (name, conn) in missed {
            let what = if failing { "fails" } else { "works again" };
            self.storage_violation(&name, format!("{name} on {conn} was not told that the store {what}"));
        }
    }

    /// Remembers a message sent (its key's latest send), which lifts an earlier refusal: the
    /// client sent it again, so it may be stored now.
    pub(super) fn note_message_sent(&mut self, name: &str, p: &Pending, order: u64) {
        if let Some(key) = self.message_key(name, p) {
            self.storage.refused.remove(&key);
            if self.storage.last_sent.insert(key.clone(), order).is_some() {
                self.storage.reused.insert(key);
            }
        }
    }

    fn message_key(&self, name: &str, p: &Pending) -> Option<MessageKey> {
        if p.method != "send_message" && p.method != "send_chat" {
            return None;
        }
        let author = self.clients.get(name)?.pid.clone()?;
        let field = |k: &str| p.params.get(k).and_then(Value::as_str).map(str::to_string);
        Some((field("session_id")?, author, field("client_msg_id")?))
    }

    /// A request refused with `storage_unavailable`: a refused message must never be kept, and
    /// a client's own request is sent again after `retry_after_ms`.
    pub(super) fn on_storage_refusal(&mut self, name: &str, index: usize, p: &Pending, json: &Value) {
        if let Some(key) = self.message_key(name, p) {
            // Unless the client sent it again since (a late answer on a slow connection).
            if self.storage.last_sent.get(&key) == Some(&p.order) && !self.storage.reused.contains(&key) {
                let text = p.params.get("text").and_then(Value::as_str).unwrap_or_default().to_string();
                self.storage.refused.insert(key, text);
            }
        }
        let own = matches!(p.purpose, Purpose::Auto) || p.rejoin || p.setup;
        if own && (p.method == "join_session" || p.method == "authenticate") {
            let wait = json.pointer("/error/retry_after_ms").and_then(Value::as_u64).unwrap_or(model::STORAGE_RETRY_MS);
            let retry = Retry { due: self.now + wait, name: name.to_string(), index, p: p.clone() };
            self.storage.retries.push(retry);
        }
    }

    /// Sends the retries that are due, on their connection if it is still open.
    pub(super) fn send_due_retries(&mut self) {
        let now = self.now;
        let (due, later): (Vec<Retry>, Vec<Retry>) =
            std::mem::take(&mut self.storage.retries).into_iter().partition(|r| r.due <= now);
        self.storage.retries = later;
        for r in due {
            let open = self.clients[&r.name].conns.get(r.index).is_some_and(|cn| cn.open);
            if open {
                let params = r.p.params.clone();
                let method = r.p.method.clone();
                self.request(&r.name, Some(r.index), &method, params, r.p);
            }
        }
    }

    /// At the end of a run: nothing refused was stored; once the store works, no connection still
    /// believes it fails and every reply held for the store arrived.
    pub(super) fn check_storage_at_end(&mut self) {
        let refused = std::mem::take(&mut self.storage.refused);
        for ((session, author, cmid), text) in &refused {
            let rows = {
                let store = &mut self.engine().world.resource_mut::<crate::engine::StoreRes>();
                store.get().messages_before(&crate::ids::SessionId::from(session.as_str()), u64::MAX, usize::MAX)
            };
            let kept = rows.map(|(rows, _)| {
                rows.iter().any(|m| m.author_id == *author && m.client_msg_id.as_deref() == Some(cmid.as_str()))
            });
            if kept.unwrap_or(false) {
                let what = format!(
                    "message {text:?} ({session}, {author}, client_msg_id {cmid}) was refused as storage_unavailable but is stored"
                );
                self.storage_violation("host", what);
            }
        }
        self.storage.refused = refused;
        if self.storage.failing {
            return;
        }
        let mut late = Vec::new();
        for (name, c) in &self.clients {
            for cn in c.conns.iter().filter(|cn| cn.open && !cn.slow) {
                if cn.storage.is_some_and(|(available, _)| !available) {
                    late.push(format!("{name} on {} was told the store fails and never that it works again", cn.id));
                }
                let held = self
                    .model
                    .as_ref()
                    .map(|m| m.expected.values().filter(|p| p.conn == cn.id && p.held && p.code == "ok").count());
                if let Some(n) = held.filter(|&n| n > 0) {
                    late.push(format!(
                        "{name} on {}: {n} request(s) of the tick whose commit failed were never answered",
                        cn.id
                    ));
                }
            }
        }
        for what in late {
            let name = what.split(' ').next().unwrap_or("host").to_string();
            self.storage_violation(&name, what);
        }
    }
}
