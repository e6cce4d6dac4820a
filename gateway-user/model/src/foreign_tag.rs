//! Finding a YAML tag outside the core schema in a document's text, before its value is
//! trusted. Apart from `lib.rs` because it walks the parser's events on its own, with its own
//! small state machine.

/// A tag outside the YAML core schema, where it was found.
pub(crate) struct ForeignTag {
    /// As written (`!!binary`, `!secret`, `!<tag:example.com:x>`).
    pub(crate) tag: String,
    /// Field path of the tagged node (`spec.rules[0].action`; for a tagged key, the key's).
    pub(crate) field: String,
    /// Line in the document (1-based).
    pub(crate) line: usize,
}

/// The first tag of `text` outside the YAML 1.2 core schema. serde-saphyr resolves some of
/// them into values (`!!binary YWxsb3c=` becomes `allow`, `!!timestamp`, local tags like
/// `!int`) and drops others, so that a value could mean something else to a person, a linter
/// or another YAML reader than to the agent; the only tags a policy may carry are the core
/// schema's, which change nothing a reader could disagree on. The scan keeps no more than the
/// nesting depth and never expands aliases, so its work is linear in the text (whose size the
/// source bounds); a document without `!` (nearly all) is not scanned at all.
pub(crate) fn foreign_tag(text: &str) -> Option<ForeignTag> {
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
