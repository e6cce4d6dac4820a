//! The input of the pipeline: what a source read for one revision ([`Documents`]), before any
//! of it is parsed. Every source (a directory, Git, the Kubernetes API) produces this, and
//! everything after the source stage starts from it.

/// Largest policy file accepted, in bytes. Far above any real policy; it stops a mistaken
/// `tollgate validate /` or a hostile repository from making the agent read gigabytes.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// Largest revision accepted, all policy files together, in bytes: checked by every source
/// before it reads (or, for Git, inflates) anything. 64 MiB holds several times the largest
/// policy the compiler accepts (200,000 rules are about 20 MB of YAML), and keeps a hostile
/// revision's text far inside the agent's memory budget (docs/operations.md).
pub const MAX_REVISION_SIZE: u64 = 64 * 1024 * 1024;

/// Which revision of the policy a set of documents is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Revision {
    /// Stable id: for a directory `dir:` and a hash of every file's path and content (so equal
    /// trees give equal ids); for Git, the commit.
    pub id: String,
    /// Where it came from (a directory path, a repository URL and ref).
    pub source: String,
}

/// One policy file, as written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceFile {
    /// Path relative to the source root, with `/` separators (what every error message shows).
    pub path: String,
    /// The file's text (UTF-8).
    pub content: String,
}

/// Everything the operator wrote for one revision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Documents {
    /// Which revision this is.
    pub revision: Revision,
    /// The policy files, sorted by path.
    pub files: Vec<SourceFile>,
    /// The cluster's Services and EndpointSlices, which backendRefs to Services resolve
    /// through: Kubernetes mode only (`None` for a directory or Git, where such a backendRef
    /// does not resolve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
    /// Directory or Git mode: the Secrets and ConfigMaps the revision references whose files
    /// under `--tls-secrets-dir` cannot be read (missing, not a file, unreadable), found by
    /// the agent before the compile. The compiler leaves out what references them as it does
    /// for [`crate::cluster::Cluster::unresolved`] (not kept there: a cluster's presence is
    /// what makes Services resolve). Sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<crate::cluster::Unresolved>,
}

impl Documents {
    /// Documents made in memory (tests, `explain` of a snippet, tools): each `(path, text)` is one
    /// file, and the revision id is `inline:` and the content hash, like a directory's.
    pub fn inline(files: &[(&str, &str)]) -> Documents {
        let files: Vec<SourceFile> = files
            .iter()
            .map(|(path, content)| SourceFile {
                path: path.to_string(),
                content: content.to_string(),
            })
            .collect();
        Documents {
            revision: Revision {
                id: format!("inline:{:016x}", content_id(&files)),
                source: "inline".into(),
            },
            files,
            cluster: None,
            unresolved: Vec::new(),
        }
    }
}

/// FNV-1a, 64 bits: a stable, dependency-free content hash for revision ids (not a defence
/// against someone crafting collisions; Git sources use the commit id instead).
/// <http://www.isthe.com/chongo/tech/comp/fnv/>
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a::new()
    }
}

impl Fnv1a {
    pub(crate) fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

/// The id of a set of files: a hash over each path and content, length-prefixed so that moving
/// bytes between a path and its content (or between files) changes the id.
pub fn content_id(files: &[SourceFile]) -> u64 {
    let mut h = Fnv1a::new();
    for f in files {
        for part in [f.path.as_bytes(), f.content.as_bytes()] {
            h.write(&(part.len() as u64).to_le_bytes());
            h.write(part);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        let hash = |s: &str| {
            let mut h = Fnv1a::new();
            h.write(s.as_bytes());
            h.finish()
        };
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn moving_bytes_between_path_and_content_changes_the_id() {
        let one = [SourceFile {
            path: "ab".into(),
            content: "c".into(),
        }];
        let two = [SourceFile {
            path: "a".into(),
            content: "bc".into(),
        }];
        assert_ne!(content_id(&one), content_id(&two));
    }
}
