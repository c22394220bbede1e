//! One conformance suite for every `Transport` implementation: each scenario below runs against
//! `MemoryTransport` and against `RedisTransport` (unique key prefix per test, keys deleted at
//! the end even when the test fails). Redis-only behaviour (key deletion, reconnection) follows.
//!
//! Redis is taken from `JOBSCHED_REDIS_URL` (default `redis://127.0.0.1:6379`). When it is
//! unreachable the Redis tests are skipped with a message, or fail when `CI=true`.

use chrono::Utc;
use jobsched_core::ports::{Dispatched, Event, Subscription, Token, Transport, WorkerSlots};
use jobsched_core::{DeadLetter, PolicyKind, PolicySettings, StartedJob};
use jobsched_transport::{MemoryTransport, RedisTransport, TransportError};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Upper bound for anything that should happen "soon".
const WAIT: Duration = Duration::from_secs(5);
const LONG_TTL: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("JOBSCHED_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// `None` (skip) when Redis is unreachable outside CI; panics in CI.
async fn connect_redis(url: &str) -> Option<RedisTransport> {
    let prefix = format!("jobsched-test-{}", Uuid::new_v4());
    match RedisTransport::connect(url, &prefix).await {
        Ok(t) => Some(t),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("Redis is required in CI: {e}")
        }
        Err(e) => {
            eprintln!("skipping Redis test: {e}");
            None
        }
    }
}

/// Deletes a test prefix's keys when dropped (also when the test panics).
struct KeyGuard {
    url: String,
    prefix: String,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = match conn.scan_match::<_, String>(format!("{}:*", self.prefix)) {
            Ok(iter) => iter.collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<u64> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
    }
}

use redis::Commands as _;

enum Kind {
    Memory(MemoryTransport),
    Redis(RedisTransport),
}

/// The implementation under test.
struct Subject {
    transport: Arc<dyn Transport>,
    kind: Kind,
    _guard: Option<KeyGuard>,
}

impl Subject {
    fn memory() -> Subject {
        let t = MemoryTransport::new();
        Subject {
            transport: Arc::new(t.clone()),
            kind: Kind::Memory(t),
            _guard: None,
        }
    }

    async fn redis() -> Option<Subject> {
        let url = redis_url();
        let t = connect_redis(&url).await?;
        let guard = KeyGuard {
            url,
            prefix: t.prefix().to_string(),
        };
        Some(Subject {
            transport: Arc::new(t.clone()),
            kind: Kind::Redis(t),
            _guard: Some(guard),
        })
    }

    fn t(&self) -> &dyn Transport {
        self.transport.as_ref()
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        match &self.kind {
            Kind::Memory(m) => m.dead_letters().await.unwrap(),
            Kind::Redis(r) => r.dead_letters().await.unwrap(),
        }
    }
}

fn tokens(n: usize) -> Vec<Token> {
    (0..n)
        .map(|i| Token {
            id: Uuid::now_v7(),
            attempt: i as i32 + 1,
        })
        .collect()
}

fn slots(worker: &str, idle: u32, total: u32) -> WorkerSlots {
    WorkerSlots {
        worker: worker.to_string(),
        idle,
        total,
    }
}

fn dead_letter(name: &str) -> DeadLetter {
    DeadLetter {
        job_id: Uuid::now_v7(),
        job_type: "sleep".into(),
        name: name.into(),
        error: Some(format!("{name} failed")),
        retry_count: 3,
        failed_at: Some(Utc::now()),
    }
}

async fn next_event(sub: &mut Box<dyn Subscription>) -> Option<Event> {
    tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("no event within 5 s")
}

/// Poll `f` until it yields `Some`, failing after [`WAIT`].
async fn poll_until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

async fn push_and_take_preserve_order(s: &Subject) {
    let t = s.t();
    let all = tokens(5);
    assert_eq!(t.ready_len().await.unwrap(), 0);
    t.push_ready(&all[..3]).await.unwrap();
    t.push_ready(&all[3..]).await.unwrap();
    t.push_ready(&[]).await.unwrap();
    assert_eq!(t.ready_len().await.unwrap(), 5);
    assert_eq!(t.take("w", 2).await.unwrap(), all[..2]);
    assert_eq!(t.take("w", 10).await.unwrap(), all[2..]);
    assert_eq!(t.ready_len().await.unwrap(), 0);
    assert!(t.take("w", 10).await.unwrap().is_empty());
    assert_eq!(t.in_flight("w").await.unwrap(), all);
}

async fn take_caps_at_max_and_sets_idle(s: &Subject) {
    let t = s.t();
    t.report_slots("w", 4, 4, LONG_TTL).await.unwrap();
    t.push_ready(&tokens(3)).await.unwrap();

    assert_eq!(t.take("w", 2).await.unwrap().len(), 2);
    assert_eq!(t.workers().await.unwrap(), [slots("w", 0, 4)]);
    assert_eq!(t.ready_len().await.unwrap(), 1);

    assert_eq!(t.take("w", 5).await.unwrap().len(), 1);
    assert_eq!(t.workers().await.unwrap(), [slots("w", 4, 4)]);

    assert!(t.take("w", 3).await.unwrap().is_empty());
    assert_eq!(t.workers().await.unwrap(), [slots("w", 3, 4)]);

    t.push_ready(&tokens(2)).await.unwrap();
    assert!(t.take("w", 0).await.unwrap().is_empty());
    assert_eq!(t.workers().await.unwrap(), [slots("w", 0, 4)]);
    assert_eq!(t.ready_len().await.unwrap(), 2);
    assert_eq!(t.in_flight("w").await.unwrap().len(), 3);
}

async fn take_announces_changed_unmet_demand(s: &Subject) {
    let t = s.t();
    let mut sub = t.subscribe().await.unwrap();
    // Nothing ready: the demand of 3 is announced once, not again while it stays the same.
    assert!(t.take("w", 3).await.unwrap().is_empty());
    assert_eq!(next_event(&mut sub).await, Some(Event::SlotsFree));
    assert!(t.take("w", 3).await.unwrap().is_empty());
    t.push_ready(&tokens(1)).await.unwrap();
    assert_eq!(next_event(&mut sub).await, Some(Event::ReadyPushed));
    // Fully served (nothing left over) and zero demand are silent too.
    assert_eq!(t.take("w", 1).await.unwrap().len(), 1);
    assert!(t.take("w", 0).await.unwrap().is_empty());
    t.push_ready(&tokens(2)).await.unwrap();
    assert_eq!(next_event(&mut sub).await, Some(Event::ReadyPushed));
    // Partly served: 1 of 3 still wanted is new demand.
    assert_eq!(t.take("w", 3).await.unwrap().len(), 2);
    assert_eq!(next_event(&mut sub).await, Some(Event::SlotsFree));
}

async fn concurrent_takers_share_without_overlap(s: &Subject) {
    let all = tokens(300);
    s.t().push_ready(&all).await.unwrap();
    let taker = |worker: &'static str| {
        let t = Arc::clone(&s.transport);
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = t.take(worker, 7).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch);
                tokio::task::yield_now().await;
            }
        })
    };
    let (a, b) = (taker("a"), taker("b"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());

    let set_a: HashSet<Token> = a.iter().copied().collect();
    let set_b: HashSet<Token> = b.iter().copied().collect();
    assert_eq!(set_a.len(), a.len(), "a got a token twice");
    assert!(
        set_a.is_disjoint(&set_b),
        "a token was taken by both workers"
    );
    let union: HashSet<Token> = set_a.union(&set_b).copied().collect();
    assert_eq!(union, all.iter().copied().collect::<HashSet<_>>());
    assert_eq!(s.t().in_flight("a").await.unwrap(), a);
    assert_eq!(s.t().in_flight("b").await.unwrap(), b);
    assert_eq!(s.t().ready_len().await.unwrap(), 0);
}

async fn ack_removes_only_given_tokens(s: &Subject) {
    let t = s.t();
    let all = tokens(4);
    t.push_ready(&all).await.unwrap();
    assert_eq!(t.take("w", 4).await.unwrap(), all);
    t.ack("w", &[all[1], all[3]]).await.unwrap();
    assert_eq!(t.in_flight("w").await.unwrap(), [all[0], all[2]]);
    // Unknown tokens, other workers and empty acks change nothing.
    t.ack("w", &tokens(1)).await.unwrap();
    t.ack("other", &[all[0]]).await.unwrap();
    t.ack("w", &[]).await.unwrap();
    // Same job, other attempt: a different token.
    let other_attempt = Token {
        attempt: all[0].attempt + 100,
        ..all[0]
    };
    t.ack("w", &[other_attempt]).await.unwrap();
    assert_eq!(t.in_flight("w").await.unwrap(), [all[0], all[2]]);
    t.ack("w", &[all[0], all[2]]).await.unwrap();
    assert!(t.in_flight("w").await.unwrap().is_empty());
    assert!(t.in_flight("nobody").await.unwrap().is_empty());
    // A large batch: every third of 60 tokens acked, the rest stay in order.
    let many = tokens(60);
    t.push_ready(&many).await.unwrap();
    assert_eq!(t.take("w", 60).await.unwrap(), many);
    let gone: Vec<Token> = many.iter().copied().step_by(3).collect();
    let stay: Vec<Token> = many.iter().copied().filter(|t| !gone.contains(t)).collect();
    t.ack("w", &gone).await.unwrap();
    assert_eq!(t.in_flight("w").await.unwrap(), stay);
    t.ack("w", &stay).await.unwrap();
    assert!(t.in_flight("w").await.unwrap().is_empty());
}

async fn release_returns_tokens_to_the_front(s: &Subject) {
    let t = s.t();
    let all = tokens(5);
    t.push_ready(&all).await.unwrap();
    assert_eq!(t.take("w", 3).await.unwrap(), all[..3]);
    let mut sub = t.subscribe().await.unwrap();
    // all[0] was started; all[1] and all[2] go back ahead of what was never taken.
    t.release("w", &[all[1], all[2]]).await.unwrap();
    assert_eq!(next_event(&mut sub).await, Some(Event::ReadyPushed));
    assert_eq!(t.in_flight("w").await.unwrap(), [all[0]]);
    assert_eq!(t.ready_len().await.unwrap(), 4);
    // Tokens the worker does not hold are not invented.
    t.release("w", &[all[3]]).await.unwrap();
    t.release("other", &[all[0]]).await.unwrap();
    assert_eq!(t.ready_len().await.unwrap(), 4);
    assert_eq!(t.in_flight("w").await.unwrap(), [all[0]]);
    assert_eq!(
        t.take("v", 10).await.unwrap(),
        [all[1], all[2], all[3], all[4]]
    );
}

fn dispatched(token: Token, name: &str) -> Dispatched {
    Dispatched {
        job: StartedJob {
            id: token.id,
            attempt: token.attempt,
            name: name.into(),
            job_type: "sleep".into(),
            payload: serde_json::json!({ "duration": 0.5, "note": "ünïcode ✓" }),
            checkpoint: Some(serde_json::json!({ "remaining": 0.25 })),
            retry_count: 1,
            max_retries: 3,
            created_at: Utc::now(),
            slices: 2,
            timeout_seconds: Some(12.5),
        },
        dispatched_at: Utc::now(),
    }
}

async fn dispatched_jobs_travel_with_their_tokens_once(s: &Subject) {
    let t = s.t();
    let all = tokens(3);
    let (d0, d2) = (dispatched(all[0], "zero"), dispatched(all[2], "two"));
    // all[1] is pushed without its job (the taker reads it from the store).
    t.push_dispatched(&all, &[d0.clone(), d2.clone()])
        .await
        .unwrap();
    assert_eq!(t.ready_len().await.unwrap(), 3);
    let taken = t.take_dispatched("w", 2).await.unwrap();
    assert_eq!(taken, [(all[0], Some(d0)), (all[1], None)]);
    // Handed back and taken again: the job is no longer kept (it was taken once).
    t.release("w", &[all[0]]).await.unwrap();
    let taken = t.take_dispatched("v", 5).await.unwrap();
    assert_eq!(taken, [(all[0], None), (all[2], Some(d2))]);
    assert_eq!(t.in_flight("v").await.unwrap(), [all[0], all[2]]);
    // Plain pushes and takes see the same queue.
    t.push_ready(&[all[1]]).await.unwrap();
    assert_eq!(t.take("u", 1).await.unwrap(), [all[1]]);
}

async fn contains_sees_ready_and_in_flight(s: &Subject) {
    let t = s.t();
    let all = tokens(3);
    t.push_ready(&all).await.unwrap();
    assert!(t.contains(all[0]).await.unwrap());
    assert!(!t.contains(tokens(1)[0]).await.unwrap());

    t.take("w1", 1).await.unwrap();
    t.report_slots("w2", 1, 1, LONG_TTL).await.unwrap();
    t.take("w2", 1).await.unwrap();
    for token in &all {
        assert!(t.contains(*token).await.unwrap(), "{token:?}");
    }
    let other_attempt = Token {
        attempt: all[0].attempt + 1,
        ..all[0]
    };
    assert!(!t.contains(other_attempt).await.unwrap());

    t.ack("w1", &[all[0]]).await.unwrap();
    t.ack("w2", &[all[1]]).await.unwrap();
    assert!(!t.contains(all[0]).await.unwrap());
    assert!(!t.contains(all[1]).await.unwrap());
    assert!(t.contains(all[2]).await.unwrap());
}

async fn report_slots_and_list_workers(s: &Subject) {
    let t = s.t();
    assert!(t.workers().await.unwrap().is_empty());
    t.report_slots("w2", 0, 3, LONG_TTL).await.unwrap();
    t.report_slots("w1", 2, 4, LONG_TTL).await.unwrap();
    assert_eq!(
        t.workers().await.unwrap(),
        [slots("w1", 2, 4), slots("w2", 0, 3)]
    );
    t.report_slots("w1", 4, 4, LONG_TTL).await.unwrap();
    // A ttl of zero is already expired: never listed as live.
    t.report_slots("w3", 9, 9, Duration::ZERO).await.unwrap();
    assert_eq!(
        t.workers().await.unwrap(),
        [slots("w1", 4, 4), slots("w2", 0, 3)]
    );
    assert_eq!(t.ready_len().await.unwrap(), 0);
}

async fn reaping_returns_in_flight_to_front(s: &Subject) {
    let t = s.t();
    let all = tokens(6);
    t.push_ready(&all).await.unwrap();
    t.report_slots("alive", 1, 1, LONG_TTL).await.unwrap();
    assert_eq!(t.take("alive", 1).await.unwrap(), all[..1]);
    t.report_slots("doomed", 3, 3, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(t.take("doomed", 3).await.unwrap(), all[1..4]);

    let reaped = poll_until("the doomed worker to be reaped", || async {
        let r = t.reap_dead_workers().await.unwrap();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(reaped, [("doomed".to_string(), all[1..4].to_vec())]);

    assert_eq!(t.workers().await.unwrap(), [slots("alive", 0, 1)]);
    assert!(t.in_flight("doomed").await.unwrap().is_empty());
    assert_eq!(t.in_flight("alive").await.unwrap(), all[..1]);
    assert!(t.reap_dead_workers().await.unwrap().is_empty());
    // Recovered tokens come first, in their order, then what was still queued.
    assert_eq!(t.take("next", 10).await.unwrap(), all[1..]);
}

async fn policy_round_trips_and_notifies(s: &Subject) {
    let t = s.t();
    let mut sub = t.subscribe().await.unwrap();
    assert_eq!(t.policy().await.unwrap(), None);
    let settings = PolicySettings {
        policy: PolicyKind::RoundRobin,
        quantum_seconds: 2.5,
        paused: true,
        managed_by: Some("jobsched/scheduler".into()),
    };
    t.set_policy(&settings).await.unwrap();
    assert_eq!(t.policy().await.unwrap(), Some(settings.clone()));
    assert_eq!(next_event(&mut sub).await, Some(Event::PolicyChanged));

    let other = PolicySettings::default();
    t.set_policy(&other).await.unwrap();
    assert_eq!(t.policy().await.unwrap(), Some(other));
    assert_eq!(next_event(&mut sub).await, Some(Event::PolicyChanged));
}

async fn every_event_reaches_every_subscriber(s: &Subject) {
    let t = s.t();
    let mut subs = vec![t.subscribe().await.unwrap(), t.subscribe().await.unwrap()];
    let events = [
        Event::JobsAvailable,
        Event::SlotsFree,
        Event::ReadyPushed,
        Event::PolicyChanged,
    ];
    for e in events {
        t.publish(e).await.unwrap();
    }
    t.push_ready(&tokens(1)).await.unwrap();
    for sub in &mut subs {
        for e in events {
            assert_eq!(next_event(sub).await, Some(e));
        }
        assert_eq!(next_event(sub).await, Some(Event::ReadyPushed));
    }
}

async fn dead_letter_mirror(s: &Subject) {
    let t = s.t();
    let (a, b, c) = (dead_letter("a"), dead_letter("b"), dead_letter("c"));
    assert!(s.dead_letters().await.is_empty());
    t.set_dead_letters(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(s.dead_letters().await, [a.clone(), b.clone()]);
    t.push_dead_letters(std::slice::from_ref(&c)).await.unwrap();
    t.push_dead_letters(&[]).await.unwrap();
    assert_eq!(s.dead_letters().await, [a.clone(), b.clone(), c.clone()]);
    t.remove_dead_letter(b.job_id).await.unwrap();
    t.remove_dead_letter(Uuid::now_v7()).await.unwrap();
    assert_eq!(s.dead_letters().await, [a.clone(), c.clone()]);
    t.set_dead_letters(std::slice::from_ref(&b)).await.unwrap();
    assert_eq!(s.dead_letters().await, [b]);
    t.set_dead_letters(&[]).await.unwrap();
    assert!(s.dead_letters().await.is_empty());
}

async fn ping_succeeds(s: &Subject) {
    s.t().ping().await.unwrap();
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Subject::memory()).await;
                }
            )*
        }
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(subject) = super::Subject::redis().await {
                        super::$name(&subject).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    push_and_take_preserve_order,
    take_caps_at_max_and_sets_idle,
    take_announces_changed_unmet_demand,
    concurrent_takers_share_without_overlap,
    ack_removes_only_given_tokens,
    release_returns_tokens_to_the_front,
    dispatched_jobs_travel_with_their_tokens_once,
    contains_sees_ready_and_in_flight,
    report_slots_and_list_workers,
    reaping_returns_in_flight_to_front,
    policy_round_trips_and_notifies,
    every_event_reaches_every_subscriber,
    dead_letter_mirror,
    ping_succeeds,
);

// ---------------------------------------------------------------------------------------------
// Redis only
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reads_empty_after_keys_deleted_and_keeps_working() {
    let Some(s) = Subject::redis().await else {
        return;
    };
    let Some(neighbour) = Subject::redis().await else {
        return;
    };
    let Kind::Redis(r) = &s.kind else {
        unreachable!()
    };
    let t = s.t();
    let all = tokens(3);
    t.push_ready(&all).await.unwrap();
    t.report_slots("w", 2, 2, LONG_TTL).await.unwrap();
    t.take("w", 2).await.unwrap();
    t.set_policy(&PolicySettings::default()).await.unwrap();
    t.set_dead_letters(&[dead_letter("x")]).await.unwrap();
    neighbour.t().push_ready(&tokens(1)).await.unwrap();

    // ready, inflight:w, idle, total, alive, policy, dead_letter
    assert_eq!(r.delete_all_keys().await.unwrap(), 7);

    assert_eq!(t.ready_len().await.unwrap(), 0);
    assert!(t.in_flight("w").await.unwrap().is_empty());
    assert!(t.workers().await.unwrap().is_empty());
    assert!(t.reap_dead_workers().await.unwrap().is_empty());
    assert_eq!(t.policy().await.unwrap(), None);
    assert!(s.dead_letters().await.is_empty());
    for token in &all {
        assert!(!t.contains(*token).await.unwrap());
    }
    // Another prefix is untouched.
    assert_eq!(neighbour.t().ready_len().await.unwrap(), 1);

    // Everything keeps working on the empty keyspace.
    let mut sub = t.subscribe().await.unwrap();
    t.push_ready(&all).await.unwrap();
    assert_eq!(next_event(&mut sub).await, Some(Event::ReadyPushed));
    t.report_slots("w", 3, 3, LONG_TTL).await.unwrap();
    assert_eq!(t.take("w", 3).await.unwrap(), all);
    assert_eq!(t.workers().await.unwrap(), [slots("w", 0, 3)]);
    assert_eq!(r.delete_all_keys().await.unwrap(), 4);
}

/// A TCP proxy in front of Redis that the test can cut.
mod proxy {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    pub struct Proxy {
        pub addr: SocketAddr,
        blocked: Arc<AtomicBool>,
        conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
        accept: JoinHandle<()>,
    }

    impl Proxy {
        pub async fn start(upstream: SocketAddr) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let blocked = Arc::new(AtomicBool::new(false));
            let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
            let accept = tokio::spawn({
                let (blocked, conns) = (blocked.clone(), conns.clone());
                async move {
                    while let Ok((mut inbound, _)) = listener.accept().await {
                        if blocked.load(Ordering::SeqCst) {
                            drop(inbound);
                            continue;
                        }
                        let task = tokio::spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        });
                        conns.lock().unwrap().push(task);
                    }
                }
            });
            Proxy {
                addr,
                blocked,
                conns,
                accept,
            }
        }

        /// Close every open connection and refuse new ones.
        pub fn cut(&self) {
            self.blocked.store(true, Ordering::SeqCst);
            for task in self.conns.lock().unwrap().drain(..) {
                task.abort();
            }
        }

        /// Accept connections again.
        pub fn restore(&self) {
            self.blocked.store(false, Ordering::SeqCst);
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.cut();
            self.accept.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_survives_a_lost_connection() {
    let direct = redis_url();
    let Some(probe) = connect_redis(&direct).await else {
        return;
    };
    drop(probe);
    // Route the same URL (credentials, database) through a proxy the test can cut.
    let Some(rest) = direct.strip_prefix("redis://") else {
        eprintln!("skipping: the proxy test needs a plain redis:// URL, got {direct}");
        return;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:6379")
    };
    let upstream = tokio::net::lookup_host(host_port.as_str())
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = proxy::Proxy::start(upstream).await;
    let url = format!("redis://{userinfo}{}{tail}", proxy.addr);
    let t = connect_redis(&url).await.expect("proxy reaches Redis");
    let _guard = KeyGuard {
        url: direct,
        prefix: t.prefix().to_string(),
    };

    let mut sub = t.subscribe().await.unwrap();
    t.publish(Event::JobsAvailable).await.unwrap();
    assert_eq!(next_event(&mut sub).await, Some(Event::JobsAvailable));

    proxy.cut();
    // The subscription ends so the caller can resubscribe.
    assert_eq!(next_event(&mut sub).await, None);

    // Commands fail with a message naming the URL and the setting to check.
    let err = t.ping().await.unwrap_err();
    assert!(
        matches!(
            err,
            jobsched_core::Error::Backend {
                component: "redis",
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&proxy.addr.to_string()) && msg.contains("JOBSCHED_REDIS_URL"),
        "{msg}"
    );
    assert!(t.subscribe().await.is_err());

    // Once Redis is reachable again the same transport reconnects by itself.
    proxy.restore();
    poll_until("the transport to reconnect", || async {
        t.ping().await.ok()
    })
    .await;
    t.push_ready(&tokens(1)).await.unwrap();
    assert_eq!(t.ready_len().await.unwrap(), 1);
    let mut sub = t.subscribe().await.unwrap();
    t.publish(Event::SlotsFree).await.unwrap();
    assert_eq!(next_event(&mut sub).await, Some(Event::SlotsFree));
}

#[tokio::test]
async fn redis_connect_reports_unreachable_server() {
    // Port 1 on localhost is closed; connecting fails fast with an actionable message.
    let err = RedisTransport::connect("redis://127.0.0.1:1", "p")
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Redis { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("redis://127.0.0.1:1") && msg.contains("JOBSCHED_REDIS_URL"),
        "{msg}"
    );
}
