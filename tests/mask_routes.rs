//! Issue 24, the route corpus: every secret format the masker knows, sent through every route by
//! which agent text reaches a remote, and every byte the remotes received searched for any
//! 8-character window of each secret.
//!
//! The formats are the masker's own samples (the `secret_formats!` table of
//! crates/engine/src/mask.rs, read from the source so a format added there is covered here without
//! touching this file); the secret of a sample is what the table says is masked. Routes: streamed
//! deltas cut at random (down to 1-byte pieces), a reply split at 256 KiB with the secret across
//! the cut (live, in a late joiner's snapshot and in `fetch_history` pages), plan text (clipped and
//! not), question text and options (clipped and not), a tool request's input (JSON, with its
//! escaping) and its clip, the tool name's clip, a workspace file read, and a late joiner's
//! snapshot whose `streaming_text` tail starts inside the secret. Each clip and cut is placed,
//! with the protocol's own cut functions, so that a cut ignoring secrets would fall inside it.
//!
//! Run against the code before issue 24's items 1–2 were fixed, it found 432 leaking (format,
//! route) pairs in 58 of the 61 formats: every clip (plan, question, option, tool input, tool
//! name), the reply split (live, in snapshots, in `fetch_history`), the snapshot tail, and the
//! unclipped tool input for the formats that need a quote or a line start.

use roundtable::agent::{AgentEvent, AgentOutput};
use roundtable::engine::mask::Masker;
use roundtable::engine::{EngineConfig, Inbound};
use roundtable::ids::ConnId;
use roundtable::protocol::{self, Question};
use roundtable::testkit::Harness;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// One format: its sample (as the masker's tests show it) and the parts of it that are masked.
struct Format {
    name: String,
    sample: String,
    secrets: Vec<String>,
}

/// A Rust string literal at the start of `s` (`"…"` with escapes, or `r"…"` / `r#"…"#`): its
/// value and the rest of `s`.
fn rust_literal(s: &str) -> (String, &str) {
    let s = s.trim_start();
    if let Some(raw) = s.strip_prefix('r') {
        let hashes = raw.len() - raw.trim_start_matches('#').len();
        let body = &raw[hashes + 1..];
        let close = format!("\"{}", "#".repeat(hashes));
        let end = body.find(&close).expect("a closed raw string");
        return (body[..end].to_string(), &body[end + close.len()..]);
    }
    let body = s.strip_prefix('"').expect("a string literal");
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &body[i + 1..]),
            '\\' => {
                let (_, e) = chars.next().expect("an escape");
                match e {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    '0' => out.push('\0'),
                    '\\' | '"' | '\'' => out.push(e),
                    'u' => {
                        let rest: String = chars.by_ref().map(|(_, c)| c).take_while(|&c| c != '}').collect();
                        let code = u32::from_str_radix(rest.trim_start_matches('{'), 16).expect("\\u{…}");
                        out.push(char::from_u32(code).expect("a character"));
                    }
                    other => panic!("escape \\{other} in a sample"),
                }
            }
            c => out.push(c),
        }
    }
    panic!("an unterminated string literal")
}

/// The parts of `sample` that `masked` (the sample as masked) replaced with `[masked]`.
fn masked_parts(sample: &str, masked: &str) -> Vec<String> {
    let parts: Vec<&str> = masked.split(protocol_mask()).collect();
    let mut secrets = Vec::new();
    let mut pos = parts[0].len();
    assert!(sample.starts_with(parts[0]), "{sample:?} vs {masked:?}");
    for (k, part) in parts.iter().enumerate().skip(1) {
        let found = if k == parts.len() - 1 {
            sample.len() - part.len()
        } else {
            pos + sample[pos..].find(part).unwrap_or_else(|| panic!("{part:?} in {sample:?}"))
        };
        secrets.push(sample[pos..found].to_string());
        pos = found + part.len();
    }
    secrets
}

fn protocol_mask() -> &'static str {
    roundtable::engine::mask::MASK
}

/// Every format of the masker's sample table.
fn formats() -> Vec<Format> {
    let source = include_str!("../crates/engine/src/mask.rs");
    let start = source.find("    secret_formats! {\n").expect("the sample table");
    let table = &source[start..];
    let table = &table[table.find('\n').unwrap() + 1..table.find("\n    }\n").unwrap()];
    let mut formats = Vec::new();
    for line in table.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let (name, rest) = line.split_once(": ").expect("name: sample => masked, near miss …;");
        let (sample, rest) = rust_literal(rest);
        let rest = rest.trim_start().strip_prefix("=>").expect("=>");
        let (masked, _) = rust_literal(rest);
        let secrets = masked_parts(&sample, &masked);
        formats.push(Format { name: name.to_string(), sample, secrets });
    }
    assert!(formats.len() >= 50, "the sample table was read: {} formats", formats.len());
    formats
}

/// The windows searched for: every 8-character window of each secret (the whole secret when it
/// is shorter).
fn windows(secrets: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for secret in secrets {
        let chars: Vec<char> = secret.chars().collect();
        if chars.len() <= 8 {
            out.insert(secret.clone());
            continue;
        }
        for w in chars.windows(8) {
            out.insert(w.iter().collect::<String>());
        }
    }
    out.into_iter().collect()
}

/// Every text a frame carries: the frame itself, each string in it, and each JSON string literal
/// inside those strings (a tool input is JSON text), decoded.
fn texts_of(frame: &Value, out: &mut Vec<String>) {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => {
                out.push(s.clone());
                if let Ok(inner) = serde_json::from_str::<Value>(s) {
                    if !inner.is_string() {
                        walk(&inner, out);
                    }
                }
                // A clipped JSON text does not parse: its literals, leniently.
                let mut rest = s.as_str();
                while let Some(q) = rest.find('"') {
                    let body = &rest[q + 1..];
                    let end = body.find("\",").or_else(|| body.find("\"}")).unwrap_or(body.len());
                    if let Ok(decoded) = serde_json::from_str::<String>(&format!("\"{}\"", &body[..end])) {
                        out.push(decoded);
                    } else {
                        out.push(body[..end].replace("\\n", "\n").replace("\\\"", "\""));
                    }
                    rest = &body[end..];
                    rest = rest.get(1..).unwrap_or("");
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    out.push(frame.to_string());
    walk(frame, out);
}

/// A leak: the route, the event (or reply) it was found in, and the window.
type Leak = (String, String, String);

/// One format's run: a command-agent workspace whose agent the test plays (its output injected
/// as the runtime would deliver it), one remote (Ann) in the session, and late joiners.
struct Run {
    h: Harness,
    session: String,
    token: String,
    ann: ConnId,
    turn: u64,
    /// Per connection, how many of its frames were already searched.
    seen: std::collections::BTreeMap<ConnId, usize>,
    windows: Vec<String>,
    leaks: Vec<Leak>,
    dir: tempfile::TempDir,
}

/// An external runtime that drops every command: the test speaks for the agent.
struct Silent;

impl roundtable::agent::AgentRuntime for Silent {
    fn send(&mut self, _: roundtable::agent::AgentCommand) {}
}

impl Run {
    fn new(windows: Vec<String>) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Harness::new(EngineConfig::default());
        h.engine.set_agent_runtime(Box::new(Silent));
        let agent = json!({"kind": "command", "command": "x"});
        let w = h.host("add_workspace", json!({"name": "ws", "dir": dir.path().to_str().unwrap(), "agent": agent}));
        let w = w["id"].as_str().unwrap().to_string();
        let s =
            h.host("create_session", json!({"workspace_id": w, "title": "main"}))["id"].as_str().unwrap().to_string();
        let token = h.mint(&[&w], json!({}));
        let (ann, _) = h.join(&token, "Ann", &s);
        let mut run = Run { h, session: s, token, ann, turn: 0, seen: Default::default(), windows, leaks: vec![], dir };
        run.check("setup", &[ann]);
        run
    }

    /// Starts a turn (Ann prompts); returns its id.
    fn start_turn(&mut self) -> u64 {
        self.turn += 1;
        let n = self.turn;
        let params =
            json!({"session_id": self.session, "text": format!("prompt {n}"), "client_msg_id": format!("m{n}")});
        self.h.call(self.ann, "send_message", params).unwrap();
        n
    }

    fn agent(&mut self, event: AgentEvent) {
        let out = AgentOutput { session: self.session.as_str().into(), turn_id: self.turn, event };
        self.h.engine.sender().send(Inbound::Agent(out)).unwrap();
    }

    /// A whole turn: the agent says `events` and is done.
    fn turn(&mut self, events: Vec<AgentEvent>) {
        self.start_turn();
        for e in events {
            self.agent(e);
            self.h.tick();
        }
        self.agent(AgentEvent::Done);
        self.h.run(50);
    }

    /// Searches what `conns` received since the last check, and each one's streamed text as a
    /// whole (after a snapshot: its `streaming_text` and the deltas after it); records leaks as
    /// `route`.
    fn check(&mut self, route: &str, conns: &[ConnId]) {
        for &conn in conns {
            let frames = self.h.frames(conn);
            let from = self.seen.get(&conn).copied().unwrap_or(0);
            self.seen.insert(conn, frames.len());
            let mut streamed = String::new();
            for frame in &frames[from..] {
                let name = frame["event"].as_str().map_or("reply".to_string(), str::to_string);
                if name == "agent_delta" {
                    streamed.push_str(frame["payload"]["text"].as_str().unwrap_or(""));
                }
                // A late joiner's preview: the snapshot's text, then the deltas after it.
                if name == "snapshot" {
                    streamed = frame["payload"]["streaming_text"].as_str().unwrap_or("").to_string();
                }
                let mut texts = Vec::new();
                texts_of(frame, &mut texts);
                self.search(route, &name, &texts);
            }
            self.search(route, "agent_delta (joined)", &[streamed]);
        }
    }

    fn search(&mut self, route: &str, place: &str, texts: &[String]) {
        for w in &self.windows {
            if texts.iter().any(|t| t.contains(w.as_str())) {
                self.leaks.push((route.to_string(), place.to_string(), w.clone()));
                return;
            }
        }
    }

    /// A late joiner: authenticates, joins (gets a snapshot) and is searched as `route`.
    fn late_joiner(&mut self, route: &str) -> ConnId {
        let name = format!("Late{}", self.h.sinks.len());
        let (conn, _) = self.h.join(&self.token.clone(), &name, &self.session.clone());
        self.check(route, &[conn]);
        conn
    }
}

/// Filler without line ends (a cut cannot move to one).
fn filler(n: usize) -> String {
    "lorem ipsum dolor sit amet ".chars().cycle().take(n).collect()
}

/// The filler length `L` that puts the cut `cut_at(make(L))` (a byte offset in the text) in the
/// middle of `secret` as it appears in the text, found by iteration (`shift`: +1 when more filler
/// moves the secret after the cut, as for a clip; -1 for a tail start), starting from `start`.
/// Returns the text and whether the cut falls inside the secret (not when the cut moved to a line
/// end before it).
fn place(
    make: &dyn Fn(usize) -> String,
    secret: &str,
    cut_at: &dyn Fn(&str) -> usize,
    (start, shift): (usize, i64),
) -> (String, bool) {
    let mut l = start as i64;
    let mut text = make(0);
    for _ in 0..40 {
        text = make(l as usize);
        let at = text.find(secret).expect("the secret is in the text");
        let cut = cut_at(&text) as i64;
        let mid = (at + secret.len() / 2) as i64;
        if cut > at as i64 && cut < (at + secret.len()) as i64 && (cut - mid).abs() <= secret.len() as i64 / 4 {
            return (text, true);
        }
        l = (l + shift * (cut - mid)).max(0);
    }
    let at = text.find(secret).unwrap();
    let cut = cut_at(&text);
    let inside = cut > at && cut < at + secret.len();
    (text, inside)
}

/// Notes a route whose cut could not be put inside the secret (it cut elsewhere: the route is
/// still checked).
fn placed(misplaced: &mut Vec<String>, route: &str, (text, inside): (String, bool)) -> String {
    if !inside {
        misplaced.push(route.to_string());
    }
    text
}

/// The longest secret of a format (the one the cuts aim at).
fn target(format: &Format) -> &str {
    format.secrets.iter().max_by_key(|s| s.len()).map(String::as_str).unwrap_or("")
}

/// Where `clip_json` (ignoring secrets) clips `text`: the length it keeps.
fn clip_point(max: usize) -> impl Fn(&str) -> usize {
    move |text: &str| {
        let clipped = protocol::clip_json(text, max, protocol::no_spans);
        if clipped == text {
            return text.len();
        }
        clipped.rfind("\n[… ").unwrap()
    }
}

/// Sends one format through every route; returns its leaks.
fn run_format(format: &Format, seed: u64) -> (Vec<Leak>, Vec<String>) {
    let mut misplaced = Vec::new();
    let secret = target(format).to_string();
    let context = format!("Here it is: {} — that was it.\n", format.sample);
    let mut run = Run::new(windows(&format.secrets));
    let ann = run.ann;

    // Streamed deltas cut at random, down to 1-byte pieces, several per tick or one.
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    run.start_turn();
    let mut rest = context.as_str();
    while !rest.is_empty() {
        let mut take = 1 + next(12) as usize;
        while take < rest.len() && !rest.is_char_boundary(take) {
            take += 1;
        }
        let take = take.min(rest.len());
        run.agent(AgentEvent::Delta(rest[..take].to_string()));
        rest = &rest[take..];
        if next(2) == 0 {
            run.h.tick();
        }
    }
    run.agent(AgentEvent::Done);
    run.h.run(50);
    run.check("deltas", &[ann]);

    // The secret's first half streamed, then a late joiner's snapshot, then the second half.
    let mut mid = context.find(&secret).expect("the secret is in the context") + secret.len() / 2;
    while !context.is_char_boundary(mid) {
        mid += 1;
    }
    run.start_turn();
    run.agent(AgentEvent::Delta(context[..mid].to_string()));
    run.h.run(5);
    let late = run.late_joiner("snapshot mid-secret");
    run.agent(AgentEvent::Delta(context[mid..].to_string()));
    run.agent(AgentEvent::Done);
    run.h.run(50);
    run.check("snapshot mid-secret (then live)", &[ann, late]);

    // The secret's first half streamed, a vote opened, then the second half.
    run.start_turn();
    run.agent(AgentEvent::Delta(context[..mid].to_string()));
    run.h.tick();
    run.agent(AgentEvent::Plan { request_id: "p".into(), plan: "1. go on".into(), on_approval: None });
    run.h.tick();
    run.agent(AgentEvent::Delta(context[mid..].to_string()));
    run.agent(AgentEvent::Done);
    run.h.run(50);
    run.check("deltas across a vote opening", &[ann]);

    // A late joiner's snapshot whose streaming_text tail starts inside the secret.
    let tail_start = |text: &str| {
        let snap = protocol::snapshot_streaming_text(text, protocol::no_spans);
        snap.strip_prefix("[…] ").map_or(0, |tail| text.len() - tail.len())
    };
    let make = |l: usize| format!("{context} {}", filler(l));
    let streamed = placed(
        &mut misplaced,
        "snapshot tail",
        place(&make, &secret, &tail_start, (protocol::MAX_DELTA_JSON_BYTES, -1)),
    );
    run.start_turn();
    for piece in protocol::split_json(&streamed, protocol::MAX_DELTA_JSON_BYTES, protocol::no_spans) {
        run.agent(AgentEvent::Delta(piece.to_string()));
        run.h.tick();
    }
    run.h.run(30);
    run.check("deltas (long)", &[ann]);
    run.late_joiner("snapshot tail");
    run.agent(AgentEvent::Done);
    run.h.run(50);
    run.check("deltas (long)", &[ann]);

    // A reply split at 256 KiB with the secret across the cut: live, in snapshots, in history.
    let split_at =
        |text: &str| protocol::split_json(text, protocol::MAX_MESSAGE_JSON_BYTES, protocol::no_spans)[0].len();
    let make = |l: usize| format!("{} {} {}", filler(l), format.sample, filler(protocol::MAX_MESSAGE_JSON_BYTES / 2));
    let reply =
        placed(&mut misplaced, "reply split", place(&make, &secret, &split_at, (protocol::MAX_MESSAGE_JSON_BYTES, 1)));
    let deltas = protocol::split_json(&reply, protocol::MAX_DELTA_JSON_BYTES, protocol::no_spans);
    run.turn(deltas.into_iter().map(|d| AgentEvent::Delta(d.to_string())).collect());
    run.check("reply split", &[ann]);
    run.late_joiner("reply split (snapshot)");
    let mut before: Option<u64> = None;
    for _ in 0..20 {
        let mut params = json!({"session_id": run.session, "limit": 200});
        if let Some(b) = before {
            params["before_seq"] = json!(b);
        }
        let page = run.h.call(ann, "fetch_history", params).unwrap();
        let msgs = page["messages"].as_array().unwrap();
        before = msgs.first().and_then(|m| m["seq"].as_u64());
        if !page["has_older"].as_bool().unwrap() || before.is_none() {
            break;
        }
    }
    run.check("reply split (fetch_history)", &[ann]);

    // Plan text, whole and clipped.
    let plan = |plan: String| AgentEvent::Plan { request_id: "p".into(), plan, on_approval: None };
    run.turn(vec![plan(context.clone())]);
    run.check("plan", &[ann]);
    // (Text after the sample, so that the whole is longer than the bound and is clipped.)
    let make = |l: usize| format!("{} {} {}", filler(l), format.sample, filler(300));
    let long = placed(
        &mut misplaced,
        "plan (clipped)",
        place(&make, &secret, &clip_point(protocol::MAX_SUBJECT_JSON_BYTES), (protocol::MAX_SUBJECT_JSON_BYTES, 1)),
    );
    run.turn(vec![plan(long)]);
    run.check("plan (clipped)", &[ann]);

    // Question text and options, whole and clipped.
    let question = |q: String, options: Vec<String>| AgentEvent::Question {
        request_id: "q".into(),
        questions: vec![Question { question: q, options, multi_select: false }],
    };
    run.turn(vec![question(context.clone(), vec![context.clone(), "no".into()])]);
    run.check("question", &[ann]);
    let long =
        placed(&mut misplaced, "question (clipped)", place(&make, &secret, &clip_point(4 * 1024), (4 * 1024, 1)));
    run.turn(vec![question(long, vec!["yes".into()])]);
    run.check("question (clipped)", &[ann]);
    let long = placed(&mut misplaced, "question option (clipped)", place(&make, &secret, &clip_point(1024), (1024, 1)));
    run.turn(vec![question("Which?".into(), vec![long])]);
    run.check("question option (clipped)", &[ann]);

    // A tool request's input (JSON text: the sample's quotes and line ends escaped), whole and
    // clipped, and a clipped tool name.
    let tool = |tool: String, input: String| AgentEvent::ToolRequest { request_id: "t".into(), tool, input };
    let input = |content: &str| json!({"file_path": "notes.txt", "content": content}).to_string();
    run.turn(vec![tool("Write".into(), input(&context))]);
    run.check("tool input", &[ann]);
    let escaped = serde_json::to_string(&secret).unwrap();
    let escaped = escaped[1..escaped.len() - 1].to_string();
    let make_input = |l: usize| input(&format!("{} {} {}", filler(l), format.sample, filler(300)));
    let long = placed(
        &mut misplaced,
        "tool input (clipped)",
        place(
            &make_input,
            &escaped,
            &clip_point(protocol::MAX_SUBJECT_JSON_BYTES),
            (protocol::MAX_SUBJECT_JSON_BYTES, 1),
        ),
    );
    run.turn(vec![tool("Write".into(), long)]);
    run.check("tool input (clipped)", &[ann]);
    let long = placed(&mut misplaced, "tool name (clipped)", place(&make, &secret, &clip_point(1024), (1024, 1)));
    run.turn(vec![tool(long, "{}".into())]);
    run.check("tool name (clipped)", &[ann]);

    // A workspace file read.
    std::fs::write(run.dir.path().join("notes.txt"), &context).unwrap();
    let read = run.h.call(ann, "read_workspace_file", json!({"session_id": run.session, "path": "notes.txt"}));
    assert!(read.is_ok(), "{read:?}");
    run.check("file read", &[ann]);

    (run.leaks, misplaced)
}

#[test]
fn no_secret_format_leaks_through_any_route_to_a_remote() {
    let masker = Masker::default();
    let formats = formats();
    let mut unmasked_in_context = Vec::new();
    let mut leaks: Vec<(String, String, String)> = Vec::new();
    let mut checked = 0;
    let mut uncut = Vec::new();
    for (i, format) in formats.iter().enumerate() {
        // A format the masker does not mask inside this test's sentence is not a route's fault.
        let context = format!("Here it is: {} — that was it.\n", format.sample);
        let masked = masker.mask(&context);
        if windows(&format.secrets).iter().any(|w| masked.contains(w.as_str())) {
            unmasked_in_context.push(format.name.clone());
            continue;
        }
        checked += 1;
        let (found, misplaced) = run_format(format, 0x9e37_79b9_7f4a_7c15 ^ i as u64);
        for (route, place, window) in found {
            leaks.push((format.name.clone(), format!("{route} [{place}]"), window));
        }
        if !misplaced.is_empty() {
            uncut.push(format!("{}: {}", format.name, misplaced.join(", ")));
        }
    }
    let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
    for (format, route, _) in &leaks {
        pairs.insert((format.clone(), route.clone()));
    }
    let report: Vec<String> = pairs.iter().map(|(f, r)| format!("{f} via {r}")).collect();
    eprintln!("{checked} formats checked; not masked in context (skipped): {unmasked_in_context:?}");
    eprintln!("cuts that could not be put inside the secret (a line end came first): {uncut:?}");
    assert!(report.is_empty(), "{} (format, route) pairs leak:\n{}", report.len(), report.join("\n"));
}
