/// mimalloc instead of glibc's malloc: the proxy allocates and frees small buffers for every
/// request on every worker thread (one per CPU); glibc's arenas spent about 9% of the agent's CPU time under load
/// (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Before the heap grows (gateway_user::alloc explains why).
    gateway_user::alloc::disable_transparent_huge_pages();
    match gateway_user::cli::main() {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            // One line, with every cause (`{:#}`), and no backtrace: what went wrong and what
            // it concerned (a file, a flag, the pin directory), for an operator to act on.
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    }
}
