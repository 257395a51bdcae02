//! The project's operations tool as a library, so the integration tests can call it in-process:
//! [`migrate`] (sqlx migrations per service), [`keys`] (development secrets), [`config`]
//! (database URLs from flags, the environment or `.env`).

pub mod config;
pub mod keys;
pub mod migrate;
