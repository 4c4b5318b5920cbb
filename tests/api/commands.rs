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
            ("deploy.yaml", crate::exchange::DEPLOY_POLICY),
            (
                "by-name.yaml",
                "issuer: github\ntarget: internal-api\nscopes: [read]\nunbound: true\nclaims:\n  repository: acme/app\n",
            ),
        ],
    );
    let (code, stdout, _) = run(dir.path(), &["policy", "check"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("warning: ./policies/by-name.yaml: policy \"by-name\" sets unbound: true"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 policies in ./policies loaded; 1 warning;"),
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
    let (code, _, stderr) = run(dir.path(), &["policy", "check"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "./policies/deploy.yaml:4: yaml: illegal placement of ':' indicator; the list opened \
         with '[' on line 3 is not closed: end it with ']'\n"
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
    let (code, _, stderr) = run(dir.path(), &["policy", "check"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("./policies/broken.yaml:6: claims.ref.glob: "),
        "{stderr}"
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
    write_config(
        dir.path(),
        &[("deploy.yaml", crate::exchange::DEPLOY_POLICY)],
    );
    let (code, stdout, _) = run(dir.path(), &["policy", "check"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with("1 policy in ./policies loaded; 0 warnings; policy set version "),
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

    let (code, _, stderr) = run(dir.path(), &["policy", "check"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.lines().count(),
        2,
        "policy check lists one error per line: {stderr}"
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
        assert!(stdout.contains("0 warnings;"), "{stdout}");
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
