//! Fault injection: a store whose commits fail while a switch is on, as on a full disk or a
//! database gone read-only. Reads still work. Used by the storage-fault tests and the scenario
//! runner's `storage_fault` step (an in-process flag) and by `serve --inject-storage-faults FILE`
//! (the switch is on while FILE exists), which `roundtable bench soak --storage-faults` drives
//! from outside the host.
//!
//! With the in-process flag the health check fails too, so the engine notices the fault in the
//! first tick it is on, whether or not that tick writes anything: the scenario runner and its
//! reference model then know exactly when a fault starts (and the engine's idle check and its
//! retry by health check are exercised). The file switch fails only commits, as a full disk does.

use crate::ids::{SessionId, VoteId};
use crate::persist::{
    AuditRow, BallotRow, MessageRow, Restored, SessionTails, ShareRow, Store, StoreError, StoreOp, WorkspaceRow,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What turns the faults on.
enum Switch {
    /// Set and cleared by the test that holds the other end.
    Flag(Arc<AtomicBool>),
    /// On while this file exists.
    File(PathBuf),
}

/// A store wrapper whose commits fail while its switch is on.
pub struct FaultyStore {
    inner: Box<dyn Store>,
    switch: Switch,
}

impl FaultyStore {
    /// Wraps `inner`; returns the store and its switch (initially off).
    pub fn new(inner: Box<dyn Store>) -> (FaultyStore, Arc<AtomicBool>) {
        let failing = Arc::new(AtomicBool::new(false));
        (FaultyStore { inner, switch: Switch::Flag(failing.clone()) }, failing)
    }

    /// Wraps `inner`; commits fail while `file` exists.
    pub fn while_file_exists(inner: Box<dyn Store>, file: PathBuf) -> FaultyStore {
        FaultyStore { inner, switch: Switch::File(file) }
    }

    /// Whether the switch is on.
    fn on(&self) -> bool {
        match &self.switch {
            Switch::Flag(flag) => flag.load(Ordering::SeqCst),
            Switch::File(file) => file.exists(),
        }
    }

    fn injected(&self) -> Result<(), StoreError> {
        if self.on() {
            return Err(StoreError::Db("database or disk is full (injected)".into()));
        }
        Ok(())
    }
}

impl Store for FaultyStore {
    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.injected()?;
        self.inner.commit(ops)
    }

    fn load(&mut self) -> Result<Restored, StoreError> {
        self.inner.load()
    }

    fn load_without_tails(&mut self) -> Result<Restored, StoreError> {
        self.inner.load_without_tails()
    }

    fn load_tails(&mut self, session: &SessionId) -> Result<SessionTails, StoreError> {
        self.inner.load_tails(session)
    }

    fn check_health(&mut self) -> Result<(), StoreError> {
        if matches!(self.switch, Switch::Flag(_)) {
            self.injected()?;
        }
        self.inner.check_health()
    }

    fn stop_cleanly(&mut self) {
        self.inner.stop_cleanly()
    }

    fn shares_changed_externally(&mut self) -> Result<Option<Vec<ShareRow>>, StoreError> {
        self.inner.shares_changed_externally()
    }

    fn workspaces(&mut self) -> Result<Vec<WorkspaceRow>, StoreError> {
        self.inner.workspaces()
    }

    fn messages_before(
        &mut self,
        session: &SessionId,
        before_seq: u64,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, bool), StoreError> {
        self.inner.messages_before(session, before_seq, limit)
    }

    fn message_by_client_id(
        &mut self,
        session: &SessionId,
        author_id: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageRow>, StoreError> {
        self.inner.message_by_client_id(session, author_id, client_msg_id)
    }

    fn audit_tail(&mut self, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        self.inner.audit_tail(limit)
    }

    fn audit_log(&mut self) -> Result<Vec<AuditRow>, StoreError> {
        self.inner.audit_log()
    }

    fn ballots_of(&mut self, vote: &VoteId) -> Result<Vec<BallotRow>, StoreError> {
        self.inner.ballots_of(vote)
    }
}
