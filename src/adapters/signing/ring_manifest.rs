//! The ring's manifest, shared by the files (`keys.json`) and the database (the
//! `signing_ring` row): every key's kid, algorithm, role and times, and never a secret;
//! turning a ring into one and one (with its private keys) back into a ring.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ring::{AlgorithmKeys, KeyRole, PreviousKey, RingKey};
use super::{KeyError, KeyRing, SigningAlgorithm, SigningKey};

/// The manifest format this code reads and writes.
const VERSION: u32 = 1;

/// `keys.json`, or the `manifest` column.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Manifest {
    version: u32,
    pub(super) generation: u64,
    pub(super) keys: Vec<ManifestKey>,
}

/// One key of the manifest; times are RFC 3339.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ManifestKey {
    pub(super) kid: String,
    pub(super) alg: SigningAlgorithm,
    pub(super) role: KeyRole,
    created_at: String,
    published_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retire_at: Option<String>,
}

/// One key of a ring, as the manifest lists it.
pub(super) struct Entry<'a> {
    pub(super) alg: SigningAlgorithm,
    pub(super) role: KeyRole,
    pub(super) key: &'a RingKey,
    pub(super) retire_at: Option<OffsetDateTime>,
}

/// Every key of `ring` in manifest order: per algorithm (in JWKS order), current, next,
/// then previous.
pub(super) fn entries(ring: &KeyRing) -> Vec<Entry<'_>> {
    let mut entries = Vec::new();
    for (&alg, keys) in ring.algorithm_keys() {
        entries.push(Entry {
            alg,
            role: KeyRole::Current,
            key: &keys.current,
            retire_at: None,
        });
        entries.push(Entry {
            alg,
            role: KeyRole::Next,
            key: &keys.next,
            retire_at: None,
        });
        if let Some(previous) = &keys.previous {
            entries.push(Entry {
                alg,
                role: KeyRole::Previous,
                key: &previous.key,
                retire_at: Some(previous.retire_at),
            });
        }
    }
    entries
}

/// The manifest of `ring`: its keys in [`entries`] order.
pub(super) fn manifest_of(ring: &KeyRing) -> Result<Manifest, KeyError> {
    let keys = entries(ring)
        .into_iter()
        .map(|entry| {
            Ok(ManifestKey {
                kid: entry.key.key.kid().to_owned(),
                alg: entry.alg,
                role: entry.role,
                created_at: rfc3339(entry.key.created_at)?,
                published_at: rfc3339(entry.key.published_at)?,
                retire_at: entry.retire_at.map(rfc3339).transpose()?,
            })
        })
        .collect::<Result<Vec<_>, KeyError>>()?;
    Ok(Manifest {
        version: VERSION,
        generation: ring.generation(),
        keys,
    })
}

impl Manifest {
    /// The manifest as pretty JSON with a final newline (what `keys.json` holds).
    pub(super) fn to_json(&self) -> Result<Vec<u8>, String> {
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|err| format!("cannot serialize the manifest: {err}"))?;
        json.push(b'\n');
        Ok(json)
    }

    /// Parses and checks the version; the error is the reason, for the caller to place.
    pub(super) fn parse(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest =
            serde_json::from_str(text).map_err(|err| format!("not a valid key manifest: {err}"))?;
        if manifest.version != VERSION {
            return Err(format!(
                "manifest version {} is not supported (this tokenmint reads version {VERSION})",
                manifest.version
            ));
        }
        Ok(manifest)
    }

    /// The ring this manifest describes, without warnings. `key` gives the private key of
    /// an entry (checked to be the key the entry names); `corrupt` places a reason in an
    /// error.
    pub(super) fn into_ring(
        self,
        key: &mut dyn FnMut(&ManifestKey) -> Result<SigningKey, KeyError>,
        corrupt: &dyn Fn(String) -> KeyError,
    ) -> Result<KeyRing, KeyError> {
        let mut slots: BTreeMap<SigningAlgorithm, Slots> = BTreeMap::new();
        let mut kids = BTreeSet::new();
        for entry in &self.keys {
            if !is_thumbprint(&entry.kid) {
                return Err(corrupt(format!(
                    "kid {:?} is not a JWK thumbprint (43 base64url characters)",
                    entry.kid
                )));
            }
            if !kids.insert(entry.kid.as_str()) {
                return Err(corrupt(format!("kid {} is listed twice", entry.kid)));
            }
            let time = |name: &str, value: &str| {
                OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
                    corrupt(format!(
                        "{name} {value:?} of key {} is not an RFC 3339 time",
                        entry.kid
                    ))
                })
            };
            let ring_key = RingKey {
                key: Arc::new(key(entry)?),
                created_at: time("created_at", &entry.created_at)?,
                published_at: time("published_at", &entry.published_at)?,
            };
            let retire_at = match (&entry.retire_at, entry.role) {
                (Some(value), KeyRole::Previous) => Some(time("retire_at", value)?),
                (None, KeyRole::Previous) => {
                    return Err(corrupt(format!(
                        "previous key {} has no retire_at",
                        entry.kid
                    )));
                }
                (Some(_), role) => {
                    return Err(corrupt(format!(
                        "{role} key {} has a retire_at; only a previous key retires",
                        entry.kid
                    )));
                }
                (None, _) => None,
            };
            let slots = slots.entry(entry.alg).or_default();
            let slot = match entry.role {
                KeyRole::Current => &mut slots.current,
                KeyRole::Next => &mut slots.next,
                KeyRole::Previous => &mut slots.previous,
            };
            if let Some((existing, _)) = slot {
                return Err(corrupt(format!(
                    "two {} {} keys: {} and {}",
                    entry.role,
                    entry.alg,
                    existing.key.kid(),
                    entry.kid
                )));
            }
            *slot = Some((ring_key, retire_at));
        }

        let mut algorithms = BTreeMap::new();
        for (alg, slots) in slots {
            let missing = |role: KeyRole| corrupt(format!("{alg} has no {role} key"));
            let (current, _) = slots.current.ok_or_else(|| missing(KeyRole::Current))?;
            let (next, _) = slots.next.ok_or_else(|| missing(KeyRole::Next))?;
            let previous = slots.previous.and_then(|(key, retire_at)| {
                retire_at.map(|retire_at| PreviousKey { key, retire_at })
            });
            algorithms.insert(
                alg,
                AlgorithmKeys {
                    current,
                    next,
                    previous,
                },
            );
        }
        Ok(KeyRing::from_parts(self.generation, algorithms, Vec::new()))
    }
}

/// The keys of one algorithm while a manifest is read, with each one's `retire_at`.
#[derive(Default)]
struct Slots {
    current: Option<(RingKey, Option<OffsetDateTime>)>,
    next: Option<(RingKey, Option<OffsetDateTime>)>,
    previous: Option<(RingKey, Option<OffsetDateTime>)>,
}

/// `time` as RFC 3339 in UTC.
pub(super) fn rfc3339(time: OffsetDateTime) -> Result<String, KeyError> {
    time.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|err| KeyError::TimeOutOfRange(format!("{time}: {err}")))
}

/// A SHA-256 JWK thumbprint: 43 base64url characters, so also a safe file name.
pub(super) fn is_thumbprint(kid: &str) -> bool {
    kid.len() == 43
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
