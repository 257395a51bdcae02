//! A throwaway MariaDB server of a test's own (Debian's `mariadbd`), for tests that stop and
//! restart the database without disturbing the shared stack.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::process::{Child, Command};

pub struct PrivateMariaDb {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateMariaDb {
    /// Initialises a data folder and starts the server (grant checks off: it is loopback-only
    /// and lives for one test).
    pub async fn start() -> Result<Self> {
        let dir = tempfile::tempdir().context("Failed to create a data folder")?;
        let status = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .args(user_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("Failed to run mariadb-install-db (is mariadb-server installed? `make test` installs it)")?;
        if !status.success() {
            bail!("mariadb-install-db failed: {status}");
        }
        let port = free_port()?;
        let mut server = Self { port, dir, child: None };
        server.resume().await?;
        Ok(server)
    }

    pub fn admin_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// Kills the server (like a crash or an outage).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same port and data and waits until it answers.
    pub async fn resume(&mut self) -> Result<()> {
        let data = self.dir.path().join("data");
        let child = Command::new(mariadbd()?)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", self.dir.path().join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", self.dir.path().join("mysqld.pid").display()))
            .arg(format!("--log-error={}", self.dir.path().join("error.log").display()))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-name-resolve"])
            .args(["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"])
            .args(user_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("Failed to start mariadbd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(conn) = mysql_async::Conn::from_url(self.admin_url().as_str()).await {
                let _ = conn.disconnect().await;
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
                bail!("the private MariaDB did not start:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn mariadbd() -> Result<PathBuf> {
    ["/usr/sbin/mariadbd", "/usr/bin/mariadbd", "/usr/sbin/mysqld"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("mariadbd not found (`make test` installs mariadb-server)")
}

fn user_args() -> Vec<String> {
    // mariadbd refuses to run as root unless told which user to be.
    let is_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::read_to_string("/proc/self/status")
            .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
            .unwrap_or(false);
    if is_root { vec!["--user=root".into()] } else { vec![] }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("Failed to find a free port")?;
    Ok(listener.local_addr()?.port())
}
