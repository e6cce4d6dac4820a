//! The real agent with `--source kubernetes` reading Secrets from the fake API server (root):
//! an HTTPS listener's certificate comes from a Secret, and a new certificate stored in it is
//! served without restarting the agent (the time from the update to the new certificate on
//! the wire is measured and printed); an AuthPolicy's API keys come from a Secret.
//! A Secret that is missing leaves out only what references it: one namespace's HTTPS listener
//! is not served while another namespace's routes serve and change, and a route guarded by an
//! AuthPolicy whose key Secret is missing answers 500, never served without it.
//! Certificates come from a test CA made by the openssl command line tool; the served
//! certificate is read with `openssl s_client`, requests are made with curl.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tollgate_tests::gitserver::TestCa;
use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer};
use tollgate_tests::l7::{
    backend_object, curl, documents, port_is_closed, route_object, start_agent, to, wait_for_port,
    Backend,
};
use tollgate_tests::{require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const PROXY: u16 = 18391;
const ADMIN: u16 = 18392;
const APP: u16 = 18393;
const HOST: &str = "site.k8s.test";
// The isolation test's ports.
const ISO_HTTPS: u16 = 18394;
const ISO_HTTP: u16 = 18395;
const ISO_ADMIN: u16 = 18396;
const ISO_APP: u16 = 18397;
const ISO_V2: u16 = 18398;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Secret `default/site` holding `cert` and `key` (files).
fn tls_secret((cert, key): &(PathBuf, PathBuf)) -> Value {
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "site", "namespace": "default"},
        "data": {"tls.crt": b64(&read(cert)), "tls.key": b64(&read(key)),
                 "unrelated": b64(b"never written")}})
}

/// A key line of the `keys` file (the README's recipe: sha256sum of salt bytes then key).
fn key_line(consumer: &str, salt: &str, key: &str) -> String {
    let recipe = r#"hash=$( (printf "$(printf '%s' "$salt" | sed 's/../\\x&/g')"; printf '%s' "$key") | sha256sum | cut -d' ' -f1)
echo "$consumer:sha256:$salt:$hash""#;
    let out = Command::new("bash")
        .args(["-c", recipe])
        .env("consumer", consumer)
        .env("salt", salt)
        .env("key", key)
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The policy: Gateway `edge` with an HTTPS listener serving Secret `site`, Backend `app`,
/// route `app` (`/`) guarded by an API key from Secret `api-keys`.
fn policy() -> String {
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{ name: edge, namespace: default }}\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - {{ name: https, port: {PROXY}, protocol: HTTPS, hostname: '{HOST}', tls: {{ certificateRefs: [{{ name: site }}] }} }}\n"
    );
    let auth = "apiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: { name: app-auth, namespace: default }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }]\n  apiKey: { header: X-Api-Key, credentialRefs: [{ name: api-keys }] }\n";
    documents(&[
        &gateway,
        &backend_object("app", &[APP], ""),
        &route_object(
            "app",
            &format!("  rules:\n    - backendRefs: [{}]\n", to("app")),
        ),
        auth,
    ])
}

/// The subject of the certificate served for SNI [`HOST`].
fn served_subject() -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{PROXY}"),
            "-servername",
            HOST,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn https(ca: &Path, extra: &[&str]) -> tollgate_tests::l7::Reply {
    let resolve = format!("{HOST}:{PROXY}:127.0.0.1");
    let url = format!("https://{HOST}:{PROXY}/hello");
    let mut args = vec!["--cacert", ca.to_str().unwrap(), "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

#[test]
fn a_certificate_and_api_keys_from_secrets_are_served_and_a_rotated_certificate_without_a_restart()
{
    require_root!();
    let lab = Lab::new("k8ssecret", &[]);
    let _app = Backend::start("app", APP);
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new(work.path(), "k8s-secret-ca");
    let san = format!("DNS:{HOST}");
    let cert_a = ca.server_cert_for("a", "site-a", &san);
    let cert_b = ca.server_cert_for("b", "site-b", &san);

    let fake = FakeApiServer::start(tollgate_kinds());
    let kubeconfig = lab.config.base_dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).unwrap();
    fake.apply_yaml(&policy()).unwrap();
    fake.put(tls_secret(&cert_a)).unwrap();
    let keys = format!(
        "# consumer:sha256:salt:hash\n{}",
        key_line("app-1", "00112233445566778899aabbccddeeff", "k3y-0ne")
    );
    fake.put(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "api-keys", "namespace": "default"},
        "data": {"keys": b64(keys.as_bytes())}}),
    )
    .unwrap();

    let secrets = lab.config.base_dir.join("secrets");
    let mut agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &[
            "--source",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--tls-secrets-dir",
            secrets.to_str().unwrap(),
        ],
    );
    let pid = agent.pid();
    assert!(served_subject().contains("site-a"), "{}", agent.log());
    // The files are the agent's own, private, with only the keys it reads.
    let site = secrets.join("default/site");
    let mut files: Vec<String> = std::fs::read_dir(&site)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, [".tollgate-managed", "tls.crt", "tls.key"]);

    // The API key from the Secret authenticates; no key is 401.
    let r = https(&ca.cert, &["-H", "X-Api-Key: k3y-0ne"]);
    assert_eq!((r.status, r.backend()), (200, "app".into()), "{r:?}");
    assert_eq!(
        r.seen_header("x-tollgate-consumer").as_deref(),
        Some("app-1")
    );
    let r = https(&ca.cert, &[]);
    assert_eq!(r.status, 401, "{r:?}");
    let r = https(&ca.cert, &["-H", "X-Api-Key: wrong"]);
    assert_eq!(r.status, 401, "{r:?}");

    // Rotations: the new certificate is served, by the same process, shortly after the
    // Secret is updated.
    let mut took = Vec::new();
    for i in 0..5 {
        let (cert, want) = if i % 2 == 0 {
            (&cert_b, "site-b")
        } else {
            (&cert_a, "site-a")
        };
        let applies = agent.log_count(POLICY_APPLIED);
        let started = Instant::now();
        fake.put(tls_secret(cert)).unwrap();
        loop {
            if served_subject().contains(want) {
                break;
            }
            assert!(
                started.elapsed() < APPLY_TIMEOUT,
                "{want} not served after {:?}:\n{}",
                started.elapsed(),
                agent.log()
            );
        }
        took.push(started.elapsed());
        // Served after a new revision (the key files re-read), not a restart.
        agent
            .wait_for_log_count(POLICY_APPLIED, applies + 1, APPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(agent.is_running());
        assert_eq!(agent.pid(), pid);
        let r = https(&ca.cert, &["-H", "X-Api-Key: k3y-0ne"]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    took.sort();
    eprintln!(
        "Secret update to the new certificate served: p50 {:?}, max {:?} ({} runs: {:?})",
        took[took.len() / 2],
        took[took.len() - 1],
        took.len(),
        took
    );

    // A Secret nobody references changes: no new revision.
    let applies = agent.log_count(POLICY_APPLIED);
    fake.put(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "other", "namespace": "default"},
        "data": {"keys": b64(b"x")}}),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(agent.log_count(POLICY_APPLIED), applies, "{}", agent.log());
    assert!(!secrets.join("default/other").exists());
}

/// Namespace `team-a`: Gateway `a-gw` with an HTTPS listener on [`ISO_HTTPS`] serving Secret
/// `a-cert`. Namespace `team-b`: Gateway `b-gw` (HTTP on [`ISO_HTTP`]), Backends `app` and
/// `v2`, route `open` (`/open`, to `open_to`) and route `guarded` (`/guarded`, to `app`)
/// guarded by AuthPolicy `guard`, whose API keys are in Secret `b-keys`.
fn isolation_policy(open_to: &str) -> String {
    let gateways = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{ name: a-gw, namespace: team-a }}\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - {{ name: https, port: {ISO_HTTPS}, protocol: HTTPS, tls: {{ certificateRefs: [{{ name: a-cert }}] }} }}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{ name: b-gw, namespace: team-b }}\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - {{ name: http, port: {ISO_HTTP}, protocol: HTTP }}\n"
    );
    let in_b = |yaml: String| {
        yaml.replacen(
            "metadata: { name: ",
            "metadata: { namespace: team-b, name: ",
            1,
        )
        .replace(
            "parentRefs: [{ name: edge }]",
            "parentRefs: [{ name: b-gw }]",
        )
    };
    let route = |name: &str, to_: &str| {
        in_b(route_object(
            name,
            &format!(
                "  rules:\n    - matches: [{{ path: {{ type: PathPrefix, value: /{name} }} }}]\n      backendRefs: [{}]\n",
                to(to_)
            ),
        ))
    };
    let auth = "apiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: { name: guard, namespace: team-b }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: guarded }]\n  apiKey: { header: X-Api-Key, credentialRefs: [{ name: b-keys }] }\n";
    documents(&[
        &gateways,
        &in_b(backend_object("app", &[ISO_APP], "")),
        &in_b(backend_object("v2", &[ISO_V2], "")),
        &route("open", open_to),
        &route("guarded", "app"),
        auth,
    ])
}

fn get(path: &str) -> tollgate_tests::l7::Reply {
    curl(&["--http1.1", &format!("http://127.0.0.1:{ISO_HTTP}{path}")])
}

#[test]
fn a_missing_secret_leaves_out_only_what_references_it_and_never_serves_without_it() {
    require_root!();
    let lab = Lab::new("kfiso", &[]);
    let _app = Backend::start("app", ISO_APP);
    let _v2 = Backend::start("v2", ISO_V2);
    let fake = FakeApiServer::start(tollgate_kinds());
    let kubeconfig = lab.config.base_dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).unwrap();
    // Neither `team-a/a-cert` nor `team-b/b-keys` exists.
    fake.apply_yaml(&isolation_policy("app")).unwrap();
    let secrets = lab.config.base_dir.join("secrets");
    let mut agent = start_agent(
        &lab,
        ISO_ADMIN,
        &[ISO_HTTP],
        &[
            "--source",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--tls-secrets-dir",
            secrets.to_str().unwrap(),
        ],
    );
    // Team A's HTTPS listener is not served...
    assert!(port_is_closed(ISO_HTTPS), "{}", agent.log());
    // ...team B's open route is; its guarded route answers 500, not 200 without the key.
    let r = get("/open");
    assert_eq!((r.status, r.backend()), (200, "app".into()), "{r:?}");
    let r = get("/guarded");
    assert_eq!(r.status, 500, "{r:?}");
    let r = curl(&[
        "--http1.1",
        "-H",
        "X-Api-Key: anything",
        &format!("http://127.0.0.1:{ISO_HTTP}/guarded"),
    ]);
    assert_eq!(r.status, 500, "{r:?}");
    // /status says what is not served and why.
    let (code, status) = tollgate_tests::http_get(ISO_ADMIN, "/status", "").expect("/status");
    assert_eq!(code, 200);
    assert!(
        status.contains("Secret team-a/a-cert does not exist"),
        "{status}"
    );
    assert!(
        status.contains("Secret team-b/b-keys does not exist"),
        "{status}"
    );

    // Team B keeps changing while team A's Secret is still missing.
    let applies = agent.log_count(POLICY_APPLIED);
    fake.apply_yaml(&isolation_policy("v2")).unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, applies + 1, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let r = get("/open");
    assert_eq!((r.status, r.backend()), (200, "v2".into()), "{r:?}");
    assert_eq!(get("/guarded").status, 500);
    assert!(port_is_closed(ISO_HTTPS));

    // The Secrets appear: team A's listener serves its certificate, and the guarded route
    // asks for the key.
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new(work.path(), "k8s-iso-ca");
    let cert = ca.server_cert_for("a", "team-a-site", &format!("DNS:{HOST}"));
    let mut secret = tls_secret(&cert);
    secret["metadata"] = json!({"name": "a-cert", "namespace": "team-a"});
    fake.put(secret).unwrap();
    let keys = key_line("b-1", "00112233445566778899aabbccddeeff", "b-k3y");
    fake.put(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "b-keys", "namespace": "team-b"},
        "data": {"keys": b64(keys.as_bytes())}}),
    )
    .unwrap();
    wait_for_port(&mut agent, ISO_HTTPS);
    let started = Instant::now();
    let authed = || {
        curl(&[
            "--http1.1",
            "-H",
            "X-Api-Key: b-k3y",
            &format!("http://127.0.0.1:{ISO_HTTP}/guarded"),
        ])
    };
    while authed().status != 200 {
        assert!(started.elapsed() < APPLY_TIMEOUT, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get("/guarded").status, 401);
}
