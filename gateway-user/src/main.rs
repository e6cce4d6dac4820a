/// mimalloc instead of glibc's malloc: the proxy allocates and frees small buffers for every
/// request on every worker thread (one per CPU); glibc's arenas spent about 9% of the agent's CPU time under load
/// (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    std::process::exit(gateway_user::cli::main()?)
}
