//! Implementations of the trust core's [`Store`](crate::trust::store::Store): replay
//! records of CI tokens and the audit trail.
//!
//! This release ships [`MemoryStore`]; the persistent stores (SQLite, PostgreSQL)
//! implement the same trait, so the exchange never knows which one it talks to.

mod memory;

pub use memory::{MAX_AUDIT_RECORDS, MemoryStore};
