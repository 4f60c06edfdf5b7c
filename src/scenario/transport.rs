//! The in-memory transport: a [`MemorySink`] per connection records every frame the engine
//! delivers, stamped with the virtual tick and time of delivery.
//!
//! A sink can be made *slow* (it refuses frames, optionally after accepting a few more), which
//! is how scenarios exercise the engine's bounded outbox, coalescing and `resync_required`
//! without real sockets or real time.

use crate::engine::{Frame, FrameSink};
use crate::ids::ConnId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The runner's virtual clock, shared with the sinks so deliveries are stamped.
#[derive(Debug, Default)]
pub struct VirtualTime {
    tick: AtomicU64,
    now: AtomicU64,
}

impl VirtualTime {
    /// Sets the tick number and time of the tick about to run.
    pub fn set(&self, tick: u64, now: u64) {
        self.tick.store(tick, Ordering::SeqCst);
        self.now.store(now, Ordering::SeqCst);
    }

    /// The current (tick, time).
    pub fn get(&self) -> (u64, u64) {
        (self.tick.load(Ordering::SeqCst), self.now.load(Ordering::SeqCst))
    }
}

/// One frame handed to a connection, with when it arrived.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub tick: u64,
    pub time: u64,
    pub frame: Frame,
}

#[derive(Debug, Default)]
struct SinkState {
    delivered: Vec<Delivered>,
    /// `Some(n)`: a slow consumer that accepts `n` more frames, then refuses until released.
    budget: Option<usize>,
    /// Closed by the engine, with the reason.
    closed_by_host: Option<String>,
    /// The client side went away: frames are dropped (as on a dead socket).
    dropped: bool,
    /// Frames refused while slow (for reports).
    refused: u64,
}

/// A connection's in-memory sink.
#[derive(Debug)]
pub struct MemorySink {
    pub conn: ConnId,
    clock: Arc<VirtualTime>,
    state: Mutex<SinkState>,
}

impl MemorySink {
    pub fn new(conn: ConnId, clock: Arc<VirtualTime>) -> Arc<MemorySink> {
        Arc::new(MemorySink { conn, clock, state: Mutex::new(SinkState::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A poisoned lock only means a panic elsewhere; the recorded frames are still valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frames delivered from index `from` on.
    pub fn delivered_since(&self, from: usize) -> Vec<Delivered> {
        self.lock().delivered.get(from..).map(<[Delivered]>::to_vec).unwrap_or_default()
    }

    /// Makes the sink slow: accept `capacity` more frames, then refuse every frame.
    pub fn set_slow(&self, capacity: usize) {
        self.lock().budget = Some(capacity);
    }

    /// Accepts frames again.
    pub fn release(&self) {
        self.lock().budget = None;
    }

    /// The client went away: further frames are dropped.
    pub fn drop_client(&self) {
        self.lock().dropped = true;
    }

    /// Why the engine closed this connection, if it did.
    pub fn closed_by_host(&self) -> Option<String> {
        self.lock().closed_by_host.clone()
    }

    /// Frames refused while slow.
    pub fn refused(&self) -> u64 {
        self.lock().refused
    }
}

impl FrameSink for MemorySink {
    fn try_send(&self, frame: &Frame) -> bool {
        let (tick, time) = self.clock.get();
        let mut s = self.lock();
        if s.dropped || s.closed_by_host.is_some() {
            return true;
        }
        match s.budget {
            Some(0) => {
                s.refused += 1;
                return false;
            }
            Some(n) => s.budget = Some(n - 1),
            None => {}
        }
        s.delivered.push(Delivered { tick, time, frame: frame.clone() });
        true
    }

    fn close(&self, reason: &str) {
        let mut s = self.lock();
        if s.closed_by_host.is_none() {
            s.closed_by_host = Some(reason.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_sink_refuses_after_its_budget_until_released() {
        let clock = Arc::new(VirtualTime::default());
        let sink = MemorySink::new(ConnId(1), clock.clone());
        let f: Frame = Arc::from("x");
        sink.set_slow(1);
        assert!(sink.try_send(&f));
        assert!(!sink.try_send(&f));
        sink.release();
        clock.set(3, 30);
        assert!(sink.try_send(&f));
        let got = sink.delivered_since(0);
        assert_eq!(got.len(), 2);
        assert_eq!((got[1].tick, got[1].time), (3, 30));
        assert_eq!(sink.refused(), 1);
    }

    #[test]
    fn frames_after_close_are_not_recorded() {
        let sink = MemorySink::new(ConnId(1), Arc::new(VirtualTime::default()));
        sink.close("kicked");
        assert!(sink.try_send(&Arc::from("x")));
        assert!(sink.delivered_since(0).is_empty());
        assert_eq!(sink.closed_by_host().as_deref(), Some("kicked"));
    }
}
