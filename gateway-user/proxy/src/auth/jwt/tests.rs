use super::*;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use ring::signature::KeyPair;
use serde_json::json;

/// An Ed25519 key: its signing key and its JWKS entry.
fn ed25519(kid: &str) -> (EncodingKey, serde_json::Value) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    (
        EncodingKey::from_ed_der(pkcs8.as_ref()),
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x, "use": "sig"}),
    )
}

fn provider(jwks: &serde_json::Value) -> JwtProviderDef {
    JwtProviderDef {
        name: "idp".into(),
        issuer: Some("https://idp.test".into()),
        audiences: vec!["orders".into()],
        jwks: JwksDef::Inline(jwks.to_string().into()),
        consumer_claim: "sub".into(),
        claim_headers: vec![
            ("tenant".into(), HeaderName::from_static("x-tenant")),
            ("level".into(), HeaderName::from_static("x-level")),
            ("groups".into(), HeaderName::from_static("x-groups")),
        ],
        location: TokenLocation::Bearer,
        clock_skew: Duration::from_secs(60),
    }
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn sign(key: &EncodingKey, kid: Option<&str>, claims: serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c =
        json!({"sub": "alice", "iss": "https://idp.test", "aud": "orders", "exp": now() + 300});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn store() -> JwksStore {
    JwksStore::new(PathBuf::from("/nonexistent"), JwksMetrics::default())
}

#[tokio::test]
async fn tokens_are_checked_and_claims_mapped() {
    let (key, jwk) = ed25519("k1");
    let def = provider(&json!({"keys": [jwk]}));
    let jwks = store().get("default/p", &def).unwrap();
    let ok = sign(
        &key,
        Some("k1"),
        claims(json!({"tenant": "acme", "level": 3, "groups": ["a"]})),
    );
    let v = verify(&def, &jwks, &ok).await.unwrap();
    assert_eq!(&*v.consumer, "alice");
    // Strings as they are, numbers as JSON, arrays not sent.
    assert_eq!(
        v.headers,
        [
            (
                HeaderName::from_static("x-tenant"),
                HeaderValue::from_static("acme")
            ),
            (
                HeaderName::from_static("x-level"),
                HeaderValue::from_static("3")
            ),
        ]
    );
    let check = |c: serde_json::Value, kid: Option<&'static str>| {
        let t = sign(&key, kid, c);
        let (def, jwks) = (def.clone(), jwks.clone());
        async move { verify(&def, &jwks, &t).await.map(|v| v.consumer) }
    };
    assert_eq!(check(claims(json!({})), None).await.as_deref(), Ok("alice"));
    assert_eq!(
        check(claims(json!({"iss": "https://other"})), Some("k1")).await,
        Err(TokenFailure::Issuer)
    );
    assert_eq!(
        check(claims(json!({"iss": null})), Some("k1")).await,
        Err(TokenFailure::Issuer)
    );
    assert_eq!(
        check(claims(json!({"aud": ["billing", "x"]})), Some("k1")).await,
        Err(TokenFailure::Audience)
    );
    assert_eq!(
        check(claims(json!({"aud": ["billing", "orders"]})), Some("k1"))
            .await
            .as_deref(),
        Ok("alice")
    );
    assert_eq!(
        check(claims(json!({"exp": null})), Some("k1")).await,
        Err(TokenFailure::Invalid)
    );
    // Registered claims of the wrong type: refused, not read as absent.
    for (wrong, failure) in [
        (json!({"nbf": "x"}), TokenFailure::Invalid),
        (json!({"iat": "yesterday"}), TokenFailure::Invalid),
        (
            json!({"iss": ["https://evil", "https://idp.test"]}),
            TokenFailure::Issuer,
        ),
    ] {
        assert_eq!(
            check(claims(wrong.clone()), Some("k1")).await,
            Err(failure),
            "{wrong}"
        );
    }
    // A header naming critical extensions, which the gateway implements none of.
    for crit in [json!(["exp-x"]), json!(["b64"]), json!([])] {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("k1".into());
        let signing_input = {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut header = serde_json::to_value(&h).unwrap();
            header["crit"] = crit.clone();
            header["exp-x"] = json!(1);
            header["b64"] = json!(false);
            format!(
                "{}.{}",
                b64.encode(serde_json::to_vec(&header).unwrap()),
                b64.encode(serde_json::to_vec(&claims(json!({}))).unwrap())
            )
        };
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::EdDSA).unwrap();
        let token = format!("{signing_input}.{signature}");
        assert_eq!(
            verify(&def, &jwks, &token).await.map(|v| v.consumer),
            Err(TokenFailure::Invalid),
            "crit {crit}"
        );
    }
    assert_eq!(
        check(claims(json!({"sub": "bad id"})), Some("k1")).await,
        Err(TokenFailure::Invalid)
    );
    assert_eq!(
        check(claims(json!({"sub": 42})), Some("k1")).await,
        Err(TokenFailure::Invalid)
    );
    assert_eq!(
        check(claims(json!({})), Some("k2")).await,
        Err(TokenFailure::UnknownKid)
    );
    // Another key with the same kid: the signature does not match.
    let (other, _) = ed25519("k1");
    let forged = sign(&other, Some("k1"), claims(json!({})));
    assert_eq!(
        verify(&def, &jwks, &forged).await,
        Err(TokenFailure::Signature)
    );
    // alg none and HS256 are refused, as is garbage.
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "k1"})),
        b64(claims(json!({})))
    );
    assert_eq!(verify(&def, &jwks, &none).await, Err(TokenFailure::Invalid));
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"k1"),
    )
    .unwrap();
    assert_eq!(verify(&def, &jwks, &hs).await, Err(TokenFailure::Invalid));
    // An EdDSA key named by a token that says ES256.
    let es = format!(
        "{}.{}.AAAA",
        b64(json!({"alg": "ES256", "kid": "k1"})),
        b64(claims(json!({})))
    );
    assert_eq!(verify(&def, &jwks, &es).await, Err(TokenFailure::Invalid));
    assert_eq!(
        verify(&def, &jwks, "not.a.token").await,
        Err(TokenFailure::Invalid)
    );
    assert_eq!(
        verify(&def, &jwks, &"a".repeat(MAX_TOKEN_BYTES + 1)).await,
        Err(TokenFailure::Invalid)
    );
}

#[tokio::test]
async fn clock_skew_widens_exp_and_nbf_by_its_seconds_only() {
    let (key, jwk) = ed25519("k1");
    for (skew, exp_delta, nbf_delta, want) in [
        (60, -30, None, Ok(())),
        (60, -90, None, Err(TokenFailure::Expired)),
        (60, 300, Some(30), Ok(())),
        (60, 300, Some(90), Err(TokenFailure::NotYetValid)),
        (0, -2, None, Err(TokenFailure::Expired)),
        (0, 300, Some(5), Err(TokenFailure::NotYetValid)),
        (300, -290, Some(290), Ok(())),
    ] {
        let mut def = provider(&json!({"keys": [jwk]}));
        def.clock_skew = Duration::from_secs(skew);
        let jwks = store().get("default/p", &def).unwrap();
        let mut c = claims(json!({"exp": now() + exp_delta}));
        if let Some(n) = nbf_delta {
            c["nbf"] = json!(now() + n);
        }
        let got = verify(&def, &jwks, &sign(&key, Some("k1"), c))
            .await
            .map(|_| ());
        assert_eq!(got, want, "skew {skew}, exp {exp_delta}, nbf {nbf_delta:?}");
    }
}

#[test]
fn jwks_keep_only_usable_signing_keys() {
    let (_, ed) = ed25519("ed");
    let set = parse_jwks(
        json!({"keys": [
            ed,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "alg": "RS256"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "n": "sXch", "e": "AQAB", "alg": "RSA-OAEP"},
            {"kty": "weird"}
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.keys[0].kid.as_deref(), Some("ed"));
    assert!(parse_jwks(b"{\"keys\": []}")
        .err()
        .unwrap()
        .contains("no usable key"));
    assert!(parse_jwks(b"[]").err().unwrap().contains("no \"keys\""));
    assert!(parse_jwks(b"{\"secret\": 1")
        .err()
        .unwrap()
        .starts_with("not JSON"));
    let many: Vec<_> = (0..100).map(|i| ed25519(&format!("k{i}")).1).collect();
    let set = parse_jwks(json!({ "keys": many }).to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), MAX_JWKS_KEYS);
}

#[test]
fn tokens_are_taken_from_where_the_provider_says() {
    let mut def = provider(&json!({"keys": []}));
    let mut h = http::HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer abc.def.ghi"),
    );
    h.insert("x-token", HeaderValue::from_static("bearer t2"));
    assert_eq!(token(&def, &h, None).as_deref(), Some("abc.def.ghi"));
    def.location = TokenLocation::Header(HeaderName::from_static("x-token"));
    assert_eq!(token(&def, &h, None).as_deref(), Some("t2"));
    def.location = TokenLocation::Query("access_token".into());
    assert_eq!(
        token(&def, &h, Some("a=1&access_token=t3")).as_deref(),
        Some("t3")
    );
    assert_eq!(token(&def, &h, Some("a=1")), None);
    def.location = TokenLocation::Bearer;
    h.insert(
        "authorization",
        HeaderValue::from_static("Basic YWxpY2U6cHc="),
    );
    assert_eq!(token(&def, &h, None), None);
}

#[test]
fn fetched_sets_are_shared_while_in_use_and_their_gauge_goes_with_them() {
    let metrics = JwksMetrics::default();
    let store = JwksStore::new(PathBuf::from("/nonexistent"), metrics.clone());
    let mut def = provider(&json!({"keys": []}));
    def.jwks = JwksDef::Uri {
        url: "http://127.0.0.1:9/jwks.json".into(),
        ca: None,
        refresh: Duration::from_secs(300),
    };
    let labels = JwksLabels {
        policy: "default/p".into(),
        provider: "idp".into(),
    };
    let a = store.get("default/p", &def).unwrap();
    let b = store.get("default/p", &def).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "an unchanged provider keeps its set");
    assert!(a.keys().is_empty(), "nothing fetched without a runtime");
    assert_eq!(metrics.keys.get_or_create(&labels).get(), 0);
    // Another refresh interval is another set.
    let mut other = def.clone();
    other.jwks = JwksDef::Uri {
        url: "http://127.0.0.1:9/jwks.json".into(),
        ca: None,
        refresh: Duration::from_secs(600),
    };
    let c = store.get("default/p", &other).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    drop((a, b));
    store.forget_dropped();
    // c has the same labels: its series stays.
    metrics.keys.get_or_create(&labels).set(7);
    drop(c);
    store.forget_dropped();
    assert_eq!(
        metrics.keys.get_or_create(&labels).get(),
        0,
        "the series was removed"
    );
    // A CA file that cannot be read is an error naming it.
    def.jwks = JwksDef::Uri {
        url: "https://idp.test/jwks.json".into(),
        ca: Some(tollgate_compile::l7::table::SecretRef {
            namespace: "default".into(),
            name: "idp-ca".into(),
        }),
        refresh: Duration::from_secs(300),
    };
    let e = store.get("default/p", &def).err().unwrap();
    assert!(e.contains("/nonexistent/default/idp-ca/ca.crt"), "{e}");
}

/// A P-256 key whose public point has a zero first byte in coordinate `x` (`coord` 0) or `y`
/// (1): its signing key and its uncompressed point (x, y).
fn p256_with_leading_zero(coord: usize) -> (EncodingKey, [u8; 32], [u8; 32]) {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING as ALG};
    let rng = ring::rand::SystemRandom::new();
    // One key in 256 has it: a few hundred tries at most, in practice.
    for _ in 0..100_000 {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ALG, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ALG, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let (x, y): ([u8; 32], [u8; 32]) = (
            point[1..33].try_into().unwrap(),
            point[33..].try_into().unwrap(),
        );
        if [x, y][coord][0] == 0 {
            return (EncodingKey::from_ec_der(pkcs8.as_ref()), x, y);
        }
    }
    panic!("no P-256 key with a leading zero byte");
}

#[tokio::test]
async fn ec_keys_with_stripped_leading_zeros_verify_and_overlong_ones_are_skipped() {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let es256 = |key: &EncodingKey| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("ec".into());
        jsonwebtoken::encode(&h, &claims(json!({})), key).unwrap()
    };
    for coord in [0, 1] {
        let (key, x, y) = p256_with_leading_zero(coord);
        let token = es256(&key);
        let jwk = |x: &[u8], y: &[u8]| json!({"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(x), "y": b64(y)});
        // The full-length coordinates, then the one with its zero byte left out (as PyJWT
        // before 2.10 writes it): the same key.
        let stripped = if coord == 0 {
            jwk(&x[1..], &y)
        } else {
            jwk(&x, &y[1..])
        };
        for jwk in [jwk(&x, &y), stripped] {
            let def = provider(&json!({"keys": [jwk]}));
            let jwks = store().get("default/p", &def).unwrap();
            assert_eq!(
                verify(&def, &jwks, &token)
                    .await
                    .map(|v| v.consumer)
                    .as_deref(),
                Ok("alice"),
                "{jwk}"
            );
        }
        // A 33-byte coordinate is not a P-256 one, even with a zero in front.
        let mut long = vec![0u8];
        long.extend_from_slice(&x);
        let err = parse_jwks(json!({"keys": [jwk(&long, &y)]}).to_string().as_bytes())
            .err()
            .unwrap();
        assert!(err.contains("no usable key"), "{err}");
        // A coordinate of another key does not verify.
        let (other, ..) = p256_with_leading_zero(coord);
        let def = provider(&json!({"keys": [jwk(&x, &y)]}));
        let jwks = store().get("default/p", &def).unwrap();
        assert_eq!(
            verify(&def, &jwks, &es256(&other))
                .await
                .map(|v| v.consumer),
            Err(TokenFailure::Signature)
        );
    }
}

/// Requests with unknown `kid`s while the identity provider does not answer: they wait for
/// the one fetch under way and are answered, none starts another (measured before: each
/// waiter fetched again in turn, 5 s each, so the n-th waited n fetches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_behind_a_fetch_of_a_silent_server_wait_for_it_and_fetch_no_more() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(conn); // never answered
        }
    });
    let mut def = provider(&json!({"keys": []}));
    def.jwks = JwksDef::Uri {
        url: format!("http://127.0.0.1:{port}/jwks.json"),
        ca: None,
        refresh: Duration::from_secs(300),
    };
    let jwks = store().get("default/p", &def).unwrap();
    // The first fetch (the set's own) is under way.
    let (key, _) = ed25519("zz");
    let token = sign(&key, Some("zz"), claims(json!({})));
    let started = Instant::now();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let (def, jwks, token) = (def.clone(), jwks.clone(), token.clone());
            tokio::spawn(async move { verify(&def, &jwks, &token).await.map(|v| v.consumer) })
        })
        .collect();
    for w in waiters {
        assert_eq!(w.await.unwrap(), Err(TokenFailure::UnknownKid));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "fetches of the silent server after {:?}",
        started.elapsed()
    );
}
