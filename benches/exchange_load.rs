//! Where an exchange's time goes under steady load: a closed loop of 64 callers runs
//! thousands of exchanges on each store in turn, for a few rounds, and prints per store and
//! round the rate, its share of the in-memory rate of the same round, records per commit,
//! and, from `/proc` (Linux), CPU per exchange by thread, the time threads were runnable
//! but waiting for a CPU, the CPUs' idle and iowait shares, and bytes written per exchange.
//!
//! Criterion (`benches/exchange.rs`) gives the figures to compare; this explains them.
//! Run with `cargo bench --bench exchange_load`; `TOKENMINT_LOAD_EXCHANGES` (40000),
//! `TOKENMINT_LOAD_ROUNDS` (3) and `TOKENMINT_LOAD_CALLERS` (64) change the load,
//! `TOKENMINT_BENCH_DATABASE_URL` adds PostgreSQL, and `TOKENMINT_LOAD_STORES` (say
//! `sqlite`, or `memory,sqlite`) runs only the stores named, so that a profiler attached
//! to the run (`perf record`) sees one store's exchanges alone.

mod common;
#[path = "load_stats/mod.rs"]
mod load_stats;
#[path = "exchange_setup/mod.rs"]
mod setup;

use std::collections::BTreeMap;
use std::time::Duration;

use load_stats::{machine_cpu_seconds, setting};
use setup::{Bench, StoreKind, exchange_all, group_commit, set_up, sign_requests};

/// Per thread name: (CPU seconds, seconds runnable but waiting for a CPU).
fn threads() -> BTreeMap<String, (f64, f64)> {
    let mut by_name = BTreeMap::<String, (f64, f64)>::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        // schedstat: nanoseconds on a CPU, nanoseconds waiting on a run queue, timeslices.
        let sched = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let mut fields = sched
            .split_whitespace()
            .map(|f| f.parse::<f64>().unwrap_or(0.0));
        let (running, waiting) = (fields.next().unwrap_or(0.0), fields.next().unwrap_or(0.0));
        let entry = by_name.entry(name.trim().to_owned()).or_default();
        entry.0 += running / 1e9;
        entry.1 += waiting / 1e9;
    }
    by_name
}

/// The machine's (idle, iowait) CPU seconds so far, summed over its CPUs.
fn machine_idle() -> (f64, f64) {
    let seconds = machine_cpu_seconds();
    let at = |index: usize| seconds.get(index).copied().unwrap_or(0.0);
    (at(3), at(4))
}

/// Bytes this process has caused to be written to storage so far.
fn written_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes:")?.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Snapshot {
    threads: BTreeMap<String, (f64, f64)>,
    idle: (f64, f64),
    written: f64,
    commits: (f64, f64, f64),
}

impl Snapshot {
    fn take(bench: &Bench) -> Snapshot {
        Snapshot {
            threads: threads(),
            idle: machine_idle(),
            written: written_bytes(),
            commits: group_commit(&bench.service.state.metrics.render()),
        }
    }
}

/// One round on one store: the rate and what it cost.
fn report(
    kind: StoreKind,
    exchanges: usize,
    took: Duration,
    memory_rate: Option<f64>,
    before: &Snapshot,
    after: &Snapshot,
) -> f64 {
    let wall = took.as_secs_f64();
    let rate = exchanges as f64 / wall;
    let mut line = format!("{:9} {rate:8.0}/s", kind.name());
    if let Some(memory) = memory_rate.filter(|_| kind != StoreKind::Memory) {
        line += &format!("  {:3.0} % of memory", 100.0 * rate / memory);
    }
    let (records, commits, committing) = (
        after.commits.0 - before.commits.0,
        after.commits.1 - before.commits.1,
        after.commits.2 - before.commits.2,
    );
    if commits > 0.0 {
        line += &format!(
            "  {:.1} records per commit, {:.2} ms each",
            records / commits,
            committing * 1e3 / commits
        );
    }
    let mut cpu = Vec::new();
    let mut waiting = Vec::new();
    let mut total = 0.0;
    for (name, (running, queued)) in &after.threads {
        let (was_running, was_queued) = before.threads.get(name).copied().unwrap_or_default();
        let (running, queued) = (running - was_running, queued - was_queued);
        total += running;
        if running > 0.01 * wall {
            cpu.push(format!("{name} {:.0}", running * 1e6 / exchanges as f64));
            waiting.push(format!("{name} {:.2}", queued / wall));
        }
    }
    if total > 0.0 {
        line += &format!(
            "\n          CPU per exchange {:.0} µs ({}); waiting for a CPU, share of wall: {}",
            total * 1e6 / exchanges as f64,
            cpu.join(", "),
            waiting.join(", ")
        );
        line += &format!(
            "\n          CPUs idle {:.2}, in iowait {:.2} (of the machine's CPUs); {:.1} KiB written per exchange",
            (after.idle.0 - before.idle.0) / wall,
            (after.idle.1 - before.idle.1) / wall,
            (after.written - before.written) / 1024.0 / exchanges as f64
        );
    }
    println!("{line}");
    rate
}

/// Whether `TOKENMINT_LOAD_STORES` names `kind` (every store is chosen when it is unset).
fn chosen(kind: StoreKind) -> bool {
    std::env::var("TOKENMINT_LOAD_STORES").map_or(true, |names| {
        names.split(',').any(|name| name.trim() == kind.name())
    })
}

/// Stops the run when `TOKENMINT_LOAD_STORES` names something that is not a store.
fn check_store_names() {
    let Ok(names) = std::env::var("TOKENMINT_LOAD_STORES") else {
        return;
    };
    let known = [StoreKind::Memory, StoreKind::Sqlite, StoreKind::Postgres].map(StoreKind::name);
    for name in names.split(',').map(str::trim) {
        assert!(
            known.contains(&name),
            "TOKENMINT_LOAD_STORES names {name:?}; the stores are {}",
            known.join(", ")
        );
    }
}

fn main() {
    let exchanges = setting("TOKENMINT_LOAD_EXCHANGES", 40_000);
    let rounds = setting("TOKENMINT_LOAD_ROUNDS", 3);
    let callers = setting("TOKENMINT_LOAD_CALLERS", 64);
    check_store_names();
    let runtime = setup::runtime();
    let benches: Vec<(StoreKind, Bench)> = setup::stores(&runtime)
        .into_iter()
        .filter(|(kind, _)| chosen(*kind))
        .map(|(kind, url)| (kind, set_up(&runtime, kind, url.as_deref())))
        .collect();
    assert!(
        !benches.is_empty(),
        "TOKENMINT_LOAD_STORES chose no store that can run here"
    );
    println!("{exchanges} exchanges per store and round, {callers} callers");
    for round in 1..=rounds {
        println!("round {round}");
        let mut memory_rate = None;
        for (kind, bench) in &benches {
            let requests = sign_requests(bench, exchanges);
            let before = Snapshot::take(bench);
            let took = runtime.block_on(exchange_all(bench, requests, callers));
            let after = Snapshot::take(bench);
            let rate = report(*kind, exchanges, took, memory_rate, &before, &after);
            if *kind == StoreKind::Memory {
                memory_rate = Some(rate);
            }
        }
    }
}
