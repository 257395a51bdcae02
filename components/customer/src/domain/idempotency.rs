//! `Idempotency-Key` on our own write API: the same key with the same request replays the first
//! answer; with another request it is refused (422); kept 24 hours. Keys are scoped per caller.
//! 5xx answers are not kept (the client should be able to retry them), nor is a request that
//! died half-way: after `ABANDONED_SECS` its key may be used again.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Store, StoreError};
use crate::error::Error;

pub const TTL_SECS: i64 = 24 * 60 * 60;
/// A request still "in progress" after this long has died; its key is free again.
pub const ABANDONED_SECS: i64 = 120;

/// SHA-256 over the method, the path and the body (canonical JSON when it is JSON: key order and
/// whitespace do not make two requests different).
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b"\n");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let mut canonical = String::new();
            canonicalize(&value, &mut canonical);
            hasher.update(b"json:");
            hasher.update(canonical.as_bytes());
        }
        Err(_) => {
            hasher.update(b"raw:");
            hasher.update(body);
        }
    }
    super::billing::hex(&hasher.finalize())
}

fn canonicalize(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                canonicalize(&map[key.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonicalize(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What to do with a keyed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time: run it, then `finish`.
    Proceed,
    /// Seen before with the same request: answer this.
    Replay { status: u16, content_type: String, body: String },
}

pub fn begin(store: &dyn Store, principal: &str, key: &str, request_hash: &str, now: i64) -> Result<Begin, Error> {
    for _ in 0..3 {
        match store.idem_insert(principal, key, request_hash, now) {
            Ok(()) => return Ok(Begin::Proceed),
            Err(StoreError::Duplicate { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        let Some(record) = store.idem_get(principal, key)? else {
            continue; // deleted meanwhile: try again
        };
        let expired = now - record.created_at >= TTL_SECS;
        let abandoned = !record.done && now - record.created_at >= ABANDONED_SECS;
        if expired || abandoned {
            store.idem_delete(principal, key)?;
            continue;
        }
        if record.request_hash != request_hash {
            return Err(Error::IdempotencyMismatch);
        }
        if !record.done {
            return Err(Error::IdempotencyInProgress);
        }
        return Ok(Begin::Replay { status: record.status, content_type: record.content_type, body: record.body });
    }
    Err(Error::IdempotencyInProgress)
}

/// Keeps the answer (2xx-4xx) or frees the key: after a 5xx, or an answer that says when to try
/// again (`retry_later`: a 429, a 409 for work another request is finishing), the same request
/// with the same key must run again, not replay a refusal for a day. Stripe, too, keeps no
/// answer of a request that a rate limit or a concurrent request stopped.
pub fn finish(store: &dyn Store, principal: &str, key: &str, status: u16, retry_later: bool, content_type: &str, body: &str) {
    let result = if status >= 500 || retry_later {
        store.idem_delete(principal, key)
    } else {
        store.idem_complete(principal, key, status, content_type, body)
    };
    if let Err(err) = result {
        telemetry::error("idempotency: could not record the answer for a keyed request", &[("cause", err.to_string().into())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fake::MemoryStore;

    #[test]
    fn fingerprints_ignore_json_formatting_only() {
        let a = fingerprint("POST", "/x", br#"{"a":1,"b":[1,2]}"#);
        let b = fingerprint("POST", "/x", b"{ \"b\": [1, 2], \"a\": 1 }");
        assert_eq!(a, b);
        assert_ne!(a, fingerprint("POST", "/x", br#"{"a":1,"b":[2,1]}"#));
        assert_ne!(a, fingerprint("PATCH", "/x", br#"{"a":1,"b":[1,2]}"#));
        assert_ne!(a, fingerprint("POST", "/y", br#"{"a":1,"b":[1,2]}"#));
    }

    #[test]
    fn replay_mismatch_in_progress_expiry() {
        let store = MemoryStore::default();
        assert_eq!(begin(&store, "user:1", "k", "h1", 100).unwrap(), Begin::Proceed);
        assert_eq!(begin(&store, "user:1", "k", "h1", 101).unwrap_err(), Error::IdempotencyInProgress);
        assert_eq!(begin(&store, "user:1", "k", "h2", 101).unwrap_err(), Error::IdempotencyMismatch);
        // Another caller's identical key is independent.
        assert_eq!(begin(&store, "user:2", "k", "h9", 101).unwrap(), Begin::Proceed);
        finish(&store, "user:1", "k", 201, false, "application/json", "{}");
        assert_eq!(
            begin(&store, "user:1", "k", "h1", 102).unwrap(),
            Begin::Replay { status: 201, content_type: "application/json".into(), body: "{}".into() }
        );
        assert_eq!(begin(&store, "user:1", "k", "h2", 102).unwrap_err(), Error::IdempotencyMismatch);
        assert_eq!(begin(&store, "user:1", "k", "h2", 100 + TTL_SECS).unwrap(), Begin::Proceed);
        // 5xx answers free the key.
        finish(&store, "user:1", "k", 503, true, "application/problem+json", "{}");
        assert_eq!(begin(&store, "user:1", "k", "h3", 100 + TTL_SECS).unwrap(), Begin::Proceed);
        // So do answers that say when to try again (429, a 409 for work another request is
        // finishing): the retry runs. Other 4xx answers are kept.
        finish(&store, "user:1", "k", 429, true, "application/problem+json", "{}");
        assert_eq!(begin(&store, "user:1", "k", "h3", 100 + TTL_SECS).unwrap(), Begin::Proceed);
        finish(&store, "user:1", "k", 409, false, "application/problem+json", "{}");
        assert!(matches!(begin(&store, "user:1", "k", "h3", 100 + TTL_SECS).unwrap(), Begin::Replay { status: 409, .. }));
    }
}
