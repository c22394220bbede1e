//! The recorder: exchanges with the store (outcomes written, work claimed in the same round
//! trip), their answers taken in, and the hand-back of claims whose reply was lost.

use super::*;

/// Take in an exchange's answer: free the slots it did not fill, note whether the queue ran dry,
/// forget the recorded runs. Returns the claimed jobs to start; on an error (nothing was
/// written) the outcomes go back to the front of `outcomes`, the slots are freed and `None`
/// tells the caller to back off.
#[allow(clippy::too_many_arguments)]
pub(super) fn settle(
    rt: &Runtime,
    running: &RunningSet,
    sent: Vec<Outcome>,
    asked: u32,
    result: jobsched_core::Result<Exchanged>,
    idle: &mut u32,
    outcomes: &mut Vec<Outcome>,
    want: &mut bool,
    due: &mut BinaryHeap<std::cmp::Reverse<Instant>>,
) -> Option<Vec<StartedJob>> {
    match result {
        Ok(done) => {
            let claimed = done.claimed.len() as u32;
            *idle += asked.saturating_sub(claimed);
            recorded(rt, &sent, &done.applied, running, due, want, *idle);
            Some(done.claimed)
        }
        Err(e) => {
            // An outcome is only lost if the lease expires first, and then the rescuer retries
            // the job: at-least-once execution.
            tracing::warn!(error = %e, "exchange with the store failed; keeping its outcomes for the next try");
            *idle += asked;
            let mut kept = sent;
            kept.append(outcomes);
            *outcomes = kept;
            None
        }
    }
}

pub(super) fn drain_done(rx: &mut mpsc::UnboundedReceiver<Outcome>, into: &mut Vec<Outcome>) {
    while let Ok(o) = rx.try_recv() {
        into.push(o);
    }
}

/// The runs this worker knows of: the ones running and the ones whose outcome is not written.
pub(super) fn known_runs(running: &RunningSet, outcomes: &[Outcome]) -> HashSet<Token> {
    let mut known: HashSet<Token> = running
        .lock()
        .map(|r| r.keys().copied().collect())
        .unwrap_or_default();
    known.extend(outcomes.iter().map(Outcome::token));
    known
}

/// Hand-backs (no retry counted) for the jobs held under this worker's lease that it does not
/// know of: claimed by an exchange whose reply was lost, so their bodies never ran.
pub(super) fn unknown_claims(held: Vec<Token>, known: &HashSet<Token>) -> Vec<Outcome> {
    let orphans: Vec<Outcome> = held
        .into_iter()
        .filter(|t| !known.contains(t))
        .map(|token| Outcome::Requeue {
            token,
            checkpoint: None,
        })
        .collect();
    if !orphans.is_empty() {
        tracing::warn!(
            count = orphans.len(),
            "handing back jobs claimed by an exchange whose reply was lost; they never ran"
        );
        metrics().claims_handed_back.inc_by(orphans.len() as u64);
    }
    orphans
}

/// Start an exchange: write `outcomes` and claim what `plan` asks for. With `check` (after
/// a failed exchange: the runs this worker knows and the lease expiries of the failed claims),
/// first hand back the jobs held under this worker's lease with those expiries that it does
/// not know.
pub(super) fn start_exchange(
    rt: &Runtime,
    mut outcomes: Vec<Outcome>,
    plan: Option<Plan>,
    check: Option<(HashSet<Token>, Vec<DateTime<Utc>>)>,
    served_types: &Arc<[String]>,
) -> Pending {
    let rt = rt.clone();
    let served_types = served_types.clone();
    Box::pin(async move {
        let now = rt.clock.now();
        let lease_until = after(now, rt.config.lease_ttl);
        if let Some((known, leases)) = check {
            match rt.store.held(&rt.config.worker_id, &leases).await {
                Ok(held) => outcomes.extend(unknown_claims(held, &known)),
                Err(e) => return ((outcomes, plan, lease_until), Err(e)),
            }
        }
        let claim_spec = match &plan {
            Some(p) => Claim {
                limit: p.ask,
                order: p.settings.policy,
                lease_until,
                queue: p.queue.clone(),
                concurrency_limit: p.settings.concurrency_limit,
                // Only the types this worker runs: another type's jobs wait for their workers.
                job_types: Some(served_types),
            },
            None => Claim::none(now),
        };
        let result = rt
            .store
            .exchange(&outcomes, &rt.config.worker_id, now, &claim_spec)
            .await;
        if let Ok(done) = &result
            && !done.claimed.is_empty()
        {
            metrics().dispatched.inc_by(done.claimed.len() as u64);
        }
        ((outcomes, plan, lease_until), result)
    })
}

/// After outcomes were written: forget their runs (stop renewing), note retries this worker
/// will claim when due, and tell other workers of requeued jobs this one has no slot for.
pub(super) fn recorded(
    rt: &Runtime,
    sent: &[Outcome],
    applied: &[Token],
    running: &RunningSet,
    due: &mut BinaryHeap<std::cmp::Reverse<Instant>>,
    want: &mut bool,
    idle: u32,
) {
    if sent.is_empty() {
        return;
    }
    if applied.len() < sent.len() {
        tracing::info!(
            stale = sent.len() - applied.len(),
            "some outcomes were stale (lease lost) and were not recorded"
        );
    }
    if let Ok(mut r) = running.lock() {
        for o in sent {
            r.remove(&o.token());
        }
    }
    let now = rt.clock.now();
    let mut requeued = false;
    // A set: an exchange carries hundreds of outcomes, and a scan of `applied` for each was
    // quadratic.
    let applied: HashSet<Token> = applied.iter().copied().collect();
    for o in sent {
        if !applied.contains(&o.token()) {
            continue;
        }
        match o {
            Outcome::Requeue { .. } => requeued = true,
            Outcome::Retry { run_at, .. } => match (*run_at - now).to_std() {
                Ok(wait) if !wait.is_zero() => due.push(std::cmp::Reverse(Instant::now() + wait)),
                _ => requeued = true,
            },
            Outcome::Failed { .. } | Outcome::Completed { .. } => {}
        }
    }
    if requeued {
        *want = true;
        if idle == 0 {
            let transport = rt.transport.clone();
            tokio::spawn(async move {
                let _ = transport.publish(Event::JobsAvailable).await;
            });
        }
    }
}

/// Write outcomes (no claims), retrying while the store is unavailable; returns the applied.
pub(super) async fn write_outcomes(rt: &Runtime, batch: &[Outcome], me: &str) -> Vec<Token> {
    let mut delay = Duration::from_millis(50);
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let now = rt.clock.now();
        match rt.store.exchange(batch, me, now, &Claim::none(now)).await {
            Ok(done) => return done.applied,
            Err(e) if Instant::now() < give_up => {
                tracing::warn!(error = %e, "recording outcomes failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                // The leases expire and the rescuer retries these jobs.
                tracing::error!(error = %e, count = batch.len(), "giving up recording outcomes; the rescuer retries these jobs when their leases expire");
                return Vec::new();
            }
        }
    }
}
