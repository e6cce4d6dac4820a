//! HTTP/1.1 protocol upgrades (RFC 9110 7.8) passed through to backends: WebSocket (RFC 6455)
//! and any other protocol a client and a backend agree on.
//!
//! An upgrade request is an HTTP/1.1 request with an `Upgrade` header and the `upgrade`
//! option in `Connection` (an `Upgrade` without it, or in an HTTP/1.0 request, is ignored, as
//! the RFC says). It is routed, authenticated and rate-limited like any request; then it is
//! sent, with `Connection: upgrade` and its `Upgrade`, on a connection of its own to one
//! endpoint (never a pooled one, never retried: what the backend does with it cannot be
//! undone, and the connection becomes the tunnel). When the backend answers
//! `101 Switching Protocols`, the proxy answers 101 with the backend's `Upgrade` and copies
//! bytes both ways until either side closes, or no byte has moved for the idle timeout
//! (`--idle-timeout`). Any other answer is relayed as usual.
//!
//! - `h2c` (and `h2`, never valid in `Upgrade`) are taken out of the protocols a client asks
//!   for: the proxy speaks HTTP/2 itself and does not pass that upgrade on (RFC 9113 3.1 lets
//!   a server ignore it); a request that asked only for them is forwarded as a plain request.
//! - HTTP/2 clients cannot upgrade: `Upgrade` and `Connection` make an HTTP/2 request
//!   malformed (RFC 9113 8.2.2) and hyper resets such a stream; extended CONNECT (RFC 8441) is
//!   not offered.
//! - Backends spoken to in HTTP/2 (`appProtocol` h2c or h2) get the request without the
//!   upgrade, as a server that does not upgrade would answer it.
//! - An upgraded connection holds a place of the connection limit (`--max-connections`) as
//!   long as it lasts, besides the client connection it came on (which ends at the 101): at the
//!   limit, upgrades are answered 503.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::backend_h2::connect_tcp;
use super::backend_tls::TlsBackend;
use super::body::{BodyState, BoxError, ClientBody, Completion, LimitedBody, ResponseBody};
use super::forwarded;
use super::listener::{ConnGuard, ConnInfo};
use super::router::{failure_response, local, upstream_error};
use super::upstream::{BackendRuntime, Failure, ReplayBody};
use super::{Core, UpstreamBody};
use tollgate_compile::l7::table::Rule;

/// Is `s` an RFC 9110 token?
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Does `headers`' `Connection` carry the option `name`?
fn connection_has(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|o| o.trim().eq_ignore_ascii_case(name))
}

/// The protocols an upgrade request asks for, to pass on to the backend (see the module
/// documentation); `None` when the request is not an upgrade request, or asks only for
/// protocols the proxy does not pass on. Entries that are not `token[/token]` are dropped.
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 || !connection_has(req.headers(), "upgrade") {
        return None;
    }
    let protocols: Vec<&str> = req
        .headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| {
            let (name, version) = match p.split_once('/') {
                Some((n, v)) => (n, Some(v)),
                None => (*p, None),
            };
            is_token(name)
                && version.is_none_or(is_token)
                && !name.eq_ignore_ascii_case("h2c")
                && !name.eq_ignore_ascii_case("h2")
        })
        .collect();
    if protocols.is_empty() {
        return None;
    }
    HeaderValue::from_str(&protocols.join(", ")).ok()
}

/// Sends an upgrade request to an endpoint of `backend` and, on 101, joins the client's
/// connection and the backend's (see the module documentation). `parts` are the request's,
/// already prepared for the backend (hop-by-hop headers removed, filters applied).
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    core: Arc<Core>,
    conn: Arc<ConnInfo>,
    mut done: Completion,
    rule: Arc<Rule>,
    backend: Arc<BackendRuntime>,
    tls: Option<TlsBackend>,
    mut parts: http::request::Parts,
    body: ClientBody,
    path_and_query: &str,
    protocols: HeaderValue,
    max_body: u64,
    deadline: Option<tokio::time::Instant>,
) -> Response<ResponseBody> {
    let Some(client_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        // Cannot happen: every HTTP/1.1 connection is served with upgrades.
        return local(
            done,
            StatusCode::INTERNAL_SERVER_ERROR,
            "upgrade_unavailable",
            "this connection cannot be upgraded",
        );
    };
    let Ok(permit) = core.connections.clone().try_acquire_owned() else {
        upstream_error(&core, &rule.route, "upgrade_limit");
        let mut resp = local(
            done,
            StatusCode::SERVICE_UNAVAILABLE,
            "upgrade_limit",
            "too many open connections to upgrade another one; retry shortly",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    };
    let Some((index, in_flight)) = backend.pick(&[]) else {
        upstream_error(&core, &rule.route, "no_healthy_endpoint");
        return local(
            done,
            StatusCode::SERVICE_UNAVAILABLE,
            "no_healthy_endpoint",
            "no healthy endpoint for this route",
        );
    };
    let authority = in_flight.endpoint().authority.clone();
    let Ok(target) = path_and_query.parse::<http::Uri>() else {
        return local(
            done,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request target cannot be forwarded",
        );
    };
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, protocols);
    let state = Arc::new(BodyState::default());
    let upstream_body: UpstreamBody = if body.is_end_stream() {
        state.set_complete();
        Either::Left(ReplayBody::new(Bytes::new()).0)
    } else {
        // Streamed, never buffered: the request is not retried.
        Either::Right(LimitedBody::new(body, max_body, state.clone()))
    };
    let mut up = Request::new(upstream_body);
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = target;
    *up.version_mut() = Version::HTTP_11;
    *up.headers_mut() = parts.headers;

    let attempt_started = tokio::time::Instant::now();
    let attempt_deadline = match (deadline, rule.timeouts.backend_request) {
        (Some(d), Some(b)) => Some(d.min(attempt_started + b)),
        (d, None) => d,
        (None, Some(b)) => Some(attempt_started + b),
    };
    let sent = send(&authority, tls.as_ref(), core.limits.connect_timeout, up);
    let result = match attempt_deadline {
        Some(d) => tokio::time::timeout_at(d, sent)
            .await
            .unwrap_or_else(|_| Err((Failure::Timeout, "no response in time".into()))),
        None => sent.await,
    };
    // A response whose status or framing cannot be relayed is answered 502, as in any
    // request (the connection is this request's own, and dropped).
    let result = result.and_then(|resp| {
        match forwarded::response_status_problem(resp.status(), true).or_else(|| {
            (resp.version() < Version::HTTP_2)
                .then(|| forwarded::response_framing_problem(resp.headers()))
                .flatten()
        }) {
            Some(why) => Err((Failure::InvalidResponse, why.into())),
            None => Ok(resp),
        }
    });
    let mut resp = match result {
        Ok(resp) => resp,
        Err((f, error)) => {
            backend.failure(index);
            let reason = match f {
                Failure::Connect => "connect",
                Failure::Tls => "tls",
                Failure::Timeout => "timeout",
                Failure::InvalidResponse => "invalid_response",
                Failure::NotSent | Failure::Reset => "reset",
            };
            upstream_error(&core, &rule.route, reason);
            debug!(route = %rule.route, endpoint = %authority, %error, failure = ?f, "upgrade request to the backend failed");
            if state.too_large() {
                return local(
                    done,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is larger than this route accepts",
                );
            }
            return failure_response(done, f);
        }
    };
    let status = resp.status();
    if matches!(status.as_u16(), 502..=504) {
        backend.failure(index);
    } else {
        backend.success(index);
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // Refused (or ignored): relayed as any response, in this hop's version.
        let (mut rparts, rbody) = resp.into_parts();
        rparts.version = Version::HTTP_11;
        forwarded::strip_hop_by_hop(&mut rparts.headers);
        if let Some(m) = &rule.response_headers {
            m.apply(&mut rparts.headers);
        }
        done.status = status.as_u16();
        done.upstream = Some(in_flight);
        done.body = Some(state);
        return Response::from_parts(
            rparts,
            ResponseBody::upstream(
                rbody.into(),
                attempt_deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
                done,
            ),
        );
    }
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let (mut rparts, _) = resp.into_parts();
    rparts.version = Version::HTTP_11;
    // A 101 must say what it switches to (RFC 9110 7.8): without it the client could not
    // know what the bytes that follow are.
    let Some(upgrade) = rparts.headers.get(header::UPGRADE).cloned() else {
        backend.failure(index);
        upstream_error(&core, &rule.route, "invalid_response");
        debug!(route = %rule.route, endpoint = %authority, "the backend switched protocols without an Upgrade header");
        return failure_response(done, Failure::InvalidResponse);
    };
    forwarded::strip_hop_by_hop(&mut rparts.headers);
    if let Some(m) = &rule.response_headers {
        m.apply(&mut rparts.headers);
    }
    rparts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    rparts.headers.insert(header::UPGRADE, upgrade);
    // The tunnel: holds its place of the connection limit, keeps its client connection
    // counted as busy (its bytes are not request heads), and is load on the endpoint.
    let tunnel = Tunnel {
        _permit: permit,
        _busy: ConnGuard::new(conn.state.clone()),
        _in_flight: in_flight.another(),
        conn: conn.clone(),
        idle: core.limits.idle_timeout,
        route: rule.route.clone(),
    };
    tokio::spawn(tunnel.run(client_upgrade, backend_upgrade));
    done.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
    done.upstream = Some(in_flight);
    Response::from_parts(rparts, ResponseBody::full(Bytes::new(), done))
}

type SendError = (Failure, BoxError);

/// Sends `req` on a new HTTP/1.1 connection to `authority` (TLS when `tls`), whose
/// connection task hands the connection over on a 101.
async fn send(
    authority: &str,
    tls: Option<&TlsBackend>,
    connect_timeout: Duration,
    req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, SendError> {
    let tcp = connect_tcp(authority, connect_timeout)
        .await
        .map_err(|e| (Failure::Connect, e))?;
    match tls {
        None => send_on(TokioIo::new(tcp), req).await,
        Some(t) => {
            let connector = tokio_rustls::TlsConnector::from(t.http1.clone());
            let stream =
                tokio::time::timeout(connect_timeout, connector.connect(t.h2.name.clone(), tcp))
                    .await
                    .map_err(|_| (Failure::Tls, "the TLS handshake did not end in time".into()))?
                    .map_err(|e| (Failure::Tls, e.into()))?;
            send_on(TokioIo::new(stream), req).await
        }
    }
}

async fn send_on<S>(io: S, req: Request<UpstreamBody>) -> Result<Response<Incoming>, SendError>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| (Failure::Connect, e.into()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            debug!(%error, "upgrade connection to the backend ended");
        }
    });
    sender.send_request(req).await.map_err(|e| {
        let f = if e.is_canceled() {
            Failure::NotSent
        } else if e.is_parse() {
            Failure::InvalidResponse
        } else {
            Failure::Reset
        };
        (f, e.into())
    })
}

/// An upgraded connection between a client and a backend, and what it holds while it lasts.
struct Tunnel {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _busy: ConnGuard,
    _in_flight: super::upstream::InFlight,
    conn: Arc<ConnInfo>,
    idle: Duration,
    route: Arc<str>,
}

impl Tunnel {
    async fn run(self, client: OnUpgrade, backend: OnUpgrade) {
        let (client, backend) = match tokio::join!(client, backend) {
            (Ok(c), Ok(b)) => (c, b),
            (c, b) => {
                debug!(route = %self.route, client = ?c.err(), backend = ?b.err(), "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
        tokio::pin!(copy);
        // Every byte either way is read from or written to the client's connection, which
        // records when bytes last moved.
        let mut tick = tokio::time::interval((self.idle / 4).max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                r = &mut copy => {
                    match r {
                        Ok((up, down)) => debug!(route = %self.route, peer = %self.conn.peer, up, down, "upgraded connection closed"),
                        Err(error) => debug!(route = %self.route, peer = %self.conn.peer, %error, "upgraded connection ended with an error"),
                    }
                    return;
                }
                _ = tick.tick() => {
                    if self.conn.state.quiet_for() >= self.idle {
                        debug!(route = %self.route, peer = %self.conn.peer, "idle upgraded connection closed");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::builder().version(version).uri("/");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    fn asked(version: Version, headers: &[(&str, &str)]) -> Option<String> {
        requested(&req(version, headers)).map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn an_upgrade_request_needs_http_1_1_and_the_connection_option() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert_eq!(asked(Version::HTTP_11, &ws).as_deref(), Some("websocket"));
        assert_eq!(asked(Version::HTTP_10, &ws), None, "HTTP/1.0: ignored");
        assert_eq!(asked(Version::HTTP_11, &[("upgrade", "websocket")]), None);
        assert_eq!(
            asked(
                Version::HTTP_11,
                &[("connection", "close"), ("upgrade", "websocket")]
            ),
            None
        );
        assert_eq!(asked(Version::HTTP_11, &[("connection", "upgrade")]), None);
    }

    #[test]
    fn h2c_and_malformed_protocols_are_taken_out() {
        let c = ("connection", "upgrade");
        assert_eq!(asked(Version::HTTP_11, &[c, ("upgrade", "h2c")]), None);
        assert_eq!(asked(Version::HTTP_11, &[c, ("upgrade", "H2C, h2")]), None);
        assert_eq!(
            asked(
                Version::HTTP_11,
                &[c, ("upgrade", "h2c, echo/1"), ("upgrade", "x y, tls/1.3")]
            )
            .as_deref(),
            Some("echo/1, tls/1.3")
        );
        assert_eq!(
            asked(Version::HTTP_11, &[c, ("upgrade", "a/, /b, ,c/d/e")]),
            None
        );
    }
}
