//! The clock of the agent workers: the hang watchdog, the cancel grace and the restart backoff
//! are measured on it. Hosts use the real one ([`Clock::Real`]); tests use a [`ManualClock`]
//! and move it on with [`ManualClock::advance`], so they never wait for a watchdog in real time
//! and a slow machine cannot make one fire.

use crossbeam_channel::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a worker reads the time and gets its timers from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// `Instant::now()` and `crossbeam_channel::at`.
    #[default]
    Real,
    /// Time that moves only when a test says so.
    Manual(ManualClock),
}

impl Clock {
    /// The current time.
    pub fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            Clock::Manual(clock) => clock.now(),
        }
    }

    /// A channel that delivers one message once `at` has come (at once if it has).
    pub fn at(&self, at: Instant) -> Receiver<Instant> {
        match self {
            Clock::Real => crossbeam_channel::at(at),
            Clock::Manual(clock) => clock.at(at),
        }
    }
}

/// A clock for tests: it starts at the real time it was made and then stands still until
/// [`ManualClock::advance`].
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<Manual>>);

#[derive(Debug)]
struct Manual {
    now: Instant,
    /// Timers not yet due: when, and the (rendezvous) channel to fire.
    timers: Vec<(Instant, Sender<Instant>)>,
}

/// How long [`ManualClock::advance`] waits for a worker to take a timer that came due.
const HAND_OVER: Duration = Duration::from_secs(10);

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock(Arc::new(Mutex::new(Manual { now: Instant::now(), timers: Vec::new() })))
    }
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).now
    }

    /// Moves the clock on by `by` and fires the timers that came due. Returns once each of them
    /// was taken by the worker waiting on it (or that worker stopped waiting on it), so what a
    /// test does next comes after the worker saw its timer.
    pub fn advance(&self, by: Duration) {
        let (now, due) = {
            let mut manual = self.0.lock().unwrap_or_else(|e| e.into_inner());
            manual.now += by;
            let now = manual.now;
            let (due, later) = std::mem::take(&mut manual.timers).into_iter().partition(|(at, _)| *at <= now);
            manual.timers = later;
            (now, due)
        };
        for (_, timer) in due {
            // A worker that moved on dropped its receiver: the send fails at once.
            let _ = timer.send_timeout(now, HAND_OVER);
        }
    }

    fn at(&self, at: Instant) -> Receiver<Instant> {
        let mut manual = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if at <= manual.now {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let _ = tx.send(manual.now);
            return rx;
        }
        // Zero capacity: `advance` hands the message over to the worker itself.
        let (tx, rx) = crossbeam_channel::bounded(0);
        manual.timers.push((at, tx));
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_timer_fires_only_once_the_clock_is_advanced_to_it() {
        let clock = ManualClock::new();
        let start = clock.now();
        let timer = clock.at(start + Duration::from_secs(5));
        clock.advance(Duration::from_secs(4));
        assert!(timer.try_recv().is_err(), "not due yet");
        let waiter = std::thread::spawn(move || timer.recv().unwrap());
        clock.advance(Duration::from_secs(1)); // returns once the waiter took it
        assert_eq!(waiter.join().unwrap(), start + Duration::from_secs(5));
        assert!(clock.at(start).try_recv().is_ok(), "a time already passed fires at once");
    }
}
