//! `admin purge`: deletes rows that no longer decide anything, so that the tables the services
//! write on every login, refresh and webhook stop growing with time. Run it daily (cron, a
//! Kubernetes CronJob); it is safe beside the running services and safe to rerun.
//!
//! What goes, each only once it is older than `--older-than-days` (at least 1, default 7):
//! - auth `refresh_tokens` past their `expires_at`. An expired token is refused as expired before
//!   anything else is looked at, so its row decides nothing (and its access token, 15 minutes,
//!   expired long before).
//! - auth `refresh_token_families` revoked, or with no token left unexpired (with their tokens,
//!   by the foreign key). A token of a purged family is then unknown instead of revoked or
//!   expired: refused all the same.
//! - auth `login_throttle` rows with no failure since: the window is at most one day
//!   (`login_throttle_window_secs`), so such a row no longer throttles anyone.
//! - auth `password_reset_tokens` and `email_verification_tokens` past their `expires_at` (an
//!   hour and a day after issue): refused as expired already, they decide nothing.
//!
//! - customer `user_call_budget` rows of users with no call since (a counter of the current
//!   minute only).
//!
//! And, older than `--events-older-than-days` (at least 4, default 30): customer's
//! `stripe_events` (the webhook inbox). Stripe retries a delivery for up to 3 days; an event
//! delivered again after its id was purged is applied again, which the subscription's
//! last-event time makes harmless.
//!
//! Audit rows (auth's and customer's `audit_log`) go only with `--audit-older-than-days N`:
//! how long to keep them is the operator's policy, not ours.
//!
//! Deletes run in batches (`--batch-size`, each its own statement and commit), so no lock is held
//! long, and each batch reads only rows past its cutoff through an index on the column it compares
//! (auth migration 13, customer migration 20 added the ones missing); `--dry-run` counts instead.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde::Serialize;
use sqlx::mysql::MySqlConnection;

use crate::legacy::{self, CrossDb, DbArgs};

const DAY_SECS: i64 = 86_400;
/// The longest `login_throttle_window_secs` auth accepts, and so the least margin for throttle rows.
pub const MIN_OLDER_THAN_DAYS: u32 = 1;
/// Stripe retries an undelivered event for up to 3 days.
pub const MIN_EVENTS_OLDER_THAN_DAYS: u32 = 4;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
    /// Which service's database
    #[arg(long, value_enum, default_value_t = Service::All)]
    pub service: Service,
    /// Expired or revoked refresh tokens, and idle throttle rows, older than this many days
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    pub older_than_days: u32,
    /// Stripe events in customer's webhook inbox received more than this many days ago
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub events_older_than_days: u32,
    /// Also audit rows older than this many days (default: keep every audit row)
    #[arg(long, value_name = "DAYS")]
    pub audit_older_than_days: Option<u32>,
    /// Count what would be deleted; delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on standard output
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Auth,
    Customer,
    All,
}

/// What to purge, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: Service,
    pub older_than: Duration,
    pub events_older_than: Duration,
    pub audit_older_than: Option<Duration>,
    pub dry_run: bool,
}

impl Settings {
    pub fn new(service: Service, older_than_days: u32, events_older_than_days: u32, audit_older_than_days: Option<u32>, dry_run: bool) -> Result<Self> {
        ensure!(
            older_than_days >= MIN_OLDER_THAN_DAYS,
            "Failed to purge: --older-than-days must be at least {MIN_OLDER_THAN_DAYS} (a throttle window can last a day)"
        );
        ensure!(
            events_older_than_days >= MIN_EVENTS_OLDER_THAN_DAYS,
            "Failed to purge: --events-older-than-days must be at least {MIN_EVENTS_OLDER_THAN_DAYS} (Stripe redelivers for 3 days)"
        );
        let days = |n: u32| Duration::from_secs(u64::from(n) * DAY_SECS as u64);
        Ok(Self {
            service,
            older_than: days(older_than_days),
            events_older_than: days(events_older_than_days),
            audit_older_than: audit_older_than_days.map(days),
            dry_run,
        })
    }
}

/// Rows deleted (or, in a dry run, that would be) per table.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    pub dry_run: bool,
    /// (database, table, what, rows), in the order they ran.
    pub purged: Vec<Purged>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Purged {
    pub database: &'static str,
    pub table: &'static str,
    pub rows: u64,
    pub what: &'static str,
}

impl Report {
    /// Rows of `database.table`, 0 when it was not purged.
    pub fn rows(&self, database: &str, table: &str) -> u64 {
        self.purged.iter().filter(|p| p.database == database && p.table == table).map(|p| p.rows).sum()
    }
}

/// One kind of row to purge: `DELETE FROM {table} WHERE {condition}` with one cutoff, in Unix
/// seconds, bound to every `?` of the condition (columns holding a timestamp compare it through
/// `FROM_UNIXTIME`, in the session's time zone as the column is read).
struct Rule {
    table: &'static str,
    condition: &'static str,
    what: &'static str,
}

const FAMILIES: Rule = Rule {
    table: "refresh_token_families",
    // Revoked long ago, or every token of it expired long ago (none at all: a family is written
    // with its first token, in one transaction, so an empty one is old or orphaned).
    condition: "created_at < ? AND ((revoked_at IS NOT NULL AND revoked_at < ?) \
                OR NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = refresh_token_families.id AND t.expires_at >= ?))",
    what: "refresh-token families revoked or expired, with any tokens left",
};
const TOKENS: Rule = Rule {
    table: "refresh_tokens",
    condition: "expires_at < ?",
    what: "refresh tokens expired",
};
const RESET_TOKENS: Rule = Rule {
    table: "password_reset_tokens",
    condition: "expires_at < ?",
    what: "password-reset tokens expired",
};
const VERIFICATION_TOKENS: Rule = Rule {
    table: "email_verification_tokens",
    condition: "expires_at < ?",
    what: "email-verification tokens expired",
};
const THROTTLE: Rule = Rule {
    table: "login_throttle",
    condition: "last_failure_at < ?",
    what: "login throttle counters idle",
};
const AUTH_AUDIT: Rule = Rule {
    table: "audit_log",
    condition: "occurred_at < FROM_UNIXTIME(?)",
    what: "audit rows",
};
const EVENTS: Rule = Rule {
    table: "stripe_events",
    condition: "received_at < FROM_UNIXTIME(?)",
    what: "Stripe events in the webhook inbox",
};
const CALL_BUDGETS: Rule = Rule {
    table: "user_call_budget",
    condition: "window_start < ?",
    what: "per-user call counters idle",
};
const CUSTOMER_AUDIT: Rule = Rule {
    table: "audit_log",
    condition: "occurred_at < ?",
    what: "audit rows",
};

pub async fn run(cross: &CrossDb, settings: &Settings) -> Result<Report> {
    let now = legacy::now_secs()?;
    let before = |age: Duration| now - age.as_secs() as i64;
    let mut report = Report { dry_run: settings.dry_run, purged: Vec::new() };
    if matches!(settings.service, Service::Auth | Service::All) {
        let cutoff = before(settings.older_than);
        // Tokens before families, so that a dry run counts what a real run deletes: a family's
        // expired tokens are counted as tokens, and only a revoked family's live ones go uncounted
        // with it (by the foreign key).
        let mut rules = vec![(TOKENS, cutoff), (FAMILIES, cutoff), (THROTTLE, cutoff), (RESET_TOKENS, cutoff), (VERIFICATION_TOKENS, cutoff)];
        rules.extend(settings.audit_older_than.map(|age| (AUTH_AUDIT, before(age))));
        let url = cross.auth_url("purge deletes auth's expired rows")?;
        purge_database(url, "auth", rules, cross, &mut report).await?;
    }
    if matches!(settings.service, Service::Customer | Service::All) {
        let mut rules = vec![(EVENTS, before(settings.events_older_than)), (CALL_BUDGETS, before(settings.older_than))];
        rules.extend(settings.audit_older_than.map(|age| (CUSTOMER_AUDIT, before(age))));
        let url = cross.customer_url("purge deletes customer's old rows")?;
        purge_database(url, "customer", rules, cross, &mut report).await?;
    }
    Ok(report)
}

/// Runs `rules` (each with its cutoff) in order on one database, adding a line each to `report`.
async fn purge_database(url: &str, database: &'static str, rules: Vec<(Rule, i64)>, cross: &CrossDb, report: &mut Report) -> Result<()> {
    let mut conn = legacy::connect(url).await?;
    for (rule, cutoff) in rules {
        let rows = purge(&mut conn, &rule, cutoff, cross, report.dry_run).await?;
        report.purged.push(Purged { database, table: rule.table, rows, what: rule.what });
    }
    Ok(())
}

/// Deletes (or counts) the rule's rows in batches; returns how many.
async fn purge(conn: &mut MySqlConnection, rule: &Rule, cutoff: i64, cross: &CrossDb, dry_run: bool) -> Result<u64> {
    let placeholders = rule.condition.matches('?').count();
    let bind = |sql: String| {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for _ in 0..placeholders {
            query = query.bind(cutoff);
        }
        query
    };
    if dry_run {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {}", rule.table, rule.condition);
        let row = bind(sql).fetch_one(&mut *conn).await.with_context(|| format!("Failed to count {}", rule.what))?;
        let count: i64 = sqlx::Row::try_get(&row, 0).with_context(|| format!("Failed to read the count of {}", rule.what))?;
        return Ok(count as u64);
    }
    let batch = cross.batch_size.max(1);
    let mut total = 0;
    loop {
        let sql = format!("DELETE FROM {} WHERE {} LIMIT {batch}", rule.table, rule.condition);
        let deleted = bind(sql).execute(&mut *conn).await.with_context(|| format!("Failed to delete {}", rule.what))?.rows_affected();
        total += deleted;
        if deleted < batch as u64 {
            return Ok(total);
        }
        if !cross.pause.is_zero() {
            tokio::time::sleep(cross.pause).await;
        }
    }
}

pub fn render(report: &Report) -> String {
    let verb = if report.dry_run { "would delete" } else { "deleted" };
    let mut out = String::new();
    for p in &report.purged {
        out.push_str(&format!("{}.{}: {verb} {} ({})\n", p.database, p.table, p.rows, p.what));
    }
    out
}

pub fn command(args: Args, env_file: Option<&Path>, secrets: &mut Vec<String>) -> Result<()> {
    let settings = Settings::new(args.service, args.older_than_days, args.events_older_than_days, args.audit_older_than_days, args.dry_run)?;
    legacy::block_on(env_file, async |env| {
        let cross = CrossDb::from_db_args(&args.db, &env, secrets)?;
        let report = run(&cross, &settings).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report).context("Failed to write JSON")?);
        } else {
            print!("{}", render(&report));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_below_what_the_services_rely_on_are_refused() {
        assert!(Settings::new(Service::All, 0, 30, None, false).is_err());
        assert!(Settings::new(Service::All, 1, 3, None, false).is_err());
        let settings = Settings::new(Service::All, 1, 4, Some(0), true).expect("the least margins");
        assert_eq!(settings.older_than, Duration::from_secs(86_400));
        assert_eq!(settings.events_older_than, Duration::from_secs(4 * 86_400));
        assert_eq!(settings.audit_older_than, Some(Duration::ZERO));
    }

    #[test]
    fn every_rule_binds_one_cutoff_to_each_placeholder() {
        for rule in [FAMILIES, TOKENS, THROTTLE, AUTH_AUDIT, EVENTS, CUSTOMER_AUDIT] {
            assert!(rule.condition.contains('?'), "{}", rule.table);
            assert!(!rule.condition.contains(';'), "{}", rule.table);
        }
        assert_eq!(FAMILIES.condition.matches('?').count(), 3);
    }
}
