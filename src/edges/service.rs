//! Assembling a running service from configuration: issuers, policies, keys, store, listeners.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::net::TcpListener;

use crate::adapters::issuer_keys::{
    FileKeySource, HttpKeySource, IssuerKeys, KeyFetchClient, KeySource, KeystoreSettings,
    OutboundProxy, Reach, check_configured_jwks_uri,
};
use crate::adapters::mint::{KeyReload, LocalMinter, LocalSigner, RemoteMinter};
use crate::adapters::signing::{
    DatabaseRing, KeyEncryptionKey, KeyRing, SigningAlgorithm, SigningKey,
};
use crate::adapters::store::{
    Backend, Location, MemoryStore, SqlStore, connect_postgres, spawn_maintenance,
};
use crate::config::{Config, IssuerConfig, TargetConfig, TargetKindConfig};
use crate::edges::dev::{self, DevIssuer};
use crate::edges::http::{AppState, Published, admin_router, router};
use crate::edges::metrics::Metrics;
use crate::trust::exchange::{Exchanger, Target};
use crate::trust::mint::Minter;
use crate::trust::policy::reload::PolicyReloader;
use crate::trust::policy::switches::{self, ConfigSwitches, SwitchSource, Switches};
use crate::trust::policy::{self, PolicyContext, PolicySet};
use crate::trust::store::Store;
use crate::trust::verify::{TrustedIssuer, Verifier};

/// How often a running service looks for a key rotation done by `tokenmint keys rotate`
/// (in `data_dir/keys` or in the database): well within the 30 s the contract promises.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Connections to PostgreSQL for the signing keys when no durable store lends its pool
/// (a service built on a given store, `keys rotate`, `keys reseal`).
pub const KEY_POOL_SIZE: u32 = 2;

/// A service ready to serve: its state plus the background tasks it owns.
pub struct Service {
    pub state: AppState,
    pub config: Config,
    /// Policy hot reload (not in dev mode).
    pub reloader: Option<Arc<PolicyReloader>>,
    /// The durable store, when the service runs on one (not in dev mode or tests).
    pub durable: Option<Arc<SqlStore>>,
    /// Held, not read: aborted when the service is dropped.
    _tasks: Tasks,
}

/// Says at start which proxy outbound requests use (from `HTTPS_PROXY`, `HTTP_PROXY`,
/// `ALL_PROXY`, `NO_PROXY`, as reqwest reads them), never its credentials.
fn log_outbound_proxy(proxy: &OutboundProxy) {
    for (var, why) in &proxy.unusable {
        tracing::warn!(
            "{var} is set, but tokenmint cannot use it ({why}); issuer key fetches ignore it"
        );
    }
    if !proxy.is_set() {
        return;
    }
    let shown = |url: Option<&crate::adapters::issuer_keys::ProxyUrl>| {
        url.map_or_else(
            || "none".to_owned(),
            |url| format!("{} ({})", url.redacted(), url.var),
        )
    };
    tracing::info!(
        https_proxy = %shown(proxy.https.as_ref()),
        http_proxy = %shown(proxy.http.as_ref()),
        no_proxy = proxy.no_proxy.as_deref().unwrap_or(""),
        "outbound requests go through a proxy; issuer key fetches through it still refuse \
         forbidden IP literals and names (loopback issuers are never proxied)"
    );
}

/// Where the configuration keeps state: PostgreSQL with `storage.database_url`, else the
/// SQLite file in `storage.data_dir`; `None` (in memory) in dev mode.
pub fn store_location(config: &Config) -> Option<Location> {
    match (&config.storage.database_url, &config.storage.data_dir) {
        (Some(url), _) => Some(Location::Postgres(url.clone())),
        (None, Some(dir)) => Some(Location::DataDir(dir.clone())),
        (None, None) => None,
    }
}

/// A service's background tasks: aborted when dropped, with the service, or while it is
/// assembled if that fails half-way, so nothing is left running.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    fn push(&mut self, task: tokio::task::JoinHandle<()>) {
        self.0.push(task);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Loads the policy directory; every error is one line naming file, line and field.
pub fn load_policies(config: &Config, dir: &Path) -> Result<PolicySet, Vec<String>> {
    if !dir.is_dir() {
        return Err(vec![format!(
            "policies directory {} does not exist",
            dir.display()
        )]);
    }
    let set = policy::load_dir(dir, &PolicyContext::from_config(config))
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    // A deny list that does not load stops `serve`: running without it would admit the
    // workloads it names.
    let deny = switches::load_deny_file(dir)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    Ok(set.with_switches(Switches::new(&ConfigSwitches::of(config), &deny)))
}

impl Service {
    /// Builds the service on the store its configuration names (in memory in dev mode),
    /// with the store's background purges and checkpoints. The store is opened after
    /// policies, issuers, key files (the key-encryption key with PostgreSQL) and
    /// credentials loaded, so a broken configuration creates nothing; with
    /// `storage.database_url` the signing keys are then loaded from the database (and
    /// created there by the first replica).
    pub async fn open(config: Config, metrics: Arc<Metrics>) -> anyhow::Result<Service> {
        Self::assemble(config, metrics, None).await
    }

    /// Builds the service with the in-memory store.
    pub async fn build(config: Config, metrics: Arc<Metrics>) -> anyhow::Result<Service> {
        Self::build_with_store(config, metrics, Arc::new(MemoryStore::new())).await
    }

    /// Builds the service on `store`: loads policies and keys, starts JWKS refreshers,
    /// the key-reload task and the policy reloader.
    pub async fn build_with_store(
        config: Config,
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Service> {
        Self::assemble(config, metrics, Some(store)).await
    }

    async fn assemble(
        config: Config,
        metrics: Arc<Metrics>,
        store: Option<Arc<dyn Store>>,
    ) -> anyhow::Result<Service> {
        // Aborted if assembling fails half-way (the key ring, say, after the store opened).
        let mut tasks = Tasks(Vec::new());
        let dev = if config.dev {
            Some(Arc::new(
                DevIssuer::new(&config.server.public_url).context("creating the dev issuer key")?,
            ))
        } else {
            None
        };

        let policies = Arc::new(ArcSwap::from_pointee(match &dev {
            Some(_) => dev::dev_policies(&config)?,
            // `serve` reports every policy error on its one line.
            None => load_policies(&config, &config.policies.dir).map_err(|errors| {
                anyhow::anyhow!(
                    "{}: {}",
                    crate::edges::telemetry::counted(errors.len(), "policy error", "policy errors"),
                    errors.join("; ")
                )
            })?,
        }));

        // One client (and connection pool) per reach; each enforces its reach.
        let proxy = OutboundProxy::from_env();
        if dev.is_none() {
            log_outbound_proxy(&proxy);
        }
        let mut clients: std::collections::HashMap<Reach, KeyFetchClient> =
            std::collections::HashMap::new();
        let mut trusted = Vec::new();
        let mut issuer_keys = Vec::new();
        for issuer in config.issuers.values() {
            let reach = Reach::of(&issuer.issuer_url, issuer.allow_private_network);
            if let (None, Some(jwks_uri)) = (&dev, &issuer.jwks_uri) {
                check_configured_jwks_uri(reach, jwks_uri)
                    .map_err(|err| anyhow::anyhow!("issuers.{}.jwks_uri: {err}", issuer.name))?;
            }
            let source: Arc<dyn KeySource> = match (&dev, &issuer.jwks_file) {
                (Some(dev), _) => dev.key_source(),
                (None, Some(path)) => Arc::new(FileKeySource::new(path.clone())),
                (None, None) => Arc::new(HttpKeySource::new(
                    match clients.get(&reach) {
                        Some(client) => client.clone(),
                        None => {
                            let client = KeyFetchClient::with_proxy(reach, proxy.clone())
                                .context("building the HTTP client for issuer keys")?;
                            clients.insert(reach, client.clone());
                            client
                        }
                    },
                    issuer.issuer_url.clone(),
                    issuer.jwks_uri.clone(),
                    keystore_settings(issuer),
                )),
            };
            let keys = IssuerKeys::new(
                &issuer.name,
                source,
                keystore_settings(issuer),
                metrics.clone(),
            );
            tasks.push(keys.spawn_refresher());
            issuer_keys.push((issuer.issuer.clone(), keys.clone()));
            trusted.push(Arc::new(TrustedIssuer {
                config: issuer.clone(),
                keys,
            }));
        }

        let now = OffsetDateTime::now_utc();
        let algorithms = ring_algorithms(&config.targets);
        // Every file is read and checked before anything is created or connected to.
        let fixed = fixed_keys(&config)?;
        let prepared = match key_home(&config)? {
            KeyHome::Memory => PreparedRing::Ready(
                KeyRing::in_memory(&algorithms, now)
                    .context("generating in-memory signing keys")?,
            ),
            KeyHome::Files(dir) => PreparedRing::Ready(load_key_files(&dir, &algorithms, now)?),
            KeyHome::Database { url, kek } => PreparedRing::InDatabase { url, kek },
        };

        let mut remote_minters: BTreeMap<String, Arc<dyn Minter>> = BTreeMap::new();
        for target in config.targets.values() {
            if let Some(remote) = target.remote()
                && !remote.enforce_max_ttl
            {
                tracing::warn!(
                    "targets.{}: enforce_max_ttl = false: tokens living longer than max_ttl ({}) are handed out",
                    target.name,
                    crate::config::format_duration(target.max_ttl)
                );
            }
            if let TargetKindConfig::Remote(remote) = &target.kind {
                let minter = RemoteMinter::new(target, metrics.clone())
                    .map_err(|err| anyhow::anyhow!("{err}"))?;
                tracing::info!(
                    target_name = %target.name,
                    kind = remote.provider.kind(),
                    token_endpoint = %remote.token_endpoint,
                    client_id = %remote.client_id,
                    credential = %minter.client().credentials().describe(),
                    "remote target ready"
                );
                remote_minters.insert(target.name.clone(), Arc::new(minter));
            }
        }
        let (store, durable): (Arc<dyn Store>, _) = match (store, store_location(&config)) {
            (Some(store), _) => (store, None),
            (None, None) => (Arc::new(MemoryStore::new()), None),
            (None, Some(location)) => {
                let durable = Arc::new(SqlStore::open(location, metrics.clone()).await?);
                tracing::info!(
                    backend = durable.backend().name(),
                    store = %durable.location().describe(),
                    replica = %durable.replica(),
                    "audit and replay store open"
                );
                tasks.push(spawn_maintenance(
                    durable.clone(),
                    config.storage.audit_retention,
                ));
                (durable.clone(), Some(durable))
            }
        };

        // With storage.database_url the ring lives in the database (created by the first
        // replica to start), so it is loaded once the database is open.
        let (ring, database_ring) = match prepared {
            PreparedRing::Ready(ring) => (ring, None),
            PreparedRing::InDatabase { url, kek } => {
                let pool = match &durable {
                    Some(durable) if durable.backend() == Backend::Postgres => {
                        durable.pool().clone()
                    }
                    _ => connect_postgres(&url, KEY_POOL_SIZE).await?,
                };
                let stored = DatabaseRing::new(pool, kek);
                let ring = stored
                    .load_or_create(&algorithms, now)
                    .await
                    .with_context(|| {
                        format!(
                            "loading signing keys from PostgreSQL at {}",
                            Location::Postgres(url.clone()).describe()
                        )
                    })?;
                tracing::info!(
                    generation = ring.generation(),
                    key_id = stored.key_id(),
                    "signing keys loaded from the database"
                );
                (ring, Some(Arc::new(stored)))
            }
        };
        for warning in ring.warnings() {
            tracing::warn!("{warning}");
        }
        let signer = Arc::new(LocalSigner::new(ring, fixed));
        let mut targets = BTreeMap::new();
        for target in config.targets.values() {
            let minter: Arc<dyn Minter> = match &target.kind {
                TargetKindConfig::Local { algorithm, .. } => Arc::new(LocalMinter::new(
                    signer.clone(),
                    &config.server.public_url,
                    &target.name,
                    &target.audience,
                    *algorithm,
                    target.max_ttl,
                )),
                TargetKindConfig::Remote(_) => match remote_minters.remove(&target.name) {
                    Some(minter) => minter,
                    None => anyhow::bail!("targets.{}: no minter was built", target.name),
                },
            };
            targets.insert(
                target.name.clone(),
                Target {
                    config: target.clone(),
                    minter,
                },
            );
        }
        let exchanger = Arc::new(Exchanger::new(
            Verifier::new(trusted),
            policies.clone(),
            targets,
            store,
            metrics.clone(),
        ));
        match (&dev, database_ring, key_dir(&config)) {
            (Some(_), _, _) => {}
            (None, Some(stored), _) => {
                tasks.push(spawn_database_key_reloader(signer.clone(), stored));
            }
            (None, None, Some(dir)) => tasks.push(spawn_key_reloader(signer.clone(), dir)),
            (None, None, None) => {}
        }
        let reloader = match dev {
            Some(_) => None,
            None => {
                let reloader = Arc::new(PolicyReloader::new(
                    config.policies.dir.clone(),
                    PolicyContext::from_config(&config),
                    config.policies.max_stale,
                    policies,
                    metrics.clone(),
                    SwitchSource::new(&config),
                ));
                tasks.push(reloader.clone().spawn());
                Some(reloader)
            }
        };
        let state = AppState {
            exchanger,
            published: Arc::new(Published::new(&config.server.public_url, signer)),
            issuer_keys,
            metrics,
            stopping: Arc::new(AtomicBool::new(false)),
            dev,
            reloader: reloader.clone(),
        };
        Ok(Service {
            state,
            config,
            reloader,
            durable,
            _tasks: tasks,
        })
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(admin) = admin {
            let app = admin_router(self.state.clone());
            let mut rx = stop_rx.clone();
            tokio::spawn(async move {
                let result = axum::serve(admin, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .await;
                if let Err(err) = result {
                    tracing::error!(error = %err, "admin listener failed");
                }
            });
        }
        let stopping = self.state.stopping.clone();
        let app = router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stopping.store(true, Ordering::Release);
                let _ = stop_tx.send(true);
                tracing::info!("shutting down: no new connections, finishing in-flight requests");
            })
            .await
            .context("serving HTTP")?;
        drop(stop_rx);
        if let Some(durable) = &self.durable {
            // The last word of this run's chain, for `audit verify --checkpoint`.
            durable.log_checkpoint().await;
        }
        Ok(())
    }
}

pub(crate) fn keystore_settings(issuer: &IssuerConfig) -> KeystoreSettings {
    KeystoreSettings {
        fetch_timeout: issuer.jwks_fetch_timeout,
        max_body_bytes: 256 * 1024,
        refresh_interval: issuer.jwks_refresh,
        max_stale: issuer.jwks_max_stale,
        refetch_cooldown: issuer.jwks_refetch_cooldown,
    }
}

/// Where local signing keys live as files: `{data_dir}/keys`; `None` in dev mode and with
/// `storage.database_url` (then they live in the database).
pub fn key_dir(config: &Config) -> Option<PathBuf> {
    match (&config.storage.database_url, &config.storage.data_dir) {
        (None, Some(dir)) => Some(dir.join("keys")),
        _ => None,
    }
}

/// Where the ring of generated signing keys is kept.
pub enum KeyHome {
    /// Dev mode, or `storage.database_url` without a key-encryption key (no local target
    /// needs generated keys): in memory.
    Memory,
    /// The embedded store's `data_dir/keys`.
    Files(PathBuf),
    /// The database at `url`, sealed with `kek`.
    Database { url: String, kek: KeyEncryptionKey },
}

/// Where `config` keeps its generated signing keys. With the database, this reads the
/// key-encryption key file (and refuses a short or shared one), so nothing is created
/// or connected to when it is unusable.
pub fn key_home(config: &Config) -> anyhow::Result<KeyHome> {
    let storage = &config.storage;
    Ok(
        match (&storage.database_url, &storage.key_encryption_key_file) {
            (Some(url), Some(path)) => KeyHome::Database {
                url: url.clone(),
                kek: KeyEncryptionKey::read(path, "storage.key_encryption_key_file")?,
            },
            (Some(_), None) => KeyHome::Memory,
            (None, _) => match key_dir(config) {
                Some(dir) => KeyHome::Files(dir),
                None => KeyHome::Memory,
            },
        },
    )
}

/// The signing keys, before the database is open.
enum PreparedRing {
    Ready(KeyRing),
    InDatabase { url: String, kek: KeyEncryptionKey },
}

/// Algorithms that need rotated keys: those of local targets without a fixed key file.
pub fn ring_algorithms(targets: &BTreeMap<String, TargetConfig>) -> Vec<SigningAlgorithm> {
    let set: BTreeSet<SigningAlgorithm> = targets
        .values()
        .filter_map(|t| match &t.kind {
            TargetKindConfig::Local {
                algorithm,
                signing_key_file: None,
            } => Some(*algorithm),
            TargetKindConfig::Local { .. } | TargetKindConfig::Remote(_) => None,
        })
        .collect();
    set.into_iter().collect()
}

/// Added to a retired key's publication: running services notice a rotation only after
/// up to [`KEY_RELOAD_INTERVAL`], and relying parties allow some clock skew.
pub const ROTATION_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long a key that stops signing must stay published: the longest lifetime of a
/// token signed with `alg`, plus [`ROTATION_MARGIN`].
pub fn max_token_ttl(targets: &BTreeMap<String, TargetConfig>, alg: SigningAlgorithm) -> Duration {
    let longest = targets
        .values()
        .filter(|t| matches!(t.kind, TargetKindConfig::Local { algorithm, .. } if algorithm == alg))
        .map(|t| t.max_ttl)
        .max()
        .unwrap_or(Duration::from_secs(3600));
    longest + KEY_RELOAD_INTERVAL + ROTATION_MARGIN
}

fn load_key_files(
    dir: &Path,
    algorithms: &[SigningAlgorithm],
    now: OffsetDateTime,
) -> anyhow::Result<KeyRing> {
    KeyRing::load_or_create(dir, algorithms, now)
        .with_context(|| format!("loading signing keys from {}", dir.display()))
}

/// The fixed keys of targets with `signing_key_file`, by target name.
fn fixed_keys(config: &Config) -> anyhow::Result<BTreeMap<String, Arc<SigningKey>>> {
    let mut fixed = BTreeMap::new();
    for target in config.targets.values() {
        let TargetKindConfig::Local {
            algorithm,
            signing_key_file: Some(path),
        } = &target.kind
        else {
            continue;
        };
        crate::config::warn_if_readable_by_others(path);
        let pem = std::fs::read_to_string(path).with_context(|| {
            format!(
                "targets.{}.signing_key_file: reading {}",
                target.name,
                path.display()
            )
        })?;
        let key = SigningKey::from_pkcs8_pem(*algorithm, &pem).with_context(|| {
            format!(
                "targets.{}.signing_key_file: {}",
                target.name,
                path.display()
            )
        })?;
        fixed.insert(target.name.clone(), Arc::new(key));
    }
    Ok(fixed)
}

fn spawn_key_reloader(signer: Arc<LocalSigner>, dir: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(KEY_RELOAD_INTERVAL);
        interval.tick().await;
        loop {
            interval.tick().await;
            let dir = dir.clone();
            let signer = signer.clone();
            let result = tokio::task::spawn_blocking(move || signer.reload_if_changed(&dir)).await;
            match result {
                Ok(Ok(true)) => tracing::info!("signing keys reloaded after a rotation"),
                Ok(Ok(false)) => {}
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "signing keys could not be reloaded; keeping the current ones")
                }
                Err(err) => tracing::error!(error = %err, "key reload task failed"),
            }
        }
    })
}

/// Looks at the ring in the database every [`KEY_RELOAD_INTERVAL`] and swaps in a new
/// generation. A failure keeps the current keys; a lasting problem is logged once, not
/// every interval, and so is its end.
fn spawn_database_key_reloader(
    signer: Arc<LocalSigner>,
    stored: Arc<DatabaseRing>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(KEY_RELOAD_INTERVAL);
        interval.tick().await;
        let mut last_problem: Option<String> = None;
        loop {
            interval.tick().await;
            let problem = match signer.reload_from_database(&stored).await {
                Ok(KeyReload::Unchanged) => None,
                Ok(KeyReload::Reloaded { generation }) => {
                    tracing::info!(
                        generation,
                        "signing keys reloaded from the database after a change"
                    );
                    None
                }
                Ok(KeyReload::Resealed { key_id }) => {
                    let problem = format!(
                        "the signing keys in the database were resealed with another key-encryption key (key id {key_id}; this replica's is {}): this replica keeps the keys it loaded but cannot read newer rotations; point its storage.key_encryption_key_file at the new file and restart it",
                        stored.key_id()
                    );
                    if last_problem.as_ref() != Some(&problem) {
                        tracing::warn!("{problem}");
                    }
                    Some(problem)
                }
                Err(err) => {
                    let problem = err.to_string();
                    if last_problem.as_ref() != Some(&problem) {
                        tracing::error!(error = %problem, "signing keys could not be reloaded from the database; keeping the current ones");
                    }
                    Some(problem)
                }
            };
            if last_problem.is_some() && problem.is_none() {
                tracing::info!("the signing keys in the database can be read again");
            }
            last_problem = problem;
        }
    })
}
