//! Secret masking for text that leaves the host.
//!
//! Agent output and chat text are streamed to remotes. A [`Masker`] replaces anything that looks
//! like a secret (private keys, provider tokens and keys, JWTs, `password=…` style pairs,
//! `Authorization:` headers, passwords in URLs — the list is [`BUILTIN_PATTERNS`] — plus the
//! host's own patterns) with [`MASK`] before it is sent.
//!
//! Scanning only what can match: each built-in pattern names the literals (*triggers*) every
//! match contains and how far after the match start they sit (`sk_live_` at 0; `:AA` 8–10 bytes
//! into a Telegram token). One Aho-Corasick automaton of all triggers (ASCII-case-insensitive;
//! case-sensitive triggers are compared exactly after a hit) finds, in a single pass, every
//! position where a match can start, and a pattern's regex is run anchored only there. A host's
//! pattern gets the prefix literals `regex-syntax` extracts from it, or, without usable ones, is
//! searched everywhere as before. Per pattern the matches are exactly those a left-to-right
//! search finds (a test compares the two on every sample and on random text).
//!
//! Streaming is the hard part: a key may arrive split across two deltas (`"sk-an"`, `"t-api03…"`),
//! and neither half matches on its own. A [`StreamMasker`] therefore holds back the tail of the
//! text that could still turn into a secret and releases it once that is decided. "Could still"
//! is decided exactly, not with a fixed window: each pattern is also compiled into a lazy DFA, and
//! text is released up to the first position from which an anchored run of any pattern's DFA is
//! still alive at the end of the buffer. (One DFA per pattern, not one for all: a multi-pattern
//! leftmost-first DFA drops lower-priority patterns once a higher one matched, and would report
//! a run as finished while another pattern could still extend it.) The triggers bound where that
//! position can be: a pattern's run can only be alive from a start its trigger hits give, or from
//! a start so close to the end of the buffer that its trigger has not fully arrived (within
//! `back` + the trigger's length); only those positions are tried, so a delta costs one
//! Aho-Corasick pass plus a few DFA runs, however many patterns there are. Everything before that
//! position is fully determined by the text already seen, so the streamed output equals masking
//! the whole text at once, however it was split (a property test checks this, and in tests every
//! fed chunk's cut is compared with trying every pattern at every position). In practice only the
//! current word is held back, or a whole `-----BEGIN … PRIVATE KEY-----` block until its `END`
//! line arrives — or, without one, until the key material after `BEGIN` (base64 lines) ends:
//! the first other line releases it, so an unterminated block hides only its key lines and is
//! shown as [`MASK_UNTERMINATED_KEY`].
//!
//! A pattern with a capture group named `secret` masks only that group (so `password=hunter22`
//! becomes `password=[masked]`); otherwise the whole match is masked. Overlapping matches are
//! merged into one `[masked]`.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};
use std::sync::Arc;

pub use super::mask_patterns::{BuiltinPattern, BUILTIN_PATTERNS};

/// What a secret is replaced with.
pub const MASK: &str = "[masked]";

/// What a `-----BEGIN … PRIVATE KEY-----` block without an `END` line is replaced with: its
/// lines of key material are masked, and the room learns that the block was cut short.
pub const MASK_UNTERMINATED_KEY: &str = "[masked: private key block without an END line]";

/// A pattern the masker cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaskError {
    #[error("invalid mask pattern '{pattern}': {message}")]
    Invalid { pattern: String, message: String },
    #[error("mask pattern '{pattern}' can match empty text; it must match at least one character")]
    MatchesEmpty { pattern: String },
}

/// A match: `(start, end)` of the whole match, then `(start, end)` of what is masked.
type Found = (usize, usize, usize, usize);

#[derive(Debug)]
struct Pattern {
    regex: Regex,
    /// Index of the `secret` capture group, when the pattern has one.
    secret_group: Option<usize>,
}

/// One trigger literal of one pattern, as registered in the prefilter's automaton.
#[derive(Debug)]
struct Trigger {
    pattern: usize,
    /// Compared exactly after an ASCII-case-insensitive hit, unless the pattern ignores case.
    literal: Option<Box<[u8]>>,
    /// A match starts `back.0..=back.1` bytes before the trigger.
    back: (usize, usize),
}

/// Finds where matches can start: one Aho-Corasick pass over every pattern's triggers.
#[derive(Debug)]
struct Prefilter {
    /// All triggers, ASCII-case-insensitive, reporting overlapping hits.
    automaton: AhoCorasick,
    /// By the automaton's pattern id.
    triggers: Vec<Trigger>,
    /// Patterns without triggers (a host's pattern with no literal prefix): searched everywhere.
    unfiltered: Vec<usize>,
}

#[derive(Debug)]
struct Inner {
    patterns: Vec<Pattern>,
    prefilter: Prefilter,
    /// The lazy DFA of each pattern, used to decide what a stream must hold back.
    dfas: Vec<DFA>,
    /// Per pattern, the bytes a match can start with (a cheap pre-check before running the DFA).
    first_bytes: Vec<[bool; 256]>,
    /// Per byte, the patterns a match can start with it (`first_bytes` turned around).
    starters: Vec<Vec<usize>>,
    /// Per pattern, how close to the end of a stream's buffer a start must be for its trigger
    /// to be still incomplete (`back.1` + the longest trigger − 1); `usize::MAX` for patterns
    /// without triggers.
    windows: Vec<usize>,
    /// The largest finite window.
    tail: usize,
}

/// A pattern to compile: its regex and, when known, the triggers that locate its matches.
struct Spec<'a> {
    regex: &'a str,
    triggers: Option<Triggers>,
}

/// The literals that locate a pattern's matches (see [`BuiltinPattern`]).
struct Triggers {
    literals: Vec<Vec<u8>>,
    ignore_case: bool,
    back: (usize, usize),
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
    /// The built-in [`BUILTIN_PATTERNS`] plus the host's `extra` regexes (Rust `regex` syntax; a
    /// group named `secret` masks only that group).
    pub fn new(extra: &[String]) -> Result<Masker, MaskError> {
        let builtin = BUILTIN_PATTERNS.iter().map(|p| Spec {
            regex: p.regex,
            triggers: Some(Triggers {
                literals: p.triggers.iter().map(|t| t.as_bytes().to_vec()).collect(),
                ignore_case: p.ignore_case,
                back: p.back,
            }),
        });
        let extra = extra.iter().map(|p| Spec { regex: p, triggers: None });
        Masker::build(builtin.chain(extra).collect(), true)
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
        Masker::build(patterns.iter().map(|p| Spec { regex: p, triggers: None }).collect(), true)
    }

    /// Compiles `specs`. Without `prefilter`, every pattern is searched everywhere (what the
    /// prefilter must be equivalent to; tests compare the two).
    fn build(specs: Vec<Spec<'_>>, prefilter: bool) -> Result<Masker, MaskError> {
        let invalid = |pattern: &str, e: &dyn std::fmt::Display| MaskError::Invalid {
            pattern: pattern.to_string(),
            message: e.to_string(),
        };
        let mut compiled = Vec::with_capacity(specs.len());
        let mut dfas = Vec::with_capacity(specs.len());
        let mut literals: Vec<Vec<u8>> = Vec::new();
        let mut triggers = Vec::new();
        let mut unfiltered = Vec::new();
        let mut windows = Vec::with_capacity(specs.len());
        for (index, spec) in specs.into_iter().enumerate() {
            let pattern = spec.regex;
            let hir = regex_automata::util::syntax::parse(pattern).map_err(|e| invalid(pattern, &e))?;
            if hir.properties().minimum_len() == Some(0) {
                return Err(MaskError::MatchesEmpty { pattern: pattern.to_string() });
            }
            let regex = Regex::new(pattern).map_err(|e| invalid(pattern, &e))?;
            let secret_group = regex.group_info().to_index(regex_automata::PatternID::ZERO, "secret");
            compiled.push(Pattern { regex, secret_group });
            let dfa = DFA::builder()
                .configure(DFA::config().unicode_word_boundary(true))
                .build(pattern)
                .map_err(|e| invalid(pattern, &e))?;
            dfas.push(dfa);
            let found = spec.triggers.or_else(|| {
                prefix_literals(&hir).map(|literals| Triggers { literals, ignore_case: false, back: (0, 0) })
            });
            match found.filter(|_| prefilter) {
                Some(found) => {
                    let longest = found.literals.iter().map(Vec::len).max().unwrap_or(0);
                    windows.push((found.back.1 + longest).saturating_sub(1));
                    for lit in found.literals {
                        let literal = (!found.ignore_case).then(|| lit.clone().into_boxed_slice());
                        triggers.push(Trigger { pattern: index, literal, back: found.back });
                        literals.push(lit);
                    }
                }
                None => {
                    windows.push(usize::MAX);
                    unfiltered.push(index);
                }
            }
        }
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            // A full DFA: the fastest scan (a few hundred trigger bytes make it small).
            .kind(Some(AhoCorasickKind::DFA))
            .build(&literals)
            .map_err(|e| invalid("(triggers)", &e))?;
        let first_bytes: Vec<[bool; 256]> = dfas.iter().map(first_bytes).collect();
        let starters =
            (0..256).map(|b| (0..first_bytes.len()).filter(|&p| first_bytes[p][b]).collect()).collect::<Vec<_>>();
        let prefilter = Prefilter { automaton, triggers, unfiltered };
        let tail = windows.iter().copied().filter(|&w| w != usize::MAX).max().unwrap_or(0);
        let inner = Inner { patterns: compiled, prefilter, dfas, first_bytes, starters, windows, tail };
        Ok(Masker { inner: Arc::new(inner) })
    }

    /// Masks every secret in `text`.
    pub fn mask(&self, text: &str) -> String {
        let matches = self.matches(text, 0, text.len(), &self.starts(text, 0));
        self.render(text, 0, text.len(), &matches)
    }

    /// The byte ranges of `text` covered by a match (whole matches, overlapping ones merged),
    /// sorted. Cutting `text` inside one would leave part of a secret on each side, where neither
    /// half matches any more: cuts belong outside them.
    pub fn spans(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        let mut found: Vec<(usize, usize)> =
            self.matches(text, 0, text.len(), &self.starts(text, 0)).iter().map(|&(s, e, _, _)| (s, e)).collect();
        found.sort_unstable();
        let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
        for (start, end) in found {
            match spans.last_mut() {
                Some(last) if start < last.end => last.end = last.end.max(end),
                _ => spans.push(start..end),
            }
        }
        spans
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

    /// Pattern `index`'s match at `input`'s start (anchored) or after it (unanchored).
    fn find(&self, index: usize, input: &Input<'_>) -> Option<Found> {
        let pattern = &self.inner.patterns[index];
        match pattern.secret_group {
            None => pattern.regex.search(input).map(|m| (m.start(), m.end(), m.start(), m.end())),
            Some(group) => {
                let mut caps = pattern.regex.create_captures();
                pattern.regex.search_captures(input, &mut caps);
                let whole = caps.get_match()?;
                let (s, e) = caps.get_group(group).map_or((whole.end(), whole.end()), |g| (g.start, g.end));
                Some((whole.start(), whole.end(), s, e))
            }
        }
    }

    /// Where matches of pattern-with-triggers can start in `hay[from..]`, as sorted `(pattern,
    /// start)` pairs: `back` bytes before each hit of one of the pattern's triggers (one
    /// Aho-Corasick pass), where the pattern can begin with that byte. A match of such a pattern
    /// starts nowhere else.
    fn starts(&self, hay: &str, from: usize) -> Vec<(usize, usize)> {
        let inner = &*self.inner;
        let prefilter = &inner.prefilter;
        let mut starts: Vec<(usize, usize)> = Vec::new();
        for hit in prefilter.automaton.find_overlapping_iter(aho_corasick::Input::new(hay).range(from..)) {
            let trigger = &prefilter.triggers[hit.pattern().as_usize()];
            if trigger.literal.as_deref().is_some_and(|l| l != &hay.as_bytes()[hit.start()..hit.end()]) {
                continue;
            }
            let firsts = &inner.first_bytes[trigger.pattern];
            for back in trigger.back.0..=trigger.back.1 {
                let Some(start) = hit.start().checked_sub(back) else { break };
                if start >= from && hay.is_char_boundary(start) && firsts[usize::from(hay.as_bytes()[start])] {
                    starts.push((trigger.pattern, start));
                }
            }
        }
        starts.sort_unstable();
        starts.dedup();
        starts
    }

    /// Every match of every pattern that starts in `from..before`, scanning `hay` from `from`
    /// (text before `from` is look-behind context only), given the [`starts`](Self::starts) of
    /// `hay[from..]`. Per pattern, the matches are the ones a left-to-right search finds
    /// (leftmost-first, each search resuming at the previous end).
    fn matches(&self, hay: &str, from: usize, before: usize, starts: &[(usize, usize)]) -> Vec<Found> {
        let mut out = Vec::new();
        if from >= before {
            return out;
        }
        // The leftmost match at or after `at` starts at the first candidate where an anchored
        // search matches, since every match starts at a candidate.
        let mut i = 0;
        while i < starts.len() {
            let index = starts[i].0;
            let mut at = from;
            while i < starts.len() && starts[i].0 == index {
                let start = starts[i].1;
                i += 1;
                if start < at || start >= before {
                    continue;
                }
                let input = Input::new(hay).range(start..).anchored(Anchored::Yes);
                if let Some(m) = self.find(index, &input) {
                    out.push(m);
                    at = m.1;
                }
            }
        }
        for &index in &self.inner.prefilter.unfiltered {
            let mut at = from;
            while at < before {
                let Some(m) = self.find(index, &Input::new(hay).range(at..)) else { break };
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

    /// Masks `hay[from..to]` given its `matches`, with `hay[..from]` as look-behind context.
    fn render(&self, hay: &str, from: usize, to: usize, matches: &[Found]) -> String {
        let mut secrets: Vec<(usize, usize)> =
            matches.iter().filter(|m| m.0 < to).map(|&(_, _, s, e)| (s, e.min(to))).filter(|(s, e)| s < e).collect();
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
            let masked = &hay[start..end];
            let unterminated = masked.contains("-----BEGIN") && !masked.contains("-----END");
            out.push_str(if unterminated { MASK_UNTERMINATED_KEY } else { MASK });
            pos = end;
        }
        out.push_str(&hay[pos..to]);
        out
    }

    /// The first position in `from..` (a stream's held-back text) from which an anchored run of
    /// some pattern is still alive at the end of `hay`, i.e. where text might still become (part
    /// of) a match; `hay.len()` when there is none.
    ///
    /// Only two kinds of position can be alive for a pattern with triggers: a start found from a
    /// trigger hit ([`starts`](Self::starts)), or one so close to the end that its trigger is
    /// not complete yet (within the pattern's window). Patterns without triggers are tried at
    /// every position.
    fn first_alive(&self, caches: &mut [Cache], hay: &str, from: usize, starts: &[(usize, usize)]) -> usize {
        let inner = &*self.inner;
        let end = hay.len();
        let mut best = end;
        let mut i = 0;
        while i < starts.len() {
            let pattern = starts[i].0;
            while i < starts.len() && starts[i].0 == pattern {
                let start = starts[i].1;
                i += 1;
                if start >= best {
                    // Later starts of this pattern cannot be earlier.
                    while i < starts.len() && starts[i].0 == pattern {
                        i += 1;
                    }
                    break;
                }
                if start >= from && Self::dfa_alive_from(&inner.dfas[pattern], &mut caches[pattern], hay, start) {
                    best = start;
                }
            }
        }
        let everywhere = !inner.prefilter.unfiltered.is_empty();
        let first = if everywhere { from } else { from.max(end.saturating_sub(inner.tail)) };
        for start in first..best {
            if !hay.is_char_boundary(start) {
                continue;
            }
            let near_end = end - start;
            let alive = inner.starters[usize::from(hay.as_bytes()[start])].iter().any(|&p| {
                near_end <= inner.windows[p] && Self::dfa_alive_from(&inner.dfas[p], &mut caches[p], hay, start)
            });
            if alive {
                return start;
            }
        }
        best
    }

    /// [`first_alive`](Self::first_alive) by trying every pattern at every position (what it
    /// must equal; tests compare the two).
    #[cfg(test)]
    fn first_alive_everywhere(&self, caches: &mut [Cache], hay: &str, from: usize) -> usize {
        let inner = &*self.inner;
        (from..hay.len())
            .find(|&start| {
                hay.is_char_boundary(start)
                    && inner.starters[usize::from(hay.as_bytes()[start])]
                        .iter()
                        .any(|&p| Self::dfa_alive_from(&inner.dfas[p], &mut caches[p], hay, start))
            })
            .unwrap_or(hay.len())
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

/// The literals every match of `hir` starts with, when they are few and long enough to be worth a
/// prefilter (otherwise the pattern is searched everywhere).
fn prefix_literals(hir: &regex_syntax::hir::Hir) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let mut seq = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
    // Shortens and merges literals (`internal-00`…`internal-99` → `internal-`); the result still
    // begins every match.
    seq.optimize_for_prefix_by_preference();
    let literals = seq.literals()?;
    let usable = !literals.is_empty() && literals.len() <= 64 && literals.iter().all(|l| l.as_bytes().len() >= 2);
    usable.then(|| literals.iter().map(|l| l.as_bytes().to_vec()).collect())
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
        let starts = masker.starts(hay, self.scan);
        let from = self.dead_until.max(self.scan);
        let mut cut = masker.first_alive(&mut self.caches, hay, from, &starts);
        #[cfg(test)]
        assert_eq!(cut, masker.first_alive_everywhere(&mut self.caches, hay, from), "held back from {hay:?}");
        self.dead_until = cut;

        // Never cut through a match: the next feed rescans from the cut, which must be a point
        // where every pattern's left-to-right scan is between matches.
        let mut matches = masker.matches(hay, self.scan, cut, &starts);
        loop {
            let inside = matches.iter().filter(|m| m.0 < cut && cut < m.1).map(|m| m.0).min();
            match inside {
                Some(start) => cut = start,
                None => break,
            }
        }

        // The matches starting before the new cut are the same as a search up to it would find.
        matches.retain(|m| m.0 < cut);
        let out = masker.render(hay, self.scan, cut, &matches);
        // Keep one character before the cut as look-behind context.
        let keep_from = hay[..cut].char_indices().next_back().map_or(cut, |(i, _)| i);
        self.buf.drain(..keep_from);
        self.scan = cut - keep_from;
        self.dead_until -= keep_from;
        out
    }

    /// Ends the stream: returns the masked held-back text and resets the masker.
    pub fn finish(&mut self) -> String {
        let starts = self.masker.starts(&self.buf, self.scan);
        let matches = self.masker.matches(&self.buf, self.scan, self.buf.len(), &starts);
        let out = self.masker.render(&self.buf, self.scan, self.buf.len(), &matches);
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

    /// One test per provider or format: the sample is masked as shown, the near miss is left
    /// alone. The samples also feed the streaming property test.
    macro_rules! secret_formats {
        ($($name:ident: $secret:expr => $masked:expr, near miss $near:expr;)*) => {
            $(
                #[test]
                fn $name() {
                    assert_eq!(mask($secret), $masked, "sample");
                    assert_eq!(mask($near), $near, "near miss");
                }
            )*
            const SAMPLES: &[&str] = &[$($secret),*];
        };
    }

    secret_formats! {
    ini_password_with_spaces: "[client]\nuser = app\npassword = s3cr3t-Pa55word\n" => "[client]\nuser = app\npassword = [masked]\n", near miss "let token = parse(x);\ntoken: Option<String>,\nlet password = prompt_password()?;";
    pypirc_password: "[pypi]\nusername = __token__\npassword = pypi-AgEIcHlwaS5vcmcCJGI4YjQ2ZWY0LTk2NmEtNDVjNy04ZjZhLTc3ZDk1ZDIxNGQ0MAACKl\n" => "[pypi]\nusername = __token__\npassword = [masked]\n", near miss "password = input(\"Password: \")";
    spaced_assignment_with_comment: "DB_PASSWORD = hunter2hunter2  # prod\r\n" => "DB_PASSWORD = [masked]  # prod\r\n", near miss "    let secret = generate_secret(&mut rng);";
    authorization_bearer_header: "curl -H 'Authorization: Bearer abcdef0123456789ABCDEF' https://api.example.com" => "curl -H 'Authorization: Bearer [masked]' https://api.example.com", near miss "curl -H \"Authorization: Bearer $TOKEN\" and the Authorization header";
    authorization_basic_header: "Authorization: Basic dXNlcjpwYXNzd29yZA==\r\n" => "Authorization: Basic [masked]\r\n", near miss "authorization: Option<String>,";
    authorization_json_header: r#"{"Authorization": "token ghs_notlongenough"}"# => r#"{"Authorization": "token [masked]"}"#, near miss r#"headers.insert("Authorization", value);"#;
    bearer_token_in_text: "use Bearer abcdefghijklmnopqrstuvwxyz0123 here" => "use Bearer [masked] here", near miss "the bearer of bad news";
    url_credentials: "git clone https://deploy:gh0st-Pa55@git.example.com/x.git" => "git clone https://deploy:[masked]@git.example.com/x.git", near miss "see http://localhost:8080/path?a=b and git@github.com:org/repo.git";
    url_credentials_without_user: "redis://:s3cret@cache:6379/0" => "redis://:[masked]@cache:6379/0", near miss "ssh://git@example.com/repo";
    stripe_keys: "key sk_live_U8JZpDE0iGXlD6gNCFbaEPFj and rk_live_bD0kH8Oool8DklZDOCj2ISaJ and sk_test_iHkTj0rLGlkoMXGjtEkDnNfr" => "key [masked] and [masked] and [masked]", near miss "sk_live_ is the live prefix";
    stripe_webhook_secret: "whsec_ibxUdl7dXTPyLsxPFkThf4VucSmEHgaK" => "[masked]", near miss "whsec_ prefix";
    gitlab_tokens: "glpat-wVJ7faC9qEwjky40UVsW gldt-mflzdE1F8ResqEDusTpkr0cS glrt-tY4qWB8dWKnHfDNxSIvPZZ63 GR1348941fFKcZjR4I0b3jRtaWr4Y" => "[masked] [masked] [masked] [masked]", near miss "glpat- and gldt- are GitLab prefixes";
    npm_token: "//registry.npmjs.org/:_authToken=npm_9OJFLJOqOAf1lLQSAJaiXnkU8Is2g8nprvDd" => "//registry.npmjs.org/:_authToken=[masked]", near miss "npm_config_cache=/tmp/npm";
    pypi_token: "pypi-AgEIcHlwaS5vcmcyyzyN9zHYIa4UOrGNATMuDJawTgsu8PO_799nKSNrh9UCauSDmLhuVtcqcYe" => "[masked]", near miss "pypi-server and pypi-AgE";
    huggingface_token: "HF token 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 and 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" => "HF token [masked] and [masked]", near miss "hf_hub_download(repo)";
    groq_key: "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" => "[masked]", near miss "gsk_demo";
    replicate_token: "r8_5dql05ha064gIiJhgB3cxLmAxzJLJenuHjDUr" => "[masked]", near miss "r8_model";
    perplexity_key: "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" => "[masked]", near miss "pplx-api docs";
    xai_key: "xai-7j58M1cIaHZcUEqPbENqTyH5xJ8tpqXJQ4I9dOv8GZ4fKq1OKtbgZVaMWUFuXBVjdctBYVhnSg9EH6yO" => "[masked]", near miss "xai-sdk";
    openai_and_anthropic_keys: "sk-proj-4GFQRC5xLRwI0b26r08QZJi6gkfsUFRDzsLb5ER8 sk-ant-api03-BoFzQFm2OEQ3HdAVja76RnIChtP8HKQDLM7ToThw" => "[masked] [masked]", near miss "sk-learn and task-abcdefghijklmnopqrstuvwxyz";
    aws_secret_access_key: "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n" => "aws_secret_access_key = [masked]\n", near miss "aws_secret_access_key is read from the environment";
    aws_access_key_ids: "AKIAIOSFODNN7EXAMPLE ASIAY34FZKBOKMUTVV7A" => "[masked] [masked]", near miss "AKIA is the prefix of AWS key ids";
    azure_connection_string: "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;EndpointSuffix=core.windows.net" => "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=[masked];EndpointSuffix=core.windows.net", near miss "AccountKey=<your key>;";
    azure_sas_signature: "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=NScgrLRWzBQCABugjMgeP7cGq0pbqfi14ZgTsNOV%3D" => "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=[masked]", near miss "the sig=abc parameter";
    azure_ad_client_secret: "value abc8Q~ZRzsGQBJg3UHKwkflF6XUi5AhuqpfEnb end" => "value [masked] end", near miss "ascii art Q~Q~ here";
    gcp_service_account_private_key: r#"{"type": "service_account", "private_key_id": "abc", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n", "client_email": "x@y.iam.gserviceaccount.com"}"# => r#"{"type": "service_account", "private_key_id": "abc", "private_key": [masked], "client_email": "x@y.iam.gserviceaccount.com"}"#, near miss r#"{"private_key_id": "abc"}"#;
    google_oauth: "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 ya29.kSF2RCdKDFRuNw5GCf_hA6ILI8gJhead6-wJ9kFZJSqgmRB9H_iMb_lk777P" => "[masked] [masked]", near miss "ya29. is Google's prefix";
    digitalocean_token: "dop_v1_692f09e2e8c662248b483b7ffc050fec94dbca3a0aac36098b2cc2bd81831947" => "[masked]", near miss "dop_v1_ prefix";
    alibaba_access_key_id: "LTAIRbgUMxXy9b4BzwoZ648j" => "[masked]", near miss "LTAI prefix";
    heroku_key: "HRKU-aKG05Rk_GQV81rkmghzem9yPVUJa-c5q52RYfLWrLoevhZC0x0awirH-juQb" => "[masked]", near miss "HRKU- prefix";
    databricks_token: "dapi287cced9041dff02cee737443e210471" => "[masked]", near miss "dapi_version = 2";
    doppler_token: "dp.pt.ptT9IoQhobswHGETh8lMYQOymAAiTdR9Up14PehPjPB" => "[masked]", near miss "dp.pt. prefix";
    pulumi_token: "pul-d9106fd287db7f1adbc60926f6967e7893f57fd1" => "[masked]", near miss "pul-request";
    vault_token: "hvs.SyGbDS1GHXy5oOKVqYX7Enwvq4VNAKjKs1Pawtn3LG8Zv5Ypu8D0fzFwE7IHgYIruiqFhojmAIDdN87xg3-Q-XBmTe" => "[masked]", near miss "hvs.example";
    terraform_cloud_token: "U3UdXyymFgMZwK.atlasv1.f0IE9pU2NJhKaM1-5WdR16ePlljivghZ4fXfeTkYpIygfdM7ENA8d5vFldPGYYJvW5h" => "[masked]", near miss "x.atlasv1.y";
    planetscale_token: "pscale_tkn_xxq8AGomtnWNCXVJCNQCmup6N0A0UarXLnTENCyfjeE" => "[masked]", near miss "pscale_tkn_ prefix";
    supabase_key: "sbp_d3c425c8d99d19bdd0b6cc60d5d32cbe54014c2b" => "[masked]", near miss "sbp_ prefix";
    grafana_token: "glsa_vgKJWSKhK7EGYfwzy9zMTI18C6eUDm7o_c257c6f5" => "[masked]", near miss "glsa_ prefix";
    new_relic_key: "NRAK-NCZ7KYWHJPMC9CUHY39T0TP1YX2" => "[masked]", near miss "NRAK- prefix";
    sentry_token: "sntrys_gcLBAnfdPcwnx0d1LzeZGEIWbXFzcggqCCoIF7uUxugFDwg5Yp8yIB2Enus0" => "[masked]", near miss "sntrys_ prefix";
    github_tokens: "ghp_HMI4fS9z6yKryu7OE1WnwQKU5nR50dJQg96e 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" => "[masked] [masked]", near miss "ghp_ prefix";
    atlassian_token: "ATATT3xFfGF0EcTl31uGQ_dFCGAtmNtc0mRau8URBfT5MISizhBHs4-fVAFHDzXeUHNBZS0Z1WnImG9Aw37K5WcNhdEPqhGi3hlbKBVheZUpYxqew88AD3dnbyJVSEDONUsSDDFRFIFIuZIxNfaaOEELk9MQMalor2hCsgkGvp8kD0D3Ms8GbLkV3AZkGAs_ ATBBGfsy0L9flW91gQk8KS0N8sOfKH8oxFfy" => "[masked] [masked]", near miss "ATATT3 prefix";
    buildkite_token: "bkua_3ab3cc2d0b698d5c7e41ba4ea5ee874ae7689447" => "[masked]", near miss "bkua_ prefix";
    docker_hub_token: "dckr_pat_psUepYhNVNZxTSmm3jZNNjax7EB" => "[masked]", near miss "dckr_pat_ prefix";
    square_token: "sq0atp-z3cl7CSgzAf31ddXP63ohM" => "[masked]", near miss "sq0atp- prefix";
    shopify_tokens: "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 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" => "[masked] [masked]", near miss "shpat_ prefix";
    slack_tokens: "xoxb-1234567890-qo10y0adSwjpIx1eWy2ORtYr xapp-1-A0123-QbrLeAzuzRWPpTUefbno" => "[masked] [masked]", near miss "xoxb- prefix";
    slack_webhook: "https://hooks.slack.com/services/T00000000/B00000000/Fq5XJ7T2YDF0k5Uy8Ih1WolA" => "https://hooks.slack.com/services/[masked]", near miss "hooks.slack.com/services/ is the base URL";
    discord_webhook: "https://discord.com/api/webhooks/123456789012345678/BaJlgMSdX5sTazVLmZ-bK4OPh1dR8-H97S_f-VAUp7-l7v21JXuDCFqM9_SEb1QrMur8" => "https://discord.com/api/webhooks/123456789012345678/[masked]", near miss "discord.com/api/webhooks/ docs";
    discord_bot_token: "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs" => "[masked]", near miss "Mr. Smith went to Washington. Then he left.";
    telegram_bot_token: "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" => "bot 123456789:[masked]", near miss "at 12:30:AA the train left";
    twilio_api_key: "SK69dad8199bfca8b6f3a6a9421cc1c930" => "[masked]", near miss "SKU12345 and SKIP";
    sendgrid_key: "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" => "[masked]", near miss "SG.com";
    mailgun_key: "key-9fe8110102c995f1abef543b5dfce8a9" => "[masked]", near miss "a key-value store";
    mailchimp_key: "81a049d7ccc7e90a88d519448fb2fc67-us6" => "[masked]", near miss "0123-us6";
    linear_key: "lin_api_TmDrZdtN7QlwAyYdiFizWxEOZlh5Q41hUeglMMNM" => "[masked]", near miss "lin_api_key";
    postman_key: "PMAK-259bbc471fb3be24a0b80316-f688d3e481a65c2011bef2c328a72c5e5b" => "[masked]", near miss "PMAK-1";
    notion_token: "ntn_9PuOLC8Q8WD5j5B16DQygtvpweDGJUwA8MrvTllcwpGeUX" => "[masked]", near miss "ntn_ prefix";
    figma_token: "figd_gxPv9wV4eSB7YEUcJvR5MxCJ5rpd9OuSqcHX5S4T" => "[masked]", near miss "figd_ prefix";
    age_secret_key: "AGE-SECRET-KEY-13660FP3J42SLX5A78FRD7J8SVHMS00XCJ62RJFPU4GUQJTHMZ6D3TGTWTV" => "[masked]", near miss "AGE-SECRET-KEY-1 is the prefix";
    jwt: "id eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.KL-jWaRYnZBI0Hsqk-LB09RifXuEUvAt5JPtfpwHlN- end" => "id [masked] end", near miss "eyJ is how base64 JSON starts";
    gitlab_session_cookie: "Cookie: _gitlab_session=ylnkmkfjsa23hb7k52t5fqkute8xcnuv" => "Cookie: _gitlab_session=[masked]", near miss "the _gitlab_session cookie";
    sourcegraph_tokens: "sgp_29374f98862f44af_64f877248a7c69c2fba85da7b11eaee212adcfdc sgs_799b94a2080dcc98ecba0c0fe25746e45132170f" => "[masked] [masked]", near miss "sgp_ and sgs_ prefixes";
    sonarqube_tokens: "sqp_15a935342f98eecd4a26454ea97473978e266cfa squ_e4155670789f7a879f907b97b7ca22beebefd713" => "[masked] [masked]", near miss "sqp_ prefix";
    sonar_login: "mvn sonar:sonar -Dsonar.login=k7bt8exmnwjh7n7qxkr72sksjybep4ap655i8owg" => "mvn sonar:sonar -Dsonar.login=[masked]", near miss "-Dsonar.login=$SONAR_TOKEN";
    artifactory_key: "AKCpMOPhvOUlQMXo9LmvlMAoWq9EyJdDIxtmE1VYQVpPkI0W2a8r4RiJeGHHVNpV61CXO6uKm" => "[masked]", near miss "AKCp prefix";
    octopus_deploy_key: "X-Octopus-ApiKey: API-KAX4CIKVR1MHO1SM4ONR1J6O7H" => "X-Octopus-ApiKey: [masked]", near miss "API-VERSION header";
    clojars_token: "CLOJARS_rhaiw0j7awl08siqeng1tjugozpk5hcgr0174gsx1zykjtg4ajb2cqelszkx" => "[masked]", near miss "CLOJARS_USERNAME";
    aws_bedrock_key: "AWS_BEARER_TOKEN_BEDROCK ABSKQmVkcm9ja0FQSUtleS0+gD22p4G0q0p5Q0l118TQNdqDzRmdy2nBO41CYeymUA1vV6IqVjF2dGSz4Xzie/eWZ84AGqZGQWDMVGuROJuz8YCjKUOoHtLp3OigR0mXF8YkycTZNVF5DYU" => "AWS_BEARER_TOKEN_BEDROCK [masked]", near miss "ABSK prefix";
    new_relic_keys: "NRII-r5lgRjeisbYmfFMf5Oo4VSUZ9A2kOrBr NRJS-b3314b95ef43b81a58a" => "[masked] [masked]", near miss "NRII- prefix";
    cloudflare_origin_ca_key: "v1.0-e5fc390082e56274050e2b16-430200cab3b5d037d018aa425d6668c91c7cebcfc4b8e5855c39a2ea4e3c2a2fde4b2d99b2951dd1268ab65183a9f51a05895fc82f679a83d6bc42373c8774078504cdbd3aee8292f3" => "[masked]", near miss "v1.0-beta";
    flyio_tokens: "fo1_ICLXKTMhM_cqIs2fgxL4ssYdg4-8Orl3goU0XYt-qco FlyV1 fm2_n/RGHpyoLxcO2Ogs/6NvdcVHLG4Kl+M+x1Y0p+zeiOIY+GU+CyIH2E93VAlt3+vfZILSWcKRobRgff+HS5jE7HDBj85kDf7wj9J6VkcxMWB/UnyycMFC7u+c" => "[masked] FlyV1 [masked]", near miss "fo1_ prefix";
    datadog_app_key: "DD_APP_KEY=bc5cce28e8b4fe8aae189c083ddd2389324d0bb7" => "DD_APP_KEY=[masked]", near miss "DD_APP_KEY=$DD_APP_KEY";
    algolia_admin_key: "algolia.adminKey: \"85e4def957809d8e06025ba09abae608\"" => "algolia.adminKey: [masked]", near miss "algolia.adminKey: process.env.KEY";
    dynatrace_token: "dt0c01.N85PH04I0QWQ1MDPYGALY2VD.D2K2OM1BOU5LX3YZHWHS9APQMZQ8SSD8DHQL4ODOY38K2F0TFS6XT61XIZOR6DXK" => "[masked]", near miss "dt0c01. prefix";
    openshift_token: "oc login --token=sha256~kG9EY2kdnxvkh44TlS53D1lD5LypM3lTKkkur_d_W1b" => "oc login --token=[masked]", near miss "sha256~ prefix";
    square_access_token: "EAAAZCbV6xRUrz2iP9grMot1m17Zj1JjxOJOD0ziSyloKsLctZfHVhMa683Ek0wG" => "[masked]", near miss "EAAA prefix";
    facebook_page_token: "EAACFitxL3T0rrqZMMGXKshA75iiVsAczerbnmjML7kG5j2XiAO2A1CfiAhiPqR5DwlVjCl3ZOOdi0v7afRC3n1QJJK5Gw679fUczVC04kTwK2z8H6WHXMX718ym" => "[masked]", near miss "EAAC prefix";
    flutterwave_key: "FLWSECK_TEST-2h5061bd7h81835527a42h9bd824c58b-X" => "[masked]", near miss "FLWSECK_TEST- prefix";
    shippo_token: "shippo_live_780ef27d12871e4e77a605dd88345b5610d250ee" => "[masked]", near miss "shippo_live_ prefix";
    easypost_token: "EZAKw2hye9dGnY3KOVjeP8UfKSuS5oKeyZ9Y0VLGM1yTrreyZc1Jyf7eBM" => "[masked]", near miss "EZAK prefix";
    mailgun_new_key: "MAILGUN_API_KEY 023f5b888ce2e70008e064f2f79af012-fd1eabd9-b71b3a3f" => "MAILGUN_API_KEY [masked]", near miss "uuid 9f2b4c1e-1111-4aaa-8bbb-0123456789ab";
    grafana_api_key: "eyJrIjoiu8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzdocJ2isAjIhKtJ0RlgLKOmxgJTeKdNnFRIBXuDL7D" => "[masked]", near miss "eyJrIjoi prefix";
    rubygems_token: "rubygems_b975729fae923d5a4fd12aabfe228f219e9cb0eb53f16947" => "[masked]", near miss "rubygems_org";
    settlemint_token: "sm_pat_zz63FfkCzJr4i0B3" => "[masked]", near miss "sm_pat_ prefix";
    clickhouse_cloud_key: "4b1dJrTAwR4y9ojfljoQoaF1LlqsajAIxNKu8iS2G8" => "[masked]", near miss "commit 4b1d9f0c2e7a66b1d3a0f5c8e2b4d6f8a0c2e4f6";
    intra42_secret: "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" => "[masked]", near miss "s-s4t2ud- prefix";
    teams_webhook: "https://acme.webhook.office.com/webhookb2/6fb008f8-6beb-b273-7f6a-6f0fb23c6f5d@a2cec255-404e-4fb4-4003-4d6608697a8d/IncomingWebhook/41bed440e50454f31af3176813e02ea6/8ef786e4-d3ce-a27d-2693-4b484e73cf57" => "https://acme.webhook.office.com/webhookb2/[masked]", near miss "https://acme.webhook.office.com/webhookb2/";
    sidekiq_secret: "BUNDLE_ENTERPRISE__CONTRIBSYS__COM=5dcad6ba:2b0aee0c" => "BUNDLE_ENTERPRISE__CONTRIBSYS__COM=[masked]", near miss "BUNDLE_ENTERPRISE__CONTRIBSYS__COM=";
    twitter_consumer_key: "TWITTER_CONSUMER_KEY=xvz1evFS4wEEPTGEFPHBog9" => "TWITTER_CONSUMER_KEY=[masked]", near miss "consumer_key: ConsumerKey,";
    gitlab_routable_token: "glpat-Xk3dW9pLmQ2vR7tY1zB5nC8aE4f.01a2b3c4d" => "[masked]", near miss "glpat-.01";
    facebook_app_token: "app token 123456789012345|Ab1cD2eF3gH4iJ5kL6mN7oP8qR9sT0u end" => "app token 123456789012345|[masked] end", near miss "| 123456789012345 | a table cell |";
    mailgun_pubkey: "pubkey-5a8e0f3c9b1d7e2a4f6c8b0d2e4a6c8f" => "[masked]", near miss "pubkey-file";
    brevo_key: "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" => "[masked]", near miss "xkeysib- prefix";
    onepassword_service_account_token: "OP_SERVICE_ACCOUNT_TOKEN ops_eyJjxCcRu6ugX85/PT6ztYiNnV/e0K1qM5poWKbNhugh6fej2LAZz4HA6/2gzG1i3D4Vd23AXv7FDYK6FO/LwnKemboubwJc0IUicYmidP3Lm3NrD/74PJj6Q5ZtGK0g1qntZXVT083RTmWRCAvSdtB/k2OiJOd6ZW/qF01PTuvbca+ETDVDpUrbzuTQlfX0dGm+ZYheyveWk9kZ78f3TcYU3Q+bYZ/G9dotTij+K+yxhZ/i9Dm8ln0qHl4g0FQGrC1Unon1nk4QGt6EgQ6R3ZwSwTRFD0Vm/evNCGRhMDODk+3" => "OP_SERVICE_ACCOUNT_TOKEN [masked]", near miss "ops_eyJ prefix";
    onepassword_secret_key: "A3-OM7IX7-BN81YC7850F-S1T95-S3KWI-D4CIR" => "[masked]", near miss "A3-paper";
    prefect_token: "pnu_hMj7YAXEOWWbIK6QCslUINBZup04Ew30mZuQ" => "[masked]", near miss "pnu_ prefix";
    readme_token: "rdme_7zxq5ecfe4fs8irmz0usk9tt03vis74i50cs5i83qdi16kjf39oo5p5e53bbvvjqj63bd6" => "[masked]", near miss "rdme_ prefix";
    typeform_token: "tfp_OrotEb=4GPKv5wLWAN06GkpEqRVHPlJVm0sno7v_agA=bEy6IdMIYvheaPJ" => "[masked]", near miss "tfp_ prefix";
    infracost_token: "ico-yyiSBi7l5PnCB2uamxyEObbZN5eL4qCE" => "[masked]", near miss "ico-file.png";
    frameio_token: "fio-u-rsMOQ0FQvM4V1wIYI0j5Zj4OLQk3Dak12dFE6f0aZoXNIiiKHmzpRu-taEYuB_FT" => "[masked]", near miss "fio-u- prefix";
    scalingo_token: "tk-us-fSQoVbt2GzkwNVhDjZyh2SD4gZJQz_orBnpfJxMxi2yPGakj" => "[masked]", near miss "tk-us- prefix";
    duffel_token: "duffel_test_h9Cr6c=YW16=oZCTtGCW57flpHFdtiq5dk2i-dHVhT_" => "[masked]", near miss "duffel_test_ prefix";
    maxmind_license_key: "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" => "[masked]", near miss "the _mmk suffix";
    adobe_client_secret: "p8e-L64BVFEKUYLq82mfOD6aI3Tn8WZl9VmE" => "[masked]", near miss "p8e- prefix";
    harness_token: "x-api-key: pat.Jt8jPoZ2cGI67RMIlMnYtd.MW6gGjmziQE8760r0t98X9I6.UysE7snTfp2vBFbE0mEI" => "x-api-key: [masked]", near miss "pat.name and sat.count";
    curl_user_password: "curl -u deploy:kHUpUgvqCA9x0I5f https://api.example.com" => "curl -u deploy:[masked] https://api.example.com", near miss "curl -u $USER https://api.example.com";
    okta_ssws_header: "Authorization: SSWS 00A_b0bmqA7mFkksPT__CK_tbs-P3KrGaYr2xZ75tA" => "Authorization: SSWS [masked]", near miss "Authorization: Basic followed by base64";
    telegram_token_in_url: "https://api.telegram.org/bot8117730697:AAXP1rFLlkOkMDzc76PmtE-kh8J3_TWBGwc/getMe" => "https://api.telegram.org/bot8117730697:[masked]/getMe", near miss "https://api.telegram.org/bot<token>/getMe";
    planetscale_password_after_p: "mysql -h aws.connect.psdb.cloud -u app -ppscale_pw_t79M6Kff4Cj5gQO51tL2iwCmKgonlCpSSwDDLczxvgI" => "mysql -h aws.connect.psdb.cloud -u app -p[masked]", near miss "mysql -u app -p";
    django_secret_key: "SECRET_KEY = 'django-insecure-7x!q2k@9m$w3#zr8v'\n" => "SECRET_KEY = [masked]\n", near miss "SECRET_KEY = env('SECRET_KEY')\n";
    laravel_app_key: "APP_KEY=base64:Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA==\nENCRYPTION_KEY=4f9d2c7e1a8b3f60\n" => "APP_KEY=[masked]\nENCRYPTION_KEY=[masked]\n", near miss "APP_KEY=\nENCRYPTION_KEY=${ENCRYPTION_KEY}\n";
    php_array_password: "'password' => 'Tr0ub4dor&3x',\n" => "'password' => [masked],\n", near miss "'password' => $password,\n";
    php_define_password: "define('DB_PASSWORD', 'wp-S3cret-99');" => "define('DB_PASSWORD', [masked]);", near miss "define('DB_PASSWORD', getenv('DB_PASSWORD'));";
    npmrc_auth: "//registry.example.com/:_auth=ZGVwbG95OnMzY3JldDEyMw==\n" => "//registry.example.com/:_auth=[masked]\n", near miss "always-auth=true";
    docker_config_auth: r#"{"auths": {"ghcr.io": {"auth": "ZGVwbG95OmdocF9hYmMxMjM="}}}"# => r#"{"auths": {"ghcr.io": {"auth": "[masked]"}}}"#, near miss r#"{"auth": "none"}"#;
    nuget_cleartext_password: r#"<add key="ClearTextPassword" value="NuG3t-Pa55!" />"# => r#"<add key="ClearTextPassword" value="[masked]" />"#, near miss r#"<add key="Username" value="deploy" />"#;
    widened_key_names: "DB_PASS=p4ss-w0rd-1\nMYSQL_PWD=r00t-pw-22\nSMTP_PASSWD=m41l-pw-33\nAPI_KEY: k-9f8e7d6c5b4a\nPRIVATE_KEY=0x4c0883a69102937d\naccess_key = AKx9-88ab-cd\n" => "DB_PASS=[masked]\nMYSQL_PWD=[masked]\nSMTP_PASSWD=[masked]\nAPI_KEY: [masked]\nPRIVATE_KEY=[masked]\naccess_key = [masked]\n", near miss "let password = args.password;\npassword: &str,\nsecret_key: SecretKey,\n";
    json_yaml_toml_env_pairs: "{\"client_secret\": \"cs-8d7f6e5d4c3b\"}\npassword: \"yaml-pw-0987\"\n[db]\npassword = \"toml-pw-1234\"\nexport GITHUB_TOKEN=tok-5551234abc\n[client]\npassword = ini-pw-4321\n" => "{\"client_secret\": [masked]}\npassword: [masked]\n[db]\npassword = [masked]\nexport GITHUB_TOKEN=[masked]\n[client]\npassword = [masked]\n", near miss "token: link.token.clone(),\ntoken: \"bench\".into(),\nlet t = token::generate(&mut rng);\nresume_token: resume.clone(),\n";
    }

    #[test]
    fn every_builtin_pattern_has_a_sample_that_it_masks() {
        for p in BUILTIN_PATTERNS {
            let alone = Masker::build(vec![Spec { regex: p.regex, triggers: None }], false).unwrap();
            assert!(SAMPLES.iter().any(|s| alone.mask(s) != *s), "no sample for the built-in pattern {}", p.name);
        }
    }

    /// Every built-in pattern searched everywhere: what the prefilter must be equivalent to.
    fn unfiltered_masker() -> &'static Masker {
        static MASKER: std::sync::OnceLock<Masker> = std::sync::OnceLock::new();
        MASKER.get_or_init(|| {
            let specs = BUILTIN_PATTERNS.iter().map(|p| Spec { regex: p.regex, triggers: None }).collect();
            Masker::build(specs, false).unwrap()
        })
    }

    #[test]
    fn the_prefilter_finds_what_searching_everywhere_finds_in_every_sample() {
        for sample in SAMPLES {
            let text = format!("a {sample} b {sample}{sample}\n{}", sample.to_uppercase());
            assert_eq!(mask(&text), unfiltered_masker().mask(&text), "{text}");
        }
    }

    #[test]
    fn host_patterns_with_a_literal_prefix_are_prefiltered_and_others_searched_everywhere() {
        let m = Masker::new(&["internal-[0-9]{6}".to_string(), r"[0-9]{3}-secret".to_string()]).unwrap();
        let host = &m.inner.prefilter;
        let builtin = BUILTIN_PATTERNS.len();
        assert!(host.triggers.iter().any(|t| t.pattern == builtin), "a literal prefix is a trigger");
        assert_eq!(host.unfiltered, vec![builtin + 1], "a pattern without one is searched everywhere");
        assert_eq!(m.mask("x internal-123456 y 123-secret"), "x [masked] y [masked]");
    }

    #[test]
    fn the_protocol_docs_example_is_what_remotes_get() {
        let text = "deploy with DB_PASSWORD=hunter2hunter2 and https://deploy:s3cret@git.example.com";
        let doc = "deploy with DB_PASSWORD=[masked] and https://deploy:[masked]@git.example.com";
        assert_eq!(mask(text), doc);
        assert!(include_str!("../../../docs/PROTOCOL.md").contains(doc));
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
    fn spans_cover_whole_matches_merged_and_sorted() {
        let m = Masker::default();
        let text = "a sk_live_abcdefghijklmnop1234 b password=hunter22 c";
        let spans = m.spans(text);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert_eq!(&text[spans[0].clone()], "sk_live_abcdefghijklmnop1234");
        assert!(text[spans[1].clone()].starts_with("password"), "the whole pair: {:?}", &text[spans[1].clone()]);
        assert!(m.spans("nothing secret here").is_empty());
    }

    #[test]
    fn private_key_blocks_are_masked_whole() {
        let text = "before\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkt\nAAAA\n-----END OPENSSH PRIVATE KEY-----\nafter";
        assert_eq!(mask(text), "before\n[masked]\nafter");
        let unterminated = "x -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA";
        assert_eq!(mask(unterminated), "x [masked: private key block without an END line]");
    }

    #[test]
    fn secret_pairs_keep_the_key_and_mask_the_value() {
        assert_eq!(mask("DB_PASSWORD=hunter2hunter2 rest"), "DB_PASSWORD=[masked] rest");
        assert_eq!(mask("client_secret: abcdefgh123"), "client_secret: [masked]");
        assert_eq!(mask(r#"{"token": "abc12345"}"#), r#"{"token": [masked]}"#);
        assert_eq!(mask(r#"{"password": "hunter2"}"#), r#"{"password": [masked]}"#, "passwords: 6+ characters");
        // Short quoted values are placeholders or code, not secrets (issue 24).
        assert_eq!(mask(r#"{"token": "abc"}"#), r#"{"token": "abc"}"#);
        assert_eq!(mask("api_key = 'xyz-0123'"), "api_key = [masked]");
        assert_eq!(mask("api_key = 'xyz'"), "api_key = 'xyz'", "too short to be a key");
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

    /// Issue 24 item 4: code from this project that was masked before.
    #[test]
    fn identifiers_calls_types_and_short_literals_are_not_secrets() {
        for text in [
            "Link { token: link.token.clone(), host }",
            "token: \"bench\".into(),",
            "let token = token::generate(&mut rng);",
            "resume_token: resume.clone(),",
            "token: Option<String>,",
            "let password = args.password;",
            "fn login(user: &str, password: &str) -> bool",
            "secret_key: SecretKey,",
            "let token = other.name",
            "api_key: \"xxx\",",
            "password = input(\"Password: \")",
            "DB_PASSWORD=$DB_PASSWORD",
            "password: \"${DB_PASSWORD}\"",
            "token == 12345678",
            "Authorization: Basic followed by base64",
            "the Authorization: Bearer scheme, then a token",
        ] {
            assert_eq!(mask(text), text);
        }
    }

    /// Issue 24 item 4: a lone BEGIN line hid the whole rest of a reply (the stream held it back
    /// until an END line that never came).
    #[test]
    fn an_unterminated_key_block_hides_only_its_key_lines() {
        let text = "Here is the key:\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\nand then the rest of the reply, which is long.\nMore text.\n";
        let expected = "Here is the key:\n[masked: private key block without an END line]\nand then the rest of the reply, which is long.\nMore text.\n";
        assert_eq!(mask(text), expected);
        let lone = "-----BEGIN RSA PRIVATE KEY-----\nThe key file was truncated, sorry.";
        assert_eq!(mask(lone), "[masked: private key block without an END line]\nThe key file was truncated, sorry.");
        // Streamed: what follows the key lines is released as soon as it is seen to be prose.
        let m = Masker::default();
        let mut s = m.stream();
        let mut out = s.feed("ok -----BEGIN PRIVATE KEY-----\nMIIEvQIBAD\nThis is prose, ");
        assert_eq!(out, "ok [masked: private key block without an END line]\nThis is prose, ");
        for _ in 0..1000 {
            out.push_str(&s.feed("more prose follows here. "));
        }
        assert!(s.pending_len() < 64, "held back {} bytes", s.pending_len());
        out.push_str(&s.finish());
        assert!(out.ends_with("more prose follows here. "));
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
            proptest::sample::select(SAMPLES).prop_map(str::to_string),
            proptest::sample::select(SAMPLES).prop_map(|s| s[..s.len() / 2].to_string()),
            Just("Authorization: ".to_string()),
            Just("password = ".to_string()),
            Just("https://user:".to_string()),
            Just("\r\n".to_string()),
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

        #[test]
        fn the_prefilter_masks_what_searching_everywhere_masks(parts in proptest::collection::vec(fragment(), 0..12)) {
            let text: String = parts.concat();
            prop_assert_eq!(shared_masker().mask(&text), unfiltered_masker().mask(&text));
        }
    }
}
