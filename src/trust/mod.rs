//! The trust core: verification, policies, the audit record and the exchange. It knows
//! nothing of HTTP, databases or sockets; adapters reach it through the traits it defines.

pub mod audit;
pub mod exchange;
pub mod hash;
pub mod json;
pub mod mint;
pub mod outcome;
pub mod platform;
pub mod policy;
pub mod store;
pub mod verify;
