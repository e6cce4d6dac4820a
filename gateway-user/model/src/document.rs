//! The YAML of one file: split into its documents (so that each error names its document and
//! line), and each document parsed within the parser limits the revision's budget leaves, what
//! the parse spent read back. Apart from `lib.rs` because it is about the text and the
//! parser's bounds; what a document says is read in `identify.rs`.
use crate::identify::parse_value;
use crate::limits;
use crate::parse_cache::DocFailure;
use crate::{Located, Object};

/// One YAML document of a file: its text, its 1-based number in the file and the line it
/// starts on (so that parser positions can be turned back into file positions).
pub(crate) struct Document<'a> {
    pub(crate) text: &'a str,
    pub(crate) number: usize,
    pub(crate) first_line: usize,
}

/// Splits a file at its document markers (`---` at the start of a line), so that one malformed
/// document does not hide the errors of the others and every error can name its document. YAML
/// forbids `---` at the start of a line inside any scalar, so this split is exact. Directive
/// lines (`%YAML 1.2`) stay with the document they introduce.
pub(crate) fn split_documents(content: &str) -> Vec<Document<'_>> {
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
pub(crate) struct Read {
    /// Nodes, alias expansions included.
    pub(crate) nodes: usize,
    /// Whether the document uses aliases.
    pub(crate) aliases: bool,
    /// Whether the parser stopped at its node or event budget (what the revision's node
    /// budget counts), as its report says: never guessed from an error's text, which can
    /// quote the document (an unknown field named `max_nodes`).
    pub(crate) node_budget: bool,
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
                node_budget: matches!(
                    r.breached,
                    Some(
                        serde_saphyr::budget::BudgetBreach::Nodes { .. }
                            | serde_saphyr::budget::BudgetBreach::Events { .. }
                    )
                ),
            })
        },
    )));
    options
}

/// Reads one document within `max_nodes` YAML nodes (and `max_alias_nodes` of alias
/// expansion): `Ok(None)` when it is empty; and what was read (when a bound stopped the parse,
/// the whole bound, so that the revision's budget sees it crossed).
pub(crate) fn parse_document(
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
        // (The alias limit is an error of its own, not in the budget's report: told by the
        // parser's own words, which a document's text cannot produce in a document that
        // uses aliases... but only such a document can hit it.)
        if read.aliases
            && e.message
                .contains("alias replay limit exceeded: total_replayed_events=")
        {
            read.nodes = read.nodes.max(max_alias_nodes);
        } else if read.node_budget {
            // (A document nested too deep is its own problem, reported as such, not the
            // revision's node budget spent.)
            read.nodes = read.nodes.max(max_nodes);
        }
    }
    (result, read)
}

/// The parser's message without its source snippet (the location is reported separately), and
/// without advice about parser options the user cannot set.
pub(crate) fn yaml_message(e: &serde_saphyr::Error) -> String {
    let message = e.without_snippet().to_string();
    let message = match message.rfind(" at line ") {
        Some(at) if e.location().is_some() => message[..at].to_string(),
        _ => message,
    };
    if message.contains("budget breached: Depth") {
        return "mappings and lists nested more than 64 deep (no policy needs a tenth of that)"
            .to_owned();
    }
    message.replace(", set DuplicateKeyPolicy in Options if acceptable", "")
}
