//! `roundtable bench wire`: send→receive latency and throughput over real WebSockets, against a
//! raw tokio-tungstenite broadcast server measured in the same run.
//!
//! Roundtable: an in-process host (engine thread, production server, TLS unless `--insecure`)
//! with `--clients N` remotes (the production client) joined to one session. Two workloads:
//!
//! - `deltas` (default): the session's agent is a `command` agent (`roundtable bench
//!   wire-agent`, a hidden bench kind) that streams `--sends` text deltas at `--rate` per second
//!   (or one every `--every-ms`), each stamped with the time it was written; every client times
//!   the `agent_delta` events. The reference runs the same agent program, reads its output the
//!   same way and broadcasts each delta as the same `agent_delta` frame.
//! - `messages`: the host sends chat messages (cancelling each agent turn at once, so the next
//!   one is not turn-locked: a `message`, a `turn_started` and a `turn_ended` frame per send) and
//!   clients time the `message` events; the reference sends the `message` frame only.
//!
//! The reference is a minimal server that serialises each frame once and writes it to N plain
//! WebSocket clients. A second reference also appends each frame to a file and fsyncs it before
//! broadcasting it (roundtable commits before it sends). Latency = receive time − send time over
//! every (frame, client) pair, on the wall clock (the agent is another process); the report gives
//! p50/p99/max and events/s (deliveries over the time from the first send to the last delivery)
//! and the ratios of the p99s. The sides run in `--rounds` alternating rounds (roundtable,
//! reference, reference with fsync, again…); each side's figures are those of its median round by
//! p99, with the min–max of p99 over the rounds.
//!
//! With `--relay URL` roundtable runs once more, relayed: the host's iroh endpoint waits at that
//! relay and the remotes reach it only through it (they have no IP path of their own), so every
//! frame crosses the relay — side by side with the direct TLS run.

use crate::app::host::{Host, HostOptions};
use crate::net::client::ClientEvent;
use crate::protocol::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// What the sides send (see the module documentation).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// An agent streams text deltas at a set rate; the reference broadcasts the same deltas.
    Deltas,
    /// The host sends chat messages; the reference broadcasts the same `message` frames.
    Messages,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct WireOptions {
    pub clients: usize,
    /// Deltas the agent streams, or messages the host sends.
    pub sends: usize,
    /// Sends per second.
    pub per_second: u64,
    pub workload: Workload,
    pub tls: bool,
    /// Also run relayed through this iroh relay.
    pub relay: Option<String>,
    /// Alternating rounds of every side.
    pub rounds: usize,
}

impl WireOptions {
    fn every(&self) -> Duration {
        Duration::from_nanos(1_000_000_000 / self.per_second.max(1))
    }

    /// How long the sends take, plus time for the last ones to arrive.
    fn patience(&self) -> Duration {
        self.every() * self.sends as u32 + Duration::from_secs(10)
    }
}

/// Latency figures of one side, in ms.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Deliveries per second, from the first send to the last delivery.
    pub events_per_s: f64,
    /// The lowest and highest p99 over the rounds (this side's figures are its median round's).
    pub p99_spread_ms: (f64, f64),
}

/// What `bench wire` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WireReport {
    pub clients: usize,
    pub workload: Workload,
    /// Deltas or messages sent per round.
    pub sends: usize,
    pub per_second: u64,
    pub tls: bool,
    pub rounds: usize,
    pub roundtable: Latency,
    pub reference: Latency,
    /// The reference that fsyncs each frame to a file before broadcasting it.
    pub reference_fsync: Latency,
    /// roundtable p99 / reference p99.
    pub p99_ratio: f64,
    /// roundtable p99 / fsyncing reference p99.
    pub p99_ratio_fsync: f64,
    /// (send, client) pairs that never arrived at roundtable's clients, over all rounds.
    pub missing: usize,
    /// Roundtable relayed through `--relay` (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed: Option<Latency>,
    /// Relayed p99 / reference p99.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed_p99_ratio: Option<f64>,
    /// Pairs that never arrived relayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed_missing: Option<usize>,
}

/// What one side measured: every latency (ms) and how long the deliveries took (s).
struct Measured {
    samples: Vec<f64>,
    span_s: f64,
}

fn latency(Measured { mut samples, span_s }: Measured) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Latency {
        samples: samples.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: *samples.last().expect("not empty"),
        events_per_s: samples.len() as f64 / span_s.max(1e-6),
        p99_spread_ms: (0.0, 0.0),
    }
}

/// The round with the median p99, with the spread of p99 over all rounds.
fn median_round(mut rounds: Vec<Latency>) -> Latency {
    rounds.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
    let spread = (rounds.first().map_or(0.0, |l| l.p99_ms), rounds.last().map_or(0.0, |l| l.p99_ms));
    let mut median = rounds.get(rounds.len() / 2).cloned().unwrap_or_default();
    median.p99_spread_ms = spread;
    median
}

/// Nanoseconds since the Unix epoch: the agent stamps its deltas in another process, so both
/// ends read the wall clock (a step of it during a run would show as one odd sample).
fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// When each delivery was sent and arrived (wall ns), shared with the readers.
#[derive(Default)]
struct Deliveries {
    samples: Vec<f64>,
    first_sent: Option<u64>,
    last: Option<u64>,
}

impl Deliveries {
    fn record(&mut self, sent_ns: u64, at_ns: u64) {
        self.samples.push(at_ns.saturating_sub(sent_ns) as f64 / 1e6);
        self.first_sent = Some(self.first_sent.map_or(sent_ns, |f| f.min(sent_ns)));
        self.last = Some(self.last.map_or(at_ns, |l| l.max(at_ns)));
    }

    fn take(&mut self) -> Measured {
        let span_s = match (self.first_sent, self.last) {
            (Some(first), Some(last)) => last.saturating_sub(first) as f64 / 1e9,
            _ => 0.0,
        };
        Measured { samples: std::mem::take(&mut self.samples), span_s }
    }
}

type Shared = Arc<Mutex<Deliveries>>;

/// Waits until `expected` deliveries arrived or `patience` passed.
async fn settle(samples: &Shared, expected: usize, patience: Duration) {
    let deadline = Instant::now() + patience;
    while samples.lock().expect("samples").samples.len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Send times (wall ns) of the host's messages by number, shared with the readers.
type Sent = Arc<Mutex<BTreeMap<usize, u64>>>;

/// The message number in a `bench N` text.
fn number(text: &str) -> Option<usize> {
    text.strip_prefix("bench ")?.parse().ok()
}

/// One stamped delta: `d<n>@<wall ns>` and a newline (so no secret masker holds any of it back).
fn delta_text(n: usize, at_ns: u64) -> String {
    format!("d{n}@{at_ns}\n")
}

/// The send times in a delta's text (deltas of one tick arrive merged).
fn delta_stamps(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.lines().filter_map(|l| l.strip_prefix('d')?.split_once('@')?.1.parse().ok())
}

/// Records what a frame delivered at `at_ns`: the stamps of a delta (deltas), or the send time
/// of a numbered message (messages).
fn record_frame(body: &Event, sent: &Sent, samples: &Shared, at_ns: u64) {
    match body {
        Event::AgentDelta(d) => {
            let mut samples = samples.lock().expect("samples");
            for stamp in delta_stamps(&d.text) {
                samples.record(stamp, at_ns);
            }
        }
        Event::Message(m) => {
            if let Some(t) = number(&m.text).and_then(|n| sent.lock().expect("sent").get(&n).copied()) {
                samples.lock().expect("samples").record(t, at_ns);
            }
        }
        _ => {}
    }
}

/// The arguments that run [`run_agent`] as a `command` agent.
fn agent_args(o: &WireOptions) -> Vec<String> {
    ["bench", "wire-agent", "--sends", &o.sends.to_string(), "--rate", &o.per_second.to_string()]
        .map(String::from)
        .to_vec()
}

/// `roundtable bench wire-agent` (hidden): a `command` agent (docs/AGENTS.md) that answers every
/// `turn_start` with `sends` text deltas, one every `1 / per_second` s after a 100 ms pause, each
/// stamped with the wall time it was written ([`delta_text`]), then `turn_end`. A `cancel` ends
/// the turn early. Exits when its input closes.
pub fn run_agent(sends: usize, per_second: u64) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            let Ok(msg) = serde_json::from_str(&line) else { continue };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
    let every = Duration::from_nanos(1_000_000_000 / per_second.max(1));
    let mut out = std::io::stdout().lock();
    while let Ok(msg) = rx.recv() {
        if msg["type"] != "turn_start" {
            continue;
        }
        let turn = msg["turn_id"].as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        for n in 0..sends {
            if let Some(left) = (start + every * n as u32).checked_duration_since(Instant::now()) {
                std::thread::sleep(left);
            }
            if rx.try_recv().is_ok_and(|m| m["type"] == "cancel") {
                break;
            }
            let line = serde_json::json!({"type": "text", "turn_id": turn, "delta": delta_text(n, wall_ns())});
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        writeln!(out, "{}", serde_json::json!({"type": "turn_end", "turn_id": turn}))?;
        out.flush()?;
    }
    Ok(())
}

/// Roundtable's side: direct (TLS or ws, per `o.tls`), or relayed through `relay`.
async fn roundtable_side(o: &WireOptions, relay: Option<&str>) -> anyhow::Result<(Measured, usize)> {
    let scratch = crate::app::serve_child::scratch_dir("wire")?;
    let dir = scratch.path().to_path_buf();
    let mut options = HostOptions::new(dir.clone(), "127.0.0.1:0".parse()?);
    options.insecure = !o.tls && relay.is_none();
    options.fresh = true;
    if let Some(url) = relay {
        options.relay = crate::net::relay::RelayChoice::Url(url.to_string());
    }
    let (host, _events) = Host::start(options).await?;
    let agent = match o.workload {
        Workload::Deltas => Some(crate::persist::AgentSpec {
            kind: "command".into(),
            command: Some(std::env::current_exe()?.display().to_string()),
            args: agent_args(o),
            plan_first: None,
        }),
        Workload::Messages => None,
    };
    let ws: WorkspaceInfo = host
        .client
        .call(Method::AddWorkspace(AddWorkspaceParams { name: "bench".into(), dir: dir.display().to_string(), agent }))
        .await?;
    let session: SessionInfo = host
        .client
        .call(Method::CreateSession(CreateSessionParams {
            workspace_id: ws.id.clone(),
            title: "bench".into(),
            vote_deadline_ms: None,
            plan_first: None,
        }))
        .await?;
    let minted: MintShareResult =
        host.client.call(Method::MintShare(MintShareParams::team("bench", vec![ws.id.clone()]))).await?;
    let link = host.link(&minted.token);
    if relay.is_some() && link.iroh.is_none() {
        anyhow::bail!("the host could not start its iroh endpoint (see the warning above)");
    }
    host.open();
    let sent: Sent = Arc::default();
    let samples: Shared = Arc::default();
    let mut readers = Vec::new();
    for i in 0..o.clients {
        let name = format!("b{i}");
        let (c, mut events, _) = match relay {
            Some(_) => {
                let ws = crate::net::client::connect_ws_relayed_only(&link).await?;
                crate::app::serve_child::bench_remote_over(crate::net::client::Client::over(ws), &link, &name).await?
            }
            None => crate::app::serve_child::bench_remote(&link, &name).await?,
        };
        c.request(Method::JoinSession(JoinSessionParams { session_id: session.id.clone(), since_seq: Some(0) }))
            .await?;
        let (sent, samples) = (sent.clone(), samples.clone());
        readers.push(tokio::spawn(async move {
            let _keep = c;
            while let Some(ev) = events.recv().await {
                if let ClientEvent::Event { frame, .. } = ev {
                    record_frame(&frame.body, &sent, &samples, wall_ns());
                }
            }
        }));
    }
    match o.workload {
        Workload::Deltas => {
            // One prompt: the agent streams every delta of the round in its turn.
            let params =
                SendMessageParams { session_id: session.id.clone(), text: "go".into(), client_msg_id: "w".into() };
            host.client.request(Method::SendMessage(params)).await?;
        }
        Workload::Messages => {
            let mut tick = tokio::time::interval(o.every());
            for n in 0..o.sends {
                tick.tick().await;
                sent.lock().expect("sent").insert(n, wall_ns());
                let params = SendMessageParams {
                    session_id: session.id.clone(),
                    text: format!("bench {n}"),
                    client_msg_id: format!("w{n}"),
                };
                host.client.request(Method::SendMessage(params)).await?;
                let _ = host.client.request(Method::CancelTurn(SessionRef { session_id: session.id.clone() })).await;
            }
        }
    }
    let expected = o.sends * o.clients;
    settle(&samples, expected, o.patience()).await;
    let got = samples.lock().expect("samples").take();
    for r in readers {
        r.abort();
    }
    host.shutdown().await;
    drop(scratch);
    let missing = expected.saturating_sub(got.samples.len());
    Ok((got, missing))
}

/// Hands the reference its frames: for deltas, the same agent program roundtable runs, its
/// `text` lines wrapped in `agent_delta` frames as they arrive; for messages, `message` frames
/// made here at the set rate.
async fn reference_frames(o: &WireOptions, sent: Sent, tx: tokio::sync::mpsc::Sender<Arc<str>>) -> anyhow::Result<()> {
    let session = Some(crate::ids::SessionId::nth(1));
    match o.workload {
        Workload::Deltas => {
            let mut child = tokio::process::Command::new(std::env::current_exe()?)
                .args(agent_args(o))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let mut stdin = child.stdin.take().expect("piped");
            let start =
                "{\"type\":\"hello\",\"protocol\":1,\"session\":\"s1\"}\n{\"type\":\"turn_start\",\"turn_id\":1}\n";
            tokio::io::AsyncWriteExt::write_all(&mut stdin, start.as_bytes()).await?;
            let mut lines =
                tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().expect("piped")));
            while let Some(line) = lines.next_line().await? {
                let msg: serde_json::Value = serde_json::from_str(&line)?;
                match msg["type"].as_str() {
                    Some("text") => {
                        let text = msg["delta"].as_str().unwrap_or_default().to_string();
                        let body = Event::AgentDelta(AgentDelta { turn_id: 1, text });
                        let frame = EventFrame { session_id: session.clone(), seq: None, body }.to_json();
                        tx.send(Arc::from(frame)).await?;
                    }
                    Some("turn_end") => break,
                    _ => {}
                }
            }
            drop(stdin);
            let _ = child.wait().await;
        }
        Workload::Messages => {
            let mut tick = tokio::time::interval(o.every());
            for n in 0..o.sends {
                tick.tick().await;
                sent.lock().expect("sent").insert(n, wall_ns());
                // Serialised once, like roundtable's engine does, with the same shape.
                let body = Event::Message(MessageEvent {
                    message_id: crate::ids::MessageId::nth(n as u64 + 1),
                    author_id: "host".into(),
                    author_name: "Host".into(),
                    text: format!("bench {n}"),
                    client_msg_id: Some(format!("w{n}")),
                    room: false,
                    at_ms: None,
                });
                let frame = EventFrame { session_id: session.clone(), seq: Some(n as u64 + 1), body }.to_json();
                tx.send(Arc::from(frame)).await?;
            }
        }
    }
    Ok(())
}

/// The raw reference; with `fsync`, each frame is appended to that file and synced before it is
/// broadcast.
async fn reference_side(o: &WireOptions, fsync: Option<&std::path::Path>) -> anyhow::Result<Measured> {
    let mut log = match fsync {
        Some(path) => Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let clients = o.clients;
    let (tx, _) = tokio::sync::broadcast::channel::<Arc<str>>(4096);
    let tx2 = tx.clone();
    let acceptor = tokio::spawn(async move {
        for _ in 0..clients {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let mut rx = tx2.subscribe();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let (mut write, mut read) = ws.split();
                tokio::spawn(async move { while let Some(Ok(_)) = read.next().await {} });
                while let Ok(frame) = rx.recv().await {
                    if write.send(crate::net::server::ws_text(&frame)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let sent: Sent = Arc::default();
    let samples: Shared = Arc::default();
    let mut readers = Vec::new();
    for _ in 0..clients {
        // The same client settings as roundtable's clients.
        let config = crate::net::client::ws_config();
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/"), Some(config), false).await?;
        let (sent, samples) = (sent.clone(), samples.clone());
        readers.push(tokio::spawn(async move {
            let (_write, mut read) = ws.split();
            while let Some(Ok(Message::Text(t))) = read.next().await {
                let at = wall_ns();
                if let Ok(frame) = serde_json::from_str::<EventFrame>(t.as_str()) {
                    record_frame(&frame.body, &sent, &samples, at);
                }
            }
        }));
    }
    let _ = acceptor.await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel::<Arc<str>>(1024);
    let producer = {
        let (o, sent) = (o.clone(), sent.clone());
        tokio::spawn(async move { reference_frames(&o, sent, frames_tx).await })
    };
    while let Some(frame) = frames.recv().await {
        if let Some(file) = log.take() {
            let line = frame.clone();
            log = Some(
                tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
                    let mut file = file;
                    std::io::Write::write_all(&mut file, line.as_bytes())?;
                    file.sync_data()?;
                    Ok(file)
                })
                .await??,
            );
        }
        let _ = tx.send(frame);
    }
    producer.await??;
    settle(&samples, o.sends * clients, o.patience()).await;
    for r in readers {
        r.abort();
    }
    let got = samples.lock().expect("samples").take();
    Ok(got)
}

/// Runs both sides and reports (JSON with `json`).
pub fn run(o: &WireOptions, json: bool, out: &mut dyn Write) -> anyhow::Result<WireReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build()?;
    if !json {
        let what = match o.workload {
            Workload::Deltas => "agent deltas",
            Workload::Messages => "host messages",
        };
        writeln!(out, "roundtable: {} clients, {} {what} at {}/s…", o.clients, o.sends, o.per_second)?;
    }
    let scratch = crate::app::serve_child::scratch_dir("wire-fsync")?;
    let fsync_file = scratch.path().join("frames.log");
    let rounds = o.rounds.max(1);
    let (mut ours, mut theirs, mut theirs_fsync, mut relayed_rounds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut missing, mut relayed_missing_total) = (0, 0);
    for round in 1..=rounds {
        if !json {
            writeln!(out, "round {round}/{rounds}: roundtable, reference, reference with fsync…")?;
        }
        let (measured, lost) = runtime.block_on(roundtable_side(o, None))?;
        ours.push(latency(measured));
        missing += lost;
        if let Some(url) = &o.relay {
            let (measured, lost) = runtime.block_on(roundtable_side(o, Some(url)))?;
            relayed_rounds.push(latency(measured));
            relayed_missing_total += lost;
        }
        theirs.push(latency(runtime.block_on(reference_side(o, None))?));
        theirs_fsync.push(latency(runtime.block_on(reference_side(o, Some(&fsync_file)))?));
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    let (roundtable, reference, reference_fsync) =
        (median_round(ours), median_round(theirs), median_round(theirs_fsync));
    let (relayed, relayed_missing) = match o.relay {
        Some(_) => (Some(median_round(relayed_rounds)), Some(relayed_missing_total)),
        None => (None, None),
    };
    let report = WireReport {
        clients: o.clients,
        workload: o.workload,
        sends: o.sends,
        per_second: o.per_second,
        tls: o.tls,
        rounds,
        p99_ratio: roundtable.p99_ms / reference.p99_ms.max(1e-6),
        p99_ratio_fsync: roundtable.p99_ms / reference_fsync.p99_ms.max(1e-6),
        relayed_p99_ratio: relayed.as_ref().map(|r| r.p99_ms / reference.p99_ms.max(1e-6)),
        roundtable,
        reference,
        reference_fsync,
        missing,
        relayed,
        relayed_missing,
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        let show = |l: &Latency| {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms (rounds {:.2}–{:.2}), max {:.2} ms, {:.0} events/s ({} samples)",
                l.p50_ms, l.p99_ms, l.p99_spread_ms.0, l.p99_spread_ms.1, l.max_ms, l.events_per_s, l.samples
            )
        };
        writeln!(out, "roundtable ({}): {}", if o.tls { "TLS" } else { "ws" }, show(&report.roundtable))?;
        if let (Some(relayed), Some(ratio), Some(missing)) =
            (&report.relayed, report.relayed_p99_ratio, report.relayed_missing)
        {
            writeln!(
                out,
                "roundtable (relayed): {} — p99 ratio {ratio:.2}; {missing} deliveries missing",
                show(relayed)
            )?;
        }
        writeln!(out, "reference (ws):  {}", show(&report.reference))?;
        writeln!(out, "reference (ws, fsync before each broadcast):  {}", show(&report.reference_fsync))?;
        writeln!(
            out,
            "median of {rounds} rounds; p99 ratio: {:.2} (roundtable / reference), {:.2} (roundtable / fsyncing reference); \
             {} deliveries missing",
            report.p99_ratio, report.p99_ratio_fsync, report.missing
        )?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stamp_of_deltas_merged_in_one_tick_is_read_back() {
        let merged = format!("{}{}{}", delta_text(0, 10), delta_text(1, 20), delta_text(2, 3_000_000_000_000_000_000));
        assert_eq!(delta_stamps(&merged).collect::<Vec<_>>(), vec![10, 20, 3_000_000_000_000_000_000]);
        assert_eq!(delta_stamps("go\nd7@\n").count(), 0, "not a stamp");
    }

    #[test]
    fn a_rate_sets_the_interval_between_sends() {
        let o = WireOptions {
            clients: 1,
            sends: 10,
            per_second: 4000,
            workload: Workload::Deltas,
            tls: false,
            relay: None,
            rounds: 1,
        };
        assert_eq!(o.every(), Duration::from_micros(250));
        assert_eq!(agent_args(&o), ["bench", "wire-agent", "--sends", "10", "--rate", "4000"]);
    }
}
