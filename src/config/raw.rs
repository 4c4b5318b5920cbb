//! The configuration exactly as written (serde, unknown keys refused) and its validation into [`Config`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::env::ConfigEnv;
use super::{
    Config, ConfigError, HumanDuration, IssuerConfig, IssuerKind, KeysConfig, PoliciesConfig,
    ReplayMode, ServerConfig, StorageConfig, check_https_url, infer_issuer_kind,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    policies: RawPolicies,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    issuers: BTreeMap<String, RawIssuer>,
    #[serde(default)]
    targets: BTreeMap<String, super::target::RawTarget>,
    #[serde(default)]
    deny: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: String,
    public_url: Option<String>,
    #[serde(default = "default_admin_listen")]
    admin_listen: String,
    #[serde(default)]
    behind_tls_proxy: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            admin_listen: default_admin_listen(),
            behind_tls_proxy: false,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    database_url: Option<String>,
    key_encryption_key_file: Option<PathBuf>,
    #[serde(default = "default_audit_retention")]
    audit_retention: HumanDuration,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            database_url: None,
            key_encryption_key_file: None,
            audit_retention: default_audit_retention(),
        }
    }
}

fn default_audit_retention() -> HumanDuration {
    HumanDuration::secs(400 * 24 * 3600)
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicies {
    #[serde(default = "default_policies_dir")]
    dir: PathBuf,
    #[serde(default = "default_policies_max_stale")]
    max_stale: HumanDuration,
}

impl Default for RawPolicies {
    fn default() -> Self {
        Self {
            dir: default_policies_dir(),
            max_stale: default_policies_max_stale(),
        }
    }
}

fn default_policies_max_stale() -> HumanDuration {
    HumanDuration::secs(15 * 60)
}

fn default_policies_dir() -> PathBuf {
    PathBuf::from("./policies")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default = "default_min_publish")]
    min_publish: HumanDuration,
}

impl Default for RawKeys {
    fn default() -> Self {
        Self {
            min_publish: default_min_publish(),
        }
    }
}

fn default_min_publish() -> HumanDuration {
    HumanDuration::secs(3600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    kind: Option<IssuerKind>,
    audience: Option<String>,
    jwks_uri: Option<String>,
    jwks_file: Option<PathBuf>,
    #[serde(default = "default_algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "default_leeway")]
    leeway: HumanDuration,
    #[serde(default = "default_max_token_lifetime")]
    max_token_lifetime: HumanDuration,
    #[serde(default = "yes")]
    strict_audience: bool,
    #[serde(default = "default_replay")]
    replay: ReplayMode,
    #[serde(default = "default_jwks_refresh")]
    jwks_refresh: HumanDuration,
    #[serde(default = "default_jwks_max_stale")]
    jwks_max_stale: HumanDuration,
    #[serde(default = "default_jwks_refetch_cooldown")]
    jwks_refetch_cooldown: HumanDuration,
    #[serde(default = "default_jwks_fetch_timeout")]
    jwks_fetch_timeout: HumanDuration,
    #[serde(default)]
    allow_private_network: bool,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}
fn default_leeway() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_max_token_lifetime() -> HumanDuration {
    HumanDuration::secs(6 * 3600)
}
fn yes() -> bool {
    true
}
fn default_replay() -> ReplayMode {
    ReplayMode::Reject
}
fn default_jwks_refresh() -> HumanDuration {
    HumanDuration::secs(15 * 60)
}
fn default_jwks_max_stale() -> HumanDuration {
    HumanDuration::secs(24 * 3600)
}
fn default_jwks_refetch_cooldown() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_jwks_fetch_timeout() -> HumanDuration {
    HumanDuration::secs(5)
}

/// Algorithms a CI token may be signed with; `none` and HMAC can never be configured.
const ASYMMETRIC_ALGORITHMS: &[(&str, jsonwebtoken::Algorithm)] = &[
    ("RS256", jsonwebtoken::Algorithm::RS256),
    ("RS384", jsonwebtoken::Algorithm::RS384),
    ("RS512", jsonwebtoken::Algorithm::RS512),
    ("PS256", jsonwebtoken::Algorithm::PS256),
    ("PS384", jsonwebtoken::Algorithm::PS384),
    ("PS512", jsonwebtoken::Algorithm::PS512),
    ("ES256", jsonwebtoken::Algorithm::ES256),
    ("ES384", jsonwebtoken::Algorithm::ES384),
    ("EdDSA", jsonwebtoken::Algorithm::EdDSA),
];

/// Parses one configured CI-token algorithm.
pub fn parse_ci_algorithm(name: &str) -> Result<jsonwebtoken::Algorithm, String> {
    if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") {
        return Err(format!(
            "algorithm {name:?} can never be configured: CI tokens must be signed with an asymmetric key"
        ));
    }
    ASYMMETRIC_ALGORITHMS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, alg)| *alg)
        .ok_or_else(|| {
            let names: Vec<&str> = ASYMMETRIC_ALGORITHMS.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown algorithm {name:?}; use one of {}",
                names.join(", ")
            )
        })
}

fn is_valid_target_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

impl RawConfig {
    pub(super) fn validate(
        self,
        file: Option<&Path>,
        listen_override: Option<SocketAddr>,
        env: &ConfigEnv,
    ) -> Result<Config, ConfigError> {
        let origin = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("no {} here and no --config", super::DEFAULT_CONFIG_FILE));
        // An error names the variable that set the key, else the file; and, for an entry a
        // variable made, that variable.
        let fail = |key: &str, message: String| {
            let origin = match env.origin_of(key) {
                Some(var) => format!("environment variable {var}"),
                None => origin.clone(),
            };
            let note = env.note_for(key).unwrap_or_default();
            ConfigError(format!("{origin}: `{key}`: {message}{note}"))
        };

        let listen = match listen_override {
            Some(addr) => addr,
            None => self.server.listen.parse::<SocketAddr>().map_err(|_| {
                fail(
                    "server.listen",
                    format!(
                        "{:?} is not an address like \"127.0.0.1:8080\"",
                        self.server.listen
                    ),
                )
            })?,
        };
        if !listen.ip().is_loopback() && !self.server.behind_tls_proxy {
            return Err(fail(
                "server.listen",
                format!(
                    "{listen} is not a loopback address and tokenmint serves plain HTTP; \
                     terminate TLS in a proxy and set server.behind_tls_proxy = true"
                ),
            ));
        }
        let public_url = self.server.public_url.as_deref().ok_or_else(|| {
            let hint = if file.is_none() {
                "; pass --config FILE, or try `tokenmint serve --dev` for a local playground"
            } else {
                ""
            };
            fail(
                "server.public_url",
                format!("is required (our issuer URL and the default CI-token audience){hint}"),
            )
        })?;
        let public_url =
            normalise_public_url(public_url).map_err(|m| fail("server.public_url", m))?;
        let admin_listen = match self.server.admin_listen.trim() {
            "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                fail(
                    "server.admin_listen",
                    format!(
                        "{text:?} is not an address like \"127.0.0.1:9090\" (\"\" disables it)"
                    ),
                )
            })?),
        };
        if admin_listen == Some(listen) {
            return Err(fail(
                "server.admin_listen",
                "must differ from server.listen".to_owned(),
            ));
        }

        if let Some(url) = &self.storage.database_url {
            check_database_url(url).map_err(|why| fail("storage.database_url", why))?;
        }
        if self.storage.audit_retention.get() < Duration::from_secs(24 * 3600) {
            return Err(fail(
                "storage.audit_retention",
                format!(
                    "{} is shorter than a day; audit records are evidence, keep them at least a day (default \"400d\")",
                    self.storage.audit_retention
                ),
            ));
        }

        let mut issuers = BTreeMap::new();
        let mut seen_issuer_urls: HashMap<String, String> = HashMap::new();
        for (name, raw) in self.issuers {
            let key = |field: &str| format!("issuers.{name}.{field}");
            if !is_valid_target_name(&name) {
                return Err(fail(
                    &format!("issuers.{name}"),
                    "issuer names must match [a-z0-9][a-z0-9_-]{0,62}".to_owned(),
                ));
            }
            let issuer_url =
                check_https_url("issuer", &raw.issuer).map_err(|m| fail(&key("issuer"), m))?;
            if let Some(previous) = seen_issuer_urls.insert(raw.issuer.clone(), name.clone()) {
                return Err(fail(
                    &key("issuer"),
                    format!(
                        "issuer {:?} is also configured as issuers.{previous}",
                        raw.issuer
                    ),
                ));
            }
            let kind = match (raw.kind, infer_issuer_kind(&issuer_url)) {
                // A public platform's issuer is shared by all of the platform's customers:
                // its rules (binding claims, dangerous triggers) cannot be switched off.
                (Some(kind), Some(inferred)) if kind != inferred => {
                    return Err(fail(
                        &key("kind"),
                        format!(
                            "{:?} contradicts the issuer: {:?} is the public {} issuer, shared by \
                             every {} customer, whose rules (binding claims, dangerous triggers) \
                             must apply; remove issuers.{name}.kind or set it to {:?}",
                            kind.as_str(),
                            raw.issuer,
                            inferred.as_str(),
                            inferred.as_str(),
                            inferred.as_str()
                        ),
                    ));
                }
                (Some(kind), _) => kind,
                (None, Some(kind)) => kind,
                (None, None) => {
                    return Err(fail(
                        &key("kind"),
                        format!(
                            "is required for {:?}: set github, gitlab, terraform or generic",
                            raw.issuer
                        ),
                    ));
                }
            };
            let jwks_uri = raw
                .jwks_uri
                .as_deref()
                .map(|uri| check_https_url("jwks_uri", uri))
                .transpose()
                .map_err(|m| fail(&key("jwks_uri"), m))?;
            if jwks_uri.is_some() && raw.jwks_file.is_some() {
                return Err(fail(
                    &key("jwks_file"),
                    "set jwks_uri or jwks_file, not both".to_owned(),
                ));
            }
            if raw.algorithms.is_empty() {
                return Err(fail(
                    &key("algorithms"),
                    "must list at least one algorithm".to_owned(),
                ));
            }
            let algorithms = raw
                .algorithms
                .iter()
                .map(|a| parse_ci_algorithm(a))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| fail(&key("algorithms"), m))?;
            if raw.max_token_lifetime.get().is_zero() {
                return Err(fail(
                    &key("max_token_lifetime"),
                    "must be longer than 0s".to_owned(),
                ));
            }
            let audience = raw.audience.clone().unwrap_or_else(|| public_url.clone());
            if audience.is_empty() {
                return Err(fail(&key("audience"), "must not be empty".to_owned()));
            }
            issuers.insert(
                name.clone(),
                IssuerConfig {
                    name: name.clone(),
                    issuer: raw.issuer,
                    issuer_url,
                    kind,
                    audience,
                    jwks_uri,
                    jwks_file: raw.jwks_file,
                    algorithms,
                    leeway: raw.leeway.get(),
                    max_token_lifetime: raw.max_token_lifetime.get(),
                    strict_audience: raw.strict_audience,
                    replay: raw.replay,
                    jwks_refresh: nonzero(raw.jwks_refresh, &key("jwks_refresh"), &fail)?,
                    jwks_max_stale: nonzero(raw.jwks_max_stale, &key("jwks_max_stale"), &fail)?,
                    jwks_refetch_cooldown: raw.jwks_refetch_cooldown.get(),
                    jwks_fetch_timeout: nonzero(
                        raw.jwks_fetch_timeout,
                        &key("jwks_fetch_timeout"),
                        &fail,
                    )?,
                    allow_private_network: raw.allow_private_network,
                },
            );
        }

        let mut targets = BTreeMap::new();
        let mut audiences: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        for (name, raw) in self.targets {
            if !is_valid_target_name(&name) {
                return Err(fail(
                    &format!("targets.{name}"),
                    "target names must match [a-z0-9][a-z0-9_-]{0,62}".to_owned(),
                ));
            }
            let target = raw.validate(&name, &fail)?;
            audiences
                .entry(target.audience.clone())
                .or_default()
                .push((name.clone(), target.match_audience_url));
            targets.insert(name, target);
        }
        // A request's audience names a target, or is a target's audience URL; it must
        // never be able to mean two targets.
        for target in targets.values() {
            if let Some(other) = targets.get(&target.audience)
                && other.name != target.name
                && target.match_audience_url
            {
                return Err(fail(
                    &format!("targets.{}.audience", target.name),
                    format!(
                        "{:?} is also the name of targets.{}, so a request for audience {:?} could \
                         mean either; give targets.{} its API's URL as audience, or set \
                         match_audience_url = false on it",
                        target.audience, other.name, target.audience, target.name
                    ),
                ));
            }
        }
        for (audience, users) in &audiences {
            let matching: Vec<&str> = users
                .iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| n.as_str())
                .collect();
            if users.len() > 1 && matching.len() != 1 {
                let names: Vec<&str> = users.iter().map(|(n, _)| n.as_str()).collect();
                return Err(ConfigError(format!(
                    "{origin}: targets {} share the audience {audience:?}; set match_audience_url = false on all but one",
                    names.join(", ")
                )));
            }
        }

        check_key_encryption_key(&self.storage, &targets, &fail)?;
        let deny = super::deny::check_deny_list(&self.deny)
            .map_err(|(key, message)| fail(&format!("deny.{key}"), message))?;

        Ok(Config {
            server: ServerConfig {
                listen,
                public_url,
                admin_listen,
                behind_tls_proxy: self.server.behind_tls_proxy,
            },
            storage: StorageConfig {
                data_dir: Some(self.storage.data_dir),
                database_url: self.storage.database_url,
                key_encryption_key_file: self.storage.key_encryption_key_file,
                audit_retention: self.storage.audit_retention.get(),
            },
            policies: PoliciesConfig {
                dir: self.policies.dir,
                max_stale: self.policies.max_stale.get(),
            },
            keys: KeysConfig {
                min_publish: self.keys.min_publish.get(),
            },
            issuers,
            targets,
            deny,
            file: file.map(Path::to_path_buf),
            dev: false,
        })
    }
}

fn nonzero(
    value: HumanDuration,
    key: &str,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Duration, ConfigError> {
    if value.get().is_zero() {
        Err(fail(key, "must be longer than 0s".to_owned()))
    } else {
        Ok(value.get())
    }
}

/// `public_url`: absolute https URL (http only for loopback), no query, trailing slash removed.
pub(crate) fn normalise_public_url(text: &str) -> Result<String, String> {
    let url = check_https_url("public_url", text)?;
    let mut normalised = url.as_str().to_owned();
    while normalised.ends_with('/') {
        normalised.pop();
    }
    Ok(normalised)
}

/// `storage.key_encryption_key_file` is required with `database_url` when a local target
/// uses generated keys (they are kept in the database, sealed with it), and refused
/// without `database_url` (the embedded store keeps keys as files). The file itself is
/// read and checked when a command needs it, not here.
fn check_key_encryption_key(
    storage: &RawStorage,
    targets: &BTreeMap<String, super::TargetConfig>,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    const KEY: &str = "storage.key_encryption_key_file";
    match (&storage.database_url, &storage.key_encryption_key_file) {
        (None, Some(_)) => Err(fail(
            KEY,
            "is only used with storage.database_url: with the embedded store, keys are files \
             in data_dir; remove it"
                .to_owned(),
        )),
        (Some(_), None) => {
            let generated = targets.values().find(|target| {
                matches!(
                    target.kind,
                    super::TargetKindConfig::Local {
                        signing_key_file: None,
                        ..
                    }
                )
            });
            match generated {
                Some(target) => Err(fail(
                    KEY,
                    format!(
                        "is required with storage.database_url, because targets.{} (kind = \
                         \"local\") uses generated signing keys, which replicas share in the \
                         database sealed with this key: make one with `(umask 077 && head -c 32 \
                         /dev/urandom > /etc/tokenmint/kek)` and give every replica the same file, \
                         or give the target a signing_key_file",
                        target.name
                    ),
                )),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// A PostgreSQL URL, without a password: secrets never appear in configuration (the
/// password comes from `PGPASSWORD` or a `.pgpass` file, as for every PostgreSQL client).
fn check_database_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|err| {
        format!("is not a URL like \"postgres://tokenmint@db.example.com/tokenmint\" ({err})")
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "must be a postgres:// URL (got {}://); the embedded SQLite store needs no URL, only storage.data_dir",
            url.scheme()
        ));
    }
    if url.password().is_some() {
        return Err(
            "carries a password; secrets never appear in configuration: set PGPASSWORD or PGPASSFILE in the service's environment instead".to_owned(),
        );
    }
    if url.query_pairs().any(|(key, _)| key == "password") {
        return Err(
            "carries a password parameter; set PGPASSWORD or PGPASSFILE in the service's environment instead".to_owned(),
        );
    }
    Ok(())
}
