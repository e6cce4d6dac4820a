//! Round 22 of docs/benchmarks-issue13-part4.md (as root): eight dependent array look-ups by
//! key (`chain_keyed`) against the same eight as offsets into one-entry tables (`chain_flat`,
//! the shape global data would give), and the clocks a rate limit can read (`clock_*`), beside
//! `bench_pass`, with `BPF_PROG_TEST_RUN` (2,000,000 runs a round, 21 rounds interleaved).
//! Prints each round and the means.
use aya::programs::{TestRun, TestRunOptions, Xdp};
use tollgate_dataplane::testrun::BENCH_OBJECT;

const PROGRAMS: [&str; 7] = [
    "bench_pass",
    "chain_keyed",
    "chain_flat",
    "clock_precise",
    "clock_coarse",
    "clock_jiffies",
    "clock_tick",
];

fn main() {
    let mut obj = aya::Ebpf::load(BENCH_OBJECT).expect("load the benchmark object");
    for name in PROGRAMS {
        let p: &mut Xdp = obj.program_mut(name).expect(name).try_into().expect("xdp");
        p.load().unwrap_or_else(|e| panic!("loading {name}: {e:?}"));
    }
    let frame = vec![0u8; 64];
    let rounds = 21;
    let mut sums = [0u128; PROGRAMS.len()];
    for round in 0..rounds {
        let mut line = format!("round {round:2}:");
        for (i, name) in PROGRAMS.iter().enumerate() {
            let p: &Xdp = obj.program(name).expect(name).try_into().expect("xdp");
            let mut out = vec![0u8; 256];
            let mut o = TestRunOptions::new();
            o.data_in = Some(&frame);
            o.data_out = Some(&mut out);
            o.repeat = 2_000_000;
            let ns = p
                .test_run(o)
                .expect("BPF_PROG_TEST_RUN")
                .duration
                .as_nanos();
            sums[i] += ns;
            line += &format!(" {name} {ns} ns");
        }
        println!("{line}");
    }
    let mean = |i: usize| sums[i] as f64 / rounds as f64;
    let mut line = format!("mean: bench_pass {:.1} ns", mean(0));
    for (i, name) in PROGRAMS.iter().enumerate().skip(1) {
        line += &format!(", {name} {:.1} (+{:.1})", mean(i), mean(i) - mean(0));
    }
    println!("{line}");
}
