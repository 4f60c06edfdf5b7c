//! The WebSocket transport of the scenario runner (`--transport ws`): the same scenario over
//! real sockets.
//!
//! ```text
//!  runner (virtual clock)          tokio runtime (2 workers)              engine (runner thread)
//!  ──────────────────────          ─────────────────────────              ──────────────────────
//!  client frame ──► client task ──TLS/WS──► net::server conn task ─┐
//!                                                                   ├─► relay ─(runner, in
//!  agent_fail, host conn ───────────────────────────────────────── queue ─ call order)─► inbox
//!  ClientEnd ◄── client task ◄──TLS/WS── net::server pump ◄── GateSink(WsSink) ◄── broadcast
//! ```
//!
//! Every remote connection is a real TCP connection on loopback, TLS with a freshly generated
//! self-signed identity pinned by fingerprint (the production client path,
//! [`crate::net::client::handshake`]), accepted by the production server
//! ([`crate::net::server::start_server`]). The host's own connection stays in process, as in a
//! real host.
//!
//! Determinism. The engine still runs on the scenario's virtual clock, ticked by the runner.
//! Three things make the per-participant event sequence identical to the memory transport:
//!
//! 1. **Inbound order.** The server does not write into the engine's inbox but into a relay
//!    channel. The runner queues every input in call order (a frame a client sent is queued as
//!    "the next frame from connection N") and, before each tick, forwards the queue in that
//!    order, waiting for each socket frame to come out of the server. So frames from different
//!    sockets reach the engine in the order the runner sent them, never in arrival order.
//! 2. **Connection ids.** Connections are opened one at a time (the runner waits for the server's
//!    `Opened` before doing anything else), and the server and the runner share one
//!    [`ConnIds`], so ids are the same as in memory.
//! 3. **Delivery.** After each tick, the runner waits until every frame the engine handed a
//!    connection's sink has been read by the client on the far end of the socket (and, when the
//!    host closed the connection, until the client has read the close frame).
//!
//! Source addresses. Each distinct participant address (`10.0.0.N` or `addr`) gets its own
//! loopback address (`127.0.0.2`, `127.0.0.3`, …) that its sockets bind to, so per-address
//! rate limits see the same grouping as in memory.
//!
//! Slow consumers. The `slow` fault is applied at the host end of the socket, by a
//! [`GateSink`] wrapped around the server's sink: it accepts `capacity` more frames and then
//! reports the connection's queue full, exactly like the memory sink. A client that merely stops
//! reading would let the kernel's socket buffers absorb a size- and timing-dependent number of
//! frames first, and the event sequence would no longer be reproducible. Real socket
//! backpressure is covered by `tests/net_transport.rs`. For the same reason the server's own
//! queue is made large enough never to fill: every client reads everything after each tick.

use super::transport::{ClientEnd, Delivered, MemorySink, Transport, VirtualTime};
use crate::engine::{Frame, FrameSink, Inbound};
use crate::ids::ConnId;
use crate::net::client::{handshake, WsStream};
use crate::net::link::Link;
use crate::net::server::{start_server, ConnIds, ServerHandle, ServerOptions};
use crate::net::tls;
use crossbeam_channel::{Receiver, Sender};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

/// The longest the runner waits for the sockets at any one point before the run fails.
const WAIT: Duration = Duration::from_secs(10);

/// Largest frame the scenario server reads: every `${pad.N}` frame reaches the engine (which
/// answers `frame_too_large` above 64 KiB), as in memory.
const MAX_MESSAGE_BYTES: usize = 32 << 20;

/// The server's per-connection queue: large enough never to fill, because every client reads
/// everything after each tick (the `slow` fault is modelled by [`GateSink`]).
const QUEUE_FRAMES: usize = 1 << 20;

/// One input, in the order the runner issued it.
enum Queued {
    /// Forwarded as is (host connection, agent events, `Opened` of a socket).
    Local(Inbound),
    /// The next frame the server relays from this socket; must have this text.
    Frame(ConnId, String),
    /// The server reporting this socket closed.
    Closed(ConnId),
}

/// What a remote connection's client task is told.
enum ClientCmd {
    Text(String),
    /// Drop the socket without a close frame (the client goes away).
    Drop,
}

/// One remote connection: its shared state and its client task's command channel.
struct Remote {
    end: Arc<WsEnd>,
    cmd: mpsc::UnboundedSender<ClientCmd>,
}

/// The scenario runner's WebSocket transport. See the module docs.
pub struct WsTransport {
    rt: Option<tokio::runtime::Runtime>,
    ids: Arc<ConnIds>,
    clock: Arc<VirtualTime>,
    options: ServerOptions,
    fingerprint: String,
    /// Where the current server listens (a restarted server binds the same port when it can).
    addr: Option<SocketAddr>,
    server: Option<ServerHandle>,
    engine: Option<Sender<Inbound>>,
    relay: Option<Receiver<Inbound>>,
    queue: VecDeque<Queued>,
    /// Items the server relayed that the queue has not reached yet, per connection, in order.
    stash: BTreeMap<ConnId, VecDeque<Inbound>>,
    remotes: BTreeMap<ConnId, Remote>,
    hosts: BTreeMap<ConnId, Arc<MemorySink>>,
    /// Participant address → the loopback address its sockets bind to.
    loopback: BTreeMap<String, Ipv4Addr>,
    /// The first transport failure; the run fails at the next tick.
    error: Option<String>,
}

impl WsTransport {
    /// A transport with its own tokio runtime and TLS identity. The server starts at
    /// [`Transport::attach`].
    pub fn new(ids: Arc<ConnIds>, clock: Arc<VirtualTime>) -> Result<WsTransport, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("scenario-ws")
            .enable_all()
            .build()
            .map_err(|e| format!("ws transport: cannot start a tokio runtime: {e}"))?;
        let (identity, _, _) =
            tls::generate().map_err(|e| format!("ws transport: cannot generate a certificate: {e}"))?;
        let tls = tls::server_config(&identity).map_err(|e| format!("ws transport: TLS setup: {e}"))?;
        let options = ServerOptions {
            tls: Some(tls),
            max_message_bytes: MAX_MESSAGE_BYTES,
            queue_frames: QUEUE_FRAMES,
            // The memory transport bounds frames only; so must this one, for the per-frame
            // transcripts of both to be equal (the engine's own outbox bounds bytes for both).
            queue_bytes: usize::MAX,
            ..ServerOptions::default()
        };
        Ok(WsTransport {
            rt: Some(rt),
            ids,
            clock,
            options,
            fingerprint: identity.fingerprint,
            addr: None,
            server: None,
            engine: None,
            relay: None,
            queue: VecDeque::new(),
            stash: BTreeMap::new(),
            remotes: BTreeMap::new(),
            hosts: BTreeMap::new(),
            loopback: BTreeMap::new(),
            error: None,
        })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime lives as long as the transport")
    }

    fn record(&mut self, error: String) {
        debug!("{error}");
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    fn check(&self) -> Result<(), String> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The loopback address standing in for participant address `ip`.
    fn loopback_for(&mut self, ip: &str) -> Ipv4Addr {
        let n = self.loopback.len() as u32 + 2;
        *self.loopback.entry(ip.to_string()).or_insert_with(|| Ipv4Addr::new(127, 0, (n >> 8) as u8, n as u8))
    }

    /// Stops the current server (dropping every socket, like a crash) and starts a new one that
    /// relays into a fresh channel.
    fn restart_server(&mut self) -> Result<(), String> {
        if let Some(server) = self.server.take() {
            self.rt().block_on(server.abort());
        }
        for (_, remote) in std::mem::take(&mut self.remotes) {
            remote.end.lock().dropped = true;
            let _ = remote.cmd.send(ClientCmd::Drop);
        }
        for (_, sink) in std::mem::take(&mut self.hosts) {
            sink.drop_client();
        }
        self.queue.clear();
        self.stash.clear();
        let want = self.addr.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = self.rt().block_on(async {
            match tokio::net::TcpListener::bind(want).await {
                Ok(l) => Ok(l),
                // The old port may still be held by the kernel: any free port will do.
                Err(_) => tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await,
            }
        });
        let listener = listener.map_err(|e| format!("ws transport: cannot listen on loopback: {e}"))?;
        let (relay_tx, relay_rx) = crossbeam_channel::unbounded();
        let server = {
            let _guard = self.rt().enter();
            start_server(listener, self.options.clone(), relay_tx, self.ids.clone())
                .map_err(|e| format!("ws transport: cannot start the server: {e}"))?
        };
        server.open();
        self.addr = Some(server.local_addr);
        self.server = Some(server);
        self.relay = Some(relay_rx);
        Ok(())
    }

    /// Connects a socket from `local`, runs the TLS and WebSocket handshakes, and waits for the
    /// server to announce the connection.
    fn connect(&mut self, local: Ipv4Addr) -> Result<(ConnId, String, Arc<dyn FrameSink>, WsStream), String> {
        let server = self.addr.ok_or("ws transport: no server running")?;
        let link = Link::new(server.ip().to_string(), server.port(), "", Some(self.fingerprint.clone()));
        let connecting = async {
            let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
            socket.bind(SocketAddr::from((local, 0))).map_err(|e| format!("cannot bind {local}: {e}"))?;
            let tcp = socket.connect(server).await.map_err(|e| format!("cannot connect to {server}: {e}"))?;
            handshake(tcp, &link).await.map_err(|e| e.to_string())
        };
        let ws = self
            .rt()
            .block_on(async { tokio::time::timeout(WAIT, connecting).await })
            .map_err(|_| format!("ws transport: connecting to {server} took more than {WAIT:?}"))?
            .map_err(|e| format!("ws transport: {e}"))?;
        let deadline = Instant::now() + WAIT;
        loop {
            match self.recv_relay(deadline)? {
                Inbound::Opened { conn, addr, sink } => return Ok((conn, addr, sink, ws)),
                other => self.stash_item(other),
            }
        }
    }

    fn recv_relay(&self, deadline: Instant) -> Result<Inbound, String> {
        let relay = self.relay.as_ref().ok_or("ws transport: no server running")?;
        relay.recv_deadline(deadline).map_err(|_| format!("ws transport: the server relayed nothing within {WAIT:?}"))
    }

    fn stash_item(&mut self, item: Inbound) {
        let conn = match &item {
            Inbound::Frame { conn, .. } | Inbound::Closed { conn } | Inbound::Opened { conn, .. } => *conn,
            other => {
                self.record(format!("ws transport: the server relayed unexpected input {other:?}"));
                return;
            }
        };
        self.stash.entry(conn).or_default().push_back(item);
    }

    /// The next item the server relayed from `conn`.
    fn take(&mut self, conn: ConnId, deadline: Instant) -> Result<Inbound, String> {
        loop {
            if let Some(item) = self.stash.get_mut(&conn).and_then(VecDeque::pop_front) {
                return Ok(item);
            }
            let item = self.recv_relay(deadline).map_err(|e| format!("{e} (waiting for input from {conn})"))?;
            self.stash_item(item);
        }
    }

    fn forward(&self, inbound: Inbound) {
        if let Some(tx) = &self.engine {
            // The engine owns the receiver for as long as the runner holds the engine.
            let _ = tx.send(inbound);
        }
    }

    fn dead_end(&mut self) -> (ConnId, String, Arc<dyn ClientEnd>) {
        let conn = self.ids.next();
        let end = WsEnd::new(conn, self.clock.clone());
        end.lock().ended = true;
        (conn, "unconnected".into(), end)
    }
}

impl Transport for WsTransport {
    fn attach(&mut self, engine: Sender<Inbound>) -> Result<(), String> {
        self.engine = Some(engine);
        self.restart_server()
    }

    fn open_host(&mut self) -> (ConnId, Arc<dyn ClientEnd>) {
        let conn = self.ids.next();
        let sink = MemorySink::new(conn, self.clock.clone());
        self.hosts.insert(conn, sink.clone());
        self.queue.push_back(Queued::Local(Inbound::OpenedHost { conn, sink: sink.clone() }));
        (conn, sink)
    }

    fn open(&mut self, ip: &str) -> (ConnId, String, Arc<dyn ClientEnd>) {
        if self.error.is_some() {
            return self.dead_end();
        }
        let local = self.loopback_for(ip);
        let (conn, addr, sink, ws) = match self.connect(local) {
            Ok(opened) => opened,
            Err(e) => {
                self.record(e);
                return self.dead_end();
            }
        };
        let end = WsEnd::new(conn, self.clock.clone());
        let gate = Arc::new(GateSink { inner: sink, end: end.clone() });
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        self.rt().spawn(client_task(ws, cmd_rx, end.clone()));
        self.remotes.insert(conn, Remote { end: end.clone(), cmd });
        self.queue.push_back(Queued::Local(Inbound::Opened { conn, addr: addr.clone(), sink: gate }));
        (conn, addr, end)
    }

    fn send_frame(&mut self, conn: ConnId, text: String) {
        if self.hosts.contains_key(&conn) {
            self.queue.push_back(Queued::Local(Inbound::Frame { conn, text }));
        } else if let Some(remote) = self.remotes.get(&conn) {
            let _ = remote.cmd.send(ClientCmd::Text(text.clone()));
            self.queue.push_back(Queued::Frame(conn, text));
        } else {
            self.record(format!("ws transport: a frame for unknown connection {conn}"));
        }
    }

    fn drop_client(&mut self, conn: ConnId) {
        if let Some(sink) = self.hosts.get(&conn) {
            sink.drop_client();
            self.queue.push_back(Queued::Local(Inbound::Closed { conn }));
        } else if let Some(remote) = self.remotes.get(&conn) {
            remote.end.lock().dropped = true;
            let _ = remote.cmd.send(ClientCmd::Drop);
            self.queue.push_back(Queued::Closed(conn));
        }
    }

    fn report_closed(&mut self, conn: ConnId) {
        if self.hosts.contains_key(&conn) {
            self.queue.push_back(Queued::Local(Inbound::Closed { conn }));
        } else {
            // The server reports it itself once the socket is gone.
            self.queue.push_back(Queued::Closed(conn));
        }
    }

    fn send_local(&mut self, inbound: Inbound) {
        self.queue.push_back(Queued::Local(inbound));
    }

    fn before_tick(&mut self) -> Result<(), String> {
        self.check()?;
        let deadline = Instant::now() + WAIT;
        while let Some(next) = self.queue.pop_front() {
            let item = match next {
                Queued::Local(inbound) => inbound,
                Queued::Frame(conn, text) => match self.take(conn, deadline)? {
                    Inbound::Frame { text: got, .. } if got == text => Inbound::Frame { conn, text },
                    other => {
                        let e = format!("ws transport: expected a frame from {conn}, the server relayed {other:?}");
                        self.record(e.clone());
                        return Err(e);
                    }
                },
                Queued::Closed(conn) => match self.take(conn, deadline)? {
                    closed @ Inbound::Closed { .. } => closed,
                    other => {
                        let e = format!("ws transport: expected {conn} to close, the server relayed {other:?}");
                        self.record(e.clone());
                        return Err(e);
                    }
                },
            };
            self.forward(item);
        }
        Ok(())
    }

    fn after_tick(&mut self) -> Result<(), String> {
        self.check()?;
        let deadline = Instant::now() + WAIT;
        for remote in self.remotes.values() {
            remote.end.wait_settled(deadline)?;
        }
        Ok(())
    }
}

impl Drop for WsTransport {
    fn drop(&mut self) {
        // Sockets, the server and client tasks all live on the runtime: drop them without
        // waiting for anyone's lingering close.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One remote connection's state, shared by the host end ([`GateSink`]), the client task and
/// the runner.
struct WsEnd {
    conn: ConnId,
    clock: Arc<VirtualTime>,
    state: Mutex<EndState>,
    changed: Condvar,
}

#[derive(Default)]
struct EndState {
    /// Frames the host's transport queue accepted (all of them reach the client).
    accepted: usize,
    /// `Some(n)`: a slow consumer that accepts `n` more frames, then refuses until released.
    budget: Option<usize>,
    /// The engine closed the connection, with this reason.
    host_closed: Option<String>,
    /// The client dropped the socket.
    dropped: bool,
    /// Frames the client read, stamped with the virtual tick and time.
    delivered: Vec<Delivered>,
    /// The close frame's reason, once the client read it.
    close_seen: Option<String>,
    /// The client's socket is gone.
    ended: bool,
}

impl WsEnd {
    fn new(conn: ConnId, clock: Arc<VirtualTime>) -> Arc<WsEnd> {
        Arc::new(WsEnd { conn, clock, state: Mutex::new(EndState::default()), changed: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, EndState> {
        // A poisoned lock only means a panic elsewhere; the recorded frames are still valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut EndState)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// Waits until the client read every frame the host accepted (and the close, if any).
    fn wait_settled(&self, deadline: Instant) -> Result<(), String> {
        let mut s = self.lock();
        loop {
            let settled = s.dropped
                || s.ended
                || (s.delivered.len() == s.accepted && (s.host_closed.is_none() || s.close_seen.is_some()));
            if settled {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "ws transport: {} read {} of {} frames within {WAIT:?}",
                    self.conn,
                    s.delivered.len(),
                    s.accepted
                ));
            }
            s = self.changed.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl ClientEnd for WsEnd {
    fn delivered_since(&self, from: usize) -> Vec<Delivered> {
        self.lock().delivered.get(from..).map(<[Delivered]>::to_vec).unwrap_or_default()
    }

    fn closed_by_host(&self) -> Option<String> {
        let s = self.lock();
        match (&s.close_seen, s.ended && !s.dropped) {
            (Some(reason), _) => Some(reason.clone()),
            // The socket died under the client without a close frame: it is closed all the same.
            (None, true) => Some("connection lost".into()),
            (None, false) => None,
        }
    }

    fn set_slow(&self, capacity: usize) {
        self.lock().budget = Some(capacity);
    }

    fn release(&self) {
        self.lock().budget = None;
    }
}

/// The engine's sink for a remote connection: the server's [`crate::net::server::WsSink`],
/// counted (so the runner knows what to wait for) and gated (the `slow` fault).
struct GateSink {
    inner: Arc<dyn FrameSink>,
    end: Arc<WsEnd>,
}

impl FrameSink for GateSink {
    fn try_send(&self, frame: &Frame) -> bool {
        let mut s = self.end.lock();
        if s.dropped || s.host_closed.is_some() {
            // Like a dead socket: accepted and dropped (the engine learns through `Closed`).
            return true;
        }
        if s.budget == Some(0) || !self.inner.try_send(frame) {
            return false;
        }
        if let Some(n) = s.budget.as_mut() {
            *n -= 1;
        }
        s.accepted += 1;
        true
    }

    fn close(&self, reason: &str) {
        self.end.update(|s| {
            if s.host_closed.is_none() {
                s.host_closed = Some(reason.to_string());
            }
        });
        self.inner.close(reason);
    }
}

/// The modelled client's socket: writes what the runner sends, reads everything the host
/// sends into the connection's [`WsEnd`], answers the host's close, and drops the socket when
/// told to.
async fn client_task(ws: WsStream, mut cmd: mpsc::UnboundedReceiver<ClientCmd>, end: Arc<WsEnd>) {
    let (mut write, mut read) = ws.split();
    loop {
        tokio::select! {
            c = cmd.recv() => match c {
                Some(ClientCmd::Text(text)) => {
                    if let Err(e) = write.send(Message::text(text)).await {
                        debug!("{}: client write failed: {e}", end.conn);
                        break;
                    }
                }
                Some(ClientCmd::Drop) | None => break,
            },
            msg = read.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let (tick, time) = end.clock.get();
                    let frame: Frame = Arc::from(text.as_str());
                    end.update(|s| s.delivered.push(Delivered { tick, time, frame }));
                }
                Some(Ok(Message::Close(close))) => {
                    let reason = close.map(|f| f.reason.as_str().to_string()).unwrap_or_default();
                    // tungstenite queued the answering close; let it leave before the socket goes.
                    let _ = write.flush().await;
                    end.update(|s| s.close_seen = Some(reason));
                    break;
                }
                Some(Ok(_)) => {
                    let _ = write.flush().await;
                }
                Some(Err(e)) => {
                    debug!("{}: client read failed: {e}", end.conn);
                    break;
                }
                None => break,
            },
        }
    }
    end.update(|s| s.ended = true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> (GateSink, Arc<MemorySink>, Arc<WsEnd>) {
        let clock = Arc::new(VirtualTime::default());
        let inner = MemorySink::new(ConnId(1), clock.clone());
        let end = WsEnd::new(ConnId(1), clock);
        (GateSink { inner: inner.clone(), end: end.clone() }, inner, end)
    }

    #[test]
    fn a_slow_gate_accepts_its_budget_then_refuses_until_released() {
        let (gate, inner, end) = gate();
        let f: Frame = Arc::from("x");
        end.set_slow(1);
        assert!(gate.try_send(&f));
        assert!(!gate.try_send(&f), "the queue is full once the budget is spent");
        end.release();
        assert!(gate.try_send(&f));
        assert_eq!(inner.delivered_since(0).len(), 2);
        assert_eq!(end.lock().accepted, 2, "the runner waits for exactly the accepted frames");
    }

    #[test]
    fn a_gate_drops_frames_after_the_host_closed_or_the_client_left() {
        let (gate, inner, end) = gate();
        gate.close("kicked");
        assert!(gate.try_send(&Arc::from("x")));
        assert_eq!(inner.closed_by_host().as_deref(), Some("kicked"));
        assert!(inner.delivered_since(0).is_empty());
        assert_eq!(end.lock().accepted, 0);
    }

    #[test]
    fn each_participant_address_gets_its_own_stable_loopback_address() {
        let mut t = WsTransport::new(ConnIds::new(), Arc::new(VirtualTime::default())).expect("transport");
        let a = t.loopback_for("10.0.0.2");
        let b = t.loopback_for("203.0.113.7");
        assert_ne!(a, b);
        assert_eq!(t.loopback_for("10.0.0.2"), a);
        assert!(a.is_loopback() && b.is_loopback());
    }
}
