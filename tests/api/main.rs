//! The integration tests: one binary driving the real router against fake CI issuers.

mod architecture;
mod audit_cli;
mod commands;
mod config;
mod correlate;
mod dev;
mod doctor;
mod durable;
mod errors;
mod exchange;
mod exchange_cli;
mod fake_auth0;
mod helpers;
mod issuer_keys;
mod log_colour;
mod operations;
mod outbound;
mod policies;
mod reload;
mod remote;
mod remote_config;
mod replay;
mod shared_keys;
mod store_faults;
mod stores;
mod verification;
