//! Reading an HTTP response body with a size cap, for every outbound call (issuer keys,
//! token endpoints): `http_body_util::Limited` stops reading as soon as the cap is passed.

use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

/// Why a capped body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body is larger than the cap (announced or as it arrived).
    TooLarge,
    /// The connection failed or timed out while reading.
    Network(reqwest::Error),
    /// Anything else the body stream reported.
    Other(String),
}

/// The whole body of `response`, at most `limit` bytes.
pub async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    if response
        .content_length()
        .is_some_and(|declared| declared > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(reqwest::Body::from(response), limit)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(if err.is::<LengthLimitError>() {
            BodyError::TooLarge
        } else {
            match err.downcast::<reqwest::Error>() {
                Ok(network) => BodyError::Network(*network),
                Err(other) => BodyError::Other(other.to_string()),
            }
        }),
    }
}
