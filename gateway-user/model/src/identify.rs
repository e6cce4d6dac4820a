//! One document into one object: parsed, then which kind and name it is (until then a problem
//! refuses the revision), then the checks of its shape and the typed value of its kind (after
//! which an L7 object's problem leaves only that object out). Apart from `lib.rs` because it
//! is the per-document half of [`parse`](crate::parse), and long.
use serde_json::Value;

use crate::document::{yaml_message, Document};
use crate::foreign_tag::{foreign_tag, ForeignTag};
use crate::parse_cache::DocFailure;
use crate::{
    known_kinds, left_out, names, KindInfo, LeftOut, Located, Object, PolicyError,
    DEFAULT_NAMESPACE, KINDS, TOP_LEVEL_FIELDS,
};

/// Reads one document into an object. Until the document names its kind and name, a problem
/// refuses the revision (its objects cannot be known); after that, an L7 object's problem
/// leaves that object out ([`left_out`]).
pub(crate) fn parse_value(
    file: &str,
    doc: &Document<'_>,
    options: serde_saphyr::Options,
) -> Result<Option<Located<Object>>, DocFailure> {
    let Some(id) = identify(file, doc, options)? else {
        return Ok(None);
    };
    typed_object(file, &id).map(Some).map_err(|e| {
        if !left_out::isolated_kind(id.info.kind) {
            return DocFailure::Revision(e);
        }
        let targets = if left_out::guards_routes(id.info.kind) {
            match left_out::raw_targets(&id.value) {
                Some(t) => t,
                None => {
                    return DocFailure::Revision(PolicyError {
                        message: format!(
                            "{} (the revision is refused: the targetRefs of this {} cannot be read, and the routes it guards must not be served without it)",
                            e.message, id.info.kind
                        ),
                        ..e
                    })
                }
            }
        } else {
            Vec::new()
        };
        DocFailure::Object(Box::new(LeftOut {
            kind: id.info.kind,
            namespace: id
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            name: id.name.clone(),
            file: file.to_owned(),
            object: id.object.clone(),
            problems: vec![e],
            targets,
            gateway_class: (id.info.kind == "Gateway")
                .then(|| left_out::raw_gateway_class(&id.value))
                .flatten(),
        }))
    })
}

/// A document that names a known kind and a name: what [`typed_object`] reads further.
struct Identified {
    info: &'static KindInfo,
    name: String,
    namespace: Option<String>,
    /// `Kind/name` or `Kind/namespace/name`.
    object: String,
    value: Value,
    tag: Option<ForeignTag>,
    first_line: usize,
}

/// Parses one document far enough to know which object it is: `Ok(None)` when it is empty.
fn identify(
    file: &str,
    doc: &Document<'_>,
    options: serde_saphyr::Options,
) -> Result<Option<Identified>, PolicyError> {
    let unnamed = format!("document {}", doc.number);
    let tag = foreign_tag(doc.text);
    let tag_error = |object: &str, tag: &ForeignTag| {
        let line = tag.line + doc.first_line - 1;
        PolicyError::new(
            file,
            object,
            &tag.field,
            format!(
                "the YAML tag {} (line {line}) is not allowed; policies use only the core schema \
                 (!!str, !!int, !!float, !!bool, !!null, !!seq, !!map): write the value itself",
                tag.tag
            ),
        )
    };
    let values: Vec<Value> =
        serde_saphyr::from_multiple_with_options(doc.text, options).map_err(|e| {
            // A tag the parser could not apply (`!!timestamp` on a string) is the better news.
            if let Some(tag) = &tag {
                return tag_error(&unnamed, tag);
            }
            let message = yaml_message(&e);
            match e.location() {
                Some(at) => {
                    let line = at.line() as usize + doc.first_line - 1;
                    PolicyError::new(
                        file,
                        &unnamed,
                        "",
                        format!(
                            "invalid YAML at line {line}, column {}: {message}",
                            at.column()
                        ),
                    )
                }
                None => PolicyError::new(file, &unnamed, "", format!("invalid YAML: {message}")),
            }
        })?;
    // The split leaves at most one document per piece; should the parser ever see more, the
    // first one is read and the rest reported rather than silently dropped.
    let mut values = values.into_iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(PolicyError::new(
            file,
            &unnamed,
            "",
            "more than one YAML document here; separate documents with a line `---`",
        ));
    }

    let Value::Object(map) = &value else {
        return Err(PolicyError::new(
            file,
            &unnamed,
            "",
            format!(
                "expected an object (apiVersion, kind, metadata, spec), found {}",
                type_name(&value)
            ),
        ));
    };
    let kind = match map.get("kind") {
        None => {
            return Err(PolicyError::new(
                file,
                &unnamed,
                "kind",
                format!("missing; expected one of {}", known_kinds()),
            ))
        }
        Some(Value::String(kind)) => kind.as_str(),
        Some(other) => {
            return Err(PolicyError::new(
                file,
                &unnamed,
                "kind",
                format!("expected a string, found {}", type_name(other)),
            ))
        }
    };
    let Some(info) = KINDS.iter().find(|k| k.kind == kind) else {
        return Err(PolicyError::new(
            file,
            &unnamed,
            "kind",
            format!("unknown kind \"{kind}\"; expected one of {}", known_kinds()),
        ));
    };
    let name = match map.get("metadata").and_then(|m| m.get("name")) {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        Some(Value::String(_)) | None => {
            return Err(PolicyError::new(
                file,
                &unnamed,
                "metadata.name",
                "missing; every object needs a name",
            ))
        }
        Some(other) => {
            return Err(PolicyError::new(
                file,
                &unnamed,
                "metadata.name",
                format!("expected a string, found {}", type_name(other)),
            ))
        }
    };
    let namespace = match map.get("metadata").and_then(|m| m.get("namespace")) {
        None | Some(Value::Null) => None,
        Some(Value::String(ns)) => Some(ns.clone()),
        Some(other) => {
            return Err(PolicyError::new(
                file,
                format!("{kind}/{name}"),
                "metadata.namespace",
                format!("expected a string, found {}", type_name(other)),
            ))
        }
    };
    let object = match &namespace {
        Some(ns) if info.namespaced => format!("{kind}/{ns}/{name}"),
        _ => format!("{kind}/{name}"),
    };
    Ok(Some(Identified {
        info,
        name,
        namespace,
        object,
        value,
        tag,
        first_line: doc.first_line,
    }))
}

/// Checks an identified document and reads it into its kind's type.
fn typed_object(file: &str, id: &Identified) -> Result<Located<Object>, PolicyError> {
    let Identified {
        info,
        name,
        namespace,
        object,
        value,
        tag,
        first_line,
    } = id;
    let (kind, map) = (
        info.kind,
        value.as_object().expect("identified as an object"),
    );
    let error = |field: &str, message: String| PolicyError::new(file, object, field, message);

    if let Some(tag) = tag {
        let line = tag.line + first_line - 1;
        return Err(error(
            &tag.field,
            format!(
                "the YAML tag {} (line {line}) is not allowed; policies use only the core schema \
                 (!!str, !!int, !!float, !!bool, !!null, !!seq, !!map): write the value itself",
                tag.tag
            ),
        ));
    }

    match map.get("apiVersion") {
        None => {
            return Err(error(
                "apiVersion",
                format!("missing; {kind} is \"{}\"", info.api_version),
            ))
        }
        Some(Value::String(v))
            if v == info.api_version || info.other_versions.contains(&v.as_str()) => {}
        Some(Value::String(v)) => {
            return Err(error(
                "apiVersion",
                format!(
                    "\"{v}\" is not a version of {kind}; expected \"{}\"",
                    info.api_version
                ),
            ))
        }
        Some(other) => {
            return Err(error(
                "apiVersion",
                format!("expected a string, found {}", type_name(other)),
            ))
        }
    }
    if let Err(message) = names::dns_subdomain(name) {
        return Err(error("metadata.name", format!("\"{name}\" {message}")));
    }
    // A namespace on a cluster-scoped kind (L4Policy) is ignored, as the API server does.
    if let Some(ns) = namespace.as_ref().filter(|_| info.namespaced) {
        if let Err(message) = names::dns_label(ns) {
            return Err(error("metadata.namespace", format!("\"{ns}\" {message}")));
        }
    }
    if let Some(unknown) = map.keys().find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str())) {
        return Err(error(unknown, format!("unknown field \"{unknown}\"; an object has only apiVersion, kind, metadata, spec (and status)")));
    }

    let typed = (info.read)(value.clone()).map_err(|e| {
        let field = match e.path().to_string() {
            root if root == "." => String::new(),
            path => path,
        };
        let mut message = e.inner().to_string();
        if message.starts_with("invalid type: integer") && message.ends_with("expected a string") {
            message.push_str(" (quote it, e.g. \"22\")");
        }
        error(&field, message)
    })?;
    Ok(Located {
        file: file.to_string(),
        object: object.clone(),
        value: typed,
    })
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
