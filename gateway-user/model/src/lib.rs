//! The model stage: YAML documents -> typed objects, one Rust type per kind (each is also the
//! Kubernetes custom resource; `manifests/crds/` is generated from these types).
//!
//! [`parse`] reads every document of every file and reports every problem it finds, each with
//! its file, object and field path (`spec.rules[2].ports`), never just the first one. Checks of
//! values (CIDRs, port ranges, bounds) belong to the compile stage; this stage only checks
//! shape: known kinds, known fields, the right types.
//!
//! This crate also holds what every later stage shares: the input of a revision
//! ([`Documents`]), the error type ([`PolicyError`]) and the [`Checker`] that collects them,
//! units ([`units`]), name rules ([`names`]), the canonical form of an HTTP path
//! ([`http_path`]) and the kinds of ban ([`BanKind`]). It depends on no other crate of the
//! workspace, and does no I/O.
use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub mod auth;
pub mod backend;
pub mod ban;
pub mod cluster;
pub mod error;
pub mod gateway;
pub mod gateway_class;
pub mod grpc_route;
pub mod http_path;
pub mod l4;
pub mod left_out;
pub mod names;
pub mod net;
pub mod node;
pub mod ratelimit;
pub mod references;
pub mod revision;
pub mod route;
pub mod source;
pub mod status;
pub mod traffic;
pub mod units;

pub use ban::BanKind;
pub use error::{Checker, Location, Mark, PolicyError, PolicyErrors};
pub use left_out::LeftOut;
pub use revision::{Documents, Revision, SourceFile};

/// API group of every Tollgate kind.
pub const GROUP: &str = "tollgate.dev";
/// Version of every Tollgate kind (for now).
pub const VERSION: &str = "v1alpha1";

/// One policy object of any kind this agent reads. A new kind is a new variant, a new entry in
/// [`KINDS`] and one arm in each method below.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// The node firewall, enforced in XDP.
    L4Policy(l4::L4Policy),
    /// Listeners of the L7 proxy (Gateway API).
    Gateway(gateway::Gateway),
    /// L7 routing rules (Gateway API).
    HTTPRoute(route::HTTPRoute),
    /// gRPC routing rules (Gateway API).
    GRPCRoute(grpc_route::GRPCRoute),
    /// Static endpoints for the L7 proxy.
    Backend(backend::Backend),
    /// Request rate limits attached to HTTPRoutes.
    RateLimitPolicy(ratelimit::RateLimitPolicy),
    /// Authentication attached to HTTPRoutes.
    AuthPolicy(auth::AuthPolicy),
    /// Traffic settings (request body size) attached to HTTPRoutes.
    BackendTrafficPolicy(traffic::BackendTrafficPolicy),
    /// A class of Gateways and its controller (Gateway API): which Gateways are Tollgate's.
    GatewayClass(gateway_class::GatewayClass),
    /// Cross-namespace references allowed into a namespace (Gateway API).
    ReferenceGrant(gateway_class::ReferenceGrant),
    /// A namespace: its labels, which `allowedRoutes.namespaces.selector` of a listener
    /// selects routes' namespaces by.
    Namespace(k8s_openapi::api::core::v1::Namespace),
}

impl Object {
    /// The kind, as written in `kind:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::L4Policy(_) => "L4Policy",
            Object::Gateway(_) => "Gateway",
            Object::HTTPRoute(_) => "HTTPRoute",
            Object::GRPCRoute(_) => "GRPCRoute",
            Object::Backend(_) => "Backend",
            Object::RateLimitPolicy(_) => "RateLimitPolicy",
            Object::AuthPolicy(_) => "AuthPolicy",
            Object::BackendTrafficPolicy(_) => "BackendTrafficPolicy",
            Object::GatewayClass(_) => "GatewayClass",
            Object::ReferenceGrant(_) => "ReferenceGrant",
            Object::Namespace(_) => "Namespace",
        }
    }

    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::L4Policy(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HTTPRoute(o) => &o.metadata,
            Object::GRPCRoute(o) => &o.metadata,
            Object::Backend(o) => &o.metadata,
            Object::RateLimitPolicy(o) => &o.metadata,
            Object::AuthPolicy(o) => &o.metadata,
            Object::BackendTrafficPolicy(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
        }
    }

    /// `metadata.name` (`parse` guarantees it is set).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The namespace of a namespaced kind: `metadata.namespace`, or [`DEFAULT_NAMESPACE`]
    /// when it is left out (as `kubectl apply` would). `None` for cluster-scoped kinds.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Object::L4Policy(_) | Object::GatewayClass(_) | Object::Namespace(_) => None,
            _ => Some(
                self.metadata()
                    .namespace
                    .as_deref()
                    .unwrap_or(DEFAULT_NAMESPACE),
            ),
        }
    }

    /// `metadata.creationTimestamp`, when the object carries one (objects exported from a
    /// cluster do; objects written for Git usually do not).
    pub fn creation_timestamp(&self) -> Option<&k8s_openapi::jiff::Timestamp> {
        self.metadata().creation_timestamp.as_ref().map(|t| &t.0)
    }
}

/// The namespace of a namespaced object that does not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A value with where it was written: what error messages name.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// File path relative to the source root.
    pub file: String,
    /// `Kind/name`, e.g. `L4Policy/edge`.
    pub object: String,
    /// The value.
    pub value: T,
}

/// How to read one kind: its `kind:` and `apiVersion:` and how to deserialize it.
struct KindInfo {
    kind: &'static str,
    api_version: &'static str,
    /// Other versions of the kind read the same way (a Gateway API kind served at two
    /// versions while it graduates); `api_version` is the one a source watches.
    other_versions: &'static [&'static str],
    /// Namespaced kinds are named `Kind/namespace/name` in messages when they give a namespace.
    namespaced: bool,
    read: fn(Value) -> Result<Object, serde_path_to_error::Error<serde_json::Error>>,
}

/// Every kind this agent reads.
const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: "L4Policy",
        api_version: "tollgate.dev/v1alpha1",
        other_versions: &[],
        namespaced: false,
        read: |v| typed::<l4::L4Policy>(v).map(Object::L4Policy),
    },
    KindInfo {
        kind: "Gateway",
        api_version: "gateway.networking.k8s.io/v1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<gateway::Gateway>(v).map(Object::Gateway),
    },
    KindInfo {
        kind: "HTTPRoute",
        api_version: "gateway.networking.k8s.io/v1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<route::HTTPRoute>(v).map(Object::HTTPRoute),
    },
    KindInfo {
        kind: "GRPCRoute",
        api_version: "gateway.networking.k8s.io/v1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<grpc_route::GRPCRoute>(v).map(Object::GRPCRoute),
    },
    KindInfo {
        kind: "Backend",
        api_version: "tollgate.dev/v1alpha1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<backend::Backend>(v).map(Object::Backend),
    },
    KindInfo {
        kind: "RateLimitPolicy",
        api_version: "tollgate.dev/v1alpha1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<ratelimit::RateLimitPolicy>(v).map(Object::RateLimitPolicy),
    },
    KindInfo {
        kind: "AuthPolicy",
        api_version: "tollgate.dev/v1alpha1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<auth::AuthPolicy>(v).map(Object::AuthPolicy),
    },
    KindInfo {
        kind: "BackendTrafficPolicy",
        api_version: "tollgate.dev/v1alpha1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<traffic::BackendTrafficPolicy>(v).map(Object::BackendTrafficPolicy),
    },
    KindInfo {
        kind: "GatewayClass",
        api_version: "gateway.networking.k8s.io/v1",
        other_versions: &[],
        namespaced: false,
        read: |v| typed::<gateway_class::GatewayClass>(v).map(Object::GatewayClass),
    },
    // v1beta1 is what every Gateway API release since v0.6 serves; v1.6 adds v1.
    KindInfo {
        kind: "ReferenceGrant",
        api_version: "gateway.networking.k8s.io/v1beta1",
        other_versions: &["gateway.networking.k8s.io/v1"],
        namespaced: true,
        read: |v| typed::<gateway_class::ReferenceGrant>(v).map(Object::ReferenceGrant),
    },
    // Read for its labels only; the API server's own fields (spec.finalizers) are accepted.
    KindInfo {
        kind: "Namespace",
        api_version: "v1",
        other_versions: &[],
        namespaced: false,
        read: |v| typed::<k8s_openapi::api::core::v1::Namespace>(v).map(Object::Namespace),
    },
];

/// The kinds a source that lists objects kind by kind (the Kubernetes API) watches, as
/// `(kind, apiVersion, namespaced)`: every kind [`parse`] reads. (The agent's Kubernetes source
/// watches `Namespace` only while a Gateway listener selects namespaces by label; the others
/// always.)
pub fn kinds() -> impl Iterator<Item = (&'static str, &'static str, bool)> {
    KINDS.iter().map(|k| (k.kind, k.api_version, k.namespaced))
}

/// The only top-level fields of an object (`status` is accepted so that the output of
/// `kubectl get -o yaml` can be committed as it is; it is ignored).
const TOP_LEVEL_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

fn typed<T: DeserializeOwned>(
    value: Value,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(value)
}

/// What one revision may hold, counted while it is parsed (not after): a revision over
/// either bound is refused before it can take the agent's memory (docs/operations.md, "Memory
/// budget").
pub mod limits {
    /// YAML nodes (mappings, sequences, scalars; alias expansions included) of a whole
    /// revision: about 15 a rule, so 200,000 rules fit with room to spare.
    pub const MAX_REVISION_NODES: usize = 4_000_000;
    /// YAML nodes of one document: bounds the parser's transient memory (a node costs about
    /// 100 bytes while its document is read).
    pub const MAX_DOCUMENT_NODES: usize = 2_000_000;
    /// YAML nodes of the documents that use aliases (`*name`), over a whole revision: alias
    /// expansion is where a few bytes become millions of nodes (an "alias bomb"), so it has its
    /// own, smaller bound (about a quarter of a second of parsing).
    pub const MAX_ALIAS_NODES: usize = 500_000;
    /// L4 rules of a whole revision (the kernel tables' capacity is sized for it).
    pub const MAX_L4_RULES: usize = 200_000;
    /// Errors a refused revision reports in full; the rest are counted.
    pub const MAX_REPORTED_ERRORS: usize = 100;
}

/// The bounds of [`limits`], spent as a revision is parsed.
#[derive(Debug, Clone)]
struct Budget {
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

    fn with(nodes: usize, alias_nodes: usize, rules: usize) -> Self {
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

/// Parses every document of every file into typed objects, in file order. Empty documents (a
/// leading or trailing `---`, comments only) are skipped. On failure, returns all the problems
/// of all the files (or the one bound of [`limits`] the revision crossed).
pub fn parse(docs: &Documents) -> Result<Vec<Located<Object>>, PolicyErrors> {
    ParseCache::default().parse(docs)
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
    // Each document was offered one node more than the budget had left, so a parse that stayed
    // below it was never limited by it.
    parsed.complete =
        parsed.nodes < budget.nodes_left && parsed.alias_nodes < budget.alias_nodes_left;
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
enum DocFailure {
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
    /// As [`parse`]; afterwards the cache holds exactly the files of `docs` (as far as the
    /// revision was read: a revision over a bound of [`limits`] is not read to its end).
    /// Every problem refuses the revision, those of single L7 objects included.
    pub fn parse(&mut self, docs: &Documents) -> Result<Vec<Located<Object>>, PolicyErrors> {
        self.parse_within(docs, Budget::new(), false)
            .map(|r| r.objects)
    }

    /// As [`ParseCache::parse`], with failure isolation: an L7 object that names its kind and
    /// name and then fails its own checks is left out on its own ([`left_out`]); the revision
    /// is refused only for what cannot be isolated.
    pub fn parse_isolated(&mut self, docs: &Documents) -> Result<ParsedRevision, PolicyErrors> {
        self.parse_within(docs, Budget::new(), true)
    }

    fn parse_within(
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

/// One YAML document of a file: its text, its 1-based number in the file and the line it
/// starts on (so that parser positions can be turned back into file positions).
struct Document<'a> {
    text: &'a str,
    number: usize,
    first_line: usize,
}

/// Splits a file at its document markers (`---` at the start of a line), so that one malformed
/// document does not hide the errors of the others and every error can name its document. YAML
/// forbids `---` at the start of a line inside any scalar, so this split is exact. Directive
/// lines (`%YAML 1.2`) stay with the document they introduce.
fn split_documents(content: &str) -> Vec<Document<'_>> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut docs = Vec::new();
    let mut start = 0; // byte offset of the current document
    let mut start_line = 1;
    let mut only_directives = true; // nothing but blank, comment and directive lines so far
    let mut offset = 0;
    for (index, line) in content.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\r', '\n']);
        let is_marker = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if is_marker && offset > start && !only_directives {
            docs.push(Document {
                text: &content[start..offset],
                number: docs.len() + 1,
                first_line: start_line,
            });
            start = offset;
            start_line = index + 1;
            only_directives = true;
        }
        let is_end = bare == "..." || bare.starts_with("... ") || bare.starts_with("...\t");
        let trimmed = bare.trim_start();
        if !(is_marker
            || is_end
            || trimmed.is_empty()
            || trimmed.starts_with('#')
            || bare.starts_with('%'))
        {
            only_directives = false;
        }
        if is_marker && bare.len() > 3 && !bare[3..].trim_start().starts_with('#') {
            only_directives = false; // `--- {a: 1}`: content on the marker line
        }
        offset += line.len();
        // `...` ends a document; the next one may start without `---`.
        if is_end && !only_directives {
            docs.push(Document {
                text: &content[start..offset],
                number: docs.len() + 1,
                first_line: start_line,
            });
            start = offset;
            start_line = index + 2;
            only_directives = true;
        }
    }
    if start < content.len() {
        docs.push(Document {
            text: &content[start..],
            number: docs.len() + 1,
            first_line: start_line,
        });
    }
    docs
}

/// What the parser reported of one document.
#[derive(Debug, Clone, Copy, Default)]
struct Read {
    /// Nodes, alias expansions included.
    nodes: usize,
    /// Whether the document uses aliases.
    aliases: bool,
}

/// Parser limits of one document: at most `max_nodes` nodes (the revision's budget left, and
/// at most [`limits::MAX_DOCUMENT_NODES`]), events in proportion, and alias expansion within
/// `max_alias_nodes`; the callback receives what the parse read.
fn yaml_options(
    max_nodes: usize,
    max_alias_nodes: usize,
    report: std::rc::Rc<std::cell::Cell<Read>>,
) -> serde_saphyr::Options {
    let max_nodes = max_nodes.min(limits::MAX_DOCUMENT_NODES);
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = max_nodes;
    budget.max_events = max_nodes.saturating_mul(4).max(1024);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = max_alias_nodes.min(max_nodes);
    options.budget_report_cb = Some(std::rc::Rc::new(std::cell::RefCell::new(
        move |r: serde_saphyr::budget::BudgetReport| {
            report.set(Read {
                nodes: r.nodes,
                aliases: r.aliases > 0,
            })
        },
    )));
    options
}

/// Reads one document within `max_nodes` YAML nodes (and `max_alias_nodes` of alias
/// expansion): `Ok(None)` when it is empty; and what was read (when a bound stopped the parse,
/// the whole bound, so that the revision's budget sees it crossed).
fn parse_document(
    file: &str,
    doc: &Document<'_>,
    max_nodes: usize,
    max_alias_nodes: usize,
) -> (Result<Option<Located<Object>>, DocFailure>, Read) {
    let report = std::rc::Rc::new(std::cell::Cell::new(Read::default()));
    let options = yaml_options(max_nodes, max_alias_nodes, report.clone());
    let result = parse_value(file, doc, options);
    let mut read = report.get();
    if let Err(DocFailure::Revision(e)) = &result {
        if e.message.contains("alias replay limit") {
            read = Read {
                nodes: read.nodes.max(max_alias_nodes),
                aliases: true,
            };
        } else if e.message.contains("budget") || e.message.contains("max_nodes") {
            read.nodes = read.nodes.max(max_nodes);
        }
    }
    (result, read)
}

/// Reads one document into an object. Until the document names its kind and name, a problem
/// refuses the revision (its objects cannot be known); after that, an L7 object's problem
/// leaves that object out ([`left_out`]).
fn parse_value(
    file: &str,
    doc: &Document<'_>,
    options: serde_saphyr::Options,
) -> Result<Option<Located<Object>>, DocFailure> {
    let Some(id) = identify(file, doc, options)? else {
        return Ok(None);
    };
    typed_object(file, &id).map(Some).map_err(|e| {
        if !left_out::isolated_kind(id.info.kind) {
            return DocFailure::Revision(e);
        }
        let targets = if left_out::guards_routes(id.info.kind) {
            match left_out::raw_targets(&id.value) {
                Some(t) => t,
                None => {
                    return DocFailure::Revision(PolicyError {
                        message: format!(
                            "{} (the revision is refused: the targetRefs of this {} cannot be read, and the routes it guards must not be served without it)",
                            e.message, id.info.kind
                        ),
                        ..e
                    })
                }
            }
        } else {
            Vec::new()
        };
        DocFailure::Object(Box::new(LeftOut {
            kind: id.info.kind,
            namespace: id
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            name: id.name.clone(),
            file: file.to_owned(),
            object: id.object.clone(),
            problems: vec![e],
            targets,
            gateway_class: (id.info.kind == "Gateway")
                .then(|| left_out::raw_gateway_class(&id.value))
                .flatten(),
        }))
    })
}

/// A document that names a known kind and a name: what [`typed_object`] reads further.
struct Identified {
    info: &'static KindInfo,
    name: String,
    namespace: Option<String>,
    /// `Kind/name` or `Kind/namespace/name`.
    object: String,
    value: Value,
    tag: Option<ForeignTag>,
    first_line: usize,
}

/// Parses one document far enough to know which object it is: `Ok(None)` when it is empty.
fn identify(
    file: &str,
    doc: &Document<'_>,
    options: serde_saphyr::Options,
) -> Result<Option<Identified>, PolicyError> {
    let unnamed = format!("document {}", doc.number);
    let tag = foreign_tag(doc.text);
    let tag_error = |object: &str, tag: &ForeignTag| {
        let line = tag.line + doc.first_line - 1;
        PolicyError::new(
            file,
            object,
            &tag.field,
            format!(
                "the YAML tag {} (line {line}) is not allowed; policies use only the core schema \
                 (!!str, !!int, !!float, !!bool, !!null, !!seq, !!map): write the value itself",
                tag.tag
            ),
        )
    };
    let values: Vec<Value> =
        serde_saphyr::from_multiple_with_options(doc.text, options).map_err(|e| {
            // A tag the parser could not apply (`!!timestamp` on a string) is the better news.
            if let Some(tag) = &tag {
                return tag_error(&unnamed, tag);
            }
            let message = yaml_message(&e);
            match e.location() {
                Some(at) => {
                    let line = at.line() as usize + doc.first_line - 1;
                    PolicyError::new(
                        file,
                        &unnamed,
                        "",
                        format!(
                            "invalid YAML at line {line}, column {}: {message}",
                            at.column()
                        ),
                    )
                }
                None => PolicyError::new(file, &unnamed, "", format!("invalid YAML: {message}")),
            }
        })?;
    // The split leaves at most one document per piece; should the parser ever see more, the
    // first one is read and the rest reported rather than silently dropped.
    let mut values = values.into_iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(PolicyError::new(
            file,
            &unnamed,
            "",
            "more than one YAML document here; separate documents with a line `---`",
        ));
    }

    let Value::Object(map) = &value else {
        return Err(PolicyError::new(
            file,
            &unnamed,
            "",
            format!(
                "expected an object (apiVersion, kind, metadata, spec), found {}",
                type_name(&value)
            ),
        ));
    };
    let kind = match map.get("kind") {
        None => {
            return Err(PolicyError::new(
                file,
                &unnamed,
                "kind",
                format!("missing; expected one of {}", known_kinds()),
            ))
        }
        Some(Value::String(kind)) => kind.as_str(),
        Some(other) => {
            return Err(PolicyError::new(
                file,
                &unnamed,
                "kind",
                format!("expected a string, found {}", type_name(other)),
            ))
        }
    };
    let Some(info) = KINDS.iter().find(|k| k.kind == kind) else {
        return Err(PolicyError::new(
            file,
            &unnamed,
            "kind",
            format!("unknown kind \"{kind}\"; expected one of {}", known_kinds()),
        ));
    };
    let name = match map.get("metadata").and_then(|m| m.get("name")) {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        Some(Value::String(_)) | None => {
            return Err(PolicyError::new(
                file,
                &unnamed,
                "metadata.name",
                "missing; every object needs a name",
            ))
        }
        Some(other) => {
            return Err(PolicyError::new(
                file,
                &unnamed,
                "metadata.name",
                format!("expected a string, found {}", type_name(other)),
            ))
        }
    };
    let namespace = match map.get("metadata").and_then(|m| m.get("namespace")) {
        None | Some(Value::Null) => None,
        Some(Value::String(ns)) => Some(ns.clone()),
        Some(other) => {
            return Err(PolicyError::new(
                file,
                format!("{kind}/{name}"),
                "metadata.namespace",
                format!("expected a string, found {}", type_name(other)),
            ))
        }
    };
    let object = match &namespace {
        Some(ns) if info.namespaced => format!("{kind}/{ns}/{name}"),
        _ => format!("{kind}/{name}"),
    };
    Ok(Some(Identified {
        info,
        name,
        namespace,
        object,
        value,
        tag,
        first_line: doc.first_line,
    }))
}

/// Checks an identified document and reads it into its kind's type.
fn typed_object(file: &str, id: &Identified) -> Result<Located<Object>, PolicyError> {
    let Identified {
        info,
        name,
        namespace,
        object,
        value,
        tag,
        first_line,
    } = id;
    let (kind, map) = (
        info.kind,
        value.as_object().expect("identified as an object"),
    );
    let error = |field: &str, message: String| PolicyError::new(file, object, field, message);

    if let Some(tag) = tag {
        let line = tag.line + first_line - 1;
        return Err(error(
            &tag.field,
            format!(
                "the YAML tag {} (line {line}) is not allowed; policies use only the core schema \
                 (!!str, !!int, !!float, !!bool, !!null, !!seq, !!map): write the value itself",
                tag.tag
            ),
        ));
    }

    match map.get("apiVersion") {
        None => {
            return Err(error(
                "apiVersion",
                format!("missing; {kind} is \"{}\"", info.api_version),
            ))
        }
        Some(Value::String(v))
            if v == info.api_version || info.other_versions.contains(&v.as_str()) => {}
        Some(Value::String(v)) => {
            return Err(error(
                "apiVersion",
                format!(
                    "\"{v}\" is not a version of {kind}; expected \"{}\"",
                    info.api_version
                ),
            ))
        }
        Some(other) => {
            return Err(error(
                "apiVersion",
                format!("expected a string, found {}", type_name(other)),
            ))
        }
    }
    if let Err(message) = names::dns_subdomain(name) {
        return Err(error("metadata.name", format!("\"{name}\" {message}")));
    }
    // A namespace on a cluster-scoped kind (L4Policy) is ignored, as the API server does.
    if let Some(ns) = namespace.as_ref().filter(|_| info.namespaced) {
        if let Err(message) = names::dns_label(ns) {
            return Err(error("metadata.namespace", format!("\"{ns}\" {message}")));
        }
    }
    if let Some(unknown) = map.keys().find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str())) {
        return Err(error(unknown, format!("unknown field \"{unknown}\"; an object has only apiVersion, kind, metadata, spec (and status)")));
    }

    let typed = (info.read)(value.clone()).map_err(|e| {
        let field = match e.path().to_string() {
            root if root == "." => String::new(),
            path => path,
        };
        let mut message = e.inner().to_string();
        if message.starts_with("invalid type: integer") && message.ends_with("expected a string") {
            message.push_str(" (quote it, e.g. \"22\")");
        }
        error(&field, message)
    })?;
    Ok(Located {
        file: file.to_string(),
        object: object.clone(),
        value: typed,
    })
}

/// A tag outside the YAML core schema, where it was found.
struct ForeignTag {
    /// As written (`!!binary`, `!secret`, `!<tag:example.com:x>`).
    tag: String,
    /// Field path of the tagged node (`spec.rules[0].action`; for a tagged key, the key's).
    field: String,
    /// Line in the document (1-based).
    line: usize,
}

/// The first tag of `text` outside the YAML 1.2 core schema. serde-saphyr resolves some of
/// them into values (`!!binary YWxsb3c=` becomes `allow`, `!!timestamp`, local tags like
/// `!int`) and drops others, so that a value could mean something else to a person, a linter
/// or another YAML reader than to the agent; the only tags a policy may carry are the core
/// schema's, which change nothing a reader could disagree on. The scan keeps no more than the
/// nesting depth and never expands aliases, so its work is linear in the text (whose size the
/// source bounds); a document without `!` (nearly all) is not scanned at all.
fn foreign_tag(text: &str) -> Option<ForeignTag> {
    use serde_saphyr::granit_parser::{Event, Parser};

    if !text.contains('!') {
        return None;
    }
    /// Where the parser is: in a mapping (waiting for a key, or for the value of `key`) or in a
    /// sequence (at item `index`).
    enum Frame {
        Map { key: Option<String> },
        Seq { index: usize },
    }
    fn path(stack: &[Frame], key_itself: Option<&str>) -> String {
        let mut out = String::new();
        for frame in stack {
            match frame {
                Frame::Map { key: Some(k) } => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Frame::Map { key: None } => {}
                Frame::Seq { index } => out.push_str(&format!("[{index}]")),
            }
        }
        if let Some(k) = key_itself {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(k);
        }
        out
    }
    /// After a complete node: a key waits for its value, a value or an item moves on.
    fn advance(stack: &mut [Frame], scalar_key: Option<String>) {
        match stack.last_mut() {
            Some(Frame::Map { key }) => {
                *key = match key.take() {
                    None => Some(scalar_key.unwrap_or_else(|| "?".to_owned())),
                    Some(_) => None,
                }
            }
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }

    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(Ok((event, span))) = parser.next_event() {
        let tag = match &event {
            Event::Scalar(_, _, _, tag)
            | Event::SequenceStart(_, _, tag)
            | Event::MappingStart(_, _, tag) => tag.as_deref(),
            _ => None,
        };
        if let Some(tag) = tag.filter(|t| t.core_suffix().is_none()) {
            let is_key = matches!(stack.last(), Some(Frame::Map { key: None }));
            let key_text = match &event {
                Event::Scalar(v, ..) if is_key => Some(v.as_ref()),
                _ if is_key => Some("?"),
                _ => None,
            };
            return Some(ForeignTag {
                tag: tag.original(),
                field: path(&stack, key_text),
                line: span.tag_start.unwrap_or(span.start).line(),
            });
        }
        match event {
            Event::Scalar(value, ..) => advance(&mut stack, Some(value.into_owned())),
            Event::Alias(_) => advance(&mut stack, None),
            Event::SequenceStart(..) => stack.push(Frame::Seq { index: 0 }),
            Event::MappingStart(..) => stack.push(Frame::Map { key: None }),
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
                advance(&mut stack, None);
            }
            _ => {}
        }
    }
    None
}

fn known_kinds() -> String {
    KINDS
        .iter()
        .map(|k| format!("{} ({})", k.kind, k.api_version))
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The parser's message without its source snippet (the location is reported separately), and
/// without advice about parser options the user cannot set.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let message = e.without_snippet().to_string();
    let message = match message.rfind(" at line ") {
        Some(at) if e.location().is_some() => message[..at].to_string(),
        _ => message,
    };
    message.replace(", set DuplicateKeyPolicy in Options if acceptable", "")
}

#[cfg(test)]
mod tests;
