//! Human-readable lines for protocol events, shared by `join` (a remote's terminal) and `serve`
//! (the host's activity log).
//!
//! The renderer keeps just enough state to write names instead of ids: the rosters it has seen,
//! which participant is "you", the open votes, and the agent text streamed so far (so a streamed
//! reply is printed once, inline as it arrives, and completed when the final message lands).

use crate::ids::{ParticipantId, SessionId, VoteId};
use crate::protocol::*;
use crate::vote_status::{Names, VoteState};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How many messages of a snapshot are printed (older ones are summarised).
pub const SNAPSHOT_TAIL: usize = 20;

/// Per-session state the renderer tracks.
#[derive(Default, Debug, Clone)]
pub struct SessionView {
    pub title: String,
    pub roster: BTreeMap<ParticipantId, RosterEntry>,
    /// Open votes, by id.
    pub votes: BTreeMap<VoteId, VoteOpened>,
    /// The latest progress of each open vote.
    pub progress: BTreeMap<VoteId, VoteProgress>,
    /// Agent text streamed in the running turn (and already printed when streaming inline).
    pub streamed: String,
    pub turn_holder: Option<ParticipantId>,
    /// Seq of the oldest message shown, and whether older ones exist (`/older` pages back).
    pub oldest_shown: Option<u64>,
    pub has_older: bool,
    /// Room chat shown (live or in history), numbered from 1 as shown ("(room 3) Bob: …"), for
    /// `/quote N`.
    pub room_lines: Vec<(String, String)>,
    /// The agent settings every turn gets (`set_agent_settings`).
    pub agent_settings: AgentSettings,
    /// People shown as typing since their last message or chat: one "is typing…" line each until
    /// they send something.
    pub typing_shown: std::collections::BTreeSet<ParticipantId>,
}

/// The agent settings for people: "model haiku, permission mode plan", or "the agent's defaults".
pub fn agent_settings_text(s: &AgentSettings) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &s.model {
        parts.push(format!("model {m}"));
    }
    if let Some(m) = &s.permission_mode {
        parts.push(format!("permission mode {m}"));
    }
    if parts.is_empty() {
        "the agent's defaults".to_string()
    } else {
        parts.join(", ")
    }
}

/// Turns events into text.
#[derive(Debug, Default)]
pub struct Renderer {
    /// Print agent deltas inline as they arrive (`join`); otherwise only the final reply (`serve`).
    pub stream_deltas: bool,
    /// The receiving participant.
    pub me: Option<ParticipantId>,
    /// Every display name seen, by participant id.
    names: BTreeMap<ParticipantId, String>,
    sessions: BTreeMap<SessionId, SessionView>,
    /// Whether the last output left a streamed line open (no newline yet).
    line_open: bool,
    /// Session prefixes (`[s2] `) are added when more than one session is followed.
    pub prefix_sessions: bool,
    /// "Now" for vote deadlines, in ms since the Unix epoch (tests); `None`: this computer's
    /// clock.
    pub fixed_now_ms: Option<u64>,
}

impl Renderer {
    /// A renderer; `stream_deltas` prints agent text inline as it streams.
    pub fn new(stream_deltas: bool) -> Self {
        Self { stream_deltas, ..Self::default() }
    }

    /// The display name of a participant (its id when unknown).
    pub fn name(&self, id: &ParticipantId) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| id.to_string())
    }

    fn name_you(&self, id: &ParticipantId) -> String {
        if self.me.as_ref() == Some(id) {
            format!("{} (you)", self.name(id))
        } else {
            self.name(id)
        }
    }

    /// The tracked view of a session.
    pub fn session(&self, id: &SessionId) -> Option<&SessionView> {
        self.sessions.get(id)
    }

    /// Why a prompt was refused with `turn_locked`, for people: who has the turn (you, or their
    /// name — never an id) and what to do with the line (the host's own message names ids).
    pub fn turn_locked_text(&self, session: &SessionId) -> String {
        let holder = self.sessions.get(session).and_then(|v| v.turn_holder.as_ref());
        match holder {
            Some(h) if self.me.as_ref() == Some(h) => {
                "! not sent: the agent is still working on your prompt; send it again when it finishes, or /chat it to the room".into()
            }
            Some(h) => format!(
                "! not sent: {} has the turn; send it again when the agent finishes, or /chat it to the room",
                self.name(h)
            ),
            None => "! not sent: someone else has the turn; send it again when the agent finishes, or /chat it to the room"
                .into(),
        }
    }

    /// Forgets a session (after leaving it).
    pub fn forget(&mut self, id: &SessionId) {
        self.sessions.remove(id);
    }

    /// Records a roster (from `join_session`) and returns its rendering.
    pub fn joined(&mut self, info: &SessionInfo, roster: &[RosterEntry]) -> String {
        let view = self.sessions.entry(info.id.clone()).or_default();
        view.title = info.title.clone();
        view.turn_holder = info.turn_holder.clone();
        view.agent_settings = info.agent_settings.clone();
        view.roster = roster.iter().map(|r| (r.participant_id.clone(), r.clone())).collect();
        for r in roster {
            self.names.insert(r.participant_id.clone(), r.display_name.clone());
            if r.you {
                self.me = Some(r.participant_id.clone());
            }
        }
        let mut out = self.break_line();
        let _ = writeln!(out, "== {} \"{}\" ({}) ==", info.id, info.title, info.status.as_str());
        if info.plan_first {
            out.push_str("(plan first: the agent's plan goes to a vote before it changes anything)\n");
        }
        if !info.agent_settings.is_empty() {
            let _ = writeln!(out, "(agent: {})", agent_settings_text(&info.agent_settings));
        }
        out.push_str(&self.who(&info.id));
        out
    }

    /// The roster of a session, one line.
    pub fn who(&self, session: &SessionId) -> String {
        let Some(view) = self.sessions.get(session) else { return format!("not in session {session}\n") };
        let people: Vec<String> = view
            .roster
            .values()
            .map(|r| {
                let mut s = self.name_you(&r.participant_id);
                match r.role {
                    Role::Host => s.push_str(" [host]"),
                    Role::Observer => s.push_str(" [observer]"),
                    Role::Participant => {}
                }
                if r.muted {
                    s.push_str(" [muted]");
                }
                if r.presence == PresenceState::Reconnecting {
                    s.push_str(" [reconnecting]");
                }
                s
            })
            .collect();
        let holder = view.turn_holder.as_ref().map(|h| format!("; turn: {}", self.name(h))).unwrap_or_default();
        format!("in {session}: {}{holder}\n", people.join(", "))
    }

    /// Ends an open streamed line, if any.
    fn break_line(&mut self) -> String {
        if std::mem::take(&mut self.line_open) {
            "\n".to_string()
        } else {
            String::new()
        }
    }

    /// Renders one event; returns the text to print (possibly empty, possibly without a final
    /// newline while agent text is streaming).
    pub fn event(&mut self, frame: &EventFrame) -> String {
        let session = frame.session_id.clone();
        let prefix = match (&session, self.prefix_sessions) {
            (Some(s), true) => format!("[{s}] "),
            _ => String::new(),
        };
        if let Event::AgentDelta(d) = &frame.body {
            let Some(s) = &session else { return String::new() };
            self.sessions.entry(s.clone()).or_default().streamed.push_str(&d.text);
            if !self.stream_deltas {
                return String::new();
            }
            let mut out = String::new();
            if !self.line_open {
                let _ = write!(out, "{prefix}[agent] ");
                self.line_open = true;
            }
            out.push_str(&d.text);
            return out;
        }
        let mut out = String::new();
        let body = self.body(&session, &frame.body, &mut out);
        if let Some(body) = body {
            out.push_str(&self.break_line());
            for line in body.lines() {
                let _ = writeln!(out, "{prefix}{line}");
            }
        }
        out
    }

    /// The lines of an event, or `None` when it prints nothing. A streamed agent reply being
    /// completed writes its remainder into `out` directly.
    fn body(&mut self, session: &Option<SessionId>, event: &Event, out: &mut String) -> Option<String> {
        let sid = session.clone().unwrap_or_else(|| SessionId::from("?"));
        match event {
            Event::Message(m) => {
                if m.author_id == "agent" {
                    let streamed = std::mem::take(&mut self.sessions.entry(sid.clone()).or_default().streamed);
                    if self.stream_deltas && self.line_open && !streamed.is_empty() {
                        if let Some(rest) = m.text.strip_prefix(streamed.as_str()) {
                            // The reply was printed as it streamed: finish the line.
                            out.push_str(rest);
                            out.push('\n');
                            self.line_open = false;
                            return None;
                        }
                    }
                }
                Some(self.message_line(&sid, m))
            }
            Event::Chat(m) => Some(self.message_line(&sid, m)),
            // A line per `typing` event (one every 2 s while someone types) would drown the
            // conversation: one line until their message or chat arrives.
            Event::Typing(t) if self.me.as_ref() != Some(&t.participant_id) => {
                let view = self.sessions.entry(sid).or_default();
                view.typing_shown.insert(t.participant_id.clone()).then(|| format!("* {} is typing…", t.display_name))
            }
            Event::Typing(_) => None,
            Event::TurnStarted(t) => {
                let view = self.sessions.entry(sid).or_default();
                view.turn_holder = Some(t.holder_id.clone());
                view.streamed.clear();
                self.names.insert(t.holder_id.clone(), t.holder_name.clone());
                Some(format!("* {} has the turn; the agent is working", self.name_you(&t.holder_id)))
            }
            Event::TurnEnded(t) => {
                let view = self.sessions.entry(sid).or_default();
                view.turn_holder = None;
                view.streamed.clear();
                let how = match t.reason {
                    TurnEndReason::Completed => "the agent finished".to_string(),
                    TurnEndReason::Failed => {
                        format!("the agent failed: {}", t.error.as_deref().unwrap_or("no details"))
                    }
                    TurnEndReason::Cancelled => "the turn was cancelled".to_string(),
                    TurnEndReason::HolderGone => format!("{} left, turn released", self.name(&t.holder_id)),
                    TurnEndReason::AgentDied => {
                        format!("the agent stopped: {}", t.error.as_deref().unwrap_or("it is no longer running"))
                    }
                };
                Some(format!("* {how}; the turn is free"))
            }
            Event::ParticipantJoined(r) => {
                self.names.insert(r.participant_id.clone(), r.display_name.clone());
                self.sessions.entry(sid).or_default().roster.insert(r.participant_id.clone(), r.clone());
                let role = match r.role {
                    Role::Observer => " as an observer",
                    _ => "",
                };
                Some(format!("* {} joined{role}", self.name_you(&r.participant_id)))
            }
            Event::ParticipantRenamed(r) => {
                let before = self.name(&r.participant_id);
                self.names.insert(r.participant_id.clone(), r.display_name.clone());
                if let Some(row) = self.sessions.entry(sid).or_default().roster.get_mut(&r.participant_id) {
                    row.display_name = r.display_name.clone();
                }
                Some(format!("* {before} is now called {}", r.display_name))
            }
            Event::ParticipantLeft(l) => {
                self.sessions.entry(sid).or_default().roster.remove(&l.participant_id);
                let who = self.name_you(&l.participant_id);
                Some(match l.reason.as_str() {
                    "kicked" => format!("* {who} was removed by the host"),
                    "gone" => format!("* {who} is gone (did not come back in time)"),
                    "refused" => format!("* {who} was refused by the host"),
                    _ => format!("* {who} left"),
                })
            }
            Event::PresenceChanged(p) => {
                let view = self.sessions.entry(sid).or_default();
                if let Some(r) = view.roster.get_mut(&p.participant_id) {
                    r.presence = p.presence;
                }
                if self.me.as_ref() == Some(&p.participant_id) {
                    // Your own connection: `join` says itself when it lost and got it back (a
                    // replayed "Bob (you) lost connection; waiting for them…" spoke of you as
                    // someone else).
                    return None;
                }
                let who = self.name(&p.participant_id);
                match p.presence {
                    PresenceState::Reconnecting => {
                        Some(format!("* {who} lost connection; waiting for them to come back"))
                    }
                    PresenceState::Connected if p.connections == 1 => Some(format!("* {who} is connected")),
                    _ => None,
                }
            }
            Event::ParticipantMuted(m) => {
                if let Some(r) = self.sessions.entry(sid).or_default().roster.get_mut(&m.participant_id) {
                    r.muted = m.muted;
                }
                let who = self.name_you(&m.participant_id);
                Some(if m.muted { format!("* {who} was muted by the host") } else { format!("* {who} was unmuted") })
            }
            Event::VoteOpened(v) => {
                self.sessions.entry(sid).or_default().votes.insert(v.vote_id.clone(), v.clone());
                Some(self.vote_card(v))
            }
            Event::VoteProgress(p) => {
                let view = self.sessions.entry(sid).or_default();
                view.progress.insert(p.vote_id.clone(), p.clone());
                let opened = view.votes.get(&p.vote_id).cloned().unwrap_or_else(|| VoteOpened {
                    required: p.required.clone(),
                    ..unknown_vote(&p.vote_id, !p.answered.is_empty())
                });
                let state = VoteState { opened: &opened, progress: Some(p), resolved: None };
                let name = |id: &ParticipantId| self.name(id);
                let ballots = state.ballots(&Names { name: &name, me: self.me.as_ref() });
                Some(format!("* vote {}: {}", p.vote_id, ballots.join("; ")))
            }
            Event::VoteResolved(r) => {
                let view = self.sessions.entry(sid).or_default();
                let opened = view.votes.remove(&r.vote_id);
                let progress = view.progress.remove(&r.vote_id);
                let opened = opened.unwrap_or_else(|| unknown_vote(&r.vote_id, r.outcome == VoteOutcome::Answered));
                let state = VoteState { opened: &opened, progress: progress.as_ref(), resolved: Some(r) };
                let name = |id: &ParticipantId| self.name(id);
                let outcome = state.outcome(&Names { name: &name, me: self.me.as_ref() }).unwrap_or_default();
                // A multi-line answer or reason stays indented under the vote's line.
                Some(format!("* vote {} {}", r.vote_id, outcome.replace('\n', "\n  ")))
            }
            Event::SessionUpdated(u) => {
                let view = self.sessions.entry(sid.clone()).or_default();
                let mut lines = Vec::new();
                if view.title != u.title {
                    let was_known = !view.title.is_empty();
                    view.title = u.title.clone();
                    if was_known {
                        lines.push(format!("* session {sid} renamed to \"{}\"", u.title));
                    }
                }
                if view.agent_settings != u.agent_settings {
                    view.agent_settings = u.agent_settings.clone();
                    let now = agent_settings_text(&u.agent_settings);
                    lines.push(format!("* {sid}: the agent's settings are now {now} (from the next turn)"));
                }
                (!lines.is_empty()).then(|| lines.join("\n"))
            }
            Event::HistoryReplaced(h) => {
                let view = self.sessions.entry(sid).or_default();
                view.votes.clear();
                view.progress.clear();
                view.streamed.clear();
                Some(format!("* the host replaced the history ({}); reloading", h.reason))
            }
            Event::Snapshot(s) => Some(self.snapshot(s)),
            Event::ResyncRequired(_) => Some("* fell behind; catching up".to_string()),
            Event::Admission(a) => Some(match a.admission {
                Admission::Admitted => "* the host let you in".to_string(),
                Admission::Refused => "* the host refused to let you in".to_string(),
                Admission::Pending => "* waiting for the host to let you in".to_string(),
            }),
            Event::Closing(c) => Some(format!("* the host is closing this connection ({})", closing_text(&c.reason))),
            Event::Lobby(l) => {
                self.names.insert(l.participant_id.clone(), l.display_name.clone());
                let who = format!("{} ({})", l.display_name, l.participant_id);
                Some(match l.admission {
                    Admission::Pending => format!("* {who} is waiting in the lobby (share {})", l.share_id),
                    Admission::Admitted => format!("* {who} was let in"),
                    Admission::Refused => format!("* {who} was refused"),
                })
            }
            Event::AgentDelta(_) => None,
            Event::Storage(st) => Some(storage_text(st)),
        }
    }

    /// A vote card: what is decided, who decides, and how to vote.
    pub fn vote_card(&self, v: &VoteOpened) -> String {
        let name = |id: &ParticipantId| self.name(id);
        let deciders = VoteState::opened(v).deciders(&Names { name: &name, me: self.me.as_ref() });
        // `None`: no voting hints (the host's activity log).
        let mine = self.me.as_ref().map(|me| v.required.contains(me));
        let mut s = String::new();
        match &v.subject {
            VoteSubject::Plan { plan, on_approval } => {
                let _ = writeln!(s, "-- plan awaiting approval (vote {}, {deciders}) --", v.vote_id);
                for line in plan.lines() {
                    let _ = writeln!(s, "  {line}");
                }
                if let Some(note) = on_approval {
                    let _ = writeln!(s, "  ({note})");
                }
                match mine {
                    Some(true) => s.push_str("Type /approve, or /deny REASON."),
                    Some(false) => s.push_str("(your vote is not required)"),
                    None => {}
                }
            }
            VoteSubject::Question { questions } => {
                let _ = writeln!(s, "-- the agent asks (vote {}, {deciders}) --", v.vote_id);
                for (i, q) in questions.iter().enumerate() {
                    let _ = write!(s, "  {}. {}", i + 1, q.question);
                    if !q.options.is_empty() {
                        let _ = write!(s, " [{}]", q.options.join(" | "));
                    }
                    s.push('\n');
                }
                match mine {
                    Some(true) if questions.len() > 1 => {
                        s.push_str("Type /answer A|B|... (one answer per question, separated by |).")
                    }
                    Some(true) => s.push_str("Type /answer ANSWER."),
                    Some(false) => s.push_str("(your answer is not required)"),
                    None => {}
                }
            }
            VoteSubject::Tool { tool, input } => {
                let _ = write!(s, "-- the agent wants to use {tool} (vote {}, {deciders}) --\n  {input}", v.vote_id);
            }
        }
        if let Some(d) = v.deadline_ms {
            let now = self.fixed_now_ms.unwrap_or_else(wall_ms);
            let _ = write!(s, "\n({}; no decision by then means denied)", deadline_text(d, now));
        }
        s
    }

    /// A message as a line, the same live and in history (snapshots, `/older`): room chat set
    /// apart from prompts and numbered as shown for `/quote N`, the agent as `[agent]` (as its
    /// streamed text starts), people as `[name]`.
    fn message_line(&mut self, session: &SessionId, m: &MessageEvent) -> String {
        let view = self.sessions.entry(session.clone()).or_default();
        view.typing_shown.remove(&ParticipantId::from(m.author_id.as_str()));
        if m.room {
            view.room_lines.push((m.author_name.clone(), m.text.clone()));
            return format!("(room {}) {}: {}", view.room_lines.len(), m.author_name, m.text);
        }
        if m.author_id == "agent" {
            return format!("[agent] {}", m.text);
        }
        format!("[{}] {}", m.author_name, m.text)
    }

    /// Where `/older` continues for a session: the seq of the oldest message shown, if older
    /// messages exist.
    pub fn older_from(&self, session: &SessionId) -> Option<u64> {
        self.sessions.get(session).filter(|v| v.has_older).and_then(|v| v.oldest_shown)
    }

    /// A page of older messages (from `fetch_history`), printed oldest first under a header.
    pub fn older_page(&mut self, session: &SessionId, page: &FetchHistoryResult) -> String {
        let view = self.sessions.entry(session.clone()).or_default();
        view.has_older = page.has_older;
        if let Some(first) = page.messages.first() {
            view.oldest_shown = Some(first.seq);
        }
        let mut out = format!("--- {} earlier messages ---\n", page.messages.len());
        for m in &page.messages {
            let line = self.message_line(session, &m.message);
            let _ = writeln!(out, "{line}");
        }
        out.push_str(if page.has_older {
            "--- end of page (/older for more) ---"
        } else {
            "--- start of the session ---"
        });
        out
    }

    fn snapshot(&mut self, snap: &Snapshot) -> String {
        let sid = snap.session.id.clone();
        let mut out = self.joined(&snap.session, &snap.roster);
        let view = self.sessions.entry(sid.clone()).or_default();
        view.votes = snap.votes.iter().map(|v| (v.vote_id.clone(), v.clone())).collect();
        view.progress.clear();
        view.streamed = snap.streaming_text.clone();
        let skipped = snap.messages.len().saturating_sub(SNAPSHOT_TAIL);
        view.oldest_shown = snap.messages.get(skipped).map(|m| m.seq);
        view.has_older = skipped > 0 || snap.has_older;
        if view.has_older {
            let _ = writeln!(out, "(earlier messages: /older shows them)");
        }
        for m in &snap.messages[skipped..] {
            let line = self.message_line(&sid, &m.message);
            let _ = writeln!(out, "{line}");
        }
        for v in &snap.votes {
            let _ = writeln!(out, "{}", self.vote_card(v));
        }
        if !snap.streaming_text.is_empty() {
            let _ = write!(out, "[agent] {}", snap.streaming_text);
            if self.stream_deltas {
                self.line_open = true;
            } else {
                out.push('\n');
            }
        }
        out.trim_end_matches('\n').to_string()
    }
}

/// A vote known only by its id (its `vote_opened` was not seen): worded from what the frame
/// says.
fn unknown_vote(vote_id: &VoteId, question: bool) -> VoteOpened {
    VoteOpened {
        vote_id: vote_id.clone(),
        subject: if question {
            VoteSubject::Question { questions: Vec::new() }
        } else {
            VoteSubject::Plan { plan: String::new(), on_approval: None }
        },
        decided_by: DecidedBy::Consensus,
        required: Vec::new(),
        deadline_ms: None,
    }
}

/// Words for a `closing` reason.
pub fn closing_text(reason: &str) -> &str {
    match reason {
        "revoked" => "the share link was revoked",
        "kicked" => "you were removed by the host",
        "expired" => "the share link expired",
        "auth_timeout" => "no authentication in time",
        "shutdown" => "the host is shutting down",
        "refused" => "the host refused you",
        "rate_limited" => "too many failed attempts",
        other => other,
    }
}

/// A `storage` event for people.
pub fn storage_text(st: &StorageStatus) -> String {
    if st.available {
        "* the host can store again: messages are accepted".to_string()
    } else {
        format!(
            "!!! the host cannot store anything ({}): nothing new is accepted until it can; retrying",
            if st.message.is_empty() { "storage unavailable" } else { st.message.as_str() }
        )
    }
}

pub use crate::app::host::wall_ms;

/// A time (ms since the Unix epoch) as `HH:MM` on this computer's local clock (UTC where the
/// local time zone cannot be read).
pub fn local_time_text(ms: u64) -> String {
    #[cfg(unix)]
    {
        let secs = (ms / 1000) as libc::time_t;
        // SAFETY: `localtime_r` only writes the `tm` we own; a null return leaves it unused.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        if !unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
            return format!("{:02}:{:02}", tm.tm_hour, tm.tm_min);
        }
    }
    let utc = utc_text(ms);
    utc.get(11..16).unwrap_or(&utc).to_string()
}

/// A client trusts a vote deadline as a countdown only if, when the vote reaches it, the deadline
/// is in the future and at most this far away (`join` and the remote window alike).
pub const MAX_PLAUSIBLE_DEADLINE_MS: u64 = 7 * 24 * 3600 * 1000;

/// A vote deadline (host clock, ms since the Unix epoch) for people at local time `now_ms`:
/// "closes at 14:03:20 UTC, in 1:59". The host's clock decides; when this computer's clock
/// plainly disagrees with it (the deadline is past, or more than a week away, as a vote is
/// received) only that there is one is said.
pub fn deadline_text(deadline_ms: u64, now_ms: u64) -> String {
    match deadline_ms.checked_sub(now_ms).filter(|left| *left > 0 && *left <= MAX_PLAUSIBLE_DEADLINE_MS) {
        Some(left) => {
            let at = utc_text(deadline_ms);
            let time = at.split_once(' ').map_or(at.as_str(), |(_, t)| t);
            format!("closes at {time} UTC, in {}", clock_text(left))
        }
        None => "closes at a deadline on the host's clock".into(),
    }
}

/// A duration as a clock: `1:23`, or `1:02:03` from an hour on; partial seconds round up, so a
/// countdown shows `0:01` until the very end.
pub fn clock_text(ms: u64) -> String {
    let secs = ms.div_ceil(1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// A wall-clock time (ms since the Unix epoch) as `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest / 60 % 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MessageId;

    fn frame(body: Event) -> EventFrame {
        EventFrame { session_id: Some(SessionId::nth(1)), seq: Some(1), body }
    }

    fn entry(id: &str, name: &str, you: bool) -> RosterEntry {
        RosterEntry {
            participant_id: ParticipantId::from(id),
            display_name: name.into(),
            role: if id == "host" { Role::Host } else { Role::Participant },
            muted: false,
            presence: PresenceState::Connected,
            you,
        }
    }

    #[test]
    fn a_consensus_vote_with_no_required_voter_says_the_host_decides() {
        let r = Renderer::new(true);
        let v = VoteOpened {
            vote_id: crate::ids::VoteId::nth(1),
            subject: crate::protocol::VoteSubject::Plan { plan: "p".into(), on_approval: None },
            decided_by: DecidedBy::Consensus,
            required: vec![],
            deadline_ms: None,
        };
        let card = r.vote_card(&v);
        assert!(card.contains("the host decides"), "{card}");
        assert!(!card.contains("needs everyone: )"), "{card}");
    }

    #[test]
    fn a_vote_deadline_is_a_time_of_day_and_a_countdown_not_epoch_milliseconds() {
        // 2026-11-30 14:03:20 UTC.
        let deadline = 1_796_047_400_000;
        let mut r = Renderer::new(true);
        r.fixed_now_ms = Some(deadline - 119_500);
        let v = VoteOpened {
            vote_id: crate::ids::VoteId::nth(1),
            subject: crate::protocol::VoteSubject::Plan { plan: "p".into(), on_approval: None },
            decided_by: DecidedBy::Consensus,
            required: vec![],
            deadline_ms: Some(deadline),
        };
        let card = r.vote_card(&v);
        assert!(card.contains("(closes at 14:03:20 UTC, in 2:00; no decision by then means denied)"), "{card}");
        assert!(!card.contains(&deadline.to_string()), "{card}");
        // This computer's clock is far off the host's: no made-up countdown.
        assert_eq!(deadline_text(deadline, deadline + 5_000), "closes at a deadline on the host's clock");
        assert_eq!(
            deadline_text(deadline, deadline - 30 * 24 * 3600 * 1000),
            "closes at a deadline on the host's clock"
        );
        assert_eq!(utc_text(deadline), "2026-11-30 14:03:20");
    }

    #[test]
    fn your_own_lost_connection_is_not_reported_as_someone_elses() {
        // Issue 26: `join` printed "* Bob (you) lost connection; waiting for them to come back".
        let mut r = Renderer::new(true);
        r.me = Some(ParticipantId::from("p2"));
        let presence = |id: &str, presence| {
            frame(Event::PresenceChanged(PresenceChanged {
                participant_id: ParticipantId::from(id),
                presence,
                connections: 1,
            }))
        };
        assert_eq!(r.event(&presence("p2", PresenceState::Reconnecting)), "");
        assert_eq!(r.event(&presence("p2", PresenceState::Connected)), "");
        let other = r.event(&presence("p1", PresenceState::Reconnecting));
        assert!(other.contains("lost connection; waiting for them to come back"), "{other}");
        assert!(!other.contains("(you)"), "{other}");
    }

    #[test]
    fn a_refused_prompt_names_who_has_the_turn_never_an_id() {
        // Issue 26 item 1, in `join`: Ann was told "Ann (p1) holds the turn".
        let mut r = Renderer::new(true);
        r.me = Some(ParticipantId::from("p1"));
        let started = |id: &str, name: &str| {
            frame(Event::TurnStarted(TurnStarted {
                turn_id: 1,
                holder_id: ParticipantId::from(id),
                holder_name: name.into(),
            }))
        };
        r.event(&started("p1", "Ann"));
        let own = r.turn_locked_text(&SessionId::nth(1));
        assert!(own.contains("still working on your prompt") && !own.contains("p1"), "{own}");
        r.event(&started("p2", "Bob"));
        let other = r.turn_locked_text(&SessionId::nth(1));
        assert!(other.contains("Bob has the turn") && !other.contains("p2"), "{other}");
    }

    #[test]
    fn someone_typing_is_shown_once_until_they_send() {
        // Issue 26: `join` showed nobody typing.
        let mut r = Renderer::new(true);
        r.me = Some(ParticipantId::from("p2"));
        let typing = |id: &str, name: &str| EventFrame {
            seq: None,
            ..frame(Event::Typing(TypingEvent { participant_id: ParticipantId::from(id), display_name: name.into() }))
        };
        assert_eq!(r.event(&typing("p1", "Ann")).trim(), "* Ann is typing…");
        assert_eq!(r.event(&typing("p1", "Ann")), "", "one line while she keeps typing");
        assert_eq!(r.event(&typing("p2", "Bob")), "", "not yourself");
        let said = r.event(&frame(Event::Chat(MessageEvent {
            message_id: MessageId::nth(1),
            author_id: "p1".into(),
            author_name: "Ann".into(),
            text: "hi".into(),
            client_msg_id: None,
            room: true,
            at_ms: None,
        })));
        assert!(said.contains("Ann: hi"), "{said}");
        assert_eq!(r.event(&typing("p1", "Ann")).trim(), "* Ann is typing…", "typing again after she sent");
    }

    #[test]
    fn chat_lines_show_the_author_in_brackets() {
        let mut r = Renderer::new(true);
        let text = r.event(&frame(Event::Message(MessageEvent {
            message_id: MessageId::nth(1),
            author_id: "p1".into(),
            author_name: "Ann".into(),
            text: "hello".into(),
            client_msg_id: None,
            room: false,
            at_ms: None,
        })));
        assert_eq!(text, "[Ann] hello\n");
    }

    #[test]
    fn streamed_agent_text_is_printed_once_and_completed_by_the_final_message() {
        let mut r = Renderer::new(true);
        let d = |t: &str| frame(Event::AgentDelta(AgentDelta { turn_id: 1, text: t.into() }));
        let mut out = r.event(&d("You said"));
        out += &r.event(&d(": hi"));
        out += &r.event(&frame(Event::Message(MessageEvent {
            message_id: MessageId::nth(2),
            author_id: "agent".into(),
            author_name: "demo".into(),
            text: "You said: hi".into(),
            client_msg_id: None,
            room: false,
            at_ms: None,
        })));
        assert_eq!(out, "[agent] You said: hi\n");
    }

    #[test]
    fn the_roster_marks_you() {
        let mut r = Renderer::new(true);
        let info = SessionInfo {
            id: SessionId::nth(1),
            workspace_id: "w1".into(),
            title: "Session 1".into(),
            status: SessionStatus::Idle,
            turn_holder: None,
            participant_count: 2,
            agent: "demo".into(),
            last_seq: 0,
            plan_first: true,
            read_seq: None,
            agent_settings: Default::default(),
        };
        let out = r.joined(&info, &[entry("host", "Host", false), entry("p1", "Ann", true)]);
        assert!(out.contains("Ann (you)"), "{out}");
        assert!(out.contains("plan first"), "a plan-first session says so: {out}");
        assert!(out.contains("Host [host]"), "{out}");
        let joined = r.event(&frame(Event::ParticipantJoined(entry("p2", "Bob", false))));
        assert_eq!(joined, "* Bob joined\n");
    }

    #[test]
    fn history_renders_room_chat_and_the_agent_as_live_lines_do() {
        // Issue 26 item 5: history printed room chat like prompts ("[Bob] wait", so /quote could
        // not find it) and the agent as "[Agent]" where live lines say "[agent]".
        let msg = |seq: u64, author_id: &str, author_name: &str, text: &str, room: bool| HistoryMessage {
            seq,
            message: MessageEvent {
                message_id: MessageId::nth(seq),
                author_id: author_id.into(),
                author_name: author_name.into(),
                text: text.into(),
                client_msg_id: None,
                room,
                at_ms: None,
            },
        };
        let page = FetchHistoryResult {
            messages: vec![
                msg(1, "p1", "Ann", "fix login", false),
                msg(2, "p2", "Bob", "wait", true),
                msg(3, "agent", "Agent", "Done.", false),
            ],
            has_older: false,
        };
        let mut r = Renderer::new(true);
        let out = r.older_page(&SessionId::nth(1), &page);
        assert!(out.contains("[Ann] fix login\n(room 1) Bob: wait\n[agent] Done.\n"), "{out}");
        assert_eq!(r.sessions[&SessionId::nth(1)].room_lines, vec![("Bob".to_string(), "wait".to_string())]);
        // The same messages live read the same.
        let mut live = Renderer::new(true);
        let lines: String = page.messages.iter().map(|m| live.event(&frame(message_event(&m.message)))).collect();
        assert_eq!(lines, "[Ann] fix login\n(room 1) Bob: wait\n[agent] Done.\n");
    }

    fn message_event(m: &MessageEvent) -> Event {
        if m.room {
            Event::Chat(m.clone())
        } else {
            Event::Message(m.clone())
        }
    }

    #[test]
    fn a_multi_line_answer_stays_indented_under_its_label() {
        // Issue 26: the second line of an answer started at the left margin.
        let mut r = Renderer::new(true);
        let out = r.event(&frame(Event::VoteResolved(VoteResolved {
            vote_id: VoteId::nth(1),
            outcome: VoteOutcome::Answered,
            reason: None,
            answers: vec!["yes\nbut keep the old flag".into()],
            resolved_by: "consensus".into(),
        })));
        assert!(out.contains("answered — yes\n  but keep the old flag"), "{out}");
    }

    #[test]
    fn room_chat_is_numbered_and_set_apart_from_prompts() {
        let mut r = Renderer::new(true);
        let chat = |who: &str, text: &str| {
            frame(Event::Chat(MessageEvent {
                message_id: MessageId::nth(1),
                author_id: "p2".into(),
                author_name: who.into(),
                text: text.into(),
                client_msg_id: None,
                room: true,
                at_ms: None,
            }))
        };
        assert_eq!(r.event(&chat("Bob", "wait")), "(room 1) Bob: wait\n");
        assert_eq!(r.event(&chat("Ann", "ok")), "(room 2) Ann: ok\n");
    }

    #[test]
    fn a_plan_card_tells_a_required_voter_how_to_vote() {
        let mut r = Renderer::new(true);
        r.me = Some(ParticipantId::from("p1"));
        let out = r.event(&frame(Event::VoteOpened(VoteOpened {
            vote_id: VoteId::nth(1),
            subject: VoteSubject::Plan {
                plan: "1. do it".into(),
                on_approval: Some("Approving lets the agent edit files.".into()),
            },
            decided_by: DecidedBy::Consensus,
            required: vec![ParticipantId::from("p1")],
            deadline_ms: None,
        })));
        assert!(out.contains("1. do it") && out.contains("/approve") && out.contains("/deny"), "{out}");
        assert!(out.contains("(Approving lets the agent edit files.)"), "the card says what approval means: {out}");
    }

    #[test]
    fn a_question_answered_differently_says_who_answered_what() {
        // Issue 26 item 2: "answered by consensus" for Ann's yes and Bob's no.
        let mut r = Renderer::new(true);
        let info = SessionInfo {
            id: SessionId::nth(1),
            workspace_id: "w1".into(),
            title: "Session 1".into(),
            status: SessionStatus::Running,
            turn_holder: Some(ParticipantId::from("p1")),
            participant_count: 2,
            agent: "demo".into(),
            last_seq: 0,
            plan_first: false,
            read_seq: None,
            agent_settings: Default::default(),
        };
        r.joined(&info, &[entry("p1", "Ann", false), entry("p2", "Bob", true)]);
        let (ann, bob) = (ParticipantId::from("p1"), ParticipantId::from("p2"));
        let card = r.event(&frame(Event::VoteOpened(VoteOpened {
            vote_id: VoteId::nth(1),
            subject: VoteSubject::Question {
                questions: vec![Question {
                    question: "Go?".into(),
                    options: vec!["yes".into(), "no".into()],
                    multi_select: false,
                }],
            },
            decided_by: DecidedBy::Consensus,
            required: vec![ann.clone(), bob.clone()],
            deadline_ms: None,
        })));
        assert!(!card.contains("must agree") && !card.contains("consensus"), "{card}");
        let progress = r.event(&frame(Event::VoteProgress(VoteProgress {
            vote_id: VoteId::nth(1),
            required: vec![ann.clone(), bob.clone()],
            approved: vec![],
            denied: vec![],
            answered: vec![ann, bob],
            pending: vec![],
        })));
        assert!(!progress.contains("approved"), "{progress}");
        let out = r.event(&frame(Event::VoteResolved(VoteResolved {
            vote_id: VoteId::nth(1),
            outcome: VoteOutcome::Answered,
            reason: None,
            answers: vec!["Ann: yes\nBob: no".into()],
            resolved_by: "consensus".into(),
        })));
        assert!(out.contains("answered — Ann: yes · Bob (you): no"), "{out}");
        assert!(!out.contains("consensus"), "{out}");
    }
}
