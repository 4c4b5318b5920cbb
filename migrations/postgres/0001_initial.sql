-- tokenmint's shared store: replay records of CI tokens and the audit trail.
-- Times are Unix microseconds (UTC). Hashes are lower-case hex SHA-256.

-- One audit chain per replica (each running process registers its own).
CREATE TABLE replicas (
    replica_id  TEXT PRIMARY KEY,
    created_us  BIGINT NOT NULL,
    host        TEXT NOT NULL,
    -- The newest record of the chain (seq 0 and the anchor hash while it is empty).
    last_seq    BIGINT NOT NULL,
    last_hash   TEXT NOT NULL,
    -- Records up to anchor_seq were purged by storage.audit_retention; anchor_hash is the
    -- hash of record anchor_seq, so the chain stays verifiable from there.
    anchor_seq  BIGINT NOT NULL,
    anchor_hash TEXT NOT NULL
);

-- Append-only. `record` is the record as JSON text, exactly as hashed; the other columns
-- are copies for queries, checked against it by `audit verify`.
CREATE TABLE audit_records (
    replica_id   TEXT NOT NULL REFERENCES replicas (replica_id),
    seq          BIGINT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL,
    time_us      BIGINT NOT NULL,
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
);
CREATE INDEX audit_records_by_time ON audit_records (time_us);
CREATE INDEX audit_records_by_request ON audit_records (request_id);
CREATE INDEX audit_records_by_token ON audit_records (token_sha256) WHERE token_sha256 IS NOT NULL;
CREATE INDEX audit_records_by_jti ON audit_records (token_jti) WHERE token_jti IS NOT NULL;

-- One row per CI token seen: reserved (used = 0, holder set) or used (1). The primary key
-- is what lets two replicas racing with one CI token mint at most once.
CREATE TABLE replay (
    key_hash       TEXT PRIMARY KEY,
    used           BIGINT NOT NULL,     -- 0 reserved, 1 used
    holder         TEXT,
    lease_until_us BIGINT,
    keep_until_us  BIGINT NOT NULL
);
CREATE INDEX replay_by_expiry ON replay (keep_until_us);
