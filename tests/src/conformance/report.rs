//! The `ConformanceReport` (the upstream shape, `conformance/apis/v1` of
//! kubernetes-sigs/gateway-api) built from a run's outcomes and the skip list.
use std::collections::BTreeSet;

use super::scenario::is_core;
use super::{
    profile, SkipList, CORE_FEATURES, GATEWAY_API_CHANNEL, GATEWAY_API_VERSION, GRPC_CORE_FEATURES,
};

/// The profiles reported, in order: HTTPRoute tests, GRPCRoute tests.
const PROFILES: [&str; 2] = ["GATEWAY-HTTP", "GATEWAY-GRPC"];

/// The outcome of one scenario.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario's name.
    pub name: String,
    /// Its features.
    pub features: Vec<String>,
    /// Empty when it passed.
    pub failures: Vec<String>,
    /// An experimental-channel test: not in the report.
    pub experimental: bool,
}

/// The implementation named in the report.
pub struct Implementation<'a> {
    /// Maintainer.
    pub organization: &'a str,
    /// Project name.
    pub project: &'a str,
    /// Where to read about it.
    pub url: &'a str,
    /// The version tested.
    pub version: &'a str,
    /// How to reach the maintainers.
    pub contact: &'a [&'a str],
}

#[derive(Default)]
struct Level {
    passed: Vec<String>,
    failed: Vec<String>,
    skipped: Vec<(String, String)>,
}

impl Level {
    fn result(&self) -> &'static str {
        if !self.failed.is_empty() {
            "failure"
        } else if !self.skipped.is_empty() {
            "partial"
        } else {
            "success"
        }
    }

    fn write(&self, out: &mut String, indent: &str) {
        out.push_str(&format!("{indent}result: {}\n", self.result()));
        out.push_str(&format!("{indent}statistics:\n"));
        out.push_str(&format!("{indent}  Failed: {}\n", self.failed.len()));
        out.push_str(&format!("{indent}  Passed: {}\n", self.passed.len()));
        out.push_str(&format!("{indent}  Skipped: {}\n", self.skipped.len()));
        if !self.skipped.is_empty() {
            // The upstream shape lists names only; the reasons ride along as comments.
            out.push_str(&format!("{indent}skippedTests:\n"));
            for (name, reason) in &self.skipped {
                out.push_str(&format!("{indent}  - {name}  # {reason}\n"));
            }
        }
        if !self.failed.is_empty() {
            out.push_str(&format!("{indent}failedTests:\n"));
            for name in &self.failed {
                out.push_str(&format!("{indent}  - {name}\n"));
            }
        }
    }
}

/// The report, in the upstream `ConformanceReport` shape (YAML), for one run: `outcomes` of the
/// scenarios run, `skips` for the rest. The first line is the date, so that two runs can be
/// compared without it.
pub fn report(
    implementation: &Implementation<'_>,
    date: &str,
    outcomes: &[Outcome],
    skips: &SkipList,
) -> String {
    let mut out = format!("date: \"{date}\"\n");
    out.push_str(
        "# Written by tests/tests/conformance.rs from the scenarios in tests/conformance/\n",
    );
    out.push_str(
        "# (`cargo xtask conformance` regenerates it; docs/conformance/README.md explains it).\n",
    );
    out.push_str("apiVersion: gateway.networking.k8s.io/v1\n");
    out.push_str("kind: ConformanceReport\n");
    out.push_str(&format!("gatewayAPIChannel: {GATEWAY_API_CHANNEL}\n"));
    out.push_str(&format!("gatewayAPIVersion: {GATEWAY_API_VERSION}\n"));
    out.push_str("implementation:\n  contact:\n");
    for c in implementation.contact {
        out.push_str(&format!("    - {c}\n"));
    }
    out.push_str(&format!(
        "  organization: {}\n  project: {}\n  url: {}\n  version: {}\n",
        implementation.organization,
        implementation.project,
        implementation.url,
        implementation.version
    ));
    out.push_str("mode: default\n");
    out.push_str("profiles:\n");
    for name in PROFILES {
        write_profile(&mut out, name, outcomes, skips);
    }
    out
}

/// The profile entry `name` (core and extended results, claimed and unclaimed features) of the
/// outcomes and skips whose features put them in it.
fn write_profile(out: &mut String, name: &str, outcomes: &[Outcome], skips: &SkipList) {
    let ours = |features: &[String]| profile(features).0 == name;
    let core_features: &[&str] = if name == "GATEWAY-GRPC" {
        &GRPC_CORE_FEATURES
    } else {
        &CORE_FEATURES
    };
    let (mut core, mut extended) = (Level::default(), Level::default());
    let mut supported = BTreeSet::new();
    for o in outcomes
        .iter()
        .filter(|o| !o.experimental && ours(&o.features))
    {
        let level = if is_core(&o.features) {
            &mut core
        } else {
            supported.extend(
                o.features
                    .iter()
                    .filter(|f| !core_features.contains(&f.as_str()))
                    .cloned(),
            );
            &mut extended
        };
        if o.failures.is_empty() {
            level.passed.push(o.name.clone());
        } else {
            level.failed.push(o.name.clone());
        }
    }
    // An unsupported feature belongs to the GRPC profile when it is a GRPCRoute one.
    let mut unsupported_here: Vec<(String, String)> = skips
        .unsupported_features
        .iter()
        .filter(|(f, _)| (name == "GATEWAY-GRPC") == f.starts_with("GRPCRoute"))
        .cloned()
        .collect();
    unsupported_here.sort();
    let unsupported: BTreeSet<String> = skips
        .unsupported_features
        .iter()
        .map(|(f, _)| f.clone())
        .collect();
    for s in skips.skipped.iter().filter(|s| ours(&s.features)) {
        // A test of an unsupported feature is not run and not counted, as upstream does.
        if s.features.iter().any(|f| unsupported.contains(f)) {
            continue;
        }
        let level = if is_core(&s.features) {
            &mut core
        } else {
            &mut extended
        };
        level.skipped.push((s.name.clone(), s.reason.clone()));
    }
    for level in [&mut core, &mut extended] {
        level.passed.sort();
        level.failed.sort();
        level.skipped.sort();
    }
    let summary = format!(
        "Core tests {}: {} passed, {} failed, {} skipped. Extended tests {}: {} passed, {} failed, {} skipped.",
        word(core.result()),
        core.passed.len(),
        core.failed.len(),
        core.skipped.len(),
        word(extended.result()),
        extended.passed.len(),
        extended.failed.len(),
        extended.skipped.len(),
    );
    out.push_str(&format!("  - name: {name}\n"));
    out.push_str(&format!("    summary: \"{summary}\"\n"));
    out.push_str("    core:\n");
    core.write(out, "      ");
    out.push_str("    extended:\n");
    extended.write(out, "      ");
    out.push_str("      supportedFeatures:\n");
    for f in &supported {
        out.push_str(&format!("        - {f}\n"));
    }
    if !unsupported_here.is_empty() {
        out.push_str("      unsupportedFeatures:\n");
        for (f, reason) in &unsupported_here {
            out.push_str(&format!("        - {f}  # {reason}\n"));
        }
    }
}

fn word(result: &str) -> &'static str {
    match result {
        "success" => "succeeded",
        "partial" => "partially succeeded",
        _ => "failed",
    }
}

/// The report without its date line, to compare two runs.
pub fn without_date(report: &str) -> String {
    report
        .lines()
        .filter(|l| !l.starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::conformance::Skipped;

    fn outcome(name: &str, features: &[&str], ok: bool) -> Outcome {
        Outcome {
            name: name.into(),
            features: features.iter().map(|f| f.to_string()).collect(),
            failures: if ok { vec![] } else { vec!["status".into()] },
            experimental: false,
        }
    }

    const IMPL: Implementation<'static> = Implementation {
        organization: "o",
        project: "p",
        url: "u",
        version: "0.1.0",
        contact: &["c"],
    };

    #[test]
    fn the_report_counts_core_and_extended_and_skips() {
        let outcomes = [
            outcome("A", &["Gateway", "HTTPRoute"], true),
            outcome("B", &["Gateway", "HTTPRoute", "ReferenceGrant"], false),
            outcome("C", &["Gateway", "HTTPRoute", "HTTPRouteCORS"], true),
            Outcome {
                experimental: true,
                ..outcome("X", &["Gateway", "HTTPRoute", "HTTPRouteRetry"], false)
            },
            outcome("G", &["Gateway", "GRPCRoute"], true),
            outcome(
                "N",
                &["Gateway", "GRPCRoute", "GRPCRouteNamedRouteRule"],
                true,
            ),
        ];
        let skips = SkipList {
            skipped: vec![
                Skipped {
                    name: "D".into(),
                    features: vec!["Gateway".into()],
                    reason: "status".into(),
                },
                Skipped {
                    name: "E".into(),
                    features: vec!["Gateway".into(), "GatewayStaticAddresses".into()],
                    reason: "not built".into(),
                },
            ],
            unsupported_features: vec![("GatewayStaticAddresses".into(), "no addresses".into())],
        };
        let r = report(&IMPL, "2026-12-04T00:00:00Z", &outcomes, &skips);
        assert!(r.starts_with("date: \"2026-12-04T00:00:00Z\"\n"), "{r}");
        assert!(r.contains("    core:\n      result: failure\n      statistics:\n        Failed: 1\n        Passed: 1\n        Skipped: 1\n"), "{r}");
        assert!(
            r.contains(
                "      skippedTests:\n        - D  # status\n      failedTests:\n        - B\n"
            ),
            "{r}"
        );
        assert!(r.contains("    extended:\n      result: success\n"), "{r}");
        assert!(
            r.contains("      supportedFeatures:\n        - HTTPRouteCORS\n"),
            "{r}"
        );
        assert!(
            r.contains("        - GatewayStaticAddresses  # no addresses\n"),
            "{r}"
        );
        // E needs an unsupported feature: neither run nor counted as skipped.
        assert!(!r.contains("- E"), "{r}");
        // X is an experimental-channel test: not in a standard-channel report.
        assert!(!r.contains("- X") && !r.contains("HTTPRouteRetry"), "{r}");
        let parsed: Value = serde_saphyr::from_str(&r).unwrap();
        assert_eq!(parsed["kind"], "ConformanceReport");
        assert_eq!(parsed["profiles"][0]["name"], "GATEWAY-HTTP");
        assert_eq!(parsed["profiles"][0]["core"]["statistics"]["Passed"], 1);
        // The GRPCRoute tests are a profile of their own, with GRPCRoute a core feature.
        let grpc = &parsed["profiles"][1];
        assert_eq!(grpc["name"], "GATEWAY-GRPC");
        assert_eq!(grpc["core"]["statistics"]["Passed"], 1);
        assert_eq!(grpc["core"]["statistics"]["Skipped"], 0);
        assert_eq!(grpc["extended"]["statistics"]["Passed"], 1);
        assert_eq!(
            grpc["extended"]["supportedFeatures"],
            serde_json::json!(["GRPCRouteNamedRouteRule"])
        );
        assert_eq!(parsed["profiles"][0]["extended"]["statistics"]["Passed"], 1);
        assert_eq!(
            without_date(&r),
            without_date(&r.replace("2026-12-04", "2027-01-01"))
        );
    }
}
