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

    /// Sends `request` and returns without waiting for the answer, so the caller can do other
    /// work (its own query) while the peer works; [`Pending::wait`] reads the answer. A
    /// transport that cannot overlap calls sends at once (this default).
    fn start(&self, request: &HttpRequest) -> Pending<'_> {
        Pending::Ready(self.send(request))
    }
}

/// A call in flight, or its result when the transport sent it at once.
pub enum Pending<'a> {
    Ready(Result<HttpResponse, TransportError>),
    InFlight(Box<dyn FnOnce() -> Result<HttpResponse, TransportError> + 'a>),
}

impl Pending<'_> {
    pub fn wait(self) -> Result<HttpResponse, TransportError> {
        match self {
            Self::Ready(result) => result,
            Self::InFlight(finish) => finish(),
        }
    }
}

/// A call started by [`start_logged`]: logged as one `call` line when its answer is read.
pub struct LoggedCall<'a> {
    pending: Pending<'a>,
    target: &'a str,
    method: &'static str,
    url: String,
    attempt: u32,
    extra: Vec<(&'a str, Value)>,
    started: Instant,
}

impl LoggedCall<'_> {
    /// Waits for the answer and logs the call (its duration counts from the start).
    pub fn wait(self) -> Result<HttpResponse, TransportError> {
        let result = self.pending.wait();
        let duration = self.started.elapsed();
        let error = result.as_ref().err().map(ToString::to_string);
        let outcome = match (&result, &error) {
            (Ok(response), _) => Ok(response.status),
            (Err(_), Some(reason)) => Err(reason.as_str()),
            (Err(_), None) => Err("failed"),
        };
        let mut fields = self.extra;
        // Stripe's own id of the request, for its support and dashboard logs.
        if let Some(id) = result.as_ref().ok().and_then(|r| r.header("request-id")) {
            fields.push(("upstream_request_id", Value::from(id)));
        }
        telemetry::call(
            &telemetry::Call {
                target: self.target,
                method: self.method,
                url: &self.url,
                attempt: self.attempt,
                duration,
                outcome,
            },
            &fields,
        );
        result
    }
}

/// Starts one attempt through `transport`; [`LoggedCall::wait`] reads and logs it.
pub fn start_logged<'a>(
    transport: &'a dyn Transport,
    target: &'a str,
    request: &HttpRequest,
    attempt: u32,
    extra: &[(&'a str, Value)],
) -> LoggedCall<'a> {
    let started = Instant::now();
    LoggedCall {
        pending: transport.start(request),
        target,
        method: request.method,
        url: request.url.clone(),
        attempt,
        extra: extra.to_vec(),
        started,
    }
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
    start_logged(transport, target, request, attempt, extra).wait()
}
