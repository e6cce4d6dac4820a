//! The kinds watched, and what is kept of each object: the text the model parses (rendered
//! once, when the object changes) and the few metadata fields the store and the revision need.
use std::borrow::Cow;
use std::sync::Arc;

use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::Lookup;
use kube::Resource;
use serde_json::{Map, Value};
use tollgate_model::{
    auth, backend, gateway, gateway_class, grpc_route, l4, ratelimit, route, traffic,
};

/// One kind the source watches.
#[derive(Debug, Clone)]
pub struct WatchedKind {
    /// Group, version, kind and plural (the URL path).
    pub resource: ApiResource,
    /// Namespaced (objects carry a namespace) or cluster-scoped.
    pub namespaced: bool,
    /// The agent's source watches it only while the revision needs it (`Namespace`: while a
    /// Gateway listener admits routes by namespace labels, `allowedRoutes.namespaces.from:
    /// Selector`), to stay within its budget of watch connections; see
    /// [`crate::KubernetesSource`]. The controller watches every kind always.
    pub on_demand: bool,
}

impl WatchedKind {
    fn of<K: Resource<DynamicType = ()>>(namespaced: bool) -> Self {
        WatchedKind {
            resource: ApiResource::erase::<K>(&()),
            namespaced,
            on_demand: false,
        }
    }

    /// A kind watched for other reasons than policy (the controller's `TollgateNode`).
    pub fn other<K: Resource<DynamicType = ()>>(namespaced: bool) -> Self {
        Self::of::<K>(namespaced)
    }

    /// `plural.group` (`l4policies.tollgate.dev`), as the API server names a resource.
    pub fn resource_name(&self) -> String {
        if self.resource.group.is_empty() {
            self.resource.plural.clone()
        } else {
            format!("{}.{}", self.resource.plural, self.resource.group)
        }
    }
}

/// Every kind the model reads (`tollgate_model::kinds()`; a unit test keeps the two lists
/// equal), with the plural its custom resource type declares. `Namespace` is [on
/// demand](WatchedKind::on_demand).
pub fn watched_kinds() -> Vec<WatchedKind> {
    vec![
        WatchedKind::of::<l4::L4Policy>(false),
        WatchedKind::of::<gateway::Gateway>(true),
        WatchedKind::of::<route::HTTPRoute>(true),
        WatchedKind::of::<grpc_route::GRPCRoute>(true),
        WatchedKind::of::<backend::Backend>(true),
        WatchedKind::of::<ratelimit::RateLimitPolicy>(true),
        WatchedKind::of::<auth::AuthPolicy>(true),
        WatchedKind::of::<traffic::BackendTrafficPolicy>(true),
        WatchedKind::of::<gateway_class::GatewayClass>(false),
        WatchedKind::of::<gateway_class::ReferenceGrant>(true),
        WatchedKind {
            on_demand: true,
            ..WatchedKind::of::<k8s_openapi::api::core::v1::Namespace>(false)
        },
    ]
}

/// What the store keeps of one object: its identity, `generation` and `resourceVersion`, and
/// its text as the model reads it. Keeping the text (about the size of the object's JSON)
/// instead of kube's `DynamicObject` (a tree of JSON values, several times larger) is what keeps
/// a large cluster's policy small in the agent's memory.
#[derive(Debug, Clone)]
pub struct Stored {
    /// name, namespace, uid, generation, resourceVersion; nothing else.
    pub metadata: Identity,
    /// The object as JSON (apiVersion, kind, metadata, every other top-level field but
    /// `status`).
    pub text: Arc<str>,
}

/// What is kept of an object's metadata besides its text: what the store's key, the revision
/// id and the status-only check read. (kube's `ObjectMeta`, two dozen fields, is most of a
/// small object's cost in a store; so is a key that repeats the kind's `ApiResource`, which is
/// why [`Stored`] is keyed by name and namespace alone: each store holds one kind.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub name: Box<str>,
    pub namespace: Option<Box<str>>,
    pub uid: Option<Box<str>>,
    pub generation: Option<i64>,
    pub resource_version: Option<Box<str>>,
}

/// How kube's reflector store keys a [`Stored`]: by name and namespace. The kind (the key's
/// dynamic type) is `()`, since every store holds a single kind, and the key carries no
/// resourceVersion or uid (the object itself does).
impl Lookup for Stored {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        "Stored".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.metadata.name))
    }
    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.metadata.namespace.as_deref().map(Cow::Borrowed)
    }
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }
    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

impl Stored {
    /// What is kept of `object`, of kind `kind`. `managedFields`, `status`, annotations (where
    /// `kubectl apply` keeps a second copy of the whole object) and the other bookkeeping
    /// fields of `metadata` are dropped: the model reads none of them.
    pub fn of(kind: &WatchedKind, object: DynamicObject) -> Stored {
        let DynamicObject {
            types,
            metadata,
            data,
        } = object;
        let (api_version, kind_name) = match types {
            Some(t) => (t.api_version, t.kind),
            None => (
                kind.resource.api_version.clone(),
                kind.resource.kind.clone(),
            ),
        };
        let namespace = metadata.namespace.clone().filter(|_| kind.namespaced);
        let mut meta = Map::new();
        meta.insert(
            "name".into(),
            metadata.name.clone().unwrap_or_default().into(),
        );
        if let Some(ns) = &namespace {
            meta.insert("namespace".into(), ns.clone().into());
        }
        if let Some(labels) = metadata.labels.as_ref().filter(|l| !l.is_empty()) {
            meta.insert(
                "labels".into(),
                serde_json::to_value(labels).unwrap_or(Value::Null),
            );
        }
        if let Some(generation) = metadata.generation {
            meta.insert("generation".into(), generation.into());
        }
        if let Some(rv) = &metadata.resource_version {
            meta.insert("resourceVersion".into(), rv.clone().into());
        }
        // Gateway API precedence between conflicting routes goes to the oldest.
        if let Some(created) = &metadata.creation_timestamp {
            meta.insert(
                "creationTimestamp".into(),
                serde_json::to_value(created).unwrap_or(Value::Null),
            );
        }
        let mut top = Map::new();
        top.insert("apiVersion".into(), api_version.into());
        top.insert("kind".into(), kind_name.into());
        top.insert("metadata".into(), Value::Object(meta));
        // Every other top-level field but status goes to the model, which refuses the
        // unknown ones by name (an object with a field this agent does not know is reported,
        // never silently half-read).
        match data {
            Value::Object(fields) => {
                for (k, v) in fields {
                    if !matches!(k.as_str(), "status" | "apiVersion" | "kind" | "metadata") {
                        top.insert(k, v);
                    }
                }
            }
            Value::Null => {}
            other => {
                top.insert("data".into(), other);
            }
        }
        let text =
            serde_json::to_string(&Value::Object(top)).expect("a JSON value always serializes");
        Stored {
            metadata: Identity {
                name: metadata.name.unwrap_or_default().into(),
                namespace: namespace.map(Into::into),
                uid: metadata.uid.map(Into::into),
                // A Namespace is read for its labels, which are metadata: a generation (which
                // the API server does not give Namespaces, but a server might) does not move
                // when they change, so Namespaces are compared by resourceVersion.
                generation: metadata.generation.filter(|_| {
                    !(kind.resource.kind == "Namespace" && kind.resource.group.is_empty())
                }),
                resource_version: metadata.resource_version.map(Into::into),
            },
            text: text.into(),
        }
    }

    /// Whether `self` (just received) says nothing new about `kept` (in the store): the same
    /// object (uid) at the same `generation`, i.e. only its status or metadata changed. A kind
    /// without `generation` compares `resourceVersion`, so every change of it counts.
    pub fn same_spec(&self, kept: &Stored) -> bool {
        let (new, old) = (&self.metadata, &kept.metadata);
        if new.uid != old.uid {
            return false;
        }
        match (new.generation, old.generation) {
            (Some(a), Some(b)) => a == b,
            _ => new.resource_version == old.resource_version,
        }
    }

    /// The file name errors point at: `kubernetes:/NAMESPACE/Kind/NAME`, or for a
    /// cluster-scoped kind `kubernetes:/Kind/NAME`.
    pub fn path(&self, kind: &WatchedKind) -> String {
        let name = &self.metadata.name;
        match &self.metadata.namespace {
            Some(ns) => format!("kubernetes:/{ns}/{}/{name}", kind.resource.kind),
            None => format!("kubernetes:/{}/{name}", kind.resource.kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dynamic(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn kind(name: &str) -> WatchedKind {
        watched_kinds()
            .into_iter()
            .find(|k| k.resource.kind == name)
            .unwrap()
    }

    #[test]
    fn a_relabelled_namespace_is_a_change_even_at_the_same_generation() {
        let object = |kind: &str, api: &str, rv: &str, labels: Value| {
            dynamic(json!({
                "apiVersion": api, "kind": kind,
                "metadata": {"name": "team-a", "namespace": "team-a", "uid": "u1",
                             "generation": 1, "resourceVersion": rv, "labels": labels},
            }))
        };
        let ns = kind("Namespace");
        let old = Stored::of(&ns, object("Namespace", "v1", "5", json!({})));
        let new = Stored::of(
            &ns,
            object("Namespace", "v1", "6", json!({"shared": "yes"})),
        );
        assert!(!new.same_spec(&old));
        assert!(new.text.contains("shared"), "{}", new.text);
        // A route whose labels changed, at the same generation, says nothing new.
        let route = kind("HTTPRoute");
        let api = "gateway.networking.k8s.io/v1";
        let old = Stored::of(&route, object("HTTPRoute", api, "5", json!({})));
        let new = Stored::of(&route, object("HTTPRoute", api, "6", json!({"a": "b"})));
        assert!(new.same_spec(&old));
    }

    #[test]
    fn every_kind_the_model_reads_is_watched_and_nothing_else() {
        let mut model: Vec<(String, String, bool)> = tollgate_model::kinds()
            .map(|(k, v, n)| (k.to_owned(), v.to_owned(), n))
            .collect();
        let mut watched: Vec<(String, String, bool)> = watched_kinds()
            .into_iter()
            .map(|k| (k.resource.kind, k.resource.api_version, k.namespaced))
            .collect();
        model.sort();
        watched.sort();
        assert_eq!(model, watched);
        assert_eq!(kind("L4Policy").resource_name(), "l4policies.tollgate.dev");
        assert_eq!(
            kind("HTTPRoute").resource_name(),
            "httproutes.gateway.networking.k8s.io"
        );
    }

    #[test]
    fn the_text_keeps_what_the_model_reads_and_nothing_of_the_bookkeeping() {
        let route = dynamic(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {
                "name": "r", "namespace": "team-a", "uid": "u1", "generation": 3,
                "resourceVersion": "42", "labels": {"app": "x"},
                "creationTimestamp": "2025-01-02T03:04:05Z",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {"hostnames": ["a.example"]},
            "status": {"parents": []},
        }));
        let stored = Stored::of(&kind("HTTPRoute"), route);
        let text: Value = serde_json::from_str(&stored.text).unwrap();
        assert_eq!(
            text,
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {
                    "name": "r", "namespace": "team-a", "generation": 3,
                    "resourceVersion": "42", "labels": {"app": "x"},
                    "creationTimestamp": "2025-01-02T03:04:05Z",
                },
                "spec": {"hostnames": ["a.example"]},
            })
        );
        assert_eq!(
            stored.path(&kind("HTTPRoute")),
            "kubernetes:/team-a/HTTPRoute/r"
        );
        assert_eq!(
            stored.metadata,
            Identity {
                name: "r".into(),
                namespace: Some("team-a".into()),
                uid: Some("u1".into()),
                generation: Some(3),
                resource_version: Some("42".into()),
            }
        );
    }

    #[test]
    fn a_cluster_scoped_object_has_no_namespace_and_an_unknown_field_is_kept() {
        let policy = dynamic(json!({
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "L4Policy",
            "metadata": {"name": "edge", "namespace": "ignored", "generation": 1, "resourceVersion": "7"},
            "spec": {"rules": [], "futureField": true},
            "extra": 1,
        }));
        let stored = Stored::of(&kind("L4Policy"), policy);
        assert_eq!(stored.path(&kind("L4Policy")), "kubernetes:/L4Policy/edge");
        let text: Value = serde_json::from_str(&stored.text).unwrap();
        assert_eq!(text["spec"]["futureField"], true);
        assert_eq!(text["extra"], 1);
        assert!(text["metadata"].get("namespace").is_none());
    }

    #[test]
    fn only_a_new_generation_of_the_same_object_is_news() {
        let k = kind("Gateway");
        let at = |uid: &str, generation: Option<i64>, rv: &str| {
            let mut meta =
                json!({"name": "g", "namespace": "n", "uid": uid, "resourceVersion": rv});
            if let Some(g) = generation {
                meta["generation"] = g.into();
            }
            Stored::of(
                &k,
                dynamic(
                    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": meta}),
                ),
            )
        };
        assert!(at("a", Some(1), "10").same_spec(&at("a", Some(1), "9")));
        assert!(!at("a", Some(2), "10").same_spec(&at("a", Some(1), "9")));
        // Deleted and created again under the same name.
        assert!(!at("b", Some(1), "10").same_spec(&at("a", Some(1), "9")));
        assert!(!at("a", None, "10").same_spec(&at("a", None, "9")));
        assert!(at("a", None, "9").same_spec(&at("a", None, "9")));
    }

    #[test]
    fn the_model_reads_the_text_with_its_namespace_and_names_the_file_in_errors() {
        let route = Stored::of(
            &kind("HTTPRoute"),
            dynamic(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "r", "namespace": "team-a", "generation": 1, "resourceVersion": "5",
                             "creationTimestamp": "2025-01-02T03:04:05Z"},
                "spec": {"hostnames": ["a.example"]},
            })),
        );
        let policy = Stored::of(
            &kind("L4Policy"),
            dynamic(json!({
                "apiVersion": "tollgate.dev/v1alpha1", "kind": "L4Policy",
                "metadata": {"name": "edge", "generation": 2, "resourceVersion": "6"},
                "spec": {"defaultAction": "allow", "rules": []},
            })),
        );
        let file = |s: &Stored, k: &str| (s.path(&kind(k)), s.text.to_string());
        let files = [file(&route, "HTTPRoute"), file(&policy, "L4Policy")];
        let inline: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let objects = tollgate_model::parse(&tollgate_model::Documents::inline(&inline)).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].object, "HTTPRoute/team-a/r");
        assert_eq!(objects[0].value.namespace(), Some("team-a"));
        assert!(objects[0].value.creation_timestamp().is_some());
        assert_eq!(objects[1].object, "L4Policy/edge");
        assert_eq!(objects[1].value.namespace(), None);

        let newer = Stored::of(
            &kind("L4Policy"),
            dynamic(json!({
                "apiVersion": "tollgate.dev/v1alpha1", "kind": "L4Policy",
                "metadata": {"name": "newer", "generation": 1, "resourceVersion": "7"},
                "spec": {"rules": [], "futureField": 1},
            })),
        );
        let path = newer.path(&kind("L4Policy"));
        let errors =
            tollgate_model::parse(&tollgate_model::Documents::inline(&[(&path, &newer.text)]))
                .unwrap_err();
        let shown = errors.to_string();
        assert!(shown.contains("kubernetes:/L4Policy/newer"), "{shown}");
        assert!(shown.contains("futureField"), "{shown}");
    }
}
