//! tokenmint: exchange CI OIDC tokens for short-lived access tokens under audited trust policies.
//!
//! Three layers, each depending only on the ones below it:
//!
//! - [`edges`]: how people and programs reach tokenmint: the command line, the HTTP
//!   routers, dev mode, `doctor`, logs and metrics, and the assembly of a running service.
//! - [`adapters`]: the outside world behind the trust core's traits: issuer key sets
//!   fetched over HTTP, our own signing keys on disk, minters that sign or call a tenant,
//!   the replay and audit store.
//! - [`trust`]: the trust core: what is decided and why. CI platforms' rules, token
//!   verification, trust policies, the audit record, and the exchange itself. No HTTP
//!   framework, no database, no sockets.
//!
//! [`config`] is the typed configuration every layer reads.

pub mod adapters;
pub mod config;
pub mod edges;
pub mod trust;
