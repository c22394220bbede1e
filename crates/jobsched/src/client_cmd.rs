//! CLI client subcommands: talk to a running API over HTTP.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use jobsched_client::{Client, Job, JobStatus, ListQuery, PolicyKind, PolicyUpdate, SubmitJob};
use serde_json::{Map, Value};
use std::io::Write;
use std::time::{Duration, Instant};

/// Where the API is.
#[derive(Debug, Args, Clone)]
pub struct Conn {
    /// API base URL.
    #[arg(
        long,
        env = "JOBSCHED_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    pub url: String,
    /// File holding the bearer token (tokens are never taken on the command line, where `ps`
    /// shows them). Without it: JOBSCHED_TOKEN, else JOBSCHED_API_TOKEN.
    #[arg(long, env = "JOBSCHED_TOKEN_FILE", global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// File holding the admin token, sent only with admin operations (policy switch,
    /// dead-letter retry and purge). Without it: JOBSCHED_ADMIN_TOKEN.
    #[arg(long, env = "JOBSCHED_ADMIN_TOKEN_FILE", global = true)]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `jobsched submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Job type: sleep, word_count, thumbnail.
    pub job_type: String,
    /// Payload fields as key=value (numbers and true/false are parsed; use --payload for JSON).
    pub fields: Vec<String>,
    /// Job name (default: the job type).
    #[arg(long)]
    pub name: Option<String>,
    /// Priority 1 (highest) – 10.
    #[arg(long)]
    pub priority: Option<i64>,
    /// Estimated duration, seconds.
    #[arg(long)]
    pub estimate: Option<f64>,
    /// Retry budget 0–10.
    #[arg(long)]
    pub max_retries: Option<i64>,
    /// Payload as a JSON object (merged with key=value fields).
    #[arg(long)]
    pub payload: Option<String>,
    /// Per-run timeout, seconds (0.1 to 604800); default: the job type's.
    #[arg(long = "run-timeout")]
    pub run_timeout: Option<f64>,
    /// Do not start before this time (RFC 3339, e.g. 2026-12-24T18:00:00Z).
    #[arg(long, conflicts_with = "delay")]
    pub run_at: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Do not start before this many seconds from now.
    #[arg(long)]
    pub delay: Option<f64>,
    /// This job's retry backoff base, seconds (with --backoff-cap; default: the installation's).
    #[arg(long, requires = "backoff_cap")]
    pub backoff_base: Option<f64>,
    /// This job's retry backoff cap, seconds.
    #[arg(long, requires = "backoff_base")]
    pub backoff_cap: Option<f64>,
    /// Idempotency key: the same submission with it again prints the first job.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// The named queue (default `default`; a new name creates the queue).
    #[arg(long)]
    pub queue: Option<String>,
    /// Wait until the job ends, showing progress; exit non-zero if it failed.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub timeout: f64,
}

/// `jobsched jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only this status (PENDING, RUNNING, …).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this job type.
    #[arg(long = "type")]
    pub job_type: Option<String>,
    /// Only this named queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Page (1-based).
    #[arg(long, default_value_t = 1)]
    pub page: u32,
    /// Page size (1–100).
    #[arg(long, default_value_t = 20)]
    pub page_size: u32,
}

/// `jobsched dlq`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    List,
    /// Re-run one dead-lettered job with fresh retries.
    Retry {
        /// Job id.
        id: uuid::Uuid,
    },
    /// Remove every entry (the jobs stay FAILED).
    Purge,
}

/// `jobsched schedules`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List every schedule with its next fire time.
    List,
    /// Show one schedule.
    Show {
        /// Schedule name.
        name: String,
    },
    /// Create or replace a schedule, e.g.
    /// `jobsched schedules put nightly --cron "0 2 * * *" --timezone Europe/Berlin
    ///  --job '{"name": "report", "job_type": "sleep", "payload": {"duration": 1}}'`.
    Put {
        /// Schedule name.
        name: String,
        /// Cron expression (5 fields, or 6 to 7 with seconds first).
        #[arg(long)]
        cron: String,
        /// IANA time zone (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// The job each fire enqueues, as a `POST /jobs/` JSON body.
        #[arg(long)]
        job: String,
        /// While the last fire's job runs: skip (default) or allow.
        #[arg(long)]
        overlap: Option<String>,
        /// Create or keep it paused.
        #[arg(long)]
        paused: bool,
        /// Skip fire times missed while no leader ran (default: enqueue one on recovery).
        #[arg(long)]
        no_catch_up: bool,
    },
    /// Delete a schedule (the jobs it enqueued stay).
    Delete {
        /// Schedule name.
        name: String,
    },
}

/// `jobsched queues …`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List every queue with its policy, limit, weight and jobs.
    List,
    /// Show one queue.
    Show {
        /// Queue name.
        name: String,
    },
    /// Create or change a queue (unset options keep their value), e.g.
    /// `jobsched queues put emails --policy priority --concurrency-limit 10 --weight 3`.
    Put {
        /// Queue name.
        name: String,
        /// fcfs, sjf, priority or round_robin.
        #[arg(long)]
        policy: Option<String>,
        /// Round Robin quantum, seconds.
        #[arg(long)]
        quantum: Option<f64>,
        /// Pause (true) or resume (false) starting its jobs.
        #[arg(long)]
        paused: Option<bool>,
        /// Most of its jobs running at once across the cluster.
        #[arg(long, conflicts_with = "no_limit")]
        concurrency_limit: Option<u32>,
        /// Remove the concurrency limit.
        #[arg(long)]
        no_limit: bool,
        /// Its share of slots against other queues' weights (1 to 1000).
        #[arg(long)]
        weight: Option<u32>,
    },
}

/// Run a `jobsched queues` command.
pub async fn queues(conn: &Conn, cmd: QueueCommand) -> Result<()> {
    let c = client(conn)?;
    let row = |q: &Value| {
        let limit = q["concurrency_limit"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |n| n.to_string());
        format!(
            "{:<24} {:<12} limit {:<6} weight {:<4} pending {:<8} running {:<6}{}",
            truncate(q["name"].as_str().unwrap_or(""), 24),
            q["policy"].as_str().unwrap_or(""),
            limit,
            q["weight"],
            q["pending"],
            q["running"],
            paused_mark(q)
        )
    };
    match cmd {
        QueueCommand::List => print_rows(conn, &c.queues().await?, row)?,
        QueueCommand::Show { name } => print_json(&c.queue(&name).await?)?,
        QueueCommand::Put {
            name,
            policy,
            quantum,
            paused,
            concurrency_limit,
            no_limit,
            weight,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(p) = policy {
                body.insert("policy".into(), Value::String(p));
            }
            if let Some(q) = quantum {
                body.insert("quantum_seconds".into(), serde_json::json!(q));
            }
            if let Some(p) = paused {
                body.insert("paused".into(), Value::Bool(p));
            }
            if let Some(l) = concurrency_limit {
                body.insert("concurrency_limit".into(), Value::from(l));
            }
            if no_limit {
                body.insert("concurrency_limit".into(), Value::Null);
            }
            if let Some(w) = weight {
                body.insert("weight".into(), Value::from(w));
            }
            let q = c.put_queue(&name, &Value::Object(body)).await?;
            if conn.json {
                return print_json(&q);
            }
            println!("{}", row(&q));
        }
    }
    Ok(())
}

/// A token: the file's first line when a file is named, else the first set variable.
pub(crate) fn read_token(file: Option<&std::path::Path>, vars: &[&str]) -> Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.is_empty() {
            bail!("the token file {} is empty", path.display());
        }
        return Ok(Some(token));
    }
    Ok(vars
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|t| t.trim().to_string())
        .find(|t| !t.is_empty()))
}

fn client(conn: &Conn) -> Result<Client> {
    let mut c = Client::new(&conn.url)?;
    if let Some(t) = read_token(
        conn.token_file.as_deref(),
        &["JOBSCHED_TOKEN", "JOBSCHED_API_TOKEN"],
    )? {
        c = c.with_token(t);
    }
    if let Some(t) = read_token(conn.admin_token_file.as_deref(), &["JOBSCHED_ADMIN_TOKEN"])? {
        c = c.with_admin_token(t);
    }
    Ok(c)
}

/// A listing: as JSON with `--json`, else a line per item.
fn print_rows(conn: &Conn, all: &[Value], row: impl Fn(&Value) -> String) -> Result<()> {
    if conn.json {
        return print_json(&all);
    }
    for item in all {
        println!("{}", row(item));
    }
    Ok(())
}

/// ` (paused)` after a listed queue or schedule that is paused.
fn paused_mark(item: &Value) -> &'static str {
    if item["paused"] == Value::Bool(true) {
        " (paused)"
    } else {
        ""
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Parse `key=value` into a JSON value: numbers, booleans, null, else a string.
fn parse_field(s: &str) -> Result<(String, Value)> {
    let Some((k, v)) = s.split_once('=') else {
        bail!("payload field `{s}` must look like key=value (e.g. duration=3)");
    };
    let value = serde_json::from_str::<Value>(v)
        .ok()
        .filter(|x| !x.is_object() && !x.is_array() || v.starts_with(['{', '[']))
        .unwrap_or_else(|| Value::String(v.to_string()));
    Ok((k.to_string(), value))
}

fn job_row(j: &Job) -> String {
    format!(
        "{}  {:<10} {:<11} p{:<2} {:<24} {}",
        j.id,
        j.status.as_str(),
        j.job_type,
        j.priority,
        truncate(&j.name, 24),
        j.error_message.as_deref().unwrap_or("")
    )
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// `jobsched submit`.
pub async fn submit(conn: &Conn, args: SubmitArgs) -> Result<()> {
    let c = client(conn)?;
    let mut payload = match &args.payload {
        Some(p) => match serde_json::from_str::<Value>(p).context("--payload is not valid JSON")? {
            Value::Object(m) => m,
            _ => bail!("--payload must be a JSON object, e.g. '{{\"duration\": 3}}'"),
        },
        None => Map::new(),
    };
    for f in &args.fields {
        let (k, v) = parse_field(f)?;
        payload.insert(k, v);
    }
    let mut job = SubmitJob::new(
        args.name.clone().unwrap_or_else(|| args.job_type.clone()),
        &args.job_type,
    )
    .payload(Value::Object(payload));
    job.priority = args.priority;
    job.estimated_duration = args.estimate;
    job.max_retries = args.max_retries;
    job.timeout_seconds = args.run_timeout;
    job.run_at = args.run_at.map(|t| t.with_timezone(&chrono::Utc));
    job.delay_seconds = args.delay;
    job.unique_key = args.unique_key.clone();
    job.queue = args.queue.clone();
    if let (Some(base), Some(cap)) = (args.backoff_base, args.backoff_cap) {
        job = job.retry_backoff(base, cap);
    }
    let created = c.submit(&job).await?;
    if !args.wait {
        if conn.json {
            return print_json(&created);
        }
        println!("{}", created.id);
        return Ok(());
    }
    let done = wait_with_progress(
        &c,
        &created,
        jobsched_worker::serve::secs_in("--timeout", args.timeout, 0.1, 31_536_000.0)?,
        !conn.json,
    )
    .await?;
    if conn.json {
        print_json(&done)?;
    } else {
        println!("{}", job_row(&done));
        if let Some(r) = &done.result {
            println!("result: {r}");
        }
    }
    if done.status != JobStatus::Completed {
        bail!(
            "job {} ended {}: {}",
            done.id,
            done.status,
            done.error_message.unwrap_or_default()
        );
    }
    Ok(())
}

async fn wait_with_progress(c: &Client, job: &Job, timeout: Duration, show: bool) -> Result<Job> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(20);
    let estimate = job.estimated_duration.max(0.001);
    loop {
        let (j, progress) = c.get_with_progress(job.id).await?;
        if show {
            let elapsed = j
                .started_at
                .map(|s| (chrono::Utc::now() - s).num_milliseconds() as f64 / 1000.0)
                .unwrap_or(0.0);
            eprint!(
                "{}",
                progress_line(j.status, progress.as_ref(), elapsed, estimate)
            );
            let _ = std::io::stderr().flush();
        }
        if j.status.is_terminal() {
            if show {
                eprintln!();
            }
            return Ok(j);
        }
        if start.elapsed() > timeout {
            if show {
                eprintln!();
            }
            bail!(
                "job {} still {} after {:?}; it keeps running — check it with `jobsched job {}`",
                j.id,
                j.status,
                timeout,
                j.id
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// The `--wait` line: the progress the job reported when it reported any, else the time it
/// has run against its estimate.
fn progress_line(
    status: JobStatus,
    progress: Option<&jobsched_client::Progress>,
    elapsed: f64,
    estimate: f64,
) -> String {
    let (frac, detail) = match progress {
        Some(p) => (
            if status == JobStatus::Completed {
                1.0
            } else {
                p.fraction.clamp(0.0, 1.0)
            },
            format!(
                "{:>5.1}% {}",
                p.fraction.clamp(0.0, 1.0) * 100.0,
                p.message.as_deref().unwrap_or("")
            ),
        ),
        None => (
            if status.is_terminal() {
                1.0
            } else {
                (elapsed / estimate).min(0.99)
            },
            format!("{:>6.1}s / ~{:.1}s", elapsed.max(0.0), estimate),
        ),
    };
    let filled = ((frac * 30.0) as usize).min(30);
    let mut detail = detail;
    if detail.chars().count() > 60 {
        detail = detail.chars().take(59).collect::<String>() + "…";
    }
    format!(
        "\r[{}{}] {:<9} {:<60}",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        status.as_str(),
        detail
    )
}

/// `jobsched job-types`.
pub async fn job_types(conn: &Conn) -> Result<()> {
    let types = client(conn)?.job_types().await?;
    if conn.json {
        return print_json(&types);
    }
    println!("{:<24} {:>8}  workers", "job type", "pending");
    for t in &types {
        let workers: Vec<&str> = t["workers"]
            .as_array()
            .map(|w| w.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "{:<24} {:>8}  {}",
            t["name"].as_str().unwrap_or("?"),
            t["pending"].as_i64().unwrap_or(0),
            if workers.is_empty() {
                "(none live: its jobs wait)".to_string()
            } else {
                workers.join(", ")
            }
        );
    }
    Ok(())
}

/// `jobsched logs ID`.
pub async fn logs(conn: &Conn, id: uuid::Uuid, attempt: Option<u32>) -> Result<()> {
    let tries = client(conn)?.logs(id, attempt).await?;
    if conn.json {
        return print_json(&tries);
    }
    if tries.is_empty() {
        println!("job {id} has no log lines (yet)");
    }
    for t in &tries {
        println!(
            "--- try {}{}",
            t.attempt,
            if t.dropped > 0 {
                format!(" ({} older lines not kept)", t.dropped)
            } else {
                String::new()
            }
        );
        for l in &t.lines {
            println!(
                "{} {:<5} {}",
                l.at.format("%H:%M:%S%.3f"),
                l.level,
                l.message
            );
        }
    }
    Ok(())
}

/// `jobsched jobs`.
pub async fn jobs(conn: &Conn, args: JobsArgs) -> Result<()> {
    let c = client(conn)?;
    let status = args
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()?;
    let page = c
        .list(&ListQuery {
            status,
            job_type: args.job_type,
            queue: args.queue,
            page: Some(args.page),
            page_size: Some(args.page_size),
            include: None,
        })
        .await?;
    if conn.json {
        return print_json(&page);
    }
    println!(
        "{:<36}  {:<10} {:<11} {:<3} {:<24} error",
        "id", "status", "type", "pri", "name"
    );
    for j in &page.jobs {
        println!("{}", job_row(j));
    }
    println!(
        "page {} of {} jobs ({} per page)",
        page.page, page.total, page.page_size
    );
    Ok(())
}

/// `jobsched job ID`.
pub async fn job(conn: &Conn, id: uuid::Uuid) -> Result<()> {
    let j = client(conn)?.get(id).await?;
    if conn.json {
        return print_json(&j);
    }
    let v = serde_json::to_value(&j)?;
    if let Value::Object(m) = v {
        for (k, v) in m {
            if !v.is_null() {
                println!("{k:<20} {v}");
            }
        }
    }
    Ok(())
}

/// `jobsched cancel ID`.
pub async fn cancel(conn: &Conn, id: uuid::Uuid) -> Result<()> {
    client(conn)?.cancel(id).await?;
    if !conn.json {
        println!("cancelled {id}");
    }
    Ok(())
}

/// `jobsched stats`.
pub async fn stats(conn: &Conn) -> Result<()> {
    let s = client(conn)?.stats().await?;
    if conn.json {
        return print_json(&s);
    }
    println!("total      {}", s.total_jobs);
    for (k, v) in [
        ("pending", s.pending),
        ("  delayed", s.delayed),
        ("scheduled", s.scheduled),
        ("running", s.running),
        ("completed", s.completed),
        ("failed", s.failed),
        ("cancelled", s.cancelled),
    ] {
        println!("{k:<10} {v}");
    }
    match s.avg_execution_time_ms {
        Some(ms) => println!("avg run    {ms:.1} ms"),
        None => println!("avg run    -"),
    }
    Ok(())
}

/// `jobsched policy [NAME]`.
pub async fn policy(
    conn: &Conn,
    name: Option<String>,
    quantum: Option<f64>,
    paused: Option<bool>,
    release_ownership: bool,
) -> Result<()> {
    let c = client(conn)?;
    let status = match name {
        _ if release_ownership => c.release_policy_owner().await?,
        Some(n) => {
            let kind: PolicyKind = n.parse()?;
            c.set_policy(&PolicyUpdate {
                policy: kind,
                quantum_seconds: quantum,
                paused,
            })
            .await?
        }
        None => c.status().await?,
    };
    if conn.json {
        return print_json(&status);
    }
    println!("policy       {}", status.current_policy);
    println!("quantum      {} s", status.quantum_seconds);
    println!("paused       {}", status.paused);
    println!(
        "managed by   {}",
        status.managed_by.as_deref().unwrap_or("REST API")
    );
    println!("queue depth  {}", status.queue_depth);
    println!("dead letters {}", status.dead_letter_count);
    println!(
        "workers      {} ({} of {} slots free)",
        status.workers, status.free_slots, status.total_slots
    );
    Ok(())
}

/// `jobsched dlq …`.
pub async fn dlq(conn: &Conn, cmd: DlqCommand) -> Result<()> {
    let c = client(conn)?;
    match cmd {
        DlqCommand::List => {
            let entries = c.dead_letters().await?;
            if conn.json {
                return print_json(&entries);
            }
            for e in &entries {
                println!(
                    "{}  {:<11} retries={} {:<24} {}",
                    e.job_id,
                    e.job_type,
                    e.retry_count,
                    truncate(&e.name, 24),
                    e.error.as_deref().unwrap_or("")
                );
            }
            println!("{} dead letter(s)", entries.len());
        }
        DlqCommand::Retry { id } => {
            let j = c.retry_dead_letter(id).await?;
            if conn.json {
                return print_json(&j);
            }
            println!("re-queued {} ({})", j.id, j.status);
        }
        DlqCommand::Purge => {
            let n = c.purge_dead_letters().await?;
            if conn.json {
                return print_json(&serde_json::json!({ "purged": n }));
            }
            println!("purged {n} dead letter(s)");
        }
    }
    Ok(())
}

/// `jobsched schedules …`.
pub async fn schedules(conn: &Conn, cmd: ScheduleCommand) -> Result<()> {
    let c = client(conn)?;
    let row = |s: &Value| {
        format!(
            "{:<24} {:<16} {:<16} next {}{}",
            truncate(s["name"].as_str().unwrap_or(""), 24),
            s["cron"].as_str().unwrap_or(""),
            s["timezone"].as_str().unwrap_or(""),
            s["next_fire_at"].as_str().unwrap_or("-"),
            paused_mark(s)
        )
    };
    match cmd {
        ScheduleCommand::List => {
            let all = c.schedules().await?;
            print_rows(conn, &all, row)?;
            if !conn.json {
                println!("{} schedule(s)", all.len());
            }
        }
        ScheduleCommand::Show { name } => print_json(&c.schedule(&name).await?)?,
        ScheduleCommand::Put {
            name,
            cron,
            timezone,
            job,
            overlap,
            paused,
            no_catch_up,
        } => {
            let job: Value = serde_json::from_str(&job).context(
                "--job is not valid JSON; give a POST /jobs/ body, e.g.                  '{\"name\": \"report\", \"job_type\": \"sleep\", \"payload\": {\"duration\": 1}}'",
            )?;
            let mut body = serde_json::json!({
                "cron": cron, "job": job, "paused": paused, "catch_up": !no_catch_up,
            });
            if let Some(tz) = timezone {
                body["timezone"] = Value::String(tz);
            }
            if let Some(o) = overlap {
                body["overlap"] = Value::String(o);
            }
            let s = c.put_schedule(&name, &body).await?;
            if conn.json {
                return print_json(&s);
            }
            println!("{}", row(&s));
        }
        ScheduleCommand::Delete { name } => {
            c.delete_schedule(&name).await?;
            if !conn.json {
                println!("deleted schedule {name}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_fields_parse_to_json() {
        assert_eq!(
            parse_field("duration=3").unwrap(),
            ("duration".into(), serde_json::json!(3))
        );
        assert_eq!(parse_field("p=0.5").unwrap().1, serde_json::json!(0.5));
        assert_eq!(
            parse_field("file_path=a.txt").unwrap().1,
            serde_json::json!("a.txt")
        );
        assert_eq!(parse_field("x=true").unwrap().1, serde_json::json!(true));
        assert!(parse_field("novalue").is_err());
    }

    #[test]
    fn the_wait_line_draws_reported_progress_else_time_against_the_estimate() {
        let p = jobsched_client::Progress {
            fraction: 0.5,
            message: Some("3 of 6 files".into()),
            attempt: 1,
            updated_at: chrono::Utc::now(),
        };
        let line = progress_line(JobStatus::Running, Some(&p), 1.0, 10.0);
        assert!(
            line.contains(&format!("[{}{}]", "#".repeat(15), "-".repeat(15))),
            "{line}"
        );
        assert!(line.contains("50.0% 3 of 6 files"), "{line}");
        let line = progress_line(JobStatus::Running, None, 2.5, 10.0);
        assert!(
            line.contains(&format!("[{}{}]", "#".repeat(7), "-".repeat(23))),
            "{line}"
        );
        assert!(line.contains("2.5s / ~10.0s"), "{line}");
        let line = progress_line(JobStatus::Completed, Some(&p), 1.0, 10.0);
        assert!(line.contains(&"#".repeat(30)), "{line}");
    }
}
