//! The real `jobsched controller` process against an in-test stand-in for the Kubernetes API
//! server, with the real `jobsched worker` and `jobsched api` processes on real Postgres (a
//! fresh database) and real Redis (a unique key prefix): a `SchedulerConfig` spec change is
//! followed by the engine's dispatch order, the status reports it, and the REST API refuses
//! policy changes while the object owns the policy.

use chrono::{DateTime, Utc};
use jobsched_core::JobSpec;
use jobsched_core::ports::{Event, Store};
use jobsched_core::ports::{EventBus as _, Settings as _};
use jobsched_core::{Job, JobFilter, JobStatus, NewJob, PolicyKind, PolicySettings};
use jobsched_store::testing::TestDb;
use jobsched_testkit::kube::{AbortOnDrop, KubeStandIn, serve, serve_on, write_kubeconfig};
use jobsched_testkit::{free_port, required};
use jobsched_transport::{DropKeys, RedisTransport};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jobsched");
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const NS: &str = "jobsched-e2e";
const NAME: &str = "main";
const JOBS: usize = 16;
const JOB_SECONDS: f64 = 0.05;

// ---------------------------------------------------------------------------------------------
// Processes, services and polling.
// ---------------------------------------------------------------------------------------------

/// Spawned processes by name, killed when dropped (also when the test panics).
#[derive(Default)]
struct Children(Mutex<Vec<(&'static str, Child)>>);

impl Children {
    fn spawn(&self, name: &'static str, cmd: &mut Command) {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `jobsched {name}`: {e}"));
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, child));
    }

    /// kill -9 the processes called `name` and reap them.
    fn kill(&self, name: &str) {
        let mut children = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (_, child) in children.iter_mut().filter(|(n, _)| *n == name) {
            let _ = child.kill();
            let _ = child.wait();
        }
        children.retain(|(n, _)| *n != name);
    }

    /// Panic (naming it) if a process has exited: it should run until the test ends.
    fn assert_running(&self) {
        for (name, child) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("`jobsched {name}` exited early with {status}; see its log above");
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in self
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Poll `check` every `every` until it returns `Some`, failing after `timeout` or as soon as a
/// child process died.
async fn eventually<T>(
    children: &Children,
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let checked = async || {
        let found = check().await;
        if found.is_none() {
            children.assert_running();
            tokio::time::sleep(every).await;
        }
        found
    };
    jobsched_testkit::eventually(what, timeout, checked).await
}

const POLL: Duration = Duration::from_millis(50);

/// [`eventually`], polling every [`POLL`] for up to `secs`.
async fn until<T>(
    children: &Children,
    what: &str,
    secs: u64,
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    eventually(children, what, Duration::from_secs(secs), POLL, check).await
}

async fn all_jobs(store: &Arc<dyn Store>) -> Vec<Job> {
    store
        .list(&JobFilter {
            page: 1,
            page_size: 100,
            ..JobFilter::default()
        })
        .await
        .expect("list jobs")
        .jobs
}

fn ready_condition(status: &Value) -> Option<&str> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?["status"]
        .as_str()
}

/// A status patch that reports `policy` applied for `generation` with `Ready=True`.
fn applied_patch(patches: &[Value], policy: &str, generation: i64) -> bool {
    patches.iter().any(|p| {
        let status = &p["status"];
        status["activePolicy"] == policy
            && status["observedGeneration"] == generation
            && ready_condition(status) == Some("True")
    })
}

/// Job `i` of the backlog: priorities fall from 10 to 3 in submission order (pairs share one,
/// so ties are broken by submission order).
fn backlog_job(i: usize) -> NewJob {
    NewJob::new(JobSpec {
        name: format!("job-{i:02}"),
        job_type: "sleep".into(),
        priority: Some(10 - (i as i64 / 2)),
        payload: Some(json!({ "duration": JOB_SECONDS })),
        max_retries: Some(3),
        ..JobSpec::default()
    })
    .expect("valid job")
}

fn index(job: &Job) -> usize {
    job.name["job-".len()..].parse().expect("backlog job name")
}

/// What a test of one installation starts from: a fresh database, a Redis prefix of its own
/// (its keys deleted at the end), and the stand-in API server holding the `SchedulerConfig`
/// `NAME` with policy fcfs, with a kubeconfig for it.
struct Setup {
    db: TestDb,
    prefix: String,
    redis: RedisTransport,
    _keys: DropKeys,
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
    kube: Arc<KubeStandIn>,
    kube_port: u16,
    kubeconfig: std::path::PathBuf,
}

impl Setup {
    /// Drop the database.
    async fn finish(self) {
        self.db.cleanup().await;
    }

    /// The setup and the stand-in's server (it stops when dropped); `None` (outside CI) when
    /// Postgres or Redis is unreachable.
    async fn start(tag: &str) -> Option<(Setup, AbortOnDrop)> {
        let db = TestDb::postgres().await?;
        let prefix = format!("jobsched-{tag}-{}", uuid::Uuid::new_v4().simple());
        let Some(redis) = required("Redis", RedisTransport::connect(REDIS_URL, &prefix).await)
        else {
            db.cleanup().await;
            return None;
        };
        let keys = DropKeys::new(REDIS_URL, &prefix);
        let store = db.store().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let kube = KubeStandIn::new(NS);
        kube.apply(NAME, json!({"policy": "fcfs"}));
        let (kube_port, server) = serve(kube.clone()).await;
        let kubeconfig = write_kubeconfig(dir.path(), kube_port, NS);
        let setup = Setup {
            db,
            prefix,
            redis,
            _keys: keys,
            store,
            dir,
            kube,
            kube_port,
            kubeconfig,
        };
        Some((setup, server))
    }

    /// `jobsched <role>` on this installation's database and Redis prefix, logging at `log`.
    fn command(&self, role: &str, log: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg(role)
            .env("JOBSCHED_DATABASE_URL", self.db.url())
            .env("JOBSCHED_REDIS_URL", REDIS_URL)
            .env("JOBSCHED_REDIS_PREFIX", &self.prefix)
            .env("JOBSCHED_METRICS_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", log);
        cmd
    }

    /// `jobsched controller` following `NAME` on the stand-in, requeueing every second.
    fn controller(&self, log: &str) -> Command {
        let mut cmd = self.command("controller", log);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("JOBSCHED_NAMESPACE", NS)
            .env("JOBSCHED_CONFIG_NAME", NAME)
            .env("JOBSCHED_REQUEUE_SECONDS", "1");
        cmd
    }
}

/// An HTTP client for local servers (no proxy; 10 s per request).
fn http_client() -> reqwest::Client {
    let client = reqwest::Client::builder().no_proxy();
    client
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// `policy`'s settings as the `SchedulerConfig` `NAME` owns them.
fn owned(policy: PolicyKind) -> PolicySettings {
    PolicySettings {
        policy,
        managed_by: Some(format!("{NS}/{NAME}")),
        ..PolicySettings::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_process_drives_the_dispatch_order_and_owns_the_policy() {
    let Some((setup, server)) = Setup::start("ctlproc").await else {
        return;
    };
    let Setup {
        redis, store, kube, ..
    } = &setup;
    let data_dir = setup.dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let children = Children::default();
    children.spawn("controller", &mut setup.controller("warn"));

    // The backlog: submission order is the reverse of priority order.
    let backlog: Vec<NewJob> = (0..JOBS).map(backlog_job).collect();
    store
        .insert_many(&backlog, Utc::now())
        .await
        .expect("insert the backlog");
    redis
        .publish(Event::JobsAvailable)
        .await
        .expect("publish JobsAvailable");

    // The controller applies the object's fcfs, owned by the object, and reports it.
    let fcfs = owned(PolicyKind::Fcfs);
    let what = "Redis policy = fcfs managed by the SchedulerConfig, and a status patch: \
                activePolicy fcfs, observedGeneration 1, Ready=True";
    until(&children, what, 60, async || {
        let in_redis = redis.policy().await.ok()?? == fcfs;
        (in_redis && applied_patch(&kube.status_patches(NAME), "fcfs", 1)).then_some(())
    })
    .await;

    // The REST API refuses to change a policy the SchedulerConfig owns.
    let api_listen = format!("127.0.0.1:{}", free_port());
    let mut api = setup.command("api", "warn");
    api.env("JOBSCHED_LISTEN", &api_listen)
        .env("JOBSCHED_DATA_DIR", &data_dir);
    children.spawn("api", &mut api);
    let http = http_client();
    until(&children, "the API answers /health", 30, async || {
        let resp = http
            .get(format!("http://{api_listen}/health"))
            .send()
            .await
            .ok()?;
        resp.status().is_success().then_some(())
    })
    .await;
    let resp = http
        .put(format!("http://{api_listen}/scheduler/policy"))
        .json(&json!({"policy": "sjf"}))
        .send()
        .await
        .expect("PUT /scheduler/policy");
    assert_eq!(resp.status(), 409, "the SchedulerConfig owns the policy");
    let body: Value = resp.json().await.expect("JSON error body");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("SchedulerConfig {NS}/{NAME}")),
        "the 409 names the owning SchedulerConfig: {body}"
    );
    assert_eq!(
        redis.policy().await.expect("read policy"),
        Some(fcfs.clone()),
        "a refused change leaves the policy alone"
    );

    // One worker with one slot runs the backlog; a few jobs complete under fcfs.
    let mut worker = setup.command("worker", "warn");
    worker
        .env("JOBSCHED_DATA_DIR", &data_dir)
        .env("JOBSCHED_WORKER_ID", "only")
        .env("JOBSCHED_WORKER_CONCURRENCY", "1")
        .env("JOBSCHED_LEADER_TTL", "2")
        .env("JOBSCHED_WORKER_TTL", "2");
    children.spawn("worker", &mut worker);
    eventually(
        &children,
        "3 jobs completed under fcfs",
        Duration::from_secs(30),
        Duration::from_millis(5),
        async || {
            let done = all_jobs(store)
                .await
                .iter()
                .filter(|j| j.status == JobStatus::Completed)
                .count();
            (done >= 3).then_some(())
        },
    )
    .await;

    // Change the object's spec (a MODIFIED watch event with a new generation).
    let events_before = kube.events("PolicyChanged", NAME);
    let sent_at = Instant::now();
    let generation = kube.apply(NAME, json!({"policy": "priority"}));
    assert_eq!(generation, 2);
    let priority = owned(PolicyKind::Priority);
    // The switch time is when the new policy is in Redis (polled tightly): the engine cannot
    // follow the object before the controller has written it, and jobs handed out until then
    // were rightly dispatched under fcfs.
    let switched_at: DateTime<Utc> = eventually(
        &children,
        "(a) Redis policy = priority managed by the SchedulerConfig",
        Duration::from_secs(30),
        Duration::from_millis(2),
        async || (redis.policy().await.ok()?? == priority).then(Utc::now),
    )
    .await;
    let latency = sent_at.elapsed();
    until(
        &children,
        "(b) status patch: activePolicy priority, observedGeneration 2, Ready=True",
        30,
        async || applied_patch(&kube.status_patches(NAME), "priority", generation).then_some(()),
    )
    .await;
    let jobs = until(&children, "(d) every job completed", 60, async || {
        let jobs = all_jobs(store).await;
        (jobs.len() == JOBS && jobs.iter().all(|j| j.status.is_terminal())).then_some(jobs)
    })
    .await;
    for job in &jobs {
        assert_eq!(
            job.status,
            JobStatus::Completed,
            "{} did not complete: {:?}",
            job.name,
            job.error_message
        );
    }

    // (c) Start order: fcfs before the switch, priority then submission order after it.
    let mut started: Vec<&Job> = jobs.iter().collect();
    started.sort_by_key(|j| j.started_at);
    let (before, after): (Vec<&Job>, Vec<&Job>) = started
        .into_iter()
        .partition(|j| j.started_at.expect("started") < switched_at);
    let before: Vec<usize> = before.iter().map(|j| index(j)).collect();
    assert_eq!(
        before,
        (0..before.len()).collect::<Vec<_>>(),
        "under fcfs jobs start in submission order"
    );
    assert!(
        after.len() >= 6,
        "the switch came too late to observe ({} jobs left; controller latency {latency:?})",
        after.len()
    );
    let key = |j: &&Job| (j.priority, j.seq);
    let in_priority_order = |js: &[&Job]| js.windows(2).all(|w| key(&w[0]) < key(&w[1]));
    let rest = if in_priority_order(&after[..]) {
        &after[..]
    } else {
        // At most one job was already handed to the idle slot under fcfs: the next in
        // submission order.
        assert_eq!(
            index(after[0]),
            before.len(),
            "only the job already handed to the idle slot may start out of priority order"
        );
        &after[1..]
    };
    eprintln!(
        "switch applied {latency:?} after the spec change; started before: {}, after: {} (skipped {})",
        before.len(),
        after.len(),
        after.len() - rest.len()
    );
    let names = |js: &[&Job]| js.iter().map(|j| j.name.clone()).collect::<Vec<_>>();
    let mut expected = rest.to_vec();
    expected.sort_by_key(key);
    assert_eq!(
        names(rest),
        names(&expected),
        "after the SchedulerConfig switched to priority, jobs start in priority-then-submission order"
    );

    // The durable copy follows the object too, and the change was announced as an Event.
    let what = "durable policy copy = priority managed by the SchedulerConfig, and a \
                PolicyChanged Event for the switch";
    until(&children, what, 60, async || {
        let durable = store.policy().await.ok()?? == priority;
        (durable && kube.events("PolicyChanged", NAME) > events_before).then_some(())
    })
    .await;
    kube.assert_served_all();
    assert!(
        !kube.lock().leases.is_empty(),
        "the controller took the leader Lease"
    );

    drop(children);
    drop(server);
    setup.finish().await;
}

/// Two installations in one namespace (two releases): each controller process watches only its
/// own `SchedulerConfig` (a `metadata.name` field selector), holds its own Lease and writes its
/// own Redis; neither reads nor patches the other's object, so they never fight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installations_in_one_namespace_never_touch_each_other() {
    let prefixes = [
        format!("jobsched-ctl2a-{}", uuid::Uuid::new_v4().simple()),
        format!("jobsched-ctl2b-{}", uuid::Uuid::new_v4().simple()),
    ];
    let mut redis = Vec::new();
    for p in &prefixes {
        let Some(r) = required("Redis", RedisTransport::connect(REDIS_URL, p).await) else {
            return;
        };
        redis.push(r);
    }
    let _keys: Vec<DropKeys> = prefixes
        .iter()
        .map(|p| DropKeys::new(REDIS_URL, p))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let kube = KubeStandIn::new(NS);
    kube.apply("main", json!({"policy": "fcfs"}));
    kube.apply("other", json!({"policy": "priority"}));
    let (kube_port, _server) = serve(kube.clone()).await;
    let kubeconfig = write_kubeconfig(dir.path(), kube_port, NS);
    let children = Children::default();
    for (name, prefix) in [("main", &prefixes[0]), ("other", &prefixes[1])] {
        let mut controller = Command::new(BIN);
        controller
            .arg("controller")
            .env("KUBECONFIG", &kubeconfig)
            .env("JOBSCHED_NAMESPACE", NS)
            .env("JOBSCHED_CONFIG_NAME", name)
            .env("JOBSCHED_LEASE_NAME", format!("jobsched-{name}-controller"))
            // Redis only (`make test` exports a database URL for other tests).
            .env_remove("JOBSCHED_DATABASE_URL")
            .env("JOBSCHED_REQUEUE_SECONDS", "1")
            .env("JOBSCHED_REDIS_URL", REDIS_URL)
            .env("JOBSCHED_REDIS_PREFIX", prefix)
            .env("JOBSCHED_METRICS_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn");
        children.spawn(
            if name == "main" {
                "controller-main"
            } else {
                "controller-other"
            },
            &mut controller,
        );
    }
    for ((name, policy), r) in [("main", PolicyKind::Fcfs), ("other", PolicyKind::Priority)]
        .into_iter()
        .zip(&redis)
    {
        let want = PolicySettings {
            policy,
            managed_by: Some(format!("{NS}/{name}")),
            ..PolicySettings::default()
        };
        until(
            &children,
            &format!("{name}'s policy in its own Redis, and its status Ready"),
            30,
            async || {
                let status = kube.lock().objects.get(name)?["status"].clone();
                (r.policy().await.ok()?? == want
                    && ready_condition(&status) == Some("True")
                    && status["activePolicy"] == policy.as_str())
                .then_some(())
            },
        )
        .await;
    }
    // Nobody marked the other's object, and every list and watch asked for one object by name.
    let patches = kube.lock().status_patches.clone();
    assert!(
        patches
            .iter()
            .all(|(_, p)| ready_condition(&p["status"]) == Some("True")),
        "a controller patched the other installation's object: {patches:?}"
    );
    let selectors = kube.lock().selectors.clone();
    assert!(
        !selectors.is_empty()
            && selectors
                .iter()
                .all(|s| s == "metadata.name=main" || s == "metadata.name=other"),
        "{selectors:?}"
    );
    assert!(selectors.contains(&"metadata.name=main".to_string()));
    assert!(selectors.contains(&"metadata.name=other".to_string()));
    kube.assert_served_all();
}

/// The controller under faults: Redis wiped, the API server gone for 3 s (a change made meanwhile
/// included), and the leading controller killed; after each, the object's policy is in Redis
/// and the durable copy again, with no restart other than the killed replica's replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_recovers_from_a_redis_wipe_an_api_server_outage_and_a_kill_9() {
    let Some((setup, server)) = Setup::start("ctlfault").await else {
        return;
    };
    let Setup {
        redis,
        store,
        kube,
        kube_port,
        ..
    } = &setup;
    let children = Children::default();
    let metrics_port = free_port();
    let controller = |identity: &str| {
        let mut cmd = setup.controller("error");
        cmd.env("HOSTNAME", identity);
        cmd
    };
    let mut first = controller("ctl-a");
    first.env(
        "JOBSCHED_METRICS_LISTEN",
        format!("127.0.0.1:{metrics_port}"),
    );
    children.spawn("controller-a", &mut first);
    let http = http_client();
    let readyz = async || {
        http.get(format!("http://127.0.0.1:{metrics_port}/readyz"))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };
    // The object's policy, in Redis and in the durable copy.
    let applied = async |policy: PolicyKind, what: &str| {
        let want = owned(policy);
        let start = Instant::now();
        until(&children, what, 60, async || {
            (redis.policy().await.ok()?? == want && store.policy().await.ok()?? == want)
                .then_some(())
        })
        .await;
        start.elapsed()
    };
    applied(PolicyKind::Fcfs, "fcfs applied at start").await;

    // 1. Every key of the installation wiped (FLUSHALL for this prefix).
    assert!(redis.delete_all_keys().await.expect("wipe") > 0);
    let after_wipe = applied(PolicyKind::Fcfs, "fcfs back in Redis after the wipe").await;

    // 2. The API server gone for 3 s; the object changes meanwhile, then once more after.
    // The controller is not ready while it cannot reach the API server.
    let ready_is = async |code, what, secs| {
        until(&children, what, secs, async || {
            (readyz().await == Some(code)).then_some(())
        })
        .await
    };
    ready_is(200, "/readyz 200 while the API server answers", 30).await;
    drop(server);
    let outage = Instant::now();
    ready_is(503, "/readyz 503 while the API server is gone", 3).await;
    kube.apply(NAME, json!({"policy": "sjf"}));
    let remaining = Duration::from_secs(3).saturating_sub(outage.elapsed());
    tokio::time::sleep(remaining).await;
    let (_, server) = serve_on(kube.clone(), *kube_port).await;
    let back = Instant::now();
    ready_is(200, "/readyz 200 again once the API server is back", 30).await;
    let missed = applied(PolicyKind::Sjf, "the change made during the outage applied").await;
    eprintln!("outage lasted {:?}", back - outage);
    kube.apply(NAME, json!({"policy": "priority"}));
    let watched = applied(PolicyKind::Priority, "a change after the outage applied").await;

    // 3. kill -9 of the leading controller; a new replica takes the Lease when it expires.
    children.kill("controller-a");
    children.spawn("controller-b", &mut controller("ctl-b"));
    kube.apply(
        NAME,
        json!({"policy": "round_robin", "roundRobin": {"quantumSeconds": 2}}),
    );
    let want = PolicySettings {
        quantum_seconds: 2.0,
        ..owned(PolicyKind::RoundRobin)
    };
    let killed = Instant::now();
    until(
        &children,
        "the new controller applies round_robin",
        60,
        async || (redis.policy().await.ok()?? == want).then_some(()),
    )
    .await;
    let failover = killed.elapsed();
    kube.assert_served_all();
    eprintln!(
        "RELIABILITY | controller: Redis keys wiped; API server down 3 s (a spec change made \
         meanwhile); kill -9 of the leading replica (15 s Lease) | {:.2} s, {:.2} s after the API \
         server returned ({:.2} s for the next change), {:.2} s | 0 | — | none | |",
        after_wipe.as_secs_f64(),
        missed.as_secs_f64(),
        watched.as_secs_f64(),
        failover.as_secs_f64()
    );
    drop(children);
    drop(server);
    setup.finish().await;
}
