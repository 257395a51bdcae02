//! Database migrations per service, on sqlx's migrator.
//!
//! Files: `migrations/<service>/<version>_<name>.up.sql` and `.down.sql` (every migration must be
//! reversible), embedded into the binary at compile time. sqlx records applied versions and
//! checksums in `_sqlx_migrations` and takes `GET_LOCK` while it migrates; around that we hold a
//! lock of our own (with a timeout, so a second run waits visibly instead of forever) while we
//! check the recorded checksums, so a changed file is refused for `up`, `down` and flagged by
//! `status`. All SQL here runs on MySQL 8.0 and MariaDB 10.11.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use sqlx::migrate::{MigrationType, Migrator};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection};

use crate::config::redact;
use crate::legacy::{self, CrossDb, NORMALIZE_DESCRIPTION, NORMALIZE_VERSION};

/// The auth service's migrations (`migrations/auth/`).
pub static AUTH: Migrator = sqlx::migrate!("../migrations/auth");
/// The customer service's migrations (`migrations/customer/`).
pub static CUSTOMER: Migrator = sqlx::migrate!("../migrations/customer");

/// How long a run waits for another run's lock unless told otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// A service with its own database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Auth,
    Customer,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::Auth, Service::Customer];

    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Customer => "customer",
        }
    }

    /// The embedded migrations of this service.
    pub fn migrator(self) -> &'static Migrator {
        match self {
            Service::Auth => &AUTH,
            Service::Customer => &CUSTOMER,
        }
    }

    /// The variable holding this service's database URL.
    pub fn url_var(self) -> &'static str {
        match self {
            Service::Auth => crate::config::AUTH_DB_URL_VAR,
            Service::Customer => crate::config::CUSTOMER_DB_URL_VAR,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of one run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `up`: apply up to and including this version; `down`: revert every version above it.
    pub to: Option<i64>,
    pub lock_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            to: None,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

/// A migration applied or reverted by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub version: i64,
    pub name: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<Step>,
    pub reverted: Vec<Step>,
    /// The highest applied version afterwards.
    pub current: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Applied,
    Pending,
    /// Recorded with success = false: a migration failed part-way (MySQL commits DDL implicitly).
    Failed,
    /// Recorded as applied, but no such file is embedded.
    MissingFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumState {
    Ok,
    Mismatch,
    /// Not applied, or no file to compare with.
    NotApplicable,
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub version: i64,
    pub name: String,
    pub state: State,
    pub checksum: ChecksumState,
}

impl fmt::Display for StatusRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Applied => "applied",
            State::Pending => "pending",
            State::Failed => "FAILED",
            State::MissingFile => "applied, FILE MISSING",
        };
        let checksum = match self.checksum {
            ChecksumState::Ok => "checksum ok",
            ChecksumState::Mismatch => "checksum MISMATCH",
            ChecksumState::NotApplicable => "-",
        };
        write!(
            f,
            "{:<16} {:<40} {:<22} {}",
            self.version, self.name, state, checksum
        )
    }
}

#[derive(Debug, Clone)]
struct AppliedRow {
    version: i64,
    description: String,
    success: bool,
    checksum: Vec<u8>,
}

/// Opens one connection (not a pool: the locks belong to the session and die with it).
pub async fn connect(url: &str) -> Result<MySqlConnection> {
    let opts = MySqlConnectOptions::from_str(url)
        .with_context(|| format!("Failed to parse the database URL {}", redact(url)))?;
    opts.connect()
        .await
        .with_context(|| format!("Failed to connect to {}", redact(url)))
}

/// Every migration must have an `.up.sql` and a `.down.sql`, and sqlx's own locking must be on.
pub fn check_source(migrator: &Migrator) -> Result<()> {
    ensure!(
        migrator.locking,
        "Failed to migrate: sqlx's migration lock is disabled"
    );
    let mut ups = BTreeMap::new();
    let mut downs = BTreeMap::new();
    for m in migrator.iter() {
        match m.migration_type {
            MigrationType::Simple => bail!(
                "Failed to accept migration {} ({}): it is not reversible; name it \
                 <version>_<name>.up.sql and add a .down.sql",
                m.version,
                m.description
            ),
            MigrationType::ReversibleUp => ups.insert(m.version, &m.description),
            MigrationType::ReversibleDown => downs.insert(m.version, &m.description),
        };
    }
    for (v, d) in &ups {
        ensure!(
            downs.contains_key(v),
            "Failed to accept migration {v} ({d}): it has no .down.sql"
        );
    }
    for (v, d) in &downs {
        ensure!(
            ups.contains_key(v),
            "Failed to accept migration {v} ({d}): it has no .up.sql"
        );
    }
    Ok(())
}

fn up_migrations(migrator: &Migrator) -> BTreeMap<i64, &sqlx::migrate::Migration> {
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (m.version, m))
        .collect()
}

async fn read_applied(conn: &mut MySqlConnection, table: &str) -> Result<Vec<AppliedRow>> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .context("Failed to look for the migrations table")?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String, bool, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, description, success, checksum FROM {table} ORDER BY version"
    )))
    .fetch_all(&mut *conn)
    .await
    .context("Failed to read the applied migrations")?;
    Ok(rows
        .into_iter()
        .map(|(version, description, success, checksum)| AppliedRow {
            version,
            description,
            success,
            checksum,
        })
        .collect())
}

fn status_rows(migrator: &Migrator, applied: &[AppliedRow]) -> Vec<StatusRow> {
    let ups = up_migrations(migrator);
    let by_version: BTreeMap<i64, &AppliedRow> = applied.iter().map(|a| (a.version, a)).collect();
    let mut versions: Vec<i64> = ups.keys().chain(by_version.keys()).copied().collect();
    versions.sort_unstable();
    versions.dedup();
    versions
        .into_iter()
        .map(|version| {
            let file = ups.get(&version);
            let row = by_version.get(&version);
            let name = file
                .map(|m| m.description.to_string())
                .or_else(|| row.map(|r| r.description.clone()))
                .unwrap_or_default();
            let (state, checksum) = match (file, row) {
                (_, Some(r)) if !r.success => (State::Failed, ChecksumState::NotApplicable),
                (Some(m), Some(r)) => (
                    State::Applied,
                    if *m.checksum == *r.checksum {
                        ChecksumState::Ok
                    } else {
                        ChecksumState::Mismatch
                    },
                ),
                (None, Some(_)) => (State::MissingFile, ChecksumState::NotApplicable),
                (_, None) => (State::Pending, ChecksumState::NotApplicable),
            };
            StatusRow {
                version,
                name,
                state,
                checksum,
            }
        })
        .collect()
}

/// Refuses a database whose recorded migrations disagree with the files.
fn verify(rows: &[StatusRow]) -> Result<()> {
    for r in rows {
        match (r.state, r.checksum) {
            (State::Failed, _) => bail!(
                "Failed to migrate: migration {} ({}) failed part-way earlier (success = false in \
                 _sqlx_migrations); repair the schema by hand, then delete that row",
                r.version,
                r.name
            ),
            (State::MissingFile, _) => bail!(
                "Failed to migrate: migration {} ({}) is applied but its file is gone",
                r.version,
                r.name
            ),
            (_, ChecksumState::Mismatch) => bail!(
                "Failed to migrate: migration {} ({}) was applied but its file has changed since \
                 (checksum mismatch); add a new migration instead of editing an applied one",
                r.version,
                r.name
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Our own session lock for this database; `GET_LOCK` names are at most 64 characters.
async fn lock(conn: &mut MySqlConnection, timeout: Duration) -> Result<String> {
    let db: Option<String> = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&mut *conn)
        .await
        .context("Failed to read the current database")?;
    let db = db.context("Failed to migrate: the database URL names no database")?;
    let name: String = format!("admin-migrate:{db}").chars().take(64).collect();
    let try_lock = |secs: i64| {
        sqlx::query_scalar::<_, Option<i64>>("SELECT GET_LOCK(?, ?)")
            .bind(name.clone())
            .bind(secs)
    };
    let got = try_lock(0)
        .fetch_one(&mut *conn)
        .await
        .context("Failed to take the migration lock")?;
    if got == Some(1) {
        return Ok(name);
    }
    eprintln!(
        "another migration run holds the lock on database {db}; waiting up to {} s",
        timeout.as_secs()
    );
    let secs = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX).max(1);
    let got = try_lock(secs)
        .fetch_one(&mut *conn)
        .await
        .context("Failed to take the migration lock")?;
    ensure!(
        got == Some(1),
        "Failed to take the migration lock on database {db} within {} s: another run still holds it",
        timeout.as_secs()
    );
    Ok(name)
}

async fn unlock(conn: &mut MySqlConnection, name: &str) -> Result<()> {
    sqlx::query_scalar::<_, Option<i64>>("SELECT RELEASE_LOCK(?)")
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .context("Failed to release the migration lock")?;
    Ok(())
}

/// What [`up_with`] and [`down_with`] start with: the source checked, one connection holding
/// the migration lock, and the applied migrations read and verified against the source.
async fn start_change(
    url: &str,
    migrator: &Migrator,
    lock_timeout: Duration,
) -> Result<(MySqlConnection, String, Vec<AppliedRow>)> {
    check_source(migrator)?;
    let mut conn = connect(url).await?;
    let lock_name = lock(&mut conn, lock_timeout).await?;
    let before = read_applied(&mut conn, migrator.table_name.as_ref()).await?;
    verify(&status_rows(migrator, &before))?;
    Ok((conn, lock_name, before))
}

/// Ends a change begun by [`start_change`]: the applied migrations as they are now, then the
/// lock released and the connection closed. (On an error before this the connection is
/// dropped, and the session lock goes with it.)
async fn finish_change(mut conn: MySqlConnection, migrator: &Migrator, lock_name: &str) -> Result<Vec<AppliedRow>> {
    let after = read_applied(&mut conn, migrator.table_name.as_ref()).await?;
    unlock(&mut conn, lock_name).await?;
    conn.close().await.ok();
    Ok(after)
}

fn current(applied: &[AppliedRow]) -> Option<i64> {
    applied
        .iter()
        .filter(|a| a.success)
        .map(|a| a.version)
        .max()
}

/// Whether `migrator` holds the customer service's migration 6 (`normalize customers`), which
/// drops the legacy identity columns and so is guarded (see [`crate::legacy`]).
pub fn has_normalize_step(migrator: &Migrator) -> bool {
    migrator.iter().any(|m| {
        m.version == NORMALIZE_VERSION
            && !m.migration_type.is_down_migration()
            && m.description == NORMALIZE_DESCRIPTION
    })
}

/// Applies pending migrations (all, or up to `opts.to`). Customer migration 6 is guarded: on a
/// database whose `customers` table holds rows it needs auth's database and key, so this plain
/// form refuses there (see [`up_with`]); fresh installs are unaffected.
pub async fn up(url: &str, migrator: &Migrator, opts: Options) -> Result<Outcome> {
    up_with(url, migrator, opts, &CrossDb::default()).await
}

/// [`up`] with what customer migration 6's guard may need: before 6 is applied, every legacy
/// customer must be in auth's `client_auth` with the same id, name and email
/// ([`crate::legacy::guard_normalize`]), unless `cross.allow_data_loss`.
pub async fn up_with(url: &str, migrator: &Migrator, opts: Options, cross: &CrossDb) -> Result<Outcome> {
    let (mut conn, lock_name, before) = start_change(url, migrator, opts.lock_timeout).await?;
    if let (Some(to), Some(cur)) = (opts.to, current(&before)) {
        ensure!(
            to >= cur,
            "Failed to migrate up to {to}: the database is already at {cur}; use `migrate down --to {to}`"
        );
    }
    let crosses_6 = has_normalize_step(migrator)
        && current(&before).unwrap_or(0) < NORMALIZE_VERSION
        && opts.to.is_none_or(|to| to >= NORMALIZE_VERSION);
    if crosses_6 {
        // Prove nothing would be lost before applying anything (on a fresh database there is no
        // `customers` table yet: nothing to prove).
        legacy::guard_normalize(&mut conn, cross).await?;
    }
    match opts.to {
        Some(to) => migrator.run_to(to, &mut conn).await,
        None => migrator.run(&mut conn).await,
    }
    .context("Failed to apply migrations")?;
    let after = finish_change(conn, migrator, &lock_name).await?;
    let old: Vec<i64> = before.iter().map(|a| a.version).collect();
    let ups = up_migrations(migrator);
    let applied = after
        .iter()
        .filter(|a| !old.contains(&a.version))
        .map(|a| Step {
            version: a.version,
            name: ups
                .get(&a.version)
                .map_or_else(|| a.description.clone(), |m| m.description.to_string()),
        })
        .collect();
    Ok(Outcome {
        applied,
        reverted: Vec::new(),
        current: current(&after),
    })
}

/// Reverts the latest applied migration, or every one above `opts.to`. Reverting customer
/// migration 6 on a database with customers needs auth (see [`down_with`]); this plain form
/// refuses there.
pub async fn down(url: &str, migrator: &Migrator, opts: Options) -> Result<Outcome> {
    down_with(url, migrator, opts, &CrossDb::default()).await
}

/// [`down`] with what reverting customer migration 6 needs: its SQL re-adds `name` and
/// `email_encrypted` empty, then they are repopulated from auth's `client_auth` (re-sealed in
/// auth's format) batch by batch ([`crate::legacy::repopulate`]). Before anything is reverted,
/// every customer must have a readable record in auth ([`crate::legacy::guard_denormalize`]),
/// unless `cross.allow_data_loss`. A repopulation cut short (crash) is finished by the next
/// `down` that ends on the legacy schema (e.g. `down --to 5` again).
pub async fn down_with(url: &str, migrator: &Migrator, opts: Options, cross: &CrossDb) -> Result<Outcome> {
    let (mut conn, lock_name, before) = start_change(url, migrator, opts.lock_timeout).await?;
    let mut versions: Vec<i64> = before
        .iter()
        .filter(|a| a.success)
        .map(|a| a.version)
        .collect();
    versions.sort_unstable();
    let target = match opts.to {
        Some(to) => {
            ensure!(
                to >= 0,
                "Failed to migrate down: --to must be 0 or a version"
            );
            to
        }
        None => match versions.len() {
            0 => 0,
            n if n >= 2 => versions[n - 2],
            _ => 0,
        },
    };
    let guarded = has_normalize_step(migrator);
    let crosses_6 = guarded && versions.contains(&NORMALIZE_VERSION) && target < NORMALIZE_VERSION;
    // Down to 0 drops `customers` altogether: nothing to repopulate.
    if crosses_6 && target >= 1 {
        // Refuse before reverting anything.
        legacy::guard_denormalize(&mut conn, cross).await?;
        migrator
            .undo(&mut conn, NORMALIZE_VERSION - 1)
            .await
            .context("Failed to revert migrations")?;
    }
    if versions.iter().any(|v| *v > target) {
        migrator
            .undo(&mut conn, target)
            .await
            .context("Failed to revert migrations")?;
    }
    if guarded {
        refill_legacy(&mut conn, cross, crosses_6 && target >= 1).await?;
    }
    let after = finish_change(conn, migrator, &lock_name).await?;
    let now: Vec<i64> = after.iter().map(|a| a.version).collect();
    let reverted = before
        .iter()
        .rev()
        .filter(|a| !now.contains(&a.version))
        .map(|a| Step {
            version: a.version,
            name: a.description.clone(),
        })
        .collect();
    Ok(Outcome {
        applied: Vec::new(),
        reverted,
        current: current(&after),
    })
}

/// On the legacy customer schema, fills every empty name/email from auth: right after migration
/// 6 was reverted (`required`: failures are errors), or to finish an earlier rollback that was cut
/// short (a warning when auth is not configured).
async fn refill_legacy(conn: &mut MySqlConnection, cross: &CrossDb, required: bool) -> Result<()> {
    // --allow-data-loss without auth access: the rows stay empty, as the guard announced.
    let required = required && (cross.has_auth_access() || !cross.allow_data_loss);
    if !required {
        let empty = legacy::table_exists(conn, "customers").await?
            && legacy::has_legacy_identity(conn).await?
            && legacy::count(conn, "SELECT COUNT(*) FROM customers WHERE email_encrypted = ''").await? > 0;
        if !empty {
            return Ok(());
        }
        if !cross.has_auth_access() {
            eprintln!(
                "warning: some customers have an empty name and email (a rollback of migration 6 cut short?); \
                 run `admin migrate down --service customer --to 5` with auth's database URL and encryption key to repopulate them"
            );
            return Ok(());
        }
    }
    let done = legacy::repopulate(conn, cross).await?;
    if done.filled > 0 {
        eprintln!("customer migration 6 rollback: repopulated the name and email of {} customers from auth", done.filled);
    }
    if !done.left_empty.is_empty() {
        let shown: Vec<&str> = done.left_empty.iter().take(legacy::MAX_IDS_PER_KIND).map(String::as_str).collect();
        eprintln!(
            "WARNING: {} customers have no readable record in auth and keep an empty name and email: {}",
            done.left_empty.len(),
            shown.join(", ")
        );
    }
    Ok(())
}

/// Every known migration, from the files and from the database, in version order.
pub async fn status(url: &str, migrator: &Migrator) -> Result<Vec<StatusRow>> {
    let mut conn = connect(url).await?;
    let applied = read_applied(&mut conn, migrator.table_name.as_ref()).await?;
    conn.close().await.ok();
    Ok(status_rows(migrator, &applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_migration_6_is_the_guarded_step() {
        assert!(has_normalize_step(&CUSTOMER));
        assert!(!has_normalize_step(&AUTH));
    }

    #[test]
    fn embedded_migrations_are_reversible_and_locked() {
        for s in Service::ALL {
            check_source(s.migrator()).unwrap_or_else(|e| panic!("{s}: {e:#}"));
        }
    }

    #[test]
    fn status_flags_changed_and_missing_files() {
        let m = sqlx::migrate::Migration::new(
            1,
            "one".into(),
            MigrationType::ReversibleUp,
            sqlx::SqlStr::from_static("SELECT 1"),
            false,
        );
        let migrator = Migrator::with_migrations(vec![m.clone()]);
        let ok = AppliedRow {
            version: 1,
            description: "one".into(),
            success: true,
            checksum: m.checksum.to_vec(),
        };
        let rows = status_rows(&migrator, std::slice::from_ref(&ok));
        assert_eq!(rows[0].state, State::Applied);
        assert_eq!(rows[0].checksum, ChecksumState::Ok);
        assert!(verify(&rows).is_ok());

        let changed = AppliedRow {
            checksum: vec![0; 48],
            ..ok.clone()
        };
        let rows = status_rows(&migrator, &[changed]);
        assert_eq!(rows[0].checksum, ChecksumState::Mismatch);
        assert!(verify(&rows).is_err());

        let gone = AppliedRow {
            version: 2,
            ..ok.clone()
        };
        let rows = status_rows(&migrator, &[ok, gone]);
        assert_eq!(rows[1].state, State::MissingFile);
        assert!(verify(&rows).is_err());

        assert!(
            check_source(&migrator).is_err(),
            "an up without a down is refused"
        );
    }
}
