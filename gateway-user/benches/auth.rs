//! What checking an API key costs, by the number of keys in the key file.
//!
//! The real request path: `tollgate_proxy::auth::authenticate` on a policy with one key file
//! loaded by `AuthStore` from disk, key in header `X-Api-Key`, on one thread; CPU time of that
//! thread (`CLOCK_THREAD_CPUTIME_ID`) per check, median of interleaved rounds. Keys presented: a
//! wrong key of 64 hex digits (what the documented recipe makes), a wrong key of 512 bytes (the
//! longest that is hashed) and a 61,440-byte key (refused before hashing). Files of 1, 1,000
//! and 10,000 keys, with one salt for the file (the recipe) and with a salt per line (the
//! slower path: one SHA-256 per distinct salt). The peer: one SHA-256 of salt and key, timed
//! the same way.
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use tollgate_compile::l7::table::{ApiKeyDef, AuthDef, KeyLocation, SecretRef};
use tollgate_compile::l7::RouteTable;
use tollgate_proxy::auth::{authenticate, AuthRuntime, AuthStore, Failure, Request};

use super::{median, Report};

const SALT_BYTES: usize = 16;

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer to a timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn salt(i: usize) -> [u8; SALT_BYTES] {
    let mut s = [0x5a; SALT_BYTES];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    s
}

fn key(i: usize) -> String {
    hex::encode(Sha256::digest(format!("bench key {i}")))
}

/// A key file of `n` keys: every line with the same salt, or each with its own.
fn key_file(n: usize, salt_per_line: bool) -> String {
    let mut out = String::new();
    for i in 0..n {
        let s = salt(if salt_per_line { i } else { 0 });
        let hash = Sha256::new()
            .chain_update(s)
            .chain_update(key(i))
            .finalize();
        let _ = writeln!(
            out,
            "app-{i}:sha256:{}:{}",
            hex::encode(s),
            hex::encode(hash)
        );
    }
    out
}

/// The runtime of a policy with the key file `text` (written under `dir`).
fn runtime(dir: &Path, text: &str) -> Arc<AuthRuntime> {
    let file = dir.join("bench/keys/keys");
    std::fs::create_dir_all(file.parent().expect("a parent")).expect("create the secret dir");
    std::fs::write(&file, text).expect("write the key file");
    let mut table = RouteTable::default();
    table.policy.auth.push(AuthDef {
        policy: "bench/auth".into(),
        api_key: Some(ApiKeyDef {
            location: KeyLocation::Header(http::HeaderName::from_static("x-api-key")),
            files: vec![SecretRef {
                namespace: "bench".into(),
                name: "keys".into(),
            }],
        }),
        basic: vec![],
        jwt: vec![],
        client_certificate: None,
        allowed_consumers: None,
    });
    // A fresh store per file: nothing is reused from the previous size.
    let store = AuthStore::new(dir.to_owned());
    store
        .load(&table)
        .unwrap_or_else(|e| panic!("load the key file: {e}"))
        .remove(0)
}

fn headers(key: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "x-api-key",
        HeaderValue::from_bytes(key).expect("a header value"),
    );
    h
}

/// CPU ns per call of `f`, over about `budget` of CPU time.
fn ns_per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut n = 1u64;
    loop {
        let start = thread_cpu();
        for _ in 0..n {
            f();
        }
        let spent = thread_cpu() - start;
        if spent >= budget {
            return spent.as_nanos() as f64 / n as f64;
        }
        n = n.saturating_mul(2);
    }
}

/// The outcome of checking `key` with `rt` (a current-thread runtime drives the future).
fn check(
    tokio: &tokio::runtime::Runtime,
    rt: &AuthRuntime,
    headers: &HeaderMap,
) -> Result<Arc<str>, Failure> {
    let req = Request {
        headers,
        query: None,
        client_certificate: None,
    };
    tokio.block_on(authenticate(rt, &req)).map(|a| a.consumer)
}

/// `ns` in ns below 10 µs, else in µs.
fn time(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{:.1} µs", ns / 1000.0)
    }
}

struct Row {
    keys: usize,
    salts: usize,
    /// Median ns: 64 hex digits, 512 bytes, 60 KB.
    ns: [f64; 3],
}

/// The section of docs/benchmarks.md.
pub fn run(report: &mut Report) {
    let quick = report.quick();
    let rounds = if quick { 3 } else { 7 };
    let budget = Duration::from_millis(if quick { 50 } else { 200 });
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let wrong = [
        headers(key(usize::MAX).as_bytes()),
        headers(&[b'k'; 512]),
        headers(&[b'k'; 61_440]),
    ];

    let sizes = [1usize, 1_000, 10_000];
    // [one salt for the file, a salt per line]
    let mut tables: [Vec<Row>; 2] = Default::default();
    for (t, salt_per_line) in [false, true].into_iter().enumerate() {
        for &n in &sizes {
            let rt = runtime(dir.path(), &key_file(n, salt_per_line));
            // The path measured is the one that answers: the last key is accepted, the
            // others refused as invalid.
            let last = headers(key(n - 1).as_bytes());
            assert_eq!(
                check(&tokio, &rt, &last).as_deref(),
                Ok(format!("app-{}", n - 1).as_str())
            );
            for h in &wrong {
                assert_eq!(check(&tokio, &rt, h), Err(Failure::Invalid));
            }
            let mut samples: [Vec<f64>; 3] = Default::default();
            for _ in 0..rounds {
                for (i, h) in wrong.iter().enumerate() {
                    samples[i].push(ns_per_call(budget, || {
                        std::hint::black_box(check(&tokio, &rt, std::hint::black_box(h))).ok();
                    }));
                }
            }
            tables[t].push(Row {
                keys: n,
                salts: if salt_per_line { n } else { 1 },
                ns: samples.map(|mut s| median(&mut s)),
            });
        }
    }
    let mut sha = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, len) in [64usize, 512].into_iter().enumerate() {
            let k = vec![b'k'; len];
            let s = salt(0);
            sha[i].push(ns_per_call(budget, || {
                std::hint::black_box(
                    Sha256::new()
                        .chain_update(std::hint::black_box(s))
                        .chain_update(std::hint::black_box(&k))
                        .finalize(),
                );
            }));
        }
    }
    let sha = sha.map(|mut s| median(&mut s));

    let mut md = format!(
        "CPU time of one thread per API-key check through `tollgate_proxy::auth::authenticate` \
         (the request path, key in a header, one key file loaded from disk), median of {rounds} \
         rounds (the three keys interleaved). Peer: one SHA-256 of a {SALT_BYTES}-byte salt and the key, \
         **{:.0} ns** for 64 bytes, **{:.0} ns** for 512 bytes. A key longer than 512 bytes \
         is refused before any hashing.\n\n",
        sha[0], sha[1]
    );
    for (t, rows) in tables.iter().enumerate() {
        md.push_str(if t == 1 {
            "A salt per line (one SHA-256 per salt; files made before one salt per file was documented):\n\n"
        } else {
            "One salt for the file (the documented recipe):\n\n"
        });
        md.push_str("| keys | salts | wrong key, 64 hex digits | wrong key, 512 bytes | 61,440-byte key | 64 hex digits at N / at 1 key |\n|---:|---:|---:|---:|---:|---:|\n");
        for r in rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.2}x |",
                r.keys,
                r.salts,
                time(r.ns[0]),
                time(r.ns[1]),
                time(r.ns[2]),
                r.ns[0] / rows[0].ns[0]
            );
        }
        md.push('\n');
    }
    md.truncate(md.trim_end().len());
    report.section("API key checks by number of keys", md);
}
