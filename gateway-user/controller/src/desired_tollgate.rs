//! The status of Tollgate's own kinds that belong to the controller alone (one server-side
//! apply of the whole status): a Backend's (`Accepted`) and an L4Policy's (`Accepted`, node
//! counts, `Programmed`). Apart from [`super`] for its length.
use serde_json::{json, Map};
use tollgate_compile::l7::Acceptance;

use super::{condition, file_of, left_out, problems_text, Desired, ObjectKey, ObjectView, Plan};
use crate::outcome::{NodeView, Outcome};

/// A Backend: `Accepted` when the agents serve it (routes that name it send to its endpoints),
/// else `Accepted=False, Invalid` with the problems that leave it out (its endpoints, `spec.tls`,
/// a CA or client certificate the source could not resolve, ...). Only from a revision that
/// compiles: one that cannot be read leaves the last written status.
pub(super) fn backend(key: &ObjectKey, view: &ObjectView, acceptance: &Acceptance) -> Desired {
    let g = view.generation;
    let accepted = match left_out(acceptance, key) {
        None => condition(
            "Accepted",
            true,
            "Accepted",
            "the endpoints are valid and used by the routes that name the Backend",
            g,
        ),
        Some(o) => condition(
            "Accepted",
            false,
            "Invalid",
            &format!("left out of the revision: {}", problems_text(o)),
            g,
        ),
    };
    let mut status = Map::new();
    status.insert("conditions".into(), json!([accepted]));
    Desired {
        key: key.clone(),
        plan: Plan::Owned(status),
    }
}

/// An L4Policy: `Accepted` (it compiles), the nodes it selects (those whose agent does not
/// report it in `notForThisNode`), those of them enforcing it (ready, and not refusing it), and
/// `Programmed` ("k/n nodes enforce it", n the selected ones).
pub(super) fn l4_policy(
    key: &ObjectKey,
    view: &ObjectView,
    outcome: &Outcome,
    nodes: &[NodeView],
) -> Desired {
    let g = view.generation;
    let problems = outcome.l4_problems.get(&file_of(key));
    let selected: Vec<&NodeView> = nodes.iter().filter(|n| n.selects(&key.name)).collect();
    let enforcing = selected
        .iter()
        .filter(|n| {
            n.ready
                && !n
                    .refused
                    .contains(&("L4Policy".to_owned(), String::new(), key.name.clone()))
        })
        .count();
    let mut k_of_n = format!("{enforcing}/{} nodes enforce it", selected.len());
    if selected.len() < nodes.len() {
        k_of_n.push_str(&format!(
            " ({} of {} nodes are not selected by its nodeSelector)",
            nodes.len() - selected.len(),
            nodes.len()
        ));
    }
    let accepted = match problems {
        Some(p) => condition("Accepted", false, "Invalid", &p.join("; "), g),
        None => condition("Accepted", true, "Accepted", "the policy compiles", g),
    };
    let programmed = if problems.is_none() && enforcing > 0 && enforcing == selected.len() {
        condition("Programmed", true, "Programmed", &k_of_n, g)
    } else {
        condition("Programmed", false, "Pending", &k_of_n, g)
    };
    let mut status = Map::new();
    if let Some(g) = g {
        status.insert("observedGeneration".into(), g.into());
    }
    status.insert("nodesSelected".into(), (selected.len() as i64).into());
    status.insert("nodesEnforcing".into(), (enforcing as i64).into());
    status.insert("conditions".into(), json!([accepted, programmed]));
    Desired {
        key: key.clone(),
        plan: Plan::Owned(status),
    }
}
