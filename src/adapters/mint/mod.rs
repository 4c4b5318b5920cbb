//! The trust core's [`Minter`](crate::trust::mint::Minter), one per target kind:
//! [`LocalMinter`] signs tokens itself, [`RemoteMinter`] obtains them from an Auth0
//! tenant or OAuth2 server.

pub mod local;
pub mod remote;

pub use local::{KeyReload, LocalMinter, LocalSigner};
pub use remote::RemoteMinter;
