//! Secrets and ConfigMaps in Kubernetes mode: TLS certificates, client and backend CAs, API
//! keys and htpasswd files come from the cluster, not from files an operator places.
//!
//! Two more watches (core v1 `secrets` and `configmaps`, all namespaces; [`store`]) keep, of
//! each object, only the data keys Tollgate reads. For every revision the source builds, the
//! objects its policy references are found from the parsed objects
//! ([`tollgate_model::references`]), and
//! - the revision id covers their resourceVersions (a rotated Secret is a new revision; a
//!   change of any other Secret is not, and does not even wake the agent);
//! - a missing object, a missing key, a Secret of the wrong type or a kind the agent may not
//!   read does not refuse the revision: it is handed to the compiler with the revision
//!   ([`tollgate_model::cluster::Cluster::unresolved`]), which leaves out only what references
//!   it (the listener, the listeners a client CA covers, the AuthPolicy, whose routes then
//!   answer 500, the Backend), as the Gateway API's failure isolation wants: one namespace's
//!   missing Secret does not stop every other namespace's changes. Nothing is ever served
//!   without the certificate or credential it names. (A directory or Git revision gets the
//!   same from the agent for its unreadable files there: `tollgate_source::secret_files`.)
//! - the others are written under `--tls-secrets-dir` before the revision is handed on
//!   ([`files`]), so the proxy reads (and, for certificates, reloads) them as it reads an
//!   operator's files, and the directories of objects no longer referenced are removed.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use tollgate_model::cluster::Unresolved;
use tollgate_model::references::{self, RefKind, Use};
use tollgate_model::{Documents, Located, Object};
use tracing::warn;

use crate::watch::Shared;

pub mod files;
pub mod store;

use store::SharedStores;

/// Watches added by the Secrets and ConfigMaps (one each).
pub const WATCHES: usize = 2;

/// How many handed-out revisions' references are remembered (the one in force may be a few
/// revisions back when newer ones were refused).
const REMEMBERED: usize = 8;

/// What one revision needs from the Secrets and ConfigMaps.
#[derive(Debug, Default)]
pub struct Resolved {
    /// (resource, namespace, name, resourceVersion) of every referenced object, for the
    /// revision id (`-` for one that does not exist).
    pub keys: Vec<[String; 4]>,
    /// The references that cannot be resolved, and why (sorted, each once): handed to the
    /// compiler, which leaves out what references them.
    pub unresolved: Vec<Unresolved>,
    /// The files to write.
    wanted: files::Wanted,
}

/// The objects of one policy file, parsed (only files of the kinds that matter here).
type FileObjects = Arc<[Located<Object>]>;

/// The objects of one policy file, remembered while its text stays the same.
struct Cached {
    digest: [u8; 32],
    objects: FileObjects,
}

/// The Secret and ConfigMap side of the source.
pub struct Secrets {
    root: PathBuf,
    /// Whether [`Secrets::resolve`] gathers the files to write (the agent's source); a reader
    /// that only wants what cannot be resolved ([`SecretsWatch`]) copies no secret bytes.
    gather_files: bool,
    stores: SharedStores,
    cache: HashMap<String, Cached>,
    /// (revision id, object directories it needs), newest last.
    handed: VecDeque<(String, BTreeSet<files::DirKey>)>,
}

impl Secrets {
    /// Starts the two watches (entries `first` and `first + 1` of the shared sync state).
    pub(crate) fn start(
        root: PathBuf,
        handle: &tokio::runtime::Handle,
        client: Option<kube::Client>,
        first: usize,
        shared: &Arc<Shared>,
        server: &str,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> Secrets {
        let stores = SharedStores::default();
        if let Some(client) = client {
            tasks.push(handle.spawn(store::watch::<Secret>(
                client.clone(),
                first,
                stores.clone(),
                shared.clone(),
                server.to_owned(),
            )));
            tasks.push(handle.spawn(store::watch::<ConfigMap>(
                client,
                first + 1,
                stores.clone(),
                shared.clone(),
                server.to_owned(),
            )));
        }
        Secrets {
            root,
            gather_files: true,
            stores,
            cache: HashMap::new(),
            handed: VecDeque::new(),
        }
    }

    /// The references of the policy objects of `docs` (those the source cannot parse have
    /// none here: the pipeline refuses or leaves them out with their own errors), checked
    /// against the stores.
    pub fn resolve(&mut self, docs: &Documents) -> Resolved {
        let mut next = HashMap::new();
        let mut parsed: Vec<FileObjects> = Vec::new();
        for file in &docs.files {
            if !may_reference(&file.path) {
                continue;
            }
            let digest = digest(&file.content);
            let objects = match self.cache.remove(&file.path) {
                Some(c) if c.digest == digest => c.objects,
                _ => parse_file(&file.path, &file.content),
            };
            parsed.push(objects.clone());
            next.insert(file.path.clone(), Cached { digest, objects });
        }
        self.cache = next;
        let objects: Vec<&Located<Object>> = parsed.iter().flat_map(|f| f.iter()).collect();
        let refs = references::in_revision(&objects);

        let mut out = Resolved::default();
        let mut stores = store::lock(&self.stores);
        let mut referenced = HashSet::new();
        let mut keyed = BTreeSet::new();
        // The files of each object directory, in the order they are written.
        let mut dirs: BTreeMap<files::DirKey, Vec<(&'static str, Vec<u8>)>> = BTreeMap::new();
        let mut unresolved = BTreeSet::new();
        for (_, r) in &refs {
            let kind = r.kind();
            referenced.insert((kind, r.namespace.clone(), r.name.clone()));
            let store = stores.of(kind);
            let found = store
                .map
                .get(&(r.namespace.as_str().into(), r.name.as_str().into()));
            let rv = found.map_or("-", |k| &*k.resource_version);
            if keyed.insert((kind, r.namespace.clone(), r.name.clone())) {
                out.keys.push([
                    resource(kind).to_owned(),
                    r.namespace.clone(),
                    r.name.clone(),
                    rv.to_owned(),
                ]);
            }
            let mut problem = |why: String| {
                unresolved.insert(Unresolved {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    use_: r.use_,
                    why,
                });
            };
            let Some(kept) = found else {
                problem(match &store.forbidden {
                    Some(why) => {
                        format!("{kind} {}/{} cannot be read: {why}", r.namespace, r.name)
                    }
                    None => format!(
                        "{kind} {}/{} does not exist (it must hold {})",
                        r.namespace,
                        r.name,
                        keys_list(r.use_)
                    ),
                });
                continue;
            };
            if let Some(why) = type_mismatch(r.use_, kept.type_.as_deref()) {
                problem(format!("{kind} {}/{} {why}", r.namespace, r.name));
                continue;
            }
            let missing: Vec<&str> = r
                .use_
                .keys()
                .iter()
                .copied()
                .filter(|k| kept.get(kind, k).is_none())
                .collect();
            if !missing.is_empty() {
                problem(format!(
                    "{kind} {}/{} has no {} in its data (it must hold {})",
                    r.namespace,
                    r.name,
                    missing
                        .iter()
                        .map(|k| format!("\"{k}\""))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    keys_list(r.use_)
                ));
                continue;
            }
            // Present but unusable (no PEM certificate, say): as unresolved as a missing key.
            if let Some(why) = r
                .use_
                .keys()
                .iter()
                .find_map(|k| r.use_.malformed(k, kept.get(kind, k).unwrap_or_default()))
            {
                problem(format!("{kind} {}/{}: {why}", r.namespace, r.name));
                continue;
            }
            if !self.gather_files {
                continue;
            }
            let dir = dirs
                .entry((r.namespace.clone(), r.name.clone()))
                .or_default();
            for key in r.use_.keys() {
                if !dir.iter().any(|(f, _)| f == key) {
                    let value = kept.get(kind, key).unwrap_or_default();
                    dir.push((key, value.to_vec()));
                }
            }
        }
        stores.referenced = referenced;
        out.wanted = dirs;
        out.unresolved = unresolved.into_iter().collect();
        out
    }

    /// Writes the files of a revision about to be handed on (`id`), then removes the
    /// directories neither it nor the revision in force (`applied`) needs.
    pub fn write(
        &mut self,
        id: &str,
        resolved: &Resolved,
        applied: Option<&str>,
    ) -> Result<(), String> {
        files::write(&self.root, &resolved.wanted).map_err(|e| {
            format!(
                "cannot write the referenced Secrets and ConfigMaps under {}: {e}",
                self.root.display()
            )
        })?;
        let mut keep: BTreeSet<files::DirKey> = resolved.wanted.keys().cloned().collect();
        if let Some((_, in_force)) = self
            .handed
            .iter()
            .find(|(h, _)| Some(h.as_str()) == applied)
        {
            keep.extend(in_force.iter().cloned());
        }
        for problem in files::remove_unreferenced(&self.root, &keep) {
            warn!("a directory of a Secret or ConfigMap no longer referenced stays: {problem}");
        }
        self.handed.retain(|(h, _)| h != id);
        self.handed
            .push_back((id.to_owned(), resolved.wanted.keys().cloned().collect()));
        while self.handed.len() > REMEMBERED {
            self.handed.pop_front();
        }
        Ok(())
    }
}

/// The Secrets and ConfigMaps watched on their own, for a reader that is not the agent's
/// source: the controller reports what the agents leave out for them (a listener whose
/// certificate Secret is missing is `ResolvedRefs=False, InvalidCertificateRef`, as the
/// Gateway API requires), so it must judge them as the agents do, from the same stores and
/// [`Secrets::resolve`]. Nothing is written to disk.
pub struct SecretsWatch {
    secrets: Secrets,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SecretsWatch {
    /// Starts the two watches on the current tokio runtime; `wake` is called after a change of
    /// an object the last [`SecretsWatch::unresolved`] call's policy references (or a relist
    /// that changed anything), debounced as the source's wake-ups are. `server` names the API
    /// server in logs.
    pub fn start(client: &kube::Client, server: &str, wake: tollgate_model::source::Waker) -> Self {
        let shared = Arc::new(Shared::new(WATCHES));
        *shared.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(wake);
        let handle = tokio::runtime::Handle::current();
        let mut tasks = Vec::new();
        let mut secrets = Secrets::start(
            PathBuf::new(),
            &handle,
            Some(client.clone()),
            0,
            &shared,
            server,
            &mut tasks,
        );
        secrets.gather_files = false;
        tasks.push(handle.spawn(crate::watch::debounce(shared.clone())));
        SecretsWatch {
            secrets,
            shared,
            tasks,
        }
    }

    /// Whether both kinds have been listed once (a kind the API server refuses, 403, counts as
    /// listed: what references its objects is unresolved, naming the refusal).
    pub fn synced(&self) -> bool {
        self.shared.lock().all_synced()
    }

    /// The references of the policy objects of `docs` that cannot be resolved, sorted (what
    /// the agents hand the compiler as [`tollgate_model::cluster::Cluster::unresolved`]). The
    /// objects referenced become the ones whose changes wake.
    pub fn unresolved(&mut self, docs: &Documents) -> Vec<Unresolved> {
        self.secrets.resolve(docs).unresolved
    }
}

impl Drop for SecretsWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The resource name of a kind, in revision keys.
fn resource(kind: RefKind) -> &'static str {
    match kind {
        RefKind::Secret => "secrets",
        RefKind::ConfigMap => "configmaps",
    }
}

fn keys_list(use_: Use) -> String {
    use_.keys()
        .iter()
        .rev()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Why a Secret of type `type_` cannot serve `use_`, if it cannot. Certificates are read from
/// `kubernetes.io/tls` Secrets (as the Gateway API requires) or `Opaque` ones holding the same
/// keys; credentials from `Opaque` Secrets. Every other type (service account tokens, registry
/// credentials, `kubernetes.io/basic-auth`, ...) is another format under other keys.
fn type_mismatch(use_: Use, type_: Option<&str>) -> Option<String> {
    let t = type_.unwrap_or("Opaque");
    let ok = match use_ {
        Use::Certificate => t == "kubernetes.io/tls" || t == "Opaque",
        Use::ApiKeys | Use::Htpasswd => t == "Opaque",
        Use::CaCertificates => true,
    };
    (!ok).then(|| {
        let expected = match use_ {
            Use::Certificate => "kubernetes.io/tls (or Opaque)",
            _ => "Opaque",
        };
        format!("is of type \"{t}\": expected {expected}")
    })
}

/// Whether the file of a stored object (`kubernetes:/NS/Kind/NAME`) is of a kind that may
/// reference Secrets or ConfigMaps.
fn may_reference(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    let _name = parts.next();
    parts
        .next()
        .is_some_and(|kind| references::REFERENCING_KINDS.contains(&kind))
}

/// The objects of one file; none when it does not parse (the pipeline refuses it, or leaves
/// it out, with its own errors).
fn parse_file(path: &str, text: &str) -> FileObjects {
    tollgate_model::parse(&Documents::inline(&[(path, text)]))
        .map(Arc::from)
        .unwrap_or_else(|_| Arc::from([]))
}

fn digest(text: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_types_decide_what_they_can_serve() {
        assert_eq!(
            type_mismatch(Use::Certificate, Some("kubernetes.io/tls")),
            None
        );
        assert_eq!(type_mismatch(Use::Certificate, None), None);
        assert_eq!(type_mismatch(Use::ApiKeys, Some("Opaque")), None);
        let e = type_mismatch(Use::ApiKeys, Some("kubernetes.io/tls")).unwrap();
        assert!(e.contains("\"kubernetes.io/tls\": expected Opaque"), "{e}");
        let e = type_mismatch(Use::Certificate, Some("kubernetes.io/dockerconfigjson")).unwrap();
        assert!(e.contains("expected kubernetes.io/tls"), "{e}");
        assert_eq!(keys_list(Use::Certificate), "\"tls.crt\" and \"tls.key\"");
    }

    #[test]
    fn only_the_referencing_kinds_are_parsed() {
        assert!(may_reference("kubernetes:/ns/Gateway/g"));
        assert!(may_reference("kubernetes:/ns/AuthPolicy/p"));
        assert!(may_reference("kubernetes:/ns/Backend/b"));
        assert!(may_reference("kubernetes:/GatewayClass/tollgate"));
        assert!(may_reference("kubernetes:/ns/ReferenceGrant/g"));
        assert!(!may_reference("kubernetes:/ns/HTTPRoute/r"));
        assert!(!may_reference("kubernetes:/L4Policy/edge"));
    }
}
