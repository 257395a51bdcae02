//! The project's operations tool as a library, so the integration tests can call it in-process:
//! [`account`] (support's actions on one account), [`audit`] (the audit logs sealed and verified), [`migrate`] (sqlx migrations per service), [`keys`] (development secrets), [`config`]
//! (database URLs from flags, the environment or `.env`); the legacy upgrade (customer migration
//! 6): [`legacy`] (shared checks and the migration guard), [`backfill`], [`verify`],
//! [`reencrypt`]; least privilege: [`grants`] (the app user's, the audit log append-only); housekeeping: [`purge`] (expired tokens, idle throttle rows, old webhook
//! events and, on request, old audit rows).

pub mod account;
pub mod audit;
pub mod backfill;
pub mod config;
pub mod grants;
pub mod keys;
pub mod legacy;
pub mod migrate;
pub mod purge;
pub mod reencrypt;
pub mod verify;
