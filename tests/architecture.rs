//! The layers point down, and the compiler keeps them there (docs/ARCHITECTURE.md draws them).
//!
//! Each layer is a crate of the workspace, so a layer cannot name what its `Cargo.toml` does not
//! list — whatever the syntax (`use crate as x`, nested `use` groups, a path split over lines).
//! What is left to check is the list itself, and what the type system cannot see:
//!
//! - every crate's `roundtable-*` dependencies point down the picture below, and the lower crates
//!   do not depend on a socket, SQLite, a screen or a command-line parser (this file reads the
//!   manifests);
//! - the lower crates deny printing (`clippy::print_stdout`/`print_stderr`), and the engine forbids
//!   reading the wall clock, sleeping and the file system (`crates/engine/clippy.toml`,
//!   `disallowed-methods`) and silencing `too_many_arguments`: clippy resolves paths, so
//!   `use std::time::Instant as Now; Now::now()` is caught too (a test below plants exactly that
//!   in a scratch crate and runs clippy on it);
//! - `main.rs` only parses and dispatches to the application and the windows.
//!
//! ```text
//!   roundtable (the binary: app, ui, main.rs)
//!      │
//!      ▼
//!   roundtable-sim (scenario runner, simulator, model, testkit)
//!      │
//!      ├────────────────┬────────────────┐
//!      ▼                ▼                ▼
//!   roundtable-net   roundtable-store  roundtable-agent   (none of these three knows the others)
//!      │                │                │
//!      ▼                │                ▼
//!   roundtable-engine ◄─┼────────────────┘   (the store knows no engine: it implements the
//!      │                │                      `persist::Store` contract)
//!      ▼                ▼
//!   roundtable-protocol (wire types, ids, tokens, the Store contract)
//! ```

use std::collections::BTreeMap;
use std::path::Path;

/// The workspace's crates and the `roundtable-*` crates each may depend on.
const ALLOWED: [(&str, &[&str]); 8] = [
    ("roundtable-protocol", &[]),
    ("roundtable-engine", &["roundtable-protocol"]),
    ("roundtable-store", &["roundtable-protocol"]),
    ("roundtable-net", &["roundtable-protocol", "roundtable-engine"]),
    ("roundtable-agent", &["roundtable-protocol", "roundtable-engine"]),
    (
        "roundtable-sim",
        &["roundtable-protocol", "roundtable-engine", "roundtable-store", "roundtable-net", "roundtable-agent"],
    ),
    ("roundtable-testbins", &[]),
    (
        "roundtable",
        &[
            "roundtable-protocol",
            "roundtable-engine",
            "roundtable-store",
            "roundtable-net",
            "roundtable-agent",
            "roundtable-sim",
        ],
    ),
];

const SOCKET: [&str; 5] = ["tokio", "tokio-tungstenite", "tokio-rustls", "rustls", "rcgen"];
const SCREEN: [&str; 4] = ["eframe", "egui", "egui_kittest", "winit"];

/// External crates a crate must not depend on, with the reason shown on a violation.
fn forbidden(krate: &str) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let socket = SOCKET.map(|c| (c, "a socket or an async runtime"));
    let screen = SCREEN.map(|c| (c, "a screen"));
    let cli = [("clap", "the command line"), ("directories", "the data directory")];
    let sqlite = [("rusqlite", "the SQLite implementation")];
    match krate {
        "roundtable-protocol" => {
            out.extend(socket);
            out.extend(screen);
            out.extend(cli);
            out.extend(sqlite);
            out.push(("bevy_ecs", "the ECS (the vocabulary knows no engine)"));
        }
        "roundtable-engine" => {
            out.extend(socket);
            out.extend(screen);
            out.extend(cli);
            out.extend(sqlite);
            out.push(("libc", "the operating system"));
        }
        "roundtable-store" => {
            out.extend(socket);
            out.extend(screen);
            out.extend(cli);
            out.push(("bevy_ecs", "the ECS (the store knows no engine)"));
        }
        "roundtable-net" | "roundtable-agent" => {
            out.extend(screen);
            out.extend(cli);
            out.extend(sqlite);
        }
        "roundtable-sim" => {
            out.extend(screen);
            out.extend(cli);
        }
        _ => {}
    }
    out
}

/// A crate's name and its dependencies (normal and dev), from its manifest's text.
fn manifest(text: &str) -> (String, Vec<(String, &'static str)>) {
    let doc: toml::Table = text.parse().expect("a valid Cargo.toml");
    let name = doc.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()).unwrap_or("").to_string();
    let mut deps = Vec::new();
    for (section, kind) in [("dependencies", "dependency"), ("dev-dependencies", "dev-dependency")] {
        if let Some(table) = doc.get(section).and_then(|d| d.as_table()) {
            deps.extend(table.keys().map(|k| (k.clone(), kind)));
        }
    }
    (name, deps)
}

/// Every violation in the given manifests (`(shown path, text)`), one line each.
fn violations(manifests: &[(String, String)]) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.into_iter().collect();
    let mut found = Vec::new();
    for (path, text) in manifests {
        let (name, deps) = manifest(text);
        let Some(may) = allowed.get(name.as_str()) else {
            found.push(format!("{path}: crate `{name}` is in no layer (add it to ALLOWED and docs/ARCHITECTURE.md)"));
            continue;
        };
        for (dep, kind) in &deps {
            if dep.starts_with("roundtable") && !may.contains(&dep.as_str()) {
                found.push(format!("{path}: `{name}` must not depend on `{dep}` (a {kind}; layers point down only)"));
            }
            // Tests may use what the shipped code must not (a temp dir, a socket to test against).
            if *kind == "dependency" {
                if let Some((_, why)) = forbidden(&name).into_iter().find(|(c, _)| c == dep) {
                    found.push(format!("{path}: `{name}` must not depend on `{dep}` (that is {why})"));
                }
            }
        }
    }
    found
}

fn workspace_manifests() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![("Cargo.toml".to_string(), std::fs::read_to_string(root.join("Cargo.toml")).unwrap())];
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("crates")).unwrap().flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let file = dir.join("Cargo.toml");
        let shown = file.strip_prefix(root).unwrap().display().to_string();
        out.push((shown, std::fs::read_to_string(&file).unwrap()));
    }
    out
}

#[test]
fn crates_point_down_only() {
    let manifests = workspace_manifests();
    assert_eq!(manifests.len(), ALLOWED.len(), "one manifest per crate in ALLOWED");
    let found = violations(&manifests);
    assert!(found.is_empty(), "{} forbidden dependencies (docs/ARCHITECTURE.md):\n{}", found.len(), found.join("\n"));
}

/// The lower crates deny printing, the engine the clock, sleeping, the file system and silenced
/// argument lists; clippy enforces it (`cargo clippy -D warnings` in CI).
#[test]
fn the_lower_crates_carry_their_lints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for krate in ["protocol", "engine", "store", "net", "agent", "sim"] {
        let lib = std::fs::read_to_string(root.join(format!("crates/{krate}/src/lib.rs"))).unwrap();
        assert!(
            lib.contains("#![deny(clippy::print_stdout, clippy::print_stderr)]"),
            "crates/{krate}/src/lib.rs must deny printing (output belongs to the application)"
        );
    }
    let engine = std::fs::read_to_string(root.join("crates/engine/src/lib.rs")).unwrap();
    assert!(engine.contains("#![forbid(clippy::too_many_arguments)]"), "the engine bundles parameters (SystemParam)");
    assert!(engine.contains("#![deny(clippy::disallowed_methods)]"), "the engine denies its disallowed methods");
    let config = std::fs::read_to_string(root.join("crates/engine/clippy.toml")).unwrap();
    for method in ["std::time::Instant::now", "std::time::SystemTime::now", "std::thread::sleep", "std::fs::read"] {
        assert!(config.contains(method), "crates/engine/clippy.toml must disallow {method}");
    }
}

#[test]
fn main_only_parses_and_dispatches() {
    // main.rs names the application layer and the windows, nothing below them.
    let main = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).expect("main.rs");
    let mut named = std::collections::BTreeSet::new();
    for code in main.lines().map(|l| l.split("//").next().unwrap_or("")) {
        let mut rest = code;
        while let Some(pos) = rest.find("roundtable::") {
            rest = &rest[pos + "roundtable::".len()..];
            let ident = |t: &str| t.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
            match rest.strip_prefix('{') {
                // `roundtable::{app, ui}`: every item is a top-level name.
                Some(group) => named.extend(group[..group.find('}').unwrap_or(group.len())].split(',').map(ident)),
                None => {
                    named.insert(ident(rest));
                }
            }
        }
    }
    named.remove("");
    let extra: Vec<_> = named.iter().filter(|m| *m != "app" && *m != "ui").collect();
    assert!(extra.is_empty(), "src/main.rs should only reach the app and ui layers, but names {extra:?}");
}

// ---- the checks check themselves: each fires on a planted violation ----

fn plant(name: &str, deps: &str, dev: &str) -> Vec<String> {
    let text = format!("[package]\nname = \"{name}\"\n\n[dependencies]\n{deps}\n\n[dev-dependencies]\n{dev}\n");
    violations(&[("planted/Cargo.toml".to_string(), text)])
}

#[test]
fn an_engine_that_knows_the_network_or_sqlite_is_caught() {
    let found = plant("roundtable-engine", "roundtable-net.workspace = true\nrusqlite = \"0.43\"", "");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("`roundtable-engine` must not depend on `roundtable-net`"), "{found:?}");
    assert!(found[1].contains("must not depend on `rusqlite` (that is the SQLite implementation)"), "{found:?}");
}

#[test]
fn an_upward_dev_dependency_and_a_store_with_sockets_are_caught() {
    let found = plant("roundtable-store", "tokio.workspace = true", "roundtable-engine = { path = \"../engine\" }");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|f| f.contains("`tokio` (that is a socket or an async runtime)")), "{found:?}");
    assert!(found.iter().any(|f| f.contains("`roundtable-engine` (a dev-dependency")), "{found:?}");
}

#[test]
fn a_vocabulary_with_an_ecs_or_a_crate_in_no_layer_is_caught() {
    assert!(plant("roundtable-protocol", "bevy_ecs.workspace = true", "")[0].contains("knows no engine"));
    assert!(plant("roundtable-extras", "", "")[0].contains("is in no layer"));
}

#[test]
fn allowed_directions_and_test_only_tools_are_not_flagged() {
    assert_eq!(plant("roundtable-net", "roundtable-engine.workspace = true\ntokio = \"1\"", ""), Vec::<String>::new());
    assert_eq!(
        plant("roundtable-engine", "roundtable-protocol.workspace = true", "tempfile = \"3\""),
        Vec::<String>::new()
    );
}

/// Runs clippy (`-D warnings`) on a scratch crate with the engine's `clippy.toml` and lint
/// attributes and `body` as the rest of its `lib.rs`; returns whether it passed and its messages.
fn clippy_as_the_engine(body: &str) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("planted");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::copy(root.join("crates/engine/clippy.toml"), krate.join("clippy.toml")).unwrap();
    let manifest = "[package]\nname = \"planted\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n";
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    let engine = std::fs::read_to_string(root.join("crates/engine/src/lib.rs")).unwrap();
    let attributes: String = engine.lines().filter(|l| l.starts_with("#![")).map(|l| format!("{l}\n")).collect();
    std::fs::write(krate.join("src/lib.rs"), format!("{attributes}{body}")).unwrap();
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["clippy", "--quiet", "--offline", "--", "-D", "warnings"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo clippy");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Clippy catches what a text scanner missed: the wall clock read through a renamed import,
/// printing from a nested module, a file read through a glob import, a silenced argument list.
#[test]
fn clippy_catches_the_bypasses_a_text_scanner_missed() {
    let (passed, messages) = clippy_as_the_engine(
        "use std::time::Instant as Now;\n\
         pub fn tick() -> u128 { Now::now().elapsed().as_millis() }\n\
         pub mod deep { pub fn say() { print!(\"hi\") } }\n\
         use std::fs::*;\n\
         pub fn peek() -> Vec<u8> { read(\"x\").unwrap_or_default() }\n",
    );
    assert!(!passed, "clippy passed the planted crate:\n{messages}");
    for needle in ["std::time::Instant::now", "print_stdout", "std::fs::read"] {
        assert!(messages.contains(needle), "clippy did not name `{needle}`:\n{messages}");
    }
    let (passed, messages) = clippy_as_the_engine(
        "#[allow(clippy::too_many_arguments)]\npub fn many(_: u8, _: u8, _: u8, _: u8, _: u8, _: u8, _: u8, _: u8) {}\n",
    );
    assert!(!passed && messages.contains("too_many_arguments"), "a silenced argument list passed:\n{messages}");
    let (passed, messages) = clippy_as_the_engine("pub fn fine(now: u64) -> u64 { now + 1 }\n");
    assert!(passed, "clean code was refused:\n{messages}");
}

// ---- the window speaks only the protocol ----
//
// `ui` and `app` share the binary crate (the window drives the app's host handle), so the
// compiler cannot keep the window away from the store or the engine; this check does. It strips
// comments and string literals, then flags a forbidden layer named as a path segment anywhere —
// `crate::store::Admin`, inside a `use crate::{…}` group over several lines, `use crate::store as
// s` — and the SQLite and ECS crates by name.

/// Layers the window must not name (it gets everything through protocol requests).
const NOT_FOR_THE_WINDOW: [&str; 5] = ["store", "engine", "scenario", "agent", "testkit"];

/// `text` without `//` comments, `/* */` comments and the contents of string literals.
fn code_only(text: &str) -> String {
    let (mut out, mut chars) = (String::new(), text.chars().peekable());
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push('"');
            }
            c => out.push(c),
        }
    }
    out
}

/// The path (or `use` group) that `code[at..]` continues: back over identifiers, `::`, braces,
/// commas and whitespace, up to anything else (`;`, `(`, `.`, a lone `:`).
fn path_before(code: &str, at: usize) -> &str {
    let bytes = code.as_bytes();
    let mut i = at;
    while i > 0 {
        let c = bytes[i - 1] as char;
        if c.is_alphanumeric() || c == '_' || c.is_whitespace() || "{},".contains(c) {
            i -= 1;
        } else if c == ':' && i >= 2 && bytes[i - 2] == b':' {
            i -= 2;
        } else {
            break;
        }
    }
    &code[i..at]
}

/// What a window source file names that it must not.
fn window_violations(text: &str) -> Vec<String> {
    let code = code_only(text);
    let words: Vec<(usize, &str)> = code
        .match_indices(|c: char| !(c.is_alphanumeric() || c == '_'))
        .scan(0, |start, (i, sep)| {
            let word = (*start, &code[*start..i]);
            *start = i + sep.len();
            Some(word)
        })
        .filter(|(_, w)| !w.is_empty())
        .collect();
    let mut found = Vec::new();
    for (at, word) in words {
        let before = code[..at].trim_end();
        let as_segment = before.ends_with("::") || before.ends_with('{') || before.ends_with(',');
        let path = path_before(&code, at);
        let in_path = as_segment && (path.contains("crate::") || path.contains("roundtable::"));
        if (in_path && NOT_FOR_THE_WINDOW.contains(&word)) || word == "rusqlite" || word == "bevy_ecs" {
            let line = code[..at].lines().count().max(1);
            found.push(format!("line {line}: names `{word}`"));
        }
    }
    found
}

#[test]
fn the_window_speaks_only_the_protocol() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ui");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for v in window_violations(&text) {
            found.push(format!("src/ui/{}: {v}", entry.file_name().to_string_lossy()));
        }
    }
    assert!(found.is_empty(), "the window reaches past the protocol:\n{}", found.join("\n"));
}

#[test]
fn the_window_check_sees_through_groups_renames_and_comments() {
    let planted = "use crate::{\n    ids::{SessionId, ShareId},\n    store::Admin,\n};\nuse crate::engine as e;\n\
                   fn f() { roundtable::scenario::run(); let c = rusqlite::Connection::open(\"x\"); }\n\
                   // crate::store in a comment\nconst S: &str = \"crate::store\";\nfn g(w: W) { w.agent.kind; }\n\
                   fn h() -> P { P { name: String::new(), agent: A::Demo } }\n";
    let found = window_violations(planted);
    assert_eq!(
        found,
        vec!["line 3: names `store`", "line 5: names `engine`", "line 6: names `scenario`", "line 6: names `rusqlite`"],
        "{found:?}"
    );
}
