//! End to end: two controller replicas (`run_with_client`, in-process) against the testkit's
//! stand-in for the Kubernetes API server. The Redis side is the real Redis under a unique key
//! prefix.

use jobsched_controller::{ControllerConfig, Ports, TransportPort, run_with_client};
use jobsched_core::ports::Settings as _;
use jobsched_core::{PolicyKind, PolicySettings};
use jobsched_testkit::kube::{KubeStandIn, serve};
use jobsched_testkit::required;
use jobsched_transport::{DropKeys, RedisTransport};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NS: &str = "e2e";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const LEASE: &str = "jobsched-controller";

/// The running replicas: their stop tokens and tasks, by identity.
type Replicas = HashMap<
    &'static str,
    (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), jobsched_controller::ControllerError>>,
    ),
>;

/// Stop replica `id` (graceful shutdown) and wait up to 20 s for it to end without an error.
async fn stop(replicas: &mut Replicas, id: &str) {
    let (token, task) = replicas.remove(id).expect("a running replica");
    token.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(20), task).await;
    ended
        .expect("the replica stopped in time")
        .unwrap()
        .unwrap();
}

/// Wait until Redis holds `expected` as the policy settings.
async fn cached(transport: &RedisTransport, what: &str, expected: &PolicySettings) {
    eventually(what, 20, async || {
        (transport.policy().await.ok()?? == *expected).then_some(())
    })
    .await;
}

/// Poll `check` until it returns `Some` or `secs` pass.
async fn eventually<T>(what: &str, secs: u64, check: impl AsyncFnMut() -> Option<T>) -> T {
    jobsched_testkit::eventually(what, Duration::from_secs(secs), check).await
}

fn ready(status: &Value) -> Option<(String, String)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

fn replica(identity: &str) -> ControllerConfig {
    ControllerConfig {
        namespace: NS.into(),
        config_name: "jobsched".into(),
        requeue: Duration::from_secs(2),
        leader_election: true,
        lease_name: LEASE.into(),
        identity: identity.into(),
        lease_ttl: Duration::from_secs(3),
        schedule_selector: None,
    }
}

fn client(url: &str) -> kube::Client {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.default_namespace = NS.into();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_follow_the_schedulerconfig() {
    let prefix = format!("jobsched-ctl-e2e-{}", uuid::Uuid::new_v4().simple());
    let Some(transport) = required("Redis", RedisTransport::connect(REDIS_URL, &prefix).await)
    else {
        return;
    };
    let _keys = DropKeys::new(REDIS_URL, &prefix);
    let fake = KubeStandIn::new(NS);
    fake.apply("jobsched", json!({"policy": "priority"}));
    fake.apply("staging", json!({"policy": "sjf"}));
    let (port, server) = serve(fake.clone()).await;
    let url = format!("http://127.0.0.1:{port}");

    let owner = Some(format!("{NS}/jobsched"));
    let want = |policy, quantum, managed_by: &Option<String>| PolicySettings {
        policy,
        quantum_seconds: quantum,
        paused: false,
        managed_by: managed_by.clone(),
        ..Default::default()
    };

    let mut replicas = Replicas::new();
    for id in ["replica-a", "replica-b"] {
        let token = CancellationToken::new();
        // Each replica has its own Redis connection, as separate pods do.
        let own = RedisTransport::connect(REDIS_URL, &prefix).await.unwrap();
        let ports = Ports {
            transport: TransportPort::ready(Arc::new(own)),
            store: None,
        };
        let task = tokio::spawn(run_with_client(
            replica(id),
            ports,
            client(&url),
            token.clone(),
        ));
        replicas.insert(id, (token, task));
    }

    // One replica leads and applies the selected object.
    let leader = eventually("a lease holder", 20, async || fake.lease_holder(LEASE)).await;
    let expected = want(PolicyKind::Priority, 5.0, &owner);
    cached(&transport, "Redis policy = priority", &expected).await;
    eventually("jobsched Ready=True Applied", 20, async || {
        let status = fake.status("jobsched");
        (ready(&status)? == ("True".into(), "Applied".into())
            && status["activePolicy"] == "priority"
            && status["observedGeneration"] == 1)
            .then_some(())
    })
    .await;
    // Another installation's object is neither watched nor touched (not even its status):
    // every list and watch selected this installation's object by name.
    assert_eq!(fake.status("staging"), Value::Null, "staging untouched");
    let selectors = fake.lock().selectors.clone();
    assert!(
        !selectors.is_empty() && selectors.iter().all(|s| s == "metadata.name=jobsched"),
        "{selectors:?}"
    );
    // The Event is published after the status patch: wait for it, then check it is the only one.
    let events = eventually("a PolicyChanged event", 20, async || {
        let events = fake.lock().events.clone();
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1, "one PolicyChanged event: {events:?}");
    assert_eq!(events[0]["reason"], "PolicyChanged");
    assert_eq!(events[0]["reportingInstance"], leader.as_str());
    assert_eq!(events[0]["regarding"]["name"], "jobsched");

    // A spec change (MODIFIED watch event) is followed within the poll timeout.
    fake.apply(
        "jobsched",
        json!({"policy": "round_robin", "roundRobin": {"quantumSeconds": 2.5}}),
    );
    let expected = want(PolicyKind::RoundRobin, 2.5, &owner);
    cached(&transport, "Redis policy = round_robin", &expected).await;
    eventually("status follows generation 2", 20, async || {
        let status = fake.status("jobsched");
        (status["activePolicy"] == "round_robin" && status["observedGeneration"] == 2).then_some(())
    })
    .await;

    // Level-triggered: a flushed Redis is re-asserted on the next requeue.
    transport.delete_all_keys().await.unwrap();
    cached(&transport, "Redis policy restored after flush", &expected).await;

    // The leader stops (graceful shutdown, lease released); the other replica takes over.
    stop(&mut replicas, leader.as_str()).await;
    let follower = if leader == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    eventually("the other replica holds the lease", 20, async || {
        (fake.lease_holder(LEASE)? == follower).then_some(())
    })
    .await;
    fake.apply("jobsched", json!({"policy": "sjf", "paused": true}));
    let mut expected = want(PolicyKind::Sjf, 5.0, &owner);
    expected.paused = true;
    cached(
        &transport,
        "Redis policy = sjf (paused) from the new leader",
        &expected,
    )
    .await;
    eventually("an event from the new leader", 20, async || {
        fake.lock()
            .events
            .iter()
            .any(|e| e["reportingInstance"] == follower)
            .then_some(())
    })
    .await;

    // Deleting the object keeps the policy and releases ownership to the REST API.
    fake.delete("jobsched");
    expected.managed_by = None;
    cached(&transport, "managed_by cleared, policy kept", &expected).await;

    stop(&mut replicas, follower).await;
    assert_eq!(fake.lease_holder(LEASE), None, "lease released on shutdown");
    fake.assert_served_all();
    let patches = fake.lock().status_patches.clone();
    assert!(
        patches.iter().all(|(name, _)| name == "jobsched"),
        "{patches:?}"
    );
    // Status is patched only on change: far fewer patches than reconciles.
    assert!(
        patches.len() <= 12,
        "too many status patches: {}",
        patches.len()
    );
    drop(server);
}
