//! `spin-local up`: the subset of `spin up` this project needs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use spin_local_host::compile_cache::{CACHE_FILE_ENV, CompileCache, DISABLE_CACHE_ENV};
use spin_local_host::runtime::{App, AppOptions};
use spin_local_host::variables::VariableSources;

#[derive(Parser)]
#[command(name = "spin-local", about = "Runs a Spin app (spin.toml) locally on wasmtime, like `spin up`.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the app's HTTP triggers.
    Up {
        /// The manifest (or its folder).
        #[arg(short = 'f', long = "from", default_value = "spin.toml")]
        from: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
        /// Set an application variable (outranks the environment and .env), as `name=value`.
        #[arg(long = "variable", value_name = "NAME=VALUE")]
        variables: Vec<String>,
        /// The dotenv file read for SPIN_VARIABLE_* values (Spin reads `.env` in the working folder).
        #[arg(long, default_value = ".env")]
        env_file: PathBuf,
        /// Folder for local state such as the key-value database (default: `.spin` beside the manifest).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Log as JSON lines instead of text: one object per line on stderr. Component output
        /// passes through unchanged (our components already write JSON lines).
        /// SPIN_LOCAL_LOG_JSON takes 1/0, true/false, yes/no, on/off.
        #[arg(long, env = "SPIN_LOCAL_LOG_JSON", value_parser = clap::builder::BoolishValueParser::new())]
        log_json: bool,
        /// Wasmtime cache configuration file (as `spin up`; default: wasmtime's own, which caches
        /// compiled components under ~/.cache/wasmtime on Linux).
        #[arg(long = "cache", value_name = "WASMTIME_CACHE_FILE", env = CACHE_FILE_ENV, conflicts_with = "disable_cache")]
        cache: Option<PathBuf>,
        /// Disable Wasmtime cache (as `spin up`): compile every component on every start.
        #[arg(long, env = DISABLE_CACHE_ENV, value_parser = clap::builder::BoolishValueParser::new())]
        disable_cache: bool,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let Command::Up { from, listen, variables, env_file, state_dir, log_json, cache, disable_cache } = Cli::parse().command;
    init_logging(log_json);

    let manifest = if from.is_dir() { from.join("spin.toml") } else { from };
    let mut cli_variables = BTreeMap::new();
    for pair in variables {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--variable expects name=value, got `{pair}`");
        };
        cli_variables.insert(name.to_string(), value.to_string());
    }
    let sources = VariableSources::from_process(cli_variables, &env_file)?;
    let app = App::load(AppOptions { manifest, sources, state_dir, compile_cache: CompileCache::from_options(cache, disable_cache) })?;

    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("Failed to listen on {listen}"))?;
    let address = listener.local_addr().context("Failed to read the listening address")?;
    // Tests and scripts wait for this line to learn the port (listen on :0 for a free one).
    println!("Serving http://{address}");
    tracing::info!(%address, "serving");
    spin_local_host::server::serve(app, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let ansi = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        // {"timestamp":…,"level":"INFO","message":"request",<fields>,"target":"spin_local_host::server"}
        builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init();
    } else {
        builder.compact().init();
    }
}
