//! The `tokenmint policy` commands: `check` (loading policies as `serve` does, running
//! the linter, printing its findings as text for people, JSON for scripts or SARIF 2.1.0
//! for code scanning), `test` (running `policies/tests/*.yaml` like a test runner) and
//! `explain` (every candidate policy's verdict on some claims, and what follows).

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use secrecy::ExposeSecret as _;
use serde_json::{Map, Value, json};

use crate::config::{Config, ConfigSource, TargetKindConfig};
use crate::edges::{exchange_client, service, telemetry};
use crate::trust::exchange::explain::{self, ExplainQuery, Explanation};
use crate::trust::policy::cases::{self, CaseContext, Verdict};
use crate::trust::policy::lint::{self, Finding, RULES, Severity, TargetSettings};
use crate::trust::policy::switches;
use crate::trust::policy::{self, PolicyContext, PolicySet};
use crate::trust::verify::claims::SimulatedClaims;
use crate::trust::verify::unverified;

/// How `policy check` prints its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CheckFormat {
    /// `file:line:col: severity[TMnnn]: message`, a hint under each, and a summary.
    #[default]
    Text,
    /// One JSON object: `findings` and `summary`.
    Json,
    /// SARIF 2.1.0, for GitHub code scanning.
    Sarif,
}

/// What one `policy check` run found.
#[derive(Debug)]
pub struct CheckReport {
    /// Every finding: load errors first, then per policy in file order, then targets.
    pub findings: Vec<Finding>,
    /// How many policies loaded.
    pub policies: usize,
    /// The policy directory, as given.
    pub dir: PathBuf,
    /// The version `serve` would report, when every file loaded.
    pub version: Option<String>,
}

impl CheckReport {
    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.acknowledged.is_none() && finding.severity == severity)
            .count()
    }

    fn acknowledged(&self) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.acknowledged.is_some())
            .count()
    }

    /// Whether the check fails: any error, or with `strict` any warning (acknowledged
    /// findings never fail it).
    pub fn fails(&self, strict: bool) -> bool {
        self.findings.iter().any(|finding| finding.fails(strict))
    }
}

/// `tokenmint policy check`.
pub fn check(
    config_file: Option<PathBuf>,
    strict: bool,
    format: CheckFormat,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let source = ConfigSource {
        file: config_file,
        listen: None,
    };
    let config = Config::load(&source)?;
    let dir = dir.unwrap_or_else(|| config.policies.dir.clone());
    let report = run_check(&config, source.file_in_use().as_deref(), &dir);
    let output = match format {
        CheckFormat::Text => render_text(&report),
        CheckFormat::Json => format!("{:#}\n", render_json(&report)),
        CheckFormat::Sarif => format!("{:#}\n", render_sarif(&report)),
    };
    print!("{output}");
    Ok(if report.fails(strict) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Loads and lints the policies of `dir` against `config` (whose file, when there is one,
/// locates target findings).
pub fn run_check(config: &Config, config_file: Option<&Path>, dir: &Path) -> CheckReport {
    let ctx = PolicyContext::from_config(config);
    let mut findings = Vec::new();
    let (policies, errors) = if dir.is_dir() {
        policy::check_dir(dir, &ctx)
    } else {
        let error = policy::PolicyError {
            file: dir.display().to_string(),
            line: 0,
            column: 0,
            field: "policies.dir".to_owned(),
            message: "the policy directory does not exist".to_owned(),
        };
        (Vec::new(), vec![error])
    };
    findings.extend(errors.iter().map(lint::load_error));
    if let Err(deny_errors) = switches::load_deny_file(dir) {
        findings.extend(deny_errors.iter().map(lint::load_error));
    }
    for policy in &policies {
        findings.extend(lint::lint_policy(policy, &ctx));
    }
    let config_text = config_file.and_then(|path| std::fs::read_to_string(path).ok());
    for target in config.targets.values() {
        let settings = TargetSettings {
            name: target.name.clone(),
            file: config_file.map_or_else(
                || "(environment)".to_owned(),
                |path| path.display().to_string(),
            ),
            line: config_text
                .as_deref()
                .map_or(0, |text| table_line(text, &target.name)),
            max_ttl: target.max_ttl,
            enforce_max_ttl: match &target.kind {
                TargetKindConfig::Local { .. } => None,
                TargetKindConfig::Remote(remote) => Some(remote.enforce_max_ttl),
            },
        };
        findings.extend(lint::lint_target(&settings));
    }
    let version = (errors.is_empty() && !findings.iter().any(|f| f.rule == lint::LOAD_ERROR))
        .then(|| PolicySet::new(policies.clone()).ok())
        .flatten()
        .map(|set| set.version().to_owned());
    CheckReport {
        findings,
        policies: policies.len(),
        dir: dir.to_owned(),
        version,
    }
}

/// The 1-based line of `[targets.NAME]` in a TOML file; 0 when it is not written so.
fn table_line(text: &str, name: &str) -> usize {
    let headers = [
        format!("[targets.{name}]"),
        format!("[targets.\"{name}\"]"),
        format!("[targets.'{name}']"),
    ];
    text.lines()
        .position(|line| {
            let line = line.trim();
            headers
                .iter()
                .any(|header| line.starts_with(header.as_str()))
        })
        .map_or(0, |index| index + 1)
}

/// `file:line:col: severity[TMnnn]: message`, the hint indented under it, and a summary.
pub fn render_text(report: &CheckReport) -> String {
    let mut out = String::new();
    for finding in &report.findings {
        let label = match &finding.acknowledged {
            Some(_) => "acknowledged",
            None => finding.severity.as_str(),
        };
        out.push_str(&format!(
            "{}:{}:{}: {label}[{}]: {}\n",
            finding.file, finding.line, finding.column, finding.rule, finding.message
        ));
        match &finding.acknowledged {
            Some(reason) => out.push_str(&format!("  reason: {reason}\n")),
            None => out.push_str(&format!("  hint: {}\n", finding.hint)),
        }
    }
    let version = report.version.as_ref().map_or_else(String::new, |version| {
        format!("; policy set version {version}")
    });
    out.push_str(&format!(
        "{} in {} loaded; {}, {}, {} acknowledged{version}\n",
        telemetry::counted(report.policies, "policy", "policies"),
        report.dir.display(),
        telemetry::counted(report.count(Severity::Error), "error", "errors"),
        telemetry::counted(report.count(Severity::Warning), "warning", "warnings"),
        report.acknowledged(),
    ));
    out
}

/// `{"findings": [...], "summary": {...}}`.
pub fn render_json(report: &CheckReport) -> Value {
    json!({
        "findings": report.findings,
        "summary": {
            "policies": report.policies,
            "dir": report.dir.display().to_string(),
            "errors": report.count(Severity::Error),
            "warnings": report.count(Severity::Warning),
            "acknowledged": report.acknowledged(),
            "policy_set_version": report.version,
        },
    })
}

/// SARIF 2.1.0: every rule with its help, every finding as a result located in its file
/// relative to the repository (the working directory); acknowledged findings carry an
/// in-source suppression with the policy's reason.
pub fn render_sarif(report: &CheckReport) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|rule| {
            json!({
                "id": rule.id,
                "name": rule.name,
                "shortDescription": { "text": rule.summary },
                "fullDescription": { "text": rule.help },
                "help": { "text": format!("{} {}", rule.summary, rule.help) },
                "defaultConfiguration": { "level": rule.severity.as_str() },
                "properties": { "tags": ["security"] },
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|finding| {
            let rule_index = RULES
                .iter()
                .position(|rule| rule.id == finding.rule)
                .unwrap_or_default();
            let mut location = json!({
                "artifactLocation": { "uri": repository_uri(&finding.file) },
            });
            if finding.line > 0 {
                location["region"] = json!({
                    "startLine": finding.line,
                    "startColumn": finding.column.max(1),
                });
            }
            let mut result = json!({
                "ruleId": finding.rule,
                "ruleIndex": rule_index,
                "level": finding.severity.as_str(),
                "message": { "text": format!("{} Hint: {}", finding.message, finding.hint) },
                "locations": [{ "physicalLocation": location }],
            });
            if let Some(reason) = &finding.acknowledged {
                result["suppressions"] = json!([{ "kind": "inSource", "justification": reason }]);
            }
            result
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "tokenmint",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }
            },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

/// A file as a URI relative to the working directory (the repository root in CI):
/// `./policies/a.yaml` becomes `policies/a.yaml`; a path outside it stays absolute.
fn repository_uri(file: &str) -> String {
    let path = Path::new(file);
    let relative = if path.is_absolute() {
        std::env::current_dir()
            .ok()
            .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
    } else {
        Some(
            path.components()
                .filter(|part| !matches!(part, Component::CurDir))
                .collect::<PathBuf>(),
        )
    };
    match relative {
        Some(relative) => relative
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        None => format!("file://{}", path.display()),
    }
}

/// `tokenmint policy test`: every case of `DIR/tests/*.yaml`, one line each, then
/// `N passed, M failed`; exit 1 on any failure, a test file that does not load, or
/// policies that do not.
pub fn test(config_file: Option<PathBuf>, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = Config::load(&ConfigSource {
        file: config_file,
        listen: None,
    })?;
    let dir = dir.unwrap_or_else(|| config.policies.dir.clone());
    let (report, failed) = run_tests(&config, &dir);
    print!("{report}");
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The runner's output, and whether anything failed.
pub fn run_tests(config: &Config, dir: &Path) -> (String, bool) {
    let mut out = String::new();
    // With the incident switches, exactly as `serve` loads them.
    let policies = match service::load_policies(config, dir) {
        Ok(policies) => policies,
        Err(errors) => {
            for error in &errors {
                out.push_str(&format!("{error}\n"));
            }
            out.push_str(&format!(
                "the policies in {} do not load ({}); run tokenmint policy check\n",
                dir.display(),
                telemetry::counted(errors.len(), "error", "errors")
            ));
            return (out, true);
        }
    };
    let ctx = CaseContext::from_config(config);
    let files = cases::list_case_files(dir);
    if files.is_empty() {
        out.push_str(&format!(
            "no test cases: {} holds no *.yaml file\n",
            dir.join("tests").display()
        ));
        return (out, true);
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in files {
        let cases = match cases::load_cases(&file) {
            Ok(cases) => cases,
            Err(errors) => {
                for error in &errors {
                    out.push_str(&format!("{error}\n"));
                }
                failed += 1;
                continue;
            }
        };
        for case in &cases {
            match cases::run_case(case, &policies, &ctx) {
                Verdict::Passed { summary } => {
                    passed += 1;
                    out.push_str(&format!(
                        "ok      {}:{}: {} ({summary})\n",
                        case.file, case.line, case.name
                    ));
                }
                Verdict::Failed { reason, details } => {
                    failed += 1;
                    out.push_str(&format!(
                        "FAILED  {}:{}: {}\n        {reason}\n",
                        case.file, case.line, case.name
                    ));
                    for line in details {
                        out.push_str(&format!("        {line}\n"));
                    }
                }
            }
        }
    }
    out.push_str(&format!("{passed} passed, {failed} failed\n"));
    (out, failed > 0)
}

/// Where `policy explain` gets its claims. A token is never a command-line argument:
/// arguments are visible to every user of the machine and kept in shell history.
#[derive(Debug, Clone)]
pub enum ExplainInput {
    /// A JSON object of claims.
    Claims(PathBuf),
    /// A CI token in a file, or on standard input for `-`.
    Token(PathBuf),
}

/// How `policy explain` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExplainFormat {
    #[default]
    Text,
    Json,
}

/// What `policy explain` was asked.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    pub input: ExplainInput,
    /// The issuer name; default: the one whose URL is the claims' `iss`.
    pub issuer: Option<String>,
    pub audience: String,
    pub scope: Option<String>,
    pub policy: Option<String>,
    pub format: ExplainFormat,
    pub dir: Option<PathBuf>,
}

/// `tokenmint policy explain`: exit 0 with the explanation whatever its verdict; 1 when
/// the input, the configuration or the policies cannot be read.
pub fn explain_command(
    config_file: Option<PathBuf>,
    request: ExplainRequest,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(&ConfigSource {
        file: config_file,
        listen: None,
    })?;
    let dir = request
        .dir
        .clone()
        .unwrap_or_else(|| config.policies.dir.clone());
    // With the incident switches, exactly as `serve` loads them.
    let policies = service::load_policies(&config, &dir).map_err(|errors| {
        anyhow::anyhow!(
            "the policies in {} do not load ({}); run tokenmint policy check",
            dir.display(),
            errors.first().cloned().unwrap_or_default()
        )
    })?;
    let (claims, provenance) = read_explain_input(&request.input)?;
    let names = CaseContext::from_config(&config);
    let issuer = names
        .issuer_for(request.issuer.as_deref(), &claims)
        .map_err(anyhow::Error::msg)?;
    let target = names
        .target_for(&request.audience)
        .map_err(anyhow::Error::msg)?;
    let claims = SimulatedClaims::new(&issuer, claims);
    let scopes: Option<Vec<String>> = request
        .scope
        .as_deref()
        .map(|scope| scope.split_whitespace().map(str::to_owned).collect());
    let policy = request
        .policy
        .as_deref()
        .filter(|policy| !policy.is_empty());
    let kind = config
        .issuers
        .get(&issuer)
        .map_or(policy::IssuerKind::Generic, |issuer| issuer.kind);
    let explanation = explain::explain(
        &policies,
        &claims,
        ExplainQuery {
            kind,
            target: &target,
            audience: &request.audience,
            requested_scopes: scopes.as_deref(),
            pinned_policy: policy,
        },
    );
    match request.format {
        ExplainFormat::Text => print!("{}", render_explanation(&provenance, &explanation)),
        ExplainFormat::Json => {
            let mut value = serde_json::to_value(&explanation)?;
            value["verified"] = json!(false);
            value["input"] = json!(provenance);
            println!("{value:#}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The claims, and the first line saying where they came from and that nothing was verified.
fn read_explain_input(input: &ExplainInput) -> anyhow::Result<(Map<String, Value>, String)> {
    match input {
        ExplainInput::Claims(path) => {
            let claims = cases::read_claims_file(path).map_err(anyhow::Error::msg)?;
            let line = format!(
                "claims from {}, simulated: nothing here was verified",
                path.display()
            );
            Ok((claims, line))
        }
        ExplainInput::Token(path) => {
            let token = exchange_client::read_token_file(path)?;
            let claims = unverified::claims_without_verification(token.expose_secret())
                .map_err(|err| anyhow::anyhow!("the token cannot be decoded: {err}"))?;
            let line = "token decoded WITHOUT verification: its signature, issuer, audience and \
                        lifetime were not checked, and an exchange checks them first"
                .to_owned();
            Ok((claims, line))
        }
    }
}

/// The explanation for people: provenance first, then every policy with its conditions.
pub fn render_explanation(provenance: &str, explanation: &Explanation) -> String {
    let mut out = format!("{provenance}\n");
    out.push_str(&format!(
        "issuer {}, target {}, requested scope: {}, pinned policy: {}\n",
        explanation.issuer,
        explanation.target,
        explanation.requested_scope.as_deref().unwrap_or("(none)"),
        explanation.pinned_policy.as_deref().unwrap_or("(none)"),
    ));
    if explanation.policies.is_empty() {
        out.push_str("\nno policy exists for this issuer and target\n");
    }
    for verdict in &explanation.policies {
        let mut notes = vec![match verdict.mode {
            policy::Mode::Enforce => "enforce".to_owned(),
            policy::Mode::Audit => "audit".to_owned(),
        }];
        if !verdict.enabled {
            notes.push("disabled".to_owned());
        }
        notes.push(format!("scopes {}", verdict.scopes.join(" ")));
        let mut state = if verdict.matches {
            "matches"
        } else {
            "does not match"
        }
        .to_owned();
        if verdict.matches && !verdict.covers_requested_scope {
            state.push_str(", but lacks a requested scope");
        }
        if verdict.chosen {
            state.push_str("  <- chosen");
        } else if explanation.would_allow.contains(&verdict.name) {
            state.push_str("  <- would allow (audit mode: grants nothing)");
        }
        out.push_str(&format!(
            "\npolicy {} ({}): {state}\n",
            verdict.name,
            notes.join("; ")
        ));
        for condition in &verdict.conditions {
            out.push_str(&format!("  {}\n", condition.marked()));
        }
    }
    let result = &explanation.result;
    out.push('\n');
    match (&result.policy, result.error) {
        (Some(policy), _) => out.push_str(&format!(
            "result: allow by {policy}, scopes {}\n",
            result.scopes.join(" ")
        )),
        (None, error) => out.push_str(&format!("result: deny ({})\n", error.unwrap_or("denied"))),
    }
    out.push_str(&format!("  how: {}\n", result.how));
    if !explanation.would_allow.is_empty() {
        out.push_str(&format!(
            "would_allow: {} (recorded in the audit record; mode: audit grants nothing)\n",
            explanation.would_allow.join(", ")
        ));
    }
    let disclosure = &explanation.disclosure;
    let bound = if disclosure.bound {
        "bound for this target (its claims satisfy every binding condition of a policy)"
    } else {
        "not bound for this target (no policy's binding conditions all match)"
    };
    out.push_str(&format!("caller: {bound}\n"));
    match &disclosure.told {
        None => out.push_str("told: the token (nothing is withheld)\n"),
        Some(told) => {
            out.push_str(&format!("told: {told}\n"));
            if disclosure.names_nearest_policy.is_none() && !disclosure.bound {
                out.push_str("  (the policies' content is disclosed only to callers they name)\n");
            }
        }
    }
    out
}
