//! The error type of the signing-key module; no variant ever carries key material.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::SigningAlgorithm;

/// Everything that can go wrong with signing keys, their files and their rotation.
///
/// Messages are meant for operators (CLI output, startup logs). None contains private key
/// bytes: parse failures describe what is wrong, never what was read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// An `alg` name that is not one of ours.
    #[error("unknown signing algorithm {0:?} (expected one of ES256, RS256, EdDSA)")]
    UnknownAlgorithm(String),

    /// A PEM or PKCS#8 document that does not hold a usable key for the algorithm.
    #[error("invalid {alg} private key: {reason}")]
    InvalidKey {
        /// The algorithm the key was meant for.
        alg: SigningAlgorithm,
        /// What is wrong, without any of the key's bytes.
        reason: String,
    },

    /// The crypto library failed to generate a key.
    #[error("generating a new {0} key failed")]
    Generate(SigningAlgorithm),

    /// The crypto library failed to sign (should not happen with a key it accepted).
    #[error("signing with {alg} key {kid} failed")]
    Sign {
        /// The signing key's algorithm.
        alg: SigningAlgorithm,
        /// The signing key's `kid`.
        kid: String,
    },

    /// JWT claims that are not a JSON object.
    #[error("access token claims must be a JSON object")]
    ClaimsNotObject,

    /// A file or directory operation failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A file that exists but whose content is unusable.
    #[error("{}: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A time that cannot be represented or written as RFC 3339.
    #[error("time out of range: {0}")]
    TimeOutOfRange(String),

    /// Another process saved the key ring while this one was changing it.
    #[error(
        "{} was changed by another process while this one was updating it \
         (generation {expected} became {found}); run the command again",
        .path.display()
    )]
    ConcurrentChange {
        /// `keys.json`.
        path: PathBuf,
        /// The generation this process loaded.
        expected: u64,
        /// The generation found on disk just before saving.
        found: u64,
    },

    /// A key-encryption key file that cannot be used.
    #[error("{setting} {}: {problem}", .path.display())]
    KeyEncryptionKeyFile {
        /// Where the path came from (`storage.key_encryption_key_file`, `--new-key-file`).
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },

    /// The keys in the database were sealed with another key-encryption key.
    #[error(
        "storage.key_encryption_key_file is not the key these signing keys were sealed with \
         (its key id is {this}; they were sealed with key id {sealed_with}): give every replica \
         the file they were sealed with (after `tokenmint keys reseal`, the new one)"
    )]
    WrongKeyEncryptionKey {
        /// The key id stored beside the sealed keys.
        sealed_with: String,
        /// The key id of the configured file.
        this: String,
    },

    /// The sealed keys fail authentication under the key that sealed them.
    #[error(
        "the signing keys in the database (generation {generation}) do not authenticate under \
         storage.key_encryption_key_file although it is the key they were sealed with: the \
         signing_ring row was altered outside tokenmint; restore it from a backup"
    )]
    SealBroken {
        /// The generation stored in the row.
        generation: u64,
    },

    /// The ring in the database holds something this tokenmint cannot use.
    #[error("the signing keys in the database (table signing_ring): {reason}")]
    StoredCorrupt {
        /// What is wrong with it.
        reason: String,
    },

    /// There is no ring in the database.
    #[error("there are no signing keys in the database yet (table signing_ring is empty)")]
    StoredMissing,

    /// Another process saved the ring in the database while this one was changing it.
    #[error(
        "the signing keys in the database were changed by another process while this one was \
         updating them (generation {expected} became {found}); run the command again"
    )]
    StoredConcurrentChange {
        /// The generation this process read.
        expected: u64,
        /// The generation found when saving.
        found: u64,
    },

    /// A database operation on the ring failed.
    #[error("cannot {action} the signing keys in the database: {error}")]
    Database {
        /// What was being done ("read", "save", ...).
        action: &'static str,
        /// The database's error.
        error: sqlx::Error,
    },

    /// The crypto library failed to derive, seal or open (no key material in the text).
    #[error("{0}")]
    Crypto(&'static str),

    /// `keys rotate` before the next key has been in the JWKS for `keys.min_publish`.
    #[error(
        "next {alg} key kid {kid} has been published for {}; keys.min_publish is {}; \
         wait {} or use --force",
        human_duration(*.published_for),
        human_duration(*.min_publish),
        human_duration(*.wait)
    )]
    NextNotPublishedLongEnough {
        /// The algorithm whose rotation is refused.
        alg: SigningAlgorithm,
        /// The next key's `kid`.
        kid: String,
        /// How long the next key has been published.
        published_for: Duration,
        /// The configured minimum.
        min_publish: Duration,
        /// How much longer to wait.
        wait: Duration,
    },

    /// `keys rotate` while the previous key may still verify unexpired tokens.
    #[error(
        "previous {alg} key kid {kid} must stay published until {retire_at}, when the last \
         token it signed expires; rotating now would remove it and break those tokens; \
         wait {} or use --force",
        human_duration(*.wait)
    )]
    PreviousNotRetired {
        /// The algorithm whose rotation is refused.
        alg: SigningAlgorithm,
        /// The previous key's `kid`.
        kid: String,
        /// RFC 3339 time at which it retires.
        retire_at: String,
        /// How much longer to wait.
        wait: Duration,
    },
}

/// Formats a duration the way configuration values are written: `1h`, `48m`, `1h30m`,
/// `45s` (whole seconds; `0s` for zero).
pub(crate) fn human_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, (total / 60) % 60, total % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 || out.is_empty() {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_like_config_values() {
        assert_eq!(human_duration(Duration::ZERO), "0s");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(48 * 60)), "48m");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(human_duration(Duration::from_secs(5430)), "1h30m30s");
        assert_eq!(human_duration(Duration::from_millis(59_999)), "59s");
    }
}
