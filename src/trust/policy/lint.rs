//! The policy linter behind `policy check`: security rules with stable ids (TM001…),
//! built from the incidents of the field, run on compiled policies and on the targets
//! they grant; each finding names the claim and value involved, where it is written,
//! and how to fix it.
//!
//! The rules read only what compilation proved (a [`CompiledPolicy`]) and the platform
//! facts in `crate::trust::platform` (which claims a token carries, what their values look
//! like), so a policy is linted exactly as `serve` would run it. A finding its policy
//! acknowledges in `lint: { allow: [...], reason: ... }` is still reported, as
//! acknowledged, and never fails the check.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::matcher::{Matcher, Pattern, quote};
use super::source::Position;
use super::{CompiledPolicy, PolicyContext, PolicyError, TargetKind};
use crate::trust::platform::{ClaimShape, IssuerKind, LintFacts};

/// The rule id of a load error: a file `serve` would refuse.
pub const LOAD_ERROR: &str = "TM000";

/// How bad a finding is: errors fail `policy check`, warnings only with `--strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    /// `error` or `warning`, as the text and SARIF formats print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One linter rule.
#[derive(Debug)]
pub struct Rule {
    /// Stable id, `TMnnn`.
    pub id: &'static str,
    /// Short PascalCase name (SARIF `name`).
    pub name: &'static str,
    pub severity: Severity,
    /// One line: what the rule catches.
    pub summary: &'static str,
    /// Why it matters and what to write instead.
    pub help: &'static str,
}

/// Every rule, in id order.
pub const RULES: &[Rule] = &[
    Rule {
        id: LOAD_ERROR,
        name: "LoadError",
        severity: Severity::Error,
        summary: "The file does not load: serve would refuse it.",
        help: "Fix the field named in the message; serve, reload and policy check load policies the same way.",
    },
    Rule {
        id: "TM001",
        name: "UnboundPolicy",
        severity: Severity::Warning,
        summary: "The policy sets unbound: true, so it pins no binding claim.",
        help: "Any workload of a shared issuer whose other claims match can use an unbound policy. Pin the issuer's immutable owner or repository id (repository_owner_id / repository_id, namespace_id / project_id, terraform_organization_id / terraform_workspace_id) and remove unbound.",
    },
    Rule {
        id: "TM002",
        name: "MutableNameWithoutId",
        severity: Severity::Warning,
        summary: "A renamable name is matched without the immutable id of what it names.",
        help: "Repository, owner, project, namespace, workspace and organization names can be renamed and then registered by someone else, who inherits the trust. Pin the matching immutable id next to the name.",
    },
    Rule {
        id: "TM003",
        name: "PatternReachesOtherOwners",
        severity: Severity::Error,
        summary: "A pattern over a repository, project or subject does not spell its owner literally.",
        help: "A glob or regex such as acme* or acme.* also matches acme-evil/... . Write the owner literally followed by its separator (acme/*), or pin the owner's immutable id.",
    },
    Rule {
        id: "TM004",
        name: "DangerousTriggerAdmitted",
        severity: Severity::Warning,
        summary: "event_name admits pull_request_target, workflow_run or issue_comment.",
        help: "These triggers run with the base repository's identity on code or input from outside it (pwn requests). Admit them only for workflows that never run that code, and acknowledge the finding with a reason.",
    },
    Rule {
        id: "TM005",
        name: "WriteWithoutEventName",
        severity: Severity::Warning,
        summary: "A policy granting write scopes does not restrict event_name.",
        help: "Without an event_name condition any event that runs a workflow in the repository can use the policy. List the events that should deploy, e.g. event_name: [push, workflow_dispatch].",
    },
    Rule {
        id: "TM006",
        name: "WriteOnRefPattern",
        severity: Severity::Warning,
        summary: "Write scopes are granted on a branch or tag pattern.",
        help: "Anyone who can push a matching branch or tag obtains the grant. Pin the protected branch exactly (refs/heads/main) or require an environment with required reviewers.",
    },
    Rule {
        id: "TM007",
        name: "WriteWithoutRefOrEnvironment",
        severity: Severity::Warning,
        summary: "Write scopes are granted without a ref or environment condition.",
        help: "Any branch of the repository, including one pushed a minute ago, can use the policy. Require an environment with required reviewers (GitHub), or ref_protected / environment_protected: \"true\" (GitLab), or pin the ref.",
    },
    Rule {
        id: "TM008",
        name: "TakeoverScopeUnprotected",
        severity: Severity::Error,
        summary: "A scope that can take over tokenmint's client or destroy configuration is granted without a protected environment or ref.",
        help: "Client-grant, client-key, client and client-credential scopes let a job widen its own access or take over tokenmint's client; delete:* scopes destroy configuration. Grant them only behind a protected environment (GitHub environment with reviewers, GitLab environment_protected / ref_protected: \"true\"), or move them to a separate, reviewed policy.",
    },
    Rule {
        id: "TM009",
        name: "ReusableWorkflowOnBranch",
        severity: Severity::Warning,
        summary: "A reusable workflow is trusted at a branch (job_workflow_ref ...@refs/heads/...).",
        help: "Anyone who can push to that branch of the workflow's repository changes what runs with this trust. Pin the reusable workflow to a tag you protect, or to its commit with job_workflow_sha.",
    },
    Rule {
        id: "TM010",
        name: "WriteWithoutRunnerEnvironment",
        severity: Severity::Warning,
        summary: "Write scopes are granted without pinning runner_environment.",
        help: "A self-hosted runner may keep state between jobs or be shared with less trusted repositories. Pin runner_environment: github-hosted (or gitlab-hosted), or self-hosted when that is deliberate.",
    },
    Rule {
        id: "TM011",
        name: "SubjectPattern",
        severity: Severity::Warning,
        summary: "sub is matched by a pattern instead of discrete claims.",
        help: "sub is a composite whose shape the owner can customise; a pattern over it matches more than it seems. Match the discrete claims (repository_id, ref, environment, ...) instead.",
    },
    Rule {
        id: "TM012",
        name: "TerraformWriteWithoutApply",
        severity: Severity::Error,
        summary: "Write scopes on a terraform issuer without terraform_run_phase: apply.",
        help: "Speculative plans, which anyone opening a pull request can start, get plan-phase tokens. Require terraform_run_phase: apply for write scopes and give plans a read-only policy.",
    },
    Rule {
        id: "TM013",
        name: "TargetMaxTtlOverAnHour",
        severity: Severity::Warning,
        summary: "A target's max_ttl is above one hour.",
        help: "A leaked token stays useful for its whole lifetime. Keep max_ttl at 1h or less; CI jobs can exchange again.",
    },
    Rule {
        id: "TM014",
        name: "TargetMaxTtlNotEnforced",
        severity: Severity::Warning,
        summary: "A target sets enforce_max_ttl = false.",
        help: "tokenmint then returns tokens the tenant issued for longer than max_ttl. Shorten the token lifetime in the tenant and keep enforce_max_ttl = true.",
    },
    Rule {
        id: "TM015",
        name: "LongWriteToken",
        severity: Severity::Warning,
        summary: "Tokens granting write scopes live longer than 15 minutes.",
        help: "Deploy jobs rarely need a write token for longer than a few minutes. Set ttl: 15m or less on the policy.",
    },
    Rule {
        id: "TM016",
        name: "NeverMatches",
        severity: Severity::Error,
        summary: "A condition can never be true, so the policy never matches.",
        help: "The condition names a claim the issuer never sends (often a typo), or a value of a shape the platform never sends (GitHub's ref is always refs/heads/..., refs/tags/... or refs/pull/...; GitLab's ref is the bare name and ref_path the full one), or a not that excludes every value the claim can have.",
    },
];

/// The rule with this id.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.id == id)
}

/// One thing `policy check` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule id (`TM000` for load errors).
    pub rule: &'static str,
    pub severity: Severity,
    /// The file, as the operator named it.
    pub file: String,
    /// 1-based; 0 when the finding concerns the whole file.
    pub line: usize,
    /// 1-based; 0 when the finding concerns the whole file.
    pub column: usize,
    /// The policy concerned; `None` for load errors and target findings.
    pub policy: Option<String>,
    /// The dotted field of a load error or a target setting; `None` otherwise.
    pub field: Option<String>,
    /// One line naming the claim and the value involved.
    pub message: String,
    /// What to write instead.
    pub hint: String,
    /// The policy's `lint.reason` when the policy acknowledges this rule.
    pub acknowledged: Option<String>,
}

impl Finding {
    /// Whether this finding fails `policy check` (with `--strict`, warnings too).
    pub fn fails(&self, strict: bool) -> bool {
        self.acknowledged.is_none() && (self.severity == Severity::Error || strict)
    }
}

/// A load error as a finding.
pub fn load_error(error: &PolicyError) -> Finding {
    Finding {
        rule: LOAD_ERROR,
        severity: Severity::Error,
        file: error.file.clone(),
        line: error.line,
        column: error.column,
        policy: None,
        field: Some(error.field.clone()),
        message: format!("{}: {}", error.field, error.message),
        hint: "serve refuses this file: fix it and run policy check again".to_owned(),
        acknowledged: None,
    }
}

/// What the linter needs to know about one configured target.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    pub name: String,
    /// Where the target is configured (the config file and its `[targets.NAME]` line).
    pub file: String,
    pub line: usize,
    pub max_ttl: Duration,
    /// `None` for local targets, which sign their own tokens.
    pub enforce_max_ttl: Option<bool>,
}

const ONE_HOUR: Duration = Duration::from_secs(3600);
const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);

/// The findings about one target's configuration (TM013, TM014).
pub fn lint_target(target: &TargetSettings) -> Vec<Finding> {
    let mut findings = Vec::new();
    let finding = |rule: &'static str, field: &str, message: String, hint: String| Finding {
        rule,
        severity: severity_of(rule),
        file: target.file.clone(),
        line: target.line,
        column: if target.line == 0 { 0 } else { 1 },
        policy: None,
        field: Some(format!("targets.{}.{field}", target.name)),
        message,
        hint,
        acknowledged: None,
    };
    if target.max_ttl > ONE_HOUR {
        findings.push(finding(
            "TM013",
            "max_ttl",
            format!(
                "target {} allows tokens living {} (max_ttl), more than 1h",
                quote(&target.name),
                humantime::format_duration(target.max_ttl)
            ),
            "set max_ttl = \"1h\" or less".to_owned(),
        ));
    }
    if target.enforce_max_ttl == Some(false) {
        findings.push(finding(
            "TM014",
            "enforce_max_ttl",
            format!(
                "target {} sets enforce_max_ttl = false, so tokens living longer than its max_ttl {} are returned",
                quote(&target.name),
                humantime::format_duration(target.max_ttl)
            ),
            "remove enforce_max_ttl (it defaults to true) and shorten the lifetime in the tenant"
                .to_owned(),
        ));
    }
    findings
}

/// The findings about one compiled policy (TM001–TM012, TM015, TM016), with its own
/// acknowledgements applied, in the order of their positions.
pub fn lint_policy(policy: &CompiledPolicy, ctx: &PolicyContext) -> Vec<Finding> {
    let mut lint = PolicyLint {
        policy,
        facts: &policy.issuer_kind().platform().lint,
        write_scopes: policy
            .scopes()
            .iter()
            .map(String::as_str)
            .filter(|scope| is_write_scope(scope))
            .collect(),
        findings: Vec::new(),
    };
    lint.unbound();
    for condition in policy.conditions() {
        lint.lint_condition(condition.claim(), condition.matcher(), condition.position());
    }
    lint.write_rules(ctx);
    let mut findings = lint.findings;
    let allow = policy.lint_allow();
    for finding in &mut findings {
        if allow.allow.iter().any(|id| id == finding.rule) {
            finding.acknowledged = Some(allow.reason.clone());
        }
    }
    findings.sort_by_key(|finding| (finding.line, finding.column, finding.rule));
    findings
}

/// Whether a scope can change anything: everything but `read`, `read:*`, `read_*`,
/// `*:read`, `*.read` and `*.readonly` (Auth0, GitLab, GCP and Microsoft spellings).
pub fn is_write_scope(scope: &str) -> bool {
    let scope = scope.to_ascii_lowercase();
    !(scope == "read"
        || scope.starts_with("read:")
        || scope.starts_with("read_")
        || scope.ends_with(":read")
        || scope.ends_with(".read")
        || scope.ends_with(".readonly"))
}

/// Auth0 Management API scopes that let the holder take over tokenmint's own client or widen its access:
/// it could grant itself more scopes, read or replace its credentials, or rewrite the client.
pub const TAKEOVER_SCOPES: &[&str] = &[
    "create:client_grants",
    "update:client_grants",
    "delete:client_grants",
    "read:client_keys",
    "update:client_keys",
    "update:clients",
    "delete:clients",
    "create:client_credentials",
    "read:client_credentials",
    "update:client_credentials",
    "delete:client_credentials",
];

fn severity_of(rule_id: &str) -> Severity {
    rule(rule_id).map_or(Severity::Error, |rule| rule.severity)
}

struct PolicyLint<'a> {
    policy: &'a CompiledPolicy,
    facts: &'static LintFacts,
    write_scopes: Vec<&'a str>,
    findings: Vec<Finding>,
}

impl PolicyLint<'_> {
    fn push(&mut self, rule: &'static str, at: Position, message: String, hint: String) {
        self.findings.push(Finding {
            rule,
            severity: severity_of(rule),
            file: self.policy.source_file().to_owned(),
            line: at.line,
            column: at.column,
            policy: Some(self.policy.name().to_owned()),
            field: None,
            message: format!("policy {}: {message}", quote(self.policy.name())),
            hint,
            acknowledged: None,
        });
    }

    fn kind(&self) -> IssuerKind {
        self.policy.issuer_kind()
    }

    /// The condition on `claim`, if the policy has one.
    fn condition(&self, claim: &str) -> Option<&Matcher> {
        self.policy
            .conditions()
            .iter()
            .find(|condition| condition.claim() == claim)
            .map(|condition| condition.matcher())
    }

    /// Whether `claim` is pinned to exact values (and, with `only`, to exactly `only`).
    fn pins(&self, claim: &str, only: Option<&str>) -> bool {
        self.condition(claim)
            .and_then(Matcher::exact_values)
            .is_some_and(|values| only.is_none_or(|only| values.iter().all(|v| *v == only)))
    }

    fn pins_any(&self, claims: &[&str]) -> bool {
        claims.iter().any(|claim| self.pins(claim, None))
    }

    fn writes(&self) -> Option<String> {
        (!self.write_scopes.is_empty()).then(|| self.write_scopes.join(" "))
    }

    fn unbound(&mut self) {
        if !self.policy.unbound() {
            return;
        }
        let binding = self.kind().binding_claims();
        let hint = if binding.is_empty() {
            "a generic issuer needs no binding claim: remove unbound".to_owned()
        } else {
            format!(
                "pin {} to exact values and remove unbound",
                binding.join(" or ")
            )
        };
        self.push(
            "TM001",
            self.policy.positions().unbound,
            format!(
                "sets unbound: true, so any workload of issuer {} whose other claims match can use it",
                quote(self.policy.issuer())
            ),
            hint,
        );
    }

    /// The rules about one condition on its own.
    fn lint_condition(&mut self, claim: &str, matcher: &Matcher, at: Position) {
        let field = format!("claims.{claim}");
        let expected = matcher.expected();

        // TM016: a claim the platform never sends.
        if let Some(sent) = self.facts.claims_sent {
            let known = sent.contains(&claim)
                || self
                    .facts
                    .claim_prefixes
                    .iter()
                    .any(|prefix| claim.starts_with(prefix));
            if !known {
                let hint = match closest(claim, sent) {
                    Some(near) => format!("did you mean {}?", quote(near)),
                    None => format!(
                        "the claims a {} token carries: {}",
                        self.kind().as_str(),
                        sent.join(", ")
                    ),
                };
                self.push(
                    "TM016",
                    at,
                    format!(
                        "{field}: {} issuers never send a claim {}, so this condition is never true",
                        self.kind().as_str(),
                        quote(claim)
                    ),
                    hint,
                );
            }
        }
        // TM016: a value of a shape the platform never sends.
        if let Some((_, shape)) = self.facts.shapes.iter().find(|(name, _)| *name == claim)
            && let Some(problem) = never_matches(matcher, shape)
        {
            self.push(
                "TM016",
                at,
                format!("{field} {expected} never matches: {problem}"),
                shape_hint(claim, shape),
            );
        }

        // TM002: a renamable name without its immutable id.
        if let Some((_, ids)) = self.facts.renamable.iter().find(|(name, _)| *name == claim)
            && !self.pins_any(ids)
        {
            self.push(
                "TM002",
                at,
                format!(
                    "{field} matches the name {expected} without {}: after a rename, someone else can register that name and inherit this trust",
                    ids.join(" or ")
                ),
                format!(
                    "add {}: \"<id>\", the immutable id of the same {}, beside the name",
                    ids[0],
                    what_it_names(claim)
                ),
            );
        }

        // TM003: a pattern whose owner part is not literal.
        if let Some((_, before_owner, separator)) = self
            .facts
            .owner_prefixed
            .iter()
            .find(|(name, _, _)| *name == claim)
        {
            let owner_is_pinned =
                !claim.ends_with("workflow_ref") && self.pins_any(self.facts.owner_ids);
            if !owner_is_pinned {
                for pattern in patterns(matcher) {
                    if !owner_is_literal(pattern, before_owner, *separator) {
                        self.push(
                            "TM003",
                            at,
                            format!(
                                "{field} {} can match {}: its owner part is not literal",
                                pattern.describe(),
                                match what_it_names(claim) {
                                    "owner" => "other owners",
                                    "workflow" => "workflows of other owners",
                                    "project" => "projects of other owners",
                                    "workspace" => "workspaces of other owners",
                                    _ => "repositories of other owners",
                                }
                            ),
                            format!(
                                "spell the owner literally and end it with {:?} (e.g. glob \"{before_owner}acme{separator}*\"), or pin {}",
                                separator.to_string(),
                                self.facts.owner_ids.join(" or ")
                            ),
                        );
                    }
                }
            }
        }

        // TM004: a dangerous trigger admitted.
        if claim == "event_name" {
            for trigger in self.kind().platform().dangerous_triggers {
                if matcher.lists_exactly(trigger) {
                    self.push(
                        "TM004",
                        at,
                        format!(
                            "{field} admits {}, which runs with the repository's identity on code or input from outside it",
                            quote(trigger)
                        ),
                        format!(
                            "remove {}; if this workflow never runs the outside code, acknowledge with lint: {{allow: [TM004], reason: ...}}",
                            quote(trigger)
                        ),
                    );
                }
            }
        }

        // TM009: a reusable workflow trusted at a branch.
        if claim == "job_workflow_ref" && pins_a_branch(matcher) {
            self.push(
                "TM009",
                at,
                format!(
                    "{field} {expected} trusts a reusable workflow at a branch: whoever can push to it changes what runs with this trust"
                ),
                "pin the workflow at a protected tag (...@refs/tags/v1) or pin job_workflow_sha to its commit".to_owned(),
            );
        }

        // TM011: sub by pattern.
        if claim == "sub" && !patterns(matcher).is_empty() {
            self.push(
                "TM011",
                at,
                format!("{field} is matched by {expected} instead of discrete claims"),
                "match the discrete claims (repository_id, ref, environment, ...) and drop the sub condition".to_owned(),
            );
        }

        // TM006: write scopes on a ref pattern.
        if self.facts.ref_claims.contains(&claim)
            && matcher.exact_values().is_none()
            && let Some(writes) = self.writes()
        {
            self.push(
                "TM006",
                at,
                format!(
                    "{field} {expected} grants write scopes ({writes}) to anyone who can push a matching branch or tag"
                ),
                self.protection_hint(),
            );
        }
    }

    fn protection_hint(&self) -> String {
        match self.kind() {
            IssuerKind::Gitlab => {
                "require ref_protected: \"true\" or environment_protected: \"true\", or pin ref to the protected branch".to_owned()
            }
            _ => "require an environment with required reviewers (environment: production), or pin ref: refs/heads/main".to_owned(),
        }
    }

    /// The rules about a policy's grant as a whole.
    fn write_rules(&mut self, ctx: &PolicyContext) {
        let positions = *self.policy.positions();
        let kind = self.kind();

        // TM008: takeover and destroy scopes without protection, whatever else it grants.
        let dangerous: Vec<&str> = self
            .policy
            .scopes()
            .iter()
            .map(String::as_str)
            .filter(|scope| TAKEOVER_SCOPES.contains(scope) || scope.starts_with("delete:"))
            .collect();
        let protected = self
            .facts
            .protection
            .iter()
            .any(|(claim, value)| self.pins(claim, *value));
        if !dangerous.is_empty() && !protected {
            self.push(
                "TM008",
                positions.scopes,
                format!(
                    "grants {} without a protected environment or protected ref: a job could take over tokenmint's client, widen its own access or destroy configuration",
                    dangerous.join(" ")
                ),
                match kind {
                    IssuerKind::Github | IssuerKind::Gitlab => self.protection_hint(),
                    _ => "move these scopes to a separate policy for a workload whose runs are reviewed, and acknowledge it there with a reason".to_owned(),
                },
            );
        }

        let Some(writes) = self.writes() else {
            return;
        };

        // TM005: GitHub write scopes without event_name.
        if kind == IssuerKind::Github && self.condition("event_name").is_none() {
            self.push(
                "TM005",
                positions.claims,
                format!(
                    "grants write scopes ({writes}) without an event_name condition, so any event that runs a workflow can use it"
                ),
                "add event_name: [push, workflow_dispatch] (the events that should deploy)".to_owned(),
            );
        }

        // TM007: no ref or environment condition.
        let restricts = &self.facts.ref_or_environment;
        if !restricts.is_empty()
            && !restricts
                .iter()
                .any(|claim| self.condition(claim).is_some())
        {
            self.push(
                "TM007",
                positions.claims,
                format!(
                    "grants write scopes ({writes}) with no condition on {}, so any branch can use it",
                    restricts.join(", ")
                ),
                self.protection_hint(),
            );
        }

        // TM010: runner environment not pinned.
        if let Some(runner) = self.facts.runner_claim
            && !self.pins(runner, None)
        {
            let hosted = if kind == IssuerKind::Gitlab {
                "gitlab-hosted"
            } else {
                "github-hosted"
            };
            self.push(
                "TM010",
                positions.claims,
                format!("grants write scopes ({writes}) without pinning {runner}, so self-hosted runners can use it"),
                format!("add {runner}: {hosted} (or self-hosted, when that is deliberate)"),
            );
        }

        // TM012: terraform write scopes outside apply.
        if kind == IssuerKind::Terraform && !self.pins("terraform_run_phase", Some("apply")) {
            self.push(
                "TM012",
                positions.claims,
                format!(
                    "grants write scopes ({writes}) without terraform_run_phase: apply, so speculative plans get them too"
                ),
                "add terraform_run_phase: apply, and give plans a policy with read scopes only".to_owned(),
            );
        }

        // TM015: long-lived write tokens (local targets; remote ones set their own lifetime).
        if let Some(info) = ctx.targets.get(self.policy.target())
            && info.kind == TargetKind::Local
        {
            let lifetime = self.policy.ttl().unwrap_or(info.max_ttl);
            if lifetime > FIFTEEN_MINUTES {
                let (at, whose) = match self.policy.ttl() {
                    Some(_) => (positions.ttl, "its ttl".to_owned()),
                    None => (
                        positions.policy,
                        format!(
                            "target {}'s max_ttl (no ttl set)",
                            quote(self.policy.target())
                        ),
                    ),
                };
                self.push(
                    "TM015",
                    at,
                    format!(
                        "grants write scopes ({writes}) in tokens living {} ({whose}), more than 15m",
                        humantime::format_duration(lifetime)
                    ),
                    "set ttl: 15m or less".to_owned(),
                );
            }
        }
    }
}

/// A glob or a regex of a matcher.
#[derive(Clone, Copy)]
struct PatternRef<'a> {
    is_glob: bool,
    pattern: &'a Pattern,
}

impl PatternRef<'_> {
    fn source(&self) -> &str {
        self.pattern.source()
    }

    fn describe(&self) -> String {
        let kind = if self.is_glob { "glob" } else { "regex" };
        format!("{kind} {}", quote(self.source()))
    }
}

/// The globs and regexes a matcher is made of (`not` excluded: it narrows).
fn patterns(matcher: &Matcher) -> Vec<PatternRef<'_>> {
    match matcher {
        Matcher::Glob(pattern) => vec![PatternRef {
            is_glob: true,
            pattern,
        }],
        Matcher::Regex(pattern) => vec![PatternRef {
            is_glob: false,
            pattern,
        }],
        Matcher::AnyOf(options) => options.iter().flat_map(patterns).collect(),
        Matcher::Exact(_) | Matcher::Not(_) => Vec::new(),
    }
}

/// The literal text a pattern starts with: up to its first wildcard or metacharacter.
fn literal_prefix(pattern: PatternRef<'_>) -> String {
    let source = pattern.source();
    let mut prefix = String::new();
    let mut chars = source.chars();
    if pattern.is_glob {
        while let Some(c) = chars.next() {
            match c {
                '*' => break,
                '\\' => match chars.next() {
                    Some(escaped) => prefix.push(escaped),
                    None => break,
                },
                other => prefix.push(other),
            }
        }
    } else if has_top_level_alternation(source) {
        // `acme/app|.*` matches anything: no prefix is guaranteed.
        return String::new();
    } else {
        while let Some(c) = chars.next() {
            match c {
                '.' | '^' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' => {
                    // A quantifier makes the previous character optional or repeated.
                    if matches!(c, '*' | '?' | '{') {
                        prefix.pop();
                    }
                    break;
                }
                '\\' => match chars.next() {
                    Some(escaped) if !escaped.is_ascii_alphanumeric() => prefix.push(escaped),
                    _ => break,
                },
                other => prefix.push(other),
            }
        }
    }
    prefix
}

/// Whether a regex has a `|` outside every group and class, so that no text is common to
/// all its matches.
fn has_top_level_alternation(source: &str) -> bool {
    let mut depth = 0usize;
    let mut in_class = false;
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => depth = depth.saturating_sub(1),
            '|' if !in_class && depth == 0 => return true,
            _ => {}
        }
    }
    false
}

/// Whether a pattern spells `before_owner`, then an owner, then `separator`, literally.
fn owner_is_literal(pattern: PatternRef<'_>, before_owner: &str, separator: char) -> bool {
    let prefix = literal_prefix(pattern);
    prefix
        .strip_prefix(before_owner)
        .and_then(|rest| rest.find(separator))
        .is_some_and(|owner_len| owner_len > 0)
}

/// Whether a `job_workflow_ref` matcher trusts a workflow at a branch.
fn pins_a_branch(matcher: &Matcher) -> bool {
    match matcher {
        Matcher::Exact(value) => value.contains("@refs/heads/"),
        Matcher::Glob(pattern) | Matcher::Regex(pattern) => {
            pattern.source().contains("@refs/heads/")
        }
        Matcher::AnyOf(options) => options.iter().any(pins_a_branch),
        Matcher::Not(_) => false,
    }
}

/// Why `matcher` can never be true for a claim of this shape, if it cannot.
fn never_matches(matcher: &Matcher, shape: &ClaimShape) -> Option<String> {
    match shape {
        ClaimShape::OneOf(values) => {
            let any = values
                .iter()
                .any(|value| matcher.matches(Some(&Value::String((*value).to_owned()))));
            (!any).then(|| {
                let listed: Vec<String> = values.iter().map(|value| quote(value)).collect();
                format!("the claim is always one of {}", listed.join(", "))
            })
        }
        ClaimShape::Digits => {
            let values = matcher.exact_values()?;
            let bad: Vec<&str> = values
                .into_iter()
                .filter(|value| value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()))
                .collect();
            (!bad.is_empty()).then(|| {
                format!(
                    "{} is not a number, and this claim is a numeric id",
                    quote(bad[0])
                )
            })
        }
        ClaimShape::StartsWith(prefixes) => {
            let starts = |text: &str| prefixes.iter().any(|prefix| text.starts_with(prefix));
            let compatible = |text: &str| {
                prefixes
                    .iter()
                    .any(|prefix| text.starts_with(prefix) || prefix.starts_with(text))
            };
            let bad = match matcher.exact_values() {
                Some(values) => values
                    .into_iter()
                    .find(|value| !starts(value))
                    .map(str::to_owned),
                None => patterns(matcher)
                    .into_iter()
                    .find(|pattern| !compatible(&literal_prefix(*pattern)))
                    .map(|pattern| pattern.source().to_owned()),
            };
            bad.map(|bad| {
                format!(
                    "{} does not start with {}, and every value of this claim does",
                    quote(&bad),
                    prefixes
                        .iter()
                        .map(|prefix| quote(prefix))
                        .collect::<Vec<_>>()
                        .join(" or ")
                )
            })
        }
        ClaimShape::NotStartsWith(prefix) => {
            let values = matcher.exact_values()?;
            values
                .into_iter()
                .find(|value| value.starts_with(prefix))
                .map(|bad| {
                    format!(
                        "{} starts with {}, and no value of this claim does",
                        quote(bad),
                        quote(prefix)
                    )
                })
        }
    }
}

fn shape_hint(claim: &str, shape: &ClaimShape) -> String {
    match (claim, shape) {
        ("ref", ClaimShape::StartsWith(_)) => {
            "GitHub sends the full ref: write refs/heads/main, not main".to_owned()
        }
        ("ref", ClaimShape::NotStartsWith(_)) => {
            "GitLab's ref is the bare branch or tag name (main); match ref_path for refs/heads/main"
                .to_owned()
        }
        (_, ClaimShape::OneOf(values)) => format!("use one of: {}", values.join(", ")),
        (_, ClaimShape::Digits) => {
            "ids are numbers: find them in the platform's API or in a recorded token".to_owned()
        }
        (_, ClaimShape::StartsWith(prefixes)) => {
            format!("values start with {}", prefixes.join(" or "))
        }
        (_, ClaimShape::NotStartsWith(prefix)) => {
            format!("values never start with {prefix}")
        }
    }
}

fn what_it_names(claim: &str) -> &'static str {
    if claim.contains("owner") || claim.contains("namespace") || claim.contains("organization") {
        "owner"
    } else if claim.contains("project_name") {
        "project"
    } else if claim.contains("workspace") {
        "workspace"
    } else if claim.contains("workflow") {
        "workflow"
    } else if claim.contains("project") {
        "project"
    } else {
        "repository"
    }
}

/// The known claim name nearest to `claim` within edit distance 2 (the first of equals).
fn closest<'a>(claim: &str, known: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for &name in known {
        let distance = edit_distance(claim, name);
        if distance <= 2 && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, name));
        }
    }
    best.map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::policy::testing::{compile_err, compile_one, context};

    const OWNER: &str = "  repository_owner_id: \"1234567\"\n  repository_id: \"89012345\"\n";
    /// The claims of a GitHub write policy that triggers no rule.
    const SAFE_GITHUB: &str = "  ref: refs/heads/main\n  environment: production\n  event_name: [push, workflow_dispatch]\n  runner_environment: github-hosted\n";

    fn github(scopes: &str, claims: &str) -> String {
        format!("issuer: github\ntarget: tenant-prod\nscopes: [{scopes}]\nclaims:\n{OWNER}{claims}")
    }

    /// `rule@line:column`, acknowledged ones suffixed with `(ack)`.
    fn lint(text: &str) -> Vec<String> {
        let policy = compile_one("policies/p.yaml", text);
        lint_policy(&policy, &context())
            .iter()
            .map(|finding| {
                let ack = if finding.acknowledged.is_some() {
                    "(ack)"
                } else {
                    ""
                };
                format!("{}@{}:{}{ack}", finding.rule, finding.line, finding.column)
            })
            .collect()
    }

    fn rules(text: &str) -> Vec<&'static str> {
        let policy = compile_one("policies/p.yaml", text);
        lint_policy(&policy, &context())
            .iter()
            .map(|finding| finding.rule)
            .collect()
    }

    fn only(text: &str) -> Finding {
        let policy = compile_one("policies/p.yaml", text);
        let mut findings = lint_policy(&policy, &context());
        assert_eq!(findings.len(), 1, "{findings:#?}");
        findings.remove(0)
    }

    #[test]
    fn rule_ids_are_unique_sequential_and_load_errors_are_tm000() {
        for (index, rule) in RULES.iter().enumerate() {
            assert_eq!(rule.id, format!("TM{index:03}"));
            assert!(
                rule.summary.ends_with('.') && rule.help.ends_with('.'),
                "{}",
                rule.id
            );
        }
        assert_eq!(RULES[0].id, LOAD_ERROR);
    }

    #[test]
    fn a_safe_github_write_policy_has_no_findings() {
        assert_eq!(
            rules(&github(
                "read:clients, update:resource_servers",
                SAFE_GITHUB
            )),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn read_scopes_are_told_apart_from_write_scopes() {
        for read in [
            "read:clients",
            "read",
            "read_api",
            "repo:read",
            "files.read",
            "devstorage.readonly",
        ] {
            assert!(!is_write_scope(read), "{read}");
        }
        for write in [
            "update:clients",
            "deploy",
            "write",
            "create:actions",
            "delete:users",
            "reader:x",
        ] {
            assert!(is_write_scope(write), "{write}");
        }
    }

    #[test]
    fn tm001_unbound_policies() {
        let text = "issuer: github\ntarget: tenant-prod\nscopes: [read:clients]\nunbound: true\nclaims:\n  repository: acme/app\n  repository_id: \"1\"\n";
        let finding = only(text);
        assert_eq!(
            (finding.rule, finding.line, finding.column),
            ("TM001", 4, 1)
        );
        assert_eq!(
            finding.message,
            "policy \"p\": sets unbound: true, so any workload of issuer \"github\" whose other claims match can use it"
        );
        assert_eq!(
            finding.hint,
            "pin repository_id or repository_owner_id to exact values and remove unbound"
        );
        // Near miss: the same policy bound by its id.
        assert!(rules(&text.replace("unbound: true\n", "")).is_empty());
    }

    #[test]
    fn tm002_renamable_names_without_their_id() {
        let text = "issuer: github\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  repository_owner_id: \"1234567\"\n  repository: acme/app\n";
        let finding = only(text);
        assert_eq!(
            (finding.rule, finding.line, finding.column),
            ("TM002", 6, 3)
        );
        assert_eq!(
            finding.message,
            "policy \"p\": claims.repository matches the name \"acme/app\" without repository_id: after a rename, someone else can register that name and inherit this trust"
        );
        // Near misses: the name beside its id; an owner name beside a repository id.
        assert!(rules(&format!("{text}  repository_id: \"89012345\"\n")).is_empty());
        let owner = "issuer: github\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  repository_id: \"89012345\"\n  repository_owner: acme\n";
        assert!(rules(owner).is_empty());
        let gitlab = "issuer: gitlab\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  namespace_id: \"1\"\n  project_path: acme/app\n";
        assert_eq!(rules(gitlab), ["TM002"]);
        let terraform = "issuer: terraform\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  terraform_organization_id: org-x\n  terraform_workspace_name: prod\n";
        assert_eq!(rules(terraform), ["TM002"]);
    }

    #[test]
    fn tm003_patterns_that_reach_other_owners() {
        let unbound = |pattern: &str| {
            format!(
                "issuer: github\ntarget: tenant-prod\nscopes: [read:clients]\nunbound: true\nclaims:\n  repository: {pattern}\n"
            )
        };
        for reaching in [
            "{glob: 'acme*'}",
            "{regex: 'acme.*'}",
            "{glob: '*/app'}",
            "{regex: '(acme|beta)/app'}",
            "[acme/app, {glob: 'ac*/x'}]",
        ] {
            assert!(rules(&unbound(reaching)).contains(&"TM003"), "{reaching}");
        }
        for reaching in ["{regex: 'acme/app|.*'}", "{regex: 'acme/(app|web)|evil/x'}"] {
            assert!(rules(&unbound(reaching)).contains(&"TM003"), "{reaching}");
        }
        for literal in [
            "{regex: 'acme/(app|web)'}",
            "{regex: 'acme/[|]x'}",
            "{glob: 'acme/*'}",
            "{regex: 'acme/app-[a-z]+'}",
            "{regex: 'acme\\/.*'}",
            "acme*",
        ] {
            assert!(!rules(&unbound(literal)).contains(&"TM003"), "{literal}");
        }
        let finding = lint_policy(
            &compile_one("policies/p.yaml", &unbound("{glob: 'acme*'}")),
            &context(),
        )
        .into_iter()
        .find(|finding| finding.rule == "TM003")
        .expect("TM003");
        assert_eq!(
            finding.message,
            "policy \"p\": claims.repository glob \"acme*\" can match repositories of other owners: its owner part is not literal"
        );
        // A pinned owner id keeps every pattern inside that owner.
        assert!(
            !rules(&github("read:clients", "  repository: {glob: 'acme*'}\n")).contains(&"TM003")
        );
        // The subject's owner comes after `repo:`; a reusable workflow's owner is checked
        // even when the caller's owner is pinned.
        let sub = unbound("acme/app").replace("repository: acme/app", "sub: {glob: 'repo:acme*'}");
        assert!(rules(&sub).contains(&"TM003"));
        let workflow = github(
            "read:clients",
            "  job_workflow_ref: {glob: '*/shared/.github/workflows/d.yml@refs/tags/v1'}\n",
        );
        assert_eq!(rules(&workflow), ["TM003"]);
    }

    #[test]
    fn tm004_dangerous_triggers_admitted() {
        let text = github(
            "read:clients",
            "  event_name: [push, pull_request_target]\n",
        );
        assert_eq!(lint(&text), ["TM004@7:3"]);
        assert!(
            rules(&github(
                "read:clients",
                "  event_name: [push, pull_request]\n"
            ))
            .is_empty()
        );
    }

    #[test]
    fn tm005_write_scopes_without_event_name() {
        let text = github(
            "update:resource_servers",
            &SAFE_GITHUB.replace("  event_name: [push, workflow_dispatch]\n", ""),
        );
        assert_eq!(lint(&text), ["TM005@4:1"]);
        // Near miss: read scopes need no event_name.
        let read = github(
            "read:clients",
            &SAFE_GITHUB.replace("  event_name: [push, workflow_dispatch]\n", ""),
        );
        assert!(rules(&read).is_empty());
    }

    #[test]
    fn tm006_write_scopes_on_a_ref_pattern() {
        let text = github(
            "update:resource_servers",
            &SAFE_GITHUB.replace("ref: refs/heads/main", "ref: {glob: 'refs/heads/*'}"),
        );
        let finding = only(&text);
        assert_eq!((finding.rule, finding.line), ("TM006", 7));
        assert_eq!(
            finding.message,
            "policy \"p\": claims.ref glob \"refs/heads/*\" grants write scopes (update:resource_servers) to anyone who can push a matching branch or tag"
        );
        let read = github(
            "read:clients",
            &SAFE_GITHUB.replace("ref: refs/heads/main", "ref: {glob: 'refs/heads/*'}"),
        );
        assert!(rules(&read).is_empty());
    }

    #[test]
    fn tm007_write_scopes_without_ref_or_environment() {
        let claims = "  event_name: [push]\n  runner_environment: github-hosted\n";
        assert_eq!(rules(&github("update:resource_servers", claims)), ["TM007"]);
        assert!(
            rules(&github(
                "update:resource_servers",
                &format!("{claims}  environment: production\n")
            ))
            .is_empty()
        );
        let gitlab = "issuer: gitlab\ntarget: tenant-prod\nscopes: [update:resource_servers]\nclaims:\n  project_id: \"1\"\n  runner_environment: gitlab-hosted\n";
        assert_eq!(rules(gitlab), ["TM007"]);
        assert!(rules(&format!("{gitlab}  ref_protected: \"true\"\n")).is_empty());
    }

    #[test]
    fn tm008_takeover_and_destroy_scopes_need_protection() {
        let unprotected = SAFE_GITHUB.replace("  environment: production\n", "");
        for scope in [
            "update:clients",
            "create:client_grants",
            "read:client_keys",
            "delete:users",
        ] {
            let finding = only(&github(scope, &unprotected));
            assert_eq!(
                (finding.rule, finding.line, finding.column),
                ("TM008", 3, 1),
                "{scope}"
            );
        }
        assert!(rules(&github("update:clients", SAFE_GITHUB)).is_empty());
        let protected_ref = format!("{unprotected}  ref_protected: \"true\"\n");
        assert!(rules(&github("update:clients", &protected_ref)).is_empty());
        // An environment pattern proves nothing about protection.
        let pattern =
            SAFE_GITHUB.replace("environment: production", "environment: {glob: 'prod*'}");
        assert_eq!(rules(&github("update:clients", &pattern)), ["TM008"]);
    }

    #[test]
    fn tm009_reusable_workflows_pinned_to_a_branch() {
        let text = github(
            "read:clients",
            "  job_workflow_ref: acme/shared/.github/workflows/d.yml@refs/heads/main\n",
        );
        assert_eq!(rules(&text), ["TM009"]);
        let tag = github(
            "read:clients",
            "  job_workflow_ref: acme/shared/.github/workflows/d.yml@refs/tags/v1\n",
        );
        assert!(rules(&tag).is_empty());
    }

    #[test]
    fn tm010_write_scopes_without_a_runner_environment() {
        let text = github(
            "update:resource_servers",
            &SAFE_GITHUB.replace("  runner_environment: github-hosted\n", ""),
        );
        assert_eq!(rules(&text), ["TM010"]);
        let self_hosted = SAFE_GITHUB.replace("github-hosted", "self-hosted");
        assert!(rules(&github("update:resource_servers", &self_hosted)).is_empty());
    }

    #[test]
    fn tm011_sub_by_pattern() {
        let text = github("read:clients", "  sub: {glob: 'repo:acme/app:*'}\n");
        assert_eq!(rules(&text), ["TM011"]);
        let exact = github(
            "read:clients",
            "  sub: repo:acme/app:environment:production\n",
        );
        assert!(rules(&exact).is_empty());
    }

    #[test]
    fn tm012_terraform_write_scopes_outside_apply() {
        let text = |phase: &str| {
            format!(
                "issuer: terraform\ntarget: tenant-prod\nscopes: [update:resource_servers]\nclaims:\n  terraform_workspace_id: ws-1\n{phase}"
            )
        };
        assert_eq!(rules(&text("")), ["TM012"]);
        assert_eq!(
            rules(&text("  terraform_run_phase: [plan, apply]\n")),
            ["TM012"]
        );
        assert!(rules(&text("  terraform_run_phase: apply\n")).is_empty());
    }

    #[test]
    fn tm013_tm014_target_lifetimes() {
        let target = |max_ttl: u64, enforce: Option<bool>| TargetSettings {
            name: "tenant-prod".to_owned(),
            file: "tokenmint.toml".to_owned(),
            line: 7,
            max_ttl: Duration::from_secs(max_ttl),
            enforce_max_ttl: enforce,
        };
        let ids = |settings: TargetSettings| -> Vec<&str> {
            lint_target(&settings)
                .iter()
                .map(|finding| finding.rule)
                .collect()
        };
        assert_eq!(ids(target(3601, Some(true))), ["TM013"]);
        assert_eq!(ids(target(3600, Some(false))), ["TM014"]);
        assert!(ids(target(3600, Some(true))).is_empty());
        assert!(ids(target(3600, None)).is_empty());
        let finding = &lint_target(&target(7200, Some(true)))[0];
        assert_eq!(
            (
                finding.file.as_str(),
                finding.line,
                finding.column,
                finding.field.as_deref()
            ),
            ("tokenmint.toml", 7, 1, Some("targets.tenant-prod.max_ttl"))
        );
        assert_eq!(
            finding.message,
            "target \"tenant-prod\" allows tokens living 2h (max_ttl), more than 1h"
        );
    }

    #[test]
    fn tm015_long_lived_write_tokens() {
        // internal-api is local with max_ttl 15m in the test context: a shorter ttl is fine.
        let local = |ttl: &str| {
            format!(
                "issuer: github\ntarget: internal-api\nscopes: [deploy]\n{ttl}claims:\n{OWNER}{SAFE_GITHUB}"
            )
        };
        assert!(rules(&local("ttl: 10m\n")).is_empty());
        assert!(rules(&local("")).is_empty());
        let mut ctx = context();
        ctx.targets.get_mut("internal-api").expect("target").max_ttl = Duration::from_secs(3600);
        let policy = load_one(&local("ttl: 30m\n"), &ctx);
        let findings = lint_policy(&policy, &ctx);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!((findings[0].rule, findings[0].line), ("TM015", 4));
        assert_eq!(
            findings[0].message,
            "policy \"p\": grants write scopes (deploy) in tokens living 30m (its ttl), more than 15m"
        );
        let default = load_one(&local(""), &ctx);
        assert_eq!(lint_policy(&default, &ctx)[0].rule, "TM015");
    }

    fn load_one(text: &str, ctx: &PolicyContext) -> CompiledPolicy {
        crate::trust::policy::load_source("policies/p.yaml", text, ctx)
            .expect("compiles")
            .remove(0)
    }

    #[test]
    fn tm016_conditions_that_can_never_be_true() {
        let typo = only(&github("read:clients", "  enviroment: production\n"));
        assert_eq!((typo.rule, typo.line, typo.column), ("TM016", 7, 3));
        assert_eq!(
            typo.message,
            "policy \"p\": claims.enviroment: github issuers never send a claim \"enviroment\", so this condition is never true"
        );
        assert_eq!(typo.hint, "did you mean \"environment\"?");
        let bare_ref = only(&github("read:clients", "  ref: main\n"));
        assert_eq!(
            bare_ref.message,
            "policy \"p\": claims.ref \"main\" never matches: \"main\" does not start with \"refs/heads/\" or \"refs/tags/\" or \"refs/pull/\", and every value of this claim does"
        );
        assert_eq!(
            rules(&github("read:clients", "  ref: {glob: 'main*'}\n")),
            ["TM016"]
        );
        // An alternative that can match keeps the condition alive.
        assert!(
            rules(&github(
                "read:clients",
                "  ref: {regex: 'main|refs/heads/main'}\n"
            ))
            .is_empty()
        );
        assert_eq!(
            rules(&github(
                "read:clients",
                "  runner_environment: {not: [github-hosted, self-hosted]}\n"
            )),
            ["TM016"]
        );
        assert_eq!(
            rules(&github("read:clients", "  ref_protected: yes\n")),
            ["TM016"]
        );
        let gitlab = |claims: &str| {
            format!(
                "issuer: gitlab\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  project_id: \"1\"\n{claims}"
            )
        };
        assert_eq!(rules(&gitlab("  ref: refs/heads/main\n")), ["TM016"]);
        assert_eq!(rules(&gitlab("  project_id_x: \"1\"\n")), ["TM016"]);
        let name_as_id = "issuer: terraform\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  terraform_workspace_id: prod\n";
        assert_eq!(rules(name_as_id), ["TM016"]);
        // Near misses: what the platforms do send, a claim family, and generic issuers,
        // which may send anything.
        assert!(
            rules(&github(
                "read:clients",
                "  ref: {glob: 'refs/heads/*'}\n  ref_protected: \"true\"\n"
            ))
            .is_empty()
        );
        assert!(rules(&github("read:clients", "  repo_property_team: identity\n")).is_empty());
        assert!(rules(&gitlab("  ref: main\n  ref_path: refs/heads/main\n")).is_empty());
        assert!(rules("issuer: internal\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  enviroment: x\n").is_empty());
    }

    #[test]
    fn acknowledged_findings_are_reported_and_marked() {
        let text = format!(
            "{}lint:\n  allow: [TM004]\n  reason: this workflow never checks out the pull request\n",
            github("read:clients", "  event_name: [pull_request_target]\n")
        );
        assert_eq!(lint(&text), ["TM004@7:3(ack)"]);
        let finding = only(&text);
        assert_eq!(
            finding.acknowledged.as_deref(),
            Some("this workflow never checks out the pull request")
        );
        assert!(!finding.fails(true));
        // Acknowledging one rule leaves the others.
        let other = text.replace("[TM004]", "[TM009]");
        assert_eq!(lint(&other), ["TM004@7:3"]);
    }

    #[test]
    fn lint_acknowledgements_are_checked_at_load() {
        let base = github("read:clients", "");
        let error = |lint: &str| {
            compile_err("policies/p.yaml", &format!("{base}{lint}"))
                .into_iter()
                .map(|error| format!("{}: {}", error.field, error.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            error("lint:\n  allow: [TM999]\n  reason: x\n"),
            [
                "lint.allow[0]: unknown rule id \"TM999\"; `tokenmint policy check` lists the rules with their ids"
            ]
        );
        assert_eq!(
            error("lint:\n  allow: [TM000]\n  reason: x\n"),
            ["lint.allow[0]: TM000 is a load error, which cannot be acknowledged: fix the file"]
        );
        assert_eq!(
            error("lint:\n  allow: [TM001]\n"),
            ["lint.reason: required: why the acknowledged findings are acceptable"]
        );
        assert_eq!(
            error("lint:\n  allow: [TM001]\n  reason: ' '\n"),
            ["lint.reason: say why the findings are acceptable"]
        );
        assert_eq!(
            error("lint:\n  allow: []\n  reason: x\n"),
            ["lint.allow: list at least one rule id, or remove `lint`"]
        );
        assert_eq!(
            error("lint:\n  allow: [TM001]\n  reason: x\n  why: y\n"),
            ["lint.why: unknown field; `lint` has allow and reason"]
        );
    }

    #[test]
    fn load_errors_carry_their_column() {
        let errors = compile_err(
            "policies/p.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [read:clients]\nclaims:\n  repository_id: \"1\"\n  ref: {glob: 'a\\'}\n",
        );
        let finding = load_error(&errors[0]);
        assert_eq!(
            (finding.rule, finding.line, finding.column),
            (LOAD_ERROR, 6, 3)
        );
        assert_eq!(finding.field.as_deref(), Some("claims.ref.glob"));
        let list = compile_err("policies/p.yaml", "- name: a\n  issuer: nope\n");
        assert_eq!((list[0].line, list[0].column), (2, 3), "{list:?}");
    }
}
