//! `allowed_outbound_hosts`, parsed and checked as Spin does: `scheme://host[:port]` with `*`
//! wildcards for the scheme, host (`*`, `*.suffix`) and port (`*`, `a..b`), CIDR ranges for IP
//! hosts, well-known default ports per scheme, and no paths. An empty list denies everything.

use std::net::IpAddr;

use anyhow::{Context, Result, bail, ensure};
use url::Host;

const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

#[derive(Debug, Clone, PartialEq)]
struct AllowedHost {
    scheme: Option<String>,
    host: HostRule,
    port: PortRule,
}

#[derive(Debug, Clone, PartialEq)]
enum HostRule {
    Any,
    /// `*.example.com` stored as `.example.com`.
    AnySubdomain(String),
    Literal(Host),
    Cidr { network: IpAddr, prefix: u8 },
}

#[derive(Debug, Clone, PartialEq)]
enum PortRule {
    Any,
    Exact(u16),
    Range(u16, u16),
}

impl AllowedHosts {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self> {
        let entries = entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref();
                AllowedHost::parse(entry).with_context(|| format!("Invalid allowed_outbound_hosts entry {entry:?}"))
            })
            .collect::<Result<_>>()?;
        Ok(Self { entries })
    }

    /// Whether a connection to `scheme://host[:port]` is allowed (`host` may be bracketed IPv6).
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let Ok(host) = Host::parse(host.trim_start_matches('[').trim_end_matches(']')) else {
            return false;
        };
        let port = port.or_else(|| well_known_port(scheme));
        self.entries.iter().any(|entry| entry.allows(scheme, &host, port))
    }

    /// Checks a URL such as `mysql://user:pw@db:3306/name` or `https://api.stripe.com/v1/...`.
    pub fn allows_url(&self, url: &str) -> bool {
        let Ok(parsed) = url::Url::parse(url) else {
            return false;
        };
        match parsed.host_str() {
            Some(host) => self.allows(parsed.scheme(), host, parsed.port()),
            None => false,
        }
    }
}

/// `http://<component>.spin.internal` → `<component>`.
pub fn service_chaining_target(host: &str) -> Option<&str> {
    let host = host.split(':').next().unwrap_or(host);
    let component = host.strip_suffix(SERVICE_CHAINING_SUFFIX)?;
    (!component.is_empty() && !component.contains('.')).then_some(component)
}

impl AllowedHost {
    fn parse(entry: &str) -> Result<Self> {
        let entry = entry.trim();
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("no scheme: use <scheme>://<host>[:<port>] with `*` wildcards ('*://*:*' allows everything)");
        };
        ensure!(!scheme.is_empty(), "empty scheme");
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_host_port(rest);
        // A '/' may only be a CIDR prefix length; anything else is a path, which Spin refuses.
        ensure!(port.is_none_or(|p| !p.contains('/')), "must not include a path");
        ensure!(!host.contains('/') || HostRule::parse(host).is_ok(), "must not include a path");
        let port = match port {
            None => match well_known_port(scheme) {
                Some(port) => PortRule::Exact(port),
                None if scheme == "*" => bail!("a port is required when the scheme is `*`"),
                None => bail!("a port is required for scheme {scheme}"),
            },
            Some("*") => PortRule::Any,
            Some(port) => match port.split_once("..") {
                Some((start, end)) => PortRule::Range(start.parse()?, end.parse()?),
                None => PortRule::Exact(port.parse().context("invalid port")?),
            },
        };
        Ok(Self {
            scheme: (scheme != "*").then(|| scheme.to_ascii_lowercase()),
            host: HostRule::parse(host)?,
            port,
        })
    }

    fn allows(&self, scheme: &str, host: &Host, port: Option<u16>) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(scheme));
        let port_ok = match (&self.port, port) {
            (PortRule::Any, _) => true,
            (PortRule::Exact(allowed), Some(port)) => *allowed == port,
            (PortRule::Range(start, end), Some(port)) => (*start..*end).contains(&port),
            (_, None) => false,
        };
        scheme_ok && port_ok && self.host.allows(host)
    }
}

fn split_host_port(rest: &str) -> (&str, Option<&str>) {
    // A bracketed IPv6 address keeps its colons.
    if rest.starts_with('[') {
        return match rest.find("]:") {
            Some(end) => (&rest[..=end], Some(&rest[end + 2..])),
            None => (rest, None),
        };
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (rest, None),
    }
}

impl HostRule {
    fn parse(host: &str) -> Result<Self> {
        if host == "*" {
            return Ok(Self::Any);
        }
        if let Some((address, prefix)) = host.split_once('/') {
            let network: IpAddr = address.parse().context("invalid CIDR address")?;
            let prefix: u8 = prefix.parse().context("invalid CIDR prefix")?;
            let max = if network.is_ipv4() { 32 } else { 128 };
            ensure!(prefix <= max, "CIDR prefix too long");
            return Ok(Self::Cidr { network, prefix });
        }
        if let Some(domain) = host.strip_prefix("*.") {
            ensure!(!domain.contains('*'), "wildcards are allowed only as prefixes");
            let Host::Domain(domain) = Host::parse(domain)? else {
                bail!("a wildcard suffix must be a domain");
            };
            return Ok(Self::AnySubdomain(format!(".{domain}")));
        }
        ensure!(!host.contains('*'), "wildcards are allowed only as subdomains");
        ensure!(host != "self" && host != "self.alt", "`self` hosts are not supported by this host");
        Ok(Self::Literal(Host::parse(host.trim_start_matches('[').trim_end_matches(']'))?))
    }

    fn allows(&self, host: &Host) -> bool {
        match (self, host) {
            (Self::Any, _) => true,
            (Self::AnySubdomain(suffix), Host::Domain(domain)) => domain.ends_with(suffix.as_str()),
            (Self::Literal(literal), host) => literal == host,
            (Self::Cidr { network, prefix }, Host::Ipv4(ip)) => cidr_contains(*network, *prefix, IpAddr::V4(*ip)),
            (Self::Cidr { network, prefix }, Host::Ipv6(ip)) => cidr_contains(*network, *prefix, IpAddr::V6(*ip)),
            _ => false,
        }
    }
}

fn cidr_contains(network: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (network, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).expect("valid entries")
    }

    #[test]
    fn empty_list_denies_everything() {
        let none = hosts(&[]);
        assert!(!none.allows_url("https://api.stripe.com/v1/customers"));
        assert!(!none.allows_url("mysql://u:p@127.0.0.1:3306/db"));
    }

    #[test]
    fn default_ports_follow_the_scheme() {
        let h = hosts(&["https://api.stripe.com", "mysql://127.0.0.1"]);
        assert!(h.allows_url("https://api.stripe.com/v1/customers"));
        assert!(!h.allows_url("http://api.stripe.com/v1/customers"), "scheme must match");
        assert!(!h.allows_url("https://api.stripe.com:8443/"), "port must match");
        assert!(h.allows_url("mysql://u:p@127.0.0.1/db"));
        assert!(h.allows_url("mysql://u:p@127.0.0.1:3306/db"));
        assert!(!h.allows_url("mysql://u:p@127.0.0.1:3307/db"));
        assert!(!h.allows_url("mysql://u:p@127.0.0.2/db"));
    }

    #[test]
    fn wildcards_and_ranges() {
        let h = hosts(&["*://*.example.com:*", "http://localhost:3000..3010", "mysql://10.0.0.0/8:3306"]);
        assert!(h.allows_url("https://api.example.com/x"));
        assert!(h.allows_url("redis://cache.example.com:6379"));
        assert!(!h.allows_url("https://example.com/x"), "*.example.com excludes the apex");
        assert!(h.allows_url("http://localhost:3005/"));
        assert!(!h.allows_url("http://localhost:3010/"), "ranges are half-open like Spin's");
        assert!(h.allows("mysql", "10.1.2.3", Some(3306)));
        assert!(!h.allows("mysql", "11.1.2.3", Some(3306)));
    }

    #[test]
    fn service_chaining_hosts() {
        let h = hosts(&["http://auth.spin.internal"]);
        assert!(h.allows_url("http://auth.spin.internal/api/v3/users/1"));
        assert!(!h.allows_url("http://customer.spin.internal/"));
        assert_eq!(service_chaining_target("auth.spin.internal"), Some("auth"));
        assert_eq!(service_chaining_target("auth.spin.internal:80"), Some("auth"));
        assert_eq!(service_chaining_target("a.b.spin.internal"), None);
        assert_eq!(service_chaining_target("example.com"), None);
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in ["*", "example.com", "https://example.com/path", "https://*example.com", "foo://example.com", "*://example.com"] {
            assert!(AllowedHosts::parse(&[bad]).is_err(), "{bad} must be refused");
        }
    }
}
