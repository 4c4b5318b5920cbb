//! The outbound proxy, read from the environment as reqwest reads it (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, upper case first, none under CGI), so that key
//! fetches know which URLs go through it, and the start-up log can name it without its
//! credentials.
//!
//! Every other outbound client (token endpoints, `tokenmint exchange`) keeps reqwest's
//! own reading of the same variables. Key fetches take their proxy from
//! [`OutboundProxy::for_url`] instead (never one for a loopback issuer), so the address
//! rules of [`super::Reach`] can be applied knowing whether a proxy resolves the name:
//! see `source::check_host`.

use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

/// A proxy URL from one variable. Its `Debug` and [`ProxyUrl::redacted`] never show
/// credentials.
#[derive(Clone)]
pub struct ProxyUrl {
    /// The variable it came from, e.g. `HTTPS_PROXY`.
    pub var: &'static str,
    /// With credentials, if the variable carries them: only for reqwest.
    url: Url,
}

impl ProxyUrl {
    /// `http://proxy.corp:3128`, with `user:password@` replaced by `***@`.
    pub fn redacted(&self) -> String {
        let mut shown = self.url.clone();
        let had_credentials = !shown.username().is_empty() || shown.password().is_some();
        // Setting them fails only for URLs that cannot have them, which these can.
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        let text = shown.as_str().trim_end_matches('/').to_owned();
        if had_credentials {
            text.replacen("://", "://***@", 1)
        } else {
            text
        }
    }

    /// The proxy's host as reqwest connects to it (a name or an IP literal).
    pub fn host(&self) -> Option<String> {
        self.url.host_str().map(|host| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        })
    }

    pub(super) fn url(&self) -> &Url {
        &self.url
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.redacted(), self.var)
    }
}

/// The proxies of the environment and the hosts exempted from them.
#[derive(Clone, Debug, Default)]
pub struct OutboundProxy {
    /// For `https://` URLs: `HTTPS_PROXY`, else `ALL_PROXY`.
    pub https: Option<ProxyUrl>,
    /// For `http://` URLs: `HTTP_PROXY`, else `ALL_PROXY`.
    pub http: Option<ProxyUrl>,
    /// `NO_PROXY`, as written (no credentials there).
    pub no_proxy: Option<String>,
    /// Variables that are set but name no proxy reqwest can use (not a URL, or a scheme
    /// other than http and https): `(variable, why)`, for the start-up log.
    pub unusable: Vec<(&'static str, &'static str)>,
    exempt: NoProxy,
}

impl OutboundProxy {
    /// Reads the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests give their own).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        // As hyper-util's matcher: under CGI, `HTTP_PROXY` may come from a request header.
        if lookup("REQUEST_METHOD").is_some() {
            return Self::default();
        }
        let first = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|name| lookup(name).map(|value| (name, value)))
        };
        let mut unusable = Vec::new();
        let mut parse = |found: Option<(&'static str, String)>| {
            let (var, value) = found?;
            match parse_proxy(&value) {
                Ok(url) => Some(ProxyUrl { var, url }),
                Err(why) => {
                    if !value.trim().is_empty() {
                        unusable.push((var, why));
                    }
                    None
                }
            }
        };
        let all = parse(first(["ALL_PROXY", "all_proxy"]));
        let https = parse(first(["HTTPS_PROXY", "https_proxy"])).or_else(|| all.clone());
        let http = parse(first(["HTTP_PROXY", "http_proxy"])).or(all);
        let no_proxy = first(["NO_PROXY", "no_proxy"]).map(|(_, value)| value);
        let exempt = NoProxy::parse(no_proxy.as_deref().unwrap_or(""));
        Self {
            https,
            http,
            no_proxy,
            unusable,
            exempt,
        }
    }

    /// A proxy with exemptions, as tests configure one.
    pub fn https_only(proxy: &str, no_proxy: &str) -> Self {
        Self::from_lookup(|name| match name {
            "HTTPS_PROXY" => Some(proxy.to_owned()),
            "NO_PROXY" => Some(no_proxy.to_owned()),
            _ => None,
        })
    }

    /// Whether any proxy is configured.
    pub fn is_set(&self) -> bool {
        self.https.is_some() || self.http.is_some()
    }

    /// The proxy a request to `url` goes through, as reqwest would choose it.
    pub fn for_url(&self, url: &Url) -> Option<&ProxyUrl> {
        let proxy = match url.scheme() {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        }?;
        let host = url.host_str()?;
        (!self.exempt.contains(host)).then_some(proxy)
    }

    /// The hosts of the proxies, lower-case: names a key fetch's resolver must resolve
    /// without its address rules (the operator chose them), and that a remote issuer's
    /// URLs may not name.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = [&self.https, &self.http]
            .into_iter()
            .flatten()
            .filter_map(ProxyUrl::host)
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// `value` as a proxy URL: a scheme-less value means `http://`, as reqwest reads it.
fn parse_proxy(value: &str) -> Result<Url, &'static str> {
    let value = value.trim();
    let text = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let url = Url::parse(&text).map_err(|_| "not a URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http:// and https:// proxies can be used");
    }
    if url.host().is_none() {
        return Err("no host");
    }
    Ok(url)
}

/// `NO_PROXY`, matched as hyper-util matches it: IP addresses and networks against IP
/// literals; other entries against names, as the name itself or a parent domain (a
/// leading `.` changes nothing); `*` matches every name.
#[derive(Clone, Debug, Default)]
struct NoProxy {
    networks: Vec<(IpAddr, u8)>,
    domains: Vec<String>,
}

impl NoProxy {
    fn parse(list: &str) -> Self {
        let mut exempt = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match parse_network(entry) {
                Some(network) => exempt.networks.push(network),
                None => exempt.domains.push(entry.to_ascii_lowercase()),
            }
        }
        exempt
    }

    fn contains(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self
                .networks
                .iter()
                .any(|(network, bits)| in_network(ip, *network, *bits));
        }
        let host = host.to_ascii_lowercase();
        self.domains.iter().any(|entry| {
            let bare = entry.strip_prefix('.').unwrap_or(entry);
            entry == "*"
                || host == bare
                || host
                    .strip_suffix(bare)
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

/// `10.0.0.0/8`, `fd00::/8` or a bare address (all its bits).
fn parse_network(entry: &str) -> Option<(IpAddr, u8)> {
    let (address, bits) = match entry.split_once('/') {
        Some((address, bits)) => (address, Some(bits.parse::<u8>().ok()?)),
        None => (entry, None),
    };
    let ip: IpAddr = address.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

/// The host of `url` when it is a name (not an IP literal), lower-case, without a
/// trailing dot.
pub(super) fn domain_of(url: &Url) -> Option<String> {
    match url.host() {
        Some(Host::Domain(name)) => Some(name.trim_end_matches('.').to_ascii_lowercase()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> OutboundProxy {
        OutboundProxy::from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn url(text: &str) -> Url {
        Url::parse(text).expect("test URL")
    }

    #[test]
    fn the_variables_are_read_as_reqwest_reads_them() {
        let proxy = env(&[
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            ("https_proxy", "http://ignored:1"),
            ("ALL_PROXY", "fallback.corp:8080"),
        ]);
        assert_eq!(
            proxy.https.as_ref().map(ProxyUrl::redacted).as_deref(),
            Some("http://proxy.corp:3128")
        );
        assert_eq!(
            proxy.http.as_ref().map(ProxyUrl::redacted).as_deref(),
            Some("http://fallback.corp:8080"),
            "ALL_PROXY, scheme-less, serves http"
        );
        assert_eq!(proxy.hosts(), ["fallback.corp", "proxy.corp"]);
        let cgi = env(&[("HTTPS_PROXY", "http://p:1"), ("REQUEST_METHOD", "GET")]);
        assert!(!cgi.is_set());
        let socks = env(&[("HTTPS_PROXY", "socks5://p:1080")]);
        assert!(!socks.is_set());
        assert_eq!(
            socks.unusable,
            [(
                "HTTPS_PROXY",
                "only http:// and https:// proxies can be used"
            )]
        );
    }

    #[test]
    fn credentials_never_show() {
        let proxy = env(&[("HTTPS_PROXY", "http://alice:s3cr%40t@proxy.corp:3128/")]);
        let shown = proxy.https.as_ref().expect("proxy");
        assert_eq!(shown.redacted(), "http://***@proxy.corp:3128");
        let debug = format!("{proxy:?}");
        assert!(
            !debug.contains("alice") && !debug.contains("s3cr"),
            "{debug}"
        );
        assert_eq!(
            shown.url().password(),
            Some("s3cr%40t"),
            "reqwest still gets them"
        );
    }

    #[test]
    fn no_proxy_exempts_names_their_subdomains_and_networks() {
        let proxy = env(&[
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            (
                "NO_PROXY",
                "internal.example, .corp.example,10.0.0.0/8, ::1, 192.168.1.7",
            ),
        ]);
        let proxied = |text: &str| proxy.for_url(&url(text)).is_some();
        assert!(proxied("https://token.actions.githubusercontent.com/"));
        assert!(!proxied("https://internal.example/"));
        assert!(!proxied("https://gitlab.internal.example/"));
        assert!(proxied("https://notinternal.example/"));
        assert!(!proxied("https://git.corp.example/"));
        assert!(!proxied("https://corp.example/"));
        assert!(!proxied("https://10.1.2.3/"));
        assert!(proxied("https://11.1.2.3/"));
        assert!(!proxied("https://[::1]/"));
        assert!(!proxied("https://192.168.1.7/"));
        assert!(proxied("https://192.168.1.8/"));
        assert!(
            !proxied("http://127.0.0.1/"),
            "no HTTP_PROXY, so http is direct"
        );
        let star = env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "*")]);
        assert!(star.for_url(&url("https://any.example/")).is_none());
        assert!(
            star.for_url(&url("https://1.2.3.4/")).is_some(),
            "as hyper-util: * matches names only"
        );
    }
}
