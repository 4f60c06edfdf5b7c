//! The layers point down, and this test keeps them there (docs/ARCHITECTURE.md draws them).
//!
//! It reads every file under `src/`, works out which layer the file belongs to from its path, and
//! checks every path it names — `use crate::…`, `crate::…::f()`, `super::…` chains that climb out
//! of the file's folder, and `use` of external crates — against the layer's allowed dependencies.
//! A violation names the file, the line and the rule; the test lists them all, not only the first.
//!
//! ```text
//!   main.rs (parse, dispatch)
//!      │
//!      ├──────────► ui ──────────┐
//!      ▼                         ▼
//!     app  ◄─────────────────────┘   (ui uses the app's host handle)
//!      │
//!      ├──► scenario ──┐
//!      ▼               ▼
//!   net   store   agent              (none of these three knows the others)
//!      \    |    /
//!       ▼   ▼   ▼
//!        engine (core: world, components, systems, config, masking, agent contract)
//!          │
//!          ▼
//!   protocol · ids · token · persist (the Store trait)
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// A layer of the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    /// protocol, ids, token, persist: the vocabulary every layer shares.
    Foundation,
    /// The ECS core: engine, components, systems.
    Core,
    /// Agent backends (demo, claude, command) and process plumbing.
    Agent,
    /// SQLite implementation and admin operations.
    Store,
    /// TLS/WebSocket server, client connector, links, certificates, known hosts.
    Net,
    /// Scenario runner, simulator, benchmarks.
    Scenario,
    /// Everything a person runs: clap, bootstrap, console, join, workspace/share commands.
    App,
    /// The egui windows.
    Ui,
    /// `main.rs` and the helper binaries in `src/bin/`.
    Bin,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Layer::Foundation => "foundation (protocol/ids/token/persist)",
            Layer::Core => "core (engine)",
            Layer::Agent => "agent",
            Layer::Store => "store",
            Layer::Net => "net",
            Layer::Scenario => "scenario",
            Layer::App => "app",
            Layer::Ui => "ui",
            Layer::Bin => "bin",
        };
        f.write_str(name)
    }
}

/// The layer of a top-level module of the crate (`crate::<name>`), if it is one we know.
fn layer_of_module(name: &str) -> Option<Layer> {
    Some(match name {
        "protocol" | "ids" | "token" | "persist" => Layer::Foundation,
        "engine" => Layer::Core,
        "agent" => Layer::Agent,
        "store" => Layer::Store,
        "net" => Layer::Net,
        // The rule-test harness drives the engine with the demo agent, like the scenario runner.
        "scenario" | "testkit" => Layer::Scenario,
        "app" => Layer::App,
        "ui" => Layer::Ui,
        _ => return None,
    })
}

/// Which crate layers a layer may use (besides itself).
fn allowed_layers(layer: Layer) -> &'static [Layer] {
    use Layer::*;
    match layer {
        Foundation => &[],
        Core => &[Foundation],
        Agent => &[Foundation, Core],
        Store => &[Foundation],
        Net => &[Foundation, Core],
        Scenario => &[Foundation, Core, Agent, Store, Net],
        App => &[Foundation, Core, Agent, Store, Net, Scenario],
        Ui => &[Foundation, Core, Agent, Store, Net, App],
        Bin => &[Foundation, Core, Agent, Store, Net, Scenario, App, Ui],
    }
}

/// External crates a layer must not use, with the reason shown on a violation.
fn forbidden_crates(layer: Layer) -> &'static [(&'static str, &'static str)] {
    const SCREEN: [(&str, &str); 3] = [("eframe", "a screen"), ("egui", "a screen"), ("egui_kittest", "a screen")];
    match layer {
        Layer::Foundation | Layer::Core => &[
            ("tokio", "an async runtime / sockets"),
            ("tokio_tungstenite", "a socket"),
            ("tokio_rustls", "a socket"),
            ("rustls", "TLS"),
            ("rcgen", "certificates"),
            ("rusqlite", "the SQLite implementation"),
            ("clap", "the command line"),
            ("directories", "the data directory"),
            ("eframe", "a screen"),
            ("egui", "a screen"),
        ],
        Layer::Net => {
            &[("clap", "the command line"), ("rusqlite", "the SQLite implementation"), SCREEN[0], SCREEN[1], SCREEN[2]]
        }
        Layer::Store => &[
            ("tokio", "an async runtime / sockets"),
            ("tokio_tungstenite", "a socket"),
            ("tokio_rustls", "a socket"),
            ("rustls", "TLS"),
            ("clap", "the command line"),
            SCREEN[0],
            SCREEN[1],
            SCREEN[2],
        ],
        Layer::Agent | Layer::Scenario => {
            &[("clap", "the command line"), ("rusqlite", "the SQLite implementation"), SCREEN[0], SCREEN[1], SCREEN[2]]
        }
        Layer::App => &[SCREEN[0], SCREEN[1], SCREEN[2]],
        Layer::Ui | Layer::Bin => &[],
    }
}

/// Layers that must not print: the user-facing output belongs to the application layer (and
/// the scenario runner's reports are written to a writer the application hands it).
fn may_print(layer: Layer) -> bool {
    matches!(layer, Layer::App | Layer::Ui | Layer::Bin)
}

/// Layers that must not read the wall clock (determinism: time is the engine's `Clock`).
fn may_read_wall_clock(layer: Layer) -> bool {
    !matches!(layer, Layer::Core)
}

/// The module path of a source file: `src/engine/systems/vote.rs` → `["engine", "systems", "vote"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_string();
    }
    if parts.last().is_some_and(|l| l == "mod" || l == "lib" || l == "main") {
        parts.pop();
    }
    parts
}

/// The layer a file belongs to, from its path under `src/`.
fn layer_of_file(rel: &Path) -> Result<Layer, String> {
    let first = rel.iter().next().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    if first == "main.rs" || first == "bin" {
        return Ok(Layer::Bin);
    }
    if first == "lib.rs" {
        // lib.rs only declares the modules; it is checked like a binary (it may name them all).
        return Ok(Layer::Bin);
    }
    let name = first.trim_end_matches(".rs");
    layer_of_module(name).ok_or_else(|| format!("`{name}` is in no layer (add it to a layer's folder)"))
}

/// One dependency found in a file.
struct Dep {
    line: usize,
    /// The first segment after `crate::` (or after climbing `super::`).
    module: String,
    text: String,
}

/// Strips a trailing `//` comment (outside string literals — good enough for `use` lines and
/// paths, which is all we look at) and skips comment lines.
fn code_of(line: &str) -> &str {
    let t = line.trim_start();
    if t.starts_with("//") || t.starts_with("*") || t.starts_with("/*") {
        return "";
    }
    let mut in_str = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes[i + 1] == b'/' => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The crate modules a line names: `crate::x`, `crate::{x, y::z}`, and `super::` chains that
/// climb to the top of the crate (`module` is the file's module path).
fn crate_modules_named(code: &str, module: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    // `crate::...`
    let mut rest = code;
    while let Some(pos) = rest.find("crate::") {
        let before = rest[..pos].chars().last();
        let after = &rest[pos + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| is_ident_char(c) || c == '$') {
            continue; // `$crate::`, `my_crate::`
        }
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|&c| is_ident_char(c)).collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = after.chars().take_while(|&c| is_ident_char(c)).collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    // `super::super::x` climbing to the crate root.
    let mut rest = code;
    while let Some(pos) = rest.find("super::") {
        let before = rest[..pos].chars().last();
        let chain = &rest[pos..];
        rest = &rest[pos + "super::".len()..];
        if before.is_some_and(|c| is_ident_char(c) || c == ':') {
            continue; // counted with the chain's first `super::`
        }
        let mut supers = 0;
        let mut tail = chain;
        while let Some(t) = tail.strip_prefix("super::") {
            supers += 1;
            tail = t;
        }
        // A file's module is `module`; `super` is its parent.
        if supers >= module.len() {
            let name: String = tail.chars().take_while(|&c| is_ident_char(c)).collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// External crates a line uses (`use name::`, `name::path` at the start of an expression).
fn crates_named(code: &str, candidates: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, _) in candidates {
        let needle = format!("{name}::");
        let mut rest = code;
        while let Some(pos) = rest.find(&needle) {
            let head = &rest[..pos];
            rest = &rest[pos + needle.len()..];
            // Only a path that starts with the crate counts: `tokio::`, `::tokio::`, not
            // `tokio_rustls::` nor `eframe::egui::`.
            let head = head.strip_suffix("::").unwrap_or(head);
            if head.chars().last().is_some_and(|c| is_ident_char(c) || c == ':' || c == '$') {
                continue;
            }
            out.push(name.to_string());
        }
        // `#[derive(clap::Args)]` is caught above; `#[arg(...)]`/`#[command(...)]` need clap too.
        if *name == "clap" && (code.trim_start().starts_with("#[arg(") || code.trim_start().starts_with("#[command(")) {
            out.push("clap".to_string());
        }
    }
    out
}

/// An item of `engine/mod.rs` (an upper-case name right after `crate::engine::`), if the line
/// names one: `crate::engine::EngineConfig`, `crate::engine::{Frame, io}`.
fn names_engine_driver(code: &str) -> Option<String> {
    let mut rest = code;
    while let Some(pos) = rest.find("crate::engine::") {
        rest = &rest[pos + "crate::engine::".len()..];
        let items: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())].split(',').collect(),
            None => vec![rest],
        };
        for item in items {
            let name: String = item.trim().chars().take_while(|&c| is_ident_char(c)).collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                return Some(name);
            }
        }
    }
    None
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").map(|e| e.expect("dir entry").path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every violation in the crate, as `file:line: message` lines.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let shown = Path::new("src").join(rel).display().to_string();
        let layer = match layer_of_file(rel) {
            Ok(l) => l,
            Err(e) => {
                found.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let module = module_path(rel);
        let text = std::fs::read_to_string(&file).expect("read source");
        let mut in_tests = false;
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            // Unit tests at the bottom of a file may use dev-dependencies and print; the rules
            // are about what the shipped code depends on.
            if raw.trim_start().starts_with("#[cfg(test)]") {
                in_tests = true;
            }
            if in_tests {
                continue;
            }
            let code = code_of(raw);
            if code.trim().is_empty() {
                continue;
            }
            let mut deps: Vec<Dep> = Vec::new();
            for m in crate_modules_named(code, &module) {
                deps.push(Dep { line, module: m, text: raw.trim().to_string() });
            }
            for dep in deps {
                let Some(target) = layer_of_module(&dep.module) else {
                    // `crate::SomeReExport` or a module in no layer.
                    if dep.module.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                        found.push(format!(
                            "{shown}:{}: [{layer}] uses crate::{} which is in no layer: {}",
                            dep.line, dep.module, dep.text
                        ));
                    }
                    continue;
                };
                if target != layer && !allowed_layers(layer).contains(&target) {
                    found.push(format!("{shown}:{}: [{layer}] must not depend on [{target}]: {}", dep.line, dep.text));
                }
            }
            for krate in crates_named(code, forbidden_crates(layer)) {
                let why = forbidden_crates(layer).iter().find(|(c, _)| *c == krate).map(|(_, w)| *w).unwrap_or("");
                found.push(format!("{shown}:{line}: [{layer}] must not use `{krate}` (that is {why}): {}", raw.trim()));
            }
            if layer == Layer::Core && module != ["engine"] {
                if let Some(item) = names_engine_driver(code) {
                    found.push(format!(
                        "{shown}:{line}: [{layer}] names `{item}` from engine/mod.rs (the driver); inside the core use \
                         its submodules (engine::config, io, schedule, agent) so the driver is never imported back: {}",
                        raw.trim()
                    ));
                }
            }
            if layer == Layer::Core && code.contains("clippy::too_many_arguments") {
                found.push(format!(
                    "{shown}:{line}: [{layer}] silences too_many_arguments; bundle the parameters with \
                     #[derive(SystemParam)] (engine/systems/params.rs) instead: {}",
                    raw.trim()
                ));
            }
            if !may_print(layer) {
                for mac in ["println!", "eprintln!", "print!", "eprint!"] {
                    let hit =
                        code.match_indices(mac).any(|(i, _)| !code[..i].chars().last().is_some_and(is_ident_char));
                    if hit {
                        found.push(format!(
                            "{shown}:{line}: [{layer}] must not print (`{mac}`; log with tracing or return the text): {}",
                            raw.trim()
                        ));
                        break;
                    }
                }
            }
            if !may_read_wall_clock(layer) && (code.contains("Instant::now") || code.contains("SystemTime::now")) {
                found.push(format!(
                    "{shown}:{line}: [{layer}] must not read the wall clock (time is the engine's Clock): {}",
                    raw.trim()
                ));
            }
        }
    }
    found
}

#[test]
fn layers_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "{} forbidden dependencies (see docs/ARCHITECTURE.md for the layers):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn main_only_parses_and_dispatches() {
    // main.rs names the application layer and the windows, nothing below them.
    let main = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).expect("main.rs");
    let mut named = BTreeSet::new();
    for raw in main.lines() {
        let code = code_of(raw);
        for needle in ["roundtable::"] {
            let mut rest = code;
            while let Some(pos) = rest.find(needle) {
                rest = &rest[pos + needle.len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    for item in group[..end].split(',') {
                        let name: String = item.trim().chars().take_while(|&c| is_ident_char(c)).collect();
                        named.insert(name);
                    }
                } else {
                    named.insert(rest.chars().take_while(|&c| is_ident_char(c)).collect::<String>());
                }
            }
        }
    }
    named.remove("");
    let extra: Vec<_> = named.iter().filter(|m| *m != "app" && *m != "ui").collect();
    assert!(extra.is_empty(), "src/main.rs should only reach the app and ui layers, but names {extra:?}");
}

// ---- the checker checks itself: each rule fires on a planted violation ----

fn plant(files: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    violations(dir.path())
}

#[test]
fn core_importing_an_agent_backend_is_caught() {
    let found = plant(&[("engine/systems/x.rs", "use crate::ids::ConnId;\nuse crate::agent::demo::DemoAgent;\n")]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("src/engine/systems/x.rs:2: [core (engine)] must not depend on [agent]"), "{found:?}");
}

#[test]
fn net_opening_a_window_or_parsing_arguments_is_caught() {
    let found = plant(&[(
        "net/mod.rs",
        "pub fn f() { crate::ui::run_host_window(); }\n#[derive(clap::Args)]\nstruct A;\nfn g() { println!(\"x\"); }\n",
    )]);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].contains("src/net/mod.rs:1: [net] must not depend on [ui]"), "{found:?}");
    assert!(found[1].contains("src/net/mod.rs:2: [net] must not use `clap`"), "{found:?}");
    assert!(found[2].contains("src/net/mod.rs:4: [net] must not print"), "{found:?}");
}

#[test]
fn store_knowing_a_link_is_caught_through_braces_and_super() {
    let found = plant(&[
        ("store/cli.rs", "use crate::{ids::ShareId, net::link};\n"),
        ("store/deep/x.rs", "use super::super::super::net::tls;\n"),
    ]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("src/store/cli.rs:1: [store] must not depend on [net]"), "{found:?}");
    assert!(found[1].contains("src/store/deep/x.rs:1: [store] must not depend on [net]"), "{found:?}");
}

#[test]
fn core_reading_the_wall_clock_or_a_socket_is_caught() {
    let found =
        plant(&[("engine/x.rs", "fn f() { let t = std::time::Instant::now(); }\nuse tokio::net::TcpStream;\n")]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("must not read the wall clock"), "{found:?}");
    assert!(found[1].contains("must not use `tokio`"), "{found:?}");
}

#[test]
fn allowed_directions_and_comments_are_not_flagged() {
    let found = plant(&[
        ("app/serve.rs", "use crate::net::server;\nuse crate::engine::Engine;\n// crate::ui::x in a comment\n"),
        ("ui/mod.rs", "use crate::app::host::Host;\n"),
        ("engine/mod.rs", "use crate::protocol::Event; // not crate::net\nuse self::x;\n"),
        ("engine/systems/y.rs", "use crate::engine::config::EngineConfig;\nuse super::super::io::Frame;\n"),
        ("net/tls.rs", "use tokio_rustls::rustls;\n"),
        ("store/x.rs", "#[cfg(test)]\nmod tests { fn f() { println!(\"ok in tests\"); } }\n"),
    ]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn a_system_importing_the_engine_driver_back_is_caught() {
    let found = plant(&[("engine/systems/x.rs", "use crate::engine::{EngineConfig, Inbound};\n")]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("src/engine/systems/x.rs:1: [core (engine)] names `EngineConfig` from engine/mod.rs"),
        "{found:?}"
    );
}

#[test]
fn a_core_system_silencing_too_many_arguments_is_caught() {
    let found = plant(&[("engine/systems/x.rs", "#[allow(clippy::too_many_arguments)]\npub fn f() {}\n")]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("src/engine/systems/x.rs:1: [core (engine)] silences too_many_arguments"), "{found:?}");
}

#[test]
fn a_file_outside_every_layer_is_caught() {
    let found = plant(&[("systems/x.rs", "fn f() {}\n")]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("src/systems/x.rs: `systems` is in no layer"), "{found:?}");
}
