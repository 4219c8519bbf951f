//! The `moed` binary: a thin edge over the `moed` library.

fn main() -> std::process::ExitCode {
    moed::cli::main()
}
