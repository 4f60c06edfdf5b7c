//! The persistence contract between the pure engine and a store.
//!
//! Systems never touch SQLite. During a tick they append [`StoreOp`]s to the engine's `PersistBatch`
//! resource; the persist system hands the whole batch to the [`Store`] in one call, which commits
//! it in one transaction *before* the broadcast system releases that tick's frames. At start the
//! engine rebuilds its world from [`Restored`].

use crate::ids::{MessageId, ParticipantId, SessionId, ShareId, VoteId, WorkspaceId};
use crate::protocol::{Admission, Role, SessionStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Which agent backend a workspace/session runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpec {
    /// `demo`, `claude`, `codex` or `command`.
    pub kind: String,
    /// For `command`: the executable (and for `claude`: an optional binary path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Extra arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// "Plan first": every turn starts the agent in plan mode, so its plan goes to a vote before
    /// it changes anything (`claude`: `--permission-mode plan`; `codex`: its plan mode). `None`:
    /// the backend's default, on for `claude` and `codex` (the consensus vote is the point), off
    /// for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_first: Option<bool>,
}

impl AgentSpec {
    pub fn demo() -> Self {
        Self { kind: "demo".into(), command: None, args: Vec::new(), plan_first: None }
    }

    /// Whether turns start in plan mode (see [`AgentSpec::plan_first`]).
    pub fn plan_first(&self) -> bool {
        self.plan_first.unwrap_or(matches!(self.kind.as_str(), "claude" | "codex"))
    }

    /// For people: the kind, the command line as a shell would read it, and whether turns plan
    /// first — `claude (claude --model haiku), plan first`.
    pub fn label(&self) -> String {
        let mut label = match &self.command {
            Some(cmd) => {
                let line = std::iter::once(cmd).chain(&self.args).map(|w| shell_word(w)).collect::<Vec<_>>().join(" ");
                format!("{} ({line})", self.kind)
            }
            None => self.kind.clone(),
        };
        if self.plan_first() {
            label.push_str(", plan first");
        }
        label
    }
}

/// `word` quoted when a shell would split it.
fn shell_word(word: &str) -> String {
    if !word.is_empty() && !word.chars().any(|c| c.is_whitespace() || "'\"\\$`".contains(c)) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

impl Default for AgentSpec {
    fn default() -> Self {
        Self::demo()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceRow {
    pub id: WorkspaceId,
    pub name: String,
    pub dir: String,
    pub agent: AgentSpec,
}

/// A session as stored: the session's own fields ([`SessionRecord`], which the engine's `Session`
/// component holds as it is) and what the session's turn lock and event log own, each kept once
/// in its component and gathered here when the row is written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    #[serde(flatten)]
    pub session: SessionRecord,
    pub turn_holder: Option<ParticipantId>,
    /// Id of the running (or last) turn.
    pub turn_id: u64,
    pub next_seq: u64,
    /// Text the agent streamed so far in the running turn (empty when idle).
    #[serde(default)]
    pub streamed: String,
}

/// The stored fields that belong to the session itself: the one definition the engine's
/// `Session` component and the store's `sessions` table share. A new stored field of a session
/// goes here and into the store's SQL (`crates/store/src/rows.rs` and a migration), nowhere else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub workspace: WorkspaceId,
    pub title: String,
    pub status: SessionStatus,
    pub agent: AgentSpec,
    /// Vote deadline for this session in ms (overrides the share's), if any.
    pub vote_deadline_ms: Option<u64>,
    pub created_at: u64,
    /// Tools the host allowed "always" in this session: their requests are approved without
    /// asking.
    #[serde(default)]
    pub allowed_tools: BTreeSet<String>,
    /// What the session's agent keeps between turns (its conversation), kept across restarts and
    /// sent with every turn.
    #[serde(default)]
    pub agent_memory: AgentMemory,
    /// The agent settings every turn gets (`set_agent_settings`).
    #[serde(default)]
    pub agent_settings: crate::protocol::AgentSettings,
}

/// What a session's agent backend keeps between turns, stored with the session so a host
/// restart does not make the agent forget: the conversation the next turn resumes (the claude
/// CLI's session id, passed as `--resume`). Clearing the session forgets it (a new conversation);
/// a fork starts without it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentMemory {
    /// The backend's conversation id, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
}

/// A share as stored: the one definition the engine's `Share` component (which holds it as it
/// is) and the store's `shares` table share. A new stored field of a share goes here and into the
/// store's SQL (`crates/store/src/rows.rs` and a migration), nowhere else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRow {
    pub id: ShareId,
    pub label: String,
    /// SHA-256 of the token. The token itself is never stored.
    pub token_hash: [u8; 32],
    /// The share's scope (non-empty).
    pub workspaces: BTreeSet<WorkspaceId>,
    pub collaborative: bool,
    pub consensus_required: bool,
    pub admission_required: bool,
    pub role: Role,
    pub expires_at: Option<u64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
    pub created_at: u64,
    pub vote_deadline_ms: Option<u64>,
}

/// A participant as stored: the participant's own fields ([`ParticipantRecord`], which the
/// engine's `Participant` component holds as it is) and whether it is gone, which the component
/// knows from its presence (runtime state, of which only "gone for good" survives a restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRow {
    #[serde(flatten)]
    pub participant: ParticipantRecord,
    pub gone: bool,
}

/// The stored fields that belong to the participant itself: the one definition the engine's
/// `Participant` component and the store's `participants` table share. A new stored field of a
/// participant goes here and into the store's SQL (`crates/store/src/rows.rs` and a migration),
/// nowhere else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    pub id: ParticipantId,
    pub display_name: String,
    pub role: Role,
    /// The share it came by (`None` for the host).
    pub share: Option<ShareId>,
    pub muted: bool,
    pub admission: Admission,
    /// SHA-256 of the resume token; `None` once dead (kicked / gone).
    pub resume_hash: Option<[u8; 32]>,
    /// The sessions it joined.
    pub sessions: BTreeSet<SessionId>,
    /// Read markers: the last seq seen per session (`mark_read`).
    #[serde(default)]
    pub read: std::collections::BTreeMap<SessionId, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRow {
    pub id: MessageId,
    pub session: SessionId,
    pub seq: u64,
    /// Participant id, or `agent`.
    pub author_id: String,
    pub author_name: String,
    pub text: String,
    pub client_msg_id: Option<String>,
    pub created_at: u64,
    /// Room chat (to the people in the session, not to the agent).
    #[serde(default)]
    pub room: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRow {
    pub id: VoteId,
    pub session: SessionId,
    pub turn_id: u64,
    /// The agent's request id this vote answers.
    pub request_id: String,
    /// JSON of [`crate::protocol::VoteSubject`].
    pub subject_json: String,
    pub decided_by: String,
    pub required: Vec<ParticipantId>,
    pub deadline: Option<u64>,
    /// `approved` / `denied` / `answered` once resolved.
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub opened_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BallotRow {
    pub vote: VoteId,
    pub voter: ParticipantId,
    /// `approve`, `deny` or `answer`.
    pub choice: String,
    /// Deny reason or JSON array of answers.
    pub detail: Option<String>,
    pub at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub at: u64,
    /// Participant id of who acted (`host`, `p3`, `system`).
    pub actor: String,
    /// e.g. `joined`, `kicked`, `muted`, `revoked`, `voted`, `share_minted`.
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    pub session: SessionId,
    pub seq: u64,
    /// The exact frame sent to clients.
    pub frame: String,
}

/// One write. A tick's writes are committed together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreOp {
    PutWorkspace(WorkspaceRow),
    PutSession(SessionRow),
    PutShare(ShareRow),
    PutParticipant(ParticipantRow),
    PutMessage(MessageRow),
    /// Clear a session's history (messages and event log).
    ClearSession(SessionId),
    /// Appends to the session's event log, of which a store keeps only the last [`EVENT_TAIL`]
    /// events (all that is ever read back): `SqliteStore` deletes older ones in the same commit.
    AppendEvent(EventRow),
    /// Text the agent streamed this tick in the running turn, at byte `offset` of the turn's
    /// text (appended, never rewritten: saving costs what was streamed).
    AppendStreamed {
        session: SessionId,
        offset: u64,
        text: String,
    },
    /// The running turn ended: its streamed text is a message now (or gone with it).
    ClearStreamed(SessionId),
    PutVote(VoteRow),
    PutBallot(BallotRow),
    Audit(AuditRow),
    /// The host's settings (`update_settings`).
    PutSettings(SettingsRow),
}

/// The host's settings as saved (`update_settings`); they win over the built-in defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsRow {
    pub host_name: String,
    pub default_consensus: bool,
    #[serde(default)]
    pub default_vote_deadline_ms: Option<u64>,
}

/// Everything needed to rebuild the world at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub workspaces: Vec<WorkspaceRow>,
    pub sessions: Vec<SessionRow>,
    pub shares: Vec<ShareRow>,
    pub participants: Vec<ParticipantRow>,
    /// The latest [`HISTORY_TAIL`] messages of each session, ordered by (session, seq). Older
    /// ones stay in the store and are read page by page ([`Store::messages_before`]).
    pub messages: Vec<MessageRow>,
    /// Sessions that have messages older than the ones in `messages`.
    pub older_messages: std::collections::BTreeSet<SessionId>,
    /// Tail of each session's event log (the last `EVENT_TAIL` events), ordered by (session, seq).
    pub events: Vec<EventRow>,
    /// Votes, ordered by id.
    pub votes: Vec<VoteRow>,
    /// Ballots, ordered by (vote, voter).
    pub ballots: Vec<BallotRow>,
    /// Largest audit id (only for information).
    pub audit_count: u64,
    /// The host's saved settings.
    pub settings: Option<SettingsRow>,
    /// Sessions restored without their tails ([`Store::load_without_tails`]): what the engine
    /// needs of each at start. `messages`, `older_messages` and `events` hold nothing of these;
    /// their tails are read when first needed ([`Store::load_tails`]).
    pub summaries: std::collections::BTreeMap<SessionId, SessionSummary>,
}

/// What the engine keeps of a session whose tails are not in memory: enough to continue its
/// seqs, the message id counter and engine time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionSummary {
    /// Seq of its last stored event (0: none).
    pub last_event_seq: u64,
    /// Whether it has any stored message.
    pub has_messages: bool,
    /// Its newest message's id and `created_at`, if any.
    pub newest_message: Option<(MessageId, u64)>,
}

/// One session's tails as stored ([`Store::load_tails`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionTails {
    /// Its latest [`HISTORY_TAIL`] messages, by seq.
    pub messages: Vec<MessageRow>,
    /// Whether it has messages older than these.
    pub has_older: bool,
    /// Its last [`EVENT_TAIL`] events, by seq.
    pub events: Vec<EventRow>,
}

impl Restored {
    /// The latest time the restored world holds (a message, a vote, a ballot, a share or a
    /// session created): engine time starts no earlier (`engine::clock`).
    pub fn latest_time(&self) -> u64 {
        let messages = self.messages.iter().map(|m| m.created_at);
        let votes = self.votes.iter().map(|v| v.opened_at);
        let ballots = self.ballots.iter().map(|b| b.at);
        let shares = self.shares.iter().map(|s| s.created_at);
        let sessions = self.sessions.iter().map(|s| s.session.created_at);
        let summarised = self.summaries.values().filter_map(|s| s.newest_message.as_ref().map(|(_, at)| *at));
        messages.chain(votes).chain(ballots).chain(shares).chain(sessions).chain(summarised).max().unwrap_or(0)
    }

    /// The same world with every session's tails taken out and summarised (what
    /// [`Store::load_without_tails`] returns).
    pub fn without_tails(mut self) -> Restored {
        let mut summaries: std::collections::BTreeMap<SessionId, SessionSummary> =
            self.sessions.iter().map(|s| (s.session.id.clone(), SessionSummary::default())).collect();
        for e in std::mem::take(&mut self.events) {
            if let Some(s) = summaries.get_mut(&e.session) {
                s.last_event_seq = s.last_event_seq.max(e.seq);
            }
        }
        for m in std::mem::take(&mut self.messages) {
            if let Some(s) = summaries.get_mut(&m.session) {
                s.has_messages = true;
                // Messages come by (session, seq): the last one is the newest.
                s.newest_message = Some((m.id.clone(), m.created_at));
            }
        }
        for id in std::mem::take(&mut self.older_messages) {
            if let Some(s) = summaries.get_mut(&id) {
                s.has_messages = true;
            }
        }
        self.summaries.extend(summaries);
        self
    }

    /// `session`'s tails as held here (a store's default [`Store::load_tails`]).
    pub fn tails_of(&self, session: &SessionId) -> SessionTails {
        SessionTails {
            messages: self.messages.iter().filter(|m| &m.session == session).cloned().collect(),
            has_older: self.older_messages.contains(session),
            events: self.events.iter().filter(|e| &e.session == session).cloned().collect(),
        }
    }
}

/// How many messages per session the engine keeps in memory: enough for a snapshot's first
/// page (`protocol::HISTORY_PAGE_MESSAGES`). Everything older is read from the store on demand,
/// so the host's memory does not grow with history.
pub const HISTORY_TAIL: usize = crate::protocol::HISTORY_PAGE_MESSAGES;

/// How many events per session the engine keeps for `since_seq` replay.
pub const EVENT_TAIL: usize = 1000;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    #[error("the database at {path} has schema version {found}, newer than this roundtable supports ({supported}); upgrade roundtable or use another --data-dir")]
    TooNew { path: String, found: u32, supported: u32 },
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

/// The engine's read access to the files of a workspace (`read_workspace_file`): the engine knows
/// no file system, its driver hands it an implementation (`roundtable_store::ConfinedFiles`).
pub trait WorkspaceFiles: Send + Sync {
    /// Reads `rel` inside the workspace directory `root` and returns its size and text, refusing
    /// (with a message for the person who asked) anything absolute, with `..`, resolving outside
    /// `root` (a symbolic link), not a regular file, over `max` bytes or not UTF-8.
    fn read(&self, root: &std::path::Path, rel: &str, max: u64) -> Result<(u64, String), String>;
}

/// The engine's view of persistence.
pub trait Store: Send {
    /// Commits the ops in one transaction.
    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Loads everything needed to rebuild the world, every session's tails included.
    fn load(&mut self) -> Result<Restored, StoreError>;
    /// Loads what the engine needs at start: everything but the sessions' tails, which are
    /// summarised instead ([`Restored::summaries`]) and read one session at a time when first
    /// needed ([`Store::load_tails`]), so start-up costs what the sessions are, not their history.
    fn load_without_tails(&mut self) -> Result<Restored, StoreError> {
        Ok(self.load()?.without_tails())
    }
    /// One session's tails: its latest [`HISTORY_TAIL`] messages and last [`EVENT_TAIL`] events.
    fn load_tails(&mut self, session: &SessionId) -> Result<SessionTails, StoreError> {
        Ok(self.load()?.tails_of(session))
    }
    /// A cheap check, called about once a second while nothing is written, that the store
    /// could still take a commit (e.g. the database file was not deleted or replaced), so an
    /// idle host notices a lost database before anyone's next message.
    fn check_health(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Records that the host stopped gracefully, after the engine's last commit (a crash, a
    /// kill or a panic never gets here), so the next start can skip checking the whole file.
    fn stop_cleanly(&mut self) {}
    /// If shares were changed by another process since the last call, returns all shares.
    fn shares_changed_externally(&mut self) -> Result<Option<Vec<ShareRow>>, StoreError> {
        Ok(None)
    }
    /// All workspaces as stored (read after `shares_changed_externally` reported a change, so
    /// `workspace add` from the CLI reaches a running host too).
    fn workspaces(&mut self) -> Result<Vec<WorkspaceRow>, StoreError> {
        Ok(Vec::new())
    }
    /// Up to `limit` committed messages of `session` with a seq below `before_seq`, oldest
    /// first, and whether older ones exist (history pages, forks).
    fn messages_before(
        &mut self,
        session: &SessionId,
        before_seq: u64,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, bool), StoreError>;
    /// The committed message `author_id` sent to `session` with `client_msg_id` (idempotent
    /// retries of messages older than the in-memory tail).
    fn message_by_client_id(
        &mut self,
        session: &SessionId,
        author_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageRow>, StoreError>;
    /// The whole audit log, oldest first (checks and tools; not used by the engine).
    fn audit_log(&mut self) -> Result<Vec<AuditRow>, StoreError>;
    /// The newest `limit` rows of the audit log, oldest first (`fetch_audit`).
    fn audit_tail(&mut self, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let mut all = self.audit_log()?;
        let skip = all.len().saturating_sub(limit);
        Ok(all.split_off(skip))
    }
    /// The committed ballots of a vote, by voter.
    fn ballots_of(&mut self, vote: &VoteId) -> Result<Vec<BallotRow>, StoreError>;
}

/// A store that keeps the ops in memory (unit tests). `load` replays them.
#[derive(Default)]
pub struct MemoryStore {
    pub committed: Vec<Vec<StoreOp>>,
    /// When set, the next commit fails (fault injection).
    pub fail_next: bool,
}

impl Store for MemoryStore {
    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if std::mem::take(&mut self.fail_next) {
            return Err(StoreError::Db("injected failure".into()));
        }
        self.committed.push(ops.to_vec());
        Ok(())
    }

    fn load(&mut self) -> Result<Restored, StoreError> {
        Ok(Restored::default())
    }

    /// The session's tails as committed (an engine that unloads a session reads them back).
    fn load_tails(&mut self, session: &SessionId) -> Result<SessionTails, StoreError> {
        let (messages, has_older) = self.messages_before(session, u64::MAX, HISTORY_TAIL)?;
        let mut events: Vec<EventRow> = Vec::new();
        for op in self.committed.iter().flatten() {
            match op {
                StoreOp::AppendEvent(e) if &e.session == session => events.push(e.clone()),
                StoreOp::ClearSession(s) if s == session => events.clear(),
                _ => {}
            }
        }
        let skip = events.len().saturating_sub(EVENT_TAIL);
        Ok(SessionTails { messages, has_older, events: events.split_off(skip) })
    }

    fn messages_before(
        &mut self,
        session: &SessionId,
        before_seq: u64,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, bool), StoreError> {
        let mut older: Vec<MessageRow> = self.messages_of(session).into_iter().filter(|m| m.seq < before_seq).collect();
        let has_older = older.len() > limit;
        let first = older.len().saturating_sub(limit);
        Ok((older.split_off(first), has_older))
    }

    fn message_by_client_id(
        &mut self,
        session: &SessionId,
        author_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageRow>, StoreError> {
        Ok(self
            .messages_of(session)
            .into_iter()
            .find(|m| m.author_id == author_id && m.client_msg_id.as_deref() == Some(client_msg_id)))
    }

    fn audit_log(&mut self) -> Result<Vec<AuditRow>, StoreError> {
        Ok(self.committed_audit())
    }

    fn ballots_of(&mut self, vote: &VoteId) -> Result<Vec<BallotRow>, StoreError> {
        Ok(self.committed_ballots(vote))
    }
}

impl MemoryStore {
    fn committed_audit(&self) -> Vec<AuditRow> {
        self.committed
            .iter()
            .flatten()
            .filter_map(|op| match op {
                StoreOp::Audit(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    fn committed_ballots(&self, vote: &VoteId) -> Vec<BallotRow> {
        let mut by_voter: std::collections::BTreeMap<ParticipantId, BallotRow> = Default::default();
        for op in self.committed.iter().flatten() {
            if let StoreOp::PutBallot(b) = op {
                if &b.vote == vote {
                    by_voter.insert(b.voter.clone(), b.clone());
                }
            }
        }
        by_voter.into_values().collect()
    }

    /// The committed messages of a session (after its last clear), in seq order.
    fn messages_of(&self, session: &SessionId) -> Vec<MessageRow> {
        let mut by_id: std::collections::BTreeMap<crate::ids::MessageId, MessageRow> = Default::default();
        for op in self.committed.iter().flatten() {
            match op {
                StoreOp::PutMessage(m) if &m.session == session => {
                    by_id.insert(m.id.clone(), m.clone());
                }
                StoreOp::ClearSession(s) if s == session => by_id.clear(),
                _ => {}
            }
        }
        let mut rows: Vec<MessageRow> = by_id.into_values().collect();
        rows.sort_by_key(|m| m.seq);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_and_codex_plan_first_unless_told_otherwise() {
        let spec =
            |kind: &str, plan_first| AgentSpec { kind: kind.into(), command: None, args: Vec::new(), plan_first };
        assert!(spec("claude", None).plan_first());
        assert!(spec("codex", None).plan_first(), "a codex workspace added without the flag plans first");
        assert!(!spec("codex", Some(false)).plan_first());
        assert!(!spec("command", None).plan_first() && !spec("demo", None).plan_first());
    }
}
