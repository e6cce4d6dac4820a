//! Label selectors (`matchLabels` + `matchExpressions`), checked as the API server checks them:
//! a Gateway listener's `allowedRoutes.namespaces.selector` and an L4Policy's `nodeSelector`.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;

use tollgate_model::{names, Checker};

/// Checks a label selector as the API server validates one, and reads it. An empty selector
/// selects everything.
pub(crate) fn label_selector(
    c: &mut Checker<'_, '_>,
    at: &str,
    selector: &LabelSelector,
) -> Option<Selector> {
    let before = c.mark();
    for (key, value) in selector.match_labels.iter().flatten() {
        if let Err(why) = names::label_key(key) {
            c.error(format!("{at}.matchLabels"), format!("key \"{key}\" {why}"));
        }
        if let Err(why) = names::label_value(value) {
            c.error(
                format!("{at}.matchLabels.{key}"),
                format!("\"{value}\" {why}"),
            );
        }
    }
    for (i, r) in selector.match_expressions.iter().flatten().enumerate() {
        let f = format!("{at}.matchExpressions[{i}]");
        if let Err(why) = names::label_key(&r.key) {
            c.error(format!("{f}.key"), format!("\"{}\" {why}", r.key));
        }
        let values = r.values.as_deref().unwrap_or_default();
        match r.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => c.error(
                format!("{f}.values"),
                format!("{} needs at least one value", r.operator),
            ),
            "Exists" | "DoesNotExist" if !values.is_empty() => c.error(
                format!("{f}.values"),
                format!("{} takes no values", r.operator),
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => c.error(
                format!("{f}.operator"),
                format!("\"{other}\": expected In, NotIn, Exists or DoesNotExist"),
            ),
        }
        for (j, v) in values.iter().enumerate() {
            if let Err(why) = names::label_value(v) {
                c.error(format!("{f}.values[{j}]"), format!("\"{v}\" {why}"));
            }
        }
    }
    if !c.clean_since(before) {
        return None;
    }
    match Selector::try_from(selector.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            c.error(at, e.to_string());
            None
        }
    }
}
