//! The web console (`/ui`) driven in real headless Chromium through WebDriver (Debian's
//! `chromium` and `chromium-driver`), against `jobsched dev` with both tokens set: sign in,
//! filter and search jobs, open one, cancel it, retry a dead letter, switch the policy and see
//! the overview follow; a user token sees no admin controls; the token never shows in a URL or
//! the server's log; no page scrolls sideways at phone width.
//!
//! `UPDATE_SCREENSHOTS=1` writes the screenshots under `docs/ui/` (shown in the README).
//! Without Chromium the test is skipped with a message, unless `CI=true`.

use jobsched_testkit::{Killed, free_port};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jobsched");
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const USER_TOKEN: &str = "console-user-token-4b1d";
const ADMIN_TOKEN: &str = "console-admin-token-9f3e";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A minimal WebDriver client: just what the test uses.
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn start(driver: &str) -> Browser {
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1280,900"]
            }
        }}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let session = loop {
            match http
                .post(format!("{driver}/session"))
                .json(&caps)
                .send()
                .await
            {
                Ok(r) => {
                    let v: Value = r.json().await.unwrap();
                    match v["value"]["sessionId"].as_str() {
                        Some(id) => break id.to_string(),
                        None => panic!("no session: {v}"),
                    }
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver did not answer: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            http,
            base: format!("{driver}/session/{session}"),
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        let rb = if body.is_null() { rb } else { rb.json(&body) };
        let v: Value = rb.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.cmd(reqwest::Method::POST, path, body).await
    }

    async fn get(&self, path: &str) -> Value {
        self.cmd(reqwest::Method::GET, path, Value::Null).await
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// Run `script` and assert what it returns; `why` names the expectation.
    async fn expect_js(&self, script: &str, expected: Value, why: &str) {
        let got = self.js(script).await;
        assert_eq!(got, expected, "{why} (script: {script})");
    }

    async fn find_now(&self, css: &str) -> Option<String> {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// Wait for `css` to exist and be displayed.
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(id) = self.find_now(css).await
                && self.get(&format!("/element/{id}/displayed")).await == json!(true)
            {
                return id;
            }
            assert!(Instant::now() < deadline, "no visible element {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.post("/elements", json!({"using": "css selector", "value": css}))
            .await
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Wait until exactly `n` elements match `css`.
    async fn wait_count(&self, css: &str, n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.count(css).await != n {
            assert!(Instant::now() < deadline, "{css}: never {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// Click `button`, then answer the confirmation dialog it opens: yes or no.
    async fn click_confirmed(&self, button: &str, yes: bool) {
        self.click(button).await;
        self.find("#confirm-dialog").await;
        self.click(if yes { "#confirm-yes" } else { "#confirm-no" })
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    /// Wait until the text of `css` satisfies `ok`.
    async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let t = match self.find_now(css).await {
                Some(id) => self
                    .get(&format!("/element/{id}/text"))
                    .await
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            };
            if ok(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{css}: wanted {what}, shows {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Press a key (a WebDriver key code such as `\u{E004}` for Tab) on whatever has focus.
    async fn press(&self, key: &str) {
        self.post(
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]}),
        )
        .await;
    }

    async fn set_width(&self, width: u32) {
        self.post("/window/rect", json!({"width": width, "height": 900}))
            .await;
    }

    /// The page fits its width (nothing scrolls sideways).
    async fn assert_fits(&self, page: &str) {
        let fits = self
            .js("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
            .await;
        assert_eq!(fits, json!(true), "{page} scrolls sideways");
    }

    async fn screenshot(&self, name: &str) {
        if std::env::var("UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        let data = self.get("/screenshot").await;
        let png = base64_decode(data.as_str().unwrap());
        let dir = repo_root().join("docs/ui");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn quit(&self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

/// Standard base64 (what WebDriver screenshots are).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            _ => 63,
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().fold(0u32, |acc, c| (acc << 6) | val(*c)) << (6 * (4 - chunk.len()));
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..chunk.len()]);
    }
    out
}

/// The API, as a script would use it.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn submit(&self, body: Value) -> String {
        self.call(reqwest::Method::POST, "/jobs/", USER_TOKEN, Some(body))
            .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn job(&self, id: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("/jobs/{id}"),
            USER_TOKEN,
            None,
        )
        .await
    }

    async fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let j = self.job(id).await;
            if j["status"] == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} is {} not {want}",
                j["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn chromium_available() -> bool {
    Path::new("/usr/bin/chromium").exists()
        && Command::new("chromedriver")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Whether the test can run here; panics under `CI=true` when it cannot.
fn chromium_or_skip() -> bool {
    if chromium_available() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: Chromium and chromedriver are required (apt-get install chromium chromium-driver)"
    );
    eprintln!("skipping: install chromium and chromium-driver to run the console test");
    false
}

/// Start `jobsched dev` with `args` and `env` on a free port; returns it and its base URL once
/// it answers.
async fn start_dev(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> (Killed, String) {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.arg("dev")
        .args(args)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "off",
        ])
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let dev = Killed(cmd.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/livez")).send().await.is_err() {
        assert!(Instant::now() < deadline, "jobsched dev did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (dev, base)
}

/// Start chromedriver and a headless Chromium session on it.
async fn start_browser() -> (Killed, Browser) {
    let port = free_port();
    let driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let browser = Browser::start(&format!("http://127.0.0.1:{port}")).await;
    (driver, browser)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_drives_every_page_in_headless_chromium() {
    if !chromium_or_skip() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("sample.txt"), "one two").unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let data_dir = data.path().display().to_string();
    let (_dev, base) = start_dev(
        &["--memory"],
        &[
            ("JOBSCHED_API_TOKEN", USER_TOKEN),
            ("JOBSCHED_ADMIN_TOKEN", ADMIN_TOKEN),
            ("JOBSCHED_DATA_DIR", &data_dir),
            ("JOBSCHED_BACKOFF_BASE", "0.01"),
            ("JOBSCHED_BACKOFF_CAP", "0.02"),
            ("RUST_LOG", "info,tower_http=debug"),
        ],
        Stdio::from(log.reopen().unwrap()),
    )
    .await;
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
    };

    // A dead letter, then a paused scheduler holding a few pending jobs.
    let doomed = api
        .submit(
            json!({"name": "doomed", "job_type": "sleep", "max_retries": 0,
                       "payload": {"duration": 0.01, "fail_probability": 1}}),
        )
        .await;
    api.wait_status(&doomed, "FAILED").await;
    api.call(
        reqwest::Method::PUT,
        "/scheduler/policy",
        ADMIN_TOKEN,
        Some(json!({"policy": "fcfs", "paused": true})),
    )
    .await;
    let mut ids = Vec::new();
    for name in ["alpha-1", "alpha-2", "beta-1"] {
        ids.push(
            api.submit(json!({"name": name, "job_type": "sleep", "payload": {"duration": 0.01}}))
                .await,
        );
    }

    let (_driver, b) = start_browser().await;

    // Sign in (auth is on): the console asks for a token first.
    b.goto(&format!("{base}/ui")).await;
    b.find("#signin-form").await;
    b.screenshot("signin").await;
    b.type_into("#signin-token", "wrong-token").await;
    b.click("#signin-submit").await;
    b.wait_text("#error", "a refusal", |t| t.contains("not accepted"))
        .await;
    b.type_into("#signin-token", ADMIN_TOKEN).await;
    b.click("#signin-submit").await;

    // Overview: counts and the paused scheduler.
    b.wait_text("#count-total", "4 jobs", |t| t.trim() == "4")
        .await;
    b.wait_text("#count-PENDING", "3 pending", |t| t.trim() == "3")
        .await;
    b.wait_text("#overview-paused", "paused", |t| t.contains("paused"))
        .await;
    b.wait_text("#overview-dead-letters", "one dead letter", |t| {
        t.trim() == "1"
    })
    .await;
    b.find("#activity-chart").await;
    b.screenshot("overview").await;

    // By keyboard: the skip link comes first in tab order, Tab moves focus on from a focused
    // control, and Enter on a focused nav link navigates.
    b.goto(&format!("{base}/ui#/")).await;
    b.find("#count-total").await;
    b.expect_js("return document.querySelector('a[href], button, input, select, textarea, [tabindex]:not([tabindex=\"-1\"])').id;", json!("skip-link"), "the skip link comes first in tab order").await;
    b.js("document.querySelector('#skip-link').focus();").await;
    b.press("\u{E004}").await;
    b.expect_js(
        "return document.activeElement.textContent.trim();",
        json!("jobsched"),
        "Tab moves from the skip link to the brand link",
    )
    .await;
    b.js("document.querySelector(\"a[href='#/dead-letters']\").focus();")
        .await;
    b.press("\u{E007}").await;
    b.find("#dlq-table").await;
    b.goto(&format!("{base}/ui#/")).await;
    b.find("#count-total").await;

    // Jobs: filter by name prefix, open one, cancel it (asks first).
    b.click("a[href='#/jobs']").await;
    b.find("#jobs-table").await;
    b.type_into("#filter-q", "alpha").await;
    b.click("#filter-apply").await;
    b.wait_count("#jobs-table .job-link", 2, "the search narrowed to 2 jobs")
        .await;
    b.screenshot("jobs").await;
    b.click("#filter-status option[value='FAILED']").await;
    b.type_into("#filter-q", "").await;
    b.click("#filter-apply").await;
    b.wait_count(
        "#jobs-table .job-link",
        1,
        "the status filter narrowed to 1 job",
    )
    .await;
    b.goto(&format!("{base}/ui#/jobs/{}", ids[1])).await;
    b.wait_text("#job-name", "alpha-2", |t| t.contains("alpha-2"))
        .await;
    b.find("#job-timeline").await;
    b.find("#job-payload").await;
    b.screenshot("job").await;
    b.click_confirmed("#job-cancel", false).await;
    assert_eq!(
        api.job(&ids[1]).await["status"],
        "PENDING",
        "'no' cancels nothing"
    );
    b.click_confirmed("#job-cancel", true).await;
    b.wait_text("#job-status", "CANCELLED", |t| t.contains("CANCELLED"))
        .await;
    assert_eq!(api.job(&ids[1]).await["status"], "CANCELLED");

    // Dead letters: retry the one entry.
    b.click("a[href='#/dead-letters']").await;
    b.find("#dlq-table").await;
    b.screenshot("dead-letters").await;
    b.click_confirmed(".dlq-retry", true).await;
    b.find("#dlq-empty").await;
    let retried = api.job(&doomed).await;
    assert_eq!(retried["status"], "PENDING", "{retried}");

    // Policy: switch to Round Robin with a 2 s quantum and resume; the overview follows.
    b.click("a[href='#/policy']").await;
    b.find("#policy-form").await;
    b.click("#policy-select option[value='round_robin']").await;
    b.type_into("#policy-quantum", "2").await;
    b.click("#policy-paused").await;
    b.screenshot("policy").await;
    b.click("#policy-apply").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = api
            .call(reqwest::Method::GET, "/scheduler/status", USER_TOKEN, None)
            .await;
        if s["current_policy"] == "round_robin" && s["paused"] == false {
            assert_eq!(s["quantum_seconds"], 2.0);
            break;
        }
        assert!(Instant::now() < deadline, "the policy did not change: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.click("a[href='#/']").await;
    b.wait_text("#overview-policy", "round_robin", |t| {
        t.contains("round_robin")
    })
    .await;
    b.wait_text("#overview-paused", "running", |t| t.contains("running"))
        .await;
    // Resumed: the held jobs run, and the live overview shows them completed.
    // (alpha-1 and beta-1; alpha-2 was cancelled, the retried dead letter fails again.)
    b.wait_text("#count-COMPLETED", "2 completed", |t| t.trim() == "2")
        .await;
    // The overview's own switch (admins): to Priority, then pause.
    b.click("#overview-policy-select option[value='priority']")
        .await;
    b.click("#overview-policy-apply").await;
    b.wait_text("#overview-policy", "priority", |t| t.contains("priority"))
        .await;
    b.click("#overview-pause").await;
    b.wait_text("#overview-paused", "paused", |t| t.contains("paused"))
        .await;
    let s = api
        .call(reqwest::Method::GET, "/scheduler/status", USER_TOKEN, None)
        .await;
    assert_eq!(
        (s["current_policy"].as_str(), s["paused"].as_bool()),
        (Some("priority"), Some(true))
    );

    // Phone width: nothing scrolls sideways.
    b.set_width(375).await;
    for page in [
        "#/",
        "#/jobs",
        "#/dead-letters",
        "#/policy",
        &format!("#/jobs/{}", ids[0]),
    ] {
        b.goto(&format!("{base}/ui{page}")).await;
        b.find("main h1").await;
        b.assert_fits(page).await;
        // Every control has a label, and every button a name (keyboard and screen readers).
        let unlabelled = b
            .js("return [...document.querySelectorAll('input, select, textarea')]
                   .filter(e => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))
                   .map(e => e.id || e.name)
                   .concat([...document.querySelectorAll('button')]
                   .filter(e => !e.textContent.trim() && !e.getAttribute('aria-label'))
                   .map(e => 'button#' + e.id));")
            .await;
        assert_eq!(unlabelled, json!([]), "{page}: controls without a label");
    }
    b.goto(&format!("{base}/ui#/")).await;
    b.find("#count-total").await;
    b.screenshot("overview-phone").await;
    b.set_width(1280).await;

    // A user token sees no admin controls (and the API refuses them anyway).
    b.click("#sign-out").await;
    b.find("#signin-form").await;
    b.type_into("#signin-token", USER_TOKEN).await;
    b.click("#signin-submit").await;
    b.find("#count-total").await;
    b.expect_js(
        "const f = document.querySelector('#overview-switch'); return !!f && !f.hidden;",
        json!(false),
        "no policy switch on the overview for a user",
    )
    .await;
    b.goto(&format!("{base}/ui#/policy")).await;
    b.find("#policy-readonly").await;
    assert_eq!(
        b.count("#policy-form").await,
        0,
        "no policy form for a user"
    );

    // The token is never in a URL, and never in the server's log.
    let href = b.js("return window.location.href;").await;
    assert!(!href.as_str().unwrap().contains("token"), "{href}");
    b.quit().await;
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        !logged.contains(USER_TOKEN) && !logged.contains(ADMIN_TOKEN),
        "a token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_policy_page_names_the_managing_scheduler_config() {
    if !chromium_or_skip() {
        return;
    }
    // The durable settings say a Kubernetes SchedulerConfig owns the policy.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db");
    let url = format!("sqlite://{}", db.display());
    jobsched_store::migrate(&url).await.unwrap();
    let store = jobsched_store::connect(&url, 1).await.unwrap();
    store
        .set_policy(&jobsched_core::PolicySettings {
            policy: jobsched_core::PolicyKind::Priority,
            quantum_seconds: 5.0,
            paused: false,
            managed_by: Some("prod/jobsched".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(store);
    let data_dir = dir.path().display().to_string();
    let db_arg = db.display().to_string();
    let (_dev, base) = start_dev(
        &["--db", &db_arg],
        &[("JOBSCHED_DATA_DIR", &data_dir), ("RUST_LOG", "warn")],
        Stdio::inherit(),
    )
    .await;
    let (_driver, b) = start_browser().await;
    // No tokens configured: open, admin controls shown, but disabled while managed.
    b.goto(&format!("{base}/ui#/policy")).await;
    let note = b
        .wait_text("#policy-managed", "the managing resource", |t| {
            t.contains("jobsched") && t.contains("prod")
        })
        .await;
    assert!(
        note.contains("kubectl edit schedulerconfig jobsched -n prod"),
        "{note}"
    );
    b.expect_js("return [...document.querySelectorAll('#policy-form select, #policy-form input, #policy-form button')].every(e => e.disabled);", json!(true), "controls must be disabled").await;
    b.screenshot("policy-managed").await;
    b.quit().await;
}
