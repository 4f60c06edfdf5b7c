//! `roundtable bench mask`: what secret masking costs per streamed agent delta.
//!
//! Builds `--megabytes` of realistic agent output from a fixed seed (Rust code, shell commands
//! and prose, with a secret of a random built-in format in about one line in forty), cuts it
//! into `--delta-bytes` deltas at character boundaries, and pushes every delta through one
//! [`StreamMasker`](crate::engine::mask::StreamMasker) built from the built-in patterns, as
//! broadcast does for a turn. The reference, in the same run, copies the same deltas into a
//! `String` with `push_str`. Each side runs five times alternately; the report gives the median
//! ns per delta, MB/s and their ratio, and checks that the stream's output equals masking the
//! whole text at once.

use crate::engine::mask::Masker;
use rand::{RngExt, SeedableRng};
use std::io::Write;
use std::time::Instant;

/// Lines the generated output is made of; `{S}` is replaced by a secret.
const LINES: &[&str] = &[
    "fn parse_header(input: &str) -> Result<Header, ParseError> {",
    "    let token = parse(x)?;",
    "    let mut out = Vec::with_capacity(input.len());",
    "    for (i, line) in input.lines().enumerate() {",
    "        if line.starts_with('#') { continue; }",
    "    }",
    "    Ok(Header { token: Option<String>, max_tokens: 1024 })",
    "}",
    "I looked at the failing test and the problem is that the session is closed before the last",
    "message is flushed, so the client never sees it. The fix is to flush first, then close.",
    "Running `cargo test --lib mask` now; the tokenizer and the password prompt are unchanged.",
    "$ git log --oneline | head -3 && curl -s https://example.com/api/v1/status | jq .ok",
    "Let me check the configuration file for the deploy step before changing anything else.",
    "    assert_eq!(render(&doc), \"<p>hello</p>\", \"rendering keeps the markup\");",
    "The access key rotation runs nightly; secrets are read from the vault at start-up.",
];

/// Secrets dropped into the output now and then (one per built-in family).
const SECRETS: &[&str] = &[
    "export OPENAI_API_KEY=sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "token ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 leaked",
    "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
    "password=hunter2hunter2",
    "\"api_key\": \"abcdef0123456789\"",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0123456789abcdef\n-----END RSA PRIVATE KEY-----",
    "slack xoxb-1234567890-abcdefghijklmno",
    // Formats added for issue 24.
    "DD_APP_KEY=bc5cce28e8b4fe8aae189c083ddd2389324d0bb7",
    "curl -u deploy:kHUpUgvqCA9x0I5f https://api.example.com",
    "Authorization: SSWS 00A_b0bmqA7mFkksPT__CK_tbs-P3KrGaYr2xZ75tA",
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nthe END line never came",
];

/// One side's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaskSide {
    pub ns_per_delta: f64,
    pub mb_per_s: f64,
}

/// The report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaskReport {
    pub megabytes: usize,
    pub delta_bytes: usize,
    pub deltas: usize,
    pub secrets: usize,
    pub masker: MaskSide,
    pub reference: MaskSide,
    /// masker ns per delta / reference ns per delta.
    pub ratio: f64,
}

/// The generated output: `megabytes` of lines, and how many secrets it holds.
fn output(megabytes: usize, seed: u64) -> (String, usize) {
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
    let mut text = String::with_capacity(megabytes * 1_000_000 + 200);
    let mut secrets = 0;
    while text.len() < megabytes * 1_000_000 {
        if rng.random_range(0..40) == 0 {
            text.push_str(SECRETS[rng.random_range(0..SECRETS.len())]);
            secrets += 1;
        } else {
            text.push_str(LINES[rng.random_range(0..LINES.len())]);
        }
        text.push('\n');
    }
    (text, secrets)
}

/// `text` cut into pieces of about `size` bytes, at character boundaries.
fn deltas(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(text.len() / size.max(1) + 1);
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + size.max(1)).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[at..end]);
        at = end;
    }
    out
}

/// Median of five alternating runs of each side, in seconds.
fn time_both(deltas: &[&str], masker: &Masker) -> (f64, f64, String) {
    let (mut masked_runs, mut copy_runs) = (Vec::new(), Vec::new());
    let mut streamed = String::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut stream = masker.stream();
        let mut out = String::new();
        for d in deltas {
            out.push_str(&stream.feed(d));
        }
        out.push_str(&stream.finish());
        masked_runs.push(start.elapsed().as_secs_f64());
        streamed = out;

        let start = Instant::now();
        let mut copy = String::new();
        for d in deltas {
            // One allocation per delta, as `feed` returns an owned `String`.
            copy.push_str(&String::from(*d));
        }
        std::hint::black_box(&copy);
        copy_runs.push(start.elapsed().as_secs_f64());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(masked_runs), median(copy_runs), streamed)
}

/// Runs the bench and prints the report (JSON with `json`).
pub fn run(megabytes: usize, delta_bytes: usize, json: bool, out: &mut dyn Write) -> anyhow::Result<MaskReport> {
    let megabytes = megabytes.max(1);
    let (text, secrets) = output(megabytes, 1);
    let deltas = deltas(&text, delta_bytes);
    let masker = Masker::default();
    let (masked_s, copy_s, streamed) = time_both(&deltas, &masker);
    anyhow::ensure!(streamed == masker.mask(&text), "the streamed output differs from masking the whole text");
    let side = |secs: f64| MaskSide {
        ns_per_delta: secs * 1e9 / deltas.len() as f64,
        mb_per_s: text.len() as f64 / 1e6 / secs.max(1e-12),
    };
    let report = MaskReport {
        megabytes,
        delta_bytes,
        deltas: deltas.len(),
        secrets,
        masker: side(masked_s),
        reference: side(copy_s),
        ratio: masked_s / copy_s.max(1e-12),
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "{} deltas of {} bytes ({} MB, {} secrets)\n  StreamMasker: {:.0} ns/delta, {:.1} MB/s\n  reference (push_str copy): {:.0} ns/delta, {:.1} MB/s\n  ratio: {:.1}x",
            report.deltas,
            delta_bytes,
            megabytes,
            secrets,
            report.masker.ns_per_delta,
            report.masker.mb_per_s,
            report.reference.ns_per_delta,
            report.reference.mb_per_s,
            report.ratio
        )?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_cover_the_text_at_char_boundaries() {
        let text = "héllo wörld, ünïcode";
        let parts = deltas(text, 3);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn the_bench_masks_every_secret_it_plants() {
        let (text, secrets) = output(1, 1);
        assert!(secrets > 100, "{secrets} secrets");
        let masked = Masker::default().mask(&text);
        assert!(!masked.contains("hunter2") && !masked.contains("ghp_"), "a planted secret was not masked");
        assert!(!masked.contains("kHUpUgvq") && !masked.contains("MIIEvQIB"), "a planted secret was not masked");
    }
}
