//! A small in-memory harness for driving the engine in tests: connections whose sinks record
//! every frame, a virtual clock, and request helpers. Used by unit tests of the rules.

use crate::engine::{Engine, EngineConfig, Frame, FrameSink, Inbound};
use crate::ids::ConnId;
use crate::persist::{MemoryStore, Store};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Records frames; refuses them while `capacity` is exhausted (slow consumer).
#[derive(Default)]
pub struct RecordingSink {
    pub frames: Mutex<Vec<Value>>,
    pub raw: Mutex<VecDeque<Frame>>,
    /// `None` = unlimited; `Some(n)` = accepts at most n more frames.
    pub capacity: Mutex<Option<usize>>,
    pub closed: Mutex<Option<String>>,
}

impl FrameSink for RecordingSink {
    fn try_send(&self, frame: &Frame) -> bool {
        let mut cap = self.capacity.lock().unwrap();
        if let Some(c) = cap.as_mut() {
            if *c == 0 {
                return false;
            }
            *c -= 1;
        }
        self.frames.lock().unwrap().push(serde_json::from_str(frame).expect("engine frames are JSON"));
        self.raw.lock().unwrap().push_back(frame.clone());
        true
    }

    fn close(&self, reason: &str) {
        *self.closed.lock().unwrap() = Some(reason.to_string());
    }
}

/// An engine with a virtual clock and recorded connections.
pub struct Harness {
    pub engine: Engine,
    pub now: u64,
    pub sinks: BTreeMap<ConnId, Arc<RecordingSink>>,
    next_conn: u64,
    next_id: u64,
    /// Frames already returned by `take`, per connection.
    cursor: BTreeMap<ConnId, usize>,
}

/// The host's connection in every harness.
pub const HOST: ConnId = ConnId(0);

impl Harness {
    pub fn new(config: EngineConfig) -> Harness {
        Self::with_store(config, Box::new(MemoryStore::default()))
    }

    pub fn with_store(config: EngineConfig, store: Box<dyn Store>) -> Harness {
        let mut engine = Engine::new(EngineConfig { check_invariants: true, ..config }, store).expect("engine starts");
        crate::agent::install_builtin(&mut engine);
        engine.set_workspace_files(Box::new(crate::store::ConfinedFiles));
        // Like the host's driver, a restarted harness continues from the stored world's time.
        let now = engine.now().max(1_000);
        let mut h = Harness { engine, now, sinks: BTreeMap::new(), next_conn: 1, next_id: 1, cursor: BTreeMap::new() };
        let sink = Arc::new(RecordingSink::default());
        h.sinks.insert(HOST, sink.clone());
        h.engine.sender().send(Inbound::OpenedHost { conn: HOST, sink }).unwrap();
        h.tick();
        h
    }

    /// Runs one tick, advancing the clock by 10 ms.
    pub fn tick(&mut self) {
        self.now += 10;
        self.engine.tick(self.now);
    }

    /// Advances virtual time by `ms`, ticking every 10 ms.
    pub fn run(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.tick();
        }
    }

    /// Opens a remote connection from `addr`.
    pub fn open(&mut self, addr: &str) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let sink = Arc::new(RecordingSink::default());
        self.sinks.insert(conn, sink.clone());
        self.engine.sender().send(Inbound::Opened { conn, addr: addr.into(), sink }).unwrap();
        conn
    }

    pub fn close(&mut self, conn: ConnId) {
        self.engine.sender().send(Inbound::Closed { conn }).unwrap();
    }

    /// Sends a raw frame.
    pub fn send_raw(&mut self, conn: ConnId, text: &str) {
        self.engine.sender().send(Inbound::Frame { conn, text: text.into() }).unwrap();
    }

    /// Sends a request without waiting; returns its id.
    pub fn send(&mut self, conn: ConnId, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_raw(conn, &json!({"id": id, "method": method, "params": params}).to_string());
        id
    }

    /// Sends a request, ticks, and returns the response (`result` or `error` object).
    pub fn call(&mut self, conn: ConnId, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.send(conn, method, params);
        self.tick();
        self.response(conn, id).unwrap_or_else(|| panic!("no response to {method} on {conn}"))
    }

    /// The response to request `id`, if it arrived.
    pub fn response(&self, conn: ConnId, id: u64) -> Option<Result<Value, Value>> {
        let frames = self.sinks[&conn].frames.lock().unwrap();
        frames.iter().find(|f| f.get("id") == Some(&json!(id))).map(|f| match f.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(f["error"].clone()),
        })
    }

    /// Every frame delivered to `conn` so far.
    pub fn frames(&self, conn: ConnId) -> Vec<Value> {
        self.sinks[&conn].frames.lock().unwrap().clone()
    }

    /// Events (not responses) delivered to `conn` since the last `take`.
    pub fn take(&mut self, conn: ConnId) -> Vec<Value> {
        let frames = self.frames(conn);
        let start = self.cursor.get(&conn).copied().unwrap_or(0);
        self.cursor.insert(conn, frames.len());
        frames[start..].iter().filter(|f| f.get("event").is_some()).cloned().collect()
    }

    /// Events named `name` delivered to `conn` (all time).
    pub fn events_named(&self, conn: ConnId, name: &str) -> Vec<Value> {
        self.frames(conn).into_iter().filter(|f| f["event"] == name).collect()
    }

    /// Host call that must succeed.
    pub fn host(&mut self, method: &str, params: Value) -> Value {
        self.call(HOST, method, params).unwrap_or_else(|e| panic!("host {method} failed: {e}"))
    }

    /// Adds a workspace (this directory) and a session; returns (workspace id, session id).
    pub fn workspace_and_session(&mut self, dir: &str) -> (String, String) {
        let w = self.host("add_workspace", json!({"name": "ws", "dir": dir}));
        let wid = w["id"].as_str().unwrap().to_string();
        let s = self.host("create_session", json!({"workspace_id": wid, "title": "main"}));
        (wid, s["id"].as_str().unwrap().to_string())
    }

    /// Mints a share with extra settings; returns the token.
    pub fn mint(&mut self, workspaces: &[&str], extra: Value) -> String {
        let mut params = json!({"workspaces": workspaces});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                params[k] = v;
            }
        }
        self.host("mint_share", params)["token"].as_str().unwrap().to_string()
    }

    /// Opens a connection, authenticates and joins `session`. Returns (conn, participant id).
    pub fn join(&mut self, token: &str, name: &str, session: &str) -> (ConnId, String) {
        let addr = format!("10.0.0.{}:5000", self.next_conn);
        let conn = self.open(&addr);
        let auth =
            self.call(conn, "authenticate", json!({"token": token, "display_name": name})).expect("authenticates");
        let pid = auth["participant_id"].as_str().unwrap().to_string();
        self.call(conn, "join_session", json!({"session_id": session})).expect("joins");
        (conn, pid)
    }
}

pub use crate::store::fault::FaultyStore;
