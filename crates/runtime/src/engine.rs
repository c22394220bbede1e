//! The demand-driven dispatcher, run only by the leader.
//!
//! Loop: load new PENDING jobs (by queue-entry sequence) into the active policy's structure,
//! promote jobs whose backoff ended, then dispatch exactly `Σ worker demand − ready queue
//! length` jobs in policy order, where a worker's demand is its idle slots plus its prefetch
//! headroom (0 by default): each is marked SCHEDULED in the store (conditional on PENDING and
//! its attempt) and its token pushed to the transport. Because nothing is handed out beyond
//! that demand, the policy's order holds globally (up to the prefetch window) and a policy
//! switch applies to everything not yet dispatched. Events wake the loop at once; a slow poll
//! is the safety net. A single submission announces itself with its queue data
//! ([`Event::Submitted`]); while slots the last dispatch left uncovered are still free (no
//! backlog), the engine decides among the announced jobs without reading the queue or the
//! slots. Each marked job's data goes to the transport with its token, so the worker that takes
//! it need not read it back. Rescue, reaping and gauges run in a separate leader-only task.

use crate::Runtime;
use chrono::{DateTime, Utc};
use jobsched_core::policy::{self, Policy, PolicySettings};
use jobsched_core::ports::{Dispatched, Event, Token};
use jobsched_core::{JobId, JobStatus, PendingJob, QueuedJob, StartedJob};
use jobsched_metrics::metrics;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// A PENDING job waiting for its `run_at`.
#[derive(Debug)]
struct Delayed {
    run_at: DateTime<Utc>,
    job: QueuedJob,
}
impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.run_at, self.job.seq) == (o.run_at, o.job.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.run_at, self.job.seq).cmp(&(o.run_at, o.job.seq))
    }
}

/// The engine's state.
#[derive(Debug)]
pub struct Engine {
    rt: Runtime,
    settings: PolicySettings,
    policy: Box<dyn Policy>,
    known: HashSet<JobId>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    cursor: i64,
    /// Cursor values at the last few ticks (see [`Engine::tick_rescan`]).
    cursor_history: std::collections::VecDeque<i64>,
    ticks: u64,
    /// The last dispatch left no free slot uncovered (see [`Engine::step`]).
    saturated: bool,
    /// Free slots the last dispatch left uncovered because the queue ran dry. Only this engine
    /// covers slots, so until a step reads them again this is a lower bound on the free slots
    /// (a worker that stopped meanwhile is the exception: its token waits for another worker).
    spare: u64,
    /// Jobs announced by [`Event::Submitted`] since the last step.
    announced: Vec<PendingJob>,
    /// News of jobs not announced with their data arrived since the last queue read.
    unread_news: bool,
}

/// How many PENDING rows one load query reads.
const LOAD_PAGE: u32 = 10_000;

impl Engine {
    /// A fresh engine (loads everything on its first step).
    pub fn new(rt: Runtime) -> Engine {
        let settings = PolicySettings::default();
        Engine {
            policy: policy::build(&settings),
            settings,
            rt,
            known: HashSet::new(),
            delayed: BinaryHeap::new(),
            cursor: 0,
            cursor_history: std::collections::VecDeque::new(),
            ticks: 0,
            saturated: false,
            spare: 0,
            announced: Vec::new(),
            unread_news: false,
        }
    }

    /// Run until cancelled.
    pub async fn run(mut self, mut events: broadcast::Receiver<Event>, stop: CancellationToken) {
        if let Err(e) = self.sync_settings().await {
            tracing::warn!(error = %e, "cannot read policy settings yet");
        }
        self.rebuild_dead_letter_mirror().await;
        let every = Duration::from_secs(1).min(self.rt.config.dispatch_ttl / 2);
        // Rescue and gauges run beside the dispatch loop, never in its way; they stop (after
        // the round in progress, which the store's row locks and status tests fence) when this
        // engine stops: leadership lost or shutdown.
        let maintenance_stop = stop.child_token();
        let _stop_maintenance = maintenance_stop.clone().drop_guard();
        let mut maintenance = tokio::spawn(maintenance(self.rt.clone(), every, maintenance_stop));
        let mut rescue = tokio::time::interval(every);
        rescue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut policy_dirty = false;
        loop {
            if policy_dirty {
                policy_dirty = false;
                if let Err(e) = self.sync_settings().await {
                    tracing::warn!(error = %e, "policy sync failed");
                }
            }
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "dispatch step failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            let wait = self.next_wake();
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = events.recv() => {
                    let mut handle = |ev: Result<Event, broadcast::error::RecvError>| match ev {
                        Ok(ev) => policy_dirty |= self.note_event(ev),
                        // Missed events: one of them may have been a policy change.
                        Err(_) => policy_dirty = true,
                    };
                    handle(ev);
                    while let Ok(ev) = events.try_recv() { handle(Ok(ev)); }
                }
                _ = rescue.tick() => {
                    // The periodic tick also re-asserts the settings: Redis may have been flushed.
                    policy_dirty = true;
                    if let Err(e) = self.tick_rescan().await {
                        tracing::warn!(error = %e, "pending rescan failed");
                    }
                    metrics().policy_queue_depth.set(self.queued() as i64);
                }
                _ = tokio::time::sleep(wait) => {}
                // Only a panic ends it early: end the engine too, so the leader loop restarts
                // both rather than dispatching on without rescue.
                _ = &mut maintenance => {
                    if !stop.is_cancelled() {
                        tracing::error!("engine maintenance task ended unexpectedly");
                    }
                    return;
                }
            }
        }
    }

    fn next_wake(&self) -> Duration {
        let poll = self.rt.config.poll_interval;
        match self.delayed.peek() {
            Some(Reverse(d)) => (d.run_at - self.rt.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(poll),
            None => poll,
        }
    }

    /// Read the policy from the transport; rebuild the key from the durable copy if missing.
    async fn sync_settings(&mut self) -> jobsched_core::Result<()> {
        let settings = match self.rt.transport.policy().await? {
            Some(s) => s,
            None => {
                let durable = self.rt.store.load_policy().await?.unwrap_or_default();
                tracing::info!(policy = %durable.policy, "policy key missing in transport; restored from the store");
                self.rt.transport.set_policy(&durable).await?;
                // The same flush lost the dead-letter mirror.
                self.rebuild_dead_letter_mirror().await;
                durable
            }
        };
        if settings.policy != self.settings.policy
            || settings.quantum_seconds != self.settings.quantum_seconds
        {
            tracing::info!(from = %self.settings.policy, to = %settings.policy, queued = self.policy.len(), "switching policy");
            let old = std::mem::replace(&mut self.policy, policy::build(&settings));
            self.policy = policy::switch(old, &settings);
            metrics().policy_switches.inc();
        }
        for kind in policy::PolicyKind::ALL {
            metrics()
                .active_policy
                .with_label_values(&[kind.as_str()])
                .set(i64::from(kind == settings.policy));
        }
        self.settings = settings;
        Ok(())
    }

    async fn rebuild_dead_letter_mirror(&self) {
        match self.rt.store.dead_letters(10_000).await {
            Ok(entries) => {
                if let Err(e) = self.rt.transport.set_dead_letters(&entries).await {
                    tracing::warn!(error = %e, "cannot rebuild the dead-letter mirror");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read dead letters"),
        }
    }

    /// Take note of an event before the next [`Engine::step`]; returns whether the policy
    /// settings must be re-read. A `Submitted` job is held by the next step as announced;
    /// `JobsAvailable` makes it read the queue before deciding.
    pub fn note_event(&mut self, event: Event) -> bool {
        match event {
            Event::PolicyChanged => true,
            Event::Submitted(job) => {
                self.announced.push(job);
                false
            }
            Event::JobsAvailable => {
                self.unread_news = true;
                false
            }
            _ => false,
        }
    }

    /// Jobs the engine holds, due or delayed, not yet dispatched.
    pub fn queued(&self) -> usize {
        self.policy.len() + self.delayed.len()
    }

    /// One pass: load, promote, dispatch.
    pub async fn step(&mut self) -> jobsched_core::Result<()> {
        // The decision is as of this instant: the queue is read after it, so a job whose
        // submission was answered before the decision is a candidate (one committed with a seq
        // below the cursor is held through its announcement, or else found by the rescan).
        let decided_at = self.rt.clock.now();
        let paused = self.settings.paused;
        let announced = self.queue_announced();
        if paused {
            self.load_pending().await?;
            self.promote_delayed();
            return Ok(());
        }
        if announced && self.spare > 0 && !self.unread_news {
            // Submissions arrived while slots the last step saw free are still uncovered, and
            // nothing else is known to be new: decide now, among the jobs as announced, instead
            // of reading the queue and the slots first. Free slots mean no backlog to order.
            // A job whose announcement is still on its way is read by a later step.
            self.promote_delayed();
            return self.dispatch(decided_at, self.spare, 0).await;
        }
        let (idle, ready) = if self.saturated {
            // Every slot was covered at the last step: look at the slots first and read the
            // queue only once one is free, so a backlog costs one transport read per
            // submission rather than a store query. (No decision, no queue read needed.)
            let (idle, ready) = read_slots(&self.rt).await?;
            if idle <= ready {
                metrics().ready_queue_depth.set(ready as i64);
                return Ok(());
            }
            self.load_pending().await?;
            (idle, ready)
        } else {
            // The free slots are read from the transport while the queue is read from the
            // store: two independent round trips, overlapped.
            let rt = self.rt.clone();
            let (loaded, slots) = tokio::join!(self.load_pending(), read_slots(&rt));
            loaded?;
            slots?
        };
        self.promote_delayed();
        self.dispatch(decided_at, idle, ready).await
    }

    /// Queue the jobs [`Event::Submitted`] announced (those not known yet); true if any was.
    fn queue_announced(&mut self) -> bool {
        let now = self.rt.clock.now();
        let mut any = false;
        for job in std::mem::take(&mut self.announced) {
            any |= self.hold(job, now);
        }
        any
    }

    /// Hold a PENDING job in the policy, or until its `run_at` in the delay heap; false if it
    /// is held already.
    fn hold(&mut self, PendingJob { queued, run_at }: PendingJob, now: DateTime<Utc>) -> bool {
        if !self.known.insert(queued.id) {
            return false;
        }
        if run_at > now {
            self.delayed.push(Reverse(Delayed {
                run_at,
                job: queued,
            }));
        } else {
            self.policy.enqueue(queued);
        }
        true
    }

    /// Hold announced and newly committed PENDING jobs without dispatching (what a step does
    /// before deciding; a step skips the queue read while no slot is free).
    pub async fn load(&mut self) -> jobsched_core::Result<()> {
        self.queue_announced();
        self.load_pending().await?;
        self.promote_delayed();
        Ok(())
    }

    async fn load_pending(&mut self) -> jobsched_core::Result<()> {
        self.load_pending_from(self.cursor).await?;
        self.unread_news = false;
        Ok(())
    }

    /// Sequence numbers are handed out when a transaction writes, but become visible when it
    /// commits, so a job with a lower seq can appear after the cursor passed it. A single
    /// submission announces itself ([`Event::Submitted`]) and is held from that. As the
    /// safety net (lost events, batches, retries and requeues written by workers), each tick re-reads
    /// from the cursor as it was two ticks ago (jobs already known are skipped), and every 60
    /// ticks from the start, so such a job waits at most a couple of ticks.
    async fn tick_rescan(&mut self) -> jobsched_core::Result<()> {
        self.ticks += 1;
        self.cursor_history.push_back(self.cursor);
        while self.cursor_history.len() > 3 {
            self.cursor_history.pop_front();
        }
        let from = if self.ticks % 60 == 0 {
            0
        } else {
            self.cursor_history.front().copied().unwrap_or(0)
        };
        if from < self.cursor {
            self.load_pending_from(from).await?;
        }
        Ok(())
    }

    async fn load_pending_from(&mut self, from: i64) -> jobsched_core::Result<()> {
        let mut after = from;
        loop {
            let page = self.rt.store.pending_after(after, LOAD_PAGE).await?;
            let n = page.len();
            let now = self.rt.clock.now();
            for job in page {
                after = after.max(job.queued.seq);
                self.cursor = self.cursor.max(job.queued.seq);
                self.hold(job, now);
            }
            if n < LOAD_PAGE as usize {
                return Ok(());
            }
        }
    }

    fn promote_delayed(&mut self) {
        let now = self.rt.clock.now();
        while self
            .delayed
            .peek()
            .is_some_and(|Reverse(d)| d.run_at <= now)
        {
            if let Some(Reverse(d)) = self.delayed.pop() {
                self.policy.requeue(d.job);
            }
        }
    }

    /// Hand out as many jobs as there are `idle` slots not covered by `ready` tokens.
    async fn dispatch(
        &mut self,
        decided_at: DateTime<Utc>,
        idle: u64,
        ready: u64,
    ) -> jobsched_core::Result<()> {
        metrics().ready_queue_depth.set(ready as i64);
        self.spare = 0;
        if self.policy.is_empty() {
            self.saturated = idle <= ready;
            self.spare = idle.saturating_sub(ready);
            return Ok(());
        }
        let mut demand = idle.saturating_sub(ready) as usize;
        while demand > 0 && !self.policy.is_empty() {
            let n = demand.min(self.rt.config.batch_size);
            let mut picked = Vec::with_capacity(n);
            while picked.len() < n {
                match self.policy.dequeue() {
                    Some(j) => picked.push(j),
                    None => break,
                }
            }
            for j in &picked {
                self.known.remove(&j.id);
            }
            let tokens: Vec<Token> = picked
                .iter()
                .map(|j| Token {
                    id: j.id,
                    attempt: j.attempt,
                })
                .collect();
            let now = decided_at;
            let lease_until = self.rt.clock.now()
                + chrono::Duration::from_std(self.rt.config.dispatch_ttl)
                    .unwrap_or(chrono::Duration::seconds(30));
            let applied = match self
                .rt
                .store
                .mark_scheduled(&tokens, now, lease_until)
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    // Put them back: nothing was handed out.
                    for j in picked {
                        self.known.insert(j.id);
                        self.policy.enqueue(j);
                    }
                    return Err(e);
                }
            };
            // In the policy's order (the store answers in request order). Each job's data
            // travels with its token, so the worker that takes it need not read it back.
            let ordered: Vec<Token> = applied.iter().map(StartedJob::token).collect();
            let dispatched_at = self.rt.clock.now();
            let jobs: Vec<Dispatched> = applied
                .into_iter()
                .map(|job| Dispatched { job, dispatched_at })
                .collect();
            if !ordered.is_empty() {
                // If this push fails the jobs stay SCHEDULED and the rescuer re-dispatches them
                // when their dispatch lease expires.
                self.rt.transport.push_dispatched(&ordered, &jobs).await?;
                metrics().dispatched.inc_by(ordered.len() as u64);
                tracing::debug!(count = ordered.len(), policy = %self.settings.policy, "dispatched");
            }
            demand -= ordered.len().min(demand);
        }
        self.saturated = demand == 0;
        self.spare = demand as u64;
        Ok(())
    }
}

/// Idle worker slots and ready (dispatched, not yet taken) tokens, from the transport.
async fn read_slots(rt: &Runtime) -> jobsched_core::Result<(u64, u64)> {
    let (workers, ready) = tokio::try_join!(rt.transport.workers(), rt.transport.ready_len())?;
    Ok((workers.iter().map(|w| u64::from(w.idle)).sum(), ready))
}

/// The leader's maintenance loop: lease rescue and dead-worker reaping every `every`, the
/// gauges that count every row every fifth round.
async fn maintenance(rt: Runtime, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        rescue(&rt).await;
        if rounds % 5 == 0 {
            refresh_gauges(&rt).await;
        }
        rounds += 1;
    }
}

/// Refresh the gauges that come from the store and transport (leader only).
async fn refresh_gauges(rt: &Runtime) {
    let m = metrics();
    if let Ok(stats) = rt.store.stats().await {
        for (status, n) in [
            (JobStatus::Pending, stats.pending),
            (JobStatus::Scheduled, stats.scheduled),
            (JobStatus::Running, stats.running),
            (JobStatus::Completed, stats.completed),
            (JobStatus::Failed, stats.failed),
            (JobStatus::Cancelled, stats.cancelled),
        ] {
            m.jobs_by_status
                .with_label_values(&[status.as_str()])
                .set(n);
        }
    }
    if let Ok(n) = rt.store.dead_letter_count().await {
        m.dead_letter_size.set(n);
    }
    if let Ok(w) = rt.transport.workers().await {
        m.workers_live.set(w.len() as i64);
    }
    if let Ok(n) = rt.transport.ready_len().await {
        m.ready_queue_depth.set(n as i64);
    }
}

/// Take back expired leases and dead workers' in-flight tokens.
async fn rescue(rt: &Runtime) {
    let now = rt.clock.now();
    let m = metrics();
    match rt.store.rescue_expired(now).await {
        Ok(report) => {
            m.lease_rescues
                .with_label_values(&["running"])
                .inc_by(report.retried.len() as u64);
            m.lease_rescues
                .with_label_values(&["scheduled"])
                .inc_by(report.undispatched.len() as u64);
            m.lease_rescues
                .with_label_values(&["dead_lettered"])
                .inc_by(report.dead_lettered.len() as u64);
            for d in &report.dead_lettered {
                m.jobs_finished
                    .with_label_values(&[d.job_type.as_str(), "dead_lettered"])
                    .inc();
            }
            if !report.retried.is_empty() || !report.undispatched.is_empty() {
                tracing::warn!(
                    retried = report.retried.len(),
                    undispatched = report.undispatched.len(),
                    "rescued jobs with expired leases"
                );
            }
            if !report.dead_lettered.is_empty() {
                tracing::warn!(
                    count = report.dead_lettered.len(),
                    "dead-lettered jobs whose last lease expired"
                );
                if let Err(e) = rt.transport.push_dead_letters(&report.dead_lettered).await {
                    tracing::warn!(error = %e, "cannot update the dead-letter mirror");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "lease rescue failed"),
    }
    match rt.transport.reap_dead_workers().await {
        Ok(reaped) => {
            for (worker, tokens) in reaped {
                tracing::warn!(%worker, tokens = tokens.len(), "worker stopped heartbeating; its in-flight tokens were returned");
            }
        }
        Err(e) => tracing::warn!(error = %e, "reaping dead workers failed"),
    }
}
