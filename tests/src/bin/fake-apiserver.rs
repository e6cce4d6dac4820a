//! Runs the fake Kubernetes API server standalone (benchmarks, manual runs with kubectl or the
//! agent): `fake-apiserver --port 6443 --kubeconfig /tmp/kc --load objects.yaml`.
//! It serves Tollgate's kinds (`tollgate_tests::kube_fake::tollgate_kinds`) plus any
//! `--kind group/version/Kind/plural[/cluster]`, and runs until interrupted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer, Kind};

#[derive(Parser)]
#[command(
    about = "A fake Kubernetes API server (plain HTTP on 127.0.0.1), for tests and benchmarks"
)]
struct Args {
    /// Port on 127.0.0.1 (0: any free port; the URL is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write a kubeconfig for this server here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Default namespace of the kubeconfig's context.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Bearer token clients must send (default: a random one, written into the kubeconfig).
    #[arg(long)]
    token: Option<String>,
    /// Accept any client, without a token.
    #[arg(long, conflicts_with = "token")]
    no_auth: bool,
    /// More kinds: `group/version/Kind/plural` (namespaced) or `.../cluster`; the core group
    /// is written `core`.
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// YAML files whose objects are stored before serving.
    #[arg(long)]
    load: Vec<PathBuf>,
    /// Seconds between bookmarks on idle watches.
    #[arg(long, default_value_t = 10)]
    bookmark_interval: u64,
}

fn parse_kind(spec: &str) -> Result<Kind> {
    let parts: Vec<&str> = spec.split('/').collect();
    let (group, version, kind, plural, cluster) = match parts.as_slice() {
        [g, v, k, p] => (*g, *v, *k, *p, false),
        [g, v, k, p, "cluster"] => (*g, *v, *k, *p, true),
        _ => bail!("--kind {spec}: expected group/version/Kind/plural[/cluster]"),
    };
    let group = if group == "core" { "" } else { group };
    Ok(if cluster {
        Kind::cluster(group, version, kind, plural)
    } else {
        Kind::namespaced(group, version, kind, plural)
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut kinds = tollgate_kinds();
    for spec in &args.kinds {
        kinds.push(parse_kind(spec)?);
    }
    let mut builder = FakeApiServer::builder(kinds)
        .port(args.port)
        .bookmark_interval(Duration::from_secs(args.bookmark_interval.max(1)));
    if args.no_auth {
        builder = builder.token(None);
    } else if let Some(token) = &args.token {
        builder = builder.token(Some(token));
    }
    let server = builder.start().context("start the fake API server")?;
    for file in &args.load {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        let stored = server
            .apply_yaml(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        eprintln!("loaded {} objects from {}", stored.len(), file.display());
    }
    if let Some(path) = &args.kubeconfig {
        server
            .write_kubeconfig_for_namespace(path, &args.namespace)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("kubeconfig: {}", path.display());
    }
    println!("{}", server.url());
    // Serve until killed (SIGINT/SIGTERM keep their default action, ending the process; the
    // server holds nothing that needs a clean shutdown).
    let _server = server;
    loop {
        std::thread::park();
    }
}
