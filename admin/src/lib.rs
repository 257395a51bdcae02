//! The project's operations tool as a library, so the integration tests can call it in-process:
//! [`migrate`] (sqlx migrations per service), [`keys`] (development secrets), [`config`]
//! (database URLs from flags, the environment or `.env`); the legacy upgrade (customer migration
//! 6): [`legacy`] (shared checks and the migration guard), [`backfill`], [`verify`],
//! [`reencrypt`]; housekeeping: [`purge`] (expired tokens, idle throttle rows, old webhook
//! events and, on request, old audit rows).

pub mod backfill;
pub mod config;
pub mod keys;
pub mod legacy;
pub mod migrate;
pub mod purge;
pub mod reencrypt;
pub mod verify;
