//! The request's host, as RFC 9112 section 3.2 wants it checked before anything else: one
//! `Host` line, a valid `uri-host [":" port]`, present in HTTP/1.1; no userinfo in the target;
//! in HTTP/2, no `Host` naming another authority than `:authority`. The router answers 400 when
//! [`host_problem`] says why (and closes an HTTP/1 connection, as after hyper's own 400s), and
//! also when [`h2_field_problem`] finds an HTTP/2 field value RFC 9113 calls malformed.
use http::header;
use http::{Request, Version};

use crate::router::normalise_host;

/// Why the request's host information is refused with 400, if it is:
/// - more than one `Host` line, or a `Host` value that is not `uri-host [":" port]` (RFC 9112
///   section 3.2: "MUST respond with a 400");
/// - an HTTP/1.1 request without `Host`, even in absolute form (section 3.2: a client MUST send
///   it, the server MUST answer 400);
/// - userinfo in the request target (RFC 9110 section 4.2.4: "treat its presence as an error");
/// - a target (absolute form, or HTTP/2's `:scheme`) of another scheme than `http` or `https`:
///   the gateway answers for those two only (RFC 9110 section 7.4), so it neither routes such
///   a request as if it were one of them nor passes it on (nginx answers 400 too);
/// - in HTTP/2, a `Host` that names another authority than `:authority` (RFC 9113 section
///   8.3.1: "SHOULD treat a request as malformed").
///
/// An HTTP/1.1 absolute-form target whose authority differs from `Host` is not refused: RFC
/// 9112 section 3.2.2 says the server MUST ignore `Host` then, and [`crate::router::request_host`] does (the
/// request is routed by, and the backend is sent, the target's authority).
pub fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    let mut lines = req.headers().get_all(header::HOST).iter();
    let host = lines.next();
    if lines.next().is_some() {
        return Some("more than one Host header");
    }
    let host = match host.map(|h| parse_host(h.as_bytes())) {
        Some(None) => return Some("the Host header is not a valid host[:port]"),
        Some(parsed) => parsed,
        None => None,
    };
    if req
        .uri()
        .scheme_str()
        .is_some_and(|s| !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https"))
    {
        return Some("the request target's scheme is not http or https");
    }
    let authority = req.uri().authority();
    if authority.is_some_and(|a| a.as_str().contains('@')) {
        return Some("userinfo (user@) in the request target is not allowed");
    }
    // The same rule as for Host: the `http` crate takes a port past 65535 (`x:99999`) in an
    // HTTP/2 `:authority` or an absolute-form target, which would be forwarded as the Host.
    if authority.is_some_and(|a| parse_host(a.as_str().as_bytes()).is_none()) {
        return Some("the request target's authority is not a valid host[:port]");
    }
    match (req.version(), authority, host) {
        (Version::HTTP_11, _, None) => Some("an HTTP/1.1 request needs a Host header"),
        (Version::HTTP_2, Some(a), Some((name, port))) => {
            let default = match req.uri().scheme_str() {
                Some("https") => 443,
                _ => 80,
            };
            let same = normalise_host(a.host()) == normalise_host(name)
                && a.port_u16().unwrap_or(default) == port.unwrap_or(default);
            (!same).then_some("the Host header names another authority than :authority")
        }
        _ => None,
    }
}

/// Why an HTTP/2 request's fields are refused with 400, if they are: a field value that starts
/// or ends with a space or a tab (RFC 9113 section 8.2.1: a field value "MUST NOT start or end
/// with an ASCII whitespace character"; such a request is malformed, and an intermediary MUST
/// NOT forward it, section 8.1.1). `h2` passes such values on; hyper's HTTP/1.1 parser trims
/// them as optional whitespace, so HTTP/1.1 requests never hold one.
pub fn h2_field_problem<B>(req: &Request<B>) -> Option<&'static str> {
    if req.version() != Version::HTTP_2 {
        return None;
    }
    let padded = |v: &[u8]| {
        matches!(v.first(), Some(b' ' | b'\t')) || matches!(v.last(), Some(b' ' | b'\t'))
    };
    req.headers()
        .values()
        .any(|v| padded(v.as_bytes()))
        .then_some("a field value starts or ends with whitespace (RFC 9113 section 8.2.1)")
}

/// `uri-host [":" port]` (RFC 9110 section 7.2, RFC 3986 section 3.2.2): a bracketed IPv6
/// address, or a reg-name (which covers IPv4), and an optional decimal port up to 65535 (an
/// empty port is the default one). Returns the host as written and the port.
fn parse_host(value: &[u8]) -> Option<(&str, Option<u16>)> {
    let text = std::str::from_utf8(value).ok()?;
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']')?;
        rest[..end].parse::<std::net::Ipv6Addr>().ok()?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        (&text[..end + 2], port)
    } else {
        let (name, port) = match text.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (text, None),
        };
        // unreserved / sub-delims / pct-encoded
        let bytes = name.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if bytes
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                {
                    i += 3
                }
                b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => i += 1,
                _ => return None,
            }
        }
        (name, port)
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
        Some(_) => return None,
    };
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, hosts: &[&[u8]]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, http::HeaderValue::from_bytes(h).unwrap());
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_values_are_uri_host_and_an_optional_port() {
        for ok in [
            "a.example",
            "a.example:8080",
            "a.example:",
            "[2001:db8::1]",
            "[::1]:443",
            "10.0.0.1",
            "a%41b",
            "",
            "xn--bcher-kva.example",
        ] {
            assert!(parse_host(ok.as_bytes()).is_some(), "{ok:?}");
        }
        for bad in [
            "a.example:65536",
            "a.example:x",
            "a:1:2",
            "[::1",
            "[a.example]",
            "[::1]x",
            "u@a",
            "a b",
            "a/b",
            "a%4",
            "a%zz",
            "é.example",
            "[::1]:-1",
        ] {
            assert!(parse_host(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert_eq!(parse_host(b"[::1]:80"), Some(("[::1]", Some(80))));
    }

    #[test]
    fn the_rfc_9112_host_rules_hold() {
        let v11 = Version::HTTP_11;
        assert_eq!(host_problem(&req(v11, "/", &[b"a"])), None);
        assert!(host_problem(&req(v11, "/", &[b"a", b"a"])).is_some());
        assert!(host_problem(&req(v11, "/", &[])).is_some());
        assert!(host_problem(&req(v11, "http://a/", &[])).is_some());
        assert_eq!(host_problem(&req(Version::HTTP_10, "/", &[])), None);
        assert!(host_problem(&req(Version::HTTP_10, "/", &[b"a", b"b"])).is_some());
        // Absolute form: Host is ignored (RFC 9112 section 3.2.2), even when it differs.
        assert_eq!(host_problem(&req(v11, "http://a/", &[b"b"])), None);
        assert!(host_problem(&req(v11, "http://u@a/", &[b"a"])).is_some());
        // Schemes other than http and https are not served.
        assert_eq!(host_problem(&req(v11, "HTTPS://a/", &[b"a"])), None);
        for other in ["ftp://a/", "ws://a/", "h://a/", "httpx://a/"] {
            assert!(host_problem(&req(v11, other, &[b"a"])).is_some(), "{other}");
            assert!(
                host_problem(&req(Version::HTTP_2, other, &[])).is_some(),
                "{other}"
            );
        }
        // HTTP/2: Host must agree with :authority, default ports included.
        let v2 = Version::HTTP_2;
        assert_eq!(host_problem(&req(v2, "http://a/", &[])), None);
        assert_eq!(host_problem(&req(v2, "http://a/", &[b"A:80"])), None);
        assert_eq!(host_problem(&req(v2, "https://a/", &[b"a:443"])), None);
        assert!(host_problem(&req(v2, "https://a/", &[b"a:80"])).is_some());
        assert!(host_problem(&req(v2, "http://a/", &[b"b"])).is_some());
        // The authority of the target is held to Host's rules: no port past 65535.
        assert!(host_problem(&req(v2, "http://x:99999/", &[])).is_some());
        assert!(host_problem(&req(v11, "http://y:99999/a", &[b"y"])).is_some());
        assert_eq!(host_problem(&req(v2, "http://x:8080/", &[])), None);
        assert_eq!(host_problem(&req(v2, "http://[::1]:8080/", &[])), None);
    }
}
