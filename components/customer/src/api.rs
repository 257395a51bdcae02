//! HTTP handlers: wire in (DTO → domain values), the rules, wire out (domain → JSON). Every
//! error goes through `error.rs`; every write honours `Idempotency-Key` (the erasure only checks it:
//! see [`erase_account`]).

use std::cell::OnceCell;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::http::{Params, Request, Response};

use crate::auth_client::{AuthClient, AuthSettings, FAILURE_STREAK_SECS, FailureCount, ProfileFetch, UserToken};
use crate::config;
use crate::domain::billing::{self, Ctx};
use crate::domain::idempotency::{self, Begin};
use crate::domain::webhook::{self, Event, Outcome};
use crate::domain::{
    AreaIds, AreaIdsError, Customer, IdempotencyKey, PaymentMethodId, PaymentMethodSummary, PriceId, ProfileError,
    CheckoutUrls, ProfileLookup, ProfileSource, Profiles, Quantity, SetupIntent, Store, Subscription, SubscriptionOrder, TaxId, NewTaxId, UserId, Invoice, PendingPayment, BillingAddress, PromotionCode, is_stripe_id,
};
use crate::error::Error;
use crate::kv::{Kv, SpinKv};
use crate::outbound::WasiTransport;
use crate::problem::{FieldError, Problem};
use crate::store::mysql::MysqlStore;
use crate::stripe::{StripeClient, StripeSecret};
use crate::transport::Timeouts;

/// Largest request body read (as auth).
pub const MAX_BODY: usize = 64 * 1024;
/// Largest webhook payload read.
pub const MAX_WEBHOOK_BODY: usize = 512 * 1024;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

// ---- wire types ----------------------------------------------------------------------------------

/// A request as the handlers see it.
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn from_spin(request: &Request) -> Self {
        Self {
            method: request.method().to_string().to_ascii_uppercase(),
            path: request.path().to_string(),
            query: request.query().to_string(),
            headers: request
                .headers()
                .filter_map(|(n, v)| v.as_str().map(|v| (n.to_ascii_lowercase(), v.to_string())))
                .collect(),
            body: request.body().to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The query parameter `name`; given twice it is a 400 (which one a client meant is a guess,
    /// e.g. `at_period_end=true&at_period_end=false`).
    pub fn query_param(&self, name: &str) -> Result<Option<String>, Error> {
        let mut values = form_urlencoded::parse(self.query.as_bytes()).filter(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        let first = values.next();
        if values.next().is_some() {
            return Err(Error::bad_request("invalid_query", format!("{name} may be given only once.")));
        }
        Ok(first)
    }
}

/// An answer before it becomes a Spin response (and what the idempotency table keeps).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Self {
        Self { status, content_type: "application/json".into(), body: body.to_string(), headers: Vec::new() }
    }

    pub fn no_content() -> Self {
        Self { status: 204, content_type: String::new(), body: String::new(), headers: Vec::new() }
    }

    pub fn error(err: &Error) -> Self {
        let problem = err.problem();
        let mut headers = Vec::new();
        if let Some(seconds) = problem.retry_after {
            headers.push(("retry-after".to_string(), seconds.to_string()));
        }
        match err {
            Error::MissingToken => headers.push(("www-authenticate".to_string(), "Bearer".to_string())),
            Error::InvalidToken(_) => headers.push(("www-authenticate".to_string(), r#"Bearer error="invalid_token""#.to_string())),
            _ => {}
        }
        Self { status: problem.status, content_type: "application/problem+json".into(), body: problem.body(), headers }
    }

    pub fn into_response(self) -> Response {
        let mut builder = Response::builder();
        builder.status(self.status);
        if !self.content_type.is_empty() {
            builder.header("content-type", self.content_type);
        }
        for (name, value) in self.headers {
            builder.header(name, value);
        }
        builder.body(self.body).build()
    }
}

fn respond(result: Result<Reply, Error>) -> Response {
    match result {
        Ok(reply) => reply.into_response(),
        Err(err) => Reply::error(&err).into_response(),
    }
}

fn customer_json(c: &Customer) -> Value {
    json!({
        "id": c.id,
        "stripe_customer_id": c.stripe_customer_id,
        "area_ids": c.area_ids.as_slice(),
        "created_at": rfc3339::format(c.created_at),
        "updated_at": rfc3339::format(c.updated_at),
    })
}

fn subscription_json(s: &Subscription) -> Value {
    json!({
        "id": s.id,
        "stripe_subscription_id": s.stripe_subscription_id,
        "status": s.status.as_str(),
        "price_id": s.price_id,
        "quantity": s.quantity,
        "current_period_end": s.current_period_end.map(rfc3339::format),
        "cancel_at_period_end": s.cancel_at_period_end,
    })
}

/// A subscription with the payment waiting for its user (`null` when none does).
fn subscription_view_json(view: &billing::SubscriptionView) -> Value {
    let mut body = subscription_json(&view.subscription);
    body["pending_payment"] = pending_payment_json(view.pending_payment.as_ref());
    body
}

/// A payment waiting for its user (3-D Secure), for Stripe.js; `null` when none does.
fn pending_payment_json(payment: Option<&PendingPayment>) -> Value {
    match payment {
        Some(payment) => json!({"status": payment.status, "client_secret": payment.client_secret}),
        None => Value::Null,
    }
}

fn payment_method_json(m: &PaymentMethodSummary) -> Value {
    json!({
        "id": m.id,
        "type": m.kind,
        "card": m.card.as_ref().map(|c| json!({"brand": c.brand, "last4": c.last4, "exp_month": c.exp_month, "exp_year": c.exp_year})),
    })
}

fn invoice_json(i: &Invoice) -> Value {
    json!({
        "id": i.id,
        "number": i.number,
        "status": i.status,
        "amount_due": i.amount_due,
        "amount_paid": i.amount_paid,
        "currency": i.currency,
        "created": rfc3339::format(i.created),
        "hosted_invoice_url": i.hosted_invoice_url,
        "invoice_pdf": i.invoice_pdf,
    })
}

fn billing_address_json(a: &BillingAddress) -> Value {
    json!({"line1": a.line1, "line2": a.line2, "city": a.city, "postal_code": a.postal_code, "state": a.state, "country": a.country})
}

fn tax_id_json(t: &TaxId) -> Value {
    json!({"id": t.id, "type": t.kind, "value": t.value, "country": t.country, "verification_status": t.verification_status})
}

fn setup_intent_json(intent: &SetupIntent) -> Value {
    json!({"id": intent.id, "client_secret": intent.client_secret, "status": intent.status})
}

fn profile_json(lookup: &ProfileLookup) -> Value {
    let (source, stale, age) = match lookup.source {
        ProfileSource::Auth => ("auth", false, None),
        ProfileSource::Cache => ("cache", false, None),
        ProfileSource::StaleCache { age } => ("stale_cache", true, Some(age)),
    };
    json!({
        "id": lookup.profile.id,
        "name": lookup.profile.name,
        "email": lookup.profile.email,
        "email_verified": lookup.profile.email_verified,
        "source": source,
        "stale": stale,
        "age_seconds": age,
    })
}

// ---- request bodies (DTO → domain) -----------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct AreaIdsDto {
    pub area_ids: Option<Value>,
}

impl TryFrom<AreaIdsDto> for AreaIds {
    type Error = Error;

    fn try_from(dto: AreaIdsDto) -> Result<Self, Error> {
        let Some(raw) = dto.area_ids else {
            return Err(Error::field("area_ids", "required", "is required"));
        };
        let Some(items) = raw.as_array() else {
            return Err(Error::field("area_ids", "invalid_type", "must be an array of integers"));
        };
        let mut values = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match item.as_i64() {
                Some(v) => values.push(v),
                None => errors.push(FieldError::new(format!("area_ids[{index}]"), "invalid_type", "must be an integer")),
            }
        }
        if !errors.is_empty() {
            return Err(Error::Validation(errors));
        }
        AreaIds::parse(&values).map_err(|err| {
            let field = match err {
                AreaIdsError::NotPositive { index } | AreaIdsError::TooLarge { index, .. } => format!("area_ids[{index}]"),
                _ => "area_ids".to_string(),
            };
            Error::field(field, err.code(), err.to_string())
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct SubscribeDto {
    pub price_id: Option<Value>,
    pub quantity: Option<Value>,
    pub promotion_code: Option<Value>,
}

impl TryFrom<SubscribeDto> for SubscriptionOrder {
    type Error = Error;

    /// `quantity` defaults to 1; `promotion_code` is optional (null as absent).
    fn try_from(dto: SubscribeDto) -> Result<Self, Error> {
        let mut errors = Vec::new();
        let price = collect(required_string("price_id", dto.price_id, PriceId::parse), &mut errors)?;
        let quantity = optional_quantity(dto.quantity).map_err(|err| errors.push(err)).ok().flatten();
        let promotion_code = match dto.promotion_code {
            None => None,
            Some(raw) => collect(required_string("promotion_code", Some(raw), PromotionCode::parse), &mut errors)?,
        };
        match (price, errors.is_empty()) {
            (Some(price), true) => Ok(Self { price, quantity: quantity.unwrap_or(Quantity::ONE), promotion_code }),
            _ => Err(Error::Validation(errors)),
        }
    }
}

/// The value of a field parsed on its own, its field errors moved into `errors` (None then);
/// any other error is returned.
fn collect<T>(parsed: Result<T, Error>, errors: &mut Vec<FieldError>) -> Result<Option<T>, Error> {
    match parsed {
        Ok(value) => Ok(Some(value)),
        Err(Error::Validation(mut field)) => {
            errors.append(&mut field);
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// An optional `quantity`: absent or null is None; else an integer from 1 to [`Quantity::MAX`].
fn optional_quantity(raw: Option<Value>) -> Result<Option<Quantity>, FieldError> {
    let out_of_range = |detail: &str| FieldError::new("quantity", "out_of_range", detail);
    match raw {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(v), _) => Quantity::parse(v).map(Some).map_err(out_of_range),
            (None, Some(_)) => Err(out_of_range(Quantity::OUT_OF_RANGE)),
            (None, None) => Err(FieldError::new("quantity", "invalid_type", "must be an integer")),
        },
        Some(_) => Err(FieldError::new("quantity", "invalid_type", "must be an integer")),
    }
}

/// A required string field, parsed: absent or null is `required`, another JSON type
/// `invalid_type`, a string `parse` refuses `invalid_format` with its reason.
fn required_string<T>(field: &str, raw: Option<Value>, parse: impl Fn(&str) -> Result<T, &'static str>) -> Result<T, Error> {
    match raw {
        None => Err(Error::field(field, "required", "is required")),
        Some(Value::String(s)) => parse(&s).map_err(|detail| Error::field(field, "invalid_format", detail)),
        Some(_) => Err(Error::field(field, "invalid_type", "must be a string")),
    }
}

#[derive(Debug, Deserialize)]
pub struct SubscriptionChangeDto {
    pub price_id: Option<Value>,
    pub quantity: Option<Value>,
    pub cancel_at_period_end: Option<Value>,
}

/// What `PATCH /customers/me/subscriptions/{id}` asks for: another price, another quantity, a
/// cancellation at period end scheduled (`true`, as `DELETE`) or withdrawn (`false`), or any
/// of them together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    pub price: Option<PriceId>,
    pub quantity: Option<Quantity>,
    pub cancel_at_period_end: Option<bool>,
}

impl TryFrom<SubscriptionChangeDto> for SubscriptionChange {
    type Error = Error;

    fn try_from(dto: SubscriptionChangeDto) -> Result<Self, Error> {
        if dto.price_id.is_none() && dto.quantity.is_none() && dto.cancel_at_period_end.is_none() {
            let detail = "give price_id, quantity, cancel_at_period_end or several of them";
            return Err(Error::Validation(vec![
                FieldError::new("price_id", "required", detail),
                FieldError::new("quantity", "required", detail),
                FieldError::new("cancel_at_period_end", "required", detail),
            ]));
        }
        let mut errors = Vec::new();
        let price = match dto.price_id {
            None => None,
            Some(raw) => collect(required_string("price_id", Some(raw), PriceId::parse), &mut errors)?,
        };
        let quantity = optional_quantity(dto.quantity).map_err(|err| errors.push(err)).ok().flatten();
        let cancel_at_period_end = match dto.cancel_at_period_end {
            None => None,
            Some(Value::Bool(flag)) => Some(flag),
            Some(_) => {
                errors.push(FieldError::new("cancel_at_period_end", "invalid_type", "must be true or false"));
                None
            }
        };
        if !errors.is_empty() {
            return Err(Error::Validation(errors));
        }
        Ok(Self { price, quantity, cancel_at_period_end })
    }
}

#[derive(Debug, Deserialize)]
pub struct PaymentMethodDto {
    pub payment_method_id: Option<Value>,
}

impl TryFrom<PaymentMethodDto> for PaymentMethodId {
    type Error = Error;

    fn try_from(dto: PaymentMethodDto) -> Result<Self, Error> {
        required_string("payment_method_id", dto.payment_method_id, PaymentMethodId::parse)
    }
}

#[derive(Debug, Deserialize)]
pub struct BillingAddressDto {
    pub line1: Option<Value>,
    pub line2: Option<Value>,
    pub city: Option<Value>,
    pub postal_code: Option<Value>,
    pub state: Option<Value>,
    pub country: Option<Value>,
}

impl TryFrom<BillingAddressDto> for BillingAddress {
    type Error = Error;

    /// `line1` and `country` are required; the other lines may be absent, null or empty.
    fn try_from(dto: BillingAddressDto) -> Result<Self, Error> {
        let mut errors = Vec::new();
        let mut line = |field: &'static str, raw: Option<Value>| match raw {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => BillingAddress::parse_line(&s).map_err(|detail| errors.push(FieldError::new(field, "invalid_format", detail))).ok().flatten(),
            Some(_) => {
                errors.push(FieldError::new(field, "invalid_type", "must be a string"));
                None
            }
        };
        let line1 = line("line1", dto.line1);
        let line2 = line("line2", dto.line2);
        let city = line("city", dto.city);
        let postal_code = line("postal_code", dto.postal_code);
        let state = line("state", dto.state);
        let country = collect(required_string("country", dto.country, BillingAddress::parse_country), &mut errors)?;
        if line1.is_none() && !errors.iter().any(|e| e.field == "line1") {
            errors.insert(0, FieldError::new("line1", "required", "is required"));
        }
        match (line1, country) {
            (Some(line1), Some(country)) if errors.is_empty() => Ok(Self { line1, line2, city, postal_code, state, country }),
            _ => Err(Error::Validation(errors)),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TaxIdDto {
    #[serde(rename = "type")]
    pub kind: Option<Value>,
    pub value: Option<Value>,
}

impl TryFrom<TaxIdDto> for NewTaxId {
    type Error = Error;

    /// The value is trimmed first: a pasted VAT number often brings a space along.
    fn try_from(dto: TaxIdDto) -> Result<Self, Error> {
        let mut errors = Vec::new();
        let kind = collect(required_string("type", dto.kind, |k| NewTaxId::parse_type(k).map(str::to_string)), &mut errors)?;
        let value = collect(required_string("value", dto.value, |v| NewTaxId::parse_value(v.trim()).map(str::to_string)), &mut errors)?;
        match (kind, value) {
            (Some(kind), Some(value)) if errors.is_empty() => NewTaxId::new(&kind, &value).map_err(|detail| Error::field("value", "invalid_format", detail)),
            _ => Err(Error::Validation(errors)),
        }
    }
}

/// A JSON body: size, content type, syntax (unknown fields are ignored, as in auth).
pub fn json_body<T: serde::de::DeserializeOwned>(req: &Req) -> Result<T, Error> {
    if req.body.len() > MAX_BODY {
        return Err(Error::PayloadTooLarge);
    }
    let content_type = req.header("content-type").unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Error::UnsupportedMediaType);
    }
    parse_json_object(&req.body)
}

/// A JSON object body into `T`: not UTF-8 (even in a field we ignore), not JSON, or a member
/// named twice → 400 `malformed_json`; JSON of another shape (an array, a string) → 400
/// `invalid_body`, as at auth.
pub fn parse_json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    // Only the last step depends on `T`: the checks are compiled once, not once per body type.
    let text = json_object_text(body)?;
    serde_json::from_str(text).map_err(json_shape_error)
}

fn json_object_text(body: &[u8]) -> Result<&str, Error> {
    let text = std::str::from_utf8(body).map_err(|_| malformed_json())?;
    // Every string decoded (a lone surrogate escape in an ignored field is still not JSON).
    serde_json::from_str::<Value>(text).map_err(|_| malformed_json())?;
    if !text.trim_start().starts_with('{') {
        // serde would read `[[1]]` as a struct in sequence form; we take objects only.
        return Err(not_a_json_object());
    }
    Ok(text)
}

fn json_shape_error(err: serde_json::Error) -> Error {
    if err.is_data() && !err.to_string().starts_with("duplicate field") { not_a_json_object() } else { malformed_json() }
}

fn malformed_json() -> Error {
    Error::bad_request("malformed_json", "The request body is not valid JSON.")
}

fn not_a_json_object() -> Error {
    Error::bad_request("invalid_body", "The request body must be a JSON object.")
}

// ---- per-request dependencies ------------------------------------------------------------------

pub struct Deps {
    pub now: i64,
    transport: WasiTransport,
    kv: SpinKv,
    store: OnceCell<Result<MysqlStore, Error>>,
    service_keys: OnceCell<Result<tokens::SigningKeys, Error>>,
    /// The caller's bearer token, if any.
    bearer: Option<String>,
    /// That token and the user it claims to be (unverified: see [`UserToken`]), read from the
    /// token only when a profile is looked up.
    user_token: OnceCell<Option<UserToken>>,
}

impl Default for Deps {
    fn default() -> Self {
        Self::new()
    }
}

impl Deps {
    pub fn new() -> Self {
        Self {
            now: i64::try_from(tokens::now_unix()).unwrap_or(i64::MAX),
            transport: WasiTransport,
            kv: SpinKv::new(),
            store: OnceCell::new(),
            service_keys: OnceCell::new(),
            bearer: None,
            user_token: OnceCell::new(),
        }
    }

    /// [`Deps::new`], knowing the caller's bearer token: a profile read of the user it claims to
    /// be goes to auth with that token (auth checks it; see [`UserToken`]).
    pub fn for_request(req: &Req) -> Self {
        Self { bearer: bearer(req).ok().map(str::to_owned), ..Self::new() }
    }

    /// The caller's token and the user it claims to be, if that is a user.
    fn user_token(&self) -> Option<&UserToken> {
        self.user_token
            .get_or_init(|| {
                let token = self.bearer.as_deref()?;
                let claimed = tokens::claimed_subject(token)?;
                // Only user ids: a service's token is never sent on as a user's.
                if claimed.starts_with(tokens::SERVICE_SUBJECT_PREFIX) {
                    return None;
                }
                UserId::parse(&claimed).ok()?;
                Some(UserToken::new(claimed, token))
            })
            .as_ref()
    }

    /// Starts reading the profile of the user the caller's token claims to be, before that
    /// token is verified here, so that auth's work overlaps this component's; the answer is for
    /// that user only, and is to be used only once the caller is verified to be them.
    fn start_caller_profile(&self) -> Option<(AuthClient<'_>, ProfileFetch<'_>)> {
        let caller = self.user_token()?;
        let auth = self.auth().ok()?;
        let fetch = auth.start_profile(caller.user());
        Some((auth, fetch))
    }

    pub fn store(&self) -> Result<&MysqlStore, Error> {
        self.store
            .get_or_init(|| {
                let url = config::required(config::DB_URL)?;
                MysqlStore::open(&url).map_err(|err| {
                    telemetry::error("cannot open the database connection", &[("cause", err.to_string().into())]);
                    Error::DatabaseUnavailable
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn service_keys(&self) -> Result<&tokens::SigningKeys, Error> {
        self.service_keys
            .get_or_init(|| {
                let raw = config::required(config::SERVICE_TOKEN_KEY)?;
                tokens::SigningKeys::parse(&raw)
                    .map_err(|e| Error::Misconfigured { variable: config::SERVICE_TOKEN_KEY, what: format!("is invalid: {e}") })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn auth_settings(&self) -> Result<AuthSettings, Error> {
        let timeout = Duration::from_millis(u64::try_from(config::number(config::AUTH_TIMEOUT_MS, 2000)?).unwrap_or(2000));
        Ok(AuthSettings {
            base_url: config::required(config::AUTH_SERVICE_URL)?,
            timeouts: Timeouts { connect: timeout.min(Duration::from_secs(1)), ..Timeouts::all(timeout) },
            cache_ttl: config::non_negative(config::PROFILE_CACHE_TTL_SECS, 60)?,
            stale_ttl: 24 * 60 * 60,
            threshold: 5,
            cooldown: 15,
        })
    }

    /// The auth client for profiles: the caller's own with the caller's token, others with the
    /// service key.
    pub fn auth(&self) -> Result<AuthClient<'_>, Error> {
        Ok(AuthClient::new(self.auth_settings()?, &self.transport, &self.kv, Some(self.service_keys()?), self.now)
            .with_user_token(self.user_token())
            .with_failure_count(self))
    }

    /// The auth client without a service key (JWKS, health, login).
    pub fn auth_public(&self) -> Result<AuthClient<'_>, Error> {
        Ok(AuthClient::new(self.auth_settings()?, &self.transport, &self.kv, None, self.now).with_failure_count(self))
    }

    pub fn stripe(&self) -> Result<StripeClient<'_>, Error> {
        let base = config::required(config::STRIPE_API_BASE)?;
        let secret = StripeSecret::new(config::required(config::STRIPE_SECRET_KEY)?);
        Ok(StripeClient::new(&base, secret, &self.transport))
    }
}

// ---- authentication --------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User(UserId),
    Service(String),
}

impl Principal {
    /// The idempotency scope and audit actor.
    pub fn key(&self) -> String {
        match self {
            Self::User(id) => format!("user:{id}"),
            Self::Service(name) => format!("service:{name}"),
        }
    }
}

fn bearer(req: &Req) -> Result<&str, Error> {
    let header = req.header("authorization").ok_or(Error::MissingToken)?;
    let (scheme, token) = header.split_once(' ').ok_or(Error::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::MissingToken);
    }
    Ok(token.trim())
}

/// Verifies an access token (auth's keys, from `auth_jwks` or auth's JWKS) or a service token
/// (keys in `trusted_service_keys`).
pub fn authenticate(req: &Req, deps: &Deps) -> Result<Principal, Error> {
    use tokens::VerifyError;
    let token = bearer(req)?;
    let now = u64::try_from(deps.now).unwrap_or(0);
    let access = tokens::AccessTokenConfig::new(tokens::ACCESS_TOKEN_ISSUER, tokens::ACCESS_TOKEN_AUDIENCE);
    let configured = config::optional(config::AUTH_JWKS);
    let result = if configured.is_empty() {
        let auth = deps.auth_public()?;
        let verifier = auth.jwks(false)?;
        match verifier.verify_access_token(token, &access, now) {
            Err(VerifyError::UnknownKid) => auth.jwks(true)?.verify_access_token(token, &access, now),
            other => other,
        }
    } else {
        tokens::Verifier::from_jwks(&configured)
            .map_err(|e| Error::Misconfigured { variable: config::AUTH_JWKS, what: format!("is invalid: {e}") })?
            .verify_access_token(token, &access, now)
    };
    match result {
        Ok(claims) => UserId::parse(&claims.subject)
            .map(Principal::User)
            .map_err(|_| Error::InvalidToken("The token's subject is not a user id.")),
        Err(VerifyError::WrongType) => {
            let trusted = config::optional(config::TRUSTED_SERVICE_KEYS);
            if trusted.is_empty() {
                return Err(Error::InvalidToken("The token is not valid."));
            }
            let keys = tokens::TrustedServiceKeys::parse(&trusted).map_err(|e| Error::Misconfigured {
                variable: config::TRUSTED_SERVICE_KEYS,
                what: format!("is invalid: {e}"),
            })?;
            match keys.verify_service_token(token, now) {
                Ok(claims) => Ok(Principal::Service(claims.service)),
                Err(err) => {
                    telemetry::info("service token refused", &[("reason", err.to_string().into())]);
                    Err(Error::InvalidToken("The token is not valid."))
                }
            }
        }
        Err(err) => {
            telemetry::info("access token refused", &[("reason", err.to_string().into())]);
            Err(Error::InvalidToken("The token is not valid."))
        }
    }
}

fn user_only(principal: Principal) -> Result<UserId, Error> {
    match principal {
        Principal::User(id) => Ok(id),
        Principal::Service(_) => Err(Error::Forbidden),
    }
}

// ---- idempotency -----------------------------------------------------------------------------------

/// Runs a write under the request's `Idempotency-Key`, if it has one.
fn idempotent(req: &Req, deps: &Deps, principal: &Principal, run: impl FnOnce() -> Result<Reply, Error>) -> Result<Reply, Error> {
    // The work goes through a `dyn` closure so that the function below is compiled once, not
    // once per write route (the component's size is budgeted: tests/wasm_imports.rs).
    let mut run = Some(run);
    run_idempotent(req, deps, principal, &mut || run.take().map_or_else(|| Err(Error::internal("a write ran twice")), |run| run()))
}

fn run_idempotent(req: &Req, deps: &Deps, principal: &Principal, run: &mut dyn FnMut() -> Result<Reply, Error>) -> Result<Reply, Error> {
    let Some(raw) = req.header("idempotency-key") else {
        return run();
    };
    let key = IdempotencyKey::parse(raw)
        .map_err(|m| Error::bad_request("invalid_idempotency_key", format!("Idempotency-Key {m}.")))?;
    let store = deps.store()?;
    let target = if req.query.is_empty() { req.path.clone() } else { format!("{}?{}", req.path, req.query) };
    let hash = idempotency::fingerprint(&req.method, &target, &req.body);
    let scope = principal.key();
    match idempotency::begin(store, &scope, key.as_str(), &hash, deps.now)? {
        Begin::Replay { status, content_type, body } => Ok(Reply {
            status,
            body: if content_type == "application/problem+json" { restamp_problem(body) } else { body },
            content_type,
            headers: vec![("idempotent-replayed".into(), "true".into())],
        }),
        Begin::Proceed => {
            let reply = run().unwrap_or_else(|err| Reply::error(&err));
            let retry_later = reply.headers.iter().any(|(name, _)| name == "retry-after");
            idempotency::finish(store, &scope, key.as_str(), reply.status, retry_later, &reply.content_type, &reply.body);
            Ok(reply)
        }
    }
}

/// A replayed problem body names the request that replays it (as its `x-request-id` does), not
/// the one that was first answered.
fn restamp_problem(body: String) -> String {
    match serde_json::from_str::<Value>(&body) {
        Ok(Value::Object(mut problem)) => {
            match telemetry::request_id() {
                Some(id) => problem.insert("request_id".into(), Value::String(id)),
                None => problem.remove("request_id"),
            };
            Value::Object(problem).to_string()
        }
        _ => body,
    }
}

// ---- handlers --------------------------------------------------------------------------------------

/// `GET /api/v3/customers/health`: the database (required), auth and Stripe (reported with their
/// latency; their being down degrades but does not fail health).
pub fn health(_request: Request, _params: Params) -> Response {
    let deps = Deps::new();
    respond((|| {
        deps.store()?.ping().map_err(|err| {
            telemetry::error("health: SELECT 1 failed", &[("cause", err.to_string().into())]);
            Error::DatabaseUnavailable
        })?;
        let (checked, age) = match recent_dependency_check(&deps.kv, deps.now) {
            Some(recent) => recent,
            None => {
                let checked = check_dependencies(&deps);
                deps.kv.set(HEALTH_DEPENDENCIES_KEY, checked.to_string().as_bytes());
                (checked, 0)
            }
        };
        Ok(Reply::json(
            200,
            &json!({"status": "ok", "database": "ok", "auth": checked["auth"], "stripe": checked["stripe"], "dependencies_age_s": age}),
        ))
    })())
}

/// The route is public and each check of auth and Stripe is a call to each: one check answers
/// every health request for this long (shared by all instances through key-value), so that
/// monitors, or anyone looping on the route, reach Stripe at most once per this many seconds
/// and cannot spend the account's rate limit (which every user's billing shares).
const HEALTH_DEPENDENCIES_TTL_SECS: i64 = 5;
const HEALTH_DEPENDENCIES_KEY: &str = "health:dependencies";

/// A check of auth and Stripe younger than [`HEALTH_DEPENDENCIES_TTL_SECS`], with its age.
fn recent_dependency_check(kv: &dyn Kv, now: i64) -> Option<(Value, i64)> {
    let checked: Value = serde_json::from_slice(&kv.get(HEALTH_DEPENDENCIES_KEY)?).ok()?;
    let age = now.checked_sub(checked["checked_at"].as_i64()?)?;
    (0..HEALTH_DEPENDENCIES_TTL_SECS).contains(&age).then_some((checked, age))
}

fn check_dependencies(deps: &Deps) -> Value {
    let auth = match deps.auth_public().map(|a| a.health()) {
        Ok(Ok(latency)) => json!({"status": "ok", "latency_ms": latency}),
        Ok(Err(reason)) => json!({"status": "unavailable", "reason": reason}),
        Err(err) => json!({"status": "unavailable", "reason": err.problem().detail}),
    };
    let stripe = match deps.stripe().map(|s| s.ping(Timeouts::all(HEALTH_TIMEOUT))) {
        Ok(Ok(latency)) => {
            let ms = latency.as_secs_f64() * 1000.0;
            json!({"status": "ok", "latency_ms": (ms * 100.0).round() / 100.0})
        }
        Ok(Err(reason)) => json!({"status": "unavailable", "reason": reason}),
        Err(err) => json!({"status": "unavailable", "reason": err.problem().detail}),
    };
    json!({"checked_at": deps.now, "auth": auth, "stripe": stripe})
}

/// Runs a handler with authentication and the per-request dependencies.
fn with_principal(request: &Request, run: impl FnOnce(&Req, &Deps, Principal) -> Result<Reply, Error>) -> Response {
    let req = Req::from_spin(request);
    let deps = Deps::for_request(&req);
    respond(authenticate(&req, &deps).and_then(|principal| run(&req, &deps, principal)))
}

/// [`ctx_run`] for a user's request that may call Stripe: counted against the user's budget
/// for this minute first (`stripe_calls_per_user_per_minute`; a replayed Idempotency-Key answer
/// runs nothing and is not counted).
fn billing_run<T>(deps: &Deps, user: &UserId, run: impl FnOnce(&Ctx<'_>) -> Result<T, Error>) -> Result<T, Error> {
    spend_stripe_budget(deps, user)?;
    ctx_run(deps, run)
}

fn spend_stripe_budget(deps: &Deps, user: &UserId) -> Result<(), Error> {
    let per_minute = u64::try_from(config::number(config::STRIPE_CALLS_PER_USER_PER_MINUTE, 60)?).unwrap_or(60);
    billing::spend_stripe_budget(deps.store()?, user, deps.now, per_minute)
}

fn ctx_run<T>(deps: &Deps, run: impl FnOnce(&Ctx<'_>) -> Result<T, Error>) -> Result<T, Error> {
    let store = deps.store()?;
    let stripe = deps.stripe()?;
    let auth = deps.auth()?;
    run(&Ctx { store, stripe: &stripe, profiles: &auth, now: deps.now })
}

/// `POST /api/v3/customers`
pub fn create_customer(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        let mut reply = idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            let areas = AreaIds::try_from(json_body::<AreaIdsDto>(req)?)?;
            let policy = billing::CustomerPolicy { require_verified_email: config::flag(config::REQUIRE_VERIFIED_EMAIL, false)? };
            let customer = billing_run(deps, &user, |ctx| billing::create_customer_with(ctx, &user, &areas, policy))?;
            Ok(Reply::json(201, &customer_json(&customer)))
        })?;
        // Where the new customer is, as auth's register says where the new user is; on a replay
        // too (the idempotency table keeps no headers, and the caller is the same user).
        if let (201, Principal::User(user)) = (reply.status, &principal) {
            reply.headers.push(("location".into(), format!("/api/v3/customers/{user}")));
        }
        Ok(reply)
    })
}

/// `GET /api/v3/customers/me[?include=profile]`
pub fn get_me(request: Request, _params: Params) -> Response {
    let req = Req::from_spin(&request);
    let deps = Deps::for_request(&req);
    // With include=profile, auth is asked for the caller's profile, with the caller's own token,
    // before this component verifies that token: auth checks it itself, and works while we do.
    // The answer is used only once our own check says the caller is the user it is for.
    let early = match includes(&req) {
        Ok(Includes { profile: true, .. }) => deps.start_caller_profile(),
        _ => None,
    };
    respond(authenticate(&req, &deps).and_then(|principal| {
        let user = user_only(principal)?;
        customer_reply(&req, &deps, &user, early)
    }))
}

/// What `?include=` adds to a customer: `profile` (from auth), `subscriptions` (our mirror:
/// what a service checks before it unlocks a paid feature), or both, comma-separated.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Includes {
    profile: bool,
    subscriptions: bool,
}

fn includes(req: &Req) -> Result<Includes, Error> {
    let mut asked = Includes::default();
    for part in req.query_param("include")?.unwrap_or_default().split(',').filter(|part| !part.is_empty()) {
        match part {
            "profile" => asked.profile = true,
            "subscriptions" => asked.subscriptions = true,
            _ => return Err(Error::bad_request("invalid_query", "include may only list `profile` and `subscriptions`, comma-separated.")),
        }
    }
    Ok(asked)
}

/// The customer, with its profile when asked: the lookup `early` started if it is for `user`,
/// else one started here, before our own query (auth looks the profile up while we read).
fn customer_reply<'a>(req: &Req, deps: &'a Deps, user: &UserId, early: Option<(AuthClient<'a>, ProfileFetch<'a>)>) -> Result<Reply, Error> {
    let asked = includes(req)?;
    let with_profile = asked.profile;
    let started = match early {
        Some((auth, fetch)) if with_profile && fetch.id() == user.as_str() => Some((auth, fetch)),
        _ if with_profile => {
            let auth = deps.auth()?;
            let fetch = auth.start_profile(user.as_str());
            Some((auth, fetch))
        }
        _ => None,
    };
    let customer = billing::get_customer(deps.store()?, user)?;
    let mut body = customer_json(&customer);
    if asked.subscriptions {
        body["subscriptions"] = deps.store()?.subscriptions(user.as_str())?.iter().map(subscription_json).collect();
    }
    if let Some((auth, profile)) = started {
        // Auth being down never fails this read: the profile is left out and said so.
        match auth.finish_profile(profile) {
            Ok(lookup) => body["profile"] = profile_json(&lookup),
            Err(err) => {
                let err = Error::from(err);
                let problem = err.problem();
                body["profile"] = Value::Null;
                body["profile_error"] = json!({"code": problem.code, "detail": problem.detail, "retry_after": problem.retry_after});
            }
        }
    }
    Ok(Reply::json(200, &body))
}

/// `PATCH /api/v3/customers/me`
pub fn patch_me(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            let areas = AreaIds::try_from(json_body::<AreaIdsDto>(req)?)?;
            let customer = billing::update_areas(deps.store()?, &user, &areas, deps.now)?;
            Ok(Reply::json(200, &customer_json(&customer)))
        })
    })
}

/// `DELETE /api/v3/customers/me`
pub fn delete_me(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            billing_run(deps, &user, |ctx| billing::delete_customer(ctx, &user))?;
            Ok(Reply::no_content())
        })
    })
}

/// `POST /api/v3/customers/me/erasure` {password}: the account erased in one call, at auth,
/// at Stripe and here, with a receipt. Auth first, with the caller's own token and body, because
/// only auth can check the password: a wrong one (or a throttled caller) erases nothing. Billing
/// after: if closing it fails, the same request sent again finds the account gone at auth and
/// finishes (the access token stays valid here for its last minutes).
///
/// `Idempotency-Key` is checked but not stored: the body holds a password, and the table keeps a
/// plain SHA-256 of every body; a repeat answers with `auth: already_deleted` instead of a replay.
pub fn erase_account(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        let user = user_only(principal)?;
        if let Some(raw) = req.header("idempotency-key") {
            IdempotencyKey::parse(raw)
                .map_err(|m| Error::bad_request("invalid_idempotency_key", format!("Idempotency-Key {m}.")))?;
        }
        // The body goes to auth as sent; here only its form is checked, so a malformed request
        // reaches neither service.
        json_body::<Value>(req)?;
        spend_stripe_budget(deps, &user)?;
        let token = deps.bearer.as_deref().ok_or(Error::MissingToken)?;
        let auth = deps.auth()?;
        let forwarded = forwarded_for(req.header("x-forwarded-for"), req.header("spin-client-addr"));
        let unavailable = |cause: String| {
            telemetry::warn("erasure: auth did not delete the account", &[("customer", user.as_str().into()), ("cause", cause.into())]);
            Error::AuthUnavailable { retry_after: 5 }
        };
        let at_auth = match auth.delete_account(token, req.body.clone(), forwarded.as_deref()) {
            Ok(answer) if answer.status == 204 => "deleted",
            // Our check of the token passed and auth's did not: the account is gone already (an
            // earlier erasure whose billing step failed), or auth retired a key. Auth's service
            // read tells which.
            Ok(answer) if answer.status == 401 => match auth.current_profile(user.as_str()) {
                Err(ProfileError::NotFound) => "already_deleted",
                Ok(_) => return Ok(passed_through(&answer)),
                Err(err) => return Err(err.into()),
            },
            // Wrong password, throttled, refused body: auth's answer, and nothing erased.
            Ok(answer) if (400..500).contains(&answer.status) => return Ok(passed_through(&answer)),
            Ok(answer) => return Err(unavailable(format!("auth answered {}", answer.status))),
            Err(err) => return Err(unavailable(err.to_string())),
        };
        auth.forget_profile(user.as_str());
        // Counted at the start of the erasure, not again here.
        let billing = match ctx_run(deps, |ctx| billing::delete_customer(ctx, &user)) {
            Ok(closed) => Some(closed),
            Err(Error::NotFound { code: "not_a_customer", .. }) => None,
            Err(err) => {
                let problem = err.problem();
                telemetry::warn(
                    "erasure: billing not closed; the account is deleted at auth",
                    &[("customer", user.as_str().into()), ("code", problem.code.into())],
                );
                return Err(Error::ErasureIncomplete { retry_after: problem.retry_after.unwrap_or(5) });
            }
        };
        // The account is gone: so is the record of its trial (kept when a user only leaves billing).
        deps.store()?.forget_trial(user.as_str())?;
        let receipt_id = billing::new_local_id();
        deps.store()?.audit(
            deps.now,
            user.as_str(),
            "account.erased",
            Some(user.as_str()),
            &format!(
                "receipt={receipt_id} auth={at_auth} stripe_customer={} subscriptions_canceled={}",
                billing.as_ref().and_then(|b| b.stripe_customer_id.as_deref()).unwrap_or("-"),
                billing.as_ref().map_or(0, |b| b.subscriptions_canceled),
            ),
        )?;
        Ok(Reply::json(
            200,
            &json!({
                "receipt_id": receipt_id,
                "user_id": user.as_str(),
                "erased_at": rfc3339::format(deps.now),
                "auth": at_auth,
                "billing": billing.map(|b| json!({
                    "stripe_customer_id": b.stripe_customer_id,
                    "subscriptions_canceled": b.subscriptions_canceled,
                })),
            }),
        ))
    })
}

/// Auth's answer passed on to the client (the login proxy's, the erasure's refusals): status,
/// body, and the headers a client acts on.
fn passed_through(answer: &crate::transport::HttpResponse) -> Reply {
    let headers = ["retry-after", "www-authenticate"]
        .iter()
        .filter_map(|name| answer.header(name).map(|value| ((*name).to_string(), value.to_string())))
        .collect();
    Reply {
        status: answer.status,
        content_type: answer.header("content-type").unwrap_or("application/json").to_string(),
        body: String::from_utf8_lossy(&answer.body).into_owned(),
        headers,
    }
}

/// `GET /api/v3/customers/{id}`: services, or the user itself (anyone else: 404, as if absent).
pub fn get_by_id(request: Request, params: Params) -> Response {
    let id = params.get("id").unwrap_or_default().to_string();
    with_principal(&request, move |req, deps, principal| {
        let user = UserId::parse(&id).map_err(|_| Error::not_found("No such customer."))?;
        match &principal {
            Principal::Service(name) => {
                telemetry::info("service reads a customer", &[("service", name.as_str().into()), ("customer", user.as_str().into())]);
                customer_reply(req, deps, &user, None).map_err(|err| match err {
                    Error::NotFound { .. } => Error::not_found("No such customer."),
                    other => other,
                })
            }
            Principal::User(me) if *me == user => customer_reply(req, deps, &user, None),
            Principal::User(_) => Err(Error::not_found("No such customer.")),
        }
    })
}

/// `GET /api/v3/customers[?after=&limit=&include=profile]`: for services only; profiles come from
/// auth's batch endpoint (one call per 100 customers, cache first).
pub fn list_customers(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        let Principal::Service(service) = principal else {
            return Err(Error::Forbidden);
        };
        let limit = match req.query_param("limit")? {
            None => 50,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(Error::bad_request("invalid_query", "limit must be an integer from 1 to 100.")),
            },
        };
        let after = req.query_param("after")?;
        if let Some(a) = &after {
            UserId::parse(a).map_err(|_| Error::bad_request("invalid_query", "after must be a customer id."))?;
        }
        let asked = includes(req)?;
        let with_profiles = asked.profile;
        let customers = deps.store()?.customers(after.as_deref(), limit)?;
        telemetry::info("service lists customers", &[("service", service.as_str().into()), ("count", customers.len().into())]);
        let mut items: Vec<Value> = customers.iter().map(customer_json).collect();
        if asked.subscriptions {
            let ids: Vec<&str> = customers.iter().map(|c| c.id.as_str()).collect();
            let subscriptions = deps.store()?.subscriptions_of_customers(&ids)?;
            for (item, customer) in items.iter_mut().zip(&customers) {
                item["subscriptions"] = subscriptions.iter().filter(|s| s.customer_id == customer.id).map(subscription_json).collect();
            }
        }
        let mut body = json!({});
        if with_profiles && !customers.is_empty() {
            let ids: Vec<String> = customers.iter().map(|c| c.id.clone()).collect();
            match deps.auth()?.profiles(&ids) {
                Ok(found) => {
                    for item in &mut items {
                        let id = item["id"].as_str().unwrap_or_default().to_string();
                        item["profile"] = found.get(&id).map_or(Value::Null, profile_json);
                    }
                }
                Err(err) => {
                    let problem = Error::from(err).problem();
                    body["profile_error"] = json!({"code": problem.code, "detail": problem.detail, "retry_after": problem.retry_after});
                    for item in &mut items {
                        item["profile"] = Value::Null;
                    }
                }
            }
        }
        let next_cursor = if customers.len() == limit as usize { customers.last().map(|c| c.id.clone()) } else { None };
        body["customers"] = Value::Array(items);
        body["next_cursor"] = json!(next_cursor);
        Ok(Reply::json(200, &body))
    })
}

/// `POST /api/v3/customers/me/subscriptions`
pub fn create_subscription(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            let order = SubscriptionOrder::try_from(json_body::<SubscribeDto>(req)?)?;
            let trial_days = config::trial_days()?;
            let view = billing_run(deps, &user, |ctx| billing::subscribe(ctx, &user, &order, trial_days))?;
            Ok(Reply::json(201, &subscription_view_json(&view)))
        })
    })
}

/// `GET /api/v3/customers/me/subscriptions`
pub fn list_subscriptions(request: Request, _params: Params) -> Response {
    with_principal(&request, |_req, deps, principal| {
        let user = user_only(principal)?;
        let subs = billing::list_subscriptions(deps.store()?, &user)?;
        Ok(Reply::json(200, &json!({"subscriptions": subs.iter().map(subscription_json).collect::<Vec<_>>()})))
    })
}

/// `DELETE /api/v3/customers/me/subscriptions/{id}[?at_period_end=false]`
pub fn cancel_subscription(request: Request, params: Params) -> Response {
    let id = params.get("id").unwrap_or_default().to_string();
    with_principal(&request, move |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            if uuid::Uuid::parse_str(&id).is_err() {
                return Err(Error::not_found("No such subscription."));
            }
            let at_period_end = match req.query_param("at_period_end")?.as_deref() {
                None | Some("true") => true,
                Some("false") => false,
                Some(_) => return Err(Error::bad_request("invalid_query", "at_period_end must be true or false.")),
            };
            let sub = billing_run(deps, &user, |ctx| billing::cancel_subscription(ctx, &user, &id, at_period_end))?;
            Ok(Reply::json(200, &subscription_json(&sub)))
        })
    })
}

/// `GET /api/v3/customers/me/subscriptions/{id}`
pub fn get_subscription(request: Request, params: Params) -> Response {
    let id = params.get("id").unwrap_or_default().to_string();
    with_principal(&request, move |_req, deps, principal| {
        let user = user_only(principal)?;
        if uuid::Uuid::parse_str(&id).is_err() {
            return Err(Error::not_found("No such subscription."));
        }
        let view = billing_run(deps, &user, |ctx| billing::subscription_view(ctx, &user, &id))?;
        Ok(Reply::json(200, &subscription_view_json(&view)))
    })
}

/// `GET /api/v3/customers/me/subscriptions/{id}/upcoming-invoice[?price_id=][&quantity=]`
pub fn upcoming_invoice(request: Request, params: Params) -> Response {
    let id = params.get("id").unwrap_or_default().to_string();
    with_principal(&request, move |req, deps, principal| {
        let user = user_only(principal)?;
        if uuid::Uuid::parse_str(&id).is_err() {
            return Err(Error::not_found("No such subscription."));
        }
        let price = match req.query_param("price_id")? {
            None => None,
            Some(raw) => Some(PriceId::parse(&raw).map_err(|detail| Error::bad_request("invalid_query", format!("price_id: {detail}")))?),
        };
        let quantity = match req.query_param("quantity")? {
            None => None,
            Some(raw) => {
                let parsed = raw.parse::<i64>().map_err(|_| Quantity::OUT_OF_RANGE).and_then(Quantity::parse);
                Some(parsed.map_err(|detail| Error::bad_request("invalid_query", format!("quantity: {detail}")))?)
            }
        };
        let preview = billing_run(deps, &user, |ctx| billing::upcoming_invoice(ctx, &user, &id, price.as_ref(), quantity))?;
        Ok(Reply::json(
            200,
            &json!({
                "subscription_id": id,
                "amount_due": preview.amount_due,
                "subtotal": preview.subtotal,
                "total": preview.total,
                "currency": preview.currency,
                "next_payment_attempt": preview.next_payment_attempt.map(rfc3339::format),
                "lines": preview.lines.iter().map(|line| json!({
                    "description": line.description,
                    "amount": line.amount,
                    "currency": line.currency,
                    "price_id": line.price_id,
                    "proration": line.proration,
                    "period": {
                        "start": line.period_start.map(rfc3339::format),
                        "end": line.period_end.map(rfc3339::format),
                    },
                })).collect::<Vec<_>>(),
            }),
        ))
    })
}

/// `PATCH /api/v3/customers/me/subscriptions/{id}` {price_id?, quantity?, cancel_at_period_end?}
pub fn update_subscription(request: Request, params: Params) -> Response {
    let id = params.get("id").unwrap_or_default().to_string();
    with_principal(&request, move |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            if uuid::Uuid::parse_str(&id).is_err() {
                return Err(Error::not_found("No such subscription."));
            }
            let change = SubscriptionChange::try_from(json_body::<SubscriptionChangeDto>(req)?)?;
            let sub = billing_run(deps, &user, |ctx| {
                // The item first: a subscription changed and then scheduled to end ends as changed.
                let mut sub = None;
                if change.price.is_some() || change.quantity.is_some() {
                    sub = Some(billing::change_item(ctx, &user, &id, change.price.as_ref(), change.quantity)?);
                }
                match change.cancel_at_period_end {
                    Some(true) => billing::schedule_end(ctx, &user, &id),
                    Some(false) => billing::resume_subscription(ctx, &user, &id),
                    None => sub.ok_or_else(|| Error::internal("a subscription change without a change")),
                }
            })?;
            Ok(Reply::json(200, &subscription_json(&sub)))
        })
    })
}

/// `POST /api/v3/customers/me/setup-intents` (no body)
pub fn create_setup_intent(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            let intent = billing_run(deps, &user, |ctx| billing::create_setup_intent(ctx, &user))?;
            Ok(Reply::json(201, &setup_intent_json(&intent)))
        })
    })
}

/// `POST /api/v3/customers/me/portal-sessions` (no body)
pub fn create_portal_session(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            let return_url = config::portal_return_url()?;
            let url = billing_run(deps, &user, |ctx| billing::create_portal_session(ctx, &user, return_url.as_deref()))?;
            Ok(Reply::json(201, &json!({ "url": url })))
        })
    })
}

/// `POST /api/v3/customers/me/checkout-sessions` {price_id, quantity?, promotion_code?}
pub fn create_checkout_session(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            let order = SubscriptionOrder::try_from(json_body::<SubscribeDto>(req)?)?;
            let (trial_days, (success, cancel)) = (config::trial_days()?, config::checkout_urls()?);
            let urls = CheckoutUrls { success: &success, cancel: cancel.as_deref() };
            let session = billing_run(deps, &user, |ctx| billing::create_checkout_session(ctx, &user, &order, trial_days, urls))?;
            let body = json!({"id": session.id, "url": session.url, "expires_at": rfc3339::format(session.expires_at)});
            Ok(Reply::json(201, &body))
        })
    })
}

/// `GET /api/v3/customers/me/checkout-sessions/{id}`
pub fn get_checkout_session(request: Request, params: Params) -> Response {
    let id = params.get("id").unwrap_or_default().to_string();
    with_principal(&request, move |_req, deps, principal| {
        let user = user_only(principal)?;
        if !is_stripe_id(&id) {
            return Err(Error::not_found("No such checkout session."));
        }
        let view = billing_run(deps, &user, |ctx| billing::checkout_session(ctx, &user, &id))?;
        let session = &view.session;
        Ok(Reply::json(200, &json!({
            "id": session.id,
            "status": session.status,
            "payment_status": session.payment_status,
            "expires_at": session.expires_at.map(rfc3339::format),
            "subscription": view.subscription.as_ref().map(subscription_json),
        })))
    })
}

/// `GET /api/v3/customers/me/payment-method`
pub fn get_payment_method(request: Request, _params: Params) -> Response {
    with_principal(&request, |_req, deps, principal| {
        let user = user_only(principal)?;
        match billing_run(deps, &user, |ctx| billing::default_payment_method(ctx, &user))? {
            Some(method) => Ok(Reply::json(200, &payment_method_json(&method))),
            None => Err(Error::NotFound {
                code: "no_payment_method",
                detail: "No default payment method; add one with a SetupIntent, then PUT its payment method here.".into(),
            }),
        }
    })
}

/// `PUT /api/v3/customers/me/payment-method` {payment_method_id}
pub fn set_payment_method(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            let id = PaymentMethodId::try_from(json_body::<PaymentMethodDto>(req)?)?;
            let method = billing_run(deps, &user, |ctx| billing::set_default_payment_method(ctx, &user, &id))?;
            Ok(Reply::json(200, &payment_method_json(&method)))
        })
    })
}

/// `DELETE /api/v3/customers/me/payment-method`
pub fn remove_payment_method(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            billing_run(deps, &user, |ctx| billing::remove_default_payment_method(ctx, &user))?;
            Ok(Reply::no_content())
        })
    })
}

/// `GET /api/v3/customers/me/billing-address`
pub fn get_billing_address(request: Request, _params: Params) -> Response {
    with_principal(&request, |_req, deps, principal| {
        let user = user_only(principal)?;
        let address = billing_run(deps, &user, |ctx| billing::billing_address(ctx, &user))?;
        Ok(Reply::json(200, &billing_address_json(&address)))
    })
}

/// `PUT /api/v3/customers/me/billing-address` {line1, line2?, city?, postal_code?, state?, country}
pub fn put_billing_address(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            let address = BillingAddress::try_from(json_body::<BillingAddressDto>(req)?)?;
            let stored = billing_run(deps, &user, |ctx| billing::set_billing_address(ctx, &user, &address))?;
            Ok(Reply::json(200, &billing_address_json(&stored)))
        })
    })
}

/// `GET /api/v3/customers/me/tax-ids`
pub fn list_tax_ids(request: Request, _params: Params) -> Response {
    with_principal(&request, |_req, deps, principal| {
        let user = user_only(principal)?;
        let ids = billing_run(deps, &user, |ctx| billing::tax_ids(ctx, &user))?;
        Ok(Reply::json(200, &json!({"tax_ids": ids.iter().map(tax_id_json).collect::<Vec<_>>()})))
    })
}

/// `POST /api/v3/customers/me/tax-ids` {type, value}
pub fn add_tax_id(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            let tax_id = NewTaxId::try_from(json_body::<TaxIdDto>(req)?)?;
            let added = billing_run(deps, &user, |ctx| billing::add_tax_id(ctx, &user, &tax_id))?;
            Ok(Reply::json(201, &tax_id_json(&added)))
        })
    })
}

/// `DELETE /api/v3/customers/me/tax-ids/{id}`
pub fn delete_tax_id(request: Request, params: Params) -> Response {
    let id = params.get("id").unwrap_or_default().to_string();
    with_principal(&request, move |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            if !id.starts_with("txi_") || !is_stripe_id(&id) {
                return Err(Error::not_found("No such tax id."));
            }
            billing_run(deps, &user, |ctx| billing::delete_tax_id(ctx, &user, &id))?;
            Ok(Reply::no_content())
        })
    })
}

/// `POST /api/v3/customers/me/invoices/{id}/pay` (no body)
pub fn pay_invoice(request: Request, params: Params) -> Response {
    let id = params.get("id").unwrap_or_default().to_string();
    with_principal(&request, move |req, deps, principal| {
        idempotent(req, deps, &principal, || {
            let user = user_only(principal.clone())?;
            if !id.starts_with("in_") || !is_stripe_id(&id) {
                return Err(Error::not_found("No such invoice."));
            }
            let paid = billing_run(deps, &user, |ctx| billing::pay_invoice(ctx, &user, &id))?;
            let mut body = invoice_json(&paid.invoice);
            body["pending_payment"] = pending_payment_json(paid.pending_payment.as_ref());
            Ok(Reply::json(200, &body))
        })
    })
}

/// `GET /api/v3/customers/me/invoices[?limit=&starting_after=]`
pub fn invoices(request: Request, _params: Params) -> Response {
    with_principal(&request, |req, deps, principal| {
        let user = user_only(principal)?;
        let limit = match req.query_param("limit")? {
            None => 10,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(Error::bad_request("invalid_query", "limit must be an integer from 1 to 100.")),
            },
        };
        let cursor = req.query_param("starting_after")?;
        if let Some(c) = &cursor
            && !is_stripe_id(c) {
                return Err(Error::bad_request("invalid_query", "starting_after must be an invoice id."));
            }
        let (profile, page) = billing_run(deps, &user, |ctx| billing::invoices(ctx, &user, limit, cursor.as_deref()))?;
        let next_cursor = if page.has_more { page.invoices.last().map(|i| i.id.clone()) } else { None };
        let bill_to = profile_json(&profile);
        Ok(Reply::json(
            200,
            &json!({
                "bill_to": {"name": bill_to["name"], "email": bill_to["email"], "source": bill_to["source"], "stale": bill_to["stale"]},
                "invoices": page.invoices.iter().map(invoice_json).collect::<Vec<_>>(),
                "has_more": page.has_more,
                "next_cursor": next_cursor,
            }),
        ))
    })
}

/// `POST /api/v3/billing/stripe/webhook`
pub fn stripe_webhook(request: Request, _params: Params) -> Response {
    let req = Req::from_spin(&request);
    let deps = Deps::new();
    respond((|| {
        if req.body.len() > MAX_WEBHOOK_BODY {
            return Err(Error::PayloadTooLarge);
        }
        let secrets = config::required(config::STRIPE_WEBHOOK_SECRET)?;
        let secrets: Vec<&str> = secrets.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        webhook::verify_signature(req.header("stripe-signature"), &req.body, &secrets, deps.now, webhook::TOLERANCE_SECS)
            .map_err(|err| {
                telemetry::warn("webhook refused", &[("reason", err.to_string().into())]);
                Error::from(err)
            })?;
        let event = Event::parse(&req.body)?;
        let (store, stripe) = (deps.store()?, deps.stripe()?);
        let profiles = ProfilesOnDemand { deps: &deps, auth: OnceCell::new() };
        let outcome = webhook::handle(&Ctx { store, stripe: &stripe, profiles: &profiles, now: deps.now }, &event)?;
        telemetry::info(
            "webhook",
            &[
                ("event_id", event.id.as_str().into()),
                ("event_type", event.kind.as_str().into()),
                ("created", event.created.into()),
                ("outcome", outcome.as_str().into()),
            ],
        );
        Ok(Reply::json(
            200,
            &json!({"received": true, "duplicate": outcome == Outcome::Duplicate, "outcome": outcome.as_str()}),
        ))
    })())
}

/// Profiles for the webhook, whose auth client is made when the first profile is asked for: most
/// events need none, and making it reads variables and parses the service key.
struct ProfilesOnDemand<'a> {
    deps: &'a Deps,
    auth: OnceCell<Option<AuthClient<'a>>>,
}

impl<'a> ProfilesOnDemand<'a> {
    fn auth(&self) -> Result<&AuthClient<'a>, ProfileError> {
        self.auth
            .get_or_init(|| {
                self.deps
                    .auth()
                    // Logged (a misconfiguration names its variable) and answered as auth being
                    // unavailable: 503, so Stripe delivers the event again.
                    .map_err(|err| err.problem())
                    .ok()
            })
            .as_ref()
            .ok_or_else(|| ProfileError::Unavailable { reason: "no auth client (see the error before)".into(), retry_after: 5 })
    }
}

impl Profiles for ProfilesOnDemand<'_> {
    fn profile(&self, id: &str) -> Result<ProfileLookup, ProfileError> {
        self.auth()?.profile(id)
    }

    fn current_profile(&self, id: &str) -> Result<ProfileLookup, ProfileError> {
        self.auth()?.current_profile(id)
    }
}

/// `POST /api/v3/auth/login`: the seed's login proxy. Reaches this component only in a split
/// deployment (customer alone, auth elsewhere via `auth_service_url`); in the combined app the
/// route belongs to auth. The answer (tokens included) is passed through untouched.
pub fn login_proxy(request: Request, _params: Params) -> Response {
    let req = Req::from_spin(&request);
    let deps = Deps::new();
    respond((|| {
        if req.header("x-forwarded-by") == Some("customer") {
            return Err(Error::ProxyLoop);
        }
        if req.body.len() > MAX_BODY {
            return Err(Error::PayloadTooLarge);
        }
        let auth = deps.auth_public()?;
        let forwarded_for = forwarded_for(req.header("x-forwarded-for"), req.header("spin-client-addr"));
        let response = auth.login(req.body.clone(), forwarded_for.as_deref()).map_err(|err| {
            telemetry::warn("login proxy failed", &[("cause", err.to_string().into())]);
            Error::AuthUnavailable { retry_after: 5 }
        })?;
        Ok(passed_through(&response))
    })())
}

/// The `X-Forwarded-For` the login proxy sends on: what came in, then the peer this request
/// came from (its IP, from `spin-client-addr`), as every proxy appends. Auth believes it only
/// when customer's address is in its `auth_trusted_proxies` (docs/auth.md).
fn forwarded_for(incoming: Option<&str>, peer: Option<&str>) -> Option<String> {
    let peer = peer.map(str::trim).and_then(|value| {
        value
            .parse::<std::net::SocketAddr>()
            .map(|addr| addr.ip())
            .or_else(|_| value.parse::<std::net::IpAddr>())
            .ok()
    });
    match (incoming.map(str::trim).filter(|value| !value.is_empty()), peer) {
        (Some(incoming), Some(peer)) => Some(format!("{incoming}, {peer}")),
        (Some(incoming), None) => Some(incoming.to_string()),
        (None, peer) => peer.map(|ip| ip.to_string()),
    }
}

/// The answer to a body over the largest any route takes (the webhook's), refused unread.
pub fn body_too_large() -> Response {
    respond(Err(Error::PayloadTooLarge))
}

/// The answer to a request whose body could not be read (the client went away mid-upload).
pub fn unreadable_body() -> Response {
    respond(Err(Error::bad_request("unreadable_body", "The request body could not be read to its end.")))
}

/// The answer when no route takes the request: 405 with `Allow` when the path is served with
/// other methods, else 404; as problem+json.
pub fn unrouted(allow: Option<String>) -> Response {
    match allow {
        Some(allow) => {
            let problem = Problem::new(405, "method_not_allowed", "Method not allowed").with_detail(format!("Allowed methods: {allow}."));
            Reply { status: 405, content_type: "application/problem+json".into(), body: problem.body(), headers: vec![("allow".into(), allow)] }
                .into_response()
        }
        None => Reply::error(&Error::not_found("No resource at this path.")).into_response(),
    }
}

/// The breaker's failures are counted in this component's database, opened only when a call
/// to auth fails; without it (the database down too) the breaker counts in key-value.
impl FailureCount for Deps {
    fn add_failure(&self, now: i64) -> Option<u32> {
        let counted = self.store().ok()?.add_auth_failure(now, FAILURE_STREAK_SECS);
        counted.map_err(|err| telemetry::warn("cannot count an auth failure", &[("cause", err.to_string().into())])).ok()
    }

    fn clear_failures(&self) {
        if let Ok(store) = self.store()
            && let Err(err) = store.clear_auth_failures()
        {
            telemetry::warn("cannot clear the auth failures", &[("cause", err.to_string().into())]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_proxy_appends_its_peer_to_x_forwarded_for() {
        assert_eq!(forwarded_for(None, Some("203.0.113.7:5123")).as_deref(), Some("203.0.113.7"));
        assert_eq!(forwarded_for(None, Some("[2001:db8::1]:443")).as_deref(), Some("2001:db8::1"));
        assert_eq!(forwarded_for(Some("198.51.100.1"), Some("10.0.0.9:80")).as_deref(), Some("198.51.100.1, 10.0.0.9"));
        assert_eq!(forwarded_for(Some("198.51.100.1"), Some("garbage")).as_deref(), Some("198.51.100.1"));
        assert_eq!(forwarded_for(Some(" "), None), None);
        assert_eq!(forwarded_for(None, None), None);
    }

    fn areas(body: Value) -> Result<AreaIds, Error> {
        AreaIds::try_from(serde_json::from_value::<AreaIdsDto>(body).unwrap())
    }

    #[test]
    fn area_dtos_name_the_field_that_is_wrong() {
        assert_eq!(areas(json!({"area_ids": [3, 1]})).unwrap().as_slice(), &[1, 3]);
        let first = |body: Value| match areas(body).unwrap_err() {
            Error::Validation(errors) => (errors.len(), errors[0].field.clone(), errors[0].code.clone()),
            other => panic!("{other:?}"),
        };
        let expect = |n: usize, field: &str, code: &str| (n, field.to_string(), code.to_string());
        assert_eq!(first(json!({})), expect(1, "area_ids", "required"));
        assert_eq!(first(json!({"area_ids": [1, "x", 2.5]})), expect(2, "area_ids[1]", "invalid_type"));
        assert_eq!(first(json!({"area_ids": [1, -1]})), expect(1, "area_ids[1]", "out_of_range"));
        assert_eq!(first(json!({"area_ids": [1, 1]})), expect(1, "area_ids", "duplicate"));
        assert_eq!(first(json!({"area_ids": []})), expect(1, "area_ids", "too_few"));
        assert_eq!(first(json!({"area_ids": "1,2"})), expect(1, "area_ids", "invalid_type"));
    }

    #[test]
    fn replayed_problems_name_the_replaying_request() {
        telemetry::start("customer", Some("first"), None);
        let stored = Reply::error(&Error::IdempotencyMismatch).body;
        assert!(stored.contains(r#""request_id":"first""#), "{stored}");
        telemetry::start("customer", Some("second"), None);
        let replayed: Value = serde_json::from_str(&restamp_problem(stored)).unwrap();
        assert_eq!(replayed["request_id"], "second");
        assert_eq!(replayed["code"], "idempotency_key_reused");
        assert_eq!(restamp_problem("not json".into()), "not json");
    }

    #[test]
    fn bodies_are_utf8_json_objects_without_duplicated_fields() {
        let parse = |b: &[u8]| parse_json_object::<AreaIdsDto>(b);
        assert!(parse(br#"{"area_ids":[1]}"#).is_ok());
        let code = |r: Result<AreaIdsDto, Error>| match r.unwrap_err() {
            Error::BadRequest { code, .. } => code.to_string(),
            Error::Validation(e) => format!("422 {}", e[0].field),
            other => format!("{other:?}"),
        };
        assert_eq!(code(parse(b"{\"x\":\"\xff\",\"area_ids\":[1]}")), "malformed_json");
        assert_eq!(code(parse(br#"{"area_ids":[1],"area_ids":[2]}"#)), "malformed_json");
        assert_eq!(code(parse(br#"{"x":"\ud800","area_ids":[1]}"#)), "malformed_json");
        assert_eq!(code(parse(br#"[[1]]"#)), "invalid_body");
        assert_eq!(code(parse(br#"  "x""#)), "invalid_body");
        assert_eq!(code(parse(br#"[[1"#)), "malformed_json");
        assert_eq!(code(parse(br#"{"area_ids":"#)), "malformed_json");
        assert_eq!(code(parse(br#"{"area_ids":{"a":1}}"#.as_slice()).and_then(|d| AreaIds::try_from(d).map(|_| AreaIdsDto { area_ids: None }))), "422 area_ids");
    }

    /// Only a user's token is sent on to auth to read the user it claims: a service token, junk
    /// or no token leave customer to its service token.
    #[test]
    fn only_a_users_token_is_kept_to_read_its_own_profile_with() {
        let keys = tokens::SigningKeys::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let access = tokens::AccessTokenConfig::new(tokens::ACCESS_TOKEN_ISSUER, tokens::ACCESS_TOKEN_AUDIENCE);
        let user = keys.issue_access_token(&access, "0190c0de-0000-7000-8000-000000000001", 1_800_000_000).unwrap().token;
        let service = keys.issue_service_token("billing", 1_800_000_000).unwrap().token;
        let req = |authorization: Option<String>| Req {
            method: "GET".into(),
            path: "/api/v3/customers/me".into(),
            query: "include=profile".into(),
            headers: authorization.map(|a| vec![("authorization".to_string(), a)]).unwrap_or_default(),
            body: Vec::new(),
        };
        let kept = Deps::for_request(&req(Some(format!("Bearer {user}"))));
        assert_eq!(kept.user_token().map(UserToken::user), Some("0190c0de-0000-7000-8000-000000000001"));
        for other in [Some(format!("Bearer {service}")), Some("Bearer junk".into()), Some(format!("Basic {user}")), None] {
            assert!(Deps::for_request(&req(other.clone())).user_token().is_none(), "{other:?}");
        }
    }

    /// A query parameter given twice is refused, as a key given twice in a JSON body is.
    #[test]
    fn a_query_parameter_given_twice_is_refused() {
        let req = |query: &str| Req { method: "DELETE".into(), path: "/".into(), query: query.into(), headers: Vec::new(), body: Vec::new() };
        assert_eq!(req("at_period_end=false&limit=5").query_param("at_period_end").unwrap().as_deref(), Some("false"));
        assert_eq!(req("limit=5").query_param("at_period_end").unwrap(), None);
        assert_eq!(req("include=a%20b").query_param("include").unwrap().as_deref(), Some("a b"));
        let twice = req("at_period_end=true&at_period_end=false").query_param("at_period_end").unwrap_err();
        assert_eq!(twice.problem().code, "invalid_query");
        assert!(req("include=profile&include=").query_param("include").is_err());
    }

    #[test]
    fn subscribe_dtos() {
        let parse = |v: Value| SubscriptionOrder::try_from(serde_json::from_value::<SubscribeDto>(v).unwrap());
        let order = |quantity: i64| SubscriptionOrder { price: PriceId::parse("price_123").unwrap(), quantity: Quantity::parse(quantity).unwrap(), promotion_code: None };
        assert_eq!(parse(json!({"price_id": "price_123"})).unwrap(), order(1));
        assert_eq!(parse(json!({"price_id": "price_123", "quantity": null})).unwrap(), order(1));
        assert_eq!(parse(json!({"price_id": "price_123", "quantity": 25})).unwrap(), order(25));
        assert_eq!(parse(json!({"price_id": "price_123", "quantity": 10_000})).unwrap(), order(10_000));
        let coded = SubscriptionOrder { promotion_code: PromotionCode::parse("LAUNCH-20").ok(), ..order(1) };
        assert_eq!(parse(json!({"price_id": "price_123", "promotion_code": " LAUNCH-20 "})).unwrap(), coded);
        assert_eq!(parse(json!({"price_id": "price_123", "promotion_code": null})).unwrap(), order(1));
        for (body, fields) in [
            (json!({}), vec![("price_id", "required")]),
            (json!({"price_id": 5}), vec![("price_id", "invalid_type")]),
            (json!({"price_id": "price 1"}), vec![("price_id", "invalid_format")]),
            (json!({"price_id": "price_123", "quantity": 0}), vec![("quantity", "out_of_range")]),
            (json!({"price_id": "price_123", "quantity": 10_001}), vec![("quantity", "out_of_range")]),
            (json!({"price_id": "price_123", "quantity": u64::MAX}), vec![("quantity", "out_of_range")]),
            (json!({"price_id": "price_123", "quantity": -3}), vec![("quantity", "out_of_range")]),
            (json!({"price_id": "price_123", "quantity": 2.5}), vec![("quantity", "invalid_type")]),
            (json!({"price_id": "price_123", "quantity": "2"}), vec![("quantity", "invalid_type")]),
            (json!({"quantity": 0}), vec![("price_id", "required"), ("quantity", "out_of_range")]),
            (json!({"price_id": "price_123", "promotion_code": "20% OFF"}), vec![("promotion_code", "invalid_format")]),
            (json!({"price_id": "price_123", "promotion_code": 20}), vec![("promotion_code", "invalid_type")]),
            (json!({"price_id": "price_123", "promotion_code": ""}), vec![("promotion_code", "invalid_format")]),
        ] {
            let Err(Error::Validation(errors)) = parse(body.clone()) else { panic!("{body} was accepted") };
            let got: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code.as_str())).collect();
            assert_eq!(got, fields, "{body}");
        }
    }

    #[test]
    fn include_lists_profile_and_subscriptions() {
        let asked = |query: &str| includes(&Req { method: "GET".into(), path: "/".into(), query: query.into(), headers: Vec::new(), body: Vec::new() });
        let both = Includes { profile: true, subscriptions: true };
        assert_eq!(asked("").unwrap(), Includes::default());
        assert_eq!(asked("include=").unwrap(), Includes::default());
        assert_eq!(asked("include=profile").unwrap(), Includes { profile: true, subscriptions: false });
        assert_eq!(asked("include=subscriptions").unwrap(), Includes { profile: false, subscriptions: true });
        assert_eq!(asked("include=profile,subscriptions").unwrap(), both);
        assert_eq!(asked("include=subscriptions%2Cprofile").unwrap(), both);
        for bad in ["include=invoices", "include=profile,x", "include=Profile", "include=profile&include=subscriptions"] {
            assert_eq!(asked(bad).unwrap_err().problem().code, "invalid_query", "{bad}");
        }
    }

    #[test]
    fn billing_address_dtos() {
        let parse = |v: Value| BillingAddress::try_from(serde_json::from_value::<BillingAddressDto>(v).unwrap());
        let full = parse(json!({"line1": " 1 Rue de Rivoli ", "line2": "", "city": "Paris", "postal_code": "75001", "state": null, "country": "fr"})).unwrap();
        assert_eq!((full.line1.as_str(), full.line2, full.city.as_deref(), full.state, full.country.as_str()), ("1 Rue de Rivoli", None, Some("Paris"), None, "FR"));
        let long = "x".repeat(201);
        for (body, fields) in [
            (json!({}), vec![("line1", "required"), ("country", "required")]),
            (json!({"line1": "  ", "country": "DE"}), vec![("line1", "required")]),
            (json!({"line1": "A", "country": "DEU"}), vec![("country", "invalid_format")]),
            (json!({"line1": 7, "city": ["x"], "country": 49}), vec![("line1", "invalid_type"), ("city", "invalid_type"), ("country", "invalid_type")]),
            (json!({"line1": "A\nB", "postal_code": long, "country": "DE"}), vec![("line1", "invalid_format"), ("postal_code", "invalid_format")]),
        ] {
            let Err(Error::Validation(errors)) = parse(body.clone()) else { panic!("{body} was accepted") };
            let got: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code.as_str())).collect();
            assert_eq!(got, fields, "{body}");
        }
    }

    #[test]
    fn tax_id_dtos() {
        let parse = |v: Value| NewTaxId::try_from(serde_json::from_value::<TaxIdDto>(v).unwrap());
        let vat = parse(json!({"type": "eu_vat", "value": " DE123456789 "})).unwrap();
        assert_eq!((vat.kind(), vat.value()), ("eu_vat", "DE123456789"), "the value is trimmed");
        for (body, fields) in [
            (json!({}), vec![("type", "required"), ("value", "required")]),
            (json!({"type": "eu_vat", "value": "   "}), vec![("value", "invalid_format")]),
            (json!({"type": "EU VAT", "value": 5}), vec![("type", "invalid_format"), ("value", "invalid_type")]),
            (json!({"type": "eu_vat", "value": "DE<script>"}), vec![("value", "invalid_format")]),
        ] {
            let Err(Error::Validation(errors)) = parse(body.clone()) else { panic!("{body} was accepted") };
            let got: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code.as_str())).collect();
            assert_eq!(got, fields, "{body}");
        }
    }

    #[test]
    fn payment_method_dtos() {
        let parse = |v: Value| PaymentMethodId::try_from(serde_json::from_value::<PaymentMethodDto>(v).unwrap());
        assert_eq!(parse(json!({"payment_method_id": "pm_1Abc"})).unwrap().as_str(), "pm_1Abc");
        for (body, code) in [
            (json!({}), "required"),
            (json!({"payment_method_id": 7}), "invalid_type"),
            (json!({"payment_method_id": "card_1Abc"}), "invalid_format"),
            (json!({"payment_method_id": "pm_"}), "invalid_format"),
            (json!({"payment_method_id": "pm_1/../x"}), "invalid_format"),
            (json!({"payment_method_id": format!("pm_{}", "a".repeat(253))}), "invalid_format"),
        ] {
            let Err(Error::Validation(errors)) = parse(body.clone()) else { panic!("{body} was accepted") };
            assert_eq!((errors[0].field.as_str(), errors[0].code.as_str()), ("payment_method_id", code), "{body}");
        }
    }

    #[test]
    fn subscription_change_dtos() {
        let parse = |v: Value| SubscriptionChange::try_from(serde_json::from_value::<SubscriptionChangeDto>(v).unwrap());
        let change = |price: Option<&str>, cancel: Option<bool>| SubscriptionChange { price: price.map(|p| PriceId::parse(p).unwrap()), quantity: None, cancel_at_period_end: cancel };
        assert_eq!(parse(json!({"cancel_at_period_end": false})).unwrap(), change(None, Some(false)));
        assert_eq!(parse(json!({"cancel_at_period_end": true, "other": 1})).unwrap(), change(None, Some(true)));
        assert_eq!(parse(json!({"price_id": "price_pro"})).unwrap(), change(Some("price_pro"), None));
        assert_eq!(parse(json!({"price_id": "price_pro", "cancel_at_period_end": true})).unwrap(), change(Some("price_pro"), Some(true)));
        let seats = SubscriptionChange { quantity: Some(Quantity::parse(12).unwrap()), ..change(Some("price_pro"), None) };
        assert_eq!(parse(json!({"price_id": "price_pro", "quantity": 12})).unwrap(), seats);
        assert_eq!(parse(json!({"quantity": 12})).unwrap(), SubscriptionChange { price: None, ..seats });
        let none_given = vec![("price_id", "required"), ("quantity", "required"), ("cancel_at_period_end", "required")];
        for (body, fields) in [
            (json!({}), none_given.clone()),
            (json!({"cancel_at_period_end": null, "quantity": null}), none_given),
            (json!({"quantity": 0, "price_id": 5}), vec![("price_id", "invalid_type"), ("quantity", "out_of_range")]),
            (json!({"cancel_at_period_end": "false"}), vec![("cancel_at_period_end", "invalid_type")]),
            (json!({"price_id": 5, "cancel_at_period_end": 1}), vec![("price_id", "invalid_type"), ("cancel_at_period_end", "invalid_type")]),
            (json!({"price_id": "price 1"}), vec![("price_id", "invalid_format")]),
        ] {
            let Err(Error::Validation(errors)) = parse(body.clone()) else { panic!("{body} was accepted") };
            let got: Vec<(&str, &str)> = errors.iter().map(|e| (e.field.as_str(), e.code.as_str())).collect();
            assert_eq!(got, fields, "{body}");
        }
    }
}
