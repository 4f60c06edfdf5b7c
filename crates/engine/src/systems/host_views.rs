//! Host-only views the window needs beside the session events (docs/PROTOCOL.md §5.2): who waits
//! in the lobby (`list_lobby`; the `lobby` event announces only changes) and the newest rows of
//! the audit log (`fetch_audit`, read from the store: the engine keeps none in memory). Remotes
//! are refused `forbidden` at ingest, before this runs. With them the host's window reads
//! nothing behind the protocol's back.

use super::params::Archive;
use super::resources::{Incoming, Index, Staged};
use super::util::{reply_err, reply_ok};
use crate::components::{Participant, Presence};
use crate::protocol::*;
use bevy_ecs::prelude::*;

/// The rows `fetch_audit` returns without a `limit`.
pub const AUDIT_PAGE_DEFAULT: u32 = 200;

pub fn host_views(
    mut requests: MessageReader<Incoming>,
    index: Res<Index>,
    participants: Query<&Participant>,
    mut staged: ResMut<Staged>,
    mut archive: Archive,
) {
    for req in requests.read() {
        match &req.method {
            Method::ListLobby(_) => {
                let waiting = index
                    .participants
                    .values()
                    .filter_map(|&e| participants.get(e).ok())
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
                reply_ok(&mut staged, req.conn, &req.id, ListLobbyResult { waiting });
            }
            Method::FetchAudit(p) => {
                let limit = p.limit.unwrap_or(AUDIT_PAGE_DEFAULT).min(AUDIT_PAGE_MAX);
                match archive.audit_tail(limit as usize) {
                    Ok(entries) => reply_ok(&mut staged, req.conn, &req.id, FetchAuditResult { entries }),
                    Err(e) => {
                        tracing::error!("cannot read the audit log: {e}");
                        reply_err(
                            &mut staged,
                            req.conn,
                            &req.id,
                            ErrorCode::Internal,
                            format!("cannot read the audit log: {e}"),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}
