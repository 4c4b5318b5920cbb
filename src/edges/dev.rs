//! Dev mode's CI issuer: mints CI-shaped tokens for anyone on loopback, so an exchange can be tried with curl.
//!
//! It exists only in `serve --dev`, which binds loopback only, keeps everything in memory
//! and knows no target but `dev-api`: nothing it signs can reach a real system.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::adapters::issuer_keys::{FetchError, KeySource};
use crate::adapters::signing::{KeyError, SigningAlgorithm, SigningKey};
use crate::config::Config;
use crate::trust::policy::{self, PolicyContext, PolicySet};

/// The name of dev mode's only issuer.
pub const DEV_ISSUER_NAME: &str = "dev";
/// The name of dev mode's only target.
pub const DEV_TARGET_NAME: &str = "dev-api";
/// Lifetime of a dev CI token unless the request sets `exp`.
pub const DEV_TOKEN_LIFETIME_SECS: i64 = 600;
/// The built-in dev policy's name.
pub const DEV_POLICY_NAME: &str = "dev-any-repository";
/// The built-in dev policy, used while `./policies` holds no dev policy. It pins no
/// binding claim (`unbound: true`), so its denials disclose nothing.
pub const DEV_POLICY_YAML: &str = r#"name: dev-any-repository
description: Built-in dev mode policy - any dev token with a repository claim gets read and write on dev-api
issuer: dev
target: dev-api
scopes: [read, write]
unbound: true
claims:
  repository: { regex: '.+' }
"#;

/// The dev CI issuer and its signing key.
pub struct DevIssuer {
    /// `{public_url}/dev`
    pub issuer_url: String,
    /// The audience of dev CI tokens: `public_url`.
    pub audience: String,
    key: SigningKey,
}

impl DevIssuer {
    pub fn new(public_url: &str) -> Result<Self, KeyError> {
        Ok(Self {
            issuer_url: format!("{public_url}/dev"),
            audience: public_url.to_owned(),
            key: SigningKey::generate(SigningAlgorithm::ES256)?,
        })
    }

    /// The dev issuer's JWKS document.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.public_jwk()] })
    }

    /// The key source the verifier uses for the dev issuer: in memory, no HTTP.
    pub fn key_source(self: &Arc<Self>) -> Arc<dyn KeySource> {
        Arc::new(DevKeySource(Arc::clone(self)))
    }

    /// Signs a CI token: `claims` plus defaults; `iss` and `dev: true` always win.
    pub fn mint(
        &self,
        mut claims: Map<String, Value>,
        now: OffsetDateTime,
    ) -> Result<String, String> {
        let now = now.unix_timestamp();
        claims
            .entry("aud")
            .or_insert_with(|| Value::String(self.audience.clone()));
        if !claims.contains_key("sub") {
            let repository = claims
                .get("repository")
                .and_then(Value::as_str)
                .unwrap_or("dev/unknown");
            let git_ref = claims
                .get("ref")
                .and_then(Value::as_str)
                .unwrap_or("refs/heads/main");
            claims.insert(
                "sub".to_owned(),
                Value::String(format!("repo:{repository}:ref:{git_ref}")),
            );
        }
        claims.entry("iat").or_insert_with(|| json!(now));
        claims
            .entry("exp")
            .or_insert_with(|| json!(now + DEV_TOKEN_LIFETIME_SECS));
        claims
            .entry("jti")
            .or_insert_with(|| Value::String(uuid::Uuid::new_v4().to_string()));
        claims.insert("iss".to_owned(), Value::String(self.issuer_url.clone()));
        claims.insert("dev".to_owned(), Value::Bool(true));
        self.key
            .sign_jwt_typed(&Value::Object(claims), "JWT")
            .map_err(|err| err.to_string())
    }
}

struct DevKeySource(Arc<DevIssuer>);

#[async_trait]
impl KeySource for DevKeySource {
    async fn fetch(&self) -> Result<jsonwebtoken::jwk::JwkSet, FetchError> {
        serde_json::from_value(self.0.jwks()).map_err(|err| FetchError::InvalidJwks {
            from: self.describe(),
            message: err.to_string(),
        })
    }

    fn describe(&self) -> String {
        "the built-in dev issuer".to_owned()
    }
}

/// The configuration of dev mode, for a listener bound at `listen`.
pub fn dev_config(listen: SocketAddr) -> anyhow::Result<Config> {
    use crate::config::*;
    let public_url = format!("http://{listen}");
    let mut issuers = BTreeMap::new();
    issuers.insert(
        DEV_ISSUER_NAME.to_owned(),
        IssuerConfig {
            name: DEV_ISSUER_NAME.to_owned(),
            issuer: format!("{public_url}/dev"),
            issuer_url: url::Url::parse(&format!("{public_url}/dev")).context("dev issuer URL")?,
            kind: IssuerKind::Dev,
            audience: public_url.clone(),
            jwks_uri: None,
            jwks_file: None,
            algorithms: vec![jsonwebtoken::Algorithm::ES256],
            leeway: Duration::from_secs(60),
            max_token_lifetime: Duration::from_secs(6 * 3600),
            strict_audience: true,
            replay: ReplayMode::Reject,
            jwks_refresh: Duration::from_secs(15 * 60),
            jwks_max_stale: Duration::from_secs(24 * 3600),
            jwks_refetch_cooldown: Duration::from_secs(60),
            jwks_fetch_timeout: Duration::from_secs(5),
            allow_private_network: false,
        },
    );
    let mut targets = BTreeMap::new();
    targets.insert(
        DEV_TARGET_NAME.to_owned(),
        TargetConfig {
            name: DEV_TARGET_NAME.to_owned(),
            audience: format!("{public_url}/{DEV_TARGET_NAME}"),
            match_audience_url: true,
            enabled: true,
            max_ttl: Duration::from_secs(3600),
            kind: TargetKindConfig::Local {
                algorithm: SigningAlgorithm::ES256,
                signing_key_file: None,
            },
        },
    );
    Ok(Config {
        server: ServerConfig {
            listen,
            public_url,
            admin_listen: None,
            behind_tls_proxy: false,
        },
        storage: StorageConfig {
            data_dir: None,
            database_url: None,
            key_encryption_key_file: None,
            audit_retention: Duration::from_secs(400 * 24 * 3600),
        },
        policies: PoliciesConfig {
            dir: PathBuf::from("./policies"),
            max_stale: Duration::from_secs(15 * 60),
        },
        keys: KeysConfig {
            min_publish: Duration::from_secs(3600),
        },
        issuers,
        targets,
        deny: BTreeMap::new(),
        file: None,
        dev: true,
    })
}

/// Dev mode's policies: the `./policies` files for issuer `dev` and target `dev-api` when
/// any loads, so a newcomer can try a policy exactly as it would decide; otherwise the
/// built-in `dev-any-repository`. A file that does not load (another issuer or target, a
/// syntax error, a clashing name) is skipped with one warning: dev mode never fails on them.
pub fn dev_policies(config: &Config) -> anyhow::Result<PolicySet> {
    let ctx = PolicyContext::from_config(config);
    let mut policies: Vec<policy::CompiledPolicy> = Vec::new();
    let dir = &config.policies.dir;
    if dir.is_dir() {
        let (files, _) = policy::list_policy_files(dir);
        for file in files {
            let loaded = policy::load_file(&file, &ctx).and_then(|loaded| {
                // Refuse names that clash with what is already loaded.
                let mut candidate = policies.clone();
                candidate.extend(loaded.iter().cloned());
                PolicySet::new(candidate).map(|_| loaded)
            });
            match loaded {
                Ok(loaded) => policies.extend(loaded),
                Err(errors) => tracing::warn!(
                    "dev mode: skipping {} (dev mode loads only policies for issuer \"dev\" and target \"dev-api\", pinning `repository`): {}",
                    file.display(),
                    errors[0]
                ),
            }
        }
    }
    if policies.is_empty() {
        policies = policy::load_source("built-in dev policy", DEV_POLICY_YAML, &ctx)
            .map_err(|errors| anyhow::anyhow!("built-in dev policy: {}", errors[0]))?;
    }
    PolicySet::new(policies).map_err(|errors| anyhow::anyhow!("{}", errors[0]))
}
