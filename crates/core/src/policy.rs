//! The four scheduling policies as plain data structures behind one small trait.
//!
//! Every policy breaks ties by [`QueuedJob::seq`], the order in which jobs entered the queue
//! (a monotonic sequence from the store, never wall-clock time).

use crate::error::{Error, Result};
use crate::job::JobId;
use serde::{Deserialize, Serialize};
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a policy needs to know about a waiting job.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueuedJob {
    /// Job id.
    pub id: JobId,
    /// Queue-entry sequence (tie-breaker; FCFS / Round Robin order).
    pub seq: i64,
    /// 1 (highest) – 10.
    pub priority: i16,
    /// Seconds (> 0).
    pub estimated_duration: f64,
    /// Fencing token of the dispatch this entry will become.
    pub attempt: i32,
}

/// The policy names accepted everywhere (REST, CRD, Redis key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// First come, first served.
    Fcfs,
    /// Shortest (estimated) job first.
    Sjf,
    /// Lowest priority number first.
    Priority,
    /// Time-sliced rotation.
    RoundRobin,
}

impl PolicyKind {
    /// Every policy.
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::Fcfs,
        PolicyKind::Sjf,
        PolicyKind::Priority,
        PolicyKind::RoundRobin,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Fcfs => "fcfs",
            PolicyKind::Sjf => "sjf",
            PolicyKind::Priority => "priority",
            PolicyKind::RoundRobin => "round_robin",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| Error::UnknownPolicy {
                name: s.to_string(),
            })
    }
}

/// The runtime-switchable scheduling settings (what `{prefix}:policy` holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySettings {
    /// Active policy.
    pub policy: PolicyKind,
    /// Round Robin time quantum, seconds ([`MIN_QUANTUM_SECONDS`] to [`MAX_QUANTUM_SECONDS`]).
    pub quantum_seconds: f64,
    /// When true the engine dispatches nothing; running jobs finish.
    #[serde(default)]
    pub paused: bool,
    /// Who owns these settings: `None` when set through the REST API, or the managing
    /// `SchedulerConfig` as `namespace/name` while a Kubernetes controller owns them (the REST
    /// API then refuses to change the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// Most jobs of this queue running at once across the cluster (`None` = no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
    /// This queue's share of a worker's slots while other queues also have work, relative to
    /// their weights ([`MIN_WEIGHT`] to [`MAX_WEIGHT`]).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// A queue's weight when none is set.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Smallest queue weight.
pub const MIN_WEIGHT: u32 = 1;
/// Largest queue weight.
pub const MAX_WEIGHT: u32 = 1000;
/// Largest cluster-wide concurrency limit of a queue.
pub const MAX_CONCURRENCY_LIMIT: u32 = 1_000_000;

/// Default Round Robin quantum (seconds), as in the original system.
pub const DEFAULT_QUANTUM_SECONDS: f64 = 5.0;
/// Smallest Round Robin quantum accepted (seconds): shorter slices would spend the workers
/// on bookkeeping.
pub const MIN_QUANTUM_SECONDS: f64 = 0.01;
/// Largest Round Robin quantum accepted (seconds): one day.
pub const MAX_QUANTUM_SECONDS: f64 = 86_400.0;

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            policy: PolicyKind::Fcfs,
            quantum_seconds: DEFAULT_QUANTUM_SECONDS,
            paused: false,
            managed_by: None,
            concurrency_limit: None,
            weight: DEFAULT_WEIGHT,
        }
    }
}

impl PolicySettings {
    /// The quantum as a `Duration`, clamped to the accepted range (a value stored before the
    /// bounds existed, or NaN, never panics or livelocks a worker).
    pub fn quantum(&self) -> Duration {
        let secs = if self.quantum_seconds.is_nan() {
            DEFAULT_QUANTUM_SECONDS
        } else {
            self.quantum_seconds
                .clamp(MIN_QUANTUM_SECONDS, MAX_QUANTUM_SECONDS)
        };
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(5))
    }

    /// Whether `other` orders and runs jobs as these settings do (policy, quantum, paused):
    /// the one comparison behind "the policy changed" (a `PolicyChanged` event, the switch
    /// metric). Ownership, weight and limit are left out.
    pub fn same_effect(&self, other: &PolicySettings) -> bool {
        self.policy == other.policy
            && self.quantum_seconds == other.quantum_seconds
            && self.paused == other.paused
    }

    /// Check the values; the error names the bad field.
    pub fn validate(&self) -> Result<()> {
        if !(self.quantum_seconds.is_finite()
            && (MIN_QUANTUM_SECONDS..=MAX_QUANTUM_SECONDS).contains(&self.quantum_seconds))
        {
            return Err(Error::invalid(
                "quantum_seconds",
                format!(
                    "must be a number of seconds from {MIN_QUANTUM_SECONDS} to \
                     {MAX_QUANTUM_SECONDS}, got {:?}",
                    self.quantum_seconds
                ),
            ));
        }
        if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&self.weight) {
            return Err(Error::invalid(
                "weight",
                format!(
                    "must be a whole number from {MIN_WEIGHT} to {MAX_WEIGHT}, got {}",
                    self.weight
                ),
            ));
        }
        if let Some(limit) = self.concurrency_limit
            && !(1..=MAX_CONCURRENCY_LIMIT).contains(&limit)
        {
            return Err(Error::invalid(
                "concurrency_limit",
                format!(
                    "must be a whole number from 1 to {MAX_CONCURRENCY_LIMIT} (or null for no \
                     limit; to stop a queue, set `paused`), got {limit}"
                ),
            ));
        }
        Ok(())
    }
}

/// A scheduling policy: a queue with its own order.
pub trait Policy: Send + Sync + fmt::Debug {
    /// Which policy this is.
    fn kind(&self) -> PolicyKind;
    /// Wire name.
    fn name(&self) -> &'static str {
        self.kind().as_str()
    }
    /// Add a job.
    fn enqueue(&mut self, job: QueuedJob);
    /// Remove and return the next job in this policy's order.
    fn dequeue(&mut self) -> Option<QueuedJob>;
    /// The next job, without removing it.
    fn peek(&self) -> Option<&QueuedJob>;
    /// Number of queued jobs.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Put a job that ran a slice back. Round Robin sends it to the back; others re-enqueue.
    fn requeue(&mut self, job: QueuedJob) {
        self.enqueue(job);
    }
    /// Remove every job (any order).
    fn drain(&mut self) -> Vec<QueuedJob>;
}

/// FIFO by queue-entry sequence.
#[derive(Debug, Default)]
pub struct Fcfs {
    queue: VecDeque<QueuedJob>,
}

/// Insert keeping the deque sorted by seq; O(1) for the common append case.
fn insert_by_seq(queue: &mut VecDeque<QueuedJob>, job: QueuedJob) {
    match queue.back() {
        Some(last) if last.seq > job.seq => {
            let at = queue.partition_point(|q| q.seq <= job.seq);
            queue.insert(at, job);
        }
        _ => queue.push_back(job),
    }
}

impl Policy for Fcfs {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Fcfs
    }
    fn enqueue(&mut self, job: QueuedJob) {
        insert_by_seq(&mut self.queue, job);
    }
    fn dequeue(&mut self) -> Option<QueuedJob> {
        self.queue.pop_front()
    }
    fn peek(&self) -> Option<&QueuedJob> {
        self.queue.front()
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
    fn drain(&mut self) -> Vec<QueuedJob> {
        self.queue.drain(..).collect()
    }
}

/// Round Robin: FIFO by queue-entry sequence; a job back from a slice goes to the back.
#[derive(Debug)]
pub struct RoundRobin {
    queue: VecDeque<QueuedJob>,
    quantum: Duration,
}

impl RoundRobin {
    /// A Round Robin queue with the given time quantum.
    pub fn new(quantum: Duration) -> Self {
        RoundRobin {
            queue: VecDeque::new(),
            quantum,
        }
    }
    /// The time quantum.
    pub fn quantum(&self) -> Duration {
        self.quantum
    }
}

impl Policy for RoundRobin {
    fn kind(&self) -> PolicyKind {
        PolicyKind::RoundRobin
    }
    fn enqueue(&mut self, job: QueuedJob) {
        insert_by_seq(&mut self.queue, job);
    }
    fn dequeue(&mut self) -> Option<QueuedJob> {
        self.queue.pop_front()
    }
    fn peek(&self) -> Option<&QueuedJob> {
        self.queue.front()
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
    fn requeue(&mut self, job: QueuedJob) {
        self.queue.push_back(job);
    }
    fn drain(&mut self) -> Vec<QueuedJob> {
        self.queue.drain(..).collect()
    }
}

/// Heap entry ordered by a key then by seq.
#[derive(Debug)]
struct Keyed<K> {
    key: K,
    job: QueuedJob,
}

impl<K: Ord> PartialEq for Keyed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Keyed<K> {}
impl<K: Ord> PartialOrd for Keyed<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> Ord for Keyed<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .cmp(&other.key)
            .then(self.job.seq.cmp(&other.job.seq))
    }
}

/// Total order on a finite `f64` for use as a heap key.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Secs(f64);
impl Eq for Secs {}
impl PartialOrd for Secs {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Secs {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A min-heap policy keyed by `K`.
#[derive(Debug)]
pub struct HeapPolicy<K: Ord + fmt::Debug> {
    kind: PolicyKind,
    key: fn(&QueuedJob) -> K,
    heap: BinaryHeap<Reverse<Keyed<K>>>,
}

impl<K: Ord + fmt::Debug + Send + Sync> Policy for HeapPolicy<K> {
    fn kind(&self) -> PolicyKind {
        self.kind
    }
    fn enqueue(&mut self, job: QueuedJob) {
        let key = (self.key)(&job);
        self.heap.push(Reverse(Keyed { key, job }));
    }
    fn dequeue(&mut self) -> Option<QueuedJob> {
        self.heap.pop().map(|Reverse(k)| k.job)
    }
    fn peek(&self) -> Option<&QueuedJob> {
        self.heap.peek().map(|Reverse(k)| &k.job)
    }
    fn len(&self) -> usize {
        self.heap.len()
    }
    fn drain(&mut self) -> Vec<QueuedJob> {
        self.heap.drain().map(|Reverse(k)| k.job).collect()
    }
}

/// Shortest job first: min-heap on `estimated_duration`, then seq.
pub fn sjf() -> HeapPolicy<impl Ord + fmt::Debug + Send + Sync> {
    HeapPolicy {
        kind: PolicyKind::Sjf,
        key: |j: &QueuedJob| Secs(j.estimated_duration),
        heap: BinaryHeap::new(),
    }
}

/// Priority: min-heap on `priority` (1 first), then seq.
pub fn priority() -> HeapPolicy<i16> {
    HeapPolicy {
        kind: PolicyKind::Priority,
        key: |j: &QueuedJob| j.priority,
        heap: BinaryHeap::new(),
    }
}

/// Build an empty policy from its settings.
pub fn build(settings: &PolicySettings) -> Box<dyn Policy> {
    match settings.policy {
        PolicyKind::Fcfs => Box::new(Fcfs::default()),
        PolicyKind::Sjf => Box::new(sjf()),
        PolicyKind::Priority => Box::new(priority()),
        PolicyKind::RoundRobin => Box::new(RoundRobin::new(settings.quantum())),
    }
}

/// Build an empty policy from its name; an unknown name is a clear error.
pub fn build_by_name(name: &str) -> Result<Box<dyn Policy>> {
    let policy = name.parse()?;
    Ok(build(&PolicySettings {
        policy,
        ..PolicySettings::default()
    }))
}

/// Move every job from `old` into a new policy built from `settings`; nothing is lost or
/// duplicated. Jobs are re-inserted in queue-entry order.
pub fn switch(mut old: Box<dyn Policy>, settings: &PolicySettings) -> Box<dyn Policy> {
    let mut jobs = old.drain();
    jobs.sort_by_key(|j| j.seq);
    let mut new = build(settings);
    for job in jobs {
        new.enqueue(job);
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    #[test]
    fn quantum_outside_its_range_is_refused_and_never_panics() {
        for bad in [
            1e300,
            1e19,
            1e-300,
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            86_400.5,
            0.009,
        ] {
            let s = PolicySettings {
                quantum_seconds: bad,
                ..PolicySettings::default()
            };
            let err = s.validate().expect_err("out of range must be refused");
            assert!(err.to_string().contains("quantum_seconds"), "{err}");
            assert!(err.to_string().contains("86400"), "{err}");
            // A stored value from before the bounds still yields a usable quantum.
            let q = s.quantum();
            assert!(q >= Duration::from_millis(10) && q <= Duration::from_secs(86_400));
        }
        for good in [0.01, 5.0, 86_400.0] {
            let s = PolicySettings {
                quantum_seconds: good,
                ..PolicySettings::default()
            };
            assert!(s.validate().is_ok(), "{good}");
        }
    }

    fn job(seq: i64, priority: i16, est: f64) -> QueuedJob {
        QueuedJob {
            id: Uuid::from_u64_pair(0, seq as u64),
            seq,
            priority,
            estimated_duration: est,
            attempt: 0,
        }
    }

    /// The order a policy must produce for a set of jobs (reference model).
    fn model_sort(kind: PolicyKind, jobs: &mut [QueuedJob]) {
        match kind {
            PolicyKind::Fcfs | PolicyKind::RoundRobin => jobs.sort_by_key(|j| j.seq),
            PolicyKind::Sjf => jobs.sort_by(|a, b| {
                a.estimated_duration
                    .total_cmp(&b.estimated_duration)
                    .then(a.seq.cmp(&b.seq))
            }),
            PolicyKind::Priority => jobs.sort_by_key(|j| (j.priority, j.seq)),
        }
    }

    #[test]
    fn registry_builds_each_and_rejects_unknown() {
        for k in PolicyKind::ALL {
            assert_eq!(build_by_name(k.as_str()).unwrap().kind(), k);
        }
        let err = build_by_name("lifo").unwrap_err();
        assert!(err.to_string().contains("valid policies are fcfs"));
        assert_eq!(
            "Round_Robin".parse::<PolicyKind>().unwrap(),
            PolicyKind::RoundRobin
        );
    }

    #[test]
    fn round_robin_requeue_goes_to_back() {
        let mut rr = RoundRobin::new(Duration::from_secs(5));
        rr.enqueue(job(1, 5, 1.0));
        rr.enqueue(job(2, 5, 1.0));
        let first = rr.dequeue().unwrap();
        rr.requeue(first);
        assert_eq!(rr.dequeue().unwrap().seq, 2);
        assert_eq!(rr.dequeue().unwrap().seq, 1);
        assert!(rr.is_empty());
    }

    #[test]
    fn peek_matches_dequeue() {
        for kind in PolicyKind::ALL {
            let mut p = build(&PolicySettings {
                policy: kind,
                ..Default::default()
            });
            for (i, (pr, est)) in [(3, 2.0), (1, 9.0), (3, 0.5)].into_iter().enumerate() {
                p.enqueue(job(i as i64, pr, est));
            }
            while let Some(peeked) = p.peek().cloned() {
                assert_eq!(p.dequeue().unwrap(), peeked);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue(i16, u8),
        Dequeue,
        Switch(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1i16..=10, 1u8..=20).prop_map(|(p, e)| Op::Enqueue(p, e)),
            3 => Just(Op::Dequeue),
            1 => (0usize..4).prop_map(Op::Switch),
        ]
    }

    proptest! {
        /// Across interleaved enqueue / dequeue / switch, each dequeue returns exactly what the
        /// reference model says, and at the end every job came out exactly once.
        #[test]
        fn policies_follow_their_order(start in 0usize..4, ops in prop::collection::vec(op(), 0..200)) {
            let mut settings = PolicySettings { policy: PolicyKind::ALL[start], ..Default::default() };
            let mut policy = build(&settings);
            let mut model: Vec<QueuedJob> = Vec::new();
            let mut seq = 0i64;
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Op::Enqueue(p, e) => {
                        seq += 1;
                        let j = job(seq, p, f64::from(e) / 4.0);
                        model.push(j);
                        policy.enqueue(j);
                    }
                    Op::Dequeue => {
                        model_sort(settings.policy, &mut model);
                        let expected = if model.is_empty() { None } else { Some(model.remove(0)) };
                        let got = policy.dequeue();
                        prop_assert_eq!(&got, &expected);
                        if let Some(j) = got { out.push(j.seq); }
                    }
                    Op::Switch(k) => {
                        settings.policy = PolicyKind::ALL[k];
                        policy = switch(policy, &settings);
                        prop_assert_eq!(policy.kind(), settings.policy);
                    }
                }
                prop_assert_eq!(policy.len(), model.len());
            }
            while let Some(j) = policy.dequeue() { out.push(j.seq); }
            out.sort_unstable();
            let all: Vec<i64> = (1..=seq).collect();
            prop_assert_eq!(out, all);
        }
    }
}
