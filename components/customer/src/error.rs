//! The one error type of the component, and the one place it becomes an HTTP status and a
//! problem+json body. Infrastructure failures are logged here with their cause and answered with
//! an opaque 500/503; secrets never reach either.

use crate::problem::{FieldError, Problem};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// 400: the request cannot be read (malformed JSON, bad header, bad query).
    #[error("bad request ({code}): {detail}")]
    BadRequest { code: &'static str, detail: String },
    /// 422: well-formed, but fields are invalid.
    #[error("invalid fields")]
    Validation(Vec<FieldError>),
    /// 401 `missing_token`: no bearer token (codes and titles as auth's).
    #[error("missing token")]
    MissingToken,
    /// 401 `invalid_token`: a bearer token that does not verify. The detail is generic on purpose.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// 403: authenticated, but this caller may not do this.
    #[error("forbidden")]
    Forbidden,
    /// 403 `email_not_verified`: `require_verified_email` is on and the caller's email, at auth,
    /// is not verified yet.
    #[error("email not verified")]
    EmailNotVerified,
    /// 404 with a stable code (`not_found`, `not_a_customer`, `profile_not_found`).
    #[error("not found ({code}): {detail}")]
    NotFound { code: &'static str, detail: String },
    /// 409 with a stable code.
    #[error("conflict ({code}): {detail}")]
    Conflict { code: &'static str, detail: String },
    /// 409 with a stable code and `Retry-After: 1`: another request is doing this very thing
    /// (creating the customer, creating the subscription); it will be done in a moment.
    #[error("busy ({code}): {detail}")]
    Busy { code: &'static str, detail: String },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 422: the Idempotency-Key was used with another request.
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    /// 409: the first request with this Idempotency-Key is still running.
    #[error("idempotency key in use")]
    IdempotencyInProgress,
    /// 402: Stripe declined the card.
    #[error("payment required")]
    PaymentRequired { detail: String, decline_code: Option<String> },
    /// 422: Stripe refused the parameters (unknown price, no payment method, ...); `errors`
    /// names the client's field when the refused parameter was one (`price_id`).
    #[error("stripe rejected the request")]
    StripeRejected { detail: String, errors: Vec<FieldError> },
    /// 429 `rate_limited`: the user spent this minute's budget of requests that may reach
    /// Stripe (`stripe_calls_per_user_per_minute`); Retry-After: the seconds left in the minute.
    #[error("rate limited")]
    RateLimited { retry_after: u32 },
    /// 503: auth did not answer (or answered nonsense); Retry-After in seconds.
    #[error("auth unavailable")]
    AuthUnavailable { retry_after: u32 },
    /// 503: Stripe did not answer after the retries.
    #[error("stripe unavailable")]
    StripeUnavailable { retry_after: u32 },
    /// 503: an erasure deleted the account at auth, but closing its billing failed; sending the
    /// request again (same token) finishes it.
    #[error("erasure incomplete")]
    ErasureIncomplete { retry_after: u32 },
    #[error("database unavailable")]
    DatabaseUnavailable,
    /// 500: a variable is missing or malformed; names the variable, never its value.
    #[error("variable {variable} {what}")]
    Misconfigured { variable: &'static str, what: String },
    /// 400: a webhook whose signature does not verify (or is stale or missing).
    #[error("webhook signature: {0}")]
    WebhookSignature(&'static str),
    /// 508: a login already forwarded by customer's proxy reached it again: `auth_service_url`
    /// points back at customer, or a client sent `X-Forwarded-By: customer`. Not ours to hide
    /// as a 500: the request says it, and the answer names it.
    #[error("login proxy loop")]
    ProxyLoop,
    /// 500: anything else; the cause is logged, never sent.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest { code, detail: detail.into() }
    }

    pub fn field(field: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, code, detail)])
    }

    pub fn not_a_customer() -> Self {
        Self::NotFound {
            code: "not_a_customer",
            detail: "This user is not a customer yet: POST /api/v3/customers to become one.".into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound { code: "not_found", detail: detail.into() }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    pub fn status(&self) -> u16 {
        self.problem_unlogged().status
    }

    /// The problem+json for this error; logs the cause of 5xx errors.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Internal(cause) => telemetry::error("internal error", &[("cause", cause.as_str().into())]),
            Self::Misconfigured { variable, what } => {
                telemetry::error("configuration error", &[("variable", (*variable).into()), ("problem", what.as_str().into())]);
            }
            Self::DatabaseUnavailable => telemetry::error("database unavailable", &[]),
            Self::ProxyLoop => telemetry::warn("login proxy loop: the request was already forwarded by customer", &[]),
            _ => {}
        }
        self.problem_unlogged()
    }

    fn problem_unlogged(&self) -> Problem {
        match self {
            // The titles of the codes auth answers too are auth's.
            Self::BadRequest { code: code @ "malformed_json", detail } => Problem::new(400, code, "Malformed JSON").with_detail(detail.clone()),
            Self::BadRequest { code: code @ "unreadable_body", detail } => Problem::new(400, code, "Unreadable body").with_detail(detail.clone()),
            Self::BadRequest { code: code @ "invalid_body", detail } => Problem::new(400, code, "Invalid body").with_detail(detail.clone()),
            Self::BadRequest { code, detail } => Problem::new(400, code, "Bad request").with_detail(detail.clone()),
            Self::Validation(errors) => {
                let mut p = Problem::new(422, "validation_failed", "Invalid fields")
                    .with_detail("One or more fields are invalid; see errors.");
                p.errors = errors.clone();
                p
            }
            Self::MissingToken => Problem::new(401, "missing_token", "Authentication required")
                .with_detail("Send an access token as Authorization: Bearer <token>."),
            Self::InvalidToken(detail) => Problem::new(401, "invalid_token", "Invalid token").with_detail(*detail),
            Self::Forbidden => Problem::new(403, "forbidden", "Forbidden")
                .with_detail("This caller may not access this resource."),
            Self::EmailNotVerified => Problem::new(403, "email_not_verified", "Email not verified")
                .with_detail("Verify your email address (the link mailed to it) before billing starts."),
            Self::NotFound { code, detail } => Problem::new(404, code, "Not found").with_detail(detail.clone()),
            Self::Conflict { code, detail } => Problem::new(409, code, "Conflict").with_detail(detail.clone()),
            Self::Busy { code, detail } => Problem::new(409, code, "Conflict").with_detail(detail.clone()).with_retry_after(1),
            Self::PayloadTooLarge => Problem::new(413, "payload_too_large", "Payload too large")
                .with_detail("The request body exceeds what this route accepts: 64 KiB, or 512 KiB for Stripe webhooks."),
            Self::UnsupportedMediaType => Problem::new(415, "unsupported_media_type", "Unsupported media type")
                .with_detail("Send the body as application/json."),
            Self::IdempotencyMismatch => Problem::new(422, "idempotency_key_reused", "Idempotency key reused")
                .with_detail("This Idempotency-Key was first used with a different request; use a new key."),
            Self::IdempotencyInProgress => Problem::new(409, "idempotency_key_in_use", "Request in progress")
                .with_detail("The first request with this Idempotency-Key is still being processed; retry shortly.")
                .with_retry_after(1),
            Self::PaymentRequired { detail, decline_code } => {
                let mut p = Problem::new(402, "payment_failed", "Payment failed").with_detail(detail.clone());
                if let Some(code) = decline_code {
                    p.errors = vec![FieldError::new("payment_method", code.clone(), detail.clone())];
                }
                p
            }
            Self::StripeRejected { detail, errors } => {
                let mut p = Problem::new(422, "billing_rejected", "Billing provider rejected the request")
                    .with_detail(detail.clone());
                p.errors = errors.clone();
                p
            }
            Self::RateLimited { retry_after } => Problem::new(429, "rate_limited", "Rate limit exceeded")
                .with_detail("Too many billing requests from this user this minute; retry later.")
                .with_retry_after(*retry_after),
            Self::AuthUnavailable { retry_after } => Problem::new(503, "auth_unavailable", "Auth service unavailable")
                .with_detail("The identity service did not answer in time; retry shortly.")
                .with_retry_after(*retry_after),
            Self::StripeUnavailable { retry_after } => {
                Problem::new(503, "billing_unavailable", "Billing provider unavailable")
                    .with_detail("The billing provider did not answer; retry shortly.")
                    .with_retry_after(*retry_after)
            }
            Self::ErasureIncomplete { retry_after } => {
                Problem::new(503, "erasure_incomplete", "Erasure incomplete").with_detail(
                    "The account is deleted at auth, but its billing could not be closed yet: send this request again with the same token to finish.",
                )
                .with_retry_after(*retry_after)
            }
            Self::ProxyLoop => Problem::new(508, "proxy_loop", "Loop detected").with_detail(
                "This login was already forwarded by customer's proxy (X-Forwarded-By: customer): auth_service_url must point at auth.",
            ),
            Self::DatabaseUnavailable => Problem::new(503, "database_unavailable", "Database unavailable")
                .with_detail("The service's database is unreachable; retry shortly.")
                .with_retry_after(5),
            Self::Misconfigured { variable, what } => Problem::new(500, "configuration_error", "Service misconfigured")
                .with_detail(format!("The variable `{variable}` {what}.")),
            Self::WebhookSignature(detail) => {
                Problem::new(400, "invalid_signature", "Invalid webhook signature").with_detail(*detail)
            }
            Self::Internal(_) => Problem::new(500, "internal_error", "Internal error")
                .with_detail("Something went wrong on our side; it has been logged."),
        }
    }
}

/// Maps a unique-key violation to a 409 by the constraint that fired.
pub fn conflict_for_constraint(constraint: &str) -> Error {
    let (code, detail) = match constraint {
        "customers.PRIMARY" | "PRIMARY" => ("customer_exists", "This user already is a customer."),
        "uq_subscriptions_live_price" => {
            ("already_subscribed", "There already is a live subscription to this price.")
        }
        "uq_subscriptions_stripe_id" => ("subscription_exists", "This Stripe subscription is already recorded."),
        _ => ("conflict", "The request conflicts with the current state."),
    };
    Error::Conflict { code, detail: detail.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_are_opaque() {
        let p = Error::internal("mysql password=hunter2 failed").problem();
        assert_eq!(p.status, 500);
        assert!(!p.body().contains("hunter2"));
    }

    #[test]
    fn statuses() {
        assert_eq!(Error::IdempotencyMismatch.status(), 422);
        assert_eq!(Error::IdempotencyInProgress.status(), 409);
        assert_eq!(Error::AuthUnavailable { retry_after: 5 }.problem().retry_after, Some(5));
        assert_eq!(Error::PaymentRequired { detail: "declined".into(), decline_code: None }.status(), 402);
        assert_eq!(Error::StripeRejected { detail: "x".into(), errors: vec![] }.status(), 422);
        assert_eq!(Error::WebhookSignature("stale").status(), 400);
        assert_eq!(conflict_for_constraint("uq_subscriptions_live_price").problem().code, "already_subscribed");
        assert_eq!(conflict_for_constraint("PRIMARY").problem().code, "customer_exists");
    }
}
