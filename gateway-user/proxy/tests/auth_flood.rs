//! A flood of basic-auth passwords against the proxy, in process: while every password check
//! thread is busy and the queue is full, other requests (a route without authentication, an
//! API key on the flooded route) are still answered, and further passwords are refused at once
//! with 503 instead of queueing. Functional, not timed: the only waits are generous time-outs.
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_compile::snapshot::compile_documents;
use tollgate_model::Documents;
use tollgate_proxy::metrics::HttpMetrics;
use tollgate_proxy::{Proxy, ProxyConfig};

/// Generous: a request that takes this long is stuck, not slow.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Route `app` (`/`, basic auth and API keys) and route `free` (`/free`, a redirect the proxy
/// answers itself, no authentication).
fn revision(port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: edge }}
spec:
  gatewayClassName: tollgate
  listeners:
    - {{ name: http, port: {port}, protocol: HTTP }}
---
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: {{ name: app }}
spec:
  endpoints:
    - ip: {{ address: 127.0.0.1, port: 9 }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: app }}
spec:
  parentRefs: [{{ name: edge }}]
  rules:
    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: app }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: free }}
spec:
  parentRefs: [{{ name: edge }}]
  rules:
    - matches: [{{ path: {{ value: /free }} }}]
      filters:
        - type: RequestRedirect
          requestRedirect: {{ hostname: elsewhere.example, statusCode: 302 }}
---
apiVersion: tollgate.dev/v1alpha1
kind: AuthPolicy
metadata: {{ name: app-auth }}
spec:
  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }}]
  apiKey: {{ header: X-Api-Key, credentialRefs: [{{ name: keys }}] }}
  basicAuth: {{ credentialRefs: [{{ name: users }}] }}
"
    )
}

/// The status and text of the answer to `GET path` with `headers` (HTTP/1.1, one request per
/// connection).
async fn ask(port: u16, path: &str, headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap_or_else(|e| panic!("connect to the proxy: {e}"));
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// As [`ask`], within [`ANSWER_TIMEOUT`].
async fn get(port: u16, path: &str, headers: &str) -> (u16, String) {
    tokio::time::timeout(ANSWER_TIMEOUT, ask(port, path, headers))
        .await
        .unwrap_or_else(|_| panic!("GET {path} with {headers:?}: no answer in {ANSWER_TIMEOUT:?}"))
}

/// Waits (at most [`ANSWER_TIMEOUT`]) until `refused` is above `n`.
async fn refusals_above(refused: &AtomicUsize, n: usize) {
    let wait = async {
        while refused.load(Ordering::Relaxed) <= n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("no password refused with 503 in {ANSWER_TIMEOUT:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_flood_does_not_hold_up_other_requests() {
    let secrets = tempfile::tempdir().unwrap();
    // A cost-13 bcrypt hash (the salt and digest of a cost-4 one: no password matches, and
    // making it costs nothing): each check takes seconds unoptimised, so the flood below
    // keeps every check thread busy for the whole test.
    let slow = bcrypt::hash("unused", 4)
        .unwrap()
        .replacen("$04$", "$13$", 1);
    write(
        secrets.path(),
        "default/users/htpasswd",
        &format!("alice:{slow}\n"),
    );
    let salt = b"flood-test-salt";
    let digest = Sha256::new()
        .chain_update(salt)
        .chain_update(b"the-key")
        .finalize();
    write(
        secrets.path(),
        "default/keys/keys",
        &format!(
            "app-1:sha256:{}:{}\n",
            hex::encode(salt),
            hex::encode(digest)
        ),
    );

    let port = free_port();
    let docs = Documents::inline(&[("l7.yaml", &revision(port))]);
    let table = compile_documents(&docs, None)
        .unwrap_or_else(|e| panic!("the revision compiles: {e:?}"))
        .l7;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = HttpMetrics::register(&mut registry);
    let proxy = Proxy::new(
        ProxyConfig {
            address: Ipv4Addr::LOCALHOST.into(),
            tls_secrets_dir: secrets.path().to_owned(),
            ..ProxyConfig::default()
        },
        metrics,
    );
    let prepared = proxy
        .prepare(&table)
        .unwrap_or_else(|e| panic!("prepare: {e}"));
    proxy.commit(prepared, "flood");
    let wrong = "Authorization: Basic YWxpY2U6d3Jvbmc=\r\n"; // alice:wrong

    // Clients sending alice wrong passwords, more at once than threads and queue hold; each
    // sends again as soon as it is answered (401 after its check, or 503 at once when
    // refused, then after 10 ms), as an attacker would.
    let refused = Arc::new(AtomicUsize::new(0));
    let refusal = Arc::new(Mutex::new(String::new()));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (refused, refusal) = (refused.clone(), refusal.clone());
        flood.spawn(async move {
            loop {
                let (status, text) = ask(port, "/", wrong).await;
                if status == 503 {
                    *refusal.lock().unwrap() = text;
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
    }
    // Every check thread is busy and the queue full once a password is refused.
    refusals_above(&refused, 0).await;
    let before = refused.load(Ordering::Relaxed);
    let text = refusal.lock().unwrap().to_ascii_lowercase();
    assert!(text.contains("\r\nretry-after: 1\r\n"), "{text}");
    assert!(text.contains("too many password checks"), "{text}");
    assert!(!text.contains("www-authenticate"), "{text}");

    // Meanwhile: a route without authentication, and an API key on the flooded route.
    let (status, text) = get(port, "/free", "").await;
    assert_eq!(status, 302, "{text}");
    let (status, text) = get(port, "/", "X-Api-Key: not-the-key\r\n").await;
    assert_eq!(status, 401, "{text}");
    let (status, text) = get(port, "/", "X-Api-Key: the-key\r\n").await;
    // Authenticated, and sent on to the backend, which does not answer (port 9).
    assert!(status == 502 || status == 503, "{status}: {text}");
    assert!(!text.contains("password checks"), "{text}");

    // And passwords are still being refused: those requests did not wait for a check.
    refusals_above(&refused, before).await;

    // Counted as `busy`, apart from wrong credentials.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.lines().any(|l| l
            .starts_with("tollgate_auth_failures_total{route=\"default/app\",reason=\"busy\"}")),
        "{text}"
    );

    flood.abort_all();
    drop(proxy);
}
