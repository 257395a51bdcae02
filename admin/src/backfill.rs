//! `admin backfill`: before customer migration 6, copy every legacy customer that auth lacks into
//! auth's `client_auth` (name, email sealed in auth's format, its blind index, no password,
//! `must_reset_password = 1`, the customer's `created_at`).
//!
//! Two passes over `customers`, in batches by id:
//! 1. **check** (read-only): compare every customer with auth ([`legacy::plan`]). Any conflict
//!    (auth holds the id with another email or name, the email belongs to another auth user, the
//!    legacy value does not open, ...) is reported and the run stops before writing anything,
//!    unless `--skip-conflicts`. Nothing is ever guessed.
//! 2. **copy**: each batch is compared again (auth may have changed) and its missing users are
//!    inserted in one transaction. Inserts are keyed by the customer's id (`client_auth`'s primary
//!    key) and the email's blind index (`UNIQUE`), so a run killed half-way and started again
//!    copies the rest and never duplicates a user.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use sealed_email::EmailKeyring;
use serde::Serialize;
use sqlx::Connection as _;
use sqlx::mysql::MySqlConnection;

use crate::legacy::{
    self, Check, Conflict, ConflictKind, CrossDb, CrossDbArgs, Findings, LegacyRow, NewAuthUser, Progress,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub db: CrossDbArgs,
    /// Check only: report what would be copied and every conflict; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Copy the unambiguous customers even when others conflict (the conflicts are still
    /// reported, and the exit status is still 2)
    #[arg(long)]
    pub skip_conflicts: bool,
    /// Decide every email_differs / name_differs conflict for auth: its record (newer: users
    /// edit their profile in auth) overwrites the legacy copy in customers, re-sealed in auth's
    /// format. Each id is logged; other kinds of conflict still stop the run
    #[arg(long)]
    pub auth_wins: bool,
    /// Print the report as JSON on standard output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub skip_conflicts: bool,
    pub auth_wins: bool,
}

/// What a run found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Legacy customers compared with auth.
    pub checked: u64,
    /// Already in auth with the same id, name and email (including users copied by an earlier,
    /// interrupted run).
    pub already_in_auth: u64,
    /// Copied into auth by this run.
    pub copied: u64,
    /// Legacy copies overwritten with auth's record (`--auth-wins`; in a dry run: would be).
    pub legacy_updated_from_auth: Vec<String>,
    /// Missing from auth and not copied (a dry run, or stopped on conflicts).
    pub not_copied: u64,
    pub conflicts: Vec<Conflict>,
    /// Whether the copy pass ran.
    pub wrote: bool,
    pub duration_ms: u128,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.conflicts.is_empty() && self.not_copied == 0
    }
}

/// `admin backfill` as a library call (the tests run it in-process too).
pub async fn run(cross: &CrossDb, opts: Options) -> Result<Report> {
    let keyring = cross.keyring("backfill seals emails and computes their blind index")?;
    let mut customers = legacy::connect(cross.customer_url("backfill reads the legacy customers")?).await?;
    let mut auth = legacy::connect(cross.auth_url("backfill writes auth's client_auth")?).await?;
    if !legacy::table_exists(&mut customers, "customers").await?
        || !legacy::has_legacy_identity(&mut customers).await?
    {
        bail!(
            "Failed to backfill: customers has no name/email_encrypted columns (customer migration 6 \
             is applied, or the database is empty): there is nothing to copy"
        );
    }
    legacy::require_client_auth(&mut auth).await?;
    let total = legacy::count(&mut customers, "SELECT COUNT(*) FROM customers").await?;

    let mut progress = Progress::new("check", total, cross.progress);
    let mut plan = legacy::plan(&mut customers, &mut auth, &keyring, cross.batch_size, &mut progress).await?;
    let checked_in = progress.finish();

    let mut legacy_updated_from_auth = Vec::new();
    if opts.auth_wins {
        let (decided, rest): (Vec<Conflict>, Vec<Conflict>) = plan
            .conflicts
            .into_iter()
            .partition(|c| matches!(c.kind, ConflictKind::EmailDiffers | ConflictKind::NameDiffers));
        plan.conflicts = rest;
        for c in decided {
            if opts.dry_run || overwrite_from_auth(&mut customers, &mut auth, &keyring, &c.id).await? {
                if !opts.dry_run {
                    eprintln!("backfill --auth-wins: customer {} ({}): legacy copy replaced by auth's record", c.id, c.kind);
                }
                plan.matched += 1;
                legacy_updated_from_auth.push(c.id);
            } else {
                // Changed under us: decide again on the next run.
                plan.conflicts.push(c);
            }
        }
    }

    if opts.dry_run || (!plan.conflicts.is_empty() && !opts.skip_conflicts) {
        return Ok(Report {
            checked: plan.checked,
            already_in_auth: plan.matched,
            copied: 0,
            legacy_updated_from_auth,
            not_copied: plan.missing,
            conflicts: plan.conflicts,
            wrote: false,
            duration_ms: checked_in.as_millis(),
        });
    }

    let skip: HashSet<String> = plan.conflicts.iter().map(|c| c.id.clone()).collect();
    let mut report = Report {
        conflicts: plan.conflicts.clone(),
        legacy_updated_from_auth,
        wrote: true,
        ..Report::default()
    };
    let mut progress = Progress::new("copy", total, cross.progress);
    let mut after: Option<String> = None;
    loop {
        let rows = legacy::legacy_batch(&mut customers, after.as_deref(), cross.batch_size).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id.clone());
        let checks = legacy::classify_batch(&mut auth, &keyring, &rows).await?;
        let mut to_copy: Vec<(&LegacyRow, NewAuthUser)> = Vec::new();
        for (row, check) in rows.iter().zip(checks) {
            report.checked += 1;
            match check {
                _ if skip.contains(&row.id) => {}
                Check::Matched => report.already_in_auth += 1,
                Check::Missing(user) => to_copy.push((row, user)),
                // Auth changed since the check pass.
                Check::Conflict(c) => report.conflicts.push(c),
            }
        }
        if !to_copy.is_empty() {
            copy_batch(&mut auth, &keyring, &to_copy, &mut report).await?;
            if !cross.pause.is_zero() {
                tokio::time::sleep(cross.pause).await;
            }
        }
        progress.inc(rows.len() as u64);
    }
    let took = checked_in + progress.finish();
    report.duration_ms = took.as_millis();
    report.conflicts.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    report.conflicts.dedup();
    customers.close().await.ok();
    auth.close().await.ok();
    Ok(report)
}

/// `--auth-wins` for one customer: its legacy name and email become auth's (email re-sealed with
/// the active key, AAD = id). Only if auth holds a readable record; returns whether it was
/// written. The legacy row is overwritten as it is then, not only if it still is the one that was
/// compared: the backfill runs with the legacy app's writes stopped (docs/upgrade.md, step 0).
async fn overwrite_from_auth(
    customers: &mut MySqlConnection,
    auth: &mut MySqlConnection,
    keyring: &EmailKeyring,
    id: &str,
) -> Result<bool> {
    let found = legacy::auth_by_ids(auth, &[id]).await?;
    let Some(a) = found.get(id) else { return Ok(false) };
    let Ok(email) = legacy::open_email(keyring, &a.email_encrypted, &a.id) else { return Ok(false) };
    let sealed = keyring.seal_with_aad(&email, id.as_bytes());
    let done = sqlx::query(
        "UPDATE customers SET name = ?, email_encrypted = ?, updated_at = updated_at WHERE id = ?",
    )
    .bind(&a.name)
    .bind(&sealed)
    .bind(id)
    .execute(&mut *customers)
    .await
    .with_context(|| format!("Failed to update customer {id} from auth"))?;
    Ok(done.rows_affected() == 1)
}

const INSERT_HEAD: &str = "INSERT INTO client_auth \
     (id, name, email_encrypted, email_hash, password_hash, must_reset_password, created_at) VALUES ";
const INSERT_ROW: &str = "(?, ?, ?, ?, NULL, 1, COALESCE(FROM_UNIXTIME(?), CURRENT_TIMESTAMP))";

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(INSERT_HEAD);
    sql.push_str(&vec![INSERT_ROW; rows].join(", "));
    sql
}

fn bind_user<'q>(
    q: sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>,
    u: &'q NewAuthUser,
) -> sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments> {
    q.bind(&u.id)
        .bind(&u.name)
        .bind(&u.email_encrypted)
        .bind(&u.email_hash)
        .bind(u.created_at)
}

fn is_duplicate(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|d| d.is_unique_violation())
}

/// Inserts one batch in one transaction. If another writer got there first (a duplicate id or
/// blind index), the batch is rolled back and retried row by row, and each row that collides is
/// compared with auth again: the same identity counts as already there, anything else is a
/// conflict.
async fn copy_batch(
    auth: &mut MySqlConnection,
    keyring: &EmailKeyring,
    batch: &[(&LegacyRow, NewAuthUser)],
    report: &mut Report,
) -> Result<()> {
    let sql = insert_sql(batch.len());
    let mut tx = auth.begin().await.context("Failed to start a transaction on auth")?;
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (_, u) in batch {
        q = bind_user(q, u);
    }
    match q.execute(&mut *tx).await {
        Ok(_) => {
            tx.commit().await.context("Failed to commit a batch to client_auth")?;
            report.copied += batch.len() as u64;
            return Ok(());
        }
        Err(e) if is_duplicate(&e) => {
            tx.rollback().await.ok();
        }
        Err(e) => return Err(e).context("Failed to insert a batch into client_auth"),
    }
    let one = insert_sql(1);
    for (row, u) in batch {
        let q = bind_user(sqlx::query(sqlx::AssertSqlSafe(one.clone())), u);
        match q.execute(&mut *auth).await {
            Ok(_) => report.copied += 1,
            Err(e) if is_duplicate(&e) => {
                let again = legacy::classify_batch(auth, keyring, std::slice::from_ref(*row)).await?;
                match again.into_iter().next() {
                    Some(Check::Matched) => report.already_in_auth += 1,
                    Some(Check::Conflict(c)) => report.conflicts.push(c),
                    _ => bail!(
                        "Failed to copy customer {} into client_auth: the insert collided but auth holds neither its id nor its email",
                        row.id
                    ),
                }
            }
            Err(e) => return Err(e).with_context(|| format!("Failed to insert customer {} into client_auth", row.id)),
        }
    }
    Ok(())
}

/// The human-readable report.
pub fn render(report: &Report, dry_run: bool) -> String {
    let secs = Duration::from_millis(u64::try_from(report.duration_ms).unwrap_or(u64::MAX)).as_secs_f64();
    let mut out = String::new();
    out.push_str(&format!(
        "backfill: checked {} customers in {secs:.1} s ({:.0} rows/s)\n",
        report.checked,
        legacy::rate(report.checked, Duration::from_secs_f64(secs))
    ));
    let mut line = |label: &str, n: u64| out.push_str(&format!("  {label:<46} {n:>9}\n"));
    line("already in auth (same id, name, email):", report.already_in_auth);
    if !report.legacy_updated_from_auth.is_empty() {
        let label = if dry_run {
            "legacy copy to replace by auth's (--auth-wins):"
        } else {
            "legacy copy replaced by auth's (--auth-wins):"
        };
        line(label, report.legacy_updated_from_auth.len() as u64);
    }
    line("copied into auth by this run:", report.copied);
    if report.not_copied > 0 {
        line(if dry_run { "missing from auth, to copy:" } else { "missing from auth, not copied:" }, report.not_copied);
    }
    line("conflicts:", report.conflicts.len() as u64);
    if report.copied > 0 {
        out.push_str(
            "  copied users have no password (password_hash NULL, must_reset_password = 1): they set one through a password reset\n",
        );
    }
    if !report.conflicts.is_empty() {
        let plan = legacy::Plan {
            conflicts: report.conflicts.clone(),
            ..legacy::Plan::default()
        };
        out.push_str(if report.wrote {
            "conflicts (not copied; decide each one, then run `admin backfill` again):\n"
        } else {
            "conflicts (nothing was copied into auth; decide each one, then run `admin backfill` again, or pass --skip-conflicts):\n"
        });
        out.push_str(&plan.describe_unresolved(50));
    } else if dry_run {
        out.push_str("dry run: nothing was written\n");
    }
    out
}

/// `admin backfill` from the command line.
pub fn command(args: Args, env_file: Option<&Path>, secrets: &mut Vec<String>) -> Result<()> {
    legacy::block_on(env_file, async |env| {
        let cross = CrossDb::from_args(&args.db, &env, secrets)?;
        let opts = Options {
            dry_run: args.dry_run,
            skip_conflicts: args.skip_conflicts,
            auth_wins: args.auth_wins,
        };
        let report = run(&cross, opts).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report).context("Failed to write JSON")?);
        } else {
            print!("{}", render(&report, args.dry_run));
        }
        if !report.conflicts.is_empty() {
            return Err(Findings(format!(
                "backfill found {} conflicts that need a decision (see the report)",
                report.conflicts.len()
            ))
            .into());
        }
        Ok(())
    })
}
