//! Wasmtime's compilation cache, configured as `spin up` configures it: on by default (wasmtime's
//! defaults: `$XDG_CACHE_HOME/wasmtime`, i.e. `~/.cache/wasmtime`, on Linux, or what
//! `~/.config/wasmtime/config.toml` says), `--cache <FILE>` names another cache configuration,
//! `--disable-cache` turns it off. A component compiled once (about 0.8 s of both cores for each of
//! ours) then loads in milliseconds on every later start; entries are keyed by the `.wasm` bytes
//! and the engine's settings, so a rebuilt component is compiled again, never served stale.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use wasmtime::{Cache, Config};

/// `spin up`'s names for the two options, flag and environment variable alike.
pub const CACHE_FILE_ENV: &str = "WASMTIME_CACHE_FILE";
pub const DISABLE_CACHE_ENV: &str = "DISABLE_WASMTIME_CACHE";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CompileCache {
    /// Wasmtime's default configuration (Spin's default too).
    #[default]
    Default,
    /// A wasmtime cache configuration file (TOML, `[cache]` section).
    File(PathBuf),
    /// Compile every component on every start.
    Disabled,
}

impl CompileCache {
    /// From `--cache` / `--disable-cache`, which the command line makes exclusive.
    pub fn from_options(file: Option<PathBuf>, disabled: bool) -> Self {
        match (file, disabled) {
            (_, true) => Self::Disabled,
            (Some(file), false) => Self::File(file),
            (None, false) => Self::Default,
        }
    }

    /// Sets the cache on `config`. The cache is returned too: its folder goes in the start-up
    /// log, and its hit count says which components were loaded from it.
    pub fn apply(&self, config: &mut Config) -> Result<Option<Cache>> {
        let cache = match self {
            Self::Disabled => None,
            Self::Default => Some(Cache::from_file(None).map_err(anyhow::Error::from).context("Failed to set up wasmtime's compilation cache (--disable-cache turns it off)")?),
            Self::File(file) => Some(
                Cache::from_file(Some(file))
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("Failed to load the wasmtime cache configuration {}", file.display()))?,
            ),
        };
        config.cache(cache.clone());
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_wins_and_a_file_is_kept() {
        assert_eq!(CompileCache::from_options(None, false), CompileCache::Default);
        assert_eq!(CompileCache::from_options(Some("c.toml".into()), false), CompileCache::File("c.toml".into()));
        assert_eq!(CompileCache::from_options(None, true), CompileCache::Disabled);
    }

    #[test]
    fn a_configured_folder_is_used_and_a_bad_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("spin-local-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cache.toml");
        std::fs::write(&file, format!("[cache]\ndirectory = {:?}\n", dir.join("entries").display().to_string())).unwrap();
        let used = CompileCache::File(file.clone()).apply(&mut Config::new()).unwrap();
        assert_eq!(used.map(|cache| cache.directory().clone()), Some(dir.join("entries")));
        assert!(CompileCache::Disabled.apply(&mut Config::new()).unwrap().is_none());

        std::fs::write(&file, "[cache]\nno-such-setting = 1\n").unwrap();
        let err = CompileCache::File(file.clone()).apply(&mut Config::new()).unwrap_err();
        assert!(format!("{err:#}").contains("cache.toml"), "{err:#}");
        let missing = CompileCache::File(dir.join("absent.toml")).apply(&mut Config::new()).unwrap_err();
        assert!(format!("{missing:#}").contains("absent.toml"), "{missing:#}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
