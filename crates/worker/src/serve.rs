//! What every jobsched process does around its work: read and check its settings, connect to
//! the store and Redis, serve `/metrics` and the probes, stop on SIGTERM.

use crate::WorkerError;
use crate::args::{RedisArgs, SlotArgs};
use jobsched_core::ports::{Store, Transport};
use jobsched_core::retry::Backoff;
use jobsched_jobs::DataDir;
use jobsched_runtime::RuntimeConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Result<T> = std::result::Result<T, WorkerError>;

/// Where the metrics server listens by default (a free port on the same host when taken).
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9090";

/// A duration setting in seconds, refused (naming the variable and its range) outside
/// `min..=max`, so no setting can overflow a `Duration` or an `Instant` later.
pub fn secs_in(name: &str, v: f64, min: f64, max: f64) -> Result<Duration> {
    if !(v.is_finite() && v >= min && v <= max) {
        return Err(WorkerError::Config(format!(
            "{name} must be a number of seconds from {min} to {max}, got {v:?}"
        )));
    }
    Duration::try_from_secs_f64(v).map_err(|_| {
        WorkerError::Config(format!(
            "{name} must be a number of seconds from {min} to {max}"
        ))
    })
}

/// A TTL or interval: 0.1 s to one day.
pub fn secs(name: &str, v: f64) -> Result<Duration> {
    secs_in(name, v, 0.1, 86_400.0)
}

/// Cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> CancellationToken {
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

/// Connect to the store at `url` with at most `max` connections.
pub async fn connect_store(url: &str, max: u32) -> Result<Arc<dyn Store>> {
    connect_store_with(url, max, jobsched_store::DEFAULT_ACQUIRE_TIMEOUT).await
}

/// [`connect_store`] with how long a call waits for a free connection.
pub async fn connect_store_with(
    url: &str,
    max: u32,
    acquire_timeout: Duration,
) -> Result<Arc<dyn Store>> {
    jobsched_store::connect_with(url, max, acquire_timeout)
        .await
        .map_err(|e| {
            WorkerError::setup(
                format!(
                    "cannot connect to the database at {}",
                    jobsched_store::redact(url)
                ),
                e,
            )
        })
}

/// Connect to Redis.
pub async fn connect_redis(args: &RedisArgs) -> Result<Arc<dyn Transport>> {
    let t = jobsched_transport::RedisTransport::connect(&args.redis_url, &args.redis_prefix)
        .await
        .map_err(|e| {
            WorkerError::setup(
                format!(
                    "cannot connect to Redis at {}",
                    jobsched_store::redact(&args.redis_url)
                ),
                e,
            )
        })?;
    Ok(Arc::new(t))
}

/// The data dir, or an error naming `JOBSCHED_DATA_DIR`.
pub fn data_dir(path: &std::path::Path) -> Result<DataDir> {
    DataDir::new(path).map_err(|e| {
        WorkerError::setup(
            format!(
                "JOBSCHED_DATA_DIR {} is not usable; point it at a writable directory",
                path.display()
            ),
            e,
        )
    })
}

/// The runtime settings from the slot flags, each checked (the error names the variable).
pub fn runtime_config(
    slots: &SlotArgs,
    worker_id: Option<String>,
    run_engine: bool,
) -> Result<RuntimeConfig> {
    let base = secs_in("JOBSCHED_BACKOFF_BASE", slots.backoff_base, 0.001, 86_400.0)?;
    let cap = secs_in("JOBSCHED_BACKOFF_CAP", slots.backoff_cap, 0.001, 86_400.0)?;
    if cap < base {
        return Err(WorkerError::Config(format!(
            "JOBSCHED_BACKOFF_CAP ({}) must not be below JOBSCHED_BACKOFF_BASE ({})",
            slots.backoff_cap, slots.backoff_base
        )));
    }
    // 16 MiB to 64 GiB: enough for a small image, never more than a machine has.
    if !(16 << 20..=64 << 30).contains(&slots.decode_budget) {
        return Err(WorkerError::Config(format!(
            "JOBSCHED_DECODE_BUDGET must be from 16777216 (16 MiB) to 68719476736 (64 GiB) \
             bytes, got {}",
            slots.decode_budget
        )));
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
    cfg.validate()
        .map_err(|e| WorkerError::Config(e.to_string()))?;
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

/// `<hostname>-<8 hex digits>`: unique per process.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// `/readyz`: ready while both the store and the transport answer a ping.
pub fn backends_ready(
    store: &Arc<dyn Store>,
    transport: &Arc<dyn Transport>,
) -> jobsched_metrics::ReadyCheck {
    let (store, transport) = (store.clone(), transport.clone());
    jobsched_metrics::ready_check(move || {
        let (store, transport) = (store.clone(), transport.clone());
        Box::pin(async move { store.ping().await.is_ok() && transport.ping().await.is_ok() })
    })
}

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
            .map_err(|e| {
                WorkerError::setup(format!("cannot listen on {l} (JOBSCHED_METRICS_LISTEN)"), e)
            }),
        None => match tokio::net::TcpListener::bind(default).await {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let host = default.rsplit_once(':').map_or(default, |(h, _)| h);
                let l = tokio::net::TcpListener::bind((host, 0))
                    .await
                    .map_err(|e| {
                        WorkerError::setup(format!("cannot listen on a free port of {host}"), e)
                    })?;
                let addr = l
                    .local_addr()
                    .map_err(|e| WorkerError::setup("cannot read the metrics address", e))?;
                tracing::warn!(
                    taken = default,
                    listen = %addr,
                    "the default metrics address is taken (another jobsched on this host?); \
                     serving metrics on a free port instead (set JOBSCHED_METRICS_LISTEN to choose)"
                );
                Ok(Some(l))
            }
            Err(e) => Err(WorkerError::setup(
                format!("cannot listen on {default} (set JOBSCHED_METRICS_LISTEN)"),
                e,
            )),
        },
    }
}

/// Start the `/metrics` + probes server unless the address is "off".
pub async fn spawn_metrics_server(
    listen: Option<&str>,
    default: &str,
    ready: jobsched_metrics::ReadyCheck,
    shutdown: &CancellationToken,
) -> Result<MetricsServer> {
    let Some(listener) = bind_metrics(listen, default).await? else {
        return Ok(MetricsServer(None));
    };
    let addr = listener
        .local_addr()
        .map_err(|e| WorkerError::setup("cannot read the metrics address", e))?;
    tracing::info!(listen = %addr, "metrics and probes listening");
    let stop = shutdown.clone();
    Ok(MetricsServer(Some(tokio::spawn(async move {
        if let Err(e) =
            jobsched_metrics::serve(listener, ready, async move { stop.cancelled().await }).await
        {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))))
}

/// The metrics and probe server [`spawn_metrics_server`] started (or none, when disabled).
#[derive(Debug)]
pub struct MetricsServer(Option<tokio::task::JoinHandle<()>>);

impl MetricsServer {
    /// Wait until it has stopped (after the shutdown token it was given was cancelled).
    pub async fn stopped(self) {
        if let Some(task) = self.0 {
            let _ = task.await;
        }
    }
}
