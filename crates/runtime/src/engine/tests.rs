//! The maintenance step with a manual clock, on SQLite and the in-memory transport: time moves
//! only when the test moves it.

use super::Maintenance;
use crate::{Runtime, RuntimeConfig};
use chrono::{TimeZone, Utc};
use jobsched_core::ports::{Claim, ManualClock};
use jobsched_core::{JobSpec, JobStatus, NewJob, PolicyKind};
use jobsched_jobs::{DataDir, Registry};
use jobsched_store::testing::TestDb;
use jobsched_transport::MemoryTransport;
use std::sync::Arc;
use std::time::Duration;

/// A runtime on `db`'s store and the in-memory transport, reading `clock`, with data in `data`.
async fn runtime(
    db: &TestDb,
    clock: Arc<dyn jobsched_core::ports::Clock>,
    data: &tempfile::TempDir,
) -> Runtime {
    Runtime {
        store: db.store().await,
        transport: Arc::new(MemoryTransport::new()),
        registry: Registry::builtin(),
        data_dir: DataDir::new(data.path()).unwrap(),
        clock,
        config: RuntimeConfig::default(),
    }
}

#[tokio::test]
async fn a_step_rescues_only_expired_leases_and_promotes_only_due_jobs() {
    let db = TestDb::sqlite().await;
    let clock = Arc::new(ManualClock::at(
        Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap(),
    ));
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(&db, clock.clone(), &data).await;
    let now = || jobsched_core::ports::Clock::now(&*clock);

    // One job running under a 30 s lease, one delayed by 60 s.
    let running = rt
        .store
        .insert(
            &NewJob::new(JobSpec {
                max_retries: Some(1),
                ..JobSpec::new("running", "sleep")
            })
            .unwrap(),
            now(),
        )
        .await
        .unwrap();
    let claim = Claim {
        limit: 1,
        order: PolicyKind::Fcfs,
        lease_until: now() + chrono::Duration::seconds(30),
        ..Claim::none(now())
    };
    let claimed = rt.store.claim(&claim, "w1", now()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let mut delayed = NewJob::new(JobSpec::new("later", "sleep")).unwrap();
    delayed.run_at = Some(now() + chrono::Duration::seconds(60));
    let delayed = rt.store.insert(&delayed, now()).await.unwrap();

    let mut maintenance = Maintenance::default();
    let status = async |id| rt.store.get(id).await.unwrap().unwrap();

    // 29 s on: the lease holds, the delayed job waits.
    clock.advance(Duration::from_secs(29));
    maintenance.step(&rt).await;
    assert_eq!(status(running.id).await.status, JobStatus::Running);
    let waiting = rt.store.stats().await.unwrap();
    assert_eq!(waiting.delayed, 1, "{waiting:?}");

    // 31 s on: the lease expired: back to PENDING, one retry counted, the worker named.
    clock.advance(Duration::from_secs(2));
    maintenance.step(&rt).await;
    let rescued = status(running.id).await;
    assert_eq!(
        (rescued.status, rescued.retry_count),
        (JobStatus::Pending, 1)
    );
    assert_eq!(
        rescued.error_message.as_deref(),
        Some("lease expired: worker w1 stopped renewing (attempt 1)")
    );
    assert_eq!(rt.store.stats().await.unwrap().delayed, 1);

    // 61 s on: the delayed job is in the queue.
    clock.advance(Duration::from_secs(30));
    maintenance.step(&rt).await;
    assert_eq!(rt.store.stats().await.unwrap().delayed, 0);
    assert_eq!(status(delayed.id).await.status, JobStatus::Pending);

    // Claimed again and expired again: the budget (1 retry) is spent, so a dead letter.
    let claim = Claim {
        lease_until: now() + chrono::Duration::seconds(30),
        ..claim
    };
    assert_eq!(rt.store.claim(&claim, "w2", now()).await.unwrap().len(), 1);
    clock.advance(Duration::from_secs(31));
    maintenance.step(&rt).await;
    let dead = rt.store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].error.as_deref(),
        Some("lease expired: worker w2 stopped renewing (attempt 2)")
    );
    db.cleanup().await;
}

/// A leader that takes over corrects counts that drifted from the rows (statuses changed
/// uncounted by a process of an earlier version during an upgrade), without waiting an hour.
#[tokio::test]
async fn a_new_leader_corrects_counts_that_drifted() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(&db, Arc::new(jobsched_core::ports::SystemClock), &data).await;
    let job = NewJob::new(JobSpec::new("drifted", "sleep")).unwrap();
    let job = rt.store.insert(&job, Utc::now()).await.unwrap();
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    sqlx::query("UPDATE jobs SET status = 'CANCELLED' WHERE id = $1")
        .bind(job.id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let stats = rt.store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.cancelled), (1, 0), "drifted");
    let stop = tokio_util::sync::CancellationToken::new();
    let maintenance = tokio::spawn(super::maintenance(
        rt.clone(),
        Duration::from_secs(1),
        stop.clone(),
    ));
    jobsched_testkit::poll(Duration::from_secs(20), async || {
        let stats = rt.store.stats().await.map_err(|e| e.to_string())?;
        match (stats.pending, stats.cancelled) {
            (0, 1) => Ok(()),
            other => Err(format!("counts still {other:?}")),
        }
    })
    .await;
    stop.cancel();
    maintenance.await.unwrap();
    db.cleanup().await;
}
