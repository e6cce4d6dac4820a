//! Events about a node's `TollgateNode` (events.k8s.io/v1, `reportingController`
//! [`REPORTING_CONTROLLER`], `reportingInstance` the node's name, in the `default` namespace as
//! events about cluster-scoped objects are): a revision applied (`Normal RevisionApplied`),
//! objects of it left out (`Warning ObjectsRefused`), a revision refused whole (`Warning
//! RevisionRefused`).
//!
//! They are derived from two successive statuses ([`Change::between`]), so that what the
//! writer coalesces is coalesced here too: at most one event of each reason per status written,
//! three per revision at the very most. On top of that, a token bucket ([`BURST`] events, one
//! more every [`REFILL`]) bounds a flapping source, and an event identical to one sent in the
//! last [`SERIES_WINDOW`] (same type, reason and note) is counted on that one as a series
//! (`PATCH` of `series.count`) instead of being created again, as the API's own recorders do.
//!
//! kube's `runtime::events::Recorder` is not used: it keys its series on the reason alone and
//! keeps the first note, so the second revision applied would be reported as a repeat of the
//! first one's note.
use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Resource as _;
use serde_json::json;
use tokio::time::Instant;
use tollgate_model::node::{TollgateNode, TollgateNodeStatus};
use tracing::{debug, warn};

use crate::report::{result_of, ReportMetrics};

/// `reportingController` of the agent's events.
pub const REPORTING_CONTROLLER: &str = "tollgate.dev/agent";

/// Where events about cluster-scoped objects go.
pub const EVENTS_NAMESPACE: &str = "default";

/// The condition reason of a revision refused whole; such a `Degraded` condition is reported
/// as a `Warning RevisionRefused` event.
pub const REVISION_REFUSED: &str = "RevisionRefused";

/// Events sent at once before the rate limit starts to drop them.
pub const BURST: u32 = 10;

/// One more event allowed per this much time.
pub const REFILL: Duration = Duration::from_secs(6);

/// An identical event within this window is a repeat of the first (a series), not a new one.
pub const SERIES_WINDOW: Duration = Duration::from_secs(600);

/// The API's limit on an event's note.
const MAX_NOTE: usize = 1024;

/// Events sent recently, remembered for series; older ones are forgotten.
const MAX_REMEMBERED: usize = 64;

/// What changed between two statuses written, as events.
#[derive(Debug, Default, PartialEq)]
pub struct Change {
    /// The events, in order.
    pub events: Vec<Note>,
}

/// One event to send.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Note {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `RevisionApplied`, `ObjectsRefused` or `RevisionRefused`.
    pub reason: &'static str,
    /// What a person reads (at most 1,024 bytes).
    pub note: String,
}

impl Change {
    /// The events that report going from `before` (`None`: nothing was written before) to
    /// `after`.
    pub fn between(before: Option<&TollgateNodeStatus>, after: &TollgateNodeStatus) -> Self {
        let mut events = Vec::new();
        let revision = after.revision.as_deref().unwrap_or("-");
        let new_revision =
            after.revision.is_some() && before.map(|b| &b.revision) != Some(&after.revision);
        if new_revision {
            let objects: Vec<String> = after
                .objects
                .iter()
                .map(|k| format!("{} {}", k.count, k.kind))
                .collect();
            let mut note = format!("enforcing revision {revision}");
            if !objects.is_empty() {
                note.push_str(&format!(" ({})", objects.join(", ")));
            }
            if let Some(took) = after.time_to_enforce_millis {
                note.push_str(&format!(", enforced in {took} ms"));
            }
            events.push(Note {
                type_: "Normal",
                reason: "RevisionApplied",
                note: bounded(note),
            });
        }
        let refused = after.refused_count.unwrap_or(after.refused.len() as i32);
        let refused_changed = before
            .is_none_or(|b| b.refused != after.refused || b.refused_count != after.refused_count);
        if refused > 0 && (new_revision || refused_changed) {
            let listed: Vec<String> = after
                .refused
                .iter()
                .map(|r| {
                    let mut one = r.kind.clone();
                    one.push(' ');
                    if let Some(ns) = &r.namespace {
                        one.push_str(ns);
                        one.push('/');
                    }
                    one.push_str(&r.name);
                    if let Some(field) = &r.field {
                        one.push_str(&format!(" ({field})"));
                    }
                    one.push_str(": ");
                    one.push_str(&r.reason);
                    one
                })
                .collect();
            events.push(Note {
                type_: "Warning",
                reason: "ObjectsRefused",
                note: bounded(format!(
                    "revision {revision} is enforced without {refused} object(s) it holds: {}",
                    listed.join("; ")
                )),
            });
        }
        let refusal = |s: &TollgateNodeStatus| {
            s.conditions
                .iter()
                .find(|c| {
                    c.type_ == "Degraded" && c.status == "True" && c.reason == REVISION_REFUSED
                })
                .map(|c| c.message.clone())
        };
        if let Some(message) = refusal(after) {
            if before.and_then(refusal).as_ref() != Some(&message) {
                events.push(Note {
                    type_: "Warning",
                    reason: REVISION_REFUSED,
                    note: bounded(message),
                });
            }
        }
        Change { events }
    }
}

/// `text` cut to the API's limit on a note, at a character boundary, marked as cut.
fn bounded(text: String) -> String {
    if text.len() <= MAX_NOTE {
        return text;
    }
    let mut cut = MAX_NOTE - 3;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// One event sent, for series.
struct Sent {
    name: String,
    count: i32,
    at: Instant,
}

/// Sends the events of one node, rate-limited and aggregated; see the module documentation.
pub struct Events {
    api: Api<Event>,
    node: String,
    tokens: f64,
    refilled: Instant,
    sent: HashMap<Note, Sent>,
}

impl Events {
    /// The events of `TollgateNode/{node}`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        Events {
            api: Api::namespaced(client, EVENTS_NAMESPACE),
            node: node.to_owned(),
            tokens: f64::from(BURST),
            refilled: Instant::now(),
            sent: HashMap::new(),
        }
    }

    /// Sends the events of `change`, about the object `uid`. Failures are logged and counted,
    /// never retried: the status carries the same facts, and it is retried.
    pub async fn publish(
        &mut self,
        change: &Change,
        uid: Option<&str>,
        metrics: &dyn ReportMetrics,
    ) {
        for note in &change.events {
            if !self.take_token() {
                debug!(node = %self.node, reason = note.reason, "event dropped by the rate limit");
                metrics.event("throttled");
                continue;
            }
            let result = self.send(note, uid).await;
            match result {
                Ok(()) => metrics.event("ok"),
                Err(e) => {
                    warn!(node = %self.node, reason = note.reason, error = %e, "could not send an event about the TollgateNode");
                    metrics.event(result_of(&e));
                }
            }
        }
    }

    fn take_token(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + earned).min(f64::from(BURST));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    async fn send(&mut self, note: &Note, uid: Option<&str>) -> Result<(), kube::Error> {
        let now = Instant::now();
        self.sent
            .retain(|_, s| now.duration_since(s.at) < SERIES_WINDOW);
        let stamp = MicroTime(Timestamp::now());
        if let Some(sent) = self.sent.get_mut(note) {
            let count = sent.count + 1;
            let patch = json!({"series": EventSeries { count, last_observed_time: stamp }});
            self.api
                .patch(&sent.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            sent.count = count;
            sent.at = now;
            return Ok(());
        }
        // Object names are at most 253 characters: the node's name, cut, and a unique suffix.
        let prefix: String = self.node.chars().take(200).collect();
        let name = format!("{prefix}.{:x}", Timestamp::now().as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(EVENTS_NAMESPACE.into()),
                ..Default::default()
            },
            event_time: Some(stamp),
            action: Some("Enforce".into()),
            reason: Some(note.reason.into()),
            note: Some(note.note.clone()),
            type_: Some(note.type_.into()),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.node.chars().take(128).collect()),
            regarding: Some(ObjectReference {
                api_version: Some(TollgateNode::api_version(&()).into_owned()),
                kind: Some(TollgateNode::kind(&()).into_owned()),
                name: Some(self.node.clone()),
                uid: uid.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.api.create(&PostParams::default(), &event).await?;
        if self.sent.len() >= MAX_REMEMBERED {
            // The oldest is forgotten: a repeat of it becomes a new event, no harm.
            if let Some(oldest) = self
                .sent
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(k, _)| k.clone())
            {
                self.sent.remove(&oldest);
            }
        }
        self.sent.insert(
            note.clone(),
            Sent {
                name,
                count: 1,
                at: now,
            },
        );
        Ok(())
    }
}
