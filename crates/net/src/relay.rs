//! Reaching a host from anywhere: the same WebSocket protocol over an iroh QUIC stream.
//!
//! A host that is not `--relay off` also runs an iroh endpoint (QUIC dialed by public key, hole
//! punching, relay fallback; docs/NETWORKING.md "Relay"). Its key — kept in `iroh.key` in the data
//! directory, so links stay valid across restarts — and its home relay go into links after the
//! token (`?iroh=ENDPOINT_ID&relay=URL`). A client dials the endpoint id through that relay at the
//! same time as the link's TCP addresses, opens one bidirectional stream and runs the WebSocket
//! handshake over it; from there on the connection is like any other, so every rule, scenario and
//! journal is transport-blind. The QUIC handshake proves the endpoint key the link pins (as TLS
//! proves the certificate fingerprint on a TCP connection), and the stream is end-to-end
//! encrypted: the relay sees who talks to whom and when, never what.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use iroh::endpoint::{presets, Connection, RecvStream, SendStream};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMap, RelayMode, RelayUrl, SecretKey};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch, Mutex};
use tracing::{debug, info, warn};

use crate::link::IrohAddr;
use crate::server::Listener;

/// The QUIC application protocol a roundtable host accepts: WebSocket frames on one stream.
pub const ALPN: &[u8] = b"roundtable/ws/1";

/// The host's iroh secret key in its data directory (32 raw bytes, owner-only).
pub const KEY_FILE: &str = "iroh.key";

/// How long a host waits for its home relay at start before giving out links without one.
const ONLINE_WAIT: Duration = Duration::from_secs(5);

/// How long a QUIC handshake and the opening of the stream may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a closed stream waits for the peer to take its last bytes before the connection is
/// closed.
const LINGER: Duration = Duration::from_secs(3);

/// Which relays a host uses (`--relay`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayChoice {
    /// No iroh endpoint: reachable only at the link's direct addresses.
    Off,
    /// iroh's public relays (run by n0), with their DNS address lookup.
    Public,
    /// One self-hosted `iroh-relay` (`http://…` or `https://…`).
    Url(String),
}

/// Why a relay setting or an iroh endpoint is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid --relay \"{0}\": expected \"default\" (iroh's public relays), \"off\", or a relay URL such as https://relay.example.org")]
    BadChoice(String),
    #[error("cannot read or write the iroh key {path}: {source}")]
    Key { path: String, source: io::Error },
    #[error("cannot start the iroh endpoint: {0}")]
    Bind(String),
    #[error("invalid iroh endpoint id \"{0}\" in the link (expected 64 hex digits)")]
    BadEndpointId(String),
    #[error("cannot reach the host through the relay {relay}: {detail}")]
    Connect { relay: String, detail: String },
}

impl FromStr for RelayChoice {
    type Err = RelayError;

    fn from_str(text: &str) -> Result<Self, RelayError> {
        match text.trim() {
            "off" | "none" | "direct" => Ok(RelayChoice::Off),
            "default" | "public" => Ok(RelayChoice::Public),
            url => {
                let parsed = parse_relay_url(url).ok_or_else(|| RelayError::BadChoice(text.to_string()))?;
                Ok(RelayChoice::Url(parsed.to_string()))
            }
        }
    }
}

impl fmt::Display for RelayChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayChoice::Off => f.write_str("off"),
            RelayChoice::Public => f.write_str("default"),
            RelayChoice::Url(url) => f.write_str(url),
        }
    }
}

/// A relay URL: `http` or `https`, with a host, and nothing that would break a link's query.
fn parse_relay_url(text: &str) -> Option<RelayUrl> {
    let lower = text.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    if text.contains(['&', '#', ' ', '?']) {
        return None;
    }
    let url = RelayUrl::from_str(text).ok()?;
    url.host_str().filter(|h| !h.is_empty())?;
    Some(url)
}

/// Whether `text` is a relay URL a link may carry.
pub fn is_relay_url(text: &str) -> bool {
    parse_relay_url(text).is_some()
}

/// Whether `text` is an iroh endpoint id as links write it (64 lower-case hex digits).
pub fn is_endpoint_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Which way a connection's bytes travel right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// Through the relay at this URL (encrypted end to end; the relay forwards what it cannot read).
    Relayed(String),
    /// Straight to the host at this address (hole punched or on the same network).
    Direct(String),
    /// Not known yet.
    Unknown,
}

impl PathKind {
    /// Short word for status lines: `relayed`, `direct` or `connecting`.
    pub fn word(&self) -> &'static str {
        match self {
            PathKind::Relayed(_) => "relayed",
            PathKind::Direct(_) => "direct",
            PathKind::Unknown => "connecting",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathKind::Relayed(url) => write!(f, "relayed through {url}"),
            PathKind::Direct(addr) => write!(f, "direct to {addr} (peer to peer)"),
            PathKind::Unknown => f.write_str("path not known yet"),
        }
    }
}

/// The selected path of `conn`, now.
fn current_path(conn: &Connection) -> PathKind {
    selected_path(&conn.paths()).unwrap_or(PathKind::Unknown)
}

/// The path a snapshot of a connection's paths has selected, if any.
fn selected_path(paths: &iroh::endpoint::PathList<'_>) -> Option<PathKind> {
    let p = paths.iter().find(|p| p.is_selected())?;
    let addr = p.remote_addr().to_string();
    Some(if p.is_relay() { PathKind::Relayed(relay_of(&addr)) } else { PathKind::Direct(direct_of(&addr)) })
}

/// The socket address in an IP transport address's display (`ip:ADDR`).
fn direct_of(display: &str) -> String {
    display.strip_prefix("ip:").unwrap_or(display).trim().to_string()
}

/// The relay URL in a relay transport address's display (`relay:URL` or the URL itself).
fn relay_of(display: &str) -> String {
    display.strip_prefix("relay:").unwrap_or(display).trim().to_string()
}

/// Follows the selected path of `conn` for as long as it lives.
fn watch_path(conn: &Connection) -> watch::Receiver<PathKind> {
    let (tx, rx) = watch::channel(current_path(conn));
    let conn = conn.clone();
    tokio::spawn(async move {
        let mut snapshots = conn.paths_stream();
        while let Some(list) = snapshots.next().await {
            let Some(now) = selected_path(&list) else { continue };
            if tx.is_closed() {
                break;
            }
            if *tx.borrow() != now {
                debug!("path to {}: {now}", conn.remote_id().fmt_short());
                tx.send_replace(now);
            }
        }
    });
    rx
}

/// One WebSocket connection's byte stream over iroh: a QUIC bidirectional stream, with the
/// connection (and, on the client, the endpoint) kept alive as long as the stream.
pub struct IrohStream {
    send: SendStream,
    recv: RecvStream,
    conn: Connection,
    /// The client's own endpoint (one per dial); `None` on the host, whose endpoint outlives it.
    endpoint: Option<Endpoint>,
    path: watch::Receiver<PathKind>,
}

impl IrohStream {
    /// Which way the bytes travel, updated as iroh moves the connection (relayed → direct).
    pub fn path(&self) -> watch::Receiver<PathKind> {
        self.path.clone()
    }
}

impl AsyncRead for IrohStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        AsyncRead::poll_read(Pin::new(&mut self.recv), cx, buf)
    }
}

impl AsyncWrite for IrohStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

impl Drop for IrohStream {
    fn drop(&mut self) {
        // Closing the connection at once would drop bytes still in flight (a close frame, a
        // goodbye): finish the stream, give the peer a moment to take them, then close.
        let _ = self.send.finish();
        let stopped = self.send.stopped();
        let conn = self.conn.clone();
        let endpoint = self.endpoint.take();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LINGER, stopped).await;
            conn.close(0u32.into(), b"closed");
            if let Some(endpoint) = endpoint {
                endpoint.close().await;
            }
        });
    }
}

/// The host's iroh endpoint.
pub struct HostEndpoint {
    endpoint: Endpoint,
    relay: Option<String>,
}

impl HostEndpoint {
    /// Binds the host's endpoint with its key from `data_dir` (made on first use) and the relays
    /// of `choice` (not [`RelayChoice::Off`]), and waits up to a few seconds for the home relay so
    /// links can name it.
    pub async fn bind(data_dir: &Path, choice: &RelayChoice) -> Result<HostEndpoint, RelayError> {
        let secret = load_or_create_key(data_dir)?;
        let builder = match choice {
            RelayChoice::Off => return Err(RelayError::Bind("the relay is off (--relay off)".into())),
            RelayChoice::Public => Endpoint::builder(presets::N0),
            RelayChoice::Url(url) => {
                let url = parse_relay_url(url).ok_or_else(|| RelayError::BadChoice(url.clone()))?;
                Endpoint::builder(presets::Minimal).relay_mode(RelayMode::Custom(RelayMap::from(url)))
            }
        };
        let endpoint = builder
            .secret_key(secret)
            .alpns(vec![ALPN.to_vec()])
            .bind()
            .await
            .map_err(|e| RelayError::Bind(e.to_string()))?;
        let relay = match tokio::time::timeout(ONLINE_WAIT, endpoint.online()).await {
            Ok(()) => endpoint.addr().relay_urls().next().map(|u| u.to_string()),
            Err(_) => None,
        };
        let relay = relay.or_else(|| match choice {
            RelayChoice::Url(url) => Some(url.clone()),
            _ => None,
        });
        match &relay {
            Some(url) => info!("iroh endpoint {} reachable through the relay {url}", endpoint.id()),
            None => warn!(
                "no relay answered within {ONLINE_WAIT:?}: links name the host's iroh key without a relay \
                 (remotes look it up through iroh's DNS)"
            ),
        }
        Ok(HostEndpoint { endpoint, relay })
    }

    /// The endpoint id (public key) links pin, in hex.
    pub fn id(&self) -> String {
        self.endpoint.id().to_string()
    }

    /// The home relay links name, if one answered.
    pub fn relay(&self) -> Option<&str> {
        self.relay.as_deref()
    }

    /// A [`Listener`] for the host's server: each accepted connection's first bidirectional stream.
    pub fn listener(&self) -> IrohListener {
        let (tx, rx) = mpsc::channel(64);
        let endpoint = self.endpoint.clone();
        let task = tokio::spawn(accept_connections(endpoint, tx));
        IrohListener { incoming: Mutex::new(rx), task, local: self.endpoint.bound_sockets() }
    }

    /// Closes the endpoint: every iroh connection ends.
    pub async fn close(&self) {
        self.endpoint.close().await;
    }
}

async fn accept_connections(endpoint: Endpoint, tx: mpsc::Sender<(IrohStream, String)>) {
    while let Some(incoming) = endpoint.accept().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            let accepted = async {
                let conn = incoming.accept().map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
                let (send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((conn, send, recv))
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, accepted).await {
                Ok(Ok((conn, send, recv))) => {
                    let peer = format!("iroh:{}", conn.remote_id());
                    let path = watch_path(&conn);
                    debug!("{peer} connected ({})", *path.borrow());
                    let stream = IrohStream { send, recv, conn, endpoint: None, path };
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => debug!("iroh connection failed: {e}"),
                Err(_) => debug!("iroh connection timed out"),
            }
        });
    }
}

/// The host's iroh connections, one stream each, for [`crate::server::start_server_on`].
pub struct IrohListener {
    incoming: Mutex<mpsc::Receiver<(IrohStream, String)>>,
    task: tokio::task::JoinHandle<()>,
    local: Vec<std::net::SocketAddr>,
}

impl Drop for IrohListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener for IrohListener {
    type Stream = IrohStream;

    async fn accept(&self) -> io::Result<(IrohStream, String)> {
        match self.incoming.lock().await.recv().await {
            Some(accepted) => Ok(accepted),
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.local.first().copied().ok_or_else(|| io::Error::other("the iroh endpoint has no socket"))
    }
}

/// Dials the host's endpoint through its relay (a direct path replaces the relayed one when hole
/// punching succeeds) and opens the stream the WebSocket runs over.
pub async fn dial(target: &IrohAddr) -> Result<IrohStream, RelayError> {
    dial_with(target, false).await
}

/// [`dial`]; with `relay_only` the client has no IP path of its own, so every byte goes through
/// the relay (`bench wire --relay` measures that).
pub async fn dial_with(target: &IrohAddr, relay_only: bool) -> Result<IrohStream, RelayError> {
    let id = EndpointId::from_str(&target.id).map_err(|_| RelayError::BadEndpointId(target.id.clone()))?;
    let relay_name = target.relay.clone().unwrap_or_else(|| "iroh's DNS".into());
    let fail = |detail: String| RelayError::Connect { relay: relay_name.clone(), detail };
    let (builder, addr) = match &target.relay {
        Some(url) => {
            let url = parse_relay_url(url).ok_or_else(|| fail(format!("\"{url}\" is not a relay URL")))?;
            let builder =
                Endpoint::builder(presets::Minimal).relay_mode(RelayMode::Custom(RelayMap::from(url.clone())));
            (builder, EndpointAddr::new(id).with_relay_url(url))
        }
        None => (Endpoint::builder(presets::N0), EndpointAddr::new(id)),
    };
    let builder = if relay_only { builder.clear_ip_transports() } else { builder };
    let endpoint = builder.bind().await.map_err(|e| fail(e.to_string()))?;
    let opened = async {
        let conn = endpoint.connect(addr, ALPN).await.map_err(|e| e.to_string())?;
        let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((conn, send, recv))
    };
    let (conn, send, recv) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, opened).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(detail)) => {
            endpoint.close().await;
            return Err(fail(detail));
        }
        Err(_) => {
            endpoint.close().await;
            return Err(fail(format!("no answer within {HANDSHAKE_TIMEOUT:?}")));
        }
    };
    let path = watch_path(&conn);
    Ok(IrohStream { send, recv, conn, endpoint: Some(endpoint), path })
}

/// Reads the host's iroh key from `data_dir`, or makes one (owner-only) on first use.
pub fn load_or_create_key(data_dir: &Path) -> Result<SecretKey, RelayError> {
    let path = data_dir.join(KEY_FILE);
    let key_error = |source| RelayError::Key { path: path.display().to_string(), source };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                key_error(io::Error::new(io::ErrorKind::InvalidData, format!("{} bytes, expected 32", b.len())))
            })?;
            Ok(SecretKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            std::fs::create_dir_all(data_dir).map_err(key_error)?;
            write_owner_only(&path, &key.to_bytes()).map_err(key_error)?;
            Ok(key)
        }
        Err(e) => Err(key_error(e)),
    }
}

fn write_owner_only(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_choices_parse_with_clear_errors() {
        assert_eq!("off".parse::<RelayChoice>().unwrap(), RelayChoice::Off);
        assert_eq!("default".parse::<RelayChoice>().unwrap(), RelayChoice::Public);
        assert_eq!(
            "http://10.0.1.1:3340".parse::<RelayChoice>().unwrap(),
            RelayChoice::Url("http://10.0.1.1:3340/".into())
        );
        for bad in ["relay.example.org", "ftp://x", "https://a.org/?x=1", "https://a.org/#f", "http://"] {
            let err = bad.parse::<RelayChoice>().unwrap_err().to_string();
            assert!(err.contains("expected \"default\""), "{bad}: {err}");
        }
    }

    #[test]
    fn the_key_is_made_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_key(dir.path()).unwrap();
        let again = load_or_create_key(dir.path()).unwrap();
        assert_eq!(first.public(), again.public(), "the same key after a restart: links stay valid");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "nobody else may read the key");
        }
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let err = load_or_create_key(dir.path()).unwrap_err().to_string();
        assert!(err.contains("5 bytes, expected 32"), "{err}");
    }

    #[test]
    fn endpoint_ids_are_64_lower_hex() {
        assert!(is_endpoint_id(&"ab".repeat(32)));
        assert!(!is_endpoint_id(&"AB".repeat(32)));
        assert!(!is_endpoint_id("abc"));
    }
}
