//! `admin verify`: the cross-database integrity report (the seed's "verify data integrity" step and
//! its troubleshooting "ensure user IDs match between services").
//!
//! Read-only. Checks, in batches by id:
//! - every customer has a `client_auth` record with the same id;
//! - every `client_auth` email opens with `encryption_key` (AAD = id), is a normalized address, and
//!   its `email_hash` is that address's blind index;
//! - every customer has a Stripe customer id, and no two customers share one (the customer service
//!   creates the Stripe customer before the row, so a row without one cannot subscribe or list
//!   invoices);
//! - before migration 6 (legacy schema): each customer's own name and email equal auth's, and none
//!   is empty.
//!
//! Human-readable by default, `--json` for machines; exit status 2 when anything is wrong.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;
use sqlx::Connection as _;

use crate::legacy::{self, CrossDb, CrossDbArgs, Findings, MAX_IDS_PER_KIND, OpenFailure, Progress};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub db: CrossDbArgs,
    /// Print the report as JSON on standard output
    #[arg(long)]
    pub json: bool,
}

/// One kind of problem verify looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    CustomerWithoutAuth,
    AuthEmailUnreadable,
    AuthEmailInvalid,
    BlindIndexMismatch,
    StripeIdMissing,
    StripeIdShared,
    LegacyIdentityEmpty,
    LegacyEmailUnreadable,
    LegacyEmailInvalid,
    LegacyEmailDiffers,
    LegacyNameDiffers,
}

impl Kind {
    const ALWAYS: [Kind; 6] = [
        Kind::CustomerWithoutAuth,
        Kind::AuthEmailUnreadable,
        Kind::AuthEmailInvalid,
        Kind::BlindIndexMismatch,
        Kind::StripeIdMissing,
        Kind::StripeIdShared,
    ];
    const LEGACY: [Kind; 5] = [
        Kind::LegacyIdentityEmpty,
        Kind::LegacyEmailUnreadable,
        Kind::LegacyEmailInvalid,
        Kind::LegacyEmailDiffers,
        Kind::LegacyNameDiffers,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Kind::CustomerWithoutAuth => "customer_without_auth",
            Kind::AuthEmailUnreadable => "auth_email_unreadable",
            Kind::AuthEmailInvalid => "auth_email_invalid",
            Kind::BlindIndexMismatch => "blind_index_mismatch",
            Kind::StripeIdMissing => "stripe_id_missing",
            Kind::StripeIdShared => "stripe_id_shared",
            Kind::LegacyIdentityEmpty => "legacy_identity_empty",
            Kind::LegacyEmailUnreadable => "legacy_email_unreadable",
            Kind::LegacyEmailInvalid => "legacy_email_invalid",
            Kind::LegacyEmailDiffers => "legacy_email_differs",
            Kind::LegacyNameDiffers => "legacy_name_differs",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::CustomerWithoutAuth => "customers without an auth record (client_auth, same id)",
            Kind::AuthEmailUnreadable => "auth records whose email does not open with encryption_key",
            Kind::AuthEmailInvalid => "auth records whose email opens but is not a normalized address",
            Kind::BlindIndexMismatch => "auth records whose email_hash is not the blind index of their email",
            Kind::StripeIdMissing => "customers without a Stripe customer id",
            Kind::StripeIdShared => "customers sharing one Stripe customer id",
            Kind::LegacyIdentityEmpty => "legacy customers with an empty name and email",
            Kind::LegacyEmailUnreadable => "legacy customers whose email does not open with encryption_key",
            Kind::LegacyEmailInvalid => "legacy customers whose email is not a valid address",
            Kind::LegacyEmailDiffers => "legacy customers whose email differs from auth's",
            Kind::LegacyNameDiffers => "legacy customers whose name differs from auth's",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub kind: &'static str,
    pub description: &'static str,
    pub ok: bool,
    pub count: u64,
    /// The ids concerned (customer ids, or client_auth ids for the auth checks), in key order,
    /// at most 1000.
    pub ids: Vec<String>,
    pub ids_truncated: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Info {
    /// Auth users backfilled from the legacy table who have not set a password yet.
    pub must_reset_password: u64,
    /// How many auth emails each key id sealed (`v1.<kid>.`).
    pub sealed_by_kid: BTreeMap<String, u64>,
    /// Auth emails not sealed with the active key (`admin reencrypt` re-seals them).
    pub not_sealed_with_active_key: u64,
    pub active_kid: String,
    pub blind_index_kid: String,
    /// Auth users that are not customers (the seed's free users): fine.
    pub auth_users_without_customer: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub customer_schema_version: Option<i64>,
    pub auth_schema_version: Option<i64>,
    /// True before customer migration 6 (`customers` still has `name` and `email_encrypted`).
    pub legacy_identity_columns: bool,
    pub customers: u64,
    pub auth_users: u64,
    pub checks: Vec<CheckResult>,
    pub info: Info,
    pub duration_ms: u128,
}

impl Report {
    pub fn problems(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.ok)
    }

    pub fn count(&self, code: &str) -> u64 {
        self.checks.iter().find(|c| c.kind == code).map_or(0, |c| c.count)
    }
}

#[derive(Default)]
struct Tally {
    found: BTreeMap<Kind, (u64, Vec<String>)>,
}

impl Tally {
    fn add(&mut self, kind: Kind, id: &str) {
        let e = self.found.entry(kind).or_default();
        e.0 += 1;
        if e.1.len() < MAX_IDS_PER_KIND {
            e.1.push(id.to_owned());
        }
    }

    fn result(&self, kind: Kind) -> CheckResult {
        let (count, ids) = self.found.get(&kind).cloned().unwrap_or_default();
        CheckResult {
            kind: kind.code(),
            description: kind.describe(),
            ok: count == 0,
            ids_truncated: count > ids.len() as u64,
            count,
            ids,
        }
    }
}

/// `admin verify` as a library call.
pub async fn run(cross: &CrossDb) -> Result<Report> {
    let keyring = cross.keyring("verify opens every email to check it")?;
    let mut customers = legacy::connect(cross.customer_url("verify reads the customers")?).await?;
    let mut auth = legacy::connect(cross.auth_url("verify reads auth's client_auth")?).await?;
    let customer_schema_version = legacy::schema_version(&mut customers).await?;
    let auth_schema_version = legacy::schema_version(&mut auth).await?;
    legacy::require_client_auth(&mut auth).await?;
    let has_customers = legacy::table_exists(&mut customers, "customers").await?;
    let legacy_cols = has_customers && legacy::has_legacy_identity(&mut customers).await?;
    let has_stripe = has_customers && legacy::column_exists(&mut customers, "customers", "stripe_customer_id").await?;

    let n_customers = if has_customers {
        legacy::count(&mut customers, "SELECT COUNT(*) FROM customers").await?
    } else {
        0
    };
    let n_auth = legacy::count(&mut auth, "SELECT COUNT(*) FROM client_auth").await?;
    let mut tally = Tally::default();
    let mut info = Info {
        active_kid: keyring.active_kid().to_owned(),
        blind_index_kid: keyring.blind_index_kid().to_owned(),
        ..Info::default()
    };
    let mut progress = Progress::new("verify", n_customers + n_auth, cross.progress);

    // Customers, with auth's record of the same id.
    let mut with_auth: u64 = 0;
    let mut after: Option<String> = None;
    loop {
        if !has_customers {
            break;
        }
        let prev = after.clone();
        let batch = legacy::customer_id_batch(&mut customers, prev.as_deref(), cross.batch_size, has_stripe).await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.0.clone());
        let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
        let by_id = legacy::auth_by_ids(&mut auth, &ids).await?;
        with_auth += by_id.len() as u64;
        for (id, stripe) in &batch {
            if !by_id.contains_key(id) {
                tally.add(Kind::CustomerWithoutAuth, id);
            }
            if has_stripe && stripe.as_deref().is_none_or(|s| s.trim().is_empty()) {
                tally.add(Kind::StripeIdMissing, id);
            }
        }
        if legacy_cols {
            // The same keyset window again, with the legacy columns.
            let rows = legacy::legacy_batch(&mut customers, prev.as_deref(), batch.len()).await?;
            for row in &rows {
                if row.name.is_empty() && row.email_encrypted.is_empty() {
                    tally.add(Kind::LegacyIdentityEmpty, &row.id);
                    continue;
                }
                let email = match legacy::open_email(&keyring, &row.email_encrypted, &row.id) {
                    Ok(e) => e,
                    Err(OpenFailure::Unreadable) => {
                        tally.add(Kind::LegacyEmailUnreadable, &row.id);
                        continue;
                    }
                    Err(OpenFailure::Invalid) => {
                        tally.add(Kind::LegacyEmailInvalid, &row.id);
                        continue;
                    }
                };
                let Some(a) = by_id.get(&row.id) else { continue };
                if let Ok(auth_email) = legacy::open_email(&keyring, &a.email_encrypted, &a.id)
                    && auth_email != email
                {
                    tally.add(Kind::LegacyEmailDiffers, &row.id);
                }
                if a.name != row.name {
                    tally.add(Kind::LegacyNameDiffers, &row.id);
                }
            }
        }
        progress.inc(batch.len() as u64);
    }
    info.auth_users_without_customer = n_auth.saturating_sub(with_auth);

    if has_stripe {
        let shared: Vec<(String,)> = sqlx::query_as(
            "SELECT c.id FROM customers c JOIN (SELECT stripe_customer_id FROM customers \
             WHERE stripe_customer_id IS NOT NULL AND stripe_customer_id <> '' \
             GROUP BY stripe_customer_id HAVING COUNT(*) > 1) d ON d.stripe_customer_id = c.stripe_customer_id \
             ORDER BY c.id",
        )
        .fetch_all(&mut customers)
        .await
        .context("Failed to look for shared Stripe ids")?;
        for (id,) in shared {
            tally.add(Kind::StripeIdShared, &id);
        }
    }

    // Every auth record.
    let mut after: Option<String> = None;
    loop {
        let batch = legacy::auth_batch(&mut auth, after.as_deref(), cross.batch_size).await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.id.clone());
        for a in &batch {
            let kid = a.email_encrypted.split('.').nth(1).unwrap_or("?").to_owned();
            if keyring.needs_reseal(&a.email_encrypted) {
                info.not_sealed_with_active_key += 1;
            }
            *info.sealed_by_kid.entry(kid).or_default() += 1;
            let plain = match keyring.open_with_aad(&a.email_encrypted, a.id.as_bytes()) {
                Ok(p) => p,
                Err(_) => {
                    tally.add(Kind::AuthEmailUnreadable, &a.id);
                    continue;
                }
            };
            let email = match sealed_email::normalize_email(&plain) {
                Ok(e) if e.as_str() == plain => e,
                _ => {
                    tally.add(Kind::AuthEmailInvalid, &a.id);
                    continue;
                }
            };
            if keyring.blind_index(&email) != a.email_hash {
                tally.add(Kind::BlindIndexMismatch, &a.id);
            }
        }
        progress.inc(batch.len() as u64);
    }
    if legacy::column_exists(&mut auth, "client_auth", "must_reset_password").await? {
        info.must_reset_password =
            legacy::count(&mut auth, "SELECT COUNT(*) FROM client_auth WHERE must_reset_password <> 0").await?;
    }
    let took = progress.finish();
    customers.close().await.ok();
    auth.close().await.ok();

    let mut kinds: Vec<Kind> = Kind::ALWAYS.to_vec();
    if !has_stripe {
        kinds.retain(|k| !matches!(k, Kind::StripeIdMissing | Kind::StripeIdShared));
    }
    if legacy_cols {
        kinds.extend(Kind::LEGACY);
    }
    let checks: Vec<CheckResult> = kinds.into_iter().map(|k| tally.result(k)).collect();
    Ok(Report {
        ok: checks.iter().all(|c| c.ok),
        customer_schema_version,
        auth_schema_version,
        legacy_identity_columns: legacy_cols,
        customers: n_customers,
        auth_users: n_auth,
        checks,
        info,
        duration_ms: took.as_millis(),
    })
}

fn version_text(v: Option<i64>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// The human-readable report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "verify: customer schema at version {} ({}), auth schema at version {}\n",
        version_text(r.customer_schema_version),
        if r.legacy_identity_columns { "legacy: name and email still in customers" } else { "normalized" },
        version_text(r.auth_schema_version),
    ));
    let secs = Duration::from_millis(u64::try_from(r.duration_ms).unwrap_or(u64::MAX)).as_secs_f64();
    out.push_str(&format!(
        "  checked {} customers and {} auth users in {secs:.1} s\n",
        r.customers, r.auth_users
    ));
    for c in &r.checks {
        out.push_str(&format!(
            "  {:<4} {:<68} {:>8}\n",
            if c.ok { "ok" } else { "FAIL" },
            c.description,
            c.count
        ));
        if !c.ok {
            let shown: Vec<&str> = c.ids.iter().take(5).map(String::as_str).collect();
            let more = if c.count > shown.len() as u64 { ", ..." } else { "" };
            out.push_str(&format!("       {}: {}{more}\n", c.kind, shown.join(", ")));
        }
    }
    let kids: Vec<String> = r.info.sealed_by_kid.iter().map(|(k, n)| format!("{k}={n}")).collect();
    out.push_str(&format!(
        "  info: {} auth users must reset their password (backfilled); {} auth users are not customers; \
         emails sealed by key: {} (active {}, blind index {}); {} not sealed with the active key\n",
        r.info.must_reset_password,
        r.info.auth_users_without_customer,
        if kids.is_empty() { "-".to_owned() } else { kids.join(", ") },
        r.info.active_kid,
        r.info.blind_index_kid,
        r.info.not_sealed_with_active_key,
    ));
    let problems = r.problems().count();
    if problems == 0 {
        out.push_str("verify: OK\n");
    } else {
        out.push_str(&format!("verify: {problems} kinds of problems found\n"));
    }
    out
}

/// `admin verify` from the command line.
pub fn command(args: Args, env_file: Option<&Path>, secrets: &mut Vec<String>) -> Result<()> {
    legacy::block_on(env_file, async |env| {
        let cross = CrossDb::from_args(&args.db, &env, secrets)?;
        let report = run(&cross).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report).context("Failed to write JSON")?);
        } else {
            print!("{}", render(&report));
        }
        if !report.ok {
            let kinds: Vec<&str> = report.problems().map(|c| c.kind).collect();
            return Err(Findings(format!("verify found problems: {}", kinds.join(", "))).into());
        }
        Ok(())
    })
}
