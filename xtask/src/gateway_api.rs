//! The Gateway API field check in `cargo xtask test`: every field of a Gateway API kind that
//! Tollgate's model accepts must exist in the Gateway API, with the same JSON type, in the
//! standard channel.
//!
//! Why: in a cluster, the API server deletes the fields its CRD does not define, silently. A
//! field that Tollgate reads but the Gateway API does not have (a typo, a field that moved, one
//! of the experimental channel) works from Git and vanishes in Kubernetes, and the policy it
//! carried with it, without an error anywhere.
//!
//! How: the Gateway API's Go types are published on the npm registry as TypeScript types
//! (`@kubernetes-models/gateway-api`, pinned in `xtask/gateway-api-types/package-lock.json`,
//! installed by `cargo xtask setup` into the target directory). For each kind, the schema our
//! model derives (`openAPIV3Schema`) is walked down to every leaf, and each leaf becomes one
//! line of TypeScript that looks its path up in the Gateway API's type (a property the type does
//! not have is a compile error) and asserts the JSON type found there; each value the model's
//! schema enumerates gets a line asserting that the Gateway API's type takes it. The compiler's
//! errors name the line, so the field. The same lines are checked a second time against a copy
//! of the types without the properties the Gateway API marks `<gateway:experimental>`: what
//! fails only there is a field of the experimental channel.
//!
//! Not covered: values the model checks in code rather than in its schema (the Gateway API's
//! types enumerate some, many are plain strings) and the CRDs' validation rules.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use kube::CustomResourceExt;
use serde_json::{json, Value};

use crate::{probe, root, run, target_dir};

/// Where `npm ci` installs the types and the compiler.
fn npm_dir() -> PathBuf {
    target_dir().join("xtask-npm")
}

/// The committed package.json and lock file.
fn pinned_dir() -> PathBuf {
    root().join("xtask/gateway-api-types")
}

/// The package of the Gateway API's types, inside `npm_dir()`.
const TYPES: &str = "node_modules/@kubernetes-models/gateway-api";

/// Fields of the experimental channel that the model accepts on purpose, with the reason: each
/// is a field that a cluster with the standard channel's CRDs deletes (docs/kubernetes.md says
/// so to users).
const EXPERIMENTAL_ACCEPTED: &[(&str, &str, &str)] = &[
    (
        "HTTPRoute",
        "spec.rules[].retry.attempts",
        "HTTPRouteRetry (GEP-1731) is experimental in v1.6; Git users and clusters with the experimental CRDs use it",
    ),
    (
        "HTTPRoute",
        "spec.rules[].retry.backoff",
        "as spec.rules[].retry.attempts",
    ),
    (
        "HTTPRoute",
        "spec.rules[].retry.codes[]",
        "as spec.rules[].retry.attempts",
    ),
];

/// The kinds of the Gateway API in the model: the published type's module and interface, and
/// the schema our model derives.
fn kinds() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    fn schema<K: CustomResourceExt>() -> Value {
        let crd = serde_json::to_value(K::crd()).expect("a CRD serializes");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }
    vec![
        (
            "GatewayClass",
            "gateway.networking.k8s.io/v1/GatewayClass",
            "IGatewayClass",
            schema::<tollgate_model::gateway_class::GatewayClass>(),
        ),
        (
            "Gateway",
            "gateway.networking.k8s.io/v1/Gateway",
            "IGateway",
            schema::<tollgate_model::gateway::Gateway>(),
        ),
        (
            "HTTPRoute",
            "gateway.networking.k8s.io/v1/HTTPRoute",
            "IHTTPRoute",
            schema::<tollgate_model::route::HTTPRoute>(),
        ),
        (
            "GRPCRoute",
            "gateway.networking.k8s.io/v1/GRPCRoute",
            "IGRPCRoute",
            schema::<tollgate_model::grpc_route::GRPCRoute>(),
        ),
        (
            "ReferenceGrant",
            "gateway.networking.k8s.io/v1beta1/ReferenceGrant",
            "IReferenceGrant",
            schema::<tollgate_model::gateway_class::ReferenceGrant>(),
        ),
    ]
}

/// `cargo xtask setup`: `npm ci` of the pinned packages, unless the installed lock file is the
/// committed one already. npm comes from Debian's `npm` package when the machine has none.
pub fn ensure_npm_tools() -> Result<()> {
    let dir = npm_dir();
    let lock = std::fs::read(pinned_dir().join("package-lock.json"))
        .context("read xtask/gateway-api-types/package-lock.json")?;
    let installed = std::fs::read(dir.join("package-lock.json")).ok();
    if installed.as_deref() == Some(&lock[..]) && dir.join(TYPES).join("package.json").is_file() {
        eprintln!(
            "setup: Gateway API types for the field check ({}): present",
            dir.display()
        );
        return Ok(());
    }
    if probe("npm", &["--version"]).is_none() {
        crate::apt_install(&["npm"]).context("install Debian's npm")?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(pinned_dir().join(file), dir.join(file))
            .with_context(|| format!("copy {file} to {}", dir.display()))?;
    }
    eprintln!(
        "setup: Gateway API types for the field check: npm ci in {}",
        dir.display()
    );
    let mut ci = Command::new("npm");
    ci.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir);
    run(ci).context("npm ci (the npm registry)")
}

/// Checks the Gateway API objects of the examples and docs (written to `objects` by
/// `validate_crs.py`) against the Gateway API's own schemas: the validators the npm package
/// generates from them (types, required fields, enumerations, patterns, lengths, counts; not
/// the CRDs' CEL rules, which the compiler checks itself).
pub fn validate_objects(objects: &Path) -> Result<()> {
    let dir = npm_dir();
    if !dir.join(TYPES).join("package.json").is_file() {
        bail!(
            "{} is missing: run `cargo xtask setup`",
            dir.join(TYPES).display()
        );
    }
    // The script resolves the package from its own directory: it runs from npm's.
    std::fs::copy(pinned_dir().join("validate.mjs"), dir.join("validate.mjs"))
        .context("copy validate.mjs")?;
    let mut node = Command::new("node");
    node.arg("validate.mjs").arg(objects).current_dir(&dir);
    run(node)
        .context("the Gateway API objects of examples/ and docs/ against the Gateway API's schemas")
}

/// One step down a schema: a property, an array's item, or a map's value.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Item,
    Entry,
}

/// A leaf of the model's schema: where it is, the TypeScript type its JSON type is (`string`,
/// `number`, `boolean`, `object`, `string | number`), and the values the schema enumerates.
#[derive(Debug, PartialEq)]
struct Leaf {
    path: Vec<Step>,
    json: &'static str,
    values: Vec<String>,
}

/// Every leaf of `schema`.
fn leaves(schema: &Value, path: &mut Vec<Step>, out: &mut Vec<Leaf>) {
    let mut branched = false;
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            path.push(Step::Field(name.clone()));
            leaves(sub, path, out);
            path.pop();
        }
        branched = true;
    }
    if let Some(sub) = schema.get("additionalProperties").filter(|s| s.is_object()) {
        path.push(Step::Entry);
        leaves(sub, path, out);
        path.pop();
        branched = true;
    }
    if let Some(items) = schema.get("items") {
        path.push(Step::Item);
        leaves(items, path, out);
        path.pop();
        branched = true;
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if sub.get("properties").is_some() || sub.get("items").is_some() {
                leaves(sub, path, out);
                branched = true;
            }
        }
    }
    if branched {
        return;
    }
    let json = if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        "string | number"
    } else {
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => "string",
            Some("integer") | Some("number") => "number",
            Some("boolean") => "boolean",
            Some("array") => "unknown[]",
            _ => "object",
        }
    };
    let values = schema
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    out.push(Leaf {
        path: path.clone(),
        json,
        values,
    });
}

/// The TypeScript type at `path` inside `root`: `F` for a property (a compile error when the
/// type has no such property), `I` for an array's item, `V` for a map's value.
fn type_at(root: &str, path: &[Step]) -> String {
    path.iter()
        .fold(root.to_string(), |inner, step| match step {
            Step::Field(name) => format!("F<{inner}, {}>", Value::String(name.clone())),
            Step::Item => format!("I<{inner}>"),
            Step::Entry => format!("V<{inner}>"),
        })
}

fn shown(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Field(name) if s.is_empty() => s.push_str(name),
            Step::Field(name) => {
                s.push('.');
                s.push_str(name);
            }
            Step::Item => s.push_str("[]"),
            Step::Entry => s.push_str("{}"),
        }
    }
    s
}

/// A copy of the types' package without the properties marked `<gateway:experimental>`.
fn standard_copy(from: &Path, to: &Path) -> Result<usize> {
    let mut removed = 0;
    let _ = std::fs::remove_dir_all(to);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let src = from.join(&rel);
        std::fs::create_dir_all(to.join(&rel))?;
        for entry in std::fs::read_dir(&src).with_context(|| format!("read {}", src.display()))? {
            let entry = entry?;
            let name = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push(name);
                continue;
            }
            let text = std::fs::read_to_string(entry.path())?;
            let (kept, n) = if name.to_string_lossy().ends_with(".d.ts") {
                strip_experimental(&text)
            } else {
                (text, 0)
            };
            removed += n;
            std::fs::write(to.join(&name), kept)?;
        }
    }
    Ok(removed)
}

/// Removes from a declaration file every property whose doc comment carries the line
/// `<gateway:experimental>`, in the interface and in the class that repeats it.
fn strip_experimental(text: &str) -> (String, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut experimental: Vec<String> = Vec::new();
    let mut in_doc = false;
    let mut marked = false;
    for line in &lines {
        let t = line.trim();
        if t.starts_with("/**") {
            in_doc = true;
            marked = false;
        }
        if in_doc && t.trim_start_matches('*').trim() == "<gateway:experimental>" {
            marked = true;
        }
        if in_doc && t.ends_with("*/") {
            in_doc = false;
            continue;
        }
        if !in_doc && marked {
            if let Some(name) = property_name(t) {
                experimental.push(name.to_string());
            }
            marked = false;
        }
    }
    if experimental.is_empty() {
        return (text.to_string(), 0);
    }
    let kept: Vec<&str> = lines
        .into_iter()
        .filter(|line| {
            property_name(line.trim()).is_none_or(|n| !experimental.iter().any(|e| e == n))
        })
        .collect();
    (kept.join("\n") + "\n", experimental.len())
}

/// `"name"?: Type;` -> `name`.
fn property_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('"')?;
    let end = rest.find('"')?;
    let after = &rest[end + 1..];
    (after.starts_with("?:") || after.starts_with(':')).then(|| &rest[..end])
}

/// One probe: what it checks (shown in errors), and its TypeScript line.
struct Probe {
    what: String,
    line: String,
}

/// The probes of one leaf: the field exists and holds the leaf's JSON type, and each value the
/// model's schema enumerates is one the Gateway API's type takes.
fn probes_of(kind: usize, name: &str, leaf: &Leaf, out: &mut Vec<Probe>) {
    let at = type_at(&format!("K{kind}"), &leaf.path);
    let field = format!("{name} {}", shown(&leaf.path));
    out.push(Probe {
        what: field.clone(),
        line: format!(
            "export const p{}: Is<{at}, {}> = true;",
            out.len(),
            leaf.json
        ),
    });
    for value in &leaf.values {
        let literal = Value::String(value.clone());
        out.push(Probe {
            what: format!("{field} = {literal}"),
            line: format!(
                "export const p{}: Takes<{at}, {literal}> = true;",
                out.len()
            ),
        });
    }
}

/// One TypeScript file: each probe on its own line, against the types under `prefix`.
fn program(probes: &[Probe], modules: &[(&str, &str)], prefix: &str) -> (String, usize) {
    let mut ts = String::new();
    for (i, (module, iface)) in modules.iter().enumerate() {
        // The package's own paths resolve through its exports map; the relative path to the
        // standard copy needs the extension (nodenext resolution).
        let ext = if prefix.starts_with('.') { ".js" } else { "" };
        let _ = writeln!(
            ts,
            "import type {{ {iface} as K{i} }} from \"{prefix}{module}{ext}\";"
        );
    }
    ts.push_str(concat!(
        "type F<T, K extends keyof NonNullable<T>> = NonNullable<T>[K];\n",
        "type I<T> = NonNullable<T> extends (infer U)[] ? U : never;\n",
        "type V<T> = NonNullable<T> extends { [key: string]: infer U } ? U : never;\n",
        "type Is<T, J> = [NonNullable<T>] extends [never] ? false : [NonNullable<T>] extends [J] ? true : false;\n",
        "type Takes<T, L> = [L] extends [NonNullable<T>] ? true : false;\n",
    ));
    let first = ts.lines().count() + 1;
    for probe in probes {
        ts.push_str(&probe.line);
        ts.push('\n');
    }
    (ts, first)
}

/// Runs tsc over `file`; returns the first error of each line: line number (1-based), message.
fn tsc(dir: &Path, file: &str) -> Result<Vec<(usize, String)>> {
    let config = json!({
        "compilerOptions": {
            "strict": true, "noEmit": true, "skipLibCheck": true,
            "module": "nodenext", "moduleResolution": "nodenext", "target": "es2022"
        },
        "files": [file]
    });
    let name = format!("tsconfig-{file}.json");
    std::fs::write(dir.join(&name), config.to_string())?;
    let out = Command::new(dir.join("node_modules/.bin/tsc"))
        .args(["--pretty", "false", "-p", &name])
        .current_dir(dir)
        .output()
        .context("run tsc (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut errors: Vec<(usize, String)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(file).and_then(|r| r.strip_prefix('(')) else {
            continue;
        };
        let Some((pos, message)) = rest.split_once("): ") else {
            continue;
        };
        let Some(n) = pos.split(',').next().and_then(|l| l.parse().ok()) else {
            continue;
        };
        if errors.last().is_none_or(|(last, _)| *last != n) {
            errors.push((n, message.to_string()));
        }
    }
    if !out.status.success() && errors.is_empty() {
        bail!(
            "tsc failed without an error on a probe:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(errors)
}

pub fn check() -> Result<()> {
    let dir = npm_dir();
    if !dir.join(TYPES).join("package.json").is_file() {
        bail!(
            "{} is missing: run `cargo xtask setup`",
            dir.join(TYPES).display()
        );
    }
    let removed = standard_copy(&dir.join(TYPES), &dir.join("standard"))?;
    let kinds = kinds();
    let modules: Vec<(&str, &str)> = kinds.iter().map(|(_, m, i, _)| (*m, *i)).collect();
    let mut probes: Vec<Probe> = Vec::new();
    for (k, (kind, _, _, schema)) in kinds.iter().enumerate() {
        let mut found = Vec::new();
        let spec = &schema["properties"]["spec"];
        if spec.is_null() {
            bail!("{kind}: the model's schema has no spec");
        }
        leaves(spec, &mut vec![Step::Field("spec".into())], &mut found);
        for leaf in &found {
            probes_of(k, kind, leaf, &mut probes);
        }
    }
    let mut failures: Vec<String> = Vec::new();
    let mut experimental = Vec::new();
    for (file, prefix) in [
        ("all-channels.ts", "@kubernetes-models/gateway-api/"),
        ("standard.ts", "./standard/"),
    ] {
        let (ts, first) = program(&probes, &modules, prefix);
        std::fs::write(dir.join(file), &ts)?;
        for (line, message) in tsc(&dir, file)? {
            let Some(probe) = line.checked_sub(first).and_then(|i| probes.get(i)) else {
                bail!("{file}:{line}: an error outside the probes: {message}");
            };
            let what = &probe.what;
            if file == "all-channels.ts" {
                failures.push(format!("{what}: {message}"));
            } else if !failures.iter().any(|f| f.starts_with(&format!("{what}: "))) {
                experimental.push(what.clone());
            }
        }
    }
    experimental.retain(|field| {
        !EXPERIMENTAL_ACCEPTED
            .iter()
            .any(|(kind, path, _)| *field == format!("{kind} {path}"))
    });
    let fields = probes.iter().filter(|p| !p.what.contains(" = ")).count();
    eprintln!(
        "xtask: Gateway API field check: {fields} fields and {} enumerated values of {} kinds against @kubernetes-models/gateway-api ({removed} experimental properties removed for the standard channel); accepted from the experimental channel: {}",
        probes.len() - fields,
        kinds.len(),
        EXPERIMENTAL_ACCEPTED.len()
    );
    for f in &failures {
        eprintln!("xtask:   not in the Gateway API, or of another type: {f}");
    }
    for f in &experimental {
        eprintln!(
            "xtask:   experimental channel only (a standard-channel cluster deletes it): {f}"
        );
    }
    if failures.is_empty() && experimental.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} fields the Gateway API does not have as the model reads them, {} of the experimental channel only",
            failures.len(),
            experimental.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experimental_properties_are_removed_from_the_interface_and_the_class() {
        let text = "export interface IA {\n    /**\n     * Retry.\n     *\n     * <gateway:experimental>\n     */\n    \"retry\"?: IR;\n    /**\n     * <gateway:experimental:validation:Enum=A;B>\n     */\n    \"name\"?: string;\n}\nexport declare class A {\n    \"retry\"?: IR;\n    \"name\"?: string;\n}\n";
        let (kept, n) = strip_experimental(text);
        assert_eq!(n, 1);
        assert!(!kept.contains("\"retry\""), "{kept}");
        assert_eq!(kept.matches("\"name\"?: string;").count(), 2, "{kept}");
    }

    #[test]
    fn every_leaf_is_found_with_its_json_type_and_values() {
        let schema = json!({"type": "object", "properties": {
            "rules": {"type": "array", "items": {"type": "object", "properties": {
                "weight": {"type": "integer"},
                "kind": {"type": "string", "enum": ["Exact", "Prefix"]}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}}});
        let mut out = Vec::new();
        leaves(&schema, &mut vec![Step::Field("spec".into())], &mut out);
        let got: Vec<(String, &str, Vec<String>, String)> = out
            .iter()
            .map(|l| {
                (
                    shown(&l.path),
                    l.json,
                    l.values.clone(),
                    type_at("K0", &l.path),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "spec.labels{}".into(),
                    "string",
                    vec![],
                    r#"V<F<F<K0, "spec">, "labels">>"#.into()
                ),
                (
                    "spec.rules[].kind".into(),
                    "string",
                    vec!["Exact".into(), "Prefix".into()],
                    r#"F<I<F<F<K0, "spec">, "rules">>, "kind">"#.into()
                ),
                (
                    "spec.rules[].weight".into(),
                    "number",
                    vec![],
                    r#"F<I<F<F<K0, "spec">, "rules">>, "weight">"#.into()
                ),
            ]
        );
    }
}
