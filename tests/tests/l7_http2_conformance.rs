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
}
