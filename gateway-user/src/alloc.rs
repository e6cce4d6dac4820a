//! The allocator of the agent binary (mimalloc, see main.rs), as far as the agent steers it.
//!
//! Measured in docs/benchmarks-issue13.md ("Agent memory"): with a 10-route revision the agent's live
//! heap is about 5 MB, but it was 17.5–21 MiB resident. Two causes, one function each here.

/// Turns transparent huge pages off for this process, before the heap grows (the first thing
/// `main` does).
///
/// mimalloc reserves its arena (1 GiB of address space) and, on Linux, asks for transparent
/// huge pages on all of it (`madvise(MADV_HUGEPAGE)`): then a few live objects keep a whole
/// 2 MiB page resident, and its purges of freed 64 KiB ranges do not shrink one. That was
/// about 10 MiB of the idle agent's resident memory, for a heap whose working set is a few
/// MB. `PR_SET_THP_DISABLE` applies to
/// the whole process (mappings made before it too, whatever the system's THP setting) and is
/// inherited by the processes the agent starts (git, ssh), which lose nothing by it either.
/// A kernel without it (before 3.15) answers an error, which is ignored: memory, not
/// correctness.
pub fn disable_transparent_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Returns the memory the allocator holds free to the kernel now: empty pages of this thread's
/// heap and of threads that have ended, and every free range of its arenas, without waiting for
/// the purge delay (mimalloc purges a freed range only after `purge_delay`, 1 s, and only when
/// an allocation comes by to do it). For after a phase that freed much at once (the eBPF load,
/// a pass over a large revision);
/// it costs a walk of the heap, not something for a request path.
///
/// The binary's global allocator is mimalloc; where it is not (the unit tests of this crate),
/// mimalloc's heap is empty and this does nothing.
pub fn release_free_memory() {
    // SAFETY: mi_collect has no preconditions; it only frees what no allocation uses.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// How often [`spawn_purger`] hands back what the allocator has been holding free for longer
/// than its purge delay (1 s, mimalloc's default, which the agent keeps).
pub const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Every [`PURGE_EVERY`], for as long as the current tokio runtime runs, hands back to the
/// kernel the free ranges whose purge delay has passed, whichever thread freed them, and the
/// empty pages of the task's thread's heap (`mi_collect(false)`). Cheap when there is nothing to
/// hand back: a look at a clock and at that thread's (small) heap; no purge is forced, so memory
/// freed and taken again within the delay is never handed back and faulted in again.
///
/// Why: mimalloc purges a freed range only when some thread allocates a page after the range's
/// delay has passed. When a load ends, the proxy's workers go idle at the moment they free the
/// most (every closed connection's buffers and TLS state), so without this those pages stay
/// resident until the next load. With `benches/mem.sh`'s three-protocol load and 10 routes the
/// agent kept 13.8 MiB anonymous after the load (3.5 idle); with this task, 11.0
/// (docs/benchmarks-issue13.md, round 6). Purging with no delay at all
/// (`MIMALLOC_PURGE_DELAY=0`) got 9.6 but cost 9–18% more CPU per request, every freed page
/// being decommitted and faulted in again under load; this task costs one wake-up a second and
/// nothing measurable on the request path. It runs on the agent's runtime, not on the proxy's
/// workers: purging is program-wide, and a collect on every worker was tried and cost more
/// memory idle than it saved (the same document, "Agent memory": "Tried in stop 21").
pub fn spawn_purger() {
    tokio::spawn(async {
        let mut every = tokio::time::interval(PURGE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            // SAFETY: mi_collect has no preconditions; it only frees what no allocation uses.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flag is the kernel's to keep: read back with PR_GET_THP_DISABLE.
    #[test]
    fn transparent_huge_pages_are_off_after_the_call() {
        // A thread of its own would not help: the flag is the process's (its mm's), so the
        // test runner's other tests run without THP too, which changes no result.
        disable_transparent_huge_pages();
        // SAFETY: prctl with PR_GET_THP_DISABLE takes plain integers.
        let got = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(got, 1);
    }
}
