//! L7 -> L4 escalation (`banOnAbuse`), with the real binary and real packets: the proxy listens
//! on the lab's root-side address, so that clients in the lab namespace cross the XDP-attached
//! veth. A source that fails authentication (or is refused with 429) too often is put into the
//! XDP blocklist: its pings and TCP connections are dropped while another source still gets
//! 200; `/status`, `tollgate bans` and the metrics show the ban; it expires on its own, can be
//! lifted by hand at once, and survives an agent restart; `--never-ban` addresses are exempt.
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_tests::admin::metrics;
use tollgate_tests::l7::{app_and_free, Backend};
use tollgate_tests::{
    admin, metric_value, require_root, tollgate_bin, Agent, Lab, APPLY_TIMEOUT, POLICY_APPLIED,
};

/// Source A (the abuser) and source B (a well-behaved client).
const A: Ipv4Addr = Ipv4Addr::new(100, 64, 79, 1);
const B: Ipv4Addr = Ipv4Addr::new(100, 64, 79, 2);

/// The README's recipe for a key line (see tests/tests/l7_auth.rs).
const KEY_LINE_RECIPE: &str = r#"hash=$( (printf "$(printf '%s' "$salt" | sed 's/../\\x&/g')"; printf '%s' "$key") | sha256sum | cut -d' ' -f1)
echo "$consumer:sha256:$salt:$hash""#;

const GOOD_KEY: &str = "g00d-k3y";

fn write_key_file(secrets: &Path) {
    let out = Command::new("bash")
        .args(["-c", KEY_LINE_RECIPE])
        .env("consumer", "client")
        .env("salt", "00112233445566778899aabbccddeeff")
        .env("key", GOOD_KEY)
        .output()
        .unwrap_or_else(|e| panic!("run bash: {e}"));
    assert!(out.status.success(), "{out:?}");
    let dir = secrets.join("default/keys");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keys"), &out.stdout).unwrap();
}

/// A status code and the response headers (lower-case names) of a request sent from `from`
/// inside the lab namespace; status 0 when no response came (the packets were dropped).
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    error: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn get_from(lab: &Lab, from: Ipv4Addr, port: u16, key: Option<&str>, timeout: u32) -> Reply {
    let headers: Vec<String> = key.map(|k| format!("X-Api-Key: {k}")).into_iter().collect();
    get_with(lab, from, port, &headers, timeout)
}

/// As [`get_from`], with request `headers` (`Name: value`).
fn get_with(lab: &Lab, from: Ipv4Addr, port: u16, headers: &[String], timeout: u32) -> Reply {
    let url = format!("http://{}:{port}/a", lab.root_ip());
    let from = from.to_string();
    let timeout = timeout.to_string();
    let mut args = vec!["-sS", "-i", "--max-time", &timeout, "--interface", &from];
    for h in headers {
        args.extend(["-H", h.as_str()]);
    }
    args.push(&url);
    let out = lab.ns_command("curl", &args).output().expect("run curl");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        error: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn bans_cli(lab: &Lab, args: &[&str]) -> Output {
    let mut cmd = Command::new(tollgate_bin());
    cmd.arg("bans")
        .args(args)
        .arg("--pin-dir")
        .arg(&lab.pin_dir);
    cmd.output().expect("run tollgate bans")
}

/// `tollgate bans --format json`.
fn bans_json(lab: &Lab) -> Value {
    let out = bans_cli(lab, &["--format", "json"]);
    assert!(out.status.success(), "tollgate bans: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

fn listed(v: &Value, key: &str, address: Ipv4Addr) -> Option<Value> {
    v[key]
        .as_array()?
        .iter()
        .find(|b| b["address"] == address.to_string())
        .cloned()
}

/// Waits until `tollgate bans` lists `address` (or no longer lists it); returns the entry.
fn wait_listed(lab: &Lab, address: Ipv4Addr, want: bool, timeout: Duration) -> Option<Value> {
    let start = Instant::now();
    loop {
        let v = bans_json(lab);
        let found = listed(&v, "bans", address);
        if found.is_some() == want {
            return found;
        }
        assert!(
            start.elapsed() < timeout,
            "{address} listed: {} after {timeout:?}: {v}",
            !want
        );
        thread::sleep(Duration::from_millis(50));
    }
}

const BLOCKLIST_AUTH: &str = "tollgate_l4_packets_total{policy=\"banOnAbuse\",rule=\"auth\",action=\"drop\",reason=\"blocklist\"}";

/// Starts the agent with the proxy on the lab's root-side address and waits until `port`
/// answers there.
fn start_agent(lab: &Lab, admin_port: u16, port: u16, secrets: &Path, extra: &[&str]) -> Agent {
    let admin = format!("127.0.0.1:{admin_port}");
    let root = lab.root_ip().to_string();
    let mut args = vec![
        "--gateway-address",
        &root,
        "--admin",
        &admin,
        "--tls-secrets-dir",
        secrets.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut agent = lab.start_agent(&args);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(
        &(lab.root_ip(), port).into(),
        Duration::from_millis(200),
    )
    .is_err()
    {
        assert!(agent.is_running(), "the agent exited:\n{}", agent.log());
        assert!(Instant::now() < deadline, "no listener:\n{}", agent.log());
        thread::sleep(Duration::from_millis(50));
    }
    agent
}

/// Five 401s from A (each with its challenge).
fn fail_five_times(lab: &Lab, port: u16) {
    for i in 0..5 {
        let r = get_from(lab, A, port, Some("wrong-key"), 5);
        assert_eq!(r.status, 401, "attempt {i}: {r:?}");
        assert!(r.header("www-authenticate").is_some(), "{r:?}");
    }
}

fn assert_dropped(lab: &Lab, from: Ipv4Addr, port: u16) {
    let ping = lab.ping(from, 3, Duration::from_millis(100), Duration::from_secs(1));
    assert_eq!(
        (ping.transmitted, ping.received),
        (3, 0),
        "{from}'s pings are dropped"
    );
    let c = lab.tcp_connect(from, port, Duration::from_secs(1));
    assert!(!c.reached_host(), "{from}'s SYN is dropped: {c:?}");
}

#[test]
fn sources_failing_authentication_are_banned_in_xdp_until_expiry_or_lift() {
    require_root!();
    const PROXY: u16 = 18200;
    const ADMIN: u16 = 19790;
    const BACKEND: u16 = 19791;
    let lab = Lab::new("bnauth", &[A, B]);
    let _app = Backend::start("app", BACKEND);
    let secrets = tempfile::tempdir().unwrap();
    write_key_file(secrets.path());
    let auth = "apiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: { name: app-auth }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }]\n  apiKey: { header: X-Api-Key, credentialRefs: [{ name: keys }] }\n  banOnAbuse: { failures: 5, within: 60s, blockFor: 4s }\n";
    lab.write_policy("l7.yaml", &app_and_free(PROXY, BACKEND, &[auth]));
    let mut agent = start_agent(&lab, ADMIN, PROXY, secrets.path(), &[]);

    // Both sources get through with the key.
    for from in [A, B] {
        let r = get_from(&lab, from, PROXY, Some(GOOD_KEY), 5);
        assert_eq!(r.status, 200, "{from}: {r:?}");
    }
    // Four failures: no ban yet.
    for _ in 0..4 {
        assert_eq!(get_from(&lab, A, PROXY, Some("nope"), 5).status, 401);
    }
    let r = get_from(&lab, A, PROXY, Some(GOOD_KEY), 5);
    assert_eq!(r.status, 200, "{r:?} {}", r.error);
    assert!(listed(&bans_json(&lab), "bans", A).is_none());
    // The fifth failure (a success in between resets nothing) crosses the threshold and
    // still gets its 401.
    let r = get_from(&lab, A, PROXY, Some("nope"), 5);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").is_some(), "{r:?}");
    let banned_at = Instant::now();
    let entry = wait_listed(&lab, A, true, Duration::from_secs(5)).unwrap();
    assert_eq!(entry["policy"], "default/app-auth", "{entry}");
    assert_eq!(entry["reason"], "auth", "{entry}");
    let out = bans_cli(&lab, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("100.64.79.1")
            && text.contains("default/app-auth")
            && text.contains("1 ban(s) in force"),
        "{text}"
    );
    assert_dropped(&lab, A, PROXY);
    let r = get_from(&lab, A, PROXY, Some(GOOD_KEY), 1);
    assert_eq!(r.status, 0, "A gets no answer at all: {r:?}");
    // B is not affected.
    let r = get_from(&lab, B, PROXY, Some(GOOD_KEY), 5);
    assert_eq!(r.status, 200, "{r:?}");
    let ping = lab.ping(B, 2, Duration::from_millis(100), Duration::from_secs(1));
    assert_eq!(ping.received, 2, "B's pings pass");

    // /status lists the ban.
    let status = admin::status(ADMIN);
    let ban = listed(&status, "bans", A).unwrap_or_else(|| panic!("/status: {status}"));
    assert_eq!(ban["policy"], "default/app-auth", "{ban}");
    assert_eq!(ban["reason"], "auth", "{ban}");
    let left = ban["expires_in_seconds"].as_u64().unwrap();
    assert!((1..=4).contains(&left), "{ban}");
    assert!(
        ban["banned_at_unix"].as_u64().unwrap() > 1_700_000_000,
        "{ban}"
    );
    assert_eq!(status["bans_total"], 1, "{status}");
    // Metrics: the ban, the active gauge, and drops that grow with the pings.
    let m = metrics(ADMIN);
    assert_eq!(
        metric_value(
            &m,
            "tollgate_bans_total{policy=\"default/app-auth\",reason=\"auth\"}"
        ),
        Some(1),
        "{m}"
    );
    assert_eq!(metric_value(&m, "tollgate_bans_active "), Some(1), "{m}");
    let dropped = metric_value(&m, BLOCKLIST_AUTH).unwrap_or(0);
    assert!(
        dropped >= 3,
        "the pings and SYNs were counted: {dropped}\n{m}"
    );
    let ping = lab.ping(A, 3, Duration::from_millis(100), Duration::from_secs(1));
    assert_eq!(ping.received, 0);
    let after = metric_value(&metrics(ADMIN), BLOCKLIST_AUTH).unwrap_or(0);
    assert!(after >= dropped + 3, "{dropped} -> {after}");
    agent
        .wait_for_log(
            "banned: the source's packets are dropped by XDP",
            APPLY_TIMEOUT,
        )
        .unwrap();
    assert!(agent.log().contains("100.64.79.1"), "the ban's log names A");

    // After blockFor, A works again, and the ban is gone from the list.
    let start = Instant::now();
    while get_from(&lab, A, PROXY, Some(GOOD_KEY), 1).status != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "A is still banned"
        );
    }
    let waited = banned_at.elapsed();
    assert!(
        waited >= Duration::from_millis(3500),
        "the ban lasted its 4s: {waited:?}"
    );
    assert!(waited < Duration::from_secs(9), "{waited:?}");
    wait_listed(&lab, A, false, Duration::from_secs(3));
    agent
        .wait_for_log("ban expired; lifted", Duration::from_secs(5))
        .unwrap();
    let start = Instant::now();
    while metric_value(&metrics(ADMIN), "tollgate_bans_active ") != Some(0) {
        assert!(start.elapsed() < Duration::from_secs(5), "gauge stays at 1");
        thread::sleep(Duration::from_millis(100));
    }

    // A second ban, lifted by hand: A works at once.
    fail_five_times(&lab, PROXY);
    wait_listed(&lab, A, true, Duration::from_secs(5));
    assert_eq!(get_from(&lab, A, PROXY, Some(GOOD_KEY), 1).status, 0);
    let out = bans_cli(&lab, &["lift", &A.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let r = get_from(&lab, A, PROXY, Some(GOOD_KEY), 5);
    assert_eq!(r.status, 200, "lifted at once: {r:?}");
    let out = bans_cli(&lab, &["lift", &A.to_string()]);
    assert_eq!(out.status.code(), Some(1), "no ban left to lift: {out:?}");
    agent
        .wait_for_log("ban lifted by hand", Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        metric_value(
            &metrics(ADMIN),
            "tollgate_bans_total{policy=\"default/app-auth\",reason=\"auth\"}"
        ),
        Some(2)
    );

    // A ban by hand survives an agent restart, and the CLI works while the agent is stopped.
    let out = bans_cli(&lab, &["add", &B.to_string(), "--for", "1m"]);
    assert!(out.status.success(), "{out:?}");
    assert_dropped(&lab, B, PROXY);
    agent
        .wait_for_log("ban added by hand", Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        metric_value(
            &metrics(ADMIN),
            "tollgate_bans_total{policy=\"manual\",reason=\"manual\"}"
        ),
        Some(1)
    );
    assert!(agent.sigterm(Duration::from_secs(15)).is_some(), "stops");
    let entry = wait_listed(&lab, B, true, Duration::from_secs(1)).unwrap();
    assert_eq!(entry["reason"], "manual", "{entry}");
    let ping = lab.ping(B, 2, Duration::from_millis(100), Duration::from_secs(1));
    assert_eq!(ping.received, 0, "still dropped with no agent");
    let mut agent = start_agent(&lab, ADMIN, PROXY, secrets.path(), &[]);
    agent
        .wait_for_log(
            "bans in force from before this agent started",
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(listed(&admin::status(ADMIN), "bans", B).is_some());
    assert_eq!(get_from(&lab, B, PROXY, Some(GOOD_KEY), 1).status, 0);
    assert_eq!(get_from(&lab, A, PROXY, Some(GOOD_KEY), 5).status, 200);
    let out = bans_cli(&lab, &["lift", &B.to_string()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(get_from(&lab, B, PROXY, Some(GOOD_KEY), 5).status, 200);

    // Detach removes the blocklist with everything else.
    assert!(agent.sigterm(Duration::from_secs(15)).is_some());
    assert!(lab
        .pinned_files()
        .iter()
        .any(|p| p.ends_with("maps/BANS_V4")));
    let out = lab.detach();
    assert!(out.status.success(), "{out:?}");
    assert!(lab.pinned_files().is_empty(), "{:?}", lab.pinned_files());
    let out = bans_cli(&lab, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no blocklist is pinned"), "{err}");
}

#[test]
fn sources_refused_with_429_too_often_are_banned_and_shadow_never_bans() {
    require_root!();
    const PROXY: u16 = 18201;
    const ADMIN: u16 = 19792;
    const BACKEND: u16 = 19793;
    let lab = Lab::new("bnrate", &[A, B]);
    let _app = Backend::start("app", BACKEND);
    let secrets = tempfile::tempdir().unwrap();
    let limit = |mode: &str, requests: u32| {
        format!("apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: per-client }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }}]\n  mode: {mode}\n  limits: [{{ key: clientIP, requests: {requests}, per: 1m }}]\n  banOnAbuse: {{ rejections: 3, within: 60s, blockFor: 30s }}\n")
    };
    lab.write_policy(
        "l7.yaml",
        &app_and_free(PROXY, BACKEND, &[&limit("shadow", 3)]),
    );
    let mut agent = start_agent(
        &lab,
        ADMIN,
        PROXY,
        secrets.path(),
        &["--never-ban", "100.64.79.2/32"],
    );
    // Shadow: over the limit, let through, never banned (tollgate_bans_total is 1 below: only
    // the enforce-mode ban).
    for _ in 0..6 {
        assert_eq!(get_from(&lab, A, PROXY, None, 5).status, 200);
    }

    lab.write_policy(
        "l7.yaml",
        &app_and_free(PROXY, BACKEND, &[&limit("enforce", 2)]),
    );
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // B (--never-ban) is over the limit as often as A will be: never banned (checked once A's
    // ban, queued after anything B could have caused, is listed).
    let codes: Vec<u16> = (0..6)
        .map(|_| get_from(&lab, B, PROXY, None, 5).status)
        .collect();
    assert_eq!(codes, [200, 200, 429, 429, 429, 429], "B");
    assert_eq!(
        get_from(&lab, B, PROXY, None, 5).status,
        429,
        "B still reaches the proxy"
    );
    // The bucket is new (the limit changed): 2 pass, then 429s; the third 429 bans.
    let codes: Vec<u16> = (0..5)
        .map(|_| {
            let r = get_from(&lab, A, PROXY, None, 5);
            if r.status == 429 {
                assert!(r.header("retry-after").is_some(), "{r:?}");
            }
            r.status
        })
        .collect();
    assert_eq!(codes, [200, 200, 429, 429, 429]);
    let entry = wait_listed(&lab, A, true, Duration::from_secs(5)).unwrap();
    assert_eq!(entry["policy"], "default/per-client", "{entry}");
    assert!(listed(&bans_json(&lab), "bans", B).is_none(), "B is exempt");
    assert_eq!(entry["reason"], "ratelimit", "{entry}");
    assert_dropped(&lab, A, PROXY);
    let r = get_from(&lab, B, PROXY, None, 5);
    assert_eq!(
        r.status, 429,
        "B reaches the proxy while A is banned: {r:?}"
    );
    let m = metrics(ADMIN);
    assert_eq!(
        metric_value(
            &m,
            "tollgate_bans_total{policy=\"default/per-client\",reason=\"ratelimit\"}"
        ),
        Some(1),
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            "tollgate_l4_packets_total{policy=\"banOnAbuse\",rule=\"ratelimit\",action=\"drop\",reason=\"blocklist\"}"
        )
        .unwrap_or(0)
            >= 3,
        "{m}"
    );
    let out = bans_cli(&lab, &["lift", &A.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let r = get_from(&lab, A, PROXY, None, 5);
    assert_eq!(
        r.status, 429,
        "lifted: A reaches the proxy again (still over its limit): {r:?}"
    );
}

#[test]
fn ipv6_clients_are_banned_per_64_and_many_bans_log_a_few_lines() {
    require_root!();
    const PROXY: u16 = 18202;
    const ADMIN: u16 = 19794;
    const BACKEND: u16 = 19795;
    /// /64s that each earn a ban: more than the log shows one by one (10 per 10 s).
    const PREFIXES: u32 = 25;
    let lab = Lab::new("bnv6", &[A]);
    let _app = Backend::start("app", BACKEND);
    let secrets = tempfile::tempdir().unwrap();
    let limit = "apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: { name: per-client }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }]\n  limits: [{ key: clientIP, requests: 1, per: 1h }]\n  banOnAbuse: { rejections: 1, within: 60s, blockFor: 10m }\n";
    lab.write_policy("l7.yaml", &app_and_free(PROXY, BACKEND, &[limit]));
    // A is a trusted proxy (so never banned itself): the clients are its X-Forwarded-For.
    let agent = start_agent(
        &lab,
        ADMIN,
        PROXY,
        secrets.path(),
        &["--trusted-proxy", "100.64.79.1/32"],
    );
    let forwarded = |client: String| {
        get_with(&lab, A, PROXY, &[format!("X-Forwarded-For: {client}")], 5).status
    };
    for n in 1..=PREFIXES {
        // Two addresses of the /64: the first is served, the second refused, and banned.
        let codes = [
            forwarded(format!("2001:db8:1:{n:x}::1")),
            forwarded(format!("2001:db8:1:{n:x}:ffff::2")),
        ];
        assert_eq!(codes, [200, 429], "/64 number {n}");
    }
    // An IPv4 client behind the same proxy is a client of its own.
    assert_eq!(forwarded("198.51.100.1".into()), 200);
    let start = Instant::now();
    let v = loop {
        let v = bans_json(&lab);
        if v["total"] == PREFIXES || start.elapsed() > Duration::from_secs(5) {
            break v;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut listed: Vec<String> = v["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap_or_default().to_owned())
        .collect();
    listed.sort();
    let mut want: Vec<String> = (1..=PREFIXES)
        .map(|n| format!("2001:db8:1:{n:x}::/64"))
        .collect();
    want.sort();
    assert_eq!(listed, want, "{v}");
    assert_eq!(
        metric_value(
            &metrics(ADMIN),
            "tollgate_bans_total{policy=\"default/per-client\",reason=\"ratelimit\"}"
        ),
        Some(u64::from(PREFIXES))
    );
    // The log: the first 10 bans one by one, then one line that counts the others.
    let mut agent = agent;
    agent
        .wait_for_log(
            "more ban events than the log shows",
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let log = agent.log();
    let one_by_one = log
        .matches("banned: the source's packets are dropped by XDP")
        .count();
    assert_eq!(one_by_one, 10, "{log}");
    let summary = log
        .lines()
        .find(|l| l.contains("more ban events than the log shows"))
        .unwrap();
    assert!(
        summary.contains(&format!("banned={}", PREFIXES - 10)),
        "{summary}"
    );
}
