//! `admin::migrate` against the real development server (MariaDB from scripts/stack.sh).
//! Needs DB_ADMIN_URL (environment, or .local/stack.env as written by `scripts/stack.sh db-start`);
//! without one every test fails saying how to get it. Each test works in a database of its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use admin::migrate::{self, ChecksumState, Options, State};
use sqlx::Connection;
use sqlx::migrate::Migrator;

/// The stack's admin URL; a test that cannot reach the database fails (a skipped test would
/// pass having checked nothing).
fn admin_url() -> String {
    if let Ok(url) = std::env::var("DB_ADMIN_URL") {
        return url;
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/stack.env");
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("DB_ADMIN_URL="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            panic!(
                "DB_ADMIN_URL is not set and not in {}: run `make test` (which starts the stack), \
                 or start it with `scripts/stack.sh db-start` and then `set -a; . .local/stack.env; set +a`",
                file.display()
            )
        })
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database and a migrations folder for it; both removed on drop (best effort).
struct Scratch {
    admin: String,
    db: String,
    url: String,
    dir: PathBuf,
}

impl Scratch {
    async fn new(admin: &str) -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let db = format!("admin_test_{}_{n}", std::process::id());
        let mut conn = sqlx::MySqlConnection::connect(admin)
            .await
            .expect("connect as stack_admin");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let dir = std::env::temp_dir().join(&db);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            admin: admin.to_owned(),
            url: format!("{}/{db}", admin.trim_end_matches('/')),
            db,
            dir,
        }
    }

    fn write(&self, version: i64, name: &str, up: &str, down: &str) {
        std::fs::write(self.dir.join(format!("{version}_{name}.up.sql")), up).unwrap();
        std::fs::write(self.dir.join(format!("{version}_{name}.down.sql")), down).unwrap();
    }

    async fn migrator(&self) -> Migrator {
        Migrator::new(self.dir.as_path()).await.unwrap()
    }

    async fn tables(&self) -> Vec<String> {
        let mut conn = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
        let mut t: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> '_sqlx_migrations'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        t.sort();
        t
    }

    async fn cleanup(self) {
        if let Ok(mut conn) = sqlx::MySqlConnection::connect(&self.admin).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{}`",
                self.db
            )))
            .execute(&mut conn)
            .await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn opts(to: Option<i64>) -> Options {
    Options {
        to,
        lock_timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn up_down_status_round_trip() {
    let admin = admin_url();
    let s = Scratch::new(&admin).await;
    s.write(
        1,
        "create_a",
        "CREATE TABLE a (id BIGINT PRIMARY KEY) ENGINE=InnoDB;",
        "DROP TABLE a;",
    );
    s.write(
        2,
        "create_b",
        "CREATE TABLE b (id BIGINT PRIMARY KEY);\nCREATE TABLE c (id INT);",
        "DROP TABLE c;\nDROP TABLE b;",
    );
    let m = s.migrator().await;

    let rows = migrate::status(&s.url, &m).await.unwrap();
    assert!(rows.iter().all(|r| r.state == State::Pending), "{rows:?}");

    let out = migrate::up(&s.url, &m, opts(Some(1))).await.unwrap();
    assert_eq!(
        out.applied.iter().map(|x| x.version).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(s.tables().await, vec!["a"]);

    let out = migrate::up(&s.url, &m, opts(None)).await.unwrap();
    assert_eq!(out.applied.len(), 1);
    assert_eq!(out.current, Some(2));
    assert_eq!(s.tables().await, vec!["a", "b", "c"]);
    let again = migrate::up(&s.url, &m, opts(None)).await.unwrap();
    assert!(again.applied.is_empty(), "second up applies nothing");

    let rows = migrate::status(&s.url, &m).await.unwrap();
    assert!(
        rows.iter()
            .all(|r| r.state == State::Applied && r.checksum == ChecksumState::Ok),
        "{rows:?}"
    );

    let out = migrate::down(&s.url, &m, opts(None)).await.unwrap();
    assert_eq!(
        out.reverted.iter().map(|x| x.version).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(out.current, Some(1));
    assert_eq!(s.tables().await, vec!["a"]);

    migrate::up(&s.url, &m, opts(None)).await.unwrap();
    let out = migrate::down(&s.url, &m, opts(Some(0))).await.unwrap();
    assert_eq!(out.reverted.len(), 2);
    assert_eq!(out.current, None);
    assert!(s.tables().await.is_empty());
    s.cleanup().await;
}

#[tokio::test]
async fn changed_applied_file_is_refused() {
    let admin = admin_url();
    let s = Scratch::new(&admin).await;
    s.write(
        1,
        "create_a",
        "CREATE TABLE a (id BIGINT PRIMARY KEY);",
        "DROP TABLE a;",
    );
    migrate::up(&s.url, &s.migrator().await, opts(None))
        .await
        .unwrap();

    s.write(
        1,
        "create_a",
        "CREATE TABLE a (id BIGINT PRIMARY KEY, x INT);",
        "DROP TABLE a;",
    );
    s.write(
        2,
        "create_b",
        "CREATE TABLE b (id BIGINT PRIMARY KEY);",
        "DROP TABLE b;",
    );
    let changed = s.migrator().await;
    let rows = migrate::status(&s.url, &changed).await.unwrap();
    assert_eq!(rows[0].checksum, ChecksumState::Mismatch);
    assert_eq!(rows[1].state, State::Pending);
    let err = migrate::up(&s.url, &changed, opts(None)).await.unwrap_err();
    assert!(format!("{err:#}").contains("checksum mismatch"), "{err:#}");
    let err = migrate::down(&s.url, &changed, opts(None))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("checksum mismatch"), "{err:#}");
    assert_eq!(s.tables().await, vec!["a"], "nothing ran");
    s.cleanup().await;
}

#[tokio::test]
async fn runs_do_not_interleave() {
    let admin = admin_url();
    let s = Scratch::new(&admin).await;
    s.write(
        1,
        "slow",
        "DO SLEEP(1);\nCREATE TABLE a (id BIGINT PRIMARY KEY);",
        "DROP TABLE a;",
    );
    let m = s.migrator().await;

    // Two concurrent runs: one applies, the other waits for the lock, then finds nothing to do.
    let (a, b) = tokio::join!(
        migrate::up(&s.url, &m, opts(None)),
        migrate::up(&s.url, &m, opts(None))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.applied.len() + b.applied.len(), 1, "{a:?} {b:?}");

    // A held lock makes a run give up after its timeout, with a clear message.
    let mut holder = sqlx::MySqlConnection::connect(&s.url).await.unwrap();
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
        .bind(format!("admin-migrate:{}", s.db))
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(got, Some(1));
    let err = migrate::down(
        &s.url,
        &m,
        Options {
            to: None,
            lock_timeout: Duration::from_secs(1),
        },
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("lock"), "{err:#}");
    holder.close().await.unwrap();
    assert_eq!(s.tables().await, vec!["a"]);
    s.cleanup().await;
}

#[tokio::test]
async fn failed_migration_is_reported_and_blocks_further_runs() {
    let admin = admin_url();
    let s = Scratch::new(&admin).await;
    s.write(
        1,
        "broken",
        "CREATE TABLE a (id BIGINT PRIMARY KEY);\nSELECT * FROM no_such_table;",
        "DROP TABLE a;",
    );
    let m = s.migrator().await;
    let err = migrate::up(&s.url, &m, opts(None)).await.unwrap_err();
    assert!(format!("{err:#}").contains("no_such_table"), "{err:#}");
    // MySQL and MariaDB commit DDL implicitly: the CREATE TABLE stays, and so does sqlx's
    // `success = false` row written before the migration ran.
    let rows = migrate::status(&s.url, &m).await.unwrap();
    assert_eq!(rows[0].state, State::Failed, "{rows:?}");
    assert_eq!(
        s.tables().await,
        vec!["a"],
        "the DDL before the error was committed"
    );
    // Until someone repairs the schema, every run is refused and changes nothing.
    let err = migrate::up(&s.url, &m, opts(None)).await.unwrap_err();
    assert!(format!("{err:#}").contains("failed part-way"), "{err:#}");
    let err = migrate::down(&s.url, &m, opts(None)).await.unwrap_err();
    assert!(format!("{err:#}").contains("failed part-way"), "{err:#}");
    assert_eq!(
        migrate::status(&s.url, &m).await.unwrap()[0].state,
        State::Failed
    );
    assert_eq!(s.tables().await, vec!["a"]);
    s.cleanup().await;
}

#[tokio::test]
async fn bad_password_is_not_printed() {
    let admin = admin_url();
    let url = url::Url::parse(&admin).unwrap();
    let bad = format!(
        "mysql://stack_admin:wrong-Secret-123@{}:{}/mysql",
        url.host_str().unwrap(),
        url.port().unwrap()
    );
    let err = migrate::status(&bad, &migrate::AUTH).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(!text.contains("wrong-Secret-123"), "{text}");
    assert!(text.contains("***"), "{text}");
}
