//! What every request handler shares.

use jobsched_core::ports::{Clock, Store, Transport};
use jobsched_jobs::{DataDir, Registry};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default largest job payload (serialized JSON): 64 KiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;
/// Default most requests served at once (more → 503 at once, with `Retry-After`).
pub const DEFAULT_MAX_INFLIGHT: usize = 128;
/// Default bytes of request bodies held at once: 16 MiB.
pub const DEFAULT_BODY_BUDGET: usize = 16 * 1024 * 1024;
/// Default most open connections (more → a 503 and the connection closed).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// HTTP-level settings.
#[derive(Clone)]
pub struct ApiConfig {
    /// When set, every route except the probes and the docs needs `Authorization: Bearer <it>`.
    pub api_token: Option<String>,
    /// When set, changing the policy and retrying or purging dead letters need this token.
    pub admin_token: Option<String>,
    /// Largest accepted request body in bytes (larger → 413).
    pub body_limit: usize,
    /// Largest job payload in bytes, as serialized JSON (larger → 413 naming the field).
    pub max_payload: usize,
    /// Most requests handled at once; more are answered 503 with `Retry-After` at once.
    pub max_inflight: usize,
    /// Most open connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Bytes of request bodies held at once across all requests (more → 503 at once).
    pub body_budget: usize,
    /// Longest a client may take to send a request's headers (then the connection closes).
    pub header_timeout: Duration,
    /// Longest a client may take to send a request body (then 408).
    pub body_timeout: Duration,
    /// Longest a request may take from headers to response (then 408).
    pub request_timeout: Duration,
    /// After the shutdown signal, longest open connections get to finish (then they close).
    pub shutdown_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_token: None,
            admin_token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            body_budget: DEFAULT_BODY_BUDGET,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secrets themselves.
        f.debug_struct("ApiConfig")
            .field("api_token", &self.api_token.as_ref().map(|_| "<set>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("body_limit", &self.body_limit)
            .field("max_payload", &self.max_payload)
            .field("max_inflight", &self.max_inflight)
            .field("max_connections", &self.max_connections)
            .field("body_budget", &self.body_budget)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

/// The dependencies of the API: the store (truth), the transport (events, live runtime state),
/// the job registry (payload validation), the data dir, a clock and the HTTP settings.
#[derive(Clone)]
pub struct AppState {
    /// Job store (Postgres or SQLite).
    pub store: Arc<dyn Store>,
    /// Transport (Redis or in-memory).
    pub transport: Arc<dyn Transport>,
    /// The job types built into this API, with their own payload validation.
    pub registry: Registry,
    /// The job types workers registered (checked against their payload schemas).
    pub catalog: Arc<crate::catalog::Catalog>,
    /// Sandbox for file paths in payloads.
    pub data_dir: DataDir,
    /// Source of "now".
    pub clock: Arc<dyn Clock>,
    /// HTTP settings.
    pub config: ApiConfig,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("clock", &self.clock)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
