//! The replay setting of an issuer. Issuer kinds and their inference are platform rules:
//! see [`crate::trust::platform`].

use serde::Deserialize;

/// Whether a CI token buys one access token or any number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayMode {
    Reject,
    Allow,
}
