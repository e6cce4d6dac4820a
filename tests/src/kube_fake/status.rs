//! `Status` error bodies as the real API server sends them (kind `Status`, `code`, `reason`,
//! `message`, `details`), so that kube's client maps them to the same `ErrorResponse`s it gets
//! from a real cluster.

use std::fmt;

use serde_json::{json, Value};

/// One failed API call: the HTTP code and the `Status` body the server answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`: NotFound, AlreadyExists, Conflict, Invalid, Expired, BadRequest, ...
    pub reason: &'static str,
    /// `Status.message`, worded as the real server words it where tests may read it.
    pub message: String,
    /// `Status.details` (name, group, kind, causes), when the real server gives them.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 404 for an object: `{resource} "{name}" not found`.
    pub fn not_found(resource: &Resource, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
        )
        .with_details(resource.details(name))
    }

    /// 404 for a path that names no registered resource.
    pub fn no_such_resource() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 409 on create: `{resource} "{name}" already exists`.
    pub fn already_exists(resource: &Resource, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource.qualified()),
        )
        .with_details(resource.details(name))
    }

    /// 409 on a write with a stale `metadata.resourceVersion` (optimistic concurrency).
    pub fn conflict(resource: &Resource, name: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                resource.qualified()
            ),
        )
        .with_details(resource.details(name))
    }

    /// 409 on a failed delete precondition (uid or resourceVersion).
    pub fn precondition_failed(resource: &Resource, name: &str, what: String) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what}",
                resource.qualified()
            ),
        )
        .with_details(resource.details(name))
    }

    /// 409 on a server-side apply that would take fields other managers own, without `force`.
    /// `conflicts` are (manager, field path as `.a.b`).
    pub fn apply_conflict(resource: &Resource, name: &str, conflicts: &[(String, String)]) -> Self {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| format!("conflict with \"{manager}\": {field}"))
            .collect();
        let message = if lines.len() == 1 {
            format!("Apply failed with 1 conflict: {}", lines[0])
        } else {
            format!(
                "Apply failed with {} conflicts: {}",
                lines.len(),
                lines.join("\n")
            )
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({
                    "type": "FieldManagerConflict",
                    "message": format!("conflict with \"{manager}\""),
                    "field": field,
                })
            })
            .collect();
        let mut details = resource.details(name);
        details["causes"] = Value::Array(causes);
        ApiError::new(409, "Conflict", message).with_details(details)
    }

    /// 422 with field causes: `{Kind}.{group} "{name}" is invalid: {field}: {detail}`.
    pub fn invalid(kind_group: &str, name: &str, field: &str, detail: &str) -> Self {
        ApiError::new(
            422,
            "Invalid",
            format!("{kind_group} \"{name}\" is invalid: {field}: {detail}"),
        )
        .with_details(json!({
            "name": name,
            "kind": kind_group,
            "causes": [{"type": "FieldValueInvalid", "message": detail, "field": field}],
        }))
    }

    /// 410 Expired for a resourceVersion older than the compacted history.
    pub fn too_old(requested: u64, oldest: u64) -> Self {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 410 Expired for a continue token whose snapshot was compacted away.
    pub fn continue_expired() -> Self {
        ApiError::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        )
    }

    /// 504 for a resourceVersion the server has not reached yet.
    pub fn too_large(requested: u64, current: u64) -> Self {
        ApiError::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
        .with_details(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        }))
    }

    /// 400 BadRequest with the given message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    /// 401 when the bearer token is missing or wrong.
    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405 for a verb the path does not support.
    pub fn method_not_allowed(method: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 415 for a patch (or body) type the resource does not accept.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            ),
        )
    }

    /// Any code chosen by an injected fault.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            403 => "Forbidden",
            401 => "Unauthorized",
            404 => "NotFound",
            409 => "Conflict",
            _ => "Unknown",
        };
        ApiError::new(code, reason, format!("injected failure ({code})"))
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// What error messages need to name a resource: its plural and group.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    /// Plural (`leases`).
    pub plural: &'a str,
    /// Group (`coordination.k8s.io`; empty for the core group).
    pub group: &'a str,
}

impl Resource<'_> {
    /// `leases.coordination.k8s.io` (`configmaps` for the core group), as messages name it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn details(&self, name: &str) -> Value {
        json!({"name": name, "group": self.group, "kind": self.plural})
    }
}
