//! `Gateway` objects: listeners (names, ports, hostnames), their protocol and TLS certificate
//! references, `allowedRoutes`, and the client certificate validation of `spec.tls.frontend`.
//! A listener with a problem is left out on its own (the Gateway's other listeners serve), so
//! that routes naming it are not reported a second time.
use std::collections::{BTreeMap, HashMap, HashSet};

use kube::core::{Selector, SelectorExt};

use tollgate_model::gateway::{
    FrontendTlsValidation, Gateway, GatewayTlsSettings, Listener, GATEWAY_API_GROUP,
};
use tollgate_model::{names, Checker, Located, Object, PolicyError};

use super::classes::{Grants, Referrer};
use super::limits::*;
use super::port;
use super::status::{listener_reason, Acceptance, ListenerRefProblem};
use super::table::{HostPattern, L7Policy, ListenerDef, ListenerTls, SecretRef};
use crate::selector::label_selector;

/// A Gateway's listener, as routes see it.
pub(super) struct ListenerRef {
    /// Index in [`L7Policy::listeners`].
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) port: u16,
    pub(super) hostname: HostPattern,
    /// The namespaces whose routes may attach (`allowedRoutes.namespaces`).
    pub(super) allowed: AllowedNamespaces,
    /// The route kinds that may attach (`allowedRoutes.kinds`; by default both HTTPRoute and
    /// GRPCRoute, the kinds of an HTTP or HTTPS listener).
    pub(super) kinds: Vec<&'static str>,
}

/// `allowedRoutes.namespaces` of a listener.
pub(super) enum AllowedNamespaces {
    /// The Gateway's own namespace (`from: Same`, the default).
    Same,
    /// Every namespace (`from: All`).
    All,
    /// The namespaces whose labels match (`from: Selector`).
    Selector(Selector),
}

impl AllowedNamespaces {
    /// Whether a route of namespace `route_ns` may attach to a listener of a Gateway of
    /// `gateway_ns`.
    pub(super) fn admits(&self, gateway_ns: &str, route_ns: &str, namespaces: &Namespaces) -> bool {
        match self {
            AllowedNamespaces::Same => gateway_ns == route_ns,
            AllowedNamespaces::All => true,
            AllowedNamespaces::Selector(s) => s.matches(&namespaces.labels(route_ns)),
        }
    }
}

/// A Gateway, as routes see it: its namespace and its valid listeners.
pub(super) struct GatewayInfo {
    pub(super) namespace: String,
    pub(super) listeners: Vec<ListenerRef>,
    /// Listeners left out only for references that do not resolve (a certificate, a client
    /// CA): not served, but routes still attach to them and are counted in their
    /// `attachedRoutes` ("the AttachedRoutes field count MUST be set for Listeners with
    /// condition Accepted: false"). Their `index` is [`UNSERVED`].
    pub(super) unserved: Vec<ListenerRef>,
}

/// The [`ListenerRef::index`] of a listener that is not served (in [`GatewayInfo::unserved`]).
pub(super) const UNSERVED: usize = usize::MAX;

/// Checks a Gateway and adds its valid listeners to `policy`; `taken` and `schemes` hold what
/// the listeners of earlier Gateways took (port and hostname; whether a port speaks TLS).
///
/// A problem of the Gateway itself (class, addresses, `spec.tls`) is recorded in `c` and
/// leaves the whole Gateway out (`None`); a problem of one listener leaves that listener out
/// (recorded in `acceptance.partial`), as the Gateway API's per-listener conditions do, and
/// the other listeners serve. A Gateway none of whose listeners is valid (or only unserved for
/// references that do not resolve, which routes still attach to) is left out (and
/// then, as no listener of it was taken, it takes no port or hostname from the Gateways after
/// it). Listener references that do not resolve are also recorded with their reason in
/// `acceptance.listener_refs`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gateway(
    c: &mut Checker<'_, '_>,
    acceptance: &mut Acceptance,
    ns: &str,
    name: &str,
    g: &Gateway,
    policy: &mut L7Policy,
    taken: &mut BTreeMap<(u16, HostPattern), (String, String)>,
    schemes: &mut BTreeMap<u16, (bool, String, String)>,
    grants: &Grants<'_>,
    unresolved: &[(String, String)],
) -> Option<GatewayInfo> {
    let spec = &g.spec;
    let before = c.mark();
    let mut info = GatewayInfo {
        namespace: ns.to_owned(),
        listeners: Vec::new(),
        unserved: Vec::new(),
    };
    if spec.gateway_class_name.is_empty() {
        c.error("spec.gatewayClassName", "empty; name the GatewayClass");
    }
    if spec.addresses.is_some() {
        c.error(
            "spec.addresses",
            "not supported yet: the agent listens on its --gateway-address",
        );
    }
    if let Some(p) = spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
    {
        c.error(
            "spec.infrastructure.parametersRef",
            format!(
                "{}/{} {}: Tollgate reads no parameters kind (InvalidParameters); remove the reference",
                p.group, p.kind, p.name
            ),
        );
    }
    if spec.listeners.is_empty() {
        c.error(
            "spec.listeners",
            "empty: a Gateway needs at least one listener",
        );
    }
    c.count("spec.listeners", spec.listeners.len(), MAX_LISTENERS);
    let frontend = frontend_validation(c, ns, spec.tls.as_ref(), grants);
    let gateway_ok = c.clean_since(before);
    let mut names = HashSet::new();
    // Listener problems are collected per listener; a listener with problems is left out, so
    // that routes naming it are not reported a second time as "unknown listener".
    let mut listener_problems = Vec::new();
    // The TLS settings of each listener in `info.listeners`, with its Gateway's label.
    let mut pending = Vec::new();
    // Listeners of this Gateway with the same port and hostname: the Gateway API wants none
    // of them picked as the winner ("ALL indistinct Listeners must not be accepted").
    let mut same: HashMap<(i64, Option<&str>), Vec<&str>> = HashMap::new();
    for l in &spec.listeners {
        same.entry((l.port, l.hostname.as_deref()))
            .or_default()
            .push(l.name.as_str());
    }
    for (i, l) in spec.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        let mut errors = Vec::new();
        let mut lc = Checker::new(c.file(), c.object(), &mut errors);
        if let Some(others) = same.get(&(l.port, l.hostname.as_deref())) {
            if let Some(other) = others.iter().find(|n| **n != l.name) {
                lc.error(
                    &at,
                    format!(
                        "port {} with hostname \"{}\" is already served by listener \"{other}\" of this Gateway too: indistinct listeners are all left out (Conflicted)",
                        l.port,
                        l.hostname.as_deref().unwrap_or("*")
                    ),
                );
            }
        }
        if let Err(why) = names::section_name(&l.name) {
            lc.error(format!("{at}.name"), format!("\"{}\" {why}", l.name));
        } else if !names.insert(l.name.as_str()) {
            lc.error(
                format!("{at}.name"),
                format!("duplicate listener name \"{}\"", l.name),
            );
        }
        let port = port(&mut lc, &format!("{at}.port"), l.port);
        let hostname = match &l.hostname {
            None => HostPattern::Any,
            Some(h) => match names::hostname(h, true) {
                Ok(()) => HostPattern::parse(h),
                Err(why) => {
                    lc.error(format!("{at}.hostname"), format!("\"{h}\" {why}"));
                    HostPattern::Any
                }
            },
        };
        // (field, reason, message) of the listener's references that do not resolve.
        let mut refs = Vec::new();
        let mut tls = listener_protocol(&mut lc, &at, ns, l, grants, &mut refs);
        // A certificate Secret the source could not resolve (Kubernetes mode: the API; a
        // directory or Git: its files under --tls-secrets-dir cannot be read): this listener
        // is not served (ResolvedRefs=False, InvalidCertificateRef), the others are.
        let own = format!("{at}.");
        // The fields of this listener's problems that are references that do not resolve:
        // a listener with no other problem still takes routes (unserved).
        let mut ref_fields: HashSet<String> = refs.iter().map(|(f, _, _)| f.clone()).collect();
        for (field, why) in unresolved.iter().filter(|(f, _)| f.starts_with(&own)) {
            lc.error(field, why);
            ref_fields.insert(field.clone());
        }
        // Nor is an HTTPS listener whose client CAs cannot be read: served, it would let in
        // clients without a certificate.
        if let (Some(port), Some(_)) = (port, &tls) {
            let prefix = frontend.field_for_port(port);
            for (field, why) in unresolved.iter().filter(|(f, _)| f.starts_with(&prefix)) {
                lc.error(
                    &at,
                    format!("{field}: {why}: the listener is not served without the client certificate validation that field names"),
                );
                ref_fields.insert(at.clone());
            }
            for (field, reason, why) in frontend
                .ref_problems
                .iter()
                .filter(|(f, _, _)| f.starts_with(&prefix))
            {
                let message = format!("{field}: {why}: the listener is not served without the client certificate validation that field names");
                lc.error(&at, &message);
                refs.push((at.clone(), *reason, message));
                ref_fields.insert(at.clone());
            }
        }
        // Kinds Tollgate does not serve, beside some it does: the listener serves those
        // (the Gateway API: "MUST reference the valid Route kinds"), and they are noted.
        let (allowed, kinds, ignored) = allowed_routes(&mut lc, &at, l, &mut refs);
        acceptance
            .listener_refs
            .extend(
                refs.into_iter()
                    .map(|(field, reason, message)| ListenerRefProblem {
                        file: c.file().to_owned(),
                        listener: i,
                        field,
                        reason,
                        message,
                    }),
            );
        // A listener left out has them among its problems; a listener served, as notes.
        let notes: Vec<PolicyError> = ignored
            .into_iter()
            .map(|(field, message)| PolicyError::new(c.file(), c.object(), field, message))
            .collect();
        let (Some(port), true, true) = (port, errors.is_empty(), gateway_ok) else {
            let only_refs = errors
                .iter()
                .all(|e| ref_fields.contains(&e.location.field));
            if let (Some(port), true) = (port, only_refs) {
                info.unserved.push(ListenerRef {
                    index: UNSERVED,
                    name: l.name.clone(),
                    port,
                    hostname: hostname.clone(),
                    allowed,
                    kinds,
                });
            }
            listener_problems.extend(errors);
            listener_problems.extend(notes);
            continue;
        };
        if let Some(tls) = &mut tls {
            tls.client_cas = frontend.for_port(port);
        }
        let gw = format!("{ns}/{name}");
        let mut lc = Checker::new(c.file(), c.object(), &mut listener_problems);
        if let Some((other_gw, other_listener)) = taken.get(&(port, hostname.clone())) {
            lc.error(
                &at,
                format!(
                    "port {port} with hostname \"{}\" is already served by listener \"{other_listener}\" of Gateway {other_gw}; listeners on one port need distinct hostnames",
                    hostname.to_yaml()
                ),
            );
            listener_problems.extend(notes);
            continue;
        }
        // A port speaks TLS or it does not: the first bytes of a connection cannot tell which
        // listener it is for.
        if let Some((other_tls, other_gw, other_listener)) = schemes.get(&port) {
            if *other_tls != tls.is_some() {
                let name = |t: bool| if t { "HTTPS" } else { "HTTP" };
                lc.error(
                    format!("{at}.protocol"),
                    format!(
                        "port {port} is already served as {} by listener \"{other_listener}\" of Gateway {other_gw}; one port cannot mix HTTP and HTTPS listeners",
                        name(*other_tls)
                    ),
                );
                listener_problems.extend(notes);
                continue;
            }
        }
        schemes
            .entry(port)
            .or_insert_with(|| (tls.is_some(), gw.clone(), l.name.clone()));
        taken.insert((port, hostname.clone()), (gw.clone(), l.name.clone()));
        info.listeners.push(ListenerRef {
            index: 0, // set below, once every listener is checked
            name: l.name.clone(),
            port,
            hostname,
            allowed,
            kinds,
        });
        pending.push((gw, tls, notes));
    }
    if !gateway_ok || (info.listeners.is_empty() && info.unserved.is_empty()) {
        // Every problem is reported with the Gateway that is left out.
        for e in listener_problems {
            c.error(e.location.field, e.message);
        }
        return None;
    }
    for e in listener_problems {
        acceptance.partial.push(PolicyError {
            message: format!(
                "listener left out, the Gateway's other listeners serve: {}",
                e.message
            ),
            ..e
        });
    }
    for (l, (gw, tls, notes)) in info.listeners.iter_mut().zip(pending) {
        let kinds = l.kinds.join(" and ");
        for e in notes {
            acceptance.partial.push(PolicyError {
                message: format!(
                    "ignored, the listener takes {kinds} (ResolvedRefs=False, InvalidRouteKinds): {}",
                    e.message
                ),
                ..e
            });
        }
        policy.listeners.push(ListenerDef {
            gateway: gw,
            name: l.name.clone(),
            port: l.port,
            hostname: l.hostname.clone(),
            tls,
        });
        l.index = policy.listeners.len() - 1;
    }
    Some(info)
}

/// Client certificate validation of a Gateway's HTTPS listeners
/// (`spec.tls.frontend`): the default, and per port.
#[derive(Default)]
struct Frontend {
    default: Vec<SecretRef>,
    per_port: BTreeMap<u16, Vec<SecretRef>>,
    /// The index in `spec.tls.frontend.perPort` of each port's entry.
    per_port_index: BTreeMap<u16, usize>,
    /// CA references that cannot be used (field, reason, message): a kind other than a core
    /// ConfigMap (`InvalidCACertificateKind`), another namespace with no ReferenceGrant
    /// (`RefNotPermitted`). Like a CA that cannot be read, they leave out only the HTTPS
    /// listeners that would verify clients with them, not the Gateway.
    ref_problems: Vec<(String, &'static str, String)>,
}

impl Frontend {
    /// The field (with a trailing dot) whose CA references an HTTPS listener on `port` uses.
    fn field_for_port(&self, port: u16) -> String {
        match self.per_port_index.get(&port) {
            Some(i) => format!("spec.tls.frontend.perPort[{i}]."),
            None => "spec.tls.frontend.default.".to_owned(),
        }
    }

    /// The CA references an HTTPS listener on `port` verifies clients with (empty: none).
    fn for_port(&self, port: u16) -> Vec<SecretRef> {
        self.per_port.get(&port).unwrap_or(&self.default).clone()
    }
}

/// Checks `spec.tls` of a Gateway (Gateway API v1.6 standard channel).
fn frontend_validation(
    c: &mut Checker<'_, '_>,
    gateway_ns: &str,
    tls: Option<&GatewayTlsSettings>,
    grants: &Grants<'_>,
) -> Frontend {
    let mut out = Frontend::default();
    let Some(tls) = tls else {
        return out;
    };
    if tls.backend.is_some() {
        c.error(
            "spec.tls.backend",
            "not supported yet: a Backend's own spec.tls says how the proxy connects to it",
        );
    }
    let Some(frontend) = &tls.frontend else {
        return out;
    };
    out.default = validation(
        c,
        "spec.tls.frontend.default.validation",
        gateway_ns,
        frontend.default.validation.as_ref(),
        grants,
        &mut out.ref_problems,
    );
    let per_port = frontend.per_port.as_deref().unwrap_or_default();
    c.count("spec.tls.frontend.perPort", per_port.len(), MAX_LISTENERS);
    for (i, p) in per_port.iter().enumerate() {
        let at = format!("spec.tls.frontend.perPort[{i}]");
        let Some(port) = port(c, &format!("{at}.port"), p.port) else {
            continue;
        };
        let refs = validation(
            c,
            &format!("{at}.tls.validation"),
            gateway_ns,
            p.tls.validation.as_ref(),
            grants,
            &mut out.ref_problems,
        );
        out.per_port_index.entry(port).or_insert(i);
        if out.per_port.insert(port, refs).is_some() {
            c.error(
                format!("{at}.port"),
                format!("port {port} is given twice; each port has one TLS configuration"),
            );
        }
    }
    out
}

/// Checks one `validation` (CA ConfigMaps and mode); returns its CA references (empty when it
/// is not set). References of a kind that cannot hold CAs, or to another namespace without a
/// ReferenceGrant, go to `ref_problems` (field, reason, message).
fn validation(
    c: &mut Checker<'_, '_>,
    at: &str,
    gateway_ns: &str,
    v: Option<&FrontendTlsValidation>,
    grants: &Grants<'_>,
    ref_problems: &mut Vec<(String, &'static str, String)>,
) -> Vec<SecretRef> {
    let mut client_cas = Vec::new();
    let Some(v) = v else {
        return client_cas;
    };
    match v.mode.as_deref() {
        None | Some("AllowValidOnly") => {}
        Some("AllowInsecureFallback") => c.error(
            format!("{at}.mode"),
            "AllowInsecureFallback is not supported: Tollgate lets in only clients with a valid certificate (AllowValidOnly)",
        ),
        Some(other) => c.error(
            format!("{at}.mode"),
            format!("\"{other}\": expected AllowValidOnly or AllowInsecureFallback"),
        ),
    }
    let at = format!("{at}.caCertificateRefs");
    match &v.ca_certificate_refs {
        None => c.error(&at, "missing: name the ConfigMap with the CA certificates"),
        Some(refs) if refs.is_empty() => {
            c.error(&at, "empty: name the ConfigMap with the CA certificates")
        }
        Some(refs) => {
            c.count(&at, refs.len(), MAX_CA_CERTIFICATE_REFS);
            for (j, r) in refs.iter().enumerate() {
                let f = format!("{at}[{j}]");
                if !r.group.is_empty() || r.kind != "ConfigMap" {
                    ref_problems.push((
                        f.clone(),
                        "InvalidCACertificateKind",
                        format!(
                            "{}/{}: only core ConfigMaps can hold CA certificates",
                            r.group, r.kind
                        ),
                    ));
                }
                // The names become directory names under --tls-secrets-dir: only DNS
                // labels/subdomains, so that no `..` or `/` can leave it.
                if let Err(why) = names::dns_subdomain(&r.name) {
                    c.error(format!("{f}.name"), format!("\"{}\" {why}", r.name));
                }
                let namespace = r.namespace.as_deref().unwrap_or(gateway_ns);
                if let Err(why) = names::dns_label(namespace) {
                    c.error(format!("{f}.namespace"), format!("\"{namespace}\" {why}"));
                } else if let Some((field, why)) = not_permitted(
                    &f,
                    grants,
                    gateway_ns,
                    ("", "ConfigMap"),
                    namespace,
                    &r.name,
                ) {
                    ref_problems.push((field, "RefNotPermitted", why));
                }
                client_cas.push(SecretRef {
                    namespace: namespace.to_owned(),
                    name: r.name.clone(),
                });
            }
        }
    }
    client_cas
}

/// Checks the protocol and TLS settings of a listener; returns its TLS settings (`None` for
/// HTTP, and for HTTPS listeners with errors). A certificate reference no ReferenceGrant
/// allows is also added to `ref_problems` (field, reason, message).
fn listener_protocol(
    c: &mut Checker<'_, '_>,
    at: &str,
    gateway_ns: &str,
    l: &Listener,
    grants: &Grants<'_>,
    ref_problems: &mut Vec<(String, &'static str, String)>,
) -> Option<ListenerTls> {
    match l.protocol.as_str() {
        "HTTP" => {
            if l.tls.is_some() {
                c.error(
                    format!("{at}.tls"),
                    "tls is only for HTTPS listeners; this one is HTTP",
                );
            }
            None
        }
        "HTTPS" => {
            let Some(tls) = &l.tls else {
                c.error(
                    format!("{at}.tls"),
                    "missing: an HTTPS listener needs tls.certificateRefs",
                );
                return None;
            };
            let before = c.mark();
            match tls.mode.as_deref() {
                None | Some("Terminate") => {}
                Some(other) => c.error(
                    format!("{at}.tls.mode"),
                    format!("\"{other}\": only Terminate is supported"),
                ),
            }
            if let Some(options) = &tls.options {
                if let Some(key) = options.keys().next() {
                    c.error(
                        format!("{at}.tls.options.{key}"),
                        "unknown option: Tollgate reads no TLS options",
                    );
                }
            }
            let mut certificates = Vec::new();
            match &tls.certificate_refs {
                None => c.error(
                    format!("{at}.tls.certificateRefs"),
                    "missing: name the Secret with the certificate and key",
                ),
                Some(refs) if refs.is_empty() => c.error(
                    format!("{at}.tls.certificateRefs"),
                    "empty: name the Secret with the certificate and key",
                ),
                Some(refs) => {
                    c.count(
                        &format!("{at}.tls.certificateRefs"),
                        refs.len(),
                        MAX_CERTIFICATE_REFS,
                    );
                    for (j, r) in refs.iter().enumerate() {
                        let f = format!("{at}.tls.certificateRefs[{j}]");
                        let group = r.group.as_deref().unwrap_or("");
                        let kind = r.kind.as_deref().unwrap_or("Secret");
                        if !group.is_empty() || kind != "Secret" {
                            c.error(
                                &f,
                                format!("{group}/{kind}: only core Secrets can hold certificates"),
                            );
                        }
                        // The names become directory names under --tls-secrets-dir: only DNS
                        // labels/subdomains, so that no `..` or `/` can leave it.
                        if let Err(why) = names::dns_subdomain(&r.name) {
                            c.error(format!("{f}.name"), format!("\"{}\" {why}", r.name));
                        }
                        let namespace = r.namespace.as_deref().unwrap_or(gateway_ns);
                        if let Err(why) = names::dns_label(namespace) {
                            c.error(format!("{f}.namespace"), format!("\"{namespace}\" {why}"));
                        } else if let Some((field, why)) = not_permitted(
                            &f,
                            grants,
                            gateway_ns,
                            ("", "Secret"),
                            namespace,
                            &r.name,
                        ) {
                            c.error(&field, &why);
                            ref_problems.push((field, listener_reason::REF_NOT_PERMITTED, why));
                        }
                        certificates.push(SecretRef {
                            namespace: namespace.to_owned(),
                            name: r.name.clone(),
                        });
                    }
                }
            }
            if tls.frontend_validation.is_some() {
                c.error(
                    format!("{at}.tls.frontendValidation"),
                    "this listener field is gone from the Gateway API (it was experimental in v1.2-1.3; an API server drops it, and mTLS with it): move it to the Gateway's spec.tls.frontend.default.validation (or spec.tls.frontend.perPort[].tls.validation for this port only)",
                );
            }
            // The client CAs come from the Gateway's spec.tls.frontend.
            c.clean_since(before).then_some(ListenerTls {
                certificates,
                client_cas: Vec::new(),
            })
        }
        other => {
            c.error(
                format!("{at}.protocol"),
                format!("\"{other}\" is not supported; Tollgate serves HTTP and HTTPS"),
            );
            None
        }
    }
}

/// The route kinds an HTTP or HTTPS listener accepts when `allowedRoutes.kinds` is left out.
const DEFAULT_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

/// Which namespaces' routes, and which kinds, may attach to a listener, and the kinds it names
/// that Tollgate does not serve, beside some it does: (field, message) each.
type AllowedRoutes = (AllowedNamespaces, Vec<&'static str>, Vec<(String, String)>);

/// Checks `allowedRoutes`. Every kind Tollgate does not serve is added to `refs` (field,
/// reason, message); the listener is refused only when no kind it names is served.
fn allowed_routes(
    c: &mut Checker<'_, '_>,
    at: &str,
    l: &Listener,
    refs: &mut Vec<(String, &'static str, String)>,
) -> AllowedRoutes {
    let Some(allowed) = &l.allowed_routes else {
        return (AllowedNamespaces::Same, DEFAULT_KINDS.to_vec(), Vec::new());
    };
    let mut kinds = DEFAULT_KINDS.to_vec();
    let mut invalid = Vec::new();
    if let Some(list) = allowed.kinds.as_deref().filter(|k| !k.is_empty()) {
        kinds.clear();
        for (j, k) in list.iter().enumerate() {
            let group = k.group.as_deref().unwrap_or(GATEWAY_API_GROUP);
            match DEFAULT_KINDS.iter().find(|known| **known == k.kind) {
                Some(known) if group == GATEWAY_API_GROUP => {
                    if !kinds.contains(known) {
                        kinds.push(known)
                    }
                }
                _ => invalid.push((
                    format!("{at}.allowedRoutes.kinds[{j}]"),
                    format!(
                        "{group}/{}: only HTTPRoute and GRPCRoute (group {GATEWAY_API_GROUP}) are supported",
                        k.kind
                    ),
                )),
            }
        }
    }
    for (field, message) in &invalid {
        refs.push((
            field.clone(),
            listener_reason::INVALID_ROUTE_KINDS,
            message.clone(),
        ));
    }
    let ignored = if kinds.is_empty() {
        for (field, message) in invalid {
            c.error(field, message);
        }
        Vec::new()
    } else {
        invalid
    };
    let Some(ns) = &allowed.namespaces else {
        return (AllowedNamespaces::Same, kinds, ignored);
    };
    // The Gateway API: the selector "is ignored for other values of From".
    let from = ns.from.as_deref().unwrap_or("Same");
    let namespaces = match from {
        "Same" => AllowedNamespaces::Same,
        "All" => AllowedNamespaces::All,
        "Selector" => {
            let field = format!("{at}.allowedRoutes.namespaces.selector");
            match &ns.selector {
                None => {
                    c.error(field, "missing: from: Selector needs a label selector");
                    AllowedNamespaces::Same
                }
                Some(selector) => match label_selector(c, &field, selector) {
                    Some(s) => AllowedNamespaces::Selector(s),
                    None => AllowedNamespaces::Same,
                },
            }
        }
        other => {
            c.error(
                format!("{at}.allowedRoutes.namespaces.from"),
                format!("\"{other}\": expected Same, All or Selector"),
            );
            AllowedNamespaces::Same
        }
    };
    (namespaces, kinds, ignored)
}

/// The labels of every namespace the revision holds a Namespace object for; any other
/// namespace has only the label the API server gives every namespace,
/// `kubernetes.io/metadata.name`.
#[derive(Debug, Default)]
pub(super) struct Namespaces {
    labels: HashMap<String, BTreeMap<String, String>>,
}

/// The label the API server sets on every namespace: its name.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl Namespaces {
    pub(super) fn of(objects: &[Located<Object>]) -> Namespaces {
        let labels = objects
            .iter()
            .filter_map(|o| match &o.value {
                Object::Namespace(n) => Some((
                    o.value.name().to_owned(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )),
                _ => None,
            })
            .collect();
        Namespaces { labels }
    }

    /// The labels of namespace `name`.
    fn labels(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels = self.labels.get(name).cloned().unwrap_or_default();
        labels.insert(NAME_LABEL.to_owned(), name.to_owned());
        labels
    }
}

/// The problem (field, message) of the reference at `field` unless the Gateway of
/// `gateway_ns` may refer to the object (`to` = group, kind) `namespace/name`: within its
/// namespace always, across namespaces when a ReferenceGrant there allows it (Gateway API
/// `RefNotPermitted`).
fn not_permitted(
    field: &str,
    grants: &Grants<'_>,
    gateway_ns: &str,
    to: (&str, &str),
    namespace: &str,
    name: &str,
) -> Option<(String, String)> {
    let from = Referrer {
        group: GATEWAY_API_GROUP,
        kind: "Gateway",
        namespace: gateway_ns,
    };
    (!grants.permits(&from, to.0, to.1, namespace, name)).then(|| {
        (
            format!("{field}.namespace"),
            format!(
                "{} {namespace}/{name} is in another namespace, and no ReferenceGrant in namespace {namespace} lets Gateways of namespace {gateway_ns} refer to it (RefNotPermitted)",
                to.1
            ),
        )
    })
}
