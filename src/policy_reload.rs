//! Policy hot reload: on file change (within 2 s) and on SIGHUP, per file, keeping a file's
//! last good version for at most `policies.max_stale` while it fails to compile.
//!
//! Rules: a deleted file's policies stop matching at the next reload; a file that fails to
//! compile keeps its last good policies until it has failed for `max_stale`, then they are
//! dropped and readiness fails until the file compiles again; a reload whose files clash
//! (two policies with one name) keeps the whole previous set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::Watcher as _;

use crate::policy::{self, CompiledPolicy, PolicyContext, PolicySet};

/// After the first change event, wait this long for the burst to settle.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How often failing files are re-checked against `max_stale` without any event.
const STALE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

struct FileState {
    /// The last version that compiled; `None` once dropped.
    good: Option<Vec<CompiledPolicy>>,
    /// When the file started failing; `None` while it compiles.
    failing_since: Option<Instant>,
}

/// What a reload did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub policies: usize,
    /// Files failing to compile whose last good version is still in use.
    pub kept_stale: Vec<String>,
    /// Files whose policies were dropped because they failed for longer than `max_stale`
    /// (or never compiled).
    pub dropped: Vec<String>,
    /// The reload was refused as a whole (e.g. duplicate names); the previous set stays.
    pub refused: Option<String>,
}

/// Reloads the policy directory into the shared policy set.
pub struct PolicyReloader {
    dir: PathBuf,
    ctx: PolicyContext,
    max_stale: Duration,
    files: Mutex<BTreeMap<PathBuf, FileState>>,
    policies: Arc<ArcSwap<PolicySet>>,
    ready: Arc<AtomicBool>,
}

impl PolicyReloader {
    /// `initial` are the policies that `serve` loaded at start, file by file.
    pub fn new(
        dir: PathBuf,
        ctx: PolicyContext,
        max_stale: Duration,
        policies: Arc<ArcSwap<PolicySet>>,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let mut files = BTreeMap::new();
        let mut by_file: BTreeMap<String, Vec<CompiledPolicy>> = BTreeMap::new();
        for compiled in policies.load().iter() {
            by_file
                .entry(compiled.source_file().to_owned())
                .or_default()
                .push(CompiledPolicy::clone(compiled));
        }
        for (file, compiled) in by_file {
            files.insert(
                PathBuf::from(file),
                FileState {
                    good: Some(compiled),
                    failing_since: None,
                },
            );
        }
        Self {
            dir,
            ctx,
            max_stale,
            files: Mutex::new(files),
            policies,
            ready,
        }
    }

    /// Reads every policy file again and swaps in the new set.
    pub fn reload(&self) -> ReloadReport {
        let now = Instant::now();
        let mut report = ReloadReport::default();
        let Ok(mut files) = self.files.lock() else {
            report.refused = Some("reload state lock poisoned".to_owned());
            return report;
        };
        let (paths, list_errors) = policy::list_policy_files(&self.dir);
        if !list_errors.is_empty() {
            // An unreadable directory is not "every file deleted": keep what we have.
            let text = list_errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            tracing::error!(error = %text, "policy directory cannot be read; keeping the current policies");
            report.refused = Some(text);
            return report;
        }
        let mut next: BTreeMap<PathBuf, FileState> = BTreeMap::new();
        for path in paths {
            let label = path.display().to_string();
            match policy::load_file(&path, &self.ctx) {
                Ok(compiled) => {
                    next.insert(
                        path,
                        FileState {
                            good: Some(compiled),
                            failing_since: None,
                        },
                    );
                }
                Err(errors) => {
                    let previous = files.remove(&path);
                    let failing_since = previous
                        .as_ref()
                        .and_then(|p| p.failing_since)
                        .unwrap_or(now);
                    let good = previous
                        .and_then(|p| p.good)
                        .filter(|_| now.duration_since(failing_since) < self.max_stale);
                    let text = errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ");
                    if good.is_some() {
                        tracing::error!(file = %label, error = %text, "policy file fails to compile; keeping its last good version");
                        report.kept_stale.push(label);
                    } else {
                        tracing::error!(file = %label, error = %text, "policy file fails to compile; its policies are dropped");
                        report.dropped.push(label);
                    }
                    next.insert(
                        path,
                        FileState {
                            good,
                            failing_since: Some(failing_since),
                        },
                    );
                }
            }
        }
        let all: Vec<CompiledPolicy> = next
            .values()
            .filter_map(|state| state.good.as_ref())
            .flatten()
            .cloned()
            .collect();
        match PolicySet::new(all) {
            Ok(set) => {
                report.policies = set.len();
                let version = set.version().to_owned();
                self.policies.store(Arc::new(set));
                *files = next;
                self.ready
                    .store(report.dropped.is_empty(), Ordering::Release);
                tracing::info!(
                    policies = report.policies,
                    policy_set_version = %version,
                    stale_files = report.kept_stale.len(),
                    dropped_files = report.dropped.len(),
                    "policies reloaded"
                );
            }
            Err(errors) => {
                let text = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(error = %text, "policy reload refused; keeping the current policies");
                report.refused = Some(text);
            }
        }
        report
    }

    fn has_failing_files(&self) -> bool {
        self.files
            .lock()
            .map(|files| files.values().any(|f| f.failing_since.is_some()))
            .unwrap_or(false)
    }

    /// Watches the directory and SIGHUP until the task is aborted. The watch is armed
    /// before this returns, and one reload then catches changes made since start-up.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        // Kept by the task so the channel stays open (and SIGHUP works) even without a watcher.
        let keep_open = tx.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.send(());
            }
        })
        .and_then(|mut watcher| {
            watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
            Ok(watcher)
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::error!(dir = %self.dir.display(), error = %err, "cannot watch the policy directory; reload with SIGHUP");
                None
            }
        };
        tokio::spawn(async move {
            let _watcher = watcher;
            let _keep_open = keep_open;
            let reloader = self.clone();
            if let Err(err) = tokio::task::spawn_blocking(move || reloader.reload()).await {
                tracing::error!(error = %err, "policy reload task failed");
            }
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut stale_check = tokio::time::interval(STALE_CHECK_INTERVAL);
            loop {
                let hangup_signal = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    changed = rx.recv() => {
                        if changed.is_none() {
                            break;
                        }
                        tokio::time::sleep(DEBOUNCE).await;
                        while rx.try_recv().is_ok() {}
                    }
                    _ = hangup_signal => {
                        tracing::info!("SIGHUP: reloading policies");
                    }
                    _ = stale_check.tick() => {
                        if !self.has_failing_files() {
                            continue;
                        }
                    }
                }
                let reloader = self.clone();
                if let Err(err) = tokio::task::spawn_blocking(move || reloader.reload()).await {
                    tracing::error!(error = %err, "policy reload task failed");
                }
            }
        })
    }
}
