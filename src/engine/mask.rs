//! Secret masking for text that leaves the host.
//!
//! Agent output and chat text are streamed to remotes. A [`Masker`] replaces anything that looks
//! like a secret (private keys, well-known API key formats, `password=…` style pairs, plus the
//! host's own patterns) with [`MASK`] before it is sent.
//!
//! Streaming is the hard part: a key may arrive split across two deltas (`"sk-an"`, `"t-api03…"`),
//! and neither half matches on its own. A [`StreamMasker`] therefore holds back the tail of the
//! text that could still turn into a secret and releases it once that is decided. "Could still"
//! is decided exactly, not with a fixed window: each pattern is also compiled into a lazy DFA, and
//! text is released up to the first position from which an anchored run of any pattern's DFA is
//! still alive at the end of the buffer. (One DFA per pattern, not one for all: a multi-pattern
//! leftmost-first DFA drops lower-priority patterns once a higher one matched, and would report
//! a run as finished while another pattern could still extend it.) Everything before that position is fully determined by the
//! text already seen, so the streamed output equals masking the whole text at once, however it
//! was split (a property test checks this). In practice only the current word is held back, or a
//! whole `-----BEGIN … PRIVATE KEY-----` block until its `END` line arrives.
//!
//! A pattern with a capture group named `secret` masks only that group (so `password=hunter22`
//! becomes `password=[masked]`); otherwise the whole match is masked. Overlapping matches are
//! merged into one `[masked]`.

use regex::Regex;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::{Anchored, Input};
use std::sync::Arc;

/// What a secret is replaced with.
pub const MASK: &str = "[masked]";

/// The built-in patterns as `(name, regex)`.
///
/// Word boundaries are written `(?-u:\b)` (ASCII): a Unicode `\b` would make the lazy DFA give up
/// on non-ASCII text, which makes the stream masker hold text back conservatively.
pub const DEFAULT_PATTERNS: &[(&str, &str)] = &[
    (
        // A PEM/PGP private key block. An unterminated block masks everything after BEGIN.
        "private_key_block",
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|[\s\S]*)",
    ),
    // Anthropic (`sk-ant-…`) and OpenAI (`sk-…`, `sk-proj-…`) keys.
    ("sk_api_key", r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}"),
    // GitHub tokens: personal (ghp_), OAuth (gho_), user/server (ghu_, ghs_), refresh (ghr_).
    ("github_token", r"(?-u:\b)gh[pousr]_[A-Za-z0-9]{30,}"),
    ("github_fine_grained_pat", r"(?-u:\b)github_pat_[A-Za-z0-9_]{30,}"),
    ("aws_access_key_id", r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}"),
    ("slack_token", r"(?-u:\b)xox[baprs]-[A-Za-z0-9-]{10,}"),
    ("google_api_key", r"(?-u:\b)AIza[0-9A-Za-z_-]{35}"),
    (
        // `password: "x"`, `"token": "x"`, `API_KEY = 'x'`: a quoted value of any length. The key
        // may end a longer name (`DB_PASSWORD`, `client_secret`); only the value is masked.
        "quoted_secret_pair",
        r#"(?i)(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?)["']?[ \t]{0,5}[:=][ \t]{0,5}(?P<secret>"[^"\r\n]+"|'[^'\r\n]+')"#,
    ),
    (
        // `password=hunter22`, `DB_PASSWORD=…`, `secret: …` with an unquoted value of at least 8
        // characters. `=` must be unspaced (so `let token = parse(x)` in code stays readable) and
        // brackets end the value (so `token: Option<String>` is not a secret).
        "bare_secret_pair",
        r#"(?i)(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?)["']?(?:=|:[ \t]{0,5})(?P<secret>[^\s"'`,;(){}\[\]<>]{8,})"#,
    ),
];

/// A pattern the masker cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaskError {
    #[error("invalid mask pattern '{pattern}': {message}")]
    Invalid { pattern: String, message: String },
    #[error("mask pattern '{pattern}' can match empty text; it must match at least one character")]
    MatchesEmpty { pattern: String },
}

#[derive(Debug)]
struct Pattern {
    regex: Regex,
    /// Index of the `secret` capture group, when the pattern has one.
    secret_group: Option<usize>,
}

#[derive(Debug)]
struct Inner {
    patterns: Vec<Pattern>,
    /// The lazy DFA of each pattern, used to decide what a stream must hold back.
    dfas: Vec<DFA>,
    /// Per pattern, the bytes a match can start with (a cheap pre-check before running the DFA).
    first_bytes: Vec<[bool; 256]>,
}

/// Replaces secrets in text with [`MASK`]. Cheap to clone (shared, immutable).
#[derive(Clone, Debug)]
pub struct Masker {
    inner: Arc<Inner>,
}

impl Default for Masker {
    /// The built-in patterns only.
    fn default() -> Self {
        Masker::shared(&[]).expect("the built-in mask patterns are valid")
    }
}

impl Masker {
    /// The built-in [`DEFAULT_PATTERNS`] plus the host's `extra` regexes (Rust `regex` syntax; a
    /// group named `secret` masks only that group).
    pub fn new(extra: &[String]) -> Result<Masker, MaskError> {
        let all: Vec<&str> = DEFAULT_PATTERNS.iter().map(|(_, p)| *p).chain(extra.iter().map(String::as_str)).collect();
        Masker::with_patterns(&all)
    }

    /// Like [`Masker::new`], but compiled once per process for each distinct pattern list and
    /// shared afterwards (compiling the patterns' regexes and DFAs dominated building an engine:
    /// the simulator and the scenario runner build thousands). Maskers are immutable, so sharing
    /// changes nothing but the cost.
    pub fn shared(extra: &[String]) -> Result<Masker, MaskError> {
        static CACHE: std::sync::OnceLock<std::sync::Mutex<std::collections::BTreeMap<Vec<String>, Masker>>> =
            std::sync::OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(m) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(extra) {
            return Ok(m.clone());
        }
        let masker = Masker::new(extra)?;
        cache.lock().unwrap_or_else(|e| e.into_inner()).insert(extra.to_vec(), masker.clone());
        Ok(masker)
    }

    /// A masker using exactly `patterns` (no built-in ones).
    pub fn with_patterns(patterns: &[&str]) -> Result<Masker, MaskError> {
        let invalid = |pattern: &str, e: &dyn std::fmt::Display| MaskError::Invalid {
            pattern: pattern.to_string(),
            message: e.to_string(),
        };
        let mut compiled = Vec::with_capacity(patterns.len());
        let mut dfas = Vec::with_capacity(patterns.len());
        for &pattern in patterns {
            let hir = regex_automata::util::syntax::parse(pattern).map_err(|e| invalid(pattern, &e))?;
            if hir.properties().minimum_len() == Some(0) {
                return Err(MaskError::MatchesEmpty { pattern: pattern.to_string() });
            }
            let regex = Regex::new(pattern).map_err(|e| invalid(pattern, &e))?;
            let secret_group = regex.capture_names().position(|n| n == Some("secret"));
            compiled.push(Pattern { regex, secret_group });
            let dfa = DFA::builder()
                .configure(DFA::config().unicode_word_boundary(true))
                .build(pattern)
                .map_err(|e| invalid(pattern, &e))?;
            dfas.push(dfa);
        }
        let first_bytes = dfas.iter().map(first_bytes).collect();
        Ok(Masker { inner: Arc::new(Inner { patterns: compiled, dfas, first_bytes }) })
    }

    /// Masks every secret in `text`.
    pub fn mask(&self, text: &str) -> String {
        self.render(text, 0, text.len())
    }

    /// A streaming masker for one stream of text (e.g. one agent turn).
    pub fn stream(&self) -> StreamMasker {
        StreamMasker {
            caches: self.inner.dfas.iter().map(DFA::create_cache).collect(),
            masker: self.clone(),
            buf: String::new(),
            scan: 0,
            dead_until: 0,
        }
    }

    /// Every match `(start, end)` of every pattern that starts in `from..before`, scanning `hay`
    /// from `from` (text before `from` is look-behind context only).
    fn matches(&self, hay: &str, from: usize, before: usize) -> Vec<(usize, usize, usize, usize)> {
        let mut out = Vec::new();
        for pattern in &self.inner.patterns {
            let mut at = from;
            while at < before {
                let found = match pattern.secret_group {
                    None => pattern.regex.find_at(hay, at).map(|m| (m.start(), m.end(), m.start(), m.end())),
                    Some(group) => pattern.regex.captures_at(hay, at).map(|c| {
                        let whole = c.get(0).expect("group 0 always participates");
                        let (s, e) = c.get(group).map_or((whole.end(), whole.end()), |g| (g.start(), g.end()));
                        (whole.start(), whole.end(), s, e)
                    }),
                };
                let Some(m) = found else { break };
                if m.0 >= before {
                    break;
                }
                out.push(m);
                // Matches are never empty (checked at construction), so this always advances.
                at = m.1;
            }
        }
        out
    }

    /// Masks `hay[from..to]`, with `hay[..from]` as look-behind context.
    fn render(&self, hay: &str, from: usize, to: usize) -> String {
        let mut secrets: Vec<(usize, usize)> =
            self.matches(hay, from, to).into_iter().map(|(_, _, s, e)| (s, e.min(to))).filter(|(s, e)| s < e).collect();
        secrets.sort_unstable();
        let mut out = String::with_capacity(to - from);
        let mut pos = from;
        let mut i = 0;
        while i < secrets.len() {
            let (start, mut end) = secrets[i];
            i += 1;
            // Merge overlapping (not merely adjacent) spans, so the result does not depend on
            // where a stream was cut.
            while i < secrets.len() && secrets[i].0 < end {
                end = end.max(secrets[i].1);
                i += 1;
            }
            out.push_str(&hay[pos..start]);
            out.push_str(MASK);
            pos = end;
        }
        out.push_str(&hay[pos..to]);
        out
    }

    /// Whether an anchored run of any pattern from `start` is still alive at the end of `hay`,
    /// i.e. text from `start` might still become (part of) a match.
    fn alive_from(&self, caches: &mut [Cache], hay: &str, start: usize) -> bool {
        let first = hay.as_bytes()[start];
        let inner = &self.inner;
        inner
            .dfas
            .iter()
            .zip(&inner.first_bytes)
            .zip(caches.iter_mut())
            .any(|((dfa, firsts), cache)| firsts[usize::from(first)] && Self::dfa_alive_from(dfa, cache, hay, start))
    }

    /// One pattern's anchored run from `start`: errors and quits count as alive (holding back
    /// more is always safe).
    fn dfa_alive_from(dfa: &DFA, cache: &mut Cache, hay: &str, start: usize) -> bool {
        let input = Input::new(hay).range(start..).anchored(Anchored::Yes);
        let Ok(mut sid) = dfa.start_state_forward(cache, &input) else { return true };
        for &byte in &hay.as_bytes()[start..] {
            if sid.is_dead() {
                return false;
            }
            if sid.is_quit() {
                return true;
            }
            match dfa.next_state(cache, sid, byte) {
                Ok(next) => sid = next,
                Err(_) => return true,
            }
        }
        !sid.is_dead()
    }
}

/// The bytes that can begin a match of `dfa`, whatever precedes them. All bytes when that cannot
/// be worked out (a Unicode `\b` after non-ASCII text makes the lazy DFA give up).
fn first_bytes(dfa: &DFA) -> [bool; 256] {
    let mut cache = dfa.create_cache();
    let mut table = [false; 256];
    let look_behinds = std::iter::once(None).chain((0..=u8::MAX).map(Some));
    for look_behind in look_behinds {
        let config = regex_automata::util::start::Config::new().anchored(Anchored::Yes).look_behind(look_behind);
        let Ok(start) = dfa.start_state(&mut cache, &config) else { return [true; 256] };
        for byte in 0..=u8::MAX {
            let slot = &mut table[usize::from(byte)];
            if !*slot {
                *slot = dfa.next_state(&mut cache, start, byte).map_or(true, |next| !next.is_dead());
            }
        }
    }
    table
}

/// Masks a stream of text chunks: [`feed`](StreamMasker::feed) returns what is safe to send now,
/// [`finish`](StreamMasker::finish) the rest. Concatenated, the output equals
/// [`Masker::mask`] of the concatenated input.
pub struct StreamMasker {
    masker: Masker,
    caches: Vec<Cache>,
    /// Held-back text, preceded by one character of already-sent context (for `\b`).
    buf: String,
    /// Where the held-back text starts in `buf`.
    scan: usize,
    /// Every start position in `scan..dead_until` is known not to begin a match.
    dead_until: usize,
}

impl std::fmt::Debug for StreamMasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMasker").field("held_back_bytes", &(self.buf.len() - self.scan)).finish()
    }
}

impl StreamMasker {
    /// Adds a chunk; returns the masked text that can be sent now (possibly empty).
    pub fn feed(&mut self, chunk: &str) -> String {
        self.buf.push_str(chunk);
        let masker = &self.masker;
        let hay = self.buf.as_str();

        // The first position that may still start a match. Starts before it are dead within
        // the buffer, so their outcome no longer depends on future text.
        let mut cut = self.dead_until.max(self.scan);
        while cut < hay.len() {
            if hay.is_char_boundary(cut) && masker.alive_from(&mut self.caches, hay, cut) {
                break;
            }
            cut += 1;
        }
        self.dead_until = cut;

        // Never cut through a match: the next feed rescans from the cut, which must be a point
        // where every pattern's left-to-right scan is between matches.
        let matches = masker.matches(hay, self.scan, cut);
        loop {
            let inside = matches.iter().filter(|m| m.0 < cut && cut < m.1).map(|m| m.0).min();
            match inside {
                Some(start) => cut = start,
                None => break,
            }
        }

        let out = masker.render(hay, self.scan, cut);
        // Keep one character before the cut as look-behind context.
        let keep_from = hay[..cut].char_indices().next_back().map_or(cut, |(i, _)| i);
        self.buf.drain(..keep_from);
        self.scan = cut - keep_from;
        self.dead_until -= keep_from;
        out
    }

    /// Ends the stream: returns the masked held-back text and resets the masker.
    pub fn finish(&mut self) -> String {
        let out = self.masker.render(&self.buf, self.scan, self.buf.len());
        self.buf.clear();
        self.scan = 0;
        self.dead_until = 0;
        out
    }

    /// How many bytes are currently held back.
    pub fn pending_len(&self) -> usize {
        self.buf.len() - self.scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mask(text: &str) -> String {
        Masker::default().mask(text)
    }

    #[test]
    fn well_known_api_keys_are_masked() {
        let cases = [
            "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx",
            "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-1234567890-abcdefghij",
            "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
        ];
        for key in cases {
            assert_eq!(mask(&format!("key {key} here")), "key [masked] here", "{key}");
        }
    }

    #[test]
    fn private_key_blocks_are_masked_whole() {
        let text = "before\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkt\nAAAA\n-----END OPENSSH PRIVATE KEY-----\nafter";
        assert_eq!(mask(text), "before\n[masked]\nafter");
        let unterminated = "x -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA";
        assert_eq!(mask(unterminated), "x [masked]");
    }

    #[test]
    fn secret_pairs_keep_the_key_and_mask_the_value() {
        assert_eq!(mask("DB_PASSWORD=hunter2hunter2 rest"), "DB_PASSWORD=[masked] rest");
        assert_eq!(mask("client_secret: abcdefgh123"), "client_secret: [masked]");
        assert_eq!(mask(r#"{"token": "abc"}"#), r#"{"token": [masked]}"#);
        assert_eq!(mask("api_key = 'xyz'"), "api_key = [masked]");
    }

    #[test]
    fn ordinary_code_and_prose_are_left_alone() {
        for text in [
            "let token = parse(header);",
            "token: Option<String>,",
            "the task-abcdefghijklmnopqrstuvwxyz is done",
            "max_tokens: 1024",
            "Passwords should be long.",
        ] {
            assert_eq!(mask(text), text);
        }
    }

    #[test]
    fn host_patterns_are_added_to_the_defaults() {
        let m = Masker::new(&["internal-[0-9]{6}".to_string(), r"pin=(?P<secret>\d{4})".to_string()]).unwrap();
        assert_eq!(m.mask("id internal-123456 pin=1234 sk-abcdefghijklmnopqrstu"), "id [masked] pin=[masked] [masked]");
    }

    #[test]
    fn shared_maskers_are_compiled_once_per_pattern_list_and_mask_the_same() {
        let a = vec!["shared-test-[0-9]{4}".to_string()];
        let b = vec!["other-test-[0-9]{4}".to_string()];
        let (m1, m2, m3) = (Masker::shared(&a).unwrap(), Masker::shared(&a).unwrap(), Masker::shared(&b).unwrap());
        assert!(Arc::ptr_eq(&m1.inner, &m2.inner), "the same list is compiled once");
        assert!(!Arc::ptr_eq(&m1.inner, &m3.inner), "a different list gets its own masker");
        let text = "shared-test-1234 other-test-5678 sk-abcdefghijklmnopqrstu";
        assert_eq!(m1.mask(text), Masker::new(&a).unwrap().mask(text));
        assert_eq!(m1.mask(text), "[masked] other-test-5678 [masked]");
        assert_eq!(m3.mask(text), "shared-test-1234 [masked] [masked]");
        assert!(matches!(Masker::shared(&["(".to_string()]), Err(MaskError::Invalid { .. })));
    }

    #[test]
    fn invalid_or_empty_matching_host_patterns_are_rejected() {
        assert!(matches!(Masker::new(&["(".to_string()]), Err(MaskError::Invalid { .. })));
        assert_eq!(Masker::new(&["a*".to_string()]).unwrap_err(), MaskError::MatchesEmpty { pattern: "a*".into() });
    }

    #[test]
    fn a_key_split_across_chunks_is_still_masked() {
        let m = Masker::default();
        let mut s = m.stream();
        let mut out = String::new();
        for chunk in ["Your key is sk-an", "t-api03-AbCdEfGhIj", "KlMnOpQrSt and ", "more"] {
            let part = s.feed(chunk);
            assert!(!part.contains("sk-an"), "leaked a key prefix: {part:?}");
            out.push_str(&part);
        }
        out.push_str(&s.finish());
        assert_eq!(out, "Your key is [masked] and more");
    }

    #[test]
    fn plain_text_streams_without_waiting_for_the_end() {
        let m = Masker::default();
        let mut s = m.stream();
        let out = s.feed("Hello there, this is a normal reply ");
        // Only the trailing partial word may be held back.
        assert!(out.starts_with("Hello there, this is a normal"), "{out:?}");
        assert!(s.pending_len() < 16, "held back {} bytes", s.pending_len());
    }

    #[test]
    fn a_private_key_block_is_held_until_its_end_line() {
        let m = Masker::default();
        let mut s = m.stream();
        let mut out = s.feed("ok -----BEGIN PRIVATE KEY-----\nMIIEvQ");
        assert_eq!(out, "ok ");
        out.push_str(&s.feed("IBADANBg\n-----END PRIVATE KEY-----\nbye "));
        out.push_str(&s.finish());
        assert_eq!(out, "ok [masked]\nbye ");
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("sk-ant-api03-AbCdEfGhIjKlMnOpQrSt".to_string()),
            Just("ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789".to_string()),
            Just("AKIAIOSFODNN7EXAMPLE".to_string()),
            Just("password=hunter2hunter2".to_string()),
            Just("\"token\": \"t0k3n\"".to_string()),
            Just("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----".to_string()),
            Just("-----BEGIN PRIVATE KEY-----".to_string()),
            Just("xoxb-123-abcdefghijk".to_string()),
            Just("task-".to_string()),
            Just("sk-".to_string()),
            Just("é".to_string()),
            Just("日本".to_string()),
            "[a-zA-Z0-9 _=:\"'\n.-]{0,12}",
        ]
    }

    fn shared_masker() -> &'static Masker {
        static MASKER: std::sync::OnceLock<Masker> = std::sync::OnceLock::new();
        MASKER.get_or_init(Masker::default)
    }

    proptest! {
        #[test]
        fn streamed_masking_equals_masking_the_whole_text(
            parts in proptest::collection::vec(fragment(), 0..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let text: String = parts.concat();
            let m = shared_masker();
            let expected = m.mask(&text);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(text.len() + 1)).filter(|&p| text.is_char_boundary(p)).collect();
            points.sort_unstable();
            points.dedup();
            let mut stream = m.stream();
            let mut out = String::new();
            let mut last = 0;
            for p in points {
                out.push_str(&stream.feed(&text[last..p]));
                last = p;
            }
            out.push_str(&stream.feed(&text[last..]));
            out.push_str(&stream.finish());
            prop_assert_eq!(out, expected);
        }
    }
}
