//! The Gateway API conformance run: every scenario of `tests/conformance/scenarios/` (Tollgate's
//! translation of the upstream suite's HTTPRoute and GRPCRoute tests, see
//! `docs/conformance/README.md`)
//! applied in turn to one running agent (directory source, hot reload with SIGHUP) with the
//! base objects of `tests/conformance/base.yaml`, its requests sent to the proxy, and the
//! answers checked against the expectations (status, which echo backend answered, the path,
//! Host and headers it saw, response headers, Location, mirrors, weights, WebSocket echo; for
//! gRPC calls, made with grpcio, the gRPC status and the gRPC echo server that answered).
//!
//! It writes the `ConformanceReport` to `<target>/tmp/conformance-report.yaml` and fails when a
//! scenario fails (one marked `knownFailure`, a product bug on record: when it passes), or when
//! the committed `docs/conformance/report.yaml` says anything else than this run (the date
//! aside). `TOLLGATE_CONFORMANCE_WRITE=1` (what `cargo xtask conformance`
//! sets) writes the committed report instead of comparing. `TOLLGATE_CONFORMANCE_ONLY=A,B`
//! runs those scenarios only (no report then), for work on one scenario.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use tollgate_tests::conformance::grpc::GrpcBackend;
use tollgate_tests::conformance::h2c::H2cBackend;
use tollgate_tests::conformance::status::StatusRun;
use tollgate_tests::conformance::{
    data_dir, echo_backends, load_scenarios, load_skip_list, port_open, report, request_ports,
    run_request, without_date, BackendPorts, Context, Implementation, Outcome, DEFAULT_PORT,
    INFRA_NAMESPACE,
};
use tollgate_tests::gitserver::TestCa;
use tollgate_tests::l7::{start_agent, Backend};
use tollgate_tests::{require_root, workspace_root, Agent, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const ADMIN: u16 = 28090;
/// The admin port of `tollgate controller` in the status scenarios.
const CONTROLLER_ADMIN: u16 = 28091;
const POLICY_FILE: &str = "conformance.yaml";
/// What the agent logs when a revision is not enforced.
const NOT_APPLIED: [&str; 2] = ["revision refused", "apply failed"];

/// The implementation as the report names it. The project has no public home yet: the URL and
/// contact are the project's own domain and mailbox names, to be replaced when it has one.
const IMPLEMENTATION: Implementation<'static> = Implementation {
    organization: "tollgate",
    project: "tollgate",
    url: "https://tollgate.dev",
    version: env!("CARGO_PKG_VERSION"),
    contact: &["dev@tollgate.invalid"],
};

/// An echo backend, held only to keep it running (dropping it stops it).
enum Running {
    Python(#[allow(dead_code)] Backend),
    H2c(#[allow(dead_code)] H2cBackend),
    Grpc(#[allow(dead_code)] GrpcBackend),
}

fn not_applied(log: &str) -> usize {
    log.lines()
        .filter(|l| NOT_APPLIED.iter().any(|n| l.contains(n)))
        .count()
}

/// The certificates of the TLS scenarios, in the layout of `--tls-secrets-dir`
/// (`NAMESPACE/NAME/tls.crt` and `tls.key` for a Secret, `ca.crt` for a ConfigMap), all in
/// namespace gateway-conformance-infra: the HTTPS listeners' certificate
/// (`tls-validity-checks-certificate`, from a server CA whose certificate is returned, for the
/// clients), and two client CAs (ConfigMaps `tls-validity-checks-ca-certificate` and
/// `tls-validity-checks-per-port-ca-certificate`) with a client certificate each (Secrets
/// `tls-validity-checks-client-certificate` and `tls-validity-checks-per-port-client-certificate`).
fn make_certificates(secrets: &Path) -> PathBuf {
    let work = secrets.join(".ca");
    fs::create_dir_all(&work).unwrap_or_else(|e| panic!("create {}: {e}", work.display()));
    let install = |name: &str, files: &[(&str, &Path)]| {
        let dir = secrets.join(INFRA_NAMESPACE).join(name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        for (file, from) in files {
            fs::copy(from, dir.join(file))
                .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    };
    let server_ca = TestCa::new(&work, "conformance-server-ca");
    let (crt, key) = server_ca.server_cert_for(
        "server",
        "example.org",
        "DNS:example.org,DNS:second-example.org,DNS:unknown-example.org,DNS:*.wildcard.org",
    );
    install(
        "tls-validity-checks-certificate",
        &[("tls.crt", &crt), ("tls.key", &key)],
    );
    for (ca_name, client) in [
        (
            "tls-validity-checks-ca-certificate",
            "tls-validity-checks-client-certificate",
        ),
        (
            "tls-validity-checks-per-port-ca-certificate",
            "tls-validity-checks-per-port-client-certificate",
        ),
    ] {
        let ca = TestCa::new(&work, ca_name);
        install(ca_name, &[("ca.crt", &ca.cert)]);
        let (crt, key) = ca.client_cert(client, client);
        install(client, &[("tls.crt", &crt), ("tls.key", &key)]);
    }
    server_ca.cert.clone()
}

/// The HTTPS listeners' certificate (made by [`make_certificates`]) as the Secrets of the
/// status scenarios' API server: `tls-validity-checks-certificate` in the infra namespace, as
/// upstream's suite makes it, and `certificate` in gateway-conformance-web-backend, which the
/// `GatewaySecret*ReferenceGrant*` tests reference from another namespace; and the client CA
/// ConfigMap `tls-validity-checks-ca-certificate`.
fn certificate_secrets(secrets: &Path) -> String {
    use base64::Engine as _;
    let dir = secrets
        .join(INFRA_NAMESPACE)
        .join("tls-validity-checks-certificate");
    let b64 = |file: &str| {
        let path = dir.join(file);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let (crt, key) = (b64("tls.crt"), b64("tls.key"));
    let ca_path = secrets
        .join(INFRA_NAMESPACE)
        .join("tls-validity-checks-ca-certificate/ca.crt");
    let ca =
        fs::read_to_string(&ca_path).unwrap_or_else(|e| panic!("read {}: {e}", ca_path.display()));
    let ca_map = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "tls-validity-checks-ca-certificate", "namespace": INFRA_NAMESPACE},
        "data": {"ca.crt": ca},
    });
    [
        (INFRA_NAMESPACE, "tls-validity-checks-certificate"),
        ("gateway-conformance-web-backend", "certificate"),
    ]
    .iter()
    .map(|(namespace, name)| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}, namespace: {namespace} }}\ntype: kubernetes.io/tls\ndata: {{ tls.crt: {crt}, tls.key: {key} }}\n"
        )
    })
    .chain(std::iter::once(ca_map.to_string()))
    .collect::<Vec<_>>()
    .join("---\n")
}

/// Applies `base` and `objects` as the next revision (SIGHUP), waits until the agent has applied
/// it and listens on the requests' ports, then sends the requests; the failures.
fn run_step(
    lab: &Lab,
    agent: &mut Agent,
    base: &str,
    objects: &str,
    requests: &[serde_json::Value],
    ctx: &Context,
) -> Vec<String> {
    let (applied, refused) = (agent.log_count(POLICY_APPLIED), not_applied(&agent.log()));
    lab.write_policy(POLICY_FILE, &format!("{base}\n---\n{objects}"));
    agent.sighup();
    let deadline = Instant::now() + APPLY_TIMEOUT;
    loop {
        let log = agent.log();
        if log.lines().filter(|l| l.contains(POLICY_APPLIED)).count() > applied {
            break;
        }
        if not_applied(&log) > refused {
            let why: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(POLICY_APPLIED))
                .skip_while(|l| !NOT_APPLIED.iter().any(|n| l.contains(n)))
                .collect();
            return vec![format!("the revision was not applied:\n{}", why.join("\n"))];
        }
        assert!(agent.is_running(), "the agent exited:\n{log}");
        if Instant::now() > deadline {
            return vec![format!(
                "the revision was not applied within {APPLY_TIMEOUT:?}"
            )];
        }
        thread::sleep(Duration::from_millis(20));
    }
    for port in request_ports(requests) {
        let open_by = Instant::now() + Duration::from_secs(10);
        while !port_open(port) && Instant::now() < open_by {
            thread::sleep(Duration::from_millis(20));
        }
        if !port_open(port) {
            return vec![format!("nothing listens on port {port}")];
        }
    }
    ctx.backends.clear();
    requests
        .iter()
        .flat_map(|entry| run_request(entry, ctx))
        .collect()
}

#[test]
fn gateway_api_conformance() {
    require_root!();
    let started = Instant::now();
    let dir = data_dir();
    let base = fs::read_to_string(dir.join("base.yaml")).expect("tests/conformance/base.yaml");
    let mut scenarios = load_scenarios(&dir).unwrap_or_else(|e| panic!("{e}"));
    let skips = load_skip_list(&dir.join("skipped.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let only: Option<Vec<String>> = std::env::var("TOLLGATE_CONFORMANCE_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    if let Some(only) = &only {
        scenarios.retain(|s| only.contains(&s.name));
        assert!(!scenarios.is_empty(), "no scenario named {only:?}");
    }

    // Every echo backend any revision names, started once (the scenarios' own Backends have
    // ports of their own).
    let mut wanted = BTreeMap::new();
    let texts = scenarios.iter().flat_map(|s| {
        std::iter::once(s.objects.as_str()).chain(s.then.iter().map(|(o, _)| o.as_str()))
    });
    for text in std::iter::once(base.as_str()).chain(texts) {
        for b in echo_backends(text).unwrap_or_else(|e| panic!("{e}")) {
            if let Some(old) = wanted.insert(b.port, b.clone()) {
                assert_eq!(old, b, "two echo backends on port {}", b.port);
            }
        }
    }
    let mut running = Vec::new();
    let mut ports = BackendPorts::default();
    for b in wanted.values() {
        if b.grpc {
            // Not in `ports`: they keep no request log (they are never mirrors).
            running.push(Running::Grpc(GrpcBackend::start(&b.name, b.port)));
            continue;
        }
        running.push(if b.h2c {
            Running::H2c(H2cBackend::start(&b.name, b.port))
        } else {
            Running::Python(Backend::start(&b.name, b.port))
        });
        ports.0.insert(b.name.clone(), b.port);
    }

    let lab = Lab::new("cfconform", &[]);
    let secrets = tempfile::tempdir().expect("a secrets directory");
    let server_ca = make_certificates(secrets.path());
    let secrets_dir = secrets.path().display().to_string();
    let ctx = Context {
        backends: ports,
        secrets: secrets.path().to_owned(),
        server_ca,
    };
    lab.write_policy(POLICY_FILE, &base);
    let mut agent = start_agent(
        &lab,
        ADMIN,
        &[DEFAULT_PORT],
        &["--access-log", "off", "--tls-secrets-dir", &secrets_dir],
    );

    let mut outcomes = Vec::new();
    for s in scenarios.iter().filter(|s| !s.status_mode) {
        let t = Instant::now();
        let mut failures = Vec::new();
        let steps =
            std::iter::once((&s.objects, &s.requests)).chain(s.then.iter().map(|(o, r)| (o, r)));
        for (step, (objects, requests)) in steps.enumerate() {
            let f = run_step(&lab, &mut agent, &base, objects, requests, &ctx);
            let label = if step == 0 {
                String::new()
            } else {
                format!("then[{}]: ", step - 1)
            };
            failures.extend(f.into_iter().map(|f| format!("{label}{f}")));
            if !failures.is_empty() {
                break;
            }
        }
        let verdict = match (failures.is_empty(), &s.known_failure) {
            (true, _) => "PASS".to_owned(),
            (false, None) => "FAIL".to_owned(),
            (false, Some(bug)) => format!("FAIL (known: {bug})"),
        };
        eprintln!("{verdict} {} ({:.1?})", s.name, t.elapsed());
        for f in &failures {
            eprintln!("    {f}");
        }
        outcomes.push(Outcome {
            name: s.name.clone(),
            features: s.features.clone(),
            failures,
            experimental: s.experimental,
        });
    }
    drop(agent);

    // The status scenarios: the fake API server, `tollgate controller`, and an agent in
    // Kubernetes mode on the same lab (the directory source's agent is stopped: the same
    // ports).
    let status: Vec<_> = scenarios.iter().filter(|s| s.status_mode).collect();
    if !status.is_empty() {
        let mut run = StatusRun::start(&base, CONTROLLER_ADMIN);
        run.store(&certificate_secrets(secrets.path()));
        run.start_agent(&lab, ADMIN);
        for s in status {
            let t = Instant::now();
            let failures = run.run(s, &ctx);
            let verdict = match (failures.is_empty(), &s.known_failure) {
                (true, _) => "PASS".to_owned(),
                (false, None) => "FAIL".to_owned(),
                (false, Some(bug)) => format!("FAIL (known: {bug})"),
            };
            eprintln!("{verdict} {} (status, {:.1?})", s.name, t.elapsed());
            for f in &failures {
                eprintln!("    {f}");
            }
            outcomes.push(Outcome {
                name: s.name.clone(),
                features: s.features.clone(),
                failures,
                experimental: s.experimental,
            });
        }
    }

    drop(running);

    let known: Vec<&str> = scenarios
        .iter()
        .filter(|s| s.known_failure.is_some())
        .map(|s| s.name.as_str())
        .collect();
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.failures.is_empty() && !known.contains(&o.name.as_str()))
        .map(|o| format!("{}:\n  {}", o.name, o.failures.join("\n  ")))
        .chain(
            outcomes
                .iter()
                .filter(|o| o.failures.is_empty() && known.contains(&o.name.as_str()))
                .map(|o| {
                    format!(
                        "{} passes now: remove its knownFailure and regenerate the report",
                        o.name
                    )
                }),
        )
        .collect();
    eprintln!(
        "{} scenarios, {} failed ({} of them known product bugs), in {:.1?}",
        outcomes.len(),
        outcomes.iter().filter(|o| !o.failures.is_empty()).count(),
        known.len(),
        started.elapsed()
    );
    let mut problems = failed;
    if only.is_none() {
        let date = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .expect("round");
        let text = report(&IMPLEMENTATION, &date.to_string(), &outcomes, &skips);
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance-report.yaml");
        fs::write(&out, &text).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
        eprintln!("report: {}", out.display());
        let committed_path = workspace_root().join("docs/conformance/report.yaml");
        if std::env::var_os("TOLLGATE_CONFORMANCE_WRITE").is_some_and(|v| v == "1") {
            fs::write(&committed_path, &text)
                .unwrap_or_else(|e| panic!("write {}: {e}", committed_path.display()));
            eprintln!("written: {}", committed_path.display());
        } else {
            let committed = fs::read_to_string(&committed_path).unwrap_or_default();
            if without_date(&committed) != without_date(&text) {
                problems.push(format!(
                    "{} does not match this run ({}): regenerate it with `cargo xtask conformance` (or TOLLGATE_CONFORMANCE_WRITE=1) and commit it",
                    committed_path.display(),
                    out.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} conformance problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
