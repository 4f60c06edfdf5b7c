//! The WebSocket server: accepts TCP connections, wraps them in TLS (unless `--insecure`),
//! speaks WebSocket, and shuttles text frames between each socket and the engine.
//!
//! ```text
//!   socket ──read──► Inbound::Frame ──► engine inbox (crossbeam)
//!   socket ◄─write── WsSink queue  ◄── engine outbox (FrameSink::try_send, never blocks)
//! ```
//!
//! One tokio task per connection multiplexes reading, writing, keepalive and shutdown with
//! `select!`. Writing is a future of its own beside the others, never awaited inside one of
//! their arms: a client that stops reading blocks only the writes, and its frames are still
//! read, answered and counted as signs of life.
//! The engine never waits for a socket: [`WsSink::try_send`] refuses a frame when the
//! connection's queue already holds [`ServerOptions::queue_frames`] frames or
//! [`ServerOptions::queue_bytes`] bytes, and the engine keeps it in its own bounded outbox
//! (coalescing agent deltas, and finally sending `resync_required`). That bounded queue is what
//! keeps one slow consumer from slowing the tick or anyone else.
//!
//! Frames are shared, not copied: every recipient's WebSocket message points at the one
//! serialised `Frame` the engine made ([`ws_text`]).
//!
//! Frame size: the protocol caps frames at 64 KiB, but the socket accepts up to
//! [`ServerOptions::max_message_bytes`] (1 MiB by default) so that an oversize frame reaches the
//! engine and is answered with a typed `frame_too_large` error while the connection stays up.
//! Anything beyond that is closed with a WebSocket close frame (1009, "message too big").

use crate::engine::{Frame, FrameSink, Inbound};
use crate::ids::ConnId;
use crate::protocol::{Closing, Event, EventFrame};
use crossbeam_channel::Sender;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info, warn};

/// Hands out connection ids, unique for the life of the process. Shared by every transport that
/// feeds one engine (the WebSocket server and the host's in-process connection).
#[derive(Debug, Default)]
pub struct ConnIds(AtomicU64);

impl ConnIds {
    /// A fresh allocator; the first id is `c1`.
    pub fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(0)))
    }

    /// The next unused connection id.
    pub fn next(&self) -> ConnId {
        ConnId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// TLS configuration; `None` serves plain `ws://` (only allowed on loopback, checked by `serve`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest WebSocket message read from a client. Larger ones close the socket.
    pub max_message_bytes: usize,
    /// Frames a connection's transport queue holds before `try_send` refuses.
    pub queue_frames: usize,
    /// Bytes a connection's transport queue holds before `try_send` refuses (one larger frame
    /// is still taken when the queue is empty).
    pub queue_bytes: usize,
    /// Time a client gets for the TLS and WebSocket handshakes.
    pub handshake_timeout: Duration,
    /// Kernel send buffer per accepted socket (`SO_SNDBUF`); `None` keeps the system default.
    /// Tests set it small to make a slow consumer visible quickly.
    pub send_buffer_bytes: Option<u32>,
    /// Bytes a connection gathers before writing to the socket without waiting for a flush
    /// ([`crate::gather::Gather`]; frames are flushed whenever the queue runs empty anyway, and
    /// the buffer is freed once written out). Tests set 0 so a slow consumer's backlog shows up
    /// in the bounded queue instead of this buffer. tungstenite's own buffering is off: its
    /// buffer keeps the largest size it ever reached, so it only ever holds one WebSocket frame,
    /// and larger messages go out in fragments of [`FRAGMENT_BYTES`] (a joined connection does
    /// not keep the size of its join result and snapshot).
    pub write_buffer_bytes: usize,
    /// Bytes tungstenite reads from the socket at a time (its `read_buffer_size`), allocated
    /// for every connection up front: small, so idle connections stay cheap (tungstenite's
    /// default, 128 KiB, made every idle connection cost ~144 KiB). A larger message still
    /// arrives whole; it is read in several steps.
    pub read_buffer_bytes: usize,
    /// Pings to each client and how long a silent client is kept.
    pub keepalive: crate::keepalive::Keepalive,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            tls: None,
            max_message_bytes: 1024 * 1024,
            queue_frames: 64,
            queue_bytes: 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            send_buffer_bytes: None,
            write_buffer_bytes: 8 * 1024,
            read_buffer_bytes: 2 * 1024,
            keepalive: Default::default(),
        }
    }
}

/// A running server. Dropping it does not stop it; call [`ServerHandle::shutdown`] (graceful) or
/// [`ServerHandle::abort`] (drops every socket at once, like a crash).
pub struct ServerHandle {
    /// The address the listener is bound to (useful with port 0).
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Starts accepting connections. Until then the listener is bound (so its port is known and
    /// connects wait in the kernel's backlog) but nobody is accepted: a host opens its doors only
    /// once it is ready (sessions open, `serve.json` written), so nobody meets a half-started host.
    pub fn open(&self) {
        let _ = self.open.send(true);
    }

    /// Stops accepting, sends every connection a `closing` event and a close frame (after the
    /// frames already queued), reports each as closed to the engine, and waits for that.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.task.await {
            if !e.is_cancelled() {
                warn!("server task failed: {e}");
            }
        }
    }

    /// Drops the listener and every connection without a close frame (crash simulation), and
    /// waits until they are gone (so the port can be bound again).
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Where connections come from: a bound socket that hands out accepted byte streams and their
/// peers' addresses. The server needs nothing else of it, so the same accept loop and connection
/// code serve a real [`TcpListener`] in production and a simulated network in tests
/// (`crates/sim/tests/net_sim.rs` runs them over turmoil's).
pub trait Listener: Send + 'static {
    /// An accepted connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection; also says who is on the other end (`IP:PORT` for a socket,
    /// the engine keys its per-address limits by the IP; `iroh:ENDPOINT_ID` over iroh).
    fn accept(&self) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, String)>> + Send;

    /// The address the listener is bound to.
    fn local_addr(&self) -> std::io::Result<SocketAddr>;

    /// Tunes a freshly accepted connection before its handshakes. Only real sockets have knobs
    /// (`SO_SNDBUF`, `TCP_NODELAY`); the default does nothing.
    fn tune(_stream: &Self::Stream, _options: &ServerOptions) {}
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&self) -> std::io::Result<(TcpStream, String)> {
        TcpListener::accept(self).await.map(|(tcp, peer)| (tcp, peer.to_string()))
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }

    fn tune(tcp: &TcpStream, options: &ServerOptions) {
        if let Some(bytes) = options.send_buffer_bytes {
            set_send_buffer(tcp, bytes);
        }
        let _ = tcp.set_nodelay(true);
    }
}

/// Starts serving `listener` on the current tokio runtime. Every connection is announced to the
/// engine through `inbound` with an id from `ids`. Nothing is accepted before
/// [`ServerHandle::open`].
pub fn start_server(
    listener: TcpListener,
    options: ServerOptions,
    inbound: Sender<Inbound>,
    ids: Arc<ConnIds>,
) -> std::io::Result<ServerHandle> {
    start_server_on(listener, options, inbound, ids)
}

/// [`start_server`] on any [`Listener`].
pub fn start_server_on<L: Listener>(
    listener: L,
    options: ServerOptions,
    inbound: Sender<Inbound>,
    ids: Arc<ConnIds>,
) -> std::io::Result<ServerHandle> {
    let local_addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (open, open_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, options, inbound, ids, open_rx, shutdown_rx));
    info!("bound to {local_addr}; accepting once the host is ready");
    Ok(ServerHandle { local_addr, shutdown, open, task })
}

/// How long graceful shutdown waits for connections to flush and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

async fn accept_loop<L: Listener>(
    listener: L,
    options: ServerOptions,
    inbound: Sender<Inbound>,
    ids: Arc<ConnIds>,
    mut open: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::select! {
        opened = open.wait_for(|open| *open) => {
            if opened.is_err() {
                return; // the handle is gone without ever opening
            }
        }
        _ = shutdown.changed() => return,
    }
    info!("accepting connections on {:?}", listener.local_addr());
    // Connection tasks live in the set: aborting this task drops the set, which aborts them all.
    let mut conns = tokio::task::JoinSet::new();
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    L::tune(&stream, &options);
                    let ctx = ConnCtx {
                        peer,
                        options: options.clone(),
                        inbound: inbound.clone(),
                        ids: ids.clone(),
                        shutdown: shutdown.clone(),
                    };
                    let acceptor = acceptor.clone();
                    conns.spawn(async move { ctx.run(stream, acceptor).await });
                }
                Err(e) => {
                    // Usually EMFILE; back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!("some connections did not close within {SHUTDOWN_GRACE:?}; dropping them");
    }
}

fn set_send_buffer(tcp: &TcpStream, bytes: u32) {
    use std::os::fd::{AsRawFd, FromRawFd};
    // tokio's TcpStream has no SO_SNDBUF setter; borrow the fd as a TcpSocket just to set it.
    // SAFETY: the fd stays owned by `tcp`; ManuallyDrop keeps the borrowed view from closing it.
    let sock = std::mem::ManuallyDrop::new(unsafe { tokio::net::TcpSocket::from_raw_fd(tcp.as_raw_fd()) });
    if let Err(e) = sock.set_send_buffer_size(bytes) {
        warn!("cannot set SO_SNDBUF: {e}");
    }
}

/// What the writer half of a connection is asked to do, in order.
enum Out {
    Frame(Frame),
    Close(String),
}

/// What a connection's transport queue holds; shared by its [`WsSink`] and its socket task.
#[derive(Default, Debug)]
struct Queued {
    frames: AtomicUsize,
    bytes: AtomicUsize,
    /// Woken when the engine closes the connection. The close itself waits in the queue behind
    /// the frames before it; this tells the socket task to start the clock on a client that is
    /// not taking them.
    closing: Notify,
}

impl Queued {
    fn release(&self, frame: &Frame) {
        self.frames.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(frame.len(), Ordering::AcqRel);
    }
}

/// A frame's bytes, kept alive by the shared frame itself.
struct FrameBytes(Frame);

impl AsRef<[u8]> for FrameBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The WebSocket text message for a frame, pointing at the frame's own memory: one serialised
/// frame serves every recipient, with no copy per connection.
pub fn ws_text(frame: &Frame) -> Message {
    let bytes = bytes::Bytes::from_owner(FrameBytes(frame.clone()));
    // SAFETY: the bytes are exactly those of a `str`, so they are valid UTF-8.
    Message::Text(unsafe { tokio_tungstenite::tungstenite::Utf8Bytes::from_bytes_unchecked(bytes) })
}

/// Messages longer than this go out as a fragmented WebSocket message (RFC 6455 §5.4: a text
/// frame without FIN, continuation frames, the last with FIN), cut at character boundaries;
/// clients get the whole message as usual. tungstenite's write buffer then never grows past
/// one fragment, and keeps no capacity of a large snapshot.
pub const FRAGMENT_BYTES: usize = 1024;

/// The WebSocket frames for one engine frame: one text message, or its fragments.
pub fn ws_messages(frame: &Frame) -> Vec<Message> {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
    let text: &str = frame;
    if text.len() <= FRAGMENT_BYTES {
        return vec![ws_text(frame)];
    }
    let bytes = bytes::Bytes::from_owner(FrameBytes(frame.clone()));
    let mut messages = Vec::with_capacity(text.len() / FRAGMENT_BYTES + 1);
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + FRAGMENT_BYTES).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let opcode = if start == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
        messages.push(Message::Frame(WsFrame::message(bytes.slice(start..end), opcode, end == text.len())));
        start = end;
    }
    messages
}

/// The engine's handle on one WebSocket connection. Never blocks.
pub struct WsSink {
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<Queued>,
    capacity: usize,
    max_bytes: usize,
}

impl FrameSink for WsSink {
    fn try_send(&self, frame: &Frame) -> bool {
        // Reserve first so concurrent callers cannot overshoot the bounds. One frame larger
        // than the byte bound still goes through when the queue is empty.
        let frames_before = self.queued.frames.fetch_add(1, Ordering::AcqRel);
        let bytes_before = self.queued.bytes.fetch_add(frame.len(), Ordering::AcqRel);
        if frames_before >= self.capacity || (frames_before > 0 && bytes_before + frame.len() > self.max_bytes) {
            self.queued.release(frame);
            return false;
        }
        if self.tx.send(Out::Frame(frame.clone())).is_err() {
            // The connection is gone; accept and drop (the engine learns through `Closed`).
            self.queued.release(frame);
        }
        true
    }

    fn close(&self, reason: &str) {
        // Close is not counted against the bound: it must always get through.
        let _ = self.tx.send(Out::Close(reason.to_string()));
        self.queued.closing.notify_one();
    }
}

struct ConnCtx {
    peer: String,
    options: ServerOptions,
    inbound: Sender<Inbound>,
    ids: Arc<ConnIds>,
    shutdown: watch::Receiver<bool>,
}

impl ConnCtx {
    async fn run<S>(self, stream: S, acceptor: Option<tokio_rustls::TlsAcceptor>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let timeout = self.options.handshake_timeout;
        match acceptor {
            Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => self.websocket(tls).await,
                Ok(Err(e)) => debug!("TLS handshake with {} failed: {e}", self.peer),
                Err(_) => debug!("TLS handshake with {} timed out", self.peer),
            },
            None => self.websocket(stream).await,
        }
    }

    async fn websocket<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S) {
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.options.max_message_bytes))
            .max_frame_size(Some(self.options.max_message_bytes))
            .write_buffer_size(0)
            .read_buffer_size(self.options.read_buffer_bytes);
        let stream = crate::gather::Gather::new(stream, self.options.write_buffer_bytes);
        let accept = tokio_tungstenite::accept_async_with_config(stream, Some(config));
        let ws = match tokio::time::timeout(self.options.handshake_timeout, accept).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => return debug!("WebSocket handshake with {} failed: {e}", self.peer),
            Err(_) => return debug!("WebSocket handshake with {} timed out", self.peer),
        };
        let conn = self.ids.next();
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(Queued::default());
        let sink = Arc::new(WsSink {
            tx,
            queued: queued.clone(),
            capacity: self.options.queue_frames,
            max_bytes: self.options.queue_bytes,
        });
        debug!("{conn} opened from {}", self.peer);
        if self.inbound.send(Inbound::Opened { conn, addr: self.peer.clone(), sink }).is_err() {
            return; // engine stopped
        }
        let watch = crate::keepalive::Watch::new(self.options.keepalive);
        let end = pump(ws, conn, &self.inbound, rx, &queued, self.shutdown.clone(), watch).await;
        debug!("{conn} closed: {end}");
        let _ = self.inbound.send(Inbound::Closed { conn });
    }
}

/// Why a connection's socket loop stopped.
enum Stop {
    /// The host is shutting down.
    Shutdown,
    /// The writer is done: see [`Written`] (or a write failed).
    Written(Result<Written, WsError>),
    /// The engine closed the connection, and the client has not taken what was left for it (its
    /// last frames, the close frame) within as long as a silent client is kept.
    Stuck,
    /// Nothing heard from the client for the keepalive's silence limit.
    Silent,
    /// The client sent a close frame (tungstenite has queued the answer).
    ClientClosed,
    /// The client broke a rule: answer with this close frame. `oversize`: the rest of an
    /// oversize message is still arriving and is swallowed first.
    Refused { close: Message, log: String, oversize: bool },
    /// Nothing more can or need be written (the client went away, a read failed, the engine
    /// stopped); the text is for the log.
    Gone(String),
}

/// What the writer finished with.
enum Written {
    /// The engine closed the connection; its close frame, with this reason, is written.
    Closed(String),
    /// The engine let go of the connection.
    Dropped,
}

/// Moves frames both ways until the connection ends; returns why it ended (for the log).
///
/// Writing runs as its own future ([`write_out`]) beside the reading loop, never inside one of
/// its arms: a client that stops reading blocks the writes, but the host goes on reading its
/// frames (each one counts for the keepalive), answering them through the engine (which keeps
/// the answers in its bounded outbox, docs/PROTOCOL.md §7.6), and watching for shutdown, silence
/// and the engine's close.
async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    conn: ConnId,
    inbound: &Sender<Inbound>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    queued: &Queued,
    mut shutdown: watch::Receiver<bool>,
    mut keepalive: crate::keepalive::Watch,
) -> String {
    use crate::keepalive::Due;
    let (mut write, mut read) = ws.split();
    let ping = Notify::new();
    let stop = {
        let writer = write_out(&mut write, &mut rx, queued, &ping);
        tokio::pin!(writer);
        // Once the engine closes the connection, the client has as long as a silent client is
        // kept to take what is left for it; a client that does not read (`too_slow`) but keeps
        // sending would otherwise hold the socket for ever.
        let mut close_by: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break Stop::Shutdown,
                written = &mut writer => break Stop::Written(written),
                _ = queued.closing.notified(), if close_by.is_none() => {
                    close_by = Some(tokio::time::Instant::now() + keepalive.silent_after());
                }
                _ = tokio::time::sleep_until(close_by.unwrap_or_else(tokio::time::Instant::now)),
                    if close_by.is_some() => break Stop::Stuck,
                due = keepalive.due() => match due {
                    Due::Ping => ping.notify_one(),
                    Due::Silent => break Stop::Silent,
                },
                msg = read.next() => {
                    if let Some(Ok(_)) = &msg {
                        keepalive.heard();
                    }
                    // Once the engine has closed the connection it wants nothing more from it.
                    let engine = close_by.is_none().then_some(inbound);
                    if let Some(stop) = receive(msg, conn, engine) {
                        break stop;
                    }
                }
            }
        }
    };
    // The writer is gone (dropped between two frames, or in a flush that `write` finishes
    // later); the goodbyes below write directly, each bounded by `GOODBYE`, because a client
    // that is not reading cannot take them.
    match stop {
        Stop::Shutdown => {
            let closing =
                EventFrame { session_id: None, seq: None, body: Event::Closing(Closing { reason: "shutdown".into() }) };
            // Flush what the engine already handed us, then say goodbye.
            let goodbye = async {
                while let Ok(Out::Frame(f)) = rx.try_recv() {
                    write.feed(ws_text(&f)).await?;
                }
                write.feed(Message::text(closing.to_json())).await?;
                write.send(close_message(CloseCode::Away, "shutdown")).await
            };
            match tokio::time::timeout(GOODBYE, goodbye).await {
                Ok(Ok(())) => linger(&mut read).await,
                Ok(Err(e)) => return format!("write failed during shutdown: {e}"),
                Err(_) => return "host shutting down; the client was not reading".into(),
            }
            "host shutting down".into()
        }
        Stop::Written(Ok(Written::Closed(reason))) => {
            linger(&mut read).await;
            format!("closed by host ({reason})")
        }
        Stop::Written(Ok(Written::Dropped)) => "engine dropped the connection".into(),
        Stop::Written(Err(e)) => format!("write failed: {e}"),
        Stop::Stuck => {
            format!("closed by host; the client did not take its last frames within {:?}", keepalive.silent_after())
        }
        Stop::Silent => {
            let close = write.send(close_message(CloseCode::Away, "no answer to pings"));
            let _ = tokio::time::timeout(GOODBYE, close).await;
            format!("client silent for {:?}", keepalive.silent_after())
        }
        Stop::ClientClosed => {
            let _ = tokio::time::timeout(GOODBYE, write.flush()).await;
            "client closed".into()
        }
        Stop::Refused { close, log, oversize } => {
            let _ = tokio::time::timeout(GOODBYE, write.send(close)).await;
            if oversize {
                // The rest of the oversize message is still arriving. Swallow it (briefly) so
                // the client can finish writing and read our close frame; closing the socket
                // with unread data would reset the connection and lose the frame.
                if let Ok(ws) = read.reunite(write) {
                    discard_input(ws.into_inner()).await;
                }
            }
            log
        }
        Stop::Gone(log) => log,
    }
}

/// How long a goodbye (a close frame, the answer to the client's close, the frames flushed at
/// shutdown) may take to write before the socket is dropped anyway.
const GOODBYE: Duration = Duration::from_secs(1);

/// Writes what the engine hands over, in order, and a ping whenever the keepalive asks;
/// returns once the engine closes the connection (after writing the close frame) or drops it,
/// or a write fails.
///
/// It waits only where stopping is harmless (the caller drops it when the connection ends for
/// another reason): for the socket to take more, which comes before anything is taken from the
/// queue so no frame is lost in hand; for the queue; and in a flush.
async fn write_out<W>(
    write: &mut W,
    rx: &mut mpsc::UnboundedReceiver<Out>,
    queued: &Queued,
    ping: &Notify,
) -> Result<Written, WsError>
where
    W: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    // The rest of a fragmented message (pings may go between its fragments).
    let mut fragments = std::collections::VecDeque::new();
    loop {
        std::future::poll_fn(|cx| write.poll_ready_unpin(cx)).await?;
        let message = if !fragments.is_empty() {
            // Pings first here too (a control frame may go between fragments).
            match futures_util::FutureExt::now_or_never(ping.notified()) {
                Some(()) => Message::Ping(Default::default()),
                None => fragments.pop_front().expect("not empty"),
            }
        } else {
            tokio::select! {
                biased;
                // Pings first: a client busy taking a long stream must still be asked for pongs.
                _ = ping.notified() => Message::Ping(Default::default()),
                out = rx.recv() => match out {
                    Some(Out::Frame(frame)) => {
                        queued.release(&frame);
                        fragments.extend(ws_messages(&frame));
                        fragments.pop_front().expect("a frame makes at least one message")
                    }
                    Some(Out::Close(reason)) => {
                        write.send(close_message(CloseCode::Policy, &reason)).await?;
                        return Ok(Written::Closed(reason));
                    }
                    None => return Ok(Written::Dropped),
                },
            }
        };
        write.start_send_unpin(message)?;
        if fragments.is_empty() && fragments.capacity() > 4 {
            // The fragments of a large message (a snapshot): not kept for the connection's life.
            fragments = std::collections::VecDeque::new();
        }
        // Batch: flush only when nothing else is waiting.
        if rx.is_empty() && fragments.is_empty() {
            write.flush().await?;
        }
    }
}

/// Handles one read from the client: hands text to the engine (unless `None`); says why to
/// stop, if it must.
fn receive(msg: Option<Result<Message, WsError>>, conn: ConnId, engine: Option<&Sender<Inbound>>) -> Option<Stop> {
    let text = match msg {
        Some(Ok(Message::Text(text))) => text.as_str().to_string(),
        Some(Ok(Message::Binary(bytes))) => match String::from_utf8(bytes.to_vec()) {
            // Lenient: a UTF-8 binary frame is treated as text; the engine validates it.
            Ok(text) => text,
            Err(_) => {
                debug!("{conn}: ignoring a binary frame that is not UTF-8");
                return None;
            }
        },
        // tungstenite queues the pong and sends it with its next read, which follows at once.
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return None,
        Some(Ok(Message::Close(_))) => return Some(Stop::ClientClosed),
        Some(Err(WsError::Capacity(e))) => {
            return Some(Stop::Refused {
                close: close_message(CloseCode::Size, "message too big"),
                log: format!("client sent an oversize message: {e}"),
                oversize: true,
            })
        }
        Some(Err(WsError::Utf8(e))) => {
            return Some(Stop::Refused {
                close: close_message(CloseCode::Invalid, "invalid UTF-8 in a text frame"),
                log: format!("client sent invalid UTF-8: {e}"),
                oversize: false,
            })
        }
        Some(Err(WsError::Protocol(e))) => {
            let reason = format!("WebSocket protocol error: {e}");
            return Some(Stop::Refused {
                close: close_message(CloseCode::Protocol, &reason),
                log: reason,
                oversize: false,
            });
        }
        Some(Err(e)) => return Some(Stop::Gone(format!("read failed: {e}"))),
        None => return Some(Stop::Gone("client went away".into())),
    };
    match engine.map(|inbound| inbound.send(Inbound::Frame { conn, text })) {
        Some(Err(_)) => Some(Stop::Gone("engine stopped".into())),
        _ => None,
    }
}

fn close_message(code: CloseCode, reason: &str) -> Message {
    // Close reasons are limited to 123 bytes by the WebSocket protocol.
    let mut reason = reason.to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// Reads and drops raw bytes until the peer closes or a second passes.
async fn discard_input<S: AsyncRead + Unpin>(mut stream: S) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    let drain = async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// After sending a close frame, gives the client a moment to answer it so the socket shuts down
/// cleanly (the client then sees the close frame rather than a reset).
async fn linger<S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin>(read: &mut S) {
    let drain = async { while let Some(Ok(_)) = read.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, Io};
    use crate::keepalive::Keepalive;
    use tokio::time::Instant;

    /// A connection accepted by the server's own connection code over an in-memory pipe, and the
    /// client's end. No kernel socket is involved, so with tokio's clock paused time moves only
    /// when every task waits for a timer: timings are exact, however busy the machine.
    async fn pipe(
        options: &ServerOptions,
        engine: &Sender<Inbound>,
        ids: &Arc<ConnIds>,
        shutdown: &watch::Receiver<bool>,
    ) -> crate::client::WsStream {
        let (server_end, client_end) = tokio::io::duplex(64 * 1024);
        let ctx = ConnCtx {
            peer: "127.0.0.1:1".into(),
            options: options.clone(),
            inbound: engine.clone(),
            ids: ids.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(ctx.websocket(server_end));
        let io: Box<dyn Io> = Box::new(client_end);
        tokio_tungstenite::client_async("ws://host/", io).await.expect("handshake").0
    }

    /// What the engine was told so far: the connections opened (their sinks kept, as the engine
    /// keeps them) and the ones closed.
    #[derive(Default)]
    struct EngineView {
        sinks: Vec<Arc<dyn FrameSink>>,
        opened: Vec<ConnId>,
        closed: Vec<ConnId>,
    }

    impl EngineView {
        fn take(&mut self, inbox: &crossbeam_channel::Receiver<Inbound>) {
            for input in inbox.try_iter() {
                match input {
                    Inbound::Opened { conn, sink, .. } => {
                        self.opened.push(conn);
                        self.sinks.push(sink);
                    }
                    Inbound::Closed { conn } => self.closed.push(conn),
                    _ => {}
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_only_answers_pings_stays_and_a_silent_one_goes_at_the_limit() {
        let keepalive = Keepalive { every: Duration::from_millis(100), silent_after: Duration::from_millis(350) };
        let options = ServerOptions { keepalive, ..ServerOptions::default() };
        let (engine, inbox) = crossbeam_channel::unbounded();
        let ids = ConnIds::new();
        let (_shutdown, shutdown) = watch::channel(false);
        let mut view = EngineView::default();
        let start = Instant::now();
        // The library client, sending nothing of its own (its pings are an hour apart): all the
        // host hears from it are the pongs its reader answers the host's pings with.
        let answering = pipe(&options, &engine, &ids, &shutdown).await;
        let hour = Duration::from_secs(3600);
        let (_client, mut events) = Client::over_with(answering, Keepalive { every: hour, silent_after: hour });
        // A client that never reads (so never answers a ping) and never writes.
        let _silent = pipe(&options, &engine, &ids, &shutdown).await;
        assert_eq!(Instant::now(), start, "no time passed while connecting");
        let (answering, silent) = (ConnId(1), ConnId(2));

        tokio::time::sleep_until(start + Duration::from_millis(349)).await;
        view.take(&inbox);
        assert_eq!(view.opened, vec![answering, silent]);
        assert_eq!(view.closed, vec![], "nobody is closed before the silence limit");
        tokio::time::sleep_until(start + Duration::from_millis(351)).await;
        view.take(&inbox);
        assert_eq!(view.closed, vec![silent], "the silent client is closed at the limit");

        // Many silence limits later the answering client is still there.
        tokio::time::sleep(keepalive.silent_after * 30).await;
        view.take(&inbox);
        assert_eq!(view.closed, vec![silent], "a client answering pings was closed");
        assert!(events.try_recv().is_err(), "the answering client saw its connection end");
    }

    #[test]
    fn every_recipients_message_shares_the_one_serialised_frame() {
        let frame: Frame = Arc::from(r#"{"event":"message","payload":{"text":"hello"}}"#);
        let (a, b) = (ws_text(&frame), ws_text(&frame));
        for m in [&a, &b] {
            let Message::Text(t) = m else { panic!("a text message") };
            assert_eq!(t.as_str(), &*frame);
            assert_eq!(t.as_str().as_ptr(), frame.as_ptr(), "no copy per recipient");
        }
    }

    #[test]
    fn a_large_frame_goes_out_in_fragments_cut_at_characters_that_rebuild_it() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let text = format!("{{\"text\":\"{}\"}}", "aé漢🎉".repeat(30_000));
        let frame: Frame = Arc::from(text.as_str());
        let messages = ws_messages(&frame);
        assert!(messages.len() > text.len() / FRAGMENT_BYTES, "{} fragments", messages.len());
        let mut rebuilt = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let Message::Frame(f) = m else { panic!("fragment {i} is a frame") };
            let opcode = if i == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
            assert_eq!(f.header().opcode, opcode, "fragment {i}");
            assert_eq!(f.header().is_final, i == messages.len() - 1, "fragment {i}");
            assert!(f.payload().len() <= FRAGMENT_BYTES);
            assert!(std::str::from_utf8(f.payload()).is_ok(), "fragment {i} is cut at a character boundary");
            assert_eq!(f.payload().as_ptr(), frame[rebuilt.len()..].as_ptr(), "fragment {i} is not a copy");
            rebuilt.extend_from_slice(f.payload());
        }
        assert_eq!(rebuilt, text.as_bytes());
        // A small frame stays one text message.
        assert!(matches!(&ws_messages(&Arc::from("{}"))[..], [Message::Text(_)]));
    }

    #[test]
    fn the_transport_queue_is_bounded_in_frames_and_in_bytes() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let queued = Arc::new(Queued::default());
        let sink = WsSink { tx, queued: queued.clone(), capacity: 4, max_bytes: 1000 };
        let big: Frame = Arc::from("x".repeat(1500).as_str());
        let small: Frame = Arc::from("y".repeat(300).as_str());
        assert!(sink.try_send(&big), "one frame over the byte bound goes through an empty queue");
        assert!(!sink.try_send(&small), "nothing more while it waits");
        let Some(Out::Frame(f)) = rx.try_recv().ok() else { panic!("queued") };
        queued.release(&f);
        assert!(sink.try_send(&small) && sink.try_send(&small) && sink.try_send(&small));
        assert!(!sink.try_send(&small), "1 200 bytes would exceed 1 000");
        assert_eq!(queued.bytes.load(Ordering::Acquire), 900);
        let tiny: Frame = Arc::from("z");
        assert!(sink.try_send(&tiny));
        assert!(!sink.try_send(&tiny), "four frames is the frame bound");
    }
}
