//! The Gateway API's rule for an HTTPRoute and a GRPCRoute on one listener: "If a Route (A) of
//! type HTTPRoute or GRPCRoute is attached to a Listener and that listener already has another
//! Route (B) of the other type attached and the intersection of the hostnames of A and B is
//! non-empty, then the implementation MUST accept exactly one of these two routes": the
//! oldest, then the first by `{namespace}/{name}`. Routes are compiled in that order, so the
//! one seen first keeps the listener; the other loses its attachment there (and, when it
//! attaches nowhere else, is left out with `Accepted=False`, reason `Conflicted`).
use std::collections::HashMap;

use tollgate_model::{Located, Object, PolicyError};

use super::route::RouteOutcome;
use super::status::{self, reason, Condition};
use super::table::{HostPattern, ListenerDef};

/// A route on a listener: its kind, its effective hostnames there, its `namespace/name`.
type Taken = (&'static str, Vec<HostPattern>, String);

/// The routes accepted so far, per listener.
#[derive(Default)]
pub(super) struct KindsOnListeners {
    /// Listener index -> the routes on it.
    taken: HashMap<usize, Vec<Taken>>,
}

impl KindsOnListeners {
    /// Removes the attachments of route `o` that meet a route of the other kind accepted
    /// before it, then records those it keeps. A route left with no attachment is left out:
    /// its problem goes to `errors`, its parents say `Accepted=False`.
    pub(super) fn settle(
        &mut self,
        o: &Located<Object>,
        listeners: &[ListenerDef],
        outcome: &mut RouteOutcome,
        errors: &mut Vec<PolicyError>,
    ) {
        let Some(def) = &mut outcome.def else {
            return;
        };
        let kind = o.value.kind();
        let name = format!(
            "{}/{}",
            o.value.namespace().unwrap_or_default(),
            o.value.name()
        );
        let mut lost: Vec<String> = Vec::new();
        let mut lost_listeners: Vec<usize> = Vec::new();
        def.attachments.retain(|a| {
            let clash = self.taken.get(&a.listener).and_then(|list| {
                list.iter().find(|(k, hosts, _)| {
                    *k != kind
                        && hosts
                            .iter()
                            .any(|h| a.hostnames.iter().any(|x| x.intersect(h).is_some()))
                })
            });
            match clash {
                Some((other_kind, _, other)) => {
                    let l = &listeners[a.listener];
                    lost_listeners.push(a.listener);
                    lost.push(format!(
                        "listener {} of Gateway {}: {other_kind} {other} is older (or first by namespace/name) and serves hostnames this {kind} also names there; only one of the two kinds may serve them",
                        l.name, l.gateway
                    ));
                    false
                }
                None => true,
            }
        });
        for a in &def.attachments {
            self.taken.entry(a.listener).or_default().push((
                kind,
                a.hostnames.clone(),
                name.clone(),
            ));
        }
        if lost.is_empty() {
            return;
        }
        let message = format!("not attached to {}", lost.join("; "));
        // A parent none of whose listeners is left to the route is not accepted: the reason
        // is the conflict. (A parent already refused for another reason keeps that reason.)
        let kept: Vec<usize> = def.attachments.iter().map(|a| a.listener).collect();
        for p in &mut outcome.status.parents {
            let accepted = p
                .conditions
                .iter()
                .any(|c| c.type_ == status::ACCEPTED && c.is_true());
            let r = &p.parent_ref;
            let gateway = format!("{}/{}", r.namespace, r.name);
            let of_parent = |i: &usize| {
                let l = &listeners[*i];
                l.gateway == gateway
                    && r.section_name.as_ref().is_none_or(|s| *s == l.name)
                    && r.port.is_none_or(|port| port == i64::from(l.port))
            };
            if accepted && lost_listeners.iter().any(of_parent) && !kept.iter().any(of_parent) {
                p.conditions = vec![Condition::new(
                    status::ACCEPTED,
                    false,
                    reason::CONFLICTED,
                    message.clone(),
                )];
            }
        }
        let problem = PolicyError::new(&o.file, &o.object, "spec.parentRefs", message);
        if def.attachments.is_empty() {
            outcome.def = None;
            outcome.status.served = false;
            errors.push(problem);
        } else {
            outcome.partial.push(problem);
        }
    }
}
