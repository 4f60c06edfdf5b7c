//! The host console: what the host types on `roundtable serve`'s stdin.
//!
//! A plain line is a chat message from the host to the *current* session; a line starting with
//! `/` is a command ([`HELP`] lists them): moderate (`/kick`, `/mute`, `/admit`…), vote
//! (`/approve`, `/deny`, `/answer` — the host's ballot decides alone), manage sessions and shares.
//! Every command is one or more requests on the host's own in-process connection, so the console
//! can do exactly what the protocol allows the host and nothing else; every refusal is printed as
//! `! CODE: MESSAGE` and the host keeps running.
//!
//! The module has three layers, each testable on its own:
//! - [`parse`] turns a line into a [`Command`] (pure; unknown `/words` are refused rather than
//!   sent to everyone, so a typo never becomes chat — `//plan x` sends `/plan x`);
//! - [`Console`] runs a command against the host and returns the text to print;
//! - [`stdin_lines`] reads stdin on a plain thread. End of input only stops the reading: the host
//!   keeps serving (`serve < /dev/null`, CI, a closed terminal).
//!
//! Participants can be named by id (`p3`) or, when unambiguous, by display name (`Ann`).
//! Votes default to the newest open one of the current session; a first word like `v3` names one.

use crate::app::admin::{human_duration, parse_duration_ms};
use crate::app::render::Renderer;
use crate::ids::{ParticipantId, SessionId, ShareId, VoteId, WorkspaceId};
use crate::net::client::{Client, ClientError};
use crate::protocol::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use tokio::sync::mpsc;

/// Command help, printed by `/help`.
pub const HELP: &str = "\
host console — type a line to send it to the current session as the host, or a command:
  /chat TEXT                 say something to the people in the session, not the agent (/c)
  /sessions                  list sessions (* marks the current one)
  /switch ID                 make session ID current
  /new TITLE                 open a session in the current session's workspace and switch to it
  /rename TITLE              rename the current session
  /clear                     clear the current session: its messages (everyone reloads) and the
                             agent's memory (its next turn starts a new conversation)
  /fork [TITLE]              copy the current session into a new one and switch to it
  /model NAME                the agent's model in the current session, for every turn from the
                             next on (kept across restarts; /model default goes back)
  /mode plan|default         the agent's permission mode in the current session (/mode reset:
                             the workspace's own); modes that skip votes are not offered
  /who                       who is in the current session: ids, presence, muted
  /lobby                     who waits in the lobby for /admit or /refuse
  /admit WHO, /refuse WHO    let someone in from the lobby, or turn them away
  /kick WHO                  disconnect someone now: they leave every session, vote and turn;
                             their link still works (they come back as someone new) unless
                             you /revoke their share
  /ban WHO                   /kick, and revoke the share they came with (its link stops working
                             and everyone still using it is disconnected)
  /mute WHO, /unmute WHO     stop / allow someone sending and voting
  /approve [VOTE]            approve a plan or tool request (your ballot decides alone)
  /allow [VOTE]              approve a tool request and allow that tool for the rest of the session
  /deny [VOTE] [REASON]      deny it, with a reason everyone sees
  /answer [VOTE] A[|B...]    answer the agent's question(s), one answer per question
  /cancel                    stop the running turn of the current session
  /shares                    list share links (never their tokens)
  /mint [OPTIONS] [WORKSPACE...]
                             mint a share link (default scope: the current session's workspace);
                             options: --observer --one-to-one --no-consensus --admission
                             --expires 30m --max-uses N --label NAME --vote-deadline 2m
  /revoke SHARE              revoke a share: its link stops working, its people are disconnected
  /rotate SHARE              new link for a share (the old one stops working, people stay)
  /quit                      shut the host down (like Ctrl-C)
  /WORD ...                  any other /word (an agent's own command, e.g. /plan) is a message;
                             a typo of a command above is refused instead
  //TEXT                     send a message starting with / (even a command's name)
WHO is a participant id (p3) or a display name; VOTE (v3) defaults to the newest open vote of the
current session.";

/// A line the console understood.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// A prompt to the current session's agent.
    Message(String),
    /// Room chat to the people in the current session (never to the agent).
    Chat(String),
    Help,
    Sessions,
    Switch(SessionId),
    /// A new session in the current workspace, with this title.
    New(String),
    Rename(String),
    /// The current session's agent settings: a model and/or a permission mode ("" = default).
    AgentSettings {
        model: Option<String>,
        permission_mode: Option<String>,
    },
    Clear,
    /// Fork the current session, optionally with a title.
    Fork(Option<String>),
    Who,
    Lobby,
    /// Admit, refuse, kick, mute or unmute someone named by id or display name.
    Moderate(Moderation, String),
    Approve(Option<VoteId>),
    /// Approve a tool request and allow that tool for the rest of the session.
    Allow(Option<VoteId>),
    Deny {
        vote: Option<VoteId>,
        reason: Option<String>,
    },
    Answer {
        vote: Option<VoteId>,
        answers: Vec<String>,
    },
    Cancel,
    Shares,
    Mint(MintOptions),
    Revoke(ShareId),
    Rotate(ShareId),
    Quit,
}

/// `word` itself means "back to the default" (an empty string on the wire).
fn reset_word(value: &str, word: &str) -> String {
    if value == word {
        String::new()
    } else {
        value.to_string()
    }
}

/// What the host does to a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moderation {
    Admit,
    Refuse,
    Kick,
    /// Kick and revoke the share they came with.
    Ban,
    Mute,
    Unmute,
}

impl Moderation {
    /// The past tense, for the confirmation line.
    fn done(self) -> &'static str {
        match self {
            Moderation::Admit => "admitted",
            Moderation::Refuse => "refused",
            Moderation::Kick => "kicked",
            Moderation::Ban => "kicked (their share is revoked)",
            Moderation::Mute => "muted",
            Moderation::Unmute => "unmuted",
        }
    }

    fn method(self, participant_id: ParticipantId) -> Method {
        match self {
            Moderation::Admit => Method::Admit(ParticipantRef { participant_id }),
            Moderation::Refuse => Method::Refuse(ParticipantRef { participant_id }),
            Moderation::Kick => Method::Kick(KickParams { participant_id, revoke_share: false }),
            Moderation::Ban => Method::Kick(KickParams { participant_id, revoke_share: true }),
            Moderation::Mute => Method::Mute(MuteParams { participant_id, muted: true }),
            Moderation::Unmute => Method::Mute(MuteParams { participant_id, muted: false }),
        }
    }
}

/// Options of `/mint`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MintOptions {
    pub observer: bool,
    pub one_to_one: bool,
    pub no_consensus: bool,
    pub admission: bool,
    pub expires_in_ms: Option<u64>,
    pub max_uses: Option<u32>,
    pub label: Option<String>,
    pub vote_deadline_ms: Option<u64>,
    /// Empty: the current session's workspace.
    pub workspaces: Vec<WorkspaceId>,
}

/// Why a line is not a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command /{0}; type /help for the commands (//{0} sends \"/{0}\" as a message)")]
    Unknown(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// Why a command failed. Printed as `! ...`; the host keeps running.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The host refused the request (`code: message`) or the connection failed.
    #[error(transparent)]
    Host(#[from] ClientError),
    /// The console cannot tell what to act on (no current session, no open vote, unknown name…).
    #[error("{0}")]
    Context(String),
}

/// Parses one console line; `Ok(None)` for a blank line.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Some(cmd) = line.trim_start().strip_prefix('/') else { return Ok(Some(Command::Message(line.to_string()))) };
    if cmd.starts_with('/') {
        return Ok(Some(Command::Message(cmd.to_string())));
    }
    let (word, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
    let rest = rest.trim();
    let who = |m: Moderation, usage: &'static str| -> Result<Command, ParseError> {
        match rest.split_whitespace().count() {
            0 => Err(ParseError::Usage(usage)),
            // Display names may contain spaces ("Ann (2)"), so the whole rest is the name.
            _ => Ok(Command::Moderate(m, rest.to_string())),
        }
    };
    let command = match word {
        "help" | "?" => Command::Help,
        "quit" | "exit" => Command::Quit,
        "sessions" => Command::Sessions,
        "switch" => match rest.split_whitespace().collect::<Vec<_>>()[..] {
            [id] => Command::Switch(SessionId::from(id)),
            _ => return Err(ParseError::Usage("/switch SESSION_ID (see /sessions)")),
        },
        "new" => Command::New(rest.to_string()),
        "rename" if rest.is_empty() => return Err(ParseError::Usage("/rename TITLE")),
        "rename" => Command::Rename(rest.to_string()),
        "clear" => Command::Clear,
        "model" if rest.is_empty() => return Err(ParseError::Usage("/model NAME (or /model default)")),
        "model" => Command::AgentSettings { model: Some(reset_word(rest, "default")), permission_mode: None },
        "mode" => match rest {
            "plan" | "default" | "reset" => {
                Command::AgentSettings { model: None, permission_mode: Some(reset_word(rest, "reset")) }
            }
            _ => return Err(ParseError::Usage("/mode plan|default|reset")),
        },
        "fork" => Command::Fork((!rest.is_empty()).then(|| rest.to_string())),
        "who" => Command::Who,
        "lobby" => Command::Lobby,
        "admit" => who(Moderation::Admit, "/admit ID|NAME (see /lobby)")?,
        "refuse" => who(Moderation::Refuse, "/refuse ID|NAME (see /lobby)")?,
        "kick" => who(Moderation::Kick, "/kick ID|NAME (see /who)")?,
        "ban" => who(Moderation::Ban, "/ban ID|NAME (see /who)")?,
        "mute" => who(Moderation::Mute, "/mute ID|NAME (see /who)")?,
        "unmute" => who(Moderation::Unmute, "/unmute ID|NAME (see /who)")?,
        "approve" => match split_vote(rest) {
            (vote, "") => Command::Approve(vote),
            _ => return Err(ParseError::Usage("/approve [VOTE_ID]")),
        },
        "allow" => match split_vote(rest) {
            (vote, "") => Command::Allow(vote),
            _ => return Err(ParseError::Usage("/allow [VOTE_ID]")),
        },
        "deny" => {
            let (vote, reason) = split_vote(rest);
            Command::Deny { vote, reason: (!reason.is_empty()).then(|| reason.to_string()) }
        }
        "answer" => {
            let (vote, answers) = split_vote(rest);
            if answers.is_empty() {
                return Err(ParseError::Usage("/answer [VOTE_ID] ANSWER (several questions: A|B|...)"));
            }
            Command::Answer { vote, answers: answers.split('|').map(|a| a.trim().to_string()).collect() }
        }
        "cancel" => Command::Cancel,
        "chat" | "c" if rest.is_empty() => return Err(ParseError::Usage("/chat TEXT")),
        "chat" | "c" => Command::Chat(rest.to_string()),
        "shares" => Command::Shares,
        "mint" => Command::Mint(parse_mint(rest)?),
        "revoke" | "rotate" => {
            let [id] = rest.split_whitespace().collect::<Vec<_>>()[..] else {
                return Err(ParseError::Usage(if word == "revoke" {
                    "/revoke SHARE_ID (see /shares)"
                } else {
                    "/rotate SHARE_ID (see /shares)"
                }));
            };
            let id = ShareId::from(id);
            if word == "revoke" {
                Command::Revoke(id)
            } else {
                Command::Rotate(id)
            }
        }
        // A typo of a console command is refused (a moderation command must not reach the
        // agent as a prompt); any other `/word`, such as an agent's own `/plan`, is a message,
        // as in `join`.
        other if looks_like_command(other) => return Err(ParseError::Unknown(other.to_string())),
        _ => Command::Message(line.to_string()),
    };
    Ok(Some(command))
}

/// The console's command words.
const COMMAND_WORDS: &[&str] = &[
    "help", "quit", "exit", "sessions", "switch", "new", "rename", "clear", "fork", "who", "lobby", "admit", "refuse",
    "kick", "ban", "mute", "unmute", "approve", "allow", "deny", "answer", "cancel", "chat", "shares", "mint",
    "revoke", "rotate", "model", "mode",
];

/// Whether `word` is within two edits of a console command (a typo, not an agent's command).
fn looks_like_command(word: &str) -> bool {
    let word = word.to_lowercase();
    // Levenshtein distance, counted in chars.
    COMMAND_WORDS.iter().any(|c| strsim::levenshtein(&word, c) <= 2.min(c.len() / 2))
}

/// Splits an optional leading vote id (`v3`) off the arguments.
fn split_vote(rest: &str) -> (Option<VoteId>, &str) {
    let (first, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let id = VoteId::from(first);
    if id.number().is_some() {
        (Some(id), tail.trim())
    } else {
        (None, rest)
    }
}

fn parse_mint(rest: &str) -> Result<MintOptions, ParseError> {
    let mut o = MintOptions::default();
    let mut words = rest.split_whitespace();
    while let Some(word) = words.next() {
        let Some(flag) = word.strip_prefix("--") else {
            o.workspaces.push(WorkspaceId::from(word));
            continue;
        };
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (flag, None),
        };
        let mut value = |name: &str| {
            inline
                .map(str::to_string)
                .or_else(|| words.next().map(str::to_string))
                .ok_or_else(|| ParseError::Invalid(format!("--{name} needs a value; see /help")))
        };
        match flag {
            "observer" => o.observer = true,
            "one-to-one" => o.one_to_one = true,
            "no-consensus" => o.no_consensus = true,
            "admission" => o.admission = true,
            "expires" | "expires-in" => o.expires_in_ms = Some(parse_duration_ms(&value(flag)?).map_err(bad_mint)?),
            "vote-deadline" => o.vote_deadline_ms = Some(parse_duration_ms(&value(flag)?).map_err(bad_mint)?),
            "max-uses" => {
                let v = value(flag)?;
                let n = v.parse().map_err(|_| bad_mint(format!("--max-uses needs a whole number, not \"{v}\"")))?;
                o.max_uses = Some(n);
            }
            "label" => o.label = Some(value(flag)?),
            other => return Err(bad_mint(format!("unknown option --{other}"))),
        }
    }
    Ok(o)
}

fn bad_mint(detail: String) -> ParseError {
    ParseError::Invalid(format!("/mint: {detail}; see /help"))
}

/// What a line did: text to print, and whether the host should shut down.
#[derive(Debug, Default)]
pub struct Reply {
    pub text: String,
    pub quit: bool,
}

/// Someone in the lobby, as announced by a `lobby` event.
#[derive(Clone, Debug)]
struct Waiting {
    name: String,
    share: ShareId,
}

/// Runs console commands on the host's connection and remembers what they need: the current
/// session and who waits in the lobby (the protocol announces the lobby only as events).
pub struct Console {
    client: Client,
    current: Option<SessionId>,
    lobby: BTreeMap<ParticipantId, Waiting>,
    /// Random prefix of the host's client_msg_ids: unique across restarts of the host.
    tag: String,
    sent: u64,
}

/// A participant the console can name: from a roster (`where_` = session id) or the lobby.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub id: ParticipantId,
    pub name: String,
    pub where_: String,
}

impl Console {
    /// A console acting through `client` (the host's connection), starting in `current`.
    pub fn new(client: Client, current: Option<SessionId>) -> Self {
        let tag = format!("console-{:08x}", rand::random::<u32>());
        Self { client, current, lobby: BTreeMap::new(), tag, sent: 0 }
    }

    /// The session plain lines go to.
    pub fn current(&self) -> Option<&SessionId> {
        self.current.as_ref()
    }

    /// Follows an event the host received (`log` has rendered it already) and returns what to
    /// print after it: how the host can act on a new vote or a newcomer in the lobby. After a
    /// `history_replaced` the session is fetched again, so `log` knows its open votes.
    pub async fn after_event(&mut self, frame: &EventFrame) -> String {
        let prefix = frame.session_id.as_ref().map(|s| format!("[{s}] ")).unwrap_or_default();
        match &frame.body {
            Event::Lobby(l) => match l.admission {
                Admission::Pending => {
                    let waiting = Waiting { name: l.display_name.clone(), share: l.share_id.clone() };
                    self.lobby.insert(l.participant_id.clone(), waiting);
                    format!("  host: /admit {0} or /refuse {0}\n", l.participant_id)
                }
                Admission::Admitted | Admission::Refused => {
                    self.lobby.remove(&l.participant_id);
                    String::new()
                }
            },
            Event::VoteOpened(v) => match &v.subject {
                VoteSubject::Question { .. } => {
                    format!(
                        "{prefix}host: /answer {} A[|B...] decides it now (your answer is used as given)\n",
                        v.vote_id
                    )
                }
                VoteSubject::Plan { .. } | VoteSubject::Tool { .. } => {
                    format!("{prefix}host: /approve {0} or /deny {0} REASON decides it now\n", v.vote_id)
                }
            },
            Event::HistoryReplaced(_) => {
                if let Some(session) = &frame.session_id {
                    // The snapshot that follows re-renders the session and its open votes.
                    let params = JoinSessionParams { session_id: session.clone(), since_seq: None };
                    if let Err(e) = self.client.request(Method::JoinSession(params)).await {
                        return format!("! cannot reload {session}: {e}\n");
                    }
                }
                String::new()
            }
            _ => String::new(),
        }
    }

    /// Runs one line; errors are part of the reply text (`! ...`), never fatal.
    pub async fn line(&mut self, line: &str, log: &mut Renderer) -> Reply {
        let command = match parse(line) {
            Ok(Some(c)) => c,
            Ok(None) => return Reply::default(),
            Err(e) => return Reply { text: format!("! {e}\n"), quit: false },
        };
        if command == Command::Quit {
            return Reply { text: String::new(), quit: true };
        }
        match self.run(command, log).await {
            Ok(text) => Reply { text, quit: false },
            Err(e) => Reply { text: format!("! {e}\n"), quit: false },
        }
    }

    /// Approves a vote as the host; `always` also allows the tool for the rest of the session.
    async fn approve(&mut self, vote: Option<VoteId>, always: bool, log: &Renderer) -> Result<String, ConsoleError> {
        let vote_id = self.pick_vote(vote, log, false)?;
        let params = VotePlanParams { vote_id, approve: true, reason: None, always };
        self.client.request(Method::VotePlan(params)).await?;
        Ok(String::new()) // `vote_resolved` shows the outcome
    }

    async fn run(&mut self, command: Command, log: &mut Renderer) -> Result<String, ConsoleError> {
        let room = matches!(command, Command::Chat(_));
        match command {
            Command::Quit => Ok(String::new()),
            Command::Help => Ok(format!("{HELP}\n")),
            Command::Message(text) | Command::Chat(text) => {
                let session = self.need_current()?;
                self.sent += 1;
                let params = SendMessageParams {
                    session_id: session,
                    text,
                    client_msg_id: format!("{}-{}", self.tag, self.sent),
                };
                let method = if room { Method::SendChat(params) } else { Method::SendMessage(params) };
                self.client.request(method).await?;
                // The `message` (or `chat`) event shows it.
                Ok(String::new())
            }
            Command::Sessions => self.sessions().await,
            Command::Switch(id) => {
                let sessions = self.list_sessions().await?;
                let Some(s) = sessions.iter().find(|s| s.id == id) else {
                    return Err(ConsoleError::Context(format!("no session {id}; see /sessions")));
                };
                self.current = Some(id.clone());
                Ok(format!("* now in {id} \"{}\"; plain lines go there\n", s.title))
            }
            Command::New(title) => {
                let workspace = self.current_workspace().await?;
                let params = CreateSessionParams {
                    workspace_id: workspace.clone(),
                    title,
                    vote_deadline_ms: None,
                    plan_first: None,
                };
                let info: SessionInfo = self.client.call(Method::CreateSession(params)).await?;
                log.joined(&info, &[]);
                self.current = Some(info.id.clone());
                Ok(format!("* opened {} \"{}\" in {workspace}; now in {}\n", info.id, info.title, info.id))
            }
            Command::Rename(title) => {
                let session = self.need_current()?;
                let params = RenameSessionParams { session_id: session.clone(), title };
                self.client.request(Method::RenameSession(params)).await?;
                Ok(String::new()) // the `session_updated` event shows it
            }
            Command::AgentSettings { model, permission_mode } => {
                let session = self.need_current()?;
                let params = SetAgentSettingsParams { session_id: session, model, permission_mode };
                self.client.request(Method::SetAgentSettings(params)).await?;
                Ok(String::new()) // the `session_updated` event shows it
            }
            Command::Clear => {
                let session = self.need_current()?;
                self.client.request(Method::ClearSession(SessionRef { session_id: session.clone() })).await?;
                Ok(format!("* cleared {session}: its messages, and the agent starts a new conversation\n"))
            }
            Command::Fork(title) => {
                let session = self.need_current()?;
                let params = ForkSessionParams { session_id: session.clone(), title };
                let info: SessionInfo = self.client.call(Method::ForkSession(params)).await?;
                log.joined(&info, &[]);
                self.current = Some(info.id.clone());
                Ok(format!("* forked {session} into {} \"{}\"; now in {}\n", info.id, info.title, info.id))
            }
            Command::Who => self.who(log).await,
            Command::Lobby => Ok(self.lobby_text()),
            Command::Moderate(action, who) => {
                let id = self.resolve(&who).await?;
                let result = self.client.request(action.method(id.clone())).await;
                if matches!(action, Moderation::Admit | Moderation::Refuse)
                    && (result.is_ok()
                        || result.as_ref().err().and_then(ClientError::code) == Some(ErrorCode::NotFound))
                {
                    self.lobby.remove(&id);
                }
                result?;
                Ok(format!("* {} {}\n", action.done(), self.describe(&id, log)))
            }
            Command::Approve(vote) => self.approve(vote, false, log).await,
            Command::Allow(vote) => self.approve(vote, true, log).await,
            Command::Deny { vote, reason } => {
                let vote_id = self.pick_vote(vote, log, false)?;
                let params = VotePlanParams { vote_id, approve: false, reason, always: false };
                self.client.request(Method::VotePlan(params)).await?;
                Ok(String::new())
            }
            Command::Answer { vote, answers } => {
                let vote_id = self.pick_vote(vote, log, true)?;
                self.client.request(Method::AnswerQuestion(AnswerQuestionParams { vote_id, answers })).await?;
                Ok(String::new())
            }
            Command::Cancel => {
                let session = self.need_current()?;
                self.client.request(Method::CancelTurn(SessionRef { session_id: session })).await?;
                Ok(String::new()) // `turn_ended` shows it
            }
            Command::Shares => {
                let shares = self.client.call::<ListSharesResult>(Method::ListShares(Empty {})).await?.shares;
                if shares.is_empty() {
                    return Ok("* no shares yet; mint one with /mint\n".into());
                }
                Ok(shares_table(&shares, crate::app::host::wall_ms(), &self.workspace_names().await?))
            }
            Command::Mint(o) => {
                let workspaces =
                    if o.workspaces.is_empty() { vec![self.current_workspace().await?] } else { o.workspaces };
                let params = MintShareParams {
                    label: o.label.unwrap_or_default(),
                    workspaces,
                    collaborative: !o.one_to_one,
                    consensus_required: !o.no_consensus && !o.one_to_one,
                    admission_required: o.admission,
                    role: if o.observer { Role::Observer } else { Role::Participant },
                    expires_in_ms: o.expires_in_ms,
                    max_uses: o.max_uses,
                    vote_deadline_ms: o.vote_deadline_ms,
                };
                let minted: MintShareResult = self.client.call(Method::MintShare(params)).await?;
                Ok(link_text("minted", &minted, &self.workspace_names().await?))
            }
            Command::Revoke(id) => {
                let before = self.client.call::<ListSharesResult>(Method::ListShares(Empty {})).await?.shares;
                let connections = before.iter().find(|s| s.share_id == id).map(|s| s.connections).unwrap_or(0);
                self.client.request(Method::RevokeShare(ShareRef { share_id: id.clone() })).await?;
                Ok(format!("* share {id} revoked: its link no longer works; {connections} connection(s) closed\n"))
            }
            Command::Rotate(id) => {
                let rotated: MintShareResult = self.client.call(Method::RotateShare(ShareRef { share_id: id })).await?;
                let names = self.workspace_names().await?;
                Ok(link_text("rotated (the old link no longer works; people already in stay)", &rotated, &names))
            }
        }
    }

    fn need_current(&self) -> Result<SessionId, ConsoleError> {
        self.current
            .clone()
            .ok_or_else(|| ConsoleError::Context("no current session; /sessions, then /switch ID".into()))
    }

    async fn list_sessions(&self) -> Result<Vec<SessionInfo>, ConsoleError> {
        let params = ListSessionsParams { workspace_id: None };
        Ok(self.client.call::<ListSessionsResult>(Method::ListSessions(params)).await?.sessions)
    }

    /// The current session's workspace, else the first workspace.
    async fn workspace_names(&self) -> Result<WorkspaceNames, ConsoleError> {
        let listed = self.client.call::<ListWorkspacesResult>(Method::ListWorkspaces(Empty {})).await?;
        Ok(listed.workspaces.into_iter().map(|w| (w.id, w.name)).collect())
    }

    async fn current_workspace(&self) -> Result<WorkspaceId, ConsoleError> {
        if let Some(current) = &self.current {
            if let Some(s) = self.list_sessions().await?.into_iter().find(|s| &s.id == current) {
                return Ok(s.workspace_id);
            }
        }
        let workspaces = self.client.call::<ListWorkspacesResult>(Method::ListWorkspaces(Empty {})).await?.workspaces;
        workspaces.into_iter().next().map(|w| w.id).ok_or_else(|| {
            ConsoleError::Context("no workspace is registered; add one with `roundtable workspace add DIR`".into())
        })
    }

    async fn sessions(&self) -> Result<String, ConsoleError> {
        let sessions = self.list_sessions().await?;
        if sessions.is_empty() {
            return Ok("* no sessions; open one with /new TITLE\n".into());
        }
        let workspaces = self.client.call::<ListWorkspacesResult>(Method::ListWorkspaces(Empty {})).await?.workspaces;
        let rows = sessions
            .iter()
            .map(|s| {
                let marker = if self.current.as_ref() == Some(&s.id) { "*" } else { "" };
                let workspace = match workspaces.iter().find(|w| w.id == s.workspace_id) {
                    Some(w) => format!("{} ({})", w.id, w.name),
                    None => s.workspace_id.to_string(),
                };
                vec![
                    format!("{marker}{}", s.id),
                    format!("\"{}\"", s.title),
                    workspace,
                    s.agent.clone(),
                    s.status.as_str().to_string(),
                    s.participant_count.to_string(),
                    s.turn_holder.as_ref().map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        Ok(table(&["ID", "TITLE", "WORKSPACE", "AGENT", "STATUS", "PRESENT", "TURN"], rows))
    }

    async fn roster(&self, session: &SessionId) -> Result<JoinSessionResult, ConsoleError> {
        Ok(host_roster(&self.client, session).await?)
    }

    async fn who(&self, log: &mut Renderer) -> Result<String, ConsoleError> {
        let session = self.need_current()?;
        let joined = self.roster(&session).await?;
        log.joined(&joined.session, &joined.roster);
        let info = &joined.session;
        let turn = match &info.turn_holder {
            Some(t) => format!(", turn: {}", log.name(t)),
            None => String::new(),
        };
        let mut out = format!("{} \"{}\" ({}{turn}):\n", info.id, info.title, info.status.as_str());
        let rows = joined
            .roster
            .iter()
            .map(|r| {
                vec![
                    r.participant_id.to_string(),
                    r.display_name.clone(),
                    r.role.as_str().to_string(),
                    presence_text(r.presence).to_string(),
                    if r.muted { "muted".into() } else { String::new() },
                ]
            })
            .collect();
        for line in table(&["ID", "NAME", "ROLE", "PRESENCE", ""], rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
        if !self.lobby.is_empty() {
            let _ = writeln!(out, "  ({} waiting in the lobby: /lobby)", self.lobby.len());
        }
        Ok(out)
    }

    fn lobby_text(&self) -> String {
        if self.lobby.is_empty() {
            return "* nobody is waiting in the lobby\n".into();
        }
        let mut out = String::from("waiting in the lobby (/admit WHO or /refuse WHO):\n");
        let rows = self
            .lobby
            .iter()
            .map(|(id, w)| vec![id.to_string(), w.name.clone(), format!("share {}", w.share)])
            .collect();
        for line in table(&["ID", "NAME", "VIA"], rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
        out
    }

    /// Everyone the console can name: the lobby and the rosters of every session.
    async fn known(&self) -> Result<Vec<Known>, ConsoleError> {
        let mut known: Vec<Known> = self
            .lobby
            .iter()
            .map(|(id, w)| Known { id: id.clone(), name: w.name.clone(), where_: "lobby".into() })
            .collect();
        for s in self.list_sessions().await? {
            for r in self.roster(&s.id).await?.roster {
                known.push(Known { id: r.participant_id, name: r.display_name, where_: s.id.to_string() });
            }
        }
        Ok(known)
    }

    /// A participant id from an id or a display name.
    async fn resolve(&self, who: &str) -> Result<ParticipantId, ConsoleError> {
        pick_participant(who, &self.known().await?)
    }

    fn describe(&self, id: &ParticipantId, log: &Renderer) -> String {
        let name = self.lobby.get(id).map(|w| w.name.clone()).unwrap_or_else(|| log.name(id));
        if name == id.as_str() {
            id.to_string()
        } else {
            format!("{name} ({id})")
        }
    }

    /// The vote a ballot is for: the one named, else the newest open vote of the current
    /// session of the right kind (questions for `/answer`, plans and tool requests otherwise).
    fn pick_vote(&self, named: Option<VoteId>, log: &Renderer, question: bool) -> Result<VoteId, ConsoleError> {
        if let Some(v) = named {
            return Ok(v);
        }
        let session = self.need_current()?;
        let open = log.session(&session).map(|view| &view.votes);
        open.into_iter()
            .flat_map(|votes| votes.values().rev())
            .find(|v| matches!(v.subject, VoteSubject::Question { .. }) == question)
            .map(|v| v.vote_id.clone())
            .ok_or_else(|| {
                let what = if question { "question" } else { "plan or tool request" };
                ConsoleError::Context(format!("no {what} is waiting for a vote in {session}"))
            })
    }
}

/// A session's state and roster as the host sees them, without replaying anything.
/// `join_session` is how any connection reads a roster; the host is always in its sessions, and
/// a `since_seq` past the end means "nothing missed", so no event is sent again. The host's own
/// row comes back marked `you`; that mark is cleared, because the host's activity log speaks of
/// nobody as "you".
pub async fn host_roster(client: &Client, session: &SessionId) -> Result<JoinSessionResult, ClientError> {
    let params = JoinSessionParams { session_id: session.clone(), since_seq: Some(u64::MAX) };
    let mut joined: JoinSessionResult = client.call(Method::JoinSession(params)).await?;
    joined.roster.iter_mut().for_each(|r| r.you = false);
    Ok(joined)
}

/// Picks one participant: an exact id wins; else a display name matching exactly one person
/// (case-insensitive); else, when it looks like an id (`p7`), it is passed on for the host to
/// judge (`not_found`).
pub fn pick_participant(who: &str, known: &[Known]) -> Result<ParticipantId, ConsoleError> {
    let who = who.trim();
    if let Some(k) = known.iter().find(|k| k.id.as_str() == who) {
        return Ok(k.id.clone());
    }
    let wanted = who.to_lowercase();
    let mut matches: Vec<&Known> = known.iter().filter(|k| k.name.to_lowercase() == wanted).collect();
    matches.sort_by(|a, b| a.id.cmp(&b.id));
    matches.dedup_by(|a, b| a.id == b.id);
    match matches[..] {
        [one] => Ok(one.id.clone()),
        [] if ParticipantId::from(who).number().is_some() => Ok(ParticipantId::from(who)),
        [] => Err(ConsoleError::Context(format!("nobody named \"{who}\" is here; see /who and /lobby"))),
        _ => {
            let ids: Vec<String> = matches.iter().map(|k| format!("{} (in {})", k.id, k.where_)).collect();
            Err(ConsoleError::Context(format!("\"{who}\" could be {}; use the id", ids.join(" or "))))
        }
    }
}

fn presence_text(p: PresenceState) -> &'static str {
    match p {
        PresenceState::Connected => "connected",
        PresenceState::Reconnecting => "reconnecting",
        PresenceState::Gone => "gone",
    }
}

/// Workspaces' names by id, for shares as people know them.
pub type WorkspaceNames = BTreeMap<WorkspaceId, String>;

fn workspace_label(names: &WorkspaceNames, id: &WorkspaceId) -> String {
    crate::app::admin::workspace_label(names.get(id).map(String::as_str), id)
}

/// A minted or rotated link, shown once and unmistakably.
fn link_text(what: &str, minted: &MintShareResult, names: &WorkspaceNames) -> String {
    let s = &minted.share;
    let mut out = format!("* share {} {what}: {}\n", s.share_id, describe_share(s, names));
    match &minted.link {
        Some(link) => out.push_str(&crate::app::serve::invite_text(link)),
        None => {
            let _ = writeln!(out, "token (shown once): {}", minted.token);
        }
    }
    let _ = writeln!(out, "  lost it? /rotate {} prints a new link (the old one stops working)", s.share_id);
    out
}

/// "participant for w1 (collab, consensus), expires in 30m, max 3 uses".
fn describe_share(s: &ShareInfo, names: &WorkspaceNames) -> String {
    let scope: Vec<String> = s.workspaces.iter().map(|w| workspace_label(names, w)).collect();
    let mut text = format!("{} for {} ({})", s.role.as_str(), scope.join(", "), share_flags(s));
    if !s.label.is_empty() {
        text = format!("\"{}\", {text}", s.label);
    }
    if let Some(t) = s.expires_at {
        let now = crate::app::host::wall_ms();
        let _ = write!(text, ", expires in {}", human_duration(t.saturating_sub(now)));
    }
    if let Some(m) = s.max_uses {
        let _ = write!(text, ", max {m} uses");
    }
    text
}

fn share_flags(s: &ShareInfo) -> String {
    crate::app::admin::share_flags(s.collaborative, s.consensus_required, s.admission_required)
}

/// The `/shares` table. `now` is the engine clock (wall ms on a real host).
pub fn shares_table(shares: &[ShareInfo], now: u64, names: &WorkspaceNames) -> String {
    let rows = shares
        .iter()
        .map(|s| {
            let status = crate::app::admin::share_status(s.revoked, s.expires_at, s.max_uses, s.uses, now);
            let expires = match s.expires_at {
                None => "never".to_string(),
                Some(t) if t > now => format!("in {}", human_duration(t - now)),
                Some(t) => format!("{} ago", human_duration(now - t)),
            };
            vec![
                s.share_id.to_string(),
                if s.label.is_empty() { "-".into() } else { s.label.clone() },
                s.workspaces.iter().map(|w| workspace_label(names, w)).collect::<Vec<_>>().join(","),
                s.role.as_str().to_string(),
                share_flags(s),
                match s.max_uses {
                    Some(m) => format!("{}/{m}", s.uses),
                    None => format!("{}/-", s.uses),
                },
                expires,
                s.connections.to_string(),
                status.to_string(),
            ]
        })
        .collect();
    table(&["ID", "LABEL", "WORKSPACES", "ROLE", "FLAGS", "USES", "EXPIRES", "CONNECTED", "STATUS"], rows)
}

/// Left-aligned columns separated by two spaces.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Reads stdin lines on a plain thread (a blocking read must not hold up the runtime); the host's
/// console and `roundtable join` read their input with it. The channel closes at end of input;
/// the caller just stops listening.
///
/// On a terminal, `SIGTTIN` is ignored: a host put in the background (`serve &`, or Ctrl-Z then
/// `bg`) would otherwise be *stopped* by the kernel the moment it reads the terminal. With the
/// signal ignored the read fails with `EIO` instead, and the reader waits until the host is back
/// in the foreground.
pub fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    use std::io::{BufRead, IsTerminal};
    let (tx, rx) = mpsc::unbounded_channel();
    let terminal = std::io::stdin().is_terminal();
    if terminal {
        // SAFETY: setting SIGTTIN to SIG_IGN installs no handler.
        unsafe { libc::signal(libc::SIGTTIN, libc::SIG_IGN) };
    }
    let spawned = std::thread::Builder::new().name("console".into()).spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send(line.trim_end_matches(['\r', '\n']).to_string()).is_err() {
                        break;
                    }
                }
                Err(e) if terminal && e.raw_os_error() == Some(libc::EIO) && in_background() => {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("cannot read stdin ({e}); input is off");
                    break;
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the stdin reader: {e}");
    }
    rx
}

/// Whether stdin is a terminal whose foreground process group is not ours.
fn in_background() -> bool {
    // SAFETY: plain queries of the terminal's and our own process group.
    let (fg, own) = unsafe { (libc::tcgetpgrp(libc::STDIN_FILENO), libc::getpgrp()) };
    fg != -1 && fg != own
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        parse(line).unwrap().unwrap()
    }

    #[test]
    fn plain_lines_are_messages_and_double_slash_escapes_a_slash() {
        assert_eq!(cmd("hello all"), Command::Message("hello all".into()));
        assert_eq!(cmd("//plan ship it"), Command::Message("/plan ship it".into()));
        assert_eq!(parse("   ").unwrap(), None);
    }

    #[test]
    fn typos_of_commands_are_refused_and_other_slash_words_go_to_the_agent_as_in_join() {
        let e = parse("/kik p1").unwrap_err();
        assert_eq!(e, ParseError::Unknown("kik".into()));
        assert!(e.to_string().contains("//kik"), "{e}");
        for typo in ["/aprove", "/mut Ann", "/revok sh1", "/Kick Ann"] {
            assert!(matches!(parse(typo), Err(ParseError::Unknown(_))), "{typo}");
        }
        // The demo agent's `/plan`, Claude Code's `/review`: prompts, no `//` needed.
        assert_eq!(parse("/plan fix the login").unwrap(), Some(Command::Message("/plan fix the login".into())));
        assert_eq!(parse("/review").unwrap(), Some(Command::Message("/review".into())));
        assert_eq!(parse("//kick").unwrap(), Some(Command::Message("/kick".into())));
    }

    #[test]
    fn votes_default_to_none_and_a_leading_vote_id_names_one() {
        assert_eq!(cmd("/approve"), Command::Approve(None));
        assert_eq!(cmd("/approve v3"), Command::Approve(Some(VoteId::from("v3"))));
        assert_eq!(cmd("/allow v4"), Command::Allow(Some(VoteId::from("v4"))));
        assert_eq!(cmd("/deny too risky"), Command::Deny { vote: None, reason: Some("too risky".into()) });
        assert_eq!(cmd("/deny v2 no"), Command::Deny { vote: Some(VoteId::from("v2")), reason: Some("no".into()) });
        assert_eq!(cmd("/deny"), Command::Deny { vote: None, reason: None });
        assert_eq!(
            cmd("/answer v4 yes | later"),
            Command::Answer { vote: Some(VoteId::from("v4")), answers: vec!["yes".into(), "later".into()] }
        );
        assert_eq!(
            parse("/answer").unwrap_err(),
            ParseError::Usage("/answer [VOTE_ID] ANSWER (several questions: A|B|...)")
        );
        assert!(matches!(parse("/approve v1 now"), Err(ParseError::Usage(_))));
    }

    #[test]
    fn moderation_takes_an_id_or_a_whole_display_name() {
        assert_eq!(cmd("/kick p2"), Command::Moderate(Moderation::Kick, "p2".into()));
        assert_eq!(cmd("/ban Ann"), Command::Moderate(Moderation::Ban, "Ann".into()));
        assert_eq!(cmd("/mute Ann (2)"), Command::Moderate(Moderation::Mute, "Ann (2)".into()));
        assert!(matches!(parse("/admit"), Err(ParseError::Usage(_))));
    }

    #[test]
    fn mint_reads_every_option_and_the_workspaces() {
        let Command::Mint(o) = cmd(
            "/mint --observer --one-to-one --no-consensus --admission --expires 30m --max-uses 3 --label=ann w1 w2",
        ) else {
            panic!("not a mint")
        };
        assert!(o.observer && o.one_to_one && o.no_consensus && o.admission);
        assert_eq!(o.expires_in_ms, Some(30 * 60_000));
        assert_eq!(o.max_uses, Some(3));
        assert_eq!(o.label.as_deref(), Some("ann"));
        assert_eq!(o.workspaces, vec![WorkspaceId::from("w1"), WorkspaceId::from("w2")]);
        assert_eq!(cmd("/mint"), Command::Mint(MintOptions::default()));
    }

    #[test]
    fn mint_rejects_bad_options_clearly() {
        assert!(parse("/mint --expires soon").unwrap_err().to_string().contains("invalid duration"));
        assert!(parse("/mint --max-uses").unwrap_err().to_string().contains("--max-uses needs a value"));
        assert!(parse("/mint --max-uses x").unwrap_err().to_string().contains("whole number"));
        assert!(parse("/mint --forever").unwrap_err().to_string().contains("unknown option --forever"));
    }

    #[test]
    fn session_and_share_commands_need_their_argument() {
        assert_eq!(cmd("/switch s2"), Command::Switch(SessionId::from("s2")));
        assert!(matches!(parse("/switch"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("/rename"), Err(ParseError::Usage(_))));
        assert_eq!(cmd("/rename Fix login"), Command::Rename("Fix login".into()));
        assert_eq!(cmd("/fork"), Command::Fork(None));
        assert_eq!(cmd("/revoke sh2"), Command::Revoke(ShareId::from("sh2")));
        assert_eq!(cmd("/rotate sh1"), Command::Rotate(ShareId::from("sh1")));
        assert!(matches!(parse("/revoke"), Err(ParseError::Usage(_))));
        assert_eq!(cmd("/quit"), Command::Quit);
    }

    fn known(id: &str, name: &str, where_: &str) -> Known {
        Known { id: ParticipantId::from(id), name: name.into(), where_: where_.into() }
    }

    #[test]
    fn participants_are_named_by_id_or_by_an_unambiguous_display_name() {
        let people = [
            known("host", "Host", "s1"),
            known("p1", "Ann", "s1"),
            known("p1", "Ann", "s2"),
            known("p2", "Bob", "lobby"),
        ];
        assert_eq!(pick_participant("p2", &people).unwrap(), ParticipantId::from("p2"));
        assert_eq!(pick_participant("ann", &people).unwrap(), ParticipantId::from("p1"), "same person in two sessions");
        assert_eq!(pick_participant("Bob", &people).unwrap(), ParticipantId::from("p2"));
        assert_eq!(pick_participant("p9", &people).unwrap(), ParticipantId::from("p9"), "left for the host to judge");
        assert!(pick_participant("Zed", &people).unwrap_err().to_string().contains("nobody named"));
        let twins = [known("p1", "Ann", "s1"), known("p3", "Ann", "s2")];
        let e = pick_participant("Ann", &twins).unwrap_err().to_string();
        assert!(e.contains("p1 (in s1)") && e.contains("p3 (in s2)"), "{e}");
    }

    #[test]
    fn the_shares_table_shows_usage_expiry_and_status() {
        let share = |id: &str, revoked: bool, expires_at: Option<u64>| ShareInfo {
            share_id: ShareId::from(id),
            label: String::new(),
            workspaces: vec![WorkspaceId::from("w1")],
            collaborative: true,
            consensus_required: true,
            admission_required: true,
            role: Role::Participant,
            expires_at,
            max_uses: Some(3),
            uses: 1,
            revoked,
            created_at: 0,
            connections: 2,
        };
        let names = WorkspaceNames::from([(WorkspaceId::from("w1"), "api".to_string())]);
        let out = shares_table(&[share("sh1", false, Some(61_000)), share("sh2", true, None)], 1_000, &names);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ID"), "{out}");
        assert!(lines[1].contains("collab,consensus,admission") && lines[1].contains("1/3"), "{out}");
        assert!(lines[1].contains("\"api\"") && !lines[1].contains("w1"), "workspaces by name: {out}");
        assert!(lines[1].contains("in 1m") && lines[1].ends_with("active"), "{out}");
        assert!(lines[2].contains("never") && lines[2].ends_with("revoked"), "{out}");
    }
}
