//! Authentication by the proxy (`AuthPolicy`), in process: API keys in a header and in a query
//! parameter (key files made from SHA-256 of salt and key), basic auth against an htpasswd file
//! made with the `bcrypt` crate, JWTs signed in the test (EdDSA and ES256 with ring's keys) against
//! an inline JWKS and one served over HTTP, client certificates made with rcgen on an HTTPS
//! listener; 401 with its `WWW-Authenticate` challenges, 403 for consumers not allowed, the
//! consumer sent to the backend (a client's own copy dropped), and the failure metric.
mod harness;

use std::time::{Duration, Instant};

use base64::Engine;
use harness::client::Tls;
use harness::pki::Ca;
use harness::yaml::{app_and_free, backend, documents, policy, route, to};
use harness::{Backend, Gateway, Options, Reply, Secrets};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair;
use serde_json::{json, Value};

fn failures(gw: &Gateway, route: &str, reason: &str) -> u64 {
    gw.count(&format!(
        "tollgate_auth_failures_total{{route=\"{route}\",reason=\"{reason}\"}}"
    ))
}

#[tokio::test]
async fn api_keys_in_a_header_or_query_and_basic_auth_name_the_consumer_or_get_401_or_403() {
    let app = Backend::start("app").await;
    let secrets = Secrets::new();
    secrets.api_keys("keys", &[("app-1", "k3y-0ne"), ("app-2", "k3y-tw0")]);
    secrets.htpasswd("users", &[("alice", "pa55"), ("bob", "b0b")]);
    let header_auth = policy(
        "AuthPolicy",
        "app-auth",
        "app",
        "  apiKey: { header: X-Api-Key, credentialRefs: [{ name: keys }] }\n  basicAuth: { credentialRefs: [{ name: users }] }\n  allowedConsumers: [app-1, alice]\n",
    );
    let by_query = route(
        "byquery",
        &format!(
            "  rules:\n    - matches: [{{ path: {{ value: /q }} }}]\n      backendRefs: [{}]\n",
            to("app")
        ),
    );
    let query_auth = policy(
        "AuthPolicy",
        "query-auth",
        "byquery",
        "  apiKey: { query: api_key, credentialRefs: [{ name: keys }] }\n",
    );
    let options = Options {
        secrets: Some(secrets),
        ..Options::default()
    };
    let gw = Gateway::start_with(options, |p| {
        app_and_free(p[0], app.port(), &[&header_auth, &by_query, &query_auth])
    })
    .await;
    let challenges = [
        "ApiKey realm=\"default/app\", header=\"x-api-key\"",
        "Basic realm=\"default/app\", charset=\"UTF-8\"",
    ];

    // No credentials, a wrong key, a wrong password: 401 with a challenge for each method,
    // and nothing reaches the backend.
    for (what, req) in [
        ("none", gw.get("/a")),
        ("wrong key", gw.get("/a").header("x-api-key", "k3y-0ne-not")),
        ("wrong password", gw.get("/a").basic_auth("alice", "wrong")),
        ("unknown user", gw.get("/a").basic_auth("mallory", "pa55")),
    ] {
        let r = req.send().await;
        assert_eq!(r.status, 401, "{what}: {r:?}");
        assert_eq!(r.all("www-authenticate"), challenges, "{what}: {r:?}");
    }
    assert_eq!(app.count(), 0);
    assert_eq!(failures(&gw, "default/app", "missing"), 1);
    assert_eq!(failures(&gw, "default/app", "invalid"), 3);

    // The right key, the right password: the backend hears the consumer, not the client's
    // claim, nor its underscore twins of the proxy's fields (which CGI and WSGI servers read
    // as the same variable: `HTTP_X_TOLLGATE_CONSUMER`, `HTTP_X_FORWARDED_FOR`).
    let r = gw
        .get("/a")
        .header("x-api-key", "k3y-0ne")
        .header("x-tollgate-consumer", "admin")
        .header("x_tollgate_consumer", "admin")
        .header("x_forwarded_for", "6.6.6.6")
        .header("my_header", "kept")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = app.last();
    assert_eq!(seen.header("x-tollgate-consumer").as_deref(), Some("app-1"));
    assert_eq!(seen.header("x_tollgate_consumer"), None, "{seen:?}");
    assert_eq!(seen.header("x_forwarded_for"), None, "{seen:?}");
    assert_eq!(seen.header("my_header").as_deref(), Some("kept"));
    let r = gw.get("/a").basic_auth("alice", "pa55").h2().send().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        app.last().header("x-tollgate-consumer").as_deref(),
        Some("alice")
    );
    // A `Connection` naming the consumer header does not take the proxy's own off the request
    // (RFC 9110 section 7.6.1: a proxy removes the options it received, not the fields it
    // set); the client's own fields it names still go.
    let r = gw
        .get("/a")
        .header("x-api-key", "k3y-0ne")
        .header("connection", "X-Tollgate-Consumer, x-mine")
        .header("x-mine", "1")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = app.last();
    assert_eq!(seen.header("x-tollgate-consumer").as_deref(), Some("app-1"));
    assert_eq!(seen.header("x-mine"), None);

    // Authenticated but not in allowedConsumers: 403 without a challenge.
    for req in [
        gw.get("/a").header("x-api-key", "k3y-tw0"),
        gw.get("/a").basic_auth("bob", "b0b"),
    ] {
        let r = req.send().await;
        assert_eq!(r.status, 403, "{r:?}");
        assert!(r.all("www-authenticate").is_empty(), "{r:?}");
    }
    assert_eq!(failures(&gw, "default/app", "forbidden"), 2);
    assert_eq!(app.count(), 3);

    // The key in a query parameter on the other route; there, a header is no credential.
    let r = gw.get("/q?api_key=k3y-tw0&x=1").send().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        app.last().header("x-tollgate-consumer").as_deref(),
        Some("app-2")
    );
    let r = gw.get("/q").header("x-api-key", "k3y-tw0").send().await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.all("www-authenticate"),
        ["ApiKey realm=\"default/byquery\", query=\"api_key\""]
    );
    let r = gw.get("/q?api_key=nope").send().await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(failures(&gw, "default/byquery", "missing"), 1);
    assert_eq!(failures(&gw, "default/byquery", "invalid"), 1);

    // A route without a policy is open, and a client's consumer header never passes.
    let r = gw
        .get("/free")
        .header("x-tollgate-consumer", "admin")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.last().header("x-tollgate-consumer"), None);
    assert_eq!(
        gw.count("tollgate_http_requests_total{route=\"default/app\",method=\"GET\",code=\"401\"}"),
        4
    );
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A signing key made with ring and its JWK.
struct Key {
    encoding: EncodingKey,
    alg: Algorithm,
    jwk: Value,
}

impl Key {
    fn ed25519(kid: &str) -> Key {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Key {
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            alg: Algorithm::EdDSA,
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
                        "x": b64(pair.public_key().as_ref())}),
        }
    }

    fn p256(kid: &str) -> Key {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        // The uncompressed point: 0x04, x, y.
        let point = pair.public_key().as_ref();
        Key {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            alg: Algorithm::ES256,
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                        "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
        }
    }

    /// A token with header `kid` and `claims`.
    fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
    }
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims of a good token for `sub`, with `extra` merged (a null removes a claim).
fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({"sub": sub, "iss": "https://idp.test", "aud": ["orders", "other"],
                       "exp": now() + 300, "tenant": "acme"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// A refused token: 401, the RFC 6750 challenge with `description`, `reason` counted.
async fn refused(gw: &Gateway, token: &str, reason: &str, description: &str) {
    let before = failures(gw, "default/app", reason);
    let r = gw.get("/a").bearer(token).send().await;
    assert_eq!(r.status, 401, "{reason}: {r:?}");
    assert_eq!(
        r.all("www-authenticate"),
        [format!(
            "Bearer realm=\"default/app\", error=\"invalid_token\", error_description=\"{description}\""
        )],
        "{reason}: {r:?}"
    );
    assert_eq!(failures(gw, "default/app", reason), before + 1, "{reason}");
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn jwts_signed_in_the_test_are_checked_against_inline_and_served_jwks() {
    let app = Backend::start("app").await;
    let ed = Key::ed25519("ed1");
    let ec = Key::p256("ec1");
    let rogue = Key::ed25519("ed1");
    let remote = Key::ed25519("remote1");
    let idp = Backend::start("idp").await;
    idp.serve_body(
        json!({"keys": [remote.jwk]}).to_string(),
        "application/json",
    );
    let inline = json!({"keys": [ed.jwk, ec.jwk]});
    let auth = policy(
        "AuthPolicy",
        "app-auth",
        "app",
        &format!(
            "  jwt:\n    providers:\n      - name: local\n        issuer: https://idp.test\n        audiences: [orders]\n        jwks: {{ inline: '{inline}' }}\n        claimToHeaders: [{{ claim: tenant, header: X-Tenant }}]\n        clockSkew: 30s\n  allowedConsumers: [alice, bob, svc]\n"
        ),
    );
    let remote_route = route(
        "remote",
        &format!(
            "  rules:\n    - matches: [{{ path: {{ value: /remote }} }}]\n      backendRefs: [{}]\n",
            to("app")
        ),
    );
    let remote_auth = policy(
        "AuthPolicy",
        "remote-auth",
        "remote",
        &format!(
            "  jwt:\n    providers:\n      - {{ name: served, jwks: {{ uri: 'http://127.0.0.1:{}/jwks.json' }}, extractFrom: {{ query: access_token }} }}\n",
            idp.port()
        ),
    );
    let gw = Gateway::start(|p| app_and_free(p, app.port(), &[&auth, &remote_route, &remote_auth]))
        .await;

    // No token: a plain Bearer challenge.
    let r = gw.get("/a").send().await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.all("www-authenticate"), ["Bearer realm=\"default/app\""]);
    assert_eq!(failures(&gw, "default/app", "missing"), 1);

    // A good token of each algorithm: the consumer and the claim reach the backend, the
    // client's copies of their headers do not.
    for (key, kid, sub) in [(&ed, "ed1", "alice"), (&ec, "ec1", "bob")] {
        let r = gw
            .get("/a")
            .bearer(&key.sign(kid, &claims(sub, json!({}))))
            .header("x-tenant", "evil")
            .header("x-tollgate-consumer", "admin")
            .send()
            .await;
        assert_eq!(r.status, 200, "{kid}: {r:?}");
        let seen = app.last();
        assert_eq!(seen.header("x-tollgate-consumer").as_deref(), Some(sub));
        assert_eq!(seen.header("x-tenant").as_deref(), Some("acme"));
    }
    // Nor can a `Connection` naming them take the consumer and claim headers off.
    let r = gw
        .get("/a")
        .bearer(&ed.sign("ed1", &claims("alice", json!({}))))
        .header("connection", "x-tenant, x-tollgate-consumer")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = app.last();
    assert_eq!(seen.header("x-tollgate-consumer").as_deref(), Some("alice"));
    assert_eq!(seen.header("x-tenant").as_deref(), Some("acme"));
    // Without the claim, a client's copy of its header still does not pass.
    let t = ed.sign("ed1", &claims("alice", json!({"tenant": null})));
    let r = gw
        .get("/a")
        .bearer(&t)
        .header("x-tenant", "evil")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.last().header("x-tenant"), None);
    // Within the clock skew (30 s) is still good.
    let t = ec.sign(
        "ec1",
        &claims("alice", json!({"exp": now() - 10, "nbf": now() + 10})),
    );
    assert_eq!(gw.get("/a").bearer(&t).send().await.status, 200);

    // Refused tokens, each with its reason.
    let sign = |extra: Value| ed.sign("ed1", &claims("alice", extra));
    refused(
        &gw,
        &sign(json!({"exp": now() - 120})),
        "expired",
        "the token has expired",
    )
    .await;
    refused(
        &gw,
        &sign(json!({"nbf": now() + 120})),
        "not_yet_valid",
        "the token is not valid yet",
    )
    .await;
    refused(
        &gw,
        &sign(json!({"iss": "https://evil.test"})),
        "issuer",
        "the token has another issuer",
    )
    .await;
    refused(
        &gw,
        &sign(json!({"aud": "billing"})),
        "audience",
        "the token is for another audience",
    )
    .await;
    refused(
        &gw,
        &rogue.sign("ed1", &claims("alice", json!({}))),
        "signature",
        "the token's signature does not match",
    )
    .await;
    refused(
        &gw,
        &ed.sign("nobody", &claims("alice", json!({}))),
        "unknown_kid",
        "the token's signing key is not known",
    )
    .await;
    // `alg: none`, a shared-secret algorithm under a known kid, and garbage: invalid.
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": "ed1"})
            .to_string()
            .as_bytes()),
        b64(claims("alice", json!({})).to_string().as_bytes())
    );
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("ed1".into());
    let hs256 = jsonwebtoken::encode(
        &hs,
        &claims("alice", json!({})),
        &EncodingKey::from_secret(b"a-shared-secret-of-32-bytes!!!!!"),
    )
    .unwrap();
    for t in [none.as_str(), hs256.as_str(), "not-a-jwt"] {
        refused(
            &gw,
            t,
            "invalid",
            "the token is malformed or not acceptable",
        )
        .await;
    }
    // Authenticated, not allowed: 403 without a challenge.
    let r = gw
        .get("/a")
        .bearer(&ed.sign("ed1", &claims("mallory", json!({}))))
        .send()
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.all("www-authenticate").is_empty(), "{r:?}");

    // The JWKS served over HTTP is fetched off the request path; the token goes in a query
    // parameter there.
    let gauge = "tollgate_jwks_keys{policy=\"default/remote-auth\",provider=\"served\"}";
    wait_for("the JWKS fetch", || gw.metric(gauge) == Some(1.0)).await;
    assert!(idp.received().iter().all(|r| r.target == "/jwks.json"));
    let t = remote.sign("remote1", &json!({"sub": "svc", "exp": now() + 60}));
    let r = gw.get(&format!("/remote?access_token={t}")).send().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        app.last().header("x-tollgate-consumer").as_deref(),
        Some("svc")
    );
    // A token of the inline provider is no good there.
    let r = gw
        .get(&format!(
            "/remote?access_token={}",
            ed.sign("ed1", &claims("alice", json!({})))
        ))
        .send()
        .await;
    assert_eq!(r.status, 401, "{r:?}");
}

#[tokio::test]
async fn verified_client_certificates_name_consumers_on_an_https_listener() {
    let app = Backend::start("app").await;
    let server_ca = Ca::new("server-ca");
    let clients = Ca::new("clients-ca");
    let other = Ca::new("other-ca");
    let secrets = Secrets::new();
    secrets.tls("site", &server_ca.server("secure.tls.test"));
    secrets.ca("clients", &clients.cert);
    let options = Options {
        ports: 2,
        secrets: Some(secrets),
        ..Options::default()
    };
    let gw = Gateway::start_with(options, |p| {
        let gateway = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{ name: edge }}\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - {{ name: secure, port: {}, protocol: HTTPS, hostname: secure.tls.test, tls: {{ mode: Terminate, certificateRefs: [{{ kind: Secret, name: site }}] }} }}\n    - {{ name: plain, port: {}, protocol: HTTP }}\n  tls:\n    frontend:\n      default:\n        validation: {{ caCertificateRefs: [{{ group: '', kind: ConfigMap, name: clients }}] }}\n",
            p[0], p[1]
        );
        let auth = policy(
            "AuthPolicy",
            "app-auth",
            "app",
            "  clientCertificate: { consumerFrom: CommonName }\n  allowedConsumers: [alice]\n",
        );
        documents(&[
            &gateway,
            &backend("app", &[app.port()], ""),
            &route("app", &format!("  rules:\n    - backendRefs: [{}]\n", to("app"))),
            &auth,
        ])
    })
    .await;
    let (secure, plain) = (gw.ports[0], gw.ports[1]);
    let tls = Tls::new(&server_ca.cert, "secure.tls.test");
    let https = |tls: &Tls| {
        harness::Request::new(secure, "GET", "/")
            .host("secure.tls.test")
            .tls(tls)
    };
    let alice = clients.client("alice");
    let bob = clients.client("bob");

    // alice's certificate: her CN is the consumer (a client's own header replaced), over
    // HTTP/2 and HTTP/1.1 (ALPN).
    for h2 in [false, true] {
        let mut req = https(&tls.clone().identity(&alice.cert, &alice.key))
            .header("x-tollgate-consumer", "admin");
        if h2 {
            req = req.h2();
        }
        let r: Reply = req.send().await;
        assert_eq!(r.status, 200, "h2 {h2}: {r:?}");
        assert_eq!(
            r.version,
            if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        assert_eq!(
            app.last().header("x-tollgate-consumer").as_deref(),
            Some("alice")
        );
        assert_eq!(
            app.last().header("x-forwarded-proto").as_deref(),
            Some("https")
        );
    }
    // bob is verified but not allowed: 403 without a challenge.
    let r = https(&tls.clone().identity(&bob.cert, &bob.key))
        .send()
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.all("www-authenticate").is_empty(), "{r:?}");
    // No certificate, or one of another CA: the handshake fails, no HTTP answer.
    let stranger = other.client("alice");
    for (what, t) in [
        ("no certificate", tls.clone()),
        (
            "another CA",
            tls.clone().identity(&stranger.cert, &stranger.key),
        ),
    ] {
        let r = https(&t).try_send().await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    let handshakes = "tollgate_http_tls_handshake_failures_total{reason=\"client_certificate\"}";
    wait_for("the failed handshakes counted", || {
        gw.count(handshakes) == 2
    })
    .await;
    // Over plain HTTP there is never a certificate: 401 with the informational challenge.
    let r = harness::Request::new(plain, "GET", "/").send().await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.all("www-authenticate"),
        ["ClientCertificate realm=\"default/app\""]
    );
    assert_eq!(failures(&gw, "default/app", "forbidden"), 1);
    assert_eq!(failures(&gw, "default/app", "missing"), 1);
    assert_eq!(app.count(), 2);
}
