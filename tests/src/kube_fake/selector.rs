//! Label selectors (equality- and set-based) and the field selectors every resource supports
//! (`metadata.name`, `metadata.namespace`), parsed and matched as the API server does.

use serde_json::Value;

use super::status::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the label is absent).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when the label is absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed `labelSelector`: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e,!f,g in (x,y),h notin (z)`; errors are 400 BadRequest as on the real server.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: found '{part}', expected: key, key=value, key!=value, key in (values), key notin (values), !key"
                ))
            })?);
        }
        Ok(LabelSelector { requirements })
    }

    /// True when the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::DoesNotExist(k) => label(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( )`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn parse_requirement(part: &str) -> Option<Requirement> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key).then(|| Requirement::DoesNotExist(key.to_string()));
    }
    for (op, notin) in [(" notin ", true), (" in ", false)] {
        if let Some(at) = part.find(op) {
            let key = part[..at].trim();
            let rest = part[at + op.len()..].trim();
            let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
            if !valid_key(key) || !values.iter().all(|v| valid_value(v)) {
                return None;
            }
            return Some(if notin {
                Requirement::NotIn(key.to_string(), values)
            } else {
                Requirement::In(key.to_string(), values)
            });
        }
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some(at) = part.find(op) {
            let key = part[..at].trim();
            let value = part[at + op.len()..].trim();
            if !valid_key(key) || !valid_value(value) {
                return None;
            }
            return Some(if negate {
                Requirement::NotEquals(key.to_string(), value.to_string())
            } else {
                Requirement::Equals(key.to_string(), value.to_string())
            });
        }
    }
    valid_key(part).then(|| Requirement::Exists(part.to_string()))
}

/// A parsed `fieldSelector` over `metadata.name` and `metadata.namespace` (the fields every
/// resource supports; the real server answers 400 for others, and so does this one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    /// (field, value, negated)
    terms: Vec<(Field, String, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Name,
    Namespace,
}

impl FieldSelector {
    /// Parses `metadata.name=x,metadata.namespace!=y`.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "field label not supported: {other}"
                    )))
                }
            };
            terms.push((field, value.trim().to_string(), negated));
        }
        Ok(FieldSelector { terms })
    }

    /// True when every term holds for the object.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, value, negated)| {
            let actual = match field {
                Field::Name => object.pointer("/metadata/name"),
                Field::Namespace => object.pointer("/metadata/namespace"),
            }
            .and_then(Value::as_str)
            .unwrap_or("");
            (actual == value) != *negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns1", "labels": labels}})
    }

    #[test]
    fn equality_and_set_requirements_all_must_hold() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "app",
            "!missing",
            "app in (db, web)",
            "tier notin (back)",
            "app=web,tier in (front)",
            "missing!=x",
            "missing notin (x)",
            "",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&o), "{s}");
        }
        let no = [
            "app=db",
            "app!=web",
            "missing",
            "!app",
            "app in (db)",
            "tier notin (front,back)",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&o), "{s}");
        }
    }

    #[test]
    fn malformed_label_selectors_are_bad_requests() {
        for s in ["app in (a", "a b", "app=we b", "=x"] {
            let err = LabelSelector::parse(s).unwrap_err();
            assert_eq!((err.code, err.reason), (400, "BadRequest"), "{s}");
        }
    }

    #[test]
    fn field_selectors_match_name_and_namespace_and_refuse_other_fields() {
        let o = obj(json!({}));
        assert!(FieldSelector::parse("metadata.name=a").unwrap().matches(&o));
        assert!(
            FieldSelector::parse("metadata.namespace==ns1,metadata.name!=b")
                .unwrap()
                .matches(&o)
        );
        assert!(!FieldSelector::parse("metadata.namespace=ns2")
            .unwrap()
            .matches(&o));
        let err = FieldSelector::parse("spec.nodeName=x").unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err
            .message
            .contains("field label not supported: spec.nodeName"));
    }
}
