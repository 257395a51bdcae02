//! A second factor: an authenticator app (TOTP, RFC 6238: HMAC-SHA-1, six digits, 30-second
//! steps, what Google Authenticator, 1Password, Authy and the others read from an `otpauth://`
//! URI or its QR code), with ten one-time recovery codes for a lost phone.
//!
//! Enrolment takes two steps: `enroll` (the password) gives the secret, `confirm` (a code from
//! the app) proves the app holds it and turns the factor on. From then on a login needs a code
//! or a recovery code after the password ([`check`], [`spend`]), each accepted once; turning it
//! off needs the password and a code. A wrong code counts as a failed login in the throttle,
//! as a wrong password does.

use std::fmt;

use base32::Alphabet;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::accounts::{audit_if_outrun, current_user, in_transaction, lock_confirmed, reauthenticate, reseal_if_needed, to_user, user_event, write_of};
use super::password::Password;
use super::ports::{Store, TotpRow, UserRow, UserWrite};
use super::{Crypto, Ctx, Settings};
use crate::error::{Error, FieldError};

/// Seconds per code (RFC 6238's default; the only period every app supports).
pub const STEP_SECS: u64 = 30;
/// 160 bits, RFC 4226's recommended length for an HMAC-SHA-1 key.
const SECRET_BYTES: usize = 20;
/// How many recovery codes confirming gives.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// RFC 4648 base32 without padding: what authenticator apps read.
const BASE32: Alphabet = Alphabet::Rfc4648 { padding: false };
/// 80 random bits: 16 base32 characters, shown in four groups of four.
const RECOVERY_CODE_BYTES: usize = 10;
const RECOVERY_CODE_CHARS: usize = 16;

/// The six digits an authenticator app shows (spaces a user types are dropped). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpCode(u32);

impl TotpCode {
    pub fn parse(field: &str, raw: &str) -> Result<TotpCode, FieldError> {
        let mut digits = 0;
        let mut value = 0u32;
        for byte in raw.bytes().filter(|b| !b.is_ascii_whitespace()) {
            if !byte.is_ascii_digit() || digits == 6 {
                digits = 0;
                break;
            }
            value = value * 10 + u32::from(byte - b'0');
            digits += 1;
        }
        if digits == 6 {
            Ok(TotpCode(value))
        } else {
            Err(FieldError::new(field, "invalid_format", "must be the 6 digits the authenticator app shows"))
        }
    }
}

impl fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpCode(<redacted>)")
    }
}

/// A recovery code: 16 base32 characters; case, dashes and spaces are ignored. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode(String);

impl RecoveryCode {
    pub fn parse(field: &str, raw: &str) -> Result<RecoveryCode, FieldError> {
        let code: String = raw.chars().filter(|c| *c != '-' && !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
        if code.len() == RECOVERY_CODE_CHARS && base32::decode(BASE32, &code).is_some() {
            Ok(RecoveryCode(code))
        } else {
            Err(FieldError::new(field, "invalid_format", "must be one of the recovery codes given when the app was added"))
        }
    }

    /// What is stored: the code's SHA-256 (80 random bits need no slow hash).
    fn hash(&self) -> String {
        tokens::sha256_hex(self.0.as_bytes())
    }

    /// As the user is shown it: `ABCD-EFGH-IJKL-MNOP`.
    fn display(&self) -> String {
        let groups: Vec<&str> = (0..RECOVERY_CODE_CHARS).step_by(4).filter_map(|i| self.0.get(i..i + 4)).collect();
        groups.join("-")
    }
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode(<redacted>)")
    }
}

/// What a user gives as the second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactor {
    Totp(TotpCode),
    Recovery(RecoveryCode),
}

/// A second factor that matched, to be spent in the transaction that uses it ([`spend`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// The time step of the code.
    Step(u64),
    /// The recovery code's stored hash.
    Recovery(String),
}

/// What enrolment gives the user's app. `Debug` is redacted: the secret is the factor.
pub struct Enrollment {
    /// Base32, for typing into the app by hand.
    pub secret: String,
    /// `otpauth://totp/...`, for a QR code.
    pub otpauth_uri: String,
}

impl fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Enrollment(<redacted>)")
    }
}

/// The code of `secret` for time step `step`: HOTP (RFC 4226, dynamic truncation, 6 digits) of
/// the step, as RFC 6238 defines TOTP. Shown with its leading zeros (`{:06}`).
pub fn code_at(secret: &[u8], step: u64) -> u32 {
    let mac = hmac_sha1_compact::HMAC::mac(&step.to_be_bytes(), secret);
    let offset = usize::from(mac[19] & 0x0f);
    let value = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
    value % 1_000_000
}

/// The step whose code is `code`, among the current one and one on either side (a phone's clock
/// drifts; a code is typed while it changes), provided it comes after `last_step`: a code, once
/// accepted, is refused, and so is any older one.
fn accepted_step(secret: &[u8], code: &TotpCode, now: u64, last_step: Option<i64>) -> Option<u64> {
    let current = now / STEP_SECS;
    let mut matched = None;
    // Every candidate is computed and compared in constant time, whichever matches.
    for step in current.saturating_sub(1)..=current + 1 {
        if tokens::constant_time_eq(&code_at(secret, step).to_be_bytes(), &code.0.to_be_bytes()) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched.filter(|step| last_step.is_none_or(|last| i64::try_from(*step).is_ok_and(|step| step > last)))
}

/// The user's TOTP secret (raw bytes), if they have one.
fn open_secret(crypto: &Crypto, user: &UserRow) -> Result<Option<Vec<u8>>, Error> {
    let Some(sealed) = &user.totp.secret_sealed else {
        return Ok(None);
    };
    let secret = crypto
        .email
        .open_with_aad(sealed, &sealed_email::totp_secret_context(&user.id))
        .map_err(|err| Error::internal(&format!("the TOTP secret of user {} does not open", user.id), &err))?;
    base32::decode(BASE32, &secret)
        .map(Some)
        .ok_or_else(|| Error::internal(&format!("the TOTP secret of user {} is not base32", user.id), &"undecodable"))
}

/// Whether `factor` is a valid second factor of `user` now; `None` when it is not.
pub fn check(crypto: &Crypto, user: &UserRow, factor: &SecondFactor, now: u64) -> Result<Option<Matched>, Error> {
    match factor {
        SecondFactor::Totp(code) => {
            let Some(secret) = open_secret(crypto, user)? else {
                return Ok(None);
            };
            Ok(accepted_step(&secret, code, now, user.totp.last_step).map(Matched::Step))
        }
        SecondFactor::Recovery(code) => {
            let hash = code.hash();
            let known = user.totp.recovery_hashes.iter().fold(false, |found, stored| found | tokens::constant_time_eq(stored.as_bytes(), hash.as_bytes()));
            Ok(known.then_some(Matched::Recovery(hash)))
        }
    }
}

/// Spends a matched factor on the user's row as it is locked now: the step becomes the last
/// accepted, the recovery code is gone. A concurrent request that spent it first wins, and this
/// one is refused as a wrong code.
pub fn spend(locked: &UserRow, write: &mut UserWrite, matched: &Matched) -> Result<(), Error> {
    match matched {
        Matched::Step(step) => {
            let step = i64::try_from(*step).map_err(|_| Error::InvalidMfaCode)?;
            if locked.totp.last_step.is_some_and(|last| last >= step) {
                return Err(Error::InvalidMfaCode);
            }
            write.totp.last_step = Some(step);
        }
        Matched::Recovery(hash) => {
            let before = write.totp.recovery_hashes.len();
            write.totp.recovery_hashes.retain(|stored| stored != hash);
            if write.totp.recovery_hashes.len() == before {
                return Err(Error::InvalidMfaCode);
            }
        }
    }
    Ok(())
}

/// `otpauth://totp/<issuer>:<email>?secret=...` (Google Authenticator's Key URI format).
fn otpauth_uri(issuer: &str, email: &str, secret: &str) -> String {
    let issuer = utf8_percent_encode(issuer, NON_ALPHANUMERIC).to_string();
    let account = utf8_percent_encode(email, NON_ALPHANUMERIC);
    format!("otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits=6&period={STEP_SECS}")
}

fn random_bytes<const N: usize>(what: &str) -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|err| Error::internal(what, &err))?;
    Ok(bytes)
}

/// How a change of the second factor is made (see [`write_totp`]).
struct TotpChange {
    /// A password this request checked must still be the current one.
    password_checked: bool,
    /// Ends every session of the user, as a password change does.
    sign_out: bool,
    event: &'static str,
}

/// Writes the user's second factor as `next` makes it from the row as locked now (which may
/// refuse) and audits the change's event. With `password_checked`, a password changed since
/// this request checked it wins (403 `wrong_password`), as for any change confirmed with the
/// password. One function for the three changes, `next` as `dyn`, so that each adds no copy of
/// the transaction.
fn write_totp<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    ctx: &Ctx,
    row: &UserRow,
    change: TotpChange,
    next: &dyn Fn(&UserRow) -> Result<TotpRow, Error>,
) -> Result<(), Error> {
    let written = in_transaction(store, |store| {
        let locked = match change.password_checked {
            true => lock_confirmed(store, row)?,
            false => store.lock_user(&row.id)?.ok_or(Error::InvalidToken)?,
        };
        let mut write = write_of(&locked);
        reseal_if_needed(crypto, &locked, &mut write)?;
        write.totp = next(&locked)?;
        store.update_user(&locked.id, &write)?;
        if change.sign_out {
            store.revoke_user_families(&row.id, None, ctx.now, change.event)?;
        }
        store.audit(&user_event(change.event, true, None, ctx, &row.id))?;
        Ok(())
    });
    audit_if_outrun(store, ctx, &row.id, change.event, written)
}

/// `POST /users/me/mfa/totp`: a new secret for the user's app, replacing one not confirmed yet.
/// The password is asked (throttled as a login): a stolen access token alone cannot bind the
/// account to someone else's phone. 409 `mfa_enabled` when a factor is already on.
#[allow(clippy::too_many_arguments)] // the request's context, the password and the issuer's name
pub fn enroll<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    settings: &Settings,
    ctx: &Ctx,
    user_id: &str,
    password: &Password,
    issuer: &str,
) -> Result<Enrollment, Error> {
    let row = current_user(store, user_id)?;
    reauthenticate(store, settings, ctx, &row, password, ("mfa_enroll", None))?;
    if row.totp.enabled_at.is_some() {
        return Err(Error::MfaAlreadyEnabled);
    }
    let secret = base32::encode(BASE32, &random_bytes::<SECRET_BYTES>("drawing a TOTP secret")?);
    let sealed = crypto.email.seal_text_with_aad(&secret, &sealed_email::totp_secret_context(&row.id));
    let email = to_user(crypto, &row)?.email;
    let change = TotpChange { password_checked: true, sign_out: false, event: "mfa_enroll" };
    write_totp(store, crypto, ctx, &row, change, &|locked| match locked.totp.enabled_at {
        Some(_) => Err(Error::MfaAlreadyEnabled),
        None => Ok(TotpRow { secret_sealed: Some(sealed.clone()), ..TotpRow::default() }),
    })?;
    Ok(Enrollment { otpauth_uri: otpauth_uri(issuer, &email, &secret), secret })
}

/// `POST /users/me/mfa/totp/confirm`: a code from the app proves it holds the secret; the factor
/// is on from now, and the user gets the recovery codes (shown once; only their hashes are kept).
/// Every session of the user ends (each began with the password alone): the user signs in
/// again with a code; access tokens already issued run out within their 15 minutes.
pub fn confirm<S: Store>(store: &mut S, crypto: &Crypto, ctx: &Ctx, user_id: &str, code: &TotpCode) -> Result<Vec<String>, Error> {
    let row = current_user(store, user_id)?;
    if row.totp.enabled_at.is_some() {
        return Err(Error::MfaAlreadyEnabled);
    }
    let secret = open_secret(crypto, &row)?.ok_or(Error::MfaNotEnrolled)?;
    let incorrect = || Error::field("code", "incorrect", "is not what the app shows now (check the phone's clock)");
    let step = accepted_step(&secret, code, ctx.now, None).ok_or_else(incorrect)?;
    let codes = (0..RECOVERY_CODE_COUNT)
        .map(|_| Ok(RecoveryCode(base32::encode(BASE32, &random_bytes::<RECOVERY_CODE_BYTES>("drawing a recovery code")?))))
        .collect::<Result<Vec<_>, Error>>()?;
    // Every session began with the password alone: they all end (the confirming one too, as a
    // password change ends them), so from now on each one had both factors.
    let change = TotpChange { password_checked: false, sign_out: true, event: "mfa_enable" };
    write_totp(store, crypto, ctx, &row, change, &|locked| {
        if locked.totp.enabled_at.is_some() {
            return Err(Error::MfaAlreadyEnabled);
        }
        // Enrolled again meanwhile: the code was the old secret's.
        if locked.totp.secret_sealed != row.totp.secret_sealed {
            return Err(incorrect());
        }
        Ok(TotpRow {
            secret_sealed: locked.totp.secret_sealed.clone(),
            enabled_at: Some(i64::try_from(ctx.now).unwrap_or(i64::MAX)),
            last_step: i64::try_from(step).ok(),
            recovery_hashes: codes.iter().map(RecoveryCode::hash).collect(),
        })
    })?;
    Ok(codes.iter().map(RecoveryCode::display).collect())
}

/// `DELETE /users/me/mfa/totp`: turns the factor off with the password and a code (or a recovery
/// code); an enrolment never confirmed is dropped with the password alone. A wrong code counts
/// as a failed login (403 `wrong_mfa_code`). 409 `mfa_not_enrolled` when there is nothing to
/// turn off.
#[allow(clippy::too_many_arguments)] // the request's context and both factors
pub fn disable<S: Store>(
    store: &mut S,
    crypto: &Crypto,
    settings: &Settings,
    ctx: &Ctx,
    user_id: &str,
    password: &Password,
    factor: Option<&SecondFactor>,
) -> Result<(), Error> {
    let row = current_user(store, user_id)?;
    if row.totp.secret_sealed.is_none() {
        return Err(Error::MfaNotEnrolled);
    }
    let enabled = row.totp.enabled_at.is_some();
    let code_required = || Error::field("mfa_code", "required", "give a code from the authenticator app, or a recovery_code");
    if enabled && factor.is_none() {
        return Err(code_required());
    }
    let matched = match (enabled, factor) {
        (true, Some(factor)) => Some(check(crypto, &row, factor, ctx.now)?),
        _ => None,
    };
    reauthenticate(store, settings, ctx, &row, password, ("mfa_disable", matched.as_ref().map(Option::is_some)))?;
    let change = TotpChange { password_checked: true, sign_out: false, event: "mfa_disable" };
    write_totp(store, crypto, ctx, &row, change, &|locked| {
        if !enabled && locked.totp.enabled_at.is_some() {
            // Confirmed since our read: the password alone no longer turns it off.
            return Err(code_required());
        }
        if let Some(Some(matched)) = &matched {
            // Spent by a login meanwhile: this code no longer proves anything.
            spend(locked, &mut write_of(locked), matched).map_err(|_| Error::WrongMfaCode)?;
        }
        Ok(TotpRow::default())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 (the 8-digit values' last six digits).
    #[test]
    fn codes_match_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [(59u64, "287082"), (1_111_111_109, "081804"), (1_111_111_111, "050471"), (1_234_567_890, "005924"), (2_000_000_000, "279037"), (20_000_000_000, "353130")] {
            assert_eq!(format!("{:06}", code_at(secret, time / STEP_SECS)), code, "T={time}");
            assert_eq!(TotpCode::parse("c", code).unwrap(), TotpCode(code_at(secret, time / STEP_SECS)));
        }
    }

    #[test]
    fn a_code_is_accepted_once_within_a_step_either_side() {
        let secret = b"12345678901234567890";
        let now = 1_111_111_111;
        let step = now / STEP_SECS;
        let code = |step: u64| TotpCode(code_at(secret, step));
        assert_eq!(accepted_step(secret, &code(step), now, None), Some(step));
        assert_eq!(accepted_step(secret, &code(step - 1), now, None), Some(step - 1));
        assert_eq!(accepted_step(secret, &code(step + 1), now, None), Some(step + 1));
        assert_eq!(accepted_step(secret, &code(step - 2), now, None), None, "too old");
        assert_eq!(accepted_step(secret, &code(step + 2), now, None), None, "too far ahead");
        let last = i64::try_from(step).ok();
        assert_eq!(accepted_step(secret, &code(step), now, last), None, "used already");
        assert_eq!(accepted_step(secret, &code(step - 1), now, last), None, "older than one used");
        assert_eq!(accepted_step(secret, &code(step + 1), now, last), Some(step + 1));
    }

    #[test]
    fn codes_parse_leniently_and_never_print() {
        assert_eq!(TotpCode::parse("c", " 123 456 ").unwrap(), TotpCode(123_456));
        assert_eq!(TotpCode::parse("c", "012345").unwrap(), TotpCode(12_345));
        for bad in ["12345", "1234567", "12345a", "١٢٣٤٥٦", "", "+12345", "99999999999"] {
            assert_eq!(TotpCode::parse("mfa_code", bad).unwrap_err().code, "invalid_format", "{bad}");
        }
        let recovery = RecoveryCode::parse("r", "abcd-efgh ijkl-mnop").unwrap();
        assert_eq!(recovery.display(), "ABCD-EFGH-IJKL-MNOP");
        assert_eq!(RecoveryCode::parse("r", &recovery.display()).unwrap(), recovery);
        for bad in ["ABCD-EFGH-IJKL-MNO", "ABCD-EFGH-IJKL-MNO1", "ABCD-EFGH-IJKL-MNOPQ"] {
            assert!(RecoveryCode::parse("r", bad).is_err(), "{bad}");
        }
        assert!(!format!("{:?}{:?}", TotpCode(123_456), recovery).contains("123456"));
        assert!(!format!("{recovery:?}").contains("ABCD"));
    }

    #[test]
    fn the_uri_names_the_issuer_and_account_encoded() {
        let uri = otpauth_uri("Acme Billing", "ada+1@example.org", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20Billing:ada%2B1%40example%2Eorg?secret=JBSWY3DPEHPK3PXP&issuer=Acme%20Billing&algorithm=SHA1&digits=6&period=30"
        );
    }
}
