//! The typed configuration tree: loading (defaults, TOML file, `TOKENMINT_*__*` variables) and validation.

pub mod deny;
mod duration;
mod env;
mod issuer;
mod raw;
mod target;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use url::Url;

pub use duration::{HumanDuration, format_duration, parse_duration};
pub use issuer::ReplayMode;

pub use crate::trust::platform::{IssuerKind, infer_issuer_kind};
pub use raw::parse_ci_algorithm;
pub use target::{
    AssertionAlgorithm, AudienceParam, ClientAuthConfig, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REMOTE_TIMEOUT, RemoteProvider, RemoteTargetConfig, SecretMethod, SecretSource,
};

use crate::adapters::signing::SigningAlgorithm;

/// The file read when `--config` is not given and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "tokenmint.toml";
/// Prefix of configuration variables; only names that also contain `__` are configuration.
pub const ENV_PREFIX: &str = "TOKENMINT_";

/// A configuration that loaded and passed every check.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub policies: PoliciesConfig,
    pub keys: KeysConfig,
    pub issuers: BTreeMap<String, IssuerConfig>,
    pub targets: BTreeMap<String, TargetConfig>,
    /// `[deny]`, an incident switch: binding-claim values refused before any policy is
    /// evaluated (claim name to values); re-read on SIGHUP.
    pub deny: BTreeMap<String, BTreeSet<String>>,
    /// The file the configuration was read from, re-read on SIGHUP for the incident
    /// switches; `None` without one (dev mode, variables only).
    pub file: Option<PathBuf>,
    /// Dev mode: the dev CI issuer is served and nothing real is ever contacted.
    pub dev: bool,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Absolute URL without trailing slash: our issuer and the default CI-token audience.
    pub public_url: String,
    pub admin_listen: Option<SocketAddr>,
    pub behind_tls_proxy: bool,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `None` in dev mode: state and keys are in memory. Otherwise the SQLite store and the
    /// local signing keys live here, unless `database_url` is set.
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL, shared by replicas; never carries a password.
    pub database_url: Option<String>,
    /// With `database_url`: the file whose bytes seal the signing keys kept in the
    /// database (read when needed, never logged).
    pub key_encryption_key_file: Option<PathBuf>,
    /// Audit records older than this are purged.
    pub audit_retention: Duration,
}

#[derive(Debug, Clone)]
pub struct PoliciesConfig {
    pub dir: PathBuf,
    /// How long a policy file that fails to compile keeps its last good version.
    pub max_stale: Duration,
}

#[derive(Debug, Clone)]
pub struct KeysConfig {
    pub min_publish: Duration,
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub name: String,
    /// Exactly as tokens carry it in `iss`.
    pub issuer: String,
    pub issuer_url: Url,
    pub kind: IssuerKind,
    pub audience: String,
    pub jwks_uri: Option<Url>,
    pub jwks_file: Option<PathBuf>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub leeway: Duration,
    pub max_token_lifetime: Duration,
    pub strict_audience: bool,
    pub replay: ReplayMode,
    pub jwks_refresh: Duration,
    pub jwks_max_stale: Duration,
    pub jwks_refetch_cooldown: Duration,
    pub jwks_fetch_timeout: Duration,
    /// Key fetches may reach private networks (a self-hosted issuer inside one); never
    /// loopback or link-local.
    pub allow_private_network: bool,
}

#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    pub audience: String,
    pub match_audience_url: bool,
    /// An incident switch (`enabled = false`): every exchange for the target is refused;
    /// re-read on SIGHUP.
    pub enabled: bool,
    pub max_ttl: Duration,
    pub kind: TargetKindConfig,
}

#[derive(Debug, Clone)]
pub enum TargetKindConfig {
    /// tokenmint signs the token itself.
    Local {
        algorithm: SigningAlgorithm,
        /// A fixed key from a PEM file instead of generated, rotated keys.
        signing_key_file: Option<PathBuf>,
    },
    /// An Auth0 tenant or OAuth2 server, called with the client-credentials grant.
    Remote(Box<RemoteTargetConfig>),
}

impl TargetConfig {
    /// The remote part of a remote target.
    pub fn remote(&self) -> Option<&RemoteTargetConfig> {
        match &self.kind {
            TargetKindConfig::Remote(remote) => Some(remote.as_ref()),
            TargetKindConfig::Local { .. } => None,
        }
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config FILE`; when `None`, `./tokenmint.toml` is read if it exists.
    pub file: Option<PathBuf>,
    /// `--listen ADDR`, overriding `server.listen`.
    pub listen: Option<SocketAddr>,
}

impl ConfigSource {
    /// The file the configuration is read from: `--config`, or `./tokenmint.toml` when
    /// it exists, or none.
    pub fn file_in_use(&self) -> Option<PathBuf> {
        match &self.file {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        }
    }
}

/// A configuration error: one line that names the key and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads defaults, then the TOML file, then `TOKENMINT_<SECTION>__<KEY>` variables, and validates.
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        if let Some(path) = &source.file
            && !path.is_file()
        {
            return Err(ConfigError(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        let file = source.file_in_use();
        let mut figment = Figment::new();
        let mut names = env::FileNames::default();
        if let Some(path) = &file {
            figment = figment.merge(Toml::file_exact(path));
            names = file_names(&figment);
        }
        let env =
            env::ConfigEnv::from_process(names, file.as_ref().map(|p| p.display().to_string()))?;
        figment = figment.merge(&env);
        Self::from_layers(figment, file.as_deref(), source.listen, &env)
    }

    /// Validates what a figment holds; `file` names the file in errors.
    pub fn from_figment(
        figment: Figment,
        file: Option<&Path>,
        listen_override: Option<SocketAddr>,
    ) -> Result<Config, ConfigError> {
        Self::from_layers(figment, file, listen_override, &env::ConfigEnv::default())
    }

    fn from_layers(
        figment: Figment,
        file: Option<&Path>,
        listen_override: Option<SocketAddr>,
        env: &env::ConfigEnv,
    ) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = figment
            .extract()
            .map_err(|err| ConfigError(describe_figment_error(err, file, env)))?;
        raw.validate(file, listen_override, env)
    }
}

/// The issuer and target names the file defines (none when it does not parse: extracting
/// reports that).
fn file_names(figment: &Figment) -> env::FileNames {
    let keys = |section: &str| match figment.find_value(section) {
        Ok(figment::value::Value::Dict(_, dict)) => dict.keys().cloned().collect(),
        _ => Vec::new(),
    };
    env::FileNames {
        issuers: keys("issuers"),
        targets: keys("targets"),
    }
}

/// Names of `TOKENMINT_*__*` variables that are set (dev mode refuses to start with any).
pub fn config_env_vars_present() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| env::is_config_var(name.trim()))
        .collect()
}

fn describe_figment_error(
    err: figment::Error,
    file: Option<&Path>,
    env: &env::ConfigEnv,
) -> String {
    let mut lines = Vec::new();
    for error in err {
        let key = error.path.join(".");
        let origin = match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            Some(figment::Source::File(path)) => path.display().to_string(),
            Some(other) => other.to_string(),
            None => match (&error.metadata, file) {
                (Some(meta), _) if meta.name == env::PROVIDER_NAME => match env.origin_of(&key) {
                    Some(var) => format!("environment variable {var}"),
                    None => format!("{ENV_PREFIX}* environment variables"),
                },
                (_, Some(path)) => path.display().to_string(),
                _ => "configuration".to_owned(),
            },
        };
        let (full, what) = match &error.kind {
            figment::error::Kind::UnknownField(field, _) => {
                // figment's path already ends with the unknown field.
                let full = if key.is_empty() {
                    field.clone()
                } else {
                    key.clone()
                };
                let what = match inline_secret(&full) {
                    Some(instead) => format!(
                        "{origin}: `{full}`: secrets are never written inline, because \
                         configuration files get committed, copied and logged; {instead}"
                    ),
                    None => format!("{origin}: unknown key `{full}`"),
                };
                (full, what)
            }
            figment::error::Kind::MissingField(field) => {
                let full = if key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
                let what = format!("{origin}: missing required key `{full}`");
                (full, what)
            }
            kind if key.is_empty() => (key.clone(), format!("{origin}: {kind}")),
            kind => (key.clone(), format!("{origin}: `{key}`: {kind}")),
        };
        lines.push(match env.note_for(&full) {
            Some(note) => format!("{what}{note}"),
            None => what,
        });
    }
    lines.join("; ")
}

/// For an inline secret (`targets.NAME.client_secret`, `private_key`, `signing_key`): the
/// keys that name where it is kept instead.
fn inline_secret(key: &str) -> Option<&'static str> {
    let mut parts = key.split('.');
    let (Some("targets"), Some(_), Some(field), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some(match field {
        "client_secret" => {
            "put the secret in a file and set client_secret_file to its path, or in an \
             environment variable and set client_secret_env to its name"
        }
        "private_key" => {
            "put the PEM key in a file and set private_key_file to its path, or in an \
             environment variable and set private_key_env to its name"
        }
        "signing_key" => "put the PEM key in a file and set signing_key_file to its path",
        _ => return None,
    })
}

/// Whether an address is loopback (127.0.0.0/8 or ::1).
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// An URL that must be https, or http to a loopback host; `what` names it in errors.
pub fn check_https_url(what: &str, text: &str) -> Result<Url, String> {
    let url =
        Url::parse(text).map_err(|err| format!("{what} {text:?} is not an absolute URL: {err}"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = url.host().as_ref().is_some_and(is_loopback_host);
            if !loopback {
                return Err(format!(
                    "{what} {text:?} uses http://, which is allowed only for loopback hosts; use https://"
                ));
            }
        }
        other => {
            return Err(format!(
                "{what} {text:?} has scheme {other:?}; use https://"
            ));
        }
    }
    if url.host().is_none() {
        return Err(format!("{what} {text:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{what} {text:?} must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{what} {text:?} must not have a query or fragment"));
    }
    Ok(url)
}

/// Key and secret files readable by group or others draw a warning (systemd credentials
/// aside: see [`crate::adapters::signing::is_service_credential`]).
pub fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
        && !crate::adapters::signing::is_service_credential(path)
    {
        tracing::warn!(
            "{} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
}
