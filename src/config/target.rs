//! `[targets.NAME]` as written and its validation: local targets and remote ones
//! (`auth0`, `oauth2`) with their client authentication.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{ConfigError, HumanDuration, TargetConfig, TargetKindConfig, check_https_url};
use crate::adapters::signing::SigningAlgorithm;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    kind: String,
    audience: Option<String>,
    #[serde(default = "yes")]
    match_audience_url: bool,
    /// An incident switch: `false` refuses every exchange for this target.
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_max_ttl")]
    max_ttl: HumanDuration,
    // local
    algorithm: Option<String>,
    signing_key_file: Option<PathBuf>,
    // auth0
    domain: Option<String>,
    base_url: Option<String>,
    organization: Option<String>,
    // oauth2
    token_endpoint: Option<String>,
    assertion_audience: Option<String>,
    audience_param: Option<String>,
    // auth0 and oauth2
    client_id: Option<String>,
    private_key_file: Option<PathBuf>,
    private_key_env: Option<String>,
    signing_algorithm: Option<String>,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    auth_method: Option<String>,
    enforce_max_ttl: Option<bool>,
    timeout: Option<HumanDuration>,
    connect_timeout: Option<HumanDuration>,
    reuse_tokens: Option<bool>,
}

fn yes() -> bool {
    true
}

fn default_max_ttl() -> HumanDuration {
    HumanDuration::secs(3600)
}

/// Total time budget of one remote exchange (every attempt and wait included).
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest budget a remote exchange may be given.
pub const MAX_REMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest `max_ttl` of a remote target: 30 days, Auth0's own maximum.
pub const MAX_REMOTE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Auth0 refuses client assertions whose `iss`/`sub` exceed this.
const MAX_AUTH0_ASSERTION_CLIENT_ID: usize = 64;
/// Connect timeout of one attempt to a remote token endpoint.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A remote target: a token endpoint tokenmint calls with the client-credentials grant.
#[derive(Debug, Clone)]
pub struct RemoteTargetConfig {
    pub provider: RemoteProvider,
    /// Where the client-credentials request goes.
    pub token_endpoint: Url,
    pub client_id: String,
    pub client_auth: ClientAuthConfig,
    /// How the target's audience is sent.
    pub audience_param: AudienceParam,
    /// Auth0 `organization` (ID or name), sent when set.
    pub organization: Option<String>,
    /// Refuse tokens living longer than the target's `max_ttl`.
    pub enforce_max_ttl: bool,
    /// The budget of one exchange, retries and waits included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Hand a cached token to identical requests within half its lifetime.
    pub reuse_tokens: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteProvider {
    /// An Auth0 tenant; `domain` is its canonical domain (`acme.eu.auth0.com`).
    Auth0 { domain: String },
    /// Any OAuth2 token endpoint.
    OAuth2,
}

impl RemoteProvider {
    pub fn kind(&self) -> &'static str {
        match self {
            RemoteProvider::Auth0 { .. } => "auth0",
            RemoteProvider::OAuth2 => "oauth2",
        }
    }
}

/// How tokenmint authenticates to the token endpoint. Only where the secret comes
/// from is configuration; the secret itself is read when the service starts.
#[derive(Debug, Clone)]
pub enum ClientAuthConfig {
    /// RFC 7523 `private_key_jwt`: a fresh signed assertion for every HTTP attempt.
    PrivateKeyJwt {
        key: SecretSource,
        algorithm: AssertionAlgorithm,
        /// The assertion's `aud`.
        assertion_audience: String,
    },
    ClientSecret {
        secret: SecretSource,
        method: SecretMethod,
    },
}

/// Where a secret is read from: a file or an environment variable, never inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File { key: String, path: PathBuf },
    Env { key: String, name: String },
}

impl SecretSource {
    /// The configuration key that named it, e.g. `targets.prod.private_key_file`.
    pub fn key(&self) -> &str {
        match self {
            SecretSource::File { key, .. } | SecretSource::Env { key, .. } => key,
        }
    }
}

/// The algorithms a client assertion may be signed with (Auth0 accepts exactly these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAlgorithm {
    RS256,
    RS384,
    PS256,
}

impl AssertionAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            AssertionAlgorithm::RS256 => "RS256",
            AssertionAlgorithm::RS384 => "RS384",
            AssertionAlgorithm::PS256 => "PS256",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMethod {
    /// `client_id` and `client_secret` in the form body.
    Post,
    /// `Authorization: Basic base64(client_id:client_secret)`.
    Basic,
}

/// Which form parameter carries the target's audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceParam {
    Audience,
    Resource,
    None,
}

/// The keys each kind takes besides `kind`, `audience`, `match_audience_url`, `enabled`,
/// `max_ttl`.
const LOCAL_KEYS: &[&str] = &["algorithm", "signing_key_file"];
const REMOTE_KEYS: &[&str] = &[
    "client_id",
    "private_key_file",
    "private_key_env",
    "signing_algorithm",
    "client_secret_file",
    "client_secret_env",
    "auth_method",
    "enforce_max_ttl",
    "timeout",
    "connect_timeout",
    "reuse_tokens",
];
const AUTH0_KEYS: &[&str] = &["domain", "base_url", "organization"];
const OAUTH2_KEYS: &[&str] = &["token_endpoint", "assertion_audience", "audience_param"];

type Fail<'a> = &'a dyn Fn(&str, String) -> ConfigError;

impl RawTarget {
    /// The keys that are set, by name.
    fn set_keys(&self) -> Vec<&'static str> {
        let present = [
            ("algorithm", self.algorithm.is_some()),
            ("signing_key_file", self.signing_key_file.is_some()),
            ("domain", self.domain.is_some()),
            ("base_url", self.base_url.is_some()),
            ("organization", self.organization.is_some()),
            ("token_endpoint", self.token_endpoint.is_some()),
            ("assertion_audience", self.assertion_audience.is_some()),
            ("audience_param", self.audience_param.is_some()),
            ("client_id", self.client_id.is_some()),
            ("private_key_file", self.private_key_file.is_some()),
            ("private_key_env", self.private_key_env.is_some()),
            ("signing_algorithm", self.signing_algorithm.is_some()),
            ("client_secret_file", self.client_secret_file.is_some()),
            ("client_secret_env", self.client_secret_env.is_some()),
            ("auth_method", self.auth_method.is_some()),
            ("enforce_max_ttl", self.enforce_max_ttl.is_some()),
            ("timeout", self.timeout.is_some()),
            ("connect_timeout", self.connect_timeout.is_some()),
            ("reuse_tokens", self.reuse_tokens.is_some()),
        ];
        present
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| name)
            .collect()
    }

    /// Validates one target; `fail(key, message)` builds an error naming the key.
    pub(super) fn validate(self, name: &str, fail: Fail<'_>) -> Result<TargetConfig, ConfigError> {
        let key = |field: &str| format!("targets.{name}.{field}");
        let allowed: Vec<&str> = match self.kind.as_str() {
            "local" => LOCAL_KEYS.to_vec(),
            "auth0" => [REMOTE_KEYS, AUTH0_KEYS].concat(),
            "oauth2" => [REMOTE_KEYS, OAUTH2_KEYS].concat(),
            other => {
                return Err(fail(
                    &key("kind"),
                    format!(
                        "{other:?} is not a target kind; use \"local\", \"auth0\" or \"oauth2\""
                    ),
                ));
            }
        };
        if let Some(stray) = self.set_keys().into_iter().find(|k| !allowed.contains(k)) {
            return Err(fail(
                &key(stray),
                format!("is not a key of {:?} targets", self.kind),
            ));
        }
        if self.max_ttl.get() < Duration::from_secs(1) {
            return Err(fail(&key("max_ttl"), "must be at least 1s".to_owned()));
        }
        match self.kind.as_str() {
            "local" => self.validate_local(name, fail),
            _ => self.validate_remote(name, fail),
        }
    }

    fn validate_local(self, name: &str, fail: Fail<'_>) -> Result<TargetConfig, ConfigError> {
        let key = |field: &str| format!("targets.{name}.{field}");
        let audience = self
            .audience
            .ok_or_else(|| fail(&key("audience"), "is required for local targets".to_owned()))?;
        if audience.trim().is_empty() {
            return Err(fail(&key("audience"), "must not be empty".to_owned()));
        }
        let algorithm = match self.algorithm.as_deref() {
            None => SigningAlgorithm::ES256,
            Some(text) => text.parse::<SigningAlgorithm>().map_err(|_| {
                fail(
                    &key("algorithm"),
                    format!("{text:?} is not one of ES256, RS256, EdDSA"),
                )
            })?,
        };
        Ok(TargetConfig {
            name: name.to_owned(),
            audience,
            match_audience_url: self.match_audience_url,
            enabled: self.enabled,
            max_ttl: self.max_ttl.get(),
            kind: TargetKindConfig::Local {
                algorithm,
                signing_key_file: self.signing_key_file,
            },
        })
    }

    fn validate_remote(self, name: &str, fail: Fail<'_>) -> Result<TargetConfig, ConfigError> {
        let key = |field: &str| format!("targets.{name}.{field}");
        let kind = self.kind.clone();
        let client_id = self.client_id.clone().ok_or_else(|| {
            fail(
                &key("client_id"),
                format!("is required for {kind:?} targets: the client tokenmint authenticates as"),
            )
        })?;
        if client_id.trim().is_empty() || client_id.chars().any(char::is_control) {
            return Err(fail(
                &key("client_id"),
                "must be a non-empty client id without control characters".to_owned(),
            ));
        }

        let (provider, token_endpoint, assertion_audience, audience, audience_param) = if kind
            == "auth0"
        {
            let domain = self
                .domain
                .as_deref()
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| {
                    fail(
                        &key("domain"),
                        "is required for auth0 targets, e.g. \"acme.eu.auth0.com\"".to_owned(),
                    )
                })?;
            check_domain(&domain).map_err(|m| fail(&key("domain"), m))?;
            let base_url = match &self.base_url {
                Some(text) => check_base_url(text).map_err(|m| fail(&key("base_url"), m))?,
                None => format!("https://{domain}"),
            };
            let token_endpoint = Url::parse(&format!("{base_url}/oauth/token")).map_err(|err| {
                fail(
                    &key("base_url"),
                    format!("gives no token endpoint URL: {err}"),
                )
            })?;
            let audience = self
                .audience
                .clone()
                .unwrap_or_else(|| format!("https://{domain}/api/v2/"));
            (
                RemoteProvider::Auth0 { domain },
                token_endpoint,
                format!("{base_url}/"),
                audience,
                AudienceParam::Audience,
            )
        } else {
            let endpoint_text = self.token_endpoint.clone().ok_or_else(|| {
                fail(
                    &key("token_endpoint"),
                    "is required for oauth2 targets".to_owned(),
                )
            })?;
            let token_endpoint = check_https_url("token_endpoint", &endpoint_text)
                .map_err(|m| fail(&key("token_endpoint"), m))?;
            let audience = self.audience.clone().ok_or_else(|| {
                fail(
                    &key("audience"),
                    "is required for oauth2 targets: the API its tokens are for".to_owned(),
                )
            })?;
            let audience_param = match self.audience_param.as_deref() {
                None | Some("none") => AudienceParam::None,
                Some("audience") => AudienceParam::Audience,
                Some("resource") => AudienceParam::Resource,
                Some(other) => {
                    return Err(fail(
                        &key("audience_param"),
                        format!("{other:?} is not one of \"audience\", \"resource\", \"none\""),
                    ));
                }
            };
            let assertion_audience = self
                .assertion_audience
                .clone()
                .unwrap_or_else(|| token_endpoint.to_string());
            (
                RemoteProvider::OAuth2,
                token_endpoint,
                assertion_audience,
                audience,
                audience_param,
            )
        };
        if audience.trim().is_empty() {
            return Err(fail(&key("audience"), "must not be empty".to_owned()));
        }
        if assertion_audience.trim().is_empty() {
            return Err(fail(
                &key("assertion_audience"),
                "must not be empty".to_owned(),
            ));
        }

        let client_auth = self.client_auth(name, assertion_audience, fail)?;
        if kind == "auth0"
            && matches!(client_auth, ClientAuthConfig::PrivateKeyJwt { .. })
            && client_id.len() > MAX_AUTH0_ASSERTION_CLIENT_ID
        {
            return Err(fail(
                &key("client_id"),
                format!(
                    "is longer than {MAX_AUTH0_ASSERTION_CLIENT_ID} characters, which Auth0 refuses in a client assertion"
                ),
            ));
        }

        let timeout = self
            .timeout
            .map(HumanDuration::get)
            .unwrap_or(DEFAULT_REMOTE_TIMEOUT);
        if timeout < Duration::from_secs(1) || timeout > MAX_REMOTE_TIMEOUT {
            return Err(fail(
                &key("timeout"),
                "must be between 1s and 1m: a CI job waits this long at most".to_owned(),
            ));
        }
        if self.max_ttl.get() > MAX_REMOTE_TTL {
            return Err(fail(
                &key("max_ttl"),
                "must be at most 30 days for a remote target".to_owned(),
            ));
        }
        let connect_timeout = self
            .connect_timeout
            .map(HumanDuration::get)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT.min(timeout));
        if connect_timeout.is_zero() || connect_timeout > timeout {
            return Err(fail(
                &key("connect_timeout"),
                format!(
                    "must be longer than 0s and at most the timeout ({})",
                    super::format_duration(timeout)
                ),
            ));
        }
        if let Some(org) = &self.organization
            && (org.trim().is_empty() || org.chars().any(char::is_control))
        {
            return Err(fail(
                &key("organization"),
                "must be an organization ID or name".to_owned(),
            ));
        }
        Ok(TargetConfig {
            name: name.to_owned(),
            audience,
            match_audience_url: self.match_audience_url,
            enabled: self.enabled,
            max_ttl: self.max_ttl.get(),
            kind: TargetKindConfig::Remote(Box::new(RemoteTargetConfig {
                provider,
                token_endpoint,
                client_id,
                client_auth,
                audience_param,
                organization: self.organization,
                enforce_max_ttl: self.enforce_max_ttl.unwrap_or(true),
                timeout,
                connect_timeout,
                reuse_tokens: self.reuse_tokens.unwrap_or(false),
            })),
        })
    }

    /// Exactly one of the four credential keys.
    fn client_auth(
        &self,
        name: &str,
        assertion_audience: String,
        fail: Fail<'_>,
    ) -> Result<ClientAuthConfig, ConfigError> {
        let key = |field: &str| format!("targets.{name}.{field}");
        let mut sources = Vec::new();
        if let Some(path) = &self.private_key_file {
            sources.push((
                true,
                SecretSource::File {
                    key: key("private_key_file"),
                    path: path.clone(),
                },
            ));
        }
        if let Some(var) = &self.private_key_env {
            sources.push((
                true,
                SecretSource::Env {
                    key: key("private_key_env"),
                    name: var.clone(),
                },
            ));
        }
        if let Some(path) = &self.client_secret_file {
            sources.push((
                false,
                SecretSource::File {
                    key: key("client_secret_file"),
                    path: path.clone(),
                },
            ));
        }
        if let Some(var) = &self.client_secret_env {
            sources.push((
                false,
                SecretSource::Env {
                    key: key("client_secret_env"),
                    name: var.clone(),
                },
            ));
        }
        let (is_key, source) = match sources.len() {
            1 => sources.remove(0),
            0 => {
                return Err(fail(
                    &format!("targets.{name}"),
                    "needs client credentials: set private_key_file or private_key_env \
                     (private_key_jwt), or client_secret_file or client_secret_env"
                        .to_owned(),
                ));
            }
            _ => {
                let names: Vec<&str> = sources.iter().map(|(_, s)| s.key()).collect();
                return Err(fail(
                    &format!("targets.{name}"),
                    format!(
                        "set exactly one client credential, not {}",
                        names.join(" and ")
                    ),
                ));
            }
        };
        if let SecretSource::Env { key: k, name: var } = &source
            && var.trim().is_empty()
        {
            return Err(fail(k, "must name an environment variable".to_owned()));
        }
        if is_key {
            if self.auth_method.is_some() {
                return Err(fail(
                    &key("auth_method"),
                    "applies only to client secrets; a private key always authenticates with private_key_jwt".to_owned(),
                ));
            }
            let algorithm = match self.signing_algorithm.as_deref() {
                None | Some("RS256") => AssertionAlgorithm::RS256,
                Some("RS384") => AssertionAlgorithm::RS384,
                Some("PS256") => AssertionAlgorithm::PS256,
                Some(other) => {
                    return Err(fail(
                        &key("signing_algorithm"),
                        format!("{other:?} is not one of RS256, RS384, PS256"),
                    ));
                }
            };
            Ok(ClientAuthConfig::PrivateKeyJwt {
                key: source,
                algorithm,
                assertion_audience,
            })
        } else {
            if self.signing_algorithm.is_some() {
                return Err(fail(
                    &key("signing_algorithm"),
                    "applies only to private_key_jwt (private_key_file or private_key_env)"
                        .to_owned(),
                ));
            }
            if self.assertion_audience.is_some() {
                return Err(fail(
                    &key("assertion_audience"),
                    "applies only to private_key_jwt (private_key_file or private_key_env)"
                        .to_owned(),
                ));
            }
            let method = match self.auth_method.as_deref() {
                None | Some("client_secret_post") => SecretMethod::Post,
                Some("client_secret_basic") => SecretMethod::Basic,
                Some(other) => {
                    return Err(fail(
                        &key("auth_method"),
                        format!(
                            "{other:?} is not one of \"client_secret_post\", \"client_secret_basic\""
                        ),
                    ));
                }
            };
            Ok(ClientAuthConfig::ClientSecret {
                secret: source,
                method,
            })
        }
    }
}

/// An Auth0 domain: a bare host name such as `acme.eu.auth0.com`.
fn check_domain(domain: &str) -> Result<(), String> {
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{domain:?} is not a host name like \"acme.eu.auth0.com\" (no scheme, port or path; \
             a custom domain or test server goes in base_url)"
        ))
    }
}

/// `base_url`: https (http only for loopback), no path, query or trailing slash.
fn check_base_url(text: &str) -> Result<String, String> {
    let url = check_https_url("base_url", text)?;
    if url.path() != "/" {
        return Err(format!(
            "base_url {text:?} must not have a path: the token endpoint is {{base_url}}/oauth/token"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}
