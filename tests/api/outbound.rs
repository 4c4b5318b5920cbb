//! Outbound calls through a proxy from the environment: named at start without its
//! credentials, and a remote issuer's address rules still in force through it.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::tokenmint;

/// `serve` with `env`, its JSON log lines until `enough` says so (at most 30 s), then
/// SIGTERM.
fn serve_logs(
    config: &std::path::Path,
    env: &[(&str, &str)],
    enough: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut command = tokenmint();
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start tokenmint");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut logs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !enough(&logs) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the expected log lines in 30 s");
        logs.push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    child.wait().expect("wait");
    logs.extend(
        rx.iter()
            .map(|line| serde_json::from_str(&line).unwrap_or(Value::String(line))),
    );
    logs
}

fn with_message<'a>(logs: &'a [Value], start: &str) -> Option<&'a Value> {
    logs.iter().find(|log| {
        log["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(start))
    })
}

/// An issuer at the cloud metadata address is refused even though HTTPS_PROXY is set,
/// where the proxy (not this host) would resolve and connect; the proxy in use is named
/// at start with its credentials hidden.
#[test]
fn through_a_proxy_the_start_up_log_names_it_and_a_metadata_issuer_is_still_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("policies")).expect("policies dir");
    let config = dir.path().join("tokenmint.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
public_url = "https://sts.example.com"
admin_listen = ""
[storage]
data_dir = "{dir}/data"
[policies]
dir = "{dir}/policies"
[issuers.metadata]
issuer = "https://169.254.169.254"
kind = "generic"
"#,
            dir = dir.path().display()
        ),
    )
    .expect("config");
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    proxy.set_nonblocking(true).expect("nonblocking");
    let port = proxy.local_addr().expect("addr").port();
    let proxy_url = format!("http://ci-bot:s3cret@127.0.0.1:{port}");
    let logs = serve_logs(
        &config,
        &[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "localhost")],
        |logs| {
            with_message(logs, "tokenmint is serving").is_some()
                && with_message(logs, "fetching signing keys failed").is_some()
        },
    );
    let start = with_message(logs.as_slice(), "outbound requests go through a proxy")
        .expect("the proxy line");
    assert_eq!(
        start["message"],
        "outbound requests go through a proxy; issuer key fetches through it still refuse \
         forbidden IP literals and names (loopback issuers are never proxied)"
    );
    assert_eq!(start["level"], "INFO");
    assert_eq!(
        start["https_proxy"],
        format!("http://***@127.0.0.1:{port} (HTTPS_PROXY)")
    );
    assert_eq!(start["http_proxy"], "none");
    assert_eq!(start["no_proxy"], "localhost");

    let refused = with_message(logs.as_slice(), "fetching signing keys failed").expect("the fetch");
    assert_eq!(
        refused["error"],
        "refusing to fetch https://169.254.169.254/.well-known/openid-configuration: refusing \
         to connect to 169.254.169.254 (cloud metadata address) for a remote issuer's keys"
    );
    assert_eq!(
        refused["message"],
        "fetching signing keys failed and this issuer has none yet: exchanges of its tokens \
         answer 503 temporarily_unavailable until a fetch succeeds (the next in 15m, or when a \
         token arrives, at most every 1m)"
    );
    assert!(proxy.accept().is_err(), "nothing reached the proxy");
    for log in &logs {
        assert!(!log.to_string().contains("s3cret"), "credentials in {log}");
        assert!(!log.to_string().contains("ci-bot"), "user name in {log}");
    }
}
