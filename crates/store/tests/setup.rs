//! `connect`, `migrate` and the `testing` helpers themselves.

use chrono::{TimeZone, Utc};
use jobsched_core::JobStatus;
use jobsched_store::testing::{DEFAULT_TEST_DATABASE_URL, TestDb, sleep_job};
use jobsched_store::{StoreError, connect, migrate};
use sqlx::{Connection, PgConnection};

/// Run `test` on the store of a fresh migrated Postgres database (skipped without Postgres),
/// then drop the database.
async fn on_postgres(test: impl AsyncFnOnce(&dyn jobsched_core::ports::Store)) {
    let Some(pg) = TestDb::postgres().await else {
        return;
    };
    let store = pg.store().await;
    test(store.as_ref()).await;
    drop(store);
    pg.cleanup().await;
}

/// The error `connect(url)` fails with; its message names each of `names` and never shows
/// `secret` (the URL's password).
async fn refused(url: &str, names: &[&str], secret: &str) -> StoreError {
    let Err(err) = connect(url, 1).await else {
        panic!("connected to {url}");
    };
    let msg = err.to_string();
    for name in names {
        assert!(msg.contains(name), "{msg:?} does not name {name:?}");
    }
    assert!(!msg.contains(secret), "{msg:?} shows the password");
    err
}

/// `err` as the core error callers see: a backend failure of `component`.
fn assert_backend(err: StoreError, component: &str) {
    let core: jobsched_core::Error = err.into();
    assert!(
        matches!(&core, jobsched_core::Error::Backend { component: c, .. } if *c == component),
        "{core:?}"
    );
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn admin_url() -> String {
    std::env::var("JOBSCHED_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string())
}

async fn pg_database_exists(name: &str) -> bool {
    let mut conn = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query_scalar("SELECT exists(SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_string()
}

/// Insert and read back one job through a fresh connection.
async fn round_trip(url: &str) {
    let store = connect(url, 2).await.unwrap();
    let job = sleep_job("probe", serde_json::json!({}), 3);
    store.insert(&job, now()).await.unwrap();
    let got = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(got.status, JobStatus::Pending);
}

#[tokio::test]
async fn migrate_twice_on_a_fresh_postgres_database() {
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    let name = db_name(db.url());
    assert!(!pg_database_exists(&name).await);
    migrate(db.url()).await.unwrap();
    assert!(
        pg_database_exists(&name).await,
        "migrate creates the database"
    );
    migrate(db.url()).await.unwrap();
    round_trip(db.url()).await;
    db.cleanup().await;
    assert!(
        !pg_database_exists(&name).await,
        "cleanup drops the database"
    );
}

#[tokio::test]
async fn migrate_twice_on_a_new_sqlite_file() {
    let db = TestDb::sqlite_unmigrated();
    let path = db.url().trim_start_matches("sqlite://").to_string();
    assert!(!std::path::Path::new(&path).exists());
    migrate(db.url()).await.unwrap();
    assert!(
        std::path::Path::new(&path).exists(),
        "migrate creates the file"
    );
    migrate(db.url()).await.unwrap();
    round_trip(db.url()).await;
    db.cleanup().await;
    assert!(
        !std::path::Path::new(&path).exists(),
        "cleanup removes the file"
    );
}

#[tokio::test]
async fn dropping_a_test_db_removes_it() {
    let sqlite = TestDb::sqlite().await;
    let path = sqlite.url().trim_start_matches("sqlite://").to_string();
    assert!(std::path::Path::new(&path).exists());
    drop(sqlite);
    assert!(!std::path::Path::new(&path).exists());

    let Some(pg) = TestDb::postgres().await else {
        return;
    };
    let name = db_name(pg.url());
    // An open pool does not keep the database alive: the drop is forced.
    let _store = pg.store().await;
    assert!(pg_database_exists(&name).await);
    drop(pg);
    assert!(!pg_database_exists(&name).await);
}

#[tokio::test]
async fn in_memory_sqlite_is_shared_and_migrated() {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let store = connect(url, 8).await.unwrap();
        let job = sleep_job("m", serde_json::json!({}), 3);
        store.insert(&job, now()).await.unwrap();
        // Concurrent users share the one database.
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.get(job.id).await.unwrap().is_some() })
            })
            .collect();
        for h in handles {
            assert!(h.await.unwrap(), "{url}");
        }
        // A separate connect is a separate database.
        let other = connect(url, 1).await.unwrap();
        assert!(other.get(job.id).await.unwrap().is_none(), "{url}");
    }
}

#[tokio::test]
async fn unsupported_url_is_named() {
    let err = refused(
        "mysql://root:hunter2@db/jobs",
        &["JOBSCHED_DATABASE_URL must start with postgres:// or sqlite://, got"],
        "hunter2",
    )
    .await;
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }));
    assert!(matches!(
        migrate("redis://x").await,
        Err(StoreError::UnsupportedUrl { .. })
    ));
    assert_backend(err, "store");
}

#[tokio::test]
async fn unreachable_postgres_names_host_and_fix() {
    // Port 1 on localhost refuses connections.
    let err = refused(
        "postgres://postgres:pw@127.0.0.1:1/jobsched",
        &["127.0.0.1:1/jobsched", "check that the server is running"],
        "pw",
    )
    .await;
    assert_backend(err, "postgres");
    let Err(err) = migrate("postgres://postgres@127.0.0.1:1/jobsched").await else {
        panic!("migrated on port 1");
    };
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn unopenable_sqlite_file_is_named() {
    let url = "sqlite:///nonexistent-dir/sub/jobs.db";
    let err = refused(
        url,
        &["/nonexistent-dir/sub/jobs.db"],
        "no secret in this URL",
    )
    .await;
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn connect_names_a_missing_migrate() {
    let sqlite = TestDb::sqlite_unmigrated();
    let Err(err) = connect(sqlite.url(), 1).await else {
        panic!("connected to an unmigrated SQLite file");
    };
    assert!(matches!(err, StoreError::NotMigrated { .. }), "{err}");
    assert!(err.to_string().contains("run `jobsched migrate`"), "{err}");
    migrate(sqlite.url()).await.unwrap();
    assert!(connect(sqlite.url(), 1).await.is_ok());
    sqlite.cleanup().await;

    let Some(pg) = TestDb::postgres_unmigrated().await else {
        return;
    };
    let Err(err) = connect(pg.url(), 1).await else {
        panic!("connected to a missing Postgres database");
    };
    let msg = err.to_string();
    assert!(matches!(err, StoreError::NotMigrated { .. }), "{msg}");
    assert!(
        msg.contains("does not exist") && msg.contains("jobsched migrate"),
        "{msg}"
    );
    // Created but never migrated.
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::Executor::execute(
        &mut admin,
        format!("CREATE DATABASE \"{}\"", db_name(pg.url())).as_str(),
    )
    .await
    .unwrap();
    let Err(err) = connect(pg.url(), 1).await else {
        panic!("connected to an unmigrated Postgres database");
    };
    assert!(
        err.to_string().contains("no migration has been applied"),
        "{err}"
    );
    migrate(pg.url()).await.unwrap();
    assert!(connect(pg.url(), 1).await.is_ok());
    pg.cleanup().await;
}

/// A value Postgres refuses as data (a NUL in text, SQLSTATE class 22) is the request's fault:
/// a validation error (the API's 422), never a backend failure (503). The API refuses NULs
/// before they reach the store; this is the net behind it.
#[tokio::test]
async fn postgres_data_exceptions_are_validation_errors() {
    on_postgres(async |store| {
        // A NUL in a text column (bypassing NewJob's own check), then in the payload's JSON.
        let mut named = sleep_job("n", serde_json::json!({"duration": 1}), 3);
        named.name = "a\u{0}b".into();
        let mut with_payload = sleep_job("n", serde_json::json!({"duration": 1}), 3);
        with_payload.payload = serde_json::json!({"k": "x\u{0}"});
        let errors = [
            store.insert(&named, now()).await.unwrap_err(),
            store.insert_many(&[with_payload], now()).await.unwrap_err(),
        ];
        for err in errors {
            assert!(
                matches!(err, jobsched_core::Error::Validation { .. }),
                "{err:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn extreme_numbers_in_payloads_round_trip() {
    on_postgres(async |store| {
        let mut job = sleep_job("n", serde_json::json!({"duration": 1}), 3);
        job.payload = serde_json::json!({
            "max": f64::MAX, "min": f64::MIN, "tiny": 5e-324, "small": -2.2250738585072014e-308,
            "big": u64::MAX, "neg": i64::MIN, "third": 1.0 / 3.0, "list": [1e300, -1e-300, 0.1],
        });
        let inserted = store.insert(&job, now()).await;
        let inserted = inserted.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(inserted.payload, job.payload);
        let read = store.get(job.id).await.unwrap().unwrap();
        assert_eq!(read.payload, job.payload);
    })
    .await;
}
