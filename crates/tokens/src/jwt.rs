//! Issuing and verifying access and service tokens.

use std::borrow::Borrow;
use std::fmt;

use base64::Engine as _;
use base64::engine::GeneralPurpose;
use ed25519_dalek::{Signature, VerifyingKey};
use jwt_simple::prelude::{
    Audiences, Duration, EdDSAKeyPairLike, HeaderOptions, JWTClaims, NoCustomClaims, Token,
};

use crate::keys::{SigningKey, SigningKeys, TrustedServiceKeys, URL, Verifier};
use crate::refresh::sha256_hex;
use crate::{
    ACCESS_TOKEN_TYPE, ALGORITHM, DEFAULT_ACCESS_TOKEN_TTL_SECS, IssueError, LEEWAY_SECS,
    MAX_SERVICE_TOKEN_TTL_SECS, MAX_SUBJECT_LEN, MAX_TOKEN_LEN, SERVICE_SUBJECT_PREFIX,
    SERVICE_TOKEN_AUDIENCE, SERVICE_TOKEN_TYPE, VerifyError, is_valid_name,
};

/// Issuer, audience and lifetime of access tokens; the same value configures issuing (auth) and
/// verifying (auth and customer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenConfig {
    /// `iss`, e.g. auth's public base URL.
    pub issuer: String,
    /// `aud`, e.g. the API's identifier.
    pub audience: String,
    /// Lifetime given to new tokens; verification does not use it.
    pub ttl_secs: u64,
}

impl AccessTokenConfig {
    /// A config with the default lifetime of 15 minutes.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        AccessTokenConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            ttl_secs: DEFAULT_ACCESS_TOKEN_TTL_SECS,
        }
    }

    /// Sets the lifetime of new tokens.
    pub fn with_ttl_secs(mut self, ttl_secs: u64) -> Self {
        self.ttl_secs = ttl_secs;
        self
    }
}

/// A freshly signed token and what the response needs to say about it.
/// `Debug` does not show the token (it is a bearer credential).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// The kid it was signed with.
    pub kid: String,
    /// `iat`, Unix seconds.
    pub issued_at: u64,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// `exp - iat`, for the `expires_in` response field.
    pub expires_in: u64,
}

impl IssuedToken {
    /// SHA-256 of the token, lowercase hex: what the issuer records to recognize the token later
    /// ([`AccessTokenToCheck::digest`] is the same value for the same token).
    pub fn digest(&self) -> String {
        sha256_hex(self.token.as_bytes())
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("jti", &self.jti)
            .field("kid", &self.kid)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The checked claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    /// `sub`: the user id.
    pub subject: String,
    pub issuer: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub not_before: Option<u64>,
    pub jti: String,
    /// The kid of the key that signed it.
    pub kid: String,
}

/// The checked claims of a service token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceClaims {
    /// The calling service, e.g. `customer` (from `sub` = `service:customer`, and equal to the
    /// service its key is configured for).
    pub service: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub jti: String,
    pub kid: String,
}

// ---- issuing -----------------------------------------------------------------------------------

fn random_jti() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    URL.encode(bytes)
}

fn valid_access_subject(sub: &str) -> bool {
    !sub.is_empty()
        && sub.len() <= MAX_SUBJECT_LEN
        && !sub.starts_with(SERVICE_SUBJECT_PREFIX)
        && !sub.chars().any(char::is_control)
}

/// What goes into one token besides the key and the time.
struct Grant<'a> {
    typ: &'a str,
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    ttl: u64,
}

fn sign(key: &SigningKey, grant: Grant<'_>, now: u64) -> Result<IssuedToken, IssueError> {
    let Grant {
        typ,
        iss,
        aud,
        sub,
        ttl,
    } = grant;
    if now > MAX_NOW {
        return Err(IssueError::InvalidTime);
    }
    let jti = random_jti();
    let expires_at = now + ttl;
    let claims = JWTClaims {
        issued_at: Some(Duration::from_secs(now)),
        expires_at: Some(Duration::from_secs(expires_at)),
        invalid_before: Some(Duration::from_secs(now)),
        issuer: Some(iss.to_owned()),
        subject: Some(sub.to_owned()),
        audiences: Some(Audiences::AsString(aud.to_owned())),
        jwt_id: Some(jti.clone()),
        nonce: None,
        custom: NoCustomClaims {},
    };
    let options = HeaderOptions {
        signature_type: Some(typ.to_owned()),
        content_type: None,
    };
    let token = key
        .pair()
        .sign_with_options(claims, &options)
        .map_err(|_| IssueError::Signing)?;
    Ok(IssuedToken {
        token,
        jti,
        kid: key.kid.clone(),
        issued_at: now,
        expires_at,
        expires_in: ttl,
    })
}

impl SigningKeys {
    /// Signs an access token for user `subject` with the active key.
    ///
    /// # Panics
    /// Only if the operating system's random source fails.
    pub fn issue_access_token(
        &self,
        config: &AccessTokenConfig,
        subject: &str,
        now: u64,
    ) -> Result<IssuedToken, IssueError> {
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(IssueError::InvalidConfig);
        }
        // A day at most: refresh tokens exist for longer sessions.
        if !(1..=86_400).contains(&config.ttl_secs) {
            return Err(IssueError::InvalidLifetime(86_400));
        }
        if !valid_access_subject(subject) {
            return Err(IssueError::InvalidSubject);
        }
        let grant = Grant {
            typ: ACCESS_TOKEN_TYPE,
            iss: &config.issuer,
            aud: &config.audience,
            sub: subject,
            ttl: config.ttl_secs,
        };
        sign(&self.keys[0], grant, now)
    }

    /// Signs a service token for calling auth as `service` (e.g. `customer`) with the active
    /// key, valid for [`MAX_SERVICE_TOKEN_TTL_SECS`].
    ///
    /// # Panics
    /// Only if the operating system's random source fails.
    pub fn issue_service_token(&self, service: &str, now: u64) -> Result<IssuedToken, IssueError> {
        if !is_valid_name(service) {
            return Err(IssueError::InvalidServiceName);
        }
        let principal = format!("{SERVICE_SUBJECT_PREFIX}{service}");
        let grant = Grant {
            typ: SERVICE_TOKEN_TYPE,
            iss: &principal,
            aud: SERVICE_TOKEN_AUDIENCE,
            sub: &principal,
            ttl: MAX_SERVICE_TOKEN_TTL_SECS,
        };
        sign(&self.keys[0], grant, now)
    }
}

// ---- verifying ---------------------------------------------------------------------------------

/// Longest header segment looked at; ours are under 100 characters.
const MAX_HEADER_B64_LEN: usize = 1024;

/// jwt-simple keeps times as 32.32 fixed point: seconds beyond 2^32 (year 2106) saturate, and
/// its `now + leeway` would overflow near there. Keep `now` well inside the range.
const MAX_NOW: u64 = u32::MAX as u64 - 2 * 86_400;

/// Checks that need no key: size, shape, algorithm, type. Returns the kid.
pub(crate) fn precheck(token: &str, typ: &str) -> Result<String, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::TooLong);
    }
    let mut parts = token.split('.');
    let header_len = parts.next().map_or(0, str::len);
    if parts.count() != 2 || header_len > MAX_HEADER_B64_LEN {
        return Err(VerifyError::Malformed);
    }
    let meta = Token::decode_metadata(token).map_err(|_| VerifyError::Malformed)?;
    if meta.algorithm() != ALGORITHM {
        return Err(VerifyError::AlgorithmNotAllowed);
    }
    if !meta
        .signature_type()
        .is_some_and(|t| t.eq_ignore_ascii_case(typ))
    {
        return Err(VerifyError::WrongType);
    }
    // No critical extension is understood here, so none may be required (RFC 7515 §4.1.11).
    if meta.critical().is_some_and(|crit| !crit.is_empty()) {
        return Err(VerifyError::Malformed);
    }
    match meta.key_id() {
        Some(kid) if !kid.is_empty() => Ok(kid.to_owned()),
        _ => Err(VerifyError::MissingKid),
    }
}

/// Base64url without padding, as JWS compact serialization writes every part.
const PART: GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

struct Checked {
    sub: String,
    iss: String,
    iat: u64,
    exp: u64,
    nbf: Option<u64>,
    jti: String,
}

/// The Ed25519 signature over `header.claims` by `key`, then `iss`, `aud` and the times (with
/// leeway), then the presence of the claims we rely on. `token` has passed [`precheck`].
fn check_signed(
    token: &str,
    key: &VerifyingKey,
    issuer: &str,
    audience: &str,
    now: u64,
) -> Result<Checked, VerifyError> {
    check_signature(token, key)?;
    check_claims(token, issuer, audience, now)
}

/// The Ed25519 signature of a token that has passed [`precheck`].
///
/// It is checked with `ed25519-dalek` (`verify_strict`), not through jwt-simple: jwt-simple's
/// Ed25519 back end multiplies 64x64 -> 128 bits, which wasm32 has no instruction for (every
/// product is a `__multi3` call), while curve25519-dalek picks 32-bit limbs there. Measured in
/// wasm on the local host, 200 verifications in a loop: 370 µs -> 92 µs each (110 µs for the
/// first one in a fresh instance). The claims are jwt-simple's own
/// `JWTClaims`, and [`validate_claims`] applies the checks its `verify_token` applies with our
/// options (a differential test holds the two to the same answers).
fn check_signature(token: &str, key: &VerifyingKey) -> Result<(), VerifyError> {
    let (signed, signature_b64) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
    let signature = PART
        .decode(signature_b64)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(VerifyError::Malformed)?;
    // Strict: also refuses a non-canonical `S` and small-order `R` or key (no malleability).
    key.verify_strict(signed.as_bytes(), &signature)
        .map_err(|_| VerifyError::BadSignature)
}

/// `iss`, `aud` and the times (with leeway) of a token that has passed [`precheck`], then the
/// presence of the claims we rely on.
fn check_claims(token: &str, issuer: &str, audience: &str, now: u64) -> Result<Checked, VerifyError> {
    let claims_b64 = token.split('.').nth(1).ok_or(VerifyError::Malformed)?;
    let claims_json = PART.decode(claims_b64).map_err(|_| VerifyError::Malformed)?;
    let claims: JWTClaims<NoCustomClaims> =
        serde_json::from_slice(&claims_json).map_err(|_| VerifyError::Malformed)?;
    validate_claims(&claims, issuer, audience, now)?;
    let exp = claims
        .expires_at
        .ok_or(VerifyError::MissingClaim("exp"))?
        .as_secs();
    let iat = claims
        .issued_at
        .ok_or(VerifyError::MissingClaim("iat"))?
        .as_secs();
    let nbf = claims.invalid_before.map(|t| t.as_secs());
    let jti = claims
        .jwt_id
        .filter(|j| !j.is_empty())
        .ok_or(VerifyError::MissingClaim("jti"))?;
    let sub = claims.subject.ok_or(VerifyError::MissingClaim("sub"))?;
    let iss = claims.issuer.ok_or(VerifyError::WrongIssuer)?;
    Ok(Checked {
        sub,
        iss,
        iat,
        exp,
        nbf,
        jti,
    })
}

/// Times, issuer and audience, in jwt-simple's order and arithmetic (its 32.32 fixed-point
/// `Duration`): `iat <= now + leeway`, `nbf <= now + leeway`, `now - leeway <= exp`; `iss`
/// equal to `issuer`; `aud` (a string or a list) containing `audience`.
fn validate_claims(
    claims: &JWTClaims<NoCustomClaims>,
    issuer: &str,
    audience: &str,
    now: u64,
) -> Result<(), VerifyError> {
    let now = Duration::from_secs(now.min(MAX_NOW));
    let leeway = Duration::from_secs(LEEWAY_SECS);
    if claims.issued_at.is_some_and(|iat| iat > now + leeway) {
        return Err(VerifyError::NotYetValid);
    }
    if claims.invalid_before.is_some_and(|nbf| now + leeway < nbf) {
        return Err(VerifyError::NotYetValid);
    }
    if claims
        .expires_at
        .is_some_and(|exp| now < leeway || now - leeway > exp)
    {
        return Err(VerifyError::Expired);
    }
    if claims.issuer.as_deref() != Some(issuer) {
        return Err(VerifyError::WrongIssuer);
    }
    let audience_ok = match &claims.audiences {
        Some(Audiences::AsString(aud)) => aud == audience,
        Some(Audiences::AsSet(auds)) => auds.contains(audience),
        None => false,
    };
    if !audience_ok {
        return Err(VerifyError::WrongAudience);
    }
    Ok(())
}

impl Verifier {
    /// Verifies an access token at time `now` (Unix seconds). See the crate docs for the checks.
    /// Never panics, whatever the input.
    pub fn verify_access_token(
        &self,
        token: &str,
        config: &AccessTokenConfig,
        now: u64,
    ) -> Result<AccessClaims, VerifyError> {
        verify_access(token, config, now, |kid| self.key(kid))
    }
}

impl SigningKeys {
    /// [`Verifier::verify_access_token`] with these keys' public halves, deriving only the key
    /// the token names (and none for a token that fails the cheap checks first).
    pub fn verify_access_token(
        &self,
        token: &str,
        config: &AccessTokenConfig,
        now: u64,
    ) -> Result<AccessClaims, VerifyError> {
        verify_access(token, config, now, |kid| {
            self.keys.iter().find(|k| k.kid == kid).map(SigningKey::verifying_key)
        })
    }
}

impl SigningKeys {
    /// Every check of [`Self::verify_access_token`] but the signature, for the issuer of the
    /// token: it may recognize the token in its own records (by [`AccessTokenToCheck::digest`])
    /// instead of spending an Ed25519 verification on it. The kid must still be one of these
    /// keys, so retiring a key retires its tokens however they are recognized.
    pub fn check_access_token_claims<'a>(
        &'a self,
        token: &'a str,
        config: &AccessTokenConfig,
        now: u64,
    ) -> Result<AccessTokenToCheck<'a>, VerifyError> {
        let kid = precheck(token, ACCESS_TOKEN_TYPE)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(VerifyError::UnknownKid)?;
        let c = check_claims(token, &config.issuer, &config.audience, now)?;
        let claims = access_claims(c, kid)?;
        Ok(AccessTokenToCheck { token, key, claims })
    }
}

/// An access token whose header and claims passed every check of
/// [`SigningKeys::verify_access_token`]; its signature has not been checked. The issuer looks
/// [`Self::digest`] up in its record of the tokens it issued (the [`IssuedToken::digest`] it
/// stored): a token found there is [`Self::recorded`], since the issuer itself wrote exactly
/// these bytes; any other must pass [`Self::verify_signature`].
pub struct AccessTokenToCheck<'a> {
    token: &'a str,
    key: &'a SigningKey,
    claims: AccessClaims,
}

impl fmt::Debug for AccessTokenToCheck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenToCheck")
            .field("token", &"<redacted>")
            .field("subject", &self.claims.subject)
            .field("kid", &self.claims.kid)
            .finish()
    }
}

impl AccessTokenToCheck<'_> {
    /// `sub`, to find the issuer's records of the user.
    pub fn subject(&self) -> &str {
        &self.claims.subject
    }

    /// SHA-256 of the token, lowercase hex.
    pub fn digest(&self) -> String {
        sha256_hex(self.token.as_bytes())
    }

    /// The claims, on the issuer's own record: call this only when a record the issuer wrote
    /// when it signed the token holds [`Self::digest`] (for this subject).
    pub fn recorded(self) -> AccessClaims {
        self.claims
    }

    /// The claims, once the signature by the key the token names checks out.
    pub fn verify_signature(self) -> Result<AccessClaims, VerifyError> {
        check_signature(self.token, self.key.verifying_key())?;
        Ok(self.claims)
    }
}

/// The `sub` a token's claims name, read without checking anything (not even that it is a
/// token): only to decide what to start fetching before the token is verified. Never decide
/// anything about access with it.
pub fn claimed_subject(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Subject {
        sub: Option<String>,
    }
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let claims = PART.decode(token.split('.').nth(1)?).ok()?;
    serde_json::from_slice::<Subject>(&claims).ok()?.sub
}

/// The access-token checks: header, then the signature with the key `key_for` gives for the
/// token's kid (asked only once the header passed), claims, subject.
/// `key_for` may lend a key (a verifier's) or give a freshly derived one (signing keys).
fn verify_access<K: Borrow<VerifyingKey>>(
    token: &str,
    config: &AccessTokenConfig,
    now: u64,
    key_for: impl FnOnce(&str) -> Option<K>,
) -> Result<AccessClaims, VerifyError> {
    let kid = precheck(token, ACCESS_TOKEN_TYPE)?;
    let key = key_for(&kid).ok_or(VerifyError::UnknownKid)?;
    let c = check_signed(token, key.borrow(), &config.issuer, &config.audience, now)?;
    access_claims(c, kid)
}

/// The checked claims of an access token, once its subject is one a user can have.
fn access_claims(c: Checked, kid: String) -> Result<AccessClaims, VerifyError> {
    if !valid_access_subject(&c.sub) {
        return Err(VerifyError::InvalidSubject);
    }
    Ok(AccessClaims {
        subject: c.sub,
        issuer: c.iss,
        issued_at: c.iat,
        expires_at: c.exp,
        not_before: c.nbf,
        jti: c.jti,
        kid,
    })
}

impl TrustedServiceKeys {
    /// Verifies a service token at time `now` (Unix seconds): the access-token checks with
    /// `typ` = `service+jwt` and `aud` = `auth`, plus `sub` = `iss` = `service:<the service the
    /// signing key is configured for>` and `exp - iat` ≤ 60 s. Never panics, whatever the input.
    pub fn verify_service_token(
        &self,
        token: &str,
        now: u64,
    ) -> Result<ServiceClaims, VerifyError> {
        let kid = precheck(token, SERVICE_TOKEN_TYPE)?;
        let entry = self.key(&kid).ok_or(VerifyError::UnknownKid)?;
        let principal = format!("{SERVICE_SUBJECT_PREFIX}{}", entry.service);
        let c = check_signed(token, &entry.key, &principal, SERVICE_TOKEN_AUDIENCE, now)?;
        if c.sub != principal {
            return Err(VerifyError::InvalidSubject);
        }
        if c.exp < c.iat || c.exp - c.iat > MAX_SERVICE_TOKEN_TTL_SECS {
            return Err(VerifyError::LifetimeTooLong);
        }
        Ok(ServiceClaims {
            service: entry.service.clone(),
            issued_at: c.iat,
            expires_at: c.exp,
            jti: c.jti,
            kid,
        })
    }
}
