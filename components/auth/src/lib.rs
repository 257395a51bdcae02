//! The auth component: identity (name, encrypted email, password) and tokens.
//!
//! Routing lives here and only here; handlers sit in `api`, configuration names in `config`,
//! and every error becomes RFC 9457 problem+json in `problem`.

mod api;
mod config;
mod problem;

use spin_sdk::http::{Request, Response, Router};
use spin_sdk::http_component;

#[http_component]
fn handle(request: Request) -> Response {
    let mut router = Router::new();
    router.get("/api/v3/auth/health", api::health);
    router.any("/api/v3/auth/*", api::not_found);
    router.any("/api/v3/users/*", api::not_found);
    router.handle(request)
}
