//! The scenario files of `tests/conformance/scenarios/`, the skip list, and the echo
//! backends a revision names.
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{profile, INFRA_NAMESPACE};

/// One scenario file.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Upstream's ShortName (also the file name).
    pub name: String,
    /// Upstream's feature list for the test.
    pub features: Vec<String>,
    /// The policy objects (YAML documents), applied with `base.yaml`.
    pub objects: String,
    /// The requests and their expectations; for a status scenario, the status checks
    /// (`status:` in the file).
    pub requests: Vec<Value>,
    /// Later revisions of the same scenario (`then`: objects and requests each), applied in
    /// turn after the first one's requests: a grant removed, say.
    pub then: Vec<(String, Vec<Value>)>,
    /// Where it came from (file name, for messages).
    pub file: String,
    /// It tests an experimental-channel feature: run, but left out of the (standard-channel)
    /// report.
    pub experimental: bool,
    /// A product bug this scenario is known to fail on (`knownFailure`): it runs, and is
    /// reported failed, but does not fail the run; once it passes, the run fails until the
    /// mark is removed.
    pub known_failure: Option<String>,
    /// `mode: status`: the objects go to a (fake) API server and the checks are of the status
    /// `tollgate controller` writes, not of requests to the proxy.
    pub status_mode: bool,
    /// A status scenario's `requests`, sent to the agent in Kubernetes mode once the first
    /// step's status checks hold (retried until they pass or 15 s have gone by: the agent
    /// applies the objects on its own time).
    pub status_requests: Vec<Value>,
}

impl Scenario {
    /// Core unless one of its features is not a core feature.
    pub fn is_core(&self) -> bool {
        is_core(&self.features)
    }
}

/// Whether every feature of a test is a core feature of its profile.
pub(crate) fn is_core(features: &[String]) -> bool {
    let (_, core) = profile(features);
    features.iter().all(|f| core.contains(&f.as_str()))
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    v.as_array()
        .ok_or_else(|| format!("{what} must be a list"))?
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{what}: {s} is not a string"))
        })
        .collect()
}

/// Reads one scenario file; every problem names the file and the field.
pub fn load_scenario(path: &Path) -> Result<Scenario, String> {
    let file = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    let doc: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let field = |name: &str| doc.get(name).ok_or_else(|| format!("{file}: no `{name}`"));
    let name = field("name")?
        .as_str()
        .ok_or_else(|| format!("{file}: `name` is not a string"))?
        .to_owned();
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != name {
        return Err(format!("{file}: `name` {name} is not the file's name"));
    }
    let features = strings(field("features")?, &format!("{file}: features"))?;
    let objects = field("objects")?
        .as_str()
        .ok_or_else(|| format!("{file}: `objects` is not a string"))?
        .to_owned();
    serde_saphyr::from_multiple::<Value>(&objects)
        .map_err(|e| format!("{file}: `objects` is not YAML: {e}"))?;
    let status_mode = match doc.get("mode").and_then(Value::as_str) {
        None => false,
        Some("status") => true,
        Some(other) => return Err(format!("{file}: mode {other:?} is not `status`")),
    };
    let checks = |d: &Value, at: &str| {
        if status_mode {
            status_checks_of(d, at)
        } else {
            requests_of(d, at)
        }
    };
    let requests = checks(&doc, &file)?;
    let status_requests = if status_mode && !doc["requests"].is_null() {
        requests_of(&doc, &file)?
    } else {
        Vec::new()
    };
    let mut then = Vec::new();
    for (i, step) in doc["then"].as_array().into_iter().flatten().enumerate() {
        let objects = step["objects"]
            .as_str()
            .ok_or_else(|| format!("{file}: then[{i}]: no `objects`"))?
            .to_owned();
        serde_saphyr::from_multiple::<Value>(&objects)
            .map_err(|e| format!("{file}: then[{i}].objects is not YAML: {e}"))?;
        then.push((objects, checks(step, &format!("{file}: then[{i}]"))?));
    }
    for key in doc
        .as_object()
        .map(|o| o.keys().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if ![
            "name",
            "features",
            "upstream",
            "description",
            "objects",
            "requests",
            "then",
            "channel",
            "knownFailure",
            "mode",
            "status",
        ]
        .contains(&key.as_str())
        {
            return Err(format!("{file}: unknown field `{key}`"));
        }
    }
    let experimental = match doc.get("channel").and_then(Value::as_str) {
        None | Some("standard") => false,
        Some("experimental") => true,
        Some(other) => {
            return Err(format!(
                "{file}: channel {other:?} is neither standard nor experimental"
            ))
        }
    };
    let known_failure = doc
        .get("knownFailure")
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{file}: `knownFailure` is not a string"))
        })
        .transpose()?;
    Ok(Scenario {
        name,
        features,
        objects,
        requests,
        then,
        file,
        experimental,
        known_failure,
        status_mode,
        status_requests,
    })
}

/// The `status` checks of a status scenario (or of one of its steps): each names an object
/// (`kind`, `name`, `namespace` unless cluster-scoped), for a route the Gateway whose entry of
/// `status.parents` is checked (`parent`), `conditions` (type: `True`, `False` or `Any`, or
/// `{status, reason}`), and for a Gateway `listeners`: every listener of its status, each
/// with `name` and what is checked of it (`supportedKinds`, `attachedRoutes`, `conditions`).
fn status_checks_of(doc: &Value, file: &str) -> Result<Vec<Value>, String> {
    let checks = doc["status"]
        .as_array()
        .ok_or_else(|| format!("{file}: `status` is not a list"))?
        .clone();
    if checks.is_empty() {
        return Err(format!("{file}: no status checks"));
    }
    for (i, c) in checks.iter().enumerate() {
        for key in c
            .as_object()
            .map(|o| o.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if ![
                "kind",
                "namespace",
                "name",
                "parent",
                "conditions",
                "listeners",
                "description",
            ]
            .contains(&key.as_str())
            {
                return Err(format!("{file}: status[{i}]: unknown field `{key}`"));
            }
        }
        if !c["kind"].is_string()
            || !c["name"].is_string()
            || !(c["conditions"].is_object() || c["listeners"].is_array())
        {
            return Err(format!(
                "{file}: status[{i}]: needs `kind`, `name` and `conditions` or `listeners`"
            ));
        }
        conditions_of(&c["conditions"], &format!("{file}: status[{i}]"))?;
        for (j, l) in c["listeners"].as_array().into_iter().flatten().enumerate() {
            let at = format!("{file}: status[{i}].listeners[{j}]");
            for key in l
                .as_object()
                .map(|o| o.keys().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if !["name", "supportedKinds", "attachedRoutes", "conditions"]
                    .contains(&key.as_str())
                {
                    return Err(format!("{at}: unknown field `{key}`"));
                }
            }
            if !l["name"].is_string() {
                return Err(format!("{at}: needs `name`"));
            }
            if !l["supportedKinds"].is_null() {
                strings(&l["supportedKinds"], &format!("{at}.supportedKinds"))?;
            }
            if !l["attachedRoutes"].is_null() && !l["attachedRoutes"].is_u64() {
                return Err(format!("{at}.attachedRoutes: not a count"));
            }
            conditions_of(&l["conditions"], &at)?;
        }
    }
    Ok(checks)
}

/// Checks the form of expected conditions (absent, or a map of type to `True` / `False` /
/// `Any`, or to `{status, reason}`).
fn conditions_of(v: &Value, at: &str) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    let map = v
        .as_object()
        .ok_or_else(|| format!("{at}.conditions: not a map"))?;
    for (type_, want) in map {
        let (status, reason) = match want {
            Value::String(s) => (Some(s.as_str()), None),
            Value::Object(o) => {
                if let Some(k) = o
                    .keys()
                    .find(|k| !["status", "reason"].contains(&k.as_str()))
                {
                    return Err(format!("{at}.conditions.{type_}: unknown field `{k}`"));
                }
                (o.get("status").and_then(Value::as_str), o.get("reason"))
            }
            _ => (None, None),
        };
        if !matches!(status, Some("True" | "False" | "Any")) {
            return Err(format!(
                "{at}.conditions.{type_}: the status must be True, False or Any"
            ));
        }
        if reason.is_some_and(|r| !r.is_string()) {
            return Err(format!("{at}.conditions.{type_}.reason: not a string"));
        }
    }
    Ok(())
}

fn requests_of(doc: &Value, file: &str) -> Result<Vec<Value>, String> {
    let requests = doc["requests"]
        .as_array()
        .ok_or_else(|| format!("{file}: `requests` is not a list"))?
        .clone();
    if requests.is_empty() {
        return Err(format!("{file}: no requests"));
    }
    for (i, r) in requests.iter().enumerate() {
        for key in r
            .as_object()
            .map(|o| o.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !["request", "expect", "description"].contains(&key.as_str()) {
                return Err(format!("{file}: requests[{i}]: unknown field `{key}`"));
            }
        }
        if !r["request"].is_object() {
            return Err(format!("{file}: requests[{i}]: no `request`"));
        }
    }
    Ok(requests)
}

/// Every scenario of `dir/scenarios`, by name.
pub fn load_scenarios(dir: &Path) -> Result<Vec<Scenario>, String> {
    let scenarios_dir = dir.join("scenarios");
    let mut paths: Vec<PathBuf> = fs::read_dir(&scenarios_dir)
        .map_err(|e| format!("{}: {e}", scenarios_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load_scenario(p)).collect()
}

/// A test of the profile not run, with why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// Upstream's ShortName.
    pub name: String,
    /// Its features.
    pub features: Vec<String>,
    /// Why it is not run.
    pub reason: String,
}

/// `skipped.yaml`: the profile's tests not run (`skipped`, in the report) and the extended
/// features not claimed (`unsupportedFeatures`).
#[derive(Debug, Clone, Default)]
pub struct SkipList {
    /// Tests of the GATEWAY-HTTP profile that are not run.
    pub skipped: Vec<Skipped>,
    /// Extended features of the profile that Tollgate does not claim, with why.
    pub unsupported_features: Vec<(String, String)>,
}

/// Reads `skipped.yaml`.
pub fn load_skip_list(path: &Path) -> Result<SkipList, String> {
    let file = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    let doc: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let mut list = SkipList::default();
    let entries = |key: &str| -> Result<Vec<Value>, String> {
        Ok(doc
            .get(key)
            .map(|v| {
                v.as_array()
                    .cloned()
                    .ok_or(format!("{file}: `{key}` is not a list"))
            })
            .transpose()?
            .unwrap_or_default())
    };
    for (i, e) in entries("skipped")?.iter().enumerate() {
        let text_of = |k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("{file}: skipped[{i}]: no `{k}`"))
        };
        list.skipped.push(Skipped {
            name: text_of("name")?,
            features: strings(
                e.get("features").unwrap_or(&Value::Null),
                &format!("{file}: skipped[{i}].features"),
            )?,
            reason: text_of("reason")?,
        });
    }
    for (i, e) in entries("unsupportedFeatures")?.iter().enumerate() {
        let name = e.get("name").and_then(Value::as_str);
        let reason = e.get("reason").and_then(Value::as_str);
        match (name, reason) {
            (Some(n), Some(r)) => list.unsupported_features.push((n.into(), r.into())),
            _ => {
                return Err(format!(
                    "{file}: unsupportedFeatures[{i}]: needs `name` and `reason`"
                ))
            }
        }
    }
    Ok(list)
}

/// A backend name as the echo backends answer it: `namespace/name`, the namespace
/// [`INFRA_NAMESPACE`] when the scenario leaves it out.
pub fn qualified(name: &str) -> String {
    if name.contains('/') {
        name.to_owned()
    } else {
        format!("{INFRA_NAMESPACE}/{name}")
    }
}

/// One echo backend that a revision names: a `Backend` object with one endpoint on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EchoBackend {
    /// `namespace/name`.
    pub name: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Spoken to in h2c (`appProtocol: kubernetes.io/h2c`).
    pub h2c: bool,
    /// A gRPC echo server (label `conformance.tollgate.dev/echo: grpc`), for GRPCRoutes.
    pub grpc: bool,
}

/// The Backends of `yaml` whose endpoints are on 127.0.0.1 (the echo backends to start).
pub fn echo_backends(yaml: &str) -> Result<Vec<EchoBackend>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for d in docs.iter().filter(|d| d["kind"] == "Backend") {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = format!("{ns}/{}", d["metadata"]["name"].as_str().unwrap_or(""));
        let h2c = d["spec"]["appProtocol"] == "kubernetes.io/h2c";
        let grpc = d["metadata"]["labels"]["conformance.tollgate.dev/echo"] == "grpc";
        for e in d["spec"]["endpoints"].as_array().into_iter().flatten() {
            if e["ip"]["address"] != "127.0.0.1" {
                continue;
            }
            let port = e["ip"]["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("Backend {name}: endpoint without a port"))?;
            out.push(EchoBackend {
                name: name.clone(),
                port,
                h2c,
                grpc,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::conformance::data_dir;

    #[test]
    fn the_committed_scenarios_and_skip_list_load() {
        let dir = data_dir();
        let scenarios = load_scenarios(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(scenarios.len() > 20, "{} scenarios", scenarios.len());
        let skips = load_skip_list(&dir.join("skipped.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let mut names = BTreeSet::new();
        for s in &scenarios {
            assert!(names.insert(s.name.clone()), "{} twice", s.name);
            let base = fs::read_to_string(dir.join("base.yaml")).unwrap();
            echo_backends(&format!("{base}---\n{}", s.objects))
                .unwrap_or_else(|e| panic!("{}: {e}", s.file));
        }
        for s in &skips.skipped {
            assert!(
                names.insert(s.name.clone()),
                "{} both run and skipped",
                s.name
            );
        }
    }
}
