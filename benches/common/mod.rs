//! What the benchmarks share: a fresh PostgreSQL schema to measure on.

/// A fresh schema in `TOKENMINT_BENCH_DATABASE_URL`, as a URL with its search path; `None`
/// when the variable is not set.
pub fn postgres_schema_url(runtime: &tokio::runtime::Runtime) -> Option<String> {
    use sqlx::Connection as _;
    let base = std::env::var("TOKENMINT_BENCH_DATABASE_URL").ok()?;
    sqlx::any::install_default_drivers();
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    runtime.block_on(async {
        let mut conn = sqlx::AnyConnection::connect(&base)
            .await
            .expect("TOKENMINT_BENCH_DATABASE_URL connects");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("schema");
    });
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}
