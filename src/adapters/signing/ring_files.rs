//! The key ring on disk: `keys.json` (roles and times, no secrets) plus one `{kid}.pem`
//! (PKCS#8, mode 0600) per key in a 0700 directory; atomic saves and permission checks.
//!
//! A save writes new key files first, then replaces `keys.json` (temp file + rename), and
//! only then removes the files of keys that left the ring, so a crash at any point leaves
//! a manifest whose every key file exists.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::ExposeSecret as _;
use secrecy::zeroize::Zeroizing;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ring::{AlgorithmKeys, KeyRole, PreviousKey, RingKey};
use super::{KeyError, KeyRing, SigningAlgorithm, SigningKey};

/// The manifest's file name.
pub(super) const MANIFEST: &str = "keys.json";
/// The manifest format this code reads and writes.
const VERSION: u32 = 1;
/// Mode of the key directory.
const DIR_MODE: u32 = 0o700;
/// Mode of every file written into it.
const FILE_MODE: u32 = 0o600;

/// `keys.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    version: u32,
    generation: u64,
    keys: Vec<ManifestKey>,
}

/// One key in `keys.json`; times are RFC 3339.
#[derive(serde::Serialize, serde::Deserialize)]
struct ManifestKey {
    kid: String,
    alg: SigningAlgorithm,
    role: KeyRole,
    created_at: String,
    published_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retire_at: Option<String>,
}

/// Creates `dir` with mode 0700 if it does not exist.
pub(super) fn create_dir(dir: &Path) -> Result<(), KeyError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error("create directory", dir))
}

/// Whether `dir` holds a `keys.json`.
pub(super) fn manifest_exists(dir: &Path) -> Result<bool, KeyError> {
    let path = dir.join(MANIFEST);
    path.try_exists().map_err(io_error("inspect", &path))
}

/// The generation recorded in `dir`'s manifest, without reading any private key.
pub(super) fn read_generation(dir: &Path) -> Result<u64, KeyError> {
    read_manifest(&dir.join(MANIFEST)).map(|manifest| manifest.generation)
}

/// Loads the ring saved in `dir`; never writes.
pub(super) fn read(dir: &Path) -> Result<KeyRing, KeyError> {
    let mut warnings = Vec::new();
    let dir_mode = fs::metadata(dir)
        .map_err(io_error("inspect", dir))?
        .permissions()
        .mode();
    warn_if_shared(dir, dir_mode, DIR_MODE, &mut warnings);

    let manifest_path = dir.join(MANIFEST);
    let manifest = read_manifest(&manifest_path)?;
    let corrupt = |reason: String| KeyError::Corrupt {
        path: manifest_path.clone(),
        reason,
    };

    let mut slots: BTreeMap<SigningAlgorithm, Slots> = BTreeMap::new();
    let mut kids = BTreeSet::new();
    for entry in &manifest.keys {
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
            key: Arc::new(read_key(dir, entry, &mut warnings)?),
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
        let previous = slots
            .previous
            .and_then(|(key, retire_at)| retire_at.map(|retire_at| PreviousKey { key, retire_at }));
        algorithms.insert(
            alg,
            AlgorithmKeys {
                current,
                next,
                previous,
            },
        );
    }
    Ok(KeyRing::from_parts(
        manifest.generation,
        algorithms,
        warnings,
    ))
}

/// The keys of one algorithm while `keys.json` is read, with each one's `retire_at`.
#[derive(Default)]
struct Slots {
    current: Option<(RingKey, Option<OffsetDateTime>)>,
    next: Option<(RingKey, Option<OffsetDateTime>)>,
    previous: Option<(RingKey, Option<OffsetDateTime>)>,
}

/// Saves `ring` into `dir`, provided `keys.json` still has `expected_generation` (0 when
/// there is none yet). Returns warnings about retired key files that could not be
/// removed.
pub(super) fn write(
    dir: &Path,
    ring: &KeyRing,
    expected_generation: u64,
) -> Result<Vec<String>, KeyError> {
    let manifest_path = dir.join(MANIFEST);
    let on_disk = if manifest_path
        .try_exists()
        .map_err(io_error("inspect", &manifest_path))?
    {
        Some(read_manifest(&manifest_path)?)
    } else {
        None
    };
    let found = on_disk.as_ref().map_or(0, |manifest| manifest.generation);
    if found != expected_generation {
        return Err(KeyError::ConcurrentChange {
            path: manifest_path,
            expected: expected_generation,
            found,
        });
    }

    let mut manifest = Manifest {
        version: VERSION,
        generation: ring.generation(),
        keys: Vec::new(),
    };
    let mut wrote_key_file = false;
    for (&alg, keys) in ring.algorithm_keys() {
        let mut entries = vec![
            (KeyRole::Current, &keys.current, None),
            (KeyRole::Next, &keys.next, None),
        ];
        if let Some(previous) = &keys.previous {
            entries.push((KeyRole::Previous, &previous.key, Some(previous.retire_at)));
        }
        for (role, ring_key, retire_at) in entries {
            let kid = ring_key.key.kid();
            let pem_path = key_path(dir, kid);
            if !pem_path
                .try_exists()
                .map_err(io_error("inspect", &pem_path))?
            {
                let pem = ring_key.key.to_pkcs8_pem();
                write_atomically(dir, &pem_path, pem.expose_secret().as_bytes())?;
                wrote_key_file = true;
            }
            manifest.keys.push(ManifestKey {
                kid: kid.to_owned(),
                alg,
                role,
                created_at: rfc3339(ring_key.created_at)?,
                published_at: rfc3339(ring_key.published_at)?,
                retire_at: retire_at.map(rfc3339).transpose()?,
            });
        }
    }
    if wrote_key_file {
        // The key files' directory entries must be durable before the manifest names them.
        sync_dir(dir)?;
    }
    let mut json = serde_json::to_vec_pretty(&manifest).map_err(|err| KeyError::Corrupt {
        path: manifest_path.clone(),
        reason: format!("cannot serialize the manifest: {err}"),
    })?;
    json.push(b'\n');
    write_atomically(dir, &manifest_path, &json)?;
    sync_dir(dir)?;

    let mut warnings = Vec::new();
    let kept: BTreeSet<&str> = manifest.keys.iter().map(|key| key.kid.as_str()).collect();
    for old in on_disk.iter().flat_map(|manifest| &manifest.keys) {
        if kept.contains(old.kid.as_str()) || !is_thumbprint(&old.kid) {
            continue;
        }
        let pem_path = key_path(dir, &old.kid);
        match fs::remove_file(&pem_path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => warnings.push(format!(
                "cannot remove retired key file {}: {err}",
                pem_path.display()
            )),
        }
    }
    Ok(warnings)
}

/// `time` as RFC 3339 in UTC.
pub(super) fn rfc3339(time: OffsetDateTime) -> Result<String, KeyError> {
    time.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|err| KeyError::TimeOutOfRange(format!("{time}: {err}")))
}

fn read_manifest(path: &Path) -> Result<Manifest, KeyError> {
    let text = fs::read_to_string(path).map_err(io_error("read", path))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|err| KeyError::Corrupt {
        path: path.to_owned(),
        reason: format!("not a valid key manifest: {err}"),
    })?;
    if manifest.version != VERSION {
        return Err(KeyError::Corrupt {
            path: path.to_owned(),
            reason: format!(
                "manifest version {} is not supported (this tokenmint reads version {VERSION})",
                manifest.version
            ),
        });
    }
    Ok(manifest)
}

/// Reads and parses the private key of `entry`, checking that its file is private and
/// that it is the key the manifest names.
fn read_key(
    dir: &Path,
    entry: &ManifestKey,
    warnings: &mut Vec<String>,
) -> Result<SigningKey, KeyError> {
    let path = key_path(dir, &entry.kid);
    let mut file = File::open(&path).map_err(io_error("read", &path))?;
    let mode = file
        .metadata()
        .map_err(io_error("inspect", &path))?
        .permissions()
        .mode();
    warn_if_shared(&path, mode, FILE_MODE, warnings);
    let mut pem = Zeroizing::new(String::new());
    file.read_to_string(&mut pem)
        .map_err(io_error("read", &path))?;
    let key = SigningKey::from_pkcs8_pem(entry.alg, &pem).map_err(|err| KeyError::Corrupt {
        path: path.clone(),
        reason: err.to_string(),
    })?;
    if key.kid() != entry.kid {
        return Err(KeyError::Corrupt {
            path,
            reason: format!(
                "holds the key with thumbprint {}, but {MANIFEST} lists it as {}",
                key.kid(),
                entry.kid
            ),
        });
    }
    Ok(key)
}

fn key_path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{kid}.pem"))
}

/// A SHA-256 JWK thumbprint: 43 base64url characters, so also a safe file name.
fn is_thumbprint(kid: &str) -> bool {
    kid.len() == 43
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn warn_if_shared(path: &Path, mode: u32, wanted: u32, warnings: &mut Vec<String>) {
    if mode & 0o077 != 0 {
        warnings.push(format!(
            "{} is accessible by group or others (mode {:04o}); run `chmod {:o} {}`",
            path.display(),
            mode & 0o7777,
            wanted,
            path.display()
        ));
    }
}

/// Writes `contents` to a new temporary file (mode 0600) in `dir`, flushes it, and
/// renames it over `path`.
fn write_atomically(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, path));
    if let Err(err) = written {
        // Best effort: the temporary file is invisible to readers anyway.
        let _ = fs::remove_file(&temp);
        return Err(io_error("write", path)(err));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("sync directory", dir))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> KeyError {
    let path = path.to_owned();
    move |source| KeyError::Io {
        action,
        path,
        source,
    }
}
