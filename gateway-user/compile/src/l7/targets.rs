//! `spec.targetRefs`, as every policy kind (AuthPolicy, RateLimitPolicy,
//! BackendTrafficPolicy) has them: HTTPRoutes of the policy's own namespace, each named once.
use std::collections::HashSet;

use tollgate_model::gateway::GATEWAY_API_GROUP;
use tollgate_model::ratelimit::PolicyTargetReference;
use tollgate_model::Checker;

use super::limits::*;

/// Checks a policy's `spec.targetRefs` (HTTPRoutes of namespace `ns`, each named once) and
/// returns the names of the routes it targets. `kind` is "an AuthPolicy", ...; `purpose` what
/// the policy does to its routes ("protects", "limits").
pub(super) fn check_target_refs(
    c: &mut Checker<'_, '_>,
    ns: &str,
    kind: &str,
    purpose: &str,
    refs: &[PolicyTargetReference],
    routes: &HashSet<(&str, &str)>,
) -> Vec<String> {
    if refs.is_empty() {
        c.error(
            "spec.targetRefs",
            format!("empty: name the HTTPRoutes this policy {purpose}"),
        );
    }
    c.count("spec.targetRefs", refs.len(), MAX_TARGET_REFS);
    let mut targets: Vec<String> = Vec::new();
    for (i, t) in refs.iter().enumerate() {
        let at = format!("spec.targetRefs[{i}]");
        if t.group != GATEWAY_API_GROUP || t.kind != "HTTPRoute" {
            c.error(
                &at,
                format!(
                    "{}/{}: {kind} targets HTTPRoutes (group {GATEWAY_API_GROUP}, kind HTTPRoute)",
                    t.group, t.kind
                ),
            );
        } else if !routes.contains(&(ns, t.name.as_str())) {
            c.error(
                format!("{at}.name"),
                format!(
                    "no HTTPRoute {ns}/{} in this revision (a policy targets routes of its own namespace)",
                    t.name
                ),
            );
        } else if targets.contains(&t.name) {
            c.error(
                format!("{at}.name"),
                format!("HTTPRoute {ns}/{} is named twice", t.name),
            );
        } else {
            targets.push(t.name.clone());
        }
    }
    targets
}
