//! This node's `TollgateNode` status: what `/status` reports, as the cluster reads it. The
//! conversion is here (the binary sees its own status); the writing is the kubernetes crate's
//! [`NodeStatusWriter`], which compares, coalesces, retries and sends events, off the agent's
//! loop. The reporter task wakes when the agent changes its status
//! ([`Shared::status_changed`]), converts it, and hands it over without waiting.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use tollgate_kubernetes::events::REVISION_REFUSED;
use tollgate_kubernetes::report::now_seconds;
use tollgate_kubernetes::NodeStatusWriter;
use tollgate_model::node::{
    InterfaceAttachMode, KindCount, NodeInterface, NodeListener, RefusedObject, TollgateNodeStatus,
    MAX_NOT_FOR_THIS_NODE_LISTED, MAX_REFUSED_LISTED,
};

use super::{Shared, Status};

/// Longest reason of a refused object, and longest condition message: the schema's bound on a
/// reason, and enough for a condition (the full text is in the log and `/status`).
const MAX_TEXT: usize = 1024;

/// Most interfaces and listeners listed (the CRD's bounds).
const MAX_INTERFACES: usize = 64;
const MAX_LISTENERS: usize = 256;

/// Starts the reporter: every change of the agent's status becomes a [`TollgateNodeStatus`]
/// handed to `writer`. Nothing is handed over before a pass has an outcome (a revision
/// enforced, an attempt refused, a source that cannot be read), so that an agent's start is
/// one write, not an empty status followed by the real one.
pub fn spawn(
    shared: Arc<Shared>,
    writer: NodeStatusWriter,
    gateway_address: IpAddr,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            shared.status_changed.notified().await;
            let converted = {
                let status = shared.status.read().unwrap_or_else(|p| p.into_inner());
                if status.applied.is_none()
                    && status.attempted.is_none()
                    && status.last_error.is_none()
                {
                    continue;
                }
                node_status(&status, gateway_address, now_seconds())
            };
            writer.publish(converted);
        }
    })
}

/// The node's status as the cluster sees it; `now` is the transition time of conditions that
/// change (the writer keeps the earlier one while a condition's status stays).
pub fn node_status(status: &Status, gateway_address: IpAddr, now: Time) -> TollgateNodeStatus {
    let applied = status.applied.as_ref();
    let mut out = TollgateNodeStatus {
        revision: applied.map(|a| a.id.clone()),
        enforced_at: applied.and_then(|a| {
            Timestamp::from_second(i64::try_from(a.at_unix).ok()?)
                .ok()
                .map(Time)
        }),
        time_to_enforce_millis: applied
            .and(status.time_to_enforce_ms)
            .and_then(|ms| i64::try_from(ms).ok()),
        ..Default::default()
    };
    if applied.is_some() {
        out.objects = status
            .objects
            .iter()
            .map(|(kind, n)| KindCount {
                kind: kind.clone(),
                count: i32::try_from(*n).unwrap_or(i32::MAX),
            })
            .collect();
        let not_served = &status.not_served;
        out.refused = not_served
            .left_out
            .iter()
            .take(MAX_REFUSED_LISTED)
            .map(|l| RefusedObject {
                kind: l.kind.to_owned(),
                namespace: Some(l.namespace.clone()).filter(|ns| !ns.is_empty()),
                name: l.name.clone(),
                field: l
                    .problems
                    .first()
                    .map(|p| p.location.field.clone())
                    .filter(|f| !f.is_empty()),
                reason: bounded(
                    &l.problems
                        .iter()
                        .map(|p| p.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            })
            .collect();
        out.refused_count = Some(i32::try_from(not_served.left_out_count).unwrap_or(i32::MAX));
        out.not_for_this_node = status
            .l4_not_for_this_node
            .iter()
            .take(MAX_NOT_FOR_THIS_NODE_LISTED)
            .cloned()
            .collect();
        out.listeners = status
            .listeners
            .iter()
            .take(MAX_LISTENERS)
            .map(|l| NodeListener {
                address: SocketAddr::new(gateway_address, l.port).to_string(),
                protocol: l.protocol.to_owned(),
                gateway_listeners: l.gateway_listeners.clone(),
            })
            .collect();
    }
    // The CRD keys interfaces by name: an interface given twice (`--interface eth0
    // --interface eth0`) must be listed once, or the API server refuses every write.
    let mut seen = std::collections::HashSet::new();
    out.interfaces = status
        .interfaces
        .iter()
        .filter(|i| seen.insert(i.name.as_str()))
        .take(MAX_INTERFACES)
        .map(|i| NodeInterface {
            name: i.name.clone(),
            attach_mode: match i.mode.as_str() {
                "native" if i.enforced => Some(InterfaceAttachMode::Native),
                "generic" if i.enforced => Some(InterfaceAttachMode::Generic),
                "tc" if i.enforced => Some(InterfaceAttachMode::Tc),
                _ => None,
            },
            error: match i.mode.as_str() {
                "absent" => Some("no interface of that name on the node".to_owned()),
                _ if !i.enforced => Some(bounded(
                    i.problem
                        .as_deref()
                        .unwrap_or("the program is not attached"),
                )),
                _ => None,
            },
        })
        .collect();
    out.conditions = vec![ready(status, &now), degraded(status, &now)];
    out
}

/// `Ready`: a revision is enforced on every configured interface (what `/readyz` says).
fn ready(status: &Status, now: &Time) -> Condition {
    let missing: Vec<String> = status
        .interfaces
        .iter()
        .filter(|i| !i.enforced)
        .map(|i| format!("{} ({})", i.name, i.mode))
        .collect();
    let (state, reason, message) = match &status.applied {
        None => (
            "False",
            "NoRevision",
            "no revision is enforced yet".to_owned(),
        ),
        Some(_) if !missing.is_empty() => (
            "False",
            "InterfaceNotEnforced",
            format!("nothing is enforced on {}", missing.join(", ")),
        ),
        Some(a) => (
            "True",
            "RevisionEnforced",
            format!(
                "revision {} is enforced on every configured interface",
                a.id
            ),
        ),
    };
    condition("Ready", state, reason, &message, now)
}

/// `Degraded`: the last revision read was refused (the one before stays enforced), the source
/// cannot be read, or an interface could not be attached.
fn degraded(status: &Status, now: &Time) -> Condition {
    let error = status.last_error.as_deref().unwrap_or("");
    let refused = status.attempted.as_ref().and_then(|a| {
        let kind = a.refused.as_deref()?;
        let kept = match &status.applied {
            Some(applied) => format!("revision {} stays enforced", applied.id),
            None => "no revision is enforced".to_owned(),
        };
        Some(format!(
            "revision {} refused ({kind}); {kept}: {error}",
            a.id
        ))
    });
    let detached: Vec<String> = status
        .interfaces
        .iter()
        .filter(|i| i.mode == "detached")
        .map(|i| {
            format!(
                "{}: {}",
                i.name,
                i.problem.as_deref().unwrap_or("not attached")
            )
        })
        .collect();
    let (state, reason, message) = if let Some(message) = refused {
        ("True", REVISION_REFUSED, message)
    } else if status.consecutive_failures > 0 {
        (
            "True",
            "SourceUnavailable",
            format!("the source cannot be read (the revision in force stays): {error}"),
        )
    } else if !detached.is_empty() {
        (
            "True",
            "InterfaceNotAttached",
            format!("could not attach: {}", detached.join("; ")),
        )
    } else {
        ("False", "AsExpected", String::new())
    };
    condition("Degraded", state, reason, &message, now)
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, now: &Time) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: bounded(message.trim_end()),
        last_transition_time: now.clone(),
        observed_generation: None,
    }
}

/// `text` cut at [`MAX_TEXT`] bytes (a character boundary), marked as cut.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut cut = MAX_TEXT - 3;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{InterfaceStatus, ListenerStatus, NotServed, RevisionStatus};
    use tollgate_model::{LeftOut, PolicyError};

    fn revision(id: &str, refused: Option<&str>) -> RevisionStatus {
        RevisionStatus {
            id: id.into(),
            source: "kubernetes (http://127.0.0.1:1)".into(),
            at_unix: 1_700_000_000,
            refused: refused.map(str::to_owned),
        }
    }

    fn enforcing() -> Status {
        Status {
            applied: Some(revision("k8s:aaaa@12", None)),
            attempted: Some(revision("k8s:aaaa@12", None)),
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                mode: "native".into(),
                enforced: true,
                ifindex: Some(2),
                problem: None,
            }],
            objects: [("HTTPRoute".to_owned(), 2), ("L4Policy".to_owned(), 1)]
                .into_iter()
                .collect(),
            listeners: vec![ListenerStatus {
                port: 8080,
                protocol: "HTTP",
                gateway_listeners: vec!["default/edge/http".into()],
            }],
            time_to_enforce_ms: Some(42),
            ..Default::default()
        }
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_700_000_100).unwrap())
    }

    fn address() -> IpAddr {
        IpAddr::from([0, 0, 0, 0])
    }

    #[test]
    fn an_enforced_revision_is_ready_with_its_objects_interfaces_and_listeners() {
        let s = node_status(&enforcing(), address(), now());
        assert_eq!(s.revision.as_deref(), Some("k8s:aaaa@12"));
        assert_eq!(
            serde_json::to_value(&s.enforced_at).unwrap(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(s.time_to_enforce_millis, Some(42));
        assert_eq!(
            s.objects,
            vec![
                KindCount {
                    kind: "HTTPRoute".into(),
                    count: 2
                },
                KindCount {
                    kind: "L4Policy".into(),
                    count: 1
                }
            ]
        );
        assert_eq!(s.refused_count, Some(0));
        assert_eq!(
            s.interfaces[0].attach_mode,
            Some(InterfaceAttachMode::Native)
        );
        assert_eq!(s.listeners[0].address, "0.0.0.0:8080");
        assert_eq!(s.listeners[0].gateway_listeners, ["default/edge/http"]);
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        let degraded = &s.conditions[1];
        assert_eq!(
            (
                degraded.type_.as_str(),
                degraded.status.as_str(),
                degraded.reason.as_str()
            ),
            ("Degraded", "False", "AsExpected")
        );
    }

    #[test]
    fn a_refused_revision_is_degraded_and_names_what_stays_enforced() {
        let mut status = enforcing();
        status.attempted = Some(revision("k8s:bbbb@13", Some("invalid")));
        status.last_error = Some(format!(
            "L4Policy/edge: spec.rules[0].from: {}\n",
            "x".repeat(5000)
        ));
        let s = node_status(&status, address(), now());
        assert_eq!(s.revision.as_deref(), Some("k8s:aaaa@12"));
        let degraded = &s.conditions[1];
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "RevisionRefused")
        );
        assert!(
            degraded.message.starts_with("revision k8s:bbbb@13 refused (invalid); revision k8s:aaaa@12 stays enforced: L4Policy/edge"),
            "{}",
            degraded.message
        );
        assert!(degraded.message.len() <= MAX_TEXT);
    }

    #[test]
    fn objects_left_out_are_listed_with_their_field_and_counted() {
        let mut status = enforcing();
        let left_out = |i: usize| LeftOut {
            kind: "HTTPRoute",
            namespace: "shop".into(),
            name: format!("r{i}"),
            file: format!("kubernetes:/shop/HTTPRoute/r{i}"),
            object: format!("HTTPRoute/shop/r{i}"),
            problems: vec![
                PolicyError::new("f", "o", "spec.rules[0]", "first"),
                PolicyError::new("f", "o", "spec.rules[1]", "second"),
            ],
            targets: vec![],
            gateway_class: None,
        };
        status.not_served = NotServed {
            left_out: (0..40)
                .map(left_out)
                .take(crate::telemetry::MAX_STATUS_ITEMS)
                .collect(),
            left_out_count: 40,
            ..Default::default()
        };
        let s = node_status(&status, address(), now());
        assert_eq!(s.refused.len(), MAX_REFUSED_LISTED);
        assert_eq!(s.refused_count, Some(40));
        let first = &s.refused[0];
        assert_eq!(first.namespace.as_deref(), Some("shop"));
        assert_eq!(first.field.as_deref(), Some("spec.rules[0]"));
        assert_eq!(first.reason, "first; second");
    }

    #[test]
    fn l4_policies_not_for_this_node_are_listed_bounded() {
        let mut status = enforcing();
        assert!(node_status(&status, address(), now())
            .not_for_this_node
            .is_empty());
        status.l4_not_for_this_node = vec!["edge-gpu".into(), "edge-zone-b".into()];
        let s = node_status(&status, address(), now());
        assert_eq!(s.not_for_this_node, ["edge-gpu", "edge-zone-b"]);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["notForThisNode"],
            serde_json::json!(["edge-gpu", "edge-zone-b"])
        );
        status.l4_not_for_this_node = (0..40).map(|i| format!("p{i:02}")).collect();
        let s = node_status(&status, address(), now());
        assert_eq!(s.not_for_this_node.len(), MAX_NOT_FOR_THIS_NODE_LISTED);
        assert_eq!(s.not_for_this_node[0], "p00");
        // Nothing enforced: nothing listed.
        status.applied = None;
        assert!(node_status(&status, address(), now())
            .not_for_this_node
            .is_empty());
    }

    #[test]
    fn an_interface_that_is_absent_or_detached_is_not_ready() {
        let mut status = enforcing();
        status.interfaces.push(InterfaceStatus {
            name: "eth1".into(),
            mode: "absent".into(),
            enforced: false,
            ifindex: None,
            problem: None,
        });
        status.interfaces.push(InterfaceStatus {
            name: "eth2".into(),
            mode: "detached".into(),
            enforced: false,
            ifindex: Some(7),
            problem: Some("XDP refused".into()),
        });
        status.interfaces.push(status.interfaces[0].clone());
        let s = node_status(&status, address(), now());
        assert_eq!(
            s.interfaces.len(),
            3,
            "each interface once: {:?}",
            s.interfaces
        );
        assert_eq!(s.interfaces[1].attach_mode, None);
        assert!(s.interfaces[1].error.is_some());
        assert_eq!(s.interfaces[2].error.as_deref(), Some("XDP refused"));
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, "InterfaceNotEnforced");
        assert_eq!(s.conditions[1].reason, "InterfaceNotAttached");
    }

    #[test]
    fn nothing_enforced_yet_is_not_ready_and_lists_no_content() {
        let status = Status {
            attempted: Some(revision("k8s:bbbb@13", Some("invalid"))),
            last_error: Some("broken".into()),
            ..Default::default()
        };
        let s = node_status(&status, address(), now());
        assert_eq!(s.revision, None);
        assert_eq!(s.refused_count, None);
        assert_eq!(s.conditions[0].reason, "NoRevision");
        assert!(
            s.conditions[1]
                .message
                .contains("no revision is enforced: broken"),
            "{}",
            s.conditions[1].message
        );
    }
}
