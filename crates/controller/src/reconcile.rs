//! The reconciler: from a `SchedulerConfig` to the scheduler's policy settings and back to the
//! object's status.

use crate::crd::{Condition, SchedulerConfig, SchedulerConfigStatus};
use crate::error::ControllerError;
use crate::metrics::metrics;
use crate::port::{StorePort, TransportPort};
use chrono::SecondsFormat;
use jobsched_core::PolicySettings;
use jobsched_core::ports::{Clock, ControlStore, Store};
use jobsched_core::queue::{self, Side, SideError, Synced};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The condition type the controller maintains.
pub const READY: &str = "Ready";
/// Ready=True: the spec is in effect.
pub const REASON_APPLIED: &str = "Applied";
/// Ready=False: Redis could not be written; retried with backoff.
pub const REASON_REDIS_UNAVAILABLE: &str = "RedisUnavailable";
/// Ready=False: the durable copy could not be saved; retried with backoff.
pub const REASON_STORE_UNAVAILABLE: &str = "StoreUnavailable";
/// Ready=False: the spec fails validation (only without the generated CRD schema).
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Reason of the Kubernetes Event published when the applied policy changes.
pub const EVENT_POLICY_CHANGED: &str = "PolicyChanged";
/// Field manager and reporting controller name.
pub const FIELD_MANAGER: &str = "jobsched-controller";

/// Everything a reconciliation needs.
pub(crate) struct Context {
    pub client: Client,
    pub namespace: String,
    pub config_name: String,
    /// `namespace/name` of the selected object, written as `managed_by`.
    pub managed_by: String,
    pub redis: TransportPort,
    pub store: Option<StorePort>,
    /// Who publishes the Events (a fresh [`Recorder`] is used per event; see `publish`).
    pub reporter: Reporter,
    pub requeue: Duration,
    pub clock: Arc<dyn Clock>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Consecutive failures per object (`namespace/name`).
    pub failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    fn now(&self) -> String {
        self.clock.now().to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// The next error requeue delay for `key`: `base * 2^failures`, at most `backoff_max`.
    pub(crate) fn next_backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        let delay = self
            .backoff_base
            .saturating_mul(1u32 << (*n).min(20))
            .min(self.backoff_max);
        *n = n.saturating_add(1);
        delay
    }

    pub(crate) fn reset_backoff(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// The durable store, when the controller has one.
    async fn durable(&self) -> Result<Option<Arc<dyn Store>>, ControllerError> {
        match &self.store {
            Some(s) => Ok(Some(s.get().await?)),
            None => Ok(None),
        }
    }

    /// Make queue `name`'s settings `desired` in both copies (durable first), each written
    /// only where it differs.
    async fn sync(&self, name: &str, desired: &PolicySettings) -> Result<Synced, ControllerError> {
        // The store first: with Redis down the durable copy is still written.
        let store = self.durable().await?;
        let transport = self.redis.get().await?;
        let durable = store.as_deref().map(|s| s as &dyn ControlStore);
        queue::sync(durable, &*transport, name, desired)
            .await
            .map_err(side_error)
    }

    /// Apply `spec.queues[]`: each listed queue's settings ([`queue::sync`]), and hand back to
    /// the REST API (clear `managed_by`, keep the settings) every queue this object owned that
    /// it no longer lists. Returns the queues written.
    pub(crate) async fn apply_queues(
        &self,
        desired: &[(String, PolicySettings)],
    ) -> Result<Vec<String>, ControllerError> {
        let store = self.durable().await?;
        let transport = self.redis.get().await?;
        let durable = store.as_deref().map(|s| s as &dyn ControlStore);
        // The queues this object owns in either copy (read once): the ones it no longer lists
        // are released below.
        let mut owned: Vec<(String, PolicySettings)> = match &store {
            Some(store) => store
                .queues()
                .await
                .map_err(|source| ControllerError::Store { source })?,
            None => Vec::new(),
        };
        owned.extend(
            transport
                .queues()
                .await
                .map_err(|source| ControllerError::Redis { source })?,
        );
        let mut known: Vec<String> = owned
            .into_iter()
            .filter(|(_, s)| s.managed_by.as_deref() == Some(self.managed_by.as_str()))
            .map(|(name, _)| name)
            .collect();
        let mut written = Vec::new();
        for (name, want) in desired {
            if queue::sync(durable, &*transport, name, want)
                .await
                .map_err(side_error)?
                .wrote
            {
                written.push(name.clone());
            }
        }
        known.sort();
        known.dedup();
        for name in known
            .iter()
            .filter(|n| !desired.iter().any(|(d, _)| d == *n))
        {
            if name != queue::DEFAULT_QUEUE
                && queue::release(durable, &*transport, name, Some(&self.managed_by))
                    .await
                    .map_err(side_error)?
                    .is_some()
            {
                written.push(name.clone());
            }
        }
        Ok(written)
    }

    /// Merge-patch `status` into `obj`'s status subresource (as `op`), unless `obj` already
    /// shows it.
    pub(crate) async fn patch_status<K>(
        &self,
        obj: &K,
        status: K::Status,
        op: &'static str,
    ) -> Result<(), ControllerError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + HasStatus,
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        K::Status: PartialEq + serde::Serialize,
    {
        if obj.status() == Some(&status) {
            return Ok(());
        }
        let ns = obj.namespace().unwrap_or_else(|| self.namespace.clone());
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let patch = serde_json::json!({ "status": status });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch_status(&obj.name_any(), &params, &Patch::Merge(&patch))
            .await
            .map_err(ControllerError::kube(op))?;
        Ok(())
    }

    /// Publish a `Warning` event `InvalidSpec` about `object` with `err` as its note (failures
    /// are logged: events are informational).
    pub(crate) async fn warn_invalid_spec(
        &self,
        object: &k8s_openapi::api::core::v1::ObjectReference,
        err: &ControllerError,
    ) {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: REASON_INVALID_SPEC.into(),
            note: Some(err.to_string()),
            action: "ValidateSpec".into(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, object).await {
            tracing::warn!(error = %e, "could not publish the InvalidSpec warning event");
        }
    }

    /// Clear `managed_by` (keeping the policy) where it still names the selected object, so the
    /// REST API may change the policy again. Returns whether anything was released.
    pub(crate) async fn release_ownership(&self) -> Result<bool, ControllerError> {
        let store = self.durable().await?;
        let transport = self.redis.get().await?;

        let durable = store.as_deref().map(|s| s as &dyn ControlStore);
        let mut released = queue::release(
            durable,
            &*transport,
            queue::DEFAULT_QUEUE,
            Some(&self.managed_by),
        )
        .await
        .map_err(side_error)?
        .is_some();
        // The named queues it owned, too.
        released |= !self.apply_queues(&[]).await?.is_empty();
        Ok(released)
    }
}

/// A settings write's error as the controller reports it (the copy it failed on).
fn side_error(e: SideError) -> ControllerError {
    match e.side {
        Side::Durable => ControllerError::Store { source: e.error },
        Side::Cache => ControllerError::Redis { source: e.error },
    }
}

/// The Ready=False reason for a failed write.
fn unavailable(err: &ControllerError) -> &'static str {
    match err {
        ControllerError::Redis { .. } => REASON_REDIS_UNAVAILABLE,
        _ => REASON_STORE_UNAVAILABLE,
    }
}

/// `status` with the Ready condition set; `lastTransitionTime` only moves when the status flips.
fn with_ready(
    mut status: SchedulerConfigStatus,
    generation: Option<i64>,
    ready: bool,
    reason: &str,
    message: String,
    now: &str,
) -> SchedulerConfigStatus {
    set_ready(
        &mut status.conditions,
        generation,
        ready,
        reason,
        message,
        now,
    );
    status.observed_generation = generation;
    status
}

/// Set the Ready condition in `conditions`; `lastTransitionTime` only moves when the status
/// flips.
pub(crate) fn set_ready(
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    ready: bool,
    reason: &str,
    message: String,
    now: &str,
) {
    let value = if ready { "True" } else { "False" };
    let previous = conditions.iter().find(|c| c.type_ == READY);
    let last_transition_time = match previous {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => now.to_string(),
    };
    let condition = Condition {
        type_: READY.into(),
        status: value.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    };
    conditions.retain(|c| c.type_ != READY);
    conditions.push(condition);
}

fn describe(settings: &PolicySettings) -> String {
    let mut text = settings.policy.to_string();
    if settings.policy == jobsched_core::PolicyKind::RoundRobin {
        text.push_str(&format!(" (quantum {}s)", settings.quantum_seconds));
    }
    if settings.paused {
        text.push_str(", paused");
    }
    text
}

/// Check the settings a spec asks for; the message names the field.
pub(crate) fn check_spec(
    default: &PolicySettings,
    queues: &[(String, PolicySettings)],
) -> Result<(), String> {
    default.validate().map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    for (i, (name, settings)) in queues.iter().enumerate() {
        let at = format!("spec.queues[{i}]");
        jobsched_core::queue::check_queue_name(name).map_err(|e| format!("{at}.name {e}"))?;
        if name == jobsched_core::queue::DEFAULT_QUEUE {
            return Err(format!(
                "{at}.name: the default queue is set by spec.policy, spec.roundRobin and \
                 spec.paused, not in spec.queues"
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("{at}.name: queue `{name}` is listed twice"));
        }
        settings.validate().map_err(|e| format!("{at}: {e}"))?;
    }
    Ok(())
}

/// A custom resource the controller reconciles (`SchedulerConfig`, `JobSchedule`).
pub(crate) trait Reconciled: Resource + Send + Sync {
    /// The kind, for logs.
    const KIND: &'static str;
    /// The key of the object's error backoff.
    fn backoff_key(&self) -> String;
    /// Bring the scheduler and the object's status in line with the object, once.
    fn reconcile_once(
        &self,
        ctx: &Context,
    ) -> impl Future<Output = Result<Action, ControllerError>> + Send;
}

impl Reconciled for SchedulerConfig {
    const KIND: &'static str = "SchedulerConfig";
    fn backoff_key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }
    fn reconcile_once(
        &self,
        ctx: &Context,
    ) -> impl Future<Output = Result<Action, ControllerError>> + Send {
        reconcile_inner(self, ctx)
    }
}

/// Reconcile one object and record the metrics (the function handed to a kube `Controller`).
pub(crate) async fn reconcile<K: Reconciled>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    ctx.observe(&obj.backoff_key(), obj.reconcile_once(&ctx))
        .await
}

/// Requeue a failed object after its next per-object backoff (exponential).
pub(crate) fn error_policy<K: Reconciled>(
    obj: Arc<K>,
    err: &ControllerError,
    ctx: Arc<Context>,
) -> Action {
    ctx.requeue_failed(K::KIND, &obj.backoff_key(), err)
}

impl Context {
    /// Requeue the failed object `key` (a `kind`) after its next per-object backoff.
    pub(crate) fn requeue_failed(&self, kind: &str, key: &str, err: &ControllerError) -> Action {
        let delay = self.next_backoff(key);
        tracing::warn!(kind, object = %key, error = %err, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    }

    /// Run one reconcile of the object `key` and record its metrics (duration, result, error
    /// reason); on success, reset the object's error backoff.
    pub(crate) async fn observe<T>(
        &self,
        key: &str,
        reconcile: impl Future<Output = Result<T, ControllerError>>,
    ) -> Result<T, ControllerError> {
        let started = Instant::now();
        let result = reconcile.await;
        let m = metrics();
        m.duration.observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => {
                m.reconciles.with_label_values(&["ok"]).inc();
                self.reset_backoff(key);
            }
            Err(e) => {
                m.reconciles.with_label_values(&["error"]).inc();
                m.errors.with_label_values(&[e.reason()]).inc();
            }
        }
        result
    }
}

async fn reconcile_inner(obj: &SchedulerConfig, ctx: &Context) -> Result<Action, ControllerError> {
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    let generation = obj.metadata.generation;
    let current = obj.status.clone().unwrap_or_default();
    let now = ctx.now();

    if name != ctx.config_name || ns != ctx.namespace {
        // The watch selects only this installation's object; another one (another release's)
        // is never touched, not even its status, so two installations never fight.
        tracing::debug!(object = %format!("{ns}/{name}"), "not the selected SchedulerConfig; ignored");
        return Ok(Action::await_change());
    }

    let desired = obj.spec.to_settings(&ctx.managed_by);
    let queues: Vec<(String, PolicySettings)> = obj
        .spec
        .queues
        .iter()
        .map(|q| (q.name.clone(), q.to_settings(&ctx.managed_by)))
        .collect();
    if let Err(message) = check_spec(&desired, &queues) {
        let err = ControllerError::InvalidSpec {
            object: ctx.managed_by.clone(),
            message,
        };
        tracing::warn!(error = %err, "not applying SchedulerConfig");
        let status = with_ready(
            current,
            generation,
            false,
            REASON_INVALID_SPEC,
            err.to_string(),
            &now,
        );
        let news = obj.status.as_ref() != Some(&status);
        ctx.patch_status(obj, status, "patch SchedulerConfig status")
            .await?;
        if news {
            // `kubectl describe` and `kubectl get events` show why nothing changed; once per
            // invalid generation, not at every resync.
            ctx.warn_invalid_spec(&obj.object_ref(&()), &err).await;
        }
        return Ok(Action::await_change());
    }

    let applied = match ctx.sync(queue::DEFAULT_QUEUE, &desired).await {
        Ok(synced) => ctx.apply_queues(&queues).await.map(|q| (synced, q)),
        Err(err) => Err(err),
    };
    let (synced, written_queues) = match applied {
        Ok(w) => w,
        Err(err) => {
            let status = with_ready(
                current,
                generation,
                false,
                unavailable(&err),
                err.to_string(),
                &now,
            );
            if let Err(patch_err) = ctx
                .patch_status(obj, status, "patch SchedulerConfig status")
                .await
            {
                tracing::warn!(error = %patch_err, "could not record the write failure in the status");
            }
            return Err(err);
        }
    };
    let previous = synced.cache_was;
    if !written_queues.is_empty() {
        tracing::info!(object = %ctx.managed_by, queues = ?written_queues, "applied queue settings");
    }
    let written = synced.wrote || !written_queues.is_empty();
    let mut status = current;
    status.active_policy = Some(desired.policy);
    if written || status.last_applied_time.is_none() {
        status.last_applied_time = Some(now.clone());
    }
    let mut message = format!("scheduling policy {} is in effect", describe(&desired));
    if !queues.is_empty() {
        let each: Vec<String> = queues
            .iter()
            .map(|(name, s)| format!("{name}: {}", describe(s)))
            .collect();
        message.push_str(&format!("; queues {}", each.join(", ")));
    }
    let status = with_ready(status, generation, true, REASON_APPLIED, message, &now);
    ctx.patch_status(obj, status, "patch SchedulerConfig status")
        .await?;

    if let Some(previous) = previous {
        let changed = previous.as_ref().is_none_or(|p| !p.same_effect(&desired));
        if changed {
            tracing::info!(object = %ctx.managed_by, policy = %describe(&desired), "applied scheduling policy");
            let was = previous.as_ref().map_or("unset".to_string(), describe);
            let event = KubeEvent {
                type_: EventType::Normal,
                reason: EVENT_POLICY_CHANGED.into(),
                note: Some(format!(
                    "scheduling policy set to {} (was {was})",
                    describe(&desired)
                )),
                action: "ApplyPolicy".into(),
                secondary: None,
            };
            // A fresh recorder per event: kube's Recorder folds repeats with the same reason
            // into a series that keeps the first note (and needs `patch` on events); policy
            // changes are rare, so each gets its own Event (RBAC: `create` only).
            // Events are informational: a rejected event must not undo or retry the change.
            let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
            if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
                tracing::warn!(error = %e, "could not publish the PolicyChanged event (does the controller's RBAC allow creating events.k8s.io events?)");
            }
        }
    }
    Ok(Action::requeue(ctx.requeue))
}
