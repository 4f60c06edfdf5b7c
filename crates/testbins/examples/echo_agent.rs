//! `echo_agent`: a small example agent for roundtable's `command` backend.
//!
//! It speaks the JSON-lines protocol of docs/AGENTS.md on stdin/stdout and is what the tests
//! drive. Register it with `roundtable workspace add DIR --agent command --agent-cmd PATH`.
//!
//! - any prompt: replies `You said: PROMPT` in several `text` deltas, then `turn_end`;
//! - `/plan GOAL`: sends a `plan` and waits; approved → "Plan approved.", denied → echoes the reason;
//! - `/ask TOPIC`: asks one `question` (`yes` / `no`) and echoes the answer;
//! - `/tool`: asks permission to run `ls` (`tool_request`) and says whether it was allowed;
//! - `/fail`: one delta, then `error`;
//! - `/pid`: replies with its process id (shows whether the process was restarted);
//! - `/crash`: one delta, then exits with status 3 in the middle of the turn;
//! - `/hang`: says "Thinking forever" (two deltas), then never answers (for watchdog tests);
//! - `cancel` ends the turn at once with `turn_end`.

use serde_json::{json, Value};
use std::io::{BufRead, Write};

/// Characters per `text` delta.
const CHUNK_CHARS: usize = 8;

/// What the agent waits for.
enum Waiting {
    Nothing,
    Plan { turn_id: u64, request_id: String },
    Question { turn_id: u64, request_id: String },
    Tool { turn_id: u64, request_id: String },
}

fn send(msg: Value) {
    let mut out = std::io::stdout().lock();
    // The host reads lines; a write error means it went away, and the next read ends the loop.
    let _ = writeln!(out, "{msg}");
    let _ = out.flush();
}

fn say(turn_id: u64, text: &str) {
    let chars: Vec<char> = text.chars().collect();
    for chunk in chars.chunks(CHUNK_CHARS) {
        send(json!({"type": "text", "turn_id": turn_id, "delta": chunk.iter().collect::<String>()}));
    }
}

fn end(turn_id: u64) {
    send(json!({"type": "turn_end", "turn_id": turn_id}));
}

fn start(turn_id: u64, prompt: &str) -> Waiting {
    let prompt = prompt.trim();
    if let Some(goal) = prompt.strip_prefix("/plan") {
        let goal = if goal.trim().is_empty() { "the task" } else { goal.trim() };
        say(turn_id, "I have a plan.");
        let request_id = format!("plan-{turn_id}");
        send(json!({
            "type": "plan", "turn_id": turn_id, "request_id": request_id,
            "plan": format!("1. Read the code for {goal}\n2. Make the change\n3. Run the tests"),
        }));
        Waiting::Plan { turn_id, request_id }
    } else if let Some(topic) = prompt.strip_prefix("/ask") {
        let topic = if topic.trim().is_empty() { "this" } else { topic.trim() };
        let request_id = format!("ask-{turn_id}");
        send(json!({
            "type": "question", "turn_id": turn_id, "request_id": request_id,
            "questions": [{"question": format!("Should I go ahead with {topic}?"), "options": ["yes", "no"]}],
        }));
        Waiting::Question { turn_id, request_id }
    } else if prompt.starts_with("/tool") {
        let request_id = format!("tool-{turn_id}");
        send(json!({
            "type": "tool_request", "turn_id": turn_id, "request_id": request_id,
            "tool": "Bash", "input": {"command": "ls"},
        }));
        Waiting::Tool { turn_id, request_id }
    } else if prompt.starts_with("/fail") {
        say(turn_id, "Working on it");
        send(json!({"type": "error", "turn_id": turn_id, "message": "the echo agent failed as asked (/fail)"}));
        Waiting::Nothing
    } else if prompt.starts_with("/pid") {
        say(turn_id, &format!("pid {}", std::process::id()));
        end(turn_id);
        Waiting::Nothing
    } else if prompt.starts_with("/crash") {
        say(turn_id, "About to crash");
        std::process::exit(3);
    } else if prompt.starts_with("/hang") {
        say(turn_id, "Thinking forever");
        Waiting::Nothing
    } else {
        say(turn_id, &format!("You said: {prompt}"));
        end(turn_id);
        Waiting::Nothing
    }
}

fn resolved(waiting: &Waiting, msg: &Value) -> Option<(u64, String)> {
    let (turn_id, request_id, kind) = match waiting {
        Waiting::Nothing => return None,
        Waiting::Plan { turn_id, request_id } => (*turn_id, request_id, "plan"),
        Waiting::Question { turn_id, request_id } => (*turn_id, request_id, "question"),
        Waiting::Tool { turn_id, request_id } => (*turn_id, request_id, "tool"),
    };
    if msg["request_id"].as_str() != Some(request_id.as_str()) {
        return None;
    }
    let reason = msg["reason"].as_str().unwrap_or_default();
    let reply = match (kind, msg["outcome"].as_str().unwrap_or_default()) {
        ("plan", "approved") => "Plan approved. Done: all three steps complete.".to_string(),
        ("tool", "approved") => "Allowed; ran ls.".to_string(),
        (_, "denied") => format!("Denied ({reason}). I stopped."),
        ("question", "answered") => {
            let answers: Vec<&str> =
                msg["answers"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            format!("Thanks. Answer: {}", answers.join(" | "))
        }
        (_, other) => format!("Unexpected outcome '{other}'."),
    };
    Some((turn_id, reply))
}

fn main() {
    let mut waiting = Waiting::Nothing;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else { continue };
        match msg["type"].as_str() {
            Some("turn_start") => {
                let turn_id = msg["turn_id"].as_u64().unwrap_or_default();
                waiting = start(turn_id, msg["prompt"].as_str().unwrap_or_default());
            }
            Some("resolve") => {
                if let Some((turn_id, reply)) = resolved(&waiting, &msg) {
                    waiting = Waiting::Nothing;
                    say(turn_id, &reply);
                    end(turn_id);
                }
            }
            Some("cancel") => {
                waiting = Waiting::Nothing;
                end(msg["turn_id"].as_u64().unwrap_or_default());
            }
            _ => {}
        }
    }
}
