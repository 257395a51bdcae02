//! `admin audit`: makes both services' audit logs tamper-evident, against whoever can write the
//! database (its administrators, a leaked migration password), which the app user's
//! append-only grants alone cannot be.
//!
//! `seal` chains the audit rows in id order: each row gets `seal_prev` (the seal of the row
//! before it; 64 zeros for the first) and `seal` = HMAC-SHA-256(key, `seal_prev` || "\n" || its
//! columns as a JSON array of strings). The key (`AUDIT_SEAL_KEY`, 32 bytes in base64) is the
//! operator's, kept out of the database and out of the app. `audit_seal` holds the chain's head
//! (the last sealed id, its seal, how many rows were sealed) under the key's MAC too. Only rows
//! older than a margin (5 minutes by default) are sealed: an id is taken when a row is inserted
//! but the row is seen only at commit, so a young row with a lower id may still appear.
//!
//! `verify` recomputes every sealed row and reports, with exit status 2: a row whose content or
//! seal changed, a row missing from the middle or put among sealed rows, rows cut from the end
//! (the head names a later row than the last one found), and a head that does not verify. Rows
//! deleted from the start are reported as gone (what `admin purge --audit-older-than-days`
//! does), not as tampering. What it cannot see: the whole chain put back to an older head and
//! the rows after it removed; keep the head `seal` prints (in your log system) to catch that.
//!
//! The services write their audit rows as before and never read these columns.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::Serialize;
use sha2::Sha256;
use sqlx::mysql::{MySqlConnection, MySqlRow};
use sqlx::{Connection as _, Row as _};

use crate::config::{self, EnvFile};
use crate::legacy::{self, Findings, now_secs};

/// Where the operator's seal key comes from: the environment, then `.env`.
pub const SEAL_KEY_VAR: &str = "AUDIT_SEAL_KEY";
/// `seal_prev` of the first row ever sealed, and the head before any.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Rows younger than this are left for the next run (see the module's comment).
pub const DEFAULT_MARGIN_SECS: u64 = 300;
const DEFAULT_BATCH: u32 = 1000;
/// Findings listed by id, at most.
const MAX_LISTED: usize = 20;

/// The operator's seal key.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(***)")
    }
}

impl SealKey {
    pub fn parse(value: &str) -> Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| anyhow!("Failed to read {SEAL_KEY_VAR}: not base64 (make one with `admin audit new-key`)"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow!("Failed to read {SEAL_KEY_VAR}: it must hold 32 bytes (make one with `admin audit new-key`)"))?;
        Ok(Self(key))
    }

    pub fn generate() -> Result<String> {
        Ok(base64::engine::general_purpose::STANDARD.encode(crate::keys::random_bytes::<32>()?))
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A row's seal: its predecessor's seal and its columns.
    fn seal(&self, prev: &str, canonical: &str) -> String {
        self.mac(&[prev.as_bytes(), b"\n", canonical.as_bytes()])
    }
}

/// A service's audit table as the seal reads it: every column, as text, in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Auth,
    Customer,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Customer => "customer",
        }
    }

    /// The row's columns as text (times as Unix seconds, so the session's time zone cannot
    /// change them), and whether the row is older than the margin (bound once, in seconds).
    fn columns(self) -> &'static str {
        match self {
            Service::Auth => {
                "CAST(id AS CHAR), CAST(UNIX_TIMESTAMP(occurred_at) AS CHAR), event, CAST(success AS CHAR), reason, actor, \
                 subject, email_hash, client_addr, detail, CAST(occurred_at <= NOW(3) - INTERVAL ? SECOND AS SIGNED)"
            }
            Service::Customer => {
                "CAST(id AS CHAR), CAST(occurred_at AS CHAR), actor, action, subject, detail, \
                 CAST(occurred_at <= UNIX_TIMESTAMP() - ? AS SIGNED)"
            }
        }
    }

    fn column_count(self) -> usize {
        match self {
            Service::Auth => 10,
            Service::Customer => 6,
        }
    }
}

/// One audit row: id, its stored seals, its canonical text, and whether it is old enough.
struct AuditRow {
    id: u64,
    seal_prev: Option<String>,
    seal: Option<String>,
    canonical: String,
    old_enough: bool,
}

/// Reads up to `limit` rows with `id` in (`after`, `through`], in id order.
async fn rows_after(conn: &mut MySqlConnection, service: Service, after: u64, through: Option<u64>, limit: u32, margin: u64) -> Result<Vec<AuditRow>> {
    let sql = format!(
        "SELECT {}, seal_prev, seal FROM audit_log WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
        service.columns()
    );
    let rows: Vec<MySqlRow> = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(margin)
        .bind(after)
        .bind(through.unwrap_or(u64::MAX))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .with_context(|| format!("Failed to read {}'s audit rows", service.name()))?;
    let n = service.column_count();
    rows.iter()
        .map(|row| {
            let text = |i: usize| row.try_get::<Option<String>, _>(i).with_context(|| format!("Failed to read column {i} of an audit row"));
            let values = (0..n).map(text).collect::<Result<Vec<_>>>()?;
            let id = values[0].as_deref().and_then(|v| v.parse().ok()).context("Failed to read an audit row's id")?;
            Ok(AuditRow {
                id,
                canonical: serde_json::to_string(&values).context("Failed to encode an audit row")?,
                old_enough: row.try_get::<Option<i64>, _>(n).context("Failed to read an audit row's age")? == Some(1),
                seal_prev: text(n + 1)?,
                seal: text(n + 2)?,
            })
        })
        .collect()
}

/// The chain's head, as `audit_seal` holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Head {
    pub sealed_through: u64,
    pub head: String,
    pub rows_sealed: u64,
    pub sealed_at: i64,
}

impl Head {
    fn genesis() -> Self {
        Self { sealed_through: 0, head: GENESIS.to_owned(), rows_sealed: 0, sealed_at: 0 }
    }

    fn mac(&self, key: &SealKey, service: Service) -> String {
        let text = format!("audit_seal|{}|{}|{}|{}|{}", service.name(), self.sealed_through, self.head, self.rows_sealed, self.sealed_at);
        key.mac(&[text.as_bytes()])
    }
}

/// Reads the head (locking it when `lock`); `Ok(Err(..))` when its MAC does not verify.
async fn read_head(conn: &mut MySqlConnection, key: &SealKey, service: Service, lock: bool) -> Result<std::result::Result<Head, Head>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row: Option<(u64, String, u64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT sealed_through, head, rows_sealed, sealed_at, mac FROM audit_seal WHERE id = 1{lock}"
    )))
    .fetch_optional(&mut *conn)
    .await
    .with_context(|| format!("Failed to read {}'s audit_seal (migrate it first: `admin migrate up`)", service.name()))?;
    // The migration writes the genesis head; a log without one lost it.
    let Some((sealed_through, head, rows_sealed, sealed_at, mac)) = row else {
        return Ok(Err(Head::genesis()));
    };
    let head = Head { sealed_through, head, rows_sealed, sealed_at };
    Ok(if head == Head::genesis() && mac.is_empty() || head.mac(key, service) == mac { Ok(head) } else { Err(head) })
}

/// What `seal` did to one service's log.
#[derive(Debug, Clone, Serialize)]
pub struct SealReport {
    pub service: &'static str,
    pub sealed_now: u64,
    /// The head after this run: keep it outside the database.
    pub head: Head,
    /// Rows after the head (younger than the margin, or written since).
    pub unsealed: u64,
}

/// Seals `service`'s audit rows older than `margin` seconds, extending the chain.
pub async fn seal(conn: &mut MySqlConnection, key: &SealKey, service: Service, margin: u64, batch: u32) -> Result<SealReport> {
    ensure!(batch > 0, "Failed to seal: --batch-size must be at least 1");
    let mut sealed_now = 0;
    let head = loop {
        let mut tx = conn.begin().await.context("Failed to begin a transaction")?;
        let head = match read_head(&mut tx, key, service, true).await? {
            Ok(head) => head,
            Err(_) => bail!(
                "Failed to seal {}'s audit log: its head (audit_seal) is missing or does not match its MAC: it was changed, \
                 or {SEAL_KEY_VAR} is not the key it was sealed with; run `admin audit verify`",
                service.name()
            ),
        };
        let rows = rows_after(&mut tx, service, head.sealed_through, None, batch, margin).await?;
        let full_batch = rows.len() == batch as usize;
        let ready: Vec<&AuditRow> = rows.iter().take_while(|r| r.old_enough).collect();
        if ready.is_empty() {
            tx.rollback().await.context("Failed to end the transaction")?;
            break head;
        }
        let mut prev = head.head.clone();
        for row in &ready {
            let seal = key.seal(&prev, &row.canonical);
            sqlx::query("UPDATE audit_log SET seal_prev = ?, seal = ? WHERE id = ?")
                .bind(&prev)
                .bind(&seal)
                .bind(row.id)
                .execute(&mut *tx)
                .await
                .context("Failed to seal an audit row")?;
            prev = seal;
        }
        let count = ready.len() as u64;
        let next = Head {
            sealed_through: ready.last().map_or(head.sealed_through, |r| r.id),
            head: prev,
            rows_sealed: head.rows_sealed + count,
            sealed_at: now_secs()?,
        };
        // The migration wrote the row (read above, locked): an UPDATE, so sealing needs no INSERT.
        sqlx::query("UPDATE audit_seal SET sealed_through = ?, head = ?, rows_sealed = ?, sealed_at = ?, mac = ? WHERE id = 1")
        .bind(next.sealed_through)
        .bind(&next.head)
        .bind(next.rows_sealed)
        .bind(next.sealed_at)
        .bind(next.mac(key, service))
        .execute(&mut *tx)
        .await
        .context("Failed to write the audit log's head")?;
        tx.commit().await.context("Failed to commit the seals")?;
        sealed_now += count;
        if !full_batch || ready.len() < rows.len() {
            break next;
        }
    };
    let (unsealed,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE id > ?")
        .bind(head.sealed_through)
        .fetch_one(&mut *conn)
        .await
        .context("Failed to count the unsealed audit rows")?;
    Ok(SealReport { service: service.name(), sealed_now, head, unsealed: u64::try_from(unsealed).unwrap_or(0) })
}

/// What `verify` found in one service's log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub service: &'static str,
    pub rows_verified: u64,
    /// The first sealed row left; rows before it were purged or deleted (not tampering).
    pub first_id: Option<u64>,
    pub earlier_rows_gone: bool,
    pub sealed_through: u64,
    pub head: String,
    pub unsealed: u64,
    /// What does not verify; empty when the log is intact.
    pub problems: Vec<String>,
}

impl VerifyReport {
    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        } else if self.problems.len() == MAX_LISTED {
            self.problems.push("… and more".to_owned());
        }
    }
}

/// Recomputes every sealed row of `service`'s log and the chain's links.
pub async fn verify(conn: &mut MySqlConnection, key: &SealKey, service: Service, batch: u32) -> Result<VerifyReport> {
    let mut report = VerifyReport { service: service.name(), ..VerifyReport::default() };
    let head = match read_head(conn, key, service, false).await? {
        Ok(head) => head,
        Err(head) => {
            report.problem(format!(
                "the head (audit_seal: through row {}, {} rows) is missing or does not match its MAC: it was changed, or {SEAL_KEY_VAR} is not the sealing key",
                head.sealed_through, head.rows_sealed
            ));
            head
        }
    };
    report.sealed_through = head.sealed_through;
    report.head = head.head.clone();
    let mut last: Option<(u64, String)> = None;
    let mut after = 0;
    loop {
        let rows = rows_after(conn, service, after, Some(head.sealed_through), batch.max(1), 0).await?;
        let Some(end) = rows.last().map(|r| r.id) else { break };
        for row in &rows {
            let (Some(prev), Some(seal)) = (&row.seal_prev, &row.seal) else {
                report.problem(format!("row {}: not sealed, though the log was sealed past it (inserted afterwards, or its seal removed)", row.id));
                continue;
            };
            if key.seal(prev, &row.canonical) != *seal {
                report.problem(format!("row {}: its content or its seal was changed", row.id));
            }
            match &last {
                None if prev != GENESIS => {
                    report.first_id = Some(row.id);
                    report.earlier_rows_gone = true;
                }
                None => report.first_id = Some(row.id),
                Some((last_id, last_seal)) if prev != last_seal => report.problem(format!(
                    "row {}: does not follow row {last_id} (a sealed row between them was deleted, or one was inserted)",
                    row.id
                )),
                Some(_) => {}
            }
            report.rows_verified += 1;
            last = Some((row.id, seal.clone()));
        }
        after = end;
    }
    if head.sealed_through > 0 {
        match &last {
            Some((id, seal)) if *id == head.sealed_through && *seal == head.head => {}
            Some((id, _)) => report.problem(format!(
                "the chain ends at row {id}, but its head says row {}: sealed rows were removed from its end",
                head.sealed_through
            )),
            None => report.problem(format!("no sealed row is left, but the head says the log was sealed through row {}", head.sealed_through)),
        }
    }
    let (unsealed, sealed_beyond): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(COUNT(seal) AS SIGNED) FROM audit_log WHERE id > ?")
            .bind(head.sealed_through)
            .fetch_one(&mut *conn)
            .await
            .context("Failed to count the unsealed audit rows")?;
    report.unsealed = u64::try_from(unsealed).unwrap_or(0);
    // Only `seal` writes seals, together with the head; the app user may not write them.
    if sealed_beyond > 0 {
        report.problem(format!(
            "{sealed_beyond} row(s) after the head carry seals: the head was moved back to an older one"
        ));
    }
    Ok(report)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Seal the audit rows older than --margin-secs into each log's chain (run it every few
    /// minutes, e.g. a cron job); prints each chain's head: keep it outside the database
    Seal(SealArgs),
    /// Check every sealed row and the chain's head; exit status 2 when anything does not verify
    Verify(CommonArgs),
    /// Print a fresh seal key for AUDIT_SEAL_KEY (32 random bytes, base64)
    NewKey,
}

#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// Which service's audit log
    #[arg(long, value_enum, default_value_t = ServiceArg::All)]
    pub service: ServiceArg,
    #[command(flatten)]
    pub urls: crate::legacy::DbUrls,
    /// Rows read per statement
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH)]
    pub batch_size: u32,
    /// Print the report as JSON on standard output
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct SealArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Leave rows younger than this many seconds for the next run (a row may commit after a
    /// younger one with a higher id)
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MARGIN_SECS)]
    pub margin_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceArg {
    Auth,
    Customer,
    All,
}

pub fn render_seal(r: &SealReport) -> String {
    format!(
        "{}: sealed {} row(s); head {} through row {} ({} rows sealed in all); {} row(s) not yet sealed\n",
        r.service, r.sealed_now, r.head.head, r.head.sealed_through, r.head.rows_sealed, r.unsealed
    )
}

pub fn render_verify(r: &VerifyReport) -> String {
    let mut text = if r.problems.is_empty() {
        format!("{}: {} sealed row(s) verify, through row {} (head {})", r.service, r.rows_verified, r.sealed_through, r.head)
    } else {
        format!("{}: {} problem(s) in {} sealed row(s)", r.service, r.problems.len(), r.rows_verified)
    };
    if r.earlier_rows_gone {
        text.push_str(&format!("; rows before {} are gone (purged, or deleted)", r.first_id.unwrap_or(0)));
    }
    text.push_str(&format!("; {} row(s) not yet sealed\n", r.unsealed));
    for problem in &r.problems {
        text.push_str(&format!("  {problem}\n"));
    }
    text
}

/// `admin audit …` from the command line.
pub fn command(args: Args, env_file: Option<&Path>, secrets: &mut Vec<String>) -> Result<()> {
    let (common, margin) = match args.action {
        Action::NewKey => {
            println!("{}", SealKey::generate()?);
            return Ok(());
        }
        Action::Seal(s) => (s.common, Some(s.margin_secs)),
        Action::Verify(c) => (c, None),
    };
    legacy::block_on(env_file, async |env: EnvFile| {
        let raw_key = config::resolve(None, SEAL_KEY_VAR, &env)
            .ok_or_else(|| anyhow!("Failed to find {SEAL_KEY_VAR}: set it in the environment or .env (make one with `admin audit new-key`)"))?;
        secrets.push(raw_key.clone());
        let key = SealKey::parse(&raw_key)?;
        let services: &[(Service, Option<&String>, &str, &str)] = &[
            (Service::Auth, common.urls.auth_db_url.as_ref(), config::AUTH_DB_URL_VAR, "--auth-db-url"),
            (Service::Customer, common.urls.customer_db_url.as_ref(), config::CUSTOMER_DB_URL_VAR, "--customer-db-url"),
        ];
        let mut findings = Vec::new();
        let mut reports = Vec::new();
        for (service, flag, var, flag_name) in services {
            let wanted = matches!(
                (common.service, service),
                (ServiceArg::All, _) | (ServiceArg::Auth, Service::Auth) | (ServiceArg::Customer, Service::Customer)
            );
            if !wanted {
                continue;
            }
            let url = config::require(flag.map(String::as_str), flag_name, var, &env)?;
            secrets.extend(config::secrets_of(&url));
            let mut conn = legacy::connect(&url).await?;
            let report = match margin {
                Some(margin) => {
                    let r = seal(&mut conn, &key, *service, margin, common.batch_size).await;
                    r.map(|r| (render_seal(&r), serde_json::to_value(&r)))
                }
                None => {
                    let r = verify(&mut conn, &key, *service, common.batch_size).await;
                    r.map(|r| {
                        if !r.problems.is_empty() {
                            findings.push(service.name());
                        }
                        (render_verify(&r), serde_json::to_value(&r))
                    })
                }
            };
            conn.close().await.ok();
            let (text, json) = report?;
            if common.json {
                reports.push(json.context("Failed to write JSON")?);
            } else {
                print!("{text}");
            }
        }
        if common.json {
            println!("{}", serde_json::to_string_pretty(&reports).context("Failed to write JSON")?);
        }
        if !findings.is_empty() {
            return Err(Findings(format!("the audit log of {} does not verify", findings.join(" and "))).into());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_keys_are_32_bytes_of_base64_and_never_printed() {
        let raw = SealKey::generate().expect("random");
        let key = SealKey::parse(&raw).expect("a fresh key parses");
        assert_eq!(format!("{key:?}"), "SealKey(***)");
        for bad in ["", "not base64!", "AAAA", &base64::engine::general_purpose::STANDARD.encode([0u8; 31])] {
            let err = SealKey::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(SEAL_KEY_VAR), "{err}");
            assert!(bad.is_empty() || !err.contains(bad), "the value is not echoed: {err}");
        }
    }

    #[test]
    fn a_seal_depends_on_the_key_the_predecessor_and_every_byte_of_the_row() {
        let a = SealKey::parse(&base64::engine::general_purpose::STANDARD.encode([1u8; 32])).expect("key");
        let b = SealKey::parse(&base64::engine::general_purpose::STANDARD.encode([2u8; 32])).expect("key");
        let row = r#"["1","1733590000.123","login","1",null,"user:x",null,null,"127.0.0.1",null]"#;
        let sealed = a.seal(GENESIS, row);
        assert_eq!(sealed.len(), 64);
        assert_eq!(sealed, a.seal(GENESIS, row), "deterministic");
        assert_ne!(sealed, b.seal(GENESIS, row), "another key");
        assert_ne!(sealed, a.seal(&sealed, row), "another predecessor");
        assert_ne!(sealed, a.seal(GENESIS, &row.replace("login", "logout")), "another row");
        // The separator keeps a predecessor and a row from trading bytes.
        assert_ne!(a.seal("ab", "c"), a.seal("a", "bc"));
    }

    #[test]
    fn the_head_is_bound_to_its_service_and_every_field() {
        let key = SealKey::parse(&base64::engine::general_purpose::STANDARD.encode([3u8; 32])).expect("key");
        let head = Head { sealed_through: 7, head: "ab".repeat(32), rows_sealed: 7, sealed_at: 1_733_590_000 };
        let mac = head.mac(&key, Service::Auth);
        assert_ne!(mac, head.mac(&key, Service::Customer));
        assert_ne!(mac, Head { sealed_through: 6, ..head.clone() }.mac(&key, Service::Auth));
        assert_ne!(mac, Head { rows_sealed: 8, ..head.clone() }.mac(&key, Service::Auth));
    }
}
