//! Access tokens, service tokens and refresh tokens.
//!
//! Builds for `wasm32-wasip2` (inside Spin components) and natively (the admin tool). JWTs are
//! signed by [`jwt-simple`](https://docs.rs/jwt-simple) with its pure-Rust back ends
//! (`default-features = false, features = ["pure-rust"]`: no BoringSSL, no JWE); their claims
//! are read as jwt-simple's `JWTClaims` and checked as its `verify_token` checks them, but the
//! Ed25519 signature is checked with [`ed25519-dalek`](https://docs.rs/ed25519-dalek)
//! (`verify_strict`): in wasm32 it is about four times faster (see `jwt.rs`). Randomness
//! comes from `getrandom` (`wasi:random` on `wasm32-wasip2`). No threads, no async, no clock of
//! its own: every call that needs the time takes `now` (Unix seconds) from the caller, and
//! [`now_unix`] reads the system clock for production code.
//!
//! # Key formats (exactly what the admin tool writes and `spin.toml` passes on)
//!
//! * **Signing keys** (`token_signing_keys` in auth, `service_token_key` in customer):
//!   `<kid>:<base64 std of a 32-byte Ed25519 seed>`, comma-separated. The first key signs; all
//!   of them verify and are published in the JWKS. Parsed by [`SigningKeys::parse`].
//! * **Trusted service keys** (`trusted_service_keys` in auth):
//!   `<service>:<kid>:<base64 std of a 32-byte Ed25519 public key>`, comma-separated. A key
//!   only vouches for its own service. Parsed by [`TrustedServiceKeys::parse`].
//! * **JWKS**: `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"<base64url>","kid":"<kid>",
//!   "alg":"EdDSA","use":"sig"}]}` (RFC 7517, RFC 8037), written by [`SigningKeys::jwks_json`]
//!   and read by [`Verifier::from_jwks`].
//!
//! `kid` and `service`: 1 to 32 characters of `A-Z a-z 0-9 _ -`, unique in their list. Base64
//! padding is optional; whitespace around entries is ignored; all-zero keys are refused. Errors
//! ([`KeyConfigError`]) name the entry by position and, once validated, its kid: never key bytes.
//!
//! # Access tokens (RFC 9068 profile, RFC 8725 practices)
//!
//! Header `{"alg":"EdDSA","kid":<kid>,"typ":"at+jwt"}`; claims `iss`, `aud`, `sub` (user id),
//! `iat`, `nbf` (= `iat`), `exp` (`iat` + 15 minutes by default), `jti` (128 random bits).
//!
//! Verification ([`Verifier::verify_access_token`]), in this order:
//! at most [`MAX_TOKEN_LEN`] bytes; three base64url parts with a JSON header;
//! `alg` exactly `EdDSA` (so `none`, `HS*`, `RS*`, `ES*` and even the `Ed25519` alias are refused
//! before any key is touched); `typ` = `at+jwt`; a `kid` that the verifier knows
//! ([`VerifyError::UnknownKid`] is distinct so a caller holding a cached JWKS can refetch it —
//! rate-limit that refetch, since anyone can send an unknown kid); the Ed25519 signature by that
//! key; `iss` and `aud` equal to the configured values; `exp`, `iat`, `jti` and `sub` present;
//! time checks with a leeway of [`LEEWAY_SECS`] = 30 s each way (`now <= exp + 30`,
//! `nbf <= now + 30`, `iat <= now + 30`), enough for clock skew between instances yet a small
//! fraction of a 15-minute token; a `sub` that does not start with `service:`.
//!
//! # Service tokens
//!
//! One component proves itself to auth with a token it signs with its own key (no shared
//! secret, ASVS 13.2.1). Header `typ` = `service+jwt`; claims `iss` = `sub` =
//! `service:<name>`, `aud` = `auth`, `iat`, `nbf`, `exp` (at most 60 s after `iat`), `jti`.
//! [`TrustedServiceKeys::verify_service_token`] checks the same things as for access tokens, plus
//! that the key's configured service is the one named in `sub` and `iss`, and that the lifetime
//! `exp - iat` is at most [`MAX_SERVICE_TOKEN_TTL_SECS`]. A token is not single-use: it can be
//! replayed within its minute (use TLS, keep it out of logs).
//!
//! An access token is never accepted as a service token nor the reverse: `typ` differs, the
//! `sub` shapes differ (`service:` prefix required vs refused) and the keys live in different
//! variables.
//!
//! # Refresh tokens
//!
//! [`RefreshToken::generate`]: 256 random bits as unpadded base64url (43 characters); store only
//! [`RefreshToken::hash`] (SHA-256, hex). A plain hash is enough: with 256 bits of entropy there
//! is nothing to brute-force, and it lets the database look the token up by an index.
//!
//! ```
//! use tokens::{AccessTokenConfig, SigningKeys, Verifier, VerifyError};
//!
//! let keys = SigningKeys::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
//! let cfg = AccessTokenConfig::new("https://auth.example", "api");
//! let now = 1_700_000_000;
//! let issued = keys.issue_access_token(&cfg, "user-1", now).unwrap();
//! assert_eq!(issued.expires_in, 900);
//!
//! let verifier = Verifier::from_jwks(&keys.jwks_json()).unwrap();
//! let claims = verifier.verify_access_token(&issued.token, &cfg, now + 60).unwrap();
//! assert_eq!(claims.subject, "user-1");
//! assert_eq!(
//!     verifier.verify_access_token(&issued.token, &cfg, now + 3600).unwrap_err(),
//!     VerifyError::Expired
//! );
//! ```

mod jwt;
mod keys;
mod refresh;

#[cfg(test)]
mod tests;

pub use jwt::{AccessClaims, AccessTokenConfig, AccessTokenToCheck, IssuedToken, ServiceClaims, claimed_subject};
pub use keys::{SigningKeys, TrustedServiceKeys, Verifier};
pub use refresh::{REFRESH_TOKEN_LEN, RefreshToken, RefreshTokenError, constant_time_eq, sha256_hex};

/// `typ` header of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// `typ` header of service tokens.
pub const SERVICE_TOKEN_TYPE: &str = "service+jwt";
/// The only algorithm signed or accepted.
pub const ALGORITHM: &str = "EdDSA";
/// `aud` of every service token.
pub const SERVICE_TOKEN_AUDIENCE: &str = "auth";
/// `iss` of the access tokens auth issues; both services check it.
pub const ACCESS_TOKEN_ISSUER: &str = "auth";
/// `aud` of the access tokens auth issues: the API of both services.
pub const ACCESS_TOKEN_AUDIENCE: &str = "auth-billing";
/// Prefix of a service token's `sub` and `iss`; refused in an access token's `sub`.
pub const SERVICE_SUBJECT_PREFIX: &str = "service:";
/// Default access-token lifetime: 15 minutes.
pub const DEFAULT_ACCESS_TOKEN_TTL_SECS: u64 = 15 * 60;
/// Service-token lifetime, also the most a verifier accepts (`exp - iat`).
pub const MAX_SERVICE_TOKEN_TTL_SECS: u64 = 60;
/// Clock-skew leeway applied to `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;
/// Longest token looked at; anything longer is refused unparsed.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest `sub` accepted or issued.
pub const MAX_SUBJECT_LEN: usize = 255;
/// Longest JWKS document [`Verifier::from_jwks`] reads.
pub const MAX_JWKS_LEN: usize = 64 * 1024;
/// Most keys in one key list or JWKS.
pub const MAX_KEYS: usize = 32;

/// Seconds since the Unix epoch from the system clock (`wasi:clocks/wall-clock` in a component);
/// 0 if the clock is before 1970.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `s` is a valid kid or service name: 1 to 32 characters of `A-Z a-z 0-9 _ -`.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A bad key configuration. Never carries key material: entries are named by their 1-based
/// position, plus their kid once the kid itself has been validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyConfigError {
    #[error("no key configured")]
    Empty,
    #[error("key entry {index} is empty")]
    EmptyEntry { index: usize },
    #[error("key entry {index} does not have the expected <{expected}> form")]
    WrongShape {
        index: usize,
        expected: &'static str,
    },
    #[error("key entry {index} has an invalid key id (1 to 32 characters of A-Z a-z 0-9 _ -)")]
    InvalidKid { index: usize },
    #[error(
        "key entry {index} has an invalid service name (1 to 32 characters of A-Z a-z 0-9 _ -)"
    )]
    InvalidServiceName { index: usize },
    #[error("key entry {index} (kid {kid}) is not valid base64")]
    InvalidBase64 { index: usize, kid: String },
    #[error("key entry {index} (kid {kid}) must decode to 32 bytes, got {len}")]
    WrongLength {
        index: usize,
        kid: String,
        len: usize,
    },
    #[error("key entry {index} (kid {kid}) is all zero bytes; generate a random key")]
    AllZeroKey { index: usize, kid: String },
    #[error("key entry {index} (kid {kid}) is not a usable Ed25519 public key")]
    InvalidPublicKey { index: usize, kid: String },
    #[error("key id {kid} appears more than once")]
    DuplicateKid { kid: String },
    #[error("more than {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("JWKS is invalid: {0}")]
    InvalidJwks(&'static str),
}

/// Why a token could not be issued (bad caller input; signing itself does not fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("subject is empty, longer than {MAX_SUBJECT_LEN} bytes, or reserved for services")]
    InvalidSubject,
    #[error("service name must be 1 to 32 characters of A-Z a-z 0-9 _ -")]
    InvalidServiceName,
    #[error("issuer and audience must be non-empty")]
    InvalidConfig,
    #[error("token lifetime must be between 1 second and {0} seconds")]
    InvalidLifetime(u64),
    #[error("the time given is beyond the year 2106")]
    InvalidTime,
    #[error("signing failed")]
    Signing,
}

/// Why a token was refused. Safe to log; never carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is too long")]
    TooLong,
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("token has the wrong type")]
    WrongType,
    #[error("token has no key id")]
    MissingKid,
    /// No configured key has this kid: a verifier working from a cached JWKS should refetch it
    /// (rate-limited) and try once more.
    #[error("token is signed by an unknown key")]
    UnknownKid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token has the wrong issuer")]
    WrongIssuer,
    #[error("token has the wrong audience")]
    WrongAudience,
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("token subject is not acceptable here")]
    InvalidSubject,
    #[error("token lifetime is longer than allowed")]
    LifetimeTooLong,
}
