//! The `JobSchedule` custom resource (`jobsched.io/v1alpha1`): a periodic job as a Kubernetes
//! object, reconciled into the scheduler's schedules (what `POST /schedules` creates).

use crate::crd::Condition;
use jobsched_core::JobSpec;
use jobsched_core::NewJob;
use jobsched_core::schedule::{Cron, Overlap, Schedule, check_schedule_name};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use schemars::r#gen::SchemaGenerator;
use schemars::schema::{InstanceType, Schema, SchemaObject};
use serde::{Deserialize, Serialize};

/// A periodic job: a cron expression in a time zone, and the job each fire enqueues.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "jobsched.io",
    version = "v1alpha1",
    kind = "JobSchedule",
    namespaced,
    shortname = "jobsch",
    status = "JobScheduleStatus",
    derive = "PartialEq",
    doc = "JobSchedule is a periodic job of a jobsched installation: each fire time of its cron expression enqueues one job from its template. The controller keeps the scheduler's schedule of the same name in step with it; deleting the object deletes the schedule.",
    printcolumn = r#"{"name":"Cron","type":"string","description":"Cron expression","jsonPath":".spec.cron"}"#,
    printcolumn = r#"{"name":"Next fire","type":"string","description":"Next fire time","jsonPath":".status.nextFireTime"}"#,
    printcolumn = r#"{"name":"Last job","type":"string","description":"Job of the last fire","jsonPath":".status.lastJobId","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","description":"Whether the schedule is in effect","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleSpec {
    /// Cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 to 7 with
    /// seconds first.
    pub cron: String,
    /// IANA time zone the expression is read in (default UTC).
    #[serde(default = "utc")]
    pub timezone: String,
    /// The job each fire enqueues.
    pub job: JobTemplate,
    /// While the last fire's job has not ended: `skip` (default) enqueues nothing, `allow`
    /// enqueues anyway.
    #[serde(default = "skip")]
    #[schemars(schema_with = "overlap_schema")]
    pub overlap: String,
    /// When true, nothing fires.
    #[serde(default)]
    pub paused: bool,
    /// A fire time missed while no scheduler leader ran is enqueued once on recovery (default
    /// true), or skipped.
    #[serde(default = "yes")]
    pub catch_up: bool,
}

/// A job template: the fields of `POST /jobs/` that a fire does not set itself.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplate {
    /// Job name (default: the JobSchedule's name).
    pub name: Option<String>,
    /// Job type (`sleep`, `word_count`, `thumbnail`, ...).
    pub job_type: String,
    /// 1 (highest) to 10 (default 5).
    pub priority: Option<i64>,
    /// Estimated run time in seconds (the SJF key; default 1).
    pub estimated_duration: Option<f64>,
    /// The job type's input (an object; checked by the job type when the job runs).
    #[serde(default)]
    #[schemars(schema_with = "payload_schema")]
    pub payload: Option<serde_json::Value>,
    /// Retry budget, 0 to 10 (default 3).
    pub max_retries: Option<i64>,
    /// Per-run timeout in seconds (default: the job type's).
    pub timeout_seconds: Option<f64>,
    /// The named queue (default `default`).
    pub queue: Option<String>,
}

/// Observed state, written by the controller.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleStatus {
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,
    /// The next fire time (RFC 3339; unset: none).
    pub next_fire_time: Option<String>,
    /// The last fire time handled, enqueued or skipped (RFC 3339).
    pub last_fire_time: Option<String>,
    /// The job the last enqueuing fire created.
    pub last_job_id: Option<String>,
    /// Standard conditions; `Ready` tells whether the schedule is in effect.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The CustomResourceDefinition of [`JobSchedule`] as YAML (what `jobsched crd jobschedules`
/// prints and `deploy/crds/jobschedules.yaml` holds).
pub fn job_schedule_crd_yaml() -> String {
    let mut crd = serde_json::to_value(JobSchedule::crd())
        .expect("a CustomResourceDefinition always serializes to JSON");
    for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
        let root = &mut version["schema"]["openAPIV3Schema"]["properties"];
        crate::crd::shape_conditions(&mut root["status"]["properties"]["conditions"]);
    }
    let body =
        serde_yaml::to_string(&crd).expect("a CustomResourceDefinition always serializes to YAML");
    format!(
        "# Generated by `jobsched crd jobschedules` from crates/controller/src/schedule_crd.rs; do not edit by hand.\n---\n{body}"
    )
}

fn utc() -> String {
    "UTC".into()
}

fn skip() -> String {
    "skip".into()
}

fn yes() -> bool {
    true
}

fn overlap_schema(_: &mut SchemaGenerator) -> Schema {
    Schema::Object(SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        enum_values: Some(vec!["skip".into(), "allow".into()]),
        ..Default::default()
    })
}

fn payload_schema(_: &mut SchemaGenerator) -> Schema {
    let mut schema = SchemaObject {
        instance_type: Some(InstanceType::Object.into()),
        ..Default::default()
    };
    schema.extensions.insert(
        "x-kubernetes-preserve-unknown-fields".into(),
        serde_json::Value::Bool(true),
    );
    Schema::Object(schema)
}

impl JobScheduleSpec {
    /// The schedule this spec asks for, named `name`, owned by `managed_by`
    /// (`namespace/name`), its next fire after `now`. The error names the field and the rule.
    pub fn to_schedule(
        &self,
        name: &str,
        managed_by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Schedule, String> {
        check_schedule_name(name).map_err(|e| format!("metadata.name {e}"))?;
        let when = Cron::parse(&self.cron, &self.timezone)
            .map_err(|(field, message)| format!("spec.{field}: {message}"))?;
        let overlap = match self.overlap.as_str() {
            "skip" => Overlap::Skip,
            "allow" => Overlap::Allow,
            other => return Err(format!("spec.overlap must be skip or allow, got {other:?}")),
        };
        let t = &self.job;
        let mut job = NewJob::build(JobSpec {
            name: t.name.as_deref().unwrap_or(name).into(),
            job_type: t.job_type.clone(),
            priority: t.priority,
            estimated_duration: t.estimated_duration,
            payload: t.payload.clone(),
            max_retries: t.max_retries,
        })
        .map_err(|errors| {
            errors
                .into_iter()
                .map(|(field, message)| format!("spec.job.{field}: {message}"))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        if let Some(s) = t.timeout_seconds {
            jobsched_core::check_timeout(s).map_err(|m| format!("spec.job.timeoutSeconds: {m}"))?;
            job.timeout_seconds = Some(s);
        }
        if let Some(q) = &t.queue {
            jobsched_core::queue::check_queue_name(q).map_err(|m| format!("spec.job.queue {m}"))?;
            job.queue = q.clone();
        }
        // Whole microseconds, as the stores keep them.
        let now = chrono::SubsecRound::trunc_subsecs(now, 6);
        Ok(Schedule {
            name: name.to_string(),
            next_fire_at: when.next_after(now),
            when,
            job,
            overlap,
            paused: self.paused,
            catch_up: self.catch_up,
            last_fire_at: None,
            last_job_id: None,
            created_at: now,
            updated_at: now,
            managed_by: Some(managed_by.to_string()),
        })
    }
}

/// Whether two schedules ask for the same thing (what a user sets, and the owner); the fire
/// state and the times are not compared.
pub fn same_schedule(a: &Schedule, b: &Schedule) -> bool {
    // A template's id is a placeholder (each fire makes a fresh one).
    let b_job = NewJob {
        id: a.job.id,
        ..b.job.clone()
    };
    a.when == b.when
        && a.job == b_job
        && a.overlap == b.overlap
        && a.paused == b.paused
        && a.catch_up == b.catch_up
        && a.managed_by == b.managed_by
}
