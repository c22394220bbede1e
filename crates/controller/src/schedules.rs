//! The `JobSchedule` reconciler: from each object to the scheduler's schedule of the same name
//! (owned by the object, so the REST API refuses to change it) and back to the object's status;
//! a schedule whose object is gone is deleted.

use crate::error::ControllerError;
use crate::reconcile::{
    Context, REASON_APPLIED, REASON_INVALID_SPEC, REASON_STORE_UNAVAILABLE, Reconciled, set_ready,
};
use crate::schedule_crd::{JobSchedule, same_schedule};
use chrono::SecondsFormat;
use jobsched_core::schedule::Schedule;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Reconciled for JobSchedule {
    const KIND: &'static str = "JobSchedule";
    fn backoff_key(&self) -> String {
        let ns = self.namespace().unwrap_or_default();
        format!("jobschedule/{ns}/{}", self.name_any())
    }
    fn reconcile_once(
        &self,
        ctx: &Context,
    ) -> impl Future<Output = Result<Action, ControllerError>> + Send {
        reconcile_inner(self, ctx)
    }
}

/// Record a failure in the status (Ready=False) and hand the error back.
async fn failed(
    ctx: &Context,
    obj: &JobSchedule,
    reason: &str,
    err: ControllerError,
) -> ControllerError {
    let mut status = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    set_ready(
        &mut status.conditions,
        generation,
        false,
        reason,
        err.to_string(),
        &rfc3339(ctx.clock.now()),
    );
    status.observed_generation = generation;
    if let Err(e) = ctx
        .patch_status(obj, status, "patch JobSchedule status")
        .await
    {
        tracing::warn!(error = %e, "could not record the failure in the JobSchedule status");
    }
    err
}

async fn reconcile_inner(obj: &JobSchedule, ctx: &Context) -> Result<Action, ControllerError> {
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_else(|| ctx.namespace.clone());
    let owner = format!("{ns}/{name}");
    let now = ctx.clock.now();
    let Some(conn) = &ctx.store else {
        let err = ControllerError::Config {
            field: "database_url",
            message: "JobSchedules are kept in the scheduler's database: set \
                      JOBSCHED_DATABASE_URL on the controller"
                .into(),
        };
        return Err(failed(ctx, obj, REASON_STORE_UNAVAILABLE, err).await);
    };
    let desired = match obj.spec.to_schedule(&name, &owner, now) {
        Ok(s) => s,
        Err(message) => {
            let err = ControllerError::InvalidSchedule {
                object: owner.clone(),
                message,
            };
            tracing::warn!(error = %err, "not applying JobSchedule");
            let news = obj
                .status
                .as_ref()
                .is_none_or(|s| s.observed_generation != obj.metadata.generation);
            let err = failed(ctx, obj, REASON_INVALID_SPEC, err).await;
            if news {
                ctx.warn_invalid_spec(&obj.object_ref(&()), &err).await;
            }
            return Ok(Action::await_change());
        }
    };
    let stored = match apply(conn, &desired).await {
        Ok(s) => s,
        Err(err @ ControllerError::InvalidSchedule { .. }) => {
            // A name taken by a schedule this object does not own: reported, and looked at
            // again at the next resync (the other schedule may be deleted by then).
            tracing::warn!(error = %err, "not applying JobSchedule");
            failed(ctx, obj, REASON_INVALID_SPEC, err).await;
            return Ok(Action::requeue(ctx.requeue));
        }
        Err(err) => return Err(failed(ctx, obj, REASON_STORE_UNAVAILABLE, err).await),
    };
    let mut status = obj.status.clone().unwrap_or_default();
    status.observed_generation = obj.metadata.generation;
    status.next_fire_time = stored.next_fire_at.map(rfc3339);
    status.last_fire_time = stored.last_fire_at.map(rfc3339);
    status.last_job_id = stored.last_job_id.map(|id| id.to_string());
    let message = match (stored.paused, stored.next_fire_at) {
        (true, _) => format!("schedule {name} is paused"),
        (false, Some(next)) => format!(
            "schedule {name} is in effect; next fire at {}",
            rfc3339(next)
        ),
        (false, None) => format!("schedule {name} is in effect; its cron expression fires no more"),
    };
    set_ready(
        &mut status.conditions,
        obj.metadata.generation,
        true,
        REASON_APPLIED,
        message,
        &rfc3339(now),
    );
    ctx.patch_status(obj, status, "patch JobSchedule status")
        .await?;
    // Come back soon after the next fire, so the status shows it.
    let until_fire = stored
        .next_fire_at
        .filter(|_| !stored.paused)
        .and_then(|next| (next - now).to_std().ok())
        .map(|d| d + Duration::from_secs(2));
    let after = until_fire.map_or(ctx.requeue, |d| d.min(ctx.requeue));
    Ok(Action::requeue(after.max(Duration::from_secs(1))))
}

/// Write `desired` unless the stored schedule already asks for the same; returns the stored
/// schedule (with its fire state).
async fn apply(
    conn: &crate::port::StorePort,
    desired: &Schedule,
) -> Result<Schedule, ControllerError> {
    let store = conn.get().await?;
    let store_err = |source| ControllerError::Store { source };
    let existing = store.get_schedule(&desired.name).await.map_err(store_err)?;
    if let Some(e) = existing {
        if e.managed_by != desired.managed_by {
            // Made through the REST API (or owned by another object): taking it over would
            // delete it with this object later.
            let owner = e.managed_by.map_or_else(
                || "the REST API".to_string(),
                |o| format!("JobSchedule {o}"),
            );
            return Err(ControllerError::InvalidSchedule {
                object: desired.managed_by.clone().unwrap_or_default(),
                message: format!(
                    "metadata.name: a schedule named {:?} already exists, made by {owner}; \
                     delete it (DELETE /schedules/{}) or give this JobSchedule another name",
                    desired.name, desired.name
                ),
            });
        }
        if same_schedule(&e, desired) {
            return Ok(e);
        }
    }
    store.put_schedule(desired).await.map_err(store_err)?;
    tracing::info!(schedule = %desired.name, owner = ?desired.managed_by, "schedule written from its JobSchedule");
    Ok(store
        .get_schedule(&desired.name)
        .await
        .map_err(store_err)?
        .unwrap_or_else(|| desired.clone()))
}

/// How often the schedules are compared with the JobSchedules that own them.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// While leading: delete the schedules owned by a JobSchedule of this namespace that no longer
/// exists (deleted, also while no controller ran). Runs once the watch cache has its first
/// full list, then every [`SWEEP_EVERY`].
pub(crate) async fn delete_orphans(
    ctx: Arc<Context>,
    reader: Store<JobSchedule>,
    token: CancellationToken,
) {
    let Some(conn) = &ctx.store else { return };
    tokio::select! {
        () = token.cancelled() => return,
        ready = reader.wait_until_ready() => if ready.is_err() { return },
    }
    loop {
        if let Err(e) = sweep(&ctx, conn, &reader).await {
            tracing::warn!(error = %e, "could not compare schedules with their JobSchedules; retrying");
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

/// One pass of [`delete_orphans`]; returns the schedules deleted.
pub(crate) async fn sweep(
    ctx: &Context,
    conn: &crate::port::StorePort,
    reader: &Store<JobSchedule>,
) -> Result<Vec<String>, ControllerError> {
    let store = conn.get().await?;
    let store_err = |source| ControllerError::Store { source };
    let mut deleted = Vec::new();
    for s in store.list_schedules().await.map_err(store_err)? {
        let Some((ns, name)) = s.managed_by.as_deref().and_then(|o| o.split_once('/')) else {
            continue;
        };
        if ns != ctx.namespace || name != s.name {
            continue;
        }
        let key = ObjectRef::<JobSchedule>::new(name).within(ns);
        if reader.get(&key).is_some() {
            continue;
        }
        // Not in the cache: gone, or outside the label selector (which must not delete its
        // schedule). Ask the API server before deleting.
        let api: Api<JobSchedule> = Api::namespaced(ctx.client.clone(), ns);
        let exists = api
            .get_opt(name)
            .await
            .map_err(ControllerError::kube("get JobSchedule"))?
            .is_some();
        if !exists && store.delete_schedule(&s.name).await.map_err(store_err)? {
            tracing::info!(schedule = %s.name, "its JobSchedule is gone: schedule deleted");
            deleted.push(s.name.clone());
        }
    }
    Ok(deleted)
}
