//! The offline commands: `policy check` and `keys rotate`.

use std::path::Path;

use crate::helpers::tokenmint;

fn write_config(dir: &Path, policies: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("policies")).expect("policies dir");
    for (file, yaml) in policies {
        std::fs::write(dir.join("policies").join(file), yaml).expect("policy");
    }
    std::fs::write(
        dir.join("tokenmint.toml"),
        r#"
[server]
public_url = "https://sts.example.com"
[storage]
data_dir = "./data"
[policies]
dir = "./policies"
[issuers.github]
issuer = "https://token.actions.githubusercontent.com"
[targets.internal-api]
kind = "local"
audience = "https://api.internal.example"
max_ttl = "15m"
"#,
    )
    .expect("config");
}

/// A read-only policy bound to one repository: no linter finding.
const QUIET_POLICY: &str = "issuer: github\ntarget: internal-api\nscopes: [read]\nclaims:\n  repository_id: \"89012345\"\n  ref: refs/heads/main\n";

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = tokenmint()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tokenmint");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn policy_check_passes_good_policies_and_reports_unbound_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(
        dir.path(),
        &[
            ("deploy.yaml", QUIET_POLICY),
            (
                "by-name.yaml",
                "issuer: github\ntarget: internal-api\nscopes: [read]\nunbound: true\nclaims:\n  repository: acme/app\n",
            ),
        ],
    );
    let (code, stdout, _) = run(dir.path(), &["policy", "check"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with(
            "./policies/by-name.yaml:4:1: warning[TM001]: policy \"by-name\": sets unbound: true, \
             so any workload of issuer \"github\" whose other claims match can use it\n  \
             hint: pin repository_id or repository_owner_id to exact values and remove unbound\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 policies in ./policies loaded; 0 errors, 2 warnings, 0 acknowledged;"),
        "{stdout}"
    );
    let (code, _, _) = run(dir.path(), &["policy", "check", "--strict"]);
    assert_eq!(code, 1, "--strict fails on warnings");
}

#[test]
fn a_missing_bracket_is_reported_with_the_line_that_opened_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(
        dir.path(),
        &[(
            "deploy.yaml",
            "issuer: github\ntarget: internal-api\nscopes: [read, write\nclaims:\n  repository_id: \"1\"\n",
        )],
    );
    let (code, stdout, _) = run(dir.path(), &["policy", "check"]);
    assert_eq!(code, 1);
    assert_eq!(
        stdout.lines().next(),
        Some(
            "./policies/deploy.yaml:4:1: error[TM000]: yaml: illegal placement of ':' indicator; \
             the list opened with '[' on line 3 is not closed: end it with ']'"
        )
    );
}

#[test]
fn policy_check_names_file_line_and_field_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(
        dir.path(),
        &[(
            "broken.yaml",
            "issuer: github\ntarget: internal-api\nscopes: [read]\nclaims:\n  repository_id: \"1\"\n  ref: { glob: 'refs/heads/\\x' }\n",
        )],
    );
    let (code, stdout, _) = run(dir.path(), &["policy", "check"]);
    assert_eq!(code, 1);
    assert!(
        stdout.starts_with("./policies/broken.yaml:6:3: error[TM000]: claims.ref.glob: "),
        "{stdout}"
    );
}

#[test]
fn keys_rotate_waits_for_min_publish_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(
        dir.path(),
        &[("deploy.yaml", crate::exchange::DEPLOY_POLICY)],
    );
    let (code, _, stderr) = run(dir.path(), &["keys", "rotate"]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("tokenmint: next ES256 key kid "),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(
            "has been published for 0s; keys.min_publish is 1h; wait 1h or use --force\n"
        ),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(dir.path(), &["keys", "rotate", "--force"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("rotated signing keys (generation 2)"),
        "{stdout}"
    );
}

/// A cron job running `keys rotate` on a deployment with remote targets only must pass.
#[test]
fn keys_rotate_without_a_local_target_has_nothing_to_rotate_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("tokenmint.toml"),
        r#"
[server]
public_url = "https://sts.example.com"
[storage]
data_dir = "./data"
[targets.tenant-prod]
kind = "auth0"
domain = "acme.eu.auth0.com"
client_id = "abc123"
client_secret_env = "TENANT_PROD_CLIENT_SECRET"
"#,
    )
    .expect("config");
    let (code, stdout, stderr) = run(dir.path(), &["keys", "rotate"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(
        stdout,
        "nothing to rotate: no local target uses generated signing keys (tokenmint rotates the \
         keys of kind = \"local\" targets without signing_key_file only)\n"
    );
}

#[test]
fn counts_in_summaries_agree_with_their_nouns() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), &[("deploy.yaml", QUIET_POLICY)]);
    let (code, stdout, _) = run(dir.path(), &["policy", "check"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with(
            "1 policy in ./policies loaded; 0 errors, 0 warnings, 0 acknowledged; policy set version "
        ),
        "{stdout}"
    );
}

#[test]
fn serve_with_a_broken_policy_prints_one_line_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(
        dir.path(),
        &[
            (
                "a.yaml",
                "issuer: github\ntarget: internal-api\nscopes: [read]\nclaims:\n  repository: acme/app\n",
            ),
            (
                "b.yaml",
                "issuer: nope\ntarget: internal-api\nscopes: [read]\nclaims:\n  repository_id: \"1\"\n",
            ),
        ],
    );
    let (code, _, stderr) = run(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tokenmint: 2 policy errors: ./policies/a.yaml:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("; ./policies/b.yaml:1: issuer: "),
        "{stderr}"
    );

    let (code, stdout, _) = run(dir.path(), &["policy", "check"]);
    assert_eq!(code, 1);
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|line| line.contains(": error[TM000]: "))
        .collect();
    assert_eq!(
        errors.len(),
        2,
        "policy check lists one error per line: {stdout}"
    );
}

/// The shipped examples load as they are.
#[test]
fn the_example_configurations_and_policies_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for config in [
        "examples/tokenmint.toml",
        "examples/three-tenants/tokenmint.toml",
    ] {
        let (code, stdout, stderr) = run(root, &["policy", "check", "--config", config]);
        assert_eq!(code, 0, "{config}: {stdout}{stderr}");
        assert!(
            stdout.contains("0 errors, 0 warnings, 1 acknowledged;"),
            "{stdout}"
        );
        let (code, _, _) = run(root, &["policy", "check", "--strict", "--config", config]);
        assert_eq!(code, 0, "{config}: the examples pass --strict");
    }
}

/// `serve` stops at start, on one line naming the key, when a credential is missing.
#[test]
fn serve_refuses_to_start_without_a_targets_credentials() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = tempfile::tempdir().expect("tempdir");
    let output = tokenmint()
        .args([
            "serve",
            "--config",
            "examples/three-tenants/tokenmint.toml",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("TOKENMINT_STORAGE__DATA_DIR", data.path())
        .env("TOKENMINT_SERVER__ADMIN_LISTEN", "")
        .current_dir(root)
        .output()
        .expect("run tokenmint");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().expect("an error line");
    assert_eq!(
        last,
        "tokenmint: targets.tenant-dev.private_key_file: cannot read /run/secrets/tenant-dev.pem: No such file or directory (os error 2)"
    );
}

/// A policy with one finding of each severity, one acknowledged finding, and a target
/// whose max_ttl is over an hour.
fn write_lint_fixture(dir: &Path) {
    write_config(
        dir,
        &[
            (
                "deploy.yaml",
                "issuer: github\ntarget: internal-api\nscopes: [read]\nclaims:\n  repository_id: \"89012345\"\n  ref: main\n",
            ),
            (
                "triage.yaml",
                "issuer: github\ntarget: internal-api\nscopes: [read]\nclaims:\n  repository_owner_id: \"1234567\"\n  event_name: pull_request_target\n  repository: acme/app\nlint:\n  allow: [TM004]\n  reason: labels pull requests, never runs their code\n",
            ),
        ],
    );
    let config = std::fs::read_to_string(dir.join("tokenmint.toml")).expect("config");
    std::fs::write(
        dir.join("tokenmint.toml"),
        config.replace("max_ttl = \"15m\"", "max_ttl = \"2h\""),
    )
    .expect("config");
}

#[test]
fn policy_check_text_lists_findings_with_position_hint_and_acknowledgement() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_lint_fixture(dir.path());
    let (code, stdout, stderr) = run(dir.path(), &["policy", "check"]);
    assert_eq!((code, stderr.as_str()), (1, ""), "{stdout}");
    let summary = stdout.lines().last().expect("summary");
    assert!(
        summary.starts_with(
            "2 policies in ./policies loaded; 1 error, 2 warnings, 1 acknowledged; policy set version "
        ),
        "{stdout}"
    );
    let findings: Vec<&str> = stdout.lines().take(8).collect();
    assert_eq!(
        findings,
        [
            "./policies/deploy.yaml:6:3: error[TM016]: policy \"deploy\": claims.ref \"main\" never matches: \"main\" does not start with \"refs/heads/\" or \"refs/tags/\" or \"refs/pull/\", and every value of this claim does",
            "  hint: GitHub sends the full ref: write refs/heads/main, not main",
            "./policies/triage.yaml:6:3: acknowledged[TM004]: policy \"triage\": claims.event_name admits \"pull_request_target\", which runs with the repository's identity on code or input from outside it",
            "  reason: labels pull requests, never runs their code",
            "./policies/triage.yaml:7:3: warning[TM002]: policy \"triage\": claims.repository matches the name \"acme/app\" without repository_id: after a rename, someone else can register that name and inherit this trust",
            "  hint: add repository_id: \"<id>\", the immutable id of the same repository, beside the name",
            "tokenmint.toml:10:1: warning[TM013]: target \"internal-api\" allows tokens living 2h (max_ttl), more than 1h",
            "  hint: set max_ttl = \"1h\" or less",
        ]
    );
}

#[test]
fn policy_check_exits_1_on_errors_and_with_strict_on_warnings_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_lint_fixture(dir.path());
    // Without the error, the warnings fail only --strict; the acknowledgement never does.
    std::fs::write(
        dir.path().join("policies/deploy.yaml"),
        "issuer: github\ntarget: internal-api\nscopes: [read]\nclaims:\n  repository_id: \"89012345\"\n  ref: refs/heads/main\n",
    )
    .expect("policy");
    assert_eq!(run(dir.path(), &["policy", "check"]).0, 0);
    assert_eq!(run(dir.path(), &["policy", "check", "--strict"]).0, 1);
    std::fs::write(
        dir.path().join("policies/triage.yaml"),
        "issuer: github\ntarget: internal-api\nscopes: [read]\nclaims:\n  repository_id: \"89012345\"\n  event_name: pull_request_target\nlint:\n  allow: [TM004]\n  reason: labels pull requests, never runs their code\n",
    )
    .expect("policy");
    let config = std::fs::read_to_string(dir.path().join("tokenmint.toml")).expect("config");
    std::fs::write(
        dir.path().join("tokenmint.toml"),
        config.replace("max_ttl = \"2h\"", "max_ttl = \"15m\""),
    )
    .expect("config");
    let (code, stdout, _) = run(dir.path(), &["policy", "check", "--strict"]);
    assert_eq!(code, 0, "acknowledged findings pass --strict: {stdout}");
}

#[test]
fn policy_check_json_lists_every_finding_with_its_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_lint_fixture(dir.path());
    std::fs::write(dir.path().join("policies/broken.yaml"), "issuer: [\n").expect("policy");
    let (code, stdout, _) = run(dir.path(), &["policy", "check", "--format", "json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let findings = report["findings"].as_array().expect("findings");
    let rules: Vec<&str> = findings
        .iter()
        .map(|f| f["rule"].as_str().expect("rule"))
        .collect();
    assert_eq!(rules, ["TM000", "TM016", "TM004", "TM002", "TM013"]);
    assert_eq!(
        findings[2],
        serde_json::json!({
            "rule": "TM004",
            "severity": "warning",
            "file": "./policies/triage.yaml",
            "line": 6,
            "column": 3,
            "policy": "triage",
            "field": null,
            "message": "policy \"triage\": claims.event_name admits \"pull_request_target\", which runs with the repository's identity on code or input from outside it",
            "hint": "remove \"pull_request_target\"; if this workflow never runs the outside code, acknowledge with lint: {allow: [TM004], reason: ...}",
            "acknowledged": "labels pull requests, never runs their code",
        })
    );
    assert_eq!(findings[0]["field"], "yaml");
    assert_eq!(
        report["summary"],
        serde_json::json!({
            "policies": 2,
            "dir": "./policies",
            "errors": 2,
            "warnings": 2,
            "acknowledged": 1,
            "policy_set_version": null,
        })
    );
}

/// GitHub code scanning takes SARIF 2.1.0: the output must validate against the schema,
/// carry every rule's metadata, and locate results relative to the repository.
#[test]
fn policy_check_sarif_validates_against_the_sarif_2_1_0_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_lint_fixture(dir.path());
    std::fs::write(dir.path().join("policies/broken.yaml"), "issuer: [\n").expect("policy");
    let (code, stdout, _) = run(dir.path(), &["policy", "check", "--format", "sarif"]);
    assert_eq!(code, 1);
    let sarif: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sarif/sarif-schema-2.1.0.json");
    // The schema's `language` patterns have a stray `]`, a literal in ECMA-262 that Rust's
    // regex engines refuse: escape it, which keeps its meaning.
    let text = std::fs::read_to_string(schema_path).expect("schema");
    const STRAY: &str = r#""^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$""#;
    assert_eq!(text.matches(STRAY).count(), 2, "the schema fixture changed");
    let text = text.replace(STRAY, r#""^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}\\]?$""#);
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema JSON");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles");
    let problems: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = serde_json::json!("fatal");
    assert!(
        !validator.is_valid(&broken),
        "the validator rejects what SARIF does not allow"
    );

    let run_ = &sarif["runs"][0];
    let rules = run_["tool"]["driver"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 17);
    assert_eq!(rules[4]["id"], "TM004");
    assert_eq!(rules[4]["defaultConfiguration"]["level"], "warning");
    assert!(
        rules
            .iter()
            .all(|rule| rule["help"]["text"].as_str().is_some_and(|t| !t.is_empty()))
    );
    let results = run_["results"].as_array().expect("results");
    let located: Vec<(String, &str, u64, u64)> = results
        .iter()
        .map(|result| {
            let location = &result["locations"][0]["physicalLocation"];
            (
                result["ruleId"].as_str().expect("rule").to_owned(),
                location["artifactLocation"]["uri"].as_str().expect("uri"),
                location["region"]["startLine"].as_u64().unwrap_or(0),
                location["region"]["startColumn"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        located,
        [
            ("TM000".to_owned(), "policies/broken.yaml", 2, 1),
            ("TM016".to_owned(), "policies/deploy.yaml", 6, 3),
            ("TM004".to_owned(), "policies/triage.yaml", 6, 3),
            ("TM002".to_owned(), "policies/triage.yaml", 7, 3),
            ("TM013".to_owned(), "tokenmint.toml", 10, 1),
        ]
    );
    assert_eq!(results[2]["ruleIndex"], 4);
    assert_eq!(
        results[2]["suppressions"],
        serde_json::json!([{ "kind": "inSource", "justification": "labels pull requests, never runs their code" }])
    );
    assert_eq!(results[1]["level"], "error");
}

/// The shipped policy tests pass: `.ci/run` runs them too.
#[test]
fn the_example_policy_tests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (config, cases) in [
        ("examples/tokenmint.toml", 10),
        ("examples/three-tenants/tokenmint.toml", 6),
    ] {
        let (code, stdout, stderr) = run(root, &["policy", "test", "--config", config]);
        assert_eq!(code, 0, "{config}: {stdout}{stderr}");
        assert!(
            stdout.ends_with(&format!("\n{cases} passed, 0 failed\n")),
            "{stdout}"
        );
    }
}

const CASES: &str = r#"- name: main deploys
  issuer: github
  claims: { repository_id: "89012345", ref: refs/heads/main }
  audience: internal-api
  expect: allow
- name: a branch is refused
  claims_file: branch.json
  audience: https://api.internal.example
  expect: deny
"#;

#[test]
fn policy_test_runs_every_case_and_names_the_deciding_conditions_of_a_wrong_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), &[("deploy.yaml", QUIET_POLICY)]);
    let tests = dir.path().join("policies/tests");
    std::fs::create_dir_all(&tests).expect("tests dir");
    std::fs::write(
        tests.join("branch.json"),
        r#"{"iss": "https://token.actions.githubusercontent.com", "repository_id": "89012345", "ref": "refs/heads/dev"}"#,
    )
    .expect("claims");
    std::fs::write(tests.join("deploy.yaml"), CASES).expect("cases");
    let (code, stdout, stderr) = run(dir.path(), &["policy", "test"]);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert_eq!(
        stdout,
        "ok      ./policies/tests/deploy.yaml:1: main deploys (allow by deploy (read))\n\
         ok      ./policies/tests/deploy.yaml:6: a branch is refused (deny (access_denied: no policy matches))\n\
         2 passed, 0 failed\n"
    );

    // Both verdicts turned around: each failure names the case and what decided it.
    std::fs::write(
        tests.join("deploy.yaml"),
        CASES
            .replace("expect: allow", "expect: DENY")
            .replace("expect: deny", "expect: allow")
            .replace("DENY", "deny"),
    )
    .expect("cases");
    let (code, stdout, _) = run(dir.path(), &["policy", "test"]);
    assert_eq!(code, 1);
    assert_eq!(
        stdout,
        "FAILED  ./policies/tests/deploy.yaml:1: main deploys\n        \
         expected deny, got allow by \"deploy\" (read)\n        \
         policy deploy matches:\n        \
         \x20 ✔ claim \"repository_id\" is \"89012345\", expected \"89012345\"\n        \
         \x20 ✔ claim \"ref\" is \"refs/heads/main\", expected \"refs/heads/main\"\n\
         FAILED  ./policies/tests/deploy.yaml:6: a branch is refused\n        \
         expected allow, got deny (access_denied: no policy matches)\n        \
         policy deploy does not match:\n        \
         \x20 ✔ claim \"repository_id\" is \"89012345\", expected \"89012345\"\n        \
         \x20 ✘ claim \"ref\" is \"refs/heads/dev\", expected \"refs/heads/main\"\n\
         0 passed, 2 failed\n"
    );
}

#[test]
fn policy_test_fails_on_cases_that_cannot_run_and_on_wrong_deciding_policies() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), &[("deploy.yaml", QUIET_POLICY)]);
    let (code, stdout, _) = run(dir.path(), &["policy", "test"]);
    assert_eq!(
        (code, stdout.as_str()),
        (1, "no test cases: ./policies/tests holds no *.yaml file\n")
    );

    let tests = dir.path().join("policies/tests");
    std::fs::create_dir_all(&tests).expect("tests dir");
    std::fs::write(
        tests.join("a.yaml"),
        "- name: unknown target\n  issuer: github\n  claims: {repository_id: \"1\"}\n  audience: nope\n  expect: deny\n\
         - name: no issuer\n  claims: {repository_id: \"1\"}\n  audience: internal-api\n  expect: deny\n\
         - name: wrong policy\n  issuer: github\n  claims: {repository_id: \"89012345\", ref: refs/heads/main}\n  audience: internal-api\n  expect: deny\n  policy: missing\n",
    )
    .expect("cases");
    std::fs::write(
        tests.join("b.yaml"),
        "- name: typo\n  isuer: github\n  expect: maybe\n",
    )
    .expect("cases");
    let (code, stdout, _) = run(dir.path(), &["policy", "test"]);
    assert_eq!(code, 1);
    assert_eq!(
        stdout,
        "FAILED  ./policies/tests/a.yaml:1: unknown target\n        \
         unknown target \"nope\"; configured targets: internal-api\n\
         FAILED  ./policies/tests/a.yaml:6: no issuer\n        \
         set `issuer`, or give the claims an `iss`\n\
         FAILED  ./policies/tests/a.yaml:10: wrong policy\n        \
         no policy named \"missing\"\n\
         ./policies/tests/b.yaml:2: isuer: unknown field; a test case has name, issuer, claims, claims_file, audience, scope, expect, policy\n\
         ./policies/tests/b.yaml:3: expect: expected allow or deny, found \"maybe\"\n\
         ./policies/tests/b.yaml:1: claims: required: claims or claims_file\n\
         ./policies/tests/b.yaml:1: audience: required\n\
         0 passed, 4 failed\n"
    );
}

fn write_explain_fixture(dir: &Path) {
    write_config(
        dir,
        &[
            ("deploy.yaml", QUIET_POLICY),
            (
                "shadow.yaml",
                "issuer: github\ntarget: internal-api\nscopes: [read]\nmode: audit\nclaims:\n  repository_id: \"89012345\"\n",
            ),
        ],
    );
    std::fs::write(
        dir.join("main.json"),
        r#"{"iss": "https://token.actions.githubusercontent.com", "repository_id": "89012345", "ref": "refs/heads/main"}"#,
    )
    .expect("claims");
}

#[test]
fn policy_explain_shows_every_policy_the_choice_and_what_the_caller_is_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_explain_fixture(dir.path());
    let (code, stdout, stderr) = run(
        dir.path(),
        &[
            "policy",
            "explain",
            "--claims",
            "main.json",
            "--audience",
            "internal-api",
        ],
    );
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert_eq!(
        stdout,
        "claims from main.json, simulated: nothing here was verified\n\
         issuer github, target internal-api, requested scope: (none), pinned policy: (none)\n\
         \n\
         policy deploy (enforce; scopes read): matches  <- chosen\n\
         \x20 ✔ claim \"repository_id\" is \"89012345\", expected \"89012345\"\n\
         \x20 ✔ claim \"ref\" is \"refs/heads/main\", expected \"refs/heads/main\"\n\
         \n\
         policy shadow (audit; scopes read): matches  <- would allow (audit mode: grants nothing)\n\
         \x20 ✔ claim \"repository_id\" is \"89012345\", expected \"89012345\"\n\
         \n\
         result: allow by deploy, scopes read\n\
         \x20 how: no scope was requested: the matching policy whose scopes are a subset of every other matching policy's wins, and the grant is its scopes\n\
         would_allow: shadow (recorded in the audit record; mode: audit grants nothing)\n\
         caller: bound for this target (its claims satisfy every binding condition of a policy)\n\
         told: the token (nothing is withheld)\n"
    );
}

#[test]
fn policy_explain_says_what_an_unbound_caller_is_told_and_prints_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_explain_fixture(dir.path());
    std::fs::write(
        dir.path().join("stranger.json"),
        r#"{"repository_id": "1", "ref": "refs/heads/main"}"#,
    )
    .expect("claims");
    let (code, stdout, _) = run(
        dir.path(),
        &[
            "policy",
            "explain",
            "--claims",
            "stranger.json",
            "--issuer",
            "github",
            "--audience",
            "https://api.internal.example",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{stdout}");
    let explanation: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(explanation["verified"], false);
    assert_eq!(explanation["target"], "internal-api");
    assert_eq!(
        explanation["result"],
        serde_json::json!({
            "outcome": "deny",
            "error": "access_denied",
            "policy": null,
            "scopes": [],
            "how": "no enabled enforce policy for this issuer and target has every condition matching",
        })
    );
    assert_eq!(
        explanation["disclosure"],
        serde_json::json!({
            "bound": false,
            "told": "no trust policy for target \"https://api.internal.example\" matches this workload",
            "names_nearest_policy": null,
        })
    );
    let policies = explanation["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 2);
    assert_eq!(policies[0]["name"], "deploy");
    assert_eq!(policies[0]["conditions"][0]["passed"], false);
    assert_eq!(policies[0]["conditions"][0]["actual"], "\"1\"");
}

/// A token is read from a file or stdin, decoded without verification, and the output
/// says so first; a defect is an error naming it.
#[test]
fn policy_explain_decodes_a_token_without_verification_and_says_so_first() {
    use std::io::Write as _;
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    write_explain_fixture(dir.path());
    let b64 = |json: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    };
    let token = format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256","kid":"k"}"#),
        b64(
            r#"{"iss":"https://token.actions.githubusercontent.com","repository_id":"89012345","ref":"refs/heads/dev"}"#
        )
    );
    let mut child = tokenmint()
        .args([
            "policy",
            "explain",
            "--token-stdin",
            "--audience",
            "internal-api",
            "--scope",
            "read",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(token.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("token decoded WITHOUT verification: its signature, issuer, audience and lifetime were not checked, and an exchange checks them first\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  ✘ claim \"ref\" is \"refs/heads/dev\", expected \"refs/heads/main\"\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\ntold: no trust policy for target \"internal-api\" matches this workload; nearest policy \"deploy\": claim \"ref\" is \"refs/heads/dev\", expected \"refs/heads/main\"\n"), "{stdout}");
    assert!(!stdout.contains(&token) && !String::from_utf8_lossy(&output.stderr).contains(&token));

    std::fs::write(dir.path().join("bad.jwt"), "not-a-jwt\n").expect("token");
    let (code, stdout, stderr) = run(
        dir.path(),
        &[
            "policy",
            "explain",
            "--token-file",
            "bad.jwt",
            "--audience",
            "internal-api",
        ],
    );
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(
        stderr.starts_with("tokenmint: the token cannot be decoded: "),
        "{stderr}"
    );
    // One input is required, and only one.
    let (code, _, _) = run(
        dir.path(),
        &["policy", "explain", "--audience", "internal-api"],
    );
    assert_eq!(code, 2);
}

/// Two matching policies whose scopes are not nested: without a scope the request is
/// ambiguous; a scope or a pinned policy decides it.
#[test]
fn policy_explain_says_how_the_selection_rules_chose_or_why_they_could_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(
        dir.path(),
        &[
            ("deploy.yaml", QUIET_POLICY),
            (
                "other.yaml",
                "issuer: github\ntarget: internal-api\nscopes: [write]\nclaims:\n  repository_id: \"89012345\"\n",
            ),
        ],
    );
    std::fs::write(
        dir.path().join("main.json"),
        r#"{"iss": "https://token.actions.githubusercontent.com", "repository_id": "89012345", "ref": "refs/heads/main"}"#,
    )
    .expect("claims");
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "explain",
            "--claims",
            "main.json",
            "--audience",
            "internal-api",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = run(dir.path(), &args);
        assert_eq!(code, 0, "{stdout}{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).expect("JSON")
    };
    let ambiguous = explain(&[]);
    assert_eq!(ambiguous["result"]["error"], "invalid_scope");
    assert_eq!(
        ambiguous["result"]["how"],
        "several policies match (deploy, other) and no one's scopes are a subset of every other's"
    );
    assert_eq!(
        ambiguous["disclosure"]["told"],
        "several policies match with different scopes; request a scope or pin a policy"
    );
    let scoped = explain(&["--scope", "write"]);
    assert_eq!(
        (&scoped["result"]["outcome"], &scoped["result"]["policy"]),
        (&serde_json::json!("allow"), &serde_json::json!("other"))
    );
    let pinned = explain(&["--policy", "deploy"]);
    assert_eq!(pinned["result"]["policy"], "deploy");
    assert_eq!(
        pinned["result"]["how"],
        "the policy was pinned; its conditions match and its scopes include the request"
    );
    let exceeded = explain(&["--scope", "admin"]);
    assert_eq!(exceeded["result"]["error"], "invalid_scope");
    assert_eq!(
        exceeded["disclosure"]["told"],
        "the requested scope exceeds every matching policy (\"deploy\", \"other\")"
    );
}
