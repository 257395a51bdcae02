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

/// Every route this component serves (the OpenAPI test reads this list).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn handle(request: Request) -> Response {
    // The request id (taken from x-request-id or traceparent, or new) is echoed on every answer,
    // carried in every problem body, in every log line and on every call to auth.
    let header = |name: &str| request.header(name).and_then(|value| value.as_str()).map(str::to_owned);
    let (incoming_id, traceparent) = (header(telemetry::REQUEST_ID_HEADER), header(telemetry::TRACEPARENT_HEADER));
    let request_id = telemetry::start("customer", incoming_id.as_deref(), traceparent.as_deref());
    let method = request.method().to_string().to_ascii_uppercase();

    let mut router = Routes(Router::new());
    router.get("/api/v3/customers/health", api::health);
    router.post("/api/v3/customers", api::create_customer);
    router.get("/api/v3/customers", api::list_customers);
    router.get("/api/v3/customers/me", api::get_me);
    router.patch("/api/v3/customers/me", api::patch_me);
    router.delete("/api/v3/customers/me", api::delete_me);
    router.post("/api/v3/customers/me/subscriptions", api::create_subscription);
    router.get("/api/v3/customers/me/subscriptions", api::list_subscriptions);
    router.delete("/api/v3/customers/me/subscriptions/:id", api::cancel_subscription);
    router.get("/api/v3/customers/me/invoices", api::invoices);
    router.get("/api/v3/customers/:id", api::get_by_id);
    router.post("/api/v3/billing/stripe/webhook", api::stripe_webhook);
    router.post("/api/v3/auth/login", api::login_proxy);
    router.any("/api/v3/customers/*", api::not_found);
    router.any("/api/v3/billing/*", api::not_found);
    let mut response = router.0.handle(request);
    if telemetry::route().is_none() && matches!(*response.status(), 404 | 405) {
        // No handler ran: the router's own plain-text 404/405 becomes problem+json.
        response = api::unrouted(*response.status());
    }
    response.set_header(telemetry::REQUEST_ID_HEADER, request_id);
    telemetry::finish(&method, *response.status());
    response
}

type Handler = fn(Request, Params) -> Response;

/// Spin's router, recording the route template (`{id}` for `:id`) that serves each request.
struct Routes(Router);

impl Routes {
    fn add(&mut self, method: Option<Method>, path: &str, handler: Handler) {
        let template: String = path
            .split('/')
            .map(|segment| segment.strip_prefix(':').map_or(segment.to_string(), |name| format!("{{{name}}}")))
            .collect::<Vec<_>>()
            .join("/");
        let traced = move |request: Request, params: Params| {
            telemetry::set_route(&template);
            handler(request, params)
        };
        match method {
            Some(method) => self.0.add(path, method, traced),
            None => self.0.any(path, traced),
        }
    }

    fn get(&mut self, path: &str, handler: Handler) {
        self.add(Some(Method::Get), path, handler);
    }

    fn post(&mut self, path: &str, handler: Handler) {
        self.add(Some(Method::Post), path, handler);
    }

    fn patch(&mut self, path: &str, handler: Handler) {
        self.add(Some(Method::Patch), path, handler);
    }

    fn delete(&mut self, path: &str, handler: Handler) {
        self.add(Some(Method::Delete), path, handler);
    }

    fn any(&mut self, path: &str, handler: Handler) {
        self.add(None, path, handler);
    }
}
