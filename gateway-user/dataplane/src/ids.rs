//! Stable numeric ids for rules, rule sets and source entries.
//!
//! Map keys and values carry ids, not names. If ids were positions in the compiled snapshot,
//! adding one rule would renumber the rules after it and rewrite every entry; instead an id,
//! once given to a name, stays with it for as long as the name exists, so a one-rule change
//! writes a handful of entries. The table is saved in the state directory so a restarted agent
//! keeps the ids the kernel maps already use.
//!
//! Names are two-level (`policy` -> `rule`, `rule set` -> `source prefix`) so that looking one
//! up never allocates: an apply of a 100,000-rule revision does 200,000 look-ups.
use rustc_hash::FxHashMap as HashMap;
use std::hash::Hash;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One id space: `outer -> inner -> id`, ids in `0..capacity`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(bound(serialize = "K: Serialize", deserialize = "K: Deserialize<'de>"))]
pub struct IdSpace<K: Hash + Eq> {
    /// Live names.
    ids: HashMap<String, HashMap<K, u32>>,
    /// Ids free for reuse.
    free: Vec<u32>,
    /// Ids released by the last revision: the previous generation may still name them, so
    /// they are reused only after one more revision.
    quarantine: Vec<u32>,
    /// Next never-used id.
    next: u32,
    /// Revision stamp of each id (index = id), for the sweep of [`IdSpace::end`].
    #[serde(skip)]
    stamps: Vec<u64>,
    #[serde(skip)]
    stamp: u64,
}

impl<K: Hash + Eq> Default for IdSpace<K> {
    fn default() -> Self {
        Self {
            ids: HashMap::default(),
            free: Vec::new(),
            quarantine: Vec::new(),
            next: 0,
            stamps: Vec::new(),
            stamp: 0,
        }
    }
}

/// The space ran out of ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

impl<K: Hash + Eq + Clone> IdSpace<K> {
    /// Starts a revision: last revision's releases become reusable.
    pub fn begin(&mut self) {
        self.free.append(&mut self.quarantine);
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        self.stamp += 1;
        self.stamps.resize(self.next as usize, 0);
    }

    /// The id of `outer`/`inner` in this revision, giving it one if it is new. Returns the id
    /// and whether it is fresh (its counters must be reset).
    pub fn id(&mut self, outer: &str, inner: &K, capacity: u32) -> Result<(u32, bool), Exhausted> {
        if let Some(&id) = self.ids.get(outer).and_then(|m| m.get(inner)) {
            self.stamps[id as usize] = self.stamp;
            return Ok((id, false));
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None if self.next < capacity => {
                self.next += 1;
                self.stamps.push(0);
                self.next - 1
            }
            None => return Err(Exhausted),
        };
        self.stamps[id as usize] = self.stamp;
        self.ids
            .entry(outer.to_owned())
            .or_default()
            .insert(inner.clone(), id);
        Ok((id, true))
    }

    /// Releases a name (its id is reused after one more revision).
    pub fn release(&mut self, outer: &str, inner: &K) {
        if let Some(m) = self.ids.get_mut(outer) {
            if let Some(id) = m.remove(inner) {
                self.quarantine.push(id);
            }
            if m.is_empty() {
                self.ids.remove(outer);
            }
        }
    }

    /// Ends a revision: names not seen since [`IdSpace::begin`] are released.
    pub fn end(&mut self) {
        let (stamps, stamp) = (&self.stamps, self.stamp);
        let quarantine = &mut self.quarantine;
        self.ids.retain(|_, inner| {
            inner.retain(|_, id| {
                let live = stamps[*id as usize] == stamp;
                if !live {
                    quarantine.push(*id);
                }
                live
            });
            !inner.is_empty()
        });
    }

    /// The id of a live name.
    pub fn get(&self, outer: &str, inner: &K) -> Option<u32> {
        self.ids.get(outer)?.get(inner).copied()
    }

    /// Every live name and its id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &K, u32)> {
        self.ids
            .iter()
            .flat_map(|(o, m)| m.iter().map(move |(k, &id)| (o.as_str(), k, id)))
    }

    /// Number of live names.
    pub fn len(&self) -> usize {
        self.ids.values().map(|m| m.len()).sum()
    }

    /// True when no name is live.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Ids a new revision can still take.
    pub fn room(&self, capacity: u32) -> usize {
        self.free.len() + self.quarantine.len() + (capacity - self.next.min(capacity)) as usize
    }
}

/// A source entry of a rule set: a prefix, or the wildcard (rules without `from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKey {
    /// Rules that name no source.
    Wildcard,
    /// A source prefix.
    Net(IpNet),
}

impl Serialize for EntryKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EntryKey::Wildcard => s.serialize_str("*"),
            EntryKey::Net(n) => s.collect_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for EntryKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "*" {
            return Ok(EntryKey::Wildcard);
        }
        s.parse()
            .map(EntryKey::Net)
            .map_err(serde::de::Error::custom)
    }
}

/// All id spaces of the data plane.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ids {
    /// Rules: policy -> rule name (a set's default: set key -> `(default)`).
    pub rules: IdSpace<String>,
    /// Rule sets (scopes of the source tries): set key -> "".
    pub scopes: IdSpace<String>,
    /// Source entries: set key -> prefix or wildcard.
    pub entries: IdSpace<EntryKey>,
    /// The index each interface's rule set is written under in `IFACES` (an interface that is
    /// deleted and created again comes back under a new one). Absent from tables saved before
    /// it existed.
    #[serde(default)]
    pub interfaces: std::collections::BTreeMap<String, u32>,
}

/// File name of the id table in the state directory.
pub const IDS_FILE: &str = "ids.json";

impl Ids {
    /// Loads the table saved in `state_dir`; a missing file is an empty table.
    pub fn load(state_dir: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read(state_dir.join(IDS_FILE)) {
            Ok(bytes) => {
                let mut ids: Ids = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                for space in [&mut ids.rules, &mut ids.scopes] {
                    space.stamps = vec![0; space.next as usize];
                }
                ids.entries.stamps = vec![0; ids.entries.next as usize];
                Ok(Some(ids))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves the table atomically (a fresh temporary file created 0600, then a rename), in a
    /// state directory created 0700: the agent's state is its user's alone, as the last good
    /// revision is (`tollgate_source::last_good::write_private`, which this crate cannot use:
    /// the data plane depends on no source).
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)?;
        let tmp = state_dir.join(format!("{IDS_FILE}.tmp"));
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        drop(file);
        std::fs::rename(tmp, state_dir.join(IDS_FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(s: &mut IdSpace<String>, names: &[&str], capacity: u32) -> Result<Vec<u32>, Exhausted> {
        s.begin();
        let mut fresh = Vec::new();
        for n in names {
            let (id, new) = s.id("p", &n.to_string(), capacity)?;
            if new {
                fresh.push(id);
            }
        }
        s.end();
        Ok(fresh)
    }

    #[test]
    fn ids_stay_with_their_names_and_released_ids_wait_one_revision() {
        let mut s = IdSpace::default();
        assert_eq!(sync(&mut s, &["a", "b", "c"], 10).unwrap(), vec![0, 1, 2]);
        // b goes away: a and c keep their ids; d gets a new one (b's id is in quarantine).
        assert_eq!(sync(&mut s, &["a", "c", "d"], 10).unwrap(), vec![3]);
        assert_eq!(
            (
                s.get("p", &"a".into()),
                s.get("p", &"c".into()),
                s.get("p", &"d".into())
            ),
            (Some(0), Some(2), Some(3))
        );
        // One revision later b's id (1) is reused.
        assert_eq!(sync(&mut s, &["a", "c", "d", "e"], 10).unwrap(), vec![1]);
        assert_eq!(s.get("p", &"e".into()), Some(1));
    }

    #[test]
    fn an_exhausted_space_says_so() {
        let mut s = IdSpace::default();
        assert_eq!(sync(&mut s, &["a", "b"], 1), Err(Exhausted));
    }

    #[test]
    fn the_table_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = Ids::default();
        ids.entries.begin();
        ids.entries
            .id("set", &EntryKey::Net("10.0.0.0/8".parse().unwrap()), 10)
            .unwrap();
        ids.entries.id("set", &EntryKey::Wildcard, 10).unwrap();
        ids.entries.end();
        ids.save(dir.path()).unwrap();
        let mut back = Ids::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.entries.get("set", &EntryKey::Wildcard), Some(1));
        // A loaded table keeps working.
        back.entries.begin();
        assert_eq!(
            back.entries.id("set", &EntryKey::Wildcard, 10).unwrap(),
            (1, false)
        );
    }

    #[test]
    fn the_table_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        Ids::default().save(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(IDS_FILE)), 0o600);
        // A world-readable temporary file left by a crash is replaced, not reused.
        let tmp = state.join(format!("{IDS_FILE}.tmp"));
        std::fs::write(&tmp, "{}").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        Ids::default().save(&state).unwrap();
        assert_eq!(mode(&state.join(IDS_FILE)), 0o600);
        assert!(!tmp.exists());
    }
}
