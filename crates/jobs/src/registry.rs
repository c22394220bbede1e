//! The job-type registry: job type name → handler.

use crate::{DataDir, FieldError, JobHandler, SleepJob, ThumbnailJob, Typed, WordCountJob};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Registered job types. Cheap to clone (handlers are shared).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<&'static str, Arc<dyn JobHandler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The built-in job types: `sleep`, `word_count`, `thumbnail`, and `http` (configured by
    /// `JOBSCHED_HTTP_ALLOW` and `JOBSCHED_SECRETS_DIR`; see [`crate::http`]).
    pub fn builtin() -> Registry {
        let mut r = Registry::new();
        r.register(Arc::new(Typed::new(SleepJob)));
        r.register(Arc::new(Typed::new(WordCountJob)));
        r.register(Arc::new(Typed::new(ThumbnailJob::default())));
        r.register(Arc::new(Typed::new(crate::http::HttpJob::from_env())));
        r
    }

    /// These types plus `probe` (a fault-test job type, see [`crate::probe`]) when the
    /// environment variable [`crate::probe::PROBE_LOG_ENV`] names its log file.
    pub fn with_probe_from_env(mut self) -> Registry {
        if let Some(log) = std::env::var_os(crate::probe::PROBE_LOG_ENV).filter(|v| !v.is_empty()) {
            self.register(Arc::new(crate::ProbeJob::new(log.into())));
        }
        self
    }

    /// Add (or replace) a handler under its [`JobHandler::name`].
    pub fn register(&mut self, h: Arc<dyn JobHandler>) {
        self.handlers.insert(h.name(), h);
    }

    /// The handler for `job_type`.
    pub fn get(&self, job_type: &str) -> Option<Arc<dyn JobHandler>> {
        self.handlers.get(job_type).cloned()
    }

    /// Registered type names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }

    /// Every problem with a submission's type and payload. An unknown type gives one error on
    /// `job_type` listing the valid types.
    pub fn validate(&self, job_type: &str, payload: &Value, data_dir: &DataDir) -> Vec<FieldError> {
        match self.handlers.get(job_type) {
            Some(h) => h.validate(payload, data_dir),
            None => vec![FieldError::new(
                "job_type",
                format!(
                    "unknown job type `{}`; valid types are: {}",
                    job_type.escape_debug(),
                    self.names().join(", ")
                ),
            )],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::temp_data_dir as dd;

    #[test]
    fn builtin_names_sorted() {
        let r = Registry::builtin();
        assert_eq!(r.names(), ["http", "sleep", "thumbnail", "word_count"]);
        assert!(r.get("sleep").unwrap().preemptible());
        assert!(!r.get("word_count").unwrap().preemptible());
        assert!(!r.get("thumbnail").unwrap().preemptible());
        assert!(r.get("nope").is_none());
        let secs = |t: &str| r.get(t).unwrap().default_timeout().as_secs();
        assert_eq!(secs("sleep"), 86_460);
        assert_eq!(secs("word_count"), 600);
        assert_eq!(secs("thumbnail"), 300);
        for t in r.names() {
            assert!(secs(t) <= crate::MAX_TIMEOUT_SECONDS, "{t}");
        }
        let cloned = r.clone();
        assert_eq!(cloned.names(), r.names());
    }

    #[test]
    fn builtin_schemas_agree_with_their_checks() {
        let (_t, d) = dd();
        let r = Registry::builtin();
        let samples = [
            (
                "sleep",
                json!({"duration": 1.5, "fail_probability": 0.5}),
                true,
            ),
            ("sleep", json!({"duration": -1}), false),
            ("word_count", json!({"file_path": "a.txt"}), true),
            ("word_count", json!({}), false),
            (
                "thumbnail",
                json!({"input_path": "a.jpg", "width": 64, "height": 64}),
                true,
            ),
            (
                "thumbnail",
                json!({"input_path": "a.jpg", "width": 0, "height": 64}),
                false,
            ),
        ];
        for (t, payload, ok) in samples {
            let schema = r.get(t).unwrap().schema().unwrap();
            let by_schema = crate::schema::check(&schema, &payload).is_empty();
            let by_check = r.validate(t, &payload, &d).is_empty();
            assert_eq!((by_schema, by_check), (ok, ok), "{t} {payload}");
        }
    }

    #[test]
    fn unknown_type_lists_valid_types() {
        let (_t, d) = dd();
        let errs = Registry::builtin().validate("email", &json!({}), &d);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "job_type");
        assert!(
            errs[0].message.contains("sleep, thumbnail, word_count"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn validate_reports_every_bad_field() {
        let (_t, d) = dd();
        let r = Registry::builtin();
        let fields = |t: &str, p: Value| -> Vec<String> {
            r.validate(t, &p, &d).into_iter().map(|e| e.field).collect()
        };
        assert!(fields("sleep", json!({"duration": 1.5, "extra": true})).is_empty());
        assert_eq!(
            fields("sleep", json!({"duration": -1, "fail_probability": 2})),
            ["payload.duration", "payload.fail_probability"]
        );
        assert_eq!(fields("sleep", json!({})), ["payload.duration"]);
        assert_eq!(fields("sleep", json!([1])), ["payload"]);
        assert_eq!(
            fields("word_count", json!({"file_path": "../x"})),
            ["payload.file_path"]
        );
        assert_eq!(fields("word_count", json!({})), ["payload.file_path"]);
        assert!(fields("word_count", json!({"file_path": "a.txt"})).is_empty());
        assert_eq!(
            fields(
                "thumbnail",
                json!({"input_path": "/etc/passwd", "width": 0, "height": 1.5,
                       "output_path": "out.gif"})
            ),
            [
                "payload.input_path",
                "payload.width",
                "payload.height",
                "payload.output_path"
            ]
        );
        assert!(
            fields(
                "thumbnail",
                json!({"input_path": "a.jpg", "width": 4096, "height": 1})
            )
            .is_empty()
        );
    }

    #[test]
    fn register_adds_a_type() {
        #[derive(Debug)]
        struct Echo;
        impl JobHandler for Echo {
            fn name(&self) -> &'static str {
                "echo"
            }
            fn preemptible(&self) -> bool {
                false
            }
            fn default_timeout(&self) -> std::time::Duration {
                std::time::Duration::from_secs(1)
            }
            fn validate(&self, _: &Value, _: &DataDir) -> Vec<FieldError> {
                Vec::new()
            }
            fn run(
                &self,
                payload: &Value,
                _: &crate::JobContext,
            ) -> Result<crate::RunOutput, crate::JobError> {
                Ok(crate::RunOutput::Done(payload.clone()))
            }
        }
        let mut r = Registry::builtin();
        r.register(Arc::new(Echo));
        assert_eq!(
            r.names(),
            ["echo", "http", "sleep", "thumbnail", "word_count"]
        );
        let (_t, d) = dd();
        let out = r
            .get("echo")
            .unwrap()
            .run(&json!({"a": 1}), &crate::JobContext::new(d))
            .unwrap();
        assert_eq!(out, crate::RunOutput::Done(json!({"a": 1})));
    }
}
