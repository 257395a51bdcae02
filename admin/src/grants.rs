//! `admin grants`: the least privileges a service's app user needs, as GRANT statements for the
//! tables its database has now (run it after every `migrate up` that adds a table).
//!
//! The app user may read and write every table of its service, except that it may only read and
//! append to `audit_log`: with the app's credentials (leaked from a deployment, or a bug) the
//! audit trail cannot be rewritten or deleted (ASVS 5.0 V16.4.2). It may not write the seal
//! columns `admin audit seal` fills, and gets nothing on `audit_seal` (the seal's head), on
//! `_sqlx_migrations`, and no schema privilege: only `admin migrate`, as the migration user,
//! changes the schema. Deleting old audit rows (`admin purge --audit-older-than-days`) is
//! therefore the migration user's job.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, ensure};
use sqlx::mysql::MySqlConnection;

use crate::config;
use crate::legacy;

/// Tables the app may only read and append to.
pub const APPEND_ONLY_TABLES: [&str; 1] = ["audit_log"];
/// Columns of those that only `admin audit seal` writes.
pub const SEAL_COLUMNS: [&str; 2] = ["seal_prev", "seal"];
/// sqlx's bookkeeping, and the audit seal's head: the operator's alone.
const OPERATOR_TABLES: [&str; 2] = ["_sqlx_migrations", "audit_seal"];
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which service's database
    #[arg(long, value_enum)]
    pub service: ServiceArg,
    /// The app user, as NAME@HOST (e.g. auth_app@%)
    #[arg(long, value_name = "NAME@HOST")]
    pub app_user: String,
    /// The database URL (the migration user's) [default: $SPIN_VARIABLE_<SERVICE>_DB_URL, then .env]
    #[arg(long, value_name = "URL")]
    pub db_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceArg {
    Auth,
    Customer,
}

/// A MySQL account, `'name'@'host'`, restricted to characters that need no escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    name: String,
    host: String,
}

impl Account {
    pub fn parse(raw: &str) -> Result<Self> {
        let (name, host) = raw.rsplit_once('@').ok_or_else(|| anyhow!("Failed to read --app-user {raw:?}: write it as NAME@HOST, e.g. auth_app@%"))?;
        let plain = |s: &str| !s.is_empty() && s.len() <= 80 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-%:".contains(&b));
        ensure!(plain(name) && plain(host), "Failed to read --app-user {raw:?}: name and host may hold only letters, digits and _ . - % :");
        Ok(Self { name: name.to_owned(), host: host.to_owned() })
    }
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}'@'{}'", self.name, self.host)
    }
}

fn quoted(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

/// The GRANT statements for `account` on the tables of the connected database.
pub async fn statements(conn: &mut MySqlConnection, account: &Account) -> Result<Vec<String>> {
    let database: String = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&mut *conn)
        .await
        .context("Failed to read the database's name")?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    )
    .fetch_all(&mut *conn)
    .await
    .context("Failed to list the database's tables")?;
    ensure!(
        tables.iter().any(|t| t == MIGRATIONS_TABLE),
        "Failed to write grants: {database} has no {MIGRATIONS_TABLE}; run `admin migrate up` first"
    );
    let mut statements = Vec::new();
    for table in tables.iter().filter(|t| !OPERATOR_TABLES.contains(&t.as_str())) {
        let privileges = if APPEND_ONLY_TABLES.contains(&table.as_str()) {
            // Every column but the seals: a row the app writes cannot come pre-sealed.
            let columns: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            )
            .bind(table)
            .fetch_all(&mut *conn)
            .await
            .with_context(|| format!("Failed to list the columns of {table}"))?;
            let insertable: Vec<String> = columns.iter().filter(|c| !SEAL_COLUMNS.contains(&c.as_str())).map(|c| quoted(c)).collect();
            format!("SELECT, INSERT ({})", insertable.join(", "))
        } else {
            "SELECT, INSERT, UPDATE, DELETE".to_owned()
        };
        statements.push(format!("GRANT {privileges} ON {}.{} TO {account};", quoted(&database), quoted(table)));
    }
    Ok(statements)
}

pub fn command(args: Args, env_file: Option<&Path>, secrets: &mut Vec<String>) -> Result<()> {
    let account = Account::parse(&args.app_user)?;
    let (service, var) = match args.service {
        ServiceArg::Auth => ("auth", config::AUTH_DB_URL_VAR),
        ServiceArg::Customer => ("customer", config::CUSTOMER_DB_URL_VAR),
    };
    legacy::block_on(env_file, async |env| {
        let url = config::resolve(args.db_url.as_deref(), var, &env)
            .ok_or_else(|| anyhow!("Failed to find the {service} database URL: pass --db-url or set {var}"))?;
        secrets.extend(config::secrets_of(&url));
        let mut conn = legacy::connect(&url).await?;
        println!("-- {account}: every {service} table but the audit log read and written, the audit log only appended to");
        println!("-- (its seal columns not even that), nothing on audit_seal. Instead of ON <database>.*; run again after a");
        println!("-- migration that adds a table. A user granted INSERT on the whole audit_log before: REVOKE INSERT first.");
        for statement in statements(&mut conn, &account).await? {
            println!("{statement}");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_plain_names_and_hosts() {
        assert_eq!(Account::parse("auth_app@%").unwrap().to_string(), "'auth_app'@'%'");
        assert_eq!(Account::parse("customer_app@10.0.0.%").unwrap().to_string(), "'customer_app'@'10.0.0.%'");
        for bad in ["auth_app", "@%", "auth_app@", "a'b@%", "a@%'; DROP TABLE x; --", "a b@%"] {
            assert!(Account::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quoted("audit_log"), "`audit_log`");
        assert_eq!(quoted("a`b"), "`a``b`");
    }
}
