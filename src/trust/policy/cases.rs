//! Policy test cases (`policies/tests/*.yaml`) for `policy test`: reading them with their
//! lines, and deciding each one with the same selection code an exchange uses, on
//! [`SimulatedClaims`] that can never pass for a verified token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use marked_yaml::Node;
use serde_json::{Map, Value};

use super::compile::known;
use super::matcher::quote;
use super::source::{self, Diagnostics, Shape};
use super::{Decision, PolicyError, PolicySet, Selection};
use crate::trust::verify::claims::SimulatedClaims;

const FIELDS: &[&str] = &[
    "name",
    "issuer",
    "claims",
    "claims_file",
    "audience",
    "scope",
    "expect",
    "policy",
];

/// What a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Allow,
    Deny,
}

/// One test case, as written.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// The file and line the case starts on.
    pub file: String,
    pub line: usize,
    /// The issuer name, when the case sets one; else the issuer whose URL is `claims.iss`.
    pub issuer: Option<String>,
    pub claims: Map<String, Value>,
    /// A target name or audience URL.
    pub audience: String,
    pub scope: Option<String>,
    pub expect: Expect,
    /// The policy that must decide.
    pub policy: Option<String>,
}

/// What the configuration says about issuers and targets, to resolve a case.
#[derive(Debug, Clone, Default)]
pub struct CaseContext {
    /// Issuer name to its `issuer` URL.
    pub issuer_urls: BTreeMap<String, String>,
    /// Target name to its audience URL, when the URL identifies the target.
    pub target_audiences: BTreeMap<String, Option<String>>,
}

impl CaseContext {
    /// The issuers' URLs and the targets' audiences from the configuration.
    pub fn from_config(config: &crate::config::Config) -> CaseContext {
        CaseContext {
            issuer_urls: config
                .issuers
                .iter()
                .map(|(name, issuer)| (name.clone(), issuer.issuer.clone()))
                .collect(),
            target_audiences: config
                .targets
                .iter()
                .map(|(name, target)| {
                    let url = target.match_audience_url.then(|| target.audience.clone());
                    (name.clone(), url)
                })
                .collect(),
        }
    }

    /// The issuer named `issuer`, or else the one whose URL is `claims.iss`.
    pub fn issuer_for(
        &self,
        issuer: Option<&str>,
        claims: &Map<String, Value>,
    ) -> Result<String, String> {
        if let Some(issuer) = issuer {
            return match self.issuer_urls.contains_key(issuer) {
                true => Ok(issuer.to_owned()),
                false => Err(format!(
                    "unknown issuer {}; configured issuers: {}",
                    quote(issuer),
                    known(self.issuer_urls.keys())
                )),
            };
        }
        let Some(iss) = claims.get("iss").and_then(Value::as_str) else {
            return Err("set `issuer`, or give the claims an `iss`".to_owned());
        };
        self.issuer_urls
            .iter()
            .find(|(_, url)| url.trim_end_matches('/') == iss.trim_end_matches('/'))
            .map(|(name, _)| name.clone())
            .ok_or_else(|| {
                format!(
                    "no configured issuer has the URL {} (claims.iss); set `issuer`",
                    quote(iss)
                )
            })
    }

    /// The target named `audience`, or else the one whose audience URL it is.
    pub fn target_for(&self, audience: &str) -> Result<String, String> {
        if self.target_audiences.contains_key(audience) {
            return Ok(audience.to_owned());
        }
        let by_url: Vec<&String> = self
            .target_audiences
            .iter()
            .filter(|(_, url)| url.as_deref() == Some(audience))
            .map(|(name, _)| name)
            .collect();
        match by_url.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(format!(
                "unknown target {}; configured targets: {}",
                quote(audience),
                known(self.target_audiences.keys())
            )),
        }
    }
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed {
        /// `allow by deploy-prod (read:clients)` or `deny (access_denied)`.
        summary: String,
    },
    Failed {
        /// Why, in one line.
        reason: String,
        /// The conditions that decided: per policy, each condition with ✔ or ✘.
        details: Vec<String>,
    },
}

/// The test files in `dir/tests/`: `*.yaml` and `*.yml`, sorted, not dotfiles.
pub fn list_case_files(policy_dir: &Path) -> Vec<PathBuf> {
    let dir = policy_dir.join("tests");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|name| {
                        !name.starts_with('.')
                            && (name.ends_with(".yaml") || name.ends_with(".yml"))
                    })
        })
        .collect();
    files.sort();
    files
}

/// Reads one test file: a list of cases, or one case. `claims_file` paths are relative
/// to the test file's directory.
pub fn load_cases(path: &Path) -> Result<Vec<Case>, Vec<PolicyError>> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| {
        vec![PolicyError {
            file: label.clone(),
            line: 0,
            column: 0,
            field: "yaml".to_owned(),
            message: format!("cannot read the test file: {err}"),
        }]
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_cases(&label, &text, base)
}

/// Parses test cases from text; `base` resolves `claims_file`.
pub fn parse_cases(label: &str, text: &str, base: &Path) -> Result<Vec<Case>, Vec<PolicyError>> {
    let mut diag = Diagnostics::new(label, text);
    let Some(shape) = source::parse(text, &mut diag) else {
        return Err(diag.into_errors());
    };
    let nodes: Vec<Node> = match shape {
        Shape::One(map) => vec![Node::Mapping(map)],
        Shape::List(items) => items,
    };
    let mut cases = Vec::new();
    for node in &nodes {
        let Node::Mapping(map) = node else {
            diag.push(
                source::line_of(node),
                "yaml",
                format!(
                    "each list element must be a test case (a mapping), found {}",
                    source::describe(node)
                ),
            );
            continue;
        };
        let line = source::line_of(node).max(1);
        let mut case = Case {
            name: String::new(),
            file: label.to_owned(),
            line,
            issuer: None,
            claims: Map::new(),
            audience: String::new(),
            scope: None,
            expect: Expect::Allow,
            policy: None,
        };
        let (mut has_name, mut has_claims, mut has_audience, mut has_expect) =
            (false, false, false, false);
        for (key, value) in map.iter() {
            let field = key.as_str();
            match field {
                "name" => {
                    has_name = true;
                    case.name = source::string(value, field, &mut diag).unwrap_or_default();
                }
                "issuer" => case.issuer = source::string(value, field, &mut diag),
                "audience" => {
                    has_audience = true;
                    case.audience = source::string(value, field, &mut diag).unwrap_or_default();
                }
                "scope" => case.scope = source::string(value, field, &mut diag),
                "policy" => case.policy = source::string(value, field, &mut diag),
                "expect" => {
                    has_expect = true;
                    match source::string(value, field, &mut diag).as_deref() {
                        Some("allow") => case.expect = Expect::Allow,
                        Some("deny") => case.expect = Expect::Deny,
                        Some(other) => diag.push(
                            source::line_of(value),
                            field,
                            format!("expected allow or deny, found {}", quote(other)),
                        ),
                        None => {}
                    }
                }
                "claims" => {
                    if has_claims {
                        diag.push(
                            source::key_line(key),
                            field,
                            "give claims or claims_file, not both",
                        );
                    }
                    has_claims = true;
                    match yaml_to_json(value) {
                        Value::Object(claims) => case.claims = claims,
                        _ => diag.push(
                            source::line_of(value),
                            field,
                            "expected a mapping of claim names to values",
                        ),
                    }
                }
                "claims_file" => {
                    if has_claims {
                        diag.push(
                            source::key_line(key),
                            field,
                            "give claims or claims_file, not both",
                        );
                    }
                    has_claims = true;
                    if let Some(file) = source::string(value, field, &mut diag) {
                        match read_claims_file(&base.join(&file)) {
                            Ok(claims) => case.claims = claims,
                            Err(message) => diag.push(source::line_of(value), field, message),
                        }
                    }
                }
                unknown => diag.push(
                    source::key_line(key),
                    unknown,
                    format!("unknown field; a test case has {}", FIELDS.join(", ")),
                ),
            }
        }
        for (present, field) in [
            (has_name, "name"),
            (has_claims, "claims"),
            (has_audience, "audience"),
            (has_expect, "expect"),
        ] {
            if !present {
                let what = match field {
                    "claims" => "required: claims or claims_file",
                    "expect" => "required: allow or deny",
                    _ => "required",
                };
                diag.push(line, field, what);
            }
        }
        cases.push(case);
    }
    if diag.is_empty() {
        Ok(cases)
    } else {
        Err(diag.into_errors())
    }
}

/// A JSON object of claims; a fixture may also wrap them as `{"claims": {...}}`.
pub fn read_claims_file(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut map)) => match map.remove("claims") {
            Some(Value::Object(claims)) if !map.contains_key("iss") => Ok(claims),
            Some(other) => {
                map.insert("claims".to_owned(), other);
                Ok(map)
            }
            None => Ok(map),
        },
        Ok(_) => Err(format!(
            "{} must hold a JSON object of claims",
            path.display()
        )),
        Err(err) => Err(format!("{} is not JSON: {err}", path.display())),
    }
}

/// YAML to JSON for claims: scalars are strings (a claim compares as text, so `1` and
/// `"1"` are the same), `null`/`~` are null, sequences arrays, mappings objects.
fn yaml_to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(scalar) if source::is_null(scalar) => Value::Null,
        Node::Scalar(scalar) => Value::String(scalar.as_str().to_owned()),
        Node::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.as_str().to_owned(), yaml_to_json(value)))
                .collect(),
        ),
    }
}

/// Decides one case with the service's selection code.
pub fn run_case(case: &Case, policies: &PolicySet, ctx: &CaseContext) -> Verdict {
    let failed = |reason: String| Verdict::Failed {
        reason,
        details: Vec::new(),
    };
    let issuer = match ctx.issuer_for(case.issuer.as_deref(), &case.claims) {
        Ok(issuer) => issuer,
        Err(reason) => return failed(reason),
    };
    let target = match ctx.target_for(&case.audience) {
        Ok(target) => target,
        Err(reason) => return failed(reason),
    };
    if let Some(policy) = &case.policy {
        match policies.get(policy) {
            Some(found) if found.issuer() == issuer && found.target() == target => {}
            Some(found) => {
                return failed(format!(
                    "policy {} is for issuer {} and target {}, not {} and {}",
                    quote(policy),
                    quote(found.issuer()),
                    quote(found.target()),
                    quote(&issuer),
                    quote(&target)
                ));
            }
            None => return failed(format!("no policy named {}", quote(policy))),
        }
    }
    let claims = SimulatedClaims::new(&issuer, case.claims.clone());
    let requested: Option<Vec<String>> = case
        .scope
        .as_deref()
        .map(|scope| scope.split_whitespace().map(str::to_owned).collect());
    let selection = policies.select(&claims, &target, requested.as_deref(), None);
    match (case.expect, selection) {
        (
            Expect::Allow,
            Selection::Granted {
                policy,
                scopes,
                decision,
                ..
            },
        ) => match &case.policy {
            Some(wanted) if wanted != policy.name() => Verdict::Failed {
                reason: format!(
                    "expected allow by {}, got allow by {}",
                    quote(wanted),
                    quote(policy.name())
                ),
                details: describe(&[decision]),
            },
            _ => Verdict::Passed {
                summary: format!("allow by {} ({})", policy.name(), scopes.join(" ")),
            },
        },
        (
            Expect::Deny,
            Selection::Granted {
                policy,
                scopes,
                decision,
                ..
            },
        ) => Verdict::Failed {
            reason: format!(
                "expected deny, got allow by {} ({})",
                quote(policy.name()),
                scopes.join(" ")
            ),
            details: describe(&[decision]),
        },
        (expect, denied) => {
            let (error, decisions) = match denied {
                Selection::NoMatch { decisions, .. } => {
                    ("access_denied: no policy matches", decisions)
                }
                Selection::ScopeExceeded { decisions, .. } => (
                    "invalid_scope: the requested scope exceeds every matching policy",
                    decisions,
                ),
                Selection::Ambiguous { decisions, .. } => (
                    "invalid_scope: several policies match with different scopes",
                    decisions,
                ),
                Selection::UnknownPinnedPolicy | Selection::Granted { .. } => {
                    unreachable!("no policy is pinned, and grants are handled above")
                }
            };
            match expect {
                Expect::Allow => Verdict::Failed {
                    reason: format!("expected allow, got deny ({error})"),
                    details: describe(&decisions),
                },
                Expect::Deny => match &case.policy {
                    // The named policy must be among those that looked at the claims.
                    Some(wanted) if !decisions.iter().any(|d| &d.policy == wanted) => {
                        Verdict::Failed {
                            reason: format!(
                                "expected {} to deny, but it was not evaluated",
                                quote(wanted)
                            ),
                            details: describe(&decisions),
                        }
                    }
                    _ => Verdict::Passed {
                        summary: format!("deny ({error})"),
                    },
                },
            }
        }
    }
}

/// Each decision as `policy NAME: ✔ claim ...` lines.
fn describe(decisions: &[Decision]) -> Vec<String> {
    if decisions.is_empty() {
        return vec!["no policy exists for this issuer and target".to_owned()];
    }
    let mut lines = Vec::new();
    for decision in decisions {
        let verdict = if decision.allowed {
            "matches"
        } else {
            "does not match"
        };
        lines.push(format!("policy {} {verdict}:", decision.policy));
        for condition in &decision.conditions {
            lines.push(format!("  {}", condition.marked()));
        }
    }
    lines
}
