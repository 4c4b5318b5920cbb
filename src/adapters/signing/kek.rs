//! The key-encryption key of the signing keys kept in the database: read once from
//! `storage.key_encryption_key_file` (a private file of at least 32 random bytes), turned
//! by HKDF-SHA256 into an AES-256-GCM key and a short key id, and the sealing and opening
//! of data with it.
//!
//! The file's bytes live only while the keys are derived (zeroized after); the derived
//! AES key lives inside aws-lc-rs. The key id names which key sealed something without
//! revealing anything of the key (it is another HKDF output), so a wrong file is reported
//! as such rather than as a failed decryption.

use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use secrecy::zeroize::Zeroizing;

use super::KeyError;

/// The shortest key-encryption key file accepted, in bytes.
pub const MIN_KEY_ENCRYPTION_KEY_LEN: usize = 32;
/// The longest one read (a key-encryption key is 32 random bytes; anything much longer
/// is the wrong file).
const MAX_KEY_ENCRYPTION_KEY_LEN: u64 = 64 * 1024;

/// HKDF salt: fixed, so that the same file always gives the same keys.
const SALT: &[u8] = b"tokenmint key-encryption key";
/// HKDF info of the AES-256-GCM key.
const AEAD_INFO: &[u8] = b"tokenmint signing keys v1";
/// HKDF info of the key id.
const ID_INFO: &[u8] = b"tokenmint signing keys v1 key id";
/// Bytes of the key id (shown as twice as many hex digits).
const ID_LEN: usize = 8;

/// An HKDF output length.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The key that seals the signing keys kept in the database. Its `Debug` output shows
/// only its id.
pub struct KeyEncryptionKey {
    aead: RandomizedNonceKey,
    id: String,
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Data sealed with a [`KeyEncryptionKey`]: the ciphertext with its tag, the nonce, and
/// the id of the key that sealed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub key_id: String,
}

/// Whether `path` is one of this service's systemd credentials (`LoadCredential=`): a file
/// directly in `$CREDENTIALS_DIRECTORY`, which systemd makes for the service alone. Some
/// systemd versions grant the service access by an ACL, so the file shows mode 0440
/// although no other user can read it; its mode says nothing then.
pub fn is_service_credential(path: &Path) -> bool {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY");
    credentials_dir_holds(dir.as_deref().map(Path::new), path)
}

/// Whether `path` is a file directly in `dir`, and `dir` is closed to others.
fn credentials_dir_holds(dir: Option<&Path>, path: &Path) -> bool {
    let Some(dir) = dir else {
        return false;
    };
    let (Ok(dir), Ok(file)) = (dir.canonicalize(), path.canonicalize()) else {
        return false;
    };
    let closed = std::fs::metadata(&dir).is_ok_and(|meta| meta.permissions().mode() & 0o007 == 0);
    closed && file.parent() == Some(dir.as_path())
}

impl KeyEncryptionKey {
    /// Reads the key from `path`. `setting` names where the path came from in errors
    /// (`storage.key_encryption_key_file`, `--new-key-file`). Refused: a file that is not
    /// a regular file, is accessible by group or others (unless it is one of the service's
    /// systemd credentials, which systemd keeps from everyone else), or holds fewer than
    /// 32 bytes.
    pub fn read(path: &Path, setting: &'static str) -> Result<KeyEncryptionKey, KeyError> {
        let problem = |problem: String| KeyError::KeyEncryptionKeyFile {
            setting,
            path: path.to_owned(),
            problem,
        };
        let make_one = format!(
            "make one with `(umask 077 && head -c 32 /dev/urandom > {})`",
            path.display()
        );
        let mut file = File::open(path)
            .map_err(|err| problem(format!("cannot be read ({err}); {make_one}")))?;
        let meta = file
            .metadata()
            .map_err(|err| problem(format!("cannot be inspected ({err})")))?;
        if !meta.is_file() {
            return Err(problem(format!("is not a regular file; {make_one}")));
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 && !is_service_credential(path) {
            return Err(problem(format!(
                "is accessible by group or others (mode {:04o}); the key-encryption key must be \
                 private to tokenmint's user: run `chmod 600 {}`",
                mode & 0o7777,
                path.display()
            )));
        }
        if meta.len() > MAX_KEY_ENCRYPTION_KEY_LEN {
            return Err(problem(format!(
                "holds {} bytes, more than a key-encryption key ever needs ({} KiB at most); \
                 is it the right file?",
                meta.len(),
                MAX_KEY_ENCRYPTION_KEY_LEN / 1024
            )));
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(
            usize::try_from(meta.len()).unwrap_or(0) + 1,
        ));
        (&mut file)
            .take(MAX_KEY_ENCRYPTION_KEY_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| problem(format!("cannot be read ({err})")))?;
        if bytes.len() < MIN_KEY_ENCRYPTION_KEY_LEN {
            return Err(problem(format!(
                "holds {} bytes; a key-encryption key is at least {MIN_KEY_ENCRYPTION_KEY_LEN} \
                 random bytes: {make_one}",
                bytes.len()
            )));
        }
        Self::from_bytes(&bytes)
    }

    /// Derives the key from the bytes of a key-encryption key file (at least 32).
    pub fn from_bytes(secret: &[u8]) -> Result<KeyEncryptionKey, KeyError> {
        if secret.len() < MIN_KEY_ENCRYPTION_KEY_LEN {
            return Err(KeyError::Crypto(
                "a key-encryption key needs at least 32 bytes",
            ));
        }
        let prk = Salt::new(HKDF_SHA256, SALT).extract(secret);
        let mut aead_key = Zeroizing::new([0u8; 32]);
        prk.expand(&[AEAD_INFO], Len(aead_key.len()))
            .and_then(|okm| okm.fill(&mut aead_key[..]))
            .map_err(|_| KeyError::Crypto("HKDF-SHA256 failed to derive the key-encryption key"))?;
        let mut id = [0u8; ID_LEN];
        prk.expand(&[ID_INFO], Len(ID_LEN))
            .and_then(|okm| okm.fill(&mut id))
            .map_err(|_| KeyError::Crypto("HKDF-SHA256 failed to derive the key id"))?;
        let aead = RandomizedNonceKey::new(&AES_256_GCM, &aead_key[..])
            .map_err(|_| KeyError::Crypto("AES-256-GCM refused the derived key"))?;
        Ok(KeyEncryptionKey {
            aead,
            id: hex::encode(id),
        })
    }

    /// The key's id: 16 hex digits derived from the key, safe to store and print.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext` (consumed: it is overwritten by the ciphertext) under a fresh
    /// random nonce, authenticating `aad` with it.
    pub fn seal(&self, aad: &[u8], mut plaintext: Zeroizing<Vec<u8>>) -> Result<Sealed, KeyError> {
        let nonce = self
            .aead
            .seal_in_place_append_tag(Aad::from(aad), &mut *plaintext)
            .map_err(|_| KeyError::Crypto("AES-256-GCM failed to seal"))?;
        Ok(Sealed {
            nonce: nonce.as_ref().to_vec(),
            // Encrypted in place: what the buffer holds now is no secret.
            ciphertext: std::mem::take(&mut *plaintext),
            key_id: self.id.clone(),
        })
    }

    /// Decrypts `sealed`, checking that this key sealed it and that `aad` is what was
    /// authenticated with it.
    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.key_id != self.id {
            return Err(OpenError::OtherKey);
        }
        let nonce = <[u8; NONCE_LEN]>::try_from(sealed.nonce.as_slice())
            .map_err(|_| OpenError::Malformed)?;
        let mut buffer = Zeroizing::new(sealed.ciphertext.clone());
        let len = self
            .aead
            .open_in_place(Nonce::from(&nonce), Aad::from(aad), &mut buffer[..])
            .map_err(|_| OpenError::Unauthentic)?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }
}

/// Why [`KeyEncryptionKey::open`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed with another key (by its key id).
    OtherKey,
    /// The nonce is not 96 bits.
    Malformed,
    /// Ciphertext, tag, nonce or the authenticated data were changed.
    Unauthentic,
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt as _;

    use super::*;

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes(&[byte; 32]).expect("key")
    }

    fn secret(text: &str) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(text.as_bytes().to_vec())
    }

    #[test]
    fn sealed_data_opens_with_the_same_key_and_aad() {
        let key = kek(7);
        let sealed = key.seal(b"aad", secret("the plaintext")).expect("seal");
        assert_eq!(sealed.nonce.len(), 12);
        assert_eq!(sealed.ciphertext.len(), "the plaintext".len() + 16);
        assert!(!sealed.ciphertext.windows(5).any(|w| w == b"plain"));
        assert_eq!(sealed.key_id, key.id());
        let opened = key.open(b"aad", &sealed).expect("open");
        assert_eq!(&opened[..], b"the plaintext");
        // The same file gives the same key: another process opens it too.
        assert_eq!(
            &kek(7).open(b"aad", &sealed).expect("open")[..],
            b"the plaintext"
        );
    }

    #[test]
    fn every_seal_has_a_fresh_nonce() {
        let key = kek(7);
        let a = key.seal(b"aad", secret("same")).expect("seal");
        let b = key.seal(b"aad", secret("same")).expect("seal");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused() {
        let key = kek(7);
        let sealed = key.seal(b"aad", secret("the plaintext")).expect("seal");
        for index in 0..sealed.ciphertext.len() {
            let mut changed = sealed.clone();
            changed.ciphertext[index] ^= 0x01;
            assert_eq!(
                key.open(b"aad", &changed).expect_err("changed ciphertext"),
                OpenError::Unauthentic
            );
        }
        let mut changed = sealed.clone();
        changed.nonce[0] ^= 0x01;
        assert_eq!(
            key.open(b"aad", &changed).expect_err("changed nonce"),
            OpenError::Unauthentic
        );
        let mut short = sealed;
        short.nonce.pop();
        assert_eq!(
            key.open(b"aad", &short).expect_err("short nonce"),
            OpenError::Malformed
        );
    }

    #[test]
    fn other_authenticated_data_is_refused() {
        let key = kek(7);
        let sealed = key.seal(b"generation 4", secret("keys")).expect("seal");
        assert_eq!(
            key.open(b"generation 5", &sealed).expect_err("other aad"),
            OpenError::Unauthentic
        );
    }

    #[test]
    fn another_key_is_named_by_its_id_before_any_decryption() {
        let (a, b) = (kek(7), kek(8));
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().len(), 16);
        assert!(a.id().bytes().all(|c| c.is_ascii_hexdigit()));
        let sealed = a.seal(b"aad", secret("keys")).expect("seal");
        assert_eq!(
            b.open(b"aad", &sealed).expect_err("other key"),
            OpenError::OtherKey
        );
        // Even when the stored id is forged to match, the other key cannot open it.
        let forged = Sealed {
            key_id: b.id().to_owned(),
            ..sealed
        };
        assert_eq!(
            b.open(b"aad", &forged).expect_err("forged id"),
            OpenError::Unauthentic
        );
    }

    #[test]
    fn debug_output_shows_only_the_id() {
        let key = kek(7);
        let debug = format!("{key:?}");
        assert_eq!(
            debug,
            format!("KeyEncryptionKey {{ id: {:?}, .. }}", key.id())
        );
    }

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .expect("create");
        file.write_all(bytes).expect("write");
        path
    }

    #[test]
    fn only_private_files_of_at_least_32_bytes_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = write(dir.path(), "good", &[1; 32], 0o600);
        let key = KeyEncryptionKey::read(&good, "storage.key_encryption_key_file").expect("read");
        assert_eq!(key.id(), kek(1).id());

        let short = write(dir.path(), "short", &[1; 31], 0o600);
        let err =
            KeyEncryptionKey::read(&short, "storage.key_encryption_key_file").expect_err("short");
        assert_eq!(
            err.to_string(),
            format!(
                "storage.key_encryption_key_file {p}: holds 31 bytes; a key-encryption key is at \
                 least 32 random bytes: make one with `(umask 077 && head -c 32 /dev/urandom > {p})`",
                p = short.display()
            )
        );

        let shared = write(dir.path(), "shared", &[1; 32], 0o640);
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = KeyEncryptionKey::read(&shared, "--new-key-file").expect_err("shared");
        assert_eq!(
            err.to_string(),
            format!(
                "--new-key-file {p}: is accessible by group or others (mode 0640); the \
                 key-encryption key must be private to tokenmint's user: run `chmod 600 {p}`",
                p = shared.display()
            )
        );

        let err = KeyEncryptionKey::read(dir.path(), "--new-key-file").expect_err("a directory");
        assert!(err.to_string().contains("is not a regular file"), "{err}");

        let missing = dir.path().join("missing");
        let err = KeyEncryptionKey::read(&missing, "storage.key_encryption_key_file")
            .expect_err("missing");
        assert!(
            err.to_string().contains(
                ": cannot be read (No such file or directory (os error 2)); make one with"
            ),
            "{err}"
        );
    }

    fn chmod(path: &std::path::Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A file systemd hands the service (`LoadCredential=`) lives directly in the
    /// service's credentials directory, which is closed to others; nothing else counts.
    #[test]
    fn only_files_in_a_closed_credentials_directory_are_service_credentials() {
        let root = tempfile::tempdir().expect("tempdir");
        let credentials = root.path().join("credentials");
        std::fs::create_dir(&credentials).expect("dir");
        let kek = credentials.join("kek");
        std::fs::write(&kek, [7u8; 32]).expect("kek");
        chmod(&kek, 0o440);
        chmod(&credentials, 0o550);
        assert!(credentials_dir_holds(Some(&credentials), &kek));
        // Elsewhere, or without a credentials directory, the mode decides as before.
        let outside = root.path().join("kek");
        std::fs::write(&outside, [7u8; 32]).expect("kek");
        assert!(!credentials_dir_holds(Some(&credentials), &outside));
        assert!(!credentials_dir_holds(None, &kek));
        // Deeper than directly inside: not a credential systemd made.
        let nested = credentials.join("nested");
        chmod(&credentials, 0o750);
        std::fs::create_dir(&nested).expect("nested");
        std::fs::write(nested.join("kek"), [7u8; 32]).expect("kek");
        assert!(!credentials_dir_holds(
            Some(&credentials),
            &nested.join("kek")
        ));
        // A directory others can enter is no credentials directory.
        chmod(&credentials, 0o755);
        assert!(!credentials_dir_holds(Some(&credentials), &kek));
    }
}
