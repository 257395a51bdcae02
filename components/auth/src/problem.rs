//! RFC 9457 problem details: the one place errors become HTTP responses.

use serde::Serialize;
use spin_sdk::http::Response;

/// A problem+json body. `code` is stable and machine-readable; `title` is for people.
#[derive(Debug, Serialize)]
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
}

impl Problem {
    fn new(status: u16, code: &'static str, title: &'static str) -> Self {
        Self {
            kind: format!("https://problems.auth-billing.dev/{code}"),
            title,
            status,
            code,
            detail: None,
            retry_after: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// 503: the database did not answer; safe to retry shortly.
    pub fn database_unavailable() -> Self {
        let mut problem = Self::new(503, "database_unavailable", "Database unavailable")
            .with_detail("The service's database is unreachable; retry shortly.");
        problem.retry_after = Some(5);
        problem
    }

    /// 500: a variable is missing or malformed. Names the variable, never its value.
    pub fn misconfigured(variable: &'static str, what: &str) -> Self {
        eprintln!("config: variable `{variable}` {what}");
        Self::new(500, "configuration_error", "Service misconfigured")
            .with_detail(format!("The variable `{variable}` {what}."))
    }

    /// 404: no route for this path.
    pub fn not_found(path: &str) -> Self {
        Self::new(404, "not_found", "Not found").with_detail(format!("No resource at {path}."))
    }

    pub fn into_response(self) -> Response {
        let mut builder = Response::builder();
        builder
            .status(self.status)
            .header("content-type", "application/problem+json");
        if let Some(seconds) = self.retry_after {
            builder.header("retry-after", seconds.to_string());
        }
        let body = serde_json::to_string(&self).unwrap_or_else(|_| {
            // Serializing plain strings and integers cannot fail; keep a valid body regardless.
            format!(r#"{{"status":{},"title":"Error"}}"#, self.status)
        });
        builder.body(body).build()
    }
}
