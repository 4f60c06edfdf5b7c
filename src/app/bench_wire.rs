//! `roundtable bench wire`: send→receive latency and throughput over real WebSockets, against a
//! raw tokio-tungstenite broadcast server measured in the same run.
//!
//! Roundtable: an in-process host (engine thread, production server, TLS unless `--insecure`)
//! with `--clients N` remotes (the production client) joined to one session. The host sends
//! `--messages M` chat messages, one every `--every-ms` ms (cancelling each agent turn at once,
//! so the next message is not turn-locked); every client timestamps the `message` event.
//! Reference: a minimal server that serialises each frame once and writes it to N plain
//! WebSocket clients, driven at the same rate with frames of the same shape.
//! Latency = receive time − send time, over every (message, client) pair; the report gives
//! p50/p99/max and events/s (deliveries over the time from the first send to the last delivery)
//! for both and the ratio of the p99s. A second reference also appends each frame to a file and
//! fsyncs it before broadcasting it (roundtable commits before it sends). The sides run in
//! `--rounds` alternating rounds (roundtable, reference, reference with fsync, again…); each
//! side's figures are those of its median round by p99, with the min–max of p99 over the rounds.
//!
//! With `--relay URL` roundtable runs once more, relayed: the host's iroh endpoint waits at that
//! relay and the remotes reach it only through it (they have no IP path of their own), so every
//! frame crosses the relay — side by side with the direct TLS run.

use crate::app::host::{Host, HostOptions};
use crate::net::client::ClientEvent;
use crate::protocol::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// What to run.
#[derive(Clone, Debug)]
pub struct WireOptions {
    pub clients: usize,
    pub messages: usize,
    pub every_ms: u64,
    pub tls: bool,
    /// Also run relayed through this iroh relay.
    pub relay: Option<String>,
    /// Alternating rounds of every side.
    pub rounds: usize,
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
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WireReport {
    pub clients: usize,
    pub messages: usize,
    pub every_ms: u64,
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
    /// (message, client) pairs that never arrived at roundtable's clients.
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

/// When each delivery arrived, shared with the readers: latencies (ms) and the last arrival.
#[derive(Default)]
struct Deliveries {
    samples: Vec<f64>,
    last: Option<Instant>,
}

impl Deliveries {
    fn record(&mut self, sent: Instant, at: Instant) {
        self.samples.push(at.duration_since(sent).as_secs_f64() * 1000.0);
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    fn take(&mut self, first_send: Option<Instant>) -> Measured {
        let span_s = match (first_send, self.last) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
            _ => 0.0,
        };
        Measured { samples: std::mem::take(&mut self.samples), span_s }
    }
}

/// Send instants by message number, shared with the readers.
type Sent = Arc<Mutex<BTreeMap<usize, Instant>>>;

/// The message number in a `bench N` text.
fn number(text: &str) -> Option<usize> {
    text.strip_prefix("bench ")?.parse().ok()
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
    let ws: WorkspaceInfo = host
        .client
        .call(Method::AddWorkspace(AddWorkspaceParams {
            name: "bench".into(),
            dir: dir.display().to_string(),
            agent: None,
        }))
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
    let samples = Arc::new(Mutex::new(Deliveries::default()));
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
                    if let Event::Message(m) = &frame.body {
                        let at = Instant::now();
                        if let Some(t) = number(&m.text).and_then(|n| sent.lock().expect("sent").get(&n).copied()) {
                            samples.lock().expect("samples").record(t, at);
                        }
                    }
                }
            }
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(o.every_ms.max(1)));
    for n in 0..o.messages {
        tick.tick().await;
        sent.lock().expect("sent").insert(n, Instant::now());
        let params = SendMessageParams {
            session_id: session.id.clone(),
            text: format!("bench {n}"),
            client_msg_id: format!("w{n}"),
        };
        host.client.request(Method::SendMessage(params)).await?;
        let _ = host.client.request(Method::CancelTurn(SessionRef { session_id: session.id.clone() })).await;
    }
    let expected = o.messages * o.clients;
    let deadline = Instant::now() + Duration::from_secs(10);
    while samples.lock().expect("samples").samples.len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_send = sent.lock().expect("sent").get(&0).copied();
    let got = samples.lock().expect("samples").take(first_send);
    for r in readers {
        r.abort();
    }
    host.shutdown().await;
    drop(scratch);
    let missing = expected.saturating_sub(got.samples.len());
    Ok((got, missing))
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
    let samples = Arc::new(Mutex::new(Deliveries::default()));
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
                let at = Instant::now();
                let frame: EventFrame = match serde_json::from_str(t.as_str()) {
                    Ok(f) => f,
                    Err(_) => continue,
                };
                if let Event::Message(m) = &frame.body {
                    if let Some(t) = number(&m.text).and_then(|n| sent.lock().expect("sent").get(&n).copied()) {
                        samples.lock().expect("samples").record(t, at);
                    }
                }
            }
        }));
    }
    let _ = acceptor.await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut tick = tokio::time::interval(Duration::from_millis(o.every_ms.max(1)));
    for n in 0..o.messages {
        tick.tick().await;
        sent.lock().expect("sent").insert(n, Instant::now());
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
        let frame: Arc<str> = Arc::from(
            EventFrame { session_id: Some(crate::ids::SessionId::nth(1)), seq: Some(n as u64 + 1), body }.to_json(),
        );
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
    let expected = o.messages * o.clients;
    let deadline = Instant::now() + Duration::from_secs(10);
    while samples.lock().expect("samples").samples.len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in readers {
        r.abort();
    }
    let first_send = sent.lock().expect("sent").get(&0).copied();
    let got = samples.lock().expect("samples").take(first_send);
    Ok(got)
}

/// Runs both sides and reports (JSON with `json`).
pub fn run(o: &WireOptions, json: bool, out: &mut dyn Write) -> anyhow::Result<WireReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build()?;
    if !json {
        writeln!(out, "roundtable: {} clients, {} messages every {} ms…", o.clients, o.messages, o.every_ms)?;
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
        messages: o.messages,
        every_ms: o.every_ms,
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
