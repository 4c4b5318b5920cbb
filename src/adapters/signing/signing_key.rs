//! One private signing key: parsed once into an aws-lc-rs key pair, with its RFC 7638
//! `kid`, its public JWK and the compact-JWS signing of RFC 9068 access tokens.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::zeroize::{Zeroize as _, Zeroizing};
use secrecy::{ExposeSecret as _, SecretSlice, SecretString};
use serde_json::{Map, Value};

use super::{KeyError, SigningAlgorithm, jws};

/// The PEM label of an unencrypted PKCS#8 private key.
const PKCS8_LABEL: &str = "PRIVATE KEY";

/// Length of an uncompressed SEC1 P-256 point: `0x04 || x || y`.
const P256_UNCOMPRESSED_LEN: usize = 65;

/// The parsed key pair; never re-parsed after construction.
enum KeyPair {
    Es256(EcdsaKeyPair),
    Rs256(rsa::KeyPair),
    EdDsa(Ed25519KeyPair),
}

/// A private key tokenmint signs access tokens with.
///
/// Its `Debug` output shows only `kid` and `alg`; the private key is reachable only
/// through [`SigningKey::to_pkcs8_pem`], which returns a [`SecretString`].
pub struct SigningKey {
    alg: SigningAlgorithm,
    kid: String,
    public_jwk: Value,
    /// `base64url(header)`, the first part of every token this key signs.
    encoded_header: String,
    key_pair: KeyPair,
    /// The PKCS#8 v1 DER the key pair came from (or was serialized to once, when
    /// generated), kept so that saving the key cannot fail; zeroized on drop.
    pkcs8_der: SecretSlice<u8>,
}

impl SigningKey {
    /// Generates a fresh key (P-256, 2048-bit RSA or Ed25519).
    pub fn generate(alg: SigningAlgorithm) -> Result<Self, KeyError> {
        let failed = |_| KeyError::Generate(alg);
        let (key_pair, der) = match alg {
            SigningAlgorithm::ES256 => {
                let pair =
                    EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?;
                let der = pair.to_pkcs8v1().map_err(failed)?;
                let der = Zeroizing::new(der.as_ref().to_vec());
                (KeyPair::Es256(pair), der)
            }
            SigningAlgorithm::RS256 => {
                let pair = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).map_err(failed)?;
                let der: Pkcs8V1Der<'static> = pair.as_der().map_err(failed)?;
                let der = Zeroizing::new(der.as_ref().to_vec());
                (KeyPair::Rs256(pair), der)
            }
            SigningAlgorithm::EdDSA => {
                let pair = Ed25519KeyPair::generate().map_err(failed)?;
                // v1 (no embedded public key) is what `openssl genpkey` writes.
                let der = pair.to_pkcs8v1().map_err(failed)?;
                let der = Zeroizing::new(der.as_ref().to_vec());
                (KeyPair::EdDsa(pair), der)
            }
        };
        Self::from_key_pair(alg, key_pair, der)
    }

    /// Parses an unencrypted PKCS#8 key (PEM label `PRIVATE KEY`) for `alg`.
    ///
    /// Errors say what is wrong (label, encoding, key type, curve) and never include
    /// any of the input.
    pub fn from_pkcs8_pem(alg: SigningAlgorithm, pem: &str) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::InvalidKey { alg, reason };
        let block = pem::parse(pem).map_err(|err| invalid(describe_pem_error(&err)))?;
        if block.tag() != PKCS8_LABEL {
            let found = block.tag().chars().take(40).collect::<String>();
            let hint = if found.starts_with("ENCRYPTED") {
                "; encrypted keys are not supported, decrypt it with `openssl pkcs8 -nocrypt`"
            } else {
                "; convert it with `openssl pkcs8 -topk8 -nocrypt`"
            };
            let mut contents = block.into_contents();
            contents.zeroize();
            return Err(invalid(format!(
                "expected a PEM block labelled \"{PKCS8_LABEL}\" (unencrypted PKCS#8), \
                 found \"{found}\"{hint}"
            )));
        }
        let der = Zeroizing::new(block.into_contents());
        let rejected = |err: aws_lc_rs::error::KeyRejected| {
            invalid(format!(
                "the PKCS#8 document is not a usable {alg} key ({err})"
            ))
        };
        let key_pair = match alg {
            SigningAlgorithm::ES256 => KeyPair::Es256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(rejected)?,
            ),
            SigningAlgorithm::RS256 => {
                KeyPair::Rs256(rsa::KeyPair::from_pkcs8(&der).map_err(rejected)?)
            }
            SigningAlgorithm::EdDSA => {
                KeyPair::EdDsa(Ed25519KeyPair::from_pkcs8(&der).map_err(rejected)?)
            }
        };
        Self::from_key_pair(alg, key_pair, der)
    }

    fn from_key_pair(
        alg: SigningAlgorithm,
        key_pair: KeyPair,
        pkcs8_der: Zeroizing<Vec<u8>>,
    ) -> Result<Self, KeyError> {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        // The members RFC 7638 requires for the thumbprint, then the whole JWK.
        let required: Vec<(&str, String)> = match &key_pair {
            KeyPair::Es256(pair) => {
                let point = pair.public_key().as_ref();
                if point.len() != P256_UNCOMPRESSED_LEN || point[0] != 0x04 {
                    return Err(KeyError::InvalidKey {
                        alg,
                        reason: "the public key is not an uncompressed P-256 point".to_owned(),
                    });
                }
                let (x, y) = point[1..].split_at(32);
                vec![
                    ("crv", "P-256".to_owned()),
                    ("kty", "EC".to_owned()),
                    ("x", b64(x)),
                    ("y", b64(y)),
                ]
            }
            KeyPair::Rs256(pair) => {
                let public = rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                vec![
                    ("e", b64(&public.e)),
                    ("kty", "RSA".to_owned()),
                    ("n", b64(&public.n)),
                ]
            }
            KeyPair::EdDsa(pair) => vec![
                ("crv", "Ed25519".to_owned()),
                ("kty", "OKP".to_owned()),
                ("x", b64(pair.public_key().as_ref())),
            ],
        };
        let members: Vec<(&str, &str)> = required
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let kid = jwk_thumbprint(&members);

        let mut jwk = Map::new();
        // `kty` first, as JWKS documents conventionally list it.
        for name in ["kty", "crv", "n", "e", "x", "y"] {
            if let Some((_, value)) = required.iter().find(|(member, _)| *member == name) {
                jwk.insert(name.to_owned(), Value::String(value.clone()));
            }
        }
        jwk.insert("kid".to_owned(), Value::String(kid.clone()));
        jwk.insert("alg".to_owned(), Value::String(alg.to_string()));
        jwk.insert("use".to_owned(), Value::String("sig".to_owned()));

        let header = serde_json::json!({"alg": alg.as_str(), "typ": "at+jwt", "kid": kid});
        Ok(Self {
            alg,
            public_jwk: Value::Object(jwk),
            encoded_header: jws::encode_header(&header),
            kid,
            key_pair,
            pkcs8_der: SecretSlice::from(pkcs8_der.to_vec()),
        })
    }

    /// The key as an unencrypted PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pkcs8_pem(&self) -> SecretString {
        let block = pem::Pem::new(PKCS8_LABEL, self.pkcs8_der.expose_secret().to_vec());
        let encoded = pem::encode_config(
            &block,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        let mut contents = block.into_contents();
        contents.zeroize();
        SecretString::from(encoded)
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url without padding) of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS algorithm this key signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    /// The public JWK: `kty`, `crv`/`n`,`e`/`x`,`y`, `kid`, `alg` and `"use":"sig"`.
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// Signs `claims` (a JSON object) as a compact JWS with the header
    /// `{"alg":…,"typ":"at+jwt","kid":…}`.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, KeyError> {
        self.sign_with_encoded_header(&self.encoded_header, claims)
    }

    /// Signs `claims` with the header `{"alg":…,"typ":typ,"kid":…}` (dev mode's CI tokens use `JWT`).
    pub fn sign_jwt_typed(&self, claims: &Value, typ: &str) -> Result<String, KeyError> {
        let header = serde_json::json!({"alg": self.alg.as_str(), "typ": typ, "kid": self.kid});
        self.sign_with_encoded_header(&jws::encode_header(&header), claims)
    }

    fn sign_with_encoded_header(
        &self,
        encoded_header: &str,
        claims: &Value,
    ) -> Result<String, KeyError> {
        if !claims.is_object() {
            return Err(KeyError::ClaimsNotObject);
        }
        jws::compact(encoded_header, claims, |input| self.sign_raw(input))
    }

    /// The JWS signature of `message` with this key's algorithm (fixed-size r||s for ES256).
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let failed = |_| KeyError::Sign {
            alg: self.alg,
            kid: self.kid.clone(),
        };
        let rng = SystemRandom::new();
        Ok(match &self.key_pair {
            KeyPair::Es256(pair) => pair.sign(&rng, message).map_err(failed)?.as_ref().to_vec(),
            KeyPair::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(failed)?;
                signature
            }
            KeyPair::EdDsa(pair) => pair.sign(message).as_ref().to_vec(),
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// RFC 7638 JWK thumbprint: SHA-256 over the JSON object of the key type's required
/// members (`crv`,`kty`,`x`,`y` for EC; `e`,`kty`,`n` for RSA; `crv`,`kty`,`x` for OKP),
/// in lexicographic order without whitespace, encoded base64url without padding.
pub fn jwk_thumbprint(required_members: &[(&str, &str)]) -> String {
    let mut members = required_members.to_vec();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let body = members
        .iter()
        .map(|(name, value)| {
            format!(
                "{}:{}",
                Value::String((*name).to_owned()),
                Value::String((*value).to_owned())
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    URL_SAFE_NO_PAD.encode(crate::trust::hash::sha256(format!("{{{body}}}").as_bytes()))
}

/// Describes a PEM parse failure without echoing any of the input (the `pem` crate's
/// own messages may quote a header line or an offending byte).
fn describe_pem_error(err: &pem::PemError) -> String {
    let what = match err {
        pem::PemError::MismatchedTags(..) => "its BEGIN and END labels differ",
        pem::PemError::MalformedFraming => "its BEGIN/END lines are malformed",
        pem::PemError::MissingBeginTag => "no -----BEGIN ...----- line was found",
        pem::PemError::MissingEndTag => "no -----END ...----- line was found",
        pem::PemError::MissingData => "it has no data between its BEGIN and END lines",
        pem::PemError::InvalidData(_) => "its body is not valid base64",
        pem::PemError::InvalidHeader(_) => "it has an invalid header line",
        pem::PemError::NotUtf8(_) => "it is not valid UTF-8",
    };
    format!("not a PEM document: {what}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, jwk::Jwk};
    use serde_json::json;

    /// Verifies `token` with nothing but `jwk`, the way a relying party would.
    pub(crate) fn verify_with_jwk(token: &str, jwk: &Value) -> Value {
        let alg: Algorithm = jwk["alg"]
            .as_str()
            .expect("the JWK names its alg")
            .parse()
            .expect("a JWS algorithm");
        let jwk: Jwk = serde_json::from_value(jwk.clone()).expect("public_jwk is a valid JWK");
        let key = DecodingKey::from_jwk(&jwk).expect("decoding key from JWK");
        let mut validation = Validation::new(alg);
        validation.set_audience(&["https://api.example.com"]);
        validation.set_issuer(&["https://tokenmint.example.com"]);
        decode::<Value>(token, &key, &validation)
            .expect("token verifies with the published JWK")
            .claims
    }

    pub(crate) fn claims() -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({
            "iss": "https://tokenmint.example.com",
            "sub": "github:repo:acme/app:ref:refs/heads/main",
            "aud": "https://api.example.com",
            "client_id": "deploy-app",
            "scope": "read write",
            "jti": "7d1c6a4e-8f1e-4c55-9a43-1f0a3e8f2b6d",
            "iat": now,
            "exp": now + 600,
            "ci": {"repository": "acme/app", "repository_id": "123"}
        })
    }

    #[test]
    fn rfc7638_example_key_has_the_published_thumbprint() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhD\
                 R1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6C\
                 f0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1\
                 n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1j\
                 F44-csFCur-kEgU8awapJzKnqDKgw";
        // Deliberately out of order: the function sorts the members.
        let thumbprint = jwk_thumbprint(&[("n", n), ("kty", "RSA"), ("e", "AQAB")]);
        assert_eq!(thumbprint, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn tokens_of_every_algorithm_verify_with_the_published_jwk() {
        for alg in SigningAlgorithm::ALL {
            let key = SigningKey::generate(alg).expect("generate");
            let token = key.sign_jwt(&claims()).expect("sign");
            let verified = verify_with_jwk(&token, key.public_jwk());
            assert_eq!(verified, claims_without_time(&claims(), &verified), "{alg}");
        }
    }

    /// The claims as signed (iat/exp may differ by a second between two `claims()` calls).
    fn claims_without_time(expected: &Value, actual: &Value) -> Value {
        let mut expected = expected.clone();
        for name in ["iat", "exp"] {
            expected[name] = actual[name].clone();
        }
        expected
    }

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "the test reads back the header it signed"
    )]
    fn header_is_exactly_alg_typ_kid() {
        for alg in SigningAlgorithm::ALL {
            let key = SigningKey::generate(alg).expect("generate");
            let token = key.sign_jwt(&claims()).expect("sign");
            let encoded_header = token.split('.').next().expect("three parts");
            let header = URL_SAFE_NO_PAD.decode(encoded_header).expect("base64url");
            assert_eq!(
                String::from_utf8(header).expect("utf-8"),
                format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"}}"#, key.kid())
            );
            assert_eq!(token.split('.').count(), 3);
        }
    }

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "the test decodes a public modulus, not a token"
    )]
    fn public_jwk_has_the_members_of_its_key_type_and_a_thumbprint_kid() {
        for alg in SigningAlgorithm::ALL {
            let key = SigningKey::generate(alg).expect("generate");
            let jwk = key.public_jwk().as_object().expect("object");
            let mut names: Vec<&str> = jwk.keys().map(String::as_str).collect();
            names.sort_unstable();
            let expected: &[&str] = match alg {
                SigningAlgorithm::ES256 => &["alg", "crv", "kid", "kty", "use", "x", "y"],
                SigningAlgorithm::RS256 => &["alg", "e", "kid", "kty", "n", "use"],
                SigningAlgorithm::EdDSA => &["alg", "crv", "kid", "kty", "use", "x"],
            };
            assert_eq!(names, expected, "{alg}");
            assert_eq!(jwk["alg"], alg.to_string());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], key.kid());
            let required: Vec<(&str, &str)> = ["crv", "e", "kty", "n", "x", "y"]
                .into_iter()
                .filter_map(|name| Some((name, jwk.get(name)?.as_str()?)))
                .collect();
            assert_eq!(jwk_thumbprint(&required), key.kid(), "{alg}");
        }
        let rsa = SigningKey::generate(SigningAlgorithm::RS256).expect("generate");
        let n = URL_SAFE_NO_PAD
            .decode(rsa.public_jwk()["n"].as_str().expect("n"))
            .expect("base64url");
        assert_eq!(n.len() * 8, 2048, "generated RSA keys are 2048-bit");
    }

    #[test]
    fn pem_round_trip_keeps_the_key() {
        for alg in SigningAlgorithm::ALL {
            let key = SigningKey::generate(alg).expect("generate");
            let pem = key.to_pkcs8_pem();
            assert!(
                pem.expose_secret()
                    .starts_with("-----BEGIN PRIVATE KEY-----\n")
            );
            let parsed = SigningKey::from_pkcs8_pem(alg, pem.expose_secret()).expect("parse");
            assert_eq!(parsed.kid(), key.kid());
            assert_eq!(parsed.public_jwk(), key.public_jwk());
            let token = parsed.sign_jwt(&claims()).expect("sign");
            verify_with_jwk(&token, key.public_jwk());
        }
    }

    #[test]
    fn bad_pem_errors_say_what_is_wrong_without_echoing_the_key() {
        let ec = SigningKey::generate(SigningAlgorithm::ES256).expect("generate");
        let ec_pem = ec.to_pkcs8_pem();
        let body: String = ec_pem.expose_secret().lines().nth(1).expect("body").into();

        let mut errors = Vec::new();
        let err = SigningKey::from_pkcs8_pem(SigningAlgorithm::RS256, ec_pem.expose_secret())
            .expect_err("EC key is not RS256");
        assert_eq!(
            err.to_string(),
            "invalid RS256 private key: the PKCS#8 document is not a usable RS256 key \
             (WrongAlgorithm)"
        );
        errors.push(err);

        let sec1 = ec_pem
            .expose_secret()
            .replace("PRIVATE KEY", "EC PRIVATE KEY");
        let err =
            SigningKey::from_pkcs8_pem(SigningAlgorithm::ES256, &sec1).expect_err("SEC1 label");
        assert!(
            err.to_string().contains("found \"EC PRIVATE KEY\""),
            "{err}"
        );
        errors.push(err);

        let garbled = ec_pem.expose_secret().replacen(&body[..8], "!!!!!!!!", 1);
        let err =
            SigningKey::from_pkcs8_pem(SigningAlgorithm::ES256, &garbled).expect_err("bad base64");
        assert_eq!(
            err.to_string(),
            "invalid ES256 private key: not a PEM document: its body is not valid base64"
        );
        errors.push(err);

        let err =
            SigningKey::from_pkcs8_pem(SigningAlgorithm::EdDSA, "hello").expect_err("not PEM");
        assert!(
            err.to_string()
                .starts_with("invalid EdDSA private key: not a PEM document"),
            "{err}"
        );
        errors.push(err);

        for err in &errors {
            for message in [err.to_string(), format!("{err:?}")] {
                assert!(!message.contains(&body[8..24]), "{message}");
            }
        }
    }

    #[test]
    fn debug_shows_only_kid_and_alg() {
        let key = SigningKey::generate(SigningAlgorithm::EdDSA).expect("generate");
        assert_eq!(
            format!("{key:?}"),
            format!("SigningKey {{ kid: {:?}, alg: EdDSA, .. }}", key.kid())
        );
    }

    #[test]
    fn claims_must_be_an_object() {
        let key = SigningKey::generate(SigningAlgorithm::ES256).expect("generate");
        let err = key.sign_jwt(&json!(["not", "claims"])).expect_err("array");
        assert!(matches!(err, KeyError::ClaimsNotObject));
    }
}
