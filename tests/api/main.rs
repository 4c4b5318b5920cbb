//! The integration tests: one binary driving the real router against fake CI issuers.

mod commands;
mod config;
mod dev;
mod errors;
mod exchange;
mod helpers;
mod issuer_keys;
mod operations;
mod policies;
mod reload;
mod replay;
mod verification;
