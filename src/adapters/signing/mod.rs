//! tokenmint's own signing keys for `kind = "local"` targets: key pairs, the JWKS they
//! publish, the current / next / previous key ring and its rotation, on disk or in the
//! database.
//!
//! Layout:
//! - `signing_key`: one parsed key pair, its RFC 7638 `kid`, public JWK and JWT signing.
//! - `jws`: the compact JWS builder every signed token goes through.
//! - `ring`: the immutable [`KeyRing`] snapshot, its JWKS and the rotation rules
//!   ([`rotate`] for the files).
//! - `ring_manifest`: the manifest (kids, roles, times; no secrets) shared by both homes.
//! - `ring_files`: the embedded store's home (`keys.json` + one `{kid}.pem` per key in
//!   `data_dir/keys`), atomic saves and permission checks.
//! - `ring_db`: the home with `storage.database_url`: [`DatabaseRing`], one row shared by
//!   every replica, the keys sealed with the key-encryption key.
//! - `kek`: [`KeyEncryptionKey`]: the key-encryption key file, HKDF-SHA256, AES-256-GCM.
//!
//! Security invariants kept here:
//! - private key material never reaches a log, an error message or a `Debug` output, and
//!   never the database unencrypted;
//! - a key leaves the JWKS only after every token it may have signed has expired
//!   (`retire_at`), and a new key is in the JWKS for `keys.min_publish` before it signs.

mod error;
pub mod jws;
mod kek;
mod ring;
mod ring_db;
mod ring_files;
mod ring_manifest;
mod signing_key;

use std::fmt;
use std::str::FromStr;

pub use error::KeyError;
pub use kek::{KeyEncryptionKey, MIN_KEY_ENCRYPTION_KEY_LEN, is_service_credential};
pub use ring::{AlgorithmRotation, KeyRing, KeyRole, RetiredKey, RotationReport, rotate};
pub use ring_db::{DatabaseRing, ResealReport, StoredChange};
pub use signing_key::{SigningKey, jwk_thumbprint};

/// A JWS algorithm tokenmint can sign access tokens with.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SigningAlgorithm {
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-bit keys when generated).
    RS256,
    /// Ed25519.
    EdDSA,
}

impl SigningAlgorithm {
    /// Every supported algorithm, in the order the JWKS lists them.
    pub const ALL: [SigningAlgorithm; 3] = [Self::ES256, Self::RS256, Self::EdDSA];

    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::EdDSA => "EdDSA",
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlgorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| KeyError::UnknownAlgorithm(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_exactly() {
        for alg in SigningAlgorithm::ALL {
            let parsed: SigningAlgorithm = alg.to_string().parse().expect("own name parses");
            assert_eq!(parsed, alg);
            let json = serde_json::to_string(&alg).expect("serializes");
            assert_eq!(json, format!("\"{alg}\""));
        }
        let err = "es256"
            .parse::<SigningAlgorithm>()
            .expect_err("case matters");
        assert_eq!(
            err.to_string(),
            "unknown signing algorithm \"es256\" (expected one of ES256, RS256, EdDSA)"
        );
    }
}
