//! Rate limits of the L7 proxy (`RateLimitPolicy`), with the real binary, curl and a real
//! backend: a burst then 429 with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit`
//! headers, independent buckets per header value, shadow mode, the metric and the access log,
//! and buckets that survive a reload when their limit is unchanged.
use tollgate_tests::admin::metrics;
use tollgate_tests::l7::{access_log, app_and_free, curl, start_agent, Backend, Reply};
use tollgate_tests::{metric_value, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

/// A RateLimitPolicy named `name` on route `app`, with `limits` (YAML flow entries) and `mode`.
fn limit_policy(name: &str, mode: &str, limits: &[&str]) -> String {
    let mut y = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: {name} }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }}]\n  mode: {mode}\n  limits:\n"
    );
    for l in limits {
        y.push_str(&format!("    - {l}\n"));
    }
    y
}

/// Gateway on `proxy`, Backend `app` on `backend`, route `app` (`/`) and route `free` (`/free`,
/// no limits), and `policies`.
fn revision(proxy: u16, backend: u16, policies: &[&str]) -> String {
    app_and_free(proxy, backend, policies)
}

fn get(proxy: u16, path: &str, headers: &[&str]) -> Reply {
    let url = format!("http://127.0.0.1:{proxy}{path}");
    let mut args: Vec<&str> = Vec::new();
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(&url);
    curl(&args)
}

fn ratelimited(admin: u16, route: &str, policy: &str) -> u64 {
    metric_value(
        &metrics(admin),
        &format!("tollgate_http_ratelimited_total{{route=\"{route}\",policy=\"{policy}\"}}"),
    )
    .unwrap_or(0)
}

#[test]
fn a_burst_is_allowed_then_429_with_retry_after_and_ratelimit_headers() {
    require_root!();
    const PROXY: u16 = 18120;
    const ADMIN: u16 = 19680;
    const BACKEND: u16 = 19681;
    let lab = Lab::new("l7rlburst", &[]);
    let _app = Backend::start("app", BACKEND);
    let policy = limit_policy(
        "per-client",
        "enforce",
        &["{ key: clientIP, requests: 3, per: 1m }"],
    );
    lab.write_policy("l7.yaml", &revision(PROXY, BACKEND, &[&policy]));
    let agent = start_agent(&lab, ADMIN, &[PROXY], &["--log-format", "json"]);

    for remaining in [2, 1, 0] {
        let r = get(PROXY, "/a", &[]);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"per-client\";q=3;w=60"),
            "{r:?}"
        );
        let rl = r.header("ratelimit").unwrap_or_default();
        assert!(
            rl.starts_with(&format!("\"per-client\";r={remaining};t=")),
            "{r:?}"
        );
        assert!(r.header("retry-after").is_none(), "{r:?}");
    }
    let mut refused = 0;
    for _ in 0..4 {
        let r = get(PROXY, "/a", &[]);
        assert_eq!(r.status, 429, "{r:?}");
        refused += 1;
        // 3 per minute: a request every 20 s.
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After in seconds: {r:?}"));
        assert!((1..=20).contains(&retry), "{r:?}");
        assert_eq!(
            r.header("ratelimit"),
            Some(format!("\"per-client\";r=0;t={retry}").as_str()),
            "{r:?}"
        );
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"per-client\";q=3;w=60")
        );
        assert!(r.body.contains("per-client"), "{r:?}");
    }
    // A route without limits: neither limited nor decorated.
    let free = get(PROXY, "/free", &[]);
    assert_eq!(free.status, 200);
    assert!(free.header("ratelimit").is_none() && free.header("ratelimit-policy").is_none());

    assert_eq!(
        ratelimited(ADMIN, "default/app", "default/per-client"),
        refused
    );
    assert_eq!(
        metric_value(
            &metrics(ADMIN),
            "tollgate_http_requests_total{route=\"default/app\",method=\"GET\",code=\"429\"}"
        ),
        Some(refused)
    );
    let log = access_log(&agent);
    let outcome = |o: &str| log.iter().filter(|l| l["ratelimit"] == o).count() as u64;
    assert_eq!((outcome("ok"), outcome("refused")), (3, refused), "{log:?}");
    let line = log
        .iter()
        .find(|l| l["ratelimit"] == "refused")
        .expect("a refused line");
    assert_eq!(
        (line["status"].as_u64(), line["ratelimit_policy"].as_str()),
        (Some(429), Some("default/per-client"))
    );
    assert_eq!(
        log.iter().find(|l| l["route"] == "default/free").unwrap()["ratelimit"],
        "-"
    );
}

#[test]
fn each_header_value_has_its_own_bucket_and_requests_without_it_share_one() {
    require_root!();
    const PROXY: u16 = 18121;
    const ADMIN: u16 = 19682;
    const BACKEND: u16 = 19683;
    let lab = Lab::new("l7rlhdr", &[]);
    let _app = Backend::start("app", BACKEND);
    let policy = limit_policy(
        "per-tenant",
        "enforce",
        &["{ key: header, header: X-Tenant, requests: 2, per: 1h }"],
    );
    lab.write_policy("l7.yaml", &revision(PROXY, BACKEND, &[&policy]));
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &["--access-log", "off"]);

    let statuses = |headers: &[&str]| -> Vec<u16> {
        (0..3).map(|_| get(PROXY, "/x", headers).status).collect()
    };
    assert_eq!(statuses(&["X-Tenant: a"]), [200, 200, 429]);
    assert_eq!(statuses(&["X-Tenant: b"]), [200, 200, 429]);
    assert_eq!(statuses(&[]), [200, 200, 429]);
    // Tenant a is still refused; the client address is not the key.
    assert_eq!(get(PROXY, "/x", &["X-Tenant: a"]).status, 429);
    assert_eq!(get(PROXY, "/x", &["X-Tenant: c"]).status, 200);
    assert_eq!(ratelimited(ADMIN, "default/app", "default/per-tenant"), 4);
}

#[test]
fn shadow_mode_lets_every_request_through_and_counts_the_would_be_refusals() {
    require_root!();
    const PROXY: u16 = 18122;
    const ADMIN: u16 = 19684;
    const BACKEND: u16 = 19685;
    let lab = Lab::new("l7rlshadow", &[]);
    let _app = Backend::start("app", BACKEND);
    let policy = limit_policy(
        "trial",
        "shadow",
        &["{ key: clientIP, requests: 2, per: 1h }"],
    );
    lab.write_policy("l7.yaml", &revision(PROXY, BACKEND, &[&policy]));
    let agent = start_agent(&lab, ADMIN, &[PROXY], &["--log-format", "json"]);

    for _ in 0..6 {
        let r = get(PROXY, "/a", &[]);
        assert_eq!(r.status, 200, "{r:?}");
        // Shadow limits stay invisible to clients.
        assert!(r.header("ratelimit").is_none() && r.header("ratelimit-policy").is_none());
    }
    assert_eq!(ratelimited(ADMIN, "default/app", "default/trial"), 4);
    let log = access_log(&agent);
    let shadow: Vec<_> = log.iter().filter(|l| l["ratelimit"] == "shadow").collect();
    assert_eq!(shadow.len(), 4, "{log:?}");
    assert!(shadow
        .iter()
        .all(|l| l["status"] == 200 && l["ratelimit_policy"] == "default/trial"));
}

#[test]
fn a_reload_keeps_the_buckets_of_an_unchanged_limit_and_a_changed_limit_applies() {
    require_root!();
    const PROXY: u16 = 18123;
    const ADMIN: u16 = 19686;
    const BACKEND: u16 = 19687;
    let lab = Lab::new("l7rlreload", &[]);
    let _app = Backend::start("app", BACKEND);
    let three = limit_policy(
        "per-client",
        "enforce",
        &["{ key: clientIP, requests: 3, per: 1h }"],
    );
    lab.write_policy("l7.yaml", &revision(PROXY, BACKEND, &[&three]));
    let mut agent = start_agent(&lab, ADMIN, &[PROXY], &["--access-log", "off"]);
    let mut applied = 1;
    let mut reload = |agent: &mut tollgate_tests::Agent, yaml: &str| {
        lab.write_policy("l7.yaml", yaml);
        agent.sighup();
        applied += 1;
        agent
            .wait_for_log_count(POLICY_APPLIED, applied, APPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("reload {applied}: {e}\n{}", agent.log()));
    };

    let statuses =
        |n: usize| -> Vec<u16> { (0..n).map(|_| get(PROXY, "/a", &[]).status).collect() };
    assert_eq!(statuses(4), [200, 200, 200, 429]);

    // The same limit in a revision that changes something else (a second policy on the
    // route, generous): the bucket is not reset, the client is still refused.
    let other = limit_policy(
        "generous",
        "enforce",
        &["{ key: clientIP, requests: 1000, per: 1s }"],
    );
    reload(&mut agent, &revision(PROXY, BACKEND, &[&three, &other]));
    assert_eq!(statuses(2), [429, 429]);
    let r = get(PROXY, "/a", &[]);
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"generous\";q=1000;w=1, \"per-client\";q=3;w=3600"),
        "both policies, in namespace/name order: {r:?}"
    );

    // A changed limit: new buckets with the new numbers.
    let five = limit_policy(
        "per-client",
        "enforce",
        &["{ key: clientIP, requests: 5, per: 1h }"],
    );
    reload(&mut agent, &revision(PROXY, BACKEND, &[&five]));
    assert_eq!(statuses(6), [200, 200, 200, 200, 200, 429]);
    let r = get(PROXY, "/a", &[]);
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"per-client\";q=5;w=3600")
    );

    // The limit goes away: nothing is limited any more.
    reload(&mut agent, &revision(PROXY, BACKEND, &[]));
    assert_eq!(statuses(3), [200, 200, 200]);
    assert!(get(PROXY, "/a", &[]).header("ratelimit").is_none());
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    require_root!();
    const PROXY: u16 = 18124;
    const ADMIN: u16 = 19688;
    const BACKEND: u16 = 19689;
    let lab = Lab::new("l7rlxff", &[]);
    let _app = Backend::start("app", BACKEND);
    let policy = limit_policy(
        "per-client",
        "enforce",
        &["{ key: clientIP, requests: 1, per: 1h }"],
    );
    lab.write_policy("l7.yaml", &revision(PROXY, BACKEND, &[&policy]));
    let _agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--access-log", "off", "--trusted-proxy", "127.0.0.1"],
    );
    let status = |xff: &str| get(PROXY, "/a", &[&format!("X-Forwarded-For: {xff}")]).status;
    assert_eq!(status("198.51.100.1"), 200);
    assert_eq!(status("198.51.100.1"), 429);
    // Another client behind the same proxy: its own bucket.
    assert_eq!(status("198.51.100.2"), 200);
    // The client is the rightmost untrusted address: a forged leftmost entry changes nothing.
    assert_eq!(status("203.0.113.9, 198.51.100.2"), 429);
    assert_eq!(ratelimited(ADMIN, "default/app", "default/per-client"), 2);
}

#[test]
fn rotating_ipv6_addresses_of_one_64_share_its_bucket() {
    require_root!();
    const PROXY: u16 = 18125;
    const ADMIN: u16 = 19690;
    const BACKEND: u16 = 19691;
    let lab = Lab::new("l7rlv6", &[]);
    let _app = Backend::start("app", BACKEND);
    let policy = limit_policy(
        "per-client",
        "enforce",
        &[
            "{ name: per-64, key: clientIP, requests: 3, per: 1h }",
            "{ name: per-48, key: clientIP, clientIP: { ipv6Prefix: 48 }, requests: 7, per: 1h }",
        ],
    );
    lab.write_policy("l7.yaml", &revision(PROXY, BACKEND, &[&policy]));
    let _agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--access-log", "off", "--trusted-proxy", "127.0.0.1"],
    );
    let status = |xff: &str| get(PROXY, "/a", &[&format!("X-Forwarded-For: {xff}")]).status;
    // A new address of 2001:db8:1:2::/64 for every request.
    let served = (1..=40)
        .filter(|n| status(&format!("2001:db8:1:2:{n:x}:{n:x}:{n:x}:1")) == 200)
        .count();
    assert_eq!(served, 3, "one /64, one bucket of 3");
    // Other clients are served: another /64 (3 of them, within the /48's 7), and IPv4.
    let others: Vec<u16> = [
        "2001:db8:1:3::1",
        "2001:db8:1:3::2",
        "2001:db8:1:3::3",
        "2001:db8:1:3::4",
        "198.51.100.1",
    ]
    .iter()
    .map(|a| status(a))
    .collect();
    assert_eq!(others, [200, 200, 200, 429, 200]);
    // The /48 limit: 6 allowed so far; one more from yet another /64, then it refuses.
    let wide: Vec<u16> = (1..=3)
        .map(|n| status(&format!("2001:db8:1:4::{n}")))
        .collect();
    assert_eq!(wide, [200, 429, 429]);
    assert_eq!(
        ratelimited(ADMIN, "default/app", "default/per-client"),
        40 - 3 + 1 + 2
    );
    assert_eq!(
        metric_value(
            &metrics(ADMIN),
            "tollgate_http_ratelimit_evictions_total{policy=\"default/per-client\"}"
        ),
        Some(0)
    );
}
