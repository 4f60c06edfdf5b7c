//! The scenario file format (TOML), as documented in docs/SCENARIOS.md.
//!
//! A scenario is a story: a host with workspaces, sessions and shares; participants who use those
//! shares; timed steps (protocol requests and injected faults); and expectations about what each
//! participant received and about the final state. These types are the whole format: the runner
//! reads them, the simulator writes them (so a failing random flow becomes a replayable file).
//!
//! Step parameters are kept as a TOML table (`params`) rather than one struct per method: they are
//! sent to the engine as the request's `params` (after handle and placeholder resolution), so the
//! engine's own parser checks them and a typo surfaces as an `invalid_params` the scenario did not
//! expect. Faults validate their few keys in the runner.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default virtual time between two ticks.
pub const DEFAULT_TICK_MS: u64 = 10;
/// Default time the runner keeps ticking after the last step.
pub const DEFAULT_SETTLE_MS: u64 = 1_000;

/// Why a scenario file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// (The I/O error is part of the message, not a `source`, so it is not printed twice.)
    #[error("cannot read {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("scenario {name}: {message}")]
    Invalid { name: String, message: String },
}

/// One scenario file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, printed in `PASS name` / `FAIL name`.
    pub name: String,
    /// Engine seed (tokens, resume tokens). `--seed` overrides it. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Virtual milliseconds between ticks (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    /// How long to keep ticking after the last step (default 1000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_ms: Option<u64>,
    /// Host settings.
    #[serde(default)]
    pub host: HostDef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub participants: Vec<ParticipantDef>,
    /// Timed steps (`[[step]]`).
    #[serde(default, rename = "step", skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// Event and error expectations (`[[expect]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<Expect>,
    /// Ordered expectations (`[[expect_order]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_order: Vec<ExpectOrder>,
    /// Final state (`[final]`).
    #[serde(default, rename = "final", skip_serializing_if = "FinalState::is_empty")]
    pub final_state: FinalState,
    /// The file the scenario was loaded from (for `${scenario_dir}`); not part of the format.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[host]`: the host's settings (engine configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDef {
    /// Host display name (default "Host").
    #[serde(default = "default_host_name")]
    pub name: String,
    /// Whether votes in the host's own turns need consensus (default true).
    #[serde(default = "yes")]
    pub default_consensus: bool,
    /// Default vote deadline (ms) for sessions and shares without their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_deadline_ms: Option<u64>,
    /// Reconnect grace period (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// Time allowed to authenticate (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_timeout_ms: Option<u64>,
    /// Failed authentications per address per minute before `rate_limited` (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_failures_per_minute: Option<usize>,
    /// Largest file `read_workspace_file` returns (default 256 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_bytes: Option<u64>,
    /// Whether the host's connection joins every declared session at setup (default true).
    #[serde(default = "yes")]
    pub join: bool,
}

impl Default for HostDef {
    fn default() -> Self {
        Self {
            name: default_host_name(),
            default_consensus: true,
            vote_deadline_ms: None,
            grace_ms: None,
            auth_timeout_ms: None,
            auth_failures_per_minute: None,
            max_file_bytes: None,
            join: true,
        }
    }
}

/// `[[workspaces]]`: a workspace directory, created fresh by the runner in a temporary directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceDef {
    /// Workspace name (also usable wherever a workspace id is expected).
    pub name: String,
    /// Files to create inside the workspace: relative path → content.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// Files to create *next to* the workspace (outside it), to prove reads are confined.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outside_files: BTreeMap<String, String>,
    /// Symbolic links inside the workspace: link path → target (Unix only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub symlinks: BTreeMap<String, String>,
    /// Agent backend: `demo` (default), `command` or `claude`. Without `agent_cmd` the external
    /// backends are not available and their turns fail; with it they run as real processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The external agent's executable (`${bin.echo_agent}`, `${bin.fake_claude}`, a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_cmd: Option<String>,
    /// Extra arguments of the external agent (placeholders resolved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_args: Vec<String>,
}

impl WorkspaceDef {
    /// Whether this workspace runs a real external agent process.
    pub fn runs_external_agent(&self) -> bool {
        self.agent_cmd.is_some() && matches!(self.agent.as_deref(), Some("command" | "claude"))
    }
}

/// `[[sessions]]`: a session, created at setup; the n-th declared session is `sN`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDef {
    /// Workspace name or id.
    pub workspace: String,
    #[serde(default = "default_title")]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_deadline_ms: Option<u64>,
}

/// `[[shares]]`: a share minted by the host at setup. Every `mint_share` setting is here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareDef {
    /// Label: how participants and steps refer to the share.
    pub label: String,
    /// Workspace names or ids (default: every declared workspace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<String>,
    #[serde(default = "yes")]
    pub collaborative: bool,
    #[serde(default = "yes")]
    pub consensus_required: bool,
    #[serde(default)]
    pub admission_required: bool,
    /// `participant` (default) or `observer`.
    #[serde(default = "default_role")]
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_deadline_ms: Option<u64>,
}

/// `[[participants]]`: a remote (or, with no share, a client that only connects).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantDef {
    /// Handle used everywhere in the scenario (`ann`). `host` is reserved for the host.
    pub name: String,
    /// Display name asked for at authentication (default: the handle, capitalised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Share label whose token the participant authenticates with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Connections opened at `connect_at` (default 1; 0 = connect later with steps). The first
    /// authenticates with the share token, the others with the resume token it returned.
    #[serde(default = "one")]
    pub connections: u32,
    /// When the participant connects (default 0, at setup).
    #[serde(default)]
    pub connect_at: u64,
    /// Authenticate automatically after connecting (default true).
    #[serde(default = "yes")]
    pub authenticate: bool,
    /// Sessions joined automatically once admitted (default: every declared session in the
    /// share's scope; `[]` for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Vec<String>>,
    /// Source IP of this participant's connections (default a distinct `10.0.0.N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// On `resync_required`, rejoin with `since_seq` = last seq seen (default true).
    #[serde(default = "yes")]
    pub auto_resync: bool,
    /// On `history_replaced`, rejoin to refetch a snapshot (default true).
    #[serde(default = "yes")]
    pub auto_refetch: bool,
}

/// Which connection of a participant a step uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConnRef {
    /// The n-th connection the participant opened (0-based, closed ones included).
    Index(usize),
    /// `"new"`: open a fresh connection first.
    Named(String),
}

/// `[[step]]`: at virtual time `at`, participant `who` does `do`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Virtual time (ms) at which the step runs (before that tick).
    pub at: u64,
    /// Participant handle (default `host`).
    #[serde(default = "default_who")]
    pub who: String,
    /// A protocol method name or a fault (see docs/SCENARIOS.md).
    #[serde(rename = "do")]
    pub action: String,
    /// Which connection (default: the most recently opened one that is still open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<ConnRef>,
    /// What the response must be: `ok` (default for methods), `error`, `any`, `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// The response must be this error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_error: Option<String>,
    /// The error message must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_contains: Option<String>,
    /// The result must contain these fields (subset match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_result: Option<toml::Table>,
    /// Run the step this many times (`${i}` in strings = 0, 1, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// Virtual ms between repetitions (default one tick).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// Expectations relative to this step (`within` counts from the step's time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<Expect>,
    /// Everything else: the method's params (or the fault's settings).
    #[serde(flatten)]
    pub params: toml::Table,
}

/// One participant or several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Who {
    One(String),
    Many(Vec<String>),
}

impl Default for Who {
    fn default() -> Self {
        Who::One("*".into())
    }
}

/// `[[expect]]`: frames a participant received (or must not have received).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Participant handle, list of handles, or `*` for everyone (default).
    #[serde(default)]
    pub who: Who,
    /// Only frames delivered on this connection index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<usize>,
    /// Event name (`message`, `vote_resolved`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Or: an error response with this code (to any request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Event's `session_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Event's `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Subset of the event payload (or of the error object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<toml::Table>,
    /// Only frames delivered at or after this virtual time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Only frames delivered at or before this virtual time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// In `[[step.then]]`: delivered within this many ms of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<u64>,
    /// Exactly this many matching frames (per participant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// No matching frame at all (same as `count = 0`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub absent: bool,
    /// Shown when the expectation fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `[[expect_order]]`: these events arrive in this order (other frames may come between).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectOrder {
    #[serde(default)]
    pub who: Who,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    pub events: Vec<EventPattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One event in an [`ExpectOrder`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPattern {
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<toml::Table>,
}

/// `[final]`: the state after the last tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalState {
    /// By session id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sessions: BTreeMap<String, SessionFinal>,
    /// By participant handle.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub participants: BTreeMap<String, ParticipantFinal>,
    /// By vote id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub votes: BTreeMap<String, VoteFinal>,
    /// By share label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shares: BTreeMap<String, ShareFinal>,
    /// Lines (substrings) that must appear in `Engine::state_digest()`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digest_contains: Vec<String>,
    /// Substrings that must not appear in the digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digest_lacks: Vec<String>,
    /// Audit entries the store must hold, each `"ACTION TARGET"` (`"kicked ${bob}"`,
    /// `"share_revoked ${share.team}"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<String>,
}

impl FinalState {
    pub fn is_empty(&self) -> bool {
        *self == FinalState::default()
    }
}

/// `[final.sessions.sN]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFinal {
    /// `idle`, `running` or `awaiting_vote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Participant handle holding the turn, or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Number of messages in the history (chat and agent replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<usize>,
    /// Exact message texts, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub texts: Option<Vec<String>>,
    /// Author display names of the messages, oldest first (`agent` replies included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authors: Option<Vec<String>>,
    /// Texts that must appear among the messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub has_texts: Vec<String>,
    /// Texts that must not appear among the messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lacks_texts: Vec<String>,
    /// Display names of the present participants in the session, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roster: Option<Vec<String>>,
}

/// `[final.participants.HANDLE]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantFinal {
    /// `connected`, `reconnecting`, `gone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `admitted`, `pending`, `refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<String>,
    /// Participant id (`p1`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Sessions whose every event (seq 1..=last) this participant received, by replay or snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saw_every_event_of: Vec<String>,
    /// Sessions of which this client received no event of any kind (seq'd or not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saw_no_event_of: Vec<String>,
    /// A reason the host closed one of this client's connections with (`kicked`, `revoked`,
    /// `refused`, `auth_timeout`…), or `none`: the host closed none of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by_host: Option<String>,
}

/// `[final.votes.vN]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteFinal {
    /// `approved`, `denied`, `answered`, or `open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Exact reason (`~text` = contains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// The ballots the store holds for the vote, each `"VOTER:CHOICE"` (`"${ann}:approve"`), in
    /// any order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ballots: Option<Vec<String>>,
}

/// `[final.shares.LABEL]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareFinal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_host_name() -> String {
    "Host".into()
}
fn default_title() -> String {
    "main".into()
}
fn default_role() -> String {
    "participant".into()
}
fn default_who() -> String {
    "host".into()
}

/// The faults a step can inject (everything else in `do` is a protocol method).
pub const FAULTS: [&str; 14] = [
    "connect",
    "disconnect",
    "reconnect",
    "slow",
    "release",
    "restart_host",
    "crash_after_commit",
    "agent_fail",
    "clock_jump",
    "wall_step",
    "storage_fault",
    "storage_heal",
    "raw",
    "wait",
];

impl Scenario {
    /// Parses a scenario from TOML text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)
            .map_err(|e| ScenarioError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ScenarioError::Io { path: path.to_path_buf(), error })?;
        let mut scenario = Scenario::parse(&text, path)?;
        scenario.source = Some(path.to_path_buf());
        Ok(scenario)
    }

    /// Whether any workspace runs a real external agent (`agent_cmd` set).
    pub fn uses_external_agents(&self) -> bool {
        self.workspaces.iter().any(WorkspaceDef::runs_external_agent)
    }

    /// Serialises the scenario back to TOML (the simulator writes replays with it).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("scenarios serialise to TOML")
    }

    /// Checks references between sections (handles, labels, actions).
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |message: String| ScenarioError::Invalid { name: self.name.clone(), message };
        if self.name.trim().is_empty() {
            return Err(bad("`name` must not be empty".into()));
        }
        if self.tick_ms == Some(0) {
            return Err(bad("`tick_ms` must be at least 1".into()));
        }
        let mut handles = std::collections::BTreeSet::from(["host".to_string()]);
        for p in &self.participants {
            if !handles.insert(p.name.clone()) {
                return Err(bad(format!("participant handle `{}` is used twice (or is `host`)", p.name)));
            }
            if let Some(share) = &p.share {
                if !self.shares.iter().any(|s| &s.label == share) {
                    return Err(bad(format!("participant `{}` uses unknown share `{share}`", p.name)));
                }
            }
        }
        for w in &self.workspaces {
            let agent = w.agent.as_deref().unwrap_or("demo");
            if !["demo", "command", "claude"].contains(&agent) {
                return Err(bad(format!(
                    "workspace `{}`: agent must be demo, command or claude, not `{agent}`",
                    w.name
                )));
            }
            if (w.agent_cmd.is_some() || !w.agent_args.is_empty()) && agent == "demo" {
                return Err(bad(format!(
                    "workspace `{}`: agent_cmd and agent_args need agent = command or claude",
                    w.name
                )));
            }
        }
        let mut labels = std::collections::BTreeSet::new();
        for s in &self.shares {
            if !labels.insert(s.label.clone()) {
                return Err(bad(format!("share label `{}` is used twice", s.label)));
            }
        }
        for step in self.steps.iter().filter(|s| s.action == "mint_share") {
            if let Some(l) = step.params.get("label").and_then(|v| v.as_str()) {
                labels.insert(l.to_string());
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            if !handles.contains(&step.who) {
                return Err(bad(format!("step {} (at {}): unknown participant `{}`", i + 1, step.at, step.who)));
            }
            let known = FAULTS.contains(&step.action.as_str())
                || crate::protocol::Method::NAMES.contains(&step.action.as_str());
            if !known {
                return Err(bad(format!(
                    "step {} (at {}): unknown action `{}` (a protocol method or one of: {})",
                    i + 1,
                    step.at,
                    step.action,
                    FAULTS.join(", ")
                )));
            }
            if let Some(r) = &step.response {
                if !["ok", "error", "any", "none"].contains(&r.as_str()) {
                    return Err(bad(format!("step {}: response must be ok, error, any or none, not `{r}`", i + 1)));
                }
            }
        }
        let check_who = |who: &Who, what: &str| -> Result<(), ScenarioError> {
            let names = match who {
                Who::One(n) => vec![n.clone()],
                Who::Many(v) => v.clone(),
            };
            for n in names {
                if n != "*" && !handles.contains(&n) {
                    return Err(bad(format!("{what}: unknown participant `{n}`")));
                }
            }
            Ok(())
        };
        for (i, e) in self.expect.iter().enumerate() {
            check_who(&e.who, &format!("expect {}", i + 1))?;
            if e.event.is_none() && e.error.is_none() {
                return Err(bad(format!("expect {}: needs `event` or `error`", i + 1)));
            }
        }
        for step in &self.steps {
            for e in &step.then {
                check_who(&e.who, &format!("then of step at {}", step.at))?;
            }
        }
        for (i, e) in self.expect_order.iter().enumerate() {
            check_who(&e.who, &format!("expect_order {}", i + 1))?;
        }
        for h in self.final_state.participants.keys() {
            if !handles.contains(h) {
                return Err(bad(format!("final: unknown participant `{h}`")));
            }
        }
        for l in self.final_state.shares.keys() {
            if !labels.contains(l) {
                return Err(bad(format!("final: unknown share `{l}`")));
            }
        }
        Ok(())
    }

    /// Steps with repetitions expanded (`${i}` substituted), stably sorted by time.
    pub fn expanded_steps(&self) -> Vec<(usize, Step)> {
        let mut out = Vec::new();
        let tick = self.tick_ms.unwrap_or(DEFAULT_TICK_MS);
        for (index, step) in self.steps.iter().enumerate() {
            let n = step.repeat.unwrap_or(1);
            for i in 0..n {
                let mut s = step.clone();
                s.repeat = None;
                s.at = step.at + u64::from(i) * step.every.unwrap_or(tick);
                if step.repeat.is_some() {
                    let idx = i.to_string();
                    s.params = substitute_table(&s.params, &|t| t.replace("${i}", &idx));
                }
                out.push((index, s));
            }
        }
        out.sort_by_key(|(_, s)| s.at);
        out
    }
}

/// Applies `f` to every string inside a TOML table.
pub fn substitute_table(table: &toml::Table, f: &dyn Fn(&str) -> String) -> toml::Table {
    table.iter().map(|(k, v)| (k.clone(), substitute_value(v, f))).collect()
}

fn substitute_value(v: &toml::Value, f: &dyn Fn(&str) -> String) -> toml::Value {
    match v {
        toml::Value::String(s) => toml::Value::String(f(s)),
        toml::Value::Array(a) => toml::Value::Array(a.iter().map(|x| substitute_value(x, f)).collect()),
        toml::Value::Table(t) => toml::Value::Table(substitute_table(t, f)),
        other => other.clone(),
    }
}

/// Converts TOML to JSON (datetimes become strings).
pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => table_to_json(t),
    }
}

/// Converts a TOML table to a JSON object.
pub fn table_to_json(t: &toml::Table) -> serde_json::Value {
    serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect())
}

/// Expands paths: directories become their `*.toml` files (sorted); files stay as given.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ScenarioError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|error| ScenarioError::Io { path: p.clone(), error })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
name = "sample"
[[workspaces]]
name = "app"
[[sessions]]
workspace = "app"
[[shares]]
label = "team"
[[participants]]
name = "ann"
share = "team"
[[step]]
at = 100
who = "ann"
do = "send_message"
session_id = "s1"
text = "hello ${i}"
repeat = 2
every = 50
[[step.then]]
who = "host"
event = "message"
within = 100
"#;

    #[test]
    fn a_scenario_round_trips_through_toml() {
        let s = Scenario::parse(SAMPLE, Path::new("x.toml")).unwrap();
        assert_eq!(s.steps[0].params.get("text").and_then(|v| v.as_str()), Some("hello ${i}"));
        assert_eq!(s.steps[0].then.len(), 1);
        let back = Scenario::parse(&s.to_toml(), Path::new("y.toml")).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn repeated_steps_expand_with_their_index() {
        let s = Scenario::parse(SAMPLE, Path::new("x.toml")).unwrap();
        let steps = s.expanded_steps();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].1.at, 150);
        assert_eq!(steps[1].1.params["text"].as_str(), Some("hello 1"));
    }

    #[test]
    fn unknown_actions_and_handles_are_refused() {
        let bad = SAMPLE.replace("do = \"send_message\"", "do = \"explode\"");
        assert!(Scenario::parse(&bad, Path::new("x.toml")).unwrap_err().to_string().contains("unknown action"));
        let bad = SAMPLE.replace("who = \"ann\"", "who = \"zed\"");
        assert!(Scenario::parse(&bad, Path::new("x.toml")).unwrap_err().to_string().contains("zed"));
    }

    #[test]
    fn unknown_top_level_keys_are_refused() {
        let bad = format!("nmae = 1\n{SAMPLE}");
        assert!(Scenario::parse(&bad, Path::new("x.toml")).is_err());
    }
}
