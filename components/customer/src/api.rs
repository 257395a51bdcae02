//! HTTP handlers: wire in, domain call, wire out.

use std::time::Duration;

use spin_sdk::http::{Params, Request, Response};
use spin_sdk::mysql::Connection;

use crate::config;
use crate::outbound::{self, Timeouts};
use crate::problem::Problem;

/// How long health waits for auth before calling it unavailable.
const AUTH_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /api/v3/customers/health`: a real round trip to customer's database (`SELECT 1`, no
/// table needed), plus auth's reachability through `auth_service_url` (service chaining by
/// default) with its latency. Auth being down degrades, but does not fail, customer's health.
pub fn health(_request: Request, _params: Params) -> Response {
    if let Err(problem) = check_database() {
        return problem.into_response();
    }
    let auth = match auth_health() {
        Ok(latency) => serde_json::json!({"status": "ok", "latency_ms": latency}),
        Err(reason) => serde_json::json!({"status": "unavailable", "reason": reason}),
    };
    json(200, &serde_json::json!({"status": "ok", "database": "ok", "auth": auth}))
}

fn check_database() -> Result<(), Problem> {
    let url = config::required(config::DB_URL)?;
    let connection = Connection::open(&url).map_err(|err| {
        eprintln!("health: failed to open the database connection: {err}");
        Problem::database_unavailable()
    })?;
    connection.query("SELECT 1", &[]).map_err(|err| {
        eprintln!("health: SELECT 1 failed: {err}");
        Problem::database_unavailable()
    })?;
    Ok(())
}

/// Calls auth's health route; returns the latency in milliseconds.
fn auth_health() -> Result<f64, String> {
    let base = config::required(config::AUTH_SERVICE_URL).map_err(|_| "auth_service_url is not set".to_string())?;
    let url = format!("{}/api/v3/auth/health", base.trim_end_matches('/'));
    let response = outbound::send("GET", &url, &[], None, Timeouts::all(AUTH_HEALTH_TIMEOUT), 16 * 1024)
        .map_err(|err| err.to_string())?;
    let latency = response.elapsed.as_secs_f64() * 1000.0;
    eprintln!("auth call: GET /api/v3/auth/health status={} latency_ms={latency:.2}", response.status);
    match response.status {
        200 => Ok((latency * 100.0).round() / 100.0),
        status => Err(format!("auth answered {status}")),
    }
}

pub fn not_found(request: Request, _params: Params) -> Response {
    Problem::not_found(request.path()).into_response()
}

fn json(status: u16, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}
