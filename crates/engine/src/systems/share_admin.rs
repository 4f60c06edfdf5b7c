//! Host share management: mint, list, revoke, rotate. The token is returned once and only its
//! hash is kept; rotating replaces the hash (old token refused, live connections stay).

use super::params::*;
use super::requests::{Req, ShareCommand};
use super::resources::*;
use crate::components::{Participant, Presence, Share};
use crate::config::EngineConfig;
use crate::ids::ShareId;
use crate::persist::{AuditRow, ShareRow, StoreOp};
use crate::protocol::*;
use crate::token;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;

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

/// What managing shares reads and writes: the shares, the token RNG, and the id index and
/// counters for minting.
#[derive(SystemParam)]
pub struct ShareDesk<'w, 's> {
    env: TickEnv<'w>,
    rng: ResMut<'w, EngineRng>,
    registry: Registry<'w, 's>,
    shares: Query<'w, 's, &'static mut Share>,
    participants: Query<'w, 's, &'static Participant>,
    fx: Effects<'w>,
}

pub fn share_admin(mut requests: MessageReader<Req<ShareCommand>>, mut desk: ShareDesk) {
    for req in requests.read() {
        match &req.params {
            ShareCommand::MintShare(p) => desk.mint(req, p),
            ShareCommand::ListShares => desk.list(req),
            ShareCommand::RevokeShare(r) => desk.revoke(req, r),
            ShareCommand::RotateShare(r) => desk.rotate(req, r),
        }
    }
}

impl ShareDesk<'_, '_> {
    /// `mint_share`: a new share and its token (returned once; only its hash is kept).
    fn mint(&mut self, req: &Req<ShareCommand>, p: &MintShareParams) {
        let refuse = |fx: &mut Effects, code, message: String| fx.reply_err(req.conn, &req.id, code, message);
        if p.workspaces.is_empty() {
            return refuse(&mut self.fx, ErrorCode::InvalidParams, "a share needs at least one workspace".into());
        }
        if let Some(missing) = p.workspaces.iter().find(|w| !self.registry.index.workspaces.contains_key(*w)) {
            return refuse(&mut self.fx, ErrorCode::NotFound, format!("no workspace {missing}"));
        }
        if p.role == Role::Host {
            return refuse(&mut self.fx, ErrorCode::InvalidParams, "role must be participant or observer".into());
        }
        let now = self.env.clock.now;
        self.registry.counters.share += 1;
        let id = ShareId::nth(self.registry.counters.share);
        let tok = token::generate(&mut self.rng.0);
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
        self.fx.persist(StoreOp::PutShare(share.row()));
        self.audit("share_minted", &id, p.label.clone());
        let result =
            MintShareResult { share: info(&share, &self.participants), link: link(&self.env.config, &tok), token: tok };
        let e = self.registry.commands.spawn(share).id();
        self.registry.index.shares.insert(id, e);
        self.fx.reply_ok(req.conn, &req.id, result);
    }

    /// `list_shares`: every share, by id.
    fn list(&mut self, req: &Req<ShareCommand>) {
        let shares = &self.shares;
        let list: Vec<ShareInfo> = self
            .registry
            .index
            .shares
            .values()
            .filter_map(|&e| shares.get(e).ok())
            .map(|s| info(s, &self.participants))
            .collect();
        self.fx.reply_ok(req.conn, &req.id, ListSharesResult { shares: list });
    }

    /// `revoke_share`: the share's token stops working (its connections close: `close_dead_shares`).
    fn revoke(&mut self, req: &Req<ShareCommand>, r: &ShareRef) {
        let Some(e) = self.find(req, r) else { return };
        let mut s = self.shares.get_mut(e).expect("found");
        s.revoked = true;
        self.fx.persist(StoreOp::PutShare(s.row()));
        let id = s.id.clone();
        self.audit("share_revoked", &id, String::new());
        self.fx.reply_ok(req.conn, &req.id, Ack { ok: true });
    }

    /// `rotate_share`: a new token replaces the old one; live connections stay.
    fn rotate(&mut self, req: &Req<ShareCommand>, r: &ShareRef) {
        let Some(e) = self.find(req, r) else { return };
        let tok = token::generate(&mut self.rng.0);
        let mut s = self.shares.get_mut(e).expect("found");
        s.token_hash = token::hash(&tok);
        self.fx.persist(StoreOp::PutShare(s.row()));
        let id = s.id.clone();
        self.audit("share_rotated", &id, String::new());
        let s = self.shares.get(e).expect("found");
        let result =
            MintShareResult { share: info(s, &self.participants), link: link(&self.env.config, &tok), token: tok };
        self.fx.reply_ok(req.conn, &req.id, result);
    }

    /// The share `r` names; answers `not_found` when there is none.
    fn find(&mut self, req: &Req<ShareCommand>, r: &ShareRef) -> Option<Entity> {
        let found = self.registry.index.shares.get(&r.share_id).copied().filter(|&e| self.shares.contains(e));
        if found.is_none() {
            self.fx.reply_err(req.conn, &req.id, ErrorCode::NotFound, format!("no share {}", r.share_id));
        }
        found
    }

    /// Records a host action on a share in the audit log.
    fn audit(&mut self, action: &str, share: &ShareId, detail: String) {
        let at = self.env.clock.now;
        let target = share.to_string();
        self.fx.persist(StoreOp::Audit(AuditRow { at, actor: "host".into(), action: action.into(), target, detail }));
    }
}
