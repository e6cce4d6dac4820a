//! The routing decision for a request, as a pure function of the route table and the request:
//! the path normalised (or refused), the listener that takes the host on the port, and the
//! HTTPRoute rule and match. The proxy's router and `tollgate explain --request` both call
//! [`decide`], so what `explain` says is what the proxy does.
use http::{HeaderMap, Method};
use tollgate_compile::l7::table::{Candidate, RequestView};
use tollgate_compile::l7::RouteTable;
use tollgate_model::http_path::{normalize, PathError};

/// The parts of a request routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The port the request arrived on (a listener's port).
    pub port: u16,
    /// The host, normalised ([`crate::router::request_host`]): lower case, no port.
    pub host: &'a str,
    /// The path as sent (it is normalised here).
    pub path: &'a str,
    /// The method.
    pub method: &'a Method,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
}

/// What routing decided.
#[derive(Debug, Clone)]
pub enum Decision<'t> {
    /// The path is refused before routing (400 `bad_path`).
    BadPath(PathError),
    /// Nothing listens on the port in this revision (404 `no_route` from the proxy: a
    /// connection accepted before a revision removed the listener).
    NoListener {
        /// The normalised path.
        path: String,
    },
    /// No listener on the port takes the host (404 `no_route`).
    NoListenerForHost {
        /// The normalised path.
        path: String,
    },
    /// A listener takes the host, but no rule attached to it matches (404 `no_route`).
    NoRoute {
        /// The normalised path.
        path: String,
        /// Index into `policy.listeners`.
        listener: usize,
    },
    /// A rule takes the request.
    Routed {
        /// The normalised path (what auth, filters and the backend see).
        path: String,
        /// Index into `policy.listeners`.
        listener: usize,
        /// The rule and the match that took the request.
        candidate: &'t Candidate,
    },
}

impl Decision<'_> {
    /// The normalised path, unless it was refused.
    pub fn path(&self) -> Option<&str> {
        match self {
            Decision::BadPath(_) => None,
            Decision::NoListener { path }
            | Decision::NoListenerForHost { path }
            | Decision::NoRoute { path, .. }
            | Decision::Routed { path, .. } => Some(path),
        }
    }
}

/// Decides how a request is routed; see the module comment.
pub fn decide<'t>(table: &'t RouteTable, req: &RequestParts<'_>) -> Decision<'t> {
    let path = match normalize(req.path) {
        Ok(p) => p,
        Err(e) => return Decision::BadPath(e),
    };
    let Some(port) = table.ports.get(&req.port) else {
        return Decision::NoListener { path };
    };
    let Some(listener) = port.listeners.best(req.host) else {
        return Decision::NoListenerForHost { path };
    };
    let view = RequestView {
        host: req.host,
        path: &path,
        method: req.method,
        headers: req.headers,
        query: req.query,
    };
    match listener.find(&view) {
        Some(candidate) => Decision::Routed {
            listener: listener.listener,
            candidate,
            path,
        },
        None => Decision::NoRoute {
            path,
            listener: listener.listener,
        },
    }
}
