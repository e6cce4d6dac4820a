//! The agent's allocator as the agent steers it (`gateway_user::alloc`), in a test binary whose
//! global allocator is the agent's own (mimalloc, as in `src/main.rs`): the unit tests of the
//! library run on the system allocator, where these calls do nothing.

use std::{
    io::Read,
    sync::mpsc,
    time::{Duration, Instant},
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MIB: u64 = 1024 * 1024;

/// The process's anonymous resident memory (`RssAnon` of /proc/self/status), in bytes. Reads
/// into a buffer on the stack and parses in place: an allocation here could be the one that
/// makes mimalloc purge, which the control below must not cause itself.
fn rss_anon() -> u64 {
    let mut buf = [0u8; 8192];
    let mut file = std::fs::File::open("/proc/self/status").expect("open /proc/self/status");
    let mut len = 0;
    loop {
        let n = file.read(&mut buf[len..]).expect("read /proc/self/status");
        if n == 0 || len + n == buf.len() {
            len += n;
            break;
        }
        len += n;
    }
    let text = std::str::from_utf8(&buf[..len]).expect("status is text");
    let line = text
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon in /proc/self/status");
    let kib: u64 = line
        .trim_start_matches("RssAnon:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("RssAnon is a number of kB");
    kib * 1024
}

/// What a proxy worker does at the end of a load: it frees every connection's buffers at once
/// and then has nothing to do. mimalloc purges a freed range only when a thread allocates again
/// after its delay, so that memory stays resident however long the agent stays idle, unless the
/// agent's purger hands it back.
#[test]
fn memory_freed_by_a_thread_that_then_idles_goes_back_to_the_kernel_within_two_seconds() {
    // As the agent's `main` does: on a host whose transparent huge pages are `always`, a
    // purged 64 KiB range inside a huge page would not leave the resident set.
    gateway_user::alloc::disable_transparent_huge_pages();
    const FREED: u64 = 48 * MIB;
    let (freed_tx, freed_rx) = mpsc::channel::<()>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        // Connection-sized pieces: 16 KiB (a TLS record buffer) and 64 KiB (a read buffer
        // grown under load), every page written.
        let pieces: Vec<Vec<u8>> = (0..FREED / (80 * 1024))
            .flat_map(|_| [vec![1u8; 16 * 1024], vec![2u8; 64 * 1024]])
            .collect();
        assert!(pieces.iter().all(|p| p[p.len() - 1] != 0));
        drop(pieces);
        freed_tx.send(()).expect("the test waits");
        // Idle, alive: like a worker between loads.
        let _ = stop_rx.recv();
    });
    freed_rx.recv().expect("the worker frees its memory");
    let after_free = rss_anon();

    // The control: past the purge delay, with nothing allocating, the memory is still there.
    // If this fails, mimalloc has learnt to purge on its own, and the purger (and its comment
    // in src/alloc.rs) should be looked at again.
    std::thread::sleep(gateway_user::alloc::PURGE_EVERY + Duration::from_millis(500));
    let idle = rss_anon();
    assert!(
        idle + FREED / 2 > after_free,
        "without the purger, {} MiB of {} freed went back by themselves",
        (after_free - idle) / MIB,
        FREED / MIB
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let returned = runtime.block_on(async {
        gateway_user::alloc::spawn_purger();
        let start = Instant::now();
        loop {
            let now = rss_anon();
            if now + FREED * 3 / 4 <= idle || start.elapsed() > Duration::from_secs(2) {
                return idle.saturating_sub(now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    stop_tx.send(()).expect("the worker waits");
    worker.join().expect("the worker ends");
    assert!(
        returned >= FREED * 3 / 4,
        "the purger handed back {} MiB of the {} MiB an idle thread freed",
        returned / MIB,
        FREED / MIB
    );
}
