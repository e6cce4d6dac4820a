//! Raw `L4Policy` objects -> validated [`Policy`] values. Every value is checked here, and every
//! problem of the revision is reported (file, object, exact field path, the offending value
//! quoted), never just the first: whoever fixes the revision should need one round, not ten.
use super::policy::{
    Action, Mode, Policy, PortRange, Protocol, RateLimit, Rule, MAX_BURST, MAX_PPS,
};
use ipnet::IpNet;
use kube::core::{Selector, SelectorExt};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use tollgate_model::cluster::NodeLabels;
use tollgate_model::l4::{
    self, L4Action, L4Mode, L4Protocol, L4RateLimit, L4Rule, DEFAULT_IPV4_PREFIX,
    DEFAULT_IPV6_PREFIX,
};
use tollgate_model::{Checker, PolicyError, PolicyErrors};
use tollgate_model::{Located, Object};

/// Most rules one revision may hold (all policies together): a bound on map sizes and compile
/// time, far above any hand-written policy.
pub const MAX_RULES: usize = tollgate_model::limits::MAX_L4_RULES;

/// Longest rule name (a DNS label, RFC 1123).
pub const MAX_RULE_NAME: usize = 63;

/// Longest interface name Linux accepts (`IFNAMSIZ` is 16 with the terminating NUL).
pub const MAX_INTERFACE_NAME: usize = 15;

/// Validates every `L4Policy` of a revision; returns them sorted by name, or every problem found.
pub fn validate(objects: &[Located<Object>]) -> Result<Vec<Policy>, PolicyErrors> {
    let mut errors = Vec::new();
    let mut policies = Vec::new();
    let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new(); // policy name -> files
    for located in objects {
        // The L7 kinds are validated by `compile::l7`.
        if let Object::L4Policy(p) = &located.value {
            let name = located.value.name();
            seen.entry(name).or_default().push(&located.file);
            let mut c = Checker::of(located, &mut errors);
            if let Some(policy) = policy(&mut c, name, &p.spec) {
                policies.push(policy);
            }
        }
    }

    // Policy names are unique in a revision: each copy is reported, naming the other files.
    for located in objects {
        if !matches!(located.value, Object::L4Policy(_)) {
            continue;
        }
        let name = located.value.name();
        let files = &seen[name];
        if files.len() > 1 {
            let others: Vec<String> = files
                .iter()
                .filter(|f| **f != located.file)
                .map(|f| f.to_string())
                .collect();
            let elsewhere = if others.is_empty() {
                "this file".to_string()
            } else {
                others.join(", ")
            };
            Checker::of(located, &mut errors).error(
                "metadata.name",
                format!(
                    "\"{name}\" is defined {} times in this revision (also in {elsewhere})",
                    files.len()
                ),
            );
        }
    }

    policies.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.file.cmp(&b.file)));
    let mut total = 0usize;
    for p in &policies {
        total += p.rules.len();
        if total > MAX_RULES {
            let all: usize = policies.iter().map(|p| p.rules.len()).sum();
            errors.push(PolicyError::new(
                &p.file,
                format!("L4Policy/{}", p.name),
                "spec.rules",
                format!("the revision has {all} rules, more than the limit of {MAX_RULES}; this policy's {} rules cross it", p.rules.len()),
            ));
            break;
        }
    }

    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(PolicyErrors(errors))
    }
}

/// The names of the L4Policies of `objects` whose `nodeSelector` does not select `node`: they
/// are not enforced on it. A policy without a nodeSelector applies to every node. Call it on
/// objects [`validate`] accepted (a selector that does not read selects nothing here, so a
/// mistaken caller leaves a policy out rather than enforcing it on a node it does not name).
pub fn not_for_node(objects: &[Located<Object>], node: &NodeLabels) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|located| match &located.value {
            Object::L4Policy(p) => {
                let selector = p.spec.node_selector.as_ref()?;
                let selects = Selector::try_from(selector.clone())
                    .map(|s| s.matches(&node.labels))
                    .unwrap_or(false);
                (!selects).then(|| located.value.name().to_string())
            }
            _ => None,
        })
        .collect()
}

/// The validated policy, or `None` when any of it is invalid (the errors are recorded).
fn policy(c: &mut Checker<'_, '_>, name: &str, spec: &l4::L4PolicySpec) -> Option<Policy> {
    let before = c.mark();
    // Checked in every mode, so that `tollgate validate` in CI refuses a selector the API
    // server would refuse too; whether it is applied is `not_for_node`'s business.
    if let Some(selector) = &spec.node_selector {
        crate::selector::label_selector(c, "spec.nodeSelector", selector);
    }
    let interfaces = spec.interfaces.as_ref().map(|list| interfaces(c, list));
    let mut rules = Vec::with_capacity(spec.rules.len());
    let mut names: HashSet<&str> = HashSet::new();
    for (i, raw) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if !raw.name.is_empty() && !names.insert(&raw.name) {
            c.error(
                format!("{at}.name"),
                format!(
                    "duplicate rule name \"{}\"; rule names are unique within a policy",
                    raw.name
                ),
            );
        }
        if let Some(rule) = rule(c, &at, raw) {
            rules.push(rule);
        }
    }
    c.clean_since(before).then(|| Policy {
        name: name.to_string(),
        file: c.file().to_string(),
        mode: match spec.mode {
            L4Mode::Enforce => Mode::Enforce,
            L4Mode::Audit => Mode::Audit,
        },
        default_action: action(spec.default_action),
        interfaces,
        rules,
    })
}

fn interfaces(c: &mut Checker<'_, '_>, list: &[String]) -> Vec<String> {
    if list.is_empty() {
        c.error(
            "spec.interfaces",
            "empty list; omit interfaces to use the agent's interfaces",
        );
    }
    let mut seen = HashSet::new();
    for (j, name) in list.iter().enumerate() {
        let at = format!("spec.interfaces[{j}]");
        if name.is_empty()
            || name.len() > MAX_INTERFACE_NAME
            || name
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            c.error(at, format!("\"{name}\" is not an interface name (1-{MAX_INTERFACE_NAME} characters, no '/' or spaces)"));
        } else if !seen.insert(name) {
            c.error(at, format!("interface \"{name}\" is listed twice"));
        }
    }
    list.to_vec()
}

fn rule(c: &mut Checker<'_, '_>, at: &str, raw: &L4Rule) -> Option<Rule> {
    let before = c.mark();
    if let Err(why) = check_rule_name(&raw.name) {
        c.error(format!("{at}.name"), format!("\"{}\" {why}", raw.name));
    }
    let action = action(raw.action);
    let from = raw
        .from
        .as_ref()
        .map(|list| cidrs(c, &format!("{at}.from"), list));
    let protocol = raw.protocol.map(protocol);

    let ports = raw.ports.as_ref().map(|list| {
        let field = format!("{at}.ports");
        if !matches!(protocol, Some(Protocol::Tcp | Protocol::Udp)) {
            let got = protocol.map_or("no protocol".to_string(), |p| {
                format!("protocol {}", p.as_str())
            });
            c.error(
                &field,
                format!("ports need protocol TCP or UDP, this rule has {got}"),
            );
        }
        if list.is_empty() {
            c.error(&field, "empty list; omit ports to match any port");
        }
        list.iter()
            .enumerate()
            .filter_map(|(j, s)| {
                parse_ports(s)
                    .map_err(|why| c.error(format!("{field}[{j}]"), why))
                    .ok()
            })
            .collect::<Vec<_>>()
    });

    let icmp_types = raw.icmp_types.as_ref().map(|list| {
        let field = format!("{at}.icmpTypes");
        if !matches!(protocol, Some(Protocol::Icmp | Protocol::Icmpv6)) {
            let got = protocol.map_or("no protocol".to_string(), |p| {
                format!("protocol {}", p.as_str())
            });
            c.error(
                &field,
                format!("icmpTypes need protocol ICMP or ICMPv6, this rule has {got}"),
            );
        }
        if list.is_empty() {
            c.error(&field, "empty list; omit icmpTypes to match any ICMP type");
        }
        list.iter()
            .enumerate()
            .filter_map(|(j, &t)| match u8::try_from(t) {
                Ok(t) => Some(t),
                Err(_) => {
                    c.error(
                        format!("{field}[{j}]"),
                        format!("ICMP type {t} is out of range 0-255"),
                    );
                    None
                }
            })
            .collect::<Vec<_>>()
    });

    let rate_limit = raw.rate_limit.as_ref().and_then(|limit| {
        let field = format!("{at}.rateLimit");
        if action == Action::Deny {
            c.error(
                &field,
                "a rate limit applies to the packets an allow rule admits; this rule denies",
            );
        }
        rate_limit(c, &field, limit)
    });

    c.clean_since(before).then(|| Rule {
        name: raw.name.clone(),
        action,
        from,
        protocol,
        ports,
        icmp_types,
        rate_limit,
    })
}

fn cidrs(c: &mut Checker<'_, '_>, field: &str, list: &[String]) -> Vec<IpNet> {
    if list.is_empty() {
        c.error(
            field,
            "empty list matches no source; omit from to match any source",
        );
    }
    list.iter()
        .enumerate()
        .filter_map(|(j, s)| {
            tollgate_model::net::parse_cidr(s)
                .map_err(|why| c.error(format!("{field}[{j}]"), why))
                .ok()
        })
        .collect()
}

fn rate_limit(c: &mut Checker<'_, '_>, field: &str, raw: &L4RateLimit) -> Option<RateLimit> {
    let before = c.mark();
    let pps = bounded(
        c,
        &format!("{field}.packetsPerSecond"),
        raw.packets_per_second,
        1,
        MAX_PPS,
    );
    let burst = match raw.burst {
        Some(b) => bounded(c, &format!("{field}.burst"), b, 1, MAX_BURST),
        None => pps,
    };
    let per = raw.per.as_ref();
    let v4 = match per.and_then(|p| p.ipv4_prefix) {
        Some(len) => bounded(c, &format!("{field}.per.ipv4Prefix"), len, 0, 32),
        None => Some(u64::from(DEFAULT_IPV4_PREFIX)),
    };
    let v6 = match per.and_then(|p| p.ipv6_prefix) {
        Some(len) => bounded(c, &format!("{field}.per.ipv6Prefix"), len, 0, 128),
        None => Some(u64::from(DEFAULT_IPV6_PREFIX)),
    };
    if !c.clean_since(before) {
        return None;
    }
    Some(RateLimit {
        packets_per_second: pps?,
        burst: burst?,
        ipv4_prefix: u8::try_from(v4?).ok()?,
        ipv6_prefix: u8::try_from(v6?).ok()?,
    })
}

fn bounded(c: &mut Checker<'_, '_>, field: &str, value: i64, min: u64, max: u64) -> Option<u64> {
    match u64::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            c.error(field, format!("{value} is out of range {min}-{max}"));
            None
        }
    }
}

fn action(a: L4Action) -> Action {
    match a {
        L4Action::Allow => Action::Allow,
        L4Action::Deny => Action::Deny,
    }
}

fn protocol(p: L4Protocol) -> Protocol {
    match p {
        L4Protocol::Tcp => Protocol::Tcp,
        L4Protocol::Udp => Protocol::Udp,
        L4Protocol::Icmp => Protocol::Icmp,
        L4Protocol::Icmpv6 => Protocol::Icmpv6,
    }
}

/// Rule names are DNS labels (RFC 1123): they name counters and metrics.
fn check_rule_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty; every rule needs a name".into());
    }
    tollgate_model::names::rule_name(name, MAX_RULE_NAME)
}

/// `"22"` or `"8000-8999"`, ports in 1..=65535, a range not reversed.
fn parse_ports(s: &str) -> Result<PortRange, String> {
    let port = |p: &str| -> Result<u16, String> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "\"{s}\" is not a port or port range (like \"22\" or \"8000-8999\")"
            ));
        }
        match p.parse::<u32>() {
            Ok(n @ 1..=65535) => Ok(n as u16),
            _ => Err(format!("port {p} in \"{s}\" is out of range 1-65535")),
        }
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!(
            "port range \"{s}\" is reversed; did you mean \"{last}-{first}\"?"
        ));
    }
    Ok(PortRange { first, last })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
