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
    /// Development secrets
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply pending migrations (all, or up to --to)
    Up(MigrateArgs),
    /// Revert the latest applied migration (or every one above --to)
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
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// SPIN_VARIABLE_<NAME>=<value> lines, for .env
    Env,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut secrets = Vec::new();
    match run(cli, &mut secrets) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Last line of defence: no database password reaches the terminal.
            eprintln!("error: {}", config::scrub(&format!("{e:#}"), &secrets));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, secrets: &mut Vec<String>) -> Result<()> {
    match cli.command {
        Command::Keys {
            action: KeysAction::Generate {
                format: Format::Env,
            },
        } => {
            print!("{}", keys::to_env_lines(&keys::generate()?));
            Ok(())
        }
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
                let out = migrate::up(url, migrator, opts)
                    .await
                    .with_context(|| format!("Failed to migrate {s} up"))?;
                for step in &out.applied {
                    println!("{s}: applied {} {}", step.version, step.name);
                }
                println!("{s}: at version {}", version_text(out.current));
            }
            _ => {
                let out = migrate::down(url, migrator, opts)
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
