//! The command line: parsing and dispatch; each command's work lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use time::OffsetDateTime;

use crate::adapters::store::sql::reader::AuditFilter;
use crate::config::{Config, ConfigSource, config_env_vars_present};
use crate::edges::audit_commands;
use crate::edges::exchange_client;
use crate::edges::metrics::Metrics;
use crate::edges::policy_commands::{
    self, CheckFormat, ExplainFormat, ExplainInput, ExplainRequest,
};
use crate::edges::service::{self, Service};
use crate::edges::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "tokenmint",
    version,
    about = "Exchange CI OIDC tokens for short-lived access tokens under audited trust policies"
)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Work with trust policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Manage the signing keys of local targets.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Query and verify the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Exchange this CI job's OIDC token for a short-lived access token and print it.
    Exchange(ExchangeArgs),
    /// Check every issuer, the policies and every target; exit 1 on any failure.
    Doctor {
        /// Configuration file (default: ./tokenmint.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Do not request tokens from remote targets (credentials are still loaded).
        #[arg(long)]
        no_mint: bool,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Configuration file (default: ./tokenmint.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, overriding server.listen.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// A self-contained local playground with a dev CI issuer; never touches real targets.
    #[arg(long)]
    dev: bool,
}

const EXCHANGE_HELP: &str = "\
The CI token is read from the first of: --token-file; the GitHub Actions runner
($ACTIONS_ID_TOKEN_REQUEST_URL and $ACTIONS_ID_TOKEN_REQUEST_TOKEN, with --oidc-audience);
$TOKENMINT_ID_TOKEN; $TFC_WORKLOAD_IDENTITY_TOKEN (HCP Terraform). Never from an argument.

stdout gets the result only; stderr names the token's source, the request id and the
access token's SHA-256 (to find the audit record: tokenmint audit show ID), never a token.

Exit status: 0 printed; 1 the exchange failed (the service's error, its description and
the request id are on stderr); 2 refused (bad usage, an --export name or a token outside
the allowed characters, http:// to a host that is not loopback, no CI token).";

#[derive(Debug, Args)]
#[command(after_help = EXCHANGE_HELP)]
struct ExchangeArgs {
    /// The service's base URL: https://, or http:// to a loopback host only.
    #[arg(long, value_name = "URL")]
    url: String,
    /// The target name, or a target's audience URL.
    #[arg(long, value_name = "T")]
    audience: String,
    /// Space-separated scopes to request (default: what the policy grants).
    #[arg(long, value_name = "S")]
    scope: Option<String>,
    /// Pin the trust policy to use.
    #[arg(long, value_name = "P")]
    policy: Option<String>,
    /// Read the CI token from this file ("-": standard input); one trailing newline is
    /// dropped.
    #[arg(long, value_name = "F")]
    token_file: Option<PathBuf>,
    /// The audience of the OIDC token requested from the GitHub Actions runner (default:
    /// --url without a trailing slash).
    #[arg(long, value_name = "A")]
    oidc_audience: Option<String>,
    /// What to print on stdout [default: env with --export, else json].
    #[arg(long, value_enum)]
    format: Option<exchange_client::Format>,
    /// The variable that --format env exports: [A-Za-z_][A-Za-z0-9_]*.
    #[arg(long, value_name = "NAME")]
    export: Option<String>,
    /// Retries after 429, 5xx and connection failures (0 to 10).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(exchange_client::MAX_RETRIES)))]
    retries: u32,
    /// Anything else: refused without being shown, as it may be a token.
    #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
    stray: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate and lint policies: load errors (TM000) and security findings (TM001…).
    Check {
        /// Configuration file (default: ./tokenmint.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also fail on warnings (such as `unbound: true` policies).
        #[arg(long)]
        strict: bool,
        /// Output format: text for people, json for scripts, sarif for code scanning.
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
        /// Policy directory (default: policies.dir from the configuration).
        dir: Option<PathBuf>,
    },
    /// Explain which policy would decide an exchange, condition by condition.
    #[command(group(clap::ArgGroup::new("input").required(true).args(["claims", "token_file", "token_stdin"])))]
    Explain {
        /// Configuration file (default: ./tokenmint.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// A JSON file of claims.
        #[arg(long, value_name = "FILE")]
        claims: Option<PathBuf>,
        /// A file holding a CI token, decoded without verification.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Read the CI token from standard input (never give a token as an argument).
        #[arg(long)]
        token_stdin: bool,
        /// The issuer name (default: the issuer whose URL is the claims' iss).
        #[arg(long)]
        issuer: Option<String>,
        /// The target name or audience URL.
        #[arg(long)]
        audience: String,
        /// Space-separated scopes to request.
        #[arg(long)]
        scope: Option<String>,
        /// Pin the policy.
        #[arg(long)]
        policy: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
        format: ExplainFormat,
        /// Policy directory (default: policies.dir from the configuration).
        dir: Option<PathBuf>,
    },
    /// Run the policy test cases in DIR/tests/*.yaml; exit 1 on any failure.
    Test {
        /// Configuration file (default: ./tokenmint.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Policy directory (default: policies.dir from the configuration).
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Promote the next signing key to current and stage a new next key.
    Rotate {
        /// Configuration file (default: ./tokenmint.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Rotate even if the next key was published for less than keys.min_publish.
        #[arg(long)]
        force: bool,
    },
    /// With storage.database_url: re-encrypt the signing keys in the database with a new
    /// key-encryption key (the configured one opens them).
    Reseal {
        /// The new key-encryption key: a file of at least 32 random bytes, mode 0600.
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        /// Configuration file (default: ./tokenmint.toml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print records: each request once, in its latest state (oldest first).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Records since a duration ago ("1h", "7d") or an RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Records until a duration ago or an RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// Only this repository (GitHub) or project path (GitLab).
        #[arg(long)]
        repository: Option<String>,
        /// Only records decided by this policy.
        #[arg(long)]
        policy: Option<String>,
        /// Only records for this target.
        #[arg(long)]
        target: Option<String>,
        /// Only requests whose latest state has this outcome.
        #[arg(long, value_parser = ["allow", "deny", "error", "pending", "doctor"])]
        outcome: Option<String>,
        /// Every record, not each request once (a remote exchange has two).
        #[arg(long)]
        records: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: audit_commands::Format,
    },
    /// Every record of a request id, a token SHA-256 or a token jti.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// Request id, token SHA-256 or jti.
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ShowFormat,
    },
    /// Walk every replica's record chain; exit 1 naming the first altered, inserted or
    /// missing record.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// The service's log (or lines of `replica seq hash`): every checkpoint in it must
        /// still be in the chain, which catches removal of the newest records.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Name the CI job behind each event of an Auth0 tenant log export (JSON array or
    /// JSON lines; "-" reads stdin).
    Correlate {
        #[command(flatten)]
        store: StoreArgs,
        file: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: ShowFormat,
    },
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Configuration file (default: ./tokenmint.toml if present); its [storage] names the
    /// store.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ShowFormat {
    Table,
    Json,
}

/// Parses the command line, runs the command, and turns errors into one line and exit 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tokenmint: {}", one_line(&err));
            ExitCode::from(1)
        }
    }
}

fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check {
            config,
            strict,
            format,
            dir,
        }) => policy_commands::check(config, strict, format, dir),
        Command::Policy(PolicyCommand::Test { config, dir }) => policy_commands::test(config, dir),
        Command::Policy(PolicyCommand::Explain {
            config,
            claims,
            token_file,
            token_stdin,
            issuer,
            audience,
            scope,
            policy,
            format,
            dir,
        }) => {
            let input = match (claims, token_file) {
                (Some(path), _) => ExplainInput::Claims(path),
                (None, Some(path)) => ExplainInput::Token(path),
                (None, None) => {
                    debug_assert!(token_stdin, "clap requires one input");
                    ExplainInput::Token(PathBuf::from("-"))
                }
            };
            policy_commands::explain_command(
                config,
                ExplainRequest {
                    input,
                    issuer,
                    audience,
                    scope,
                    policy,
                    format,
                    dir,
                },
            )
        }
        Command::Keys(KeysCommand::Rotate { config, force }) => keys_rotate(config, force),
        Command::Keys(KeysCommand::Reseal {
            new_key_file,
            config,
        }) => keys_reseal(config, &new_key_file),
        Command::Audit(command) => audit(command),
        Command::Doctor { config, no_mint } => doctor(config, no_mint),
        Command::Exchange(args) => Ok(exchange(args)),
    }
}

fn exchange(args: ExchangeArgs) -> ExitCode {
    if !args.stray.is_empty() {
        eprintln!(
            "tokenmint exchange: unexpected argument (not shown); the CI token is read from \
             --token-file or the environment, never from the command line (see --help)"
        );
        return ExitCode::from(2);
    }
    exchange_client::main(exchange_client::Options {
        url: args.url,
        audience: args.audience,
        // Empty means absent, as in the action and the sh client (`--scope "$SCOPE"`).
        scope: args.scope.filter(|scope| !scope.is_empty()),
        policy: args.policy.filter(|policy| !policy.is_empty()),
        token_file: args.token_file,
        oidc_audience: args.oidc_audience,
        format: args.format,
        export: args.export,
        retries: args.retries,
    })
}

fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    // Read before the runtime starts threads: the local offset is only known then.
    let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
    let store_args = match &command {
        AuditCommand::List { store, .. }
        | AuditCommand::Show { store, .. }
        | AuditCommand::Verify { store, .. }
        | AuditCommand::Correlate { store, .. } => store,
    };
    let config = Config::load(&ConfigSource {
        file: store_args.config.clone(),
        listen: None,
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let reader = audit_commands::open_reader(&config).await?;
        let (ok, text) = match command {
            AuditCommand::List {
                since,
                until,
                repository,
                policy,
                target,
                outcome,
                records,
                format,
                ..
            } => {
                let now = OffsetDateTime::now_utc();
                let at = |text: Option<String>| {
                    text.map(|t| audit_commands::parse_time(&t, now))
                        .transpose()
                };
                let query = audit_commands::ListQuery {
                    filter: AuditFilter {
                        since: at(since).context("--since")?,
                        until: at(until).context("--until")?,
                        repository,
                        policy,
                        target,
                    },
                    outcome,
                    every_record: records,
                };
                (
                    true,
                    audit_commands::list(&reader, &query, format, offset).await?,
                )
            }
            AuditCommand::Show { id, format, .. } => {
                let format = match format {
                    ShowFormat::Table => audit_commands::Format::Table,
                    ShowFormat::Json => audit_commands::Format::Json,
                };
                (
                    true,
                    audit_commands::show(&reader, &id, format, offset).await?,
                )
            }
            AuditCommand::Verify { checkpoint, .. } => {
                audit_commands::verify(
                    &reader,
                    checkpoint.as_deref(),
                    config.storage.audit_retention,
                )
                .await?
            }
            AuditCommand::Correlate { file, format, .. } => (
                true,
                audit_commands::correlate_file(&reader, &config, &file, format == ShowFormat::Json)
                    .await?,
            ),
        };
        print!("{text}");
        anyhow::Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = if args.dev {
        if args.config.is_some() {
            bail!("--dev cannot be combined with --config: dev mode never reads configuration");
        }
        let vars = config_env_vars_present();
        if !vars.is_empty() {
            bail!(
                "--dev refuses to start while configuration variables are set: {}",
                vars.join(", ")
            );
        }
        let listen = args
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        if !listen.ip().is_loopback() {
            bail!("--dev binds loopback addresses only; {listen} is not one");
        }
        None
    } else {
        Some(Config::load(&ConfigSource {
            file: args.config.clone(),
            listen: args.listen,
        })?)
    };
    let listen = config.as_ref().map_or_else(
        || {
            args.listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)))
        },
        |c| c.server.listen,
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let config = match config {
        Some(config) => config,
        None => crate::edges::dev::dev_config(bound)?,
    };
    let admin = match (config.dev, config.server.admin_listen) {
        (false, Some(addr)) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding server.admin_listen {addr}"))?,
        ),
        _ => None,
    };
    let metrics = Arc::new(Metrics::new());
    let service = Service::open(config, metrics).await?;
    if service.config.dev {
        let policies = service.state.exchanger.policies.load();
        let names: Vec<&str> = policies.iter().map(|policy| policy.name()).collect();
        announce_dev_mode(&service.config.server.public_url, &names);
    }
    let shutdown = shutdown_signal()?;
    tracing::info!(listen = %bound, public_url = %service.config.server.public_url, "tokenmint is serving");
    service.serve(listener, admin, shutdown).await
}

fn announce_dev_mode(public_url: &str, policies: &[&str]) {
    let banner = dev_banner(public_url, policies);
    eprintln!("{banner}");
    tracing::warn!(issuer = %format!("{public_url}/dev"), "dev mode: the dev CI issuer is on; never expose this listener");
}

/// The dev-mode banner: the issuer's URL, which policies decide, and how to try it.
fn dev_banner(public_url: &str, policies: &[&str]) -> String {
    let loaded = if policies == [crate::edges::dev::DEV_POLICY_NAME] {
        format!(
            "Policy: the built-in {} (any repository gets read write on dev-api); put dev policies in ./policies to replace it.",
            crate::edges::dev::DEV_POLICY_NAME
        )
    } else {
        format!("Policies from ./policies: {}.", policies.join(", "))
    };
    format!(
        "\n  *** DEV MODE: the dev CI issuer is ON at {public_url}/dev ***\n  \
         Anyone who can reach this address can mint CI tokens for it. State and keys are in memory.\n  \
         {loaded}\n  \
         Try:\n    curl -sS --fail-with-body -X POST {public_url}/dev/ci-token -H 'content-type: application/json' \\\n      \
         -d '{{\"repository\":\"acme/app\",\"ref\":\"refs/heads/main\"}}' | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/' \\\n      \
         | tokenmint exchange --url {public_url} --audience dev-api --token-file -\n"
    )
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled, so a signal right after start-up is never lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
    })
}

fn doctor(config: Option<PathBuf>, no_mint: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(&ConfigSource {
        file: config,
        listen: None,
    })?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // The doctor's token requests are audit records (outcome `doctor`), in the same store
    // as the service's.
    let report = runtime.block_on(async {
        let store: Arc<dyn crate::trust::store::Store> = match service::store_location(&config) {
            Some(location) => Arc::new(
                crate::adapters::store::SqlStore::open(
                    location,
                    Arc::new(crate::adapters::store::NoCommitObserver),
                )
                .await?,
            ),
            None => Arc::new(crate::adapters::store::MemoryStore::new()),
        };
        anyhow::Ok(crate::edges::doctor::run(&config, !no_mint, store).await)
    })?;
    print!("{}", report.render());
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn keys_rotate(config: Option<PathBuf>, force: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(&ConfigSource {
        file: config,
        listen: None,
    })?;
    let algorithms = service::ring_algorithms(&config.targets);
    if algorithms.is_empty() {
        // Not a failure: a cron job on a deployment with remote targets only must pass.
        println!(
            "nothing to rotate: no local target uses generated signing keys (tokenmint rotates \
             the keys of kind = \"local\" targets without signing_key_file only)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = OffsetDateTime::now_utc();
    let targets = config.targets.clone();
    let max_token_ttl = |alg| service::max_token_ttl(&targets, alg);
    let report = match service::key_home(&config)? {
        service::KeyHome::Database { url, kek } => {
            let runtime = current_thread_runtime()?;
            runtime.block_on(async {
                let stored = database_ring(&url, kek).await?;
                // Make sure every algorithm in use has keys before rotating.
                stored
                    .load_or_create(&algorithms, now)
                    .await
                    .with_context(|| keys_in(&url))?;
                stored
                    .rotate(config.keys.min_publish, force, &max_token_ttl, now)
                    .await
                    .map_err(anyhow::Error::from)
            })?
        }
        service::KeyHome::Files(dir) => {
            // Make sure every algorithm in use has keys before rotating.
            crate::adapters::signing::KeyRing::load_or_create(&dir, &algorithms, now)
                .with_context(|| format!("loading signing keys from {}", dir.display()))?;
            crate::adapters::signing::rotate(
                &dir,
                config.keys.min_publish,
                force,
                &max_token_ttl,
                now,
            )?
        }
        service::KeyHome::Memory => bail!("keys rotate needs storage.data_dir"),
    };
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// `keys reseal`: the keys in the database, opened with the configured key-encryption
/// key, sealed with the one in `new_key_file`, in one transaction.
fn keys_reseal(
    config: Option<PathBuf>,
    new_key_file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use crate::adapters::signing::KeyEncryptionKey;
    let config = Config::load(&ConfigSource {
        file: config,
        listen: None,
    })?;
    let Some(url) = config.storage.database_url.clone() else {
        bail!(
            "keys reseal re-encrypts the signing keys kept in PostgreSQL (storage.database_url); \
             with the embedded store, keys are files in data_dir (mode 0600) and nothing is sealed"
        );
    };
    let Some(current_file) = config.storage.key_encryption_key_file.clone() else {
        bail!(
            "keys reseal needs storage.key_encryption_key_file: the key the signing keys are \
             sealed with now"
        );
    };
    let current = KeyEncryptionKey::read(&current_file, "storage.key_encryption_key_file")?;
    let new = KeyEncryptionKey::read(new_key_file, "--new-key-file")?;
    if new.id() == current.id() {
        bail!(
            "--new-key-file {} holds the same key as storage.key_encryption_key_file (key id {}): \
             nothing to reseal; make a new one with `(umask 077 && head -c 32 /dev/urandom > FILE)`",
            new_key_file.display(),
            new.id()
        );
    }
    let runtime = current_thread_runtime()?;
    let report = runtime.block_on(async {
        let stored = database_ring(&url, current).await?;
        match stored.reseal(&new, OffsetDateTime::now_utc()).await {
            Err(crate::adapters::signing::KeyError::StoredMissing) => bail!(
                "there are no signing keys in PostgreSQL at {} yet, so nothing to reseal: give \
                 the replicas the new file as storage.key_encryption_key_file before they start",
                crate::adapters::store::Location::Postgres(url.clone()).describe()
            ),
            result => result.with_context(|| keys_in(&url)),
        }
    })?;
    let new_file = new_key_file.display();
    if report.already {
        println!(
            "the signing keys (generation {}) are already sealed with the key in {new_file} \
             (key id {}); nothing was written",
            report.generation, report.new_key_id
        );
    } else {
        println!(
            "resealed the signing keys (generation {}) with the key in {new_file}: key id {} \
             (was {})",
            report.generation, report.new_key_id, report.old_key_id
        );
    }
    println!(
        "next: set storage.key_encryption_key_file = \"{new_file}\" in every replica's \
         configuration and restart the replicas one by one. Until it restarts, a replica keeps \
         signing with the keys it loaded and logs that it cannot read newer rotations, so rotate \
         only once every replica runs with the new file. Then destroy the old key file ({}) and \
         any copy of it.",
        current_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The signing keys in the database at `url`, sealed with `kek`; connects (and migrates)
/// without registering an audit chain.
async fn database_ring(
    url: &str,
    kek: crate::adapters::signing::KeyEncryptionKey,
) -> anyhow::Result<crate::adapters::signing::DatabaseRing> {
    let pool = crate::adapters::store::connect_postgres(url, service::KEY_POOL_SIZE).await?;
    Ok(crate::adapters::signing::DatabaseRing::new(pool, kek))
}

fn keys_in(url: &str) -> String {
    format!(
        "the signing keys in PostgreSQL at {}",
        crate::adapters::store::Location::Postgres(url.to_owned()).describe()
    )
}

#[cfg(test)]
mod tests {
    use super::dev_banner;

    #[test]
    fn the_dev_banner_says_which_policies_decide() {
        let built_in = dev_banner("http://127.0.0.1:8080", &["dev-any-repository"]);
        assert!(
            built_in.contains("\n  Policy: the built-in dev-any-repository (any repository gets read write on dev-api); put dev policies in ./policies to replace it.\n"),
            "{built_in}"
        );
        let own = dev_banner("http://127.0.0.1:8080", &["dev-main", "dev-tags"]);
        assert!(
            own.contains("\n  Policies from ./policies: dev-main, dev-tags.\n"),
            "{own}"
        );
    }
}
