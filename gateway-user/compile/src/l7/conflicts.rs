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
        if def.attachments.is_empty() {
            outcome.def = None;
            outcome.status.served = false;
            for p in &mut outcome.status.parents {
                p.conditions = vec![Condition::new(
                    status::ACCEPTED,
                    false,
                    reason::CONFLICTED,
                    message.clone(),
                )];
            }
            errors.push(PolicyError::new(
                &o.file,
                &o.object,
                "spec.parentRefs",
                message,
            ));
        } else {
            outcome.partial.push(PolicyError::new(
                &o.file,
                &o.object,
                "spec.parentRefs",
                message,
            ));
        }
    }
}
