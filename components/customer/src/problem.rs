//! RFC 9457 problem details: the body every error becomes (built in `error.rs`, the one place
//! that maps errors to statuses) and its HTTP rendering. Each carries the request's id
//! (`request_id`, as in the `x-request-id` header) once `lib.rs` has started the request.

use serde::Serialize;

/// One invalid field of a request, in the shape auth's problems use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON name of the field (`area_ids[3]` for an array element).
    pub field: String,
    /// Stable machine-readable reason: `required`, `invalid_type`, `too_few`, `too_many`,
    /// `out_of_range`, `duplicate`, `invalid_format`; for `payment_method`, Stripe's decline code;
    /// `rejected` for a parameter Stripe refused.
    pub code: String,
    /// For people.
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), code: code.into(), detail: detail.into() }
    }
}

/// A problem+json body. `code` is stable and machine-readable; `title` is for people.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The request's id (also in the `x-request-id` header), to match a report to the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    pub fn new(status: u16, code: &'static str, title: &'static str) -> Self {
        Self {
            kind: format!("https://problems.auth-billing.dev/{code}"),
            title,
            status,
            code,
            detail: None,
            retry_after: None,
            errors: Vec::new(),
            request_id: telemetry::request_id(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn body(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            // Serializing plain strings and integers cannot fail; keep a valid body regardless.
            format!(r#"{{"status":{},"title":"Error"}}"#, self.status)
        })
    }
}
