//! A job submission read from its JSON: every field checked and named, the idempotency
//! fingerprint, the payload size limit.

use super::*;

/// Parse and validate one submission at dotted `prefix`: JSON types, the generic fields
/// ([`NewJob::build`]) and the job type's payload (the registry). Every problem goes to
/// `issues`; `None` when there was any.
pub(crate) fn parse_submission(
    value: &Value,
    prefix: &str,
    state: &AppState,
    issues: &mut Vec<FieldIssue>,
) -> Option<NewJob> {
    let before = issues.len();
    let mut fields = Fields::of(value, prefix, issues)?;
    let name = fields.req_str("name");
    let job_type = fields.req_str("job_type");
    let priority = fields.opt_int("priority");
    let estimated_duration = fields.opt_f64("estimated_duration");
    let payload = fields.opt_object("payload");
    let max_retries = fields.opt_int("max_retries");
    let timeout = fields.opt_f64("timeout_seconds");
    let run_at = fields.opt_time("run_at");
    let delay = fields.opt_f64("delay_seconds");
    let unique_key = fields.opt_str("unique_key");
    let backoff = fields.opt_object("retry_backoff");
    let queue = fields.opt_str("queue");
    drop(fields);
    if let Ok(Some(q)) = &queue
        && let Err(message) = jobsched_core::queue::check_queue_name(q)
    {
        issues.push(FieldIssue::body(
            &format!("{prefix}queue"),
            message,
            "value_error",
        ));
    }
    let backoff = match backoff {
        Ok(Some(b)) => retry_backoff(&b, &format!("{prefix}retry_backoff."), issues),
        _ => None,
    };
    if let Ok(Some(k)) = &unique_key
        && let Err(message) = jobsched_core::check_unique_key(k)
    {
        issues.push(FieldIssue::body(
            &format!("{prefix}unique_key"),
            message,
            "value_error",
        ));
    }
    let run_at = first_run(run_at, delay, prefix, state.clock.now(), issues);
    if let Ok(Some(t)) = timeout
        && let Err(message) = jobsched_core::check_timeout(t)
    {
        issues.push(FieldIssue::body(
            &format!("{prefix}timeout_seconds"),
            message,
            "value_error",
        ));
    }

    // Generic checks on whatever parsed; fields with a type problem are not re-reported.
    let create = JobCreate {
        name: name.clone().unwrap_or_default(),
        job_type: job_type.clone().unwrap_or_default(),
        priority: priority.unwrap_or(None),
        estimated_duration: estimated_duration.unwrap_or(None),
        payload: payload.clone().unwrap_or(None),
        max_retries: max_retries.unwrap_or(None),
        timeout_seconds: timeout.unwrap_or(None),
        run_at: None,
        delay_seconds: None,
        unique_key: None,
        retry_backoff: None,
        queue: None,
    };
    let built = NewJob::build(JobSpec {
        name: create.name.clone(),
        job_type: create.job_type.clone(),
        priority: create.priority,
        estimated_duration: create.estimated_duration,
        payload: create.payload.clone(),
        max_retries: create.max_retries,
    });
    let built = match built {
        Ok(mut job) => {
            job.timeout_seconds = timeout.ok().flatten();
            job.run_at = run_at;
            job.retry_backoff = backoff;
            if let Ok(Some(q)) = queue {
                job.queue = q;
            }
            job.unique_key = unique_key.ok().flatten().map(|key| UniqueKey {
                key,
                fingerprint: fingerprint(value),
            });
            Some(job)
        }
        Err(errors) => {
            for (field, message) in errors {
                if field == "name" && name.is_none() {
                    continue;
                }
                issues.push(FieldIssue::body(
                    &format!("{prefix}{field}"),
                    message,
                    "value_error",
                ));
            }
            None
        }
    };

    if let (Some(job_type), Ok(payload)) = (&job_type, &payload) {
        let payload = payload.clone().unwrap_or_else(|| Value::Object(Map::new()));
        for e in state
            .catalog
            .validate(&state.registry, job_type, &payload, &state.data_dir)
        {
            let field = if e.field == "job_type"
                || e.field == "payload"
                || e.field.starts_with("payload.")
                || e.field.starts_with("payload[")
            {
                e.field.clone()
            } else {
                format!("payload.{}", e.field)
            };
            issues.push(FieldIssue::body(
                &format!("{prefix}{field}"),
                e.message.clone(),
                "value_error",
            ));
        }
    }

    if issues.len() > before { None } else { built }
}

/// The idempotency fingerprint of a submission: SHA-256 (hex) of its JSON with object keys
/// sorted and its own `unique_key` left out, so the same request always gives the same digest.
pub(crate) fn fingerprint(submission: &Value) -> String {
    use sha2::Digest;
    fn canonical(v: &Value, top: bool, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map
                    .keys()
                    .filter(|k| !(top && k.as_str() == "unique_key"))
                    .collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], false, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, false, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut text = String::new();
    canonical(submission, true, &mut text);
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A submission's `retry_backoff` object at dotted `prefix`: both numbers, in range.
pub(super) fn retry_backoff(
    value: &Value,
    prefix: &str,
    issues: &mut Vec<FieldIssue>,
) -> Option<jobsched_core::RetryBackoff> {
    let mut fields = Fields::of(value, prefix, issues)?;
    let base = fields.opt_f64("base_seconds");
    let cap = fields.opt_f64("cap_seconds");
    drop(fields);
    let mut required = |name: &str, v: Result<Option<f64>, ()>| match v {
        Ok(Some(v)) => Some(v),
        Ok(None) => {
            issues.push(FieldIssue::body(
                &format!("{prefix}{name}"),
                "field required",
                "missing",
            ));
            None
        }
        Err(()) => None,
    };
    let (base, cap) = (required("base_seconds", base), required("cap_seconds", cap));
    let backoff = jobsched_core::RetryBackoff {
        base_seconds: base?,
        cap_seconds: cap?,
    };
    match backoff.check() {
        Ok(()) => Some(backoff),
        Err((field, message)) => {
            issues.push(FieldIssue::body(
                &format!("{prefix}{field}"),
                message,
                "value_error",
            ));
            None
        }
    }
}

/// The first-run time a submission asks for: `run_at`, or `now + delay_seconds`; not both.
/// Problems go to `issues`.
pub(super) fn first_run(
    run_at: Result<Option<DateTime<Utc>>, ()>,
    delay: Result<Option<f64>, ()>,
    prefix: &str,
    now: DateTime<Utc>,
    issues: &mut Vec<FieldIssue>,
) -> Option<DateTime<Utc>> {
    let mut problem = |field: &str, message: String| {
        issues.push(FieldIssue::body(
            &format!("{prefix}{field}"),
            message,
            "value_error",
        ));
    };
    match (run_at, delay) {
        (Ok(Some(_)), Ok(Some(_))) => {
            problem(
                "delay_seconds",
                "give either run_at or delay_seconds, not both".into(),
            );
            None
        }
        (Ok(Some(at)), _) => match jobsched_core::check_run_at(at, now) {
            Ok(()) => Some(at),
            Err(message) => {
                problem("run_at", message);
                None
            }
        },
        (_, Ok(Some(seconds))) => match jobsched_core::check_delay(seconds) {
            // Within a year: whole microseconds fit easily.
            Ok(()) => Some(now + chrono::Duration::microseconds((seconds * 1e6).round() as i64)),
            Err(message) => {
                problem("delay_seconds", message);
                None
            }
        },
        _ => None,
    }
}

/// Counts the bytes written to it.
pub(super) struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Refuse a submission whose `payload` serializes to more than `limit` bytes (413 naming the
/// field and the limit).
pub(crate) fn check_payload_size(
    value: &Value,
    prefix: &str,
    limit: usize,
) -> Result<(), ApiError> {
    let Some(payload) = value.get("payload") else {
        return Ok(());
    };
    let mut count = ByteCount(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, payload);
    if count.0 > limit {
        return Err(ApiError::FieldTooLarge {
            field: format!("{prefix}payload"),
            size: count.0,
            limit,
        });
    }
    Ok(())
}
