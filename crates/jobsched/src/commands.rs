//! Wiring: each subcommand builds its adapters and runs.

use crate::cli::{ApiArgs, Cli, Command, ControllerArgs, DbArgs, DevArgs, HttpArgs, WorkerArgs};
use crate::client_cmd;
use anyhow::{Context, Result, bail};
use jobsched_core::ports::{Clock, Store, SystemClock, Transport};
use jobsched_jobs::Registry;
use jobsched_runtime::Runtime;
use jobsched_store::redact;
use jobsched_worker::serve::{
    DEFAULT_METRICS_LISTEN, backends_ready, connect_redis, connect_store, connect_store_with,
    data_dir, runtime_config, secs, secs_in, shutdown_signal, spawn_metrics_server,
};
use std::sync::Arc;
use std::time::Duration;

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
            Command::JobTypes { conn } => client_cmd::job_types(&conn).await,
            Command::Logs { conn, id, attempt } => client_cmd::logs(&conn, id, attempt).await,
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

async fn migrate(args: DbArgs) -> Result<()> {
    jobsched_worker::logging::init("info");
    jobsched_store::migrate(&args.database_url)
        .await
        .context("migration failed")?;
    println!("migrations applied to {}", redact(&args.database_url));
    Ok(())
}

/// How long an API request waits for a database connection before it is answered 503. While
/// Postgres is down or unreachable the pool keeps trying to connect for this long; a client
/// is better served by a quick 503 (and `Retry-After`) than by a request that hangs. The
/// engine and workers keep the default: they retry on their own.
const API_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

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

async fn api(args: ApiArgs) -> Result<()> {
    jobsched_worker::logging::init("info");
    let config = api_config(&args.http)?;
    let data_dir = data_dir(&args.backends.data.data_dir)?;
    let store = connect_store_with(&args.backends.db.database_url, 16, API_ACQUIRE_TIMEOUT).await?;
    // Each store call of a request gets a deadline: a database that stops answering (a network
    // cut) costs a client a bounded wait and a 503, not a request held until TCP gives up.
    let store: Arc<dyn Store> = Arc::new(jobsched_api::with_deadline(
        store,
        jobsched_api::STORE_DEADLINE,
    ));
    // Redis calls get a short deadline too: it only holds what can be rebuilt, and a request
    // answers from Postgres (or 503) rather than wait on it.
    let transport: Arc<dyn Transport> = Arc::new(jobsched_api::transport_with_deadline(
        connect_redis(&args.backends.redis).await?,
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
        catalog: Default::default(),
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
    metrics.stopped().await;
    Ok(())
}

async fn worker(args: WorkerArgs) -> Result<()> {
    jobsched_worker::Worker::builtin().run(args).await?;
    Ok(())
}

async fn dev(args: DevArgs) -> Result<()> {
    jobsched_worker::logging::init("info");
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
        catalog: Default::default(),
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
    metrics.stopped().await;
    Ok(())
}

async fn controller(args: ControllerArgs) -> Result<()> {
    jobsched_worker::logging::init("info");
    let (redis_url, redis_prefix) = (args.redis.redis_url, args.redis.redis_prefix);
    let database_url = args.database_url.filter(|u| !u.is_empty());
    let cfg = jobsched_controller::ControllerConfig {
        namespace: args.namespace,
        config_name: args.config_name,
        requeue: secs("JOBSCHED_REQUEUE_SECONDS", args.requeue_seconds)?,
        leader_election: args.leader_election,
        lease_name: args.lease_name,
        schedule_selector: args.schedule_selector.filter(|s| !s.trim().is_empty()),
        ..jobsched_controller::ControllerConfig::default()
    };
    cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    // Every setting is checked before anything is connected.
    let ports = controller_ports(&redis_url, &redis_prefix, database_url.as_deref()).await?;
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
    jobsched_controller::run_with_client(cfg, ports, client, shutdown.clone())
        .await
        .context("controller failed")?;
    shutdown.cancel();
    metrics.stopped().await;
    Ok(())
}

/// The controller's ports: Redis and (with a URL) the database, each connected on first use so
/// the controller starts, and says so in the SchedulerConfig status, while either is down. A
/// Redis URL or prefix that can never work fails at once.
async fn controller_ports(
    redis_url: &str,
    redis_prefix: &str,
    database_url: Option<&str>,
) -> Result<jobsched_controller::Ports> {
    use jobsched_controller::{Ports, StorePort, TransportPort};
    use jobsched_transport::{RedisTransport, TransportError};
    let (url, prefix) = (redis_url.to_owned(), redis_prefix.to_owned());
    let connect = move || {
        let (url, prefix) = (url.clone(), prefix.clone());
        async move {
            let redis = RedisTransport::connect(&url, &prefix).await?;
            Ok(Arc::new(redis) as Arc<dyn Transport>)
        }
    };
    let transport = match RedisTransport::connect(redis_url, redis_prefix).await {
        // Connected at the first try: the controller keeps this connection.
        Ok(redis) => TransportPort::ready(Arc::new(redis)),
        Err(e @ (TransportError::InvalidUrl { .. } | TransportError::InvalidPrefix { .. })) => {
            bail!("{e}")
        }
        Err(e) => {
            tracing::warn!(error = %e, "Redis is not reachable yet; SchedulerConfig status will say RedisUnavailable until it is");
            TransportPort::connect_with(connect)
        }
    };
    let store = database_url.map(|url| {
        let url = url.to_owned();
        StorePort::connect_with(move || {
            let url = url.clone();
            async move {
                let store: Arc<dyn Store> = jobsched_store::connect(&url, 2).await?;
                Ok(store)
            }
        })
    });
    Ok(Ports { transport, store })
}

#[cfg(test)]
mod tests {
    /// A Redis URL that can never work stops the controller at start, naming the setting.
    #[tokio::test]
    async fn the_controller_refuses_an_invalid_redis_url() {
        let err = super::controller_ports("http://127.0.0.1:6379", "jobsched", None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("JOBSCHED_REDIS_URL"), "{err}");
    }
}
