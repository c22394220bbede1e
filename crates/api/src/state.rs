//! What every request handler shares.

use jobsched_core::ports::{Clock, Store, Transport};
use jobsched_jobs::{DataDir, Registry};
use std::fmt;
use std::sync::Arc;

/// Default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// HTTP-level settings.
#[derive(Clone)]
pub struct ApiConfig {
    /// When set, every route except the probes and the docs needs `Authorization: Bearer <it>`.
    pub api_token: Option<String>,
    /// When set, changing the policy and retrying or purging dead letters need this token.
    pub admin_token: Option<String>,
    /// Largest accepted request body in bytes (larger → 413).
    pub body_limit: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_token: None,
            admin_token: None,
            body_limit: DEFAULT_BODY_LIMIT,
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
    /// Known job types and their payload validation.
    pub registry: Registry,
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
