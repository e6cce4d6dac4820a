//! The answers the proxy writes itself, not a backend's: errors ([`local`]), and its answers to
//! `OPTIONS *` and to OPTIONS and TRACE whose `Max-Forwards` is spent.
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::body::{Completion, ResponseBody};

/// Marks a response the proxy wrote itself ([`local`], redirects, CORS preflights, OPTIONS and
/// TRACE answers): [`super::handle`] closes an HTTP/1 connection after it when the request had a
/// body, which may not have been read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalAnswer;

/// The methods the proxy forwards, for `Allow` where it answers about methods itself (every
/// method but CONNECT is forwarded; extension methods too, but `Allow` lists the standard ones).
pub(super) const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH";

/// A response the proxy writes itself.
pub(crate) fn local(
    mut done: Completion,
    status: StatusCode,
    reason: &'static str,
    message: &str,
) -> Response<ResponseBody> {
    done.reason = reason;
    if done.grpc {
        // A gRPC client reads the status from the trailers-only answer (see `grpc`). A 421
        // keeps its HTTP status: it tells the client's HTTP/2 layer, below gRPC, that this
        // connection (coalesced for another host) is the wrong one and another may serve it
        // (RFC 9110 section 15.5.20, RFC 9113 section 9.1.2).
        let http_status = if status == StatusCode::MISDIRECTED_REQUEST {
            status
        } else {
            StatusCode::OK
        };
        done.status = http_status.as_u16();
        let mut resp = Response::new(ResponseBody::full(Bytes::new(), done));
        *resp.status_mut() = http_status;
        *resp.headers_mut() = crate::grpc::trailers_only(status, message);
        resp.extensions_mut().insert(LocalAnswer);
        return resp;
    }
    done.status = status.as_u16();
    let text = format!(
        "{} {}: {message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(ResponseBody::full(text, done));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.extensions_mut().insert(LocalAnswer);
    resp
}

/// The proxy's own answer to `OPTIONS *` and to an OPTIONS whose `Max-Forwards` is spent: 200
/// with `Allow` and no content (RFC 9110 section 9.3.7).
pub(super) fn options_answer(mut done: Completion) -> Response<ResponseBody> {
    done.status = StatusCode::OK.as_u16();
    done.reason = "options";
    let mut resp = Response::new(ResponseBody::full(Bytes::new(), done));
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    resp.extensions_mut().insert(LocalAnswer);
    resp
}

/// The proxy's own answer to a TRACE whose `Max-Forwards` is spent (RFC 9110 section 9.3.8):
/// the request as received, as `message/http`, without the fields that carry credentials.
pub(super) fn trace_answer<B>(mut done: Completion, req: &Request<B>) -> Response<ResponseBody> {
    let mut text = format!("TRACE {} {:?}\r\n", req.uri(), req.version()).into_bytes();
    for (name, value) in req.headers() {
        if [
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
        ]
        .contains(name)
        {
            continue;
        }
        text.extend_from_slice(name.as_str().as_bytes());
        text.extend_from_slice(b": ");
        text.extend_from_slice(value.as_bytes());
        text.extend_from_slice(b"\r\n");
    }
    text.extend_from_slice(b"\r\n");
    done.status = StatusCode::OK.as_u16();
    done.reason = "trace";
    let mut resp = Response::new(ResponseBody::full(Bytes::from(text), done));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("message/http"),
    );
    resp.extensions_mut().insert(LocalAnswer);
    resp
}

/// `Max-Forwards` (RFC 9110 section 7.6.2): its value when it is one valid `1*DIGIT`.
pub(super) fn max_forwards(headers: &http::HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::MAX_FORWARDS).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().unwrap_or(u64::MAX))
}
