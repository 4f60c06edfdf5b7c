//! System parameter bundles shared by many rules (as bevy's own code does with
//! `#[derive(SystemParam)]`): each names what it serves, so a system's signature says what the
//! rule reads and writes without a dozen loose parameters.
//!
//! - [`Effects`]: what a rule produces in a tick — frames staged for clients (released by the
//!   broadcast system only after the store committed) and store operations (one commit per tick).
//! - [`Directory`]: read access to who is who — the id index, connections, participants,
//!   shares — and the connection → participant → share lookup of a request's sender.
//! - [`People`]: write access to connections, participants and shares (pairing, presence,
//!   moderation).
//! - [`TickEnv`]: the clock and the engine settings.
//! - [`Registry`]: what creating entities needs — the id index, the id counters, `Commands`.
//! - [`Leaving`]: the messages that announce a participant leaving a vote or the host.
//! - [`Archive`]: what only the store keeps — history older than the in-memory tail.
//!
//! Systems with many parameters destructure these at the top (`let Effects { mut staged, mut
//! batch } = fx;`), so their rule reads exactly as before.

use super::requests::Req;
use super::resources::{Clock, Counters, Departed, Index, Staged, StoreRes, VoterDropped};
use super::util;
use crate::components::{Connection, EventLog, History, Participant, Share};
use crate::config::EngineConfig;
use crate::ids::{ConnId, SessionId};
use crate::persist::{MessageRow, StoreError, StoreOp};
use crate::protocol::{ErrorCode, Event};
use crate::systems::resources::PersistBatch;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;
use serde::Serialize;
use serde_json::Value;

/// A rule's output for this tick: staged frames and store operations.
#[derive(SystemParam)]
pub struct Effects<'w> {
    pub staged: ResMut<'w, Staged>,
    pub batch: ResMut<'w, PersistBatch>,
}

impl Effects<'_> {
    /// Replies `{"id", "result"}` to a request.
    pub fn reply_ok(&mut self, conn: ConnId, id: &Value, result: impl Serialize) {
        util::reply_ok(&mut self.staged, conn, id, result);
    }

    /// Replies `{"id", "error": {"code", "message"}}` to a request.
    pub fn reply_err(&mut self, conn: ConnId, id: &Value, code: ErrorCode, message: impl Into<String>) {
        util::reply_err(&mut self.staged, conn, id, code, message);
    }

    /// Session `id`'s entity when `me` may see it; otherwise answers `not_found` and returns
    /// `None` — the one way every request naming a session checks it.
    pub fn session_in_scope<T>(
        &mut self,
        index: &Index,
        req: &Req<T>,
        me: &crate::components::Participant,
        share: Option<&crate::components::Share>,
        id: &SessionId,
    ) -> Option<Entity> {
        let found = index.session_in_scope(me, share, id);
        if found.is_none() {
            util::reply_no_session(&mut self.staged, req.conn, &req.id, id);
        }
        found
    }

    /// Emits a seq'd session event (logged, persisted, staged for every member). Returns the seq.
    pub fn emit(&mut self, log: &mut EventLog, session: &SessionId, body: Event) -> u64 {
        util::emit(log, session, body, &mut self.batch, &mut self.staged)
    }

    /// Adds a store operation to this tick's commit.
    pub fn persist(&mut self, op: StoreOp) {
        self.batch.push(op);
    }

    /// Posts a message (its `seq` is assigned here): the `message` or `chat` event, the stored
    /// row, and the session's in-memory tail (when resident). Returns the seq.
    pub fn post_message(&mut self, log: &mut EventLog, history: &mut History, row: MessageRow) -> u64 {
        let seq = self.emit(log, &row.session.clone(), super::history::message_event(&row));
        let row = MessageRow { seq, ..row };
        self.persist(StoreOp::PutMessage(row.clone()));
        if log.resident.is_some() {
            history.push(row);
        } else {
            // Only in the store, like every message of a session not resident.
            history.has_older = true;
        }
        seq
    }
}

/// Read access to who is behind a connection.
#[derive(SystemParam)]
pub struct Directory<'w, 's> {
    pub index: Res<'w, Index>,
    pub conns: Query<'w, 's, &'static Connection>,
    pub participants: Query<'w, 's, &'static Participant>,
    pub shares: Query<'w, 's, &'static Share>,
}

impl Directory<'_, '_> {
    /// The participant behind `conn` and its share (none for the host), if authenticated.
    pub fn get(&self, conn: ConnId) -> Option<(&Participant, Option<&Share>)> {
        util::caller(&self.index, &self.conns, &self.participants, &self.shares, conn)
    }
}

/// Write access to connections, participants and shares.
#[derive(SystemParam)]
pub struct People<'w, 's> {
    pub conns: Query<'w, 's, &'static mut Connection>,
    pub participants: Query<'w, 's, &'static mut Participant>,
    pub shares: Query<'w, 's, &'static mut Share>,
}

/// The engine clock and settings.
#[derive(SystemParam)]
pub struct TickEnv<'w> {
    pub clock: Res<'w, Clock>,
    pub config: Res<'w, EngineConfig>,
}

/// What creating (or forgetting) entities needs: the id → entity index, the id counters and
/// `Commands` to spawn.
#[derive(SystemParam)]
pub struct Registry<'w, 's> {
    pub index: ResMut<'w, Index>,
    pub counters: ResMut<'w, Counters>,
    pub commands: Commands<'w, 's>,
}

/// A participant leaving: gone for good ([`Departed`]) or no longer a voter ([`VoterDropped`]).
#[derive(SystemParam)]
pub struct Leaving<'w> {
    pub departed: MessageWriter<'w, Departed>,
    pub dropped: MessageWriter<'w, VoterDropped>,
}

/// Reads of committed history the engine no longer holds in memory (paging, forks, idempotent
/// retries of old messages). Synchronous indexed reads on the engine thread's connection.
#[derive(SystemParam)]
pub struct Archive<'w> {
    pub store: ResMut<'w, StoreRes>,
}

impl Archive<'_> {
    /// Up to `limit` committed messages of `session` below `before_seq`, oldest first, and
    /// whether older ones exist.
    pub fn messages_before(
        &mut self,
        session: &SessionId,
        before_seq: u64,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, bool), StoreError> {
        self.store.get().messages_before(session, before_seq, limit)
    }

    /// The newest `limit` committed audit rows, oldest first.
    pub fn audit_tail(&mut self, limit: usize) -> Result<Vec<crate::persist::AuditRow>, StoreError> {
        self.store.get().audit_tail(limit)
    }

    /// The committed message `author_id` sent with `client_msg_id`.
    pub fn message_by_client_id(
        &mut self,
        session: &SessionId,
        author_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageRow>, StoreError> {
        self.store.get().message_by_client_id(session, author_id, client_msg_id)
    }
}
