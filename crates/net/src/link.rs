//! Share links: `roundtable://HOST:PORT/TOKEN#sha256=FINGERPRINT`.
//!
//! A link carries everything a remote needs to reach the host and trust it without a CA:
//! the address, the pairing token (256 random bits, base64url) and the SHA-256 fingerprint of
//! the host's self-signed certificate, which the client pins (no trust-on-first-use). A host run
//! with `--insecure` (plain `ws://`, loopback only) mints `roundtable://HOST:PORT/TOKEN#insecure`
//! instead; the fragment is mandatory so a link never silently downgrades to plain text.
//!
//! IPv6 hosts are written in brackets (`roundtable://[::1]:7447/...`); [`Link::host`] holds the
//! bare address (`::1`) so it can be handed to a socket API directly.
//!
//! A host reachable at several addresses (`--lan`: each LAN address and loopback) names the others
//! after the token: `roundtable://192.168.1.20:7447/TOKEN?addr=10.0.0.5:7447&addr=127.0.0.1:7447#sha256=…`.
//! Clients dial them all at once and keep the first connection that proves the pinned
//! certificate ([`Link::addresses`]); other query keys are ignored, so later link features do not
//! break older clients.
//!
//! A host reachable through a relay (docs/NETWORKING.md "Relay") also names its iroh endpoint:
//! `?iroh=ENDPOINT_ID&relay=URL` (64 hex digits, the endpoint's public key, pinned like the
//! certificate; the relay is where the host waits, `relay` may be missing when the host found
//! none and remotes look it up by iroh's DNS). Clients dial it at the same time as the addresses.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// The URL scheme of share links.
pub const SCHEME: &str = "roundtable://";

/// Length of a SHA-256 fingerprint in lower-case hex.
pub const FINGERPRINT_HEX_LEN: usize = 64;

/// A parsed share link.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    /// Host name or IP address, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// The pairing token (base64url, no padding).
    pub token: String,
    /// Lower-case hex SHA-256 of the host certificate's DER; `None` for an `--insecure` host.
    pub fingerprint: Option<String>,
    /// More addresses of the same host (`?addr=HOST:PORT`), tried at the same time as the first.
    pub also: Vec<(String, u16)>,
    /// The host's iroh endpoint (`?iroh=ID&relay=URL`), dialed at the same time as the addresses.
    pub iroh: Option<IrohAddr>,
}

/// Where a link says the host's iroh endpoint is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IrohAddr {
    /// The endpoint id (its public key, 64 lower-case hex digits), which the QUIC handshake proves.
    pub id: String,
    /// The relay the host waits at (`http://` or `https://`); `None`: look it up by iroh's DNS.
    pub relay: Option<String>,
}

/// Why a string is not a valid share link.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("not a roundtable link: it must start with \"roundtable://\" (found \"{found}\")")]
    BadScheme { found: String },
    #[error("the link has no host (expected roundtable://HOST:PORT/TOKEN#sha256=FINGERPRINT)")]
    MissingHost,
    #[error("invalid host \"{0}\" in link")]
    BadHost(String),
    #[error("the link has no port (expected HOST:PORT, e.g. 127.0.0.1:7447)")]
    MissingPort,
    #[error("invalid port \"{0}\" in link (expected a number from 1 to 65535)")]
    BadPort(String),
    #[error("the link has no pairing token (expected roundtable://HOST:PORT/TOKEN#...)")]
    MissingToken,
    #[error("the pairing token in the link is malformed (expected base64url characters A-Z a-z 0-9 - _)")]
    BadToken,
    #[error("the link has no certificate fingerprint: it must end in #sha256=FINGERPRINT (or #insecure for a plain loopback host); copy the whole link")]
    MissingFingerprint,
    #[error("invalid certificate fingerprint in link: expected {FINGERPRINT_HEX_LEN} hex digits after #sha256=, found \"{0}\"")]
    BadFingerprint(String),
    #[error("unknown link fragment \"#{0}\" (expected #sha256=FINGERPRINT or #insecure)")]
    UnknownFragment(String),
    #[error("invalid iroh endpoint id \"{0}\" in link (expected 64 hex digits after iroh=)")]
    BadEndpointId(String),
    #[error("invalid relay \"{0}\" in link (expected an http:// or https:// URL after relay=)")]
    BadRelay(String),
}

impl Link {
    /// Parses a link. Surrounding whitespace is ignored; the scheme is case-insensitive and the
    /// fingerprint is normalised to lower case.
    pub fn parse(text: &str) -> Result<Link, LinkError> {
        let text = text.trim();
        let rest = match text.get(..SCHEME.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(SCHEME) => &text[SCHEME.len()..],
            _ => {
                let found: String = text.chars().take(24).collect();
                return Err(LinkError::BadScheme { found });
            }
        };

        let (before_fragment, fragment) = match rest.split_once('#') {
            Some((a, f)) => (a, Some(f)),
            None => (rest, None),
        };
        let (authority, path) = match before_fragment.split_once('/') {
            Some((a, p)) => (a, p),
            None => (before_fragment, ""),
        };
        let (host, port) = parse_authority(authority)?;

        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut also = Vec::new();
        let (mut iroh_id, mut relay) = (None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            if let Some(addr) = pair.strip_prefix("addr=") {
                also.push(parse_authority(addr)?);
            } else if let Some(id) = pair.strip_prefix("iroh=") {
                if !crate::relay::is_endpoint_id(&id.to_ascii_lowercase()) {
                    return Err(LinkError::BadEndpointId(id.chars().take(80).collect()));
                }
                iroh_id = Some(id.to_ascii_lowercase());
            } else if let Some(url) = pair.strip_prefix("relay=") {
                if !crate::relay::is_relay_url(url) {
                    return Err(LinkError::BadRelay(url.chars().take(120).collect()));
                }
                relay = Some(url.to_string());
            }
        }
        // A relay alone names nobody to dial: ignored, like any key this version does not use.
        let iroh = iroh_id.map(|id| IrohAddr { id, relay });
        let token = path.strip_suffix('/').unwrap_or(path);
        if token.is_empty() {
            return Err(LinkError::MissingToken);
        }
        if !token.bytes().all(is_base64url) {
            return Err(LinkError::BadToken);
        }

        let fingerprint = match fragment {
            None | Some("") => return Err(LinkError::MissingFingerprint),
            Some(f) if f.eq_ignore_ascii_case("insecure") => None,
            Some(f) => match f.get(..7) {
                Some(prefix) if prefix.eq_ignore_ascii_case("sha256=") => Some(parse_fingerprint(&f[7..])?),
                _ => return Err(LinkError::UnknownFragment(f.to_string())),
            },
        };

        Ok(Link { host, port, token: token.to_string(), fingerprint, also, iroh })
    }

    /// What the link's text has after its token: `?addr=HOST:PORT` (then `&addr=…`) for each other
    /// address, `iroh=ID&relay=URL` for the iroh endpoint, then `#sha256=FINGERPRINT` or
    /// `#insecure`.
    pub fn after_token(&self) -> String {
        let mut pairs: Vec<String> =
            self.also.iter().map(|(host, port)| format!("addr={}", authority(host, *port))).collect();
        if let Some(iroh) = &self.iroh {
            pairs.push(format!("iroh={}", iroh.id));
            pairs.extend(iroh.relay.iter().map(|url| format!("relay={url}")));
        }
        let mut text = String::new();
        if !pairs.is_empty() {
            text = format!("?{}", pairs.join("&"));
        }
        match &self.fingerprint {
            Some(fp) => text.push_str(&format!("#sha256={fp}")),
            None => text.push_str("#insecure"),
        }
        text
    }

    /// A link to one host address: no alternatives.
    pub fn new(host: impl Into<String>, port: u16, token: impl Into<String>, fingerprint: Option<String>) -> Link {
        Link { host: host.into(), port, token: token.into(), fingerprint, also: Vec::new(), iroh: None }
    }

    /// This link once per address it names (the first, then each `addr`), each without
    /// alternatives (no other address, no iroh endpoint): what a client dials over TCP.
    pub fn addresses(&self) -> impl Iterator<Item = Link> + '_ {
        std::iter::once((self.host.clone(), self.port)).chain(self.also.iter().cloned()).map(|(host, port)| Link {
            host,
            port,
            also: Vec::new(),
            iroh: None,
            ..self.clone()
        })
    }

    /// `HOST:PORT`, with brackets around an IPv6 host (suitable for URLs and `ToSocketAddrs`).
    pub fn authority(&self) -> String {
        authority(&self.host, self.port)
    }

    /// Whether the host is a loopback address (`localhost`, `127.0.0.0/8`, `::1`).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// Whether this link is for a plain-text (`--insecure`) host.
    pub fn is_insecure(&self) -> bool {
        self.fingerprint.is_none()
    }
}

impl FromStr for Link {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Link::parse(s)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}{}", self.authority(), self.token, self.after_token())
    }
}

/// `HOST:PORT`, with brackets around an IPv6 host.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses `HOST:PORT` or `[V6]:PORT` (as in a link or `--host`) into a bare host and a port.
pub fn parse_host_port(text: &str) -> Result<(String, u16), LinkError> {
    parse_authority(text.trim())
}

/// Whether `host` (a name or bare IP address) is a loopback host.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// Validates a fingerprint (64 hex digits, either case) and returns it in lower case.
pub fn parse_fingerprint(text: &str) -> Result<String, LinkError> {
    if text.len() == FINGERPRINT_HEX_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(LinkError::BadFingerprint(text.chars().take(80).collect()))
    }
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_hostname_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

/// Splits `HOST:PORT` / `[V6]:PORT`.
fn parse_authority(authority: &str) -> Result<(String, u16), LinkError> {
    if authority.is_empty() {
        return Err(LinkError::MissingHost);
    }
    let (host, port) = if let Some(after_bracket) = authority.strip_prefix('[') {
        let (v6, rest) = after_bracket.split_once(']').ok_or_else(|| LinkError::BadHost(authority.to_string()))?;
        let ip = Ipv6Addr::from_str(v6).map_err(|_| LinkError::BadHost(v6.to_string()))?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p,
            None if rest.is_empty() => return Err(LinkError::MissingPort),
            None => return Err(LinkError::BadHost(authority.to_string())),
        };
        (ip.to_string(), port)
    } else {
        let (host, port) = authority.rsplit_once(':').ok_or(LinkError::MissingPort)?;
        if host.is_empty() {
            return Err(LinkError::MissingHost);
        }
        if host.contains(':') {
            // An IPv6 address must be bracketed, otherwise the port is ambiguous.
            return Err(LinkError::BadHost(format!("{host} (IPv6 addresses must be written in brackets: [{host}])")));
        }
        if !host.bytes().all(is_hostname_byte) {
            return Err(LinkError::BadHost(host.to_string()));
        }
        (host.to_string(), port)
    };
    if port.is_empty() {
        return Err(LinkError::MissingPort);
    }
    let port: u16 = match port.parse() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(LinkError::BadPort(port.to_string())),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_pinned_link_parses_into_its_parts() {
        let link = Link::parse(&format!("roundtable://example.org:7447/abc_DEF-123#sha256={FP}")).unwrap();
        assert_eq!(link.host, "example.org");
        assert_eq!(link.port, 7447);
        assert_eq!(link.token, "abc_DEF-123");
        assert_eq!(link.fingerprint.as_deref(), Some(FP));
        assert!(!link.is_insecure());
    }

    #[test]
    fn an_insecure_link_has_no_fingerprint() {
        let link = Link::parse("roundtable://127.0.0.1:9000/tok#insecure").unwrap();
        assert_eq!(link.fingerprint, None);
        assert!(link.is_insecure());
        assert!(link.is_loopback());
        assert_eq!(link.to_string(), "roundtable://127.0.0.1:9000/tok#insecure");
    }

    #[test]
    fn ipv6_hosts_are_bracketed_in_the_link_and_bare_in_the_struct() {
        let link = Link::parse(&format!("roundtable://[::1]:7447/tok#sha256={FP}")).unwrap();
        assert_eq!(link.host, "::1");
        assert_eq!(link.authority(), "[::1]:7447");
        assert_eq!(link.to_string(), format!("roundtable://[::1]:7447/tok#sha256={FP}"));
        assert!(link.is_loopback());
    }

    #[test]
    fn fingerprints_are_normalised_to_lower_case() {
        let link = Link::parse(&format!("ROUNDTABLE://h:1/t#SHA256={}", FP.to_uppercase())).unwrap();
        assert_eq!(link.fingerprint.as_deref(), Some(FP));
    }

    #[test]
    fn each_malformed_part_has_its_own_error() {
        let cases: Vec<(String, LinkError)> = vec![
            (
                format!("https://h:1/t#sha256={FP}"),
                LinkError::BadScheme { found: format!("https://h:1/t#sha256={}", &FP[..3]) },
            ),
            (format!("roundtable:///t#sha256={FP}"), LinkError::MissingHost),
            (format!("roundtable://h/t#sha256={FP}"), LinkError::MissingPort),
            (format!("roundtable://h:/t#sha256={FP}"), LinkError::MissingPort),
            (format!("roundtable://h:99999/t#sha256={FP}"), LinkError::BadPort("99999".into())),
            (format!("roundtable://h:0/t#sha256={FP}"), LinkError::BadPort("0".into())),
            (format!("roundtable://h:+1/t#sha256={FP}"), LinkError::BadPort("+1".into())),
            (format!("roundtable://h:1#sha256={FP}"), LinkError::MissingToken),
            (format!("roundtable://h:1/#sha256={FP}"), LinkError::MissingToken),
            (format!("roundtable://h:1/a%20b#sha256={FP}"), LinkError::BadToken),
            ("roundtable://h:1/t".into(), LinkError::MissingFingerprint),
            ("roundtable://h:1/t#".into(), LinkError::MissingFingerprint),
            ("roundtable://h:1/t#sha256=abc".into(), LinkError::BadFingerprint("abc".into())),
            ("roundtable://h:1/t#md5=abc".into(), LinkError::UnknownFragment("md5=abc".into())),
            (format!("roundtable://[nope]:1/t#sha256={FP}"), LinkError::BadHost("nope".into())),
            (format!("roundtable://[::1]/t#sha256={FP}"), LinkError::MissingPort),
            (format!("roundtable://h@x:1/t#sha256={FP}"), LinkError::BadHost("h@x".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(Link::parse(&text), Err(expected), "parsing {text}");
        }
    }

    #[test]
    fn host_port_accepts_names_ipv4_and_bracketed_ipv6() {
        assert_eq!(parse_host_port("example.org:80"), Ok(("example.org".into(), 80)));
        assert_eq!(parse_host_port(" 10.0.0.1:7447 "), Ok(("10.0.0.1".into(), 7447)));
        assert_eq!(parse_host_port("[::1]:9"), Ok(("::1".into(), 9)));
        assert_eq!(parse_host_port("example.org"), Err(LinkError::MissingPort));
    }

    #[test]
    fn unbracketed_ipv6_is_refused_with_a_hint() {
        let err = Link::parse(&format!("roundtable://::1:7447/t#sha256={FP}")).unwrap_err();
        assert!(err.to_string().contains("brackets"), "{err}");
    }

    #[test]
    fn a_link_names_more_addresses_after_the_token_and_unknown_keys_are_ignored() {
        let fp = "ab".repeat(32);
        let text = format!("roundtable://192.168.1.20:7447/tok?addr=10.0.0.5:7447&addr=[::1]:7447&later=x#sha256={fp}");
        let link = Link::parse(&text).expect("a link");
        assert_eq!(link.also, vec![("10.0.0.5".to_string(), 7447), ("::1".to_string(), 7447)]);
        assert_eq!(link.token, "tok");
        let dialed: Vec<String> = link.addresses().map(|l| l.authority()).collect();
        assert_eq!(dialed, ["192.168.1.20:7447", "10.0.0.5:7447", "[::1]:7447"]);
        assert_eq!(
            link.to_string(),
            format!("roundtable://192.168.1.20:7447/tok?addr=10.0.0.5:7447&addr=[::1]:7447#sha256={fp}")
        );
        assert!(Link::parse(&format!("roundtable://h:1/tok?addr=nope#sha256={fp}")).is_err(), "a bad addr is an error");
    }

    #[test]
    fn a_link_names_the_iroh_endpoint_and_its_relay() {
        let fp = "ab".repeat(32);
        let id = "cd".repeat(32);
        let text = format!("roundtable://10.0.1.2:7447/tok?iroh={id}&relay=http://10.0.1.1:3340/#sha256={fp}");
        let link = Link::parse(&text).expect("a link");
        assert_eq!(link.iroh, Some(IrohAddr { id: id.clone(), relay: Some("http://10.0.1.1:3340/".into()) }));
        assert_eq!(link.to_string(), text, "written back the same");
        assert!(link.addresses().all(|one| one.iroh.is_none()), "the TCP dials carry no endpoint");
        let upper = format!("roundtable://h:1/tok?iroh={}#sha256={fp}", id.to_uppercase());
        assert_eq!(Link::parse(&upper).unwrap().iroh, Some(IrohAddr { id: id.clone(), relay: None }));
        assert_eq!(
            Link::parse(&format!("roundtable://h:1/tok?iroh=abc#sha256={fp}")),
            Err(LinkError::BadEndpointId("abc".into()))
        );
        assert_eq!(
            Link::parse(&format!("roundtable://h:1/tok?iroh={id}&relay=ftp://x#sha256={fp}")),
            Err(LinkError::BadRelay("ftp://x".into()))
        );
        let relay_only = Link::parse(&format!("roundtable://h:1/tok?relay=https://r.example/#sha256={fp}")).unwrap();
        assert_eq!(relay_only.iroh, None, "a relay without an endpoint names nobody");
    }

    #[test]
    fn error_messages_name_the_expected_shape() {
        let err = Link::parse("roundtable://h:1/t").unwrap_err().to_string();
        assert!(err.contains("#sha256=FINGERPRINT"), "{err}");
        let err = Link::parse("http://x").unwrap_err().to_string();
        assert!(err.contains("roundtable://"), "{err}");
    }

    fn host_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
            any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
            any::<[u16; 8]>().prop_map(|s| Ipv6Addr::from(s).to_string()),
        ]
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(
            host in host_strategy(),
            port in 1u16..,
            token in "[A-Za-z0-9_-]{1,64}",
            fingerprint in proptest::option::of("[0-9a-f]{64}"),
            also in proptest::collection::vec((host_strategy(), 1u16..), 0..3),
            // Relay hosts as DNS has them: a label never holds `--` (`xn--` is punycode's prefix,
            // and `xn--` alone is no host).
            iroh in proptest::option::of(("[0-9a-f]{64}", proptest::option::of("https?://[a-z][a-z0-9]{0,5}(-[a-z0-9]{1,4})?(\\.[a-z][a-z0-9]{0,4}(-[a-z0-9]{1,3})?){0,2}(:[1-9][0-9]{0,3})?/"))),
        ) {
            let iroh = iroh.map(|(id, relay)| IrohAddr { id, relay });
            let link = Link { host, port, token, fingerprint, also, iroh };
            let text = link.to_string();
            prop_assert_eq!(Link::parse(&text), Ok(link));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,120}") {
            let _ = Link::parse(&text);
        }
    }
}
