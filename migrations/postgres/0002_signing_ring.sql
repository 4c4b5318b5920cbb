-- The signing keys of local targets, shared by every replica (storage.database_url).
-- One row: the ring's manifest (kids, roles, times: no secrets) and every private key,
-- PKCS#8 PEM in manifest order, sealed with AES-256-GCM under a key derived from
-- storage.key_encryption_key_file. The database never holds a private key in clear.
CREATE TABLE signing_ring (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    -- Bumped by every change; a change is saved only where it is still the one read.
    generation BIGINT NOT NULL,
    -- JSON, exactly as authenticated with `sealed`.
    manifest   TEXT NOT NULL,
    -- Which key-encryption key sealed `sealed`: 16 hex digits derived from it (HKDF), not
    -- the key.
    kek_id     TEXT NOT NULL,
    -- AES-256-GCM: the 96-bit nonce (fresh for every seal) and the ciphertext with its
    -- tag; the authenticated data is the generation and the manifest.
    nonce      BYTEA NOT NULL,
    sealed     BYTEA NOT NULL,
    updated_us BIGINT NOT NULL
);
