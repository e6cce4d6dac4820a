//! `--node-label` / `--node-name` of `validate` and `explain`: compile for one node of a
//! cluster, as its agent does in Kubernetes mode (`tollgate run --node-name`), where an
//! L4Policy whose `spec.nodeSelector` does not select the node's labels is left out of its
//! tables. Without them the node is unknown and every policy applies, as in directory and Git
//! mode.
use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Args;
use tollgate_model::cluster::NodeLabels;
use tollgate_model::Documents;

/// The node to compile for.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeArgs {
    /// A label of the node to compile for, KEY=VALUE; repeat for more. With it (or
    /// --node-name), an L4Policy whose spec.nodeSelector does not select these labels is left
    /// out, as the agent on that node leaves it out, and listed.
    #[arg(long = "node-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The name of the node to compile for (a node with no labels when no --node-label is
    /// given).
    #[arg(long = "node-name", value_name = "NAME")]
    pub name: Option<String>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("{text:?}: the key is empty"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

impl NodeArgs {
    /// The node, when one is given.
    pub fn node(&self) -> Option<NodeLabels> {
        if self.labels.is_empty() && self.name.is_none() {
            return None;
        }
        Some(NodeLabels {
            name: self.name.as_deref().unwrap_or("(--node-label)").into(),
            labels: self.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        })
    }

    /// Hands the node to the compiler with `docs` (as the Kubernetes source does).
    pub fn apply(&self, docs: &mut Documents) {
        apply_node(docs, self.node());
    }
}

/// Hands `node` to the compiler with `docs`; nothing when `None`.
pub fn apply_node(docs: &mut Documents, node: Option<NodeLabels>) {
    if let Some(node) = node {
        let mut cluster = docs
            .cluster
            .take()
            .map(Arc::unwrap_or_clone)
            .unwrap_or_default();
        cluster.node = Some(node);
        docs.cluster = Some(Arc::new(cluster));
    }
}

/// `key=value, ...` of a node's labels (`no labels` when it has none), for messages.
pub fn labels_text(node: &NodeLabels) -> String {
    if node.labels.is_empty() {
        return "no labels".to_owned();
    }
    node.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_make_a_node() {
        assert_eq!(parse_label("zone=b"), Ok(("zone".into(), "b".into())));
        assert_eq!(parse_label("gpu="), Ok(("gpu".into(), "".into())));
        assert!(parse_label("zone").is_err());
        assert!(parse_label("=b").is_err());
        assert_eq!(NodeArgs::default().node(), None);
        let args = NodeArgs {
            labels: vec![("zone".into(), "b".into()), ("gpu".into(), "yes".into())],
            name: Some("node-7".into()),
        };
        let node = args.node().unwrap();
        assert_eq!(&*node.name, "node-7");
        assert_eq!(labels_text(&node), "gpu=yes, zone=b");
        let mut docs = Documents::inline(&[]);
        args.apply(&mut docs);
        assert_eq!(docs.cluster.unwrap().node.as_ref(), Some(&node));
    }
}
