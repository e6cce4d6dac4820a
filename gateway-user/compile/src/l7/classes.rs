//! Which Gateways are this agent's (GatewayClass selection), and which cross-namespace
//! references their owners allowed (ReferenceGrant).
//!
//! A revision without any GatewayClass serves every Gateway: a Git repository written for
//! Tollgate alone needs none. Once it holds GatewayClasses (a cluster always does: the install
//! ships `tollgate`), only Gateways whose class names `controllerName:
//! tollgate.dev/gateway-controller` are served. The others belong to another implementation:
//! they are neither served nor reported, and neither are the parentRefs of routes to them.
use std::borrow::Cow;
use std::collections::HashSet;

use tollgate_model::gateway::GATEWAY_API_GROUP;
use tollgate_model::gateway_class::CONTROLLER_NAME;
pub(super) use tollgate_model::gateway_class::{Grants, Referrer};
use tollgate_model::route::{HTTPRoute, ParentReference};
use tollgate_model::{Checker, LeftOut, Located, Object};

use super::status::Acceptance;

/// The GatewayClasses of a revision that are Tollgate's.
#[derive(Debug, Default)]
pub(super) struct Classes {
    /// The revision holds no GatewayClass at all: every class is served.
    every: bool,
    /// Names of Tollgate's classes that are served.
    ours: HashSet<String>,
    /// Tollgate's classes left out (their Gateways are left out with them, by name).
    broken: HashSet<String>,
}

impl Classes {
    /// Reads the GatewayClasses of `objects` (and of `left_out`, the classes the parse left
    /// out: one of those that is Tollgate's serves nothing). A class of Tollgate's that sets
    /// `parametersRef` is left out: Tollgate takes no parameters, and serving its Gateways as
    /// if the parameters said nothing could serve them wrong.
    pub(super) fn of(
        objects: &[Located<Object>],
        left_out: &[LeftOut],
        acceptance: &mut Acceptance,
    ) -> Classes {
        let mut classes = Classes {
            every: true,
            ..Classes::default()
        };
        for l in left_out.iter().filter(|l| l.kind == "GatewayClass") {
            classes.every = false;
            classes.broken.insert(l.name.clone());
        }
        for o in objects {
            let Object::GatewayClass(class) = &o.value else {
                continue;
            };
            classes.every = false;
            if class.spec.controller_name != CONTROLLER_NAME {
                continue;
            }
            let name = o.value.name().to_owned();
            if class.spec.parameters_ref.is_some() {
                let mut errors = Vec::new();
                Checker::of(o, &mut errors).error(
                    "spec.parametersRef",
                    "Tollgate's GatewayClasses take no parameters; remove parametersRef",
                );
                super::leave_out(acceptance, o, errors, Vec::new());
                classes.broken.insert(name);
            } else {
                classes.ours.insert(name);
            }
        }
        // Of the classes the parse left out, only Tollgate's concern this agent; the parse
        // cannot tell whose they were, so they stay reported.
        classes
    }

    /// Whether Gateways of class `name` are served.
    pub(super) fn serves(&self, name: &str) -> bool {
        self.every || self.ours.contains(name)
    }

    /// Whether class `name` is Tollgate's and left out: its Gateways are left out, reported.
    pub(super) fn is_broken(&self, name: &str) -> bool {
        !self.every && self.broken.contains(name)
    }

    /// Whether a Gateway of class `name` is none of this agent's business: another
    /// controller's, or no class the revision holds.
    pub(super) fn foreign(&self, name: &str) -> bool {
        !self.serves(name) && !self.is_broken(name)
    }
}

/// `r` as this agent reads it: without its parentRefs to Gateways of other controllers
/// (`foreign`, by namespace and name). `None` when those were all it had: the route is another
/// implementation's, neither served nor reported. A route without parentRefs stays as it is
/// (and is reported).
pub(super) fn without_foreign_parents<'r>(
    r: &'r HTTPRoute,
    ns: &str,
    foreign: &HashSet<(&str, &str)>,
) -> Option<Cow<'r, HTTPRoute>> {
    let parents = r.spec.parent_refs.as_deref().unwrap_or_default();
    let is_foreign = |p: &ParentReference| {
        p.group.as_deref().unwrap_or(GATEWAY_API_GROUP) == GATEWAY_API_GROUP
            && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
            && foreign.contains(&(p.namespace.as_deref().unwrap_or(ns), p.name.as_str()))
    };
    let ours = parents.iter().filter(|p| !is_foreign(p)).count();
    if ours == parents.len() {
        return Some(Cow::Borrowed(r));
    }
    if ours == 0 {
        return None;
    }
    let mut mine = r.clone();
    mine.spec.parent_refs = Some(parents.iter().filter(|p| !is_foreign(p)).cloned().collect());
    Some(Cow::Owned(mine))
}
