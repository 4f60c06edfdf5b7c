//! Components: the data of every domain entity (docs/RULES.md §1).
//!
//! One file per entity kind. Components hold domain ids, never `Entity` references, so the
//! world can be rebuilt from the store and iterated in id order.

mod connection;
mod participant;
mod session;
mod share;
mod vote;
mod workspace;

pub use connection::*;
pub use participant::*;
pub use session::*;
pub use share::*;
pub use vote::*;
pub use workspace::*;
