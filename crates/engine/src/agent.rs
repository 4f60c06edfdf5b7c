//! The engine's contract with agents: the commands it issues, the output it accepts, and the two
//! kinds of runtime an application plugs in. The core owns this contract; the backends (demo,
//! claude, command in `crate::agent`) implement it, so the core never names a backend.
//!
//! - [`InTickAgent`]: runs inside the tick, stepped by the agent system (deterministic).
//! - [`AgentRuntime`]: lives outside the engine (processes, threads) and sends its output back
//!   as [`super::io::Inbound::Agent`], handled in the next tick like network input.

use crate::ids::SessionId;
use crate::persist::AgentSpec;
use crate::protocol::Question;
use serde::{Deserialize, Serialize};

/// What the engine asks of an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentCommand {
    /// Start a turn with the driver's message.
    StartTurn {
        session: SessionId,
        turn_id: u64,
        /// Working directory (the workspace directory).
        workspace_dir: String,
        spec: AgentSpec,
        prompt: String,
        author_name: String,
        /// The conversation to continue (the session's stored [`crate::persist::AgentMemory`]);
        /// `None`: start a new one. The engine's copy is the truth: a backend's own memory of an
        /// earlier conversation does not outlive a clear or a restart.
        #[serde(default)]
        conversation: Option<String>,
        /// The session's agent settings (`set_agent_settings`).
        #[serde(default)]
        settings: crate::protocol::AgentSettings,
    },
    /// Answer one of the agent's requests (plan approval, question, tool permission).
    Resolve { session: SessionId, turn_id: u64, request_id: String, resolution: Resolution },
    /// Stop the running turn.
    Cancel { session: SessionId, turn_id: u64 },
}

/// The decision sent back to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    Approved,
    /// Denied, with the voters' reasons.
    Denied(String),
    /// Merged answers, one per question.
    Answered(Vec<String>),
}

/// Something an agent produced for a turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentOutput {
    pub session: SessionId,
    pub turn_id: u64,
    pub event: AgentEvent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentEvent {
    /// More reply text.
    Delta(String),
    /// The agent proposes a plan and waits for approval; `on_approval` says what approving lets
    /// it do next (shown on the vote card).
    Plan { request_id: String, plan: String, on_approval: Option<String> },
    /// The agent asks questions and waits for answers.
    Question { request_id: String, questions: Vec<Question> },
    /// The agent wants to use a tool and waits for permission (host decides).
    ToolRequest { request_id: String, tool: String, input: String },
    /// The agent no longer needs an answer to one of its requests (e.g. Claude withdrew a
    /// permission prompt): its open vote closes, denied "withdrawn by the agent".
    Withdrawn { request_id: String },
    /// The conversation the agent is in now (`None`: it could not continue the stored one and
    /// started afresh). Stored with the session and sent with its next turn.
    Conversation(Option<String>),
    /// The turn finished normally.
    Done,
    /// The turn failed (crash, timeout, error result).
    Failed(String),
}

/// An agent that runs inside the tick (pure, deterministic, no I/O): it gets this tick's
/// commands for its sessions and is stepped once per tick for its output. The built-in `demo`
/// backend is one; the application registers it with [`crate::Engine::add_in_tick_agent`].
pub trait InTickAgent: Send + Sync {
    /// Handles a command for one of this backend's sessions.
    fn handle(&mut self, cmd: AgentCommand);
    /// Output produced in this tick, in a deterministic order.
    fn step(&mut self) -> Vec<AgentOutput>;
}

/// An agent backend living outside the engine (processes, threads).
///
/// `send` must not block the tick: implementations queue the command to their own threads.
/// Output goes to the engine's inbound channel (see `Engine::sender`).
pub trait AgentRuntime: Send {
    fn send(&mut self, cmd: AgentCommand);
}

/// A runtime that refuses every external backend: any turn fails with a clear error.
/// Used by the scenario runner and when no external runtime is configured.
pub struct NoExternalAgents {
    pub tx: crossbeam_channel::Sender<super::io::Inbound>,
}

impl AgentRuntime for NoExternalAgents {
    fn send(&mut self, cmd: AgentCommand) {
        if let AgentCommand::StartTurn { session, turn_id, spec, .. } = cmd {
            let _ = self.tx.send(super::io::Inbound::Agent(AgentOutput {
                session,
                turn_id,
                event: AgentEvent::Failed(format!("the '{}' agent backend is not available in this host", spec.kind)),
            }));
        }
    }
}
