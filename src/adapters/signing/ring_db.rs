//! The key ring in the database (with `storage.database_url`): one `signing_ring` row
//! that every replica shares, holding the manifest (kids, roles, times: no secrets) and
//! every private key sealed with the key-encryption key, and the `keys rotate` and
//! `keys reseal` that change it.
//!
//! The sealed part is the keys' PKCS#8 PEM documents in manifest order, encrypted with
//! AES-256-GCM under a fresh nonce; the authenticated data is the generation and the
//! manifest, so neither can be swapped for another row's. A change is saved only where
//! the row still has the generation it was made from, so two replicas (or a replica and
//! `keys rotate`) never overwrite each other.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use secrecy::zeroize::Zeroizing;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use time::OffsetDateTime;

use super::kek::{KeyEncryptionKey, OpenError, Sealed};
use super::ring_manifest::{self, Manifest};
use super::{KeyError, KeyRing, RotationReport, SigningAlgorithm, SigningKey};

/// The PEM line that ends every sealed key.
const PEM_END: &str = "-----END PRIVATE KEY-----\n";
/// The AES-256-GCM tag appended to the ciphertext.
const TAG_LEN: usize = 16;
/// Attempts at creating or completing the ring when other replicas change it meanwhile.
const ATTEMPTS: usize = 5;

const SELECT: &str = "SELECT generation, manifest, kek_id, nonce, sealed FROM signing_ring \
                      WHERE singleton = 1";

/// The `signing_ring` row.
#[derive(Clone, Debug)]
pub(super) struct StoredRing {
    generation: u64,
    manifest: String,
    sealed: Sealed,
}

/// What a running replica finds when it looks at the database again.
#[derive(Debug)]
pub enum StoredChange {
    /// The ring it signs with is still the stored one.
    Unchanged,
    /// Another process saved a new generation: this ring.
    Changed(KeyRing),
    /// The same generation, resealed (`keys reseal`) with the key-encryption key whose
    /// id this is: the loaded keys stay good, but later rotations cannot be read with
    /// this replica's key.
    Resealed {
        /// The key id the keys are sealed with now.
        key_id: String,
    },
}

/// What `keys reseal` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResealReport {
    /// The generation of the resealed ring (unchanged by resealing).
    pub generation: u64,
    /// The key id the keys were sealed with.
    pub old_key_id: String,
    /// The key id they are sealed with now.
    pub new_key_id: String,
    /// The keys were already sealed with the new key: nothing was written.
    pub already: bool,
}

/// The signing keys of local targets, kept in the database and sealed with `kek`.
pub struct DatabaseRing {
    pool: AnyPool,
    kek: KeyEncryptionKey,
}

impl DatabaseRing {
    /// The ring in the database behind `pool` (PostgreSQL, migrated), sealed with `kek`.
    pub fn new(pool: AnyPool, kek: KeyEncryptionKey) -> DatabaseRing {
        DatabaseRing { pool, kek }
    }

    /// The id of the key-encryption key this process seals and opens with.
    pub fn key_id(&self) -> &str {
        self.kek.id()
    }

    /// Loads the stored ring; generates current and next keys for every algorithm in
    /// `algorithms` that has none and saves them. When there is no ring yet, the new one
    /// is inserted unless another replica inserted one first; either way the ring that
    /// is stored is returned, so replicas starting together end with one ring.
    pub async fn load_or_create(
        &self,
        algorithms: &[SigningAlgorithm],
        now: OffsetDateTime,
    ) -> Result<KeyRing, KeyError> {
        let mut last_seen = 0;
        for _ in 0..ATTEMPTS {
            match self.fetch().await? {
                Some(stored) => {
                    last_seen = stored.generation;
                    let ring = open_ring(&self.kek, &stored)?;
                    let Some(grown) = ring.with_missing(algorithms, now)? else {
                        return Ok(ring);
                    };
                    if self
                        .update(&seal_ring(&self.kek, &grown)?, stored.generation, now)
                        .await?
                    {
                        return Ok(grown);
                    }
                }
                None => {
                    let empty = KeyRing::from_parts(0, Default::default(), Vec::new());
                    let Some(fresh) = empty.with_missing(algorithms, now)? else {
                        return Ok(empty);
                    };
                    // Read back on the next round: ours, or what a replica inserted first.
                    self.insert(&seal_ring(&self.kek, &fresh)?, now).await?;
                }
            }
        }
        Err(KeyError::StoredConcurrentChange {
            expected: last_seen,
            found: self.fetch().await?.map_or(0, |stored| stored.generation),
        })
    }

    /// Loads the stored ring; never writes.
    pub async fn load(&self) -> Result<KeyRing, KeyError> {
        let stored = self.fetch().await?.ok_or(KeyError::StoredMissing)?;
        open_ring(&self.kek, &stored)
    }

    /// Whether the stored ring is still generation `loaded` (one small query), and the
    /// new ring when it is not. An error (database down, a newer generation sealed with
    /// another key) leaves the caller with the keys it has.
    pub async fn check(&self, loaded: u64) -> Result<StoredChange, KeyError> {
        let row = sqlx::query("SELECT generation, kek_id FROM signing_ring WHERE singleton = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read"))?;
        let Some(row) = row else {
            // Nothing stored and nothing loaded: no local target needs generated keys.
            return match loaded {
                0 => Ok(StoredChange::Unchanged),
                _ => Err(KeyError::StoredMissing),
            };
        };
        let generation = generation_of(&row)?;
        let key_id: String = row.try_get(1).map_err(db("read"))?;
        match (generation == loaded, key_id == self.kek.id()) {
            (true, true) => Ok(StoredChange::Unchanged),
            (true, false) => Ok(StoredChange::Resealed { key_id }),
            (false, false) => Err(KeyError::WrongKeyEncryptionKey {
                sealed_with: key_id,
                this: self.kek.id().to_owned(),
            }),
            (false, true) => {
                let stored = self.fetch().await?.ok_or(KeyError::StoredMissing)?;
                Ok(StoredChange::Changed(open_ring(&self.kek, &stored)?))
            }
        }
    }

    /// `tokenmint keys rotate` on the stored ring, with the rules of
    /// [`rotate`](super::rotate); saved only if no other process saved a ring meanwhile.
    pub async fn rotate(
        &self,
        min_publish: Duration,
        force: bool,
        max_token_ttl: &dyn Fn(SigningAlgorithm) -> Duration,
        now: OffsetDateTime,
    ) -> Result<RotationReport, KeyError> {
        let stored = self.fetch().await?.ok_or(KeyError::StoredMissing)?;
        let ring = open_ring(&self.kek, &stored)?;
        if ring.algorithms().next().is_none() {
            return Err(KeyError::StoredCorrupt {
                reason: "lists no keys, so there is nothing to rotate".to_owned(),
            });
        }
        let (rotated, report) = ring.rotated(min_publish, force, max_token_ttl, now)?;
        if !self
            .update(&seal_ring(&self.kek, &rotated)?, stored.generation, now)
            .await?
        {
            return Err(KeyError::StoredConcurrentChange {
                expected: stored.generation,
                found: self.fetch().await?.map_or(0, |stored| stored.generation),
            });
        }
        Ok(report)
    }

    /// `tokenmint keys reseal`: opens the stored keys with this ring's key and seals them
    /// with `new`, in one transaction. Keys, manifest and generation stay as they are.
    pub async fn reseal(
        &self,
        new: &KeyEncryptionKey,
        now: OffsetDateTime,
    ) -> Result<ResealReport, KeyError> {
        let mut tx = self.pool.begin().await.map_err(db("reseal"))?;
        let row = sqlx::query(&format!("{SELECT} FOR UPDATE"))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("read"))?;
        let stored = stored_of(row.ok_or(KeyError::StoredMissing)?)?;
        if stored.sealed.key_id == new.id() {
            return Ok(ResealReport {
                generation: stored.generation,
                old_key_id: self.kek.id().to_owned(),
                new_key_id: new.id().to_owned(),
                already: true,
            });
        }
        let plaintext = open_plaintext(&self.kek, &stored)?;
        // Never reseal what would not load.
        ring_from_plaintext(&stored, &plaintext)?;
        let sealed = new.seal(&aad(stored.generation, &stored.manifest), plaintext)?;
        let updated = sqlx::query(
            "UPDATE signing_ring SET kek_id = $1, nonce = $2, sealed = $3, updated_us = $4 \
             WHERE singleton = 1 AND generation = $5",
        )
        .bind(&sealed.key_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(micros(now))
        .bind(generation_param(stored.generation)?)
        .execute(&mut *tx)
        .await
        .map_err(db("save"))?;
        if updated.rows_affected() != 1 {
            return Err(KeyError::StoredConcurrentChange {
                expected: stored.generation,
                found: 0,
            });
        }
        tx.commit().await.map_err(db("save"))?;
        Ok(ResealReport {
            generation: stored.generation,
            old_key_id: stored.sealed.key_id,
            new_key_id: sealed.key_id,
            already: false,
        })
    }

    async fn fetch(&self) -> Result<Option<StoredRing>, KeyError> {
        sqlx::query(SELECT)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read"))?
            .map(stored_of)
            .transpose()
    }

    async fn insert(&self, stored: &StoredRing, now: OffsetDateTime) -> Result<(), KeyError> {
        sqlx::query(
            "INSERT INTO signing_ring (singleton, generation, manifest, kek_id, nonce, sealed, \
             updated_us) VALUES (1, $1, $2, $3, $4, $5, $6) ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(generation_param(stored.generation)?)
        .bind(&stored.manifest)
        .bind(&stored.sealed.key_id)
        .bind(&stored.sealed.nonce)
        .bind(&stored.sealed.ciphertext)
        .bind(micros(now))
        .execute(&self.pool)
        .await
        .map_err(db("save"))?;
        Ok(())
    }

    /// Replaces the row if it still has generation `expected`; false if it has not.
    async fn update(
        &self,
        stored: &StoredRing,
        expected: u64,
        now: OffsetDateTime,
    ) -> Result<bool, KeyError> {
        let updated = sqlx::query(
            "UPDATE signing_ring SET generation = $1, manifest = $2, kek_id = $3, nonce = $4, \
             sealed = $5, updated_us = $6 WHERE singleton = 1 AND generation = $7",
        )
        .bind(generation_param(stored.generation)?)
        .bind(&stored.manifest)
        .bind(&stored.sealed.key_id)
        .bind(&stored.sealed.nonce)
        .bind(&stored.sealed.ciphertext)
        .bind(micros(now))
        .bind(generation_param(expected)?)
        .execute(&self.pool)
        .await
        .map_err(db("save"))?;
        Ok(updated.rows_affected() == 1)
    }
}

fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> KeyError {
    move |error| KeyError::Database { action, error }
}

fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn generation_param(generation: u64) -> Result<i64, KeyError> {
    i64::try_from(generation).map_err(|_| KeyError::StoredCorrupt {
        reason: format!("generation {generation} does not fit the column"),
    })
}

fn generation_of(row: &AnyRow) -> Result<u64, KeyError> {
    let generation: i64 = row.try_get(0).map_err(db("read"))?;
    u64::try_from(generation).map_err(|_| KeyError::StoredCorrupt {
        reason: format!("generation {generation} is negative"),
    })
}

fn stored_of(row: AnyRow) -> Result<StoredRing, KeyError> {
    Ok(StoredRing {
        generation: generation_of(&row)?,
        manifest: row.try_get(1).map_err(db("read"))?,
        sealed: Sealed {
            key_id: row.try_get(2).map_err(db("read"))?,
            nonce: row.try_get(3).map_err(db("read"))?,
            ciphertext: row.try_get(4).map_err(db("read"))?,
        },
    })
}

fn corrupt(reason: String) -> KeyError {
    KeyError::StoredCorrupt { reason }
}

/// The data authenticated with the sealed keys: the generation and the manifest.
fn aad(generation: u64, manifest: &str) -> Vec<u8> {
    let mut aad = format!("tokenmint signing ring v1\n{generation}\n").into_bytes();
    aad.extend_from_slice(manifest.as_bytes());
    aad
}

/// The row for `ring`: its manifest, and its private keys (PEM, in manifest order)
/// sealed with `kek`.
pub(super) fn seal_ring(kek: &KeyEncryptionKey, ring: &KeyRing) -> Result<StoredRing, KeyError> {
    let manifest = ring_manifest::manifest_of(ring)?
        .to_json()
        .map_err(corrupt)?;
    let manifest =
        String::from_utf8(manifest).map_err(|_| corrupt("the manifest is not UTF-8".to_owned()))?;
    let pems: Vec<_> = ring_manifest::entries(ring)
        .iter()
        .map(|entry| entry.key.key.to_pkcs8_pem())
        .collect();
    // Sized once, so that no copy of a key is left behind by a reallocation.
    let len: usize = pems.iter().map(|pem| pem.expose_secret().len()).sum();
    let mut plaintext = Zeroizing::new(Vec::with_capacity(len + TAG_LEN));
    for pem in &pems {
        plaintext.extend_from_slice(pem.expose_secret().as_bytes());
    }
    let sealed = kek.seal(&aad(ring.generation(), &manifest), plaintext)?;
    Ok(StoredRing {
        generation: ring.generation(),
        manifest,
        sealed,
    })
}

/// The stored keys, decrypted: their PEM documents one after the other.
fn open_plaintext(
    kek: &KeyEncryptionKey,
    stored: &StoredRing,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    kek.open(&aad(stored.generation, &stored.manifest), &stored.sealed)
        .map_err(|err| match err {
            OpenError::OtherKey => KeyError::WrongKeyEncryptionKey {
                sealed_with: stored.sealed.key_id.clone(),
                this: kek.id().to_owned(),
            },
            OpenError::Malformed | OpenError::Unauthentic => KeyError::SealBroken {
                generation: stored.generation,
            },
        })
}

/// The ring a row holds.
pub(super) fn open_ring(kek: &KeyEncryptionKey, stored: &StoredRing) -> Result<KeyRing, KeyError> {
    let plaintext = open_plaintext(kek, stored)?;
    ring_from_plaintext(stored, &plaintext)
}

fn ring_from_plaintext(stored: &StoredRing, plaintext: &[u8]) -> Result<KeyRing, KeyError> {
    let manifest = Manifest::parse(&stored.manifest).map_err(corrupt)?;
    if manifest.generation != stored.generation {
        return Err(corrupt(format!(
            "the manifest says generation {}, the row {}",
            manifest.generation, stored.generation
        )));
    }
    let text = std::str::from_utf8(plaintext)
        .map_err(|_| corrupt("the sealed keys are not PEM text".to_owned()))?;
    let pems: Vec<&str> = text.split_inclusive(PEM_END).collect();
    if pems.len() != manifest.keys.len() {
        return Err(corrupt(format!(
            "the manifest lists {} keys, but {} are sealed",
            manifest.keys.len(),
            pems.len()
        )));
    }
    let by_kid: HashMap<String, &str> = manifest
        .keys
        .iter()
        .map(|entry| entry.kid.clone())
        .zip(pems)
        .collect();
    manifest.into_ring(
        &mut |entry| {
            let pem = by_kid
                .get(&entry.kid)
                .ok_or_else(|| corrupt(format!("key {} is not sealed", entry.kid)))?;
            let key = SigningKey::from_pkcs8_pem(entry.alg, pem)
                .map_err(|err| corrupt(format!("key {}: {err}", entry.kid)))?;
            if key.kid() != entry.kid {
                return Err(corrupt(format!(
                    "the key sealed for {} has the thumbprint {}",
                    entry.kid,
                    key.kid()
                )));
            }
            Ok(key)
        },
        &corrupt,
    )
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::adapters::signing::KeyRole;

    const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes(&[byte; 32]).expect("key")
    }

    /// A ring as the database first holds it: generation 1, ES256 and EdDSA.
    fn ring() -> KeyRing {
        KeyRing::from_parts(0, Default::default(), Vec::new())
            .with_missing(&[SigningAlgorithm::ES256, SigningAlgorithm::EdDSA], T0)
            .expect("generate")
            .expect("new keys")
    }

    fn kids(ring: &KeyRing) -> Vec<String> {
        let mut kids = Vec::new();
        for alg in ring.algorithms() {
            for role in [KeyRole::Current, KeyRole::Next, KeyRole::Previous] {
                kids.extend(ring.key(alg, role).map(|key| key.kid().to_owned()));
            }
        }
        kids
    }

    #[test]
    fn a_sealed_ring_opens_to_the_same_keys_and_holds_no_key_in_clear() {
        let ring = ring();
        let stored = seal_ring(&kek(1), &ring).expect("seal");
        assert_eq!(stored.generation, 1);
        assert_eq!(stored.sealed.key_id, kek(1).id());
        for text in [stored.manifest.as_bytes(), &stored.sealed.ciphertext[..]] {
            assert!(!text.windows(11).any(|w| w == b"PRIVATE KEY"));
        }
        let opened = open_ring(&kek(1), &stored).expect("open");
        assert_eq!(opened.generation(), 1);
        assert_eq!(kids(&opened), kids(&ring));
        assert_eq!(opened.jwks(T0), ring.jwks(T0));
        let current = opened.current(SigningAlgorithm::ES256).expect("current");
        let original = ring.current(SigningAlgorithm::ES256).expect("current");
        assert_eq!(
            current.to_pkcs8_pem().expose_secret(),
            original.to_pkcs8_pem().expose_secret()
        );
    }

    #[test]
    fn a_flipped_ciphertext_byte_is_refused() {
        let mut stored = seal_ring(&kek(1), &ring()).expect("seal");
        stored.sealed.ciphertext[40] ^= 0x80;
        let err = open_ring(&kek(1), &stored).expect_err("altered");
        assert_eq!(
            err.to_string(),
            "the signing keys in the database (generation 1) do not authenticate under \
             storage.key_encryption_key_file although it is the key they were sealed with: the \
             signing_ring row was altered outside tokenmint; restore it from a backup"
        );
    }

    #[test]
    fn another_generation_or_manifest_is_refused() {
        let stored = seal_ring(&kek(1), &ring()).expect("seal");
        let mut other_generation = stored.clone();
        other_generation.generation = 2;
        assert!(matches!(
            open_ring(&kek(1), &other_generation).expect_err("generation"),
            KeyError::SealBroken { generation: 2 }
        ));
        let mut other_manifest = stored;
        other_manifest.manifest = other_manifest.manifest.replacen("current", "next", 1);
        assert!(matches!(
            open_ring(&kek(1), &other_manifest).expect_err("manifest"),
            KeyError::SealBroken { generation: 1 }
        ));
    }

    #[test]
    fn a_wrong_key_encryption_key_is_named_as_such() {
        let stored = seal_ring(&kek(1), &ring()).expect("seal");
        let err = open_ring(&kek(2), &stored).expect_err("other key");
        assert_eq!(
            err.to_string(),
            format!(
                "storage.key_encryption_key_file is not the key these signing keys were sealed \
                 with (its key id is {}; they were sealed with key id {}): give every replica the \
                 file they were sealed with (after `tokenmint keys reseal`, the new one)",
                kek(2).id(),
                kek(1).id()
            )
        );
    }

    #[test]
    fn the_sealed_part_must_hold_exactly_the_listed_keys() {
        let key = kek(1);
        let ring = ring();
        let stored = seal_ring(&key, &ring).expect("seal");
        let plaintext = open_plaintext(&key, &stored).expect("open");
        let text = std::str::from_utf8(&plaintext).expect("utf-8");
        // Drop the last key and seal the rest under the same manifest.
        let shorter: String = text.split_inclusive(PEM_END).skip(1).collect();
        let sealed = key
            .seal(
                &aad(stored.generation, &stored.manifest),
                Zeroizing::new(shorter.into_bytes()),
            )
            .expect("seal");
        let tampered = StoredRing { sealed, ..stored };
        let err = open_ring(&key, &tampered).expect_err("a key is missing");
        assert_eq!(
            err.to_string(),
            "the signing keys in the database (table signing_ring): the manifest lists 4 keys, \
             but 3 are sealed"
        );
    }
}
