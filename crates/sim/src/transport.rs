//! The runner's view of a transport, and the in-memory one.
//!
//! A [`Transport`] carries what the runner's modelled clients send into one engine's inbox and
//! hands back, per connection, a [`ClientEnd`]: the frames that client received and whether the
//! host closed it. Two implementations:
//!
//! - [`MemoryTransport`] (here): every connection is a [`MemorySink`] that records each frame
//!   the engine delivers, stamped with the virtual tick and time of delivery; client frames go
//!   straight into the engine's channel.
//! - [`super::ws::WsTransport`]: every remote connection is a real TLS WebSocket on loopback,
//!   accepted by the production server (`net::server`).
//!
//! Both keep the inbound order the runner issued and make every delivered frame visible before
//! the runner reads, so a scenario gives the same per-participant event sequence on either.
//!
//! A sink can be made *slow* (it refuses frames, optionally after accepting a few more), which
//! is how scenarios exercise the engine's bounded outbox, coalescing and `resync_required`.

use crate::engine::{Frame, FrameSink, Inbound};
use crate::ids::ConnId;
use crate::net::server::ConnIds;
use crossbeam_channel::Sender;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Which transport carries a scenario's frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportKind {
    /// In-process: sinks record frames, client frames go straight into the engine's channel.
    #[default]
    Memory,
    /// Real TLS WebSockets on loopback, through the production server.
    Ws,
}

/// The client end of one connection, as the runner reads it.
pub trait ClientEnd: Send + Sync {
    /// Frames this client received, from index `from` on, in order.
    fn delivered_since(&self, from: usize) -> Vec<Delivered>;
    /// Why the host closed the connection, once the client has seen it closed.
    fn closed_by_host(&self) -> Option<String>;
    /// A slow consumer: accept `capacity` more frames, then refuse every frame until
    /// [`ClientEnd::release`].
    fn set_slow(&self, capacity: usize);
    /// Accept frames again.
    fn release(&self);
}

/// Carries a scenario's connections between the runner's modelled clients and one engine.
///
/// Inbound order is the order of the calls: whatever a transport does underneath, the engine
/// must see `Opened`, frames, `Closed` and local input exactly in call order, all of it before
/// the next tick ([`Transport::before_tick`]), and every frame the engine delivered during a
/// tick must be readable from its [`ClientEnd`] once [`Transport::after_tick`] returns.
pub trait Transport {
    /// Connects the transport to a (new) engine's inbox. At a host restart everything of the
    /// previous engine (connections, input not yet delivered) is dropped, as in a crash.
    fn attach(&mut self, engine: Sender<Inbound>) -> Result<(), String>;
    /// Opens the host's own in-process connection (authenticated as `host`).
    fn open_host(&mut self) -> (ConnId, Arc<dyn ClientEnd>);
    /// Opens a remote connection from source IP `ip`. Returns its id, the source address the
    /// host sees (`ip:port`) and its client end. Failures surface at the next tick.
    fn open(&mut self, ip: &str) -> (ConnId, String, Arc<dyn ClientEnd>);
    /// The client sends a text frame on `conn`.
    fn send_frame(&mut self, conn: ConnId, text: String);
    /// The client goes away: the socket is dropped and the host learns it is closed.
    fn drop_client(&mut self, conn: ConnId);
    /// The client saw the host close `conn`; the transport reports the socket closed.
    fn report_closed(&mut self, conn: ConnId);
    /// Input from outside the network (an injected agent event).
    fn send_local(&mut self, inbound: Inbound);
    /// Called before each tick: returns once everything sent so far is in the engine's inbox.
    fn before_tick(&mut self) -> Result<(), String>;
    /// Called after each tick: returns once every frame the engine accepted for a connection
    /// can be read from its client end.
    fn after_tick(&mut self) -> Result<(), String>;
}

/// Builds the transport of a run.
pub fn new_transport(
    kind: TransportKind,
    ids: Arc<ConnIds>,
    clock: Arc<VirtualTime>,
) -> Result<Box<dyn Transport>, String> {
    Ok(match kind {
        TransportKind::Memory => Box::new(MemoryTransport::new(ids, clock)),
        TransportKind::Ws => Box::new(super::ws::WsTransport::new(ids, clock)?),
    })
}

/// The runner's virtual clock, shared with the sinks so deliveries are stamped.
#[derive(Debug, Default)]
pub struct VirtualTime {
    tick: AtomicU64,
    now: AtomicU64,
}

impl VirtualTime {
    /// Sets the tick number and time of the tick about to run.
    pub fn set(&self, tick: u64, now: u64) {
        self.tick.store(tick, Ordering::SeqCst);
        self.now.store(now, Ordering::SeqCst);
    }

    /// The current (tick, time).
    pub fn get(&self) -> (u64, u64) {
        (self.tick.load(Ordering::SeqCst), self.now.load(Ordering::SeqCst))
    }
}

/// One frame handed to a connection, with the virtual tick and time it arrived.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub tick: u64,
    pub time: u64,
    pub frame: Frame,
}

#[derive(Debug, Default)]
struct SinkState {
    delivered: Vec<Delivered>,
    /// `Some(n)`: a slow consumer that accepts `n` more frames, then refuses until released.
    budget: Option<usize>,
    /// Closed by the engine, with the reason.
    closed_by_host: Option<String>,
    /// The client side went away: frames are dropped (as on a dead socket).
    dropped: bool,
    /// Frames refused while slow (for reports).
    refused: u64,
}

/// A connection's in-memory sink.
#[derive(Debug)]
pub struct MemorySink {
    pub conn: ConnId,
    clock: Arc<VirtualTime>,
    state: Mutex<SinkState>,
}

impl MemorySink {
    pub fn new(conn: ConnId, clock: Arc<VirtualTime>) -> Arc<MemorySink> {
        Arc::new(MemorySink { conn, clock, state: Mutex::new(SinkState::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A poisoned lock only means a panic elsewhere; the recorded frames are still valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frames delivered from index `from` on.
    pub fn delivered_since(&self, from: usize) -> Vec<Delivered> {
        self.lock().delivered.get(from..).map(<[Delivered]>::to_vec).unwrap_or_default()
    }

    /// Makes the sink slow: accept `capacity` more frames, then refuse every frame.
    pub fn set_slow(&self, capacity: usize) {
        self.lock().budget = Some(capacity);
    }

    /// Accepts frames again.
    pub fn release(&self) {
        self.lock().budget = None;
    }

    /// The client went away: further frames are dropped.
    pub fn drop_client(&self) {
        self.lock().dropped = true;
    }

    /// Why the engine closed this connection, if it did.
    pub fn closed_by_host(&self) -> Option<String> {
        self.lock().closed_by_host.clone()
    }

    /// Frames refused while slow.
    pub fn refused(&self) -> u64 {
        self.lock().refused
    }
}

impl ClientEnd for MemorySink {
    fn delivered_since(&self, from: usize) -> Vec<Delivered> {
        MemorySink::delivered_since(self, from)
    }

    fn closed_by_host(&self) -> Option<String> {
        MemorySink::closed_by_host(self)
    }

    fn set_slow(&self, capacity: usize) {
        MemorySink::set_slow(self, capacity)
    }

    fn release(&self) {
        MemorySink::release(self)
    }
}

impl FrameSink for MemorySink {
    fn try_send(&self, frame: &Frame) -> bool {
        let (tick, time) = self.clock.get();
        let mut s = self.lock();
        if s.dropped || s.closed_by_host.is_some() {
            return true;
        }
        match s.budget {
            Some(0) => {
                s.refused += 1;
                return false;
            }
            Some(n) => s.budget = Some(n - 1),
            None => {}
        }
        s.delivered.push(Delivered { tick, time, frame: frame.clone() });
        true
    }

    fn close(&self, reason: &str) {
        let mut s = self.lock();
        if s.closed_by_host.is_none() {
            s.closed_by_host = Some(reason.to_string());
        }
    }
}

/// The in-memory transport: every connection is a [`MemorySink`]; client frames go straight
/// into the engine's channel.
pub struct MemoryTransport {
    ids: Arc<ConnIds>,
    clock: Arc<VirtualTime>,
    engine: Option<Sender<Inbound>>,
    sinks: BTreeMap<ConnId, Arc<MemorySink>>,
}

impl MemoryTransport {
    pub fn new(ids: Arc<ConnIds>, clock: Arc<VirtualTime>) -> MemoryTransport {
        MemoryTransport { ids, clock, engine: None, sinks: BTreeMap::new() }
    }

    fn send(&self, inbound: Inbound) {
        if let Some(tx) = &self.engine {
            // The engine owns the receiver for as long as the runner holds the engine.
            let _ = tx.send(inbound);
        }
    }

    fn new_sink(&mut self) -> (ConnId, Arc<MemorySink>) {
        let id = self.ids.next();
        let sink = MemorySink::new(id, self.clock.clone());
        self.sinks.insert(id, sink.clone());
        (id, sink)
    }
}

impl Transport for MemoryTransport {
    fn attach(&mut self, engine: Sender<Inbound>) -> Result<(), String> {
        for sink in std::mem::take(&mut self.sinks).into_values() {
            sink.drop_client();
        }
        self.engine = Some(engine);
        Ok(())
    }

    fn open_host(&mut self) -> (ConnId, Arc<dyn ClientEnd>) {
        let (conn, sink) = self.new_sink();
        self.send(Inbound::OpenedHost { conn, sink: sink.clone() });
        (conn, sink)
    }

    fn open(&mut self, ip: &str) -> (ConnId, String, Arc<dyn ClientEnd>) {
        let (conn, sink) = self.new_sink();
        let addr = format!("{ip}:{}", 40_000 + conn.0);
        self.send(Inbound::Opened { conn, addr: addr.clone(), sink: sink.clone() });
        (conn, addr, sink)
    }

    fn send_frame(&mut self, conn: ConnId, text: String) {
        self.send(Inbound::Frame { conn, text });
    }

    fn drop_client(&mut self, conn: ConnId) {
        if let Some(sink) = self.sinks.get(&conn) {
            sink.drop_client();
        }
        self.send(Inbound::Closed { conn });
    }

    fn report_closed(&mut self, conn: ConnId) {
        self.send(Inbound::Closed { conn });
    }

    fn send_local(&mut self, inbound: Inbound) {
        self.send(inbound);
    }

    fn before_tick(&mut self) -> Result<(), String> {
        Ok(())
    }

    fn after_tick(&mut self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_sink_refuses_after_its_budget_until_released() {
        let clock = Arc::new(VirtualTime::default());
        let sink = MemorySink::new(ConnId(1), clock.clone());
        let f: Frame = Arc::from("x");
        sink.set_slow(1);
        assert!(sink.try_send(&f));
        assert!(!sink.try_send(&f));
        sink.release();
        clock.set(3, 30);
        assert!(sink.try_send(&f));
        let got = sink.delivered_since(0);
        assert_eq!(got.len(), 2);
        assert_eq!((got[1].tick, got[1].time), (3, 30));
        assert_eq!(sink.refused(), 1);
    }

    #[test]
    fn frames_after_close_are_not_recorded() {
        let sink = MemorySink::new(ConnId(1), Arc::new(VirtualTime::default()));
        sink.close("kicked");
        assert!(sink.try_send(&Arc::from("x")));
        assert!(sink.delivered_since(0).is_empty());
        assert_eq!(sink.closed_by_host().as_deref(), Some("kicked"));
    }
}
