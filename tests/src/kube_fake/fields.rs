//! Field ownership (`metadata.managedFields`) and the simplified server-side apply merge.
//!
//! A field set is the set of leaf paths a manager owns: a leaf is any value that is not a
//! non-empty object (scalars, lists as a whole, empty maps). The real server tracks list items
//! by key (`k:{"type":"Ready"}`); here a list is one field and is replaced whole, which is the
//! simplification the fake documents. Owning a path owns the value there and everything under
//! it; owning an empty map owns the map, not what others later put in it. Sets are stored in the object itself as `fieldsV1`
//! (`{"f:spec":{"f:replicas":{}}}`), so the object stays the single source of truth.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

/// A field path, `["spec", "replicas"]`.
pub type FieldPath = Vec<String>;
/// The fields one manager owns.
pub type FieldSet = BTreeSet<FieldPath>;

/// Metadata the server owns: never in a manager's field set, never taken from a request.
pub const SYSTEM_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Which part of an object a request may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The object's main resource: everything but `.status` when the kind has a status
    /// subresource, everything when it does not.
    Main {
        /// The kind has a `/status` subresource (then `.status` belongs to it).
        status_subresource: bool,
    },
    /// The `/status` subresource: `.status` only.
    Status,
}

impl Scope {
    /// The `subresource` recorded in managedFields.
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Main { .. } => None,
            Scope::Status => Some("status"),
        }
    }

    /// True when the top-level key belongs to this scope.
    pub fn covers_top_level(self, key: &str) -> bool {
        match self {
            Scope::Main { status_subresource } => {
                !(key == "apiVersion" || key == "kind" || (status_subresource && key == "status"))
            }
            Scope::Status => key == "status",
        }
    }
}

/// The leaf paths of `object` that a manager can own within `scope`.
pub fn tracked_leaves(object: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (key, value) in map {
        if !scope.covers_top_level(key) {
            continue;
        }
        if key == "metadata" {
            if let Some(meta) = value.as_object() {
                for (mk, mv) in meta {
                    if !SYSTEM_METADATA.contains(&mk.as_str()) {
                        leaves(mv, &mut vec![key.clone(), mk.clone()], &mut out);
                    }
                }
            }
            continue;
        }
        leaves(value, &mut vec![key.clone()], &mut out);
    }
    out
}

fn leaves(value: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(k.clone());
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// Keeps only what `scope` may change, without server-owned metadata.
pub fn restrict(object: &Value, scope: Scope) -> Value {
    let mut out = Map::new();
    if let Some(map) = object.as_object() {
        for (key, value) in map {
            if !scope.covers_top_level(key) {
                continue;
            }
            if key == "metadata" {
                let mut meta = value.as_object().cloned().unwrap_or_default();
                meta.retain(|k, _| !SYSTEM_METADATA.contains(&k.as_str()));
                if !meta.is_empty() {
                    out.insert(key.clone(), Value::Object(meta));
                }
                continue;
            }
            out.insert(key.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// The value at `path`.
pub fn get_path<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, k| v.get(k))
}

/// Removes the value at `path` (no-op when absent).
pub fn remove_path(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cursor = object;
    for k in parents {
        match cursor.get_mut(k) {
            Some(next) => cursor = next,
            None => return,
        }
    }
    if let Some(map) = cursor.as_object_mut() {
        map.remove(last);
    }
}

/// The apply merge: objects merged key by key, anything else (lists included) replaced; a
/// `null` in the configuration removes the field.
pub fn merge(target: &mut Value, config: &Value) {
    match (target.as_object_mut(), config.as_object()) {
        (Some(t), Some(c)) => {
            for (k, v) in c {
                if v.is_null() {
                    t.remove(k);
                } else if let Some(existing) = t.get_mut(k) {
                    merge(existing, v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        _ => *target = config.clone(),
    }
}

/// `fieldsV1` for a set: `{"f:spec":{"f:replicas":{}}}`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cursor = &mut root;
        for key in path {
            let entry = cursor
                .entry(format!("f:{key}"))
                .or_insert_with(|| Value::Object(Map::new()));
            cursor = entry.as_object_mut().expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// The set a `fieldsV1` tree describes. Keys other than `f:` (`.`, `k:`, `v:`, `i:`, written
/// by a real server into objects a test may load) make their parent a leaf.
pub fn from_fields_v1(tree: &Value) -> FieldSet {
    fn walk(node: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        let children: Vec<(&String, &Value)> = node
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
            .unwrap_or_default();
        let only_fields = node
            .as_object()
            .is_some_and(|m| m.keys().all(|k| k.starts_with("f:")));
        if children.is_empty() || !only_fields {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            if !only_fields {
                return;
            }
        }
        for (k, v) in children {
            prefix.push(k[2..].to_string());
            walk(v, prefix, out);
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// The field manager (`tollgate-agent`).
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The apiVersion the manager wrote with.
    pub api_version: String,
    /// RFC 3339 time of the manager's last change to its set.
    pub time: String,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
    /// The fields it owns.
    pub fields: FieldSet,
}

impl ManagedEntry {
    /// True when this entry is the given manager's for that operation and subresource.
    pub fn is(&self, manager: &str, operation: &str, scope: Scope) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == scope.subresource()
    }
}

/// The entries of an object's `metadata.managedFields`.
pub fn read_managed(object: &Value) -> Vec<ManagedEntry> {
    let Some(list) = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            ManagedEntry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            }
        })
        .collect()
}

/// Writes `entries` (dropping empty ones) as the object's `metadata.managedFields`.
pub fn write_managed(object: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(sub) = &e.subresource {
                v["subresource"] = Value::String(sub.clone());
            }
            v
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Ownership after a non-apply write (create, update, patch) by `manager`: it takes the fields
/// it changed from everyone (updates never conflict), and removed fields leave every set.
pub fn record_update(
    entries: &mut Vec<ManagedEntry>,
    old: &Value,
    new: &Value,
    scope: Scope,
    manager: &str,
    api_version: &str,
    now: &str,
) {
    let new_leaves = tracked_leaves(new, scope);
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| get_path(old, p) != get_path(new, p))
        .cloned()
        .collect();
    let removed: FieldSet = tracked_leaves(old, scope)
        .into_iter()
        .filter(|p| get_path(new, p).is_none())
        .collect();
    for e in entries.iter_mut() {
        let before = e.fields.len();
        e.fields.retain(|p| {
            !changed.iter().any(|c| p.starts_with(c)) && !removed.iter().any(|r| p.starts_with(r))
        });
        if e.fields.len() != before {
            e.time = now.to_string();
        }
    }
    if changed.is_empty() {
        return;
    }
    match entries.iter_mut().find(|e| e.is(manager, "Update", scope)) {
        Some(mine) => {
            mine.fields.extend(changed);
            mine.api_version = api_version.to_string();
            mine.time = now.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: scope.subresource().map(str::to_string),
            fields: changed,
        }),
    }
}

/// Server-side apply of `config` (already restricted to `scope`) by `manager` onto `current`:
/// the merged object with its managedFields. Errors are the conflicts `(manager, ".a.b")` when `force` is false.
pub fn apply(
    current: &Value,
    config: &Value,
    scope: Scope,
    manager: &str,
    force: bool,
    api_version: &str,
    now: &str,
) -> Result<Value, Vec<(String, String)>> {
    let mut entries = read_managed(current);
    let applied = tracked_leaves(config, scope);
    let mine_at = entries.iter().position(|e| e.is(manager, "Apply", scope));

    // Conflicts: a field this apply changes, owned by another manager.
    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, FieldPath)> = Vec::new();
    for path in &applied {
        let (now, wanted) = (get_path(current, path), get_path(config, path));
        // An empty map merged into an existing map changes nothing.
        let empty_into_map = wanted.is_some_and(|w| w.as_object().is_some_and(|m| m.is_empty()))
            && now.is_some_and(Value::is_object);
        if now == wanted || empty_into_map {
            continue;
        }
        for (i, e) in entries.iter().enumerate() {
            if Some(i) == mine_at {
                continue;
            }
            for owned in e.fields.iter().filter(|o| o.starts_with(path)) {
                if get_path(current, owned).is_some() {
                    conflicts.push((e.manager.clone(), format!(".{}", path.join("."))));
                    taken.push((i, owned.clone()));
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort();
        conflicts.dedup();
        return Err(conflicts);
    }
    for (i, owned) in taken {
        entries[i].fields.remove(&owned);
        entries[i].time = now.to_string();
    }

    // Fields this manager applied before and no longer applies leave the object, unless
    // someone else owns them too.
    let mut object = current.clone();
    if let Some(i) = mine_at {
        let dropped: Vec<FieldPath> = entries[i]
            .fields
            .iter()
            .filter(|p| !applied.iter().any(|a| a.starts_with(p)))
            .cloned()
            .collect();
        for path in dropped {
            let shared = entries
                .iter()
                .enumerate()
                .any(|(j, e)| j != i && e.fields.iter().any(|o| o.starts_with(&path)));
            if !shared {
                remove_path(&mut object, &path);
            }
        }
    }
    merge(&mut object, config);

    match mine_at {
        Some(i) => {
            if entries[i].fields != applied {
                entries[i].fields = applied;
                entries[i].time = now.to_string();
            }
            entries[i].api_version = api_version.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: scope.subresource().map(str::to_string),
            fields: applied,
        }),
    }
    write_managed(&mut object, &entries);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main {
        status_subresource: true,
    };

    fn base() -> Value {
        json!({"apiVersion": "v1", "kind": "K", "metadata": {"name": "a", "uid": "u"}})
    }

    #[test]
    fn fields_v1_round_trips_and_real_server_keys_make_leaves() {
        let obj = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"a": 1, "l": [1], "e": {}}, "status": {"s": 1}});
        let set = tracked_leaves(&obj, MAIN);
        let expect: FieldSet = [
            vec!["metadata", "labels", "x"],
            vec!["spec", "a"],
            vec!["spec", "e"],
            vec!["spec", "l"],
        ]
        .into_iter()
        .map(|p| p.into_iter().map(String::from).collect())
        .collect();
        assert_eq!(set, expect);
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        let real = json!({"f:status": {".": {}, "f:conditions": {"k:{\"type\":\"Ready\"}": {}}}});
        let got = from_fields_v1(&real);
        assert_eq!(got, FieldSet::from([vec!["status".to_string()]]));
    }

    #[test]
    fn apply_conflicts_with_another_managers_field_unless_forced() {
        let mut cur = base();
        merge(&mut cur, &json!({"spec": {"replicas": 1}}));
        let first = apply(
            &cur,
            &json!({"spec": {"replicas": 1}}),
            MAIN,
            "a",
            false,
            "v1",
            "t0",
        )
        .unwrap();
        // The same value is shared, not a conflict.
        let shared = apply(
            &first,
            &json!({"spec": {"replicas": 1}}),
            MAIN,
            "b",
            false,
            "v1",
            "t1",
        )
        .unwrap();
        let err = apply(
            &shared,
            &json!({"spec": {"replicas": 2}}),
            MAIN,
            "b",
            false,
            "v1",
            "t2",
        )
        .err()
        .unwrap();
        assert_eq!(err, vec![("a".to_string(), ".spec.replicas".to_string())]);
        let forced = apply(
            &shared,
            &json!({"spec": {"replicas": 2}}),
            MAIN,
            "b",
            true,
            "v1",
            "t2",
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        let entries = read_managed(&forced);
        assert!(entries.iter().all(|e| e.manager == "b"), "{entries:?}");
    }

    #[test]
    fn fields_no_longer_applied_are_removed_unless_someone_else_owns_them() {
        let cur = base();
        let one = apply(
            &cur,
            &json!({"spec": {"a": 1, "b": 2}}),
            MAIN,
            "m",
            false,
            "v1",
            "t",
        )
        .unwrap();
        let two = apply(
            &one,
            &json!({"spec": {"a": 1}}),
            MAIN,
            "m",
            false,
            "v1",
            "t",
        )
        .unwrap();
        assert_eq!(two["spec"], json!({"a": 1}));
        let other = apply(
            &two,
            &json!({"spec": {"a": 1}}),
            MAIN,
            "o",
            false,
            "v1",
            "t",
        )
        .unwrap();
        let three = apply(&other, &json!({"spec": {}}), MAIN, "m", false, "v1", "t").unwrap();
        assert_eq!(three["spec"], json!({"a": 1}), "still owned by o");
        let four = apply(&three, &json!({"spec": {}}), MAIN, "o", false, "v1", "t").unwrap();
        assert_eq!(four["spec"], json!({}), "owned by nobody now");
    }

    #[test]
    fn updates_take_ownership_without_conflict() {
        let cur = base();
        let one = apply(
            &cur,
            &json!({"spec": {"a": 1}}),
            MAIN,
            "m",
            false,
            "v1",
            "t",
        )
        .unwrap();
        let mut new = one.clone();
        new["spec"]["a"] = json!(5);
        let mut entries = read_managed(&one);
        record_update(&mut entries, &one, &new, MAIN, "editor", "v1", "t2");
        assert!(entries
            .iter()
            .find(|e| e.manager == "m")
            .unwrap()
            .fields
            .is_empty());
        assert_eq!(
            entries
                .iter()
                .find(|e| e.manager == "editor")
                .unwrap()
                .fields,
            FieldSet::from([vec!["spec".to_string(), "a".to_string()]])
        );
    }
}
