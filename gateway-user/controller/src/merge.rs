//! From a [`Plan`] and the status an object holds now to the status to write, or to nothing
//! when the two say the same: each condition keeps its `lastTransitionTime` unless its
//! `status` changes (metav1.Condition's rule), and the entries other controllers wrote in a
//! shared list are kept as they are.
use serde_json::{Map, Value};

use crate::desired::{Plan, MAX_ANCESTORS, MAX_PARENTS};
use crate::CONTROLLER_NAME;

/// What to write: the status fields (for [`Plan::Owned`]: the fields the controller owns; for
/// [`Plan::Shared`]: the whole list, others' entries included), `None` when nothing changed.
pub fn merge(plan: &Plan, current: Option<&Value>, now: &str) -> Option<Map<String, Value>> {
    let empty = Value::Object(Map::new());
    let current = current.filter(|c| c.is_object()).unwrap_or(&empty);
    match plan {
        Plan::Owned(fields) => {
            let mut out = Map::new();
            let mut changed = false;
            for (name, value) in fields {
                let mut value = value.clone();
                let old = &current[name.as_str()];
                match name.as_str() {
                    "conditions" => stamp(&mut value, old, now),
                    "listeners" => stamp_listeners(&mut value, old, now),
                    _ => {}
                }
                changed |= !same(&value, &owned_part(name, &value, old));
                out.insert(name.clone(), value);
            }
            changed.then_some(out)
        }
        // Written whenever planned: the plan exists only while the store shows fields of ours.
        Plan::Release => Some(Map::new()),
        Plan::Shared {
            list,
            ref_field,
            entries,
        } => {
            let old: Vec<Value> = current[*list].as_array().cloned().unwrap_or_default();
            let (ours, others): (Vec<&Value>, Vec<&Value>) = old
                .iter()
                .partition(|e| e["controllerName"] == CONTROLLER_NAME);
            let cap = if *list == "parents" {
                MAX_PARENTS
            } else {
                MAX_ANCESTORS
            };
            let room = cap.saturating_sub(others.len());
            let mut merged: Vec<Value> = others.into_iter().cloned().collect();
            for entry in entries.iter().take(room) {
                let mut entry = entry.clone();
                let previous = ours
                    .iter()
                    .find(|o| same(&o[*ref_field], &entry[*ref_field]))
                    .map(|o| &o["conditions"])
                    .unwrap_or(&Value::Null);
                stamp(&mut entry["conditions"], previous, now);
                merged.push(entry);
            }
            if same_set(&merged, &old) {
                return None;
            }
            let mut out = Map::new();
            out.insert((*list).to_owned(), Value::Array(merged));
            Some(out)
        }
    }
}

/// What of the stored field `name` this controller's apply would own: of `conditions` (a
/// list-map keyed by `type`, at the top or in a listener), the types it writes. Conditions of
/// other types, written by other field managers (a policy controller's, say), stay beside
/// ours under server-side apply and are no reason to write again.
fn owned_part(name: &str, ours: &Value, old: &Value) -> Value {
    fn conditions(ours: &Value, old: &Value) -> Value {
        match (ours.as_array(), old.as_array()) {
            (Some(ours), Some(old)) => Value::Array(
                old.iter()
                    .filter(|c| ours.iter().any(|o| o["type"] == c["type"]))
                    .cloned()
                    .collect(),
            ),
            _ => old.clone(),
        }
    }
    match name {
        "conditions" => conditions(ours, old),
        "listeners" => match (ours.as_array(), old.as_array()) {
            (Some(ours), Some(old)) => Value::Array(
                old.iter()
                    .map(|l| {
                        let mut l = l.clone();
                        if let Some(mine) = ours.iter().find(|o| o["name"] == l["name"]) {
                            l["conditions"] = conditions(&mine["conditions"], &l["conditions"]);
                        }
                        l
                    })
                    .collect(),
            ),
            _ => old.clone(),
        },
        _ => old.clone(),
    }
}

/// Sets each condition's `lastTransitionTime`: the old one when the same type had the same
/// status, else `now`.
fn stamp(conditions: &mut Value, old: &Value, now: &str) {
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    for c in list {
        let before = old
            .as_array()
            .and_then(|o| o.iter().find(|p| p["type"] == c["type"]));
        let time = match before {
            Some(p) if p["status"] == c["status"] && p["lastTransitionTime"].is_string() => {
                p["lastTransitionTime"].clone()
            }
            _ => Value::String(now.to_owned()),
        };
        c["lastTransitionTime"] = time;
    }
}

fn stamp_listeners(listeners: &mut Value, old: &Value, now: &str) {
    let Some(list) = listeners.as_array_mut() else {
        return;
    };
    for l in list {
        let before = old
            .as_array()
            .and_then(|o| o.iter().find(|p| p["name"] == l["name"]))
            .map(|p| p["conditions"].clone())
            .unwrap_or(Value::Null);
        stamp(&mut l["conditions"], &before, now);
    }
}

/// Semantic equality: numbers by value, and lists of objects in any order (conditions are a
/// map keyed by `type`, listeners by `name`: an API server that returns them in another order
/// than written must not cause a write every interval).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) if x.iter().chain(y).all(Value::is_object) => {
            fn sorted(v: &[Value]) -> Vec<&Value> {
                let mut v: Vec<&Value> = v.iter().collect();
                v.sort_by_cached_key(|e| serde_json::to_string(e).unwrap_or_default());
                v
            }
            x.len() == y.len() && sorted(x).iter().zip(sorted(y)).all(|(p, q)| same(p, q))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The same entries, in any order.
fn same_set(a: &[Value], b: &[Value]) -> bool {
    let key = |v: &Value| serde_json::to_string(v).unwrap_or_default();
    let mut x: Vec<String> = a.iter().map(key).collect();
    let mut y: Vec<String> = b.iter().map(key).collect();
    x.sort();
    y.sort();
    x == y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::condition;
    use serde_json::json;

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:10:00Z";

    fn shared(entries: Vec<Value>) -> Plan {
        Plan::Shared {
            list: "parents",
            ref_field: "parentRef",
            entries,
        }
    }

    fn entry(gw: &str, accepted: bool, generation: i64) -> Value {
        json!({
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "ns", "name": gw},
            "controllerName": CONTROLLER_NAME,
            "conditions": [condition("Accepted", accepted, if accepted {"Accepted"} else {"NoMatchingParent"}, "m", Some(generation))],
        })
    }

    #[test]
    fn other_controllers_entries_are_kept_and_ours_replaced() {
        let theirs = json!({"parentRef": {"name": "gw"}, "controllerName": "example.com/other",
                            "conditions": [{"type": "Accepted", "status": "True"}]});
        let current = json!({"parents": [theirs.clone()]});
        let out = merge(&shared(vec![entry("gw", true, 1)]), Some(&current), T0).unwrap();
        let parents = out["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0], theirs);
        assert_eq!(parents[1]["conditions"][0]["lastTransitionTime"], T0);
        assert_eq!(parents[1]["conditions"][0]["observedGeneration"], 1);
    }

    #[test]
    fn an_unchanged_status_is_not_written_and_keeps_its_transition_time() {
        let first = merge(&shared(vec![entry("gw", true, 1)]), None, T0).unwrap();
        let current = Value::Object(first);
        assert_eq!(
            merge(&shared(vec![entry("gw", true, 1)]), Some(&current), T1),
            None
        );
        // A new generation with the same status: written, the transition time kept.
        let next = merge(&shared(vec![entry("gw", true, 2)]), Some(&current), T1).unwrap();
        assert_eq!(
            next["parents"][0]["conditions"][0]["lastTransitionTime"],
            T0
        );
        assert_eq!(next["parents"][0]["conditions"][0]["observedGeneration"], 2);
        // A changed status: a new transition time.
        let flipped = merge(&shared(vec![entry("gw", false, 2)]), Some(&current), T1).unwrap();
        assert_eq!(
            flipped["parents"][0]["conditions"][0]["lastTransitionTime"],
            T1
        );
    }

    #[test]
    fn our_entry_for_a_parent_no_longer_named_is_removed() {
        let current = Value::Object(merge(&shared(vec![entry("old", true, 1)]), None, T0).unwrap());
        let out = merge(&shared(vec![entry("new", true, 2)]), Some(&current), T1).unwrap();
        let parents = out["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 1);
        assert_eq!(parents[0]["parentRef"]["name"], "new");
    }

    #[test]
    fn owned_fields_compare_listener_conditions_by_listener_name() {
        let mut fields = Map::new();
        fields.insert(
            "conditions".into(),
            json!([condition("Accepted", true, "Accepted", "ok", Some(1))]),
        );
        fields.insert(
            "listeners".into(),
            json!([{"name": "http", "attachedRoutes": 1, "supportedKinds": [],
                    "conditions": [condition("Programmed", true, "Programmed", "1/1 nodes programmed", Some(1))]}]),
        );
        let plan = Plan::Owned(fields);
        let mut current = Value::Object(merge(&plan, None, T0).unwrap());
        // Other fields of the status (addresses written by someone else) do not matter.
        current["addresses"] = json!([{"value": "10.0.0.1"}]);
        assert_eq!(merge(&plan, Some(&current), T1), None);
        // Nor do conditions of other types that other field managers keep beside ours
        // (server-side apply merges conditions by type): no write every interval for them.
        let mut foreign = current.clone();
        foreign["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "example.com/Scanned", "status": "True"}));
        foreign["listeners"][0]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "example.com/Audited", "status": "True"}));
        assert_eq!(merge(&plan, Some(&foreign), T1), None);
        // A condition of ours that changed is still written.
        foreign["conditions"][0]["status"] = json!("False");
        assert!(merge(&plan, Some(&foreign), T1).is_some());
        current["listeners"][0]["attachedRoutes"] = json!(2);
        let out = merge(&plan, Some(&current), T1).unwrap();
        assert_eq!(out["listeners"][0]["attachedRoutes"], 1);
        assert_eq!(
            out["listeners"][0]["conditions"][0]["lastTransitionTime"],
            T0
        );
    }

    #[test]
    fn our_entries_never_push_the_list_past_its_limit() {
        let others: Vec<Value> = (0..MAX_PARENTS - 1)
            .map(|i| json!({"parentRef": {"name": format!("g{i}")}, "controllerName": "example.com/other", "conditions": []}))
            .collect();
        let current = json!({"parents": others});
        let out = merge(
            &shared(vec![entry("a", true, 1), entry("b", true, 1)]),
            Some(&current),
            T0,
        )
        .unwrap();
        assert_eq!(out["parents"].as_array().unwrap().len(), MAX_PARENTS);
    }

    #[test]
    fn conditions_returned_in_another_order_are_the_same_status() {
        let mut fields = Map::new();
        fields.insert(
            "conditions".into(),
            json!([
                condition("Accepted", true, "Accepted", "ok", Some(1)),
                condition(
                    "Programmed",
                    true,
                    "Programmed",
                    "1/1 nodes programmed",
                    Some(1)
                )
            ]),
        );
        let plan = Plan::Owned(fields);
        let mut current = Value::Object(merge(&plan, None, T0).unwrap());
        current["conditions"].as_array_mut().unwrap().reverse();
        assert_eq!(merge(&plan, Some(&current), T1), None);
        // A real change in one of them still counts.
        current["conditions"][0]["message"] = json!("0/1 nodes programmed");
        assert!(merge(&plan, Some(&current), T1).is_some());
    }
}
