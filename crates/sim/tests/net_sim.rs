//! The network layer under simulation: the production WebSocket server and client, TLS
//! included, over turmoil's simulated TCP, on simulated time, with reconnects, drops and stalls.
//!
//! ```text
//!   "server" host                                   "ann", "bob", … (2–4 remotes)
//!   ─────────────                                   ─────────────────────────────
//!   engine ◄─ relay ◄─ net::server (TLS, WS) ◄──turmoil TCP──► net::client (TLS, WS)
//!   ticked every 10 ms of simulated time          authenticate (resume token), join_session
//!   host's own in-process connection sets up      (since_seq), send_chat with client_msg_id,
//!   a workspace, a session and a share            resend what was not acknowledged
//!                          ▲
//!   "chaos": partitions (connections drop, segments are lost), holds (stalls), repairs
//! ```
//!
//! One seed drives everything: turmoil's RNG (link latencies), the fault schedule, who takes
//! part and what and when each remote sends. A failure prints its seed; `NET_SIM_SEED=N` reruns
//! that seed alone.
//!
//! The verdict, once every fault has healed (RULES §6.9):
//! - **liveness**: every message the host acknowledged reaches every remote exactly once —
//!   each remote deduplicates by seq, as PROTOCOL §7.2 asks — and every message a remote meant
//!   to send was acknowledged (it resends what a dropped connection left unanswered, with the
//!   same `client_msg_id`);
//! - **order**: every remote's seqs are contiguous from 1 (a snapshot covers what it summarises),
//!   and an event seen twice is byte-identical both times;
//! - **idempotence**: a `client_msg_id` is never acknowledged with two different message ids or
//!   seqs, and no message id answers two `client_msg_id`s;
//! - **resume**: every reconnect resumes the same participant (faults stay within grace);
//! - **keepalive**: a partition that outlasts the silence limit closes the connection at both
//!   ends within that limit of simulated time (plus an engine tick and a few network steps; the
//!   server may first spend up to a second offering its close frame to the dead socket).
//!
//! Back-pressure is real too: turmoil's TCP has flow control, and the links, the server's queue
//! and the engine's outbox are kept small, so a stalled link fills them and the engine holds
//! frames back (or says `resync_required`) until the connection drains or is closed.
//!
//! `a_remote_that_forgets_to_resend_after_reconnecting_is_caught` proves the verdict can fail.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use roundtable_engine::clock::EngineClock;
use roundtable_engine::{Engine, EngineConfig, Inbound};
use roundtable_net::client::{handshake_over, Client, ClientError, ClientEvent, Events};
use roundtable_net::keepalive::Keepalive;
use roundtable_net::link::Link;
use roundtable_net::server::{start_server_on, ConnIds, Listener, ServerOptions};
use roundtable_net::tls;
use roundtable_protocol::client_session::{Attempt, ClientSession, Identity, Reconnect, Then, FIRST_BACKOFF};
use roundtable_protocol::ids::{ConnId, MessageId, SessionId};
use roundtable_protocol::persist::MemoryStore;
use roundtable_protocol::protocol::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// The server's port on the simulated network.
const PORT: u16 = 7447;
/// How often the host ticks the engine (simulated time).
const TICK: Duration = Duration::from_millis(10);
/// turmoil's step: how far simulated time moves per step of the simulation.
const STEP: Duration = Duration::from_millis(2);
/// Largest latency of a simulated link.
const MAX_LATENCY: Duration = Duration::from_millis(20);
/// Both ends' keepalive: short, so the simulation sees many silent peers in little time.
const KEEPALIVE: Keepalive = Keepalive { every: Duration::from_secs(1), silent_after: Duration::from_secs(3) };
/// How late a keepalive close may come after the silence limit: one engine tick (the host
/// notices a close when it forwards it) and a few network steps.
const CLOSE_SLACK: Duration = Duration::from_millis(10 + 3 * 2);
/// The server tells the engine after trying to say goodbye: its close frame may wait this long
/// for a socket that takes nothing (`GOODBYE` in crates/net/src/server.rs).
const GOODBYE: Duration = Duration::from_secs(1);
/// Back-pressure comes early: a link holds this many segments in flight (turmoil's flow
/// control), the server's queue this many frames, the engine's outbox this many bytes — room
/// for the largest snapshot or replay these runs make (one that does not fit could never be
/// delivered: the connection would be closed as `too_slow` on every rejoin).
const TCP_SEGMENTS: usize = 4;
const QUEUE_FRAMES: usize = 2;
const OUTBOX_BYTES: usize = 64 * 1024;
/// Remotes reconnect after this, doubling up to `MAX_BACKOFF` (as `roundtable join` does).
/// A connect (TCP, TLS, WebSocket) stalled this long is given up, like a kernel's connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// Faults start within this window.
const CHAOS_WINDOW: Duration = Duration::from_secs(40);
/// After the last fault heals, everyone must have everything within this.
const SETTLE: Duration = Duration::from_secs(40);
const NAMES: [&str; 4] = ["ann", "bob", "cat", "dan"];

/// Simulated time since the simulation started.
fn now() -> Duration {
    turmoil::sim_elapsed().expect("inside the simulation")
}

// ─── the plan a seed draws ────────────────────────────────────────────────────────────────────

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    /// The link drops everything (segments in flight too) until repaired.
    Partition,
    /// The link holds everything until released, then delivers it.
    Hold,
}

#[derive(Clone, Debug)]
struct Fault {
    remote: &'static str,
    kind: FaultKind,
    start: Duration,
    end: Duration,
}

#[derive(Clone, Debug)]
struct Plan {
    remotes: Vec<&'static str>,
    /// Per remote: when it sends each of its messages.
    sends: BTreeMap<&'static str, Vec<Duration>>,
    faults: Vec<Fault>,
}

impl Plan {
    fn draw(seed: u64) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let remotes = NAMES[..rng.random_range(2..=4usize)].to_vec();
        let mut sends = BTreeMap::new();
        let mut faults = Vec::new();
        for &remote in &remotes {
            // Bursts of messages, so a stalled link overflows what it may queue.
            let mut at = Vec::new();
            for _ in 0..rng.random_range(2..=4) {
                let burst = Duration::from_millis(rng.random_range(500..45_000));
                at.extend((0..rng.random_range(1..=5)).map(|i| burst + Duration::from_millis(50 * i)));
            }
            at.sort();
            sends.insert(remote, at);
            // Each remote's faults follow one another, with time to reconnect in between, so
            // none outlasts the 30 s grace period.
            let mut t = Duration::from_millis(rng.random_range(1_000..6_000));
            while t < CHAOS_WINDOW {
                let (kind, most) =
                    if rng.random_bool(0.5) { (FaultKind::Partition, 10_000) } else { (FaultKind::Hold, 8_000) };
                let end = t + Duration::from_millis(rng.random_range(300..most));
                faults.push(Fault { remote, kind, start: t, end });
                t = end + Duration::from_millis(rng.random_range(6_000..12_000));
            }
        }
        faults.sort_by_key(|f| f.start);
        Plan { remotes, sends, faults }
    }

    fn healed_at(&self) -> Duration {
        self.faults.iter().map(|f| f.end).max().unwrap_or_default()
    }
}

// ─── what everyone observed ───────────────────────────────────────────────────────────────────

/// One remote's view, as its own code recorded it.
#[derive(Default, Debug)]
struct RemoteLog {
    /// `client_msg_id`s it meant to send.
    planned: Vec<String>,
    /// The host's acknowledgment of each (`message_id`, seq).
    acks: BTreeMap<String, (MessageId, u64)>,
    /// Seqs it holds: received as events, or summarised by a snapshot.
    covered: BTreeSet<u64>,
    /// The raw frame of each seq received as an event.
    raw: BTreeMap<u64, String>,
    /// Chat message id → the seqs it was seen at (events and snapshots).
    chats: BTreeMap<MessageId, BTreeSet<u64>>,
    /// (opened, closed) of each of its connections, by its own clock.
    connections: Vec<(Duration, Option<Duration>)>,
    reconnects: u32,
    /// `resync_required` events received (the outbox overflowed while the link stalled).
    resyncs: u32,
    violations: Vec<String>,
    /// Done: everything acknowledged to anyone reached it.
    finished: bool,
}

/// Everything the simulation's hosts share with the verdict (one thread runs them all).
#[derive(Default, Debug)]
struct Ledger {
    link: Option<Link>,
    session: Option<SessionId>,
    remotes: BTreeMap<&'static str, RemoteLog>,
    /// Server-side connections: who, opened, closed (when the host forwarded the close).
    server_conns: BTreeMap<ConnId, (String, Duration, Option<Duration>)>,
    healed: bool,
}

type Shared = Arc<Mutex<Ledger>>;

fn ledger(shared: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    shared.lock().expect("ledger lock")
}

// ─── the host: the real engine behind the real server ─────────────────────────────────────────

/// turmoil's listener, for the server's accept loop.
struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&self) -> std::io::Result<(Self::Stream, String)> {
        self.0.accept().await.map(|(stream, peer)| (stream, peer.to_string()))
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The host: an engine on simulated time, the production server in front of it, and the host's
/// own connection setting up a workspace, a session and a share.
async fn host(shared: Shared, options: ServerOptions, fingerprint: String) -> turmoil::Result {
    // A small outbox, so a stalled link overflows it: the connection is told `resync_required`
    // (or closed as `too_slow`) and catches up (PROTOCOL §7.6).
    let config = EngineConfig { check_invariants: true, outbox_max_bytes: OUTBOX_BYTES, ..EngineConfig::default() };
    let mut engine = Engine::new(config, Box::new(MemoryStore::default()))?;
    roundtable_agent::install_builtin(&mut engine);
    engine.set_workspace_files(Box::new(roundtable_store::ConfinedFiles));
    let clock = EngineClock::start(1_800_000_000_000, engine.now(), now());
    let ids = ConnIds::new();
    let (host_client, _host_events) = Client::in_process(engine.sender(), ids.next());
    tokio::spawn(set_up(host_client, shared.clone(), fingerprint));
    // The server feeds a relay, so the host can note when each connection opened and closed.
    let (relay_tx, relay) = crossbeam_channel::unbounded::<Inbound>();
    let listener = SimListener(turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?);
    let server = start_server_on(listener, options, relay_tx, ids)?;
    server.open();
    let inbox = engine.sender();
    loop {
        tokio::time::sleep(TICK).await;
        for input in relay.try_iter() {
            note_connection(&shared, &input);
            inbox.send(input)?;
        }
        engine.tick(clock.now_ms(now()));
    }
}

fn note_connection(shared: &Shared, input: &Inbound) {
    let mut l = ledger(shared);
    match input {
        Inbound::Opened { conn, addr, .. } => {
            let ip: SocketAddr = addr.parse().expect("a socket address");
            let who = turmoil::reverse_lookup(ip.ip()).unwrap_or_else(|| addr.clone());
            l.server_conns.insert(*conn, (who, now(), None));
        }
        Inbound::Closed { conn } => {
            if let Some(c) = l.server_conns.get_mut(conn) {
                c.2 = Some(now());
            }
        }
        _ => {}
    }
}

async fn set_up(host: Client, shared: Shared, fingerprint: String) {
    let dir = std::env::temp_dir();
    let call = |method: Method| {
        let host = host.clone();
        async move { host.request(method).await.expect("a host request") }
    };
    let w = call(Method::AddWorkspace(AddWorkspaceParams {
        name: "sim".into(),
        dir: dir.display().to_string(),
        agent: None,
    }))
    .await;
    let workspace_id: roundtable_protocol::ids::WorkspaceId = serde_json::from_value(w["id"].clone()).expect("an id");
    let s = call(Method::CreateSession(CreateSessionParams {
        workspace_id: workspace_id.clone(),
        title: "main".into(),
        plan_first: None,
        vote_deadline_ms: None,
    }))
    .await;
    let session: SessionId = serde_json::from_value(s["id"].clone()).expect("an id");
    let share: MintShareResult =
        serde_json::from_value(call(Method::MintShare(MintShareParams::team("sim", vec![workspace_id]))).await)
            .expect("a share");
    let mut l = ledger(&shared);
    l.link = Some(Link::new("server", PORT, share.token, Some(fingerprint)));
    l.session = Some(session);
}

// ─── a remote: the real client, behaving as `roundtable join` does ────────────────────────────

/// One remote participant: the production network client driven by the protocol's
/// `ClientSession` and `Reconnect` — the client rules `join` and the window follow.
struct Remote {
    name: &'static str,
    shared: Shared,
    link: Link,
    session: SessionId,
    /// Resume token, the session's last seq, rejoins: what to show and what must follow.
    program: ClientSession,
    /// Messages not acknowledged yet (in order), resent after reconnecting.
    unsent: Vec<SendMessageParams>,
    /// Whether to resend them; off only to show that the verdict catches it.
    resend: bool,
}

impl Remote {
    fn log<T>(&self, f: impl FnOnce(&mut RemoteLog) -> T) -> T {
        f(ledger(&self.shared).remotes.get_mut(self.name).expect("a registered remote"))
    }

    fn violation(&self, what: String) {
        self.log(|r| r.violations.push(format!("{:?}: {what}", now())));
    }

    /// Connects (TCP, TLS pinned to the link, WebSocket), authenticates — resuming after the
    /// first time — joins the session from the last seq seen and resends what is unacknowledged.
    async fn connect(&mut self) -> Result<(Client, Events), String> {
        let link = self.link.clone();
        let open = async {
            let tcp =
                turmoil::net::TcpStream::connect((link.host.as_str(), link.port)).await.map_err(|e| e.to_string())?;
            handshake_over(tcp, &link).await.map_err(|e| e.to_string())
        };
        let ws = tokio::time::timeout(CONNECT_TIMEOUT, open).await.map_err(|_| "connect timed out".to_string())??;
        let (client, events) = Client::over_with(ws, KEEPALIVE);
        self.log(|r| r.connections.push((now(), None)));
        match self.enter(&client).await {
            Ok(()) => Ok((client, events)),
            Err(e) => {
                client.close();
                self.closed();
                Err(e)
            }
        }
    }

    /// Notes that the current connection ended.
    fn closed(&mut self) {
        self.program.closed(None);
        self.log(|r| {
            if let Some(last) = r.connections.last_mut() {
                last.1.get_or_insert_with(now);
            }
        });
    }

    /// On a new connection: authenticate, join, resend.
    async fn enter(&mut self, client: &Client) -> Result<(), String> {
        let params = self.program.authenticate(&self.link.token, self.name);
        let auth: AuthenticateResult =
            client.call(Method::Authenticate(params)).await.map_err(|e| format!("authenticate: {e}"))?;
        let identity = self.program.authenticated(&auth);
        if identity == Identity::Replaced {
            self.violation("a reconnect within grace did not resume the participant".into());
        }
        self.log(|r| r.reconnects += u32::from(matches!(identity, Identity::Resumed | Identity::Replaced)));
        let joins = match self.program.rejoins() {
            none if none.is_empty() => vec![JoinSessionParams { session_id: self.session.clone(), since_seq: None }],
            rejoins => rejoins,
        };
        for params in joins {
            self.join(client, params).await?;
        }
        if self.resend {
            for msg in std::mem::take(&mut self.unsent) {
                self.send(client, msg).await;
            }
        }
        Ok(())
    }

    /// Sends a (re)join; its `Answered` marker, still ahead in the event stream, ends the
    /// program's wait for the catch-up.
    async fn join(&mut self, client: &Client, params: JoinSessionParams) -> Result<(), String> {
        let program = &mut self.program;
        let join = Method::JoinSession(params.clone());
        let response = client
            .request_full_with(join, |id| program.join_sent(&params, id.clone()))
            .await
            .map_err(|e| format!("join: {e}"))?;
        response.outcome.map_err(|e| format!("join refused: {e}"))?;
        Ok(())
    }

    /// Sends one chat message; keeps it for a resend when the connection fails under it.
    async fn send(&mut self, client: &Client, msg: SendMessageParams) {
        match client.call::<SendMessageResult>(Method::SendChat(msg.clone())).await {
            Ok(ack) => self.acknowledged(&msg.client_msg_id, ack),
            Err(ClientError::Protocol(e)) => self.violation(format!("{} refused: {e:?}", msg.client_msg_id)),
            Err(_) => self.unsent.push(msg),
        }
    }

    fn acknowledged(&self, client_msg_id: &str, ack: SendMessageResult) {
        let mut l = ledger(&self.shared);
        let log = l.remotes.get_mut(self.name).expect("registered");
        match log.acks.get(client_msg_id) {
            Some(first) if *first != (ack.message_id.clone(), ack.seq) => log
                .violations
                .push(format!("{client_msg_id} acknowledged as {first:?}, then as ({}, {})", ack.message_id, ack.seq)),
            Some(_) => {}
            None => {
                log.acks.insert(client_msg_id.to_string(), (ack.message_id, ack.seq));
            }
        }
    }

    /// Passes an event through the program; records what it shows; says what must follow.
    fn on_event(&mut self, frame: &EventFrame, raw: &str) -> Then {
        if frame.session_id.as_ref() != Some(&self.session) {
            return Then::Nothing;
        }
        let last = self.program.last_seq(&self.session);
        let handled = self.program.event(frame);
        match (&frame.body, frame.seq) {
            (Event::Snapshot(s), _) if handled.show => self.log(|r| {
                r.covered.extend(1..=s.last_seq);
                for m in &s.messages {
                    r.chats.entry(m.message.message_id.clone()).or_default().insert(m.seq);
                }
            }),
            (Event::ResyncRequired(_), _) => self.log(|r| r.resyncs += 1),
            (_, Some(seq)) if handled.show => self.log(|r| {
                r.covered.insert(seq);
                r.raw.insert(seq, raw.to_string());
                if let Event::Chat(m) = &frame.body {
                    r.chats.entry(m.message_id.clone()).or_default().insert(seq);
                }
            }),
            (_, Some(seq)) if seq <= last => {
                let differs = self.log(|r| r.raw.get(&seq).is_some_and(|first| first != raw));
                if differs {
                    self.violation(format!("seq {seq} arrived twice with different frames"));
                }
            }
            _ => {}
        }
        handled.then
    }

    /// Done when every remote has everything acknowledged and this one has seen it all.
    fn finished(&self) -> bool {
        let l = ledger(&self.shared);
        if !l.healed {
            return false;
        }
        let all_acked = l.remotes.values().all(|r| r.planned.iter().all(|id| r.acks.contains_key(id)));
        let mine = &l.remotes[self.name];
        all_acked && l.remotes.values().flat_map(|r| r.acks.values()).all(|(id, _)| mine.chats.contains_key(id))
    }
}

async fn remote(name: &'static str, shared: Shared, sends: Vec<Duration>, resend: bool) -> turmoil::Result {
    let (link, session) = loop {
        {
            let l = ledger(&shared);
            if let (Some(link), Some(session)) = (&l.link, &l.session) {
                break (link.clone(), session.clone());
            }
        }
        tokio::time::sleep(TICK).await;
    };
    let mut me = Remote {
        name,
        shared: shared.clone(),
        link,
        session: session.clone(),
        program: ClientSession::new(None),
        unsent: Vec::new(),
        resend,
    };
    let mut pending: std::collections::VecDeque<(Duration, SendMessageParams)> = sends
        .iter()
        .enumerate()
        .map(|(i, at)| {
            let text = format!("{name} says {i}");
            (*at, SendMessageParams { session_id: session.clone(), text, client_msg_id: format!("{name}-{i}") })
        })
        .collect();
    me.log(|r| r.planned = pending.iter().map(|(_, m)| m.client_msg_id.clone()).collect());
    let mut conn: Option<(Client, Events)> = None;
    let mut reconnect = Reconnect::default();
    // The wait before the next attempt (`join` gives up when its very first attempt fails — the
    // link is probably wrong; here the first attempt may meet a partition, so it waits too).
    let wait = |reconnect: &mut Reconnect, attempt| {
        reconnect.after(attempt, std::time::Instant::now()).unwrap_or(FIRST_BACKOFF)
    };
    let mut retry_at = Duration::ZERO;
    loop {
        if me.finished() {
            me.log(|r| r.finished = true);
            if let Some((client, _)) = &conn {
                client.close();
            }
            return Ok(());
        }
        if conn.is_none() && now() >= retry_at {
            match me.connect().await {
                Ok(c) => {
                    conn = Some(c);
                    reconnect.connected();
                }
                Err(e) => {
                    tracing::debug!("{name}: {e}");
                    retry_at = now() + wait(&mut reconnect, Attempt::Unreachable);
                }
            }
            continue;
        }
        let next_send = pending.front().map(|(at, _)| *at).unwrap_or(Duration::MAX);
        let wake = next_send.min(if conn.is_none() { retry_at } else { Duration::MAX }).min(now() + TICK * 10);
        let sleep = tokio::time::sleep(wake.saturating_sub(now()));
        let mut closed = false;
        match &mut conn {
            Some((client, events)) => {
                let client = client.clone();
                tokio::select! {
                    ev = events.recv() => match ev {
                        Some(ClientEvent::Event { frame, raw }) => {
                            if let Then::Join(joins) = me.on_event(&frame, &raw) {
                                for params in joins {
                                    if let Err(e) = me.join(&client, params).await {
                                        tracing::debug!("{name}: {e}");
                                    }
                                }
                            }
                        }
                        Some(ClientEvent::Answered { id, ok }) => me.program.answered(&id, ok),
                        Some(ClientEvent::Closed { .. }) | None => {
                            me.closed();
                            closed = true;
                        }
                        Some(_) => {}
                    },
                    _ = sleep => {
                        if pending.front().is_some_and(|(at, _)| *at <= now()) {
                            let (_, msg) = pending.pop_front().expect("due");
                            me.send(&client, msg).await;
                        }
                    }
                }
            }
            None => {
                sleep.await;
                if pending.front().is_some_and(|(at, _)| *at <= now()) {
                    let (_, msg) = pending.pop_front().expect("due");
                    me.unsent.push(msg);
                }
            }
        }
        if closed {
            conn = None;
            retry_at = now() + wait(&mut reconnect, Attempt::Dropped);
        }
    }
}

// ─── chaos ────────────────────────────────────────────────────────────────────────────────────

/// Applies the plan's faults on time, then says the network has healed.
async fn chaos(plan: Plan, shared: Shared) -> turmoil::Result {
    // (time, start?, fault) in time order; ends before starts at the same instant.
    let mut moments: Vec<(Duration, bool, Fault)> =
        plan.faults.iter().flat_map(|f| [(f.start, true, f.clone()), (f.end, false, f.clone())]).collect();
    moments.sort_by_key(|(at, start, _)| (*at, *start));
    for (at, start, fault) in moments {
        tokio::time::sleep(at.saturating_sub(now())).await;
        match (fault.kind, start) {
            (FaultKind::Partition, true) => turmoil::partition("server", fault.remote),
            (FaultKind::Partition, false) => turmoil::repair("server", fault.remote),
            (FaultKind::Hold, true) => turmoil::hold("server", fault.remote),
            (FaultKind::Hold, false) => turmoil::release("server", fault.remote),
        }
    }
    ledger(&shared).healed = true;
    Ok(())
}

// ─── the run and its verdict ──────────────────────────────────────────────────────────────────

/// Runs one seed; returns what went wrong (empty: nothing).
fn run_seed(seed: u64, resend: bool) -> Vec<String> {
    let plan = Plan::draw(seed);
    let (identity, _, _) = tls::generate().expect("a certificate");
    let server_tls = tls::server_config(&identity).expect("a TLS configuration");
    let options = ServerOptions {
        tls: Some(server_tls),
        keepalive: KEEPALIVE,
        queue_frames: QUEUE_FRAMES,
        ..ServerOptions::default()
    };
    let fingerprint = identity.fingerprint.clone();
    let shared: Shared = Arc::default();
    for &name in &plan.remotes {
        ledger(&shared).remotes.insert(name, RemoteLog::default());
    }
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .tick_duration(STEP)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(MAX_LATENCY)
        .tcp_capacity(TCP_SEGMENTS)
        .simulation_duration(plan.healed_at() + SETTLE + Duration::from_secs(20))
        .build();
    {
        let shared = shared.clone();
        sim.host("server", move || host(shared.clone(), options.clone(), fingerprint.clone()));
    }
    for &name in &plan.remotes {
        sim.client(name, remote(name, shared.clone(), plan.sends[name].clone(), resend));
    }
    sim.client("chaos", chaos(plan.clone(), shared.clone()));
    let mut problems = Vec::new();
    if let Err(e) = sim.run() {
        problems.push(format!("the simulation did not finish: {e}"));
    }
    let l = ledger(&shared);
    problems.extend(verdict(&plan, &l));
    eprintln!("seed {seed}: {}", summary(&plan, &l, sim.elapsed()));
    if std::env::var("NET_SIM_DUMP").is_ok() {
        eprintln!("{l:#?}");
    }
    problems
}

/// What a seed did, in one line.
fn summary(plan: &Plan, l: &Ledger, elapsed: Duration) -> String {
    let count = |kind| plan.faults.iter().filter(|f| f.kind == kind).count();
    let acked: usize = l.remotes.values().map(|r| r.acks.len()).sum();
    let reconnects: u32 = l.remotes.values().map(|r| r.reconnects).sum();
    let resyncs: u32 = l.remotes.values().map(|r| r.resyncs).sum();
    let seqs: Vec<u64> = l.remotes.values().map(|r| r.covered.len() as u64).collect();
    format!(
        "{} remotes, {} partitions ({} past the silence limit), {} holds, {acked} messages acknowledged, \
         {reconnects} reconnects, {resyncs} resyncs, {} server connections, seqs held {seqs:?}, {elapsed:.1?} simulated",
        plan.remotes.len(),
        count(FaultKind::Partition),
        long_partitions(plan).count(),
        count(FaultKind::Hold),
        l.server_conns.len(),
    )
}

fn verdict(plan: &Plan, l: &Ledger) -> Vec<String> {
    let mut out = Vec::new();
    liveness(l, &mut out);
    idempotence(l, &mut out);
    keepalive(plan, l, &mut out);
    for (name, r) in &l.remotes {
        out.extend(r.violations.iter().map(|v| format!("{name}: {v}")));
    }
    out
}

/// Every planned message acknowledged; every acknowledged one at its seq, once, everywhere;
/// every remote's seqs contiguous.
fn liveness(l: &Ledger, out: &mut Vec<String>) {
    let acked: Vec<(&String, &(MessageId, u64))> = l.remotes.values().flat_map(|r| r.acks.iter()).collect();
    for (name, r) in &l.remotes {
        for id in r.planned.iter().filter(|id| !r.acks.contains_key(*id)) {
            out.push(format!("{name}: {id} was never acknowledged"));
        }
        for (client_msg_id, (message_id, seq)) in &acked {
            match r.chats.get(message_id) {
                None => out.push(format!("{name}: never received {client_msg_id} ({message_id}, seq {seq})")),
                Some(seqs) if seqs.len() > 1 => out.push(format!("{name}: {message_id} arrived at seqs {seqs:?}")),
                Some(seqs) if !seqs.contains(seq) => {
                    out.push(format!("{name}: {message_id} arrived at {seqs:?}, acknowledged at {seq}"))
                }
                Some(_) => {}
            }
        }
        let top = r.covered.last().copied().unwrap_or(0);
        if r.covered.len() as u64 != top {
            let missing: Vec<u64> = (1..=top).filter(|s| !r.covered.contains(s)).take(5).collect();
            out.push(format!("{name}: seqs not contiguous up to {top}; missing {missing:?}…"));
        }
    }
}

/// No `client_msg_id` acknowledged twice differently (checked as acks arrive), and no message
/// id or seq answering two of them.
fn idempotence(l: &Ledger, out: &mut Vec<String>) {
    let mut by_message: BTreeMap<&MessageId, &String> = BTreeMap::new();
    let mut by_seq: BTreeMap<u64, &String> = BTreeMap::new();
    for r in l.remotes.values() {
        for (client_msg_id, (message_id, seq)) in &r.acks {
            if let Some(other) = by_message.insert(message_id, client_msg_id) {
                out.push(format!("{message_id} acknowledged both {other} and {client_msg_id}"));
            }
            if let Some(other) = by_seq.insert(*seq, client_msg_id) {
                out.push(format!("seq {seq} acknowledged both {other} and {client_msg_id}"));
            }
        }
    }
}

/// A partition longer than the silence limit closes the remote's connection at both ends within
/// the limit.
fn keepalive(plan: &Plan, l: &Ledger, out: &mut Vec<String>) {
    for f in long_partitions(plan) {
        let bound = KEEPALIVE.silent_after + CLOSE_SLACK;
        let server_bound = bound + GOODBYE;
        let open_at =
            |opened: Duration, closed: Option<Duration>| opened < f.start && closed.is_none_or(|c| c > f.start);
        for (conn, (who, opened, closed)) in &l.server_conns {
            if who == f.remote && open_at(*opened, *closed) && closed.is_none_or(|c| c > f.start + server_bound) {
                out.push(format!(
                    "server kept {conn} of {who} {:?} after a partition at {:?} (limit {:?})",
                    closed.map(|c| c - f.start),
                    f.start,
                    KEEPALIVE.silent_after
                ));
            }
        }
        for (opened, closed) in &l.remotes[f.remote].connections {
            if open_at(*opened, *closed) && closed.is_none_or(|c| c > f.start + bound) {
                out.push(format!(
                    "{} kept its connection {:?} after a partition at {:?} (limit {:?})",
                    f.remote,
                    closed.map(|c| c - f.start),
                    f.start,
                    KEEPALIVE.silent_after
                ));
            }
        }
    }
}

/// The partitions that outlast the silence limit: each must close its remote's connection.
fn long_partitions(plan: &Plan) -> impl Iterator<Item = &Fault> {
    let bound = KEEPALIVE.silent_after + CLOSE_SLACK;
    plan.faults.iter().filter(move |f| f.kind == FaultKind::Partition && f.end - f.start > bound)
}

/// Seeds to run: `NET_SIM_SEED=N` reruns one.
fn seeds(default: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    match std::env::var("NET_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("NET_SIM_SEED is a number")],
        Err(_) => default.collect(),
    }
}

#[test]
fn after_faults_heal_every_acknowledged_message_reaches_every_remote_exactly_once() {
    let mut failed = Vec::new();
    for seed in seeds(1..=6) {
        let problems = run_seed(seed, true);
        if !problems.is_empty() {
            eprintln!("seed {seed}: {:#?}\n{}", Plan::draw(seed), problems.join("\n"));
            failed.push(seed);
        }
    }
    assert!(failed.is_empty(), "seeds {failed:?} failed (rerun one with NET_SIM_SEED=N)");
}

/// The verdict is not vacuous: remotes that keep what a dropped connection left unanswered but
/// never resend it (the bug `roundtable join` would have without its `unsent` queue) fail it.
#[test]
fn a_remote_that_forgets_to_resend_after_reconnecting_is_caught() {
    let caught = (1..=4).find(|&seed| {
        let problems = run_seed(seed, false);
        eprintln!("seed {seed}, remotes that never resend: {problems:#?}");
        !problems.is_empty()
    });
    assert!(caught.is_some(), "no seed caught a remote that never resends");
}
