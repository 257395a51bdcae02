//! An in-memory `Store` for unit tests: the same observable rules as the MySQL store (unique
//! email hash, cascade on delete, counters, transactions as snapshots).

use std::collections::BTreeMap;

use super::ports::*;

#[derive(Debug, Clone, Default)]
pub struct State {
    pub users: BTreeMap<String, UserRow>,
    /// family id -> (user id, revoked reason)
    pub families: BTreeMap<String, (String, Option<&'static str>)>,
    /// family id -> (created at, origin)
    pub origins: BTreeMap<String, (u64, SessionOrigin)>,
    /// token hash -> (row, parent)
    pub tokens: BTreeMap<String, (NewRefresh, Option<u64>)>,
    pub counters: BTreeMap<(&'static str, String), Counter>,
    /// Checks in flight: id -> (account, address, started at).
    pub checks: BTreeMap<u64, (String, String, u64)>,
    pub service_calls: BTreeMap<(String, u64), u64>,
    /// (kind, token hash) -> (user id, expires at)
    pub one_time_tokens: BTreeMap<(OneTimeKind, String), (String, u64)>,
    pub audit: Vec<AuditEvent>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    pub state: State,
    snapshot: Option<State>,
    /// Incremented on every user write, standing in for `ON UPDATE CURRENT_TIMESTAMP`.
    pub clock: i64,
    /// When set, the database is lost right after the next COMMIT (which itself succeeds):
    /// reading a user after it fails as unavailable.
    pub lost_after_commit: bool,
    /// Run (once) when a user row is next locked: another request's change committed between
    /// this request's first read and its write.
    pub before_lock_user: Option<fn(&mut State)>,
    lost: bool,
}

impl MemoryStore {
    fn reachable(&self) -> Result<(), StoreError> {
        if self.lost { Err(StoreError::Unavailable("connection lost".into())) } else { Ok(()) }
    }

    /// As the SQL store counts a failure: an account's count restarts when it has none or its
    /// last failure is a window old, an address's when its window started a window ago.
    fn count_failure(&mut self, scope: &'static str, key: &str, now: u64, window: u64) {
        let c = self.state.counters.entry((scope, key.to_owned())).or_default();
        let since = if scope == "account" { c.last_failure_at } else { c.window_started_at };
        if c.failures == 0 || now.saturating_sub(since) >= window {
            c.failures = 1;
            c.window_started_at = now;
        } else {
            c.failures += 1;
        }
        c.last_failure_at = c.last_failure_at.max(now);
    }

    pub fn events(&self) -> Vec<(&'static str, bool, Option<&'static str>)> {
        self.state.audit.iter().map(|e| (e.event, e.success, e.reason)).collect()
    }
}

impl Store for MemoryStore {
    fn begin(&mut self) -> Result<(), StoreError> {
        self.snapshot = Some(self.state.clone());
        Ok(())
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        self.reachable()?;
        self.snapshot = None;
        self.lost = self.lost_after_commit;
        Ok(())
    }
    fn rollback(&mut self) {
        if let Some(snapshot) = self.snapshot.take() {
            self.state = snapshot;
        }
    }

    fn insert_user(&mut self, user: &NewUser) -> Result<(), StoreError> {
        if self.state.users.values().any(|u| u.email_hash == user.email_hash) {
            return Err(StoreError::Duplicate(EMAIL_UNIQUE.into()));
        }
        if self.state.users.contains_key(&user.id) {
            return Err(StoreError::Duplicate("PRIMARY".into()));
        }
        self.clock += 1;
        self.state.users.insert(
            user.id.clone(),
            UserRow {
                id: user.id.clone(),
                name: user.name.clone(),
                email_encrypted: user.email_encrypted.clone(),
                email_hash: user.email_hash.clone(),
                password_hash: Some(user.password_hash.clone()),
                must_reset_password: false,
                created_at: 1_700_000_000 + self.clock,
                updated_at: 1_700_000_000 + self.clock,
                email_verified_at: None,
                totp: TotpRow::default(),
            },
        );
        Ok(())
    }
    fn user_by_id(&mut self, id: &str) -> Result<Option<UserRow>, StoreError> {
        self.reachable()?;
        Ok(self.state.users.get(id).cloned())
    }
    fn user_and_access_record(&mut self, id: &str, access_token_hash: &str) -> Result<Option<(UserRow, bool)>, StoreError> {
        let recorded = self.state.tokens.values().any(|(row, _)| {
            row.access_token_hash == access_token_hash && self.state.families.get(&row.family_id).is_some_and(|(user, _)| user == id)
        });
        Ok(self.state.users.get(id).cloned().map(|user| (user, recorded)))
    }
    fn user_by_email_hash(&mut self, email_hash: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(self.state.users.values().find(|u| u.email_hash == email_hash).cloned())
    }
    fn users_by_ids(&mut self, ids: &[String]) -> Result<Vec<UserRow>, StoreError> {
        Ok(ids.iter().filter_map(|id| self.state.users.get(id).cloned()).collect())
    }
    fn lock_user(&mut self, id: &str) -> Result<Option<UserRow>, StoreError> {
        self.reachable()?;
        if let Some(concurrent) = self.before_lock_user.take() {
            // Committed by the other request: a rollback of ours keeps it.
            concurrent(&mut self.state);
            if let Some(snapshot) = self.snapshot.as_mut() {
                concurrent(snapshot);
            }
        }
        Ok(self.state.users.get(id).cloned())
    }
    fn update_user(&mut self, id: &str, write: &UserWrite) -> Result<(), StoreError> {
        if self.state.users.values().any(|u| u.email_hash == write.email_hash && u.id != id) {
            return Err(StoreError::Duplicate(EMAIL_UNIQUE.into()));
        }
        self.clock += 1;
        let clock = self.clock;
        if let Some(user) = self.state.users.get_mut(id) {
            user.name = write.name.clone();
            user.email_encrypted = write.email_encrypted.clone();
            user.email_hash = write.email_hash.clone();
            user.password_hash = write.password_hash.clone();
            user.must_reset_password = write.must_reset_password;
            user.email_verified_at = write.email_verified_at;
            user.totp = write.totp.clone();
            user.updated_at = 1_700_000_000 + clock;
        }
        Ok(())
    }
    fn delete_user(&mut self, id: &str) -> Result<(), StoreError> {
        self.state.users.remove(id);
        self.state.families.retain(|_, (user, _)| user != id);
        self.state.tokens.retain(|_, (row, _)| row.user_id != id);
        self.state.one_time_tokens.retain(|_, (user, _)| user != id);
        Ok(())
    }

    fn replace_one_time_token(&mut self, kind: OneTimeKind, user_id: &str, token_hash: &str, _now: u64, expires_at: u64) -> Result<(), StoreError> {
        self.delete_one_time_tokens(kind, user_id)?;
        self.state.one_time_tokens.insert((kind, token_hash.to_owned()), (user_id.to_owned(), expires_at));
        Ok(())
    }
    fn delete_one_time_tokens(&mut self, kind: OneTimeKind, user_id: &str) -> Result<(), StoreError> {
        self.state.one_time_tokens.retain(|(k, _), (user, _)| *k != kind || user != user_id);
        Ok(())
    }
    fn take_one_time_token(&mut self, kind: OneTimeKind, token_hash: &str, now: u64) -> Result<Option<String>, StoreError> {
        match self.state.one_time_tokens.remove(&(kind, token_hash.to_owned())) {
            Some((user, expires_at)) if expires_at > now => Ok(Some(user)),
            _ => Ok(None),
        }
    }

    fn insert_family(&mut self, family_id: &str, user_id: &str, now: u64, origin: &SessionOrigin, first: &NewRefresh) -> Result<(), StoreError> {
        self.state.families.insert(family_id.to_owned(), (user_id.to_owned(), None));
        self.state.origins.insert(family_id.to_owned(), (now, origin.clone()));
        self.insert_refresh(first)
    }
    fn insert_refresh(&mut self, token: &NewRefresh) -> Result<(), StoreError> {
        self.state.tokens.insert(token.token_hash.clone(), (token.clone(), None));
        Ok(())
    }
    fn lock_refresh(&mut self, token_hash: &str) -> Result<Option<RefreshRow>, StoreError> {
        Ok(self.state.tokens.get(token_hash).map(|(row, rotated_at)| RefreshRow {
            token_hash: row.token_hash.clone(),
            family_id: row.family_id.clone(),
            user_id: row.user_id.clone(),
            expires_at: row.expires_at,
            rotated_at: *rotated_at,
            family_revoked: self.state.families.get(&row.family_id).is_none_or(|(_, r)| r.is_some()),
        }))
    }
    fn mark_rotated(&mut self, token_hash: &str, now: u64) -> Result<(), StoreError> {
        if let Some((_, rotated_at)) = self.state.tokens.get_mut(token_hash) {
            *rotated_at = Some(now);
        }
        Ok(())
    }
    fn revoke_family(&mut self, family_id: &str, _now: u64, reason: &'static str) -> Result<(), StoreError> {
        if let Some((_, revoked)) = self.state.families.get_mut(family_id) {
            revoked.get_or_insert(reason);
        }
        Ok(())
    }
    fn revoke_user_families(&mut self, user_id: &str, keep: Option<&str>, _now: u64, reason: &'static str) -> Result<(), StoreError> {
        for (family, (user, revoked)) in self.state.families.iter_mut() {
            if user == user_id && keep != Some(family.as_str()) {
                revoked.get_or_insert(reason);
            }
        }
        Ok(())
    }

    fn live_sessions(&mut self, user_id: &str, access_token_hash: &str, now: u64, limit: u32) -> Result<Vec<SessionRow>, StoreError> {
        let mut sessions: Vec<SessionRow> = Vec::new();
        for (id, (user, revoked)) in &self.state.families {
            let tokens: Vec<&NewRefresh> = self.state.tokens.values().map(|(row, _)| row).filter(|row| &row.family_id == id).collect();
            let (Some(last_used_at), Some(expires_at)) =
                (tokens.iter().map(|t| t.created_at).max(), tokens.iter().map(|t| t.expires_at).max())
            else {
                continue;
            };
            if user != user_id || revoked.is_some() || expires_at <= now {
                continue;
            }
            let (created_at, origin) = self.state.origins.get(id).cloned().unwrap_or_default();
            let current = tokens.iter().any(|t| t.access_token_hash == access_token_hash);
            sessions.push(SessionRow { id: id.clone(), created_at, last_used_at, expires_at, origin, current });
        }
        sessions.sort_by(|a, b| b.last_used_at.cmp(&a.last_used_at).then(b.id.cmp(&a.id)));
        sessions.truncate(limit as usize);
        Ok(sessions)
    }
    fn revoke_session(&mut self, user_id: &str, family_id: &str, _now: u64, reason: &'static str) -> Result<bool, StoreError> {
        match self.state.families.get_mut(family_id) {
            Some((user, revoked @ None)) if user == user_id => {
                *revoked = Some(reason);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn begin_check(&mut self, account: &str, address: &str, now: u64) -> Result<CheckStart, StoreError> {
        let live: Vec<_> = self.state.checks.values().filter(|c| c.2 + CHECK_EXPIRY_SECS > now).collect();
        let ahead = |key: &dyn Fn(&(String, String, u64)) -> bool| u32::try_from(live.iter().filter(|c| key(c)).count()).unwrap_or(u32::MAX);
        let account_ahead = ahead(&|c| c.0 == account);
        let address_ahead = ahead(&|c| c.1 == address);
        let id = self.state.checks.keys().next_back().map_or(1, |last| last + 1);
        self.state.checks.insert(id, (account.to_owned(), address.to_owned(), now));
        let counter = |scope: &'static str, key: &str| self.state.counters.get(&(scope, key.to_owned())).copied().unwrap_or_default();
        Ok(CheckStart { id, account: counter("account", account), address: counter("address", address), account_ahead, address_ahead })
    }
    fn end_check(&mut self, check: &CheckStart, account: &str, address: &str, now: u64, window: u64, outcome: Attempt) -> Result<(), StoreError> {
        self.state.checks.retain(|id, c| *id != check.id && c.2 + CHECK_EXPIRY_SECS > now);
        match outcome {
            Attempt::Failed => {
                self.count_failure("account", account, now, window);
                self.count_failure("address", address, now, window);
            }
            Attempt::Succeeded => {
                self.state.counters.remove(&("account", account.to_owned()));
            }
            Attempt::PasswordOnly | Attempt::Refused => {}
        }
        Ok(())
    }
    fn address_counter(&mut self, address: &str) -> Result<Counter, StoreError> {
        Ok(self.state.counters.get(&("address", address.to_owned())).copied().unwrap_or_default())
    }
    fn count_address_failure(&mut self, address: &str, now: u64, window: u64) -> Result<(), StoreError> {
        self.count_failure("address", address, now, window);
        Ok(())
    }

    fn count_service_call(&mut self, service: &str, window_start: u64) -> Result<u64, StoreError> {
        let count = self.state.service_calls.entry((service.to_owned(), window_start)).or_default();
        *count += 1;
        Ok(*count)
    }

    fn audit(&mut self, event: &AuditEvent) -> Result<(), StoreError> {
        self.state.audit.push(event.clone());
        Ok(())
    }
}
