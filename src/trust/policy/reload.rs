//! Policy hot reload: on file change (within 2 s) and on SIGHUP, per file, keeping a file's
//! last good version for at most `policies.max_stale` while it fails to compile, and the
//! incident switches (`deny.yaml`, and `enabled`/`[deny]` from the configuration file)
//! with them.
//!
//! Rules: a deleted file's policies stop matching at the next reload; a file that fails to
//! compile keeps its last good policies until it has failed for `max_stale`, then they are
//! dropped until the file compiles again (readiness does not depend on it). A policy name belongs to the
//! first file (in name order) that defines it; a later file reusing it fails the same way.
//! Access events (our own reads) never trigger a reload.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::Watcher as _;

use crate::trust::policy::switches::SwitchSource;
use crate::trust::policy::{self, CompiledPolicy, PolicyContext, PolicyError, PolicySet};

fn join_errors(errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The first policy of `compiled` whose name another file already owns, as an error text.
fn name_clash(compiled: &[CompiledPolicy], owners: &HashMap<String, String>) -> Option<String> {
    compiled.iter().find_map(|policy| {
        owners.get(policy.name()).map(|owner| {
            format!(
                "{}:{}: name: duplicate policy name \"{}\": also defined in {owner}",
                policy.source_file(),
                policy.source_line(),
                policy.name()
            )
        })
    })
}

/// After the first change event, wait this long for the burst to settle.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How often failing files are re-checked against `max_stale` without any event.
const STALE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

struct FileState {
    /// The last version that compiled; `None` once dropped.
    good: Option<Vec<CompiledPolicy>>,
    /// When the file started failing; `None` while it compiles.
    failing_since: Option<Instant>,
    /// Whether any version of the file ever compiled in this process.
    ever_loaded: bool,
    /// What the failing text says, and since when by the wall clock.
    failure: Option<Failure>,
}

#[derive(Debug, Clone)]
struct Failure {
    since: time::OffsetDateTime,
    line: usize,
    error: String,
}

/// One policy file as the admin readiness detail shows it.
#[derive(Debug, Clone)]
pub struct PolicyFileDetail {
    pub file: String,
    pub state: PolicyFileState,
    /// The line of the first error, while the file fails.
    pub line: Option<usize>,
    /// Every error of the failing text.
    pub error: Option<String>,
    /// When the file started failing.
    pub failing_since: Option<time::OffsetDateTime>,
}

impl FileState {
    fn state(&self) -> PolicyFileState {
        match (&self.good, self.failing_since, self.ever_loaded) {
            (Some(_), None, _) => PolicyFileState::Ok,
            (Some(_), Some(_), _) => PolicyFileState::Stale,
            (None, _, true) => PolicyFileState::Dropped,
            (None, _, false) => PolicyFileState::NeverLoaded,
        }
    }
}

/// Where one policy file stands after a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyFileState {
    /// Its current text compiled; its policies are served.
    Ok,
    /// Its current text fails; its last good version is served until `max_stale`.
    Stale,
    /// It failed for longer than `max_stale` (or its name clashes): none of its policies are served.
    Dropped,
    /// It never compiled since the service started: none of its policies are served.
    NeverLoaded,
}

impl PolicyFileState {
    /// Every state, in the order metrics list them.
    pub const ALL: [PolicyFileState; 4] = [
        PolicyFileState::Ok,
        PolicyFileState::Stale,
        PolicyFileState::Dropped,
        PolicyFileState::NeverLoaded,
    ];

    /// The `state` label of `tokenmint_policy_files`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyFileState::Ok => "ok",
            PolicyFileState::Stale => "stale",
            PolicyFileState::Dropped => "dropped",
            PolicyFileState::NeverLoaded => "never_loaded",
        }
    }
}

/// Told how many policy files are in each state, after start and after every reload.
pub trait PolicyFilesObserver: Send + Sync {
    fn policy_files(&self, counts: &[(PolicyFileState, usize); 4]);
}

fn count_states<'a>(states: impl Iterator<Item = &'a FileState>) -> [(PolicyFileState, usize); 4] {
    let mut counts = PolicyFileState::ALL.map(|state| (state, 0));
    for file in states {
        // `ALL` lists the variants in declaration order, so a variant's index is its slot.
        counts[file.state() as usize].1 += 1;
    }
    counts
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
    /// The reload was refused as a whole (the directory could not be listed); the previous set stays.
    pub refused: Option<String>,
    /// A switch source (the configuration, `deny.yaml`) that did not load and kept its
    /// previous value.
    pub switch_problems: Vec<String>,
}

/// Reloads the policy directory into the shared policy set.
pub struct PolicyReloader {
    dir: PathBuf,
    ctx: PolicyContext,
    max_stale: Duration,
    files: Mutex<BTreeMap<PathBuf, FileState>>,
    policies: Arc<ArcSwap<PolicySet>>,
    observer: Arc<dyn PolicyFilesObserver>,
    /// The incident switches, reloaded with the policies.
    switches: SwitchSource,
    /// Reloads done, for metrics and tests.
    reloads: AtomicU64,
}

impl PolicyReloader {
    /// `initial` are the policies that `serve` loaded at start, file by file.
    pub fn new(
        dir: PathBuf,
        ctx: PolicyContext,
        max_stale: Duration,
        policies: Arc<ArcSwap<PolicySet>>,
        observer: Arc<dyn PolicyFilesObserver>,
        switches: SwitchSource,
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
                    ever_loaded: true,
                    failure: None,
                },
            );
        }
        observer.policy_files(&count_states(files.values()));
        Self {
            dir,
            ctx,
            max_stale,
            files: Mutex::new(files),
            policies,
            observer,
            switches,
            reloads: AtomicU64::new(0),
        }
    }

    /// Reads every policy file again and swaps in the new set.
    pub fn reload(&self) -> ReloadReport {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut report = ReloadReport::default();
        let Ok(mut files) = self.files.lock() else {
            report.refused = Some("reload state lock poisoned".to_owned());
            return report;
        };
        let (paths, list_errors) = policy::list_policy_files(&self.dir);
        if !list_errors.is_empty() {
            // An unreadable directory is not "every file deleted": keep what we have.
            let text = join_errors(&list_errors);
            tracing::error!(error = %text, "policy directory cannot be read; keeping the current policies");
            report.refused = Some(text);
            return report;
        }
        // Files in name order; a policy name belongs to the first file that defines it, and a
        // later file that reuses it fails like a file that does not compile.
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut next: BTreeMap<PathBuf, FileState> = BTreeMap::new();
        let mut all: Vec<CompiledPolicy> = Vec::new();
        for path in paths {
            let label = path.display().to_string();
            let loaded = policy::load_file(&path, &self.ctx)
                .map_err(|errors| (errors.first().map_or(0, |e| e.line), join_errors(&errors)))
                .and_then(|compiled| match name_clash(&compiled, &owners) {
                    Some(clash) => Err((compiled.first().map_or(0, |p| p.source_line()), clash)),
                    None => Ok(compiled),
                });
            let state = match loaded {
                Ok(compiled) => FileState {
                    good: Some(compiled),
                    failing_since: None,
                    ever_loaded: true,
                    failure: None,
                },
                Err((line, text)) => {
                    let previous = files.get(&path);
                    let failing_since = previous.and_then(|p| p.failing_since).unwrap_or(now);
                    let good = previous
                        .and_then(|p| p.good.clone())
                        .filter(|_| now.duration_since(failing_since) < self.max_stale)
                        .filter(|good| name_clash(good, &owners).is_none());
                    if good.is_some() {
                        tracing::error!(file = %label, error = %text, "policy file fails to load; keeping its last good version");
                        report.kept_stale.push(label.clone());
                    } else {
                        tracing::error!(file = %label, error = %text, "policy file fails to load; its policies are dropped");
                        report.dropped.push(label.clone());
                    }
                    let since = previous
                        .and_then(|p| p.failure.as_ref())
                        .map_or_else(time::OffsetDateTime::now_utc, |failure| failure.since);
                    FileState {
                        good,
                        failing_since: Some(failing_since),
                        ever_loaded: previous.is_some_and(|p| p.ever_loaded),
                        failure: Some(Failure {
                            since,
                            line,
                            error: text,
                        }),
                    }
                }
            };
            for policy in state.good.iter().flatten() {
                owners.insert(policy.name().to_owned(), label.clone());
                all.push(policy.clone());
            }
            next.insert(path, state);
        }
        let in_force = self.policies.load_full();
        let (switches, switch_problems) = self.switches.reload(&self.dir, in_force.switches());
        for problem in &switch_problems {
            tracing::error!(error = %problem, "incident switches not reloaded");
        }
        report.switch_problems = switch_problems;
        match PolicySet::new(all) {
            Ok(set) => {
                let (denied_values, disabled_targets) = switches.counts();
                let set = set.with_switches(switches);
                report.policies = set.len();
                let version = set.version().to_owned();
                self.policies.store(Arc::new(set));
                *files = next;
                self.observer.policy_files(&count_states(files.values()));
                tracing::info!(
                    policies = report.policies,
                    policy_set_version = %version,
                    stale_files = report.kept_stale.len(),
                    dropped_files = report.dropped.len(),
                    denied_values,
                    disabled_targets,
                    "policies reloaded"
                );
            }
            Err(errors) => {
                // Unreachable by construction (clashes were resolved per file); keep the
                // current set rather than serve a half-built one.
                let text = join_errors(&errors);
                tracing::error!(error = %text, "policy reload refused; keeping the current policies");
                report.refused = Some(text);
            }
        }
        report
    }

    /// Every policy file with its state, and for a failing one its error and since when.
    pub fn file_details(&self) -> Vec<PolicyFileDetail> {
        let Ok(files) = self.files.lock() else {
            return Vec::new();
        };
        files
            .iter()
            .map(|(path, state)| PolicyFileDetail {
                file: path.display().to_string(),
                state: state.state(),
                line: state.failure.as_ref().map(|failure| failure.line),
                error: state.failure.as_ref().map(|failure| failure.error.clone()),
                failing_since: state.failure.as_ref().map(|failure| failure.since),
            })
            .collect()
    }

    /// How many reloads ran (start-up's initial load not included).
    pub fn reload_count(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
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
            // Reads (ours included) are access events; only changes matter.
            if let Ok(event) = event
                && !matches!(event.kind, notify::EventKind::Access(_))
            {
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
        // Installed before the task runs, so a SIGHUP right after start-up reloads rather
        // than ending the process.
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::error!(error = %err, "cannot install the SIGHUP handler; policies reload on file changes only");
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
