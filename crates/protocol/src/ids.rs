//! Domain identifiers.
//!
//! Every entity in the world carries a domain id. Ids are what clients, the database and
//! transcripts see; `Entity` values never leave the engine. Ids order by (prefix, number) so
//! `s2` sorts before `s10` wherever we iterate in id order.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The prefix used for ids minted by the engine (`s`, `p`, ...).
            pub const PREFIX: &'static str = $prefix;

            /// Builds the `n`-th id of this kind, e.g. `s3`.
            pub fn nth(n: u64) -> Self {
                Self(format!("{}{}", $prefix, n))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The numeric suffix when the id was minted by the engine.
            pub fn number(&self) -> Option<u64> {
                self.0.strip_prefix($prefix).and_then(|n| n.parse().ok())
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> Ordering {
                natural_cmp(&self.0, &other.0)
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }
    };
}

string_id!(
    /// A registered workspace (`w1`).
    WorkspaceId, "w"
);
string_id!(
    /// An agent session inside a workspace (`s1`).
    SessionId, "s"
);
string_id!(
    /// A share link (`sh1`).
    ShareId, "sh"
);
string_id!(
    /// A participant; the host is always `host` (`p1` for remotes).
    ParticipantId, "p"
);
string_id!(
    /// A pending or resolved vote (`v1`).
    VoteId, "v"
);
string_id!(
    /// A chat or agent message (`m1`).
    MessageId, "m"
);

impl ParticipantId {
    /// The host's fixed participant id.
    pub fn host() -> Self {
        Self("host".to_string())
    }

    /// Whether this is the host.
    pub fn is_host(&self) -> bool {
        self.0 == "host"
    }
}

/// A transport connection. Assigned by the transport, unique for the life of the process.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Compares "prefix + number" strings numerically on the number, bytewise otherwise.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn split(s: &str) -> (&str, Option<u64>) {
        let idx = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
        let (p, n) = s.split_at(idx);
        (p, n.parse().ok())
    }
    let (pa, na) = split(a);
    let (pb, nb) = split(b);
    match (na, nb) {
        (Some(x), Some(y)) if pa == pb => x.cmp(&y).then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_numerically_within_a_prefix() {
        let mut v = vec![SessionId::nth(10), SessionId::nth(2), SessionId::nth(1)];
        v.sort();
        assert_eq!(v, vec![SessionId::nth(1), SessionId::nth(2), SessionId::nth(10)]);
        assert!(ParticipantId::host() < ParticipantId::nth(1) || ParticipantId::host() > ParticipantId::nth(1));
    }

    #[test]
    fn ids_serialise_as_plain_strings() {
        assert_eq!(serde_json::to_string(&VoteId::nth(7)).unwrap(), "\"v7\"");
    }
}
