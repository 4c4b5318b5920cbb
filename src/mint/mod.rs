//! Minting: turning a granted exchange into an access token for its target.

pub mod local;

pub use local::LocalSigner;
