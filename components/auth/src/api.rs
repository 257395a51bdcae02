//! Handlers: request parts in, validated values to the domain, JSON out. Body rules: at most
//! 64 KiB (413), `Content-Type: application/json` (415), valid JSON (400), a JSON object (400),
//! then per-field checks (422, every invalid field listed); unknown fields are ignored.

use serde_json::{Map, Value, json};
use tokens::RefreshToken;

use crate::config::{self, Source};
use crate::domain::accounts::{self, Caller, Credentials, LogoutScope, ProfileChange, Registration, Session, User};
use crate::domain::client_addr::{UNKNOWN_ADDRESS, parse_addr};
use crate::domain::fields::{Name, parse_email};
use crate::domain::mfa::{self, RecoveryCode, SecondFactor, TotpCode};
use crate::domain::password::Password;
use crate::domain::ports::{OneTimeKind, SessionRow, StoreError};
use crate::domain::recovery::{self, IssuedToken, ResetToken, VerificationToken};
use crate::domain::{Ctx, time};
use crate::error::{Error, FieldError};
use crate::store::mysql::MysqlStore;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What a handler needs from the request, free of `spin_sdk` types.
pub struct Incoming<'a> {
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
    pub ctx: Ctx,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            headers: vec![
                ("content-type", "application/json".into()),
                ("cache-control", "no-store".into()),
            ],
            body: Some(value.to_string()),
        }
    }

    fn no_content() -> Reply {
        Reply { status: 204, headers: vec![("cache-control", "no-store".into())], body: None }
    }
}

// ---- request parts -----------------------------------------------------------------------------

/// The body as a JSON object, after the size, media-type and syntax checks.
pub fn json_object(content_type: Option<&str>, body: &[u8]) -> Result<Map<String, Value>, Error> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::PayloadTooLarge);
    }
    if !is_json_media_type(content_type) {
        return Err(Error::UnsupportedMediaType);
    }
    match serde_json::from_slice::<UniqueKeys>(body) {
        Ok(UniqueKeys(Value::Object(map))) => Ok(map),
        Ok(_) => Err(Error::BodyNotObject),
        Err(_) => Err(Error::MalformedJson),
    }
}

/// A JSON value whose objects have no duplicated member names (RFC 7493 I-JSON): a body where a
/// proxy and this service could read different values for one field is not JSON we accept.
struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON without duplicated object keys")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let UniqueKeys(value) = access.next_value()?;
            if map.insert(key, value).is_some() {
                return Err(serde::de::Error::custom("duplicated object key"));
            }
        }
        Ok(Value::Object(map))
    }
}

/// `application/json`, with parameters (e.g. `; charset=utf-8`), any case.
fn is_json_media_type(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The client's address for the throttle and the audit log: the peer from `spin-client-addr`,
/// or, when the peer is a proxy listed in `trusted_proxies`, the client it names in
/// `X-Forwarded-For` (`domain::client_addr`); `unknown` without a peer. The variable is read
/// only for requests that carry `X-Forwarded-For`.
pub fn client_addr(source: &impl Source, peer: Option<&str>, forwarded_for: Option<&str>) -> Result<String, Error> {
    let Some(peer) = peer.and_then(parse_addr) else {
        return Ok(UNKNOWN_ADDRESS.into());
    };
    let client = match forwarded_for {
        None => peer,
        Some(header) => config::trusted_proxies(source)?.client_behind(peer, header),
    };
    Ok(client.to_string())
}

/// Reads body fields, collecting every problem before failing.
struct Fields {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    fn new(map: Map<String, Value>) -> Fields {
        Fields { map, errors: Vec::new() }
    }

    /// A string field; `None` (and an error) when missing or not a string.
    fn required(&mut self, name: &str) -> Option<String> {
        match self.map.get(name) {
            None | Some(Value::Null) => {
                self.errors.push(FieldError::new(name, "required", "is required"));
                None
            }
            Some(Value::String(value)) => Some(value.clone()),
            Some(_) => {
                self.errors.push(FieldError::new(name, "invalid_type", "must be a string"));
                None
            }
        }
    }

    /// A string field that may be absent (or null).
    fn optional(&mut self, name: &str) -> Option<String> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(value)) => Some(value.clone()),
            Some(_) => {
                self.errors.push(FieldError::new(name, "invalid_type", "must be a string"));
                None
            }
        }
    }

    fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|err| self.errors.push(err)).ok()
    }

    fn finish(self) -> Result<(), Error> {
        if self.errors.is_empty() { Ok(()) } else { Err(Error::Validation(self.errors)) }
    }
}

fn new_password(field: &str, raw: &str) -> Result<Password, FieldError> {
    Password::new_secret(raw).map_err(|rule| FieldError::new(field, rule.code(), rule.message()))
}

// ---- DTOs --------------------------------------------------------------------------------------

pub fn parse_registration(map: Map<String, Value>) -> Result<Registration, Error> {
    let mut f = Fields::new(map);
    let name = f.required("name").and_then(|v| f.check(Name::parse("name", &v)));
    let email = f.required("email").and_then(|v| f.check(parse_email("email", &v)));
    let password = f.required("password").and_then(|v| f.check(new_password("password", &v)));
    match (name, email, password) {
        (Some(name), Some(email), Some(password)) if f.errors.is_empty() => Ok(Registration { name, email, password }),
        _ => Err(f.finish().err().unwrap_or(Error::Internal)),
    }
}

pub fn parse_credentials(map: Map<String, Value>) -> Result<Credentials, Error> {
    let mut f = Fields::new(map);
    let email = f.required("email").and_then(|v| f.check(parse_email("email", &v)));
    let password = f.required("password").map(|v| Password::presented(&v));
    let second_factor = second_factor(&mut f);
    match (email, password) {
        (Some(email), Some(password)) if f.errors.is_empty() => Ok(Credentials { email, password, second_factor }),
        _ => Err(f.finish().err().unwrap_or(Error::Internal)),
    }
}

/// `mfa_code` (the authenticator app's six digits) or `recovery_code`, at most one of them.
fn second_factor(f: &mut Fields) -> Option<SecondFactor> {
    let code = f.optional("mfa_code").and_then(|v| f.check(TotpCode::parse("mfa_code", &v)));
    let recovery = f.optional("recovery_code").and_then(|v| f.check(RecoveryCode::parse("recovery_code", &v)));
    match (code, recovery) {
        (Some(_), Some(_)) => {
            f.errors.push(FieldError::new("recovery_code", "conflict", "give mfa_code or recovery_code, not both"));
            None
        }
        (Some(code), None) => Some(SecondFactor::Totp(code)),
        (None, Some(recovery)) => Some(SecondFactor::Recovery(recovery)),
        (None, None) => None,
    }
}

/// `{code}` confirming an authenticator app.
pub fn parse_mfa_confirmation(map: Map<String, Value>) -> Result<TotpCode, Error> {
    let mut f = Fields::new(map);
    match f.required("code").and_then(|v| f.check(TotpCode::parse("code", &v))) {
        Some(code) if f.errors.is_empty() => Ok(code),
        _ => Err(f.finish().err().unwrap_or(Error::Internal)),
    }
}

/// `{password, mfa_code | recovery_code}` turning the second factor off.
pub fn parse_mfa_removal(map: Map<String, Value>) -> Result<(Password, Option<SecondFactor>), Error> {
    let mut f = Fields::new(map);
    let password = f.required("password").map(|v| Password::presented(&v));
    let factor = second_factor(&mut f);
    match password {
        Some(password) if f.errors.is_empty() => Ok((password, factor)),
        _ => Err(f.finish().err().unwrap_or(Error::Internal)),
    }
}

pub fn parse_refresh_token(map: Map<String, Value>) -> Result<Option<RefreshToken>, Error> {
    let mut f = Fields::new(map);
    let token = f.required("refresh_token");
    f.finish()?;
    // A string that cannot be one of ours never reaches the database.
    Ok(token.and_then(|t| RefreshToken::parse(&t).ok()))
}

/// `{token}` of an email verification: `None` when it cannot be one we issue (refused as
/// invalid, never looked up).
pub fn parse_verification(map: Map<String, Value>) -> Result<Option<VerificationToken>, Error> {
    let mut f = Fields::new(map);
    match f.required("token") {
        Some(token) if f.errors.is_empty() => Ok(VerificationToken::parse(&token).ok()),
        _ => Err(f.finish().err().unwrap_or(Error::Internal)),
    }
}

/// `{email}` of a password-reset or email-verification request (a mailer service's).
pub fn parse_mailer_request(map: Map<String, Value>) -> Result<sealed_email::NormalizedEmail, Error> {
    let mut f = Fields::new(map);
    let email = f.required("email").and_then(|v| f.check(parse_email("email", &v)));
    match email {
        Some(email) if f.errors.is_empty() => Ok(email),
        _ => Err(f.finish().err().unwrap_or(Error::Internal)),
    }
}

/// `{token, new_password}`: the token is `None` when it cannot be one we issue (refused as
/// invalid, never looked up); the new password follows the registration rules (422).
pub fn parse_password_reset(map: Map<String, Value>) -> Result<(Option<ResetToken>, Password), Error> {
    let mut f = Fields::new(map);
    let token = f.required("token");
    let new = f.required("new_password").and_then(|v| f.check(new_password("new_password", &v)));
    match (token, new) {
        (Some(token), Some(new)) if f.errors.is_empty() => Ok((ResetToken::parse(&token).ok(), new)),
        _ => Err(f.finish().err().unwrap_or(Error::Internal)),
    }
}

/// `{refresh_token, scope?}`: `scope` is `session` (the default), `others` or `all`.
pub fn parse_logout(map: Map<String, Value>) -> Result<(Option<RefreshToken>, LogoutScope), Error> {
    let mut f = Fields::new(map);
    let token = f.required("refresh_token");
    let scope = match f.optional("scope").as_deref() {
        None => LogoutScope::Session,
        Some(raw) => LogoutScope::parse(raw).unwrap_or_else(|| {
            f.errors.push(FieldError::new("scope", "invalid_value", "must be session, others or all"));
            LogoutScope::Session
        }),
    };
    f.finish()?;
    // A string that cannot be one of ours never reaches the database.
    Ok((token.and_then(|t| RefreshToken::parse(&t).ok()), scope))
}

pub fn parse_profile_change(map: Map<String, Value>) -> Result<ProfileChange, Error> {
    let mut f = Fields::new(map);
    let name = f.optional("name").and_then(|v| f.check(Name::parse("name", &v)));
    let email = f.optional("email").and_then(|v| f.check(parse_email("email", &v)));
    let current_password = f.optional("current_password").map(|v| Password::presented(&v));
    let touched = ["name", "email"].iter().any(|k| f.map.get(*k).is_some_and(|v| !v.is_null()));
    if !touched {
        f.errors.push(FieldError::new("body", "required", "give at least one of name and email"));
    }
    f.finish()?;
    Ok(ProfileChange { name, email, current_password })
}

pub fn parse_password_change(map: Map<String, Value>) -> Result<(Password, Password), Error> {
    let mut f = Fields::new(map);
    let current = f.required("current_password").map(|v| Password::presented(&v));
    let new = f.required("new_password").and_then(|v| f.check(new_password("new_password", &v)));
    match (current, new) {
        (Some(current), Some(new)) if f.errors.is_empty() => Ok((current, new)),
        _ => Err(f.finish().err().unwrap_or(Error::Internal)),
    }
}

pub fn parse_password_confirmation(map: Map<String, Value>) -> Result<Password, Error> {
    let mut f = Fields::new(map);
    let password = f.required("password").map(|v| Password::presented(&v));
    match password {
        Some(password) if f.errors.is_empty() => Ok(password),
        _ => Err(f.finish().err().unwrap_or(Error::Internal)),
    }
}

pub fn parse_batch(map: Map<String, Value>) -> Result<Vec<String>, Error> {
    let mut f = Fields::new(map);
    let ids = match f.map.get("ids") {
        None | Some(Value::Null) => {
            f.errors.push(FieldError::new("ids", "required", "is required"));
            Vec::new()
        }
        Some(Value::Array(items)) => {
            let mut ids = Vec::with_capacity(items.len());
            let mut errors = Vec::new();
            if let Err(err) = accounts::check_batch_size(items.len()) {
                errors.push(err);
            } else {
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        // `client_auth.id` is VARCHAR(255): a longer id names nobody.
                        Some(id) if id.chars().count() > accounts::MAX_ID_CHARS => errors.push(FieldError::new(
                            format!("ids[{i}]"),
                            "too_long",
                            format!("must be at most {} characters", accounts::MAX_ID_CHARS),
                        )),
                        Some(id) if !id.is_empty() => ids.push(id.to_owned()),
                        Some(_) => errors.push(FieldError::new(format!("ids[{i}]"), "required", "must not be empty")),
                        None => errors.push(FieldError::new(format!("ids[{i}]"), "invalid_type", "must be a string")),
                    }
                }
            }
            f.errors.extend(errors);
            ids
        }
        Some(_) => {
            f.errors.push(FieldError::new("ids", "invalid_type", "must be an array of strings"));
            Vec::new()
        }
    };
    f.finish()?;
    Ok(ids)
}

// ---- views -------------------------------------------------------------------------------------

pub fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "email_verified": user.email_verified,
        "mfa_enabled": user.mfa_enabled,
        "created_at": time::rfc3339(user.created_at),
        "updated_at": time::rfc3339(user.updated_at),
    })
}

pub fn session_json(session: &Session) -> Value {
    json!({
        "user": user_json(&session.user),
        "access_token": session.access.token,
        "token_type": "Bearer",
        "expires_in": session.access.expires_in,
        "refresh_token": session.refresh.as_str(),
    })
}

// ---- handlers ----------------------------------------------------------------------------------

/// A `db_url` that cannot name a MySQL database, or whose address spin.toml does not allow
/// (`auth_db_address`), is the operator's mistake, not an outage: 500 naming the variable rather
/// than 503 "retry shortly" for ever.
fn open_store(source: &impl Source) -> Result<MysqlStore, Error> {
    let url = config::required(source, config::DB_URL)?;
    if !url.strip_prefix("mysql://").is_some_and(|rest| rest.contains('/')) {
        return Err(Error::misconfigured(config::DB_URL, "is not a mysql://…/database URL"));
    }
    MysqlStore::open(&url).map_err(|err| match err {
        StoreError::Unavailable(cause) if cause.contains("is not permitted") => {
            Error::misconfigured(config::DB_URL, "names an address spin.toml does not allow")
        }
        other => Error::from(other),
    })
}

pub fn health(source: &impl Source) -> Result<Reply, Error> {
    let store = open_store(source)?;
    store.ping()?;
    Ok(Reply::json(200, &json!({"status": "ok", "database": "ok"})))
}

pub fn jwks(source: &impl Source) -> Result<Reply, Error> {
    let keys = config::signing_keys(source)?;
    Ok(Reply {
        status: 200,
        headers: vec![
            ("content-type", "application/json".into()),
            // Short enough that a rotation (add at the end, then move to the front) propagates.
            ("cache-control", "public, max-age=300".into()),
        ],
        body: Some(keys.jwks_json()),
    })
}

pub fn register(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let input = parse_registration(json_object(req.content_type, req.body)?)?;
    let (crypto, settings) = (config::crypto(source)?, config::settings(source)?);
    let mut store = open_store(source)?;
    let session = accounts::register(&mut store, &crypto, &settings, &req.ctx, input)?;
    let mut reply = Reply::json(201, &session_json(&session));
    reply.headers.push(("location", format!("/api/v3/users/{}", session.user.id)));
    Ok(reply)
}

pub fn login(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let input = parse_credentials(json_object(req.content_type, req.body)?)?;
    let (crypto, settings) = (config::crypto(source)?, config::settings(source)?);
    let mut store = open_store(source)?;
    let session = accounts::login(&mut store, &crypto, &settings, &req.ctx, input)?;
    Ok(Reply::json(200, &session_json(&session)))
}

pub fn refresh(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let token = parse_refresh_token(json_object(req.content_type, req.body)?)?.ok_or(Error::InvalidRefreshToken)?;
    let (crypto, settings) = (config::crypto(source)?, config::settings(source)?);
    let mut store = open_store(source)?;
    let session = accounts::refresh(&mut store, &crypto, &settings, &req.ctx, &token)?;
    Ok(Reply::json(200, &session_json(&session)))
}

pub fn logout(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let (token, scope) = parse_logout(json_object(req.content_type, req.body)?)?;
    let Some(token) = token else {
        return Ok(Reply::no_content());
    };
    let mut store = open_store(source)?;
    accounts::logout(&mut store, &req.ctx, &token, scope)?;
    Ok(Reply::no_content())
}

/// Verifies the bearer access token, then opens the store: (crypto, user id, store).
fn signed_in(source: &impl Source, req: &Incoming) -> Result<(crate::domain::Crypto, String, MysqlStore), Error> {
    let crypto = config::crypto(source)?;
    let user_id = accounts::authenticate_user(&crypto, &req.ctx, bearer(req.authorization))?;
    let store = open_store(source)?;
    Ok((crypto, user_id, store))
}

pub fn me(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let crypto = config::crypto(source)?;
    // The token's claims first: a token refused on them never costs a connection.
    let token = accounts::check_access_token(&crypto, &req.ctx, bearer(req.authorization))?;
    let mut store = open_store(source)?;
    let user = accounts::me(&mut store, &crypto, token)?;
    Ok(Reply::json(200, &json!({ "user": user_json(&user) })))
}

pub fn update_me(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let (crypto, user_id, mut store) = signed_in(source, req)?;
    let change = parse_profile_change(json_object(req.content_type, req.body)?)?;
    let settings = config::settings(source)?;
    let user = accounts::update_profile(&mut store, &crypto, &settings, &req.ctx, &user_id, change)?;
    Ok(Reply::json(200, &json!({ "user": user_json(&user) })))
}

pub fn change_password(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let (crypto, user_id, mut store) = signed_in(source, req)?;
    let (current, new) = parse_password_change(json_object(req.content_type, req.body)?)?;
    let settings = config::settings(source)?;
    accounts::change_password(&mut store, &crypto, &settings, &req.ctx, &user_id, &current, &new)?;
    Ok(Reply::no_content())
}

pub fn delete_me(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let (_, user_id, mut store) = signed_in(source, req)?;
    let password = parse_password_confirmation(json_object(req.content_type, req.body)?)?;
    let settings = config::settings(source)?;
    accounts::delete_account(&mut store, &settings, &req.ctx, &user_id, &password)?;
    Ok(Reply::no_content())
}

/// `POST /users/me/mfa/totp` {password}: 201 with the app's secret and `otpauth://` URI.
pub fn enroll_totp(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let (crypto, user_id, mut store) = signed_in(source, req)?;
    let password = parse_password_confirmation(json_object(req.content_type, req.body)?)?;
    let (settings, issuer) = (config::settings(source)?, config::mfa_issuer(source)?);
    let enrollment = mfa::enroll(&mut store, &crypto, &settings, &req.ctx, &user_id, &password, &issuer)?;
    Ok(Reply::json(201, &json!({"secret": enrollment.secret, "otpauth_uri": enrollment.otpauth_uri})))
}

/// `POST /users/me/mfa/totp/confirm` {code}: the factor on, and the recovery codes (shown once).
pub fn confirm_totp(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let (crypto, user_id, mut store) = signed_in(source, req)?;
    let code = parse_mfa_confirmation(json_object(req.content_type, req.body)?)?;
    let recovery_codes = mfa::confirm(&mut store, &crypto, &req.ctx, &user_id, &code)?;
    Ok(Reply::json(200, &json!({ "recovery_codes": recovery_codes })))
}

/// `DELETE /users/me/mfa/totp` {password, mfa_code | recovery_code}.
pub fn remove_totp(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let (crypto, user_id, mut store) = signed_in(source, req)?;
    let (password, factor) = parse_mfa_removal(json_object(req.content_type, req.body)?)?;
    let settings = config::settings(source)?;
    mfa::disable(&mut store, &crypto, &settings, &req.ctx, &user_id, &password, factor.as_ref())?;
    Ok(Reply::no_content())
}

pub fn sessions(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let crypto = config::crypto(source)?;
    let token = accounts::check_access_token(&crypto, &req.ctx, bearer(req.authorization))?;
    let mut store = open_store(source)?;
    let sessions = accounts::sessions(&mut store, &req.ctx, token)?;
    let sessions: Vec<Value> = sessions.iter().map(live_session_json).collect();
    Ok(Reply::json(200, &json!({ "sessions": sessions })))
}

pub fn revoke_session(source: &impl Source, req: &Incoming, id: &str) -> Result<Reply, Error> {
    let (_, user_id, mut store) = signed_in(source, req)?;
    accounts::revoke_session(&mut store, &req.ctx, &user_id, id)?;
    Ok(Reply::no_content())
}

/// One entry of the list of sessions (`SessionRow`); `session_json` is a new session's tokens.
fn live_session_json(session: &SessionRow) -> Value {
    let at = |secs: u64| time::rfc3339(i64::try_from(secs).unwrap_or(i64::MAX));
    json!({
        "id": session.id,
        "created_at": at(session.created_at),
        "last_used_at": at(session.last_used_at),
        "expires_at": at(session.expires_at),
        "client_address": session.origin.client_address,
        "user_agent": session.origin.user_agent,
        "current": session.current,
    })
}

fn caller(source: &impl Source, crypto: &crate::domain::Crypto, req: &Incoming) -> Result<Caller, Error> {
    accounts::authenticate_caller(crypto, &req.ctx, bearer(req.authorization), || config::trusted_services(source))
}

fn issued_token_json(issued: &IssuedToken) -> Value {
    json!({
        "user_id": issued.user_id,
        "token": issued.token.as_str(),
        "expires_at": time::rfc3339(i64::try_from(issued.expires_at).unwrap_or(i64::MAX)),
    })
}

/// `POST /users/password-resets` (a service in `password_reset_services`).
pub fn issue_password_reset(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    issue_mailed_token(source, req, OneTimeKind::PasswordReset)
}

/// `POST /users/email-verifications` (a service in `email_verification_services`).
pub fn issue_email_verification(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    issue_mailed_token(source, req, OneTimeKind::EmailVerification)
}

/// A mailer service's `{email}` for a token of `kind`, checked against that kind's own list.
fn issue_mailed_token(source: &impl Source, req: &Incoming, kind: OneTimeKind) -> Result<Reply, Error> {
    let crypto = config::crypto(source)?;
    let caller = caller(source, &crypto, req)?;
    let allowed = match kind {
        OneTimeKind::PasswordReset => config::password_reset_services(source)?,
        OneTimeKind::EmailVerification => config::email_verification_services(source)?,
    };
    let email = parse_mailer_request(json_object(req.content_type, req.body)?)?;
    let settings = config::settings(source)?;
    let mut store = open_store(source)?;
    let issue = match kind {
        OneTimeKind::PasswordReset => recovery::issue_reset,
        OneTimeKind::EmailVerification => recovery::issue_verification,
    };
    let issued = issue(&mut store, &crypto, &settings, &req.ctx, &caller, &allowed, &email)?;
    Ok(Reply::json(201, &issued_token_json(&issued)))
}

/// `POST /auth/password-reset` (anyone holding a reset token).
pub fn reset_password(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let (token, new) = parse_password_reset(json_object(req.content_type, req.body)?)?;
    let crypto = config::crypto(source)?;
    let mut store = open_store(source)?;
    recovery::reset_password(&mut store, &crypto, &req.ctx, token.as_ref(), &new)?;
    Ok(Reply::no_content())
}

/// `POST /auth/email-verification` (anyone holding a verification token).
pub fn verify_email(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let token = parse_verification(json_object(req.content_type, req.body)?)?;
    let crypto = config::crypto(source)?;
    let mut store = open_store(source)?;
    recovery::verify_email(&mut store, &crypto, &req.ctx, token.as_ref())?;
    Ok(Reply::no_content())
}

pub fn get_user(source: &impl Source, req: &Incoming, id: &str) -> Result<Reply, Error> {
    let crypto = config::crypto(source)?;
    let caller = caller(source, &crypto, req)?;
    let settings = config::settings(source)?;
    let mut store = open_store(source)?;
    let user = accounts::read_user(&mut store, &crypto, &settings, &req.ctx, &caller, id)?;
    Ok(Reply::json(200, &json!({ "user": user_json(&user) })))
}

pub fn batch_users(source: &impl Source, req: &Incoming) -> Result<Reply, Error> {
    let crypto = config::crypto(source)?;
    let caller = caller(source, &crypto, req)?;
    let ids = parse_batch(json_object(req.content_type, req.body)?)?;
    let settings = config::settings(source)?;
    let mut store = open_store(source)?;
    let (users, missing) = accounts::read_users(&mut store, &crypto, &settings, &req.ctx, &caller, ids)?;
    let users: Vec<Value> = users.iter().map(user_json).collect();
    Ok(Reply::json(200, &json!({ "users": users, "missing": missing })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn body_rules_in_order() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(json_object(Some("application/json"), &big).unwrap_err(), Error::PayloadTooLarge);
        assert_eq!(json_object(Some("text/plain"), b"{}").unwrap_err(), Error::UnsupportedMediaType);
        assert_eq!(json_object(None, b"{}").unwrap_err(), Error::UnsupportedMediaType);
        assert_eq!(json_object(Some("application/json"), b"{\"a\":").unwrap_err(), Error::MalformedJson);
        assert_eq!(json_object(Some("application/json"), b"[1]").unwrap_err(), Error::BodyNotObject);
        assert!(json_object(Some("Application/JSON; charset=utf-8"), b"{\"x\":1}").is_ok());
        assert_eq!(json_object(Some("application/json"), b"\xff\xfe").unwrap_err(), Error::MalformedJson);
        // Duplicated keys, at the top or nested; numbers as serde_json reads them.
        assert_eq!(json_object(Some("application/json"), br#"{"a":1,"a":2}"#).unwrap_err(), Error::MalformedJson);
        assert_eq!(json_object(Some("application/json"), br#"{"a":{"b":1,"b":1}}"#).unwrap_err(), Error::MalformedJson);
        assert_eq!(json_object(Some("application/json"), br#"{"a":[{"b":1},{"b":1}]}"#).unwrap()["a"][1]["b"], 1);
        let numbers = json_object(Some("application/json"), br#"{"i":-1,"u":18446744073709551615,"f":1.5,"n":null,"t":true}"#).unwrap();
        assert_eq!(Value::Object(numbers), json!({"i":-1,"u":18446744073709551615u64,"f":1.5,"n":null,"t":true}));
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(json_object(Some("application/json"), deep.as_bytes()).unwrap_err(), Error::MalformedJson);
    }

    #[test]
    fn registration_lists_every_invalid_field() {
        let err = parse_registration(obj(json!({"name": 5, "email": "nope", "extra": true}))).err().expect("invalid");
        let Error::Validation(errors) = err else { panic!("not a validation error") };
        let fields: Vec<(&str, &str)> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(fields, vec![("name", "invalid_type"), ("email", "invalid_email"), ("password", "required")]);
        let ok = parse_registration(obj(json!({"name": "A", "email": "a@example.org", "password": "kiwi-banana-77", "unknown": 1})));
        assert!(ok.is_ok());
        let Error::Validation(errors) = parse_registration(obj(json!({"name": "A", "email": "a@example.org", "password": "password1"}))).err().expect("common") else {
            panic!("not a validation error")
        };
        assert_eq!((errors[0].field.as_str(), errors[0].code), ("password", "too_common"));
    }

    #[test]
    fn batch_bounds_and_types() {
        assert_eq!(parse_batch(obj(json!({"ids": ["a", "b"]}))).expect("ok"), vec!["a", "b"]);
        for (body, field, code) in [
            (json!({}), "ids", "required"),
            (json!({"ids": []}), "ids", "too_few"),
            (json!({"ids": "a"}), "ids", "invalid_type"),
            (json!({"ids": ["a", 3]}), "ids[1]", "invalid_type"),
        ] {
            let Error::Validation(errors) = parse_batch(obj(body)).unwrap_err() else { panic!("not validation") };
            assert_eq!((errors[0].field.as_str(), errors[0].code), (field, code));
        }
        let Error::Validation(errors) = parse_batch(obj(json!({"ids": ["a", "x".repeat(256)]}))).unwrap_err() else { panic!("not validation") };
        assert_eq!((errors[0].field.as_str(), errors[0].code), ("ids[1]", "too_long"));
        assert!(parse_batch(obj(json!({"ids": ["é".repeat(255)]}))).is_ok());
        let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let Error::Validation(errors) = parse_batch(obj(json!({ "ids": many }))).unwrap_err() else { panic!("not validation") };
        assert_eq!(errors[0].code, "too_many");
    }

    #[test]
    fn a_second_factor_is_one_code_of_either_kind() {
        let login = |body: Value| parse_credentials(obj(body));
        let base = json!({"email": "a@example.org", "password": "x"});
        assert_eq!(login(base.clone()).expect("ok").second_factor, None);
        let mut with_code = base.clone();
        with_code["mfa_code"] = json!("123 456");
        assert!(matches!(login(with_code).expect("ok").second_factor, Some(SecondFactor::Totp(_))));
        let mut with_recovery = base.clone();
        with_recovery["recovery_code"] = json!("abcd-efgh-ijkl-mnop");
        assert!(matches!(login(with_recovery).expect("ok").second_factor, Some(SecondFactor::Recovery(_))));
        for (extra, field, code) in [
            (json!({"mfa_code": "12345"}), "mfa_code", "invalid_format"),
            (json!({"mfa_code": 123456}), "mfa_code", "invalid_type"),
            (json!({"recovery_code": "nope"}), "recovery_code", "invalid_format"),
            (json!({"mfa_code": "123456", "recovery_code": "ABCD-EFGH-IJKL-MNOP"}), "recovery_code", "conflict"),
        ] {
            let mut body = base.clone();
            body.as_object_mut().expect("object").extend(obj(extra));
            let Error::Validation(errors) = login(body).err().expect("refused") else { panic!("not validation") };
            assert_eq!((errors[0].field.as_str(), errors[0].code), (field, code));
        }
        let Error::Validation(errors) = parse_mfa_confirmation(obj(json!({}))).unwrap_err() else { panic!("not validation") };
        assert_eq!((errors[0].field.as_str(), errors[0].code), ("code", "required"));
        assert!(parse_mfa_removal(obj(json!({"password": "x"}))).expect("ok").1.is_none());
    }

    #[test]
    fn profile_change_needs_a_field() {
        assert!(parse_profile_change(obj(json!({"current_password": "x"}))).is_err());
        assert!(parse_profile_change(obj(json!({"name": "New"}))).is_ok());
    }

    #[test]
    fn headers() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer")), None);
    }

    #[test]
    fn users_render_rfc3339_and_no_secrets() {
        let user = User {
            id: "u".into(),
            name: "N".into(),
            email: "e@example.org".into(),
            email_verified: false,
            mfa_enabled: true,
            created_at: 0,
            updated_at: 1_700_000_000,
        };
        let v = user_json(&user);
        assert_eq!(v["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["updated_at"], "2023-11-14T22:13:20Z");
        assert_eq!((&v["email_verified"], &v["mfa_enabled"]), (&json!(false), &json!(true)));
        assert_eq!(v.as_object().map(|m| m.len()), Some(7));
    }
}
