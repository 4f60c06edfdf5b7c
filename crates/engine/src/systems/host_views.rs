//! Host-only views the window needs beside the session events (docs/PROTOCOL.md §5.2): who waits
//! in the lobby (`list_lobby`; the `lobby` event announces only changes) and the newest rows of
//! the audit log (`fetch_audit`, read from the store: the engine keeps none in memory). Remotes
//! are refused `forbidden` at ingest, before this runs. With them the host's window reads
//! nothing behind the protocol's back.

use super::params::Archive;
use super::requests::{HostView, Req};
use super::resources::{Index, Staged};
use super::util::{reply_err, reply_ok};
use crate::components::{Participant, Presence};
use crate::protocol::*;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;

/// The rows `fetch_audit` returns without a `limit`.
pub const AUDIT_PAGE_DEFAULT: u32 = 200;

/// What the host's views read: who is waiting, and the stored audit log.
#[derive(SystemParam)]
pub struct HostViews<'w, 's> {
    index: Res<'w, Index>,
    participants: Query<'w, 's, &'static Participant>,
    staged: ResMut<'w, Staged>,
    archive: Archive<'w>,
}

pub fn host_views(mut requests: MessageReader<Req<HostView>>, mut views: HostViews) {
    for req in requests.read() {
        match &req.params {
            HostView::ListLobby => views.list_lobby(req),
            HostView::FetchAudit(p) => views.fetch_audit(req, p),
        }
    }
}

impl HostViews<'_, '_> {
    /// `list_lobby`: the remotes waiting for the host's decision, by participant id.
    fn list_lobby(&mut self, req: &Req<HostView>) {
        let waiting = self
            .index
            .participants
            .values()
            .filter_map(|&e| self.participants.get(e).ok())
            .filter(|p| p.admission == Admission::Pending && !matches!(p.presence, Presence::Gone))
            // Only remotes wait, and every remote came by a share.
            .filter_map(|p| {
                Some(WaitingInfo {
                    participant_id: p.id.clone(),
                    display_name: p.display_name.clone(),
                    share_id: p.share.clone()?,
                })
            })
            .collect();
        reply_ok(&mut self.staged, req.conn, &req.id, ListLobbyResult { waiting });
    }

    /// `fetch_audit`: the newest `limit` rows of the audit log, oldest first.
    fn fetch_audit(&mut self, req: &Req<HostView>, p: &FetchAuditParams) {
        let limit = p.limit.unwrap_or(AUDIT_PAGE_DEFAULT).min(AUDIT_PAGE_MAX);
        match self.archive.audit_tail(limit as usize) {
            Ok(entries) => reply_ok(&mut self.staged, req.conn, &req.id, FetchAuditResult { entries }),
            Err(e) => {
                tracing::error!("cannot read the audit log: {e}");
                let message = format!("cannot read the audit log: {e}");
                reply_err(&mut self.staged, req.conn, &req.id, ErrorCode::Internal, message);
            }
        }
    }
}
