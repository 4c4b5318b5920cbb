//! The `tokenmint` binary: everything lives in the library; this only dispatches.

/// mimalloc instead of glibc's allocator: an exchange allocates and frees hundreds of
/// small objects, some on another thread than made them (a record built on a runtime
/// worker is freed by the SQLite writer); glibc's `malloc` and `free` took 12-17 % of
/// the runtime's CPU, with lock waits, and mimalloc makes whole exchanges about 10-20 %
/// faster on both stores (BENCHMARKS.md, 2026-12-07).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tokenmint::edges::cli::main()
}
