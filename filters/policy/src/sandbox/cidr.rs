//! CIDR ranges for edge mode's trusted sources, and Envoy's `source.address`.

use core::net::{IpAddr, SocketAddr};

/// An address range such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip/prefix` (or a bare IP, a single address). Host bits are ignored, as Envoy's
    /// `CidrRange` does.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0-{max}"))?,
            None => max,
        };
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range `10.0.0.0/8`: the
        // prefix counts the 96 mapping bits too. One shorter than 96 spans more than IPv4 and
        // stays an IPv6 range.
        let (addr, prefix) = match (addr, addr.to_canonical()) {
            (IpAddr::V6(_), v4 @ IpAddr::V4(_)) if prefix >= 96 => (v4, prefix.saturating_sub(96)),
            (IpAddr::V6(_), IpAddr::V4(_)) => (addr, prefix),
            (_, canonical) => (canonical, prefix),
        };
        Ok(Self { addr, prefix })
    }

    /// True when `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32u32.saturating_sub(u32::from(self.prefix)))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128u32.saturating_sub(u32::from(self.prefix)))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The IP of Envoy's `source.address` (`1.2.3.4:5678`, `[::1]:80`, or a bare address).
pub fn source_ip(address: &[u8]) -> Option<IpAddr> {
    let text = core::str::from_utf8(address).ok()?;
    text.parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| text.parse::<IpAddr>())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn ipv4_mapped_ranges_keep_their_width() {
        // Found by the cidr fuzz target: the prefix was kept at 104 for the IPv4 address.
        let c = Cidr::parse("::ffff:192.16.0.0/104").unwrap();
        assert!(c.contains("192.16.0.1".parse().unwrap()));
        assert!(c.contains("192.200.1.1".parse().unwrap()));
        assert!(!c.contains("193.16.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:192.16.9.9".parse().unwrap()));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(!c.contains(ip("fd00::1")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fdff::1")) && !v6.contains(ip("fe80::1")));
        assert!(
            Cidr::parse("10.1.2.3/8").unwrap().contains(ip("10.9.9.9")),
            "host bits ignored"
        );
        for bad in ["10.0.0.0/33", "fd00::/129", "nope/8", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn source_addresses() {
        assert_eq!(source_ip(b"127.0.0.1:5555"), Some(ip("127.0.0.1")));
        assert_eq!(source_ip(b"[::1]:80"), Some(ip("::1")));
        assert_eq!(source_ip(b"10.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(source_ip(b"\xff"), None);
        assert_eq!(source_ip(b"unix:/tmp/s"), None);
    }
}
