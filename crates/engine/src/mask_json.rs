//! Masking while serialising: the remote copy of a frame is written from the typed value with
//! every string passed through the [`Masker`] on the way, so no frame is ever parsed back to be
//! masked. [`to_json_pair`] returns the host's copy and the remotes' copy; when nothing needed
//! masking (almost always) they are the same allocation and the value was serialised once.
//!
//! A thin [`serde::Serializer`] wrapper: strings are masked, everything else (numbers, map keys,
//! enum tags, field names) goes to the inner serializer unchanged.
//!
//! One field holds JSON text rather than text: a tool request's `input` (`VoteSubject::Tool`, the
//! only field named `input` in any frame) is the agent's JSON arguments, serialised. Masking that
//! serialisation would look at escaped strings (a file's line ends are `\n` there, its quotes
//! `\"`), where patterns that need a line start or a quote no longer match. Such a field is masked
//! by [`mask_json_text`]: each string literal in it is decoded, masked and re-escaped, then the
//! whole is masked as before (which catches `"password":"…"` pairs across a key and its value).
//! [`json_text_spans`] gives the ranges a clip of such text must stay out of.

use super::mask::Masker;
use serde::ser::{self, Serialize, Serializer};
use std::cell::Cell;
use std::ops::Range;
use std::sync::Arc;

/// The field whose string is JSON text (a tool request's arguments).
const JSON_TEXT_FIELD: &str = "input";

/// What masking needs while serialising.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    masker: &'a Masker,
    changed: &'a Cell<bool>,
}

/// A value serialised with its strings masked (as JSON text when `json_text`).
struct Masked<'a, T: ?Sized> {
    value: &'a T,
    ctx: Ctx<'a>,
    json_text: bool,
}

impl<T: Serialize + ?Sized> Serialize for Masked<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(MaskSer { inner: serializer, ctx: self.ctx, json_text: self.json_text })
    }
}

struct MaskSer<'a, S> {
    inner: S,
    ctx: Ctx<'a>,
    /// The value is the [`JSON_TEXT_FIELD`]'s: a string in it is masked as JSON text.
    json_text: bool,
}

/// A compound (sequence, map, struct…) whose elements are masked.
struct Compound<'a, C> {
    inner: C,
    ctx: Ctx<'a>,
    /// A map's last key was [`JSON_TEXT_FIELD`].
    json_text_next: bool,
}

impl<'a, C> Compound<'a, C> {
    fn new(inner: C, ctx: Ctx<'a>) -> Self {
        Compound { inner, ctx, json_text_next: false }
    }

    /// `value`, masked as text.
    fn masked<'v, T: ?Sized>(&self, value: &'v T) -> Masked<'v, T>
    where
        'a: 'v,
    {
        Masked { value, ctx: self.ctx, json_text: false }
    }
}

/// Whether a map key serialises as the string [`JSON_TEXT_FIELD`].
fn is_json_text_key<T: Serialize + ?Sized>(key: &T) -> bool {
    let mut out = Vec::with_capacity(JSON_TEXT_FIELD.len() + 2);
    key.serialize(&mut serde_json::Serializer::new(&mut out)).is_ok()
        && out.len() == JSON_TEXT_FIELD.len() + 2
        && out[1..out.len() - 1] == *JSON_TEXT_FIELD.as_bytes()
}

macro_rules! forward {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<S::Ok, S::Error> { self.inner.$method(v) })*
    };
}

impl<'a, S: Serializer> Serializer for MaskSer<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'a, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

    forward!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_bytes(&[u8]),
    );

    fn serialize_str(self, v: &str) -> Result<S::Ok, S::Error> {
        let masked = if self.json_text { mask_json_text(v, self.ctx.masker) } else { self.ctx.masker.mask(v) };
        if masked != v {
            self.ctx.changed.set(true);
        }
        self.inner.serialize_str(&masked)
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_some(&Masked { value, ctx: self.ctx, json_text: self.json_text })
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit()
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_struct(name)
    }

    fn serialize_unit_variant(self, name: &'static str, index: u32, variant: &'static str) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_struct(name, &Masked { value, ctx: self.ctx, json_text: self.json_text })
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_variant(name, index, variant, &Masked { value, ctx: self.ctx, json_text: false })
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Ok(Compound::new(self.inner.serialize_seq(len)?, self.ctx))
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        Ok(Compound::new(self.inner.serialize_tuple(len)?, self.ctx))
    }

    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeTupleStruct, S::Error> {
        Ok(Compound::new(self.inner.serialize_tuple_struct(name, len)?, self.ctx))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Ok(Compound::new(self.inner.serialize_tuple_variant(name, index, variant, len)?, self.ctx))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Ok(Compound::new(self.inner.serialize_map(len)?, self.ctx))
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeStruct, S::Error> {
        Ok(Compound::new(self.inner.serialize_struct(name, len)?, self.ctx))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        Ok(Compound::new(self.inner.serialize_struct_variant(name, index, variant, len)?, self.ctx))
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The compounds whose one method takes a value: each value is masked on its way in.
macro_rules! masked_compound {
    ($($trait:ident::$method:ident),* $(,)?) => {
        $(impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                let value = self.masked(value);
                self.inner.$method(&value)
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        })*
    };
}

masked_compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    /// Keys are names, not text: passed through (noting whether the value is JSON text).
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.json_text_next = is_json_text_key(key);
        self.inner.serialize_key(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let json_text = std::mem::take(&mut self.json_text_next);
        self.inner.serialize_value(&Masked { value, ctx: self.ctx, json_text })
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

/// The compounds whose fields are named: each value is masked, the name passes through.
macro_rules! masked_named_compound {
    ($($trait:ident),* $(,)?) => {
        $(impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), C::Error> {
                let json_text = key == JSON_TEXT_FIELD;
                self.inner.serialize_field(key, &Masked { value, ctx: self.ctx, json_text })
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.inner.skip_field(key)
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        })*
    };
}

masked_named_compound!(SerializeStruct, SerializeStructVariant);

/// `value` as JSON with every string masked, and whether anything was masked.
pub fn to_json_masked<T: Serialize + ?Sized>(value: &T, masker: &Masker) -> (String, bool) {
    let changed = Cell::new(false);
    let mut out = Vec::with_capacity(128);
    let mut json = serde_json::Serializer::new(&mut out);
    value
        .serialize(MaskSer { inner: &mut json, ctx: Ctx { masker, changed: &changed }, json_text: false })
        .expect("serialising to a Vec cannot fail");
    (String::from_utf8(out).expect("serde_json writes UTF-8"), changed.get())
}

/// A JSON string literal found in JSON text: its content's byte range in the text (without the
/// quotes; to the end of the text when it is not closed, as in a clipped text), and the decoded
/// content with, for each of its byte offsets that starts a character (and its end), the offset
/// in the text where that character's encoding starts.
struct Literal {
    raw: Range<usize>,
    decoded: String,
    offsets: Vec<usize>,
}

/// The string literals of JSON text, leniently: the text may be clipped (a literal left open at
/// its end) or not JSON at all (then whatever stands between double quotes). An escape that is
/// not JSON's is kept as written; a lone surrogate becomes U+FFFD.
fn string_literals(text: &str) -> Vec<Literal> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let (mut decoded, mut offsets) = (String::new(), Vec::new());
        let mut j = start;
        let push = |decoded: &mut String, offsets: &mut Vec<usize>, c: char, at: usize| {
            offsets.resize(decoded.len(), usize::MAX);
            offsets.push(at);
            decoded.push(c);
        };
        while j < bytes.len() && bytes[j] != b'"' {
            if bytes[j] != b'\\' {
                let c = text[j..].chars().next().expect("j is a character boundary");
                push(&mut decoded, &mut offsets, c, j);
                j += c.len_utf8();
                continue;
            }
            let (c, len) = unescape(text, j);
            push(&mut decoded, &mut offsets, c, j);
            j += len;
        }
        offsets.resize(decoded.len(), usize::MAX);
        offsets.push(j);
        found.push(Literal { raw: start..j, decoded, offsets });
        i = j + 1;
    }
    found
}

/// The character an escape at `text[at]` (a backslash) stands for, and the escape's length.
fn unescape(text: &str, at: usize) -> (char, usize) {
    let hex = |from: usize| text.get(from..from + 4).and_then(|h| u32::from_str_radix(h, 16).ok());
    let bytes = text.as_bytes();
    match bytes.get(at + 1) {
        Some(b'"') => ('"', 2),
        Some(b'\\') => ('\\', 2),
        Some(b'/') => ('/', 2),
        Some(b'b') => ('\u{08}', 2),
        Some(b'f') => ('\u{0c}', 2),
        Some(b'n') => ('\n', 2),
        Some(b'r') => ('\r', 2),
        Some(b't') => ('\t', 2),
        Some(b'u') => match hex(at + 2) {
            Some(high @ 0xD800..=0xDBFF) => match (text.get(at + 6..at + 8), hex(at + 8)) {
                (Some("\\u"), Some(low @ 0xDC00..=0xDFFF)) => {
                    let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    (char::from_u32(c).unwrap_or('\u{fffd}'), 12)
                }
                _ => ('\u{fffd}', 6),
            },
            Some(code) => (char::from_u32(code).unwrap_or('\u{fffd}'), 6),
            None => ('\\', 1),
        },
        // Not a JSON escape (or a backslash at the very end): the backslash as written.
        _ => ('\\', 1),
    }
}

/// JSON text (a tool request's arguments) masked for remotes: each string literal's decoded
/// content masked and written back escaped, then what only the text as a whole shows (a match
/// reaching across literals: `"password": "…"` with the key and the value in two of them)
/// masked as text. A match inside one literal is left to the decoded pass, which saw it with its
/// escapes decoded (masking the escaped form again would take `\nhost` for part of a password).
/// Unchanged bytes stay as they were (no re-serialisation: key order, spacing and numbers are the
/// agent's).
pub fn mask_json_text(text: &str, masker: &Masker) -> String {
    let decoded = mask_json_literals(text, masker);
    // Each literal with its quotes: a match that ends on the closing quote is still inside one.
    let inside: Vec<Range<usize>> =
        string_literals(&decoded).into_iter().map(|l| l.raw.start.saturating_sub(1)..l.raw.end + 1).collect();
    let mut out = String::with_capacity(decoded.len());
    let mut pos = 0;
    for span in masker.spans(&decoded) {
        if span.start < pos || inside.iter().any(|l| l.start <= span.start && span.end <= l.end) {
            continue;
        }
        let whole = &decoded[span.clone()];
        let masked = masker.mask(whole);
        out.push_str(&decoded[pos..span.start]);
        // Cut out of its context a match may no longer match: then all of it is hidden.
        out.push_str(if masked == whole { crate::mask::MASK } else { &masked });
        pos = span.end;
    }
    out.push_str(&decoded[pos..]);
    out
}

/// JSON text with each string literal's decoded content masked and written back escaped.
fn mask_json_literals(text: &str, masker: &Masker) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for literal in string_literals(text) {
        let masked = masker.mask(&literal.decoded);
        if masked == literal.decoded {
            continue;
        }
        let escaped = serde_json::to_string(&masked).expect("a string serialises");
        out.push_str(&text[pos..literal.raw.start]);
        out.push_str(&escaped[1..escaped.len() - 1]);
        pos = literal.raw.end;
    }
    out.push_str(&text[pos..]);
    out
}

/// The byte ranges of JSON text that a cut must stay out of: what [`Masker::spans`] finds in the
/// text itself and in each string literal's decoded content (mapped back to the text), merged.
pub fn json_text_spans(text: &str, masker: &Masker) -> Vec<Range<usize>> {
    let mut spans = masker.spans(text);
    for literal in string_literals(text) {
        for span in masker.spans(&literal.decoded) {
            spans.push(literal.offsets[span.start]..literal.offsets[span.end]);
        }
    }
    spans.sort_unstable_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start < last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

/// A stored frame (the host's copy) with its remotes' copy: parsed and masked once, at start-up
/// (a frame the host made is never parsed again).
pub fn framed_from_stored(host: Arc<str>, masker: &Masker) -> crate::io::Framed {
    match serde_json::from_str::<serde_json::Value>(&host) {
        Ok(value) => {
            let (masked, changed) = to_json_masked(&value, masker);
            let remote = if changed { Arc::from(masked) } else { host.clone() };
            crate::io::Framed { host, remote }
        }
        // Not JSON (cannot happen for frames the host wrote): nothing to mask in it.
        Err(_) => crate::io::Framed::same(host),
    }
}

/// The host's copy and the remotes' copy of `value` as JSON frames: one allocation shared by
/// both when nothing needed masking.
pub fn to_json_pair<T: Serialize + ?Sized>(value: &T, masker: &Masker) -> (Arc<str>, Arc<str>) {
    let (masked, changed) = to_json_masked(value, masker);
    let remote: Arc<str> = Arc::from(masked);
    if !changed {
        return (remote.clone(), remote);
    }
    let host: Arc<str> = Arc::from(serde_json::to_string(value).expect("serialising to a String cannot fail"));
    (host, remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn walk_mask(v: &mut serde_json::Value, m: &Masker) {
        match v {
            serde_json::Value::String(s) => *s = m.mask(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk_mask(x, m)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|x| walk_mask(x, m)),
            _ => {}
        }
    }

    #[test]
    fn nothing_to_mask_is_one_allocation_and_the_plain_json() {
        let m = Masker::default();
        let v = serde_json::json!({"a": [1, "two", {"b": null}], "c": "hello"});
        let (host, remote) = to_json_pair(&v, &m);
        assert!(Arc::ptr_eq(&host, &remote));
        assert_eq!(&*host, v.to_string());
    }

    #[test]
    fn secrets_are_masked_in_every_string_but_not_in_keys_or_the_host_copy() {
        let m = Masker::default();
        let key = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789";
        let v = serde_json::json!({"text": format!("key {key}"), "list": [key], "nested": {"x": Some(key)}});
        let (host, remote) = to_json_pair(&v, &m);
        assert!(host.contains(key));
        assert!(!remote.contains(key), "{remote}");
        let mut expected = v.clone();
        walk_mask(&mut expected, &m);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&remote).unwrap(), expected);
    }

    /// A tool vote as remotes get it, live (`VoteOpened`, the subject flattened into a map) and
    /// from a stored frame (parsed back into a `Value`).
    fn tool_vote(input: &str) -> serde_json::Value {
        use crate::protocol::{DecidedBy, Event, EventFrame, VoteOpened, VoteSubject};
        let subject = VoteSubject::Tool { tool: "Write".into(), input: input.into() };
        let body = Event::VoteOpened(VoteOpened {
            vote_id: crate::ids::VoteId::nth(1),
            subject,
            decided_by: DecidedBy::Holder,
            required: vec![],
            deadline_ms: None,
        });
        serde_json::to_value(EventFrame { session_id: None, seq: Some(3), body }).unwrap()
    }

    #[test]
    fn a_tool_inputs_strings_are_masked_decoded_not_in_their_escaped_form() {
        let m = Masker::default();
        let content = "[client]\npassword = hunter2secret\nhost = db\n";
        let input = serde_json::json!({"file_path": "my.cnf", "content": content}).to_string();
        // Masked in its escaped form the line would read `password = [masked] = db`: `\nhost`
        // taken for part of the password.
        assert!(m.mask(&input).contains("[masked] = db"), "{}", m.mask(&input));
        let frame = tool_vote(&input);
        let (host, remote) = to_json_pair(&frame, &m);
        assert!(host.contains("hunter2secret"), "the host's copy is the original");
        assert!(!remote.contains("hunter2secret"), "{remote}");
        let remote: serde_json::Value = serde_json::from_str(&remote).unwrap();
        let remote_input: serde_json::Value =
            serde_json::from_str(remote["payload"]["input"].as_str().unwrap()).expect("still JSON");
        assert_eq!(remote_input["content"], "[client]\npassword = [masked]\nhost = db\n");
        assert_eq!(remote_input["file_path"], "my.cnf");
        // The same frame stored and read back at start-up.
        let stored = framed_from_stored(Arc::from(frame.to_string()), &m);
        assert!(!stored.remote.contains("hunter2secret") && stored.host.contains("hunter2secret"));
        // A `"password": "…"` pair written inside a file, and a key-value pair of the input itself.
        let input = serde_json::json!({"content": "{\"password\": \"hunter2secret\"}", "password": "s3cr3t-Pa55"});
        let (_, remote) = to_json_pair(&tool_vote(&input.to_string()), &m);
        assert!(!remote.contains("hunter2secret") && !remote.contains("s3cr3t-Pa55"), "{remote}");
    }

    #[test]
    fn json_text_without_secrets_keeps_its_bytes_and_other_fields_are_plain_text() {
        let m = Masker::default();
        let input = r#"{ "b": 1.50, "a": ["x\u00e9", null],  "c": "line\nnext" }"#;
        assert_eq!(mask_json_text(input, &m), input);
        // Only a field named `input` is JSON text: elsewhere its escapes are not decoded (a key
        // spelled with a JSON escape is only a key once decoded).
        let json_text = r#"{"k": "\u0067hp_HMI4fS9z6yKryu7OE1WnwQKU5nR50dJQg96e"}"#;
        let (_, remote) = to_json_pair(&serde_json::json!({ "text": json_text }), &m);
        assert!(remote.contains("HMI4fS9z6yKryu7OE1Wnw"), "plain text is masked as text: {remote}");
        let (_, remote) = to_json_pair(&tool_vote(json_text), &m);
        assert!(!remote.contains("HMI4fS9z6yKryu7OE1Wnw"), "an input is decoded: {remote}");
    }

    #[test]
    fn a_clipped_tool_input_is_masked_and_clipped_outside_its_secrets() {
        let m = Masker::default();
        let key = "ghp_HMI4fS9z6yKryu7OE1WnwQKU5nR50dJQg96e";
        let content = format!("{}\npassword = hunter2secret\n{key}\n", "x".repeat(100));
        let input = serde_json::json!({"content": content}).to_string();
        let spans = json_text_spans(&input, &m);
        let at = input.find("hunter2secret").unwrap();
        assert!(spans.iter().any(|r| r.start <= at && at + 13 <= r.end), "{spans:?}");
        let k = input.find(key).unwrap();
        assert!(spans.iter().any(|r| r.start <= k && k + key.len() <= r.end), "{spans:?}");
        // Every clip of it: no window of the key or the password reaches remotes.
        for max in (136..input.len() + 140).step_by(3) {
            let clipped = crate::protocol::clip_json(&input, max, |t| json_text_spans(t, &m));
            let remote = mask_json_text(&clipped, &m);
            assert!(!remote.contains("ghp_HMI4") && !remote.contains("hunter2s"), "{max}: {remote}");
        }
    }

    proptest! {
        /// Masking while serialising equals serialising, parsing and masking every string.
        #[test]
        fn equals_masking_the_parsed_frame(words in proptest::collection::vec("[a-z ]{0,8}|ghp_[A-Za-z0-9]{36}|password=[a-z]{6}", 0..6)) {
            let m = Masker::default();
            let v = serde_json::json!({"event": "message", "payload": {"words": words.clone(), "first": words.first()}});
            let (_, remote) = to_json_pair(&v, &m);
            let mut expected = v.clone();
            walk_mask(&mut expected, &m);
            prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&remote).unwrap(), expected);
        }

        /// The lenient decoder reads what serde_json writes, whatever the characters.
        #[test]
        fn string_literals_decode_what_serde_json_escapes(text in "(?s).{0,40}", tail in "[a-z]{0,3}") {
            let json = format!("[{}, {}]", serde_json::to_string(&text).unwrap(), serde_json::to_string(&tail).unwrap());
            let found = string_literals(&json);
            prop_assert_eq!(found.len(), 2);
            prop_assert_eq!(&found[0].decoded, &text);
            prop_assert_eq!(&found[1].decoded, &tail);
        }

        /// JSON text masked for remotes is still JSON, and none of its strings holds a secret the
        /// masker finds in it.
        #[test]
        fn masked_json_text_is_json_without_the_secrets(
            words in proptest::collection::vec("[a-z \"\n]{0,8}|ghp_[A-Za-z0-9]{36}|\npassword = [a-z]{10}\n|sk_live_[A-Za-z0-9]{24}", 0..6),
        ) {
            let m = Masker::default();
            let v = serde_json::json!({"content": words.concat(), "list": words.clone()});
            let remote = mask_json_text(&v.to_string(), &m);
            let parsed: serde_json::Value = serde_json::from_str(&remote).unwrap();
            let mut expected = v.clone();
            walk_mask(&mut expected, &m);
            prop_assert_eq!(parsed, expected);
        }
    }
}
