//! Keepalive: both ends of a connection send a WebSocket ping every [`Keepalive::every`] and
//! treat a peer they have heard nothing from (no frame, no pong) for [`Keepalive::silent_after`]
//! as gone. A silent peer — a laptop that lost its network, a stalled socket — is then noticed
//! within a minute instead of never: the host starts the participant's grace period (and
//! releases a turn they hold once it ends), and `join` reconnects.
//!
//! Pings follow a fixed period, but silence does not wait for the next ping: its deadline is
//! [`Keepalive::silent_after`] after the last frame heard, so a peer is closed at the limit, not
//! up to one ping period later.

use std::time::Duration;

/// Ping period and silence limit of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// How often to ping the peer.
    pub every: Duration,
    /// How long the peer may stay silent (no frame, no pong) before the connection is closed.
    pub silent_after: Duration,
}

impl Default for Keepalive {
    /// A ping every 15 s; a peer silent for 45 s (three missed pongs) is gone.
    fn default() -> Self {
        Keepalive { every: Duration::from_secs(15), silent_after: Duration::from_secs(45) }
    }
}

/// Tracks when the peer was last heard from and when to ping next. Times are tokio's, so tests
/// can pause and advance the clock.
#[derive(Debug)]
pub struct Watch {
    keepalive: Keepalive,
    heard: tokio::time::Instant,
    ticker: tokio::time::Interval,
    /// Fires at the silence deadline as it was when last set. Hearing from the peer only moves
    /// `heard`; the timer catches up when it fires, so a busy connection costs no timer work
    /// per frame.
    silence: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// What to do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Send a ping.
    Ping,
    /// The peer has been silent too long: close the connection.
    Silent,
}

impl Watch {
    pub fn new(keepalive: Keepalive) -> Watch {
        let now = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval_at(now + keepalive.every, keepalive.every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silence = Box::pin(tokio::time::sleep_until(now + keepalive.silent_after));
        Watch { keepalive, heard: now, ticker, silence }
    }

    /// The peer sent something (any frame, a pong included).
    pub fn heard(&mut self) {
        self.heard = tokio::time::Instant::now();
    }

    /// Waits for whichever comes first: the next ping time, or the silence limit counted from
    /// the last frame heard (which wins a tie) — not the next ping time after it. Cancel-safe,
    /// for a `select!` loop.
    pub async fn due(&mut self) -> Due {
        loop {
            tokio::select! {
                biased;
                _ = self.silence.as_mut() => {
                    let silent_at = self.heard + self.keepalive.silent_after;
                    if tokio::time::Instant::now() >= silent_at {
                        return Due::Silent;
                    }
                    // Heard from since the timer was set: wait for the new deadline.
                    self.silence.as_mut().reset(silent_at);
                }
                _ = self.ticker.tick() => return Due::Ping,
            }
        }
    }

    /// The silence limit, for messages.
    pub fn silent_after(&self) -> Duration {
        self.keepalive.silent_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, Instant};

    fn every_15_silent_after_45() -> Watch {
        Watch::new(Keepalive { every: Duration::from_secs(15), silent_after: Duration::from_secs(45) })
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_is_pinged_on_schedule_and_declared_silent_only_after_the_limit() {
        let start = Instant::now();
        let mut w = every_15_silent_after_45();
        assert_eq!(w.due().await, Due::Ping); // 15 s
        w.heard(); // a pong at 15 s
        assert_eq!(w.due().await, Due::Ping); // 30 s
        assert_eq!(w.due().await, Due::Ping); // 45 s: heard 30 s ago
        assert_eq!(w.due().await, Due::Silent); // 60 s: heard 45 s ago, the limit
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_never_heard_from_is_silent_at_the_limit() {
        let start = Instant::now();
        let mut w = Watch::new(Keepalive { every: Duration::from_secs(10), silent_after: Duration::from_secs(25) });
        assert_eq!(w.due().await, Due::Ping); // 10 s
        assert_eq!(w.due().await, Due::Ping); // 20 s
        assert_eq!(w.due().await, Due::Silent);
        assert_eq!(start.elapsed(), Duration::from_secs(25), "at the limit, not at the 30 s ping");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_counted_from_the_last_frame_not_from_the_ping_ticks() {
        let start = Instant::now();
        let mut w = every_15_silent_after_45();
        assert_eq!(w.due().await, Due::Ping); // 15 s
        advance(Duration::from_secs(5)).await;
        w.heard(); // a frame at 20 s, between two pings
        for at in [30, 45, 60] {
            assert_eq!(w.due().await, Due::Ping);
            assert_eq!(start.elapsed(), Duration::from_secs(at));
        }
        assert_eq!(w.due().await, Due::Silent);
        assert_eq!(start.elapsed(), Duration::from_secs(65), "20 s + 45 s, not the 75 s ping");
    }
}
