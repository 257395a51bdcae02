//! The customer component: billing (Stripe customer, areas, subscriptions, invoices, webhooks),
//! with identity (name, email) fetched from auth.
//!
//! One request's path: `lib.rs` (route) → `api.rs` (DTO → domain, auth, idempotency) →
//! `domain/` (rules, no spin_sdk) → `store/mysql.rs`, `stripe.rs`, `auth_client.rs` behind the
//! domain's ports. Every error becomes problem+json in `error.rs`.

pub mod api;
pub mod auth_client;
pub mod config;
pub mod domain;
pub mod error;
pub mod kv;
pub mod outbound;
pub mod problem;
pub mod store;
pub mod stripe;
pub mod transport;

use spin_sdk::http::{Method, Params, Request, Response, Router};

/// The component's export: reads the request, answers it with [`handle`], and logs an answer the
/// caller never took as a JSON line. It exists only in the wasm build: natively its
/// `wasi:http/...` symbol name breaks the cdylib's linker script, and native builds are for unit
/// tests.
#[cfg(target_arch = "wasm32")]
#[spin_sdk::http_component]
async fn serve(request: spin_sdk::http::IncomingRequest, response_out: spin_sdk::http::ResponseOutparam) {
    let bodies = telemetry::spin::Bodies { max: api::MAX_WEBHOOK_BODY, too_large: api::body_too_large, unreadable: api::unreadable_body };
    telemetry::spin::serve("customer", request, response_out, handle, bodies).await;
}

type Handler = fn(Request, Params) -> Response;

/// Every route this component serves: (method, Spin route pattern, handler). `HEAD` is served
/// wherever `GET` is (uptime monitors probe with it). The OpenAPI test reads this list.
const ROUTES: &[(&str, &str, Handler)] = &[
    ("GET", "/api/v3/customers/health", api::health),
    ("POST", "/api/v3/customers", api::create_customer),
    ("GET", "/api/v3/customers", api::list_customers),
    ("GET", "/api/v3/customers/me", api::get_me),
    ("PATCH", "/api/v3/customers/me", api::patch_me),
    ("DELETE", "/api/v3/customers/me", api::delete_me),
    ("POST", "/api/v3/customers/me/subscriptions", api::create_subscription),
    ("GET", "/api/v3/customers/me/subscriptions", api::list_subscriptions),
    ("GET", "/api/v3/customers/me/subscriptions/:id", api::get_subscription),
    ("PATCH", "/api/v3/customers/me/subscriptions/:id", api::update_subscription),
    ("DELETE", "/api/v3/customers/me/subscriptions/:id", api::cancel_subscription),
    ("GET", "/api/v3/customers/me/subscriptions/:id/upcoming-invoice", api::upcoming_invoice),
    ("GET", "/api/v3/customers/me/invoices", api::invoices),
    ("POST", "/api/v3/customers/me/invoices/:id/pay", api::pay_invoice),
    ("POST", "/api/v3/customers/me/setup-intents", api::create_setup_intent),
    ("POST", "/api/v3/customers/me/portal-sessions", api::create_portal_session),
    ("POST", "/api/v3/customers/me/checkout-sessions", api::create_checkout_session),
    ("GET", "/api/v3/customers/me/checkout-sessions/:id", api::get_checkout_session),
    ("GET", "/api/v3/customers/me/payment-method", api::get_payment_method),
    ("PUT", "/api/v3/customers/me/payment-method", api::set_payment_method),
    ("DELETE", "/api/v3/customers/me/payment-method", api::remove_payment_method),
    ("GET", "/api/v3/customers/me/billing-address", api::get_billing_address),
    ("PUT", "/api/v3/customers/me/billing-address", api::put_billing_address),
    ("GET", "/api/v3/customers/me/tax-ids", api::list_tax_ids),
    ("POST", "/api/v3/customers/me/tax-ids", api::add_tax_id),
    ("DELETE", "/api/v3/customers/me/tax-ids/:id", api::delete_tax_id),
    ("POST", "/api/v3/customers/me/erasure", api::erase_account),
    ("GET", "/api/v3/customers/:id", api::get_by_id),
    ("POST", "/api/v3/billing/stripe/webhook", api::stripe_webhook),
    ("POST", "/api/v3/auth/login", api::login_proxy),
];

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn handle(request: Request) -> Response {
    // The request id (taken from x-request-id or traceparent, or new) is echoed on every answer,
    // carried in every problem body, in every log line and on every call to auth.
    let header = |name: &str| request.header(name).and_then(|value| value.as_str()).map(str::to_owned);
    let (incoming_id, traceparent) = (header(telemetry::REQUEST_ID_HEADER), header(telemetry::TRACEPARENT_HEADER));
    let request_id = telemetry::start("customer", incoming_id.as_deref(), traceparent.as_deref());
    let method = request.method().to_string().to_ascii_uppercase();
    let path = request.path().to_string();

    let mut router = Router::new();
    for &(method, pattern, handler) in ROUTES {
        add_route(&mut router, method, pattern, handler);
        if method == "GET" {
            add_route(&mut router, "HEAD", pattern, handler);
        }
    }
    let mut response = router.handle(request);
    if telemetry::route().is_none() {
        // No handler ran: an unknown path (404), or a known one with another method (405 + Allow).
        response = api::unrouted(allowed_methods(&path));
    }
    response.set_header(telemetry::REQUEST_ID_HEADER, request_id);
    telemetry::finish(&method, *response.status());
    response
}

/// Adds a route to Spin's router, recording the route template (`{id}` for `:id`) that serves
/// each request (made only for the route that runs: the router is built for every request).
fn add_route(router: &mut Router, method: &str, pattern: &'static str, handler: Handler) {
    let traced = move |request: Request, params: Params| {
        telemetry::set_route(&template(pattern));
        handler(request, params)
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    router.add(pattern, method, traced);
}

/// The OpenAPI form of a Spin route pattern: `:id` becomes `{id}`.
fn template(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| segment.strip_prefix(':').map_or(segment.to_string(), |name| format!("{{{name}}}")))
        .collect::<Vec<_>>()
        .join("/")
}

/// The `Allow` value for a path no route took: the methods of the routes that match it best
/// (literal segments outrank `:params`, as in Spin's router), or `None` when none matches.
fn allowed_methods(path: &str) -> Option<String> {
    let matching: Vec<(usize, &str)> = ROUTES
        .iter()
        .filter_map(|(method, pattern, _)| literal_segments_matched(pattern, path).map(|literals| (literals, *method)))
        .collect();
    let best = matching.iter().map(|(literals, _)| *literals).max()?;
    let served: Vec<&str> = matching.iter().filter(|(literals, _)| *literals == best).map(|(_, method)| *method).collect();
    let allow: Vec<&str> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .filter(|method| served.contains(method) || (*method == "HEAD" && served.contains(&"GET")))
        .collect();
    Some(allow.join(", "))
}

/// How many literal segments of `pattern` match `path`, or `None` when it does not match
/// (a `:param` takes exactly one non-empty segment).
fn literal_segments_matched(pattern: &str, path: &str) -> Option<usize> {
    let (pattern, path): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    if pattern.len() != path.len() {
        return None;
    }
    let mut literals = 0;
    for (expected, actual) in pattern.iter().zip(&path) {
        if expected.starts_with(':') {
            if actual.is_empty() {
                return None;
            }
        } else if expected == actual {
            literals += 1;
        } else {
            return None;
        }
    }
    Some(literals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_the_methods_of_the_best_matching_routes() {
        assert_eq!(allowed_methods("/api/v3/customers/me").as_deref(), Some("GET, HEAD, PATCH, DELETE"));
        assert_eq!(allowed_methods("/api/v3/customers").as_deref(), Some("GET, HEAD, POST"));
        assert_eq!(allowed_methods("/api/v3/customers/0190-abc").as_deref(), Some("GET, HEAD"));
        assert_eq!(allowed_methods("/api/v3/customers/me/subscriptions/sub_1").as_deref(), Some("GET, HEAD, PATCH, DELETE"));
        assert_eq!(allowed_methods("/api/v3/customers/me/payment-method").as_deref(), Some("GET, HEAD, PUT, DELETE"));
        assert_eq!(allowed_methods("/api/v3/billing/stripe/webhook").as_deref(), Some("POST"));
        assert_eq!(allowed_methods("/api/v3/customers/").as_deref(), None);
        assert_eq!(allowed_methods("/api/v3/customers/me/nothing").as_deref(), None);
        assert_eq!(allowed_methods("/api/v3/billing/nothing").as_deref(), None);
        assert_eq!(allowed_methods("/").as_deref(), None);
    }

    #[test]
    fn templates_name_their_parameters_as_openapi_does() {
        assert_eq!(template("/api/v3/customers/me/subscriptions/:id"), "/api/v3/customers/me/subscriptions/{id}");
        assert_eq!(template("/api/v3/customers"), "/api/v3/customers");
    }
}
