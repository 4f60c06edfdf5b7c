//! Wire types: the JSON text frames exchanged over WebSocket (and the in-memory transport).
//!
//! Three shapes travel on the wire (docs/PROTOCOL.md shows every one with an example):
//! - requests `{"id": ID, "method": "...", "params": {...}}` from client to host,
//! - responses `{"id": ID, "result": {...}}` or `{"id": ID, "error": {"code": "...", "message": "..."}}`,
//! - events `{"event": "...", "session_id": "s1"?, "seq": 7?, "payload": {...}}` from host to client.
//!
//! Parsing is two-step so that every bad frame gets a precise, typed error: first the envelope
//! (`RawRequest`), then the params for the named method (`Request::parse`).

mod bounds;
mod error;
mod event;
mod request;

pub use bounds::*;
pub use error::{ErrorCode, ProtocolError};
pub use event::*;
pub use request::*;

/// Largest accepted frame, in bytes (docs/RULES.md §6.6).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Protocol version reported by `authenticate` and `ping`.
pub const PROTOCOL_VERSION: u32 = 1;
