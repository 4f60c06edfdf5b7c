//! Finding hosts on the LAN: the machine's addresses, mDNS advertisement and browsing.
//!
//! A host that listens on a non-loopback address advertises [`SERVICE_TYPE`] by mDNS (the
//! `mdns-sd` crate, which runs its own thread and needs no async runtime). The TXT record carries
//! only what helps a person pick a host and a client match a link to it: [`TXT_NAME`],
//! [`TXT_VERSION`] and [`TXT_FINGERPRINT`] (the first [`FINGERPRINT_PREFIX_LEN`] hex characters of
//! the certificate fingerprint). Never the token: discovery only finds an address. A token is what
//! authorises, and the full fingerprint pinned in a link is what proves the host.
//!
//! [`Advert`] has no field that could hold a token, so [`txt_properties`] cannot leak one.
//! Nothing here prints (the crate denies it); the application layer words the results.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The DNS-SD service type roundtable hosts advertise.
pub const SERVICE_TYPE: &str = "_roundtable._tcp.local.";
/// TXT key: the host's display name.
pub const TXT_NAME: &str = "name";
/// TXT key: the host's roundtable version.
pub const TXT_VERSION: &str = "version";
/// TXT key: the first [`FINGERPRINT_PREFIX_LEN`] hex characters of the certificate fingerprint.
pub const TXT_FINGERPRINT: &str = "fp";
/// How much of the fingerprint is advertised: enough to match a link to a host, and to tell
/// hosts apart in a list; the link still pins the whole fingerprint.
pub const FINGERPRINT_PREFIX_LEN: usize = 16;

/// Why discovery could not run.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot read this machine's network interfaces: {0}")]
    Interfaces(#[source] std::io::Error),
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
    #[error("mDNS stopped")]
    Stopped,
}

/// One IPv4 address of an interface that is up.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InterfaceAddr {
    /// The interface's name (`eth0`, `wlan0`, `lo`).
    pub interface: String,
    pub ip: Ipv4Addr,
}

impl InterfaceAddr {
    /// Loopback: reachable from this machine only.
    pub fn is_loopback(&self) -> bool {
        self.ip.is_loopback()
    }
}

/// Every IPv4 address of this machine's interfaces that are up (loopback included), sorted by
/// [`lan_rank`] so the most likely LAN address comes first and loopback last.
pub fn ipv4_addresses() -> Result<Vec<InterfaceAddr>, DiscoveryError> {
    let mut out: Vec<InterfaceAddr> = if_addrs::get_if_addrs()
        .map_err(DiscoveryError::Interfaces)?
        .into_iter()
        .filter(|i| i.is_oper_up())
        .filter_map(|i| match i.ip() {
            IpAddr::V4(ip) => Some(InterfaceAddr { interface: i.name, ip }),
            IpAddr::V6(_) => None,
        })
        .collect();
    sort_for_lan(&mut out);
    out.dedup();
    Ok(out)
}

/// Sorts addresses best LAN address first (see [`lan_rank`]; among equals, real interfaces before
/// [`is_virtual_interface`] ones), then by address and interface, so the choice is stable whatever
/// order the OS lists interfaces in.
pub fn sort_for_lan(addrs: &mut [InterfaceAddr]) {
    addrs.sort_by_key(|a| (lan_rank(a.ip), is_virtual_interface(&a.interface), a.ip, a.interface.clone()));
}

/// Interfaces that belong to containers, virtual machines and tunnels on this machine (Docker's
/// `docker0` and `br-…`, libvirt's `virbr0`, VirtualBox, VMware, veth, tun/tap, WireGuard): their
/// addresses are private too, but not where the LAN reaches this machine.
pub fn is_virtual_interface(name: &str) -> bool {
    const PREFIXES: [&str; 10] = ["docker", "br-", "virbr", "vboxnet", "vmnet", "veth", "tun", "tap", "wg", "utun"];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The IPv4 address this machine would send from towards the internet (the default route's source
/// address), if it has a default route. Asked of the OS by "connecting" a UDP socket, which sends
/// nothing.
pub fn default_route_ipv4() -> Option<Ipv4Addr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // TEST-NET-2 (RFC 5737): never a real destination, and nothing is sent anyway.
    socket.connect((Ipv4Addr::new(198, 51, 100, 1), 9)).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// How likely an address is the one people on the LAN reach this machine at (lower is better):
/// private ranges (RFC 1918) first, then other routable addresses, then shared address space
/// (100.64/10, carrier NAT and VPNs such as Tailscale), then link-local (169.254/16, a network
/// without DHCP), then loopback. Unspecified, broadcast and multicast addresses are never chosen.
pub fn lan_rank(ip: Ipv4Addr) -> u8 {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        u8::MAX
    } else if ip.is_loopback() {
        5
    } else if ip.is_link_local() {
        4
    } else if a == 100 && (64..128).contains(&b) {
        3
    } else if ip.is_private() {
        1
    } else {
        2
    }
}

/// The address to write into links for `--lan`: the default route's source address when it is one
/// of `addrs` and not loopback (the interface this machine's traffic leaves by), else the first
/// non-loopback address in [`sort_for_lan`] order, if any.
pub fn primary_lan_ipv4(addrs: &[InterfaceAddr], default_route: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    let usable = |ip: Ipv4Addr| lan_rank(ip) < 5;
    if let Some(ip) = default_route.filter(|ip| usable(*ip) && addrs.iter().any(|a| a.ip == *ip)) {
        return Some(ip);
    }
    let mut sorted = addrs.to_vec();
    sort_for_lan(&mut sorted);
    sorted.into_iter().map(|a| a.ip).find(|ip| usable(*ip))
}

/// What a host advertises. Deliberately no token (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// DNS-SD instance name, shown in lists (the host's display name or machine name).
    pub instance: String,
    /// The host's display name ([`TXT_NAME`]).
    pub name: String,
    /// roundtable's version ([`TXT_VERSION`]).
    pub version: String,
    /// The certificate's full fingerprint; only its prefix is advertised.
    pub fingerprint: String,
    /// The port the host listens on.
    pub port: u16,
    /// The addresses to advertise (the host's non-loopback listening addresses).
    pub addresses: Vec<Ipv4Addr>,
}

/// The first [`FINGERPRINT_PREFIX_LEN`] characters of a fingerprint, lower case.
pub fn fingerprint_prefix(fingerprint: &str) -> String {
    fingerprint.chars().take(FINGERPRINT_PREFIX_LEN).collect::<String>().to_ascii_lowercase()
}

/// The TXT record of an advert, in a stable order.
pub fn txt_properties(advert: &Advert) -> Vec<(String, String)> {
    vec![
        (TXT_NAME.to_string(), advert.name.clone()),
        (TXT_VERSION.to_string(), advert.version.clone()),
        (TXT_FINGERPRINT.to_string(), fingerprint_prefix(&advert.fingerprint)),
    ]
}

/// A DNS host name (`NAME.local.`) from a machine name: letters, digits and `-` only.
fn mdns_host_name(machine: &str) -> String {
    let label: String = machine
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .take(63)
        .collect();
    let label = label.trim_matches('-');
    format!("{}.local.", if label.is_empty() { "roundtable" } else { label })
}

/// A running advertisement. Dropping it withdraws the service (a goodbye packet) and stops the
/// mDNS thread.
pub struct Advertisement {
    daemon: mdns_sd::ServiceDaemon,
    fullname: String,
    instance: String,
}

impl Advertisement {
    /// The advertised instance name (what `join --nearby` shows).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The advertised DNS-SD full name (`INSTANCE._roundtable._tcp.local.`).
    pub fn fullname(&self) -> &str {
        &self.fullname
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        // Best effort and bounded: a goodbye lets browsers forget us at once instead of after the
        // record's TTL; the daemon's thread ends on shutdown.
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
        let _ = self.daemon.shutdown();
    }
}

/// Starts advertising `advert` on every interface (its own thread; returns at once).
pub fn advertise(advert: &Advert, machine_name: &str) -> Result<Advertisement, DiscoveryError> {
    let daemon = mdns_sd::ServiceDaemon::new()?;
    let ips: Vec<IpAddr> = advert.addresses.iter().copied().map(IpAddr::V4).collect();
    let info = mdns_sd::ServiceInfo::new(
        SERVICE_TYPE,
        &advert.instance,
        &mdns_host_name(machine_name),
        &ips[..],
        advert.port,
        &txt_properties(advert)[..],
    )?;
    let fullname = info.get_fullname().to_string();
    daemon.register(info)?;
    Ok(Advertisement { daemon, fullname, instance: advert.instance.clone() })
}

/// A host found by [`browse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NearbyHost {
    /// DNS-SD instance name.
    pub instance: String,
    /// [`TXT_NAME`], or the instance name when absent.
    pub name: String,
    /// [`TXT_VERSION`], empty when absent.
    pub version: String,
    /// [`TXT_FINGERPRINT`], empty when absent.
    pub fingerprint_prefix: String,
    /// Where it listens, sorted.
    pub addresses: Vec<SocketAddr>,
}

impl NearbyHost {
    /// Whether this host advertises the prefix of `fingerprint` (a link's pinned fingerprint).
    pub fn matches_fingerprint(&self, fingerprint: &str) -> bool {
        self.fingerprint_prefix.len() == FINGERPRINT_PREFIX_LEN
            && fingerprint_prefix(fingerprint) == self.fingerprint_prefix
    }
}

/// What a [`Browser`] learnt about one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NearbyChange {
    /// A host was resolved: new, changed, or still there when asked again.
    Seen(NearbyHost),
    /// A host withdrew its advertisement or stopped answering (its instance name).
    Gone(String),
}

/// Browsing for roundtable hosts for as long as it lives (the mDNS thread's own; this only reads
/// what it found). Dropping it stops browsing and that thread.
pub struct Browser {
    daemon: mdns_sd::ServiceDaemon,
    events: mdns_sd::Receiver<mdns_sd::ServiceEvent>,
}

impl Browser {
    /// Starts browsing (returns at once).
    pub fn start() -> Result<Browser, DiscoveryError> {
        let daemon = mdns_sd::ServiceDaemon::new()?;
        let events = daemon.browse(SERVICE_TYPE)?;
        Ok(Browser { daemon, events })
    }

    /// Asks the LAN again: hosts still there are [`NearbyChange::Seen`] again soon after.
    pub fn ask_again(&mut self) -> Result<(), DiscoveryError> {
        self.events = self.daemon.browse(SERVICE_TYPE)?;
        Ok(())
    }

    /// The next change, waiting at most `wait` (blocking). `Ok(None)`: nothing new in time.
    /// `Err`: the mDNS thread stopped.
    pub fn next(&self, wait: Duration) -> Result<Option<NearbyChange>, DiscoveryError> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(mdns_sd::ServiceEvent::ServiceResolved(service)) => {
                    return Ok(Some(NearbyChange::Seen(nearby_host(&service))))
                }
                Ok(mdns_sd::ServiceEvent::ServiceRemoved(_, fullname)) => {
                    return Ok(Some(NearbyChange::Gone(instance_name(&fullname))))
                }
                Ok(_) => {}
                Err(mdns_sd::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mdns_sd::RecvTimeoutError::Disconnected) => return Err(DiscoveryError::Stopped),
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        let _ = self.daemon.shutdown();
    }
}

/// Browses for roundtable hosts for `window` and returns those resolved, sorted by name.
/// Blocking (it waits the whole window): call it from a blocking thread in async code.
pub fn browse(window: Duration) -> Result<Vec<NearbyHost>, DiscoveryError> {
    let browser = Browser::start()?;
    let deadline = Instant::now() + window;
    let mut found: BTreeMap<String, NearbyHost> = BTreeMap::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match browser.next(left) {
            Ok(Some(NearbyChange::Seen(host))) => {
                found.insert(host.instance.clone(), host);
            }
            Ok(Some(NearbyChange::Gone(instance))) => {
                found.remove(&instance);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut hosts: Vec<NearbyHost> = found.into_values().collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name).then(a.instance.cmp(&b.instance)));
    Ok(hosts)
}

/// The instance name in a DNS-SD full name (`INSTANCE._roundtable._tcp.local.`).
fn instance_name(fullname: &str) -> String {
    fullname.strip_suffix(&format!(".{SERVICE_TYPE}")).unwrap_or(fullname).to_string()
}

fn nearby_host(service: &mdns_sd::ResolvedService) -> NearbyHost {
    let instance = instance_name(&service.fullname);
    let text = |key: &str| service.get_property_val_str(key).unwrap_or_default().to_string();
    let mut addresses: Vec<SocketAddr> =
        service.get_addresses_v4().into_iter().map(|ip| SocketAddr::new(IpAddr::V4(ip), service.port)).collect();
    addresses.sort();
    let name = Some(text(TXT_NAME)).filter(|n| !n.is_empty()).unwrap_or_else(|| instance.clone());
    NearbyHost { instance, name, version: text(TXT_VERSION), fingerprint_prefix: text(TXT_FINGERPRINT), addresses }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(interface: &str, ip: &str) -> InterfaceAddr {
        InterfaceAddr { interface: interface.into(), ip: ip.parse().expect("an IPv4 address") }
    }

    #[test]
    fn the_primary_lan_address_is_a_private_one_and_never_loopback() {
        let mut addrs = vec![
            addr("lo", "127.0.0.1"),
            addr("tailscale0", "100.101.2.3"),
            addr("eth1", "169.254.9.9"),
            addr("wlan0", "192.168.1.20"),
            addr("eth0", "10.0.0.7"),
        ];
        assert_eq!(primary_lan_ipv4(&addrs, None), Some("10.0.0.7".parse().expect("ip")));
        // The default route's interface wins when it is one of them; a route via loopback or via
        // an address that is not ours does not count.
        let ip = |s: &str| -> Ipv4Addr { s.parse().expect("ip") };
        assert_eq!(primary_lan_ipv4(&addrs, Some(ip("192.168.1.20"))), Some(ip("192.168.1.20")));
        assert_eq!(primary_lan_ipv4(&addrs, Some(ip("127.0.0.1"))), Some(ip("10.0.0.7")));
        assert_eq!(primary_lan_ipv4(&addrs, Some(ip("192.168.9.9"))), Some(ip("10.0.0.7")));
        // Docker's bridge is private too, but not the LAN.
        let docker = [addr("docker0", "172.17.0.1"), addr("wlan0", "192.168.1.20"), addr("lo", "127.0.0.1")];
        assert_eq!(primary_lan_ipv4(&docker, None), Some(ip("192.168.1.20")));
        sort_for_lan(&mut addrs);
        let order: Vec<String> = addrs.iter().map(|a| a.ip.to_string()).collect();
        assert_eq!(order, ["10.0.0.7", "192.168.1.20", "100.101.2.3", "169.254.9.9", "127.0.0.1"]);
        // Shared (carrier NAT/VPN) and link-local addresses are chosen only when nothing better exists.
        assert_eq!(
            primary_lan_ipv4(&[addr("lo", "127.0.0.1"), addr("ts", "100.64.0.1")], None),
            Some("100.64.0.1".parse().expect("ip"))
        );
        assert_eq!(primary_lan_ipv4(&[addr("lo", "127.0.0.1")], None), None);
        assert_eq!(primary_lan_ipv4(&[], Some(ip("10.0.0.7"))), None);
    }

    #[test]
    fn the_txt_record_has_name_version_and_a_fingerprint_prefix_and_never_the_token() {
        let fingerprint = "AB".repeat(32);
        let advert = Advert {
            instance: "ann-laptop".into(),
            name: "ann-laptop".into(),
            version: "0.1.0".into(),
            fingerprint: fingerprint.clone(),
            port: 7447,
            addresses: vec!["192.168.1.20".parse().expect("ip")],
        };
        let txt = txt_properties(&advert);
        let keys: Vec<&str> = txt.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, [TXT_NAME, TXT_VERSION, TXT_FINGERPRINT]);
        assert_eq!(txt[2].1, "abababababababab");
        assert_eq!(txt[2].1.len(), FINGERPRINT_PREFIX_LEN);
        // Only a prefix of the fingerprint, nothing else from a link.
        for (key, value) in &txt {
            assert!(
                !value.to_ascii_lowercase().contains(&fingerprint.to_ascii_lowercase()),
                "{key} holds the fingerprint"
            );
            assert!(!key.contains("token") && !value.contains("roundtable://"), "{key}={value}");
        }
    }

    #[test]
    fn a_nearby_host_matches_a_link_only_by_a_whole_prefix() {
        let host = |fp: &str| NearbyHost {
            instance: "h".into(),
            name: "h".into(),
            version: "0.1.0".into(),
            fingerprint_prefix: fp.into(),
            addresses: vec![],
        };
        let fingerprint = format!("0123456789abcdef{}", "0".repeat(48));
        assert!(host("0123456789abcdef").matches_fingerprint(&fingerprint));
        assert!(host("0123456789abcdef").matches_fingerprint(&fingerprint.to_ascii_uppercase()));
        assert!(!host("0123456789abcdee").matches_fingerprint(&fingerprint));
        // A short (or missing) prefix matches nothing: it would match too many certificates.
        assert!(!host("0123").matches_fingerprint(&fingerprint));
        assert!(!host("").matches_fingerprint(&fingerprint));
    }

    #[test]
    fn mdns_host_names_are_valid_labels() {
        assert_eq!(mdns_host_name("ann-laptop.example.org"), "ann-laptop.local.");
        assert_eq!(mdns_host_name("Ann's Mac"), "Ann-s-Mac.local.");
        assert_eq!(mdns_host_name(""), "roundtable.local.");
    }
}
