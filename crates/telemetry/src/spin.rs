//! The components' entry point on Spin's wasi:http handler (feature `spin`).
//!
//! spin-sdk's `#[http_component]` on a `fn(Request) -> Response` writes a plain-text line to
//! stderr when the response cannot be delivered (the caller went away: a client that
//! disconnected, a chained call that timed out), which breaks the one-JSON-object-per-line log.
//! [`serve`] does the same conversion and delivery, and logs that case as a JSON `WARN` line with
//! the request's id. It also reads the request body with a limit, which the SDK does not, answers
//! CORS preflights and adds the headers every answer carries (security headers, CORS).

use futures::TryStreamExt as _;
use spin_sdk::http::{IncomingRequest, OutgoingResponse, Request, Response, ResponseOutparam};

use crate::cors::{self, AllowedOrigins};

/// How a component's entry point treats request bodies.
pub struct Bodies {
    /// The largest body any of its routes takes (each route may take less, and says so itself).
    pub max: usize,
    /// The answer to a larger body, refused before it is read to its end: the component's 413.
    pub too_large: fn() -> Response,
    /// The answer when the body cannot be read to its end (the client went away mid-upload):
    /// the component's 400.
    pub unreadable: fn() -> Response,
}

/// Why a body was not read.
enum BodyError {
    /// Declared or found larger than the limit (bytes seen, at least).
    TooLarge(usize),
    Unreadable(String),
}

/// Reads the request, answers it with `handle`, and delivers the answer. The body is read
/// chunk by chunk and kept up to `bodies.max` only: spin-sdk's own reader keeps any body whole
/// in memory, so a large enough upload would exhaust the instance's memory (a trap, a 500)
/// before a route could refuse it. A body over the limit is answered with `bodies.too_large`;
/// one that cannot be read with `bodies.unreadable`, where the SDK would answer a plain-text 500
/// and write plain text to stderr. Both are logged.
pub async fn serve(component: &'static str, request: IncomingRequest, response_out: ResponseOutparam, handle: fn(Request) -> Response, bodies: Bodies) {
    let method = request.method().to_string();
    let path = request.path_with_query().unwrap_or_default();
    let mut builder = Request::builder();
    builder.method(request.method()).uri(request.uri());
    // Read now, while the request is ours (the ids are needed only if the body is refused). The
    // headers handle is dropped before the request is consumed, as wasi:http requires.
    let (x_request_id, traceparent, declared_length, origin, preflight, repeated) = {
        // One read of the fields from the host; the values the entry point needs are each one's
        // first line, taken before the lines are merged.
        let entries = request.headers().entries();
        let first = |name: &str| {
            entries.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, value)| String::from_utf8(value.clone()).ok())
        };
        let ids = (first(crate::REQUEST_ID_HEADER), first(crate::TRACEPARENT_HEADER));
        let declared = first("content-length").and_then(|value| value.trim().parse::<u64>().ok());
        let cors = (first("origin"), first("access-control-request-method"));
        let repeated = match crate::fields::merge_repeated(entries) {
            Ok(fields) => {
                builder.headers(fields);
                None
            }
            Err(field) => Some(field),
        };
        (ids.0, ids.1, declared, cors.0, cors.1, repeated)
    };
    // A browser's CORS preflight is answered here, for every route alike (the request it
    // announces is still routed, and refused with a 405 if the method is not served).
    if let (true, Some(origin), Some(_)) = (method.eq_ignore_ascii_case("OPTIONS"), origin.as_deref(), preflight.as_deref()) {
        let request_id = crate::start(component, x_request_id.as_deref(), traceparent.as_deref());
        let mut response = preflight_answer(origin);
        response.set_header(crate::REQUEST_ID_HEADER, request_id);
        crate::finish(&method, *response.status());
        deliver(response_out, with_security_headers(response)).await;
        return;
    }
    // The request goes to `handle`, or the entry point answers it itself (logged: message, one
    // field naming why, the answer).
    let refused = match (read_body(request, declared_length, bodies.max).await, repeated) {
        (Ok(body), None) => Ok(handle(builder.body(body).build())),
        // Refused after its body is read, so that the client gets the answer, not a reset.
        (Ok(_), Some(field)) => Err(("request header repeated", ("header", field.to_string()), repeated_field_answer(field))),
        (Err(BodyError::TooLarge(seen)), _) => {
            Err(("request body too large", ("cause", format!("at least {seen} bytes, over {}", bodies.max)), (bodies.too_large)()))
        }
        (Err(BodyError::Unreadable(cause)), _) => Err(("request body not read", ("cause", cause), (bodies.unreadable)())),
    };
    let response = match refused {
        Ok(response) => response,
        Err((message, (why, value), mut response)) => {
            let request_id = crate::start(component, x_request_id.as_deref(), traceparent.as_deref());
            crate::warn(message, &[("method", method.as_str().into()), ("path", crate::path_of(&path).into()), (why, value.into())]);
            response.set_header(crate::REQUEST_ID_HEADER, request_id);
            crate::finish(&method, *response.status());
            response
        }
    };
    let response = match origin.as_deref() {
        Some(origin) => with_cors(response, origin),
        None => response,
    };
    deliver(response_out, with_security_headers(response)).await;
}

/// The origins the component's `cors_allowed_origins` variable allows; none when it is unset or
/// not declared. A value that is not a list of origins is an error naming the variable.
fn allowed_origins() -> Result<AllowedOrigins, String> {
    match spin_sdk::variables::get(cors::VARIABLE) {
        Ok(raw) => AllowedOrigins::parse(&raw).map_err(|err| format!("The variable `{}` is not valid: {err}.", cors::VARIABLE)),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(AllowedOrigins::Listed(Vec::new())),
        Err(err) => {
            crate::error("variable could not be read", &[("variable", cors::VARIABLE.into()), ("cause", err.to_string().into())]);
            Err(format!("The variable `{}` could not be read.", cors::VARIABLE))
        }
    }
}

/// A preflight from `origin`: 204 with what a page from it may send, or 403 when the origin is
/// not allowed (500 naming the variable when its value is not valid).
fn preflight_answer(origin: &str) -> Response {
    match allowed_origins() {
        Ok(allowed) => match allowed.allow_origin(origin) {
            Some(allow_origin) => {
                let mut response = Response::new(204, ());
                response.set_header("access-control-allow-origin", allow_origin);
                response.set_header("access-control-allow-methods", cors::ALLOWED_METHODS);
                response.set_header("access-control-allow-headers", cors::ALLOWED_HEADERS);
                response.set_header("access-control-max-age", cors::MAX_AGE_SECS.to_string());
                response
            }
            None => problem(403, "origin_not_allowed", "Origin not allowed", "Pages from this origin may not call this API (cors_allowed_origins)."),
        },
        Err(detail) => problem(500, "configuration_error", "Service misconfigured", &detail),
    }
}

/// The answer to a request that came with an `Origin`, readable by a page from that origin if it
/// is allowed. A request from another origin is answered as any other: the browser withholds it.
fn with_cors(mut response: Response, origin: &str) -> Response {
    match allowed_origins() {
        Ok(allowed) => {
            if let Some(allow_origin) = allowed.allow_origin(origin) {
                response.set_header("access-control-allow-origin", allow_origin);
                response.set_header("access-control-expose-headers", cors::EXPOSED_HEADERS);
            }
        }
        // Logged (the preflight answers a 500 naming the variable); the answer itself stands.
        Err(detail) => crate::error("cors_allowed_origins is not valid", &[("detail", detail.into())]),
    }
    response
}

/// The 400 for a header that has one value sent more than once ([`crate::fields`]). For
/// `Authorization` it is the `invalid_request` of RFC 6750 §3.1 ("repeats the same parameter").
fn repeated_field_answer(field: &str) -> Response {
    let detail = format!("The header `{field}` was sent more than once; send it once.");
    let mut response = problem(400, "repeated_header", "Bad request", &detail);
    if field == "authorization" {
        response.set_header("www-authenticate", r#"Bearer error="invalid_request""#);
    }
    response
}

/// A problem+json answer in the shape both components use.
fn problem(status: u16, code: &str, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("https://problems.auth-billing.dev/{code}"),
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "request_id": crate::request_id(),
    });
    let mut response = Response::new(status, body.to_string());
    response.set_header("content-type", "application/problem+json");
    response
}

/// Headers every answer of both components carries (OWASP REST Security Cheat Sheet; ASVS 5.0
/// V3.4): the body is JSON for programs, never a page a browser should sniff, run, frame or
/// leak a referrer from; and, unless the component chose a policy (auth's JWKS is public), no
/// cache may keep it (tokens, profiles, billing data). Strict-Transport-Security belongs to
/// whoever terminates TLS in front of Spin (docs/operations.md).
fn with_security_headers(mut response: Response) -> Response {
    if response.header("cache-control").is_none() {
        response.set_header("cache-control", "no-store");
    }
    response.set_header("x-content-type-options", "nosniff");
    response.set_header("content-security-policy", "default-src 'none'; frame-ancestors 'none'");
    response.set_header("referrer-policy", "no-referrer");
    // Whether a page may read an answer depends on its origin: caches must key on it.
    response.set_header("vary", "origin");
    response
}

/// How much of a refused body is still read, and dropped chunk by chunk, so that a client still
/// sending it gets the 413 instead of a connection reset under its upload (the host closes a
/// connection whose request was not read to its end). Past it, the answer goes out at once.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// The body, if it is at most `max` bytes. A larger one is never kept beyond `max`: it is
/// drained up to [`DRAIN_LIMIT`] (or refused at once when its declared length is over that).
async fn read_body(request: IncomingRequest, declared_length: Option<u64>, max: usize) -> Result<Vec<u8>, BodyError> {
    if let Some(declared) = declared_length.filter(|declared| *declared > DRAIN_LIMIT as u64) {
        return Err(BodyError::TooLarge(usize::try_from(declared).unwrap_or(usize::MAX)));
    }
    let mut chunks = request.into_body_stream();
    let mut body = Vec::new();
    let mut seen = 0usize;
    loop {
        match chunks.try_next().await {
            Ok(Some(chunk)) => {
                seen = seen.saturating_add(chunk.len());
                if seen > max {
                    body = Vec::new();
                    if seen > DRAIN_LIMIT {
                        break;
                    }
                } else {
                    body.extend_from_slice(&chunk);
                }
            }
            Ok(None) => break,
            // Too large already: that is the answer, however the upload ended.
            Err(_) if seen > max => break,
            Err(err) => return Err(BodyError::Unreadable(err.to_debug_string())),
        }
    }
    if seen > max { Err(BodyError::TooLarge(seen)) } else { Ok(body) }
}

async fn deliver(response_out: ResponseOutparam, mut response: Response) {
    let body = std::mem::take(response.body_mut());
    match OutgoingResponse::try_from(response) {
        Ok(outgoing) => {
            if let Err(err) = response_out.set_with_body(outgoing, body).await {
                crate::warn("response not delivered: the caller went away", &[("cause", err.to_string().into())]);
            }
        }
        Err(err) => crate::error("response not built", &[("cause", err.to_string().into())]),
    }
}
