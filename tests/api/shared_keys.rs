//! Signing keys shared by replicas through PostgreSQL: one ring for every replica, sealed
//! with the key-encryption key, rotations reaching every replica, `keys reseal`; and the
//! configuration that needs or refuses `storage.key_encryption_key_file`. The PostgreSQL
//! parts run when `TOKENMINT_TEST_DATABASE_URL` is set.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokenmint::adapters::mint::KeyReload;
use tokenmint::adapters::signing::{KeyEncryptionKey, KeyError, KeyRole};
use tokenmint::adapters::store::Location;
use tokenmint::config::{Config, ConfigSource};

use crate::exchange::{deploy_builder, jwt_parts};
use crate::helpers::*;
use crate::issuer_keys::database_ring;
use crate::stores::{TestStore, postgres_url};

/// How long a running replica may take to see a rotation (the contract's promise).
const PICK_UP: Duration = Duration::from_secs(30);

/// Replicas on one PostgreSQL schema, with key-encryption key files in `dir`.
struct Cluster {
    url: String,
    dir: tempfile::TempDir,
    /// The key-encryption key the replicas share.
    kek: PathBuf,
}

impl Cluster {
    async fn start() -> Option<Cluster> {
        let url = postgres_url().await?;
        let dir = tempfile::tempdir().expect("tempdir");
        let kek = dir.path().join("kek");
        write_key_encryption_key(&kek);
        Some(Cluster { url, dir, kek })
    }

    /// A new key-encryption key file in the cluster's directory.
    fn new_kek(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        write_key_encryption_key(&path);
        path
    }

    async fn replica(&self, fake: &FakeIssuer) -> TestApp {
        self.replica_with(fake, &self.kek)
            .await
            .expect("replica starts")
    }

    async fn replica_with(&self, fake: &FakeIssuer, kek: &Path) -> anyhow::Result<TestApp> {
        deploy_builder(fake, "")
            .key_encryption_key_file(kek)
            .spawn_on(Some(TestStore::Postgres), Some(self.url.clone()))
            .await
    }

    /// The database as error messages name it.
    fn described(&self) -> String {
        Location::Postgres(self.url.clone()).describe()
    }
}

fn key_id(kek: &Path) -> String {
    KeyEncryptionKey::read(kek, "storage.key_encryption_key_file")
        .expect("key")
        .id()
        .to_owned()
}

/// `tokenmint ARGS` (off the runtime's thread): exit code, stdout, stderr.
async fn run(args: Vec<String>) -> (Option<i32>, String, String) {
    let output = tokio::task::spawn_blocking(move || {
        tokenmint().args(&args).output().expect("run tokenmint")
    })
    .await
    .expect("join");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn args(parts: &[&str], paths: &[(&str, &Path)]) -> Vec<String> {
    let mut all: Vec<String> = parts.iter().map(|part| (*part).to_owned()).collect();
    for (flag, path) in paths {
        all.push((*flag).to_owned());
        all.push(path.display().to_string());
    }
    all
}

async fn jwks_text(app: &TestApp) -> String {
    let answer = app.get("/.well-known/jwks.json").await;
    assert_eq!(answer.status, 200);
    answer.text
}

fn kids(jwks: &str) -> Vec<String> {
    let document: Value = serde_json::from_str(jwks).expect("JWKS is JSON");
    document["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// An access token from `app`.
async fn access_token(app: &TestApp, fake: &FakeIssuer) -> String {
    let answer = app
        .exchange(&fake.token("github-push-main"), "internal-api", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

/// Verifies `token` with the key of its kid in `jwks`, as a relying party would.
fn verify_with(token: &str, jwks: &str) {
    let (header, _) = jwt_parts(token);
    let document: Value = serde_json::from_str(jwks).expect("JWKS is JSON");
    let jwk = document["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|key| key["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} is not published in {jwks}", header["kid"]))
        .clone();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).expect("jwk");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["https://api.internal.example"]);
    validation.set_issuer(&[PUBLIC_URL]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).expect("the token verifies");
}

/// Waits until every replica publishes `expected` (polling, at most [`PICK_UP`]); returns
/// how long it took.
async fn until_published(replicas: &[&TestApp], expected: &[String]) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        for replica in replicas {
            all &= kids(&jwks_text(replica).await) == expected;
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PICK_UP,
            "not every replica publishes {expected:?} after {PICK_UP:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn replicas_starting_together_share_one_ring_and_verify_each_others_tokens() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let fake = FakeIssuer::start(Shape::Github).await;
    let (first, second) = tokio::join!(cluster.replica(&fake), cluster.replica(&fake));
    let jwks = jwks_text(&first).await;
    assert_eq!(kids(&jwks).len(), 2, "current and next: {jwks}");
    assert_eq!(jwks, jwks_text(&second).await, "identical JWKS");
    // A third replica, started later, finds the same ring.
    let third = cluster.replica(&fake).await;
    assert_eq!(jwks, jwks_text(&third).await);

    let from_first = access_token(&first, &fake).await;
    let from_second = access_token(&second, &fake).await;
    verify_with(&from_first, &jwks_text(&second).await);
    verify_with(&from_second, &jwks_text(&first).await);
    assert_eq!(
        jwt_parts(&from_first).0["kid"],
        jwt_parts(&from_second).0["kid"]
    );

    // Replicas never keep keys in data_dir in this mode.
    for replica in [&first, &second, &third] {
        assert!(!replica.data_dir.join("keys").exists());
    }
}

#[tokio::test]
async fn keys_rotate_reaches_every_replica_within_30s() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let fake = FakeIssuer::start(Shape::Github).await;
    let first = cluster.replica(&fake).await;
    let second = cluster.replica(&fake).await;
    let before = kids(&jwks_text(&first).await);

    let (code, stdout, stderr) = run(args(
        &["keys", "rotate", "--force"],
        &[("--config", &first.config_file)],
    ))
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("rotated signing keys (generation 2)\nES256: current "),
        "{stdout}"
    );
    let rotated = ring_kids(&cluster.url, &cluster.kek).await;
    assert_eq!(rotated.len(), 3, "current, next, previous");
    assert_eq!(rotated[0], before[1], "next became current");
    assert_eq!(rotated[2], before[0], "current became previous");

    let took = until_published(&[&first, &second], &rotated).await;
    assert!(took < PICK_UP, "{took:?}");
    for replica in [&first, &second] {
        let token = access_token(replica, &fake).await;
        assert_eq!(jwt_parts(&token).0["kid"], rotated[0].as_str());
        verify_with(&token, &jwks_text(&first).await);
    }
}

/// The kids of the ring in the database, in JWKS order.
async fn ring_kids(url: &str, kek: &Path) -> Vec<String> {
    let ring = database_ring(url, kek)
        .await
        .load()
        .await
        .expect("the stored ring");
    kids(&ring.jwks(time::OffsetDateTime::now_utc()).to_string())
}

#[tokio::test]
async fn the_database_holds_no_private_key_and_a_wrong_key_encryption_key_is_refused() {
    use sqlx::{Connection as _, Row as _};
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let fake = FakeIssuer::start(Shape::Github).await;
    let app = cluster.replica(&fake).await;
    let published = kids(&jwks_text(&app).await);

    let mut conn = sqlx::AnyConnection::connect(&cluster.url)
        .await
        .expect("connect");
    let row = sqlx::query(
        "SELECT manifest, kek_id, nonce, sealed, row_to_json(s)::text FROM signing_ring s",
    )
    .fetch_one(&mut conn)
    .await
    .expect("one ring");
    let manifest: String = row.get(0);
    let kek_id: String = row.get(1);
    let nonce: Vec<u8> = row.get(2);
    let sealed: Vec<u8> = row.get(3);
    let whole_row: String = row.get(4);
    assert_eq!(kek_id, key_id(&cluster.kek));
    assert_eq!(nonce.len(), 12);
    for kid in &published {
        assert!(manifest.contains(kid.as_str()), "the manifest lists {kid}");
    }
    // Neither PEM text nor any private key's base64 or DER is anywhere in the row.
    let ring = database_ring(&cluster.url, &cluster.kek)
        .await
        .load()
        .await
        .expect("the stored ring");
    let mut needles: Vec<Vec<u8>> = vec![b"PRIVATE KEY".to_vec(), b"BEGIN".to_vec()];
    for alg in ring.algorithms() {
        for role in [KeyRole::Current, KeyRole::Next] {
            let key = ring.key(alg, role).expect("key");
            let pem = key.to_pkcs8_pem();
            let pem = secrecy::ExposeSecret::expose_secret(&pem);
            let block = pem::parse(pem).expect("PEM");
            needles.push(block.contents().to_vec());
            needles.extend(
                pem.lines()
                    .filter(|line| !line.starts_with("-----") && line.len() >= 16)
                    .map(|line| line.as_bytes().to_vec()),
            );
        }
    }
    for text in [manifest.as_bytes(), &sealed[..], whole_row.as_bytes()] {
        for needle in &needles {
            assert!(
                !text.windows(needle.len()).any(|w| w == &needle[..]),
                "private key material in the row"
            );
        }
    }

    let other = cluster.new_kek("other-kek");
    let err = cluster
        .replica_with(&fake, &other)
        .await
        .err()
        .expect("refused");
    assert_eq!(
        format!("{err:#}"),
        format!(
            "loading signing keys from PostgreSQL at {}: storage.key_encryption_key_file is not \
             the key these signing keys were sealed with (its key id is {}; they were sealed with \
             key id {}): give every replica the file they were sealed with (after `tokenmint keys \
             reseal`, the new one)",
            cluster.described(),
            key_id(&other),
            kek_id
        )
    );
}

#[tokio::test]
async fn keys_reseal_moves_the_keys_to_a_new_key_encryption_key() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let fake = FakeIssuer::start(Shape::Github).await;
    let old_replica = cluster.replica(&fake).await;
    let jwks = jwks_text(&old_replica).await;
    let new_kek = cluster.new_kek("new-kek");
    let (old_id, new_id) = (key_id(&cluster.kek), key_id(&new_kek));

    let reseal = args(
        &["keys", "reseal"],
        &[
            ("--new-key-file", &new_kek),
            ("--config", &old_replica.config_file),
        ],
    );
    let (code, stdout, stderr) = run(reseal.clone()).await;
    assert_eq!(code, Some(0), "{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "resealed the signing keys (generation 1) with the key in {}: key id {new_id} (was {old_id})",
                new_kek.display()
            )
            .as_str()
        )
    );
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "next: set storage.key_encryption_key_file = \"{}\" in every replica's \
                 configuration and restart the replicas one by one. Until it restarts, a replica \
                 keeps signing with the keys it loaded and logs that it cannot read newer \
                 rotations, so rotate only once every replica runs with the new file. Then \
                 destroy the old key file ({}) and any copy of it.",
                new_kek.display(),
                cluster.kek.display()
            )
            .as_str()
        )
    );
    // Running it again changes nothing.
    let (code, stdout, _) = run(reseal).await;
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with(&format!(
        "the signing keys (generation 1) are already sealed with the key in {} (key id {new_id}); nothing was written\n",
        new_kek.display()
    )), "{stdout}");

    // A replica started with the new key has the same keys; one with the old key is refused.
    let new_replica = cluster.replica_with(&fake, &new_kek).await.expect("starts");
    assert_eq!(jwks_text(&new_replica).await, jwks);
    let err = cluster
        .replica_with(&fake, &cluster.kek)
        .await
        .err()
        .expect("the old key is refused");
    assert!(
        format!("{err:#}").ends_with(&format!(
            "storage.key_encryption_key_file is not the key these signing keys were sealed with \
             (its key id is {old_id}; they were sealed with key id {new_id}): give every replica \
             the file they were sealed with (after `tokenmint keys reseal`, the new one)"
        )),
        "{err:#}"
    );

    // The replica still running with the old key keeps signing with the keys it loaded,
    // and knows it cannot read what comes next.
    verify_with(&access_token(&old_replica, &fake).await, &jwks);
    let old_view = database_ring(&cluster.url, &cluster.kek).await;
    let signer = old_replica.service.state.published.signer();
    assert_eq!(
        signer.reload_from_database(&old_view).await.expect("check"),
        KeyReload::Resealed {
            key_id: new_id.clone()
        }
    );
    let (code, _, stderr) = run(args(
        &["keys", "rotate", "--force"],
        &[("--config", &new_replica.config_file)],
    ))
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let err = signer
        .reload_from_database(&old_view)
        .await
        .expect_err("a rotation sealed with the new key");
    assert!(
        matches!(err, KeyError::WrongKeyEncryptionKey { .. }),
        "{err}"
    );
    verify_with(&access_token(&old_replica, &fake).await, &jwks);
    let rotated = ring_kids(&cluster.url, &new_kek).await;
    assert_eq!(rotated.len(), 3);
    until_published(&[&new_replica], &rotated).await;
}

/// A configuration for the commands below: one local target with generated keys, and
/// `storage` as given.
fn write_config(dir: &Path, storage: &str) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policies dir");
    let path = dir.join("tokenmint.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\npublic_url = \"{PUBLIC_URL}\"\nadmin_listen = \"\"\n\n[storage]\ndata_dir = \"{}\"\n{storage}\n[policies]\ndir = \"{}\"\n{}",
            dir.join("data").display(),
            policies.display(),
            crate::exchange::LOCAL_TARGET
        ),
    )
    .expect("config");
    path
}

fn load(path: &Path) -> Result<Config, String> {
    Config::load(&ConfigSource {
        file: Some(path.to_owned()),
        listen: None,
    })
    .map_err(|err| err.to_string())
}

/// Needs no PostgreSQL: each refusal comes before any connection.
#[tokio::test]
async fn the_key_encryption_key_is_required_with_a_database_refused_without_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek");
    write_key_encryption_key(&kek);
    // Nothing listens on port 9: a command that connected would fail differently.
    let database = "database_url = \"postgres://tokenmint@127.0.0.1:9/tokenmint\"\n";

    let config = write_config(
        dir.path(),
        &format!("key_encryption_key_file = \"{}\"\n", kek.display()),
    );
    assert_eq!(
        load(&config).expect_err("without database_url"),
        format!(
            "{}: `storage.key_encryption_key_file`: is only used with storage.database_url: with \
             the embedded store, keys are files in data_dir; remove it",
            config.display()
        )
    );

    let config = write_config(dir.path(), database);
    assert_eq!(
        load(&config).expect_err("generated keys without a key-encryption key"),
        format!(
            "{}: `storage.key_encryption_key_file`: is required with storage.database_url, \
             because targets.internal-api (kind = \"local\") uses generated signing keys, which \
             replicas share in the database sealed with this key: make one with `(umask 077 && \
             head -c 32 /dev/urandom > /etc/tokenmint/kek)` and give every replica the same \
             file, or give the target a signing_key_file",
            config.display()
        )
    );
    // Without generated keys there is nothing to seal.
    let fixed = write_config(dir.path(), database);
    let text = std::fs::read_to_string(&fixed).expect("read");
    std::fs::write(
        &fixed,
        text.replace(
            "max_ttl = \"15m\"",
            "max_ttl = \"15m\"\nsigning_key_file = \"/run/secrets/fixed.pem\"",
        ),
    )
    .expect("write");
    assert!(load(&fixed).is_ok());

    let short = dir.path().join("short-kek");
    std::fs::write(&short, [7u8; 16]).expect("write");
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = write_config(
        dir.path(),
        &format!(
            "{database}key_encryption_key_file = \"{}\"\n",
            short.display()
        ),
    );
    let (code, _, stderr) = run(args(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("--config", &config)],
    ))
    .await;
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr.lines().last(),
        Some(
            format!(
                "tokenmint: storage.key_encryption_key_file {p}: holds 16 bytes; a key-encryption \
                 key is at least 32 random bytes: make one with `(umask 077 && head -c 32 \
                 /dev/urandom > {p})`",
                p = short.display()
            )
            .as_str()
        ),
        "{stderr}"
    );

    let shared = dir.path().join("shared-kek");
    std::fs::copy(&kek, &shared).expect("copy");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let config = write_config(
        dir.path(),
        &format!(
            "{database}key_encryption_key_file = \"{}\"\n",
            shared.display()
        ),
    );
    for command in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["keys", "rotate"],
    ] {
        let (code, _, stderr) = run(args(command, &[("--config", &config)])).await;
        assert_eq!(code, Some(1));
        assert_eq!(
            stderr.lines().last(),
            Some(
                format!(
                    "tokenmint: storage.key_encryption_key_file {p}: is accessible by group or \
                     others (mode 0640); the key-encryption key must be private to tokenmint's \
                     user: run `chmod 600 {p}`",
                    p = shared.display()
                )
                .as_str()
            ),
            "{command:?}: {stderr}"
        );
    }

    let config = write_config(dir.path(), "");
    let (code, _, stderr) = run(args(
        &["keys", "reseal"],
        &[("--new-key-file", &kek), ("--config", &config)],
    ))
    .await;
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        "tokenmint: keys reseal re-encrypts the signing keys kept in PostgreSQL \
         (storage.database_url); with the embedded store, keys are files in data_dir (mode 0600) \
         and nothing is sealed\n"
    );
}

/// The lines of `doctor`'s signing-keys section, heading included.
pub fn signing_keys_section(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|line| !line.starts_with("signing keys"))
        .take_while(|line| line.starts_with("signing keys") || line.starts_with("  "))
        .map(str::to_owned)
        .collect()
}

/// `doctor` opens the ring in the database with the configured key-encryption key, as a
/// replica would at start: it names the generation and the keys, and a key-encryption
/// key the keys were not sealed with is a failure that says which key they need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_opens_the_signing_keys_in_the_database_with_the_key_encryption_key() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let fake = FakeIssuer::start(Shape::Github).await;
    let replica = cluster.replica(&fake).await;
    let jwks = kids(&jwks_text(&replica).await);
    let doctor = args(
        &["doctor", "--no-mint"],
        &[("--config", &replica.config_file)],
    );
    let (code, stdout, stderr) = run(doctor.clone()).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let section = signing_keys_section(&stdout);
    assert_eq!(
        section,
        [
            format!(
                "signing keys (in {}, sealed with key-encryption key {})",
                cluster.described(),
                key_id(&cluster.kek)
            ),
            "  ok    generation 1".to_owned(),
            format!(
                "  ok    ES256: current key {}, next key {}",
                jwks[0], jwks[1]
            ),
        ],
        "{stdout}"
    );

    let new_kek = cluster.new_kek("new-kek");
    let reseal = args(
        &["keys", "reseal"],
        &[
            ("--new-key-file", &new_kek),
            ("--config", &replica.config_file),
        ],
    );
    let (code, _, stderr) = run(reseal).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, _) = run(doctor).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(
        signing_keys_section(&stdout)[1],
        format!(
            "  FAIL  storage.key_encryption_key_file is not the key these signing keys were \
             sealed with (its key id is {}; they were sealed with key id {}): give every \
             replica the file they were sealed with (after `tokenmint keys reseal`, the new one)",
            key_id(&cluster.kek),
            key_id(&new_kek)
        )
    );
}

/// systemd hands a `LoadCredential=` file to the service in its credentials directory,
/// on some versions as mode 0440 (read access by ACL). There the key-encryption key is
/// accepted, as it is private to the service; the same file elsewhere is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_encryption_key_among_the_services_systemd_credentials_is_accepted() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let fake = FakeIssuer::start(Shape::Github).await;
    let replica = cluster.replica(&fake).await;
    let credentials = cluster.dir.path().join("credentials");
    std::fs::create_dir(&credentials).expect("credentials dir");
    let kek = credentials.join("kek");
    std::fs::copy(&cluster.kek, &kek).expect("copy kek");
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o440)).expect("chmod");
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    let config = cluster.dir.path().join("credentials.toml");
    let text = std::fs::read_to_string(&replica.config_file).expect("config");
    let kek_line = format!("key_encryption_key_file = \"{}\"", cluster.kek.display());
    assert!(text.contains(&kek_line), "{text}");
    std::fs::write(
        &config,
        text.replace(
            &kek_line,
            &format!("key_encryption_key_file = \"{}\"", kek.display()),
        ),
    )
    .expect("config");
    let doctor = |credentials_directory: Option<&Path>| {
        let mut command = tokenmint();
        command
            .args(["doctor", "--no-mint", "--config"])
            .arg(&config)
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = credentials_directory {
            command.env("CREDENTIALS_DIRECTORY", dir);
        }
        let output = command.output().expect("run doctor");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, stdout) = doctor(None);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(
        signing_keys_section(&stdout),
        [
            "signing keys".to_owned(),
            format!(
                "  FAIL  storage.key_encryption_key_file {}: is accessible by group or others \
                 (mode 0440); the key-encryption key must be private to tokenmint's user: run \
                 `chmod 600 {}`",
                kek.display(),
                kek.display()
            ),
        ]
    );
    let (code, stdout) = doctor(Some(&credentials));
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(signing_keys_section(&stdout)[1], "  ok    generation 1");
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o700))
        .expect("chmod back");
}
