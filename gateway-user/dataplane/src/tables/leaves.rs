//! `SRC4_LEAVES` (and `SRC4_LEAVES_HI`) as the tables hold them: a vector by leaf number, not
//! a hash map. Numbers are dense (entry ids, then the spare numbers below `LEAF_NUMBERS`), and
//! at 100,000 rules filling and comparing a hash map of 100,000 leaves was about a sixth of a
//! one-rule apply (random probes, a cache miss each); a vector is filled and compared in order.
use gateway_common::SrcValue;

/// Leaves by number; `None` is a number no slot or way names (the map holds zeros there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leaves4 {
    /// Index = leaf number; as long as the highest number plus one (never a trailing `None`:
    /// only [`Leaves4::insert`] grows it), so that equal tables are equal vectors.
    slots: Vec<Option<SrcValue>>,
    /// Number of `Some`s.
    len: usize,
}

impl Leaves4 {
    /// The leaf numbered `n`.
    pub fn get(&self, n: &u32) -> Option<&SrcValue> {
        self.slots.get(*n as usize)?.as_ref()
    }

    /// Sets leaf `n` (it must be below `LEAF_NUMBERS`, as the builders ensure).
    pub fn insert(&mut self, n: u32, v: SrcValue) {
        let i = n as usize;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        if self.slots[i].replace(v).is_none() {
            self.len += 1;
        }
    }

    /// Room for numbers below `n` without growing.
    pub fn reserve_numbers(&mut self, n: usize) {
        self.slots.reserve(n.saturating_sub(self.slots.len()));
    }

    /// No leaves.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.len = 0;
    }

    /// How many leaves.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no leaf.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The numbers of the leaves, in order.
    pub fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.slots.len() as u32).filter(|&n| self.slots[n as usize].is_some())
    }

    /// What to write to bring a map from `self` to `desired`: the leaves to set (new or
    /// changed) and the numbers to clear. One walk of both vectors in order.
    pub fn diff<'a>(&'a self, desired: &'a Leaves4) -> (Vec<(u32, &'a SrcValue)>, Vec<u32>) {
        let (mut upsert, mut remove) = (Vec::new(), Vec::new());
        let n = self.slots.len().max(desired.slots.len());
        for i in 0..n {
            let held = self.slots.get(i).and_then(Option::as_ref);
            match (held, desired.slots.get(i).and_then(Option::as_ref)) {
                (h, Some(d)) if h != Some(d) => upsert.push((i as u32, d)),
                (Some(_), None) => remove.push(i as u32),
                _ => {}
            }
        }
        (upsert, remove)
    }
}

impl FromIterator<(u32, SrcValue)> for Leaves4 {
    fn from_iter<I: IntoIterator<Item = (u32, SrcValue)>>(iter: I) -> Self {
        let mut t = Leaves4::default();
        for (n, v) in iter {
            t.insert(n, v);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(entry: u32) -> SrcValue {
        SrcValue {
            entry,
            ..SrcValue::default()
        }
    }

    #[test]
    fn the_diff_sets_what_is_new_or_changed_and_clears_what_is_gone() {
        let held: Leaves4 = [(0, leaf(1)), (3, leaf(3)), (7, leaf(7)), (9, leaf(9))]
            .into_iter()
            .collect();
        let desired: Leaves4 = [(0, leaf(1)), (3, leaf(4)), (5, leaf(5)), (12, leaf(12))]
            .into_iter()
            .collect();
        let (upsert, remove) = held.diff(&desired);
        let upsert: Vec<(u32, u32)> = upsert.into_iter().map(|(n, v)| (n, v.entry)).collect();
        assert_eq!(upsert, vec![(3, 4), (5, 5), (12, 12)]);
        assert_eq!(remove, vec![7, 9]);
        // Back again: the reverse.
        let (upsert, remove) = desired.diff(&held);
        assert_eq!(upsert.len(), 3);
        assert_eq!(remove, vec![5, 12]);
        assert_eq!(held.diff(&held.clone()), (vec![], vec![]));
    }

    #[test]
    fn equal_tables_are_equal_whatever_their_vectors_length_and_a_zero_leaf_is_a_leaf() {
        let mut a: Leaves4 = [(2, leaf(2))].into_iter().collect();
        let b = a.clone();
        a.reserve_numbers(100);
        a.insert(50, leaf(50));
        assert_ne!(a, b);
        let mut c = Leaves4::default();
        c.insert(60, leaf(60));
        c.clear();
        c.insert(2, leaf(2));
        assert_eq!(c, b);
        assert_eq!((c.len(), c.keys().collect::<Vec<_>>()), (1, vec![2]));
        // An all-zero value is held, and differs from no leaf.
        let zero: Leaves4 = [(2, SrcValue::default())].into_iter().collect();
        assert_eq!(zero.get(&2), Some(&SrcValue::default()));
        assert_eq!(zero.get(&3), None);
        assert_ne!(zero, Leaves4::default());
        assert_eq!(Leaves4::default().diff(&zero).0.len(), 1);
    }
}
