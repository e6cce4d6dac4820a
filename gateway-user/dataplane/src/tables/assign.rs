//! Ids for a snapshot's rules, rule sets and source entries (moved from `tables.rs`, which
//! turns them into map contents): a name keeps its id from one revision to the next.
use super::super::ids::{EntryKey, Exhausted, IdSpace, Ids};
use super::TablesError;
use gateway_common::{MAX_RULE_IDS, MAX_SOURCE_ENTRIES};
use tollgate_compile::l4::{L4Snapshot, RuleKind};

/// The ids of everything in a snapshot, by position.
#[derive(Debug, Clone, Default)]
pub struct Assigned {
    /// Rule id by `RuleIdx`.
    pub rules: Vec<u32>,
    /// Rule ids given out afresh (their counters must be zeroed before use).
    pub fresh_rules: Vec<u32>,
    /// Scope id by set index.
    pub scopes: Vec<u32>,
    /// Wildcard entry id by set index.
    pub wildcard: Vec<u32>,
    /// IPv4 entry ids by set index, in the order of `RuleSet::v4`.
    pub v4: Vec<Vec<u32>>,
    /// IPv6 entry ids, likewise.
    pub v6: Vec<Vec<u32>>,
}

/// What the previous revision's ids were given to, by position, so that the next revision's
/// ids come from a merge of two sorted lists instead of a look-up per name: a one-rule change
/// to a 100,000-rule revision then costs a walk, not 200,000 hash look-ups.
#[derive(Debug, Clone, Default)]
pub struct PrevAssignment {
    /// The rules' names one after the other, policy then rule: one allocation, which the merge
    /// reads in order (a `String` per name was 200,000 allocations at 100,000 rules, read at
    /// random, and milliseconds to free).
    names: String,
    /// By rule (defaults apart), in the snapshot's order: where its policy name ends and where
    /// its rule name ends in `names` (each starts where the one before ended), and its id.
    rules: Vec<(usize, usize, u32)>,
    defaults: Vec<(String, u32)>,
    sets: Vec<PrevSet>,
}

#[derive(Debug, Clone, Default)]
struct PrevSet {
    key: String,
    scope: u32,
    wildcard: u32,
    v4: Vec<(ipnet::Ipv4Net, u32)>,
    v6: Vec<(ipnet::Ipv6Net, u32)>,
}

impl PrevAssignment {
    /// Records the ids `assigned` gave to `snapshot`.
    pub fn new(snapshot: &L4Snapshot, assigned: &Assigned) -> Self {
        let mut prev = PrevAssignment {
            names: String::with_capacity(
                snapshot
                    .rules
                    .iter()
                    .map(|r| r.policy.len() + r.rule.len())
                    .sum(),
            ),
            ..PrevAssignment::default()
        };
        for (r, &id) in snapshot.rules.iter().zip(&assigned.rules) {
            match r.kind {
                RuleKind::Default { .. } => prev.defaults.push((r.policy.clone(), id)),
                _ => {
                    prev.names.push_str(&r.policy);
                    let policy_end = prev.names.len();
                    prev.names.push_str(&r.rule);
                    prev.rules.push((policy_end, prev.names.len(), id));
                }
            }
        }
        for (i, s) in snapshot.sets.iter().enumerate() {
            prev.sets.push(PrevSet {
                key: s.key.clone(),
                scope: assigned.scopes[i],
                wildcard: assigned.wildcard[i],
                v4: s
                    .v4
                    .keys()
                    .copied()
                    .zip(assigned.v4[i].iter().copied())
                    .collect(),
                v6: s
                    .v6
                    .keys()
                    .copied()
                    .zip(assigned.v6[i].iter().copied())
                    .collect(),
            });
        }
        prev
    }

    /// The rules' (policy, rule) names and ids, defaults apart, in the snapshot's order.
    fn rules(&self) -> impl Iterator<Item = ((&str, &str), u32)> {
        let mut start = 0;
        self.rules.iter().map(move |&(policy_end, rule_end, id)| {
            let names = (
                &self.names[start..policy_end],
                &self.names[policy_end..rule_end],
            );
            start = rule_end;
            (names, id)
        })
    }
}

/// Merges two sorted lists: `next` items found in `prev` keep their id; new ones get one from
/// `alloc`; `prev` items not in `next` go to `release`.
fn merge_ids<T: Ord + Copy>(
    prev: impl IntoIterator<Item = (T, u32)>,
    next: impl IntoIterator<Item = T>,
    mut alloc: impl FnMut(T) -> Result<(u32, bool), Exhausted>,
    mut release: impl FnMut(T),
    out: &mut Vec<u32>,
    fresh: &mut Vec<u32>,
) -> Result<(), Exhausted> {
    let mut prev = prev.into_iter().peekable();
    // One comparison per step (names are strings: each comparison is a walk of two heaps).
    for item in next {
        loop {
            let order = prev.peek().map(|&(p, id)| (p.cmp(&item), p, id));
            match order {
                Some((std::cmp::Ordering::Less, p, _)) => {
                    release(p);
                    prev.next();
                }
                Some((std::cmp::Ordering::Equal, _, id)) => {
                    out.push(id);
                    prev.next();
                    break;
                }
                _ => {
                    let (id, is_fresh) = alloc(item)?;
                    if is_fresh {
                        fresh.push(id);
                    }
                    out.push(id);
                    break;
                }
            }
        }
    }
    for (p, _) in prev {
        release(p);
    }
    Ok(())
}

/// [`assign_ids`] for a revision that follows `prev`: the same ids, found by merging.
pub fn assign_ids_after(
    ids: &mut Ids,
    snapshot: &L4Snapshot,
    prev: &PrevAssignment,
) -> Result<Assigned, TablesError> {
    let total_entries: usize = snapshot
        .sets
        .iter()
        .map(|s| 1 + s.v4.len() + s.v6.len())
        .sum();
    if snapshot.rules.len() > ids.rules.room(Space::Rule.capacity())
        || total_entries > ids.entries.room(Space::SourceEntry.capacity())
        || snapshot.sets.len() > ids.scopes.room(Space::RuleSet.capacity())
    {
        // Near capacity: the careful path, which checks before it changes anything.
        return assign_ids(ids, snapshot);
    }
    // The rules' ids and the sets' are in separate spaces: at 100,000 rules each half is a
    // merge of 100,000 names (about 9 and 5 ms of a one-rule change, measured), done side by
    // side.
    let Ids {
        rules,
        scopes,
        entries,
        ..
    } = ids;
    // Behind a lock only so that the closure can run on either thread (it is taken once).
    let rules = std::sync::Mutex::new(rules);
    let rule_half = || {
        let mut rules = rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rule_ids_after(&mut rules, snapshot, prev)
    };
    let (rule_ids, set_ids) = super::side_by_side(
        snapshot.rules.len() > super::TWO_THREADS_ABOVE,
        "tollgate-ids",
        rule_half,
        || set_ids_after(scopes, entries, snapshot, prev),
    );
    let ((rules, fresh_rules), (scopes, wildcard, v4, v6)) = (rule_ids?, set_ids?);
    Ok(Assigned {
        rules,
        fresh_rules,
        scopes,
        wildcard,
        v4,
        v6,
    })
}

/// The id spaces of the L4 tables, each with its capacity: the size of the maps its ids
/// index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Space {
    Rule,
    RuleSet,
    SourceEntry,
}

impl Space {
    const fn capacity(self) -> u32 {
        match self {
            Space::Rule => MAX_RULE_IDS,
            // Every rule set has a source entry of its own (its wildcard): never more sets
            // than entries.
            Space::RuleSet | Space::SourceEntry => MAX_SOURCE_ENTRIES,
        }
    }

    /// The error when the space has no room left.
    fn exhausted(self) -> TablesError {
        TablesError::IdsExhausted {
            what: match self {
                Space::Rule => "rule",
                Space::RuleSet => "rule set",
                Space::SourceEntry => "source entry",
            },
            capacity: self.capacity(),
        }
    }
}

/// The error of a space that ran out while ids were handed out.
fn exhausted(space: Space) -> impl Fn(Exhausted) -> TablesError {
    move |_| space.exhausted()
}

/// The rule half of [`assign_ids_after`]: rule ids by `RuleIdx`, and those given out afresh.
fn rule_ids_after(
    ids: &mut IdSpace<String>,
    snapshot: &L4Snapshot,
    prev: &PrevAssignment,
) -> Result<(Vec<u32>, Vec<u32>), TablesError> {
    ids.begin();
    let (mut out, mut fresh) = (Vec::with_capacity(snapshot.rules.len()), Vec::new());
    // Rules (sorted by policy and rule name), then the defaults of the sets: the snapshot
    // lists them in that order, so the defaults are found from the end. (At 100,000 rules a
    // pass over the rules is milliseconds: they are read once, by the merge.)
    let is_default =
        |r: &tollgate_compile::l4::RuleInfo| matches!(r.kind, RuleKind::Default { .. });
    let n_defaults = snapshot
        .rules
        .iter()
        .rev()
        .take_while(|r| is_default(r))
        .count();
    let (normal, defaults) = snapshot.rules.split_at(snapshot.rules.len() - n_defaults);
    {
        let rules = std::cell::RefCell::new(&mut *ids);
        merge_ids(
            prev.rules(),
            normal.iter().map(|r| (r.policy.as_str(), r.rule.as_str())),
            |(p, r)| {
                rules
                    .borrow_mut()
                    .id(p, &r.to_owned(), Space::Rule.capacity())
            },
            |(p, r)| rules.borrow_mut().release(p, &r.to_owned()),
            &mut out,
            &mut fresh,
        )
        .map_err(exhausted(Space::Rule))?;
    }
    for d in defaults {
        let (id, is_fresh) = ids
            .id(&d.policy, &d.rule, Space::Rule.capacity())
            .map_err(exhausted(Space::Rule))?;
        out.push(id);
        if is_fresh {
            fresh.push(id);
        }
    }
    for (key, _) in &prev.defaults {
        if !defaults.iter().any(|d| &d.policy == key) {
            ids.release(key, &tollgate_compile::l4::DEFAULT_RULE_NAME.to_owned());
        }
    }
    Ok((out, fresh))
}

/// Scope ids, wildcard entry ids, IPv4 and IPv6 entry ids by set index.
type SetIds = (Vec<u32>, Vec<u32>, Vec<Vec<u32>>, Vec<Vec<u32>>);

/// The set half of [`assign_ids_after`].
fn set_ids_after(
    scopes: &mut IdSpace<String>,
    entries: &mut IdSpace<EntryKey>,
    snapshot: &L4Snapshot,
    prev: &PrevAssignment,
) -> Result<SetIds, TablesError> {
    scopes.begin();
    entries.begin();
    let mut out: SetIds = Default::default();
    // Sets: matched by key; their prefixes merged (both sides sorted: BTreeMap order).
    let mut no_fresh = Vec::new();
    for s in &snapshot.sets {
        let p = prev.sets.iter().find(|p| p.key == s.key);
        let scope = match p {
            Some(p) => p.scope,
            None => {
                scopes
                    .id(&s.key, &String::new(), Space::RuleSet.capacity())
                    .map_err(exhausted(Space::RuleSet))?
                    .0
            }
        };
        out.0.push(scope);
        out.1.push(match p {
            Some(p) => p.wildcard,
            None => {
                entries
                    .id(&s.key, &EntryKey::Wildcard, Space::SourceEntry.capacity())
                    .map_err(exhausted(Space::SourceEntry))?
                    .0
            }
        });
        let entries = std::cell::RefCell::new(&mut *entries);
        let alloc = |n: ipnet::IpNet| {
            entries
                .borrow_mut()
                .id(&s.key, &EntryKey::Net(n), Space::SourceEntry.capacity())
        };
        let release = |n: ipnet::IpNet| entries.borrow_mut().release(&s.key, &EntryKey::Net(n));
        let mut v4 = Vec::with_capacity(s.v4.len());
        let empty4 = Vec::new();
        merge_ids(
            p.map_or(&empty4, |p| &p.v4).iter().map(|(n, id)| (*n, *id)),
            s.v4.keys().copied(),
            |n| alloc(n.into()),
            |n| release(n.into()),
            &mut v4,
            &mut no_fresh,
        )
        .map_err(exhausted(Space::SourceEntry))?;
        let mut v6 = Vec::with_capacity(s.v6.len());
        let empty6 = Vec::new();
        merge_ids(
            p.map_or(&empty6, |p| &p.v6).iter().map(|(n, id)| (*n, *id)),
            s.v6.keys().copied(),
            |n| alloc(n.into()),
            |n| release(n.into()),
            &mut v6,
            &mut no_fresh,
        )
        .map_err(exhausted(Space::SourceEntry))?;
        out.2.push(v4);
        out.3.push(v6);
    }
    for p in &prev.sets {
        if !snapshot.sets.iter().any(|s| s.key == p.key) {
            scopes.release(&p.key, &String::new());
            entries.release(&p.key, &EntryKey::Wildcard);
            for (n, _) in &p.v4 {
                entries.release(&p.key, &EntryKey::Net((*n).into()));
            }
            for (n, _) in &p.v6 {
                entries.release(&p.key, &EntryKey::Net((*n).into()));
            }
        }
    }
    Ok(out)
}

/// Gives every rule, set and entry of `snapshot` an id, keeping the ids of names that already
/// have one; releases the names that are gone. Nothing changes if an id space would overflow.
pub fn assign_ids(ids: &mut Ids, snapshot: &L4Snapshot) -> Result<Assigned, TablesError> {
    // A revision too big for the id spaces must change nothing: when there is not room for
    // every name of the revision, first count the names that are new.
    if snapshot.rules.len() > ids.rules.room(Space::Rule.capacity()) {
        let new_rules = snapshot
            .rules
            .iter()
            .filter(|r| ids.rules.get(&r.policy, &r.rule).is_none())
            .count();
        if new_rules > ids.rules.room(Space::Rule.capacity()) {
            return Err(Space::Rule.exhausted());
        }
    }
    let entries: usize = snapshot
        .sets
        .iter()
        .map(|s| 1 + s.v4.len() + s.v6.len())
        .sum();
    if entries > ids.entries.room(Space::SourceEntry.capacity()) {
        let mut new_entries = 0;
        for s in &snapshot.sets {
            new_entries += usize::from(ids.entries.get(&s.key, &EntryKey::Wildcard).is_none());
            new_entries +=
                s.v4.keys()
                    .filter(|n| {
                        ids.entries
                            .get(&s.key, &EntryKey::Net((**n).into()))
                            .is_none()
                    })
                    .count();
            new_entries +=
                s.v6.keys()
                    .filter(|n| {
                        ids.entries
                            .get(&s.key, &EntryKey::Net((**n).into()))
                            .is_none()
                    })
                    .count();
        }
        if new_entries > ids.entries.room(Space::SourceEntry.capacity()) {
            return Err(Space::SourceEntry.exhausted());
        }
    }
    if snapshot.sets.len() > ids.scopes.room(Space::RuleSet.capacity()) {
        return Err(Space::RuleSet.exhausted());
    }

    let mut out = Assigned::default();
    ids.rules.begin();
    for r in &snapshot.rules {
        let (id, fresh) = ids
            .rules
            .id(&r.policy, &r.rule, Space::Rule.capacity())
            .map_err(exhausted(Space::Rule))?;
        out.rules.push(id);
        if fresh {
            out.fresh_rules.push(id);
        }
    }
    ids.rules.end();
    ids.scopes.begin();
    ids.entries.begin();
    let entry = |space: &mut IdSpace<EntryKey>, set: &str, key: EntryKey| {
        space
            .id(set, &key, Space::SourceEntry.capacity())
            .map(|(id, _)| id)
            .map_err(exhausted(Space::SourceEntry))
    };
    for s in &snapshot.sets {
        out.scopes.push(
            ids.scopes
                .id(&s.key, &String::new(), Space::RuleSet.capacity())
                .map_err(exhausted(Space::RuleSet))?
                .0,
        );
        out.wildcard
            .push(entry(&mut ids.entries, &s.key, EntryKey::Wildcard)?);
        out.v4.push(
            s.v4.keys()
                .map(|n| entry(&mut ids.entries, &s.key, EntryKey::Net((*n).into())))
                .collect::<Result<_, _>>()?,
        );
        out.v6.push(
            s.v6.keys()
                .map(|n| entry(&mut ids.entries, &s.key, EntryKey::Net((*n).into())))
                .collect::<Result<_, _>>()?,
        );
    }
    ids.scopes.end();
    ids.entries.end();
    Ok(out)
}
