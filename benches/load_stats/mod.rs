//! What the two load runs (`exchange_load`, `exchange_http`) share: their settings from the
//! environment, and the machine's CPU times from `/proc/stat`.

/// Clock ticks per second in `/proc` CPU times (USER_HZ: 100 on x86_64 and arm64 Linux).
pub const USER_HZ: f64 = 100.0;

/// The environment variable `name` as a number, or `default` when unset or unreadable.
pub fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The machine's CPU seconds so far, summed over its CPUs, in `/proc/stat`'s order: user,
/// nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice.
pub fn machine_cpu_seconds() -> Vec<f64> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|ticks| ticks.parse::<f64>().unwrap_or(0.0) / USER_HZ)
        .collect()
}
