//! Rules: the turn lock.
//!
//! Sending while nobody holds the turn acquires it atomically and starts an agent turn. Anyone
//! sending during the turn gets `turn_locked` naming the holder, and nothing is persisted or
//! broadcast for the rejected message. Message ids are assigned here; a retry with the same
//! `client_msg_id` returns the original result without a duplicate.

use super::params::{Archive, Directory, Effects, TickEnv};
use super::requests::{CancelTurn, Req, SendMessage};
use super::resources::*;
use crate::agent::AgentCommand;
use crate::components::*;
use crate::ids::{MessageId, ParticipantId, SessionId};
use crate::persist::{MessageRow, StoreOp};
use crate::protocol::Event;
use crate::protocol::*;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;

/// Longest accepted message text, in bytes.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;

/// What starting an agent turn needs: message ids, the workspace's directory and the agent
/// command queue.
#[derive(SystemParam)]
pub struct TurnStarts<'w, 's> {
    pub counters: ResMut<'w, Counters>,
    pub agents: ResMut<'w, Agents>,
    pub workspaces: Query<'w, 's, &'static Workspace>,
}

/// Everything ending a turn writes to: the clock, the message counter (the agent's reply is a
/// message), the tick's effects, and the `TurnClosed` message that closes the turn's votes.
#[derive(SystemParam)]
pub struct TurnEnds<'w> {
    pub clock: Res<'w, Clock>,
    pub counters: ResMut<'w, Counters>,
    pub fx: Effects<'w>,
    pub closed: MessageWriter<'w, TurnClosed>,
}

impl TurnEnds<'_> {
    /// Ends the running turn (every path goes through here, so every path releases the lock).
    pub fn end_turn(
        &mut self,
        session: &mut Session,
        lock: &mut TurnLock,
        log: &mut EventLog,
        history: &mut History,
        reason: TurnEndReason,
        error: Option<String>,
    ) {
        let Some(holder) = lock.holder.take() else { return };
        // What remotes' stream masker held back goes out before the reply and `turn_ended`.
        self.fx.staged.out.push(Outgoing::FlushStream { session: session.id.clone() });
        // What the agent streamed is kept: nothing the room saw is lost.
        let text = std::mem::take(&mut lock.streamed);
        if !text.is_empty() {
            self.post_agent_message(session, log, history, text);
        }
        session.status = SessionStatus::Idle;
        self.fx.emit(
            log,
            &session.id,
            Event::TurnEnded(TurnEnded { turn_id: lock.turn_id, holder_id: holder, reason, error }),
        );
        self.fx.persist(StoreOp::PutSession(session.row(lock, log)));
        self.fx.persist(StoreOp::ClearStreamed(session.id.clone()));
        self.closed.write(TurnClosed {
            session: session.id.clone(),
            turn_id: lock.turn_id,
            reason: format!("turn ended ({})", reason.as_str()),
        });
    }

    /// Posts the agent's reply as messages authored by `agent`: one, or several in order when it
    /// is longer than a message may be on the wire ([`crate::protocol::MAX_MESSAGE_JSON_BYTES`]),
    /// cut outside the secrets the masker finds in it (each message is masked on its own for
    /// remotes: a secret cut in two would be masked in neither).
    fn post_agent_message(&mut self, session: &Session, log: &mut EventLog, history: &mut History, text: String) {
        if crate::protocol::json_len(&text) <= crate::protocol::MAX_MESSAGE_JSON_BYTES {
            return self.post_agent_piece(session, log, history, text);
        }
        let masker = self.fx.staged.masker.clone();
        for piece in crate::protocol::split_json(&text, crate::protocol::MAX_MESSAGE_JSON_BYTES, |t| masker.spans(t)) {
            self.post_agent_piece(session, log, history, piece.to_string());
        }
    }

    fn post_agent_piece(&mut self, session: &Session, log: &mut EventLog, history: &mut History, text: String) {
        self.counters.message += 1;
        let row = MessageRow {
            id: MessageId::nth(self.counters.message),
            session: session.id.clone(),
            seq: 0,
            author_id: "agent".into(),
            author_name: "Agent".into(),
            text,
            client_msg_id: None,
            created_at: self.clock.now,
            room: false,
        };
        self.fx.post_message(log, history, row);
    }
}

pub fn send_message(
    mut requests: MessageReader<Req<SendMessage>>,
    env: TickEnv,
    dir: Directory,
    starts: TurnStarts,
    mut sessions: Query<(&mut Session, &mut TurnLock, &mut EventLog, &mut History)>,
    mut fx: Effects,
    mut archive: Archive,
) {
    let TickEnv { clock, config } = env;
    let TurnStarts { mut counters, mut agents, workspaces } = starts;
    for req in requests.read() {
        let SendMessage(p) = &req.params;
        let Some((me, share)) = dir.get(req.conn) else { continue };
        let Some(e) = fx.session_in_scope(&dir.index, req, me, share, &p.session_id) else { continue };
        let Ok((mut session, mut lock, mut log, mut history)) = sessions.get_mut(e) else { continue };
        if admit_message(req, p, me, &session.id, &history, &mut archive, &mut fx) == Admit::Answered {
            continue;
        }
        if let Some(holder) = &lock.holder {
            let name = dir
                .index
                .participants
                .get(holder)
                .and_then(|&e| dir.participants.get(e).ok())
                .map(|p| p.display_name.clone())
                .unwrap_or_else(|| holder.to_string());
            fx.reply_err(
                req.conn,
                &req.id,
                ErrorCode::TurnLocked,
                format!("{name} ({holder}) holds the turn; wait until the agent finishes"),
            );
            continue;
        }
        // Acquire the turn and post the message.
        let row = new_message(&mut counters, &session.id, me, p, clock.now, false);
        let mid = row.id.clone();
        let seq = fx.post_message(&mut log, &mut history, row);

        lock.turn_id += 1;
        lock.holder = Some(me.id.clone());
        lock.streamed.clear();
        lock.consensus = match share {
            Some(s) => s.consensus_required && s.collaborative,
            None => config.default_consensus,
        };
        session.status = SessionStatus::Running;
        fx.emit(
            &mut log,
            &session.id.clone(),
            Event::TurnStarted(TurnStarted {
                turn_id: lock.turn_id,
                holder_id: me.id.clone(),
                holder_name: me.display_name.clone(),
            }),
        );
        fx.persist(StoreOp::PutSession(session.row(&lock, &log)));
        let dir = dir
            .index
            .workspaces
            .get(&session.workspace)
            .and_then(|&e| workspaces.get(e).ok())
            .map(|w| w.dir.clone())
            .unwrap_or_default();
        agents.queued.push(AgentCommand::StartTurn {
            session: session.id.clone(),
            turn_id: lock.turn_id,
            workspace_dir: dir,
            spec: session.agent.clone(),
            prompt: p.text.clone(),
            author_name: me.display_name.clone(),
            conversation: session.agent_memory.conversation.clone(),
            settings: session.agent_settings.clone(),
        });
        fx.reply_ok(req.conn, &req.id, SendMessageResult { message_id: mid, seq, duplicate: false });
    }
}

/// A participant's admitted prompt (`room: false`) or room chat (`room: true`) as a new message
/// row with the next message id (its seq is set when it is posted).
pub fn new_message(
    counters: &mut Counters,
    session: &SessionId,
    me: &Participant,
    p: &SendMessageParams,
    now: u64,
    room: bool,
) -> MessageRow {
    counters.message += 1;
    MessageRow {
        id: MessageId::nth(counters.message),
        session: session.clone(),
        seq: 0,
        author_id: me.id.to_string(),
        author_name: me.display_name.clone(),
        text: p.text.clone(),
        client_msg_id: Some(p.client_msg_id.clone()),
        created_at: now,
        room,
    }
}

/// What [`admit_message`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Refused, or a retry answered with the original result: nothing more to do.
    Answered,
    /// A new message that passed every shared check.
    New,
}

/// The checks a prompt (`send_message`) and a room chat message (`send_chat`) share, after the
/// session was found in scope: write access (observers read only), mute, membership, the
/// `client_msg_id` and the text; then an idempotent retry (same author and `client_msg_id`) is
/// answered with the original result, nothing new. Replies to every refusal itself.
pub fn admit_message<T>(
    req: &Req<T>,
    p: &SendMessageParams,
    me: &Participant,
    session: &SessionId,
    history: &History,
    archive: &mut Archive,
    fx: &mut Effects,
) -> Admit {
    let refuse = |fx: &mut Effects, code: ErrorCode, message: String| {
        fx.reply_err(req.conn, &req.id, code, message);
        Admit::Answered
    };
    if !me.can_write() {
        return refuse(fx, ErrorCode::Forbidden, "observers can read but not send".into());
    }
    if me.muted {
        return refuse(fx, ErrorCode::Forbidden, "you are muted by the host".into());
    }
    if !me.sessions.contains(session) {
        return refuse(fx, ErrorCode::NotJoined, format!("join {session} first"));
    }
    if p.client_msg_id.is_empty() || p.client_msg_id.chars().count() > 128 {
        return refuse(fx, ErrorCode::InvalidParams, "client_msg_id must be 1-128 characters".into());
    }
    if p.text.trim().is_empty() || p.text.len() > MAX_TEXT_BYTES {
        return refuse(
            fx,
            ErrorCode::InvalidParams,
            format!("text must be non-empty and at most {MAX_TEXT_BYTES} bytes"),
        );
    }
    // Idempotent retry: same author + client_msg_id → same result, nothing new. The tail's
    // keys are in memory; an older message is looked up in the store.
    let earlier = match history.client_ids.get(&(me.id.clone(), p.client_msg_id.clone())) {
        Some((mid, seq, text)) => Some((mid.clone(), *seq, text.clone())),
        None if history.has_older => match archive.message_by_client_id(session, me.id.as_str(), &p.client_msg_id) {
            Ok(found) => found.map(|m| (m.id, m.seq, m.text)),
            Err(e) => {
                tracing::error!("message to {session}: cannot check for a retry: {e}");
                let message = format!("cannot check whether this message was already sent: {e}");
                return refuse(fx, ErrorCode::Internal, message);
            }
        },
        None => None,
    };
    let Some((mid, seq, text)) = earlier else { return Admit::New };
    if text == p.text {
        fx.reply_ok(req.conn, &req.id, SendMessageResult { message_id: mid, seq, duplicate: true });
        return Admit::Answered;
    }
    let message = "this client_msg_id was already used for a different message".to_string();
    refuse(fx, ErrorCode::DuplicateClientMsgId, message)
}

/// `cancel_turn`: the holder or the host stops the running turn.
pub fn cancel_turn(
    mut requests: MessageReader<Req<CancelTurn>>,
    dir: Directory,
    mut agents: ResMut<Agents>,
    mut sessions: Query<(&mut Session, &mut TurnLock, &mut EventLog, &mut History)>,
    mut turns: TurnEnds,
) {
    for req in requests.read() {
        let CancelTurn(p) = &req.params;
        let Some((me, share)) = dir.get(req.conn) else { continue };
        let Some(e) = turns.fx.session_in_scope(&dir.index, req, me, share, &p.session_id) else { continue };
        let Ok((mut session, mut lock, mut log, mut history)) = sessions.get_mut(e) else { continue };
        let Some(holder) = lock.holder.clone() else {
            turns.fx.reply_err(req.conn, &req.id, ErrorCode::NoTurn, "no turn is running");
            continue;
        };
        if holder != me.id && !me.id.is_host() {
            turns.fx.reply_err(req.conn, &req.id, ErrorCode::Forbidden, "only the turn holder or the host can cancel");
            continue;
        }
        let turn_id = lock.turn_id;
        turns.end_turn(&mut session, &mut lock, &mut log, &mut history, TurnEndReason::Cancelled, None);
        agents.queued.push(AgentCommand::Cancel { session: p.session_id.clone(), turn_id });
        turns.fx.reply_ok(req.conn, &req.id, Ack { ok: true });
    }
}

/// The holder gone past grace (or kicked) releases the turn.
pub fn release_on_departure(
    mut departed: MessageReader<Departed>,
    index: Res<Index>,
    mut agents: ResMut<Agents>,
    mut sessions: Query<(&mut Session, &mut TurnLock, &mut EventLog, &mut History)>,
    mut turns: TurnEnds,
) {
    let gone: Vec<ParticipantId> = departed.read().map(|d| d.participant.clone()).collect();
    if gone.is_empty() {
        return;
    }
    let ids: Vec<SessionId> = index.sessions.keys().cloned().collect();
    for sid in ids {
        let Ok((mut session, mut lock, mut log, mut history)) = sessions.get_mut(index.sessions[&sid]) else {
            continue;
        };
        if !lock.holder.as_ref().is_some_and(|h| gone.contains(h)) {
            continue;
        }
        let turn_id = lock.turn_id;
        turns.end_turn(
            &mut session,
            &mut lock,
            &mut log,
            &mut history,
            TurnEndReason::HolderGone,
            Some("the turn holder left".into()),
        );
        agents.queued.push(AgentCommand::Cancel { session: sid, turn_id });
    }
}
