fn main() -> std::process::ExitCode {
    oa_run::cli::main()
}
