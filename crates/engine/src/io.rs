//! The engine's edges: what enters it ([`Inbound`]) and where its frames leave ([`FrameSink`]).
//!
//! Transports (the WebSocket server, the in-memory scenario transport, the test harness)
//! implement [`FrameSink`] and send [`Inbound`]s; the core never sees a socket.

use super::agent::AgentOutput;
use crate::ids::ConnId;
use std::sync::Arc;

/// A serialised frame, shared by every recipient (serialised once per tick, not per recipient).
pub type Frame = Arc<str>;

/// Where the engine hands a connection's frames. Implemented by the transports (WebSocket,
/// in-memory). Must never block.
pub trait FrameSink: Send + Sync {
    /// Offers a frame. Returns false when the transport's queue is full; the engine keeps the
    /// frame in its outbox and offers it again next tick.
    fn try_send(&self, frame: &Frame) -> bool;
    /// Closes the connection after the frames already accepted (with a close reason).
    fn close(&self, reason: &str);
}

/// Everything that enters the engine.
/// A frame as the host's own connection gets it and as remotes get it (secrets masked, see
/// [`crate::mask_json`]); the same allocation when nothing needed masking.
#[derive(Clone, Debug)]
pub struct Framed {
    pub host: Frame,
    pub remote: Frame,
}

impl Framed {
    /// A frame with nothing to mask (no text from people or the agent in it).
    pub fn same(frame: Frame) -> Framed {
        Framed { host: frame.clone(), remote: frame }
    }

    /// `value` serialised for the host and, masked while serialising, for remotes.
    pub fn of<T: serde::Serialize + ?Sized>(value: &T, masker: &crate::mask::Masker) -> Framed {
        let (host, remote) = crate::mask_json::to_json_pair(value, masker);
        Framed { host, remote }
    }

    /// The copy for a connection.
    pub fn for_conn(&self, is_host: bool) -> &Frame {
        if is_host {
            &self.host
        } else {
            &self.remote
        }
    }

    /// Bytes of the host's copy.
    pub fn len(&self) -> usize {
        self.host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }
}

pub enum Inbound {
    /// A transport accepted a connection. `addr` is the source address (`ip:port`).
    Opened { conn: ConnId, addr: String, sink: Arc<dyn FrameSink> },
    /// The host's own in-process connection (UI, scenario runner): authenticated as `host`.
    OpenedHost { conn: ConnId, sink: Arc<dyn FrameSink> },
    /// A text frame from a connection.
    Frame { conn: ConnId, text: String },
    /// The transport closed (socket dropped, client went away).
    Closed { conn: ConnId },
    /// Output of an external agent backend.
    Agent(AgentOutput),
    /// Shares were edited outside the engine (CLI); reload them from the store.
    SharesChanged,
}

/// One input as the tick consumed it, in order: recorded (when [`Journal::on`]) so that a
/// reference model can replay exactly what the engine saw (the simulator's oracle, see
/// `scenario::model`). Frames are recorded when they are handled, so a frame held back behind an
/// authentication appears in the tick that handles it.
#[derive(Clone, Debug, PartialEq)]
pub enum Journaled {
    Opened {
        conn: ConnId,
        addr: String,
    },
    OpenedHost {
        conn: ConnId,
    },
    Frame {
        conn: ConnId,
        text: String,
    },
    Closed {
        conn: ConnId,
    },
    /// Agent output, as the agent system applies it (external and in-tick agents alike).
    Agent(crate::agent::AgentOutput),
}

/// The inputs of the ticks since it was last taken (testing; off in production, where nothing is
/// recorded).
#[derive(bevy_ecs::prelude::Resource, Default, Debug)]
pub struct Journal {
    pub on: bool,
    pub entries: Vec<Journaled>,
}

impl Journal {
    pub fn record(&mut self, entry: impl FnOnce() -> Journaled) {
        if self.on {
            self.entries.push(entry());
        }
    }
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inbound::Opened { conn, addr, .. } => write!(f, "Opened({conn}, {addr})"),
            Inbound::OpenedHost { conn, .. } => write!(f, "OpenedHost({conn})"),
            Inbound::Frame { conn, text } => write!(f, "Frame({conn}, {} bytes)", text.len()),
            Inbound::Closed { conn } => write!(f, "Closed({conn})"),
            Inbound::Agent(o) => write!(f, "Agent({o:?})"),
            Inbound::SharesChanged => write!(f, "SharesChanged"),
        }
    }
}
