//! Job types as workers register them: the catalog the API checks submissions against.
//!
//! A worker registers each type it serves at start (durably: name, payload schema, whether it
//! is preemptible, its default timeout) and reports the names it serves with its liveness (in
//! the transport, rebuilt by its next heartbeat). A type stays in the catalog when its workers
//! are gone: its jobs are kept PENDING and counted as unserved until a worker serves it again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest accepted job type name, bytes.
pub const MAX_TYPE_NAME: usize = 64;

/// One registered job type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTypeInfo {
    /// The `job_type` it serves.
    pub name: String,
    /// The payload's JSON Schema (draft 7); `true` accepts any payload.
    pub schema: Value,
    /// Whether a run can yield at a Round Robin slice's end and resume from a checkpoint.
    pub preemptible: bool,
    /// The run time limit of a job that sets no `timeout_seconds`, seconds.
    pub default_timeout_seconds: f64,
    /// The worker that registered this version.
    pub registered_by: String,
    /// When it was registered.
    pub updated_at: DateTime<Utc>,
}

/// Whether `name` can be a job type name: 1 to [`MAX_TYPE_NAME`] bytes of ASCII letters,
/// digits, `_`, `-`, `.` and `/`, starting with a letter or digit. Else what is wrong.
pub fn check_type_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    if name.is_empty() || name.len() > MAX_TYPE_NAME {
        return Err(format!(
            "must be 1 to {MAX_TYPE_NAME} bytes long, got {}",
            name.len()
        ));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(
            "may hold only ASCII letters, digits, `_`, `-`, `.` and `/`, and must start with a \
             letter or digit"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_type_name("sleep").is_ok());
        assert!(check_type_name("billing/invoice.v2").is_ok());
        assert!(check_type_name("").is_err());
        assert!(check_type_name("-x").is_err());
        assert!(check_type_name("a b").is_err());
        assert!(check_type_name(&"a".repeat(65)).is_err());
    }
}
