//! The crate's error type.

/// Errors of the transport adapters.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The Redis URL is malformed or uses an unsupported scheme.
    #[error(
        "invalid Redis URL `{url}`: {reason}; set JOBSCHED_REDIS_URL to redis://[:password@]host:port[/db]"
    )]
    InvalidUrl {
        /// The URL, with any password redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The key prefix is empty or contains whitespace.
    #[error(
        "invalid Redis key prefix `{prefix}`: {reason}; use a non-empty prefix without spaces such as `jobsched`"
    )]
    InvalidPrefix {
        /// The prefix given.
        prefix: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A Redis command failed (connection refused or lost, timeout, server error).
    #[error(
        "Redis at {url} failed during {op}: {source}; check that Redis is running and reachable and that JOBSCHED_REDIS_URL points to it"
    )]
    Redis {
        /// The URL, with any password redacted.
        url: String,
        /// The operation that failed.
        op: &'static str,
        /// The Redis client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A stored value is not the JSON this crate writes.
    #[error(
        "Redis key `{key}` holds invalid JSON: {source}; delete the key (it is rebuilt from Postgres) and check which program wrote it"
    )]
    Json {
        /// The key read or written.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

impl From<TransportError> for jobsched_core::Error {
    fn from(err: TransportError) -> Self {
        jobsched_core::Error::backend("redis", err)
    }
}

/// `url` with the userinfo (user and password) replaced by `***`, for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss@host/1?x=y"),
            "rediss://***@host/1?x=y"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("nonsense"), "nonsense");
    }

    #[test]
    fn maps_to_core_backend() {
        let err: jobsched_core::Error = TransportError::InvalidPrefix {
            prefix: String::new(),
            reason: "it is empty",
        }
        .into();
        assert!(matches!(
            err,
            jobsched_core::Error::Backend {
                component: "redis",
                ..
            }
        ));
        assert!(err.to_string().contains("prefix"));
    }
}
