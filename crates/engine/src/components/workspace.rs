//! Workspace: a directory the agent works in.

use crate::persist::WorkspaceRow;
use bevy_ecs::prelude::Component;

/// A workspace entity: its stored row, as it is ([`WorkspaceRow`] is the one definition of a
/// workspace's fields; a workspace has no runtime state). Systems read the fields through
/// `Deref` (`w.dir`), bevy's idiom for a newtype component.
#[derive(Component, Clone, Debug, PartialEq, Eq)]
pub struct Workspace(pub WorkspaceRow);

impl std::ops::Deref for Workspace {
    type Target = WorkspaceRow;
    fn deref(&self) -> &WorkspaceRow {
        &self.0
    }
}

impl std::ops::DerefMut for Workspace {
    fn deref_mut(&mut self) -> &mut WorkspaceRow {
        &mut self.0
    }
}

impl Workspace {
    /// The row to store.
    pub fn row(&self) -> WorkspaceRow {
        self.0.clone()
    }
}
