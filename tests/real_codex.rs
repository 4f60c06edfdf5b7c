//! The `codex` backend against the real OpenAI Codex CLI ([`PINNED_VERSION`]), installed with npm
//! into a cache directory outside the repository and pointed at a fake Responses API on loopback
//! (`scripts/fake_openai.py`: nothing leaves the machine but `npm install`). It drives
//! [`ExternalAgents`] as the engine would and checks what the room would see and vote on.
//!
//! Without node, npm or python3 the test is skipped — except under `CI=true`, where it fails, so
//! it can never pass by skipping. `ROUNDTABLE_CODEX_CLI=/path/to/codex` runs another build.

#![cfg(target_os = "linux")]

use crossbeam_channel::Receiver;
use roundtable::agent::codex::PINNED_VERSION;
use roundtable::agent::external::{ExternalAgents, ExternalConfig};
use roundtable::agent::{AgentCommand, AgentEvent, AgentOutput, AgentRuntime, Resolution};
use roundtable::engine::Inbound;
use roundtable::ids::SessionId;
use roundtable::persist::AgentSpec;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Long enough for the real CLI's start-up on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn works(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The pinned CLI: `$ROUNDTABLE_CODEX_CLI`, else installed with npm (once) into
/// `$XDG_CACHE_HOME/roundtable-codex-cli/VERSION` (or `~/.cache/…`). `None`: skip (not under CI).
fn real_cli() -> Option<PathBuf> {
    if let Some(cli) = std::env::var_os("ROUNDTABLE_CODEX_CLI") {
        return Some(PathBuf::from(cli));
    }
    for tool in ["node", "npm", "python3"] {
        if !works(tool) {
            assert!(!under_ci(), "the real-CLI test needs {tool} on PATH; under CI=true it does not skip");
            eprintln!("skipping the real Codex CLI test: {tool} is not installed");
            return None;
        }
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    let root = cache.join("roundtable-codex-cli").join(PINNED_VERSION);
    let cli = root.join("node_modules/.bin/codex");
    if !cli.exists() {
        std::fs::create_dir_all(&root).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&root)
            .arg(format!("@openai/codex@{PINNED_VERSION}"))
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm could not install @openai/codex@{PINNED_VERSION}");
    }
    Some(cli)
}

/// `scripts/fake_openai.py` on 127.0.0.1, stopped when dropped.
struct FakeApi {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl FakeApi {
    fn start(dir: &Path) -> FakeApi {
        let port_file = dir.join("api.port");
        let log = dir.join("api.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fake_openai.py");
        let child = Command::new("python3").arg(script).arg(&port_file).arg(&log).spawn().expect("python3 runs");
        let deadline = Instant::now() + WAIT;
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse().ok()) {
                break port;
            }
            assert!(Instant::now() < deadline, "the fake API did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        FakeApi { child, port, log }
    }

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

/// A wrapper that runs the CLI with its own `CODEX_HOME` whose config points at the fake API.
fn wrapper(dir: &Path, cli: &Path, api: &FakeApi, key: Option<&str>) -> PathBuf {
    let home = dir.join("codex-home");
    std::fs::create_dir_all(&home).unwrap();
    let config = format!(
        "model = \"gpt-5.5\"\nmodel_provider = \"fake\"\n\n[model_providers.fake]\nname = \"fake\"\n\
         base_url = \"http://127.0.0.1:{}/v1\"\nwire_api = \"responses\"\nenv_key = \"FAKE_API_KEY\"\n\
         request_max_retries = 0\nstream_max_retries = 0\n",
        api.port
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    let key = match key {
        Some(key) => format!("export FAKE_API_KEY={key}\n"),
        None => "unset FAKE_API_KEY\n".to_string(),
    };
    let path = dir.join("codex-wrapper.sh");
    let script = format!("#!/bin/sh\nexport CODEX_HOME='{}'\n{key}exec '{}' \"$@\"\n", home.display(), cli.display());
    std::fs::write(&path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    path
}

struct Room {
    agents: ExternalAgents,
    rx: Receiver<Inbound>,
    workspace: PathBuf,
    spec: AgentSpec,
    conversation: Option<String>,
    turn: u64,
}

impl Room {
    fn new(workspace: &Path, wrapper: &Path, plan_first: bool) -> Room {
        let (tx, rx) = crossbeam_channel::unbounded();
        Room {
            agents: ExternalAgents::new(tx, ExternalConfig::default()),
            rx,
            workspace: workspace.to_path_buf(),
            spec: AgentSpec {
                kind: "codex".into(),
                command: Some(wrapper.display().to_string()),
                args: Vec::new(),
                plan_first: Some(plan_first),
            },
            conversation: None,
            turn: 0,
        }
    }

    fn prompt(&mut self, text: &str) {
        self.turn += 1;
        self.agents.send(AgentCommand::StartTurn {
            session: SessionId::nth(1),
            turn_id: self.turn,
            workspace_dir: self.workspace.display().to_string(),
            spec: self.spec.clone(),
            prompt: text.into(),
            author_name: "Ann".into(),
            conversation: self.conversation.clone(),
            settings: Default::default(),
        });
    }

    fn resolve(&mut self, request_id: &str, resolution: Resolution) {
        self.agents.send(AgentCommand::Resolve {
            session: SessionId::nth(1),
            turn_id: self.turn,
            request_id: request_id.into(),
            resolution,
        });
    }

    fn next_within(&mut self, wait: Duration) -> Option<AgentOutput> {
        let deadline = Instant::now() + wait;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Inbound::Agent(AgentOutput { event: AgentEvent::Conversation(c), .. })) => self.conversation = c,
                Ok(Inbound::Agent(out)) => return Some(out),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Text up to the next request, `Done` or `Failed` (returned).
    fn until_pause(&mut self) -> (String, AgentEvent) {
        let mut text = String::new();
        loop {
            let out =
                self.next_within(WAIT).unwrap_or_else(|| panic!("no agent output within {WAIT:?}; so far: {text}"));
            assert_eq!(out.turn_id, self.turn, "{out:?}");
            match out.event {
                AgentEvent::Delta(t) => text.push_str(&t),
                other => return (text, other),
            }
        }
    }
}

/// Processes running `sleep 30` in `workspace` (the command SLOW-ME asks for).
fn sleeping_in(workspace: &Path) -> Vec<u32> {
    let workspace = workspace.canonicalize().unwrap();
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .filter_map(|p| {
            let p = p.ok()?;
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            let cwd = std::fs::read_link(p.path().join("cwd")).ok()?;
            (cmdline == b"sleep\x0030\x00" && cwd == workspace).then_some(pid)
        })
        .collect()
}

fn done(pause: (String, AgentEvent)) -> String {
    assert_eq!(pause.1, AgentEvent::Done, "the turn ends normally; text: {}", pause.0);
    pause.0
}

#[test]
fn the_real_codex_cli_votes_on_tools_questions_and_plans_through_the_codex_backend() {
    let Some(cli) = real_cli() else { return };
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    std::fs::create_dir_all(&workspace).unwrap();
    let api = FakeApi::start(dir.path());
    let wrapper = wrapper(dir.path(), &cli, &api, Some("test-key"));
    let mut room = Room::new(&workspace, &wrapper, false);

    // A plain turn: deltas, then Done, and the thread is stored as the conversation.
    room.prompt("Say hello");
    assert!(done(room.until_pause()).contains("Hello from the fake API."));
    let thread = room.conversation.clone().expect("the thread id is stored");

    // A command approval voted yes: the command runs.
    room.prompt("TOOL-ME please");
    let (_, vote) = room.until_pause();
    let AgentEvent::ToolRequest { request_id, tool, input } = vote else { panic!("a tool vote: {vote:?}") };
    assert_eq!(tool, "shell");
    assert!(input.contains("touch made-by-tool.txt"), "{input}");
    room.resolve(&request_id, Resolution::Approved);
    let text = done(room.until_pause());
    assert!(text.contains("Ran it"), "{text}");
    assert!(workspace.join("made-by-tool.txt").exists(), "the approved command ran");
    std::fs::remove_file(workspace.join("made-by-tool.txt")).unwrap();

    // Voted no: it does not run and the model reads the reasons.
    room.prompt("TOOL-ME again");
    let (_, vote) = room.until_pause();
    let AgentEvent::ToolRequest { request_id, .. } = vote else { panic!("a tool vote: {vote:?}") };
    room.resolve(&request_id, Resolution::Denied("not in this repo".into()));
    done(room.until_pause());
    assert!(!workspace.join("made-by-tool.txt").exists(), "a denied command does not run");
    let bodies = api.requests().iter().map(|r| r["body"].to_string()).collect::<Vec<_>>().join("\n");
    assert!(bodies.contains("not in this repo"), "the model was told the reasons");

    // A question with two answers (in default mode: the backend enables it there).
    room.prompt("ASK-ME something");
    let (_, vote) = room.until_pause();
    let AgentEvent::Question { request_id, questions } = vote else { panic!("a question: {vote:?}") };
    assert_eq!(questions.len(), 2);
    assert_eq!(questions[0].options, ["Red", "Blue"]);
    room.resolve(&request_id, Resolution::Answered(vec!["Blue".into(), "Large".into()]));
    let text = done(room.until_pause());
    assert!(text.contains("Blue") && text.contains("Large"), "{text}");

    // A plan vote, denied then approved.
    room.spec.plan_first = Some(true);
    room.prompt("PLAN-ME a change");
    let (_, vote) = room.until_pause();
    let AgentEvent::Plan { request_id, plan, on_approval } = vote else { panic!("a plan vote: {vote:?}") };
    assert!(plan.contains("touch plan.txt"), "{plan}");
    assert!(on_approval.unwrap().contains("inside the workspace"));
    room.resolve(&request_id, Resolution::Denied("smaller PLAN-ME".into()));
    let (_, vote) = room.until_pause();
    let AgentEvent::Plan { request_id, .. } = vote else { panic!("a revised plan: {vote:?}") };
    room.resolve(&request_id, Resolution::Approved);
    let text = done(room.until_pause());
    assert!(text.contains("Implemented the plan."), "{text}");
    assert!(text.contains("allowed by the approved plan") && text.contains("+hi"), "granted and shown: {text}");
    assert!(workspace.join("plan.txt").exists(), "the approved plan's patch was applied without another vote");

    // A file change outside an approved plan is a vote with its diff.
    room.spec.plan_first = Some(false);
    room.prompt("PATCH-ME please");
    let (_, vote) = room.until_pause();
    let AgentEvent::ToolRequest { request_id, tool, input } = vote else { panic!("a tool vote: {vote:?}") };
    assert_eq!(tool, "apply_patch");
    assert!(input.contains("patched.txt") && input.contains("+hi"), "{input}");
    room.resolve(&request_id, Resolution::Approved);
    let text = done(room.until_pause());
    assert!(text.contains("Patched.") && text.contains("```diff"), "{text}");
    assert!(workspace.join("patched.txt").exists());

    // Cancel mid-command: the turn is interrupted, nothing more is reported for it, and the
    // next turn runs on the same thread.
    room.prompt("SLOW-ME now");
    let (_, vote) = room.until_pause();
    let AgentEvent::ToolRequest { request_id, .. } = vote else { panic!("a tool vote: {vote:?}") };
    room.resolve(&request_id, Resolution::Approved);
    let deadline = Instant::now() + WAIT;
    while sleeping_in(&workspace).is_empty() {
        assert!(Instant::now() < deadline, "the approved command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    room.agents.send(AgentCommand::Cancel { session: SessionId::nth(1), turn_id: room.turn });
    assert_eq!(room.next_within(Duration::from_secs(2)), None, "nothing after a cancel");
    let deadline = Instant::now() + WAIT;
    while !sleeping_in(&workspace).is_empty() {
        assert!(Instant::now() < deadline, "the interrupted command is still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    room.prompt("Say hello after the cancel");
    assert!(done(room.until_pause()).contains("Hello from the fake API."));

    // A host restart: a new runtime resumes the stored thread.
    drop(room.agents);
    let (tx, rx) = crossbeam_channel::unbounded();
    room.agents = ExternalAgents::new(tx, ExternalConfig::default());
    room.rx = rx;
    room.prompt("Say hello after the restart");
    assert!(done(room.until_pause()).contains("Hello from the fake API."));
    assert_eq!(room.conversation.as_deref(), Some(thread.as_str()), "the same thread");
    let last = api.requests().last().unwrap()["body"].to_string();
    assert!(last.contains("TOOL-ME please"), "the resumed thread sent its history");
    let mut left: Vec<String> =
        std::fs::read_dir(&workspace).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["patched.txt", "plan.txt"], "only what the room approved is in the workspace");
}

#[test]
fn the_real_codex_cli_without_credentials_fails_the_turn_with_a_hint() {
    let Some(cli) = real_cli() else { return };
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    std::fs::create_dir_all(&workspace).unwrap();
    let api = FakeApi::start(dir.path());
    let wrapper = wrapper(dir.path(), &cli, &api, None);
    let mut room = Room::new(&workspace, &wrapper, false);
    room.prompt("Say hello");
    let (_, end) = room.until_pause();
    let AgentEvent::Failed(reason) = end else { panic!("the turn fails: {end:?}") };
    assert!(reason.contains("FAKE_API_KEY") && reason.contains("set that variable"), "{reason}");
    assert!(api.requests().is_empty(), "nothing was sent without a key");
}
