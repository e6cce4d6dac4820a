//! The Kubernetes source's Secrets and ConfigMaps against the fake API server: the objects the
//! policy references are written under the secrets directory (only the keys read, private
//! modes), their rotation is a new revision, other Secrets are never written and never make
//! one, dereferenced ones are removed, and a missing or unreadable one is handed to the
//! compiler, which leaves out only what references it (naming the field). No root needed.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tollgate_compile::snapshot::{compile_documents, Snapshot};
use tollgate_kubernetes::{watched_kinds, KubernetesSource, Settings};
use tollgate_model::source::{Next, PolicySource};
use tollgate_model::Documents;
use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer, Fault};
use tollgate_tests::pem_of;

const GW: &str = "gateway.networking.k8s.io/v1";
const TG: &str = "tollgate.dev/v1alpha1";

struct Setup {
    fake: FakeApiServer,
    source: KubernetesSource,
    wakes: mpsc::Receiver<()>,
    secrets: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup_with(fake: FakeApiServer) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).unwrap();
    let settings = Settings::resolve(&[kubeconfig]).unwrap();
    let secrets = dir.path().join("secrets");
    let mut source =
        KubernetesSource::open_kinds_with(&settings, watched_kinds(), Some(secrets.clone()))
            .unwrap();
    let (tx, wakes) = mpsc::channel();
    source.set_waker(std::sync::Arc::new(move || {
        let _ = tx.send(());
    }));
    Setup {
        fake,
        source,
        wakes,
        secrets,
        _dir: dir,
    }
}

/// The fake holding [`seed`]'s objects before the source starts (so that its first revision
/// is built from all of them).
fn setup() -> Setup {
    let fake = FakeApiServer::start(tollgate_kinds());
    seed(&fake);
    setup_with(fake)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret(ns: &str, name: &str, type_: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(b64(&pem_of(k, v)))))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
           "type": type_, "data": data})
}

fn config_map(ns: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(pem_of(k, v))))
        .collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
           "data": data})
}

/// Gateway `edge/gw` with an HTTPS listener serving Secret `cert` (of namespace `cert_ns`) and
/// client CAs from ConfigMap `edge/clients`.
fn gateway(cert_ns: &str, cert: &str) -> Value {
    json!({"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "gw", "namespace": "edge"},
        "spec": {"gatewayClassName": "tollgate",
            "listeners": [{"name": "https", "port": 8443, "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": cert, "namespace": cert_ns}]}}],
            "tls": {"frontend": {"default": {"validation": {
                "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "clients"}]}}}}}})
}

/// Lets Gateways of namespace `edge` read the Secrets of namespace `certs`.
fn grant() -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "edge-certs", "namespace": "certs"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "edge"}],
                 "to": [{"group": "", "kind": "Secret"}]}})
}

fn auth_policy(keys: &str) -> Value {
    json!({"apiVersion": TG, "kind": "AuthPolicy", "metadata": {"name": "auth", "namespace": "edge"},
        "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "r"}],
            "apiKey": {"header": "x-api-key", "credentialRefs": [{"name": keys}]}}})
}

fn next(s: &mut Setup, applied: Option<&str>) -> Result<Next, String> {
    s.source.next(applied).outcome.map_err(|r| r.message)
}

fn revision(s: &mut Setup, applied: Option<&str>) -> Documents {
    match next(s, applied) {
        Ok(Next::Revision(docs)) => docs,
        Ok(Next::Unchanged) => panic!("expected a revision, got none"),
        Err(e) => panic!("expected a revision, got a refusal: {e}"),
    }
}

/// The source's answer once a change made through the API is seen: reads again (woken, or
/// every 200 ms) while it has nothing new, up to 5 s.
fn after_change(s: &mut Setup, applied: Option<&str>) -> Result<Next, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match next(s, applied) {
            Ok(Next::Unchanged) if Instant::now() < deadline => {
                let _ = s.wakes.recv_timeout(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// The next revision, once a change is seen; refusals of states on the way (a second update
/// not seen yet) are read past.
fn changed_revision(s: &mut Setup, applied: Option<&str>) -> Documents {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match after_change(s, applied) {
            Ok(Next::Revision(docs)) => return docs,
            Ok(Next::Unchanged) => panic!("expected a revision, got none within 5 s"),
            Err(e) if Instant::now() >= deadline => {
                panic!("expected a revision, got a refusal: {e}")
            }
            Err(_) => {}
        }
    }
}

fn drain(s: &Setup) {
    while s.wakes.try_recv().is_ok() {}
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// The policy and its Secrets and ConfigMaps: a certificate, API keys, client CAs; and a
/// Secret nothing references.
fn seed(fake: &FakeApiServer) {
    for o in [
        secret(
            "certs",
            "site",
            "kubernetes.io/tls",
            &[
                ("tls.crt", "CERT-A"),
                ("tls.key", "KEY-A"),
                ("ca.crt", "NOT-READ"),
            ],
        ),
        secret(
            "edge",
            "keys",
            "Opaque",
            &[("keys", "app:sha256:00:11"), ("password", "hunter2")],
        ),
        config_map("edge", "clients", &[("ca.crt", "CA-PEM"), ("other", "x")]),
        secret("edge", "unrelated", "Opaque", &[("keys", "x")]),
        gateway("certs", "site"),
        grant(),
        auth_policy("keys"),
    ] {
        fake.put(o).unwrap();
    }
}

#[test]
fn referenced_objects_are_written_privately_with_only_the_keys_read() {
    let mut s = setup();
    let docs = revision(&mut s, None);
    let root = s.secrets.clone();
    let site = root.join("certs/site");
    assert_eq!(
        std::fs::read(site.join("tls.crt")).unwrap(),
        pem_of("tls.crt", "CERT-A").as_bytes()
    );
    assert_eq!(
        std::fs::read(site.join("tls.key")).unwrap(),
        pem_of("tls.key", "KEY-A").as_bytes()
    );
    assert_eq!(mode(&site.join("tls.key")), 0o600);
    assert_eq!(mode(&site.join("tls.crt")), 0o600);
    assert_eq!(mode(&site), 0o700);
    assert_eq!(mode(&root.join("certs")), 0o700);
    // The keys the agent does not read are never written.
    assert_eq!(names(&site), [".tollgate-managed", "tls.crt", "tls.key"]);
    let keys = root.join("edge/keys");
    assert_eq!(names(&keys), [".tollgate-managed", "keys"]);
    assert_eq!(
        std::fs::read(keys.join("keys")).unwrap(),
        b"app:sha256:00:11"
    );
    let clients = root.join("edge/clients");
    assert_eq!(names(&clients), [".tollgate-managed", "ca.crt"]);
    assert_eq!(
        std::fs::read(clients.join("ca.crt")).unwrap(),
        pem_of("ca.crt", "CA-PEM").as_bytes()
    );
    // Nothing of the Secret no policy references.
    assert!(!root.join("edge/unrelated").exists());
    assert!(docs.revision.id.starts_with("k8s:"), "{}", docs.revision.id);
    // The revision's files are the policy objects only (Gateway, ReferenceGrant, AuthPolicy).
    assert_eq!(docs.files.len(), 3);
}

#[test]
fn a_rotated_secret_is_a_new_revision_and_an_unreferenced_one_is_not() {
    let mut s = setup();
    let first = revision(&mut s, None).revision.id;
    // The wake-up of the initial objects (debounced) comes after the first read.
    std::thread::sleep(Duration::from_millis(400));
    drain(&s);

    // Another Secret changes (and one is created): no wake-up, no revision, nothing written.
    s.fake
        .put(secret("edge", "unrelated", "Opaque", &[("keys", "y")]))
        .unwrap();
    s.fake
        .put(secret(
            "other",
            "new",
            "kubernetes.io/tls",
            &[("tls.crt", "C")],
        ))
        .unwrap();
    assert!(
        s.wakes.recv_timeout(Duration::from_millis(800)).is_err(),
        "an unreferenced Secret woke the agent"
    );
    assert!(matches!(next(&mut s, Some(&first)), Ok(Next::Unchanged)));
    assert!(!s.secrets.join("other").exists());

    // The certificate is rotated: a new revision, and the new files before it is handed on.
    let site = s.secrets.join("certs/site");
    let inode = std::fs::metadata(site.join("tls.crt")).unwrap().ino();
    let started = Instant::now();
    s.fake
        .put(secret(
            "certs",
            "site",
            "kubernetes.io/tls",
            &[("tls.crt", "CERT-B"), ("tls.key", "KEY-B")],
        ))
        .unwrap();
    s.wakes
        .recv_timeout(Duration::from_secs(2))
        .expect("the rotation woke the agent");
    let second = changed_revision(&mut s, Some(&first)).revision.id;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_ne!(second, first);
    assert_eq!(
        std::fs::read(site.join("tls.crt")).unwrap(),
        pem_of("tls.crt", "CERT-B").as_bytes()
    );
    assert_eq!(
        std::fs::read(site.join("tls.key")).unwrap(),
        pem_of("tls.key", "KEY-B").as_bytes()
    );
    // Replaced by a rename, not rewritten in place.
    assert_ne!(
        std::fs::metadata(site.join("tls.crt")).unwrap().ino(),
        inode
    );
    assert_eq!(mode(&site.join("tls.crt")), 0o600);
    // The API keys were not changed: not rewritten either.
    assert!(matches!(next(&mut s, Some(&second)), Ok(Next::Unchanged)));
}

#[test]
fn dereferenced_and_deleted_objects_are_removed_once_no_revision_in_force_needs_them() {
    let mut s = setup();
    s.fake
        .put(secret(
            "edge",
            "site-2",
            "kubernetes.io/tls",
            &[("tls.crt", "C2"), ("tls.key", "K2")],
        ))
        .unwrap();
    let first = revision(&mut s, None).revision.id;
    // A user's own directory in the same tree.
    let user = s.secrets.join("edge/handmade");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("tls.crt"), b"USER").unwrap();

    // The Gateway moves to another Secret. The first revision is still in force (the new one
    // may yet be refused), so its Secret stays...
    s.fake.put(gateway("edge", "site-2")).unwrap();
    let second = changed_revision(&mut s, Some(&first)).revision.id;
    assert!(s.secrets.join("certs/site/tls.crt").exists());
    assert!(s.secrets.join("edge/site-2/tls.crt").exists());
    // ...until a revision is built while the second is in force: then what neither the new
    // revision nor the second needs goes.
    s.fake
        .delete(TG, "AuthPolicy", Some("edge"), "auth")
        .unwrap();
    let third = changed_revision(&mut s, Some(&second)).revision.id;
    assert!(
        !s.secrets.join("certs").exists(),
        "the namespace directory goes too"
    );
    assert!(
        s.secrets.join("edge/keys/keys").exists(),
        "the second revision reads it"
    );
    assert!(s.secrets.join("edge/site-2/tls.crt").exists());
    assert!(s.secrets.join("edge/clients/ca.crt").exists());

    // The Gateway is deleted; once a revision without it is in force, everything the agent
    // wrote is gone, and the user's files stay.
    s.fake.delete(GW, "Gateway", Some("edge"), "gw").unwrap();
    let fourth = changed_revision(&mut s, Some(&third)).revision.id;
    assert!(!s.secrets.join("edge/keys").exists());
    assert!(
        s.secrets.join("edge/site-2/tls.crt").exists(),
        "the third reads it"
    );
    s.fake
        .put(json!({"apiVersion": GW, "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "edge"}, "spec": {}}))
        .unwrap();
    changed_revision(&mut s, Some(&fourth));
    assert_eq!(names(&s.secrets), ["edge"]);
    // The namespace directory is the agent's, but holds a user's directory now: it stays.
    assert_eq!(
        names(&s.secrets.join("edge")),
        [".tollgate-managed", "handmade"]
    );
    assert_eq!(std::fs::read(user.join("tls.crt")).unwrap(), b"USER");
}

/// What the agent makes of a revision: the compile stage every revision goes through.
fn compiled(docs: &Documents) -> Snapshot {
    compile_documents(docs, None).unwrap_or_else(|e| panic!("the revision is refused: {e}"))
}

/// The problems of the left-out object `Kind/namespace/name`, joined (empty: not left out).
fn left_out(snapshot: &Snapshot, object: &str) -> String {
    snapshot
        .acceptance
        .left_out
        .iter()
        .filter(|o| format!("{}/{}/{}", o.kind, o.namespace, o.name) == object)
        .flat_map(|o| &o.problems)
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The problems of a Gateway's listeners left out on their own (the Gateway itself served:
/// a listener whose certificate cannot be read is not served, and still counts its routes).
fn listener_problems(snapshot: &Snapshot, gateway_file: &str) -> String {
    snapshot
        .acceptance
        .partial
        .iter()
        .filter(|e| e.location.file == gateway_file && e.message.starts_with("listener left out"))
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The compiled revisions that come after a change, until one meets `done` (two updates made
/// in a row may come as two revisions), up to 5 s: the last one.
fn settled(s: &mut Setup, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snap = compiled(&changed_revision(s, None));
        if done(&snap) || Instant::now() > deadline {
            return snap;
        }
    }
}

/// The listeners served, as `namespace/gateway/listener`.
fn listeners(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .l7
        .policy
        .listeners
        .iter()
        .map(|l| format!("{}/{}", l.gateway, l.name))
        .collect()
}

#[test]
fn a_missing_secret_key_or_type_leaves_out_only_what_references_it_never_failing_open() {
    let fake = FakeApiServer::start(tollgate_kinds());
    seed(&fake);
    fake.put(json!({"apiVersion": GW, "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "edge"}, "spec": {}}))
        .unwrap();
    fake.delete("v1", "Secret", Some("certs"), "site").unwrap();
    let mut s = setup_with(fake);
    // The revision is handed on (other objects keep serving and changing), with the reference
    // it could not resolve...
    let docs = revision(&mut s, None);
    let unresolved = &docs.cluster.as_ref().expect("a cluster part").unresolved;
    assert_eq!(unresolved.len(), 1, "{unresolved:?}");
    assert_eq!(
        (&*unresolved[0].namespace, &*unresolved[0].name),
        ("certs", "site")
    );
    assert!(unresolved[0]
        .why
        .contains("Secret certs/site does not exist"));
    // ...and the compiler leaves out the listener that names it (here the Gateway's only
    // one: the Gateway stays, serving nothing, its routes counted on the listener), naming
    // the field; the AuthPolicy is served.
    let snap = compiled(&docs);
    assert_eq!(left_out(&snap, "Gateway/edge/gw"), "");
    let e = listener_problems(&snap, "kubernetes:/edge/Gateway/gw");
    assert!(e.contains("kubernetes:/edge/Gateway/gw"), "{e}");
    assert!(
        e.contains("spec.listeners[0].tls.certificateRefs[0]"),
        "{e}"
    );
    assert!(e.contains("Secret certs/site does not exist"), "{e}");
    assert!(listeners(&snap).is_empty());
    assert_eq!(left_out(&snap, "AuthPolicy/edge/auth"), "");
    assert_eq!(snap.l7.policy.auth.len(), 1);
    // Nothing is written for it; what resolves is.
    assert!(!s.secrets.join("certs").exists(), "{:?}", names(&s.secrets));
    assert!(s.secrets.join("edge/keys/keys").exists());
    // The same state is no new revision.
    assert!(matches!(next(&mut s, None), Ok(Next::Unchanged)));

    // Created without its key: a new revision, the listener still out, naming the key.
    s.fake
        .put(secret(
            "certs",
            "site",
            "kubernetes.io/tls",
            &[("tls.crt", "C")],
        ))
        .unwrap();
    let snap = compiled(&changed_revision(&mut s, None));
    let e = listener_problems(&snap, "kubernetes:/edge/Gateway/gw");
    assert!(e.contains("Secret certs/site has no \"tls.key\""), "{e}");

    // API keys in a Secret of another type: the AuthPolicy is left out and the route it
    // guards answers 500 (it is never served without authentication); the Gateway serves.
    s.fake
        .put(secret(
            "edge",
            "keys",
            "kubernetes.io/tls",
            &[("keys", "k")],
        ))
        .unwrap();
    s.fake
        .put(secret(
            "certs",
            "site",
            "kubernetes.io/tls",
            &[("tls.crt", "C"), ("tls.key", "K")],
        ))
        .unwrap();
    let snap = settled(&mut s, |snap| {
        !listeners(snap).is_empty() && snap.l7.policy.auth.is_empty()
    });
    assert_eq!(listeners(&snap), ["edge/gw/https"]);
    let e = left_out(&snap, "AuthPolicy/edge/auth");
    assert!(e.contains("kubernetes:/edge/AuthPolicy/auth"), "{e}");
    assert!(e.contains("spec.apiKey.credentialRefs[0]"), "{e}");
    assert!(e.contains("\"kubernetes.io/tls\": expected Opaque"), "{e}");
    assert!(snap.l7.policy.auth.is_empty());
    // Left out with the routes it guards, which answer 500 rather than serve without it.
    let auth = snap
        .acceptance
        .left_out
        .iter()
        .find(|o| o.kind == "AuthPolicy")
        .expect("the AuthPolicy is left out");
    assert_eq!(auth.targets, ["r"]);

    // The client CA ConfigMap goes: the HTTPS listener it covers is not served (never without
    // client certificate validation).
    s.fake
        .put(secret("edge", "keys", "Opaque", &[("keys", "k")]))
        .unwrap();
    s.fake
        .delete("v1", "ConfigMap", Some("edge"), "clients")
        .unwrap();
    let snap = settled(&mut s, |snap| {
        listeners(snap).is_empty() && snap.l7.policy.auth.len() == 1
    });
    assert!(listeners(&snap).is_empty());
    let e = listener_problems(&snap, "kubernetes:/edge/Gateway/gw");
    assert!(
        e.contains("spec.tls.frontend.default.validation.caCertificateRefs[0]"),
        "{e}"
    );
    assert!(e.contains("ConfigMap edge/clients does not exist"), "{e}");
    assert_eq!(left_out(&snap, "AuthPolicy/edge/auth"), "");

    // Fixed: everything serves.
    s.fake
        .put(config_map("edge", "clients", &[("ca.crt", "CA-PEM")]))
        .unwrap();
    let snap = settled(&mut s, |snap| !listeners(snap).is_empty());
    assert_eq!(left_out(&snap, "Gateway/edge/gw"), "");
    assert_eq!(left_out(&snap, "AuthPolicy/edge/auth"), "");
    assert_eq!(listeners(&snap), ["edge/gw/https"]);
    assert!(s.secrets.join("certs/site/tls.key").exists());
    assert!(s.secrets.join("edge/clients/ca.crt").exists());
    assert_eq!(
        std::fs::read(s.secrets.join("edge/keys/keys")).unwrap(),
        b"k"
    );
}

#[test]
fn without_permission_on_secrets_the_policy_still_syncs_and_what_references_one_is_left_out() {
    let fake = FakeApiServer::start(tollgate_kinds());
    fake.inject(Fault::status(403).path_contains("/secrets"));
    // A policy that references no Secret is served.
    fake.put(json!({"apiVersion": GW, "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "edge"}, "spec": {}}))
        .unwrap();
    let mut s = setup_with(fake);
    let deadline = Instant::now() + Duration::from_secs(10);
    let docs = loop {
        match next(&mut s, None) {
            Ok(Next::Revision(d)) => break d,
            Ok(Next::Unchanged) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => panic!("expected a revision, got {other:?}"),
        }
    };
    assert_eq!(docs.files.len(), 1);
    // What references one is left out, saying why; the rest is handed on.
    seed(&s.fake);
    let deadline = Instant::now() + Duration::from_secs(10);
    let docs = loop {
        match next(&mut s, None) {
            Ok(Next::Revision(d)) if d.files.len() > 1 => break d,
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("expected a revision, got {other:?}"),
        }
    };
    let snap = compiled(&docs);
    let e = listener_problems(&snap, "kubernetes:/edge/Gateway/gw");
    assert!(e.contains("Secret certs/site cannot be read"), "{e}");
    assert!(e.contains("403"), "{e}");
    assert!(e.contains("get, list and watch on secrets"), "{e}");
    // The ConfigMap, which may be read, is not what is reported.
    assert!(!e.contains("ConfigMap edge/clients"), "{e}");
    let e = left_out(&snap, "AuthPolicy/edge/auth");
    assert!(e.contains("Secret edge/keys cannot be read"), "{e}");
}

#[test]
fn other_implementations_gateways_and_references_without_a_grant_are_not_read() {
    let mut s = setup();
    let first = revision(&mut s, None).revision.id;
    assert!(s.secrets.join("certs/site/tls.crt").exists());
    // GatewayClasses appear: `tollgate` is ours; `other` is another implementation's, and its
    // Gateway names a Secret that does not exist. Not this agent's business: no refusal.
    for (name, controller) in [
        ("tollgate", "tollgate.dev/gateway-controller"),
        ("other", "example.com/other"),
    ] {
        s.fake
            .put(
                json!({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": name},
                "spec": {"controllerName": controller}}),
            )
            .unwrap();
    }
    let mut theirs = gateway("edge", "missing");
    theirs["metadata"]["name"] = "theirs".into();
    theirs["spec"]["gatewayClassName"] = "other".into();
    s.fake.put(theirs).unwrap();
    let second = changed_revision(&mut s, Some(&first)).revision.id;
    assert!(!s.secrets.join("edge/missing").exists());
    assert!(s.secrets.join("certs/site/tls.crt").exists());

    // The grant is withdrawn: the Secret of the other namespace is no longer read (the
    // compiler reports the reference as not permitted) and its directory goes.
    s.fake
        .delete(
            "gateway.networking.k8s.io/v1beta1",
            "ReferenceGrant",
            Some("certs"),
            "edge-certs",
        )
        .unwrap();
    let third = changed_revision(&mut s, Some(&second)).revision.id;
    s.fake
        .delete(TG, "AuthPolicy", Some("edge"), "auth")
        .unwrap();
    changed_revision(&mut s, Some(&third));
    assert!(!s.secrets.join("certs").exists());
    assert!(s.secrets.join("edge/clients/ca.crt").exists());
}

/// The controller's view of the same objects ([`SecretsWatch`]): the agents' judgement of the
/// references, no file written, and only a change of a referenced object wakes its reader.
#[test]
fn the_controllers_watch_reports_what_cannot_be_resolved_and_wakes_only_for_referenced_objects() {
    use tollgate_kubernetes::secrets::SecretsWatch;
    let fake = FakeApiServer::start(tollgate_kinds());
    // Certificate edge/site and ConfigMap edge/clients do not exist.
    fake.put(gateway("edge", "site")).unwrap();
    fake.put(secret("edge", "unrelated", "Opaque", &[("keys", "x")]))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).unwrap();
    let settings = Settings::resolve(&[kubeconfig]).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let client = settings.client().unwrap();
    let (tx, wakes) = mpsc::channel();
    let mut watch = SecretsWatch::start(
        &client,
        "fake",
        std::sync::Arc::new(move || {
            let _ = tx.send(());
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !watch.synced() {
        assert!(Instant::now() < deadline, "not synced within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = serde_json::to_string(&gateway("edge", "site")).unwrap();
    let docs = Documents::inline(&[("kubernetes:/edge/Gateway/gw", &text)]);
    let why = |u: &[tollgate_model::cluster::Unresolved]| -> Vec<String> {
        u.iter().map(|u| u.why.clone()).collect()
    };
    let unresolved = watch.unresolved(&docs);
    assert_eq!(
        why(&unresolved),
        // Sorted (by namespace, then name).
        [
            "ConfigMap edge/clients does not exist (it must hold \"ca.crt\")",
            "Secret edge/site does not exist (it must hold \"tls.crt\" and \"tls.key\")",
        ],
        "{unresolved:?}"
    );
    // What the first lists woke, then quiet.
    std::thread::sleep(Duration::from_millis(1200));
    while wakes.try_recv().is_ok() {}
    fake.put(secret("edge", "unrelated", "Opaque", &[("keys", "y")]))
        .unwrap();
    assert!(
        wakes.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a Secret nothing references woke the reader"
    );
    let created = Instant::now();
    fake.put(secret(
        "edge",
        "site",
        "kubernetes.io/tls",
        &[("tls.crt", "CERT"), ("tls.key", "KEY")],
    ))
    .unwrap();
    wakes
        .recv_timeout(Duration::from_secs(5))
        .expect("the referenced Secret's creation wakes the reader");
    eprintln!(
        "measured: woken {:?} after the referenced Secret was created",
        created.elapsed()
    );
    let unresolved = watch.unresolved(&docs);
    assert_eq!(
        why(&unresolved),
        ["ConfigMap edge/clients does not exist (it must hold \"ca.crt\")"],
        "{unresolved:?}"
    );
    // Nothing is written anywhere: no directory was given, and none appeared here.
    assert_eq!(names(dir.path()), ["kubeconfig"]);
}
