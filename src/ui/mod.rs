//! The egui desktop window: the host's (`roundtable` / `roundtable host`) and a remote's
//! (`roundtable connect LINK`; without a link it opens on a start screen to paste one into, with
//! the hosts found on the LAN listed live).
//!
//! Three threads meet here only through channels (docs/RULES.md §7.2): the UI thread owns the window and a
//! plain-data [`model::ViewModel`]; a tokio runtime runs the [`backend`] task that owns the
//! protocol client (the host's in-process connection, or a remote's network connection); the
//! engine thread (host only) owns the World. Everything the window does is a protocol request.
//!
//! - [`model`]: the view model and the event → state rules (unit-tested).
//! - [`app`]: rendering and input → [`model::Action`]s.
//! - [`backend`]: actions → requests, events/answers → [`model::Update`]s, reconnects.
//!
//! [`run_host_window`] and [`run_connect_window`] return `Ok(None)` when no window could be shown
//! (no display, or the window failed to open) so the caller can fall back to the headless host
//! or the terminal client.

pub mod app;
pub mod backend;
pub mod model;

use crate::app::host::Host;
use crate::app::{JoinArgs, ServeArgs};
use crate::net::link::Link;
use eframe::egui;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

/// Whether a graphical display is available (X11 `DISPLAY` or `WAYLAND_DISPLAY`).
pub fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Channels between a window and its backend, plus the slot the window's egui context is put in
/// once it exists (so the backend can wake it).
struct Wiring {
    actions_tx: tokio::sync::mpsc::UnboundedSender<model::Action>,
    actions_rx: tokio::sync::mpsc::UnboundedReceiver<model::Action>,
    updates_tx: std::sync::mpsc::Sender<model::Update>,
    updates_rx: std::sync::mpsc::Receiver<model::Update>,
    ctx: Arc<OnceLock<egui::Context>>,
}

impl Wiring {
    fn new() -> Self {
        let (actions_tx, actions_rx) = tokio::sync::mpsc::unbounded_channel();
        let (updates_tx, updates_rx) = std::sync::mpsc::channel();
        Self { actions_tx, actions_rx, updates_tx, updates_rx, ctx: Arc::new(OnceLock::new()) }
    }

    fn outbox(&self) -> backend::Outbox {
        let slot = self.ctx.clone();
        let wake: backend::Waker = Arc::new(move || {
            if let Some(ctx) = slot.get() {
                ctx.request_repaint();
            }
        });
        backend::Outbox::new(self.updates_tx.clone(), wake)
    }
}

/// Opens the window and blocks until it is closed; `started` runs once the window exists.
/// `Err` when it could not be opened.
fn open_window(
    title: &str,
    model: model::ViewModel,
    actions: tokio::sync::mpsc::UnboundedSender<model::Action>,
    updates: std::sync::mpsc::Receiver<model::Update>,
    ctx_slot: Arc<OnceLock<egui::Context>>,
    prefs: std::path::PathBuf,
    started: impl FnOnce() + 'static,
) -> Result<(), eframe::Error> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_title(title).with_inner_size([1200.0, 760.0]),
        ..Default::default()
    };
    eframe::run_native(
        title,
        options,
        Box::new(move |cc| {
            let _ = ctx_slot.set(cc.egui_ctx.clone());
            started();
            let mut app = app::RoundtableApp::new(model, actions, updates);
            app.use_prefs(prefs, &cc.egui_ctx);
            Ok(Box::new(app))
        }),
    )
}

/// Closes the window on Ctrl-C / SIGTERM, so the host still shuts down gracefully.
fn close_on_signal(runtime: &tokio::runtime::Runtime, ctx: Arc<OnceLock<egui::Context>>) {
    runtime.spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => return tracing::warn!("cannot install the SIGTERM handler: {e}"),
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        match ctx.get() {
            Some(ctx) => {
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                ctx.request_repaint();
            }
            // No window yet: nothing to close gracefully.
            None => std::process::exit(130),
        }
    });
}

/// The host with its window. `Ok(None)`: no window could be opened (nothing is left running;
/// the caller falls back to the headless host).
///
/// A share minted for `--mint` is printed on the terminal too, and `args.mint` is cleared, so a
/// headless fallback does not mint a second one.
pub fn run_host_window(args: &mut ServeArgs, data_dir: Option<&Path>) -> anyhow::Result<Option<ExitCode>> {
    if !has_display() {
        return Ok(None);
    }
    let data_dir = crate::app::paths::data_dir(data_dir)?;
    let options = crate::app::serve::host_options(args, &data_dir)?;
    let default_consensus = options.engine.default_consensus;
    let vote_deadline_ms = options.engine.default_vote_deadline_ms;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("net").build()?;
    let (host, events, setup) = runtime.block_on(async {
        let (host, events) = Host::start(options).await?;
        match crate::app::serve::setup_host(&host, &data_dir, args, "host --mint").await {
            Ok(setup) => {
                crate::app::serve::announce_ready(&host, &data_dir, args.insecure);
                Ok((host, events, setup))
            }
            Err(e) => {
                host.shutdown().await;
                Err(e)
            }
        }
    })?;
    tracing::info!("host listening on {} (links name {})", host.local_addr, host.link_authority);
    crate::app::serve::say(&crate::app::serve::banner(&host, &data_dir, &setup, None));

    let wiring = Wiring::new();
    let out = wiring.outbox();
    if let Some(m) = setup.minted {
        args.mint = false;
        out.send(model::Update::Minted(m.result));
    }
    let ctx = wiring.ctx.clone();
    let backend = runtime.spawn(backend::run_host(host.client.clone(), events, wiring.actions_rx, out));
    close_on_signal(&runtime, ctx.clone());

    let mut model = model::ViewModel::new(true);
    model.settings = model::Settings {
        host_name: None,
        default_consensus: Some(default_consensus),
        vote_deadline_ms,
        address: Some(format!(
            "{} ({})",
            host.link_authority,
            match &host.fingerprint {
                Some(fp) => format!("TLS, sha256={}…", &fp[..16.min(fp.len())]),
                None => "plain ws://, --insecure".into(),
            }
        )),
    };
    let prefs = app::prefs_path(&data_dir);
    let opened = open_window("roundtable host", model, wiring.actions_tx, wiring.updates_rx, ctx, prefs, || {});
    backend.abort();
    runtime.block_on(host.shutdown());
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match opened {
        Ok(()) => Ok(Some(ExitCode::SUCCESS)),
        Err(e) => {
            eprintln!("cannot open the window ({e}); running headless instead");
            Ok(None)
        }
    }
}

/// The remote window's starting model. (The host's fingerprint is recorded in
/// `known_hosts.json` by the backend once the host proved it holds the pinned certificate.)
pub fn remote_model(link: &Link) -> model::ViewModel {
    let mut model = model::ViewModel::new(false);
    model.settings.address = Some(link.authority());
    model
}

/// A remote's window. `Ok(None)`: no window could be opened (the caller falls back to `join`).
///
/// Without a link it opens on the start screen (paste the link, nearby hosts listed live);
/// with `--nearby` and a link it falls back to a nearby host advertising the link's certificate
/// when the link's addresses do not answer, as `join --nearby` does.
pub fn run_connect_window(args: &JoinArgs, data_dir: Option<&Path>) -> anyhow::Result<Option<ExitCode>> {
    if !has_display() {
        return Ok(None);
    }
    let link = if args.has_link() { Some(Link::parse(&args.link()?)?) } else { None };
    let data_dir = crate::app::paths::data_dir(data_dir)?;
    let given = args.name.clone().filter(|n| !n.trim().is_empty());
    let name = given
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "guest".into());
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).thread_name("net").build()?;
    let wiring = Wiring::new();
    let session = args.session.as_deref().map(crate::ids::SessionId::from);
    let nearby_window = std::time::Duration::from_secs(args.nearby_seconds);
    // `--nearby LINK`: look on the LAN when the link's addresses do not answer.
    let fallback = args.nearby.then_some(nearby_window);
    let out = wiring.outbox();
    let ctx = wiring.ctx.clone();
    close_on_signal(&runtime, ctx.clone());
    let (model, title) = match &link {
        Some(link) => (remote_model(link), format!("roundtable — {}", link.authority())),
        None => (model::ViewModel::start_screen(name.clone(), given.is_none()), "roundtable — join".to_string()),
    };
    // Connect only once the window exists: a failed window then falls back to `join` without
    // having paired (which would make the terminal client "NAME (2)").
    let (backend_tx, backend_rx) = std::sync::mpsc::channel();
    let handle = runtime.handle().clone();
    let actions_rx = wiring.actions_rx;
    let data = Some(data_dir.clone());
    let start = move || {
        let task = match link {
            Some(link) => {
                let options = backend::RemoteOptions { link, name, session, data_dir: data };
                let nearby = backend::NearbyFallback { known: Vec::new(), browse: fallback };
                handle.spawn(backend::run_remote_with(options, nearby, actions_rx, out))
            }
            None => {
                let options = backend::StartOptions { session, data_dir: data, nearby_window };
                handle.spawn(backend::run_start(options, actions_rx, out))
            }
        };
        let _ = backend_tx.send(task);
    };
    let prefs = app::prefs_path(&data_dir);
    let opened = open_window(&title, model, wiring.actions_tx, wiring.updates_rx, ctx, prefs, start);
    // Dropping the action sender made the backend close the connection; give it a moment.
    if let Ok(backend) = backend_rx.try_recv() {
        runtime.block_on(async {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), backend).await;
        });
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match opened {
        Ok(()) => Ok(Some(ExitCode::SUCCESS)),
        Err(e) => {
            eprintln!("cannot open the window ({e}); joining in terminal line mode instead");
            Ok(None)
        }
    }
}

/// `roundtable host`: the host with its desktop window; without a display (or when the window
/// cannot open) it runs headless, like `roundtable serve`.
pub fn run_host(args: ServeArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    if !has_display() {
        crate::app::serve::say(
            "no display found (DISPLAY / WAYLAND_DISPLAY unset) — running headless (same as `roundtable serve`)\n",
        );
        return crate::app::run_serve(args, data_dir);
    }
    let mut args = args;
    match run_host_window(&mut args, data_dir)? {
        Some(code) => Ok(code),
        None => crate::app::run_serve(args, data_dir),
    }
}

/// `roundtable connect`: the graphical client; without a display (or when the window cannot
/// open) it runs `join` in terminal line mode — without a link, `join --nearby`'s list of hosts.
pub fn run_connect(args: JoinArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    if !has_display() {
        if args.has_link() {
            eprintln!("no display found (DISPLAY / WAYLAND_DISPLAY unset) — joining in terminal line mode (same as `roundtable join`).");
        } else {
            eprintln!("no display found (DISPLAY / WAYLAND_DISPLAY unset) — no window to paste a link into; listing the hosts on the LAN instead (same as `roundtable join --nearby`).");
        }
        return crate::app::run_join(args.for_terminal_connect(), data_dir);
    }
    // Read once: a link from stdin is not there a second time for the fallback.
    let mut args = args;
    if args.has_link() {
        args.link = Some(args.link()?);
        args.link_file = None;
    }
    match run_connect_window(&args, data_dir)? {
        Some(code) => Ok(code),
        None => crate::app::run_join(args.for_terminal_connect(), data_dir),
    }
}
