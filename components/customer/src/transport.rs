//! Outbound HTTP as the clients see it: a request, a response and the ways a call can fail.
//! Plain Rust (no spin_sdk), so the Stripe and auth clients are unit-tested natively against a
//! fake; `outbound::WasiTransport` is the real one.

use std::time::{Duration, Instant};

use serde_json::Value;

/// Timeouts of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

impl Timeouts {
    pub const fn all(limit: Duration) -> Self {
        Self { connect: limit, first_byte: limit, between_bytes: limit }
    }
}

#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: &'static str,
    pub url: String,
    /// Never logged: may carry credentials.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeouts: Timeouts,
    pub max_body: usize,
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl HttpResponse {
    /// The first header of that name (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why no response came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made (refused, DNS, unreachable, connect timeout): the request
    /// certainly did not reach the peer, so retrying cannot do anything twice.
    #[error("could not connect: {0}")]
    Connect(String),
    /// Connected, but no (complete) answer in time: the peer may have acted on the request.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The connection broke while reading or writing.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// The host refused to send it (not in allowed_outbound_hosts) or the URL is invalid.
    #[error("refused: {0}")]
    Refused(String),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

pub trait Transport {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// Sends one attempt through `transport` and logs it as one `call` line: `target`, method, path
/// (never the query, headers or body), status or error, duration, attempt, the request's id, and
/// `extra` fields.
pub fn send_logged(
    transport: &dyn Transport,
    target: &str,
    request: &HttpRequest,
    attempt: u32,
    extra: &[(&str, Value)],
) -> Result<HttpResponse, TransportError> {
    let started = Instant::now();
    let result = transport.send(request);
    let duration = started.elapsed();
    let error = result.as_ref().err().map(ToString::to_string);
    let outcome = match (&result, &error) {
        (Ok(response), _) => Ok(response.status),
        (Err(_), Some(reason)) => Err(reason.as_str()),
        (Err(_), None) => Err("failed"),
    };
    let mut fields = extra.to_vec();
    // Stripe's own id of the request, for its support and dashboard logs.
    if let Some(id) = result.as_ref().ok().and_then(|r| r.header("request-id")) {
        fields.push(("upstream_request_id", Value::from(id)));
    }
    telemetry::call(
        &telemetry::Call { target, method: request.method, url: &request.url, attempt, duration, outcome },
        &fields,
    );
    result
}
