//! tokenmint: exchange CI OIDC tokens for short-lived access tokens under audited trust policies.
//!
//! Layout, from the outside in: `cli` (commands) → `service` (assembly) → `http` (routes,
//! request parsing, error mapping) → `exchange` (the trust core's orchestration) →
//! `verify` (CI tokens; `verify::unverified` is the only unverified decoding),
//! `keystore` (issuer JWKS), `policy` (trust policies), `mint` + `keys` (local tokens),
//! `store` (replay and audit), `audit` (records).

pub mod audit;
pub mod claims;
pub mod cli;
pub mod config;
pub mod dev;
pub mod doctor;
pub mod exchange;
pub mod http;
pub mod json;
pub mod keys;
pub mod keystore;
pub mod metrics;
pub mod mint;
pub mod policy;
pub mod policy_reload;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod verify;
