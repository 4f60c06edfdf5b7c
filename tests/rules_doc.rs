//! docs/RULES.md names, for each rule, the tests that prove it; every name must exist. A renamed
//! test or a moved file shows up here rather than as a stale citation.

use std::path::Path;

/// Every `Proved by:` paragraph, with the number of the line it starts on.
fn proved_by(doc: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut open = false;
    for (n, line) in doc.lines().enumerate() {
        if line.starts_with("Proved by:") {
            out.push((n + 1, line.to_string()));
            open = true;
        } else if open && !line.trim().is_empty() && !line.starts_with('#') {
            out.last_mut().expect("open").1.push_str(&format!(" {line}"));
        } else {
            open = false;
        }
    }
    out
}

/// What is wrong with the citations in `paragraph`: each `path` must exist, and each bare
/// identifier after a `.rs` path must be a function in that file.
fn broken(root: &Path, paragraph: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current: Option<(String, String)> = None;
    for (i, token) in paragraph.split('`').enumerate() {
        if i % 2 == 0 {
            continue; // outside backticks
        }
        let looks_like_path = token.contains('/') && !token.contains(' ');
        if looks_like_path {
            let path = token.trim_end_matches('/');
            match std::fs::read_to_string(root.join(path)) {
                Ok(text) => current = Some((path.to_string(), text)),
                Err(_) if root.join(path).is_dir() => current = None,
                Err(_) => {
                    found.push(format!("no file {path}"));
                    current = None;
                }
            }
            continue;
        }
        let name = token.rsplit("::").next().unwrap_or(token);
        let is_ident = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if let (true, Some((path, text))) = (is_ident, &current) {
            if path.ends_with(".rs") && !text.contains(&format!("fn {name}(")) {
                found.push(format!("no fn {name} in {path}"));
            }
        }
    }
    found
}

#[test]
fn every_test_the_rules_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/RULES.md")).expect("docs/RULES.md");
    let paragraphs = proved_by(&doc);
    assert!(paragraphs.len() >= 60, "expected a Proved by: line per rule, found {}", paragraphs.len());
    let mut problems = Vec::new();
    for (line, paragraph) in &paragraphs {
        for p in broken(root, paragraph) {
            problems.push(format!("docs/RULES.md:{line}: {p}"));
        }
    }
    assert!(problems.is_empty(), "{} stale citations:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn every_scenario_is_cited_by_a_rule() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/RULES.md")).expect("docs/RULES.md");
    let mut missing: Vec<String> = std::fs::read_dir(root.join("scenarios"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|f| f.ends_with(".toml") && !doc.contains(&format!("scenarios/{f}")))
        .collect();
    missing.sort();
    assert!(missing.is_empty(), "scenarios no rule cites (add them to docs/RULES.md): {missing:?}");
}

#[test]
fn the_checker_catches_a_renamed_test_and_a_missing_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = broken(
        root,
        "Proved by: `tests/rules_doc.rs` `every_test_the_rules_name_exists`, `no_such_test`; `scenarios/nope.toml`.",
    );
    assert_eq!(
        found,
        vec!["no fn no_such_test in tests/rules_doc.rs".to_string(), "no file scenarios/nope.toml".into()]
    );
}
