//! One conformance suite for every store backend.
//!
//! Each scenario is a plain async fn over a [`TestDb`]; the `conformance!` macro instantiates
//! every scenario once per backend (`postgres::…`, `sqlite::…`), each on a fresh database, so
//! the two backends are held to exactly the same behaviour. Postgres scenarios skip (with a
//! message) when no server is reachable, unless `CI=true`.

use chrono::{DateTime, Duration as Cd, TimeZone, Utc};
use jobsched_core::JobSpec;
use jobsched_core::ports::{Claim, Finished, Lease, Outcome, PruneScan, Store, Token, Update};
use jobsched_core::{
    Backlog, CancelOutcome, Error, Job, JobFilter, JobId, JobStats, JobStatus, NewJob, PolicyKind,
    PolicySettings, RetryBackoff, StartedJob, UniqueKey,
};
use jobsched_store::testing::TestDb;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = jobsched_store::testing::TestDb::postgres().await else {
                        return;
                    };
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = jobsched_store::testing::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    insert_and_get,
    insert_many_is_ordered_and_atomic,
    list_filters_sorts_and_pages,
    stats_counts_and_average,
    backlog_sums_the_pending_estimates,
    cancel_rules,
    pending_after_is_a_cursor,
    mark_scheduled_is_fenced_by_attempt,
    start_rules,
    renew_rules,
    every_lease_is_rescued_when_it_ends,
    held_lists_the_running_jobs_under_a_lease,
    finish_completed_applies_once,
    finish_retry_failed_requeue,
    fetch_then_record_start_or_finish_in_one,
    rescue_expired_both_branches,
    rescue_never_exceeds_max_retries,
    dead_letters_retry_and_purge,
    leader_election,
    policy_settings_round_trip,
    concurrent_mark_scheduled_claims_each_job_once,
    concurrent_start_claims_each_job_once,
    illegal_transitions_change_nothing,
    counts_follow_every_transition,
    claim_takes_due_jobs_in_the_policy_order,
    exchange_records_outcomes_and_claims_successors,
    concurrent_claims_take_each_job_once,
    delayed_jobs_wait_for_their_time,
    unique_keys_return_the_first_job,
    retention_deletes_only_what_outlived_it,
    retry_backoff_is_kept_and_claimed,
    schedules_are_kept_and_fired_once,
    queues_keep_their_jobs_apart,
    queue_settings_round_trip,
    a_concurrency_limit_caps_the_claims_of_its_queue,
    notes_are_kept_per_try_bounded_and_fenced,
    job_types_are_registered_and_claims_filter_by_type,
);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A fixed, stubbable clock: `t(s)` is `s` seconds after 2030-01-01T00:00:00Z.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + Cd::seconds(secs)
}

/// A handled fire: `next_fire_at` read as `expected`, fire time `fire`.
fn fired(
    expected: DateTime<Utc>,
    fire: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    job: Option<jobsched_core::JobId>,
) -> jobsched_core::schedule::Fired {
    jobsched_core::schedule::Fired {
        expected,
        fire,
        next,
        job,
    }
}

fn new_job(name: &str) -> NewJob {
    custom_job(name, "sleep", 5, 1.0, 3)
}

fn custom_job(name: &str, job_type: &str, priority: i64, est: f64, max_retries: i64) -> NewJob {
    NewJob::new(JobSpec {
        name: name.into(),
        job_type: job_type.into(),
        priority: Some(priority),
        estimated_duration: Some(est),
        payload: Some(json!({ "duration": 1, "name": name })),
        max_retries: Some(max_retries),
    })
    .unwrap()
}

async fn job(s: &Arc<dyn Store>, id: JobId) -> Job {
    s.get(id).await.unwrap().expect("job exists")
}

async fn token(s: &Arc<dyn Store>, id: JobId) -> Token {
    Token {
        id,
        attempt: job(s, id).await.attempt,
    }
}

/// PENDING → SCHEDULED with a dispatch lease until `lease_until`; returns the new token.
async fn schedule(
    s: &Arc<dyn Store>,
    id: JobId,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Token {
    let current = token(s, id).await;
    let applied = s
        .mark_scheduled(&[current], now, lease_until)
        .await
        .unwrap();
    assert_eq!(applied.len(), 1, "schedule {id}");
    applied[0].token()
}

/// The tokens of the jobs a claim returned.
fn scheduled_tokens(jobs: Vec<StartedJob>) -> Vec<Token> {
    jobs.iter().map(StartedJob::token).collect()
}

/// PENDING → SCHEDULED → RUNNING for `owner`, lease until `lease_until`; returns the token.
async fn run(
    s: &Arc<dyn Store>,
    id: JobId,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Token {
    let tok = schedule(s, id, now, lease_until).await;
    let started = recorded(s, &[(tok, now)], owner, lease_until).await;
    assert_eq!(started, vec![tok], "start {id}");
    tok
}

/// `finish` for runs whose start is recorded, as `owner`.
async fn finish(
    s: &Arc<dyn Store>,
    owner: &str,
    outcomes: &[Outcome],
    now: DateTime<Utc>,
) -> jobsched_core::Result<Vec<Token>> {
    let runs: Vec<Finished> = outcomes.iter().cloned().map(Finished::from).collect();
    s.finish(&runs, owner, now).await
}

/// The four outcomes, by position.
mod out {
    use super::*;

    pub fn completed(token: Token, result: serde_json::Value) -> Outcome {
        Outcome::Completed { token, result }
    }

    pub fn retried(token: Token, error: String, run_at: DateTime<Utc>) -> Outcome {
        Outcome::Retry {
            token,
            error,
            run_at,
        }
    }

    pub fn failed(token: Token, error: String, retry_count: i32) -> Outcome {
        Outcome::Failed {
            token,
            error,
            retry_count,
        }
    }

    pub fn requeued(token: Token, checkpoint: Option<serde_json::Value>) -> Outcome {
        Outcome::Requeue { token, checkpoint }
    }
}

/// `holder`'s lease on `role`.
fn lease<'a>(role: &'a str, holder: &'a str, ttl: Duration) -> Lease<'a> {
    Lease { role, holder, ttl }
}

/// The jobs `claim` took for `owner` at `now`.
async fn claimed(
    s: &Arc<dyn Store>,
    claim: &Claim,
    owner: &str,
    now: DateTime<Utc>,
) -> Vec<StartedJob> {
    s.claim(claim, owner, now).await.unwrap()
}

/// The page `filter` lists.
async fn listed(s: &Arc<dyn Store>, filter: &JobFilter) -> jobsched_core::JobPage {
    s.list(filter).await.unwrap()
}

/// Page `page` of `page_size` jobs, newest first.
fn page(page: u32, page_size: u32) -> JobFilter {
    JobFilter {
        page,
        page_size,
        ..JobFilter::default()
    }
}

/// Page `n` of `size` jobs, narrowed by `narrow`.
fn page_where(n: u32, size: u32, narrow: impl FnOnce(&mut JobFilter)) -> JobFilter {
    let mut filter = page(n, size);
    narrow(&mut filter);
    filter
}

/// The starts `record_starts` recorded for `owner`, leased until `lease_until`.
async fn recorded(
    s: &Arc<dyn Store>,
    starts: &[(Token, DateTime<Utc>)],
    owner: &str,
    lease_until: DateTime<Utc>,
) -> Vec<Token> {
    s.record_starts(starts, owner, lease_until).await.unwrap()
}

/// `job`, submitted at `now`.
async fn inserted(s: &Arc<dyn Store>, job: &NewJob, now: DateTime<Utc>) -> Job {
    s.insert(job, now).await.unwrap()
}

/// Jobs named `names`, submitted at 0 in this order: their ids.
async fn inserts<const N: usize>(s: &Arc<dyn Store>, names: [&str; N]) -> [JobId; N] {
    let mut ids = [JobId::nil(); N];
    for (id, name) in ids.iter_mut().zip(names) {
        *id = insert(s, name, t(0)).await;
    }
    ids
}

async fn insert(s: &Arc<dyn Store>, name: &str, now: DateTime<Utc>) -> JobId {
    inserted(s, &new_job(name), now).await.id
}

/// Every job's status.
async fn statuses(s: &Arc<dyn Store>) -> HashMap<JobId, JobStatus> {
    let page = listed(s, &page(1, 10_000)).await;
    page.jobs.into_iter().map(|j| (j.id, j.status)).collect()
}

/// Every status change between two snapshots is one the state machine allows.
fn assert_transitions_allowed(
    before: &HashMap<JobId, JobStatus>,
    after: &HashMap<JobId, JobStatus>,
) {
    for (id, from) in before {
        let to = after[id];
        if *from != to {
            assert!(from.can_transition_to(to), "{id}: {from} -> {to}");
        }
    }
}

fn assert_close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-6, "{a} != {b}");
}

// ---------------------------------------------------------------------------------------------
// JobRepo

async fn insert_and_get(db: &TestDb) {
    let s = db.store().await;
    let nj = custom_job("first", "word_count", 2, 7.5, 4);
    let j = inserted(&s, &nj, t(0)).await;
    assert_eq!(j.id, nj.id);
    assert_eq!(j.name, "first");
    assert_eq!(j.job_type, "word_count");
    assert_eq!(j.status, JobStatus::Pending);
    assert_eq!(j.priority, 2);
    assert_close(j.estimated_duration, 7.5);
    assert_eq!(j.payload, json!({ "duration": 1, "name": "first" }));
    assert_eq!(j.max_retries, 4);
    assert_eq!((j.retry_count, j.attempt, j.slices), (0, 0, 0));
    assert_eq!((j.created_at, j.run_at), (t(0), t(0)));
    assert!(j.result.is_none() && j.error_message.is_none() && j.checkpoint.is_none());
    assert!(j.scheduled_at.is_none() && j.started_at.is_none() && j.completed_at.is_none());
    assert!(j.lease_owner.is_none() && j.lease_expires_at.is_none());
    assert_eq!(job(&s, nj.id).await, j);

    // Sub-second times survive at microsecond precision.
    let precise = t(1) + Cd::microseconds(123_456);
    let second = inserted(&s, &new_job("second"), precise).await;
    assert_eq!(second.created_at, precise);
    assert!(second.seq > j.seq);

    assert!(s.get(Uuid::now_v7()).await.unwrap().is_none());
    let dup = s.insert(&nj, t(2)).await.unwrap_err();
    assert!(matches!(dup, Error::Backend { .. }), "{dup:?}");
}

async fn insert_many_is_ordered_and_atomic(db: &TestDb) {
    let s = db.store().await;
    assert!(s.insert_many(&[], t(0)).await.unwrap().is_empty());

    let jobs: Vec<NewJob> = (0..300).map(|i| new_job(&format!("j{i}"))).collect();
    let ids = s.insert_many(&jobs, t(0)).await.unwrap();
    assert_eq!(ids, jobs.iter().map(|j| j.id).collect::<Vec<_>>());
    let pending = s.pending_after(0, 1000).await.unwrap();
    assert_eq!(
        pending.iter().map(|p| p.queued.id).collect::<Vec<_>>(),
        ids,
        "seq follows input order"
    );
    assert!(
        pending
            .windows(2)
            .all(|w| w[0].queued.seq < w[1].queued.seq)
    );
    let j = job(&s, ids[7]).await;
    assert_eq!(
        (j.name.as_str(), j.status, j.attempt),
        ("j7", JobStatus::Pending, 0)
    );
    assert_eq!((j.created_at, j.run_at), (t(0), t(0)));

    // All or nothing: a batch containing an existing id inserts none of its jobs.
    let fresh = new_job("fresh");
    let err = s
        .insert_many(&[fresh.clone(), jobs[0].clone()], t(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(s.get(fresh.id).await.unwrap().is_none());
    assert_eq!(s.stats().await.unwrap().total_jobs, 300);
}

async fn list_filters_sorts_and_pages(db: &TestDb) {
    let s = db.store().await;
    let mut sleeps = Vec::new();
    for i in 0..4 {
        sleeps.push(insert(&s, &format!("sleep{i}"), t(i)).await);
    }
    // Three jobs with the same created_at: ties go newest seq first.
    let wc: Vec<NewJob> = (0..3)
        .map(|i| custom_job(&format!("wc{i}"), "word_count", 5, 1.0, 3))
        .collect();
    let wc_ids = s.insert_many(&wc, t(10)).await.unwrap();

    let ids = |p: &jobsched_core::JobPage| p.jobs.iter().map(|j| j.id).collect::<Vec<_>>();

    let p1 = listed(&s, &page(1, 3)).await;
    assert_eq!((p1.total, p1.page, p1.page_size), (7, 1, 3));
    assert_eq!(ids(&p1), vec![wc_ids[2], wc_ids[1], wc_ids[0]]);
    let p2 = listed(&s, &page(2, 3)).await;
    assert_eq!(ids(&p2), vec![sleeps[3], sleeps[2], sleeps[1]]);
    let p3 = listed(&s, &page(3, 3)).await;
    assert_eq!(ids(&p3), vec![sleeps[0]]);
    let past = listed(&s, &page(4, 3)).await;
    assert!(past.jobs.is_empty());
    assert_eq!((past.total, past.page), (7, 4));
    let far = listed(&s, &page(1000, 100)).await;
    assert!(far.jobs.is_empty() && far.total == 7);
    // Page 0 is read as page 1.
    assert_eq!(ids(&s.list(&page(0, 3)).await.unwrap()), ids(&p1));

    let by_type = listed(
        &s,
        &page_where(1, 2, |f| f.job_type = Some("word_count".into())),
    )
    .await;
    assert_eq!(by_type.total, 3);
    assert_eq!(ids(&by_type), vec![wc_ids[2], wc_ids[1]]);

    assert_eq!(
        s.cancel(sleeps[1], t(20)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let cancelled = listed(
        &s,
        &page_where(1, 10, |f| f.status = Some(JobStatus::Cancelled)),
    )
    .await;
    assert_eq!((cancelled.total, ids(&cancelled)), (1, vec![sleeps[1]]));
    let pending_sleeps = listed(
        &s,
        &page_where(1, 10, |f| {
            f.status = Some(JobStatus::Pending);
            f.job_type = Some("sleep".into());
        }),
    )
    .await;
    assert_eq!(pending_sleeps.total, 3);
    assert_eq!(ids(&pending_sleeps), vec![sleeps[3], sleeps[2], sleeps[0]]);
    let none = listed(&s, &page_where(1, 10, |f| f.job_type = Some("nope".into()))).await;
    assert_eq!((none.total, none.jobs.len()), (0, 0));

    // Search: one id, or a name prefix (byte order, case-sensitive), with the other filters.
    let by_id = listed(&s, &page_where(1, 10, |f| f.id = Some(wc_ids[1]))).await;
    assert_eq!((by_id.total, ids(&by_id)), (1, vec![wc_ids[1]]));
    let sl = listed(
        &s,
        &page_where(1, 10, |f| f.name_prefix = Some("sl".into())),
    )
    .await;
    assert_eq!(sl.total, 4);
    assert_eq!(ids(&sl), vec![sleeps[3], sleeps[2], sleeps[1], sleeps[0]]);
    let wc1 = listed(
        &s,
        &page_where(1, 10, |f| {
            f.name_prefix = Some("wc1".into());
            f.job_type = Some("word_count".into());
        }),
    )
    .await;
    assert_eq!((wc1.total, ids(&wc1)), (1, vec![wc_ids[1]]));
    for prefix in ["SL", "sleep0x", "%", "_"] {
        let none = listed(
            &s,
            &page_where(1, 10, |f| f.name_prefix = Some(prefix.into())),
        )
        .await;
        assert_eq!(none.total, 0, "{prefix}");
    }
}

async fn stats_counts_and_average(db: &TestDb) {
    let s = db.store().await;
    assert_eq!(s.stats().await.unwrap(), JobStats::default());

    let ids: Vec<JobId> = {
        let mut v = Vec::new();
        for i in 0..7 {
            v.push(insert(&s, &format!("s{i}"), t(0)).await);
        }
        v
    };
    // Two completed runs: 2000 ms and 1500 ms.
    for (id, ms) in [(ids[0], 2000), (ids[1], 1500)] {
        let tok = run(&s, id, "w", t(10), t(100)).await;
        let done = finish(
            &s,
            "w",
            &[out::completed(tok, json!({ "ok": true }))],
            t(10) + Cd::milliseconds(ms),
        )
        .await
        .unwrap();
        assert_eq!(done, vec![tok]);
    }
    // A failed run (its duration must not count) and one of each other state.
    let tok = run(&s, ids[2], "w", t(10), t(100)).await;
    let failed = out::failed(tok, "boom".into(), 3);
    assert_eq!(finish(&s, "w", &[failed], t(50)).await.unwrap().len(), 1);
    assert_eq!(
        s.cancel(ids[3], t(10)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    schedule(&s, ids[4], t(10), t(100)).await;
    run(&s, ids[5], "w", t(10), t(100)).await;

    let stats = s.stats().await.unwrap();
    assert_eq!(counts_of(&stats), (7, 1, 1, 1, 2, 1, 1));
    assert_close(stats.avg_execution_time_ms.expect("average"), 1750.0);
}

async fn cancel_rules(db: &TestDb) {
    let s = db.store().await;
    let [pending, scheduled, running, completed] = inserts(&s, ["p", "s", "r", "c"]).await;
    let sched_tok = schedule(&s, scheduled, t(1), t(30)).await;
    run(&s, running, "w", t(1), t(30)).await;
    let ctok = run(&s, completed, "w", t(1), t(30)).await;
    finish(&s, "w", &[out::completed(ctok, json!(1))], t(2))
        .await
        .unwrap();

    // A cancel ends the job at once, at the cancel's time (a RUNNING one's run must stop).
    let cancelled_at = async |id, at| {
        let answer = s.cancel(id, at).await.unwrap();
        let j = job(&s, id).await;
        assert_eq!((j.status, j.completed_at), (JobStatus::Cancelled, Some(at)));
        answer
    };
    assert_eq!(cancelled_at(pending, t(5)).await, CancelOutcome::Cancelled);

    assert_eq!(
        cancelled_at(scheduled, t(6)).await,
        CancelOutcome::Cancelled
    );
    let sj = job(&s, scheduled).await;
    assert!(sj.lease_expires_at.is_none() && sj.lease_owner.is_none());
    // The dispatched token of a cancelled job no longer starts.
    assert!(
        recorded(&s, &[(sched_tok, t(7))], "w", t(30))
            .await
            .is_empty()
    );

    // RUNNING: cancelled at once; its worker can no longer record an outcome or renew.
    let run_tok = token(&s, running).await;
    assert_eq!(cancelled_at(running, t(7)).await, CancelOutcome::Stopping);
    let rj = job(&s, running).await;
    assert!(rj.lease_expires_at.is_none() && rj.lease_owner.is_none());
    let late = out::completed(run_tok, json!("too late"));
    assert!(finish(&s, "w", &[late], t(8)).await.unwrap().is_empty());
    assert!(s.renew(&[run_tok], "w", t(40)).await.unwrap().is_empty());
    let rj = job(&s, running).await;
    assert_eq!((rj.status, rj.result), (JobStatus::Cancelled, None));
    assert_eq!(
        s.cancel(running, t(9)).await.unwrap(),
        CancelOutcome::NotCancellable(JobStatus::Cancelled)
    );
    assert_eq!(
        s.cancel(completed, t(7)).await.unwrap(),
        CancelOutcome::NotCancellable(JobStatus::Completed)
    );
    assert_eq!(
        s.cancel(pending, t(8)).await.unwrap(),
        CancelOutcome::NotCancellable(JobStatus::Cancelled)
    );
    assert_eq!(job(&s, pending).await.completed_at, Some(t(5)));
    assert_eq!(
        s.cancel(Uuid::now_v7(), t(8)).await.unwrap(),
        CancelOutcome::NotFound
    );
}

// ---------------------------------------------------------------------------------------------
// DispatchStore

async fn pending_after_is_a_cursor(db: &TestDb) {
    let s = db.store().await;
    let jobs = vec![
        custom_job("a", "sleep", 1, 4.0, 3),
        custom_job("b", "sleep", 9, 0.5, 3),
        custom_job("c", "sleep", 5, 2.0, 3),
        custom_job("d", "sleep", 5, 2.0, 3),
        custom_job("e", "sleep", 5, 2.0, 3),
    ];
    let ids = s.insert_many(&jobs, t(0)).await.unwrap();

    let first = s.pending_after(0, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|p| p.queued.id).collect::<Vec<_>>(),
        ids[..2]
    );
    let q = &first[1].queued;
    assert_eq!((q.priority, q.attempt), (9, 0));
    assert_close(q.estimated_duration, 0.5);
    assert_eq!(first[1].run_at, t(0));
    let rest = s.pending_after(first[1].queued.seq, 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|p| p.queued.id).collect::<Vec<_>>(),
        ids[2..]
    );
    let last_seq = rest.last().unwrap().queued.seq;
    assert!(s.pending_after(last_seq, 10).await.unwrap().is_empty());
    assert!(s.pending_after(0, 0).await.unwrap().is_empty());

    // Non-PENDING jobs are left out; a retried job re-enters after the cursor with its
    // (future) run_at and its current attempt.
    schedule(&s, ids[2], t(1), t(30)).await;
    let tok = run(&s, ids[0], "w", t(1), t(30)).await;
    let all = s.pending_after(0, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.queued.id).collect::<Vec<_>>(),
        vec![ids[1], ids[3], ids[4]]
    );
    finish(&s, "w", &[out::retried(tok, "e".into(), t(500))], t(2))
        .await
        .unwrap();
    let after = s.pending_after(last_seq, 10).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].queued.id, after[0].queued.attempt, after[0].run_at),
        (ids[0], 1, t(500))
    );
}

async fn mark_scheduled_is_fenced_by_attempt(db: &TestDb) {
    let s = db.store().await;
    let [a, b, c] = inserts(&s, ["a", "b", "c"]).await;
    assert!(s.mark_scheduled(&[], t(1), t(31)).await.unwrap().is_empty());

    let a0 = Token { id: a, attempt: 0 };
    let b0 = Token { id: b, attempt: 0 };
    // Input order is kept and a duplicate token is applied once.
    let applied = s.mark_scheduled(&[b0, a0, b0], t(1), t(31)).await.unwrap();
    let tokens: Vec<Token> = applied.iter().map(StartedJob::token).collect();
    assert_eq!(
        tokens,
        vec![Token { id: b, attempt: 1 }, Token { id: a, attempt: 1 }]
    );
    // The claim returns the jobs as a worker would read them.
    assert_eq!(applied[0].name, "b");
    assert_eq!(s.fetch(&tokens).await.unwrap(), applied);
    let aj = job(&s, a).await;
    assert_eq!(aj.status, JobStatus::Scheduled);
    assert_eq!(aj.attempt, 1);
    assert_eq!(aj.scheduled_at, Some(t(1)));
    assert_eq!(aj.lease_expires_at, Some(t(31)));
    assert!(aj.lease_owner.is_none());

    // Stale (already used) token, wrong attempt, unknown id: nothing applies.
    assert!(
        s.mark_scheduled(&[a0], t(2), t(32))
            .await
            .unwrap()
            .is_empty()
    );
    let c_wrong = Token { id: c, attempt: 5 };
    let unknown = Token {
        id: Uuid::now_v7(),
        attempt: 0,
    };
    assert!(
        s.mark_scheduled(&[c_wrong, unknown], t(2), t(32))
            .await
            .unwrap()
            .is_empty()
    );
    let cj = job(&s, c).await;
    assert_eq!((cj.status, cj.attempt), (JobStatus::Pending, 0));
    assert_eq!(job(&s, a).await.lease_expires_at, Some(t(31)));

    // A decision taken before the job existed is recorded at its creation instead.
    let late = insert(&s, "late", t(10)).await;
    let late0 = Token {
        id: late,
        attempt: 0,
    };
    assert_eq!(
        s.mark_scheduled(&[late0], t(9), t(39)).await.unwrap().len(),
        1
    );
    assert_eq!(job(&s, late).await.scheduled_at, Some(t(10)));
}

async fn rescue_expired_both_branches(db: &TestDb) {
    let s = db.store().await;
    let a = inserted(&s, &custom_job("a", "sleep", 5, 1.0, 3), t(0)).await;
    let b = inserted(&s, &custom_job("b", "sleep", 5, 1.0, 0), t(0)).await;
    let [c, d, e] = inserts(&s, ["c", "d", "e"]).await;
    let a_tok = run(&s, a.id, "w1", t(1), t(30)).await;
    let b_tok = run(&s, b.id, "w2", t(1), t(30)).await;
    let c_tok = schedule(&s, c, t(1), t(30)).await;
    run(&s, d, "w1", t(1), t(100)).await;
    schedule(&s, e, t(1), t(100)).await;
    let c_seq = job(&s, c).await.seq;
    let a_seq = job(&s, a.id).await.seq;

    // A lease is expired only strictly after its expiry time.
    assert_eq!(
        s.rescue_expired(t(30)).await.unwrap(),
        Default::default(),
        "nothing expired yet"
    );

    let report = s.rescue_expired(t(31)).await.unwrap();
    assert_eq!(report.retried, vec![a.id]);
    assert_eq!(report.undispatched, vec![c]);
    assert_eq!(report.dead_lettered.len(), 1);
    let dl = &report.dead_lettered[0];
    assert_eq!((dl.job_id, dl.name.as_str()), (b.id, "b"));
    assert_eq!(dl.job_type, "sleep");
    assert_eq!(dl.retry_count, 0);
    assert_eq!(dl.failed_at, Some(t(31)));
    assert_eq!(
        dl.error.as_deref(),
        Some("lease expired: worker w2 stopped renewing (attempt 1)")
    );

    let aj = job(&s, a.id).await;
    assert_eq!(aj.status, JobStatus::Pending);
    assert_eq!((aj.retry_count, aj.attempt), (1, 1));
    assert_eq!(aj.run_at, t(31));
    assert!(aj.seq > a_seq);
    assert!(aj.lease_owner.is_none() && aj.lease_expires_at.is_none());
    assert_eq!(
        aj.error_message.as_deref(),
        Some("lease expired: worker w1 stopped renewing (attempt 1)")
    );

    let bj = job(&s, b.id).await;
    assert_eq!(bj.status, JobStatus::Failed);
    assert_eq!(bj.retry_count, bj.max_retries);
    assert_eq!(bj.completed_at, Some(t(31)));
    assert!(bj.lease_owner.is_none());
    assert_eq!(s.dead_letters(10).await.unwrap(), report.dead_lettered);

    let cj = job(&s, c).await;
    assert_eq!(cj.status, JobStatus::Pending);
    assert_eq!((cj.attempt, cj.retry_count), (1, 0), "nothing counted");
    assert!(cj.seq > c_seq);
    assert!(cj.lease_expires_at.is_none());

    assert_eq!(job(&s, d).await.status, JobStatus::Running);
    assert_eq!(job(&s, e).await.status, JobStatus::Scheduled);

    // The late worker's outcome and the late start are not applied.
    let late = out::completed(a_tok, json!("late"));
    assert!(finish(&s, "w1", &[late], t(32)).await.unwrap().is_empty());
    let late_fail = out::failed(b_tok, "late".into(), 0);
    assert!(
        finish(&s, "w2", &[late_fail], t(32))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        recorded(&s, &[(c_tok, t(32))], "w9", t(60))
            .await
            .is_empty()
    );
    assert!(s.renew(&[a_tok], "w1", t(90)).await.unwrap().is_empty());
    // Re-dispatch bumps the attempt; the old token stays dead.
    let a2 = schedule(&s, a.id, t(33), t(60)).await;
    assert_eq!(a2.attempt, 2);
    assert!(
        recorded(&s, &[(a_tok, t(33))], "w1", t(60))
            .await
            .is_empty()
    );
    let bj2 = job(&s, b.id).await;
    assert_eq!(bj2.error_message, bj.error_message);

    assert_eq!(s.rescue_expired(t(31)).await.unwrap(), Default::default());
}

async fn rescue_never_exceeds_max_retries(db: &TestDb) {
    let s = db.store().await;
    let id = inserted(&s, &custom_job("flaky", "sleep", 5, 1.0, 2), t(0))
        .await
        .id;
    let mut now = 0;
    for expected_retry in 1..=2 {
        run(&s, id, "w", t(now), t(now + 10)).await;
        let report = s.rescue_expired(t(now + 11)).await.unwrap();
        assert_eq!(report.retried, vec![id]);
        let j = job(&s, id).await;
        assert_eq!(
            (j.status, j.retry_count),
            (JobStatus::Pending, expected_retry)
        );
        now += 20;
    }
    run(&s, id, "w", t(now), t(now + 10)).await;
    let report = s.rescue_expired(t(now + 11)).await.unwrap();
    assert!(report.retried.is_empty());
    assert_eq!(report.dead_lettered.len(), 1);
    assert_eq!(report.dead_lettered[0].retry_count, 2);
    let j = job(&s, id).await;
    assert_eq!(
        (j.status, j.retry_count, j.attempt),
        (JobStatus::Failed, 2, 3)
    );
    assert_eq!(
        j.error_message.as_deref(),
        Some("lease expired: worker w stopped renewing (attempt 3)")
    );

    // A worker-reported retry also never pushes retry_count past the budget.
    let other = inserted(&s, &custom_job("o", "sleep", 5, 1.0, 0), t(0))
        .await
        .id;
    let tok = run(&s, other, "w", t(1), t(10)).await;
    let retry = out::retried(tok, "x".into(), t(2));
    assert_eq!(finish(&s, "w", &[retry], t(2)).await.unwrap(), vec![tok]);
    assert_eq!(job(&s, other).await.retry_count, 0);
}

// ---------------------------------------------------------------------------------------------
// WorkerStore

async fn start_rules(db: &TestDb) {
    let s = db.store().await;
    let a = inserted(&s, &custom_job("a", "thumbnail", 3, 2.0, 4), t(0)).await;
    assert!(recorded(&s, &[], "w1", t(30)).await.is_empty());
    // Not scheduled yet: nothing to read, nothing starts.
    let a0 = Token {
        id: a.id,
        attempt: 0,
    };
    assert!(s.fetch(&[a0]).await.unwrap().is_empty());
    assert!(recorded(&s, &[(a0, t(1))], "w1", t(30)).await.is_empty());
    assert_eq!(job(&s, a.id).await.status, JobStatus::Pending);

    let a1 = schedule(&s, a.id, t(1), t(30)).await;
    assert!(
        recorded(&s, &[(a0, t(2))], "w1", t(32)).await.is_empty(),
        "stale attempt"
    );
    let read = s.fetch(&[a1]).await.unwrap();
    assert_eq!(read.len(), 1);
    let sj = &read[0];
    assert_eq!((sj.id, sj.attempt), (a.id, 1));
    assert_eq!((sj.name.as_str(), sj.job_type.as_str()), ("a", "thumbnail"));
    assert_eq!(sj.payload, a.payload);
    assert_eq!(sj.checkpoint, None);
    assert_eq!((sj.retry_count, sj.max_retries, sj.slices), (0, 4, 0));
    assert_eq!(sj.created_at, t(0));
    assert_eq!(recorded(&s, &[(a1, t(2))], "w1", t(32)).await, vec![a1]);
    let j = job(&s, a.id).await;
    assert_eq!(j.status, JobStatus::Running);
    assert_eq!(j.lease_owner.as_deref(), Some("w1"));
    assert_eq!(
        (j.lease_expires_at, j.started_at),
        (Some(t(32)), Some(t(2)))
    );
    assert_eq!(j.slices, 1);
    // Already running: another worker's start does nothing.
    assert!(recorded(&s, &[(a1, t(3))], "w2", t(33)).await.is_empty());
    assert_eq!(job(&s, a.id).await.lease_owner.as_deref(), Some("w1"));

    // Second slice: the checkpoint and the slice count come back.
    let requeue = out::requeued(a1, Some(json!({ "done": 3 })));
    assert_eq!(finish(&s, "w1", &[requeue], t(4)).await.unwrap(), vec![a1]);
    let a2 = schedule(&s, a.id, t(5), t(35)).await;
    let b = insert(&s, "b", t(0)).await;
    let b1 = schedule(&s, b, t(5), t(35)).await;
    // Results come back in token order.
    let read = s.fetch(&[b1, a2]).await.unwrap();
    assert_eq!(read.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b, a.id]);
    assert_eq!(read[1].slices, 1);
    assert_eq!(read[1].attempt, 2);
    assert_eq!(read[1].checkpoint, Some(json!({ "done": 3 })));
    assert_eq!(
        recorded(&s, &[(b1, t(6)), (a2, t(6))], "w2", t(36)).await,
        vec![b1, a2]
    );
    let aj = job(&s, a.id).await;
    assert_eq!((aj.started_at, aj.slices), (Some(t(6)), 2));
}

async fn held_lists_the_running_jobs_under_a_lease(db: &TestDb) {
    let s = db.store().await;
    let [a, b, c, d, e] = inserts(&s, ["a", "b", "c", "d", "e"]).await;
    assert!(
        s.held("w1", &[t(30)]).await.unwrap().is_empty(),
        "nothing claimed yet"
    );
    let a1 = run(&s, a, "w1", t(1), t(30)).await;
    let b1 = run(&s, b, "w1", t(1), t(30)).await;
    let c1 = run(&s, c, "w2", t(1), t(30)).await;
    let _d1 = schedule(&s, d, t(1), t(30)).await;
    let e1 = run(&s, e, "w1", t(1), t(45)).await;

    let sorted = |mut v: Vec<Token>| {
        v.sort_by_key(|t| t.id);
        v
    };
    assert_eq!(
        sorted(s.held("w1", &[t(30)]).await.unwrap()),
        sorted(vec![a1, b1]),
        "only w1's RUNNING jobs with that lease expiry: not w2's, not SCHEDULED ones, not e"
    );
    assert_eq!(
        sorted(s.held("w1", &[t(30), t(45), t(30)]).await.unwrap()),
        sorted(vec![a1, b1, e1])
    );
    assert_eq!(s.held("w2", &[t(30)]).await.unwrap(), vec![c1]);
    assert!(s.held("w1", &[]).await.unwrap().is_empty());
    // A renewed lease no longer has the claim's expiry.
    assert_eq!(s.renew(&[e1], "w1", t(60)).await.unwrap(), vec![e1]);
    assert!(s.held("w1", &[t(45)]).await.unwrap().is_empty());

    // A recorded outcome ends the hold; a handed-back job is held by no one.
    let done = s
        .finish(&[Finished::from(out::completed(a1, json!(1)))], "w1", t(2))
        .await
        .unwrap();
    assert_eq!(done, vec![a1]);
    let back = s
        .finish(&[Finished::from(out::requeued(b1, None))], "w1", t(2))
        .await
        .unwrap();
    assert_eq!(back, vec![b1]);
    assert!(s.held("w1", &[t(30)]).await.unwrap().is_empty());
    let bj = job(&s, b).await;
    assert_eq!(bj.status, JobStatus::Pending);
    assert_eq!(bj.retry_count, 0, "a hand-back burns no retry");
}

/// The id of the job named `name`.
async fn per_queue_id(s: &Arc<dyn Store>, name: &str) -> JobId {
    jobsched_store::testing::all_jobs(s.as_ref())
        .await
        .into_iter()
        .find(|j| j.name == name)
        .expect("job exists")
        .id
}

async fn backlog_sums_the_pending_estimates(db: &TestDb) {
    let s = db.store().await;
    assert!(s.backlog().await.unwrap().is_empty());
    let mut ids = Vec::new();
    for (name, est) in [("a", 1.5), ("b", 2.25), ("c", 4.0)] {
        ids.push(
            inserted(&s, &custom_job(name, "sleep", 5, est, 3), t(0))
                .await
                .id,
        );
    }
    assert_eq!(
        Backlog::total(&s.backlog().await.unwrap()),
        Backlog {
            jobs: 3,
            seconds: 7.75
        }
    );
    let mut other = custom_job("d", "sleep", 5, 10.0, 3);
    other.queue = "other".into();
    inserted(&s, &other, t(0)).await;
    let per_queue = s.backlog().await.unwrap();
    assert_eq!(
        per_queue,
        vec![
            (
                "default".to_string(),
                Backlog {
                    jobs: 3,
                    seconds: 7.75
                }
            ),
            (
                "other".to_string(),
                Backlog {
                    jobs: 1,
                    seconds: 10.0
                }
            ),
        ]
    );
    s.cancel(per_queue_id(&s, "d").await, t(0)).await.unwrap();
    // A running job and a cancelled one are not waiting any more.
    run(&s, ids[0], "w1", t(1), t(30)).await;
    assert_eq!(
        s.cancel(ids[2], t(2)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        Backlog::total(&s.backlog().await.unwrap()),
        Backlog {
            jobs: 1,
            seconds: 2.25
        }
    );
}

async fn renew_rules(db: &TestDb) {
    let s = db.store().await;
    let a = insert(&s, "a", t(0)).await;
    let b = insert(&s, "b", t(0)).await;
    let a1 = run(&s, a, "w1", t(1), t(30)).await;
    let b1 = schedule(&s, b, t(1), t(30)).await;

    assert!(s.renew(&[], "w1", t(60)).await.unwrap().is_empty());
    assert!(
        s.renew(&[a1], "w2", t(60)).await.unwrap().is_empty(),
        "not the owner"
    );
    let a0 = Token { id: a, attempt: 0 };
    assert!(
        s.renew(&[a0], "w1", t(60)).await.unwrap().is_empty(),
        "stale attempt"
    );
    assert!(
        s.renew(&[b1], "w1", t(60)).await.unwrap().is_empty(),
        "not running"
    );
    assert_eq!(job(&s, a).await.lease_expires_at, Some(t(30)));
    assert_eq!(job(&s, b).await.lease_expires_at, Some(t(30)));

    assert_eq!(s.renew(&[b1, a1], "w1", t(60)).await.unwrap(), vec![a1]);
    let aj = job(&s, a).await;
    assert_eq!(aj.lease_expires_at, Some(t(60)));
    assert_eq!(aj.status, JobStatus::Running);
    // A renewed lease is not rescued at the old expiry.
    let report = s.rescue_expired(t(31)).await.unwrap();
    assert!(report.retried.is_empty() && report.dead_lettered.is_empty());
    assert_eq!(report.undispatched, vec![b]);

    let done = out::completed(a1, json!(null));
    assert_eq!(finish(&s, "w1", &[done], t(40)).await.unwrap(), vec![a1]);
    assert!(s.renew(&[a1], "w1", t(90)).await.unwrap().is_empty());
}

/// Every lease a store hands out is found by the rescuer when it ends, and not before: an
/// exchange's claim, a renewal of it, and the engine's dispatch and start.
async fn every_lease_is_rescued_when_it_ends(db: &TestDb) {
    let s = db.store().await;
    let [a, b, c] = inserts(&s, ["a", "b", "c"]).await;
    // a: claimed by an exchange (lease t(30)), then renewed to t(60).
    let a1 = scheduled_tokens(claimed(&s, &claim(1, PolicyKind::Fcfs, t(30)), "w1", t(1)).await);
    assert_eq!(a1.iter().map(|t| t.id).collect::<Vec<_>>(), vec![a]);
    assert_eq!(s.renew(&a1, "w1", t(60)).await.unwrap(), a1);
    // b: claimed by an exchange (lease t(40)), never renewed.
    let b1 = scheduled_tokens(claimed(&s, &claim(1, PolicyKind::Fcfs, t(40)), "w2", t(2)).await);
    assert_eq!(b1.iter().map(|t| t.id).collect::<Vec<_>>(), vec![b]);
    // c: dispatched by the engine (lease t(20)), then started (lease t(50)).
    run(&s, c, "w3", t(3), t(50)).await;

    let nothing = Default::default();
    assert_eq!(
        s.rescue_expired(t(35)).await.unwrap(),
        nothing,
        "a renewed, c started"
    );
    assert_eq!(s.rescue_expired(t(41)).await.unwrap().retried, vec![b]);
    assert_eq!(s.rescue_expired(t(51)).await.unwrap().retried, vec![c]);
    assert_eq!(s.rescue_expired(t(55)).await.unwrap(), nothing);
    assert_eq!(s.rescue_expired(t(61)).await.unwrap().retried, vec![a]);
    assert_eq!(
        s.rescue_expired(t(200)).await.unwrap(),
        nothing,
        "each once"
    );
}

async fn finish_completed_applies_once(db: &TestDb) {
    let s = db.store().await;
    let [a, b, c, d] = inserts(&s, ["a", "b", "c", "d"]).await;
    let a1 = run(&s, a, "w", t(1), t(30)).await;
    let b1 = run(&s, b, "w", t(1), t(30)).await;
    let d1 = schedule(&s, d, t(1), t(30)).await;
    assert!(finish(&s, "w", &[], t(2)).await.unwrap().is_empty());

    let done = out::completed(a1, json!({ "words": 189 }));
    assert_eq!(
        finish(&s, "w", std::slice::from_ref(&done), t(5))
            .await
            .unwrap(),
        vec![a1]
    );
    let aj = job(&s, a).await;
    assert_eq!(aj.status, JobStatus::Completed);
    assert_eq!(aj.result, Some(json!({ "words": 189 })));
    assert_eq!(aj.completed_at, Some(t(5)));
    assert!(aj.lease_owner.is_none() && aj.lease_expires_at.is_none());

    // Duplicate delivery and a conflicting late outcome are both ignored.
    assert!(finish(&s, "w", &[done], t(6)).await.unwrap().is_empty());
    let fail = out::failed(a1, "x".into(), 1);
    assert!(finish(&s, "w", &[fail], t(6)).await.unwrap().is_empty());
    let aj2 = job(&s, a).await;
    assert_eq!(aj2, aj);

    // The same token twice in one call: the first outcome wins, once.
    let first = out::completed(b1, json!(1));
    let second = out::completed(b1, json!(2));
    assert_eq!(
        finish(&s, "w", &[first, second], t(7)).await.unwrap(),
        vec![b1]
    );
    assert_eq!(job(&s, b).await.result, Some(json!(1)));

    // Not running: PENDING and SCHEDULED jobs take no outcome.
    let c0 = Token { id: c, attempt: 0 };
    let outcomes = [out::completed(c0, json!(0)), out::completed(d1, json!(0))];
    assert!(finish(&s, "w", &outcomes, t(8)).await.unwrap().is_empty());
    assert_eq!(job(&s, c).await.status, JobStatus::Pending);
    assert_eq!(job(&s, d).await.status, JobStatus::Scheduled);
}

async fn finish_retry_failed_requeue(db: &TestDb) {
    let s = db.store().await;
    let [r, f, q, q2] = inserts(&s, ["r", "f", "q", "q2"]).await;
    // q2 saves a checkpoint in a first slice.
    let q2_1 = run(&s, q2, "w", t(1), t(30)).await;
    let save = out::requeued(q2_1, Some(json!({ "offset": 10 })));
    assert_eq!(finish(&s, "w", &[save], t(2)).await.unwrap(), vec![q2_1]);

    let r1 = run(&s, r, "w", t(3), t(30)).await;
    let f1 = run(&s, f, "w", t(3), t(30)).await;
    let q1 = run(&s, q, "w", t(3), t(30)).await;
    let q2_2 = run(&s, q2, "w", t(3), t(30)).await;
    let seqs: HashMap<JobId, i64> = {
        let mut m = HashMap::new();
        for id in [r, q, q2] {
            m.insert(id, job(&s, id).await.seq);
        }
        m
    };

    let batch = [
        out::retried(r1, "flaky".into(), t(100)),
        out::failed(f1, "boom".into(), 99),
        out::requeued(q1, Some(json!({ "offset": 5 }))),
        out::requeued(q2_2, None),
    ];
    assert_eq!(
        finish(&s, "w", &batch, t(10)).await.unwrap(),
        vec![r1, f1, q1, q2_2],
        "all applied, in input order"
    );

    let rj = job(&s, r).await;
    assert_eq!(rj.status, JobStatus::Pending);
    assert_eq!((rj.retry_count, rj.attempt), (1, 1));
    assert_eq!(rj.error_message.as_deref(), Some("flaky"));
    assert_eq!(rj.run_at, t(100));
    assert!(rj.seq > seqs[&r]);
    assert!(rj.lease_owner.is_none() && rj.lease_expires_at.is_none());
    assert!(rj.completed_at.is_none());

    let fj = job(&s, f).await;
    assert_eq!(fj.status, JobStatus::Failed);
    assert_eq!(fj.error_message.as_deref(), Some("boom"));
    assert_eq!(fj.retry_count, 3, "capped at max_retries");
    assert_eq!(fj.completed_at, Some(t(10)));
    assert!(fj.lease_owner.is_none());
    let dls = s.dead_letters(10).await.unwrap();
    assert_eq!(dls.len(), 1);
    assert_eq!(
        (dls[0].job_id, dls[0].error.as_deref(), dls[0].failed_at),
        (f, Some("boom"), Some(t(10)))
    );

    let qj = job(&s, q).await;
    assert_eq!(qj.status, JobStatus::Pending);
    assert_eq!(qj.checkpoint, Some(json!({ "offset": 5 })));
    assert_eq!((qj.retry_count, qj.run_at), (0, t(10)));
    assert!(qj.seq > seqs[&q]);
    assert!(qj.error_message.is_none());

    let q2j = job(&s, q2).await;
    assert_eq!(q2j.status, JobStatus::Pending);
    assert_eq!(
        q2j.checkpoint,
        Some(json!({ "offset": 10 })),
        "None keeps the stored checkpoint"
    );
    assert_eq!(q2j.slices, 2);
    assert!(q2j.seq > seqs[&q2]);

    // Stale tokens after the fact.
    let again = out::completed(r1, json!(0));
    assert!(finish(&s, "w", &[again], t(11)).await.unwrap().is_empty());
    let pending: HashSet<JobId> = s
        .pending_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.queued.id)
        .collect();
    assert_eq!(pending, HashSet::from([r, q, q2]));
}

/// A worker that begins a body before its start is written: `fetch` reads, `record_starts`
/// writes the start, or `finish` with `started_at` writes start and outcome in one update.
async fn fetch_then_record_start_or_finish_in_one(db: &TestDb) {
    let s = db.store().await;
    let a = inserted(&s, &custom_job("a", "sleep", 2, 1.5, 3), t(0)).await;
    let [b, c, p] = inserts(&s, ["b", "c", "p"]).await;
    let a1 = schedule(&s, a.id, t(1), t(30)).await;
    let b1 = schedule(&s, b, t(1), t(30)).await;
    let c1 = schedule(&s, c, t(1), t(30)).await;
    let p0 = token(&s, p).await;
    let stale = Token {
        id: b,
        attempt: b1.attempt + 1,
    };
    assert!(s.fetch(&[]).await.unwrap().is_empty());

    // fetch: the SCHEDULED jobs of matching tokens, unchanged; PENDING and stale ones left out.
    let before = job(&s, a.id).await;
    let fetched = s.fetch(&[p0, a1, stale, c1]).await.unwrap();
    assert_eq!(
        fetched
            .iter()
            .map(|j| (j.id, j.attempt))
            .collect::<Vec<_>>(),
        vec![(a.id, a1.attempt), (c, c1.attempt)]
    );
    assert_eq!(
        (
            fetched[0].name.as_str(),
            fetched[0].job_type.as_str(),
            fetched[0].slices,
            fetched[0].max_retries,
            &fetched[0].payload
        ),
        ("a", "sleep", 0, 3, &a.payload)
    );
    assert_eq!(job(&s, a.id).await, before, "fetch changes nothing");

    // record_starts: SCHEDULED -> RUNNING at the given start, fenced by the attempt.
    assert!(recorded(&s, &[], "w", t(30)).await.is_empty());
    let applied = recorded(&s, &[(a1, t(2)), (stale, t(2)), (p0, t(2))], "w", t(40)).await;
    assert_eq!(applied, vec![a1]);
    let aj = job(&s, a.id).await;
    assert_eq!(
        (aj.status, aj.started_at, aj.slices),
        (JobStatus::Running, Some(t(2)), 1)
    );
    assert_eq!(
        (aj.lease_owner.as_deref(), aj.lease_expires_at),
        (Some("w"), Some(t(40)))
    );
    assert!(
        s.fetch(&[a1]).await.unwrap().is_empty(),
        "no longer SCHEDULED"
    );
    assert!(
        recorded(&s, &[(a1, t(3))], "w2", t(40)).await.is_empty(),
        "another worker cannot record the start"
    );
    // The same owner again (a retry after a lost reply): applied, nothing counted twice.
    assert_eq!(recorded(&s, &[(a1, t(3))], "w", t(50)).await, vec![a1]);
    let aj = job(&s, a.id).await;
    assert_eq!(
        (aj.status, aj.started_at, aj.slices, aj.lease_expires_at),
        (JobStatus::Running, Some(t(2)), 1, Some(t(50)))
    );
    // Another worker cannot record an outcome under w's lease, even with a start time.
    let other = Finished {
        outcome: out::completed(a1, json!("other")),
        started_at: Some(t(3)),
    };
    assert!(s.finish(&[other], "w2", t(4)).await.unwrap().is_empty());
    assert_eq!(job(&s, a.id).await.status, JobStatus::Running);

    // finish with started_at: SCHEDULED -> RUNNING -> COMPLETED in one update.
    let merged = Finished {
        outcome: out::completed(b1, json!({ "ok": 1 })),
        started_at: Some(t(5)),
    };
    let stale_merged = Finished {
        outcome: out::completed(stale, json!(0)),
        started_at: Some(t(5)),
    };
    assert!(
        s.finish(&[stale_merged], "w", t(6))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.finish(std::slice::from_ref(&merged), "w", t(6))
            .await
            .unwrap(),
        vec![b1]
    );
    let bj = job(&s, b).await;
    assert_eq!(
        (bj.status, bj.started_at, bj.completed_at, bj.slices),
        (JobStatus::Completed, Some(t(5)), Some(t(6)), 1)
    );
    assert!(bj.lease_owner.is_none() && bj.lease_expires_at.is_none());
    assert!(
        s.finish(&[merged], "w", t(7)).await.unwrap().is_empty(),
        "once"
    );

    // A merged requeue counts the slice and keeps the checkpoint; the start is recorded.
    let requeue = Finished {
        outcome: out::requeued(c1, Some(json!({ "offset": 3 }))),
        started_at: Some(t(8)),
    };
    assert_eq!(s.finish(&[requeue], "w", t(9)).await.unwrap(), vec![c1]);
    let cj = job(&s, c).await;
    assert_eq!(
        (cj.status, cj.started_at, cj.slices, cj.checkpoint),
        (
            JobStatus::Pending,
            Some(t(8)),
            1,
            Some(json!({ "offset": 3 }))
        )
    );

    // The recorded run of `a` finishes under its owner; a start time sent along (the worker
    // did not learn that its start was written) changes neither the start nor the slices.
    let done = Finished {
        outcome: out::completed(a1, json!(1)),
        started_at: Some(t(9)),
    };
    assert_eq!(s.finish(&[done], "w", t(10)).await.unwrap(), vec![a1]);
    let aj = job(&s, a.id).await;
    assert_eq!(
        (aj.status, aj.started_at, aj.slices),
        (JobStatus::Completed, Some(t(2)), 1)
    );
}

// ---------------------------------------------------------------------------------------------
// DeadLetterStore

async fn fail(s: &Arc<dyn Store>, name: &str, at: DateTime<Utc>) -> JobId {
    let id = insert(s, name, t(0)).await;
    let tok = run(s, id, "w", at - Cd::seconds(1), at + Cd::seconds(30)).await;
    let outcome = out::failed(tok, format!("{name} broke"), 3);
    assert_eq!(finish(s, "w", &[outcome], at).await.unwrap(), vec![tok]);
    id
}

async fn dead_letters_retry_and_purge(db: &TestDb) {
    let s = db.store().await;
    assert!(s.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(s.dead_letter_count().await.unwrap(), 0);
    let f1 = fail(&s, "f1", t(10)).await;
    let f2 = fail(&s, "f2", t(20)).await;
    let f3 = fail(&s, "f3", t(30)).await;
    let done = insert(&s, "done", t(0)).await;
    let tok = run(&s, done, "w", t(1), t(30)).await;
    finish(&s, "w", &[out::completed(tok, json!(1))], t(2))
        .await
        .unwrap();

    let ids =
        |v: Vec<jobsched_core::DeadLetter>| v.into_iter().map(|d| d.job_id).collect::<Vec<_>>();
    assert_eq!(ids(s.dead_letters(10).await.unwrap()), vec![f3, f2, f1]);
    assert_eq!(ids(s.dead_letters(2).await.unwrap()), vec![f3, f2]);
    assert_eq!(s.dead_letter_count().await.unwrap(), 3);
    let first = &s.dead_letters(1).await.unwrap()[0];
    assert_eq!(first.name, "f3");
    assert_eq!(first.job_type, "sleep");
    assert_eq!(first.error.as_deref(), Some("f3 broke"));
    assert_eq!((first.retry_count, first.failed_at), (3, Some(t(30))));

    let old_seq = job(&s, f2).await.seq;
    assert_eq!(
        s.retry_dead_letter(f2, t(40)).await.unwrap(),
        Update::Applied
    );
    let j = job(&s, f2).await;
    assert_eq!(j.status, JobStatus::Pending);
    assert_eq!(j.retry_count, 0);
    assert_eq!(j.error_message.as_deref(), Some("f2 broke"), "error kept");
    assert!(j.completed_at.is_none());
    assert_eq!(j.run_at, t(40));
    assert!(j.seq > old_seq);
    assert_eq!(ids(s.dead_letters(10).await.unwrap()), vec![f3, f1]);
    assert_eq!(s.dead_letter_count().await.unwrap(), 2);
    // The re-run is dispatchable with a fresh attempt.
    let tok = schedule(&s, f2, t(41), t(70)).await;
    assert_eq!(tok.attempt, 2);

    assert_eq!(s.retry_dead_letter(f2, t(42)).await.unwrap(), Update::Stale);
    assert_eq!(
        s.retry_dead_letter(done, t(42)).await.unwrap(),
        Update::Stale
    );
    assert_eq!(
        s.retry_dead_letter(Uuid::now_v7(), t(42)).await.unwrap(),
        Update::Stale
    );

    assert_eq!(s.purge_dead_letters().await.unwrap(), 2);
    assert!(s.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(s.dead_letter_count().await.unwrap(), 0);
    assert_eq!(
        job(&s, f1).await.status,
        JobStatus::Failed,
        "jobs stay FAILED"
    );
    assert_eq!(
        s.retry_dead_letter(f1, t(43)).await.unwrap(),
        Update::Stale,
        "purged entries cannot be retried"
    );
    assert_eq!(s.purge_dead_letters().await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// ControlStore

async fn leader_election(db: &TestDb) {
    let s = db.store().await;
    let other = db.store().await;
    let ttl = Duration::from_secs(10);
    // Whether `holder` holds `role` after trying to take or renew it at `at`, through `store`.
    let leads = async |store: &Arc<dyn Store>, role, holder, at| {
        let held = store.try_lead(&lease(role, holder, ttl), at).await;
        held.unwrap()
    };
    assert!(leads(&s, "engine", "a", t(0)).await);
    assert!(!leads(&other, "engine", "b", t(5)).await);
    assert!(leads(&s, "engine", "a", t(5)).await, "renew");
    assert!(!leads(&other, "engine", "b", t(14)).await);
    // a's renewed lease ran until t(15): b takes over once it has expired.
    assert!(leads(&other, "engine", "b", t(15)).await);
    assert!(!leads(&s, "engine", "a", t(16)).await);
    assert!(
        leads(&s, "controller", "a", t(16)).await,
        "roles are independent"
    );

    s.resign(&lease("engine", "a", ttl)).await.unwrap();
    assert!(
        !leads(&s, "engine", "c", t(17)).await,
        "a non-holder's resign changes nothing"
    );
    other.resign(&lease("engine", "b", ttl)).await.unwrap();
    assert!(leads(&s, "engine", "c", t(17)).await);
    assert!(!leads(&other, "engine", "b", t(18)).await);
}

async fn policy_settings_round_trip(db: &TestDb) {
    let s = db.store().await;
    s.ping().await.unwrap();
    assert_eq!(s.policy().await.unwrap(), None);
    let default = PolicySettings::default();
    s.set_policy(&default).await.unwrap();
    assert_eq!(s.policy().await.unwrap(), Some(default));
    let custom = PolicySettings {
        policy: PolicyKind::RoundRobin,
        quantum_seconds: 2.5,
        paused: true,
        managed_by: Some("default/scheduler".into()),
        ..Default::default()
    };
    s.set_policy(&custom).await.unwrap();
    assert_eq!(s.policy().await.unwrap(), Some(custom.clone()));
    // A second store (another process) sees the durable copy.
    assert_eq!(db.store().await.policy().await.unwrap(), Some(custom));
}

// ---------------------------------------------------------------------------------------------
// Concurrency

async fn pending_tokens(s: &Arc<dyn Store>, n: usize) -> Vec<Token> {
    let jobs: Vec<NewJob> = (0..n).map(|i| new_job(&format!("c{i}"))).collect();
    s.insert_many(&jobs, t(0)).await.unwrap();
    s.pending_after(0, n as u32)
        .await
        .unwrap()
        .into_iter()
        .map(|p| Token {
            id: p.queued.id,
            attempt: p.queued.attempt,
        })
        .collect()
}

fn assert_partition(a: &[JobId], b: &[JobId], all: &[Token]) {
    let a: HashSet<JobId> = a.iter().copied().collect();
    let b: HashSet<JobId> = b.iter().copied().collect();
    assert!(a.is_disjoint(&b), "a job was claimed twice");
    let union: HashSet<JobId> = a.union(&b).copied().collect();
    let expected: HashSet<JobId> = all.iter().map(|t| t.id).collect();
    assert_eq!(union, expected, "every job claimed exactly once");
}

async fn concurrent_mark_scheduled_claims_each_job_once(db: &TestDb) {
    let s1 = db.store().await;
    let s2 = db.store().await;
    let tokens = pending_tokens(&s1, 200).await;
    let reversed: Vec<Token> = tokens.iter().rev().copied().collect();
    let (fa, fb) = (s1.clone(), s2.clone());
    let ta = tokens.clone();
    let a = tokio::spawn(async move { fa.mark_scheduled(&ta, t(1), t(30)).await });
    let b = tokio::spawn(async move { fb.mark_scheduled(&reversed, t(1), t(30)).await });
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert!(a.iter().chain(&b).all(|j| j.attempt == 1));
    let ids = |v: &[StartedJob]| v.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_partition(&ids(&a), &ids(&b), &tokens);
    assert_eq!(s1.stats().await.unwrap().scheduled, 200);
}

async fn concurrent_start_claims_each_job_once(db: &TestDb) {
    let s1 = db.store().await;
    let s2 = db.store().await;
    let pending = pending_tokens(&s1, 200).await;
    let tokens = scheduled_tokens(s1.mark_scheduled(&pending, t(1), t(30)).await.unwrap());
    assert_eq!(tokens.len(), 200);
    let ta: Vec<(Token, DateTime<Utc>)> = tokens.iter().map(|tok| (*tok, t(2))).collect();
    let reversed: Vec<(Token, DateTime<Utc>)> = ta.iter().rev().copied().collect();
    let (fa, fb) = (s1.clone(), s2.clone());
    let a = tokio::spawn(async move { fa.record_starts(&ta, "w1", t(32)).await });
    let b = tokio::spawn(async move { fb.record_starts(&reversed, "w2", t(32)).await });
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    let ids = |v: &[Token]| v.iter().map(|tok| tok.id).collect::<Vec<_>>();
    assert_partition(&ids(&a), &ids(&b), &tokens);
    // Each job's lease belongs to the worker that got it.
    for (started, owner) in [(&a, "w1"), (&b, "w2")] {
        for tok in started.iter().take(20) {
            assert_eq!(job(&s1, tok.id).await.lease_owner.as_deref(), Some(owner));
        }
    }
    assert_eq!(s1.stats().await.unwrap().running, 200);
}

// ---------------------------------------------------------------------------------------------
// Transitions

async fn illegal_transitions_change_nothing(db: &TestDb) {
    let s = db.store().await;
    let [p, sc, r, co, f, ca] = inserts(&s, ["p", "sc", "r", "co", "f", "ca"]).await;
    let sc1 = schedule(&s, sc, t(1), t(1000)).await;
    let r1 = run(&s, r, "w", t(1), t(1000)).await;
    let co1 = run(&s, co, "w", t(1), t(1000)).await;
    let f1 = run(&s, f, "w", t(1), t(1000)).await;
    let ca0 = token(&s, ca).await;
    let p0 = token(&s, p).await;
    finish(
        &s,
        "w",
        &[
            out::completed(co1, json!(1)),
            out::failed(f1, "x".into(), 0),
        ],
        t(2),
    )
    .await
    .unwrap();
    assert_eq!(s.cancel(ca, t(2)).await.unwrap(), CancelOutcome::Cancelled);
    let before = statuses(&s).await;
    let jobs_before: Vec<Job> = {
        let mut v = Vec::new();
        for id in [p, sc, r, co, f, ca] {
            v.push(job(&s, id).await);
        }
        v
    };

    // start: only SCHEDULED may start.
    for tok in [p0, r1, co1, f1, ca0] {
        assert!(recorded(&s, &[(tok, t(3))], "w2", t(60)).await.is_empty());
    }
    // finish: only RUNNING takes an outcome, whatever the kind.
    for tok in [p0, sc1, co1, f1, ca0] {
        let outcomes = [
            out::completed(tok, json!(0)),
            out::retried(tok, "e".into(), t(3)),
            out::failed(tok, "e".into(), 1),
            out::requeued(tok, None),
        ];
        for o in outcomes {
            assert!(
                finish(&s, "w", &[o], t(3)).await.unwrap().is_empty(),
                "{tok:?}"
            );
        }
    }
    // mark_scheduled: only PENDING may be dispatched.
    for tok in [sc1, r1, co1, f1, ca0] {
        assert!(
            s.mark_scheduled(&[tok], t(3), t(60))
                .await
                .unwrap()
                .is_empty()
        );
    }
    // renew: only RUNNING leases.
    for tok in [p0, sc1, co1, f1, ca0] {
        assert!(s.renew(&[tok], "w", t(60)).await.unwrap().is_empty());
    }
    // cancel: only PENDING / SCHEDULED / RUNNING (see cancel_rules), never an ended job.
    for (id, status) in [
        (co, JobStatus::Completed),
        (f, JobStatus::Failed),
        (ca, JobStatus::Cancelled),
    ] {
        assert_eq!(
            s.cancel(id, t(3)).await.unwrap(),
            CancelOutcome::NotCancellable(status)
        );
    }
    // retry_dead_letter: only FAILED dead letters.
    for id in [p, sc, r, co, ca] {
        assert_eq!(s.retry_dead_letter(id, t(3)).await.unwrap(), Update::Stale);
    }
    // Nothing changed at all.
    for before_job in &jobs_before {
        assert_eq!(&job(&s, before_job.id).await, before_job);
    }

    // Each legal operation moves jobs only along allowed edges.
    let mut prev = before;
    let report = s.rescue_expired(t(2000)).await.unwrap();
    assert_eq!(report.undispatched, vec![sc]);
    assert_eq!(report.retried, vec![r]);
    let now = statuses(&s).await;
    assert_transitions_allowed(&prev, &now);
    prev = now;
    assert_eq!(
        s.retry_dead_letter(f, t(2001)).await.unwrap(),
        Update::Applied
    );
    let now = statuses(&s).await;
    assert_transitions_allowed(&prev, &now);
    prev = now;
    let tokens: Vec<Token> = {
        let mut v = Vec::new();
        for id in [p, sc, r, f] {
            v.push(token(&s, id).await);
        }
        v
    };
    let scheduled = scheduled_tokens(s.mark_scheduled(&tokens, t(2002), t(3000)).await.unwrap());
    assert_eq!(scheduled.len(), 4);
    let now = statuses(&s).await;
    assert_transitions_allowed(&prev, &now);
    prev = now;
    let starts: Vec<(Token, DateTime<Utc>)> = scheduled.iter().map(|tok| (*tok, t(2003))).collect();
    let started = recorded(&s, &starts, "w", t(3000)).await;
    assert_eq!(started.len(), 4);
    let now = statuses(&s).await;
    assert_transitions_allowed(&prev, &now);
    prev = now;
    let outcomes = [
        out::completed(scheduled[0], json!(1)),
        out::retried(scheduled[1], "e".into(), t(2005)),
        out::failed(scheduled[2], "e".into(), 3),
        out::requeued(scheduled[3], None),
    ];
    assert_eq!(finish(&s, "w", &outcomes, t(2004)).await.unwrap().len(), 4);
    let now = statuses(&s).await;
    assert_transitions_allowed(&prev, &now);
    assert_eq!(now[&p], JobStatus::Completed);
    assert_eq!(now[&sc], JobStatus::Pending);
    assert_eq!(now[&r], JobStatus::Failed);
    assert_eq!(now[&f], JobStatus::Pending);
}

// ---------------------------------------------------------------------------------------------
// Counts kept by the store (Postgres keeps them incrementally; they must match the rows)

/// Total, then the count per state in lifecycle order.
fn counts_of(stats: &JobStats) -> (i64, i64, i64, i64, i64, i64, i64) {
    (
        stats.total_jobs,
        stats.pending,
        stats.scheduled,
        stats.running,
        stats.completed,
        stats.failed,
        stats.cancelled,
    )
}

/// `stats()` and every status filter's `total` agree with the rows themselves, and each
/// filtered page holds only jobs in that status; `backlog()` holds each queue's PENDING jobs
/// but the `delayed` ones, with their summed estimates.
async fn assert_counts_match_rows(s: &Arc<dyn Store>, delayed: &[JobId], when: &str) {
    let mut want: std::collections::BTreeMap<String, Backlog> = Default::default();
    for j in jobsched_store::testing::all_jobs(s.as_ref()).await {
        if j.status == JobStatus::Pending && !delayed.contains(&j.id) {
            let b = want.entry(j.queue).or_default();
            b.jobs += 1;
            b.seconds += j.estimated_duration;
        }
    }
    let want: Vec<(String, Backlog)> = want.into_iter().collect();
    let got = s.backlog().await.unwrap();
    assert_eq!(
        got.iter().map(|(q, b)| (q, b.jobs)).collect::<Vec<_>>(),
        want.iter().map(|(q, b)| (q, b.jobs)).collect::<Vec<_>>(),
        "backlog jobs {when}"
    );
    for ((q, g), (_, w)) in got.iter().zip(&want) {
        assert!(
            (g.seconds - w.seconds).abs() < 1e-6,
            "backlog seconds of {q}: {} != {} {when}",
            g.seconds,
            w.seconds
        );
    }
    let rows = statuses(s).await;
    let count = |st: JobStatus| rows.values().filter(|&&x| x == st).count() as i64;
    assert_eq!(
        counts_of(&s.stats().await.unwrap()),
        (
            rows.len() as i64,
            count(JobStatus::Pending),
            count(JobStatus::Scheduled),
            count(JobStatus::Running),
            count(JobStatus::Completed),
            count(JobStatus::Failed),
            count(JobStatus::Cancelled)
        ),
        "stats {when}"
    );
    let mut run_ms = Vec::new();
    for st in JobStatus::ALL {
        let filter = JobFilter {
            status: Some(st),
            ..page(1, 10_000)
        };
        let page = listed(s, &filter).await;
        assert_eq!(page.total, count(st), "{st:?} total {when}");
        assert_eq!(page.jobs.len() as i64, count(st), "{st:?} rows {when}");
        assert!(
            page.jobs.iter().all(|j| j.status == st),
            "{st:?} rows {when}"
        );
        if st == JobStatus::Completed {
            run_ms.extend(page.jobs.iter().filter_map(|j| {
                Some((j.completed_at? - j.started_at?).num_microseconds()? as f64 / 1e3)
            }));
        }
    }
    // The mean run time of COMPLETED jobs, kept with the counts.
    match s.stats().await.unwrap().avg_execution_time_ms {
        Some(mean) => {
            let want = run_ms.iter().sum::<f64>() / run_ms.len() as f64;
            assert!(
                (mean - want).abs() < 1e-3,
                "mean run time {mean} != {want} {when}"
            );
        }
        None => assert!(run_ms.is_empty(), "no mean run time {when}"),
    }
}

async fn counts_follow_every_transition(db: &TestDb) {
    let s = db.store().await;
    assert_counts_match_rows(&s, &[], "when empty").await;
    // One statement per job: enough deltas for the Postgres store to fold them.
    // Estimates that differ (so the backlog's sums would show a job counted under another's
    // estimate), and every seventh job in a queue of its own.
    let mut ids = Vec::new();
    for i in 0..110 {
        let mut job = custom_job(&format!("c{i}"), "sleep", 5, 0.5 + f64::from(i) * 0.25, 3);
        if i % 7 == 3 {
            job.queue = "other".into();
        }
        ids.push(inserted(&s, &job, t(0)).await.id);
    }
    let batch: Vec<NewJob> = (0..20)
        .map(|i| custom_job(&format!("b{i}"), "sleep", 5, 2.1 + f64::from(i), 3))
        .collect();
    ids.extend(s.insert_many(&batch, t(0)).await.unwrap());
    assert_counts_match_rows(&s, &[], "after inserts").await;

    // 40 dispatched in one claim, 30 of them started.
    let current: Vec<Token> = {
        let mut v = Vec::new();
        for &id in &ids[..40] {
            v.push(token(&s, id).await);
        }
        v
    };
    let scheduled = scheduled_tokens(s.mark_scheduled(&current, t(1), t(20)).await.unwrap());
    assert_eq!(scheduled.len(), 40);
    let starts: Vec<(Token, DateTime<Utc>)> = scheduled[..30].iter().map(|&k| (k, t(2))).collect();
    assert_eq!(recorded(&s, &starts, "w", t(20)).await.len(), 30);
    assert_counts_match_rows(&s, &[], "after dispatch").await;

    // Outcomes of every kind in one call, one recorded together with its start.
    let mut runs: Vec<Finished> = Vec::new();
    for (i, &tok) in scheduled[..30].iter().enumerate() {
        let outcome = match i % 5 {
            0 | 1 => out::completed(tok, json!({ "i": i })),
            2 => out::retried(tok, "again".into(), t(5)),
            3 => out::failed(tok, "no".into(), 3),
            _ => out::requeued(tok, None),
        };
        runs.push(outcome.into());
    }
    runs.push(Finished {
        outcome: out::completed(scheduled[30], json!(null)),
        started_at: Some(t(3)),
    });
    assert_eq!(s.finish(&runs, "w", t(4)).await.unwrap().len(), 31);
    assert_counts_match_rows(&s, &[], "after outcomes").await;

    // Cancels (PENDING and SCHEDULED), a dead letter retried, leases rescued.
    for &id in &ids[100..110] {
        assert_eq!(s.cancel(id, t(5)).await.unwrap(), CancelOutcome::Cancelled);
    }
    assert_eq!(
        s.cancel(scheduled[31].id, t(5)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        s.retry_dead_letter(scheduled[3].id, t(6)).await.unwrap(),
        Update::Applied
    );
    let report = s.rescue_expired(t(60)).await.unwrap();
    assert_eq!(report.undispatched.len(), 8, "{report:?}");
    assert_counts_match_rows(&s, &[], "after cancels and rescue").await;
    // A second read (after the Postgres store folded its deltas) says the same.
    assert_counts_match_rows(&s, &[], "read again").await;

    // A worker's exchanges: claims, then one outcome of each kind with successors claimed.
    let got = s
        .exchange(&[], "x", t(7), &claim(4, PolicyKind::Fcfs, t(40)))
        .await
        .unwrap()
        .claimed;
    let tokens = scheduled_tokens(got);
    assert_eq!(tokens.len(), 4);
    assert_counts_match_rows(&s, &[], "after a claim").await;
    let outcomes = [
        out::completed(tokens[0], json!(0)),
        out::retried(tokens[1], "again".into(), t(8)),
        out::failed(tokens[2], "no".into(), 3),
        out::requeued(tokens[3], None),
    ];
    let exchanged = s
        .exchange(&outcomes, "x", t(9), &claim(3, PolicyKind::Priority, t(41)))
        .await
        .unwrap();
    assert_eq!((exchanged.applied.len(), exchanged.claimed.len()), (4, 3));
    assert_counts_match_rows(&s, &[], "after an exchange").await;

    // A RUNNING job cancelled (its worker is told to stop); a start recorded twice (the reply
    // to the first was lost); a delayed job promoted; the dead letters purged.
    let running = exchanged.claimed[0].id;
    assert_eq!(
        s.cancel(running, t(10)).await.unwrap(),
        CancelOutcome::Stopping
    );
    let next = ids[60];
    let started = [(schedule(&s, next, t(10), t(30)).await, t(11))];
    assert_eq!(recorded(&s, &started, "w", t(40)).await.len(), 1);
    assert_eq!(recorded(&s, &started, "w", t(41)).await.len(), 1);
    let later = NewJob {
        run_at: Some(t(100)),
        ..new_job("later")
    };
    let later = inserted(&s, &later, t(10)).await.id;
    assert_eq!(s.stats().await.unwrap().delayed, 1);
    // A dispatcher may hand on a delayed job before it is promoted; sent back for a retry,
    // it is delayed again.
    let handed = schedule(&s, later, t(10), t(30)).await;
    assert_eq!(s.stats().await.unwrap().delayed, 0);
    let retry = Finished {
        outcome: out::retried(handed, "again".into(), t(100)),
        started_at: Some(t(11)),
    };
    assert_eq!(s.finish(&[retry], "w", t(12)).await.unwrap().len(), 1);
    assert_eq!(s.stats().await.unwrap().delayed, 1);
    assert_counts_match_rows(&s, &[later], "after a delayed job's retry").await;
    assert_eq!(s.promote_due(t(100), 10).await.unwrap().promoted, 1);
    assert_eq!(s.stats().await.unwrap().delayed, 0);
    assert!(s.purge_dead_letters().await.unwrap() > 0);
    assert_counts_match_rows(&s, &[], "after a cancel, starts, a promotion and a purge").await;

    // Leases ended: the rescuer sends the RUNNING jobs back to PENDING for a retry.
    let report = s.rescue_expired(t(200)).await.unwrap();
    assert!(!report.retried.is_empty(), "{report:?}");
    assert_counts_match_rows(&s, &[], "after running jobs were rescued").await;
    // One job back into PENDING and another out of it in one exchange: the count nets to
    // nothing, their estimates do not.
    let one = s
        .exchange(&[], "y", t(201), &claim(1, PolicyKind::Fcfs, t(260)))
        .await
        .unwrap()
        .claimed;
    let back = scheduled_tokens(one)[0];
    let swapped = s
        .exchange(
            &[out::requeued(back, None)],
            "y",
            t(202),
            &claim(1, PolicyKind::Fcfs, t(261)),
        )
        .await
        .unwrap();
    assert_eq!((swapped.applied.len(), swapped.claimed.len()), (1, 1));
    assert_ne!(
        job(&s, back.id).await.estimated_duration,
        job(&s, swapped.claimed[0].id).await.estimated_duration
    );
    assert_counts_match_rows(&s, &[], "after an exchange whose counts net to nothing").await;
    // Many single cancels: enough deltas for the Postgres store to fold them, PENDING
    // estimates going down.
    let pending: Vec<JobId> = statuses(&s)
        .await
        .into_iter()
        .filter(|&(_, st)| st == JobStatus::Pending)
        .map(|(id, _)| id)
        .collect();
    assert!(pending.len() > 70, "{} pending", pending.len());
    for &id in &pending[..70] {
        assert_eq!(
            s.cancel(id, t(203)).await.unwrap(),
            CancelOutcome::Cancelled
        );
    }
    assert_counts_match_rows(&s, &[], "after many cancels").await;
    assert_counts_match_rows(&s, &[], "after many cancels, read again").await;
}

// ---------------------------------------------------------------------------------------------
// Claims (workers take their own work)

fn claim(limit: u32, order: PolicyKind, lease_until: DateTime<Utc>) -> Claim {
    Claim {
        limit,
        order,
        lease_until,
        queue: "default".into(),
        concurrency_limit: None,
        job_types: None,
    }
}

async fn claim_takes_due_jobs_in_the_policy_order(db: &TestDb) {
    let s = db.store().await;
    // (name, priority, estimate), inserted in this order.
    let specs = [
        ("a", 5, 3.0),
        ("b", 1, 9.0),
        ("c", 3, 1.0),
        ("d", 1, 2.0),
        ("e", 9, 0.5),
        ("f", 5, 3.0),
    ];
    let mut ids = HashMap::new();
    for (name, priority, est) in specs {
        let id = inserted(&s, &custom_job(name, "sleep", priority, est, 3), t(0))
            .await
            .id;
        ids.insert(id, name);
    }
    let names = |jobs: &[StartedJob]| jobs.iter().map(|j| ids[&j.id]).collect::<Vec<_>>();
    assert!(
        claimed(&s, &claim(0, PolicyKind::Fcfs, t(30)), "w", t(1))
            .await
            .is_empty()
    );
    // Priority: 1 first, ties by queue entry.
    let got = claimed(&s, &claim(2, PolicyKind::Priority, t(31)), "w1", t(1)).await;
    assert_eq!(names(&got), ["b", "d"]);
    // SJF over what is left: shortest estimate first.
    let got = claimed(&s, &claim(2, PolicyKind::Sjf, t(32)), "w2", t(2)).await;
    assert_eq!(names(&got), ["e", "c"]);
    // FCFS: by queue entry; asking for more than is left takes what is left.
    let got = claimed(&s, &claim(5, PolicyKind::Fcfs, t(33)), "w3", t(3)).await;
    assert_eq!(names(&got), ["a", "f"]);
    assert!(
        claimed(&s, &claim(5, PolicyKind::RoundRobin, t(33)), "w3", t(3))
            .await
            .is_empty()
    );
    // Each is RUNNING under its claimer's lease, attempt 1, started at the claim; `slices`
    // counts the runs before this one.
    let d = got[0].clone();
    assert_eq!((d.attempt, d.slices, d.retry_count), (1, 0, 0));
    assert_eq!(job(&s, d.id).await.slices, 1);
    let row = job(&s, d.id).await;
    assert_eq!(row.status, JobStatus::Running);
    assert_eq!(row.attempt, 1);
    assert_eq!(row.lease_owner.as_deref(), Some("w3"));
    assert_eq!(row.lease_expires_at, Some(t(33)));
    assert_eq!(row.started_at, Some(t(3)));
    assert_eq!(row.scheduled_at, Some(t(3)));
    assert_eq!(s.stats().await.unwrap().running, 6);
}

async fn exchange_records_outcomes_and_claims_successors(db: &TestDb) {
    let s = db.store().await;
    let jobs: Vec<NewJob> = (0..5).map(|i| new_job(&format!("x{i}"))).collect();
    let all = s.insert_many(&jobs, t(0)).await.unwrap();
    let first = s
        .exchange(&[], "w", t(1), &claim(2, PolicyKind::Fcfs, t(31)))
        .await
        .unwrap();
    assert!(first.applied.is_empty());
    let got: Vec<JobId> = first.claimed.iter().map(|j| j.id).collect();
    assert_eq!(got, all[..2]);
    let (a, b) = (first.claimed[0].token(), first.claimed[1].token());
    let stale = Token {
        id: a.id,
        attempt: a.attempt + 1,
    };
    // One completes, one retries at once; a stale attempt and another owner's claim are
    // refused. The retried job is not claimed by the same exchange (it was RUNNING when the
    // statement began) but by the next one, after the jobs queued before its re-entry.
    let outcomes = [
        out::completed(a, json!({"ok": true})),
        out::retried(b, "flaky".into(), t(2)),
        out::completed(stale, json!(null)),
    ];
    let second = s
        .exchange(&outcomes, "w", t(2), &claim(2, PolicyKind::Fcfs, t(32)))
        .await
        .unwrap();
    let mut applied = second.applied.clone();
    applied.sort_by_key(|t| t.id);
    let mut expected = vec![a, b];
    expected.sort_by_key(|t| t.id);
    assert_eq!(applied, expected);
    let got: Vec<JobId> = second.claimed.iter().map(|j| j.id).collect();
    assert_eq!(got, all[2..4]);
    assert_eq!(job(&s, a.id).await.status, JobStatus::Completed);
    assert_eq!(job(&s, a.id).await.result, Some(json!({"ok": true})));
    let retried = job(&s, b.id).await;
    assert_eq!(
        (retried.status, retried.retry_count),
        (JobStatus::Pending, 1)
    );
    // Another owner cannot record an outcome for w's run.
    let theirs = second.claimed[0].token();
    let third = s
        .exchange(
            &[out::completed(theirs, json!(1))],
            "intruder",
            t(3),
            &claim(3, PolicyKind::Fcfs, t(33)),
        )
        .await
        .unwrap();
    assert!(third.applied.is_empty());
    let got: Vec<JobId> = third.claimed.iter().map(|j| j.id).collect();
    assert_eq!(got, [all[4], b.id], "queue entry order: x4, then the retry");
    assert_eq!(third.claimed[1].attempt, 2);
    // A retry due later is not claimed before its time.
    let late = third.claimed[1].token();
    let fourth = s
        .exchange(
            &[out::retried(late, "again".into(), t(60))],
            "intruder",
            t(4),
            &claim(3, PolicyKind::Fcfs, t(34)),
        )
        .await
        .unwrap();
    assert_eq!(fourth.applied, [late]);
    assert!(fourth.claimed.is_empty());
    assert!(
        claimed(&s, &claim(3, PolicyKind::Priority, t(50)), "w", t(59))
            .await
            .is_empty()
    );
    let due = claimed(&s, &claim(3, PolicyKind::Sjf, t(90)), "w", t(60)).await;
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].id, due[0].attempt), (b.id, 3));
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.completed, stats.running, stats.pending), (1, 4, 0));
}

async fn concurrent_claims_take_each_job_once(db: &TestDb) {
    let s1 = db.store().await;
    let s2 = db.store().await;
    let tokens = pending_tokens(&s1, 200).await;
    let drain = |s: Arc<dyn Store>, owner: &'static str| async move {
        let mut got = Vec::new();
        loop {
            let batch = claimed(&s, &claim(7, PolicyKind::Fcfs, t(30)), owner, t(1)).await;
            if batch.is_empty() {
                return got;
            }
            got.extend(batch.into_iter().map(|j| j.id));
        }
    };
    let a = tokio::spawn(drain(s1.clone(), "w1"));
    let b = tokio::spawn(drain(s2.clone(), "w2"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_partition(&a, &b, &tokens);
    for (ids, owner) in [(&a, "w1"), (&b, "w2")] {
        for id in ids.iter().take(10) {
            let j = job(&s1, *id).await;
            assert_eq!((j.lease_owner.as_deref(), j.attempt), (Some(owner), 1));
        }
    }
    assert_eq!(s1.stats().await.unwrap().running, 200);
}

/// A job submitted with a future `run_at` is PENDING and counted as delayed, in no claim order
/// until it is promoted; promotion happens no earlier than its time, earliest first, and gives
/// it a fresh place in the queue. A `run_at` in the past is now.
async fn delayed_jobs_wait_for_their_time(db: &TestDb) {
    let s = db.store().await;
    let at = |name: &str, when: Option<DateTime<Utc>>| NewJob {
        run_at: when,
        ..new_job(name)
    };
    let late = inserted(&s, &at("late", Some(t(120))), t(0)).await;
    assert_eq!((late.status, late.run_at), (JobStatus::Pending, t(120)));
    let past = inserted(&s, &at("past", Some(t(-30))), t(0)).await;
    assert_eq!(
        past.run_at,
        t(0),
        "a past run_at is stored as the submission time"
    );
    let ids = s
        .insert_many(
            &[
                at("soon", Some(t(60))),
                at("now", None),
                at("sooner", Some(t(60))),
            ],
            t(1),
        )
        .await
        .unwrap();
    let (soon, now, sooner) = (ids[0], ids[1], ids[2]);
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.pending, stats.delayed), (5, 3));
    assert_eq!(
        Backlog::total(&s.backlog().await.unwrap()).jobs,
        2,
        "the backlog is what may run now"
    );
    let listed = listed(
        &s,
        &JobFilter {
            status: Some(JobStatus::Pending),
            page: 1,
            page_size: 20,
            ..JobFilter::default()
        },
    )
    .await;
    assert_eq!(listed.total, 5, "delayed jobs are listed as PENDING");

    // Claims see only what may run, in every order, even long after run_at has passed:
    // until promoted, a delayed job is in no order.
    for order in PolicyKind::ALL {
        assert!(
            claimed(&s, &claim(0, order, t(400)), "w", t(300))
                .await
                .is_empty()
        );
    }
    let got = claimed(&s, &claim(10, PolicyKind::Fcfs, t(400)), "w", t(300)).await;
    let mut got: Vec<JobId> = got.iter().map(|j| j.id).collect();
    got.sort();
    let mut want = vec![past.id, now];
    want.sort();
    assert_eq!(got, want);

    // Nothing is due before its time; the next due time is the earliest.
    let p = s.promote_due(t(59), 100).await.unwrap();
    assert_eq!((p.promoted, p.next_due), (0, Some(t(60))));
    // At its time: earliest first, ties in submission order, bounded by the limit.
    let p = s.promote_due(t(60), 1).await.unwrap();
    assert_eq!((p.promoted, p.next_due), (1, Some(t(60))));
    let p = s.promote_due(t(61), 100).await.unwrap();
    assert_eq!((p.promoted, p.next_due), (1, Some(t(120))));
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.pending, stats.delayed), (3, 1));
    let promoted = [job(&s, soon).await, job(&s, sooner).await];
    assert!(promoted.iter().all(|j| j.status == JobStatus::Pending));
    assert!(
        promoted[0].seq < promoted[1].seq,
        "promoted in submission order"
    );
    let got = claimed(&s, &claim(10, PolicyKind::Fcfs, t(400)), "w", t(61)).await;
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [soon, sooner]);
    assert!(got.iter().all(|j| j.attempt == 1));

    // A delayed job can be cancelled before its time; it is then neither delayed nor due.
    assert_eq!(
        s.cancel(late.id, t(62)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.pending, stats.delayed, stats.cancelled), (0, 0, 1));
    let p = s.promote_due(t(500), 100).await.unwrap();
    assert_eq!((p.promoted, p.next_due), (0, None));
    assert_eq!(job(&s, late.id).await.status, JobStatus::Cancelled);

    // Promoted in the order they fell due, not the order their rows were written in.
    let jobs = [
        at("third", Some(t(603))),
        at("second", Some(t(602))),
        at("first", Some(t(601))),
    ];
    let ids = s.insert_many(&jobs, t(600)).await.unwrap();
    assert_eq!(s.promote_due(t(700), 100).await.unwrap().promoted, 3);
    let got = claimed(&s, &claim(10, PolicyKind::Fcfs, t(800)), "w", t(700)).await;
    let got: Vec<JobId> = got.iter().map(|j| j.id).collect();
    assert_eq!(got, [ids[2], ids[1], ids[0]], "due order");
}

/// Idempotency keys: the same key with the same request names the first job (no second row),
/// with a different request it is a conflict naming the key and that job; in a batch, per
/// item, and a conflicting batch writes nothing.
async fn unique_keys_return_the_first_job(db: &TestDb) {
    let s = db.store().await;
    let keyed = |name: &str, key: &str, print: &str| NewJob {
        unique_key: Some(UniqueKey {
            key: key.into(),
            fingerprint: print.into(),
        }),
        ..new_job(name)
    };
    let first = inserted(&s, &keyed("a", "k1", "f1"), t(0)).await;
    let again = keyed("a", "k1", "f1");
    let second = inserted(&s, &again, t(1)).await;
    assert_eq!(
        second.id, first.id,
        "the same request returns the first job"
    );
    assert_eq!(s.stats().await.unwrap().total_jobs, 1);
    match s.insert(&keyed("b", "k1", "f2"), t(2)).await {
        Err(Error::KeyConflict { key, job_id }) => {
            assert_eq!((key.as_str(), job_id), ("k1", first.id))
        }
        other => panic!("expected a key conflict, got {other:?}"),
    }
    // A key names its job whatever became of it.
    assert_eq!(
        s.cancel(first.id, t(3)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        inserted(&s, &keyed("a", "k1", "f1"), t(4)).await.id,
        first.id
    );

    // Batches: per item; repeats inside the batch name the first; unkeyed items are new.
    let batch = [
        keyed("c", "k2", "f3"),
        new_job("plain"),
        keyed("a", "k1", "f1"),
        keyed("c", "k2", "f3"),
        keyed("d", "k0", "f4"),
    ];
    let ids = s.insert_many(&batch, t(5)).await.unwrap();
    assert_eq!(ids[0], batch[0].id);
    assert_eq!(ids[1], batch[1].id);
    assert_eq!(ids[2], first.id);
    assert_eq!(ids[3], batch[0].id);
    assert_eq!(ids[4], batch[4].id);
    assert_eq!(s.stats().await.unwrap().total_jobs, 4);
    for id in &ids {
        assert!(s.get(*id).await.unwrap().is_some());
    }
    // A conflict anywhere in a batch writes nothing of it, its new keys included.
    let before = s.stats().await.unwrap().total_jobs;
    let bad = [keyed("e", "k9", "f9"), keyed("c", "k2", "other")];
    match s.insert_many(&bad, t(6)).await {
        Err(Error::KeyConflict { key, job_id }) => {
            assert_eq!((key.as_str(), job_id), ("k2", batch[0].id))
        }
        other => panic!("expected a key conflict, got {other:?}"),
    }
    let inner = [keyed("e", "k8", "f8"), keyed("e", "k8", "different")];
    assert!(matches!(
        s.insert_many(&inner, t(6)).await,
        Err(Error::KeyConflict { .. })
    ));
    assert_eq!(s.stats().await.unwrap().total_jobs, before);
    let fresh = keyed("e", "k9", "other-request");
    let k9 = inserted(&s, &fresh, t(7)).await;
    assert_eq!(k9.id, fresh.id, "k9 was not kept by the failed batch");

    // Concurrent submissions of one key make one job.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { inserted(&s, &keyed("r", "race", "fr"), t(8)).await.id })
        })
        .collect();
    let mut winners = HashSet::new();
    for task in tasks {
        winners.insert(task.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "one job for one key: {winners:?}");
}

/// Retention: COMPLETED jobs older than their cutoff go, FAILED and CANCELLED ones older than
/// theirs go unless they are dead letters; open jobs stay; the counts follow, and a deleted
/// job's idempotency key is free again. The scan goes on from its cursor in small steps.
async fn retention_deletes_only_what_outlived_it(db: &TestDb) {
    let s = db.store().await;
    let complete = |name: &'static str, at: DateTime<Utc>, key: Option<&'static str>| {
        let s = s.clone();
        async move {
            let mut new = new_job(name);
            new.unique_key = key.map(|k| UniqueKey {
                key: k.into(),
                fingerprint: "f".into(),
            });
            let id = inserted(&s, &new, t(0)).await.id;
            let tok = run(&s, id, "w", at - Cd::seconds(1), at + Cd::seconds(30)).await;
            let done = out::completed(tok, json!(1));
            assert_eq!(finish(&s, "w", &[done], at).await.unwrap(), vec![tok]);
            id
        }
    };
    let old_done = complete("old", t(2), Some("key-1")).await;
    let old_done2 = complete("old2", t(3), None).await;
    let new_done = complete("new", t(50), None).await;
    let purged = fail(&s, "purged", t(10)).await;
    assert_eq!(s.purge_dead_letters().await.unwrap(), 1);
    let dead = fail(&s, "dead", t(10)).await;
    let late_fail = fail(&s, "late", t(30)).await;
    let cancelled = insert(&s, "cancelled", t(0)).await;
    assert_eq!(
        s.cancel(cancelled, t(5)).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let open = insert(&s, "open", t(0)).await;
    let running = insert(&s, "running", t(0)).await;
    run(&s, running, "w", t(1), t(500)).await;

    let mut deleted = 0;
    let mut cursor = None;
    for round in 0.. {
        assert!(round < 20, "the scan must end");
        let p = s
            .prune(&PruneScan {
                completed_before: t(40),
                failed_before: t(20),
                after: cursor,
                limit: 2,
            })
            .await
            .unwrap();
        deleted += p.deleted;
        if let (Some(a), Some(b)) = (cursor, p.next) {
            assert!(
                (b.created_at, b.seq) > (a.created_at, a.seq),
                "the cursor moves on"
            );
        }
        cursor = p.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(deleted, 4);
    let left: HashSet<JobId> = statuses(&s).await.into_keys().collect();
    assert_eq!(
        left,
        HashSet::from([new_done, dead, late_fail, open, running]),
        "kept: too young, a dead letter, open"
    );
    for gone in [old_done, old_done2, purged, cancelled] {
        assert!(s.get(gone).await.unwrap().is_none());
    }
    assert_counts_match_rows(&s, &[], "after pruning").await;
    assert_eq!(s.dead_letter_count().await.unwrap(), 2, "dead and late");
    // Nothing more to do at the same cutoffs; a key whose job is gone names a new job.
    assert_eq!(
        s.prune(&PruneScan {
            completed_before: t(40),
            failed_before: t(20),
            after: None,
            limit: 100
        })
        .await
        .unwrap()
        .deleted,
        0
    );
    let again = NewJob {
        unique_key: Some(UniqueKey {
            key: "key-1".into(),
            fingerprint: "f".into(),
        }),
        ..new_job("old")
    };
    assert_eq!(inserted(&s, &again, t(60)).await.id, again.id);
}

/// A job's own retry backoff is stored with it, shown by `get` and handed to the worker that
/// claims it; without one, both say `None` (the installation's).
async fn retry_backoff_is_kept_and_claimed(db: &TestDb) {
    let s = db.store().await;
    let backoff = RetryBackoff {
        base_seconds: 0.25,
        cap_seconds: 4.0,
    };
    let own = NewJob {
        retry_backoff: Some(backoff),
        ..new_job("own")
    };
    let a = inserted(&s, &own, t(0)).await;
    assert_eq!(a.retry_backoff, Some(backoff));
    let ids = s
        .insert_many(
            &[
                NewJob {
                    retry_backoff: Some(backoff),
                    ..new_job("own2")
                },
                new_job("default"),
            ],
            t(0),
        )
        .await
        .unwrap();
    assert_eq!(job(&s, ids[0]).await.retry_backoff, Some(backoff));
    assert_eq!(job(&s, ids[1]).await.retry_backoff, None);
    let got = claimed(&s, &claim(10, PolicyKind::Fcfs, t(30)), "w", t(1)).await;
    let by_id: HashMap<JobId, Option<RetryBackoff>> =
        got.iter().map(|j| (j.id, j.retry_backoff)).collect();
    assert_eq!(by_id.len(), 3);
    assert_eq!(by_id[&a.id], Some(backoff));
    assert_eq!(by_id[&ids[0]], Some(backoff));
    assert_eq!(by_id[&ids[1]], None);
}

/// Schedules: create (once per name), replace (fire history kept), list, get, delete; due
/// ones by time; a fire moves `next_fire_at` on only from the value it was read with, so a
/// second leader holding the same read changes nothing.
async fn schedules_are_kept_and_fired_once(db: &TestDb) {
    use jobsched_core::schedule::{Cron, Overlap, Schedule};
    let s = db.store().await;
    let sched = |name: &str, next: DateTime<Utc>| Schedule {
        name: name.into(),
        when: Cron::parse("*/5 * * * *", "Europe/Berlin").unwrap(),
        job: new_job("from-schedule"),
        overlap: Overlap::Skip,
        paused: false,
        catch_up: true,
        next_fire_at: Some(next),
        last_fire_at: None,
        last_job_id: None,
        created_at: t(0),
        updated_at: t(0),
        managed_by: None,
    };
    let b = sched("b", t(300));
    assert!(s.create_schedule(&b).await.unwrap());
    assert!(
        !s.create_schedule(&sched("b", t(999))).await.unwrap(),
        "name taken"
    );
    assert!(s.create_schedule(&sched("a", t(60))).await.unwrap());
    let got = s.get_schedule("b").await.unwrap().unwrap();
    assert_eq!(got, b);
    assert_eq!(got.when.timezone(), "Europe/Berlin");
    assert_eq!(
        s.list_schedules()
            .await
            .unwrap()
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    // Due: by time, earliest first, not paused.
    assert!(s.due_schedules(t(59), 10).await.unwrap().is_empty());
    let due = s.due_schedules(t(400), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    // One fire of `a`: the conditional write applies once.
    let job = inserted(&s, &new_job("fired"), t(60)).await.id;
    assert!(
        s.advance_schedule("a", &fired(t(60), t(60), Some(t(360)), Some(job)))
            .await
            .unwrap()
    );
    assert!(
        !s.advance_schedule("a", &fired(t(60), t(60), Some(t(360)), Some(job)))
            .await
            .unwrap()
    );
    let a = s.get_schedule("a").await.unwrap().unwrap();
    assert_eq!(
        (a.next_fire_at, a.last_fire_at, a.last_job_id),
        (Some(t(360)), Some(t(60)), Some(job))
    );
    // A skipped fire keeps the last job.
    assert!(
        s.advance_schedule("a", &fired(t(360), t(360), Some(t(660)), None))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_schedule("a").await.unwrap().unwrap().last_job_id,
        Some(job)
    );
    // Replace: the user's settings change, the fire history stays.
    let mut changed = sched("a", t(1000));
    changed.paused = true;
    changed.overlap = Overlap::Allow;
    changed.updated_at = t(700);
    assert!(s.put_schedule(&changed).await.unwrap());
    let a = s.get_schedule("a").await.unwrap().unwrap();
    assert_eq!(
        (a.paused, a.overlap, a.next_fire_at),
        (true, Overlap::Allow, Some(t(1000)))
    );
    assert_eq!(
        (a.last_fire_at, a.last_job_id, a.created_at, a.updated_at),
        (Some(t(360)), Some(job), t(0), t(700))
    );
    assert!(
        s.due_schedules(t(5000), 10)
            .await
            .unwrap()
            .iter()
            .all(|x| x.name != "a"),
        "paused"
    );
    assert!(
        !s.put_schedule(&sched("c", t(10))).await.unwrap(),
        "created"
    );
    // Delete.
    assert!(s.delete_schedule("b").await.unwrap());
    assert!(!s.delete_schedule("b").await.unwrap());
    assert!(s.get_schedule("b").await.unwrap().is_none());
    assert_eq!(s.list_schedules().await.unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Named queues

fn queued_job(name: &str, queue: &str, priority: i64) -> NewJob {
    let mut job = custom_job(name, "sleep", priority, 1.0, 3);
    job.queue = queue.into();
    job
}

fn queue_claim(limit: u32, order: PolicyKind, queue: &str, most: Option<u32>) -> Claim {
    Claim {
        queue: queue.into(),
        concurrency_limit: most,
        ..claim(limit, order, t(60))
    }
}

async fn queues_keep_their_jobs_apart(db: &TestDb) {
    let s = db.store().await;
    let jobs = vec![
        queued_job("d1", "default", 5),
        queued_job("e1", "emails", 9),
        queued_job("d2", "default", 1),
        queued_job("e2", "emails", 1),
        queued_job("e3", "emails", 5),
    ];
    let ids = s.insert_many(&jobs, t(0)).await.unwrap();
    let from = |queue, order| queue_claim(10, order, queue, None);
    let mut later = queued_job("e4", "emails", 1);
    later.run_at = Some(t(100));
    inserted(&s, &later, t(0)).await;
    assert_eq!(job(&s, ids[1]).await.queue, "emails");
    assert_eq!(job(&s, ids[0]).await.queue, "default");
    // Each queue in its own order; a claim never takes another queue's job.
    let emails = claimed(&s, &from("emails", PolicyKind::Priority), "w", t(1)).await;
    let got: Vec<JobId> = emails.iter().map(|j| j.id).collect();
    assert_eq!(got, vec![ids[3], ids[4], ids[1]]);
    assert!(emails.iter().all(|j| j.queue == "emails"));
    let counts: HashMap<String, jobsched_core::queue::QueueCounts> =
        s.queue_counts().await.unwrap().into_iter().collect();
    assert_eq!(counts["emails"].running, 3);
    assert_eq!(counts["emails"].pending, 1);
    assert_eq!(counts["emails"].delayed, 1);
    assert_eq!(counts["default"].pending, 2);
    assert_eq!(counts["default"].running, 0);
    // Listings by queue, alone and with a status.
    let listed = |queue: &str, status: Option<JobStatus>| {
        let s = s.clone();
        let filter = JobFilter {
            queue: Some(queue.into()),
            status,
            page: 1,
            page_size: 100,
            ..JobFilter::default()
        };
        async move { listed(&s, &filter).await }
    };
    let emails_page = listed("emails", None).await;
    assert_eq!(emails_page.total, 4);
    assert!(emails_page.jobs.iter().all(|j| j.queue == "emails"));
    assert_eq!(listed("emails", Some(JobStatus::Running)).await.total, 3);
    assert_eq!(listed("default", Some(JobStatus::Pending)).await.total, 2);
    assert_eq!(listed("nothing-here", None).await.total, 0);
    let default = claimed(&s, &from("default", PolicyKind::Fcfs), "w", t(1)).await;
    let got: Vec<JobId> = default.iter().map(|j| j.id).collect();
    assert_eq!(got, vec![ids[0], ids[2]]);
    assert!(
        claimed(&s, &from("nothing-here", PolicyKind::Fcfs), "w", t(1))
            .await
            .is_empty()
    );
    // Finished jobs leave the counts; the totals still add up.
    let done: Vec<Finished> = emails
        .iter()
        .map(|j| Finished::from(out::completed(j.token(), json!({}))))
        .collect();
    s.finish(&done, "w", t(2)).await.unwrap();
    let counts: HashMap<String, jobsched_core::queue::QueueCounts> =
        s.queue_counts().await.unwrap().into_iter().collect();
    assert_eq!(counts["emails"].running, 0);
    assert_eq!(counts["emails"].pending, 1);
    assert_eq!(s.stats().await.unwrap().completed, 3);
}

async fn queue_settings_round_trip(db: &TestDb) {
    let s = db.store().await;
    assert!(s.queues().await.unwrap().is_empty());
    let defaults = PolicySettings::default();
    assert!(s.add_queue("emails", &defaults).await.unwrap());
    assert!(!s.add_queue("emails", &defaults).await.unwrap());
    let custom = PolicySettings {
        policy: PolicyKind::Sjf,
        concurrency_limit: Some(3),
        weight: 5,
        paused: true,
        ..Default::default()
    };
    s.set_queue("reports", &custom).await.unwrap();
    assert_eq!(
        s.queues().await.unwrap(),
        vec![
            ("emails".to_string(), defaults.clone()),
            ("reports".to_string(), custom.clone())
        ]
    );
    // `default` is the policy row, not one of the named queues.
    s.set_queue("default", &custom).await.unwrap();
    assert_eq!(s.policy().await.unwrap(), Some(custom.clone()));
    assert_eq!(s.queues().await.unwrap().len(), 2);
    assert!(!s.add_queue("default", &defaults).await.unwrap());
    // Another process sees the durable copies.
    assert_eq!(db.store().await.queues().await.unwrap().len(), 2);
}

async fn a_concurrency_limit_caps_the_claims_of_its_queue(db: &TestDb) {
    let s = db.store().await;
    let limited = |n: u32| PolicySettings {
        concurrency_limit: Some(n),
        ..Default::default()
    };
    s.set_queue("limited", &limited(2)).await.unwrap();
    // A claim of up to 5 from `limited`, as a worker that read the limit `cap` makes it.
    let from_limited = |cap| queue_claim(5, PolicyKind::Fcfs, "limited", cap);
    let jobs: Vec<NewJob> = (0..6)
        .map(|i| queued_job(&format!("l{i}"), "limited", 5))
        .collect();
    s.insert_many(&jobs, t(0)).await.unwrap();
    inserted(&s, &queued_job("free", "other", 5), t(0)).await;
    let first = claimed(&s, &from_limited(Some(2)), "w1", t(1)).await;
    assert_eq!(first.len(), 2);
    // Another worker finds no room, whatever it asks for.
    let none = claimed(&s, &from_limited(Some(2)), "w2", t(1)).await;
    assert!(none.is_empty());
    // Other queues are not held back.
    let other = claimed(
        &s,
        &queue_claim(5, PolicyKind::Fcfs, "other", None),
        "w2",
        t(1),
    )
    .await;
    assert_eq!(other.len(), 1);
    // One ends in the same exchange that claims: its place is free for the next exchange.
    let done = [out::completed(first[0].token(), json!({}))];
    let ex = s
        .exchange(&done, "w1", t(2), &from_limited(Some(2)))
        .await
        .unwrap();
    assert_eq!(ex.applied.len(), 1);
    assert!(ex.claimed.len() <= 1, "{} claimed", ex.claimed.len());
    let again = claimed(&s, &from_limited(Some(2)), "w2", t(3)).await;
    assert_eq!(ex.claimed.len() + again.len(), 1);
    // A worker whose copy of the settings is behind (it claims without the limit, or with an
    // older one) still cannot pass the limit the store holds.
    let stale = claimed(&s, &from_limited(None), "w3", t(3)).await;
    assert!(stale.is_empty(), "{} claimed past the limit", stale.len());
    let stale = claimed(&s, &from_limited(Some(9)), "w3", t(3)).await;
    assert!(stale.is_empty(), "{} claimed past the limit", stale.len());
    // Claims racing from several workers never take more than the limit together.
    s.set_queue("limited", &limited(4)).await.unwrap();
    let racing: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                claimed(&s, &from_limited(Some(4)), &format!("r{i}"), t(4))
                    .await
                    .len()
            })
        })
        .collect();
    let mut taken = 0;
    for r in racing {
        taken += r.await.unwrap();
    }
    assert_eq!(taken, 2, "two more fit under a limit of 4");
}

async fn notes_are_kept_per_try_bounded_and_fenced(db: &TestDb) {
    use jobsched_core::notes::{LogLine, MAX_LOG_LINES, Progress};
    let s = db.store().await;
    let id = inserted(&s, &new_job("noted"), t(0)).await.id;
    assert_eq!(s.progress(id).await.unwrap(), None);
    assert!(s.logs(id, None).await.unwrap().is_empty());
    let run = claimed(&s, &claim(1, PolicyKind::Fcfs, t(60)), "w1", t(1))
        .await
        .remove(0);
    let line = |i: usize| LogLine::new(t(2), "info", format!("line {i}"));
    let progress = |f: f64, m: &str| Progress {
        fraction: f,
        message: Some(m.into()),
        attempt: 1,
        updated_at: t(2),
    };
    // Progress alone, then lines alone (the progress stays), then both.
    assert!(
        s.save_notes(run.token(), 1, Some(&progress(0.25, "a quarter")), &[])
            .await
            .unwrap()
    );
    assert!(
        s.save_notes(run.token(), 1, None, &[line(0)])
            .await
            .unwrap()
    );
    let p = s.progress(id).await.unwrap().unwrap();
    assert_eq!(
        (p.fraction, p.message.as_deref()),
        (0.25, Some("a quarter"))
    );
    let many: Vec<LogLine> = (1..MAX_LOG_LINES + 5).map(line).collect();
    assert!(
        s.save_notes(run.token(), 1, Some(&progress(0.5, "half")), &many)
            .await
            .unwrap()
    );
    let logs = s.logs(id, None).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].attempt, 1);
    assert_eq!(logs[0].lines.len(), MAX_LOG_LINES);
    assert_eq!(logs[0].dropped, 5);
    assert_eq!(logs[0].lines[0].message, "line 5");
    assert_eq!(
        logs[0].lines.last().unwrap().message,
        format!("line {}", MAX_LOG_LINES + 4)
    );
    assert_eq!(s.progress(id).await.unwrap().unwrap().fraction, 0.5);
    // A stale token (another attempt) writes nothing.
    let stale = Token {
        id,
        attempt: run.attempt + 1,
    };
    assert!(!s.save_notes(stale, 1, None, &[line(9_999)]).await.unwrap());
    // The retry is try 2: its notes are its own; try 1's stay.
    let retry = [out::retried(run.token(), "boom".into(), t(3))];
    s.finish(
        &retry
            .iter()
            .cloned()
            .map(Finished::from)
            .collect::<Vec<_>>(),
        "w1",
        t(3),
    )
    .await
    .unwrap();
    assert!(
        !s.save_notes(run.token(), 1, None, &[line(1)])
            .await
            .unwrap()
    );
    let again = claimed(&s, &claim(1, PolicyKind::Fcfs, t(60)), "w1", t(4))
        .await
        .remove(0);
    let mut p2 = progress(0.9, "try two");
    p2.attempt = 2;
    assert!(
        s.save_notes(again.token(), 2, Some(&p2), &[line(0)])
            .await
            .unwrap()
    );
    let logs = s.logs(id, None).await.unwrap();
    assert_eq!(
        logs.iter()
            .map(|l| (l.attempt, l.lines.len()))
            .collect::<Vec<_>>(),
        [(1, MAX_LOG_LINES), (2, 1)]
    );
    assert_eq!(s.logs(id, Some(2)).await.unwrap().len(), 1);
    assert!(s.logs(id, Some(3)).await.unwrap().is_empty());
    let p = s.progress(id).await.unwrap().unwrap();
    assert_eq!((p.attempt, p.fraction), (2, 0.9));
    // Notes go with their job.
    s.cancel(id, t(5)).await.unwrap();
    s.prune(&PruneScan {
        completed_before: t(10_000_000),
        failed_before: t(10_000_000),
        after: None,
        limit: 100,
    })
    .await
    .unwrap();
    assert!(
        s.get(id).await.unwrap().is_none(),
        "the cancelled job was pruned"
    );
    assert!(s.logs(id, None).await.unwrap().is_empty());
    assert_eq!(s.progress(id).await.unwrap(), None);
}

async fn job_types_are_registered_and_claims_filter_by_type(db: &TestDb) {
    use jobsched_core::job_type::JobTypeInfo;
    let s = db.store().await;
    assert!(s.job_types().await.unwrap().is_empty());
    let info = |name: &str, by: &str| JobTypeInfo {
        name: name.into(),
        schema: json!({"type": "object", "required": ["to"]}),
        preemptible: name == "count",
        default_timeout_seconds: 60.0,
        registered_by: by.into(),
        updated_at: t(0),
    };
    s.register_types(&[info("count", "w1"), info("mail", "w1")])
        .await
        .unwrap();
    s.register_types(&[info("mail", "w2")]).await.unwrap();
    let types = s.job_types().await.unwrap();
    assert_eq!(types, [info("count", "w1"), info("mail", "w2")]);
    let jobs = vec![
        custom_job("c1", "count", 5, 1.0, 0),
        custom_job("m1", "mail", 5, 1.0, 0),
        custom_job("c2", "count", 5, 1.0, 0),
    ];
    s.insert_many(&jobs, t(0)).await.unwrap();
    assert_eq!(
        s.pending_by_type().await.unwrap(),
        [("count".to_string(), 2), ("mail".to_string(), 1)]
    );
    // A worker serving only `mail` takes only the mail job, though the count jobs came first.
    let only_mail = Claim {
        job_types: Some(vec!["mail".to_string()].into()),
        ..claim(5, PolicyKind::Fcfs, t(60))
    };
    let got = claimed(&s, &only_mail, "w2", t(1)).await;
    assert_eq!(
        got.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["m1"]
    );
    assert!(claimed(&s, &only_mail, "w2", t(1)).await.is_empty());
    assert_eq!(
        s.pending_by_type().await.unwrap(),
        [("count".to_string(), 2)]
    );
    let any = claimed(&s, &claim(5, PolicyKind::Fcfs, t(60)), "w1", t(1)).await;
    assert_eq!(any.len(), 2);
    assert!(s.pending_by_type().await.unwrap().is_empty());
}
