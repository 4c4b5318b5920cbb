//! The key ring on disk (the embedded store): `keys.json` (the manifest of
//! `ring_manifest`: roles and times, no secrets) plus one `{kid}.pem` (PKCS#8, mode 0600)
//! per key in a 0700 directory; atomic saves and permission checks.
//!
//! A save writes new key files first, then replaces `keys.json` (temp file + rename), and
//! only then removes the files of keys that left the ring, so a crash at any point leaves
//! a manifest whose every key file exists.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret as _;
use secrecy::zeroize::Zeroizing;

use super::ring_manifest::{self, Manifest, ManifestKey, is_thumbprint};
use super::{KeyError, KeyRing, SigningKey};

/// The manifest's file name.
pub(super) const MANIFEST: &str = "keys.json";
/// Mode of the key directory.
const DIR_MODE: u32 = 0o700;
/// Mode of every file written into it.
const FILE_MODE: u32 = 0o600;

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
    let mut key_warnings = Vec::new();
    let ring = manifest.into_ring(
        &mut |entry| read_key(dir, entry, &mut key_warnings),
        &corrupt,
    )?;
    warnings.extend(key_warnings);
    Ok(ring.with_warnings(warnings))
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

    let manifest = ring_manifest::manifest_of(ring)?;
    let mut wrote_key_file = false;
    for entry in ring_manifest::entries(ring) {
        let pem_path = key_path(dir, entry.key.key.kid());
        if !pem_path
            .try_exists()
            .map_err(io_error("inspect", &pem_path))?
        {
            let pem = entry.key.key.to_pkcs8_pem();
            write_atomically(dir, &pem_path, pem.expose_secret().as_bytes())?;
            wrote_key_file = true;
        }
    }
    if wrote_key_file {
        // The key files' directory entries must be durable before the manifest names them.
        sync_dir(dir)?;
    }
    let json = manifest.to_json().map_err(|reason| KeyError::Corrupt {
        path: manifest_path.clone(),
        reason,
    })?;
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

fn read_manifest(path: &Path) -> Result<Manifest, KeyError> {
    let text = fs::read_to_string(path).map_err(io_error("read", path))?;
    Manifest::parse(&text).map_err(|reason| KeyError::Corrupt {
        path: path.to_owned(),
        reason,
    })
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
