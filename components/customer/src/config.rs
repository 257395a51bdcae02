//! Names of the component variables customer reads (declared in spin.toml's [component.customer.variables]).

use spin_sdk::variables;

use crate::problem::Problem;

/// MySQL URL of customer's own database.
pub const DB_URL: &str = "db_url";

/// Reads a required variable; a missing or empty one is a configuration error that names the
/// variable (never its value).
pub fn required(name: &'static str) -> Result<String, Problem> {
    match variables::get(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        Ok(_) => Err(Problem::misconfigured(name, "is empty")),
        Err(err) => {
            eprintln!("config: variable {name} unavailable: {err}");
            Err(Problem::misconfigured(name, "is not set"))
        }
    }
}

/// Where auth answers: `http://auth.spin.internal` (chaining) or auth's own URL in a split deployment.
pub const AUTH_SERVICE_URL: &str = "auth_service_url";
