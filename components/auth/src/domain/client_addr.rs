//! Which address a request comes from, for the per-address login throttle and the audit log.
//!
//! Spin gives the peer in `spin-client-addr`. Behind a reverse proxy (an ingress, a load
//! balancer, customer's login proxy in a split deployment) the peer is the proxy, so every
//! client would share one address: one attacker's 100 failures would throttle everyone's logins.
//! The proxies an operator lists in `trusted_proxies` are believed about `X-Forwarded-For`: the
//! client is the rightmost address in it that is not itself a trusted proxy. Everything left of
//! that was written by the client and is never believed. Nobody is trusted by default.

use std::net::{IpAddr, SocketAddr};

/// What the audit log and the throttle record when no address is known.
pub const UNKNOWN_ADDRESS: &str = "unknown";

/// The addresses and networks (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`) whose `X-Forwarded-For`
/// is believed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustedProxies(Vec<Network>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(entry: &str) -> Option<Network> {
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let base = addr.parse::<IpAddr>().ok()?.to_canonical();
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(digits) => digits.parse::<u8>().ok().filter(|bits| *bits <= max)?,
        };
        Some(Network { base, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => same_prefix(u32::from(base).into(), u32::from(ip).into(), self.prefix, 32),
            (IpAddr::V6(base), IpAddr::V6(ip)) => same_prefix(u128::from(base), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, prefix: u8, width: u8) -> bool {
    let ignored = u32::from(width - prefix);
    a.checked_shr(ignored).unwrap_or(0) == b.checked_shr(ignored).unwrap_or(0)
}

impl TrustedProxies {
    /// Comma-separated addresses or networks; empty trusts nobody. `None` when an entry is
    /// neither (the caller names the variable).
    pub fn parse(value: &str) -> Option<TrustedProxies> {
        value
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(Network::parse)
            .collect::<Option<Vec<_>>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(ip))
    }

    /// The client behind `peer`: `peer` itself unless it is trusted; else, walking
    /// `forwarded_for` from the right, the first address that is not trusted. An entry that is
    /// not an address stops the walk at the last trusted hop (a proxy that wrote garbage is not
    /// believed past it).
    pub fn client_behind(&self, peer: IpAddr, forwarded_for: &str) -> IpAddr {
        let mut client = peer.to_canonical();
        for entry in forwarded_for.rsplit(',') {
            if !self.trusts(client) {
                break;
            }
            match parse_addr(entry) {
                Some(hop) => client = hop,
                None => break,
            }
        }
        client
    }
}

/// An address as `spin-client-addr` or `X-Forwarded-For` write it: `ip`, `ip:port` or
/// `[v6]:port`; an IPv4 address written as IPv6 (`::ffff:192.0.2.1`) is that IPv4 address.
pub fn parse_addr(value: &str) -> Option<IpAddr> {
    let value = value.trim();
    value
        .parse::<SocketAddr>()
        .map(|addr| addr.ip())
        .or_else(|_| value.parse::<IpAddr>())
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The key under which failures from `client` are counted per address: an IPv4 address as it
/// is, an IPv6 address by its /64 (one subscriber's network: anyone holding a /64 could otherwise
/// count each failure under a fresh address), anything else (`unknown`) as it is.
pub fn throttle_scope(client: &str) -> String {
    match parse_addr(client) {
        Some(IpAddr::V6(v6)) => {
            let network = u128::from(v6) & !(u128::MAX >> 64);
            format!("{}/64", std::net::Ipv6Addr::from(network))
        }
        Some(IpAddr::V4(v4)) => v4.to_string(),
        None => client.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ip(value: &str) -> IpAddr {
        value.parse().expect("test address")
    }

    fn proxies(value: &str) -> TrustedProxies {
        TrustedProxies::parse(value).expect("test proxies")
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_ipv4_ones_alone() {
        assert_eq!(throttle_scope("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
        assert_eq!(throttle_scope("2001:db8:1:2::ffff"), throttle_scope("2001:db8:1:2:1:2:3:4"));
        assert_ne!(throttle_scope("2001:db8:1:2::1"), throttle_scope("2001:db8:1:3::1"));
        assert_eq!(throttle_scope("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(throttle_scope("192.0.2.7"), "192.0.2.7");
        assert_eq!(throttle_scope("unknown"), "unknown");
    }

    #[test]
    fn nobody_is_trusted_by_default() {
        let none = proxies("");
        assert_eq!(none.client_behind(ip("10.0.0.5"), "203.0.113.7"), ip("10.0.0.5"));
    }

    #[test]
    fn a_trusted_peer_is_believed_about_the_rightmost_hop_only() {
        let ingress = proxies("10.0.0.0/8, 127.0.0.1");
        assert_eq!(ingress.client_behind(ip("10.1.2.3"), "203.0.113.7"), ip("203.0.113.7"));
        // The client wrote the left part; the ingress appended what it saw.
        assert_eq!(ingress.client_behind(ip("10.1.2.3"), "198.51.100.1, 203.0.113.7"), ip("203.0.113.7"));
        // Two trusted hops (customer's login proxy behind the ingress).
        assert_eq!(ingress.client_behind(ip("127.0.0.1"), "203.0.113.7, 10.9.9.9"), ip("203.0.113.7"));
        // Ports, brackets and IPv4-mapped IPv6 are the same addresses.
        assert_eq!(ingress.client_behind(ip("::ffff:10.1.2.3"), "[2001:db8::1]:4711"), ip("2001:db8::1"));
        assert_eq!(ingress.client_behind(ip("10.1.2.3"), "203.0.113.7:5000"), ip("203.0.113.7"));
        // Every hop trusted: the leftmost.
        assert_eq!(ingress.client_behind(ip("10.1.2.3"), "10.4.4.4, 10.5.5.5"), ip("10.4.4.4"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let ingress = proxies("10.0.0.0/8");
        assert_eq!(ingress.client_behind(ip("10.1.2.3"), "nonsense"), ip("10.1.2.3"));
        assert_eq!(ingress.client_behind(ip("10.1.2.3"), "203.0.113.7, "), ip("10.1.2.3"));
        assert_eq!(ingress.client_behind(ip("10.1.2.3"), "nonsense, 10.2.2.2"), ip("10.2.2.2"));
    }

    #[test]
    fn an_untrusted_peer_is_not_believed() {
        let ingress = proxies("10.0.0.0/8");
        assert_eq!(ingress.client_behind(ip("192.0.2.9"), "10.1.1.1"), ip("192.0.2.9"));
        assert_eq!(ingress.client_behind(ip("11.0.0.1"), "203.0.113.7"), ip("11.0.0.1"));
    }

    #[test]
    fn networks_parse_strictly() {
        assert!(TrustedProxies::parse("10.0.0.0/8,fd00::/8, 192.0.2.7 ,::1").is_some());
        assert!(TrustedProxies::parse("0.0.0.0/0").is_some());
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0/8", "localhost", "10.0.0.0/", "10.0.0.0/x", "*"] {
            assert!(TrustedProxies::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(TrustedProxies::parse("").expect("empty"), TrustedProxies::default());
    }

    #[test]
    fn prefixes_match_by_bits() {
        let net = proxies("192.0.2.128/25");
        assert!(net.trusts(ip("192.0.2.200")));
        assert!(!net.trusts(ip("192.0.2.127")));
        assert!(proxies("0.0.0.0/0").trusts(ip("203.0.113.7")));
        assert!(!proxies("0.0.0.0/0").trusts(ip("2001:db8::1")), "an IPv4 network holds no IPv6 address");
        assert!(proxies("2001:db8::/32").trusts(ip("2001:db8:ffff::1")));
        assert!(!proxies("2001:db8::/32").trusts(ip("2001:db9::1")));
    }

    proptest! {
        /// Whatever a client writes into X-Forwarded-For, with one trusted proxy in front the
        /// client found is the address that proxy appended.
        #[test]
        fn the_client_cannot_choose_its_address(
            forged in proptest::collection::vec(any::<[u8; 4]>(), 0..5),
            real in any::<[u8; 4]>(),
        ) {
            let ingress = proxies("10.0.0.0/8");
            let real = IpAddr::from(real);
            prop_assume!(!ingress.trusts(real));
            let mut chain: Vec<String> = forged.iter().map(|octets| IpAddr::from(*octets).to_string()).collect();
            chain.push(real.to_string());
            prop_assert_eq!(ingress.client_behind(ip("10.0.0.1"), &chain.join(", ")), real);
        }

        #[test]
        fn any_header_never_panics(header in ".{0,200}", peer in any::<[u8; 16]>()) {
            let all = proxies("0.0.0.0/0, ::/0");
            let _ = all.client_behind(IpAddr::from(peer), &header);
            let _ = parse_addr(&header);
        }
    }
}
