//! `BackendTrafficPolicy` objects: the request body limit of the routes they target.
use std::collections::HashSet;

use tollgate_model::traffic::BackendTrafficPolicy;
use tollgate_model::Checker;

use super::limits::*;
use super::targets::check_target_refs;

/// Checks a BackendTrafficPolicy; returns the names of the routes it targets and their body
/// size limit.
pub(super) fn traffic_policy(
    c: &mut Checker<'_, '_>,
    ns: &str,
    p: &BackendTrafficPolicy,
    routes: &HashSet<(&str, &str)>,
) -> Option<(Vec<String>, Option<u64>)> {
    let before = c.mark();
    let spec = &p.spec;
    let targets = check_target_refs(
        c,
        ns,
        "a BackendTrafficPolicy",
        "applies to",
        &spec.target_refs,
        routes,
    );
    let mut max_body = None;
    if let Some(b) = &spec.request_body {
        match tollgate_model::units::parse_size(&b.max_size) {
            Ok(n) if n <= MAX_REQUEST_BODY_LIMIT => max_body = Some(n),
            Ok(_) => c.error(
                "spec.requestBody.maxSize",
                format!("{:?} is more than the most allowed, 64GiB", b.max_size),
            ),
            Err(why) => c.error("spec.requestBody.maxSize", why),
        }
    }
    c.clean_since(before).then_some((targets, max_body))
}
