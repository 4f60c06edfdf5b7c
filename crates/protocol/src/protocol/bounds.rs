//! Size bounds on what the host sends (docs/PROTOCOL.md §1.3): no frame from the host exceeds
//! [`MAX_HOST_FRAME_BYTES`]. Text that could grow without limit is bounded where it is produced:
//! an agent reply longer than [`MAX_MESSAGE_JSON_BYTES`] is posted as several messages, a streamed
//! delta is cut into pieces of at most [`MAX_DELTA_JSON_BYTES`], and a vote's plan or tool input
//! is clipped to [`MAX_SUBJECT_JSON_BYTES`]. Sizes are counted as the text will be on the wire,
//! JSON-escaped (a control character takes six bytes there).
//!
//! Cuts and secrets: every function here that cuts text takes the text's *forbidden spans* (for
//! the host, the secrets its masker finds: `Masker::spans` in the engine; this crate knows no
//! masker), asked for only when a cut is actually needed. A cut never falls strictly inside one:
//! a split or clip point moves back to the start of the span it would fall in, a tail's start
//! moves forward to the span's end, so a secret is never left half on each side of a cut, where
//! neither half would be recognised and masked any more. The one exception is a span longer than
//! a whole piece (an unterminated private key block): [`split_json`] must still make progress
//! and cuts it at the bound.

use std::ops::Range;
/// Largest frame the host sends, in bytes.
pub const MAX_HOST_FRAME_BYTES: usize = 1024 * 1024;
/// Largest message text, JSON-escaped (an agent reply is split into messages of at most this).
pub const MAX_MESSAGE_JSON_BYTES: usize = 256 * 1024;
/// Largest `agent_delta` text, JSON-escaped.
pub const MAX_DELTA_JSON_BYTES: usize = 64 * 1024;
/// Largest plan or tool input in a vote, JSON-escaped (longer ones are clipped with a note).
pub const MAX_SUBJECT_JSON_BYTES: usize = 128 * 1024;

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn json_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Bytes `s` takes inside a JSON string (without the quotes).
pub fn json_len(s: &str) -> usize {
    // Fast path: most text has nothing to escape.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        return s.len();
    }
    s.chars().map(json_char_len).sum()
}

/// No forbidden spans: for text that is already masked, or whose cuts are masked as a unit with
/// what precedes them (a turn's deltas go through one stream masker).
pub fn no_spans(_: &str) -> Vec<Range<usize>> {
    Vec::new()
}

/// The span of `spans` (sorted, non-overlapping) that `pos` falls strictly inside, if any.
fn inside(spans: &[Range<usize>], pos: usize) -> Option<&Range<usize>> {
    let i = spans.partition_point(|r| r.end <= pos);
    spans.get(i).filter(|r| r.start < pos)
}

/// The byte index where a piece of `s[from..]` of at most `max` JSON bytes ends: at a line end in
/// the second half of the piece when there is one outside `spans` (byte ranges of `s`), else at
/// the last character boundary that fits, moved back to the start of the span it falls in. With
/// `progress`, a span that starts at or before `from` (longer than a piece) is cut at the bound,
/// so the result is > `from` for a non-empty rest (`max` ≥ 6); without it the result may be
/// `from`.
fn cut(s: &str, from: usize, max: usize, spans: &[Range<usize>], progress: bool) -> usize {
    let (mut used, mut end, mut last_newline) = (0, from, None);
    for (i, c) in s[from..].char_indices() {
        let n = json_char_len(c);
        if used + n > max {
            break;
        }
        used += n;
        end = from + i + c.len_utf8();
        if c == '\n' && used > max / 2 && inside(spans, end).is_none() {
            last_newline = Some(end);
        }
    }
    if end == s.len() {
        return end;
    }
    if let Some(newline) = last_newline {
        return newline;
    }
    match inside(spans, end) {
        Some(span) if span.start > from || !progress => {
            let mut start = span.start.max(from);
            while !s.is_char_boundary(start) {
                start -= 1;
            }
            start.max(from)
        }
        _ => end,
    }
}

/// `s` cut into pieces of at most `max` JSON bytes each, in order; joined they are `s`. No cut
/// falls inside a span `spans(s)` returns (sorted, non-overlapping byte ranges of `s`; asked for
/// only when `s` must be cut) unless the span is longer than a piece.
pub fn split_json(s: &str, max: usize, spans: impl FnOnce(&str) -> Vec<Range<usize>>) -> Vec<&str> {
    if json_len(s) <= max {
        return if s.is_empty() { Vec::new() } else { vec![s] };
    }
    let spans = spans(s);
    let mut pieces = Vec::new();
    let mut from = 0;
    while from < s.len() {
        let end = cut(s, from, max, &spans, true);
        pieces.push(&s[from..end]);
        from = end;
    }
    pieces
}

/// The end of `s` within `max` JSON bytes (at a character boundary), starting outside `spans`
/// (sorted, non-overlapping byte ranges of `s`): a start inside one moves forward to its end.
pub fn tail_json<'a>(s: &'a str, max: usize, spans: &[Range<usize>]) -> &'a str {
    let (mut used, mut start) = (0, s.len());
    for (i, c) in s.char_indices().rev() {
        let n = json_char_len(c);
        if used + n > max {
            break;
        }
        used += n;
        start = i;
    }
    if let Some(span) = inside(spans, start) {
        start = span.end.min(s.len());
        while !s.is_char_boundary(start) {
            start += 1;
        }
    }
    &s[start..]
}

/// The running turn's text as a snapshot carries it: whole, or `[…] ` and its last
/// [`MAX_DELTA_JSON_BYTES`] (the whole text is posted as the agent's message when the turn ends),
/// starting outside the spans `spans(streamed)` returns (asked for only when the text is cut).
pub fn snapshot_streaming_text(streamed: &str, spans: impl FnOnce(&str) -> Vec<Range<usize>>) -> String {
    if json_len(streamed) <= MAX_DELTA_JSON_BYTES {
        return streamed.to_string();
    }
    format!("[…] {}", tail_json(streamed, MAX_DELTA_JSON_BYTES - 8, &spans(streamed)))
}

/// `s` clipped to at most `max` JSON bytes, with a note saying how much was left out. The clip
/// never falls inside a span `spans(s)` returns (asked for only when `s` must be clipped): it
/// moves back to the span's start, so a secret is left out whole.
pub fn clip_json(s: &str, max: usize, spans: impl FnOnce(&str) -> Vec<Range<usize>>) -> String {
    if json_len(s) <= max {
        return s.to_string();
    }
    let end = cut(s, 0, max.saturating_sub(128).max(6), &spans(s), false);
    format!("{}\n[… {} more bytes not shown: too long to send]", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pieces_rebuild_the_text_and_each_fits(s in "(?s)[a-z\"\\\\\n\u{1}é漢🎉]{0,400}", max in 6usize..64) {
            let pieces = split_json(&s, max, no_spans);
            prop_assert_eq!(pieces.concat(), s.clone());
            for p in &pieces {
                prop_assert!(!p.is_empty());
                prop_assert!(json_len(p) <= max, "{:?} is {} > {}", p, json_len(p), max);
                prop_assert_eq!(json_len(p), serde_json::to_string(p).unwrap().len() - 2);
            }
        }

        #[test]
        fn pieces_of_any_multibyte_text_fit_when_escaped(
            chars in prop::collection::vec(prop_oneof![
                any::<char>(),
                prop::char::range('\u{80}', '\u{7ff}'),
                prop::char::range('\u{800}', '\u{ffff}'),
                prop::char::range('\u{10000}', '\u{10ffff}'),
                prop::char::range('\0', '\u{7f}'),
            ], 0..600),
            max in 6usize..300,
        ) {
            let s: String = chars.into_iter().collect();
            let pieces = split_json(&s, max, no_spans);
            prop_assert_eq!(pieces.concat(), s.clone());
            for p in &pieces {
                prop_assert!(!p.is_empty());
                let escaped = serde_json::to_string(p).unwrap().len() - 2;
                prop_assert_eq!(json_len(p), escaped);
                prop_assert!(escaped <= max, "{:?} is {} > {}", p, escaped, max);
            }
        }

        #[test]
        fn pieces_of_a_long_multibyte_text_fit_the_delta_bound(
            units in prop::collection::vec("[é日🎉\"\\\n\u{1}a]{1,8}", 1..6),
            reps in 9_000usize..20_000,
        ) {
            let s: String = units.iter().cycle().take(reps).map(String::as_str).collect();
            let pieces = split_json(&s, MAX_DELTA_JSON_BYTES, no_spans);
            prop_assert_eq!(pieces.concat(), s.clone());
            for p in &pieces {
                let escaped = serde_json::to_string(p).unwrap().len() - 2;
                prop_assert!(escaped <= MAX_DELTA_JSON_BYTES, "{} > {}", escaped, MAX_DELTA_JSON_BYTES);
            }
        }

        #[test]
        fn a_clipped_text_fits(s in "(?s)[a-z\"\n\u{1}é]{0,2000}", max in 200usize..600) {
            let clipped = clip_json(&s, max, no_spans);
            prop_assert!(json_len(&clipped) <= max, "{} > {}", json_len(&clipped), max);
            if json_len(&s) <= max {
                prop_assert_eq!(clipped, s);
            }
        }

        #[test]
        fn no_split_falls_inside_a_forbidden_span(
            s in "(?s)[a-z\"\n\u{1}é漢🎉 ]{0,600}",
            raw in prop::collection::vec((any::<prop::sample::Index>(), 1usize..60), 0..8),
            max in 6usize..120,
        ) {
            let spans = spans_of(&s, &raw);
            let pieces = split_json(&s, max, |t| { assert_eq!(t, s); spans.clone() });
            prop_assert_eq!(pieces.concat(), s.clone());
            let mut at = 0;
            for p in &pieces {
                prop_assert!(!p.is_empty());
                prop_assert!(json_len(p) <= max);
                let (start, end) = (at, at + p.len());
                at = end;
                if let Some(span) = inside(&spans, end) {
                    // Only a span longer than a piece, entered at the piece's start, is cut.
                    prop_assert!(span.start <= start, "cut {} inside {:?} (piece from {})", end, span, start);
                    prop_assert!(json_len(&s[span.clone()]) > max);
                }
            }
        }

        #[test]
        fn no_clip_or_tail_falls_inside_a_forbidden_span(
            s in "(?s)[a-z\"\n\u{1}é漢🎉 ]{0,2000}",
            raw in prop::collection::vec((any::<prop::sample::Index>(), 1usize..300), 0..8),
            max in 200usize..600,
        ) {
            let spans = spans_of(&s, &raw);
            let clipped = clip_json(&s, max, |_| spans.clone());
            prop_assert!(json_len(&clipped) <= max);
            if clipped != s {
                let kept = clipped.rfind("\n[… ").unwrap();
                prop_assert!(s.starts_with(&clipped[..kept]));
                prop_assert!(inside(&spans, kept).is_none(), "clip at {} inside {:?}", kept, spans);
            }
            let tail = tail_json(&s, max, &spans);
            prop_assert!(json_len(tail) <= max);
            prop_assert!(s.ends_with(tail));
            prop_assert!(inside(&spans, s.len() - tail.len()).is_none());
        }

        #[test]
        fn a_snapshot_tail_starts_outside_forbidden_spans(
            unit in "[a-z\n é]{1,16}",
            reps in 6_000usize..9_000,
            raw in prop::collection::vec((any::<prop::sample::Index>(), 1usize..3_000), 0..8),
        ) {
            let s = unit.repeat(reps);
            let spans = spans_of(&s, &raw);
            let text = snapshot_streaming_text(&s, |_| spans.clone());
            prop_assert!(json_len(&text) <= MAX_DELTA_JSON_BYTES);
            if text != s {
                let tail = text.strip_prefix("[…] ").unwrap();
                prop_assert!(s.ends_with(tail));
                prop_assert!(inside(&spans, s.len() - tail.len()).is_none());
            }
        }
    }

    /// Sorted, merged byte ranges of `s` at character boundaries, from random starts and lengths.
    fn spans_of(s: &str, raw: &[(prop::sample::Index, usize)]) -> Vec<Range<usize>> {
        let boundary = |mut i: usize| {
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let mut found: Vec<Range<usize>> = raw
            .iter()
            .filter(|_| !s.is_empty())
            .map(|(at, len)| {
                let start = boundary(at.index(s.len()));
                start..boundary((start + len).min(s.len()))
            })
            .filter(|r| r.start < r.end)
            .collect();
        found.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::new();
        for r in found {
            match merged.last_mut() {
                Some(last) if r.start < last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one forbidden span, on purpose
    fn a_clip_leaves_a_token_out_whole_and_a_tail_starts_after_a_key() {
        let key = "ghp_HMI4fS9z6yKryu7OE1WnwQKU5nR50dJQg96e";
        let text = format!("{}{key}{}", "a".repeat(300), " and more".repeat(20));
        let span = 300..300 + key.len();
        // The clip's budget (440 - 128) ends inside the key.
        let clipped = clip_json(&text, 440, |_| vec![span.clone()]);
        assert!(clipped.starts_with(&"a".repeat(300)) && !clipped.contains("ghp_"), "{clipped}");
        assert_eq!(clip_json(&text, 440, no_spans).matches("ghp_").count(), 1, "without spans it is cut");
        let short = format!("{}{key} end", "a".repeat(100));
        assert_eq!(tail_json(&short, 30, &[100..100 + key.len()]), " end");
        let pieces = split_json(&text, 320, |_| vec![span.clone()]);
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces[0], "a".repeat(300));
        assert!(pieces[1].starts_with(key));
    }
}
