//! Reference programs for the benchmarks (never attached by the agent): `bench_pass` (the
//! `xdp_pass` baseline), `bench_drop` (drop everything, counting), and `bench_tx` (the traffic
//! generator: run with `BPF_PROG_TEST_RUN` in live-frames mode, it redirects every frame out
//! of the interface `TX_IFINDEX`); and the programs of round 22 of
//! docs/benchmarks-issue13-part4.md (`chain_*`, `clock_*`), run by
//! `gateway-user/dataplane/examples/lookup_chain.rs`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod progs {
    use aya_ebpf::{
        bindings::xdp_action,
        helpers::generated::bpf_redirect,
        macros::{map, xdp},
        maps::{Array, PerCpuArray},
        programs::XdpContext,
        Global,
    };

    /// Interface `bench_tx` sends out of (set at load time).
    #[unsafe(no_mangle)]
    static TX_IFINDEX: Global<u32> = Global::new(0);

    /// Packets seen by `bench_drop`, per CPU.
    #[map]
    static BENCH_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    #[xdp]
    pub fn bench_pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    #[xdp]
    pub fn bench_drop(_ctx: XdpContext) -> u32 {
        if let Some(c) = BENCH_COUNT.get_ptr_mut(0) {
            unsafe { *c += 1 };
        }
        xdp_action::XDP_DROP
    }

    #[xdp]
    pub fn bench_tx(_ctx: XdpContext) -> u32 {
        unsafe { bpf_redirect(TX_IFINDEX.load(), 0) as u32 }
    }

    // Round 22 of docs/benchmarks-issue13-part4.md: a chain of eight dependent look-ups, each
    // in a table of its own, written two ways. `chain_keyed`: arrays of one u32 an entry, each
    // look-up by key (inlined by the JIT, the key stored to the stack and loaded back).
    // `chain_flat`: arrays of one entry holding the whole table (what global data would give),
    // the entry's address taken with a constant key and the slot found by an offset. Run by
    // `gateway-user/dataplane/examples/lookup_chain.rs`; all tables zero, so every look-up
    // reads slot 0.
    const N: usize = 4096;

    /// One map per name, all of type `$ty` made by `$init`.
    macro_rules! tables {
        ($ty:ty = $init:expr; $($name:ident)*) => {
            $( #[map] static $name: $ty = $init; )*
        };
    }
    tables!(Array<u32> = Array::with_max_entries(N as u32, 0); A0 A1 A2 A3 A4 A5 A6 A7);
    tables!(Array<[u32; N]> = Array::with_max_entries(1, 0); F0 F1 F2 F3 F4 F5 F6 F7);

    #[inline(always)]
    fn seed(ctx: &XdpContext) -> Option<u32> {
        let d = ctx.data();
        if d + 16 > ctx.data_end() {
            return None;
        }
        Some(unsafe { core::ptr::read_volatile((d + 12) as *const u32) })
    }

    /// `k` looked up in each map in turn, by key.
    macro_rules! keyed {
        ($k:ident; $($m:ident)*) => {
            $( $k = *$m.get($k & (N as u32 - 1))?; )*
        };
    }
    /// `k` looked up in each map in turn, as an offset into its one entry.
    macro_rules! flat {
        ($k:ident; $($m:ident)*) => {
            $(
                let t = unsafe { &*$m.get_ptr(0)? };
                $k = unsafe { core::ptr::read_volatile(&t[($k as usize) & (N - 1)]) };
            )*
        };
    }

    #[xdp]
    pub fn chain_keyed(ctx: XdpContext) -> u32 {
        let chain = || {
            let mut k = seed(&ctx)?;
            keyed!(k; A0 A1 A2 A3 A4 A5 A6 A7);
            Some(k)
        };
        match chain() {
            Some(7) => xdp_action::XDP_DROP,
            _ => xdp_action::XDP_PASS,
        }
    }

    #[xdp]
    pub fn chain_flat(ctx: XdpContext) -> u32 {
        let chain = || {
            let mut k = seed(&ctx)?;
            flat!(k; F0 F1 F2 F3 F4 F5 F6 F7);
            Some(k)
        };
        match chain() {
            Some(7) => xdp_action::XDP_DROP,
            _ => xdp_action::XDP_PASS,
        }
    }

    // The clocks a rate limit can read (round 22): each program returns a bit of the clock so
    // that the read is not optimised away.
    #[xdp]
    pub fn clock_precise(_ctx: XdpContext) -> u32 {
        let t = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        xdp_action::XDP_PASS + (t == 7) as u32
    }

    #[xdp]
    pub fn clock_coarse(_ctx: XdpContext) -> u32 {
        let t = unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() };
        xdp_action::XDP_PASS + (t == 7) as u32
    }

    #[xdp]
    pub fn clock_jiffies(_ctx: XdpContext) -> u32 {
        let t = unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() };
        xdp_action::XDP_PASS + (t == 7) as u32
    }

    /// `clock_tick`'s per-CPU memory: the coarse clock as read in the jiffy `jiffies`.
    #[repr(C)]
    pub struct TickClock {
        jiffies: u64,
        coarse_ns: u64,
    }

    #[map]
    static TICK: PerCpuArray<TickClock> = PerCpuArray::with_max_entries(1, 0);

    /// The coarse clock read once a jiffy per CPU (`bpf_jiffies64` is inlined into one load).
    #[xdp]
    pub fn clock_tick(_ctx: XdpContext) -> u32 {
        let j = unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() };
        let t = match TICK.get_ptr_mut(0) {
            Some(c) => unsafe {
                if (*c).jiffies == j {
                    (*c).coarse_ns
                } else {
                    let t = aya_ebpf::helpers::bpf_ktime_get_coarse_ns();
                    (*c).coarse_ns = t;
                    (*c).jiffies = j;
                    t
                }
            },
            None => unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() },
        };
        xdp_action::XDP_PASS + (t == 7) as u32
    }

    #[cfg(not(test))]
    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
