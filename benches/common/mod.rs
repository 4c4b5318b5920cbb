//! What the benchmarks share: the binary's allocator, and a fresh PostgreSQL schema to
//! measure on.

/// The allocator the `tokenmint` binary runs with (see `src/main.rs`), so that the
/// benchmarks measure what is served.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Runs `work` on every item with `callers` of them in flight at all times (a closed loop,
/// as a service under steady load sees it), and returns how long that took.
pub async fn closed_loop<T, F, Fut>(items: Vec<T>, callers: usize, work: F) -> std::time::Duration
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let queue = std::sync::Arc::new(std::sync::Mutex::new(items));
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            let queue = queue.clone();
            let work = work.clone();
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().expect("queue").pop();
                    match next {
                        Some(item) => work(item).await,
                        None => break,
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    started.elapsed()
}
