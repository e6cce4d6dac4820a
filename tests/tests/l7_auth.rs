//! Authentication of the L7 proxy (`AuthPolicy`), with the real binary, curl and a real
//! backend: API keys made with the README's shell one-liner (sha256sum, not the agent's code),
//! basic auth against an htpasswd file made by Apache's `htpasswd -B`, 401 with
//! `WWW-Authenticate`, the consumer sent to the backend (a client's own `X-Tollgate-Consumer`
//! replaced), per-consumer rate limits, the failure metric, the access log, a credential file
//! reloaded when it changes, and a bad file refusing the revision.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tollgate_tests::l7::{access_log, app_and_free, curl, start_agent, Backend, Reply};
use tollgate_tests::{http_get, metric_value, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

/// The README's recipe for a key line, with the salt and key given (the README draws both from
/// `openssl rand`).
const KEY_LINE_RECIPE: &str = r#"hash=$( (printf "$(printf '%s' "$salt" | sed 's/../\\x&/g')"; printf '%s' "$key") | sha256sum | cut -d' ' -f1)
echo "$consumer:sha256:$salt:$hash""#;

fn key_line(consumer: &str, salt: &str, key: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", KEY_LINE_RECIPE])
        .env("consumer", consumer)
        .env("salt", salt)
        .env("key", key)
        .output()
        .unwrap_or_else(|e| panic!("run bash: {e}"));
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn htpasswd(file: &Path, user: &str, password: &str) {
    let out = Command::new("htpasswd")
        .args(["-B", "-C", "5", "-b", "-c"])
        .arg(file)
        .args([user, password])
        .output()
        .unwrap_or_else(|e| panic!("run htpasswd (apache2-utils): {e}"));
    assert!(out.status.success(), "htpasswd: {out:?}");
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Gateway on `proxy`, Backend `app`, route `app` (`/`) with an AuthPolicy (API key in
/// `X-Api-Key` from Secret `keys`, basic auth from Secret `users`) and a per-consumer limit of
/// `per_minute`, and route `free` (`/free`) without either.
fn revision(proxy: u16, backend: u16, per_minute: u32) -> String {
    let target =
        "  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }]\n";
    let auth = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{ name: app-auth }}\nspec:\n{target}  apiKey: {{ header: X-Api-Key, credentialRefs: [{{ name: keys }}] }}\n  basicAuth: {{ credentialRefs: [{{ name: users }}] }}\n"
    );
    let limit = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: per-consumer }}\nspec:\n{target}  limits: [{{ key: consumer, requests: {per_minute}, per: 1m }}]\n"
    );
    app_and_free(proxy, backend, &[&auth, &limit])
}

fn get(proxy: u16, path: &str, args: &[&str]) -> Reply {
    let url = format!("http://127.0.0.1:{proxy}{path}");
    let mut all: Vec<&str> = args.to_vec();
    all.push(&url);
    curl(&all)
}

fn auth_failures(admin: u16, reason: &str) -> u64 {
    let text = http_get(admin, "/metrics", "")
        .expect("the admin server answers")
        .1;
    metric_value(
        &text,
        &format!("tollgate_auth_failures_total{{route=\"default/app\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0)
}

#[test]
fn api_keys_and_basic_auth_guard_a_route_and_name_the_consumer() {
    require_root!();
    const PROXY: u16 = 18140;
    const ADMIN: u16 = 19720;
    const BACKEND: u16 = 19721;
    let lab = Lab::new("l7authkey", &[]);
    let _app = Backend::start("app", BACKEND);
    let secrets = tempfile::tempdir().unwrap();
    write(
        secrets.path(),
        "default/keys/keys",
        &format!(
            "# consumer:sha256:salt:hash\n{}",
            key_line("app-1", "00112233445566778899aabbccddeeff", "k3y-0ne")
        ),
    );
    std::fs::create_dir_all(secrets.path().join("default/users")).unwrap();
    htpasswd(
        &secrets.path().join("default/users/htpasswd"),
        "alice",
        "pa55",
    );
    lab.write_policy("l7.yaml", &revision(PROXY, BACKEND, 3));
    let dir = secrets.path().to_str().unwrap().to_owned();
    let agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--log-format", "json", "--tls-secrets-dir", &dir],
    );

    // No credentials: 401 with a challenge for each method.
    let r = get(PROXY, "/a", &[]);
    assert_eq!(r.status, 401, "{r:?}");
    let challenges: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        challenges,
        [
            "ApiKey realm=\"default/app\", header=\"x-api-key\"",
            "Basic realm=\"default/app\", charset=\"UTF-8\""
        ],
        "{r:?}"
    );
    // Wrong key, wrong password: 401.
    let r = get(PROXY, "/a", &["-H", "X-Api-Key: k3y-0ne-not"]);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").is_some(), "{r:?}");
    let r = get(PROXY, "/a", &["-u", "alice:wrong"]);
    assert_eq!(r.status, 401, "{r:?}");

    // The right key: the backend hears the consumer, not what the client claimed.
    let r = get(
        PROXY,
        "/a",
        &[
            "-H",
            "X-Api-Key: k3y-0ne",
            "-H",
            "X-Tollgate-Consumer: admin",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.seen_header("x-tollgate-consumer").as_deref(),
        Some("app-1")
    );
    // Basic auth with the htpasswd user.
    let r = get(PROXY, "/a", &["-u", "alice:pa55"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.seen_header("x-tollgate-consumer").as_deref(),
        Some("alice")
    );
    // A route without an AuthPolicy: open, and a client's consumer header never passes.
    let r = get(PROXY, "/free", &["-H", "X-Tollgate-Consumer: admin"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.seen_header("x-tollgate-consumer"), None, "{r:?}");

    // Per-consumer limit (3 a minute): app-1 has used 1; two more, then 429; alice (1 used)
    // still has her own bucket.
    for _ in 0..2 {
        let r = get(PROXY, "/a", &["-H", "X-Api-Key: k3y-0ne"]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = get(PROXY, "/a", &["-H", "X-Api-Key: k3y-0ne"]);
    assert_eq!(r.status, 429, "{r:?}");
    let r = get(PROXY, "/a", &["-u", "alice:pa55"]);
    assert_eq!(r.status, 200, "{r:?}");
    // Failed authentication spends no bucket and is not limited: still 401.
    let r = get(PROXY, "/a", &[]);
    assert_eq!(r.status, 401, "{r:?}");

    assert_eq!(auth_failures(ADMIN, "missing"), 2);
    assert_eq!(auth_failures(ADMIN, "invalid"), 2);
    let log = access_log(&agent);
    let consumers: Vec<(u64, &str)> = log
        .iter()
        .filter(|l| l["route"] == "default/app")
        .map(|l| {
            (
                l["status"].as_u64().unwrap_or(0),
                l["consumer"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        consumers,
        [
            (401, "-"),
            (401, "-"),
            (401, "-"),
            (200, "app-1"),
            (200, "alice"),
            (200, "app-1"),
            (200, "app-1"),
            (429, "app-1"),
            (200, "alice"),
            (401, "-"),
        ],
        "{log:?}"
    );
    let reasons: Vec<&str> = log
        .iter()
        .filter(|l| l["status"] == 401)
        .map(|l| l["reason"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        reasons,
        [
            "auth_missing",
            "auth_invalid",
            "auth_invalid",
            "auth_missing"
        ]
    );
}

#[test]
fn a_changed_key_file_is_reloaded_a_bad_one_keeps_the_old_keys_and_a_missing_one_leaves_its_policy_out(
) {
    require_root!();
    const PROXY: u16 = 18141;
    const ADMIN: u16 = 19722;
    const BACKEND: u16 = 19723;
    let lab = Lab::new("l7authrld", &[]);
    let _app = Backend::start("app", BACKEND);
    let secrets = tempfile::tempdir().unwrap();
    let line = |c: &str, k: &str| key_line(c, "a1a2a3a4a5a6a7a8", k);
    write(
        secrets.path(),
        "default/keys/keys",
        &line("one", "first-key"),
    );
    std::fs::create_dir_all(secrets.path().join("default/users")).unwrap();
    htpasswd(&secrets.path().join("default/users/htpasswd"), "bob", "pw");
    lab.write_policy("l7.yaml", &revision(PROXY, BACKEND, 1000));
    let dir = secrets.path().to_str().unwrap().to_owned();
    let mut agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--log-format", "json", "--tls-secrets-dir", &dir],
    );
    let status = |key: &str| get(PROXY, "/", &["-H", &format!("X-Api-Key: {key}")]).status;
    assert_eq!(status("first-key"), 200);

    // The file changes: the new key works, the old one no longer does.
    write(
        secrets.path(),
        "default/keys/keys",
        &line("two", "second-key"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while status("second-key") != 200 {
        assert!(
            Instant::now() < deadline,
            "the changed key file was not reloaded:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(status("first-key"), 401);

    // A bad file (a clear key): logged, the keys loaded before stay in use.
    write(secrets.path(), "default/keys/keys", "two:second-key\n");
    agent
        .wait_for_log("credential file not reloaded", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status("second-key"), 200);

    // A new revision naming a Secret whose file is missing leaves out the AuthPolicy (naming
    // the file), not the revision: the route it guards answers 500 rather than serve without
    // it, the other route serves.
    let broken = revision(PROXY, BACKEND, 1000).replace("name: users", "name: nobody");
    lab.write_policy("l7.yaml", &broken);
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = agent.log();
    assert!(
        log.contains("AuthPolicy default/app-auth") && log.contains("default/nobody/htpasswd"),
        "{log}"
    );
    assert_eq!(status("second-key"), 500);
    assert_eq!(get(PROXY, "/free", &[]).status, 200);
    assert!(agent.is_running());
}
