//! The host process: the engine driver thread, the WebSocket server and the host's own
//! in-process connection, started and stopped together.
//!
//! ```text
//!   tokio runtime                        engine thread (owns the World)
//!   ─────────────                        ──────────────────────────────
//!   accept loop ─┐                       loop {
//!   conn tasks ──┼─ Inbound ──────────►    wait_for_input(until next 50 ms deadline)
//!   host Client ─┘  (crossbeam)            tick(wall clock ms)   // drains every queued input
//!        ▲                               }
//!        └──────── FrameSink queues ◄──── broadcast
//! ```
//!
//! The driver is the only place time enters the engine, through an [`EngineClock`]: the wall
//! clock read once when the engine starts (never behind the latest stored time), plus a
//! monotonic clock (`Instant`) from then on. So the
//! engine's time stays on the wall clock's scale (timestamps people read, share expiry written by
//! the `share` CLI) but never jumps when someone sets the system clock: a step back does not
//! freeze grace periods and vote deadlines, a step forward does not expire everyone at once. A
//! tick runs as soon as input arrives (a burst is coalesced, because one tick drains everything
//! queued) and at least every 50 ms, so deadlines, grace periods and agent streaming advance even
//! when nobody talks.

use crate::engine::clock::EngineClock;
use crate::engine::{Engine, EngineConfig, Inbound};
use crate::net::client::{Client, Events};
use crate::net::link::Link;
use crate::net::server::{self, ConnIds, ServerHandle, ServerOptions};
use crate::net::tls;
use crate::persist::Store;
use anyhow::Context;
use crossbeam_channel::Sender;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tracing::{error, info};

/// The longest the engine goes without a tick.
pub const TICK_PERIOD: Duration = Duration::from_millis(50);

/// Milliseconds since the UNIX epoch (the wall clock, which anyone may step).
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The host's wall clock: the system's, or (testing aid, `serve --wall-clock-offset-file`) the
/// system's moved by the signed number of ms written in a file, so `bench soak --clock-steps`
/// can step a host's clock without stepping the machine's.
#[derive(Clone, Debug, Default)]
pub struct WallClock {
    pub offset_file: Option<PathBuf>,
}

impl WallClock {
    /// Milliseconds since the UNIX epoch as this host reads them.
    pub fn read(&self) -> u64 {
        let Some(file) = &self.offset_file else { return wall_ms() };
        let offset = std::fs::read_to_string(file).ok().and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or(0);
        wall_ms().saturating_add_signed(offset)
    }
}

/// Testing aid: engine time moved ahead of the monotonic clock by as much as a test asks, so it
/// can let a retry interval or a grace period pass without waiting for it in real time. Hosts
/// never skip (it stays at zero).
#[derive(Clone, Debug, Default)]
pub struct TimeSkip(Arc<AtomicU64>);

impl TimeSkip {
    /// Moves engine time on by `by`, from the engine's next tick.
    pub fn skip(&self, by: Duration) {
        self.0.fetch_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// How far engine time was moved on so far.
    fn skipped(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// Settings of a host.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Data directory: database, TLS identity, `serve.json`.
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    pub bind: SocketAddr,
    /// `HOST[:PORT]` written into links; defaults to the bound address.
    pub public_host: Option<String>,
    /// Plain `ws://` without TLS (the caller checks that `bind` is loopback).
    pub insecure: bool,
    /// Start with an empty database although the data dir was used before (`--fresh`).
    pub fresh: bool,
    /// Engine settings. `link_prefix`/`link_suffix` are filled in by [`Host::start`].
    pub engine: EngineConfig,
    /// Server tuning. `tls` is filled in by [`Host::start`].
    pub server: ServerOptions,
    /// The `claude` and `command` agent backends (processes run outside the engine thread).
    pub agents: crate::agent::ExternalConfig,
    /// Testing aid: while this file exists every commit fails (`serve --inject-storage-faults`).
    pub inject_storage_faults: Option<PathBuf>,
    /// The wall clock engine time starts from.
    pub wall_clock: WallClock,
    /// Testing aid: time skipped ahead (see [`TimeSkip`]).
    pub time_skip: TimeSkip,
    /// Advertise the host by mDNS when it listens on a non-loopback address (off: `--no-mdns`).
    pub mdns: bool,
    /// Reachable through NAT by iroh (`--relay`): its relays, or off. Never for an insecure host.
    pub relay: crate::net::relay::RelayChoice,
}

impl HostOptions {
    /// Production defaults: engine seeded from the OS, no invariant checks.
    pub fn new(data_dir: PathBuf, bind: SocketAddr) -> Self {
        // Tokens are secrets: 256 bits from the OS behind them, not only a 64-bit seed.
        let engine = EngineConfig {
            seed: rand::random(),
            token_secret: rand::random(),
            check_invariants: false,
            ..EngineConfig::default()
        };
        Self {
            data_dir,
            bind,
            public_host: None,
            insecure: false,
            fresh: false,
            engine,
            server: ServerOptions::default(),
            agents: crate::agent::ExternalConfig::default(),
            inject_storage_faults: None,
            wall_clock: WallClock::default(),
            time_skip: TimeSkip::default(),
            mdns: false,
            relay: crate::net::relay::RelayChoice::Off,
        }
    }
}

/// A running host.
pub struct Host {
    /// Where the server listens.
    pub local_addr: SocketAddr,
    /// `HOST:PORT` as written in links.
    pub link_authority: String,
    /// The host's other addresses that links name after the first (listening on every interface).
    pub link_also: Vec<(String, u16)>,
    /// The host's iroh endpoint and relay that links name (not with `--relay off`).
    pub link_iroh: Option<crate::net::link::IrohAddr>,
    /// This machine's IPv4 interface addresses, read when the host started.
    interfaces: Vec<crate::net::discovery::InterfaceAddr>,
    /// SHA-256 fingerprint of the TLS certificate; `None` when insecure.
    pub fingerprint: Option<String>,
    /// The host's own connection (participant `host`, may call host-only methods).
    pub client: Client,
    /// Sender into the engine's inbox.
    pub inbound: Sender<Inbound>,
    /// Connection id allocator shared with the server (for more in-process connections).
    pub conn_ids: Arc<ConnIds>,
    server: ServerHandle,
    /// The iroh endpoint and the server accepting its connections.
    iroh: Option<(crate::net::relay::HostEndpoint, ServerHandle)>,
    engine: EngineThread,
    /// The mDNS advertisement, withdrawn when the host is dropped.
    advertisement: Option<crate::net::discovery::Advertisement>,
    /// Held for the host's lifetime: one host per data directory.
    _lock: crate::app::lock::DataDirLock,
    /// The database's integrity check running in the background (after a clean stop).
    integrity: Option<crate::store::IntegrityCheck>,
}

impl Host {
    /// Opens the SQLite database and TLS identity in `options.data_dir`, starts the engine thread
    /// and the server on the current tokio runtime, and opens the host's own connection.
    /// Returns the host and the event stream of its own connection.
    ///
    /// The listener is bound (its address is in [`Host::local_addr`]) but accepts nobody until
    /// [`Host::open`]: the caller first makes the host ready (sessions open, `serve.json`
    /// written), so a remote never meets a host that is still starting.
    pub async fn start(options: HostOptions) -> anyhow::Result<(Host, Events)> {
        // Before the database is even opened: a second host must not touch it.
        let lock = crate::app::lock::DataDirLock::acquire(&options.data_dir)?;
        let db = crate::app::paths::database(&options.data_dir);
        // A host leaves its certificate (TLS) and serve.json (every host) behind.
        let used_before = options.data_dir.join(tls::CERT_FILE).exists()
            || options.data_dir.join(crate::app::admin::SERVE_INFO_FILE).exists();
        if used_before && !db.exists() && !options.fresh {
            anyhow::bail!(
                "{} was used by a host before (it has its certificate or serve.json) but its database {} is \
                 missing: it was deleted or moved. Starting now would create an empty database and every \
                 workspace, session, share and message would be gone. Put the database back, or start over on \
                 purpose with --fresh.",
                options.data_dir.display(),
                db.display()
            );
        }
        let (store, last_stop) =
            crate::store::SqliteStore::open_for_host(&db).with_context(|| format!("cannot open {}", db.display()))?;
        // Reading every page takes time proportional to the file (seconds per GB from a cold
        // disk): only when the last host may have left damage behind. After a clean stop the
        // same check runs in the background once the host is up.
        let background = match last_stop {
            crate::store::LastStop::New => None,
            crate::store::LastStop::Unclean { recorded } => {
                let why = if recorded {
                    "the last host did not stop cleanly"
                } else {
                    "no host has recorded a clean stop in this database yet (it was written by an older roundtable \
                     or created by the CLI)"
                };
                check_before_serving(&store, &db, why)?;
                None
            }
            crate::store::LastStop::Clean => Some(store.integrity_checker()),
        };
        // A host writes serve.json only once it is ready, which is after it registered a
        // workspace, and workspaces and shares are never deleted: a database without either
        // beside serve.json lost its contents (its -wal deleted before a crash, say). Starting
        // would register the current directory as a new workspace and refuse every link given
        // out before. (The certificate alone does not tell: `share mint` creates it too.)
        let serve_json = options.data_dir.join(crate::app::admin::SERVE_INFO_FILE);
        if serve_json.exists() && !options.fresh && store.holds_no_workspace_or_share()? {
            anyhow::bail!(
                "{} held a host before (it has {}) but its database {} has no workspaces and no shares: its \
                 contents were lost (for example its -wal file was deleted before the host stopped). Starting \
                 now would register the current directory as a new workspace and every link given out before \
                 would be refused. Restore the database (with its -wal file) from a backup, or start over on \
                 purpose with --fresh.",
                options.data_dir.display(),
                serve_json.display(),
                db.display()
            );
        }
        let store: Box<dyn Store> = match &options.inject_storage_faults {
            Some(file) => {
                tracing::warn!("commits fail while {} exists (--inject-storage-faults)", file.display());
                Box::new(crate::store::fault::FaultyStore::while_file_exists(Box::new(store), file.clone()))
            }
            None => Box::new(store),
        };
        let (mut host, events) = Self::start_locked(options, store, lock).await?;
        if let Some(checker) = background {
            host.integrity = Some(checker.spawn().context("cannot start the background integrity check")?);
        }
        Ok((host, events))
    }

    /// Like [`Host::start`] with a store of the caller's choice.
    pub async fn start_with_store(options: HostOptions, store: Box<dyn Store>) -> anyhow::Result<(Host, Events)> {
        let lock = crate::app::lock::DataDirLock::acquire(&options.data_dir)?;
        Self::start_locked(options, store, lock).await
    }

    async fn start_locked(
        mut options: HostOptions,
        store: Box<dyn Store>,
        lock: crate::app::lock::DataDirLock,
    ) -> anyhow::Result<(Host, Events)> {
        let listener = tokio::net::TcpListener::bind(options.bind)
            .await
            .with_context(|| format!("cannot listen on {}", options.bind))?;
        let local_addr = listener.local_addr()?;
        let link_authority = link_authority(options.public_host.as_deref(), local_addr);
        let fingerprint = if options.insecure {
            options.server.tls = None;
            None
        } else {
            let identity = tls::load_or_create(&options.data_dir)?;
            options.server.tls = Some(tls::server_config(&identity)?);
            Some(identity.fingerprint)
        };
        // Read once: links, the mDNS advertisement and the "listening on" line all use them.
        let interfaces = crate::net::discovery::ipv4_addresses()
            .inspect_err(|e| tracing::warn!("{e}; links name one address and the host is not advertised on the LAN"))
            .unwrap_or_default();
        let link_also = link_also(local_addr, &link_authority, &interfaces);
        // Through NAT: TLS hosts only (an insecure host stays on loopback).
        let endpoint = match &options.relay {
            crate::net::relay::RelayChoice::Off => None,
            _ if options.insecure => None,
            choice => crate::net::relay::HostEndpoint::bind(&options.data_dir, choice)
                .await
                .inspect_err(|e| tracing::warn!("{e}; remotes can reach this host only at its direct addresses"))
                .ok(),
        };
        let link_iroh =
            endpoint.as_ref().map(|e| crate::net::link::IrohAddr { id: e.id(), relay: e.relay().map(str::to_string) });
        options.engine.link_prefix = Some(format!("{}{link_authority}/", crate::net::link::SCHEME));
        // What follows the token: the other addresses, the iroh endpoint, then the certificate pin.
        let shape =
            Link { also: link_also.clone(), iroh: link_iroh.clone(), ..Link::new("", 0, "", fingerprint.clone()) };
        options.engine.link_suffix = Some(shape.after_token());

        let (engine, inbound) = EngineThread::spawn(
            options.engine.clone(),
            options.agents.clone(),
            store,
            options.wall_clock.clone(),
            options.time_skip.clone(),
        )?;
        let conn_ids = ConnIds::new();
        let server = server::start_server(listener, options.server.clone(), inbound.clone(), conn_ids.clone())?;
        // The same server over iroh streams, without TLS inside: QUIC already proved the endpoint
        // key the link pins and encrypts end to end.
        let iroh = match endpoint {
            Some(endpoint) => {
                let plain = ServerOptions { tls: None, ..options.server.clone() };
                let listener = endpoint.listener();
                Some((endpoint, server::start_server_on(listener, plain, inbound.clone(), conn_ids.clone())?))
            }
            None => None,
        };
        let (client, events) = Client::in_process(inbound.clone(), conn_ids.next());
        let advertisement = match &fingerprint {
            Some(fp) if options.mdns => advertise(local_addr, &interfaces, fp),
            _ => None,
        };
        let host = Host {
            local_addr,
            link_authority,
            link_also,
            link_iroh,
            interfaces,
            fingerprint,
            client,
            inbound,
            conn_ids,
            server,
            iroh,
            engine,
            advertisement,
            _lock: lock,
            integrity: None,
        };
        Ok((host, events))
    }

    /// The link that lets `token`'s holder in, as the engine writes it for a share it mints.
    pub fn link_for(&self, token: &str) -> String {
        let shape = Link {
            also: self.link_also.clone(),
            iroh: self.link_iroh.clone(),
            ..Link::new("", 0, "", self.fingerprint.clone())
        };
        format!("{}{}/{token}{}", crate::net::link::SCHEME, self.link_authority, shape.after_token())
    }

    /// The database's integrity check running in the background, when the last host stopped
    /// cleanly (taken: a second call returns `None`). Tests join it; a host lets it finish.
    pub fn take_integrity_check(&mut self) -> Option<crate::store::IntegrityCheck> {
        self.integrity.take()
    }

    /// Where the host can be reached, for people (see [`listening_text`]).
    pub fn listening_text(&self) -> String {
        listening_text(self.local_addr, &self.interfaces)
    }

    /// The mDNS instance name the host is advertised as on the LAN, if it is.
    pub fn advertised_as(&self) -> Option<&str> {
        self.advertisement.as_ref().map(|a| a.instance())
    }

    /// Starts accepting remotes (see [`Host::start`]).
    pub fn open(&self) {
        self.server.open();
        if let Some((_, server)) = &self.iroh {
            server.open();
        }
    }

    /// Where remotes anywhere reach the host through iroh, for people: `None` with `--relay off`.
    pub fn relay_text(&self) -> Option<String> {
        let iroh = self.link_iroh.as_ref()?;
        Some(match &iroh.relay {
            Some(relay) => format!("iroh endpoint {} through the relay {relay}", &iroh.id[..16]),
            None => format!("iroh endpoint {} (no relay answered yet: found through iroh's DNS)", &iroh.id[..16]),
        })
    }

    /// The share link for `token` on this host.
    pub fn link(&self, token: &str) -> Link {
        let (host, port) = crate::net::link::parse_host_port(&self.link_authority)
            .unwrap_or_else(|_| (self.link_authority.clone(), self.local_addr.port()));
        Link {
            also: self.link_also.clone(),
            iroh: self.link_iroh.clone(),
            ..Link::new(host, port, token, self.fingerprint.clone())
        }
    }

    /// Resolves when the engine thread has stopped (it should only stop when asked; otherwise it
    /// panicked and the host must exit).
    pub fn engine_stopped(&mut self) -> impl std::future::Future<Output = ()> + '_ {
        let rx = &mut self.engine.exited;
        async move {
            let _ = rx.await;
        }
    }

    /// Graceful stop: no new connections; every socket gets a `closing` event and a close frame;
    /// the engine sees them close, runs a last tick (committing it) and stops.
    pub async fn shutdown(self) {
        // Withdrawn first, so nobody finds a host that is closing. The goodbye waits up to a
        // second for mDNS's thread: not on a runtime worker.
        if let Some(advertisement) = self.advertisement {
            let _ = tokio::task::spawn_blocking(move || drop(advertisement)).await;
        }
        self.client.close();
        match self.iroh {
            Some((endpoint, server)) => {
                tokio::join!(self.server.shutdown(), server.shutdown());
                endpoint.close().await;
            }
            None => self.server.shutdown().await,
        }
        self.engine.stop(false).await;
    }

    /// Crash simulation: sockets are dropped without a close frame and the engine stops without
    /// another tick. Whatever was committed is all a restart will find.
    pub async fn kill(self) {
        self.server.abort().await;
        if let Some((endpoint, server)) = self.iroh {
            server.abort().await;
            endpoint.close().await;
        }
        self.engine.stop(true).await;
    }
}

/// The full integrity check before serving, when the last host did not stop cleanly (`why`): it
/// reads every page, so people are told why the start waits, and for how big a file.
fn check_before_serving(store: &crate::store::SqliteStore, db: &Path, why: &str) -> anyhow::Result<()> {
    let bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    // A warning, so it shows at the default log level: the start waits for it.
    tracing::warn!(
        "{why}: checking the database {} ({} MB) before serving; this reads the whole file, so it takes time in \
         proportion to its size (measured: about 14 s per GB from a cold disk, 1.5 s per GB cached)…",
        db.display(),
        bytes.div_ceil(1_000_000)
    );
    let started = Instant::now();
    store.check_integrity()?;
    tracing::warn!("database checked in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `HOST:PORT` for links: `--public-host` (with the bound port when it has none), else the bound
/// address (a wildcard bind falls back to 127.0.0.1, only reachable locally).
pub fn link_authority(public_host: Option<&str>, local: SocketAddr) -> String {
    match public_host {
        Some(h) if crate::net::link::parse_host_port(h).is_ok() => h.to_string(),
        Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{}", local.port()),
        Some(h) => format!("{h}:{}", local.port()),
        None if local.ip().is_unspecified() => format!("127.0.0.1:{}", local.port()),
        None => local.to_string(),
    }
}

/// Advertises the host by mDNS (docs/NETWORKING.md) when it listens on a non-loopback address:
/// every LAN IPv4 address of this machine when it listens on all of them, else the one it
/// listens on. A failure is logged, not fatal: links work without discovery.
fn advertise(
    local: SocketAddr,
    interfaces: &[crate::net::discovery::InterfaceAddr],
    fingerprint: &str,
) -> Option<crate::net::discovery::Advertisement> {
    use crate::net::discovery;
    let addresses: Vec<std::net::Ipv4Addr> = match local.ip() {
        ip if ip.is_loopback() => return None,
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => vec![ip],
        // Discovery is IPv4 only (so far): one IPv6 address is not advertised.
        std::net::IpAddr::V6(ip) if !ip.is_unspecified() => return None,
        _ => interfaces.iter().filter(|a| !a.is_loopback()).map(|a| a.ip).collect(),
    };
    if addresses.is_empty() {
        tracing::info!("not advertised on the LAN: this machine has no LAN IPv4 address");
        return None;
    }
    let machine = machine_name().unwrap_or_else(|| "roundtable".to_string());
    let advert = discovery::Advert {
        instance: machine.clone(),
        name: machine.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        fingerprint: fingerprint.to_string(),
        port: local.port(),
        addresses,
    };
    match discovery::advertise(&advert, &machine) {
        Ok(a) => {
            tracing::info!("advertised on the LAN by mDNS as {}", a.fullname());
            Some(a)
        }
        Err(e) => {
            tracing::warn!("not advertised on the LAN: {e}");
            None
        }
    }
}

/// This machine's host name, when the OS tells it.
pub fn machine_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Where a host bound to `local` can be reached, for people: every address of an up interface
/// when it listens on all of them (LAN ones first), else the one address.
pub fn listening_text(local: SocketAddr, interfaces: &[crate::net::discovery::InterfaceAddr]) -> String {
    let label = |ip: std::net::IpAddr| if ip.is_loopback() { "this machine" } else { "LAN" };
    let mut addrs: Vec<std::net::IpAddr> = if local.ip().is_unspecified() {
        let mut sorted = interfaces.to_vec();
        crate::net::discovery::sort_for_lan(&mut sorted);
        sorted.into_iter().map(|a| std::net::IpAddr::V4(a.ip)).collect()
    } else {
        vec![local.ip()]
    };
    addrs.dedup();
    if addrs.is_empty() {
        return local.to_string();
    }
    addrs
        .into_iter()
        .map(|ip| format!("{} ({})", SocketAddr::new(ip, local.port()), label(ip)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The other addresses a host listening on every interface can be reached at, for links to name
/// after their first: its IPv4 interface addresses, LAN ones first and loopback last, without the
/// one the link already names. A host on one address has none.
pub fn link_also(
    local: SocketAddr,
    link_authority: &str,
    interfaces: &[crate::net::discovery::InterfaceAddr],
) -> Vec<(String, u16)> {
    if !local.ip().is_unspecified() {
        return Vec::new();
    }
    let mut sorted = interfaces.to_vec();
    crate::net::discovery::sort_for_lan(&mut sorted);
    let mut also: Vec<(String, u16)> = Vec::new();
    for a in sorted {
        let addr = (a.ip.to_string(), local.port());
        if crate::net::link::authority(&addr.0, addr.1) != link_authority && !also.contains(&addr) {
            also.push(addr);
        }
    }
    also
}

/// Writes `serve.json` (`{"addr":"HOST:PORT","also":["HOST:PORT",…],"insecure":bool,"pid":N}`) so the `share` CLI can
/// format links for the running host. It is the host's readiness signal: written once the host
/// is ready, just before it accepts (tools wait for it with this process's pid). Written to a
/// temporary file and renamed, so a reader never sees half of it.
pub fn write_serve_json(
    data_dir: &Path,
    addr: &str,
    also: &[(String, u16)],
    iroh: Option<&crate::net::link::IrohAddr>,
    insecure: bool,
) -> anyhow::Result<()> {
    let also = also.iter().map(|(h, p)| crate::net::link::authority(h, *p)).collect();
    let info = crate::app::admin::ServeInfo {
        addr: addr.to_string(),
        also,
        iroh: iroh.map(|i| i.id.clone()),
        relay: iroh.and_then(|i| i.relay.clone()),
        insecure,
        pid: Some(std::process::id()),
    };
    let path = data_dir.join(crate::app::admin::SERVE_INFO_FILE);
    let temp = data_dir.join(format!(".{}.{}", crate::app::admin::SERVE_INFO_FILE, std::process::id()));
    let text = serde_json::to_string(&info)?;
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, &path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The dedicated thread that owns the engine.
struct EngineThread {
    stop: Arc<AtomicBool>,
    kill: Arc<AtomicBool>,
    join: Option<std::thread::JoinHandle<()>>,
    exited: oneshot::Receiver<()>,
}

/// Fires when dropped, so the host learns about the engine thread ending even by panic.
struct ExitSignal(Option<oneshot::Sender<()>>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl EngineThread {
    /// Builds the engine on its own thread (so nothing else ever touches the World) and starts
    /// the drive loop. Returns once the engine is built, with its inbound sender.
    fn spawn(
        config: EngineConfig,
        agents: crate::agent::ExternalConfig,
        store: Box<dyn Store>,
        wall: WallClock,
        skip: TimeSkip,
    ) -> anyhow::Result<(EngineThread, Sender<Inbound>)> {
        let stop = Arc::new(AtomicBool::new(false));
        let kill = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (exit_tx, exited) = oneshot::channel();
        let (stop2, kill2) = (stop.clone(), kill.clone());
        let join = std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                let _signal = ExitSignal(Some(exit_tx));
                let mut engine = match Engine::new(config, store) {
                    Ok(engine) => engine,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                crate::agent::install_builtin(&mut engine);
                engine.set_workspace_files(Box::new(crate::store::ConfinedFiles));
                let runtime = crate::agent::ExternalAgents::new(engine.sender(), agents);
                engine.set_agent_runtime(Box::new(runtime));
                let _ = ready_tx.send(Ok(engine.sender()));
                let origin = Instant::now();
                let clock = EngineClock::start(wall.read(), engine.now(), Duration::ZERO);
                drive(engine, || clock.now_ms(origin.elapsed() + skip.skipped()), &stop2, &kill2);
            })
            .context("cannot start the engine thread")?;
        let inbound = match ready_rx.recv() {
            Ok(Ok(tx)) => tx,
            Ok(Err(e)) => return Err(anyhow::Error::new(e).context("cannot restore the engine from the database")),
            Err(_) => anyhow::bail!("the engine thread panicked while starting (see the log above)"),
        };
        Ok((EngineThread { stop, kill, join: Some(join), exited }, inbound))
    }

    async fn stop(mut self, kill: bool) {
        if kill {
            self.kill.store(true, Ordering::SeqCst);
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(join) = self.join.take() {
            let joined = tokio::task::spawn_blocking(move || join.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                error!("the engine thread panicked");
            }
        }
    }
}

impl Drop for EngineThread {
    fn drop(&mut self) {
        // A host dropped without `shutdown` must not leave a thread ticking forever.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The drive loop: tick when input arrives, and at least every [`TICK_PERIOD`].
fn drive(mut engine: Engine, now_ms: impl Fn() -> u64, stop: &AtomicBool, kill: &AtomicBool) {
    info!("engine running");
    let mut deadline = Instant::now() + TICK_PERIOD;
    loop {
        if kill.load(Ordering::SeqCst) {
            info!("engine killed");
            return;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        engine.wait_for_input(deadline.saturating_duration_since(Instant::now()));
        if kill.load(Ordering::SeqCst) {
            info!("engine killed");
            return;
        }
        engine.tick(now_ms());
        deadline = Instant::now() + TICK_PERIOD;
    }
    // The last tick sees the connections the server just closed and commits their state.
    engine.tick(now_ms());
    // Only here, after that commit: a kill or a panic never records a clean stop.
    engine.close_store_cleanly();
    info!("engine stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_host_on_every_interface_lists_its_lan_addresses_first_and_loopback_as_this_machine() {
        let iface = |name: &str, ip: &str| crate::net::discovery::InterfaceAddr {
            interface: name.into(),
            ip: ip.parse().unwrap(),
        };
        let interfaces = [iface("lo", "127.0.0.1"), iface("docker0", "172.17.0.1"), iface("wlan0", "192.168.1.20")];
        assert_eq!(
            listening_text(addr("0.0.0.0:7447"), &interfaces),
            "192.168.1.20:7447 (LAN), 172.17.0.1:7447 (LAN), 127.0.0.1:7447 (this machine)"
        );
        // Bound to one address: that address only.
        assert_eq!(listening_text(addr("127.0.0.1:7447"), &interfaces), "127.0.0.1:7447 (this machine)");
        assert_eq!(listening_text(addr("192.168.1.20:9000"), &interfaces), "192.168.1.20:9000 (LAN)");
    }

    #[test]
    fn lan_listens_on_every_interface_on_the_port_of_bind() {
        use clap::Parser as _;
        let parse = |args: &[&str]| match crate::app::Cli::try_parse_from(args).unwrap().command {
            Some(crate::app::Command::Serve(a) | crate::app::Command::Host(a)) => a,
            other => panic!("{other:?}"),
        };
        assert_eq!(parse(&["roundtable", "serve", "--lan"]).listen_addr(), addr("0.0.0.0:7447"));
        assert_eq!(
            parse(&["roundtable", "host", "--lan", "--bind", "127.0.0.1:9000"]).listen_addr(),
            addr("0.0.0.0:9000")
        );
        assert_eq!(parse(&["roundtable", "serve"]).listen_addr(), addr("127.0.0.1:7447"));
        assert!(parse(&["roundtable", "serve", "--no-mdns"]).no_mdns);
    }

    #[test]
    fn links_use_the_public_host_with_the_bound_port_when_it_has_none() {
        assert_eq!(link_authority(Some("example.org"), addr("0.0.0.0:7447")), "example.org:7447");
        assert_eq!(link_authority(Some("example.org:9000"), addr("0.0.0.0:7447")), "example.org:9000");
        assert_eq!(link_authority(Some("::1"), addr("[::]:7447")), "[::1]:7447");
        assert_eq!(link_authority(Some("[::1]:80"), addr("[::]:7447")), "[::1]:80");
    }

    #[test]
    fn links_use_the_bound_address_without_a_public_host() {
        assert_eq!(link_authority(None, addr("127.0.0.1:7447")), "127.0.0.1:7447");
        assert_eq!(link_authority(None, addr("0.0.0.0:7447")), "127.0.0.1:7447");
    }

    #[test]
    fn links_of_a_host_on_every_interface_name_its_other_addresses_lan_first_loopback_last() {
        let iface = |name: &str, ip: &str| crate::net::discovery::InterfaceAddr {
            interface: name.into(),
            ip: ip.parse().expect("an IPv4 address"),
        };
        let interfaces = [iface("lo", "127.0.0.1"), iface("docker0", "172.17.0.1"), iface("eth0", "192.168.1.20")];
        assert_eq!(
            link_also(addr("0.0.0.0:7447"), "192.168.1.20:7447", &interfaces),
            [("172.17.0.1".to_string(), 7447), ("127.0.0.1".to_string(), 7447)]
        );
        assert_eq!(link_also(addr("192.168.1.20:7447"), "192.168.1.20:7447", &interfaces), []);
    }

    #[test]
    fn a_public_host_with_a_port_is_kept_and_one_without_gets_the_bound_port() {
        assert_eq!(link_authority(Some("example.org:9000"), addr("0.0.0.0:7447")), "example.org:9000");
        assert_eq!(link_authority(Some("[::1]:80"), addr("0.0.0.0:7447")), "[::1]:80");
        assert_eq!(link_authority(Some("example.org"), addr("0.0.0.0:7447")), "example.org:7447");
        assert_eq!(link_authority(Some("::1"), addr("0.0.0.0:7447")), "[::1]:7447");
    }
}
