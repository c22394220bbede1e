//! Adopting a Postgres database migrated before the migrations 0001-0013 were squashed into
//! `migrations/postgres/0013_baseline.sql`.
//!
//! Such a database has the baseline's schema already (the baseline was checked to build the
//! same schema, object for object), but sqlx's table lists the 13 old migrations with their
//! checksums, and sqlx refuses a database that lists migrations it does not embed. Adopting
//! rewrites that table: the 13 rows become one, version 13 with the baseline's checksum. A
//! database that stops part-way through the old migrations is refused with what to do.

use crate::StoreError;
use sqlx::{Connection, PgConnection};

/// The version the baseline carries: the last of the migrations it replaced.
const BASELINE: i64 = 13;

/// The migrations the baseline replaced: version and checksum (SHA-384 of the file, as sqlx
/// recorded it, hex).
const SQUASHED: [(i64, &str); 13] = [
    (
        1,
        "ea29be3114f789de7189415f6b7ad9bd3161be90d2f2f84966d901646f97de004a51308e84aaa446d3f9c6817a7f09b3",
    ),
    (
        2,
        "cd3d00c7b45a22243e1201a11f61d3f6867d9fcba5cc512d7198df400160f7f5a24bdf80302442b4da3073b25112ce28",
    ),
    (
        3,
        "077a363c93451e00849e4ad8526f41433ad5477d17b0bdb00a1c2d0794ab236b149d1759f2ff92af799b63b23b7f92f4",
    ),
    (
        4,
        "a823fa74b1f15dbe69e7cd7c7187566f8a3daf95a86aa9190f70d59ddef0a5b19202f8fe523bd523d85bda038ee0cdc0",
    ),
    (
        5,
        "a5aade76677ac623cf0c2be55174a6028faeb697cc972870f6e08f29c817192677740b511cd26d593e91a14e1d1604f7",
    ),
    (
        6,
        "a0f40d925b685e12c39661ecde419c7ce8540ac4da97d1667521fbb9895873b007770c23a5d0f79a1f50534bc2e17bef",
    ),
    (
        7,
        "165edf5e85a7a7321e05b9b63687ee34ed7c3350f0c8342e8e6b235a16f1c648413b67006569cd28a55a2d31bfa0a35e",
    ),
    (
        8,
        "9a123f9d200bac755cdddf5823d6d9f6b1b4c262d44a22f56ff15e82e9fa7554e21e654e7285cbd6204478d27c3a0980",
    ),
    (
        9,
        "4a910ed487b487429062e858789fa4b8b2355636a2b9faefeea0f1992a942898989fe2ebdeffcecd20079d8ef8c4f938",
    ),
    (
        10,
        "408a959313ef46811aa6c05ddbcd6b9a1dfec22bc92d1d5868e8b2247d0d6956301fb4309c309e01ff8d99c94969eef9",
    ),
    (
        11,
        "a7292447e2b0911162770858ef47e821a85abfcde4c89c15c39b066fd938aa7594c6e5d9732eaf2d98fffb03d9bbc9dd",
    ),
    (
        12,
        "a98f45596a6f3a7250d5bbee82b2989f75eb31d08dee4d07ef476a3aedc2e49417569e2b69a3aefe51b4461a0bbdcd9c",
    ),
    (
        13,
        "e582f793b7c961bf477a1096032580360836a6389aec191c9a0784f590c2a072cd50b44d1a7b71d52862c3e9cdeacd80",
    ),
];

/// What sqlx's table says of the old migrations.
#[derive(Debug, PartialEq)]
enum Found {
    /// All 13, each applied with its recorded checksum: adopt.
    All,
    /// The first `n` only (n < 13): refuse.
    Prefix(i64),
    /// None of them, or not exactly them (a new database, one adopted already, or a table
    /// sqlx itself will judge).
    Other,
}

/// Judge the applied rows `(version, checksum hex, success)` below and at the baseline.
fn judge(applied: &[(i64, String, bool)]) -> Found {
    let old: Vec<&(i64, String, bool)> = applied.iter().filter(|r| r.0 <= BASELINE).collect();
    let matches = |(row, (version, checksum)): (&&(i64, String, bool), &(i64, &str))| {
        row.0 == *version && row.1 == *checksum && row.2
    };
    if old.is_empty() || !old.iter().zip(SQUASHED.iter()).all(matches) {
        return Found::Other;
    }
    match old.len() {
        n if n == SQUASHED.len() => Found::All,
        n if n < SQUASHED.len() => Found::Prefix(n as i64),
        _ => Found::Other,
    }
}

/// Adopt the database `conn` is connected to when sqlx's table lists the squashed
/// migrations (see the module docs), with the checksum of `migrator`'s baseline. Safe to run
/// concurrently and again: the check and the rewrite are one transaction under a lock on
/// sqlx's table.
pub(crate) async fn adopt(
    conn: &mut PgConnection,
    migrator: &sqlx::migrate::Migrator,
    target: &str,
) -> Result<(), StoreError> {
    let Some(checksum) = checksum(migrator) else {
        return Ok(());
    };
    let db = |source| StoreError::Query {
        backend: "postgres",
        source,
    };
    let mut tx = conn.begin().await.map_err(db)?;
    let exists: bool = sqlx::query_scalar(include_str!("../sql/postgres/applied_migrations.sql"))
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
    if !exists {
        return Ok(());
    }
    sqlx::query("LOCK TABLE _sqlx_migrations IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let applied: Vec<(i64, String, bool)> = sqlx::query_as(
        "SELECT version, encode(checksum, 'hex'), success FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    match judge(&applied) {
        Found::Other => Ok(()),
        Found::Prefix(through) => Err(StoreError::Outdated {
            target: target.to_string(),
            through,
        }),
        Found::All => {
            sqlx::query("DELETE FROM _sqlx_migrations WHERE version < $1")
                .bind(BASELINE)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query(
                "UPDATE _sqlx_migrations SET description = 'baseline', checksum = $2 \
                 WHERE version = $1",
            )
            .bind(BASELINE)
            .bind(checksum)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            tracing::info!(target, "adopted a database migrated before the baseline");
            Ok(())
        }
    }
}

/// The baseline's checksum in `migrator`.
fn checksum(migrator: &sqlx::migrate::Migrator) -> Option<&[u8]> {
    migrator
        .iter()
        .find(|m| m.version == BASELINE)
        .map(|m| &*m.checksum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<(i64, String, bool)> {
        SQUASHED[..n]
            .iter()
            .map(|(v, c)| (*v, (*c).to_string(), true))
            .collect()
    }

    #[test]
    fn the_old_migrations_are_judged_whole_part_or_not_at_all() {
        assert_eq!(judge(&rows(13)), Found::All);
        let mut later = rows(13);
        later.push((14, "ab".into(), true));
        assert_eq!(judge(&later), Found::All);
        assert_eq!(judge(&rows(5)), Found::Prefix(5));
        assert_eq!(judge(&[]), Found::Other);
        // Adopted already: version 13 with the baseline's checksum.
        assert_eq!(judge(&[(13, "00".into(), true)]), Found::Other);
        // A failed or altered old migration is left to sqlx to report.
        let mut failed = rows(13);
        failed[12].2 = false;
        assert_eq!(judge(&failed), Found::Other);
        let mut altered = rows(13);
        altered[3].1 = "ff".into();
        assert_eq!(judge(&altered), Found::Other);
    }

    /// A database the old migrations built (its schema is the baseline's: checked object for
    /// object when the baseline was written) is adopted; one part-way through them is refused.
    #[tokio::test]
    async fn a_database_migrated_before_the_baseline_is_adopted_and_one_part_way_is_refused() {
        let Some(db) = crate::testing::TestDb::postgres().await else {
            return;
        };
        let mut conn = PgConnection::connect(db.url()).await.unwrap();
        let old_table = async |conn: &mut PgConnection, n: usize| {
            sqlx::query("DELETE FROM _sqlx_migrations WHERE version <= $1")
                .bind(BASELINE)
                .execute(&mut *conn)
                .await
                .unwrap();
            for (version, checksum) in &SQUASHED[..n] {
                sqlx::query(
                    "INSERT INTO _sqlx_migrations \
                     (version, description, success, checksum, execution_time) \
                     VALUES ($1, 'old', true, decode($2, 'hex'), 1)",
                )
                .bind(version)
                .bind(checksum)
                .execute(&mut *conn)
                .await
                .unwrap();
            }
        };
        let table = async |conn: &mut PgConnection| -> Vec<(i64, String)> {
            sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
                .fetch_all(conn)
                .await
                .unwrap()
        };
        old_table(&mut conn, SQUASHED.len()).await;
        crate::migrate(db.url()).await.unwrap();
        let adopted = table(&mut conn).await;
        assert_eq!(
            adopted[0],
            (BASELINE, "baseline".to_string()),
            "{adopted:?}"
        );
        assert!(adopted.iter().all(|(v, _)| *v >= BASELINE), "{adopted:?}");
        crate::connect(db.url(), 1).await.unwrap();
        crate::migrate(db.url()).await.unwrap();
        assert_eq!(
            table(&mut conn).await,
            adopted,
            "adopting twice changes nothing"
        );

        old_table(&mut conn, 5).await;
        let err = crate::migrate(db.url()).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Outdated { through: 5, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("through migration 5"), "{err}");
        conn.close().await.unwrap();
        db.cleanup().await;
    }

    #[test]
    fn the_baseline_is_the_last_squashed_version() {
        assert_eq!(SQUASHED.last().map(|s| s.0), Some(BASELINE));
        assert!(checksum(&crate::pg::MIGRATOR).is_some());
    }
}
