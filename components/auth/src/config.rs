//! The component variables auth reads (declared in spin.toml's `[component.auth.variables]`).
//!
//! A missing or malformed key is a 500 problem naming the variable (never its value), logged
//! the same way; there is no built-in fallback key. Tunables have defaults: unset or empty
//! means the default, a value that is not a number within range is a configuration error.

use sealed_email::EmailKeyring;
use tokens::{AccessTokenConfig, SigningKeys, TrustedServiceKeys};

use crate::domain::client_addr::TrustedProxies;
use crate::domain::{Crypto, MAX_REFRESH_GRACE_SECS, Settings};
use crate::error::Error;

/// MySQL URL of auth's own database.
pub const DB_URL: &str = "db_url";
/// `<kid>:<base64 32 bytes>[,...]`: email encryption and blind-index root keys.
pub const ENCRYPTION_KEY: &str = "encryption_key";
/// `<kid>:<base64 Ed25519 seed>[,...]`: access-token signing keys (first signs).
pub const TOKEN_SIGNING_KEYS: &str = "token_signing_keys";
/// `<service>:<kid>:<base64 Ed25519 public key>[,...]`: services that may read users; may be
/// empty (then no service is trusted).
pub const TRUSTED_SERVICE_KEYS: &str = "trusted_service_keys";
/// Services (names as in `trusted_service_keys`, comma-separated) that may ask for password-reset
/// tokens; empty (the default) lets none.
pub const PASSWORD_RESET_SERVICES: &str = "password_reset_services";
/// Services (names as in `trusted_service_keys`, comma-separated) that may ask for
/// email-verification tokens; empty (the default) lets none.
pub const EMAIL_VERIFICATION_SERVICES: &str = "email_verification_services";
/// The name authenticator apps show beside this service's codes (the `otpauth://` issuer);
/// "auth" when empty.
pub const MFA_ISSUER: &str = "mfa_issuer";
/// Reverse proxies (`<ip>` or `<ip>/<prefix>`, comma-separated) believed about
/// `X-Forwarded-For`; empty trusts nobody.
pub const TRUSTED_PROXIES: &str = "trusted_proxies";
/// Consecutive failed logins on one account before it is throttled (default 10).
pub const LOGIN_MAX_FAILURES_PER_ACCOUNT: &str = "login_max_failures_per_account";
/// Failed logins from one client address per window before it is throttled (default 100).
pub const LOGIN_MAX_FAILURES_PER_ADDRESS: &str = "login_max_failures_per_address";
/// The throttling window in seconds (default 900).
pub const LOGIN_THROTTLE_WINDOW_SECS: &str = "login_throttle_window_secs";
/// Calls per minute each calling service may make to the service endpoints (default 6000).
pub const SERVICE_CALLS_PER_MINUTE: &str = "service_calls_per_minute";
/// Lifetime of each refresh token in seconds (default 30 days).
pub const REFRESH_TOKEN_TTL_SECS: &str = "refresh_token_ttl_secs";
/// Grace window for concurrent refreshes, 0..=10 seconds (default 10).
pub const REFRESH_GRACE_SECS: &str = "refresh_grace_secs";

/// Where variables come from: Spin's variables interface in the component, a map in tests.
/// `Ok(None)` means not set (or not declared).
pub trait Source {
    fn get(&self, name: &'static str) -> Result<Option<String>, Error>;
}

/// Spin's `fermyon:spin/variables`.
pub struct Spin;

impl Source for Spin {
    fn get(&self, name: &'static str) -> Result<Option<String>, Error> {
        match spin_sdk::variables::get(name) {
            Ok(value) if value.trim().is_empty() => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
            Err(err) => {
                telemetry::error("variable could not be read", &[("variable", name.into()), ("cause", err.to_string().into())]);
                Err(Error::misconfigured(name, "could not be read"))
            }
        }
    }
}

pub fn required(source: &impl Source, name: &'static str) -> Result<String, Error> {
    source.get(name)?.ok_or_else(|| Error::misconfigured(name, "is not set"))
}

/// The keys every token- or email-handling request needs.
pub fn crypto(source: &impl Source) -> Result<Crypto, Error> {
    let email = EmailKeyring::parse(&required(source, ENCRYPTION_KEY)?)
        .map_err(|err| Error::misconfigured(ENCRYPTION_KEY, format!("is not valid: {err}")))?;
    let signing = SigningKeys::parse(&required(source, TOKEN_SIGNING_KEYS)?)
        .map_err(|err| Error::misconfigured(TOKEN_SIGNING_KEYS, format!("is not valid: {err}")))?;
    Ok(Crypto {
        email,
        signing,
        access: AccessTokenConfig::new(tokens::ACCESS_TOKEN_ISSUER, tokens::ACCESS_TOKEN_AUDIENCE),
    })
}

/// Only the signing keys (the JWKS route).
pub fn signing_keys(source: &impl Source) -> Result<SigningKeys, Error> {
    SigningKeys::parse(&required(source, TOKEN_SIGNING_KEYS)?)
        .map_err(|err| Error::misconfigured(TOKEN_SIGNING_KEYS, format!("is not valid: {err}")))
}

/// The trusted service keys; `None` when the variable is empty.
pub fn trusted_services(source: &impl Source) -> Result<Option<TrustedServiceKeys>, Error> {
    match source.get(TRUSTED_SERVICE_KEYS)? {
        None => Ok(None),
        Some(value) => TrustedServiceKeys::parse(&value)
            .map(Some)
            .map_err(|err| Error::misconfigured(TRUSTED_SERVICE_KEYS, format!("is not valid: {err}"))),
    }
}

/// The services that may ask for password-reset tokens; none when the variable is empty.
pub fn password_reset_services(source: &impl Source) -> Result<Vec<String>, Error> {
    service_names(source, PASSWORD_RESET_SERVICES)
}

/// The services that may ask for email-verification tokens; none when the variable is empty.
pub fn email_verification_services(source: &impl Source) -> Result<Vec<String>, Error> {
    service_names(source, EMAIL_VERIFICATION_SERVICES)
}

/// The issuer authenticator apps show: printable, at most 64 characters, no `:` (it separates
/// the issuer from the account in the URI's label).
pub fn mfa_issuer(source: &impl Source) -> Result<String, Error> {
    let Some(value) = source.get(MFA_ISSUER)? else {
        return Ok("auth".into());
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok("auth".into());
    }
    if value.chars().count() > 64 || value.chars().any(|c| c.is_control() || c == ':') {
        return Err(Error::misconfigured(MFA_ISSUER, "is not valid: at most 64 printable characters, without `:`"));
    }
    Ok(value.to_owned())
}

/// A comma-separated list of service names; none when the variable is empty.
fn service_names(source: &impl Source, variable: &'static str) -> Result<Vec<String>, Error> {
    let Some(value) = source.get(variable)? else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = value.split(',').map(|name| name.trim().to_owned()).collect();
    let plain = |name: &String| !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !names.iter().all(plain) {
        return Err(Error::misconfigured(variable, "is not valid: list service names (letters, digits, - _ .), comma-separated"));
    }
    Ok(names)
}

/// The proxies whose `X-Forwarded-For` is believed; none when the variable is empty.
pub fn trusted_proxies(source: &impl Source) -> Result<TrustedProxies, Error> {
    match source.get(TRUSTED_PROXIES)? {
        None => Ok(TrustedProxies::default()),
        Some(value) => TrustedProxies::parse(&value)
            .ok_or_else(|| Error::misconfigured(TRUSTED_PROXIES, "is not valid: list IP addresses or networks (`10.0.0.0/8`), comma-separated")),
    }
}

fn number(source: &impl Source, name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, Error> {
    let Some(raw) = source.get(name)? else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(value) if range.contains(&value) => Ok(value),
        _ => Err(Error::misconfigured(
            name,
            format!("must be a whole number from {} to {}", range.start(), range.end()),
        )),
    }
}

pub fn settings(source: &impl Source) -> Result<Settings, Error> {
    let defaults = Settings::default();
    let to_u32 = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
    Ok(Settings {
        account_max_failures: to_u32(number(source, LOGIN_MAX_FAILURES_PER_ACCOUNT, defaults.account_max_failures.into(), 1..=100)?),
        address_max_failures: to_u32(number(source, LOGIN_MAX_FAILURES_PER_ADDRESS, defaults.address_max_failures.into(), 1..=1_000_000)?),
        throttle_window_secs: number(source, LOGIN_THROTTLE_WINDOW_SECS, defaults.throttle_window_secs, 1..=86_400)?,
        service_calls_per_minute: number(source, SERVICE_CALLS_PER_MINUTE, defaults.service_calls_per_minute, 1..=10_000_000)?,
        refresh_ttl_secs: number(source, REFRESH_TOKEN_TTL_SECS, defaults.refresh_ttl_secs, 60..=365 * 86_400)?,
        refresh_grace_secs: number(source, REFRESH_GRACE_SECS, defaults.refresh_grace_secs, 0..=MAX_REFRESH_GRACE_SECS)?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Map(BTreeMap<&'static str, &'static str>);

    impl Source for Map {
        fn get(&self, name: &'static str) -> Result<Option<String>, Error> {
            Ok(self.0.get(name).filter(|v| !v.trim().is_empty()).map(|v| (*v).to_owned()))
        }
    }

    fn map(entries: &[(&'static str, &'static str)]) -> Map {
        Map(entries.iter().copied().collect())
    }

    const GOOD_KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn missing_or_bad_keys_name_the_variable_never_the_value() {
        let err = crypto(&map(&[(TOKEN_SIGNING_KEYS, GOOD_KEY)])).err().expect("missing");
        assert_eq!(err, Error::Misconfigured { variable: ENCRYPTION_KEY, what: "is not set".into() });
        let err = crypto(&map(&[(ENCRYPTION_KEY, "k1:c2VjcmV0LXZhbHVl"), (TOKEN_SIGNING_KEYS, GOOD_KEY)])).err().expect("short");
        let body = err.render().body;
        assert!(body.contains("encryption_key"), "{body}");
        assert!(!body.contains("c2VjcmV0LXZhbHVl"), "{body}");
        let err = crypto(&map(&[(ENCRYPTION_KEY, GOOD_KEY), (TOKEN_SIGNING_KEYS, "nonsense")])).err().expect("bad");
        assert!(matches!(err, Error::Misconfigured { variable: TOKEN_SIGNING_KEYS, .. }));
        assert!(crypto(&map(&[(ENCRYPTION_KEY, GOOD_KEY), (TOKEN_SIGNING_KEYS, GOOD_KEY)])).is_ok());
    }

    #[test]
    fn an_empty_trust_list_trusts_nobody_and_a_bad_one_is_an_error() {
        assert!(trusted_services(&map(&[])).expect("empty").is_none());
        assert!(matches!(
            trusted_services(&map(&[(TRUSTED_SERVICE_KEYS, "customer:c1")])),
            Err(Error::Misconfigured { variable: TRUSTED_SERVICE_KEYS, .. })
        ));
    }

    #[test]
    fn reset_services_default_to_none_and_a_bad_list_names_the_variable() {
        assert_eq!(password_reset_services(&map(&[])).unwrap(), Vec::<String>::new());
        assert_eq!(password_reset_services(&map(&[(PASSWORD_RESET_SERVICES, " mailer, ops")])).unwrap(), ["mailer", "ops"]);
        for bad in ["mailer,,ops", "mail er", "mailer:k1"] {
            let err = password_reset_services(&map(&[(PASSWORD_RESET_SERVICES, bad)])).unwrap_err();
            assert!(matches!(err, Error::Misconfigured { variable: PASSWORD_RESET_SERVICES, .. }), "{bad}: {err:?}");
        }
    }

    #[test]
    fn trusted_proxies_default_to_none_and_a_bad_list_names_the_variable() {
        assert_eq!(trusted_proxies(&map(&[])).expect("unset"), TrustedProxies::default());
        assert!(trusted_proxies(&map(&[(TRUSTED_PROXIES, "10.0.0.0/8, ::1")])).is_ok());
        let err = trusted_proxies(&map(&[(TRUSTED_PROXIES, "10.0.0.0/8,ingress")])).expect_err("bad");
        assert!(matches!(err, Error::Misconfigured { variable: TRUSTED_PROXIES, .. }));
    }

    #[test]
    fn tunables_default_and_validate() {
        assert_eq!(settings(&map(&[])).expect("defaults"), Settings::default());
        let s = settings(&map(&[(LOGIN_MAX_FAILURES_PER_ACCOUNT, "3"), (REFRESH_GRACE_SECS, "0")])).expect("set");
        assert_eq!((s.account_max_failures, s.refresh_grace_secs), (3, 0));
        assert!(matches!(settings(&map(&[(REFRESH_GRACE_SECS, "11")])), Err(Error::Misconfigured { variable: REFRESH_GRACE_SECS, .. })));
        assert!(matches!(settings(&map(&[(SERVICE_CALLS_PER_MINUTE, "lots")])), Err(Error::Misconfigured { .. })));
    }
}
