//! `tollgate explain`: the verdict a packet or a request would get from the example policy,
//! as an operator asks it (the real binary, no agent, no root).

use std::process::Command;

use tollgate_tests::{tollgate_bin, workspace_root};

fn explain(args: &[&str]) -> (i32, String) {
    let out = Command::new(tollgate_bin())
        .arg("explain")
        .arg("--source")
        .arg(workspace_root().join("examples"))
        .args(args)
        .output()
        .expect("run tollgate explain");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn line<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"))
}

#[test]
fn packets_get_the_verdict_and_rule_of_the_kernel_tables() {
    let (code, out) = explain(&["--packet", "tcp 203.0.113.7:51000 -> 198.18.0.1:22"]);
    assert_eq!(code, 1, "a denied packet exits 1: {out}");
    assert!(line(&out, "verdict:").contains("DROP"), "{out}");
    assert!(
        line(&out, "decided by:").contains("L4Policy/edge rule block-scanners"),
        "{out}"
    );
    let (code, out) = explain(&["--packet", "tcp 198.51.100.10:40000 -> 198.18.0.1:22"]);
    assert_eq!(code, 0, "the office's SSH passes: {out}");
    assert!(
        line(&out, "decided by:").contains("ssh-from-office"),
        "{out}"
    );
}

#[test]
fn requests_get_the_listener_route_auth_limits_and_backends_the_proxy_would_use() {
    let (code, out) = explain(&["--request", "POST http://api.example.com:18000/v1/orders/7"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        line(&out, "listener:").contains("Gateway infra/edge listener \"http\" (port 18000, HTTP)"),
        "{out}"
    );
    // The POST rule (a method match) wins over the plain prefix of the same path.
    assert!(
        line(&out, "route:").contains(
            "HTTPRoute shop/orders rule 0 match 0 (path PathPrefix /v1/orders, method POST)"
        ),
        "{out}"
    );
    assert!(
        line(&out, "auth:")
            .contains("AuthPolicy shop/orders-auth: needs an API key in header x-api-key"),
        "{out}"
    );
    assert!(
        out.contains("limit \"per-client\": 20 requests per 1s, burst 40, by client IP"),
        "{out}"
    );
    assert_eq!(
        out.matches("banOnAbuse: 200 rejections within 60s").count(),
        1,
        "the RateLimitPolicy's ban, once: {out}"
    );
    assert!(
        line(&out, "verdict:").contains("forwarded to Backend shop/orders (100%"),
        "{out}"
    );
    assert!(line(&out, "filter:").contains("set x-write: true"), "{out}");
    assert!(
        line(&out, "timeouts:").contains("request 10s, backend request 5s"),
        "{out}"
    );

    // A GET takes the canary split.
    let (code, out) = explain(&["--request", "GET http://api.example.com:18000/v1/orders"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        line(&out, "verdict:").contains("shop/orders (90%")
            && line(&out, "verdict:").contains("shop/orders-canary (10%"),
        "{out}"
    );
    assert!(line(&out, "retries:").contains("on status [503]"), "{out}");

    // Encoded dots are normalised before routing: /v1/%2e%2e/v0/x is /v0/x, the redirect.
    let (code, out) = explain(&[
        "--request",
        "GET http://api.example.com:18000/v1/%2e%2e/v0/x",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        line(&out, "path:").contains("/v0/x (normalised from /v1/%2e%2e/v0/x"),
        "{out}"
    );
    assert!(line(&out, "verdict:").contains("301 redirect"), "{out}");

    // Nothing matches: the proxy would answer 404 itself (exit 1).
    let (code, out) = explain(&["--request", "GET http://other.example.org:18000/v1/orders"]);
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "verdict:").contains("404"), "{out}");
    let (code, out) = explain(&["--request", "GET http://api.example.com:9999/"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "verdict:").contains("nothing listens on port 9999"),
        "{out}"
    );

    // Bad input: exit 2 with the reason.
    let (code, out) = explain(&["--request", "GET"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("expected 'METHOD URL'"), "{out}");
    let (code, out) = explain(&[
        "--request",
        "GET http://api.example.com:18000/",
        "-H",
        "no colon",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("expected 'Name: value'"), "{out}");
}

#[test]
fn replies_of_a_failsafe_endpoint_pass_by_lock_out_protection_and_nothing_else_does() {
    // 203.0.113.7 is in block-scanners' range (a deny rule); as a failsafe endpoint its TCP
    // replies from port 6443 still pass.
    let fs = ["--failsafe", "203.0.113.7:6443"];
    let (code, out) = explain(&[
        fs[0],
        fs[1],
        "--packet",
        "tcp 203.0.113.7:6443 -> 198.18.0.1:41000",
    ]);
    assert_eq!(code, 0, "the API server's reply passes: {out}");
    assert!(line(&out, "verdict:").contains("PASS"), "{out}");
    assert!(
        line(&out, "decided by:").contains("lock-out protection")
            && line(&out, "decided by:").contains("203.0.113.7:6443"),
        "{out}"
    );
    assert!(
        line(&out, "failsafe:").contains("tcp 203.0.113.7:6443 (--failsafe)"),
        "{out}"
    );
    // Another source port: the policy judges, and the note says which replies would pass.
    let (code, out) = explain(&[
        fs[0],
        fs[1],
        "--packet",
        "tcp 203.0.113.7:6444 -> 198.18.0.1:41000",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "decided by:").contains("block-scanners"),
        "{out}"
    );
    assert!(
        line(&out, "failsafe note:")
            .contains("replies from 203.0.113.7 port 6443 pass whatever the policy says"),
        "{out}"
    );
    // No source port given: judged by the policy, with the same note.
    let (code, out) = explain(&[
        fs[0],
        fs[1],
        "--packet",
        "tcp 203.0.113.7 -> 198.18.0.1:41000",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "failsafe note:").contains("no source port given"),
        "{out}"
    );
    // UDP from the endpoint's port is not a TCP reply.
    let (code, out) = explain(&[
        fs[0],
        fs[1],
        "--packet",
        "udp 203.0.113.7:6443 -> 198.18.0.1:41000",
    ]);
    assert_eq!(code, 1, "{out}");
    // Without --failsafe the reply is dropped; a malformed endpoint is refused.
    let (code, out) = explain(&["--packet", "tcp 203.0.113.7:6443 -> 198.18.0.1:41000"]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("failsafe"), "{out}");
    let (code, out) = explain(&[
        "--failsafe",
        "api.example.com:6443",
        "--packet",
        "tcp 203.0.113.7:6443 -> 198.18.0.1:41000",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("expected ADDR:PORT"), "{out}");
}

#[test]
fn a_policy_the_node_does_not_select_is_named_and_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zone-a.yaml"),
        "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: zone-a }\nspec:\n  nodeSelector: { matchLabels: { zone: a } }\n  rules:\n    - { name: block, action: deny, from: [203.0.113.0/24] }\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(tollgate_bin())
            .arg("explain")
            .arg("--source")
            .arg(dir.path())
            .args(["--packet", "tcp 203.0.113.7:51000 -> 198.18.0.1:22"])
            .args(extra)
            .output()
            .expect("run tollgate explain");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // A node in zone b: the policy is not applied there, and explain says so.
    let (code, out) = run(&["--node-name", "node-b", "--node-label", "zone=b"]);
    assert_eq!(code, 0, "{out}");
    assert!(line(&out, "verdict:").contains("PASS"), "{out}");
    assert!(line(&out, "node:").contains("node-b (zone=b)"), "{out}");
    assert!(
        line(&out, "not applied on this node:").contains("L4Policy/zone-a"),
        "{out}"
    );
    // A node in zone a enforces it.
    let (code, out) = run(&["--node-label", "zone=a"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "decided by:").contains("L4Policy/zone-a rule block"),
        "{out}"
    );
    assert!(!out.contains("not applied on this node"), "{out}");
    // No node given: every policy applies, as in directory mode.
    let (code, out) = run(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("node:"), "{out}");
}
