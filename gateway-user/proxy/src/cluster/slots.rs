//! Health per Redis Cluster slot: a primary that cannot be reached takes only its own slots
//! into fallback; keys of the other primaries keep sharing their limits.
//!
//! The sync task learns which primary serves which slots (`CLUSTER SLOTS`, answered by any
//! node) and pings each primary through the client's own slot routing, after a round in which
//! some scripts failed and every [`super::HEALTH_EVERY`] while a primary is down or the task
//! is idle. The slots of the primaries that do not answer are marked down here; a request
//! reads one bit (one atomic load, and none at all while every primary answers).
//!
//! A Redis Cluster with `cluster-require-full-coverage yes` (Redis' default) refuses every
//! key (`CLUSTERDOWN`) once a primary is marked failed: then scripts fail on the primaries that
//! answer PING too, and the whole backend is down, which is what Redis says.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Slots of a Redis Cluster.
pub const SLOTS: usize = 16_384;
const WORDS: usize = SLOTS / 64;

/// The slot of `key`: CRC16-XMODEM of its hash tag (the part between the first `{` and the next
/// `}`, if not empty) or of the whole key, modulo [`SLOTS`] (the Redis Cluster specification).
pub fn slot_of(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let rest = &b[open + 1..];
        rest.iter()
            .position(|&c| c == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(b)) % SLOTS as u16
}

/// A primary that did not answer, and its slots (inclusive ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCheck {
    /// `host:port` as the cluster names it.
    pub node: String,
    /// Its slots.
    pub ranges: Vec<(u16, u16)>,
    /// Why it is down; `None`: it answered.
    pub error: Option<String>,
}

#[derive(Debug)]
struct Down {
    node: String,
    slots: u32,
    since: Instant,
    error: String,
}

/// What `/status` says of one primary that is down.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeDownStatus {
    /// `host:port`.
    pub node: String,
    /// Slots it serves (their keys follow `onBackendFailure`).
    pub slots: u32,
    /// Seconds since it was found down.
    pub since_seconds: f64,
    /// The error of its last check.
    pub error: String,
}

/// Which slots' primaries answer.
#[derive(Debug)]
pub(crate) struct SlotHealth {
    any_down: AtomicBool,
    bits: Box<[AtomicU64]>,
    down: Mutex<Vec<Down>>,
}

impl Default for SlotHealth {
    fn default() -> Self {
        SlotHealth {
            any_down: AtomicBool::new(false),
            bits: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
            down: Mutex::new(Vec::new()),
        }
    }
}

/// What a check changed: the primaries found down, and those back.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub went_down: Vec<String>,
    pub came_back: Vec<String>,
}

impl SlotHealth {
    /// Whether the primary of `slot` answered its last check.
    pub fn is_up(&self, slot: u16) -> bool {
        if !self.any_down.load(Ordering::Relaxed) {
            return true;
        }
        let slot = usize::from(slot) % SLOTS;
        self.bits[slot / 64].load(Ordering::Relaxed) & (1 << (slot % 64)) == 0
    }

    /// Whether some primary is down.
    pub fn any_down(&self) -> bool {
        self.any_down.load(Ordering::Relaxed)
    }

    /// Takes the result of a check of every primary: the slots of those that did not answer
    /// are down, every other slot is up.
    pub fn set(&self, checks: &[NodeCheck]) -> Changes {
        let mut words = [0u64; WORDS];
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::new();
        let mut changes = Changes::default();
        for c in checks {
            let Some(error) = &c.error else { continue };
            let mut slots = 0;
            for &(start, end) in &c.ranges {
                for s in start..=end.min(SLOTS as u16 - 1) {
                    words[usize::from(s) / 64] |= 1 << (s % 64);
                    slots += 1;
                }
            }
            let since = match down.iter().find(|d| d.node == c.node) {
                Some(d) => d.since,
                None => {
                    changes.went_down.push(c.node.clone());
                    Instant::now()
                }
            };
            next.push(Down {
                node: c.node.clone(),
                slots,
                since,
                error: error.clone(),
            });
        }
        for d in down.iter() {
            if !next.iter().any(|n| n.node == d.node) {
                changes.came_back.push(d.node.clone());
            }
        }
        // Bits before the flag: a request that sees the flag sees the bits.
        for (bit, w) in self.bits.iter().zip(words) {
            bit.store(w, Ordering::Relaxed);
        }
        self.any_down.store(!next.is_empty(), Ordering::Release);
        *down = next;
        changes
    }

    /// The primaries down now.
    pub fn status(&self) -> Vec<NodeDownStatus> {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        down.iter()
            .map(|d| NodeDownStatus {
                node: d.node.clone(),
                slots: d.slots,
                since_seconds: (d.since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                error: d.error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_redis_cluster_specification() {
        // The specification's examples (CLUSTER KEYSLOT of a Redis 7 answers the same).
        assert_eq!(slot_of("123456789"), 12739);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(slot_of("foo{}{bar}"), {
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % 16384
        });
        assert_eq!(slot_of("foo{{bar}}zap"), slot_of("{bar"));
        assert_eq!(
            slot_of("tollgate:rl:{abc}"),
            slot_of("tollgate:rl:{abc}:123")
        );
    }

    #[test]
    fn a_dead_primary_takes_down_its_slots_only_and_comes_back() {
        let h = SlotHealth::default();
        assert!(h.is_up(5) && !h.any_down());
        let checks = [
            NodeCheck {
                node: "a:1".into(),
                ranges: vec![(0, 5460)],
                error: Some("refused".into()),
            },
            NodeCheck {
                node: "b:1".into(),
                ranges: vec![(5461, 10922)],
                error: None,
            },
            NodeCheck {
                node: "c:1".into(),
                ranges: vec![(10923, 16383), (100, 100)],
                error: None,
            },
        ];
        let c = h.set(&checks);
        assert_eq!(c.went_down, ["a:1"]);
        assert!(h.any_down());
        assert!(!h.is_up(0) && !h.is_up(5460) && !h.is_up(64) && !h.is_up(100));
        assert!(h.is_up(5461) && h.is_up(16383));
        let s = h.status();
        assert_eq!(
            (s.len(), s[0].slots, s[0].error.as_str()),
            (1, 5461, "refused")
        );
        // The same again: no change, the time it went down kept.
        assert_eq!(h.set(&checks), Changes::default());
        let c = h.set(&[]);
        assert_eq!(c.came_back, ["a:1"]);
        assert!(h.is_up(0) && !h.any_down() && h.status().is_empty());
    }
}
