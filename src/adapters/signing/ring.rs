//! The key ring: per algorithm a *current* key that signs, a *next* key published ahead
//! of its turn so relying parties have cached it before it signs, and a *previous* key
//! published until the last token it signed has expired; and `keys rotate`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{KeyError, SigningAlgorithm, SigningKey};
use super::{ring_files, ring_manifest};

/// The part a key plays in the ring; `role` in `keys.json`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Signs every new token.
    Current,
    /// Published, signs nothing yet; becomes current at the next rotation.
    Next,
    /// Signed tokens until the last rotation; published until `retire_at`.
    Previous,
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Current => "current",
            Self::Next => "next",
            Self::Previous => "previous",
        })
    }
}

/// A key and when it was made and first published.
#[derive(Clone, Debug)]
pub(super) struct RingKey {
    pub(super) key: Arc<SigningKey>,
    pub(super) created_at: OffsetDateTime,
    pub(super) published_at: OffsetDateTime,
}

impl RingKey {
    fn generate(alg: SigningAlgorithm, now: OffsetDateTime) -> Result<Self, KeyError> {
        Ok(Self {
            key: Arc::new(SigningKey::generate(alg)?),
            created_at: now,
            published_at: now,
        })
    }
}

/// A former current key and the time after which no token it signed is still valid.
#[derive(Clone, Debug)]
pub(super) struct PreviousKey {
    pub(super) key: RingKey,
    pub(super) retire_at: OffsetDateTime,
}

/// The keys of one algorithm. Current and next always exist.
#[derive(Clone, Debug)]
pub(super) struct AlgorithmKeys {
    pub(super) current: RingKey,
    pub(super) next: RingKey,
    pub(super) previous: Option<PreviousKey>,
}

impl AlgorithmKeys {
    fn generate(alg: SigningAlgorithm, now: OffsetDateTime) -> Result<Self, KeyError> {
        Ok(Self {
            current: RingKey::generate(alg, now)?,
            next: RingKey::generate(alg, now)?,
            previous: None,
        })
    }
}

/// An immutable snapshot of every signing key. The service holds it in an `ArcSwap` and
/// swaps in a reloaded one when [`KeyRing::generation`] changes.
#[derive(Debug)]
pub struct KeyRing {
    generation: u64,
    algorithms: BTreeMap<SigningAlgorithm, AlgorithmKeys>,
    warnings: Vec<String>,
}

impl KeyRing {
    /// Dev mode and tests: fresh current + next per algorithm, nothing on disk
    /// (generation 0).
    pub fn in_memory(
        algorithms: &[SigningAlgorithm],
        now: OffsetDateTime,
    ) -> Result<KeyRing, KeyError> {
        let mut ring = Self::from_parts(0, BTreeMap::new(), Vec::new());
        for &alg in algorithms {
            if let Entry::Vacant(slot) = ring.algorithms.entry(alg) {
                slot.insert(AlgorithmKeys::generate(alg, now)?);
            }
        }
        Ok(ring)
    }

    /// Loads `dir` (creating it with mode 0700 if missing); generates current + next for
    /// every algorithm in `algorithms` that has no keys yet and saves them. Algorithms on
    /// disk but not in `algorithms` are kept.
    pub fn load_or_create(
        dir: &Path,
        algorithms: &[SigningAlgorithm],
        now: OffsetDateTime,
    ) -> Result<KeyRing, KeyError> {
        ring_files::create_dir(dir)?;
        let loaded = if ring_files::manifest_exists(dir)? {
            ring_files::read(dir)?
        } else {
            Self::from_parts(0, BTreeMap::new(), Vec::new())
        };
        let Some(mut ring) = loaded.with_missing(algorithms, now)? else {
            return Ok(loaded);
        };
        let save_warnings = ring_files::write(dir, &ring, loaded.generation)?;
        ring.warnings.extend(save_warnings);
        Ok(ring)
    }

    /// Loads `dir` and never writes: how the running service picks up a rotation done
    /// by another process.
    pub fn load(dir: &Path) -> Result<KeyRing, KeyError> {
        ring_files::read(dir)
    }

    /// The generation saved in `dir`, read from the manifest alone (cheap: no key is parsed),
    /// so a running service can poll for rotations.
    pub fn stored_generation(dir: &Path) -> Result<u64, KeyError> {
        ring_files::read_generation(dir)
    }

    /// Increases with every saved change, so a reload can tell that something changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The key that signs new tokens for `alg`.
    pub fn current(&self, alg: SigningAlgorithm) -> Option<&Arc<SigningKey>> {
        self.algorithms.get(&alg).map(|keys| &keys.current.key)
    }

    /// The key of `alg` in `role`, whether or not a previous key has retired yet.
    pub fn key(&self, alg: SigningAlgorithm, role: KeyRole) -> Option<&Arc<SigningKey>> {
        let keys = self.algorithms.get(&alg)?;
        match role {
            KeyRole::Current => Some(&keys.current.key),
            KeyRole::Next => Some(&keys.next.key),
            KeyRole::Previous => keys.previous.as_ref().map(|previous| &previous.key.key),
        }
    }

    /// The algorithms that have keys.
    pub fn algorithms(&self) -> impl Iterator<Item = SigningAlgorithm> + '_ {
        self.algorithms.keys().copied()
    }

    /// Problems found while loading or saving that do not stop the service (key files
    /// readable by group or others, a retired key file that could not be removed).
    /// The caller logs them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The JWKS document `{"keys":[...]}`: for every algorithm, current, next, and
    /// previous until its `retire_at` passes.
    pub fn jwks(&self, now: OffsetDateTime) -> Value {
        let mut keys = Vec::new();
        for alg_keys in self.algorithms.values() {
            keys.push(alg_keys.current.key.public_jwk().clone());
            keys.push(alg_keys.next.key.public_jwk().clone());
            if let Some(previous) = &alg_keys.previous
                && previous.retire_at > now
            {
                keys.push(previous.key.key.public_jwk().clone());
            }
        }
        json!({ "keys": keys })
    }

    /// When [`KeyRing::jwks`] will next say something else without a rotation: when a
    /// published previous key retires. `None` if never.
    pub fn next_jwks_change(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.algorithms
            .values()
            .filter_map(|keys| keys.previous.as_ref())
            .map(|previous| previous.retire_at)
            .filter(|retire_at| *retire_at > now)
            .min()
    }

    pub(super) fn from_parts(
        generation: u64,
        algorithms: BTreeMap<SigningAlgorithm, AlgorithmKeys>,
        warnings: Vec<String>,
    ) -> Self {
        Self {
            generation,
            algorithms,
            warnings,
        }
    }

    pub(super) fn algorithm_keys(&self) -> &BTreeMap<SigningAlgorithm, AlgorithmKeys> {
        &self.algorithms
    }

    /// The same ring with `warnings` as its load warnings.
    pub(super) fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    /// The ring to save when some of `algorithms` have no keys yet: current and next are
    /// generated for each of them, retired previous keys dropped and the generation
    /// bumped. `None` when every algorithm has keys. Algorithms not in `algorithms` are
    /// kept.
    pub(super) fn with_missing(
        &self,
        algorithms: &[SigningAlgorithm],
        now: OffsetDateTime,
    ) -> Result<Option<KeyRing>, KeyError> {
        let missing: Vec<SigningAlgorithm> = algorithms
            .iter()
            .copied()
            .filter(|alg| !self.algorithms.contains_key(alg))
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        let mut ring = self.pruned(now);
        for alg in missing {
            if let Entry::Vacant(slot) = ring.algorithms.entry(alg) {
                slot.insert(AlgorithmKeys::generate(alg, now)?);
            }
        }
        ring.generation = self.generation + 1;
        Ok(Some(ring))
    }

    /// A copy without the previous keys whose `retire_at` has passed.
    fn pruned(&self, now: OffsetDateTime) -> Self {
        let mut algorithms = self.algorithms.clone();
        for keys in algorithms.values_mut() {
            if keys
                .previous
                .as_ref()
                .is_some_and(|previous| previous.retire_at <= now)
            {
                keys.previous = None;
            }
        }
        Self::from_parts(self.generation, algorithms, self.warnings.clone())
    }

    /// The ring after one rotation of every algorithm (see [`rotate`]), wherever it is
    /// kept; all-or-nothing. The caller saves it only where the ring still has this
    /// ring's generation.
    pub(super) fn rotated(
        &self,
        min_publish: Duration,
        force: bool,
        max_token_ttl: &dyn Fn(SigningAlgorithm) -> Duration,
        now: OffsetDateTime,
    ) -> Result<(KeyRing, RotationReport), KeyError> {
        if !force {
            // Of everything that blocks, report what takes longest to clear, so that
            // "wait X" is true for the whole rotation.
            let blocker = self
                .algorithms
                .iter()
                .flat_map(|(&alg, keys)| blockers(alg, keys, min_publish, now))
                .max_by_key(|(wait, _)| *wait);
            if let Some((_, err)) = blocker {
                return Err(err);
            }
        }
        let mut algorithms = BTreeMap::new();
        let mut report = Vec::new();
        for (&alg, keys) in &self.algorithms {
            let ttl = max_token_ttl(alg);
            let retire_at = time::Duration::try_from(ttl)
                .ok()
                .and_then(|ttl| now.checked_add(ttl))
                .ok_or_else(|| {
                    KeyError::TimeOutOfRange(format!(
                        "now plus the longest {alg} token lifetime ({})",
                        super::error::human_duration(ttl)
                    ))
                })?;
            let retired = keys.previous.as_ref().map(|previous| RetiredKey {
                kid: previous.key.key.kid().to_owned(),
                before_expiry: previous.retire_at > now,
            });
            let rotated = AlgorithmKeys {
                current: keys.next.clone(),
                next: RingKey::generate(alg, now)?,
                previous: Some(PreviousKey {
                    key: keys.current.clone(),
                    retire_at,
                }),
            };
            report.push(AlgorithmRotation {
                alg,
                old_current: keys.current.key.kid().to_owned(),
                new_current: rotated.current.key.kid().to_owned(),
                new_next: rotated.next.key.kid().to_owned(),
                previous_retire_at: ring_manifest::rfc3339(retire_at)?,
                retired,
            });
            algorithms.insert(alg, rotated);
        }
        let ring = Self::from_parts(self.generation + 1, algorithms, Vec::new());
        let report = RotationReport {
            generation: ring.generation,
            algorithms: report,
            warnings: Vec::new(),
        };
        Ok((ring, report))
    }
}

/// What stops `alg` from rotating now, each with how long until it no longer does.
fn blockers(
    alg: SigningAlgorithm,
    keys: &AlgorithmKeys,
    min_publish: Duration,
    now: OffsetDateTime,
) -> Vec<(Duration, KeyError)> {
    let mut found = Vec::new();
    let published_for = non_negative(now - keys.next.published_at);
    if published_for < min_publish {
        let wait = ceil_to_second(min_publish - published_for);
        found.push((
            wait,
            KeyError::NextNotPublishedLongEnough {
                alg,
                kid: keys.next.key.kid().to_owned(),
                published_for: Duration::from_secs(published_for.as_secs()),
                min_publish,
                wait,
            },
        ));
    }
    if let Some(previous) = &keys.previous
        && previous.retire_at > now
    {
        let wait = ceil_to_second(non_negative(previous.retire_at - now));
        let retire_at = ring_manifest::rfc3339(previous.retire_at)
            .unwrap_or_else(|_| previous.retire_at.to_string());
        found.push((
            wait,
            KeyError::PreviousNotRetired {
                alg,
                kid: previous.key.key.kid().to_owned(),
                retire_at,
                wait,
            },
        ));
    }
    found
}

fn non_negative(duration: time::Duration) -> Duration {
    Duration::try_from(duration).unwrap_or(Duration::ZERO)
}

fn ceil_to_second(duration: Duration) -> Duration {
    let whole = Duration::from_secs(duration.as_secs());
    if whole == duration {
        whole
    } else {
        whole + Duration::from_secs(1)
    }
}

/// `tokenmint keys rotate` on the ring in `dir` (the rules are [`KeyRing::rotated`], which
/// [`DatabaseRing::rotate`](super::DatabaseRing::rotate) shares), for every algorithm:
///
/// - promotes *next* to *current*, only if *next* has been published for at least
///   `min_publish` (so relying parties have it cached before it signs);
/// - demotes *current* to *previous* with `retire_at = now + max_token_ttl(alg)`, the
///   longest lifetime of a token it may have signed. The running service keeps signing
///   with it until it reloads the ring, so `max_token_ttl` should include that reload
///   interval and the relying parties' clock leeway;
/// - stages a new *next*, saves atomically and bumps the generation.
///
/// A *previous* key that has not retired yet blocks rotation, since dropping it would
/// break the tokens it signed. `force` overrides both checks. Nothing is written when
/// any algorithm is blocked.
pub fn rotate(
    dir: &Path,
    min_publish: Duration,
    force: bool,
    max_token_ttl: &dyn Fn(SigningAlgorithm) -> Duration,
    now: OffsetDateTime,
) -> Result<RotationReport, KeyError> {
    let ring = ring_files::read(dir)?;
    if ring.algorithms.is_empty() {
        return Err(KeyError::Corrupt {
            path: dir.join(ring_files::MANIFEST),
            reason: "lists no keys, so there is nothing to rotate".to_owned(),
        });
    }
    let (rotated, mut report) = ring.rotated(min_publish, force, max_token_ttl, now)?;
    report.warnings = ring.warnings.clone();
    report
        .warnings
        .extend(ring_files::write(dir, &rotated, ring.generation)?);
    Ok(report)
}

/// What `keys rotate` did, for printing (`Display`) or as JSON (`Serialize`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RotationReport {
    /// The generation of the saved ring.
    pub generation: u64,
    /// One entry per algorithm, in JWKS order.
    pub algorithms: Vec<AlgorithmRotation>,
    /// Problems that did not stop the rotation (to print or log).
    pub warnings: Vec<String>,
}

/// The rotation of one algorithm's keys.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AlgorithmRotation {
    /// The algorithm.
    pub alg: SigningAlgorithm,
    /// The key that signed until now; now *previous*.
    pub old_current: String,
    /// The former *next* key, which signs from now on.
    pub new_current: String,
    /// The newly staged *next* key.
    pub new_next: String,
    /// When `old_current` leaves the JWKS (RFC 3339).
    pub previous_retire_at: String,
    /// The former *previous* key, now removed.
    pub retired: Option<RetiredKey>,
}

/// A *previous* key removed by a rotation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RetiredKey {
    /// Its `kid`.
    pub kid: String,
    /// True when `--force` removed it before its `retire_at`: tokens it signed that
    /// have not expired no longer verify.
    pub before_expiry: bool,
}

impl fmt::Display for RotationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rotated signing keys (generation {})", self.generation)?;
        for rotation in &self.algorithms {
            writeln!(
                f,
                "{}: current {} -> {}; next {}; previous {} published until {}",
                rotation.alg,
                rotation.old_current,
                rotation.new_current,
                rotation.new_next,
                rotation.old_current,
                rotation.previous_retire_at
            )?;
            if let Some(retired) = &rotation.retired {
                let note = if retired.before_expiry {
                    " before its tokens expired (--force)"
                } else {
                    ""
                };
                writeln!(f, "{}: retired {}{note}", rotation.alg, retired.kid)?;
            }
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
