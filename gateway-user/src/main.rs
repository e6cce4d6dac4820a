fn main() -> anyhow::Result<()> {
    std::process::exit(gateway_user::cli::main()?)
}
