//! Customer migrations on MariaDB: the legacy schema (1-5), the seed's normalization (6) keeping
//! billing data, the exact normalized table, and every step reversible.

use admin::migrate::{self, Options, Service};
use integration_tests::TestDatabase;
use mysql_async::prelude::Queryable;

async fn columns(conn: &mut mysql_async::Conn, table: &str) -> Vec<String> {
    conn.exec(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (table,),
    )
    .await
    .unwrap()
}

async fn indexes(conn: &mut mysql_async::Conn, table: &str) -> Vec<String> {
    conn.exec(
        "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY INDEX_NAME",
        (table,),
    )
    .await
    .unwrap()
}

fn to(version: i64) -> Options {
    Options { to: Some(version), ..Default::default() }
}

#[tokio::test]
async fn legacy_schema_upgrades_to_the_normalized_one_and_back() {
    let db = TestDatabase::create("custmig").await.unwrap();
    let migrator = Service::Customer.migrator();
    migrate::up(&db.url, migrator, to(5)).await.unwrap();
    let mut conn = db.connect().await.unwrap();
    assert_eq!(
        columns(&mut conn, "customers").await,
        ["id", "name", "email_encrypted", "stripe_customer_id", "created_at", "updated_at", "sync_version", "last_sync_at"]
    );
    assert!(indexes(&mut conn, "customers").await.contains(&"idx_sync_version".to_string()));
    conn.query_drop(
        "INSERT INTO customers (id, name, email_encrypted, stripe_customer_id, sync_version) VALUES \
         ('u1', 'Zoë', 'v1.k1.abc', 'cus_1', 3), ('u2', 'Bob', 'v1.k1.def', NULL, 1); \
         INSERT INTO customer_areas (customer_id, area_id) VALUES ('u1', 1), ('u1', 2), ('u2', 5), ('orphan', 9)",
    )
    .await
    .unwrap();

    // These rows are in no auth database: migration 6's guard (issue 5) refuses them unless told
    // that losing their names and emails is fine (`--allow-data-loss`).
    let lossy = admin::legacy::CrossDb::default().with_allow_data_loss(true);
    assert!(migrate::up(&db.url, migrator, to(6)).await.is_err(), "guarded");
    migrate::up_with(&db.url, migrator, to(6), &lossy).await.unwrap();
    // Exactly the seed's normalized table.
    assert_eq!(columns(&mut conn, "customers").await, ["id", "stripe_customer_id", "created_at", "updated_at"]);
    assert_eq!(indexes(&mut conn, "customers").await, ["idx_stripe_customer", "PRIMARY"]);
    let kept: Vec<(String, Option<String>)> = conn.query("SELECT id, stripe_customer_id FROM customers ORDER BY id").await.unwrap();
    assert_eq!(kept, [("u1".to_string(), Some("cus_1".to_string())), ("u2".to_string(), None)]);

    // The seed's rollback: columns back, empty here (no auth holds these users; with auth, `down`
    // repopulates them: tests/upgrade_legacy.rs).
    migrate::down_with(&db.url, migrator, to(5), &lossy).await.unwrap();
    assert_eq!(columns(&mut conn, "customers").await.len(), 8);
    let names: Vec<String> = conn.query("SELECT name FROM customers ORDER BY id").await.unwrap();
    assert_eq!(names, ["", ""]);
    migrate::up_with(&db.url, migrator, Options::default(), &lossy).await.unwrap();
    // 7 dropped the orphan area row and added the foreign key.
    let areas: Vec<(String, i32)> = conn.query("SELECT customer_id, area_id FROM customer_areas ORDER BY customer_id, area_id").await.unwrap();
    assert_eq!(areas, [("u1".into(), 1), ("u1".into(), 2), ("u2".into(), 5)]);
    for table in ["subscriptions", "stripe_events", "audit_log", "idempotency_keys", "customer_provisioning"] {
        assert!(!columns(&mut conn, table).await.is_empty(), "{table}");
    }
    // Deleting a customer takes its areas along.
    conn.query_drop("DELETE FROM customers WHERE id = 'u2'").await.unwrap();
    let left: Vec<i64> = conn.query("SELECT COUNT(*) FROM customer_areas WHERE customer_id = 'u2'").await.unwrap();
    assert_eq!(left, [0]);

    // Every migration reverses.
    migrate::down(&db.url, migrator, to(0)).await.unwrap();
    let tables: Vec<String> = conn
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> '_sqlx_migrations'")
        .await
        .unwrap();
    assert!(tables.is_empty(), "{tables:?}");
    migrate::up(&db.url, migrator, Options::default()).await.unwrap();
    conn.disconnect().await.ok();
}
