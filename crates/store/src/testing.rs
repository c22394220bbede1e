//! Test support, used by this crate's tests and by other crates' tests: a throwaway, migrated
//! database per test.
//!
//! [`TestDb::postgres`] creates a uniquely named database (`jobsched_t_<uuid>`) on the server
//! named by `JOBSCHED_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! When that server is unreachable it prints a skip message and returns `None`, unless
//! `CI=true`, where it panics. [`TestDb::sqlite`] uses a fresh temporary file. Call
//! [`TestDb::cleanup`] at the end of a test; if a test panics first, `Drop` removes the
//! database anyway (so parallel tests never leak databases).
//!
//! ```no_run
//! # async fn example() {
//! use jobsched_store::testing::TestDb;
//! let Some(db) = TestDb::postgres().await else { return }; // skipped: no server
//! let store = db.store().await;
//! // … use store …
//! db.cleanup().await;
//! # }
//! ```

use crate::{PgStore, SqliteStore, StoreError, migrate};
use jobsched_core::ports::Store;
use jobsched_testkit::{in_ci, with_database};
use sqlx::{Connection, Executor, PgConnection};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default admin URL for test databases.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Pool size of each store handed out by [`TestDb::store`].
const TEST_POOL_SIZE: u32 = 8;

#[derive(Debug)]
enum Kind {
    Postgres { admin_url: String, name: String },
    Sqlite { path: PathBuf },
}

#[derive(Debug)]
enum OpenPool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// A throwaway database for one test. See the [module docs](self).
#[derive(Debug)]
pub struct TestDb {
    kind: Kind,
    url: String,
    pools: Mutex<Vec<OpenPool>>,
    cleaned: bool,
}

fn admin_url() -> String {
    std::env::var("JOBSCHED_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_string())
}

async fn admin_connection(admin_url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(admin_url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 5s".to_string()),
    }
}

async fn drop_pg_database(admin_url: &str, name: &str) -> Result<(), String> {
    let mut conn = admin_connection(admin_url).await?;
    conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

fn remove_sqlite_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(file));
    }
}

impl TestDb {
    /// A new, migrated Postgres database; `None` (after printing why) when the server is
    /// unreachable and `CI` is not `true`.
    ///
    /// # Panics
    /// When the server is unreachable and `CI=true`, or when creating/migrating fails.
    pub async fn postgres() -> Option<TestDb> {
        let db = Self::postgres_unmigrated().await?;
        migrate(&db.url)
            .await
            .unwrap_or_else(|e| panic!("creating test database {}: {e}", db.url));
        Some(db)
    }

    /// A unique Postgres database URL whose database does not exist yet (for testing
    /// [`crate::migrate`], which creates it). Dropped like [`TestDb::postgres`]'s.
    ///
    /// # Panics
    /// When the server is unreachable and `CI=true`.
    pub async fn postgres_unmigrated() -> Option<TestDb> {
        let admin_url = admin_url();
        match admin_connection(&admin_url).await {
            Ok(conn) => {
                let _ = conn.close().await;
            }
            Err(e) => {
                let msg = format!(
                    "cannot reach the test Postgres at {} ({e}); start Postgres or set \
                     JOBSCHED_TEST_DATABASE_URL",
                    crate::error::redact(&admin_url)
                );
                if in_ci() {
                    panic!("{msg} (CI=true: Postgres tests must run)");
                }
                eprintln!("skipping Postgres test: {msg}");
                return None;
            }
        }
        let name = format!("jobsched_t_{}", uuid::Uuid::new_v4().simple());
        let url = with_database(&admin_url, &name);
        Some(TestDb {
            kind: Kind::Postgres { admin_url, name },
            url,
            pools: Mutex::new(Vec::new()),
            cleaned: false,
        })
    }

    /// A new, migrated SQLite database in a temporary file.
    ///
    /// # Panics
    /// When the file cannot be created or migrated.
    pub async fn sqlite() -> TestDb {
        let db = Self::sqlite_unmigrated();
        migrate(&db.url)
            .await
            .unwrap_or_else(|e| panic!("creating test database {}: {e}", db.url));
        db
    }

    /// A SQLite URL for a temporary file that does not exist yet. Removed like
    /// [`TestDb::sqlite`]'s.
    pub fn sqlite_unmigrated() -> TestDb {
        let path =
            std::env::temp_dir().join(format!("jobsched_t_{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", path.display());
        TestDb {
            kind: Kind::Sqlite { path },
            url,
            pools: Mutex::new(Vec::new()),
            cleaned: false,
        }
    }

    /// The database URL (give it to code under test).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new store (its own pool) on this database. Call it twice to get two independent
    /// "processes".
    ///
    /// # Panics
    /// When connecting fails.
    pub async fn store(&self) -> Arc<dyn Store> {
        fn opened<S: Store + 'static, P>(
            s: Result<S, StoreError>,
            pool: impl FnOnce(&S) -> P,
        ) -> (Arc<dyn Store>, P) {
            let s = s.unwrap_or_else(|e| panic!("{e}"));
            let p = pool(&s);
            (Arc::new(s), p)
        }
        let (store, pool) = match &self.kind {
            Kind::Postgres { .. } => {
                opened(PgStore::connect(&self.url, TEST_POOL_SIZE).await, |s| {
                    OpenPool::Postgres(s.pool().clone())
                })
            }
            Kind::Sqlite { .. } => {
                opened(SqliteStore::connect(&self.url, TEST_POOL_SIZE).await, |s| {
                    OpenPool::Sqlite(s.pool().clone())
                })
            }
        };
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pool);
        store
    }

    /// Close the stores handed out and drop the database.
    pub async fn cleanup(mut self) {
        let pools = std::mem::take(&mut *self.pools.lock().unwrap_or_else(|p| p.into_inner()));
        for pool in pools {
            match pool {
                OpenPool::Postgres(p) => p.close().await,
                OpenPool::Sqlite(p) => p.close().await,
            }
        }
        match &self.kind {
            Kind::Postgres { admin_url, name } => {
                if let Err(e) = drop_pg_database(admin_url, name).await {
                    eprintln!("could not drop test database {name}: {e}");
                }
            }
            Kind::Sqlite { path } => remove_sqlite_files(path),
        }
        self.cleaned = true;
    }
}

impl Drop for TestDb {
    /// Best-effort removal when [`TestDb::cleanup`] was not called (e.g. the test panicked).
    /// Postgres is dropped from a separate thread with its own runtime, so this works inside
    /// or outside an async runtime.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        match &self.kind {
            Kind::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                let dropper = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(rt) => {
                            if let Err(e) = rt.block_on(drop_pg_database(&admin_url, &name)) {
                                eprintln!("could not drop test database {name}: {e}");
                            }
                        }
                        Err(e) => eprintln!("could not drop test database {name}: {e}"),
                    }
                });
                let _ = dropper.join();
            }
            Kind::Sqlite { path } => remove_sqlite_files(path),
        }
    }
}

/// A `sleep` job named `name` with `payload`, priority 5, estimate 1 s and `max_retries`.
pub fn sleep_job(
    name: &str,
    payload: serde_json::Value,
    max_retries: i64,
) -> jobsched_core::NewJob {
    jobsched_core::NewJob::new(jobsched_core::JobSpec {
        name: name.into(),
        job_type: "sleep".into(),
        priority: Some(5),
        estimated_duration: Some(1.0),
        payload: Some(payload),
        max_retries: Some(max_retries),
    })
    .expect("a valid sleep job")
}

/// Every job in `store`, newest first, read page by page (test support: the state a test
/// asserts on after a run).
pub async fn all_jobs(store: &dyn Store) -> Vec<jobsched_core::Job> {
    let mut out = Vec::new();
    for page in 1.. {
        let p = store
            .list(&jobsched_core::JobFilter {
                page,
                page_size: 100,
                ..jobsched_core::JobFilter::default()
            })
            .await
            .expect("listing jobs");
        let n = p.jobs.len();
        out.extend(p.jobs);
        if n < 100 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
