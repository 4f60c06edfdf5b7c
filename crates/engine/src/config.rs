//! Engine settings: a resource every system may read (`Res<EngineConfig>`), defined apart from
//! the driver in `engine/mod.rs` so the systems never import the driver back.

use bevy_ecs::prelude::*;

/// Engine settings.
#[derive(Resource, Clone, Debug)]
pub struct EngineConfig {
    /// Seed of the engine RNG (tokens, resume tokens): scenarios and the simulator set it to
    /// replay a run.
    pub seed: u64,
    /// Secret entropy mixed into the token RNG with `seed`: 256 bits from the OS in a host, so
    /// its 256-bit tokens cannot be found by guessing a 64-bit seed; zero (deterministic) in
    /// scenarios and tests.
    pub token_secret: [u8; 32],
    /// Reconnect grace period.
    pub grace_ms: u64,
    /// A tick coming this much later than the previous one means the host was suspended:
    /// everyone within their grace period gets a fresh one.
    pub suspend_gap_ms: u64,
    /// Time allowed to authenticate.
    pub auth_timeout_ms: u64,
    /// Failed authentications per source address per minute before `rate_limited`.
    pub auth_failures_per_minute: usize,
    /// Host's display name.
    pub host_name: String,
    /// Whether votes in the host's own turns need consensus.
    pub default_consensus: bool,
    /// Default vote deadline for sessions and shares without their own.
    pub default_vote_deadline_ms: Option<u64>,
    /// The deadline above was given on the command line: for this run it wins over the one saved
    /// with `update_settings`.
    pub vote_deadline_pinned: bool,
    /// `roundtable://HOST:PORT/` and `#sha256=...` parts used to format links in `mint_share`.
    pub link_prefix: Option<String>,
    pub link_suffix: Option<String>,
    /// Largest file `read_workspace_file` returns.
    pub max_file_bytes: u64,
    /// Most live connections per share.
    pub max_connections_per_share: usize,
    /// Most live connections of one participant (resumed connections included).
    pub max_connections_per_participant: usize,
    /// Run the invariant checker every tick and panic on a violation (tests, scenarios).
    pub check_invariants: bool,
    /// Bytes of session traffic queued for one connection before it must resync (twice this,
    /// responses included, closes it as `too_slow`).
    pub outbox_max_bytes: usize,
    /// Extra secret patterns (regexes) masked in text sent to remotes, besides the built-in ones.
    pub mask_patterns: Vec<String>,
    /// Resolves an `add_workspace` agent command (to an absolute, executable path) or says why
    /// it cannot run. Set by the host (it looks at the file system, which the core never does
    /// itself); `None` stores the command as given (scenarios, simulations).
    pub resolve_agent: Option<AgentResolver>,
    /// A session's tails (event replay tail, latest messages) leave memory after this long
    /// unused: no connection joined, no remote in grace, no turn running
    /// (`systems::residency`).
    pub unload_idle_ms: u64,
    /// Load every session's tails at start, as before they were loaded on demand (testing aid:
    /// `bench startup --events-per-session` compares both).
    pub eager_tails: bool,
}

/// See [`EngineConfig::resolve_agent`].
pub type AgentResolver = fn(&crate::persist::AgentSpec) -> Result<crate::persist::AgentSpec, String>;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            token_secret: [0; 32],
            grace_ms: 30_000,
            suspend_gap_ms: 5_000,
            auth_timeout_ms: 10_000,
            auth_failures_per_minute: 5,
            host_name: "Host".into(),
            default_consensus: true,
            default_vote_deadline_ms: None,
            vote_deadline_pinned: false,
            link_prefix: None,
            link_suffix: None,
            max_file_bytes: 256 * 1024,
            max_connections_per_share: 64,
            max_connections_per_participant: 8,
            check_invariants: cfg!(debug_assertions),
            outbox_max_bytes: crate::components::Outbox::MAX_BYTES,
            mask_patterns: Vec::new(),
            resolve_agent: None,
            unload_idle_ms: 60_000,
            eager_tails: false,
        }
    }
}
