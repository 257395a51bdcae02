//! Names of the component variables customer reads (declared in spin.toml's
//! [component.customer.variables]) and how they are read. Errors name the variable, never its value.

use spin_sdk::variables;

use crate::error::Error;

/// MySQL URL of customer's own database.
pub const DB_URL: &str = "db_url";
/// Where auth answers: `http://auth.spin.internal` (chaining) or auth's own URL in a split deployment.
pub const AUTH_SERVICE_URL: &str = "auth_service_url";
/// This component's Ed25519 key for service tokens to auth: `<kid>:<base64 seed>`.
pub const SERVICE_TOKEN_KEY: &str = "service_token_key";
/// Auth's JWKS document; empty: fetch `{auth_service_url}/.well-known/jwks.json`.
pub const AUTH_JWKS: &str = "auth_jwks";
pub const STRIPE_SECRET_KEY: &str = "stripe_secret_key";
/// Webhook signing secrets, comma-separated (several during rotation).
pub const STRIPE_WEBHOOK_SECRET: &str = "stripe_webhook_secret";
pub const STRIPE_API_BASE: &str = "stripe_api_base";
/// Services allowed to call `GET /customers/{id}` and the list `GET /customers`: `<service>:<kid>:<base64 public key>`, comma-separated.
pub const TRUSTED_SERVICE_KEYS: &str = "trusted_service_keys";
/// Seconds a profile from auth is served from the cache (default 60).
pub const PROFILE_CACHE_TTL_SECS: &str = "profile_cache_ttl_secs";
/// Requests per minute each user may make to the routes that may call Stripe (default 60).
pub const STRIPE_CALLS_PER_USER_PER_MINUTE: &str = "stripe_calls_per_user_per_minute";
/// Days of free trial a customer's first subscription gets (default 0: none; at most 730, Stripe's limit).
pub const SUBSCRIPTION_TRIAL_DAYS: &str = "subscription_trial_days";
/// `true`: only users whose email auth says is verified may become customers (default `false`).
pub const REQUIRE_VERIFIED_EMAIL: &str = "require_verified_email";
/// Where Stripe's customer portal sends the user back (`http(s)://…`); empty: the portal's
/// default return URL, set in Stripe's dashboard.
pub const BILLING_PORTAL_RETURN_URL: &str = "billing_portal_return_url";
/// Where Stripe's Checkout page sends the user after paying (`http(s)://…`, may carry
/// `{CHECKOUT_SESSION_ID}`); required by `POST /customers/me/checkout-sessions`.
pub const CHECKOUT_SUCCESS_URL: &str = "checkout_success_url";
/// Where its back link goes; empty: the page has none.
pub const CHECKOUT_CANCEL_URL: &str = "checkout_cancel_url";
/// Milliseconds auth has to answer one call (default 2000).
pub const AUTH_TIMEOUT_MS: &str = "auth_timeout_ms";

/// Reads a required variable; a missing or empty one is a configuration error.
pub fn required(name: &'static str) -> Result<String, Error> {
    match variables::get(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        Ok(_) => Err(Error::Misconfigured { variable: name, what: "is empty".into() }),
        Err(err) => {
            telemetry::error("variable could not be read", &[("variable", name.into()), ("cause", err.to_string().into())]);
            Err(Error::Misconfigured { variable: name, what: "is not set".into() })
        }
    }
}

/// Reads an optional variable ("" when unset).
pub fn optional(name: &'static str) -> String {
    variables::get(name).unwrap_or_default().trim().to_string()
}

/// Like [`number`], but 0 is allowed (e.g. a cache TTL of 0 turns the cache off).
pub fn non_negative(name: &'static str, default: i64) -> Result<i64, Error> {
    match optional(name).parse::<i64>() {
        Ok(0) => Ok(0),
        _ => number(name, default),
    }
}

/// The trial a first subscription gets, in days: 0 (none) to 730 (the longest Stripe allows).
pub fn trial_days() -> Result<u32, Error> {
    match u32::try_from(non_negative(SUBSCRIPTION_TRIAL_DAYS, 0)?) {
        Ok(days) if days <= 730 => Ok(days),
        _ => Err(Error::Misconfigured { variable: SUBSCRIPTION_TRIAL_DAYS, what: "is over 730 days".into() }),
    }
}

/// The portal's return URL, if set; one that is not an absolute http(s) URL is a configuration error.
pub fn portal_return_url() -> Result<Option<String>, Error> {
    page_url(BILLING_PORTAL_RETURN_URL)
}

/// Checkout's success URL (required) and cancel URL (optional).
pub fn checkout_urls() -> Result<(String, Option<String>), Error> {
    let success = page_url(CHECKOUT_SUCCESS_URL)?
        .ok_or(Error::Misconfigured { variable: CHECKOUT_SUCCESS_URL, what: "is not set (Checkout needs it)".into() })?;
    Ok((success, page_url(CHECKOUT_CANCEL_URL)?))
}

/// An optional variable naming a page of the app that Stripe sends the user to: an absolute
/// http(s) URL, or a configuration error. Ours, never the client's: Stripe would redirect anywhere.
fn page_url(name: &'static str) -> Result<Option<String>, Error> {
    let url = optional(name);
    if url.is_empty() {
        return Ok(None);
    }
    let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or_default();
    if host.is_empty() || host.starts_with('/') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Misconfigured { variable: name, what: "is not an absolute http(s) URL".into() });
    }
    Ok(Some(url))
}

/// Reads an optional `true` or `false` (`default` when unset).
pub fn flag(name: &'static str, default: bool) -> Result<bool, Error> {
    match optional(name).to_ascii_lowercase().as_str() {
        "" => Ok(default),
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::Misconfigured { variable: name, what: "is not true or false".into() }),
    }
}

/// Reads an optional positive number.
pub fn number(name: &'static str, default: i64) -> Result<i64, Error> {
    let raw = optional(name);
    if raw.is_empty() {
        return Ok(default);
    }
    match raw.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::Misconfigured { variable: name, what: "is not a positive integer".into() }),
    }
}
