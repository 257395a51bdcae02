//! Parsing the key variables and the JWKS.

use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::VerifyingKey;
use jwt_simple::prelude::Ed25519KeyPair;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::{ALGORITHM, KeyConfigError, MAX_JWKS_LEN, MAX_KEYS, is_valid_name};

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
/// Standard alphabet, padding optional (the admin tool writes padded values).
pub(crate) const STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
/// URL-safe alphabet, padding optional on input, none on output (JWK `x`).
pub(crate) const URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    LENIENT.with_encode_padding(false),
);

/// Non-empty, trimmed entries with their 1-based index.
fn entries(var: &str) -> Result<Vec<(usize, &str)>, KeyConfigError> {
    let var = var.trim();
    if var.is_empty() {
        return Err(KeyConfigError::Empty);
    }
    let mut out = Vec::new();
    for (i, entry) in var.split(',').enumerate() {
        let index = i + 1;
        if index > MAX_KEYS {
            return Err(KeyConfigError::TooManyKeys);
        }
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(KeyConfigError::EmptyEntry { index });
        }
        out.push((index, entry));
    }
    Ok(out)
}

fn decode_32(index: usize, kid: &str, b64: &str) -> Result<Zeroizing<[u8; 32]>, KeyConfigError> {
    let bytes =
        Zeroizing::new(
            STD.decode(b64.trim())
                .map_err(|_| KeyConfigError::InvalidBase64 {
                    index,
                    kid: kid.to_owned(),
                })?,
        );
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != out.len() {
        return Err(KeyConfigError::WrongLength {
            index,
            kid: kid.to_owned(),
            len: bytes.len(),
        });
    }
    out.copy_from_slice(&bytes);
    if out.iter().all(|&b| b == 0) {
        return Err(KeyConfigError::AllZeroKey {
            index,
            kid: kid.to_owned(),
        });
    }
    Ok(out)
}

fn check_kid(index: usize, kid: &str, seen: &[&str]) -> Result<(), KeyConfigError> {
    if !is_valid_name(kid) {
        return Err(KeyConfigError::InvalidKid { index });
    }
    if seen.contains(&kid) {
        return Err(KeyConfigError::DuplicateKid {
            kid: kid.to_owned(),
        });
    }
    Ok(())
}

fn public_key(index: usize, kid: &str, raw: &[u8; 32]) -> Result<VerifyingKey, KeyConfigError> {
    let invalid = || KeyConfigError::InvalidPublicKey {
        index,
        kid: kid.to_owned(),
    };
    // A point on the curve, canonically encoded, not of small order: the keys a signature can
    // be checked against (`verify_strict` would refuse a weak one anyway; refuse it here, named).
    let key = VerifyingKey::from_bytes(raw).map_err(|_| invalid())?;
    if !is_canonical_y(raw) || key.is_weak() {
        return Err(invalid());
    }
    Ok(key)
}

/// Whether the encoded y coordinate (bit 255 is the sign of x) is below p = 2^255 - 19: the
/// only other encodings of a valid y are y + p for y < 19.
fn is_canonical_y(raw: &[u8; 32]) -> bool {
    let top_is_all_ones = raw[1..31].iter().all(|&b| b == 0xff) && raw[31] & 0x7f == 0x7f;
    !(top_is_all_ones && raw[0] >= 0xed)
}

// -------------------------------------------------------------------------------------------------

pub(crate) struct SigningKey {
    pub(crate) kid: String,
    seed: Zeroizing<[u8; 32]>,
    /// Derived on first use: expanding a seed costs a base-point multiplication, and most
    /// requests need one key at most (the token's kid) or none (a service caller, a cached
    /// service token). The pair signs (jwt-simple); the verifying key checks (ed25519-dalek,
    /// 35 µs to derive in wasm against the pair's 100 µs, measured in a loop).
    pair: OnceLock<Ed25519KeyPair>,
    verifying: OnceLock<VerifyingKey>,
}

/// PKCS#8 (RFC 8410) prefix of an Ed25519 private key: the DER form jwt-simple imports with a
/// single key derivation (its raw-bytes import derives the key pair a second time to check it).
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl SigningKey {
    fn new(kid: &str, seed: Zeroizing<[u8; 32]>) -> Self {
        Self { kid: kid.to_owned(), seed, pair: OnceLock::new(), verifying: OnceLock::new() }
    }

    /// The key pair with its kid, derived from the seed the first time it is needed.
    pub(crate) fn pair(&self) -> &Ed25519KeyPair {
        self.pair.get_or_init(|| {
            let mut der = Zeroizing::new([0u8; 48]);
            der[..16].copy_from_slice(&PKCS8_ED25519_PREFIX);
            der[16..].copy_from_slice(&self.seed[..]);
            // `parse` accepted only 32-byte, non-zero seeds, and every such seed is a valid
            // Ed25519 private key: this import cannot fail.
            Ed25519KeyPair::from_der(&der[..])
                .expect("a non-zero 32-byte seed is a valid Ed25519 key")
                .with_key_id(&self.kid)
        })
    }

    /// The public half, derived from the seed the first time it is needed.
    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        self.verifying.get_or_init(|| ed25519_dalek::SigningKey::from_bytes(&self.seed).verifying_key())
    }
}

/// The signing-key variable: `<kid>:<base64 32-byte seed>`, comma-separated. The first key
/// signs; all are published and verify. `Debug` shows key ids only.
pub struct SigningKeys {
    pub(crate) keys: Vec<SigningKey>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish()
    }
}

impl SigningKeys {
    /// Parses `<kid>:<base64 std of a 32-byte Ed25519 seed>`, comma-separated.
    pub fn parse(var_value: &str) -> Result<SigningKeys, KeyConfigError> {
        let mut keys: Vec<SigningKey> = Vec::new();
        for (index, entry) in entries(var_value)? {
            let (kid, b64) = entry.split_once(':').ok_or(KeyConfigError::WrongShape {
                index,
                expected: "kid:base64 seed",
            })?;
            let kid = kid.trim();
            check_kid(
                index,
                kid,
                &keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )?;
            let seed = decode_32(index, kid, b64)?;
            keys.push(SigningKey::new(kid, seed));
        }
        Ok(SigningKeys { keys })
    }

    /// The kid of the key that signs.
    pub fn active_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// `<kid>.<16 hex digits>`: names the signing key (kid and a one-way digest of its seed)
    /// without deriving it or revealing anything of it, e.g. to key a cache of tokens it signed
    /// so that a changed key is never served another key's token.
    pub fn active_key_fingerprint(&self) -> String {
        use sha2::Digest as _;
        let key = &self.keys[0];
        let digest = sha2::Sha256::new()
            .chain_update(b"tokens/signing-key-fingerprint/v1")
            .chain_update(&key.seed[..])
            .finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}.{hex}", key.kid)
    }

    /// All kids, in configuration order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// The JWKS with every key's public half (RFC 8037 OKP, `alg` EdDSA, `use` sig), for
    /// `GET /.well-known/jwks.json`.
    pub fn jwks_json(&self) -> String {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL.encode(k.verifying_key().as_bytes()),
                    "kid": k.kid,
                    "alg": ALGORITHM,
                    "use": "sig",
                })
            })
            .collect();
        json!({ "keys": keys }).to_string()
    }

    /// A verifier holding every key's public half.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            keys: self
                .keys
                .iter()
                .map(|k| (k.kid.clone(), *k.verifying_key()))
                .collect(),
        }
    }

    /// `<service>:<kid>:<base64 public key>` for every key, comma-separated: the value auth's
    /// trusted-service-keys variable needs for a service that signs with these keys.
    pub fn trusted_service_entries(&self, service: &str) -> String {
        self.keys
            .iter()
            .map(|k| {
                format!(
                    "{service}:{}:{}",
                    k.kid,
                    STD.encode(k.verifying_key().as_bytes())
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

// -------------------------------------------------------------------------------------------------

/// Public keys that verify access tokens, chosen by kid. `Debug` shows key ids only.
#[derive(Clone)]
pub struct Verifier {
    pub(crate) keys: Vec<(String, VerifyingKey)>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish()
    }
}

impl Verifier {
    /// Reads a JWKS (at most [`MAX_JWKS_LEN`] bytes, [`MAX_KEYS`] keys).
    ///
    /// Keys of another type or curve, with an `alg` other than `EdDSA` or a `use` other than
    /// `sig` are skipped (RFC 7517 §5). An Ed25519 key that is malformed, weak, without a valid
    /// `kid`, or that carries private material (`d`) makes the whole document invalid, as does a
    /// document without any usable key.
    pub fn from_jwks(json: &str) -> Result<Verifier, KeyConfigError> {
        use KeyConfigError::InvalidJwks;
        if json.len() > MAX_JWKS_LEN {
            return Err(InvalidJwks("document too large"));
        }
        let doc: Value = serde_json::from_str(json).map_err(|_| InvalidJwks("not JSON"))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(InvalidJwks("no keys array"))?;
        if list.len() > MAX_KEYS {
            return Err(KeyConfigError::TooManyKeys);
        }
        let mut keys: Vec<(String, VerifyingKey)> = Vec::new();
        for (i, jwk) in list.iter().enumerate() {
            let index = i + 1;
            let jwk = jwk
                .as_object()
                .ok_or(InvalidJwks("a key is not an object"))?;
            if jwk.contains_key("d") {
                return Err(InvalidJwks("a key contains private key material"));
            }
            let field = |name: &str| jwk.get(name).and_then(Value::as_str);
            let skip = field("kty") != Some("OKP")
                || field("crv") != Some("Ed25519")
                || jwk
                    .get("alg")
                    .is_some_and(|a| a.as_str() != Some(ALGORITHM))
                || jwk.get("use").is_some_and(|u| u.as_str() != Some("sig"));
            if skip {
                continue;
            }
            let kid = field("kid").ok_or(InvalidJwks("an Ed25519 key has no kid"))?;
            if !is_valid_name(kid) {
                return Err(InvalidJwks("an Ed25519 key has an invalid kid"));
            }
            if keys.iter().any(|(k, _)| k == kid) {
                return Err(KeyConfigError::DuplicateKid {
                    kid: kid.to_owned(),
                });
            }
            let x: [u8; 32] = field("x")
                .and_then(|x| URL.decode(x).ok())
                .and_then(|x| x.try_into().ok())
                .ok_or(InvalidJwks("an Ed25519 key has an invalid x"))?;
            let pk = public_key(index, kid, &x)
                .map_err(|_| InvalidJwks("an Ed25519 key is not a usable public key"))?;
            keys.push((kid.to_owned(), pk));
        }
        if keys.is_empty() {
            return Err(InvalidJwks("no usable Ed25519 signing key"));
        }
        Ok(Verifier { keys })
    }

    /// All kids this verifier knows.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }

    /// Whether a key with this kid is known.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.key(kid).is_some()
    }

    pub(crate) fn key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, pk)| pk)
    }
}

// -------------------------------------------------------------------------------------------------

pub(crate) struct ServiceKey {
    pub(crate) service: String,
    pub(crate) kid: String,
    pub(crate) key: VerifyingKey,
}

/// The trusted-service-keys variable: `<service>:<kid>:<base64 32-byte public key>`,
/// comma-separated. Each key vouches only for its own service. `Debug` shows names only.
pub struct TrustedServiceKeys {
    pub(crate) keys: Vec<ServiceKey>,
}

impl fmt::Debug for TrustedServiceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{}:{}", k.service, k.kid))
            .collect();
        f.debug_struct("TrustedServiceKeys")
            .field("keys", &names)
            .finish()
    }
}

impl TrustedServiceKeys {
    /// Parses `<service>:<kid>:<base64 std of a 32-byte Ed25519 public key>`, comma-separated.
    /// Kids are unique across the whole list.
    pub fn parse(var_value: &str) -> Result<TrustedServiceKeys, KeyConfigError> {
        let mut keys: Vec<ServiceKey> = Vec::new();
        for (index, entry) in entries(var_value)? {
            let mut parts = entry.splitn(3, ':');
            let (Some(service), Some(kid), Some(b64)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(KeyConfigError::WrongShape {
                    index,
                    expected: "service:kid:base64 public key",
                });
            };
            let (service, kid) = (service.trim(), kid.trim());
            if !is_valid_name(service) {
                return Err(KeyConfigError::InvalidServiceName { index });
            }
            check_kid(
                index,
                kid,
                &keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )?;
            let raw = decode_32(index, kid, b64)?;
            let key = public_key(index, kid, &raw)?;
            keys.push(ServiceKey {
                service: service.to_owned(),
                kid: kid.to_owned(),
                key,
            });
        }
        Ok(TrustedServiceKeys { keys })
    }

    /// The distinct service names, in configuration order.
    pub fn services(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for k in &self.keys {
            if !out.contains(&k.service.as_str()) {
                out.push(&k.service);
            }
        }
        out
    }

    pub(crate) fn key(&self, kid: &str) -> Option<&ServiceKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}
