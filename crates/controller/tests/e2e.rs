//! End to end: two controller replicas (`run_with_client`, in-process) against a small HTTP
//! server that stands in for the Kubernetes API server. It speaks just enough of the protocol
//! for this controller: list/watch and status merge-patch of SchedulerConfigs, Event creation,
//! and get/create/update of Leases with resourceVersion conflicts. The Redis side is the real
//! Redis under a unique key prefix.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use futures::channel::mpsc;
use jobsched_controller::{ControllerConfig, Ports, TransportPort, run_with_client};
use jobsched_core::ports::Settings as _;
use jobsched_core::{PolicyKind, PolicySettings};
use jobsched_testkit::required;
use jobsched_transport::{DropKeys, RedisTransport};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NS: &str = "e2e";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const CRD_PATH: &str = "/apis/jobsched.io/v1alpha1/namespaces/{ns}/schedulerconfigs";

/// State of the stand-in API server.
#[derive(Default)]
struct Fake {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<String, Value>,
    /// Every watch event with the resourceVersion it produced (replayed to late watchers).
    history: Vec<(u64, Value)>,
    watchers: Vec<mpsc::UnboundedSender<Result<Bytes, Infallible>>>,
    /// The `fieldSelector` of every list and watch request (`""` when none).
    selectors: Vec<String>,
    status_patches: Vec<(String, Value)>,
    events: Vec<Value>,
    leases: BTreeMap<String, Value>,
    unexpected: Vec<String>,
}

impl Inner {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn broadcast(&mut self, kind: &str, object: Value) {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let event = json!({"type": kind, "object": object});
        self.history.push((rv, event.clone()));
        let mut line = serde_json::to_vec(&event).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        self.watchers
            .retain(|w| w.unbounded_send(Ok(line.clone())).is_ok());
    }
}

fn status_error(code: u16, reason: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": reason, "code": code})),
    )
        .into_response()
}

impl Fake {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// Create or update (spec only) a SchedulerConfig, as `kubectl apply` would.
    fn apply(&self, name: &str, spec: Value) {
        let mut inner = self.lock();
        let rv = inner.next_rv().to_string();
        let existing = inner.objects.get(name).cloned();
        let id = ("SchedulerConfig", NS, name);
        let (kind, object) = jobsched_testkit::kubectl_apply(existing, id, spec, json!(rv));
        inner.objects.insert(name.into(), object.clone());
        inner.broadcast(kind, object);
    }

    fn delete(&self, name: &str) {
        let mut inner = self.lock();
        let rv = inner.next_rv().to_string();
        let mut object = inner.objects.remove(name).expect("object exists");
        object["metadata"]["resourceVersion"] = json!(rv);
        inner.broadcast("DELETED", object);
    }

    fn status(&self, name: &str) -> Value {
        self.lock()
            .objects
            .get(name)
            .map_or(Value::Null, |o| o["status"].clone())
    }

    fn lease_holder(&self) -> Option<String> {
        self.lock()
            .leases
            .get("jobsched-controller")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }
}

async fn list_or_watch(
    State(fake): State<Arc<Fake>>,
    Path(_ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut inner = fake.lock();
    let selector = query.get("fieldSelector").cloned().unwrap_or_default();
    let only = selector.strip_prefix("metadata.name=").map(str::to_string);
    inner.selectors.push(selector);
    let selected = |o: &Value| {
        only.as_deref()
            .is_none_or(|n| o["metadata"]["name"].as_str() == Some(n))
    };
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let since: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::unbounded();
        for (rv, event) in &inner.history {
            if *rv > since && selected(&event["object"]) {
                let mut line = serde_json::to_vec(event).unwrap();
                line.push(b'\n');
                let _ = tx.unbounded_send(Ok(Bytes::from(line)));
            }
        }
        inner.watchers.push(tx);
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(rx))
            .unwrap();
    }
    let items: Vec<Value> = inner
        .objects
        .values()
        .filter(|o| selected(o))
        .cloned()
        .collect();
    axum::Json(json!({
        "apiVersion": "jobsched.io/v1alpha1",
        "kind": "SchedulerConfigList",
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    }))
    .into_response()
}

async fn patch_status(
    State(fake): State<Arc<Fake>>,
    Path((_ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let patch: Value = serde_json::from_slice(&body).unwrap();
    let mut inner = fake.lock();
    let Some(mut object) = inner.objects.get(&name).cloned() else {
        return status_error(404, "NotFound");
    };
    // The status subresource ignores everything but the status.
    jobsched_testkit::merge_patch(&mut object["status"], &patch["status"]);
    let rv = inner.next_rv().to_string();
    object["metadata"]["resourceVersion"] = json!(rv);
    inner.objects.insert(name.clone(), object.clone());
    inner.status_patches.push((name, patch));
    inner.broadcast("MODIFIED", object.clone());
    axum::Json(object).into_response()
}

async fn create_event(State(fake): State<Arc<Fake>>, body: Bytes) -> Response {
    let event: Value = serde_json::from_slice(&body).unwrap();
    fake.lock().events.push(event.clone());
    (StatusCode::CREATED, axum::Json(event)).into_response()
}

/// A stored object as its GET answers: 200 with it, or 404.
fn found(object: Option<&Value>) -> Response {
    match object {
        Some(object) => axum::Json(object.clone()).into_response(),
        None => status_error(404, "NotFound"),
    }
}

/// The `{ns}` and `{name}` of a named object's path.
type Named = Path<(String, String)>;

async fn get_config(State(fake): State<Arc<Fake>>, Path((_, name)): Named) -> Response {
    found(fake.lock().objects.get(&name))
}

async fn get_lease(State(fake): State<Arc<Fake>>, Path((_, name)): Named) -> Response {
    found(fake.lock().leases.get(&name))
}

async fn create_lease(State(fake): State<Arc<Fake>>, body: Bytes) -> Response {
    let mut lease: Value = serde_json::from_slice(&body).unwrap();
    let name = lease["metadata"]["name"].as_str().unwrap().to_string();
    let mut inner = fake.lock();
    if inner.leases.contains_key(&name) {
        return status_error(409, "AlreadyExists");
    }
    let rv = inner.next_rv().to_string();
    lease["metadata"]["resourceVersion"] = json!(rv);
    inner.leases.insert(name, lease.clone());
    (StatusCode::CREATED, axum::Json(lease)).into_response()
}

async fn replace_lease(
    State(fake): State<Arc<Fake>>,
    Path((_ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut lease: Value = serde_json::from_slice(&body).unwrap();
    let mut inner = fake.lock();
    let Some(current) = inner.leases.get(&name) else {
        return status_error(404, "NotFound");
    };
    if current["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"] {
        return status_error(409, "Conflict");
    }
    let rv = inner.next_rv().to_string();
    lease["metadata"]["resourceVersion"] = json!(rv);
    inner.leases.insert(name, lease.clone());
    axum::Json(lease).into_response()
}

async fn unexpected(State(fake): State<Arc<Fake>>, req: axum::extract::Request) -> Response {
    fake.lock()
        .unexpected
        .push(format!("{} {}", req.method(), req.uri()));
    status_error(404, "NotFound")
}

/// Serve the stand-in API on a free loopback port; returns its URL.
async fn serve(fake: Arc<Fake>) -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route(CRD_PATH, get(list_or_watch))
        // A stopping leader asks whether its object still exists.
        .route(&format!("{CRD_PATH}/{{name}}"), get(get_config))
        .route(&format!("{CRD_PATH}/{{name}}/status"), patch(patch_status))
        .route(
            "/apis/events.k8s.io/v1/namespaces/{ns}/events",
            post(create_event),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
            post(create_lease),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
            get(get_lease).put(replace_lease),
        )
        .fallback(unexpected)
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

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
        lease_name: "jobsched-controller".into(),
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
    let fake = Arc::new(Fake::default());
    fake.apply("jobsched", json!({"policy": "priority"}));
    fake.apply("staging", json!({"policy": "sjf"}));
    let (url, server) = serve(fake.clone()).await;

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
    let leader = eventually("a lease holder", 20, async || fake.lease_holder()).await;
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
        (fake.lease_holder()? == follower).then_some(())
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
    assert_eq!(fake.lease_holder(), None, "lease released on shutdown");
    {
        let inner = fake.lock();
        assert!(
            inner.unexpected.is_empty(),
            "unexpected API calls: {:?}",
            inner.unexpected
        );
        assert!(
            inner
                .status_patches
                .iter()
                .all(|(name, _)| name == "jobsched" || name == "staging"),
        );
        // Status is patched only on change: far fewer patches than reconciles.
        assert!(
            inner.status_patches.len() <= 12,
            "too many status patches: {}",
            inner.status_patches.len()
        );
    }
    server.abort();
}
