//! The one error type of the component and its single mapping to RFC 9457 problem+json.
//!
//! Every variant says its status and its stable `code`. Infrastructure failures are logged where
//! they happen (with the cause, never a secret, token, password or email) and reach the client
//! as an opaque 500 or 503. This module knows no `spin_sdk`: `render` returns plain parts that
//! `lib.rs` turns into a response. Bodies carry the request's id (`request_id`) once `lib.rs` has
//! started the request (`telemetry::start`).

use serde::Serialize;

/// Base of every problem `type` URI; the `code` is appended.
pub const PROBLEM_TYPE_BASE: &str = "https://problems.auth-billing.dev/";

/// One invalid field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON name of the field (`ids[3]` for an array element, `body` for the body as a whole).
    pub field: String,
    /// Stable machine-readable reason, e.g. `required`, `too_long`, `invalid_email`.
    pub code: &'static str,
    /// For people; never repeats the value.
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// 400 `malformed_json`: the body is not JSON.
    MalformedJson,
    /// 400 `unreadable_body`: the body could not be read (the client went away mid-upload).
    UnreadableBody,
    /// 400 `invalid_body`: JSON, but not an object.
    BodyNotObject,
    /// 413 `payload_too_large`: body over 64 KiB.
    PayloadTooLarge,
    /// 415 `unsupported_media_type`: a body route without `Content-Type: application/json`.
    UnsupportedMediaType,
    /// 422 `validation_failed`, with one entry per invalid field.
    Validation(Vec<FieldError>),
    /// 401 `invalid_credentials`: unknown email or wrong password (one identical body).
    InvalidCredentials,
    /// 401 `mfa_required`: the password is right and the account has a second factor; send
    /// `mfa_code` (or `recovery_code`) with it.
    MfaRequired,
    /// 401 `invalid_mfa_code`: the password is right, the code is wrong, too old or already used.
    InvalidMfaCode,
    /// 401 `missing_token`: no `Authorization: Bearer` header.
    MissingToken,
    /// 401 `invalid_token`: a bearer token that does not verify, or whose user no longer exists.
    InvalidToken,
    /// 401 `invalid_refresh_token`: unknown, expired, revoked or reused.
    InvalidRefreshToken,
    /// 400 `invalid_reset_token`: a password-reset token unknown, expired or already used.
    InvalidResetToken,
    /// 400 `invalid_verification_token`: an email-verification token unknown, expired or used.
    InvalidVerificationToken,
    /// 403 `wrong_password`: the current password given to confirm a change is wrong.
    WrongPassword,
    /// 403 `wrong_mfa_code`: the code given to confirm a change is wrong or already used.
    WrongMfaCode,
    /// 403 `forbidden`: a caller proven, but not one allowed here (a user's token, or a service
    /// not in `password_reset_services`, asking for a reset token).
    Forbidden,
    /// 404 `user_not_found`: no such user, or not one this caller may read.
    UserNotFound,
    /// 404 `session_not_found`: the caller has no live session by this id (another user's is
    /// answered alike).
    SessionNotFound,
    /// 404 `not_found`: no route for this path.
    RouteNotFound,
    /// 405 `method_not_allowed`, with `Allow`.
    MethodNotAllowed { allow: &'static str },
    /// 409 `email_taken`: another account uses this email (case and whitespace insensitive).
    EmailTaken,
    /// 409 `email_already_verified`: a verification token asked for an address already verified.
    EmailAlreadyVerified,
    /// 409 `mfa_enabled`: an authenticator app is already on; turn it off first.
    MfaAlreadyEnabled,
    /// 409 `mfa_not_enrolled`: no authenticator app was added (nothing to confirm or turn off).
    MfaNotEnrolled,
    /// 429 `too_many_attempts` + `Retry-After`: login throttled (account or address), or a
    /// registration from an address over its limit.
    Throttled { retry_after: u64 },
    /// 429 `rate_limited` + `Retry-After`: a calling service went over its per-minute budget.
    RateLimited { retry_after: u64 },
    /// 500 `configuration_error`: a variable is missing or malformed. Names the variable only.
    Misconfigured { variable: &'static str, what: String },
    /// 500 `internal_error`: logged where it happened; nothing more is said.
    Internal,
    /// 503 `database_unavailable` + `Retry-After`.
    DatabaseUnavailable,
}

/// The HTTP parts of a problem response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    /// The request's id (also in the `x-request-id` header), to match a report to the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl Error {
    /// Logs an infrastructure failure (`what` failed: `cause`) and returns the opaque 500.
    pub fn internal(what: &str, cause: &dyn std::fmt::Display) -> Error {
        telemetry::error("internal error", &[("what", what.into()), ("cause", cause.to_string().into())]);
        Error::Internal
    }

    /// A variable is missing or malformed: logged and answered with its name, never its value.
    pub fn misconfigured(variable: &'static str, what: impl Into<String>) -> Error {
        let what = what.into();
        telemetry::error("configuration error", &[("variable", variable.into()), ("problem", what.as_str().into())]);
        Error::Misconfigured { variable, what }
    }

    pub fn field(field: &str, code: &'static str, detail: impl Into<String>) -> Error {
        Error::Validation(vec![FieldError::new(field, code, detail)])
    }

    pub fn status(&self) -> u16 {
        self.parts().0
    }

    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// (status, code, title)
    fn parts(&self) -> (u16, &'static str, &'static str) {
        match self {
            Error::MalformedJson => (400, "malformed_json", "Malformed JSON"),
            Error::UnreadableBody => (400, "unreadable_body", "Unreadable body"),
            Error::BodyNotObject => (400, "invalid_body", "Invalid body"),
            Error::PayloadTooLarge => (413, "payload_too_large", "Payload too large"),
            Error::UnsupportedMediaType => (415, "unsupported_media_type", "Unsupported media type"),
            Error::Validation(_) => (422, "validation_failed", "Invalid fields"),
            Error::InvalidCredentials => (401, "invalid_credentials", "Invalid credentials"),
            Error::MfaRequired => (401, "mfa_required", "Second factor required"),
            Error::InvalidMfaCode => (401, "invalid_mfa_code", "Invalid code"),
            Error::MissingToken => (401, "missing_token", "Authentication required"),
            Error::InvalidToken => (401, "invalid_token", "Invalid token"),
            Error::InvalidRefreshToken => (401, "invalid_refresh_token", "Invalid refresh token"),
            Error::InvalidResetToken => (400, "invalid_reset_token", "Invalid reset token"),
            Error::InvalidVerificationToken => (400, "invalid_verification_token", "Invalid verification token"),
            Error::WrongPassword => (403, "wrong_password", "Wrong password"),
            Error::WrongMfaCode => (403, "wrong_mfa_code", "Wrong code"),
            Error::Forbidden => (403, "forbidden", "Forbidden"),
            Error::UserNotFound => (404, "user_not_found", "User not found"),
            Error::SessionNotFound => (404, "session_not_found", "Session not found"),
            Error::RouteNotFound => (404, "not_found", "Not found"),
            Error::MethodNotAllowed { .. } => (405, "method_not_allowed", "Method not allowed"),
            Error::EmailTaken => (409, "email_taken", "Email already registered"),
            Error::EmailAlreadyVerified => (409, "email_already_verified", "Email already verified"),
            Error::MfaAlreadyEnabled => (409, "mfa_enabled", "Second factor already on"),
            Error::MfaNotEnrolled => (409, "mfa_not_enrolled", "No second factor"),
            Error::Throttled { .. } => (429, "too_many_attempts", "Too many attempts"),
            Error::RateLimited { .. } => (429, "rate_limited", "Rate limit exceeded"),
            Error::Misconfigured { .. } => (500, "configuration_error", "Service misconfigured"),
            Error::Internal => (500, "internal_error", "Internal error"),
            Error::DatabaseUnavailable => (503, "database_unavailable", "Database unavailable"),
        }
    }

    fn detail(&self) -> String {
        match self {
            Error::MalformedJson => "The request body is not valid JSON.".into(),
            Error::UnreadableBody => "The request body could not be read to its end.".into(),
            Error::BodyNotObject => "The request body must be a JSON object.".into(),
            Error::PayloadTooLarge => format!("The request body exceeds {} bytes.", crate::api::MAX_BODY_BYTES),
            Error::UnsupportedMediaType => "Send the body as application/json.".into(),
            Error::Validation(_) => "One or more fields are invalid; see errors.".into(),
            Error::InvalidCredentials => "The email or password is incorrect.".into(),
            Error::MfaRequired => "This account has a second factor: send mfa_code (the authenticator app's code) or a recovery_code with the email and password.".into(),
            Error::InvalidMfaCode => "The code is wrong, expired or already used.".into(),
            Error::MissingToken => "Send an access token as Authorization: Bearer <token>.".into(),
            Error::InvalidToken => "The access token is invalid or expired.".into(),
            Error::InvalidRefreshToken => "The refresh token is invalid, expired or revoked; sign in again.".into(),
            Error::InvalidResetToken => "The reset token is unknown, expired or already used; ask for a new one.".into(),
            Error::InvalidVerificationToken => "The verification token is unknown, expired or already used; ask for a new one.".into(),
            Error::WrongPassword => "The current password is incorrect.".into(),
            Error::WrongMfaCode => "The code is wrong, expired or already used.".into(),
            Error::Forbidden => "This caller may not do this.".into(),
            Error::UserNotFound => "No such user.".into(),
            Error::SessionNotFound => "You have no session with this id.".into(),
            Error::RouteNotFound => "No resource at this path.".into(),
            Error::MethodNotAllowed { allow } => format!("Allowed methods: {allow}."),
            Error::EmailTaken => "An account with this email already exists.".into(),
            Error::EmailAlreadyVerified => "This account's email is already verified.".into(),
            Error::MfaAlreadyEnabled => "An authenticator app is already on for this account; turn it off first.".into(),
            Error::MfaNotEnrolled => "No authenticator app was added to this account.".into(),
            Error::Throttled { .. } => "Too many failed attempts; retry later.".into(),
            Error::RateLimited { .. } => "Too many requests from this service; retry later.".into(),
            Error::Misconfigured { variable, what } => format!("The variable `{variable}` {what}."),
            Error::Internal => "Something went wrong on our side.".into(),
            Error::DatabaseUnavailable => "The service's database is unreachable; retry shortly.".into(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Error::Throttled { retry_after } | Error::RateLimited { retry_after } => Some((*retry_after).max(1)),
            Error::DatabaseUnavailable => Some(5),
            _ => None,
        }
    }

    /// The response: problem+json body, `Retry-After`, `Allow`, `WWW-Authenticate` as due.
    pub fn render(&self) -> Rendered {
        let (status, code, title) = self.parts();
        let retry_after = self.retry_after();
        let body = Body {
            kind: format!("{PROBLEM_TYPE_BASE}{code}"),
            title,
            status,
            code,
            detail: self.detail(),
            errors: match self {
                Error::Validation(errors) => Some(errors),
                _ => None,
            },
            retry_after,
            request_id: telemetry::request_id(),
        };
        let body = serde_json::to_string(&body)
            .unwrap_or_else(|_| format!(r#"{{"status":{status},"code":"{code}","title":"{title}"}}"#));
        let mut headers = vec![("content-type", "application/problem+json".to_string())];
        if let Some(seconds) = retry_after {
            headers.push(("retry-after", seconds.to_string()));
        }
        match self {
            Error::MethodNotAllowed { allow } => headers.push(("allow", (*allow).to_string())),
            Error::MissingToken => headers.push(("www-authenticate", "Bearer".into())),
            Error::InvalidToken => headers.push(("www-authenticate", r#"Bearer error="invalid_token""#.into())),
            _ => {}
        }
        headers.push(("cache-control", "no-store".into()));
        Rendered { status, headers, body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code `parts` can answer is in the `code` enum of openapi/auth.yaml's Problem, and
    /// the enum lists no other: a client generated from the document knows every code. (Read
    /// from the sources, so that a new variant cannot be left out of this test.)
    #[test]
    fn the_openapi_problem_codes_are_exactly_these() {
        let source = include_str!("error.rs");
        let parts = &source[source.find("fn parts(").expect("parts")..];
        let parts = &parts[..parts.find("\n    }\n").expect("end of parts")];
        let mut answered: Vec<&str> = parts
            .split("=> (")
            .skip(1)
            .filter_map(|arm| arm.split('"').nth(1))
            .collect();
        // Answered by the shared entry point (`telemetry::spin::serve`) before auth sees the request.
        answered.push("repeated_header");
        answered.sort_unstable();
        answered.dedup();
        let yaml = include_str!("../../../openapi/auth.yaml");
        let schema = &yaml[yaml.find("\n    Problem:\n").expect("Problem schema")..];
        let list = &schema[schema.find("enum:\n").expect("code enum") + "enum:\n".len()..];
        let mut documented: Vec<&str> =
            list.lines().map_while(|line| line.trim().strip_prefix("- ")).collect();
        documented.sort_unstable();
        assert!(answered.len() >= 20, "{answered:?}");
        assert_eq!(answered, documented);
    }

    #[test]
    fn problems_carry_type_code_status_and_headers() {
        let rendered = Error::Throttled { retry_after: 42 }.render();
        assert_eq!(rendered.status, 429);
        assert!(rendered.headers.contains(&("retry-after", "42".to_string())));
        let body: serde_json::Value = serde_json::from_str(&rendered.body).expect("json");
        assert_eq!(body["code"], "too_many_attempts");
        assert_eq!(body["type"], "https://problems.auth-billing.dev/too_many_attempts");
        assert_eq!(body["status"], 429);
    }

    #[test]
    fn validation_lists_each_field() {
        let rendered = Error::Validation(vec![
            FieldError::new("email", "invalid_email", "is not an email address"),
            FieldError::new("password", "too_short", "must be at least 8 characters"),
        ])
        .render();
        assert_eq!(rendered.status, 422);
        let body: serde_json::Value = serde_json::from_str(&rendered.body).expect("json");
        assert_eq!(body["errors"][0]["field"], "email");
        assert_eq!(body["errors"][1]["code"], "too_short");
    }

    #[test]
    fn misconfiguration_names_the_variable_only() {
        let rendered = Error::misconfigured("encryption_key", "is not valid: key entry 1 is not valid base64").render();
        assert_eq!(rendered.status, 500);
        assert!(rendered.body.contains("`encryption_key`"));
        assert!(rendered.body.contains("configuration_error"));
    }

    #[test]
    fn invalid_credentials_body_is_constant() {
        assert_eq!(Error::InvalidCredentials.render(), Error::InvalidCredentials.render());
    }

    #[test]
    fn problems_carry_the_request_id_once_a_request_has_started() {
        let body: serde_json::Value = serde_json::from_str(&Error::UserNotFound.render().body).expect("json");
        assert!(body.get("request_id").is_none(), "no request on this thread");
        telemetry::start("auth", Some("report-9"), None);
        let body: serde_json::Value = serde_json::from_str(&Error::UserNotFound.render().body).expect("json");
        assert_eq!(body["request_id"], "report-9");
    }
}
