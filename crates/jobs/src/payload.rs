//! Small helpers for reading payload fields and reporting every problem at once.

use crate::{DataDir, FieldError, JobError};
use serde_json::{Map, Value};

/// The payload as an object, or the one error saying it is not.
pub(crate) fn object(payload: &Value) -> Result<&Map<String, Value>, Vec<FieldError>> {
    payload
        .as_object()
        .ok_or_else(|| vec![FieldError::new("payload", "must be a JSON object")])
}

/// `payload.<key>` for messages.
pub(crate) fn field(key: &str) -> String {
    format!("payload.{key}")
}

/// A field that is absent or JSON `null`.
pub(crate) fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A required path string that passes the sandbox's submit-time check.
pub(crate) fn path(
    obj: &Map<String, Value>,
    key: &str,
    required: bool,
    data_dir: &DataDir,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match get(obj, key) {
        None => {
            if required {
                errors.push(FieldError::new(
                    field(key),
                    "is required: a file path inside the data dir (JOBSCHED_DATA_DIR)",
                ));
            }
            None
        }
        Some(Value::String(s)) => match data_dir.check(s) {
            Ok(()) => Some(s.clone()),
            Err(reason) => {
                errors.push(FieldError::new(
                    field(key),
                    format!(
                        "path `{}` refused: {reason}; paths must be inside the data dir \
                         (JOBSCHED_DATA_DIR)",
                        s.escape_debug()
                    ),
                ));
                None
            }
        },
        Some(other) => {
            errors.push(FieldError::new(
                field(key),
                format!("must be a string (a file path), got {}", kind(other)),
            ));
            None
        }
    }
}

/// Short name of a JSON value's type for messages ("a string", "an object", …): the one
/// wording of every "got …" in validation errors (jobs and the REST API).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Turn validation errors found at run time into the (fatal) run error.
pub(crate) fn invalid(errors: Vec<FieldError>) -> JobError {
    match errors.into_iter().next() {
        Some(first) => JobError::InvalidPayload {
            field: first.field,
            message: first.message,
        },
        None => JobError::Fatal("invalid payload".into()),
    }
}
