//! What the domain needs from storage. `store::mysql` implements it on Spin's MySQL; the unit
//! tests use an in-memory fake. Times are Unix seconds.

/// A `client_auth` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub email_encrypted: String,
    pub email_hash: String,
    pub password_hash: Option<String>,
    pub must_reset_password: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the owner proved they read the current email (Unix seconds); None: not yet.
    pub email_verified_at: Option<i64>,
    pub totp: TotpRow,
}

/// A user's authenticator-app (TOTP) second factor, as stored; all empty when it has none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TotpRow {
    /// The shared secret (base32), sealed with the email keys and the user's id as context.
    pub secret_sealed: Option<String>,
    /// When the user proved their app holds the secret; None while only enrolled.
    pub enabled_at: Option<i64>,
    /// The last 30-second step whose code was accepted: each code works once.
    pub last_step: Option<i64>,
    /// SHA-256 (hex) of each recovery code not used yet.
    pub recovery_hashes: Vec<String>,
}

/// A user to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub id: String,
    pub name: String,
    pub email_encrypted: String,
    pub email_hash: String,
    pub password_hash: String,
}

/// The writable columns of a user, all written at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserWrite {
    pub name: String,
    pub email_encrypted: String,
    pub email_hash: String,
    pub password_hash: Option<String>,
    pub must_reset_password: bool,
    pub email_verified_at: Option<i64>,
    pub totp: TotpRow,
}

/// A refresh token with its family, as locked for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub token_hash: String,
    pub family_id: String,
    pub user_id: String,
    pub expires_at: u64,
    /// Set once the token has been exchanged for a successor.
    pub rotated_at: Option<u64>,
    pub family_revoked: bool,
}

/// A refresh token to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefresh {
    pub token_hash: String,
    pub family_id: String,
    pub user_id: String,
    /// The token this one replaces (the rotation chain); `None` for a family's first.
    pub parent_hash: Option<String>,
    /// SHA-256 (hex) of the access token issued with this refresh token: auth's record that it
    /// signed exactly that token ([`Store::user_and_access_record`]).
    pub access_token_hash: String,
    pub created_at: u64,
    pub expires_at: u64,
}

/// Where a session began: shown to its owner in the list of sessions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionOrigin {
    /// The client's IP address as auth saw it (after trusted proxies); `None` when unknown.
    pub client_address: Option<String>,
    /// The client's `User-Agent`, without control characters, at most 255 characters.
    pub user_agent: Option<String>,
}

/// A live session (refresh-token family) of a user, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub created_at: u64,
    /// When its newest refresh token was issued (the sign-in, or the last refresh).
    pub last_used_at: u64,
    /// When its newest refresh token expires.
    pub expires_at: u64,
    pub origin: SessionOrigin,
    /// One of its refresh tokens was issued with the access token that asks.
    pub current: bool,
}

/// Failure counters of one throttle key (all zero when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    pub failures: u32,
    pub window_started_at: u64,
    pub last_failure_at: u64,
}

/// A password check in flight, counted before it runs ([`Store::begin_check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckStart {
    /// Its `login_checks` row.
    pub id: u64,
    pub account: Counter,
    pub address: Counter,
    /// Checks of the same account, and from the same address, that began before this one and
    /// have not ended.
    pub account_ahead: u32,
    pub address_ahead: u32,
}

/// A check that never ended (its instance died) stops counting after this long. A check takes
/// well under a second.
pub const CHECK_EXPIRY_SECS: u64 = 60;

/// How a password check counted by [`Store::begin_check`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The password was wrong: a failure on both keys.
    Failed,
    /// The password was right (and the second factor, where the account has one): the
    /// account's consecutive failures end.
    Succeeded,
    /// The password was right, but the account's second factor was not asked (a change
    /// confirmed with the password): counted nowhere, and the account's streak stays, for it may
    /// hold wrong codes that a password alone must not wipe.
    PasswordOnly,
    /// Refused before any check (a limit was reached): counted nowhere, so refused attempts
    /// never prolong a wait.
    Refused,
}

/// Throttle scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Consecutive failures of one account (keyed by the email's blind index, so unknown emails
    /// are throttled exactly like known ones).
    Account,
    /// Failures from one client address in a fixed window.
    Address,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Address => "address",
        }
    }
}

/// One audit record. Never holds a password, a token or a plaintext email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// e.g. `register`, `login`, `login_throttled`, `refresh_reuse`, `service_read`.
    pub event: &'static str,
    pub success: bool,
    /// Why it failed, or a qualifier (`unknown_email`, `wrong_password`, `grace`...).
    pub reason: Option<&'static str>,
    /// `user:<id>`, `service:<name>` or `anonymous`.
    pub actor: String,
    /// The user the event is about.
    pub subject: Option<String>,
    /// The blind index of the email involved, when there is no user id (unknown email).
    pub email_hash: Option<String>,
    pub client_addr: String,
    /// Extra facts as compact JSON (e.g. the ids a service read).
    pub detail: Option<String>,
}

/// Storage failures, already free of secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A unique key refused the write; the constraint's name (`uq_client_auth_email_hash`,
    /// `PRIMARY`...).
    Duplicate(String),
    /// The database could not be reached.
    Unavailable(String),
    /// Anything else (already logged by the store with its context).
    Failed(String),
}

pub const EMAIL_UNIQUE: &str = "uq_client_auth_email_hash";

/// What a one-time token the mailer sends is for; each kind has its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OneTimeKind {
    /// `password_reset_tokens`: sets a new password (an hour).
    PasswordReset,
    /// `email_verification_tokens`: proves the account's owner reads its email (a day).
    EmailVerification,
}

pub trait Store {
    fn begin(&mut self) -> Result<(), StoreError>;
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Best effort; a failure is logged by the store.
    fn rollback(&mut self);

    // Users.
    fn insert_user(&mut self, user: &NewUser) -> Result<(), StoreError>;
    fn user_by_id(&mut self, id: &str) -> Result<Option<UserRow>, StoreError>;
    /// The user, and whether one of its refresh tokens records the access token whose SHA-256
    /// is `access_token_hash` (so auth issued exactly that token to exactly this user): one
    /// statement.
    fn user_and_access_record(&mut self, id: &str, access_token_hash: &str) -> Result<Option<(UserRow, bool)>, StoreError>;
    fn user_by_email_hash(&mut self, email_hash: &str) -> Result<Option<UserRow>, StoreError>;
    /// The users among `ids` that exist (any order).
    fn users_by_ids(&mut self, ids: &[String]) -> Result<Vec<UserRow>, StoreError>;
    /// The user, locked until the transaction ends (`FOR UPDATE`): what a write is based on, so
    /// that no change committed meanwhile is overwritten with a value read before it.
    fn lock_user(&mut self, id: &str) -> Result<Option<UserRow>, StoreError>;
    fn update_user(&mut self, id: &str, write: &UserWrite) -> Result<(), StoreError>;
    /// Deletes the user; refresh tokens go with it.
    fn delete_user(&mut self, id: &str) -> Result<(), StoreError>;

    // Refresh tokens.
    /// A new family with its first token.
    fn insert_family(&mut self, family_id: &str, user_id: &str, now: u64, origin: &SessionOrigin, first: &NewRefresh) -> Result<(), StoreError>;
    fn insert_refresh(&mut self, token: &NewRefresh) -> Result<(), StoreError>;
    /// The token and its family's state, locked until commit (`FOR UPDATE`).
    fn lock_refresh(&mut self, token_hash: &str) -> Result<Option<RefreshRow>, StoreError>;
    fn mark_rotated(&mut self, token_hash: &str, now: u64) -> Result<(), StoreError>;
    fn revoke_family(&mut self, family_id: &str, now: u64, reason: &'static str) -> Result<(), StoreError>;
    /// Revokes every live family of the user but `keep` (a session that signs the others out).
    fn revoke_user_families(&mut self, user_id: &str, keep: Option<&str>, now: u64, reason: &'static str) -> Result<(), StoreError>;
    /// The user's live sessions: families not revoked whose newest token has not expired at
    /// `now`, the most recently used first, at most `limit`. `current`: the family that
    /// recorded the access token whose SHA-256 is `access_token_hash`.
    fn live_sessions(&mut self, user_id: &str, access_token_hash: &str, now: u64, limit: u32) -> Result<Vec<SessionRow>, StoreError>;
    /// Revokes the user's family `family_id` (locking it first); false when the user has no
    /// unrevoked family by that id.
    fn revoke_session(&mut self, user_id: &str, family_id: &str, now: u64, reason: &'static str) -> Result<bool, StoreError>;

    // One-time tokens the mailer sends (password resets, email verifications).
    /// Stores a token (its SHA-256) of this kind for the user, deleting the user's older ones.
    fn replace_one_time_token(&mut self, kind: OneTimeKind, user_id: &str, token_hash: &str, now: u64, expires_at: u64) -> Result<(), StoreError>;
    /// The user of an unexpired token of this kind, which is deleted (each works once); None for
    /// a token unknown, expired or already used. Call it in the transaction that uses it.
    fn take_one_time_token(&mut self, kind: OneTimeKind, token_hash: &str, now: u64) -> Result<Option<String>, StoreError>;
    /// Deletes the user's tokens of this kind: one mailed before a password or email change
    /// must not outlive it.
    fn delete_one_time_tokens(&mut self, kind: OneTimeKind, user_id: &str) -> Result<(), StoreError>;

    // Login throttling.
    /// Counts a password check on `account` from `address` as in flight before it runs, and
    /// returns both keys' counters with the checks that began before it and have not ended
    /// (those begun `CHECK_EXPIRY_SECS` ago or more are not counted). Every check is ended
    /// with [`Store::end_check`].
    fn begin_check(&mut self, account: &str, address: &str, now: u64) -> Result<CheckStart, StoreError>;
    /// Ends a check. A failure is added to both keys: the account's count restarts when it has
    /// none or its last failure is `window` old or more, the address's when its window started
    /// `window` ago or more. A success ends the account's consecutive failures.
    fn end_check(&mut self, check: &CheckStart, account: &str, address: &str, now: u64, window: u64, outcome: Attempt) -> Result<(), StoreError>;
    /// The address's counter alone (a registration, which checks no password).
    fn address_counter(&mut self, address: &str) -> Result<Counter, StoreError>;
    /// Adds a failure to the address alone (a registration refused as the email is taken).
    fn count_address_failure(&mut self, address: &str, now: u64, window: u64) -> Result<(), StoreError>;

    // Service rate limit.
    /// Counts one call of `service` in the window starting at `window_start`; returns the count
    /// so far, this call included.
    fn count_service_call(&mut self, service: &str, window_start: u64) -> Result<u64, StoreError>;

    fn audit(&mut self, event: &AuditEvent) -> Result<(), StoreError>;
}
