//! Reference programs for the benchmarks (never attached by the agent): `bench_pass` (the
//! `xdp_pass` baseline), `bench_drop` (drop everything, counting), and `bench_tx` (the traffic
//! generator: run with `BPF_PROG_TEST_RUN` in live-frames mode, it redirects every frame out
//! of the interface `TX_IFINDEX`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod progs {
    use aya_ebpf::{
        bindings::xdp_action,
        helpers::generated::bpf_redirect,
        macros::{map, xdp},
        maps::PerCpuArray,
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
