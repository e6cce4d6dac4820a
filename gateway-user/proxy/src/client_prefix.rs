//! Which network a client address counts as, for `key: clientIP` limits and `banOnAbuse`: one
//! IPv6 end site usually holds a whole /64 and can rotate through its addresses at will, so
//! counting per /128 would let one client through every limit and past every ban.
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The network of `v4` (IPv4) or `v6` (IPv6) leading bits that holds `client` (IPv4-mapped
/// IPv6 addresses count as IPv4). Link-local IPv6 addresses (fe80::/10) stay whole: every
/// neighbour on a link shares fe80::/64, so grouping them would lump unrelated hosts together
/// (and a ban of the prefix would drop every neighbour's neighbour discovery).
pub fn client_prefix(client: IpAddr, v4: u8, v6: u8) -> IpNet {
    match client.to_canonical() {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, v4.min(32)).map_or(a.into(), |n| n.trunc())),
        IpAddr::V6(a) if a.is_unicast_link_local() => IpNet::V6(a.into()),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, v6.min(128)).map_or(a.into(), |n| n.trunc())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &str, v4: u8, v6: u8) -> String {
        client_prefix(a.parse().unwrap(), v4, v6).to_string()
    }

    #[test]
    fn ipv6_clients_count_as_their_prefix_and_ipv4_as_configured() {
        assert_eq!(p("2001:db8:1:2:aaaa::1", 32, 64), "2001:db8:1:2::/64");
        assert_eq!(
            p("2001:db8:1:2:aaaa::1", 32, 128),
            "2001:db8:1:2:aaaa::1/128"
        );
        assert_eq!(p("2001:db8:1:2:aaaa::1", 32, 48), "2001:db8:1::/48");
        assert_eq!(p("192.0.2.77", 32, 64), "192.0.2.77/32");
        assert_eq!(p("192.0.2.77", 24, 64), "192.0.2.0/24");
        assert_eq!(p("::ffff:192.0.2.77", 32, 64), "192.0.2.77/32");
        assert_eq!(p("2001:db8::1", 32, 0), "::/0");
    }

    #[test]
    fn link_local_clients_stay_whole() {
        assert_eq!(p("fe80::1:2:3:4", 32, 64), "fe80::1:2:3:4/128");
        assert_eq!(p("fe80::1:2:3:5", 32, 64), "fe80::1:2:3:5/128");
    }
}
