//! Parsing a revision file by file: what each file parsed into, the budget of [`limits`] spent
//! as the files are read, and the [`ParseCache`] that keeps each file's result while its text
//! is unchanged. Apart from `lib.rs` because it is the bookkeeping around the parser, not the
//! reading of a document.
use std::collections::HashMap;

use crate::document::{parse_document, split_documents};
use crate::{limits, Documents, LeftOut, Located, Object, PolicyError, PolicyErrors, SourceFile};

/// The bounds of [`limits`], spent as a revision is parsed.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    /// The bounds, for messages: nodes, alias nodes, L4 rules.
    limits: (usize, usize, usize),
    nodes_left: usize,
    alias_nodes_left: usize,
    rules_left: usize,
    /// Set once a bound is crossed: the revision is refused, and nothing more is parsed.
    spent: Option<PolicyError>,
}

impl Budget {
    fn new() -> Self {
        Self::with(
            limits::MAX_REVISION_NODES,
            limits::MAX_ALIAS_NODES,
            limits::MAX_L4_RULES,
        )
    }

    pub(crate) fn with(nodes: usize, alias_nodes: usize, rules: usize) -> Self {
        Budget {
            limits: (nodes, alias_nodes, rules),
            nodes_left: nodes,
            alias_nodes_left: alias_nodes,
            rules_left: rules,
            spent: None,
        }
    }

    /// Charges what a file (parsed now or earlier) holds; false once a bound is crossed.
    fn charge(&mut self, file: &str, parsed: &Parsed) -> bool {
        let (nodes, objects) = (parsed.nodes, &parsed.objects);
        if self.spent.is_some() {
            return false;
        }
        if parsed.alias_nodes > self.alias_nodes_left {
            self.spent = Some(PolicyError::new(
                file,
                "",
                "",
                format!(
                    "the revision's documents that use YAML aliases hold more than {} nodes (the limit of one revision: alias expansion multiplies what a document holds); write the values out, or use fewer aliases",
                    self.limits.1
                ),
            ));
            return false;
        }
        self.alias_nodes_left -= parsed.alias_nodes;
        if nodes > self.nodes_left {
            self.spent = Some(PolicyError::new(
                file,
                "",
                "",
                format!(
                    "the revision holds more than {} YAML nodes (the limit of one revision; about 15 per rule); split it, or remove what is not policy",
                    self.limits.0
                ),
            ));
            return false;
        }
        self.nodes_left -= nodes;
        for o in objects {
            if let Object::L4Policy(p) = &o.value {
                if p.spec.rules.len() > self.rules_left {
                    self.spent = Some(PolicyError::new(
                        file,
                        &o.object,
                        "spec.rules",
                        format!(
                            "the revision has more than {} L4 rules (the limit of one revision); this policy's {} rules cross it",
                            self.limits.2,
                            p.spec.rules.len()
                        ),
                    ));
                    return false;
                }
                self.rules_left -= p.spec.rules.len();
            }
        }
        true
    }
}

/// What one file parsed into.
struct Parsed {
    objects: Vec<Located<Object>>,
    /// The documents that could not be read into objects, in file order.
    failures: Vec<DocFailure>,
    /// YAML nodes read (alias expansions included).
    nodes: usize,
    /// The nodes of the documents that use aliases.
    alias_nodes: usize,
    /// The revision's budget never cut this parse short: what it holds depends on the file's
    /// text alone, and may be cached.
    complete: bool,
}

/// The objects of one file, and the problems of its documents; parsing stops once more than
/// the budget's nodes (or alias nodes) have been read: the budget then refuses the revision.
fn parse_file(file: &SourceFile, budget: &Budget) -> Parsed {
    let mut parsed = Parsed {
        objects: Vec::new(),
        failures: Vec::new(),
        nodes: 0,
        alias_nodes: 0,
        complete: false,
    };
    for doc in split_documents(&file.content) {
        // One node more than is left, so that a revision that needs more is seen to.
        let nodes_left = budget.nodes_left.saturating_sub(parsed.nodes) + 1;
        let alias_left = budget.alias_nodes_left.saturating_sub(parsed.alias_nodes) + 1;
        let (result, read) = parse_document(&file.path, &doc, nodes_left, alias_left);
        parsed.nodes += read.nodes;
        if read.aliases {
            parsed.alias_nodes += read.nodes;
        }
        match result {
            Ok(Some(object)) => parsed.objects.push(object),
            Ok(None) => {}
            Err(e) => parsed.failures.push(e),
        }
        if parsed.nodes > budget.nodes_left || parsed.alias_nodes > budget.alias_nodes_left {
            return parsed;
        }
    }
    // A file with no document (empty, or only comments) is most likely a truncated write (a
    // full disk, an editor or a sync interrupted): read as "no objects", it would remove
    // what the file held, a default-deny firewall included, without a word.
    if parsed.objects.is_empty() && parsed.failures.is_empty() {
        parsed.failures.push(DocFailure::Revision(PolicyError::new(
            &file.path,
            "(the file)",
            "",
            "holds no YAML document (it is empty or only comments); an empty policy file is \
             refused so that a truncated write cannot remove policy: delete the file to remove \
             what it held",
        )));
    }
    // Each document was offered one node more than the budget had left, so a parse that stayed
    // below it was never limited by it.
    parsed.complete =
        parsed.nodes < budget.nodes_left && parsed.alias_nodes < budget.alias_nodes_left;
    // The cache keeps this for as long as the file is unchanged: no room for objects that will
    // never come (up to half of the vector after its last doubling).
    parsed.objects.shrink_to_fit();
    parsed
}

/// What a revision parsed into, with failure isolation ([`ParseCache::parse_isolated`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedRevision {
    /// The objects, in file order.
    pub objects: Vec<Located<Object>>,
    /// The L7 objects left out, each with its problems.
    pub left_out: Vec<LeftOut>,
}

/// Why one document gave no object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DocFailure {
    /// Its objects cannot be known (unreadable YAML, no kind or name), it is an L4Policy, or
    /// it is a policy whose targets cannot be read: the revision is refused.
    Revision(PolicyError),
    /// An L7 object that fails its own checks: left out on its own.
    Object(Box<LeftOut>),
}

impl From<PolicyError> for DocFailure {
    fn from(e: PolicyError) -> Self {
        DocFailure::Revision(e)
    }
}

/// Remembers what each file parsed into, so that a revision that changes a few files of many
/// parses only those (a 100,000-rule repository spends about a second in the YAML parser).
/// An entry is used only when the file's text is the one it was made from (compared by its
/// SHA-256, so the cache does not hold a second copy of every file).
#[derive(Default)]
pub struct ParseCache {
    files: HashMap<String, CachedFile>,
}

struct CachedFile {
    digest: [u8; 32],
    parsed: Parsed,
}

fn digest(text: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).into()
}

impl ParseCache {
    /// As [`parse`](crate::parse); afterwards the cache holds exactly the files of `docs` (as
    /// far as the revision was read: a revision over a bound of [`limits`] is not read to its
    /// end). Every problem refuses the revision, those of single L7 objects included.
    pub fn parse(&mut self, docs: &Documents) -> Result<Vec<Located<Object>>, PolicyErrors> {
        self.parse_within(docs, Budget::new(), false)
            .map(|r| r.objects)
    }

    /// As [`ParseCache::parse`], with failure isolation: an L7 object that names its kind and
    /// name and then fails its own checks is left out on its own
    /// ([`left_out`](crate::left_out)); the revision is refused only for what cannot be isolated.
    pub fn parse_isolated(&mut self, docs: &Documents) -> Result<ParsedRevision, PolicyErrors> {
        self.parse_within(docs, Budget::new(), true)
    }

    pub(crate) fn parse_within(
        &mut self,
        docs: &Documents,
        mut budget: Budget,
        isolate: bool,
    ) -> Result<ParsedRevision, PolicyErrors> {
        let mut next = HashMap::with_capacity(docs.files.len());
        for file in &docs.files {
            let hash = digest(&file.content);
            let cached = match self.files.remove(&file.path) {
                Some(c) if c.digest == hash => c,
                _ => CachedFile {
                    digest: hash,
                    parsed: parse_file(file, &budget),
                },
            };
            let within = budget.charge(&file.path, &cached.parsed);
            // A parse the budget cut short says nothing about the file: never kept.
            if cached.parsed.complete {
                next.insert(file.path.clone(), cached);
            }
            if !within {
                break;
            }
        }
        self.files = next;
        if let Some(spent) = budget.spent {
            // Nothing of a revision over a bound is copied out of the cache.
            return Err(PolicyErrors(vec![spent]));
        }
        let mut revision = ParsedRevision::default();
        let mut errors = Vec::new();
        for file in &docs.files {
            if let Some(cached) = self.files.get(&file.path) {
                revision
                    .objects
                    .extend(cached.parsed.objects.iter().cloned());
                for failure in &cached.parsed.failures {
                    match failure {
                        DocFailure::Object(o) if isolate => {
                            revision.left_out.push(o.as_ref().clone())
                        }
                        DocFailure::Object(o) => errors.extend(o.problems.iter().cloned()),
                        DocFailure::Revision(e) => errors.push(e.clone()),
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(revision)
        } else {
            Err(PolicyErrors(errors))
        }
    }

    /// Files held.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}
