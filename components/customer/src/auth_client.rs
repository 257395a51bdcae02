//! Calls to auth: profiles (one, or up to 100 through the batch endpoint), the JWKS, health and
//! the login proxy. Every call has a timeout and one retry on connection errors only (a request
//! that may have reached auth is never sent twice). The caller's own profile is read with the
//! caller's own access token (`GET /api/v3/users/me`, see [`UserToken`]); every other read with
//! customer's service token. Profiles are cached in key-value for
//! `cache_ttl` seconds and kept `stale_ttl` seconds longer as a fallback while auth is down. A
//! circuit breaker (state in key-value, shared by every instance) opens after `threshold`
//! consecutive failures, answers at once while open, and lets one probe through after `cooldown`.
//! Every answer is validated before use; a malformed one counts as auth being unavailable.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Profile, ProfileError, ProfileLookup, ProfileSource, Profiles};
use crate::kv::Kv;
use crate::transport::{HttpRequest, HttpResponse, LoggedCall, Timeouts, Transport, TransportError, send_logged, start_logged};

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub base_url: String,
    pub timeouts: Timeouts,
    pub cache_ttl: i64,
    pub stale_ttl: i64,
    pub threshold: u32,
    pub cooldown: i64,
}

/// Most ids in one batch call (auth's limit).
pub const BATCH_MAX: usize = 100;
const MAX_BODY: usize = 256 * 1024;
const JWKS_KEY: &str = "auth:jwks";
const BREAKER_KEY: &str = "auth:breaker";
/// Prefix of the cached service token's key; the rest names the signing key (kid and digest).
const SERVICE_TOKEN_KEY: &str = "auth:service-token:";
/// A cached service token (they live 60 s) is reused while it has at least this long left, so
/// none expires on its way to auth, and each is used for about 40 s: one signature instead of
/// one per call, and auth sees the same token again.
const SERVICE_TOKEN_MIN_REMAINING_SECS: i64 = 20;
/// The JWKS cache's lifetime, and the least time between two refetches for an unknown kid.
pub const JWKS_TTL_SECS: i64 = 300;
pub const JWKS_REFETCH_MIN_SECS: i64 = 30;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    pub failures: u32,
    pub open_until: i64,
    pub probe_until: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedProfile {
    profile: Profile,
    fetched_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedServiceToken {
    token: String,
    issued_at: i64,
    expires_at: i64,
}

/// The caller's bearer token and the user it claims to be. A read of that user's profile goes
/// to auth with the caller's own token (`GET /api/v3/users/me`): least privilege (customer's
/// service credential, which reads anyone, is kept for reads no user asked for), and auth
/// answers such a read from its own record of the token, with no rate-limit or audit writes (a
/// user reading itself). Auth checks the token itself, so the call may start before this
/// component has verified it; the answer is for the claimed user only (checked), and callers
/// use it only for a caller verified to be that user. `Debug` shows the user only.
#[derive(Clone)]
pub struct UserToken {
    user: String,
    token: String,
}

impl UserToken {
    pub fn new(user: impl Into<String>, token: impl Into<String>) -> Self {
        Self { user: user.into(), token: token.into() }
    }

    /// The user the token claims to be.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl std::fmt::Debug for UserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserToken").field("user", &self.user).field("token", &"<redacted>").finish()
    }
}

/// A profile lookup begun by [`AuthClient::start_profile`], read by
/// [`AuthClient::finish_profile`]; while it is in flight the caller does its own work.
pub struct ProfileFetch<'a> {
    /// The user whose profile this is.
    id: String,
    /// The cached copy, if `start_profile` read the cache (it does not when no copy can be fresh:
    /// then the stale copy is read only if auth fails).
    cached: Option<Option<CachedProfile>>,
    state: FetchState<'a>,
    /// Set while this lookup is the half-open breaker's one probe and unread: dropped unread
    /// (its request refused for another reason, or for another user), it hands the probe on,
    /// else the breaker would stay shut for the probe's whole window, and a client sending
    /// such requests could keep it shut.
    probe_of: Option<&'a dyn Kv>,
}

impl ProfileFetch<'_> {
    /// The user whose profile is being looked up.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for ProfileFetch<'_> {
    fn drop(&mut self) {
        if let Some(kv) = self.probe_of.take() {
            let mut state = breaker_in(kv);
            state.probe_until = 0;
            save_breaker_in(kv, &state);
            telemetry::info("auth circuit: a probe dropped unread; the next call probes", &[]);
        }
    }
}

/// How the breaker lets a call through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Closed, no failure counted: a success has nothing to reset.
    Clear,
    /// Closed, with failures counted.
    Counted,
    /// Half-open: this call is the one probe.
    Probe,
}

// One value per profile lookup, moved once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum FetchState<'a> {
    /// Answered without a call (fresh cache, open circuit).
    Done(Result<ProfileLookup, ProfileError>),
    /// No request could be made (no service key).
    Failed(String),
    Sent {
        request: HttpRequest,
        call: LoggedCall<'a>,
        /// Sent with the caller's own token rather than the service token.
        as_user: bool,
        /// How the breaker let it through.
        pass: Pass,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedJwks {
    json: String,
    fetched_at: i64,
}

/// Counts the breaker's consecutive failures atomically where every instance sees them (the
/// database): key-value, where the breaker's state lives, has no increment, so concurrent
/// failures counted there read the same count and collapse into about one.
pub trait FailureCount {
    /// Adds a failure and returns the count with it: a failure more than
    /// [`FAILURE_STREAK_SECS`] after the last starts a new count. `None` when it cannot count
    /// (the breaker then counts in key-value, as before).
    fn add_failure(&self, now: i64) -> Option<u32>;
    /// Ends the count (a success).
    fn clear_failures(&self);
}

/// Failures further apart than this are not consecutive.
pub const FAILURE_STREAK_SECS: i64 = 60;

fn breaker_in(kv: &dyn Kv) -> BreakerState {
    kv.get(BREAKER_KEY).and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn save_breaker_in(kv: &dyn Kv, state: &BreakerState) {
    if *state == BreakerState::default() {
        kv.delete(BREAKER_KEY);
    } else if let Ok(bytes) = serde_json::to_vec(state) {
        kv.set(BREAKER_KEY, &bytes);
    }
}

pub struct AuthClient<'a> {
    settings: AuthSettings,
    transport: &'a dyn Transport,
    kv: &'a dyn Kv,
    service_keys: Option<&'a tokens::SigningKeys>,
    user_token: Option<&'a UserToken>,
    failure_count: Option<&'a dyn FailureCount>,
    now: i64,
}

/// Checks one `user` object from auth: the id asked for, sane name and email.
pub fn validate_user(value: &Value, expected_id: Option<&str>) -> Result<Profile, String> {
    let object = value.as_object().ok_or("user is not an object")?;
    let text = |name: &str| object.get(name).and_then(Value::as_str).ok_or(format!("user.{name} missing or not a string"));
    let id = text("id")?;
    if let Some(expected) = expected_id
        && id != expected {
            return Err("auth answered for another user id".into());
        }
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err("user.id out of bounds".into());
    }
    let name = text("name")?;
    if name.trim().is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) {
        return Err("user.name out of bounds".into());
    }
    let email = text("email")?;
    let well_formed = email.len() <= 254
        && email.split('@').count() == 2
        && email.split('@').all(|part| !part.is_empty())
        && !email.chars().any(|c| c.is_control() || c.is_whitespace());
    if !well_formed {
        return Err("user.email malformed".into());
    }
    for stamp in ["created_at", "updated_at"] {
        let value = text(stamp)?;
        if value.len() < 10 || value.len() > 40 {
            return Err(format!("user.{stamp} malformed"));
        }
    }
    let email_verified = match object.get("email_verified") {
        None => false,
        Some(Value::Bool(verified)) => *verified,
        Some(_) => return Err("user.email_verified is not a boolean".into()),
    };
    Ok(Profile { id: id.to_string(), name: name.to_string(), email: email.to_string(), email_verified })
}

fn percent_encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl<'a> AuthClient<'a> {
    pub fn new(
        settings: AuthSettings,
        transport: &'a dyn Transport,
        kv: &'a dyn Kv,
        service_keys: Option<&'a tokens::SigningKeys>,
        now: i64,
    ) -> Self {
        Self { settings, transport, kv, service_keys, user_token: None, failure_count: None, now }
    }

    /// The breaker counts failures in `count` (see [`FailureCount`]).
    pub fn with_failure_count(mut self, count: &'a dyn FailureCount) -> Self {
        self.failure_count = Some(count);
        self
    }

    /// Reads of `user_token`'s own profile go with that token (see [`UserToken`]).
    pub fn with_user_token(mut self, user_token: Option<&'a UserToken>) -> Self {
        self.user_token = user_token;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.base_url.trim_end_matches('/'))
    }

    /// Seconds since `fetched_at`, a time read back from key-value: any value there, however
    /// odd, gives an age (saturated), never an overflow.
    fn age(&self, fetched_at: i64) -> i64 {
        self.now.saturating_sub(fetched_at)
    }

    /// Sends once, and once more if no connection could be made.
    fn send(&self, request: &HttpRequest, extra: &[(&str, Value)]) -> Result<HttpResponse, TransportError> {
        match self.send_once(request, 1, extra) {
            Err(TransportError::Connect(_)) => self.send_once(request, 2, extra),
            other => other,
        }
    }

    /// [`Self::send_once`] without waiting: the answer is read with [`LoggedCall::wait`].
    fn start_once(&self, request: &HttpRequest) -> LoggedCall<'a> {
        let mut request = request.clone();
        request.headers.extend(telemetry::propagation_headers());
        start_logged(self.transport, "auth", &request, 1, &[])
    }

    /// One attempt, carrying the request's id and a `traceparent` (same trace, new span), logged.
    fn send_once(&self, request: &HttpRequest, attempt: u32, extra: &[(&str, Value)]) -> Result<HttpResponse, TransportError> {
        let mut request = request.clone();
        request.headers.extend(telemetry::propagation_headers());
        send_logged(self.transport, "auth", &request, attempt, extra)
    }

    fn service_token_key(keys: &tokens::SigningKeys) -> String {
        format!("{SERVICE_TOKEN_KEY}{}", keys.active_key_fingerprint())
    }

    /// A service token for calling auth: the cached one while it has time left, else a new one
    /// (cached for the next requests of every instance).
    fn service_token(&self) -> Result<String, String> {
        let keys = self.service_keys.ok_or("service_token_key is not configured")?;
        let cache_key = Self::service_token_key(keys);
        let cached: Option<CachedServiceToken> = self.kv.get(&cache_key).and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(entry) = cached
            && entry.issued_at <= self.now
            && entry.expires_at.saturating_sub(self.now) >= SERVICE_TOKEN_MIN_REMAINING_SECS
        {
            return Ok(entry.token);
        }
        let issued = keys
            .issue_service_token("customer", u64::try_from(self.now).unwrap_or(0))
            .map_err(|e| format!("cannot issue a service token: {e}"))?;
        let entry = CachedServiceToken {
            token: issued.token,
            issued_at: i64::try_from(issued.issued_at).unwrap_or(i64::MAX),
            expires_at: i64::try_from(issued.expires_at).unwrap_or(0),
        };
        if let Ok(bytes) = serde_json::to_vec(&entry) {
            self.kv.set(&cache_key, &bytes);
        }
        Ok(entry.token)
    }

    /// Auth refused our token (its trusted keys changed?): the next call signs a new one.
    fn forget_service_token(&self) {
        if let Some(keys) = self.service_keys {
            self.kv.delete(&Self::service_token_key(keys));
        }
    }

    fn service_request(&self, method: &'static str, path: &str, body: Option<Vec<u8>>) -> Result<HttpRequest, String> {
        let token = self.service_token()?;
        let mut headers = vec![
            ("authorization".to_string(), format!("Bearer {token}")),
            ("accept".to_string(), "application/json".to_string()),
        ];
        if body.is_some() {
            headers.push(("content-type".to_string(), "application/json".to_string()));
        }
        Ok(HttpRequest { method, url: self.url(path), headers, body, timeouts: self.settings.timeouts, max_body: MAX_BODY })
    }

    // ---- circuit breaker ---------------------------------------------------------------------

    pub fn breaker(&self) -> BreakerState {
        breaker_in(self.kv)
    }

    fn save_breaker(&self, state: &BreakerState) {
        save_breaker_in(self.kv, state);
    }

    /// `Err(retry_after)` while the breaker is open (or another request is probing); else how
    /// it lets the call through.
    fn breaker_allows(&self) -> Result<Pass, u32> {
        let mut state = self.breaker();
        if state.failures < self.settings.threshold {
            return Ok(if state == BreakerState::default() { Pass::Clear } else { Pass::Counted });
        }
        if self.now < state.open_until {
            return Err(u32::try_from(state.open_until - self.now).unwrap_or(1).max(1));
        }
        if self.now < state.probe_until {
            return Err(1);
        }
        // Half-open: this request is the probe.
        let probe_window = i64::try_from(self.settings.timeouts.first_byte.as_secs()).unwrap_or(5) + 2;
        state.probe_until = self.now + probe_window;
        self.save_breaker(&state);
        telemetry::warn("auth circuit half-open: sending one probe", &[]);
        Ok(Pass::Probe)
    }

    fn record_success(&self) {
        let state = self.breaker();
        if state != BreakerState::default() {
            if state.failures >= self.settings.threshold {
                telemetry::info("auth circuit closed again", &[]);
            }
            if let Some(count) = self.failure_count {
                count.clear_failures();
            }
            self.save_breaker(&BreakerState::default());
        }
    }

    fn record_failure(&self) {
        let mut state = self.breaker();
        state.failures = match self.failure_count.and_then(|count| count.add_failure(self.now)) {
            // Already open: a late failure (a call sent before it opened) leaves it open.
            Some(counted) => counted.max(state.failures.min(self.settings.threshold)),
            None => state.failures.saturating_add(1),
        };
        if state.failures >= self.settings.threshold {
            state.open_until = self.now + self.settings.cooldown;
            state.probe_until = 0;
            telemetry::warn(
                "auth circuit open",
                &[("cooldown_s", self.settings.cooldown.into()), ("consecutive_failures", state.failures.into())],
            );
        }
        self.save_breaker(&state);
    }

    // ---- profiles ----------------------------------------------------------------------------

    fn cached(&self, id: &str) -> Option<CachedProfile> {
        let cached: CachedProfile = serde_json::from_slice(&self.kv.get(&format!("profile:{id}"))?).ok()?;
        (cached.profile.id == id).then_some(cached)
    }

    fn cache(&self, profile: &Profile) {
        let entry = CachedProfile { profile: profile.clone(), fetched_at: self.now };
        if let Ok(bytes) = serde_json::to_vec(&entry) {
            self.kv.set(&format!("profile:{}", profile.id), &bytes);
        }
    }

    fn stale_or(&self, cached: Option<CachedProfile>, reason: String, retry_after: u32) -> Result<ProfileLookup, ProfileError> {
        match cached {
            Some(entry) if self.age(entry.fetched_at) < self.settings.cache_ttl.saturating_add(self.settings.stale_ttl) => {
                telemetry::warn(
                    "serving a stale cached profile",
                    &[("age_s", self.age(entry.fetched_at).into()), ("reason", reason.as_str().into())],
                );
                Ok(ProfileLookup { profile: entry.profile, source: ProfileSource::StaleCache { age: self.age(entry.fetched_at) } })
            }
            _ => Err(ProfileError::Unavailable { reason, retry_after }),
        }
    }

    /// Auth's answer for one profile: `Ok(None)` when it says 404.
    fn read_profile(&self, id: &str, response: &HttpResponse) -> Result<Option<Profile>, String> {
        match response.status {
            200 => {
                let body: Value = serde_json::from_slice(&response.body).map_err(|_| "auth answered invalid JSON".to_string())?;
                let user = body.get("user").ok_or("auth's answer has no user")?;
                validate_user(user, Some(id)).map(Some)
            }
            404 => Ok(None),
            status => {
                if status == 401 {
                    self.forget_service_token();
                }
                Err(format!("auth answered {status}"))
            }
        }
    }

    /// `GET /api/v3/users/me` with the caller's own token.
    fn user_request(&self, user_token: &UserToken) -> HttpRequest {
        HttpRequest {
            method: "GET",
            url: self.url("/api/v3/users/me"),
            headers: vec![
                ("authorization".to_string(), format!("Bearer {}", user_token.token)),
                ("accept".to_string(), "application/json".to_string()),
            ],
            body: None,
            timeouts: self.settings.timeouts,
            max_body: MAX_BODY,
        }
    }

    /// Drops the cached copy of a profile (a user gone at auth, or erased).
    pub fn forget_profile(&self, id: &str) {
        self.kv.delete(&format!("profile:{id}"));
    }

    fn profile_path(id: &str) -> String {
        format!("/api/v3/users/{}", percent_encode_segment(id))
    }

    /// Begins looking up one profile: from the cache when fresh, else one call to auth sent now
    /// and read by [`Self::finish_profile`], so auth works while the caller runs its own query.
    /// The caller's own profile is asked for with the caller's token, any other with the
    /// service token.
    pub fn start_profile(&self, id: &str) -> ProfileFetch<'a> {
        self.start_lookup(id, true)
    }

    /// [`Self::start_profile`]; `cache_first` false asks auth even when the cache has a fresh copy.
    fn start_lookup(&self, id: &str, cache_first: bool) -> ProfileFetch<'a> {
        // With no cache lifetime no copy can be fresh: the stale one is read only if auth fails.
        let cached = (cache_first && self.settings.cache_ttl > 0).then(|| self.cached(id));
        let fresh = cached.as_ref().and_then(|c| c.as_ref()).filter(|entry| self.age(entry.fetched_at) < self.settings.cache_ttl);
        let state = if let Some(entry) = fresh {
            telemetry::info("profile from cache", &[("user", id.into())]);
            FetchState::Done(Ok(ProfileLookup { profile: entry.profile.clone(), source: ProfileSource::Cache }))
        } else {
            match self.breaker_allows() {
                Err(retry_after) => {
                    let stale = cached.clone().unwrap_or_else(|| self.cached(id));
                    FetchState::Done(self.stale_or(stale, format!("circuit open; retry in {retry_after} s"), retry_after))
                }
                Ok(pass) => {
                    let user_token = self.user_token.filter(|token| token.user == id);
                    let request = match user_token {
                        Some(token) => Ok(self.user_request(token)),
                        None => self.service_request("GET", &Self::profile_path(id), None),
                    };
                    match request {
                        Ok(request) => {
                            let call = self.start_once(&request);
                            FetchState::Sent { request, call, as_user: user_token.is_some(), pass }
                        }
                        Err(reason) => FetchState::Failed(reason),
                    }
                }
            }
        };
        let probe_of = matches!(state, FetchState::Sent { pass: Pass::Probe, .. }).then_some(self.kv);
        ProfileFetch { id: id.to_owned(), cached, state, probe_of }
    }

    /// Reads the answer of [`Self::start_profile`] (retrying once if no connection could be
    /// made), caches it and updates the circuit breaker.
    pub fn finish_profile(&self, mut fetch: ProfileFetch<'a>) -> Result<ProfileLookup, ProfileError> {
        // Read, the probe settles the breaker below.
        fetch.probe_of = None;
        let (id, cached) = (std::mem::take(&mut fetch.id), fetch.cached.take());
        let state = std::mem::replace(&mut fetch.state, FetchState::Failed(String::new()));
        let (fetched, pass) = match state {
            FetchState::Done(result) => return result,
            FetchState::Failed(reason) => (Err(reason), Pass::Counted),
            FetchState::Sent { request, call, as_user, pass } => {
                let response = match call.wait() {
                    Err(TransportError::Connect(_)) => self.send_once(&request, 2, &[]),
                    other => other,
                };
                let fetched = match response {
                    // Auth refused a token we accepted: its user is gone, or auth retired a key
                    // our cached JWKS still holds. The service read has the authoritative answer.
                    Ok(response) if as_user && response.status == 401 => self
                        .service_request("GET", &Self::profile_path(&id), None)
                        .and_then(|request| self.send(&request, &[("after", "user token refused".into())]).map_err(|e| e.to_string()))
                        .and_then(|response| self.read_profile(&id, &response)),
                    other => other.map_err(|e| e.to_string()).and_then(|response| self.read_profile(&id, &response)),
                };
                (fetched, pass)
            }
        };
        if fetched.is_ok() && pass != Pass::Clear {
            self.record_success();
        }
        match fetched {
            Ok(Some(profile)) => {
                self.cache(&profile);
                Ok(ProfileLookup { profile, source: ProfileSource::Auth })
            }
            Ok(None) => {
                self.forget_profile(&id);
                Err(ProfileError::NotFound)
            }
            Err(reason) => {
                self.record_failure();
                let stale = cached.unwrap_or_else(|| self.cached(&id));
                self.stale_or(stale, reason, 5)
            }
        }
    }

    /// Several profiles through the batch endpoint (cache first); missing users are left out.
    pub fn profiles(&self, ids: &[String]) -> Result<BTreeMap<String, ProfileLookup>, ProfileError> {
        let mut found = BTreeMap::new();
        let mut wanted: Vec<String> = Vec::new();
        let mut stale: BTreeMap<String, CachedProfile> = BTreeMap::new();
        for id in ids.iter().collect::<BTreeSet<_>>() {
            match self.cached(id) {
                Some(entry) if self.age(entry.fetched_at) < self.settings.cache_ttl => {
                    found.insert(id.clone(), ProfileLookup { profile: entry.profile, source: ProfileSource::Cache });
                }
                other => {
                    if let Some(entry) = other {
                        stale.insert(id.clone(), entry);
                    }
                    wanted.push(id.clone());
                }
            }
        }
        for chunk in wanted.chunks(BATCH_MAX) {
            let fetched = match self.breaker_allows() {
                Err(retry_after) => Err((format!("circuit open; retry in {retry_after} s"), retry_after)),
                Ok(_) => self.fetch_batch(chunk).map_err(|reason| {
                    self.record_failure();
                    (reason, 5)
                }),
            };
            match fetched {
                Ok(users) => {
                    self.record_success();
                    for profile in users {
                        self.cache(&profile);
                        found.insert(profile.id.clone(), ProfileLookup { profile, source: ProfileSource::Auth });
                    }
                }
                Err((reason, retry_after)) => {
                    for id in chunk {
                        let lookup = self.stale_or(stale.remove(id), reason.clone(), retry_after)?;
                        found.insert(id.clone(), lookup);
                    }
                }
            }
        }
        Ok(found)
    }

    fn fetch_batch(&self, ids: &[String]) -> Result<Vec<Profile>, String> {
        let body = serde_json::to_vec(&serde_json::json!({ "ids": ids })).map_err(|e| e.to_string())?;
        let request = self.service_request("POST", "/api/v3/users/batch", Some(body))?;
        let response = self.send(&request, &[("ids", ids.len().into())]).map_err(|e| e.to_string())?;
        if response.status != 200 {
            if response.status == 401 {
                self.forget_service_token();
            }
            return Err(format!("auth answered {}", response.status));
        }
        validate_batch(&response.body, ids)
    }

    // ---- JWKS --------------------------------------------------------------------------------

    /// Auth's public keys from the cache, fetched when absent or older than the TTL; `refetch`
    /// (an unknown kid) fetches again unless the cache is younger than the minimum interval.
    pub fn jwks(&self, refetch: bool) -> Result<tokens::Verifier, ProfileError> {
        let cached: Option<CachedJwks> = self.kv.get(JWKS_KEY).and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(entry) = &cached {
            let age = self.age(entry.fetched_at);
            let fresh = if refetch { age < JWKS_REFETCH_MIN_SECS } else { age < JWKS_TTL_SECS };
            if fresh
                && let Ok(verifier) = tokens::Verifier::from_jwks(&entry.json) {
                    return Ok(verifier);
                }
        }
        let request = HttpRequest {
            method: "GET",
            url: self.url("/.well-known/jwks.json"),
            headers: vec![("accept".into(), "application/json".into())],
            body: None,
            timeouts: self.settings.timeouts,
            max_body: tokens::MAX_JWKS_LEN,
        };
        let fetched = self.send(&request, &[]).map_err(|e| e.to_string()).and_then(|response| {
            if response.status != 200 {
                return Err(format!("auth answered {}", response.status));
            }
            let json = String::from_utf8(response.body).map_err(|_| "JWKS is not UTF-8".to_string())?;
            let verifier = tokens::Verifier::from_jwks(&json).map_err(|e| e.to_string())?;
            Ok((json, verifier))
        });
        match fetched {
            Ok((json, verifier)) => {
                if let Ok(bytes) = serde_json::to_vec(&CachedJwks { json, fetched_at: self.now }) {
                    self.kv.set(JWKS_KEY, &bytes);
                }
                Ok(verifier)
            }
            Err(reason) => {
                // Read again: on a cold start every instance fetches at once, and another one's
                // answer may have arrived while ours timed out. Else a stale JWKS still verifies
                // tokens signed by the keys it knows.
                let known = self.kv.get(JWKS_KEY).and_then(|b| serde_json::from_slice::<CachedJwks>(&b).ok()).or(cached);
                if let Some(verifier) = known.and_then(|entry| tokens::Verifier::from_jwks(&entry.json).ok()) {
                    telemetry::warn("JWKS refetch failed; using the cached keys", &[("reason", reason.as_str().into())]);
                    return Ok(verifier);
                }
                Err(ProfileError::Unavailable { reason: format!("JWKS: {reason}"), retry_after: 5 })
            }
        }
    }

    // ---- health and login --------------------------------------------------------------------

    /// Auth's health route; the latency in milliseconds.
    pub fn health(&self) -> Result<f64, String> {
        let request = HttpRequest {
            method: "GET",
            url: self.url("/api/v3/auth/health"),
            headers: Vec::new(),
            body: None,
            timeouts: self.settings.timeouts,
            max_body: 16 * 1024,
        };
        let response = self.send_once(&request, 1, &[]).map_err(|e| e.to_string())?;
        let latency = response.elapsed.as_secs_f64() * 1000.0;
        match response.status {
            200 => Ok((latency * 100.0).round() / 100.0),
            status => Err(format!("auth answered {status}")),
        }
    }

    /// Forwards a login to auth (the seed's login proxy). Not retried: a login may have counted.
    /// `forwarded_for` is the `X-Forwarded-For` to send (the client's chain, ending with the
    /// address this request came from).
    pub fn login(&self, body: Vec<u8>, forwarded_for: Option<&str>) -> Result<HttpResponse, TransportError> {
        let request = self.forwarded("POST", "/api/v3/auth/login", None, body, forwarded_for);
        self.send_once(&request, 1, &[("proxied", true.into())])
    }

    /// `DELETE /api/v3/users/me` with the user's own token and body (`{password}`, checked by
    /// auth), for an account's erasure. Sent again only if no connection could be made: a first
    /// attempt that reached auth may have deleted the account.
    pub fn delete_account(&self, user_token: &str, body: Vec<u8>, forwarded_for: Option<&str>) -> Result<HttpResponse, TransportError> {
        let request = self.forwarded("DELETE", "/api/v3/users/me", Some(user_token), body, forwarded_for);
        self.send(&request, &[("erasure", true.into())])
    }

    /// A client's JSON request passed on to auth: marked as forwarded by customer (a loop back
    /// here is refused), with the client's address chain and, for a user's own request, its token.
    fn forwarded(&self, method: &'static str, path: &str, user_token: Option<&str>, body: Vec<u8>, forwarded_for: Option<&str>) -> HttpRequest {
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), "application/json".to_string()),
            ("x-forwarded-by".to_string(), "customer".to_string()),
        ];
        if let Some(token) = user_token {
            headers.push(("authorization".to_string(), format!("Bearer {token}")));
        }
        if let Some(chain) = forwarded_for {
            headers.push(("x-forwarded-for".to_string(), chain.to_string()));
        }
        HttpRequest { method, url: self.url(path), headers, body: Some(body), timeouts: self.settings.timeouts, max_body: 64 * 1024 }
    }
}

/// Checks a batch answer: every user is one we asked for, at most once; `missing` only ids we
/// asked for; together they account for every id.
pub fn validate_batch(body: &[u8], asked: &[String]) -> Result<Vec<Profile>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "auth answered invalid JSON".to_string())?;
    let users = value.get("users").and_then(Value::as_array).ok_or("batch answer has no users array")?;
    let missing = value.get("missing").and_then(Value::as_array).ok_or("batch answer has no missing array")?;
    let asked: BTreeSet<&str> = asked.iter().map(String::as_str).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut profiles = Vec::new();
    for user in users {
        let profile = validate_user(user, None)?;
        if !asked.contains(profile.id.as_str()) {
            return Err("auth answered a user we did not ask for".into());
        }
        if !seen.insert(profile.id.clone()) {
            return Err("auth answered a user twice".into());
        }
        profiles.push(profile);
    }
    for id in missing {
        let id = id.as_str().ok_or("missing holds a non-string")?;
        if !asked.contains(id) || !seen.insert(id.to_string()) {
            return Err("missing holds an id we did not ask for, or one also answered".into());
        }
    }
    if seen.len() != asked.len() {
        return Err("auth's answer leaves ids unaccounted for".into());
    }
    Ok(profiles)
}

impl Profiles for AuthClient<'_> {
    fn profile(&self, id: &str) -> Result<ProfileLookup, ProfileError> {
        self.finish_profile(self.start_profile(id))
    }

    fn current_profile(&self, id: &str) -> Result<ProfileLookup, ProfileError> {
        self.finish_profile(self.start_lookup(id, false))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::time::Duration;

    use super::*;
    use crate::kv::MemoryKv;

    type Answer = Box<dyn Fn(&HttpRequest) -> Result<HttpResponse, TransportError>>;
    /// Every call a fake saw: (path, bearer token).
    type SeenCalls = std::rc::Rc<RefCell<Vec<(String, String)>>>;

    struct Fake {
        answer: RefCell<Answer>,
        calls: Cell<u32>,
    }

    impl Fake {
        fn new(f: impl Fn(&HttpRequest) -> Result<HttpResponse, TransportError> + 'static) -> Self {
            Self { answer: RefCell::new(Box::new(f)), calls: Cell::new(0) }
        }
        fn set(&self, f: impl Fn(&HttpRequest) -> Result<HttpResponse, TransportError> + 'static) {
            *self.answer.borrow_mut() = Box::new(f);
        }
    }

    impl Transport for Fake {
        fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
            self.calls.set(self.calls.get() + 1);
            (self.answer.borrow())(request)
        }
    }

    fn ok(body: Value) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse { status: 200, headers: Vec::new(), body: body.to_string().into_bytes(), elapsed: Duration::ZERO })
    }

    fn user(id: &str) -> Value {
        serde_json::json!({"id": id, "name": "Ada", "email": "ada@example.org",
            "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"})
    }

    fn settings() -> AuthSettings {
        AuthSettings {
            base_url: "http://auth.test".into(),
            timeouts: Timeouts::all(Duration::from_secs(1)),
            cache_ttl: 60,
            stale_ttl: 3600,
            threshold: 3,
            cooldown: 10,
        }
    }

    fn keys() -> tokens::SigningKeys {
        tokens::SigningKeys::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
    }

    #[test]
    fn validation_refuses_other_ids_and_bad_fields() {
        assert!(validate_user(&user("u1"), Some("u1")).is_ok());
        assert!(validate_user(&user("u2"), Some("u1")).is_err());
        let mut bad = user("u1");
        bad["email"] = "not-an-email".into();
        assert!(validate_user(&bad, Some("u1")).is_err());
        bad = user("u1");
        bad["name"] = "x".repeat(300).into();
        assert!(validate_user(&bad, Some("u1")).is_err());
        bad = user("u1");
        bad["name"] = Value::Null;
        assert!(validate_user(&bad, Some("u1")).is_err());
        // email_verified: read when auth says it, false when it does not, refused when odd.
        assert!(!validate_user(&user("u1"), Some("u1")).unwrap().email_verified);
        let mut verified = user("u1");
        verified["email_verified"] = true.into();
        assert!(validate_user(&verified, Some("u1")).unwrap().email_verified);
        verified["email_verified"] = "yes".into();
        assert!(validate_user(&verified, Some("u1")).is_err());
    }

    #[test]
    fn batch_answers_must_match_the_question() {
        let asked = vec!["a".to_string(), "b".to_string()];
        let good = serde_json::json!({"users": [user("a")], "missing": ["b"]}).to_string();
        assert_eq!(validate_batch(good.as_bytes(), &asked).unwrap().len(), 1);
        let extra = serde_json::json!({"users": [user("a"), user("c")], "missing": ["b"]}).to_string();
        assert!(validate_batch(extra.as_bytes(), &asked).is_err());
        let short = serde_json::json!({"users": [user("a")], "missing": []}).to_string();
        assert!(validate_batch(short.as_bytes(), &asked).is_err());
        let twice = serde_json::json!({"users": [user("a"), user("a")], "missing": ["b"]}).to_string();
        assert!(validate_batch(twice.as_bytes(), &asked).is_err());
    }

    #[test]
    fn profiles_are_cached_then_served_stale_while_auth_is_down() {
        let kv = MemoryKv::default();
        let fake = Fake::new(|request| {
            assert!(request.headers.iter().any(|(k, v)| k == "authorization" && v.starts_with("Bearer ")));
            ok(serde_json::json!({"user": user("u1")}))
        });
        let keys = keys();
        let client = AuthClient::new(settings(), &fake, &kv, Some(&keys), 1000);
        assert_eq!(client.profile("u1").unwrap().source, ProfileSource::Auth);
        assert_eq!(client.profile("u1").unwrap().source, ProfileSource::Cache);
        assert_eq!(fake.calls.get(), 1);
        fake.set(|_| Err(TransportError::Connect("refused".into())));
        let later = AuthClient::new(settings(), &fake, &kv, Some(&keys), 1100);
        assert_eq!(later.profile("u1").unwrap().source, ProfileSource::StaleCache { age: 100 });
        // Connection errors are retried once.
        assert_eq!(fake.calls.get(), 3);
        // A user never fetched: 503.
        assert!(matches!(later.profile("u9"), Err(ProfileError::Unavailable { .. })));
    }

    #[test]
    fn the_current_profile_is_asked_of_auth_even_when_the_cache_is_fresh() {
        let kv = MemoryKv::default();
        let fake = Fake::new(|_| ok(serde_json::json!({"user": user("u1")})));
        let keys = keys();
        let client = AuthClient::new(settings(), &fake, &kv, Some(&keys), 1000);
        client.profile("u1").unwrap();
        // The user renames themselves at auth within the cache's lifetime.
        fake.set(|_| ok(serde_json::json!({"user": {"id": "u1", "name": "Ada King", "email": "ada@example.org",
            "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-02T00:00:00Z"}})));
        assert_eq!(client.profile("u1").unwrap().profile.name, "Ada");
        let current = client.current_profile("u1").unwrap();
        assert_eq!((current.source, current.profile.name.as_str()), (ProfileSource::Auth, "Ada King"));
        assert_eq!(fake.calls.get(), 2);
        // The answer replaced the cached copy; with auth down, that copy stands in.
        assert_eq!(client.profile("u1").unwrap().profile.name, "Ada King");
        fake.set(|_| Err(TransportError::Connect("refused".into())));
        let stale = AuthClient::new(settings(), &fake, &kv, Some(&keys), 1100).current_profile("u1").unwrap();
        assert_eq!((stale.source, stale.profile.name.as_str()), (ProfileSource::StaleCache { age: 100 }, "Ada King"));
    }

    #[test]
    fn timeouts_and_5xx_are_not_retried_and_malformed_answers_count_as_down() {
        let kv = MemoryKv::default();
        let fake = Fake::new(|_| Err(TransportError::Timeout("first byte".into())));
        let keys = keys();
        let client = AuthClient::new(settings(), &fake, &kv, Some(&keys), 1000);
        assert!(matches!(client.profile("u1"), Err(ProfileError::Unavailable { .. })));
        assert_eq!(fake.calls.get(), 1);
        fake.set(|_| ok(serde_json::json!({"user": user("someone-else")})));
        assert!(matches!(client.profile("u1"), Err(ProfileError::Unavailable { .. })));
        fake.set(|_| Ok(HttpResponse { status: 404, headers: Vec::new(), body: Vec::new(), elapsed: Duration::ZERO }));
        assert_eq!(client.profile("u1"), Err(ProfileError::NotFound));
        // An answer, even a 5xx, is not a connection error: one call, and auth counts as down.
        let before = fake.calls.get();
        fake.set(|_| Ok(HttpResponse { status: 500, headers: Vec::new(), body: b"{}".to_vec(), elapsed: Duration::ZERO }));
        assert!(matches!(client.profile("u2"), Err(ProfileError::Unavailable { .. })));
        assert_eq!(fake.calls.get(), before + 1);
    }

    #[test]
    fn cache_entries_with_extreme_times_and_an_extreme_ttl_do_not_overflow() {
        let kv = MemoryKv::default();
        let fake = Fake::new(|_| Err(TransportError::Connect("refused".into())));
        let keys = keys();
        // A copy from the far past (an entry from another version, or tampered with), and a TTL
        // as large as the variable accepts.
        let odd = serde_json::json!({"profile": {"id": "u1", "name": "Ada", "email": "ada@example.org"}, "fetched_at": i64::MIN});
        kv.set("profile:u1", odd.to_string().as_bytes());
        let settings = AuthSettings { cache_ttl: i64::MAX, stale_ttl: i64::MAX, ..settings() };
        let client = AuthClient::new(settings, &fake, &kv, Some(&keys), 1000);
        let lookup = client.profile("u1");
        assert!(matches!(lookup, Ok(_) | Err(ProfileError::Unavailable { .. })), "{lookup:?}");
    }

    /// Three failed lookups at t = 1000 open the breaker (threshold 3, cool-down 10 s).
    fn trip<'a>(at: &impl Fn(i64) -> AuthClient<'a>) {
        for _ in 0..3 {
            assert!(at(1000).profile("u1").is_err());
        }
    }

    #[test]
    fn the_breaker_opens_then_lets_one_probe_through() {
        let kv = MemoryKv::default();
        let fake = Fake::new(|_| Err(TransportError::Timeout("slow".into())));
        let keys = keys();
        let at = |now| AuthClient::new(settings(), &fake, &kv, Some(&keys), now);
        trip(&at);
        assert_eq!(fake.calls.get(), 3);
        // Open: no call at all.
        match at(1001).profile("u1") {
            Err(ProfileError::Unavailable { retry_after, .. }) => assert_eq!(retry_after, 9),
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.calls.get(), 3);
        // After the cool-down one probe goes out; while it runs, others are refused.
        fake.set(|_| ok(serde_json::json!({"user": user("u1")})));
        let probe = at(1011);
        assert!(probe.breaker_allows().is_ok());
        assert!(at(1011).breaker_allows().is_err());
        probe.record_success();
        assert!(at(1012).profile("u1").is_ok());
        assert_eq!(at(1012).breaker(), BreakerState::default());
    }

    /// A probe dropped unread (its request refused for a bad token, or not a customer) hands the
    /// probe on at once: else each such request would shut the breaker for the probe's window.
    #[test]
    fn a_probe_dropped_unread_lets_the_next_call_probe() {
        let kv = MemoryKv::default();
        let fake = Fake::new(|_| Err(TransportError::Timeout("slow".into())));
        let keys = keys();
        let at = |now| AuthClient::new(settings(), &fake, &kv, Some(&keys), now);
        trip(&at);
        fake.set(|_| ok(serde_json::json!({"user": user("u1")})));
        let client = at(1011);
        drop(client.start_profile("u1"));
        assert_eq!(fake.calls.get(), 4, "the probe was sent");
        assert!(at(1011).profile("u1").is_ok(), "the next call probed, and auth answered");
        assert_eq!((fake.calls.get(), at(1011).breaker()), (5, BreakerState::default()));
        // A lookup that is not the probe leaves the breaker as it is when dropped.
        drop(at(1012).start_profile("u2"));
        assert_eq!(at(1012).breaker(), BreakerState::default());
    }

    #[test]
    fn failures_whose_key_value_writes_were_lost_still_open_the_breaker() {
        struct Counted(Cell<u32>);
        impl FailureCount for Counted {
            fn add_failure(&self, _now: i64) -> Option<u32> {
                self.0.set(self.0.get() + 1);
                Some(self.0.get())
            }
            fn clear_failures(&self) {
                self.0.set(0);
            }
        }
        let kv = MemoryKv::default();
        let fake = Fake::new(|_| Err(TransportError::Timeout("slow".into())));
        let keys = keys();
        let counted = Counted(Cell::new(0));
        let at = |now| AuthClient::new(settings(), &fake, &kv, Some(&keys), now).with_failure_count(&counted);
        // Three concurrent requests that each read "no failure" and wrote back one: key-value
        // ends up saying 1 whichever order they ran in (played here by losing the first two).
        for failure in 0..3 {
            assert!(at(1000).profile("u1").is_err());
            if failure < 2 {
                kv.delete(BREAKER_KEY);
            }
        }
        assert_eq!((counted.0.get(), at(1000).breaker().failures), (3, 3));
        match at(1001).profile("u1") {
            Err(ProfileError::Unavailable { retry_after, .. }) => assert_eq!(retry_after, 9),
            other => panic!("the breaker is open: {other:?}"),
        }
        assert_eq!(fake.calls.get(), 3, "the open breaker sent nothing");
        // A success after the cool-down ends the count too.
        fake.set(|_| ok(serde_json::json!({"user": user("u1")})));
        assert!(at(1011).profile("u1").is_ok());
        assert_eq!((counted.0.get(), at(1012).breaker()), (0, BreakerState::default()));
    }

    #[test]
    fn batch_uses_the_cache_and_one_call() {
        let kv = MemoryKv::default();
        let fake = Fake::new(|request| {
            let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
            let ids: Vec<String> = serde_json::from_value(body["ids"].clone()).unwrap();
            let users: Vec<Value> = ids.iter().filter(|id| *id != "gone").map(|id| user(id)).collect();
            ok(serde_json::json!({"users": users, "missing": if ids.contains(&"gone".to_string()) { vec!["gone"] } else { vec![] }}))
        });
        let keys = keys();
        let client = AuthClient::new(settings(), &fake, &kv, Some(&keys), 1000);
        let ids: Vec<String> = ["a", "b", "gone"].iter().map(|s| s.to_string()).collect();
        let found = client.profiles(&ids).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(fake.calls.get(), 1);
        let again = client.profiles(&ids[..2]).unwrap();
        assert!(again.values().all(|l| l.source == ProfileSource::Cache));
        assert_eq!(fake.calls.get(), 1);
    }

    #[test]
    fn jwks_is_cached_and_refetched_at_most_every_30_seconds() {
        let kv = MemoryKv::default();
        let jwks = keys().jwks_json();
        let fake = Fake::new(move |_| {
            Ok(HttpResponse { status: 200, headers: Vec::new(), body: jwks.clone().into_bytes(), elapsed: Duration::ZERO })
        });
        let at = |now| AuthClient::new(settings(), &fake, &kv, None, now);
        assert!(at(1000).jwks(false).unwrap().contains_kid("k1"));
        assert!(at(1100).jwks(false).is_ok());
        assert_eq!(fake.calls.get(), 1);
        assert!(at(1010).jwks(true).is_ok());
        assert_eq!(fake.calls.get(), 1, "refetch rate-limited");
        assert!(at(1031).jwks(true).is_ok());
        assert_eq!(fake.calls.get(), 2);
    }

    #[test]
    fn a_failed_jwks_fetch_uses_the_keys_another_instance_cached_meanwhile() {
        let kv = std::rc::Rc::new(MemoryKv::default());
        let jwks = keys().jwks_json();
        let other_instance = kv.clone();
        // Our fetch times out; while it waited, another instance's fetch cached the keys.
        let fake = Fake::new(move |_| {
            let entry = CachedJwks { json: jwks.clone(), fetched_at: 1000 };
            other_instance.set(JWKS_KEY, &serde_json::to_vec(&entry).unwrap());
            Err(TransportError::Timeout("first byte".into()))
        });
        let verifier = AuthClient::new(settings(), &fake, &*kv, None, 1000).jwks(false).unwrap();
        assert!(verifier.contains_kid("k1"));

        // With nothing cached anywhere, the failure is the caller's 503.
        let empty = MemoryKv::default();
        fake.set(|_| Err(TransportError::Timeout("first byte".into())));
        assert!(matches!(AuthClient::new(settings(), &fake, &empty, None, 1000).jwks(false), Err(ProfileError::Unavailable { .. })));
    }

    /// The bearer token of every call the fake saw.
    fn recording_fake(status: u16) -> (Fake, std::rc::Rc<RefCell<Vec<String>>>) {
        let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        let fake = Fake::new(move |request| {
            let bearer = request.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.clone());
            log.borrow_mut().push(bearer.unwrap_or_default());
            let mut answer = ok(serde_json::json!({"user": user("u1")}))?;
            answer.status = status;
            Ok(answer)
        });
        (fake, seen)
    }

    #[test]
    fn one_service_token_serves_calls_for_40_seconds_then_a_new_one_is_signed() {
        let kv = MemoryKv::default();
        let (fake, seen) = recording_fake(200);
        let keys = keys();
        let no_cache = AuthSettings { cache_ttl: 0, ..settings() };
        let at = |now| AuthClient::new(no_cache.clone(), &fake, &kv, Some(&keys), now);
        for now in [1000, 1001, 1040] {
            assert_eq!(at(now).profile("u1").unwrap().source, ProfileSource::Auth);
        }
        assert_eq!(at(1041).profile("u1").unwrap().source, ProfileSource::Auth);
        let seen = seen.borrow();
        assert_eq!(seen.len(), 4);
        assert!(seen[0].starts_with("Bearer ey"), "{}", seen[0]);
        assert!(seen[1] == seen[0] && seen[2] == seen[0], "reused while 20 s or more are left");
        assert_ne!(seen[3], seen[0], "19 s left: a new token");
        // Signed at 1041, so it lives until 1101.
        let token = seen[3].trim_start_matches("Bearer ");
        let claims = tokens::TrustedServiceKeys::parse(&keys.trusted_service_entries("customer"))
            .unwrap()
            .verify_service_token(token, 1041)
            .unwrap();
        assert_eq!((claims.issued_at, claims.expires_at), (1041, 1101));
    }

    #[test]
    fn a_refused_service_token_is_forgotten_and_another_key_never_reuses_it() {
        let kv = MemoryKv::default();
        let (refusing, seen) = recording_fake(401);
        let keys = keys();
        let client = AuthClient::new(settings(), &refusing, &kv, Some(&keys), 1000);
        assert!(client.profile("u1").is_err());
        assert!(client.profile("u1").is_err());
        {
            let seen = seen.borrow();
            assert_ne!(seen[0], seen[1], "after a 401 the next call signs a new token");
        }
        let (fake, seen) = recording_fake(200);
        let first = AuthClient::new(AuthSettings { cache_ttl: 0, ..settings() }, &fake, &kv, Some(&keys), 2000);
        first.profile("u1").unwrap();
        let other_key = tokens::SigningKeys::parse("k1:AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let second = AuthClient::new(AuthSettings { cache_ttl: 0, ..settings() }, &fake, &kv, Some(&other_key), 2001);
        second.profile("u1").unwrap();
        let seen = seen.borrow();
        assert_ne!(seen[0], seen[1], "same kid, other seed: its own token");
    }

    #[test]
    fn a_started_profile_lookup_is_answered_when_finished() {
        let kv = MemoryKv::default();
        let (fake, seen) = recording_fake(200);
        let keys = keys();
        let client = AuthClient::new(settings(), &fake, &kv, Some(&keys), 1000);
        let fetch = client.start_profile("u1");
        assert_eq!(seen.borrow().len(), 1, "sent when started");
        assert_eq!(client.finish_profile(fetch).unwrap().source, ProfileSource::Auth);
        let cached = client.start_profile("u1");
        assert_eq!(client.finish_profile(cached).unwrap().source, ProfileSource::Cache);
        assert_eq!(seen.borrow().len(), 1);
    }

    /// Every call the fake saw: (path, bearer token). `status` answers each path; a 200 carries
    /// the user the path names (`/me` names u1).
    fn path_recording_fake(status: impl Fn(&str) -> u16 + 'static) -> (Fake, SeenCalls) {
        let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        let fake = Fake::new(move |request| {
            let path = request.url.trim_start_matches("http://auth.test").to_string();
            let bearer = request.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.clone()).unwrap_or_default();
            log.borrow_mut().push((path.clone(), bearer));
            let id = if path == "/api/v3/users/me" { "u1" } else { path.rsplit('/').next().unwrap_or_default() };
            let mut answer = ok(serde_json::json!({"user": user(id)}))?;
            answer.status = status(&path);
            Ok(answer)
        });
        (fake, seen)
    }

    #[test]
    fn the_callers_own_profile_is_read_with_its_own_token_and_others_with_the_service_token() {
        let kv = MemoryKv::default();
        let (fake, seen) = path_recording_fake(|_| 200);
        let keys = keys();
        let caller = UserToken::new("u1", "the-users-own-token");
        assert!(!format!("{caller:?}").contains("the-users-own-token"), "Debug redacts the token");
        let client = AuthClient::new(settings(), &fake, &kv, Some(&keys), 1000).with_user_token(Some(&caller));
        assert_eq!(client.profile("u1").unwrap().profile.id, "u1");
        assert_eq!(client.profile("u2").unwrap().profile.id, "u2");
        let seen = seen.borrow();
        assert_eq!(seen[0], ("/api/v3/users/me".to_string(), "Bearer the-users-own-token".to_string()));
        assert_eq!(seen[1].0, "/api/v3/users/u2");
        assert!(seen[1].1.starts_with("Bearer ey"), "a service token: {}", seen[1].1);
        // The cache is the same whichever token fetched the profile.
        let fresh = AuthClient::new(settings(), &fake, &kv, Some(&keys), 1001);
        assert_eq!(fresh.profile("u1").unwrap().source, ProfileSource::Cache);
    }

    #[test]
    fn a_refused_user_token_falls_back_to_the_service_read_for_the_authoritative_answer() {
        let keys = keys();
        let caller = UserToken::new("u1", "refused-token");
        for (service_status, want_found) in [(200, true), (404, false)] {
            let kv = MemoryKv::default();
            let (fake, seen) = path_recording_fake(move |path| if path == "/api/v3/users/me" { 401 } else { service_status });
            let client = AuthClient::new(settings(), &fake, &kv, Some(&keys), 1000).with_user_token(Some(&caller));
            match client.profile("u1") {
                Ok(lookup) => assert!(want_found && lookup.source == ProfileSource::Auth),
                Err(err) => assert!(!want_found && err == ProfileError::NotFound, "{err:?}"),
            }
            let paths: Vec<String> = seen.borrow().iter().map(|(path, _)| path.clone()).collect();
            assert_eq!(paths, vec!["/api/v3/users/me", "/api/v3/users/u1"]);
            assert_eq!(client.breaker(), BreakerState::default(), "a refused user token is not auth being down");
        }
    }

    #[test]
    fn with_no_cache_lifetime_a_lookup_costs_one_key_value_read_and_one_write() {
        let kv = MemoryKv::default();
        let (fake, _) = path_recording_fake(|_| 200);
        let keys = keys();
        let caller = UserToken::new("u1", "token");
        let no_cache = AuthSettings { cache_ttl: 0, ..settings() };
        let client = AuthClient::new(no_cache.clone(), &fake, &kv, Some(&keys), 1000).with_user_token(Some(&caller));
        assert_eq!(client.profile("u1").unwrap().source, ProfileSource::Auth);
        assert_eq!(kv.operations.get(), 2, "the breaker read, the copy kept for when auth is down");
        // That copy still serves while auth is down.
        fake.set(|_| Err(TransportError::Timeout("down".into())));
        let later = AuthClient::new(no_cache, &fake, &kv, Some(&keys), 1100).with_user_token(Some(&caller));
        assert_eq!(later.profile("u1").unwrap().source, ProfileSource::StaleCache { age: 100 });
    }
}
