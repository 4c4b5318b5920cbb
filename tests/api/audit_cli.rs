//! `tokenmint audit list|show|verify` end to end: the real binary reading the store that
//! apps (in this process, or `tokenmint serve` processes) wrote, on SQLite and on
//! PostgreSQL. Every field the contract lists, the filters and the three formats, lookups,
//! the chain walk catching each kind of tampering, read-only copies, a running service, and
//! a service killed with SIGKILL under load.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use sqlx::{AnyConnection, Connection as _, Row as _};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokenmint::adapters::store::chain::link_hash;

use crate::durable::Shared;
use crate::exchange::{DEPLOY_POLICY, LOCAL_TARGET, deploy_builder, jwt_parts};
use crate::fake_auth0::FakeTenant;
use crate::helpers::*;
use crate::operations::ServiceProcess;
use crate::remote::{pkjwt, tenant_builder};
use crate::stores::{TestStore, postgres_url};

/// The fields every object of `audit list --format json` carries, as the contract lists them.
const CONTRACT_FIELDS: &[&str] = &[
    "request_id",
    "time",
    "outcome",
    "reason",
    "policy",
    "policy_sha256",
    "policy_set_version",
    "target",
    "audience",
    "requested_scope",
    "scope",
    "issuer",
    "subject",
    "repository",
    "repository_id",
    "ref",
    "environment",
    "event_name",
    "run_id",
    "run_attempt",
    "sha",
    "actor",
    "workflow_ref",
    "job_workflow_ref",
    "project_id",
    "pipeline_id",
    "job_id",
    "token_sha256",
    "token_jti",
    "expires_at",
    "client_ip",
    "user_agent",
];

/// The CSV header: `CSV_FIELDS` of `src/edges/audit_commands.rs`, in its order.
const CSV_FIELDS: &[&str] = &[
    "request_id",
    "time",
    "outcome",
    "reason",
    "policy",
    "policy_sha256",
    "policy_set_version",
    "target",
    "audience",
    "requested_scope",
    "scope",
    "issuer",
    "subject",
    "repository",
    "repository_id",
    "ref",
    "environment",
    "event_name",
    "run_id",
    "run_attempt",
    "sha",
    "actor",
    "workflow_ref",
    "job_workflow_ref",
    "project_id",
    "pipeline_id",
    "job_id",
    "token_sha256",
    "token_jti",
    "expires_at",
    "reused",
    "client_ip",
    "user_agent",
    "would_allow",
    "detail",
];

const USER_AGENT: &str = "deploy-bot/2.0 (+https://ci.example)";
const REPOSITORY: &str = "acme/identity-config";
const WORKFLOW_REF: &str = "acme/identity-config/.github/workflows/deploy.yml@refs/heads/main";
const SHA: &str = "363a0c94e511346808fe5f3d96a84939e49450a3";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------
// Running the binary

/// A configuration the audit commands (and `serve`) can read: `[storage]` names the store;
/// no issuer, target or policy.
struct CliConfig {
    path: PathBuf,
    dir: tempfile::TempDir,
}

impl CliConfig {
    fn new(storage: &str) -> CliConfig {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("policies dir");
        let path = dir.path().join("tokenmint.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\npublic_url = \"{PUBLIC_URL}\"\nadmin_listen = \"\"\n\n[storage]\n{storage}\n\n[policies]\ndir = \"{}\"\n",
                dir.path().join("policies").display()
            ),
        )
        .expect("write config");
        CliConfig { path, dir }
    }

    fn sqlite(data_dir: &Path) -> CliConfig {
        Self::new(&format!("data_dir = \"{}\"", data_dir.display()))
    }

    fn postgres(url: &str) -> CliConfig {
        Self::new(&format!("database_url = \"{url}\""))
    }
}

/// What a command did.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Stdout of a command that succeeded.
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:#?}");
        &self.stdout
    }

    fn first_line(&self) -> &str {
        self.stdout.lines().next().unwrap_or_default()
    }
}

/// Runs `command` on a blocking thread, so that the fake issuer and the apps of the test
/// keep serving meanwhile.
async fn run(mut command: Command) -> Ran {
    tokio::task::spawn_blocking(move || {
        let output = command.output().expect("run tokenmint");
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

fn audit_command(config: &Path, args: &[&str], tz: &str) -> Command {
    let mut command = tokenmint();
    command
        .arg("audit")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("TZ", tz);
    command
}

/// `tokenmint audit ARGS --config CONFIG`, in UTC.
async fn audit(config: &Path, args: &[&str]) -> Ran {
    run(audit_command(config, args, "UTC")).await
}

fn parse_array(text: &str) -> Vec<Value> {
    match serde_json::from_str(text) {
        Ok(Value::Array(items)) => items,
        other => panic!("not a JSON array ({other:?}): {text}"),
    }
}

/// `audit list --format json ARGS`: the objects printed.
async fn list_json(config: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["list", "--format", "json"];
    all.extend_from_slice(args);
    parse_array(audit(config, &all).await.ok())
}

fn request_ids(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["request_id"].as_str().expect("request_id"))
        .collect()
}

fn request_id(answer: &Answer) -> String {
    answer.body["request_id"]
        .as_str()
        .expect("request_id")
        .to_owned()
}

fn access_token(answer: &Answer) -> &str {
    answer.body["access_token"]
        .as_str()
        .expect("an access token")
}

/// Whether file permissions bind this process (they do not bind root).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `tokenmint` run as user `nobody`, when this test runs as root and `setpriv` is there:
/// then a read-only file is read-only to the command too.
fn tokenmint_as_nobody() -> Option<Command> {
    if !running_as_root() || !Path::new("/usr/bin/setpriv").exists() {
        return None;
    }
    let mut command = Command::new("/usr/bin/setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_tokenmint"))
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("TOKENMINT_") {
            command.env_remove(name);
        }
    }
    Some(command)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Puts the modes back on drop, so that the temporary directory can be removed by anyone.
struct Writable(Vec<PathBuf>);

impl Drop for Writable {
    fn drop(&mut self) {
        for path in &self.0 {
            set_mode(path, 0o755);
        }
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// Making records

/// `POST /token` for `audience` (and `scope`), from [`USER_AGENT`].
async fn exchange_as(app: &TestApp, token: &str, audience: &str, scope: Option<&str>) -> Answer {
    let mut fields = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", token),
        ("subject_token_type", ID_TOKEN),
        ("audience", audience),
    ];
    if let Some(scope) = scope {
        fields.push(("scope", scope));
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&fields)
        .finish();
    app.request(
        Request::post("/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", USER_AGENT)
            .body(Body::from(body))
            .expect("request"),
    )
    .await
}

/// A SQLite store with records made through an app: an allowed exchange (scope `deploy`),
/// a denied one (scope `admin`, which the policy does not grant), then `more` allowed
/// ones: records 1, 2, 3, ... of the file's one chain.
struct Trail {
    shared: Shared,
    app: Option<TestApp>,
    fake: FakeIssuer,
    config: CliConfig,
    allowed: Answer,
    allowed_claims: Map<String, Value>,
    denied: Answer,
    more: Vec<Answer>,
    started: OffsetDateTime,
}

impl Trail {
    async fn new(more: usize) -> Trail {
        let started = OffsetDateTime::now_utc();
        let shared = Shared::sqlite();
        let fake = FakeIssuer::start(Shape::Github).await;
        let app = shared.app(deploy_builder(&fake, "")).await;
        let allowed_claims = fake.claims("github-push-main");
        let allowed = exchange_as(
            &app,
            &fake.sign(&allowed_claims),
            "internal-api",
            Some("deploy"),
        )
        .await;
        assert_eq!(allowed.status, 200, "{}", allowed.text);
        let denied = exchange_as(
            &app,
            &fake.token("github-push-main"),
            "internal-api",
            Some("admin"),
        )
        .await;
        assert_eq!(denied.status, 400, "{}", denied.text);
        assert!(denied.body.get("access_token").is_none());
        let mut answers = Vec::new();
        for _ in 0..more {
            let answer = app
                .exchange(&fake.token("github-push-main"), "internal-api", &[])
                .await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            answers.push(answer);
        }
        let config = CliConfig::sqlite(shared.dir.path());
        Trail {
            shared,
            app: Some(app),
            fake,
            config,
            allowed,
            allowed_claims,
            denied,
            more: answers,
            started,
        }
    }

    fn app(&self) -> &TestApp {
        self.app.as_ref().expect("the app is running")
    }

    fn dir(&self) -> &Path {
        self.shared.dir.path()
    }

    /// Every request id, in the order they were made.
    fn request_ids(&self) -> Vec<String> {
        [&self.allowed, &self.denied]
            .into_iter()
            .chain(&self.more)
            .map(request_id)
            .collect()
    }

    /// Stops the app and checkpoints the WAL into the database file, so that the file alone
    /// is the whole store; returns the chain's replica and its records' hashes (seq 1 first).
    async fn settle(&mut self) -> Settled {
        drop(self.app.take());
        let mut conn = connect_sqlite(self.dir()).await;
        sqlx::query("PRAGMA busy_timeout = 5000")
            .execute(&mut conn)
            .await
            .expect("busy timeout");
        // The service's own passive checkpoint (every second, on a reader's thread) can
        // still be running after the drop. SQLite answers a checkpoint that meets another
        // one with "busy" at once, without waiting out the busy timeout, so try again until
        // a deadline before calling it blocked.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let busy = loop {
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut conn)
                .await
                .expect("checkpoint");
            let busy: i64 = row.try_get(0).expect("busy");
            if busy == 0 || std::time::Instant::now() >= deadline {
                break busy;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(
            busy, 0,
            "the checkpoint was still blocked after 5 s of tries"
        );
        let replica: String = sqlx::query_scalar("SELECT replica_id FROM local_replica")
            .fetch_one(&mut conn)
            .await
            .expect("replica");
        let hashes: Vec<String> = sqlx::query_scalar("SELECT hash FROM audit_records ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .expect("hashes");
        let records: Vec<String> =
            sqlx::query_scalar("SELECT record FROM audit_records ORDER BY seq")
                .fetch_all(&mut conn)
                .await
                .expect("records");
        conn.close().await.expect("close");
        Settled {
            file: self.dir().join("tokenmint.db"),
            replica,
            hashes,
            records,
        }
    }
}

/// A trail whose app is gone and whose file holds everything.
struct Settled {
    file: PathBuf,
    replica: String,
    hashes: Vec<String>,
    records: Vec<String>,
}

impl Settled {
    /// A copy of the store, with a configuration naming it and a connection to tamper
    /// with it (close it before running a command).
    async fn copy(&self) -> StoreCopy {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(&self.file, dir.path().join("tokenmint.db")).expect("copy");
        let conn = connect_sqlite(dir.path()).await;
        let config = CliConfig::sqlite(dir.path());
        StoreCopy {
            conn: Some(conn),
            config,
            _dir: dir,
        }
    }

    /// `audit verify` on a copy tampered with by `statements`.
    async fn verify_after(&self, statements: &[String]) -> Ran {
        let mut copy = self.copy().await;
        for statement in statements {
            let changed = copy.exec(statement).await;
            assert!(changed > 0, "{statement} changed nothing");
        }
        copy.verify(&[]).await
    }

    /// The line `audit verify` prints for a break at record `seq`, up to the explanation.
    fn broken_at(&self, seq: u64) -> String {
        format!(
            "audit trail broken: replica {} record {seq}: ",
            self.replica
        )
    }
}

/// A copy of a settled store, open for tampering.
struct StoreCopy {
    conn: Option<AnyConnection>,
    config: CliConfig,
    _dir: tempfile::TempDir,
}

impl StoreCopy {
    async fn exec(&mut self, sql: &str) -> u64 {
        sqlx::query(sql)
            .execute(self.conn.as_mut().expect("open"))
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
            .rows_affected()
    }

    async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close().await.expect("close");
        }
    }

    async fn verify(&mut self, extra: &[&str]) -> Ran {
        self.close().await;
        let mut args = vec!["verify"];
        args.extend_from_slice(extra);
        audit(&self.config.path, &args).await
    }
}

async fn connect_sqlite(dir: &Path) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rw", dir.join("tokenmint.db").display());
    AnyConnection::connect(&url).await.expect("connect")
}

/// `text` as an SQL string literal.
fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[track_caller]
fn assert_broken(ran: &Ran, prefix: &str, explanation: &str) {
    assert_eq!(ran.code, Some(1), "{ran:#?}");
    let line = ran.first_line();
    assert!(
        line.starts_with(prefix),
        "expected {prefix:?}...\n   got {line:?}"
    );
    assert!(
        line[prefix.len()..].contains(explanation),
        "expected {explanation:?} in {line:?}"
    );
}

// ---------------------------------------------------------------------------------------
// audit list

#[tokio::test]
async fn audit_list_json_carries_every_contract_field_with_the_records_values() {
    let trail = Trail::new(0).await;
    let records = list_json(&trail.config.path, &[]).await;
    let finished = OffsetDateTime::now_utc();
    assert_eq!(
        request_ids(&records),
        trail.request_ids(),
        "one object per request"
    );
    for record in &records {
        let object = record.as_object().expect("an object");
        for field in CONTRACT_FIELDS {
            assert!(object.contains_key(*field), "no {field:?} in {record:#}");
        }
    }
    // What the CLI prints is what the store holds, field for field.
    assert_eq!(
        Value::Array(records.clone()),
        serde_json::to_value(trail.app().audit().await).expect("JSON")
    );

    let token = access_token(&trail.allowed);
    let (_, payload) = jwt_parts(token);
    let policy_sha256 = sha256_hex(DEPLOY_POLICY.as_bytes());
    let policy_set_version = sha256_hex(format!("deploy-api\0{policy_sha256}\n").as_bytes());
    let expires_at = OffsetDateTime::from_unix_timestamp(payload["exp"].as_i64().expect("exp"))
        .expect("exp")
        .format(&Rfc3339)
        .expect("format");
    let allowed = &records[0];
    let expected = json!({
        "request_id": request_id(&trail.allowed),
        "outcome": "allow",
        "reason": "allowed",
        "policy": "deploy-api",
        "policy_sha256": policy_sha256,
        "policy_set_version": policy_set_version,
        "target": "internal-api",
        "audience": "internal-api",
        "requested_scope": "deploy",
        "scope": "deploy",
        "issuer": "github",
        "subject": "repo:acme/identity-config:ref:refs/heads/main",
        "repository": REPOSITORY,
        "repository_id": "89012345",
        "ref": "refs/heads/main",
        "environment": null,
        "event_name": "push",
        "run_id": "29223225591",
        "run_attempt": "1",
        "sha": SHA,
        "actor": "alice-acme",
        "workflow_ref": WORKFLOW_REF,
        "job_workflow_ref": WORKFLOW_REF,
        "project_id": null,
        "pipeline_id": null,
        "job_id": null,
        "token_sha256": sha256_hex(token.as_bytes()),
        "token_jti": payload["jti"],
        "expires_at": expires_at,
        // The router is called in this process: there is no socket, so no client address
        // (`the_audit_commands_work_while_serve_runs` sees one).
        "client_ip": null,
        "user_agent": USER_AGENT,
    });
    for (field, value) in expected.as_object().expect("object") {
        assert_eq!(&allowed[field], value, "{field} of {allowed:#}");
    }
    assert_ne!(
        payload["jti"], trail.allowed_claims["jti"],
        "our jti, not the CI token's"
    );
    // `time`: RFC 3339, UTC, when the request was made.
    let time_text = allowed["time"].as_str().expect("time");
    assert!(time_text.ends_with('Z'), "{time_text}");
    let time = OffsetDateTime::parse(time_text, &Rfc3339).expect("RFC 3339");
    assert!(trail.started <= time && time <= finished, "{time_text}");

    let denied = &records[1];
    let expected = json!({
        "request_id": request_id(&trail.denied),
        "outcome": "deny",
        "reason": "scope_exceeded",
        // No policy decided it: the scope exceeds every matching one.
        "policy": null,
        "policy_sha256": null,
        "target": "internal-api",
        "audience": "internal-api",
        "requested_scope": "admin",
        "scope": null,
        "issuer": "github",
        "repository": REPOSITORY,
        "run_id": "29223225591",
        "token_sha256": null,
        "token_jti": null,
        "expires_at": null,
        "user_agent": USER_AGENT,
    });
    for (field, value) in expected.as_object().expect("object") {
        assert_eq!(&denied[field], value, "{field} of {denied:#}");
    }
}

#[tokio::test]
async fn audit_list_filters_by_outcome_repository_policy_target_and_time() {
    let trail = Trail::new(0).await;
    let config = &trail.config.path;
    let (allowed, denied) = (request_id(&trail.allowed), request_id(&trail.denied));
    let both = vec![allowed.as_str(), denied.as_str()];
    let listed = list_json(config, &[]).await;

    assert_eq!(
        request_ids(&list_json(config, &["--outcome", "deny"]).await),
        [denied.as_str()]
    );
    assert_eq!(
        request_ids(&list_json(config, &["--outcome", "allow"]).await),
        [allowed.as_str()]
    );
    assert!(list_json(config, &["--outcome", "error"]).await.is_empty());
    assert_eq!(
        request_ids(&list_json(config, &["--repository", REPOSITORY]).await),
        both
    );
    assert!(
        list_json(config, &["--repository", "acme/other"])
            .await
            .is_empty()
    );
    let by_policy = list_json(config, &["--policy", "deploy-api"]).await;
    // The denied request was decided by no policy.
    assert_eq!(request_ids(&by_policy), [allowed.as_str()]);
    assert!(list_json(config, &["--policy", "other"]).await.is_empty());
    assert_eq!(
        request_ids(&list_json(config, &["--target", "internal-api"]).await),
        both
    );
    assert!(
        list_json(config, &["--target", "other-api"])
            .await
            .is_empty()
    );
    // Filters combine.
    assert_eq!(
        request_ids(
            &list_json(
                config,
                &[
                    "--repository",
                    REPOSITORY,
                    "--outcome",
                    "deny",
                    "--since",
                    "1h"
                ]
            )
            .await
        ),
        [denied.as_str()]
    );

    // Time: a duration back from now, or an RFC 3339 time.
    assert_eq!(
        request_ids(&list_json(config, &["--since", "1h"]).await),
        both
    );
    assert!(list_json(config, &["--until", "1h"]).await.is_empty());
    let before = (trail.started - time::Duration::minutes(5))
        .format(&Rfc3339)
        .expect("format");
    let after = (OffsetDateTime::now_utc() + time::Duration::minutes(5))
        .format(&Rfc3339)
        .expect("format");
    assert!(list_json(config, &["--until", &before]).await.is_empty());
    assert!(list_json(config, &["--since", &after]).await.is_empty());
    assert_eq!(
        request_ids(&list_json(config, &["--since", &before, "--until", &after]).await),
        both
    );
    // Between the two records: only the allowed one is before it.
    let first_time = listed[0]["time"].as_str().expect("time");
    assert_eq!(
        request_ids(&list_json(config, &["--until", first_time]).await),
        [allowed.as_str()]
    );

    let bad = audit(config, &["list", "--since", "yesterday"]).await;
    assert_eq!(bad.code, Some(1), "{bad:#?}");
    assert!(bad.stderr.starts_with("tokenmint: --since: "), "{bad:#?}");
}

#[tokio::test]
async fn audit_list_shows_a_remote_request_once_and_both_its_records_with_records() {
    let shared = Shared::sqlite();
    let fake = FakeIssuer::start(Shape::Github).await;
    let tenant = FakeTenant::start(pkjwt()).await;
    let app = shared.app(tenant_builder(&fake, &tenant, "")).await;
    let answer = app
        .exchange(&fake.token("github-push-main"), "tenant-prod", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let id = request_id(&answer);
    let sha = sha256_hex(access_token(&answer).as_bytes());
    let config = CliConfig::sqlite(shared.dir.path());
    let config = &config.path;

    let latest = list_json(config, &[]).await;
    assert_eq!(request_ids(&latest), [id.as_str()]);
    assert_eq!(latest[0]["outcome"], "allow");
    assert_eq!(latest[0]["token_sha256"], sha.as_str());

    let every = list_json(config, &["--records"]).await;
    assert_eq!(request_ids(&every), [id.as_str(), id.as_str()]);
    let outcomes: Vec<&Value> = every.iter().map(|r| &r["outcome"]).collect();
    assert_eq!(outcomes, ["pending", "allow"]);
    assert_eq!(every[0]["reason"], "pending");
    assert_eq!(every[0]["token_sha256"], Value::Null);
    assert_eq!(every[1], latest[0]);

    // `--outcome` is the request's latest state; with `--records`, each record's.
    assert!(
        list_json(config, &["--outcome", "pending"])
            .await
            .is_empty()
    );
    assert_eq!(
        list_json(config, &["--records", "--outcome", "pending"])
            .await
            .len(),
        1
    );
    // The table: one row per request, or per record.
    let rows = |ran: Ran| ran.ok().lines().count() - 1;
    assert_eq!(rows(audit(config, &["list"]).await), 1);
    assert_eq!(rows(audit(config, &["list", "--records"]).await), 2);

    // A token's SHA-256 leads to every record of its request.
    let shown = parse_array(
        audit(config, &["show", &sha, "--format", "json"])
            .await
            .ok(),
    );
    assert_eq!(shown, every);
}

/// The cells of a table line: columns are at least two spaces apart, and no cell holds two
/// spaces in a row.
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .collect()
}

fn table_time(time: &str, offset: time::UtcOffset) -> String {
    let t = OffsetDateTime::parse(time, &Rfc3339)
        .expect("RFC 3339")
        .to_offset(offset);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[tokio::test]
async fn audit_list_table_puts_the_job_first_in_local_time() {
    let trail = Trail::new(0).await;
    let config = &trail.config.path;
    let records = list_json(config, &[]).await;
    let ids = trail.request_ids();

    for (tz, label, offset) in [
        ("UTC", "UTC", time::UtcOffset::UTC),
        (
            "EST5",
            "UTC-05:00",
            time::UtcOffset::from_hms(-5, 0, 0).expect("offset"),
        ),
    ] {
        let table = run(audit_command(config, &["list"], tz)).await;
        let lines: Vec<&str> = table.ok().lines().collect();
        assert_eq!(
            lines.len(),
            3,
            "a header and one row per request:\n{table:#?}"
        );
        let header = lines[0];
        assert!(header.starts_with("TIME ("), "{header}");
        // The columns are as wide as their widest cell, two spaces apart.
        let after_repository = &header[header.find("REPOSITORY").expect("REPOSITORY") + 10..];
        assert!(
            after_repository.starts_with("  ")
                && after_repository.trim_start().starts_with("WORKFLOW"),
            "{header}"
        );
        assert_eq!(
            cells(header),
            [
                format!("TIME ({label})").as_str(),
                "REPOSITORY",
                "WORKFLOW",
                "RUN",
                "COMMIT",
                "OUTCOME",
                "REASON",
                "POLICY",
                "TARGET",
                "SCOPE",
                "REQUEST"
            ]
        );
        let time =
            |index: usize| table_time(records[index]["time"].as_str().expect("time"), offset);
        let workflow = ".github/workflows/deploy.yml@refs/heads/main";
        assert_eq!(
            cells(lines[1]),
            [
                time(0).as_str(),
                REPOSITORY,
                workflow,
                "29223225591/1",
                &SHA[..7],
                "allow",
                "allowed",
                "deploy-api",
                "internal-api",
                "deploy",
                ids[0].as_str(),
            ]
        );
        assert_eq!(
            cells(lines[2]),
            [
                time(1).as_str(),
                REPOSITORY,
                workflow,
                "29223225591/1",
                &SHA[..7],
                "deny",
                "scope_exceeded",
                "-",
                "internal-api",
                "-",
                ids[1].as_str(),
            ]
        );
        // Aligned: every column starts where its header does.
        for (line, id) in lines[1..].iter().zip(&ids) {
            assert_eq!(line.find(id.as_str()), header.find("REQUEST"), "{line}");
            assert_eq!(line.find(REPOSITORY), header.find("REPOSITORY"), "{line}");
            assert_eq!(line.find(workflow), header.find("WORKFLOW"), "{line}");
        }
    }

    let empty = audit(config, &["list", "--repository", "acme/other"]).await;
    let lines: Vec<&str> = empty.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{empty:#?}");
    assert!(lines[0].starts_with("TIME (UTC)"), "{empty:#?}");
    assert_eq!(lines[1], "(no records)");
}

/// A CSV cell as RFC 4180 writes it, with a leading formula character defused by `'`.
fn csv_cell(value: &Value) -> String {
    let text = match value {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_owned)
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[tokio::test]
async fn audit_list_csv_has_the_contract_header_and_crlf_lines() {
    let trail = Trail::new(0).await;
    let config = &trail.config.path;
    let records = list_json(config, &[]).await;
    let csv = audit(config, &["list", "--format", "csv"]).await;
    let text = csv.ok();
    assert!(text.ends_with("\r\n"), "{text:?}");
    assert_eq!(
        text.matches('\n').count(),
        text.matches("\r\n").count(),
        "every line ends with CRLF: {text:?}"
    );
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert_eq!(lines[0], CSV_FIELDS.join(","));
    for (line, record) in lines[1..].iter().zip(&records) {
        let expected: Vec<String> = CSV_FIELDS
            .iter()
            .map(|field| csv_cell(&record[*field]))
            .collect();
        assert_eq!(*line, expected.join(","));
    }
    let token = access_token(&trail.allowed);
    assert!(
        lines[1].starts_with(&format!(
            "{},{},allow,allowed,deploy-api,",
            request_id(&trail.allowed),
            records[0]["time"].as_str().expect("time")
        )),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains(&format!(",{},", sha256_hex(token.as_bytes()))),
        "{}",
        lines[1]
    );
}

// ---------------------------------------------------------------------------------------
// audit show

#[tokio::test]
async fn audit_show_finds_records_by_request_id_token_sha256_and_jti() {
    let trail = Trail::new(0).await;
    let config = &trail.config.path;
    let records = list_json(config, &[]).await;
    let allowed = &records[0];
    let id = request_id(&trail.allowed);
    let sha = allowed["token_sha256"].as_str().expect("sha");
    let jti = allowed["token_jti"].as_str().expect("jti");
    assert_eq!(sha, sha256_hex(access_token(&trail.allowed).as_bytes()));
    // A SHA-256 copied in upper case (as some tools print digests) finds it too.
    let upper = sha.to_ascii_uppercase();
    for key in [id.as_str(), sha, upper.as_str(), jti] {
        let shown = parse_array(audit(config, &["show", key, "--format", "json"]).await.ok());
        assert_eq!(shown, std::slice::from_ref(allowed), "by {key}");
    }
    let denied = parse_array(
        audit(
            config,
            &["show", &request_id(&trail.denied), "--format", "json"],
        )
        .await
        .ok(),
    );
    assert_eq!(denied, records[1..2]);

    let replica: String = {
        let mut conn = connect_sqlite(trail.dir()).await;
        let replica = sqlx::query_scalar("SELECT replica_id FROM local_replica")
            .fetch_one(&mut conn)
            .await
            .expect("replica");
        conn.close().await.expect("close");
        replica
    };
    for key in [id.as_str(), sha, jti] {
        let ran = audit(config, &["show", key]).await;
        let text = ran.ok();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "record 1 of replica {replica} at {} (UTC)",
                table_time(
                    allowed["time"].as_str().expect("time"),
                    time::UtcOffset::UTC
                )
            ),
            "{text}"
        );
        for (field, value) in [
            ("request_id", id.as_str()),
            ("outcome", "allow"),
            ("repository", REPOSITORY),
            ("token_sha256", sha),
            ("token_jti", jti),
            ("user_agent", USER_AGENT),
        ] {
            let line = format!("  {field:<19} {value}");
            assert!(lines.contains(&line.as_str()), "no {line:?} in\n{text}");
        }
        assert!(lines.contains(&"  policy \"deploy-api\": allows"), "{text}");
        assert!(
            !lines.iter().any(|l| l.starts_with("  client_ip ")),
            "empty fields are left out:\n{text}"
        );
    }
}

#[tokio::test]
async fn audit_show_of_an_unknown_id_exits_1_with_one_line() {
    let trail = Trail::new(0).await;
    for format in ["table", "json"] {
        let ran = audit(&trail.config.path, &["show", "nope", "--format", format]).await;
        assert_eq!(ran.code, Some(1), "{ran:#?}");
        assert_eq!(ran.stdout, "");
        assert_eq!(
            ran.stderr,
            "tokenmint: no audit record has request id, token SHA-256 or jti \"nope\"\n"
        );
    }
}

// ---------------------------------------------------------------------------------------
// audit verify on SQLite: an intact trail, and one tampered copy per kind of tampering

#[tokio::test]
async fn audit_verify_passes_an_intact_trail() {
    let mut trail = Trail::new(2).await;
    let live = audit(&trail.config.path, &["verify"]).await;
    assert_eq!(
        live.first_line(),
        "audit trail intact: 4 records in 1 chain",
        "{live:#?}"
    );
    let settled = trail.settle().await;
    let ran = audit(&trail.config.path, &["verify"]).await;
    assert_eq!(
        ran.ok(),
        format!(
            "audit trail intact: 4 records in 1 chain\n  replica {}: 4 records checked, up to record 4\n",
            settled.replica
        )
    );
    // A copy of the checkpointed file alone is the whole trail.
    let mut copy = settled.copy().await;
    let ran = copy.verify(&[]).await;
    assert_eq!(
        ran.first_line(),
        "audit trail intact: 4 records in 1 chain",
        "{ran:#?}"
    );
}

#[tokio::test]
async fn audit_verify_names_a_record_whose_json_was_altered() {
    let mut trail = Trail::new(2).await;
    let settled = trail.settle().await;
    // The repository inside the hashed JSON, the query column left as it was.
    let ran = settled
        .verify_after(&[format!(
            "UPDATE audit_records SET record = replace(record, '\"repository\":\"{REPOSITORY}\"', \
             '\"repository\":\"acme/forged\"') WHERE seq = 3"
        )])
        .await;
    assert_broken(&ran, &settled.broken_at(3), "was altered");
    // A field no query column copies: the actor.
    let ran = settled
        .verify_after(&[
            "UPDATE audit_records SET record = replace(record, '\"actor\":\"alice-acme\"', \
             '\"actor\":\"mallory\"') WHERE seq = 2"
                .to_owned(),
        ])
        .await;
    assert_broken(&ran, &settled.broken_at(2), "was altered");
    // Nothing but JSON left.
    let ran = settled
        .verify_after(&["UPDATE audit_records SET record = '{}' WHERE seq = 1".to_owned()])
        .await;
    assert_broken(&ran, &settled.broken_at(1), "was altered");
}

#[tokio::test]
async fn audit_verify_names_a_record_whose_query_column_was_altered() {
    let mut trail = Trail::new(2).await;
    let settled = trail.settle().await;
    // Record 3 is an allowed exchange: every column holds a value.
    for (column, assignment) in [
        ("repository", "repository = 'acme/other'"),
        ("repository", "repository = NULL"),
        ("policy", "policy = 'other-policy'"),
        ("policy", "policy = NULL"),
        ("target", "target = 'other-api'"),
        ("outcome", "outcome = 'deny'"),
        ("reason", "reason = 'no_policy_matched'"),
        (
            "token_sha256",
            "token_sha256 = '0000000000000000000000000000000000000000000000000000000000000000'",
        ),
        ("token_sha256", "token_sha256 = NULL"),
        ("token_jti", "token_jti = 'forged-jti'"),
        ("request_id", "request_id = 'forged-request'"),
        ("time_us", "time_us = time_us - 86400000000"),
        ("time_us", "time_us = time_us + 1"),
    ] {
        let ran = settled
            .verify_after(&[format!(
                "UPDATE audit_records SET {assignment} WHERE seq = 3"
            )])
            .await;
        assert_broken(
            &ran,
            &settled.broken_at(3),
            &format!("was altered: column {column} differs from the hashed record"),
        );
    }
}

#[tokio::test]
async fn audit_verify_names_a_removed_middle_record() {
    let mut trail = Trail::new(2).await;
    let settled = trail.settle().await;
    let ran = settled
        .verify_after(&["DELETE FROM audit_records WHERE seq = 2".to_owned()])
        .await;
    assert_broken(
        &ran,
        &settled.broken_at(2),
        "is missing (the next record present is 3)",
    );
    // Two removed, the chain renumbered to close the gap.
    let ran = settled
        .verify_after(&[
            "DELETE FROM audit_records WHERE seq = 2".to_owned(),
            "UPDATE audit_records SET seq = seq + 100 WHERE seq > 2".to_owned(),
            "UPDATE audit_records SET seq = seq - 101 WHERE seq > 100".to_owned(),
            "UPDATE replicas SET last_seq = 3".to_owned(),
        ])
        .await;
    assert_broken(&ran, &settled.broken_at(2), "does not link");
}

/// Removing the oldest records and moving the chain's anchor past them, as retention
/// would, fails `audit verify`: the record where the chain starts is younger than
/// `storage.audit_retention`, or not there at all.
#[tokio::test]
async fn audit_verify_names_recent_records_removed_as_if_purged() {
    let mut trail = Trail::new(2).await;
    let settled = trail.settle().await;
    let ran = settled
        .verify_after(&[
            "UPDATE replicas SET anchor_seq = 3, \
             anchor_hash = (SELECT hash FROM audit_records WHERE seq = 3)"
                .to_owned(),
            "DELETE FROM audit_records WHERE seq < 3".to_owned(),
        ])
        .await;
    assert_broken(
        &ran,
        &settled.broken_at(3),
        "is where the chain starts, so records 1 to 2 were taken out, yet it is from",
    );
    assert!(
        ran.stdout
            .contains("younger than storage.audit_retention (400d): they were removed, not purged"),
        "{ran:#?}"
    );
    // Every record removed, the anchor moved to the head.
    let ran = settled
        .verify_after(&[
            "UPDATE replicas SET anchor_seq = last_seq, anchor_hash = last_hash".to_owned(),
            "DELETE FROM audit_records".to_owned(),
        ])
        .await;
    let last = settled.hashes.len() as u64;
    assert_broken(
        &ran,
        &settled.broken_at(last),
        "is missing, though the chain starts there: records were removed",
    );
}

#[tokio::test]
async fn audit_verify_names_an_inserted_record() {
    let mut trail = Trail::new(2).await;
    let settled = trail.settle().await;
    let forged_json = settled.records[0].replace(
        &format!("\"request_id\":\"{}\"", request_id(&trail.allowed)),
        "\"request_id\":\"forged-request\"",
    );
    assert_ne!(forged_json, settled.records[0]);
    let insert = |seq: u64, prev: &str, hash: &str| {
        format!(
            "INSERT INTO audit_records (replica_id, seq, prev_hash, hash, time_us, request_id, \
             outcome, reason, repository, policy, target, token_sha256, token_jti, record) \
             SELECT replica_id, {seq}, '{prev}', '{hash}', time_us, 'forged-request', outcome, \
             reason, repository, policy, target, token_sha256, token_jti, {} \
             FROM audit_records WHERE seq = 1",
            sql_text(&forged_json)
        )
    };

    // Slipped in between records 2 and 3 (those after it renumbered), with a hash that
    // is right for its place: record 4, which followed record 2, no longer links.
    let forged_hash = link_hash(&settled.replica, 3, &settled.hashes[1], &forged_json);
    let ran = settled
        .verify_after(&[
            "UPDATE audit_records SET seq = seq + 100 WHERE seq >= 3".to_owned(),
            "UPDATE audit_records SET seq = seq - 99 WHERE seq >= 100".to_owned(),
            insert(3, &settled.hashes[1], &forged_hash),
            "UPDATE replicas SET last_seq = 5".to_owned(),
        ])
        .await;
    assert_broken(&ran, &settled.broken_at(4), "does not link");

    // Appended after the newest record, with a hash that is not its own.
    let ran = settled
        .verify_after(&[insert(5, &settled.hashes[3], &settled.hashes[3])])
        .await;
    assert_broken(&ran, &settled.broken_at(5), "was altered");

    // A chain of its own that no replica started.
    let ran = settled
        .verify_after(&[
            "INSERT INTO audit_records (replica_id, seq, prev_hash, hash, time_us, \
             request_id, outcome, reason, repository, policy, target, token_sha256, token_jti, \
             record) SELECT 'forged-replica', seq, prev_hash, hash, time_us, request_id, \
             outcome, reason, repository, policy, target, token_sha256, token_jti, record \
             FROM audit_records WHERE seq = 1"
                .to_owned(),
        ])
        .await;
    assert_broken(
        &ran,
        "audit trail broken: replica forged-replica record 1: ",
        "belongs to no known chain",
    );
}

#[tokio::test]
async fn audit_verify_names_a_forged_record_appended_after_the_head() {
    let mut trail = Trail::new(2).await;
    let settled = trail.settle().await;
    let forged_json = settled.records[0].replace(
        &format!("\"request_id\":\"{}\"", request_id(&trail.allowed)),
        "\"request_id\":\"forged-request\"",
    );
    // Whoever knows the (unkeyed) link hash can compute record 5's; the head still says 4.
    let forged_hash = link_hash(&settled.replica, 5, &settled.hashes[3], &forged_json);
    let ran = settled
        .verify_after(&[format!(
            "INSERT INTO audit_records (replica_id, seq, prev_hash, hash, time_us, request_id, \
             outcome, reason, repository, policy, target, token_sha256, token_jti, record) \
             SELECT replica_id, 5, '{}', '{forged_hash}', time_us, 'forged-request', outcome, \
             reason, repository, policy, target, token_sha256, token_jti, {} \
             FROM audit_records WHERE seq = 1",
            settled.hashes[3],
            sql_text(&forged_json)
        )])
        .await;
    assert_broken(&ran, &settled.broken_at(5), "");
    assert!(
        !ran.first_line().contains("removed"),
        "nothing was removed: {ran:#?}"
    );
}

#[tokio::test]
async fn audit_verify_catches_removal_of_the_newest_records_by_the_head_and_by_a_checkpoint() {
    let mut trail = Trail::new(2).await;
    let settled = trail.settle().await;
    let (replica, hash4) = (&settled.replica, &settled.hashes[3]);

    // Removed, the head left as it was: the head names the missing record.
    let ran = settled
        .verify_after(&["DELETE FROM audit_records WHERE seq = 4".to_owned()])
        .await;
    assert_broken(
        &ran,
        &settled.broken_at(4),
        "the newest records were removed",
    );

    // Removed, and the head rewritten to match: the walk passes...
    let mut copy = settled.copy().await;
    copy.exec("DELETE FROM audit_records WHERE seq = 4").await;
    copy.exec(&format!(
        "UPDATE replicas SET last_seq = 3, last_hash = '{}'",
        settled.hashes[2]
    ))
    .await;
    let ran = copy.verify(&[]).await;
    assert_eq!(
        ran.ok(),
        format!(
            "audit trail intact: 3 records in 1 chain\n  replica {replica}: 3 records checked, up to record 3\n"
        )
    );
    // ...but not a checkpoint taken before: as `replica seq hash`, as the service's text
    // log line, and as its JSON log line.
    let files = tempfile::tempdir().expect("tempdir");
    let plain = files.path().join("checkpoint.txt");
    std::fs::write(&plain, format!("{replica} 4 {hash4}\n")).expect("write");
    let text_log = files.path().join("service.log");
    std::fs::write(
        &text_log,
        format!(
            "2026-12-01T10:00:00.000000Z  INFO tokenmint::edges::cli: tokenmint is serving listen=127.0.0.1:8080\n\
             2026-12-01T10:00:00.000100Z  INFO tokenmint::adapters::store::sql: audit checkpoint replica={replica} seq=4 hash={hash4}\n"
        ),
    )
    .expect("write");
    let json_log = files.path().join("service.jsonl");
    std::fs::write(
        &json_log,
        format!(
            "{}\n",
            json!({"timestamp": "2026-12-01T10:00:00.000100Z", "level": "INFO",
                "message": "audit checkpoint", "replica": replica, "seq": 4, "hash": hash4,
                "target": "tokenmint::adapters::store::sql"})
        ),
    )
    .expect("write");
    for file in [&plain, &text_log, &json_log] {
        let ran = copy
            .verify(&["--checkpoint", file.to_str().expect("UTF-8")])
            .await;
        assert_broken(&ran, &settled.broken_at(4), "newest records were removed");
    }
    // The same checkpoints match the trail as it was.
    let intact = CliConfig::sqlite(trail.dir());
    for file in [&plain, &text_log, &json_log] {
        let ran = audit(
            &intact.path,
            &["verify", "--checkpoint", file.to_str().expect("UTF-8")],
        )
        .await;
        assert_eq!(
            ran.first_line(),
            "audit trail intact: 4 records in 1 chain; 1 checkpoint matched",
            "{ran:#?}"
        );
    }
    // A file without a checkpoint is an error, not a pass.
    let empty = files.path().join("empty.log");
    std::fs::write(&empty, "nothing here\n").expect("write");
    let ran = audit(
        &intact.path,
        &["verify", "--checkpoint", empty.to_str().expect("UTF-8")],
    )
    .await;
    assert_eq!(ran.code, Some(1), "{ran:#?}");
    assert!(ran.stderr.contains("holds no checkpoint"), "{ran:#?}");
}

#[tokio::test]
async fn audit_verify_catches_a_rewritten_newest_record_by_a_checkpoint() {
    let mut trail = Trail::new(2).await;
    let settled = trail.settle().await;
    let (replica, hash4) = (&settled.replica, &settled.hashes[3]);
    // Record 4 rewritten with its hash recomputed and the head moved: the walk passes.
    let rewritten = settled.records[3].replace("\"actor\":\"alice-acme\"", "\"actor\":\"mallory\"");
    assert_ne!(rewritten, settled.records[3]);
    let new_hash = link_hash(replica, 4, &settled.hashes[2], &rewritten);
    let mut copy = settled.copy().await;
    copy.exec(&format!(
        "UPDATE audit_records SET record = {}, hash = '{new_hash}' WHERE seq = 4",
        sql_text(&rewritten)
    ))
    .await;
    copy.exec(&format!("UPDATE replicas SET last_hash = '{new_hash}'"))
        .await;
    let ran = copy.verify(&[]).await;
    assert_eq!(
        ran.first_line(),
        "audit trail intact: 4 records in 1 chain",
        "{ran:#?}"
    );
    let files = tempfile::tempdir().expect("tempdir");
    let checkpoint = files.path().join("checkpoint.txt");
    std::fs::write(&checkpoint, format!("{replica} 4 {hash4}\n")).expect("write");
    let ran = copy
        .verify(&["--checkpoint", checkpoint.to_str().expect("UTF-8")])
        .await;
    assert_broken(&ran, &settled.broken_at(4), "differs from the checkpoint");
}

/// Removes the terminal colour sequences (`ESC [ ... m`) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_reads_checkpoints_from_the_services_text_log() {
    let mut trail = Trail::new(0).await;
    let settled = trail.settle().await;
    let log_path = trail.config.dir.path().join("service.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = tokenmint()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&trail.config.path)
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tokenmint");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text
            .lines()
            .any(|l| strip_ansi(l).contains("tokenmint is serving"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not serving:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = tokio::task::spawn_blocking(move || child.wait().expect("wait").code())
        .await
        .expect("join");
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&log_path).expect("log");
    let checkpoints: Vec<String> = text
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains("audit checkpoint"))
        .collect();
    assert_eq!(checkpoints.len(), 2, "at start and at shutdown:\n{text}");
    for line in &checkpoints {
        assert!(
            line.ends_with(&format!(
                " INFO tokenmint::adapters::store::sql: audit checkpoint replica={} seq=2 hash={}",
                settled.replica, settled.hashes[1]
            )),
            "{line}"
        );
    }
    let ran = audit(
        &trail.config.path,
        &["verify", "--checkpoint", log_path.to_str().expect("UTF-8")],
    )
    .await;
    assert_eq!(
        ran.first_line(),
        "audit trail intact: 2 records in 1 chain; 2 checkpoints matched",
        "{ran:#?}\n{text}"
    );
}

// ---------------------------------------------------------------------------------------
// Read-only copies

/// `dir/evidence/` holding the given files of the trail's directory, read-only (0444 files,
/// a 0555 directory); the modes go back on drop of the guard.
fn read_only_copy(from: &Path, names: &[&str]) -> (tempfile::TempDir, PathBuf, Writable) {
    let holder = tempfile::tempdir().expect("tempdir");
    set_mode(holder.path(), 0o755);
    let evidence = holder.path().join("evidence");
    std::fs::create_dir(&evidence).expect("evidence dir");
    for name in names {
        std::fs::copy(from.join(name), evidence.join(name)).expect("copy");
        set_mode(&evidence.join(name), 0o444);
    }
    set_mode(&evidence, 0o555);
    let guard = Writable(vec![evidence.clone()]);
    (holder, evidence, guard)
}

/// A configuration naming `dir` that user `nobody` can read too.
fn config_for_all(dir: &Path) -> CliConfig {
    let config = CliConfig::sqlite(dir);
    set_mode(config.dir.path(), 0o755);
    set_mode(&config.path, 0o644);
    config
}

/// `audit list --format json` and `audit verify` on a read-only copy, as this user, or as
/// `nobody` when this user is root (for whom permissions stop nothing).
async fn read_copy(config: &Path, as_nobody: bool) -> (Vec<Value>, Ran) {
    let command = |args: &[&str]| {
        let mut command = if as_nobody {
            tokenmint_as_nobody().expect("setpriv")
        } else {
            tokenmint()
        };
        command
            .arg("audit")
            .args(args)
            .arg("--config")
            .arg(config)
            .env("TZ", "UTC");
        command
    };
    let listed = run(command(&["list", "--format", "json"])).await;
    let verified = run(command(&["verify"])).await;
    (parse_array(listed.ok()), verified)
}

#[tokio::test]
async fn the_audit_commands_read_a_read_only_copy_without_changing_it() {
    let mut trail = Trail::new(2).await;
    let settled = trail.settle().await;
    let (_holder, evidence, _guard) = read_only_copy(trail.dir(), &["tokenmint.db"]);
    let file = evidence.join("tokenmint.db");
    let before = std::fs::read(&file).expect("read");
    let config = config_for_all(&evidence);
    // Permissions bind root in nothing: run as `nobody` then, if we can.
    let as_nobody = tokenmint_as_nobody().is_some();
    if running_as_root() && !as_nobody {
        eprintln!("running as root without setpriv: the copy is read-only in mode only");
    }
    let (records, verified) = read_copy(&config.path, as_nobody).await;
    assert_eq!(request_ids(&records), trail.request_ids());
    assert_eq!(
        verified.ok(),
        format!(
            "audit trail intact: 4 records in 1 chain\n  replica {}: 4 records checked, up to record 4\n",
            settled.replica
        )
    );
    assert_eq!(
        std::fs::read(&file).expect("read"),
        before,
        "the copy's bytes"
    );
    if as_nobody || !running_as_root() {
        assert_eq!(
            files_in(&evidence),
            ["tokenmint.db"],
            "nothing beside the copy"
        );
    }
}

#[tokio::test]
async fn a_backup_made_with_vacuum_into_while_the_app_runs_is_read_whole_and_left_untouched() {
    let trail = Trail::new(2).await;
    // As the README says to back the store up while it runs.
    let holder = tempfile::tempdir().expect("tempdir");
    set_mode(holder.path(), 0o755);
    let evidence = holder.path().join("evidence");
    std::fs::create_dir(&evidence).expect("evidence dir");
    let backup = evidence.join("tokenmint.db");
    let mut conn = connect_sqlite(trail.dir()).await;
    sqlx::query(&format!(
        "VACUUM INTO {}",
        sql_text(backup.to_str().expect("UTF-8"))
    ))
    .execute(&mut conn)
    .await
    .expect("VACUUM INTO");
    conn.close().await.expect("close");
    set_mode(&backup, 0o444);
    set_mode(&evidence, 0o555);
    let _guard = Writable(vec![evidence.clone()]);
    let before = std::fs::read(&backup).expect("read");
    let config = config_for_all(&evidence);
    let mut users = vec![false];
    if tokenmint_as_nobody().is_some() {
        users.push(true);
    }
    for as_nobody in users {
        let (records, verified) = read_copy(&config.path, as_nobody).await;
        assert_eq!(request_ids(&records), trail.request_ids());
        assert_eq!(
            verified.first_line(),
            "audit trail intact: 4 records in 1 chain",
            "{verified:#?}"
        );
        assert_eq!(
            std::fs::read(&backup).expect("read"),
            before,
            "the backup's bytes"
        );
        assert_eq!(
            files_in(&evidence),
            ["tokenmint.db"],
            "nothing beside the backup"
        );
    }
}

#[tokio::test]
async fn the_audit_commands_create_no_file_beside_a_copy_even_when_they_could() {
    let mut trail = Trail::new(2).await;
    trail.settle().await;
    let (_holder, evidence, _guard) = read_only_copy(trail.dir(), &["tokenmint.db"]);
    let file = evidence.join("tokenmint.db");
    let before = std::fs::read(&file).expect("read");
    let config = CliConfig::sqlite(&evidence);
    let (records, verified) = read_copy(&config.path, false).await;
    assert_eq!(records.len(), 4);
    verified.ok();
    assert_eq!(
        std::fs::read(&file).expect("read"),
        before,
        "the copy's bytes"
    );
    assert_eq!(
        files_in(&evidence),
        ["tokenmint.db"],
        "nothing beside the copy"
    );
}

#[tokio::test]
async fn a_read_only_copy_with_its_wal_shows_the_newest_records() {
    let Some(_) = tokenmint_as_nobody() else {
        eprintln!("needs root and setpriv to run the commands as a user bound by permissions");
        return;
    };
    let mut trail = Trail::new(0).await;
    // Records 1 and 2 checkpointed into the file; 3 and 4 only in the WAL.
    {
        let mut conn = connect_sqlite(trail.dir()).await;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .expect("checkpoint");
        conn.close().await.expect("close");
    }
    for _ in 0..2 {
        let answer = trail
            .app()
            .exchange(&trail.fake.token("github-push-main"), "internal-api", &[])
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        trail.more.push(answer);
    }
    assert!(trail.dir().join("tokenmint.db-wal").exists());
    let (_holder, evidence, _guard) =
        read_only_copy(trail.dir(), &["tokenmint.db", "tokenmint.db-wal"]);
    let config = config_for_all(&evidence);
    let (records, verified) = read_copy(&config.path, true).await;
    assert_eq!(request_ids(&records), trail.request_ids());
    assert_eq!(
        verified.first_line(),
        "audit trail intact: 4 records in 1 chain",
        "{verified:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// Beside a running service

/// A `tokenmint serve` configuration in `dir`: the fake issuer as `github`, the local
/// target `internal-api`, the `deploy-api` policy, SQLite in `dir/data`.
fn serve_config(dir: &Path, fake: &FakeIssuer) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policies dir");
    std::fs::write(policies.join("deploy-api.yaml"), DEPLOY_POLICY).expect("policy");
    let path = dir.join("tokenmint.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\npublic_url = \"{PUBLIC_URL}\"\nadmin_listen = \"\"\n\n[storage]\ndata_dir = \"{}\"\n\n[policies]\ndir = \"{}\"\n\n\
             [issuers.github]\nissuer = \"{}\"\nkind = \"github\"\njwks_fetch_timeout = \"2s\"\n{LOCAL_TARGET}",
            dir.join("data").display(),
            policies.display(),
            fake.issuer,
        ),
    )
    .expect("write config");
    path
}

async fn start_service(config: &Path) -> ServiceProcess {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || ServiceProcess::with_config(&config, None))
        .await
        .expect("start")
}

/// `POST /token` over HTTP: the answer's body when it is 200, or else what happened.
async fn exchange_over_http(
    client: &reqwest::Client,
    listen: &str,
    token: &str,
) -> Result<Value, String> {
    let response = client
        .post(format!("http://{listen}/token"))
        .header("user-agent", USER_AGENT)
        .json(&json!({
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": token,
            "subject_token_type": ID_TOKEN,
            "audience": "internal-api",
        }))
        .send()
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|err| err.to_string())?;
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_commands_work_while_serve_runs() {
    let fake = FakeIssuer::start(Shape::Github).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = serve_config(dir.path(), &fake);
    let process = start_service(&config).await;
    let client = reqwest::Client::new();
    let answer = exchange_over_http(&client, &process.listen, &fake.token("github-push-main"))
        .await
        .expect("an access token");
    let token = answer["access_token"].as_str().expect("token");
    let sha = sha256_hex(token.as_bytes());

    // The service is still running, with the store open for writing.
    let records = list_json(&config, &[]).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["request_id"], answer["request_id"]);
    assert_eq!(records[0]["outcome"], "allow");
    assert_eq!(records[0]["token_sha256"], sha.as_str());
    assert_eq!(records[0]["client_ip"], "127.0.0.1");
    assert_eq!(records[0]["user_agent"], USER_AGENT);
    let verified = audit(&config, &["verify"]).await;
    assert_eq!(
        verified.first_line(),
        "audit trail intact: 1 record in 1 chain",
        "{verified:#?}"
    );
    assert_eq!(verified.code, Some(0));
    let shown = parse_array(
        audit(&config, &["show", &sha, "--format", "json"])
            .await
            .ok(),
    );
    assert_eq!(shown, records);
    // And the service still serves after being read.
    let second = exchange_over_http(&client, &process.listen, &fake.token("github-push-main"))
        .await
        .expect("an access token");
    assert_eq!(list_json(&config, &[]).await.len(), 2);

    let (code, lines) = tokio::task::spawn_blocking(move || process.terminate())
        .await
        .expect("stop");
    assert_eq!(code, Some(0));
    // Its checkpoint log lines (at start and at shutdown) match the trail.
    let log = dir.path().join("service.jsonl");
    std::fs::write(&log, lines.join("\n")).expect("write log");
    let checkpoints = lines
        .iter()
        .filter(|l| l.contains("audit checkpoint"))
        .count();
    assert_eq!(checkpoints, 2, "{lines:#?}");
    let verified = audit(
        &config,
        &["verify", "--checkpoint", log.to_str().expect("UTF-8")],
    )
    .await;
    assert_eq!(
        verified.first_line(),
        "audit trail intact: 2 records in 1 chain; 2 checkpoints matched",
        "{verified:#?}"
    );
    assert_eq!(
        request_ids(&list_json(&config, &[]).await),
        [
            answer["request_id"].as_str().expect("id"),
            second["request_id"].as_str().expect("id")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_tokens_are_returned_loses_none_of_their_records() {
    const REQUESTS: usize = 40;
    const KILL_AFTER: usize = 3;
    let fake = FakeIssuer::start(Shape::Github).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = serve_config(dir.path(), &fake);
    let process = start_service(&config).await;
    let listen = process.listen.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    // Warm up (the issuer's keys fetched, connections open) so that the load is exchanges.
    exchange_over_http(&client, &listen, &fake.token("github-push-main"))
        .await
        .expect("an access token");

    let tokens: Vec<String> = (0..REQUESTS)
        .map(|_| fake.token("github-push-main"))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for token in tokens {
        let (client, listen, tx) = (client.clone(), listen.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(exchange_over_http(&client, &listen, &token).await);
        });
    }
    drop(tx);
    let mut received = Vec::new();
    let mut failures = Vec::new();
    let mut process = Some(process);
    while let Some(answer) = rx.recv().await {
        match answer {
            Ok(body) => received.push(body),
            Err(err) => failures.push(err),
        }
        if received.len() >= KILL_AFTER
            && let Some(process) = process.take()
        {
            let (code, _) = process.kill();
            assert_eq!(code, None, "killed by a signal");
        }
    }
    if let Some(process) = process.take() {
        process.kill();
        panic!("fewer than {KILL_AFTER} tokens came back: {failures:?}");
    }
    assert!(received.len() >= KILL_AFTER);
    eprintln!(
        "{} of {REQUESTS} exchanges returned a token before SIGKILL; {} did not",
        received.len(),
        failures.len()
    );

    // Every token handed out has its record, even though nothing was shut down.
    let records = list_json(&config, &["--outcome", "allow"]).await;
    let recorded: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["token_sha256"].as_str())
        .collect();
    for body in &received {
        let token = body["access_token"].as_str().expect("token");
        let sha = sha256_hex(token.as_bytes());
        assert!(
            recorded.contains(sha.as_str()),
            "the token of request {} has no record",
            body["request_id"]
        );
        let ids: Vec<&str> = records
            .iter()
            .filter(|r| r["token_sha256"] == sha.as_str())
            .map(|r| r["request_id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, [body["request_id"].as_str().expect("id")]);
    }
    // 1 for the warm-up.
    assert!(records.len() > received.len());
    let verified = audit(&config, &["verify"]).await;
    assert_eq!(verified.code, Some(0), "{verified:#?}");
    assert!(
        verified.first_line().starts_with("audit trail intact: ")
            && verified.first_line().ends_with(" in 1 chain"),
        "{verified:#?}"
    );

    // The service starts again on the store and carries on with the same chain.
    let process = start_service(&config).await;
    exchange_over_http(&client, &process.listen, &fake.token("github-push-main"))
        .await
        .expect("an access token");
    let (code, _) = tokio::task::spawn_blocking(move || process.terminate())
        .await
        .expect("stop");
    assert_eq!(code, Some(0));
    let verified = audit(&config, &["verify"]).await;
    assert_eq!(verified.code, Some(0), "{verified:#?}");
    assert!(
        verified.first_line().ends_with(" in 1 chain"),
        "{verified:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

#[tokio::test]
async fn the_audit_commands_read_every_replica_on_postgres() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let shared = Shared {
        kind: TestStore::Postgres,
        dir: tempfile::tempdir().expect("tempdir"),
        url: Some(url.clone()),
    };
    let fake = FakeIssuer::start(Shape::Github).await;
    let first = shared.app(deploy_builder(&fake, "")).await;
    let second = shared.app(deploy_builder(&fake, "")).await;
    let mut answers = Vec::new();
    for app in [&first, &second] {
        let answer = exchange_as(app, &fake.token("github-push-main"), "internal-api", None).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        answers.push(answer);
    }
    let config = CliConfig::postgres(&url);
    let records = list_json(&config.path, &[]).await;
    let listed: BTreeSet<&str> = request_ids(&records).into_iter().collect();
    let ids: Vec<String> = answers.iter().map(request_id).collect();
    let made: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(listed, made);
    for (answer, id) in answers.iter().zip(&ids) {
        let record = records
            .iter()
            .find(|r| r["request_id"] == id.as_str())
            .expect("listed");
        assert_eq!(
            record["token_sha256"],
            sha256_hex(access_token(answer).as_bytes()).as_str()
        );
        for field in CONTRACT_FIELDS {
            assert!(record.get(*field).is_some(), "no {field}");
        }
    }
    assert_eq!(
        request_ids(&list_json(&config.path, &["--repository", REPOSITORY]).await).len(),
        2
    );

    let verified = audit(&config.path, &["verify"]).await;
    let text = verified.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "audit trail intact: 2 records in 2 chains");
    assert_eq!(lines.len(), 3, "{text}");
    for line in &lines[1..] {
        assert!(line.starts_with("  replica "), "{line}");
        assert!(
            line.ends_with(": 1 record checked, up to record 1"),
            "{line}"
        );
    }

    // The second replica's record altered in place.
    let mut conn = AnyConnection::connect(&url).await.expect("connect");
    let replica: String =
        sqlx::query_scalar("SELECT replica_id FROM audit_records WHERE request_id = $1")
            .bind(&ids[1])
            .fetch_one(&mut conn)
            .await
            .expect("replica");
    let altered = sqlx::query(
        "UPDATE audit_records SET record = replace(record, '\"actor\":\"alice-acme\"', \
         '\"actor\":\"mallory\"') WHERE request_id = $1",
    )
    .bind(&ids[1])
    .execute(&mut conn)
    .await
    .expect("update")
    .rows_affected();
    assert_eq!(altered, 1);
    conn.close().await.expect("close");
    let ran = audit(&config.path, &["verify"]).await;
    assert_broken(
        &ran,
        &format!("audit trail broken: replica {replica} record 1: "),
        "was altered",
    );
}
