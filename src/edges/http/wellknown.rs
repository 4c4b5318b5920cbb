//! Discovery and JWKS of tokenmint as an issuer of local tokens. Both documents are
//! serialised once (the JWKS again only when the key ring changes), not per request.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use time::OffsetDateTime;

use super::AppState;
use super::token::GRANT_TYPE_TOKEN_EXCHANGE;
use crate::adapters::mint::LocalSigner;

/// What tokenmint publishes about itself.
pub struct Published {
    openid_configuration: Bytes,
    signer: Arc<LocalSigner>,
}

impl Published {
    pub fn new(public_url: &str, signer: Arc<LocalSigner>) -> Self {
        let document = json!({
            "issuer": public_url,
            "jwks_uri": format!("{public_url}/.well-known/jwks.json"),
            "token_endpoint": format!("{public_url}/token"),
            "grant_types_supported": [GRANT_TYPE_TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": ["none"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
        });
        Self {
            openid_configuration: Bytes::from(document.to_string()),
            signer,
        }
    }

    /// The signer whose keys the JWKS publishes.
    pub fn signer(&self) -> &Arc<LocalSigner> {
        &self.signer
    }
}

fn json_document(body: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

pub async fn openid_configuration(State(app): State<AppState>) -> Response {
    json_document(app.published.openid_configuration.clone())
}

pub async fn jwks(State(app): State<AppState>) -> Response {
    json_document(app.published.signer.jwks_json(OffsetDateTime::now_utc()))
}
