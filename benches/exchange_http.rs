//! The whole exchange as a client sees it: `POST /token` over loopback HTTP/1.1 to the
//! service's router, from wrk's 64 keep-alive connections (each sends its next request when
//! its answer arrives: a closed loop of 64 callers), on each store in turn, for a few rounds.
//! Every request carries a fresh CI token, so no answer may be an error (wrk counts those of
//! status 400 and above).
//!
//! Prints per store and round the rate, its share of the in-memory rate of the same round,
//! records per commit, and the CPU per exchange of this process (the service) and of the
//! rest of the machine (wrk, the kernel's softirqs, anything else running), from `/proc`.
//! wrk shares the two CPUs with the service and costs both stores alike, so it narrows the
//! gap between them a little; the service logs nothing here (no subscriber is installed).
//!
//! Needs wrk (`apt install wrk`). Run with `cargo bench --bench exchange_http`;
//! `TOKENMINT_HTTP_SECONDS` (3, under a minute), `TOKENMINT_HTTP_ROUNDS` (3) and
//! `TOKENMINT_HTTP_TOKENS` (80000, fresh CI tokens signed per store and round: more than a
//! round can use, and valid for 5 minutes from signing) change it.

#[allow(
    dead_code,
    reason = "the PostgreSQL and closed-loop helpers of the other benches"
)]
mod common;
#[path = "load_stats/mod.rs"]
mod load_stats;
#[allow(dead_code, reason = "the set-up's helpers for the other benches")]
#[path = "exchange_setup/mod.rs"]
mod setup;

use std::net::SocketAddr;
use std::path::Path;

use load_stats::{USER_HZ, machine_cpu_seconds, setting};
use setup::{Bench, StoreKind, ci_tokens, group_commit, set_up};

/// wrk's script: each request takes the next CI token of the file named by the first
/// argument, and an exhausted file shows as refused exchanges. The counter is per wrk thread
/// (each has its own Lua state), so wrk runs one thread: two would use each token twice.
const SCRIPT: &str = r#"
local tokens = {}
local taken = 0
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
end
function request()
  taken = taken + 1
  local token = tokens[taken] or "exhausted"
  return wrk.format("POST", "/token",
    {["Content-Type"] = "application/x-www-form-urlencoded"},
    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
      .. "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
      .. "&audience=internal-api&scope=deploy&subject_token=" .. token)
end
"#;

/// (this process's CPU seconds, the machine's busy CPU seconds) so far.
fn cpu_seconds() -> (f64, f64) {
    let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let after_name = own
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<f64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15, so 11 and 12 after the state.
    let own = (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / USER_HZ;
    let all = machine_cpu_seconds();
    // user, nice, system, irq and softirq: not idle (4th) or iowait (5th), nor steal and
    // guest (guest time is counted in user already).
    let busy: f64 = [0, 1, 2, 5, 6]
        .iter()
        .map(|index| all.get(*index).copied().unwrap_or(0.0))
        .sum();
    (own, busy)
}

/// What one wrk run printed that matters here.
struct WrkRun {
    requests: f64,
    seconds: f64,
    /// Answers of status 400 or more (a CI token used twice, or the token file exhausted).
    failed: u64,
    /// wrk's "Socket errors" line (connect, read, write, timeout), if it printed one.
    socket_errors: Option<String>,
}

fn run_wrk(addr: SocketAddr, script: &Path, tokens: &Path, seconds: u64) -> WrkRun {
    assert!(
        seconds < 60,
        "wrk prints a minute or more as 1.00m, which is not parsed here"
    );
    let output = std::process::Command::new("wrk")
        .args(["--threads", "1", "--connections", "64"])
        .arg(format!("--duration={seconds}s"))
        .arg("--script")
        .arg(script)
        .arg(format!("http://{addr}/"))
        .arg("--")
        .arg(tokens)
        .output()
        .expect("wrk runs (apt install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    // "  123456 requests in 3.00s, 45.6MB read"
    let summary = text
        .lines()
        .find(|line| line.contains(" requests in "))
        .unwrap_or_else(|| panic!("wrk printed no summary: {text}"));
    let mut words = summary.split_whitespace();
    let requests: f64 = words.next().and_then(|w| w.parse().ok()).expect("count");
    let seconds: f64 = words
        .nth(2)
        .and_then(|w| w.trim_end_matches(',').trim_end_matches('s').parse().ok())
        .expect("seconds");
    // wrk counts an answer here when its status is 400 or more, despite the wording.
    let failed = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0);
    let socket_errors = text
        .lines()
        .find(|line| line.trim().starts_with("Socket errors:"))
        .map(|line| line.trim().to_owned());
    WrkRun {
        requests,
        seconds,
        failed,
        socket_errors,
    }
}

/// Serves `bench`'s router on loopback while wrk drives it; prints and returns the rate.
fn measure_round(
    runtime: &tokio::runtime::Runtime,
    kind: StoreKind,
    bench: &Bench,
    dir: &Path,
    memory_rate: Option<f64>,
) -> f64 {
    let tokens = ci_tokens(bench, setting("TOKENMINT_HTTP_TOKENS", 80_000_usize));
    let token_file = dir.join("tokens.txt");
    std::fs::write(&token_file, tokens.join("\n")).expect("token file");
    let script = dir.join("exchange.lua");
    std::fs::write(&script, SCRIPT).expect("wrk script");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("listen on loopback");
    let addr = listener.local_addr().expect("address");
    let app = tokenmint::edges::http::router(bench.service.state.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    let server = runtime.spawn(async move { axum::serve(listener, app).await });
    let commits_before = group_commit(&bench.service.state.metrics.render());
    let cpu_before = cpu_seconds();
    let ran = run_wrk(
        addr,
        &script,
        &token_file,
        setting("TOKENMINT_HTTP_SECONDS", 3),
    );
    let cpu_after = cpu_seconds();
    let commits_after = group_commit(&bench.service.state.metrics.render());
    server.abort();
    assert_eq!(
        ran.failed, 0,
        "every exchange must succeed (raise TOKENMINT_HTTP_TOKENS if the round used them all)"
    );
    assert_eq!(ran.socket_errors, None, "wrk saw socket errors");
    let rate = ran.requests / ran.seconds;
    let mut line = format!("{:9} {rate:8.0}/s", kind.name());
    if let Some(memory) = memory_rate {
        line += &format!("  {:3.0} % of memory", 100.0 * rate / memory);
    }
    let (records, commits, committing) = (
        commits_after.0 - commits_before.0,
        commits_after.1 - commits_before.1,
        commits_after.2 - commits_before.2,
    );
    if commits > 0.0 {
        line += &format!(
            "  {:.1} records per commit, {:.2} ms each",
            records / commits,
            committing * 1e3 / commits
        );
    }
    let own = cpu_after.0 - cpu_before.0;
    let rest = (cpu_after.1 - cpu_before.1) - own;
    line += &format!(
        "\n          CPU per exchange: service {:.0} µs, rest of the machine (wrk, mostly) {:.0} µs",
        own * 1e6 / ran.requests,
        rest * 1e6 / ran.requests
    );
    println!("{line}");
    rate
}

fn main() {
    let runtime = setup::runtime();
    let benches: Vec<(StoreKind, Bench)> = [StoreKind::Memory, StoreKind::Sqlite]
        .into_iter()
        .map(|kind| (kind, set_up(&runtime, kind, None)))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    println!("POST /token over loopback HTTP/1.1, 64 connections");
    for round in 1..=setting("TOKENMINT_HTTP_ROUNDS", 3) {
        println!("round {round}");
        let mut memory_rate = None;
        for (kind, bench) in &benches {
            let rate = measure_round(&runtime, *kind, bench, dir.path(), memory_rate);
            if *kind == StoreKind::Memory {
                memory_rate = Some(rate);
            }
        }
    }
}
