//! Engine time: where the driver's clocks meet the engine.
//!
//! The engine never reads a clock; its driver passes the time to every tick. That time must
//! only move forward and at the pace of real time, whatever happens to the wall clock: grace
//! periods, vote deadlines and rate limits are measured with it. So it is read from the wall
//! clock once, when an engine starts (it is also the time people read on messages), and from
//! then on advanced by a monotonic clock, which no one can step. A step of the wall clock while
//! the host runs changes nothing; one between two runs moves the next run's start — but never
//! before the latest time the stored world already holds ([`crate::persist::Restored::latest_time`]),
//! so history stays in order and nothing restored lies in the future for long.
//!
//! The same arithmetic drives the host (`SystemTime` and `Instant`) and the scenario runner
//! (virtual time, with its `wall_step` fault), so the simulator exercises the host's own code.

use std::time::Duration;

/// The mapping from a monotonic reading to engine time, fixed when an engine starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineClock {
    anchor_ms: u64,
    started: Duration,
}

impl EngineClock {
    /// An engine starting now: the wall clock reads `wall_ms`, the monotonic clock `monotonic`,
    /// and the restored world's latest time is `floor_ms` (engine time starts at the later of the
    /// two).
    pub fn start(wall_ms: u64, floor_ms: u64, monotonic: Duration) -> EngineClock {
        if wall_ms < floor_ms {
            tracing::warn!(
                behind_ms = floor_ms - wall_ms,
                "the wall clock is behind the latest stored time; engine time continues from the stored time"
            );
        }
        EngineClock { anchor_ms: wall_ms.max(floor_ms), started: monotonic }
    }

    /// Engine time in ms when the monotonic clock reads `monotonic`.
    pub fn now_ms(&self, monotonic: Duration) -> u64 {
        let elapsed = monotonic.saturating_sub(self.started);
        self.anchor_ms.saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Issue 21 (item 8): with the host's wall clock moved back an hour, a grace period used to
    /// wait out that hour (the engine took `max(clock, wall)`); moved forward, everyone expired at
    /// once. Engine time follows the monotonic clock from the start.
    #[test]
    fn engine_time_ignores_wall_clock_steps_while_running() {
        let clock = EngineClock::start(1_700_000_000_000, 0, ms(5_000));
        assert_eq!(clock.now_ms(ms(5_000)), 1_700_000_000_000, "starts at the wall clock's reading");
        assert_eq!(clock.now_ms(ms(6_500)), 1_700_000_001_500, "then advances with the monotonic clock");
        // The wall clock is not read again: stepping it (either way) changes nothing.
        assert_eq!(clock.now_ms(ms(36_500)), 1_700_000_031_500);
    }

    /// A wall clock stepped back between two runs: the new run continues from the stored world's
    /// latest time (history stays in order) and still advances at once (no frozen grace).
    #[test]
    fn a_run_started_behind_the_stored_time_continues_from_it() {
        let stored = 1_700_000_000_000;
        let clock = EngineClock::start(stored - 3_600_000, stored, ms(0));
        assert_eq!(clock.now_ms(ms(0)), stored);
        assert_eq!(clock.now_ms(ms(30_000)), stored + 30_000, "a 30 s grace period ends 30 s later");
        let ahead = EngineClock::start(stored + 3_600_000, stored, ms(0));
        assert_eq!(ahead.now_ms(ms(0)), stored + 3_600_000, "a later wall clock is taken as it is");
    }

    #[test]
    fn a_monotonic_reading_from_before_the_start_counts_as_the_start() {
        let clock = EngineClock::start(1_000, 0, ms(500));
        assert_eq!(clock.now_ms(ms(100)), 1_000);
    }
}
