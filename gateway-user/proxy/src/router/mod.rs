//! One request, start to end: normalise the path, find the route (404 when none), answer a
//! redirect or apply the rule's filters, pick a backend by weight and an endpoint, forward with
//! the rule's timeouts and retries, and hand back the response with its headers cleaned.
//!
//! The route table is loaded once per request: a request that started on one revision ends on
//! it, whatever is swapped in meanwhile.
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderName, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use super::body::{ClientBody, Completion, ResponseBody};
use super::forwarded;
use super::listener::{ConnGuard, ConnInfo, InFlightBudget};
use super::{auth, limit};
use super::{Active, Core};
use crate::decide::{decide, Decision, RequestParts};
use crate::metrics::{AuthFailureLabels, RateLimitedLabels, RouteLabel, UpstreamErrorLabels};
use tollgate_compile::l7::cors;
use tollgate_compile::l7::table::{BackendProtocol, Redirect, Rule};
use tollgate_model::http_path::normalize;
use tollgate_model::BanKind;

mod forward;
mod local;
pub(crate) use forward::failure_response;
use forward::{forward, read_body, RequestBody};
pub(crate) use local::{local, LocalAnswer};
use local::{max_forwards, options_answer, trace_answer, ALLOWED_METHODS};

/// Route label of requests no route matched.
pub const NO_ROUTE: &str = "none";

/// The host of a request: `(as sent, normalised)`. The normalised form is lower-case, without
/// the port or a trailing dot (`API.Example.com.:8080` -> `api.example.com`); HTTP/2's
/// `:authority` (or an absolute URI) wins over the `Host` header. The host as sent is kept as a
/// header value, ready for the backend's `Host` and `X-Forwarded-Host` (the client's own
/// value, not a copy, when it came in `Host`).
pub fn request_host<B>(req: &Request<B>) -> (Option<HeaderValue>, String) {
    match req.uri().authority() {
        Some(a) => {
            let raw = a.as_str().rsplit('@').next().unwrap_or_default();
            (HeaderValue::from_str(raw).ok(), normalise_host(raw))
        }
        None => match req.headers().get(header::HOST) {
            Some(h) => match h.to_str() {
                Ok(raw) => {
                    let host = normalise_host(raw);
                    (Some(h.clone()), host)
                }
                Err(_) => (None, String::new()),
            },
            None => (None, String::new()),
        },
    }
}

pub(crate) fn normalise_host(raw: &str) -> String {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        // An IPv6 literal: keep the brackets, drop the port.
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Where a redirect points (Gateway API `RequestRedirect` semantics): each part the filter
/// leaves out is the request's (the scheme is `https` on an HTTPS listener); the port, when not given, is the scheme's well-known one if the
/// filter sets a scheme, else the listener's; a well-known port is left out of the URL.
pub fn redirect_location(
    r: &Redirect,
    host: &str,
    path: &str,
    prefix: Option<&str>,
    query: Option<&str>,
    listener_port: u16,
    request_scheme: &str,
) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(request_scheme);
    let host = r.hostname.as_deref().unwrap_or(host);
    let port = match (r.port, r.scheme.as_deref()) {
        (Some(p), _) => p,
        (None, Some("https")) => 443,
        (None, Some(_)) => 80,
        (None, None) => listener_port,
    };
    let well_known = if scheme == "https" { 443 } else { 80 };
    let path = match &r.path {
        Some(m) => m.apply(path, prefix),
        None => path.to_owned(),
    };
    let mut out = format!("{scheme}://{host}");
    if port != well_known {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(&path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Counts a failed attempt to reach a backend.
pub(crate) fn upstream_error(core: &Core, route: &Arc<str>, reason: &'static str) {
    core.metrics
        .upstream_errors
        .get_or_create(&UpstreamErrorLabels {
            route: route.to_string(),
            reason,
        })
        .inc();
}

/// Handles one request. An HTTP/1 request with a body that the proxy answers itself (a 404,
/// 401, 413, 408...) may have left its body unread, so that nothing after it on the
/// connection can be read as a request: the answer says `Connection: close` (RFC 9112
/// section 9.6), and hyper closes the connection after it.
#[allow(clippy::manual_async_fn)] // the future's size: see `forward::forward`
pub fn handle(
    core: Arc<Core>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> impl Future<Output = Response<ResponseBody>> + Send {
    async move {
        let http1 = req.version() < Version::HTTP_2;
        let with_body = !req.body().is_end_stream();
        let mut resp = answer(core, conn, ClientBody::of(req)).await;
        if http1 && with_body && resp.extensions().get::<LocalAnswer>().is_some() {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[allow(clippy::manual_async_fn)] // the future's size: see `forward::forward`
fn answer(
    core: Arc<Core>,
    conn: Arc<ConnInfo>,
    mut req: Request<ClientBody>,
) -> impl Future<Output = Response<ResponseBody>> + Send {
    async move {
        let started = Instant::now();
        let mut guard = ConnGuard::new(conn.state.clone());
        // The head lives on until the response ends (twice: the client's and the backend's
        // copy): charged to the in-flight budget, or refused below when it is spent.
        let fits = guard.charge(&core.in_flight, InFlightBudget::cost(&req));
        // One load per request: this request sees one revision, start to end.
        let active = core.state.load_full();
        let client = if conn.hop.trusted {
            forwarded::client_ip(conn.hop.ip, req.headers(), &core.config.trusted_proxies)
        } else {
            conn.hop.ip
        };
        let (host_raw, host) = request_host(&req);
        let mut done = Completion {
            core: core.clone(),
            route: core.no_route.clone(),
            method: req.method().clone(),
            status: 0,
            started,
            upstream: None,
            client,
            host,
            path: req.uri().path().to_owned(),
            reason: "-",
            grpc: super::grpc::is_grpc(req.headers()),
            ratelimit: "-",
            ratelimit_policy: None,
            consumer: None,
            body: None,
            _conn: guard,
            recorded: false,
        };

        if !fits {
            let mut response = local(
                done,
                StatusCode::SERVICE_UNAVAILABLE,
                "memory_budget",
                "the memory for requests in flight is spent; try again shortly",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        if let Some(why) =
            super::host::host_problem(&req).or_else(|| super::host::h2_field_problem(&req))
        {
            let http1 = req.version() < Version::HTTP_2;
            let mut response = local(done, StatusCode::BAD_REQUEST, "bad_request", why);
            if http1 {
                // As for hyper's own 400s: whatever follows a request this wrong is not read.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
        // A chunked body with another transfer coding besides: 501, before any routing (an
        // HTTP/1.1 body of no known length is chunked; others are not looked at).
        if req.version() < Version::HTTP_2
            && req.body().size_hint().exact().is_none()
            && forwarded::request_coding_refused(req.headers())
        {
            return local(
                done,
                StatusCode::NOT_IMPLEMENTED,
                "transfer_coding",
                "the request has a transfer coding other than chunked, which this gateway does not decode",
            );
        }
        if let Some(tls) = &conn.tls {
            if !tls.covers(&done.host) {
                return local(
                    done,
                    StatusCode::MISDIRECTED_REQUEST,
                    "misdirected",
                    "this host is not served by the TLS server name this connection was opened for",
                );
            }
        }
        // What the proxy answers itself, before routing. CONNECT asks for a tunnel, which a
        // reverse proxy does not open (RFC 9110 section 9.3.6): 405 with `Allow`, and the
        // connection closed (tunnel bytes may follow the head).
        if req.method() == Method::CONNECT {
            let http1 = req.version() < Version::HTTP_2;
            let mut resp = local(
                done,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "CONNECT is not served: this gateway forwards requests, it opens no tunnels",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            if http1 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return resp;
        }
        // The asterisk form is for a server-wide OPTIONS only (RFC 9112 section 3.2.4; other
        // methods with it get 400 below, as any path not starting with `/`).
        if req.method() == Method::OPTIONS && req.uri().path() == "*" {
            return options_answer(done);
        }
        // Max-Forwards (RFC 9110 section 7.6.2): on TRACE and OPTIONS, 0 makes the proxy the final
        // recipient; another value is decremented on the way to the backend. A target routing
        // refuses (`TRACE *`, an authority form) gets its 400 first, as without Max-Forwards.
        if matches!(*req.method(), Method::OPTIONS | Method::TRACE) {
            match max_forwards(req.headers()) {
                Some(0) => {
                    if let Err(e) = normalize(req.uri().path()) {
                        return local(done, StatusCode::BAD_REQUEST, "bad_path", e.as_str());
                    }
                    if req.method() == Method::OPTIONS {
                        return options_answer(done);
                    }
                    return trace_answer(done, &req);
                }
                Some(n) => {
                    req.headers_mut()
                        .insert(header::MAX_FORWARDS, HeaderValue::from(n - 1));
                }
                None => {}
            }
        }
        let query = req.uri().query().map(str::to_owned);
        let decision = decide(
            &active.table,
            &RequestParts {
                port: conn.port,
                host: &done.host,
                path: req.uri().path(),
                method: req.method(),
                headers: req.headers(),
                query: query.as_deref(),
            },
        );
        let (path, candidate) = match decision {
            Decision::BadPath(e) => {
                return local(done, StatusCode::BAD_REQUEST, "bad_path", e.as_str())
            }
            Decision::Routed {
                path, candidate, ..
            } => (path, candidate),
            Decision::NoListener { path }
            | Decision::NoListenerForHost { path }
            | Decision::NoRoute { path, .. } => {
                done.path = path;
                return local(
                    done,
                    StatusCode::NOT_FOUND,
                    "no_route",
                    "no route matches this request",
                );
            }
        };
        // The record keeps the path as sent unless normalising changed it (a copy per request
        // saved).
        if done.path != path {
            done.path.clone_from(&path);
        }
        let rule: Arc<Rule> = candidate.rule.clone();
        // The matched prefix is needed only to redirect or rewrite.
        let prefix = (rule.redirect.is_some() || rule.rewrite.is_some())
            .then(|| candidate.prefix().map(str::to_owned))
            .flatten();
        done.route = rule.route.clone();
        // A rule the revision could not serve as written (no backendRefs; a policy meant to
        // guard the route was left out) answers 500, before anything else is done for it.
        if let Some(f) = &rule.failure {
            upstream_error(&core, &rule.route, f.reason);
            return local(
                done,
                StatusCode::INTERNAL_SERVER_ERROR,
                f.reason,
                &f.message,
            );
        }

        // CORS: a preflight is answered here, before authentication (browsers send preflights
        // without credentials); the CORS headers of an allowed origin go on every response of
        // the rule from here on, errors included, so that the page can read why it failed.
        let cors_origin = match (&rule.cors, req.headers().get(header::ORIGIN)) {
            (Some(cors), Some(origin)) => {
                cors.allows(origin).then(|| (cors.clone(), origin.clone()))
            }
            _ => None,
        };
        if rule.cors.is_some() && cors::is_preflight(req.method(), req.headers()) {
            return match &cors_origin {
                Some((cors, origin)) => {
                    done.status = StatusCode::OK.as_u16();
                    done.reason = "cors_preflight";
                    let mut resp = Response::new(ResponseBody::full(Bytes::new(), done));
                    *resp.headers_mut() = cors.preflight(origin, req.headers());
                    resp.extensions_mut().insert(LocalAnswer);
                    resp
                }
                None => local(
                    done,
                    StatusCode::FORBIDDEN,
                    "cors_origin",
                    "this origin is not allowed by the route's CORS filter",
                ),
            };
        }
        let with_cors = |mut resp: Response<ResponseBody>| {
            if let Some((cors, origin)) = &cors_origin {
                cors.respond(origin, resp.headers_mut());
            }
            resp
        };

        // Authentication: first, so that nothing (not even a rate limit bucket) is spent on a
        // request without valid credentials. A consumer header from the client is never
        // believed.
        req.headers_mut().remove(auth::CONSUMER_HEADER);
        if let Some(a) = rule.auth {
            if let Some(def) = active.table.policy.auth.get(a) {
                // Claim headers are only ever the gateway's.
                for h in auth::owned_headers(def) {
                    req.headers_mut().remove(h);
                }
            }
            let (Some(def), Some(rt)) = (active.table.policy.auth.get(a), active.auth.get(a))
            else {
                // Cannot happen (one runtime per policy); never let such a request through.
                return local(
                    done,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "auth_unavailable",
                    "the credentials of this route are not loaded",
                );
            };
            let req_auth = auth::Request {
                headers: req.headers(),
                query: query.as_deref(),
                client_certificate: conn
                    .tls
                    .as_ref()
                    .and_then(|t| t.client_certificate.as_deref()),
            };
            let outcome = auth::authenticate(rt, &req_auth).await.and_then(|ok| {
                if auth::allowed(def, &ok.consumer) {
                    Ok(ok)
                } else {
                    Err(auth::Failure::Forbidden)
                }
            });
            match outcome {
                Ok(ok) => {
                    let consumer_header = ok
                        .consumer_header
                        .or_else(|| HeaderValue::from_str(&ok.consumer).ok());
                    if let Some(v) = consumer_header {
                        req.headers_mut()
                            .insert(HeaderName::from_static(auth::CONSUMER_HEADER), v);
                    }
                    for (h, v) in ok.headers {
                        req.headers_mut().insert(h, v);
                    }
                    done.consumer = Some(ok.consumer);
                }
                Err(failure) => {
                    core.metrics
                        .auth_failures
                        .get_or_create(&AuthFailureLabels {
                            route: rule.route.to_string(),
                            reason: failure.reason(),
                        })
                        .inc();
                    let (status, reason, message) = match failure {
                        auth::Failure::Missing => (
                            StatusCode::UNAUTHORIZED,
                            "auth_missing",
                            "this route needs credentials",
                        ),
                        auth::Failure::Invalid => (
                            StatusCode::UNAUTHORIZED,
                            "auth_invalid",
                            "the credentials are not valid",
                        ),
                        auth::Failure::Token(t) => {
                            (StatusCode::UNAUTHORIZED, "auth_invalid", t.description())
                        }
                        auth::Failure::Busy => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "auth_busy",
                            "too many password checks at once; retry shortly",
                        ),
                        auth::Failure::Forbidden => (
                            StatusCode::FORBIDDEN,
                            "auth_forbidden",
                            "this consumer is not allowed on this route",
                        ),
                    };
                    if failure == auth::Failure::Busy {
                        // Not the client's failure: its credentials were not judged. No ban
                        // count, no challenge (a browser would ask for the password again).
                        let mut resp = local(done, status, reason, message);
                        resp.headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                        return resp;
                    }
                    core.abuse.fail(
                        &active.table.policy.bans,
                        BanKind::Auth,
                        &def.policy,
                        &rule.route,
                        client,
                    );
                    if status == StatusCode::FORBIDDEN {
                        return with_cors(local(done, status, reason, message));
                    }
                    let mut resp = local(done, status, reason, message);
                    for c in auth::challenges(rt, &rule.route, failure) {
                        if let Ok(v) = HeaderValue::from_str(&c) {
                            resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
                        }
                    }
                    return with_cors(resp);
                }
            }
        }

        // Rate limits: before anything else is done for the request.
        let mut limit_header = None;
        if !rule.rate_limits.limits.is_empty() {
            let defs = &active.table.policy.rate_limits;
            let outcome = limit::evaluate(
                defs,
                &active.limiters,
                &rule.rate_limits,
                client,
                req.headers(),
                done.consumer.as_deref(),
            );
            done.ratelimit = "ok";
            for &i in &outcome.shadow_refused {
                ratelimited(&core, &rule.route, &defs[i].policy);
                done.ratelimit = "shadow";
                done.ratelimit_policy = Some(defs[i].policy.clone());
            }
            if let Some((i, retry_after)) = outcome.refused {
                let def = &defs[i];
                ratelimited(&core, &rule.route, &def.policy);
                core.abuse.fail(
                    &active.table.policy.bans,
                    BanKind::Ratelimit,
                    &def.policy,
                    &rule.route,
                    client,
                );
                done.ratelimit = "refused";
                done.ratelimit_policy = Some(def.policy.clone());
                let wait = limit::ceil_secs(retry_after).max(1);
                let message = format!(
                    "over the rate limit \"{}\" of RateLimitPolicy {}; retry in {wait}s",
                    def.name, def.policy
                );
                let mut resp = local(done, StatusCode::TOO_MANY_REQUESTS, "ratelimited", &message);
                let h = resp.headers_mut();
                h.insert(header::RETRY_AFTER, HeaderValue::from(wait));
                limit_headers(h, &rule, outcome.header);
                return with_cors(resp);
            }
            limit_header = outcome.header;
        }
        // Boxed: the rest of the request's path is most of this future's size, and a future
        // is copied whole each time it is made and moved (see `forward::forward`); so this
        // one, `handle`'s and the box `listener::serve_http` makes for it stay small.
        let mut resp = Box::pin(routed(
            core,
            conn,
            active,
            done,
            rule.clone(),
            req,
            prefix,
            path,
            query,
            host_raw,
            started,
        ))
        .await;
        limit_headers(resp.headers_mut(), &rule, limit_header);
        with_cors(resp)
    }
}

/// The `RateLimit-Policy` and `RateLimit` headers of a limited route's response.
fn limit_headers(h: &mut http::HeaderMap, rule: &Rule, rate_limit: Option<HeaderValue>) {
    if let Some(p) = &rule.rate_limits.policy_header {
        h.insert(HeaderName::from_static("ratelimit-policy"), p.clone());
    }
    if let Some(v) = rate_limit {
        h.insert(HeaderName::from_static("ratelimit"), v);
    }
}

/// Counts a request over a limit.
fn ratelimited(core: &Core, route: &Arc<str>, policy: &Arc<str>) {
    core.metrics
        .ratelimited
        .get_or_create(&RateLimitedLabels {
            route: route.to_string(),
            policy: policy.to_string(),
        })
        .inc();
}

/// The rest of a routed request: redirect, or forward to a backend.
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_async_fn)] // the future's size: see `forward::forward`
fn routed(
    core: Arc<Core>,
    conn: Arc<ConnInfo>,
    active: Arc<Active>,
    mut done: Completion,
    rule: Arc<Rule>,
    req: Request<ClientBody>,
    prefix: Option<String>,
    path: String,
    query: Option<String>,
    host_raw: Option<HeaderValue>,
    started: Instant,
) -> impl Future<Output = Response<ResponseBody>> + Send {
    async move {
        if let Some(r) = &rule.redirect {
            let location = redirect_location(
                r,
                &done.host,
                &path,
                prefix.as_deref(),
                query.as_deref(),
                conn.port,
                if conn.tls.is_some() { "https" } else { "http" },
            );
            done.status = r.status.as_u16();
            done.reason = "redirect";
            let mut resp = Response::new(ResponseBody::full(Bytes::new(), done));
            *resp.status_mut() = r.status;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            if let Some(m) = &rule.response_headers {
                m.apply(resp.headers_mut());
            }
            resp.extensions_mut().insert(LocalAnswer);
            return resp;
        }

        let total = rule.total_weight();
        let Some(picked) = (total > 0)
            .then(|| rule.pick(fastrand::u64(..total)))
            .flatten()
        else {
            // Either every weight is 0, or the roll fell in the share of backendRefs that did not
            // resolve: the Gateway API answers 500 for both.
            let (reason, message) = if rule.unresolved_weight > 0 {
                (
                    "unresolved_backend",
                    "the backend this request was sent to is not in the revision",
                )
            } else {
                ("no_backend", "every backend of this route has weight 0")
            };
            upstream_error(&core, &rule.route, reason);
            return local(done, StatusCode::INTERNAL_SERVER_ERROR, reason, message);
        };
        let backend_index = picked.backend;
        let backend_filters = picked.filters.clone();
        let Some(backend) = active.backends.get(backend_index).cloned() else {
            upstream_error(&core, &rule.route, "no_backend");
            return local(
                done,
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_backend",
                "the route's backend is missing",
            );
        };

        // An upgrade (WebSocket) is passed on to HTTP/1.1 backends only (a gRPC rule speaks
        // HTTP/2 to its backends).
        let upgrade_to = if backend.def.protocol == BackendProtocol::Http1 && !rule.grpc {
            super::upgrade::requested(&req)
        } else {
            None
        };
        // The request for the backend.
        let (mut parts, body) = req.into_parts();
        // The consumer and claim headers set above stay, whatever the client's `Connection` says.
        let auth_def = rule.auth.and_then(|a| active.table.policy.auth.get(a));
        forwarded::strip_hop_by_hop_keeping(&mut parts.headers, |name| {
            auth::set_by_proxy(auth_def, name)
        });
        forwarded::strip_underscore_twins(&mut parts.headers, |name| {
            auth::set_by_proxy(auth_def, name)
        });
        forwarded::join_cookies(&mut parts.headers);
        forwarded::single_content_length(&mut parts.headers);
        if rule.grpc {
            // The one TE value HTTP/2 allows, which gRPC servers expect (it says the client
            // reads trailers, where the call's status is): hop-by-hop, so set on this hop.
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(m) = &rule.request_headers {
            m.apply(&mut parts.headers);
        }
        // The backendRef's own filters come after the rule's.
        if let Some(m) = backend_filters
            .as_ref()
            .and_then(|f| f.request_headers.as_ref())
        {
            m.apply(&mut parts.headers);
        }
        forwarded::set_forwarded(
            &mut parts.headers,
            &conn.hop,
            host_raw.as_ref(),
            if conn.tls.is_some() { "https" } else { "http" },
        );
        forwarded::add_via(&mut parts.headers, parts.version);
        let host_header = match rule.rewrite.as_ref().and_then(|r| r.hostname.clone()) {
            Some(h) => Some(h),
            None => host_raw,
        };
        match host_header {
            Some(h) => {
                parts.headers.insert(header::HOST, h);
            }
            None => {
                parts.headers.remove(header::HOST);
            }
        }
        let mut path_and_query = match rule.rewrite.as_ref().and_then(|r| r.path.as_ref()) {
            Some(m) => m.apply(&path, prefix.as_deref()),
            None => path,
        };
        if let Some(q) = &query {
            path_and_query.reserve_exact(1 + q.len());
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let deadline = rule
            .timeouts
            .request
            .map(|d| tokio::time::Instant::from_std(started) + d);

        // The body size limit: a declared length over it is refused before any backend is
        // contacted; a streamed body is cut off when it grows past it.
        let max_body = rule
            .max_request_body
            .unwrap_or(core.limits.max_request_body);
        if body.size_hint().lower() > max_body {
            return body_too_large(&core, &rule.route, done);
        }
        if let Some(protocols) = upgrade_to {
            let tls = active.backend_tls.get(backend_index).cloned().flatten();
            // Boxed, as the HTTP/2 backend's send is: an upgrade's state (about 7 KB) stays out
            // of every other request's future.
            return Box::pin(super::upgrade::forward(
                core,
                conn,
                done,
                rule,
                backend,
                tls,
                parts,
                body,
                &path_and_query,
                protocols,
                max_body,
                deadline,
            ))
            .await;
        }
        // A body that may be sent again (a retry) or copied (a mirror) is buffered, when small.
        let mut body = match read_body(
            &core,
            body,
            deadline,
            rule.retry.attempts > 0 || !rule.mirrors.is_empty(),
            max_body,
        )
        .await
        {
            Ok(b) => b,
            Err((status, reason, message)) => return local(done, status, reason, message),
        };
        if !rule.mirrors.is_empty() {
            let whole = match &body {
                RequestBody::Replayable(b) => Some(b),
                RequestBody::Stream(..) => None,
            };
            super::mirror::spawn_copies(&core, &active, &rule, &parts, &path_and_query, whole);
        }

        let tls_client = active
            .backend_tls
            .get(backend_index)
            .and_then(Option::as_ref);
        forward(
            core,
            done,
            rule,
            backend,
            tls_client,
            parts,
            path_and_query,
            &mut body,
            deadline,
            backend_filters
                .as_ref()
                .and_then(|f| f.response_headers.as_ref()),
        )
        .await
    }
}

/// The 413 of a request refused for a body over the route's limit, counted.
fn body_too_large(core: &Core, route: &Arc<str>, done: Completion) -> Response<ResponseBody> {
    core.metrics
        .body_too_large
        .get_or_create(&RouteLabel {
            route: route.to_string(),
        })
        .inc();
    local(
        done,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the request body is larger than this route accepts",
    )
}

#[cfg(test)]
mod tests;
