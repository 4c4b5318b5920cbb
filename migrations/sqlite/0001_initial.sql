-- tokenmint's embedded store: replay records of CI tokens and the audit trail.
-- Times are Unix microseconds (UTC). Hashes are lower-case hex SHA-256.

-- One audit chain per replica. A SQLite file has one replica, named in `local_replica`.
CREATE TABLE replicas (
    replica_id  TEXT PRIMARY KEY NOT NULL,
    created_us  INTEGER NOT NULL,
    -- The newest record of the chain (seq 0 and the anchor hash while it is empty).
    last_seq    INTEGER NOT NULL,
    last_hash   TEXT NOT NULL,
    -- Records up to anchor_seq were purged by storage.audit_retention; anchor_hash is the
    -- hash of record anchor_seq, so the chain stays verifiable from there.
    anchor_seq  INTEGER NOT NULL,
    anchor_hash TEXT NOT NULL
) STRICT;

CREATE TABLE local_replica (
    singleton  INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    replica_id TEXT NOT NULL REFERENCES replicas (replica_id)
) STRICT;

-- Append-only. `record` is the record as JSON, exactly as hashed; the other columns are
-- copies for queries, checked against it by `audit verify`.
CREATE TABLE audit_records (
    replica_id   TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL,
    time_us      INTEGER NOT NULL,
    request_id   TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    reason       TEXT NOT NULL,
    repository   TEXT,
    policy       TEXT,
    target       TEXT,
    token_sha256 TEXT,
    token_jti    TEXT,
    record       TEXT NOT NULL,
    PRIMARY KEY (replica_id, seq)
) STRICT;
-- Only the time is indexed: an index on a random value (request id, token hash, jti)
-- dirties a random page per record, which the single writer pays for on every commit.
-- `audit show` scans instead; every record of a request carries the request's time.
CREATE INDEX audit_records_by_time ON audit_records (time_us);

-- One row per CI token seen: reserved (used = 0, holder set) or used (used = 1).
CREATE TABLE replay (
    key_hash      TEXT PRIMARY KEY NOT NULL,
    used          INTEGER NOT NULL,
    holder        TEXT,
    lease_until_us INTEGER,
    keep_until_us INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX replay_by_expiry ON replay (keep_until_us);
