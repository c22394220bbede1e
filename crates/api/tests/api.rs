//! Black-box tests of the REST API over HTTP. Every test runs twice: on Postgres + Redis
//! (`postgres_redis::*`, skipped with a message when unreachable unless `CI=true`) and on the
//! dev-mode SQLite + in-memory transport (`sqlite_memory::*`). No engine or worker runs: other
//! job states are made directly through the store ports.

#[macro_use]
mod common;

use common::{
    Backend, Harness, Options, assert_first_issue, config, locs, status_json, switch, tokens,
    validation_entries,
};
use jobsched_api::ApiConfig;
use jobsched_client::{ClientError, ListQuery, SubmitJob};
use jobsched_core::JobSpec;
use jobsched_core::ports::Event;
use jobsched_core::{Job, JobStatus, PolicyKind, PolicySettings};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

suite!(
    submit_get_list_stats,
    submit_announces_the_committed_job,
    submission_errors_are_fastapi_422,
    malformed_bodies_are_422,
    batch_submission,
    list_pagination_and_filters,
    get_and_cancel,
    policy_switch_and_status,
    policy_owned_by_scheduler_config_is_409,
    status_falls_back_to_durable_policy,
    dead_letter_list_retry_purge,
    health_and_probes,
    transport_down,
    store_down,
    auth_tokens,
    body_limit_is_413,
    docs_and_spec_are_served,
    unknown_routes_and_methods,
    backlog_gauge_is_estimated_seconds_per_live_slot,
    scheduled_jobs_are_validated_kept_and_counted,
    idempotency_keys_return_the_first_job,
    retry_backoff_is_validated_and_kept,
    schedules_crud_and_validation,
    queues_are_created_listed_and_validated,
    registered_job_types_are_listed_checked_and_reported_unserved,
    progress_and_logs_are_served_per_try,
    a_schedule_a_job_schedule_owns_refuses_rest_changes,
);

/// The string `key` of each object in the array `list`.
fn strings<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    let items = list.as_array();
    let items = items.unwrap_or_else(|| panic!("not an array: {list}"));
    items
        .iter()
        .map(|item| {
            item[key]
                .as_str()
                .unwrap_or_else(|| panic!("no string {key} in {item}"))
        })
        .collect()
}

fn sleep_job(name: &str) -> SubmitJob {
    SubmitJob::new(name, "sleep").payload(json!({"duration": 0.01}))
}

async fn submit_get_list_stats(h: Harness) {
    // Raw POST to both /jobs/ and /jobs: 201 and the full job record.
    for path in ["/jobs/", "/jobs"] {
        let (status, body) = h
            .post(
                path,
                &json!({"name": "Hello world", "job_type": "sleep", "payload": {"duration": 3}}),
            )
            .await;
        assert_eq!(status, 201, "{path}: {body}");
        assert_eq!(body["status"], "PENDING");
        assert_eq!(body["priority"], 5);
        assert_eq!(body["estimated_duration"], 1.0);
        assert_eq!(body["max_retries"], 3);
        assert_eq!(body["retry_count"], 0);
        assert_eq!(body["payload"], json!({"duration": 3}));
        assert!(body["result"].is_null());
        for field in [
            "id",
            "name",
            "job_type",
            "created_at",
            "scheduled_at",
            "started_at",
            "completed_at",
            "error_message",
            "attempt",
            "run_at",
            "slices",
        ] {
            assert!(body.get(field).is_some(), "missing {field}: {body}");
        }
        // The wire shape is exactly core::Job's.
        let job: Job = serde_json::from_value(body).unwrap();
        assert_eq!(job.name, "Hello world");
    }

    let submitted = h
        .client
        .submit(
            &sleep_job("typed")
                .priority(2)
                .estimated_duration(0.5)
                .max_retries(0),
        )
        .await
        .unwrap();
    assert_eq!(submitted.priority, 2);
    assert_eq!(submitted.estimated_duration, 0.5);
    assert_eq!(submitted.max_retries, 0);

    // GET with and without trailing slash.
    let got = h.client.get(submitted.id).await.unwrap();
    assert_eq!(got, submitted);
    let (status, body) = h.get(&format!("/jobs/{}/", submitted.id)).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], submitted.id.to_string());

    // List (newest first) with and without trailing slash.
    let page = h.client.list(&ListQuery::default()).await.unwrap();
    assert_eq!(page.total, 3);
    assert_eq!((page.page, page.page_size), (1, 20));
    assert_eq!(page.jobs[0].id, submitted.id);
    let (status, body) = h.get("/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 3);

    // Stats reflect states made through the store.
    let done = h.insert("done").await;
    h.complete(&done).await;
    let stats = h.client.stats().await.unwrap();
    assert_eq!(stats.total_jobs, 4);
    assert_eq!(stats.pending, 3);
    assert_eq!(stats.completed, 1);
    assert_eq!(
        (
            stats.scheduled,
            stats.running,
            stats.failed,
            stats.cancelled
        ),
        (0, 0, 0, 0)
    );
    assert!(stats.avg_execution_time_ms.is_some());
    let (status, body) = h.get("/jobs/stats/").await;
    assert_eq!(status, 200);
    for field in [
        "total_jobs",
        "pending",
        "scheduled",
        "running",
        "completed",
        "failed",
        "cancelled",
        "avg_execution_time_ms",
    ] {
        assert!(body.get(field).is_some(), "missing {field}: {body}");
    }
    h.finish().await;
}

async fn submit_announces_the_committed_job(h: Harness) {
    let mut events = h.transport.subscribe().await.unwrap();
    // `subscribe` returns once the subscription is live: one submission is heard.
    h.client.submit(&sleep_job("e0")).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("no event within 10 s of the submission");
    // The event carries a job just stored, with its queue data as the store has it.
    let Some(Event::Submitted(announced)) = event else {
        panic!("expected Submitted(job), got {event:?}");
    };
    let stored = h
        .store
        .get(announced.queued.id)
        .await
        .unwrap()
        .expect("the announced job is stored");
    assert_eq!(
        (
            stored.seq,
            stored.priority,
            stored.estimated_duration,
            stored.attempt,
            stored.run_at,
            stored.status
        ),
        (
            announced.queued.seq,
            announced.queued.priority,
            announced.queued.estimated_duration,
            announced.queued.attempt,
            announced.run_at,
            JobStatus::Pending
        )
    );
    h.finish().await;
}

async fn submission_errors_are_fastapi_422(h: Harness) {
    let post = |body: Value| {
        let req = h.http.post(h.url("/jobs/")).json(&body);
        async move { status_json(req.send().await.unwrap()).await }
    };

    // Every bad generic field is reported at once.
    let (status, body) = post(json!({
        "name": "", "job_type": "sleep", "priority": 0, "estimated_duration": -1,
        "max_retries": 11, "payload": {"duration": 1}
    }))
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        locs(&body),
        vec![
            json!(["body", "name"]),
            json!(["body", "priority"]),
            json!(["body", "estimated_duration"]),
            json!(["body", "max_retries"]),
        ]
    );
    for (_, msg, kind) in validation_entries(&body) {
        assert_eq!(kind, "value_error");
        assert!(msg.contains("must be"), "{msg}");
    }

    // The job type's payload checks, with the payload path in `loc`.
    let (status, body) = post(json!({
        "name": "x", "job_type": "sleep", "payload": {"duration": -1, "fail_probability": 2}
    }))
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        locs(&body),
        vec![
            json!(["body", "payload", "duration"]),
            json!(["body", "payload", "fail_probability"])
        ]
    );
    let (status, body) = post(json!({
        "name": "x", "job_type": "word_count", "payload": {"file_path": "../../etc/passwd"}
    }))
    .await;
    assert_eq!(status, 422);
    assert_eq!(locs(&body), vec![json!(["body", "payload", "file_path"])]);

    // Unknown job type lists the valid ones.
    let (status, body) = post(json!({"name": "x", "job_type": "email"})).await;
    assert_eq!(status, 422);
    assert_first_issue(
        &body,
        json!(["body", "job_type"]),
        "sleep, thumbnail, word_count",
    );

    // Missing and wrongly typed fields.
    let (status, body) = post(json!({"priority": "high", "payload": [1]})).await;
    assert_eq!(status, 422);
    let entries = validation_entries(&body);
    let summary: Vec<(Value, String)> = entries
        .iter()
        .map(|(l, _, k)| (l.clone(), k.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!(["body", "name"]), "missing".to_string()),
            (json!(["body", "job_type"]), "missing".to_string()),
            (json!(["body", "priority"]), "type_error".to_string()),
            (json!(["body", "payload"]), "type_error".to_string()),
        ]
    );

    // A valid word_count job inside the data dir is accepted; integers given as 3.0 too.
    let (status, body) = post(json!({
        "name": "count", "job_type": "word_count", "payload": {"file_path": "sample.txt"},
        "priority": 3.0
    }))
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["priority"], 3);

    // The typed client surfaces the problems.
    let err = h
        .client
        .submit(&SubmitJob::new("x", "sleep").payload(json!({"duration": "long"})))
        .await
        .unwrap_err();
    match &err {
        ClientError::Api { status, errors, .. } => {
            assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(errors[0].field(), "payload.duration");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.client.stats().await.unwrap().total_jobs, 1);
    h.finish().await;
}

async fn malformed_bodies_are_422(h: Harness) {
    for path in ["/jobs/", "/jobs/batch", "/scheduler/policy"] {
        let method = if path == "/scheduler/policy" {
            Method::PUT
        } else {
            Method::POST
        };
        // Malformed JSON.
        let (status, body) = h
            .send_raw(
                method.clone(),
                path,
                Some("application/json"),
                "{\"name\": ",
            )
            .await;
        assert_eq!(status, 422, "{path}: {body}");
        let entries = validation_entries(&body);
        assert_eq!(entries[0].0, json!(["body"]));
        assert_eq!(entries[0].2, "json_invalid");

        // Wrong content type.
        let (status, body) = h
            .send_raw(method.clone(), path, Some("text/plain"), "{}")
            .await;
        assert_eq!(status, 422, "{path}: {body}");
        let entries = validation_entries(&body);
        assert!(
            entries[0].1.contains("Content-Type: application/json"),
            "{body}"
        );

        // No content type at all.
        let (status, body) = h.send_raw(method.clone(), path, None, "{}").await;
        assert_eq!(status, 422, "{path}: {body}");

        // JSON that is not an object.
        let (status, body) = h.send(method, path, Some(&json!([1, 2]))).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(validation_entries(&body)[0].2, "type_error");
    }
    assert_eq!(h.client.stats().await.unwrap().total_jobs, 0);
    h.finish().await;
}

async fn batch_submission(h: Harness) {
    let jobs: Vec<SubmitJob> = (0..5).map(|i| sleep_job(&format!("b{i}"))).collect();
    let ids = h.client.submit_batch(&jobs).await.unwrap();
    assert_eq!(ids.len(), 5);
    for (i, id) in ids.iter().enumerate() {
        let job = h.client.get(*id).await.unwrap();
        assert_eq!(job.name, format!("b{i}"));
        assert_eq!(job.status, JobStatus::Pending);
    }

    // Trailing slash, raw 201.
    let (status, body) = h
        .post(
            "/jobs/batch/",
            &json!({"jobs": [{"name": "s", "job_type": "sleep", "payload": {"duration": 1}}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["ids"].as_array().unwrap().len(), 1);
    assert_eq!(h.client.stats().await.unwrap().total_jobs, 6);

    // One invalid job rejects the whole batch, naming jobs[i].field.
    let resp = h
        .http
        .post(h.url("/jobs/batch"))
        .json(&json!({"jobs": [
            {"name": "ok", "job_type": "sleep", "payload": {"duration": 1}},
            {"job_type": "sleep", "payload": {"duration": 1}},
            {"name": "neg", "job_type": "sleep", "payload": {"duration": -5}},
        ]}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 422);
    assert_eq!(
        locs(&body),
        vec![
            json!(["body", "jobs", 1, "name"]),
            json!(["body", "jobs", 2, "payload", "duration"])
        ]
    );
    assert_eq!(
        h.client.stats().await.unwrap().total_jobs,
        6,
        "nothing inserted"
    );

    // Empty, too large, missing.
    let err = h.client.submit_batch(&[]).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    let too_many: Vec<SubmitJob> = (0..1001).map(|i| sleep_job(&format!("t{i}"))).collect();
    let err = h.client.submit_batch(&too_many).await.unwrap_err();
    match err {
        ClientError::Api { status, errors, .. } => {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(errors[0].loc, vec![json!("body"), json!("jobs")]);
            assert!(errors[0].msg.contains("1 to 1000"), "{}", errors[0].msg);
        }
        other => panic!("unexpected {other:?}"),
    }
    let (status, body) = h.post("/jobs/batch", &json!({})).await;
    assert_eq!(status, 422);
    assert_eq!(
        validation_entries(&body)[0],
        (
            json!(["body", "jobs"]),
            "field required".into(),
            "missing".into()
        )
    );

    // Exactly 1000 is fine.
    let thousand: Vec<SubmitJob> = (0..1000).map(|i| sleep_job(&format!("k{i}"))).collect();
    assert_eq!(h.client.submit_batch(&thousand).await.unwrap().len(), 1000);
    assert_eq!(h.client.stats().await.unwrap().total_jobs, 1006);
    h.finish().await;
}

async fn list_pagination_and_filters(h: Harness) {
    let jobs: Vec<SubmitJob> = (0..25).map(|i| sleep_job(&format!("p{i:02}"))).collect();
    let ids = h.client.submit_batch(&jobs).await.unwrap();
    let word = h
        .client
        .submit(&SubmitJob::new("w", "word_count").payload(json!({"file_path": "sample.txt"})))
        .await
        .unwrap();
    let first = h.client.get(ids[0]).await.unwrap();
    h.fail(&first, "boom").await;

    // Pages of 10 over 26 jobs, newest first.
    let q = |page: u32| ListQuery {
        page: Some(page),
        page_size: Some(10),
        ..Default::default()
    };
    let p1 = h.client.list(&q(1)).await.unwrap();
    assert_eq!(
        (p1.total, p1.page, p1.page_size, p1.jobs.len()),
        (26, 1, 10, 10)
    );
    assert_eq!(p1.jobs[0].id, word.id);
    let p3 = h.client.list(&q(3)).await.unwrap();
    assert_eq!(p3.jobs.len(), 6);
    assert_eq!(p3.jobs.last().unwrap().id, ids[0]);
    let mut seen: Vec<_> = Vec::new();
    for page in 1..=3 {
        seen.extend(
            h.client
                .list(&q(page))
                .await
                .unwrap()
                .jobs
                .into_iter()
                .map(|j| j.id),
        );
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 26, "pages overlap or miss jobs");
    // Beyond the end: empty page, total still right.
    let p9 = h.client.list(&q(9)).await.unwrap();
    assert!(p9.jobs.is_empty());
    assert_eq!((p9.total, p9.page), (26, 9));
    // Max page size.
    let big = h.list_where(|q| q.page_size = Some(100)).await.unwrap();
    assert_eq!(big.jobs.len(), 26);

    // Filters.
    let failed = h
        .list_where(|q| q.status = Some(JobStatus::Failed))
        .await
        .unwrap();
    assert_eq!(failed.total, 1);
    assert_eq!(failed.jobs[0].id, ids[0]);
    let (status, body) = h.get("/jobs/?status=pending&job_type=sleep").await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 24);
    let words = h
        .list_where(|q| q.job_type = Some("word_count".into()))
        .await
        .unwrap();
    assert_eq!(words.total, 1);

    // Bad query values → 422 naming the parameter.
    for (query, param) in [
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page_size=ten", "page_size"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("status=DONE", "status"),
    ] {
        for path in ["/jobs/", "/jobs"] {
            let (status, body) = h.get(&format!("{path}?{query}")).await;
            assert_eq!(status, 422, "{query}: {body}");
            assert_eq!(locs(&body), vec![json!(["query", param])], "{query}");
        }
    }
    let (status, body) = h.get("/jobs/?page=0&page_size=500").await;
    assert_eq!(status, 422);
    assert_eq!(locs(&body).len(), 2, "both bad parameters reported: {body}");
    let err = h.list_where(|q| q.page_size = Some(0)).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    h.finish().await;
}

async fn get_and_cancel(h: Harness) {
    let unknown = uuid::Uuid::now_v7();
    // GET unknown / malformed.
    let (status, body) = h.get(&format!("/jobs/{unknown}")).await;
    assert_eq!((status, body), (404, json!({"detail": "Job not found"})));
    for path in ["/jobs/not-a-uuid", "/jobs/not-a-uuid/", "/jobs/123"] {
        for method in [Method::GET, Method::DELETE] {
            let (status, body) = status_json(
                h.http
                    .request(method.clone(), h.url(path))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 422, "{method} {path}: {body}");
            assert_eq!(locs(&body), vec![json!(["path", "id"])]);
        }
    }

    // Cancel PENDING → 204, then 204 again (idempotent).
    let pending = h.client.submit(&sleep_job("c1")).await.unwrap();
    let cancelled = h
        .call(Method::DELETE, &format!("/jobs/{}", pending.id))
        .await;
    assert_eq!(cancelled, (204, Value::Null), "no body");
    assert_eq!(
        h.client.get(pending.id).await.unwrap().status,
        JobStatus::Cancelled
    );
    let (status, body) = h
        .call(Method::DELETE, &format!("/jobs/{}/", pending.id))
        .await;
    assert_eq!(status, 204, "{body}");

    // Cancel SCHEDULED (trailing slash) → 204; the stale token can no longer start.
    let scheduled = h.insert("c2").await;
    let token = h.schedule(&scheduled).await;
    let (status, _) = h
        .call(Method::DELETE, &format!("/jobs/{}/", scheduled.id))
        .await;
    assert_eq!(status, 204);
    let now = chrono::Utc::now();
    let started = h
        .store
        .record_starts(&[(token, now)], "w", now + chrono::Duration::seconds(30))
        .await
        .unwrap();
    assert!(started.is_empty(), "a cancelled job must not start");

    // RUNNING → 202: CANCELLED at once, and the workers are told to stop it; again → 204.
    let running = h.insert("c3").await;
    h.run(&running).await;
    let mut events = h.transport.subscribe().await.unwrap();
    let url = h.url(&format!("/jobs/{}", running.id));
    assert_eq!(h.http.delete(&url).send().await.unwrap().status(), 202);
    assert_eq!(
        h.client.get(running.id).await.unwrap().status,
        JobStatus::Cancelled
    );
    let told = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Some(Event::Cancelled(id)) => return id,
                Some(_) => continue,
                None => panic!("event stream ended"),
            }
        }
    })
    .await
    .expect("the workers are told");
    assert_eq!(told, running.id);
    assert_eq!(h.http.delete(&url).send().await.unwrap().status(), 204);
    // COMPLETED → 409 naming the state.
    let done = h.insert("c4").await;
    h.complete(&done).await;
    let err = h.client.cancel(done.id).await.unwrap_err();
    match &err {
        ClientError::Api { status, detail, .. } => {
            assert_eq!(*status, StatusCode::CONFLICT);
            assert!(detail.contains("COMPLETED"), "{detail}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Unknown → 404.
    assert_eq!(
        h.client.cancel(unknown).await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );
    let stats = h.client.stats().await.unwrap();
    assert_eq!((stats.cancelled, stats.running, stats.completed), (3, 0, 1));
    h.finish().await;
}

async fn policy_switch_and_status(h: Harness) {
    // Defaults when nothing is stored anywhere.
    let status = h.client.status().await.unwrap();
    assert_eq!(status.current_policy, PolicyKind::Fcfs);
    assert_eq!(status.quantum_seconds, 5.0);
    assert!(!status.paused);
    assert_eq!(status.managed_by, None);
    assert_eq!((status.queue_depth, status.dead_letter_count), (0, 0));
    assert_eq!(
        (status.workers, status.total_slots, status.free_slots),
        (0, 0, 0)
    );

    // Switch; the response is the new status; both copies are written.
    let after = h.switch(PolicyKind::Priority).await.unwrap();
    assert_eq!(after.current_policy, PolicyKind::Priority);
    assert_eq!(after.quantum_seconds, 5.0);
    let durable = h.store.policy().await.unwrap().unwrap();
    assert_eq!(durable.policy, PolicyKind::Priority);
    assert_eq!(h.transport.policy().await.unwrap().unwrap(), durable);

    // Raw request in the original's shape, both slash variants; quantum and pause kept unless
    // given.
    for (path, policy) in [
        ("/scheduler/policy", "round_robin"),
        ("/scheduler/policy/", "SJF"),
    ] {
        let (status, body) = h
            .put(path, &json!({"policy": policy, "paused": true}))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["paused"], true);
    }
    let (_, body) = h
        .put(
            "/scheduler/policy",
            &json!({"policy": "round_robin", "quantum_seconds": 0.25}),
        )
        .await;
    assert_eq!(body["current_policy"], "round_robin");
    assert_eq!(body["quantum_seconds"], 0.25);
    assert_eq!(body["paused"], true, "paused kept when omitted");
    let settings = h.transport.policy().await.unwrap().unwrap();
    assert_eq!(
        settings,
        PolicySettings {
            policy: PolicyKind::RoundRobin,
            quantum_seconds: 0.25,
            paused: true,
            ..Default::default()
        }
    );

    // Unknown policy → 422 listing the valid ones; bad quantum → 422 on quantum_seconds.
    let (status, body) = h.put("/scheduler/policy", &json!({"policy": "lifo"})).await;
    assert_eq!(status, 422);
    assert_first_issue(
        &body,
        json!(["body", "policy"]),
        "fcfs, sjf, priority, round_robin",
    );
    for bad in [
        json!({"policy": "fcfs", "quantum_seconds": 0}),
        json!({"policy": "fcfs", "quantum_seconds": "x"}),
    ] {
        let (status, body) = h.put("/scheduler/policy", &bad).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(locs(&body), vec![json!(["body", "quantum_seconds"])]);
    }
    let (status, body) = h.put("/scheduler/policy", &json!({})).await;
    assert_eq!(status, 422);
    assert_eq!(validation_entries(&body)[0].2, "missing");
    // Nothing changed by the rejected requests.
    assert_eq!(h.transport.policy().await.unwrap().unwrap(), settings);

    // Queue depth, dead letters and worker slots.
    let a = h.insert("a").await;
    let b = h.insert("b").await;
    let c = h.insert("c").await;
    let d = h.insert("d").await;
    h.schedule(&b).await;
    h.run(&c).await;
    h.fail(&d, "boom").await;
    let _ = a;
    h.transport
        .report_slots("w1", 3, 4, Duration::from_secs(60))
        .await
        .unwrap();
    h.transport
        .report_slots("w2", 0, 2, Duration::from_secs(60))
        .await
        .unwrap();
    for path in ["/scheduler/status", "/scheduler/status/"] {
        let (code, body) = h.get(path).await;
        assert_eq!(code, 200);
        assert_eq!(body["queue_depth"], 2, "pending + scheduled: {body}");
        assert_eq!(body["dead_letter_count"], 1);
        assert_eq!(body["workers"], 2);
        assert_eq!(body["total_slots"], 6);
        assert_eq!(body["free_slots"], 3);
        assert_eq!(body["current_policy"], "round_robin");
        assert!(body.get("managed_by").is_some());
    }
    h.finish().await;
}

async fn policy_owned_by_scheduler_config_is_409(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    let owned = PolicySettings {
        policy: PolicyKind::Sjf,
        quantum_seconds: 2.0,
        managed_by: Some("prod/main".into()),
        ..Default::default()
    };
    h.transport.set_policy(&owned).await.unwrap();
    let (status, body) = h
        .put("/scheduler/policy/", &json!({"policy": "fcfs"}))
        .await;
    assert_eq!(status, 409);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("managed by SchedulerConfig prod/main"),
        "{detail}"
    );
    assert!(
        detail.contains("kubectl edit schedulerconfig main -n prod"),
        "{detail}"
    );
    assert_eq!(
        h.transport.policy().await.unwrap().unwrap(),
        owned,
        "unchanged"
    );
    assert_eq!(
        h.store.policy().await.unwrap(),
        None,
        "durable copy untouched"
    );
    let status = h.client.status().await.unwrap();
    assert_eq!(status.managed_by.as_deref(), Some("prod/main"));
    assert_eq!(status.current_policy, PolicyKind::Sjf);

    // Ownership recorded only in the durable copy (Redis key missing) counts too.
    let durable = PolicySettings {
        managed_by: Some("ops/sched".into()),
        ..PolicySettings::default()
    };
    let Some(h2) = Harness::start(backend).await else {
        return;
    };
    h2.store.set_policy(&durable).await.unwrap();
    let err = h2.switch(PolicyKind::Priority).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));
    assert!(
        err.to_string().contains("SchedulerConfig ops/sched"),
        "{err}"
    );

    // Once the controller lets go, the API can change it again.
    h.transport
        .set_policy(&PolicySettings {
            managed_by: None,
            ..owned
        })
        .await
        .unwrap();
    let after = h.switch(PolicyKind::Fcfs).await.unwrap();
    assert_eq!(after.current_policy, PolicyKind::Fcfs);
    assert_eq!(after.quantum_seconds, 2.0);

    // The controller is gone for good (uninstalled before it saw its object deleted): an admin
    // takes the policy back; the policy itself is kept.
    assert!(
        err.to_string().contains("DELETE /scheduler/policy/owner"),
        "the 409 names the override: {err}"
    );
    for path in ["/scheduler/policy/owner", "/scheduler/policy/owner/"] {
        let released = h2.http.delete(h2.url(path)).send().await.unwrap();
        let (status, body) = status_json(released).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body["managed_by"].is_null(), "{body}");
    }
    assert_eq!(
        h2.store.policy().await.unwrap().unwrap().managed_by,
        None,
        "durable too"
    );
    assert_eq!(
        h2.transport.policy().await.unwrap().unwrap().managed_by,
        None
    );
    let after = h2.switch(PolicyKind::Priority).await.unwrap();
    assert_eq!(after.current_policy, PolicyKind::Priority);
    h2.finish().await;
    h.finish().await;
}

async fn status_falls_back_to_durable_policy(h: Harness) {
    let durable = PolicySettings {
        policy: PolicyKind::Sjf,
        quantum_seconds: 7.5,
        paused: true,
        managed_by: None,
        ..Default::default()
    };
    h.store.set_policy(&durable).await.unwrap();
    assert_eq!(h.transport.policy().await.unwrap(), None);
    let status = h.client.status().await.unwrap();
    assert_eq!(status.current_policy, PolicyKind::Sjf);
    assert_eq!(status.quantum_seconds, 7.5);
    assert!(status.paused);
    // A change starts from the durable copy (quantum and pause kept).
    let after = h.switch(PolicyKind::Priority).await.unwrap();
    assert_eq!((after.quantum_seconds, after.paused), (7.5, true));
    h.finish().await;
}

async fn dead_letter_list_retry_purge(h: Harness) {
    assert!(h.client.dead_letters().await.unwrap().is_empty());
    let j1 = h.insert("dl1").await;
    let j2 = h.insert("dl2").await;
    let j3 = h.insert("dl3").await;
    h.fail(&j1, "first failure").await;
    h.fail(&j2, "second failure").await;
    h.fail(&j3, "third failure").await;

    let list = h.client.dead_letters().await.unwrap();
    assert_eq!(list.len(), 3);
    let entry = list.iter().find(|d| d.job_id == j1.id).unwrap();
    assert_eq!(entry.error.as_deref(), Some("first failure"));
    assert_eq!(entry.name, "dl1");
    assert_eq!(entry.job_type, "sleep");
    assert_eq!(entry.retry_count, 3);
    assert!(entry.failed_at.is_some());
    let (status, body) = h.get("/scheduler/dead-letter/?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 2);
    for field in [
        "job_id",
        "job_type",
        "name",
        "error",
        "retry_count",
        "failed_at",
    ] {
        assert!(body[0].get(field).is_some(), "missing {field}: {body}");
    }
    let (status, body) = h.get("/scheduler/dead-letter?limit=0").await;
    assert_eq!(status, 422);
    assert_eq!(locs(&body), vec![json!(["query", "limit"])]);

    // Retry: back to PENDING with fresh retries, out of the queue.
    let retried = h.client.retry_dead_letter(j1.id).await.unwrap();
    assert_eq!(retried.status, JobStatus::Pending);
    assert_eq!(retried.retry_count, 0);
    let queued = h.client.dead_letters().await.unwrap();
    assert!(queued.iter().all(|d| d.job_id != j1.id));
    assert_eq!(queued.len(), 2);
    // Again → 404 naming the state; unknown → 404; malformed → 422. Trailing slash works.
    let retry = |id| format!("/scheduler/dead-letter/{id}/retry/");
    let (status, body) = h.call(Method::POST, &retry(j1.id)).await;
    assert_eq!(status, 404);
    assert!(
        body["detail"].as_str().unwrap().contains("PENDING"),
        "{body}"
    );
    let err = h
        .client
        .retry_dead_letter(uuid::Uuid::now_v7())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    let (status, body) = h
        .call(Method::POST, "/scheduler/dead-letter/xyz/retry")
        .await;
    assert_eq!(status, 422);
    assert_eq!(locs(&body), vec![json!(["path", "id"])]);
    let (status, _) = h.call(Method::POST, &retry(j2.id)).await;
    assert_eq!(status, 200);
    assert_eq!(h.client.status().await.unwrap().dead_letter_count, 1);

    // Purge: 200 {purged: n}, jobs stay FAILED.
    let (status, body) = h.call(Method::DELETE, "/scheduler/dead-letter/").await;
    assert_eq!((status, body), (200, json!({"purged": 1})));
    assert!(h.client.dead_letters().await.unwrap().is_empty());
    assert_eq!(h.client.get(j3.id).await.unwrap().status, JobStatus::Failed);
    assert_eq!(h.client.purge_dead_letters().await.unwrap(), 0);
    // A purged job is no longer a dead letter.
    assert_eq!(
        h.client
            .retry_dead_letter(j3.id)
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::NOT_FOUND)
    );
    h.finish().await;
}

async fn health_and_probes(h: Harness) {
    for path in ["/health", "/health/"] {
        let (status, body) = h.get(path).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"status": "healthy", "postgres": "ok", "redis": "ok"})
        );
    }
    assert!(h.client.health().await.unwrap().is_healthy());
    for path in ["/livez", "/livez/", "/readyz", "/readyz/"] {
        let (status, body) = h.get(path).await;
        assert_eq!((status, body), (200, json!({"status": "ok"})), "{path}");
    }
    h.finish().await;
}

async fn transport_down(backend: Backend) {
    let Some(h) = Harness::start_with(
        backend,
        Options {
            transport_down: true,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let (status, body) = h.get("/health").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["postgres"], "ok");
    assert!(
        body["redis"].as_str().unwrap().starts_with("error: "),
        "{body}"
    );
    let health = h.client.health().await.unwrap();
    assert!(!health.is_healthy());
    // Readiness needs only the store.
    assert_eq!(h.get("/readyz").await.0, 200);
    // Submissions still succeed: the job is durable and the engine polls.
    let job = h.client.submit(&sleep_job("no-redis")).await.unwrap();
    assert_eq!(
        h.client.get(job.id).await.unwrap().status,
        JobStatus::Pending
    );
    assert_eq!(
        h.client
            .submit_batch(&[sleep_job("x")])
            .await
            .unwrap()
            .len(),
        1
    );
    // Reads that need the transport → 503 without internals.
    let (status, body) = h.get("/scheduler/status").await;
    assert_eq!(status, 503);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("redis"), "{detail}");
    assert!(!detail.contains("6390"), "internal detail leaked: {detail}");
    let err = h.switch(PolicyKind::Sjf).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    h.finish().await;
}

async fn store_down(mut h: Harness) {
    // Close the store's pools and drop the database under the running server.
    let db = std::mem::replace(
        &mut h.db,
        jobsched_store::testing::TestDb::sqlite_unmigrated(),
    );
    db.cleanup().await;
    let (status, body) = h.get("/health/").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unhealthy");
    assert!(
        body["postgres"].as_str().unwrap().starts_with("error: "),
        "{body}"
    );
    assert_eq!(body["redis"], "ok");
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body["status"].as_str().unwrap().starts_with("error: "));
    assert_eq!(h.get("/livez").await.0, 200);
    for path in ["/jobs/stats", "/jobs/"] {
        let (status, body) = h.get(path).await;
        assert_eq!(status, 503, "{path}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("retry later"), "{detail}");
        assert!(
            !detail.to_lowercase().contains("pool"),
            "internal detail leaked: {detail}"
        );
    }
    let err = h.client.submit(&sleep_job("x")).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    h.finish().await;
}

async fn auth_tokens(backend: Backend) {
    let Some(h) = Harness::start_with(backend, tokens("user-token", "admin-token")).await else {
        return;
    };
    let get = |path: &str, token: Option<&str>| {
        let mut rb = h.http.get(h.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        async move { rb.send().await.unwrap() }
    };
    // Open routes.
    for path in [
        "/health",
        "/livez",
        "/readyz",
        "/docs",
        "/docs/",
        "/api-docs/openapi.json",
    ] {
        assert_eq!(get(path, None).await.status(), 200, "{path}");
    }
    // Protected routes: 401 with WWW-Authenticate, with and without a wrong token.
    for path in [
        "/jobs/",
        "/jobs",
        "/jobs/stats",
        "/scheduler/status",
        "/scheduler/dead-letter",
    ] {
        for token in [None, Some("wrong"), Some("user-token-but-longer")] {
            let resp = get(path, token).await;
            assert_eq!(resp.status(), 401, "{path} {token:?}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let (_, body) = status_json(resp).await;
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("Authorization: Bearer"),
                "{body}"
            );
        }
        assert_eq!(get(path, Some("user-token")).await.status(), 200, "{path}");
        assert_eq!(get(path, Some("admin-token")).await.status(), 200, "{path}");
    }
    let job = json!({"name": "x", "job_type": "sleep", "payload": {"duration": 1}});
    let (status, body) = h.post("/jobs/", &job).await;
    assert_eq!(status, 401, "{body}");
    let resp = h
        .http
        .post(h.url("/jobs/"))
        .header("authorization", "Basic dXNlcjp1c2VyLXRva2Vu")
        .json(&json!({"name": "x", "job_type": "sleep", "payload": {"duration": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The typed client with the user token: normal operations work, admin ones are 403.
    let user = h.client.clone().with_token("user-token");
    let job = user.submit(&sleep_job("authed")).await.unwrap();
    assert_eq!(user.get(job.id).await.unwrap().id, job.id);
    let err = switch(&user, PolicyKind::Sjf).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert!(err.to_string().contains("admin token"), "{err}");
    assert_eq!(
        user.purge_dead_letters().await.unwrap_err().status(),
        Some(StatusCode::FORBIDDEN)
    );
    let failed = h.insert("f").await;
    h.fail(&failed, "x").await;
    assert_eq!(
        user.retry_dead_letter(failed.id)
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::FORBIDDEN)
    );
    // Without any token the admin routes are 401.
    assert_eq!(
        h.client.purge_dead_letters().await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    // The admin token can do everything.
    let admin = h.client.clone().with_token("admin-token");
    assert_eq!(
        switch(&admin, PolicyKind::Sjf)
            .await
            .unwrap()
            .current_policy,
        PolicyKind::Sjf
    );
    assert_eq!(
        admin.retry_dead_letter(failed.id).await.unwrap().status,
        JobStatus::Pending
    );
    assert_eq!(admin.purge_dead_letters().await.unwrap(), 0);
    h.finish().await;

    // Only an API token: admin operations are refused, naming the missing setting.
    let Some(h) = Harness::start_with(backend, config(|c| c.api_token = Some("only".into()))).await
    else {
        return;
    };
    let user = h.client.clone().with_token("only");
    let err = switch(&user, PolicyKind::Priority).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert!(err.to_string().contains("JOBSCHED_ADMIN_TOKEN"), "{err}");
    assert!(user.status().await.is_ok());
    assert_eq!(
        h.client.status().await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    h.finish().await;
}

async fn body_limit_is_413(backend: Backend) {
    let Some(h) = Harness::start_with(backend, config(|c| c.body_limit = 4096)).await else {
        return;
    };
    let big = "x".repeat(8192);
    for path in ["/jobs/", "/jobs/batch"] {
        let (status, body) = h.post(path, &json!({"name": "big", "job_type": "sleep", "payload": {"duration": 1, "pad": big}})).await;
        assert_eq!(status, 413, "{path}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("4096-byte limit"), "{detail}");
    }
    // Under the limit is fine.
    assert!(h.client.submit(&sleep_job("small")).await.is_ok());
    h.finish().await;
}

async fn docs_and_spec_are_served(h: Harness) {
    for path in ["/docs", "/docs/"] {
        let resp = h.http.get(h.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/html"), "{ct}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("swagger-ui"), "{html}");
        assert!(
            !html.contains("unpkg.com") && !html.contains("cdn."),
            "Swagger UI must be vendored"
        );
    }
    let (status, spec) = h.get("/api-docs/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(spec, serde_json::to_value(jobsched_api::openapi()).unwrap());
    assert!(spec["paths"]["/jobs/"]["post"].is_object());
    // The UI is configured to load our spec.
    let resp = h
        .http
        .get(h.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let js = resp.text().await.unwrap();
    assert!(js.contains("/api-docs/openapi.json"), "{js}");
    h.finish().await;
}

async fn unknown_routes_and_methods(h: Harness) {
    let (status, body) = h.get("/nope").await;
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
    let (status, body) = h.call(Method::PATCH, "/jobs/").await;
    assert_eq!(
        (status, body),
        (405, json!({"detail": "Method Not Allowed"}))
    );
    let (status, _) = h.get("/scheduler/policy").await;
    assert_eq!(status, 405);
    h.finish().await;
}

async fn backlog_gauge_is_estimated_seconds_per_live_slot(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    let state = jobsched_api::AppState {
        store: h.store.clone(),
        transport: h.transport.clone(),
        registry: jobsched_jobs::Registry::builtin(),
        catalog: Default::default(),
        data_dir: jobsched_jobs::DataDir::new(h.data_dir.path()).unwrap(),
        clock: std::sync::Arc::new(jobsched_core::ports::SystemClock),
        config: ApiConfig::default(),
    };
    assert_eq!(jobsched_api::backlog::refresh(&state).await.unwrap(), 0.0);
    for (name, est) in [("b1", 2.0), ("b2", 4.5), ("b3", 0.5)] {
        let job = jobsched_core::NewJob::new(JobSpec {
            name: name.into(),
            job_type: "sleep".into(),
            priority: Some(5),
            estimated_duration: Some(est),
            payload: Some(json!({"duration": 0.01})),
            max_retries: Some(3),
        })
        .unwrap();
        h.store.insert(&job, chrono::Utc::now()).await.unwrap();
    }
    // No live worker: the whole backlog (what wakes a pool scaled to zero).
    assert_eq!(jobsched_api::backlog::refresh(&state).await.unwrap(), 7.0);
    h.transport
        .report_slots("w1", 2, 4, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(jobsched_api::backlog::refresh(&state).await.unwrap(), 1.75);
    // The series the scrape (and a KEDA query) sees.
    let page = jobsched_metrics::render();
    for series in [
        "jobsched_backlog_seconds{queue=\"default\"}",
        "jobsched_backlog_jobs{queue=\"default\"}",
    ] {
        assert!(page.contains(series), "{series} missing from /metrics");
    }
    // Jobs of a type no live worker serves are counted as unserved until one does.
    let lonely = format!("lonely-{backend:?}").to_lowercase();
    let job = jobsched_core::NewJob::new(JobSpec {
        name: "l".into(),
        job_type: lonely.to_string(),
        ..JobSpec::default()
    })
    .unwrap();
    h.store.insert(&job, chrono::Utc::now()).await.unwrap();
    jobsched_api::backlog::refresh(&state).await.unwrap();
    let series = format!("jobsched_unserved_jobs{{job_type=\"{lonely}\"}}");
    let value = |page: &str| -> Option<String> {
        page.lines()
            .find(|l| l.starts_with(&series))
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
    };
    assert_eq!(value(&jobsched_metrics::render()).as_deref(), Some("1"));
    h.transport
        .report_types("w1", std::slice::from_ref(&lonely))
        .await
        .unwrap();
    jobsched_api::backlog::refresh(&state).await.unwrap();
    assert_eq!(value(&jobsched_metrics::render()).as_deref(), Some("0"));
    h.finish().await;
}

/// `run_at` / `delay_seconds` on `POST /jobs/` and in batches: bad values are 422 naming the
/// field and the limit; accepted ones are stored as the job's `run_at` and counted as
/// `delayed` until their time; a time in the past runs now.
async fn scheduled_jobs_are_validated_kept_and_counted(h: Harness) {
    let body = |extra: Value| {
        let mut b = json!({"name": "s", "job_type": "sleep", "payload": {"duration": 1}});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let year_and_a_day = (chrono::Utc::now() + chrono::Duration::days(366)).to_rfc3339();
    for (extra, field, says) in [
        (json!({"run_at": "tomorrow"}), "run_at", "RFC 3339"),
        (json!({"run_at": 5}), "run_at", "RFC 3339"),
        (json!({"run_at": year_and_a_day}), "run_at", "365 days"),
        (json!({"delay_seconds": -1}), "delay_seconds", "31536000"),
        (
            json!({"delay_seconds": 31_536_001}),
            "delay_seconds",
            "31536000",
        ),
        (json!({"delay_seconds": "5"}), "delay_seconds", "number"),
        (
            json!({"delay_seconds": 5, "run_at": "2030-01-01T00:00:00Z"}),
            "delay_seconds",
            "not both",
        ),
    ] {
        let (status, body) = h.post("/jobs/", &body(extra.clone())).await;
        assert_eq!(status, 422, "{extra}: {body}");
        assert_eq!(locs(&body), vec![json!(["body", field])], "{extra}: {body}");
        assert!(body.to_string().contains(says), "{extra}: {body}");
    }
    // In a batch, per item, and nothing of the batch is stored.
    let (status, body422) = h
        .post(
            "/jobs/batch",
            &json!({"jobs": [body(json!({})), body(json!({"delay_seconds": -2}))]}),
        )
        .await;
    assert_eq!(status, 422, "{body422}");
    assert_eq!(
        locs(&body422),
        vec![json!(["body", "jobs", 1, "delay_seconds"])]
    );
    assert_eq!(h.client.stats().await.unwrap().total_jobs, 0);

    let before = chrono::Utc::now();
    // 100 days ahead, written with an offset other than UTC.
    let ahead = (before + chrono::Duration::days(100))
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let at = chrono::DateTime::parse_from_rfc3339(&ahead)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let fixed = h
        .client
        .submit(&sleep_job("fixed").run_at(at))
        .await
        .unwrap();
    assert_eq!((fixed.status, fixed.run_at), (JobStatus::Pending, at));
    let delayed = h
        .client
        .submit(&sleep_job("delayed").delay_seconds(3600.0))
        .await
        .unwrap();
    let ahead = (delayed.run_at - before).num_seconds();
    assert!((3599..=3700).contains(&ahead), "run_at {ahead} s ahead");
    let past = h
        .client
        .submit(&sleep_job("past").run_at(before - chrono::Duration::hours(1)))
        .await
        .unwrap();
    assert!(
        past.run_at >= before,
        "a past run_at means now: {}",
        past.run_at
    );
    let ids = h
        .client
        .submit_batch(&[sleep_job("b1").delay_seconds(60.0), sleep_job("b2")])
        .await
        .unwrap();
    assert!(h.client.get(ids[0]).await.unwrap().run_at > before + chrono::Duration::seconds(59));
    let stats = h.client.stats().await.unwrap();
    assert_eq!((stats.pending, stats.delayed), (5, 3));
    let raw: Value = h.get_ok("/jobs/stats").await;
    assert_eq!(raw["delayed"], 3, "{raw}");
    // Listed as PENDING with their run_at.
    let listed = h
        .list_where(|q| q.status = Some(JobStatus::Pending))
        .await
        .unwrap();
    assert_eq!(listed.total, 5);
    let got = listed.jobs.iter().find(|j| j.id == fixed.id).unwrap();
    assert_eq!(got.run_at, at);
    h.finish().await;
}

/// `Idempotency-Key` / `unique_key`: the first submission is 201, the same request again is 200
/// with the same job (nothing new stored), a different request with the key is 409 naming it;
/// in batches, per item; a bad key is 422 naming the header or the field.
async fn idempotency_keys_return_the_first_job(h: Harness) {
    let post = |key: Option<&str>, body: Value| {
        let mut rb = h.http.post(h.url("/jobs/")).json(&body);
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        rb.send()
    };
    let body = json!({"name": "pay", "job_type": "sleep", "payload": {"duration": 1, "x": [1, 2]}});
    let (status, first) = status_json(post(Some("order-17"), body.clone()).await.unwrap()).await;
    assert_eq!(status, 201, "{first}");
    // The same request, keys of its objects in another order: the same job, 200.
    let reordered =
        json!({"payload": {"x": [1, 2], "duration": 1}, "job_type": "sleep", "name": "pay"});
    let (status, again) = status_json(post(Some("order-17"), reordered).await.unwrap()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    // The key in the body instead of the header names the same job.
    let mut in_body = body.clone();
    in_body["unique_key"] = json!("order-17");
    let (status, again) = status_json(post(None, in_body).await.unwrap()).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    assert_eq!(h.client.stats().await.unwrap().total_jobs, 1);
    // A different request with the key: 409 naming the key and the job.
    let other = json!({"name": "pay", "job_type": "sleep", "payload": {"duration": 2}});
    let (status, conflict) = status_json(post(Some("order-17"), other).await.unwrap()).await;
    assert_eq!(status, 409, "{conflict}");
    let detail = conflict["detail"].as_str().unwrap();
    assert!(
        detail.contains("order-17") && detail.contains(first["id"].as_str().unwrap()),
        "{detail}"
    );
    // Bad keys: 422 naming where the key was.
    for (key, field, loc) in [
        (Some(""), None, json!(["header", "Idempotency-Key"])),
        (None, Some(json!("")), json!(["body", "unique_key"])),
        (
            None,
            Some(json!("x".repeat(256))),
            json!(["body", "unique_key"]),
        ),
        (None, Some(json!(7)), json!(["body", "unique_key"])),
        (
            Some("a"),
            Some(json!("b")),
            json!(["header", "Idempotency-Key"]),
        ),
    ] {
        let mut b = body.clone();
        if let Some(f) = field {
            b["unique_key"] = f;
        }
        let (status, resp) = status_json(post(key, b).await.unwrap()).await;
        assert_eq!(status, 422, "{key:?}: {resp}");
        assert_eq!(locs(&resp), vec![loc], "{resp}");
    }
    // Batches: per item; a repeat names the first job; a conflict stores nothing of the batch.
    let ids = h
        .client
        .submit_batch(&[
            sleep_job("b0").unique_key("batch-a"),
            sleep_job("b1"),
            sleep_job("b0").unique_key("batch-a"),
        ])
        .await
        .unwrap();
    assert_eq!(ids[0], ids[2]);
    assert_ne!(ids[0], ids[1]);
    let again = h
        .client
        .submit_batch(&[sleep_job("b0").unique_key("batch-a")])
        .await
        .unwrap();
    assert_eq!(again, [ids[0]]);
    let total = h.client.stats().await.unwrap().total_jobs;
    let err = h
        .client
        .submit_batch(&[
            sleep_job("new").unique_key("batch-b"),
            sleep_job("changed").unique_key("batch-a"),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT), "{err}");
    assert_eq!(h.client.stats().await.unwrap().total_jobs, total);
    h.finish().await;
}

/// `retry_backoff` per job: both numbers required, each in range, the cap not below the base;
/// 422s name the nested field; accepted values come back on the job.
async fn retry_backoff_is_validated_and_kept(h: Harness) {
    for (backoff, field) in [
        (json!({"base_seconds": 0, "cap_seconds": 1}), "base_seconds"),
        (
            json!({"base_seconds": 1e300, "cap_seconds": 1}),
            "base_seconds",
        ),
        (json!({"base_seconds": 2, "cap_seconds": 1}), "cap_seconds"),
        (
            json!({"base_seconds": 1, "cap_seconds": 86401}),
            "cap_seconds",
        ),
        (json!({"base_seconds": 1}), "cap_seconds"),
        (
            json!({"base_seconds": "1", "cap_seconds": 2}),
            "base_seconds",
        ),
    ] {
        let body = json!({"name": "b", "job_type": "sleep", "payload": {"duration": 1}, "retry_backoff": backoff});
        let (status, resp) = h.post("/jobs/", &body).await;
        assert_eq!(status, 422, "{backoff}: {resp}");
        assert_eq!(
            locs(&resp),
            vec![json!(["body", "retry_backoff", field])],
            "{resp}"
        );
    }
    let (status, resp) = h.post("/jobs/", &json!({"name": "b", "job_type": "sleep", "payload": {"duration": 1}, "retry_backoff": 5})).await;
    assert_eq!(
        (status, locs(&resp)),
        (422, vec![json!(["body", "retry_backoff"])])
    );
    let job = h
        .client
        .submit(&sleep_job("own").retry_backoff(0.5, 30.0))
        .await
        .unwrap();
    let want = Some(jobsched_core::RetryBackoff {
        base_seconds: 0.5,
        cap_seconds: 30.0,
    });
    assert_eq!(job.retry_backoff, want);
    let raw: Value = h.get_ok(&format!("/jobs/{}", job.id)).await;
    assert_eq!(
        raw["retry_backoff"],
        json!({"base_seconds": 0.5, "cap_seconds": 30.0})
    );
    let plain = h.client.submit(&sleep_job("plain")).await.unwrap();
    assert_eq!(plain.retry_backoff, None);
    let ids = h
        .client
        .submit_batch(&[sleep_job("b").retry_backoff(1.0, 2.0)])
        .await
        .unwrap();
    assert_eq!(
        h.client
            .get(ids[0])
            .await
            .unwrap()
            .retry_backoff
            .map(|b| b.cap_seconds),
        Some(2.0)
    );
    h.finish().await;
}

/// `/schedules`: create (201; 409 on a taken name), read one and all, replace with PUT (200;
/// 201 when new), delete (204, then 404); bad cron, time zone, name, overlap or job fields are
/// 422 naming the field.
async fn schedules_crud_and_validation(h: Harness) {
    let body = json!({
        "name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
        "job": {"name": "report", "job_type": "sleep", "payload": {"duration": 1}, "priority": 2}
    });
    let post = |b: Value| h.http.post(h.url("/schedules")).json(&b).send();
    let (status, created) = status_json(post(body.clone()).await.unwrap()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["cron"], "30 2 * * *");
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["overlap"], "skip");
    assert_eq!(
        (created["paused"].clone(), created["catch_up"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(created["job"]["priority"], 2);
    // 02:30 in Berlin is 01:30 or 00:30 UTC.
    let next =
        chrono::DateTime::parse_from_rfc3339(created["next_fire_at"].as_str().unwrap()).unwrap();
    assert!(
        matches!(
            chrono::Timelike::hour(&next.with_timezone(&chrono::Utc)),
            0 | 1
        ),
        "{next}"
    );
    assert!(next.with_timezone(&chrono::Utc) > chrono::Utc::now());
    let (status, _) = status_json(post(body.clone()).await.unwrap()).await;
    assert_eq!(status, 409);

    for (patch, loc) in [
        (json!({"cron": "61 * * * *"}), json!(["body", "cron"])),
        (json!({"cron": "* *"}), json!(["body", "cron"])),
        (
            json!({"timezone": "Mars/Base"}),
            json!(["body", "timezone"]),
        ),
        (json!({"name": "bad name"}), json!(["body", "name"])),
        (json!({"overlap": "sometimes"}), json!(["body", "overlap"])),
        (
            json!({"job": {"name": "x", "job_type": "sleep", "payload": {"duration": -1}}}),
            json!(["body", "job", "payload", "duration"]),
        ),
        (
            json!({"job": {"name": "x", "job_type": "sleep", "payload": {"duration": 1}, "delay_seconds": 5}}),
            json!(["body", "job", "delay_seconds"]),
        ),
    ] {
        let mut b = body.clone();
        b["name"] = json!("other");
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (status, resp) = status_json(post(b).await.unwrap()).await;
        assert_eq!(status, 422, "{patch}: {resp}");
        assert_eq!(locs(&resp), vec![loc], "{patch}: {resp}");
    }
    let mut no_job = body.clone();
    no_job["name"] = json!("other");
    no_job.as_object_mut().unwrap().remove("job");
    let (status, resp) = status_json(post(no_job).await.unwrap()).await;
    assert_eq!((status, locs(&resp)), (422, vec![json!(["body", "job"])]));

    // Read.
    let got: Value = h.get_ok("/schedules/nightly").await;
    assert_eq!(got["next_fire_at"], created["next_fire_at"]);
    let (status, _) = h.get("/schedules/none/").await;
    assert_eq!(status, 404);
    // Replace: 200, the name from the path; a new name: 201.
    let mut every_minute = body.clone();
    every_minute.as_object_mut().unwrap().remove("name");
    every_minute["cron"] = json!("* * * * *");
    every_minute["paused"] = json!(true);
    every_minute["overlap"] = json!("allow");
    let put = |name: &str, b: Value| {
        h.http
            .put(h.url(&format!("/schedules/{name}")))
            .json(&b)
            .send()
    };
    let (status, replaced) = status_json(put("nightly", every_minute.clone()).await.unwrap()).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(
        (
            replaced["cron"].clone(),
            replaced["paused"].clone(),
            replaced["overlap"].clone()
        ),
        (json!("* * * * *"), json!(true), json!("allow"))
    );
    assert_eq!(replaced["created_at"], created["created_at"]);
    let (status, _) = status_json(put("second", every_minute.clone()).await.unwrap()).await;
    assert_eq!(status, 201);
    let mut mismatch = every_minute.clone();
    mismatch["name"] = json!("third");
    let (status, resp) = status_json(put("second", mismatch).await.unwrap()).await;
    assert_eq!((status, locs(&resp)), (422, vec![json!(["body", "name"])]));
    let (status, resp) = status_json(put("bad%20name", every_minute).await.unwrap()).await;
    assert_eq!(
        (status, locs(&resp)),
        (422, vec![json!(["path", "name"])]),
        "{resp}"
    );
    let all: Value = h.get_ok("/schedules").await;
    assert_eq!(strings(&all, "name"), ["nightly", "second"]);
    // Delete.
    assert_eq!(h.call(Method::DELETE, "/schedules/second").await.0, 204);
    assert_eq!(h.call(Method::DELETE, "/schedules/second/").await.0, 404);
    h.finish().await;
}

async fn queues_are_created_listed_and_validated(h: Harness) {
    // Only `default` at first, with the installation's policy.
    let queues = h.client.queues().await.unwrap();
    assert_eq!(queues.len(), 1, "{queues:?}");
    assert_eq!(queues[0]["name"], "default");
    assert_eq!(queues[0]["policy"], "fcfs");
    assert_eq!(queues[0]["weight"], 1);
    assert_eq!(queues[0]["concurrency_limit"], Value::Null);

    // A job names its queue; the queue comes into being with the default settings.
    let job = h
        .client
        .submit(&sleep_job("mail").queue("emails"))
        .await
        .unwrap();
    assert_eq!(job.queue, "emails");
    assert_eq!(h.client.get(job.id).await.unwrap().queue, "emails");
    let plain = h.client.submit(&sleep_job("plain")).await.unwrap();
    assert_eq!(plain.queue, "default");
    let emails = h.client.queue("emails").await.unwrap();
    assert_eq!(emails["policy"], "fcfs");
    assert_eq!(emails["pending"], 1);
    assert_eq!(emails["running"], 0);
    let jobs = [("b1", "bulk"), ("b2", "emails")].map(|(name, q)| sleep_job(name).queue(q));
    assert_eq!(h.client.submit_batch(&jobs).await.unwrap().len(), 2);
    let names: Vec<String> = h
        .client
        .queues()
        .await
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["default", "bulk", "emails"]);
    assert_eq!(h.client.queue("emails").await.unwrap()["pending"], 2);
    let page = h
        .list_where(|q| q.queue = Some("emails".into()))
        .await
        .unwrap();
    assert_eq!(page.total, 2);
    assert!(page.jobs.iter().all(|j| j.queue == "emails"));
    let (status, resp) = h.get("/jobs/?queue=Bad!").await;
    assert_eq!(status, 422, "{resp}");
    assert_eq!(locs(&resp), vec![json!(["query", "queue"])], "{resp}");

    // PUT creates (201) or changes (200); unset fields keep their values; null clears the
    // limit. Workers hear of it through the transport.
    let (status, body) = h
        .put(
            "/queues/reports/",
            &json!({"policy": "priority", "concurrency_limit": 4, "weight": 3}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["policy"], "priority");
    assert_eq!(body["concurrency_limit"], 4);
    assert_eq!(body["weight"], 3);
    assert_eq!(body["paused"], false);
    let cached = h.transport.queues().await.unwrap();
    let reports = &cached.iter().find(|(n, _)| n == "reports").unwrap().1;
    assert_eq!(reports.concurrency_limit, Some(4));
    let durable = h.store.queues().await.unwrap();
    assert!(durable.iter().any(|(n, s)| n == "reports" && s.weight == 3));
    let changed = h
        .client
        .put_queue(
            "reports",
            &json!({"paused": true, "concurrency_limit": null}),
        )
        .await
        .unwrap();
    assert_eq!(changed["policy"], "priority");
    assert_eq!(changed["weight"], 3);
    assert_eq!(changed["paused"], true);
    assert_eq!(changed["concurrency_limit"], Value::Null);

    // `default` is the queue `PUT /scheduler/policy` sets, both ways.
    h.client
        .put_queue("default", &json!({"policy": "sjf", "weight": 2}))
        .await
        .unwrap();
    let status = h.client.status().await.unwrap();
    assert_eq!(status.current_policy, PolicyKind::Sjf);
    h.switch(PolicyKind::Priority).await.unwrap();
    let default = h.client.queue("default").await.unwrap();
    assert_eq!(default["policy"], "priority");
    assert_eq!(default["weight"], 2, "the policy switch keeps the weight");

    // Bad input: a malformed name, then each field out of its range: 422 naming it and the
    // limit.
    let (status, resp) = h.put("/queues/Bad%20Name", &json!({})).await;
    assert_eq!(status, 422, "{resp}");
    assert_eq!(locs(&resp), vec![json!(["path", "name"])], "{resp}");
    assert!(resp.to_string().contains("lowercase"), "{resp}");
    for (body, field, says) in [
        (json!({"policy": "lifo"}), "policy", "fcfs"),
        (json!({"weight": 0}), "weight", "1 to 1000"),
        (json!({"weight": 5000}), "weight", "1 to 1000"),
        (json!({"weight": -5}), "weight", "got -5"),
        (
            json!({"concurrency_limit": 5_000_000_000_i64}),
            "concurrency_limit",
            "got 5000000000",
        ),
        (
            json!({"concurrency_limit": 0}),
            "concurrency_limit",
            "paused",
        ),
        (json!({"quantum_seconds": 0}), "quantum_seconds", "0.01"),
        (json!({"paused": "yes"}), "paused", "true or false"),
    ] {
        let (status, resp) = h.put("/queues/q", &body).await;
        assert_eq!(status, 422, "{body}: {resp}");
        assert_eq!(locs(&resp), vec![json!(["body", field])], "{resp}");
        assert!(resp.to_string().contains(says), "{says} missing: {resp}");
    }
    assert!(
        !h.client
            .queues()
            .await
            .unwrap()
            .iter()
            .any(|q| q["name"] == "q"),
        "a refused PUT creates nothing"
    );
    for queue in [json!("UPPER"), json!(""), json!(7), json!("a/b")] {
        let (status, resp) = h.post("/jobs/", &json!({"name": "x", "job_type": "sleep", "payload": {"duration": 1}, "queue": queue})).await;
        assert_eq!(status, 422, "{queue}: {resp}");
        assert_eq!(locs(&resp), vec![json!(["body", "queue"])], "{resp}");
    }
    let (status, resp) = h.get("/queues/nope").await;
    assert_eq!(status, 404, "{resp}");
    assert!(
        resp["detail"]
            .as_str()
            .unwrap()
            .contains("PUT /queues/nope"),
        "{resp}"
    );

    // A queue a SchedulerConfig owns refuses REST changes.
    h.transport
        .set_queue(
            "owned",
            &PolicySettings {
                managed_by: Some("prod/main".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (status, resp) = h.put("/queues/owned", &json!({"paused": true})).await;
    assert_eq!(status, 409, "{resp}");
    assert!(
        resp["detail"].as_str().unwrap().contains("prod/main"),
        "{resp}"
    );
}

async fn a_schedule_a_job_schedule_owns_refuses_rest_changes(h: Harness) {
    let body = json!({
        "cron": "0 * * * *",
        "job": {"name": "hourly", "job_type": "sleep", "payload": {"duration": 1}, "queue": "reports"}
    });
    let (status, created) = h.put("/schedules/hourly", &body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["job"]["queue"], "reports");
    assert_eq!(created["managed_by"], Value::Null);
    // A JobSchedule takes it over (as the controller does, through the store).
    let mut owned = h.store.get_schedule("hourly").await.unwrap().unwrap();
    owned.managed_by = Some("prod/hourly".into());
    h.store.put_schedule(&owned).await.unwrap();
    let (_, shown) = h.get("/schedules/hourly").await;
    assert_eq!(shown["managed_by"], "prod/hourly");
    for req in [
        h.http.put(h.url("/schedules/hourly")).json(&body),
        h.http.delete(h.url("/schedules/hourly")),
    ] {
        let (status, resp) = status_json(req.send().await.unwrap()).await;
        assert_eq!(status, 409, "{resp}");
        let detail = resp["detail"].as_str().unwrap();
        assert!(
            detail.contains("kubectl edit jobschedule hourly -n prod"),
            "{detail}"
        );
    }
    assert!(h.store.get_schedule("hourly").await.unwrap().is_some());
}

/// Job types a worker registered: listed with their schema and live workers, submissions
/// checked against the schema (422 naming the field), unknown types refused listing the known
/// ones, and PENDING jobs of a type no live worker serves reported by the status.
async fn registered_job_types_are_listed_checked_and_reported_unserved(backend: Backend) {
    use jobsched_core::job_type::JobTypeInfo;
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    let schema = json!({
        "type": "object",
        "required": ["url"],
        "properties": {"url": {"type": "string", "minLength": 1},
                       "tries": {"type": "integer", "minimum": 1, "maximum": 5}},
        "additionalProperties": false
    });
    // Unknown before any worker registered it; the 422 lists the built-in types.
    let (code, body) = h
        .post(
            "/jobs/",
            &json!({"name": "f", "job_type": "fetch", "payload": {"url": "x"}}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let entries = validation_entries(&body);
    assert!(
        entries[0].1.contains("unknown job type `fetch`") && entries[0].1.contains("sleep"),
        "{entries:?}"
    );
    h.store
        .register_types(&[JobTypeInfo {
            name: "fetch".into(),
            schema: schema.clone(),
            preemptible: false,
            default_timeout_seconds: 30.0,
            registered_by: "w-fetch".into(),
            updated_at: chrono::Utc::now(),
        }])
        .await
        .unwrap();
    // Accepted at once (the API reads the catalog for a type it does not know)...
    let ok = h
        .http
        .post(h.url("/jobs/"))
        .json(
            &json!({"name": "f", "job_type": "fetch", "payload": {"url": "https://a", "tries": 2}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    // ...and checked against the schema: every bad field named.
    let (code, body) = status_json(
        h.http
            .post(h.url("/jobs/batch"))
            .json(&json!({"jobs": [
                {"name": "a", "job_type": "fetch", "payload": {"url": "", "tries": 9}},
                {"name": "b", "job_type": "fetch", "payload": {"extra": 1}}
            ]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let fields: Vec<String> = validation_entries(&body)
        .iter()
        .map(|(loc, _, _)| {
            loc.as_array()
                .unwrap()
                .iter()
                .map(|p| p.to_string().trim_matches('"').to_string())
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect();
    assert_eq!(
        fields,
        [
            "body.jobs.0.payload.tries",
            "body.jobs.0.payload.url",
            "body.jobs.1.payload.url",
            "body.jobs.1.payload.extra"
        ],
        "{body}"
    );
    // Listed: with its schema, no live worker, one PENDING job; built-in types too.
    let list: Value = h.get_ok("/job-types").await;
    let types = list["job_types"].as_array().unwrap();
    let fetch = types.iter().find(|t| t["name"] == "fetch").unwrap();
    assert_eq!(fetch["schema"], schema);
    assert_eq!(fetch["pending"], 1);
    assert_eq!(fetch["workers"], json!([]));
    assert_eq!(fetch["registered_by"], "w-fetch");
    assert!(types.iter().any(|t| t["name"] == "sleep"), "{list}");
    // No live worker serves it: the status says so.
    let status: Value = h.get_ok("/scheduler/status").await;
    assert_eq!(
        status["unserved"],
        json!([{"job_type": "fetch", "pending": 1}]),
        "{status}"
    );
    // A live worker reports it serves the type: listed, and no longer unserved.
    h.transport
        .report_slots("w-fetch", 2, 2, Duration::from_secs(60))
        .await
        .unwrap();
    h.transport
        .report_types("w-fetch", &["fetch".to_string()])
        .await
        .unwrap();
    let list: Value = h.get_ok("/job-types/").await;
    let fetch = list["job_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fetch")
        .unwrap()
        .clone();
    assert_eq!(fetch["workers"], json!(["w-fetch"]));
    let status: Value = h.get_ok("/scheduler/status").await;
    assert_eq!(status["unserved"], json!([]), "{status}");
    let workers: Value = h.get_ok("/scheduler/workers").await;
    assert_eq!(workers[0]["job_types"], json!(["fetch"]), "{workers}");
    h.finish().await;
}

/// A running job's progress on `GET /jobs/{id}` (not in lists), its log per try on
/// `GET /jobs/{id}/logs` (404 for no job, 422 for a bad try number), and the client's reads.
async fn progress_and_logs_are_served_per_try(backend: Backend) {
    use jobsched_core::notes::{LogLine, Progress};
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    let job = h.insert("noted").await;
    let fresh: Value = h.get_ok(&format!("/jobs/{}", job.id)).await;
    assert_eq!(fresh["progress"], Value::Null);
    // The harness runs the job under `test-worker`: claim-style RUNNING for notes.
    let token = h.run(&job).await;
    let at = chrono::Utc::now();
    let progress = Progress {
        fraction: 0.4,
        message: Some("two of five".into()),
        attempt: 1,
        updated_at: at,
    };
    let lines = [
        LogLine::new(at, "info", "starting".into()),
        LogLine::new(at, "warn", "slow disk".into()),
    ];
    assert!(
        h.store
            .save_notes(token, 1, Some(&progress), &lines)
            .await
            .unwrap()
    );
    let got: Value = h.get_ok(&format!("/jobs/{}", job.id)).await;
    assert_eq!(got["progress"]["fraction"], 0.4);
    assert_eq!(got["progress"]["message"], "two of five");
    assert_eq!(got["progress"]["attempt"], 1);
    let page: Value = h.get_ok("/jobs/").await;
    assert!(page["jobs"][0].get("progress").is_none(), "{page}");
    let (job2, p) = h.client.get_with_progress(job.id).await.unwrap();
    assert_eq!(job2.id, job.id);
    assert_eq!(p.unwrap().message.as_deref(), Some("two of five"));
    let logs: Value = h.get_ok(&format!("/jobs/{}/logs", job.id)).await;
    assert_eq!(logs["job_id"], job.id.to_string());
    assert_eq!(logs["attempts"][0]["attempt"], 1);
    assert_eq!(logs["attempts"][0]["dropped"], 0);
    let messages = strings(&logs["attempts"][0]["lines"], "message");
    assert_eq!(messages, ["starting", "slow disk"]);
    assert_eq!(logs["attempts"][0]["lines"][1]["level"], "warn");
    let tries = h.client.logs(job.id, Some(1)).await.unwrap();
    assert_eq!(tries.len(), 1);
    assert!(h.client.logs(job.id, Some(2)).await.unwrap().is_empty());
    // Errors: a bad try number names the parameter; no such job is 404.
    let (code, body) = h.get(&format!("/jobs/{}/logs?attempt=0", job.id)).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(locs(&body), [json!(["query", "attempt"])]);
    let missing = h
        .http
        .get(h.url(&format!("/jobs/{}/logs", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    h.finish().await;
}
