//! One conformance suite for every `Transport` implementation: each scenario below runs against
//! `MemoryTransport` and against `RedisTransport` (unique key prefix per test, keys deleted at
//! the end even when the test fails). Redis-only behaviour (key deletion, reconnection) follows.
//!
//! Redis is taken from `JOBSCHED_REDIS_URL` (default `redis://127.0.0.1:6379`). When it is
//! unreachable the Redis tests are skipped with a message, or fail when `CI=true`.

use jobsched_core::ports::{Event, Subscription, Transport, WorkerSlots};
use jobsched_core::ports::{EventBus as _, WorkerRegistry as _};
use jobsched_core::{PolicyKind, PolicySettings};
use jobsched_transport::{DropKeys, MemoryTransport, RedisTransport, TransportError};
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
    jobsched_testkit::required("Redis", RedisTransport::connect(url, &prefix).await)
}

enum Kind {
    Memory,
    Redis(RedisTransport),
}

/// The implementation under test.
struct Subject {
    transport: Arc<dyn Transport>,
    kind: Kind,
    _guard: Option<DropKeys>,
}

impl Subject {
    fn memory() -> Subject {
        let t = MemoryTransport::new();
        Subject {
            transport: Arc::new(t.clone()),
            kind: Kind::Memory,
            _guard: None,
        }
    }

    async fn redis() -> Option<Subject> {
        let url = redis_url();
        let t = connect_redis(&url).await?;
        let guard = DropKeys::new(&url, t.prefix());
        Some(Subject {
            transport: Arc::new(t.clone()),
            kind: Kind::Redis(t),
            _guard: Some(guard),
        })
    }

    fn t(&self) -> &dyn Transport {
        self.transport.as_ref()
    }
}

fn slots(worker: &str, idle: u32, total: u32) -> WorkerSlots {
    WorkerSlots {
        worker: worker.to_string(),
        idle,
        total,
        job_types: Vec::new(),
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
    jobsched_testkit::eventually(what, WAIT, async || f().await).await
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

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
}

async fn workers_report_the_types_they_serve(s: &Subject) {
    let t = s.t();
    t.report_slots("w1", 1, 1, LONG_TTL).await.unwrap();
    let types = vec!["csv".to_string(), "sleep".to_string()];
    t.report_types("w1", &types).await.unwrap();
    // Types of a worker not (or no longer) live are not listed.
    t.report_types("ghost", &types).await.unwrap();
    let mut w1 = slots("w1", 1, 1);
    w1.job_types = types.clone();
    assert_eq!(t.workers().await.unwrap(), [w1.clone()]);
    t.report_types("w1", &types[..1]).await.unwrap();
    w1.job_types = types[..1].to_vec();
    assert_eq!(t.workers().await.unwrap(), [w1]);
}

async fn reaping_removes_dead_workers(s: &Subject) {
    let t = s.t();
    t.report_slots("alive", 1, 1, LONG_TTL).await.unwrap();
    t.report_slots("doomed", 3, 3, Duration::from_millis(50))
        .await
        .unwrap();
    t.report_types("doomed", &["sleep".to_string()])
        .await
        .unwrap();
    let reaped = poll_until("the doomed worker to be reaped", || async {
        let r = t.reap_dead_workers().await.unwrap();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(reaped, ["doomed".to_string()]);
    assert_eq!(t.workers().await.unwrap(), [slots("alive", 1, 1)]);
    assert!(t.reap_dead_workers().await.unwrap().is_empty());
    // The reaped worker's types went with it: back under the same id, it has none.
    t.report_slots("doomed", 3, 3, LONG_TTL).await.unwrap();
    assert_eq!(
        t.workers().await.unwrap(),
        [slots("alive", 1, 1), slots("doomed", 3, 3)]
    );
}

async fn policy_round_trips_and_notifies(s: &Subject) {
    let t = s.t();
    let mut sub = t.subscribe().await.unwrap();
    assert_eq!(t.policy().await.unwrap(), None);
    // Every field away from its default.
    let settings = PolicySettings {
        policy: PolicyKind::RoundRobin,
        quantum_seconds: 2.5,
        paused: true,
        managed_by: Some("jobsched/scheduler".into()),
        concurrency_limit: Some(7),
        weight: 3,
    };
    t.set_policy(&settings).await.unwrap();
    assert_eq!(t.policy().await.unwrap(), Some(settings.clone()));
    assert_eq!(next_event(&mut sub).await, Some(Event::PolicyChanged));

    let other = PolicySettings::default();
    t.set_policy(&other).await.unwrap();
    assert_eq!(t.policy().await.unwrap(), Some(other));
    assert_eq!(next_event(&mut sub).await, Some(Event::PolicyChanged));
}

async fn queue_settings_round_trip_and_add_only_when_absent(s: &Subject) {
    let t = s.t();
    let mut sub = t.subscribe().await.unwrap();
    assert!(t.queues().await.unwrap().is_empty());
    let limited = PolicySettings {
        concurrency_limit: Some(3),
        weight: 2,
        ..Default::default()
    };
    t.set_queue("emails", &limited).await.unwrap();
    assert_eq!(next_event(&mut sub).await, Some(Event::PolicyChanged));
    // A rebuild or a new queue's defaults never overwrite what is there.
    assert!(
        !t.add_queue("emails", &PolicySettings::default())
            .await
            .unwrap()
    );
    assert!(
        t.add_queue("bulk", &PolicySettings::default())
            .await
            .unwrap()
    );
    assert_eq!(next_event(&mut sub).await, Some(Event::PolicyChanged));
    assert_eq!(
        t.queues().await.unwrap(),
        vec![
            ("bulk".to_string(), PolicySettings::default()),
            ("emails".to_string(), limited.clone())
        ]
    );
    // `default` is the policy key.
    assert!(t.add_queue("default", &limited).await.unwrap());
    assert_eq!(t.policy().await.unwrap(), Some(limited.clone()));
    assert!(
        !t.add_queue("default", &PolicySettings::default())
            .await
            .unwrap()
    );
    t.set_queue("default", &PolicySettings::default())
        .await
        .unwrap();
    assert_eq!(t.policy().await.unwrap(), Some(PolicySettings::default()));
    assert_eq!(t.queues().await.unwrap().len(), 2);
}

async fn every_event_reaches_every_subscriber(s: &Subject) {
    let t = s.t();
    let mut subs = vec![t.subscribe().await.unwrap(), t.subscribe().await.unwrap()];
    let events = [Event::JobsAvailable, Event::PolicyChanged];
    for e in events {
        t.publish(e).await.unwrap();
    }
    t.set_policy(&PolicySettings::default()).await.unwrap();
    for sub in &mut subs {
        for e in events {
            assert_eq!(next_event(sub).await, Some(e));
        }
        assert_eq!(next_event(sub).await, Some(Event::PolicyChanged));
    }
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
    report_slots_and_list_workers,
    workers_report_the_types_they_serve,
    reaping_removes_dead_workers,
    policy_round_trips_and_notifies,
    queue_settings_round_trip_and_add_only_when_absent,
    every_event_reaches_every_subscriber,
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
    t.report_slots("w", 2, 2, LONG_TTL).await.unwrap();
    t.set_policy(&PolicySettings::default()).await.unwrap();
    neighbour
        .t()
        .set_policy(&PolicySettings::default())
        .await
        .unwrap();

    // idle, total, alive, policy
    assert_eq!(r.delete_all_keys().await.unwrap(), 4);

    assert!(t.workers().await.unwrap().is_empty());
    assert!(t.reap_dead_workers().await.unwrap().is_empty());
    assert_eq!(t.policy().await.unwrap(), None);
    // Another prefix is untouched.
    assert!(neighbour.t().policy().await.unwrap().is_some());

    // Everything keeps working on the empty keyspace.
    let mut sub = t.subscribe().await.unwrap();
    t.publish(Event::JobsAvailable).await.unwrap();
    assert_eq!(next_event(&mut sub).await, Some(Event::JobsAvailable));
    t.report_slots("w", 3, 3, LONG_TTL).await.unwrap();
    assert_eq!(t.workers().await.unwrap(), [slots("w", 3, 3)]);
    // idle, total, alive
    assert_eq!(r.delete_all_keys().await.unwrap(), 3);
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
    let _guard = DropKeys::new(&direct, t.prefix());

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
    t.report_slots("w", 1, 1, LONG_TTL).await.unwrap();
    assert_eq!(t.workers().await.unwrap(), [slots("w", 1, 1)]);
    let mut sub = t.subscribe().await.unwrap();
    t.publish(Event::JobsAvailable).await.unwrap();
    assert_eq!(next_event(&mut sub).await, Some(Event::JobsAvailable));
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
