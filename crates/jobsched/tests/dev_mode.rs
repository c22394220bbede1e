//! `jobsched dev` end to end: the README's quick-start curl commands against the real binary,
//! file jobs on the shipped `data/` folder, a clean Ctrl-C, and jobs kept across a restart.

use jobsched_testkit::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jobsched");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Dev {
    child: Child,
    base: String,
    /// Base URL of its `/metrics` server (a port of its own, not the API's).
    metrics: String,
}

impl Drop for Dev {
    /// Never leave a server behind, even when an assertion fails.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(db: &Path, port: u16) -> Dev {
    let metrics_port = free_port();
    let child = Command::new(BIN)
        .args(["dev", "--db"])
        .arg(db)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .env("JOBSCHED_DATA_DIR", repo_root().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn jobsched dev");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/livez"),
    ])
    .0 != "200"
    {
        assert!(Instant::now() < deadline, "jobsched dev did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Dev {
        child,
        base,
        metrics: format!("http://127.0.0.1:{metrics_port}"),
    }
}

/// Run the real `curl`; returns (stdout, success).
fn curl(args: &[&str]) -> (String, bool) {
    let out = Command::new("curl")
        .args(args)
        .output()
        .expect("curl is installed");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

/// `curl` sending `body` as JSON with `method` to `url`, as the README does.
fn curl_send(method: &str, url: &str, body: &str) -> (String, bool) {
    curl(&[
        "-s",
        "-X",
        method,
        url,
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
    ])
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn wait_status(base: &str, id: &str, want: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (body, _) = curl(&["-s", &format!("{base}/jobs/{id}")]);
        let j = json(&body);
        if j["status"] == want {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} not {want}: {j}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    jobsched_testkit::signal(child, "INT");
    jobsched_testkit::wait_exit(child, Duration::from_secs(30), "jobsched dev after Ctrl-C")
}

#[test]
fn readme_quick_start_works_against_jobsched_dev() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db");
    let port = free_port();
    let mut dev = start_dev(&db, port);
    let base = dev.base.clone();

    // The README's commands, verbatim but for the port.
    let (body, ok) = curl_send(
        "POST",
        &format!("{base}/jobs/"),
        r#"{"name": "Hello world", "job_type": "sleep", "payload": {"duration": 3}}"#,
    );
    assert!(ok);
    let hello = json(&body);
    assert_eq!(hello["status"], "PENDING");
    assert_eq!(hello["name"], "Hello world");
    let (body, _) = curl(&["-s", &format!("{base}/jobs/stats")]);
    assert_eq!(json(&body)["total_jobs"], 1);
    let (body, _) = curl_send(
        "PUT",
        &format!("{base}/scheduler/policy"),
        r#"{"policy": "priority"}"#,
    );
    assert_eq!(json(&body)["current_policy"], "priority");
    let (code, _) = curl(&[
        "-s",
        "-L",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/docs"),
    ]);
    assert_eq!(code, "200");

    // File jobs on the shipped data folder.
    let (body, _) = curl_send(
        "POST",
        &format!("{base}/jobs/"),
        r#"{"name": "Count", "job_type": "word_count", "payload": {"file_path": "sample.txt"}}"#,
    );
    let count_id = json(&body)["id"].as_str().unwrap().to_string();
    let (body, _) = curl_send(
        "POST",
        &format!("{base}/jobs/"),
        r#"{"name": "Resize", "job_type": "thumbnail", "payload": {"input_path": "sample.png", "width": 128, "height": 128, "output_path": "out/readme-test.png"}}"#,
    );
    let thumb_id = json(&body)["id"].as_str().unwrap().to_string();
    // Paths outside the data dir are refused at submission.
    let (code, _) = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        &format!("{base}/jobs/"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"name": "x", "job_type": "word_count", "payload": {"file_path": "/etc/passwd"}}"#,
    ]);
    assert_eq!(code, "422");

    let counted = wait_status(&base, &count_id, "COMPLETED", Duration::from_secs(30));
    let wc = Command::new("wc")
        .env("LC_ALL", "C.UTF-8")
        .arg("-lwm")
        .arg(repo_root().join("data/sample.txt"))
        .output()
        .unwrap();
    let n: Vec<u64> = String::from_utf8(wc.stdout)
        .unwrap()
        .split_whitespace()
        .take(3)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(counted["result"]["line_count"], n[0]);
    assert_eq!(counted["result"]["word_count"], n[1]);
    assert_eq!(counted["result"]["char_count"], n[2]);
    let thumb = wait_status(&base, &thumb_id, "COMPLETED", Duration::from_secs(30));
    assert_eq!(
        thumb["result"]["width"], 128,
        "640x480 source fits 128 wide"
    );
    assert_eq!(thumb["result"]["height"], 96);
    let _ = std::fs::remove_file(repo_root().join("data/out/readme-test.png"));
    wait_status(
        &base,
        hello["id"].as_str().unwrap(),
        "COMPLETED",
        Duration::from_secs(30),
    );

    // The API exports its metrics on its own port, labelled by route template.
    let (page, _) = curl(&["-s", &format!("{}/metrics", dev.metrics)]);
    assert!(
        page.contains(r#"jobsched_jobs_submitted_total{job_type="sleep"} 1"#),
        "{page}"
    );
    assert!(page.contains(r#"jobsched_jobs_submitted_total{job_type="word_count"} 1"#));
    assert!(
        page.contains(r#"route="/jobs/{id}""#),
        "route templates, not raw paths"
    );
    assert!(!page.contains(&count_id), "no per-job labels");
    // Series the dashboard names exist from the start, at 0 (nothing here was retried).
    assert!(
        page.contains(r#"jobsched_job_retries_total{job_type="thumbnail"} 0"#),
        "retries counter not initialised"
    );
    assert!(
        page.contains(
            r#"jobsched_jobs_finished_total{job_type="thumbnail",outcome="completed"} 1"#
        )
    );

    // The CLI client against the same server.
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("JOBSCHED_URL", &base)
            .output()
            .expect("run jobsched cli")
    };
    // A client command that succeeds and prints JSON: that JSON.
    let cli_json = |args: &[&str]| {
        let out = cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        json(&String::from_utf8_lossy(&out.stdout))
    };
    let done = cli_json(&[
        "submit",
        "sleep",
        "duration=0.05",
        "--name",
        "cli-ok",
        "--priority",
        "2",
        "--wait",
        "--json",
    ]);
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["priority"], 2);
    let bad = cli(&[
        "submit",
        "sleep",
        "duration=0",
        "fail_probability=1",
        "--max-retries",
        "0",
        "--wait",
    ]);
    assert!(
        !bad.status.success(),
        "a failed job must give a non-zero exit"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("FAILED"));
    let invalid = cli(&["submit", "sleep", "duration=-1"]);
    assert!(!invalid.status.success());
    assert!(
        String::from_utf8_lossy(&invalid.stderr).contains("duration"),
        "the error names the field"
    );
    let stats = cli(&["stats", "--json"]);
    assert_eq!(
        json(&String::from_utf8_lossy(&stats.stdout))["total_jobs"],
        5
    );
    let listed = cli(&["jobs", "--status", "FAILED", "--json"]);
    assert_eq!(json(&String::from_utf8_lossy(&listed.stdout))["total"], 1);
    let dlq = cli(&["dlq", "list", "--json"]);
    assert_eq!(
        json(&String::from_utf8_lossy(&dlq.stdout))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let purge = cli(&["dlq", "purge"]);
    assert!(String::from_utf8_lossy(&purge.stdout).contains("purged 1"));
    let switched = cli(&["policy", "sjf", "--json"]);
    assert_eq!(
        json(&String::from_utf8_lossy(&switched.stdout))["current_policy"],
        "sjf"
    );
    let unknown = cli(&["policy", "lifo"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("fcfs"),
        "lists the valid policies"
    );
    cli(&["policy", "priority"]);

    // A scheduled job: not started before its time, then run like any other.
    let done = cli_json(&[
        "submit",
        "sleep",
        "duration=0",
        "--delay",
        "0.5",
        "--wait",
        "--json",
    ]);
    assert_eq!(done["status"], "COMPLETED");
    let time = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(done[field].as_str().expect(field)).expect(field)
    };
    assert!(time("run_at") - time("created_at") >= chrono::Duration::milliseconds(400));
    assert!(time("started_at") >= time("run_at"), "{done}");
    // The same submission with the same idempotency key names the first job.
    let keyed = || {
        let out = cli(&["submit", "sleep", "duration=0", "--unique-key", "cli-key-1"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let key_job = keyed();
    assert_eq!(keyed(), key_job);
    wait_status(&base, &key_job, "COMPLETED", Duration::from_secs(30));
    // Periodic jobs through the CLI (paused: this test counts jobs).
    let shown = cli_json(&[
        "schedules",
        "put",
        "nightly",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Berlin",
        "--job",
        r#"{"name": "report", "job_type": "sleep", "payload": {"duration": 1}}"#,
        "--paused",
        "--json",
    ]);
    assert_eq!(
        (shown["cron"].as_str(), shown["paused"].as_bool()),
        (Some("0 2 * * *"), Some(true))
    );
    let listed = cli(&["schedules", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("nightly"));
    let bad_cron = cli(&["schedules", "put", "x", "--cron", "whenever", "--job", "{}"]);
    assert!(!bad_cron.status.success());
    assert!(String::from_utf8_lossy(&bad_cron.stderr).contains("cron"));
    assert!(cli(&["schedules", "delete", "nightly"]).status.success());
    assert!(!cli(&["schedules", "show", "nightly"]).status.success());
    let bad_time = cli(&["submit", "sleep", "duration=0", "--run-at", "tomorrow"]);
    assert!(!bad_time.status.success());
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("--run-at"));
    // Named queues through the CLI: a job in a new queue runs; the queue's settings change.
    let done = cli_json(&[
        "submit",
        "sleep",
        "duration=0",
        "--queue",
        "emails",
        "--wait",
        "--json",
    ]);
    assert_eq!(
        (done["status"].as_str(), done["queue"].as_str()),
        (Some("COMPLETED"), Some("emails"))
    );
    let q = cli_json(&[
        "queues",
        "put",
        "emails",
        "--policy",
        "sjf",
        "--concurrency-limit",
        "3",
        "--weight",
        "2",
        "--json",
    ]);
    assert_eq!(
        (
            q["policy"].as_str(),
            q["concurrency_limit"].as_u64(),
            q["weight"].as_u64()
        ),
        (Some("sjf"), Some(3), Some(2))
    );
    let listed = String::from_utf8_lossy(&cli(&["queues", "list"]).stdout).to_string();
    assert!(
        listed.contains("emails") && listed.contains("default"),
        "{listed}"
    );
    let bad = cli(&["queues", "put", "emails", "--weight", "0"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("weight"));

    // The job types: the dev worker registered the built-in ones and serves them.
    let types = String::from_utf8_lossy(&cli(&["job-types"]).stdout).to_string();
    let sleep_row = types
        .lines()
        .find(|l| l.starts_with("sleep "))
        .unwrap_or_else(|| panic!("no sleep row: {types}"));
    assert!(sleep_row.contains("dev"), "{types}");
    // A job's log, per try (the built-in types log nothing: an empty answer, not an error).
    let logs = cli(&["logs", hello["id"].as_str().unwrap()]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );

    // Ctrl-C stops cleanly; a restart keeps the jobs and the policy.
    let st = interrupt(&mut dev.child);
    assert!(st.success(), "exit status {st:?}");
    let mut dev = start_dev(&db, port);
    let (body, _) = curl(&["-s", &format!("{}/jobs/stats", dev.base)]);
    let stats = json(&body);
    assert_eq!(stats["total_jobs"], 8);
    assert_eq!(stats["completed"], 7);
    assert_eq!(stats["failed"], 1);
    assert_eq!(stats["delayed"], 0);
    let (body, _) = curl(&["-s", &format!("{}/scheduler/status", dev.base)]);
    assert_eq!(
        json(&body)["current_policy"],
        "priority",
        "restart must not reset the policy"
    );
    let st = interrupt(&mut dev.child);
    assert!(st.success());
}
