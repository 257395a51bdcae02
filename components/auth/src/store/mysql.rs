//! `Store` on Spin's MySQL interface: one connection per request, bound parameters only, row
//! mapping beside each query. TIMESTAMP columns are read as `UNIX_TIMESTAMP(...)` (Spin cannot
//! read TIMESTAMP values); `execute` reports no row counts, so writes are designed around keys.

use spin_sdk::mysql::{Connection, DbValue, MysqlError as SpinError, ParameterValue};

use crate::domain::ports::{
    Attempt, AuditEvent, CHECK_EXPIRY_SECS, CheckStart, Counter, EMAIL_UNIQUE, NewRefresh, NewUser, OneTimeKind, RefreshRow, SessionOrigin,
    SessionRow, Store, StoreError, TotpRow, UserRow, UserWrite,
};

/// Unique keys whose violation the domain may turn into a client error.
const KNOWN_UNIQUE_KEYS: &[&str] = &[EMAIL_UNIQUE];

pub struct MysqlStore {
    conn: Connection,
}

impl MysqlStore {
    pub fn open(url: &str) -> Result<MysqlStore, StoreError> {
        Connection::open(url)
            .map(|conn| MysqlStore { conn })
            .map_err(|err| StoreError::Unavailable(format!("connect: {}", describe(&err))))
    }

    fn exec(&self, what: &str, sql: &str, params: &[ParameterValue]) -> Result<(), StoreError> {
        self.conn.execute(sql, params).map_err(|err| classify(what, &err))
    }

    fn rows(&self, what: &str, sql: &str, params: &[ParameterValue]) -> Result<Vec<Vec<DbValue>>, StoreError> {
        self.conn
            .query(sql, params)
            .map(|set| set.rows)
            .map_err(|err| classify(what, &err))
    }

    /// The user the condition `filter` (one bound value, `value`) finds: the one query behind
    /// the lookups by id and by email, and the locking read.
    fn one_user(&self, what: &str, filter: &str, value: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM client_auth WHERE {filter}");
        self.rows(what, &sql, &[s(value)])?.first().map(|row| user_row(row)).transpose()
    }

    /// A health probe: `SELECT 1`.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.rows("ping", "SELECT 1", &[]).map(|_| ())
    }
}

/// The text of a Spin MySQL error without the variant name.
fn describe(err: &SpinError) -> String {
    match err {
        SpinError::ConnectionFailed(m)
        | SpinError::BadParameter(m)
        | SpinError::QueryFailed(m)
        | SpinError::ValueConversionFailed(m)
        | SpinError::Other(m) => m.clone(),
    }
}

/// Sorts a failure: a duplicate key (by constraint name, never the duplicated value), a lost
/// or busy database (503), or anything else (500).
fn classify(what: &str, err: &SpinError) -> StoreError {
    let text = describe(err);
    if let SpinError::ConnectionFailed(_) = err {
        return StoreError::Unavailable(format!("{what}: {text}"));
    }
    if text.contains("1062") || text.contains("Duplicate entry") {
        let key = KNOWN_UNIQUE_KEYS
            .iter()
            .find(|key| text.contains(*key))
            .map_or("PRIMARY or another unique key", |key| *key);
        return StoreError::Duplicate(key.to_owned());
    }
    let transient = ["code: 1213", "code: 1205", "Io(", "ConnectionClosed", "Connection refused", "broken pipe"];
    if transient.iter().any(|marker| text.contains(marker)) {
        return StoreError::Unavailable(format!("{what}: {text}"));
    }
    StoreError::Failed(format!("{what}: {text}"))
}

// ---- values ------------------------------------------------------------------------------------

fn s(value: &str) -> ParameterValue {
    ParameterValue::Str(value.to_owned())
}

fn n(value: u64) -> ParameterValue {
    ParameterValue::Int64(i64::try_from(value).unwrap_or(i64::MAX))
}

fn opt_s(value: Option<&str>) -> ParameterValue {
    value.map_or(ParameterValue::DbNull, s)
}

fn int(value: &DbValue) -> Option<i64> {
    match value {
        DbValue::Boolean(v) => Some(i64::from(*v)),
        DbValue::Int8(v) => Some(i64::from(*v)),
        DbValue::Int16(v) => Some(i64::from(*v)),
        DbValue::Int32(v) => Some(i64::from(*v)),
        DbValue::Int64(v) => Some(*v),
        DbValue::Uint8(v) => Some(i64::from(*v)),
        DbValue::Uint16(v) => Some(i64::from(*v)),
        DbValue::Uint32(v) => Some(i64::from(*v)),
        DbValue::Uint64(v) => i64::try_from(*v).ok(),
        DbValue::Str(v) => v.trim().parse().ok(),
        DbValue::Binary(v) => std::str::from_utf8(v).ok().and_then(|t| t.trim().parse().ok()),
        _ => None,
    }
}

fn text(value: &DbValue) -> Option<String> {
    match value {
        DbValue::Str(v) => Some(v.clone()),
        DbValue::Binary(v) => String::from_utf8(v.clone()).ok(),
        _ => None,
    }
}

fn is_null(value: &DbValue) -> bool {
    matches!(value, DbValue::DbNull)
}

/// Column `index` of `row`, converted by `f`, or a mapping error naming the column.
fn col<T>(row: &[DbValue], index: usize, name: &str, f: impl Fn(&DbValue) -> Option<T>) -> Result<T, StoreError> {
    row.get(index)
        .and_then(f)
        .ok_or_else(|| StoreError::Failed(format!("unexpected value in column {name}")))
}

fn opt_col<T>(row: &[DbValue], index: usize, name: &str, f: impl Fn(&DbValue) -> Option<T>) -> Result<Option<T>, StoreError> {
    match row.get(index) {
        Some(value) if is_null(value) => Ok(None),
        _ => col(row, index, name, f).map(Some),
    }
}

fn unsigned(value: &DbValue) -> Option<u64> {
    int(value).and_then(|v| u64::try_from(v).ok())
}

// ---- users -------------------------------------------------------------------------------------

/// The table of a kind of one-time token (a constant, never input: safe to format into SQL).
fn one_time_table(kind: OneTimeKind) -> &'static str {
    match kind {
        OneTimeKind::PasswordReset => "password_reset_tokens",
        OneTimeKind::EmailVerification => "email_verification_tokens",
    }
}

const USER_COLUMNS: &str = "id, name, email_encrypted, email_hash, password_hash, must_reset_password, \
     CAST(UNIX_TIMESTAMP(created_at) AS SIGNED), CAST(UNIX_TIMESTAMP(updated_at) AS SIGNED), email_verified_at, \
     totp_secret, totp_enabled_at, totp_last_step, mfa_recovery_codes";

/// How many columns `USER_COLUMNS` names: a query's own columns come after them.
const USER_COLUMN_COUNT: usize = 13;

fn user_row(row: &[DbValue]) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        id: col(row, 0, "id", text)?,
        name: col(row, 1, "name", text)?,
        email_encrypted: col(row, 2, "email_encrypted", text)?,
        email_hash: col(row, 3, "email_hash", text)?,
        password_hash: opt_col(row, 4, "password_hash", text)?,
        must_reset_password: col(row, 5, "must_reset_password", int)? != 0,
        created_at: col(row, 6, "created_at", int)?,
        updated_at: col(row, 7, "updated_at", int)?,
        email_verified_at: opt_col(row, 8, "email_verified_at", int)?,
        totp: TotpRow {
            secret_sealed: opt_col(row, 9, "totp_secret", text)?,
            enabled_at: opt_col(row, 10, "totp_enabled_at", int)?,
            last_step: opt_col(row, 11, "totp_last_step", int)?,
            recovery_hashes: opt_col(row, 12, "mfa_recovery_codes", text)?
                .map(|codes| codes.split(',').filter(|hash| !hash.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
        },
    })
}

/// The `login_throttle` counter in `failures, window_started_at, last_failure_at` from column
/// `first`; NULLs (a key without a row, from a LEFT JOIN) read as no failures. Not COALESCE in
/// SQL: Spin cannot convert the type MySQL gives its result.
fn counter_at(row: &[DbValue], first: usize) -> Result<Counter, StoreError> {
    let number = |i: usize, name: &str| opt_col(row, i, name, unsigned).map(Option::unwrap_or_default);
    Ok(Counter {
        failures: u32::try_from(number(first, "failures")?).unwrap_or(u32::MAX),
        window_started_at: number(first + 1, "window_started_at")?,
        last_failure_at: number(first + 2, "last_failure_at")?,
    })
}

/// Adds a failure to the `login_throttle` rows `$values` (scope, subject, 1, now, now); then binds
/// now, window, now, now. An account's count restarts when it has none or its last failure is a
/// window old, an address's when its window started a window ago. Assignments run left to right,
/// each seeing those before it: `failures` is decided on the stored times, then the window
/// restarts with a restarted count.
macro_rules! count_failure_sql {
    ($values:literal) => {
        concat!(
            "INSERT INTO login_throttle (scope, subject, failures, window_started_at, last_failure_at) VALUES ",
            $values,
            " ON DUPLICATE KEY UPDATE \
             failures = IF(failures = 0 OR ? - IF(scope = 'account', last_failure_at, window_started_at) >= ?, \
                           1, failures + 1), \
             window_started_at = IF(failures = 1, ?, window_started_at), \
             last_failure_at = GREATEST(last_failure_at, ?)"
        )
    };
}

impl Store for MysqlStore {
    fn begin(&mut self) -> Result<(), StoreError> {
        self.exec("begin", "START TRANSACTION", &[])
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.exec("commit", "COMMIT", &[])
    }

    fn rollback(&mut self) {
        if let Err(err) = self.exec("rollback", "ROLLBACK", &[]) {
            telemetry::error("rollback failed", &[("cause", format!("{err:?}").into())]);
        }
    }

    fn insert_user(&mut self, user: &NewUser) -> Result<(), StoreError> {
        self.exec(
            "insert user",
            "INSERT INTO client_auth (id, name, email_encrypted, email_hash, password_hash) VALUES (?, ?, ?, ?, ?)",
            &[s(&user.id), s(&user.name), s(&user.email_encrypted), s(&user.email_hash), s(&user.password_hash)],
        )
    }

    fn user_by_id(&mut self, id: &str) -> Result<Option<UserRow>, StoreError> {
        self.one_user("user by id", "id = ?", id)
    }

    fn lock_user(&mut self, id: &str) -> Result<Option<UserRow>, StoreError> {
        self.one_user("lock user", "id = ? FOR UPDATE", id)
    }

    fn user_and_access_record(&mut self, id: &str, access_token_hash: &str) -> Result<Option<(UserRow, bool)>, StoreError> {
        // One round trip: the user, and whether a refresh token of one of its families records
        // this access token (idx_refresh_tokens_access_token).
        let sql = format!(
            "SELECT {USER_COLUMNS}, EXISTS (SELECT 1 FROM refresh_tokens t \
             JOIN refresh_token_families f ON f.id = t.family_id \
             WHERE t.access_token_hash = ? AND f.user_id = client_auth.id) \
             FROM client_auth WHERE id = ?"
        );
        self.rows("user and access record", &sql, &[s(access_token_hash), s(id)])?
            .first()
            .map(|row| Ok((user_row(row)?, col(row, USER_COLUMN_COUNT, "recorded", int)? != 0)))
            .transpose()
    }

    fn user_by_email_hash(&mut self, email_hash: &str) -> Result<Option<UserRow>, StoreError> {
        self.one_user("user by email", "email_hash = ?", email_hash)
    }

    fn users_by_ids(&mut self, ids: &[String]) -> Result<Vec<UserRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One placeholder per id; the values are bound, never spliced into the text.
        let placeholders = vec!["?"; ids.len()].join(", ");
        let sql = format!("SELECT {USER_COLUMNS} FROM client_auth WHERE id IN ({placeholders})");
        let params: Vec<ParameterValue> = ids.iter().map(|id| s(id)).collect();
        self.rows("users by ids", &sql, &params)?
            .iter()
            .map(|row| user_row(row))
            .collect()
    }

    fn update_user(&mut self, id: &str, write: &UserWrite) -> Result<(), StoreError> {
        self.exec(
            "update user",
            "UPDATE client_auth SET name = ?, email_encrypted = ?, email_hash = ?, password_hash = ?, \
             must_reset_password = ?, email_verified_at = ?, totp_secret = ?, totp_enabled_at = ?, \
             totp_last_step = ?, mfa_recovery_codes = ? WHERE id = ?",
            &[
                s(&write.name),
                s(&write.email_encrypted),
                s(&write.email_hash),
                opt_s(write.password_hash.as_deref()),
                ParameterValue::Int8(i8::from(write.must_reset_password)),
                write.email_verified_at.map_or(ParameterValue::DbNull, ParameterValue::Int64),
                opt_s(write.totp.secret_sealed.as_deref()),
                write.totp.enabled_at.map_or(ParameterValue::DbNull, ParameterValue::Int64),
                write.totp.last_step.map_or(ParameterValue::DbNull, ParameterValue::Int64),
                opt_s(Some(write.totp.recovery_hashes.join(",")).filter(|codes| !codes.is_empty()).as_deref()),
                s(id),
            ],
        )
    }

    fn delete_user(&mut self, id: &str) -> Result<(), StoreError> {
        // Families and their tokens go by ON DELETE CASCADE.
        self.exec("delete user", "DELETE FROM client_auth WHERE id = ?", &[s(id)])
    }

    fn insert_family(&mut self, family_id: &str, user_id: &str, now: u64, origin: &SessionOrigin, first: &NewRefresh) -> Result<(), StoreError> {
        self.exec(
            "insert refresh family",
            "INSERT INTO refresh_token_families (id, user_id, created_at, client_address, user_agent) VALUES (?, ?, ?, ?, ?)",
            &[s(family_id), s(user_id), n(now), opt_s(origin.client_address.as_deref()), opt_s(origin.user_agent.as_deref())],
        )?;
        self.insert_refresh(first)
    }

    fn insert_refresh(&mut self, token: &NewRefresh) -> Result<(), StoreError> {
        self.exec(
            "insert refresh token",
            "INSERT INTO refresh_tokens (token_hash, family_id, parent_hash, access_token_hash, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
            &[
                s(&token.token_hash),
                s(&token.family_id),
                opt_s(token.parent_hash.as_deref()),
                s(&token.access_token_hash),
                n(token.created_at),
                n(token.expires_at),
            ],
        )
    }

    fn lock_refresh(&mut self, token_hash: &str) -> Result<Option<RefreshRow>, StoreError> {
        let rows = self.rows(
            "lock refresh token",
            "SELECT t.token_hash, t.family_id, f.user_id, t.expires_at, t.rotated_at, f.revoked_at IS NOT NULL \
             FROM refresh_tokens t JOIN refresh_token_families f ON f.id = t.family_id \
             WHERE t.token_hash = ? FOR UPDATE",
            &[s(token_hash)],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(RefreshRow {
            token_hash: col(row, 0, "token_hash", text)?,
            family_id: col(row, 1, "family_id", text)?,
            user_id: col(row, 2, "user_id", text)?,
            expires_at: col(row, 3, "expires_at", unsigned)?,
            rotated_at: opt_col(row, 4, "rotated_at", unsigned)?,
            family_revoked: col(row, 5, "revoked", int)? != 0,
        }))
    }

    fn mark_rotated(&mut self, token_hash: &str, now: u64) -> Result<(), StoreError> {
        self.exec(
            "mark refresh token rotated",
            "UPDATE refresh_tokens SET rotated_at = ? WHERE token_hash = ? AND rotated_at IS NULL",
            &[n(now), s(token_hash)],
        )
    }

    fn revoke_family(&mut self, family_id: &str, now: u64, reason: &'static str) -> Result<(), StoreError> {
        self.exec(
            "revoke refresh family",
            "UPDATE refresh_token_families SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL",
            &[n(now), s(reason), s(family_id)],
        )
    }

    fn revoke_user_families(&mut self, user_id: &str, keep: Option<&str>, now: u64, reason: &'static str) -> Result<(), StoreError> {
        match keep {
            None => self.exec(
                "revoke refresh families of a user",
                "UPDATE refresh_token_families SET revoked_at = ?, revoked_reason = ? WHERE user_id = ? AND revoked_at IS NULL",
                &[n(now), s(reason), s(user_id)],
            ),
            Some(family_id) => self.exec(
                "revoke the other refresh families of a user",
                "UPDATE refresh_token_families SET revoked_at = ?, revoked_reason = ? WHERE user_id = ? AND revoked_at IS NULL AND id <> ?",
                &[n(now), s(reason), s(user_id), s(family_id)],
            ),
        }
    }

    fn live_sessions(&mut self, user_id: &str, access_token_hash: &str, now: u64, limit: u32) -> Result<Vec<SessionRow>, StoreError> {
        // One statement: each family with its newest token's times, and whether one of its
        // tokens recorded the asking access token (idx_refresh_tokens_family). Ties within a
        // second go to the newer family (ids are UUIDv7: they sort by time to the millisecond).
        let rows = self.rows(
            "live sessions of a user",
            "SELECT f.id, f.created_at, MAX(t.created_at), MAX(t.expires_at), f.client_address, f.user_agent, \
             MAX(CASE WHEN t.access_token_hash = ? THEN 1 ELSE 0 END) \
             FROM refresh_token_families f JOIN refresh_tokens t ON t.family_id = f.id \
             WHERE f.user_id = ? AND f.revoked_at IS NULL \
             GROUP BY f.id, f.created_at, f.client_address, f.user_agent \
             HAVING MAX(t.expires_at) > ? \
             ORDER BY MAX(t.created_at) DESC, f.id DESC LIMIT ?",
            &[s(access_token_hash), s(user_id), n(now), n(u64::from(limit))],
        )?;
        rows.iter()
            .map(|row| {
                Ok(SessionRow {
                    id: col(row, 0, "id", text)?,
                    created_at: col(row, 1, "created_at", unsigned)?,
                    last_used_at: col(row, 2, "last_used_at", unsigned)?,
                    expires_at: col(row, 3, "expires_at", unsigned)?,
                    origin: SessionOrigin {
                        client_address: opt_col(row, 4, "client_address", text)?,
                        user_agent: opt_col(row, 5, "user_agent", text)?,
                    },
                    current: col(row, 6, "current", int)? != 0,
                })
            })
            .collect()
    }

    fn revoke_session(&mut self, user_id: &str, family_id: &str, now: u64, reason: &'static str) -> Result<bool, StoreError> {
        let found = self.rows(
            "lock a session",
            "SELECT id FROM refresh_token_families WHERE id = ? AND user_id = ? AND revoked_at IS NULL FOR UPDATE",
            &[s(family_id), s(user_id)],
        )?;
        if found.is_empty() {
            return Ok(false);
        }
        self.exec(
            "revoke a session",
            "UPDATE refresh_token_families SET revoked_at = ?, revoked_reason = ? WHERE id = ?",
            &[n(now), s(reason), s(family_id)],
        )?;
        Ok(true)
    }

    fn delete_one_time_tokens(&mut self, kind: OneTimeKind, user_id: &str) -> Result<(), StoreError> {
        let table = one_time_table(kind);
        self.exec(&format!("delete {table}"), &format!("DELETE FROM {table} WHERE user_id = ?"), &[s(user_id)])
    }

    fn replace_one_time_token(&mut self, kind: OneTimeKind, user_id: &str, token_hash: &str, now: u64, expires_at: u64) -> Result<(), StoreError> {
        self.delete_one_time_tokens(kind, user_id)?;
        let table = one_time_table(kind);
        self.exec(
            &format!("insert into {table}"),
            &format!("INSERT INTO {table} (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)"),
            &[s(token_hash), s(user_id), n(now), n(expires_at)],
        )
    }

    fn take_one_time_token(&mut self, kind: OneTimeKind, token_hash: &str, now: u64) -> Result<Option<String>, StoreError> {
        // Locked, then deleted in the caller's transaction: of two requests with one token,
        // the second finds nothing.
        let table = one_time_table(kind);
        let rows = self.rows(
            &format!("lock a token of {table}"),
            &format!("SELECT user_id, expires_at FROM {table} WHERE token_hash = ? FOR UPDATE"),
            &[s(token_hash)],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let user_id = col(row, 0, "user_id", text)?;
        let expires_at = col(row, 1, "expires_at", unsigned)?;
        self.exec(&format!("use a token of {table}"), &format!("DELETE FROM {table} WHERE token_hash = ?"), &[s(token_hash)])?;
        Ok((expires_at > now).then_some(user_id))
    }

    fn begin_check(&mut self, account: &str, address: &str, now: u64) -> Result<CheckStart, StoreError> {
        self.exec(
            "begin login check",
            "INSERT INTO login_checks (account_key, address_key, started_at) VALUES (?, ?, ?)",
            &[s(account), s(address), n(now)],
        )?;
        // LAST_INSERT_ID() is this connection's row: the checks ahead of it have smaller ids.
        let since = n(now.saturating_sub(CHECK_EXPIRY_SECS - 1));
        let rows = self.rows(
            "read login counters",
            "SELECT LAST_INSERT_ID(), \
             (SELECT COUNT(*) FROM login_checks WHERE account_key = ? AND id < LAST_INSERT_ID() AND started_at >= ?), \
             (SELECT COUNT(*) FROM login_checks WHERE address_key = ? AND id < LAST_INSERT_ID() AND started_at >= ?), \
             a.failures, a.window_started_at, a.last_failure_at, d.failures, d.window_started_at, d.last_failure_at \
             FROM (SELECT 1 AS one) AS this_check \
             LEFT JOIN login_throttle a ON a.scope = 'account' AND a.subject = ? \
             LEFT JOIN login_throttle d ON d.scope = 'address' AND d.subject = ?",
            &[s(account), since.clone(), s(address), since, s(account), s(address)],
        )?;
        let row = rows.first().ok_or_else(|| StoreError::Failed("read login counters: no row".into()))?;
        let count = |i: usize, name: &str| col(row, i, name, unsigned).map(|v| u32::try_from(v).unwrap_or(u32::MAX));
        Ok(CheckStart {
            id: col(row, 0, "id", unsigned)?,
            account_ahead: count(1, "account_ahead")?,
            address_ahead: count(2, "address_ahead")?,
            account: counter_at(row, 3)?,
            address: counter_at(row, 6)?,
        })
    }

    fn end_check(&mut self, check: &CheckStart, account: &str, address: &str, now: u64, window: u64, outcome: Attempt) -> Result<(), StoreError> {
        match outcome {
            // Recorded before the check is taken off: for a moment it counts twice, never not
            // at all.
            Attempt::Failed => self.exec(
                "count login failure",
                count_failure_sql!("('account', ?, 1, ?, ?), ('address', ?, 1, ?, ?)"),
                &[s(account), n(now), n(now), s(address), n(now), n(now), n(now), n(window), n(now), n(now)],
            )?,
            Attempt::Succeeded if check.account.failures > 0 => self.exec(
                "clear account failures",
                "DELETE FROM login_throttle WHERE scope = 'account' AND subject = ?",
                &[s(account)],
            )?,
            Attempt::Succeeded | Attempt::PasswordOnly | Attempt::Refused => {}
        }
        // With this check go any that never ended.
        self.exec(
            "end login check",
            "DELETE FROM login_checks WHERE id = ? OR started_at < ?",
            &[n(check.id), n(now.saturating_sub(CHECK_EXPIRY_SECS))],
        )
    }

    fn address_counter(&mut self, address: &str) -> Result<Counter, StoreError> {
        let rows = self.rows(
            "read address counter",
            "SELECT failures, window_started_at, last_failure_at FROM login_throttle WHERE scope = 'address' AND subject = ?",
            &[s(address)],
        )?;
        rows.first().map_or(Ok(Counter::default()), |row| counter_at(row, 0))
    }

    fn count_address_failure(&mut self, address: &str, now: u64, window: u64) -> Result<(), StoreError> {
        self.exec(
            "count address failure",
            count_failure_sql!("('address', ?, 1, ?, ?)"),
            &[s(address), n(now), n(now), n(now), n(window), n(now), n(now)],
        )
    }

    fn count_service_call(&mut self, service: &str, window_start: u64) -> Result<u64, StoreError> {
        self.exec(
            "count service call",
            "INSERT INTO service_rate_limit (service, window_start, calls) VALUES (?, ?, 1) \
             ON DUPLICATE KEY UPDATE calls = IF(window_start >= ?, calls + 1, 1), \
             window_start = GREATEST(window_start, ?)",
            &[s(service), n(window_start), n(window_start), n(window_start)],
        )?;
        let rows = self.rows(
            "read service calls",
            "SELECT calls FROM service_rate_limit WHERE service = ?",
            &[s(service)],
        )?;
        match rows.first() {
            Some(row) => col(row, 0, "calls", unsigned),
            None => Ok(1),
        }
    }

    fn audit(&mut self, event: &AuditEvent) -> Result<(), StoreError> {
        self.exec(
            "write audit event",
            "INSERT INTO audit_log (event, success, reason, actor, subject, email_hash, client_addr, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                s(event.event),
                ParameterValue::Int8(i8::from(event.success)),
                opt_s(event.reason),
                s(&event.actor),
                opt_s(event.subject.as_deref()),
                opt_s(event.email_hash.as_deref()),
                s(&event.client_addr),
                opt_s(event.detail.as_deref()),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_named_by_constraint_without_the_value() {
        let err = SpinError::QueryFailed(
            "Server(ServerError { code: 1062, message: \"Duplicate entry 'abc' for key 'client_auth.uq_client_auth_email_hash'\", state: \"23000\" })".into(),
        );
        assert_eq!(classify("insert", &err), StoreError::Duplicate(EMAIL_UNIQUE.into()));
        let err = SpinError::QueryFailed("Server(ServerError { code: 1062, message: \"Duplicate entry 'x' for key 'PRIMARY'\" })".into());
        assert!(matches!(classify("insert", &err), StoreError::Duplicate(key) if !key.contains('x')));
    }

    #[test]
    fn lost_connections_and_deadlocks_are_unavailable() {
        assert!(matches!(classify("q", &SpinError::ConnectionFailed("refused".into())), StoreError::Unavailable(_)));
        let deadlock = SpinError::QueryFailed("Server(ServerError { code: 1213, message: \"Deadlock found\" })".into());
        assert!(matches!(classify("q", &deadlock), StoreError::Unavailable(_)));
        let io = SpinError::QueryFailed("Io(Io(Kind(BrokenPipe)))".into());
        assert!(matches!(classify("q", &io), StoreError::Unavailable(_)));
        let syntax = SpinError::QueryFailed("Server(ServerError { code: 1064 })".into());
        assert!(matches!(classify("q", &syntax), StoreError::Failed(_)));
    }

    #[test]
    fn a_query_reads_its_own_columns_after_the_users() {
        // No column expression in USER_COLUMNS has a comma of its own.
        assert_eq!(USER_COLUMNS.split(',').count(), USER_COLUMN_COUNT);
    }

    #[test]
    fn integers_come_in_any_width() {
        assert_eq!(int(&DbValue::Uint64(7)), Some(7));
        assert_eq!(int(&DbValue::Int8(1)), Some(1));
        assert_eq!(int(&DbValue::Str("1700000000".into())), Some(1_700_000_000));
        assert_eq!(int(&DbValue::DbNull), None);
        assert_eq!(unsigned(&DbValue::Int64(-1)), None);
    }
}
