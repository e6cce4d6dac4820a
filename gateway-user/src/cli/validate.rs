//! `tollgate validate PATH`: read a directory (or one file) of policy, parse and validate it
//! exactly as the agent would, and print every problem. Exit codes: 0 valid (everything would
//! be served as written), 1 invalid policy (the agent would refuse the whole revision), 2 the
//! path could not be read (as `flux diff`: 2 is an error of the tool, not of the policy), 3 the
//! agent would apply the revision in part (L7 objects left out, rules dropped or answering
//! 500: docs/policy.md, "Failure isolation"), so that CI fails on anything left out.
use serde::Serialize;
use std::path::Path;
use tollgate_compile::l4::failsafe::Failsafe;
use tollgate_compile::l4::policy::Policy;
use tollgate_compile::l7::status::RouteStatus;
use tollgate_compile::l7::Acceptance;
use tollgate_compile::{PolicyError, PolicyErrors};
use tollgate_model::cluster::NodeLabels;
use tollgate_source::{dir::read_dir, SourceError};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One line per problem: `file: object: field: message` (warnings of a valid revision as
    /// `warning: file: object: field: message`, before the summary).
    #[default]
    Text,
    /// One JSON object: `{"valid", "errors": [{file, object, field, message}], "warnings": [...],
    /// "policies", "rules", ...}`.
    Json,
}

/// Why validation did not produce policies.
#[derive(Debug, thiserror::Error)]
pub enum ValidateFailure {
    /// The path could not be read (exit code 2).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The policy is invalid (exit code 1).
    #[error(transparent)]
    Invalid(#[from] PolicyErrors),
}

impl ValidateFailure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ValidateFailure::Invalid(_) => 1,
            ValidateFailure::Source(_) => 2,
        }
    }
}

/// What a valid revision holds.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The L4 policies.
    pub policies: Vec<Policy>,
    /// Gateway listeners.
    pub listeners: usize,
    /// HTTPRoutes.
    pub routes: usize,
    /// Backends.
    pub backends: usize,
    /// What the revision does that is almost never meant (it is valid all the same).
    pub warnings: Vec<PolicyError>,
    /// What of the L7 objects would not be served as written.
    pub acceptance: Acceptance,
    /// The failsafe endpoints in force (`--failsafe`).
    pub failsafe: Vec<Failsafe>,
    /// The L4Policies (names) the node given does not select (`--node-label`): valid, and not
    /// enforced there.
    pub not_for_this_node: Vec<String>,
    /// The labels of the node given, as text (`None`: no node given, every policy applies).
    pub node_labels: Option<String>,
}

/// Exit code of a revision the agent would apply in part.
pub const EXIT_PARTIAL: i32 = 3;

/// The process exit code for a validation result: 0 valid, 1 invalid, 2 unreadable, 3 valid
/// in part ([`EXIT_PARTIAL`]).
pub fn exit_code(result: &Result<Validated, ValidateFailure>) -> i32 {
    match result {
        Ok(v) if !v.acceptance.complete() => EXIT_PARTIAL,
        Ok(_) => 0,
        Err(e) => e.exit_code(),
    }
}

/// Reads, parses, validates and compiles the policy at `path` (a directory or a single file)
/// with the agent's compiler, for every combination of interfaces a node could have, so that
/// what passes here is what a node would apply.
pub fn validate_path(path: &Path) -> Result<Validated, ValidateFailure> {
    validate_path_for_node(path, &[])
}

/// As [`validate_path`], with lock-out protection for `failsafe` (as `tollgate run --failsafe`).
pub fn validate_path_for_node(
    path: &Path,
    failsafe: &[Failsafe],
) -> Result<Validated, ValidateFailure> {
    validate_path_for(path, failsafe, None)
}

/// As [`validate_path_for_node`], for `node` when its labels are known (`--node-label`): the
/// L4Policies whose nodeSelector does not select it are left out, as its agent leaves them
/// out, and listed.
pub fn validate_path_for(
    path: &Path,
    failsafe: &[Failsafe],
    node: Option<NodeLabels>,
) -> Result<Validated, ValidateFailure> {
    let mut docs = read_dir(path)?;
    // The agent refuses such a revision (it would remove every rule): so does validate.
    if docs.files.is_empty() {
        return Err(ValidateFailure::Invalid(PolicyErrors(vec![
            PolicyError::new(
                path.display().to_string(),
                "",
                "",
                "no policy files (*.yaml, *.yml) here: the agent refuses a revision that would \
             remove all policy",
            ),
        ])));
    }
    let labels = node.as_ref().map(super::node::labels_text);
    super::node::apply_node(&mut docs, node);
    let snapshot = tollgate_compile::snapshot::compile_documents_for_node(
        &mut Default::default(),
        &docs,
        None,
        failsafe,
    )?;
    Ok(Validated {
        failsafe: snapshot.l4.failsafe.clone(),
        listeners: snapshot.l7.policy.listeners.len(),
        routes: snapshot.l7.policy.routes.len(),
        backends: snapshot.l7.policy.backends.len(),
        policies: snapshot.policies,
        warnings: snapshot.warnings,
        acceptance: snapshot.acceptance,
        not_for_this_node: snapshot.not_for_this_node.into_iter().collect(),
        node_labels: labels,
    })
}

#[derive(Serialize)]
struct Report<'a> {
    valid: bool,
    /// Everything would be served as written (`valid` and nothing left out).
    complete: bool,
    errors: Vec<ErrorLine<'a>>,
    warnings: Vec<ErrorLine<'a>>,
    /// Objects that would be left out, one line per problem.
    left_out: Vec<ErrorLine<'a>>,
    /// Problems that leave part of an object out.
    partial: Vec<ErrorLine<'a>>,
    /// Routes not fully accepted, with their conditions.
    route_conditions: Vec<&'a RouteStatus>,
    /// The failsafe endpoints in force (only with `--failsafe`).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    failsafe: &'a [Failsafe],
    /// The L4Policies the node given does not select (only with `--node-label`/`--node-name`).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    not_for_this_node: &'a [String],
    policies: usize,
    rules: usize,
    listeners: usize,
    routes: usize,
    backends: usize,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    file: &'a str,
    object: &'a str,
    field: &'a str,
    message: String,
}

impl<'a> From<&'a PolicyError> for ErrorLine<'a> {
    fn from(e: &'a PolicyError) -> Self {
        ErrorLine {
            file: &e.location.file,
            object: &e.location.object,
            field: &e.location.field,
            message: e.message.clone(),
        }
    }
}

/// The output of `tollgate validate` for `result`, ending with a newline.
pub fn render(result: &Result<Validated, ValidateFailure>, format: Format) -> String {
    let (policies, rules) = match result {
        Ok(v) => (
            v.policies.len(),
            v.policies.iter().map(|p| p.rules.len()).sum(),
        ),
        Err(_) => (0, 0),
    };
    let (listeners, routes, backends) = match result {
        Ok(v) => (v.listeners, v.routes, v.backends),
        Err(_) => (0, 0, 0),
    };
    let warnings: &[PolicyError] = match result {
        Ok(v) => &v.warnings,
        Err(_) => &[],
    };
    let failsafe: &[Failsafe] = match result {
        Ok(v) => &v.failsafe,
        Err(_) => &[],
    };
    let (not_for_this_node, node_labels): (&[String], &str) = match result {
        Ok(v) => (&v.not_for_this_node, v.node_labels.as_deref().unwrap_or("")),
        Err(_) => (&[], ""),
    };
    let empty = Acceptance::default();
    let acceptance = match result {
        Ok(v) => &v.acceptance,
        Err(_) => &empty,
    };
    let left_out: Vec<&PolicyError> = acceptance
        .left_out
        .iter()
        .flat_map(|o| &o.problems)
        .collect();
    match format {
        Format::Text => match result {
            Ok(_) => {
                let mut out: String = warnings.iter().map(|w| format!("warning: {w}\n")).collect();
                for e in &left_out {
                    out.push_str(&format!("left out: {e}\n"));
                }
                for e in &acceptance.partial {
                    out.push_str(&format!("partial: {e}\n"));
                }
                for f in failsafe {
                    out.push_str(&format!(
                        "failsafe: {f}: its TCP replies pass whatever the policy says\n"
                    ));
                }
                for name in not_for_this_node {
                    out.push_str(&format!(
                        "not for this node: L4Policy/{name}: its spec.nodeSelector does not select the node's labels ({node_labels}); not enforced there\n"
                    ));
                }
                let verdict = if acceptance.complete() {
                    "valid".to_owned()
                } else {
                    format!(
                        "valid in part ({} object(s) left out, {} partial problem(s); the rest would be served)",
                        acceptance.left_out.len(),
                        acceptance.partial.len()
                    )
                };
                if listeners + routes + backends == 0 {
                    out.push_str(&format!("{verdict}: {policies} policies, {rules} rules\n"));
                } else {
                    out.push_str(&format!(
                        "{verdict}: {policies} policies, {rules} rules; {listeners} listeners, {routes} routes, {backends} backends\n"
                    ));
                }
                out
            }
            Err(ValidateFailure::Invalid(PolicyErrors(errors))) => {
                errors.iter().map(|e| format!("{e}\n")).collect()
            }
            Err(ValidateFailure::Source(e)) => format!("error: {e}\n"),
        },
        Format::Json => {
            let errors = match result {
                Ok(_) => Vec::new(),
                Err(ValidateFailure::Invalid(PolicyErrors(errors))) => {
                    errors.iter().map(ErrorLine::from).collect()
                }
                Err(ValidateFailure::Source(e)) => {
                    vec![ErrorLine {
                        file: "",
                        object: "",
                        field: "",
                        message: e.to_string(),
                    }]
                }
            };
            let report = Report {
                valid: result.is_ok(),
                complete: result.is_ok() && acceptance.complete(),
                errors,
                warnings: warnings.iter().map(ErrorLine::from).collect(),
                left_out: left_out.iter().map(|e| ErrorLine::from(*e)).collect(),
                partial: acceptance.partial.iter().map(ErrorLine::from).collect(),
                route_conditions: acceptance.routes.iter().filter(|r| !r.clean()).collect(),
                failsafe,
                not_for_this_node,
                policies,
                rules,
                listeners,
                routes,
                backends,
            };
            let mut out =
                serde_json::to_string_pretty(&report).expect("a report serializes to JSON");
            out.push('\n');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const GOOD: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge }\nspec:\n  rules:\n    - { name: ssh, action: allow, protocol: TCP, ports: [\"22\"] }\n    - { name: scanners, action: deny, from: [203.0.113.0/24] }\n";

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, content) in files {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        dir
    }

    #[test]
    fn a_valid_directory_reports_its_policies_and_rules() {
        let dir = tree(&[("a/edge.yaml", GOOD)]);
        let result = validate_path(dir.path());
        assert_eq!(exit_code(&result), 0);
        assert_eq!(
            render(&result, Format::Text),
            "valid: 1 policies, 2 rules\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&result, Format::Json)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "valid": true, "complete": true, "errors": [], "warnings": [], "left_out": [], "partial": [], "route_conditions": [], "policies": 1, "rules": 2, "listeners": 0, "routes": 0, "backends": 0 })
        );
    }

    #[test]
    fn failsafe_endpoints_in_force_are_listed_and_a_second_port_is_warned_about() {
        let dir = tree(&[("edge.yaml", GOOD)]);
        let endpoints: Vec<Failsafe> = ["203.0.113.7:6443", "203.0.113.7:443"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let result = validate_path_for_node(dir.path(), &endpoints);
        assert_eq!(exit_code(&result), 0);
        let text = render(&result, Format::Text);
        assert!(
            text.contains(
                "failsafe: tcp 203.0.113.7:6443 (--failsafe): its TCP replies pass whatever the policy says\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("warning: ") && text.contains("203.0.113.7:443"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&result, Format::Json)).unwrap();
        assert_eq!(
            json["failsafe"],
            serde_json::json!([{ "addr": "203.0.113.7", "port": 6443, "origin": "--failsafe" }])
        );
    }

    #[test]
    fn policies_the_node_does_not_select_are_listed_when_its_labels_are_known() {
        let gpu = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: gpu }\nspec:\n  nodeSelector: { matchLabels: { gpu: \"yes\" } }\n  rules:\n    - { name: ssh, action: allow, protocol: TCP, ports: [\"22\"] }\n";
        let dir = tree(&[("edge.yaml", GOOD), ("gpu.yaml", gpu)]);
        // The node unknown: every policy applies, none is listed.
        let result = validate_path(dir.path());
        assert_eq!(
            render(&result, Format::Text),
            "valid: 2 policies, 3 rules\n"
        );
        let node = |labels: &[(&str, &str)]| NodeLabels {
            name: "node-7".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let result = validate_path_for(dir.path(), &[], Some(node(&[("zone", "b")])));
        assert_eq!(exit_code(&result), 0);
        assert_eq!(
            render(&result, Format::Text),
            "not for this node: L4Policy/gpu: its spec.nodeSelector does not select the node's labels (zone=b); not enforced there\nvalid: 1 policies, 2 rules\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&result, Format::Json)).unwrap();
        assert_eq!(json["not_for_this_node"], serde_json::json!(["gpu"]));
        // A node it selects enforces it.
        let result = validate_path_for(dir.path(), &[], Some(node(&[("gpu", "yes")])));
        assert_eq!(
            render(&result, Format::Text),
            "valid: 2 policies, 3 rules\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&result, Format::Json)).unwrap();
        assert!(json.get("not_for_this_node").is_none(), "{json}");
    }

    #[test]
    fn l7_objects_are_counted_when_there_are_any() {
        let l7 = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: edge }\nspec:\n  gatewayClassName: tollgate\n  listeners: [{ name: http, port: 8000, protocol: HTTP }]\n---\napiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: { name: app }\nspec: { endpoints: [{ ip: { address: 127.0.0.1, port: 9000 } }] }\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: app }\nspec:\n  parentRefs: [{ name: edge }]\n  rules: [{ backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }] }]\n";
        let dir = tree(&[("edge.yaml", GOOD), ("l7.yaml", l7)]);
        let result = validate_path(dir.path());
        assert_eq!(
            render(&result, Format::Text),
            "valid: 1 policies, 2 rules; 1 listeners, 1 routes, 1 backends\n"
        );
    }

    #[test]
    fn what_the_agent_refuses_as_no_policy_is_invalid_here_too() {
        // No policy file at all, and a policy file emptied (a truncated write).
        let none = tree(&[("README.md", "# policy\n")]);
        let emptied = tree(&[("edge.yaml", ""), ("other.yaml", GOOD)]);
        for (dir, says) in [
            (&none, "no policy files"),
            (&emptied, "edge.yaml: (the file): holds no YAML document"),
        ] {
            let result = validate_path(dir.path());
            assert_eq!(exit_code(&result), 1);
            let text = render(&result, Format::Text);
            assert!(text.contains(says), "{text}");
        }
    }

    #[test]
    fn invalid_policy_prints_one_line_per_problem_and_exits_1() {
        let bad = GOOD
            .replace("\"22\"", "\"0\"")
            .replace("203.0.113.0/24", "203.0.113.1/24");
        let dir = tree(&[("edge.yaml", &bad), ("sub/other.yaml", "kind: Nope\n")]);
        let result = validate_path(dir.path());
        assert_eq!(exit_code(&result), 1);
        let text = render(&result, Format::Text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}"); // parse errors stop before validation
        assert!(
            lines[0].starts_with("sub/other.yaml: document 1: kind: unknown kind \"Nope\""),
            "{text}"
        );

        let dir = tree(&[("edge.yaml", &bad)]);
        let result = validate_path(dir.path());
        let text = render(&result, Format::Text);
        assert_eq!(
            text,
            "edge.yaml: L4Policy/edge: spec.rules[0].ports[0]: port 0 in \"0\" is out of range 1-65535\n\
             edge.yaml: L4Policy/edge: spec.rules[1].from[0]: \"203.0.113.1/24\" has host bits set; did you mean 203.0.113.0/24?\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&result, Format::Json)).unwrap();
        assert_eq!(json["valid"], false);
        assert_eq!(json["errors"].as_array().unwrap().len(), 2);
        assert_eq!(
            json["errors"][0],
            serde_json::json!({ "file": "edge.yaml", "object": "L4Policy/edge", "field": "spec.rules[0].ports[0]", "message": "port 0 in \"0\" is out of range 1-65535" })
        );
    }

    #[test]
    fn warnings_are_printed_and_the_revision_stays_valid() {
        let deny = GOOD.replace("spec:\n", "spec:\n  defaultAction: deny\n");
        let dir = tree(&[("edge.yaml", &deny)]);
        let result = validate_path(dir.path());
        assert_eq!(exit_code(&result), 0);
        let text = render(&result, Format::Text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with(
                "warning: edge.yaml: L4Policy/edge: spec.defaultAction: deny drops ICMPv6 neighbour discovery"
            ),
            "{text}"
        );
        assert_eq!(lines[1], "valid: 1 policies, 2 rules");
        let json: serde_json::Value = serde_json::from_str(&render(&result, Format::Json)).unwrap();
        assert_eq!(json["valid"], true);
        assert_eq!(json["warnings"][0]["field"], "spec.defaultAction", "{json}");
    }

    #[test]
    fn an_unreadable_path_exits_2() {
        let dir = tree(&[]);
        let result = validate_path(&dir.path().join("missing"));
        assert_eq!(exit_code(&result), 2);
        assert!(
            render(&result, Format::Text).starts_with("error: ")
                && render(&result, Format::Text).contains("missing")
        );
        let json: serde_json::Value = serde_json::from_str(&render(&result, Format::Json)).unwrap();
        assert_eq!(json["valid"], false);
        assert!(
            json["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("does not exist"),
            "{json}"
        );
    }

    #[test]
    fn a_single_file_can_be_validated() {
        let dir = tree(&[("edge.yaml", GOOD)]);
        assert_eq!(
            validate_path(&dir.path().join("edge.yaml"))
                .unwrap()
                .policies[0]
                .name,
            "edge"
        );
    }

    #[test]
    fn a_revision_applied_in_part_lists_what_is_left_out_and_exits_3() {
        let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: edge }\nspec:\n  gatewayClassName: tollgate\n  listeners: [{ name: http, port: 8000, protocol: HTTP }]\n---\napiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: { name: app }\nspec: { endpoints: [{ ip: { address: 127.0.0.1, port: 9000 } }] }\n";
        let good = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: good }\nspec:\n  parentRefs: [{ name: edge }]\n  rules: [{ backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }] }]\n";
        let bad = good.replace("name: good", "name: bad").replace(
            "rules: [{",
            "rules: [{ matches: [{ path: { value: '/my[/]path01' } }],",
        );
        let dir = tree(&[
            ("gw.yaml", gateway),
            ("good.yaml", good),
            ("bad.yaml", &bad),
        ]);
        let result = validate_path(dir.path());
        assert_eq!(exit_code(&result), EXIT_PARTIAL);
        let text = render(&result, Format::Text);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(
                "left out: bad.yaml: HTTPRoute/bad: spec.rules[0].matches[0].path.value: \"/my[/]path01\""
            ),
            "{text}"
        );
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("valid in part (1 object(s) left out, 0 partial problem(s)"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&result, Format::Json)).unwrap();
        assert_eq!(
            (json["valid"].clone(), json["complete"].clone()),
            (true.into(), false.into())
        );
        assert_eq!(json["left_out"][0]["object"], "HTTPRoute/bad", "{json}");
        assert_eq!(json["routes"], 1, "{json}");
        assert_eq!(
            json["route_conditions"][0]["parents"][0]["conditions"][0]["reason"],
            "UnsupportedValue",
            "{json}"
        );
        // Without the broken route: 0.
        let dir = tree(&[("gw.yaml", gateway), ("good.yaml", good)]);
        assert_eq!(exit_code(&validate_path(dir.path())), 0);
    }
}
