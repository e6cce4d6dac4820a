//! Stable numeric ids for rules, rule sets and source entries.
//!
//! Map keys and values carry ids, not names. If ids were positions in the compiled snapshot,
//! adding one rule would renumber the rules after it and rewrite every entry; instead an id,
//! once given to a name, stays with it for as long as the name exists, so a one-rule change
//! writes a handful of entries. The table is saved in the state directory so a restarted agent
//! keeps the ids the kernel maps already use.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One id space (names -> ids in `0..capacity`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdSpace {
    /// Live names.
    pub ids: BTreeMap<String, u32>,
    /// Ids free for reuse.
    free: Vec<u32>,
    /// Ids released by the last revision: the previous generation may still name them, so
    /// they are reused only after one more revision.
    quarantine: Vec<u32>,
    /// Next never-used id.
    next: u32,
}

impl IdSpace {
    /// Makes `names` exactly the live set: keeps existing ids, gives new names an id, releases
    /// the rest. Returns the ids given out afresh (their counters must be reset) or `None` if
    /// the space is exhausted.
    pub fn sync<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
        capacity: u32,
    ) -> Option<Vec<u32>> {
        let wanted: std::collections::BTreeSet<&str> = names.into_iter().collect();
        // Last revision's releases become reusable now.
        self.free.append(&mut self.quarantine);
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        let released: Vec<String> = self
            .ids
            .keys()
            .filter(|k| !wanted.contains(k.as_str()))
            .cloned()
            .collect();
        for name in released {
            if let Some(id) = self.ids.remove(&name) {
                self.quarantine.push(id);
            }
        }
        let mut fresh = Vec::new();
        for name in wanted {
            if self.ids.contains_key(name) {
                continue;
            }
            let id = match self.free.pop() {
                Some(id) => id,
                None if self.next < capacity => {
                    self.next += 1;
                    self.next - 1
                }
                None => return None,
            };
            self.ids.insert(name.to_owned(), id);
            fresh.push(id);
        }
        Some(fresh)
    }

    /// The id of a live name.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }
}

/// All id spaces of the data plane.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ids {
    /// Rules, by `policy/rule`, and set defaults, by `<set key>/(default)`.
    pub rules: IdSpace,
    /// Rule sets (scopes of the source tries), by set key.
    pub scopes: IdSpace,
    /// Source entries, by `<set key>|<cidr>` and `<set key>|*` for the wildcard.
    pub entries: IdSpace,
}

/// File name of the id table in the state directory.
pub const IDS_FILE: &str = "ids.json";

impl Ids {
    /// Loads the table saved in `state_dir`; a missing file is an empty table.
    pub fn load(state_dir: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read(state_dir.join(IDS_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves the table atomically (write to a temporary file, then rename).
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let tmp = state_dir.join(format!("{IDS_FILE}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, state_dir.join(IDS_FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_with_their_names_and_released_ids_wait_one_revision() {
        let mut s = IdSpace::default();
        assert_eq!(s.sync(["a", "b", "c"], 10).unwrap(), vec![0, 1, 2]);
        // b goes away: a and c keep their ids; d gets a new one (b's id is in quarantine).
        assert_eq!(s.sync(["a", "c", "d"], 10).unwrap(), vec![3]);
        assert_eq!(
            (s.get("a"), s.get("c"), s.get("d")),
            (Some(0), Some(2), Some(3))
        );
        // One revision later b's id (1) is reused.
        assert_eq!(s.sync(["a", "c", "d", "e"], 10).unwrap(), vec![1]);
        assert_eq!(s.get("e"), Some(1));
    }

    #[test]
    fn an_exhausted_space_says_so() {
        let mut s = IdSpace::default();
        assert!(s.sync(["a", "b"], 1).is_none());
    }
}
