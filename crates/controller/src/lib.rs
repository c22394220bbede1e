//! jobsched-controller: the Kubernetes controller that lets a `SchedulerConfig` custom resource
//! (`jobsched.io/v1alpha1`, short name `schedcfg`) choose jobsched's scheduling policy and queue
//! settings, and `JobSchedule` resources (short name `jobsch`) declare periodic jobs.
//!
//! # Reconcile flow
//!
//! Each installation follows exactly one object, `ControllerConfig::config_name` in
//! `ControllerConfig::namespace`. When that object is reconciled, the controller builds
//! [`PolicySettings`](jobsched_core::PolicySettings) from its spec with
//! `managed_by = "<namespace>/<name>"` and writes it through `jobsched_core::queue::sync`: the
//! durable copy in Postgres first (when the binary handed it a store port), then `{prefix}:policy`
//! in Redis (which also publishes `PolicyChanged`, so the engine switches within milliseconds),
//! each only when it differs. The binary hands the controller its [`Ports`], each connected on
//! first use; the controller never connects by URL itself. It patches the status (`observedGeneration`, `activePolicy`, `lastAppliedTime`,
//! condition `Ready=True/Applied`) only when the status would change, and publishes a Kubernetes
//! Event `PolicyChanged` only when the effective policy (policy, quantum, paused) changed. The
//! object is re-reconciled every `requeue` (default 60 s), so a flushed Redis or a stray write
//! is corrected (level-triggered). If Redis cannot be written the condition becomes
//! `Ready=False/RedisUnavailable` with the error as message and the object is retried with
//! per-object exponential backoff (1 s doubling, at most 60 s); a failing durable copy gives
//! `StoreUnavailable` the same way. The controller watches only its own object (a
//! `metadata.name` field selector), so other installations' `SchedulerConfig`s in the same
//! namespace are never read or written: several releases share a namespace without fighting.
//!
//! # Ownership between the REST API and the CRD
//!
//! While the selected object exists, the settings carry `managed_by = "<namespace>/<name>"` and
//! the REST API refuses to change the policy; any change made around it is overwritten at the
//! next reconcile. Deleting the object keeps the last applied policy in place (jobs keep being
//! scheduled the same way) but releases ownership: the controller notices the object is gone
//! (within a second from its watch cache, and on every `requeue` tick, which also covers
//! deletions while the controller was down) and rewrites the settings with `managed_by`
//! cleared, only where it still names this object. No finalizer is used, so deleting the object
//! never blocks. A leader that is stopping asks the API server once more and releases ownership
//! if its object is gone (an uninstall removes both together, and no controller would be left
//! to notice). After that the REST API may change the policy again until a selected object is
//! created; should ownership ever be stranded, an admin clears it with
//! `DELETE /scheduler/policy/owner`.
//!
//! # JobSchedules (periodic jobs as resources)
//!
//! With a database URL the leader also follows the `JobSchedule` objects of its namespace (or
//! those matching `schedule_selector`): each becomes the scheduler's schedule of the same name
//! with `managed_by = "<namespace>/<name>"`, written only when what it asks for changed (so its
//! fire history and next fire time stay), and the REST API refuses to change or delete such a
//! schedule. The status carries `nextFireTime`, `lastFireTime`, `lastJobId` and `Ready`; the
//! object is reconciled again soon after each fire time so the status follows. A spec that
//! does not parse (cron, time zone, a template field out of range) is `Ready=False/InvalidSpec`
//! naming the field, with one Warning event per generation. Schedules owned by a JobSchedule
//! that no longer exists (deleted, also while no controller ran) are deleted every few seconds
//! once the watch cache is complete.
//!
//! # Leader election
//!
//! With `leader_election` (the default) replicas compete for the `coordination.k8s.io/v1` Lease
//! `lease_name`; only the holder runs the controller and writes. The holder renews every
//! `lease_ttl / 3` and stops leading if it could not renew for `2/3 * lease_ttl`; on shutdown
//! it stops the controller gracefully and releases the lease so the other replica takes over
//! at once. `jobsched_leader{role="controller"}` is 1 while leading.
//!
//! # RBAC (least privilege, namespaced Role; see `deploy/rbac-controller.yaml`)
//!
//! | API group | resource | verbs |
//! | --- | --- | --- |
//! | `jobsched.io` | `schedulerconfigs` | get, list, watch |
//! | `jobsched.io` | `schedulerconfigs/status` | patch |
//! | `jobsched.io` | `jobschedules` | get, list, watch |
//! | `jobsched.io` | `jobschedules/status` | patch |
//! | `events.k8s.io` | `events` | create |
//! | `coordination.k8s.io` | `leases` | get, update (its own Lease only, by `resourceNames`); create |
//!
//! # Metrics (process-wide default registry)
//!
//! `jobsched_controller_reconciles_total{result}`, `jobsched_controller_reconcile_errors_total{reason}`,
//! `jobsched_controller_reconcile_duration_seconds` and `jobsched_leader{role="controller"}`.

mod crd;
mod error;
mod leader;
mod metrics;
mod port;
mod reconcile;
mod schedule_crd;
mod schedules;
#[cfg(test)]
mod tests;

pub use crd::{
    Condition, GROUP, RoundRobinSpec, SchedulerConfig, SchedulerConfigSpec, SchedulerConfigStatus,
    VERSION, crd_yaml,
};
pub use error::ControllerError;
pub use port::{Ports, StorePort, TransportPort};
pub use reconcile::{
    EVENT_POLICY_CHANGED, FIELD_MANAGER, READY, REASON_APPLIED, REASON_INVALID_SPEC,
    REASON_REDIS_UNAVAILABLE, REASON_STORE_UNAVAILABLE,
};
pub use schedule_crd::{
    JobSchedule, JobScheduleSpec, JobScheduleStatus, JobTemplate, job_schedule_crd_yaml,
};

use futures::StreamExt;
use jobsched_core::ports::SystemClock;
use kube::runtime::controller::Controller;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use leader::LeaseLock;
use reconcile::{Context, error_policy, reconcile};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Namespace watched (and where the Lease lives). Default `default`.
    pub namespace: String,
    /// The one `SchedulerConfig` this installation follows. Default `jobsched`.
    pub config_name: String,
    /// Period of the level-triggered re-assert. Default 60 s.
    pub requeue: Duration,
    /// Compete for a Lease so only one replica writes. Default true.
    pub leader_election: bool,
    /// Name of the Lease. Default `jobsched-controller`.
    pub lease_name: String,
    /// This replica's identity in the Lease (unique per replica). Default `$HOSTNAME` (the pod
    /// name), else `jobsched-controller-<pid>`.
    pub identity: String,
    /// Lease duration; renewed every third of it. Default 15 s.
    pub lease_ttl: Duration,
    /// Only the `JobSchedule`s with these labels (a Kubernetes label selector, e.g.
    /// `app.kubernetes.io/instance=prod`); `None`: every one in the namespace. JobSchedules are
    /// followed only with a store port (the schedules live in the database).
    pub schedule_selector: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            namespace: "default".into(),
            config_name: "jobsched".into(),
            requeue: Duration::from_secs(60),
            leader_election: true,
            lease_name: "jobsched-controller".into(),
            identity: std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| format!("jobsched-controller-{}", std::process::id())),
            lease_ttl: Duration::from_secs(15),
            schedule_selector: None,
        }
    }
}

impl ControllerConfig {
    /// `namespace/config_name`, the value written as `managed_by`.
    pub fn managed_by(&self) -> String {
        format!("{}/{}", self.namespace, self.config_name)
    }

    /// Check the settings; the error names the bad one.
    pub fn validate(&self) -> Result<(), ControllerError> {
        let bad = |field, message: &str| {
            Err(ControllerError::Config {
                field,
                message: message.to_string(),
            })
        };
        if !is_dns_name(&self.namespace) {
            return bad(
                "namespace",
                "must be a Kubernetes namespace name (lowercase letters, digits and '-')",
            );
        }
        if !is_dns_name(&self.config_name) {
            return bad(
                "config_name",
                "must be a Kubernetes object name (lowercase letters, digits, '-' and '.')",
            );
        }
        if self.requeue.is_zero() {
            return bad("requeue", "must be longer than zero, e.g. 60s");
        }
        if self.leader_election {
            if !is_dns_name(&self.lease_name) {
                return bad("lease_name", "must be a Kubernetes object name");
            }
            if self.identity.trim().is_empty() {
                return bad(
                    "identity",
                    "must be non-empty and unique per replica (e.g. the pod name)",
                );
            }
            if self.lease_ttl < Duration::from_secs(1) {
                return bad("lease_ttl", "must be at least 1s (15s is typical)");
            }
        }
        Ok(())
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Run the controller with a Kubernetes client from the environment (in-cluster service
/// account or `KUBECONFIG`) until `shutdown` is cancelled.
pub async fn run(
    cfg: ControllerConfig,
    ports: Ports,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    run_with_client(cfg, ports, client().await?, shutdown).await
}

/// A Kubernetes client from the environment (in-cluster service account or `KUBECONFIG`).
pub async fn client() -> Result<Client, ControllerError> {
    Client::try_default()
        .await
        .map_err(|source| ControllerError::KubeClient { source })
}

/// Whether the API server answers (`GET /version`) within `within`: the controller's
/// readiness, since it can neither watch nor write status without it.
pub async fn api_server_answers(client: &Client, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, client.apiserver_version()).await,
        Ok(Ok(_))
    )
}

/// [`run`] with a given client (tests, or a custom `kube::Config`).
pub async fn run_with_client(
    cfg: ControllerConfig,
    ports: Ports,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    cfg.validate()?;
    let leader = &metrics::metrics().leader;
    if !cfg.leader_election {
        leader.set(1);
        let result = lead(cfg, ports, client, shutdown).await;
        leader.set(0);
        return result;
    }
    let leases = Api::namespaced(client.clone(), &cfg.namespace);
    let mut lock = LeaseLock::new(leases, &cfg.lease_name, &cfg.identity, cfg.lease_ttl);
    let retry = cfg.lease_ttl / 3;
    let renew_deadline = cfg.lease_ttl * 2 / 3;
    loop {
        // Wait to become the leader.
        loop {
            match lock.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(retry) => {}
            }
        }
        tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "became the controller leader");
        leader.set(1);
        let leading = shutdown.child_token();
        let mut task = tokio::spawn(lead(
            cfg.clone(),
            ports.clone(),
            client.clone(),
            leading.clone(),
        ));
        let mut renewed = Instant::now();
        let outcome = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Outcome::Shutdown,
                joined = &mut task => break Outcome::Exited(joined),
                () = tokio::time::sleep(retry) => match lock.try_acquire_or_renew().await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => break Outcome::Lost,
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the leader lease failed");
                        if renewed.elapsed() >= renew_deadline {
                            break Outcome::Lost;
                        }
                    }
                },
            }
        };
        leading.cancel();
        let (result, lost) = match outcome {
            Outcome::Exited(joined) => (joined, false),
            Outcome::Shutdown => (task.await, false),
            Outcome::Lost => (task.await, true),
        };
        leader.set(0);
        let result = match result {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        };
        if lost && result.is_ok() && !shutdown.is_cancelled() {
            tracing::warn!(identity = %cfg.identity, "lost the controller leader lease; stopped writing and competing again");
            continue;
        }
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "could not release the leader lease (it expires by itself)");
        }
        return result;
    }
}

enum Outcome {
    Shutdown,
    Lost,
    Exited(Result<Result<(), ControllerError>, tokio::task::JoinError>),
}

/// Run the kube `Controller` (and the ownership-release loop) until `token` is cancelled.
async fn lead(
    cfg: ControllerConfig,
    ports: Ports,
    client: Client,
    token: CancellationToken,
) -> Result<(), ControllerError> {
    let ctx = Arc::new(Context {
        client: client.clone(),
        namespace: cfg.namespace.clone(),
        config_name: cfg.config_name.clone(),
        managed_by: cfg.managed_by(),
        redis: ports.transport,
        store: ports.store,
        reporter: Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(cfg.identity.clone()),
        },
        requeue: cfg.requeue,
        clock: Arc::new(SystemClock),
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        failures: Mutex::new(HashMap::new()),
    });
    let api: Api<SchedulerConfig> = Api::namespaced(client, &cfg.namespace);
    // Only its own object: another installation's SchedulerConfig in the same namespace is
    // never seen, so two releases never touch each other's objects.
    let controller = Controller::new(api, watch_config(&cfg.config_name));
    let reader = controller.store();
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    let stop_token = token.clone();
    tokio::spawn(async move {
        stop_token.cancelled().await;
        let _ = stop_tx.send(());
    });
    let controller = controller
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {} // logged by error_policy
                Err(e) => tracing::warn!(
                    error = %e,
                    cause = ?std::error::Error::source(&e).map(ToString::to_string),
                    "SchedulerConfig watch failed; retrying (is the CRD installed and RBAC applied?)"
                ),
            }
        });
    let schedules = follow_job_schedules(&cfg, ctx.clone(), token.clone());
    tokio::join!(
        controller,
        release_when_orphaned(ctx, reader, token),
        schedules
    );
    Ok(())
}

/// With a database: run the `JobSchedule` controller and the deletion of schedules whose
/// object is gone until `token` is cancelled (see [`schedules`]).
async fn follow_job_schedules(cfg: &ControllerConfig, ctx: Arc<Context>, token: CancellationToken) {
    if ctx.store.is_none() {
        return;
    }
    let api: Api<JobSchedule> = Api::namespaced(ctx.client.clone(), &cfg.namespace);
    let mut watch = watcher::Config::default();
    if let Some(selector) = &cfg.schedule_selector {
        watch = watch.labels(selector);
    }
    let controller = Controller::new(api, watch);
    let reader = controller.store();
    let stop = token.clone();
    let run = controller
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "JobSchedule watch failed; retrying (is the jobschedules CRD installed and RBAC applied?)"
                ),
            }
        });
    tokio::join!(run, schedules::delete_orphans(ctx, reader, token));
}

/// The watch of the one selected object (`fieldSelector=metadata.name=<name>`).
pub(crate) fn watch_config(config_name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={config_name}"))
}

/// How often the in-memory cache is checked for the selected object's deletion.
const ORPHAN_POLL: Duration = Duration::from_secs(1);

/// While leading: when the selected object is absent (just deleted, or deleted before this
/// process started), release ownership of the settings (see the crate docs). The check reads
/// the controller's in-memory cache every second, and Redis only when the object has just
/// disappeared or once per `requeue` while it stays absent.
async fn release_when_orphaned(
    ctx: Arc<Context>,
    reader: Store<SchedulerConfig>,
    token: CancellationToken,
) {
    tokio::select! {
        () = token.cancelled() => {
            release_if_gone(&ctx).await;
            return;
        }
        ready = reader.wait_until_ready() => if ready.is_err() { return },
    }
    let key = ObjectRef::<SchedulerConfig>::new(&ctx.config_name).within(&ctx.namespace);
    let mut present = true;
    let mut next_check = Instant::now();
    loop {
        if reader.get(&key).is_some() {
            present = true;
        } else if present || Instant::now() >= next_check {
            match ctx.release_ownership().await {
                Ok(released) => {
                    if released {
                        tracing::info!(
                            object = %ctx.managed_by,
                            "SchedulerConfig is gone: kept the last policy and released ownership to the REST API"
                        );
                    }
                    present = false;
                    next_check = Instant::now() + ctx.requeue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not release policy ownership; retrying");
                    present = false;
                    next_check = Instant::now() + ctx.requeue.min(Duration::from_secs(5));
                }
            }
        }
        tokio::select! {
            () = token.cancelled() => {
                release_if_gone(&ctx).await;
                return;
            }
            () = tokio::time::sleep(ORPHAN_POLL) => {}
        }
    }
}

/// On shutdown: when the API server says the selected object is gone (the cache may not have
/// seen the deletion yet), release ownership now. No controller may be left to notice it later:
/// an uninstall removes the object and this Deployment together. Returns whether it released.
pub(crate) async fn release_if_gone(ctx: &Context) -> bool {
    let api: Api<SchedulerConfig> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    match tokio::time::timeout(SHUTDOWN_CHECK, api.get_opt(&ctx.config_name)).await {
        Ok(Ok(None)) => match ctx.release_ownership().await {
            Ok(released) => {
                if released {
                    tracing::info!(
                        object = %ctx.managed_by,
                        "shutting down and the SchedulerConfig is gone: released ownership to the REST API"
                    );
                }
                released
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not release policy ownership on shutdown; an admin can with `jobsched policy --release-ownership`");
                false
            }
        },
        Ok(Ok(Some(_))) => false,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot tell on shutdown whether the SchedulerConfig still exists");
            false
        }
        Err(_) => {
            tracing::warn!("the API server did not answer on shutdown; ownership is kept");
            false
        }
    }
}

/// How long the shutdown check may wait for the API server.
const SHUTDOWN_CHECK: Duration = Duration::from_secs(3);

/// Register the controller's metrics in the default registry now (they are otherwise
/// registered on first use), so `/metrics` and dashboard checks see them from the start.
pub fn register_metrics() {
    let _ = metrics::metrics();
}
