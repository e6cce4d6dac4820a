//! `RequestMirror`: a copy of a request goes to another backend, fire and forget. The copy is
//! sent from its own task after the request's body is whole; the client's response never
//! waits for it, and whatever happens to it (no endpoint, a refused connection, a timeout, an
//! error status) touches nothing but the `tollgate_http_mirrored_requests_total` counter.
//!
//! Bounded: at most [`MAX_IN_FLIGHT`] copies are in flight in the whole proxy (beyond, a copy
//! is not sent: `busy`), each is given [`TIMEOUT`], and only buffered bodies are copied (a
//! route with mirrors buffers bodies up to the retry body limit; a larger or streamed body is
//! not copied: `body`). Copies carry the request's method, target and headers as they go to
//! the main backend (filters applied, `X-Forwarded-*` set).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, Version};
use http_body_util::BodyExt as _;
use tollgate_compile::l7::table::{BackendProtocol, Mirror, Rule};

use crate::backend_h2;
use crate::metrics::MirrorLabels;
use crate::upstream::ReplayBody;
use crate::{Active, Core, UpstreamBody};

/// Copies in flight in the whole proxy, at most.
pub const MAX_IN_FLIGHT: usize = 256;
/// How long a copy may take, response body included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Releases a slot of [`IN_FLIGHT`] when the copy is done, however it ends.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

fn count(core: &Core, rule: &Rule, result: &'static str) {
    core.metrics
        .mirrored
        .get_or_create(&MirrorLabels {
            route: rule.route.to_string(),
            result,
        })
        .inc();
}

/// Sends a copy of the request (`parts` as it goes to the main backend, `path_and_query`,
/// and its whole `body`, or `None` when it was streamed) to each mirror of `rule` that
/// selects it.
pub(crate) fn spawn_copies(
    core: &Arc<Core>,
    active: &Arc<Active>,
    rule: &Arc<Rule>,
    parts: &http::request::Parts,
    path_and_query: &str,
    body: Option<&Bytes>,
) {
    for m in &rule.mirrors {
        if !m.selects(fastrand::u32(..m.denominator)) {
            continue;
        }
        let Some(body) = body else {
            count(core, rule, "body");
            continue;
        };
        if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
            count(core, rule, "busy");
            continue;
        }
        let slot = Slot;
        let copy = Copy {
            core: core.clone(),
            active: active.clone(),
            rule: rule.clone(),
            mirror: m.clone(),
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            path_and_query: path_and_query.to_owned(),
            body: body.clone(),
        };
        tokio::spawn(async move {
            let _slot = slot;
            let result = tokio::time::timeout(TIMEOUT, copy.send())
                .await
                .unwrap_or("failed");
            count(&copy.core, &copy.rule, result);
        });
    }
}

/// One copy to send.
struct Copy {
    core: Arc<Core>,
    active: Arc<Active>,
    rule: Arc<Rule>,
    mirror: Mirror,
    method: http::Method,
    headers: http::HeaderMap,
    path_and_query: String,
    body: Bytes,
}

impl Copy {
    /// Sends the copy and reads its response to the end (so that the connection can be
    /// reused); the result label.
    async fn send(&self) -> &'static str {
        let Some(backend) = self.active.backends.get(self.mirror.backend) else {
            return "no_endpoint";
        };
        let tls = self
            .active
            .backend_tls
            .get(self.mirror.backend)
            .cloned()
            .flatten();
        let Some((_, in_flight)) = backend.pick(&[]) else {
            return "no_endpoint";
        };
        let endpoint = in_flight.endpoint().clone();
        let authority = &endpoint.authority;
        let protocol = if self.rule.grpc {
            BackendProtocol::Http2
        } else {
            backend.def.protocol
        };
        // The proxy's own HTTP/1.1 pool takes the target as sent (origin form); the HTTP/2
        // client takes the endpoint from an absolute URI.
        let pooled = protocol == BackendProtocol::Http1;
        let uri = if pooled {
            Uri::try_from(self.path_and_query.as_str())
        } else {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{authority}{}", self.path_and_query).parse::<Uri>()
        };
        let Ok(uri) = uri else {
            return "failed";
        };
        let body: UpstreamBody = http_body_util::Either::Left(ReplayBody::new(self.body.clone()).0);
        let mut up = Request::new(body);
        *up.method_mut() = self.method.clone();
        *up.uri_mut() = uri;
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = self.headers.clone();
        let response = match protocol {
            BackendProtocol::Http2 => {
                let Some(up) = backend_h2::with_authority(up) else {
                    return "failed";
                };
                backend
                    .h2
                    .send(
                        crate::worker(),
                        authority,
                        tls.as_ref().map(|t| &t.h2),
                        self.core.limits.connect_timeout,
                        up,
                    )
                    .await
                    .map(|r| r.map(|b| b.map_err(|_| ()).boxed_unsync()))
                    .map_err(|_| ())
            }
            BackendProtocol::Http1 => {
                crate::backend_h1::send(&endpoint, self.core.h1_pool, tls.as_ref(), up)
                    .await
                    .map(|r| r.map(|b| b.map_err(|_| ()).boxed_unsync()))
                    .map_err(|_| ())
            }
        };
        drop(in_flight);
        match response {
            Ok(r) => match r.into_body().collect().await {
                Ok(_) => "ok",
                Err(_) => "failed",
            },
            Err(()) => "failed",
        }
    }
}
