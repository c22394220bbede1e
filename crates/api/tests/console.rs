//! What the web console reads, over HTTP: its assets (embedded, with a strict CSP), who the
//! token makes the caller, the sampled overview, the workers and the job search. The pages
//! themselves are driven in Chromium by `crates/jobsched/tests/console.rs`.

#[macro_use]
mod common;

use common::{Backend, Harness, status_json, tokens};
use jobsched_client::SubmitJob;
use serde_json::json;

suite!(
    assets_are_embedded_with_a_strict_csp,
    whoami_names_the_role_of_each_token,
    overview_comes_from_samples_and_search_finds_jobs,
);

async fn assets_are_embedded_with_a_strict_csp(h: Harness) {
    for (path, ct) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let resp = h.http.get(h.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        let get = |k: &str| headers.get(k).map(|v| v.to_str().unwrap().to_string());
        assert!(get("content-type").unwrap().starts_with(ct), "{path}");
        let csp = get("content-security-policy").unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(get("x-content-type-options").as_deref(), Some("nosniff"));
        let body = resp.text().await.unwrap();
        // Nothing from elsewhere (the SVG namespace is a name, not a fetch).
        let elsewhere = body
            .replace("http://www.w3.org/2000/svg", "")
            .contains("://");
        assert!(!elsewhere, "{path} refers to another origin");
    }
    // No inline scripts or styles for the CSP to block.
    let html = h
        .http
        .get(h.url("/ui"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("onclick"));
    h.finish().await;
}

async fn whoami_names_the_role_of_each_token(backend: Backend) {
    // Open (no tokens): everyone is admin.
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    let (status, body) = h.get("/ui/api/whoami").await;
    assert_eq!(
        (status, body),
        (200, json!({"auth_required": false, "role": "admin"}))
    );
    h.finish().await;

    let Some(h) = Harness::start_with(backend, tokens("u", "a")).await else {
        return;
    };
    let who = |token: Option<&'static str>| {
        let mut rb = h.http.get(h.url("/ui/api/whoami"));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        async move { status_json(rb.send().await.unwrap()).await }
    };
    assert_eq!(
        who(None).await,
        (200, json!({"auth_required": true, "role": "anonymous"}))
    );
    assert_eq!(
        who(Some("u")).await,
        (200, json!({"auth_required": true, "role": "user"}))
    );
    assert_eq!(
        who(Some("a")).await,
        (200, json!({"auth_required": true, "role": "admin"}))
    );
    assert_eq!(who(Some("nope")).await.0, 401);
    // The console's data needs the token like every API route.
    let (status, _) = h.get("/ui/api/overview").await;
    assert_eq!(status, 401);
    h.finish().await;
}

async fn overview_comes_from_samples_and_search_finds_jobs(h: Harness) {
    let jobs: Vec<SubmitJob> = ["report-a", "report-b", "other"]
        .iter()
        .map(|n| SubmitJob::new(*n, "sleep").payload(json!({"duration": 0.01})))
        .collect();
    let ids = h.client.submit_batch(&jobs).await.unwrap();
    let (status, o) = h.get("/ui/api/overview").await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(o["stats"]["total_jobs"], 3);
    assert_eq!(o["stats"]["pending"], 3);
    assert_eq!(o["status"]["current_policy"], "fcfs");
    assert_eq!(o["status"]["queue_depth"], 3);
    assert!(
        o["samples"].as_array().is_some_and(|s| !s.is_empty()),
        "{o}"
    );
    assert!(o["samples"][0]["oldest_pending_seconds"].as_f64().unwrap() >= 0.0);
    let (status, workers) = h.get("/scheduler/workers").await;
    assert_eq!(
        (status, workers),
        (200, json!([])),
        "no worker runs in this harness"
    );

    let search = |q: String| {
        let url = h.url(&format!("/jobs/?q={q}"));
        let http = h.http.clone();
        async move { status_json(http.get(url).send().await.unwrap()).await.1 }
    };
    let found = search("report-".into()).await;
    assert_eq!(found["total"], 2, "{found}");
    let found = search(ids[2].to_string()).await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["jobs"][0]["name"], "other");
    assert_eq!(search("Report".into()).await["total"], 0, "case-sensitive");
    h.finish().await;
}
