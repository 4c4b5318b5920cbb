//! The `tokenmint` binary: everything lives in the library; this only dispatches.

fn main() -> std::process::ExitCode {
    tokenmint::edges::cli::main()
}
