//! The window's view model: plain data built from protocol events and responses.
//!
//! The UI thread never touches the engine. A backend task (see [`super::backend`]) talks to the
//! host through a protocol [`crate::net::client::Client`] and hands the UI [`Update`]s; the UI
//! applies them to the [`ViewModel`] with [`ViewModel::apply`] and turns clicks into
//! [`Action`]s for the backend. Everything here is deterministic and free of I/O, so the rules
//! (turn lock → "Waiting for NAME", vote progress, …) are unit-testable.
//!
//! Session events reach the model once each and in seq order: the backend passes every frame
//! through the protocol's [`crate::client_session::ClientSession`] (the same rules as `roundtable
//! join`), which drops duplicates and rejoins with `since_seq` after a gap, `resync_required` or
//! `history_replaced` (docs/PROTOCOL.md §7.2). Events of a session are applied only after its
//! first snapshot; earlier ones are covered by that snapshot.

pub use crate::app::render::clock_text;
use crate::ids::{ParticipantId, SessionId, VoteId, WorkspaceId};
pub use crate::net::discovery::{NearbyChange, NearbyHost};
use crate::net::link::{Link, LinkError};
use crate::protocol::*;
pub use crate::vote_status::{Names, VoteState};
use std::collections::{BTreeMap, BTreeSet};

/// Agent messages carry this author id.
pub const AGENT_ID: &str = "agent";

/// Timeline entries kept per session (older ones are dropped from the view).
pub const MAX_TIMELINE: usize = 2000;

/// A remote trusts a vote deadline as a countdown only if, when the vote reaches it, the deadline
/// is in the future and at most this far away (see [`ViewModel::deadline_text`]); shared with
/// `join`.
pub use crate::app::render::MAX_PLAUSIBLE_DEADLINE_MS;

/// File references offered per plan card at most.
pub const MAX_FILE_REFS: usize = 8;

/// "Ann is typing…" stays this long after Ann's last `typing` event (the host sends at most one
/// per person every 2 s while they type), unless Ann's message arrives first.
pub const TYPING_SHOWN_MS: u64 = 5_000;

/// This window tells the host "I am typing" at most this often per session (the host's own
/// throttle is the same).
pub const TYPING_EVERY_MS: u64 = 2_000;

/// A neutral notice ("link copied") goes away after this long; errors stay until dismissed.
pub const NOTICE_SHOWN_MS: u64 = 6_000;

/// This window moves its read marker at most this often (it costs a request).
pub const MARK_READ_EVERY_MS: u64 = 1_000;

/// This computer's wall clock, in ms since the Unix epoch (the host's engine clock is the same
/// kind of clock).
pub use crate::app::host::wall_ms;

/// What the UI asks the backend to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send a protocol request (its answer comes back as an [`Update`]).
    Call(Method),
    /// Follow a session: join it for a snapshot (rejoins after gaps, `resync_required` and
    /// reconnects are the backend's own).
    Join(SessionId),
    /// Fetch the session and workspace lists again.
    RefreshSessions,
    /// Fetch the share list again (host only).
    RefreshShares,
    /// Fetch the newest audit rows (`fetch_audit`, host only).
    LoadAudit,
    /// Fetch each workspace's agent as registered (`list_workspaces` answers the host with it).
    LoadWorkspaceAgents,
    /// Connect with the link pasted on the start screen, as `name`.
    Connect { link: Link, name: String },
}

/// A person's colour slot (`0..slots`), from their participant id: every window shows the same id
/// for them, and neither a rename, their leaving and others coming, nor a restart of either
/// window changes it. Ids are numbered in join order (`p1`, `p2`, …), so the first `slots`
/// people of a host get different colours; other ids (`host`) hash.
pub fn colour_slot(id: &str, slots: usize) -> usize {
    let slots = slots.max(1);
    match ParticipantId::from(id).number() {
        Some(n) => (n % slots as u64) as usize,
        None => id.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) as usize % slots,
    }
}

/// What the backend tells the UI.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// The connection's state changed.
    Connection(ConnectionState),
    /// Who this window is.
    Identity { me: ParticipantId, name: String, role: Role },
    /// Workspaces in scope.
    Workspaces(Vec<WorkspaceInfo>),
    /// Sessions in scope.
    Sessions(Vec<SessionInfo>),
    /// A `join_session` result.
    Joined(JoinSessionResult),
    /// An event from the host.
    Event(Box<EventFrame>),
    /// The host's shares.
    Shares(Vec<ShareInfo>),
    /// A share was minted or rotated: its link (or token) is shown once.
    Minted(MintShareResult),
    /// The newest audit rows, oldest first.
    Audit(Vec<AuditEntry>),
    /// People waiting in the lobby when the window opened (`list_lobby`; live `lobby` events
    /// take precedence).
    LobbySeed(Vec<LobbyEntry>),
    /// A `read_workspace_file` answer: the file, or why it was refused.
    FileRead { session_id: SessionId, path: String, result: Result<ReadFileResult, String> },
    /// A workspace was added from this window (offer to create its first session).
    WorkspaceAdded(WorkspaceInfo),
    /// Show this session (a session created or forked from this window, once joined).
    Open(SessionId),
    /// A page of earlier messages (`fetch_history`), to put above the timeline.
    HistoryPage { session_id: SessionId, page: FetchHistoryResult },
    /// A request failed: the method, the host's error code (`None`: no answer, e.g. the
    /// connection) and the host's message. The window words it for people
    /// ([`failure_text`]): no method names, no participant ids.
    Failed { method: String, code: Option<ErrorCode>, message: String },
    /// A message (prompt or room chat) sent from the composer was accepted by the host, or kept
    /// to be sent again once the connection is back: the composer may let go of its text.
    Sent { client_msg_id: String },
    /// A message sent from the composer was refused: its text goes back into the composer
    /// (it never left it, unless this is a resend after a reconnect).
    SendFailed { session_id: SessionId, client_msg_id: String, text: String, code: Option<ErrorCode>, message: String },
    /// Which way the connection reaches the host (a remote window): `relayed through URL`,
    /// `direct to ADDR (peer to peer)` over iroh, or the `HOST:PORT` that answered.
    Route(String),
    /// A neutral note for the status line.
    Notice(String),
    /// Something the person should know and dismiss (not tied to one request).
    Warning(String),
    /// The host's settings (`get_settings` / `update_settings`).
    HostSettings(HostSettings),
    /// Each workspace's agent as registered (host only): resolved command line and mode.
    WorkspaceAgents(BTreeMap<WorkspaceId, String>),
    /// A host on the LAN was seen or is gone (start screen).
    Nearby(NearbyChange),
    /// The LAN cannot be searched, and why (start screen).
    NearbyUnavailable(String),
    /// Connecting with the start screen's link never worked, and why: the start screen again.
    BackToStart(String),
}

/// The connection to the host, as shown in the window.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ConnectionState {
    /// Not connected yet.
    #[default]
    Connecting,
    /// Connected and admitted.
    Connected,
    /// Waiting in the host's lobby.
    Lobby,
    /// Lost; trying again.
    Reconnecting,
    /// Over for good; the text says why.
    Closed(String),
}

/// The host's settings as the window knows them (the host edits them in the settings panel).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The host's display name (host window; `None` until the host says).
    pub host_name: Option<String>,
    /// Whether votes in the host's own turns need consensus (`None` for remotes: not known).
    pub default_consensus: Option<bool>,
    /// Default vote deadline (ms), when the host has one.
    pub vote_deadline_ms: Option<u64>,
    /// The host's address, as written into links.
    pub address: Option<String>,
}

/// One chat line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A message from a participant or the agent, with its seq.
    Message(HistoryMessage),
    /// Something that happened (turn ended, vote resolved, someone joined…).
    Note(String),
    /// Something that went wrong (the agent failed or died): shown as an error.
    Failure(String),
}

/// A vote as the cards show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteCard {
    pub opened: VoteOpened,
    pub progress: Option<VoteProgress>,
    pub resolved: Option<VoteResolved>,
    /// When the vote closes on this computer's wall clock, if it has a deadline this window can
    /// count down to (see [`ViewModel::deadline_text`]).
    pub closes_at_local_ms: Option<u64>,
}

impl VoteCard {
    /// Required voters who approved (or answered, for questions).
    pub fn approved(&self) -> &[ParticipantId] {
        match &self.progress {
            Some(p) if matches!(self.opened.subject, VoteSubject::Question { .. }) => &p.answered,
            Some(p) => &p.approved,
            None => &[],
        }
    }

    /// Required voters who denied.
    pub fn denied(&self) -> &[ParticipantId] {
        self.progress.as_ref().map(|p| p.denied.as_slice()).unwrap_or(&[])
    }

    /// Required voters who have not voted yet.
    pub fn pending(&self) -> Vec<ParticipantId> {
        match &self.progress {
            Some(p) => p.pending.clone(),
            None => self.opened.required.clone(),
        }
    }

    /// Whether the vote is still open.
    pub fn is_open(&self) -> bool {
        self.resolved.is_none()
    }

    /// The vote's real state, for [`VoteState`]'s words.
    pub fn state(&self) -> VoteState<'_> {
        VoteState { opened: &self.opened, progress: self.progress.as_ref(), resolved: self.resolved.as_ref() }
    }
}

/// A vote's status in words (the same as `join`'s: [`crate::app::render`] uses the same
/// [`VoteState`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteWords {
    /// Who decides: "everyone must approve: Ann, Bob", "the host decides".
    pub deciders: String,
    /// "Approved: Ann", "Pending: Bob" — only lists with someone in them.
    pub ballots: Vec<String>,
    /// How it ended ("answered — Ann: yes · Bob: no"); `None` while open.
    pub outcome: Option<String>,
    /// Whether the host's ballot would overrule other required voters.
    pub host_may_overrule: bool,
}

/// What the window knows of one session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Info from `list_sessions` / `join_session` / snapshots, kept current by events.
    pub info: Option<SessionInfo>,
    /// Whether a snapshot or join result was applied (events are applied only then).
    pub loaded: bool,
    /// Last seq applied.
    pub last_seq: u64,
    /// Present participants, by id.
    pub roster: BTreeMap<ParticipantId, RosterEntry>,
    /// Messages and notes, oldest first.
    pub timeline: Vec<Entry>,
    /// Text the agent streamed in the running turn (replaced by the final message).
    pub streaming: String,
    /// Name of the current turn holder.
    pub holder_name: Option<String>,
    /// Votes by id (open and resolved).
    pub votes: BTreeMap<VoteId, VoteCard>,
    /// Votes that were already there when the running turn started: none of them is this turn's,
    /// so a resolved one is not pinned above the composer during it.
    pub votes_before_turn: std::collections::BTreeSet<VoteId>,
    /// Display names of everyone seen in this session (for people who left).
    pub names: BTreeMap<ParticipantId, String>,
    /// Seq of the oldest message in the timeline, and whether the host has older ones.
    pub oldest_seq: Option<u64>,
    pub has_older: bool,
    /// An earlier page was asked for and has not arrived yet.
    pub loading_older: bool,
    /// Your read marker here: the last seq the host knows you have seen (`read_seq`).
    pub read_seq: u64,
    /// Where the "new messages" line goes: after what you had seen when you last came to the
    /// session (opened it, or came back to the window), and only above what arrived while you
    /// were away (up to [`SessionState::new_line_until`]); `None` until the session is opened.
    pub new_line_after: Option<u64>,
    /// The last seq that had arrived when you came to the session: what arrives while you look
    /// is not "new" (`None`: no bound yet).
    pub new_line_until: Option<u64>,
    /// Whether you are looking at this session now (shown, window focused, chat tab).
    pub watching: bool,
    /// The last seq shown to you while you looked.
    pub seen_seq: u64,
    /// When `mark_read` was last sent (local ms).
    pub marked_at_ms: Option<u64>,
    /// Who else is typing here, until when (local ms).
    pub typing: BTreeMap<ParticipantId, (String, u64)>,
    /// When this window last said it is typing here (local ms).
    pub typing_sent_ms: Option<u64>,
}

impl SessionState {
    /// The turn holder, if a turn runs.
    pub fn holder(&self) -> Option<&ParticipantId> {
        self.info.as_ref().and_then(|i| i.turn_holder.as_ref())
    }

    /// A vote card's status in words, naming people as this session knows them.
    pub fn vote_words(&self, card: &VoteCard) -> VoteWords {
        let name = |p: &ParticipantId| self.name(p);
        let names = Names { name: &name, me: None };
        let state = card.state();
        VoteWords {
            deciders: state.deciders(&names),
            ballots: state.ballots(&names),
            outcome: state.outcome(&names),
            host_may_overrule: state.host_may_overrule(),
        }
    }

    /// A participant's display name (its id when unknown).
    pub fn name(&self, id: &ParticipantId) -> String {
        self.roster
            .get(id)
            .map(|r| r.display_name.clone())
            .or_else(|| self.names.get(id).cloned())
            .unwrap_or_else(|| id.to_string())
    }

    /// Messages (prompts, replies, room chat) by other people or the agent after your read
    /// marker, among those loaded; for a session not opened yet, `None` when the host has
    /// events after your marker (count unknown until it is opened) and `Some(0)` otherwise.
    pub fn unread(&self, me: Option<&ParticipantId>) -> Option<usize> {
        if !self.loaded {
            let last = self.info.as_ref().map_or(0, |i| i.last_seq);
            return if last > self.read_seq { None } else { Some(0) };
        }
        // What arrived while you looked is read, whether or not the host has the marker yet.
        let seen = self.read_seq.max(self.seen_seq);
        let count = self
            .timeline
            .iter()
            .filter(|e| matches!(e, Entry::Message(m) if m.seq > seen && !is_me(me, &m.message.author_id)))
            .count();
        Some(count)
    }

    /// The seq of the first message to show under the "new messages" line, if any: the first
    /// message by someone else after the marker you had when you opened the session.
    pub fn first_new(&self, me: Option<&ParticipantId>) -> Option<u64> {
        let after = self.new_line_after?;
        let arrived_away = |seq: u64| self.new_line_until.is_none_or(|until| seq <= until);
        self.timeline.iter().find_map(|e| match e {
            Entry::Message(m) if m.seq > after && arrived_away(m.seq) && !is_me(me, &m.message.author_id) => {
                Some(m.seq)
            }
            _ => None,
        })
    }

    /// "Ann is typing…", "Ann and Bob are typing…" or "3 people are typing…" at local time
    /// `now_ms`.
    pub fn typing_text(&self, now_ms: u64) -> Option<String> {
        let names: Vec<&str> =
            self.typing.values().filter(|(_, until)| *until > now_ms).map(|(name, _)| name.as_str()).collect();
        match names.as_slice() {
            [] => None,
            [one] => Some(format!("{one} is typing…")),
            [a, b] => Some(format!("{a} and {b} are typing…")),
            more => Some(format!("{} people are typing…", more.len())),
        }
    }

    /// The colour slot (`0..slots`) of every author seen here ([`colour_slot`]).
    pub fn colour_slots(&self, slots: usize) -> BTreeMap<ParticipantId, usize> {
        self.roster.keys().chain(self.names.keys()).map(|id| (id.clone(), colour_slot(id.as_str(), slots))).collect()
    }

    fn take_read_seq(&mut self, info: &SessionInfo) {
        self.read_seq = self.read_seq.max(info.read_seq.unwrap_or(0));
    }

    fn note(&mut self, text: String) {
        self.push(Entry::Note(text));
    }

    fn push(&mut self, entry: Entry) {
        self.timeline.push(entry);
        if self.timeline.len() > MAX_TIMELINE {
            let extra = self.timeline.len() - MAX_TIMELINE;
            self.timeline.drain(..extra);
        }
    }

    fn set_status(&mut self, status: SessionStatus) {
        if let Some(info) = &mut self.info {
            info.status = status;
        }
    }

    fn recount(&mut self) {
        let present = self.roster.values().filter(|r| r.presence != PresenceState::Gone).count() as u32;
        if let Some(info) = &mut self.info {
            info.participant_count = present;
        }
    }

    fn set_roster(&mut self, roster: &[RosterEntry]) {
        self.roster = roster.iter().map(|r| (r.participant_id.clone(), r.clone())).collect();
        for r in roster {
            self.names.insert(r.participant_id.clone(), r.display_name.clone());
        }
        self.recount();
    }
}

/// Someone waiting in the host's lobby (as `list_lobby` lists them).
pub type LobbyEntry = WaitingInfo;

/// Everything the window shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewModel {
    /// True in the host's window (host-only controls are shown).
    pub is_host: bool,
    /// This window's participant id.
    pub me: Option<ParticipantId>,
    /// This window's display name.
    pub my_name: String,
    /// This window's role.
    pub role: Option<Role>,
    pub connection: ConnectionState,
    /// Which way the connection reaches the host, for the status bar (see [`Update::Route`]).
    pub route: Option<String>,
    /// Set while the host says it cannot store: shown prominently until it can again.
    pub storage_failing: Option<String>,
    pub workspaces: Vec<WorkspaceInfo>,
    /// Sessions by id.
    pub sessions: BTreeMap<SessionId, SessionState>,
    /// The session shown in the middle.
    pub current: Option<SessionId>,
    /// Lobby (host only), by participant id.
    pub lobby: BTreeMap<ParticipantId, LobbyEntry>,
    /// Participants a live `lobby` event admitted or refused: a database seed read earlier must
    /// not bring them back.
    pub lobby_settled: BTreeSet<ParticipantId>,
    /// The file opened from a plan card, shown until closed.
    pub file_view: Option<FileView>,
    /// A workspace just added from this window, whose first session the window offers to create.
    pub added_workspace: Option<WorkspaceInfo>,
    /// Shares (host only).
    pub shares: Vec<ShareInfo>,
    /// The link of the share just minted or rotated, shown until dismissed.
    pub minted: Option<MintShareResult>,
    /// Audit rows (host only), oldest first.
    pub audit: Vec<AuditEntry>,
    /// The host's settings.
    pub settings: Settings,
    /// Each workspace's agent as registered, e.g. `command (/home/ann/agent.py)` (host only).
    pub workspace_agents: BTreeMap<WorkspaceId, String>,
    /// The latest error or notice for the status line.
    pub status: Option<Notice>,
    /// Why the connection was lost (the host's `closing` reason), shown beside "reconnecting…"
    /// until connected again.
    pub disconnect_reason: Option<String>,
    /// The start screen of a remote window opened without a link (`None`: no start screen).
    pub start: Option<StartScreen>,
}

/// The start screen of a remote window opened without a link: where to paste the link you were
/// sent, and the hosts found on the LAN (which only help find a host: its link's token is what
/// lets you in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartScreen {
    /// Shown (`false` once Connect was clicked, until connecting fails for good).
    pub open: bool,
    /// Hosts found on the LAN by instance name, with when each was last seen (local ms).
    pub nearby: BTreeMap<String, (NearbyHost, u64)>,
    /// Why the LAN cannot be searched, if it cannot.
    pub nearby_error: Option<String>,
    /// Why the last Connect did not connect.
    pub failed: Option<String>,
    /// The display name to join as (`--name`, else the account's name).
    pub name: String,
    /// Whether to ask for the name (no `--name` was given).
    pub ask_name: bool,
}

/// A nearby host as the start screen lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NearbyRow {
    /// Name, version, addresses and certificate fingerprint prefix (as `join --nearby` prints).
    pub text: String,
    /// "seen 3 s ago".
    pub seen: String,
    /// When it is the host of the pasted link: "the host of your link — also at ADDRESS".
    pub of_link: Option<String>,
}

/// What the start screen's link field holds: `None` while empty, else the link or why it is not
/// one.
pub fn link_field(text: &str) -> Option<Result<Link, LinkError>> {
    let text = text.trim();
    (!text.is_empty()).then(|| Link::parse(text))
}

/// "seen just now", "seen 12 s ago", "seen 3 min ago".
pub fn seen_text(ago_ms: u64) -> String {
    match ago_ms / 1000 {
        0..=1 => "seen just now".into(),
        s @ 2..=59 => format!("seen {s} s ago"),
        s => format!("seen {} min ago", s / 60),
    }
}

/// A line on the status bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    /// Errors are shown as errors and stay until dismissed; neutral notices go away after
    /// [`NOTICE_SHOWN_MS`].
    pub error: bool,
    /// When it was shown (local ms).
    pub at_ms: u64,
}

impl Notice {
    /// Whether it is still shown at local time `now_ms`.
    pub fn shown(&self, now_ms: u64) -> bool {
        self.error || now_ms < self.at_ms + NOTICE_SHOWN_MS
    }
}

/// A workspace file opened from a plan card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileView {
    pub session_id: SessionId,
    pub path: String,
    /// The file, or why the host refused it (e.g. `file_refused: …`).
    pub result: Result<ReadFileResult, String>,
}

/// Why the composer is locked, if it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComposerLock {
    /// Someone else holds the turn.
    WaitingFor(String),
    /// Your own turn runs: the agent is working on your prompt (the room is still open).
    OwnTurn,
    /// Observers read only.
    Observer,
    /// Muted by the host.
    Muted,
    /// Not connected or in the lobby.
    Offline,
}

impl ComposerLock {
    /// The text shown in place of the composer.
    pub fn text(&self) -> String {
        match self {
            ComposerLock::WaitingFor(name) => format!("Waiting for {name} — chat with the room"),
            ComposerLock::OwnTurn => "The agent is working on your prompt — chat with the room".into(),
            ComposerLock::Observer => "Observers can read but not send".into(),
            ComposerLock::Muted => "You are muted by the host".into(),
            ComposerLock::Offline => "Not connected".into(),
        }
    }
}

impl ViewModel {
    /// An empty model for the host's window (`is_host`) or a remote's.
    pub fn new(is_host: bool) -> Self {
        Self { is_host, ..Self::default() }
    }

    /// A remote window's model on its start screen (no link given), joining as `name`; `ask_name`
    /// when no `--name` was given.
    pub fn start_screen(name: String, ask_name: bool) -> Self {
        Self { start: Some(StartScreen { open: true, name, ask_name, ..StartScreen::default() }), ..Self::new(false) }
    }

    /// Whether the start screen is shown.
    pub fn start_open(&self) -> bool {
        self.start.as_ref().is_some_and(|s| s.open)
    }

    /// Connect was clicked on the start screen with `link`: the window connects.
    pub fn connecting_with(&mut self, link: &Link) {
        if let Some(start) = &mut self.start {
            start.open = false;
            start.failed = None;
        }
        self.settings.address = Some(link.authority());
        self.connection = ConnectionState::Connecting;
    }

    /// The start screen's nearby hosts at local time `now_ms`, by name; the host of `link` (the
    /// one advertising its certificate fingerprint) says so, with the addresses the window falls
    /// back to when the link's own do not answer (the decision `join --nearby` makes).
    pub fn nearby_rows(&self, link: Option<&Link>, now_ms: u64) -> Vec<NearbyRow> {
        let Some(start) = &self.start else { return Vec::new() };
        let mut hosts: Vec<&(NearbyHost, u64)> = start.nearby.values().collect();
        hosts.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name).then(a.instance.cmp(&b.instance)));
        hosts
            .into_iter()
            .map(|(host, seen_ms)| NearbyRow {
                text: crate::app::nearby::line(host),
                seen: seen_text(now_ms.saturating_sub(*seen_ms)),
                of_link: link.filter(|l| crate::app::nearby::is_host_of(l, host)).map(|l| {
                    let also: Vec<String> = crate::app::nearby::fallback_addresses(l, std::slice::from_ref(host))
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    if also.is_empty() {
                        "the host of your link".to_string()
                    } else {
                        format!("the host of your link — also at {}", also.join(", "))
                    }
                }),
            })
            .collect()
    }

    /// The session shown, if any.
    pub fn current_session(&self) -> Option<&SessionState> {
        self.current.as_ref().and_then(|s| self.sessions.get(s))
    }

    /// Whether `id` is this window's participant.
    pub fn is_me(&self, id: &str) -> bool {
        is_me(self.me.as_ref(), id)
    }

    /// Sessions grouped by workspace (workspaces in id order; sessions without a known workspace
    /// at the end under their workspace id).
    pub fn sessions_by_workspace(&self) -> Vec<(WorkspaceId, String, Vec<&SessionState>)> {
        let mut groups: Vec<(WorkspaceId, String, Vec<&SessionState>)> =
            self.workspaces.iter().map(|w| (w.id.clone(), w.name.clone(), Vec::new())).collect();
        for s in self.sessions.values() {
            let Some(info) = &s.info else { continue };
            match groups.iter_mut().find(|g| g.0 == info.workspace_id) {
                Some(g) => g.2.push(s),
                None => groups.push((info.workspace_id.clone(), info.workspace_id.to_string(), vec![s])),
            }
        }
        groups
    }

    /// Someone's display name from anything this window has seen (sessions, the lobby), or
    /// `None`.
    pub fn person_name(&self, id: &str) -> Option<String> {
        if self.is_me(id) && !self.my_name.is_empty() {
            return Some(self.my_name.clone());
        }
        let pid = ParticipantId::from(id);
        self.sessions
            .values()
            .find_map(|s| s.roster.get(&pid).map(|r| r.display_name.clone()).or_else(|| s.names.get(&pid).cloned()))
            .or_else(|| self.lobby.get(&pid).map(|l| l.display_name.clone()))
            .or_else(|| (id == "host").then(|| "Host".to_string()))
    }

    /// A workspace's name (its id when unknown).
    pub fn workspace_name(&self, id: &WorkspaceId) -> String {
        self.workspaces.iter().find(|w| &w.id == id).map_or_else(|| id.to_string(), |w| w.name.clone())
    }

    /// A share as people know it: its label, or its id when it has none.
    pub fn share_name(&self, id: &crate::ids::ShareId) -> String {
        self.shares
            .iter()
            .find(|s| &s.share_id == id)
            .filter(|s| !s.label.trim().is_empty())
            .map_or_else(|| format!("share {id}"), |s| format!("\"{}\"", s.label))
    }

    /// Shows an error on the status line until dismissed.
    pub fn error(&mut self, text: String, now_ms: u64) {
        self.status = Some(Notice { text, error: true, at_ms: now_ms });
    }

    /// Shows a neutral notice on the status line for [`NOTICE_SHOWN_MS`].
    pub fn notice(&mut self, text: String, now_ms: u64) {
        self.status = Some(Notice { text, error: false, at_ms: now_ms });
    }

    /// Shows `session` in the middle: its "new messages" line goes after the marker you have
    /// now.
    pub fn open(&mut self, session: SessionId) {
        for (id, state) in &mut self.sessions {
            if *id == session {
                state.new_line_after = Some(state.read_seq.max(state.seen_seq));
                state.new_line_until = state.loaded.then_some(state.last_seq);
                // Not loaded yet: the first frame that shows it starts the watch.
                state.watching = state.loaded;
            } else {
                state.watching = false;
            }
        }
        self.current = Some(session);
    }

    /// Whether you look at the session shown now (`seen`: window focused, chat tab), called
    /// every frame before drawing. Coming to a session (or back to the window) puts the "new
    /// messages" line after what you had seen, above only what arrived while you were away;
    /// what arrives while you look is neither new nor unread, as in Slack.
    pub fn looking(&mut self, seen: bool) {
        let current = self.current.clone();
        for (id, state) in &mut self.sessions {
            let now = seen && state.loaded && current.as_ref() == Some(id);
            if now && !state.watching {
                state.new_line_after = Some(state.read_seq.max(state.seen_seq));
                state.new_line_until = Some(state.last_seq);
            }
            if now {
                state.seen_seq = state.last_seq;
            }
            state.watching = now;
        }
    }

    /// The `mark_read` request for the session shown, when it has events after your marker and
    /// the last one was sent at least [`MARK_READ_EVERY_MS`] ago (`now_ms`, local); moves the
    /// marker here at once.
    pub fn mark_read_call(&mut self, now_ms: u64) -> Option<Method> {
        let id = self.current.clone()?;
        let state = self.sessions.get_mut(&id)?;
        if !state.loaded || state.last_seq <= state.read_seq {
            return None;
        }
        if state.marked_at_ms.is_some_and(|at| now_ms < at + MARK_READ_EVERY_MS) {
            return None;
        }
        state.read_seq = state.last_seq;
        state.marked_at_ms = Some(now_ms);
        Some(Method::MarkRead(MarkReadParams { session_id: id, seq: state.last_seq }))
    }

    /// The `typing` request for the session shown when you type there, at most one every
    /// [`TYPING_EVERY_MS`].
    pub fn typing_call(&mut self, now_ms: u64) -> Option<Method> {
        let id = self.current.clone()?;
        let state = self.sessions.get_mut(&id)?;
        if state.typing_sent_ms.is_some_and(|at| now_ms < at + TYPING_EVERY_MS) {
            return None;
        }
        state.typing_sent_ms = Some(now_ms);
        Some(Method::Typing(SessionRef { session_id: id }))
    }

    /// Why the composer of the current session is locked, if it is.
    pub fn composer_lock(&self) -> Option<ComposerLock> {
        if self.connection != ConnectionState::Connected {
            return Some(ComposerLock::Offline);
        }
        if self.role == Some(Role::Observer) {
            return Some(ComposerLock::Observer);
        }
        let session = self.current_session()?;
        if let Some(me) = &self.me {
            if session.roster.get(me).is_some_and(|r| r.muted) {
                return Some(ComposerLock::Muted);
            }
        }
        match session.holder() {
            Some(holder) if Some(holder) != self.me.as_ref() => {
                let name = session.holder_name.clone().unwrap_or_else(|| session.name(holder));
                Some(ComposerLock::WaitingFor(name))
            }
            Some(_) => Some(ComposerLock::OwnTurn),
            None => None,
        }
    }

    /// Whether this window may cancel the current session's turn (holder or host, turn running).
    pub fn can_cancel(&self) -> bool {
        let Some(holder) = self.current_session().and_then(|s| s.holder()) else { return false };
        self.is_host || Some(holder) == self.me.as_ref()
    }

    /// Whether this window may vote on `card` now: open, not an observer, and a required voter
    /// (the host may always decide).
    pub fn can_vote(&self, card: &VoteCard) -> bool {
        if !card.is_open() || self.role == Some(Role::Observer) {
            return false;
        }
        if self.is_host {
            return true;
        }
        let tool = matches!(card.opened.subject, VoteSubject::Tool { .. });
        !tool && self.me.as_ref().is_some_and(|m| card.opened.required.contains(m))
    }

    /// Text for an open vote's deadline at local wall time `now_ms`: "closes in 1:23", or `None`
    /// when the vote has no deadline or is resolved.
    ///
    /// Deadlines are absolute times on the host's engine clock, which is the host's wall clock
    /// (ms since the Unix epoch). The host's window shares that clock, so its countdown is exact.
    /// A remote cannot read the host's clock: no frame it receives carries the host's current
    /// time (`vote_opened` has only the absolute deadline, not when the vote opened). So when a
    /// vote reaches a remote, the window estimates the clock offset as zero — both machines
    /// normally follow NTP — and checks that estimate against the one thing it knows: the vote
    /// was sent about now, so its deadline must be in the future and no further away than
    /// [`MAX_PLAUSIBLE_DEADLINE_MS`]. If it is not, the clocks disagree by an unknown amount and
    /// the card says the host's clock decides instead of showing a wrong countdown. A small skew
    /// (seconds) goes undetected and shifts the countdown by that much; the host's deadline,
    /// not this text, closes the vote.
    pub fn deadline_text(&self, card: &VoteCard, now_ms: u64) -> Option<String> {
        card.opened.deadline_ms?;
        if !card.is_open() {
            return None;
        }
        let Some(closes_at) = card.closes_at_local_ms else {
            return Some("has a deadline on the host's clock (this computer's clock differs; no countdown)".into());
        };
        Some(match closes_at.checked_sub(now_ms).filter(|ms| *ms > 0) {
            Some(left) => format!("closes in {}", clock_text(left)),
            None => "closing…".into(),
        })
    }

    /// Where a vote opened (or shown in a snapshot) at local time `now_ms` closes on this
    /// computer's clock; see [`ViewModel::deadline_text`] for the approximation.
    fn local_deadline(&self, opened: &VoteOpened, now_ms: u64) -> Option<u64> {
        let deadline = opened.deadline_ms?;
        if self.is_host {
            // Same wall clock as the engine.
            return Some(deadline);
        }
        // Offset estimate: 0. Sent about now, so the deadline must lie ahead, not absurdly far.
        let ahead = deadline.checked_sub(now_ms)?;
        (ahead <= MAX_PLAUSIBLE_DEADLINE_MS).then_some(deadline)
    }

    /// Applies one update at this computer's current time; returns what the backend must do
    /// next.
    pub fn apply(&mut self, update: Update) {
        self.apply_at(update, wall_ms())
    }

    /// Applies one update received at local wall time `now_ms` (ms since the Unix epoch).
    pub fn apply_at(&mut self, update: Update, now_ms: u64) {
        match update {
            Update::Connection(state) => {
                match &state {
                    ConnectionState::Connected => {
                        // Errors about the lost connection are over.
                        self.disconnect_reason = None;
                        if self.status.as_ref().is_some_and(|n| n.error) {
                            self.status = None;
                        }
                    }
                    ConnectionState::Reconnecting | ConnectionState::Closed(_) => {
                        // Nobody is known to be present until the host says so again.
                        for session in self.sessions.values_mut() {
                            session.roster.clear();
                            session.typing.clear();
                            session.recount();
                        }
                    }
                    ConnectionState::Connecting | ConnectionState::Lobby => {}
                }
                self.connection = state;
            }
            Update::Route(route) => self.route = Some(route),
            Update::Identity { me, name, role } => {
                self.me = Some(me);
                self.my_name = name;
                self.role = Some(role);
            }
            Update::Workspaces(w) => self.workspaces = w,
            Update::Sessions(list) => {
                for info in list {
                    let state = self.sessions.entry(info.id.clone()).or_default();
                    state.take_read_seq(&info);
                    // A loaded session's info is kept current by its events; take only what
                    // events do not carry.
                    match (&mut state.info, state.loaded) {
                        (Some(mine), true) => mine.agent = info.agent,
                        _ => state.info = Some(info),
                    }
                }
                if self.current.is_none() {
                    self.current = self.sessions.keys().next().cloned();
                }
            }
            Update::Joined(result) => self.joined(result),
            Update::Event(frame) => self.event(*frame, now_ms),
            Update::Shares(s) => self.shares = s,
            Update::Minted(m) => {
                match self.shares.iter_mut().find(|s| s.share_id == m.share.share_id) {
                    Some(s) => *s = m.share.clone(),
                    None => self.shares.push(m.share.clone()),
                }
                self.minted = Some(m);
            }
            Update::Audit(rows) => self.audit = rows,
            Update::LobbySeed(entries) => {
                for entry in entries {
                    if !self.lobby_settled.contains(&entry.participant_id) {
                        self.lobby.entry(entry.participant_id.clone()).or_insert(entry);
                    }
                }
            }
            Update::FileRead { session_id, path, result } => {
                self.file_view = Some(FileView { session_id, path, result });
            }
            Update::WorkspaceAdded(info) => {
                if !self.workspaces.iter().any(|w| w.id == info.id) {
                    self.workspaces.push(info.clone());
                }
                self.added_workspace = Some(info);
            }
            Update::Open(session_id) => {
                if self.sessions.contains_key(&session_id) {
                    self.open(session_id);
                }
            }
            Update::HistoryPage { session_id, page } => {
                if let Some(state) = self.sessions.get_mut(&session_id) {
                    state.loading_older = false;
                    // A page older than what we show (a snapshot in between replaced the
                    // timeline, or a page arrived twice) is ignored: never show a message twice.
                    let fits = page.messages.last().is_some_and(|m| state.oldest_seq.is_none_or(|o| m.seq < o));
                    if fits {
                        state.oldest_seq = page.messages.first().map(|m| m.seq);
                        state.has_older = page.has_older;
                        let older = page.messages.into_iter().map(Entry::Message);
                        state.timeline.splice(0..0, older);
                    } else if page.messages.is_empty() {
                        state.has_older = false;
                    }
                }
            }
            Update::Failed { method, code, message } => self.error(failure_text(&method, code, &message), now_ms),
            Update::Sent { .. } => {}
            Update::SendFailed { session_id, code, message, .. } => {
                let text = self.send_failure_text(&session_id, code, &message);
                self.error(text, now_ms);
            }
            Update::Notice(text) => self.notice(text, now_ms),
            Update::Warning(text) => self.error(text, now_ms),
            Update::WorkspaceAgents(agents) => self.workspace_agents = agents,
            Update::Nearby(change) => {
                if let Some(start) = &mut self.start {
                    match change {
                        NearbyChange::Seen(host) => {
                            start.nearby.insert(host.instance.clone(), (host, now_ms));
                        }
                        NearbyChange::Gone(instance) => {
                            start.nearby.remove(&instance);
                        }
                    }
                }
            }
            Update::NearbyUnavailable(why) => {
                if let Some(start) = &mut self.start {
                    start.nearby_error = Some(why);
                }
            }
            Update::BackToStart(why) => {
                if let Some(start) = &mut self.start {
                    start.open = true;
                    start.failed = Some(why);
                }
                self.settings.address = None;
                self.connection = ConnectionState::Connecting;
            }
            Update::HostSettings(s) => {
                if self.is_host {
                    self.my_name = s.host_name.clone();
                }
                self.settings.host_name = Some(s.host_name);
                self.settings.default_consensus = Some(s.default_consensus);
                self.settings.vote_deadline_ms = s.default_vote_deadline_ms;
            }
        }
    }

    /// Why a message was not sent, for people; the composer keeps the text. A `turn_locked`
    /// names the holder as this window knows them ("Bob has the turn; …"), never by id.
    pub fn send_failure_text(&self, session: &SessionId, code: Option<ErrorCode>, message: &str) -> String {
        if code == Some(ErrorCode::TurnLocked) {
            let state = self.sessions.get(session);
            return match state.and_then(|s| s.holder().map(|h| (h, s))) {
                Some((h, _)) if Some(h) == self.me.as_ref() => {
                    "The agent is still working on your prompt; your message is kept until it finishes".into()
                }
                Some((h, s)) => {
                    let name = s.holder_name.clone().unwrap_or_else(|| s.name(h));
                    format!("{name} has the turn; your message is kept until the agent finishes")
                }
                None => "Someone else has the turn; your message is kept until the agent finishes".into(),
            };
        }
        format!("Not sent: {}; your message is kept", error_reason(code, message))
    }

    /// The request for the page before the oldest message shown in `session`, when there is
    /// one and none is on its way (marks it on its way).
    pub fn request_older(&mut self, session: &SessionId) -> Option<Method> {
        let state = self.sessions.get_mut(session)?;
        if !state.has_older || state.loading_older {
            return None;
        }
        state.loading_older = true;
        Some(Method::FetchHistory(FetchHistoryParams {
            session_id: session.clone(),
            before_seq: state.oldest_seq,
            limit: None,
        }))
    }

    fn joined(&mut self, result: JoinSessionResult) {
        let id = result.session.id.clone();
        self.me.get_or_insert_with(|| result.you.clone());
        if let Some(mine) = result.roster.iter().find(|r| r.you || r.participant_id == result.you) {
            self.my_name = mine.display_name.clone();
        }
        let state = self.sessions.entry(id.clone()).or_default();
        state.take_read_seq(&result.session);
        if self.current.as_ref().is_none_or(|c| *c == id) {
            state.new_line_after.get_or_insert(state.read_seq);
        }
        state.set_roster(&result.roster);
        if result.catch_up != CatchUp::Snapshot {
            // Events follow (or none were missed): the session is live from `last_seq` on.
            state.loaded = true;
            let mut info = result.session;
            info.participant_count = state.roster.len() as u32;
            state.info = Some(info);
        } else if state.info.is_none() {
            state.info = Some(result.session);
        }
        if self.current.is_none() {
            self.current = Some(id);
        }
    }

    fn event(&mut self, frame: EventFrame, now_ms: u64) {
        let session_id = frame.session_id.clone();
        match frame.body {
            Event::Lobby(l) => {
                match l.admission {
                    Admission::Pending => {
                        self.lobby.insert(
                            l.participant_id.clone(),
                            LobbyEntry {
                                participant_id: l.participant_id,
                                display_name: l.display_name,
                                share_id: l.share_id,
                            },
                        );
                    }
                    Admission::Admitted | Admission::Refused => {
                        self.lobby.remove(&l.participant_id);
                        self.lobby_settled.insert(l.participant_id);
                    }
                }
                return;
            }
            Event::Admission(a) => {
                match a.admission {
                    Admission::Admitted => {
                        if let Some(role) = a.role {
                            self.role = Some(role);
                        }
                        self.connection = ConnectionState::Connected;
                    }
                    Admission::Refused => {
                        self.connection = ConnectionState::Closed("the host refused to let you in".into());
                    }
                    Admission::Pending => self.connection = ConnectionState::Lobby,
                }
                return;
            }
            Event::Closing(c) => {
                // Shown once, beside the connection state (see `disconnect_reason`).
                self.disconnect_reason = Some(crate::app::render::closing_text(&c.reason).to_string());
                return;
            }
            Event::Storage(st) => {
                self.storage_failing = (!st.available).then(|| crate::app::render::storage_text(&st));
                if st.available {
                    self.notice(crate::app::render::storage_text(&st), now_ms);
                }
                return;
            }
            _ => {}
        }
        let Some(session_id) = session_id else { return };
        let deadlines: BTreeMap<VoteId, Option<u64>> = match &frame.body {
            Event::Snapshot(snap) => {
                snap.votes.iter().map(|v| (v.vote_id.clone(), self.local_deadline(v, now_ms))).collect()
            }
            Event::VoteOpened(v) => [(v.vote_id.clone(), self.local_deadline(v, now_ms))].into(),
            _ => BTreeMap::new(),
        };
        let state = self.sessions.entry(session_id.clone()).or_default();
        let me = self.me.clone();
        match frame.body {
            Event::Snapshot(snap) => {
                apply_snapshot(state, snap, &deadlines);
                if self.current.as_ref().is_none_or(|c| *c == session_id) {
                    state.new_line_after.get_or_insert(state.read_seq);
                    self.current = Some(session_id);
                }
                return;
            }
            // The backend rejoins from the last seq applied; the replay brings what was missed.
            Event::ResyncRequired(_) => return,
            Event::AgentDelta(d) => {
                if state.loaded {
                    state.streaming.push_str(&d.text);
                }
                return;
            }
            Event::Typing(t) => {
                if me.as_ref() != Some(&t.participant_id) {
                    state.typing.insert(t.participant_id, (t.display_name, now_ms + TYPING_SHOWN_MS));
                }
                return;
            }
            _ => {}
        }
        let Some(seq) = frame.seq else { return };
        if !state.loaded {
            // Covered by the snapshot that follows our join; just keep the list's status right.
            status_hint(state, &frame.body);
            return;
        }
        // New and in order: the backend's `ClientSession` lets nothing else through.
        state.last_seq = seq;
        if let Some(info) = &mut state.info {
            info.last_seq = seq;
        }
        apply_session_event(state, frame.body, seq, me.as_ref(), &deadlines)
    }
}

/// Keeps an unloaded session's status right from the events the host receives anyway.
fn status_hint(state: &mut SessionState, body: &Event) {
    match body {
        Event::TurnStarted(t) => {
            if let Some(info) = &mut state.info {
                info.turn_holder = Some(t.holder_id.clone());
                info.status = SessionStatus::Running;
            }
        }
        Event::TurnEnded(_) => {
            if let Some(info) = &mut state.info {
                info.turn_holder = None;
                info.status = SessionStatus::Idle;
            }
        }
        Event::VoteOpened(_) => state.set_status(SessionStatus::AwaitingVote),
        Event::VoteResolved(_) => {
            let status = if state.holder().is_some() { SessionStatus::Running } else { SessionStatus::Idle };
            state.set_status(status);
        }
        Event::SessionUpdated(u) => {
            if let Some(info) = &mut state.info {
                info.title = u.title.clone();
                info.status = u.status;
                info.agent_settings = u.agent_settings.clone();
            }
        }
        _ => {}
    }
}

fn apply_snapshot(state: &mut SessionState, snap: Snapshot, deadlines: &BTreeMap<VoteId, Option<u64>>) {
    state.loaded = true;
    state.last_seq = snap.last_seq;
    state.set_roster(&snap.roster);
    state.holder_name = snap.session.turn_holder.as_ref().map(|h| state.name(h));
    let mut info = snap.session;
    info.participant_count = state.roster.len() as u32;
    state.info = Some(info);
    state.oldest_seq = snap.messages.first().map(|m| m.seq);
    state.has_older = snap.has_older;
    state.loading_older = false;
    state.timeline = snap.messages.into_iter().map(Entry::Message).collect();
    state.streaming = snap.streaming_text;
    state.votes = snap
        .votes
        .into_iter()
        .map(|v| {
            let closes_at_local_ms = deadlines.get(&v.vote_id).copied().flatten();
            (v.vote_id.clone(), VoteCard { opened: v, progress: None, resolved: None, closes_at_local_ms })
        })
        .collect();
}

fn apply_session_event(
    state: &mut SessionState,
    body: Event,
    seq: u64,
    me: Option<&ParticipantId>,
    deadlines: &BTreeMap<VoteId, Option<u64>>,
) {
    match body {
        Event::Message(m) => {
            if m.author_id == AGENT_ID {
                state.streaming.clear();
            }
            state.typing.remove(&ParticipantId::from(m.author_id.as_str()));
            state.push(Entry::Message(HistoryMessage { seq, message: m }));
        }
        // Room chat: in the timeline too, shown apart from prompts and agent output.
        Event::Chat(m) => {
            state.typing.remove(&ParticipantId::from(m.author_id.as_str()));
            state.push(Entry::Message(HistoryMessage { seq, message: m }));
        }
        Event::TurnStarted(t) => {
            if let Some(info) = &mut state.info {
                info.turn_holder = Some(t.holder_id.clone());
                info.status = SessionStatus::Running;
            }
            state.names.insert(t.holder_id, t.holder_name.clone());
            state.holder_name = Some(t.holder_name);
            state.streaming.clear();
            state.votes_before_turn = state.votes.keys().cloned().collect();
        }
        Event::TurnEnded(t) => {
            if let Some(info) = &mut state.info {
                info.turn_holder = None;
                info.status = SessionStatus::Idle;
            }
            state.holder_name = None;
            state.streaming.clear();
            let who = state.name(&t.holder_id);
            match t.reason {
                TurnEndReason::Completed => {}
                reason => {
                    let detail = t.error.map(|e| format!(": {e}")).unwrap_or_default();
                    let text = format!("{who}'s turn ended ({}){detail}", reason.as_str().replace('_', " "));
                    match reason {
                        TurnEndReason::Failed | TurnEndReason::AgentDied => state.push(Entry::Failure(text)),
                        _ => state.note(text),
                    }
                }
            }
        }
        Event::ParticipantJoined(entry) => {
            state.names.insert(entry.participant_id.clone(), entry.display_name.clone());
            let you = me == Some(&entry.participant_id);
            if !state.roster.contains_key(&entry.participant_id) {
                state.note(format!("{} joined", entry.display_name));
            }
            state.roster.insert(entry.participant_id.clone(), RosterEntry { you, ..entry });
            state.recount();
        }
        Event::ParticipantLeft(l) => {
            let name = state.name(&l.participant_id);
            state.roster.remove(&l.participant_id);
            state.recount();
            state.note(format!("{name} left ({})", l.reason));
        }
        Event::PresenceChanged(p) => {
            if let Some(r) = state.roster.get_mut(&p.participant_id) {
                r.presence = p.presence;
            }
            state.recount();
        }
        Event::ParticipantRenamed(r) => {
            let before = state.name(&r.participant_id);
            if let Some(row) = state.roster.get_mut(&r.participant_id) {
                row.display_name = r.display_name.clone();
            }
            if state.holder() == Some(&r.participant_id) {
                state.holder_name = Some(r.display_name.clone());
            }
            state.names.insert(r.participant_id, r.display_name.clone());
            state.note(format!("{before} is now called {}", r.display_name));
        }
        Event::ParticipantMuted(m) => {
            if let Some(r) = state.roster.get_mut(&m.participant_id) {
                r.muted = m.muted;
            }
        }
        Event::VoteOpened(v) => {
            state.set_status(SessionStatus::AwaitingVote);
            let closes_at_local_ms = deadlines.get(&v.vote_id).copied().flatten();
            state
                .votes
                .insert(v.vote_id.clone(), VoteCard { opened: v, progress: None, resolved: None, closes_at_local_ms });
        }
        Event::VoteProgress(p) => {
            if let Some(card) = state.votes.get_mut(&p.vote_id) {
                card.progress = Some(p);
            }
        }
        Event::VoteResolved(r) => {
            if let Some(card) = state.votes.get_mut(&r.vote_id) {
                card.resolved = Some(r.clone());
            }
            // A turn cancelled or ended while the vote was open is not running again.
            let status = match state.holder() {
                None => SessionStatus::Idle,
                Some(_) if state.votes.values().any(|c| c.is_open()) => SessionStatus::AwaitingVote,
                Some(_) => SessionStatus::Running,
            };
            state.set_status(status);
            if let Some(card) = state.votes.get(&r.vote_id) {
                let kind = subject_noun(&card.opened.subject);
                let outcome = state.vote_words(card).outcome.unwrap_or_default();
                state.note(format!("{kind} {outcome}"));
            }
        }
        Event::SessionUpdated(u) => {
            if let Some(info) = &mut state.info {
                info.title = u.title;
                info.status = u.status;
                info.agent_settings = u.agent_settings;
            }
        }
        Event::HistoryReplaced(_) => {
            state.loaded = false;
            state.timeline.clear();
            state.votes.clear();
            state.streaming.clear();
            // The backend starts the session afresh (a snapshot follows: `ClientSession`).
        }
        _ => {}
    }
}

/// A failed request in words for people: what did not happen and why, from the error code —
/// never the method's name or a participant id (the host's own message is shown only for codes
/// whose messages are written for people).
pub fn failure_text(method: &str, code: Option<ErrorCode>, message: &str) -> String {
    let what = match method {
        "send_message" | "send_chat" => "Not sent",
        "vote_plan" | "answer_question" => "Your vote was not counted",
        "cancel_turn" => "The turn was not cancelled",
        "join_session" => "Could not open the session",
        "fetch_history" => "Could not load earlier messages",
        "rename_session" => "Not renamed",
        "clear_session" => "Not cleared",
        "fork_session" => "Not forked",
        "create_session" => "No session was created",
        "add_workspace" => "The workspace was not added",
        "mint_share" | "rotate_share" => "No link was made",
        "revoke_share" => "The link was not revoked",
        "kick" => "Nobody was removed",
        "mute" => "Not muted",
        "admit" | "refuse" => "The lobby did not change",
        "update_settings" | "set_agent_settings" => "The settings were not saved",
        "list_sessions" | "list_workspaces" => "Could not list the sessions",
        "list_lobby" => "Could not read the lobby",
        "fetch_audit" => "Could not read the audit log",
        "list_shares" => "Could not list the links",
        "get_settings" => "Could not read the settings",
        _ => "That did not work",
    };
    format!("{what}: {}", error_reason(code, message))
}

/// Why, from the error code. Codes whose host messages may name methods or ids get a sentence
/// of their own.
fn error_reason(code: Option<ErrorCode>, message: &str) -> String {
    let Some(code) = code else {
        // Not the host's answer: the connection (the backend words it).
        return message.to_string();
    };
    match code {
        ErrorCode::TurnLocked => "someone else has the turn; wait until the agent finishes",
        ErrorCode::Forbidden if message.contains("host-only") => "only the host can do that",
        // "text must be non-empty and at most N bytes"
        ErrorCode::InvalidParams if message.starts_with("text ") => return message.to_string(),
        // Written for people ("you are muted by the host", "observers can read but not send").
        ErrorCode::Forbidden | ErrorCode::ShareInUse => return message.to_string(),
        ErrorCode::NotFound => "it no longer exists, or it is not shared with you",
        ErrorCode::StaleVote => "the vote was already decided",
        ErrorCode::NotAVoter => "your vote is not required on this one",
        ErrorCode::NoTurn => "no turn is running",
        ErrorCode::NotJoined => "you are not in that session any more; open it again",
        ErrorCode::NotAdmitted => "the host has not let you in yet",
        ErrorCode::RateLimited => "too many requests; wait a moment and try again",
        ErrorCode::StorageUnavailable => "the host cannot store anything right now; try again in a moment",
        ErrorCode::DuplicateClientMsgId => "a different message was already sent under the same number",
        ErrorCode::FileRefused => "the host does not show that file",
        ErrorCode::Internal => "the host failed; nothing changed",
        ErrorCode::Unauthenticated => "the host no longer accepts this connection",
        ErrorCode::AlreadyAuthenticated
        | ErrorCode::BadFrame
        | ErrorCode::FrameTooLarge
        | ErrorCode::UnknownMethod
        | ErrorCode::InvalidParams => "the host could not take the request",
    }
    .to_string()
}

/// Whether `author` is `me`.
fn is_me(me: Option<&ParticipantId>, author: &str) -> bool {
    me.is_some_and(|m| m.as_str() == author)
}

/// "plan", "tool use" or "question".
pub fn subject_noun(subject: &VoteSubject) -> &'static str {
    match subject {
        VoteSubject::Plan { .. } => "plan",
        VoteSubject::Tool { .. } => "tool use",
        VoteSubject::Question { .. } => "question",
    }
}

/// Human text for a vote outcome.
pub fn outcome_text(outcome: VoteOutcome) -> &'static str {
    match outcome {
        VoteOutcome::Approved => "approved",
        VoteOutcome::Denied => "denied",
        VoteOutcome::Answered => "answered",
    }
}

/// Workspace files a plan names: words that look like relative file paths (`src/login.rs`,
/// `Cargo.toml`, `src/login.rs:42` → `src/login.rs`), in order of first mention, at most
/// [`MAX_FILE_REFS`]. Paths are single words (no spaces). Absolute paths, `..`, URLs, numbers
/// (`1.`, `2.5`) and abbreviations (`e.g.`) are not offered; the host checks every path again
/// (`file_refused`).
pub fn file_refs(plan: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for word in plan.split_whitespace() {
        let word = word.trim_matches(|c: char| "`'\"()[]{}<>,;!?*".contains(c));
        let word = word.trim_end_matches(['.', ':']);
        // A `path:line` or `path:line:col` reference names the file.
        let word = match word.split_once(':') {
            Some((path, rest)) if rest.split(':').all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())) => {
                path
            }
            _ => word,
        };
        if found.len() >= MAX_FILE_REFS {
            break;
        }
        if looks_like_file(word) && !found.iter().any(|f| f == word) {
            found.push(word.to_string());
        }
    }
    found
}

fn looks_like_file(word: &str) -> bool {
    if word.is_empty() || word.starts_with('/') || word.starts_with('~') || word.contains("://") {
        return false;
    }
    let allowed = |c: char| c.is_alphanumeric() || "._-/+@".contains(c);
    if !word.chars().all(allowed) || word.split('/').any(|part| part.is_empty() || part == "..") {
        return false;
    }
    let name = word.rsplit('/').next().unwrap_or(word);
    let Some((stem, ext)) = name.rsplit_once('.') else {
        // Extension-less names count only inside a directory path (`src/bin/tool`).
        return word.contains('/') && name.chars().any(char::is_alphabetic);
    };
    let stem = stem.trim_start_matches('.');
    // `e.g`, `i.e`, `v1.2`: a real extension is short and has a letter, the stem has a letter.
    !stem.is_empty()
        && stem.chars().any(char::is_alphabetic)
        && (1..=10).contains(&ext.len())
        && ext.chars().all(char::is_alphanumeric)
        && ext.chars().any(char::is_alphabetic)
        && !(stem.len() == 1 && ext.len() == 1)
}
