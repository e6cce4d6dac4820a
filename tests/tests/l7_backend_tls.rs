//! TLS from the proxy to its backends (`Backend` `spec.tls`), against nginx on loopback with
//! certificates from a CA made for the test: the certificate checked against the Backend's
//! CA and hostname (a wrong CA or a wrong hostname: 503, counted as `reason="tls"`), SNI as
//! documented, and a client certificate for a backend that requires one (mutual TLS).
use std::path::Path;
use std::time::Duration;

use tollgate_tests::gitserver::{spawn_nginx, wait_for_port, ServerDir, TestCa};
use tollgate_tests::l7::{curl, documents, gateway, install_secret, route_object, start_agent, to};
use tollgate_tests::{http_get, metric_value, require_root, Lab, POLICY_APPLIED};

const PROXY: u16 = 18250;
const ADMIN: u16 = 19835;
/// nginx, TLS.
const TLS_PORT: u16 = 19836;
/// nginx, TLS with a client certificate required.
const MTLS_PORT: u16 = 19837;

/// nginx with a TLS server on [`TLS_PORT`] and a mutual-TLS server on [`MTLS_PORT`]; each
/// answers with what the TLS handshake carried.
fn start_nginx(cert: &Path, key: &Path, client_ca: &Path) -> ServerDir {
    let mut dir = ServerDir::new("hdbtls");
    let (cert, key, client_ca) = (cert.display(), key.display(), client_ca.display());
    let servers = format!(
        r#"    ssl_certificate {cert};
    ssl_certificate_key {key};
    server {{
        listen 127.0.0.1:{TLS_PORT} ssl;
        location / {{ return 200 "tls-backend sni=$ssl_server_name alpn=$ssl_alpn_protocol host=$host\n"; }}
    }}
    server {{
        listen 127.0.0.1:{MTLS_PORT} ssl;
        ssl_client_certificate {client_ca};
        ssl_verify_client on;
        location / {{ return 200 "mtls-backend client=$ssl_client_s_dn\n"; }}
    }}
"#
    );
    spawn_nginx(&mut dir, &servers);
    for port in [TLS_PORT, MTLS_PORT] {
        wait_for_port(port, Duration::from_secs(10)).unwrap_or_else(|e| {
            panic!("{e}\nnginx: {}", dir.log("nginx"));
        });
    }
    dir
}

/// A Backend on `port` with `tls` (YAML flow mapping).
fn tls_backend(name: &str, port: u16, tls: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name} }}\nspec:\n  endpoints:\n    - ip: {{ address: 127.0.0.1, port: {port} }}\n  tls: {tls}\n"
    )
}

/// A route for `/<name>` to Backend `name`.
fn route_to(name: &str) -> String {
    route_object(
        name,
        &format!(
            "  rules:\n    - matches: [{{ path: {{ value: /{name} }} }}]\n      backendRefs: [{}]\n",
            to(name)
        ),
    )
}

fn tls_errors(route: &str) -> u64 {
    let text = http_get(ADMIN, "/metrics", "").expect("admin server").1;
    metric_value(
        &text,
        &format!("tollgate_http_upstream_errors_total{{route=\"default/{route}\",reason=\"tls\"}}"),
    )
    .unwrap_or(0)
}

#[test]
fn backends_over_tls_are_verified_by_ca_and_hostname_and_get_a_client_certificate() {
    require_root!();
    let lab = Lab::new("hdbtls", &[]);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "backend-ca");
    let other = TestCa::new(dir.path(), "other-ca");
    let (cert, key) = ca.server_cert_for("backend", "backend.test", "DNS:backend.test");
    let client = ca.client_cert("proxy-client", "tollgate-proxy");
    let _nginx = start_nginx(&cert, &key, &ca.cert);
    let secrets = dir.path().join("secrets");
    install_secret(&secrets, "backend-ca", &[("ca.crt", &ca.cert)]);
    install_secret(&secrets, "other-ca", &[("ca.crt", &other.cert)]);
    install_secret(
        &secrets,
        "proxy-client",
        &[("tls.crt", &client.0), ("tls.key", &client.1)],
    );

    let trusted = "{ hostname: backend.test, caCertificateRefs: [{ name: backend-ca }] }";
    let backends = [
        tls_backend("good", TLS_PORT, trusted),
        tls_backend(
            "wrongca",
            TLS_PORT,
            "{ hostname: backend.test, caCertificateRefs: [{ name: other-ca }] }",
        ),
        tls_backend(
            "wrongname",
            TLS_PORT,
            "{ hostname: other.test, caCertificateRefs: [{ name: backend-ca }] }",
        ),
        tls_backend(
            "mtls",
            MTLS_PORT,
            "{ hostname: backend.test, caCertificateRefs: [{ name: backend-ca }], clientCertificateRef: { name: proxy-client } }",
        ),
        tls_backend("nocert", MTLS_PORT, trusted),
    ];
    let names = ["good", "wrongca", "wrongname", "mtls", "nocert"];
    let routes: Vec<String> = names.iter().map(|n| route_to(n)).collect();
    let g = gateway(&[("http", PROXY, None)]);
    let mut docs: Vec<&str> = vec![&g];
    docs.extend(backends.iter().map(String::as_str));
    docs.extend(routes.iter().map(String::as_str));
    lab.write_policy("l7.yaml", &documents(&docs));
    let secrets_arg = secrets.to_str().unwrap().to_owned();
    let agent = start_agent(&lab, ADMIN, &[PROXY], &["--tls-secrets-dir", &secrets_arg]);
    let get = |path: &str| {
        curl(&[
            "-H",
            "Host: shop.example",
            &format!("http://127.0.0.1:{PROXY}{path}"),
        ])
    };

    // The CA and the name check out: the request goes through, with the Backend's hostname
    // as SNI, no ALPN (HTTP/1.1, the default), and the client's Host.
    for _ in 0..3 {
        let r = get("/good");
        assert_eq!(r.status, 200, "{r:?}\n{}", agent.log());
        assert_eq!(
            r.body.trim(),
            "tls-backend sni=backend.test alpn= host=shop.example",
            "{r:?}"
        );
    }
    assert_eq!(tls_errors("good"), 0);

    // A certificate from another CA, or not valid for the hostname: 503 (no connection),
    // counted.
    for route in ["wrongca", "wrongname"] {
        let before = tls_errors(route);
        let r = get(&format!("/{route}"));
        assert_eq!(r.status, 503, "{route}: {r:?}");
        assert!(r.body.contains("TLS handshake"), "{route}: {r:?}");
        assert!(tls_errors(route) > before, "{route}: not counted");
    }

    // Mutual TLS: the client certificate is presented; without it nginx refuses.
    let r = get("/mtls");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("CN=tollgate-proxy"), "{r:?}");
    let r = get("/nocert");
    assert_eq!(
        r.status, 400,
        "nginx answers 400 without a client certificate: {r:?}"
    );

    // A Backend naming a CA that is not there is left out (naming the file), not the
    // revision: the route to it answers 500, the others serve.
    let mut broken: Vec<&str> = docs.clone();
    let missing = tls_backend(
        "missing",
        TLS_PORT,
        "{ hostname: backend.test, caCertificateRefs: [{ name: no-such-ca }] }",
    );
    let missing_route = route_to("missing");
    broken.push(&missing);
    broken.push(&missing_route);
    lab.write_policy("l7.yaml", &documents(&broken));
    let mut agent = agent;
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent.log().contains("default/no-such-ca/ca.crt"),
        "{}",
        agent.log()
    );
    let r = get("/good");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(get("/missing").status, 500);
}
