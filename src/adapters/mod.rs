//! Adapters: the outside world behind the trust core's traits.

pub mod bounded_body;
pub mod issuer_keys;
pub mod mint;
pub mod signing;
pub mod store;
