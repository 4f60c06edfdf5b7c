//! End to end through the real binary: `roundtable serve` and `roundtable join --json`
//! processes talking over TLS on a free loopback port.

mod support;

use roundtable::protocol::{Method, ParticipantRef};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use support::proc::*;
use support::*;

/// Seqs of session events in `lines`, in order of arrival.
fn seqs(lines: &[Value], session: &str) -> Vec<u64> {
    lines.iter().filter(|v| v["session_id"] == session).filter_map(|v| v["seq"].as_u64()).collect()
}

#[test]
fn two_json_joins_chat_and_vote_through_a_real_serve_process() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let (mut serve, link, mut ann, mut bob) = serve_with_ann_and_bob(data.path(), workspace.path());
    let serve_json: Value =
        serde_json::from_str(&std::fs::read_to_string(data.path().join("host/serve.json")).unwrap()).unwrap();
    assert!(link.contains(serve_json["addr"].as_str().unwrap()), "serve.json names the link's address");
    assert_eq!(serve_json["insecure"], false);

    // Chat: a plain line is a message; both see it, and the demo agent answers.
    ann.send("hello from ann");
    for p in [&mut ann, &mut bob] {
        p.expect_json("Ann's message", |v| is_event(v, "message") && v["payload"]["text"] == "hello from ann");
        p.expect_json("the end of the agent's turn", |v| is_event(v, "turn_ended"));
    }

    // Vote: Bob's /plan opens a consensus vote; Ann votes with a raw JSON request, Bob with /approve.
    bob.send("/plan ship the feature");
    let opened = ann.expect_json("the plan vote", |v| is_event(v, "vote_opened"));
    let vote_id = opened["payload"]["vote_id"].as_str().unwrap().to_string();
    assert_eq!(opened["payload"]["kind"], "plan");
    bob.expect_json("the plan vote", |v| is_event(v, "vote_opened"));
    ann.send(&json!({"id": "a1", "method": "vote_plan", "params": {"vote_id": vote_id, "approve": true}}).to_string());
    ann.expect_json("the raw request's response", |v| v["id"] == "a1" && v["result"].is_object());
    bob.send("/approve");
    for p in [&mut ann, &mut bob] {
        let resolved = p.expect_json("the outcome", |v| is_event(v, "vote_resolved"));
        assert_eq!(resolved["payload"]["outcome"], "approved");
    }
    serve.expect("the vote in the activity log", |l| l.contains("approved by consensus"));

    // /quit leaves cleanly.
    ann.send("/quit");
    assert!(ann.wait(), "join exits with success on /quit");
    bob.expect_json("Ann leaving", |v| is_event(v, "participant_left"));

    // Every session event reached Bob once, in order.
    let bob_seqs = seqs(&bob.json_seen(), "s1");
    let first = bob_seqs[0];
    assert_eq!(bob_seqs, (first..first + bob_seqs.len() as u64).collect::<Vec<_>>());

    // SIGTERM shuts the host down gracefully: clients are told, state is saved.
    let killed = Command::new("kill").args(["-TERM", &serve.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    bob.expect_json("the shutdown notice", |v| is_event(v, "closing") && v["payload"]["reason"] == "shutdown");
    serve.expect("the goodbye", |l| l.trim() == "stopped.");
    assert!(serve.wait(), "serve exits with success after SIGTERM");
}

#[test]
fn serve_refuses_insecure_mode_on_a_non_loopback_address() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--data-dir", &data.path().display().to_string(), "serve", "--insecure", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only allowed on a loopback address"), "{err}");
}

#[test]
fn agent_limits_that_would_fail_every_turn_are_refused_at_start() {
    for (flag, value, says) in [
        ("--agent-timeout", "0", "0 is not in 1.."),
        ("--agent-max-line-bytes", "0", "at least 1024 bytes"),
        ("--agent-max-line-bytes", "100", "at least 1024 bytes"),
    ] {
        let data = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["--data-dir", &data.path().display().to_string(), "serve", "--relay", "off", flag, value])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value} is refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && err.contains(flag), "{flag} {value}: {err}");
        assert!(!data.path().join("serve.json").exists(), "the host never started");
    }
}

#[test]
fn lan_with_insecure_is_refused_on_serve_and_host() {
    for command in ["serve", "host"] {
        let data = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["--data-dir", &data.path().display().to_string(), command, "--lan", "--insecure"])
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{command}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--lan and --insecure cannot be used together"), "{command}: {err}");
        assert!(!data.path().join("serve.json").exists(), "{command} never started");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_refuses_a_link_with_the_wrong_fingerprint() {
    let h = TestHost::start().await;
    let (mut link, _) = h.mint(|_| {}).await;
    link.fingerprint = Some("cd".repeat(32));
    let data = tempfile::tempdir().unwrap();
    let args = ["--data-dir".to_string(), data.path().display().to_string(), "join".into(), link.to_string()];
    let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(args).stdin(Stdio::null()).output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate fingerprint mismatch"), "{err}");
    let known = std::fs::read_to_string(data.path().join("known_hosts.json")).unwrap_or_default();
    assert!(!known.contains(&"cd".repeat(32)), "a refused link's fingerprint is not remembered: {known}");
}

#[test]
fn join_to_a_port_nobody_listens_on_asks_whether_the_host_is_running() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = tempfile::tempdir().unwrap();
    let link = format!("roundtable://127.0.0.1:{port}/tok#insecure");
    let out = Command::new(BIN)
        .args(["--data-dir", &data.path().display().to_string(), "join", &link])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("nothing is listening at 127.0.0.1:{port}: is the host running")), "{err}");
    assert_eq!(err.matches("refused").count(), 0, "one clear sentence, not the OS error twice: {err}");
}

/// Sends SIGINT (Ctrl-C) to a process.
fn ctrl_c(p: &Proc) {
    let status = Command::new("kill").args(["-INT", &p.child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn ctrl_c_leaves_cleanly_and_a_restart_within_grace_is_the_same_participant() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let (_serve, link, mut ann, mut bob) = serve_with_ann_and_bob(data.path(), workspace.path());
    let bob_id = bob.json_seen().iter().find_map(|v| v["result"]["participant_id"].as_str().map(String::from)).unwrap();
    ctrl_c(&bob);
    assert!(bob.wait(), "Ctrl-C is a normal way out");
    let left = ann.expect_json("Bob leaving", |v| is_event(v, "participant_left") || is_event(v, "presence_changed"));
    assert!(is_event(&left, "participant_left") && left["payload"]["reason"] == "left", "no ghost: {left}");
    // Started again (link from the environment this time, so it is not in `ps`): the same Bob.
    let dir = data.path().join("Bob").display().to_string();
    let mut bob = Proc::spawn_env(
        "Bob again",
        &["--data-dir", &dir, "join", "--name", "Bob", "--json"],
        workspace.path(),
        &[("ROUNDTABLE_LINK", link.clone())],
        &[],
    );
    let auth = bob.expect_json("the authentication", |v| v["result"]["resume_token"].is_string());
    assert_eq!(auth["result"]["resumed"], true, "{auth}");
    assert_eq!(auth["result"]["participant_id"], bob_id.as_str());
    assert_eq!(auth["result"]["display_name"], "Bob", "not \"Bob (2)\"");
    ann.expect_json("Bob back", |v| is_event(v, "participant_joined") && v["payload"]["display_name"] == "Bob");
    // A third person gives the link on stdin.
    let carol_dir = data.path().join("Carol").display().to_string();
    let mut carol = Proc::spawn(
        "Carol",
        &["--data-dir", &carol_dir, "join", "--link-file", "-", "--name", "Carol", "--json"],
        workspace.path(),
    );
    carol.send(&link);
    carol.expect_json("Carol's snapshot", |v| is_event(v, "snapshot"));
    carol.send("/quit");
    assert!(carol.wait());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_reconnects_by_itself_after_a_host_restart_and_shows_nothing_twice() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|_| {}).await;
    let session = h.session.clone();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let link_text = link.to_string();
    let mut ann = tokio::task::spawn_blocking(move || {
        let mut p =
            Proc::spawn("Ann", &["--data-dir", &dir, "join", &link_text, "--name", "Ann", "--json"], Path::new("."));
        p.expect_json("Ann's snapshot", |v| is_event(v, "snapshot"));
        p
    })
    .await
    .unwrap();

    let bob = remote(&link, "Bob").await;
    bob.join(&session, None).await;
    bob.say(&session, "one").await.unwrap();
    ann = tokio::task::spawn_blocking(move || {
        ann.expect_json("the first message", |v| is_event(v, "message") && v["payload"]["text"] == "one");
        ann.expect_json("the end of the turn", |v| is_event(v, "turn_ended"));
        ann
    })
    .await
    .unwrap();

    let (dir, addr, temp) = h.kill().await;
    let h = TestHost::restart_on(dir, addr, temp).await;
    let (bob2, _) = resume(&link, "Bob", &bob.resume_token).await.unwrap();
    bob2.join(&session, Some(0)).await;
    bob2.say(&session, "two").await.unwrap();

    let ann = tokio::task::spawn_blocking(move || {
        ann.expect_json("the message sent after the restart", |v| {
            is_event(v, "message") && v["payload"]["text"] == "two"
        });
        ann
    })
    .await
    .unwrap();
    // stderr is read on its own thread; the note may land a moment after the stdout line.
    let ann = tokio::task::spawn_blocking(move || {
        ann.expect_stderr("the reconnect note", "reconnected as Ann");
        ann
    })
    .await
    .unwrap();
    // `--json` prints every frame as received, the replay after the reconnect included (it may
    // repeat events already printed, identically); deduplicated by seq there is no gap.
    let frames = ann.json_seen();
    let mut by_seq: std::collections::BTreeMap<u64, &Value> = Default::default();
    for f in frames.iter().filter(|v| v["session_id"] == session.as_str() && v["seq"].is_u64()) {
        let seq = f["seq"].as_u64().unwrap();
        if let Some(before) = by_seq.insert(seq, f) {
            assert_eq!(before, f, "a repeated seq is the same event");
        }
    }
    let seen: Vec<u64> = by_seq.keys().copied().collect();
    let first = seen[0];
    assert_eq!(seen, (first..first + seen.len() as u64).collect::<Vec<_>>(), "no gap");
    assert!(seqs(&frames, session.as_str()).len() >= seen.len());
    drop(h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_waits_in_the_lobby_until_the_host_admits() {
    let h = TestHost::start().await;
    let (link, _) = h.mint(|p| p.admission_required = true).await;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let link_text = link.to_string();
    let (ann, auth) = tokio::task::spawn_blocking(move || {
        let mut p =
            Proc::spawn("Ann", &["--data-dir", &dir, "join", &link_text, "--name", "Ann", "--json"], Path::new("."));
        let auth = p.expect_json("the authentication result", |v| v["result"]["admission"].is_string());
        (p, auth)
    })
    .await
    .unwrap();
    assert_eq!(auth["result"]["admission"], "pending");
    let ann_id = auth["result"]["participant_id"].as_str().unwrap().to_string();

    h.call::<Value>(Method::Admit(ParticipantRef { participant_id: ann_id.as_str().into() })).await;
    tokio::task::spawn_blocking(move || {
        let mut ann = ann;
        ann.expect_json("the admission", |v| is_event(v, "admission") && v["payload"]["admission"] == "admitted");
        ann.expect_json("the session, once admitted", |v| is_event(v, "snapshot"));
    })
    .await
    .unwrap();
}

// ---- the host console: `serve` reads commands on its stdin ----

/// Starts `roundtable serve` (plain ws:// on loopback) and waits for its console banner.
fn serve_with_console(data: &Path, workspace: &Path) -> Proc {
    let data_arg = data.join("host").display().to_string();
    let args = ["--data-dir", &data_arg, "serve", "--bind", "127.0.0.1:0", "--insecure"];
    let mut serve = Proc::spawn("serve", &args, workspace);
    serve.expect("the console banner", |l| l.starts_with("host console:"));
    serve
}

/// Types `/mint OPTIONS` and returns the link the console prints.
fn console_mint(serve: &mut Proc, options: &str) -> String {
    serve.send(&format!("/mint {options}"));
    serve.expect("the minted link", |l| l.trim_start().starts_with("roundtable://")).trim().to_string()
}

fn json_join(data: &Path, link: &str, name: &str, workspace: &Path) -> Proc {
    let dir = data.join(name).display().to_string();
    Proc::spawn(name, &["--data-dir", &dir, "join", link, "--name", name, "--json"], workspace)
}

/// A real `serve --mint` (demo agent) and two `join --json` remotes, Ann and Bob, in its session:
/// (serve, link, Ann, Bob).
fn serve_with_ann_and_bob(data: &Path, workspace: &Path) -> (Proc, String, Proc, Proc) {
    let data_arg = data.join("host").display().to_string();
    let mut serve =
        Proc::spawn("serve", &["--data-dir", &data_arg, "serve", "--bind", "127.0.0.1:0", "--mint"], workspace);
    let link = serve.expect("a share link", |l| l.trim_start().starts_with("roundtable://")).trim().to_string();
    let mut ann = json_join(data, &link, "Ann", workspace);
    ann.expect_json("Ann's snapshot", |v| is_event(v, "snapshot"));
    let mut bob = json_join(data, &link, "Bob", workspace);
    bob.expect_json("Bob's snapshot", |v| is_event(v, "snapshot"));
    ann.expect_json("Bob joining", |v| is_event(v, "participant_joined") && v["payload"]["display_name"] == "Bob");
    (serve, link, ann, bob)
}

/// Whether a line's words are exactly `words` (table rows, whatever the column widths).
fn words_are(line: &str, words: &[&str]) -> bool {
    line.split_whitespace().collect::<Vec<_>>() == words
}

#[test]
fn host_console_mints_a_link_admits_from_the_lobby_and_kicks() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let mut serve = serve_with_console(data.path(), workspace.path());
    let link = console_mint(&mut serve, "--admission --max-uses 5");
    assert!(link.ends_with("#insecure"), "{link}");

    let mut ann = json_join(data.path(), &link, "Ann", workspace.path());
    let auth = ann.expect_json("the authentication result", |v| v["result"]["admission"].is_string());
    assert_eq!(auth["result"]["admission"], "pending");
    let ann_id = auth["result"]["participant_id"].as_str().unwrap().to_string();
    serve.expect("the lobby notice", |l| l.contains("is waiting in the lobby"));

    serve.send("/lobby");
    serve.expect("Ann listed in the lobby", |l| words_are(l, &[&ann_id, "Ann", "share", "sh1"]));
    serve.send("/admit Ann");
    serve.expect("the admission", |l| l == format!("* admitted Ann ({ann_id})"));
    ann.expect_json("the admission", |v| is_event(v, "admission") && v["payload"]["admission"] == "admitted");
    ann.expect_json("the session, once admitted", |v| is_event(v, "snapshot"));

    serve.send("/who");
    serve.expect("Ann in the roster", |l| words_are(l, &[&ann_id, "Ann", "participant", "connected"]));

    // Mistakes are reported and the host keeps going.
    serve.send("/kick Zed");
    serve.expect("an unknown name", |l| l.starts_with("! nobody named \"Zed\""));
    serve.send("/kick p99");
    serve.expect("the host's refusal with its code", |l| l.starts_with("! not_found: "));
    serve.send("/kik Ann");
    serve.expect("an unknown command", |l| l.starts_with("! unknown command /kik"));

    serve.send(&format!("/kick {ann_id}"));
    ann.expect_json("the kick", |v| is_event(v, "closing") && v["payload"]["reason"] == "kicked");
    assert!(!ann.wait(), "a kicked join exits with failure: its connection was closed");
    serve.expect("the kick confirmation", |l| l == format!("* kicked Ann ({ann_id})"));

    serve.send("/quit");
    serve.expect("the goodbye", |l| l.trim() == "stopped.");
    assert!(serve.wait(), "/quit shuts the host down gracefully");
}

#[test]
fn host_console_approve_decides_a_plan_vote_and_plain_lines_chat() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let mut serve = serve_with_console(data.path(), workspace.path());
    let link = console_mint(&mut serve, "");
    let mut bob = json_join(data.path(), &link, "Bob", workspace.path());
    bob.expect_json("Bob's snapshot", |v| is_event(v, "snapshot"));

    bob.send("/plan x");
    let opened = bob.expect_json("the plan vote", |v| is_event(v, "vote_opened"));
    let vote_id = opened["payload"]["vote_id"].as_str().unwrap().to_string();
    serve.expect("the host's voting hint", |l| l.contains(&format!("/approve {vote_id}")));
    serve.send("/approve");
    let resolved = bob.expect_json("the outcome", |v| is_event(v, "vote_resolved"));
    assert_eq!(resolved["payload"]["outcome"], "approved");
    assert_eq!(resolved["payload"]["resolved_by"], "host", "the host's ballot decides alone");
    bob.expect_json("the end of the turn", |v| is_event(v, "turn_ended"));

    serve.send("/approve");
    serve.expect("no vote left", |l| l.starts_with("! no plan or tool request is waiting for a vote"));
    serve.send("hello from the host");
    let msg = bob.expect_json("the host's message", |v| is_event(v, "message") && v["payload"]["author_id"] == "host");
    assert_eq!(msg["payload"]["text"], "hello from the host");
}

#[test]
fn serve_keeps_running_when_its_stdin_ends() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let data_arg = data.path().join("host").display().to_string();
    let args = ["--data-dir", &data_arg, "serve", "--bind", "127.0.0.1:0", "--insecure", "--mint"];
    let mut serve = Proc::spawn("serve", &args, workspace.path());
    let link = serve.expect("a share link", |l| l.trim_start().starts_with("roundtable://")).trim().to_string();
    drop(serve.stdin.take());
    serve.expect("the console-off note", |l| l.contains("the host console is off"));

    let mut bob = json_join(data.path(), &link, "Bob", workspace.path());
    bob.expect_json("Bob's snapshot", |v| is_event(v, "snapshot"));
    assert!(serve.child.try_wait().unwrap().is_none(), "the host is still running");

    let killed = Command::new("kill").args(["-TERM", &serve.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    serve.expect("the goodbye", |l| l.trim() == "stopped.");
    assert!(serve.wait());
}

#[test]
fn serve_help_mentions_the_host_console() {
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("/help lists the host console's commands"), "{help}");
}

/// Issue C's finish line: a real `serve` with a workspace on the `claude` backend (the fake CLI
/// replaying a recorded ExitPlanMode transcript); a remote's message drives the CLI, its plan
/// approval goes through a consensus vote of both remotes, and the approval reaches the CLI.
#[test]
fn a_remote_drives_the_claude_backend_and_its_plan_goes_through_a_consensus_vote() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let data_arg = data.path().join("host").display().to_string();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/claude/plan.jsonl");
    let log = data.path().join("fake_claude.log");
    let ws = workspace.path().display().to_string();
    let log_arg = log.display().to_string();
    let added = Command::new(BIN)
        .args(["--data-dir", &data_arg, "workspace", "add", &ws, "--agent", "claude"])
        .arg("--agent-cmd")
        .arg(roundtable::scenario::agents::find_bin("fake_claude").unwrap())
        .args([
            "--agent-arg",
            "--fake-script",
            "--agent-arg",
            fixture,
            "--agent-arg",
            "--fake-log",
            "--agent-arg",
            &log_arg,
        ])
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));

    let mut serve =
        Proc::spawn("serve", &["--data-dir", &data_arg, "serve", "--bind", "127.0.0.1:0", "--mint"], workspace.path());
    let link = serve.expect("a share link", |l| l.trim_start().starts_with("roundtable://")).trim().to_string();
    let join = |name: &str| {
        let dir = data.path().join(name).display().to_string();
        Proc::spawn(name, &["--data-dir", &dir, "join", &link, "--name", name, "--json"], workspace.path())
    };
    let mut ann = join("Ann");
    ann.expect_json("Ann's snapshot", |v| is_event(v, "snapshot"));
    let mut bob = join("Bob");
    bob.expect_json("Bob's snapshot", |v| is_event(v, "snapshot"));
    ann.expect_json("Bob joining", |v| is_event(v, "participant_joined") && v["payload"]["display_name"] == "Bob");

    ann.send("add a --verbose flag");
    let opened = bob.expect_json("the plan vote", |v| is_event(v, "vote_opened"));
    assert_eq!(opened["payload"]["kind"], "plan");
    assert!(opened["payload"]["plan"].as_str().unwrap().contains("Add the --verbose flag"));
    assert_eq!(opened["payload"]["decided_by"], "consensus");
    assert_eq!(opened["payload"]["required"].as_array().unwrap().len(), 2, "both remotes must agree");
    ann.expect_json("streamed text from the CLI", |v| is_event(v, "agent_delta"));
    ann.expect_json("the plan vote", |v| is_event(v, "vote_opened"));
    ann.send("/approve");
    let progress = bob.expect_json("Ann's ballot", |v| is_event(v, "vote_progress"));
    assert_eq!(progress["payload"]["pending"].as_array().unwrap().len(), 1, "still waits for Bob");
    bob.send("/approve");
    for p in [&mut ann, &mut bob] {
        let resolved = p.expect_json("the outcome", |v| is_event(v, "vote_resolved"));
        assert_eq!(resolved["payload"]["outcome"], "approved");
        assert_eq!(resolved["payload"]["resolved_by"], "consensus");
        p.expect_json("the agent's reply", |v| {
            is_event(v, "message")
                && v["payload"]["author_id"] == "agent"
                && v["payload"]["text"] == "I'll make a plan.\n\nDone."
        });
        let ended = p.expect_json("the end of the turn", |v| is_event(v, "turn_ended"));
        assert_eq!(ended["payload"]["reason"], "completed", "the lock is released normally");
    }
    // The CLI got the prompt and an allow for its ExitPlanMode request, with the input echoed.
    let sent = std::fs::read_to_string(&log).unwrap();
    assert!(sent.contains("add a --verbose flag"), "the prompt reached the CLI:\n{sent}");
    assert!(
        sent.contains(r#""behavior":"allow""#) && sent.contains("updatedInput"),
        "approval reached the CLI:\n{sent}"
    );
    assert!(
        sent.contains(&format!(r#""cwd":"{}"#, workspace.path().canonicalize().unwrap().display()))
            || sent.contains(&ws)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_pages_back_through_a_long_history_with_older() {
    const N: usize = 230;
    let h = TestHost::start().await;
    h.flood(N, |i| format!("flood {i}")).await;
    let (link, _) = h.mint(|_| {}).await;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let link_text = link.to_string();
    tokio::task::spawn_blocking(move || {
        let mut zed = Proc::spawn("Zed", &["--data-dir", &dir, "join", &link_text, "--name", "Zed"], Path::new("."));
        zed.expect("the hint that earlier messages exist", |l| l.contains("/older shows them"));
        zed.expect("the latest message", |l| l == format!("[Host] flood {}", N - 1));
        // 460 messages (each flood and the agent's cut-off reply): the snapshot shows the last
        // 20, then pages of 100 back to the start.
        for _ in 0..10 {
            zed.send("/older");
            let end =
                zed.expect("the end of a page", |l| l.starts_with("--- end of page") || l.starts_with("--- start"));
            if end.starts_with("--- start of the session") {
                break;
            }
        }
        zed.send("/older");
        zed.expect("the note that nothing is older", |l| l.contains("no earlier messages"));
        for i in 0..N {
            let line = format!("[Host] flood {i}");
            let n = zed.seen.iter().filter(|l| **l == line).count();
            assert_eq!(n, 1, "{line} shown {n} times");
        }
    })
    .await
    .unwrap();
}

#[test]
fn a_second_host_on_the_same_data_dir_refuses_to_start_naming_the_first() {
    let data = tempfile::tempdir().unwrap();
    let first = serve_with_console(data.path(), data.path());
    let data_arg = data.path().join("host").display().to_string();
    let args = ["--data-dir", &data_arg, "serve", "--bind", "127.0.0.1:0", "--insecure"];
    let mut second = Proc::spawn("second serve", &args, data.path());
    assert!(!second.wait(), "the second host must fail");
    let err = second.stderr.lock().unwrap().clone();
    assert!(err.contains("already running"), "{err}");
    assert!(err.contains(&format!("PID {}", first.child.id())), "names the first host's PID: {err}");
    // The share CLI keeps working beside the running host.
    let out = Command::new(BIN).args(["--data-dir", &data_arg, "share", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_host_refuses_to_replace_a_missing_database_with_an_empty_one_unless_told_fresh() {
    let data = tempfile::tempdir().unwrap();
    let host_dir = data.path().join("host");
    drop(serve_with_console(data.path(), data.path())); // creates the certificate and the database
    std::fs::remove_file(host_dir.join("roundtable.db")).unwrap();
    let data_arg = host_dir.display().to_string();
    let args = ["--data-dir", &data_arg, "serve", "--bind", "127.0.0.1:0", "--insecure"];
    let mut again = Proc::spawn("serve without its database", &args, data.path());
    assert!(!again.wait(), "must refuse");
    let err = again.stderr.lock().unwrap().clone();
    assert!(err.contains("database") && err.contains("missing") && err.contains("--fresh"), "{err}");
    assert!(!host_dir.join("roundtable.db").exists(), "no empty database was created");
    let fresh = ["--data-dir", &data_arg, "serve", "--bind", "127.0.0.1:0", "--insecure", "--fresh"];
    let mut started = Proc::spawn("serve --fresh", &fresh, data.path());
    started.expect("the console banner", |l| l.starts_with("host console:"));
}

/// Room chat through real processes: while Ann holds the turn, Bob's `/chat` reaches everyone as
/// a `chat` event and never the agent; Ann then `/quote`s it into her next prompt, which says who
/// said it.
#[test]
fn join_chats_with_the_room_mid_turn_and_quotes_it_into_the_next_prompt() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let (_serve, _link, mut ann, mut bob) = serve_with_ann_and_bob(data.path(), workspace.path());

    ann.send("a long message so the agent takes several ticks to answer it");
    bob.expect_json("Ann's turn", |v| is_event(v, "turn_started"));
    bob.send("/chat wait, don't touch the migrations");
    for p in [&mut ann, &mut bob] {
        let chat = p.expect_json("Bob's room chat", |v| is_event(v, "chat"));
        assert_eq!(chat["payload"]["text"], "wait, don't touch the migrations");
        assert_eq!(chat["payload"]["room"], true);
        let reply =
            p.expect_json("the agent's reply", |v| is_event(v, "message") && v["payload"]["author_id"] == "agent");
        assert!(!reply["payload"]["text"].as_str().unwrap().contains("migrations"), "the agent never hears it");
        p.expect_json("the end of Ann's turn", |v| is_event(v, "turn_ended"));
    }
    ann.send("/quote 1");
    ann.send("then leave them alone");
    let prompt = bob.expect_json("Ann's quoting prompt", |v| {
        is_event(v, "message")
            && v["payload"]["author_name"] == "Ann"
            && v["payload"]["text"] != "a long message so the agent takes several ticks to answer it"
    });
    assert_eq!(
        prompt["payload"]["text"], "> Bob (room chat): wait, don't touch the migrations\n\nthen leave them alone",
        "the prompt says who said what"
    );
}

#[test]
fn host_mint_without_a_usable_window_mints_one_share_and_prints_its_link_and_the_mint_hint_names_a_workspace() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let dir = data.path().join("host").display().to_string();
    // A display that is not there: the window fails to open and the host falls back to headless.
    let mut host = Proc::spawn_env(
        "host",
        &["--data-dir", &dir, "host", "--mint", "--bind", "127.0.0.1:0"],
        workspace.path(),
        &[("DISPLAY", ":4711".into())],
        &["WAYLAND_DISPLAY"],
    );
    let link = host.expect("the link", |l| l.trim_start().starts_with("roundtable://")).trim().to_string();
    host.expect("how to use it", |l| l.contains("they run: roundtable connect '"));
    host.expect("the one-line install", |l| l.contains("Not installed yet? curl ") && l.contains("-installer.sh | sh"));
    host.expect("the console", |l| l.starts_with("host console:"));
    host.send("/quit");
    assert!(host.wait());
    let links = host.seen.iter().filter(|l| l.trim_start().starts_with("roundtable://")).count();
    assert_eq!(links, 1, "one link printed: {:?}", host.seen);
    let out = Command::new(BIN).args(["--data-dir", &dir, "share", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.lines().filter(|l| l.trim_start().starts_with("sh")).count(), 1, "one share minted:\n{list}");
    assert!(link.contains('#'));
    // Without --mint the banner says how to mint, with the workspace it needs.
    let args = ["--data-dir", &dir, "serve", "--bind", "127.0.0.1:0"];
    let mut serve = Proc::spawn_env("serve", &args, workspace.path(), &[("RUST_LOG", "info".into())], &["NO_COLOR"]);
    serve.expect("the mint hint", |l| l.contains("/mint on this console, or: roundtable share mint --workspace w1"));
    serve.send("/quit");
    assert!(serve.wait());
    // Its log went to a pipe: plain text, no terminal colour codes.
    let log = serve.stderr.lock().unwrap().clone();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\x1b'), "no ANSI escapes in a piped log: {log:?}");
}

/// `host --mint` started again prints the link it minted before while that link still lets
/// people in, instead of minting one more at every start (issue 26); a revoked link is replaced.
#[test]
fn host_mint_restarted_prints_the_same_link_until_it_is_revoked() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let dir = data.path().join("host").display().to_string();
    let start = || {
        let mut host = Proc::spawn_env(
            "host",
            &["--data-dir", &dir, "host", "--mint", "--bind", "127.0.0.1:0", "--relay", "off"],
            workspace.path(),
            &[("DISPLAY", ":4711".into())],
            &["WAYLAND_DISPLAY"],
        );
        let link = host.expect("the link", |l| l.trim_start().starts_with("roundtable://")).trim().to_string();
        host.expect("the console", |l| l.starts_with("host console:"));
        host.send("/quit");
        assert!(host.wait());
        (link, host.seen.join("\n"))
    };
    let shares = || {
        let out = Command::new(BIN).args(["--data-dir", &dir, "share", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.trim_start().starts_with("sh")).count()
    };
    let (first, said) = start();
    assert!(said.contains("shown once"), "{said}");
    assert!(said.contains("data directory: "), "{said}");
    assert!(said.contains("\"/plan GOAL\""), "the banner says how to make the demo agent ask for a vote: {said}");
    // Port 0 picks another port at every start; the token is what stays.
    let token = |link: &str| link.split('/').nth(3).and_then(|t| t.split(['#', '?']).next()).unwrap().to_string();
    let (again, said) = start();
    assert_eq!(token(&again), token(&first), "the same link: {first} then {again}");
    assert!(said.contains("the same as at the last start") && said.contains("not used yet"), "{said}");
    assert_eq!(shares(), 1, "no second share");
    let id = said
        .split("the last start: share ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .expect("the share id")
        .to_string();
    let out = Command::new(BIN).args(["--data-dir", &dir, "share", "revoke", &id]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (third, said) = start();
    assert_ne!(token(&third), token(&first), "a revoked link is not printed again");
    assert!(said.contains("shown once"), "{said}");
    assert_eq!(shares(), 2);
}

/// `serve --agent codex` (and `host --agent …`) registers the directory with that agent when
/// there is no workspace yet (issue 27); `--agent command` has no program to run and says how.
#[test]
fn serve_agent_chooses_the_agent_of_the_first_workspace() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let dir = data.path().join("host").display().to_string();
    let args = ["--data-dir", &dir, "serve", "--bind", "127.0.0.1:0", "--relay", "off", "--agent", "codex"];
    let mut serve = Proc::spawn("serve", &args, workspace.path());
    serve.expect("the codex workspace", |l| l.contains("(codex agent)"));
    serve.expect("the console", |l| l.starts_with("host console:"));
    serve.send("/quit");
    assert!(serve.wait());
    let empty = data.path().join("other").display().to_string();
    let out = Command::new(BIN)
        .args(["--data-dir", &empty, "serve", "--bind", "127.0.0.1:0", "--relay", "off", "--agent", "command"])
        .current_dir(workspace.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--agent-cmd PATH"), "{err}");
}

#[test]
fn join_help_lists_the_line_commands() {
    let out = Command::new(BIN).args(["join", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["/chat TEXT", "/quote N", "/approve", "/deny REASON", "/answer A[|B...]", "/cancel", "/quit"] {
        assert!(help.contains(command), "join --help names {command}:\n{help}");
    }
    assert!(help.contains("deduplicate by"), "--json says replays may repeat frames:\n{help}");
}

#[test]
fn join_json_prints_every_frame_a_replay_included() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let (_serve, _link, mut ann, _bob) = serve_with_ann_and_bob(data.path(), workspace.path());
    let snapshot = ann.json_seen().into_iter().find(|v| is_event(v, "snapshot")).unwrap();
    let session = snapshot["session_id"].as_str().unwrap().to_string();
    let joined = ann.json_seen().into_iter().find(|v| is_event(v, "participant_joined")).expect("Bob joining");
    // Ask for the whole log again, as a script would after a reconnect.
    ann.send(
        &json!({"id": "again", "method": "join_session", "params": {"session_id": session, "since_seq": 0}})
            .to_string(),
    );
    ann.expect_json("the join answer", |v| v["id"] == "again");
    let seq = joined["seq"].as_u64().unwrap();
    let again = ann.expect_json("the replay of an event already printed", |v| {
        is_event(v, "participant_joined") && v["seq"].as_u64() == Some(seq)
    });
    assert_eq!(again, joined, "printed again, as received");
}

/// Readiness (issue 28): a remote that connects the moment `serve` starts — before it could have
/// opened its first session — is not let in until the host is ready, so its join finds the
/// session; and `serve.json`, the readiness signal, names the serving process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_the_moment_serve_starts_finds_its_session_and_serve_json_names_the_ready_host() {
    use roundtable::net::client::{Client, ClientError};
    use roundtable::net::link::Link;
    use roundtable::protocol::{AuthenticateParams, AuthenticateResult, JoinSessionParams};
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let data_arg = data.path().display().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let admin = |args: &[&str]| {
        let out = Command::new(BIN).args(["--data-dir", &data_arg]).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // A workspace without a session and a link, made before the host ever ran.
    admin(&["workspace", "add", &workspace.path().display().to_string()]);
    let host_arg = format!("127.0.0.1:{port}");
    let minted = admin(&["share", "mint", "--workspace", "w1", "--insecure", "--host", &host_arg]);
    let link = Link::parse(minted.lines().find(|l| l.starts_with("roundtable://")).unwrap().trim()).unwrap();

    let bind = format!("127.0.0.1:{port}");
    let serve = Proc::spawn("serve", &["--data-dir", &data_arg, "serve", "--bind", &bind, "--insecure"], data.path());
    let deadline = std::time::Instant::now() + WAIT;
    let (client, _events) = loop {
        // Refused until the port is bound; after that the connect waits until the host is ready.
        match Client::connect(&link).await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            Err(e) => panic!("serve never accepted within {WAIT:?}: {e}"),
        }
    };
    let auth = AuthenticateParams { token: link.token.clone(), display_name: "Ann".into(), resume_token: None };
    let _: AuthenticateResult = client.call(Method::Authenticate(auth)).await.expect("authenticated");
    let join = JoinSessionParams { session_id: "s1".into(), since_seq: None };
    let joined: Result<Value, ClientError> = client.call(Method::JoinSession(join)).await;
    joined.expect("the first session is open by the time anyone is let in");

    let info: Value = serde_json::from_str(&std::fs::read_to_string(data.path().join("serve.json")).unwrap()).unwrap();
    assert_eq!(info["pid"], serve.child.id(), "serve.json names the ready host: {info}");
    assert_eq!(info["addr"], bind);
}

/// Issue 21 (item 4): `/clear` in `join` is not sent to the agent as a prompt (that wiped the
/// agent's memory but not the room): `join` says only the host clears a session, and how to
/// reach the agent's own command on purpose.
#[test]
fn join_clear_is_not_a_prompt_and_says_who_clears_and_how_to_reach_the_agents_own() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let (_serve, _link, mut ann, mut bob) = serve_with_ann_and_bob(data.path(), workspace.path());
    ann.send("/clear");
    ann.expect_stderr("the note", "only the host can clear a session");
    ann.expect_stderr("the way to the agent's own", "//clear");
    ann.send("/chat after the clear");
    bob.expect_json("the chat line", |v| is_event(v, "chat") && v["payload"]["text"] == "after the clear");
    let prompts = bob.json_seen().iter().filter(|v| is_event(v, "message") && v["payload"]["text"] == "/clear").count();
    assert_eq!(prompts, 0, "nothing was sent to the agent");
}

/// Issue 21 (item 7): a host that cannot store right now refuses `authenticate` with
/// `storage_unavailable` (it carries `retry_after_ms`). That is not an answer but a "not now":
/// `join` waits it out, saying so, and comes in once the host can store again — on a first
/// connection as on a reconnect. (It used to exit with status 1: "the host refused the link".)
#[test]
fn join_waits_out_a_host_that_cannot_store_right_now_instead_of_giving_up() {
    let data = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let fault = data.path().join("disk-is-full");
    let data_arg = data.path().join("host").display().to_string();
    let fault_arg = fault.display().to_string();
    let args = [
        "--data-dir",
        &data_arg,
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--insecure",
        "--inject-storage-faults",
        &fault_arg,
    ];
    let mut serve = Proc::spawn("serve", &args, workspace.path());
    serve.expect("the console banner", |l| l.starts_with("host console:"));
    let link = console_mint(&mut serve, "");

    // The disk "fills up": the host notices at its next health check and refuses changes.
    std::fs::write(&fault, b"").unwrap();
    serve.send("/chat is anyone there?");
    serve.expect_stderr("the host noticing", "nothing of this tick is acknowledged");

    let mut ann = json_join(data.path(), &link, "Ann", workspace.path());
    ann.expect_stderr("join waiting, saying why", "the host cannot take you right now");
    assert!(ann.child.try_wait().unwrap().is_none(), "join keeps trying");
    std::fs::remove_file(&fault).unwrap();
    ann.expect_json_within("Ann's snapshot once the host can store", std::time::Duration::from_secs(30), |v| {
        is_event(v, "snapshot")
    });
}
