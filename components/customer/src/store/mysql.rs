//! `domain::Store` on Spin's MySQL interface: one connection per request, parameterised
//! statements only, no TIMESTAMP read as such (`UNIX_TIMESTAMP` cast to an integer), unique keys
//! reported by name so they map to a 409.

use spin_sdk::mysql::{Connection, DbValue, MysqlError, ParameterValue};

use crate::domain::{
    AreaIds, Claim, Customer, IdemRecord, SentProfile, Store, StoreError, Subscription, SubscriptionStatus,
};

pub struct MysqlStore {
    conn: Connection,
}

/// The key name in a duplicate-key message: MariaDB says `for key 'PRIMARY'`, MySQL 8
/// `for key 'customers.PRIMARY'`. The last occurrence is the server's (the value may contain
/// the same words).
pub fn duplicate_key_name(message: &str) -> Option<String> {
    if !message.contains("1062") && !message.contains("Duplicate entry") {
        return None;
    }
    let start = message.rfind("for key '")? + "for key '".len();
    let rest = &message[start..];
    let name = &rest[..rest.find('\'')?];
    Some(name.rsplit('.').next().unwrap_or(name).to_string())
}

/// Failures worth a retry (503, as in auth): the connection lost, and a lock given up
/// (1205, lock wait timeout) or broken (1213, deadlock) while another request held the row.
const TRANSIENT: [&str; 7] = ["code: 1213", "code: 1205", "Io(", "ConnectionClosed", "Connection refused", "Broken pipe", "broken pipe"];

fn map_err(err: MysqlError) -> StoreError {
    match err {
        MysqlError::ConnectionFailed(m) => StoreError::Unavailable(m),
        MysqlError::QueryFailed(m) => {
            if let Some(constraint) = duplicate_key_name(&m) {
                StoreError::Duplicate { constraint }
            } else if TRANSIENT.iter().any(|marker| m.contains(marker)) {
                StoreError::Unavailable(m)
            } else {
                StoreError::Other(m)
            }
        }
        MysqlError::BadParameter(m) | MysqlError::ValueConversionFailed(m) | MysqlError::Other(m) => StoreError::Other(m),
    }
}

fn s(v: &str) -> ParameterValue {
    ParameterValue::Str(v.to_string())
}

fn opt_s(v: Option<&str>) -> ParameterValue {
    v.map_or(ParameterValue::DbNull, s)
}

fn i(v: i64) -> ParameterValue {
    ParameterValue::Int64(v)
}

fn opt_i(v: Option<i64>) -> ParameterValue {
    v.map_or(ParameterValue::DbNull, i)
}

fn int(v: &DbValue) -> Option<i64> {
    match v {
        DbValue::Int8(n) => Some(i64::from(*n)),
        DbValue::Int16(n) => Some(i64::from(*n)),
        DbValue::Int32(n) => Some(i64::from(*n)),
        DbValue::Int64(n) => Some(*n),
        DbValue::Uint8(n) => Some(i64::from(*n)),
        DbValue::Uint16(n) => Some(i64::from(*n)),
        DbValue::Uint32(n) => Some(i64::from(*n)),
        DbValue::Uint64(n) => i64::try_from(*n).ok(),
        DbValue::Boolean(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn text(v: &DbValue) -> Option<String> {
    match v {
        DbValue::Str(s) => Some(s.clone()),
        DbValue::Binary(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

fn col(row: &[DbValue], index: usize) -> Result<&DbValue, StoreError> {
    row.get(index).ok_or_else(|| StoreError::Other(format!("missing column {index}")))
}

fn req_text(row: &[DbValue], index: usize) -> Result<String, StoreError> {
    text(col(row, index)?).ok_or_else(|| StoreError::Other(format!("column {index} is not text")))
}

fn req_int(row: &[DbValue], index: usize) -> Result<i64, StoreError> {
    int(col(row, index)?).ok_or_else(|| StoreError::Other(format!("column {index} is not an integer")))
}

/// Times as Unix seconds: a TIMESTAMP is never read as such.
const CUSTOMER_COLUMNS: &str = "id, stripe_customer_id, CAST(COALESCE(UNIX_TIMESTAMP(created_at), 0) AS SIGNED), \
     CAST(COALESCE(UNIX_TIMESTAMP(updated_at), 0) AS SIGNED)";

fn customer_from(row: &[DbValue], area_ids: AreaIds) -> Result<Customer, StoreError> {
    Ok(Customer {
        id: req_text(row, 0)?,
        stripe_customer_id: text(col(row, 1)?),
        area_ids,
        created_at: req_int(row, 2)?,
        updated_at: req_int(row, 3)?,
    })
}

const SUBSCRIPTION_COLUMNS: &str = "id, customer_id, stripe_subscription_id, price_id, status, current_period_end, \
     cancel_at_period_end, stripe_created, last_event_at, quantity";

fn subscription_from(row: &[DbValue]) -> Result<Subscription, StoreError> {
    let status = req_text(row, 4)?;
    Ok(Subscription {
        id: req_text(row, 0)?,
        customer_id: req_text(row, 1)?,
        stripe_subscription_id: text(col(row, 2)?),
        price_id: req_text(row, 3)?,
        status: SubscriptionStatus::parse(&status).ok_or_else(|| StoreError::Other(format!("unknown status {status}")))?,
        current_period_end: int(col(row, 5)?),
        cancel_at_period_end: req_int(row, 6)? != 0,
        stripe_created: int(col(row, 7)?),
        last_event_at: req_int(row, 8)?,
        quantity: u32::try_from(req_int(row, 9)?).map_err(|_| StoreError::Other("quantity out of range".into()))?,
    })
}

/// The values of the columns a sync may change, in `SUBSCRIPTION_COLUMNS` order (after `id,
/// customer_id`).
fn subscription_state(sub: &Subscription) -> [ParameterValue; 8] {
    [
        opt_s(sub.stripe_subscription_id.as_deref()),
        s(&sub.price_id),
        s(sub.status.as_str()),
        opt_i(sub.current_period_end),
        i(i64::from(sub.cancel_at_period_end)),
        opt_i(sub.stripe_created),
        i(sub.last_event_at),
        i(i64::from(sub.quantity)),
    ]
}

impl MysqlStore {
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Connection::open(url).map(|conn| Self { conn }).map_err(map_err)
    }

    fn exec(&self, sql: &str, params: &[ParameterValue]) -> Result<(), StoreError> {
        self.conn.execute(sql, params).map_err(map_err)
    }

    fn rows(&self, sql: &str, params: &[ParameterValue]) -> Result<Vec<Vec<DbValue>>, StoreError> {
        self.conn.query(sql, params).map(|set| set.rows).map_err(map_err)
    }

    fn row_count(&self) -> Result<i64, StoreError> {
        let rows = self.rows("SELECT ROW_COUNT()", &[])?;
        rows.first().map(|row| req_int(row, 0)).transpose().map(|n| n.unwrap_or(0))
    }

    /// Adds a failure to the auth breaker's count and returns the count (migration 14); a
    /// failure more than `streak_secs` after the last starts a new one.
    pub fn add_auth_failure(&self, now: i64, streak_secs: i64) -> Result<u32, StoreError> {
        self.exec(
            "INSERT INTO auth_breaker_failures (breaker, failures, last_failure_at) VALUES ('auth', 1, ?) \
             ON DUPLICATE KEY UPDATE failures = IF(? - last_failure_at > ?, 1, failures + 1), \
             last_failure_at = GREATEST(last_failure_at, ?)",
            &[i(now), i(now), i(streak_secs), i(now)],
        )?;
        let rows = self.rows("SELECT failures FROM auth_breaker_failures WHERE breaker = 'auth'", &[])?;
        let failures = rows.first().map(|row| req_int(row, 0)).transpose()?.unwrap_or(1);
        Ok(u32::try_from(failures).unwrap_or(u32::MAX))
    }

    /// Ends the auth breaker's count (a success).
    pub fn clear_auth_failures(&self) -> Result<(), StoreError> {
        self.exec("DELETE FROM auth_breaker_failures WHERE breaker = 'auth'", &[])
    }

    /// `SELECT 1`, for health.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.rows("SELECT 1", &[]).map(|_| ())
    }

    /// `SUBSCRIPTION_COLUMNS` of the subscriptions matching `condition` (and what follows it).
    fn subscription_rows(&self, condition: &str, params: &[ParameterValue]) -> Result<Vec<Vec<DbValue>>, StoreError> {
        self.rows(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE {condition}"), params)
    }

    fn first_subscription(&self, condition: &str, params: &[ParameterValue]) -> Result<Option<Subscription>, StoreError> {
        self.subscription_rows(condition, params)?.first().map(|row| subscription_from(row)).transpose()
    }

    fn insert_areas(&self, id: &str, areas: &AreaIds) -> Result<(), StoreError> {
        if areas.as_slice().is_empty() {
            return Ok(());
        }
        let placeholders = vec!["(?, ?)"; areas.as_slice().len()].join(", ");
        let mut params = Vec::with_capacity(areas.as_slice().len() * 2);
        for area in areas.as_slice() {
            params.push(s(id));
            params.push(ParameterValue::Uint32(*area));
        }
        self.exec(&format!("INSERT INTO customer_areas (customer_id, area_id) VALUES {placeholders}"), &params)
    }
}

impl Store for MysqlStore {
    fn begin(&self) -> Result<(), StoreError> {
        self.exec("START TRANSACTION", &[])
    }

    fn commit(&self) -> Result<(), StoreError> {
        // Named in the cause: a COMMIT whose acknowledgement was lost may still be durable, and
        // the log is where an operator (or tests/faults_db.rs) tells that case from the others.
        self.exec("COMMIT", &[]).map_err(|err| match err {
            StoreError::Unavailable(cause) => StoreError::Unavailable(format!("commit: {cause}")),
            StoreError::Other(cause) => StoreError::Other(format!("commit: {cause}")),
            other => other,
        })
    }

    fn rollback(&self) {
        if let Err(err) = self.exec("ROLLBACK", &[]) {
            telemetry::error("rollback failed", &[("cause", err.to_string().into())]);
        }
    }

    fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        let rows = self.rows(&format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = ?"), &[s(id)])?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let areas = self
            .rows("SELECT area_id FROM customer_areas WHERE customer_id = ? ORDER BY area_id", &[s(id)])?
            .iter()
            .filter_map(|r| r.first().and_then(int).and_then(|n| u32::try_from(n).ok()))
            .collect();
        customer_from(row, AreaIds::from_stored(areas)).map(Some)
    }

    fn customers(&self, after: Option<&str>, limit: u32) -> Result<Vec<Customer>, StoreError> {
        let rows = self.rows(
            &format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id > ? ORDER BY id LIMIT ?"),
            &[s(after.unwrap_or("")), ParameterValue::Uint32(limit)],
        )?;
        // Areas are filled in below, with one query for the whole page.
        let mut customers = Vec::with_capacity(rows.len());
        for row in &rows {
            customers.push(customer_from(row, AreaIds::from_stored(Vec::new()))?);
        }
        if customers.is_empty() {
            return Ok(customers);
        }
        let placeholders = vec!["?"; customers.len()].join(", ");
        let params: Vec<ParameterValue> = customers.iter().map(|c| s(&c.id)).collect();
        let mut areas: std::collections::BTreeMap<String, Vec<u32>> = std::collections::BTreeMap::new();
        for row in self.rows(
            &format!("SELECT customer_id, area_id FROM customer_areas WHERE customer_id IN ({placeholders})"),
            &params,
        )? {
            if let (Some(id), Some(area)) = (text(col(&row, 0)?), int(col(&row, 1)?).and_then(|n| u32::try_from(n).ok())) {
                areas.entry(id).or_default().push(area);
            }
        }
        for customer in &mut customers {
            customer.area_ids = AreaIds::from_stored(areas.remove(&customer.id).unwrap_or_default());
        }
        Ok(customers)
    }

    fn lock_customer(&self, id: &str) -> Result<bool, StoreError> {
        Ok(!self.rows("SELECT id FROM customers WHERE id = ? FOR UPDATE", &[s(id)])?.is_empty())
    }

    fn lock_customer_by_stripe_id(&self, stripe_customer_id: &str) -> Result<Option<String>, StoreError> {
        let rows = self.rows(
            "SELECT id FROM customers WHERE stripe_customer_id = ? ORDER BY id LIMIT 1 FOR UPDATE",
            &[s(stripe_customer_id)],
        )?;
        rows.first().map(|row| req_text(row, 0)).transpose()
    }

    fn insert_customer(&self, id: &str, stripe_customer_id: &str, areas: &AreaIds) -> Result<(), StoreError> {
        self.exec("INSERT INTO customers (id, stripe_customer_id) VALUES (?, ?)", &[s(id), s(stripe_customer_id)])?;
        self.insert_areas(id, areas)
    }

    fn replace_areas(&self, id: &str, areas: &AreaIds) -> Result<(), StoreError> {
        self.exec("DELETE FROM customer_areas WHERE customer_id = ?", &[s(id)])?;
        self.insert_areas(id, areas)?;
        self.exec("UPDATE customers SET updated_at = CURRENT_TIMESTAMP WHERE id = ?", &[s(id)])
    }

    fn delete_customer(&self, id: &str) -> Result<(), StoreError> {
        // customer_areas and subscriptions go with it (ON DELETE CASCADE).
        self.exec("DELETE FROM customers WHERE id = ?", &[s(id)])
    }

    fn claim_provisioning(&self, id: &str, now: i64, lease_secs: i64) -> Result<Claim, StoreError> {
        // `created_at` in milliseconds: it is part of the Stripe key, and a user may leave billing
        // and come back within the same second.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(now.saturating_mul(1000), |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        match self.exec(
            "INSERT INTO customer_provisioning (customer_id, attempt, lease_until, created_at) VALUES (?, 1, ?, ?)",
            &[s(id), i(now + lease_secs), i(started)],
        ) {
            Ok(()) => return Ok(Claim::Claimed { attempt: 1, resumed: false, last_error: None, started }),
            Err(StoreError::Duplicate { .. }) => {}
            Err(err) => return Err(err),
        }
        self.exec(
            "UPDATE customer_provisioning SET lease_until = ? WHERE customer_id = ? AND lease_until <= ?",
            &[i(now + lease_secs), s(id), i(now)],
        )?;
        if self.row_count()? == 0 {
            return Ok(Claim::Busy);
        }
        let rows = self.rows("SELECT attempt, last_error, created_at FROM customer_provisioning WHERE customer_id = ?", &[s(id)])?;
        let Some(row) = rows.first() else {
            return Ok(Claim::Busy);
        };
        Ok(Claim::Claimed {
            attempt: u32::try_from(req_int(row, 0)?).unwrap_or(1),
            resumed: true,
            last_error: text(col(row, 1)?),
            started: req_int(row, 2)?,
        })
    }

    fn provisioning_failed(&self, id: &str, error: &str, next_attempt: bool) -> Result<(), StoreError> {
        self.exec(
            "UPDATE customer_provisioning SET lease_until = 0, last_error = ?, attempt = attempt + ? WHERE customer_id = ?",
            &[s(error), i(i64::from(next_attempt)), s(id)],
        )
    }

    fn delete_provisioning(&self, id: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM customer_provisioning WHERE customer_id = ?", &[s(id)])
    }

    fn subscriptions(&self, customer_id: &str) -> Result<Vec<Subscription>, StoreError> {
        self.subscription_rows("customer_id = ? ORDER BY created_at, id", &[s(customer_id)])?
            .iter()
            .map(|row| subscription_from(row))
            .collect()
    }

    fn subscriptions_of_customers(&self, customer_ids: &[&str]) -> Result<Vec<Subscription>, StoreError> {
        if customer_ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = vec!["?"; customer_ids.len()].join(", ");
        let params: Vec<ParameterValue> = customer_ids.iter().map(|id| s(id)).collect();
        self.subscription_rows(&format!("customer_id IN ({placeholders}) ORDER BY customer_id, created_at, id"), &params)?
            .iter()
            .map(|row| subscription_from(row))
            .collect()
    }

    fn subscription(&self, customer_id: &str, id: &str) -> Result<Option<Subscription>, StoreError> {
        self.first_subscription("customer_id = ? AND id = ?", &[s(customer_id), s(id)])
    }

    fn subscription_by_stripe_id(&self, stripe_subscription_id: &str) -> Result<Option<Subscription>, StoreError> {
        self.first_subscription("stripe_subscription_id = ? FOR UPDATE", &[s(stripe_subscription_id)])
    }

    fn subscription_by_id(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        self.first_subscription("id = ?", &[s(id)])
    }

    fn insert_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let mut params = vec![s(&sub.id), s(&sub.customer_id)];
        params.extend(subscription_state(sub));
        self.exec(&format!("INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), &params)
    }

    fn update_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let mut params = Vec::from(subscription_state(sub));
        params.push(s(&sub.id));
        self.exec(
            "UPDATE subscriptions SET stripe_subscription_id = ?, price_id = ?, status = ?, current_period_end = ?, \
             cancel_at_period_end = ?, stripe_created = ?, last_event_at = ?, quantity = ? WHERE id = ?",
            &params,
        )
    }

    fn insert_event(&self, id: &str, kind: &str, created: i64, object_id: Option<&str>) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO stripe_events (id, type, stripe_created, object_id, outcome) VALUES (?, ?, ?, ?, 'processing')",
            &[s(id), s(kind), i(created), opt_s(object_id)],
        )
    }

    fn set_event_outcome(&self, id: &str, outcome: &str) -> Result<(), StoreError> {
        self.exec("UPDATE stripe_events SET outcome = ? WHERE id = ?", &[s(outcome), s(id)])
    }

    fn stripe_profile(&self, customer_id: &str) -> Result<Option<SentProfile>, StoreError> {
        let rows = self.rows("SELECT profile_digest, synced_at FROM stripe_profile_sync WHERE customer_id = ?", &[s(customer_id)])?;
        rows.first().map(|row| Ok(SentProfile { digest: req_text(row, 0)?, sent_at: req_int(row, 1)? })).transpose()
    }

    fn count_user_call(&self, user_id: &str, window_start: i64) -> Result<u64, StoreError> {
        // `calls` first: MySQL assigns left to right, so it compares the row's old window.
        self.exec(
            "INSERT INTO user_call_budget (user_id, window_start, calls) VALUES (?, ?, 1) \
             ON DUPLICATE KEY UPDATE calls = IF(window_start >= ?, calls + 1, 1), window_start = GREATEST(window_start, ?)",
            &[s(user_id), i(window_start), i(window_start), i(window_start)],
        )?;
        let rows = self.rows("SELECT calls FROM user_call_budget WHERE user_id = ?", &[s(user_id)])?;
        rows.first().map(|row| req_int(row, 0).map(|calls| u64::try_from(calls).unwrap_or(0))).transpose().map(|calls| calls.unwrap_or(1))
    }

    fn trial_granted(&self, user_id: &str) -> Result<bool, StoreError> {
        Ok(!self.rows("SELECT 1 FROM trial_grants WHERE customer_id = ?", &[s(user_id)])?.is_empty())
    }

    fn record_trial(&self, user_id: &str, now: i64, days: u32) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO trial_grants (customer_id, granted_at, days) VALUES (?, ?, ?)",
            &[s(user_id), i(now), ParameterValue::Uint32(days)],
        )
    }

    fn forget_trial(&self, user_id: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM trial_grants WHERE customer_id = ?", &[s(user_id)])
    }

    fn set_stripe_profile_digest(&self, customer_id: &str, digest: &str, now: i64) -> Result<(), StoreError> {
        // Parameters twice rather than VALUES(), which MySQL 8.0.20 deprecates here.
        self.exec(
            "INSERT INTO stripe_profile_sync (customer_id, profile_digest, synced_at) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE profile_digest = ?, synced_at = ?",
            &[s(customer_id), s(digest), i(now), s(digest), i(now)],
        )
    }

    fn audit(&self, now: i64, actor: &str, action: &str, subject: Option<&str>, detail: &str) -> Result<(), StoreError> {
        let detail: String = detail.chars().take(1024).collect();
        self.exec(
            "INSERT INTO audit_log (occurred_at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            &[i(now), s(actor), s(action), opt_s(subject), s(&detail)],
        )
    }

    fn idem_insert(&self, principal: &str, key: &str, request_hash: &str, now: i64) -> Result<(), StoreError> {
        // Keys older than a day are free again: drop a few on every keyed write.
        self.exec(
            "DELETE FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT 100",
            &[i(now - crate::domain::idempotency::TTL_SECS)],
        )?;
        self.exec(
            "INSERT INTO idempotency_keys (principal, idem_key, request_hash, state, created_at) VALUES (?, ?, ?, 'in_progress', ?)",
            &[s(principal), s(key), s(request_hash), i(now)],
        )
    }

    fn idem_get(&self, principal: &str, key: &str) -> Result<Option<IdemRecord>, StoreError> {
        let rows = self.rows(
            "SELECT request_hash, state, response_status, response_content_type, response_body, created_at \
             FROM idempotency_keys WHERE principal = ? AND idem_key = ?",
            &[s(principal), s(key)],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(IdemRecord {
            request_hash: req_text(row, 0)?,
            done: req_text(row, 1)? == "done",
            status: int(col(row, 2)?).and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
            content_type: text(col(row, 3)?).unwrap_or_default(),
            body: text(col(row, 4)?).unwrap_or_default(),
            created_at: req_int(row, 5)?,
        }))
    }

    fn idem_complete(&self, principal: &str, key: &str, status: u16, content_type: &str, body: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE idempotency_keys SET state = 'done', response_status = ?, response_content_type = ?, response_body = ? \
             WHERE principal = ? AND idem_key = ?",
            &[i(i64::from(status)), s(content_type), s(body), s(principal), s(key)],
        )
    }

    fn idem_delete(&self, principal: &str, key: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM idempotency_keys WHERE principal = ? AND idem_key = ?", &[s(principal), s(key)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_key_names_from_both_servers() {
        let mariadb = r#"Server(ServerError { code: 1062, message: "Duplicate entry 'u1' for key 'PRIMARY'", state: "23000" })"#;
        assert_eq!(duplicate_key_name(mariadb).as_deref(), Some("PRIMARY"));
        let mysql = r#"Server(ServerError { code: 1062, message: "Duplicate entry 'u1-p' for key 'subscriptions.uq_subscriptions_live_price'", state: "23000" })"#;
        assert_eq!(duplicate_key_name(mysql).as_deref(), Some("uq_subscriptions_live_price"));
        let tricky = r#"Server(ServerError { code: 1062, message: "Duplicate entry 'x for key 'evil'' for key 'PRIMARY'", state: "23000" })"#;
        assert_eq!(duplicate_key_name(tricky).as_deref(), Some("PRIMARY"));
        assert_eq!(duplicate_key_name("Server(ServerError { code: 1146, message: \"Table doesn't exist\" })"), None);
    }

    #[test]
    fn lock_timeouts_and_deadlocks_are_unavailable_not_internal() {
        let failed = |m: &str| map_err(MysqlError::QueryFailed(m.into()));
        for transient in [
            r#"Server(ServerError { code: 1205, message: "Lock wait timeout exceeded; try restarting transaction", state: "HY000" })"#,
            r#"Server(ServerError { code: 1213, message: "Deadlock found when trying to get lock; try restarting transaction", state: "40001" })"#,
            "Io(Io(Custom { kind: BrokenPipe, error: \"Broken pipe\" }))",
        ] {
            assert!(matches!(failed(transient), StoreError::Unavailable(_)), "{transient}");
        }
        let syntax = r#"Server(ServerError { code: 1064, message: "You have an error in your SQL syntax", state: "42000" })"#;
        assert!(matches!(failed(syntax), StoreError::Other(_)));
    }
}
