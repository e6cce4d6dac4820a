//! TLS termination on HTTPS listeners, with real clients: curl (HTTP/2 and HTTP/1.1 by ALPN,
//! SNI through `--resolve`), `openssl s_client` for the certificate served per SNI name, and a
//! Python `ssl` client that keeps one connection open while certificates are replaced.
//! Certificates come from a test CA made by the openssl command line tool.
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use tollgate_tests::admin::metrics;
use tollgate_tests::gitserver::TestCa;
use tollgate_tests::l7::{
    backend_object, curl, documents, install_secret, route_object, start_agent, to, Backend, Reply,
};
use tollgate_tests::{metric_value, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED, PYTHON};

const PROXY: u16 = 18100;
const BACKEND: u16 = 19640;

/// A Gateway `edge` with HTTPS listeners `(name, port, hostname, secret)`.
fn tls_gateway(listeners: &[(&str, u16, Option<&str>, &str)]) -> String {
    let mut y = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: edge }\nspec:\n  gatewayClassName: tollgate\n  listeners:\n",
    );
    for (name, port, host, secret) in listeners {
        y.push_str(&format!(
            "    - {{ name: {name}, port: {port}, protocol: HTTPS"
        ));
        if let Some(h) = host {
            y.push_str(&format!(", hostname: '{h}'"));
        }
        y.push_str(&format!(
            ", tls: {{ mode: Terminate, certificateRefs: [{{ kind: Secret, name: {secret} }}] }} }}\n"
        ));
    }
    y
}

fn policy(listeners: &[(&str, u16, Option<&str>, &str)]) -> String {
    documents(&[
        &tls_gateway(listeners),
        &backend_object("one", &[BACKEND], ""),
        &route_object(
            "main",
            &format!("  rules:\n    - backendRefs: [{}]\n", to("one")),
        ),
    ])
}

/// Installs `cert` and `key` as Secret `default/name` in `secrets` (the files replaced in
/// place, as `cp` would).
fn install(secrets: &Path, name: &str, (cert, key): &(PathBuf, PathBuf)) {
    install_secret(secrets, name, &[("tls.crt", cert), ("tls.key", key)]);
}

/// curl to `https://host:PROXY/path`, the name resolved to 127.0.0.1 (so it is also the SNI).
fn https(ca: &Path, host: &str, path: &str, extra: &[&str]) -> Reply {
    https_at(ca, host, PROXY, path, extra)
}

/// As [`https`], to `port`.
fn https_at(ca: &Path, host: &str, port: u16, path: &str, extra: &[&str]) -> Reply {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}{path}");
    let ca = ca.to_str().unwrap();
    let mut args = vec!["--cacert", ca, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// The subject of the certificate served for SNI `name` (`openssl s_client`), e.g.
/// `CN = a.tls.test`.
fn served_subject(name: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{PROXY}"),
            "-servername",
            name,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| {
            format!(
                "no certificate: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            )
        })
}

#[test]
fn https_listeners_serve_h2_and_http11_with_the_certificate_of_each_sni_name() {
    require_root!();
    const ADMIN: u16 = 19641;
    let lab = Lab::new("l7tlssni", &[]);
    let _backend = Backend::start("one", BACKEND);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "tls-test-ca");
    let secrets = dir.path().join("secrets");
    install(
        &secrets,
        "a",
        &ca.server_cert_for("a", "a.tls.test", "DNS:a.tls.test"),
    );
    install(
        &secrets,
        "b",
        &ca.server_cert_for("b", "wild.b.tls.test", "DNS:*.b.tls.test"),
    );
    lab.write_policy(
        "l7.yaml",
        &policy(&[
            ("a", PROXY, Some("a.tls.test"), "a"),
            ("b", PROXY, Some("*.b.tls.test"), "b"),
        ]),
    );
    let secrets_arg = secrets.to_str().unwrap().to_owned();
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &["--tls-secrets-dir", &secrets_arg]);

    // HTTP/2 and HTTP/1.1, chosen by ALPN; curl checks the certificate against the CA and
    // the name.
    let r = https(&ca.cert, "a.tls.test", "/x", &["--http2"]);
    assert_eq!((r.status, r.version.as_str()), (200, "HTTP/2"), "{r:?}");
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    let r = https(&ca.cert, "a.tls.test", "/x", &["--http1.1"]);
    assert_eq!((r.status, r.version.as_str()), (200, "HTTP/1.1"), "{r:?}");
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    // The wildcard listener, with its own certificate.
    let r = https(&ca.cert, "x.b.tls.test", "/y", &["--http2"]);
    assert_eq!((r.status, r.version.as_str()), (200, "HTTP/2"), "{r:?}");

    // Each name gets its listener's certificate.
    assert_eq!(served_subject("a.tls.test"), "CN = a.tls.test");
    assert_eq!(served_subject("x.b.tls.test"), "CN = wild.b.tls.test");

    // A name no listener has, and no SNI at all (no listener without hostname): no handshake.
    let r = https(&ca.cert, "c.tls.test", "/", &[]);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.error.contains("alert"), "{}", r.error);
    let r = curl(&[
        "--cacert",
        ca.cert.to_str().unwrap(),
        &format!("https://127.0.0.1:{PROXY}/"),
    ]);
    assert_eq!(r.status, 0, "{r:?}");
    // Plain HTTP on the TLS port.
    let r = curl(&[&format!("http://127.0.0.1:{PROXY}/")]);
    assert_ne!(r.status, 200, "{r:?}");
    // A client that does not trust the certificate gives up.
    let other = TestCa::new(dir.path(), "other-ca");
    let r = https(&other.cert, "a.tls.test", "/", &[]);
    assert_eq!(r.status, 0, "{r:?}");

    let m = metrics(ADMIN);
    let failures = |reason: &str| {
        metric_value(
            &m,
            &format!("tollgate_http_tls_handshake_failures_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0)
    };
    assert_eq!(failures("unknown_sni"), 2, "{m}");
    assert_eq!(failures("malformed"), 1, "{m}");
    assert_eq!(failures("client_alert"), 1, "{m}");
}

/// A Python client that keeps one TLS connection open and sends a request on it each time it
/// reads a line: prints the status and the subject CN of the certificate of the connection.
struct KeepAlive {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const KEEPALIVE_SCRIPT: &str = r#"
import http.client, socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=host)
cn = dict(x[0] for x in sock.getpeercert()["subject"])["commonName"]
for _ in sys.stdin:
    sock.sendall(f"GET /keep HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    r = http.client.HTTPResponse(sock)
    r.begin()
    r.read()
    print(r.status, cn, flush=True)
"#;

impl KeepAlive {
    fn open(host: &str, ca: &Path) -> KeepAlive {
        let mut child = Command::new(PYTHON)
            .args([
                "-c",
                KEEPALIVE_SCRIPT,
                host,
                &PROXY.to_string(),
                ca.to_str().unwrap(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        KeepAlive {
            child,
            stdin,
            stdout,
        }
    }

    /// One request on the connection: "STATUS CN".
    fn request(&mut self) -> String {
        writeln!(self.stdin).expect("write to the client");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read from the client");
        line.trim().to_owned()
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn replaced_certificate_files_are_served_without_a_restart_and_open_connections_stay() {
    require_root!();
    const ADMIN: u16 = 19642;
    let lab = Lab::new("l7tlsreload", &[]);
    let _backend = Backend::start("one", BACKEND);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "tls-test-ca");
    let secrets = dir.path().join("secrets");
    install(
        &secrets,
        "site",
        &ca.server_cert_for("old", "old.site.tls.test", "DNS:site.tls.test"),
    );
    lab.write_policy(
        "l7.yaml",
        &policy(&[("web", PROXY, Some("site.tls.test"), "site")]),
    );
    let secrets_arg = secrets.to_str().unwrap().to_owned();
    let mut agent = start_agent(&lab, ADMIN, &[PROXY], &["--tls-secrets-dir", &secrets_arg]);

    let mut open = KeepAlive::open("site.tls.test", &ca.cert);
    assert_eq!(open.request(), "200 old.site.tls.test");

    // New files in place: the next handshakes get the new certificate, without a restart.
    install(
        &secrets,
        "site",
        &ca.server_cert_for("new", "new.site.tls.test", "DNS:site.tls.test"),
    );
    agent
        .wait_for_log("TLS certificate reloaded", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(served_subject("site.tls.test"), "CN = new.site.tls.test");
    let r = https(&ca.cert, "site.tls.test", "/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    // The connection opened before is still served, on its session.
    assert_eq!(open.request(), "200 old.site.tls.test");
    assert!(agent.is_running());

    // A broken key: logged and counted, the new certificate stays in use.
    fs::write(secrets.join("default/site/tls.key"), "not a key\n").unwrap();
    agent
        .wait_for_log("cannot be loaded", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent.log().contains("default/site/tls.key: no private key"),
        "{}",
        agent.log()
    );
    assert_eq!(served_subject("site.tls.test"), "CN = new.site.tls.test");
    let r = https(&ca.cert, "site.tls.test", "/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(open.request(), "200 old.site.tls.test");
    let m = metrics(ADMIN);
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_tls_certificate_reload_failures_total{secret=\"default/site\"}"
        ),
        Some(1),
        "{m}"
    );
    assert_eq!(agent.log_count(POLICY_APPLIED), 1);
}

#[test]
fn a_broken_certificate_refuses_the_revision_and_a_missing_one_leaves_out_its_listener() {
    require_root!();
    const ADMIN: u16 = 19643;
    const SECOND: u16 = 18101;
    let lab = Lab::new("l7tlsrefuse", &[]);
    let _backend = Backend::start("one", BACKEND);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "tls-test-ca");
    let secrets = dir.path().join("secrets");
    install(
        &secrets,
        "site",
        &ca.server_cert_for("site", "site.tls.test", "DNS:site.tls.test"),
    );
    // Secret "mismatch": the certificate of one pair with the key of another.
    let a = ca.server_cert_for("m1", "m.tls.test", "DNS:m.tls.test");
    let b = ca.server_cert_for("m2", "m.tls.test", "DNS:m.tls.test");
    install(&secrets, "mismatch", &(a.0.clone(), b.1.clone()));
    lab.write_policy(
        "l7.yaml",
        &policy(&[("web", PROXY, Some("site.tls.test"), "site")]),
    );
    let secrets_arg = secrets.to_str().unwrap().to_owned();
    let mut agent = start_agent(
        &lab,
        ADMIN,
        &[PROXY],
        &["--tls-secrets-dir", &secrets_arg, "--interval", "1s"],
    );
    assert_eq!(https(&ca.cert, "site.tls.test", "/", &[]).status, 200);

    // A revision that adds a listener whose Secret has a key of another certificate.
    lab.write_policy(
        "l7.yaml",
        &policy(&[
            ("web", PROXY, Some("site.tls.test"), "site"),
            ("more", SECOND, Some("m.tls.test"), "mismatch"),
        ]),
    );
    agent.sighup();
    agent
        .wait_for_log("apply failed", APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = agent.log();
    assert!(
        log.contains("listener \"more\" of Gateway default/edge")
            && log.contains("default/mismatch/tls.key does not go with")
            && log.contains("is not the key of the certificate"),
        "{log}"
    );
    assert_eq!(agent.log_count(POLICY_APPLIED), 1);
    // The previous revision serves on; the new port never opened.
    assert_eq!(https(&ca.cert, "site.tls.test", "/", &[]).status, 200);
    assert!(tollgate_tests::l7::port_is_closed(SECOND));

    // A listener whose Secret directory is missing is left out (naming the file), not the
    // revision: the Gateway's other listener serves, and its port never opens.
    lab.write_policy(
        "l7.yaml",
        &policy(&[
            ("web", PROXY, Some("site.tls.test"), "site"),
            ("more", SECOND, Some("late.tls.test"), "absent"),
        ]),
    );
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = agent.log();
    assert!(
        log.contains("revision applied in part") && log.contains("default/absent/tls.crt"),
        "{log}"
    );
    assert_eq!(https(&ca.cert, "site.tls.test", "/", &[]).status, 200);
    assert!(tollgate_tests::l7::port_is_closed(SECOND));
    let m = metrics(ADMIN);
    assert_eq!(
        metric_value(&m, "tollgate_policy_apply_failures_total{reason=\"apply\"}"),
        Some(1),
        "only the broken certificate was refused: {m}"
    );

    // The certificate copied in later: the listener serves at the next pass (--interval 1s),
    // with no policy change and no SIGHUP.
    install(
        &secrets,
        "absent",
        &ca.server_cert_for("late", "late.tls.test", "DNS:late.tls.test"),
    );
    agent
        .wait_for_log_count(POLICY_APPLIED, 3, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    tollgate_tests::l7::wait_for_port(&mut agent, SECOND);
    let r = https_at(&ca.cert, "late.tls.test", SECOND, "/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(https(&ca.cert, "site.tls.test", "/", &[]).status, 200);
}

#[test]
fn a_client_that_never_completes_the_handshake_is_cut_and_counted() {
    require_root!();
    const ADMIN: u16 = 19644;
    let lab = Lab::new("l7tlsslow", &[]);
    let _backend = Backend::start("one", BACKEND);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "tls-test-ca");
    let secrets = dir.path().join("secrets");
    install(
        &secrets,
        "site",
        &ca.server_cert_for("site", "site.tls.test", "DNS:site.tls.test"),
    );
    lab.write_policy("l7.yaml", &policy(&[("web", PROXY, None, "site")]));
    let secrets_arg = secrets.to_str().unwrap().to_owned();
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &["--tls-secrets-dir", &secrets_arg]);

    // A TCP connection that sends nothing: still open after 2s, closed by the proxy once the
    // handshake time (10s) is over.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", PROXY)).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 16];
    match std::io::Read::read(&mut silent, &mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the connection should still be open after 2s: {other:?}"),
    }
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    match std::io::Read::read(&mut silent, &mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the proxy should have closed the connection: {other:?}"),
    }
    // Other clients are served, by the listener without hostname: any SNI name...
    let r = curl(&[
        "--cacert",
        ca.cert.to_str().unwrap(),
        "--resolve",
        &format!("site.tls.test:{PROXY}:127.0.0.1"),
        &format!("https://site.tls.test:{PROXY}/"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    // ...and none (an IP address is not sent as SNI; the name is not checked here).
    let r = curl(&[
        "--insecure",
        "--http2",
        &format!("https://127.0.0.1:{PROXY}/"),
    ]);
    assert_eq!((r.status, r.version.as_str()), (200, "HTTP/2"), "{r:?}");
    let m = metrics(ADMIN);
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_tls_handshake_failures_total{reason=\"timeout\"}"
        ),
        Some(1),
        "{m}"
    );
}

#[test]
fn client_certificates_are_required_on_listeners_with_frontend_validation_only() {
    require_root!();
    const ADMIN: u16 = 19645;
    let lab = Lab::new("l7tlsmtls", &[]);
    let _backend = Backend::start("one", BACKEND);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "tls-test-ca");
    let clients = TestCa::new(dir.path(), "clients-ca");
    let strangers = TestCa::new(dir.path(), "strangers-ca");
    let secrets = dir.path().join("secrets");
    install(
        &secrets,
        "site",
        &ca.server_cert_for("site", "site", "DNS:open.tls.test,DNS:secure.tls.test"),
    );
    install_secret(&secrets, "clients", &[("ca.crt", &clients.cert)]);
    // Two Gateways share the port: the second verifies client certificates for its HTTPS
    // listeners (Gateway API v1.6: spec.tls.frontend.default.validation), the first does not.
    let open = tls_gateway(&[("open", PROXY, Some("open.tls.test"), "site")]);
    let secure = tls_gateway(&[("secure", PROXY, Some("secure.tls.test"), "site")])
        .replace("name: edge }", "name: secure-edge }")
        + "  tls:\n    frontend:\n      default:\n        validation: { caCertificateRefs: [{ group: '', kind: ConfigMap, name: clients }] }\n";
    lab.write_policy(
        "l7.yaml",
        &documents(&[
            &open,
            &secure,
            &backend_object("one", &[BACKEND], ""),
            &route_object(
                "main",
                &format!("  rules:\n    - backendRefs: [{}]\n", to("one")),
            )
            .replace(
                "[{ name: edge }]",
                "[{ name: edge }, { name: secure-edge }]",
            ),
        ]),
    );
    let secrets_arg = secrets.to_str().unwrap().to_owned();
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &["--tls-secrets-dir", &secrets_arg]);

    let (cert, key) = clients.client_cert("alice", "alice");
    let (other_cert, other_key) = strangers.client_cert("mallory", "mallory");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (other_cert, other_key) = (other_cert.to_str().unwrap(), other_key.to_str().unwrap());

    // With a certificate of the trusted CA: served, over HTTP/2 and HTTP/1.1.
    let r = https(
        &ca.cert,
        "secure.tls.test",
        "/",
        &["--cert", cert, "--key", key, "--http2"],
    );
    assert_eq!((r.status, r.version.as_str()), (200, "HTTP/2"), "{r:?}");
    let r = https(
        &ca.cert,
        "secure.tls.test",
        "/",
        &["--cert", cert, "--key", key, "--http1.1"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Without one, or with one of another CA: no handshake.
    let r = https(&ca.cert, "secure.tls.test", "/", &[]);
    assert_eq!(r.status, 0, "{r:?}");
    let r = https(
        &ca.cert,
        "secure.tls.test",
        "/",
        &["--cert", other_cert, "--key", other_key],
    );
    assert_eq!(r.status, 0, "{r:?}");
    // The other Gateway's listener on the port asks for none...
    let r = https(&ca.cert, "open.tls.test", "/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    // ...and its connections cannot be used for the hosts of the one that does (HTTP/1.1
    // Host, HTTP/2 :authority).
    for version in ["--http1.1", "--http2"] {
        let r = https(
            &ca.cert,
            "open.tls.test",
            "/",
            &["-H", "Host: secure.tls.test", version],
        );
        assert_eq!(r.status, 421, "{version}: {r:?}");
    }
    // A gRPC call too: the 421 stays an HTTP 421 (it is for the client's HTTP/2 layer, which
    // may retry on a new connection), with the gRPC status beside it.
    let r = https(
        &ca.cert,
        "open.tls.test",
        "/svc.S/M",
        &[
            "-H",
            "Host: secure.tls.test",
            "-H",
            "content-type: application/grpc",
            "--http2",
            "--data-binary",
            "",
        ],
    );
    assert_eq!(
        (r.status, r.header("grpc-status")),
        (421, Some("2")),
        "{r:?}"
    );

    let m = metrics(ADMIN);
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_tls_handshake_failures_total{reason=\"client_certificate\"}"
        ),
        Some(2),
        "{m}"
    );

    // Session resumption skips the client certificate: a session resumes only while the CA
    // files it was verified against are in use. Resumed with no certificate at all...
    let sessions = dir.path().join("sessions");
    fs::create_dir_all(&sessions).unwrap();
    let first = sessions.join("first");
    let second = sessions.join("second");
    let third = sessions.join("third");
    let ca_path = ca.cert.to_str().unwrap();
    let out = s_client(ca_path, &["-cert", cert, "-key", key], None, &first);
    assert!(
        out.contains("New, TLSv1.3") && out.contains("HTTP/1.1 200"),
        "{out}"
    );
    let out = s_client(ca_path, &[], Some(&first), &second);
    assert!(
        out.contains("Reused, TLSv1.3") && out.contains("HTTP/1.1 200"),
        "{out}"
    );
    // ...until the ConfigMap's CA changes (here to one that did not sign alice's certificate):
    // then it is a full handshake, which asks for a certificate.
    install_secret(&secrets, "clients", &[("ca.crt", &strangers.cert)]);
    std::thread::sleep(Duration::from_millis(2500));
    let out = s_client(ca_path, &[], Some(&second), &third);
    assert!(!out.contains("Reused"), "{out}");
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
}

/// `openssl s_client` to the mTLS listener (`secure.tls.test`, TLS 1.3) with `extra`, resuming
/// the session in `resume` if given, sending one request and saving its session to `save`;
/// what it printed.
fn s_client(ca: &str, extra: &[&str], resume: Option<&Path>, save: &Path) -> String {
    let connect = format!("127.0.0.1:{PROXY}");
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "secure.tls.test",
        "-CAfile",
        ca,
        "-tls1_3",
        "-ign_eof",
        "-sess_out",
        save.to_str().unwrap(),
    ];
    if let Some(r) = resume {
        args.extend(["-sess_in", r.to_str().unwrap()]);
    }
    args.extend(extra);
    let mut child = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: secure.tls.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
