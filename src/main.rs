//! The `tokenmint` binary: everything lives in the library; this picks the allocator and
//! dispatches.

/// mimalloc instead of glibc's allocator: an exchange allocates and frees hundreds of
/// small objects, some on another thread than made them (a record built on a runtime
/// worker is freed by the SQLite writer); glibc's `malloc` and `free` took 12-17 % of
/// the runtime's CPU, with lock waits. With mimalloc whole exchanges over HTTP run 7-15 %
/// faster on both stores, and on SQLite about 1.6 times as many records share a commit
/// (BENCHMARKS.md, 2026-12-07).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tokenmint::edges::cli::main()
}
