//! Hosts found on the LAN by mDNS, as `join --nearby` and the remote window both use them:
//! looking, a host as one line, and the fallback decision — at which addresses of nearby hosts a
//! link may be tried when its own addresses do not answer.
//!
//! Discovery only finds addresses. The link's token is still what lets you in and its pinned
//! certificate fingerprint what proves the host: a fallback address is dialled with the same link
//! (token and fingerprint), so another host there is refused by TLS as ever.

use crate::net::client::{Client, Events};
use crate::net::discovery::NearbyHost;
use crate::net::link::Link;
use std::net::SocketAddr;
use std::time::Duration;

/// Looks for hosts on the LAN for `window` (a blocking mDNS browse, off the runtime's workers).
pub async fn browse(window: Duration) -> anyhow::Result<Vec<NearbyHost>> {
    tokio::task::spawn_blocking(move || crate::net::discovery::browse(window))
        .await
        .map_err(|e| anyhow::anyhow!("the LAN search stopped: {e}"))?
        .map_err(|e| anyhow::anyhow!("cannot look for hosts on the LAN: {e}"))
}

/// One nearby host as a line: `NAME — roundtable VERSION — ADDRESSES — certificate sha256=PREFIX…`.
pub fn line(host: &NearbyHost) -> String {
    let addresses: Vec<String> = host.addresses.iter().map(ToString::to_string).collect();
    let version =
        if host.version.is_empty() { "version unknown".to_string() } else { format!("roundtable {}", host.version) };
    let fingerprint = if host.fingerprint_prefix.is_empty() {
        "no certificate fingerprint".to_string()
    } else {
        format!("certificate sha256={}…", host.fingerprint_prefix)
    };
    let addresses = if addresses.is_empty() { "no IPv4 address".to_string() } else { addresses.join(", ") };
    format!("{} — {version} — {addresses} — {fingerprint}", host.name)
}

/// Whether `host` is the host of `link`: it advertises the prefix of the link's pinned
/// certificate fingerprint (an `--insecure` link pins none, so no host is its host).
pub fn is_host_of(link: &Link, host: &NearbyHost) -> bool {
    link.fingerprint.as_deref().is_some_and(|fp| host.matches_fingerprint(fp))
}

/// The fallback decision: where else `link`'s host may be reached — the addresses of the nearby
/// hosts advertising the link's certificate fingerprint prefix, less the addresses the link names
/// itself (those were tried already), in the order found.
pub fn fallback_addresses(link: &Link, hosts: &[NearbyHost]) -> Vec<SocketAddr> {
    let own: Vec<(String, u16)> = link.addresses().map(|l| (l.host, l.port)).collect();
    let mut out: Vec<SocketAddr> = Vec::new();
    for addr in hosts.iter().filter(|h| is_host_of(link, h)).flat_map(|h| h.addresses.iter().copied()) {
        if !own.contains(&(addr.ip().to_string(), addr.port())) && !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// `link` at one address: the same token and fingerprint, no other addresses.
pub fn link_at(link: &Link, addr: SocketAddr) -> Link {
    Link { host: addr.ip().to_string(), port: addr.port(), also: Vec::new(), ..link.clone() }
}

/// Dials `link` at its [`fallback_addresses`] among `hosts` (except those in `tried`), one after
/// the other; the first that answers and proves the pinned certificate is kept. Returns the link
/// at that address (for later reconnects) and the connection.
pub async fn connect_fallback(
    link: &Link,
    hosts: &[NearbyHost],
    tried: &[SocketAddr],
) -> Option<(Link, Client, Events)> {
    for addr in fallback_addresses(link, hosts).into_iter().filter(|a| !tried.contains(a)) {
        let there = link_at(link, addr);
        match Client::connect(&there).await {
            Ok((client, events)) => return Some((there, client, events)),
            Err(e) => tracing::debug!("nearby fallback {addr}: {e}"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, fp: &str, addresses: &[&str]) -> NearbyHost {
        NearbyHost {
            instance: name.into(),
            name: name.into(),
            version: "0.1.0".into(),
            fingerprint_prefix: fp.into(),
            addresses: addresses.iter().map(|a| a.parse().expect("an address")).collect(),
        }
    }

    #[test]
    fn a_link_falls_back_only_to_other_addresses_of_nearby_hosts_with_its_certificate() {
        let fingerprint = format!("0123456789abcdef{}", "0".repeat(48));
        let link = Link::parse(&format!(
            "roundtable://127.0.0.1:7447/tok?addr=10.0.0.5:7447#sha256={}",
            fingerprint.to_ascii_uppercase()
        ))
        .expect("a link");
        let hosts = [
            host("ann", "0123456789abcdef", &["192.168.1.20:7447", "10.0.0.5:7447", "192.168.1.20:7447"]),
            host("impostor", "0123456789abcdee", &["192.168.1.99:7447"]),
            host("short", "0123", &["192.168.1.98:7447"]),
            host("ann-too", "0123456789abcdef", &["127.0.0.1:7448"]),
        ];
        assert!(is_host_of(&link, &hosts[0]) && !is_host_of(&link, &hosts[1]) && !is_host_of(&link, &hosts[2]));
        let addrs: Vec<String> = fallback_addresses(&link, &hosts).iter().map(ToString::to_string).collect();
        // Not the link's own addresses (tried already), each once; another port is another address.
        assert_eq!(addrs, ["192.168.1.20:7447", "127.0.0.1:7448"]);
        // The fallback link keeps the token and the pinned certificate, and names one address.
        let there = link_at(&link, "192.168.1.20:7447".parse().expect("an address"));
        assert_eq!(there.to_string(), format!("roundtable://192.168.1.20:7447/tok#sha256={fingerprint}"));
        // An --insecure link pins no certificate: no nearby host is its host.
        let insecure = Link::parse("roundtable://127.0.0.1:7447/tok#insecure").expect("a link");
        assert!(fallback_addresses(&insecure, &hosts).is_empty());
        assert!(fallback_addresses(&link, &[]).is_empty());
    }
}
