//! The schema migrations, compiled into the binary from `migrations/{sqlite,postgres}` and
//! applied at start. A database migrated by a newer tokenmint is refused, not touched.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::AnyConnection;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationSource, MigrationType, Migrator};

use super::Backend;

/// (version, description, SQL), oldest first. Append; never edit an applied migration.
const SQLITE: &[(i64, &str, &str)] = &[(
    1,
    "initial",
    include_str!("../../../../migrations/sqlite/0001_initial.sql"),
)];
const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "signing ring",
        include_str!("../../../../migrations/postgres/0002_signing_ring.sql"),
    ),
];

#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The newest schema version this binary knows.
pub fn latest(backend: Backend) -> i64 {
    let migrations = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    migrations.last().map_or(0, |m| m.0)
}

/// Applies every migration not yet applied. `what` names the database in errors.
pub async fn run(conn: &mut AnyConnection, backend: Backend, what: &str) -> anyhow::Result<()> {
    let source = match backend {
        Backend::Sqlite => Embedded(SQLITE),
        Backend::Postgres => Embedded(POSTGRES),
    };
    let migrator = Migrator::new(source)
        .await
        .map_err(|err| anyhow::anyhow!("loading the built-in migrations: {err}"))?;
    migrator.run(conn).await.map_err(|err| match err {
        MigrateError::VersionMissing(version) => anyhow::anyhow!(
            "the {} store {what} was migrated by a newer tokenmint (schema version {version}; \
             this binary knows up to {}): run that version, or restore a backup taken before the upgrade",
            backend.name(),
            latest(backend)
        ),
        MigrateError::VersionMismatch(version) => anyhow::anyhow!(
            "the {} store {what}: migration {version} was applied from different SQL than this binary's; \
             the database was changed outside tokenmint",
            backend.name()
        ),
        other => anyhow::anyhow!("migrating the {} store {what}: {other}", backend.name()),
    })
}

/// The schema version the database is at, without changing it (for read-only tools).
pub async fn applied(conn: &mut AnyConnection) -> Result<Option<i64>, MigrateError> {
    let applied = conn.list_applied_migrations().await?;
    Ok(applied.iter().map(|m| m.version).max())
}
