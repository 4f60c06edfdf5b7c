//! `fake_codex`: a stand-in for `codex app-server`, used by roundtable's tests
//! (`tests/agent_codex.rs`).
//!
//! ```text
//! fake_codex app-server [flags...] --fake-script FILE.jsonl [--fake-log LOG.jsonl]
//! ```
//!
//! Every line of the script without a `"fake"` key is written to stdout verbatim (notifications
//! and server requests). Lines with a `"fake"` key are directives:
//!
//! | directive | effect |
//! |---|---|
//! | `{"fake":"handshake","version":"V","account":A}` | answer `initialize` (userAgent `roundtable/V`), read `initialized`, answer `account/read` with A (default: an API key) |
//! | `{"fake":"answer","method":"M","result":R}` | read stdin until a request M, answer it with R (or `"error":E`) |
//! | `{"fake":"await_reply","id":N}` | read stdin until the client's answer to our request N |
//! | `{"fake":"sleep","ms":M}` | pause |
//! | `{"fake":"hang"}` | never continue |
//! | `{"fake":"exit","code":C,"stderr":"T"}` | write T to stderr and exit with C |
//!
//! After the script it reads stdin until EOF and exits 0 (like the app-server). The log gets
//! `{"pid","argv","cwd"}` and then `{"stdin": MSG}` for every line read.

use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Stdin, Write};
use std::time::Duration;

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

    /// Reads stdin lines until `want` accepts one (returned); exits at EOF.
    fn read_until(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        while let Some(Ok(line)) = self.stdin.next() {
            let msg: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            self.log(json!({ "stdin": msg }));
            if want(&msg) {
                return msg;
            }
        }
        exit(1)
    }

    fn request(&mut self, method: &str) -> Value {
        self.read_until(|m| m["method"] == method)
    }

    fn out(&mut self, line: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    fn directive(&mut self, d: &Value) {
        match d["fake"].as_str().unwrap_or_default() {
            "handshake" => {
                let init = self.request("initialize");
                let version = d["version"].as_str().unwrap_or("0.171.0");
                let agent = format!("roundtable/{version} (fake)");
                self.out(&json!({"id": init["id"], "result": {"userAgent": agent, "platformOs": "linux"}}).to_string());
                self.request("initialized");
                let read = self.request("account/read");
                let account = match d.get("account") {
                    Some(a) => a.clone(),
                    None => json!({"account": {"type": "apiKey"}, "requiresOpenaiAuth": true}),
                };
                self.out(&json!({"id": read["id"], "result": account}).to_string());
            }
            "answer" => {
                let method = d["method"].as_str().unwrap_or_default().to_string();
                let req = self.request(&method);
                let line = match d.get("error") {
                    Some(error) => json!({"id": req["id"], "error": error}),
                    None => json!({"id": req["id"], "result": d["result"]}),
                };
                self.out(&line.to_string());
            }
            "await_reply" => {
                let id = d["id"].clone();
                self.read_until(|m| m.get("method").is_none() && m["id"] == id);
            }
            "sleep" => std::thread::sleep(Duration::from_millis(d["ms"].as_u64().unwrap_or(0))),
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "exit" => {
                if let Some(text) = d["stderr"].as_str() {
                    let _ = writeln!(std::io::stderr(), "{text}");
                }
                exit(d["code"].as_u64().unwrap_or(1) as i32)
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
    while let Some(Ok(line)) = fake.stdin.next() {
        let msg: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
        fake.log(json!({ "stdin": msg }));
    }
}
