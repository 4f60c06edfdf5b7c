//! The `codex` backend: the OpenAI Codex CLI as `codex app-server` (JSON-RPC over stdio).
//!
//! One long-lived process per roundtable session serves every turn:
//!
//! ```text
//! codex app-server [configured args] [workspace args]
//! ```
//!
//! Messages are newline-delimited JSON-RPC without the `"jsonrpc"` field. A fresh process is
//! greeted with `initialize` (whose `userAgent` names the CLI version: anything but
//! [`PINNED_VERSION`] fails the turn with how to install the pinned one), `initialized`, and
//! `account/read` (no login and no API key fails the turn with how to log in). Then one Codex
//! *thread* per roundtable session: `thread/start`, or `thread/resume` of the thread id the engine
//! stored from our [`AgentEvent::Conversation`] (so it survives a host restart; a thread Codex no
//! longer has starts afresh, see [`Backend::start_afresh`]). Each roundtable turn is a
//! `turn/start` with the prompt; the thread runs with approval policy `untrusted`, so every
//! command that is not known to be read-only and every patch asks first (see `SANDBOX`).
//!
//! What the room sees and votes on:
//! - `item/agentMessage/delta` → [`AgentEvent::Delta`]; commands are shown as `$ command` with
//!   their live output, finished file changes as unified diffs;
//! - `item/commandExecution/requestApproval` → a tool vote (`shell`: command, cwd, reason);
//!   `item/fileChange/requestApproval` → a tool vote (`apply_patch`: each file, its kind and
//!   diff, taken from the `fileChange` item the request names);
//! - `item/tool/requestUserInput` → [`AgentEvent::Question`];
//! - a `plan` item (plan mode, `<proposed_plan>` in the model's reply) → [`AgentEvent::Plan`]
//!   once Codex ended its turn. The roundtable turn stays open for the vote: approval starts a
//!   Codex turn in default mode ("Implement the plan."), a denial one still in plan mode with the
//!   voters' reasons.
//!
//! A denied approval is answered `decline`, after a `turn/steer` that gives the model the voters'
//! reasons (the wire has no field for them); a cancel is `turn/interrupt`.

use super::claude::AfterPlan;
use super::external::{Backend, Reaction, TurnEnd, TurnInput};
use super::process::SpawnSpec;
use super::{AgentEvent, Resolution};
use crate::protocol::Question;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The Codex CLI version this backend speaks to. `codex app-server` is experimental and its
/// protocol changes between releases, so another version fails the turn (docs/AGENTS.md says
/// how to upgrade).
pub const PINNED_VERSION: &str = "0.171.0";

/// Every tool use that is not known to be read-only asks (the only policy under which the room
/// votes on each command and patch).
const APPROVAL_POLICY: &str = "untrusted";
/// Approved commands run as the host's user, like Claude Code's: the room's vote is the
/// guard (`untrusted` asks before every command that is not known to be read-only, and before
/// every patch). Not `workspace-write`: in 0.171.0 its bubblewrap sandbox leaves empty `.git`,
/// `.codex`, `.agents` and `.aws` folders in the workspace (tests/real_codex.rs checks that only
/// what the room approved is there).
const SANDBOX: &str = "danger-full-access";
/// What the model is told when a plan is approved (the text the Codex TUI sends).
const IMPLEMENT_THE_PLAN: &str = "Implement the plan.";

/// What approving a plan grants under `after_plan`, for the vote card: written from what this
/// backend actually allows, so the card and the behaviour cannot drift apart.
pub fn on_approval(after_plan: AfterPlan) -> String {
    match after_plan {
        AfterPlan::EditWorkspace => {
            "Approving lets the agent carry out this plan: until this turn ends its file changes \
             (apply_patch) inside the workspace are accepted without another vote, and each change is shown here. \
             Commands and files outside the workspace still need a vote."
                .to_string()
        }
        AfterPlan::AskEachTool => {
            "Approving lets the agent carry out this plan; each file change and command still needs a vote.".to_string()
        }
    }
}

/// One of our requests waiting for its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Initialize,
    AccountRead,
    ThreadStart,
    ThreadResume,
    TurnStart,
    Interrupt,
    Steer,
    /// A cheap request whose answer fails the turn: this process was refused at `initialize`.
    Refused,
}

/// A request of Codex waiting for the room.
#[derive(Debug)]
enum Pending {
    /// A command or file-change approval (answered with a `decision`).
    Approval { rpc_id: Value },
    /// `requestUserInput`: the question ids, in order.
    Question { rpc_id: Value, ids: Vec<String> },
    /// A plan Codex finished its turn with.
    Plan,
}

/// Per-turn state.
#[derive(Debug, Default)]
struct TurnState {
    workspace_dir: PathBuf,
    prompt: String,
    /// The conversation the engine sent (resumed when no thread is loaded).
    conversation: Option<String>,
    /// Run in Codex's plan mode.
    plan_mode: bool,
    /// The session's model setting.
    model: Option<String>,
    /// The Codex turn running now (`turn/started` … `turn/completed`).
    codex_turn: Option<String>,
    /// The last Codex turn of this roundtable turn (interrupt and steer name it).
    last_codex_turn: Option<String>,
    /// Requests of Codex waiting for the room, by our request id.
    pending: BTreeMap<String, Pending>,
    /// Items seen started (the diff of a file-change approval comes from its item).
    items: HashMap<String, Value>,
    /// Agent messages whose text came as deltas (their `item/completed` repeats it).
    streamed: BTreeSet<String>,
    /// The item the last text belonged to (a new one starts a new paragraph).
    text_item: Option<String>,
    wrote_text: bool,
    block_break: bool,
    /// The plan of the running Codex turn (voted on when that turn completes).
    plan: Option<String>,
    /// An approved plan lets file changes inside the workspace through.
    plan_grants_edits: bool,
    /// The last error Codex reported that it will not retry.
    error: Option<(String, Value)>,
    /// `thread/resume` of the stored thread failed.
    resume_failed: bool,
    /// The engine cancelled the turn.
    cancelling: bool,
}

/// The `codex` backend for one roundtable session.
#[derive(Debug)]
pub struct CodexBackend {
    binary: String,
    args: Vec<String>,
    after_plan: AfterPlan,
    next_id: u64,
    next_request: u64,
    calls: BTreeMap<u64, Call>,
    /// The process answered `initialize` (and the version was right).
    initialized: bool,
    /// Why this process cannot be used (its version): every turn on it fails with this.
    refused: Option<String>,
    /// The thread loaded in this process, and its model.
    thread: Option<String>,
    model: Option<String>,
    turn: TurnState,
}

impl CodexBackend {
    /// `binary` is used unless the workspace's spec names another; `args` go after `app-server`.
    pub fn new(binary: String, args: Vec<String>) -> CodexBackend {
        CodexBackend {
            binary,
            args,
            after_plan: AfterPlan::default(),
            next_id: 0,
            next_request: 0,
            calls: BTreeMap::new(),
            initialized: false,
            refused: None,
            thread: None,
            model: None,
            turn: TurnState::default(),
        }
    }

    /// What an approved plan lets Codex do next.
    pub fn with_after_plan(mut self, after_plan: AfterPlan) -> CodexBackend {
        self.after_plan = after_plan;
        self
    }

    fn call(&mut self, call: Call, method: &str, params: Value) -> Value {
        self.next_id += 1;
        self.calls.insert(self.next_id, call);
        json!({"method": method, "id": self.next_id, "params": params})
    }

    fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("codex-{}", self.next_request)
    }

    fn thread_params(&self) -> Value {
        json!({
            "cwd": self.turn.workspace_dir.display().to_string(),
            "approvalPolicy": APPROVAL_POLICY,
            "sandbox": SANDBOX,
        })
    }

    /// `thread/start`, or `thread/resume` of the conversation the engine stored.
    fn open_thread(&mut self) -> Value {
        let mut params = self.thread_params();
        match self.turn.conversation.clone() {
            Some(id) => {
                params["threadId"] = json!(id);
                params["excludeTurns"] = json!(true);
                self.call(Call::ThreadResume, "thread/resume", params)
            }
            None => self.call(Call::ThreadStart, "thread/start", params),
        }
    }

    /// `turn/start` of `text`, in plan or default mode.
    fn start_codex_turn(&mut self, text: &str, plan_mode: bool) -> Value {
        let thread = self.thread.clone().unwrap_or_default();
        let model = self.turn.model.clone().or_else(|| self.model.clone());
        let mut params = json!({
            "threadId": thread,
            "input": [{"type": "text", "text": text}],
            "collaborationMode": {
                "mode": if plan_mode { "plan" } else { "default" },
                "settings": {"model": model, "reasoning_effort": null, "developer_instructions": null},
            },
        });
        if let Some(model) = &self.turn.model {
            params["model"] = json!(model);
        }
        self.call(Call::TurnStart, "turn/start", params)
    }

    fn push_text(&mut self, reaction: &mut Reaction, text: &str) {
        if text.is_empty() {
            return;
        }
        let t = &mut self.turn;
        let text = if t.block_break && t.wrote_text { format!("\n\n{text}") } else { text.to_string() };
        t.block_break = false;
        t.wrote_text = true;
        reaction.events.push(AgentEvent::Delta(text));
    }

    /// Text of an item: a new item starts a new paragraph.
    fn push_item_text(&mut self, reaction: &mut Reaction, item: &str, text: &str) {
        if self.turn.text_item.as_deref() != Some(item) {
            self.turn.text_item = Some(item.to_string());
            self.turn.block_break = true;
        }
        self.push_text(reaction, text);
    }

    fn on_response(&mut self, id: u64, line: &Value) -> Reaction {
        let Some(call) = self.calls.remove(&id) else {
            tracing::debug!(id, "response to an unknown codex request");
            return Reaction::default();
        };
        let error = line.get("error").map(|e| e["message"].as_str().unwrap_or("unknown error").to_string());
        let result = &line["result"];
        match (call, error) {
            (Call::Initialize, Some(e)) => Reaction::end(TurnEnd::Failed(format!("codex refused initialize: {e}"))),
            (Call::Initialize, None) => {
                let agent = result["userAgent"].as_str().unwrap_or_default();
                match version_of(agent) {
                    Some(v) if v == PINNED_VERSION => {}
                    found => {
                        let reason = wrong_version(found);
                        self.refused = Some(reason.clone());
                        return Reaction::end(TurnEnd::Failed(reason));
                    }
                }
                self.initialized = true;
                let read = self.call(Call::AccountRead, "account/read", json!({"refreshToken": false}));
                Reaction { replies: vec![json!({"method": "initialized"}), read], ..Reaction::default() }
            }
            (Call::AccountRead, error) => {
                if let Some(e) = &error {
                    tracing::warn!(error = %e, "codex account/read failed; starting the thread anyway");
                }
                if error.is_none() && result["account"].is_null() && result["requiresOpenaiAuth"] == true {
                    return Reaction::end(TurnEnd::Failed(NO_LOGIN.to_string()));
                }
                Reaction::reply(self.open_thread())
            }
            (Call::ThreadResume, Some(e)) => {
                self.turn.resume_failed = true;
                Reaction::end(TurnEnd::ConversationLost(format!("codex could not resume its thread: {e}")))
            }
            (Call::ThreadStart, Some(e)) => {
                Reaction::end(TurnEnd::Failed(format!("codex could not start a thread: {e}")))
            }
            (Call::ThreadStart | Call::ThreadResume, None) => {
                let Some(thread) = result["thread"]["id"].as_str() else {
                    return Reaction::end(TurnEnd::Failed("codex started a thread without an id".to_string()));
                };
                self.thread = Some(thread.to_string());
                self.model = result["model"].as_str().map(str::to_string);
                let mut reaction = Reaction::default();
                if self.turn.conversation.as_deref() != Some(thread) {
                    reaction.events.push(AgentEvent::Conversation(Some(thread.to_string())));
                }
                let (prompt, plan) = (self.turn.prompt.clone(), self.turn.plan_mode);
                reaction.replies.push(self.start_codex_turn(&prompt, plan));
                reaction
            }
            (Call::TurnStart, Some(e)) => Reaction::end(TurnEnd::Failed(format!("codex refused the turn: {e}"))),
            (Call::TurnStart, None) => {
                if let Some(id) = result["turn"]["id"].as_str() {
                    self.turn.codex_turn.get_or_insert_with(|| id.to_string());
                    self.turn.last_codex_turn = Some(id.to_string());
                }
                Reaction::default()
            }
            (Call::Interrupt, _) => {
                // Nothing was running (a plan vote was open): the cancel is complete.
                if self.turn.cancelling && self.turn.codex_turn.is_none() {
                    return Reaction::end(TurnEnd::Done);
                }
                Reaction::default()
            }
            (Call::Steer, Some(e)) => {
                tracing::warn!(error = %e, "codex refused the voters' reasons (turn/steer)");
                Reaction::default()
            }
            (Call::Steer, None) => Reaction::default(),
            (Call::Refused, _) => {
                Reaction::end(TurnEnd::Failed(self.refused.clone().unwrap_or_else(|| wrong_version(None))))
            }
        }
    }

    fn on_server_request(&mut self, rpc_id: Value, method: &str, params: &Value) -> Reaction {
        match method {
            "item/commandExecution/requestApproval" => {
                let mut input = Map::new();
                input.insert("command".into(), params["command"].clone());
                input.insert("cwd".into(), params["cwd"].clone());
                if let Some(reason) = params["reason"].as_str() {
                    input.insert("reason".into(), json!(reason));
                }
                self.vote(rpc_id, "shell", Value::Object(input))
            }
            "item/fileChange/requestApproval" => {
                let item = params["itemId"].as_str().unwrap_or_default();
                let changes: Vec<Value> =
                    self.turn.items.get(item).and_then(|i| i["changes"].as_array().cloned()).unwrap_or_default();
                let changes: Vec<Value> = changes
                    .iter()
                    .map(|c| {
                        let kind = c["kind"]["type"].as_str().unwrap_or("update");
                        json!({"path": c["path"], "kind": kind, "diff": as_diff(kind, c["diff"].as_str().unwrap_or_default())})
                    })
                    .collect();
                if let Some(paths) = self.granted_by_plan(&changes) {
                    tracing::info!(paths, "file change allowed by the approved plan");
                    let mut reaction = Reaction::reply(json!({"id": rpc_id, "result": {"decision": "accept"}}));
                    self.turn.block_break = true;
                    self.push_text(&mut reaction, &format!("✎ apply_patch {paths} — allowed by the approved plan"));
                    self.turn.block_break = true;
                    return reaction;
                }
                let mut input = json!({"changes": changes});
                if let Some(reason) = params["reason"].as_str() {
                    input["reason"] = json!(reason);
                }
                self.vote(rpc_id, "apply_patch", input)
            }
            "item/tool/requestUserInput" => {
                let raw = params["questions"].as_array().cloned().unwrap_or_default();
                let ids: Vec<String> = raw.iter().map(|q| q["id"].as_str().unwrap_or_default().to_string()).collect();
                let questions: Vec<Question> = raw
                    .iter()
                    .filter_map(|q| {
                        let question = q["question"].as_str()?.to_string();
                        let options = q["options"]
                            .as_array()
                            .map(|o| o.iter().filter_map(|o| o["label"].as_str().map(str::to_string)).collect())
                            .unwrap_or_default();
                        Some(Question { question, options, multi_select: false })
                    })
                    .collect();
                if questions.is_empty() || questions.len() != ids.len() {
                    return Reaction::reply(rpc_error(rpc_id, "roundtable could not read these questions"));
                }
                let request_id = self.request_id();
                self.turn.pending.insert(request_id.clone(), Pending::Question { rpc_id, ids });
                Reaction::event(AgentEvent::Question { request_id, questions })
            }
            other => {
                tracing::debug!(method = other, "unsupported codex request");
                Reaction::reply(rpc_error(rpc_id, &format!("roundtable does not handle '{other}' requests")))
            }
        }
    }

    fn vote(&mut self, rpc_id: Value, tool: &str, input: Value) -> Reaction {
        let request_id = self.request_id();
        self.turn.pending.insert(request_id.clone(), Pending::Approval { rpc_id });
        Reaction::event(AgentEvent::ToolRequest { request_id, tool: tool.to_string(), input: input.to_string() })
    }

    /// The changed files (relative to the workspace) when an approved plan grants all of them.
    fn granted_by_plan(&self, changes: &[Value]) -> Option<String> {
        if !self.turn.plan_grants_edits || changes.is_empty() {
            return None;
        }
        let root = self.turn.workspace_dir.canonicalize().ok()?;
        let paths: Option<Vec<String>> = changes
            .iter()
            .map(|c| {
                let path = c["path"].as_str()?;
                super::claude::inside_dir(&root, Path::new(path)).map(|p| p.display().to_string())
            })
            .collect();
        Some(paths?.join(", "))
    }

    fn on_notification(&mut self, method: &str, params: &Value) -> Reaction {
        let mut reaction = Reaction::default();
        match method {
            "turn/started" => {
                if let Some(id) = params["turn"]["id"].as_str() {
                    self.turn.codex_turn = Some(id.to_string());
                    self.turn.last_codex_turn = Some(id.to_string());
                }
            }
            "item/agentMessage/delta" => {
                let item = params["itemId"].as_str().unwrap_or_default().to_string();
                self.turn.streamed.insert(item.clone());
                let delta = params["delta"].as_str().unwrap_or_default();
                self.push_item_text(&mut reaction, &item, delta);
            }
            "item/started" => {
                let item = &params["item"];
                let id = item["id"].as_str().unwrap_or_default().to_string();
                if item["type"] == "commandExecution" {
                    let command = item["command"].as_str().unwrap_or_default();
                    self.push_item_text(&mut reaction, &id, &format!("$ {command}\n"));
                }
                self.turn.items.insert(id, item.clone());
            }
            "item/commandExecution/outputDelta" => {
                let item = params["itemId"].as_str().unwrap_or_default().to_string();
                let delta = params["delta"].as_str().unwrap_or_default();
                self.push_item_text(&mut reaction, &item, delta);
            }
            "item/completed" => self.on_item_completed(&params["item"], &mut reaction),
            "error" => {
                let message = params["error"]["message"].as_str().unwrap_or("unknown error").to_string();
                if params["willRetry"] == true {
                    tracing::info!(%message, "codex will retry");
                } else {
                    self.turn.error = Some((message, params["error"]["codexErrorInfo"].clone()));
                }
            }
            "serverRequest/resolved" => {
                let rpc = &params["requestId"];
                let open = self.turn.pending.iter().find_map(|(id, p)| match p {
                    Pending::Approval { rpc_id } | Pending::Question { rpc_id, .. } if rpc_id == rpc => {
                        Some(id.clone())
                    }
                    _ => None,
                });
                if let Some(request_id) = open {
                    // Codex dropped the request itself (an interrupt): close its vote.
                    self.turn.pending.remove(&request_id);
                    reaction.events.push(AgentEvent::Withdrawn { request_id });
                }
            }
            "turn/completed" => return self.on_turn_completed(&params["turn"]),
            _ => {}
        }
        reaction
    }

    fn on_item_completed(&mut self, item: &Value, reaction: &mut Reaction) {
        let id = item["id"].as_str().unwrap_or_default().to_string();
        match item["type"].as_str().unwrap_or_default() {
            "agentMessage" if !self.turn.streamed.contains(&id) => {
                let text = item["text"].as_str().unwrap_or_default();
                self.push_item_text(reaction, &id, text);
            }
            "plan" => self.turn.plan = item["text"].as_str().map(str::to_string),
            "commandExecution" => {
                let note = match (item["status"].as_str(), item["exitCode"].as_i64()) {
                    (Some("declined"), _) => Some("(not run: declined)".to_string()),
                    (_, Some(code)) if code != 0 => Some(format!("(exit code {code})")),
                    _ => None,
                };
                if let Some(note) = note {
                    self.turn.block_break = true;
                    self.push_item_text(reaction, &id, &note);
                }
            }
            "fileChange" if item["status"] == "completed" => {
                let mut shown = String::new();
                for change in item["changes"].as_array().into_iter().flatten() {
                    let kind = change["kind"]["type"].as_str().unwrap_or("update");
                    let path = change["path"].as_str().unwrap_or_default();
                    let diff = as_diff(kind, change["diff"].as_str().unwrap_or_default());
                    let diff = diff.trim_end();
                    shown.push_str(&format!("✎ {kind} {path}\n```diff\n{diff}\n```\n"));
                }
                self.turn.block_break = true;
                self.push_item_text(reaction, &id, shown.trim_end());
            }
            _ => {}
        }
        self.turn.items.remove(&id);
    }

    fn on_turn_completed(&mut self, turn: &Value) -> Reaction {
        self.turn.codex_turn = None;
        if self.turn.cancelling {
            return Reaction::end(TurnEnd::Done);
        }
        match turn["status"].as_str().unwrap_or("completed") {
            "completed" => match self.turn.plan.take().filter(|p| !p.trim().is_empty()) {
                Some(plan) => {
                    let request_id = self.request_id();
                    self.turn.pending.insert(request_id.clone(), Pending::Plan);
                    let on_approval = Some(on_approval(self.after_plan));
                    Reaction::event(AgentEvent::Plan { request_id, plan, on_approval })
                }
                None => Reaction::end(TurnEnd::Done),
            },
            "interrupted" => Reaction::end(TurnEnd::Failed("codex stopped the turn (interrupted)".to_string())),
            _ => {
                let (message, info) = match (&turn["error"]["message"], self.turn.error.take()) {
                    (Value::String(m), kept) => {
                        (m.clone(), kept.map(|(_, i)| i).unwrap_or(turn["error"]["codexErrorInfo"].clone()))
                    }
                    (_, Some(kept)) => kept,
                    _ => ("the turn failed".to_string(), Value::Null),
                };
                Reaction::end(TurnEnd::Failed(failure(&message, &info)))
            }
        }
    }
}

/// A change's `diff` as a diff: for an added (deleted) file Codex 0.171.0 sends the file's
/// content, shown as `+` (`-`) lines; an update's is already a unified diff.
fn as_diff(kind: &str, diff: &str) -> String {
    let sign = match kind {
        "add" => '+',
        "delete" => '-',
        _ => return diff.to_string(),
    };
    diff.lines().map(|l| format!("{sign}{l}\n")).collect()
}

/// The message when Codex has no login and no API key.
const NO_LOGIN: &str = "codex is not logged in: run `codex login` (or `printf %s \"$OPENAI_API_KEY\" | codex login \
     --with-api-key`) as the user running the host, or configure a model provider with an `env_key`";

/// The CLI version in an `initialize` answer's `userAgent` (`roundtable/0.171.0 (Linux …)`).
fn version_of(user_agent: &str) -> Option<&str> {
    let (_, rest) = user_agent.split_once('/')?;
    rest.split_whitespace().next()
}

fn wrong_version(found: Option<&str>) -> String {
    format!(
        "codex CLI {} is not supported: roundtable drives `codex app-server` {PINNED_VERSION}, whose protocol \
         changes between releases; install it with `npm install -g @openai/codex@{PINNED_VERSION}` or point \
         --codex-bin at that version",
        found.unwrap_or("of an unknown version")
    )
}

/// A failed turn, with a hint for the errors people can fix.
fn failure(message: &str, info: &Value) -> String {
    let unauthorized = info == "unauthorized"
        || info["httpConnectionFailed"]["httpStatusCode"] == 401
        || message.contains("401 Unauthorized");
    let mut reason = format!("codex: {message}");
    if unauthorized {
        reason.push_str(" — codex has no working credentials: run `codex login` as the user running the host");
    } else if message.starts_with("Missing environment variable") {
        reason.push_str(" — set that variable for the host (the model provider's API key)");
    }
    reason
}

fn rpc_error(id: Value, message: &str) -> Value {
    json!({"id": id, "error": {"code": -32601, "message": message}})
}

impl Backend for CodexBackend {
    fn label(&self) -> &'static str {
        "codex"
    }

    fn long_lived(&self) -> bool {
        true
    }

    fn spawn_spec(&self, turn: &TurnInput) -> Result<SpawnSpec, String> {
        let program = turn.spec.command.clone().filter(|c| !c.trim().is_empty()).unwrap_or_else(|| self.binary.clone());
        // Questions (`request_user_input`) in default mode too, not only in plan mode, as Claude's
        // AskUserQuestion; an under-development feature of 0.171.0 (checked by tests/real_codex.rs).
        let mut args: Vec<String> =
            ["app-server", "--enable", "default_mode_request_user_input"].iter().map(|a| a.to_string()).collect();
        args.extend(self.args.iter().cloned());
        args.extend(turn.spec.args.iter().cloned());
        Ok(SpawnSpec { program, args, cwd: PathBuf::from(&turn.workspace_dir), env: Vec::new() })
    }

    fn not_found(&self, program: &str) -> String {
        format!(
            "codex CLI not found at '{program}': install it with `npm install -g @openai/codex@{PINNED_VERSION}` \
             or set the binary path (serve --codex-bin)"
        )
    }

    fn begin_turn(&mut self, turn: &TurnInput, fresh: bool) -> Vec<Value> {
        let plan_mode = match turn.settings.permission_mode.as_deref() {
            Some(mode) => mode == "plan",
            None => turn.spec.plan_first(),
        };
        self.turn = TurnState {
            workspace_dir: PathBuf::from(&turn.workspace_dir),
            prompt: turn.prompt.clone(),
            conversation: turn.conversation.clone(),
            plan_mode,
            model: turn.settings.model.clone(),
            ..TurnState::default()
        };
        if fresh {
            self.initialized = false;
            self.refused = None;
            self.thread = None;
            self.calls.clear();
        }
        if self.refused.is_some() {
            return vec![self.call(Call::Refused, "account/read", json!({"refreshToken": false}))];
        }
        if !self.initialized {
            let init = self.call(
                Call::Initialize,
                "initialize",
                json!({
                    "clientInfo": {"name": "roundtable", "title": null, "version": env!("CARGO_PKG_VERSION")},
                    "capabilities": {
                        "experimentalApi": true,
                        "optOutNotificationMethods": ["remoteControl/status/changed", "account/rateLimits/updated"],
                    },
                }),
            );
            return vec![init];
        }
        // The engine's stored conversation is the truth (a clear or a restart changes it).
        match (&self.thread, &turn.conversation) {
            (Some(loaded), Some(stored)) if loaded == stored => {
                let prompt = turn.prompt.clone();
                vec![self.start_codex_turn(&prompt, plan_mode)]
            }
            // Checked again before each new thread: a login made meanwhile counts.
            _ => vec![self.call(Call::AccountRead, "account/read", json!({"refreshToken": false}))],
        }
    }

    fn on_line(&mut self, line: &str) -> Reaction {
        let Some(value) = super::external::json_line(line, "codex") else { return Reaction::default() };
        match (value["method"].as_str(), value.get("id")) {
            (Some(method), Some(id)) => self.on_server_request(id.clone(), method, &value["params"]),
            (Some(method), None) => self.on_notification(method, &value["params"]),
            (None, Some(id)) => match id.as_u64() {
                Some(id) => self.on_response(id, &value),
                None => Reaction::default(),
            },
            (None, None) => Reaction::default(),
        }
    }

    fn resolve(&mut self, request_id: &str, resolution: Resolution) -> Reaction {
        let Some(pending) = self.turn.pending.remove(request_id) else {
            tracing::debug!(request_id, "resolution for an unknown or withdrawn codex request; ignored");
            return Reaction::default();
        };
        let reasons = |reason: String| {
            if reason.trim().is_empty() {
                "denied by the participants".to_string()
            } else {
                reason
            }
        };
        match (pending, resolution) {
            (Pending::Approval { rpc_id }, Resolution::Approved) => {
                Reaction::reply(json!({"id": rpc_id, "result": {"decision": "accept"}}))
            }
            (Pending::Approval { rpc_id }, denial) => {
                let reason = match denial {
                    Resolution::Denied(reason) => reasons(reason),
                    other => format!("the participants answered instead of approving: {other:?}"),
                };
                let mut reaction = Reaction::default();
                // The decision has no field for a reason: the model reads it as the next user input
                // of this turn, right after the rejection.
                if let (Some(thread), Some(turn)) = (self.thread.clone(), self.turn.codex_turn.clone()) {
                    let text = format!("The participants declined that tool use: {reason}");
                    let steer =
                        json!({"threadId": thread, "expectedTurnId": turn, "input": [{"type": "text", "text": text}]});
                    reaction.replies.push(self.call(Call::Steer, "turn/steer", steer));
                }
                reaction.replies.push(json!({"id": rpc_id, "result": {"decision": "decline"}}));
                reaction
            }
            (Pending::Question { rpc_id, ids }, resolution) => {
                let answers: Vec<String> = match resolution {
                    Resolution::Answered(answers) => answers,
                    Resolution::Denied(reason) => {
                        vec![format!("user_note: the participants did not answer: {}", reasons(reason)); ids.len()]
                    }
                    Resolution::Approved => Vec::new(),
                };
                let mut map = Map::new();
                for (id, answer) in ids.iter().zip(answers) {
                    map.insert(id.clone(), json!({"answers": [answer]}));
                }
                Reaction::reply(json!({"id": rpc_id, "result": {"answers": map}}))
            }
            (Pending::Plan, Resolution::Approved) => {
                self.turn.plan_grants_edits = self.after_plan == AfterPlan::EditWorkspace;
                self.turn.plan_mode = false;
                Reaction::reply(self.start_codex_turn(IMPLEMENT_THE_PLAN, false))
            }
            (Pending::Plan, other) => {
                let reason = match other {
                    Resolution::Denied(reason) => reasons(reason),
                    Resolution::Answered(answers) => answers.join(" | "),
                    Resolution::Approved => unreachable!("handled above"),
                };
                let text = format!(
                    "The participants did not approve the plan: {reason}\nRevise the plan and propose it again."
                );
                Reaction::reply(self.start_codex_turn(&text, true))
            }
        }
    }

    fn cancel(&mut self) -> Vec<Value> {
        self.turn.pending.clear();
        let (Some(thread), Some(turn)) = (self.thread.clone(), self.turn.last_codex_turn.clone()) else {
            // Still starting up: nothing to interrupt, the process is stopped (and started again).
            return Vec::new();
        };
        self.turn.cancelling = true;
        vec![self.call(Call::Interrupt, "turn/interrupt", json!({"threadId": thread, "turnId": turn}))]
    }

    fn waiting_on_host(&self) -> bool {
        !self.turn.pending.is_empty()
    }

    fn end_turn(&mut self, _ok: bool) {
        self.turn = TurnState::default();
    }

    fn start_afresh(&mut self, turn: &mut TurnInput) -> Option<String> {
        if !self.turn.resume_failed {
            return None;
        }
        let old = turn.conversation.take()?;
        self.thread = None;
        Some(format!(
            "(The agent could not resume its earlier conversation — codex has no thread {old} here any more — \
             so it starts a new conversation and does not remember earlier turns.)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SessionId;
    use crate::persist::AgentSpec;

    fn turn(dir: &str, conversation: Option<&str>) -> TurnInput {
        TurnInput {
            session: SessionId::nth(1),
            turn_id: 1,
            workspace_dir: dir.to_string(),
            spec: AgentSpec { kind: "codex".into(), command: None, args: vec![], plan_first: Some(false) },
            prompt: "hi".into(),
            author_name: "Ann".into(),
            conversation: conversation.map(str::to_string),
            settings: Default::default(),
        }
    }

    fn line(b: &mut CodexBackend, v: Value) -> Reaction {
        b.on_line(&v.to_string())
    }

    fn deltas(r: &Reaction) -> String {
        r.events.iter().filter_map(|e| if let AgentEvent::Delta(t) = e { Some(t.as_str()) } else { None }).collect()
    }

    /// Greets a fresh backend up to the running turn `turn-1` of thread `th-1`.
    fn running(input: &TurnInput) -> CodexBackend {
        let mut b = CodexBackend::new("codex".into(), vec![]);
        let init = b.begin_turn(input, true);
        assert_eq!(init[0]["method"], "initialize");
        assert_eq!(init[0]["params"]["capabilities"]["experimentalApi"], true);
        let r =
            line(&mut b, json!({"id": init[0]["id"], "result": {"userAgent": "roundtable/0.171.0 (Linux; x86_64)"}}));
        assert_eq!(r.replies[0], json!({"method": "initialized"}));
        assert_eq!(r.replies[1]["method"], "account/read");
        let r = line(
            &mut b,
            json!({"id": r.replies[1]["id"], "result": {"account": {"type": "apiKey"}, "requiresOpenaiAuth": true}}),
        );
        let open = &r.replies[0];
        assert_eq!(open["params"]["approvalPolicy"], "untrusted");
        assert_eq!(open["params"]["cwd"], input.workspace_dir);
        let r = line(&mut b, json!({"id": open["id"], "result": {"thread": {"id": "th-1"}, "model": "gpt-5.5"}}));
        let start = r.replies.last().unwrap().clone();
        assert_eq!(start["method"], "turn/start");
        assert_eq!(start["params"]["threadId"], "th-1");
        assert_eq!(start["params"]["input"][0]["text"], "hi");
        line(&mut b, json!({"id": start["id"], "result": {"turn": {"id": "turn-1", "status": "inProgress"}}}));
        line(&mut b, json!({"method": "turn/started", "params": {"threadId": "th-1", "turn": {"id": "turn-1"}}}));
        b
    }

    #[test]
    fn a_new_thread_is_reported_as_the_conversation_and_a_stored_one_is_resumed() {
        let mut b = CodexBackend::new("codex".into(), vec![]);
        let input = turn("/tmp", None);
        let init = b.begin_turn(&input, true);
        let r = line(&mut b, json!({"id": init[0]["id"], "result": {"userAgent": "roundtable/0.171.0 (x)"}}));
        let r =
            line(&mut b, json!({"id": r.replies[1]["id"], "result": {"account": null, "requiresOpenaiAuth": false}}));
        assert_eq!(r.replies[0]["method"], "thread/start");
        let r = line(&mut b, json!({"id": r.replies[0]["id"], "result": {"thread": {"id": "th-9"}, "model": "m"}}));
        assert_eq!(r.events, vec![AgentEvent::Conversation(Some("th-9".into()))]);

        let mut b = CodexBackend::new("codex".into(), vec![]);
        let input = turn("/tmp", Some("th-stored"));
        let init = b.begin_turn(&input, true);
        let r = line(&mut b, json!({"id": init[0]["id"], "result": {"userAgent": "roundtable/0.171.0 (x)"}}));
        let r = line(&mut b, json!({"id": r.replies[1]["id"], "result": {"account": {"type": "apiKey"}}}));
        assert_eq!(r.replies[0]["method"], "thread/resume");
        assert_eq!(r.replies[0]["params"]["threadId"], "th-stored");
        let r =
            line(&mut b, json!({"id": r.replies[0]["id"], "result": {"thread": {"id": "th-stored"}, "model": "m"}}));
        assert!(r.events.is_empty(), "the same conversation is not reported again: {r:?}");
        assert_eq!(r.replies[0]["method"], "turn/start");
    }

    #[test]
    fn a_thread_codex_no_longer_has_starts_afresh_and_says_so() {
        let mut b = CodexBackend::new("codex".into(), vec![]);
        let mut input = turn("/tmp", Some("gone"));
        let init = b.begin_turn(&input, true);
        let r = line(&mut b, json!({"id": init[0]["id"], "result": {"userAgent": "roundtable/0.171.0 (x)"}}));
        let r = line(&mut b, json!({"id": r.replies[1]["id"], "result": {"account": {"type": "apiKey"}}}));
        let r = line(
            &mut b,
            json!({"id": r.replies[0]["id"], "error": {"code": -32600, "message": "invalid thread id: gone"}}),
        );
        assert!(matches!(&r.end, Some(TurnEnd::ConversationLost(m)) if m.contains("invalid thread id")), "{r:?}");
        let notice = b.start_afresh(&mut input).expect("starts afresh");
        assert!(notice.contains("new conversation"), "{notice}");
        assert_eq!(input.conversation, None);
        let lines = b.begin_turn(&input, false);
        let r = line(&mut b, json!({"id": lines[0]["id"], "result": {"account": {"type": "apiKey"}}}));
        assert_eq!(r.replies[0]["method"], "thread/start");
    }

    #[test]
    fn another_cli_version_or_no_login_fails_the_turn_with_what_to_do() {
        let mut b = CodexBackend::new("codex".into(), vec![]);
        let input = turn("/tmp", None);
        let init = b.begin_turn(&input, true);
        let r = line(&mut b, json!({"id": init[0]["id"], "result": {"userAgent": "roundtable/0.150.0 (x)"}}));
        let Some(TurnEnd::Failed(reason)) = r.end else { panic!("{r:?}") };
        assert!(reason.contains("0.150.0") && reason.contains("npm install -g @openai/codex@0.171.0"), "{reason}");
        b.end_turn(false);
        // The same process again: refused again, without a second initialize.
        let lines = b.begin_turn(&input, false);
        assert_ne!(lines[0]["method"], "initialize");
        let r = line(&mut b, json!({"id": lines[0]["id"], "result": {}}));
        assert_eq!(r.end, Some(TurnEnd::Failed(reason)));

        let mut b = CodexBackend::new("codex".into(), vec![]);
        let init = b.begin_turn(&input, true);
        let r = line(&mut b, json!({"id": init[0]["id"], "result": {"userAgent": "roundtable/0.171.0 (x)"}}));
        let r =
            line(&mut b, json!({"id": r.replies[1]["id"], "result": {"account": null, "requiresOpenaiAuth": true}}));
        let Some(TurnEnd::Failed(reason)) = r.end else { panic!("{r:?}") };
        assert!(reason.contains("not logged in") && reason.contains("codex login"), "{reason}");
    }

    #[test]
    fn the_app_server_runs_with_questions_enabled_and_the_workspace_args_last() {
        let b = CodexBackend::new("codex".into(), vec!["-c".into(), "model=x".into()]);
        let mut input = turn("/tmp", None);
        input.spec.args = vec!["--strict-config".into()];
        let spec = b.spawn_spec(&input).unwrap();
        assert_eq!(spec.program, "codex");
        assert_eq!(
            spec.args,
            ["app-server", "--enable", "default_mode_request_user_input", "-c", "model=x", "--strict-config"]
        );
    }

    #[test]
    fn deltas_stream_and_a_completed_turn_is_done() {
        let mut b = running(&turn("/tmp", None));
        let r = line(&mut b, json!({"method": "item/agentMessage/delta", "params": {"itemId": "m1", "delta": "Hel"}}));
        assert_eq!(deltas(&r), "Hel");
        let r = line(&mut b, json!({"method": "item/agentMessage/delta", "params": {"itemId": "m1", "delta": "lo"}}));
        assert_eq!(deltas(&r), "lo");
        let r = line(
            &mut b,
            json!({"method": "item/completed", "params": {"item": {"type": "agentMessage", "id": "m1", "text": "Hello"}}}),
        );
        assert!(r.events.is_empty(), "not repeated: {r:?}");
        let r = line(
            &mut b,
            json!({"method": "item/started", "params": {"item": {"type": "commandExecution", "id": "c1", "command": "ls"}}}),
        );
        assert_eq!(deltas(&r), "\n\n$ ls\n");
        let r = line(
            &mut b,
            json!({"method": "item/commandExecution/outputDelta", "params": {"itemId": "c1", "delta": "a.txt\n"}}),
        );
        assert_eq!(deltas(&r), "a.txt\n");
        let r = line(
            &mut b,
            json!({"method": "turn/completed", "params": {"turn": {"id": "turn-1", "status": "completed"}}}),
        );
        assert_eq!(r.end, Some(TurnEnd::Done));
    }

    #[test]
    fn a_command_approval_is_a_tool_vote_and_a_denial_declines_after_steering_the_reasons() {
        let mut b = running(&turn("/work", None));
        let request = json!({"method": "item/commandExecution/requestApproval", "id": 0, "params": {
            "threadId": "th-1", "turnId": "turn-1", "itemId": "call_3", "command": "/bin/bash -lc 'touch a.txt'",
            "cwd": "/work", "reason": "make a file"}});
        let r = line(&mut b, request.clone());
        let [AgentEvent::ToolRequest { request_id, tool, input }] = &r.events[..] else { panic!("{r:?}") };
        assert_eq!(tool, "shell");
        let input: Value = serde_json::from_str(input).unwrap();
        assert_eq!(input, json!({"command": "/bin/bash -lc 'touch a.txt'", "cwd": "/work", "reason": "make a file"}));
        assert!(b.waiting_on_host());
        let r = b.resolve(request_id, Resolution::Approved);
        assert_eq!(r.replies, vec![json!({"id": 0, "result": {"decision": "accept"}})]);

        let r = line(
            &mut b,
            json!({"method": "item/commandExecution/requestApproval", "id": 1, "params": {"command": "rm -rf /", "cwd": "/"}}),
        );
        let [AgentEvent::ToolRequest { request_id, .. }] = &r.events[..] else { panic!("{r:?}") };
        let r = b.resolve(request_id, Resolution::Denied("too dangerous".into()));
        assert_eq!(r.replies.len(), 2);
        assert_eq!(r.replies[0]["method"], "turn/steer");
        assert_eq!(r.replies[0]["params"]["expectedTurnId"], "turn-1");
        assert!(r.replies[0]["params"]["input"][0]["text"].as_str().unwrap().contains("too dangerous"));
        assert_eq!(r.replies[1], json!({"id": 1, "result": {"decision": "decline"}}));
        assert!(!b.waiting_on_host());
    }

    #[test]
    fn a_file_change_vote_carries_the_diff_of_its_item() {
        let mut b = running(&turn("/tmp", None));
        line(
            &mut b,
            json!({"method": "item/started", "params": {"item": {"type": "fileChange", "id": "p1",
            "changes": [{"path": "/tmp/a.txt", "kind": {"type": "add"}, "diff": "hi\n"}], "status": "inProgress"}}}),
        );
        let r = line(
            &mut b,
            json!({"method": "item/fileChange/requestApproval", "id": 4, "params": {"itemId": "p1", "reason": null}}),
        );
        let [AgentEvent::ToolRequest { tool, input, .. }] = &r.events[..] else { panic!("{r:?}") };
        assert_eq!(tool, "apply_patch");
        let input: Value = serde_json::from_str(input).unwrap();
        assert_eq!(input, json!({"changes": [{"path": "/tmp/a.txt", "kind": "add", "diff": "+hi\n"}]}));
        let r = line(
            &mut b,
            json!({"method": "item/completed", "params": {"item": {"type": "fileChange", "id": "p1",
            "changes": [{"path": "/tmp/a.txt", "kind": {"type": "add"}, "diff": "hi\n"}], "status": "completed"}}}),
        );
        assert!(deltas(&r).contains("```diff\n+hi\n```"), "{r:?}");
    }

    #[test]
    fn questions_are_answered_by_their_ids() {
        let mut b = running(&turn("/tmp", None));
        let r = line(
            &mut b,
            json!({"method": "item/tool/requestUserInput", "id": 2, "params": {"questions": [
            {"id": "color", "header": "Color", "question": "Which color?", "options": [{"label": "Red"}, {"label": "Blue"}]},
            {"id": "name", "header": "Name", "question": "Which name?", "options": null}]}}),
        );
        let [AgentEvent::Question { request_id, questions }] = &r.events[..] else { panic!("{r:?}") };
        assert_eq!(
            questions[0],
            Question {
                question: "Which color?".into(),
                options: vec!["Red".into(), "Blue".into()],
                multi_select: false
            }
        );
        assert!(questions[1].options.is_empty());
        let r = b.resolve(request_id, Resolution::Answered(vec!["Blue".into(), "Rex".into()]));
        assert_eq!(
            r.replies,
            vec![
                json!({"id": 2, "result": {"answers": {"color": {"answers": ["Blue"]}, "name": {"answers": ["Rex"]}}}})
            ]
        );
    }

    #[test]
    fn a_plan_is_voted_after_codex_ends_its_turn_and_approval_grants_workspace_patches_only() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().display().to_string();
        let mut input = turn(&ws, None);
        input.spec.plan_first = None;
        let mut b = running(&input);
        line(
            &mut b,
            json!({"method": "item/completed", "params": {"item": {"type": "plan", "id": "pl", "text": "1. add a.txt"}}}),
        );
        let r = line(
            &mut b,
            json!({"method": "turn/completed", "params": {"turn": {"id": "turn-1", "status": "completed"}}}),
        );
        assert_eq!(r.end, None, "the roundtable turn stays open for the vote");
        let [AgentEvent::Plan { request_id, plan, on_approval }] = &r.events[..] else { panic!("{r:?}") };
        assert_eq!(plan, "1. add a.txt");
        assert_eq!(on_approval.as_deref(), Some(super::on_approval(AfterPlan::EditWorkspace).as_str()));
        assert!(b.waiting_on_host());

        // Denied: Codex hears why and stays in plan mode.
        let r = b.resolve(request_id, Resolution::Denied("smaller please".into()));
        assert_eq!(r.replies[0]["params"]["collaborationMode"]["mode"], "plan");
        assert_eq!(r.replies[0]["params"]["collaborationMode"]["settings"]["model"], "gpt-5.5");
        assert!(r.replies[0]["params"]["input"][0]["text"].as_str().unwrap().contains("smaller please"));
        line(&mut b, json!({"method": "turn/started", "params": {"turn": {"id": "turn-2"}}}));
        line(
            &mut b,
            json!({"method": "item/completed", "params": {"item": {"type": "plan", "id": "pl2", "text": "1. a.txt"}}}),
        );
        let r = line(
            &mut b,
            json!({"method": "turn/completed", "params": {"turn": {"id": "turn-2", "status": "completed"}}}),
        );
        let [AgentEvent::Plan { request_id, .. }] = &r.events[..] else { panic!("{r:?}") };

        // Approved: default mode, "Implement the plan."
        let r = b.resolve(request_id, Resolution::Approved);
        assert_eq!(r.replies[0]["params"]["collaborationMode"]["mode"], "default");
        assert_eq!(r.replies[0]["params"]["input"][0]["text"], IMPLEMENT_THE_PLAN);
        line(&mut b, json!({"method": "turn/started", "params": {"turn": {"id": "turn-3"}}}));
        let inside = dir.path().join("a.txt").display().to_string();
        line(
            &mut b,
            json!({"method": "item/started", "params": {"item": {"type": "fileChange", "id": "p1",
            "changes": [{"path": inside, "kind": {"type": "add"}, "diff": "+x\n"}]}}}),
        );
        let r = line(&mut b, json!({"method": "item/fileChange/requestApproval", "id": 7, "params": {"itemId": "p1"}}));
        assert_eq!(r.replies, vec![json!({"id": 7, "result": {"decision": "accept"}})]);
        assert!(deltas(&r).contains("allowed by the approved plan"), "{r:?}");
        line(
            &mut b,
            json!({"method": "item/started", "params": {"item": {"type": "fileChange", "id": "p2",
            "changes": [{"path": "/etc/passwd", "kind": {"type": "update"}, "diff": "-x\n"}]}}}),
        );
        let r = line(&mut b, json!({"method": "item/fileChange/requestApproval", "id": 8, "params": {"itemId": "p2"}}));
        assert!(
            r.replies.is_empty() && matches!(&r.events[..], [AgentEvent::ToolRequest { .. }]),
            "outside: a vote: {r:?}"
        );
        let r = line(
            &mut b,
            json!({"method": "item/commandExecution/requestApproval", "id": 9, "params": {"command": "ls", "cwd": ws}}),
        );
        assert!(
            r.replies.is_empty() && matches!(&r.events[..], [AgentEvent::ToolRequest { .. }]),
            "a command: a vote: {r:?}"
        );
    }

    #[test]
    fn cancel_interrupts_the_running_turn_and_ends_when_codex_reports_it() {
        let mut b = running(&turn("/tmp", None));
        line(
            &mut b,
            json!({"method": "item/commandExecution/requestApproval", "id": 0, "params": {"command": "sleep 100", "cwd": "/tmp"}}),
        );
        let lines = b.cancel();
        assert_eq!(lines[0]["method"], "turn/interrupt");
        assert_eq!(lines[0]["params"], json!({"threadId": "th-1", "turnId": "turn-1"}));
        assert!(!b.waiting_on_host());
        assert_eq!(line(&mut b, json!({"id": lines[0]["id"], "result": {}})).end, None);
        let r = line(
            &mut b,
            json!({"method": "turn/completed", "params": {"turn": {"id": "turn-1", "status": "interrupted"}}}),
        );
        assert_eq!(r.end, Some(TurnEnd::Done));
    }

    #[test]
    fn a_cancel_during_a_plan_vote_ends_once_codex_answers_the_interrupt() {
        let mut b = running(&turn("/tmp", None));
        line(
            &mut b,
            json!({"method": "item/completed", "params": {"item": {"type": "plan", "id": "pl", "text": "1. x"}}}),
        );
        let r = line(
            &mut b,
            json!({"method": "turn/completed", "params": {"turn": {"id": "turn-1", "status": "completed"}}}),
        );
        assert!(matches!(&r.events[..], [AgentEvent::Plan { .. }]), "{r:?}");
        let lines = b.cancel();
        assert_eq!(lines[0]["method"], "turn/interrupt");
        assert!(!b.waiting_on_host());
        let r = line(&mut b, json!({"id": lines[0]["id"], "error": {"code": -32600, "message": "no active turn"}}));
        assert_eq!(r.end, Some(TurnEnd::Done));
    }

    #[test]
    fn failed_turns_carry_codexs_message_and_a_hint() {
        let mut b = running(&turn("/tmp", None));
        line(
            &mut b,
            json!({"method": "error", "params": {"error": {"message": "Reconnecting... 2/5"}, "willRetry": true}}),
        );
        let r = line(
            &mut b,
            json!({"method": "turn/completed", "params": {"turn": {"id": "turn-1", "status": "failed",
            "error": {"message": "unexpected status 401 Unauthorized: no key", "codexErrorInfo": {"httpConnectionFailed": {"httpStatusCode": 401}}}}}}),
        );
        let Some(TurnEnd::Failed(reason)) = r.end else { panic!("{r:?}") };
        assert!(reason.starts_with("codex: unexpected status 401") && reason.contains("codex login"), "{reason}");
    }

    #[test]
    fn unsupported_requests_are_answered_with_an_error() {
        let mut b = running(&turn("/tmp", None));
        let r = line(&mut b, json!({"method": "item/tool/call", "id": 5, "params": {}}));
        assert_eq!(r.replies[0]["id"], 5);
        assert!(r.replies[0]["error"]["message"].as_str().unwrap().contains("item/tool/call"));
        assert!(r.events.is_empty());
    }
}
