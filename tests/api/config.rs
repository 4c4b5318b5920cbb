//! Configuration loading: defaults, file, `TOKENMINT_*__*` variables, and the errors that name key and file.
#![expect(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error"
)]

use std::path::Path;

use figment::Jail;
use tokenmint::config::{Config, ConfigSource, IssuerKind};

fn load(file: &str) -> Result<Config, String> {
    Config::load(&ConfigSource {
        file: Some(Path::new(file).to_path_buf()),
        listen: None,
    })
    .map_err(|e| e.to_string())
}

#[test]
fn defaults_file_and_variables_layer_in_order() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "tokenmint.toml",
            r#"
[server]
public_url = "https://sts.example.com/"
[issuers.github]
issuer = "https://token.actions.githubusercontent.com"
[issuers.gitlab]
issuer = "https://gitlab.com"
leeway = "30s"
"#,
        )?;
        jail.set_env("TOKENMINT_ISSUERS__GITLAB__LEEWAY", "45s");
        jail.set_env("TOKENMINT_ID_TOKEN", "ignored: not configuration");
        let config = Config::load(&ConfigSource::default()).map_err(|e| e.to_string())?;
        assert_eq!(config.server.public_url, "https://sts.example.com");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.issuers["github"].kind, IssuerKind::Github);
        assert_eq!(config.issuers["github"].audience, "https://sts.example.com");
        assert_eq!(config.issuers["github"].leeway.as_secs(), 60);
        assert!(!config.issuers["github"].allow_private_network);
        assert_eq!(config.issuers["gitlab"].kind, IssuerKind::Gitlab);
        assert_eq!(config.issuers["gitlab"].leeway.as_secs(), 45);
        Ok(())
    });
}

#[test]
fn configuration_errors_name_the_key_and_the_file() {
    Jail::expect_with(|jail| {
        let cases = [
            (
                "[server]\npublic_url = \"https://a.example\"\ncolour = \"red\"\n",
                "a.toml: unknown key `server.colour`",
            ),
            (
                "[server]\nlisten = \"127.0.0.1:8080\"\n",
                "a.toml: `server.public_url`: is required (our issuer URL and the default CI-token audience)",
            ),
            (
                "[server]\npublic_url = \"http://sts.example.com\"\n",
                "a.toml: `server.public_url`: public_url \"http://sts.example.com\" uses http://, which is allowed only for loopback hosts; use https://",
            ),
            (
                "[server]\npublic_url = \"https://a.example?x=1\"\n",
                "a.toml: `server.public_url`: public_url \"https://a.example?x=1\" must not have a query or fragment",
            ),
            (
                "[server]\npublic_url = \"https://a.example\"\nlisten = \"0.0.0.0:8080\"\n",
                "a.toml: `server.listen`: 0.0.0.0:8080 is not a loopback address and tokenmint serves plain HTTP; terminate TLS in a proxy and set server.behind_tls_proxy = true",
            ),
            (
                "[server]\npublic_url = \"https://a.example\"\n[issuers.ci]\nissuer = \"https://ci.acme.example\"\n",
                "a.toml: `issuers.ci.kind`: is required for \"https://ci.acme.example\": set github, gitlab, terraform or generic",
            ),
            (
                "[server]\npublic_url = \"https://a.example\"\n[issuers.ci]\nissuer = \"http://ci.acme.example\"\nkind = \"generic\"\n",
                "a.toml: `issuers.ci.issuer`: issuer \"http://ci.acme.example\" uses http://, which is allowed only for loopback hosts; use https://",
            ),
            (
                "[server]\npublic_url = \"https://a.example\"\n[issuers.gh]\nissuer = \"https://token.actions.githubusercontent.com\"\nalgorithms = [\"HS256\"]\n",
                "a.toml: `issuers.gh.algorithms`: algorithm \"HS256\" can never be configured: CI tokens must be signed with an asymmetric key",
            ),
            (
                "[server]\npublic_url = \"https://a.example\"\n[issuers.gh]\nissuer = \"https://token.actions.githubusercontent.com\"\nleeway = \"60\"\n",
                "a.toml: `issuers.gh.leeway`: duration \"60\" has no unit; write it like \"90s\", \"15m\" or \"1h\"",
            ),
            (
                "[server]\npublic_url = \"https://a.example\"\n[issuers.a]\nissuer = \"https://gitlab.com\"\n[issuers.b]\nissuer = \"https://gitlab.com\"\n",
                "a.toml: `issuers.b.issuer`: issuer \"https://gitlab.com\" is also configured as issuers.a",
            ),
            (
                "[server]\npublic_url = \"https://a.example\"\n[targets.a]\nkind = \"local\"\naudience = \"https://api\"\n[targets.b]\nkind = \"local\"\naudience = \"https://api\"\n",
                "a.toml: targets a, b share the audience \"https://api\"; set match_audience_url = false on all but one",
            ),
            // Security: a public platform's issuer keeps its platform's rules.
            (
                "[server]\npublic_url = \"https://a.example\"\n[issuers.gh]\nissuer = \"https://token.actions.githubusercontent.com\"\nkind = \"generic\"\n",
                "a.toml: `issuers.gh.kind`: \"generic\" contradicts the issuer: \"https://token.actions.githubusercontent.com\" is the public github issuer, shared by every github customer, whose rules (binding claims, dangerous triggers) must apply; remove issuers.gh.kind or set it to \"github\"",
            ),
            (
                "[server]\npublic_url = \"https://a.example\"\n[issuers.tfc]\nissuer = \"https://app.terraform.io\"\nkind = \"gitlab\"\n",
                "a.toml: `issuers.tfc.kind`: \"gitlab\" contradicts the issuer: \"https://app.terraform.io\" is the public terraform issuer, shared by every terraform customer, whose rules (binding claims, dangerous triggers) must apply; remove issuers.tfc.kind or set it to \"terraform\"",
            ),
            // Security: an audience identifies exactly one target.
            (
                "[server]\npublic_url = \"https://a.example\"\n[targets.a2]\nkind = \"local\"\naudience = \"b\"\n[targets.b]\nkind = \"local\"\naudience = \"https://b.example\"\n",
                "a.toml: `targets.a2.audience`: \"b\" is also the name of targets.b, so a request for audience \"b\" could mean either; give targets.a2 its API's URL as audience, or set match_audience_url = false on it",
            ),
            (
                "[server]\npublic_url = \"https://a.example\"\n[targets.Bad]\nkind = \"local\"\naudience = \"https://api\"\n",
                "a.toml: `targets.Bad`: target names must match [a-z0-9][a-z0-9_-]{0,62}",
            ),
        ];
        for (text, expected) in cases {
            jail.create_file("a.toml", text)?;
            let err = load("a.toml").expect_err(expected);
            assert!(
                err.starts_with(expected) || err == expected,
                "got {err:?}\nwant {expected:?}"
            );
        }
        Ok(())
    });
}

#[test]
fn a_kind_that_agrees_with_the_public_issuer_and_an_audience_equal_to_its_own_name_load() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "a.toml",
            "[server]\npublic_url = \"https://a.example\"\n[issuers.gh]\nissuer = \"https://token.actions.githubusercontent.com\"\nkind = \"github\"\n[issuers.selfhosted]\nissuer = \"https://gitlab.acme.example\"\nkind = \"gitlab\"\n[targets.api]\nkind = \"local\"\naudience = \"api\"\n[targets.b]\nkind = \"local\"\naudience = \"api-b\"\nmatch_audience_url = false\n[targets.api-b]\nkind = \"local\"\naudience = \"https://b.example\"\n",
        )?;
        let config = load("a.toml")?;
        assert_eq!(config.issuers["gh"].kind, IssuerKind::Github);
        assert_eq!(config.issuers["selfhosted"].kind, IssuerKind::Gitlab);
        assert_eq!(config.targets["api"].audience, "api");
        Ok(())
    });
}

#[test]
fn behind_a_tls_proxy_a_non_loopback_listen_is_accepted() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "a.toml",
            "[server]\npublic_url = \"https://a.example\"\nlisten = \"0.0.0.0:8080\"\nbehind_tls_proxy = true\n",
        )?;
        let config = load("a.toml")?;
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
        Ok(())
    });
}

const TWO_TARGETS: &str = r#"
[server]
public_url = "https://sts.example.com"
[issuers.github-enterprise]
issuer = "https://ghe.acme.example/_services/token"
kind = "github"
[targets.tenant-prod]
kind = "local"
audience = "https://tenant.example"
[targets.internal-api]
kind = "local"
audience = "https://api.internal.example"
"#;

/// A shell cannot export `TOKENMINT_TARGETS__tenant-prod__MAX_TTL`: the NAME segment
/// matches the file's name ignoring ASCII case and `-`/`_`.
#[test]
fn a_variable_names_a_files_target_or_issuer_as_a_shell_can_write_it() {
    Jail::expect_with(|jail| {
        jail.create_file("a.toml", TWO_TARGETS)?;
        jail.set_env("TOKENMINT_TARGETS__TENANT_PROD__MAX_TTL", "30m");
        jail.set_env("TOKENMINT_TARGETS__Internal_Api__MAX_TTL", "5m");
        jail.set_env("TOKENMINT_ISSUERS__GITHUB_ENTERPRISE__LEEWAY", "10s");
        let config = load("a.toml")?;
        assert_eq!(config.targets.len(), 2, "no new target was made");
        assert_eq!(config.targets["tenant-prod"].max_ttl.as_secs(), 30 * 60);
        assert_eq!(config.targets["internal-api"].max_ttl.as_secs(), 5 * 60);
        assert_eq!(config.issuers.len(), 1);
        assert_eq!(config.issuers["github-enterprise"].leeway.as_secs(), 10);
        Ok(())
    });
}

#[test]
fn a_variable_that_could_mean_two_targets_is_refused() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "a.toml",
            &format!(
                "{TWO_TARGETS}[targets.tenant_prod]\nkind = \"local\"\naudience = \"https://other.example\"\n"
            ),
        )?;
        jail.set_env("TOKENMINT_TARGETS__TENANT_PROD__MAX_TTL", "30m");
        assert_eq!(
            load("a.toml").expect_err("ambiguous"),
            "environment variable TOKENMINT_TARGETS__TENANT_PROD__MAX_TTL: TENANT_PROD could mean \
             targets.tenant-prod or targets.tenant_prod of a.toml (target names are matched \
             ignoring case and -/_); rename one of them, or write the name exactly in the variable"
        );
        Ok(())
    });
}

#[test]
fn a_variable_naming_no_target_of_the_file_says_it_made_a_new_one() {
    Jail::expect_with(|jail| {
        jail.create_file("a.toml", TWO_TARGETS)?;
        jail.set_env("TOKENMINT_TARGETS__TENANT_STAGING__MAX_TTL", "30m");
        assert_eq!(
            load("a.toml").expect_err("a target without a kind"),
            "environment variable TOKENMINT_TARGETS__TENANT_STAGING__MAX_TTL: missing required \
             key `targets.tenant_staging.kind`; a.toml has no target \"tenant_staging\" (names \
             match ignoring case and -/_), so this variable made a new one (a.toml's targets: \
             internal-api, tenant-prod)"
        );
        jail.set_env("TOKENMINT_TARGETS__TENANT_STAGING__KIND", "local");
        assert_eq!(
            load("a.toml").expect_err("a local target without an audience"),
            "environment variable TOKENMINT_TARGETS__TENANT_STAGING__KIND: \
             `targets.tenant_staging.audience`: is required for local targets; a.toml has no \
             target \"tenant_staging\" (names match ignoring case and -/_), so this variable \
             made a new one (a.toml's targets: internal-api, tenant-prod)"
        );
        Ok(())
    });
}

#[test]
fn a_target_made_entirely_of_variables_still_loads() {
    Jail::expect_with(|jail| {
        jail.create_file("a.toml", TWO_TARGETS)?;
        jail.set_env("TOKENMINT_TARGETS__STAGING__KIND", "local");
        jail.set_env(
            "TOKENMINT_TARGETS__STAGING__AUDIENCE",
            "https://staging.example",
        );
        let config = load("a.toml")?;
        assert_eq!(
            config.targets["staging"].audience,
            "https://staging.example"
        );
        Ok(())
    });
}

#[test]
fn an_error_in_a_value_from_a_variable_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.create_file("a.toml", TWO_TARGETS)?;
        jail.set_env("TOKENMINT_SERVER__LISTEN", "0.0.0.0:8080");
        assert_eq!(
            load("a.toml").expect_err("not loopback"),
            "environment variable TOKENMINT_SERVER__LISTEN: `server.listen`: 0.0.0.0:8080 is not \
             a loopback address and tokenmint serves plain HTTP; terminate TLS in a proxy and set \
             server.behind_tls_proxy = true"
        );
        Ok(())
    });
}

#[test]
fn a_duration_written_as_a_number_says_how_durations_are_written() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "a.toml",
            &TWO_TARGETS.replace(
                "audience = \"https://tenant.example\"\n",
                "audience = \"https://tenant.example\"\nmax_ttl = 900\n",
            ),
        )?;
        assert_eq!(
            load("a.toml").expect_err("a number"),
            "a.toml: `targets.tenant-prod.max_ttl`: duration 900 is a number without a unit; \
             write it like \"90s\", \"15m\" or \"1h\" (in TOML, in quotes)"
        );
        jail.create_file("a.toml", TWO_TARGETS)?;
        jail.set_env("TOKENMINT_ISSUERS__GITHUB_ENTERPRISE__LEEWAY", "60");
        assert_eq!(
            load("a.toml").expect_err("a number"),
            "environment variable TOKENMINT_ISSUERS__GITHUB_ENTERPRISE__LEEWAY: \
             `issuers.github-enterprise.leeway`: duration 60 is a number without a unit; write \
             it like \"90s\", \"15m\" or \"1h\" (in TOML, in quotes)"
        );
        Ok(())
    });
}

#[test]
fn an_inline_secret_names_the_keys_that_say_where_it_is_kept() {
    Jail::expect_with(|jail| {
        let remote = "[server]\npublic_url = \"https://a.example\"\n[targets.tenant-prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"abc\"\n";
        jail.create_file("a.toml", &format!("{remote}client_secret = \"s3cr3t\"\n"))?;
        let err = load("a.toml").expect_err("inline secret");
        assert_eq!(
            err,
            "a.toml: `targets.tenant-prod.client_secret`: secrets are never written inline, \
             because configuration files get committed, copied and logged; put the secret in a \
             file and set client_secret_file to its path, or in an environment variable and set \
             client_secret_env to its name"
        );
        assert!(!err.contains("s3cr3t"));
        jail.create_file(
            "a.toml",
            &format!("{remote}private_key = \"-----BEGIN PRIVATE KEY-----\"\n"),
        )?;
        assert_eq!(
            load("a.toml").expect_err("inline key"),
            "a.toml: `targets.tenant-prod.private_key`: secrets are never written inline, \
             because configuration files get committed, copied and logged; put the PEM key in a \
             file and set private_key_file to its path, or in an environment variable and set \
             private_key_env to its name"
        );
        Ok(())
    });
}
