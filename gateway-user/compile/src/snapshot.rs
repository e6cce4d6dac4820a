//! The whole compile stage for one revision: documents -> objects -> validated policy ->
//! [`Snapshot`]. The agent, `tollgate validate` and `tollgate explain` all go through here, so
//! what CI validates is exactly what a node would enforce.
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::l4::failsafe::{self, Failsafe};
use crate::l4::policy::Policy;
use crate::l4::validate::{not_for_node, validate};
use crate::l4::{compile_with_failsafe, L4Snapshot};
use crate::l7::{Acceptance, RouteTable};
use tollgate_model::ParseCache;
use tollgate_model::{Documents, PolicyError, PolicyErrors, Revision};

/// Interface name standing for "every interface no policy names" when compiling without an
/// agent (validate, explain, diff).
pub const ANY_OTHER_INTERFACE: &str = "*";

/// Everything a node enforces for one revision. Immutable once built.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Which revision.
    pub revision: Revision,
    /// The validated policies.
    pub policies: Vec<Policy>,
    /// The L4 tables.
    pub l4: L4Snapshot,
    /// The L7 routing table (Gateways, HTTPRoutes, Backends); empty when the revision has none.
    pub l7: Arc<RouteTable>,
    /// What the revision does that is almost never meant (it is enforced all the same), each
    /// with file, object and field: `tollgate validate` prints them, the agent logs them once
    /// per revision.
    pub warnings: Vec<PolicyError>,
    /// What of the L7 objects is served: the objects left out, what applies only in part,
    /// and the conditions of every HTTPRoute (Gateway API failure isolation; L4 problems
    /// refuse the whole revision instead).
    pub acceptance: Acceptance,
    /// How many objects of each kind the revision holds (those left out included), by kind
    /// name: what a node reports as the content of the revision it enforces.
    pub object_counts: std::collections::BTreeMap<&'static str, usize>,
    /// The L4Policies whose `nodeSelector` does not select this node, by name: valid, left
    /// out of [`Snapshot::policies`] and the L4 tables. Empty when the node is unknown (a
    /// directory or Git revision, `validate`, `explain`): then every policy applies.
    pub not_for_this_node: BTreeSet<String>,
}

/// Compiles one revision for an agent on `interfaces` (`None`: every interface any policy
/// names, plus [`ANY_OTHER_INTERFACE`]). All problems are reported at once.
///
/// What refuses the whole revision (`Err`): a document that cannot be read as an object
/// (invalid YAML, no kind or name, an unknown kind), any L4Policy problem, a policy whose
/// targets cannot be read, a bound of the revision crossed. What leaves one object out (the
/// rest is served, [`Snapshot::acceptance`] says what and why): any other problem of an L7
/// object, at parse or compile time; a listener's problem leaves that listener out, a rule
/// that is invalid in itself is dropped, and a rule whose backendRefs do not resolve (or
/// that has none) answers 500.
pub fn compile_documents(
    docs: &Documents,
    interfaces: Option<&[String]>,
) -> Result<Snapshot, PolicyErrors> {
    compile_documents_with(&mut ParseCache::default(), docs, interfaces)
}

/// As [`compile_documents`], parsing only the files that changed since the last call with the
/// same cache (the agent keeps one across revisions).
pub fn compile_documents_with(
    cache: &mut ParseCache,
    docs: &Documents,
    interfaces: Option<&[String]>,
) -> Result<Snapshot, PolicyErrors> {
    compile_documents_for_node(cache, docs, interfaces, &[])
}

/// As [`compile_documents_with`], with lock-out protection for `failsafe` (see
/// [`crate::l4::failsafe`]).
///
/// The failsafe endpoints are an input next to `interfaces`, not part of the documents: they
/// describe the node (which API server it talks to), not the policy, so the same revision
/// compiles to the same policy everywhere and a Git revision id stays a commit. The agent
/// fixes them at start and passes them on every compile.
pub fn compile_documents_for_node(
    cache: &mut ParseCache,
    docs: &Documents,
    interfaces: Option<&[String]>,
    failsafe: &[Failsafe],
) -> Result<Snapshot, PolicyErrors> {
    let parsed = cache.parse_isolated(docs)?;
    let mut object_counts = std::collections::BTreeMap::new();
    for kind in parsed
        .objects
        .iter()
        .map(|o| o.value.kind())
        .chain(parsed.left_out.iter().map(|l| l.kind))
    {
        *object_counts.entry(kind).or_insert(0) += 1;
    }
    let objects = parsed.objects;
    // The Secrets and ConfigMaps the source could not resolve: a cluster's (Kubernetes mode)
    // or, for a directory or Git, the files under --tls-secrets-dir that cannot be read.
    let unresolved: Vec<_> = docs
        .cluster
        .iter()
        .flat_map(|c| c.unresolved.iter())
        .chain(&docs.unresolved)
        .cloned()
        .collect();
    // L4 and L7 objects are checked together, so that one round reports every problem.
    let (policies, (l7, acceptance)) = match (
        validate(&objects),
        crate::l7::compile_isolated_in(
            &objects,
            &parsed.left_out,
            docs.cluster.as_deref(),
            &unresolved,
        ),
    ) {
        (Ok(p), Ok(t)) => (p, t),
        (p, t) => {
            let mut errors = p.err().map(|e| e.0).unwrap_or_default();
            errors.extend(t.err().map(|e| e.0).unwrap_or_default());
            return Err(PolicyErrors(errors));
        }
    };
    // Only a revision that knows this node's labels (Kubernetes mode with --node-name) leaves
    // a policy out: without them no node could be told apart, and every policy applies.
    let not_for_this_node = match docs.cluster.as_deref().and_then(|c| c.node.as_ref()) {
        Some(node) => not_for_node(&objects, node),
        None => BTreeSet::new(),
    };
    let policies: Vec<Policy> = policies
        .into_iter()
        .filter(|p| !not_for_this_node.contains(&p.name))
        .collect();
    let interfaces = match interfaces {
        Some(list) => list.to_vec(),
        None => validation_interfaces(&policies),
    };
    let (failsafe, failsafe_warnings) = failsafe::in_force(failsafe);
    let l4 = compile_with_failsafe(&policies, &interfaces, &failsafe)?;
    let mut warnings = crate::l4::warnings::neighbour_discovery(&policies, &l4);
    warnings.extend(failsafe_warnings);
    Ok(Snapshot {
        revision: docs.revision.clone(),
        policies,
        l4,
        l7: Arc::new(l7),
        warnings,
        acceptance,
        object_counts,
        not_for_this_node,
    })
}

/// Every interface a policy names, plus [`ANY_OTHER_INTERFACE`]: compiling for these checks
/// every combination of policies any node could see.
pub fn validation_interfaces(policies: &[Policy]) -> Vec<String> {
    let mut names: BTreeSet<String> = policies
        .iter()
        .flat_map(|p| p.interfaces.iter().flatten().cloned())
        .collect();
    names.insert(ANY_OTHER_INTERFACE.to_owned());
    names.into_iter().collect()
}
