//! Which addresses key fetches for an issuer may connect to, checked on the address
//! actually connected to: a DNS resolver that refuses forbidden addresses (so a name
//! that resolves, or re-resolves, to this host's own services is refused too), and a
//! check of IP literals in URLs, which never reach a resolver.
//!
//! A remote issuer's discovery document and JWKS URLs come from the network; without
//! this, `https://0.0.0.0:9090/`, `https://[::ffff:127.0.0.1]:9090/`, `localhost.` or a
//! name resolving to 169.254.169.254 would aim our fetches at the admin listener or a
//! cloud metadata service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Where an issuer's key fetches may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// The issuer is on loopback (tests, dev mode, a local mirror): no restriction on
    /// the addresses it reaches, but its discovery may point key fetches only at loopback.
    Local,
    /// A remote issuer: public unicast addresses only.
    Public,
    /// A remote issuer the operator allowed onto private networks
    /// (`allow_private_network`, for a self-hosted GitLab or GHES inside them): also
    /// private and shared ranges, never loopback, link-local or unspecified.
    PrivateNetwork,
}

impl Reach {
    /// The reach of an issuer at `issuer` (its configured URL).
    pub fn of(issuer: &Url, allow_private_network: bool) -> Reach {
        let loopback = match issuer.host() {
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        match (loopback, allow_private_network) {
            (true, _) => Reach::Local,
            (false, true) => Reach::PrivateNetwork,
            (false, false) => Reach::Public,
        }
    }

    /// Why `ip` may not be connected to, as a range name; `None` when it may.
    pub fn refuses(self, ip: IpAddr) -> Option<&'static str> {
        if self == Reach::Local {
            return None;
        }
        let class = classify(ip)?;
        match (self, class) {
            (Reach::PrivateNetwork, Class::Private(_)) => None,
            (_, Class::Private(name) | Class::Internal(name)) => Some(name),
        }
    }

    /// Refuses a host *name* that is this host's, a cloud metadata service's, or (for a
    /// public reach, when a proxy resolves it) a private network's, by what the name
    /// says. Names are otherwise judged by the addresses they resolve to
    /// ([`GuardedResolver`]); through a proxy, which resolves them itself, what the name
    /// says is all there is to judge.
    pub fn check_name(self, name: &str, through_proxy: bool) -> Result<(), String> {
        if self == Reach::Local {
            return Ok(());
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let refused = |what: &str, hint: &str| {
            Err(format!(
                "refusing to connect to {name} ({what}) for a remote issuer's keys{hint}"
            ))
        };
        if name == "localhost" || name.ends_with(".localhost") {
            return refused("a name of this host", "");
        }
        if METADATA_NAMES.contains(&name.as_str()) {
            return refused("a cloud metadata name", "");
        }
        let private = !name.contains('.')
            || PRIVATE_SUFFIXES
                .iter()
                .any(|suffix| name == suffix[1..] || name.ends_with(suffix));
        if through_proxy && self == Reach::Public && private {
            return refused(
                "a private network's name, which the proxy would resolve",
                " (for an issuer inside your private network, set allow_private_network = true on it)",
            );
        }
        Ok(())
    }

    /// Refuses a URL whose host is a forbidden IP literal (a resolver never sees those).
    pub fn check_url(self, url: &Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(_)) | None => return Ok(()),
        };
        match self.refuses(ip) {
            Some(range) => Err(refusal(&ip.to_string(), ip, range)),
            None => Ok(()),
        }
    }
}

fn refusal(host: &str, ip: IpAddr, range: &str) -> String {
    let hint = if PRIVATE_RANGES.contains(&range) {
        " (for an issuer inside your private network, set allow_private_network = true on it)"
    } else {
        ""
    };
    if host == ip.to_string() {
        format!("refusing to connect to {ip} ({range} address) for a remote issuer's keys{hint}")
    } else {
        format!(
            "refusing to connect to {host}: it resolves to {ip} ({range} address), which a \
             remote issuer's key fetches may not reach{hint}"
        )
    }
}

/// The names of the ranges `allow_private_network` opens.
const PRIVATE_RANGES: &[&str] = &[
    "private",
    "shared (carrier-grade NAT)",
    "unique local",
    "site-local",
];

/// Cloud instance metadata services, refused whatever the reach: they hand out the
/// host's credentials. (169.254.169.254 is link-local anyway; these are not all.)
const METADATA_ADDRESSES: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// Names of cloud instance metadata services (GCP, AWS), refused whatever the reach.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Names that only a private network resolves: single labels (search domains), and
/// special-use or customary private suffixes (RFC 6761, 6762, 8375, ICANN's `.internal`).
const PRIVATE_SUFFIXES: &[&str] = &[
    ".internal",
    ".local",
    ".localdomain",
    ".home.arpa",
    ".lan",
    ".intranet",
    ".corp",
    ".home",
    ".private",
];

enum Class {
    /// This host, its link, or nothing: never for a remote issuer.
    Internal(&'static str),
    /// Private networks: only with `allow_private_network`.
    Private(&'static str),
}

/// The range `ip` falls in, when it is not public unicast. IPv4 addresses embedded in
/// IPv6 (mapped, SIIT, NAT64, 6to4) are judged as IPv4.
fn classify(ip: IpAddr) -> Option<Class> {
    let canonical = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if METADATA_ADDRESSES.contains(&ip) || METADATA_ADDRESSES.contains(&canonical) {
        return Some(Class::Internal("cloud metadata"));
    }
    match canonical {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// The IPv4 address an IPv6 address stands for: `::ffff:a.b.c.d` (mapped),
/// `::ffff:0:a.b.c.d` (SIIT), `64:ff9b::a.b.c.d` and `64:ff9b:1::/48` (NAT64), and
/// `2002:aabb:ccdd::/48` (6to4).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let from = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match s {
        [0, 0, 0, 0, 0xffff, 0, high, low] => Some(from(high, low)),
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => Some(from(high, low)),
        [0x64, 0xff9b, 1, _, _, _, high, low] => Some(from(high, low)),
        [0x2002, high, low, ..] => Some(from(high, low)),
        _ => None,
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_loopback() => Class::Internal("loopback"),
        (0, _, _) => Class::Internal("unspecified"),
        _ if ip.is_link_local() => Class::Internal("link-local"),
        _ if ip.is_broadcast() || ip.is_multicast() => Class::Internal("multicast"),
        (240..=255, _, _) | (192, 0, 0) => Class::Internal("reserved"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Class::Internal("documentation"),
        (198, 18..=19, _) => Class::Internal("benchmarking"),
        _ if ip.is_private() => Class::Private("private"),
        (100, 64..=127, _) => Class::Private("shared (carrier-grade NAT)"),
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    let s = ip.segments();
    let first = s[0];
    Some(match first {
        _ if ip.is_loopback() => Class::Internal("loopback"),
        _ if ip.is_unspecified() => Class::Internal("unspecified"),
        // `::a.b.c.d`, IPv4-compatible: deprecated, never a real issuer's address.
        0 if s[1..6] == [0, 0, 0, 0, 0] => Class::Internal("IPv4-compatible"),
        // Teredo tunnels and the documentation prefix.
        0x2001 if s[1] == 0 => Class::Internal("Teredo"),
        0x2001 if s[1] == 0x0db8 => Class::Internal("documentation"),
        _ if first & 0xffc0 == 0xfe80 => Class::Internal("link-local"),
        _ if first & 0xff00 == 0xff00 => Class::Internal("multicast"),
        _ if first & 0xfe00 == 0xfc00 => Class::Private("unique local"),
        _ if first & 0xffc0 == 0xfec0 => Class::Private("site-local"),
        _ => return None,
    })
}

/// A name the system resolver could not resolve; kept typed in the error chain so a
/// fetch error can say that DNS failed, and for which name (the issuer's or the proxy's).
#[derive(Debug, thiserror::Error)]
#[error("DNS lookup of {name} failed: {source}")]
pub struct LookupFailed {
    pub name: String,
    #[source]
    pub source: std::io::Error,
}

/// A name the resolver refused because of what it resolves to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResolverRefusal(pub String);

/// The system resolver, refusing names that resolve to an address `reach` forbids.
/// When any of a name's addresses is forbidden, all are refused: a name that mixes them
/// is not trusted to pick. The outbound proxy's own names are resolved without the rules:
/// the operator chose them, and fetches reach the proxy only to go beyond it.
#[derive(Debug)]
pub struct GuardedResolver {
    reach: Reach,
    unguarded: Vec<String>,
}

impl GuardedResolver {
    pub fn new(reach: Reach) -> Arc<Self> {
        Self::with_proxy_hosts(reach, Vec::new())
    }

    /// A resolver that resolves `proxy_hosts` (lower-case) without the reach's rules.
    pub fn with_proxy_hosts(reach: Reach, proxy_hosts: Vec<String>) -> Arc<Self> {
        Arc::new(Self {
            reach,
            unguarded: proxy_hosts,
        })
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let reach = if self
            .unguarded
            .iter()
            .any(|proxy| proxy.eq_ignore_ascii_case(&host))
        {
            Reach::Local
        } else {
            self.reach
        };
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => addrs.collect(),
                Err(source) => {
                    return Err(LookupFailed {
                        name: host.clone(),
                        source,
                    }
                    .into());
                }
            };
            if let Some((ip, range)) = addrs
                .iter()
                .find_map(|addr| reach.refuses(addr.ip()).map(|range| (addr.ip(), range)))
            {
                return Err(ResolverRefusal(refusal(&host, ip, range)).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reach: Reach, ip: &str) -> Option<&'static str> {
        reach.refuses(ip.parse().expect("test address"))
    }

    /// Security invariant: a remote issuer's key fetches never reach this host, its link,
    /// or (unless allowed) private networks, however the address is written.
    #[test]
    fn remote_issuers_reach_public_addresses_only() {
        for (ip, range) in [
            ("127.0.0.1", "loopback"),
            ("127.8.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "multicast"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::7f00:1", "loopback"),
            ("fe80::1", "link-local"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("::169.254.169.254", "IPv4-compatible"),
            ("::ffff:0:127.0.0.1", "loopback"),
            ("64:ff9b:1::a9fe:a9fe", "cloud metadata"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:a9fe:a9fe::1", "cloud metadata"),
            ("2001:0:4136:e378::1", "Teredo"),
            ("2001:db8::1", "documentation"),
            ("192.0.0.8", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(refused(Reach::Public, ip), Some(range), "{ip}");
        }
        for ip in [
            "140.82.112.21",
            "172.32.0.1",
            "100.128.0.1",
            "2606:50c0:8000::154",
        ] {
            assert_eq!(refused(Reach::Public, ip), None, "{ip}");
        }
    }

    #[test]
    fn allow_private_network_opens_private_ranges_only() {
        for ip in ["10.1.2.3", "192.168.1.1", "100.64.0.1", "fd12::1"] {
            assert_eq!(refused(Reach::PrivateNetwork, ip), None, "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "::ffff:127.0.0.1",
            "fe80::1",
            "0.0.0.0",
            // Metadata services inside otherwise private ranges stay refused.
            "fd00:ec2::254",
            "100.100.100.200",
        ] {
            assert!(refused(Reach::PrivateNetwork, ip).is_some(), "{ip}");
        }
        assert_eq!(
            Reach::Public.check_url(&Url::parse("https://10.0.0.5/").expect("URL")),
            Err("refusing to connect to 10.0.0.5 (private address) for a remote issuer's keys \
                 (for an issuer inside your private network, set allow_private_network = true on it)"
                .to_owned())
        );
        assert_eq!(refused(Reach::Local, "127.0.0.1"), None);
    }

    #[test]
    fn the_reach_follows_the_issuer_url() {
        let url = |text: &str| Url::parse(text).expect("test URL");
        assert_eq!(
            Reach::of(&url("http://127.0.0.1:8080/dev"), false),
            Reach::Local
        );
        assert_eq!(Reach::of(&url("http://localhost:8080"), true), Reach::Local);
        assert_eq!(Reach::of(&url("https://gitlab.com"), false), Reach::Public);
        assert_eq!(
            Reach::of(&url("https://gitlab.acme.internal"), true),
            Reach::PrivateNetwork
        );
    }

    #[test]
    fn ip_literals_in_urls_are_checked_without_a_resolver() {
        let url = |text: &str| Url::parse(text).expect("test URL");
        assert_eq!(
            Reach::Public.check_url(&url("https://0.0.0.0:9090/metrics")),
            Err(
                "refusing to connect to 0.0.0.0 (unspecified address) for a remote issuer's keys"
                    .to_owned()
            )
        );
        assert_eq!(
            Reach::Public.check_url(&url("https://[::ffff:127.0.0.1]:9090/")),
            Err("refusing to connect to ::ffff:127.0.0.1 (loopback address) for a remote issuer's keys".to_owned())
        );
        assert!(
            Reach::Public
                .check_url(&url("https://token.actions.githubusercontent.com/"))
                .is_ok()
        );
    }

    #[test]
    fn names_of_this_host_and_of_metadata_services_are_refused_by_name() {
        for reach in [Reach::Public, Reach::PrivateNetwork] {
            for through_proxy in [false, true] {
                assert_eq!(
                    reach.check_name("Keys.LocalHost.", through_proxy),
                    Err(
                        "refusing to connect to keys.localhost (a name of this host) for a \
                         remote issuer's keys"
                            .to_owned()
                    )
                );
                assert_eq!(
                    reach.check_name("metadata.google.internal", through_proxy),
                    Err(
                        "refusing to connect to metadata.google.internal (a cloud metadata \
                         name) for a remote issuer's keys"
                            .to_owned()
                    )
                );
            }
        }
        assert_eq!(Reach::Local.check_name("localhost", true), Ok(()));
    }

    /// Through a proxy the name is all there is to judge: a private network's names are
    /// refused for a public reach, and allowed with allow_private_network.
    #[test]
    fn through_a_proxy_private_names_need_allow_private_network() {
        for name in [
            "gitlab",
            "gitlab.internal",
            "git.acme.corp",
            "ci.local",
            "x.home.arpa",
        ] {
            assert_eq!(
                Reach::Public.check_name(name, true),
                Err(format!(
                    "refusing to connect to {name} (a private network's name, which the proxy \
                     would resolve) for a remote issuer's keys (for an issuer inside your \
                     private network, set allow_private_network = true on it)"
                )),
            );
            assert_eq!(Reach::PrivateNetwork.check_name(name, true), Ok(()));
            // Without a proxy the resolver judges the addresses instead.
            assert_eq!(Reach::Public.check_name(name, false), Ok(()));
        }
        assert_eq!(
            Reach::Public.check_name("token.actions.githubusercontent.com", true),
            Ok(())
        );
        assert_eq!(
            Reach::Public.check_name("internal.example.com", true),
            Ok(())
        );
    }

    #[tokio::test]
    async fn the_proxys_own_name_is_resolved_without_the_rules() {
        let resolver =
            GuardedResolver::with_proxy_hosts(Reach::Public, vec!["localhost".to_owned()]);
        let name: Name = "localhost".parse().expect("name");
        assert!(resolver.resolve(name).await.is_ok());
    }

    /// Names are judged by what they resolve to, at connection time (DNS rebinding).
    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        let resolver = GuardedResolver::new(Reach::Public);
        let name: Name = "localhost".parse().expect("name");
        let err = resolver
            .resolve(name)
            .await
            .err()
            .expect("localhost is refused");
        let text = err.to_string();
        assert!(
            text.starts_with("refusing to connect to localhost: it resolves to ")
                && text.contains("(loopback address)"),
            "{text}"
        );
        let local = GuardedResolver::new(Reach::Local);
        let name: Name = "localhost".parse().expect("name");
        assert!(local.resolve(name).await.is_ok());
    }
}
