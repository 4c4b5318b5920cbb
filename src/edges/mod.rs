//! Edges: how people and programs reach tokenmint, and the assembly of a running service.

pub mod audit_commands;
pub mod cli;
pub mod correlate;
pub mod dev;
pub mod doctor;
pub mod exchange_client;
pub mod http;
pub mod metrics;
pub mod policy_commands;
pub mod service;
pub mod telemetry;
pub mod terminal_text;
