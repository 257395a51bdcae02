//! Email addresses at rest: normalization, authenticated encryption with key rotation, and a
//! keyed blind index for lookups and uniqueness.
//!
//! Builds for `wasm32-wasip2` (inside Spin components) and natively (the admin tool). Randomness
//! comes from `getrandom`, which uses `wasi:random` on `wasm32-wasip2`; no threads, no async.
//!
//! # Key configuration
//!
//! One variable (e.g. `encryption_key`) holds one or more root keys, comma-separated:
//!
//! ```text
//! <kid>:<base64 (standard alphabet) of exactly 32 random bytes>[,<kid>:<base64>...]
//! ```
//!
//! * `kid`: 1 to 32 characters out of `A-Z a-z 0-9 _ -` (it is written into every sealed value,
//!   so it must not contain `.`), unique in the list.
//! * Whitespace around entries is ignored; padding on the base64 is optional; an all-zero key is
//!   refused (it is a placeholder, not a key).
//! * The **first** key is *active*: it seals. Every listed key opens.
//! * The **last** key is the *blind-index root* (see below).
//!
//! [`KeyConfigError`] names the position of a bad entry (and its kid once that has been
//! validated), never any key material.
//!
//! # Sub-keys
//!
//! A root key is never used directly. HKDF-SHA256 (no salt: the root is uniformly random)
//! derives, per root key:
//!
//! * the AES-256-GCM key, `info = "sealed-email/v1/aes-256-gcm"`;
//! * the HMAC-SHA256 blind-index key, `info = "sealed-email/v1/blind-index"` — this one only from
//!   the blind-index root.
//!
//! # Why the blind index comes from the *last* key
//!
//! The blind index (`email_hash`, a `UNIQUE` column) must stay the same across encryption-key
//! rotations, or every lookup and the uniqueness check break the moment a new key is added.
//! Rotation therefore *prepends* a key: `k2:<new>,k1:<old>`. The new key seals, the old one still
//! opens, and the blind index keeps coming from `k1`, the original key at the end of the list.
//! Values sealed with `k1` are re-sealed with `k2` on their next write ([`EmailKeyring::needs_reseal`]).
//!
//! Removing the last key (or reordering the list so another key ends up last) changes the
//! blind-index key. That is a **re-index**: every stored `email_hash` has to be recomputed with the
//! new keyring before the new configuration goes live (the admin tool does this: open each value
//! with the old keyring, [`normalize_email`], [`EmailKeyring::blind_index`] with the new one). Do it
//! when the original key itself is retired or suspected compromised.
//! [`EmailKeyring::blind_index_kid`] tells which kid the blind index currently derives from, so a
//! deployment can record it and refuse to start with a different one.
//!
//! # Sealed format
//!
//! ```text
//! v1.<kid>.<base64url without padding of: nonce (12 bytes) || ciphertext || tag (16 bytes)>
//! ```
//!
//! The nonce is 96 random bits per seal. The AAD is `"v1.<kid>." || context`, so the version and
//! key id are authenticated, and a caller-supplied context (recommended: the user id, see
//! [`EmailKeyring::seal_with_aad`]) binds a ciphertext to its row: copying it to another row makes
//! it fail to open. A value sealed with a context opens only with the same context.
//!
//! # Normalization
//!
//! [`normalize_email`] trims, applies Unicode NFKC and lowercases the **whole** address. RFC 5321
//! lets a server treat the local part case-sensitively, but the API promises case-insensitive
//! uniqueness and virtually no mail provider distinguishes case, so `Alice@X.org` and
//! `alice@x.org` are one account. The normalized form is what gets sealed and indexed (and
//! returned to the user). See that function for the syntax accepted.
//!
//! ```
//! use sealed_email::{normalize_email, EmailKeyring};
//!
//! let keyring = EmailKeyring::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
//! let email = normalize_email("  Alice@Example.ORG ").unwrap();
//! assert_eq!(email.as_str(), "alice@example.org");
//!
//! let sealed = keyring.seal_with_aad(&email, b"user-id-123");
//! assert!(sealed.starts_with("v1.k1."));
//! assert_eq!(keyring.open_with_aad(&sealed, b"user-id-123").unwrap(), "alice@example.org");
//! assert!(keyring.open_with_aad(&sealed, b"user-id-456").is_err());
//! assert_eq!(keyring.blind_index(&email).len(), 64);
//! ```

use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// Version tag of the sealed format.
pub const SEALED_VERSION: &str = "v1";
/// Length of a root key in bytes.
pub const ROOT_KEY_LEN: usize = 32;
/// Longest key id accepted.
pub const MAX_KID_LEN: usize = 32;
/// Longest sealed value [`EmailKeyring::open`] looks at; anything longer is rejected unread.
pub const MAX_SEALED_LEN: usize = 2048;
/// Longest raw input [`normalize_email`] looks at (before NFKC, which can expand text).
pub const MAX_RAW_EMAIL_LEN: usize = 1024;
/// Longest normalized address (RFC 5321 path limit minus the angle brackets), in bytes.
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest local part, in bytes.
pub const MAX_LOCAL_LEN: usize = 64;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const INFO_ENC: &[u8] = b"sealed-email/v1/aes-256-gcm";
const INFO_BLIND: &[u8] = b"sealed-email/v1/blind-index";

/// Standard base64 alphabet, padding optional (the admin tool writes padded values).
const STD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A bad key configuration. Never carries key material: entries are named by their 1-based
/// position, plus their kid once the kid itself has been validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyConfigError {
    /// The variable is empty or only whitespace.
    #[error("no key configured")]
    Empty,
    /// An entry is empty (e.g. two commas in a row or a trailing comma).
    #[error("key entry {index} is empty")]
    EmptyEntry { index: usize },
    /// An entry has no `:` between kid and key.
    #[error("key entry {index} is not of the form <kid>:<base64 key>")]
    MissingSeparator { index: usize },
    /// The kid is empty, too long or has characters outside `A-Z a-z 0-9 _ -`.
    #[error(
        "key entry {index} has an invalid key id (1 to {MAX_KID_LEN} characters of A-Z a-z 0-9 _ -)"
    )]
    InvalidKid { index: usize },
    /// The key is not valid standard base64.
    #[error("key entry {index} (kid {kid}) is not valid base64")]
    InvalidBase64 { index: usize, kid: String },
    /// The key does not decode to exactly 32 bytes.
    #[error("key entry {index} (kid {kid}) must decode to {ROOT_KEY_LEN} bytes, got {len}")]
    WrongLength {
        index: usize,
        kid: String,
        len: usize,
    },
    /// The key is all zero bytes: a placeholder, not a key.
    #[error("key entry {index} (kid {kid}) is all zero bytes; generate a random key")]
    AllZeroKey { index: usize, kid: String },
    /// Two entries share a kid.
    #[error("key id {kid} appears more than once")]
    DuplicateKid { kid: String },
}

/// Why an address was rejected by [`normalize_email`]. Messages never repeat the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email is empty")]
    Empty,
    #[error("email is too long (at most {MAX_EMAIL_LEN} bytes)")]
    TooLong,
    #[error("email contains a control, whitespace or invisible character")]
    ForbiddenCharacter,
    #[error("email must contain exactly one @")]
    AtSign,
    #[error("the part before @ is empty, longer than {MAX_LOCAL_LEN} bytes, or malformed")]
    LocalPart,
    #[error("the domain is not a valid domain name with a dot")]
    Domain,
}

/// Why a sealed value did not open. Never carries the value or the plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not of the form `v<n>.<kid>.<base64url>`, too long, or too short to hold nonce and tag.
    #[error("sealed value is malformed")]
    Malformed,
    /// A version other than `v1`.
    #[error("sealed value has an unsupported version")]
    UnsupportedVersion,
    /// Sealed with a kid that is not in the keyring (a removed key, or a forgery).
    #[error("sealed value names a key that is not configured")]
    UnknownKey,
    /// Authentication failed: the value or its AAD was altered, or the wrong key/context was used.
    #[error("sealed value failed authentication")]
    Tampered,
    /// Authenticated plaintext that is not UTF-8 (cannot come from [`EmailKeyring::seal`]).
    #[error("sealed value holds no text")]
    NotText,
}

// ---------------------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------------------

/// An address that went through [`normalize_email`]: trimmed, NFKC, lowercase, validated.
///
/// Email addresses are personal data: `Debug` is redacted and there is no `Display`, so one
/// cannot slip into a log by accident. Use [`NormalizedEmail::as_str`] on purpose.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NormalizedEmail(String);

impl NormalizedEmail {
    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalized address, by value.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

impl fmt::Debug for NormalizedEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NormalizedEmail(<redacted>)")
    }
}

/// Normalizes and validates an address.
///
/// Steps: reject raw input over [`MAX_RAW_EMAIL_LEN`] bytes; trim surrounding whitespace;
/// Unicode NFKC (full-width and compatibility forms fold, e.g. `ａ` → `a`); lowercase the whole
/// address; NFKC again (lowercasing can leave a non-normalized sequence).
///
/// Then a practical syntax check, stricter than RFC 5322 (no quoted local parts, comments or
/// IP-literal domains), Unicode (RFC 6531) allowed:
///
/// * no control characters, whitespace or invisible format characters (zero-width, bidi
///   controls, BOM, soft hyphen) anywhere;
/// * exactly one `@`; total at most 254 bytes;
/// * local part: 1 to 64 bytes, none of `" ( ) , : ; < > [ \ ]`, no leading, trailing or
///   doubled `.`;
/// * domain: at least two labels separated by `.`, each 1 to 63 bytes of letters, digits and
///   `-`, not starting or ending with `-`; the last label not all digits.
pub fn normalize_email(raw: &str) -> Result<NormalizedEmail, EmailError> {
    if raw.len() > MAX_RAW_EMAIL_LEN {
        return Err(EmailError::TooLong);
    }
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(EmailError::Empty);
    }
    let folded: String = trimmed.nfkc().collect::<String>().to_lowercase();
    let email: String = folded.nfkc().collect();

    if email.chars().any(is_forbidden_char) {
        return Err(EmailError::ForbiddenCharacter);
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(EmailError::TooLong);
    }
    let (local, domain) = match email.split_once('@') {
        Some((l, d)) if !d.contains('@') => (l, d),
        _ => return Err(EmailError::AtSign),
    };
    if !valid_local(local) {
        return Err(EmailError::LocalPart);
    }
    if !valid_domain(domain) {
        return Err(EmailError::Domain);
    }
    Ok(NormalizedEmail(email))
}

fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(c,
            '\u{00AD}'                  // soft hyphen
            | '\u{034F}'                // combining grapheme joiner
            | '\u{061C}'                // arabic letter mark
            | '\u{115F}' | '\u{1160}'   // hangul fillers
            | '\u{180E}'                // mongolian vowel separator
            | '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}'   // bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}'   // word joiner, invisible operators, bidi isolates
            | '\u{3164}'                // hangul filler
            | '\u{FE00}'..='\u{FE0F}'   // variation selectors
            | '\u{FEFF}'                // BOM / zero-width no-break space
            | '\u{FFA0}'                // half-width hangul filler
            | '\u{FFF0}'..='\u{FFFF}'   // specials
            | '\u{E0000}'..='\u{E0FFF}' // tags, variation selectors supplement
        )
}

fn valid_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && !local.chars().any(|c| {
            matches!(
                c,
                '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '[' | '\\' | ']'
            )
        })
}

fn valid_domain(domain: &str) -> bool {
    let mut labels = 0usize;
    let mut last = "";
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c == '-' || c.is_alphanumeric());
        if !ok {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2 && !last.chars().all(|c| c.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// Keyring
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct SealingKey {
    kid: String,
    cipher: Aes256Gcm,
}

/// The parsed encryption-key variable: every key that may open, the active key that seals, and
/// the blind-index key. See the crate docs for the format and the rotation rules.
///
/// `Debug` shows key ids only.
#[derive(Clone)]
pub struct EmailKeyring {
    /// Config order: `keys[0]` is active, the last one is the blind-index root.
    keys: Vec<SealingKey>,
    blind_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for EmailKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailKeyring")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .field("blind_index_kid", &self.blind_index_kid())
            .finish_non_exhaustive()
    }
}

/// The context auth seals a user's authenticator-app (TOTP) secret with: `totp:<user id>`. An
/// email is sealed with the bare id, so neither kind of value ever opens as the other; the
/// migrations tool re-seals both after a key rotation.
pub fn totp_secret_context(user_id: &str) -> Vec<u8> {
    [b"totp:".as_slice(), user_id.as_bytes()].concat()
}

/// Whether `kid` is a valid key id: 1..=32 characters of `A-Z a-z 0-9 _ -`.
pub fn is_valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl EmailKeyring {
    /// Parses `"<kid>:<base64 of 32 bytes>"`, comma-separated; the first key seals, all open,
    /// the last one roots the blind index.
    pub fn parse(var_value: &str) -> Result<EmailKeyring, KeyConfigError> {
        let var_value = var_value.trim();
        if var_value.is_empty() {
            return Err(KeyConfigError::Empty);
        }
        let mut keys: Vec<SealingKey> = Vec::new();
        let mut last_root: Option<Zeroizing<Vec<u8>>> = None;
        for (i, entry) in var_value.split(',').enumerate() {
            let index = i + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(KeyConfigError::EmptyEntry { index });
            }
            let (kid, b64) = entry
                .split_once(':')
                .ok_or(KeyConfigError::MissingSeparator { index })?;
            let (kid, b64) = (kid.trim(), b64.trim());
            if !is_valid_kid(kid) {
                return Err(KeyConfigError::InvalidKid { index });
            }
            let root = Zeroizing::new(STD_LENIENT.decode(b64).map_err(|_| {
                KeyConfigError::InvalidBase64 {
                    index,
                    kid: kid.to_owned(),
                }
            })?);
            if root.len() != ROOT_KEY_LEN {
                return Err(KeyConfigError::WrongLength {
                    index,
                    kid: kid.to_owned(),
                    len: root.len(),
                });
            }
            if root.iter().all(|&b| b == 0) {
                return Err(KeyConfigError::AllZeroKey {
                    index,
                    kid: kid.to_owned(),
                });
            }
            if keys.iter().any(|k| k.kid == kid) {
                return Err(KeyConfigError::DuplicateKid {
                    kid: kid.to_owned(),
                });
            }
            let enc_key = derive(&root, INFO_ENC);
            let cipher = Aes256Gcm::new_from_slice(&enc_key[..]).expect("32-byte key");
            keys.push(SealingKey {
                kid: kid.to_owned(),
                cipher,
            });
            last_root = Some(root);
        }
        let last_root = last_root.ok_or(KeyConfigError::Empty)?;
        Ok(EmailKeyring {
            keys,
            blind_key: derive(&last_root, INFO_BLIND),
        })
    }

    /// The kid of the key that seals.
    pub fn active_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// The kid of the key the blind index derives from (the last one configured).
    pub fn blind_index_kid(&self) -> &str {
        &self.keys[self.keys.len() - 1].kid
    }

    /// All configured kids, in configuration order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// Seals with the active key and no context. Same as `seal_with_aad(email, b"")`.
    pub fn seal(&self, email: &NormalizedEmail) -> String {
        self.seal_with_aad(email, b"")
    }

    /// Seals with the active key, binding `context` (e.g. the user id) as additional
    /// authenticated data: the value opens only with the same context.
    ///
    /// # Panics
    /// Only if the operating system's random source fails (no randomness means no safe nonce).
    pub fn seal_with_aad(&self, email: &NormalizedEmail, context: &[u8]) -> String {
        self.seal_text_with_aad(email.as_str(), context)
    }

    /// Seals any short text with the active key, as an email is sealed: auth's other secrets at
    /// rest (an authenticator app's shared secret) use the same keys and rotation. Give each kind
    /// of value its own `context`, so that one can never be opened as another.
    ///
    /// # Panics
    /// Only if the operating system's random source fails (no randomness means no safe nonce).
    pub fn seal_text_with_aad(&self, text: &str, context: &[u8]) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source failed");
        let aad = aad(&key.kid, context);
        let ciphertext = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: text.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a short message cannot fail");
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        format!(
            "{SEALED_VERSION}.{}.{}",
            key.kid,
            URL_SAFE_NO_PAD.encode(blob)
        )
    }

    /// Opens a value sealed without context by any configured key.
    pub fn open(&self, sealed: &str) -> Result<String, OpenError> {
        self.open_with_aad(sealed, b"")
    }

    /// Opens a value sealed with `context` by any configured key. Never panics.
    pub fn open_with_aad(&self, sealed: &str, context: &[u8]) -> Result<String, OpenError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(OpenError::Malformed);
        }
        let mut parts = sealed.splitn(3, '.');
        let (version, kid, body) = match (parts.next(), parts.next(), parts.next()) {
            (Some(v), Some(k), Some(b)) => (v, k, b),
            _ => return Err(OpenError::Malformed),
        };
        if version != SEALED_VERSION {
            let looks_versioned = version.len() > 1
                && version.starts_with('v')
                && version[1..].bytes().all(|b| b.is_ascii_digit());
            return Err(if looks_versioned {
                OpenError::UnsupportedVersion
            } else {
                OpenError::Malformed
            });
        }
        if !is_valid_kid(kid) {
            return Err(OpenError::Malformed);
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(OpenError::UnknownKey)?;
        let blob = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Malformed)?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        let aad = aad(kid, context);
        let plaintext = key
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Tampered)?;
        String::from_utf8(plaintext).map_err(|_| OpenError::NotText)
    }

    /// True when `sealed` was not sealed with the active key (including when it is not a valid
    /// sealed value at all), i.e. it should be re-sealed on the next write. Looks at the header
    /// only; it does not authenticate.
    pub fn needs_reseal(&self, sealed: &str) -> bool {
        let mut parts = sealed.splitn(3, '.');
        !(parts.next() == Some(SEALED_VERSION)
            && parts.next() == Some(self.active_kid())
            && parts.next().is_some_and(|b| !b.is_empty()))
    }

    /// Deterministic keyed index of a normalized address: lowercase hex of
    /// HMAC-SHA256(blind-index key, address), 64 characters. Equal addresses give equal indexes
    /// under one blind-index root, whichever key is active.
    pub fn blind_index(&self, email: &NormalizedEmail) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.blind_key[..])
            .expect("HMAC accepts any key length");
        mac.update(email.as_str().as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(64);
        for b in tag.iter() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn derive(root: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, root);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(info, &mut okm[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

fn aad(kid: &str, context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(SEALED_VERSION.len() + kid.len() + 2 + context.len());
    aad.extend_from_slice(SEALED_VERSION.as_bytes());
    aad.push(b'.');
    aad.extend_from_slice(kid.as_bytes());
    aad.push(b'.');
    aad.extend_from_slice(context);
    aad
}

#[cfg(test)]
mod tests;
