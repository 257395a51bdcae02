//! `admin account`: what support does for one account whose owner cannot do it through the API,
//! above all after a takeover (someone else signed in, changed the password or the email, or
//! added their own authenticator app). Kratos's admin API and Supabase's admin calls offer the
//! same; here they run where the operator already has the database and the keys, and auth's
//! code does not change: every action writes the columns auth itself writes and behaves, to
//! auth, as the user's own change would.
//!
//! - `show`: the account's state (email, verified, password, second factor, live sessions) and,
//!   when customer's database is configured, what billing holds for it (the Stripe customer,
//!   the mirrored subscriptions).
//! - `sign-out`: every session ends (every refresh-token family revoked). Access tokens already
//!   issued run out within their 15 minutes, as after a logout.
//! - `require-password-reset`: the password is removed (sign-in answers the same 401 as a wrong
//!   password, audited `password_reset_required`), every session ends, and reset tokens issued
//!   before are void; the owner sets a new password with a fresh reset token.
//! - `remove-mfa`: the authenticator app and its recovery codes go (a lost phone, or an app an
//!   intruder added).
//! - `set-email`: the email is replaced (sealed with the active key, re-indexed); it counts as
//!   unverified unless `--verified`, and one-time tokens mailed to the old address are void.
//!
//! Each runs in one transaction that locks the user's row (as auth's own writes do) and appends
//! one row to auth's `audit_log` (`operator_*`, actor `operator:<name>`, the ticket in `detail`);
//! an action that finds nothing to change changes nothing and writes no row. The account is
//! named by its id, its email, or its Stripe customer id (`cus_…`, looked up in customer's
//! database: what a dispute or a Stripe dashboard shows support).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use sealed_email::{EmailKeyring, NormalizedEmail, normalize_email};
use serde::Serialize;
use sqlx::mysql::MySqlConnection;
use sqlx::{Connection as _, MySql, Transaction};

use crate::config::{self, EnvFile};
use crate::legacy::{self, CrossDb, ENCRYPTION_KEY_VAR, now_secs};

/// `client_addr` of the audit rows written here: not a network address, the tool.
pub const AUDIT_CLIENT: &str = "admin";
/// The longest operator name and ticket reference the audit trail takes.
pub const MAX_LABEL_CHARS: usize = 64;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: ActionArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum ActionArgs {
    /// Print the account's state: email, verification, password, second factor, live sessions
    Show(Common),
    /// End every session of the account (refresh tokens revoked; access tokens run out within 15 minutes)
    SignOut(Common),
    /// Remove the password and end every session: sign-in fails until the owner sets a new
    /// password with a reset token (after a takeover, or a password known to be leaked)
    RequirePasswordReset(Common),
    /// Remove the authenticator app and its recovery codes (a lost phone, or an intruder's app)
    RemoveMfa(Common),
    /// Replace the account's email (one an intruder changed); unverified unless --verified
    SetEmail(SetEmailArgs),
}

#[derive(clap::Args, Debug)]
pub struct Common {
    /// The account: its id, its email (case and spaces do not matter), or its Stripe customer id (cus_…)
    pub user: String,
    /// Who does this, for the audit trail [default: $USER]
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// The support request this answers (e.g. a ticket id), for the audit trail
    #[arg(long, value_name = "REF")]
    pub ticket: Option<String>,
    /// auth database URL [default: $SPIN_VARIABLE_AUTH_DB_URL, then .env]
    #[arg(long, value_name = "URL")]
    pub auth_db_url: Option<String>,
    /// customer database URL, to find an account by Stripe customer id and to show its billing
    /// [default: $SPIN_VARIABLE_CUSTOMER_DB_URL, then .env; without one, neither]
    #[arg(long, value_name = "URL")]
    pub customer_db_url: Option<String>,
    /// auth's encryption_key keyring, to find an account by email and read or write its email.
    /// Other users can read it with `ps`: prefer $SPIN_VARIABLE_ENCRYPTION_KEY or .env
    #[arg(long, value_name = "KEYRING")]
    pub encryption_key: Option<String>,
    /// Print the result as JSON on standard output
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct SetEmailArgs {
    #[command(flatten)]
    pub common: Common,
    /// The new email
    pub email: String,
    /// The operator has checked that the owner receives mail at the new address
    #[arg(long)]
    pub verified: bool,
}

/// Who acts, as the audit trail records it.
#[derive(Debug, Clone)]
pub struct Operator {
    name: String,
    ticket: Option<String>,
}

impl Operator {
    /// A name (and ticket) of 1..=64 printable ASCII characters without spaces: they are
    /// written to the audit trail and printed back, so nothing there may be a control character.
    pub fn parse(name: &str, ticket: Option<&str>) -> Result<Self> {
        let label = |what: &str, value: &str| -> Result<String> {
            let value = value.trim();
            ensure!(
                (1..=MAX_LABEL_CHARS).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()),
                "Failed to accept the {what} {value:?}: 1 to {MAX_LABEL_CHARS} printable ASCII characters, no spaces"
            );
            Ok(value.to_owned())
        };
        Ok(Self { name: label("operator name", name)?, ticket: ticket.map(|t| label("ticket", t)).transpose()? })
    }

    fn actor(&self) -> String {
        format!("operator:{}", self.name)
    }
}

/// What an action changes.
#[derive(Debug, Clone)]
pub enum Change {
    SignOut,
    RequirePasswordReset,
    RemoveMfa,
    SetEmail { email: NormalizedEmail, verified: bool },
}

impl Change {
    /// The audit event (at most 32 ASCII characters, as `audit_log.event` takes).
    pub fn event(&self) -> &'static str {
        match self {
            Change::SignOut => "operator_sign_out",
            Change::RequirePasswordReset => "operator_password_reset",
            Change::RemoveMfa => "operator_mfa_remove",
            Change::SetEmail { .. } => "operator_email_change",
        }
    }
}

/// What an action did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Outcome {
    pub user_id: String,
    pub event: &'static str,
    /// False when the account already was as asked: nothing written, no audit row.
    pub changed: bool,
    /// Refresh-token families revoked by this action.
    pub sessions_ended: u64,
    /// Password-reset and email-verification tokens made void.
    pub tokens_voided: u64,
}

/// An account as `admin account show` prints it. Times are RFC 3339 UTC.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub email_verified_at: Option<String>,
    pub created_at: String,
    /// `set`, or `reset_required` (no password: sign-in fails until a reset).
    pub password: &'static str,
    /// `none`, `pending` (added, never confirmed: not asked at sign-in) or `on`.
    pub second_factor: &'static str,
    pub recovery_codes_left: usize,
    /// Families not revoked with a refresh token not yet expired.
    pub live_sessions: u64,
    pub last_sign_in_at: Option<String>,
    /// Unexpired password-reset tokens (each would set the password once).
    pub pending_password_resets: u64,
    /// Failed sign-ins in a row on this account (a success clears them) and the last one's
    /// time: what auth's per-account throttle counts (`auth_login_max_failures_per_account`).
    pub failed_sign_ins: u32,
    pub last_failed_sign_in_at: Option<String>,
    /// What customer's database holds; `None` when its URL is not configured.
    pub billing: Option<Billing>,
}

/// An account as customer's database knows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Billing {
    /// `None`: not a customer (a free user).
    pub stripe_customer_id: Option<String>,
    /// The mirror of its Stripe subscriptions, the newest first.
    pub subscriptions: Vec<SubscriptionLine>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SubscriptionLine {
    pub stripe_subscription_id: Option<String>,
    pub status: String,
    pub price_id: String,
    pub quantity: u32,
    pub current_period_end: Option<String>,
    pub cancel_at_period_end: bool,
}

/// The user id of the customer with Stripe customer id `stripe_id`, from customer's database.
async fn id_of_stripe_customer(cross: &CrossDb, stripe_id: &str) -> Result<String> {
    let url = cross.customer_url("finding an account by Stripe customer id needs customer's database")?;
    let mut conn = legacy::connect(url).await?;
    let found: Result<Option<(String,)>> = sqlx::query_as("SELECT id FROM customers WHERE stripe_customer_id = ?")
        .bind(stripe_id)
        .fetch_optional(&mut conn)
        .await
        .context("Failed to look the customer up by Stripe customer id");
    conn.close().await.ok();
    found?.map(|(id,)| id).ok_or_else(|| anyhow!("Failed to find a customer with the Stripe customer id {stripe_id:?}"))
}

/// `user` as [`find_account`] takes it: a Stripe customer id becomes the user id it belongs to.
async fn resolve_user(cross: &CrossDb, user: &str) -> Result<String> {
    let user = user.trim();
    if user.starts_with("cus_") {
        return id_of_stripe_customer(cross, user).await;
    }
    Ok(user.to_owned())
}

/// A row of customer's `subscriptions`: Stripe id, status, price, quantity, period end, cancel
/// at period end (0/1).
type SubscriptionRow = (Option<String>, String, String, i64, Option<i64>, i64);

/// What customer's database holds for `user_id`.
async fn billing_of(url: &str, user_id: &str) -> Result<Billing> {
    let mut conn = legacy::connect(url).await?;
    let billing = async {
        let customer: Option<(Option<String>,)> = sqlx::query_as("SELECT stripe_customer_id FROM customers WHERE id = ?")
            .bind(user_id)
            .fetch_optional(&mut conn)
            .await
            .context("Failed to read the customer")?;
        let lines: Vec<SubscriptionRow> = sqlx::query_as(
            "SELECT stripe_subscription_id, status, price_id, CAST(quantity AS SIGNED), current_period_end, \
             CAST(cancel_at_period_end AS SIGNED) FROM subscriptions WHERE customer_id = ? ORDER BY created_at DESC, id",
        )
        .bind(user_id)
        .fetch_all(&mut conn)
        .await
        .context("Failed to read the customer's subscriptions")?;
        Ok::<_, anyhow::Error>(Billing {
            stripe_customer_id: customer.and_then(|(id,)| id),
            subscriptions: lines
                .into_iter()
                .map(|(stripe_subscription_id, status, price_id, quantity, period_end, cancel)| SubscriptionLine {
                    stripe_subscription_id,
                    status,
                    price_id,
                    quantity: u32::try_from(quantity).unwrap_or(0),
                    current_period_end: period_end.map(rfc3339::format),
                    cancel_at_period_end: cancel != 0,
                })
                .collect(),
        })
    }
    .await;
    conn.close().await.ok();
    billing
}

/// Finds the account `user` names (an email when it has an `@`, else an id); with `lock`, locks
/// its row until the transaction ends, as auth's own writes do.
async fn find_account(tx: &mut Transaction<'_, MySql>, keyring: Option<&EmailKeyring>, user: &str, lock: bool) -> Result<String> {
    let user = user.trim();
    let (column, key) = if user.contains('@') {
        let keyring = keyring.ok_or_else(|| anyhow!("Failed to find {user:?}: finding an account by email needs {ENCRYPTION_KEY_VAR}"))?;
        let email = normalize_email(user).map_err(|e| anyhow!("Failed to read {user:?} as an email: {e}"))?;
        ("email_hash", keyring.blind_index(&email))
    } else {
        ("id", user.to_owned())
    };
    let lock = if lock { " FOR UPDATE" } else { "" };
    let found: Option<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT id FROM client_auth WHERE {column} = ?{lock}")))
        .bind(key)
        .fetch_optional(&mut **tx)
        .await
        .with_context(|| format!("Failed to look the account up by {column}"))?;
    found.map(|(id,)| id).ok_or_else(|| anyhow!("Failed to find an account with the id or email {user:?}"))
}

/// Revokes every family of `user_id` not yet revoked; returns how many.
async fn revoke_sessions(tx: &mut Transaction<'_, MySql>, user_id: &str, now: i64, reason: &str) -> Result<u64> {
    let done = sqlx::query("UPDATE refresh_token_families SET revoked_at = ?, revoked_reason = ? WHERE user_id = ? AND revoked_at IS NULL")
        .bind(now)
        .bind(reason)
        .bind(user_id)
        .execute(&mut **tx)
        .await
        .context("Failed to revoke the account's sessions")?;
    Ok(done.rows_affected())
}

/// Deletes the one-time tokens of `table` (a constant of ours) for `user_id`; returns how many.
async fn void_tokens(tx: &mut Transaction<'_, MySql>, table: &str, user_id: &str) -> Result<u64> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE user_id = ?")))
        .bind(user_id)
        .execute(&mut **tx)
        .await
        .with_context(|| format!("Failed to delete the account's {table}"))?;
    Ok(done.rows_affected())
}

/// Applies `change` to the account `user` names, in one transaction with its audit row.
pub async fn apply(cross: &CrossDb, user: &str, change: &Change, operator: &Operator) -> Result<Outcome> {
    let needs_keyring = user.contains('@') || matches!(change, Change::SetEmail { .. });
    let keyring = needs_keyring.then(|| cross.keyring("finding an account by email, or setting one")).transpose()?;
    let user = resolve_user(cross, user).await?;
    let user = user.as_str();
    let mut conn = legacy::connect(cross.auth_url("admin account changes an account in auth's database")?).await?;
    legacy::require_client_auth(&mut conn).await?;
    let outcome = apply_on(&mut conn, keyring.as_ref(), user, change, operator).await;
    conn.close().await.ok();
    outcome
}

async fn apply_on(
    conn: &mut MySqlConnection,
    keyring: Option<&EmailKeyring>,
    user: &str,
    change: &Change,
    operator: &Operator,
) -> Result<Outcome> {
    let now = now_secs()?;
    let mut tx = conn.begin().await.context("Failed to begin a transaction")?;
    let user_id = find_account(&mut tx, keyring, user, true).await?;
    let event = change.event();
    let mut outcome = Outcome { user_id: user_id.clone(), event, changed: false, sessions_ended: 0, tokens_voided: 0 };
    let mut detail = serde_json::Map::new();
    match change {
        Change::SignOut => {
            outcome.sessions_ended = revoke_sessions(&mut tx, &user_id, now, event).await?;
            outcome.changed = outcome.sessions_ended > 0;
        }
        Change::RequirePasswordReset => {
            let cleared = sqlx::query(
                "UPDATE client_auth SET password_hash = NULL, must_reset_password = 1 \
                 WHERE id = ? AND (password_hash IS NOT NULL OR must_reset_password = 0)",
            )
            .bind(&user_id)
            .execute(&mut *tx)
            .await
            .context("Failed to remove the account's password")?
            .rows_affected();
            outcome.sessions_ended = revoke_sessions(&mut tx, &user_id, now, event).await?;
            // A token mailed before may have gone to whoever holds the account now.
            outcome.tokens_voided = void_tokens(&mut tx, "password_reset_tokens", &user_id).await?;
            outcome.changed = cleared > 0 || outcome.sessions_ended > 0 || outcome.tokens_voided > 0;
        }
        Change::RemoveMfa => {
            let cleared = sqlx::query(
                "UPDATE client_auth SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL, \
                 mfa_recovery_codes = NULL WHERE id = ? AND (totp_secret IS NOT NULL OR mfa_recovery_codes IS NOT NULL)",
            )
            .bind(&user_id)
            .execute(&mut *tx)
            .await
            .context("Failed to remove the account's second factor")?
            .rows_affected();
            outcome.changed = cleared > 0;
        }
        Change::SetEmail { email, verified } => {
            let keyring = keyring.ok_or_else(|| anyhow!("Failed to set the email: {ENCRYPTION_KEY_VAR} is needed"))?;
            let hash = keyring.blind_index(email);
            let (current_hash, verified_at): (String, Option<i64>) =
                sqlx::query_as("SELECT email_hash, email_verified_at FROM client_auth WHERE id = ?")
                    .bind(&user_id)
                    .fetch_one(&mut *tx)
                    .await
                    .context("Failed to read the account's email")?;
            let same_address = current_hash == hash;
            // The same address keeps its verification unless the operator vouches for it now.
            let new_verified_at = match (*verified, same_address) {
                (true, true) => verified_at.or(Some(now)),
                (true, false) => Some(now),
                (false, true) => verified_at,
                (false, false) => None,
            };
            if !same_address || new_verified_at != verified_at {
                let written = sqlx::query("UPDATE client_auth SET email_encrypted = ?, email_hash = ?, email_verified_at = ? WHERE id = ?")
                    .bind(keyring.seal_with_aad(email, user_id.as_bytes()))
                    .bind(&hash)
                    .bind(new_verified_at)
                    .bind(&user_id)
                    .execute(&mut *tx)
                    .await;
                if let Err(err) = written {
                    let taken = err.as_database_error().is_some_and(|e| e.is_unique_violation());
                    if taken {
                        bail!("Failed to set the email: another account has {:?}", email.as_str());
                    }
                    return Err(anyhow::Error::new(err).context("Failed to write the account's email"));
                }
                outcome.changed = true;
            }
            if !same_address {
                // Tokens mailed to the old address: a reset would reach its holder, and a
                // verification says nothing about the new address.
                outcome.tokens_voided = void_tokens(&mut tx, "password_reset_tokens", &user_id).await?
                    + void_tokens(&mut tx, "email_verification_tokens", &user_id).await?;
            }
            detail.insert("email_verified".into(), new_verified_at.is_some().into());
        }
    }
    if !outcome.changed {
        tx.rollback().await.context("Failed to end the transaction")?;
        return Ok(outcome);
    }
    if let Some(ticket) = &operator.ticket {
        detail.insert("ticket".into(), ticket.clone().into());
    }
    if outcome.sessions_ended > 0 {
        detail.insert("sessions_ended".into(), outcome.sessions_ended.into());
    }
    if outcome.tokens_voided > 0 {
        detail.insert("tokens_voided".into(), outcome.tokens_voided.into());
    }
    let detail = (!detail.is_empty()).then(|| serde_json::Value::Object(detail).to_string());
    sqlx::query(
        "INSERT INTO audit_log (event, success, reason, actor, subject, email_hash, client_addr, detail) \
         VALUES (?, 1, NULL, ?, ?, NULL, ?, ?)",
    )
    .bind(event)
    .bind(operator.actor())
    .bind(&user_id)
    .bind(AUDIT_CLIENT)
    .bind(detail)
    .execute(&mut *tx)
    .await
    .context("Failed to write the audit row")?;
    tx.commit().await.context("Failed to commit the change")?;
    Ok(outcome)
}

/// The row `show` reads: id, sealed email, verified at, created at, has a password (0/1), must
/// reset (0/1), has a TOTP secret (0/1), enabled at, recovery-code hashes, blind index.
type AccountRow = (String, String, Option<i64>, i64, i64, i64, i64, Option<i64>, Option<String>, String);

/// The state of the account `user` names (reads only).
pub async fn show(cross: &CrossDb, user: &str) -> Result<Account> {
    let keyring = cross.keyring("showing an account's email")?;
    let user = resolve_user(cross, user).await?;
    let mut conn = legacy::connect(cross.auth_url("admin account show reads auth's database")?).await?;
    legacy::require_client_auth(&mut conn).await?;
    let account = show_on(&mut conn, &keyring, &user).await;
    conn.close().await.ok();
    let mut account = account?;
    if let Some(url) = cross.customer_url.as_deref() {
        account.billing = Some(billing_of(url, &account.id).await?);
    }
    Ok(account)
}

async fn show_on(conn: &mut MySqlConnection, keyring: &EmailKeyring, user: &str) -> Result<Account> {
    let now = now_secs()?;
    // One consistent view of the account; nothing is written or locked.
    let mut tx = conn.begin().await.context("Failed to begin a transaction")?;
    let id = find_account(&mut tx, Some(keyring), user, false).await?;
    let (id, sealed, verified_at, created_at, has_password, must_reset, has_totp, totp_on, codes, email_hash): AccountRow = sqlx::query_as(
        "SELECT id, email_encrypted, email_verified_at, CAST(UNIX_TIMESTAMP(created_at) AS SIGNED), \
         CAST(password_hash IS NOT NULL AS SIGNED), CAST(must_reset_password <> 0 AS SIGNED), \
         CAST(totp_secret IS NOT NULL AS SIGNED), totp_enabled_at, mfa_recovery_codes, email_hash \
         FROM client_auth WHERE id = ?",
    )
    .bind(&id)
    .fetch_one(&mut *tx)
    .await
    .context("Failed to read the account")?;
    let (live_sessions, last_sign_in): (i64, Option<i64>) = sqlx::query_as(
        "SELECT CAST(COUNT(DISTINCT CASE WHEN f.revoked_at IS NULL AND t.expires_at > ? THEN f.id END) AS SIGNED), MAX(f.created_at) \
         FROM refresh_token_families f LEFT JOIN refresh_tokens t ON t.family_id = f.id WHERE f.user_id = ?",
    )
    .bind(now)
    .bind(&id)
    .fetch_one(&mut *tx)
    .await
    .context("Failed to count the account's sessions")?;
    let (resets,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM password_reset_tokens WHERE user_id = ? AND expires_at > ?")
        .bind(&id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .context("Failed to count the account's reset tokens")?;
    // Auth counts an account's failures under its blind index (unknown emails are counted too).
    let failures: Option<(i64, i64)> =
        sqlx::query_as("SELECT CAST(failures AS SIGNED), last_failure_at FROM login_throttle WHERE scope = 'account' AND subject = ?")
            .bind(&email_hash)
            .fetch_optional(&mut *tx)
            .await
            .context("Failed to read the account's failed sign-ins")?;
    tx.rollback().await.context("Failed to end the transaction")?;
    let email = legacy::open_email(keyring, &sealed, &id)
        .map_err(|e| anyhow!("Failed to open the stored email of {id} ({e:?}): is {ENCRYPTION_KEY_VAR} auth's keyring?"))?;
    Ok(Account {
        email: email.into_string(),
        email_verified_at: verified_at.map(rfc3339::format),
        created_at: rfc3339::format(created_at),
        password: if has_password == 1 && must_reset == 0 { "set" } else { "reset_required" },
        second_factor: match (has_totp == 1, totp_on) {
            (true, Some(_)) => "on",
            (true, None) => "pending",
            (false, _) => "none",
        },
        recovery_codes_left: codes.as_deref().map_or(0, |c| c.split(',').filter(|s| !s.is_empty()).count()),
        live_sessions: u64::try_from(live_sessions).unwrap_or(0),
        last_sign_in_at: last_sign_in.map(rfc3339::format),
        pending_password_resets: u64::try_from(resets).unwrap_or(0),
        failed_sign_ins: failures.map_or(0, |(n, _)| u32::try_from(n).unwrap_or(u32::MAX)),
        last_failed_sign_in_at: failures.map(|(_, at)| rfc3339::format(at)),
        billing: None,
        id,
    })
}

pub fn render_account(a: &Account) -> String {
    let verified = a.email_verified_at.as_deref().map_or_else(|| "not verified".to_owned(), |at| format!("verified {at}"));
    let second_factor = match a.second_factor {
        "on" => format!("authenticator app ({} recovery codes left)", a.recovery_codes_left),
        "pending" => "authenticator app added, not confirmed (not asked at sign-in)".to_owned(),
        _ => "none".to_owned(),
    };
    let password = if a.password == "set" { "set" } else { "none: sign-in fails until a password reset" };
    let last = a.last_sign_in_at.as_deref().map_or_else(String::new, |at| format!(", last sign-in {at}"));
    let failed = a.last_failed_sign_in_at.as_deref().map_or_else(|| "none since the last success".to_owned(), |at| format!("{} in a row, the last {at}", a.failed_sign_ins));
    let mut text = format!(
        "account {}\n  email           {} ({verified})\n  created         {}\n  password        {password}\n  second factor   {second_factor}\n  sessions        {} live{last}\n  failed sign-ins {failed}\n  password resets {} pending\n",
        a.id, a.email, a.created_at, a.live_sessions, a.pending_password_resets
    );
    match &a.billing {
        None => text.push_str("  billing         not read (no customer database URL)\n"),
        Some(Billing { stripe_customer_id: None, .. }) => text.push_str("  billing         not a customer\n"),
        Some(Billing { stripe_customer_id: Some(id), subscriptions }) => {
            text.push_str(&format!("  billing         Stripe customer {id}, {} subscription(s)\n", subscriptions.len()));
            for line in subscriptions {
                // Only a live subscription renews; an ended one's period end says nothing more.
                let ended = matches!(line.status.as_str(), "canceled" | "incomplete_expired");
                let ends = match (&line.current_period_end, line.cancel_at_period_end) {
                    (Some(_), _) if ended => String::new(),
                    (Some(at), true) => format!(", ends {at}"),
                    (Some(at), false) => format!(", renews {at}"),
                    (None, _) => String::new(),
                };
                let stripe_id = line.stripe_subscription_id.as_deref().unwrap_or("(not at Stripe yet)");
                text.push_str(&format!("    {stripe_id} {} {} x{}{ends}\n", line.status, line.price_id, line.quantity));
            }
        }
    }
    text
}

pub fn render_outcome(o: &Outcome) -> String {
    if !o.changed {
        return format!("account {}: nothing to change ({} not written)\n", o.user_id, o.event);
    }
    let mut text = format!("account {}: {}", o.user_id, o.event);
    if o.sessions_ended > 0 {
        text.push_str(&format!(", {} session(s) ended (access tokens run out within 15 minutes)", o.sessions_ended));
    }
    if o.tokens_voided > 0 {
        text.push_str(&format!(", {} mailed token(s) void", o.tokens_voided));
    }
    text.push_str("; audited\n");
    text
}

/// `admin account …` from the command line.
pub fn command(args: Args, env_file: Option<&Path>, secrets: &mut Vec<String>) -> Result<()> {
    let (common, change) = match args.action {
        ActionArgs::Show(c) => (c, None),
        ActionArgs::SignOut(c) => (c, Some(Change::SignOut)),
        ActionArgs::RequirePasswordReset(c) => (c, Some(Change::RequirePasswordReset)),
        ActionArgs::RemoveMfa(c) => (c, Some(Change::RemoveMfa)),
        ActionArgs::SetEmail(s) => {
            let email = normalize_email(&s.email).map_err(|e| anyhow!("Failed to read {:?} as an email: {e}", s.email))?;
            (s.common, Some(Change::SetEmail { email, verified: s.verified }))
        }
    };
    // Checked before any database is touched.
    let operator = match &change {
        None => None,
        Some(_) => {
            let name = common.operator.clone().or_else(|| std::env::var("USER").ok()).ok_or_else(|| {
                anyhow!("Failed to name the operator for the audit trail: pass --operator (USER is not set)")
            })?;
            Some(Operator::parse(&name, common.ticket.as_deref())?)
        }
    };
    legacy::block_on(env_file, async |env: EnvFile| {
        legacy::warn_key_flag(common.encryption_key.as_deref());
        let auth_url = config::resolve(common.auth_db_url.as_deref(), config::AUTH_DB_URL_VAR, &env);
        let customer_url = config::resolve(common.customer_db_url.as_deref(), config::CUSTOMER_DB_URL_VAR, &env);
        let key = config::resolve(common.encryption_key.as_deref(), ENCRYPTION_KEY_VAR, &env);
        secrets.extend(auth_url.iter().chain(customer_url.iter()).flat_map(|u| config::secrets_of(u)));
        secrets.extend(key.iter().cloned());
        let cross = CrossDb::new(auth_url.as_deref(), customer_url.as_deref(), key.as_deref());
        let text = match (change, operator) {
            (Some(change), Some(operator)) => {
                let outcome = apply(&cross, &common.user, &change, &operator).await?;
                if common.json { json(&outcome)? } else { render_outcome(&outcome) }
            }
            _ => {
                let account = show(&cross, &common.user).await?;
                if common.json { json(&account)? } else { render_account(&account) }
            }
        };
        print!("{text}");
        Ok(())
    })
}

fn json(value: &impl Serialize) -> Result<String> {
    Ok(serde_json::to_string_pretty(value).context("Failed to write JSON")? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_names_and_tickets_are_short_printable_labels() {
        let op = Operator::parse(" jane.doe ", Some("SUP-1234")).expect("a plain name");
        assert_eq!(op.actor(), "operator:jane.doe");
        assert_eq!(op.ticket.as_deref(), Some("SUP-1234"));
        for bad in ["", "jane doe", "jane\u{1b}[31m", "ja\nne", &"x".repeat(65), "jané"] {
            assert!(Operator::parse(bad, None).is_err(), "{bad:?}");
            assert!(Operator::parse("jane", Some(bad)).is_err(), "ticket {bad:?}");
        }
    }

    #[test]
    fn audit_events_fit_the_column() {
        let email = normalize_email("a@example.org").expect("email");
        for change in [Change::SignOut, Change::RequirePasswordReset, Change::RemoveMfa, Change::SetEmail { email, verified: false }] {
            let event = change.event();
            assert!(event.len() <= 32 && event.is_ascii() && event.starts_with("operator_"), "{event}");
        }
    }
}
