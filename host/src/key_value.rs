//! `fermyon:spin/key-value@2.0.0` with Spin's default store: a SQLite file (Spin keeps it at
//! `.spin/sqlite_key_value.db`; so do we, under the state folder). Only the `default` label
//! exists; a component may open only the labels its manifest lists in `key_value_stores`
//! (`access-denied` otherwise, `no-such-store` for labels no runtime config defines).

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rusqlite::OptionalExtension as _;
use wasmtime::component::Resource;

use crate::bindings::key_value::{Error, Host, HostStore};
use crate::runtime::InstanceState;

/// The backing database, shared by every instance (cross-request state, as in Spin).
#[derive(Clone)]
pub struct KeyValueBackend {
    db: Arc<Mutex<rusqlite::Connection>>,
}

impl KeyValueBackend {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("Failed to create {}", parent.display()))?;
        }
        let db = rusqlite::Connection::open(path)
            .with_context(|| format!("Failed to open the key-value database {}", path.display()))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS spin_key_value (
                 store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (store, key));",
        )
        .context("Failed to prepare the key-value database")?;
        Ok(Self { db: Arc::new(Mutex::new(db)) })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let db = db.lock().map_err(|_| Error::Other("key-value store lock poisoned".into()))?;
            work(&db).map_err(|e| Error::Other(e.to_string()))
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))?
    }
}

/// An open store: the `store` resource of the guest.
pub struct KeyValueStore {
    label: String,
}

const DEFAULT_STORE: &str = "default";

impl Host for InstanceState {}

impl HostStore for InstanceState {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<KeyValueStore>, Error>> {
        if !self.component.key_value_stores.contains(&label) {
            tracing::warn!(component = %self.component.id, %label, "key-value store denied: not in key_value_stores");
            return Ok(Err(Error::AccessDenied));
        }
        if label != DEFAULT_STORE {
            return Ok(Err(Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(KeyValueStore { label })?))
    }

    async fn get(&mut self, store: Resource<KeyValueStore>, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let label = self.table.get(&store)?.label.clone();
        Ok(self
            .key_value
            .run(move |db| {
                db.query_row(
                    "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    (label, key),
                    |row| row.get::<_, Vec<u8>>(0),
                )
                .optional()
            })
            .await)
    }

    async fn set(&mut self, store: Resource<KeyValueStore>, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), Error>> {
        let label = self.table.get(&store)?.label.clone();
        Ok(self
            .key_value
            .run(move |db| {
                db.execute(
                    "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                    (label, key, value),
                )
                .map(|_| ())
            })
            .await)
    }

    async fn delete(&mut self, store: Resource<KeyValueStore>, key: String) -> wasmtime::Result<Result<(), Error>> {
        let label = self.table.get(&store)?.label.clone();
        Ok(self
            .key_value
            .run(move |db| {
                db.execute("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2", (label, key))
                    .map(|_| ())
            })
            .await)
    }

    async fn exists(&mut self, store: Resource<KeyValueStore>, key: String) -> wasmtime::Result<Result<bool, Error>> {
        let label = self.table.get(&store)?.label.clone();
        Ok(self
            .key_value
            .run(move |db| {
                db.query_row(
                    "SELECT EXISTS (SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2)",
                    (label, key),
                    |row| row.get::<_, bool>(0),
                )
            })
            .await)
    }

    async fn get_keys(&mut self, store: Resource<KeyValueStore>) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let label = self.table.get(&store)?.label.clone();
        Ok(self
            .key_value
            .run(move |db| {
                let mut statement = db.prepare("SELECT key FROM spin_key_value WHERE store = ?1")?;
                let keys = statement.query_map([label], |row| row.get::<_, String>(0))?;
                keys.collect()
            })
            .await)
    }

    async fn drop(&mut self, store: Resource<KeyValueStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}
