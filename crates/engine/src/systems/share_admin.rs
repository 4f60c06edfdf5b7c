//! Host share management: mint, list, revoke, rotate. The token is returned once and only its
//! hash is kept; rotating replaces the hash (old token refused, live connections stay).

use super::params::*;
use super::resources::*;
use super::util::{reply_err, reply_ok};
use crate::components::{Participant, Presence, Share};
use crate::config::EngineConfig;
use crate::ids::ShareId;
use crate::persist::{AuditRow, ShareRow, StoreOp};
use crate::protocol::*;
use crate::token;
use bevy_ecs::prelude::*;

fn info(s: &Share, participants: &Query<&Participant>) -> ShareInfo {
    let connections = participants
        .iter()
        .filter(|p| p.share.as_ref() == Some(&s.id))
        .map(|p| match p.presence {
            Presence::Connected(n) => n,
            _ => 0,
        })
        .sum();
    ShareInfo::new(s, connections)
}

fn link(config: &EngineConfig, token: &str) -> Option<String> {
    Some(format!("{}{}{}", config.link_prefix.as_ref()?, token, config.link_suffix.as_deref().unwrap_or("")))
}

pub fn share_admin(
    mut requests: MessageReader<Incoming>,
    env: TickEnv,
    mut rng: ResMut<EngineRng>,
    registry: Registry,
    mut shares: Query<&mut Share>,
    participants: Query<&Participant>,
    fx: Effects,
) {
    let TickEnv { clock, config } = env;
    let Registry { mut index, mut counters, mut commands } = registry;
    let Effects { mut staged, mut batch } = fx;
    let now = clock.now;
    for req in requests.read() {
        match &req.method {
            Method::MintShare(p) => {
                if p.workspaces.is_empty() {
                    reply_err(
                        &mut staged,
                        req.conn,
                        &req.id,
                        ErrorCode::InvalidParams,
                        "a share needs at least one workspace",
                    );
                    continue;
                }
                if let Some(missing) = p.workspaces.iter().find(|w| !index.workspaces.contains_key(*w)) {
                    reply_err(&mut staged, req.conn, &req.id, ErrorCode::NotFound, format!("no workspace {missing}"));
                    continue;
                }
                if p.role == Role::Host {
                    reply_err(
                        &mut staged,
                        req.conn,
                        &req.id,
                        ErrorCode::InvalidParams,
                        "role must be participant or observer",
                    );
                    continue;
                }
                counters.share += 1;
                let id = ShareId::nth(counters.share);
                let tok = token::generate(&mut rng.0);
                let share = Share(ShareRow {
                    id: id.clone(),
                    label: p.label.clone(),
                    token_hash: token::hash(&tok),
                    workspaces: p.workspaces.iter().cloned().collect(),
                    collaborative: p.collaborative,
                    consensus_required: p.consensus_required,
                    admission_required: p.admission_required,
                    role: p.role,
                    expires_at: p.expires_in_ms.map(|d| now + d),
                    max_uses: p.max_uses,
                    uses: 0,
                    revoked: false,
                    created_at: now,
                    vote_deadline_ms: p.vote_deadline_ms,
                });
                batch.push(StoreOp::PutShare(share.row()));
                batch.push(StoreOp::Audit(AuditRow {
                    at: now,
                    actor: "host".into(),
                    action: "share_minted".into(),
                    target: id.to_string(),
                    detail: p.label.clone(),
                }));
                let result =
                    MintShareResult { share: info(&share, &participants), link: link(&config, &tok), token: tok };
                let e = commands.spawn(share).id();
                index.shares.insert(id, e);
                reply_ok(&mut staged, req.conn, &req.id, result);
            }
            Method::ListShares(_) => {
                let list: Vec<ShareInfo> =
                    index.shares.values().filter_map(|&e| shares.get(e).ok()).map(|s| info(s, &participants)).collect();
                reply_ok(&mut staged, req.conn, &req.id, ListSharesResult { shares: list });
            }
            Method::RevokeShare(r) | Method::RotateShare(r) => {
                let Some(mut s) = index.shares.get(&r.share_id).and_then(|&e| shares.get_mut(e).ok()) else {
                    reply_err(&mut staged, req.conn, &req.id, ErrorCode::NotFound, format!("no share {}", r.share_id));
                    continue;
                };
                if matches!(req.method, Method::RevokeShare(_)) {
                    s.revoked = true;
                    batch.push(StoreOp::PutShare(s.row()));
                    batch.push(StoreOp::Audit(AuditRow {
                        at: now,
                        actor: "host".into(),
                        action: "share_revoked".into(),
                        target: s.id.to_string(),
                        detail: String::new(),
                    }));
                    reply_ok(&mut staged, req.conn, &req.id, Ack { ok: true });
                } else {
                    let tok = token::generate(&mut rng.0);
                    s.token_hash = token::hash(&tok);
                    batch.push(StoreOp::PutShare(s.row()));
                    batch.push(StoreOp::Audit(AuditRow {
                        at: now,
                        actor: "host".into(),
                        action: "share_rotated".into(),
                        target: s.id.to_string(),
                        detail: String::new(),
                    }));
                    let result =
                        MintShareResult { share: info(&s, &participants), link: link(&config, &tok), token: tok };
                    reply_ok(&mut staged, req.conn, &req.id, result);
                }
            }
            _ => {}
        }
    }
}
