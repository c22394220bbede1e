//! The job types the API accepts: the ones it was built with (checked by their own code) and
//! the ones workers registered in the store (checked against their payload schemas).
//!
//! The registered ones are read from the store when a submission names a type the API does
//! not know yet, or when the copy here is older than [`CATALOG_TTL`]; a type a worker just
//! registered is accepted at once.

use jobsched_core::job_type::JobTypeInfo;
use jobsched_core::ports::Store;
use jobsched_jobs::{DataDir, FieldError, Registry};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How long the copy of the registered types is used before it is read again.
pub const CATALOG_TTL: Duration = Duration::from_secs(5);

/// The registered job types, as last read from the store.
#[derive(Debug, Default)]
pub struct Catalog {
    copy: RwLock<Copy>,
}

#[derive(Debug, Default)]
struct Copy {
    types: BTreeMap<String, JobTypeInfo>,
    read_at: Option<Instant>,
}

impl Catalog {
    /// Read the registered types again if one of `names` is neither built in nor known here,
    /// or the copy is older than [`CATALOG_TTL`] and one of them is not built in.
    pub async fn refresh_for(
        &self,
        store: &dyn Store,
        builtin: &Registry,
        names: &[&str],
    ) -> jobsched_core::Result<()> {
        let foreign: Vec<&&str> = names.iter().filter(|n| builtin.get(n).is_none()).collect();
        if foreign.is_empty() {
            return Ok(());
        }
        let stale = match self.copy.read() {
            Ok(c) => {
                c.read_at.is_none_or(|t| t.elapsed() > CATALOG_TTL)
                    || foreign.iter().any(|n| !c.types.contains_key(**n))
            }
            Err(_) => true,
        };
        if stale {
            self.reload(store).await?;
        }
        Ok(())
    }

    /// Read the registered types from the store.
    pub async fn reload(&self, store: &dyn Store) -> jobsched_core::Result<Vec<JobTypeInfo>> {
        let types = store.job_types().await?;
        if let Ok(mut c) = self.copy.write() {
            c.types = types.iter().map(|t| (t.name.clone(), t.clone())).collect();
            c.read_at = Some(Instant::now());
        }
        Ok(types)
    }

    /// Every problem with a submission's type and payload: a built-in type's own checks, a
    /// registered type's schema, or one error on `job_type` listing the known types.
    pub fn validate(
        &self,
        builtin: &Registry,
        job_type: &str,
        payload: &Value,
        data_dir: &DataDir,
    ) -> Vec<FieldError> {
        if builtin.get(job_type).is_some() {
            return builtin.validate(job_type, payload, data_dir);
        }
        let schema = self
            .copy
            .read()
            .ok()
            .and_then(|c| c.types.get(job_type).map(|t| t.schema.clone()));
        match schema {
            Some(schema) => jobsched_jobs::schema::check(&schema, payload),
            None => vec![FieldError::new(
                "job_type",
                format!(
                    "unknown job type `{}`; known types are: {} (a worker that serves a type \
                     registers it when it starts; see GET /job-types)",
                    job_type.escape_debug(),
                    self.names(builtin).join(", ")
                ),
            )],
        }
    }

    /// Built-in and registered type names, sorted.
    pub fn names(&self, builtin: &Registry) -> Vec<String> {
        let mut names: Vec<String> = builtin.names().iter().map(|n| n.to_string()).collect();
        if let Ok(c) = self.copy.read() {
            names.extend(c.types.keys().cloned());
        }
        names.sort();
        names.dedup();
        names
    }
}

/// Make sure the registered job types a request body names are known to `state`'s catalog
/// (read from the store when not, or when the copy is old); the submission routes call it
/// before checking a body.
pub(crate) async fn known_types(
    state: &crate::AppState,
    body: &Value,
) -> Result<(), crate::ApiError> {
    state
        .catalog
        .refresh_for(state.store.as_ref(), &state.registry, &named_types(body))
        .await?;
    Ok(())
}

/// The `job_type` values a request body names: a submission's, a batch's items', a schedule's
/// template's.
pub fn named_types(body: &Value) -> Vec<&str> {
    fn take<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        if let Some(t) = v.get("job_type").and_then(Value::as_str) {
            out.push(t);
        }
    }
    let mut out = Vec::new();
    take(body, &mut out);
    if let Some(job) = body.get("job") {
        take(job, &mut out);
    }
    if let Some(items) = body.get("jobs").and_then(Value::as_array) {
        for item in items {
            take(item, &mut out);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
