//! `cargo xtask deps`: the pipeline's direction, checked from Cargo's own dependency data.
//!
//! Data flows source -> model -> compile -> apply (dataplane, proxy) -> report (the binary).
//! Each stage is a crate, so a back-edge is a dependency Cargo would have to build; this check
//! fails on one, and on a crate with I/O or native code reaching the pure stages (model and
//! compile must build and test on stable Rust without nightly, bpf-linker, OpenSSL or libgit2).
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, show};

/// The workspace crates each stage may depend on (normal, build and dev dependencies alike:
/// a test-only back-edge still makes the stage need what is behind it).
const ALLOWED: &[(&str, &[&str])] = &[
    ("gateway-common", &[]),
    ("tollgate-model", &[]),
    ("tollgate-compile", &["tollgate-model", "gateway-common"]),
    ("tollgate-source", &["tollgate-model"]),
    ("tollgate-kubernetes", &["tollgate-model"]),
    (
        "tollgate-dataplane",
        &[
            "tollgate-model",
            "tollgate-compile",
            "gateway-common",
            "gateway-ebpf",
            "tollgate-dataplane",
        ],
    ),
    ("tollgate-proxy", &["tollgate-model", "tollgate-compile"]),
    // `tollgate controller` reports what the agents make of the cluster: it runs their
    // compiler on objects read through the Kubernetes source's kinds and object text. A crate
    // of its own (beside the binary, not inside the source) because it needs compile, which
    // no source may depend on.
    (
        "tollgate-controller",
        &["tollgate-model", "tollgate-compile", "tollgate-kubernetes"],
    ),
];

/// The pure stages.
const PURE: &[&str] = &["tollgate-model", "tollgate-compile"];

/// Crates that do I/O, start runtimes, or build native code the pure stages must never need.
const NOT_IN_PURE: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "hyper",
    "hyper-util",
    "reqwest",
    "git2",
    "libgit2-sys",
    "openssl",
    "openssl-sys",
    "openssl-src",
    "libssh2-sys",
    "aya",
    "aya-obj",
    "aya-build",
    "walkdir",
    "tracing-subscriber",
    "kube-client",
];

/// Runs the check; the error lists every violation.
pub fn check() -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
    let metadata = json_of(cmd)?;
    let mut violations = direct_violations(&metadata)?;
    for krate in PURE {
        let mut tree = cargo();
        tree.args([
            "tree",
            "-p",
            krate,
            "-e",
            "normal,build,dev",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}"]);
        let line = show(&tree);
        let out = tree
            .output()
            .with_context(|| format!("cannot start `{line}`"))?;
        if !out.status.success() {
            bail!(
                "`{line}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let names: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        for bad in NOT_IN_PURE.iter().filter(|b| names.contains(**b)) {
            violations.push(format!(
                "{krate} (a pure stage) reaches `{bad}` (I/O or native code): see `cargo tree -p {krate} -i {bad}`"
            ));
        }
    }
    if violations.is_empty() {
        eprintln!("xtask deps: the pipeline's dependencies all point one way");
        Ok(())
    } else {
        bail!(
            "the pipeline's direction is broken:\n  {}",
            violations.join("\n  ")
        )
    }
}

fn json_of(mut cmd: Command) -> Result<Value> {
    let line = show(&cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("`{line}` gave no JSON"))
}

/// Every workspace dependency of a stage crate that [`ALLOWED`] does not list, and every
/// workspace crate missing from it (a new crate must say where it stands).
fn direct_violations(metadata: &Value) -> Result<Vec<String>> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?;
    let members: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let unchecked = ["gateway-user", "gateway-ebpf", "xtask", "tollgate-tests"];
    let mut violations = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap_or_default();
        let Some(ok) = allowed.get(name) else {
            if !unchecked.contains(&name) {
                violations.push(format!(
                    "{name}: a workspace crate the direction check does not know; add it to xtask/src/deps.rs ALLOWED"
                ));
            }
            continue;
        };
        for dep in p["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            if members.contains(dep_name) && !ok.contains(&dep_name) {
                let kind = dep["kind"].as_str().unwrap_or("normal");
                violations.push(format!(
                    "{name} depends on {dep_name} ({kind}): a back-edge (allowed: {})",
                    if ok.is_empty() {
                        "nothing of ours".to_owned()
                    } else {
                        ok.join(", ")
                    }
                ));
            }
        }
    }
    Ok(violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn package(name: &str, deps: &[(&str, &str)]) -> Value {
        json!({
            "name": name,
            "dependencies": deps.iter().map(|(d, k)| json!({"name": d, "kind": if *k == "normal" { Value::Null } else { json!(k) }})).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn a_back_edge_is_named_and_a_forward_edge_is_not() {
        let metadata = json!({"packages": [
            package("tollgate-model", &[("serde", "normal")]),
            package("tollgate-compile", &[("tollgate-model", "normal"), ("tollgate-proxy", "dev")]),
            package("tollgate-proxy", &[("tollgate-compile", "normal")]),
        ]});
        let v = direct_violations(&metadata).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].starts_with("tollgate-compile depends on tollgate-proxy (dev)"),
            "{v:?}"
        );
    }

    #[test]
    fn the_model_may_depend_on_nothing_of_ours() {
        let metadata = json!({"packages": [
            package("tollgate-model", &[("tollgate-source", "normal")]),
            package("tollgate-source", &[("tollgate-model", "normal")]),
        ]});
        let v = direct_violations(&metadata).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("nothing of ours"), "{v:?}");
    }

    #[test]
    fn an_unknown_workspace_crate_must_be_placed() {
        let metadata = json!({"packages": [package("tollgate-newstage", &[])]});
        let v = direct_violations(&metadata).unwrap();
        assert!(v[0].contains("does not know"), "{v:?}");
    }
}
