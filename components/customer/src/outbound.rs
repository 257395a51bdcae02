//! Outbound HTTP with timeouts. spin-sdk 5.2's `http::send` offers no timeouts, so this sends
//! through wasi:http directly with `request-options` (connect, first byte, between bytes), which
//! Spin honours. A dead dependency costs at most the timeout, never a hang.

use std::time::{Duration, Instant};

use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::StreamError;

/// Timeouts of one call.
#[derive(Debug, Clone, Copy)]
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

#[derive(Debug)]
#[allow(dead_code)] // headers and body: read by the auth and Stripe clients as they land
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    #[error("the request was refused by the host: {0:?}")]
    Refused(ErrorCode),
    #[error("the request failed: {0:?}")]
    Failed(ErrorCode),
    #[error("the response body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("I/O error: {0}")]
    Io(String),
}

#[allow(dead_code)] // the retry policy of the auth client uses it
impl OutboundError {
    /// A timeout, or a peer that could not be reached at all: worth one retry elsewhere.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Self::Failed(
                ErrorCode::ConnectionRefused
                    | ErrorCode::ConnectionTerminated
                    | ErrorCode::ConnectionTimeout
                    | ErrorCode::DestinationUnavailable
                    | ErrorCode::DnsTimeout
                    | ErrorCode::DnsError(_)
            )
        )
    }
}

/// Sends one request and reads the whole response (at most `max_body` bytes).
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeouts: Timeouts,
    max_body: usize,
) -> Result<HttpResponse, OutboundError> {
    let started = Instant::now();
    let (scheme, authority, path) = split_url(url)?;
    let fields = Fields::from_list(
        &headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| OutboundError::InvalidUrl(format!("invalid header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    };
    let invalid = |what: &str| OutboundError::InvalidUrl(format!("{what} rejected"));
    request.set_method(&method).map_err(|()| invalid("method"))?;
    request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
    request.set_path_with_query(Some(path)).map_err(|()| invalid("path"))?;
    let outgoing_body = request.body().map_err(|()| OutboundError::Io("request body unavailable".into()))?;

    let options = RequestOptions::new();
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    // A host may not support every option; the remaining ones still bound the call.
    let _ = options.set_connect_timeout(Some(nanos(timeouts.connect)));
    let _ = options.set_first_byte_timeout(Some(nanos(timeouts.first_byte)));
    let _ = options.set_between_bytes_timeout(Some(nanos(timeouts.between_bytes)));

    let pending = outgoing_handler::handle(request, Some(options)).map_err(|code| match code {
        ErrorCode::HttpRequestDenied => OutboundError::Refused(code),
        other => OutboundError::Failed(other),
    })?;
    {
        let stream = outgoing_body.write().map_err(|()| OutboundError::Io("request body stream unavailable".into()))?;
        for chunk in body.unwrap_or_default().chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| OutboundError::Io(format!("writing the request body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(OutboundError::Failed)?;

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => {
            return Err(match code {
                ErrorCode::HttpRequestDenied => OutboundError::Refused(code),
                other => OutboundError::Failed(other),
            });
        }
        Some(Err(())) | None => return Err(OutboundError::Io("response already taken".into())),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().map_err(|()| OutboundError::Io("response body unavailable".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| OutboundError::Io("response stream unavailable".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > max_body {
                        return Err(OutboundError::TooLarge(max_body));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(err)) => {
                    return Err(OutboundError::Io(err.to_debug_string()));
                }
            }
        }
    }
    Ok(HttpResponse { status, headers, body, elapsed: started.elapsed() })
}

fn split_url(url: &str) -> Result<(Scheme, &str, &str), OutboundError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| OutboundError::InvalidUrl("no scheme".into()))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(OutboundError::InvalidUrl(format!("unsupported scheme {other}"))),
    };
    let (authority, path) = match rest.find('/') {
        Some(index) => rest.split_at(index),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(OutboundError::InvalidUrl("no host".into()));
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
