//! Outbound HTTP with timeouts. spin-sdk 5.2's `http::send` offers no timeouts, so this sends
//! through wasi:http directly with `request-options` (connect, first byte, between bytes), which
//! Spin honours. Those bound each wait; the whole answer must also arrive within
//! `Timeouts::whole_answer` (a timer polled beside each wait), so a peer that trickles its
//! answer costs no more than one that hangs. A dead dependency costs at most that, never a hang.

use std::time::Instant;

use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, FutureIncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::clocks::monotonic_clock;
use wasi::io::poll::{self, Pollable};
use wasi::io::streams::StreamError;

use crate::transport::{HttpRequest, HttpResponse, Pending, Timeouts, Transport, TransportError};

/// The real transport: wasi:http's outgoing handler.
pub struct WasiTransport;

impl Transport for WasiTransport {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        self.start(request).wait()
    }

    /// The host sends the request while this instance goes on (wasi:http's outgoing handler
    /// returns a future); the answer is read in `wait`.
    fn start(&self, request: &HttpRequest) -> Pending<'_> {
        let headers: Vec<(&str, &str)> =
            request.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        match begin(request.method, &request.url, &headers, request.body.as_deref(), request.timeouts) {
            Ok(in_flight) => {
                let max_body = request.max_body;
                Pending::InFlight(Box::new(move || in_flight.finish(max_body)))
            }
            Err(err) => Pending::Ready(Err(err)),
        }
    }
}

fn classify(code: ErrorCode) -> TransportError {
    match code {
        ErrorCode::HttpRequestDenied => TransportError::Refused(format!("{code:?}")),
        ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTimeout
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_)
        | ErrorCode::ConnectionLimitReached => TransportError::Connect(format!("{code:?}")),
        ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => TransportError::Timeout(format!("{code:?}")),
        other => TransportError::Interrupted(format!("{other:?}")),
    }
}

/// A request handed to the host, its answer not read yet.
struct InFlight {
    pending: FutureIncomingResponse,
    started: Instant,
    /// The whole answer must be in by then.
    deadline: Instant,
}

/// Hands one request (headers and whole body) to the host; the host sends it from here on.
fn begin(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeouts: Timeouts,
) -> Result<InFlight, TransportError> {
    let started = Instant::now();
    let (scheme, authority, path) = split_url(url)?;
    let fields = Fields::from_list(
        &headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| TransportError::Refused(format!("invalid header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    };
    let invalid = |what: &str| TransportError::Refused(format!("{what} rejected"));
    request.set_method(&method).map_err(|()| invalid("method"))?;
    request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
    request.set_path_with_query(Some(path)).map_err(|()| invalid("path"))?;
    let outgoing_body =
        request.body().map_err(|()| TransportError::Interrupted("request body unavailable".into()))?;

    let options = RequestOptions::new();
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    // A host may not support every option; the remaining ones still bound the call.
    let _ = options.set_connect_timeout(Some(nanos(timeouts.connect)));
    let _ = options.set_first_byte_timeout(Some(nanos(timeouts.first_byte)));
    let _ = options.set_between_bytes_timeout(Some(nanos(timeouts.between_bytes)));

    let pending = outgoing_handler::handle(request, Some(options)).map_err(classify)?;
    {
        let stream = outgoing_body
            .write()
            .map_err(|()| TransportError::Interrupted("request body stream unavailable".into()))?;
        for chunk in body.unwrap_or_default().chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| TransportError::Interrupted(format!("writing the request body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(classify)?;
    Ok(InFlight { pending, started, deadline: started + timeouts.whole_answer })
}

impl InFlight {
    /// Waits for the answer and reads its whole body (at most `max_body` bytes).
    fn finish(self, max_body: usize) -> Result<HttpResponse, TransportError> {
        let InFlight { pending, started, deadline } = self;
        let late = || {
            let limit = deadline.saturating_duration_since(started);
            TransportError::Timeout(format!("no whole answer within {} ms", limit.as_millis()))
        };
        if !ready_before(&pending.subscribe(), deadline) {
            return Err(late());
        }
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(classify(code)),
            Some(Err(())) | None => return Err(TransportError::Interrupted("response already taken".into())),
        };
        let status = response.status();
        let headers = response.headers().entries();
        let incoming =
            response.consume().map_err(|()| TransportError::Interrupted("response body unavailable".into()))?;
        let mut body = Vec::new();
        {
            let stream =
                incoming.stream().map_err(|()| TransportError::Interrupted("response stream unavailable".into()))?;
            loop {
                if !ready_before(&stream.subscribe(), deadline) {
                    return Err(late());
                }
                match stream.read(64 * 1024) {
                    Ok(chunk) => {
                        body.extend_from_slice(&chunk);
                        if body.len() > max_body {
                            return Err(TransportError::TooLarge(max_body));
                        }
                    }
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(err)) => {
                        return Err(TransportError::Interrupted(err.to_debug_string()));
                    }
                }
            }
        }
        Ok(HttpResponse { status, headers, body, elapsed: started.elapsed() })
    }
}

/// Waits until `ready` is, or `deadline` passes; false when the deadline came first.
fn ready_before(ready: &Pollable, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    let timer = monotonic_clock::subscribe_duration(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX));
    poll::poll(&[ready, &timer]);
    ready.ready()
}

fn split_url(url: &str) -> Result<(Scheme, &str, &str), TransportError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| TransportError::Refused("invalid URL: no scheme".into()))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(TransportError::Refused(format!("invalid URL: unsupported scheme {other}"))),
    };
    let (authority, path) = match rest.find('/') {
        Some(index) => rest.split_at(index),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(TransportError::Refused("invalid URL: no host".into()));
    }
    Ok((scheme, authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let (scheme, authority, path) = split_url("http://auth.spin.internal/api/v3/users/1?x=1").unwrap();
        assert!(matches!(scheme, Scheme::Http));
        assert_eq!(authority, "auth.spin.internal");
        assert_eq!(path, "/api/v3/users/1?x=1");
        let (_, authority, path) = split_url("https://api.stripe.com").unwrap();
        assert_eq!((authority, path), ("api.stripe.com", "/"));
        assert!(split_url("ftp://x/").is_err());
        assert!(split_url("http:///x").is_err());
        assert!(split_url("nothing").is_err());
    }
}
