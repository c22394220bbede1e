//! Reconciler and lease tests against a mock Kubernetes API (`tower_test`) that asserts the exact
//! requests, with the transport in memory (the ports are what `main` hands the controller; the
//! real Redis is exercised by `tests/e2e.rs` and the process tests).

use crate::crd::{
    Condition, RoundRobinSpec, SchedulerConfig, SchedulerConfigSpec, SchedulerConfigStatus,
};
use crate::error::ControllerError;
use crate::leader::LeaseLock;
use crate::metrics::metrics;
use crate::port::{StorePort, TransportPort};
use crate::reconcile::{
    Context, FIELD_MANAGER, READY, REASON_APPLIED, REASON_INVALID_SPEC, REASON_REDIS_UNAVAILABLE,
    error_policy, reconcile,
};
use chrono::{DateTime, TimeZone, Utc};
use http::{Method, Request, Response};
use jobsched_core::ports::{EventBus as _, ManualClock, Settings as _};
use jobsched_core::{PolicyKind, PolicySettings};
use jobsched_transport::{MemoryTransport, RedisTransport};
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NS: &str = "testns";
const NAME: &str = "jobsched";
const OWNER: &str = "testns/jobsched";
const T0: &str = "2025-01-01T00:00:00Z";
const T1: &str = "2025-01-01T00:05:00Z";

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// A clock the test sets.
struct TestClock;

impl TestClock {
    fn at(rfc3339: &str) -> Arc<ManualClock> {
        Arc::new(ManualClock::at(
            DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .with_timezone(&Utc),
        ))
    }
}

fn mock_client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, NS), handle)
}

/// A transport port on Redis at `url` under `prefix`, connected on first use (as `main` makes it).
fn redis_port(url: &str, prefix: &str) -> TransportPort {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    TransportPort::connect_with(move || {
        let (url, prefix) = (url.clone(), prefix.clone());
        async move {
            let t = RedisTransport::connect(&url, &prefix).await?;
            Ok(Arc::new(t) as Arc<dyn jobsched_core::ports::Transport>)
        }
    })
}

/// A store port on the database at `url`, connected on first use (as `main` makes it).
fn store_port(url: &str) -> StorePort {
    let url = url.to_owned();
    StorePort::connect_with(move || {
        let url = url.clone();
        async move { Ok(jobsched_store::connect(&url, 2).await?) }
    })
}

/// A context on `transport` and a mocked API server (its handle), the clock at `at`.
fn on_memory(transport: &MemoryTransport, at: &str) -> (Arc<Context>, Handle) {
    let (client, handle) = mock_client();
    let redis = TransportPort::ready(Arc::new(transport.clone()));
    (context(client, redis, TestClock::at(at)), handle)
}

fn context(client: Client, redis: TransportPort, clock: Arc<ManualClock>) -> Arc<Context> {
    Arc::new(Context {
        client,
        namespace: NS.into(),
        config_name: NAME.into(),
        managed_by: OWNER.into(),
        redis,
        store: None,
        reporter: Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some("test-replica".into()),
        },
        requeue: Duration::from_secs(60),
        clock,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
        failures: Mutex::new(HashMap::new()),
    })
}

/// A context on the mock API server with the durable store of `db`, its clock at `at`.
fn context_with_store(
    transport: &MemoryTransport,
    db: &jobsched_store::testing::TestDb,
    at: &str,
) -> (Arc<Context>, Handle) {
    let (mut ctx, handle) = on_memory(transport, at);
    Arc::get_mut(&mut ctx).unwrap().store = Some(store_port(db.url()));
    (ctx, handle)
}

/// A fresh Postgres test database (none: skipped) and a context on it and a new memory
/// transport, its clock at `at`.
async fn on_store(
    at: &str,
) -> Option<(
    MemoryTransport,
    jobsched_store::testing::TestDb,
    Arc<Context>,
    Handle,
)> {
    let transport = MemoryTransport::new();
    let db = jobsched_store::testing::TestDb::postgres().await?;
    let (ctx, handle) = context_with_store(&transport, &db, at);
    Some((transport, db, ctx, handle))
}

fn spec(policy: PolicyKind) -> SchedulerConfigSpec {
    SchedulerConfigSpec {
        policy,
        round_robin: None,
        paused: false,
        concurrency_limit: None,
        weight: 1,
        queues: Vec::new(),
    }
}

fn object(name: &str, spec: SchedulerConfigSpec, generation: i64) -> SchedulerConfig {
    let mut obj = SchedulerConfig::new(name, spec);
    obj.metadata.namespace = Some(NS.into());
    obj.metadata.generation = Some(generation);
    obj.metadata.uid = Some(format!("uid-{name}"));
    obj.metadata.resource_version = Some("100".into());
    obj
}

fn settings(policy: PolicyKind, quantum: f64, owner: Option<&str>) -> PolicySettings {
    PolicySettings {
        policy,
        quantum_seconds: quantum,
        paused: false,
        managed_by: owner.map(str::to_string),
        ..Default::default()
    }
}

/// [`ready_status`] with the message of a plain policy (no quantum, pause or queues).
fn in_effect(
    policy: PolicyKind,
    generation: i64,
    applied: &str,
    transition: &str,
) -> SchedulerConfigStatus {
    let message = format!("scheduling policy {policy} is in effect");
    ready_status(policy, generation, applied, transition, &message)
}

fn ready_status(
    policy: PolicyKind,
    generation: i64,
    applied: &str,
    transition: &str,
    message: &str,
) -> SchedulerConfigStatus {
    SchedulerConfigStatus {
        observed_generation: Some(generation),
        active_policy: Some(policy),
        last_applied_time: Some(applied.into()),
        conditions: vec![Condition {
            type_: READY.into(),
            status: "True".into(),
            reason: REASON_APPLIED.into(),
            message: message.into(),
            last_transition_time: transition.into(),
            observed_generation: Some(generation),
        }],
    }
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn not_found() -> Response<Body> {
    json_response(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "message": "not found", "code": 404}),
    )
}

/// The next request: method, path, query, JSON body and the responder.
async fn next_request(handle: &mut Handle) -> (Method, String, String, Value, Responder) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the controller made no further request")
        .expect("the client was dropped");
    let (parts, body) = req.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    if parts.method == Method::PATCH && parts.uri.path().ends_with("/status") {
        assert_eq!(
            parts.headers.get("content-type").unwrap(),
            "application/merge-patch+json",
            "status patches are JSON merge patches"
        );
    }
    (
        parts.method,
        parts.uri.path().to_string(),
        parts.uri.query().unwrap_or_default().to_string(),
        body,
        send,
    )
}

fn status_path(name: &str) -> String {
    format!("/apis/jobsched.io/v1alpha1/namespaces/{NS}/schedulerconfigs/{name}/status")
}

/// Expect a status merge patch of `name` with exactly `expected` as `status`.
async fn expect_status_patch(
    handle: &mut Handle,
    obj: &SchedulerConfig,
    expected: &SchedulerConfigStatus,
) {
    let (method, path, query, body, send) = next_request(handle).await;
    assert_eq!(method, Method::PATCH);
    assert_eq!(path, status_path(&obj.metadata.name.clone().unwrap()));
    assert!(
        query.contains("fieldManager=jobsched-controller"),
        "query {query}"
    );
    assert_eq!(body, json!({ "status": expected }));
    answer_patch(send, obj, &body);
}

/// Answer a status patch (its request `body`) with `obj` as it stands after it.
fn answer_patch(send: Responder, obj: impl serde::Serialize, body: &Value) {
    let mut patched = serde_json::to_value(obj).unwrap();
    patched["status"] = body["status"].clone();
    send.send_response(json_response(200, &patched));
}

/// Expect a status patch of `name` that turns Ready False for `reason` with a message that
/// names each of `names`; answer it with `obj` patched. The patch's status.
async fn expect_not_ready(
    handle: &mut Handle,
    (name, obj): (&str, &SchedulerConfig),
    reason: &str,
    names: &[&str],
) -> SchedulerConfigStatus {
    let (method, path, _, body, send) = next_request(handle).await;
    assert_eq!((method, path), (Method::PATCH, status_path(name)));
    let status: SchedulerConfigStatus = serde_json::from_value(body["status"].clone()).unwrap();
    let ready = &status.conditions[0];
    assert_eq!(
        (
            ready.type_.as_str(),
            ready.status.as_str(),
            ready.reason.as_str()
        ),
        (READY, "False", reason)
    );
    for name in names {
        assert!(ready.message.contains(name), "{}", ready.message);
    }
    answer_patch(send, obj, &body);
    status
}

/// Expect the creation of a `PolicyChanged` event about `name` with `note`.
async fn expect_event(handle: &mut Handle, name: &str, note: &str) {
    let (method, path, _, body, send) = next_request(handle).await;
    assert_eq!(method, Method::POST);
    assert_eq!(
        path,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
    );
    assert_eq!(body["reason"], "PolicyChanged");
    assert_eq!(body["type"], "Normal");
    assert_eq!(body["action"], "ApplyPolicy");
    assert_eq!(body["note"], note);
    assert_eq!(body["reportingController"], FIELD_MANAGER);
    assert_eq!(body["regarding"]["kind"], "SchedulerConfig");
    assert_eq!(body["regarding"]["name"], name);
    assert_eq!(body["regarding"]["namespace"], NS);
    send.send_response(json_response(201, &body));
}

/// Reconcile `obj` against the mocked API server: a status patch to `expected`, then an event
/// that says `note`; the object is looked at again after the regular requeue interval.
async fn applies(
    ctx: &Arc<Context>,
    handle: Handle,
    obj: SchedulerConfig,
    expected: SchedulerConfigStatus,
    note: &'static str,
) {
    let patched = obj.clone();
    let verify = move |mut h| async move {
        expect_status_patch(&mut h, &patched, &expected).await;
        expect_event(&mut h, NAME, note).await;
        h
    };
    let action = with_api(handle, verify, reconcile(Arc::new(obj), ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
}

/// Run `fut` (the reconcile) next to `verify` (the mock API server). The reconcile must finish:
/// an unexpected request would stay unanswered and time it out.
async fn with_api<T, V>(
    handle: Handle,
    verify: impl FnOnce(Handle) -> V,
    fut: impl Future<Output = T>,
) -> T
where
    V: Future<Output = Handle> + Send + 'static,
{
    let server = tokio::spawn(verify(handle));
    let out = tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("reconcile did not finish: it made a request the test did not expect");
    let mut handle = server.await.expect("mock API server assertions failed");
    // `None` means the client is gone (dropped with the context): no request can follow.
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await
    {
        panic!("unexpected extra request {} {}", req.method(), req.uri());
    }
    out
}

#[tokio::test]
async fn new_object_writes_redis_patches_status_and_publishes_event() {
    let transport = MemoryTransport::new();
    let (ctx, handle) = on_memory(&transport, T0);
    let obj = object(NAME, spec(PolicyKind::Priority), 1);
    let expected = in_effect(PolicyKind::Priority, 1, T0, T0);
    let ok_before = metrics().reconciles.with_label_values(&["ok"]).get();

    let note = "scheduling policy set to priority (was unset)";
    applies(&ctx, handle, obj, expected, note).await;
    let owned = settings(PolicyKind::Priority, 5.0, Some(OWNER));
    assert_eq!(transport.policy().await.unwrap(), Some(owned));
    assert!(metrics().reconciles.with_label_values(&["ok"]).get() > ok_before);
}

#[tokio::test]
async fn spec_change_switches_policy_and_keeps_transition_time() {
    let transport = MemoryTransport::new();
    transport
        .set_policy(&settings(PolicyKind::Priority, 5.0, Some(OWNER)))
        .await
        .unwrap();
    let (ctx, handle) = on_memory(&transport, T1);
    let mut obj = object(
        NAME,
        SchedulerConfigSpec {
            policy: PolicyKind::RoundRobin,
            round_robin: Some(RoundRobinSpec {
                quantum_seconds: 2.0,
            }),
            paused: true,
            concurrency_limit: None,
            weight: 1,
            queues: Vec::new(),
        },
        2,
    );
    obj.status = Some(in_effect(PolicyKind::Priority, 1, T0, T0));
    // Still Ready=True, so lastTransitionTime stays T0; the rest follows the new generation.
    let expected = ready_status(
        PolicyKind::RoundRobin,
        2,
        T1,
        T0,
        "scheduling policy round_robin (quantum 2s), paused is in effect",
    );

    applies(
        &ctx,
        handle,
        obj,
        expected,
        "scheduling policy set to round_robin (quantum 2s), paused (was priority)",
    )
    .await;
    let mut want = settings(PolicyKind::RoundRobin, 2.0, Some(OWNER));
    want.paused = true;
    assert_eq!(transport.policy().await.unwrap(), Some(want));
}

#[tokio::test]
async fn unchanged_object_makes_no_request_and_no_write() {
    let transport = MemoryTransport::new();
    let applied = settings(PolicyKind::Sjf, 5.0, Some(OWNER));
    transport.set_policy(&applied).await.unwrap();
    let mut events = transport.subscribe().await.unwrap();
    let (ctx, handle) = on_memory(&transport, T1);
    let mut obj = object(NAME, spec(PolicyKind::Sjf), 3);
    obj.status = Some(in_effect(PolicyKind::Sjf, 3, T0, T0));

    let action = with_api(handle, |h| async move { h }, reconcile(Arc::new(obj), ctx))
        .await
        .unwrap();

    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(transport.policy().await.unwrap(), Some(applied));
    // No write means no PolicyChanged broadcast either.
    transport
        .publish(jobsched_core::ports::Event::JobsAvailable)
        .await
        .unwrap();
    assert_eq!(
        events.recv().await,
        Some(jobsched_core::ports::Event::JobsAvailable)
    );
}

#[tokio::test]
async fn stray_write_is_corrected_on_requeue() {
    let transport = MemoryTransport::new();
    // Someone wrote around the controller (and dropped managed_by).
    transport
        .set_policy(&settings(PolicyKind::Fcfs, 5.0, None))
        .await
        .unwrap();
    let (ctx, handle) = on_memory(&transport, T1);
    let mut obj = object(NAME, spec(PolicyKind::Priority), 1);
    obj.status = Some(in_effect(PolicyKind::Priority, 1, T0, T0));
    let expected = in_effect(PolicyKind::Priority, 1, T1, T0);

    let note = "scheduling policy set to priority (was fcfs)";
    applies(&ctx, handle, obj, expected, note).await;
    let owned = settings(PolicyKind::Priority, 5.0, Some(OWNER));
    assert_eq!(transport.policy().await.unwrap(), Some(owned));
}

#[tokio::test]
async fn redis_down_reports_unavailable_and_backs_off() {
    let (client, handle) = mock_client();
    // Nothing listens on port 1: connecting is refused.
    let ctx = context(
        client,
        redis_port("redis://127.0.0.1:1", "jobsched-ctl-test-down"),
        TestClock::at(T1),
    );
    let mut obj = object(NAME, spec(PolicyKind::Priority), 4);
    obj.status = Some(in_effect(PolicyKind::Priority, 4, T0, T0));
    let errors_before = metrics()
        .errors
        .with_label_values(&["RedisUnavailable"])
        .get();

    let obj2 = obj.clone();
    let result = with_api(
        handle,
        move |mut h| async move {
            let names = ["redis://127.0.0.1:1", "JOBSCHED_REDIS_URL"];
            let reason = REASON_REDIS_UNAVAILABLE;
            let status = expect_not_ready(&mut h, (NAME, &obj2), reason, &names).await;
            // The last applied policy stays recorded; Ready flips to False now.
            assert_eq!(status.active_policy, Some(PolicyKind::Priority));
            assert_eq!(status.last_applied_time.as_deref(), Some(T0));
            assert_eq!(status.observed_generation, Some(4));
            assert_eq!(status.conditions.len(), 1);
            assert_eq!(status.conditions[0].last_transition_time, T1);
            h
        },
        reconcile(Arc::new(obj.clone()), ctx.clone()),
    )
    .await;

    let err = result.unwrap_err();
    assert!(matches!(err, ControllerError::Redis { .. }), "{err:?}");
    assert!(
        metrics()
            .errors
            .with_label_values(&["RedisUnavailable"])
            .get()
            > errors_before
    );
    let obj = Arc::new(obj);
    let delays: Vec<Action> = (0..5)
        .map(|_| error_policy(obj.clone(), &err, ctx.clone()))
        .collect();
    let secs = |s| Action::requeue(Duration::from_secs(s));
    assert_eq!(delays, vec![secs(1), secs(2), secs(4), secs(8), secs(8)]);
    // Another object has its own backoff.
    let other = Arc::new(object("other", spec(PolicyKind::Fcfs), 1));
    assert_eq!(error_policy(other, &err, ctx.clone()), secs(1));
}

#[tokio::test]
async fn backoff_resets_after_success() {
    let transport = MemoryTransport::new();
    let applied = settings(PolicyKind::Fcfs, 5.0, Some(OWNER));
    transport.set_policy(&applied).await.unwrap();
    let (ctx, handle) = on_memory(&transport, T1);
    let mut obj = object(NAME, spec(PolicyKind::Fcfs), 1);
    obj.status = Some(in_effect(PolicyKind::Fcfs, 1, T0, T0));
    let obj = Arc::new(obj);
    let err = ControllerError::InvalidSpec {
        object: OWNER.into(),
        message: "x".into(),
    };
    error_policy(obj.clone(), &err, ctx.clone());
    error_policy(obj.clone(), &err, ctx.clone());
    with_api(
        handle,
        |h| async move { h },
        reconcile(obj.clone(), ctx.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        error_policy(obj, &err, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn other_object_is_ignored_and_nothing_is_written() {
    let transport = MemoryTransport::new();
    // Another installation's object (the watch selects only ours; this covers a stray one):
    // no request to the API server at all, not even a status patch, and nothing in Redis.
    let (ctx, handle) = on_memory(&transport, T0);
    let obj = object("staging", spec(PolicyKind::Sjf), 1);
    let action = with_api(handle, |h| async move { h }, reconcile(Arc::new(obj), ctx))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(
        transport.policy().await.unwrap(),
        None,
        "nothing written to Redis"
    );
}

#[test]
fn the_watch_selects_only_the_configured_object() {
    let cfg = crate::watch_config("main");
    assert_eq!(cfg.field_selector.as_deref(), Some("metadata.name=main"));
}

#[tokio::test]
async fn release_ownership_keeps_policy_and_only_touches_own_settings() {
    let transport = MemoryTransport::new();
    let (client, _handle) = mock_client();
    let ctx = context(
        client,
        TransportPort::ready(Arc::new(transport.clone())),
        TestClock::at(T0),
    );

    let mut ours = settings(PolicyKind::RoundRobin, 3.0, Some(OWNER));
    ours.paused = true;
    transport.set_policy(&ours).await.unwrap();
    assert!(ctx.release_ownership().await.unwrap());
    let mut kept = ours.clone();
    kept.managed_by = None;
    assert_eq!(transport.policy().await.unwrap(), Some(kept.clone()));
    assert!(!ctx.release_ownership().await.unwrap(), "already released");

    let theirs = settings(PolicyKind::Sjf, 5.0, Some("otherns/jobsched"));
    transport.set_policy(&theirs).await.unwrap();
    assert!(!ctx.release_ownership().await.unwrap());
    assert_eq!(transport.policy().await.unwrap(), Some(theirs));
}

#[tokio::test]
async fn durable_copy_is_saved_and_released() {
    let Some((transport, db, ctx, handle)) = on_store(T0).await else {
        return;
    };
    let obj = object(NAME, spec(PolicyKind::Sjf), 1);
    let expected = in_effect(PolicyKind::Sjf, 1, T0, T0);
    applies(
        &ctx,
        handle,
        obj,
        expected,
        "scheduling policy set to sjf (was unset)",
    )
    .await;
    let store = db.store().await;
    let want = settings(PolicyKind::Sjf, 5.0, Some(OWNER));
    assert_eq!(store.policy().await.unwrap(), Some(want.clone()));
    assert_eq!(transport.policy().await.unwrap(), Some(want));

    assert!(ctx.release_ownership().await.unwrap());
    assert_eq!(
        store.policy().await.unwrap(),
        Some(settings(PolicyKind::Sjf, 5.0, None))
    );
    drop(ctx);
    db.cleanup().await;
}

/// `spec.queues[]`: each listed queue's settings land in the store and Redis, owned by the
/// object; a queue dropped from the list keeps its settings and goes back to the REST API, as
/// do all of them when the object is deleted.
#[tokio::test]
async fn spec_queues_are_applied_owned_and_released() {
    let Some((transport, db, ctx, handle)) = on_store(T0).await else {
        return;
    };
    // A queue set through the REST API beforehand, and one this object will take over.
    let store = db.store().await;
    let rest_owned = PolicySettings {
        weight: 7,
        ..Default::default()
    };
    jobsched_core::queue::apply(&*store, &transport, "rest", &rest_owned)
        .await
        .unwrap();
    let mut with_queues = spec(PolicyKind::Fcfs);
    with_queues.queues = vec![
        crate::crd::QueueSpec {
            name: "emails".into(),
            policy: PolicyKind::Priority,
            quantum_seconds: 5.0,
            paused: false,
            concurrency_limit: Some(10),
            weight: 3,
        },
        crate::crd::QueueSpec {
            name: "reports".into(),
            policy: PolicyKind::Sjf,
            quantum_seconds: 5.0,
            paused: true,
            concurrency_limit: None,
            weight: 1,
        },
    ];
    let obj = object(NAME, with_queues.clone(), 1);
    let expected = ready_status(
        PolicyKind::Fcfs,
        1,
        T0,
        T0,
        "scheduling policy fcfs is in effect; queues emails: priority, reports: sjf, paused",
    );
    applies(
        &ctx,
        handle,
        obj,
        expected,
        "scheduling policy set to fcfs (was unset)",
    )
    .await;
    let emails = PolicySettings {
        policy: PolicyKind::Priority,
        concurrency_limit: Some(10),
        weight: 3,
        managed_by: Some(OWNER.into()),
        ..Default::default()
    };
    let find = |all: Vec<(String, PolicySettings)>, name: &str| {
        all.into_iter().find(|(n, _)| n == name).map(|(_, s)| s)
    };
    assert_eq!(
        find(transport.queues().await.unwrap(), "emails"),
        Some(emails.clone())
    );
    assert_eq!(find(store.queues().await.unwrap(), "emails"), Some(emails));
    let reports = find(store.queues().await.unwrap(), "reports").unwrap();
    assert!(reports.paused && reports.policy == PolicyKind::Sjf);
    assert_eq!(
        find(transport.queues().await.unwrap(), "rest"),
        Some(rest_owned.clone()),
        "a queue the object does not list is left alone"
    );

    // `reports` dropped from the spec: released, settings kept.
    let mut fewer = with_queues;
    fewer.queues.truncate(1);
    let written = ctx
        .apply_queues(&[("emails".into(), fewer.queues[0].to_settings(OWNER))])
        .await
        .unwrap();
    assert_eq!(written, vec!["reports".to_string()]);
    let reports = find(transport.queues().await.unwrap(), "reports").unwrap();
    assert_eq!(reports.managed_by, None);
    assert!(reports.paused, "released settings are kept");
    assert_eq!(
        find(store.queues().await.unwrap(), "reports")
            .unwrap()
            .managed_by,
        None
    );

    // The object deleted: every queue it owned goes back to the REST API.
    assert!(ctx.release_ownership().await.unwrap());
    let emails = find(store.queues().await.unwrap(), "emails").unwrap();
    assert_eq!(emails.managed_by, None);
    assert_eq!(emails.concurrency_limit, Some(10));
    assert_eq!(
        find(transport.queues().await.unwrap(), "emails")
            .unwrap()
            .managed_by,
        None
    );
    drop(ctx);
    db.cleanup().await;
}

/// A spec that names the default queue in spec.queues[], lists one twice or sets a weight out
/// of range is refused as a whole.
#[test]
fn bad_spec_queues_are_refused_with_the_field() {
    let ok = SchedulerConfigSpec {
        queues: vec![crate::crd::QueueSpec {
            name: "a".into(),
            policy: PolicyKind::Fcfs,
            quantum_seconds: 5.0,
            paused: false,
            concurrency_limit: None,
            weight: 1,
        }],
        ..spec(PolicyKind::Fcfs)
    };
    let check = |s: &SchedulerConfigSpec| {
        let queues: Vec<(String, PolicySettings)> = s
            .queues
            .iter()
            .map(|q| (q.name.clone(), q.to_settings(OWNER)))
            .collect();
        crate::reconcile::check_spec(&s.to_settings(OWNER), &queues)
    };
    assert_eq!(check(&ok), Ok(()));
    let mut twice = ok.clone();
    twice.queues.push(ok.queues[0].clone());
    assert!(check(&twice).unwrap_err().contains("listed twice"));
    let mut default = ok.clone();
    default.queues[0].name = "default".into();
    assert!(check(&default).unwrap_err().contains("spec.queues[0].name"));
    let mut heavy = ok.clone();
    heavy.queues[0].weight = 0;
    assert!(check(&heavy).unwrap_err().contains("weight"));
    let mut bad_name = ok;
    bad_name.queues[0].name = "No".into();
    assert!(
        check(&bad_name)
            .unwrap_err()
            .contains("spec.queues[0].name")
    );
}

// ---- JobSchedules ----

fn job_schedule(name: &str, spec: Value, generation: i64) -> crate::JobSchedule {
    let mut obj = crate::JobSchedule::new(name, serde_json::from_value(spec).unwrap());
    obj.metadata.namespace = Some(NS.into());
    obj.metadata.generation = Some(generation);
    obj.metadata.uid = Some(format!("uid-{name}"));
    obj.metadata.resource_version = Some("100".into());
    obj
}

fn job_schedule_status_path(name: &str) -> String {
    format!("/apis/jobsched.io/v1alpha1/namespaces/{NS}/jobschedules/{name}/status")
}

/// Reconcile JobSchedule `obj`, expecting it refused: a status patch to Ready=False
/// InvalidSpec whose message contains `needle`, then (`warns`) a Warning event.
async fn schedule_refused(
    ctx: &Arc<Context>,
    handle: Handle,
    obj: crate::JobSchedule,
    needle: &'static str,
    warns: bool,
) {
    let name = kube::ResourceExt::name_any(&obj);
    let patched = serde_json::to_value(&obj).unwrap();
    let verify = move |mut h| async move {
        let (method, path, _, body, send) = next_request(&mut h).await;
        assert_eq!(
            (method, path),
            (Method::PATCH, job_schedule_status_path(&name))
        );
        let condition = &body["status"]["conditions"][0];
        assert_eq!(condition["status"], "False", "{body}");
        assert_eq!(condition["reason"], REASON_INVALID_SPEC, "{body}");
        let message = condition["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}");
        answer_patch(send, patched, &body);
        if warns {
            let (method, _, _, event, send) = next_request(&mut h).await;
            assert_eq!(method, Method::POST);
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["reason"], REASON_INVALID_SPEC);
            send.send_response(json_response(201, &event));
        }
        h
    };
    let reconciled = reconcile(Arc::new(obj), ctx.clone());
    with_api(handle, verify, reconciled).await.unwrap();
}

/// A JobSchedule becomes the scheduler's schedule of its name, owned by it (the REST API then
/// refuses to change it), with its next fire time in the status; an unchanged object writes
/// nothing; a bad cron expression is reported in the status and a Warning event; the schedule
/// of an object that is gone is deleted.
#[tokio::test]
async fn a_job_schedule_is_kept_as_an_owned_schedule() {
    let Some((transport, db, ctx, handle)) = on_store(T0).await else {
        return;
    };
    let spec = json!({
        "cron": "0 2 * * *",
        "job": {"jobType": "sleep", "payload": {"duration": 1}, "priority": 2, "queue": "reports"}
    });
    let obj = job_schedule("nightly", spec.clone(), 1);
    with_api(
        handle,
        {
            let obj = obj.clone();
            move |mut h| async move {
                let (method, path, _, body, send) = next_request(&mut h).await;
                assert_eq!(method, Method::PATCH);
                assert_eq!(path, job_schedule_status_path("nightly"));
                let status = &body["status"];
                assert_eq!(status["nextFireTime"], "2025-01-01T02:00:00Z", "{body}");
                assert_eq!(status["observedGeneration"], 1);
                assert_eq!(status["conditions"][0]["status"], "True", "{body}");
                assert_eq!(status["conditions"][0]["reason"], REASON_APPLIED);
                let mut patched = serde_json::to_value(&obj).unwrap();
                patched["status"] = status.clone();
                send.send_response(json_response(200, &patched));
                h
            }
        },
        reconcile(Arc::new(obj.clone()), ctx.clone()),
    )
    .await
    .unwrap();
    let store = db.store().await;
    let stored = store.get_schedule("nightly").await.unwrap().unwrap();
    assert_eq!(stored.managed_by.as_deref(), Some("testns/nightly"));
    assert_eq!(stored.job.queue, "reports");
    assert_eq!(stored.job.priority, 2);
    assert_eq!(
        stored.job.name, "nightly",
        "the job is named after the object"
    );
    assert_eq!(stored.when.expression(), "0 2 * * *");

    // The same object again (its status now as patched): nothing written, no request.
    let mut again = obj.clone();
    again.status = Some(crate::JobScheduleStatus {
        observed_generation: Some(1),
        next_fire_time: Some("2025-01-01T02:00:00Z".into()),
        last_fire_time: None,
        last_job_id: None,
        conditions: vec![Condition {
            type_: READY.into(),
            status: "True".into(),
            reason: REASON_APPLIED.into(),
            message: "schedule nightly is in effect; next fire at 2025-01-01T02:00:00Z".into(),
            last_transition_time: T0.into(),
            observed_generation: Some(1),
        }],
    });
    let (ctx2, handle) = context_with_store(&transport, &db, T0);
    with_api(
        handle,
        |h| async move { h },
        reconcile(Arc::new(again), ctx2.clone()),
    )
    .await
    .unwrap();
    let unchanged = store.get_schedule("nightly").await.unwrap().unwrap();
    assert_eq!(
        unchanged.updated_at, stored.updated_at,
        "no write for an unchanged spec"
    );

    // A bad cron expression: Ready=False/InvalidSpec naming the field, a Warning event, and
    // the schedule as it was.
    let mut bad_spec = spec.clone();
    bad_spec["cron"] = json!("every night");
    let bad = job_schedule("nightly", bad_spec, 2);
    let (ctx3, handle) = context_with_store(&transport, &db, T1);
    schedule_refused(&ctx3, handle, bad, "spec.cron", true).await;
    let kept = store.get_schedule("nightly").await.unwrap().unwrap();
    assert_eq!(kept.when.expression(), "0 2 * * *");

    // A JobSchedule named like a schedule made through the REST API does not take it over:
    // Ready=False/InvalidSpec naming the clash; the REST schedule stays as it was.
    let mut rest = stored.clone();
    rest.name = "by-rest".into();
    rest.managed_by = None;
    store.put_schedule(&rest).await.unwrap();
    let clash = job_schedule("by-rest", spec.clone(), 1);
    let (ctx4, handle) = context_with_store(&transport, &db, T0);
    schedule_refused(&ctx4, handle, clash, "already exists", false).await;
    let kept = store.get_schedule("by-rest").await.unwrap().unwrap();
    assert_eq!(kept.managed_by, None);

    // The object gone from the watch cache: the API server is asked, and on a 404 its
    // schedule is deleted; a REST one stays. An object still in the cache costs no request.
    let (reader, mut writer) = kube::runtime::reflector::store::<crate::JobSchedule>();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
    writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(obj.clone()));
    writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
    let (ctx5, handle) = context_with_store(&transport, &db, T0);
    let conn = ctx5.store.as_ref().unwrap();
    let kept = with_api(
        handle,
        |h| async move { h },
        crate::schedules::sweep(&ctx5, conn, &reader),
    )
    .await
    .unwrap();
    assert!(kept.is_empty());
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Delete(obj));
    let (ctx6, handle) = context_with_store(&transport, &db, T0);
    let conn = ctx6.store.as_ref().unwrap();
    let deleted = with_api(
        handle,
        |mut h| async move {
            let (method, path, _, _, send) = next_request(&mut h).await;
            assert_eq!(method, Method::GET);
            assert_eq!(
                path,
                format!("/apis/jobsched.io/v1alpha1/namespaces/{NS}/jobschedules/nightly")
            );
            send.send_response(not_found());
            h
        },
        crate::schedules::sweep(&ctx6, conn, &reader),
    )
    .await
    .unwrap();
    assert_eq!(deleted, vec!["nightly".to_string()]);
    assert!(store.get_schedule("nightly").await.unwrap().is_none());
    assert!(store.get_schedule("by-rest").await.unwrap().is_some());
    drop((ctx, ctx2, ctx3, ctx4, ctx5, ctx6));
    db.cleanup().await;
}

// ---- leader election ----

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/testns/leases";

fn lease_json(holder: Option<&str>, duration: i32, transitions: i32, rv: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "ctl", "namespace": NS, "resourceVersion": rv},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "leaseTransitions": transitions,
            "acquireTime": "2025-01-01T00:00:00.000000Z",
            "renewTime": "2025-01-01T00:00:00.000000Z",
        }
    })
}

fn lock(client: Client) -> LeaseLock {
    LeaseLock::new(
        Api::<Lease>::namespaced(client, NS),
        "ctl",
        "me",
        Duration::from_secs(15),
    )
}

/// Whether a fresh lock takes the lease against the mocked API server `api`.
async fn try_acquire<V>(api: impl FnOnce(Handle) -> V) -> bool
where
    V: Future<Output = Handle> + Send + 'static,
{
    let (client, handle) = mock_client();
    let mut lock = lock(client);
    with_api(handle, api, lock.try_acquire_or_renew())
        .await
        .unwrap()
}

#[tokio::test]
async fn lease_is_created_when_missing() {
    let held = try_acquire(|mut h| async move {
        let (method, path, _, _, send) = next_request(&mut h).await;
        assert_eq!(
            (method, path.as_str()),
            (
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/testns/leases/ctl"
            )
        );
        send.send_response(not_found());
        let (method, path, _, body, send) = next_request(&mut h).await;
        assert_eq!((method, path.as_str()), (Method::POST, LEASE_PATH));
        assert_eq!(body["metadata"]["name"], "ctl");
        assert_eq!(body["spec"]["holderIdentity"], "me");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        send.send_response(json_response(201, &body));
        h
    })
    .await;
    assert!(held);
}

#[tokio::test]
async fn lease_held_by_another_is_not_taken_and_conflicts_lose() {
    let held = try_acquire(|mut h| async move {
        let (method, _, _, _, send) = next_request(&mut h).await;
        assert_eq!(method, Method::GET);
        send.send_response(json_response(200, &lease_json(Some("other"), 15, 3, "7")));
        h
    })
    .await;
    assert!(!held, "a fresh lease of another holder must not be taken");

    // Racing creation: the API server answers 409 Conflict → not the leader.
    let held = try_acquire(
        |mut h| async move {
            let (_, _, _, _, send) = next_request(&mut h).await;
            send.send_response(not_found());
            let (method, _, _, _, send) = next_request(&mut h).await;
            assert_eq!(method, Method::POST);
            send.send_response(json_response(
                409,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "message": "exists", "code": 409}),
            ));
            h
        },
    )
    .await;
    assert!(!held);
}

#[tokio::test]
async fn released_lease_is_taken_with_resource_version_and_renewed() {
    let (client, handle) = mock_client();
    let mut lock = lock(client);
    let held = with_api(
        handle,
        |mut h| async move {
            let (_, _, _, _, send) = next_request(&mut h).await;
            send.send_response(json_response(200, &lease_json(None, 1, 3, "8")));
            let (method, path, _, body, send) = next_request(&mut h).await;
            assert_eq!(
                (method, path.as_str()),
                (
                    Method::PUT,
                    "/apis/coordination.k8s.io/v1/namespaces/testns/leases/ctl"
                )
            );
            assert_eq!(
                body["metadata"]["resourceVersion"], "8",
                "optimistic concurrency"
            );
            assert_eq!(body["spec"]["holderIdentity"], "me");
            assert_eq!(body["spec"]["leaseTransitions"], 4);
            assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
            send.send_response(json_response(200, &body));
            // Renewal of our own lease keeps acquireTime and the transition count.
            let (_, _, _, _, send) = next_request(&mut h).await;
            send.send_response(json_response(200, &lease_json(Some("me"), 15, 4, "9")));
            let (method, _, _, body, send) = next_request(&mut h).await;
            assert_eq!(method, Method::PUT);
            assert_eq!(body["metadata"]["resourceVersion"], "9");
            assert_eq!(body["spec"]["leaseTransitions"], 4);
            assert_eq!(body["spec"]["acquireTime"], "2025-01-01T00:00:00.000000Z");
            assert_ne!(body["spec"]["renewTime"], "2025-01-01T00:00:00.000000Z");
            send.send_response(json_response(200, &body));
            // Release: holder cleared, duration 1 s.
            let (_, _, _, _, send) = next_request(&mut h).await;
            send.send_response(json_response(200, &lease_json(Some("me"), 15, 4, "10")));
            let (method, _, _, body, send) = next_request(&mut h).await;
            assert_eq!(method, Method::PUT);
            assert_eq!(body["spec"].get("holderIdentity"), None);
            assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
            send.send_response(json_response(200, &body));
            h
        },
        async {
            let first = lock.try_acquire_or_renew().await.unwrap();
            let second = lock.try_acquire_or_renew().await.unwrap();
            lock.release().await.unwrap();
            (first, second)
        },
    )
    .await;
    assert_eq!(held, (true, true));
}

#[test]
fn time_format_is_rfc3339_seconds() {
    let t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 5, 0).unwrap();
    assert_eq!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), T1);
}

#[tokio::test]
async fn every_policy_change_creates_its_own_event() {
    let transport = MemoryTransport::new();
    let (ctx, handle) = on_memory(&transport, T0);
    let first = object(NAME, spec(PolicyKind::Priority), 1);
    let mut second = object(NAME, spec(PolicyKind::Sjf), 2);
    second.status = Some(in_effect(PolicyKind::Priority, 1, T0, T0));
    let expected_first = in_effect(PolicyKind::Priority, 1, T0, T0);
    let expected_second = in_effect(PolicyKind::Sjf, 2, T0, T0);
    let (a, b) = (first.clone(), second.clone());
    with_api(
        handle,
        move |mut h| async move {
            expect_status_patch(&mut h, &a, &expected_first).await;
            expect_event(
                &mut h,
                NAME,
                "scheduling policy set to priority (was unset)",
            )
            .await;
            // A second change within the recorder's dedup window is a new Event (POST), with
            // its own note, not a PATCH of the first one.
            expect_status_patch(&mut h, &b, &expected_second).await;
            expect_event(&mut h, NAME, "scheduling policy set to sjf (was priority)").await;
            h
        },
        async {
            reconcile(Arc::new(first), ctx.clone()).await.unwrap();
            reconcile(Arc::new(second), ctx.clone()).await.unwrap();
        },
    )
    .await;
}

#[test]
fn metrics_are_registered_in_the_default_registry() {
    let m = metrics();
    m.leader.set(0);
    let families = prometheus::gather();
    let find = |name: &str| families.iter().find(|f| f.name() == name);
    for name in [
        "jobsched_controller_reconciles_total",
        "jobsched_controller_reconcile_errors_total",
        "jobsched_controller_reconcile_duration_seconds",
    ] {
        assert!(find(name).is_some(), "{name} not registered");
    }
    let leader = find("jobsched_leader").expect("jobsched_leader registered");
    assert!(leader.get_metric().iter().any(|metric| {
        metric
            .get_label()
            .iter()
            .any(|l| l.name() == "role" && l.value() == "controller")
    }));
}

#[test]
fn config_defaults_and_validation() {
    let cfg = crate::ControllerConfig::default();
    cfg.validate().unwrap();
    assert_eq!(cfg.requeue, Duration::from_secs(60));
    assert!(cfg.leader_election);
    assert_eq!(cfg.managed_by(), "default/jobsched");
    assert!(!cfg.identity.is_empty());
    let bad = |cfg: crate::ControllerConfig, field: &str| {
        let err = cfg.validate().unwrap_err();
        assert!(
            matches!(&err, ControllerError::Config { field: f, .. } if *f == field),
            "{err}"
        );
    };
    bad(
        crate::ControllerConfig {
            namespace: String::new(),
            ..cfg.clone()
        },
        "namespace",
    );
    bad(
        crate::ControllerConfig {
            config_name: "Bad_Name".into(),
            ..cfg.clone()
        },
        "config_name",
    );
    bad(
        crate::ControllerConfig {
            requeue: Duration::ZERO,
            ..cfg.clone()
        },
        "requeue",
    );
    bad(
        crate::ControllerConfig {
            identity: " ".into(),
            ..cfg.clone()
        },
        "identity",
    );
    bad(
        crate::ControllerConfig {
            lease_ttl: Duration::from_millis(10),
            ..cfg.clone()
        },
        "lease_ttl",
    );
    // Without leader election the lease settings are not used.
    crate::ControllerConfig {
        leader_election: false,
        identity: String::new(),
        ..cfg
    }
    .validate()
    .unwrap();
}

#[tokio::test]
async fn quantum_out_of_range_is_invalid_spec_and_writes_nothing() {
    let transport = MemoryTransport::new();
    let (ctx, handle) = on_memory(&transport, T0);
    let obj = object(
        NAME,
        SchedulerConfigSpec {
            policy: PolicyKind::RoundRobin,
            round_robin: Some(RoundRobinSpec {
                quantum_seconds: 1e300,
            }),
            paused: false,
            concurrency_limit: None,
            weight: 1,
            queues: Vec::new(),
        },
        1,
    );
    let action = with_api(
        handle,
        {
            let obj = obj.clone();
            move |mut h| async move {
                let (method, path, _, body, send) = next_request(&mut h).await;
                assert_eq!(method, Method::PATCH);
                assert_eq!(path, status_path(NAME));
                let ready = &body["status"]["conditions"][0];
                assert_eq!(ready["status"], "False");
                assert_eq!(ready["reason"], REASON_INVALID_SPEC);
                let message = ready["message"].as_str().unwrap();
                assert!(
                    message.contains("quantum_seconds") && message.contains("86400"),
                    "{message}"
                );
                answer_patch(send, &obj, &body);
                // A Warning event says why nothing was applied.
                let (method, path, _, body, send) = next_request(&mut h).await;
                assert_eq!(method, Method::POST);
                assert_eq!(
                    path,
                    format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
                );
                assert_eq!(body["type"], "Warning");
                assert_eq!(body["reason"], REASON_INVALID_SPEC);
                assert_eq!(body["regarding"]["name"], NAME);
                assert!(
                    body["note"].as_str().is_some_and(|n| n.contains("86400")),
                    "{body}"
                );
                send.send_response(json_response(201, &body));
                h
            }
        },
        reconcile(Arc::new(obj), ctx),
    )
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(transport.policy().await.unwrap(), None, "nothing applied");
}

#[tokio::test]
async fn on_shutdown_ownership_is_released_only_if_the_object_is_gone() {
    let transport = MemoryTransport::new();
    let owned = settings(PolicyKind::Priority, 5.0, Some(OWNER));
    let object_path = format!("/apis/jobsched.io/v1alpha1/namespaces/{NS}/schedulerconfigs/{NAME}");
    // Whether `release_if_gone` released, the API server answering its GET with `answer`.
    let released_if = async |answer| {
        let (ctx, handle) = on_memory(&transport, T0);
        let path = object_path.clone();
        let verify = move |mut h| async move {
            let (method, got, _, _, send) = next_request(&mut h).await;
            assert_eq!((method, got), (Method::GET, path));
            send.send_response(answer);
            h
        };
        with_api(handle, verify, crate::release_if_gone(&ctx)).await
    };

    // The object still exists: ownership is kept.
    transport.set_policy(&owned).await.unwrap();
    let obj = object(NAME, spec(PolicyKind::Priority), 1);
    let found = json_response(200, &serde_json::to_value(&obj).unwrap());
    assert!(!released_if(found).await);
    assert_eq!(transport.policy().await.unwrap(), Some(owned.clone()));

    // Gone (an uninstall removed it while this controller was stopping): released, policy kept.
    assert!(released_if(not_found()).await);
    let after = transport.policy().await.unwrap().unwrap();
    assert_eq!(after.managed_by, None);
    assert_eq!(
        after.policy,
        PolicyKind::Priority,
        "the last policy is kept"
    );
}

/// The durable copy is written first: while the store cannot be reached, the transport keeps
/// the settings it had (a Redis rebuild could never resurrect older ones), and Ready turns
/// False with the store named.
#[tokio::test]
async fn a_store_down_leaves_the_transport_untouched() {
    let transport = jobsched_transport::MemoryTransport::new();
    let before = settings(PolicyKind::Fcfs, 5.0, None);
    transport.set_policy(&before).await.unwrap();
    let (mut ctx, handle) = on_memory(&transport, T1);
    // A database in a directory that does not exist: opening it fails at once.
    Arc::get_mut(&mut ctx).unwrap().store =
        Some(store_port("sqlite:///nonexistent-jobsched-dir/jobsched.db"));
    let obj = object(NAME, spec(PolicyKind::Priority), 2);
    let obj2 = obj.clone();
    let result = with_api(
        handle,
        move |mut h| async move {
            let names = ["JOBSCHED_DATABASE_URL"];
            expect_not_ready(&mut h, (NAME, &obj2), "StoreUnavailable", &names).await;
            h
        },
        reconcile(Arc::new(obj), ctx.clone()),
    )
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, ControllerError::Store { .. }), "{err:?}");
    assert_eq!(transport.policy().await.unwrap(), Some(before));
}
