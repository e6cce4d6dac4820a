//! `tollgate diff OLD NEW`: what a revision would change, rule by rule, with the exit codes of
//! `flux diff`: 0 no change, 1 changes, 2 (or more) an error (unreadable or invalid revision).
//! OLD and NEW are two directories, or (`--repo`) two revisions of a Git repository, read by the
//! agent's own Git source.
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use tollgate_compile::l4::policy::{Policy, Rule};
use tollgate_compile::snapshot::compile_documents;
use tollgate_source::dir::read_dir;
use tollgate_source::git::{is_git_url, GitError, GitOptions, GitSource};
use tollgate_source::{redacted, Documents};

/// The L7 objects of a revision (Gateway, HTTPRoute, Backend, RateLimitPolicy) by `Kind/namespace/name`, each
/// as its spec.
pub type L7Objects = BTreeMap<String, serde_json::Value>;

/// Changes to L7 objects, object by object, naming the top-level spec fields that differ.
pub fn diff_l7(old: &L7Objects, new: &L7Objects) -> Vec<Change> {
    let mut out = Vec::new();
    for what in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(Change {
            change: "removed",
            what: what.clone(),
            fields: vec![],
        });
    }
    for (what, n) in new {
        match old.get(what) {
            None => out.push(Change {
                change: "added",
                what: what.clone(),
                fields: vec![],
            }),
            Some(o) if o != n => {
                let keys = |v: &serde_json::Value| {
                    v.as_object()
                        .map(|m| m.keys().cloned().collect::<Vec<_>>())
                        .unwrap_or_default()
                };
                let mut names: Vec<String> = keys(o).into_iter().chain(keys(n)).collect();
                names.sort();
                names.dedup();
                let fields = names
                    .into_iter()
                    .filter(|k| o.get(k) != n.get(k))
                    .map(|k| format!("spec.{k} changed"))
                    .collect();
                out.push(Change {
                    change: "changed",
                    what: what.clone(),
                    fields,
                });
            }
            Some(_) => {}
        }
    }
    out
}

fn l7_objects(docs: &tollgate_source::Documents) -> L7Objects {
    use tollgate_model::Object;
    // The objects the agent would read: one left out of the revision (its own schema check
    // failed) is absent, and does not hide the others.
    let Ok(parsed) = tollgate_model::ParseCache::default().parse_isolated(docs) else {
        return L7Objects::new();
    };
    let objects = parsed.objects;
    objects
        .iter()
        .filter_map(|o| {
            let spec = match &o.value {
                Object::L4Policy(_) => return None,
                Object::Gateway(g) => serde_json::to_value(&g.spec),
                Object::HTTPRoute(r) => serde_json::to_value(&r.spec),
                Object::GRPCRoute(r) => serde_json::to_value(&r.spec),
                Object::Backend(b) => serde_json::to_value(&b.spec),
                Object::RateLimitPolicy(p) => serde_json::to_value(&p.spec),
                Object::AuthPolicy(p) => serde_json::to_value(&p.spec),
                Object::BackendTrafficPolicy(p) => serde_json::to_value(&p.spec),
                Object::GatewayClass(c) => serde_json::to_value(&c.spec),
                Object::ReferenceGrant(g) => serde_json::to_value(&g.spec),
                Object::Namespace(n) => serde_json::to_value(&n.metadata.labels),
            }
            .ok()?;
            let name = format!(
                "{}/{}/{}",
                o.value.kind(),
                o.value.namespace().unwrap_or_default(),
                o.value.name()
            );
            Some((name, spec))
        })
        .collect()
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// `L4Policy/<name>`, `L4Policy/<name> rule <rule>`, or `Kind/<namespace>/<name>` for the L7
    /// kinds.
    pub what: String,
    /// For `changed`: the fields that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// The changes from `old` to `new`, policies first, then rules, in name order.
pub fn diff_policies(old: &[Policy], new: &[Policy]) -> Vec<Change> {
    let index = |ps: &[Policy]| {
        ps.iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let (old, new) = (index(old), index(new));
    let mut out = Vec::new();
    for (name, p) in &old {
        if !new.contains_key(name) {
            out.push(Change {
                change: "removed",
                what: format!("L4Policy/{name} ({} rules)", p.rules.len()),
                fields: vec![],
            });
        }
    }
    for (name, n) in &new {
        let Some(o) = old.get(name) else {
            out.push(Change {
                change: "added",
                what: format!("L4Policy/{name} ({} rules)", n.rules.len()),
                fields: vec![],
            });
            continue;
        };
        let mut fields = Vec::new();
        if o.mode != n.mode {
            fields.push(format!("mode: {:?} -> {:?}", o.mode, n.mode));
        }
        if o.default_action != n.default_action {
            fields.push(format!(
                "defaultAction: {:?} -> {:?}",
                o.default_action, n.default_action
            ));
        }
        if o.interfaces != n.interfaces {
            fields.push(format!(
                "interfaces: {:?} -> {:?}",
                o.interfaces, n.interfaces
            ));
        }
        if !fields.is_empty() {
            out.push(Change {
                change: "changed",
                what: format!("L4Policy/{name}"),
                fields,
            });
        }
        let rules = |p: &Policy| {
            p.rules
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let (or, nr) = (rules(o), rules(n));
        for r in or.keys().filter(|r| !nr.contains_key(*r)) {
            out.push(Change {
                change: "removed",
                what: format!("L4Policy/{name} rule {r}"),
                fields: vec![],
            });
        }
        for (r, nrule) in &nr {
            match or.get(r) {
                None => out.push(Change {
                    change: "added",
                    what: format!("L4Policy/{name} rule {r}"),
                    fields: vec![],
                }),
                Some(orule) if orule != nrule => out.push(Change {
                    change: "changed",
                    what: format!("L4Policy/{name} rule {r}"),
                    fields: rule_fields(orule, nrule),
                }),
                Some(_) => {}
            }
        }
    }
    out
}

fn rule_fields(o: &Rule, n: &Rule) -> Vec<String> {
    let mut f = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            f.push(format!("{name}: {a} -> {b}"));
        }
    };
    cmp(
        "action",
        format!("{:?}", o.action),
        format!("{:?}", n.action),
    );
    cmp("from", format!("{:?}", o.from), format!("{:?}", n.from));
    cmp(
        "protocol",
        format!("{:?}", o.protocol),
        format!("{:?}", n.protocol),
    );
    cmp("ports", format!("{:?}", o.ports), format!("{:?}", n.ports));
    cmp(
        "icmpTypes",
        format!("{:?}", o.icmp_types),
        format!("{:?}", n.icmp_types),
    );
    cmp(
        "rateLimit",
        format!("{:?}", o.rate_limit),
        format!("{:?}", n.rate_limit),
    );
    f
}

/// A revision's policies and L7 objects, as `diff` compares them.
type Revision = (Vec<Policy>, L7Objects);

fn compile(docs: &Documents, what: &str) -> Result<Revision, String> {
    compile_documents(docs, None)
        .map(|s| (s.policies, l7_objects(docs)))
        .map_err(|e| format!("{what} is not a valid revision:\n{e}"))
}

fn load(path: &Path) -> Result<Revision, String> {
    let docs = read_dir(path).map_err(|e| e.to_string())?;
    compile(&docs, &path.display().to_string())
}

/// Every change from `old` to `new`.
fn changes(old: &Revision, new: &Revision) -> Vec<Change> {
    let mut changes = diff_policies(&old.0, &new.0);
    changes.extend(diff_l7(&old.1, &new.1));
    changes
}

/// Runs `diff` on two directories; returns the exit code.
pub fn diff(old: &Path, new: &Path, json: bool) -> i32 {
    match (load(old), load(new)) {
        (Ok(o), Ok(n)) => report(&changes(&o, &n), json),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{}", super::terminal_safe(&e.to_string()));
            2
        }
    }
}

/// The repository `repo` (a URL, fetched into `mirror`, or a local path, read in place) with
/// the policies under `path`.
fn open_repository(
    repo: &str,
    path: &str,
    options: &GitOptions,
    mirror: &Path,
) -> Result<GitSource, GitError> {
    if !is_git_url(repo) {
        return GitSource::open_local(Path::new(repo), path, options);
    }
    let source = GitSource::open(repo, "HEAD", path, options, mirror)?;
    // fetch() brings every branch and tag, then resolves the source's own ref, which here
    // means nothing: the revisions are resolved afterwards, by rev_parse.
    match source.fetch() {
        Ok(_) | Err(GitError::UnknownRef { .. }) => Ok(source),
        Err(e) => Err(e),
    }
}

/// Revisions `old` and `new` of `repo` (a URL or a local path), read by the agent's own Git
/// source (the same files, limits and refusals); an error names the repository
/// [`redacted`].
fn revisions(
    repo: &str,
    path: &str,
    options: &GitOptions,
    old: &str,
    new: &str,
) -> Result<(Revision, Revision), String> {
    let mirror = tempfile::tempdir()
        .map_err(|e| format!("cannot create a temporary directory for the mirror: {e}"))?;
    let source = open_repository(repo, path, options, mirror.path()).map_err(|e| e.to_string())?;
    let load = |rev: &str| -> Result<Revision, String> {
        let commit = source.rev_parse(rev).map_err(|e| {
            if is_git_url(repo) && rev.starts_with("HEAD") {
                format!("{e} (a repository fetched from a URL has no HEAD here: name a branch, as main~1)")
            } else {
                e.to_string()
            }
        })?;
        let docs = source.read(commit).map_err(|e| e.to_string())?;
        compile(&docs, &format!("{rev} ({commit}) of {}", redacted(repo)))
    };
    Ok((load(old)?, load(new)?))
}

/// Runs `diff --repo` on two revisions of a repository; returns the exit code.
pub fn diff_revisions(
    repo: &str,
    path: &str,
    options: &GitOptions,
    old: &str,
    new: &str,
    json: bool,
) -> i32 {
    match revisions(repo, path, options, old, new) {
        Ok((o, n)) => report(&changes(&o, &n), json),
        Err(e) => {
            eprintln!("{}", super::terminal_safe(&e.to_string()));
            2
        }
    }
}

/// Prints the changes; returns the exit code (0 none, 1 some).
fn report(changes: &[Change], json: bool) -> i32 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&changes).unwrap_or_default()
        );
    } else {
        for c in changes {
            let sign = match c.change {
                "added" => "+",
                "removed" => "-",
                _ => "~",
            };
            println!("{sign} {}", super::terminal_safe(&c.what));
            for f in &c.fields {
                println!("    {}", super::terminal_safe(f));
            }
        }
        if changes.is_empty() {
            println!("no changes");
        }
    }
    i32::from(!changes.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_compile::l4::policy::{Action, Mode};

    fn policy(name: &str, rules: Vec<Rule>) -> Policy {
        Policy {
            name: name.into(),
            file: "f.yaml".into(),
            mode: Mode::Enforce,
            default_action: Action::Allow,
            interfaces: None,
            rules,
        }
    }

    #[test]
    fn added_removed_and_changed_rules_are_listed_with_the_fields_that_differ() {
        let mut changed = Rule::new("b", Action::Deny);
        changed.from = Some(vec!["10.0.0.0/8".parse().unwrap()]);
        let old = vec![
            policy(
                "p",
                vec![Rule::new("a", Action::Deny), Rule::new("b", Action::Deny)],
            ),
            policy("gone", vec![]),
        ];
        let mut p2 = policy("p", vec![changed, Rule::new("c", Action::Allow)]);
        p2.default_action = Action::Deny;
        let new = vec![p2, policy("fresh", vec![])];
        let changes = diff_policies(&old, &new);
        let lines: Vec<String> = changes
            .iter()
            .map(|c| format!("{} {} {:?}", c.change, c.what, c.fields))
            .collect();
        assert_eq!(
            lines,
            vec![
                "removed L4Policy/gone (0 rules) []",
                "added L4Policy/fresh (0 rules) []",
                "changed L4Policy/p [\"defaultAction: Allow -> Deny\"]",
                "removed L4Policy/p rule a []",
                "changed L4Policy/p rule b [\"from: None -> Some([10.0.0.0/8])\"]",
                "added L4Policy/p rule c []",
            ]
        );
        assert!(diff_policies(&old, &old).is_empty());
    }

    #[test]
    fn a_password_or_a_token_in_the_repository_url_is_never_printed() {
        let work = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("edge.yaml"), "kind: Nope\n").unwrap();
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "."],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "commit",
                "-q",
                "-m",
                "bad",
            ],
        ] {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(work.path())
                .output()
                .expect("git");
            assert!(out.status.success(), "git {args:?}: {out:?}");
        }
        let options = GitOptions::default();
        for url in [
            "https://bot:hunter2@git.example.com/policy.git".to_owned(),
            format!("file://{}?token=hunter2", work.path().display()),
            format!("file://{}#hunter2", work.path().display()),
        ] {
            let e = revisions(&url, "", &options, "main", "main").unwrap_err();
            assert!(!e.contains("hunter2"), "{url}: {e}");
            assert!(e.contains("***"), "{url}: {e}");
        }
    }

    #[test]
    fn l7_objects_are_compared_object_by_object() {
        let obj = |pairs: &[(&str, serde_json::Value)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<L7Objects>()
        };
        let old = obj(&[
            (
                "HTTPRoute/default/a",
                serde_json::json!({ "hostnames": ["a"], "rules": [1] }),
            ),
            (
                "Backend/default/gone",
                serde_json::json!({ "endpoints": [] }),
            ),
        ]);
        let new = obj(&[
            (
                "HTTPRoute/default/a",
                serde_json::json!({ "hostnames": ["a"], "rules": [2] }),
            ),
            (
                "Gateway/default/edge",
                serde_json::json!({ "listeners": [] }),
            ),
        ]);
        let lines: Vec<String> = diff_l7(&old, &new)
            .iter()
            .map(|c| format!("{} {} {:?}", c.change, c.what, c.fields))
            .collect();
        assert_eq!(
            lines,
            [
                "removed Backend/default/gone []",
                "added Gateway/default/edge []",
                "changed HTTPRoute/default/a [\"spec.rules changed\"]",
            ]
        );
        assert!(diff_l7(&old, &old).is_empty());
    }
}
