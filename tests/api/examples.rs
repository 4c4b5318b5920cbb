//! The shipped configurations start as they are: every example in `examples/` and every
//! deployment configuration in `deploy/` is served by the real binary (`tokenmint serve
//! --config FILE`), with only what must point at this test's fakes overridden through the
//! variables the README documents. Each becomes ready, loads exactly the policies its
//! directory holds, and every one of those policies admits the job it was written for.
//!
//! What is overridden, and why: `--listen` and `server.admin_listen` (free loopback ports),
//! `storage.data_dir` (a temporary directory), `jwks_file` of each public issuer (this host
//! cannot reach GitHub, GitLab or HCP Terraform; the CI tokens are signed by the fake
//! issuers' test key and keep the real `iss`), each Auth0 target's `base_url` (a fake
//! tenant on loopback) and key files (test keys), and the secrets through the very
//! variables the examples name (`TENANT_PROD_CLIENT_SECRET`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::fake_auth0::{FakeTenant, TenantSetup};
use crate::helpers::{
    ID_TOKEN, PUBLIC_URL, TOKEN_EXCHANGE, fixture_claims, jwk_with_kid, now, sign_with_header,
    test_key, tokenmint,
};

const GITHUB: &str = "https://token.actions.githubusercontent.com";
const GITLAB: &str = "https://gitlab.com";
const TERRAFORM: &str = "https://app.terraform.io";
/// The kid the fake issuers publish their test key under.
const KID: &str = "cc413527-173f-5a05-976e-9c52b1d7b431";
const TENANT_PROD_CLIENT: &str = "Pr0dQkZ1tokenmintPrdClient000001";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A CI token with a fixture's claims, issued now by `iss` for the examples' audience and
/// signed with the fake issuers' key.
fn ci_token(iss: &str, fixture: &str, changes: &[(&str, &str)]) -> String {
    let mut claims: Map<String, Value> = fixture_claims(fixture);
    let lifetime = claims["exp"].as_i64().unwrap_or(300) - claims["iat"].as_i64().unwrap_or(0);
    let now = now();
    claims.insert("iss".into(), json!(iss));
    claims.insert("aud".into(), json!(PUBLIC_URL));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now - 5));
    claims.insert("exp".into(), json!(now + lifetime.max(60)));
    claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
    for (name, value) in changes {
        claims.insert((*name).into(), json!(value));
    }
    sign_with_header(
        &test_key("ci-issuer-a"),
        &json!({"typ": "JWT", "alg": "RS256", "kid": KID}),
        &Value::Object(claims),
    )
}

/// The fake issuers' public key as a JWKS file: what `jwks_file` serves for an issuer this
/// host cannot reach.
fn write_jwks(dir: &Path) -> PathBuf {
    let path = dir.join("ci-issuers-jwks.json");
    let jwks = json!({"keys": [jwk_with_kid(&test_key("ci-issuer-a"), KID)]});
    std::fs::write(&path, jwks.to_string()).expect("write the JWKS file");
    path
}

/// A copy of a test key, mode 0600 as the README asks of key files.
fn write_private_key(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::copy(root().join("tests/data/keys/auth0-client.pem"), &path).expect("copy key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A fake Auth0 tenant for a target whose Management API is `audience`, granting `scopes`.
async fn tenant(setup: TenantSetup, audience: &str, scopes: &[&str]) -> FakeTenant {
    let mut setup = setup;
    setup.audience = audience.to_owned();
    setup.grant_scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
    FakeTenant::start(setup).await
}

/// The policy names each file of a policy directory holds, read as `serve` reads them.
fn policies_by_file(config: &str) -> BTreeMap<String, Vec<String>> {
    let config = tokenmint::config::Config::load(&tokenmint::config::ConfigSource {
        file: Some(root().join(config)),
        listen: None,
    })
    .expect("the example configuration loads");
    let context = tokenmint::trust::policy::PolicyContext::from_config(&config);
    let (files, errors) = tokenmint::trust::policy::list_policy_files(&config.policies.dir);
    assert!(errors.is_empty(), "{errors:?}");
    files
        .iter()
        .map(|file| {
            let policies =
                tokenmint::trust::policy::load_file(file, &context).expect("the file compiles");
            let stem = file.file_stem().and_then(|s| s.to_str()).expect("a stem");
            (
                stem.to_owned(),
                policies.iter().map(|p| p.name().to_owned()).collect(),
            )
        })
        .collect()
}

/// `tokenmint serve --config FILE` from the repository's root, killed when dropped.
struct Served {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    listen: String,
    admin: String,
    client: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Served {
    fn start(config: &str, env: &[(&str, &str)]) -> Served {
        let data = tempfile::tempdir().expect("tempdir");
        let admin = format!("127.0.0.1:{}", free_port());
        let mut command = tokenmint();
        command
            .current_dir(root())
            .args(["serve", "--config", config, "--listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env("TOKENMINT_STORAGE__DATA_DIR", data.path())
            .env("TOKENMINT_SERVER__ADMIN_LISTEN", &admin)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start tokenmint");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let listen = loop {
            match lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if line.contains("tokenmint is serving")
                        && let Ok(log) = serde_json::from_str::<Value>(&line)
                    {
                        break log["listen"].as_str().expect("listen").to_owned();
                    }
                    seen.push(line);
                }
                Err(_) => panic!("{config} did not start serving:\n{}", seen.join("\n")),
            }
        };
        let warnings: Vec<&String> = seen.iter().filter(|l| l.contains("\"WARN\"")).collect();
        assert!(
            warnings.is_empty(),
            "{config} starts with warnings: {warnings:?}"
        );
        Served {
            child,
            lines,
            listen,
            admin,
            client: reqwest::Client::new(),
            _data: data,
        }
    }

    /// Waits for `/readyz` (status only) and returns the admin listener's detail.
    async fn ready(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self
                .client
                .get(format!("http://{}/readyz", self.listen))
                .send()
                .await
                .map(|r| r.status().as_u16());
            if status.as_ref().is_ok_and(|s| *s == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never answered 200 (last: {status:?}); log:\n{}",
                self.lines.try_iter().collect::<Vec<_>>().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.client
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .expect("admin readyz")
            .json()
            .await
            .expect("readiness detail is JSON")
    }

    /// Exchanges `ci_token` for `audience`; returns the status and the answer.
    async fn exchange(&self, ci_token: &str, audience: &str) -> (u16, Value) {
        let answer = self
            .client
            .post(format!("http://{}/token", self.listen))
            .json(&json!({
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": ci_token,
                "subject_token_type": ID_TOKEN,
                "audience": audience,
            }))
            .send()
            .await
            .expect("POST /token");
        let status = answer.status().as_u16();
        (status, answer.json().await.expect("a JSON answer"))
    }

    /// Asserts that `ci_token` buys a token for `audience` through `policy`.
    async fn admits(&self, ci_token: &str, audience: &str, policy: &str) {
        let (status, body) = self.exchange(ci_token, audience).await;
        assert_eq!(status, 200, "{policy}: {body}");
        assert_eq!(body["policy"], policy, "{body}");
        assert_eq!(body["target"], audience, "{body}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every policy in `dir` (as [`policies_by_file`] reads it) is in `admitted`, and the
/// admin detail counts exactly those.
fn assert_all_policies_admitted(
    files: &BTreeMap<String, Vec<String>>,
    admitted: &[&str],
    detail: &Value,
) {
    let mut loaded: Vec<&str> = files.values().flatten().map(String::as_str).collect();
    loaded.sort_unstable();
    let mut admitted = admitted.to_vec();
    admitted.sort_unstable();
    assert_eq!(loaded, admitted, "every example policy has a job it admits");
    assert_eq!(detail["ready"], true, "{detail}");
    assert_eq!(detail["policies"], json!(loaded.len()), "{detail}");
}

/// A file holds the policy its name says: a one-policy file is named after its policy
/// (the name it would default to anyway), and a file holding a list is named after what
/// its policies share, each named `{file stem}-{variant}`.
#[test]
fn example_policy_files_are_named_after_the_policies_they_hold() {
    for config in [
        "examples/tokenmint.toml",
        "examples/three-tenants/tokenmint.toml",
    ] {
        let files = policies_by_file(config);
        assert!(!files.is_empty(), "{config} has policies");
        for (stem, names) in &files {
            match names.as_slice() {
                [only] => assert_eq!(only, stem, "{config}: {stem}.yaml holds {only}"),
                several => {
                    for name in several {
                        assert!(
                            name.starts_with(&format!("{stem}-")),
                            "{config}: {stem}.yaml holds {name}"
                        );
                    }
                }
            }
        }
    }
}

/// `examples/tokenmint.toml`: GitHub, GitLab and HCP Terraform issuers, a local target and
/// an Auth0 tenant whose client secret comes from `TENANT_PROD_CLIENT_SECRET`, as the
/// example's comment says to run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_configuration_starts_and_each_of_its_policies_admits_its_job() {
    const CONFIG: &str = "examples/tokenmint.toml";
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = write_jwks(dir.path());
    let jwks = jwks.to_str().expect("UTF-8");
    let secret = "example-client-secret";
    let tenant = tenant(
        TenantSetup::secret_post(TENANT_PROD_CLIENT, secret),
        "https://acme.eu.auth0.com/api/v2/",
        &[
            "read:clients",
            "update:clients",
            "read:resource_servers",
            "update:resource_servers",
            "read:actions",
            "update:actions",
            "read:roles",
            "update:roles",
        ],
    )
    .await;
    let served = Served::start(
        CONFIG,
        &[
            ("TOKENMINT_ISSUERS__GITHUB__JWKS_FILE", jwks),
            ("TOKENMINT_ISSUERS__GITLAB__JWKS_FILE", jwks),
            ("TOKENMINT_ISSUERS__TERRAFORM__JWKS_FILE", jwks),
            ("TOKENMINT_TARGETS__tenant-prod__BASE_URL", &tenant.base_url),
            ("TENANT_PROD_CLIENT_SECRET", secret),
        ],
    );
    let detail = served.ready().await;
    for issuer in detail["issuers"].as_array().expect("issuers") {
        assert_eq!(issuer["keys"], 1, "{issuer}");
    }

    // GitHub: examples/github/deploy-tenant.yml and terraform-apply.yml, and a deploy of
    // the internal API, each from main in the production environment.
    served
        .admits(
            &ci_token(GITHUB, "github-environment-production", &[]),
            "internal-api",
            "deploy-internal-api",
        )
        .await;
    served
        .admits(
            &ci_token(
                GITHUB,
                "github-environment-production",
                &[(
                    "workflow_ref",
                    "acme/identity-config/.github/workflows/deploy-tenant.yml@refs/heads/main",
                )],
            ),
            "tenant-prod",
            "deploy-tenant-prod",
        )
        .await;
    served
        .admits(
            &ci_token(
                GITHUB,
                "github-environment-production",
                &[
                    ("repository", "acme/identity-terraform"),
                    ("repository_id", "89012399"),
                    (
                        "workflow_ref",
                        "acme/identity-terraform/.github/workflows/terraform-apply.yml@refs/heads/main",
                    ),
                ],
            ),
            "tenant-prod",
            "terraform-tenant-prod",
        )
        .await;
    // GitLab: any protected branch reads the internal API; examples/gitlab/.gitlab-ci.yml
    // deploys from main in the protected production environment.
    served
        .admits(
            &ci_token(GITLAB, "gitlab-branch-main", &[]),
            "internal-api",
            "gitlab-read",
        )
        .await;
    served
        .admits(
            &ci_token(
                GITLAB,
                "gitlab-branch-main",
                &[
                    ("environment", "production"),
                    ("environment_protected", "true"),
                    ("deployment_tier", "production"),
                ],
            ),
            "tenant-prod",
            "gitlab-tenant-prod",
        )
        .await;
    // HCP Terraform: examples/hcp-terraform/ plans read, applies write.
    served
        .admits(
            &ci_token(TERRAFORM, "terraform-plan", &[]),
            "tenant-prod",
            "hcp-terraform-tenant-prod-plan",
        )
        .await;
    served
        .admits(
            &ci_token(
                TERRAFORM,
                "terraform-plan",
                &[("terraform_run_phase", "apply")],
            ),
            "tenant-prod",
            "hcp-terraform-tenant-prod-apply",
        )
        .await;
    assert_eq!(
        tenant.issued().len(),
        5,
        "one tenant token per tenant exchange"
    );

    assert_all_policies_admitted(
        &policies_by_file(CONFIG),
        &[
            "deploy-internal-api",
            "deploy-tenant-prod",
            "terraform-tenant-prod",
            "gitlab-read",
            "gitlab-tenant-prod",
            "hcp-terraform-tenant-prod-plan",
            "hcp-terraform-tenant-prod-apply",
        ],
        &detail,
    );
}

/// `examples/three-tenants/`: each GitHub environment gets its own tenant, through that
/// tenant's own client and private_key_jwt key (RS256, RS256 and PS256 behind a custom
/// domain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_tenant_example_starts_and_each_environment_reaches_its_own_tenant() {
    const CONFIG: &str = "examples/three-tenants/tokenmint.toml";
    const KEY: &str = "auth0-client.pem";
    const SCOPES: &[&str] = &[
        "read:clients",
        "read:resource_servers",
        "update:resource_servers",
        "read:actions",
        "create:actions",
        "update:actions",
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = write_jwks(dir.path());
    let mut tenants = BTreeMap::new();
    let mut env: Vec<(String, String)> = vec![(
        "TOKENMINT_ISSUERS__GITHUB__JWKS_FILE".into(),
        jwks.display().to_string(),
    )];
    for (target, client_id, domain, alg) in [
        (
            "tenant-dev",
            "Dv8sQkZ1tokenmintDevClient000001",
            "acme-dev.eu.auth0.com",
            "RS256",
        ),
        (
            "tenant-staging",
            "St4gQkZ1tokenmintStgClient000001",
            "acme-staging.eu.auth0.com",
            "RS256",
        ),
        (
            "tenant-prod",
            "Pr0dQkZ1tokenmintPrdClient000001",
            "acme.eu.auth0.com",
            "PS256",
        ),
    ] {
        let fake = tenant(
            TenantSetup::private_key_jwt(client_id, KEY, alg),
            &format!("https://{domain}/api/v2/"),
            SCOPES,
        )
        .await;
        let key = write_private_key(dir.path(), &format!("{target}.pem"));
        env.push((
            format!("TOKENMINT_TARGETS__{target}__PRIVATE_KEY_FILE"),
            key.display().to_string(),
        ));
        env.push((
            format!("TOKENMINT_TARGETS__{target}__BASE_URL"),
            fake.base_url.clone(),
        ));
        tenants.insert(target, fake);
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let served = Served::start(CONFIG, &env);
    let detail = served.ready().await;

    let production = ci_token(GITHUB, "github-environment-production", &[]);
    served
        .admits(&production, "tenant-prod", "deploy-tenant-prod")
        .await;
    served
        .admits(
            &ci_token(
                GITHUB,
                "github-environment-production",
                &[("environment", "staging")],
            ),
            "tenant-staging",
            "deploy-tenant-staging",
        )
        .await;
    served
        .admits(
            &ci_token(
                GITHUB,
                "github-environment-production",
                &[
                    ("environment", "development"),
                    ("ref", "refs/heads/alice/new-action"),
                ],
            ),
            "tenant-dev",
            "deploy-tenant-dev",
        )
        .await;
    // Production's job cannot reach staging: the tenants never share a client.
    let (status, body) = served
        .exchange(
            &ci_token(GITHUB, "github-environment-production", &[]),
            "tenant-staging",
        )
        .await;
    assert_eq!(status, 403, "{body}");
    for (target, fake) in &tenants {
        assert_eq!(fake.issued().len(), 1, "{target} was called once");
    }

    assert_all_policies_admitted(
        &policies_by_file(CONFIG),
        &[
            "deploy-tenant-dev",
            "deploy-tenant-staging",
            "deploy-tenant-prod",
        ],
        &detail,
    );
}

/// `deploy/tokenmint.toml` (systemd) and `deploy/container.toml` start once the paths only
/// a service manager or a container engine provides are replaced: the credentials and
/// secrets, the state directory and the policy directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_configurations_start_with_their_paths_replaced() {
    for config in ["deploy/tokenmint.toml", "deploy/container.toml"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let jwks = write_jwks(dir.path());
        let key = write_private_key(dir.path(), "tenant-prod.pem");
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).expect("policies dir");
        std::fs::copy(
            root().join("examples/policies/deploy-tenant-prod.yaml"),
            policies.join("deploy-tenant-prod.yaml"),
        )
        .expect("copy the policy");
        let fake = tenant(
            TenantSetup::private_key_jwt(TENANT_PROD_CLIENT, "auth0-client.pem", "RS256"),
            "https://acme.eu.auth0.com/api/v2/",
            &[
                "read:clients",
                "update:clients",
                "read:resource_servers",
                "update:resource_servers",
                "read:actions",
                "update:actions",
            ],
        )
        .await;
        let served = Served::start(
            config,
            &[
                (
                    "TOKENMINT_ISSUERS__GITHUB__JWKS_FILE",
                    jwks.to_str().expect("UTF-8"),
                ),
                ("TOKENMINT_POLICIES__DIR", policies.to_str().expect("UTF-8")),
                (
                    "TOKENMINT_TARGETS__tenant-prod__PRIVATE_KEY_FILE",
                    key.to_str().expect("UTF-8"),
                ),
                ("TOKENMINT_TARGETS__tenant-prod__BASE_URL", &fake.base_url),
            ],
        );
        let detail = served.ready().await;
        assert_eq!(detail["policies"], 1, "{config}: {detail}");
        served
            .admits(
                &ci_token(
                    GITHUB,
                    "github-environment-production",
                    &[(
                        "workflow_ref",
                        "acme/identity-config/.github/workflows/deploy-tenant.yml@refs/heads/main",
                    )],
                ),
                "tenant-prod",
                "deploy-tenant-prod",
            )
            .await;
    }
}
