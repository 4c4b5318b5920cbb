//! One token exchange: a GitHub-shaped CI token (RS256) verified, a policy chosen, an
//! ES256 local token signed, the replay record and the audit record written. This is the
//! hot path; it should cost little more than its cryptography and, on a durable store,
//! its share of an fsync.
//!
//! Run with `cargo bench --bench exchange`. Each exchange gets a fresh CI token (signed
//! in the untimed set-up) so that replay protection does its real work. Measured on the
//! in-memory store, SQLite (`synchronous = FULL`) and, when `TOKENMINT_BENCH_DATABASE_URL`
//! names a PostgreSQL database, PostgreSQL; one at a time and with 64 always in flight. Also
//! measured: parsing a request's scope, which runs before verification.

mod common;
#[path = "exchange_setup/mod.rs"]
mod setup;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

use setup::{StoreKind, exchange_all, group_commit, set_up, sign_requests};

fn exchange(c: &mut Criterion) {
    let runtime = setup::runtime();
    let mut group = c.benchmark_group("exchange");
    for (kind, url) in setup::stores(&runtime) {
        let bench = set_up(&runtime, kind, url.as_deref());
        for callers in [1usize, 64] {
            let before = group_commit(&bench.service.state.metrics.render());
            group.throughput(Throughput::Elements(callers as u64));
            // With 64 callers, criterion's default (100 samples) made each sample a burst
            // of ~200 exchanges after a pause for signing their CI tokens, measuring the
            // ramp from idle more than the service under load: 10 samples of thousands of
            // exchanges each measure the steady state (the in-memory rate nearly doubles).
            if callers > 1 {
                group.sample_size(10).sampling_mode(SamplingMode::Flat);
            } else {
                group.sample_size(100).sampling_mode(SamplingMode::Auto);
            }
            group.bench_function(format!("local_es256/{}/{callers}", kind.name()), |b| {
                b.to_async(&runtime).iter_custom(|iterations| {
                    // Tokens are signed before the clock starts, on two threads.
                    let requests = sign_requests(&bench, iterations as usize * callers);
                    exchange_all(&bench, requests, callers)
                });
            });
            if kind == StoreKind::Sqlite {
                let after = group_commit(&bench.service.state.metrics.render());
                let (records, commits) = (after.0 - before.0, after.1 - before.1);
                let committing = after.2 - before.2;
                eprintln!(
                    "exchange/local_es256/sqlite/{callers}: {records} records in {commits} commits, \
                     {:.1} per commit, {:.2} ms per commit",
                    records / commits.max(1.0),
                    committing * 1000.0 / commits.max(1.0)
                );
            }
        }
    }
    group.finish();
}

/// Scopes are parsed before the CI token is verified, so anyone can send 64 KiB of
/// them: this must stay linear (it took 0.8 s when it was quadratic).
fn parse_scope(c: &mut Criterion) {
    let scopes: Vec<String> = (0..15_000).map(|n| format!("{n:x}")).collect();
    let text = scopes.join(" ");
    c.bench_function("scope/parse_15000_distinct", |b| {
        b.iter(|| tokenmint::edges::http::token::parse_scope(std::hint::black_box(&text)))
    });
}

criterion_group!(benches, exchange, parse_scope);
criterion_main!(benches);
