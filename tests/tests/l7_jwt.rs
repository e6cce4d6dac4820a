//! JWT and client certificate authentication of the L7 proxy (`AuthPolicy` `jwt` and
//! `clientCertificate`), with the real binary and curl. The keys, the JWKS and the tokens are
//! made by PyJWT with cryptography (not the agent's code); the JWKS is served over HTTP on
//! loopback by a small Python server whose keys the test rotates and which it stops. Client
//! certificates are made by the openssl tool ([`TestCa`]).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tollgate_tests::admin::metrics;
use tollgate_tests::gitserver::{wait_for_port, ServerDir, TestCa};
use tollgate_tests::l7::{
    access_log, app_and_free, app_route, backend_object, curl, documents, install_secret,
    start_agent, Backend, Reply,
};
use tollgate_tests::{metric_value, require_root, Lab, PYTHON};

const PROXY: u16 = 18160;
const TLS_PROXY: u16 = 18161;
const ADMIN: u16 = 19760;
const BACKEND: u16 = 19761;
const JWKS_PORT: u16 = 19762;
const TLS_ADMIN: u16 = 19763;
const TLS_BACKEND: u16 = 19764;

/// Keys, JWKS file and tokens with PyJWT; and the JWKS server.
const HELPER: &str = r#"
import json, sys, time, base64
import jwt
from jwt.algorithms import RSAAlgorithm, ECAlgorithm, OKPAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, ec, ed25519

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

cmd, d = sys.argv[1], sys.argv[2]
if cmd == "keygen":
    name, kind = sys.argv[3], sys.argv[4]
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk, alg = json.loads(RSAAlgorithm.to_jwk(key.public_key())), "RS256"
    elif kind == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk, alg = json.loads(ECAlgorithm.to_jwk(key.public_key())), "ES256"
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        jwk, alg = json.loads(OKPAlgorithm.to_jwk(key.public_key())), "EdDSA"
    jwk.update({"kid": name, "use": "sig", "alg": alg})
    open(f"{d}/{name}.pem", "wb").write(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    open(f"{d}/{name}.jwk", "w").write(json.dumps(jwk))
elif cmd == "jwks":
    keys = [json.load(open(f"{d}/{n}.jwk")) for n in sys.argv[3:]]
    open(f"{d}/jwks.tmp", "w").write(json.dumps({"keys": keys}))
    import os
    os.rename(f"{d}/jwks.tmp", f"{d}/jwks.json")
elif cmd == "sign":
    name, alg, kid, claims = sys.argv[3], sys.argv[4], sys.argv[5], json.loads(sys.argv[6])
    headers = {"kid": kid} if kid else {}
    if alg == "none":
        h = dict(headers, alg="none", typ="JWT")
        print(b64(json.dumps(h).encode()) + "." + b64(json.dumps(claims).encode()) + ".")
    elif alg == "HS256":
        print(jwt.encode(claims, "a-shared-secret-of-32-bytes!!!!!", algorithm="HS256", headers=headers))
    else:
        key = serialization.load_pem_private_key(open(f"{d}/{name}.pem", "rb").read(), None)
        print(jwt.encode(claims, key, algorithm=alg, headers=headers))
elif cmd == "serve":
    from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/jwks.json":
                self.send_response(404); self.end_headers(); return
            body = open(f"{d}/jwks.json", "rb").read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, fmt, *args):
            sys.stderr.write("GET %s\n" % self.path); sys.stderr.flush()
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), H)
    if len(sys.argv) > 5:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[4], sys.argv[5])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()
"#;

/// The Python side: a server directory with the helper script.
struct Idp {
    dir: ServerDir,
}

impl Idp {
    fn new(tag: &str) -> Idp {
        let dir = ServerDir::new(tag);
        fs::write(dir.file("helper.py"), HELPER).unwrap();
        Idp { dir }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(PYTHON)
            .arg(self.dir.file("helper.py"))
            .arg(args[0])
            .arg(&self.dir.path)
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("run python3 (python3-jwt, python3-cryptography): {e}"));
        assert!(out.status.success(), "helper {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn keygen(&self, name: &str, kind: &str) {
        self.run(&["keygen", name, kind]);
    }

    fn jwk(&self, name: &str) -> Value {
        serde_json::from_str(&fs::read_to_string(self.dir.file(&format!("{name}.jwk"))).unwrap())
            .unwrap()
    }

    /// Serves a JWKS of `keys` from now on.
    fn publish(&self, keys: &[&str]) {
        let mut args = vec!["jwks"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// A token signed with key `name` by `alg`, with header `kid`.
    fn sign(&self, name: &str, alg: &str, kid: &str, claims: &Value) -> String {
        self.run(&["sign", name, alg, kid, &claims.to_string()])
    }

    /// Serves `jwks.json` on 127.0.0.1:`port`, over TLS with `tls` (certificate, key).
    fn serve(&mut self, port: u16, tls: Option<&(PathBuf, PathBuf)>) {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(self.dir.file("helper.py"))
            .arg("serve")
            .arg(&self.dir.path)
            .arg(port.to_string());
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        self.dir.spawn("jwks", cmd);
        wait_for_port(port, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    }

    fn fetches(&self) -> usize {
        self.dir.log("jwks").matches("GET /jwks.json").count()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a good token for `sub`, with `extra` merged (a null removes a claim).
fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({
        "sub": sub, "iss": "https://idp.test", "aud": ["orders", "other"],
        "iat": now(), "exp": now() + 300, "tenant": "acme",
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn get(path: &str, args: &[&str]) -> Reply {
    let url = format!("http://127.0.0.1:{PROXY}{path}");
    let mut all: Vec<&str> = args.to_vec();
    all.push(&url);
    curl(&all)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn auth_failures(admin: u16, reason: &str) -> u64 {
    metric_value(
        &metrics(admin),
        &format!("tollgate_auth_failures_total{{route=\"default/app\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0)
}

fn jwks_metric(name: &str, provider: &str) -> Option<u64> {
    jwks_metric_at(ADMIN, name, provider)
}

fn jwks_metric_at(admin: u16, name: &str, provider: &str) -> Option<u64> {
    metric_value(
        &metrics(admin),
        &format!("{name}{{policy=\"default/app-auth\",provider=\"{provider}\"}}"),
    )
}

/// Waits until `f` holds (polling every 100 ms), or panics with `what`.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn challenges(r: &Reply) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A refused token: 401, the RFC 6750 challenge with `description`, and `reason` counted.
fn refused(token: &str, reason: &str, description: &str) {
    let before = auth_failures(ADMIN, reason);
    let r = get("/a", &["-H", &bearer(token)]);
    assert_eq!(r.status, 401, "{reason}: {r:?}");
    assert_eq!(
        challenges(&r),
        [format!(
            "Bearer realm=\"default/app\", error=\"invalid_token\", error_description=\"{description}\""
        )],
        "{reason}: {r:?}"
    );
    assert_eq!(auth_failures(ADMIN, reason), before + 1, "{reason}");
}

fn revision(inline_jwks: &Value) -> String {
    let policy = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{ name: app-auth }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }}]\n  jwt:\n    providers:\n      - name: idp\n        issuer: https://idp.test\n        audiences: [orders]\n        jwks: {{ uri: 'http://127.0.0.1:{JWKS_PORT}/jwks.json' }}\n        claimToHeaders: [{{ claim: tenant, header: X-Tenant }}]\n        clockSkew: 30s\n      - name: local\n        issuer: https://inline.test\n        jwks: {{ inline: '{inline_jwks}' }}\n        extractFrom: {{ query: access_token }}\n  allowedConsumers: [alice, bob, carol, svc-inline]\n"
    );
    app_and_free(PROXY, BACKEND, &[&policy])
}

#[test]
fn jwts_from_pyjwt_are_checked_against_a_jwks_served_over_http() {
    require_root!();
    let lab = Lab::new("jwjwt", &[]);
    let _app = Backend::start("app", BACKEND);
    let mut idp = Idp::new("jwjwks");
    for (name, kind) in [
        ("rsa1", "rsa"),
        ("ec1", "ec"),
        ("ed1", "ed"),
        ("ed2", "ed"),
        ("rogue", "rsa"),
        ("inl", "ed"),
    ] {
        idp.keygen(name, kind);
    }
    idp.publish(&["rsa1", "ec1", "ed1"]);
    idp.serve(JWKS_PORT, None);
    let inline = json!({ "keys": [idp.jwk("inl")] });
    lab.write_policy("l7.yaml", &revision(&inline));
    let secrets = tempfile::tempdir().unwrap();
    let dir = secrets.path().to_str().unwrap().to_owned();
    let agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--log-format", "json", "--tls-secrets-dir", &dir],
    );
    // The JWKS is fetched off the request path, right after the revision applies.
    wait_until("the JWKS fetch", Duration::from_secs(15), || {
        jwks_metric("tollgate_jwks_keys", "idp") == Some(3)
    });
    assert_eq!(idp.fetches(), 1);

    // No token: 401 with a plain Bearer challenge.
    let r = get("/a", &[]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(challenges(&r), ["Bearer realm=\"default/app\""], "{r:?}");
    assert_eq!(auth_failures(ADMIN, "missing"), 1);

    // A good token of each algorithm: the backend hears the consumer and the claim, not the
    // client's copies.
    for (key, alg, sub) in [
        ("rsa1", "RS256", "alice"),
        ("ec1", "ES256", "bob"),
        ("ed1", "EdDSA", "carol"),
    ] {
        let t = idp.sign(key, alg, key, &claims(sub, json!({})));
        let r = get(
            "/a",
            &[
                "-H",
                &bearer(&t),
                "-H",
                "X-Tenant: evil",
                "-H",
                "X-Tollgate-Consumer: admin",
            ],
        );
        assert_eq!(r.status, 200, "{alg}: {r:?}");
        assert_eq!(
            r.seen_header("x-tollgate-consumer").as_deref(),
            Some(sub),
            "{alg}"
        );
        assert_eq!(r.seen_header("x-tenant").as_deref(), Some("acme"), "{alg}");
    }
    // A token without the claim: a client's copy of its header does not pass either.
    let t = idp.sign(
        "ed1",
        "EdDSA",
        "ed1",
        &claims("alice", json!({"tenant": null})),
    );
    let r = get("/a", &["-H", &bearer(&t), "-H", "X-Tenant: evil"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.seen_header("x-tenant"), None, "{r:?}");
    // Nor on a route without the policy.
    let r = get("/free", &["-H", "X-Tenant: evil"]);
    assert_eq!(r.status, 200, "{r:?}");
    // Within the clock skew (30 s): still good.
    let t = idp.sign(
        "rsa1",
        "RS256",
        "rsa1",
        &claims("alice", json!({"exp": now() - 10, "nbf": now() + 10})),
    );
    let r = get("/a", &["-H", &bearer(&t)]);
    assert_eq!(r.status, 200, "{r:?}");

    // Refused tokens, each with its reason.
    let sign = |extra: Value| idp.sign("ec1", "ES256", "ec1", &claims("alice", extra));
    refused(
        &sign(json!({"exp": now() - 120})),
        "expired",
        "the token has expired",
    );
    refused(
        &sign(json!({"nbf": now() + 120})),
        "not_yet_valid",
        "the token is not valid yet",
    );
    refused(
        &sign(json!({"iss": "https://evil.test"})),
        "issuer",
        "the token has another issuer",
    );
    refused(
        &sign(json!({"aud": "billing"})),
        "audience",
        "the token is for another audience",
    );
    refused(
        &idp.sign("rogue", "RS256", "rsa1", &claims("alice", json!({}))),
        "signature",
        "the token's signature does not match",
    );
    refused(
        &idp.sign("", "none", "rsa1", &claims("alice", json!({}))),
        "invalid",
        "the token is malformed or not acceptable",
    );
    refused(
        &idp.sign("", "HS256", "rsa1", &claims("alice", json!({}))),
        "invalid",
        "the token is malformed or not acceptable",
    );
    refused(
        "not-a-jwt",
        "invalid",
        "the token is malformed or not acceptable",
    );

    // An authenticated consumer that the policy does not allow: 403, no challenge.
    let t = idp.sign("rsa1", "RS256", "rsa1", &claims("mallory", json!({})));
    let r = get("/a", &["-H", &bearer(&t)]);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(challenges(&r).is_empty(), "{r:?}");
    assert_eq!(auth_failures(ADMIN, "forbidden"), 1);

    // The inline provider, with its token in a query parameter.
    let t = idp.sign(
        "inl",
        "EdDSA",
        "inl",
        &claims("svc-inline", json!({"iss": "https://inline.test"})),
    );
    let r = get(&format!("/a?access_token={t}"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.seen_header("x-tollgate-consumer").as_deref(),
        Some("svc-inline")
    );

    // A new key, not yet published: unknown_kid (the JWKS is fetched again once to look).
    let t = idp.sign("ed2", "EdDSA", "ed2", &claims("alice", json!({})));
    refused(&t, "unknown_kid", "the token's signing key is not known");
    // Published: the next fetch it triggers (at most one per 5 s) finds it.
    idp.publish(&["rsa1", "ec1", "ed1", "ed2"]);
    let fetches = idp.fetches();
    wait_until("the new key", Duration::from_secs(20), || {
        get("/a", &["-H", &bearer(&t)]).status == 200
    });
    assert_eq!(jwks_metric("tollgate_jwks_keys", "idp"), Some(4));
    assert!(idp.fetches() > fetches);
    // Unknown kids do not make the gateway hammer the JWKS endpoint: a burst of them costs at
    // most one fetch (the last was just now).
    let fetches = idp.fetches();
    let t = idp.sign("rogue", "RS256", "rogue", &claims("alice", json!({})));
    for _ in 0..10 {
        let r = get("/a", &["-H", &bearer(&t)]);
        assert_eq!(r.status, 401, "{r:?}");
    }
    assert!(
        idp.fetches() <= fetches + 1,
        "{} fetches",
        idp.fetches() - fetches
    );

    // The JWKS server stops: the keys fetched stay in use; the failed fetches are counted.
    idp.dir.stop("jwks");
    wait_until("a failed JWKS fetch", Duration::from_secs(20), || {
        let _ = get("/a", &["-H", &bearer(&t)]);
        jwks_metric("tollgate_jwks_refresh_failures_total", "idp").unwrap_or(0) >= 1
    });
    for (key, alg) in [("rsa1", "RS256"), ("ed2", "EdDSA")] {
        let good = idp.sign(key, alg, key, &claims("bob", json!({})));
        let r = get("/a", &["-H", &bearer(&good)]);
        assert_eq!(r.status, 200, "{alg}: {r:?}");
    }
    assert_eq!(jwks_metric("tollgate_jwks_keys", "idp"), Some(4));

    // The access log names the consumers, never a token.
    let log = access_log(&agent);
    assert!(log.iter().any(|l| l["consumer"] == "svc-inline"), "{log:?}");
    let raw = fs::read_to_string(agent.log_path()).unwrap_or_default();
    assert!(!raw.contains(&t), "a token was logged");
}

/// The agent's secrets directory with Secret `site` (server certificate) and ConfigMap
/// `clients` (the client CA).
fn tls_secrets(dir: &Path, ca: &TestCa, clients: &TestCa) -> PathBuf {
    let secrets = dir.join("secrets");
    let (cert, key) = ca.server_cert_for("site", "secure.tls.test", "DNS:secure.tls.test");
    install_secret(&secrets, "site", &[("tls.crt", &cert), ("tls.key", &key)]);
    install_secret(&secrets, "clients", &[("ca.crt", &clients.cert)]);
    secrets
}

#[test]
fn verified_client_certificates_name_consumers() {
    require_root!();
    let lab = Lab::new("jwmtls", &[]);
    let _app = Backend::start("app", TLS_BACKEND);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "server-ca");
    let clients = TestCa::new(dir.path(), "clients-ca");
    let secrets = tls_secrets(dir.path(), &ca, &clients);
    // An HTTPS listener that verifies client certificates, and a plain HTTP one; the route is
    // on both.
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{ name: edge }}\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - {{ name: secure, port: {TLS_PROXY}, protocol: HTTPS, hostname: secure.tls.test, tls: {{ mode: Terminate, certificateRefs: [{{ kind: Secret, name: site }}] }} }}\n    - {{ name: plain, port: {PROXY}, protocol: HTTP }}\n  tls:\n    frontend:\n      default:\n        validation: {{ caCertificateRefs: [{{ group: '', kind: ConfigMap, name: clients }}] }}\n"
    );
    let policy = "apiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: { name: app-auth }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }]\n  clientCertificate: { consumerFrom: CommonName }\n  allowedConsumers: [alice]\n";
    lab.write_policy(
        "l7.yaml",
        &documents(&[
            &gateway,
            &backend_object("app", &[TLS_BACKEND], ""),
            &app_route(),
            policy,
        ]),
    );
    let secrets_arg = secrets.to_str().unwrap().to_owned();
    let _agent = start_agent(
        &lab,
        TLS_ADMIN,
        &[TLS_PROXY, PROXY],
        &["--tls-secrets-dir", &secrets_arg],
    );
    let https = |extra: &[&str]| {
        let resolve = format!("secure.tls.test:{TLS_PROXY}:127.0.0.1");
        let url = format!("https://secure.tls.test:{TLS_PROXY}/");
        let cacert = ca.cert.to_str().unwrap().to_owned();
        let mut args = vec!["--cacert", &cacert, "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    let (alice, alice_key) = clients.client_cert("alice", "alice");
    let (bob, bob_key) = clients.client_cert("bob", "bob");
    let (alice, alice_key) = (alice.to_str().unwrap(), alice_key.to_str().unwrap());
    let (bob, bob_key) = (bob.to_str().unwrap(), bob_key.to_str().unwrap());

    // alice's certificate: her CN is the consumer (a client's own header replaced), over
    // HTTP/2 and HTTP/1.1.
    for version in ["--http2", "--http1.1"] {
        let r = https(&[
            "--cert",
            alice,
            "--key",
            alice_key,
            version,
            "-H",
            "X-Tollgate-Consumer: admin",
        ]);
        assert_eq!(r.status, 200, "{version}: {r:?}");
        assert_eq!(
            r.seen_header("x-tollgate-consumer").as_deref(),
            Some("alice")
        );
    }
    // bob's is verified too, but bob is not allowed: 403 without a challenge.
    let r = https(&["--cert", bob, "--key", bob_key]);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(challenges(&r).is_empty(), "{r:?}");
    // No certificate: this listener requires one, so the TLS handshake fails (no HTTP answer).
    let r = https(&[]);
    assert_eq!(r.status, 0, "{r:?}");
    // Over plain HTTP there is never a certificate: 401 with the (informational) challenge.
    let r = curl(&[&format!("http://127.0.0.1:{PROXY}/")]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        challenges(&r),
        ["ClientCertificate realm=\"default/app\""],
        "{r:?}"
    );
    let m = metrics(TLS_ADMIN);
    for (reason, n) in [("forbidden", 1), ("missing", 1)] {
        assert_eq!(
            metric_value(
                &m,
                &format!(
                    "tollgate_auth_failures_total{{route=\"default/app\",reason=\"{reason}\"}}"
                )
            ),
            Some(n),
            "{reason}: {m}"
        );
    }
}

#[test]
fn an_https_jwks_is_verified_with_its_ca_and_a_failed_first_fetch_fails_closed() {
    require_root!();
    const PROXY: u16 = 18162;
    const ADMIN: u16 = 19765;
    const BACKEND: u16 = 19766;
    const JWKS_TLS_PORT: u16 = 19767;
    let lab = Lab::new("jwhttps", &[]);
    let _app = Backend::start("app", BACKEND);
    let mut idp = Idp::new("jwjwkstls");
    idp.keygen("ed1", "ed");
    idp.publish(&["ed1"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "idp-ca");
    let server = ca.server_cert("idp");
    let secrets = dir.path().join("secrets");
    install_secret(&secrets, "idp-ca", &[("ca.crt", &ca.cert)]);
    // Two providers of the same https JWKS: one trusts the test CA, the other only the
    // system's roots (its token goes in a query parameter).
    let uri = format!("https://127.0.0.1:{JWKS_TLS_PORT}/jwks.json");
    let policy = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{ name: app-auth }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }}]\n  jwt:\n    providers:\n      - {{ name: trusted, jwks: {{ uri: '{uri}', caCertificateRef: {{ name: idp-ca }} }} }}\n      - {{ name: untrusted, jwks: {{ uri: '{uri}' }}, extractFrom: {{ query: token }} }}\n"
    );
    lab.write_policy("l7.yaml", &app_and_free(PROXY, BACKEND, &[&policy]));
    let secrets_arg = secrets.to_str().unwrap().to_owned();
    // The JWKS server is not up yet: the revision applies all the same.
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &["--tls-secrets-dir", &secrets_arg]);
    let t = idp.sign("ed1", "EdDSA", "ed1", &claims("alice", json!({})));
    let url = format!("http://127.0.0.1:{PROXY}/a");
    let with_token = || curl(&["-H", &bearer(&t), &url]);
    // Until the keys arrive, tokens are refused (fail closed).
    let r = with_token();
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        challenges(&r),
        ["Bearer realm=\"default/app\", error=\"invalid_token\", error_description=\"the token's signing key is not known\""],
        "{r:?}"
    );
    wait_until("failed first fetches", Duration::from_secs(15), || {
        jwks_metric_at(ADMIN, "tollgate_jwks_refresh_failures_total", "trusted").unwrap_or(0) >= 1
    });
    assert_eq!(
        jwks_metric_at(ADMIN, "tollgate_jwks_keys", "trusted"),
        Some(0)
    );
    let r = with_token();
    assert_eq!(r.status, 401, "{r:?}");

    // The server comes up: the retries (or a token's refresh) fetch the keys over TLS.
    idp.serve(JWKS_TLS_PORT, Some(&server));
    wait_until("the keys over https", Duration::from_secs(40), || {
        with_token().status == 200
    });
    assert_eq!(
        jwks_metric_at(ADMIN, "tollgate_jwks_keys", "trusted"),
        Some(1)
    );
    let r = with_token();
    assert_eq!(
        r.seen_header("x-tollgate-consumer").as_deref(),
        Some("alice"),
        "{r:?}"
    );

    // Without the CA, the server's certificate is not trusted: no keys, failures counted,
    // its tokens refused.
    let before =
        jwks_metric_at(ADMIN, "tollgate_jwks_refresh_failures_total", "untrusted").unwrap_or(0);
    let query = format!("http://127.0.0.1:{PROXY}/a?token={t}");
    wait_until("an untrusted fetch", Duration::from_secs(40), || {
        let r = curl(&[&query]);
        assert_eq!(r.status, 401, "{r:?}");
        jwks_metric_at(ADMIN, "tollgate_jwks_refresh_failures_total", "untrusted").unwrap_or(0)
            > before
    });
    assert_eq!(
        jwks_metric_at(ADMIN, "tollgate_jwks_keys", "untrusted"),
        Some(0)
    );
}
