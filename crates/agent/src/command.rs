//! The `command` backend: any executable speaking roundtable's JSON-lines agent protocol
//! (documented with examples in docs/AGENTS.md).
//!
//! One long-lived process per session, started on the first turn (and again after it died),
//! in the workspace directory. Every line is one JSON object with a `type`:
//!
//! - host → agent: `hello` (once, after start), `turn_start`, `resolve`, `cancel`;
//! - agent → host: `text`, `plan`, `question`, `tool_request`, `turn_end`, `error`.
//!
//! Agent messages may carry the `turn_id` they belong to; messages for another turn are dropped,
//! so late output of a cancelled turn never leaks into the next one. Unknown types and
//! non-JSON lines are skipped (logged); a known message missing a required field fails the turn
//! with a protocol error naming the field, which is what an agent author needs to see.

use super::external::{Backend, Reaction, TurnEnd, TurnInput};
use super::process::SpawnSpec;
use super::{AgentEvent, Resolution};
use crate::ids::SessionId;
use crate::protocol::Question;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Version of the protocol, sent in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The `command` backend for one roundtable session.
#[derive(Debug)]
pub struct CommandBackend {
    session: SessionId,
    turn_id: Option<u64>,
    /// Requests (plan, question, tool) waiting for the host.
    pending: BTreeSet<String>,
}

impl CommandBackend {
    pub fn new(session: SessionId) -> CommandBackend {
        CommandBackend { session, turn_id: None, pending: BTreeSet::new() }
    }

    fn parse(&mut self, msg: &Value) -> Result<Reaction, String> {
        let kind = msg["type"].as_str().unwrap_or_default();
        let text = |field: &str| -> Result<String, String> {
            msg[field].as_str().map(str::to_string).ok_or_else(|| format!("'{kind}' needs a string '{field}'"))
        };
        let reaction = match kind {
            "text" => Reaction::event(AgentEvent::Delta(text("delta")?)),
            "plan" => {
                let request_id = text("request_id")?;
                self.pending.insert(request_id.clone());
                Reaction::event(AgentEvent::Plan { request_id, plan: text("plan")?, on_approval: None })
            }
            "question" => {
                let request_id = text("request_id")?;
                let questions = parse_questions(&msg["questions"])?;
                self.pending.insert(request_id.clone());
                Reaction::event(AgentEvent::Question { request_id, questions })
            }
            "tool_request" => {
                let request_id = text("request_id")?;
                let tool = text("tool")?;
                let input = match &msg["input"] {
                    Value::String(s) => s.clone(),
                    Value::Null => "{}".to_string(),
                    other => other.to_string(),
                };
                self.pending.insert(request_id.clone());
                Reaction::event(AgentEvent::ToolRequest { request_id, tool, input })
            }
            "turn_end" => Reaction::end(TurnEnd::Done),
            "error" => Reaction::end(TurnEnd::Failed(
                msg["message"]
                    .as_str()
                    .filter(|m| !m.trim().is_empty())
                    .unwrap_or("the agent reported an error without a message")
                    .to_string(),
            )),
            other => {
                tracing::debug!(kind = other, "unknown message type from the agent command; skipped");
                Reaction::default()
            }
        };
        Ok(reaction)
    }
}

fn parse_questions(value: &Value) -> Result<Vec<Question>, String> {
    let list = value.as_array().filter(|l| !l.is_empty()).ok_or("'question' needs a non-empty 'questions' array")?;
    list.iter()
        .map(|q| {
            let question = q["question"].as_str().ok_or("each question needs a string 'question'")?.to_string();
            let options = q["options"]
                .as_array()
                .map(|opts| {
                    opts.iter().filter_map(|o| o.as_str().or_else(|| o["label"].as_str()).map(str::to_string)).collect()
                })
                .unwrap_or_default();
            let multi_select = q["multi_select"].as_bool().unwrap_or(false);
            Ok(Question { question, options, multi_select })
        })
        .collect()
}

/// Splits a command line into words: whitespace separates, single quotes are literal, double
/// quotes group (with `\"` and `\\` escapes), a backslash outside quotes escapes one character.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(e @ ('"' | '\\')) => word.push(e),
                            Some(e) => {
                                word.push('\\');
                                word.push(e);
                            }
                            None => word.push('\\'),
                        },
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(e) = chars.next() {
                    word.push(e);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

impl Backend for CommandBackend {
    fn label(&self) -> &'static str {
        "the agent command"
    }

    fn long_lived(&self) -> bool {
        true
    }

    fn spawn_spec(&self, turn: &TurnInput) -> Result<SpawnSpec, String> {
        let command = turn.spec.command.as_deref().map(str::trim).filter(|c| !c.is_empty()).ok_or(
            "the command backend needs an executable: register the workspace with --agent command --agent-cmd PATH",
        )?;
        // `--agent-cmd "python3 agent.py"` is a command line, unless it names an existing file
        // (a path with spaces).
        let (program, mut args) = if turn.spec.args.is_empty() && !Path::new(command).exists() {
            let mut words = split_words(command);
            if words.is_empty() {
                return Err("the agent command is empty".to_string());
            }
            let program = words.remove(0);
            (program, words)
        } else {
            (command.to_string(), Vec::new())
        };
        args.extend(turn.spec.args.iter().cloned());
        Ok(SpawnSpec {
            program,
            args,
            cwd: PathBuf::from(&turn.workspace_dir),
            env: vec![
                ("ROUNDTABLE_SESSION".to_string(), self.session.to_string()),
                ("ROUNDTABLE_AGENT_PROTOCOL".to_string(), PROTOCOL_VERSION.to_string()),
            ],
        })
    }

    fn not_found(&self, program: &str) -> String {
        format!("agent command not found at '{program}': check the workspace's --agent-cmd")
    }

    fn begin_turn(&mut self, turn: &TurnInput, fresh: bool) -> Vec<Value> {
        self.turn_id = Some(turn.turn_id);
        self.pending.clear();
        let mut lines = Vec::new();
        if fresh {
            lines.push(json!({"type": "hello", "protocol": PROTOCOL_VERSION, "session": self.session}));
        }
        lines.push(json!({
            "type": "turn_start",
            "turn_id": turn.turn_id,
            "prompt": turn.prompt,
            "author": turn.author_name,
            "cwd": turn.workspace_dir,
        }));
        lines
    }

    fn on_line(&mut self, line: &str) -> Reaction {
        let line = line.trim();
        if line.is_empty() {
            return Reaction::default();
        }
        let msg: Value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                tracing::warn!(line, "skipping a line from the agent command that is not a JSON object");
                return Reaction::default();
            }
        };
        if let Some(id) = msg["turn_id"].as_u64() {
            if Some(id) != self.turn_id {
                tracing::debug!(turn_id = id, "agent output for another turn dropped");
                return Reaction::default();
            }
        }
        match self.parse(&msg) {
            Ok(reaction) => reaction,
            Err(problem) => Reaction::end(TurnEnd::Failed(format!("agent protocol error: {problem}"))),
        }
    }

    fn resolve(&mut self, request_id: &str, resolution: Resolution) -> Reaction {
        if !self.pending.remove(request_id) {
            tracing::debug!(request_id, "resolution for an unknown agent request; ignored");
            return Reaction::default();
        }
        let mut msg = json!({"type": "resolve", "turn_id": self.turn_id, "request_id": request_id});
        match resolution {
            Resolution::Approved => msg["outcome"] = json!("approved"),
            Resolution::Denied(reason) => {
                msg["outcome"] = json!("denied");
                msg["reason"] = json!(reason);
            }
            Resolution::Answered(answers) => {
                msg["outcome"] = json!("answered");
                msg["answers"] = json!(answers);
            }
        }
        Reaction::reply(msg)
    }

    fn cancel(&mut self) -> Vec<Value> {
        self.pending.clear();
        vec![json!({"type": "cancel", "turn_id": self.turn_id})]
    }

    fn waiting_on_host(&self) -> bool {
        !self.pending.is_empty()
    }

    fn end_turn(&mut self, _ok: bool) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::AgentSpec;

    fn backend_in_turn(turn_id: u64) -> CommandBackend {
        let mut b = CommandBackend::new(SessionId::nth(1));
        b.turn_id = Some(turn_id);
        b
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words(r#"python3 -u 'my agent.py' "a \"b\"" c\ d"#),
            ["python3", "-u", "my agent.py", "a \"b\"", "c d"]
        );
        assert_eq!(split_words("  "), Vec::<String>::new());
        assert_eq!(split_words("''"), [""]);
    }

    #[test]
    fn a_command_line_is_split_into_program_and_args() {
        let b = CommandBackend::new(SessionId::nth(1));
        let turn = TurnInput {
            session: SessionId::nth(1),
            turn_id: 1,
            workspace_dir: "/tmp".into(),
            spec: AgentSpec {
                kind: "command".into(),
                command: Some("python3 -u agent.py".into()),
                args: vec![],
                plan_first: None,
            },
            prompt: String::new(),
            author_name: String::new(),
            conversation: None,
            settings: Default::default(),
        };
        let spec = b.spawn_spec(&turn).unwrap();
        assert_eq!(spec.program, "python3");
        assert_eq!(spec.args, ["-u", "agent.py"]);
    }

    #[test]
    fn output_for_another_turn_is_dropped() {
        let mut b = backend_in_turn(2);
        assert_eq!(b.on_line(r#"{"type":"turn_end","turn_id":1}"#), Reaction::default());
        assert_eq!(b.on_line(r#"{"type":"turn_end","turn_id":2}"#).end, Some(TurnEnd::Done));
        assert_eq!(b.on_line(r#"{"type":"turn_end"}"#).end, Some(TurnEnd::Done));
    }

    #[test]
    fn a_message_missing_a_field_fails_the_turn_with_a_protocol_error() {
        let mut b = backend_in_turn(1);
        let r = b.on_line(r#"{"type":"plan","plan":"x"}"#);
        assert_eq!(r.end, Some(TurnEnd::Failed("agent protocol error: 'plan' needs a string 'request_id'".into())));
    }

    #[test]
    fn noise_and_unknown_types_are_skipped() {
        let mut b = backend_in_turn(1);
        assert_eq!(b.on_line("starting up..."), Reaction::default());
        assert_eq!(b.on_line(r#"{"type":"log","message":"hi"}"#), Reaction::default());
    }

    #[test]
    fn resolutions_are_sent_only_for_open_requests() {
        let mut b = backend_in_turn(1);
        b.on_line(r#"{"type":"question","request_id":"q1","questions":[{"question":"Go?","options":["yes",{"label":"no"}]}]}"#);
        assert!(b.waiting_on_host());
        let r = b.resolve("q1", Resolution::Answered(vec!["yes".into()]));
        assert_eq!(
            r.replies,
            vec![json!({"type":"resolve","turn_id":1,"request_id":"q1","outcome":"answered","answers":["yes"]})]
        );
        assert_eq!(b.resolve("q1", Resolution::Approved), Reaction::default());
    }
}
