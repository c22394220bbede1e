//! Wiring: each subcommand builds its adapters and runs.

use crate::cli::{
    ApiArgs, Cli, Command, ControllerArgs, DbArgs, DevArgs, HttpArgs, RedisArgs, SlotArgs,
    WorkerArgs,
};
use crate::client_cmd;
use anyhow::{Context, Result, bail};
use jobsched_core::ports::{Clock, Store, SystemClock, Transport};
use jobsched_core::retry::Backoff;
use jobsched_jobs::{DataDir, Registry};
use jobsched_runtime::{Runtime, RuntimeConfig};
use jobsched_store::redact;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Postgres connections say which command holds them (pg_stat_activity.application_name),
    // unless the URL or PGAPPNAME names them.
    let role = match &cli.command {
        Command::Migrate(_) => Some("migrate"),
        Command::Api(_) => Some("api"),
        Command::Worker(_) => Some("worker"),
        Command::Controller(_) => Some("controller"),
        _ => None,
    };
    if let Some(role) = role {
        jobsched_store::name_connections(&format!("jobsched-{role}"));
    }
    rt.block_on(async move {
        match cli.command {
            Command::Migrate(args) => migrate(args).await,
            Command::Api(args) => api(args).await,
            Command::Worker(args) => worker(args).await,
            Command::Dev(args) => dev(args).await,
            Command::Controller(args) => controller(args).await,
            Command::Crd { which } => {
                if which == "jobschedules" {
                    print!("{}", jobsched_controller::job_schedule_crd_yaml());
                } else {
                    print!("{}", jobsched_controller::crd_yaml());
                }
                Ok(())
            }
            Command::Submit { conn, args } => client_cmd::submit(&conn, args).await,
            Command::Jobs { conn, args } => client_cmd::jobs(&conn, args).await,
            Command::Job { conn, id } => client_cmd::job(&conn, id).await,
            Command::Cancel { conn, id } => client_cmd::cancel(&conn, id).await,
            Command::Stats { conn } => client_cmd::stats(&conn).await,
            Command::Policy {
                conn,
                name,
                quantum,
                paused,
                release_ownership,
            } => client_cmd::policy(&conn, name, quantum, paused, release_ownership).await,
            Command::Dlq { conn, cmd } => client_cmd::dlq(&conn, cmd).await,
            Command::Schedules { conn, cmd } => client_cmd::schedules(&conn, cmd).await,
            Command::Queues { conn, cmd } => client_cmd::queues(&conn, cmd).await,
            Command::Bench(args) => jobsched_bench::run(args).await.map_err(Into::into),
        }
    })
}

/// A duration setting in seconds, refused (naming the variable and its range) outside
/// `min..=max`, so no setting can overflow a `Duration` or an `Instant` later.
pub(crate) fn secs_in(name: &str, v: f64, min: f64, max: f64) -> Result<Duration> {
    if !(v.is_finite() && v >= min && v <= max) {
        bail!("{name} must be a number of seconds from {min} to {max}, got {v:?}");
    }
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("{name} must be a number of seconds from {min} to {max}"))
}

/// A TTL or interval: 0.1 s to one day.
fn secs(name: &str, v: f64) -> Result<Duration> {
    secs_in(name, v, 0.1, 86_400.0)
}

/// Cancelled on SIGTERM or Ctrl-C.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received"),
                        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        t.cancel();
    });
    token
}

async fn migrate(args: DbArgs) -> Result<()> {
    crate::logging::init("info");
    jobsched_store::migrate(&args.database_url)
        .await
        .context("migration failed")?;
    println!("migrations applied to {}", redact(&args.database_url));
    Ok(())
}

async fn connect_store(url: &str, max: u32) -> Result<Arc<dyn Store>> {
    connect_store_with(url, max, jobsched_store::DEFAULT_ACQUIRE_TIMEOUT).await
}

/// How long an API request waits for a database connection before it is answered 503. While
/// Postgres is down or unreachable the pool keeps trying to connect for this long; a client
/// is better served by a quick 503 (and `Retry-After`) than by a request that hangs. The
/// engine and workers keep the default: they retry on their own.
const API_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

async fn connect_store_with(
    url: &str,
    max: u32,
    acquire_timeout: std::time::Duration,
) -> Result<Arc<dyn Store>> {
    jobsched_store::connect_with(url, max, acquire_timeout)
        .await
        .with_context(|| format!("cannot connect to the database at {}", redact(url)))
}

async fn connect_redis(args: &RedisArgs) -> Result<Arc<dyn Transport>> {
    let t = jobsched_transport::RedisTransport::connect(&args.redis_url, &args.redis_prefix)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", redact(&args.redis_url)))?;
    Ok(Arc::new(t))
}

fn data_dir(path: &std::path::Path) -> Result<DataDir> {
    DataDir::new(path).with_context(|| {
        format!(
            "JOBSCHED_DATA_DIR {} is not usable; point it at a writable directory",
            path.display()
        )
    })
}

fn api_config(http: &HttpArgs) -> Result<jobsched_api::ApiConfig> {
    if http.body_limit < 1024 {
        bail!(
            "JOBSCHED_BODY_LIMIT must be at least 1024 bytes, got {}",
            http.body_limit
        );
    }
    if !(1024..=http.body_limit).contains(&http.max_payload) {
        bail!(
            "JOBSCHED_MAX_PAYLOAD must be from 1024 bytes to JOBSCHED_BODY_LIMIT ({}), got {}",
            http.body_limit,
            http.max_payload
        );
    }
    if !(http.body_limit..=1 << 34).contains(&http.body_budget) {
        bail!(
            "JOBSCHED_API_BODY_BUDGET must be from JOBSCHED_BODY_LIMIT ({}) to 17179869184 bytes, \
             got {}",
            http.body_limit,
            http.body_budget
        );
    }
    for (name, v) in [
        ("JOBSCHED_API_MAX_INFLIGHT", http.max_inflight),
        ("JOBSCHED_API_MAX_CONNECTIONS", http.max_connections),
    ] {
        if !(1..=1_000_000).contains(&v) {
            bail!("{name} must be from 1 to 1000000, got {v}");
        }
    }
    let request_timeout = secs_in(
        "JOBSCHED_API_REQUEST_TIMEOUT",
        http.request_timeout,
        1.0,
        3_600.0,
    )?;
    let defaults = jobsched_api::ApiConfig::default();
    Ok(jobsched_api::ApiConfig {
        max_payload: http.max_payload,
        max_inflight: http.max_inflight,
        max_connections: http.max_connections,
        body_budget: http.body_budget,
        request_timeout,
        body_timeout: request_timeout.min(defaults.body_timeout),
        header_timeout: defaults.header_timeout,
        shutdown_timeout: defaults.shutdown_timeout,
        api_token: match &http.api_token_file {
            Some(f) => client_cmd::read_token(Some(f), &[])?,
            None => http.api_token.clone().filter(|t| !t.is_empty()),
        },
        admin_token: match &http.admin_token_file {
            Some(f) => client_cmd::read_token(Some(f), &[])?,
            None => http.admin_token.clone().filter(|t| !t.is_empty()),
        },
        body_limit: http.body_limit,
    })
}

fn runtime_config(
    slots: &SlotArgs,
    worker_id: Option<String>,
    run_engine: bool,
) -> Result<RuntimeConfig> {
    let base = secs_in("JOBSCHED_BACKOFF_BASE", slots.backoff_base, 0.001, 86_400.0)?;
    let cap = secs_in("JOBSCHED_BACKOFF_CAP", slots.backoff_cap, 0.001, 86_400.0)?;
    if cap < base {
        bail!(
            "JOBSCHED_BACKOFF_CAP ({}) must not be below JOBSCHED_BACKOFF_BASE ({})",
            slots.backoff_cap,
            slots.backoff_base
        );
    }
    // 16 MiB to 64 GiB: enough for a small image, never more than a machine has.
    if !(16 << 20..=64 << 30).contains(&slots.decode_budget) {
        bail!(
            "JOBSCHED_DECODE_BUDGET must be from 16777216 (16 MiB) to 68719476736 (64 GiB) \
             bytes, got {}",
            slots.decode_budget
        );
    }
    jobsched_jobs::thumbnail::set_decode_budget(slots.decode_budget);
    if slots.prefetch > 0 {
        tracing::warn!(
            prefetch = slots.prefetch,
            "JOBSCHED_WORKER_PREFETCH / --prefetch is ignored: workers claim their own jobs for free slots"
        );
    }
    let defaults = RuntimeConfig::default();
    let cfg = RuntimeConfig {
        worker_id: worker_id.unwrap_or_else(default_worker_id),
        concurrency: slots.concurrency,
        lease_ttl: secs("JOBSCHED_LEASE_TTL", slots.lease_ttl)?,
        dispatch_ttl: secs("JOBSCHED_DISPATCH_TTL", slots.dispatch_ttl)?,
        leader_ttl: secs("JOBSCHED_LEADER_TTL", slots.leader_ttl)?,
        worker_ttl: secs("JOBSCHED_WORKER_TTL", slots.worker_ttl)?,
        backoff: Backoff { base, cap },
        shutdown_grace: secs_in(
            "JOBSCHED_SHUTDOWN_GRACE",
            slots.shutdown_grace,
            0.0,
            3_600.0,
        )?,
        run_engine,
        retention_completed: retention("JOBSCHED_RETENTION_COMPLETED", slots.retention_completed)?,
        retention_failed: retention("JOBSCHED_RETENTION_FAILED", slots.retention_failed)?,
        queues: (!slots.queues.is_empty()).then(|| {
            slots
                .queues
                .iter()
                .map(|q| q.trim().to_string())
                .filter(|q| !q.is_empty())
                .collect()
        }),
        ..defaults
    };
    cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cfg)
}

/// A retention setting: 0 keeps forever, else 60 s to ten years.
fn retention(name: &str, seconds: f64) -> Result<Option<Duration>> {
    if seconds == 0.0 {
        return Ok(None);
    }
    secs_in(
        &format!("{name} (0 keeps forever)"),
        seconds,
        60.0,
        315_360_000.0,
    )
    .map(Some)
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

async fn api(args: ApiArgs) -> Result<()> {
    crate::logging::init("info");
    let config = api_config(&args.http)?;
    let data_dir = data_dir(&args.data.data_dir)?;
    let store = connect_store_with(&args.db.database_url, 16, API_ACQUIRE_TIMEOUT).await?;
    // Each store call of a request gets a deadline: a database that stops answering (a network
    // cut) costs a client a bounded wait and a 503, not a request held until TCP gives up.
    let store: Arc<dyn Store> = Arc::new(jobsched_api::with_deadline(
        store,
        jobsched_api::STORE_DEADLINE,
    ));
    // Redis calls get a short deadline too: it only holds what can be rebuilt, and a request
    // answers from Postgres (or 503) rather than wait on it.
    let transport: Arc<dyn Transport> = Arc::new(jobsched_api::transport_with_deadline(
        connect_redis(&args.redis).await?,
        jobsched_api::TRANSPORT_DEADLINE,
    ));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (JOBSCHED_LISTEN)", args.listen))?;
    tracing::info!(listen = %args.listen, "API listening");
    let state = jobsched_api::AppState {
        store,
        transport,
        registry: Registry::builtin().with_probe_from_env(),
        data_dir,
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
        config,
    };
    let shutdown = shutdown_signal();
    let metrics = spawn_metrics_server(
        args.metrics_listen.as_deref(),
        DEFAULT_METRICS_LISTEN,
        backends_ready(&state.store, &state.transport),
        &shutdown,
    )
    .await?;
    let stop = shutdown.clone();
    jobsched_api::serve(listener, state, async move { stop.cancelled().await })
        .await
        .context("API server failed")?;
    shutdown.cancel();
    if let Some(m) = metrics {
        let _ = m.await;
    }
    Ok(())
}

async fn worker(args: WorkerArgs) -> Result<()> {
    crate::logging::init("info");
    let config = runtime_config(&args.slots, args.worker_id.clone(), !args.no_engine)?;
    let data_dir = data_dir(&args.data.data_dir)?;
    let store = connect_store(&args.db.database_url, 8).await?;
    let transport = connect_redis(&args.redis).await?;
    let rt = Runtime {
        store,
        transport,
        registry: Registry::builtin().with_probe_from_env(),
        data_dir,
        clock: Arc::new(SystemClock),
        config,
    };
    let shutdown = shutdown_signal();
    let metrics = spawn_metrics_server(
        args.metrics_listen.as_deref(),
        DEFAULT_METRICS_LISTEN,
        backends_ready(&rt.store, &rt.transport),
        &shutdown,
    )
    .await?;
    jobsched_runtime::run(rt, shutdown).await?;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    Ok(())
}

/// `/readyz`: ready while both the store and the transport answer a ping.
fn backends_ready(
    store: &Arc<dyn Store>,
    transport: &Arc<dyn Transport>,
) -> jobsched_metrics::ReadyCheck {
    let (store, transport) = (store.clone(), transport.clone());
    jobsched_metrics::ready_check(move || {
        let (store, transport) = (store.clone(), transport.clone());
        Box::pin(async move { store.ping().await.is_ok() && transport.ping().await.is_ok() })
    })
}

/// Where the metrics server listens by default (a free port on the same host when taken).
const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9090";

/// Bind the metrics server: the configured address (an error if taken), or when none is
/// configured `default`, falling back to a free port on the same host when another process
/// (a second worker on one machine) holds it.
async fn bind_metrics(
    listen: Option<&str>,
    default: &str,
) -> Result<Option<tokio::net::TcpListener>> {
    match listen {
        Some(l) if l.eq_ignore_ascii_case("off") => Ok(None),
        Some(l) => tokio::net::TcpListener::bind(l)
            .await
            .map(Some)
            .with_context(|| format!("cannot listen on {l} (JOBSCHED_METRICS_LISTEN)")),
        None => match tokio::net::TcpListener::bind(default).await {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let host = default.rsplit_once(':').map_or(default, |(h, _)| h);
                let l = tokio::net::TcpListener::bind((host, 0))
                    .await
                    .with_context(|| format!("cannot listen on a free port of {host}"))?;
                tracing::warn!(
                    taken = default,
                    listen = %l.local_addr()?,
                    "the default metrics address is taken (another jobsched on this host?); \
                     serving metrics on a free port instead (set JOBSCHED_METRICS_LISTEN to choose)"
                );
                Ok(Some(l))
            }
            Err(e) => Err(e).with_context(|| {
                format!("cannot listen on {default} (set JOBSCHED_METRICS_LISTEN)")
            }),
        },
    }
}

/// Start the `/metrics` + probes server unless the address is "off".
async fn spawn_metrics_server(
    listen: Option<&str>,
    default: &str,
    ready: jobsched_metrics::ReadyCheck,
    shutdown: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(listener) = bind_metrics(listen, default).await? else {
        return Ok(None);
    };
    let addr = listener.local_addr()?;
    tracing::info!(listen = %addr, "metrics and probes listening");
    let stop = shutdown.clone();
    Ok(Some(tokio::spawn(async move {
        if let Err(e) =
            jobsched_metrics::serve(listener, ready, async move { stop.cancelled().await }).await
        {
            tracing::error!(error = %e, "metrics server stopped");
        }
    })))
}

async fn dev(args: DevArgs) -> Result<()> {
    crate::logging::init("info");
    let url = if args.memory {
        "sqlite::memory:".to_string()
    } else {
        format!("sqlite://{}", args.db.display())
    };
    jobsched_store::migrate(&url)
        .await
        .with_context(|| format!("cannot prepare the dev database {}", args.db.display()))?;
    let store = connect_store(&url, 4).await?;
    let transport: Arc<dyn Transport> = Arc::new(jobsched_transport::MemoryTransport::new());
    let data_dir = data_dir(&args.data.data_dir)?;
    let config = runtime_config(&args.slots, Some("dev".to_string()), true)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (--listen / JOBSCHED_LISTEN)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal();
    let state = jobsched_api::AppState {
        store: store.clone(),
        transport: transport.clone(),
        registry: Registry::builtin().with_probe_from_env(),
        data_dir: data_dir.clone(),
        clock: Arc::new(SystemClock),
        config: api_config(&args.http)?,
    };
    let rt = Runtime {
        store,
        transport,
        registry: Registry::builtin().with_probe_from_env(),
        data_dir: data_dir.clone(),
        clock: Arc::new(SystemClock),
        config,
    };
    println!("jobsched dev: API on http://{addr}  docs on http://{addr}/docs");
    println!(
        "  store: {}  data dir: {}  slots: {}  (Ctrl-C to stop)",
        if args.memory {
            "in memory".to_string()
        } else {
            args.db.display().to_string()
        },
        data_dir.root().display(),
        args.slots.concurrency
    );
    let metrics = spawn_metrics_server(
        args.metrics_listen.as_deref(),
        "127.0.0.1:9090",
        jobsched_metrics::always_ready(),
        &shutdown,
    )
    .await?;
    let api_stop = shutdown.clone();
    let api = tokio::spawn(jobsched_api::serve(listener, state, async move {
        api_stop.cancelled().await
    }));
    jobsched_runtime::run(rt, shutdown).await?;
    api.await
        .context("API task failed")?
        .context("API server failed")?;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    Ok(())
}

async fn controller(args: ControllerArgs) -> Result<()> {
    crate::logging::init("info");
    let cfg = jobsched_controller::ControllerConfig {
        namespace: args.namespace,
        config_name: args.config_name,
        redis_url: args.redis.redis_url,
        redis_prefix: args.redis.redis_prefix,
        database_url: args.database_url.filter(|u| !u.is_empty()),
        requeue: secs("JOBSCHED_REQUEUE_SECONDS", args.requeue_seconds)?,
        leader_election: args.leader_election,
        lease_name: args.lease_name,
        schedule_selector: args.schedule_selector.filter(|s| !s.trim().is_empty()),
        ..jobsched_controller::ControllerConfig::default()
    };
    cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let shutdown = shutdown_signal();
    let client = jobsched_controller::client()
        .await
        .context("cannot build a Kubernetes client")?;
    // `/readyz`: ready while the Kubernetes API server answers.
    let ready = {
        let client = client.clone();
        jobsched_metrics::ready_check(move || {
            let client = client.clone();
            Box::pin(async move {
                jobsched_controller::api_server_answers(&client, Duration::from_secs(2)).await
            })
        })
    };
    let metrics = spawn_metrics_server(
        args.metrics_listen.as_deref(),
        DEFAULT_METRICS_LISTEN,
        ready,
        &shutdown,
    )
    .await?;
    jobsched_controller::run_with_client(cfg, client, shutdown.clone())
        .await
        .context("controller failed")?;
    shutdown.cancel();
    if let Some(m) = metrics {
        let _ = m.await;
    }
    Ok(())
}
