//! Hostile and careless input against the REST API over real HTTP (and raw TCP where HTTP
//! clients are too polite): every bad input gets a clear JSON 4xx naming the field and the
//! limit, and no client can crash, jam or exhaust the server. Every test runs on Postgres +
//! Redis and on SQLite + the in-memory transport.

#[macro_use]
mod common;

use common::{Backend, Harness, Options, config, locs, status_json};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

suite!(
    quantum_outside_its_range_is_422,
    oversized_payload_is_413_and_lists_are_lean,
    timeout_seconds_is_validated_and_kept,
    nul_characters_are_422_naming_the_field,
    api_token_alone_cannot_do_admin_operations,
    metrics_are_not_served_on_the_api_port,
    undecodable_paths_get_json_errors,
    busy_server_answers_503_at_once,
    slow_clients_are_timed_out,
    connection_limit_answers_503,
    shutdown_is_bounded_whatever_clients_do,
    oversized_body_sent_at_once_reads_413,
    generated_json_never_gets_a_5xx,
    silent_and_idle_connections_are_closed,
    body_budget_answers_503_at_once,
);

fn detail(body: &Value) -> String {
    body["detail"].to_string()
}

/// The response is a 422 naming exactly the body field `field`; its body (`what` says which
/// request it was when it is not).
fn refused_field((status, body): (u16, Value), field: &str, what: &str) -> Value {
    assert_eq!(status, 422, "{what}: {body}");
    assert_eq!(locs(&body), vec![json!(["body", field])], "{what}: {body}");
    body
}

/// What the held connection `slow` has been answered, if anything arrived within 20 ms
/// (empty: closed).
async fn answered(slow: &mut TcpStream) -> Option<String> {
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_millis(20), slow.read(&mut buf)).await;
    let n = read.ok()?.ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Row 1 and 2: the quantum is bounded (no Duration overflow, no livelock of 1e-300 s slices).
async fn quantum_outside_its_range_is_422(h: Harness) {
    let too_big = [json!(1e300), json!(1e19), json!(86400.5)];
    let too_small = [json!(1e-300), json!(0), json!(-5)];
    for q in too_big.into_iter().chain(too_small) {
        for policy in ["fcfs", "round_robin"] {
            let answer = h
                .put(
                    "/scheduler/policy",
                    &json!({"policy": policy, "quantum_seconds": q}),
                )
                .await;
            let body = refused_field(answer, "quantum_seconds", &format!("{policy} {q}"));
            let d = detail(&body);
            assert!(d.contains("0.01") && d.contains("86400"), "{d}");
        }
    }
    // The refused values were not stored: the policy is still the default.
    let status = h.client.status().await.unwrap();
    assert_eq!(status.quantum_seconds, 5.0);
    let resp = h
        .http
        .put(h.url("/scheduler/policy"))
        .json(&json!({"policy": "round_robin", "quantum_seconds": 0.01}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    h.finish().await;
}

/// Row 5: payloads are capped (413 naming the field and JOBSCHED_MAX_PAYLOAD) and lists leave
/// payloads and results out unless asked.
async fn oversized_payload_is_413_and_lists_are_lean(backend: Backend) {
    let Some(h) = Harness::start_with(backend, config(|c| c.max_payload = 4096)).await else {
        return;
    };
    let pad = "x".repeat(5000);
    let resp = h
        .http
        .post(h.url("/jobs/"))
        .json(
            &json!({"name": "big", "job_type": "sleep", "payload": {"duration": 0.01, "pad": pad}}),
        )
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 413, "{body}");
    let d = detail(&body);
    assert!(
        d.contains("payload") && d.contains("4096") && d.contains("JOBSCHED_MAX_PAYLOAD"),
        "{d}"
    );
    let resp = h
        .http
        .post(h.url("/jobs/batch"))
        .json(&json!({"jobs": [
            {"name": "ok", "job_type": "sleep", "payload": {"duration": 0.01}},
            {"name": "big", "job_type": "sleep", "payload": {"duration": 0.01, "pad": pad}},
        ]}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 413, "{body}");
    assert!(detail(&body).contains("jobs[1].payload"), "{body}");
    assert_eq!(
        h.client.stats().await.unwrap().total_jobs,
        0,
        "nothing was inserted"
    );

    // Lists carry no payload or result unless asked.
    let job = h
        .client
        .submit(
            &jobsched_client::SubmitJob::new("small", "sleep")
                .payload(json!({"duration": 0.01, "note": "hello"})),
        )
        .await
        .unwrap();
    let (status, body) = h.get("/jobs/").await;
    assert_eq!(status, 200);
    let item = &body["jobs"][0];
    assert_eq!(item["id"], json!(job.id));
    for field in ["payload", "result", "checkpoint"] {
        assert!(
            item.get(field).is_none(),
            "{field} listed by default: {item}"
        );
    }
    let (_, body) = h.get("/jobs/?include=payload,result").await;
    assert_eq!(body["jobs"][0]["payload"]["note"], "hello");
    assert!(body["jobs"][0].get("result").is_some());
    assert!(body["jobs"][0].get("checkpoint").is_none());
    let (status, body) = h.get("/jobs/?include=secrets").await;
    assert_eq!(status, 422);
    assert_eq!(locs(&body), vec![json!(["query", "include"])]);
    // The typed client still reads lean lists.
    let page = h.client.list(&Default::default()).await.unwrap();
    assert_eq!(page.jobs[0].id, job.id);
    // A single job always has everything.
    assert_eq!(h.client.get(job.id).await.unwrap().payload["note"], "hello");
    h.finish().await;
}

/// Row 6: a per-job timeout is validated at submission and kept with the job.
async fn timeout_seconds_is_validated_and_kept(h: Harness) {
    let out_of_range = [json!(0), json!(1e300), json!(-1), json!(604801)];
    for bad in out_of_range.into_iter().chain([json!("10")]) {
        let answer = h.post("/jobs/", &json!({"name": "t", "job_type": "sleep", "payload": {"duration": 1}, "timeout_seconds": bad})).await;
        refused_field(answer, "timeout_seconds", &bad.to_string());
    }
    // A sleep longer than the type's maximum is refused with the limit named.
    let (status, body) = h
        .post(
            "/jobs/",
            &json!({"name": "t", "job_type": "sleep", "payload": {"duration": 1e300}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(locs(&body), vec![json!(["body", "payload", "duration"])]);
    assert!(detail(&body).contains("86400"), "{body}");

    let job = h
        .client
        .submit(
            &jobsched_client::SubmitJob::new("t", "sleep")
                .payload(json!({"duration": 1}))
                .timeout_seconds(2.5),
        )
        .await
        .unwrap();
    assert_eq!(job.timeout_seconds, Some(2.5));
    assert_eq!(
        h.client.get(job.id).await.unwrap().timeout_seconds,
        Some(2.5)
    );
    let ids = h
        .client
        .submit_batch(&[jobsched_client::SubmitJob::new("b", "sleep")
            .payload(json!({"duration": 1}))
            .timeout_seconds(7.0)])
        .await
        .unwrap();
    assert_eq!(
        h.client.get(ids[0]).await.unwrap().timeout_seconds,
        Some(7.0)
    );
    h.finish().await;
}

/// Row 8: NUL characters are refused up front, the same on both stores, never a 503.
async fn nul_characters_are_422_naming_the_field(h: Harness) {
    let cases = [
        (
            "/jobs/",
            json!({"name": "a\u{0}b", "job_type": "sleep", "payload": {"duration": 1}}),
            json!(["body", "name"]),
        ),
        (
            "/jobs/",
            json!({"name": "n", "job_type": "sleep", "payload": {"duration": 1, "note": "x\u{0}"}}),
            json!(["body", "payload", "note"]),
        ),
        (
            "/jobs/batch",
            json!({"jobs": [
                {"name": "ok", "job_type": "sleep", "payload": {"duration": 1}},
                {"name": "n", "job_type": "sleep", "payload": {"duration": 1, "k": ["\u{0}"]}},
            ]}),
            json!(["body", "jobs", 1, "payload", "k", 0]),
        ),
    ];
    for (path, body, loc) in cases {
        let (status, body) = h.post(path, &body).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(locs(&body), vec![loc], "{body}");
        assert!(detail(&body).contains("NUL"), "{body}");
    }
    assert_eq!(h.client.stats().await.unwrap().total_jobs, 0);
    h.finish().await;
}

/// Row 11: with only an API token configured, admin operations are refused and the error names
/// JOBSCHED_ADMIN_TOKEN.
async fn api_token_alone_cannot_do_admin_operations(backend: Backend) {
    let Some(h) =
        Harness::start_with(backend, config(|c| c.api_token = Some("only-user".into()))).await
    else {
        return;
    };
    let id = "0190a6f2-7c1e-7d3a-9f4b-2a6c1e5d8b90";
    let calls = [
        h.http
            .put(h.url("/scheduler/policy"))
            .json(&json!({"policy": "priority"})),
        h.http.delete(h.url("/scheduler/dead-letter")),
        h.http
            .post(h.url(&format!("/scheduler/dead-letter/{id}/retry"))),
        h.http.delete(h.url("/scheduler/policy/owner")),
    ];
    for call in calls {
        let (status, body) = status_json(call.bearer_auth("only-user").send().await.unwrap()).await;
        assert_eq!(status, 403, "{body}");
        assert!(detail(&body).contains("JOBSCHED_ADMIN_TOKEN"), "{body}");
    }
    // The same token still does everything else.
    let user = h.client.clone().with_token("only-user");
    assert!(user.status().await.is_ok());
    h.finish().await;
}

/// Row 15: the API's metrics are on their own port (`JOBSCHED_METRICS_LISTEN`), not the REST one.
async fn metrics_are_not_served_on_the_api_port(h: Harness) {
    let (status, body) = h.get("/metrics").await;
    assert_eq!(status, 404, "{body}");
    h.finish().await;
}

/// Row 16: a rejection produced before any handler (a path that is not UTF-8) is JSON too.
async fn undecodable_paths_get_json_errors(h: Harness) {
    for path in [
        "/jobs/%FF",
        "/jobs/%FF/",
        "/scheduler/dead-letter/%C3%28/retry",
    ] {
        let resp = h.http.get(h.url(path)).send().await.unwrap();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let (status, body) = status_json(resp).await;
        assert!((400..500).contains(&status), "{path}: {status}");
        assert_eq!(ct.as_deref(), Some("application/json"), "{path}");
        assert!(
            body["detail"].is_string() || body["detail"].is_array(),
            "{body}"
        );
    }
    let (status, body) = h
        .call(Method::POST, "/scheduler/dead-letter/%FF/retry")
        .await;
    assert!((400..500).contains(&status), "{status} {body}");
    h.finish().await;
}

/// Open a raw connection and send `head` (no more).
async fn raw(h: &Harness, head: &str) -> TcpStream {
    let addr = h.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Read until the peer closes (or `limit` passes); returns what arrived.
async fn read_all(s: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Send `head` on a new connection and read until the server closes it, which must happen
/// within `bound`; returns what arrived.
async fn closed_within(h: &Harness, head: &str, bound: Duration) -> String {
    let started = Instant::now();
    let mut s = raw(h, head).await;
    let got = read_all(&mut s, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < bound,
        "{head:?}: the connection was held {:?}",
        started.elapsed()
    );
    got
}

/// Row 5 (concurrency): past `max_inflight` requests in flight, the next is answered 503 with
/// Retry-After and a JSON body at once; once the slow one ends, requests succeed again.
async fn busy_server_answers_503_at_once(backend: Backend) {
    let Some(h) = Harness::start_with(backend, config(|c| c.max_inflight = 1)).await else {
        return;
    };
    // Holds the only slot: its body never arrives. (Should it lose the race for the slot
    // against a probe request below, it is answered 503 itself and sent again.)
    let slow_request = "POST /jobs/ HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";
    let mut slow = raw(&h, slow_request).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body, retry_after) = loop {
        let started = Instant::now();
        let resp = h.http.get(h.url("/jobs/stats")).send().await.unwrap();
        let retry = resp.headers().get("retry-after").cloned();
        let (status, body) = status_json(resp).await;
        if status == 503 {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "503 must come at once"
            );
            break (status, body, retry);
        }
        assert!(
            Instant::now() < deadline,
            "never saw the limit: {status} {body}"
        );
        // Answered (503: it lost the race for the slot): hold another one.
        if let Some(got) = answered(&mut slow).await {
            assert!(got.starts_with("HTTP/1.1 503"), "{got}");
            slow = raw(&h, slow_request).await;
        }
    };
    assert_eq!(status, 503);
    assert!(
        detail(&body).contains("JOBSCHED_API_MAX_INFLIGHT"),
        "{body}"
    );
    assert_eq!(retry_after.unwrap(), "1");
    // Probes are not limited.
    assert_eq!(h.get("/livez").await.0, 200);
    slow.write_all(&[b' '; 99]).await.unwrap();
    let answer = read_all(&mut slow, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
    assert!(h.client.stats().await.is_ok());
    h.finish().await;
}

/// Row 9: slow headers close the connection; a body that never arrives is a JSON 408.
async fn slow_clients_are_timed_out(backend: Backend) {
    let Some(h) = Harness::start_with(
        backend,
        config(|c| {
            c.header_timeout = Duration::from_millis(500);
            c.body_timeout = Duration::from_millis(500);
        }),
    )
    .await
    else {
        return;
    };
    let five = Duration::from_secs(5);
    let got = closed_within(&h, "GET /jobs/stats HTTP/1.1\r\nhost: x\r\n", five).await;
    assert!(!got.contains("200 OK"), "{got}");

    let got = closed_within(
        &h,
        "POST /jobs/ HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{",
        five,
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(
        got.contains("application/json") && got.contains("detail"),
        "{got}"
    );
    h.finish().await;
}

/// Row 9: past `max_connections` open connections, a new one is answered 503 (JSON) and closed.
async fn connection_limit_answers_503(backend: Backend) {
    let Some(h) = Harness::start_with(backend, config(|c| c.max_connections = 2)).await else {
        return;
    };
    let _a = raw(&h, "").await;
    let _b = raw(&h, "").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = raw(&h, "GET /jobs/stats HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let got = read_all(&mut c, Duration::from_secs(3)).await;
        if got.starts_with("HTTP/1.1 503") {
            assert!(got.contains("JOBSCHED_API_MAX_CONNECTIONS"), "{got}");
            break;
        }
        assert!(Instant::now() < deadline, "limit never applied: {got}");
    }
    drop((_a, _b));
    // Once those close, the server serves again.
    let live = async || {
        let r = h.http.get(h.url("/livez")).send().await.ok()?;
        (r.status() == 200).then_some(())
    };
    jobsched_testkit::eventually("the server to recover", Duration::from_secs(10), live).await;
    h.finish().await;
}

/// Row 9: after the shutdown signal the server stops within its shutdown timeout even while a
/// client holds a connection mid-request.
async fn shutdown_is_bounded_whatever_clients_do(backend: Backend) {
    let Some(mut h) = Harness::start_with(
        backend,
        config(|c| {
            c.shutdown_timeout = Duration::from_secs(1);
            c.header_timeout = Duration::from_secs(600);
            c.body_timeout = Duration::from_secs(600);
            c.request_timeout = Duration::from_secs(600);
        }),
    )
    .await
    else {
        return;
    };
    let _slow = raw(
        &h,
        "POST /jobs/ HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{",
    )
    .await;
    let _idle = raw(&h, "GET /jobs/stats HTTP/1.1\r\n").await;
    // The accept loop takes connections in order: once a later one is answered, both hostile
    // ones are being served (the slow POST holds its handler reading the body).
    let mut probe = raw(
        &h,
        "GET /livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let answered = read_all(&mut probe, Duration::from_secs(10)).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let started = Instant::now();
    h.stop_server().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        started.elapsed()
    );
    h.finish().await;
}

/// Row 10: a client that writes a 5 MB body in one go reads the 413, not a broken pipe.
async fn oversized_body_sent_at_once_reads_413(backend: Backend) {
    let Some(h) = Harness::start_with(backend, config(|c| c.body_limit = 64 * 1024)).await else {
        return;
    };
    let body = format!(
        r#"{{"name": "big", "job_type": "sleep", "payload": {{"pad": "{}"}}}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    for _ in 0..3 {
        let (status, body) = h.post_raw("/jobs/", body.clone()).await;
        assert_eq!(status, 413, "{body}");
        assert!(detail(&body).contains("65536"), "{body}");
    }
    h.finish().await;
}

/// A random JSON value of the kinds that break parsers and databases.
fn nasty(rng: &mut StdRng, depth: u32) -> Value {
    let pick = rng.random_range(0..14);
    match pick {
        0 => json!(f64::MAX),
        1 => json!(1e300),
        2 => json!(-1e-300),
        3 => json!(i64::MIN),
        4 => json!(u64::MAX),
        5 => json!("\u{0}"),
        6 => json!("x".repeat(rng.random_range(0..300))),
        7 => json!(null),
        8 => json!(rng.random::<bool>()),
        9 => json!(rng.random_range(-20i64..20)),
        10 => json!(rng.random::<f64>() * 100.0),
        11 if depth < 4 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| nasty(rng, depth + 1))
                .collect(),
        ),
        12 if depth < 4 => {
            let keys = [
                "name",
                "job_type",
                "payload",
                "priority",
                "duration",
                "file_path",
                "policy",
                "quantum_seconds",
                "\u{0}",
                "",
            ];
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..6) {
                let k = keys[rng.random_range(0..keys.len())];
                m.insert(k.to_string(), nasty(rng, depth + 1));
            }
            Value::Object(m)
        }
        _ => {
            let words = [
                "sleep",
                "word_count",
                "thumbnail",
                "fcfs",
                "round_robin",
                "../etc/passwd",
            ];
            json!(words[rng.random_range(0..words.len())])
        }
    }
}

/// A submission with valid-looking fields, some replaced by nasty values.
fn submission(rng: &mut StdRng) -> Value {
    let job_type = ["sleep", "word_count", "thumbnail", "nope"][rng.random_range(0..4)];
    let mut job = json!({
        "name": "fuzz",
        "job_type": job_type,
        "priority": 5,
        "estimated_duration": 1.0,
        "max_retries": 1,
        "timeout_seconds": 5,
        "payload": {"duration": 0.01, "file_path": "sample.txt", "input_path": "sample.txt", "width": 8, "height": 8},
    });
    for field in [
        "name",
        "job_type",
        "priority",
        "estimated_duration",
        "max_retries",
        "timeout_seconds",
        "payload",
    ] {
        if rng.random_range(0..4) == 0 {
            job[field] = nasty(rng, 0);
        }
    }
    if rng.random_range(0..3) == 0 {
        let keys: Vec<String> = [
            "duration",
            "file_path",
            "input_path",
            "width",
            "height",
            "output_path",
            "fail_probability",
            "overwrite",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let k = &keys[rng.random_range(0..keys.len())];
        if job["payload"].is_object() {
            job["payload"][k] = nasty(rng, 0);
        }
    }
    job
}

/// Raw bodies no JSON generator produces: lone surrogates, deep nesting, huge arrays, garbage.
fn raw_bodies() -> Vec<String> {
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let deep_obj = format!("{}{}", r#"{"a":"#.repeat(3000), "}".repeat(3000));
    let huge = format!(r#"{{"jobs": [{}]}}"#, vec!["1"; 200_000].join(","));
    vec![
        r#"{"name": "\ud800", "job_type": "sleep"}"#.to_string(),
        r#"{"name": "x", "job_type": "sleep", "payload": {"s": "\udfff\ud800"}}"#.to_string(),
        r#"{"policy": "fcfs", "quantum_seconds": 1e400}"#.to_string(),
        r#"{"policy": "round_robin", "quantum_seconds": -0}"#.to_string(),
        r#"{"name": "x", "job_type": "sleep", "payload": {"duration": 1e309}}"#.to_string(),
        format!(r#"{{"name": "x", "job_type": "sleep", "payload": {deep}}}"#),
        format!(r#"{{"name": "x", "job_type": "sleep", "payload": {deep_obj}}}"#),
        huge,
        "\u{0}".to_string(),
        "".to_string(),
        "{".to_string(),
        "[]".to_string(),
        "null".to_string(),
        r#"{"jobs": "x"}"#.to_string(),
        r#"{"jobs": [null, 1, "a", []]}"#.to_string(),
        format!(r#"{{"name": "{}", "job_type": "sleep"}}"#, "é".repeat(300)),
    ]
}

/// Property test: generated JSON to the three write endpoints never gets a 5xx and the server
/// stays alive.
async fn generated_json_never_gets_a_5xx(h: Harness) {
    let seed: u64 = std::env::var("JOBSCHED_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bodies: Vec<(&str, Method, String)> = Vec::new();
    for _ in 0..150 {
        bodies.push(("/jobs/", Method::POST, submission(&mut rng).to_string()));
        let n = rng.random_range(0..4);
        let batch = json!({"jobs": (0..n).map(|_| submission(&mut rng)).collect::<Vec<_>>()});
        bodies.push(("/jobs/batch", Method::POST, batch.to_string()));
        let name = ["fcfs", "sjf", "priority", "round_robin", "lifo"][rng.random_range(0..5)];
        let mut policy = json!({ "policy": name });
        for field in ["quantum_seconds", "paused", "policy"] {
            if rng.random_range(0..2) == 0 {
                policy[field] = nasty(&mut rng, 0);
            }
        }
        bodies.push(("/scheduler/policy", Method::PUT, policy.to_string()));
        // Keep the policy valid for the next rounds' submissions.
    }
    for raw in raw_bodies() {
        for (path, m) in [
            ("/jobs/", Method::POST),
            ("/jobs/batch", Method::POST),
            ("/scheduler/policy", Method::PUT),
        ] {
            bodies.push((path, m, raw.clone()));
        }
    }
    let mut statuses = std::collections::BTreeMap::new();
    for (path, method, body) in &bodies {
        let resp = h
            .http
            .request(method.clone(), h.url(path))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {path} {body:.200}: no answer: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(
            status < 500,
            "seed {seed}: {method} {path} with {body:.300} → {status} {text}"
        );
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("seed {seed}: {path}: not JSON ({e}): {text:.300}"));
        if status >= 400 {
            assert!(parsed.get("detail").is_some(), "{text:.300}");
        }
        *statuses.entry(status).or_insert(0u32) += 1;
    }
    eprintln!("seed {seed}: statuses {statuses:?}");
    assert!(
        statuses.contains_key(&201) && statuses.contains_key(&422),
        "{statuses:?}"
    );
    let (status, _) = h.get("/health").await;
    assert_eq!(status, 200, "the server is alive afterwards");
    h.finish().await;
}

/// Row 9: a connection that never sends a byte, and one idle after a request, are closed after
/// the header timeout: silent sockets cannot pile up against the connection limit.
async fn silent_and_idle_connections_are_closed(backend: Backend) {
    let Some(h) = Harness::start_with(
        backend,
        config(|c| c.header_timeout = Duration::from_millis(500)),
    )
    .await
    else {
        return;
    };
    let five = Duration::from_secs(5);
    let got = closed_within(&h, "", five).await;
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
    let got = closed_within(&h, "GET /livez HTTP/1.1\r\nhost: x\r\n\r\n", five).await;
    assert!(got.starts_with("HTTP/1.1 200"), "idle keep-alive: {got}");
    h.finish().await;
}

/// Row 5: request bodies held at once are bounded in bytes; past the budget a request is
/// answered 503 at once (the JSON of many large bodies cannot exhaust the API's memory).
async fn body_budget_answers_503_at_once(backend: Backend) {
    let Some(h) = Harness::start_with(
        backend,
        config(|c| {
            c.body_limit = 64 * 1024;
            c.body_budget = 64 * 1024;
        }),
    )
    .await
    else {
        return;
    };
    // Declares 60 KiB and sends one byte: holds most of the budget.
    let mut slow = raw(
        &h,
        "POST /jobs/ HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 61440\r\n\r\n{",
    )
    .await;
    let body = format!(
        r#"{{"name": "n", "job_type": "sleep", "payload": {{"pad": "{}"}}}}"#,
        "x".repeat(10_000)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, got) = h.post_raw("/jobs/", body.clone()).await;
        if status == 503 {
            assert!(detail(&got).contains("JOBSCHED_API_BODY_BUDGET"), "{got}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "budget never applied: {status} {got}"
        );
        if let Some(got) = answered(&mut slow).await {
            assert!(got.is_empty() || got.starts_with("HTTP/1.1"), "{got}");
            slow = raw(
                &h,
                "POST /jobs/ HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 61440\r\n\r\n{",
            )
            .await;
        }
    }
    drop(slow);
    // Released when the slow request ends: small requests go through again.
    let small = json!({"name": "small", "job_type": "sleep", "payload": {"duration": 0.01}});
    let every = Duration::from_millis(50);
    jobsched_testkit::poll_every(every, Duration::from_secs(10), async || {
        match h.post("/jobs/", &small).await {
            (201, _) => Ok(()),
            (status, body) => Err(format!("budget not released: {status} {body}")),
        }
    })
    .await;
    h.finish().await;
}

/// Postgres is the truth: with Redis gone (its process killed), a submission is answered as
/// soon as it is committed, not after Redis timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_do_not_wait_for_an_unreachable_redis() {
    let Some((mut redis, port)) = jobsched_testkit::private_redis() else {
        return;
    };
    let url = format!("redis://127.0.0.1:{port}");
    let Some(h) = Harness::start_with(
        Backend::PostgresRedis,
        Options {
            redis_url: Some(url),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let _ = redis.0.kill();
    let _ = redis.0.wait();
    for i in 0..3 {
        let started = Instant::now();
        let resp = h
            .http
            .post(h.url("/jobs/"))
            .json(&json!({"name": format!("while-redis-is-down-{i}"), "job_type": "sleep", "payload": {"duration": 0.01}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a submission waited {:?} on the unreachable Redis",
            started.elapsed()
        );
    }
    assert_eq!(h.store.stats().await.unwrap().pending, 3, "all durable");
    // (No finish(): its Redis is gone; the database goes with the harness.)
}
