//! Workspace: a directory the agent works in.

use crate::ids::WorkspaceId;
use crate::persist::{AgentSpec, WorkspaceRow};
use bevy_ecs::prelude::Component;

#[derive(Component, Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub dir: String,
    pub agent: AgentSpec,
}

impl Workspace {
    pub fn row(&self) -> WorkspaceRow {
        WorkspaceRow { id: self.id.clone(), name: self.name.clone(), dir: self.dir.clone(), agent: self.agent.clone() }
    }

    pub fn from_row(r: WorkspaceRow) -> Self {
        Self { id: r.id, name: r.name, dir: r.dir, agent: r.agent }
    }
}
