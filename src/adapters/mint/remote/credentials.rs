//! tokenmint's client credentials at a remote token endpoint: a client secret, or an
//! RSA key that signs a fresh RFC 7523 client assertion for every HTTP attempt.
//!
//! Security invariants kept here:
//! - secrets and private keys are read once at start, live in types whose `Debug`
//!   redacts them, and never reach an error message;
//! - every assertion has its own `jti` and lives 60 s, so a captured one is useless
//!   for long and never valid twice.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{
    KeyPair as _, RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PSS_SHA256, RsaEncoding,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::adapters::signing::{jwk_thumbprint, jws};
use crate::config::{AssertionAlgorithm, ClientAuthConfig, SecretMethod, SecretSource};

/// How long a client assertion is valid (Auth0 allows at most 5 minutes, recommends 1).
pub const ASSERTION_LIFETIME_SECS: i64 = 60;
/// The largest client assertion Auth0 accepts.
pub const MAX_ASSERTION_BYTES: usize = 2048;
/// `client_assertion_type` of RFC 7523.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// RSA modulus sizes accepted for assertion keys, in bits.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;

/// How tokenmint proves who it is to the token endpoint.
pub enum ClientCredentials {
    Assertion(AssertionSigner),
    Secret {
        secret: SecretString,
        method: SecretMethod,
    },
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCredentials::Assertion(signer) => {
                f.debug_tuple("Assertion").field(signer).finish()
            }
            ClientCredentials::Secret { method, .. } => f
                .debug_struct("Secret")
                .field("secret", &"[REDACTED]")
                .field("method", method)
                .finish(),
        }
    }
}

impl ClientCredentials {
    /// Reads the secret or key the configuration names. Errors name the configuration
    /// key and the file or variable, never any of the secret.
    pub fn load(client_id: &str, config: &ClientAuthConfig) -> Result<Self, String> {
        match config {
            ClientAuthConfig::PrivateKeyJwt {
                key,
                algorithm,
                assertion_audience,
            } => {
                let pem = read_secret(key)?;
                let signer = AssertionSigner::from_pem(
                    pem.expose_secret(),
                    *algorithm,
                    client_id,
                    assertion_audience,
                )
                .map_err(|reason| format!("{}: {reason}", describe_source(key)))?;
                Ok(ClientCredentials::Assertion(signer))
            }
            ClientAuthConfig::ClientSecret { secret, method } => {
                let value = read_secret(secret)?;
                let trimmed = value.expose_secret().trim_end_matches(['\r', '\n']);
                if trimmed.is_empty() {
                    return Err(format!(
                        "{}: the client secret is empty",
                        describe_source(secret)
                    ));
                }
                if trimmed.chars().any(char::is_control) {
                    return Err(format!(
                        "{}: the client secret contains control characters",
                        describe_source(secret)
                    ));
                }
                Ok(ClientCredentials::Secret {
                    secret: SecretString::from(trimmed.to_owned()),
                    method: *method,
                })
            }
        }
    }

    /// What an operator needs to match the tenant's side: the method, and for
    /// private_key_jwt the algorithm and `kid` (never any secret).
    pub fn describe(&self) -> String {
        match self {
            ClientCredentials::Assertion(signer) => format!(
                "private_key_jwt {}, kid {}",
                signer.algorithm().as_str(),
                signer.kid()
            ),
            other => other.method_name().to_owned(),
        }
    }

    /// The authentication method's name, as OAuth2 server metadata spells it.
    pub fn method_name(&self) -> &'static str {
        match self {
            ClientCredentials::Assertion(_) => "private_key_jwt",
            ClientCredentials::Secret {
                method: SecretMethod::Post,
                ..
            } => "client_secret_post",
            ClientCredentials::Secret {
                method: SecretMethod::Basic,
                ..
            } => "client_secret_basic",
        }
    }
}

fn describe_source(source: &SecretSource) -> String {
    match source {
        SecretSource::File { key, path } => format!("{key} ({})", path.display()),
        SecretSource::Env { key, name } => format!("{key} (${name})"),
    }
}

/// Reads a secret file or variable into a zeroized-on-drop string.
fn read_secret(source: &SecretSource) -> Result<SecretString, String> {
    match source {
        SecretSource::File { key, path } => {
            crate::config::warn_if_readable_by_others(path);
            let bytes = Zeroizing::new(
                std::fs::read(path)
                    .map_err(|err| format!("{key}: cannot read {}: {err}", path.display()))?,
            );
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| format!("{key}: {} is not UTF-8 text", path.display()))?;
            Ok(SecretString::from(text.to_owned()))
        }
        SecretSource::Env { key, name } => match std::env::var(name) {
            Ok(value) => Ok(SecretString::from(value)),
            Err(std::env::VarError::NotPresent) => {
                Err(format!("{key}: environment variable {name} is not set"))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("{key}: environment variable {name} is not UTF-8"))
            }
        },
    }
}

/// An RSA key pair, parsed once, that signs client assertions for one client.
pub struct AssertionSigner {
    key_pair: rsa::KeyPair,
    algorithm: AssertionAlgorithm,
    kid: String,
    bits: usize,
    /// `base64url(header)`: the same for every assertion.
    encoded_header: String,
    client_id: String,
    audience: String,
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// Parses an unencrypted RSA key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`)
    /// of 2048 to 4096 bits. Errors never include any of the input.
    pub fn from_pem(
        pem_text: &str,
        algorithm: AssertionAlgorithm,
        client_id: &str,
        audience: &str,
    ) -> Result<Self, String> {
        let block = pem::parse(pem_text).map_err(|_| {
            "not a PEM document (expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)".to_owned()
        })?;
        let tag = block.tag().to_owned();
        let der = Zeroizing::new(block.into_contents());
        let rejected = |format: &str, err: aws_lc_rs::error::KeyRejected| match err
            .to_string()
            .as_str()
        {
            "TooSmall" | "TooLarge" => format!(
                "the RSA key's size is outside {MIN_RSA_BITS} to {MAX_RSA_BITS} bits, which private_key_jwt needs"
            ),
            other => format!(
                "the {format} document is not a usable RSA private key ({other}); private_key_jwt needs an RSA key"
            ),
        };
        let key_pair = match tag.as_str() {
            "PRIVATE KEY" => {
                rsa::KeyPair::from_pkcs8(&der).map_err(|err| rejected("PKCS#8", err))?
            }
            "RSA PRIVATE KEY" => {
                rsa::KeyPair::from_der(&der).map_err(|err| rejected("PKCS#1", err))?
            }
            other if other.contains("ENCRYPTED") => {
                return Err("encrypted keys are not supported; decrypt it with `openssl pkcs8 -topk8 -nocrypt`".to_owned());
            }
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(format!(
                    "expected a PEM block labelled \"PRIVATE KEY\" or \"RSA PRIVATE KEY\", found \"{shown}\""
                ));
            }
        };
        let bits = key_pair.public_modulus_len() * 8;
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(format!(
                "the RSA key has {bits} bits, outside {MIN_RSA_BITS} to {MAX_RSA_BITS} bits, which private_key_jwt needs"
            ));
        }
        let public = rsa::PublicKeyComponents::<Vec<u8>>::from(key_pair.public_key());
        let n = URL_SAFE_NO_PAD.encode(&public.n);
        let e = URL_SAFE_NO_PAD.encode(&public.e);
        let kid = jwk_thumbprint(&[("e", &e), ("kty", "RSA"), ("n", &n)]);
        let header = json!({"alg": algorithm.as_str(), "typ": "JWT", "kid": kid});
        let signer = Self {
            key_pair,
            algorithm,
            kid,
            bits,
            encoded_header: jws::encode_header(&header),
            client_id: client_id.to_owned(),
            audience: audience.to_owned(),
        };
        // Catch an assertion the tenant would refuse (too long) at start, not per request.
        signer.assertion(OffsetDateTime::now_utc())?;
        Ok(signer)
    }

    /// The RFC 7638 thumbprint of the public key: the assertion's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> AssertionAlgorithm {
        self.algorithm
    }

    /// The public key as a JWK, for registering it with the tenant.
    pub fn public_jwk(&self) -> Value {
        let public = rsa::PublicKeyComponents::<Vec<u8>>::from(self.key_pair.public_key());
        json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
            "kid": self.kid,
            "alg": self.algorithm.as_str(),
            "use": "sig",
        })
    }

    /// A new signed assertion: `iss = sub = client_id`, `aud`, a fresh `jti`, `iat` now
    /// and `exp` [`ASSERTION_LIFETIME_SECS`] later.
    pub fn assertion(&self, now: OffsetDateTime) -> Result<SecretString, String> {
        let iat = now.unix_timestamp();
        let claims = json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.audience,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME_SECS,
        });
        let encoding: &'static dyn RsaEncoding = match self.algorithm {
            AssertionAlgorithm::RS256 => &RSA_PKCS1_SHA256,
            AssertionAlgorithm::RS384 => &RSA_PKCS1_SHA384,
            AssertionAlgorithm::PS256 => &RSA_PSS_SHA256,
        };
        let token = jws::compact(&self.encoded_header, &claims, |input| {
            let mut signature = vec![0; self.key_pair.public_modulus_len()];
            self.key_pair
                .sign(encoding, &SystemRandom::new(), input, &mut signature)
                .map(|()| signature)
                .map_err(|_| {
                    format!(
                        "signing the client assertion with {} failed",
                        self.algorithm.as_str()
                    )
                })
        })?;
        if token.len() > MAX_ASSERTION_BYTES {
            return Err(format!(
                "the client assertion would be {} bytes, over the {MAX_ASSERTION_BYTES}-byte limit \
                 (a shorter client_id or base_url, or a smaller key, fixes it)",
                token.len()
            ));
        }
        Ok(SecretString::from(token))
    }
}
