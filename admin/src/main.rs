//! `admin`: database migrations and development secrets. See `admin --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use admin::config::{self, EnvFile};
use admin::keys;
use admin::migrate::{self, Options, Service};
use anyhow::{Context, Result, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "admin",
    version,
    about = "Database migrations and development secrets for the auth and customer services"
)]
struct Cli {
    /// .env file to read SPIN_VARIABLE_* settings from [default: the first .env in this folder or a parent]
    #[arg(long, global = true, value_name = "PATH")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply, revert or list database migrations (migrations/<service>/*.up.sql / *.down.sql)
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Keys and secrets: generate a consistent set, derive a public key, rotate one without downtime
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Before customer migration 6: copy legacy customers that auth lacks into auth's client_auth
    /// (no password, must reset), or report the conflicts (exit status 2). docs/upgrade.md
    Backfill(admin::backfill::Args),
    /// Cross-database integrity report (customers vs auth, emails, blind index, Stripe ids);
    /// exit status 2 when anything is wrong
    Verify(admin::verify::Args),
    /// Re-seal every stored email not sealed with the active encryption key (after a rotation)
    Reencrypt(admin::reencrypt::Args),
    /// Delete expired refresh tokens, revoked families, idle throttle rows and old Stripe events
    /// (audit rows only with --audit-older-than-days); run daily. docs/operations.md
    Purge(admin::purge::Args),
    /// Support's actions on one account (by id or email): show it, sign it out everywhere,
    /// require a new password, remove its authenticator app, replace its email. Audited.
    /// docs/operations.md §14
    Account(admin::account::Args),
    /// Make both audit logs tamper-evident: seal their rows into an HMAC chain under a key the
    /// database does not hold, and verify it. docs/operations.md §15
    Audit(admin::audit::Args),
    /// Print the GRANT statements for a service's app user: every table read and written but
    /// the audit log, which it may only append to. docs/operations.md §2.1
    Grants(admin::grants::Args),
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply pending migrations (all, or up to --to)
    Up(MigrateArgs),
    /// Revert the latest applied migration (or every one above --to) of --service auth or
    /// --service customer: one service at a time
    Down(MigrateArgs),
    /// Show each migration: version, name, applied/pending, checksum ok/mismatch
    Status(MigrateArgs),
}

#[derive(Args)]
struct MigrateArgs {
    /// Which service's database
    #[arg(long, value_enum, default_value_t = ServiceArg::All)]
    service: ServiceArg,
    /// up: apply up to and including version N; down: revert every version above N (0 = all)
    #[arg(long, value_name = "N")]
    to: Option<i64>,
    /// auth database URL [default: $SPIN_VARIABLE_AUTH_DB_URL, then .env]
    #[arg(long, value_name = "URL")]
    auth_db_url: Option<String>,
    /// customer database URL [default: $SPIN_VARIABLE_CUSTOMER_DB_URL, then .env]
    #[arg(long, value_name = "URL")]
    customer_db_url: Option<String>,
    /// Seconds to wait for another run's migration lock
    #[arg(long, value_name = "SECS", default_value_t = migrate::DEFAULT_LOCK_TIMEOUT.as_secs())]
    lock_timeout: u64,
    /// Customer migration 6 (drops the legacy name/email columns): its guard and rollback
    #[command(flatten)]
    guard: admin::legacy::GuardArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServiceArg {
    Auth,
    Customer,
    All,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Print a fresh, consistent set of development secrets as SPIN_VARIABLE_<NAME>=<value> lines
    Generate {
        #[arg(long, value_enum, default_value_t = Format::Env)]
        format: Format,
    },
    /// Print the trusted_service_keys entry (<service>:<kid>:<base64 public key>) for a
    /// service_token_key value (<kid>:<base64 seed>) read from standard input
    Public {
        #[arg(long, default_value = "customer")]
        service: String,
    },
    /// Print the next value of a key variable for one stage of a rotation without downtime
    /// (add: the new key verifies/opens only; promote: it signs/seals; retire: the old key goes).
    /// The current value is read from standard input (first line) unless --current-env names an
    /// environment variable holding it. Notes on what to do next go to standard error.
    Rotate(RotateArgs),
}

#[derive(Args)]
struct RotateArgs {
    /// Which variable
    #[arg(value_enum)]
    key: RotateKeyArg,
    /// Rotation stage
    #[arg(long, value_enum)]
    stage: StageArg,
    /// The current value on the command line. Other users can read it with `ps`: prefer
    /// standard input or --current-env
    #[arg(long, value_name = "VALUE", conflicts_with = "current_env")]
    current: Option<String>,
    /// Read the current value from this environment variable (e.g. SPIN_VARIABLE_TOKEN_SIGNING_KEYS)
    #[arg(long, value_name = "NAME")]
    current_env: Option<String>,
    /// service-token-key: auth's current trusted_service_keys (public keys; other services'
    /// entries are kept) [default: derived from the service key alone]
    #[arg(long, value_name = "VALUE")]
    trusted_current: Option<String>,
    /// stripe-webhook-secret --stage add: environment variable holding the new whsec_ secret
    /// [default: the next line of standard input]
    #[arg(long, value_name = "NAME")]
    new_env: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Env)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RotateKeyArg {
    /// auth's token_signing_keys (access-token signing keys)
    TokenSigningKeys,
    /// auth's encryption_key (email encryption; the last key roots the blind index)
    EncryptionKey,
    /// customer's service_token_key, with auth's trusted_service_keys
    ServiceTokenKey,
    /// customer's stripe_webhook_secret
    StripeWebhookSecret,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StageArg {
    Add,
    Promote,
    Retire,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// SPIN_VARIABLE_<NAME>=<value> lines, for .env
    Env,
    /// <name>=<value> lines with Spin's variable names: `kubectl create secret generic --from-env-file`
    Vars,
    /// name = "value" lines: a TOML file for `spin aka deploy --variable @file.toml`
    Toml,
}

fn render(format: Format, vars: &[(&str, String)]) -> String {
    match format {
        Format::Env => keys::to_env_lines(vars),
        Format::Vars => keys::to_var_lines(vars),
        Format::Toml => keys::to_toml_lines(vars),
    }
}

/// Reads one line from standard input (trailing newline removed); `None` at end of input.
fn read_stdin_line(stdin: &mut impl std::io::BufRead, what: &str) -> Result<Option<String>> {
    let mut line = String::new();
    let n = stdin
        .read_line(&mut line)
        .with_context(|| format!("Failed to read {what} from standard input"))?;
    Ok((n > 0).then(|| line.trim_end_matches(['\n', '\r']).to_owned()))
}

fn rotate_cmd(args: RotateArgs) -> Result<()> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let needs_new = args.key == RotateKeyArg::StripeWebhookSecret
        && args.stage == StageArg::Add
        && args.new_env.is_none();
    if std::io::stdin().is_terminal()
        && (args.current.is_none() && args.current_env.is_none() || needs_new)
    {
        eprintln!(
            "reading from standard input (one value per line; it is not echoed to the terminal by this tool, but your terminal may show it)"
        );
    }
    let current = match (&args.current, &args.current_env) {
        (Some(v), _) => {
            eprintln!(
                "warning: --current puts a secret on the command line (visible in `ps`); prefer standard input or --current-env"
            );
            v.clone()
        }
        (None, Some(name)) => std::env::var(name).with_context(|| {
            format!("Failed to read the current value: environment variable {name} is not set")
        })?,
        (None, None) => read_stdin_line(&mut stdin, "the current value")?
            .context("Failed to read the current value: standard input is empty")?,
    };
    let new_secret = match (&args.new_env, needs_new) {
        (Some(name), _) => Some(std::env::var(name).with_context(|| {
            format!("Failed to read the new secret: environment variable {name} is not set")
        })?),
        (None, true) => read_stdin_line(&mut stdin, "the new secret")?,
        (None, false) => None,
    };
    let key = match args.key {
        RotateKeyArg::TokenSigningKeys => keys::RotateKey::TokenSigningKeys,
        RotateKeyArg::EncryptionKey => keys::RotateKey::EncryptionKey,
        RotateKeyArg::ServiceTokenKey => keys::RotateKey::ServiceTokenKey,
        RotateKeyArg::StripeWebhookSecret => keys::RotateKey::StripeWebhookSecret,
    };
    let stage = match args.stage {
        StageArg::Add => keys::Stage::Add,
        StageArg::Promote => keys::Stage::Promote,
        StageArg::Retire => keys::Stage::Retire,
    };
    let rotation = keys::rotate(
        key,
        stage,
        &keys::RotateInput {
            current: &current,
            trusted_current: args.trusted_current.as_deref(),
            new_secret: new_secret.as_deref(),
        },
    )?;
    print!("{}", render(args.format, &rotation.vars));
    for note in &rotation.notes {
        eprintln!("note: {note}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut secrets = Vec::new();
    match run(cli, &mut secrets) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Last line of defence: no database password reaches the terminal.
            eprintln!("error: {}", config::scrub(&format!("{e:#}"), &secrets));
            ExitCode::from(admin::legacy::exit_code(&e))
        }
    }
}

fn run(cli: Cli, secrets: &mut Vec<String>) -> Result<()> {
    match cli.command {
        Command::Keys {
            action: KeysAction::Generate { format },
        } => {
            print!("{}", render(format, &keys::generate()?));
            Ok(())
        }
        Command::Keys {
            action: KeysAction::Rotate(args),
        } => rotate_cmd(args),
        Command::Keys {
            action: KeysAction::Public { service },
        } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("Failed to read the key from standard input")?;
            let key = keys::SeedKey::parse(&line)?;
            println!("{}", key.trusted_entry(&service));
            Ok(())
        }
        Command::Backfill(args) => admin::backfill::command(args, cli.env_file.as_deref(), secrets),
        Command::Verify(args) => admin::verify::command(args, cli.env_file.as_deref(), secrets),
        Command::Reencrypt(args) => admin::reencrypt::command(args, cli.env_file.as_deref(), secrets),
        Command::Purge(args) => admin::purge::command(args, cli.env_file.as_deref(), secrets),
        Command::Account(args) => admin::account::command(args, cli.env_file.as_deref(), secrets),
        Command::Audit(args) => admin::audit::command(args, cli.env_file.as_deref(), secrets),
        Command::Grants(args) => admin::grants::command(args, cli.env_file.as_deref(), secrets),
        Command::Migrate { action } => {
            let cwd = std::env::current_dir().context("Failed to read the current directory")?;
            let env_file = EnvFile::discover(cli.env_file.as_deref(), &cwd)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("Failed to start the async runtime")?;
            runtime.block_on(migrate_cmd(action, &env_file, secrets))
        }
    }
}

async fn migrate_cmd(
    action: MigrateAction,
    env_file: &EnvFile,
    secrets: &mut Vec<String>,
) -> Result<()> {
    let (args, verb) = match &action {
        MigrateAction::Up(a) => (a, "up"),
        MigrateAction::Down(a) => (a, "down"),
        MigrateAction::Status(a) => (a, "status"),
    };
    let services: Vec<Service> = match args.service {
        ServiceArg::Auth => vec![Service::Auth],
        ServiceArg::Customer => vec![Service::Customer],
        ServiceArg::All => Service::ALL.to_vec(),
    };
    ensure!(
        args.to.is_none() || services.len() == 1,
        "Failed to migrate: --to needs --service auth or --service customer (versions are per service)"
    );
    // A rollback undoes one service's release; reverting the other's latest migration too (by
    // default) could drop what it holds, e.g. auth's audit seal.
    ensure!(
        verb != "down" || services.len() == 1,
        "Failed to migrate down: name the database with --service auth or --service customer (one service at a time)"
    );
    // Resolve every URL before touching any database.
    let mut targets = Vec::new();
    for s in services {
        let (flag, flag_name) = match s {
            Service::Auth => (args.auth_db_url.as_deref(), "--auth-db-url"),
            Service::Customer => (args.customer_db_url.as_deref(), "--customer-db-url"),
        };
        let url = config::require(flag, flag_name, s.url_var(), env_file)?;
        secrets.extend(config::secrets_of(&url));
        targets.push((s, url));
    }
    let opts = Options {
        to: args.to,
        lock_timeout: Duration::from_secs(args.lock_timeout),
    };
    let cross = admin::legacy::CrossDb::for_migrate(&args.guard, args.auth_db_url.as_deref(), env_file, secrets)?;
    for (s, url) in &targets {
        let migrator = s.migrator();
        match verb {
            "status" => {
                let rows = migrate::status(url, migrator)
                    .await
                    .with_context(|| format!("Failed to read {s} migration status"))?;
                println!("{s} ({}):", config::redact(url));
                if rows.is_empty() {
                    println!("  no migrations");
                }
                for r in rows {
                    println!("  {r}");
                }
            }
            "up" => {
                let out = migrate::up_with(url, migrator, opts, &cross)
                    .await
                    .with_context(|| format!("Failed to migrate {s} up"))?;
                for step in &out.applied {
                    println!("{s}: applied {} {}", step.version, step.name);
                }
                println!("{s}: at version {}", version_text(out.current));
            }
            _ => {
                let out = migrate::down_with(url, migrator, opts, &cross)
                    .await
                    .with_context(|| format!("Failed to migrate {s} down"))?;
                if out.reverted.is_empty() {
                    println!("{s}: nothing to revert");
                }
                for step in &out.reverted {
                    println!("{s}: reverted {} {}", step.version, step.name);
                }
                println!("{s}: at version {}", version_text(out.current));
            }
        }
    }
    Ok(())
}

fn version_text(v: Option<i64>) -> String {
    v.map_or_else(|| "0 (none applied)".to_owned(), |v| v.to_string())
}
