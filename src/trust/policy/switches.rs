//! Incident switches: targets switched off (`enabled = false`) and binding-claim values
//! refused before any policy is evaluated (`[deny]` in the configuration, `deny.yaml` in
//! the policy directory). They ride with the policy set, so a reload swaps them together
//! and an exchange sees one consistent pair.
//!
//! Invariant: a deny list that fails to load never shrinks the one in force. At start it
//! stops `serve`; on reload the previous switches stay and the error is logged, because
//! silently forgetting a deny entry during an incident would re-admit the workload.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use marked_yaml::Node;

use super::PolicyError;
use super::matcher::quote;
use super::source::{self, Diagnostics, Shape};
pub use crate::config::deny::DENY_CLAIMS;
use crate::trust::platform::IssuerKind;
use crate::trust::verify::claims::ClaimsView;

/// The file in `policies.dir` that holds a deny list; it is not a policy file.
pub const DENY_FILE: &str = "deny.yaml";

/// The switches in force, kept by source so that a reload can keep the part whose
/// source fails while it takes the other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Switches {
    config: ConfigSwitches,
    file_deny: DenyList,
}

/// Why the deny list refuses a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denylisted {
    pub claim: String,
    pub value: String,
}

/// A deny list as loaded: claim name to refused values.
pub type DenyList = BTreeMap<String, BTreeSet<String>>;

/// The switches the configuration sets: targets with `enabled = false`, and `[deny]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSwitches {
    pub disabled_targets: BTreeSet<String>,
    pub deny: DenyList,
}

impl ConfigSwitches {
    /// What `config` switches.
    pub fn of(config: &crate::config::Config) -> ConfigSwitches {
        ConfigSwitches {
            disabled_targets: config
                .targets
                .values()
                .filter(|target| !target.enabled)
                .map(|target| target.name.clone())
                .collect(),
            deny: config.deny.clone(),
        }
    }
}

impl Switches {
    /// The configuration's switches plus `deny.yaml`'s list (claims listed without a
    /// value deny nothing and are left out).
    pub fn new(config: &ConfigSwitches, file_deny: &DenyList) -> Switches {
        let non_empty = |list: &DenyList| -> DenyList {
            list.iter()
                .filter(|(_, values)| !values.is_empty())
                .map(|(claim, values)| (claim.clone(), values.clone()))
                .collect()
        };
        Switches {
            config: ConfigSwitches {
                disabled_targets: config.disabled_targets.clone(),
                deny: non_empty(&config.deny),
            },
            file_deny: non_empty(file_deny),
        }
    }

    /// Claim name to refused values: the union of `[deny]` and `deny.yaml`.
    fn denied(&self) -> DenyList {
        let mut denied = self.config.deny.clone();
        for (claim, values) in &self.file_deny {
            denied
                .entry(claim.clone())
                .or_default()
                .extend(values.iter().cloned());
        }
        denied
    }

    /// Whether `enabled = false` switched the target off.
    pub fn target_disabled(&self, target: &str) -> bool {
        self.config.disabled_targets.contains(target)
    }

    /// The first binding claim of the token's issuer kind whose value is denied.
    pub fn denylisted(&self, kind: IssuerKind, claims: &impl ClaimsView) -> Option<Denylisted> {
        let listed = |list: &DenyList, claim: &str, text: &String| {
            list.get(claim).is_some_and(|values| values.contains(text))
        };
        kind.binding_claims().iter().find_map(|claim| {
            let text = claims.get(claim).and_then(|value| match value {
                serde_json::Value::String(text) => Some(text.clone()),
                serde_json::Value::Number(number) => Some(number.to_string()),
                _ => None,
            })?;
            let denied =
                listed(&self.config.deny, claim, &text) || listed(&self.file_deny, claim, &text);
            denied.then(|| Denylisted {
                claim: (*claim).to_owned(),
                value: text,
            })
        })
    }

    /// How many values are denied, and how many targets are off (for the log and readiness).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.denied().values().map(BTreeSet::len).sum(),
            self.config.disabled_targets.len(),
        )
    }

    /// One line per switch, sorted (`target\tNAME`, `deny\tCLAIM\tVALUE`): what the
    /// policy set version hashes. Values are escaped, so the encoding is unambiguous.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        for target in &self.config.disabled_targets {
            out.push_str(&format!("target\t{target}\n"));
        }
        for (claim, values) in &self.denied() {
            for value in values {
                out.push_str(&format!("deny\t{claim}\t{}\n", value.escape_debug()));
            }
        }
        out
    }

    /// The targets switched off.
    pub fn disabled_targets(&self) -> impl Iterator<Item = &str> {
        self.config.disabled_targets.iter().map(String::as_str)
    }
}

/// Reads `dir/deny.yaml`; a missing file is an empty list.
pub fn load_deny_file(dir: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, Vec<PolicyError>> {
    let path = dir.join(DENY_FILE);
    let label = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(err) => {
            return Err(vec![PolicyError {
                file: label,
                line: 0,
                column: 0,
                field: "yaml".to_owned(),
                message: format!("cannot read the deny list: {err}"),
            }]);
        }
    };
    parse_deny(&label, &text)
}

/// A deny list: a mapping of binding claims to lists of values (a single value may be a
/// scalar).
pub fn parse_deny(
    label: &str,
    text: &str,
) -> Result<BTreeMap<String, BTreeSet<String>>, Vec<PolicyError>> {
    let mut diag = Diagnostics::new(label, text);
    // A file of only comments is an empty list: nothing denied.
    if text
        .lines()
        .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'))
    {
        return Ok(BTreeMap::new());
    }
    let Some(shape) = source::parse(text, &mut diag) else {
        return Err(diag.into_errors());
    };
    let Shape::One(map) = shape else {
        diag.push(
            1,
            "yaml",
            "a deny list is a mapping of binding claims to lists of values",
        );
        return Err(diag.into_errors());
    };
    let mut denied: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (key, value) in map.iter() {
        let claim = key.as_str();
        if !DENY_CLAIMS.contains(&claim) {
            diag.push(
                source::key_line(key),
                claim,
                format!(
                    "a deny list names binding-claim values; use one of {}",
                    DENY_CLAIMS.join(", ")
                ),
            );
            continue;
        }
        let items: Vec<&Node> = match value {
            Node::Sequence(items) => items.iter().collect(),
            scalar @ Node::Scalar(_) => vec![scalar],
            Node::Mapping(_) => {
                diag.push(source::line_of(value), claim, "expected a list of values");
                continue;
            }
        };
        for (index, item) in items.into_iter().enumerate() {
            let field = format!("{claim}[{index}]");
            if let Some(text) = source::string(item, &field, &mut diag) {
                if text.trim().is_empty() {
                    diag.push(source::line_of(item), &field, "a value cannot be empty");
                } else {
                    denied.entry(claim.to_owned()).or_default().insert(text);
                }
            }
        }
    }
    if diag.is_empty() {
        Ok(denied)
    } else {
        Err(diag.into_errors())
    }
}

/// `repository_id "89012345"`, for logs and records.
impl std::fmt::Display for Denylisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.claim, quote(&self.value))
    }
}

/// Where a reload gets the switches: the configuration file (re-read for `enabled` and
/// `[deny]` only; every other key needs a restart) and `deny.yaml`. Each part that fails
/// to load keeps its value in the switches in force (see the module's invariant).
#[derive(Debug)]
pub struct SwitchSource {
    config_file: Option<std::path::PathBuf>,
    /// Targets configured at start: a reload cannot add one.
    known_targets: BTreeSet<String>,
}

impl SwitchSource {
    /// Where the switches of `config` come from.
    pub fn new(config: &crate::config::Config) -> SwitchSource {
        SwitchSource {
            config_file: config.file.clone(),
            known_targets: config.targets.keys().cloned().collect(),
        }
    }

    /// Reads both parts again; a part that fails keeps its value in `in_force`, and the
    /// failure is returned to be reported.
    pub fn reload(&self, dir: &Path, in_force: &Switches) -> (Switches, Vec<String>) {
        let mut problems = Vec::new();
        let mut config_part = in_force.config.clone();
        let mut file_part = in_force.file_deny.clone();
        if let Some(file) = &self.config_file {
            let source = crate::config::ConfigSource {
                file: Some(file.clone()),
                listen: None,
            };
            match crate::config::Config::load(&source) {
                Ok(config) => {
                    let mut fresh = ConfigSwitches::of(&config);
                    fresh
                        .disabled_targets
                        .retain(|target| self.known_targets.contains(target));
                    config_part = fresh;
                }
                Err(err) => problems.push(format!(
                    "the configuration does not load, so its incident switches stay as they were: {err}"
                )),
            }
        }
        match load_deny_file(dir) {
            Ok(deny) => file_part = deny,
            Err(errors) => problems.push(format!(
                "{DENY_FILE} does not load, so the deny list stays as it was: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        }
        (Switches::new(&config_part, &file_part), problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::policy::PolicySet;

    fn deny(claim: &str, values: &[&str]) -> DenyList {
        BTreeMap::from([(
            claim.to_owned(),
            values.iter().map(|value| (*value).to_owned()).collect(),
        )])
    }

    #[test]
    fn the_policy_set_version_covers_the_switches() {
        let none = PolicySet::empty();
        let unchanged = PolicySet::empty().with_switches(Switches::default());
        assert_eq!(none.version(), unchanged.version());
        let denied = Switches::new(&ConfigSwitches::default(), &deny("repository_id", &["1"]));
        let other = Switches::new(&ConfigSwitches::default(), &deny("repository_id", &["2"]));
        let with_denied = PolicySet::empty().with_switches(denied.clone());
        assert_ne!(with_denied.version(), none.version());
        assert_ne!(
            with_denied.version(),
            PolicySet::empty().with_switches(other).version()
        );
        assert_eq!(
            with_denied.version(),
            PolicySet::empty().with_switches(denied).version()
        );
    }

    #[test]
    fn the_configuration_and_the_file_lists_add_up() {
        let config = ConfigSwitches {
            disabled_targets: BTreeSet::from(["tenant-prod".to_owned()]),
            deny: deny("project_id", &["7"]),
        };
        let switches = Switches::new(&config, &deny("project_id", &["8"]));
        assert_eq!(switches.counts(), (2, 1));
        assert!(switches.target_disabled("tenant-prod"));
        assert_eq!(
            switches.canonical(),
            "target\ttenant-prod\ndeny\tproject_id\t7\ndeny\tproject_id\t8\n"
        );
    }

    #[test]
    fn deny_files_name_binding_claims_with_values() {
        assert_eq!(
            parse_deny("deny.yaml", "# nothing yet\n"),
            Ok(BTreeMap::new())
        );
        assert_eq!(
            parse_deny(
                "deny.yaml",
                "repository_id: \"1\"\nnamespace_id: [\"2\", \"3\"]\n"
            ),
            Ok(BTreeMap::from([
                (
                    "namespace_id".to_owned(),
                    BTreeSet::from(["2".to_owned(), "3".to_owned()])
                ),
                ("repository_id".to_owned(), BTreeSet::from(["1".to_owned()])),
            ]))
        );
        let errors =
            parse_deny("deny.yaml", "repository_id: [\"\"]\nrepository: [x]\n").expect_err("bad");
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "deny.yaml:1: repository_id[0]: a value cannot be empty",
                "deny.yaml:2: repository: a deny list names binding-claim values; use one of repository_id, repository_owner_id, project_id, namespace_id, terraform_workspace_id, terraform_organization_id",
            ]
        );
    }
}
