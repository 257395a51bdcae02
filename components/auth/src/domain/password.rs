//! Password rules and hashing: NFKC, 8..=128 characters, not among the 10,000 most common,
//! argon2id (m = 19456 KiB, t = 2, p = 1) in PHC strings, re-hash when parameters change, and a
//! dummy verification so an unknown email costs what a wrong password costs.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::error::Error;

/// Fewest characters (Unicode scalar values, after NFKC).
pub const MIN_CHARS: usize = 8;
/// Most characters (after NFKC). Never truncated: longer is refused.
pub const MAX_CHARS: usize = 128;
/// argon2id memory in KiB (OWASP).
pub const M_COST: u32 = 19_456;
/// argon2id passes.
pub const T_COST: u32 = 2;
/// argon2id lanes.
pub const P_COST: u32 = 1;
const SALT_LEN: usize = 16;

/// A PHC string of the current parameters for a password nobody knows (its salt and hash are
/// random bytes). Verifying against it costs exactly what a real verification costs.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRmb3JkdW1teQ$\
                          3kZ0b6Qj8m1bq3m3Cw2rZk3i1rXJ7Bq1o5m3mS9oWc4";

/// The list (`common-passwords.txt`: see its header for where it comes from), front-coded and
/// zlib-compressed (by Zopfli): 20.8 KB in the component instead of 83 KB. A unit test checks it unpacks to
/// the text file; after editing the list, run `python3 scripts/pack_common_passwords.py`.
const COMMON_PASSWORDS_PACKED: &[u8] = include_bytes!("common-passwords.txt.fc.zlib");
#[cfg(test)]
const COMMON_PASSWORDS_FILE: &str = include_str!("common-passwords.txt");

/// A password as typed, NFKC-normalized. Wiped from memory on drop; `Debug` is redacted.
pub struct Password(Zeroizing<String>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Why a new password is refused (each maps to a field error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordRule {
    TooShort,
    TooLong,
    TooCommon,
}

impl PasswordRule {
    pub fn code(self) -> &'static str {
        match self {
            PasswordRule::TooShort => "too_short",
            PasswordRule::TooLong => "too_long",
            PasswordRule::TooCommon => "too_common",
        }
    }

    pub fn message(self) -> String {
        match self {
            PasswordRule::TooShort => format!("must be at least {MIN_CHARS} characters"),
            PasswordRule::TooLong => format!("must be at most {MAX_CHARS} characters"),
            PasswordRule::TooCommon => "is one of the most common passwords; choose another".into(),
        }
    }
}

impl Password {
    /// Any password presented for verification (login, re-authentication): NFKC only, no rules,
    /// so passwords set under older rules keep working.
    pub fn presented(raw: &str) -> Password {
        Password(Zeroizing::new(raw.nfkc().collect()))
    }

    /// A password being set: NFKC, then the length and common-password rules. No composition
    /// rules (NIST SP 800-63B).
    pub fn new_secret(raw: &str) -> Result<Password, PasswordRule> {
        let password = Password::presented(raw);
        let chars = password.0.chars().count();
        if chars < MIN_CHARS {
            return Err(PasswordRule::TooShort);
        }
        if chars > MAX_CHARS {
            return Err(PasswordRule::TooLong);
        }
        if is_common(&password.0) {
            return Err(PasswordRule::TooCommon);
        }
        Ok(password)
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The sorted entries of the list (everything after the header's terminating empty line).
/// The file's text, inflated once per instance (only requests that set a password need it).
fn common_passwords_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        // Data fixed at build time, checked by a unit test: it always unpacks to UTF-8 text.
        let packed = miniz_oxide::inflate::decompress_to_vec_zlib(COMMON_PASSWORDS_PACKED)
            .expect("the shipped zlib data inflates");
        String::from_utf8(unfront(&packed)).expect("the common-password list is UTF-8")
    })
}

/// Undoes the front coding of `scripts/pack_common_passwords.py`: each line is a byte below 32
/// saying how many leading bytes it shares with the line before, then the rest of it (bytes of
/// 32 and above), up to the next such byte.
fn unfront(packed: &[u8]) -> Vec<u8> {
    let mut text = Vec::with_capacity(packed.len() * 4);
    let mut previous = 0..0;
    let mut rest = packed;
    while let Some((&shared, tail)) = rest.split_first() {
        let own = tail.iter().position(|&b| b < 32).unwrap_or(tail.len());
        let start = text.len();
        let shared = usize::from(shared).min(previous.len());
        text.extend_from_within(previous.start..previous.start + shared);
        text.extend_from_slice(&tail[..own]);
        previous = start..text.len();
        text.push(b'\n');
        rest = &tail[own..];
    }
    text
}

fn common_passwords() -> &'static [&'static str] {
    static LIST: OnceLock<Vec<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| {
        let body = common_passwords_text()
            .split_once("\n\n")
            .map_or("", |(_, body)| body);
        body.lines().filter(|line| !line.is_empty()).collect()
    })
}

/// Whether the NFKC-normalized password, lowercased, is on the list (binary search; the file is
/// sorted bytewise, which a unit test checks).
fn is_common(normalized: &str) -> bool {
    let folded: Zeroizing<String> = Zeroizing::new(normalized.to_lowercase().nfkc().collect());
    common_passwords()
        .binary_search(&folded.as_str())
        .is_ok()
}

fn hasher() -> Result<Argon2<'static>, Error> {
    let params = Params::new(M_COST, T_COST, P_COST, None)
        .map_err(|err| Error::internal("argon2 parameters", &err))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes with argon2id and a fresh 128-bit salt; returns the PHC string.
pub fn hash(password: &Password) -> Result<String, Error> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|err| Error::internal("random source", &err))?;
    let phc = hasher()?
        .hash_password_with_salt(password.bytes(), &salt)
        .map_err(|err| Error::internal("argon2 hash", &err))?;
    Ok(phc.to_string())
}

/// Outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Matches, and the hash uses the current parameters.
    Ok,
    /// Matches, but the hash should be replaced by [`hash`] of the same password.
    OkNeedsRehash,
    /// Does not match (or the stored hash is unreadable: logged, treated as a mismatch).
    Mismatch,
}

/// Verifies `password` against a stored PHC string; `None` (no account, or an account without
/// a password) verifies against the dummy hash, at the same cost, and never matches.
pub fn verify(password: &Password, stored: Option<&str>) -> Result<Verified, Error> {
    let argon2 = hasher()?;
    let Some(stored) = stored else {
        let _ = argon2.verify_password(password.bytes(), DUMMY_HASH);
        return Ok(Verified::Mismatch);
    };
    match argon2.verify_password(password.bytes(), stored) {
        Ok(()) if is_current(stored) => Ok(Verified::Ok),
        Ok(()) => Ok(Verified::OkNeedsRehash),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(Verified::Mismatch),
        Err(err) => {
            // A stored hash we cannot read: never a match, and worth a look.
            telemetry::error("stored password hash could not be used", &[("cause", err.to_string().into())]);
            Ok(Verified::Mismatch)
        }
    }
}

/// Whether a PHC string uses argon2id v19 with exactly the current cost parameters.
pub fn is_current(stored: &str) -> bool {
    let expected = format!("$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}$");
    stored.starts_with(&expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_has_10000_sorted_unique_entries() {
        let list = common_passwords();
        assert_eq!(list.len(), 10_000);
        assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted bytewise and unique");
        assert!(COMMON_PASSWORDS_FILE.starts_with("# The 10,000 most common passwords"));
        assert_eq!(common_passwords_text(), COMMON_PASSWORDS_FILE, "the shipped data inflates to the file");
        assert!(list.contains(&"#1bitch"), "an entry that starts with # is an entry");
    }

    #[test]
    fn length_counts_characters_after_nfkc() {
        assert_eq!(Password::new_secret("short").unwrap_err(), PasswordRule::TooShort);
        assert!(Password::new_secret("correct horse").is_ok());
        // Eight characters of three bytes each.
        assert!(Password::new_secret("éééééééé").is_ok());
        assert_eq!(Password::new_secret("ééééééé").unwrap_err(), PasswordRule::TooShort);
        // NFKC folds the ligature "ﬃ" (1 char) into "ffi" (3 chars).
        assert!(Password::new_secret("ﬃﬃﬃ").is_ok());
        assert!(Password::new_secret(&"x1".repeat(64)).is_ok());
        assert_eq!(Password::new_secret(&("x1".repeat(64) + "y")).unwrap_err(), PasswordRule::TooLong);
        // Emoji are one character each.
        assert!(Password::new_secret("🦀🦀🦀🦀🦀🦀🦀🦀").is_ok());
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case_or_width() {
        for common in ["password", "Password1", "PASSWORD1", "12345678", "iloveyou", "ｐａｓｓｗｏｒｄ"] {
            assert_eq!(Password::new_secret(common).unwrap_err(), PasswordRule::TooCommon, "{common}");
        }
        assert!(Password::new_secret("tangerine-lattice-42").is_ok());
    }

    #[test]
    fn nfkc_makes_equivalent_inputs_one_password() {
        // Full-width digits and letters fold to ASCII: a password typed either way verifies.
        let stored = hash(&Password::presented("ｓｅｃｒｅｔ１２３")).expect("hash");
        assert_eq!(verify(&Password::presented("secret123"), Some(&stored)).expect("verify"), Verified::Ok);
    }

    #[test]
    fn hash_verify_round_trip_and_parameters() {
        let password = Password::new_secret("tangerine-lattice-42").expect("valid");
        let stored = hash(&password).expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(is_current(&stored));
        assert_eq!(verify(&password, Some(&stored)).expect("verify"), Verified::Ok);
        assert_eq!(
            verify(&Password::presented("tangerine-lattice-43"), Some(&stored)).expect("verify"),
            Verified::Mismatch
        );
        let other = hash(&password).expect("hash");
        assert_ne!(stored, other, "fresh salt every time");
    }

    #[test]
    fn old_parameters_verify_and_ask_for_a_rehash() {
        let password = Password::presented("tangerine-lattice-42");
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(4096, 1, 1, None).expect("params"))
            .hash_password_with_salt(password.bytes(), b"0123456789abcdef")
            .expect("hash")
            .to_string();
        assert_eq!(verify(&password, Some(&weak)).expect("verify"), Verified::OkNeedsRehash);
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::new(M_COST, T_COST, P_COST, None).expect("params"))
            .hash_password_with_salt(password.bytes(), b"0123456789abcdef")
            .expect("hash")
            .to_string();
        assert_eq!(verify(&password, Some(&argon2i)).expect("verify"), Verified::OkNeedsRehash);
    }

    #[test]
    fn missing_or_garbage_hashes_never_match() {
        let password = Password::presented("anything-at-all");
        assert_eq!(verify(&password, None).expect("verify"), Verified::Mismatch);
        assert_eq!(verify(&password, Some("not a phc string")).expect("verify"), Verified::Mismatch);
        assert_eq!(verify(&password, Some("")).expect("verify"), Verified::Mismatch);
    }

    #[test]
    fn the_dummy_hash_costs_a_whole_verification() {
        // The unknown-email path verifies against it. It must parse, carry the current
        // parameters and the same salt and output lengths as a real hash, and fail only at the
        // final comparison: `PasswordInvalid` comes after the whole argon2 run, while any other
        // error returns early and would make that path faster. (Checked by logic, not timed.)
        assert!(argon2::password_hash::phc::PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(is_current(DUMMY_HASH));
        let stored = hash(&Password::presented("y")).expect("hash");
        assert_eq!(DUMMY_HASH.len(), stored.len(), "same salt and output lengths: {stored}");
        let argon2 = hasher().expect("hasher");
        assert!(matches!(
            argon2.verify_password(b"x", DUMMY_HASH),
            Err(argon2::password_hash::Error::PasswordInvalid)
        ));
        assert_eq!(verify(&Password::presented("x"), None).expect("verify"), Verified::Mismatch);
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", Password::presented("hunter22")), "Password(<redacted>)");
    }
}
