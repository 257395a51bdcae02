//! HTTP handlers: wire in, domain call, wire out.

use spin_sdk::http::{Params, Request, Response};
use spin_sdk::mysql::Connection;

use crate::config;
use crate::problem::Problem;

/// `GET /api/v3/auth/health`: a real round trip to auth's database (`SELECT 1`, no table needed).
pub fn health(_request: Request, _params: Params) -> Response {
    match check_database() {
        Ok(()) => json(200, &serde_json::json!({"status": "ok", "database": "ok"})),
        Err(problem) => problem.into_response(),
    }
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
