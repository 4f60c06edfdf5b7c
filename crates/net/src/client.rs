//! A protocol client: connects from a share link (TLS with the pinned fingerprint, or plain
//! `ws://` for `#insecure` links), matches responses to requests by id, and delivers everything
//! else (events, unsolicited responses, the close) through a channel.
//!
//! The same [`Client`] also drives the host's own in-process connection
//! ([`Client::in_process`]): frames go straight into the engine's inbox and come back through a
//! [`FrameSink`], with no socket in between. `serve` uses that to create sessions, mint shares and
//! watch activity through exactly the protocol a remote uses.

use crate::engine::{Frame, FrameSink, Inbound};
use crate::ids::ConnId;
use crate::keepalive::{Due, Keepalive, Watch};
use crate::link::Link;
use crate::protocol::{ErrorCode, EventFrame, Method, ProtocolError, Request};
use crate::tls;
use crossbeam_channel::Sender;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

/// Any byte stream a WebSocket can run over (TCP, TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A client WebSocket, over TLS or plain TCP.
pub type WsStream = WebSocketStream<Box<dyn Io>>;

/// How long a TCP connection attempt may take (a firewall that drops packets would otherwise
/// keep a client waiting for minutes).
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Client::request`] waits for an answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why connecting or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {addr}: {cause}{}", relay.as_deref().map(|r| format!("; {r}")).unwrap_or_default())]
    Connect {
        addr: String,
        /// Shown in the message, not chained as a source (it would be printed twice).
        cause: std::io::Error,
        /// Why the link's iroh endpoint did not answer either, when it names one.
        relay: Option<String>,
    },
    #[error("certificate fingerprint mismatch: expected {expected}, got {got} — the link may be wrong or someone is intercepting")]
    FingerprintMismatch { expected: String, got: String },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    TlsSetup(#[from] tls::TlsError),
    #[error("WebSocket handshake with {addr} failed: {detail}")]
    Handshake { addr: String, detail: String },
    /// The iroh endpoint named by the link could not be reached (through its relay or direct).
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
    /// The host answered with an error.
    #[error("{}: {}", .0.code.as_str(), .0.message)]
    Protocol(ProtocolError),
    #[error("the connection is closed{}", .0.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Closed(Option<String>),
    #[error("no answer to {method} within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { method: &'static str },
    #[error("unexpected result of {method}: {detail}")]
    BadResult { method: &'static str, detail: String },
}

impl ClientError {
    /// The protocol error code, when the host answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Protocol(e) => Some(e.code),
            _ => None,
        }
    }

    /// Whether the host refused for now, not for good: it cannot store right now
    /// (`storage_unavailable`) or asks to slow down (`rate_limited`). Our clients retry such a
    /// refusal after [`ClientError::retry_after`]; every other refusal is an answer.
    pub fn is_transient_refusal(&self) -> bool {
        matches!(self.code(), Some(ErrorCode::StorageUnavailable | ErrorCode::RateLimited))
    }

    /// How long to wait before retrying a transient refusal: the host's `retry_after_ms`, else a
    /// second (`rate_limited` after failed authentications lasts up to a minute; callers back off).
    pub fn retry_after(&self) -> Duration {
        match self {
            ClientError::Protocol(e) => e.retry_after(),
            _ => Duration::from_secs(1),
        }
    }
}

/// Which way a connection reached the host.
#[derive(Clone, Debug)]
pub enum Route {
    /// A TCP connection to one of the link's addresses (`HOST:PORT`).
    Address(String),
    /// The host's iroh endpoint: relayed, or direct once hole punching succeeds. The receiver
    /// follows the changes for as long as the connection lives.
    Iroh(tokio::sync::watch::Receiver<crate::relay::PathKind>),
}

impl Route {
    /// The iroh path now, for a connection through iroh.
    pub fn iroh_path(&self) -> Option<crate::relay::PathKind> {
        match self {
            Route::Address(_) => None,
            Route::Iroh(path) => Some(path.borrow().clone()),
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Address(addr) => f.write_str(addr),
            Route::Iroh(path) => write!(f, "the host's iroh endpoint, {}", *path.borrow()),
        }
    }
}

/// Opens a TCP connection to the link's host and runs the TLS and WebSocket handshakes.
///
/// A link naming several addresses ([`Link::addresses`]) and an iroh endpoint is dialed at all
/// of them at once; the first connection that completes the handshakes — so proves the pinned
/// certificate, or the pinned endpoint key — is kept and the others are dropped. When none does,
/// the error is the first address's.
pub async fn connect_ws(link: &Link) -> Result<WsStream, ClientError> {
    Ok(connect_ws_via(link).await?.0)
}

/// [`connect_ws`], also saying which way the connection reached the host.
pub async fn connect_ws_via(link: &Link) -> Result<(WsStream, Route), ClientError> {
    use futures_util::future::BoxFuture;
    use futures_util::stream::{FuturesUnordered, StreamExt};
    type Attempt = BoxFuture<'static, (usize, Result<(WsStream, Route), ClientError>)>;
    let mut attempts: FuturesUnordered<Attempt> = link
        .addresses()
        .enumerate()
        .map(|(i, one)| -> Attempt {
            Box::pin(async move { (i, dial(&one).await.map(|ws| (ws, Route::Address(one.authority())))) })
        })
        .collect();
    if let Some(iroh) = link.iroh.clone() {
        let authority = link.authority();
        attempts.push(Box::pin(async move { (usize::MAX, dial_iroh(&iroh, &authority, false).await) }));
    }
    let (mut first_error, mut relay_error) = (None, None);
    while let Some((i, attempt)) = attempts.next().await {
        match attempt {
            Ok(connected) => return Ok(connected),
            Err(e) if i == 0 => first_error = Some(e),
            Err(e) if i == usize::MAX => relay_error = Some(e.to_string()),
            Err(e) => tracing::debug!("{e}"),
        }
    }
    // The first address's error decides what the caller does (retry, give up); a host unreachable
    // both ways says so.
    match first_error.expect("the first address was dialed") {
        ClientError::Connect { addr, cause, .. } => Err(ClientError::Connect { addr, cause, relay: relay_error }),
        other => Err(other),
    }
}

/// Connects to the link's iroh endpoint only, with no IP path of the client's own: every byte
/// goes through the relay (what `bench wire --relay` measures).
pub async fn connect_ws_relayed_only(link: &Link) -> Result<WsStream, ClientError> {
    let iroh = link.iroh.as_ref().ok_or_else(|| ClientError::Handshake {
        addr: link.authority(),
        detail: "the link names no iroh endpoint".into(),
    })?;
    Ok(dial_iroh(iroh, &link.authority(), true).await?.0)
}

/// Dials the host's iroh endpoint and runs the WebSocket handshake over the stream. No TLS inside:
/// the QUIC handshake proved the endpoint key the link pins, and QUIC encrypts end to end.
async fn dial_iroh(
    iroh: &crate::link::IrohAddr,
    authority: &str,
    relay_only: bool,
) -> Result<(WsStream, Route), ClientError> {
    let stream = crate::relay::dial_with(iroh, relay_only).await?;
    let path = stream.path();
    let ws = websocket_handshake(Box::new(stream), "ws", authority).await?;
    Ok((ws, Route::Iroh(path)))
}

/// Connects to the link's first address only.
async fn dial(link: &Link) -> Result<WsStream, ClientError> {
    let addr = link.authority();
    let connect = TcpStream::connect((link.host.as_str(), link.port));
    let tcp = match tokio::time::timeout(TCP_CONNECT_TIMEOUT, connect).await {
        Ok(connected) => connected,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}s", TCP_CONNECT_TIMEOUT.as_secs()),
        )),
    }
    .map_err(|cause| ClientError::Connect { addr: addr.clone(), cause, relay: None })?;
    handshake(tcp, link).await
}

/// Runs the TLS (pinned to the link's fingerprint) and WebSocket handshakes over an already
/// connected socket. Split from [`connect_ws`] so callers can tune the socket first.
pub async fn handshake(tcp: TcpStream, link: &Link) -> Result<WsStream, ClientError> {
    let _ = tcp.set_nodelay(true);
    handshake_over(tcp, link).await
}

/// [`handshake`] over any connected byte stream (a simulated network's, in tests).
pub async fn handshake_over<S: Io + 'static>(stream: S, link: &Link) -> Result<WsStream, ClientError> {
    let addr = link.authority();
    let (io, scheme): (Box<dyn Io>, &str) = match &link.fingerprint {
        Some(fingerprint) => {
            let config = tls::client_config_pinned(fingerprint)?;
            let connector = tokio_rustls::TlsConnector::from(config);
            match connector.connect(tls::server_name(&link.host), stream).await {
                Ok(stream) => (Box::new(stream), "wss"),
                Err(source) => {
                    return Err(match tls::fingerprint_mismatch(&source) {
                        Some(m) => ClientError::FingerprintMismatch { expected: m.expected, got: m.got },
                        None => ClientError::Tls { addr, source },
                    })
                }
            }
        }
        None => (Box::new(stream), "ws"),
    };
    websocket_handshake(io, scheme, &addr).await
}

/// The WebSocket handshake as a client over an established byte stream.
async fn websocket_handshake(io: Box<dyn Io>, scheme: &str, addr: &str) -> Result<WsStream, ClientError> {
    let url = format!("{scheme}://{addr}/");
    match tokio_tungstenite::client_async_with_config(url, io, Some(ws_config())).await {
        Ok((ws, _response)) => Ok(ws),
        Err(e) => Err(ClientError::Handshake { addr: addr.to_string(), detail: e.to_string() }),
    }
}

/// The WebSocket settings of our clients. Frames from the host can be larger than the 64 KiB
/// request cap (snapshots of long sessions). tungstenite zero-fills its whole read buffer's free
/// space before every read: its default 128 KiB made each small event cost a 128 KiB `memset`
/// (14 % of the CPU of 50 clients taking 500 messages/s); 16 KiB reads a large message in a few
/// more steps.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(64 << 20)).read_buffer_size(16 * 1024)
}

/// Something the host sent that is not the answer to a pending [`Client::request`].
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// An event frame; `raw` is the exact text received.
    Event { frame: Box<EventFrame>, raw: String },
    /// A response nobody is waiting for (to a request sent with [`Client::send_raw`]).
    Response { raw: String },
    /// A frame that is neither an event nor a response (unknown event, garbage).
    Other { raw: String },
    /// The response to a [`Client::request`] with this id was received here, between the
    /// events around it (the response itself went to the waiting caller). Lets a consumer tell
    /// the events that preceded a response from those that followed it. `ok`: a result, not an
    /// error.
    Answered { id: Value, ok: bool },
    /// The connection ended; `reason` is the close frame's reason when there was one.
    Closed { reason: Option<String> },
}

/// The answer to one request.
#[derive(Clone, Debug)]
pub struct Response {
    /// The echoed request id.
    pub id: Value,
    /// `result` or `error`.
    pub outcome: Result<Value, ProtocolError>,
    /// The exact text received.
    pub raw: String,
}

/// Receives what the host sends outside request/response pairs.
pub type Events = mpsc::UnboundedReceiver<ClientEvent>;

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>;

/// Routes incoming frames: responses to their waiting request, the rest to the event channel.
#[derive(Clone)]
struct Dispatch {
    pending: Pending,
    events: mpsc::UnboundedSender<ClientEvent>,
}

impl Dispatch {
    fn frame(&self, raw: String) {
        let value: Value = match serde_json::from_str(&raw) {
            Ok(v) => v,
            Err(_) => {
                let _ = self.events.send(ClientEvent::Other { raw });
                return;
            }
        };
        if value.get("event").is_some() {
            match serde_json::from_value::<EventFrame>(value) {
                Ok(frame) => {
                    let _ = self.events.send(ClientEvent::Event { frame: Box::new(frame), raw });
                }
                Err(e) => {
                    debug!("unparsed event ({e}): {raw}");
                    let _ = self.events.send(ClientEvent::Other { raw });
                }
            }
            return;
        }
        let (Some(id), true) = (value.get("id"), value.get("result").is_some() || value.get("error").is_some()) else {
            let _ = self.events.send(ClientEvent::Other { raw });
            return;
        };
        let waiter = self.pending.lock().expect("pending lock").remove(&id.to_string());
        match waiter {
            Some(waiter) => {
                let outcome = match value.get("error") {
                    Some(err) => Err(serde_json::from_value::<ProtocolError>(err.clone())
                        .unwrap_or_else(|_| ProtocolError::new(ErrorCode::Internal, err.to_string()))),
                    None => Ok(value.get("result").cloned().unwrap_or(Value::Null)),
                };
                let ok = outcome.is_ok();
                let _ = waiter.send(Response { id: id.clone(), outcome, raw });
                let _ = self.events.send(ClientEvent::Answered { id: id.clone(), ok });
            }
            None => {
                let _ = self.events.send(ClientEvent::Response { raw });
            }
        }
    }

    fn closed(&self, reason: Option<String>) {
        // Waiting requests fail with `Closed` when their sender is dropped.
        self.pending.lock().expect("pending lock").clear();
        let _ = self.events.send(ClientEvent::Closed { reason });
    }
}

/// Where a client's outgoing frames go.
#[derive(Clone)]
enum Outlet {
    /// To the socket task.
    Socket(mpsc::UnboundedSender<Outgoing>),
    /// Straight into the engine's inbox (the host's own connection).
    Engine { tx: Sender<Inbound>, conn: ConnId },
}

enum Outgoing {
    Text(String),
    Close,
}

/// A connection to a host. Cheap to clone; every clone shares the connection.
#[derive(Clone)]
pub struct Client {
    outlet: Outlet,
    pending: Pending,
    next_id: Arc<AtomicU64>,
}

impl Client {
    /// Connects to the host named by `link` (no authentication yet).
    pub async fn connect(link: &Link) -> Result<(Client, Events), ClientError> {
        Ok(Client::over(connect_ws(link).await?))
    }

    /// [`Client::connect`], also saying which way the connection reached the host.
    pub async fn connect_via(link: &Link) -> Result<(Client, Events, Route), ClientError> {
        let (ws, via) = connect_ws_via(link).await?;
        let (client, events) = Client::over(ws);
        Ok((client, events, via))
    }

    /// Runs the protocol over an established WebSocket (pinging the host; a host silent for
    /// 45 s ends the connection, so the caller reconnects).
    pub fn over(ws: WsStream) -> (Client, Events) {
        Client::over_with(ws, Keepalive::default())
    }

    /// [`Client::over`] with a keepalive of the caller's choice.
    pub fn over_with(ws: WsStream, keepalive: Keepalive) -> (Client, Events) {
        let (events_tx, events) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let dispatch = Dispatch { pending: pending.clone(), events: events_tx };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(socket_task(ws, out_rx, dispatch, Watch::new(keepalive)));
        (Client { outlet: Outlet::Socket(out_tx), pending, next_id: Arc::new(AtomicU64::new(0)) }, events)
    }

    /// Opens the host's own in-process connection to an engine (authenticated as `host`).
    /// Must be called inside a tokio runtime.
    pub fn in_process(engine: Sender<Inbound>, conn: ConnId) -> (Client, Events) {
        let (events_tx, events) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let dispatch = Dispatch { pending: pending.clone(), events: events_tx };
        let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<LocalOut>();
        let sink = Arc::new(LocalSink { tx: frames_tx });
        // Parse on a tokio task, not on the engine thread that calls the sink.
        tokio::spawn(async move {
            while let Some(out) = frames_rx.recv().await {
                match out {
                    LocalOut::Frame(frame) => dispatch.frame(frame.to_string()),
                    LocalOut::Close(reason) => return dispatch.closed(Some(reason)),
                }
            }
            dispatch.closed(None);
        });
        let _ = engine.send(Inbound::OpenedHost { conn, sink });
        let client =
            Client { outlet: Outlet::Engine { tx: engine, conn }, pending, next_id: Arc::new(AtomicU64::new(0)) };
        (client, events)
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&self, method: Method) -> Result<Value, ClientError> {
        let name = method.name();
        let response = self.request_full(method).await?;
        response.outcome.map_err(|e| {
            debug!("{name} refused: {e}");
            ClientError::Protocol(e)
        })
    }

    /// Sends a request and decodes its result as `T`.
    pub async fn call<T: DeserializeOwned>(&self, method: Method) -> Result<T, ClientError> {
        let name = method.name();
        let value = self.request(method).await?;
        serde_json::from_value(value).map_err(|e| ClientError::BadResult { method: name, detail: e.to_string() })
    }

    /// Sends a request and returns the whole response (result or error, and the raw text).
    pub async fn request_full(&self, method: Method) -> Result<Response, ClientError> {
        self.request_full_with(method, |_| {}).await
    }

    /// [`Client::request_full`], telling `sending` the request's id just before it is sent — so
    /// a consumer of the event stream can know the id before [`ClientEvent::Answered`] with it
    /// can arrive (e.g. a `join_session` whose catch-up follows its answer).
    pub async fn request_full_with(
        &self,
        method: Method,
        sending: impl FnOnce(&Value),
    ) -> Result<Response, ClientError> {
        let name = method.name();
        // String ids ("r1", "r2", ...) so they never collide with numeric ids of raw requests.
        let id = Value::String(format!("r{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1));
        sending(&id);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id.to_string(), tx);
        let frame = Request { id: id.clone(), method }.to_frame();
        if let Err(e) = self.send_raw(frame) {
            self.pending.lock().expect("pending lock").remove(&id.to_string());
            return Err(e);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(ClientError::Closed(None)),
            Err(_) => {
                self.pending.lock().expect("pending lock").remove(&id.to_string());
                Err(ClientError::Timeout { method: name })
            }
        }
    }

    /// Sends a text frame as is (its response, if any, arrives as [`ClientEvent::Response`]).
    pub fn send_raw(&self, text: String) -> Result<(), ClientError> {
        let sent = match &self.outlet {
            Outlet::Socket(tx) => tx.send(Outgoing::Text(text)).is_ok(),
            Outlet::Engine { tx, conn } => tx.send(Inbound::Frame { conn: *conn, text }).is_ok(),
        };
        if sent {
            Ok(())
        } else {
            Err(ClientError::Closed(None))
        }
    }

    /// Closes the connection politely (a WebSocket close frame; for the in-process connection,
    /// tells the engine it is gone).
    pub fn close(&self) {
        match &self.outlet {
            Outlet::Socket(tx) => {
                let _ = tx.send(Outgoing::Close);
            }
            Outlet::Engine { tx, conn } => {
                let _ = tx.send(Inbound::Closed { conn: *conn });
            }
        }
    }
}

async fn socket_task(
    ws: WsStream,
    mut out: mpsc::UnboundedReceiver<Outgoing>,
    dispatch: Dispatch,
    mut keepalive: Watch,
) {
    let (mut write, mut read) = ws.split();
    let mut close_reason = None;
    loop {
        tokio::select! {
            due = keepalive.due() => match due {
                Due::Ping => {
                    if let Err(e) = write.send(Message::Ping(Default::default())).await {
                        debug!("connection write failed: {e}");
                        break;
                    }
                }
                Due::Silent => {
                    debug!("the host did not answer for {:?}; closing", keepalive.silent_after());
                    close_reason = Some("the host stopped answering".to_string());
                    break;
                }
            },
            msg = read.next() => match msg.inspect(|m| if m.is_ok() { keepalive.heard() }) {
                Some(Ok(Message::Text(text))) => dispatch.frame(text.as_str().to_string()),
                Some(Ok(Message::Binary(bytes))) => {
                    if let Ok(text) = String::from_utf8(bytes.to_vec()) {
                        dispatch.frame(text);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    close_reason = frame.map(|f| f.reason.as_str().to_string()).filter(|r| !r.is_empty());
                    // tungstenite answers the close; flush it out.
                    let _ = write.flush().await;
                    break;
                }
                Some(Ok(_)) => {
                    let _ = write.flush().await;
                }
                Some(Err(e)) => {
                    debug!("connection read failed: {e}");
                    break;
                }
                None => break,
            },
            item = out.recv() => match item {
                Some(Outgoing::Text(text)) => {
                    if let Err(e) = write.send(Message::text(text)).await {
                        debug!("connection write failed: {e}");
                        break;
                    }
                }
                Some(Outgoing::Close) | None => {
                    let _ = write.send(Message::Close(None)).await;
                    // Wait (briefly) for the host's answering close so it sees a clean shutdown.
                    let drain = async { while let Some(Ok(_)) = read.next().await {} };
                    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
                    break;
                }
            },
        }
    }
    dispatch.closed(close_reason);
}

enum LocalOut {
    Frame(Frame),
    Close(String),
}

/// The engine's sink for the host's in-process connection. Unbounded: the host consumes its
/// own frames promptly, and its connection must never be told to resync.
struct LocalSink {
    tx: mpsc::UnboundedSender<LocalOut>,
}

impl FrameSink for LocalSink {
    fn try_send(&self, frame: &Frame) -> bool {
        let _ = self.tx.send(LocalOut::Frame(frame.clone()));
        true
    }

    fn close(&self, reason: &str) {
        let _ = self.tx.send(LocalOut::Close(reason.to_string()));
    }
}
