//! IP addresses and CIDRs as policies (and the agent's address flags) write them: the one parser
//! behind L4Policy `from`, Backend `ip.address`, `--trusted-proxy` and `--never-ban`.
//!
//! Strict on purpose, because the same text must mean the same address to every reader of the
//! policy (people, `ip`, the kernel, `inet_aton`, other parsers):
//! - IPv4 in four decimal parts without leading zeros: `010.1.1.1` is 10.1.1.1 to one parser and
//!   8.1.1.1 to another (`inet_aton` reads a leading 0 as octal); the shorthand forms `10.1`,
//!   `0x0a.1.1.1` and `167837953` are refused for the same reason.
//! - Prefix lengths in decimal without leading zeros (`/8`, not `/08`).
//! - No IPv4-mapped IPv6 (`::ffff:1.2.3.4`): IPv4 packets carry IPv4 addresses, so such a CIDR
//!   would never match the traffic it names; nor the deprecated IPv4-compatible form
//!   (`::1.2.3.4`, RFC 4291 section 2.5.5.1) for the same reason.
//! - CIDRs with host bits set (`10.0.0.1/24`) are refused: the typo would mean the whole /24.
//!
//! Each error is a complete sentence that quotes the value and, when the value has an obvious
//! canonical form, shows it.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a text is not an address in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AddrProblem {
    /// Dotted decimal with a leading zero in a part; the decimal reading, when every part is
    /// at most 255.
    LeadingZero {
        part: String,
        decimal: Option<Ipv4Addr>,
    },
    /// `::ffff:a.b.c.d`.
    Mapped(Ipv4Addr),
    /// `::a.b.c.d`.
    Compatible(Ipv4Addr),
    /// An `inet_aton` shorthand (fewer than four parts, or hexadecimal parts).
    Shorthand,
    /// Anything else.
    Invalid,
}

/// Parses one address written alone (no prefix length).
fn address(s: &str) -> Result<IpAddr, AddrProblem> {
    match s.parse::<IpAddr>() {
        // The standard library reads exactly four decimal IPv4 parts and refuses leading zeros.
        Ok(IpAddr::V4(a)) => Ok(IpAddr::V4(a)),
        Ok(IpAddr::V6(a)) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return Err(AddrProblem::Mapped(v4));
            }
            // Only the dotted spelling is taken for an IPv4-compatible address: `::1` and `::`
            // are IPv6 (loopback, unspecified), and `::2` is not meant as 0.0.0.2 by anyone.
            let [a0, a1, a2, a3, a4, a5, _, _] = a.segments();
            if s.contains('.') && [a0, a1, a2, a3, a4, a5] == [0; 6] {
                let [.., b12, b13, b14, b15] = a.octets();
                return Err(AddrProblem::Compatible(Ipv4Addr::new(b12, b13, b14, b15)));
            }
            Ok(IpAddr::V6(a))
        }
        Err(_) => Err(diagnose_v4(s)),
    }
}

/// Why a text that the standard parser refuses is not IPv4: leading zeros, a shorthand, or
/// neither.
fn diagnose_v4(s: &str) -> AddrProblem {
    let parts: Vec<&str> = s.split('.').collect();
    let decimal =
        |p: &&str| !p.is_empty() && p.len() <= 12 && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 4 && parts.iter().all(decimal) {
        let Some(part) = parts.iter().find(|p| p.len() > 1 && p.starts_with('0')) else {
            return AddrProblem::Invalid; // a part over 255
        };
        let values: Option<Vec<u8>> = parts.iter().map(|p| p.parse::<u8>().ok()).collect();
        return AddrProblem::LeadingZero {
            part: (*part).to_owned(),
            decimal: values.map(|v| Ipv4Addr::new(v[0], v[1], v[2], v[3])),
        };
    }
    // What `inet_aton` takes besides dotted decimal: 1 to 4 parts, each decimal, octal (0...)
    // or hexadecimal (0x...).
    let aton_part = |p: &&str| {
        let hex = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X"));
        match hex {
            Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
            None => decimal(p),
        }
    };
    if (1..=4).contains(&parts.len()) && parts.iter().all(aton_part) {
        return AddrProblem::Shorthand;
    }
    AddrProblem::Invalid
}

/// The message for `problem` about `text` (the whole value as written); `prefix` is the prefix
/// length written after the address, if any, for the canonical form shown.
fn message(text: &str, problem: &AddrProblem, prefix: Option<u8>) -> String {
    let with_prefix = |a: &dyn fmt::Display, len: Option<u8>| match len {
        Some(len) => format!("{a}/{len}"),
        None => a.to_string(),
    };
    match problem {
        AddrProblem::LeadingZero { part, decimal } => {
            let mut m = format!(
                "\"{text}\" has a leading zero in \"{part}\", which some parsers read as octal and \
                 others as decimal"
            );
            match decimal {
                Some(a) => m.push_str(&format!(
                    "; write it in decimal without leading zeros: {}",
                    with_prefix(a, prefix)
                )),
                None => m.push_str("; write each part in decimal (0-255) without leading zeros"),
            }
            m
        }
        AddrProblem::Mapped(v4) => format!(
            "\"{text}\" is an IPv4-mapped IPv6 address, which never matches IPv4 traffic; write {}",
            with_prefix(v4, prefix.map(|p| p.saturating_sub(96)))
        ),
        AddrProblem::Compatible(v4) => format!(
            "\"{text}\" is an IPv4-compatible IPv6 address (deprecated, RFC 4291 section \
             2.5.5.1), which never matches IPv4 traffic; write {}",
            with_prefix(v4, prefix.map(|p| p.saturating_sub(96)))
        ),
        AddrProblem::Shorthand => format!(
            "\"{text}\" is a shorthand IPv4 form that parsers read differently; write all four \
             parts in decimal, like 192.0.2.7"
        ),
        AddrProblem::Invalid if prefix.is_some() || text.contains('/') => {
            format!("\"{text}\" is not an IPv4 or IPv6 CIDR (like 203.0.113.0/24 or 2001:db8::/32)")
        }
        AddrProblem::Invalid => {
            format!("\"{text}\" is not an IPv4 or IPv6 address (like 192.0.2.7 or 2001:db8::7)")
        }
    }
}

/// An IPv4 or IPv6 address in canonical form (see the module documentation). The error is a
/// sentence that quotes `s`.
pub fn parse_addr(s: &str) -> Result<IpAddr, String> {
    address(s).map_err(|p| message(s, &p, None))
}

/// A CIDR (`203.0.113.0/24`, `2001:db8::/32`) or a bare address (one host: /32 or /128), in
/// canonical form and without host bits (see the module documentation). The error is a
/// sentence that quotes `s`.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let (addr_text, len_text) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let len = match len_text {
        None => None,
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u8 = l.parse().map_err(|_| {
                format!("\"{s}\": the prefix length \"{l}\" is out of range (0-32 for IPv4, 0-128 for IPv6)")
            })?;
            if l.len() > 1 && l.starts_with('0') {
                return Err(format!(
                    "\"{s}\" has a leading zero in the prefix length; write {addr_text}/{n}"
                ));
            }
            Some(n)
        }
        Some(_) => {
            return Err(format!(
                "\"{s}\" is not an IPv4 or IPv6 CIDR (like 203.0.113.0/24 or 2001:db8::/32)"
            ))
        }
    };
    let addr = address(addr_text).map_err(|p| message(s, &p, len))?;
    let net = match (addr, len) {
        (IpAddr::V4(a), None) => IpNet::V4(Ipv4Net::from(a)),
        (IpAddr::V6(a), None) => IpNet::V6(Ipv6Net::from(a)),
        (IpAddr::V4(a), Some(n)) => IpNet::V4(Ipv4Net::new(a, n).map_err(|_| {
            format!("\"{s}\": the prefix length {n} is over 32, the most for IPv4")
        })?),
        (IpAddr::V6(a), Some(n)) => IpNet::V6(Ipv6Net::new(a, n).map_err(|_| {
            format!("\"{s}\": the prefix length {n} is over 128, the most for IPv6")
        })?),
    };
    if net.trunc() != net {
        return Err(format!(
            "\"{s}\" has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// True when `host` ends in a number (its last label is all digits, or `0x` and hex digits):
/// resolvers and URL parsers (WHATWG URL, `inet_aton`) read such a name as an IPv4 address,
/// so `010.1.1.1` given as a DNS name would reach 8.1.1.1.
pub fn ends_in_a_number(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or_default();
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn canonical_addresses_and_cidrs_are_read() {
        assert_eq!(
            parse_addr("192.0.2.7").unwrap(),
            IpAddr::from([192, 0, 2, 7])
        );
        assert_eq!(
            parse_addr("2001:db8::7").unwrap().to_string(),
            "2001:db8::7"
        );
        assert_eq!(parse_addr("::1").unwrap(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(parse_addr("::").unwrap(), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        for (text, net) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("::/0", "::/0"),
            ("fe80::/10", "fe80::/10"),
            // A prefix shorter than 96 that covers the mapped range is ordinary IPv6.
            ("::/64", "::/64"),
        ] {
            assert_eq!(parse_cidr(text).unwrap().to_string(), net, "{text}");
        }
    }

    #[test]
    fn leading_zeros_are_refused_with_the_decimal_form() {
        assert_eq!(
            parse_cidr("010.1.1.1/32").unwrap_err(),
            "\"010.1.1.1/32\" has a leading zero in \"010\", which some parsers read as octal and \
             others as decimal; write it in decimal without leading zeros: 10.1.1.1/32"
        );
        assert!(parse_addr("10.01.1.1")
            .unwrap_err()
            .ends_with("write it in decimal without leading zeros: 10.1.1.1"));
        // No canonical form when a part is over 255 once read in decimal.
        let e = parse_addr("0300.1.1.1").unwrap_err();
        assert!(e.contains("\"0300\"") && e.contains("0-255"), "{e}");
        assert_eq!(
            parse_cidr("10.0.0.0/08").unwrap_err(),
            "\"10.0.0.0/08\" has a leading zero in the prefix length; write 10.0.0.0/8"
        );
        assert!(parse_cidr("0.0.0.0/0").is_ok() && parse_cidr("10.0.0.0/0").is_err());
    }

    #[test]
    fn ipv4_mapped_and_compatible_ipv6_are_refused_with_the_ipv4_form() {
        assert_eq!(
            parse_cidr("::ffff:1.2.3.4/128").unwrap_err(),
            "\"::ffff:1.2.3.4/128\" is an IPv4-mapped IPv6 address, which never matches IPv4 \
             traffic; write 1.2.3.4/32"
        );
        assert!(parse_cidr("::ffff:10.0.0.0/104")
            .unwrap_err()
            .ends_with("write 10.0.0.0/8"));
        // The hexadecimal spelling is the same address.
        assert!(parse_cidr("::ffff:102:304")
            .unwrap_err()
            .ends_with("write 1.2.3.4"));
        assert!(parse_addr("::FFFF:1.2.3.4")
            .unwrap_err()
            .ends_with("write 1.2.3.4"));
        assert!(parse_cidr("::1.2.3.4/128")
            .unwrap_err()
            .ends_with("write 1.2.3.4/32"));
    }

    #[test]
    fn shorthand_ipv4_forms_are_refused() {
        for s in ["10.1", "167837953", "0x0a.1.1.1", "10.1.1", "0x7f000001"] {
            let e = parse_addr(s).unwrap_err();
            assert!(e.contains("shorthand"), "{s}: {e}");
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        for s in [
            "",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0.0/8/8",
            "1.2.3.4.5",
            "fe80::1%eth0",
            "10.0.0.0/1000",
            "[::1]",
            "::ffff:010.1.1.1",
        ] {
            assert!(parse_cidr(s).is_err(), "{s:?} was accepted");
        }
        assert_eq!(
            parse_cidr("10.0.0.1/24").unwrap_err(),
            "\"10.0.0.1/24\" has host bits set; did you mean 10.0.0.0/24?"
        );
    }

    #[test]
    fn names_that_end_in_a_number_are_read_as_addresses() {
        for s in [
            "010.1.1.1",
            "1.2.3",
            "example.0x1f",
            "example.123",
            "1",
            "a.0x",
            "x.9.",
        ] {
            assert!(ends_in_a_number(s), "{s}");
        }
        for s in ["example.com", "1.example", "0xg", "a.b0", "a.0xz"] {
            assert!(!ends_in_a_number(s), "{s}");
        }
    }
}
