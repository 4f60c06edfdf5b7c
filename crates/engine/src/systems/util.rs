//! Small helpers shared by systems: replies, event emission, scope checks.

use super::resources::{Outgoing, Staged};
use crate::components::{EventLog, Participant, Share};
use crate::ids::{ConnId, SessionId};
use crate::persist::{EventRow, StoreOp};
use crate::protocol::{ErrorCode, Event, EventFrame, Role};
use crate::systems::resources::PersistBatch;
use bevy_ecs::prelude::Query;
use serde::Serialize;
use serde_json::Value;

/// Stages `{"id": id, "result": result}` for `conn`.
pub fn reply_ok(staged: &mut Staged, conn: ConnId, id: &Value, result: impl Serialize) {
    #[derive(Serialize)]
    struct Reply<'a, T> {
        id: &'a Value,
        result: T,
    }
    let frame = staged.framed(&Reply { id, result });
    staged.out.push(Outgoing::Reply { conn, frame, ok: true });
}

/// Stages `{"id": id, "error": {"code", "message"}}` for `conn` (in that order, as
/// docs/PROTOCOL.md shows it).
pub fn reply_err(staged: &mut Staged, conn: ConnId, id: &Value, code: ErrorCode, message: impl Into<String>) {
    #[derive(Serialize)]
    struct ErrorBody {
        code: ErrorCode,
        message: String,
    }
    #[derive(Serialize)]
    struct ErrorReply<'a> {
        id: &'a Value,
        error: ErrorBody,
    }
    let frame = staged.framed(&ErrorReply { id, error: ErrorBody { code, message: message.into() } });
    staged.out.push(Outgoing::Reply { conn, frame, ok: false });
}

/// Answers `internal` when the store could not read a session's older history (logged too).
pub fn reply_history_unreadable(
    staged: &mut Staged,
    conn: ConnId,
    id: &Value,
    session: &SessionId,
    error: &crate::persist::StoreError,
) {
    tracing::error!("cannot read the history of {session}: {error}");
    reply_err(staged, conn, id, ErrorCode::Internal, format!("cannot read the history of {session}: {error}"));
}

/// Stages a connection-level event (no seq) for one connection.
pub fn send_direct(staged: &mut Staged, conn: ConnId, session: Option<SessionId>, body: Event) {
    let frame = staged.framed(&EventFrame { session_id: session, seq: None, body });
    staged.out.push(Outgoing::ConnEvent { conn, frame });
}

/// Stages a prepared snapshot frame of `session` for one connection (see `OutKind::Snapshot`).
pub fn send_snapshot(staged: &mut Staged, conn: ConnId, session: SessionId, frame: crate::io::Framed) {
    staged.out.push(Outgoing::Snapshot { conn, session, frame });
}

/// Emits a session event: assigns the next seq, logs it, persists it and stages it for every
/// member of the session. Returns the seq.
pub fn emit(
    log: &mut EventLog,
    session: &SessionId,
    body: Event,
    batch: &mut PersistBatch,
    staged: &mut Staged,
) -> u64 {
    if log.next_seq == 0 {
        log.next_seq = 1;
    }
    let seq = log.next_seq;
    log.next_seq += 1;
    let frame = staged.framed(&EventFrame { session_id: Some(session.clone()), seq: Some(seq), body });
    let text = frame.host.to_string();
    // A session whose tails are not resident keeps none: the store has the event.
    if log.resident.is_some() {
        log.tail.push_back((seq, frame.clone()));
        while log.tail.len() > crate::persist::EVENT_TAIL {
            log.tail.pop_front();
        }
    }
    batch.push(StoreOp::AppendEvent(EventRow { session: session.clone(), seq, frame: text }));
    staged.out.push(Outgoing::Session { session: session.clone(), seq, frame });
    seq
}

/// The answer to a request naming a session the caller cannot see (or that does not exist):
/// the same in both cases, so a remote learns nothing of sessions outside its scope.
pub fn reply_no_session(staged: &mut Staged, conn: ConnId, id: &Value, session: &SessionId) {
    reply_err(staged, conn, id, ErrorCode::NotFound, format!("no session {session}"));
}

/// Whether `participant` may see a session of `workspace`: the host sees everything; a remote
/// only what its share allows, and nothing while waiting in the lobby.
pub fn in_scope(participant: &Participant, share: Option<&Share>, workspace: &crate::ids::WorkspaceId) -> bool {
    if participant.role == Role::Host {
        return true;
    }
    if participant.admission != crate::protocol::Admission::Admitted {
        return false;
    }
    share.is_some_and(|s| s.workspaces.contains(workspace))
}

/// The participant behind a connection, and its share (none for the host).
pub fn caller<'a>(
    index: &super::resources::Index,
    conns: &'a Query<&crate::components::Connection>,
    participants: &'a Query<&Participant>,
    shares: &'a Query<&Share>,
    conn: crate::ids::ConnId,
) -> Option<(&'a Participant, Option<&'a Share>)> {
    let c = conns.get(*index.conns.get(&conn)?).ok()?;
    let pid: &crate::ids::ParticipantId = c.participant()?;
    let p = participants.get(*index.participants.get(pid)?).ok()?;
    let share = p.share.as_ref().and_then(|s| index.shares.get(s)).and_then(|&e| shares.get(e).ok());
    Some((p, share))
}

/// Source address without the port (rate limits are per address).
pub fn addr_key(addr: &str) -> String {
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return sa.ip().to_string();
    }
    addr.to_string()
}

/// Whether `c` is an invisible formatting character (Unicode general category Cf: zero-width
/// spaces and joiners, bidi overrides and isolates, word joiners, the BOM, tag characters…) or a
/// line/paragraph separator (U+2028, U+2029). Such characters make one name look like another
/// ("Host\u{200B}" shows as "Host"; U+202E reverses what follows).
pub fn is_invisible_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2 | 0x180E
        | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

/// Whether `c` is an invisible filler: a default-ignorable code point (Unicode's
/// Default_Ignorable_Code_Point: the Hangul fillers U+115F, U+1160, U+3164 and U+FFA0, the
/// combining grapheme joiner, variation selectors, Khmer inherent vowels, Mongolian free
/// variation selectors, tag characters, and the code points kept unassigned for more) or the
/// braille blank U+2800. They show as nothing or as blank space, so "Host\u{3164}" reads as
/// "Host". (The default-ignorable ones in category Cf are [`is_invisible_format`] too.)
pub fn is_invisible_filler(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x2800 | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

/// Names only the host, the agent and the host's own notices ("system") may carry, in any form
/// that reads the same (see [`name_forms`]) and with a counter: "Host (2)" is reserved too.
pub const RESERVED_NAMES: [&str; 3] = ["host", "agent", "system"];

/// The forms in which display names are compared; two names that share a form read the same.
///
/// Every form starts from the name in NFKC (fullwidth `Ｈｏｓｔ` and math bold `𝐇𝐨𝐬𝐭` become
/// `Host`) with runs of white space made one space, and ends in the confusable skeleton of
/// Unicode TS #39 (Cyrillic `о` and Greek `Η` become `o` and `H`; `rn` and `m` meet) of lower
/// case. The skeleton is not blind to case and no one order of case folding and skeleton is
/// enough, so there are three: lower case first (so `Iris` and `iris` meet, although the
/// skeleton makes `I` an `l`, and Greek `ν` meets `v`); the skeleton first (so Greek `Ηost`
/// meets `host`, although lower case makes `Η` an `η`, whose skeleton is `n`); and upper case
/// first (so a name that mixes both, `AaIaН` with a Cyrillic `Н`, meets `aaiah`).
pub fn name_forms(name: &str) -> [String; 3] {
    use unicode_normalization::UnicodeNormalization;
    let skeleton = |s: &str| -> String { unicode_security::skeleton(s).collect() };
    let spaced = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let nfkc = spaced(name.nfkc().collect());
    let read = |s: &str| spaced(skeleton(&s.to_lowercase()));
    [read(&nfkc), read(&skeleton(&nfkc)), read(&skeleton(&nfkc.to_uppercase()))]
}

/// `f` of [`name_forms`]`(name)`, remembered per thread for the last few hundred names: the
/// invariant checker asks for every present remote's forms on every tick, and the Unicode
/// normalisation behind them is most of its cost. (A pure function: the memo changes no answer.)
pub fn name_forms_memo<T>(name: &str, f: impl FnOnce(&[String; 3]) -> T) -> T {
    thread_local! {
        static MEMO: std::cell::RefCell<std::collections::BTreeMap<String, [String; 3]>> = Default::default();
    }
    MEMO.with(|memo| {
        let mut memo = memo.borrow_mut();
        if !memo.contains_key(name) {
            if memo.len() >= 512 {
                memo.clear();
            }
            memo.insert(name.to_string(), name_forms(name));
        }
        f(&memo[name])
    })
}

/// `form` without trailing counters `(2)`, `(13)`… as [`name_forms`] writes them (where `1`
/// may have become `l` and `0` an `O` or `o`).
fn without_counters(form: &str) -> &str {
    static PARTS: std::sync::LazyLock<(Vec<char>, Vec<char>, Vec<char>)> = std::sync::LazyLock::new(|| {
        let chars = |s: &str| -> Vec<char> { name_forms(s).iter().flat_map(|f| f.chars()).collect() };
        (chars("("), chars(")"), ('0'..='9').flat_map(|d| chars(&d.to_string())).collect())
    });
    let (open, close, digits) = &*PARTS;
    let mut rest = form.trim_end();
    while let Some(inner) = rest.strip_suffix(|c| close.contains(&c)).map(str::trim_end) {
        let before_count = inner.trim_end_matches(|c| digits.contains(&c));
        if before_count.len() == inner.len() {
            break;
        }
        let Some(before) = before_count.trim_end().strip_suffix(|c| open.contains(&c)) else { break };
        rest = before.trim_end();
    }
    rest
}

/// The reserved name `name` reads as, if any (any case, look-alike letters, invisible
/// characters left out, a counter `(n)` after it).
pub fn reads_as_reserved(name: &str) -> Option<&'static str> {
    let forms = name_forms(name);
    RESERVED_NAMES.into_iter().find(|word| {
        let reserved = name_forms(word);
        forms.iter().any(|f| reserved.iter().any(|r| r == without_counters(f)))
    })
}

/// Display names of remotes: trimmed, 1–64 characters, no control characters, invisible
/// formatting characters or invisible fillers, and not reading as a name reserved for the host,
/// the agent or the host's notices.
pub fn valid_display_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("display_name must not be empty".into());
    }
    if name.chars().count() > 64 {
        return Err("display_name must be at most 64 characters".into());
    }
    if name.chars().any(char::is_control) {
        return Err("display_name must not contain control characters".into());
    }
    if let Some(c) = name.chars().find(|&c| is_invisible_format(c)) {
        return Err(format!(
            "display_name must not contain invisible formatting characters (found U+{:04X})",
            c as u32
        ));
    }
    if let Some(c) = name.chars().find(|&c| is_invisible_filler(c)) {
        return Err(format!("display_name must not contain invisible filler characters (found U+{:04X})", c as u32));
    }
    if let Some(word) = reads_as_reserved(name) {
        let mut shown = word.chars();
        let shown: String = shown.next().into_iter().flat_map(char::to_uppercase).chain(shown).collect();
        return Err(format!(
            "\"{name}\" reads as \"{shown}\", which is reserved for the host, the agent and system notices; choose another display_name"
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_put_the_id_first_as_the_protocol_document_shows() {
        let mut staged = Staged::default();
        reply_err(&mut staged, ConnId(1), &json!(7), ErrorCode::Unauthenticated, "authenticate first");
        reply_ok(&mut staged, ConnId(1), &json!(8), json!({"ok": true}));
        let frames: Vec<String> = staged
            .out
            .iter()
            .map(|o| match o {
                Outgoing::Reply { frame, .. } => frame.host.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(frames[0], r#"{"id":7,"error":{"code":"unauthenticated","message":"authenticate first"}}"#);
        assert_eq!(frames[1], r#"{"id":8,"result":{"ok":true}}"#);
    }

    #[test]
    fn names_that_would_impersonate_are_refused() {
        for name in ["Host", " host ", "AGENT", "Agent", "Host\u{200B}", "Ann\u{202E}nnA", "A\u{2060}nn", "\u{FEFF}Bob"]
        {
            assert!(valid_display_name(name).is_err(), "{name:?} must be refused");
        }
        assert!(valid_display_name("Host\u{200B}").unwrap_err().contains("U+200B"));
        for name in ["Ann", "Hostess", "Agent Smith", "Zoë", "李雷", "Ann (2)"] {
            assert_eq!(valid_display_name(name).as_deref(), Ok(name), "{name:?} is a fine name");
        }
    }

    #[test]
    fn the_look_alikes_of_issue_21_are_refused() {
        let look_alikes = [
            "H\u{43E}st",  // Cyrillic о
            "\u{397}ost",  // Greek Eta
            "Ｈｏｓｔ",    // fullwidth
            "𝐇𝐨𝐬𝐭",        // math bold
            "\u{410}gent", // Cyrillic А
            "System",
            "Host (2)",
            "agent(12)",
            "Ｈｏｓｔ （３）",
        ];
        for name in look_alikes {
            let err = valid_display_name(name).expect_err(name);
            assert!(err.contains("reserved"), "{name:?}: {err}");
        }
        assert!(valid_display_name("\u{397}ost").unwrap_err().contains("reads as \"Host\""));
        for (name, code) in [("Host\u{3164}", "U+3164"), ("Host\u{2800}", "U+2800"), ("A\u{115F}nn", "U+115F")] {
            let err = valid_display_name(name).expect_err(name);
            assert!(err.contains("invisible filler") && err.contains(code), "{name:?}: {err}");
        }
    }

    #[test]
    fn forms_meet_across_case_width_and_script() {
        let same = |a: &str, b: &str| name_forms(a).iter().any(|f| name_forms(b).contains(f));
        for (a, b) in [
            ("Ann", "\u{410}nn"),
            ("Iris", "iris"),
            ("\u{397}ost", "host"),
            ("Ｂｏｂ", "bob"),
            ("A  B", "A B"),
            ("\u{3BD}ictor", "victor"),
            ("Kim", "Kirn"),
            ("AaIa\u{41D}", "aaiah"),
        ] {
            assert!(same(a, b), "{a:?} reads as {b:?}: {:?} {:?}", name_forms(a), name_forms(b));
        }
        for (a, b) in [("Ann", "Anne"), ("Zoë", "Zoe"), ("Ann", "Ann (2)"), ("李雷", "李電")] {
            assert!(!same(a, b), "{a:?} is not {b:?}");
        }
    }
}
