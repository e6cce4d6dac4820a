//! Forwarding a routed request to its backend: the request body (buffered when it may be sent
//! again), the attempts with their timeouts and retries, and the answer when none succeeded.
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Either};
use smallvec::SmallVec;
use tracing::debug;

use super::{body_too_large, local, upstream_error};
use crate::backend_h1::{self, BackendBody};
use crate::backend_h2;
use crate::backend_tls::TlsBackend;
use crate::body::{BodyState, BoxError, ClientBody, Completion, LimitedBody, ResponseBody};
use crate::forwarded;
use crate::upstream::{self, BackendRuntime, BodySent, Failure, ReplayBody};
use crate::{Core, UpstreamBody};
use tollgate_compile::l7::table::{BackendProtocol, HeaderModifier, Rule};

/// The request body, readable once or again for each attempt.
pub(super) enum RequestBody {
    /// Buffered (or empty): every attempt sends it.
    Replayable(Bytes),
    /// Streamed to the first attempt only (large or of unknown length): no retries. The
    /// state tells how the stream ended (a body that was whole before anything was sent has
    /// none to tell: a buffered one).
    Stream(Option<LimitedBody>, Arc<BodyState>),
}

impl RequestBody {
    fn replayable(&self) -> bool {
        matches!(self, RequestBody::Replayable(_))
    }

    /// How the streamed body ended, or `None` when it was whole before the first attempt.
    fn state(&self) -> Option<&Arc<BodyState>> {
        match self {
            RequestBody::Replayable(_) => None,
            RequestBody::Stream(_, state) => Some(state),
        }
    }

    /// The body of the next attempt, and what tells whether any of it was sent.
    fn take(&mut self) -> (UpstreamBody, BodySent) {
        match self {
            RequestBody::Replayable(b) => {
                let (body, sent) = ReplayBody::new(b.clone());
                (Either::Left(body), sent)
            }
            RequestBody::Stream(s, _) => match s.take() {
                Some(b) => (Either::Right(b), BodySent::always()),
                None => (
                    Either::Left(ReplayBody::new(Bytes::new()).0),
                    BodySent::always(),
                ),
            },
        }
    }
}

/// Buffers a small request body so that it can be sent again on a retry.
pub(super) async fn read_body(
    core: &Core,
    body: ClientBody,
    deadline: Option<tokio::time::Instant>,
    may_retry: bool,
    max_body: u64,
) -> Result<RequestBody, (StatusCode, &'static str, &'static str)> {
    if body.is_end_stream() {
        return Ok(RequestBody::Replayable(Bytes::new()));
    }
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= core.config.limits.max_retry_body as u64);
    if !(may_retry && small) {
        let state = Arc::new(BodyState::default());
        return Ok(RequestBody::Stream(
            Some(LimitedBody::new(body, max_body, state.clone())),
            state,
        ));
    }
    let collect = body.collect();
    let collected = match deadline {
        Some(d) => match tokio::time::timeout_at(d, collect).await {
            Ok(c) => c,
            Err(_) => {
                return Err((
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the request body did not arrive in time",
                ))
            }
        },
        None => collect.await,
    };
    match collected {
        Ok(c) => Ok(RequestBody::Replayable(c.to_bytes())),
        Err(_) => Err((
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body could not be read",
        )),
    }
}

/// Forwards the request to an endpoint of `backend`, and again (another endpoint first) while
/// the rule's retries allow: see [`Failure::retryable`] for what is retried, and
/// [`failure_response`] for the answer when nothing more may be tried. The request timeout
/// (`deadline`) bounds everything, backoffs included; reached, the answer is 504, whatever
/// the attempt in progress would have brought.
///
/// A function returning an `async` block rather than an `async fn`: an `async fn` keeps its
/// arguments twice in its future (as passed, and as the body's own variables), and a future is
/// copied whole each time it moves (into its caller's future, into a box), a cost per request
/// that grows with its size (docs/benchmarks-issue13-part3.md, round 14). The same goes for the
/// other functions of a request's path.
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_async_fn)] // the future's size, as said above
pub(super) fn forward<'a>(
    core: Arc<Core>,
    mut done: Completion,
    rule: Arc<Rule>,
    backend: Arc<BackendRuntime>,
    tls_client: Option<&'a TlsBackend>,
    mut parts: http::request::Parts,
    path_and_query: String,
    body: &'a mut RequestBody,
    deadline: Option<tokio::time::Instant>,
    backend_response_headers: Option<&'a HeaderModifier>,
) -> impl Future<Output = Response<ResponseBody>> + Send + use<'a> {
    async move {
        let retry = &rule.retry;
        // In progress for the retry budget until the response head is here (or nothing more is
        // tried).
        let _active = backend.request();
        // The retry in progress (its backoff and its attempt), held within the budget.
        let mut retrying: Option<upstream::ActiveRetry<'_>> = None;
        // The endpoints tried, on the stack (a request tries one, or a few).
        let mut tried: SmallVec<[usize; 4]> = SmallVec::new();
        let mut retries = 0u32;
        // gRPC needs HTTP/2 whatever the Backend says it speaks.
        let protocol = if rule.grpc {
            BackendProtocol::Http2
        } else {
            backend.def.protocol
        };
        // HTTP/1.1 goes through the proxy's own pool, which takes the target as sent (origin
        // form): parsed here once, from the router's own string (no copy of it), and taken by
        // an attempt as its headers are (below). The HTTP/2 client takes the endpoint from an
        // absolute URI, made for each attempt.
        let pooled = protocol == BackendProtocol::Http1;
        let (mut origin, path_and_query) = if pooled {
            (
                Uri::from_maybe_shared(Bytes::from(path_and_query)).ok(),
                String::new(),
            )
        } else {
            (None, path_and_query)
        };
        loop {
            let attempt_started = tokio::time::Instant::now();
            if deadline.is_some_and(|d| attempt_started >= d) {
                // The request timeout passed in a backoff: nothing more is sent.
                upstream_error(&core, &rule.route, "timeout");
                return failure_response(done, Failure::Timeout);
            }
            let Some((index, in_flight)) = backend.pick(&tried) else {
                upstream_error(&core, &rule.route, "no_healthy_endpoint");
                return local(
                    done,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_healthy_endpoint",
                    "no healthy endpoint for this route",
                );
            };
            tried.push(index);
            let attempt_deadline = match (deadline, rule.timeouts.backend_request) {
                (Some(d), Some(b)) => Some(d.min(attempt_started + b)),
                (Some(d), None) => Some(d),
                (None, Some(b)) => Some(attempt_started + b),
                (None, None) => None,
            };
            let endpoint = in_flight.endpoint().clone();
            let authority = &endpoint.authority;
            // The headers are copied only while another attempt may follow (which needs them
            // again); the last possible attempt takes them. So does an attempt on the proxy's own
            // pool when only failures with nothing sent may be retried (no `retry` stanza): the
            // pool gives such a request back whole. The origin-form target goes the same way.
            let last_attempt = retries >= retry.attempts || !body.replayable();
            let given_back = pooled && !retry.after_send && retry.codes.is_empty();
            let headers_taken = last_attempt || given_back;
            let uri: Option<Uri> = if pooled {
                if headers_taken {
                    origin.take()
                } else {
                    origin.clone()
                }
            } else {
                let scheme = if tls_client.is_some() {
                    "https"
                } else {
                    "http"
                };
                // Made to its exact size and parsed from itself: `str::parse` would copy it,
                // and so would `Bytes` a string with room to spare.
                let mut absolute = String::with_capacity(
                    scheme.len() + 3 + authority.len() + path_and_query.len(),
                );
                for part in [scheme, "://", authority, &path_and_query] {
                    absolute.push_str(part);
                }
                Uri::from_maybe_shared(Bytes::from(absolute)).ok()
            };
            let Some(uri) = uri else {
                return local(
                    done,
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request target cannot be forwarded",
                );
            };
            let (upstream_body, body_sent) = body.take();
            let mut up = Request::new(upstream_body);
            *up.method_mut() = parts.method.clone();
            *up.uri_mut() = uri;
            *up.version_mut() = Version::HTTP_11;
            *up.headers_mut() = if headers_taken {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };

            let sent = async {
                match protocol {
                    BackendProtocol::Http2 => {
                        let Some(up) = backend_h2::with_authority(up) else {
                            return Err((
                                Failure::NotSent,
                                "the host cannot be an HTTP/2 :authority".into(),
                                None,
                            ));
                        };
                        // Boxed: its state (about 7 KB) would otherwise be part of every
                        // request's future, HTTP/1.1 ones too, and be copied each time that
                        // future moves (docs/benchmarks-issue13.md, round 6).
                        Box::pin(backend.h2.send(
                            crate::worker(),
                            authority,
                            tls_client.map(|t| &t.h2),
                            core.limits.connect_timeout,
                            up,
                        ))
                        .await
                        .map(|r| r.map(BackendBody::from))
                        .map_err(|e| (e.failure, e.error, None))
                    }
                    BackendProtocol::Http1 => {
                        backend_h1::send(&endpoint, core.h1_pool, tls_client, up)
                            .await
                            .map_err(|e| (e.failure, e.error, e.unsent))
                    }
                }
            };
            // One timer for the attempt and, when its head comes in time, for its response
            // body (the same instant): one timer entry per request, not two.
            let mut timer = attempt_deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
            let result = match timer.as_mut() {
                Some(timer) => {
                    let mut sent = std::pin::pin!(sent);
                    let outcome = std::future::poll_fn(|cx| {
                        if let Poll::Ready(r) = sent.as_mut().poll(cx) {
                            return Poll::Ready(Some(r));
                        }
                        timer.as_mut().poll(cx).map(|()| None)
                    })
                    .await;
                    match outcome {
                        // A head that came as the timer fired is as late as none: which of the
                        // two the runtime saw first must not decide the answer (a 500 where the
                        // deadline says 504).
                        Some(_) if tokio::time::Instant::now() >= timer.deadline() => None,
                        r => r,
                    }
                }
                None => Some(sent.await),
            };
            // A response whose status or framing cannot be relayed is the backend's failure
            // (502), as one hyper could not parse; its connection is not used again (where that
            // response ended is not known; after a 101, what follows is not HTTP).
            let result = result.map(|r| {
                r.and_then(|mut resp| {
                    let problem =
                        forwarded::response_status_problem(resp.status(), false).or_else(|| {
                            (resp.version() < Version::HTTP_2)
                                .then(|| forwarded::response_framing_problem(resp.headers()))
                                .flatten()
                        });
                    match problem {
                        Some(why) => {
                            resp.body_mut().discard_connection();
                            Err((Failure::InvalidResponse, BoxError::from(why), None))
                        }
                        None => {
                            forwarded::single_content_length(resp.headers_mut());
                            Ok(resp)
                        }
                    }
                })
            });
            let mut headers_back = false;
            let failure = match result {
                None if body.state().is_some_and(|s| s.incomplete()) => {
                    // Still waiting for the client's body: the client is slow, not the backend.
                    debug!(route = %rule.route, endpoint = %authority, "the request body did not arrive in time");
                    return local(
                        done,
                        StatusCode::REQUEST_TIMEOUT,
                        "body_timeout",
                        "the request body did not arrive in time",
                    );
                }
                Some(Err(_)) if body.state().is_some_and(|s| s.client_error()) => {
                    return local(
                        done,
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "the request body could not be read",
                    );
                }
                Some(Err(_)) if body.state().is_some_and(|s| s.too_large()) => {
                    // The client's body grew past the limit: the backend is not at fault.
                    return body_too_large(&core, &rule.route, done);
                }
                None => {
                    // The endpoint is blamed when it had its full time: its per-try timeout, or
                    // (without one) the whole request timeout of a first attempt.
                    let had_its_time = match rule.timeouts.backend_request {
                        Some(b) => attempt_started.elapsed() >= b,
                        None => retries == 0,
                    };
                    if had_its_time {
                        backend.failure(index);
                    }
                    upstream_error(&core, &rule.route, "timeout");
                    debug!(route = %rule.route, endpoint = %authority, "backend timed out");
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return failure_response(done, Failure::Timeout);
                    }
                    Failure::Timeout
                }
                Some(Err((f, e, unsent))) => {
                    if let Some(unsent) = unsent {
                        let (back, _) = unsent.into_parts();
                        parts.headers = back.headers;
                        if pooled {
                            origin = Some(back.uri);
                        }
                        headers_back = true;
                    }
                    backend.failure(index);
                    upstream_error(&core, &rule.route, failure_reason(f));
                    debug!(route = %rule.route, endpoint = %authority, error = %e, failure = ?f, "attempt to the backend failed");
                    f
                }
                Some(Ok(resp)) => {
                    let status = resp.status();
                    if matches!(status.as_u16(), 502..=504) {
                        backend.failure(index);
                    } else {
                        backend.success(index);
                    }
                    if retry.codes.contains(&status.as_u16())
                        && retries < retry.attempts
                        && body.replayable()
                    {
                        // The budget is asked before the response is let go: refused, it is the
                        // answer. The retry before this one (if any) is over: its place is free.
                        drop(retrying.take());
                        if let Some(r) = backend.try_retry() {
                            retrying = Some(r);
                            drop(resp);
                            drop(in_flight);
                            retries += 1;
                            sleep_before_retry(retry.backoff, retries, deadline).await;
                            continue;
                        }
                        debug!(route = %rule.route, backend = %backend.def.label, "retry refused: over the retry budget");
                    }
                    let (mut rparts, rbody) = resp.into_parts();
                    // The client gets this hop's version, not the backend's (RFC 9110 section
                    // 2.5): an HTTP/1.0 backend's would cost it keep-alive and chunking.
                    rparts.version = Version::HTTP_11;
                    forwarded::strip_hop_by_hop(&mut rparts.headers);
                    if let Some(m) = &rule.response_headers {
                        m.apply(&mut rparts.headers);
                    }
                    if let Some(m) = backend_response_headers {
                        m.apply(&mut rparts.headers);
                    }
                    if status == StatusCode::NO_CONTENT {
                        // A 204 has no content and no Content-Length (RFC 9110 section 8.6: a
                        // server MUST NOT send one). hyper drops a backend's towards HTTP/1.1
                        // clients but not towards HTTP/2 ones, which refuse the response as
                        // malformed (RFC 9113 section 8.1.1).
                        rparts.headers.remove(header::CONTENT_LENGTH);
                    }
                    done.status = status.as_u16();
                    done.upstream = Some(in_flight);
                    done.body = body.state().cloned();
                    return Response::from_parts(
                        rparts,
                        // The body is bound by the attempt's deadline: its timer goes on.
                        ResponseBody::upstream(rbody, timer, done),
                    );
                }
            };
            drop(in_flight);
            // Headers an attempt took and did not give back cannot go with another.
            let may_retry = retries < retry.attempts
                && body.replayable()
                && (!headers_taken || headers_back)
                && failure.retryable(retry.after_send, &parts.method, body_sent.get());
            if !may_retry {
                return failure_response(done, failure);
            }
            drop(retrying.take());
            match backend.try_retry() {
                Some(r) => retrying = Some(r),
                None => {
                    debug!(route = %rule.route, backend = %backend.def.label, "retry refused: over the retry budget");
                    return failure_response(done, failure);
                }
            }
            retries += 1;
            sleep_before_retry(retry.backoff, retries, deadline).await;
        }
    }
}

/// Waits before retry number `n`; never past the request's deadline.
async fn sleep_before_retry(
    base: std::time::Duration,
    n: u32,
    deadline: Option<tokio::time::Instant>,
) {
    let wait = upstream::backoff(base, n);
    if wait.is_zero() {
        return;
    }
    let until = tokio::time::Instant::now() + wait;
    tokio::time::sleep_until(deadline.map_or(until, |d| d.min(until))).await;
}

/// The `reason` label of `tollgate_http_upstream_errors_total` (and the access log) for `f`.
fn failure_reason(f: Failure) -> &'static str {
    match f {
        Failure::Connect => "connect",
        Failure::Tls => "tls",
        Failure::NotSent | Failure::Reset => "reset",
        Failure::InvalidResponse => "invalid_response",
        Failure::Timeout => "timeout",
    }
}

/// The answer when the last attempt failed and nothing more may be tried. No response from
/// the backend (no connection, or one lost before the response head): 503, as the Gateway
/// API's `HTTPRouteRetryConnectionError` expects once the attempts are spent (and Envoy
/// answers). A response that is not HTTP: 502. No response in time: 504.
pub(crate) fn failure_response(done: Completion, f: Failure) -> Response<ResponseBody> {
    let (status, message) = match f {
        Failure::Connect => (
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot connect to the backend",
        ),
        Failure::Tls => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the TLS handshake with the backend failed",
        ),
        Failure::NotSent | Failure::Reset => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the backend closed the connection without an answer",
        ),
        Failure::InvalidResponse => (
            StatusCode::BAD_GATEWAY,
            "the backend's response is not valid HTTP",
        ),
        Failure::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "the backend did not answer in time",
        ),
    };
    local(done, status, failure_reason(f), message)
}
