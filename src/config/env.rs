//! `TOKENMINT_<SECTION>__<KEY>[__<KEY>...]` variables as a figment provider, and where
//! each value came from (for errors that name the variable).
//!
//! Segments are lower-cased, as figment's own `Env` does (`MAX_TTL` is `max_ttl`). The
//! NAME segment of `TOKENMINT_ISSUERS__<NAME>__...` and `TOKENMINT_TARGETS__<NAME>__...`
//! also matches an issuer or target of the file whose name differs from it only in ASCII
//! case and `-`/`_`, because a shell cannot export `TOKENMINT_TARGETS__tenant-prod__MAX_TTL`:
//!
//! - every name of the file that equals the segment once both are lower-cased and every
//!   `-` is read as `_` is a candidate;
//! - one candidate: the variable sets it;
//! - several (`tenant-prod` and `tenant_prod` both in the file): the one written exactly
//!   as the segment is, byte for byte, wins; without one, loading fails naming both;
//! - none: the lower-cased segment is a new entry, as before, and errors about it say
//!   which variable created it.
//!
//! Two variables that set the same key (`…__TENANT_PROD__MAX_TTL` and
//! `…__tenant-prod__MAX_TTL`) are refused: which one wins would depend on their order.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::str::FromStr;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::{ConfigError, ENV_PREFIX};

/// The name figment shows for values of this provider; errors recognise it.
pub(super) const PROVIDER_NAME: &str = "`TOKENMINT_` environment variables";

/// The sections whose second segment is an entry's name.
const NAMED_SECTIONS: &[(&str, &str)] = &[("issuers", "issuer"), ("targets", "target")];

/// The configuration variables, mapped onto the names the file already has.
#[derive(Debug, Default)]
pub(super) struct ConfigEnv {
    /// Dotted key (`targets.tenant-prod.max_ttl`) → (variable, value), in variable order.
    values: BTreeMap<String, (String, String)>,
    /// `targets.new_one` → the variable that made an entry the file does not have.
    created: BTreeMap<String, String>,
    /// The file's names, and the file as errors name it (`None`: there is no file).
    names: FileNames,
    file: Option<String>,
}

/// The issuer and target names of the configuration file.
#[derive(Debug, Default, Clone)]
pub(super) struct FileNames {
    pub(super) issuers: Vec<String>,
    pub(super) targets: Vec<String>,
}

impl FileNames {
    fn of(&self, section: &str) -> &[String] {
        match section {
            "issuers" => &self.issuers,
            _ => &self.targets,
        }
    }
}

/// Lower-case, with `-` read as `_`: the form a shell variable name can take.
fn normalise(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// Whether `name` is a configuration variable: the prefix (in any case) and a `__`.
pub(super) fn is_config_var(name: &str) -> bool {
    name.get(..ENV_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
        && name.contains("__")
}

impl ConfigEnv {
    /// Reads the process environment.
    pub(super) fn from_process(
        names: FileNames,
        file: Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars_os(), names, file)
    }

    /// Reads `vars` (name, value); `file` names the configuration file in errors.
    pub(super) fn from_vars(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        names: FileNames,
        file: Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                let name = name.trim().to_owned();
                is_config_var(&name).then(|| (name, value.to_string_lossy().into_owned()))
            })
            .collect();
        vars.sort();
        let mut env = ConfigEnv {
            names,
            file,
            ..ConfigEnv::default()
        };
        let file_label = env.file.as_deref().unwrap_or("the configuration");
        for (var, value) in vars {
            let rest = &var[ENV_PREFIX.len()..];
            let written: Vec<&str> = rest.split("__").collect();
            // As figment's `Env`: a variable with an empty segment is not configuration.
            if written.iter().any(|segment| segment.trim().is_empty()) {
                continue;
            }
            let mut path: Vec<String> = written
                .iter()
                .map(|segment| segment.trim().to_ascii_lowercase())
                .collect();
            if let Some(&(section, singular)) = NAMED_SECTIONS
                .iter()
                .find(|(section, _)| *section == path[0])
                && written.len() > 1
            {
                let segment = written[1].trim();
                let wanted = normalise(segment);
                let candidates: Vec<&String> = env
                    .names
                    .of(section)
                    .iter()
                    .filter(|name| normalise(name) == wanted)
                    .collect();
                match candidates.as_slice() {
                    [] => {
                        env.created
                            .entry(format!("{section}.{}", path[1]))
                            .or_insert_with(|| var.clone());
                    }
                    [only] => path[1] = (*only).clone(),
                    several => match several.iter().find(|name| name.as_str() == segment) {
                        Some(exact) => path[1] = (*exact).clone(),
                        None => {
                            let listed: Vec<String> = several
                                .iter()
                                .map(|name| format!("{section}.{name}"))
                                .collect();
                            return Err(ConfigError(format!(
                                "environment variable {var}: {segment} could mean {} of {file} \
                                 ({singular} names are matched ignoring case and -/_); rename \
                                 one of them, or write the name exactly in the variable",
                                listed.join(" or "),
                                file = file_label,
                            )));
                        }
                    },
                }
            }
            let key = path.join(".");
            if let Some((other, _)) = env.values.get(&key) {
                return Err(ConfigError(format!(
                    "environment variables {other} and {var} both set `{key}`; unset one of them"
                )));
            }
            env.values.insert(key, (var, value));
        }
        Ok(env)
    }

    /// The variable that set the dotted `key`, if one did.
    pub(super) fn variable_of(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(var, _)| var.as_str())
    }

    /// For a key inside an entry the file does not have: `(entry, variable that made it)`.
    pub(super) fn created_entry_of(&self, key: &str) -> Option<(&str, &str)> {
        self.created.iter().find_map(|(entry, var)| {
            let inside = key == entry
                || key
                    .strip_prefix(entry.as_str())
                    .is_some_and(|rest| rest.starts_with('.'));
            inside.then_some((entry.as_str(), var.as_str()))
        })
    }

    /// The variable an error about `key` comes from: the one that set it, else the one
    /// that made its entry.
    pub(super) fn origin_of(&self, key: &str) -> Option<&str> {
        self.variable_of(key)
            .or_else(|| self.created_entry_of(key).map(|(_, var)| var))
    }

    /// What an error about `key` adds when a variable made its entry (the file has no such
    /// issuer or target): that, and which names the file has.
    pub(super) fn note_for(&self, key: &str) -> Option<String> {
        let (entry, creator) = self.created_entry_of(key)?;
        let (section, name) = entry.split_once('.')?;
        let singular = NAMED_SECTIONS
            .iter()
            .find(|(known, _)| *known == section)
            .map_or("entry", |(_, singular)| *singular);
        let who = if self.origin_of(key) == Some(creator) {
            "this variable".to_owned()
        } else {
            creator.to_owned()
        };
        Some(match &self.file {
            None => {
                format!("; there is no configuration file, so {who} made a new {singular} {name:?}")
            }
            Some(file) => {
                let names = self.names.of(section);
                let has = if names.is_empty() {
                    format!("{file} has no {section}")
                } else {
                    format!("{file}'s {section}: {}", names.join(", "))
                };
                format!(
                    "; {file} has no {singular} {name:?} (names match ignoring case and -/_), so \
                     {who} made a new one ({has})"
                )
            }
        })
    }
}

/// Puts `value` at `path` in `dict`; a later value replaces an earlier one.
fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

impl Provider for ConfigEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named(PROVIDER_NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, (_, text)) in &self.values {
            // Values are read as figment's `Env` reads them: `60` is a number, `[a, b]` a list.
            let value = Value::from_str(text).unwrap_or_else(|_| Value::from(text.clone()));
            let path: Vec<&str> = key.split('.').collect();
            insert(&mut dict, &path, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)], targets: &[&str]) -> Result<ConfigEnv, ConfigError> {
        let names = FileNames {
            issuers: vec!["github".to_owned()],
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        };
        ConfigEnv::from_vars(
            vars.iter()
                .map(|(n, v)| (OsString::from(n), OsString::from(v))),
            names,
            Some("a.toml".to_owned()),
        )
    }

    #[test]
    fn a_name_segment_matches_the_files_name_ignoring_case_and_dashes() {
        let env = env(
            &[
                ("TOKENMINT_TARGETS__TENANT_PROD__MAX_TTL", "30m"),
                ("TOKENMINT_ISSUERS__GITHUB__LEEWAY", "30s"),
                ("TOKENMINT_SERVER__LISTEN", "127.0.0.1:1"),
                ("TOKENMINT_ID_TOKEN", "not configuration"),
            ],
            &["tenant-prod"],
        )
        .expect("loads");
        assert_eq!(
            env.variable_of("targets.tenant-prod.max_ttl"),
            Some("TOKENMINT_TARGETS__TENANT_PROD__MAX_TTL")
        );
        assert_eq!(
            env.variable_of("issuers.github.leeway"),
            Some("TOKENMINT_ISSUERS__GITHUB__LEEWAY")
        );
        assert_eq!(
            env.variable_of("server.listen"),
            Some("TOKENMINT_SERVER__LISTEN")
        );
        assert!(env.created.is_empty());
        assert_eq!(env.values.len(), 3);
    }

    #[test]
    fn two_names_that_normalise_alike_are_refused_unless_written_exactly() {
        let err = env(
            &[("TOKENMINT_TARGETS__TENANT_PROD__MAX_TTL", "30m")],
            &["tenant-prod", "tenant_prod"],
        )
        .expect_err("ambiguous");
        assert_eq!(
            err.to_string(),
            "environment variable TOKENMINT_TARGETS__TENANT_PROD__MAX_TTL: TENANT_PROD could \
             mean targets.tenant-prod or targets.tenant_prod of a.toml (target names are \
             matched ignoring case and -/_); rename one of them, or write the name exactly in \
             the variable"
        );
        let exact = env(
            &[("TOKENMINT_TARGETS__tenant_prod__MAX_TTL", "30m")],
            &["tenant-prod", "tenant_prod"],
        )
        .expect("written exactly");
        assert!(exact.variable_of("targets.tenant_prod.max_ttl").is_some());
    }

    #[test]
    fn a_segment_matching_nothing_makes_a_new_entry_and_remembers_the_variable() {
        let env = env(
            &[("TOKENMINT_TARGETS__STAGING__KIND", "local")],
            &["tenant-prod"],
        )
        .expect("loads");
        assert!(env.variable_of("targets.staging.kind").is_some());
        assert_eq!(
            env.created_entry_of("targets.staging.kind"),
            Some(("targets.staging", "TOKENMINT_TARGETS__STAGING__KIND"))
        );
        assert_eq!(env.created_entry_of("targets.stagingx"), None);
    }

    #[test]
    fn two_variables_for_one_key_are_refused() {
        let err = env(
            &[
                ("TOKENMINT_TARGETS__TENANT_PROD__MAX_TTL", "30m"),
                ("TOKENMINT_TARGETS__tenant-prod__MAX_TTL", "1h"),
            ],
            &["tenant-prod"],
        )
        .expect_err("two values for one key");
        assert_eq!(
            err.to_string(),
            "environment variables TOKENMINT_TARGETS__TENANT_PROD__MAX_TTL and \
             TOKENMINT_TARGETS__tenant-prod__MAX_TTL both set `targets.tenant-prod.max_ttl`; \
             unset one of them"
        );
    }

    #[test]
    fn variables_with_an_empty_segment_are_not_configuration() {
        let env = env(
            &[
                ("TOKENMINT_SERVER____LISTEN", "x"),
                ("TOKENMINT_SERVER__", "x"),
            ],
            &[],
        )
        .expect("loads");
        assert!(env.values.is_empty());
    }
}
