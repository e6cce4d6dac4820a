//! The L7 proxy against RFC 9113 with the real binary: HTTP/2 (h2c) clients from python3-h2,
//! with its own checks off so that it can send malformed requests; the same rules as for
//! HTTP/1.1 clients (`l7_http_conformance.rs`) where they apply. What is done and what is known
//! to differ: docs/l7-limits.md, "Protocol conformance".
use tollgate_tests::l7_raw::start;
use tollgate_tests::require_root;

/// A python3-h2 client (its own checks off, so that it can send malformed requests): one h2c
/// connection per request, from `sys.argv[2]` (JSON: a list of `[name, [[field, value]...]]`).
/// Prints, per name, the response's status, headers and body, or the code of the stream's (or
/// the connection's) reset.
const H2_CLIENT: &str = r#"
import json, socket, sys
import h2.config, h2.connection, h2.events, h2.exceptions
port, cases = int(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for name, fields in cases:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8",
        validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False))
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [tuple(f) for f in fields], end_stream=True)
    s.sendall(c.data_to_send())
    r = {"status": None, "headers": {}, "body": "", "reset": None}
    done = False
    try:
        while not done:
            data = s.recv(65536)
            if not data:
                break
            for e in c.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                    for k, v in e.headers:
                        if k == ":status":
                            r["status"] = int(v)
                        else:
                            r["headers"][k] = v
                elif isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                    r["body"] += e.data.decode("utf-8", "replace")
                    c.acknowledge_received_data(e.flow_controlled_length, sid)
                elif isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                    done = True
                elif isinstance(e, h2.events.StreamReset) and e.stream_id == sid:
                    r["reset"] = int(e.error_code)
                    done = True
                elif isinstance(e, h2.events.ConnectionTerminated):
                    r["reset"] = int(e.error_code)
                    done = True
            s.sendall(c.data_to_send())
    except (OSError, h2.exceptions.ProtocolError) as e:
        r["error"] = str(e)
    s.close()
    out[name] = r
print(json.dumps(out))
"#;

#[test]
fn http2_requests_follow_rfc_9113_and_the_same_rules_as_http1() {
    require_root!();
    const PROXY: u16 = 18563;
    const ADMIN: u16 = 19869;
    const ECHO: u16 = 19870;
    const RAW: u16 = 19871;
    let (_lab, _app, _agent) = start("httph2", PROXY, ADMIN, ECHO, RAW);
    let get = |host: &str, path: &str, more: &[(&str, &str)]| {
        let mut f: Vec<(String, String)> = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", host),
            (":path", path),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        f.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        f
    };
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("plain", get("a.example", "/h2", &[])),
        (
            "te-trailers",
            get("a.example", "/h2", &[("te", "trailers")]),
        ),
        (
            "connection",
            get("a.example", "/h2", &[("connection", "keep-alive")]),
        ),
        (
            "keep-alive",
            get("a.example", "/h2", &[("keep-alive", "5")]),
        ),
        (
            "proxy-connection",
            get("a.example", "/h2", &[("proxy-connection", "keep-alive")]),
        ),
        (
            "transfer-encoding",
            get("a.example", "/h2", &[("transfer-encoding", "chunked")]),
        ),
        (
            "upgrade",
            get("a.example", "/h2", &[("upgrade", "websocket")]),
        ),
        ("te-gzip", get("a.example", "/h2", &[("te", "gzip")])),
        (
            "upper-case name",
            get("a.example", "/h2", &[("X-Upper", "1")]),
        ),
        (
            "host disagreeing",
            get("a.example", "/h2", &[("host", "b.example")]),
        ),
        (
            "scheme ftp",
            vec![
                (":method".into(), "GET".into()),
                (":scheme".into(), "ftp".into()),
                (":authority".into(), "a.example".into()),
                (":path".into(), "/h2".into()),
            ],
        ),
        (
            "connect",
            vec![
                (":method".into(), "CONNECT".into()),
                (":authority".into(), "a.example:443".into()),
            ],
        ),
        (
            "options *",
            vec![
                (":method".into(), "OPTIONS".into()),
                (":scheme".into(), "http".into()),
                (":authority".into(), "a.example".into()),
                (":path".into(), "*".into()),
            ],
        ),
        ("response hop-by-hop", get("raw.example", "/hop", &[])),
        ("response te-and-cl", get("raw.example", "/te-and-cl", &[])),
        ("response 204", get("raw.example", "/204", &[])),
        (
            "value padded",
            get("a.example", "/h2", &[("x-a", " padded ")]),
        ),
        (
            "value ending in a tab",
            get("a.example", "/h2", &[("x-a", "v\t")]),
        ),
        ("value empty", get("a.example", "/h2", &[("x-a", "")])),
    ];
    let arg = serde_json::to_string(&cases).unwrap();
    let out = std::process::Command::new(tollgate_tests::PYTHON)
        .args(["-c", H2_CLIENT, &PROXY.to_string(), &arg])
        .output()
        .expect("run the python3-h2 client");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(report.trim()).expect("the client's report");

    assert_eq!(r["plain"]["status"], 200, "{report}");
    // `TE: trailers` is the one TE allowed (RFC 9113 8.2.2); hop-by-hop, it is not forwarded.
    assert_eq!(r["te-trailers"]["status"], 200, "{report}");
    let seen: serde_json::Value =
        serde_json::from_str(r["te-trailers"]["body"].as_str().unwrap()).unwrap();
    assert!(seen["headers"]["te"].is_null(), "{report}");
    // Connection-specific fields, another TE, upper-case names: malformed (RFC 9113 8.2.1,
    // 8.2.2): the stream is reset with PROTOCOL_ERROR (1), nothing reaches the backend.
    for case in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te-gzip",
        "upper-case name",
    ] {
        assert_eq!(r[case]["reset"], 1, "{case}: {report}");
        assert!(r[case]["status"].is_null(), "{case}: {report}");
    }
    // A Host naming another authority than :authority (RFC 9113 8.3.1): 400.
    assert_eq!(r["host disagreeing"]["status"], 400, "{report}");
    // A scheme other than http and https (RFC 9110 section 7.4): 400, as in HTTP/1.1.
    assert_eq!(r["scheme ftp"]["status"], 400, "{report}");
    // CONNECT: 405 with Allow, as in HTTP/1.1; OPTIONS *: 200 with Allow.
    assert_eq!(r["connect"]["status"], 405, "{report}");
    assert!(r["connect"]["headers"]["allow"].is_string(), "{report}");
    assert_eq!(r["options *"]["status"], 200, "{report}");
    assert!(r["options *"]["headers"]["allow"].is_string(), "{report}");
    // Backend responses: hop-by-hop fields removed; a framing that cannot be relayed: 502.
    assert_eq!(r["response hop-by-hop"]["status"], 200, "{report}");
    for h in [
        "x-named",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "connection",
    ] {
        assert!(
            r["response hop-by-hop"]["headers"][h].is_null(),
            "{h}: {report}"
        );
    }
    assert_eq!(r["response te-and-cl"]["status"], 502, "{report}");
    // A backend's 204 with a Content-Length: relayed without it (RFC 9110 section 8.6), which
    // an HTTP/2 client would take for a malformed response.
    assert_eq!(r["response 204"]["status"], 204, "{report}");
    assert!(
        r["response 204"]["headers"]["content-length"].is_null(),
        "{report}"
    );
    // A field value with leading or trailing whitespace is malformed (RFC 9113 section 8.2.1)
    // and not forwarded: 400. An empty value is a value.
    assert_eq!(r["value padded"]["status"], 400, "{report}");
    assert_eq!(r["value ending in a tab"]["status"], 400, "{report}");
    assert_eq!(r["value empty"]["status"], 200, "{report}");
}

/// An h2c backend (python3-h2) that answers each request with the JSON of the trailers it
/// received (`{"trailers": {name: value}}`).
const H2C_TRAILER_ECHO: &str = r#"
import json, socket, sys, threading
import h2.config, h2.connection, h2.events
def serve(s):
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, header_encoding="utf-8", validate_inbound_headers=False))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    seen = {}
    while True:
        data = s.recv(65536)
        if not data:
            return
        for e in c.receive_data(data):
            if isinstance(e, h2.events.TrailersReceived):
                seen[e.stream_id] = dict(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                body = json.dumps({"trailers": seen.pop(e.stream_id, {})}).encode()
                c.send_headers(e.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
                c.send_data(e.stream_id, body, end_stream=True)
        s.sendall(c.data_to_send())
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1])))
l.listen(16)
while True:
    s, _ = l.accept()
    threading.Thread(target=serve, args=(s,), daemon=True).start()
"#;

/// A python3-h2 client that POSTs `abc` with the trailers of `sys.argv[2]` (JSON pairs) over
/// h2c and prints the response's status and body.
const H2_TRAILER_CLIENT: &str = r#"
import json, socket, sys
import h2.config, h2.connection, h2.events
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(5)
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
c.initiate_connection()
sid = c.get_next_available_stream_id()
c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "t.example"), (":path", "/t")])
c.send_data(sid, b"abc")
c.send_headers(sid, [tuple(p) for p in json.loads(sys.argv[2])], end_stream=True)
s.sendall(c.data_to_send())
r = {"status": None, "body": ""}
done = False
while not done:
    data = s.recv(65536)
    if not data:
        break
    for e in c.receive_data(data):
        if isinstance(e, h2.events.ResponseReceived):
            r["status"] = int(dict(e.headers)[":status"])
        elif isinstance(e, h2.events.DataReceived):
            r["body"] += e.data.decode()
            c.acknowledge_received_data(e.flow_controlled_length, sid)
        elif isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated)):
            r["end"] = type(e).__name__
            done = True
    s.sendall(c.data_to_send())
print(json.dumps(r))
"#;

/// A client's trailers reach an HTTP/2 backend without what no trailer may carry (RFC 9110
/// section 6.5.1) and without the consumer field, which is only ever the proxy's.
#[test]
fn request_trailers_reach_an_http2_backend_filtered() {
    use tollgate_tests::l7::{backend_object, documents, gateway, route_object, start_agent, to};
    use tollgate_tests::PYTHON;
    require_root!();
    const PROXY: u16 = 18564;
    const ADMIN: u16 = 19872;
    const H2C: u16 = 19873;
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let lab = tollgate_tests::Lab::new("h2trail", &[]);
    let _backend = Child(
        std::process::Command::new(PYTHON)
            .args(["-c", H2C_TRAILER_ECHO, &H2C.to_string()])
            .spawn()
            .expect("start the h2c backend"),
    );
    lab.write_policy(
        "l7.yaml",
        &documents(&[
            &gateway(&[("http", PROXY, None)]),
            &backend_object("h2", &[H2C], "  appProtocol: kubernetes.io/h2c\n"),
            &route_object(
                "t",
                &format!(
                    "  hostnames: ['t.example']\n  rules:\n    - backendRefs: [{}]\n",
                    to("h2")
                ),
            ),
        ]),
    );
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &[]);
    let trailers = serde_json::json!([
        ["x-check", "1"],
        ["x-tollgate-consumer", "mallory"],
        ["authorization", "Bearer stolen"],
        ["content-type", "text/evil"],
    ])
    .to_string();
    let mut last = String::new();
    for _ in 0..50 {
        let out = std::process::Command::new(PYTHON)
            .args(["-c", H2_TRAILER_CLIENT, &PROXY.to_string(), &trailers])
            .output()
            .expect("run the python3-h2 client");
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && last.contains("\"status\": 200") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let r: serde_json::Value = serde_json::from_str(last.trim()).expect(&last);
    assert_eq!(r["status"], 200, "{last}");
    let seen: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).expect(&last);
    let t = &seen["trailers"];
    assert_eq!(t["x-check"], "1", "an ordinary trailer passes: {last}");
    for gone in ["x-tollgate-consumer", "authorization", "content-type"] {
        assert!(
            t[gone].is_null(),
            "{gone} must not reach the backend: {last}"
        );
    }
}
