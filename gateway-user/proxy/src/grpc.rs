//! gRPC requests (`content-type: application/grpc[+proto|+json|;...]`): the answers the proxy
//! makes itself (no route, a backend that cannot be reached, a rule that answers 500, ...)
//! are gRPC statuses, so that a gRPC client reports what happened rather than a protocol
//! error. They are "Trailers-Only" responses (gRPC over HTTP/2): HTTP status 200, the
//! `content-type`, `grpc-status` and `grpc-message` in the only header block, and no body.
//!
//! The status follows gRPC's own mapping of HTTP statuses (what a client would derive from the
//! HTTP answer), with two choices of the Gateway API and of gRPC: a request the route cannot
//! send anywhere (500: a backendRef that does not resolve, no backendRefs) is `UNAVAILABLE`,
//! as the GRPCRoute spec requires, and a request body over the limit is `RESOURCE_EXHAUSTED`,
//! as gRPC says of a message too large.
use http::{header, HeaderMap, HeaderValue, StatusCode};

/// Whether a request is a gRPC call, by its `content-type`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start();
            v.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
                && matches!(v.as_bytes().get(16), None | Some(b'+' | b';' | b' '))
        })
}

/// gRPC status codes the proxy answers with.
pub mod code {
    /// `UNKNOWN`.
    pub const UNKNOWN: u8 = 2;
    /// `PERMISSION_DENIED`.
    pub const PERMISSION_DENIED: u8 = 7;
    /// `RESOURCE_EXHAUSTED`.
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    /// `UNIMPLEMENTED`: no route for the method.
    pub const UNIMPLEMENTED: u8 = 12;
    /// `INTERNAL`.
    pub const INTERNAL: u8 = 13;
    /// `UNAVAILABLE`.
    pub const UNAVAILABLE: u8 = 14;
    /// `UNAUTHENTICATED`.
    pub const UNAUTHENTICATED: u8 = 16;
}

/// The gRPC status of an answer the proxy would make with HTTP `status`.
pub fn status_of(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        413 => code::RESOURCE_EXHAUSTED,
        429 | 500 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// The headers of a Trailers-Only answer: `content-type`, `grpc-status` and `grpc-message`
/// (percent-encoded, as the gRPC spec requires of every byte outside printable ASCII and of
/// `%`).
pub fn trailers_only(status: StatusCode, message: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        "grpc-status",
        HeaderValue::from(u16::from(status_of(status))),
    );
    let mut encoded = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        h.insert("grpc-message", v);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, v.parse().unwrap());
        h
    }

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc(&ct(yes)), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpcx",
            "text/plain",
            "application/json",
        ] {
            assert!(!is_grpc(&ct(no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn answers_are_grpc_statuses_with_an_encoded_message() {
        let h = trailers_only(StatusCode::NOT_FOUND, "no route: 100% sure é");
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "12");
        assert_eq!(h["grpc-message"], "no route: 100%25 sure %C3%A9");
        assert_eq!(
            status_of(StatusCode::INTERNAL_SERVER_ERROR),
            code::UNAVAILABLE
        );
        assert_eq!(
            status_of(StatusCode::SERVICE_UNAVAILABLE),
            code::UNAVAILABLE
        );
        assert_eq!(status_of(StatusCode::UNAUTHORIZED), code::UNAUTHENTICATED);
        assert_eq!(
            status_of(StatusCode::PAYLOAD_TOO_LARGE),
            code::RESOURCE_EXHAUSTED
        );
        assert_eq!(status_of(StatusCode::MISDIRECTED_REQUEST), code::UNKNOWN);
    }
}
