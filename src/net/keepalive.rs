//! Keepalive: both ends of a connection send a WebSocket ping every [`Keepalive::every`] and
//! treat a peer they have heard nothing from (no frame, no pong) for [`Keepalive::silent_after`]
//! as gone. A silent peer — a laptop that lost its network, a stalled socket — is then noticed
//! within a minute instead of never: the host starts the participant's grace period (and
//! releases a turn they hold once it ends), and `join` reconnects.

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

/// Tracks when the peer was last heard from and when to ping next.
#[derive(Debug)]
pub struct Watch {
    keepalive: Keepalive,
    heard: tokio::time::Instant,
    ticker: tokio::time::Interval,
}

/// What to do when the ticker fires.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Send a ping.
    Ping,
    /// The peer has been silent too long: close the connection.
    Silent,
}

impl Watch {
    pub fn new(keepalive: Keepalive) -> Watch {
        let start = tokio::time::Instant::now() + keepalive.every;
        let mut ticker = tokio::time::interval_at(start, keepalive.every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watch { keepalive, heard: tokio::time::Instant::now(), ticker }
    }

    /// The peer sent something (any frame, a pong included).
    pub fn heard(&mut self) {
        self.heard = tokio::time::Instant::now();
    }

    /// Waits for the next ping time and says what to do.
    pub async fn due(&mut self) -> Due {
        self.ticker.tick().await;
        if self.heard.elapsed() >= self.keepalive.silent_after {
            Due::Silent
        } else {
            Due::Ping
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

    #[tokio::test(start_paused = true)]
    async fn a_peer_is_pinged_on_schedule_and_declared_silent_only_after_the_limit() {
        let mut w = Watch::new(Keepalive { every: Duration::from_secs(15), silent_after: Duration::from_secs(45) });
        assert_eq!(w.due().await, Due::Ping); // 15 s
        w.heard(); // a pong at 15 s
        assert_eq!(w.due().await, Due::Ping); // 30 s
        assert_eq!(w.due().await, Due::Ping); // 45 s: heard 30 s ago
        assert_eq!(w.due().await, Due::Silent); // 60 s: heard 45 s ago, the limit
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_never_heard_from_is_silent_after_the_limit() {
        let mut w = Watch::new(Keepalive { every: Duration::from_secs(10), silent_after: Duration::from_secs(25) });
        assert_eq!(w.due().await, Due::Ping); // 10 s
        assert_eq!(w.due().await, Due::Ping); // 20 s
        assert_eq!(w.due().await, Due::Silent); // 30 s ≥ 25 s
    }
}
