//! The `claude` backend against the **real** Claude Code CLI: a pinned `@anthropic-ai/claude-code`
//! installed with npm into a cache directory outside the repository, pointed at a fake Anthropic
//! Messages API on loopback (`scripts/fake_anthropic.py`, canned streaming answers chosen from
//! the prompt) — nothing leaves the machine. Real `roundtable serve` processes with two remotes
//! (`roundtable join --json`) go through:
//! - a plan written to the CLI's plan file, then `ExitPlanMode` → a consensus plan vote showing
//!   the plan text and what approval grants → approved → the CLI edits a file in the workspace
//!   without any further vote (shown in the room), but its shell command that writes a file
//!   opens a tool vote, and once the host denies it the file is never written;
//! - a plan denied → the voters' reason reaches the model;
//! - `ExitPlanMode` without a plan (`{}`) → denied at once, without a vote, with a message the
//!   model understands;
//! - `AskUserQuestion` with two questions → both remotes answer → the answers reach the model;
//! - a very long reply arrives complete;
//! - a workspace without plan first: a command → a host tool vote → the holder cancels;
//! - no credentials → the turn fails once, with the hint.
//!
//! Without node and npm the test is skipped — except under `CI=true`, where it fails, so it can
//! never pass by skipping. `ROUNDTABLE_CLAUDE_CLI=/path/to/claude` runs it against another CLI.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::proc::*;

/// The CLI version the test installs (docs/AGENTS.md names the versions tested).
const CLI_VERSION: &str = "2.1.332";

/// A real CLI turn (process start included) may take a few seconds on a loaded machine.
const TURN: Duration = Duration::from_secs(60);

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn works(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The CLI binary: `ROUNDTABLE_CLAUDE_CLI`, else the pinned version, installed on first use into
/// `$XDG_CACHE_HOME/roundtable-claude-cli/VERSION` (or `~/.cache/…`). `None`: skip (not under CI).
fn real_cli() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ROUNDTABLE_CLAUDE_CLI") {
        return Some(PathBuf::from(path));
    }
    if !works("node") || !works("npm") {
        assert!(!under_ci(), "the real-CLI test needs node and npm on PATH; under CI=true it does not skip");
        eprintln!("skipping the real Claude Code CLI test: node or npm is not installed");
        return None;
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME is set")
        .join("roundtable-claude-cli")
        .join(CLI_VERSION);
    let bin = cache.join("node_modules/.bin/claude");
    if !bin.exists() {
        std::fs::create_dir_all(&cache).unwrap();
        eprintln!("installing @anthropic-ai/claude-code@{CLI_VERSION} into {} …", cache.display());
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&cache)
            .arg(format!("@anthropic-ai/claude-code@{CLI_VERSION}"))
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm could not install @anthropic-ai/claude-code@{CLI_VERSION}");
    }
    let version = Command::new(&bin).arg("--version").output().expect("the installed CLI runs");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.starts_with(CLI_VERSION), "installed CLI reports {version:?}, expected {CLI_VERSION}");
    Some(bin)
}

/// The fake Messages API: a Python process on a free loopback port.
struct FakeApi {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl FakeApi {
    fn start(dir: &Path) -> FakeApi {
        let (port_file, log) = (dir.join("api.port"), dir.join("api.log"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fake_anthropic.py");
        let child = Command::new("python3")
            .args([script, &port_file.display().to_string(), &log.display().to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the fake API");
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse().expect("a port number");
            }
            assert!(Instant::now() < deadline, "the fake API did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        FakeApi { child, port, log }
    }

    /// Every request the CLI made.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real host with one claude workspace and two remotes, Ann and Bob, joined to its session.
struct Room {
    serve: Proc,
    ann: Proc,
    bob: Proc,
    workspace: PathBuf,
    /// The CLI's home (its transcripts live under `.claude/projects`).
    home: PathBuf,
    /// How `serve` was started (a fixed port, so the remotes' link stays valid across restarts).
    serve_args: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl Room {
    fn open(root: &Path, name: &str, cli: &Path, api: &FakeApi, workspace_flags: &[&str], key: Option<&str>) -> Room {
        let base = root.join(name);
        let (data, workspace, home) = (base.join("host"), base.join("workspace"), base.join("home"));
        for d in [&data, &workspace, &home] {
            std::fs::create_dir_all(d).unwrap();
        }
        let data_arg = data.display().to_string();
        let ws = workspace.display().to_string();
        let cli_arg = cli.display().to_string();
        let added = Command::new(BIN)
            .args(["--data-dir", &data_arg, "workspace", "add", &ws, "--agent", "claude", "--agent-cmd", &cli_arg])
            .args(workspace_flags)
            .output()
            .unwrap();
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
        // The CLI inherits the host's environment: a home of its own (plans, settings), the fake
        // API, and no traffic anywhere else.
        let mut env = vec![
            ("HOME", home.display().to_string()),
            ("CLAUDE_CONFIG_DIR", home.join(".claude").display().to_string()),
            ("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{}", api.port)),
            ("DISABLE_TELEMETRY", "1".to_string()),
            ("DISABLE_ERROR_REPORTING", "1".to_string()),
            ("DISABLE_AUTOUPDATER", "1".to_string()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ];
        if let Some(key) = key {
            env.push(("ANTHROPIC_API_KEY", key.to_string()));
        }
        // Whatever credentials the machine has stay out; only `key` (if any) is set.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bind = format!("127.0.0.1:{port}");
        let serve_args: Vec<String> =
            ["--data-dir", &data_arg, "serve", "--bind", &bind].iter().map(|s| s.to_string()).collect();
        let mut args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
        args.push("--mint");
        let mut serve = Proc::spawn_env(&format!("serve ({name})"), &args, &workspace, &env, &REMOVE);
        let link = serve.expect("a share link", |l| l.trim_start().starts_with("roundtable://")).trim().to_string();
        let join = |who: &str| {
            let dir = base.join(who).display().to_string();
            Proc::spawn(who, &["--data-dir", &dir, "join", &link, "--name", who, "--json"], &workspace)
        };
        let mut ann = join("Ann");
        ann.expect_json("Ann's snapshot", |v| is_event(v, "snapshot"));
        let mut bob = join("Bob");
        bob.expect_json("Bob's snapshot", |v| is_event(v, "snapshot"));
        ann.expect_json("Bob joining", |v| is_event(v, "participant_joined") && v["payload"]["display_name"] == "Bob");
        Room { serve, ann, bob, workspace, home, serve_args, env }
    }

    /// Stops the host (`/quit`) and starts it again on the same data dir and port; the remotes
    /// reconnect by themselves.
    fn restart_host(&mut self) {
        self.serve.send("/quit");
        assert!(self.serve.wait(), "the host stops cleanly");
        let args: Vec<&str> = self.serve_args.iter().map(String::as_str).collect();
        self.serve = Proc::spawn_env("serve (restarted)", &args, &self.workspace, &self.env, &REMOVE);
        self.serve.expect("the restarted host's console", |l| l.starts_with("host console:"));
        for p in [&mut self.ann, &mut self.bob] {
            let name = p.name.clone();
            p.expect_stderr("the reconnect", &format!("reconnected as {name}"));
        }
    }
}

/// Whatever credentials the machine has stay out of the host's environment.
const REMOVE: [&str; 3] = ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"];

fn event<'a>(p: &'a mut Proc, what: &str, name: &'a str) -> Value {
    p.expect_json_within(what, TURN, |v| is_event(v, name))
}

/// The outcome of one vote.
fn resolved(p: &mut Proc, what: &str, vote: &Value) -> Value {
    p.expect_json_within(what, TURN, |v| is_event(v, "vote_resolved") && v["payload"]["vote_id"] == *vote)
}

/// The agent's messages of turn `turn` (all of them, whenever they were read) and the event that
/// ended it.
fn agent_text_of_turn(p: &mut Proc, turn: u64) -> (String, Value) {
    let ended = p.expect_json_within("the end of the turn", TURN, |v| {
        is_event(v, "turn_ended") && v["payload"]["turn_id"] == turn
    });
    let seen = p.json_seen();
    let start = seen
        .iter()
        .position(|v| is_event(v, "turn_started") && v["payload"]["turn_id"] == turn)
        .expect("the turn's start was received");
    let text = seen[start..]
        .iter()
        .take_while(|v| !(is_event(v, "turn_ended") && v["payload"]["turn_id"] == turn))
        .filter(|v| is_event(v, "message") && v["payload"]["author_id"] == "agent")
        .filter_map(|v| v["payload"]["text"].as_str())
        .collect();
    (text, ended)
}

#[test]
fn the_real_claude_cli_plans_asks_uses_tools_and_fails_cleanly_through_roundtable() {
    let Some(cli) = real_cli() else { return };
    // ROUNDTABLE_KEEP_TEST_DIR=1 keeps the hosts, homes, workspaces and the API log for a look.
    let tmp = tempfile::tempdir().unwrap();
    let (_cleanup, root) = match std::env::var_os("ROUNDTABLE_KEEP_TEST_DIR") {
        Some(_) => (None, tmp.keep()),
        None => {
            let path = tmp.path().to_path_buf();
            (Some(tmp), path)
        }
    };
    eprintln!("test directory: {}", root.display());
    let api = FakeApi::start(&root);

    // --- plan first (the default for claude workspaces): plan vote → approved → the edit needs
    // no vote, but a shell command that writes a file still does (issue 21: approval grants
    // exactly what the card says) → the host denies it → the file is never written
    let mut room = Room::open(&root, "plan", &cli, &api, &[], Some("test-key"));
    room.ann.send("PLAN-ME-THEN-BASH: add a notes file");
    let opened = event(&mut room.bob, "the plan vote", "vote_opened");
    let payload = &opened["payload"];
    assert_eq!(payload["kind"], "plan", "{opened}");
    assert!(payload["plan"].as_str().unwrap().contains("Add NOTES.md with a greeting"), "the plan text: {opened}");
    let card = payload["on_approval"].as_str().unwrap();
    assert!(card.contains("inside the workspace") && card.contains("Shell commands"), "{opened}");
    assert_eq!(payload["decided_by"], "consensus");
    assert_eq!(payload["required"].as_array().unwrap().len(), 2, "both remotes must agree");
    event(&mut room.ann, "the plan vote", "vote_opened");
    room.ann.send("/approve");
    room.bob.send("/approve");
    let outcome = resolved(&mut room.ann, "the outcome", &payload["vote_id"]);
    assert_eq!(outcome["payload"]["outcome"], "approved", "{outcome}");
    assert_eq!(outcome["payload"]["resolved_by"], "consensus");
    let tool_vote = |v: &Value| is_event(v, "vote_opened") && v["payload"]["kind"] == "tool";
    let bash = room.ann.expect_json_within("a vote on the shell command", TURN, tool_vote);
    assert_eq!(bash["payload"]["tool"], "Bash", "{bash}");
    assert!(bash["payload"]["input"].as_str().unwrap().contains("bash-wrote.txt"), "{bash}");
    let notes = std::fs::read_to_string(room.workspace.join("NOTES.md")).expect("the CLI wrote NOTES.md");
    assert_eq!(notes, "hello from the plan\n", "the planned edit ran without a vote");
    room.serve.send("/deny not part of the plan");
    let outcome = resolved(&mut room.bob, "the shell command's denial", &bash["payload"]["vote_id"]);
    assert_eq!(outcome["payload"]["outcome"], "denied", "{outcome}");
    let (text, ended) = agent_text_of_turn(&mut room.ann, 1);
    assert_eq!(ended["payload"]["reason"], "completed", "{ended}");
    assert!(text.contains("Write") && text.contains("allowed by the approved plan"), "the edit was shown: {text:?}");
    assert!(text.contains("Done.") && text.contains("not part of the plan"), "the model read the denial: {text:?}");
    assert!(!room.workspace.join("bash-wrote.txt").exists(), "the denied shell command never ran");
    let votes = room.ann.json_seen().iter().filter(|v| is_event(v, "vote_opened")).count();
    assert_eq!(votes, 2, "the plan and the shell command; the planned edit needed no vote");

    // --- a denied plan: the voters' reason reaches the model
    room.ann.send("PLAN-ME: another notes file");
    let opened = room.ann.expect_json_within("the second plan vote", TURN, |v| {
        is_event(v, "vote_opened") && v["payload"]["vote_id"] != "v1"
    });
    room.ann.send("/deny too big for today");
    let outcome = resolved(&mut room.bob, "the denial", &opened["payload"]["vote_id"]);
    assert_eq!(outcome["payload"]["outcome"], "denied", "{outcome}");
    let (text, ended) = agent_text_of_turn(&mut room.ann, 2);
    assert_eq!(ended["payload"]["reason"], "completed", "{ended}");
    assert!(text.contains("too big for today"), "the model read the reason: {text:?}");

    // --- a question with two parts, answered by both remotes
    room.ann.send("ASK-ME: which colour and size");
    let question = |v: &Value| is_event(v, "vote_opened") && v["payload"]["kind"] == "question";
    let opened = room.bob.expect_json_within("the question vote", TURN, question);
    assert_eq!(opened["payload"]["questions"].as_array().unwrap().len(), 2, "{opened}");
    room.ann.expect_json_within("the question vote", TURN, question);
    room.ann.send("/answer red|small");
    room.bob.send("/answer red|small");
    let outcome = resolved(&mut room.ann, "the answers", &opened["payload"]["vote_id"]);
    assert_eq!(outcome["payload"]["outcome"], "answered", "{outcome}");
    let (text, _) = agent_text_of_turn(&mut room.ann, 3);
    assert!(text.contains("red") && text.contains("small"), "the answers reached the model: {text:?}");

    // --- the agent remembers across host restarts (issue 21): the CLI's session id is stored
    // with the session and resumed; when its transcript is gone the room is told and the turn
    // runs in a new conversation instead of failing
    drop(room);
    let mut room = Room::open(&root, "memory", &cli, &api, &[], Some("test-key"));
    room.ann.send("REMEMBER-ME kiwi");
    let (text, _) = agent_text_of_turn(&mut room.ann, 1);
    assert_eq!(text, "I remember: kiwi");
    room.restart_host();
    room.ann.send("REMEMBER-ME plum");
    let (text, ended) = agent_text_of_turn(&mut room.ann, 2);
    assert_eq!(ended["payload"]["reason"], "completed", "{ended}");
    assert_eq!(text, "I remember: kiwi, plum", "the restarted host resumed the conversation");
    std::fs::remove_dir_all(room.home.join(".claude/projects")).expect("the CLI keeps transcripts there");
    room.ann.send("REMEMBER-ME fig");
    let (text, ended) = agent_text_of_turn(&mut room.ann, 3);
    assert_eq!(ended["payload"]["reason"], "completed", "{ended}");
    assert!(text.contains("could not resume its earlier conversation"), "the room is told: {text:?}");
    assert!(text.ends_with("I remember: fig"), "a new conversation, and the prompt was not lost: {text:?}");
    room.ann.send("REMEMBER-ME pear");
    let (text, _) = agent_text_of_turn(&mut room.ann, 4);
    assert_eq!(text, "I remember: fig, pear", "the new conversation is the one resumed next");
    // The model chosen in `join` is the session's, used by every later turn (issue 21: `/model`
    // used to reach the CLI, which set it for its own process only).
    room.ann.send("/model claude-fake-model-1");
    room.bob.expect_json_within("the new settings", TURN, |v| {
        is_event(v, "session_updated") && v["payload"]["agent_settings"]["model"] == "claude-fake-model-1"
    });
    for (turn, word) in [(5, "grape"), (6, "melon")] {
        room.ann.send(&format!("REMEMBER-ME {word}"));
        agent_text_of_turn(&mut room.ann, turn);
        let models: Vec<String> = api
            .requests()
            .iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/v1/messages")))
            .filter(|r| r["body"].to_string().contains(&format!("REMEMBER-ME {word}")))
            .filter_map(|r| r["body"]["model"].as_str().map(str::to_string))
            .collect();
        assert!(!models.is_empty() && models.iter().all(|m| m == "claude-fake-model-1"), "turn {turn}: {models:?}");
    }

    // --- a very long reply arrives complete (split into messages of at most 256 KiB)
    room.ann.send("LONG-ME: tell me everything");
    let (text, ended) = agent_text_of_turn(&mut room.bob, 7);
    assert_eq!(ended["payload"]["reason"], "completed");
    let expected = ("The quick brown fox jumps over the lazy dog. ".repeat(7000)).trim().to_string();
    assert_eq!(text.len(), expected.len(), "the whole reply arrived");
    assert_eq!(text, expected);
    drop(room);

    // --- leaving plan mode without any plan (a new conversation: no plan file yet): the CLI
    // sends `{}`; it is denied at once, without a vote, and the model is told why
    let mut room = Room::open(&root, "noplan", &cli, &api, &[], Some("test-key"));
    room.ann.send("NOPLAN-ME: just go");
    let (text, ended) = agent_text_of_turn(&mut room.ann, 1);
    assert_eq!(ended["payload"]["reason"], "completed", "{ended}");
    assert!(text.contains("write your plan"), "the model was told to write its plan first: {text:?}");
    let votes = room.ann.json_seen().iter().filter(|v| is_event(v, "vote_opened")).count();
    assert_eq!(votes, 0, "nobody was asked to vote on nothing");
    drop(room);

    // --- without plan first: a command is a host tool vote; the holder cancels the turn
    let mut room = Room::open(&root, "tools", &cli, &api, &["--no-plan-first"], Some("test-key"));
    room.ann.send("TOOL-ME: make a file");
    let opened = event(&mut room.ann, "the tool vote", "vote_opened");
    assert_eq!(opened["payload"]["kind"], "tool", "{opened}");
    assert_eq!(opened["payload"]["tool"], "Bash");
    assert_eq!(opened["payload"]["decided_by"], "host");
    room.ann.send("/cancel");
    let ended = event(&mut room.bob, "the cancelled turn", "turn_ended");
    assert_eq!(ended["payload"]["reason"], "cancelled", "{ended}");
    let outcome = resolved(&mut room.bob, "the closed tool vote", &opened["payload"]["vote_id"]);
    assert_eq!(outcome["payload"]["outcome"], "denied", "{outcome}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!room.workspace.join("made-by-tool.txt").exists(), "the cancelled command never ran");
    drop(room);

    // --- no credentials at all: one clear failure with the hint, nothing streamed as a reply
    let mut room = Room::open(&root, "nokey", &cli, &api, &[], None);
    room.ann.send("hello");
    let (text, ended) = agent_text_of_turn(&mut room.ann, 1);
    assert_eq!(ended["payload"]["reason"], "failed", "{ended}");
    let error = ended["payload"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("ANTHROPIC_API_KEY") && error.contains("claude /login"), "the hint: {error}");
    assert!(text.is_empty(), "the API error is not posted as the agent's reply: {text:?}");

    // Nothing left the machine: every request went to the fake API, with the test's key.
    let requests = api.requests();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|r| r["key"] == "test-key" || r["key"].is_null()), "{requests:?}");
}
