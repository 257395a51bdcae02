//! Key-value as the caches and the circuit breaker use it: best effort (a failing store degrades
//! to "no cache", never to a failed request). `SpinKv` is Spin's default store.

pub trait Kv {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&self, key: &str, value: &[u8]);
    fn delete(&self, key: &str);
}

/// Spin's `default` store, opened on first use.
pub struct SpinKv {
    store: std::cell::OnceCell<Option<spin_sdk::key_value::Store>>,
}

impl Default for SpinKv {
    fn default() -> Self {
        Self::new()
    }
}

impl SpinKv {
    pub fn new() -> Self {
        Self { store: std::cell::OnceCell::new() }
    }

    fn store(&self) -> Option<&spin_sdk::key_value::Store> {
        self.store
            .get_or_init(|| match spin_sdk::key_value::Store::open_default() {
                Ok(store) => Some(store),
                Err(err) => {
                    telemetry::warn("kv: cannot open the default store", &[("cause", err.to_string().into())]);
                    None
                }
            })
            .as_ref()
    }
}

impl Kv for SpinKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.store()?.get(key) {
            Ok(value) => value,
            Err(err) => {
                telemetry::warn("kv: get failed", &[("cause", err.to_string().into())]);
                None
            }
        }
    }

    fn set(&self, key: &str, value: &[u8]) {
        if let Some(store) = self.store()
            && let Err(err) = store.set(key, value) {
                telemetry::warn("kv: set failed", &[("cause", err.to_string().into())]);
            }
    }

    fn delete(&self, key: &str) {
        if let Some(store) = self.store()
            && let Err(err) = store.delete(key) {
                telemetry::warn("kv: delete failed", &[("cause", err.to_string().into())]);
            }
    }
}

/// An in-memory store that also counts its operations (each one is a host call in Spin).
#[cfg(test)]
#[derive(Default)]
pub struct MemoryKv {
    pub entries: std::cell::RefCell<std::collections::BTreeMap<String, Vec<u8>>>,
    pub operations: std::cell::Cell<usize>,
}

#[cfg(test)]
impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.operations.set(self.operations.get() + 1);
        self.entries.borrow().get(key).cloned()
    }
    fn set(&self, key: &str, value: &[u8]) {
        self.operations.set(self.operations.get() + 1);
        self.entries.borrow_mut().insert(key.into(), value.to_vec());
    }
    fn delete(&self, key: &str) {
        self.operations.set(self.operations.get() + 1);
        self.entries.borrow_mut().remove(key);
    }
}
