//! What of a revision's L7 objects is served, in the Gateway API's vocabulary: the objects
//! left out (each with its problems), what applies only in part (rules dropped, rules that
//! answer 500, listeners left out), and per HTTPRoute the conditions of each parent
//! (`Accepted`, `ResolvedRefs`, `PartiallyInvalid`, with the reasons of
//! `gateway.networking.k8s.io/v1`), so that a Kubernetes status writer can copy them into
//! `RouteParentStatus`.
use serde::Serialize;
use tollgate_model::{LeftOut, PolicyError};

/// `Accepted`: the route is attached to the parent.
pub const ACCEPTED: &str = "Accepted";
/// `ResolvedRefs`: every reference of the route resolved.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// `PartiallyInvalid`: some rules were dropped (they were invalid), the others serve.
pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";
/// Tollgate's own condition: every policy that targets the route applies (when `False`, a
/// policy meant to guard the route was left out, and the route answers 500 rather than serve
/// without it).
pub const POLICIES_APPLIED: &str = "tollgate.dev/PoliciesApplied";

/// Condition reasons of the Gateway API (`RouteConditionReason`) and Tollgate's own.
pub mod reason {
    /// Accepted / ResolvedRefs / PoliciesApplied: all well.
    pub const ACCEPTED: &str = "Accepted";
    /// ResolvedRefs=True.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// Accepted=False: no Gateway (or listener) of the revision is the parent named.
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    /// Accepted=False: the listeners do not allow routes of this namespace (or kind).
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    /// Accepted=False: no hostname of the route is served by the listeners.
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    /// Accepted=False / PartiallyInvalid=True: a value is invalid or not supported.
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    /// ResolvedRefs=False: a backendRef names an object that does not exist.
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    /// ResolvedRefs=False: a backendRef names a group/kind that is not supported.
    pub const INVALID_KIND: &str = "InvalidKind";
    /// ResolvedRefs=False: a backendRef to another namespace that no ReferenceGrant allows.
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    /// ResolvedRefs=False: a backendRef's port speaks a protocol (`protocol`, `appProtocol`)
    /// the proxy cannot send requests in.
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    /// PoliciesApplied=False: a policy that targets the route was left out.
    pub const POLICY_LEFT_OUT: &str = "PolicyLeftOut";
    /// Accepted=False: an HTTPRoute and a GRPCRoute attach to one listener with hostnames
    /// that meet; the older (then the first by namespace/name) is accepted. The Gateway API
    /// names no reason for this; implementations use `Conflicted`.
    pub const CONFLICTED: &str = "Conflicted";
}

/// One condition, as `metav1.Condition` has it (without times and generations, which the
/// status writer sets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// `Accepted`, `ResolvedRefs`, `PartiallyInvalid`, ...
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    /// CamelCase reason ([`reason`]).
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

impl Condition {
    /// A condition with `status` True or False.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_,
            status: if status { "True" } else { "False" },
            reason,
            message: message.into(),
        }
    }

    /// Whether the status is True.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The parent a route names (`spec.parentRefs[i]`), as written (defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// API group (`gateway.networking.k8s.io`).
    pub group: String,
    /// Kind (`Gateway`).
    pub kind: String,
    /// Namespace (the route's when the reference names none).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Listener name, when the reference names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Port, when the reference names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// The status of a route for one parent (`RouteParentStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentStatus {
    /// Which parent.
    pub parent_ref: ParentRef,
    /// `Accepted`, `ResolvedRefs`, and `PartiallyInvalid` when rules were dropped.
    pub conditions: Vec<Condition>,
}

/// The status of one route (HTTPRoute or GRPCRoute) of the revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// File it is written in.
    pub file: String,
    /// Whether any of it is served.
    pub served: bool,
    /// Per parent.
    pub parents: Vec<ParentStatus>,
}

impl RouteStatus {
    /// Whether every condition of every parent is the good one: nothing of the route is left
    /// out, dropped or answering 500.
    pub fn clean(&self) -> bool {
        self.served
            && self.parents.iter().all(|p| {
                p.conditions
                    .iter()
                    .all(|c| c.is_true() != (c.type_ == PARTIALLY_INVALID))
            })
    }
}

/// What of a revision's L7 objects is served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Acceptance {
    /// Objects left out, each with every problem found in it (the rest of the revision is
    /// served).
    pub left_out: Vec<LeftOut>,
    /// Routes attached to each listener that is not served for references that do not
    /// resolve, by (`namespace/gateway`, listener): its `attachedRoutes` (the served
    /// listeners' come from the routes' attachments).
    pub unserved_attached: std::collections::BTreeMap<(String, String), u32>,
    /// Objects that are served only in part, one problem each: a rule dropped (it is
    /// invalid), a rule that answers 500 (a backendRef that does not resolve, no backendRefs,
    /// an `ExtensionRef` filter), a listener left out, route kinds a listener ignores, a
    /// parent a route could not attach to, a route that answers 500 because a policy
    /// targeting it was left out.
    pub partial: Vec<PolicyError>,
    /// Every HTTPRoute of the revision (left out or not, in route order) with its conditions.
    pub routes: Vec<RouteStatus>,
    /// Listener references that do not resolve, with the Gateway API's reason, so that a
    /// status writer need not guess it from a problem's text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listener_refs: Vec<ListenerRefProblem>,
}

/// Listener condition reasons of the Gateway API (`ListenerConditionReason`) that the
/// compiler decides.
pub mod listener_reason {
    /// ResolvedRefs=False: a certificateRef to another namespace that no ReferenceGrant allows
    /// (the listener is left out).
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    /// ResolvedRefs=False: `allowedRoutes.kinds` names a kind Tollgate does not serve (the
    /// listener serves the kinds it names that Tollgate does, and is left out when none is).
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
}

/// A reference of a Gateway's listener that does not resolve: the listener's
/// `ResolvedRefs=False`, whether it is left out (its problem is then among the Gateway's) or
/// served (the problem is in [`Acceptance::partial`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerRefProblem {
    /// The Gateway's file, as its problems name it.
    pub file: String,
    /// Index of the listener in `spec.listeners`.
    pub listener: usize,
    /// The field of the reference (`spec.listeners[i]...`).
    pub field: String,
    /// [`listener_reason`].
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

impl Acceptance {
    /// Whether everything of the revision is served as written.
    pub fn complete(&self) -> bool {
        self.left_out.is_empty() && self.partial.is_empty()
    }

    /// Every problem, left-out objects' first.
    pub fn problems(&self) -> Vec<PolicyError> {
        self.left_out
            .iter()
            .flat_map(|o| o.problems.iter().cloned())
            .chain(self.partial.iter().cloned())
            .collect()
    }

    /// Left-out objects per kind (every L7 kind, 0 included), for the metric.
    pub fn left_out_by_kind(&self) -> Vec<(&'static str, usize)> {
        L7_KINDS
            .iter()
            .map(|k| (*k, self.left_out.iter().filter(|o| o.kind == *k).count()))
            .collect()
    }
}

/// The L7 kinds, whose objects are isolated.
pub const L7_KINDS: [&str; 7] = [
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "Backend",
    "AuthPolicy",
    "RateLimitPolicy",
    "BackendTrafficPolicy",
];
