//! The `claude` backend: the Claude Code CLI in stream-json mode.
//!
//! Each turn runs one CLI process in the workspace directory:
//!
//! ```text
//! claude --output-format stream-json --verbose --input-format stream-json
//!        --permission-prompt-tool stdio --include-partial-messages
//!        [--allowedTools A,B] [--resume=SESSION_ID] [configured args] [workspace args]
//! ```
//!
//! On stdin we send an `initialize` control request, and once the CLI answered it, the user
//! message. Continuity across turns comes from `--resume`: the CLI's `session_id` (from its
//! `system/init` line) is reported to the engine ([`AgentEvent::Conversation`]), which stores it
//! with the session (so it survives a host restart) and sends it with the next turn. When the
//! CLI cannot resume it (its transcript is gone), the room is told and the turn runs again in a
//! new conversation ([`Backend::start_afresh`]).
//!
//! On stdout, one JSON object per line (non-JSON noise and unknown types are skipped):
//! - text arrives as `stream_event` `text_delta`s (token by token) → [`AgentEvent::Delta`]. The
//!   complete `assistant` message that follows repeats the text, so it is only used when no
//!   partial deltas were seen (older CLIs, or partials switched off);
//! - permission prompts arrive as `can_use_tool` control requests and become votes:
//!   `ExitPlanMode` → [`AgentEvent::Plan`], `AskUserQuestion` → [`AgentEvent::Question`], any
//!   other tool → [`AgentEvent::ToolRequest`]. The engine's [`Resolution`] is sent back as an
//!   allow (with `updatedInput`) or a deny (with the voters' reasons);
//! - `result` ends the turn: `Done`, or `Failed` for error results.

use super::external::{Backend, Reaction, TurnEnd, TurnInput};
use super::process::SpawnSpec;
use super::{AgentEvent, Resolution};
use crate::protocol::Question;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The flags every run gets (see the module docs).
pub const BASE_ARGS: &[&str] = &[
    "--output-format",
    "stream-json",
    "--verbose",
    "--input-format",
    "stream-json",
    "--permission-prompt-tool",
    "stdio",
    "--include-partial-messages",
];

/// Largest plan file read for an `ExitPlanMode` request that only names its file.
const MAX_PLAN_FILE_BYTES: u64 = 256 * 1024;

#[derive(Debug)]
struct PendingRequest {
    tool: String,
    input: Value,
}

/// Per-turn parsing state.
#[derive(Debug, Default)]
struct TurnState {
    workspace_dir: PathBuf,
    /// Our `initialize` request; the user message is sent once it is answered.
    init_request: Option<String>,
    user_message: Option<Value>,
    /// This run was started with `--resume`.
    resumed: bool,
    saw_init: bool,
    /// Permission prompts waiting for the host, by request id.
    pending: BTreeMap<String, PendingRequest>,
    /// Text came as partial `text_delta`s; `assistant` messages then carry no new text.
    saw_partial_text: bool,
    /// Text already reported per assistant message id (when no partials were seen).
    text_by_message: HashMap<String, String>,
    wrote_text: bool,
    /// A new text block started: separate it from earlier text with a blank line.
    block_break: bool,
    /// The kind of an API error the CLI reported as an `assistant` message (`authentication_failed`,
    /// …): its text is not the agent's reply; the turn fails once, with a hint, at the `result`.
    api_error: Option<String>,
    /// The room approved a plan in this turn with [`AfterPlan::EditWorkspace`]: edits inside the
    /// workspace are allowed without a vote until the turn ends.
    plan_grants_edits: bool,
}

/// The `claude` backend for one roundtable session.
#[derive(Debug)]
pub struct ClaudeBackend {
    binary: String,
    args: Vec<String>,
    allowed_tools: Vec<String>,
    /// The CLI's session id of the current turn (the one it resumed, then the one its `init` line
    /// named), as last reported to the engine.
    cli_session: Option<String>,
    next_request: u64,
    turn: TurnState,
    /// The CLI's plans folder (`$CLAUDE_CONFIG_DIR/plans`, else `~/.claude/plans`): recent CLIs
    /// write the plan there and send only its path with `ExitPlanMode`.
    plans_dir: Option<PathBuf>,
    after_plan: AfterPlan,
}

/// What a consensus approval of a plan lets the CLI do next.
///
/// The CLI is never switched to its `acceptEdits` mode: in that mode Claude Code runs many shell
/// commands inside the workspace (`echo > file`, `rm -rf build`, `mv`, `sed -i`) without asking
/// anyone, which is more than any card says. The approval instead puts the CLI back in its
/// `default` mode, where every tool asks, and this backend answers exactly the requests the card
/// grants; every other request opens a vote as before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AfterPlan {
    /// Carry out the plan: for the rest of the turn, requests of [`PLAN_GRANTED_TOOLS`] for a
    /// file inside the workspace are allowed without another vote (each one is shown in the
    /// room). Shell commands, every other tool and files outside the workspace still ask.
    #[default]
    EditWorkspace,
    /// Return to the CLI's default mode: every edit and command asks the host again.
    AskEachTool,
}

/// The tools an approved plan lets the agent use without another vote ([`AfterPlan::EditWorkspace`]),
/// and only on files inside the workspace.
pub const PLAN_GRANTED_TOOLS: &[&str] = &["Edit", "Write", "MultiEdit", "NotebookEdit"];

impl AfterPlan {
    /// What approving a plan grants, for the vote card: written from what the backend actually
    /// allows ([`PLAN_GRANTED_TOOLS`]), so the card and the behaviour cannot drift apart.
    pub fn on_approval(self) -> String {
        match self {
            AfterPlan::EditWorkspace => format!(
                "Approving lets the agent carry out this plan: until this turn ends it may change files inside \
                 the workspace ({}) without another vote, and each change is shown here. Shell commands, \
                 every other tool and files outside the workspace still need a vote.",
                PLAN_GRANTED_TOOLS.join(", ")
            ),
            AfterPlan::AskEachTool => {
                "Approving lets the agent carry out this plan; each edit and command still needs a vote.".to_string()
            }
        }
    }
}

/// Where the CLI run by this user keeps its plans.
fn cli_plans_dir() -> Option<PathBuf> {
    let config = std::env::var_os("CLAUDE_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".claude")))?;
    Some(config.join("plans"))
}

/// What the model is told when it leaves plan mode without a plan (nobody votes on nothing).
pub const NO_PLAN_MESSAGE: &str =
    "there is no plan to vote on: write your plan (in the plan file or the `plan` field) before calling ExitPlanMode";

impl ClaudeBackend {
    /// `binary` is used unless the workspace's spec names another; `args` are added to every run;
    /// `allowed_tools` are passed as `--allowedTools`.
    pub fn new(binary: String, args: Vec<String>, allowed_tools: Vec<String>) -> ClaudeBackend {
        ClaudeBackend {
            binary,
            args,
            allowed_tools,
            cli_session: None,
            next_request: 0,
            turn: TurnState::default(),
            plans_dir: cli_plans_dir(),
            after_plan: AfterPlan::default(),
        }
    }

    /// What an approved plan lets the CLI do next.
    pub fn with_after_plan(mut self, after_plan: AfterPlan) -> ClaudeBackend {
        self.after_plan = after_plan;
        self
    }

    /// Reads plan files from `dir` instead of the CLI's own plans folder (tests).
    pub fn with_plans_dir(mut self, dir: Option<PathBuf>) -> ClaudeBackend {
        self.plans_dir = dir;
        self
    }

    fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("req_{}_roundtable", self.next_request)
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

    fn on_stream_event(&mut self, event: &Value) -> Reaction {
        let mut reaction = Reaction::default();
        match event["type"].as_str() {
            Some("content_block_start") if event["content_block"]["type"] == "text" => self.turn.block_break = true,
            Some("content_block_delta") if event["delta"]["type"] == "text_delta" => {
                self.turn.saw_partial_text = true;
                if let Some(text) = event["delta"]["text"].as_str() {
                    self.push_text(&mut reaction, text);
                }
            }
            _ => {}
        }
        reaction
    }

    fn on_assistant(&mut self, message: &Value) -> Reaction {
        let mut reaction = Reaction::default();
        if self.turn.saw_partial_text {
            return reaction;
        }
        let id = message["id"].as_str().unwrap_or_default().to_string();
        let texts: Vec<&str> = message["content"]
            .as_array()
            .map(|blocks| blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect())
            .unwrap_or_default();
        let full = texts.join("\n\n");
        // Accept both shapes the CLI has used: one block per line, or the message so far.
        let seen = self.turn.text_by_message.get(&id).cloned();
        let new = match &seen {
            Some(seen) if full.starts_with(seen.as_str()) => {
                let rest = full[seen.len()..].to_string();
                self.turn.block_break = false;
                rest
            }
            _ => {
                self.turn.block_break = true;
                full.clone()
            }
        };
        if !full.is_empty() {
            self.turn.text_by_message.insert(id, full);
        }
        self.push_text(&mut reaction, &new);
        reaction
    }

    /// The CLI says which conversation it is in: reported to the engine when it changed.
    fn conversation_is(&mut self, id: &str) -> Reaction {
        if self.cli_session.as_deref() == Some(id) {
            return Reaction::default();
        }
        self.cli_session = Some(id.to_string());
        Reaction::event(AgentEvent::Conversation(Some(id.to_string())))
    }

    fn on_result(&mut self, line: &Value) -> Reaction {
        let mut conversation = match line["session_id"].as_str() {
            Some(id) => self.conversation_is(id),
            None => Reaction::default(),
        };
        let mut end = self.result_end(line);
        end.events.append(&mut conversation.events);
        end
    }

    fn result_end(&mut self, line: &Value) -> Reaction {
        let subtype = line["subtype"].as_str().unwrap_or("success");
        let is_error = line["is_error"].as_bool().unwrap_or(false);
        if !is_error && subtype == "success" {
            return Reaction::end(TurnEnd::Done);
        }
        let text = line["result"].as_str().map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).or_else(|| {
            let errors: Vec<&str> =
                line["errors"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            (!errors.is_empty()).then(|| errors.join("; "))
        });
        if self.turn.resumed && !self.turn.saw_init {
            // `--resume` of a conversation the CLI does not have ("No conversation found with
            // session ID: …", an error result before any `init` line).
            let reason = format!("claude could not resume its conversation: {}", text.unwrap_or_default());
            return Reaction::end(TurnEnd::ConversationLost(reason));
        }
        let mut reason = match (subtype, text) {
            ("error_max_turns", _) => "claude stopped: it reached the maximum number of turns".to_string(),
            (_, Some(text)) => format!("claude: {text}"),
            (subtype, None) => format!("claude ended the turn with '{subtype}'"),
        };
        if self.turn.api_error.as_deref() == Some("authentication_failed") {
            reason.push_str(
                " — the claude CLI has no working credentials: set ANTHROPIC_API_KEY for the host, or run \
                 `claude /login` as the user running the host",
            );
        }
        Reaction::end(TurnEnd::Failed(reason))
    }

    fn on_control_request(&mut self, line: &Value) -> Reaction {
        let request_id = line["request_id"].as_str().unwrap_or_default().to_string();
        let request = &line["request"];
        let subtype = request["subtype"].as_str().unwrap_or_default();
        if subtype != "can_use_tool" {
            tracing::debug!(subtype, "unsupported claude control request");
            return Reaction::reply(json!({
                "type": "control_response",
                "response": {
                    "subtype": "error",
                    "request_id": request_id,
                    "error": format!("roundtable does not handle '{subtype}' requests"),
                },
            }));
        }
        let tool = request["tool_name"].as_str().unwrap_or_default().to_string();
        let input = match &request["input"] {
            Value::Null => Value::Object(Map::new()),
            other => other.clone(),
        };
        if let Some(path) = self.granted_by_plan(&tool, &input) {
            tracing::info!(%tool, path, "allowed by the approved plan");
            let mut reaction = Reaction::reply(json!({
                "type": "control_response",
                "response": {"subtype": "success", "request_id": request_id, "response": {
                    "behavior": "allow", "updatedInput": input,
                }},
            }));
            self.turn.block_break = true;
            self.push_text(&mut reaction, &format!("✎ {tool} {path} — allowed by the approved plan"));
            self.turn.block_break = true;
            return reaction;
        }
        let event = match tool.as_str() {
            "ExitPlanMode" => match self.plan_text(&input) {
                Some(plan) => {
                    let on_approval = Some(self.after_plan.on_approval());
                    Some(AgentEvent::Plan { request_id: request_id.clone(), plan, on_approval })
                }
                None => {
                    tracing::info!("claude left plan mode without a plan; denied without a vote");
                    return Reaction::reply(json!({
                        "type": "control_response",
                        "response": {"subtype": "success", "request_id": request_id, "response": {
                            "behavior": "deny", "message": NO_PLAN_MESSAGE, "interrupt": false,
                        }},
                    }));
                }
            },
            "AskUserQuestion" => parse_questions(&input["questions"])
                .map(|questions| AgentEvent::Question { request_id: request_id.clone(), questions }),
            _ => None,
        };
        let event = event.unwrap_or_else(|| AgentEvent::ToolRequest {
            request_id: request_id.clone(),
            tool: tool.clone(),
            input: input.to_string(),
        });
        self.turn.pending.insert(request_id, PendingRequest { tool, input });
        Reaction::event(event)
    }

    /// The file a request of `tool` would change, when an approved plan grants it: the tool is
    /// one of [`PLAN_GRANTED_TOOLS`] and the file lies inside the workspace (symlinks resolved,
    /// `..` never leads out). Shown relative to the workspace.
    fn granted_by_plan(&self, tool: &str, input: &Value) -> Option<String> {
        if !self.turn.plan_grants_edits || !PLAN_GRANTED_TOOLS.contains(&tool) {
            return None;
        }
        let path = input["file_path"].as_str().or_else(|| input["notebook_path"].as_str())?;
        let root = self.turn.workspace_dir.canonicalize().ok()?;
        let inside = inside_dir(&root, Path::new(path))?;
        Some(inside.display().to_string())
    }

    /// The plan of an `ExitPlanMode` request: its `plan` field, else the file `planFilePath` when it
    /// lies in the workspace or in the CLI's plans folder; `None` when there is none.
    fn plan_text(&self, input: &Value) -> Option<String> {
        if let Some(plan) = input["plan"].as_str().filter(|p| !p.trim().is_empty()) {
            return Some(plan.to_string());
        }
        let path = input["planFilePath"].as_str()?;
        let roots = std::iter::once(self.turn.workspace_dir.as_path()).chain(self.plans_dir.as_deref());
        roots.filter_map(|root| read_plan_file(root, path)).find(|plan| !plan.trim().is_empty())
    }

    fn on_control_response(&mut self, line: &Value) -> Reaction {
        let response = &line["response"];
        let answered = response["request_id"].as_str();
        if answered.is_some() && answered == self.turn.init_request.as_deref() {
            self.turn.init_request = None;
            if response["subtype"] == "error" {
                tracing::warn!(error = %response["error"], "claude refused initialize; sending the message anyway");
            }
            if let Some(message) = self.turn.user_message.take() {
                return Reaction::reply(message);
            }
        }
        Reaction::default()
    }
}

impl Backend for ClaudeBackend {
    fn label(&self) -> &'static str {
        "claude"
    }

    fn long_lived(&self) -> bool {
        false
    }

    fn spawn_spec(&self, turn: &TurnInput) -> Result<SpawnSpec, String> {
        let program = turn.spec.command.clone().filter(|c| !c.trim().is_empty()).unwrap_or_else(|| self.binary.clone());
        let mut args: Vec<String> = BASE_ARGS.iter().map(|a| a.to_string()).collect();
        if !self.allowed_tools.is_empty() {
            args.push("--allowedTools".to_string());
            args.push(self.allowed_tools.join(","));
        }
        if let Some(id) = &turn.conversation {
            args.push(format!("--resume={id}"));
        }
        args.extend(self.args.iter().cloned());
        args.extend(turn.spec.args.iter().cloned());
        // The session's settings (`set_agent_settings`) come last, so they win over configured
        // arguments; the engine only lets plan/default modes and flag-free model names through.
        if let Some(model) = &turn.settings.model {
            args.push(format!("--model={model}"));
        }
        if let Some(mode) = &turn.settings.permission_mode {
            args.extend(["--permission-mode".to_string(), mode.clone()]);
        }
        // Plan first: unless a permission mode was chosen explicitly (serve --claude-arg, the
        // workspace's agent args), every turn starts in plan mode, so the plan goes to a vote.
        let explicit = args.iter().any(|a| a == "--permission-mode" || a.starts_with("--permission-mode="));
        if turn.spec.plan_first() && !explicit {
            args.extend(["--permission-mode".to_string(), "plan".to_string()]);
        }
        Ok(SpawnSpec { program, args, cwd: PathBuf::from(&turn.workspace_dir), env: Vec::new() })
    }

    fn not_found(&self, program: &str) -> String {
        format!("claude CLI not found at '{program}': install Claude Code or set the binary path")
    }

    fn begin_turn(&mut self, turn: &TurnInput, _fresh: bool) -> Vec<Value> {
        let init = self.request_id();
        self.turn = TurnState {
            workspace_dir: PathBuf::from(&turn.workspace_dir),
            init_request: Some(init.clone()),
            user_message: Some(json!({
                "type": "user",
                "message": {"role": "user", "content": turn.prompt},
                "parent_tool_use_id": null,
                "session_id": "default",
            })),
            resumed: turn.conversation.is_some(),
            ..TurnState::default()
        };
        // The engine's stored conversation is the truth (a clear or a restart changes it).
        self.cli_session = turn.conversation.clone();
        vec![json!({
            "type": "control_request",
            "request_id": init,
            // (No `hooks` field: the SDK's type has none to send when there are no hooks.)
            "request": {"subtype": "initialize"},
        })]
    }

    fn on_line(&mut self, line: &str) -> Reaction {
        let Some(value) = super::external::json_line(line, "claude") else { return Reaction::default() };
        match value["type"].as_str() {
            Some("system") => {
                if value["subtype"] == "init" {
                    self.turn.saw_init = true;
                    if let Some(id) = value["session_id"].as_str() {
                        return self.conversation_is(id);
                    }
                }
                Reaction::default()
            }
            Some("stream_event") => self.on_stream_event(&value["event"]),
            Some("assistant") => {
                // An API error dressed as an assistant message (e.g. no credentials): not a reply.
                let error = value["error"].as_str().or_else(|| value["message"]["error"].as_str());
                if let Some(kind) = error {
                    self.turn.api_error = Some(kind.to_string());
                    return Reaction::default();
                }
                self.on_assistant(&value["message"])
            }
            Some("result") => self.on_result(&value),
            Some("control_request") => self.on_control_request(&value),
            Some("control_response") => self.on_control_response(&value),
            Some("control_cancel_request") => {
                if let Some(id) = value["request_id"].as_str() {
                    if self.turn.pending.remove(id).is_some() {
                        tracing::info!(request_id = id, "claude withdrew a permission prompt");
                        return Reaction::event(AgentEvent::Withdrawn { request_id: id.to_string() });
                    }
                }
                Reaction::default()
            }
            _ => Reaction::default(),
        }
    }

    fn resolve(&mut self, request_id: &str, resolution: Resolution) -> Reaction {
        let Some(PendingRequest { tool, input }) = self.turn.pending.remove(request_id) else {
            tracing::debug!(request_id, "resolution for an unknown or withdrawn claude request; ignored");
            return Reaction::default();
        };
        let allow = |updated: Value| json!({"behavior": "allow", "updatedInput": updated});
        let deny = |message: String| json!({"behavior": "deny", "message": message, "interrupt": false});
        let decision = match resolution {
            Resolution::Approved if tool == "ExitPlanMode" => {
                // Out of plan mode into `default`, where every tool asks (never `acceptEdits`, see
                // [`AfterPlan`]); what the card grants is answered here.
                self.turn.plan_grants_edits = self.after_plan == AfterPlan::EditWorkspace;
                let mut decision = allow(input);
                decision["updatedPermissions"] =
                    json!([{"type": "setMode", "mode": "default", "destination": "session"}]);
                decision
            }
            Resolution::Approved => allow(input),
            Resolution::Denied(reason) => {
                deny(if reason.trim().is_empty() { "denied by the participants".to_string() } else { reason })
            }
            Resolution::Answered(answers) if tool == "AskUserQuestion" => {
                let mut map = Map::new();
                let questions = input["questions"].as_array().cloned().unwrap_or_default();
                for (question, answer) in questions.iter().zip(answers) {
                    if let Some(text) = question["question"].as_str() {
                        map.insert(text.to_string(), Value::String(answer));
                    }
                }
                let mut updated = input;
                if let Some(obj) = updated.as_object_mut() {
                    obj.insert("answers".to_string(), Value::Object(map));
                }
                allow(updated)
            }
            Resolution::Answered(answers) => {
                tracing::warn!(%tool, "answers for a permission prompt that is not a question; denying");
                deny(format!("the participants answered instead of approving: {}", answers.join(" | ")))
            }
        };
        Reaction::reply(json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": decision},
        }))
    }

    fn cancel(&mut self) -> Vec<Value> {
        self.turn.pending.clear();
        if self.turn.user_message.is_some() {
            // The prompt was never sent: nothing to interrupt, the process is just stopped.
            return Vec::new();
        }
        let id = self.request_id();
        vec![json!({"type": "control_request", "request_id": id, "request": {"subtype": "interrupt"}})]
    }

    fn waiting_on_host(&self) -> bool {
        !self.turn.pending.is_empty()
    }

    fn end_turn(&mut self, _ok: bool) {
        self.turn = TurnState::default();
    }

    fn start_afresh(&mut self, turn: &mut TurnInput) -> Option<String> {
        // A resumed run that ended before its `init` line: the CLI could not load the
        // conversation (its transcript was deleted, or it lives on another machine).
        if !self.turn.resumed || self.turn.saw_init {
            return None;
        }
        let old = turn.conversation.take()?;
        self.cli_session = None;
        Some(format!(
            "(The agent could not resume its earlier conversation — the claude CLI has no session {old} \
             here any more — so it starts a new conversation and does not remember earlier turns.)"
        ))
    }
}

/// Maps AskUserQuestion's `questions` (`[{question, header, options: [{label, description}],
/// multiSelect}]`) to ours. `None` when there is no usable question.
fn parse_questions(value: &Value) -> Option<Vec<Question>> {
    let questions: Vec<Question> = value
        .as_array()?
        .iter()
        .filter_map(|q| {
            let question = q["question"].as_str()?.to_string();
            let options = q["options"]
                .as_array()
                .map(|opts| {
                    opts.iter().filter_map(|o| o["label"].as_str().or_else(|| o.as_str()).map(str::to_string)).collect()
                })
                .unwrap_or_default();
            let multi_select = q["multiSelect"].as_bool().unwrap_or(false);
            Some(Question { question, options, multi_select })
        })
        .collect();
    (!questions.is_empty()).then_some(questions)
}

/// `path` (absolute, or relative to `root`) relative to `root` when it lies inside it: `root`
/// is canonical; the deepest existing ancestor of `path` is canonicalised (a file being created
/// does not exist yet) and what follows it may not contain `..`.
pub(crate) fn inside_dir(root: &Path, path: &Path) -> Option<PathBuf> {
    let full = if path.is_absolute() { path.to_path_buf() } else { root.join(path) };
    let mut existing = full.as_path();
    let mut rest = Vec::new();
    let base = loop {
        if let Ok(canonical) = existing.canonicalize() {
            break canonical;
        }
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?;
    };
    if rest.iter().any(|c| c == "..") {
        return None;
    }
    let mut resolved = base;
    resolved.extend(rest.iter().rev());
    let relative = resolved.strip_prefix(root).ok()?;
    (!relative.as_os_str().is_empty()).then(|| relative.to_path_buf())
}

/// Reads a plan file named by `ExitPlanMode`, only if it lies inside `root` (symlinks resolved
/// first, so none leads out) and is at most [`MAX_PLAN_FILE_BYTES`].
fn read_plan_file(root: &Path, path: &str) -> Option<String> {
    let root = root.canonicalize().ok()?;
    let file = root.join(path).canonicalize().ok()?;
    if !file.starts_with(&root) || std::fs::metadata(&file).ok()?.len() > MAX_PLAN_FILE_BYTES {
        return None;
    }
    std::fs::read_to_string(file).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SessionId;
    use crate::persist::AgentSpec;

    fn turn(dir: &str) -> TurnInput {
        TurnInput {
            session: SessionId::nth(1),
            turn_id: 1,
            workspace_dir: dir.to_string(),
            spec: AgentSpec { kind: "claude".into(), command: None, args: vec![], plan_first: None },
            prompt: "hi".into(),
            author_name: "Ann".into(),
            conversation: None,
            settings: Default::default(),
        }
    }

    fn started() -> ClaudeBackend {
        let mut b = ClaudeBackend::new("claude".into(), vec![], vec![]);
        b.begin_turn(&turn("/tmp"), true);
        b
    }

    fn deltas(r: &Reaction) -> String {
        r.events.iter().filter_map(|e| if let AgentEvent::Delta(t) = e { Some(t.as_str()) } else { None }).collect()
    }

    fn permission_mode(b: &ClaudeBackend, spec: AgentSpec) -> Option<String> {
        let args = b.spawn_spec(&TurnInput { spec, ..turn("/tmp") }).unwrap().args;
        let at = args.iter().position(|a| a == "--permission-mode")?;
        Some(args[at + 1].clone())
    }

    #[test]
    fn claude_turns_start_in_plan_mode_unless_told_otherwise() {
        let claude = |plan_first, args: &[&str]| AgentSpec {
            kind: "claude".into(),
            command: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            plan_first,
        };
        let b = ClaudeBackend::new("claude".into(), vec![], vec![]);
        assert_eq!(permission_mode(&b, claude(None, &[])).as_deref(), Some("plan"), "on by default");
        assert_eq!(permission_mode(&b, claude(Some(false), &[])), None, "workspace add --no-plan-first");
        let explicit = claude(None, &["--permission-mode", "acceptEdits"]);
        assert_eq!(permission_mode(&b, explicit).as_deref(), Some("acceptEdits"), "an explicit mode wins");
        let serve_wide = ClaudeBackend::new("claude".into(), vec!["--permission-mode=default".into()], vec![]);
        let args = serve_wide.spawn_spec(&turn("/tmp")).unwrap().args;
        assert!(!args.iter().any(|a| a == "plan"), "serve --claude-arg wins too: {args:?}");
    }

    #[test]
    fn the_user_message_waits_for_the_initialize_answer() {
        let mut b = ClaudeBackend::new("claude".into(), vec![], vec![]);
        let first = b.begin_turn(&turn("/tmp"), true);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["request"]["subtype"], "initialize");
        let id = first[0]["request_id"].as_str().unwrap();
        let r = b.on_line(&format!(
            r#"{{"type":"control_response","response":{{"subtype":"success","request_id":"{id}","response":{{}}}}}}"#
        ));
        assert_eq!(r.replies.len(), 1);
        assert_eq!(r.replies[0]["type"], "user");
        assert_eq!(r.replies[0]["message"]["content"], "hi");
    }

    #[test]
    fn assistant_text_is_not_repeated_after_partial_deltas() {
        let mut b = started();
        let r = b.on_line(
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}}"#,
        );
        assert_eq!(deltas(&r), "Hel");
        let r = b.on_line(r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"Hello"}]}}"#);
        assert!(r.events.is_empty());
    }

    #[test]
    fn cumulative_and_per_block_assistant_messages_both_yield_each_text_once() {
        let mut b = started();
        let mut text = String::new();
        for line in [
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"A"}]}}"#,
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"A"},{"type":"tool_use","id":"t","name":"Read","input":{}}]}}"#,
            r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"B"}]}}"#,
            r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"tool_use","id":"t2","name":"Read","input":{}}]}}"#,
            r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"C"}]}}"#,
        ] {
            text.push_str(&deltas(&b.on_line(line)));
        }
        assert_eq!(text, "A\n\nB\n\nC");
    }

    #[test]
    fn error_results_fail_the_turn_with_their_text() {
        let mut b = started();
        let r =
            b.on_line(r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 529 overloaded"}"#);
        assert_eq!(r.end, Some(TurnEnd::Failed("claude: API Error: 529 overloaded".into())));
        let r = b.on_line(r#"{"type":"result","subtype":"error_during_execution","is_error":false,"errors":["boom"]}"#);
        assert_eq!(r.end, Some(TurnEnd::Failed("claude: boom".into())));
    }

    #[test]
    fn an_api_error_sent_as_an_assistant_message_fails_the_turn_once_with_a_hint() {
        let mut b = started();
        let r = b.on_line(
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"Invalid API key · Please run /login"}]},"error":"authentication_failed"}"#,
        );
        assert!(r.events.is_empty(), "the error text is not streamed as the agent's reply: {:?}", r.events);
        let r = b.on_line(
            r#"{"type":"result","subtype":"success","is_error":true,"result":"Invalid API key · Please run /login"}"#,
        );
        let Some(TurnEnd::Failed(reason)) = r.end else { panic!("the turn fails: {:?}", r.end) };
        assert!(reason.starts_with("claude: Invalid API key"), "{reason}");
        assert!(reason.contains("ANTHROPIC_API_KEY") && reason.contains("claude /login"), "{reason}");
    }

    #[test]
    fn the_initialize_request_carries_no_hooks_field() {
        let mut b = ClaudeBackend::new("claude".into(), vec![], vec![]);
        let lines = b.begin_turn(&turn("/tmp"), true);
        let init = lines.iter().find(|l| l["request"]["subtype"] == "initialize").expect("an initialize request");
        assert!(init["request"].get("hooks").is_none(), "{init}");
    }

    #[test]
    fn unsupported_control_requests_are_answered_with_an_error() {
        let mut b = started();
        let r = b.on_line(r#"{"type":"control_request","request_id":"x1","request":{"subtype":"hook_callback"}}"#);
        assert_eq!(r.replies[0]["response"]["subtype"], "error");
        assert_eq!(r.replies[0]["response"]["request_id"], "x1");
    }

    #[test]
    fn a_withdrawn_prompt_is_not_answered() {
        let mut b = started();
        b.on_line(r#"{"type":"control_request","request_id":"p1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"}}}"#);
        assert!(b.waiting_on_host());
        let r = b.on_line(r#"{"type":"control_cancel_request","request_id":"p1"}"#);
        assert_eq!(r.events, vec![AgentEvent::Withdrawn { request_id: "p1".into() }]);
        assert!(!b.waiting_on_host());
        assert_eq!(b.resolve("p1", Resolution::Approved), Reaction::default());
    }

    #[test]
    fn a_plan_named_only_by_file_is_read_from_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plan.md"), "1. do it").unwrap();
        let mut b = ClaudeBackend::new("claude".into(), vec![], vec![]);
        b.begin_turn(&turn(dir.path().to_str().unwrap()), true);
        let r = b.on_line(r#"{"type":"control_request","request_id":"p1","request":{"subtype":"can_use_tool","tool_name":"ExitPlanMode","input":{"planFilePath":"plan.md"}}}"#);
        assert_eq!(
            r.events,
            vec![AgentEvent::Plan {
                request_id: "p1".into(),
                plan: "1. do it".into(),
                on_approval: Some(AfterPlan::EditWorkspace.on_approval())
            }]
        );
        let r = b.on_line(r#"{"type":"control_request","request_id":"p2","request":{"subtype":"can_use_tool","tool_name":"ExitPlanMode","input":{"planFilePath":"/etc/passwd"}}}"#);
        assert!(r.events.is_empty(), "no vote on a file outside the workspace and the plans folder");
        assert!(r.replies[0].to_string().contains("there is no plan to vote on"), "{:?}", r.replies);
    }

    #[test]
    fn a_plan_file_in_the_clis_plans_folder_is_read_and_no_plan_is_denied_without_a_vote() {
        let home = tempfile::tempdir().unwrap();
        let plans = home.path().join("plans");
        std::fs::create_dir_all(&plans).unwrap();
        std::fs::write(plans.join("calm-fox.md"), "1. read\n2. change\n3. test").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", plans.join("escape.md")).unwrap();
        let mut b = ClaudeBackend::new("claude".into(), vec![], vec![]).with_plans_dir(Some(plans.clone()));
        b.begin_turn(&turn("/tmp"), true);
        let path = plans.join("calm-fox.md").display().to_string();
        // The 2.1.332 shape: the plan text may be missing; the file is what counts.
        let line = json!({"type":"control_request","request_id":"p1","request":{"subtype":"can_use_tool",
            "tool_name":"ExitPlanMode","input":{"planFilePath": path}}});
        let r = b.on_line(&line.to_string());
        assert_eq!(
            r.events,
            vec![AgentEvent::Plan {
                request_id: "p1".into(),
                plan: "1. read\n2. change\n3. test".into(),
                on_approval: Some(AfterPlan::EditWorkspace.on_approval())
            }]
        );
        let escape = plans.join("escape.md").display().to_string();
        let line = json!({"type":"control_request","request_id":"p2","request":{"subtype":"can_use_tool",
            "tool_name":"ExitPlanMode","input":{"planFilePath": escape}}});
        let r = b.on_line(&line.to_string());
        assert!(r.events.is_empty(), "a symlink out of the plans folder is not followed");
        let r = b.on_line(r#"{"type":"control_request","request_id":"p3","request":{"subtype":"can_use_tool","tool_name":"ExitPlanMode","input":{}}}"#);
        assert!(r.events.is_empty(), "no vote on nothing");
        let reply = &r.replies[0]["response"];
        assert_eq!(reply["request_id"], "p3");
        assert_eq!(reply["response"]["behavior"], "deny");
        assert_eq!(reply["response"]["message"], NO_PLAN_MESSAGE);
    }

    fn can_use(id: &str, tool: &str, input: Value) -> String {
        json!({"type":"control_request","request_id": id,"request":{"subtype":"can_use_tool","tool_name": tool,"input": input}})
            .to_string()
    }

    /// Issue 21: approval grants exactly what the card says. The CLI goes back to `default`
    /// (never `acceptEdits`, where shell commands run unasked); edits inside the workspace are
    /// answered from the approval, visibly; a shell command, any other tool and an edit outside
    /// the workspace still open a vote; the grant ends with the turn.
    #[test]
    fn an_approved_plan_grants_workspace_edits_only_and_every_command_still_opens_a_vote() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("src")).unwrap();
        let outside = dir.path().join("outside.txt").display().to_string();
        let mut b = ClaudeBackend::new("claude".into(), vec![], vec![]);
        b.begin_turn(&turn(ws.to_str().unwrap()), true);
        let card = AfterPlan::EditWorkspace.on_approval();
        for tool in PLAN_GRANTED_TOOLS {
            assert!(card.contains(tool), "the card names what is granted: {card}");
        }
        assert!(card.contains("Shell commands") && !card.contains("accept-edits"), "{card}");

        // Before any approval an edit is a vote.
        let r = b.on_line(&can_use("e0", "Write", json!({"file_path": "a.txt", "content": "x"})));
        assert!(matches!(&r.events[..], [AgentEvent::ToolRequest { .. }]), "{r:?}");
        b.resolve("e0", Resolution::Denied("not yet".into()));

        b.on_line(&can_use("p1", "ExitPlanMode", json!({"plan": "1. edit"})));
        let r = b.resolve("p1", Resolution::Approved);
        let decision = &r.replies[0]["response"]["response"];
        assert_eq!(decision["behavior"], "allow");
        assert_eq!(
            decision["updatedPermissions"],
            json!([{"type": "setMode", "mode": "default", "destination": "session"}])
        );

        // Edits inside the workspace: allowed at once, and shown.
        let inside = ws.join("src/new.rs").display().to_string();
        for (id, tool, input) in [
            ("e1", "Write", json!({"file_path": inside, "content": "x"})),
            ("e2", "Edit", json!({"file_path": "src/../README.md", "old_string": "a", "new_string": "b"})),
            ("e3", "MultiEdit", json!({"file_path": "./notes/todo.md", "edits": []})),
            ("e4", "NotebookEdit", json!({"notebook_path": "nb.ipynb", "new_source": ""})),
        ] {
            let r = b.on_line(&can_use(id, tool, input.clone()));
            assert!(r.events.iter().all(|e| matches!(e, AgentEvent::Delta(_))), "{tool}: no vote: {r:?}");
            let shown: String =
                r.events.iter().map(|e| if let AgentEvent::Delta(t) = e { t.as_str() } else { "" }).collect();
            assert!(shown.contains(tool) && shown.contains("allowed by the approved plan"), "{shown}");
            let reply = &r.replies[0]["response"];
            assert_eq!((reply["request_id"].as_str(), &reply["response"]["behavior"]), (Some(id), &json!("allow")));
            assert_eq!(reply["response"]["updatedInput"], input);
        }

        // Everything else still asks.
        for (id, tool, input) in [
            ("b1", "Bash", json!({"command": "echo hi > made.txt"})),
            ("b2", "Bash", json!({"command": "rm -rf build"})),
            ("w1", "Write", json!({"file_path": outside, "content": "x"})),
            ("w2", "Edit", json!({"file_path": "../escape.txt", "old_string": "a", "new_string": "b"})),
            ("w3", "Write", json!({"file_path": "src/../../escape.txt", "content": "x"})),
            ("w4", "Write", json!({"content": "no path"})),
            ("t1", "WebFetch", json!({"url": "http://127.0.0.1/"})),
        ] {
            let r = b.on_line(&can_use(id, tool, input));
            assert!(r.replies.is_empty(), "{id} {tool} must not be answered without a vote: {r:?}");
            assert!(matches!(&r.events[..], [AgentEvent::ToolRequest { .. }]), "{id} {tool} opens a vote: {r:?}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path(), ws.join("link")).unwrap();
            let r = b.on_line(&can_use("s1", "Write", json!({"file_path": "link/outside.txt", "content": "x"})));
            assert!(r.replies.is_empty(), "a symlink out of the workspace is not inside it: {r:?}");
        }

        // The grant ends with the turn.
        b.end_turn(true);
        b.begin_turn(&turn(ws.to_str().unwrap()), true);
        let r = b.on_line(&can_use("n1", "Write", json!({"file_path": "a.txt", "content": "x"})));
        assert!(matches!(&r.events[..], [AgentEvent::ToolRequest { .. }]), "{r:?}");
    }

    /// Issue 21: a resumed conversation the CLI no longer has (the real 2.1.332 answers
    /// `--resume=ID` with an error `result` before any `init`) is not a failed turn: the backend
    /// says so for the room and the turn runs again without `--resume`.
    #[test]
    fn a_conversation_the_cli_cannot_resume_starts_afresh_and_says_so() {
        let mut b = ClaudeBackend::new("claude".into(), vec![], vec![]);
        let mut input = turn("/tmp");
        input.conversation = Some("8f7a3b2c".into());
        assert!(b.spawn_spec(&input).unwrap().args.contains(&"--resume=8f7a3b2c".to_string()));
        b.begin_turn(&input, true);
        let r = b.on_line(r#"{"type":"result","subtype":"error_during_execution","is_error":true,"session_id":"8f7a3b2c","errors":["No conversation found with session ID: 8f7a3b2c"]}"#);
        assert!(
            matches!(&r.end, Some(TurnEnd::ConversationLost(reason)) if reason.contains("No conversation found")),
            "{r:?}"
        );
        let notice = b.start_afresh(&mut input).expect("starts afresh");
        assert!(notice.contains("could not resume") && notice.contains("new conversation"), "{notice}");
        assert_eq!(input.conversation, None);
        assert!(!b.spawn_spec(&input).unwrap().args.iter().any(|a| a.starts_with("--resume")));
        b.begin_turn(&input, true);
        let r = b.on_line(r#"{"type":"system","subtype":"init","session_id":"new-one"}"#);
        assert_eq!(r.events, vec![AgentEvent::Conversation(Some("new-one".into()))], "the new conversation is stored");
        assert!(b.start_afresh(&mut input).is_none(), "a fresh run is never retried");

        // An error after the CLI started (it did resume) is an ordinary failure.
        let mut input = turn("/tmp");
        input.conversation = Some("new-one".into());
        b.begin_turn(&input, true);
        assert!(b.on_line(r#"{"type":"system","subtype":"init","session_id":"new-one"}"#).events.is_empty());
        let r = b.on_line(r#"{"type":"result","subtype":"error_during_execution","is_error":true,"errors":["boom"]}"#);
        assert_eq!(r.end, Some(TurnEnd::Failed("claude: boom".into())));
    }

    #[test]
    fn ask_each_tool_grants_nothing_and_a_denied_plan_changes_no_mode() {
        let plan = can_use("p1", "ExitPlanMode", json!({"plan": "1. do it"}));
        let mut b = ClaudeBackend::new("claude".into(), vec![], vec![]).with_after_plan(AfterPlan::AskEachTool);
        b.begin_turn(&turn("/tmp"), true);
        b.on_line(&plan);
        let r = b.resolve("p1", Resolution::Approved);
        assert_eq!(r.replies[0]["response"]["response"]["updatedPermissions"][0]["mode"], "default");
        let r = b.on_line(&can_use("e1", "Write", json!({"file_path": "/tmp/x", "content": "x"})));
        assert!(matches!(&r.events[..], [AgentEvent::ToolRequest { .. }]), "{r:?}");
        b.on_line(&plan);
        let r = b.resolve("p1", Resolution::Denied("no".into()));
        assert!(r.replies[0]["response"]["response"].get("updatedPermissions").is_none());
    }
}
