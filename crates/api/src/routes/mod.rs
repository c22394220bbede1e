//! Route handlers and the helpers they share.

pub mod health;
pub mod job_types;
pub mod jobs;
pub mod queues;
pub mod scheduler;
pub mod schedules;
pub mod ui;

use crate::error::{ApiError, FieldIssue, LocPart};
use crate::state::AppState;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use jobsched_core::Job;
use jobsched_core::ports::Event;

/// The query string as `(name, value)` pairs; undecodable → 422.
#[derive(Debug, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Query(pairs)) => Ok(QueryPairs(pairs)),
            Err(rejection) => Err(ApiError::Validation(vec![FieldIssue {
                loc: vec![LocPart::Key("query".into())],
                msg: format!("malformed query string: {}", rejection.body_text()),
                kind: "value_error".into(),
            }])),
        }
    }
}

impl QueryPairs {
    /// The last value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An optional integer parameter within `min..=max`.
    pub fn int(&self, name: &str, min: u32, max: u32) -> Result<Option<u32>, FieldIssue> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let bad = || {
            FieldIssue::query(
                name,
                format!("must be an integer from {min} to {max}, got `{raw}`"),
            )
        };
        let value: i64 = raw.trim().parse().map_err(|_| bad())?;
        if value < i64::from(min) || value > i64::from(max) {
            return Err(bad());
        }
        Ok(Some(value as u32))
    }
}

/// Tell the engine new PENDING jobs exist; `submitted` is the one just committed, if there is
/// exactly one (the engine can then decide without reading the queue). Sent before the reply,
/// so the engine hears of the job as early as possible. A transport failure is logged, not
/// returned: the job is durably stored and the engine's periodic poll will find it.
pub(crate) async fn publish_jobs_available(state: &AppState, submitted: Option<&Job>) {
    let event = submitted.map_or(Event::JobsAvailable, |job| Event::Submitted(job.pending()));
    let transport = state.transport.clone();
    // Postgres is the truth: the job is committed, so the reply never waits on Redis. The
    // announcement goes out beside it; if Redis is slow or gone the engine finds the job on its
    // next poll.
    tokio::spawn(async move {
        match tokio::time::timeout(ANNOUNCE_TIMEOUT, transport.publish(event)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                "could not announce the new job; the engine will find it on its next poll"
            ),
            Err(_) => tracing::warn!(
                "announcing the new job timed out; the engine will find it on its next poll"
            ),
        }
    });
}

/// Longest an announcement of new work may take before it is given up (the engine polls).
const ANNOUNCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
