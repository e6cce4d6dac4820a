//! The cluster's Node count: the number of agents that share a cluster rate limit (one agent per
//! node, a DaemonSet), for each one's share while Redis cannot be reached.
//!
//! A metadata-only LIST of Nodes every [`COUNT_EVERY`], in pages of [`PAGE`] (`limit` and
//! `continue`), not a watch: the agent's watches are a budget (one per kind it enforces), the
//! count only needs to follow the cluster's size within a minute, and the metadata-only form
//! (`Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`) leaves out the
//! Nodes' status (their images and conditions, the bulk of a Node), so a list of 5,000 Nodes
//! stays a few megabytes every minute per agent. (Not `resourceVersion=0`, the watch cache:
//! it ignores `limit` and answers every Node at once.)
//!
//! Every Node counts, including those no agent runs on (a DaemonSet with a nodeSelector,
//! tainted control-plane nodes): the share is then smaller than it could be, never larger, so
//! N agents together never admit more than the limit while Redis is down.
//! `--ratelimit-agents` sets the count when that is too coarse.
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

/// How often the Nodes are counted.
pub const COUNT_EVERY: Duration = Duration::from_secs(60);
/// Nodes per page of the list.
pub const PAGE: u32 = 500;
/// How long one count may take (all its pages).
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Counts the cluster's Nodes: a metadata-only list, page by page.
pub async fn count(client: kube::Client) -> Result<u32, String> {
    let nodes: Api<Node> = Api::all(client);
    let pages = async {
        let mut total: u64 = 0;
        let mut token: Option<String> = None;
        loop {
            // The next pages follow the first page's snapshot (the continue token carries
            // it).
            let mut lp = ListParams::default().limit(PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = nodes
                .list_metadata(&lp)
                .await
                .map_err(|e| format!("list Nodes (metadata only): {e}"))?;
            total += page.items.len() as u64;
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(u32::try_from(total).unwrap_or(u32::MAX)),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, pages)
        .await
        .unwrap_or_else(|_| Err(format!("list Nodes: no answer within {TIMEOUT:?}")))
}
