//! The manifests' checks in `cargo xtask test`: every kustomization under `manifests/install`
//! (the base and each overlay) rendered by `kubectl kustomize` and validated by
//! `kubernetes-validate --strict` against the schemas of the oldest Kubernetes supported, and
//! every example custom resource (`examples/`, the docs' YAML blocks) validated against our
//! CRDs' `openAPIV3Schema` (`xtask/validate_crs.py`, with the `jsonschema` package), and the
//! Gateway API objects among them against the Gateway API's own schemas
//! (`xtask/gateway-api-types/validate.mjs`, see `gateway_api.rs`).
//!
//! The Python tools live in a venv under the target directory, made by `cargo xtask setup`
//! from Debian's python3 (so that nothing is installed into the system's Python).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{command, probe, root, run, show, target_dir, WithArg};

/// kubernetes-validate, pinned: its schemas decide what passes.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// The oldest Kubernetes the install supports (k8s-openapi's feature in Cargo.toml): the
/// manifests must be valid there.
const KUBERNETES_VERSION: &str = "1.33.0";

/// The venv that holds kubernetes-validate (and, through it, jsonschema and PyYAML).
pub fn venv() -> PathBuf {
    target_dir().join("xtask-venv")
}

fn venv_bin(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}

/// The Python packages of the venv, pinned: kubernetes-validate (its schemas decide what
/// passes) and grpcio (the real gRPC client and servers of the GRPCRoute end-to-end test,
/// `tests/grpc/echo.py`).
const PYTHON_TOOLS: [&str; 2] = [KUBERNETES_VALIDATE, "grpcio==1.85.1"];

/// Makes the venv and installs [`PYTHON_TOOLS`] into it, each unless it is there already at
/// the pinned version.
pub fn ensure_python_tools() -> Result<()> {
    let pip = venv_bin("pip");
    for tool in PYTHON_TOOLS {
        let (name, wanted) = tool.split_once("==").unwrap_or((tool, ""));
        let have = if pip.is_file() {
            probe(&pip.to_string_lossy(), &["show", name]).unwrap_or_default()
        } else {
            String::new()
        };
        if have
            .lines()
            .any(|l| l.trim() == format!("Version: {wanted}"))
        {
            eprintln!("setup: {tool} (venv {}): present", venv().display());
            continue;
        }
        eprintln!(
            "setup: {tool}: installing into the venv {}",
            venv().display()
        );
        if !pip.is_file() {
            // Debian's python3 (python3-venv), not whatever python3 comes first on PATH.
            run(command("/usr/bin/python3", ["-m", "venv"]).with_arg(venv()))
                .context("create the venv (Debian package python3-venv)")?;
        }
        let mut install = Command::new(&pip);
        install.args(["install", "--quiet", tool]);
        run(install).with_context(|| format!("pip install {tool}"))?;
    }
    Ok(())
}

/// Every directory under `manifests/install` with a kustomization.yaml, sorted.
pub fn kustomizations() -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![root().join("manifests/install")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                found.push(dir.clone());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `kubectl kustomize DIR | kubernetes-validate --strict`, for each kustomization; the error
/// names every one that fails.
pub fn validate_kustomizations() -> Result<()> {
    let dirs = kustomizations()?;
    if dirs.is_empty() {
        bail!("no kustomization under manifests/install");
    }
    let mut failures = Vec::new();
    for dir in &dirs {
        let shown = dir
            .strip_prefix(root())
            .unwrap_or(dir)
            .display()
            .to_string();
        if let Err(error) = validate_one(dir) {
            eprintln!("xtask: {shown}: {error:#}");
            failures.push(shown);
        } else {
            eprintln!("xtask: {shown}: valid (kubernetes-validate --strict, Kubernetes {KUBERNETES_VERSION})");
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("invalid manifests: {}", failures.join(", "))
    }
}

fn validate_one(dir: &Path) -> Result<()> {
    let render = command("kubectl", ["kustomize"]).with_arg(dir);
    let line = show(&render);
    let rendered = output(render).with_context(|| format!("`{line}`"))?;
    let file = target_dir().join(format!(
        "kustomized-{}.yaml",
        dir.strip_prefix(root())
            .unwrap_or(dir)
            .to_string_lossy()
            .replace('/', "-")
    ));
    std::fs::write(&file, &rendered).with_context(|| format!("write {}", file.display()))?;
    let mut validate = Command::new(venv_bin("kubernetes-validate"));
    validate
        .args([
            "--strict",
            "--quiet",
            "--kubernetes-version",
            KUBERNETES_VERSION,
        ])
        .arg(&file);
    run(validate)
}

/// Runs `validate_crs.py` over the CRDs, `examples/` and the docs.
pub fn validate_custom_resources() -> Result<()> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root().join("examples")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    for dir in [root().join("docs"), root()] {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    // The ConfigMap of the standalone install ships a policy too; it is a YAML string there,
    // checked by gateway-user/tests/manifests.rs against examples/edge.yaml.
    files.sort();
    // The Gateway API's objects among them go to a file, checked against the Gateway API's own
    // schemas by gateway_api::validate_objects.
    let gateway_api = target_dir().join("gateway-api-objects.json");
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(root().join("xtask/validate_crs.py"))
        .arg("--gateway-api-out")
        .arg(&gateway_api)
        .arg(root().join("manifests/crds"))
        .args(&files);
    let ours = run(cmd);
    let theirs = crate::gateway_api::validate_objects(&gateway_api);
    ours.and(theirs)
}

fn output(mut cmd: Command) -> Result<Vec<u8>> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot start it")?;
    if !out.status.success() {
        let _ = std::io::stderr().write_all(&out.stderr);
        bail!("failed ({})", out.status);
    }
    Ok(out.stdout)
}
