//! `Gateway` objects: listeners (names, ports, hostnames), their protocol and TLS certificate
//! references, and `allowedRoutes`. A listener with a problem is left out, so that routes
//! naming it are not reported a second time.
use std::collections::{BTreeMap, HashSet};

use tollgate_model::gateway::{Gateway, Listener, GATEWAY_API_GROUP};
use tollgate_model::{names, Checker};

use super::limits::*;
use super::port;
use super::table::{HostPattern, L7Policy, ListenerDef, ListenerTls, SecretRef};

/// A Gateway's listener, as routes see it.
pub(super) struct ListenerRef {
    /// Index in [`L7Policy::listeners`].
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) port: u16,
    pub(super) hostname: HostPattern,
    /// Whether routes of every namespace may attach (`allowedRoutes.namespaces.from: All`).
    pub(super) all_namespaces: bool,
}

/// A Gateway, as routes see it: its namespace and its valid listeners.
pub(super) struct GatewayInfo {
    pub(super) namespace: String,
    pub(super) listeners: Vec<ListenerRef>,
}

/// Checks a Gateway and adds its valid listeners to `policy`; `taken` and `schemes` hold what
/// the listeners of earlier Gateways took (port and hostname; whether a port speaks TLS).
#[allow(clippy::too_many_arguments)]
pub(super) fn gateway(
    c: &mut Checker<'_, '_>,
    ns: &str,
    name: &str,
    g: &Gateway,
    policy: &mut L7Policy,
    taken: &mut BTreeMap<(u16, HostPattern), (String, String)>,
    schemes: &mut BTreeMap<u16, (bool, String, String)>,
) -> GatewayInfo {
    let spec = &g.spec;
    let mut info = GatewayInfo {
        namespace: ns.to_owned(),
        listeners: Vec::new(),
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
    if spec.listeners.is_empty() {
        c.error(
            "spec.listeners",
            "empty: a Gateway needs at least one listener",
        );
    }
    c.count("spec.listeners", spec.listeners.len(), MAX_LISTENERS);
    let mut names = HashSet::new();
    // Listener errors are collected per listener; a listener with errors is left out, so that
    // routes naming it are not reported a second time as "unknown listener".
    for (i, l) in spec.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        let before = c.mark();
        if let Err(why) = names::section_name(&l.name) {
            c.error(format!("{at}.name"), format!("\"{}\" {why}", l.name));
        } else if !names.insert(l.name.as_str()) {
            c.error(
                format!("{at}.name"),
                format!("duplicate listener name \"{}\"", l.name),
            );
        }
        let port = port(c, &format!("{at}.port"), l.port);
        let hostname = match &l.hostname {
            None => HostPattern::Any,
            Some(h) => match names::hostname(h, true) {
                Ok(()) => HostPattern::parse(h),
                Err(why) => {
                    c.error(format!("{at}.hostname"), format!("\"{h}\" {why}"));
                    HostPattern::Any
                }
            },
        };
        let tls = listener_protocol(c, &at, ns, l);
        let all_namespaces = allowed_routes(c, &at, l);
        if !c.clean_since(before) {
            continue;
        }
        let Some(port) = port else { continue };
        let gw = format!("{ns}/{name}");
        if let Some((other_gw, other_listener)) = taken.get(&(port, hostname.clone())) {
            c.error(
                &at,
                format!(
                    "port {port} with hostname \"{}\" is already served by listener \"{other_listener}\" of Gateway {other_gw}; listeners on one port need distinct hostnames",
                    hostname.to_yaml()
                ),
            );
            continue;
        }
        // A port speaks TLS or it does not: the first bytes of a connection cannot tell which
        // listener it is for.
        if let Some((other_tls, other_gw, other_listener)) = schemes.get(&port) {
            if *other_tls != tls.is_some() {
                let name = |t: bool| if t { "HTTPS" } else { "HTTP" };
                c.error(
                    format!("{at}.protocol"),
                    format!(
                        "port {port} is already served as {} by listener \"{other_listener}\" of Gateway {other_gw}; one port cannot mix HTTP and HTTPS listeners",
                        name(*other_tls)
                    ),
                );
                continue;
            }
        } else {
            schemes.insert(port, (tls.is_some(), gw.clone(), l.name.clone()));
        }
        taken.insert((port, hostname.clone()), (gw.clone(), l.name.clone()));
        policy.listeners.push(ListenerDef {
            gateway: gw,
            name: l.name.clone(),
            port,
            hostname: hostname.clone(),
            tls,
        });
        info.listeners.push(ListenerRef {
            index: policy.listeners.len() - 1,
            name: l.name.clone(),
            port,
            hostname,
            all_namespaces,
        });
    }
    info
}

/// Checks the protocol and TLS settings of a listener; returns its TLS settings (`None` for
/// HTTP, and for HTTPS listeners with errors).
fn listener_protocol(
    c: &mut Checker<'_, '_>,
    at: &str,
    gateway_ns: &str,
    l: &Listener,
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
                        }
                        certificates.push(SecretRef {
                            namespace: namespace.to_owned(),
                            name: r.name.clone(),
                        });
                    }
                }
            }
            let mut client_cas = Vec::new();
            if let Some(v) = &tls.frontend_validation {
                let at = format!("{at}.tls.frontendValidation.caCertificateRefs");
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
                                c.error(
                                    &f,
                                    format!(
                                        "{}/{}: only core ConfigMaps can hold CA certificates",
                                        r.group, r.kind
                                    ),
                                );
                            }
                            if let Err(why) = names::dns_subdomain(&r.name) {
                                c.error(format!("{f}.name"), format!("\"{}\" {why}", r.name));
                            }
                            let namespace = r.namespace.as_deref().unwrap_or(gateway_ns);
                            if let Err(why) = names::dns_label(namespace) {
                                c.error(format!("{f}.namespace"), format!("\"{namespace}\" {why}"));
                            }
                            client_cas.push(SecretRef {
                                namespace: namespace.to_owned(),
                                name: r.name.clone(),
                            });
                        }
                    }
                }
            }
            c.clean_since(before).then_some(ListenerTls {
                certificates,
                client_cas,
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

/// Checks `allowedRoutes`; returns whether routes from every namespace may attach.
fn allowed_routes(c: &mut Checker<'_, '_>, at: &str, l: &Listener) -> bool {
    let Some(allowed) = &l.allowed_routes else {
        return false;
    };
    if let Some(kinds) = &allowed.kinds {
        for (j, k) in kinds.iter().enumerate() {
            let group = k.group.as_deref().unwrap_or(GATEWAY_API_GROUP);
            if group != GATEWAY_API_GROUP || k.kind != "HTTPRoute" {
                c.error(
                    format!("{at}.allowedRoutes.kinds[{j}]"),
                    format!("{group}/{}: only HTTPRoute is supported", k.kind),
                );
            }
        }
    }
    let Some(ns) = &allowed.namespaces else {
        return false;
    };
    match ns.from.as_deref() {
        None | Some("Same") => {
            if ns.selector.is_some() {
                c.error(
                    format!("{at}.allowedRoutes.namespaces.selector"),
                    "a selector needs from: Selector",
                );
            }
            false
        }
        Some("All") => true,
        Some("Selector") => {
            c.error(
                format!("{at}.allowedRoutes.namespaces.from"),
                "Selector is not supported: the standalone agent has no namespace labels (use Same or All)",
            );
            false
        }
        Some(other) => {
            c.error(
                format!("{at}.allowedRoutes.namespaces.from"),
                format!("\"{other}\": expected Same, All or Selector"),
            );
            false
        }
    }
}
