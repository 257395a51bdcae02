//! Development secrets for every secret variable in spin.toml, in the formats the components parse:
//!
//! | variable               | format                                                           |
//! |------------------------|------------------------------------------------------------------|
//! | `encryption_key`       | `k1:<base64 of 32 random bytes>`                                 |
//! | `token_signing_keys`   | `<kid>:<base64 of a 32-byte Ed25519 seed>`                       |
//! | `service_token_key`    | `<kid>:<base64 of a 32-byte Ed25519 seed>` (customer's own key)  |
//! | `trusted_service_keys` | `customer:<kid>:<base64 of the public key of service_token_key>` |
//! | `stripe_webhook_secret`| `whsec_<48 hex>`                                                 |
//! | `stripe_secret_key`    | `sk_test_<48 hex>` (any value works with localstripe)            |
//!
//! Base64 is the standard alphabet with padding; kids look like `k-1a2b3c4d`.

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Prefix of every line [`generate`] returns (Spin reads `SPIN_VARIABLE_<NAME>`).
pub const ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| anyhow!("Failed to read random bytes: {e}"))?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh key id, `k-<8 hex>`.
pub fn new_kid() -> Result<String> {
    Ok(format!("k-{}", hex(&random_bytes::<4>()?)))
}

/// The Ed25519 public key belonging to a 32-byte seed (RFC 8032 secret key).
pub fn public_key_from_seed(seed: &[u8; 32]) -> [u8; 32] {
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(*seed));
    *pair.pk
}

/// An Ed25519 signing key as configured: its kid and seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedKey {
    pub kid: String,
    pub seed: [u8; 32],
}

impl SeedKey {
    pub fn generate() -> Result<Self> {
        Ok(Self {
            kid: new_kid()?,
            seed: random_bytes::<32>()?,
        })
    }

    /// Parses `<kid>:<base64 of the 32-byte seed>`.
    pub fn parse(s: &str) -> Result<Self> {
        let (kid, b64) = s
            .trim()
            .split_once(':')
            .context("Failed to parse the key: expected <kid>:<base64 seed>")?;
        ensure!(
            !kid.is_empty() && !kid.contains(','),
            "Failed to parse the key: empty or invalid kid"
        );
        let bytes = B64
            .decode(b64)
            .context("Failed to decode the key's base64")?;
        let seed: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            anyhow!("Failed to parse the key: seed is {} bytes, not 32", b.len())
        })?;
        Ok(Self {
            kid: kid.to_owned(),
            seed,
        })
    }

    /// `<kid>:<base64 seed>`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.kid, B64.encode(self.seed))
    }

    pub fn public_key(&self) -> [u8; 32] {
        public_key_from_seed(&self.seed)
    }

    /// The `trusted_service_keys` entry for this key: `<service>:<kid>:<base64 public key>`.
    pub fn trusted_entry(&self, service: &str) -> String {
        format!("{service}:{}:{}", self.kid, B64.encode(self.public_key()))
    }
}

/// `k1:<base64 of 32 random bytes>`.
pub fn encryption_key() -> Result<String> {
    Ok(format!("k1:{}", B64.encode(random_bytes::<32>()?)))
}

/// `whsec_<48 hex>`.
pub fn stripe_webhook_secret() -> Result<String> {
    Ok(format!("whsec_{}", hex(&random_bytes::<24>()?)))
}

/// `sk_test_<48 hex>`.
pub fn stripe_secret_key() -> Result<String> {
    Ok(format!("sk_test_{}", hex(&random_bytes::<24>()?)))
}

/// A complete, consistent set of development secrets as (variable name in upper case, value);
/// TRUSTED_SERVICE_KEYS holds the public half of SERVICE_TOKEN_KEY.
pub fn generate() -> Result<Vec<(&'static str, String)>> {
    let service = SeedKey::generate()?;
    Ok(vec![
        ("ENCRYPTION_KEY", encryption_key()?),
        ("TOKEN_SIGNING_KEYS", SeedKey::generate()?.encode()),
        ("SERVICE_TOKEN_KEY", service.encode()),
        ("TRUSTED_SERVICE_KEYS", service.trusted_entry("customer")),
        ("STRIPE_WEBHOOK_SECRET", stripe_webhook_secret()?),
        ("STRIPE_SECRET_KEY", stripe_secret_key()?),
    ])
}

/// `SPIN_VARIABLE_<NAME>=<value>` lines.
pub fn to_env_lines(vars: &[(&str, String)]) -> String {
    vars.iter()
        .map(|(k, v)| format!("{ENV_PREFIX}{k}={v}\n"))
        .collect()
}

/// Checks an `encryption_key` value: comma-separated `<kid>:<base64 of 32 bytes>`.
pub fn parse_encryption_keys(s: &str) -> Result<Vec<(String, [u8; 32])>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kid, b64) = part
            .split_once(':')
            .context("Failed to parse encryption key: expected <kid>:<base64>")?;
        ensure!(!kid.is_empty(), "Failed to parse encryption key: empty kid");
        let key: [u8; 32] = B64
            .decode(b64)
            .context("Failed to decode encryption key base64")?
            .try_into()
            .map_err(|_| anyhow!("Failed to parse encryption key: not 32 bytes"))?;
        out.push((kid.to_owned(), key));
    }
    if out.is_empty() {
        bail!("Failed to parse encryption key: no key given");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn public_key_matches_rfc8032_test_vector() {
        // RFC 8032, section 7.1, TEST 1.
        let seed: [u8; 32] =
            unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .try_into()
                .unwrap();
        assert_eq!(
            public_key_from_seed(&seed).to_vec(),
            unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
    }

    #[test]
    fn generated_set_is_complete_and_parses() {
        let vars = generate().unwrap();
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };

        let enc = parse_encryption_keys(&get("ENCRYPTION_KEY")).unwrap();
        assert_eq!(enc.len(), 1);
        assert_eq!(enc[0].0, "k1");

        let signing = SeedKey::parse(&get("TOKEN_SIGNING_KEYS")).unwrap();
        assert!(signing.kid.starts_with("k-") && signing.kid.len() == 10);
        assert!(signing.kid[2..].chars().all(|c| c.is_ascii_hexdigit()));

        let service = SeedKey::parse(&get("SERVICE_TOKEN_KEY")).unwrap();
        assert_ne!(service.seed, signing.seed);
        let trusted = get("TRUSTED_SERVICE_KEYS");
        let mut parts = trusted.splitn(3, ':');
        assert_eq!(parts.next(), Some("customer"));
        assert_eq!(parts.next(), Some(service.kid.as_str()));
        let pk = B64.decode(parts.next().unwrap()).unwrap();
        assert_eq!(pk, service.public_key().to_vec());

        // The public key really verifies what the seed signs.
        let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(service.seed));
        let sig = pair.sk.sign(b"hello", None);
        let pk = ed25519_compact::PublicKey::from_slice(&pk).unwrap();
        pk.verify(b"hello", &sig).unwrap();

        assert!(get("STRIPE_WEBHOOK_SECRET").starts_with("whsec_"));
        assert!(get("STRIPE_SECRET_KEY").starts_with("sk_test_"));
    }

    #[test]
    fn seed_key_round_trips_and_rejects_bad_input() {
        let k = SeedKey::generate().unwrap();
        assert_eq!(SeedKey::parse(&k.encode()).unwrap(), k);
        assert!(SeedKey::parse("nokid").is_err());
        assert!(SeedKey::parse("k-1:AAAA").is_err());
        assert!(SeedKey::parse(":AAAA").is_err());
    }

    #[test]
    fn env_lines_have_the_spin_prefix() {
        let text = to_env_lines(&generate().unwrap());
        assert_eq!(text.lines().count(), 6);
        assert!(
            text.lines()
                .all(|l| l.starts_with("SPIN_VARIABLE_") && l.contains('='))
        );
    }
}
