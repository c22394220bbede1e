//! The crate's one error type.

/// Errors raised while connecting to, migrating or querying a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL has a scheme this crate does not support.
    #[error(
        "JOBSCHED_DATABASE_URL must start with postgres:// or sqlite://, got `{url}`; \
         use e.g. postgres://user@host:5432/jobsched or sqlite://jobsched.db"
    )]
    UnsupportedUrl {
        /// The URL as given, password redacted.
        url: String,
    },
    /// The URL has a supported scheme but cannot be parsed.
    #[error("invalid {backend} URL `{url}`: {source}; check JOBSCHED_DATABASE_URL")]
    MalformedUrl {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// The URL as given, password redacted.
        url: String,
        /// Parser error.
        #[source]
        source: sqlx::Error,
    },
    /// The database could not be reached or opened.
    #[error(
        "could not connect to {backend} at {target}: {source}; check that the server is running \
         and reachable from here and that JOBSCHED_DATABASE_URL is right"
    )]
    Connect {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// `host:port/database` or the SQLite file.
        target: String,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The database did not exist and could not be created.
    #[error(
        "could not create {backend} database {target}: {source}; create it by hand or grant \
         the user CREATEDB (Postgres) / write access to the directory (SQLite)"
    )]
    CreateDatabase {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// Database name or file.
        target: String,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The database is missing, or lacks migrations this version needs.
    #[error(
        "{backend} database {target} is not ready: {detail}; run `jobsched migrate` with the \
         same JOBSCHED_DATABASE_URL first (it creates the database and applies the migrations)"
    )]
    NotMigrated {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// Database name or file.
        target: String,
        /// What is missing.
        detail: String,
    },
    /// Applying the embedded migrations failed.
    #[error(
        "applying {backend} migrations to {target} failed: {source}; the database may have been \
         migrated by a different jobsched version"
    )]
    Migrate {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// Database name or file.
        target: String,
        /// Migrator error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The database was migrated by a jobsched older than the squashed Postgres migrations
    /// (see `migrations/postgres/0013_baseline.sql`) and stops part-way through them.
    #[error(
        "postgres database {target} was migrated by an older jobsched, through migration \
         {through} of the 13 the baseline replaced; first run `jobsched migrate` of a jobsched \
         built before the baseline (commit 70d4b44 or older) against it, then this one"
    )]
    Outdated {
        /// Database name.
        target: String,
        /// The last old migration it has.
        through: i64,
    },
    /// A query failed.
    #[error("{backend} query failed: {source}")]
    Query {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// A row held a value this version does not understand.
    #[error("{backend} returned unexpected data: {message}")]
    Data {
        /// `postgres` or `sqlite`.
        backend: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// Constructors of the variants that name a backend, a target and a driver error:
/// `name => Variant(SourceType);` becomes `fn name(backend, target) -> impl FnOnce(SourceType)`.
macro_rules! at_target {
    ($($(#[$doc:meta])* $name:ident => $variant:ident($source:ty);)*) => {$(
        $(#[$doc])*
        pub(crate) fn $name(backend: &'static str, target: &str) -> impl FnOnce($source) -> Self {
            let target = target.to_string();
            move |source| StoreError::$variant {
                backend,
                target,
                source,
            }
        }
    )*};
}

impl StoreError {
    at_target! {
        /// [`StoreError::Connect`] for `backend` at `target`, as a `map_err` argument.
        connect => Connect(sqlx::Error);
        /// [`StoreError::CreateDatabase`] for `backend` at `target`, as a `map_err` argument.
        create_database => CreateDatabase(sqlx::Error);
        /// [`StoreError::Migrate`] for `backend` at `target`, as a `map_err` argument.
        migrate => Migrate(sqlx::migrate::MigrateError);
    }

    /// The backend the error is about (`postgres`, `sqlite`, or `store` when unknown).
    pub fn component(&self) -> &'static str {
        match self {
            StoreError::UnsupportedUrl { .. } => "store",
            StoreError::Outdated { .. } => "postgres",
            StoreError::MalformedUrl { backend, .. }
            | StoreError::Connect { backend, .. }
            | StoreError::CreateDatabase { backend, .. }
            | StoreError::NotMigrated { backend, .. }
            | StoreError::Migrate { backend, .. }
            | StoreError::Query { backend, .. }
            | StoreError::Data { backend, .. } => backend,
        }
    }
}

impl From<StoreError> for jobsched_core::Error {
    fn from(e: StoreError) -> Self {
        // A data exception (SQLSTATE class 22: a NUL in text, a value out of range, …) is the
        // request's fault, not the backend's: it becomes a validation error, never a 503.
        if let StoreError::Query {
            source: sqlx::Error::Database(db),
            ..
        } = &e
            && db.code().is_some_and(|c| c.starts_with("22"))
        {
            return jobsched_core::Error::invalid(
                "",
                format!(
                    "the database refused a value of the request: {}",
                    db.message()
                ),
            );
        }
        // The connection broke once the statement was on its way: it may have committed.
        if let StoreError::Query {
            source: sqlx::Error::Io(_) | sqlx::Error::Protocol(_),
            ..
        } = &e
        {
            return jobsched_core::Error::Interrupted {
                component: e.component(),
                source: Box::new(e),
            };
        }
        jobsched_core::Error::backend(e.component(), e)
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for messages. Any URL
/// with a userinfo part works the same (Redis URLs too).
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact("postgres://u:pw@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
        assert_eq!(redact("mysql://root:x@h"), "mysql://root:***@h");
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[test]
    fn a_connection_lost_mid_statement_is_in_doubt_and_a_pool_timeout_is_not() {
        let lost: jobsched_core::Error = StoreError::Query {
            backend: "postgres",
            source: sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        }
        .into();
        assert!(
            matches!(
                lost,
                jobsched_core::Error::Interrupted {
                    component: "postgres",
                    ..
                }
            ),
            "{lost:?}"
        );
        let waited: jobsched_core::Error = StoreError::Query {
            backend: "postgres",
            source: sqlx::Error::PoolTimedOut,
        }
        .into();
        assert!(
            matches!(waited, jobsched_core::Error::Backend { .. }),
            "{waited:?}"
        );
    }

    #[test]
    fn converts_to_core_backend_error() {
        let e: jobsched_core::Error = StoreError::UnsupportedUrl { url: "x".into() }.into();
        assert!(matches!(
            e,
            jobsched_core::Error::Backend {
                component: "store",
                ..
            }
        ));
        assert!(e.to_string().contains("must start with postgres://"));
        let e: jobsched_core::Error = StoreError::Data {
            backend: "sqlite",
            message: "m".into(),
        }
        .into();
        assert!(matches!(
            e,
            jobsched_core::Error::Backend {
                component: "sqlite",
                ..
            }
        ));
    }
}
