//! The legacy identity copy and its counterpart in auth: what `backfill`, `verify`, `reencrypt`
//! and the customer migration-6 guard share.
//!
//! Before customer migration 6 (`normalize customers`) the customer service kept its own copy of
//! each user's name and sealed email in `customers.name` / `customers.email_encrypted`. We take
//! that copy to be in **the same sealed format auth uses** (crate `sealed-email`, `v1.<kid>.<...>`,
//! AAD = the user id, sealed with auth's `encryption_key` keyring): a value that does not open
//! that way is reported as a conflict, never guessed at (docs/upgrade.md).
//!
//! Every command here works in batches of ids in key order (keyset pagination: `id > last`), so
//! memory stays flat and a rerun after a crash redoes at most one batch. Reports name ids, never
//! a name or an email.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::IsTerminal as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use sealed_email::{EmailKeyring, NormalizedEmail, normalize_email};
use serde::Serialize;
use sqlx::mysql::{MySqlConnection, MySqlRow};
use sqlx::Connection as _;

use crate::config::{self, EnvFile};

/// Environment variable (and `.env` key) holding auth's `encryption_key` keyring.
pub const ENCRYPTION_KEY_VAR: &str = "SPIN_VARIABLE_ENCRYPTION_KEY";
/// The customer migration that drops the legacy identity columns.
pub const NORMALIZE_VERSION: i64 = 6;
/// Its description as sqlx derives it from `006_normalize_customers.up.sql`.
pub const NORMALIZE_DESCRIPTION: &str = "normalize customers";
/// Longest name auth accepts (`client_auth.name VARCHAR(255)`, auth's `Name::parse`).
pub const MAX_NAME_CHARS: usize = 255;
/// Rows per batch unless told otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 500;
/// Ids kept per kind of finding in a report.
pub const MAX_IDS_PER_KIND: usize = 1000;

// -------------------------------------------------------------------------------------------------
// Settings

/// The two database URL flags of the commands that work on both databases.
#[derive(clap::Args, Debug, Clone)]
pub struct DbUrls {
    /// auth database URL [default: $SPIN_VARIABLE_AUTH_DB_URL, then .env]
    #[arg(long, value_name = "URL")]
    pub auth_db_url: Option<String>,
    /// customer database URL [default: $SPIN_VARIABLE_CUSTOMER_DB_URL, then .env]
    #[arg(long, value_name = "URL")]
    pub customer_db_url: Option<String>,
}

/// Flags shared by the commands that work on both databases in batches (`backfill`, `verify`,
/// `reencrypt`, `purge`).
#[derive(clap::Args, Debug, Clone)]
pub struct DbArgs {
    #[command(flatten)]
    pub urls: DbUrls,
    /// Rows per batch (each batch is one read or delete, and at most one transaction per database)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Milliseconds to sleep after each written batch, to spare a busy production database
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub pause_ms: u64,
}

/// [`DbArgs`] and the keyring: the commands that read emails (`backfill`, `verify`, `reencrypt`).
#[derive(clap::Args, Debug, Clone)]
pub struct CrossDbArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// auth's encryption_key keyring. Other users can read it with `ps`: prefer
    /// $SPIN_VARIABLE_ENCRYPTION_KEY or .env [default: $SPIN_VARIABLE_ENCRYPTION_KEY, then .env]
    #[arg(long, value_name = "KEYRING")]
    pub encryption_key: Option<String>,
}

/// Flags the customer migration 6 guard adds to `migrate up|down`.
#[derive(clap::Args, Debug, Clone)]
pub struct GuardArgs {
    /// auth's encryption_key keyring, needed to migrate a customer database holding rows across
    /// version 6 (prefer $SPIN_VARIABLE_ENCRYPTION_KEY or .env: a flag shows in `ps`)
    #[arg(long, value_name = "KEYRING")]
    pub encryption_key: Option<String>,
    /// Apply (or revert) customer migration 6 even though some customers' names and emails are
    /// not in auth: they are lost (logged on standard error, id by id)
    #[arg(long)]
    pub allow_data_loss: bool,
    /// Rows per batch for the guard's checks and the rollback's repopulation
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
}

/// Everything a cross-database step may need, resolved from flags, the environment and `.env`.
/// URLs and the key are optional until a step needs them (a fresh install never does).
#[derive(Clone)]
pub struct CrossDb {
    pub auth_url: Option<String>,
    pub customer_url: Option<String>,
    encryption_key: Option<String>,
    pub batch_size: usize,
    pub pause: Duration,
    /// Customer migration 6 up/down: go on although data is lost.
    pub allow_data_loss: bool,
    /// Show progress bars / progress lines on standard error.
    pub progress: bool,
}

impl fmt::Debug for CrossDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrossDb")
            .field("auth_url", &self.auth_url.as_deref().map(config::redact))
            .field("customer_url", &self.customer_url.as_deref().map(config::redact))
            .field("encryption_key", &self.encryption_key.as_ref().map(|_| "***"))
            .field("batch_size", &self.batch_size)
            .field("allow_data_loss", &self.allow_data_loss)
            .finish_non_exhaustive()
    }
}

impl Default for CrossDb {
    /// Nothing configured: enough for fresh installs and empty tables, refuses the rest.
    fn default() -> Self {
        Self::new(None, None, None)
    }
}

impl CrossDb {
    /// For in-process callers (tests): explicit values, no flags or environment.
    pub fn new(auth_url: Option<&str>, customer_url: Option<&str>, encryption_key: Option<&str>) -> Self {
        Self {
            auth_url: auth_url.map(str::to_owned),
            customer_url: customer_url.map(str::to_owned),
            encryption_key: encryption_key.map(str::to_owned),
            batch_size: DEFAULT_BATCH_SIZE,
            pause: Duration::ZERO,
            allow_data_loss: false,
            progress: false,
        }
    }

    /// From the shared flags; `secrets` collects what must never be printed.
    pub fn from_args(args: &CrossDbArgs, env_file: &EnvFile, secrets: &mut Vec<String>) -> Result<Self> {
        warn_key_flag(args.encryption_key.as_deref());
        let mut cross = Self::from_db_args(&args.db, env_file, secrets)?;
        cross.encryption_key = config::resolve(args.encryption_key.as_deref(), ENCRYPTION_KEY_VAR, env_file);
        secrets.extend(cross.encryption_key.iter().cloned());
        Ok(cross)
    }

    /// The databases only, no keyring (`purge`).
    pub fn from_db_args(args: &DbArgs, env_file: &EnvFile, secrets: &mut Vec<String>) -> Result<Self> {
        ensure!(args.batch_size >= 1, "Failed to start: --batch-size must be at least 1");
        let auth_url = config::resolve(args.urls.auth_db_url.as_deref(), config::AUTH_DB_URL_VAR, env_file);
        let customer_url =
            config::resolve(args.urls.customer_db_url.as_deref(), config::CUSTOMER_DB_URL_VAR, env_file);
        for url in auth_url.iter().chain(customer_url.iter()) {
            secrets.extend(config::secrets_of(url));
        }
        Ok(Self {
            auth_url,
            customer_url,
            encryption_key: None,
            batch_size: args.batch_size,
            pause: Duration::from_millis(args.pause_ms),
            allow_data_loss: false,
            progress: true,
        })
    }

    /// For `migrate`: the auth URL comes from `migrate`'s own flag.
    pub fn for_migrate(
        args: &GuardArgs,
        auth_db_url_flag: Option<&str>,
        env_file: &EnvFile,
        secrets: &mut Vec<String>,
    ) -> Result<Self> {
        ensure!(args.batch_size >= 1, "Failed to migrate: --batch-size must be at least 1");
        warn_key_flag(args.encryption_key.as_deref());
        let auth_url = config::resolve(auth_db_url_flag, config::AUTH_DB_URL_VAR, env_file);
        let encryption_key = config::resolve(args.encryption_key.as_deref(), ENCRYPTION_KEY_VAR, env_file);
        secrets.extend(auth_url.iter().flat_map(|u| config::secrets_of(u)));
        secrets.extend(encryption_key.iter().cloned());
        Ok(Self {
            auth_url,
            customer_url: None,
            encryption_key,
            batch_size: args.batch_size,
            pause: Duration::ZERO,
            allow_data_loss: args.allow_data_loss,
            progress: true,
        })
    }

    /// Both what reading auth needs: its database URL and the keyring.
    pub fn has_auth_access(&self) -> bool {
        self.auth_url.is_some() && self.encryption_key.is_some()
    }

    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    pub fn with_allow_data_loss(mut self, allow: bool) -> Self {
        self.allow_data_loss = allow;
        self
    }

    /// The parsed keyring; `why` says what needs it.
    pub fn keyring(&self, why: &str) -> Result<EmailKeyring> {
        let raw = self.encryption_key.as_deref().ok_or_else(|| {
            anyhow!(
                "Failed to find {ENCRYPTION_KEY_VAR} ({why}): set it in the environment or .env \
                 (auth's encryption_key, the same value auth runs with), or pass --encryption-key"
            )
        })?;
        // The crate's errors name a position and a kid, never key material.
        EmailKeyring::parse(raw).map_err(|e| anyhow!("Failed to parse {ENCRYPTION_KEY_VAR}: {e}"))
    }

    pub fn auth_url(&self, why: &str) -> Result<&str> {
        self.auth_url.as_deref().ok_or_else(|| {
            anyhow!(
                "Failed to find {} ({why}): pass --auth-db-url or set it in the environment or .env",
                config::AUTH_DB_URL_VAR
            )
        })
    }

    pub fn customer_url(&self, why: &str) -> Result<&str> {
        self.customer_url.as_deref().ok_or_else(|| {
            anyhow!(
                "Failed to find {} ({why}): pass --customer-db-url or set it in the environment or .env",
                config::CUSTOMER_DB_URL_VAR
            )
        })
    }
}

pub(crate) fn warn_key_flag(flag: Option<&str>) {
    if flag.is_some_and(|v| !v.trim().is_empty()) {
        eprintln!(
            "warning: --encryption-key puts a secret on the command line (visible in `ps`); prefer {ENCRYPTION_KEY_VAR} in the environment or .env"
        );
    }
}

/// Runs an async command on a fresh single-threaded runtime, with `.env` discovered as
/// `migrate` does.
pub fn block_on<T>(
    env_file: Option<&Path>,
    f: impl AsyncFnOnce(EnvFile) -> Result<T>,
) -> Result<T> {
    let cwd = std::env::current_dir().context("Failed to read the current directory")?;
    let env_file = EnvFile::discover(env_file, &cwd)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Failed to start the async runtime")?;
    runtime.block_on(f(env_file))
}

/// Now, in Unix seconds, as the services store times.
pub fn now_secs() -> Result<i64> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("Failed to read the clock")?
        .as_secs();
    i64::try_from(secs).context("Failed to read the clock: out of range")
}

// -------------------------------------------------------------------------------------------------
// Exit codes

/// A command ran to the end and found something wrong (conflicts, integrity problems); its
/// report is already printed. The binary exits with 2 for this, 1 for any other error.
#[derive(Debug)]
pub struct Findings(pub String);

impl fmt::Display for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Findings {}

/// The process exit code for an error: 2 when it is [`Findings`], else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<Findings>().is_some() { 2 } else { 1 }
}

// -------------------------------------------------------------------------------------------------
// Database helpers

/// One connection (the commands are sequential; a pool buys nothing).
pub async fn connect(url: &str) -> Result<MySqlConnection> {
    crate::migrate::connect(url).await
}

pub async fn table_exists(conn: &mut MySqlConnection, table: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .with_context(|| format!("Failed to look for table {table}"))?;
    Ok(n > 0)
}

pub async fn column_exists(conn: &mut MySqlConnection, table: &str, column: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = ? AND COLUMN_NAME = ?",
    )
    .bind(table)
    .bind(column)
    .fetch_one(&mut *conn)
    .await
    .with_context(|| format!("Failed to look for column {table}.{column}"))?;
    Ok(n > 0)
}

/// The highest successfully applied migration (sqlx's `_sqlx_migrations`), if any.
pub async fn schema_version(conn: &mut MySqlConnection) -> Result<Option<i64>> {
    if !table_exists(conn, "_sqlx_migrations").await? {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
        .fetch_one(&mut *conn)
        .await
        .context("Failed to read the schema version")
}

/// True when `customers` still has the legacy identity columns (versions 1–5).
pub async fn has_legacy_identity(conn: &mut MySqlConnection) -> Result<bool> {
    Ok(column_exists(conn, "customers", "email_encrypted").await?
        && column_exists(conn, "customers", "name").await?)
}

pub async fn count(conn: &mut MySqlConnection, sql: &'static str) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(&mut *conn)
        .await
        .with_context(|| format!("Failed to count ({sql})"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Auth's database must hold `client_auth` (auth migrated first).
pub async fn require_client_auth(auth: &mut MySqlConnection) -> Result<()> {
    ensure!(
        table_exists(auth, "client_auth").await?,
        "Failed to read auth's database: it has no client_auth table; migrate auth first (`admin migrate up --service auth`)"
    );
    Ok(())
}

/// A legacy customer: the identity columns of versions 1–5.
#[derive(Debug, Clone)]
pub struct LegacyRow {
    pub id: String,
    pub name: String,
    pub email_encrypted: String,
    /// Unix seconds; `None` when NULL or not a valid TIMESTAMP.
    pub created_at: Option<i64>,
}

/// A row of auth's `client_auth`, as far as identity goes.
#[derive(Debug, Clone)]
pub struct AuthRow {
    pub id: String,
    pub name: String,
    pub email_encrypted: String,
    pub email_hash: String,
}

/// One page of a walk in key order (keyset pagination): the rows of `select` (`SELECT … FROM
/// table`) with `id > after`, at most `limit` of them (at least 1), by `id`.
async fn page_after<T>(
    conn: &mut MySqlConnection,
    select: &str,
    after: Option<&str>,
    limit: usize,
) -> sqlx::Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, MySqlRow> + Send + Unpin,
{
    let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
    let sql = match after {
        None => format!("{select} ORDER BY id LIMIT ?"),
        Some(_) => format!("{select} WHERE id > ? ORDER BY id LIMIT ?"),
    };
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    if let Some(last) = after {
        q = q.bind(last);
    }
    q.bind(limit).fetch_all(&mut *conn).await
}

/// The next batch of legacy customers after `after` (keyset pagination by primary key).
pub async fn legacy_batch(
    conn: &mut MySqlConnection,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<LegacyRow>> {
    const COLS: &str = "SELECT id, name, email_encrypted, CAST(UNIX_TIMESTAMP(created_at) AS SIGNED) FROM customers";
    let rows: Vec<(String, String, String, Option<i64>)> = page_after(conn, COLS, after, limit)
        .await
        .context("Failed to read a batch of customers")?;
    Ok(rows
        .into_iter()
        .map(|(id, name, email_encrypted, created_at)| LegacyRow {
            id,
            name,
            email_encrypted,
            created_at: created_at.filter(|t| *t > 0),
        })
        .collect())
}

/// The next batch of customer ids after `after`, with their Stripe id (normalized or legacy
/// schema alike; `with_stripe` = the column exists).
pub async fn customer_id_batch(
    conn: &mut MySqlConnection,
    after: Option<&str>,
    limit: usize,
    with_stripe: bool,
) -> Result<Vec<(String, Option<String>)>> {
    let stripe = if with_stripe { "stripe_customer_id" } else { "CAST(NULL AS CHAR)" };
    page_after(conn, &format!("SELECT id, {stripe} FROM customers"), after, limit)
        .await
        .context("Failed to read a batch of customers")
}

/// The next batch of `client_auth` rows after `after` (by id).
pub async fn auth_batch(conn: &mut MySqlConnection, after: Option<&str>, limit: usize) -> Result<Vec<AuthRow>> {
    const COLS: &str = "SELECT id, name, email_encrypted, email_hash FROM client_auth";
    let rows: Vec<(String, String, String, String)> = page_after(conn, COLS, after, limit)
        .await
        .context("Failed to read a batch of client_auth")?;
    Ok(rows.into_iter().map(auth_row).collect())
}

fn auth_row((id, name, email_encrypted, email_hash): (String, String, String, String)) -> AuthRow {
    AuthRow {
        id,
        name,
        email_encrypted,
        email_hash,
    }
}

/// The rows of `select_where` (`SELECT … WHERE column`) whose column is one of `values`, in
/// one query; none (and no query) for no values.
async fn rows_in<T>(conn: &mut MySqlConnection, select_where: &str, values: &[&str]) -> sqlx::Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, MySqlRow> + Send + Unpin,
{
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("{select_where} IN ({})", vec!["?"; values.len()].join(", "));
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for value in values {
        q = q.bind(*value);
    }
    q.fetch_all(&mut *conn).await
}

/// `client_auth` rows for these ids (exact match: `client_auth.id` is binary-collated).
pub async fn auth_by_ids(conn: &mut MySqlConnection, ids: &[&str]) -> Result<HashMap<String, AuthRow>> {
    let rows: Vec<(String, String, String, String)> =
        rows_in(conn, "SELECT id, name, email_encrypted, email_hash FROM client_auth WHERE id", ids)
            .await
            .context("Failed to read client_auth by id")?;
    Ok(rows.into_iter().map(|r| (r.0.clone(), auth_row(r))).collect())
}

/// Which `client_auth` id holds each of these blind indexes.
pub async fn auth_ids_by_hash(conn: &mut MySqlConnection, hashes: &[&str]) -> Result<HashMap<String, String>> {
    let rows: Vec<(String, String)> =
        rows_in(conn, "SELECT email_hash, id FROM client_auth WHERE email_hash", hashes)
            .await
            .context("Failed to read client_auth by email_hash")?;
    Ok(rows.into_iter().collect())
}

// -------------------------------------------------------------------------------------------------
// Classification

/// Why a legacy customer cannot be taken as "already in auth" nor be copied there as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// Not in auth yet (a backfill copies it). Only unresolved for the migration guard.
    MissingFromAuth,
    /// `customers.email_encrypted` does not open with the keyring and the id as context.
    LegacyEmailUnreadable,
    /// It opens, but is not an address auth accepts (`sealed_email::normalize_email`).
    LegacyEmailInvalid,
    /// Name and email are both empty (a rollback that could not repopulate them).
    LegacyIdentityEmpty,
    /// Auth would refuse the name: empty, over 255 characters, control characters, or
    /// surrounding whitespace (auth trims; copying it changed would be a guess).
    LegacyNameInvalid,
    /// Auth holds this id, but its email does not open (or is not a valid address).
    AuthEmailUnreadable,
    /// Auth holds this id with another email.
    EmailDiffers,
    /// Auth holds this id with another name.
    NameDiffers,
    /// Auth holds this email under another id.
    EmailTaken,
    /// Another legacy customer, also missing from auth, has the same (normalized) email.
    DuplicateLegacyEmail,
}

impl ConflictKind {
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingFromAuth => "missing_from_auth",
            Self::LegacyEmailUnreadable => "legacy_email_unreadable",
            Self::LegacyEmailInvalid => "legacy_email_invalid",
            Self::LegacyIdentityEmpty => "legacy_identity_empty",
            Self::LegacyNameInvalid => "legacy_name_invalid",
            Self::AuthEmailUnreadable => "auth_email_unreadable",
            Self::EmailDiffers => "email_differs",
            Self::NameDiffers => "name_differs",
            Self::EmailTaken => "email_taken",
            Self::DuplicateLegacyEmail => "duplicate_legacy_email",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::MissingFromAuth => "not in auth's client_auth yet (`admin backfill` copies it)",
            Self::LegacyEmailUnreadable => {
                "customers.email_encrypted does not open with encryption_key (AAD = id): wrong key, or not auth's sealed format"
            }
            Self::LegacyEmailInvalid => "customers.email_encrypted opens, but is not an address auth accepts",
            Self::LegacyIdentityEmpty => "customers.name and email_encrypted are empty and auth has no readable record",
            Self::LegacyNameInvalid => {
                "customers.name is not a name auth accepts (empty, over 255 characters, control characters, line separators, bidirectional overrides or surrounding spaces)"
            }
            Self::AuthEmailUnreadable => "auth holds this id, but its email_encrypted does not open with encryption_key",
            Self::EmailDiffers => "auth holds this id with a different email",
            Self::NameDiffers => "auth holds this id with a different name",
            Self::EmailTaken => "auth holds this email under another id",
            Self::DuplicateLegacyEmail => "another legacy customer missing from auth has the same email",
        }
    }
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One legacy customer that needs a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub id: String,
    pub kind: ConflictKind,
    /// The other id involved (`email_taken`, `duplicate_legacy_email`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_id: Option<String>,
}

/// A legacy customer to write into `client_auth`.
#[derive(Clone)]
pub struct NewAuthUser {
    pub id: String,
    pub name: String,
    pub email_encrypted: String,
    pub email_hash: String,
    pub created_at: Option<i64>,
}

impl fmt::Debug for NewAuthUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAuthUser").field("id", &self.id).finish_non_exhaustive()
    }
}

/// What a legacy customer is, compared with auth.
#[derive(Debug, Clone)]
pub enum Check {
    /// Auth holds the same id, name and email (or the legacy copy is empty and auth holds a
    /// readable record): nothing would be lost.
    Matched,
    /// Not in auth, and nothing stands in the way of copying it there.
    Missing(NewAuthUser),
    Conflict(Conflict),
}

/// Whether auth would accept `name` exactly as it is (auth's `Name::parse`, without its trim):
/// no control characters, line separators or bidirectional overrides (auth's
/// `fields::breaks_display`; the two must change together). Auth also composes a new name to
/// NFC; the backfill does not: it copies a legacy name byte for byte, as auth serves names
/// stored before that rule.
pub fn name_acceptable(name: &str) -> bool {
    let breaks_display =
        |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    !name.is_empty() && name.trim() == name && name.chars().count() <= MAX_NAME_CHARS && !name.chars().any(breaks_display)
}

/// Opens a value sealed in auth's format (AAD = the row's id) and normalizes it.
pub fn open_email(keyring: &EmailKeyring, sealed: &str, id: &str) -> Result<NormalizedEmail, OpenFailure> {
    let plain = keyring
        .open_with_aad(sealed, id.as_bytes())
        .map_err(|_| OpenFailure::Unreadable)?;
    normalize_email(&plain).map_err(|_| OpenFailure::Invalid)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    Unreadable,
    Invalid,
}

/// Compares one legacy customer with auth's row of the same id (`same_id`) and with the id that
/// holds its email's blind index in auth (`email_owner`). Pure: no database, no guessing.
pub fn classify(
    keyring: &EmailKeyring,
    row: &LegacyRow,
    same_id: Option<&AuthRow>,
    email_owner: Option<&str>,
) -> Check {
    let conflict = |kind, other_id: Option<&str>| {
        Check::Conflict(Conflict {
            id: row.id.clone(),
            kind,
            other_id: other_id.map(str::to_owned),
        })
    };
    if row.email_encrypted.is_empty() && row.name.is_empty() {
        // Nothing to lose here; auth must hold the identity for the row to be sound.
        return match same_id {
            Some(a) if open_email(keyring, &a.email_encrypted, &a.id).is_ok() => Check::Matched,
            _ => conflict(ConflictKind::LegacyIdentityEmpty, None),
        };
    }
    let email = match open_email(keyring, &row.email_encrypted, &row.id) {
        Ok(e) => e,
        Err(OpenFailure::Unreadable) => return conflict(ConflictKind::LegacyEmailUnreadable, None),
        Err(OpenFailure::Invalid) => return conflict(ConflictKind::LegacyEmailInvalid, None),
    };
    if let Some(a) = same_id {
        let Ok(auth_email) = open_email(keyring, &a.email_encrypted, &a.id) else {
            return conflict(ConflictKind::AuthEmailUnreadable, None);
        };
        if auth_email != email {
            return conflict(ConflictKind::EmailDiffers, None);
        }
        if a.name != row.name {
            return conflict(ConflictKind::NameDiffers, None);
        }
        return Check::Matched;
    }
    if let Some(other) = email_owner.filter(|o| *o != row.id) {
        return conflict(ConflictKind::EmailTaken, Some(other));
    }
    if !name_acceptable(&row.name) {
        return conflict(ConflictKind::LegacyNameInvalid, None);
    }
    Check::Missing(NewAuthUser {
        id: row.id.clone(),
        name: row.name.clone(),
        email_hash: keyring.blind_index(&email),
        email_encrypted: keyring.seal_with_aad(&email, row.id.as_bytes()),
        created_at: row.created_at,
    })
}

/// Classifies one batch of legacy rows against auth (two indexed reads).
pub async fn classify_batch(
    auth: &mut MySqlConnection,
    keyring: &EmailKeyring,
    rows: &[LegacyRow],
) -> Result<Vec<Check>> {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let by_id = auth_by_ids(auth, &ids).await?;
    // Blind indexes of the rows auth lacks, to find their emails under other ids.
    let mut hashes: Vec<(usize, String)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if !by_id.contains_key(&r.id)
            && let Ok(e) = open_email(keyring, &r.email_encrypted, &r.id)
        {
            hashes.push((i, keyring.blind_index(&e)));
        }
    }
    let hash_refs: Vec<&str> = hashes.iter().map(|(_, h)| h.as_str()).collect();
    let owners = auth_ids_by_hash(auth, &hash_refs).await?;
    let mut owner_of: HashMap<usize, &str> = HashMap::new();
    for (i, h) in &hashes {
        if let Some(owner) = owners.get(h) {
            owner_of.insert(*i, owner.as_str());
        }
    }
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, r)| classify(keyring, r, by_id.get(&r.id), owner_of.get(&i).copied()))
        .collect())
}

/// The outcome of comparing every legacy customer with auth.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub checked: u64,
    pub matched: u64,
    /// Legacy customers a backfill would copy into auth.
    pub missing: u64,
    /// Some of their ids, for reports.
    pub missing_ids: Vec<String>,
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    /// Everything not already in auth: what migration 6 would lose.
    pub fn unresolved(&self) -> u64 {
        self.missing + self.conflicts.len() as u64
    }

    pub fn conflict_ids(&self) -> std::collections::HashSet<&str> {
        self.conflicts.iter().map(|c| c.id.as_str()).collect()
    }

    /// Conflicts grouped by kind, each with its ids in key order.
    pub fn by_kind(&self) -> BTreeMap<ConflictKind, Vec<&Conflict>> {
        let mut out: BTreeMap<ConflictKind, Vec<&Conflict>> = BTreeMap::new();
        for c in &self.conflicts {
            out.entry(c.kind).or_default().push(c);
        }
        out
    }

    /// A human-readable listing of what is unresolved (ids only), `max_ids` per kind.
    pub fn describe_unresolved(&self, max_ids: usize) -> String {
        let mut out = String::new();
        if self.missing > 0 {
            out.push_str(&format!(
                "  {:<24} {:>8}  {}\n",
                ConflictKind::MissingFromAuth.code(),
                self.missing,
                ConflictKind::MissingFromAuth.describe()
            ));
            for id in self.missing_ids.iter().take(max_ids) {
                out.push_str(&format!("      {id}\n"));
            }
            if self.missing > max_ids as u64 {
                out.push_str(&format!("      ... and {} more\n", self.missing - max_ids.min(self.missing_ids.len()) as u64));
            }
        }
        for (kind, list) in self.by_kind() {
            out.push_str(&format!("  {:<24} {:>8}  {}\n", kind.code(), list.len(), kind.describe()));
            for c in list.iter().take(max_ids) {
                match &c.other_id {
                    Some(o) => out.push_str(&format!("      {}  (other id: {o})\n", c.id)),
                    None => out.push_str(&format!("      {}\n", c.id)),
                }
            }
            if list.len() > max_ids {
                out.push_str(&format!("      ... and {} more\n", list.len() - max_ids));
            }
        }
        out
    }
}

/// Compares every legacy customer with auth, read-only: the first pass of `backfill` and the
/// migration-6 guard. Duplicate emails among the customers auth lacks are conflicts for every
/// customer involved (choosing one would be a guess).
pub async fn plan(
    customers: &mut MySqlConnection,
    auth: &mut MySqlConnection,
    keyring: &EmailKeyring,
    batch_size: usize,
    progress: &mut Progress,
) -> Result<Plan> {
    let mut plan = Plan::default();
    // blind index -> id of each customer a backfill would copy
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut duplicated: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let rows = legacy_batch(customers, after.as_deref(), batch_size).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id.clone());
        let checks = classify_batch(auth, keyring, &rows).await?;
        for check in checks {
            plan.checked += 1;
            match check {
                Check::Matched => plan.matched += 1,
                Check::Conflict(c) => plan.conflicts.push(c),
                Check::Missing(user) => match pending.get(&user.email_hash) {
                    Some(first) => {
                        if duplicated.insert(first.clone()) {
                            // It was counted as missing; it is a conflict now.
                            plan.missing -= 1;
                            plan.conflicts.push(Conflict {
                                id: first.clone(),
                                kind: ConflictKind::DuplicateLegacyEmail,
                                other_id: Some(user.id.clone()),
                            });
                        }
                        duplicated.insert(user.id.clone());
                        plan.conflicts.push(Conflict {
                            id: user.id.clone(),
                            kind: ConflictKind::DuplicateLegacyEmail,
                            other_id: Some(first.clone()),
                        });
                    }
                    None => {
                        pending.insert(user.email_hash.clone(), user.id.clone());
                        plan.missing += 1;
                    }
                },
            }
        }
        progress.inc(rows.len() as u64);
    }
    let mut missing: Vec<String> = pending.into_values().filter(|id| !duplicated.contains(id)).collect();
    missing.sort();
    missing.truncate(MAX_IDS_PER_KIND);
    plan.missing_ids = missing;
    plan.conflicts.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    Ok(plan)
}

// -------------------------------------------------------------------------------------------------
// The customer migration 6 guard (called by `migrate`, holding the migration lock)

/// Before migration 6 drops `customers.name` / `email_encrypted`: every customer must be in auth
/// with the same id, name and email. An empty table needs no auth access at all.
pub async fn guard_normalize(customers: &mut MySqlConnection, cross: &CrossDb) -> Result<()> {
    if !table_exists(customers, "customers").await? || !has_legacy_identity(customers).await? {
        return Ok(());
    }
    let total = count(customers, "SELECT COUNT(*) FROM customers").await?;
    if total == 0 {
        return Ok(());
    }
    if cross.allow_data_loss && !cross.has_auth_access() {
        eprintln!(
            "WARNING: --allow-data-loss without auth's database URL and encryption key: applying customer migration 6 drops the name and email of all {total} customers unchecked"
        );
        return Ok(());
    }
    let why = format!(
        "customers holds {total} rows: before migration 6 drops their names and emails, each must be proven present in auth"
    );
    let keyring = cross.keyring(&why)?;
    let mut auth = connect(cross.auth_url(&why)?).await?;
    require_client_auth(&mut auth).await?;
    let mut progress = Progress::new("guard 6", total, cross.progress);
    let plan = plan(customers, &mut auth, &keyring, cross.batch_size, &mut progress).await?;
    progress.finish();
    auth.close().await.ok();
    let unresolved = plan.unresolved();
    if unresolved == 0 {
        eprintln!(
            "customer migration 6 guard: all {} customers are in auth with the same id, name and email",
            plan.checked
        );
        return Ok(());
    }
    let listing = plan.describe_unresolved(5);
    if cross.allow_data_loss {
        eprintln!(
            "WARNING: --allow-data-loss: applying customer migration 6 although {unresolved} of {} customers are not in auth with the same name and email; their customers.name and customers.email_encrypted are dropped:\n{}",
            plan.checked,
            plan.describe_unresolved(MAX_IDS_PER_KIND)
        );
        return Ok(());
    }
    bail!(
        "Refusing to apply customer migration 6 (normalize customers): it drops customers.name and \
         customers.email_encrypted, and {unresolved} of {} customers are not in auth's client_auth \
         with the same id, name and email:\n{listing}\
         Nothing was applied. Run `admin backfill` (`--dry-run` lists every id) and resolve the \
         conflicts it reports, then `admin verify` (docs/upgrade.md); or pass --allow-data-loss to \
         drop them anyway.",
        plan.checked
    )
}

/// Before migration 6 is reverted: every customer must be in auth with a readable email, or the
/// rolled-back legacy table would hold empty names and emails. Returns how many customers there
/// are (0: nothing to repopulate, no auth access needed).
pub async fn guard_denormalize(customers: &mut MySqlConnection, cross: &CrossDb) -> Result<u64> {
    if !table_exists(customers, "customers").await? {
        return Ok(0);
    }
    let total = count(customers, "SELECT COUNT(*) FROM customers").await?;
    if total == 0 {
        return Ok(0);
    }
    if cross.allow_data_loss && !cross.has_auth_access() {
        eprintln!(
            "WARNING: --allow-data-loss without auth's database URL and encryption key: reverting customer migration 6 leaves the name and email of all {total} customers empty"
        );
        return Ok(total);
    }
    let why = format!(
        "customers holds {total} rows: reverting migration 6 repopulates their names and emails from auth"
    );
    let keyring = cross.keyring(&why)?;
    let mut auth = connect(cross.auth_url(&why)?).await?;
    require_client_auth(&mut auth).await?;
    let mut progress = Progress::new("check 6↓", total, cross.progress);
    let mut unresolved: Vec<Conflict> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let batch = customer_id_batch(customers, after.as_deref(), cross.batch_size, false).await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.0.clone());
        let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
        let found = auth_by_ids(&mut auth, &ids).await?;
        for id in ids {
            let kind = match found.get(id) {
                None => Some(ConflictKind::MissingFromAuth),
                Some(a) if open_email(&keyring, &a.email_encrypted, &a.id).is_err() => {
                    Some(ConflictKind::AuthEmailUnreadable)
                }
                Some(_) => None,
            };
            if let Some(kind) = kind {
                unresolved.push(Conflict {
                    id: id.to_owned(),
                    kind,
                    other_id: None,
                });
            }
        }
        progress.inc(batch.len() as u64);
    }
    progress.finish();
    auth.close().await.ok();
    if unresolved.is_empty() {
        return Ok(total);
    }
    let plan = Plan {
        checked: total,
        conflicts: unresolved,
        ..Plan::default()
    };
    if cross.allow_data_loss {
        eprintln!(
            "WARNING: --allow-data-loss: reverting customer migration 6 although {} of {total} customers have no readable record in auth; they get an empty name and email:\n{}",
            plan.conflicts.len(),
            plan.describe_unresolved(MAX_IDS_PER_KIND)
        );
        return Ok(total);
    }
    bail!(
        "Refusing to revert customer migration 6: {} of {total} customers have no readable record in \
         auth, so the legacy columns could not be repopulated for them:\n{}\
         Nothing was changed. Fix auth (or pass --allow-data-loss to leave them empty).",
        plan.conflicts.len(),
        plan.describe_unresolved(5)
    )
}

/// What [`repopulate`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repopulated {
    pub filled: u64,
    /// Ids left empty (auth has no readable record).
    pub left_empty: Vec<String>,
}

/// After migration 6's down SQL re-added the legacy columns (empty): fills `name` and
/// `email_encrypted` of every customer whose copy is empty from auth, re-sealed with the active
/// key in auth's format (AAD = id), batch by batch. Idempotent: a rerun fills what is still
/// empty, so a crash half-way is resumed by running it again (`migrate down` does).
pub async fn repopulate(customers: &mut MySqlConnection, cross: &CrossDb) -> Result<Repopulated> {
    let mut out = Repopulated::default();
    if !table_exists(customers, "customers").await? || !has_legacy_identity(customers).await? {
        return Ok(out);
    }
    let empty = count(customers, "SELECT COUNT(*) FROM customers WHERE email_encrypted = ''").await?;
    if empty == 0 {
        return Ok(out);
    }
    let why = format!("{empty} customers have an empty name and email to repopulate from auth");
    let keyring = cross.keyring(&why)?;
    let mut auth = connect(cross.auth_url(&why)?).await?;
    require_client_auth(&mut auth).await?;
    let total = count(customers, "SELECT COUNT(*) FROM customers").await?;
    let mut progress = Progress::new("refill", total, cross.progress);
    let mut after: Option<String> = None;
    loop {
        let rows = legacy_batch(customers, after.as_deref(), cross.batch_size).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id.clone());
        let todo: Vec<&LegacyRow> = rows.iter().filter(|r| r.email_encrypted.is_empty()).collect();
        if !todo.is_empty() {
            let ids: Vec<&str> = todo.iter().map(|r| r.id.as_str()).collect();
            let found = auth_by_ids(&mut auth, &ids).await?;
            let mut tx = customers.begin().await.context("Failed to start a transaction")?;
            for r in todo {
                let Some(a) = found.get(&r.id) else {
                    out.left_empty.push(r.id.clone());
                    continue;
                };
                let Ok(email) = open_email(&keyring, &a.email_encrypted, &a.id) else {
                    out.left_empty.push(r.id.clone());
                    continue;
                };
                let sealed = keyring.seal_with_aad(&email, r.id.as_bytes());
                // `updated_at = updated_at` keeps the row's own timestamp (no ON UPDATE bump).
                sqlx::query(
                    "UPDATE customers SET name = ?, email_encrypted = ?, updated_at = updated_at \
                     WHERE id = ? AND email_encrypted = ''",
                )
                .bind(&a.name)
                .bind(&sealed)
                .bind(&r.id)
                .execute(&mut *tx)
                .await
                .context("Failed to repopulate a customer")?;
                out.filled += 1;
            }
            tx.commit().await.context("Failed to commit a batch")?;
        }
        progress.inc(rows.len() as u64);
    }
    progress.finish();
    auth.close().await.ok();
    Ok(out)
}

// -------------------------------------------------------------------------------------------------
// Progress

/// A progress bar on standard error with counts and rate (indicatif), or, when standard error is
/// not a terminal, a plain line every 10 s (and none for short runs).
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    label: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    pub fn new(label: &'static str, total: u64, enabled: bool) -> Self {
        let tty = enabled && std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>11} [{elapsed_precise}] [{bar:32}] {human_pos}/{human_len} rows, {rate} rows/s, eta {eta}",
                )
                .expect("valid template")
                .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}", state.per_sec());
                })
                .progress_chars("=> "),
            );
            bar.set_prefix(label);
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            lines: enabled && !tty,
            label,
            total,
            done: 0,
            started: now,
            last_line: now,
        }
    }

    /// No output at all (tests, nested steps).
    pub fn hidden() -> Self {
        Self::new("", 0, false)
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if self.lines && self.last_line.elapsed() >= Duration::from_secs(10) {
            self.last_line = Instant::now();
            eprintln!(
                "{}: {}/{} rows ({:.0} rows/s)",
                self.label,
                self.done,
                self.total,
                rate(self.done, self.started.elapsed())
            );
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(&mut self) -> Duration {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.started.elapsed()
    }
}

/// Rows per second.
pub fn rate(rows: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 { rows as f64 } else { rows as f64 / secs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> EmailKeyring {
        EmailKeyring::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
    }

    fn legacy(k: &EmailKeyring, id: &str, name: &str, email: &str) -> LegacyRow {
        LegacyRow {
            id: id.into(),
            name: name.into(),
            email_encrypted: k.seal_with_aad(&normalize_email(email).unwrap(), id.as_bytes()),
            created_at: Some(1_600_000_000),
        }
    }

    fn auth(k: &EmailKeyring, id: &str, name: &str, email: &str) -> AuthRow {
        let e = normalize_email(email).unwrap();
        AuthRow {
            id: id.into(),
            name: name.into(),
            email_encrypted: k.seal_with_aad(&e, id.as_bytes()),
            email_hash: k.blind_index(&e),
        }
    }

    fn kind(c: Check) -> Option<ConflictKind> {
        match c {
            Check::Conflict(c) => Some(c.kind),
            _ => None,
        }
    }

    #[test]
    fn same_identity_matches_case_insensitively() {
        let k = keyring();
        let row = legacy(&k, "u1", "Zoë 🦀", "Zoe@Example.ORG");
        let a = auth(&k, "u1", "Zoë 🦀", "zoe@example.org");
        assert!(matches!(classify(&k, &row, Some(&a), None), Check::Matched));
    }

    #[test]
    fn differences_are_conflicts_not_guesses() {
        let k = keyring();
        let row = legacy(&k, "u1", "Zoë", "zoe@example.org");
        assert_eq!(kind(classify(&k, &row, Some(&auth(&k, "u1", "Zoë", "z@example.org")), None)), Some(ConflictKind::EmailDiffers));
        assert_eq!(kind(classify(&k, &row, Some(&auth(&k, "u1", "Zoe", "zoe@example.org")), None)), Some(ConflictKind::NameDiffers));
        assert_eq!(kind(classify(&k, &row, None, Some("u2"))), Some(ConflictKind::EmailTaken));
        let mut moved = auth(&k, "u9", "Zoë", "zoe@example.org");
        moved.id = "u1".into(); // sealed for another row: does not open here
        assert_eq!(kind(classify(&k, &row, Some(&moved), None)), Some(ConflictKind::AuthEmailUnreadable));
        let other = EmailKeyring::parse("k1:HxwdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=").unwrap();
        let foreign = legacy(&other, "u1", "Zoë", "zoe@example.org");
        assert_eq!(kind(classify(&k, &foreign, None, None)), Some(ConflictKind::LegacyEmailUnreadable));
        let spaced = legacy(&k, "u1", "Zoë ", "zoe@example.org");
        assert_eq!(kind(classify(&k, &spaced, None, None)), Some(ConflictKind::LegacyNameInvalid));
    }

    #[test]
    fn missing_users_are_sealed_in_auths_format() {
        let k = keyring();
        let row = legacy(&k, "u1", "Ana María", "Ana@Example.org");
        let Check::Missing(user) = classify(&k, &row, None, None) else { panic!("missing") };
        assert_eq!(k.open_with_aad(&user.email_encrypted, b"u1").unwrap(), "ana@example.org");
        assert_eq!(user.email_hash, k.blind_index(&normalize_email("ana@example.org").unwrap()));
        assert_eq!(user.created_at, Some(1_600_000_000));
    }

    #[test]
    fn empty_legacy_copy_is_fine_only_when_auth_holds_the_user() {
        let k = keyring();
        let row = LegacyRow { id: "u1".into(), name: String::new(), email_encrypted: String::new(), created_at: None };
        assert!(matches!(classify(&k, &row, Some(&auth(&k, "u1", "A", "a@example.org")), None), Check::Matched));
        assert_eq!(kind(classify(&k, &row, None, None)), Some(ConflictKind::LegacyIdentityEmpty));
    }

    #[test]
    fn names_auth_accepts() {
        assert!(name_acceptable("Łukasz Żółć 👩‍💻"));
        assert!(!name_acceptable(""));
        assert!(!name_acceptable(" x"));
        assert!(!name_acceptable("a\u{7}b"));
        assert!(!name_acceptable("Alice\u{202E}gnp.exe"));
        assert!(!name_acceptable("a\u{2028}b"));
        assert!(name_acceptable("\u{5e9}\u{5dc}\u{5d5}\u{5dd} (Shalom)\u{200F}"));
        assert!(name_acceptable(&"é".repeat(255)));
        assert!(!name_acceptable(&"é".repeat(256)));
    }

    #[test]
    fn findings_exit_with_two() {
        assert_eq!(exit_code(&anyhow::Error::new(Findings("x".into()))), 2);
        assert_eq!(exit_code(&anyhow!("boom")), 1);
        assert_eq!(exit_code(&anyhow::Error::new(Findings("x".into())).context("outer")), 2);
    }
}
