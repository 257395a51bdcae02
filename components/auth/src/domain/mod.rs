//! The rules of identity, free of `spin_sdk`: validated values in, storage through the
//! [`ports::Store`] trait, results out. Unit-tested natively with an in-memory store.

pub mod accounts;
pub mod client_addr;
pub mod fields;
pub mod ids;
pub mod mfa;
pub mod password;
pub mod ports;
pub mod recovery;
pub mod time;

#[cfg(test)]
mod memory;

use sealed_email::EmailKeyring;
use tokens::{AccessTokenConfig, SigningKeys};

use crate::error::Error;
use ports::StoreError;

/// Keys and token settings, parsed from the component's variables for one request.
pub struct Crypto {
    /// `encryption_key`: seals emails (AAD = user id) and derives the blind index.
    pub email: EmailKeyring,
    /// `token_signing_keys`: signs access tokens with the first key, verifies with all.
    pub signing: SigningKeys,
    /// `iss` = `tokens::ACCESS_TOKEN_ISSUER`, `aud` = `tokens::ACCESS_TOKEN_AUDIENCE`, 15 min.
    pub access: AccessTokenConfig,
}

/// Tunables, from variables with defaults (see `config.rs` and spin.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive failures on one account (each within the window of the previous) after
    /// which logins for it are refused until the window has passed since the last one.
    pub account_max_failures: u32,
    /// Failures from one client address per window after which its logins are refused.
    pub address_max_failures: u32,
    pub throttle_window_secs: u64,
    /// Calls per minute allowed to each calling service.
    pub service_calls_per_minute: u64,
    pub refresh_ttl_secs: u64,
    /// How long after a rotation the rotated token still yields a new pair (concurrent
    /// refreshes from one client) instead of counting as reuse. At most 10 s.
    pub refresh_grace_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            account_max_failures: 10,
            address_max_failures: 100,
            throttle_window_secs: 15 * 60,
            service_calls_per_minute: 6000,
            refresh_ttl_secs: 30 * 24 * 3600,
            refresh_grace_secs: 10,
        }
    }
}

/// Longest grace window accepted.
pub const MAX_REFRESH_GRACE_SECS: u64 = 10;

/// What every request knows about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    pub now: u64,
    pub now_ms: u64,
    /// The client's IP address (`spin-client-addr` without the port), or `unknown`.
    pub client_addr: String,
    /// The client's `User-Agent` as a session records it ([`ports::SessionOrigin`]).
    pub user_agent: Option<String>,
}

impl Ctx {
    /// Where a session begun by this request began.
    pub fn session_origin(&self) -> ports::SessionOrigin {
        ports::SessionOrigin {
            client_address: self.client_addr.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
        }
    }

    /// A `User-Agent` as sessions record it: control characters dropped (it is shown to the user
    /// and may reach logs), at most 255 characters; `None` when nothing is left.
    pub fn user_agent_from(header: Option<&str>) -> Option<String> {
        let cleaned: String = header?.chars().filter(|c| !c.is_control()).take(255).collect();
        let cleaned = cleaned.trim();
        (!cleaned.is_empty()).then(|| cleaned.to_owned())
    }

    /// Where this client's failed logins are counted (its /64 for IPv6).
    pub fn throttle_address(&self) -> String {
        client_addr::throttle_scope(&self.client_addr)
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => {
                telemetry::error("database unavailable", &[("cause", cause.as_str().into())]);
                Error::DatabaseUnavailable
            }
            StoreError::Duplicate(constraint) => {
                telemetry::error("unexpected duplicate key", &[("constraint", constraint.as_str().into())]);
                Error::Internal
            }
            StoreError::Failed(cause) => {
                telemetry::error("database error", &[("cause", cause.as_str().into())]);
                Error::Internal
            }
        }
    }
}
