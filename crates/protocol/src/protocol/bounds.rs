//! Size bounds on what the host sends (docs/PROTOCOL.md §1.3): no frame from the host exceeds
//! [`MAX_HOST_FRAME_BYTES`]. Text that could grow without limit is bounded where it is produced:
//! an agent reply longer than [`MAX_MESSAGE_JSON_BYTES`] is posted as several messages, a streamed
//! delta is cut into pieces of at most [`MAX_DELTA_JSON_BYTES`], and a vote's plan or tool input
//! is clipped to [`MAX_SUBJECT_JSON_BYTES`]. Sizes are counted as the text will be on the wire,
//! JSON-escaped (a control character takes six bytes there).

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

/// The byte index where a piece of `s` of at most `max` JSON bytes ends: at a line end in the
/// second half of the piece when there is one, else at a character boundary. Always > 0 for a
/// non-empty `s` (`max` ≥ 6).
fn cut(s: &str, max: usize) -> usize {
    let (mut used, mut end, mut last_newline) = (0, 0, None);
    for (i, c) in s.char_indices() {
        let n = json_char_len(c);
        if used + n > max {
            break;
        }
        used += n;
        end = i + c.len_utf8();
        if c == '\n' && used > max / 2 {
            last_newline = Some(end);
        }
    }
    if end == s.len() {
        return end;
    }
    last_newline.unwrap_or(end)
}

/// `s` cut into pieces of at most `max` JSON bytes each, in order; joined they are `s`.
pub fn split_json(s: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let end = cut(rest, max);
        pieces.push(&rest[..end]);
        rest = &rest[end..];
    }
    pieces
}

/// The end of `s` within `max` JSON bytes (at a character boundary).
pub fn tail_json(s: &str, max: usize) -> &str {
    let (mut used, mut start) = (0, s.len());
    for (i, c) in s.char_indices().rev() {
        let n = json_char_len(c);
        if used + n > max {
            break;
        }
        used += n;
        start = i;
    }
    &s[start..]
}

/// The running turn's text as a snapshot carries it: whole, or `[…] ` and its last
/// [`MAX_DELTA_JSON_BYTES`] (the whole text is posted as the agent's message when the turn ends).
pub fn snapshot_streaming_text(streamed: &str) -> String {
    if json_len(streamed) <= MAX_DELTA_JSON_BYTES {
        return streamed.to_string();
    }
    format!("[…] {}", tail_json(streamed, MAX_DELTA_JSON_BYTES - 8))
}

/// `s` clipped to at most `max` JSON bytes, with a note saying how much was left out.
pub fn clip_json(s: &str, max: usize) -> String {
    if json_len(s) <= max {
        return s.to_string();
    }
    let end = cut(s, max.saturating_sub(128).max(6));
    format!("{}\n[… {} more bytes not shown: too long to send]", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pieces_rebuild_the_text_and_each_fits(s in "(?s)[a-z\"\\\\\n\u{1}é漢🎉]{0,400}", max in 6usize..64) {
            let pieces = split_json(&s, max);
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
            let pieces = split_json(&s, max);
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
            let pieces = split_json(&s, MAX_DELTA_JSON_BYTES);
            prop_assert_eq!(pieces.concat(), s.clone());
            for p in &pieces {
                let escaped = serde_json::to_string(p).unwrap().len() - 2;
                prop_assert!(escaped <= MAX_DELTA_JSON_BYTES, "{} > {}", escaped, MAX_DELTA_JSON_BYTES);
            }
        }

        #[test]
        fn a_clipped_text_fits(s in "(?s)[a-z\"\n\u{1}é]{0,2000}", max in 200usize..600) {
            let clipped = clip_json(&s, max);
            prop_assert!(json_len(&clipped) <= max, "{} > {}", json_len(&clipped), max);
            if json_len(&s) <= max {
                prop_assert_eq!(clipped, s);
            }
        }
    }
}
