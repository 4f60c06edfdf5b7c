//! The tick's phases and the installer contract, shared by the engine and its systems.

use bevy_ecs::prelude::*;

/// The tick's phases, in docs/RULES.md §7.1 order. Systems only say `.in_set(TickSet::X)`.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TickSet {
    Ingest,
    Access,
    Presence,
    Moderation,
    Turn,
    Agent,
    Votes,
    Persist,
    Broadcast,
    Check,
}

/// Registers one concern's resources, messages and systems (our stand-in for bevy plugins).
pub trait Installer {
    fn install(&self, world: &mut World, schedule: &mut Schedule);
}
