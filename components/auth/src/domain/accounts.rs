//! Accounts and sessions: register, login, refresh, logout, profile, password, deletion, and
//! the service reads the customer component makes.

use sealed_email::NormalizedEmail;
use tokens::{AccessTokenToCheck, IssuedToken, RefreshToken, TrustedServiceKeys, VerifyError};

use super::fields::Name;
use super::ids::{is_plausible_user_id, new_user_id};
use super::mfa::{self, SecondFactor};
use super::password::{self, Password, Verified};
use super::ports::{
    Attempt, AuditEvent, CheckStart, Counter, EMAIL_UNIQUE, NewRefresh, NewUser, OneTimeKind, RefreshRow, SessionRow, Store, StoreError,
    UserRow, UserWrite,
};
use super::{Crypto, Ctx, Settings};
use crate::error::{Error, FieldError};

/// Most ids in one batch read.
pub const MAX_BATCH_IDS: usize = 100;

/// A user as the API shows it. Never a password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
    /// The owner proved they read this email (a verification token the mailer sent).
    pub email_verified: bool,
    /// A login needs a second factor (an authenticator app's code) after the password.
    pub mfa_enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What register, login and refresh return.
#[derive(Debug)]
pub struct Session {
    pub user: User,
    pub access: IssuedToken,
    pub refresh: RefreshToken,
}

pub struct Registration {
    pub name: Name,
    pub email: NormalizedEmail,
    pub password: Password,
}

pub struct Credentials {
    pub email: NormalizedEmail,
    pub password: Password,
    /// A code from the authenticator app, or a recovery code: needed once the user turned on
    /// a second factor, ignored otherwise.
    pub second_factor: Option<SecondFactor>,
}

/// `PATCH /users/me`: at least one of name and email.
pub struct ProfileChange {
    pub name: Option<Name>,
    pub email: Option<NormalizedEmail>,
    pub current_password: Option<Password>,
}

/// Who is calling a user-reading endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A service proven by its service token (`customer`).
    Service(String),
    /// A user with an access token: may read only its own id.
    User(String),
}

// ---- helpers -----------------------------------------------------------------------------------

pub(super) fn event(event: &'static str, success: bool, reason: Option<&'static str>, ctx: &Ctx) -> AuditEvent {
    AuditEvent {
        event,
        success,
        reason,
        actor: "anonymous".into(),
        subject: None,
        email_hash: None,
        client_addr: ctx.client_addr.clone(),
        detail: None,
    }
}

pub(super) fn user_event(name: &'static str, success: bool, reason: Option<&'static str>, ctx: &Ctx, user_id: &str) -> AuditEvent {
    AuditEvent {
        actor: format!("user:{user_id}"),
        subject: Some(user_id.to_owned()),
        ..event(name, success, reason, ctx)
    }
}

/// Runs `f` inside START TRANSACTION / COMMIT; rolls back when it fails.
pub(super) fn in_transaction<S: Store, T>(store: &mut S, f: impl FnOnce(&mut S) -> Result<T, Error>) -> Result<T, Error> {
    store.begin()?;
    match f(store) {
        Ok(value) => {
            store.commit()?;
            Ok(value)
        }
        Err(err) => {
            store.rollback();
            Err(err)
        }
    }
}

/// The API view of a row: the email opened with the row's id as context.
pub fn to_user(crypto: &Crypto, row: &UserRow) -> Result<User, Error> {
    let email = crypto
        .email
        .open_with_aad(&row.email_encrypted, row.id.as_bytes())
        .map_err(|err| Error::internal(&format!("the email of user {} does not open", row.id), &err))?;
    Ok(User {
        id: row.id.clone(),
        name: row.name.clone(),
        email,
        email_verified: row.email_verified_at.is_some(),
        mfa_enabled: row.totp.enabled_at.is_some(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn issue_access(crypto: &Crypto, ctx: &Ctx, user_id: &str) -> Result<IssuedToken, Error> {
    crypto
        .signing
        .issue_access_token(&crypto.access, user_id, ctx.now)
        .map_err(|err| Error::internal("issuing an access token", &err))
}

/// A new refresh token of `family_id`, recording `access` (the access token issued with it).
fn new_refresh(settings: &Settings, ctx: &Ctx, family_id: &str, user_id: &str, parent: Option<&str>, access: &IssuedToken) -> (RefreshToken, NewRefresh) {
    let token = RefreshToken::generate();
    let row = NewRefresh {
        token_hash: token.hash(),
        family_id: family_id.to_owned(),
        user_id: user_id.to_owned(),
        parent_hash: parent.map(str::to_owned),
        access_token_hash: access.digest(),
        created_at: ctx.now,
        expires_at: ctx.now + settings.refresh_ttl_secs,
    };
    (token, row)
}

/// Starts a refresh-token family for `user_id` and writes `audit`, in one transaction with
/// `prepare`, which gives the user's row (and may refuse, or write to it first).
fn start_session<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    settings: &Settings,
    ctx: &Ctx,
    user_id: &str,
    audit: AuditEvent,
    prepare: impl FnOnce(&mut S) -> Result<UserRow, Error>,
) -> Result<Session, Error> {
    let family_id = new_user_id(ctx.now_ms)?;
    let access = issue_access(crypto, ctx, user_id)?;
    let (refresh, row) = new_refresh(settings, ctx, &family_id, user_id, None, &access);
    let user_row = in_transaction(store, |store| {
        let user_row = prepare(store)?;
        store.insert_family(&family_id, user_id, ctx.now, &ctx.session_origin(), &row)?;
        store.audit(&audit)?;
        Ok(user_row)
    })?;
    let user = to_user(crypto, &user_row)?;
    Ok(Session { user, access, refresh })
}

/// The user's row, locked until the transaction ends, provided its password hash is still the
/// one a password was just checked against: a password change committed since then wins. It is
/// neither undone by this request's write nor outlived by a session this request would start.
pub(super) fn lock_confirmed<S: Store>(store: &mut S, checked: &UserRow) -> Result<UserRow, Error> {
    match store.lock_user(&checked.id)? {
        None => Err(Error::InvalidToken),
        Some(locked) if locked.password_hash != checked.password_hash => Err(Error::WrongPassword),
        Some(locked) => Ok(locked),
    }
}

/// Audits a change that lost to a password change committed since its check
/// ([`lock_confirmed`]'s `WrongPassword`): `action` failed, reason `password_changed`.
pub(super) fn audit_if_outrun<S: Store>(store: &mut S, ctx: &Ctx, user_id: &str, action: &'static str, result: Result<(), Error>) -> Result<(), Error> {
    if result == Err(Error::WrongPassword) {
        store.audit(&user_event(action, false, Some("password_changed"), ctx, user_id))?;
    }
    result
}

/// Seconds to wait when either key's settled failures have reached its limit, else `None`.
fn throttle_wait(account: Counter, address: Counter, settings: &Settings, now: u64) -> Option<u64> {
    let window = settings.throttle_window_secs;
    let account_wait = Some(account)
        .filter(|c| c.failures >= settings.account_max_failures)
        .map(|c| (c.last_failure_at + window).saturating_sub(now));
    let address_wait = Some(address)
        .filter(|c| c.failures >= settings.address_max_failures)
        .map(|c| (c.window_started_at + window).saturating_sub(now));
    account_wait.into_iter().chain(address_wait).filter(|wait| *wait > 0).max()
}

/// `Retry-After` when the checks in flight fill what the settled failures leave: they end in
/// well under a second.
const IN_FLIGHT_RETRY_SECS: u64 = 1;

/// A password check counted against the throttle before it runs.
struct CountedAttempt<'a> {
    check: CheckStart,
    account: &'a str,
    address: String,
}

impl<'a> CountedAttempt<'a> {
    /// Counts a check on `account` from this client before it runs, so that concurrent checks
    /// see each other: however many arrive at once, the failures and the checks ahead in flight
    /// together never pass a limit. `Err(retry_after)` when they would; that attempt is then
    /// counted nowhere. Its wait is the window's when recorded failures reached the limit, and
    /// a second when checks in flight fill the rest (they may all succeed).
    fn reserve<S: Store>(store: &mut S, settings: &Settings, ctx: &Ctx, account: &'a str) -> Result<Result<Self, u64>, Error> {
        let address = ctx.throttle_address();
        let check = store.begin_check(account, &address, ctx.now)?;
        let attempt = CountedAttempt { check, account, address };
        let window = settings.throttle_window_secs;
        // Failures still counting: an account's streak ends a window after its last failure,
        // an address's count a window after its window started.
        let live = |c: Counter, since: u64| if ctx.now.saturating_sub(since) < window { c.failures } else { 0 };
        let full = |c: Counter, since: u64, ahead: u32, max: u32| live(c, since).saturating_add(ahead) >= max;
        let retry_after = throttle_wait(check.account, check.address, settings, ctx.now).or_else(|| {
            let account_full =
                full(check.account, check.account.last_failure_at, check.account_ahead, settings.account_max_failures);
            let address_full =
                full(check.address, check.address.window_started_at, check.address_ahead, settings.address_max_failures);
            (account_full || address_full).then_some(IN_FLIGHT_RETRY_SECS)
        });
        match retry_after {
            None => Ok(Ok(attempt)),
            Some(retry_after) => {
                attempt.settle(store, settings, ctx, Attempt::Refused)?;
                Ok(Err(retry_after))
            }
        }
    }

    fn settle<S: Store>(&self, store: &mut S, settings: &Settings, ctx: &Ctx, outcome: Attempt) -> Result<(), Error> {
        Ok(store.end_check(&self.check, self.account, &self.address, ctx.now, settings.throttle_window_secs, outcome)?)
    }
}

/// Checks a password of a signed-in user who confirms a sensitive change: throttled like a
/// login on the same account, and a wrong one counts as a failure. `second_factor` is the
/// check of a second factor given with it (`None` when none is asked): `Some(false)` (a wrong
/// code) is a failure of the same attempt (403 `wrong_mfa_code`), so codes cannot be guessed
/// faster than passwords. A right password with no code asked does not end the account's streak
/// when it has a confirmed factor: else a password holder could guess codes at login and wipe
/// the failures with a change confirmed by the password alone.
pub(super) fn reauthenticate<S: Store>(
    store: &mut S,
    settings: &Settings,
    ctx: &Ctx,
    user: &UserRow,
    password: &Password,
    (action, second_factor): (&'static str, Option<bool>),
) -> Result<Verified, Error> {
    let attempt = match CountedAttempt::reserve(store, settings, ctx, &user.email_hash)? {
        Ok(attempt) => attempt,
        Err(retry_after) => {
            store.audit(&user_event(action, false, Some("throttled"), ctx, &user.id))?;
            return Err(Error::Throttled { retry_after });
        }
    };
    let verified = password::verify(password, user.password_hash.as_deref())?;
    let refused = match verified {
        Verified::Mismatch => Some(("wrong_password", Error::WrongPassword)),
        _ if second_factor == Some(false) => Some(("wrong_mfa_code", Error::WrongMfaCode)),
        _ => None,
    };
    match refused {
        Some((reason, err)) => {
            attempt.settle(store, settings, ctx, Attempt::Failed)?;
            store.audit(&user_event(action, false, Some(reason), ctx, &user.id))?;
            Err(err)
        }
        None => {
            let outcome = match (user.totp.enabled_at, second_factor) {
                (Some(_), None) => Attempt::PasswordOnly,
                _ => Attempt::Succeeded,
            };
            attempt.settle(store, settings, ctx, outcome)?;
            Ok(verified)
        }
    }
}

pub(super) fn write_of(user: &UserRow) -> UserWrite {
    UserWrite {
        name: user.name.clone(),
        email_encrypted: user.email_encrypted.clone(),
        email_hash: user.email_hash.clone(),
        password_hash: user.password_hash.clone(),
        must_reset_password: user.must_reset_password,
        email_verified_at: user.email_verified_at,
        totp: user.totp.clone(),
    }
}

/// Re-seals the stored email with the active key when it was sealed with an older one.
pub(super) fn reseal_if_needed(crypto: &Crypto, user: &UserRow, write: &mut UserWrite) -> Result<bool, Error> {
    if !crypto.email.needs_reseal(&user.email_encrypted) {
        return Ok(false);
    }
    let email = to_user(crypto, user)?.email;
    let email = sealed_email::normalize_email(&email)
        .map_err(|err| Error::internal(&format!("the stored email of user {} is not valid", user.id), &err))?;
    write.email_encrypted = crypto.email.seal_with_aad(&email, user.id.as_bytes());
    Ok(true)
}

pub(super) fn current_user<S: Store>(store: &mut S, user_id: &str) -> Result<UserRow, Error> {
    // A valid token whose user has been deleted is no longer a credential.
    store.user_by_id(user_id)?.ok_or(Error::InvalidToken)
}

// ---- registration and sign-in ------------------------------------------------------------------

/// `POST /auth/register`: 201 with a session, 409 when the email is taken.
///
/// A 409 tells whether an email is registered, so it counts as a failure from the client's
/// address, as an unknown email does at login: an address over its limit gets 429 here too, and
/// cannot find registered emails through registration faster than through login.
pub fn register<S: Store>(store: &mut S, crypto: &Crypto, settings: &Settings, ctx: &Ctx, input: Registration) -> Result<Session, Error> {
    let email_hash = crypto.email.blind_index(&input.email);
    let address = ctx.throttle_address();
    if let Some(retry_after) = throttle_wait(Counter::default(), store.address_counter(&address)?, settings, ctx.now) {
        let mut audit = event("register", false, Some("throttled"), ctx);
        audit.email_hash = Some(email_hash);
        store.audit(&audit)?;
        return Err(Error::Throttled { retry_after });
    }
    let taken = |store: &mut S| -> Result<Error, Error> {
        store.count_address_failure(&address, ctx.now, settings.throttle_window_secs)?;
        let mut audit = event("register", false, Some("email_taken"), ctx);
        audit.email_hash = Some(email_hash.clone());
        store.audit(&audit)?;
        Ok(Error::EmailTaken)
    };
    // Cheap early answer; the unique key below is what really decides under concurrency.
    if store.user_by_email_hash(&email_hash)?.is_some() {
        return Err(taken(store)?);
    }
    let password_hash = password::hash(&input.password)?;
    let id = new_user_id(ctx.now_ms)?;
    let user = NewUser {
        email_encrypted: crypto.email.seal_with_aad(&input.email, id.as_bytes()),
        email_hash: email_hash.clone(),
        name: input.name.as_str().to_owned(),
        password_hash,
        id,
    };
    let family_id = new_user_id(ctx.now_ms)?;
    let access = issue_access(crypto, ctx, &user.id)?;
    let (refresh, first) = new_refresh(settings, ctx, &family_id, &user.id, None, &access);
    // The row is read back before COMMIT: once committed, the answer must not depend on
    // another statement (a database lost after the commit would turn a stored account into a 503).
    let inserted = in_transaction(store, |store| {
        store.insert_user(&user).map_err(|err| match err {
            StoreError::Duplicate(constraint) if constraint == EMAIL_UNIQUE => Error::EmailTaken,
            other => Error::from(other),
        })?;
        store.insert_family(&family_id, &user.id, ctx.now, &ctx.session_origin(), &first)?;
        store.audit(&user_event("register", true, None, ctx, &user.id))?;
        store
            .user_by_id(&user.id)?
            .ok_or_else(|| Error::internal("register", &"the new user is not readable in its own transaction"))
    });
    let row = match inserted {
        Err(Error::EmailTaken) => return Err(taken(store)?),
        other => other?,
    };
    let user = to_user(crypto, &row)?;
    Ok(Session { user, access, refresh })
}

/// `POST /auth/login`: one identical 401 for an unknown email and a wrong password, at the
/// same cost; 429 while the account or the address is throttled.
pub fn login<S: Store>(store: &mut S, crypto: &Crypto, settings: &Settings, ctx: &Ctx, input: Credentials) -> Result<Session, Error> {
    let email_hash = crypto.email.blind_index(&input.email);
    let attempt = match CountedAttempt::reserve(store, settings, ctx, &email_hash)? {
        Ok(attempt) => attempt,
        Err(retry_after) => {
            let mut audit = event("login_throttled", false, Some("throttled"), ctx);
            audit.email_hash = Some(email_hash);
            store.audit(&audit)?;
            return Err(Error::Throttled { retry_after });
        }
    };
    let row = store.user_by_email_hash(&email_hash)?;
    let verified = password::verify(&input.password, row.as_ref().and_then(|u| u.password_hash.as_deref()))?;
    let row = match (row, verified) {
        (Some(row), Verified::Ok | Verified::OkNeedsRehash) => row,
        (row, _) => {
            attempt.settle(store, settings, ctx, Attempt::Failed)?;
            let reason = match &row {
                None => "unknown_email",
                Some(user) if user.password_hash.is_none() => "password_reset_required",
                Some(_) => "wrong_password",
            };
            let mut audit = event("login", false, Some(reason), ctx);
            audit.subject = row.map(|user| user.id);
            audit.email_hash = Some(email_hash);
            store.audit(&audit)?;
            return Err(Error::InvalidCredentials);
        }
    };
    // The second factor, once the password is right (so only the password's owner learns that
    // one is needed). Missing: counted nowhere; wrong: a failure, as a wrong password is.
    let matched = match (row.totp.enabled_at, &input.second_factor) {
        (None, _) => None,
        (Some(_), None) => {
            attempt.settle(store, settings, ctx, Attempt::Refused)?;
            store.audit(&user_event("login", false, Some("mfa_required"), ctx, &row.id))?;
            return Err(Error::MfaRequired);
        }
        (Some(_), Some(factor)) => match mfa::check(crypto, &row, factor, ctx.now)? {
            Some(matched) => Some(matched),
            None => {
                attempt.settle(store, settings, ctx, Attempt::Failed)?;
                store.audit(&user_event("login", false, Some("wrong_mfa_code"), ctx, &row.id))?;
                return Err(Error::InvalidMfaCode);
            }
        },
    };
    attempt.settle(store, settings, ctx, Attempt::Succeeded)?;
    let rehash = match verified {
        Verified::OkNeedsRehash => Some(password::hash(&input.password)?),
        _ => None,
    };
    let reason = match (&matched, &rehash) {
        (Some(mfa::Matched::Recovery(_)), _) => Some("recovery_code"),
        (_, Some(_)) => Some("rehashed"),
        _ => None,
    };
    let audit = user_event("login", true, reason, ctx, &row.id);
    let session = start_session(store, crypto, settings, ctx, &row.id, audit, |store| {
        // A password changed (or the account deleted) since the check: no session, as for a
        // wrong password.
        let locked = lock_confirmed(store, &row).map_err(|err| match err {
            Error::WrongPassword | Error::InvalidToken => Error::InvalidCredentials,
            other => other,
        })?;
        let mut write = write_of(&locked);
        let resealed = reseal_if_needed(crypto, &locked, &mut write)?;
        let rehashed = rehash.is_some();
        if let Some(hash) = rehash {
            write.password_hash = Some(hash);
        }
        match &matched {
            // Turned on since the password was checked: the code is needed after all.
            None if locked.totp.enabled_at.is_some() => return Err(Error::MfaRequired),
            None => {}
            // The second factor changed meanwhile (turned off, or this code spent by another
            // request): refused as a wrong code.
            Some(_) if locked.totp.secret_sealed != row.totp.secret_sealed => return Err(Error::InvalidMfaCode),
            Some(matched) => mfa::spend(&locked, &mut write, matched)?,
        }
        if !resealed && !rehashed && matched.is_none() {
            return Ok(locked);
        }
        store.update_user(&locked.id, &write)?;
        Ok(store.user_by_id(&locked.id)?.unwrap_or(locked))
    });
    match &session {
        Err(Error::InvalidCredentials) => store.audit(&user_event("login", false, Some("password_changed"), ctx, &row.id))?,
        Err(Error::InvalidMfaCode) => store.audit(&user_event("login", false, Some("mfa_code_spent"), ctx, &row.id))?,
        Err(Error::MfaRequired) => store.audit(&user_event("login", false, Some("mfa_required"), ctx, &row.id))?,
        _ => {}
    }
    session
}

// ---- refresh tokens ----------------------------------------------------------------------------

// One value per refresh, moved once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Rotation {
    Rotated { user: UserRow, refresh: RefreshToken, access: IssuedToken },
    Refused,
}

/// `POST /auth/refresh`: exchanges a refresh token for a new pair. A token already exchanged
/// more than the grace window ago is reuse: its whole family is revoked.
pub fn refresh<S: Store>(store: &mut S, crypto: &Crypto, settings: &Settings, ctx: &Ctx, token: &RefreshToken) -> Result<Session, Error> {
    let hash = token.hash();
    let rotation = in_transaction(store, |store| {
        let Some(row) = store.lock_refresh(&hash)? else {
            store.audit(&event("refresh", false, Some("unknown_token"), ctx))?;
            return Ok(Rotation::Refused);
        };
        let refuse = |store: &mut S, row: &RefreshRow, reason: &'static str| -> Result<Rotation, Error> {
            store.audit(&user_event("refresh", false, Some(reason), ctx, &row.user_id))?;
            Ok(Rotation::Refused)
        };
        if row.family_revoked {
            return refuse(store, &row, "revoked");
        }
        if row.expires_at <= ctx.now {
            return refuse(store, &row, "expired");
        }
        let mut reason = None;
        match row.rotated_at {
            // Times are whole seconds, so `<`: a token rotated at 100.9 s (stored 100) and presented at
            // 110.0 s is reuse, never more than the window late; and a window of 0 means none.
            Some(rotated_at) if ctx.now.saturating_sub(rotated_at) < settings.refresh_grace_secs => {
                // A concurrent refresh from the same client: a sibling successor, same family.
                reason = Some("grace");
            }
            Some(_) => {
                store.revoke_family(&row.family_id, ctx.now, "reuse")?;
                let mut audit = user_event("refresh_reuse", false, Some("reuse"), ctx, &row.user_id);
                audit.detail = Some(serde_json::json!({ "family_id": row.family_id }).to_string());
                store.audit(&audit)?;
                return Ok(Rotation::Refused);
            }
            None => store.mark_rotated(&hash, ctx.now)?,
        }
        let Some(user) = store.user_by_id(&row.user_id)? else {
            return refuse(store, &row, "no_user");
        };
        let access = issue_access(crypto, ctx, &row.user_id)?;
        let (refresh, next) = new_refresh(settings, ctx, &row.family_id, &row.user_id, Some(&hash), &access);
        store.insert_refresh(&next)?;
        store.audit(&user_event("refresh", true, reason, ctx, &row.user_id))?;
        Ok(Rotation::Rotated { user, refresh, access })
    })?;
    match rotation {
        Rotation::Rotated { user, refresh, access } => {
            let user = to_user(crypto, &user)?;
            Ok(Session { user, access, refresh })
        }
        Rotation::Refused => Err(Error::InvalidRefreshToken),
    }
}

/// Which sessions a logout ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// The token's own session (family): the default.
    Session,
    /// Every other session of the user; this one stays ("sign out everywhere else").
    Others,
    /// Every session of the user, this one included.
    All,
}

impl LogoutScope {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "session" => Some(Self::Session),
            "others" => Some(Self::Others),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Others => "others",
            Self::All => "all",
        }
    }
}

/// `POST /auth/logout`: revokes the token's session, the user's other sessions, or all of them.
/// Always succeeds for the caller (an unknown or already revoked token has nothing left to
/// revoke, and names no user whose other sessions it could end).
///
/// Ending other sessions takes the session's current token, unexpired: an old rotated or expired
/// token (what a thief may have kept) ends at most its own session, as it always could.
pub fn logout<S: Store>(store: &mut S, ctx: &Ctx, token: &RefreshToken, scope: LogoutScope) -> Result<(), Error> {
    let hash = token.hash();
    in_transaction(store, |store| {
        if let Some(row) = store.lock_refresh(&hash)?
            && !row.family_revoked
        {
            let current = row.rotated_at.is_none() && row.expires_at > ctx.now;
            let scope = if current { scope } else { LogoutScope::Session };
            match scope {
                LogoutScope::Session => store.revoke_family(&row.family_id, ctx.now, "logout")?,
                LogoutScope::Others => store.revoke_user_families(&row.user_id, Some(&row.family_id), ctx.now, "logout_others")?,
                LogoutScope::All => store.revoke_user_families(&row.user_id, None, ctx.now, "logout_all")?,
            }
            let mut audit = user_event("logout", true, None, ctx, &row.user_id);
            if scope != LogoutScope::Session {
                audit.detail = Some(serde_json::json!({ "scope": scope.as_str() }).to_string());
            }
            store.audit(&audit)?;
        }
        Ok(())
    })
}

// ---- the signed-in user ------------------------------------------------------------------------

/// The user id of a bearer access token (`Authorization: Bearer <token>`).
pub fn authenticate_user(crypto: &Crypto, ctx: &Ctx, bearer: Option<&str>) -> Result<String, Error> {
    let token = bearer.ok_or(Error::MissingToken)?;
    crypto
        .signing
        .verify_access_token(token, &crypto.access, ctx.now)
        .map(|claims| claims.subject)
        .map_err(refused)
}

/// A refused access token: logged with the reason, answered with one 401 whatever it is.
fn refused(err: VerifyError) -> Error {
    telemetry::info("access token refused", &[("reason", err.to_string().into())]);
    Error::InvalidToken
}

/// Every check of a bearer access token but its signature (no database needed): what
/// [`me`] takes.
pub fn check_access_token<'a>(crypto: &'a Crypto, ctx: &Ctx, bearer: Option<&'a str>) -> Result<AccessTokenToCheck<'a>, Error> {
    let token = bearer.ok_or(Error::MissingToken)?;
    crypto.signing.check_access_token_claims(token, &crypto.access, ctx.now).map_err(refused)
}

/// `GET /users/me`, the read every client makes on every page. The user is read in the
/// statement that also looks for auth's record of the token (written in the transaction that
/// issued it): a recorded token needs no Ed25519 verification (0.15 ms in wasm); any other
/// token is verified, even when its user is gone, so that a forged token learns nothing.
pub fn me<S: Store>(store: &mut S, crypto: &Crypto, token: AccessTokenToCheck<'_>) -> Result<User, Error> {
    let found = store.user_and_access_record(token.subject(), &token.digest())?;
    let _claims = match &found {
        Some((_, true)) => token.recorded(),
        _ => token.verify_signature().map_err(refused)?,
    };
    // A valid token whose user has been deleted is no longer a credential.
    let (row, _) = found.ok_or(Error::InvalidToken)?;
    to_user(crypto, &row)
}

/// Most sessions one list shows (the most recently used).
pub const MAX_LISTED_SESSIONS: u32 = 100;

/// `GET /users/me/sessions`: the caller's live sessions, the one asking marked `current`. Its
/// token is verified by signature (a list of where one is signed in is worth the 0.15 ms), and a
/// token whose user is gone is refused, as on `/users/me`.
pub fn sessions<S: Store>(store: &mut S, ctx: &Ctx, token: AccessTokenToCheck<'_>) -> Result<Vec<SessionRow>, Error> {
    let digest = token.digest();
    let user_id = token.verify_signature().map_err(refused)?.subject;
    current_user(store, &user_id)?;
    Ok(store.live_sessions(&user_id, &digest, ctx.now, MAX_LISTED_SESSIONS)?)
}

/// `DELETE /users/me/sessions/{id}`: ends one of the caller's sessions (any, the asking one
/// included), as logout ends the session of a refresh token. Another user's session, a revoked
/// one or an id that names none: 404 alike.
pub fn revoke_session<S: Store>(store: &mut S, ctx: &Ctx, user_id: &str, session_id: &str) -> Result<(), Error> {
    if session_id.len() != 36 || !session_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(Error::SessionNotFound);
    }
    in_transaction(store, |store| {
        current_user(store, user_id)?;
        if !store.revoke_session(user_id, session_id, ctx.now, "session_revoked")? {
            return Err(Error::SessionNotFound);
        }
        let mut audit = user_event("session_revoke", true, None, ctx, user_id);
        audit.detail = Some(serde_json::json!({ "session": session_id }).to_string());
        store.audit(&audit)?;
        Ok(())
    })
}

/// `PATCH /users/me`: name and/or email; changing the email needs the current password.
pub fn update_profile<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    settings: &Settings,
    ctx: &Ctx,
    user_id: &str,
    change: ProfileChange,
) -> Result<User, Error> {
    let row = current_user(store, user_id)?;
    let current = to_user(crypto, &row)?;
    let new_email = change.email.filter(|email| email.as_str() != current.email);
    if new_email.is_some() && change.current_password.is_none() {
        return Err(Error::field("current_password", "required", "is required to change the email"));
    }
    if let Some(password) = &change.current_password {
        reauthenticate(store, settings, ctx, &row, password, ("profile_change", None))?;
    }
    let new_name = change.name.map(|name| name.as_str().to_owned()).filter(|name| *name != row.name);
    let sealed_email = new_email.map(|email| (crypto.email.blind_index(&email), crypto.email.seal_with_aad(&email, row.id.as_bytes())));
    if new_name.is_none() && sealed_email.is_none() && !crypto.email.needs_reseal(&row.email_encrypted) {
        return Ok(current);
    }
    let email_changes = sealed_email.is_some();
    // Read back inside the transaction, as in `register`: a committed change is answered 200.
    let updated = in_transaction(store, |store| {
        // Written over the row as it is now: what another request committed since our read (a
        // password change, above all) is kept, not overwritten with the value we read.
        let locked = match &change.current_password {
            Some(_) => lock_confirmed(store, &row)?,
            None => store.lock_user(&row.id)?.ok_or(Error::InvalidToken)?,
        };
        let mut write = write_of(&locked);
        if let Some(name) = &new_name {
            write.name = name.clone();
        }
        match sealed_email {
            Some((hash, sealed)) => {
                write.email_hash = hash;
                write.email_encrypted = sealed;
                // Verified was said of the old address.
                write.email_verified_at = None;
            }
            None => {
                reseal_if_needed(crypto, &locked, &mut write)?;
            }
        }
        store.update_user(&row.id, &write).map_err(|err| match err {
            StoreError::Duplicate(constraint) if constraint == EMAIL_UNIQUE => Error::EmailTaken,
            other => Error::from(other),
        })?;
        if new_name.is_some() {
            store.audit(&user_event("profile_change", true, Some("name"), ctx, &row.id))?;
        }
        if email_changes {
            // A reset token mailed to the old address no longer reaches the account's owner, and
            // a verification mailed there proves nothing about the new one.
            store.delete_one_time_tokens(OneTimeKind::PasswordReset, &row.id)?;
            store.delete_one_time_tokens(OneTimeKind::EmailVerification, &row.id)?;
            store.audit(&user_event("email_change", true, None, ctx, &row.id))?;
        }
        current_user(store, &row.id)
    })
    .or_else(|err| {
        match err {
            Error::EmailTaken => store.audit(&user_event("email_change", false, Some("email_taken"), ctx, &row.id))?,
            Error::WrongPassword => store.audit(&user_event("profile_change", false, Some("password_changed"), ctx, &row.id))?,
            _ => {}
        }
        Err(err)
    })?;
    to_user(crypto, &updated)
}

/// `PUT /users/me/password`: revokes every refresh token of the user.
pub fn change_password<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    settings: &Settings,
    ctx: &Ctx,
    user_id: &str,
    current: &Password,
    new: &Password,
) -> Result<(), Error> {
    let row = current_user(store, user_id)?;
    reauthenticate(store, settings, ctx, &row, current, ("password_change", None))?;
    let new_hash = password::hash(new)?;
    let changed = in_transaction(store, |store| {
        // Changed by another request since our check, the password given is no longer current.
        let locked = lock_confirmed(store, &row)?;
        let mut write = write_of(&locked);
        reseal_if_needed(crypto, &locked, &mut write)?;
        write.password_hash = Some(new_hash);
        write.must_reset_password = false;
        store.update_user(&row.id, &write)?;
        store.revoke_user_families(&row.id, None, ctx.now, "password_change")?;
        // A reset token mailed before the change (perhaps asked for by whoever made the user
        // change it) must not undo it.
        store.delete_one_time_tokens(OneTimeKind::PasswordReset, &row.id)?;
        store.audit(&user_event("password_change", true, None, ctx, &row.id))?;
        Ok(())
    });
    audit_if_outrun(store, ctx, &row.id, "password_change", changed)
}

/// `DELETE /users/me`: deletes the record and every token.
pub fn delete_account<S: Store>(
    store: &mut S,
    settings: &Settings,
    ctx: &Ctx,
    user_id: &str,
    password: &Password,
) -> Result<(), Error> {
    let row = current_user(store, user_id)?;
    reauthenticate(store, settings, ctx, &row, password, ("account_delete", None))?;
    let deleted = in_transaction(store, |store| {
        lock_confirmed(store, &row)?;
        store.revoke_user_families(&row.id, None, ctx.now, "account_deleted")?;
        store.delete_user(&row.id)?;
        store.audit(&user_event("account_delete", true, None, ctx, &row.id))?;
        Ok(())
    });
    audit_if_outrun(store, ctx, &row.id, "account_delete", deleted)
}

// ---- reads by services -------------------------------------------------------------------------

/// Who is calling: a service token signed by a key in `trusted_service_keys` (loaded only when
/// one is presented), else a user's access token.
pub fn authenticate_caller(
    crypto: &Crypto,
    ctx: &Ctx,
    bearer: Option<&str>,
    trusted: impl FnOnce() -> Result<Option<TrustedServiceKeys>, Error>,
) -> Result<Caller, Error> {
    let token = bearer.ok_or(Error::MissingToken)?;
    match crypto.signing.verify_access_token(token, &crypto.access, ctx.now) {
        Ok(claims) => return Ok(Caller::User(claims.subject)),
        Err(VerifyError::WrongType) => {}
        Err(err) => {
            telemetry::info("bearer token refused", &[("reason", err.to_string().into())]);
            return Err(Error::InvalidToken);
        }
    }
    let Some(trusted) = trusted()? else {
        telemetry::warn("service token refused", &[("reason", "no service is trusted (trusted_service_keys is empty)".into())]);
        return Err(Error::InvalidToken);
    };
    match trusted.verify_service_token(token, ctx.now) {
        Ok(claims) => Ok(Caller::Service(claims.service)),
        Err(err) => {
            telemetry::info("service token refused", &[("reason", err.to_string().into())]);
            Err(Error::InvalidToken)
        }
    }
}

pub(super) fn rate_limit<S: Store>(store: &mut S, settings: &Settings, ctx: &Ctx, service: &str) -> Result<(), Error> {
    let window_start = ctx.now - ctx.now % 60;
    let count = store.count_service_call(service, window_start)?;
    if count > settings.service_calls_per_minute {
        if count == settings.service_calls_per_minute + 1 {
            let mut audit = event("service_rate_limited", false, Some("rate_limited"), ctx);
            audit.actor = format!("service:{service}");
            store.audit(&audit)?;
        }
        return Err(Error::RateLimited { retry_after: window_start + 60 - ctx.now });
    }
    Ok(())
}

fn audit_service_read<S: Store>(store: &mut S, ctx: &Ctx, service: &str, ids: &[String], found: usize) -> Result<(), Error> {
    let mut audit = event("service_read", true, None, ctx);
    audit.actor = format!("service:{service}");
    if let [id] = ids {
        // The subject column holds 255 characters; a longer id (a probe) names nobody anyway.
        audit.subject = Some(id.chars().take(MAX_ID_CHARS).collect());
    }
    let ids: Vec<String> = ids.iter().map(|id| id.chars().take(MAX_ID_CHARS).collect()).collect();
    audit.detail = Some(service_read_detail(&ids, found));
    store.audit(&audit).map_err(Error::from)
}

/// What `audit_log.detail` (TEXT) holds, in bytes.
const MAX_AUDIT_DETAIL_BYTES: usize = 65_535;

/// `{"ids": [...], "ids_omitted": k, "found": n}`, with as many ids as the column holds (k = 0
/// but for a batch within the 64 KiB body limit of long ids in multibyte characters, whose last
/// ids are then counted instead of listed), so the read is still audited, never a 500.
fn service_read_detail(ids: &[String], found: usize) -> String {
    let mut listed = ids.len();
    loop {
        let omitted = ids.len() - listed;
        let listed_ids = serde_json::to_string(&ids[..listed]).unwrap_or_default();
        let detail = format!(r#"{{"ids":{listed_ids},"ids_omitted":{omitted},"found":{found}}}"#);
        if detail.len() <= MAX_AUDIT_DETAIL_BYTES || listed == 0 {
            return detail;
        }
        listed -= 1;
    }
}

/// `GET /users/{id}`: a service reads any user; a user only itself (anything else is 404, the
/// same answer as a missing user, so ids cannot be probed).
pub fn read_user<S: Store>(store: &mut S, crypto: &Crypto, settings: &Settings, ctx: &Ctx, caller: &Caller, id: &str) -> Result<User, Error> {
    if let Caller::User(own) = caller
        && own != id
    {
        return Err(Error::UserNotFound);
    }
    if let Caller::Service(service) = caller {
        rate_limit(store, settings, ctx, service)?;
    }
    let row = if is_plausible_user_id(id) { store.user_by_id(id)? } else { None };
    if let Caller::Service(service) = caller {
        audit_service_read(store, ctx, service, &[id.to_owned()], usize::from(row.is_some()))?;
    }
    to_user(crypto, &row.ok_or(Error::UserNotFound)?)
}

/// `POST /users/batch`: the users found, in request order, and the ids that are missing (or,
/// for a user caller, not its own). Duplicate ids count once.
pub fn read_users<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    settings: &Settings,
    ctx: &Ctx,
    caller: &Caller,
    ids: Vec<String>,
) -> Result<(Vec<User>, Vec<String>), Error> {
    let mut unique: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    let readable: Vec<String> = unique
        .iter()
        .filter(|id| is_plausible_user_id(id))
        .filter(|id| match caller {
            Caller::Service(_) => true,
            Caller::User(own) => own == *id,
        })
        .cloned()
        .collect();
    if let Caller::Service(service) = caller {
        rate_limit(store, settings, ctx, service)?;
    }
    let rows = if readable.is_empty() { Vec::new() } else { store.users_by_ids(&readable)? };
    if let Caller::Service(service) = caller {
        audit_service_read(store, ctx, service, &unique, rows.len())?;
    }
    let mut users = Vec::with_capacity(rows.len());
    let mut missing = Vec::new();
    for id in unique {
        match rows.iter().find(|row| row.id == id) {
            Some(row) => users.push(to_user(crypto, row)?),
            None => missing.push(id),
        }
    }
    Ok((users, missing))
}

/// Field errors for a batch's `ids`: 1..=100 strings.
/// Longest user id (`client_auth.id` is VARCHAR(255)); longer ids name nobody.
pub const MAX_ID_CHARS: usize = 255;

pub fn check_batch_size(len: usize) -> Result<(), FieldError> {
    match len {
        0 => Err(FieldError::new("ids", "too_few", "must list at least one id")),
        n if n > MAX_BATCH_IDS => Err(FieldError::new("ids", "too_many", format!("must list at most {MAX_BATCH_IDS} ids"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "accounts_tests.rs"]
mod tests;
