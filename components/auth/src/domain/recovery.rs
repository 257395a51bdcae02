//! What the operator's mailer sends: password-reset and email-verification tokens. Auth sends no
//! email (it holds no mail server's credentials and makes no outbound calls): a trusted service,
//! the mailer, asks for a one-time token for an email address and sends it to that address; the
//! user then uses it here. Only services listed for each kind may ask (`password_reset_services`,
//! `email_verification_services`): a reset token sets any account's password. Password recovery
//! is also how backfilled users, who have no password, first get one.

use sealed_email::NormalizedEmail;
use tokens::RefreshToken;

use super::accounts::{Caller, event, in_transaction, rate_limit, reseal_if_needed, write_of};
use super::password::{self, Password};
use super::ports::{AuditEvent, OneTimeKind, Store, UserRow, UserWrite};
use super::{Crypto, Ctx, Settings};
use crate::error::Error;

/// How long a reset token works: an hour, as Supabase's and Kratos's recovery links do.
pub const RESET_TOKEN_TTL_SECS: u64 = 3600;
/// How long a verification token works: a day, as Supabase's confirmation links do.
pub const VERIFICATION_TOKEN_TTL_SECS: u64 = 86_400;

/// A mailed token has a refresh token's shape: 256 random bits sent as 43 base64url characters,
/// stored only as their SHA-256, never logged (`Debug` is redacted).
pub type ResetToken = RefreshToken;
pub type VerificationToken = RefreshToken;

/// What the mailer gets: the token to send, whom it is for, and until when it works.
#[derive(Debug)]
pub struct IssuedToken {
    pub user_id: String,
    pub token: RefreshToken,
    pub expires_at: u64,
}

/// The account a mailer asks a token for, with the audit event to record: only a service in
/// `allowed` (a user's token, or another service, is 403), within its rate limit; an email with
/// no account is 404 (the caller is a trusted service, which may know that), audited.
#[allow(clippy::too_many_arguments)] // the two public callers' seven, and the audit event's name
fn mailer_target<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    settings: &Settings,
    ctx: &Ctx,
    caller: &Caller,
    allowed: &[String],
    email: &NormalizedEmail,
    audit_name: &'static str,
) -> Result<(UserRow, AuditEvent), Error> {
    let service = match caller {
        Caller::Service(service) if allowed.iter().any(|name| name == service) => service,
        _ => return Err(Error::Forbidden),
    };
    rate_limit(store, settings, ctx, service)?;
    let email_hash = crypto.email.blind_index(email);
    let mut audit = event(audit_name, true, None, ctx);
    audit.actor = format!("service:{service}");
    let Some(user) = store.user_by_email_hash(&email_hash)? else {
        audit.success = false;
        audit.reason = Some("unknown_email");
        audit.email_hash = Some(email_hash);
        store.audit(&audit)?;
        return Err(Error::UserNotFound);
    };
    audit.subject = Some(user.id.clone());
    Ok((user, audit))
}

/// Stores a new token of `kind` for `user`, replacing any older one, and records `audit`. The
/// user's row is locked first and must still hold the address asked for: an email change
/// committed since the lookup deleted the account's tokens, and a token stored after it would
/// be mailed to the old address yet work for the new one (404 then, as for an address with no
/// account). A verification finds the address verified meanwhile: 409, as before the lookup.
fn issue<S: Store>(store: &mut S, ctx: &Ctx, kind: OneTimeKind, user: UserRow, audit: &AuditEvent, ttl: u64) -> Result<IssuedToken, Error> {
    let token = RefreshToken::generate();
    let expires_at = ctx.now + ttl;
    in_transaction(store, |store| {
        let locked = store.lock_user(&user.id)?.ok_or(Error::UserNotFound)?;
        if locked.email_hash != user.email_hash {
            return Err(Error::UserNotFound);
        }
        if kind == OneTimeKind::EmailVerification && locked.email_verified_at.is_some() {
            return Err(Error::EmailAlreadyVerified);
        }
        store.replace_one_time_token(kind, &user.id, &token.hash(), ctx.now, expires_at)?;
        store.audit(audit)?;
        Ok(())
    })?;
    Ok(IssuedToken { user_id: user.id, token, expires_at })
}

/// `POST /users/password-resets`: a new reset token for the account of `email`, replacing any
/// older one (see [`mailer_target`] for who may ask).
pub fn issue_reset<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    settings: &Settings,
    ctx: &Ctx,
    caller: &Caller,
    allowed: &[String],
    email: &NormalizedEmail,
) -> Result<IssuedToken, Error> {
    let (user, audit) = mailer_target(store, crypto, settings, ctx, caller, allowed, email, "password_reset_issue")?;
    issue(store, ctx, OneTimeKind::PasswordReset, user, &audit, RESET_TOKEN_TTL_SECS)
}

/// `POST /auth/password-reset`: sets a new password with a reset token, which then works no
/// more, and signs the account out everywhere (every refresh token revoked, as a password change
/// does). A token unknown, expired or used, or a malformed one (`None`), is 400
/// `invalid_reset_token`, audited.
pub fn reset_password<S: Store>(store: &mut S, crypto: &Crypto, ctx: &Ctx, token: Option<&ResetToken>, new: &Password) -> Result<(), Error> {
    let mailed = Mailed { kind: OneTimeKind::PasswordReset, invalid: Error::InvalidResetToken, audit_name: "password_reset" };
    use_token(store, crypto, ctx, token, mailed, |store, user, write| {
        // Hashed here, once the token is known good: junk tokens cost no argon2.
        write.password_hash = Some(password::hash(new)?);
        write.must_reset_password = false;
        store.revoke_user_families(&user.id, None, ctx.now, "password_reset")?;
        Ok(())
    })
}

/// A kind of mailed token as its use sees it: the refusal of a bad one, and the audit event.
struct Mailed {
    kind: OneTimeKind,
    invalid: Error,
    audit_name: &'static str,
}

/// Uses a mailed token in one transaction: takes it (its row locked until COMMIT, so of two
/// uses the second finds nothing), locks its user, and writes what `change` makes of the row
/// (the email resealed with the active key if need be), audited. A token unknown, expired, used
/// or malformed (`None`) is `mailed.invalid`, audited too.
fn use_token<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    ctx: &Ctx,
    token: Option<&RefreshToken>,
    mailed: Mailed,
    change: impl FnOnce(&mut S, &UserRow, &mut UserWrite) -> Result<(), Error>,
) -> Result<(), Error> {
    let used = match token {
        None => Err(mailed.invalid.clone()),
        Some(token) => in_transaction(store, |store| {
            let user_id = store.take_one_time_token(mailed.kind, &token.hash(), ctx.now)?.ok_or(mailed.invalid.clone())?;
            let user = store.lock_user(&user_id)?.ok_or(mailed.invalid.clone())?;
            let mut write = write_of(&user);
            reseal_if_needed(crypto, &user, &mut write)?;
            change(store, &user, &mut write)?;
            store.update_user(&user.id, &write)?;
            let mut audit = event(mailed.audit_name, true, None, ctx);
            audit.actor = format!("user:{}", user.id);
            audit.subject = Some(user.id.clone());
            store.audit(&audit)?;
            Ok(())
        }),
    };
    if used.as_ref().err() == Some(&mailed.invalid) {
        store.audit(&event(mailed.audit_name, false, Some("invalid_token"), ctx))?;
    }
    used
}

/// `POST /users/email-verifications`: a new verification token for the account of `email`,
/// replacing any older one (see [`mailer_target`] for who may ask). An address already verified
/// is 409 `email_already_verified`: there is nothing to send.
pub fn issue_verification<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    settings: &Settings,
    ctx: &Ctx,
    caller: &Caller,
    allowed: &[String],
    email: &NormalizedEmail,
) -> Result<IssuedToken, Error> {
    let (user, audit) = mailer_target(store, crypto, settings, ctx, caller, allowed, email, "email_verification_issue")?;
    if user.email_verified_at.is_some() {
        return Err(Error::EmailAlreadyVerified);
    }
    issue(store, ctx, OneTimeKind::EmailVerification, user, &audit, VERIFICATION_TOKEN_TTL_SECS)
}

/// `POST /auth/email-verification`: marks the account's email verified with a token mailed to
/// it, which then works no more. A change of email since deleted the token, so a token proves
/// only the address it was sent to. Unknown, expired, used or malformed (`None`): 400
/// `invalid_verification_token`, audited.
pub fn verify_email<S: Store>(store: &mut S, crypto: &Crypto, ctx: &Ctx, token: Option<&VerificationToken>) -> Result<(), Error> {
    let mailed = Mailed { kind: OneTimeKind::EmailVerification, invalid: Error::InvalidVerificationToken, audit_name: "email_verify" };
    use_token(store, crypto, ctx, token, mailed, |_, _, write| {
        write.email_verified_at = Some(i64::try_from(ctx.now).unwrap_or(i64::MAX));
        Ok(())
    })
}
