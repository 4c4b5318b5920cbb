//! Compact JWS serialisation (RFC 7515 §7.1): the one builder behind every JWT tokenmint
//! signs (local access tokens, dev mode's CI tokens, client assertions to tenants).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// `base64url(header)`, for a header that is the same for every token of a key.
pub fn encode_header(header: &Value) -> String {
    URL_SAFE_NO_PAD.encode(header.to_string())
}

/// `encoded_header.base64url(claims).base64url(signature)`, where `sign` signs the
/// first two parts joined by a dot.
pub fn compact<E>(
    encoded_header: &str,
    claims: &Value,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<String, E> {
    let mut token = format!(
        "{encoded_header}.{}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_header_claims_and_signature_the_way_rfc_7515_says() {
        let header = encode_header(&serde_json::json!({"alg": "none"}));
        let token = compact(&header, &serde_json::json!({"a": 1}), |input| {
            assert_eq!(input, b"eyJhbGciOiJub25lIn0.eyJhIjoxfQ");
            Ok::<_, ()>(b"sig".to_vec())
        })
        .expect("signs");
        assert_eq!(token, "eyJhbGciOiJub25lIn0.eyJhIjoxfQ.c2ln");
    }
}
