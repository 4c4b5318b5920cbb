//! Implementations of the trust core's [`Store`](crate::trust::store::Store): replay
//! records of CI tokens and the audit trail.
//!
//! [`MemoryStore`] for dev mode and tests; [`SqlStore`] (SQLite or PostgreSQL) for
//! everything else. The exchange never knows which one it talks to. [`chain`] is the audit
//! trail's hash chain, shared by the durable stores and `audit verify`.

pub mod chain;
mod memory;
pub mod sql;

pub use memory::{MAX_AUDIT_RECORDS, MemoryStore};
pub use sql::{
    Backend, CommitObserver, Location, NoCommitObserver, SqlStore, connect_postgres,
    spawn_maintenance,
};
