//! jobsched-store: the storage adapter of jobsched.
//!
//! Implements every store port of [`jobsched_core::ports`] ([`JobRepo`], [`DispatchStore`],
//! [`WorkerStore`], [`DeadLetterStore`], [`ControlStore`], hence [`Store`]) twice: on
//! PostgreSQL ([`PgStore`], the production source of truth) and on SQLite ([`SqliteStore`],
//! single node). Both share one schema (`migrations/postgres`, `migrations/sqlite`, embedded at
//! build time) and the same semantics:
//!
//! - every time written comes from the caller's `now` argument, never the database clock;
//! - every state change is a conditional UPDATE on (id, expected status, attempt), so a stale
//!   caller's write simply does not apply; the transitions used are listed below and are all
//!   allowed by [`jobsched_core::JobStatus::can_transition_to`];
//! - `seq`, the queue-entry sequence, grows on every (re-)entry into PENDING.
//!
//! On Postgres a PENDING job also has an entry in `job_queue`, which the claim orders index and
//! a claim deletes (migration 0017), and every lease handed out is listed in `job_leases`, where
//! the rescuer looks (0016): no index of `jobs` names a column a claim or a completion changes,
//! so both are HOT updates. Each statement that moves a job into or out of PENDING, or hands out
//! a lease, writes these rows itself. `jobs` has no generated column (0018), which Postgres
//! would compute again on every update: the statements that fail or cancel a job set the
//! FAILED / CANCELLED listing key, `rare_end`, themselves. A claim in sequence order starts at
//! its queue's floor (`queue_floors`, 0019), past the dead index entries of earlier claims.
//! The PENDING count deltas carry the jobs' summed estimates (`job_counts.est`, 0020), so the
//! backlog gauge is a sum over a few rows, not a scan of the queue.
//!
//! # Transitions
//!
//! Every write in this crate is conditional on the current status (and, for dispatch tokens,
//! the attempt): pinned in the UPDATE's WHERE clause, or read under a row lock taken first in the
//! same statement (`cancel`, `record_starts`, `finish`, which need the status a row leaves for
//! its counts). On Postgres each status change also writes its `job_counts` deltas in the same
//! statement. The pairs below are the only ones used; each is allowed by
//! [`jobsched_core::JobStatus::can_transition_to`] (checked by a unit test):
//!
//! | method | from | to |
//! | --- | --- | --- |
//! | `cancel` | PENDING, SCHEDULED, RUNNING | CANCELLED |
//! | `claim`, `exchange` | PENDING | RUNNING (in the policy's order, `FOR UPDATE SKIP LOCKED`) |
//! | `exchange` | RUNNING | as `finish`, in the same statement as the claim |
//! | `mark_scheduled` | PENDING | SCHEDULED |
//! | `rescue_expired` | RUNNING | PENDING (retry) or FAILED (retries exhausted) |
//! | `rescue_expired` | SCHEDULED | PENDING |
//! | `record_starts` | SCHEDULED | RUNNING |
//! | `finish` | RUNNING | COMPLETED, PENDING (retry, requeue), FAILED |
//! | `finish` with `started_at` | SCHEDULED | RUNNING, then as above, in one statement |
//! | `retry_dead_letter` | FAILED | PENDING |
//!
//! `insert` creates PENDING rows; `fetch` only reads; `renew` and `purge_dead_letters` change no
//! status.
//!
//! Start with [`migrate`] then [`connect`]; tests of other crates use [`testing::TestDb`].
//!
//! [`JobRepo`]: jobsched_core::ports::JobRepo
//! [`DispatchStore`]: jobsched_core::ports::DispatchStore
//! [`WorkerStore`]: jobsched_core::ports::WorkerStore
//! [`DeadLetterStore`]: jobsched_core::ports::DeadLetterStore
//! [`ControlStore`]: jobsched_core::ports::ControlStore
//! [`Store`]: jobsched_core::ports::Store

mod baseline;
mod common;
mod error;
mod pg;
mod rows;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{StoreError, redact};
pub use pg::{DEFAULT_ACQUIRE_TIMEOUT, PgStore, name_connections};
pub use sqlite::SqliteStore;

use jobsched_core::ports::Store;
use sqlx::migrate::MigrateDatabase;
use sqlx::{ConnectOptions, Connection};
use std::sync::Arc;

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite://…`, `sqlite:…` or `sqlite::memory:`.
    Sqlite,
}

impl Backend {
    /// The backend for `url`, or [`StoreError::UnsupportedUrl`].
    pub fn of(url: &str) -> Result<Backend, StoreError> {
        let lower = url.trim_start().to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if lower.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(StoreError::UnsupportedUrl { url: redact(url) })
        }
    }
}

/// Connect to the store named by `url` with a pool of at most `max_connections`.
///
/// `postgres://`/`postgresql://` give a [`PgStore`]; `sqlite://path` a [`SqliteStore`] (the
/// file is created if missing). `sqlite::memory:` / `sqlite://:memory:` give one shared
/// in-memory database on a single connection, migrated on connect. Other databases must have
/// been migrated with [`migrate`].
///
/// Fails with [`StoreError::NotMigrated`] when the database does not exist yet or lacks
/// migrations this version embeds, so a forgotten `jobsched migrate` is named at startup rather
/// than at the first query.
pub async fn connect(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    connect_with(url, max_connections, DEFAULT_ACQUIRE_TIMEOUT).await
}

/// [`connect`], with Postgres statements failing after `acquire_timeout` when no connection
/// can be had (the server down or unreachable, or every connection busy): the API answers 503
/// after that long instead of waiting out the default. SQLite ignores it.
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    acquire_timeout: std::time::Duration,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match Backend::of(url)? {
        Backend::Postgres => {
            let store = PgStore::connect_with(url, max_connections, acquire_timeout)
                .await
                .map_err(|e| match e {
                    StoreError::Connect {
                        backend,
                        target,
                        source: sqlx::Error::Database(db),
                    } if db.code().as_deref() == Some("3D000") => StoreError::NotMigrated {
                        backend,
                        target,
                        detail: "the database does not exist".into(),
                    },
                    other => other,
                })?;
            let applied = store.applied_migrations().await?;
            check_migrated("postgres", &pg::MIGRATOR, applied, || {
                pg::describe(&store.pool().connect_options())
            })?;
            Arc::new(store)
        }
        Backend::Sqlite => {
            let store = SqliteStore::connect(url, max_connections).await?;
            let applied = store.applied_migrations().await?;
            check_migrated("sqlite", &sqlite::MIGRATOR, applied, || {
                store
                    .pool()
                    .connect_options()
                    .get_filename()
                    .display()
                    .to_string()
            })?;
            Arc::new(store)
        }
    })
}

/// Every migration `migrator` embeds must be among `applied` (None: no migration table).
fn check_migrated(
    backend: &'static str,
    migrator: &sqlx::migrate::Migrator,
    applied: Option<Vec<i64>>,
    target: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    let detail = match applied {
        None => "no jobsched schema (no migration has been applied)".to_string(),
        Some(applied) => {
            let missing: Vec<String> = migrator
                .iter()
                .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
                .map(|m| format!("{}_{}", m.version, m.description))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            format!("migrations not applied: {}", missing.join(", "))
        }
    };
    Err(StoreError::NotMigrated {
        backend,
        target: target(),
        detail,
    })
}

/// Create the database named by `url` if it does not exist and apply the embedded migrations.
/// Idempotent: running it again (or concurrently) is fine.
pub async fn migrate(url: &str) -> Result<(), StoreError> {
    match Backend::of(url)? {
        Backend::Postgres => migrate_postgres(url).await,
        Backend::Sqlite => migrate_sqlite(url).await,
    }
}

async fn migrate_postgres(url: &str) -> Result<(), StoreError> {
    let options = pg::parse_url(url)?;
    let target = pg::describe(&options);
    let exists = sqlx::Postgres::database_exists(url)
        .await
        .map_err(StoreError::connect("postgres", &target))?;
    if !exists && let Err(source) = sqlx::Postgres::create_database(url).await {
        // Someone else may have created it in between (42P04: duplicate_database).
        let duplicate = matches!(&source, sqlx::Error::Database(e)
            if e.code().as_deref() == Some("42P04"));
        if !duplicate {
            return Err(StoreError::create_database("postgres", &target)(source));
        }
    }
    let mut conn = options
        .connect()
        .await
        .map_err(StoreError::connect("postgres", &target))?;
    let result = match baseline::adopt(&mut conn, &pg::MIGRATOR, &target).await {
        Ok(()) => {
            (pg::MIGRATOR.run(&mut conn).await).map_err(StoreError::migrate("postgres", &target))
        }
        Err(e) => Err(e),
    };
    let _ = conn.close().await;
    result
}

async fn migrate_sqlite(url: &str) -> Result<(), StoreError> {
    let options = sqlite::options(url)?;
    let target = options.get_filename().display().to_string();
    let mut conn = options
        .connect()
        .await
        .map_err(StoreError::create_database("sqlite", &target))?;
    let result = sqlite::MIGRATOR.run(&mut conn).await;
    let _ = conn.close().await;
    result.map_err(StoreError::migrate("sqlite", &target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_by_scheme() {
        assert_eq!(Backend::of("postgres://h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of("postgresql://h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("sqlite::memory:").unwrap(), Backend::Sqlite);
        let err = Backend::of("mysql://root:secret@h/db").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "JOBSCHED_DATABASE_URL must start with postgres:// or sqlite://, got `mysql://"
            ),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "{msg}");
    }
}
