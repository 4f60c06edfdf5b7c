//! `fake_claude`: a stand-in for the Claude Code CLI, used by roundtable's tests.
//!
//! It accepts (and ignores) the real CLI's flags and replays a recorded stream-json transcript:
//!
//! ```text
//! fake_claude [claude flags...] --fake-script FILE.jsonl [--fake-log LOG.jsonl]
//! ```
//!
//! Every line of the script that has no `"fake"` key is written to stdout verbatim. Lines with a
//! `"fake"` key are directives:
//!
//! | directive | effect |
//! |---|---|
//! | `{"fake":"handshake"}` | read the `initialize` control request from stdin, answer it |
//! | `{"fake":"await_user"}` | read stdin until a `{"type":"user"}` message |
//! | `{"fake":"await_response","request_id":"R"}` | read stdin until the `control_response` for R |
//! | `{"fake":"await_interrupt"}` | read stdin until an `interrupt` control request, answer it |
//! | `{"fake":"raw","text":"T"}` | write T as a line (noise, malformed JSON) |
//! | `{"fake":"split","text":"T","parts":N,"sleep_ms":M}` | write line T in N flushed pieces, M ms apart |
//! | `{"fake":"deltas","bytes":N,"chunk":C}` | stream N bytes of text as `text_delta`s of C bytes (see [`big_text`]) |
//! | `{"fake":"long_line","bytes":N}` | write one line of N bytes |
//! | `{"fake":"sleep","ms":M}` | pause |
//! | `{"fake":"hang"}` | never continue |
//! | `{"fake":"exit","code":C,"stderr":"T"}` | write T to stderr and exit with C |
//!
//! After the script it reads stdin until EOF (like the CLI, which stays until its input closes)
//! and exits 0. The log gets one JSON line `{"pid":…, "argv":[…], "cwd":…}` and then `{"stdin": MSG}` for
//! every line read, so tests can check what the host sent.

use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Stdin, Write};
use std::time::Duration;

/// The text streamed by the `deltas` directive: byte `i` is `ALPHABET[i % ALPHABET.len()]`.
fn big_text(bytes: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789\n";
    (0..bytes).map(|i| ALPHABET[i % ALPHABET.len()] as char).collect()
}

struct Fake {
    stdin: std::io::Lines<BufReader<Stdin>>,
    log: Option<File>,
}

impl Fake {
    fn log(&mut self, entry: Value) {
        if let Some(log) = &mut self.log {
            let _ = writeln!(log, "{entry}");
            let _ = log.flush();
        }
    }

    /// Reads stdin lines until `want` accepts one (returned), or EOF (`None`).
    fn read_until(&mut self, want: impl Fn(&Value) -> bool) -> Option<Value> {
        while let Some(Ok(line)) = self.stdin.next() {
            let msg: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            self.log(json!({ "stdin": msg }));
            if want(&msg) {
                return Some(msg);
            }
        }
        None
    }

    fn out(&mut self, line: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    fn control_success(&mut self, request_id: &Value, response: Value) {
        let line = json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": response},
        });
        self.out(&line.to_string());
    }

    fn directive(&mut self, d: &Value) {
        let num = |key: &str, default: u64| d[key].as_u64().unwrap_or(default);
        match d["fake"].as_str().unwrap_or_default() {
            "handshake" => {
                let Some(init) = self.read_until(|m| m["request"]["subtype"] == "initialize") else { exit(1) };
                let response =
                    json!({"commands": [], "output_style": "default", "available_output_styles": ["default"]});
                self.control_success(&init["request_id"], response);
            }
            "await_user" => {
                if self.read_until(|m| m["type"] == "user").is_none() {
                    exit(1)
                }
            }
            "await_response" => {
                let id = d["request_id"].clone();
                if self.read_until(|m| m["type"] == "control_response" && m["response"]["request_id"] == id).is_none() {
                    exit(1)
                }
            }
            "await_interrupt" => {
                let Some(req) = self.read_until(|m| m["request"]["subtype"] == "interrupt") else { exit(1) };
                self.control_success(&req["request_id"], json!({}));
            }
            "raw" => {
                let text = d["text"].as_str().unwrap_or_default().to_string();
                self.out(&text);
            }
            "split" => {
                let text = format!("{}\n", d["text"].as_str().unwrap_or_default());
                let parts = num("parts", 3).max(1) as usize;
                let size = text.len().div_ceil(parts);
                let mut stdout = std::io::stdout().lock();
                for piece in text.as_bytes().chunks(size.max(1)) {
                    let _ = stdout.write_all(piece);
                    let _ = stdout.flush();
                    std::thread::sleep(Duration::from_millis(num("sleep_ms", 20)));
                }
            }
            "deltas" => {
                let text = big_text(num("bytes", 0) as usize);
                let chunk = num("chunk", 1000).max(1) as usize;
                let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
                for piece in text.as_bytes().chunks(chunk) {
                    let piece = std::str::from_utf8(piece).expect("ASCII text");
                    let line = json!({
                        "type": "stream_event",
                        "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                        "session_id": "5d0f0c9e-1b2a-4c3d-9e8f-0a1b2c3d4e5f",
                        "parent_tool_use_id": null,
                    });
                    let _ = writeln!(stdout, "{line}");
                }
                let _ = stdout.flush();
            }
            "long_line" => {
                let line = "x".repeat(num("bytes", 0) as usize);
                self.out(&line);
            }
            "sleep" => std::thread::sleep(Duration::from_millis(num("ms", 0))),
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "exit" => {
                if let Some(text) = d["stderr"].as_str() {
                    let _ = writeln!(std::io::stderr(), "{text}");
                }
                exit(num("code", 1) as i32)
            }
            other => panic!("unknown fake directive '{other}'"),
        }
    }
}

fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).cloned();
    let script = arg("--fake-script").expect("--fake-script FILE is required");
    let log = arg("--fake-log").map(|p| File::options().create(true).append(true).open(p).expect("open --fake-log"));
    let mut fake = Fake { stdin: BufReader::new(std::io::stdin()).lines(), log };
    let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
    fake.log(json!({"pid": std::process::id(), "argv": argv, "cwd": cwd}));
    let script = std::fs::read_to_string(&script).unwrap_or_else(|e| panic!("read {script}: {e}"));
    for line in script.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(d) if d.get("fake").is_some() => fake.directive(&d),
            _ => fake.out(line),
        }
    }
    fake.read_until(|_| false);
}
