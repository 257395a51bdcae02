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

use spin_sdk::http::{Request, Response, Router};

/// Every route this component serves (the OpenAPI test reads this list). The export exists only
/// in the wasm build: natively its `wasi:http/...` symbol name breaks the cdylib's linker script,
/// and native builds are for unit tests.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn handle(request: Request) -> Response {
    let mut router = Router::new();
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
    router.handle(request)
}
