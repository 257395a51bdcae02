//! Where database URLs come from, and how they are shown.
//!
//! Order: the command-line flag, then the process environment (`SPIN_VARIABLE_<NAME>`), then the
//! repo-root `.env` file (the same file `spin up` reads). The `.env` file is read, never loaded
//! into the process environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Environment variable (and `.env` key) holding the auth service's database URL.
pub const AUTH_DB_URL_VAR: &str = "SPIN_VARIABLE_AUTH_DB_URL";
/// Environment variable (and `.env` key) holding the customer service's database URL.
pub const CUSTOMER_DB_URL_VAR: &str = "SPIN_VARIABLE_CUSTOMER_DB_URL";

/// The values of a `.env` file, or none when there is no such file.
#[derive(Debug, Default, Clone)]
pub struct EnvFile {
    pub path: Option<PathBuf>,
    pub values: HashMap<String, String>,
}

impl EnvFile {
    /// Reads `explicit` if given (it must exist), else the first `.env` found in `start` or one of
    /// its parent folders; an absent file gives an empty set.
    pub fn discover(explicit: Option<&Path>, start: &Path) -> Result<Self> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => start
                .ancestors()
                .map(|dir| dir.join(".env"))
                .find(|candidate| candidate.is_file()),
        };
        match path {
            Some(p) => Self::read(&p),
            None => Ok(Self::default()),
        }
    }

    /// Parses one `.env` file (dotenv syntax: `KEY=value`, `#` comments, optional quotes).
    pub fn read(path: &Path) -> Result<Self> {
        let iter = dotenvy::from_path_iter(path)
            .with_context(|| format!("Failed to open {}", path.display()))?;
        let mut values = HashMap::new();
        for item in iter {
            let (key, value) =
                item.with_context(|| format!("Failed to parse {}", path.display()))?;
            values.insert(key, value);
        }
        Ok(Self {
            path: Some(path.to_path_buf()),
            values,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Resolves one setting: `flag`, else the environment variable `var`, else `var` in `env_file`.
/// Empty values count as unset.
pub fn resolve(flag: Option<&str>, var: &str, env_file: &EnvFile) -> Option<String> {
    let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    flag.and_then(non_empty)
        .or_else(|| std::env::var(var).ok().as_deref().and_then(non_empty))
        .or_else(|| env_file.get(var).and_then(non_empty))
}

/// Like [`resolve`], with an error telling how to provide the value.
pub fn require(
    flag: Option<&str>,
    flag_name: &str,
    var: &str,
    env_file: &EnvFile,
) -> Result<String> {
    match resolve(flag, var, env_file) {
        Some(v) => Ok(v),
        None => {
            let looked = match &env_file.path {
                Some(p) => format!(" or in {}", p.display()),
                None => " (no .env file found)".to_owned(),
            };
            bail!(
                "Failed to find {var}: pass {flag_name}, set {var} in the environment{looked}; \
                 `scripts/stack.sh env` writes a development .env"
            )
        }
    }
}

/// The URL with its password (if any) replaced by `***`, for messages and logs.
/// Unparseable input is hidden entirely rather than risk showing a secret.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() && u.set_password(Some("***")).is_err() {
                return "<unprintable URL>".to_owned();
            }
            u.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// The password of a URL (percent-decoded as well as raw), for scrubbing error text.
pub fn secrets_of(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(u) = url::Url::parse(url)
        && let Some(pw) = u.password()
        && !pw.is_empty()
    {
        out.push(pw.to_owned());
        let decoded = percent_encoding::percent_decode_str(pw).decode_utf8_lossy();
        if decoded != pw {
            out.push(decoded.into_owned());
        }
    }
    out
}

/// Replaces every occurrence of each secret in `text` with `***`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("mysql://auth:s3cret@127.0.0.1:3316/auth"),
            "mysql://auth:***@127.0.0.1:3316/auth"
        );
        assert_eq!(redact("mysql://auth@db/auth"), "mysql://auth@db/auth");
        assert_eq!(redact("not a url s3cret"), "<unparseable URL>");
    }

    #[test]
    fn scrub_removes_raw_and_decoded_passwords() {
        let secrets = secrets_of("mysql://u:p%40ss%2Fword@h/db");
        assert!(secrets.contains(&"p%40ss%2Fword".to_owned()));
        assert!(secrets.contains(&"p@ss/word".to_owned()));
        assert_eq!(scrub("denied for p@ss/word", &secrets), "denied for ***");
    }

    #[test]
    fn flag_beats_env_file_and_env_file_fills_gaps() {
        let dir = std::env::temp_dir().join(format!("admin-config-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join(".env"),
            "# dev\nADMIN_TEST_ONLY_VAR=mysql://a:b@h/d\n",
        )
        .unwrap();
        let file = EnvFile::discover(None, &dir.join("sub")).unwrap();
        assert_eq!(file.get("ADMIN_TEST_ONLY_VAR"), Some("mysql://a:b@h/d"));
        assert_eq!(
            resolve(None, "ADMIN_TEST_ONLY_VAR", &file).as_deref(),
            Some("mysql://a:b@h/d")
        );
        assert_eq!(
            resolve(Some("mysql://x@y/z"), "ADMIN_TEST_ONLY_VAR", &file).as_deref(),
            Some("mysql://x@y/z")
        );
        assert!(require(None, "--x", "ADMIN_TEST_ONLY_MISSING", &file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
