//! Compiling policy YAML into [`CompiledPolicy`] values: every field checked against
//! the service configuration (issuers, targets, `ttl` limits), scopes validated as
//! literal scope tokens, matchers compiled, and the binding-claim rule enforced.
//! Also evaluation of one compiled policy on verified claims, including the
//! dangerous-trigger rule for GitHub.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;
use serde::Serialize;

use super::decision::{ConditionOutcome, Decision};
use super::matcher::{self, Matcher, quote};
use super::source::{self, Diagnostics, Position, Shape};
use super::{IssuerKind, PolicyContext, TargetKind};
use crate::trust::verify::claims::ClaimsView;

pub(super) const FIELDS: &[&str] = &[
    "name",
    "description",
    "issuer",
    "target",
    "scopes",
    "ttl",
    "mode",
    "enabled",
    "unbound",
    "lint",
    "claims",
];

/// Whether a policy grants or only records what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The policy may grant tokens.
    Enforce,
    /// The policy is evaluated and recorded as `would_allow`; it never grants.
    Audit,
}

/// One `claims:` entry of a compiled policy.
#[derive(Debug, Clone)]
pub struct Condition {
    claim: Arc<str>,
    matcher: Matcher,
    /// `matcher` as people read it, rendered once.
    expected: Arc<str>,
    binding: bool,
    position: Position,
}

impl Condition {
    /// The claim's name.
    pub fn claim(&self) -> &str {
        &self.claim
    }

    /// The compiled matcher.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Whether this condition pins a binding claim of the issuer to exact values.
    pub fn is_binding(&self) -> bool {
        self.binding
    }

    /// The 1-based line of the condition in its file.
    pub fn line(&self) -> usize {
        self.position.line
    }

    /// Where the condition's claim name is written in its file.
    pub fn position(&self) -> Position {
        self.position
    }
}

/// Where a policy's own fields are written, for findings about them; a field the
/// policy does not set has the policy's own position.
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldPositions {
    pub policy: Position,
    pub scopes: Position,
    pub ttl: Position,
    pub unbound: Position,
    pub claims: Position,
}

/// A policy's `lint:` acknowledgement: the linter findings its authors accepted, and why.
#[derive(Debug, Clone, Default)]
pub struct LintAllow {
    /// Rule ids (`TM004`), each one of [`super::lint::RULES`] other than `TM000`.
    pub allow: Vec<String>,
    /// Why the findings are acceptable; required and non-empty.
    pub reason: String,
}

/// A policy that passed every load check; only [`super::load_source`] builds one.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    name: String,
    description: Option<String>,
    issuer: String,
    issuer_kind: IssuerKind,
    target: String,
    scopes: Vec<String>,
    ttl: Option<Duration>,
    mode: Mode,
    enabled: bool,
    unbound: bool,
    source_file: String,
    source_line: usize,
    source_sha256: String,
    positions: FieldPositions,
    lint: LintAllow,
    conditions: Vec<Condition>,
}

impl CompiledPolicy {
    /// The unique policy name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The optional human description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The issuer name (a key of `[issuers]`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The issuer's kind, as configured when the policy was compiled.
    pub fn issuer_kind(&self) -> IssuerKind {
        self.issuer_kind
    }

    /// The target name (a key of `[targets]`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The literal scopes this policy grants at most, in policy order.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The token lifetime for a local target; `None` means the target's `max_ttl`.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Enforce or audit.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the policy takes part in exchanges at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the policy was allowed to have no binding claim (`unbound: true`).
    pub fn unbound(&self) -> bool {
        self.unbound
    }

    /// The file the policy came from, as errors print it.
    pub fn source_file(&self) -> &str {
        &self.source_file
    }

    /// The 1-based line where the policy starts in its file.
    pub fn source_line(&self) -> usize {
        self.source_line
    }

    /// The 1-based column where the policy starts on its line.
    pub fn source_column(&self) -> usize {
        self.positions.policy.column
    }

    /// Where the policy's fields are written.
    pub fn positions(&self) -> &FieldPositions {
        &self.positions
    }

    /// The linter findings this policy acknowledges.
    pub fn lint_allow(&self) -> &LintAllow {
        &self.lint
    }

    /// Hex SHA-256 of the whole file's bytes.
    pub fn source_sha256(&self) -> &str {
        &self.source_sha256
    }

    /// The conditions, in policy order.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// Whether the policy has at least one binding condition (and so is indexed by it).
    pub fn has_binding_condition(&self) -> bool {
        self.conditions.iter().any(|condition| condition.binding)
    }

    /// Whether this policy names the workload: it has a binding condition and the
    /// claims satisfy every one of them. Only then may its content be disclosed.
    pub fn binds(&self, claims: &impl ClaimsView) -> bool {
        #[cfg(test)]
        counter::record();

        let mut binding = self
            .conditions
            .iter()
            .filter(|condition| condition.binding)
            .peekable();
        binding.peek().is_some()
            && binding.all(|condition| condition.matcher.matches(claims.get(&condition.claim)))
    }

    /// Evaluates every condition on verified claims. Whether the policy is enabled and
    /// in enforce mode is the caller's business; this answers only "do the claims match".
    /// It does not check that the claims come from this policy's issuer; the
    /// [`super::PolicySet`] methods only evaluate policies of the token's issuer.
    pub fn evaluate(&self, claims: &impl ClaimsView) -> Decision {
        #[cfg(test)]
        counter::record();

        let dangerous = dangerous_triggers(self.issuer_kind, claims);
        let mut saw_event_name = false;
        let mut outcomes = Vec::with_capacity(self.conditions.len() + 1);
        for condition in &self.conditions {
            let actual = claims.get(&condition.claim);
            let mut passed = condition.matcher.matches(actual);
            let mut expected = Arc::clone(&condition.expected);
            if &*condition.claim == "event_name" && !dangerous.is_empty() {
                saw_event_name = true;
                let unlisted: Vec<&str> = dangerous
                    .iter()
                    .copied()
                    .filter(|trigger| !condition.matcher.lists_exactly(trigger))
                    .collect();
                if !unlisted.is_empty() {
                    passed = false;
                    expected = listed_explicitly(&unlisted).into();
                }
            }
            outcomes.push(ConditionOutcome {
                claim: Arc::clone(&condition.claim),
                expected,
                actual: actual.map(ToString::to_string),
                passed,
                binding: condition.binding,
            });
        }
        if !dangerous.is_empty() && !saw_event_name {
            outcomes.push(ConditionOutcome {
                claim: "event_name".into(),
                expected: listed_explicitly(&dangerous).into(),
                actual: claims.get("event_name").map(ToString::to_string),
                passed: false,
                binding: false,
            });
        }
        Decision {
            policy: self.name.clone(),
            allowed: outcomes.iter().all(|outcome| outcome.passed),
            conditions: outcomes,
        }
    }
}

/// The platform's dangerous triggers that a token's `event_name` carries (a string, or,
/// should it ever be one, an array).
fn dangerous_triggers(kind: IssuerKind, claims: &impl ClaimsView) -> Vec<&'static str> {
    let triggers = kind.platform().dangerous_triggers;
    if triggers.is_empty() {
        return Vec::new();
    }
    let Some(event_name) = claims.get("event_name") else {
        return Vec::new();
    };
    let texts = matcher::claim_texts(event_name);
    triggers
        .iter()
        .copied()
        .filter(|trigger| texts.iter().any(|text| text == trigger))
        .collect()
}

/// The expectation of a dangerous trigger the policy does not name; it reads after
/// `claim "event_name" is "pull_request_target", expected `.
fn listed_explicitly(triggers: &[&str]) -> String {
    let quoted: Vec<String> = triggers.iter().map(|trigger| quote(trigger)).collect();
    let what = if triggers.len() == 1 {
        "a dangerous trigger"
    } else {
        "dangerous triggers"
    };
    format!(
        "the policy to name {} explicitly in event_name ({what}: patterns and not never admit it)",
        quoted.join(" and ")
    )
}

/// The file a policy is compiled from.
pub(crate) struct FileInfo<'a> {
    pub(crate) label: &'a str,
    pub(crate) sha256: &'a str,
    pub(crate) stem: &'a str,
}

/// Compiles every policy of a file; errors go to `diag`.
pub(crate) fn compile_file(
    shape: &Shape,
    file: &FileInfo<'_>,
    ctx: &PolicyContext,
    diag: &mut Diagnostics,
) -> Vec<CompiledPolicy> {
    let mut compiled: Vec<CompiledPolicy> = Vec::new();
    match shape {
        Shape::One(map) => compiled.extend(compile_policy(map, Some(file.stem), file, ctx, diag)),
        Shape::List(items) => {
            for item in items {
                match item {
                    Node::Mapping(map) => {
                        compiled.extend(compile_policy(map, None, file, ctx, diag));
                    }
                    other => diag.push(
                        source::line_of(other),
                        "yaml",
                        format!(
                            "each list element must be a policy (a mapping), found {}",
                            source::describe(other)
                        ),
                    ),
                }
            }
        }
    }
    let mut seen: Vec<&CompiledPolicy> = Vec::new();
    for policy in &compiled {
        if let Some(first) = seen.iter().find(|first| first.name == policy.name) {
            diag.push(
                policy.source_line,
                "name",
                format!(
                    "duplicate policy name {} (also defined on line {})",
                    quote(&policy.name),
                    first.source_line
                ),
            );
        } else {
            seen.push(policy);
        }
    }
    compiled
}

/// A field value with the line it was written on.
struct Located<T> {
    value: T,
    line: usize,
}

/// Whether a policy name is acceptable: `^[a-z0-9][a-z0-9_.-]{0,127}$` without `..`.
pub(crate) fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some((first, rest)) = bytes.split_first() else {
        return false;
    };
    (first.is_ascii_lowercase() || first.is_ascii_digit())
        && rest.len() <= 127
        && rest.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
        && !name.contains("..")
}

const NAME_RULE: &str = "a policy name is 1 to 128 characters of a-z, 0-9, '_', '.', '-', starts with a letter or digit and has no \"..\"";

/// A scope token per RFC 6749 §3.3: %x21 / %x23-5B / %x5D-7E.
fn scope_token_problem(scope: &str) -> Option<String> {
    if scope.is_empty() {
        return Some("a scope cannot be empty".to_owned());
    }
    if scope.contains('*') {
        return Some(format!(
            "scope {} contains `*`: scopes are literal, there are no wildcards; list each scope",
            quote(scope)
        ));
    }
    let bad = scope
        .chars()
        .find(|&c| !matches!(c, '\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E'));
    bad.map(|c| {
        format!(
            "scope {} contains {c:?}, which a scope token (RFC 6749) cannot contain",
            quote(scope)
        )
    })
}

fn compile_policy(
    map: &MarkedMappingNode,
    default_name: Option<&str>,
    file: &FileInfo<'_>,
    ctx: &PolicyContext,
    diag: &mut Diagnostics,
) -> Option<CompiledPolicy> {
    let errors_before = diag.count();
    let policy_position = map
        .span()
        .start()
        .map_or(Position { line: 1, column: 1 }, Position::of);
    let policy_line = policy_position.line;
    let mut positions = FieldPositions {
        policy: policy_position,
        scopes: policy_position,
        ttl: policy_position,
        unbound: policy_position,
        claims: policy_position,
    };
    let mut lint = LintAllow::default();

    let mut name = None;
    let mut description = None;
    let mut issuer = None;
    let mut target = None;
    let mut scopes_node = None;
    let mut ttl_node = None;
    let mut mode = Mode::Enforce;
    let mut enabled = true;
    let mut unbound = false;
    let mut claims_node = None;

    for (key, value) in map.iter() {
        let field = key.as_str();
        let line = source::line_of(value);
        let located = |value: String| Located { value, line };
        let key_position = source::key_position(key);
        match field {
            "name" => name = source::string(value, field, diag).map(located),
            "description" => description = source::string(value, field, diag),
            "issuer" => issuer = source::string(value, field, diag).map(located),
            "target" => target = source::string(value, field, diag).map(located),
            "scopes" => {
                positions.scopes = key_position;
                scopes_node = Some(value);
            }
            "ttl" => {
                positions.ttl = key_position;
                ttl_node = Some(value);
            }
            "mode" => {
                if let Some(text) = source::string(value, field, diag) {
                    match text.as_str() {
                        "enforce" => mode = Mode::Enforce,
                        "audit" => mode = Mode::Audit,
                        other => diag.push(
                            line,
                            field,
                            format!("unknown mode {}; use enforce or audit", quote(other)),
                        ),
                    }
                }
            }
            "enabled" => enabled = source::boolean(value, field, diag).unwrap_or(enabled),
            "unbound" => {
                positions.unbound = key_position;
                unbound = source::boolean(value, field, diag).unwrap_or(unbound);
            }
            "lint" => lint = compile_lint(value, diag),
            "claims" => {
                positions.claims = key_position;
                claims_node = Some(value);
            }
            unknown => diag.push(
                source::key_line(key),
                unknown,
                format!("unknown field; a policy has {}", FIELDS.join(", ")),
            ),
        }
    }

    // Name.
    let name = match (name, default_name) {
        (Some(name), _) => {
            if !valid_name(&name.value) {
                diag.push(
                    name.line,
                    "name",
                    format!("invalid name {}: {NAME_RULE}", quote(&name.value)),
                );
            }
            name.value
        }
        (None, Some(stem)) => {
            if !valid_name(stem) {
                diag.push(
                    policy_line,
                    "name",
                    format!(
                        "the file stem {} is not a valid policy name, so set `name:` ({NAME_RULE})",
                        quote(stem)
                    ),
                );
            }
            stem.to_owned()
        }
        (None, None) => {
            diag.push(
                policy_line,
                "name",
                "required: every policy in a list of policies needs a name",
            );
            String::new()
        }
    };

    // Issuer and target.
    let issuer_kind = match &issuer {
        Some(issuer) => {
            let kind = ctx.issuers.get(&issuer.value).copied();
            if kind.is_none() {
                diag.push(
                    issuer.line,
                    "issuer",
                    format!(
                        "unknown issuer {}; configured issuers: {}",
                        quote(&issuer.value),
                        known(ctx.issuers.keys())
                    ),
                );
            }
            kind
        }
        None => {
            diag.push(policy_line, "issuer", "required: a key of [issuers]");
            None
        }
    };
    let target_info = match &target {
        Some(target) => {
            let info = ctx.targets.get(&target.value);
            if info.is_none() {
                diag.push(
                    target.line,
                    "target",
                    format!(
                        "unknown target {}; configured targets: {}",
                        quote(&target.value),
                        known(ctx.targets.keys())
                    ),
                );
            }
            info
        }
        None => {
            diag.push(policy_line, "target", "required: a key of [targets]");
            None
        }
    };

    // Scopes.
    let scopes = match scopes_node {
        Some(node) => compile_scopes(node, diag),
        None => {
            diag.push(
                policy_line,
                "scopes",
                "required: a non-empty list of the literal scopes this policy may grant",
            );
            Vec::new()
        }
    };

    // TTL.
    let ttl = ttl_node.and_then(|node| {
        let line = source::line_of(node);
        let text = source::string(node, "ttl", diag)?;
        let ttl = match humantime::parse_duration(&text) {
            Ok(ttl) => ttl,
            Err(err) => {
                diag.push(
                    line,
                    "ttl",
                    format!("invalid duration {}: {err} (write e.g. 10m)", quote(&text)),
                );
                return None;
            }
        };
        if ttl.is_zero() {
            diag.push(line, "ttl", "must be greater than zero");
        }
        if let (Some(info), Some(target)) = (target_info, &target) {
            match info.kind {
                TargetKind::Remote => diag.push(
                    line,
                    "ttl",
                    format!(
                        "only local targets take a ttl; remote target {} decides its tokens' lifetime",
                        quote(&target.value)
                    ),
                ),
                TargetKind::Local if ttl > info.max_ttl => diag.push(
                    line,
                    "ttl",
                    format!(
                        "{} exceeds the max_ttl {} of target {}",
                        humantime::format_duration(ttl),
                        humantime::format_duration(info.max_ttl),
                        quote(&target.value)
                    ),
                ),
                TargetKind::Local => {}
            }
        }
        Some(ttl)
    });

    // Claims.
    let conditions = match claims_node {
        Some(node) => compile_conditions(node, issuer_kind, diag),
        None => {
            diag.push(
                policy_line,
                "claims",
                "required: a mapping of claim names to matchers",
            );
            Vec::new()
        }
    };

    // Binding claims.
    if let Some(kind) = issuer_kind {
        let binding_claims = kind.binding_claims();
        let has_binding = conditions.iter().any(|condition| condition.binding);
        if !binding_claims.is_empty() && !has_binding && !unbound && claims_node.is_some() {
            let line = claims_node.map_or(policy_line, source::line_of);
            diag.push(
                line,
                "claims",
                format!(
                    "no binding claim: a policy for the {} issuer {} must pin {} to an exact string \
                     or a list of exact strings, or else any workload on this shared issuer may match; \
                     set `unbound: true` only if that is intended",
                    kind.as_str(),
                    issuer.as_ref().map_or_else(String::new, |issuer| quote(&issuer.value)),
                    binding_claims.join(" or ")
                ),
            );
        }
    }

    if diag.count() != errors_before {
        return None;
    }
    Some(CompiledPolicy {
        name,
        description,
        issuer: issuer.map(|issuer| issuer.value)?,
        issuer_kind: issuer_kind?,
        target: target.map(|target| target.value)?,
        scopes,
        ttl,
        mode,
        enabled,
        unbound,
        source_file: file.label.to_owned(),
        source_line: policy_line,
        source_sha256: file.sha256.to_owned(),
        positions,
        lint,
        conditions,
    })
}

pub(super) fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn compile_scopes(node: &Node, diag: &mut Diagnostics) -> Vec<String> {
    let Node::Sequence(items) = node else {
        diag.push(
            source::line_of(node),
            "scopes",
            format!(
                "expected a non-empty list of literal scopes, found {}",
                source::describe(node)
            ),
        );
        return Vec::new();
    };
    if items.is_empty() {
        diag.push(
            source::line_of(node),
            "scopes",
            "a policy must grant at least one scope",
        );
    }
    let mut scopes = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        let field = format!("scopes[{index}]");
        let Some(scope) = source::string(item, &field, diag) else {
            continue;
        };
        if let Some(problem) = scope_token_problem(&scope) {
            diag.push(source::line_of(item), &field, problem);
        } else if !seen.insert(scope.clone()) {
            diag.push(
                source::line_of(item),
                &field,
                format!("duplicate scope {}", quote(&scope)),
            );
        } else {
            scopes.push(scope);
        }
    }
    scopes
}

fn compile_conditions(
    node: &Node,
    issuer_kind: Option<IssuerKind>,
    diag: &mut Diagnostics,
) -> Vec<Condition> {
    let Node::Mapping(map) = node else {
        diag.push(
            source::line_of(node),
            "claims",
            format!(
                "expected a mapping of claim names to matchers, found {}",
                source::describe(node)
            ),
        );
        return Vec::new();
    };
    if map.is_empty() {
        diag.push(
            source::line_of(node),
            "claims",
            "a policy needs at least one claim condition",
        );
    }
    let binding_claims = issuer_kind.map_or(&[][..], IssuerKind::binding_claims);
    let mut conditions = Vec::with_capacity(map.len());
    for (key, value) in map.iter() {
        let claim = key.as_str();
        let field = format!("claims.{claim}");
        if claim.is_empty() {
            diag.push(
                source::key_line(key),
                &field,
                "a claim name cannot be empty",
            );
            continue;
        }
        if let Some(matcher) = matcher::compile(value, &field, diag) {
            let binding = binding_claims.contains(&claim) && matcher.exact_values().is_some();
            conditions.push(Condition {
                claim: claim.into(),
                expected: matcher.expected().into(),
                matcher,
                binding,
                position: source::key_position(key),
            });
        }
    }
    conditions
}

/// `lint: { allow: [TM004, ...], reason: "..." }`: known rule ids other than `TM000`
/// (a load error cannot be acknowledged), and a reason a reviewer can read.
fn compile_lint(node: &Node, diag: &mut Diagnostics) -> LintAllow {
    let mut lint = LintAllow::default();
    let Node::Mapping(map) = node else {
        diag.push(
            source::line_of(node),
            "lint",
            format!(
                "expected a mapping {{allow: [rule ids], reason: \"...\"}}, found {}",
                source::describe(node)
            ),
        );
        return lint;
    };
    let mut has_allow = false;
    let mut has_reason = false;
    for (key, value) in map.iter() {
        match key.as_str() {
            "allow" => {
                has_allow = true;
                let Node::Sequence(items) = value else {
                    diag.push(
                        source::line_of(value),
                        "lint.allow",
                        format!(
                            "expected a list of rule ids, found {}",
                            source::describe(value)
                        ),
                    );
                    continue;
                };
                if items.is_empty() {
                    diag.push(
                        source::line_of(value),
                        "lint.allow",
                        "list at least one rule id, or remove `lint`",
                    );
                }
                for (index, item) in items.iter().enumerate() {
                    let field = format!("lint.allow[{index}]");
                    let Some(id) = source::string(item, &field, diag) else {
                        continue;
                    };
                    if id == super::lint::LOAD_ERROR {
                        diag.push(
                            source::line_of(item),
                            &field,
                            "TM000 is a load error, which cannot be acknowledged: fix the file",
                        );
                    } else if super::lint::rule(&id).is_none() {
                        diag.push(
                            source::line_of(item),
                            &field,
                            format!(
                                "unknown rule id {}; `tokenmint policy check` lists the rules with their ids",
                                quote(&id)
                            ),
                        );
                    } else if !lint.allow.contains(&id) {
                        lint.allow.push(id);
                    }
                }
            }
            "reason" => {
                has_reason = true;
                if let Some(reason) = source::string(value, "lint.reason", diag) {
                    if reason.trim().is_empty() {
                        diag.push(
                            source::line_of(value),
                            "lint.reason",
                            "say why the findings are acceptable",
                        );
                    }
                    lint.reason = reason;
                }
            }
            other => diag.push(
                source::key_line(key),
                &format!("lint.{other}"),
                "unknown field; `lint` has allow and reason",
            ),
        }
    }
    if !has_allow {
        diag.push(
            source::line_of(node),
            "lint.allow",
            "required: the rule ids acknowledged",
        );
    }
    if !has_reason {
        diag.push(
            source::line_of(node),
            "lint.reason",
            "required: why the acknowledged findings are acceptable",
        );
    }
    lint
}

/// Counts evaluations on this thread, so a test can prove what a request looks at.
#[cfg(test)]
pub(crate) mod counter {
    use std::cell::Cell;

    thread_local! {
        static EVALUATIONS: Cell<usize> = const { Cell::new(0) };
    }

    pub(crate) fn record() {
        EVALUATIONS.with(|count| count.set(count.get() + 1));
    }

    /// Evaluations on this thread since the last call.
    pub(crate) fn take() -> usize {
        EVALUATIONS.with(|count| count.replace(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::policy::testing::{compile_err, compile_one, github_push_main, with_claims};
    use crate::trust::policy::{PolicyError, load_source};
    use serde_json::json;

    fn messages(errors: &[PolicyError]) -> String {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    const GOOD: &str = "\
description: Deploy tenant configuration from main of acme/identity-config
issuer: github
target: tenant-prod
scopes: [read:clients, update:clients, read:resource_servers]
claims:
  repository_owner_id: \"1234567\"
  repository_id: \"89012345\"
  ref: refs/heads/main
  event_name: [push, workflow_dispatch]
  workflow_ref: { glob: \"acme/identity-config/.github/workflows/*.yml@refs/heads/main\" }
  job_workflow_ref: { regex: 'acme/identity-config/\\.github/workflows/deploy\\.yml@refs/heads/main' }
";

    #[test]
    fn a_realistic_policy_compiles_and_allows_the_push_to_main() {
        let policy = compile_one("policies/deploy-tenant-prod.yaml", GOOD);
        assert_eq!(
            policy.name(),
            "deploy-tenant-prod",
            "the file stem is the default name"
        );
        assert_eq!(policy.issuer(), "github");
        assert_eq!(policy.target(), "tenant-prod");
        assert_eq!(
            policy.scopes(),
            ["read:clients", "update:clients", "read:resource_servers"]
        );
        assert_eq!(policy.mode(), Mode::Enforce);
        assert!(policy.enabled());
        assert!(!policy.unbound());
        assert_eq!(policy.ttl(), None);
        assert_eq!(policy.source_file(), "policies/deploy-tenant-prod.yaml");
        assert_eq!(policy.source_sha256().len(), 64);
        let binding: Vec<&str> = policy
            .conditions()
            .iter()
            .filter(|condition| condition.is_binding())
            .map(Condition::claim)
            .collect();
        assert_eq!(binding, ["repository_owner_id", "repository_id"]);
        let decision = policy.evaluate(&github_push_main());
        assert!(decision.allowed, "{}", decision.describe_failures());
        assert_eq!(decision.conditions.len(), 6);
        assert_eq!(
            decision.conditions[1].actual.as_deref(),
            Some("\"89012345\"")
        );
    }

    #[test]
    fn source_sha256_is_the_hash_of_the_file_bytes() {
        let policy = compile_one("p.yaml", GOOD);
        assert_eq!(
            policy.source_sha256(),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(GOOD.as_bytes()))
        );
    }

    #[test]
    fn evaluation_reports_actual_and_expected_per_condition() {
        let policy = compile_one("policies/deploy.yaml", GOOD);
        let claims = with_claims(
            github_push_main(),
            json!({"ref": "refs/heads/dev", "workflow_ref": null, "event_name": ["push", "x"]}),
        );
        let decision = policy.evaluate(&claims);
        assert!(!decision.allowed);
        assert_eq!(
            decision.describe_failures(),
            "claim \"ref\" is \"refs/heads/dev\", expected \"refs/heads/main\"; \
             claim \"workflow_ref\" is null, expected glob \"acme/identity-config/.github/workflows/*.yml@refs/heads/main\""
        );
        let event = &decision.conditions[3];
        assert_eq!(event.actual.as_deref(), Some("[\"push\",\"x\"]"));
        assert!(event.passed);
    }

    #[test]
    fn absent_claims_are_described_as_absent() {
        let policy = compile_one(
            "policies/prod.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  repository_id: \"89012345\"\n  environment: production\n",
        );
        let decision = policy.evaluate(&github_push_main());
        assert_eq!(
            decision.describe_failures(),
            "claim \"environment\" is absent, expected \"production\""
        );
    }

    #[test]
    fn a_policy_for_a_shared_issuer_must_pin_a_binding_claim() {
        let errors = compile_err(
            "policies/p.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  repository: acme/identity-config\n  repository_id: {glob: '8901*'}\n",
        );
        assert_eq!(errors.len(), 1, "{}", messages(&errors));
        assert_eq!(errors[0].line, 5);
        assert_eq!(errors[0].field, "claims");
        assert!(
            errors[0]
                .message
                .contains("repository_id or repository_owner_id"),
            "{}",
            errors[0].message
        );
        assert!(errors[0].message.contains("unbound: true"));
        for (issuer, claim) in [
            ("gitlab", "project_id or namespace_id"),
            (
                "terraform",
                "terraform_workspace_id or terraform_organization_id",
            ),
        ] {
            let errors = compile_err(
                "p.yaml",
                &format!(
                    "issuer: {issuer}\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  ref: main\n"
                ),
            );
            assert!(errors[0].message.contains(claim), "{}", messages(&errors));
        }
        let not_exact = compile_err(
            "p.yaml",
            "issuer: gitlab\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  project_id: {not: '1'}\n",
        );
        assert!(not_exact[0].message.contains("no binding claim"));
    }

    #[test]
    fn unbound_true_and_generic_issuers_need_no_binding_claim() {
        let unbound = compile_one(
            "p.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [a]\nunbound: true\nclaims:\n  repository: acme/identity-config\n",
        );
        assert!(unbound.unbound());
        assert!(!unbound.has_binding_condition());
        let generic = compile_one(
            "p.yaml",
            "issuer: internal\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  sub: system:serviceaccount:ci:deployer\n",
        );
        assert!(!generic.has_binding_condition());
        let list_of_exact = compile_one(
            "p.yaml",
            "issuer: gitlab\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  namespace_id: ['112358', '4']\n",
        );
        assert!(list_of_exact.conditions()[0].is_binding());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_all_reported() {
        let errors = compile_err(
            "policies/p.yaml",
            "issuer: gitlub\ntarget: nowhere\nscope: [a]\nmode: shadow\nenabled: yes\nclaims: {}\n",
        );
        let text = messages(&errors);
        assert!(text.contains("policies/p.yaml:1: issuer: unknown issuer \"gitlub\"; configured issuers: github, gitlab, internal, terraform"), "{text}");
        assert!(
            text.contains("policies/p.yaml:2: target: unknown target \"nowhere\""),
            "{text}"
        );
        assert!(
            text.contains(
                "policies/p.yaml:3: scope: unknown field; a policy has name, description"
            ),
            "{text}"
        );
        assert!(
            text.contains("policies/p.yaml:4: mode: unknown mode \"shadow\""),
            "{text}"
        );
        assert!(
            text.contains(
                "policies/p.yaml:5: enabled: expected true or false (unquoted), found \"yes\""
            ),
            "{text}"
        );
        assert!(
            text.contains("policies/p.yaml:1: scopes: required"),
            "{text}"
        );
        assert!(
            text.contains("policies/p.yaml:6: claims: a policy needs at least one claim condition"),
            "{text}"
        );
    }

    #[test]
    fn missing_required_fields_are_named() {
        let errors = compile_err("policies/p.yaml", "description: nothing else\n");
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["issuer", "target", "scopes", "claims"]);
    }

    #[test]
    fn errors_name_file_line_and_dotted_field() {
        let errors = compile_err(
            "policies/deploy.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  repository_id: \"1\"\n  workflow_ref: {glob: 'a/***'}\n  ref: [main, [dev]]\n",
        );
        let text = messages(&errors);
        assert!(
            text.contains("policies/deploy.yaml:6: claims.workflow_ref.glob: "),
            "{text}"
        );
        assert!(
            text.contains("policies/deploy.yaml:7: claims.ref[1]: lists cannot be nested"),
            "{text}"
        );
    }

    #[test]
    fn scopes_are_literal_unique_scope_tokens() {
        let star = compile_err(
            "p.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: ['read:*']\nclaims: {repository_id: '1'}\n",
        );
        assert_eq!(star[0].field, "scopes[0]");
        assert!(
            star[0].message.contains("scopes are literal"),
            "{}",
            star[0].message
        );
        let dup = compile_err(
            "p.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [a, b, a]\nclaims: {repository_id: '1'}\n",
        );
        assert_eq!(
            dup[0].to_string(),
            "p.yaml:3: scopes[2]: duplicate scope \"a\""
        );
        for bad in ["'a b'", "'a\"b'", "'a\\b'", "''", "'é'"] {
            let errors = compile_err(
                "p.yaml",
                &format!(
                    "issuer: github\ntarget: tenant-prod\nscopes: [{bad}]\nclaims: {{repository_id: '1'}}\n"
                ),
            );
            assert_eq!(errors[0].field, "scopes[0]", "{bad}");
        }
        let empty = compile_err(
            "p.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: []\nclaims: {repository_id: '1'}\n",
        );
        assert!(empty[0].message.contains("at least one scope"));
        let scalar = compile_err(
            "p.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: read:clients\nclaims: {repository_id: '1'}\n",
        );
        assert!(scalar[0].message.contains("found a string"));
    }

    #[test]
    fn ttl_is_for_local_targets_within_max_ttl() {
        let ok = compile_one(
            "p.yaml",
            "issuer: github\ntarget: internal-api\nscopes: [a]\nttl: 10m\nclaims: {repository_id: '1'}\n",
        );
        assert_eq!(ok.ttl(), Some(Duration::from_secs(600)));
        let remote = compile_err(
            "p.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [a]\nttl: 10m\nclaims: {repository_id: '1'}\n",
        );
        assert_eq!(remote[0].field, "ttl");
        assert!(
            remote[0].message.contains("only local targets"),
            "{}",
            remote[0].message
        );
        let long = compile_err(
            "p.yaml",
            "issuer: github\ntarget: internal-api\nscopes: [a]\nttl: 2h\nclaims: {repository_id: '1'}\n",
        );
        assert_eq!(
            long[0].to_string(),
            "p.yaml:4: ttl: 2h exceeds the max_ttl 15m of target \"internal-api\""
        );
        let zero = compile_err(
            "p.yaml",
            "issuer: github\ntarget: internal-api\nscopes: [a]\nttl: 0s\nclaims: {repository_id: '1'}\n",
        );
        assert!(zero[0].message.contains("greater than zero"));
        let garbage = compile_err(
            "p.yaml",
            "issuer: github\ntarget: internal-api\nscopes: [a]\nttl: soon\nclaims: {repository_id: '1'}\n",
        );
        assert!(garbage[0].message.contains("invalid duration"));
    }

    #[test]
    fn names_follow_the_name_rule() {
        assert!(valid_name("deploy-tenant-prod"));
        assert!(valid_name("0.deploy_x"));
        assert!(valid_name(&"a".repeat(128)));
        assert!(!valid_name(&"a".repeat(129)));
        for bad in ["", "Deploy", "-x", ".x", "a..b", "a/b", "a b", "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        let errors = compile_err(
            "p.yaml",
            "name: Deploy\nissuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims: {repository_id: '1'}\n",
        );
        assert_eq!(errors[0].field, "name");
        let stem = compile_err(
            "policies/Deploy Prod.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims: {repository_id: '1'}\n",
        );
        assert!(
            stem[0].message.contains("file stem \"Deploy Prod\""),
            "{}",
            stem[0].message
        );
        let named = compile_one(
            "policies/Deploy Prod.yaml",
            "name: deploy-prod\nissuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims: {repository_id: '1'}\n",
        );
        assert_eq!(named.name(), "deploy-prod");
    }

    #[test]
    fn list_files_need_a_name_on_every_policy() {
        let text = "\
- name: a
  issuer: github
  target: tenant-prod
  scopes: [x]
  claims: {repository_id: '1'}
- issuer: github
  target: tenant-prod
  scopes: [x]
  claims: {repository_id: '2'}
- just a string
";
        let errors = load_source(
            "policies/many.yaml",
            text,
            &crate::trust::policy::testing::context(),
        )
        .expect_err("names are required");
        assert_eq!(
            errors[0].to_string(),
            "policies/many.yaml:6: name: required: every policy in a list of policies needs a name"
        );
        assert_eq!(errors[1].line, 10);
        assert_eq!(errors.len(), 2);
        let single_list = compile_err(
            "policies/one.yaml",
            "- issuer: github\n  target: tenant-prod\n  scopes: [x]\n  claims: {repository_id: '1'}\n",
        );
        assert_eq!(single_list[0].field, "name");
    }

    #[test]
    fn list_files_load_every_policy_and_reject_duplicate_names() {
        let text = "\
- name: a
  issuer: github
  target: tenant-prod
  scopes: [x]
  claims: {repository_id: '1'}
- name: b
  issuer: gitlab
  target: internal-api
  scopes: [x]
  mode: audit
  enabled: false
  claims: {project_id: '2'}
";
        let policies = load_source(
            "policies/many.yaml",
            text,
            &crate::trust::policy::testing::context(),
        )
        .expect("loads");
        assert_eq!(policies.len(), 2);
        assert_eq!(policies[1].source_line(), 6);
        assert_eq!(policies[1].mode(), Mode::Audit);
        assert!(!policies[1].enabled());
        let dup = text.replace("name: b", "name: a");
        let errors = load_source(
            "policies/many.yaml",
            &dup,
            &crate::trust::policy::testing::context(),
        )
        .expect_err("duplicate");
        assert_eq!(
            errors[0].to_string(),
            "policies/many.yaml:6: name: duplicate policy name \"a\" (also defined on line 1)"
        );
    }

    #[test]
    fn duplicate_keys_fail_the_load_with_their_line() {
        let errors = compile_err(
            "policies/p.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  repository_id: '1'\n  ref: refs/heads/main\n  ref: refs/heads/dev\n",
        );
        assert_eq!(
            messages(&errors),
            "policies/p.yaml:7: ref: duplicate key (first defined on line 6)"
        );
        let top = compile_err("p.yaml", "issuer: github\nissuer: gitlab\n");
        assert_eq!(top[0].line, 2);
    }

    #[test]
    fn dangerous_triggers_need_an_explicit_event_name() {
        let pull_request_target = with_claims(
            github_push_main(),
            json!({"event_name": "pull_request_target", "ref": "refs/heads/main"}),
        );
        let base = "issuer: github\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  repository_id: '89012345'\n  ref: refs/heads/main\n";
        // No event_name condition: rejected with a synthetic failing condition.
        let silent = compile_one("p.yaml", base).evaluate(&pull_request_target);
        assert!(!silent.allowed);
        assert_eq!(
            silent.describe_failures(),
            "claim \"event_name\" is \"pull_request_target\", expected the policy to name \
             \"pull_request_target\" explicitly in event_name (a dangerous trigger: patterns and \
             not never admit it)"
        );
        // Patterns and `not` never admit them.
        for matcher in [
            "{glob: 'pull_request*'}",
            "{regex: '.*'}",
            "{not: push}",
            "[push, {glob: '**'}]",
        ] {
            let policy = compile_one("p.yaml", &format!("{base}  event_name: {matcher}\n"));
            let decision = policy.evaluate(&pull_request_target);
            assert!(!decision.allowed, "{matcher} admitted pull_request_target");
            let failure = decision.failures().next().expect("one failure");
            assert_eq!(&*failure.claim, "event_name");
            assert_eq!(
                &*failure.expected,
                "the policy to name \"pull_request_target\" explicitly in event_name (a dangerous \
                 trigger: patterns and not never admit it)"
            );
        }
        // Listed exactly: admitted.
        for matcher in [
            "pull_request_target",
            "[push, pull_request_target]",
            "[{glob: 'x*'}, pull_request_target]",
        ] {
            let policy = compile_one("p.yaml", &format!("{base}  event_name: {matcher}\n"));
            assert!(policy.evaluate(&pull_request_target).allowed, "{matcher}");
        }
        for trigger in ["workflow_run", "issue_comment"] {
            let claims = with_claims(github_push_main(), json!({ "event_name": trigger }));
            assert!(
                !compile_one("p.yaml", base).evaluate(&claims).allowed,
                "{trigger}"
            );
        }
        // Ordinary events need no event_name condition.
        assert!(
            compile_one("p.yaml", base)
                .evaluate(&github_push_main())
                .allowed
        );
    }

    #[test]
    fn dangerous_triggers_are_a_github_rule_only() {
        let policy = compile_one(
            "p.yaml",
            "issuer: internal\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  repository_id: '89012345'\n",
        );
        let claims = crate::trust::verify::claims::VerifiedClaims::for_tests(
            "internal",
            json!({"repository_id": "89012345", "event_name": "pull_request_target"}),
        );
        assert!(policy.evaluate(&claims).allowed);
    }

    #[test]
    fn realistic_gitlab_and_terraform_policies_match_their_fixtures() {
        let gitlab = compile_one(
            "policies/gl.yaml",
            "issuer: gitlab\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  namespace_id: '112358'\n  project_id: '78213456'\n  ref_protected: true\n  ref_path: refs/heads/main\n  runner_id: 12270852\n",
        );
        let decision = gitlab.evaluate(&crate::trust::policy::testing::gitlab_branch_main());
        assert!(decision.allowed, "{}", decision.describe_failures());
        let terraform = compile_one(
            "policies/tf.yaml",
            "issuer: terraform\ntarget: tenant-prod\nscopes: [a]\nclaims:\n  terraform_organization_id: org-FAccTd22bh5n7vpZ\n  terraform_workspace_id: ws-neKNifJ1AS9WcLP7\n  terraform_run_phase: apply\n",
        );
        let decision = terraform.evaluate(&crate::trust::policy::testing::terraform_plan());
        assert_eq!(
            decision.describe_failures(),
            "claim \"terraform_run_phase\" is \"plan\", expected \"apply\""
        );
    }
}
