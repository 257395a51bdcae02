//! Names of the component variables auth reads (declared in spin.toml's [component.auth.variables]).

use spin_sdk::variables;

use crate::problem::Problem;

/// MySQL URL of auth's own database.
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
