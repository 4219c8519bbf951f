//! The `moectl` binary: a thin edge over the `moectl` library.

fn main() -> std::process::ExitCode {
    moectl::main()
}
