//! The HTTP side: one hyper HTTP/1.1 connection per client, the bearer-token check, injected
//! faults, the request log, routing of API paths to the store, and responses.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::discovery;
use super::fields::Scope;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{ListQuery, Patch, Preconditions, Store, WatchQuery, WriteCtx};
use super::watch::{self, WatchFilter, WatchRun};
use super::{Fault, FaultAction, Kind, RequestRecord};

/// The real API server refuses request bodies over 3 MiB.
const MAX_BODY: usize = 3 * 1024 * 1024;
/// The longest a watch stays open without `timeoutSeconds` (the real server picks 30-60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

type ResponseBody = BoxBody<Bytes, Infallible>;

/// State shared by the connections and the test API.
pub struct Shared {
    pub store: Arc<Mutex<Store>>,
    pub requests: Mutex<Vec<RequestRecord>>,
    pub faults: Mutex<Vec<Fault>>,
    pub token: Option<String>,
    pub bookmark_interval: Duration,
}

/// An injected connection reset: hyper closes the connection without a response.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for Reset {}

/// Accepts connections until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    // Errors here are clients going away (or an injected reset): nothing to report.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
}

fn json_response(code: u16, value: &Value) -> Response<ResponseBody> {
    let body = serde_json::to_vec(value).expect("a JSON value serializes");
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("a valid response")
}

fn error_response(err: &ApiError) -> Response<ResponseBody> {
    json_response(err.code, &err.to_status())
}

/// Go's strconv.ParseBool, which the real server uses for boolean parameters.
fn parse_bool(value: Option<&str>) -> bool {
    matches!(value, Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
}

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Reset> {
    let query = req.uri().query().unwrap_or("").to_string();
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let user_agent = header(&req, USER_AGENT);
    let mut record = RequestRecord {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: query.clone(),
        content_type: header(&req, CONTENT_TYPE),
        accept: header(&req, ACCEPT),
        field_manager: param("fieldManager"),
        force: param("force").map(|f| parse_bool(Some(&f))),
        dry_run: param("dryRun").as_deref() == Some("All"),
        watch: parse_bool(param("watch").as_deref()) || legacy_watch_path(req.uri().path()),
        user_agent: user_agent.clone(),
        params: params.clone(),
        body: None,
        status: 0,
    };
    let authorized = match &shared.token {
        None => true,
        Some(token) => {
            header(&req, AUTHORIZATION).as_deref() == Some(format!("Bearer {token}").as_str())
        }
    };
    let fault = take_fault(&shared, &record);
    let method = req.method().clone();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            record.status = 413;
            shared.requests.lock().expect("request log").push(record);
            let err = ApiError::bad_request("the request body is too large");
            return Ok(json_response(
                413,
                &ApiError {
                    code: 413,
                    reason: "RequestEntityTooLarge",
                    ..err
                }
                .to_status(),
            ));
        }
    };
    if !body.is_empty() {
        record.body = serde_json::from_slice(&body)
            .ok()
            .or_else(|| Some(Value::String(String::from_utf8_lossy(&body).into_owned())));
    }
    match fault.map(|f| f.action) {
        Some(FaultAction::Reset) => {
            shared.requests.lock().expect("request log").push(record);
            return Err(Reset);
        }
        Some(FaultAction::Status(code)) => {
            let response = error_response(&ApiError::injected(code));
            record.status = response.status().as_u16();
            shared.requests.lock().expect("request log").push(record);
            return Ok(response);
        }
        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    // The log is held while the request takes effect: whoever sees its effect in the store
    // (a test waiting for a status) then finds the request in the log too.
    let mut log = shared.requests.lock().expect("request log");
    let response = route_checked(&shared, authorized, &method, &record, &body);
    record.status = response.status().as_u16();
    log.push(record);
    drop(log);
    Ok(response)
}

/// `/api/v1/watch/...` or `/apis/{g}/{v}/watch/...` (deprecated, still served).
fn legacy_watch_path(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(
        segments.as_slice(),
        ["api", _, "watch", ..] | ["apis", _, _, "watch", ..]
    )
}

fn take_fault(shared: &Shared, record: &RequestRecord) -> Option<Fault> {
    let mut faults = shared.faults.lock().expect("fault list");
    let at = faults.iter().position(|f| f.matches(record))?;
    let fault = faults[at].clone();
    if let Some(left) = &mut faults[at].times {
        *left -= 1;
        if *left == 0 {
            faults.remove(at);
        }
    }
    Some(fault)
}

fn route_checked(
    shared: &Arc<Shared>,
    authorized: bool,
    method: &Method,
    record: &RequestRecord,
    body: &Bytes,
) -> Response<ResponseBody> {
    if !authorized {
        return error_response(&ApiError::unauthorized());
    }
    match route(shared, method, record, body) {
        Ok(response) => response,
        Err(err) => error_response(&err),
    }
}

/// What a path names.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
    watch_path: bool,
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    record: &RequestRecord,
    body: &Bytes,
) -> Result<Response<ResponseBody>, ApiError> {
    let segments: Vec<&str> = record.path.trim_matches('/').split('/').collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["version"] => return Ok(json_response(200, &discovery::version())),
        ["healthz" | "readyz" | "livez"] => {
            return Ok(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()))
        }
        ["api"] => return Ok(json_response(200, &discovery::core_versions())),
        ["apis"] => {
            let store = shared.store.lock().expect("store");
            return Ok(json_response(200, &discovery::groups(store.kinds())));
        }
        ["apis", g] => {
            let store = shared.store.lock().expect("store");
            let doc = discovery::group(store.kinds(), g).ok_or_else(ApiError::no_such_resource)?;
            return Ok(json_response(200, &doc));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_such_resource()),
    };
    if rest.is_empty() {
        let store = shared.store.lock().expect("store");
        let doc = discovery::resources(store.kinds(), group, version)
            .ok_or_else(ApiError::no_such_resource)?;
        return Ok(json_response(200, &doc));
    }
    let target = resolve(shared, group, version, rest)?;
    dispatch(shared, method, record, body, target)
}

fn resolve(shared: &Shared, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (watch_path, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let store = shared.store.lock().expect("store");
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if store.kind_at(group, version, plural).is_some() =>
        {
            (Some(ns.to_string()), *plural, tail.first(), tail.get(1..))
        }
        [plural, tail @ ..] => (None, *plural, tail.first(), tail.get(1..)),
        [] => return Err(ApiError::no_such_resource()),
    };
    let kind = store
        .kind_at(group, version, plural)
        .ok_or_else(ApiError::no_such_resource)?;
    let status = match sub.unwrap_or(&[]) {
        [] => false,
        ["status"] if kind.status_subresource => true,
        _ => return Err(ApiError::no_such_resource()),
    };
    if namespace.is_some() && !kind.namespaced
        || (kind.namespaced && namespace.is_none() && name.is_some())
        || (status && name.is_none())
        || (watch_path && status)
    {
        return Err(ApiError::no_such_resource());
    }
    Ok(Target {
        kind,
        namespace,
        name: name.map(|n| n.to_string()),
        status,
        watch_path,
    })
}

fn filter_from(
    record: &RequestRecord,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<WatchFilter, ApiError> {
    let mut fields = record
        .param("fieldSelector")
        .unwrap_or_default()
        .to_string();
    if let Some(name) = name {
        // A watch on one object (`/watch/.../{name}`) is a field selector on its name.
        if !fields.is_empty() {
            fields.push(',');
        }
        fields.push_str(&format!("metadata.name={name}"));
    }
    Ok(WatchFilter {
        namespace: namespace.map(str::to_string),
        labels: LabelSelector::parse(record.param("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(&fields)?,
    })
}

fn write_ctx(record: &RequestRecord) -> Result<WriteCtx, ApiError> {
    match record.param("dryRun") {
        None | Some("All") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            )))
        }
    }
    // Without a fieldManager the real server names the manager after the User-Agent's product.
    let manager = record.field_manager.clone().unwrap_or_else(|| {
        record
            .user_agent
            .as_deref()
            .and_then(|ua| ua.split('/').next())
            .unwrap_or("unknown")
            .to_string()
    });
    if manager.len() > 128 {
        return Err(ApiError::invalid(
            "PatchOptions.meta.k8s.io",
            "",
            "fieldManager",
            "Too long: may not be longer than 128",
        ));
    }
    Ok(WriteCtx {
        manager,
        dry_run: record.dry_run,
    })
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    record: &RequestRecord,
    body: &Bytes,
    t: Target,
) -> Result<Response<ResponseBody>, ApiError> {
    let ns = t.namespace.as_deref();
    let kind = &t.kind;
    let scope = if t.status {
        Scope::Status
    } else {
        kind.main_scope()
    };
    if record.watch || t.watch_path {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        return start_watch(shared, record, &t);
    }
    match (method.clone(), t.name.as_deref()) {
        (Method::GET, None) => {
            let limit = match record.param("limit") {
                None => None,
                Some(l) => Some(
                    l.parse::<i64>()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit \"{l}\"")))?
                        .max(0) as usize,
                ),
            };
            let q = ListQuery {
                resource_version: record.param("resourceVersion").map(str::to_string),
                resource_version_match: record.param("resourceVersionMatch").map(str::to_string),
                limit,
                continue_token: record
                    .param("continue")
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
                filter: filter_from(record, ns, None)?,
            };
            let store = shared.store.lock().expect("store");
            let list = store.list(kind, ns, &q)?;
            if wants_metadata_list(record.accept.as_deref()) {
                Ok(json_response(200, &metadata_list(list)))
            } else {
                Ok(json_response(200, &list))
            }
        }
        (Method::POST, None) => {
            if kind.namespaced && ns.is_none() {
                return Err(ApiError::method_not_allowed("POST"));
            }
            let ctx = write_ctx(record)?;
            let obj = parse_json(body)?;
            let created = shared
                .store
                .lock()
                .expect("store")
                .create(kind, ns, obj, &ctx, false)?;
            Ok(json_response(201, &created))
        }
        (Method::DELETE, None) => {
            let filter = filter_from(record, ns, None)?;
            let mut store = shared.store.lock().expect("store");
            let mut items = Vec::new();
            for (object_ns, name) in store.names_matching(kind, ns, &filter) {
                let object_ns = kind.namespaced.then_some(object_ns.as_str());
                let (obj, _) = store.delete(
                    kind,
                    object_ns,
                    &name,
                    &Preconditions::default(),
                    record.dry_run,
                )?;
                items.push(obj);
            }
            let list = serde_json::json!({
                "kind": format!("{}List", kind.kind),
                "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": store.resource_version().to_string()},
                "items": items,
            });
            Ok(json_response(200, &list))
        }
        (Method::GET, Some(name)) => {
            let store = shared.store.lock().expect("store");
            Ok(json_response(200, &store.get(kind, ns, name)?))
        }
        (Method::PUT, Some(name)) => {
            let ctx = write_ctx(record)?;
            let obj = parse_json(body)?;
            let updated = shared
                .store
                .lock()
                .expect("store")
                .update(kind, ns, name, obj, scope, &ctx)?;
            Ok(json_response(200, &updated))
        }
        (Method::PATCH, Some(name)) => {
            let ctx = write_ctx(record)?;
            let patch = parse_patch(record, body, kind)?;
            let (obj, created) = shared
                .store
                .lock()
                .expect("store")
                .patch(kind, ns, name, patch, scope, &ctx)?;
            Ok(json_response(if created { 201 } else { 200 }, &obj))
        }
        (Method::DELETE, Some(name)) if !t.status => {
            let (pre, dry_run) = delete_options(record, body)?;
            let (obj, gone) = shared
                .store
                .lock()
                .expect("store")
                .delete(kind, ns, name, &pre, dry_run)?;
            // The real server answers 202 when finalizers keep the object for now.
            Ok(json_response(if gone { 200 } else { 202 }, &obj))
        }
        (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

fn delete_options(record: &RequestRecord, body: &Bytes) -> Result<(Preconditions, bool), ApiError> {
    let mut dry_run = record.dry_run;
    let mut pre = Preconditions::default();
    if !body.is_empty() {
        let opts = parse_json(body)?;
        let s = |p: &str| opts.pointer(p).and_then(Value::as_str).map(str::to_string);
        pre.uid = s("/preconditions/uid");
        pre.resource_version = s("/preconditions/resourceVersion");
        if let Some(list) = opts.get("dryRun").and_then(Value::as_array) {
            dry_run |= list.iter().any(|v| v == "All");
        }
    }
    Ok((pre, dry_run))
}

fn parse_patch(record: &RequestRecord, body: &Bytes, kind: &Kind) -> Result<Patch, ApiError> {
    let content_type = record.content_type.as_deref().unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    let apply = media == "application/apply-patch+yaml";
    if record.force.is_some() && !apply {
        return Err(ApiError::invalid(
            "PatchOptions.meta.k8s.io",
            "",
            "force",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    match media {
        "application/merge-patch+json" => Ok(Patch::Merge(parse_json(body)?)),
        "application/strategic-merge-patch+json" if kind.strategic_merge => {
            Ok(Patch::Merge(parse_json(body)?))
        }
        "application/json-patch+json" => serde_json::from_slice(body)
            .map(Patch::Json)
            .map_err(|e| ApiError::bad_request(format!("the JSON patch is not valid: {e}"))),
        "application/apply-patch+yaml" => {
            if record.field_manager.as_deref().is_none_or(str::is_empty) {
                return Err(ApiError::invalid(
                    "PatchOptions.meta.k8s.io",
                    "",
                    "fieldManager",
                    "Required value: is required for apply patch",
                ));
            }
            let config: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => serde_saphyr::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
            };
            Ok(Patch::Apply {
                config,
                force: record.force.unwrap_or(false),
            })
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn start_watch(
    shared: &Arc<Shared>,
    record: &RequestRecord,
    t: &Target,
) -> Result<Response<ResponseBody>, ApiError> {
    let bookmarks = parse_bool(record.param("allowWatchBookmarks"));
    let q = WatchQuery {
        resource_version: record.param("resourceVersion").map(str::to_string),
        resource_version_match: record.param("resourceVersionMatch").map(str::to_string),
        send_initial_events: parse_bool(record.param("sendInitialEvents")),
        bookmarks,
        filter: filter_from(record, t.namespace.as_deref(), t.name.as_deref())?,
    };
    // Absent or 0: the server's own limit.
    let timeout = match record.param("timeoutSeconds").map(str::parse::<u64>) {
        None | Some(Ok(0)) => DEFAULT_WATCH_TIMEOUT,
        Some(Ok(n)) => Duration::from_secs(n),
        Some(Err(_)) => return Err(ApiError::bad_request("invalid timeoutSeconds")),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let start = shared.store.lock().expect("store").watch(&t.kind, &q, tx)?;
    let body = watch::spawn(
        shared.store.clone(),
        start,
        rx,
        WatchRun {
            kind: t.kind.clone(),
            bookmarks,
            timeout,
            bookmark_interval: shared.bookmark_interval,
        },
    );
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .body(body.boxed())
        .expect("a valid response"))
}

/// Whether `Accept` asks for a metadata-only list (`application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`,
/// what kube's `list_metadata` sends); other media types in the header are alternatives the
/// real server falls back to, so any entry asking for it is taken.
fn wants_metadata_list(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|entry| {
            let params: Vec<&str> = entry.split(';').map(str::trim).collect();
            params.first() == Some(&"application/json")
                && params.contains(&"as=PartialObjectMetadataList")
                && params.contains(&"g=meta.k8s.io")
                && params.contains(&"v=v1")
        })
    })
}

/// A list as the real server answers a metadata-only list: a `PartialObjectMetadataList` of
/// `PartialObjectMetadata` items, each with the object's metadata alone.
fn metadata_list(list: Value) -> Value {
    let items: Vec<Value> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|o| {
                    serde_json::json!({
                        "apiVersion": "meta.k8s.io/v1",
                        "kind": "PartialObjectMetadata",
                        "metadata": o["metadata"].clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": list["metadata"].clone(),
        "items": items,
    })
}
