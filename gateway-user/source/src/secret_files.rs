//! Directory and Git mode: the files under `--tls-secrets-dir` that a revision's Secret and
//! ConfigMap references name (`NAMESPACE/NAME/FILE`, [`tollgate_model::references`]) and that
//! cannot be read are found before the compile and handed to it
//! ([`Documents::unresolved`]), as the Kubernetes source hands it the objects it cannot
//! resolve. The compiler then leaves out only what references them (the listener, the HTTPS
//! listeners a client CA covers, the AuthPolicy, whose routes answer 500, the Backend) instead
//! of the whole revision failing when the proxy cannot read the file: one missing certificate
//! does not stop every other change. Nothing is served without the file it names.
//!
//! Only whether each file can be opened as a regular file is checked here; a file that is there
//! but does not parse (a broken PEM, an htpasswd line of an unknown scheme) still refuses the
//! revision when the proxy loads it, with an error naming the file.
//!
//! The revision id stays the source's (a Git commit, a directory's hash): a file that appears
//! or goes away under `--tls-secrets-dir` does not make a new revision, so [`SecretFiles`]
//! checks the files of the last revision again on every pass and hands that revision on again
//! when the set of unreadable files changed (a certificate copied in later is served at the
//! next pass, without a restart or a policy change).
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tollgate_model::cluster::Unresolved;
use tollgate_model::references::{self, Reference};
use tollgate_model::revision::MAX_REVISION_SIZE;
use tollgate_model::source::{Next, PolicySource, Poll, Waker};
use tollgate_model::Documents;

/// The references of the objects of `docs` that the compiler may resolve
/// ([`references::in_revision`]). Each YAML document is parsed alone, so that one that does not
/// parse (which the compiler leaves out or refuses with its own errors) hides no other's
/// references; and only the documents that may name a kind of
/// [`references::REFERENCING_KINDS`] are parsed at all: the rest (an L4Policy of 100,000 rules)
/// would double the parse, the time and the memory the pipeline then spends on them again. A
/// revision over [`MAX_REVISION_SIZE`] is not looked at: the pipeline refuses it whole.
///
/// A document missed here (one that a `---` inside a block scalar split) is never served
/// without its file: the proxy then fails to read it and the revision is refused, as before
/// this check existed.
pub fn references_of(docs: &Documents) -> Vec<Reference> {
    let size: u64 = docs.files.iter().map(|f| f.content.len() as u64).sum();
    if size > MAX_REVISION_SIZE {
        return Vec::new();
    }
    let parsed: Vec<_> = docs
        .files
        .iter()
        .flat_map(|f| yaml_documents(&f.content).map(move |d| (f, d)))
        .filter(|(_, d)| {
            references::REFERENCING_KINDS
                .iter()
                .any(|kind| d.contains(kind))
        })
        .flat_map(|(f, d)| {
            tollgate_model::parse(&Documents::inline(&[(&f.path, d)])).unwrap_or_default()
        })
        .collect();
    let objects: Vec<_> = parsed.iter().collect();
    references::in_revision(&objects)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// The YAML documents of a file: its text split at the lines that are `---` alone (a JSON
/// file is one document).
fn yaml_documents(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        let mut at = 0;
        for line in t.split_inclusive('\n') {
            if at > 0 && line.trim_end() == "---" {
                rest = Some(&t[at..]);
                return Some(&t[..at]);
            }
            at += line.len();
        }
        rest = None;
        Some(t)
    })
}

/// The references among `refs` one of whose files under `dir` cannot be opened as a regular
/// file, or holds no PEM certificate (key) where one belongs, each once, sorted, with why
/// (naming the file).
pub fn unreadable(dir: &Path, refs: &[Reference]) -> Vec<Unresolved> {
    let mut out = std::collections::BTreeSet::new();
    for r in refs {
        let object = dir.join(&r.namespace).join(&r.name);
        let problems: Vec<String> = r
            .use_
            .keys()
            .iter()
            .filter_map(|file| {
                let path = object.join(file);
                let why = match File::open(&path).and_then(|f| f.metadata()) {
                    // Read, but not PEM where PEM belongs: as unusable as a missing file (the
                    // listener is left out, not the revision refused).
                    Ok(m) if m.is_file() => match std::fs::read(&path) {
                        Ok(bytes) => r.use_.malformed(file, &bytes)?,
                        Err(e) => e.to_string(),
                    },
                    Ok(_) => "not a regular file".to_owned(),
                    Err(e) => e.to_string(),
                };
                Some(format!("{}: {why}", path.display()))
            })
            .collect();
        if !problems.is_empty() {
            out.insert(Unresolved {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                use_: r.use_,
                why: format!(
                    "{} {}/{} cannot be read from --tls-secrets-dir ({}) (it must hold {})",
                    r.kind(),
                    r.namespace,
                    r.name,
                    problems.join("; "),
                    r.use_.keys().join(" and ")
                ),
            });
        }
    }
    out.into_iter().collect()
}

/// A directory or Git source whose revisions carry the Secret and ConfigMap files under
/// `dir` they reference that cannot be read (see the module documentation).
pub struct SecretFiles {
    inner: Box<dyn PolicySource>,
    dir: PathBuf,
    /// The last revision handed on, its references and what was unreadable then: checked
    /// again on every pass the inner source has nothing new.
    last: Option<(Documents, Arc<[Reference]>)>,
}

impl SecretFiles {
    /// `inner`'s revisions, with the files they reference under `dir` checked.
    pub fn new(inner: Box<dyn PolicySource>, dir: &Path) -> Self {
        SecretFiles {
            inner,
            dir: dir.to_owned(),
            last: None,
        }
    }
}

impl PolicySource for SecretFiles {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn next(&mut self, applied: Option<&str>) -> Poll {
        let mut poll = self.inner.next(applied);
        match &mut poll.outcome {
            Ok(Next::Revision(docs)) => {
                let refs: Arc<[Reference]> = references_of(docs).into();
                docs.unresolved = unreadable(&self.dir, &refs);
                self.last = Some((docs.clone(), refs));
            }
            Ok(Next::Unchanged) => {
                if let Some((docs, refs)) = &mut self.last {
                    let now = unreadable(&self.dir, refs);
                    if now != docs.unresolved {
                        docs.unresolved = now;
                        poll.outcome = Ok(Next::Revision(docs.clone()));
                    }
                }
            }
            // A revision refused by the source itself (a rewind, an unverified commit, an
            // empty directory) is not the last one handed on any more: nothing is handed on
            // again until the source gives a revision.
            Err(refusal) if !refusal.unavailable => self.last = None,
            Err(_) => {}
        }
        poll
    }

    fn rescan(&mut self) {
        self.inner.rescan();
    }

    fn set_waker(&mut self, wake: Waker) {
        self.inner.set_waker(wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::DirSource;
    use tollgate_model::references::Use;

    /// Gateway `default/edge` with HTTPS listeners on Secrets `cert-a` and `cert-b`, and an
    /// AuthPolicy reading the htpasswd of Secret `users`.
    const POLICY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: a, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: cert-a }] } }
    - { name: b, port: 8444, protocol: HTTPS, tls: { certificateRefs: [{ name: cert-b }] } }
---
apiVersion: tollgate.dev/v1alpha1
kind: AuthPolicy
metadata: { name: app-auth }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: app }]
  basicAuth: { credentialRefs: [{ name: users }] }
";

    /// Writes a file that reads as what its name says (a PEM block of the right type).
    fn put(dir: &Path, path: &str) {
        let label = if path.ends_with(".key") {
            "PRIVATE KEY"
        } else {
            "CERTIFICATE"
        };
        write(
            dir,
            path,
            &format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n"),
        );
    }

    fn write(dir: &Path, path: &str, text: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn names(list: &[Unresolved]) -> Vec<String> {
        list.iter()
            .map(|u| format!("{:?} {}/{}", u.use_, u.namespace, u.name))
            .collect()
    }

    #[test]
    fn documents_split_at_their_separators_and_only_referencing_kinds_are_read() {
        let text = "kind: L4Policy\n---\nkind: Gateway\n---\n\n";
        let docs: Vec<&str> = yaml_documents(text).collect();
        assert_eq!(
            docs,
            vec!["kind: L4Policy\n", "---\nkind: Gateway\n", "---\n\n"]
        );
        assert_eq!(yaml_documents("").collect::<Vec<_>>(), vec![""]);
        // A broken L4Policy beside a Gateway hides none of the Gateway's references.
        let docs = Documents::inline(&[(
            "p.yaml",
            "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: x }\nspec: { rules: [ { bogus: 1 } ] }\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: g, namespace: web }\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - name: s\n      port: 443\n      protocol: HTTPS\n      tls: { certificateRefs: [ { name: site } ] }\n",
        )]);
        let refs = references_of(&docs);
        assert_eq!(refs.len(), 1, "{refs:?}");
        assert_eq!(
            (refs[0].namespace.as_str(), refs[0].name.as_str()),
            ("web", "site")
        );
    }

    #[test]
    fn a_reference_with_a_file_missing_or_not_a_file_is_unresolved_naming_it() {
        let secrets = tempfile::tempdir().unwrap();
        put(secrets.path(), "default/cert-a/tls.crt");
        put(secrets.path(), "default/cert-a/tls.key");
        // cert-b: the certificate without its key; users: a directory where the file goes.
        put(secrets.path(), "default/cert-b/tls.crt");
        std::fs::create_dir_all(secrets.path().join("default/users/htpasswd")).unwrap();
        let docs = Documents::inline(&[("policy.yaml", POLICY)]);
        let refs = references_of(&docs);
        assert_eq!(refs.len(), 3, "{refs:?}");
        let found = unreadable(secrets.path(), &refs);
        assert_eq!(
            names(&found),
            ["Certificate default/cert-b", "Htpasswd default/users"]
        );
        let key = secrets.path().join("default/cert-b/tls.key");
        assert!(
            found[0].why.contains(&key.display().to_string())
                && found[0].why.contains("No such file")
                && !found[0].why.contains("cert-b/tls.crt:"),
            "{}",
            found[0].why
        );
        assert!(
            found[1].why.contains("not a regular file"),
            "{}",
            found[1].why
        );
        assert_eq!(found[1].use_, Use::Htpasswd);

        // A certificate file that is no PEM certificate is as unusable (the Gateway API's
        // GatewayInvalidTLSConfiguration: the listener is left out, InvalidCertificateRef).
        put(secrets.path(), "default/cert-b/tls.key");
        std::fs::remove_dir_all(secrets.path().join("default/users")).unwrap();
        write(secrets.path(), "default/users/htpasswd", "u:x\n");
        write(secrets.path(), "default/cert-a/tls.crt", "Hello world\n");
        let found = unreadable(secrets.path(), &refs);
        assert_eq!(names(&found), ["Certificate default/cert-a"]);
        assert!(
            found[0].why.contains("holds no PEM certificate"),
            "{}",
            found[0].why
        );
    }

    #[test]
    fn the_revision_is_handed_on_again_when_its_files_come_or_go() {
        let policy = tempfile::tempdir().unwrap();
        std::fs::write(policy.path().join("policy.yaml"), POLICY).unwrap();
        let secrets = tempfile::tempdir().unwrap();
        for f in [
            "cert-a/tls.crt",
            "cert-a/tls.key",
            "cert-b/tls.crt",
            "users/htpasswd",
        ] {
            put(secrets.path(), &format!("default/{f}"));
        }
        let mut source = SecretFiles::new(Box::new(DirSource::new(policy.path())), secrets.path());
        let revision = |source: &mut SecretFiles| match source.next(None).outcome {
            Ok(Next::Revision(d)) => d,
            other => panic!("expected a revision, got {other:?}"),
        };
        let first = revision(&mut source);
        assert_eq!(names(&first.unresolved), ["Certificate default/cert-b"]);
        assert!(first.cluster.is_none(), "a directory has no cluster");
        assert!(matches!(source.next(None).outcome, Ok(Next::Unchanged)));

        // The key copied in: the same revision again, with nothing unresolved.
        put(secrets.path(), "default/cert-b/tls.key");
        let second = revision(&mut source);
        assert_eq!(second.revision.id, first.revision.id);
        assert!(second.unresolved.is_empty(), "{:?}", second.unresolved);
        assert!(matches!(source.next(None).outcome, Ok(Next::Unchanged)));

        // A file removed: handed on again, without what references it.
        std::fs::remove_file(secrets.path().join("default/cert-a/tls.crt")).unwrap();
        let third = revision(&mut source);
        assert_eq!(names(&third.unresolved), ["Certificate default/cert-a"]);

        // A rescan (SIGHUP, a failed apply) reads the source again and checks the files.
        source.rescan();
        let fourth = revision(&mut source);
        assert_eq!(fourth.unresolved, third.unresolved);
    }
}
