//! Network transport: the TLS WebSocket server, the client connector, pairing links,
//! certificates and known hosts. Transport only — no command line, no printing, no windows
//! (those live in `crate::app` and `crate::ui`).
//!
//! - [`server`]: accept loop, TLS, WebSocket, and the bounded per-connection queues that feed
//!   the engine's [`crate::engine::Inbound`] channel.
//! - [`client`]: connect from a link (pinned TLS), request/response matching, events.
//! - [`discovery`]: this machine's addresses, and finding hosts on the LAN by mDNS.
//! - [`relay`]: the same WebSocket over an iroh QUIC stream, through NAT by hole punching or a relay.
//! - [`keepalive`]: pings both ways; a silent peer is gone.
//! - [`known_hosts`]: remembered host fingerprints.
//! - [`tls`], [`link`]: the host's certificate and the share link format.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use roundtable_engine as engine;
use roundtable_protocol::{ids, protocol, token};

pub mod client;
pub mod discovery;
pub mod gather;
pub mod keepalive;
pub mod known_hosts;
pub mod link;
pub mod relay;
pub mod server;
pub mod tls;
