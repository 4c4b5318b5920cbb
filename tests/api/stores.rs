//! Which store the API tests run on, and fresh PostgreSQL schemas for them.
//!
//! `TOKENMINT_TEST_STORE` picks the store of every `AppBuilder` that names none:
//! `sqlite` (the default: the service's own default, a file in the test's data_dir),
//! `memory`, or `postgres` (a fresh schema in `TOKENMINT_TEST_DATABASE_URL` per app).
//! Tests of durability run against SQLite always and against PostgreSQL when
//! `TOKENMINT_TEST_DATABASE_URL` is set; `TOKENMINT_TEST_REQUIRE_PG=1` turns a missing
//! or unreachable PostgreSQL into a failure instead of a skip.

use sqlx::Connection;

/// The store an app under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStore {
    Memory,
    Sqlite,
    Postgres,
}

impl TestStore {
    pub fn from_env() -> TestStore {
        match std::env::var("TOKENMINT_TEST_STORE").as_deref() {
            Ok("memory") => TestStore::Memory,
            Ok("postgres") => TestStore::Postgres,
            Ok("sqlite") | Err(_) => TestStore::Sqlite,
            Ok(other) => panic!("TOKENMINT_TEST_STORE={other:?}: use sqlite, memory or postgres"),
        }
    }
}

fn require_pg() -> bool {
    std::env::var("TOKENMINT_TEST_REQUIRE_PG").is_ok_and(|v| v == "1")
}

/// A URL to a new, empty schema of the test database (a search_path option), or `None`
/// (after saying so on stderr) when no PostgreSQL is configured.
pub async fn postgres_url() -> Option<String> {
    let Ok(base) = std::env::var("TOKENMINT_TEST_DATABASE_URL") else {
        assert!(
            !require_pg(),
            "TOKENMINT_TEST_REQUIRE_PG=1 but TOKENMINT_TEST_DATABASE_URL is not set"
        );
        say_skipped("set TOKENMINT_TEST_DATABASE_URL to run it");
        return None;
    };
    sqlx::any::install_default_drivers();
    let mut admin = match sqlx::AnyConnection::connect(&base).await {
        Ok(conn) => conn,
        Err(err) => {
            assert!(!require_pg(), "PostgreSQL at {base} is unreachable: {err}");
            say_skipped(&format!("PostgreSQL at {base} is unreachable: {err}"));
            return None;
        }
    };
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("creating a test schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// Says on the real stderr (past the test harness's capture, so `cargo test` shows it)
/// that the PostgreSQL part of the current test was skipped.
fn say_skipped(why: &str) {
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "{test}: PostgreSQL part skipped ({why})");
}
