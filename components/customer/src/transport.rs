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
    /// From sending to the last byte of the answer. The others bound one wait each; this
    /// bounds the call, so a peer trickling a byte just inside `between_bytes` cannot hold a
    /// request up to the body cap.
    pub whole_answer: Duration,
}

impl Timeouts {
    pub const fn all(limit: Duration) -> Self {
        Self { connect: limit, first_byte: limit, between_bytes: limit, whole_answer: limit }
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
///
/// Dropped unread (a lookup started early for a request that was then refused), it still waits
/// for its answer, within its timeouts, and logs it marked `unused`: every call is logged with
/// its real outcome, and the peer is never cut off mid-answer (a Spin component whose caller went
/// away fails to send its response and says so on stderr, outside the JSON log).
pub struct LoggedCall<'a> {
    /// `None` once read.
    pending: Option<Pending<'a>>,
    target: &'a str,
    method: &'static str,
    url: String,
    attempt: u32,
    extra: Vec<(&'a str, Value)>,
    started: Instant,
}

impl LoggedCall<'_> {
    /// Waits for the answer and logs the call (its duration counts from the start).
    pub fn wait(mut self) -> Result<HttpResponse, TransportError> {
        self.finish(false)
    }

    fn finish(&mut self, unused: bool) -> Result<HttpResponse, TransportError> {
        let Some(pending) = self.pending.take() else {
            // Unreachable: `wait` consumes the call and `drop` runs once.
            return Err(TransportError::Interrupted("the call was already read".into()));
        };
        let result = pending.wait();
        let duration = self.started.elapsed();
        let error = result.as_ref().err().map(ToString::to_string);
        let outcome = match (&result, &error) {
            (Ok(response), _) => Ok(response.status),
            (Err(_), Some(reason)) => Err(reason.as_str()),
            (Err(_), None) => Err("failed"),
        };
        let mut fields = std::mem::take(&mut self.extra);
        // Stripe's own id of the request, for its support and dashboard logs.
        if let Some(id) = result.as_ref().ok().and_then(|r| r.header("request-id")) {
            fields.push(("upstream_request_id", Value::from(id)));
        }
        if unused {
            fields.push(("unused", Value::from(true)));
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

impl Drop for LoggedCall<'_> {
    fn drop(&mut self) {
        if self.pending.is_some() {
            let _unused_answer = self.finish(true);
        }
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
        pending: Some(transport.start(request)),
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A transport whose calls are in flight until read, counting the answers read.
    struct CountingTransport {
        answers_read: Cell<u32>,
    }

    impl Transport for CountingTransport {
        fn send(&self, _request: &HttpRequest) -> Result<HttpResponse, TransportError> {
            self.answers_read.set(self.answers_read.get() + 1);
            Ok(HttpResponse { status: 204, headers: Vec::new(), body: Vec::new(), elapsed: Duration::ZERO })
        }

        fn start(&self, request: &HttpRequest) -> Pending<'_> {
            let request = request.clone();
            Pending::InFlight(Box::new(move || self.send(&request)))
        }
    }

    fn request() -> HttpRequest {
        HttpRequest {
            method: "GET",
            url: "http://auth.spin.internal/api/v3/users/me".into(),
            headers: Vec::new(),
            body: None,
            timeouts: Timeouts::all(Duration::from_secs(1)),
            max_body: 1024,
        }
    }

    #[test]
    fn a_call_dropped_unread_still_waits_for_its_answer_once() {
        let transport = CountingTransport { answers_read: Cell::new(0) };
        let call = start_logged(&transport, "auth", &request(), 1, &[]);
        assert_eq!(transport.answers_read.get(), 0, "in flight until read");
        drop(call);
        assert_eq!(transport.answers_read.get(), 1);
    }

    #[test]
    fn a_call_read_is_not_read_again_when_dropped() {
        let transport = CountingTransport { answers_read: Cell::new(0) };
        let answer = start_logged(&transport, "auth", &request(), 1, &[]).wait();
        assert_eq!(answer.map(|r| r.status), Ok(204));
        assert_eq!(transport.answers_read.get(), 1);
    }
}
