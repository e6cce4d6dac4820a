//! `tollgate explain`: the verdict a packet would get, from the same compiled snapshot the
//! kernel gets (the table lookup the data path does, not a separate interpretation).
use std::path::PathBuf;

use clap::Args;

use crate::compile::l4::RuleKind;
use crate::compile::packet::{Outcome, Packet, Reason};
use crate::compile::snapshot::{compile_documents, ANY_OTHER_INTERFACE};
use crate::source::dir::read_dir;

/// Arguments of `tollgate explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Policy directory (or file).
    #[arg(long)]
    pub source: PathBuf,
    /// The packet, e.g. 'tcp 203.0.113.7:51000 -> 10.0.0.1:22' or 'icmp 192.0.2.1 -> 10.0.0.1 type 8'.
    #[arg(long)]
    pub packet: String,
    /// The interface it arrives on (default: one that no policy names).
    #[arg(long, default_value = ANY_OTHER_INTERFACE)]
    pub interface: String,
}

/// Runs `explain`; exit 0 pass, 1 drop, 2 error.
pub fn explain(args: ExplainArgs) -> anyhow::Result<i32> {
    let packet: Packet = match args.packet.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let docs = match read_dir(&args.source) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let mut interfaces: Vec<String> = vec![args.interface.clone()];
    if args.interface != ANY_OTHER_INTERFACE {
        interfaces.push(ANY_OTHER_INTERFACE.into());
    }
    let snapshot = match compile_documents(&docs, Some(&interfaces)) {
        Ok(s) => s,
        Err(e) => {
            eprint!("the policy is invalid, nothing would be applied:\n{e}");
            return Ok(2);
        }
    };
    let l4 = &snapshot.l4;
    let d = l4.decide(&args.interface, &packet);
    let verdict = match (d.outcome, d.reason) {
        (Outcome::Drop, _) => "DROP",
        (Outcome::Pass, Reason::Audit) => "PASS (audit: would DROP)",
        (Outcome::Pass, _) => "PASS",
    };
    println!("packet:    {}", args.packet);
    println!("interface: {}", args.interface);
    println!("verdict:   {verdict}");
    let find = |r: &crate::compile::packet::RuleRef| {
        l4.rules
            .iter()
            .find(|i| i.policy == r.policy && i.rule == r.rule)
    };
    match (&d.rule, d.reason) {
        (Some(r), _) => {
            let info = find(r);
            let kind = match info.map(|i| i.kind) {
                Some(RuleKind::Deny) => "deny",
                Some(RuleKind::Allow) => "allow",
                _ => "default",
            };
            println!(
                "decided by: L4Policy/{} rule {} ({kind}, {})",
                r.policy,
                r.rule,
                info.map(|i| i.file.as_str()).unwrap_or("")
            );
        }
        (None, Reason::Unconfigured) => println!(
            "decided by: no L4Policy applies to interface {}",
            args.interface
        ),
        (None, Reason::Fragment) => {
            println!("decided by: non-first fragment; no rule without ports or ICMP types matches, so it passes (its first fragment was judged)")
        }
        (None, _) => {
            let set = &l4.sets[l4.interfaces[&args.interface]];
            println!(
                "decided by: defaultAction {:?} of {} (no rule matches)",
                set.default_action,
                set.policies.join(", ")
            );
        }
    }
    let why = match d.reason {
        Reason::Policy if d.outcome == Outcome::Drop => {
            "a deny rule matches; deny wins over any allow"
        }
        Reason::Policy => "an allow rule matches and no deny rule does",
        Reason::Default => "no rule matches",
        Reason::Audit => "audit mode: the packet would be dropped, it is only counted",
        Reason::Fragment => "fragments after the first carry no ports",
        Reason::Unconfigured => "unconfigured interfaces pass everything",
        Reason::RateLimit => "rate limit",
    };
    println!("why:       {why}");
    for r in &d.limits {
        if let Some(l) = find(r).and_then(|i| i.rate_limit) {
            println!(
                "rate limit: {r}: {} packets/s, burst {}, per source /{} (IPv4) /{} (IPv6); over it the packet is dropped (reason ratelimit)",
                l.packets_per_second, l.burst, l.ipv4_prefix, l.ipv6_prefix
            );
        }
    }
    println!("revision:  {}", snapshot.revision.id);
    Ok(if d.outcome == Outcome::Drop { 1 } else { 0 })
}
