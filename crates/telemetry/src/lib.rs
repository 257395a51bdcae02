//! Request ids, W3C trace context and one-line JSON logs for the auth and customer components,
//! and their HTTP entry point (`spin::serve`: body limits, repeated [`fields`], security headers,
//! [`cors`]).
//! Plain Rust (no `spin_sdk`, except the entry point behind the `spin` feature, `spin::serve`):
//! builds for `wasm32-wasip2` and natively.
//!
//! **The request's context.** Spin runs every request in a fresh component instance, on one
//! thread, so the request's ids live in a thread-local that the handler sets first
//! ([`start`]); errors, clients and stores below it log through [`info`], [`warn`], [`error`]
//! and [`call`] without the ids being passed around. Natively (unit tests) each thread has its
//! own context, and a thread without one logs without a `request_id`.
//!
//! **Request ids.** A valid incoming `x-request-id` (1..=128 characters of `A-Z a-z 0-9 . _ : -`)
//! is kept; otherwise the trace id of a valid W3C `traceparent`; otherwise a new random 128-bit
//! id (32 lowercase hex digits). The trace id is the incoming `traceparent`'s, else the request
//! id when it has the shape of one, else a new one. [`propagation_headers`] gives what a call to
//! another of our services carries: the request id and a `traceparent` with the same trace id and
//! a fresh span id.
//!
//! **Log lines.** One JSON object per line on stderr, written with a single `write_all`, so lines
//! of concurrent instances never interleave. Keys in order: `timestamp` (RFC 3339, UTC,
//! microseconds), `level` (`INFO`, `WARN`, `ERROR`), `component`, `message`, `request_id`, then
//! the event's own fields. Every string value is scrubbed of words that look like an email
//! address, a JWT or an API key, and cut at [`MAX_VALUE_CHARS`]; callers still never pass a
//! secret, token, password or email.

pub mod cors;
pub mod fields;
#[cfg(feature = "spin")]
pub mod spin;

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Longest incoming `x-request-id` kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Longest string value in a log line (characters); longer ones are cut and end with `…`.
pub const MAX_VALUE_CHARS: usize = 512;
/// Longest line (bytes) written as is: WASI writes stderr in chunks of at most 4096 bytes, and a
/// line in one chunk cannot interleave with another instance's. Longer lines have their string
/// values cut to [`SHORT_VALUE_CHARS`].
pub const MAX_LINE_BYTES: usize = 4000;
const SHORT_VALUE_CHARS: usize = 64;

/// Whether an incoming `x-request-id` is kept: 1..=128 characters of `A-Z a-z 0-9 . _ : -`.
pub fn valid_request_id(value: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn lower_hex(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn all_zeros(value: &str) -> bool {
    value.bytes().all(|b| b == b'0')
}

/// A valid W3C trace id: 32 lowercase hex digits, not all zeros.
pub fn is_trace_id(value: &str) -> bool {
    lower_hex(value, 32) && !all_zeros(value)
}

/// The parts of a W3C `traceparent` header we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: String,
    pub flags: u8,
}

/// Parses `traceparent` (W3C Trace Context level 1): `vv-<32 hex>-<16 hex>-ff`, lowercase;
/// version `ff` and all-zero ids are invalid; a version 00 header has exactly these four parts,
/// a later version may carry more after a `-`.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let value = value.trim();
    if !value.is_ascii() || value.len() < 55 {
        return None;
    }
    let bytes = value.as_bytes();
    let version = &value[0..2];
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && value.len() != 55) {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' || (value.len() > 55 && bytes[55] != b'-') {
        return None;
    }
    let (trace_id, parent_id, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    if !is_trace_id(trace_id) || !lower_hex(parent_id, 16) || all_zeros(parent_id) || !lower_hex(flags, 2) {
        return None;
    }
    Some(TraceParent {
        trace_id: trace_id.to_string(),
        parent_id: parent_id.to_string(),
        flags: u8::from_str_radix(flags, 16).ok()?,
    })
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        // Ids are for correlation, not security: the clock will do if randomness is missing.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos().to_le_bytes();
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = nanos[i % nanos.len()] ^ (i as u8).wrapping_mul(151);
        }
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A new random 128-bit id, 32 lowercase hex digits (never all zeros): request and trace ids.
pub fn new_trace_id() -> String {
    loop {
        let id = hex(&random_bytes::<16>());
        if !all_zeros(&id) {
            return id;
        }
    }
}

/// A new random 64-bit span id, 16 lowercase hex digits (never all zeros).
pub fn new_span_id() -> String {
    loop {
        let id = hex(&random_bytes::<8>());
        if !all_zeros(&id) {
            return id;
        }
    }
}

/// The ids of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub request_id: String,
    pub trace_id: String,
    /// The incoming `traceparent`'s flags (0 when this request starts the trace).
    pub flags: u8,
}

impl Ids {
    /// From the request's `x-request-id` and `traceparent` headers (see the module docs).
    pub fn from_headers(x_request_id: Option<&str>, traceparent: Option<&str>) -> Ids {
        let parent = traceparent.and_then(parse_traceparent);
        let request_id = match x_request_id.filter(|value| valid_request_id(value)) {
            Some(id) => id.to_string(),
            None => parent.as_ref().map_or_else(new_trace_id, |p| p.trace_id.clone()),
        };
        let (trace_id, flags) = match parent {
            Some(p) => (p.trace_id, p.flags),
            None if is_trace_id(&request_id) => (request_id.clone(), 0),
            None => (new_trace_id(), 0),
        };
        Ids { request_id, trace_id, flags }
    }

    /// A `traceparent` for a call made on behalf of this request: same trace, a new span.
    pub fn child_traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, new_span_id(), self.flags)
    }
}

struct Current {
    ids: Ids,
    route: Option<String>,
    started: Instant,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
    static COMPONENT: RefCell<&'static str> = const { RefCell::new("-") };
}

/// Begins a request: takes or makes its ids and makes them this thread's context. Returns the
/// request id (echo it in the response's `x-request-id`).
pub fn start(component: &'static str, x_request_id: Option<&str>, traceparent: Option<&str>) -> String {
    let ids = Ids::from_headers(x_request_id, traceparent);
    let request_id = ids.request_id.clone();
    COMPONENT.with(|c| *c.borrow_mut() = component);
    CURRENT.with(|current| {
        *current.borrow_mut() = Some(Current { ids, route: None, started: Instant::now() });
    });
    request_id
}

/// Records the route template that serves the request (e.g. `/api/v3/users/{id}`).
pub fn set_route(route: &str) {
    CURRENT.with(|current| {
        if let Some(current) = current.borrow_mut().as_mut() {
            current.route = Some(route.to_string());
        }
    });
}

/// The route recorded by [`set_route`], if any.
pub fn route() -> Option<String> {
    CURRENT.with(|current| current.borrow().as_ref().and_then(|c| c.route.clone()))
}

/// The current request's id, if a request has started on this thread.
pub fn request_id() -> Option<String> {
    CURRENT.with(|current| current.borrow().as_ref().map(|c| c.ids.request_id.clone()))
}

/// The current request's ids.
pub fn ids() -> Option<Ids> {
    CURRENT.with(|current| current.borrow().as_ref().map(|c| c.ids.clone()))
}

/// Headers for a call to another of our services: `x-request-id` and a `traceparent` with the
/// same trace id and a fresh span id. Empty outside a request.
pub fn propagation_headers() -> Vec<(String, String)> {
    match ids() {
        Some(ids) => vec![
            (REQUEST_ID_HEADER.to_string(), ids.request_id.clone()),
            (TRACEPARENT_HEADER.to_string(), ids.child_traceparent()),
        ],
        None => Vec::new(),
    }
}

/// Ends a request: logs its one `request` line (route, method, status, duration).
pub fn finish(method: &str, status: u16) {
    let (route, trace_id, elapsed) = CURRENT.with(|current| match current.borrow().as_ref() {
        Some(c) => (c.route.clone(), Some(c.ids.trace_id.clone()), c.started.elapsed()),
        None => (None, None, Duration::ZERO),
    });
    let level = if status >= 500 { Level::Error } else { Level::Info };
    log(
        level,
        "request",
        &[
            ("route", route.map_or(Value::Null, Value::from)),
            ("method", Value::from(method)),
            ("status", Value::from(status)),
            ("duration_ms", Value::from(millis(elapsed))),
            ("trace_id", trace_id.map_or(Value::Null, Value::from)),
        ],
    );
}

/// One call to another service or to Stripe, for [`call`].
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// `auth`, `stripe`.
    pub target: &'a str,
    pub method: &'a str,
    /// The URL or path called; only the path is logged (never the query, which may hold an email).
    pub url: &'a str,
    /// 1 for the first try.
    pub attempt: u32,
    pub duration: Duration,
    /// The status, or why no answer came.
    pub outcome: Result<u16, &'a str>,
}

/// Logs one `call` line: target, method, path, status (or error), duration, attempt, plus
/// `extra` fields.
pub fn call(call: &Call<'_>, extra: &[(&str, Value)]) {
    let (status, error) = match call.outcome {
        Ok(status) => (Value::from(status), None),
        Err(reason) => (Value::Null, Some(reason)),
    };
    let mut fields = vec![
        ("target", Value::from(call.target)),
        ("method", Value::from(call.method)),
        ("path", Value::from(path_of(call.url))),
        ("status", status),
        ("duration_ms", Value::from(millis(call.duration))),
        ("attempt", Value::from(call.attempt)),
    ];
    if let Some(reason) = error {
        fields.push(("error", Value::from(reason)));
    }
    fields.extend(extra.iter().cloned());
    log(call_level(call.outcome), "call", &fields);
}

/// `WARN` when the dependency gave no answer, failed (5xx) or throttled us (429): each is worth
/// an operator's eye. Other 4xx answer our own request's content: `INFO`.
fn call_level(outcome: Result<u16, &str>) -> Level {
    match outcome {
        Ok(status) if status < 500 && status != 429 => Level::Info,
        _ => Level::Warn,
    }
}

/// The path of a URL or of a path with a query: no scheme, authority, query or fragment.
pub fn path_of(url: &str) -> &str {
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

pub fn info(message: &str, fields: &[(&str, Value)]) {
    log(Level::Info, message, fields);
}

pub fn warn(message: &str, fields: &[(&str, Value)]) {
    log(Level::Warn, message, fields);
}

pub fn error(message: &str, fields: &[(&str, Value)]) {
    log(Level::Error, message, fields);
}

/// Writes one line to stderr (see the module docs).
pub fn log(level: Level, message: &str, fields: &[(&str, Value)]) {
    let component = COMPONENT.with(|c| *c.borrow());
    let request_id = request_id();
    let now = timestamp(SystemTime::now());
    let mut line = render(&now, level, component, message, request_id.as_deref(), fields);
    if line.len() > MAX_LINE_BYTES {
        let short: Vec<(&str, Value)> = fields.iter().map(|(k, v)| (*k, shorten(v))).collect();
        let message = bound(message, SHORT_VALUE_CHARS);
        line = render(&now, level, component, &message, request_id.as_deref(), &short);
    }
    line.push('\n');
    // One write per line; a failing stderr has nowhere to be reported.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// One log line without its newline.
pub fn render(
    timestamp: &str,
    level: Level,
    component: &str,
    message: &str,
    request_id: Option<&str>,
    fields: &[(&str, Value)],
) -> String {
    let mut line = String::with_capacity(256);
    line.push('{');
    let mut push = |key: &str, value: &Value| {
        if line.len() > 1 {
            line.push(',');
        }
        line.push_str(&Value::from(key).to_string());
        line.push(':');
        line.push_str(&clean(value).to_string());
    };
    push("timestamp", &Value::from(timestamp));
    push("level", &Value::from(level.as_str()));
    push("component", &Value::from(component));
    push("message", &Value::from(message));
    if let Some(id) = request_id {
        push("request_id", &Value::from(id));
    }
    const RESERVED: [&str; 5] = ["timestamp", "level", "component", "message", "request_id"];
    for (key, value) in fields {
        if !RESERVED.contains(key) {
            push(key, value);
        }
    }
    line.push('}');
    line
}

/// Scrubs and bounds every string in a value.
fn clean(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(bound(&scrub(text), MAX_VALUE_CHARS)),
        Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), clean(v))).collect()),
        other => other.clone(),
    }
}

fn shorten(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(bound(text, SHORT_VALUE_CHARS)),
        Value::Array(items) => Value::Array(items.iter().take(8).map(shorten).collect()),
        Value::Object(map) => Value::Object(map.iter().take(8).map(|(k, v)| (bound(k, SHORT_VALUE_CHARS), shorten(v))).collect()),
        other => other.clone(),
    }
}

fn bound(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Replaces each space-separated word that looks like an email address or a user:password@host
/// URL (contains `@`), a JWT (`eyJ…` with two dots) or a Stripe secret or webhook secret (`sk_…`,
/// `rk_…`, `whsec_…`) with `[redacted]`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    fn sensitive(word: &str) -> bool {
        let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        word.contains('@')
            || (bare.starts_with("eyJ") && bare.matches('.').count() >= 2)
            || ["sk_", "rk_", "whsec_"].iter().any(|prefix| bare.starts_with(prefix))
            || ["sk_live_", "sk_test_", "rk_live_", "rk_test_"].iter().any(|key| bare.contains(key))
    }
    if !text.split(' ').any(sensitive) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.split(' ').map(|word| if sensitive(word) { "[redacted]" } else { word }).collect::<Vec<_>>().join(" "))
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-25T10:40:58.082242Z` (crate `rfc3339`);
/// times before 1970 are written as the epoch.
pub fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    rfc3339::format_micros(i64::try_from(since.as_secs()).unwrap_or(i64::MAX), since.subsec_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_validated() {
        assert!(valid_request_id("a"));
        assert!(valid_request_id("req-1.2_3:4"));
        assert!(valid_request_id(&"x".repeat(128)));
        assert!(!valid_request_id(&"x".repeat(129)));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id("é"));
        assert!(!valid_request_id("a/b"));
        assert!(!valid_request_id("line\nbreak"));
        assert!(!valid_request_id("{\"json\":1}"));
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_follow_w3c() {
        let parsed = parse_traceparent(TP).expect("valid");
        assert_eq!(parsed.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id, "00f067aa0ba902b7");
        assert_eq!(parsed.flags, 1);
        assert!(parse_traceparent(&TP.to_uppercase()).is_none(), "uppercase");
        assert!(parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none());
        assert!(parse_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none());
        assert!(parse_traceparent(&format!("{TP}-extra")).is_none(), "version 00 has four parts");
        assert!(parse_traceparent(&format!("01{}-extra", &TP[2..])).is_some(), "later versions may have more");
        assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7").is_none());
        assert!(parse_traceparent("junk").is_none());
        assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01").is_none());
    }

    #[test]
    fn ids_come_from_the_header_then_the_traceparent_then_randomness() {
        let ids = Ids::from_headers(Some("client-42"), Some(TP));
        assert_eq!(ids.request_id, "client-42");
        assert_eq!(ids.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.flags, 1);

        let ids = Ids::from_headers(Some("bad id"), Some(TP));
        assert_eq!(ids.request_id, "4bf92f3577b34da6a3ce929d0e0e4736");

        let ids = Ids::from_headers(None, None);
        assert!(is_trace_id(&ids.request_id), "{}", ids.request_id);
        assert_eq!(ids.trace_id, ids.request_id);
        assert_eq!(ids.flags, 0);
        assert_ne!(Ids::from_headers(None, None).request_id, ids.request_id);

        // A hex id from the client is its trace id too; any other id gets a trace of its own.
        let hexid = "0af7651916cd43dd8448eb211c80319c";
        assert_eq!(Ids::from_headers(Some(hexid), None).trace_id, hexid);
        let other = Ids::from_headers(Some("client-42"), None);
        assert!(is_trace_id(&other.trace_id));
    }

    #[test]
    fn calls_carry_the_request_id_and_a_child_traceparent() {
        assert!(propagation_headers().is_empty(), "no request on this thread yet");
        let id = start("test", Some("req-7"), Some(TP));
        assert_eq!(id, "req-7");
        let first = propagation_headers();
        let second = propagation_headers();
        assert_eq!(first[0], ("x-request-id".to_string(), "req-7".to_string()));
        let parent = parse_traceparent(&first[1].1).expect("valid traceparent");
        assert_eq!(parent.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.flags, 1);
        assert_ne!(parent.parent_id, "00f067aa0ba902b7", "a new span");
        assert_ne!(first[1], second[1], "a new span per call");
        set_route("/x/{id}");
        assert_eq!(route().as_deref(), Some("/x/{id}"));
    }

    #[test]
    fn lines_are_json_objects_in_a_fixed_order() {
        let line = render(
            "2026-01-01T00:00:00.000000Z",
            Level::Info,
            "auth",
            "request",
            Some("r1"),
            &[("route", Value::from("/a")), ("status", Value::from(200)), ("request_id", Value::from("spoof"))],
        );
        assert_eq!(
            line,
            r#"{"timestamp":"2026-01-01T00:00:00.000000Z","level":"INFO","component":"auth","message":"request","request_id":"r1","route":"/a","status":200}"#
        );
        let odd = render("t", Level::Warn, "c", "line\nbreak \"quoted\"", None, &[]);
        assert!(!odd.contains('\n'));
        let parsed: Value = serde_json::from_str(&odd).expect("json");
        assert_eq!(parsed["message"], "line\nbreak \"quoted\"");
    }

    #[test]
    fn secrets_are_scrubbed_and_values_bounded() {
        assert_eq!(scrub("user ada@example.org failed"), "user [redacted] failed");
        assert_eq!(scrub("mysql://app:pw@db:3306/x refused"), "[redacted] refused");
        assert_eq!(scrub("token eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln bad"), "token [redacted] bad");
        assert_eq!(scrub("key sk_test_123 and (whsec_abc)"), "key [redacted] and [redacted]");
        assert!(matches!(scrub("nothing to hide on disk_full or network_error"), Cow::Borrowed(_)));
        let line = render("t", Level::Info, "c", "m", None, &[("detail", Value::from("x".repeat(2000))), ("nested", serde_json::json!({"e": "a@b.c"}))]);
        let parsed: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(parsed["detail"].as_str().unwrap().chars().count(), MAX_VALUE_CHARS + 1);
        assert_eq!(parsed["nested"]["e"], "[redacted]");
    }

    #[test]
    fn calls_warn_on_no_answer_5xx_and_429_only() {
        for (outcome, level) in [
            (Ok(200), Level::Info),
            (Ok(404), Level::Info),
            (Ok(422), Level::Info),
            (Ok(429), Level::Warn),
            (Ok(500), Level::Warn),
            (Ok(503), Level::Warn),
            (Err("timed out"), Level::Warn),
        ] {
            assert_eq!(call_level(outcome), level, "{outcome:?}");
        }
    }

    #[test]
    fn paths_lose_scheme_host_and_query() {
        assert_eq!(path_of("http://127.0.0.1:8420/v1/customers?email=a%40b.c&limit=1"), "/v1/customers");
        assert_eq!(path_of("https://api.stripe.com"), "/");
        assert_eq!(path_of("/api/v3/users/1#frag"), "/api/v3/users/1");
        assert_eq!(path_of("http://auth.spin.internal/api/v3/users/batch"), "/api/v3/users/batch");
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let at = UNIX_EPOCH + Duration::from_micros(951_782_400_000_000 + 123_456);
        assert_eq!(timestamp(at), "2000-02-29T00:00:00.123456Z");
        assert_eq!(millis(Duration::from_micros(1234)), 1.234);
    }
}
