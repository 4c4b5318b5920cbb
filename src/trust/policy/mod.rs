//! Trust policies: loading `policies/*.yaml`, compiling them against the service
//! configuration, and choosing the policy that decides an exchange.
//!
//! Policies are data that must be *compiled* before they can be evaluated: a
//! [`CompiledPolicy`] exists only after every field was checked, every glob and regex
//! compiled, and the binding-claim rule enforced. Evaluation returns a [`Decision`]
//! that names each condition with its expected and actual value; the same value feeds
//! the HTTP error, `policy explain`, the audit record and the tests.
//!
//! Submodules: `source` (YAML text to nodes with line numbers), `matcher` (the claim
//! matchers), `compile` (nodes to [`CompiledPolicy`]), `decision` (what an evaluation
//! says), `index` ([`PolicySet`] and its per-workload index), `select` (choosing the
//! policy, binding and disclosure questions), `reload` (hot reload), `switches` (the
//! incident switches), `lint` (`policy check`'s rules), `cases` (`policy test`'s cases),
//! `schema` (the JSON Schema of policy files).

pub mod cases;
mod compile;
mod decision;
mod index;
pub mod lint;
mod matcher;
pub mod reload;
pub mod schema;
mod select;
mod source;
pub mod switches;
#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use compile::{CompiledPolicy, Condition, FieldPositions, LintAllow, Mode};
pub use decision::{ConditionOutcome, Decision};
pub use index::PolicySet;
pub use matcher::{Matcher, Pattern};
pub use select::{NearestForOperator, OPERATOR_NEAREST_LIMIT, Selection};
pub use source::Position;

pub use crate::trust::platform::IssuerKind;

/// Who mints the token for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// tokenmint signs the token itself; a policy may set `ttl`.
    Local,
    /// A remote authorization server (auth0, oauth2) decides the token's lifetime.
    Remote,
}

/// What policies need to know about one configured target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// Local or remote.
    pub kind: TargetKind,
    /// The longest lifetime a token for this target may have; a policy `ttl` may not exceed it.
    pub max_ttl: Duration,
}

/// The parts of the service configuration that policies are checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyContext {
    /// Issuer name (a key of `[issuers]`) to its kind.
    pub issuers: BTreeMap<String, IssuerKind>,
    /// Target name (a key of `[targets]`) to what policies need to know about it.
    pub targets: BTreeMap<String, TargetInfo>,
}

impl PolicyContext {
    /// What the configuration says about issuers (kinds) and targets (kinds, lifetimes).
    pub fn from_config(config: &crate::config::Config) -> PolicyContext {
        PolicyContext {
            issuers: config
                .issuers
                .iter()
                .map(|(name, i)| (name.clone(), i.kind))
                .collect(),
            targets: config
                .targets
                .iter()
                .map(|(name, t)| {
                    let kind = match t.kind {
                        crate::config::TargetKindConfig::Local { .. } => TargetKind::Local,
                        crate::config::TargetKindConfig::Remote(_) => TargetKind::Remote,
                    };
                    (
                        name.clone(),
                        TargetInfo {
                            kind,
                            max_ttl: t.max_ttl,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One problem in a policy file, printed as `{file}:{line}: {field}: {message}`.
///
/// `line` is 1-based; it is 0 only when the problem concerns no line (an unreadable
/// file or directory). `column` is the 1-based column where the offending field's entry
/// starts on that line (0 with line 0); `policy check` prints it, the service's log does not. `field` is the dotted path of the offending field inside the
/// policy (`claims.workflow_ref.glob`), or `yaml` for problems of the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct PolicyError {
    /// The file as the operator knows it, e.g. `policies/deploy.yaml`.
    pub file: String,
    /// 1-based line of the offending node (0: the whole file).
    pub line: usize,
    /// 1-based column of the offending entry on `line` (0: the whole file).
    pub column: usize,
    /// Dotted path of the offending field.
    pub field: String,
    /// What is wrong, and when it helps, what to write instead.
    pub message: String,
}

/// Loads every `*.yaml` / `*.yml` file directly in `dir`.
///
/// Not recursive: `tests/` and `schema.json` are never policies. Files whose name starts
/// with `.` are skipped (editor and VCS leftovers), as a shell glob would. Files are read
/// in byte order of their names so the result and the errors are deterministic. Every
/// error of every file is returned, not just the first.
pub fn load_dir(dir: &Path, ctx: &PolicyContext) -> Result<PolicySet, Vec<PolicyError>> {
    let (files, mut errors) = list_policy_files(dir);
    let mut policies = Vec::new();
    for path in files {
        match load_file(&path, ctx) {
            Ok(compiled) => policies.extend(compiled),
            Err(file_errors) => errors.extend(file_errors),
        }
    }
    match PolicySet::new(policies) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(errors),
        Err(set_errors) => {
            errors.extend(set_errors);
            Err(errors)
        }
    }
}

/// What `policy check` loads: every file of `dir` exactly as [`load_dir`] reads it, but
/// keeping the policies of the files that compiled beside the errors of those that did
/// not, so a linter can still look at the good ones. Policies whose name another file
/// already took are errors and left out.
pub fn check_dir(dir: &Path, ctx: &PolicyContext) -> (Vec<CompiledPolicy>, Vec<PolicyError>) {
    let (files, mut errors) = list_policy_files(dir);
    let mut policies: Vec<CompiledPolicy> = Vec::new();
    for path in files {
        match load_file(&path, ctx) {
            Ok(compiled) => {
                for policy in compiled {
                    match policies.iter().find(|kept| kept.name() == policy.name()) {
                        // The set's own duplicate error, naming both files.
                        Some(first) => errors.extend(
                            PolicySet::new(vec![first.clone(), policy])
                                .err()
                                .unwrap_or_default(),
                        ),
                        None => policies.push(policy),
                    }
                }
            }
            Err(file_errors) => errors.extend(file_errors),
        }
    }
    (policies, errors)
}

/// The policy files directly in `dir`, sorted by name: `*.yaml` and `*.yml`, not dotfiles,
/// not `deny.yaml` (the deny list), not directories (so never `tests/`), symlinks followed. Also the errors met listing it.
pub fn list_policy_files(dir: &Path) -> (Vec<PathBuf>, Vec<PolicyError>) {
    let dir_label = dir.display().to_string();
    let dir_error = |message: String| PolicyError {
        file: dir_label.clone(),
        line: 0,
        column: 0,
        field: "policies.dir".to_owned(),
        message,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            return (
                Vec::new(),
                vec![dir_error(format!(
                    "cannot read the policy directory: {err}"
                ))],
            );
        }
    };
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                errors.push(dir_error(format!(
                    "cannot list the policy directory: {err}"
                )));
                continue;
            }
        };
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let is_policy_name = !file_name.starts_with('.')
            && file_name != switches::DENY_FILE
            && (file_name.ends_with(".yaml") || file_name.ends_with(".yml"));
        let path = entry.path();
        // `is_file` follows symlinks, so a linked policy file is loaded like any other.
        if is_policy_name && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    (files, errors)
}

/// Reads and compiles one policy file.
pub fn load_file(
    path: &Path,
    ctx: &PolicyContext,
) -> Result<Vec<CompiledPolicy>, Vec<PolicyError>> {
    let label = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_source(&label, &text, ctx),
        Err(err) => Err(vec![PolicyError {
            file: label,
            line: 0,
            column: 0,
            field: "yaml".to_owned(),
            message: format!("cannot read the policy file (it must be UTF-8 text): {err}"),
        }]),
    }
}

/// Compiles one policy file's text.
///
/// `file_label` is what errors print (e.g. `policies/deploy.yaml`); its stem is the
/// default name of the policy in a one-policy file. All errors of the file are
/// returned together.
pub fn load_source(
    file_label: &str,
    text: &str,
    ctx: &PolicyContext,
) -> Result<Vec<CompiledPolicy>, Vec<PolicyError>> {
    let source_sha256 = crate::trust::hash::sha256_hex(text.as_bytes());
    let mut diag = source::Diagnostics::new(file_label, text);
    let Some(shape) = source::parse(text, &mut diag) else {
        return Err(diag.into_errors());
    };
    let file = compile::FileInfo {
        label: file_label,
        sha256: &source_sha256,
        stem: Path::new(file_label)
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or_default(),
    };
    let compiled = compile::compile_file(&shape, &file, ctx, &mut diag);
    if diag.is_empty() {
        Ok(compiled)
    } else {
        Err(diag.into_errors())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{context, github_push_main};
    use super::*;

    const DEPLOY: &str = "issuer: github\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  repository_id: '89012345'\n  ref: refs/heads/main\n";

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write test file");
    }

    #[test]
    fn load_dir_reads_yaml_files_directly_in_the_directory_in_name_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "b-deploy.yaml", DEPLOY);
        write(
            dir.path(),
            "a-list.yml",
            "- name: z-read\n  issuer: gitlab\n  target: tenant-prod\n  scopes: [a]\n  claims: {project_id: '78213456'}\n",
        );
        write(dir.path(), "schema.json", "{}");
        write(dir.path(), "README.md", "not a policy");
        write(dir.path(), ".draft.yaml", "not: [valid");
        std::fs::create_dir(dir.path().join("tests")).expect("tests dir");
        write(&dir.path().join("tests"), "deploy.yaml", "- name: a test\n");

        let set = load_dir(dir.path(), &context()).expect("loads");
        let names: Vec<&str> = set.iter().map(|policy| policy.name()).collect();
        assert_eq!(names, ["z-read", "b-deploy"], "files in name order");
        let deploy = set.get("b-deploy").expect("loaded");
        assert_eq!(
            deploy.source_file(),
            dir.path().join("b-deploy.yaml").display().to_string()
        );
        assert!(set.is_bound(&github_push_main(), "tenant-prod"));
    }

    #[test]
    fn load_dir_returns_every_error_of_every_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(
            dir.path(),
            "one.yaml",
            "issuer: nope\ntarget: tenant-prod\nscopes: [a]\nclaims: {x: y}\n",
        );
        write(
            dir.path(),
            "two.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [a]\nttl: 5m\nclaims: {repository_id: '1'}\n",
        );
        write(dir.path(), "three.yaml", DEPLOY);
        write(dir.path(), "four.yaml", &format!("name: three\n{DEPLOY}"));
        let errors = load_dir(dir.path(), &context()).expect_err("invalid");
        let label = |name: &str| dir.path().join(name).display().to_string();
        let summary: Vec<(String, usize, &str)> = errors
            .iter()
            .map(|error| (error.file.clone(), error.line, error.field.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (label("one.yaml"), 1, "issuer"),
                (label("two.yaml"), 4, "ttl"),
                (label("three.yaml"), 1, "name"),
            ]
        );
        assert_eq!(
            errors[2].message,
            format!(
                "duplicate policy name \"three\": also defined in {}:1",
                label("four.yaml")
            )
        );
    }

    #[test]
    fn load_dir_reports_a_missing_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("policies");
        let errors = load_dir(&missing, &context()).expect_err("missing");
        assert_eq!(errors[0].field, "policies.dir");
        assert_eq!(errors[0].line, 0);
    }

    #[test]
    fn an_empty_directory_is_an_empty_set() {
        let dir = tempfile::tempdir().expect("temp dir");
        let set = load_dir(dir.path(), &context()).expect("loads");
        assert!(set.is_empty());
        assert_eq!(set.version(), PolicySet::empty().version());
    }

    #[test]
    fn policy_errors_print_file_line_field_message() {
        let error = PolicyError {
            file: "policies/deploy.yaml".to_owned(),
            line: 12,
            column: 5,
            field: "claims.workflow_ref.glob".to_owned(),
            message: "the glob ends with a lone `\\`".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "policies/deploy.yaml:12: claims.workflow_ref.glob: the glob ends with a lone `\\`"
        );
    }
}
