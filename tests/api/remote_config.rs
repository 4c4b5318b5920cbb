//! Configuration of auth0 and oauth2 targets: defaults, every refusal naming its key,
//! and credentials that stop the service at start.
#![expect(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error"
)]

use figment::Jail;
use tokenmint::adapters::mint::RemoteMinter;
use tokenmint::adapters::mint::remote::NoObserver;
use tokenmint::config::{
    AssertionAlgorithm, AudienceParam, ClientAuthConfig, Config, ConfigSource, RemoteProvider,
    SecretMethod, SecretSource, TargetConfig,
};

use crate::helpers::*;
use crate::remote::{CLIENT_ID, key_path};

const HEAD: &str = "[server]\npublic_url = \"https://sts.example.com\"\n";

/// Loads `HEAD` + `toml` as `tokenmint.toml` in a jail; the error text on failure.
fn load_in(jail: &mut Jail, toml: &str) -> Result<Config, String> {
    jail.create_file("tokenmint.toml", &format!("{HEAD}{toml}"))
        .map_err(|e| e.to_string())?;
    Config::load(&ConfigSource::default()).map_err(|e| e.to_string())
}

fn target(config: &Config) -> &TargetConfig {
    &config.targets["prod"]
}

#[test]
fn auth0_defaults_follow_the_contract() {
    Jail::expect_with(|jail| {
        let config = load_in(
            jail,
            &format!(
                "[targets.prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"{CLIENT_ID}\"\nprivate_key_file = \"/run/secrets/prod.pem\"\n"
            ),
        )?;
        let target = target(&config);
        assert_eq!(target.audience, "https://acme.eu.auth0.com/api/v2/");
        assert_eq!(target.max_ttl.as_secs(), 3600);
        let remote = target.remote().expect("remote");
        assert_eq!(
            remote.provider,
            RemoteProvider::Auth0 {
                domain: "acme.eu.auth0.com".to_owned()
            }
        );
        assert_eq!(
            remote.token_endpoint.as_str(),
            "https://acme.eu.auth0.com/oauth/token"
        );
        assert_eq!(remote.audience_param, AudienceParam::Audience);
        assert!(remote.enforce_max_ttl);
        assert!(!remote.reuse_tokens);
        assert_eq!(remote.timeout.as_secs(), 10);
        match &remote.client_auth {
            ClientAuthConfig::PrivateKeyJwt {
                algorithm,
                assertion_audience,
                key,
            } => {
                assert_eq!(*algorithm, AssertionAlgorithm::RS256);
                assert_eq!(assertion_audience, "https://acme.eu.auth0.com/");
                assert_eq!(key.key(), "targets.prod.private_key_file");
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    });
}

#[test]
fn a_custom_domain_moves_the_endpoint_and_the_assertion_audience() {
    Jail::expect_with(|jail| {
        let config = load_in(
            jail,
            &format!(
                "[targets.prod]\nkind = \"auth0\"\ndomain = \"Acme.EU.auth0.com\"\nbase_url = \"https://login.acme.com/\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"PROD_SECRET\"\nauth_method = \"client_secret_basic\"\n"
            ),
        )?;
        let remote = target(&config).remote().expect("remote");
        assert_eq!(
            remote.token_endpoint.as_str(),
            "https://login.acme.com/oauth/token"
        );
        assert_eq!(
            target(&config).audience,
            "https://acme.eu.auth0.com/api/v2/"
        );
        match &remote.client_auth {
            ClientAuthConfig::ClientSecret { secret, method } => {
                assert_eq!(*method, SecretMethod::Basic);
                assert_eq!(
                    secret,
                    &SecretSource::Env {
                        key: "targets.prod.client_secret_env".to_owned(),
                        name: "PROD_SECRET".to_owned()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    });
}

#[test]
fn oauth2_defaults_the_assertion_audience_to_the_token_endpoint() {
    Jail::expect_with(|jail| {
        let config = load_in(
            jail,
            "[targets.prod]\nkind = \"oauth2\"\ntoken_endpoint = \"https://id.example.com/oauth2/v1/token\"\naudience = \"api://deploy\"\nclient_id = \"okta-client\"\nprivate_key_file = \"/k.pem\"\nsigning_algorithm = \"PS256\"\naudience_param = \"resource\"\n",
        )?;
        let remote = target(&config).remote().expect("remote");
        assert_eq!(remote.provider, RemoteProvider::OAuth2);
        assert_eq!(remote.audience_param, AudienceParam::Resource);
        match &remote.client_auth {
            ClientAuthConfig::PrivateKeyJwt {
                assertion_audience,
                algorithm,
                ..
            } => {
                assert_eq!(assertion_audience, "https://id.example.com/oauth2/v1/token");
                assert_eq!(*algorithm, AssertionAlgorithm::PS256);
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    });
}

#[test]
fn every_bad_remote_target_is_refused_naming_its_key() {
    let auth0 = |rest: &str| {
        format!(
            "[targets.prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"c1\"\n{rest}"
        )
    };
    let key = "private_key_file = \"/k.pem\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            auth0(""),
            "tokenmint.toml: `targets.prod`: needs client credentials: set private_key_file or private_key_env (private_key_jwt), or client_secret_file or client_secret_env",
        ),
        (
            auth0("private_key_file = \"/k.pem\"\nclient_secret_env = \"S\"\n"),
            "tokenmint.toml: `targets.prod`: set exactly one client credential, not targets.prod.private_key_file and targets.prod.client_secret_env",
        ),
        (
            auth0(&format!("{key}signing_algorithm = \"ES256\"\n")),
            "tokenmint.toml: `targets.prod.signing_algorithm`: \"ES256\" is not one of RS256, RS384, PS256",
        ),
        (
            auth0(&format!("{key}auth_method = \"client_secret_basic\"\n")),
            "tokenmint.toml: `targets.prod.auth_method`: applies only to client secrets; a private key always authenticates with private_key_jwt",
        ),
        (
            auth0("client_secret_env = \"S\"\nauth_method = \"client_secret_jwt\"\n"),
            "tokenmint.toml: `targets.prod.auth_method`: \"client_secret_jwt\" is not one of \"client_secret_post\", \"client_secret_basic\"",
        ),
        (
            auth0(&format!("{key}base_url = \"http://login.acme.com\"\n")),
            "tokenmint.toml: `targets.prod.base_url`: base_url \"http://login.acme.com\" uses http://, which is allowed only for loopback hosts; use https://",
        ),
        (
            auth0(&format!("{key}base_url = \"https://login.acme.com/tenant\"\n")),
            "tokenmint.toml: `targets.prod.base_url`: base_url \"https://login.acme.com/tenant\" must not have a path: the token endpoint is {base_url}/oauth/token",
        ),
        (
            auth0(&format!("{key}algorithm = \"ES256\"\n")),
            "tokenmint.toml: `targets.prod.algorithm`: is not a key of \"auth0\" targets",
        ),
        (
            auth0(&format!("{key}audience_param = \"resource\"\n")),
            "tokenmint.toml: `targets.prod.audience_param`: is not a key of \"auth0\" targets",
        ),
        (
            auth0(&format!("{key}timeout = \"0s\"\n")),
            "tokenmint.toml: `targets.prod.timeout`: must be between 1s and 1m: a CI job waits this long at most",
        ),
        (
            auth0(&format!("{key}timeout = \"2m\"\n")),
            "tokenmint.toml: `targets.prod.timeout`: must be between 1s and 1m: a CI job waits this long at most",
        ),
        (
            auth0(&format!("{key}max_ttl = \"2000y\"\n")),
            "tokenmint.toml: `targets.prod.max_ttl`: must be at most 30 days for a remote target",
        ),
        (
            "[targets.prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"c12345678901234567890123456789012345678901234567890123456789012345\"\nprivate_key_file = \"/k.pem\"\n".to_owned(),
            "tokenmint.toml: `targets.prod.client_id`: is longer than 64 characters, which Auth0 refuses in a client assertion",
        ),
        (
            auth0(&format!("{key}timeout = \"2s\"\nconnect_timeout = \"5s\"\n")),
            "tokenmint.toml: `targets.prod.connect_timeout`: must be longer than 0s and at most the timeout (2s)",
        ),
        (
            "[targets.prod]\nkind = \"auth0\"\ndomain = \"https://acme.eu.auth0.com\"\nclient_id = \"c1\"\nprivate_key_file = \"/k.pem\"\n".to_owned(),
            "tokenmint.toml: `targets.prod.domain`: \"https://acme.eu.auth0.com\" is not a host name like \"acme.eu.auth0.com\" (no scheme, port or path; a custom domain or test server goes in base_url)",
        ),
        (
            "[targets.prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nprivate_key_file = \"/k.pem\"\n".to_owned(),
            "tokenmint.toml: `targets.prod.client_id`: is required for \"auth0\" targets: the client tokenmint authenticates as",
        ),
        (
            "[targets.prod]\nkind = \"oauth2\"\naudience = \"api://x\"\nclient_id = \"c1\"\nprivate_key_file = \"/k.pem\"\n".to_owned(),
            "tokenmint.toml: `targets.prod.token_endpoint`: is required for oauth2 targets",
        ),
        (
            "[targets.prod]\nkind = \"oauth2\"\ntoken_endpoint = \"https://id.example.com/token\"\nclient_id = \"c1\"\nprivate_key_file = \"/k.pem\"\n".to_owned(),
            "tokenmint.toml: `targets.prod.audience`: is required for oauth2 targets: the API its tokens are for",
        ),
        (
            "[targets.prod]\nkind = \"oauth2\"\ntoken_endpoint = \"https://id.example.com/token\"\naudience = \"api://x\"\nclient_id = \"c1\"\nclient_secret_file = \"/s\"\nassertion_audience = \"https://id.example.com/\"\n".to_owned(),
            "tokenmint.toml: `targets.prod.assertion_audience`: applies only to private_key_jwt (private_key_file or private_key_env)",
        ),
        (
            "[targets.prod]\nkind = \"oauth2\"\ntoken_endpoint = \"https://id.example.com/token\"\naudience = \"api://x\"\nclient_id = \"c1\"\nclient_secret_file = \"/s\"\norganization = \"org\"\n".to_owned(),
            "tokenmint.toml: `targets.prod.organization`: is not a key of \"oauth2\" targets",
        ),
        (
            "[targets.prod]\nkind = \"local\"\naudience = \"https://api\"\nclient_id = \"c1\"\n".to_owned(),
            "tokenmint.toml: `targets.prod.client_id`: is not a key of \"local\" targets",
        ),
        (
            "[targets.prod]\nkind = \"vault\"\n".to_owned(),
            "tokenmint.toml: `targets.prod.kind`: \"vault\" is not a target kind; use \"local\", \"auth0\" or \"oauth2\"",
        ),
    ];
    for (toml, expected) in cases {
        Jail::expect_with(|jail| {
            let err = load_in(jail, &toml).expect_err("refused");
            assert_eq!(err, expected, "{toml}");
            Ok(())
        });
    }
}

#[test]
fn credentials_are_read_from_variables_and_missing_ones_are_named() {
    Jail::expect_with(|jail| {
        let pem = std::fs::read_to_string(key_path("auth0-client.pem")).expect("key");
        jail.set_env("PROD_KEY", &pem);
        let config = load_in(
            jail,
            &format!(
                "[targets.prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"{CLIENT_ID}\"\nprivate_key_env = \"PROD_KEY\"\n"
            ),
        )?;
        let minter =
            RemoteMinter::new(target(&config), std::sync::Arc::new(NoObserver)).expect("loads");
        let debug = format!("{:?}", minter.client().credentials());
        assert!(
            debug.starts_with("Assertion(AssertionSigner { kid:"),
            "{debug}"
        );
        assert!(!debug.contains("MII"), "{debug}");

        let config = load_in(
            jail,
            "[targets.prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"c1\"\nclient_secret_env = \"NOT_SET_ANYWHERE\"\n",
        )?;
        let err = RemoteMinter::new(target(&config), std::sync::Arc::new(NoObserver))
            .err()
            .expect("refused");
        assert_eq!(
            err,
            "targets.prod.client_secret_env: environment variable NOT_SET_ANYWHERE is not set"
        );

        jail.set_env("PROD_SECRET", "hunter2-secret");
        let config = load_in(
            jail,
            "[targets.prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"c1\"\nclient_secret_env = \"PROD_SECRET\"\n",
        )?;
        let minter =
            RemoteMinter::new(target(&config), std::sync::Arc::new(NoObserver)).expect("loads");
        let debug = format!("{:?}", minter.client().credentials());
        assert_eq!(debug, "Secret { secret: \"[REDACTED]\", method: Post }");
        Ok(())
    });
}

/// The service refuses to start on credentials it cannot use, with one line naming them.
#[tokio::test]
async fn unusable_private_keys_stop_the_service_at_start() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let cases = [
        (
            "/nonexistent/prod.pem".to_owned(),
            "targets.tenant-prod.private_key_file: cannot read /nonexistent/prod.pem: No such file or directory (os error 2)",
        ),
        (
            key_path("auth0-client-1024.pem"),
            "auth0-client-1024.pem): the RSA key's size is outside 2048 to 4096 bits, which private_key_jwt needs",
        ),
        (
            key_path("auth0-client-ec.pem"),
            "auth0-client-ec.pem): the PKCS#8 document is not a usable RSA private key (WrongAlgorithm); private_key_jwt needs an RSA key",
        ),
    ];
    for (path, expected) in cases {
        let result = AppBuilder::new()
            .github("github", &fake)
            .config(&format!(
                "[targets.tenant-prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"{CLIENT_ID}\"\nprivate_key_file = \"{path}\"\n"
            ))
            .try_spawn()
            .await;
        let err = result.err().expect("refused").to_string();
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("MII"), "{err}");
    }
}

#[tokio::test]
async fn policies_for_remote_targets_take_no_ttl() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let result = AppBuilder::new()
        .github("github", &fake)
        .config(&format!(
            "[targets.tenant-prod]\nkind = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"{CLIENT_ID}\"\nprivate_key_file = \"{}\"\n",
            key_path("auth0-client.pem")
        ))
        .policy(
            "p.yaml",
            "issuer: github\ntarget: tenant-prod\nscopes: [read:clients]\nttl: 5m\nclaims:\n  repository_id: \"1\"\n",
        )
        .try_spawn()
        .await;
    let err = result.err().expect("refused").to_string();
    assert!(
        err.contains("ttl: only local targets take a ttl; remote target \"tenant-prod\" decides its tokens' lifetime"),
        "{err}"
    );
}
