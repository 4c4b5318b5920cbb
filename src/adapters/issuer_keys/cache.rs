//! One issuer's cached signing keys: lookup by `kid`, periodic refresh, single-flight and
//! cooldown-bounded refetch on an unknown `kid`, and fail-closed staleness.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use super::KeystoreSettings;
use super::error::{FetchError, KeyError, kid_for_messages};
use super::keys::{VerificationKey, usable_keys};
use super::source::KeySource;
use crate::trust::verify::key::{KeyLookup, LookupError};

/// Shortest pause between two periodic refreshes, whatever `refresh_interval` says.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(10);

/// How one fetch of an issuer's key set ended; counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchOutcome {
    /// A usable key set was fetched and is now current.
    Ok,
    /// The fetch failed; the previous keys (if any) stay current.
    Error,
}

/// Told about every fetch of every issuer's key set.
pub trait FetchObserver: Send + Sync {
    /// One fetch for `issuer_name` ended with `outcome`.
    fn fetched(&self, issuer_name: &str, outcome: FetchOutcome);
}

/// A [`FetchObserver`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl FetchObserver for NoopObserver {
    fn fetched(&self, _issuer_name: &str, _outcome: FetchOutcome) {}
}

/// The state of one issuer's keys, for readiness details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysStatus {
    /// The issuer's name in the configuration.
    pub issuer_name: String,
    /// Where the keys come from (URL or file path).
    pub source: String,
    /// Number of usable keys now held.
    pub key_count: usize,
    /// Time since the last good fetch; `None` if there was none.
    pub last_good_fetch_age: Option<Duration>,
    /// Whether lookups fail closed: no good fetch within `max_stale`, or none at all.
    pub failing_closed: bool,
    /// Text of the last fetch error, cleared by a good fetch.
    pub last_error: Option<String>,
}

/// A good key set and when it was fetched.
struct Snapshot {
    keys: HashMap<String, Arc<VerificationKey>>,
    fetched_at: Instant,
}

/// Held while fetching: at most one fetch per issuer is in flight.
struct FetchState {
    /// When the last refetch triggered by a lookup started (for the cooldown).
    last_lookup_refetch: Option<Instant>,
}

enum Lookup {
    Found(Arc<VerificationKey>),
    Missing,
    Stale(Duration),
    NoKeys,
}

/// Which caller started a fetch, for logs.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Refresh,
    UnknownKid,
}

/// One issuer's cached keys. Build with [`IssuerKeys::new`], start
/// [`IssuerKeys::spawn_refresher`], then call [`IssuerKeys::key`] per token.
pub struct IssuerKeys {
    me: Weak<IssuerKeys>,
    issuer_name: String,
    source: Arc<dyn KeySource>,
    settings: KeystoreSettings,
    observer: Arc<dyn FetchObserver>,
    /// The last good key set. Read lock-free on every lookup.
    snapshot: ArcSwapOption<Snapshot>,
    /// Text of the last failed fetch, until a good one.
    last_error: ArcSwapOption<String>,
    /// Serialises fetches (single flight) and guards the cooldown stamp.
    fetch_state: tokio::sync::Mutex<FetchState>,
    /// Fetches completed, good or bad. Lets a caller who waited on `fetch_state` see that
    /// a fetch ran meanwhile, so it uses that result instead of starting another.
    completed_fetches: AtomicU64,
}

impl IssuerKeys {
    /// Keys of the issuer named `issuer_name`, none fetched yet.
    pub fn new(
        issuer_name: &str,
        source: Arc<dyn KeySource>,
        settings: KeystoreSettings,
        observer: Arc<dyn FetchObserver>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            issuer_name: issuer_name.to_owned(),
            source,
            settings,
            observer,
            snapshot: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            fetch_state: tokio::sync::Mutex::new(FetchState {
                last_lookup_refetch: None,
            }),
            completed_fetches: AtomicU64::new(0),
        })
    }

    /// The issuer's name in the configuration.
    pub fn issuer_name(&self) -> &str {
        &self.issuer_name
    }

    /// The verification key for `kid`.
    ///
    /// When `kid` is unknown (or the keys are stale or missing), one refetch may run: only
    /// one per issuer is ever in flight and concurrent callers wait for it, and none starts
    /// if the previous lookup-triggered refetch started less than `refetch_cooldown` ago
    /// (then the answer comes at once, without a network call). Keys whose last good fetch
    /// is `max_stale` old or older are never returned: [`KeyError::Stale`].
    pub async fn key(&self, kid: &str) -> Result<Arc<VerificationKey>, KeyError> {
        let fetches_seen = self.completed_fetches.load(Ordering::Acquire);
        if let Lookup::Found(key) = self.lookup(kid) {
            return Ok(key);
        }
        self.refetch_for_lookup(fetches_seen).await;
        match self.lookup(kid) {
            Lookup::Found(key) => Ok(key),
            Lookup::Missing => Err(KeyError::UnknownKid {
                issuer: self.issuer_name.clone(),
                kid: kid_for_messages(kid),
            }),
            Lookup::Stale(age) => Err(KeyError::Stale {
                issuer: self.issuer_name.clone(),
                age,
                max_stale: self.settings.max_stale,
            }),
            Lookup::NoKeys => Err(KeyError::Unavailable {
                issuer: self.issuer_name.clone(),
                last_error: self.last_error.load_full().map(|text| (*text).clone()),
            }),
        }
    }

    /// Fetches now. On success the fetched set replaces the current one (keys gone from
    /// the issuer are dropped); on failure the last good keys stay and the error is logged.
    pub async fn refresh(&self) -> Result<(), FetchError> {
        let _in_flight = self.fetch_state.lock().await;
        self.fetch_and_apply(Trigger::Refresh).await
    }

    /// Refreshes every `refresh_interval`, the first time at once. The task holds only a
    /// `Weak` reference and ends once this `IssuerKeys` is dropped.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        let interval = self.settings.refresh_interval.max(MIN_REFRESH_INTERVAL);
        tokio::spawn(async move {
            loop {
                {
                    let Some(keys) = me.upgrade() else { break };
                    // Errors are logged and recorded by `fetch_and_apply`.
                    let _ = keys.refresh().await;
                }
                tokio::time::sleep(interval).await;
            }
        })
    }

    /// Key count, age of the last good fetch and last error, for readiness details.
    pub fn status(&self) -> KeysStatus {
        let snapshot = self.snapshot.load();
        let age = snapshot.as_ref().map(|snap| snap.fetched_at.elapsed());
        KeysStatus {
            issuer_name: self.issuer_name.clone(),
            source: self.source.describe(),
            key_count: snapshot.as_ref().map_or(0, |snap| snap.keys.len()),
            last_good_fetch_age: age,
            failing_closed: age.is_none_or(|age| age >= self.settings.max_stale),
            last_error: self.last_error.load_full().map(|text| (*text).clone()),
        }
    }

    fn lookup(&self, kid: &str) -> Lookup {
        let snapshot = self.snapshot.load();
        let Some(snap) = snapshot.as_ref() else {
            return Lookup::NoKeys;
        };
        let age = snap.fetched_at.elapsed();
        if age >= self.settings.max_stale {
            return Lookup::Stale(age);
        }
        match snap.keys.get(kid) {
            Some(key) => Lookup::Found(Arc::clone(key)),
            None => Lookup::Missing,
        }
    }

    /// Runs (or joins) a refetch for a lookup that found no usable key. The fetch runs in
    /// its own task, so a caller that goes away (client disconnect) cannot cancel it under
    /// the feet of the callers waiting for the same fetch.
    async fn refetch_for_lookup(&self, fetches_seen: u64) {
        let Some(me) = self.me.upgrade() else { return };
        let task = tokio::spawn(async move {
            let mut state = me.fetch_state.lock().await;
            if me.completed_fetches.load(Ordering::Acquire) != fetches_seen {
                // A fetch ended while we waited for the lock: its result is the answer.
                return;
            }
            let now = Instant::now();
            if let Some(started) = state.last_lookup_refetch
                && now.duration_since(started) < me.settings.refetch_cooldown
            {
                tracing::debug!(
                    issuer = %me.issuer_name,
                    "unknown kid: refetch skipped, cooldown since the previous one"
                );
                return;
            }
            state.last_lookup_refetch = Some(now);
            // Errors are logged and recorded by `fetch_and_apply`.
            let _ = me.fetch_and_apply(Trigger::UnknownKid).await;
        });
        if let Err(err) = task.await {
            let error = FetchError::Aborted {
                issuer: self.issuer_name.clone(),
                message: err.to_string(),
            };
            tracing::error!(issuer = %self.issuer_name, error = %error, "key refetch failed");
        }
    }

    /// Fetches and, on success, swaps in the new keys. Call with `fetch_state` held.
    async fn fetch_and_apply(&self, trigger: Trigger) -> Result<(), FetchError> {
        let from = self.source.describe();
        let result = match self.source.fetch().await {
            Ok(set) => usable_keys(&set, &from),
            Err(err) => Err(err),
        };
        let outcome = match result {
            Ok(keys) => {
                self.log_key_changes(&keys, trigger, &from);
                self.snapshot.store(Some(Arc::new(Snapshot {
                    keys,
                    fetched_at: Instant::now(),
                })));
                self.last_error.store(None);
                self.observer.fetched(&self.issuer_name, FetchOutcome::Ok);
                Ok(())
            }
            Err(err) => {
                if self.snapshot.load().is_some() {
                    tracing::warn!(
                        issuer = %self.issuer_name,
                        source = %from,
                        ?trigger,
                        error = %err,
                        "fetching signing keys failed; keeping the last good keys"
                    );
                } else {
                    tracing::warn!(
                        issuer = %self.issuer_name,
                        source = %from,
                        ?trigger,
                        error = %err,
                        "{}",
                        no_keys_yet(&self.settings)
                    );
                }
                self.last_error.store(Some(Arc::new(err.to_string())));
                self.observer
                    .fetched(&self.issuer_name, FetchOutcome::Error);
                Err(err)
            }
        };
        self.completed_fetches.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    fn log_key_changes(
        &self,
        keys: &HashMap<String, Arc<VerificationKey>>,
        trigger: Trigger,
        from: &str,
    ) {
        let old = self.snapshot.load();
        let old_kids: BTreeSet<&str> = old
            .as_ref()
            .map(|snap| snap.keys.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let new_kids: BTreeSet<&str> = keys.keys().map(String::as_str).collect();
        if old_kids == new_kids {
            tracing::debug!(issuer = %self.issuer_name, source = %from, ?trigger, "signing keys unchanged");
            return;
        }
        let added: Vec<&str> = new_kids.difference(&old_kids).copied().collect();
        let removed: Vec<&str> = old_kids.difference(&new_kids).copied().collect();
        tracing::info!(
            issuer = %self.issuer_name,
            source = %from,
            ?trigger,
            ?added,
            ?removed,
            key_count = keys.len(),
            "signing keys changed"
        );
    }
}

/// The warning of a failed fetch while the issuer has never had keys: nothing is kept,
/// and what its tokens get meanwhile.
pub(super) fn no_keys_yet(settings: &KeystoreSettings) -> String {
    format!(
        "fetching signing keys failed and this issuer has none yet: exchanges of its tokens \
         answer 503 temporarily_unavailable until a fetch succeeds (the next in {}, or when \
         a token arrives, at most every {})",
        crate::config::format_duration(settings.refresh_interval.max(MIN_REFRESH_INTERVAL)),
        crate::config::format_duration(settings.refetch_cooldown)
    )
}

#[async_trait::async_trait]
impl KeyLookup for IssuerKeys {
    async fn key(&self, kid: &str) -> Result<Arc<VerificationKey>, LookupError> {
        IssuerKeys::key(self, kid).await.map_err(|err| match err {
            KeyError::UnknownKid { .. } => LookupError::UnknownKid,
            other => LookupError::Unavailable(other.to_string()),
        })
    }
}
