//! `roundtable bench soak`: kill the host again and again while people talk, then prove that
//! nothing acknowledged was lost or duplicated.
//!
//! A real `roundtable serve` (this executable, plain ws on loopback) runs on a fresh data dir.
//! `--clients N` remotes (the production client) take turns sending messages, each with its own
//! `client_msg_id` (and cancelling the turn so the next can send). Every `--kill-every` ms the
//! host is killed with SIGKILL and started again on the same data dir and port; the clients
//! reconnect with their resume token, rejoin with `since_seq` and send again whatever was not
//! acknowledged (same `client_msg_id`, so a message that was stored is not stored twice).
//!
//! With `--storage-faults`, in about two of three `--kill-every` periods, instead of a plain kill,
//! the storage fails: the disk fills up (every commit fails for 0.3–1.5 s, sometimes with the
//! host killed in the middle), the file system goes read-only for a while (tmpfs only), or the
//! database's `-wal` and `-shm` files are deleted under the running host (then it is restarted).
//! Sends are then refused with `storage_unavailable`: half the clients retry with the same
//! `client_msg_id`, the other half retype the message as a new one, as a person would.
//!
//! With `--clock-steps`, in about two of five periods the host's wall clock is set back or
//! forward by a minute to a day instead (`serve --wall-clock-offset-file`), half the time with a
//! restart after it, and then someone joins and drops out for good. The host runs with a 5 s
//! grace period (`--reconnect-grace`), and at the end everyone dropped must be gone (a step must
//! neither stretch nor stop a grace period) and every session's messages in time order (a
//! restarted host never stamps a message before the ones it stored).
//!
//! At the end it checks, against the SQLite file itself and against what every client received:
//! every acknowledged message is stored exactly once, reached every client exactly once, and
//! each client's seqs are contiguous. The report counts kills, acknowledged, stored, delivered,
//! lost and duplicated.

use crate::app::serve_child::{free_port, scratch_dir, ServeChild};
use crate::ids::SessionId;
use crate::net::client::{Client, ClientError, ClientEvent};
use crate::net::link::Link;
use crate::protocol::*;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one step of a client (connect, a request) may take before it reconnects.
const STEP: Duration = Duration::from_secs(3);

/// What a soak run does.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub clients: usize,
    pub seconds: u64,
    /// Mean time between kills (each wait is drawn between half and one and a half of it).
    pub kill_every_ms: u64,
    pub seed: u64,
    /// Put a flaky TCP proxy between the clients and the host: it cuts connections at random
    /// (about every `kill_every_ms / 3`, each connection with probability ½).
    pub flaky: bool,
    /// Make commits fail for short windows (through `serve --inject-storage-faults`).
    pub storage_faults: bool,
    /// Which storage faults: `full`, `read-only`, `wal`.
    pub fault_kinds: Vec<String>,
    /// Step the host's wall clock (through `serve --wall-clock-offset-file`) and drop a
    /// participant after each step, whose grace period must run out on time.
    pub clock_steps: bool,
}

/// What a soak run found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SoakReport {
    pub clients: usize,
    pub seconds: u64,
    pub kills: u64,
    /// Connections the flaky proxy cut (0 without `--flaky`).
    pub cuts: u64,
    /// Messages the host acknowledged (a `send_message` result).
    pub acknowledged: usize,
    /// Acknowledged messages found in the database exactly once.
    pub stored: usize,
    /// Acknowledged messages missing from the database.
    pub lost: usize,
    /// Acknowledged messages stored more than once.
    pub duplicated: usize,
    /// Acknowledged messages × clients that received them.
    pub delivered: usize,
    /// Acknowledged messages a client never received.
    pub undelivered: usize,
    /// Messages a client received under two different seqs.
    pub delivered_twice: usize,
    /// Gaps in a client's seqs.
    pub seq_gaps: usize,
    /// Sends refused because someone else held the turn (expected: they are retried).
    pub turn_locked: usize,
    /// Windows in which the disk was full or commits were made to fail (0 without
    /// `--storage-faults`).
    pub fault_windows: u64,
    /// How storage faults were made: a full tmpfs, injected, or none.
    pub storage_faults: String,
    /// Requests refused with `storage_unavailable` (expected during fault windows; retried).
    pub refused_by_storage: usize,
    /// Messages a client received that are not in the database (must be 0: nothing unstored
    /// is ever shown).
    pub delivered_unstored: usize,
    /// Messages retyped (with a new `client_msg_id`, as a person would) after the host said
    /// `storage_unavailable` — "nothing of this request was kept" — and stored more than once
    /// (must be 0: a refused request is never stored later).
    pub retyped_stored_twice: usize,
    /// How often a client retyped a refused message.
    pub retyped: usize,
    /// Steps of the host's wall clock (0 without `--clock-steps`).
    pub clock_steps: u64,
    /// Participants dropped right after a clock step (they never come back).
    pub dropped: usize,
    /// Of those, how many the host had not marked gone one grace period (plus a second) after
    /// their drop or the last restart (must be 0: a clock step neither stretches nor stops grace).
    pub dropped_not_gone: usize,
    /// Messages stored with an earlier time than the message before them in the session (must
    /// be 0: history stays in time order whatever the wall clock does).
    pub history_out_of_order: usize,
}

impl SoakReport {
    /// Whether the run proved the promise.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.undelivered == 0
            && self.delivered_twice == 0
            && self.seq_gaps == 0
            && self.delivered_unstored == 0
            && self.retyped_stored_twice == 0
            && self.dropped_not_gone == 0
            && self.history_out_of_order == 0
    }
}

/// What one client knows at the end.
#[derive(Default, Debug)]
struct Seen {
    participant: String,
    /// seq → message id of every `message` event received for the session.
    messages: BTreeMap<u64, String>,
    /// Last seq applied.
    last_seq: u64,
    gaps: usize,
    /// (participant id, client_msg_id, message id) of this client's acknowledged messages (a
    /// client away longer than the grace period comes back as a new participant).
    acked: Vec<(String, String, String)>,
    turn_locked: usize,
    refused_by_storage: usize,
    retyped: usize,
}

/// A small tmpfs the host's data dir lives on, unmounted when dropped; `fill` makes it full.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    const FILLER: &'static str = "filler";

    /// Mounts a 64 MiB tmpfs at `path`; `None` when not permitted (not root, no mount).
    ///
    /// The mount lives in a private mount namespace of this thread (and of the hosts it starts,
    /// which die with it), so however this process ends — a panic, SIGKILL — the tmpfs goes with
    /// it and is never seen, let alone left mounted, by the rest of the machine.
    fn mount(path: &Path) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).ok()?;
        if !private_mount_namespace() {
            return None;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk { path: path.to_path_buf() })
    }

    /// Writes a file until the disk has no byte left.
    fn fill(&self) -> std::io::Result<()> {
        let mut file = std::fs::File::create(self.path.join(Self::FILLER))?;
        for chunk in [1 << 20, 4096, 1] {
            let zeros = vec![0u8; chunk];
            while file.write_all(&zeros).is_ok() {}
        }
        Ok(())
    }

    /// Frees what `fill` took.
    fn free(&self) {
        let _ = std::fs::remove_file(self.path.join(Self::FILLER));
    }

    /// Remounts the tmpfs read-only (`true`) or writable again; whether it worked.
    fn remount(&self, read_only: bool) -> bool {
        let option = if read_only { "remount,ro" } else { "remount,rw" };
        Command::new("mount")
            .args(["-o", option])
            .arg(&self.path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Moves this thread (and what it starts from now on) into a mount namespace of its own whose
/// mounts do not propagate back. False when not permitted.
fn private_mount_namespace() -> bool {
    // SAFETY: plain system calls with valid arguments; the null pointers are allowed for a
    // propagation change.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return false;
        }
        let root = c"/";
        let flags = libc::MS_REC | libc::MS_PRIVATE;
        libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), flags, std::ptr::null()) == 0
    }
}

/// Mints a share with the `share` command beside the running host and returns its link (once
/// the host has registered its first workspace).
fn mint(data_dir: &Path) -> anyhow::Result<Link> {
    let started = Instant::now();
    loop {
        let out = Command::new(std::env::current_exe()?)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["share", "mint", "--workspace", "w1", "--label", "soak"])
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = stdout.lines().find(|l| l.trim_start().starts_with("roundtable://")) {
            return Ok(Link::parse(line.trim())?);
        }
        if started.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("`share mint` printed no link: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP proxy that forwards to `target` and cuts connections at random. Returns its port and
/// a counter of cuts.
async fn flaky_proxy(
    target: u16,
    every_ms: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(u16, Arc<std::sync::atomic::AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let cuts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (cut_tx, _) = tokio::sync::broadcast::channel::<u64>(64);
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let accept_cut = cut_tx.clone();
    let accept_cuts = cuts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(host) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { continue };
            let id = next_id.fetch_add(1, Ordering::SeqCst);
            let mut cut = accept_cut.subscribe();
            let cuts = accept_cuts.clone();
            tokio::spawn(async move {
                let (mut c, mut h) = (client, host);
                let copy = tokio::io::copy_bidirectional(&mut c, &mut h);
                tokio::pin!(copy);
                loop {
                    tokio::select! {
                        _ = &mut copy => return,
                        which = cut.recv() => match which {
                            Ok(n) if n % 2 == id % 2 => {
                                cuts.fetch_add(1, Ordering::SeqCst);
                                return; // both sockets dropped: a cut network
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        },
                    }
                }
            });
        }
    });
    tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xF1A4);
        while !stop.load(Ordering::SeqCst) {
            let wait = rng.random_range((every_ms / 6).max(1)..=(every_ms / 2).max(2));
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let _ = cut_tx.send(rng.random_range(0..2));
        }
    });
    Ok((port, cuts))
}

/// Applies one event to what the client has seen; returns false on a seq gap (rejoin).
fn apply(seen: &Mutex<Seen>, frame: &EventFrame) -> bool {
    let Some(seq) = frame.seq else { return true };
    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
    if seq <= s.last_seq {
        return true; // a replay overlapping what we have: ignored, as the protocol says
    }
    if s.last_seq > 0 && seq > s.last_seq + 1 {
        s.gaps += 1;
        return false;
    }
    s.last_seq = seq;
    if let Event::Message(m) = &frame.body {
        s.messages.insert(seq, m.message_id.to_string());
    }
    true
}

/// One remote: connects (again and again), sends until told to stop, then catches up.
async fn client(
    index: usize,
    link: Link,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ index as u64);
    let session = SessionId::from("s1");
    let name = format!("soak{index}");
    let mut resume: Option<String> = None;
    // (client_msg_id, text) of the message being sent. The text names the message; the id is
    // new when it is retyped.
    let mut pending: Option<(String, String)> = None;
    let mut sent = 0u64;
    let mut retypes = 0u64;
    // Every other client behaves like a person with `join`: told "nothing of this request was
    // kept", it types the message again (a new client_msg_id); the others retry the same id.
    let retyper = index % 2 == 1;
    'connection: while !done.load(Ordering::SeqCst) {
        // Every step has a deadline: a request lost in a cut or a kill must not stall the run.
        let Ok(Ok((c, mut events))) = tokio::time::timeout(STEP, Client::connect(&link)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let auth =
            AuthenticateParams { token: link.token.clone(), display_name: name.clone(), resume_token: resume.clone() };
        let Ok(Ok(a)) = tokio::time::timeout(STEP, c.call::<AuthenticateResult>(Method::Authenticate(auth))).await
        else {
            continue;
        };
        resume = Some(a.resume_token.clone());
        let pid = a.participant_id.to_string();
        seen.lock().unwrap_or_else(|e| e.into_inner()).participant = pid.clone();
        let since = seen.lock().unwrap_or_else(|e| e.into_inner()).last_seq;
        let join = JoinSessionParams { session_id: session.clone(), since_seq: (since > 0).then_some(since) };
        match tokio::time::timeout(STEP, c.request(Method::JoinSession(join))).await {
            Ok(Ok(_)) => {}
            Ok(Err(ClientError::Protocol(e))) if e.code == ErrorCode::StorageUnavailable => {
                seen.lock().unwrap_or_else(|e| e.into_inner()).refused_by_storage += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            _ => continue,
        }
        // Events are applied on their own task; a gap or the end of the connection ends it.
        let (alive_tx, mut alive) = tokio::sync::watch::channel(true);
        let reader_seen = seen.clone();
        let pager = c.clone();
        let reader = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    ClientEvent::Event { frame, .. } => {
                        if let Event::Snapshot(snap) = &frame.body {
                            let known = reader_seen.lock().unwrap_or_else(|e| e.into_inner()).last_seq;
                            let mut messages: Vec<HistoryMessage> = snap.messages.clone();
                            // Page back to what we already had: a snapshot holds the latest page only.
                            let mut has_older = snap.has_older;
                            let mut complete = true;
                            while has_older && messages.first().is_some_and(|m| m.seq > known + 1) {
                                let before = messages.first().map(|m| m.seq);
                                let params = FetchHistoryParams {
                                    session_id: snap.session.id.clone(),
                                    before_seq: before,
                                    limit: Some(200),
                                };
                                let page = pager.call::<FetchHistoryResult>(Method::FetchHistory(params));
                                let Ok(Ok(page)) = tokio::time::timeout(STEP, page).await else {
                                    complete = false;
                                    break;
                                };
                                has_older = page.has_older;
                                messages.splice(0..0, page.messages);
                            }
                            if !complete {
                                break; // catch up again from what we had, on a new connection
                            }
                            let mut s = reader_seen.lock().unwrap_or_else(|e| e.into_inner());
                            for m in messages.iter().filter(|m| m.seq > known) {
                                s.messages.insert(m.seq, m.message.message_id.to_string());
                            }
                            s.last_seq = s.last_seq.max(snap.last_seq);
                        } else if !apply(&reader_seen, &frame) {
                            break;
                        }
                    }
                    ClientEvent::Closed { .. } => break,
                    _ => {}
                }
            }
            let _ = alive_tx.send(false);
        });
        loop {
            if !*alive.borrow() {
                reader.abort();
                continue 'connection;
            }
            if stop.load(Ordering::SeqCst) && pending.is_none() {
                if done.load(Ordering::SeqCst) {
                    reader.abort();
                    c.close();
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), alive.changed()).await;
                continue;
            }
            let (cmid, text) = pending.get_or_insert_with(|| {
                sent += 1;
                (format!("{name}-{sent}"), format!("soak {name}-{sent}"))
            });
            let params =
                SendMessageParams { session_id: session.clone(), text: text.clone(), client_msg_id: cmid.clone() };
            match tokio::time::timeout(STEP, c.call::<SendMessageResult>(Method::SendMessage(params))).await {
                Ok(Ok(r)) => {
                    let acked = (pid.clone(), cmid.clone(), r.message_id.to_string());
                    seen.lock().unwrap_or_else(|e| e.into_inner()).acked.push(acked);
                    pending = None;
                    let cancel = c.request(Method::CancelTurn(SessionRef { session_id: session.clone() }));
                    let _ = tokio::time::timeout(STEP, cancel).await;
                }
                Ok(Err(ClientError::Protocol(e))) if e.code == ErrorCode::StorageUnavailable => {
                    // Nothing was kept: the same client_msg_id again, a moment later — or, as a
                    // person would, the same text typed again as a new message.
                    {
                        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                        s.refused_by_storage += 1;
                        s.retyped += usize::from(retyper);
                    }
                    if retyper {
                        retypes += 1;
                        if let Some((cmid, _)) = pending.as_mut() {
                            *cmid = format!("{name}-{sent}-retyped-{retypes}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(rng.random_range(50..150))).await;
                }
                Ok(Err(ClientError::Protocol(e))) if e.code == ErrorCode::TurnLocked => {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).turn_locked += 1;
                    tokio::time::sleep(Duration::from_millis(rng.random_range(5..30))).await;
                }
                Ok(Err(ClientError::Protocol(_))) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(Err(_)) | Err(_) => {
                    reader.abort();
                    continue 'connection; // the host went away: reconnect and send it again
                }
            }
        }
    }
}

/// The grace period of a `--clock-steps` soak's host: short, so those dropped after a step are
/// due to be gone within the run.
const CLOCK_STEP_GRACE: Duration = Duration::from_secs(5);

/// Someone joins the session and drops out for good (the connection closes, no `leave`).
/// Returns their participant id, or `None` if the host would not let them in within 10 s.
async fn drop_out(link: &Link, name: &str) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let attempt = async {
            let (c, _events, me) = crate::app::serve_child::bench_remote(link, name).await.ok()?;
            let join = JoinSessionParams { session_id: SessionId::from("s1"), since_seq: None };
            c.request(Method::JoinSession(join)).await.ok()?;
            c.close();
            Some(me.participant_id.to_string())
        };
        if let Ok(Some(pid)) = tokio::time::timeout(STEP, attempt).await {
            return Some(pid);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// How long the final checker may try to reach the host once sending stopped.
const CHECKER_WAIT: Duration = Duration::from_secs(30);

/// The session's last seq as the host reports it once sending stopped: what every client must
/// have caught up to. Gives up after [`CHECKER_WAIT`], saying on what.
async fn final_seq(link: &Link) -> anyhow::Result<u64> {
    let started = Instant::now();
    let c = loop {
        let last_error = match tokio::time::timeout(STEP, crate::app::serve_child::bench_remote(link, "checker")).await
        {
            Ok(Ok((c, _events, _))) => break c,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {STEP:?}"),
        };
        if started.elapsed() > CHECKER_WAIT {
            anyhow::bail!(
                "the final check could not reach the host at {}:{} within {CHECKER_WAIT:?} (last error: {last_error})",
                link.host,
                link.port
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Requests still in flight when sending stopped are answered within a few ticks.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let list = c.call::<ListSessionsResult>(Method::ListSessions(ListSessionsParams::default()));
    let list = tokio::time::timeout(STEP, list)
        .await
        .map_err(|_| anyhow::anyhow!("the host did not list its sessions within {STEP:?}"))??;
    Ok(list.sessions.iter().find(|s| s.id.as_str() == "s1").map_or(0, |s| s.last_seq))
}

/// Runs the soak and reports (JSON with `json`).
pub fn run(options: &SoakOptions, json: bool, out: &mut dyn Write) -> anyhow::Result<SoakReport> {
    // ROUNDTABLE_KEEP_SOAK_DIR=1 keeps the data dir and the host's log for a look afterwards. (A
    // run that fails half-way leaves its dir too; the next bench sweeps it away.) So the dir is
    // removed below, only at the end of a run that completed, unless kept.
    let scratch = scratch_dir("soak")?.keep();
    let keep = std::env::var_os("ROUNDTABLE_KEEP_SOAK_DIR").is_some();
    if keep {
        eprintln!("keeping {} (ROUNDTABLE_KEEP_SOAK_DIR)", scratch.display());
    }
    // Storage faults: a real full disk (a small tmpfs) where mounting is permitted, otherwise
    // commits made to fail from outside (`serve --inject-storage-faults`).
    let disk = if options.storage_faults { SmallDisk::mount(&scratch.join("disk")) } else { None };
    let dir: PathBuf = match &disk {
        Some(disk) => disk.path.join("data"),
        None => scratch.clone(),
    };
    std::fs::create_dir_all(&dir)?;
    let log = scratch.join("serve.log"); // not on the disk that fills up
    let port = free_port()?;
    let fault_file = scratch.join("storage-fault");
    let fault_arg = fault_file.display().to_string();
    let clock_file = scratch.join("clock-offset");
    let mut serve_args: Vec<String> = vec!["--insecure".into()];
    if options.storage_faults && disk.is_none() {
        serve_args.extend(["--inject-storage-faults".into(), fault_arg]);
    }
    if options.clock_steps {
        serve_args.extend([
            "--wall-clock-offset-file".into(),
            clock_file.display().to_string(),
            "--reconnect-grace".into(),
            CLOCK_STEP_GRACE.as_secs().to_string(),
        ]);
    }
    let serve_args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
    let fault_kind = match (&disk, options.storage_faults) {
        (Some(_), _) => "full disk (a 64 MiB tmpfs filled up)",
        (None, true) => "injected (serve --inject-storage-faults; mounting a tmpfs is not permitted here)",
        (None, false) => "none",
    };
    if !json && options.storage_faults {
        writeln!(out, "storage faults: {fault_kind}")?;
    }
    let mut host = Some(ServeChild::start(&dir, &log, port, &serve_args)?);
    let link = mint(&dir)?;
    std::thread::sleep(Duration::from_millis(200)); // the host picks the share up within a tick
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build()?;
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    // With --flaky the clients reach the host through a proxy that cuts them at random.
    let mut client_link = link.clone();
    let cuts = if options.flaky {
        let (port, cuts) =
            runtime.block_on(flaky_proxy(link.port, options.kill_every_ms, options.seed, stop.clone()))?;
        client_link.port = port;
        Some(cuts)
    } else {
        None
    };
    let seen: Vec<Arc<Mutex<Seen>>> = (0..options.clients.max(1)).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = seen
        .iter()
        .enumerate()
        .map(|(i, s)| {
            runtime.spawn(client(i, client_link.clone(), stop.clone(), done.clone(), s.clone(), options.seed))
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let started = Instant::now();
    let (mut kills, mut fault_windows, mut clock_steps, mut offset) = (0u64, 0u64, 0u64, 0i64);
    // (participant id, when) of everyone dropped after a clock step.
    let mut dropped: Vec<(String, Instant)> = Vec::new();
    let last_start = std::cell::Cell::new(Instant::now());
    let restart = |host: &mut Option<ServeChild>| -> anyhow::Result<()> {
        if let Some(h) = host.take() {
            h.kill();
        }
        *host = Some(ServeChild::start(&dir, &log, port, &serve_args)?);
        last_start.set(Instant::now());
        Ok(())
    };
    while started.elapsed() < Duration::from_secs(options.seconds) {
        let wait = rng.random_range(options.kill_every_ms / 2..=options.kill_every_ms * 3 / 2);
        std::thread::sleep(Duration::from_millis(wait));
        if started.elapsed() >= Duration::from_secs(options.seconds) {
            break;
        }
        let pick: f64 = rng.random();
        let kind = |k: &str| options.fault_kinds.iter().any(|f| f == k);
        let what = if options.clock_steps && rng.random_bool(0.4) {
            // The host's wall clock set back or forward (a minute to a day), half the time with
            // a restart after it; then someone drops out for good, whose grace period must run
            // out on time.
            clock_steps += 1;
            let minutes = rng.random_range(1..=1440i64);
            let by = if rng.random_bool(0.5) { -minutes } else { minutes } * 60_000;
            offset += by;
            std::fs::write(&clock_file, offset.to_string())?;
            let restarted = rng.random_bool(0.5);
            if restarted {
                kills += 1;
                restart(&mut host)?;
            }
            let name = format!("dropped{clock_steps}");
            match runtime.block_on(drop_out(&link, &name)) {
                Some(pid) => dropped.push((pid, Instant::now())),
                None => tracing::warn!("{name} could not join before dropping out"),
            }
            let restarted = if restarted { ", host restarted" } else { "" };
            format!("clock step {clock_steps}: {:+} min{restarted}, then {name} dropped out", by / 60_000)
        } else if options.storage_faults && pick < 0.15 && kind("wal") {
            // The log files deleted under the running host (an over-eager cleanup): it must
            // notice before acknowledging anything more, keep what it acknowledged, and come back
            // whole after a restart.
            fault_windows += 1;
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(dir.join(format!("roundtable.db{suffix}")));
            }
            let length = rng.random_range(300..=1000);
            std::thread::sleep(Duration::from_millis(length));
            kills += 1;
            restart(&mut host)?;
            format!("storage fault {fault_windows}: -wal and -shm deleted, restarted after {length} ms")
        } else if options.storage_faults
            && (0.15..0.3).contains(&pick)
            && kind("read-only")
            && disk.as_ref().is_some_and(|d| d.remount(true))
        {
            // The file system goes read-only for a while (a disk error remounting it, say).
            fault_windows += 1;
            let length = rng.random_range(300..=1500);
            std::thread::sleep(Duration::from_millis(length));
            if let Some(disk) = &disk {
                disk.remount(false);
            }
            format!("storage fault {fault_windows}: read-only for {length} ms")
        } else if options.storage_faults && pick < 0.65 && kind("full") {
            // A full disk for a while: commits fail; sometimes the host dies meanwhile.
            match &disk {
                Some(disk) => disk.fill()?,
                None => std::fs::write(&fault_file, b"")?,
            }
            fault_windows += 1;
            let length = rng.random_range(300..=1500);
            if rng.random_bool(0.3) {
                std::thread::sleep(Duration::from_millis(length / 2));
                kills += 1;
                if let Some(disk) = &disk {
                    // SQLite cannot even open a database on a full disk: the host comes back
                    // once there is room again.
                    drop(host.take());
                    std::thread::sleep(Duration::from_millis(length / 2));
                    disk.free();
                    restart(&mut host)?;
                } else {
                    // Injected faults let the host start while commits fail.
                    restart(&mut host)?;
                    std::thread::sleep(Duration::from_millis(length / 2));
                }
                format!("storage fault {fault_windows} ({length} ms, killed in the middle)")
            } else {
                std::thread::sleep(Duration::from_millis(length));
                format!("storage fault {fault_windows} ({length} ms)")
            }
        } else {
            restart(&mut host)?;
            kills += 1;
            format!("kill {kills}")
        };
        let _ = std::fs::remove_file(&fault_file);
        if let Some(disk) = &disk {
            disk.free();
        }
        if !json {
            let acked: usize = seen.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).acked.len()).sum();
            writeln!(
                out,
                "  {:>4.1} s: {what}, {acked} messages acknowledged so far",
                started.elapsed().as_secs_f64()
            )?;
        }
    }
    // Stop sending; once every unacknowledged message is through, let everyone catch up.
    stop.store(true, Ordering::SeqCst);
    let settle = Instant::now();
    let final_seq = runtime.block_on(final_seq(&link));
    let final_seq = match final_seq {
        Ok(seq) => seq,
        Err(e) => {
            done.store(true, Ordering::SeqCst);
            return Err(e);
        }
    };
    while settle.elapsed() < Duration::from_secs(30)
        && seen.iter().any(|s| s.lock().unwrap_or_else(|e| e.into_inner()).last_seq < final_seq)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::SeqCst);
    runtime.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    });
    if let Some(&(_, last_drop)) = dropped.last() {
        // Everyone dropped is gone one grace period after their drop, or after the last restart
        // (which gives everyone reconnecting a fresh one); a second more for the tick to store it.
        let due = last_drop.max(last_start.get()) + CLOCK_STEP_GRACE + Duration::from_secs(1);
        if !json {
            writeln!(
                out,
                "  waiting {:.1} s for the last grace period to run out",
                due.saturating_duration_since(Instant::now()).as_secs_f64()
            )?;
        }
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    drop(host);

    // Check against the database file itself.
    let db = rusqlite::Connection::open(dir.join("roundtable.db"))?;
    let stored_ids: BTreeSet<String> =
        db.prepare("SELECT id FROM messages")?.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?;
    let mut stored_count: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut stmt = db.prepare("SELECT author_id, client_msg_id FROM messages WHERE client_msg_id IS NOT NULL")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        *stored_count.entry(row?).or_default() += 1;
    }
    // A message retyped after a refusal must be stored once: its text names it.
    let retyped_stored_twice: i64 = db.query_row(
        "SELECT count(*) FROM (SELECT text FROM messages WHERE text LIKE 'soak %' GROUP BY text HAVING count(*) > 1)",
        [],
        |r| r.get(0),
    )?;
    let mut dropped_not_gone = 0;
    for (pid, _) in &dropped {
        let gone: bool =
            db.query_row("SELECT gone FROM participants WHERE id = ?1", [pid], |r| r.get(0)).unwrap_or(false);
        dropped_not_gone += usize::from(!gone);
    }
    let mut history_out_of_order = 0;
    let mut previous: Option<(String, i64)> = None;
    let mut stmt = db.prepare("SELECT session, created_at FROM messages ORDER BY session, seq")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (session, at) = row?;
        if previous.as_ref().is_some_and(|(s, before)| *s == session && at < *before) {
            history_out_of_order += 1;
        }
        previous = Some((session, at));
    }
    drop(stmt);
    let mut report = SoakReport {
        clock_steps,
        dropped: dropped.len(),
        dropped_not_gone,
        history_out_of_order,
        retyped_stored_twice: retyped_stored_twice as usize,
        clients: seen.len(),
        seconds: options.seconds,
        kills,
        fault_windows,
        storage_faults: fault_kind.into(),
        cuts: cuts.map_or(0, |c| c.load(Ordering::SeqCst)),
        ..SoakReport::default()
    };
    let mut all_acked: BTreeSet<String> = BTreeSet::new();
    for s in &seen {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        report.turn_locked += s.turn_locked;
        report.refused_by_storage += s.refused_by_storage;
        report.retyped += s.retyped;
        report.delivered_unstored += s.messages.values().filter(|id| !stored_ids.contains(*id)).count();
        report.seq_gaps += s.gaps;
        for (pid, cmid, id) in &s.acked {
            report.acknowledged += 1;
            all_acked.insert(id.clone());
            match stored_count.get(&(pid.clone(), cmid.clone())).copied().unwrap_or(0) {
                0 => report.lost += 1,
                1 => report.stored += 1,
                _ => report.duplicated += 1,
            }
        }
    }
    for s in &seen {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
        for id in s.messages.values() {
            *by_id.entry(id.as_str()).or_default() += 1;
        }
        for id in &all_acked {
            match by_id.get(id.as_str()).copied().unwrap_or(0) {
                0 => report.undelivered += 1,
                1 => report.delivered += 1,
                _ => report.delivered_twice += 1,
            }
        }
    }
    drop(disk);
    if !keep {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "soak: {} clients, {} s, {} kills, {} network cuts, {} storage faults: {} acknowledged, {} stored once, {} lost, {} duplicated; delivered {} \
             (acknowledged × clients), {} undelivered, {} delivered twice, {} seq gaps ({} sends refused by the turn lock \
             and {} by the storage, retried — {} of them retyped as new messages, {} stored twice; {} received but not \
             stored); {} clock steps, {} dropped after one, {} of them not gone in time, {} messages out of time \
             order — {}",
            report.clients,
            report.seconds,
            report.kills,
            report.cuts,
            report.fault_windows,
            report.acknowledged,
            report.stored,
            report.lost,
            report.duplicated,
            report.delivered,
            report.undelivered,
            report.delivered_twice,
            report.seq_gaps,
            report.turn_locked,
            report.refused_by_storage,
            report.retyped,
            report.retyped_stored_twice,
            report.delivered_unstored,
            report.clock_steps,
            report.dropped,
            report.dropped_not_gone,
            report.history_out_of_order,
            if report.passed() { "PASS" } else { "FAIL" }
        )?;
    }
    Ok(report)
}
