//! Every migration of both services has a working `down`, on MariaDB: each service is migrated up
//! one version at a time (a schema snapshot per version), then down one version at a time (each
//! snapshot must equal the one recorded on the way up), then up all → down to 0 → up all. A
//! snapshot is what information_schema says about every table except `_sqlx_migrations`:
//! columns (order, type, nullability, default, charset, collation, extra, generated expression),
//! indexes (columns, order, uniqueness, prefix), constraints (primary, unique, foreign keys with
//! their rules, checks) and table options (engine, collation).

use std::collections::BTreeMap;

use admin::migrate::{self, Options, Service};
use integration_tests::TestDatabase;
use mysql_async::prelude::Queryable;

/// `CONCAT_WS('|', ...)` of the columns, NULL shown as `<null>`, so any server's types read back
/// as one string per row.
fn joined(cols: &[&str]) -> String {
    let parts: Vec<String> = cols.iter().map(|c| format!("IFNULL(CAST({c} AS CHAR), '<null>')")).collect();
    format!("CONCAT_WS('|', {})", parts.join(", "))
}

async fn rows(conn: &mut mysql_async::Conn, what: &str, cols: &[&str], from: &str) -> Vec<String> {
    let sql = format!("SELECT {} FROM information_schema.{from} WHERE {} ORDER BY 1", joined(cols), scope(from));
    let mut out: Vec<String> = conn.query(sql).await.unwrap_or_else(|e| panic!("{what}: {e}"));
    out.sort();
    out.into_iter().map(|r| format!("{what}: {r}")).collect()
}

fn scope(from: &str) -> &'static str {
    match from {
        "REFERENTIAL_CONSTRAINTS" => "CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME <> '_sqlx_migrations'",
        "CHECK_CONSTRAINTS" => "CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME <> '_sqlx_migrations'",
        "TABLE_CONSTRAINTS" | "KEY_COLUMN_USAGE" => "TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> '_sqlx_migrations'",
        _ => "TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> '_sqlx_migrations'",
    }
}

/// The schema of the test database, one line per fact, sorted.
async fn snapshot(db: &TestDatabase) -> Vec<String> {
    let mut conn = db.connect().await.unwrap();
    let mut out = Vec::new();
    out.extend(rows(&mut conn, "table", &["TABLE_NAME", "ENGINE", "TABLE_COLLATION"], "TABLES").await);
    out.extend(
        rows(
            &mut conn,
            "column",
            &[
                "TABLE_NAME",
                "LPAD(ORDINAL_POSITION, 3, '0')",
                "COLUMN_NAME",
                "COLUMN_TYPE",
                "IS_NULLABLE",
                "COLUMN_DEFAULT",
                "CHARACTER_SET_NAME",
                "COLLATION_NAME",
                "EXTRA",
                "GENERATION_EXPRESSION",
            ],
            "COLUMNS",
        )
        .await,
    );
    out.extend(
        rows(
            &mut conn,
            "index",
            &["TABLE_NAME", "INDEX_NAME", "SEQ_IN_INDEX", "COLUMN_NAME", "NON_UNIQUE", "SUB_PART", "INDEX_TYPE"],
            "STATISTICS",
        )
        .await,
    );
    out.extend(rows(&mut conn, "constraint", &["TABLE_NAME", "CONSTRAINT_NAME", "CONSTRAINT_TYPE"], "TABLE_CONSTRAINTS").await);
    out.extend(
        rows(
            &mut conn,
            "key",
            &["TABLE_NAME", "CONSTRAINT_NAME", "COLUMN_NAME", "ORDINAL_POSITION", "REFERENCED_TABLE_NAME", "REFERENCED_COLUMN_NAME"],
            "KEY_COLUMN_USAGE",
        )
        .await,
    );
    out.extend(
        rows(
            &mut conn,
            "fk",
            &["TABLE_NAME", "CONSTRAINT_NAME", "REFERENCED_TABLE_NAME", "UPDATE_RULE", "DELETE_RULE"],
            "REFERENTIAL_CONSTRAINTS",
        )
        .await,
    );
    out.extend(rows(&mut conn, "check", &["TABLE_NAME", "CONSTRAINT_NAME", "CHECK_CLAUSE"], "CHECK_CONSTRAINTS").await);
    conn.disconnect().await.ok();
    out
}

fn diff(a: &[String], b: &[String]) -> String {
    let only_a: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
    let only_b: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
    format!("only before: {only_a:#?}\nonly after: {only_b:#?}")
}

fn to(v: i64) -> Options {
    Options { to: Some(v), ..Default::default() }
}

async fn round_trip(service: Service) {
    let db = TestDatabase::create(&format!("rt_{service}")).await.unwrap();
    let migrator = service.migrator();
    let mut versions: Vec<i64> =
        migrator.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| m.version).collect();
    versions.sort_unstable();
    versions.dedup();
    assert!(!versions.is_empty(), "{service}: no migrations");

    // Up one version at a time, remembering each schema.
    let mut at: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    at.insert(0, snapshot(&db).await);
    assert!(at[&0].is_empty(), "{service}: the fresh database is not empty: {:?}", at[&0]);
    for v in &versions {
        let out = migrate::up(&db.url, migrator, to(*v)).await.unwrap_or_else(|e| panic!("{service} up to {v}: {e:#}"));
        assert_eq!(out.current, Some(*v));
        at.insert(*v, snapshot(&db).await);
        assert_ne!(at[v], *at.range(..*v).next_back().unwrap().1, "{service} {v}: the migration changed nothing");
    }

    // Down one version at a time (plain `down`): each schema equals the one on the way up.
    for (i, v) in versions.iter().enumerate().rev() {
        let prev = if i == 0 { 0 } else { versions[i - 1] };
        let out = migrate::down(&db.url, migrator, Options::default())
            .await
            .unwrap_or_else(|e| panic!("{service} down from {v}: {e:#}"));
        assert_eq!(out.reverted.iter().map(|s| s.version).collect::<Vec<_>>(), [*v]);
        assert_eq!(out.current, (prev > 0).then_some(prev));
        let now = snapshot(&db).await;
        assert!(now == at[&prev], "{service}: down from {v} to {prev} differs from up to {prev}:\n{}", diff(&at[&prev], &now));
    }

    // Up all, down to 0, up all.
    let last = *versions.last().unwrap();
    migrate::up(&db.url, migrator, Options::default()).await.unwrap();
    assert!(snapshot(&db).await == at[&last], "{service}: up all after a full down differs");
    let out = migrate::down(&db.url, migrator, to(0)).await.unwrap();
    assert_eq!(out.reverted.len(), versions.len());
    assert_eq!(out.current, None);
    assert!(snapshot(&db).await.is_empty(), "{service}: down to 0 left tables behind");
    migrate::up(&db.url, migrator, Options::default()).await.unwrap();
    let now = snapshot(&db).await;
    assert!(now == at[&last], "{service}: up all → down to 0 → up all differs:\n{}", diff(&at[&last], &now));
}

#[tokio::test]
async fn every_auth_migration_reverts_to_the_schema_before_it() {
    round_trip(Service::Auth).await;
}

#[tokio::test]
async fn every_customer_migration_reverts_to_the_schema_before_it() {
    round_trip(Service::Customer).await;
}

/// A rollback is of one service's release: `admin migrate down` without `--service` refuses
/// before it opens either database (by default it would revert both services' latest).
#[tokio::test]
async fn migrate_down_names_one_service() {
    let cwd = tempfile::tempdir().expect("a temporary folder");
    let args = ["migrate", "down"];
    let out = integration_tests::run_admin(integration_tests::admin_command(&args, cwd.path()), &args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--service auth or --service customer"), "{stderr}");
}
