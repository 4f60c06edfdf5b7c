//! Rule: history is paged. The engine keeps only a session's latest messages
//! ([`crate::persist::HISTORY_TAIL`]); a snapshot carries the latest page and `fetch_history`
//! returns older pages, read from the tail while it covers them and from the store beyond it.
//! Every page is bounded in count (`limit`, at most [`HISTORY_PAGE_MESSAGES`]) and in bytes of
//! text ([`HISTORY_PAGE_BYTES`]; a page holds at least one message when one exists).

use super::params::{Archive, Directory};
use super::requests::{FetchHistory, MarkRead, Req};
use super::resources::*;
use super::util::{reply_err, reply_history_unreadable, reply_no_session, reply_ok};
use crate::components::{History, Session};
use crate::persist::MessageRow;
use crate::protocol::*;
use bevy_ecs::prelude::*;

/// Default page size of `fetch_history`.
pub const DEFAULT_PAGE: usize = 100;

/// A message's payload, as its event and history pages carry it.
pub fn message_payload(m: &MessageRow) -> MessageEvent {
    MessageEvent {
        message_id: m.id.clone(),
        author_id: m.author_id.clone(),
        author_name: m.author_name.clone(),
        text: m.text.clone(),
        client_msg_id: m.client_msg_id.clone(),
        room: m.room,
        at_ms: Some(m.created_at),
    }
}

/// The session event that posts a message: `chat` for room chat, else `message`.
pub fn message_event(m: &MessageRow) -> crate::protocol::Event {
    if m.room {
        crate::protocol::Event::Chat(message_payload(m))
    } else {
        crate::protocol::Event::Message(message_payload(m))
    }
}

/// A stored message as a page entry.
pub fn history_message(m: &MessageRow) -> HistoryMessage {
    HistoryMessage { seq: m.seq, message: message_payload(m) }
}

/// A page being filled newest first, within the count and byte bounds.
struct Page {
    newest_first: Vec<HistoryMessage>,
    bytes: usize,
    limit: usize,
}

impl Page {
    fn new(limit: usize) -> Page {
        Page { newest_first: Vec::new(), bytes: 0, limit }
    }

    /// Adds `m` unless the page is full; returns whether it was added.
    fn offer(&mut self, m: &MessageRow) -> bool {
        let full = self.newest_first.len() >= self.limit
            || (!self.newest_first.is_empty() && self.bytes + json_len(&m.text) > HISTORY_PAGE_BYTES);
        if full {
            return false;
        }
        self.bytes += json_len(&m.text);
        self.newest_first.push(history_message(m));
        true
    }

    fn room(&self) -> usize {
        self.limit - self.newest_first.len()
    }

    fn oldest_first(mut self) -> Vec<HistoryMessage> {
        self.newest_first.reverse();
        self.newest_first
    }
}

/// Fills `page` from the in-memory tail with messages below `before`; returns whether the
/// page filled up before the tail ran out (older messages remain in the tail).
fn fill_from_tail(page: &mut Page, history: &History, before: u64) -> bool {
    history.messages.iter().rev().filter(|m| m.seq < before).any(|m| !page.offer(m))
}

/// The latest page of a session, for its snapshot: `(messages oldest first, has_older)`.
pub fn latest_page(history: &History) -> (Vec<HistoryMessage>, bool) {
    let mut page = Page::new(HISTORY_PAGE_MESSAGES);
    let stopped = fill_from_tail(&mut page, history, u64::MAX);
    (page.oldest_first(), stopped || history.has_older)
}

/// `fetch_history`: a page of messages older than `before_seq` (the latest page without it).
pub fn fetch_history(
    mut requests: MessageReader<Req<FetchHistory>>,
    dir: Directory,
    sessions: Query<(&Session, &History)>,
    mut staged: ResMut<Staged>,
    mut archive: Archive,
) {
    for req in requests.read() {
        let FetchHistory(p) = &req.params;
        let Some((me, share)) = dir.get(req.conn) else { continue };
        let Some(e) = dir.index.session_in_scope(me, share, &p.session_id) else {
            reply_no_session(&mut staged, req.conn, &req.id, &p.session_id);
            continue;
        };
        let Ok((_, history)) = sessions.get(e) else { continue };
        let limit = p.limit.map(|l| l as usize).unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > HISTORY_PAGE_MESSAGES {
            reply_err(
                &mut staged,
                req.conn,
                &req.id,
                ErrorCode::InvalidParams,
                format!("limit must be 1-{HISTORY_PAGE_MESSAGES}"),
            );
            continue;
        }
        let before = p.before_seq.unwrap_or(u64::MAX);
        let mut page = Page::new(limit);
        let has_older = if fill_from_tail(&mut page, history, before) {
            true
        } else if history.has_older && page.room() > 0 {
            // Beyond the tail: the store, below both `before` and the tail's first message.
            let below = history.first_seq().map_or(before, |first| first.min(before));
            match archive.messages_before(&p.session_id, below, page.room()) {
                Ok((rows, more)) => {
                    let cut = rows.iter().rev().any(|m| !page.offer(m));
                    more || cut
                }
                Err(e) => {
                    reply_history_unreadable(&mut staged, req.conn, &req.id, &p.session_id, &e);
                    continue;
                }
            }
        } else {
            history.has_older
        };
        reply_ok(&mut staged, req.conn, &req.id, FetchHistoryResult { messages: page.oldest_first(), has_older });
    }
}

/// `mark_read`: the caller has seen the session up to `seq`. The marker is kept per person and
/// session, persisted, and only moves forward; it is reported back as `read_seq` by
/// `list_sessions` and `join_session` (for the unread counts a client shows).
pub fn mark_read(
    mut requests: MessageReader<Req<MarkRead>>,
    index: Res<Index>,
    mut participants: Query<&mut crate::components::Participant>,
    conns: Query<&crate::components::Connection>,
    shares: Query<&crate::components::Share>,
    sessions: Query<(&Session, &crate::components::EventLog)>,
    mut fx: super::params::Effects,
) {
    for req in requests.read() {
        let MarkRead(p) = &req.params;
        let Some(pid) =
            index.conns.get(&req.conn).and_then(|&e| conns.get(e).ok()).and_then(|c| c.participant().cloned())
        else {
            continue;
        };
        let Some(mut me) = index.participants.get(&pid).and_then(|&e| participants.get_mut(e).ok()) else { continue };
        let share = me.share.as_ref().and_then(|s| index.shares.get(s)).and_then(|&e| shares.get(e).ok());
        let Some(e) = fx.session_in_scope(&index, req, &me, share, &p.session_id) else { continue };
        let Ok((_, log)) = sessions.get(e) else { continue };
        if !me.sessions.contains(&p.session_id) {
            fx.reply_err(req.conn, &req.id, ErrorCode::NotJoined, format!("join {} first", p.session_id));
            continue;
        }
        if p.seq > log.last_seq() {
            let message = format!("seq {} is past the session's last event ({})", p.seq, log.last_seq());
            fx.reply_err(req.conn, &req.id, ErrorCode::InvalidParams, message);
            continue;
        }
        let before = me.read.get(&p.session_id).copied().unwrap_or(0);
        if p.seq > before {
            me.read.insert(p.session_id.clone(), p.seq);
            let row = me.row();
            fx.persist(crate::persist::StoreOp::PutParticipant(row));
        }
        let read_seq = before.max(p.seq);
        fx.reply_ok(req.conn, &req.id, MarkReadResult { read_seq });
    }
}
