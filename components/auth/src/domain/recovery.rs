//! Password recovery. Auth sends no email (it holds no mail server's credentials and makes no
//! outbound calls): a trusted service, the operator's mailer, asks for a one-time reset token
//! for an email address and sends it to that address; the user then sets a new password with
//! the token. Only services listed in `password_reset_services` may ask, as a token sets any
//! account's password. This is also how backfilled users, who have no password, first get one.

use sealed_email::NormalizedEmail;
use tokens::RefreshToken;

use super::accounts::{Caller, event, in_transaction, rate_limit, reseal_if_needed, write_of};
use super::password::{self, Password};
use super::ports::Store;
use super::{Crypto, Ctx, Settings};
use crate::error::Error;

/// How long a reset token works: an hour, as Supabase's and Kratos's recovery links do.
pub const RESET_TOKEN_TTL_SECS: u64 = 3600;

/// A password-reset token has a refresh token's shape: 256 random bits sent as 43 base64url
/// characters, stored only as their SHA-256, never logged (`Debug` is redacted).
pub type ResetToken = RefreshToken;

/// What the mailer gets: the token to send, whom it is for, and until when it works.
#[derive(Debug)]
pub struct IssuedReset {
    pub user_id: String,
    pub token: ResetToken,
    pub expires_at: u64,
}

/// `POST /users/password-resets`: a new reset token for the account of `email`, replacing any
/// older one. Only a service in `allowed`; a user's token, or another service, is 403. An email
/// with no account is 404 (the caller is a trusted service, which may know that).
pub fn issue_reset<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    settings: &Settings,
    ctx: &Ctx,
    caller: &Caller,
    allowed: &[String],
    email: &NormalizedEmail,
) -> Result<IssuedReset, Error> {
    let service = match caller {
        Caller::Service(service) if allowed.iter().any(|name| name == service) => service,
        _ => return Err(Error::Forbidden),
    };
    rate_limit(store, settings, ctx, service)?;
    let email_hash = crypto.email.blind_index(email);
    let mut audit = event("password_reset_issue", true, None, ctx);
    audit.actor = format!("service:{service}");
    let Some(user) = store.user_by_email_hash(&email_hash)? else {
        audit.success = false;
        audit.reason = Some("unknown_email");
        audit.email_hash = Some(email_hash);
        store.audit(&audit)?;
        return Err(Error::UserNotFound);
    };
    let token = ResetToken::generate();
    let expires_at = ctx.now + RESET_TOKEN_TTL_SECS;
    audit.subject = Some(user.id.clone());
    in_transaction(store, |store| {
        store.replace_reset_token(&user.id, &token.hash(), ctx.now, expires_at)?;
        store.audit(&audit)?;
        Ok(())
    })?;
    Ok(IssuedReset { user_id: user.id, token, expires_at })
}

/// `POST /auth/password-reset`: sets a new password with a reset token, which then works no
/// more, and signs the account out everywhere (every refresh token revoked, as a password change
/// does). A token unknown, expired or used, or a malformed one (`None`), is 400
/// `invalid_reset_token`, audited.
pub fn reset_password<S: Store>(store: &mut S, crypto: &Crypto, ctx: &Ctx, token: Option<&ResetToken>, new: &Password) -> Result<(), Error> {
    let used = match token {
        None => Err(Error::InvalidResetToken),
        Some(token) => in_transaction(store, |store| {
            let user_id = store.take_reset_token(&token.hash(), ctx.now)?.ok_or(Error::InvalidResetToken)?;
            // The token's row is locked until commit: of two uses, the second finds nothing. The
            // hash is made here, after the token is known good, so junk tokens cost no argon2.
            let user = store.lock_user(&user_id)?.ok_or(Error::InvalidResetToken)?;
            let mut write = write_of(&user);
            reseal_if_needed(crypto, &user, &mut write)?;
            write.password_hash = Some(password::hash(new)?);
            write.must_reset_password = false;
            store.update_user(&user.id, &write)?;
            store.revoke_user_families(&user.id, None, ctx.now, "password_reset")?;
            let mut audit = event("password_reset", true, None, ctx);
            audit.actor = format!("user:{}", user.id);
            audit.subject = Some(user.id.clone());
            store.audit(&audit)?;
            Ok(())
        }),
    };
    if used == Err(Error::InvalidResetToken) {
        store.audit(&event("password_reset", false, Some("invalid_token"), ctx))?;
    }
    used
}
