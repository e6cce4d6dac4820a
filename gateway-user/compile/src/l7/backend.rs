//! `Backend` objects: endpoints, load balancing, passive health checks and `spec.tls` (the TLS
//! the proxy speaks to the endpoints).
use std::collections::HashSet;
use std::net::IpAddr;

use tollgate_model::backend::{
    Backend, BackendObjectRef, BackendTls, LoadBalancerType, WellKnownCaCertificates,
};
use tollgate_model::{names, Checker};

use super::limits::*;
use super::table::{
    BackendCa, BackendDef, BackendProtocol, BackendTlsDef, LoadBalancing, SecretRef,
};
use super::{parse_duration, port};

/// Checks a Backend (`label` is `namespace/name`); returns it when it has no problem.
pub(super) fn backend(c: &mut Checker<'_, '_>, label: &str, b: &Backend) -> Option<BackendDef> {
    let before = c.mark();
    let spec = &b.spec;
    if spec.endpoints.is_empty() {
        c.error(
            "spec.endpoints",
            "empty: a Backend needs at least one endpoint",
        );
    }
    c.count("spec.endpoints", spec.endpoints.len(), MAX_ENDPOINTS);
    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in spec.endpoints.iter().enumerate() {
        let at = format!("spec.endpoints[{i}]");
        let authority = match (&e.ip, &e.fqdn) {
            (Some(ip), None) => {
                let port = port(c, &format!("{at}.ip.port"), ip.port);
                match tollgate_model::net::parse_addr(&ip.address) {
                    Ok(IpAddr::V4(a)) => port.map(|p| format!("{a}:{p}")),
                    Ok(IpAddr::V6(a)) => port.map(|p| format!("[{a}]:{p}")),
                    Err(why) => {
                        c.error(format!("{at}.ip.address"), why);
                        None
                    }
                }
            }
            (None, Some(f)) => {
                let port = port(c, &format!("{at}.fqdn.port"), f.port);
                if let Err(why) = names::hostname(&f.hostname, false) {
                    c.error(
                        format!("{at}.fqdn.hostname"),
                        format!("\"{}\" {why}", f.hostname),
                    );
                    None
                } else {
                    port.map(|p| format!("{}:{p}", f.hostname))
                }
            }
            _ => {
                c.error(&at, "set exactly one of ip or fqdn");
                None
            }
        };
        if let Some(a) = authority {
            if !seen.insert(a.clone()) {
                c.error(&at, format!("endpoint {a} is listed twice"));
            }
            endpoints.push(a);
        }
    }
    let load_balancing = match spec.load_balancer.as_ref().map(|l| l.type_) {
        None | Some(LoadBalancerType::RoundRobin) => LoadBalancing::RoundRobin,
        Some(LoadBalancerType::LeastRequest) => LoadBalancing::LeastRequest,
    };
    let passive = spec.health_check.as_ref().and_then(|h| h.passive.as_ref());
    let consecutive_failures = match passive.and_then(|p| p.consecutive_failures) {
        None => DEFAULT_CONSECUTIVE_FAILURES,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => {
            c.error(
                "spec.healthCheck.passive.consecutiveFailures",
                format!("{n} is out of range 1-1000"),
            );
            DEFAULT_CONSECUTIVE_FAILURES
        }
    };
    let ejection_time = match passive.and_then(|p| p.ejection_time.as_deref()) {
        None => DEFAULT_EJECTION_TIME,
        Some(s) => match parse_duration(s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                c.error(
                    "spec.healthCheck.passive.ejectionTime",
                    "must be more than zero",
                );
                DEFAULT_EJECTION_TIME
            }
            Err(why) => {
                c.error("spec.healthCheck.passive.ejectionTime", why);
                DEFAULT_EJECTION_TIME
            }
        },
    };
    let ns = label.split_once('/').map_or("", |(ns, _)| ns);
    let tls = spec.tls.as_ref().and_then(|t| backend_tls(c, ns, t));
    let protocol = app_protocol(c, spec.app_protocol.as_deref(), spec.tls.is_some());
    c.clean_since(before).then(|| BackendDef {
        label: label.to_owned(),
        endpoints,
        load_balancing,
        consecutive_failures,
        ejection_time,
        tls,
        protocol,
    })
}

/// `appProtocol` values a Backend accepts, for the error message.
const APP_PROTOCOLS: &str =
    "kubernetes.io/h2c, tollgate.dev/h2, kubernetes.io/ws or kubernetes.io/wss";

/// Checks a Backend's `spec.appProtocol` against `spec.tls` (set or not).
fn app_protocol(c: &mut Checker<'_, '_>, value: Option<&str>, tls: bool) -> BackendProtocol {
    const AT: &str = "spec.appProtocol";
    let Some(value) = value else {
        return BackendProtocol::Http1;
    };
    match (value, tls) {
        ("kubernetes.io/h2c", false) => BackendProtocol::Http2,
        ("kubernetes.io/h2c", true) => {
            c.error(
                AT,
                "kubernetes.io/h2c is HTTP/2 in cleartext, but spec.tls is set: use tollgate.dev/h2 for HTTP/2 over TLS",
            );
            BackendProtocol::Http1
        }
        ("tollgate.dev/h2", true) => BackendProtocol::Http2,
        ("tollgate.dev/h2", false) => {
            c.error(
                AT,
                "tollgate.dev/h2 is HTTP/2 over TLS, but spec.tls is not set: set it, or use kubernetes.io/h2c for HTTP/2 in cleartext",
            );
            BackendProtocol::Http1
        }
        ("kubernetes.io/ws", false) | ("kubernetes.io/wss", true) => BackendProtocol::Http1,
        ("kubernetes.io/ws", true) => {
            c.error(
                AT,
                "kubernetes.io/ws is WebSocket in cleartext, but spec.tls is set: use kubernetes.io/wss",
            );
            BackendProtocol::Http1
        }
        ("kubernetes.io/wss", false) => {
            c.error(
                AT,
                "kubernetes.io/wss is WebSocket over TLS, but spec.tls is not set: set it, or use kubernetes.io/ws",
            );
            BackendProtocol::Http1
        }
        (other, _) => {
            c.error(
                AT,
                format!("\"{other}\" is not a protocol Tollgate speaks to backends: one of {APP_PROTOCOLS}, or omit it for HTTP/1.1"),
            );
            BackendProtocol::Http1
        }
    }
}

/// Checks a Backend's `spec.tls`.
fn backend_tls(c: &mut Checker<'_, '_>, ns: &str, t: &BackendTls) -> Option<BackendTlsDef> {
    let before = c.mark();
    if let Err(why) = names::hostname(&t.hostname, false) {
        c.error("spec.tls.hostname", format!("\"{}\" {why}", t.hostname));
    }
    let check_ref = |c: &mut Checker<'_, '_>, at: &str, r: &BackendObjectRef, kind: &str| {
        let group = r.group.as_deref().unwrap_or("");
        let k = r.kind.as_deref().unwrap_or(kind);
        if !group.is_empty() || k != kind {
            c.error(
                at,
                format!("{group}/{k}: only a core {kind} can be named here"),
            );
        }
        // The name becomes a directory under --tls-secrets-dir: no `..` or `/`.
        if let Err(why) = names::dns_subdomain(&r.name) {
            c.error(format!("{at}.name"), format!("\"{}\" {why}", r.name));
        }
        SecretRef {
            namespace: ns.to_owned(),
            name: r.name.clone(),
        }
    };
    let ca = match (&t.ca_certificate_refs, t.well_known_ca_certificates) {
        (Some(refs), None) if !refs.is_empty() => {
            c.count(
                "spec.tls.caCertificateRefs",
                refs.len(),
                MAX_CA_CERTIFICATE_REFS,
            );
            BackendCa::Refs(
                refs.iter()
                    .enumerate()
                    .map(|(i, r)| {
                        check_ref(
                            c,
                            &format!("spec.tls.caCertificateRefs[{i}]"),
                            r,
                            "ConfigMap",
                        )
                    })
                    .collect(),
            )
        }
        (None, Some(WellKnownCaCertificates::System)) => BackendCa::System,
        (Some(_), Some(_)) => {
            c.error(
                "spec.tls",
                "set exactly one of caCertificateRefs or wellKnownCACertificates",
            );
            BackendCa::System
        }
        _ => {
            c.error(
                "spec.tls.caCertificateRefs",
                "missing: name the ConfigMaps with the CA certificates, or set wellKnownCACertificates: System",
            );
            BackendCa::System
        }
    };
    let client_certificate = t
        .client_certificate_ref
        .as_ref()
        .map(|r| check_ref(c, "spec.tls.clientCertificateRef", r, "Secret"));
    c.clean_since(before).then(|| BackendTlsDef {
        hostname: t.hostname.clone(),
        ca,
        client_certificate,
    })
}
