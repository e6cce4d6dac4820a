//! What the agents make of the cluster's objects: the same parse ([`ParseCache::parse_isolated`])
//! and compile ([`compile_isolated`], and the L4 compile of [`compile_documents_with`]) they run,
//! reduced to what status needs, and what each node reports in its `TollgateNode`.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use tollgate_compile::l7::{compile_isolated_in, Acceptance};
use tollgate_compile::snapshot::compile_documents_with;
use tollgate_model::node::TollgateNodeStatus;
use tollgate_model::{Documents, ParseCache};

/// What a revision of the cluster's objects compiles into, for status.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The L7 objects' acceptance; `None` when the revision cannot be read at all (a document
    /// that is no object, an L4Policy that does not parse: the agents refuse the revision and
    /// keep their last good one, so the L7 status in the cluster stays as it is).
    pub acceptance: Option<Acceptance>,
    /// Routes attached to each listener (served, or not for references that do not
    /// resolve), by (`namespace/gateway`, listener).
    pub attached: BTreeMap<(String, String), u32>,
    /// The served listeners of each Gateway (`namespace/gateway`).
    pub listeners: BTreeMap<String, BTreeSet<String>>,
    /// The problems of each L4Policy, by file (`kubernetes:/L4Policy/NAME`): any one refuses
    /// the revision.
    pub l4_problems: HashMap<String, Vec<String>>,
}

/// Compiles `docs` as an agent does.
pub fn compile(cache: &mut ParseCache, docs: &Documents) -> Outcome {
    let mut outcome = Outcome::default();
    // The L4 half (and every problem that refuses the revision): the agent's own entry point.
    if let Err(errors) = compile_documents_with(cache, docs, None) {
        for e in errors.0 {
            if e.location.object.starts_with("L4Policy/") {
                outcome
                    .l4_problems
                    .entry(e.location.file.clone())
                    .or_default()
                    .push(
                        format!("{}: {}", e.location.field, e.message)
                            .trim_start_matches(": ")
                            .to_owned(),
                    );
            }
        }
    }
    let Ok(parsed) = cache.parse_isolated(docs) else {
        return outcome;
    };
    // With the cluster, as the agents compile: backendRefs to Services resolve through its
    // Services and EndpointSlices, and what references an unresolved Secret or ConfigMap is
    // left out (the same list `compile_documents_with` builds).
    let unresolved: Vec<_> = docs
        .cluster
        .iter()
        .flat_map(|c| c.unresolved.iter())
        .chain(&docs.unresolved)
        .cloned()
        .collect();
    let Ok((table, acceptance)) = compile_isolated_in(
        &parsed.objects,
        &parsed.left_out,
        docs.cluster.as_deref(),
        &unresolved,
    ) else {
        return outcome;
    };
    for l in &table.policy.listeners {
        outcome
            .listeners
            .entry(l.gateway.clone())
            .or_default()
            .insert(l.name.clone());
    }
    for route in &table.policy.routes {
        // A route attached to several listeners counts once on each (its attachments are
        // distinct listeners).
        for att in &route.attachments {
            let l = &table.policy.listeners[att.listener];
            *outcome
                .attached
                .entry((l.gateway.clone(), l.name.clone()))
                .or_default() += 1;
        }
    }
    for (key, n) in &acceptance.unserved_attached {
        *outcome.attached.entry(key.clone()).or_default() += n;
    }
    outcome.acceptance = Some(acceptance);
    outcome
}

/// What one node's `TollgateNode` says, as far as status needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// `Ready=True`: it enforces a revision.
    pub ready: bool,
    /// The Gateway listeners its proxy serves, as `namespace/gateway/listener`.
    pub listeners: BTreeSet<String>,
    /// The objects it refused, as (kind, namespace or "", name).
    pub refused: BTreeSet<(String, String, String)>,
    /// The L4Policies its nodeSelector-aware agent leaves out: their `nodeSelector` does not
    /// select it (`notForThisNode`).
    pub not_for_this_node: BTreeSet<String>,
}

impl NodeView {
    /// Reads a `TollgateNode`'s status (an unreadable one is a node that is not ready).
    pub fn of(name: &str, status: Option<&serde_json::Value>) -> NodeView {
        let status: TollgateNodeStatus = status
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        NodeView {
            name: name.to_owned(),
            ready: status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            listeners: status
                .listeners
                .iter()
                .flat_map(|l| l.gateway_listeners.iter().cloned())
                .collect(),
            refused: status
                .refused
                .iter()
                .map(|r| {
                    (
                        r.kind.clone(),
                        r.namespace.clone().unwrap_or_default(),
                        r.name.clone(),
                    )
                })
                .collect(),
            not_for_this_node: status.not_for_this_node.iter().cloned().collect(),
        }
    }

    /// Whether L4Policy `name` applies to it (its agent does not report it as not selected).
    pub fn selects(&self, name: &str) -> bool {
        !self.not_for_this_node.contains(name)
    }

    /// Whether it serves every one of `listeners` of Gateway `gateway` (`namespace/name`).
    pub fn programs(&self, gateway: &str, listeners: &BTreeSet<String>) -> bool {
        self.ready
            && !listeners.is_empty()
            && listeners
                .iter()
                .all(|l| self.listeners.contains(&format!("{gateway}/{l}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_programs_a_gateway_when_ready_and_serving_all_its_listeners() {
        let n = NodeView::of(
            "a",
            Some(&json!({
                "conditions": [{"type": "Ready", "status": "True", "reason": "Enforced", "message": "",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "listeners": [{"address": "0.0.0.0:80", "protocol": "HTTP",
                               "gatewayListeners": ["ns/gw/http", "ns/other/http"]}],
                "refused": [{"kind": "L4Policy", "name": "edge", "reason": "bad"}],
            })),
        );
        assert!(n.ready);
        let one: BTreeSet<String> = ["http".to_owned()].into();
        let two: BTreeSet<String> = ["http".to_owned(), "https".to_owned()].into();
        assert!(n.programs("ns/gw", &one));
        assert!(!n.programs("ns/gw", &two));
        assert!(!n.programs("ns/gw", &BTreeSet::new()));
        assert!(n
            .refused
            .contains(&("L4Policy".into(), String::new(), "edge".into())));
        let unreadable = NodeView::of("b", Some(&json!({"conditions": "nonsense"})));
        assert!(!unreadable.ready);
        assert!(!unreadable.programs("ns/gw", &one));
    }
}
