//! Client identity and the headers a proxy owns.
//!
//! - **Client address.** The socket peer, unless the peer is a trusted proxy
//!   (`--trusted-proxy CIDR`): then `X-Forwarded-For` is read from the right, skipping trusted
//!   addresses, and the first untrusted address is the client (all trusted: the leftmost).
//!   An entry that is not an address stops the walk at the hop that sent it.
//! - **Headers for the backend.** `X-Forwarded-For` gets the peer appended when the peer is
//!   trusted, and is *replaced* by the peer otherwise (so a client cannot plant an address a
//!   backend would believe); `X-Forwarded-Proto` and `X-Forwarded-Host` are kept from a trusted
//!   peer and set (`http`, the request's Host) otherwise; `Forwarded` (RFC 7239) from an
//!   untrusted peer is removed.
//! - **Hop-by-hop headers** (RFC 9110 section 7.6.1) are never forwarded, in either direction:
//!   `Connection` and every header it names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`,
//!   `Upgrade`, `HTTP2-Settings` (RFC 9113 3.2.1; a client's h2c upgrade is never passed on,
//!   whether or not its `Connection` names it), and `Proxy-*` but `Proxy-Status` (RFC 9209: an
//!   end-to-end response field each intermediary adds to). Upgrade requests get their
//!   `Connection` and `Upgrade` back from [`crate::upgrade`]. The fields the proxy sets itself
//!   before the strip (the authenticated consumer, claim headers) are not the client's
//!   connection options, whatever its `Connection` names ([`strip_hop_by_hop_keeping`]).
//! - **Trailers** from a backend lose the hop-by-hop fields and those a trailer may not carry
//!   ([`strip_trailers`]).
//! - **Cookie**: several `Cookie` fields (as an HTTP/2 client may send) reach the backend as one,
//!   joined with `; ` (RFC 9113 section 8.2.3; [`join_cookies`]).
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// IPv4-mapped IPv6 peers (`::ffff:192.0.2.1`, what a dual-stack socket reports) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Is `ip` in one of the trusted CIDRs?
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:1234`,
/// `[2001:db8::1]:443`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
}

/// Every `X-Forwarded-For` entry, left to right, over all header lines.
fn forwarded_for(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The client's address (see the module documentation).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded_for(headers).iter().rev() {
        match parse_entry(entry) {
            Some(ip) if is_trusted(ip, trusted) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

const HOP_BY_HOP_KINDS: usize = 7;

/// The fields that are always hop-by-hop, whatever `Connection` says; `Connection` first.
/// (`proxy-*` fields are too: [`strip_hop_by_hop`] looks for them apart.)
static ALWAYS_HOP_BY_HOP: [HeaderName; HOP_BY_HOP_KINDS] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("http2-settings"),
];

/// Whether `name` (lower case) is a `proxy-*` field, hop-by-hop: all but `Proxy-Status`
/// (RFC 9209), which is end-to-end.
fn is_proxy_field(name: &str) -> bool {
    name.starts_with("proxy-") && name != "proxy-status"
}

/// Removes the request fields whose names, with `_` read as `-`, are fields the proxy writes
/// (`X_Forwarded_For`, `X_Tollgate_Consumer`, ...; `owned` says which others are): CGI and
/// WSGI servers map `X-Forwarded-For` and `X_Forwarded_For` to one variable
/// (`HTTP_X_FORWARDED_FOR`), so a client's twin could stand in for what the proxy wrote, an
/// address or an authenticated identity. Other names with `_` pass (RFC 9110 allows them).
pub fn strip_underscore_twins(headers: &mut HeaderMap, owned: impl Fn(&str) -> bool) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let twins: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .filter(|k| {
            let dashed = k.as_str().replace('_', "-");
            dashed == X_FORWARDED_FOR.as_str()
                || dashed == X_FORWARDED_PROTO.as_str()
                || dashed == X_FORWARDED_HOST.as_str()
                || dashed == "forwarded"
                || owned(&dashed)
        })
        .cloned()
        .collect();
    for k in twins {
        headers.remove(k);
    }
}

/// Removes the hop-by-hop headers.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_hop_by_hop_keeping(headers, |_| false);
}

/// Removes the hop-by-hop headers, but not the fields `Connection` names that `owned` says the
/// proxy set itself: RFC 9110 section 7.6.1 has a proxy remove the connection options it
/// received, and a client must not be able to take the proxy's own fields (the authenticated
/// consumer) off the request by naming them. `owned` is asked only about names `Connection`
/// lists (as written, any case), so it costs nothing on a request that lists none.
pub fn strip_hop_by_hop_keeping(headers: &mut HeaderMap, owned: impl Fn(&str) -> bool) {
    // One pass over the names notes which hop-by-hop fields are there, and only those are
    // removed: a removal hashes, most requests carry none, and a backend's response often
    // only `Connection: keep-alive` (removing all seven kinds by name cost ~3% of the proxy's
    // user time per request in a profile of stop 38).
    let mut present = [false; HOP_BY_HOP_KINDS];
    let mut proxy = false;
    for name in headers.keys() {
        if let Some(i) = ALWAYS_HOP_BY_HOP.iter().position(|k| k == name) {
            present[i] = true;
        } else if is_proxy_field(name.as_str()) {
            proxy = true;
        }
    }
    if !proxy && !present.contains(&true) {
        return;
    }
    // The fields `Connection` names, removed by name as written (a `&str` look-up allocates
    // nothing, where a parsed `HeaderName` that is not a standard one does). A value is taken
    // out (a reference count, not a copy) so that the map can change under it; `Connection`
    // itself goes last, so the values are still there to be read one by one. Names of the
    // always hop-by-hop kinds are left to the loop below, which knows whether they are there.
    if present[0] {
        let mut i = 0;
        while let Some(value) = headers.get_all(header::CONNECTION).iter().nth(i).cloned() {
            i += 1;
            let Ok(value) = value.to_str() else { continue };
            for name in value.split(',').map(str::trim) {
                if !name.is_empty()
                    && !ALWAYS_HOP_BY_HOP
                        .iter()
                        .any(|k| name.eq_ignore_ascii_case(k.as_str()))
                    && !owned(name)
                {
                    headers.remove(name);
                }
            }
        }
    }
    for (name, there) in ALWAYS_HOP_BY_HOP.iter().zip(present) {
        if there {
            headers.remove(name);
        }
    }
    // `proxy-*` fields, if any (rare): one at a time, without a list of their names.
    if proxy {
        while let Some(name) = headers.keys().find(|k| is_proxy_field(k.as_str())).cloned() {
            headers.remove(name);
        }
    }
}

/// Why an HTTP/1 backend response cannot be relayed (answered 502 instead), if it cannot: both
/// `Transfer-Encoding` and `Content-Length` (RFC 9112 section 6.1: a sender MUST NOT send
/// both; hyper reads such a body as chunked and would leave the `Content-Length` for the
/// client to believe, a response smuggling vector), or a transfer coding other than `chunked`
/// alone (`gzip, chunked`, `gzip`: the proxy removes `Transfer-Encoding` as hop-by-hop, so the
/// client would get coded bytes it cannot know to decode). Checked before
/// [`strip_hop_by_hop`] removes the evidence.
pub fn response_framing_problem(headers: &HeaderMap) -> Option<&'static str> {
    // No Transfer-Encoding: framed by Content-Length or the close, which the client checked.
    if !headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Some("the backend's response has both Transfer-Encoding and Content-Length");
    }
    // One that names no coding (an empty value) is refused too: the body was read by the
    // close, which its Content-Length, if any, would contradict.
    (!chunked_alone(headers))
        .then_some("the backend's response has a transfer coding other than chunked")
}

/// Makes several `Content-Length` values that all say the same length one field of one value
/// (RFC 9110 section 8.6: a recipient may replace a list of identical values with one). Both
/// hyper and the lean path accept `Content-Length: 2` twice, or `2, 2`, from a backend (and
/// an HTTP/2 client may send the field twice); relayed as such, an HTTP/2 client refuses the
/// response (its field may hold one value) and an HTTP/1.1 recipient may read it as a
/// conflict. Values that differ were refused before this is called; they are left alone.
pub fn single_content_length(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return;
    };
    let listed = first.as_bytes().contains(&b',');
    if values.next().is_none() && !listed {
        return;
    }
    let mut length: Option<&[u8]> = None;
    for part in headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
    {
        let part = part.trim_ascii();
        if part.is_empty()
            || !part.iter().all(u8::is_ascii_digit)
            || length.is_some_and(|l| l != part)
        {
            return;
        }
        length = Some(part);
    }
    if let Some(v) = length.and_then(|l| HeaderValue::from_bytes(l).ok()) {
        headers.insert(header::CONTENT_LENGTH, v);
    }
}

/// Whether the `Transfer-Encoding` lines of `headers`, all together, name `chunked` and nothing
/// else (empty list elements aside, RFC 9110 section 5.6.1).
fn chunked_alone(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty());
    codings
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// Whether an HTTP/1.1 request's body, chunked (hyper checks that the last coding is), has
/// another transfer coding besides (`gzip, chunked`, `chunked, chunked`, or a line of each):
/// the proxy decodes only `chunked` and removes `Transfer-Encoding` as hop-by-hop, so the
/// backend would get coded bytes with nothing saying so. Answered 501 (RFC 9112 section 6.1: a
/// server SHOULD answer 501 to a transfer coding it does not understand; section 7: chunked
/// only once). Asked only of a request whose body has no known length (see `router`).
pub fn request_coding_refused(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING) && !chunked_alone(headers)
}

/// Whether a backend's final status can be relayed: a `101` to a request that asked for no
/// upgrade (`upgrade`: it did) is not (RFC 9110 section 15.2.2: a server MUST NOT switch to a
/// protocol the client did not ask for), nor is a status past 599 (RFC 9110 section 15:
/// three digits, 100 to 599; the `http` crate takes up to 999). Answered 502, and the
/// connection not used again.
pub fn response_status_problem(status: http::StatusCode, upgrade: bool) -> Option<&'static str> {
    match status.as_u16() {
        101 if !upgrade => Some("the backend switched protocols without being asked to"),
        600.. => Some("the backend's response has an invalid status"),
        _ => None,
    }
}

/// The fields a trailer section may not carry (RFC 9110 section 6.5.1: those that frame the
/// message, route it, authenticate, modify the request, control the response or say how to
/// process the content; hyper's HTTP/1.1 encoder refuses most of them too) and the hop-by-hop
/// ones (section 7.6.1; in HTTP/2, RFC 9113 section 8.2.2 makes them malformed and `h2` resets
/// the stream rather than send them).
fn trailer_refused(name: &str) -> bool {
    name.starts_with("content-")
        || name.starts_with("proxy-")
        || name.starts_with("if-")
        || matches!(
            name,
            "connection"
                | "keep-alive"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "http2-settings"
                | "host"
                | "authorization"
                | "www-authenticate"
                | "authentication-info"
                | "cookie"
                | "set-cookie"
                | "cache-control"
                | "expect"
                | "max-forwards"
                | "pragma"
                | "range"
                | "age"
                | "expires"
                | "date"
                | "location"
                | "retry-after"
                | "vary"
                | "warning"
        )
}

/// Removes from a trailer section (a backend's, or a client's) what [`trailer_refused`] names. Trailers are rare:
/// a look at each name, and removals only when there is one to remove.
pub fn strip_trailers(trailers: &mut HeaderMap) {
    while let Some(name) = trailers
        .keys()
        .find(|k| trailer_refused(k.as_str()))
        .cloned()
    {
        trailers.remove(name);
    }
}

/// A client connection's peer as the forwarded headers need it, worked out once per connection
/// (formatting the address for every request was a measurable part of the request path).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer's address, IPv4-mapped IPv6 as IPv4.
    pub ip: IpAddr,
    /// Whether the peer is a trusted proxy (its forwarded headers are kept and extended).
    pub trusted: bool,
    /// `ip` as an `X-Forwarded-For` entry.
    value: HeaderValue,
}

impl Peer {
    /// The peer `ip`, trusted when one of the `trusted` CIDRs holds it.
    pub fn new(ip: IpAddr, trusted: &[IpNet]) -> Peer {
        let ip = canonical(ip);
        Peer {
            ip,
            trusted: is_trusted(ip, trusted),
            value: HeaderValue::from_str(&ip.to_string()).expect("an address is a header value"),
        }
    }
}

/// Sets `X-Forwarded-For`, `-Proto` and `-Host` for the backend. `host` is the Host the client
/// sent (as sent, with its port if it had one); `proto` is `http` or `https` (the listener's).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &Peer,
    host: Option<&HeaderValue>,
    proto: &'static str,
) {
    let trusted = peer.trusted;
    let xff = if trusted {
        let mut entries: Vec<&str> = forwarded_for(headers);
        entries.push(peer.value.to_str().unwrap_or_default());
        HeaderValue::from_str(&entries.join(", ")).ok()
    } else {
        Some(peer.value.clone())
    };
    // `insert` replaces whatever values the field had: no removal first (a hash each).
    match xff {
        Some(v) => {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        None => {
            headers.remove(&X_FORWARDED_FOR);
        }
    }
    if !trusted {
        headers.remove(header::FORWARDED);
    }
    if !trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !trusted || !headers.contains_key(&X_FORWARDED_HOST) {
        match host {
            Some(v) => {
                headers.insert(X_FORWARDED_HOST.clone(), v.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

/// Adds this hop to `Via` (RFC 9110 section 7.6.3: a gateway MUST send it in each request it
/// forwards): the protocol the client spoke and the pseudonym `tollgate` (no host name or
/// address of the node is given away). A client's own `Via` entries stay in front.
pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let hop = match version {
        http::Version::HTTP_10 => "1.0 tollgate",
        http::Version::HTTP_2 => "2 tollgate",
        http::Version::HTTP_3 => "3 tollgate",
        _ => "1.1 tollgate",
    };
    headers.append(header::VIA, HeaderValue::from_static(hop));
}

/// Joins the request's `Cookie` fields into one, separated by `; ` (RFC 9113 section 8.2.3: an
/// HTTP/2 client may split the cookies into several fields, which MUST be joined before an
/// HTTP/1.1 hop; RFC 6265 section 5.4 allows an HTTP/1.1 client one field only, and one is what
/// servers read). Empty fields are left out. A request with one field or none (almost all) is
/// looked at once, and nothing is allocated.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    let mut sensitive = false;
    for v in &headers.get_all(header::COOKIE) {
        sensitive |= v.is_sensitive();
        if v.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Each part is a valid field value, and so is `; `: joined, they are one too.
    if let Ok(mut v) = HeaderValue::from_bytes(&joined) {
        v.set_sensitive(sensitive);
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(&X_FORWARDED_FOR, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&["203.0.113.9"]);
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("198.51.100.1")
        );
        assert_eq!(client_ip(ip("198.51.100.1"), &h, &[]), ip("198.51.100.1"));
    }

    #[test]
    fn through_trusted_proxies_the_first_untrusted_address_from_the_right_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&["6.6.6.6, 203.0.113.9", "10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("203.0.113.9"));
        // All trusted: the leftmost.
        let h = headers(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("10.9.9.9"));
        // No header: the peer.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        // Garbage stops the walk at the hop that sent it.
        let h = headers(&["203.0.113.9, garbage, 10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("10.1.1.1"));
        // Ports and IPv6 brackets are understood.
        let h = headers(&["[2001:db8::7]:443, 198.51.100.3:5000"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("198.51.100.3"));
    }

    #[test]
    fn ipv4_mapped_peers_are_matched_as_ipv4() {
        let trusted = nets(&["127.0.0.0/8"]);
        let h = headers(&["203.0.113.9"]);
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &h, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_headers_are_replaced_for_untrusted_peers_and_extended_for_trusted_ones() {
        let mut h = headers(&["6.6.6.6"]);
        h.insert(&X_FORWARDED_PROTO, "https".parse().unwrap());
        h.insert(header::FORWARDED, "for=6.6.6.6".parse().unwrap());
        let untrusted = Peer::new(ip("::ffff:198.51.100.1"), &nets(&["10.0.0.0/8"]));
        assert!(!untrusted.trusted);
        set_forwarded(
            &mut h,
            &untrusted,
            Some(&HeaderValue::from_static("api.example.com:8080")),
            "http",
        );
        assert_eq!(h[&X_FORWARDED_FOR], "198.51.100.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "api.example.com:8080");
        assert!(!h.contains_key(header::FORWARDED));

        let mut h = headers(&["203.0.113.9", "10.1.1.1"]);
        h.insert(&X_FORWARDED_PROTO, "https".parse().unwrap());
        let trusted = Peer::new(ip("10.0.0.2"), &nets(&["10.0.0.0/8"]));
        assert!(trusted.trusted);
        set_forwarded(
            &mut h,
            &trusted,
            Some(&HeaderValue::from_static("api.example.com")),
            "http",
        );
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 10.1.1.1, 10.0.0.2");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "api.example.com");
    }

    #[test]
    fn responses_framed_by_both_lengths_or_another_coding_are_refused() {
        let h = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            response_framing_problem(&h)
        };
        assert_eq!(h(&[("content-length", "3")]), None);
        assert_eq!(h(&[("transfer-encoding", "chunked")]), None);
        assert_eq!(h(&[("transfer-encoding", "Chunked")]), None);
        assert_eq!(h(&[]), None);
        assert!(h(&[("transfer-encoding", "chunked"), ("content-length", "3")]).is_some());
        assert!(h(&[("transfer-encoding", "gzip")]).is_some());
        // A Transfer-Encoding that names no coding: neither chunked nor a length to trust.
        assert!(h(&[("transfer-encoding", "")]).is_some());
        assert!(h(&[("transfer-encoding", " , "), ("content-length", "5")]).is_some());
        assert!(h(&[("transfer-encoding", "gzip, chunked")]).is_some());
        assert!(h(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked")
        ])
        .is_some());
        assert!(h(&[("transfer-encoding", "chunked, chunked")]).is_some());
    }

    #[test]
    fn underscore_twins_of_the_proxys_fields_are_removed_and_other_names_kept() {
        let mut h = HeaderMap::new();
        for name in [
            "x_forwarded_for",
            "x_forwarded_proto",
            "x_tollgate_consumer",
            "my_header",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        strip_underscore_twins(&mut h, |n| n == "x-tollgate-consumer");
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort();
        assert_eq!(left, ["my_header", "x-forwarded-for"]);
    }

    #[test]
    fn identical_content_lengths_become_one_and_others_are_left_alone() {
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        single_content_length(&mut h);
        let all: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
        assert_eq!(all, ["2"]);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2, 2"));
        single_content_length(&mut h);
        assert_eq!(h[header::CONTENT_LENGTH], "2");
        for odd in ["2, 3", "2, x", "7"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static(odd));
            single_content_length(&mut h);
            assert_eq!(h[header::CONTENT_LENGTH], odd);
        }
    }

    #[test]
    fn via_gets_this_hop_after_the_clients_entries() {
        let mut h = HeaderMap::new();
        add_via(&mut h, http::Version::HTTP_11);
        assert_eq!(h[header::VIA], "1.1 tollgate");
        let mut h = HeaderMap::new();
        h.insert(header::VIA, "1.0 front".parse().unwrap());
        add_via(&mut h, http::Version::HTTP_2);
        let all: Vec<_> = h.get_all(header::VIA).iter().collect();
        assert_eq!(all, ["1.0 front", "2 tollgate"]);
        let mut h = HeaderMap::new();
        add_via(&mut h, http::Version::HTTP_10);
        assert_eq!(h[header::VIA], "1.0 tollgate");
    }

    /// The names left by [`strip_hop_by_hop`] of a message with `fields`, in order.
    fn left_after_strip(fields: &[(&'static str, &str)]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for &(k, v) in fields {
            h.append(HeaderName::from_static(k), v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        h.keys().map(|k| k.as_str().to_owned()).collect()
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let left = left_after_strip(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-secret", "1"),
            ("x-kept", "1"),
        ]);
        assert_eq!(left, ["x-kept"]);
    }

    /// Every `Connection` field counts, however its names are written; a name that is no
    /// field name is passed over, and one naming `Connection` itself stops nothing.
    #[test]
    fn every_connection_field_names_fields_to_remove() {
        let left = left_after_strip(&[
            ("connection", "X-One , connection"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("connection", ",, not a name, X-TWO,"),
            ("x-three", "3"),
            ("connection", "x-three"),
            ("x-kept", "1"),
        ]);
        assert_eq!(left, ["x-kept"]);
        // Names of the kinds removed anyway, in any case, and a field named like an option.
        let left = left_after_strip(&[
            ("connection", "close, Keep-Alive, TE, Proxy-X"),
            ("close", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-x", "1"),
            ("x-kept", "1"),
        ]);
        assert_eq!(left, ["x-kept"]);
    }

    /// A field the proxy set itself stays when the client's `Connection` names it; the
    /// client's own options still go. `Proxy-Status` is end-to-end.
    #[test]
    fn connection_cannot_remove_the_fields_the_proxy_set() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "X-Tollgate-Consumer, x-tenant, x-mine"),
            ("x-tollgate-consumer", "alice"),
            ("x-tenant", "acme"),
            ("x-mine", "1"),
            ("proxy-status", "cdn; error=connection_timeout"),
            ("proxy-authenticate", "Basic"),
            ("x-kept", "1"),
        ] {
            h.append(HeaderName::from_static(k), v.parse().unwrap());
        }
        strip_hop_by_hop_keeping(&mut h, |n| {
            ["x-tollgate-consumer", "x-tenant"]
                .iter()
                .any(|o| n.eq_ignore_ascii_case(o))
        });
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["proxy-status", "x-kept", "x-tenant", "x-tollgate-consumer"]
        );
    }

    #[test]
    fn request_bodies_coded_with_more_than_chunked_are_refused() {
        let refused = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for v in lines {
                h.append(header::TRANSFER_ENCODING, v.parse().unwrap());
            }
            request_coding_refused(&h)
        };
        assert!(!refused(&[]));
        assert!(!refused(&["chunked"]));
        assert!(!refused(&["Chunked"]));
        assert!(!refused(&[", chunked"]));
        assert!(refused(&["gzip, chunked"]));
        assert!(refused(&["chunked, chunked"]));
        assert!(refused(&["gzip", "chunked"]));
        assert!(refused(&["chunked", "chunked"]));
    }

    #[test]
    fn unasked_101s_and_statuses_past_599_cannot_be_relayed() {
        let problem = |code: u16, upgrade: bool| {
            response_status_problem(http::StatusCode::from_u16(code).unwrap(), upgrade)
        };
        assert!(problem(101, false).is_some());
        assert!(problem(101, true).is_none());
        for code in [600, 700, 999] {
            assert!(problem(code, false).is_some(), "{code}");
            assert!(problem(code, true).is_some(), "{code}");
        }
        for code in [200, 204, 302, 404, 599] {
            assert!(problem(code, false).is_none(), "{code}");
        }
    }

    #[test]
    fn trailers_lose_hop_by_hop_fields_and_those_no_trailer_may_carry() {
        let mut t = HeaderMap::new();
        for (k, v) in [
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("upgrade", "x"),
            ("proxy-connection", "close"),
            ("content-length", "5"),
            ("content-type", "text/plain"),
            ("host", "evil.example"),
            ("authorization", "Basic x"),
            ("www-authenticate", "Basic"),
            ("set-cookie", "a=b"),
            ("cache-control", "no-store"),
            ("location", "/x"),
            ("x-sum", "13"),
            ("grpc-status", "0"),
            ("server-timing", "db;dur=53"),
        ] {
            t.append(HeaderName::from_static(k), v.parse().unwrap());
        }
        strip_trailers(&mut t);
        let mut left: Vec<_> = t.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["grpc-status", "server-timing", "x-sum"]);
    }

    /// Each kind alone is found by the pass that decides whether anything is to be removed.
    #[test]
    fn each_hop_by_hop_field_alone_is_removed_and_a_message_without_any_is_left_alone() {
        for k in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "http2-settings",
            "proxy-authorization",
            "proxy-authenticate",
            "proxy-connection",
        ] {
            let left = left_after_strip(&[(k, "x"), ("x-kept", "1")]);
            assert_eq!(left, ["x-kept"], "{k}");
        }
        let mut h = HeaderMap::new();
        for (k, v) in [("host", "a"), ("accept", "*/*"), ("x-api-key", "k")] {
            h.append(HeaderName::from_static(k), v.parse().unwrap());
        }
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn cookie_fields_are_joined_into_one_and_a_single_one_is_left_alone() {
        let cookies = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::COOKIE, v.parse().unwrap());
            }
            join_cookies(&mut h);
            h.get_all(header::COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(cookies(&["a=1", "b=2"]), ["a=1; b=2"]);
        assert_eq!(cookies(&["a=1", "", "b=2; c=3"]), ["a=1; b=2; c=3"]);
        assert_eq!(cookies(&["a=1"]), ["a=1"]);
        assert_eq!(cookies(&["a=1, b=2"]), ["a=1, b=2"]);
        assert!(cookies(&[]).is_empty());
    }
}
