//! `admin reencrypt`: after an `encryption_key` rotation (a new key prepended, see
//! `admin keys rotate encryption-key`), re-seal every stored email (and every authenticator-app
//! secret auth keeps, `client_auth.totp_secret`) that is not sealed with the active (first) key,
//! so the old key can be retired.
//!
//! Tables: auth's `client_auth.email_encrypted`, and the legacy `customers.email_encrypted` while
//! customer migration 6 is not applied. Values are opened with the whole keyring (AAD = the row's
//! id, auth's format) and sealed again with the active key; the blind index (`email_hash`) does not
//! change (it derives from the last key, which a rotation keeps). In batches by id; each row is
//! updated only if it still holds the value read (`WHERE email_encrypted = <old>`), so a
//! concurrent write by auth is never overwritten; a rerun after a crash re-seals what is left.
//! The report ends with how many values each key id still seals: retire a key only once its count
//! is 0.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use sealed_email::EmailKeyring;
use serde::Serialize;
use sqlx::Connection as _;
use sqlx::mysql::MySqlConnection;

use crate::legacy::{self, CrossDb, CrossDbArgs, Findings, MAX_IDS_PER_KIND, Progress};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub db: CrossDbArgs,
    /// Which stored emails
    #[arg(long, value_enum, default_value_t = Target::All)]
    pub target: Target,
    /// Count what would be re-sealed; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Re-index (retire the blind-index root key): read the NEW keyring from this environment
    /// variable, open each value with the current keyring ($SPIN_VARIABLE_ENCRYPTION_KEY) or the
    /// new one, re-seal it with the new active key and recompute email_hash with the new root.
    /// Sign-in by email fails for re-indexed users until auth runs with the new keyring: do it in
    /// a maintenance window (docs/upgrade.md)
    #[arg(long, value_name = "ENV_VAR")]
    pub reindex_to_env: Option<String>,
    /// Print the report as JSON on standard output
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// auth's client_auth
    Auth,
    /// the legacy customers.email_encrypted (customer schema before migration 6)
    Customer,
    /// both (customers only when its database is configured and still legacy)
    All,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    pub table: String,
    pub checked: u64,
    /// Already sealed with the active key (and, when re-indexing, indexed with the new root).
    pub current: u64,
    /// Re-sealed by this run (or, in a dry run, that would be).
    pub resealed: u64,
    /// Changed by someone else between our read and our write: left alone (a rerun picks them up).
    pub skipped_concurrent: u64,
    /// Do not open with any configured key: they cannot be re-sealed.
    pub unreadable: u64,
    pub unreadable_ids: Vec<String>,
    /// After the run: how many values each key id seals (`?` for values not in the v1 format).
    pub sealed_by_kid: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub active_kid: String,
    /// Re-indexing: the kid of the new blind-index root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reindexed_to: Option<String>,
    pub dry_run: bool,
    pub tables: Vec<TableReport>,
    /// Why a table was not looked at.
    pub skipped: Vec<String>,
    pub duration_ms: u128,
}

impl TableReport {
    /// A value no configured key opens (its id kept, up to [`MAX_IDS_PER_KIND`]).
    fn record_unreadable(&mut self, id: &str) {
        self.unreadable += 1;
        if self.unreadable_ids.len() < MAX_IDS_PER_KIND {
            self.unreadable_ids.push(id.to_owned());
        }
    }

    /// A conditional re-seal: one row changed, or none because the value changed meanwhile.
    fn record_write(&mut self, rows_affected: u64) {
        if rows_affected == 1 {
            self.resealed += 1;
        } else {
            self.skipped_concurrent += 1;
        }
    }
}

/// How many values of `column` in `table` (rows where `filter` holds) each key id seals; `?`
/// for values not in the v1 format. `column`, `table` and `filter` are constants of ours.
async fn count_by_kid(conn: &mut MySqlConnection, column: &str, table: &str, filter: &str) -> Result<BTreeMap<String, u64>> {
    let kids: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(CASE WHEN {column} LIKE 'v1.%.%' \
                THEN SUBSTRING_INDEX(SUBSTRING_INDEX({column}, '.', 2), '.', -1) ELSE '?' END AS CHAR) AS kid, \
                COUNT(*) FROM {table} WHERE {filter} GROUP BY kid ORDER BY kid"
    )))
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("Failed to count {table}.{column} values by key id"))?;
    Ok(kids.into_iter().map(|(k, n)| (k, u64::try_from(n).unwrap_or(0))).collect())
}

impl Report {
    pub fn unreadable(&self) -> u64 {
        self.tables.iter().map(|t| t.unreadable).sum()
    }
}

/// `admin reencrypt` as a library call.
pub async fn run(cross: &CrossDb, target: Target, dry_run: bool) -> Result<Report> {
    run_with(cross, target, dry_run, None).await
}

/// [`run`], or a re-index when `reindex_to` holds the new keyring's value: values are opened
/// with the current keyring (or the new one), sealed with the new active key, and
/// `client_auth.email_hash` is recomputed under the new blind-index root.
pub async fn run_with(cross: &CrossDb, target: Target, dry_run: bool, reindex_to: Option<&str>) -> Result<Report> {
    let current = cross.keyring("reencrypt opens and re-seals every email")?;
    let (keyring, old) = match reindex_to {
        None => (current, None),
        Some(value) => {
            let new = EmailKeyring::parse(value)
                .map_err(|e| anyhow::anyhow!("Failed to parse the new keyring for --reindex-to-env: {e}"))?;
            (new, Some(current))
        }
    };
    let started = std::time::Instant::now();
    let mut report = Report {
        active_kid: keyring.active_kid().to_owned(),
        reindexed_to: old.as_ref().map(|_| keyring.blind_index_kid().to_owned()),
        dry_run,
        ..Report::default()
    };
    let old = old.as_ref();
    if matches!(target, Target::Auth | Target::All) {
        let mut auth = legacy::connect(cross.auth_url("reencrypt re-seals client_auth")?).await?;
        legacy::require_client_auth(&mut auth).await?;
        report
            .tables
            .push(reseal_table(&mut auth, "client_auth", &keyring, old, cross, dry_run).await?);
        if let Some(secrets) = reseal_totp_secrets(&mut auth, &keyring, old, cross, dry_run).await? {
            report.tables.push(secrets);
        }
        auth.close().await.ok();
    }
    if matches!(target, Target::Customer | Target::All) {
        let url = match (target, cross.customer_url.as_deref()) {
            (Target::Customer, _) => Some(cross.customer_url("reencrypt re-seals customers")?),
            (_, url) => url,
        };
        match url {
            None => report
                .skipped
                .push("customers: no customer database configured".to_owned()),
            Some(url) => {
                let mut customers = legacy::connect(url).await?;
                if legacy::table_exists(&mut customers, "customers").await?
                    && legacy::has_legacy_identity(&mut customers).await?
                {
                    report
                        .tables
                        .push(reseal_table(&mut customers, "customers", &keyring, old, cross, dry_run).await?);
                } else {
                    report
                        .skipped
                        .push("customers: no email copy (customer migration 6 is applied)".to_owned());
                }
                customers.close().await.ok();
            }
        }
    }
    report.duration_ms = started.elapsed().as_millis();
    Ok(report)
}

/// Re-seals one table's emails with `keyring`'s active key. `old` (re-indexing): the keyring the
/// values may still be sealed under, and for `client_auth` the blind index is recomputed.
async fn reseal_table(
    conn: &mut MySqlConnection,
    table: &'static str,
    keyring: &EmailKeyring,
    old: Option<&EmailKeyring>,
    cross: &CrossDb,
    dry_run: bool,
) -> Result<TableReport> {
    let with_hash = old.is_some() && table == "client_auth";
    let mut out = TableReport {
        table: table.to_owned(),
        ..TableReport::default()
    };
    let total = legacy::count(
        conn,
        if table == "client_auth" { "SELECT COUNT(*) FROM client_auth" } else { "SELECT COUNT(*) FROM customers" },
    )
    .await?;
    let mut progress = Progress::new(if table == "client_auth" { "reseal auth" } else { "reseal cust" }, total, cross.progress);
    let hash_col = if with_hash { "email_hash" } else { "''" };
    let select_first = format!("SELECT id, email_encrypted, {hash_col} FROM {table} ORDER BY id LIMIT ?");
    let select_next = format!("SELECT id, email_encrypted, {hash_col} FROM {table} WHERE id > ? ORDER BY id LIMIT ?");
    let update = if with_hash {
        format!(
            "UPDATE {table} SET email_encrypted = ?, email_hash = ?, updated_at = updated_at WHERE id = ? AND email_encrypted = ?"
        )
    } else {
        format!("UPDATE {table} SET email_encrypted = ?, updated_at = updated_at WHERE id = ? AND email_encrypted = ?")
    };
    let limit = i64::try_from(cross.batch_size.max(1)).unwrap_or(i64::MAX);
    let mut after: Option<String> = None;
    loop {
        let rows: Vec<(String, String, String)> = match &after {
            None => sqlx::query_as(sqlx::AssertSqlSafe(select_first.clone())).bind(limit).fetch_all(&mut *conn).await,
            Some(last) => {
                sqlx::query_as(sqlx::AssertSqlSafe(select_next.clone()))
                    .bind(last)
                    .bind(limit)
                    .fetch_all(&mut *conn)
                    .await
            }
        }
        .with_context(|| format!("Failed to read a batch of {table}"))?;
        let Some(last) = rows.last() else { break };
        after = Some(last.0.clone());
        let mut writes: Vec<(String, String, &str, &str)> = Vec::new();
        for (id, sealed, hash) in &rows {
            out.checked += 1;
            if sealed.is_empty() {
                // A legacy row emptied by a rollback without auth access: nothing to re-seal.
                continue;
            }
            if !keyring.needs_reseal(sealed)
                && (!with_hash
                    || legacy::open_email(keyring, sealed, id).is_ok_and(|e| keyring.blind_index(&e) == *hash))
            {
                out.current += 1;
                continue;
            }
            let opened = legacy::open_email(keyring, sealed, id)
                .or_else(|e| old.map_or(Err(e), |o| legacy::open_email(o, sealed, id)));
            match opened {
                Ok(email) => writes.push((
                    keyring.seal_with_aad(&email, id.as_bytes()),
                    keyring.blind_index(&email),
                    id,
                    sealed,
                )),
                Err(_) => out.record_unreadable(id),
            }
        }
        if dry_run {
            out.resealed += writes.len() as u64;
        } else if !writes.is_empty() {
            let mut tx = conn.begin().await.context("Failed to start a transaction")?;
            for (new, new_hash, id, previous) in &writes {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(update.clone())).bind(new);
                if with_hash {
                    q = q.bind(new_hash);
                }
                let done = q
                    .bind(*id)
                    .bind(*previous)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("Failed to re-seal {table} row {id}"))?;
                out.record_write(done.rows_affected());
            }
            tx.commit().await.context("Failed to commit a batch")?;
            if !cross.pause.is_zero() {
                tokio::time::sleep(cross.pause).await;
            }
        }
        progress.inc(rows.len() as u64);
    }
    progress.finish();
    out.sealed_by_kid = count_by_kid(conn, "email_encrypted", table, "email_encrypted <> ''").await?;
    Ok(out)
}

/// The authenticator-app secrets in `client_auth.totp_secret` (auth migration 11), re-sealed as
/// the emails are but with the context auth seals them with
/// ([`sealed_email::totp_secret_context`]): a key is retired only once none of them needs it
/// either. `None` (no line in the report) before migration 11 or while no user has a secret.
async fn reseal_totp_secrets(
    conn: &mut MySqlConnection,
    keyring: &EmailKeyring,
    old: Option<&EmailKeyring>,
    cross: &CrossDb,
    dry_run: bool,
) -> Result<Option<TableReport>> {
    const NAME: &str = "client_auth.totp_secret";
    if !legacy::column_exists(conn, "client_auth", "totp_secret").await? {
        return Ok(None);
    }
    let total = legacy::count(conn, "SELECT COUNT(*) FROM client_auth WHERE totp_secret IS NOT NULL").await?;
    if total == 0 {
        return Ok(None);
    }
    let mut out = TableReport { table: NAME.to_owned(), ..TableReport::default() };
    let mut progress = Progress::new("reseal totp", total, cross.progress);
    let limit = i64::try_from(cross.batch_size.max(1)).unwrap_or(i64::MAX);
    // Ids are never empty: every id sorts after "".
    let mut after = String::new();
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, totp_secret FROM client_auth WHERE totp_secret IS NOT NULL AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(&after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .context("Failed to read a batch of TOTP secrets")?;
        let Some(last) = rows.last() else { break };
        after = last.0.clone();
        let mut writes: Vec<(String, &str, &str)> = Vec::new();
        for (id, sealed) in &rows {
            out.checked += 1;
            if !keyring.needs_reseal(sealed) {
                out.current += 1;
                continue;
            }
            let context = sealed_email::totp_secret_context(id);
            let opened = keyring
                .open_with_aad(sealed, &context)
                .or_else(|e| old.map_or(Err(e), |o| o.open_with_aad(sealed, &context)));
            match opened {
                Ok(secret) => writes.push((keyring.seal_text_with_aad(&secret, &context), id, sealed)),
                Err(_) => out.record_unreadable(id),
            }
        }
        if dry_run {
            out.resealed += writes.len() as u64;
        } else if !writes.is_empty() {
            let mut tx = conn.begin().await.context("Failed to start a transaction")?;
            for (new, id, previous) in &writes {
                // Only if auth did not change it meanwhile (a new enrolment, the factor turned off).
                let done = sqlx::query(
                    "UPDATE client_auth SET totp_secret = ?, updated_at = updated_at WHERE id = ? AND totp_secret = ?",
                )
                .bind(new)
                .bind(*id)
                .bind(*previous)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("Failed to re-seal the TOTP secret of {id}"))?;
                out.record_write(done.rows_affected());
            }
            tx.commit().await.context("Failed to commit a batch")?;
        }
        progress.inc(rows.len() as u64);
    }
    progress.finish();
    out.sealed_by_kid = count_by_kid(conn, "totp_secret", "client_auth", "totp_secret IS NOT NULL").await?;
    Ok(Some(out))
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let secs = r.duration_ms as f64 / 1000.0;
    out.push_str(&format!(
        "reencrypt{}: active key {}{} ({secs:.1} s)\n",
        if r.dry_run { " (dry run: nothing written)" } else { "" },
        r.active_kid,
        r.reindexed_to
            .as_deref()
            .map_or_else(String::new, |k| format!(", re-indexing email_hash under {k}"))
    ));
    for t in &r.tables {
        let kids: Vec<String> = t.sealed_by_kid.iter().map(|(k, n)| format!("{k}={n}")).collect();
        out.push_str(&format!(
            "  {:<12} checked {:>9}  already current {:>9}  {} {:>9}  unreadable {:>6}{}\n",
            t.table,
            t.checked,
            t.current,
            if r.dry_run { "to re-seal" } else { "re-sealed" },
            t.resealed,
            t.unreadable,
            if t.skipped_concurrent > 0 {
                format!("  changed meanwhile (rerun) {}", t.skipped_concurrent)
            } else {
                String::new()
            }
        ));
        out.push_str(&format!("  {:<12} sealed by key now: {}\n", "", if kids.is_empty() { "-".into() } else { kids.join(", ") }));
        if t.unreadable > 0 {
            let shown: Vec<&str> = t.unreadable_ids.iter().take(20).map(String::as_str).collect();
            out.push_str(&format!("  {:<12} unreadable ids: {}\n", "", shown.join(", ")));
        }
    }
    for s in &r.skipped {
        out.push_str(&format!("  skipped {s}\n"));
    }
    let old: Vec<String> = r
        .tables
        .iter()
        .flat_map(|t| t.sealed_by_kid.keys())
        .filter(|k| **k != r.active_kid)
        .cloned()
        .collect();
    if old.is_empty() && r.unreadable() == 0 && !r.dry_run {
        out.push_str(&format!(
            "reencrypt: every stored email is sealed with {}; keys other than it and the blind-index root may be retired\n",
            r.active_kid
        ));
    }
    out
}

/// `admin reencrypt` from the command line.
pub fn command(args: Args, env_file: Option<&Path>, secrets: &mut Vec<String>) -> Result<()> {
    legacy::block_on(env_file, async |env| {
        let cross = CrossDb::from_args(&args.db, &env, secrets)?;
        let reindex_to = match &args.reindex_to_env {
            None => None,
            Some(name) => {
                let value = std::env::var(name).with_context(|| {
                    format!("Failed to read the new keyring: environment variable {name} is not set")
                })?;
                secrets.push(value.clone());
                Some(value)
            }
        };
        let report = run_with(&cross, args.target, args.dry_run, reindex_to.as_deref()).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report).context("Failed to write JSON")?);
        } else {
            print!("{}", render(&report));
        }
        if report.unreadable() > 0 {
            return Err(Findings(format!(
                "{} stored emails do not open with any configured key and were not re-sealed",
                report.unreadable()
            ))
            .into());
        }
        Ok(())
    })
}
