//! Test helpers in the spirit of zero-to-production's `spawn_app()`: each test gets its own
//! databases on the project's MariaDB and its own local host process on a free port, running
//! the real `.wasm` files. Build first (`make build`); `make test` does everything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use mysql_async::prelude::Queryable as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

pub mod mariadb;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The admin binary: `$ADMIN_BIN`, else target/native/admin (built by `make test`).
pub fn admin_bin() -> PathBuf {
    let path = std::env::var_os("ADMIN_BIN").map_or_else(|| repo_root().join("target/native/admin"), PathBuf::from);
    assert!(path.exists(), "{} is missing: `cargo build --profile native -p admin` first", path.display());
    path
}

/// The admin binary with `args`, run in `cwd`, inheriting no `SPIN_VARIABLE_*`: only what the
/// test sets is read.
pub fn admin_command(args: &[&str], cwd: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(admin_bin());
    cmd.args(args).current_dir(cwd).kill_on_drop(true);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SPIN_VARIABLE_")) {
        cmd.env_remove(k);
    }
    cmd
}

/// Runs `cmd` (an [`admin_command`] for `args`) and echoes what it printed and its exit status
/// to the test's output.
pub async fn run_admin(mut cmd: tokio::process::Command, args: &[&str]) -> std::process::Output {
    let out = cmd.output().await.expect("admin runs");
    eprintln!(
        "$ admin {}\n{}{}exit {:?}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

/// A value from the environment, else from `.local/stack.env` (written by `scripts/stack.sh`).
pub fn stack_setting(name: &str) -> Result<String> {
    if let Ok(value) = std::env::var(name) {
        return Ok(value);
    }
    let path = repo_root().join(".local/stack.env");
    let values: BTreeMap<String, String> = dotenvy::from_path_iter(&path)
        .with_context(|| format!("Failed to read {} (run `make test`, which starts the stack)", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("Failed to parse {}", path.display()))?;
    values
        .get(name)
        .cloned()
        .with_context(|| format!("{name} is missing from {}", path.display()))
}

/// A database of its own on the stack's MariaDB, dropped when the test ends.
pub struct TestDatabase {
    pub name: String,
    /// `mysql://user:password@127.0.0.1:port/name`
    pub url: String,
    /// `127.0.0.1:port`, for `allowed_outbound_hosts`.
    pub address: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create(prefix: &str) -> Result<Self> {
        let admin_url = stack_setting("DB_ADMIN_URL")?;
        Self::create_on(&admin_url, prefix).await
    }

    pub async fn create_on(admin_url: &str, prefix: &str) -> Result<Self> {
        let name = format!("t_{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = mysql_async::Conn::from_url(admin_url).await.context("Failed to connect as the stack admin")?;
        conn.query_drop(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
            .await
            .context("Failed to create a test database")?;
        conn.disconnect().await.ok();
        let parsed = url_parts(admin_url)?;
        Ok(Self {
            url: format!("{}/{name}", admin_url.trim_end_matches('/')),
            address: parsed,
            name,
            admin_url: admin_url.to_string(),
        })
    }

    pub async fn connect(&self) -> Result<mysql_async::Conn> {
        mysql_async::Conn::from_url(self.url.as_str()).await.context("Failed to connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort, off the test's runtime: a leftover database is harmless but untidy.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(mut conn) = mysql_async::Conn::from_url(admin_url.as_str()).await {
                        let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`")).await;
                        let _ = conn.disconnect().await;
                    }
                });
            }
        })
        .join();
    }
}

fn url_parts(url: &str) -> Result<String> {
    let opts = mysql_async::Opts::from_url(url).context("Invalid MySQL URL")?;
    Ok(format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port()))
}

/// A running `spin-local up`, killed on drop.
pub struct HostProcess {
    pub base_url: String,
    child: Child,
    pub log_path: PathBuf,
    _state_dir: tempfile::TempDir,
}

impl HostProcess {
    /// Starts the host on a free port with exactly `variables` (no `.env`, no inherited
    /// `SPIN_VARIABLE_*`), and waits until it serves.
    pub async fn start(manifest: &Path, variables: &BTreeMap<String, String>) -> Result<Self> {
        Self::start_with_env(manifest, variables, &[]).await
    }

    /// Like `start`, with more environment for the host process (e.g. `SPIN_LOCAL_LOG_JSON=1`).
    pub async fn start_with_env(manifest: &Path, variables: &BTreeMap<String, String>, env: &[(&str, &str)]) -> Result<Self> {
        let binary = host_binary()?;
        let state_dir = tempfile::tempdir().context("Failed to create a state folder")?;
        let log_path = state_dir.path().join("host.log");
        let log = std::fs::File::create(&log_path).context("Failed to create the host log")?;
        let mut command = Command::new(&binary);
        command
            .arg("up")
            .arg("--from")
            .arg(manifest)
            .args(["--listen", "127.0.0.1:0", "--env-file", "/nonexistent/.env", "--state-dir"])
            .arg(state_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SPIN_VARIABLE_")) {
            command.env_remove(key);
        }
        for (name, value) in variables {
            command.env(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()), value);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().with_context(|| format!("Failed to start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let base_url = match first {
            Ok(Ok(Some(line))) if line.starts_with("Serving ") => line["Serving ".len()..].trim().to_string(),
            _ => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("the host did not start; its log:\n{log}");
            }
        };
        Ok(Self { base_url, child, log_path, _state_dir: state_dir })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn host_binary() -> Result<PathBuf> {
    let path = std::env::var_os("SPIN_LOCAL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/native/spin-local"));
    if !path.exists() {
        bail!("{} is missing: run `make build` (or `make test`) first", path.display());
    }
    Ok(path)
}

/// The built component, or a clear message to build it.
pub fn component_wasm(name: &str) -> Result<PathBuf> {
    let path = repo_root().join(format!("target/wasm32-wasip2/release/{name}.wasm"));
    if !path.exists() {
        bail!("{} is missing: run `make build` first", path.display());
    }
    Ok(path)
}

/// Both services on the local host, each with a fresh, migrated database.
pub struct TestApp {
    pub host: HostProcess,
    pub auth_db: TestDatabase,
    pub customer_db: TestDatabase,
    pub client: reqwest::Client,
    pub variables: BTreeMap<String, String>,
}

/// zero-to-production's `spawn_app()`: fresh databases, migrations applied, fresh keys, host up.
pub async fn spawn_app() -> Result<TestApp> {
    spawn_app_with(|_| {}).await
}

/// Like `spawn_app`, with a chance to change variables first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut BTreeMap<String, String>)) -> Result<TestApp> {
    spawn_app_with_env(adjust, &[]).await
}

/// Like `spawn_app_with`, with more environment for the host process.
pub async fn spawn_app_with_env(adjust: impl FnOnce(&mut BTreeMap<String, String>), env: &[(&str, &str)]) -> Result<TestApp> {
    let auth_db = TestDatabase::create("auth").await?;
    let customer_db = TestDatabase::create("customer").await?;
    admin::migrate::up(&auth_db.url, admin::migrate::Service::Auth.migrator(), Default::default()).await?;
    admin::migrate::up(&customer_db.url, admin::migrate::Service::Customer.migrator(), Default::default()).await?;

    let mut variables = app_variables(&auth_db, &customer_db)?;
    let stripe_port = stack_setting("STRIPE_PORT").unwrap_or_else(|_| "8420".into());
    variables.insert("stripe_api_base".into(), format!("http://127.0.0.1:{stripe_port}"));
    adjust(&mut variables);

    let host = HostProcess::start_with_env(&repo_root().join("spin.toml"), &variables, env).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("Failed to build the HTTP client")?;
    Ok(TestApp { host, auth_db, customer_db, client, variables })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        self.host.url(path)
    }
}

/// Freshly generated signing keys and secrets, as the app's (lower-case) variable names.
pub fn fresh_key_variables() -> Result<BTreeMap<String, String>> {
    Ok(admin::keys::generate()?
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect())
}

/// The variables both components need to start: fresh keys and these two databases.
pub fn app_variables(auth_db: &TestDatabase, customer_db: &TestDatabase) -> Result<BTreeMap<String, String>> {
    let mut variables = fresh_key_variables()?;
    variables.insert("auth_db_url".into(), auth_db.url.clone());
    variables.insert("auth_db_address".into(), auth_db.address.clone());
    variables.insert("customer_db_url".into(), customer_db.url.clone());
    variables.insert("customer_db_address".into(), customer_db.address.clone());
    Ok(variables)
}

/// Registers an account with auth on `host` and returns its answer (tokens and user) as JSON.
pub async fn register_account(client: &reqwest::Client, host: &HostProcess, name: &str, email: &str, password: &str) -> serde_json::Value {
    client
        .post(host.url("/api/v3/auth/register"))
        .json(&serde_json::json!({"name": name, "email": email, "password": password}))
        .send()
        .await
        .expect("register answers")
        .json()
        .await
        .expect("register answers JSON")
}

/// Rows of a query, each column as text (NULL as "NULL"), for comparing with literals.
pub async fn db_rows(db: &TestDatabase, sql: &str) -> Vec<Vec<String>> {
    let mut conn = db.connect().await.expect("db");
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.disconnect().await.ok();
    rows.into_iter()
        .map(|row| {
            (0..row.len())
                .map(|i| match row.as_ref(i) {
                    Some(mysql_async::Value::NULL) | None => "NULL".to_string(),
                    Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(v) => v.as_sql(true).trim_matches('\'').to_string(),
                })
                .collect()
        })
        .collect()
}

/// `openapi/<file>` parsed, and the operations it documents as (METHOD, path template) pairs.
pub fn openapi_operations(file: &str) -> (serde_yaml::Value, BTreeSet<(String, String)>) {
    let path = repo_root().join("openapi").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        for (method, _) in item.as_mapping().expect("path item") {
            let method = method.as_str().expect("method");
            if ["get", "post", "put", "patch", "delete"].contains(&method) {
                operations.insert((method.to_uppercase(), path.as_str().expect("path").to_string()));
            }
        }
    }
    (doc, operations)
}

/// The `Allow` value a documented path must answer other methods with: its documented methods
/// (`documented` as [`openapi_operations`] gives them) in the usual order, HEAD beside GET.
pub fn expected_allow(documented: &BTreeSet<(String, String)>, path: &str) -> String {
    let served = |method: &str| documented.contains(&(method.to_string(), path.to_string()));
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .filter(|method| served(method) || (*method == "HEAD" && served("GET")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The headers every answer of auth and customer carries (`telemetry::spin::serve`): nothing in
/// them is a page for a browser to sniff, frame or leak a referrer from.
pub fn assert_security_headers(headers: &reqwest::header::HeaderMap, what: &str) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(header("content-security-policy"), Some("default-src 'none'; frame-ancestors 'none'"), "{what}");
    assert_eq!(header("referrer-policy"), Some("no-referrer"), "{what}");
}

/// Awaits all the futures concurrently, in one task, and returns their outputs in order
/// (`futures::future::join_all` without the dependency).
pub async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    results.into_iter().map(|r| r.expect("completed")).collect()
}
