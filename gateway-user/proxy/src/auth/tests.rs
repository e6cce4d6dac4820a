//! Authentication of requests through every method of a policy, from files on disk.
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use super::*;
use tollgate_compile::l7::table::{KeyLocation, SecretRef};
use tollgate_compile::l7::RouteTable;

/// A key line as the documented shell recipe makes it.
fn key_line(consumer: &str, salt: &[u8], key: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(key.as_bytes());
    format!(
        "{consumer}:sha256:{}:{}",
        hex::encode(salt),
        hex::encode(h.finalize())
    )
}

/// The consumer `rt` finds in a request with `headers` and `query`, or why not.
async fn check(
    rt: &AuthRuntime,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Arc<str>, Failure> {
    let req = Request {
        headers,
        query,
        client_certificate: None,
    };
    authenticate(rt, &req).await.map(|a| a.consumer)
}

fn policy(api: Option<KeyLocation>, basic: bool) -> AuthDef {
    let s = |name: &str| SecretRef {
        namespace: "shop".into(),
        name: name.into(),
    };
    AuthDef {
        policy: "shop/auth".into(),
        api_key: api.map(|location| tollgate_compile::l7::table::ApiKeyDef {
            location,
            files: vec![s("keys")],
        }),
        basic: if basic { vec![s("users")] } else { vec![] },
        jwt: vec![],
        client_certificate: None,
        allowed_consumers: None,
    }
}

fn table_with(def: AuthDef) -> RouteTable {
    let mut t = RouteTable::default();
    t.policy.auth.push(def);
    t
}

#[tokio::test]
async fn requests_authenticate_by_header_query_or_basic_and_files_reload() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("shop/keys/keys");
    let users = dir.path().join("shop/users/htpasswd");
    std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
    std::fs::create_dir_all(users.parent().unwrap()).unwrap();
    std::fs::write(&keys, key_line("app-1", b"0123456789", "good-key")).unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();

    let store = AuthStore::new(dir.path().to_owned());
    let header = HeaderName::from_static("x-api-key");
    let def = policy(Some(KeyLocation::Header(header.clone())), true);
    let rt = store.load(&table_with(def.clone())).unwrap().remove(0);
    let with = |name: &str, value: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    };
    let auth = |h: HeaderMap, q: Option<&'static str>| {
        let rt = rt.clone();
        async move { check(&rt, &h, q).await }
    };
    assert_eq!(auth(HeaderMap::new(), None).await, Err(Failure::Missing));
    assert_eq!(
        auth(with("x-api-key", ""), None).await,
        Err(Failure::Missing)
    );
    assert_eq!(
        auth(with("x-api-key", "bad"), None).await,
        Err(Failure::Invalid)
    );
    assert_eq!(
        auth(with("x-api-key", "good-key"), None).await.as_deref(),
        Ok("app-1")
    );
    // alice:pw
    assert_eq!(
        auth(with("authorization", "Basic YWxpY2U6cHc="), None)
            .await
            .as_deref(),
        Ok("alice")
    );
    // Two credentials of one kind: refused, whichever comes first (a backend reading the
    // other would act for another consumer than was checked).
    for (name, good, bad) in [
        ("x-api-key", "good-key", "bad"),
        ("authorization", "Basic YWxpY2U6cHc=", "Basic Ym9iOnB3"),
    ] {
        for (first, second) in [(good, bad), (bad, good), (good, good)] {
            let mut h = with(name, first);
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                second.parse().unwrap(),
            );
            assert_eq!(
                auth(h, None).await,
                Err(Failure::Invalid),
                "{name}: {first}, {second}"
            );
        }
    }
    // alice:px, and an unknown user
    assert_eq!(
        auth(with("authorization", "Basic YWxpY2U6cHg="), None).await,
        Err(Failure::Invalid)
    );
    assert_eq!(
        auth(with("authorization", "Basic Ym9iOnB3"), None).await,
        Err(Failure::Invalid)
    );

    // A query parameter.
    let qdef = policy(Some(KeyLocation::Query("api_key".into())), false);
    let qrt = store.load(&table_with(qdef.clone())).unwrap().remove(0);
    let q = |query: &'static str| {
        let r = qrt.clone();
        async move { check(&r, &HeaderMap::new(), Some(query)).await }
    };
    assert_eq!(q("a=1&api_key=good-key").await.as_deref(), Ok("app-1"));
    assert_eq!(q("a=1").await, Err(Failure::Missing));
    // Basic credentials are not looked at when the policy has no basicAuth.
    assert_eq!(
        check(&qrt, &with("authorization", "Basic YWxpY2U6cHc="), None).await,
        Err(Failure::Missing)
    );

    // A changed file is reloaded; a bad one keeps the keys loaded before.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&keys, key_line("app-2", b"abcdefghij", "new-key")).unwrap();
    assert!(store.check().is_empty());
    assert_eq!(
        auth(with("x-api-key", "new-key"), None).await.as_deref(),
        Ok("app-2")
    );
    assert_eq!(
        auth(with("x-api-key", "good-key"), None).await,
        Err(Failure::Invalid)
    );
    // A remembered basic credential stops working once the user's hash changes.
    assert_eq!(
        auth(with("authorization", "Basic YWxpY2U6cHc="), None)
            .await
            .as_deref(),
        Ok("alice")
    );
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        &users,
        format!("alice:{}\n", bcrypt::hash("pw2", 4).unwrap()),
    )
    .unwrap();
    assert!(store.check().is_empty());
    assert_eq!(
        auth(with("authorization", "Basic YWxpY2U6cHc="), None).await,
        Err(Failure::Invalid)
    );
    // alice:pw2
    assert_eq!(
        auth(with("authorization", "Basic YWxpY2U6cHcy"), None)
            .await
            .as_deref(),
        Ok("alice")
    );

    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&keys, "clear-key-oops\n").unwrap();
    assert_eq!(store.check(), vec![keys.clone()]);
    assert_eq!(
        auth(with("x-api-key", "new-key"), None).await.as_deref(),
        Ok("app-2")
    );
}

#[test]
fn a_missing_or_bad_file_refuses_the_revision_naming_the_policy_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = AuthStore::new(dir.path().to_owned());
    let def = policy(Some(KeyLocation::Query("k".into())), false);
    let e = store
        .load(&table_with(def.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("AuthPolicy shop/auth: cannot read "), "{e}");
    assert!(e.contains("shop/keys/keys"), "{e}");
    let keys = dir.path().join("shop/keys/keys");
    std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
    std::fs::write(&keys, "a:sha256:00:00\n").unwrap();
    let e = store.load(&table_with(def)).err().unwrap().to_string();
    assert!(
        e.contains("shop/keys/keys line 1: the salt is shorter"),
        "{e}"
    );
}

#[test]
fn challenges_name_the_route_and_where_the_key_goes() {
    let def = policy(
        Some(KeyLocation::Header(HeaderName::from_static("x-api-key"))),
        true,
    );
    let rt = AuthRuntime::new(Method::of(&def));
    assert_eq!(
        challenges(&rt, "shop/orders", Failure::Missing),
        [
            "ApiKey realm=\"shop/orders\", header=\"x-api-key\"",
            "Basic realm=\"shop/orders\", charset=\"UTF-8\""
        ]
    );
}

async fn consumer(rt: &AuthRuntime, req: Request<'_>) -> Result<Arc<str>, Failure> {
    authenticate(rt, &req).await.map(|a| a.consumer)
}

fn all_methods() -> AuthDef {
    let mut def = policy(
        Some(KeyLocation::Header(HeaderName::from_static("x-api-key"))),
        true,
    );
    def.client_certificate = Some(tollgate_model::auth::CertificateField::CommonName);
    def.jwt = vec![tollgate_compile::l7::table::JwtProviderDef {
        name: "idp".into(),
        issuer: Some("https://idp.test".into()),
        audiences: vec![],
        jwks: tollgate_compile::l7::table::JwksDef::Inline(r#"{"keys": []}"#.into()),
        consumer_claim: "sub".into(),
        claim_headers: vec![],
        location: tollgate_compile::l7::table::TokenLocation::Bearer,
        clock_skew: Duration::from_secs(60),
    }];
    def
}

#[test]
fn each_method_describes_itself_in_declaration_order() {
    assert_eq!(
        describe(&all_methods()),
        [
            "an API key in header x-api-key (keys of shop/keys)",
            "basic auth (users of shop/users)",
            "a JWT of provider idp, issuer https://idp.test (consumer from claim sub)",
            "a verified client certificate (consumer from CommonName)",
        ]
    );
    let rt = AuthRuntime::new(Method::of(&all_methods()));
    assert_eq!(
        challenges(&rt, "r", Failure::Token(TokenFailure::Expired)),
        [
            "ApiKey realm=\"r\", header=\"x-api-key\"",
            "Basic realm=\"r\", charset=\"UTF-8\"",
            "Bearer realm=\"r\", error=\"invalid_token\", error_description=\"the token has expired\"",
            "ClientCertificate realm=\"r\"",
        ]
    );
}

#[tokio::test]
async fn the_cheapest_method_names_the_consumer_and_the_most_telling_failure_wins() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("shop/keys/keys");
    let users = dir.path().join("shop/users/htpasswd");
    std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
    std::fs::create_dir_all(users.parent().unwrap()).unwrap();
    std::fs::write(&keys, key_line("key-app", b"0123456789", "good-key")).unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
    let mut def = all_methods();
    def.jwt.clear(); // an inline JWKS without keys is the compiler's to refuse
    let store = AuthStore::new(dir.path().to_owned());
    let rt = store.load(&table_with(def)).unwrap().remove(0);

    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", "good-key".parse().unwrap());
    headers.insert("authorization", "Basic YWxpY2U6cHc=".parse().unwrap());
    let cert = PeerCertificate {
        common_name: Some("cert-app".into()),
        ..PeerCertificate::default()
    };
    let mut req = Request {
        headers: &headers,
        query: None,
        client_certificate: Some(&cert),
    };
    // All three valid: the certificate (no work), then the key, then the password.
    assert_eq!(consumer(&rt, req).await.as_deref(), Ok("cert-app"));
    req.client_certificate = None;
    assert_eq!(consumer(&rt, req).await.as_deref(), Ok("key-app"));
    let mut only_basic = headers.clone();
    only_basic.insert("x-api-key", "bad-key".parse().unwrap());
    req.headers = &only_basic;
    assert_eq!(consumer(&rt, req).await.as_deref(), Ok("alice"));
    // A certificate without a usable name and a wrong key: invalid.
    let nameless = PeerCertificate::default();
    let mut bad = HeaderMap::new();
    bad.insert("x-api-key", "bad-key".parse().unwrap());
    req.headers = &bad;
    req.client_certificate = Some(&nameless);
    assert_eq!(consumer(&rt, req).await, Err(Failure::Invalid));
    // A password longer than the cap is invalid, whatever the user.
    use base64::Engine;
    let long = base64::engine::general_purpose::STANDARD
        .encode(format!("alice:{}", "p".repeat(basic::MAX_BASIC_BYTES)));
    let mut too_long = HeaderMap::new();
    too_long.insert("authorization", format!("Basic {long}").parse().unwrap());
    req.headers = &too_long;
    req.client_certificate = None;
    assert_eq!(consumer(&rt, req).await, Err(Failure::Invalid));

    // Failures of several methods: busy, then a refused token, then invalid.
    let token = Failure::Token(TokenFailure::Expired);
    assert_eq!(Failure::Invalid.most_telling(token), token);
    assert_eq!(token.most_telling(Failure::Invalid), token);
    assert_eq!(token.most_telling(Failure::Busy), Failure::Busy);
    assert_eq!(
        token.most_telling(Failure::Token(TokenFailure::Signature)),
        token
    );
}
