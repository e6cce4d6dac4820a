//! What one ban covers: an IPv4 address, or an IPv6 prefix (a /128 being one address).
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Serialize, Serializer};

/// A banned source: one IPv4 address (IPv4 bans are per address: an IPv4 client cannot rotate
/// through addresses the way an IPv6 end site can), or an IPv6 prefix. The network is always
/// truncated to its prefix length. Shown as the bare address for one host, as a CIDR otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BanTarget(IpNet);

/// Why text is not a [`BanTarget`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanTargetError {
    /// Neither an address nor a CIDR.
    #[error("\"{0}\" is neither an IP address nor a CIDR (like 192.0.2.7, 2001:db8::7 or 2001:db8:1:2::/64)")]
    Syntax(String),
    /// An IPv4 prefix shorter than /32.
    #[error("\"{0}\": IPv4 bans are per address (/32); only IPv6 bans can be prefixes")]
    Ipv4Prefix(String),
    /// Host bits set after the prefix.
    #[error("\"{0}\" has bits set after its prefix length; did you mean {1}?")]
    HostBits(String, String),
}

impl BanTarget {
    /// One address (an IPv4-mapped IPv6 address is its IPv4 address).
    pub fn host(address: IpAddr) -> BanTarget {
        BanTarget(IpNet::from(address.to_canonical()))
    }

    /// The IPv6 prefix of `v6_prefix` bits (at most 128) that contains `address`, or
    /// `address` itself when it is IPv4.
    pub fn containing(address: IpAddr, v6_prefix: u8) -> BanTarget {
        match address.to_canonical() {
            IpAddr::V4(a) => BanTarget::host(IpAddr::V4(a)),
            IpAddr::V6(a) => {
                let net = Ipv6Net::new(a, v6_prefix.min(128)).unwrap_or_else(|_| a.into());
                BanTarget(IpNet::V6(net.trunc()))
            }
        }
    }

    /// `net` as a ban target: an IPv4 network must be one address.
    pub fn from_net(net: IpNet) -> Result<BanTarget, BanTargetError> {
        match net {
            IpNet::V4(n) if n.prefix_len() != 32 => {
                Err(BanTargetError::Ipv4Prefix(net.to_string()))
            }
            IpNet::V4(n) => Ok(BanTarget::host(IpAddr::V4(n.addr()))),
            IpNet::V6(n) if n.trunc() != n => Err(BanTargetError::HostBits(
                n.to_string(),
                n.trunc().to_string(),
            )),
            IpNet::V6(n) => {
                // A /128 of an IPv4-mapped address is that IPv4 address.
                if n.prefix_len() == 128 {
                    Ok(BanTarget::host(IpAddr::V6(n.addr())))
                } else {
                    Ok(BanTarget(net))
                }
            }
        }
    }

    /// The network.
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The prefix length (32 for IPv4).
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// True for IPv6.
    pub fn is_v6(&self) -> bool {
        matches!(self.0, IpNet::V6(_))
    }

    /// True when the ban covers one address.
    pub fn is_host(&self) -> bool {
        self.0.prefix_len() == self.0.max_prefix_len()
    }

    /// True when `address` is inside.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(&address.to_canonical())
    }

    /// True when `other` is inside and not the same target.
    pub fn strictly_contains(&self, other: &BanTarget) -> bool {
        *self != *other && self.0.contains(&other.0)
    }

    /// The IPv6 network truncated to `len` bits (None for IPv4, or when `len` is longer).
    pub fn truncated(&self, len: u8) -> Option<BanTarget> {
        match self.0 {
            IpNet::V6(n) if len <= n.prefix_len() => Ipv6Net::new(n.network(), len)
                .ok()
                .map(|t| BanTarget(IpNet::V6(t.trunc()))),
            _ => None,
        }
    }

    /// The first and last targets that sort inside this one (for a range over an ordered map:
    /// networks order by address, then prefix length).
    pub fn span(&self) -> (BanTarget, BanTarget) {
        match self.0 {
            IpNet::V4(_) => (*self, *self),
            IpNet::V6(n) => (
                *self,
                BanTarget(IpNet::V6(Ipv6Net::new(n.broadcast(), 128).unwrap_or(n))),
            ),
        }
    }

    /// The IPv4 address (None for IPv6).
    pub fn v4(&self) -> Option<Ipv4Addr> {
        match self.0 {
            IpNet::V4(n) => Some(n.addr()),
            IpNet::V6(_) => None,
        }
    }

    /// The IPv6 network address (None for IPv4).
    pub fn v6(&self) -> Option<Ipv6Addr> {
        match self.0 {
            IpNet::V6(n) => Some(n.network()),
            IpNet::V4(_) => None,
        }
    }
}

impl From<Ipv4Addr> for BanTarget {
    fn from(a: Ipv4Addr) -> Self {
        BanTarget(IpNet::V4(Ipv4Net::from(a)))
    }
}

impl fmt::Display for BanTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl FromStr for BanTarget {
    type Err = BanTargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(a) = s.parse::<IpAddr>() {
            return Ok(BanTarget::host(a));
        }
        let net: IpNet = s
            .parse()
            .map_err(|_| BanTargetError::Syntax(s.to_owned()))?;
        BanTarget::from_net(net)
    }
}

impl Serialize for BanTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> BanTarget {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn hosts_show_as_addresses_and_prefixes_as_cidrs() {
        assert_eq!(t("192.0.2.7").to_string(), "192.0.2.7");
        assert_eq!(t("192.0.2.7/32").to_string(), "192.0.2.7");
        assert_eq!(t("::ffff:192.0.2.7").to_string(), "192.0.2.7");
        assert_eq!(t("2001:db8::7").to_string(), "2001:db8::7");
        assert_eq!(t("2001:db8::7/128").to_string(), "2001:db8::7");
        assert_eq!(t("2001:db8:1:2::/64").to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            serde_json::to_string(&t("2001:db8:1:2::/64")).unwrap(),
            "\"2001:db8:1:2::/64\""
        );
    }

    #[test]
    fn ipv4_prefixes_and_host_bits_are_refused() {
        assert!(matches!(
            "192.0.2.0/24".parse::<BanTarget>(),
            Err(BanTargetError::Ipv4Prefix(_))
        ));
        let e = "2001:db8::1/64".parse::<BanTarget>().unwrap_err();
        assert!(e.to_string().contains("2001:db8::/64"), "{e}");
        assert!(matches!(
            "nonsense".parse::<BanTarget>(),
            Err(BanTargetError::Syntax(_))
        ));
    }

    #[test]
    fn containing_truncates_ipv6_and_keeps_ipv4_whole() {
        let a: IpAddr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap();
        assert_eq!(BanTarget::containing(a, 64), t("2001:db8:1:2::/64"));
        assert_eq!(
            BanTarget::containing(a, 128),
            t("2001:db8:1:2:aaaa:bbbb:cccc:dddd")
        );
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(BanTarget::containing(v4, 64), t("192.0.2.7"));
        let p = t("2001:db8:1:2::/64");
        assert!(p.contains(a));
        assert!(!p.contains("2001:db8:1:3::1".parse().unwrap()));
        assert!(p.strictly_contains(&t("2001:db8:1:2::9")));
        assert!(!p.strictly_contains(&p));
        assert_eq!(t("2001:db8:1:2::9").truncated(64), Some(p));
        let (lo, hi) = p.span();
        assert!(lo <= t("2001:db8:1:2::9") && t("2001:db8:1:2::9") <= hi);
        assert!(t("2001:db8:1:3::") > hi);
    }
}
