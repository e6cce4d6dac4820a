//! Unit tests of certificate loading, reloading and SNI selection. Certificates are made by
//! the openssl command line tool, independently of the code under test.
use std::path::Path;
use std::process::Command;

use super::*;
use tollgate_model::{Documents, Revision, SourceFile};

/// A self-signed P-256 certificate for `cn` written as `dir/ns/name/tls.{crt,key}`.
fn make_secret(dir: &Path, ns: &str, name: &str, cn: &str) {
    let d = dir.join(ns).join(name);
    std::fs::create_dir_all(&d).unwrap();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(d.join(KEY_FILE))
        .arg("-out")
        .arg(d.join(CERT_FILE))
        .output()
        .unwrap_or_else(|e| panic!("run openssl (package openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn files(dir: &Path, ns: &str, name: &str) -> SecretFiles {
    SecretFiles::new(
        dir,
        &SecretRef {
            namespace: ns.into(),
            name: name.into(),
        },
    )
}

fn table(listeners: &str) -> RouteTable {
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: edge }}
spec:
  gatewayClassName: tollgate
  listeners:
{listeners}"
    );
    let docs = Documents {
        revision: Revision {
            id: "test".into(),
            source: "test".into(),
        },
        files: vec![SourceFile {
            path: "gw.yaml".into(),
            content: yaml,
        }],
        cluster: None,
        unresolved: Vec::new(),
    };
    let objects = tollgate_model::parse(&docs).unwrap_or_else(|e| panic!("{e}"));
    tollgate_compile::l7::compile(&objects).unwrap_or_else(|e| panic!("{e}"))
}

fn store(dir: &Path) -> CertStore {
    CertStore::new(dir.to_owned(), Family::default())
}

fn leaf(key: &CertifiedKey) -> Vec<u8> {
    key.cert[0].to_vec()
}

#[test]
fn a_certificate_and_its_key_load() {
    let dir = tempfile::tempdir().unwrap();
    make_secret(dir.path(), "default", "site", "site.example");
    let key = files(dir.path(), "default", "site").load().unwrap();
    assert_eq!(key.cert.len(), 1);
}

#[test]
fn a_missing_key_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    make_secret(dir.path(), "default", "site", "site.example");
    let f = files(dir.path(), "default", "site");
    std::fs::remove_file(&f.key).unwrap();
    let e = f.load().unwrap_err();
    assert!(
        matches!(e, CertError::Read { ref file, .. } if file == &f.key),
        "{e}"
    );
    assert!(e.to_string().contains("default/site/tls.key"), "{e}");
}

#[test]
fn files_without_pem_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    make_secret(dir.path(), "default", "site", "site.example");
    let f = files(dir.path(), "default", "site");
    std::fs::write(&f.key, "not a key\n").unwrap();
    let e = f.load().unwrap_err();
    assert!(e.to_string().contains("tls.key: no private key"), "{e}");
    make_secret(dir.path(), "default", "site", "site.example");
    std::fs::write(&f.cert, "").unwrap();
    let e = f.load().unwrap_err();
    assert!(e.to_string().contains("tls.crt: no certificate"), "{e}");
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_secret(dir.path(), "default", "a", "a.example");
    make_secret(dir.path(), "default", "b", "b.example");
    let a = files(dir.path(), "default", "a");
    let b = files(dir.path(), "default", "b");
    std::fs::copy(&b.key, &a.key).unwrap();
    let e = a.load().unwrap_err();
    assert!(matches!(e, CertError::Key { .. }), "{e}");
    assert!(
        e.to_string().contains("is not the key of the certificate"),
        "{e}"
    );
}

#[test]
fn a_revision_with_a_broken_certificate_names_the_gateway_listener_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = table(
        "    - { name: web, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: gone }] } }\n",
    );
    let e = store(dir.path()).load(&t).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("listener \"web\" of Gateway default/edge")
            && msg.contains("Secret default/gone")
            && msg.contains("default/gone/tls.crt"),
        "{msg}"
    );
}

#[test]
fn sni_picks_the_exact_name_then_the_longest_wildcard_then_the_listener_without_hostname() {
    let dir = tempfile::tempdir().unwrap();
    for s in ["exact", "wild", "deep", "any"] {
        make_secret(dir.path(), "default", s, s);
    }
    let t = table(
        "    - { name: exact, port: 8443, hostname: a.example.com, protocol: HTTPS, tls: { certificateRefs: [{ name: exact }] } }
    - { name: wild, port: 8443, hostname: '*.example.com', protocol: HTTPS, tls: { certificateRefs: [{ name: wild }] } }
    - { name: deep, port: 8443, hostname: '*.b.example.com', protocol: HTTPS, tls: { certificateRefs: [{ name: deep }] } }
    - { name: any, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: any }] } }
",
    );
    let prepared = store(dir.path()).load(&t).unwrap();
    let port = &prepared.ports[&8443];
    let name = |sni: Option<&str>| {
        port.select(sni)
            .map(|l| t.policy.listeners[l.listener].name.clone())
    };
    assert_eq!(name(Some("a.example.com")).as_deref(), Some("exact"));
    assert_eq!(name(Some("A.Example.COM")).as_deref(), Some("exact"));
    assert_eq!(name(Some("x.example.com")).as_deref(), Some("wild"));
    assert_eq!(name(Some("x.b.example.com")).as_deref(), Some("deep"));
    assert_eq!(name(Some("example.com")).as_deref(), Some("any"));
    assert_eq!(name(Some("other.org")).as_deref(), Some("any"));
    assert_eq!(name(None).as_deref(), Some("any"));
}

#[test]
fn without_a_listener_without_hostname_unknown_or_missing_sni_selects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    make_secret(dir.path(), "default", "s", "s");
    let t = table(
        "    - { name: a, port: 8443, hostname: a.example.com, protocol: HTTPS, tls: { certificateRefs: [{ name: s }] } }
    - { name: w, port: 8443, hostname: '*.example.com', protocol: HTTPS, tls: { certificateRefs: [{ name: s }] } }
",
    );
    let prepared = store(dir.path()).load(&t).unwrap();
    let port = &prepared.ports[&8443];
    assert!(port.select(Some("example.com")).is_none());
    assert!(port.select(Some("a.example.org")).is_none());
    assert!(port.select(None).is_none());
    assert!(port.select(Some("b.example.com")).is_some());
    // One Secret named by two listeners is loaded once.
    assert_eq!(prepared.entries.len(), 1);
}

#[test]
fn changed_files_are_reloaded_and_broken_ones_keep_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_secret(dir.path(), "default", "site", "one");
    let t = table(
        "    - { name: web, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: site }] } }\n",
    );
    let failures = Family::<SecretLabel, Counter>::default();
    let store = CertStore::new(dir.path().to_owned(), failures.clone());
    let prepared = store.load(&t).unwrap();
    store.commit(&prepared);
    let entry = prepared.entries.values().next().unwrap().clone();
    let first = leaf(&entry.current());
    assert_eq!(store.check(), 0, "nothing changed");

    // A new pair, written in place: served from the next check on.
    make_secret(dir.path(), "default", "site", "two");
    assert_eq!(store.check(), 1);
    let second = leaf(&entry.current());
    assert_ne!(first, second);
    let f = files(dir.path(), "default", "site");
    assert_eq!(second, leaf(&f.load().unwrap()));

    // A broken key: the second certificate stays, the failure is counted once.
    std::fs::write(&f.key, "garbage").unwrap();
    let label = SecretLabel {
        secret: "default/site".into(),
    };
    assert_eq!(store.check(), 0);
    assert_eq!(
        failures.get_or_create(&label).get(),
        0,
        "maybe half written: not reported at the first check"
    );
    assert_eq!(store.check(), 0);
    assert_eq!(store.check(), 0);
    assert_eq!(leaf(&entry.current()), second);
    assert_eq!(failures.get_or_create(&label).get(), 1);

    // A new revision cannot be applied with the broken files...
    assert!(store.load(&t).is_err());
    // ...and once they are fixed, both the reload and the revision work again.
    make_secret(dir.path(), "default", "site", "three");
    assert_eq!(store.check(), 1);
    assert_ne!(leaf(&entry.current()), second);
    assert!(store.load(&t).is_ok());
}

#[test]
fn a_client_ca_file_without_a_usable_certificate_refuses_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    make_secret(dir.path(), "default", "site", "site");
    let t = table(
        "    - { name: web, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: site }] } }\n  tls: { frontend: { default: { validation: { caCertificateRefs: [{ kind: ConfigMap, name: clients }] } } } }\n",
    );
    let e = store(dir.path()).load(&t).unwrap_err().to_string();
    assert!(
        e.contains("caCertificateRef ConfigMap default/clients")
            && e.contains("default/clients/ca.crt"),
        "{e}"
    );
    std::fs::create_dir_all(dir.path().join("default/clients")).unwrap();
    std::fs::write(dir.path().join("default/clients/ca.crt"), "no PEM here\n").unwrap();
    let e = store(dir.path()).load(&t).unwrap_err().to_string();
    assert!(e.contains("ca.crt: no certificate"), "{e}");
    // A certificate (here self-signed, so a CA of itself) works.
    std::fs::copy(
        dir.path().join("default/site/tls.crt"),
        dir.path().join("default/clients/ca.crt"),
    )
    .unwrap();
    let prepared = store(dir.path()).load(&t).unwrap();
    assert_eq!(prepared.cas.len(), 1);
}

/// Two self-signed certificates, `one` and `two`, and `one`'s loaded as a client CA file
/// ([`TwoCas::switch`] puts `two`'s in its place).
struct TwoCas {
    dir: tempfile::TempDir,
    file: CaFile,
    entry: Arc<CaEntry>,
}

impl TwoCas {
    fn new() -> TwoCas {
        let dir = tempfile::tempdir().unwrap();
        make_secret(dir.path(), "default", "one", "one");
        make_secret(dir.path(), "default", "two", "two");
        let secret = SecretRef {
            namespace: "default".into(),
            name: "one".into(),
        };
        let file = CaFile(dir.path().join("default/one/tls.crt"));
        let entry = Arc::new(CaEntry::load(&secret, file.clone()).unwrap());
        TwoCas { dir, file, entry }
    }

    /// Puts `two`'s certificate in the CA file.
    fn switch(&self) {
        std::fs::copy(self.dir.path().join("default/two/tls.crt"), &self.file.0).unwrap();
    }
}

#[test]
fn a_reloaded_client_ca_file_rebuilds_the_verifier_and_a_broken_one_keeps_the_old() {
    let cas = TwoCas::new();
    let entry = &cas.entry;
    let auth = ClientAuth::new(vec![entry.clone()]).unwrap();
    let first = auth.verifier();
    assert!(Arc::ptr_eq(&first, &auth.verifier()), "built once");

    let failures = Family::<SecretLabel, Counter>::default();
    cas.switch();
    assert!(entry.reload(&failures));
    let second = auth.verifier();
    assert!(!Arc::ptr_eq(&first, &second), "rebuilt after the reload");

    std::fs::write(&cas.file.0, "broken").unwrap();
    assert!(!entry.reload(&failures));
    assert!(!entry.reload(&failures));
    assert!(Arc::ptr_eq(&second, &auth.verifier()), "the old CAs stay");
    let label = SecretLabel {
        secret: "default/one".into(),
    };
    assert_eq!(failures.get_or_create(&label).get(), 1);
}

#[test]
fn sessions_of_a_listener_with_client_certificates_end_with_its_cas() {
    use tokio_rustls::rustls::server::StoresServerSessions;
    let cas = TwoCas::new();
    let entry = &cas.entry;
    let auth = Arc::new(ClientAuth::new(vec![entry.clone()]).unwrap());
    let sessions = CaBoundSessions::new(auth.clone());
    assert!(sessions.can_cache());
    assert!(sessions.put(b"a".to_vec(), b"session a".to_vec()));
    assert!(sessions.put(b"b".to_vec(), b"session b".to_vec()));
    assert_eq!(sessions.get(b"a").as_deref(), Some(&b"session a"[..]));
    assert_eq!(sessions.take(b"a").as_deref(), Some(&b"session a"[..]));
    assert_eq!(sessions.take(b"a"), None, "taken once");

    // The CA file changes: the sessions verified against the old CAs resume no more.
    cas.switch();
    assert!(entry.reload(&Family::<SecretLabel, Counter>::default()));
    assert_eq!(sessions.get(b"b"), None);
    assert_eq!(sessions.take(b"b"), None);
    // Those made since do.
    assert!(sessions.put(b"c".to_vec(), b"session c".to_vec()));
    assert_eq!(sessions.take(b"c").as_deref(), Some(&b"session c"[..]));
}
