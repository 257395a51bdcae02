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
        // The decoder's own error names an offending byte of the secret: never chain it.
        let bytes = B64
            .decode(b64.trim())
            .map_err(|_| anyhow!("Failed to decode the key's base64"))?;
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
            .decode(b64.trim())
            .map_err(|_| anyhow!("Failed to decode encryption key base64"))?
            .try_into()
            .map_err(|_| anyhow!("Failed to parse encryption key: not 32 bytes"))?;
        out.push((kid.to_owned(), key));
    }
    if out.is_empty() {
        bail!("Failed to parse encryption key: no key given");
    }
    Ok(out)
}

// -------------------------------------------------------------------------------------------------
// Rotation without downtime
//
// Each function takes the variable's current value and a stage, and returns the next value(s)
// plus notes for the operator. Inputs are checked with the same parsers the components use
// (`tokens`, `sealed_email`), whose errors name an entry's position and kid, never key material;
// so are the outputs, so a printed value always parses where it is going.

/// A variable whose value can be rotated by [`rotate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateKey {
    /// auth's `token_signing_keys`.
    TokenSigningKeys,
    /// auth's `encryption_key`.
    EncryptionKey,
    /// customer's `service_token_key`, with auth's `trusted_service_keys`.
    ServiceTokenKey,
    /// customer's `stripe_webhook_secret`.
    StripeWebhookSecret,
}

/// One step of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Introduce the new key where it verifies/opens but does not yet sign/seal (where the
    /// format allows it).
    Add,
    /// Make the new key the one that signs/seals.
    Promote,
    /// Drop the old key(s).
    Retire,
}

/// What [`rotate`] needs besides the current value.
#[derive(Debug, Clone, Default)]
pub struct RotateInput<'a> {
    /// The variable's current value (a secret).
    pub current: &'a str,
    /// service-token-key: auth's current `trusted_service_keys` (public keys). Entries of other
    /// services are kept; absent means "derive from the service key alone".
    pub trusted_current: Option<&'a str>,
    /// stripe-webhook-secret, stage add: the new secret Stripe showed when it was rolled.
    pub new_secret: Option<&'a str>,
}

/// The result of one stage: the variables to set (upper-case names, as [`generate`]) and what
/// to do next. Notes name key ids, never key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub vars: Vec<(&'static str, String)>,
    pub notes: Vec<String>,
}

/// How long a new signing key must be published before it signs: the customer component caches
/// auth's JWKS for 5 minutes (see crates/README.md).
pub const JWKS_CACHE_NOTE: &str = "5 minutes, customer's JWKS cache (if customer's auth_jwks is set, put auth's new /.well-known/jwks.json there first)";

/// Entries of a comma-separated list, trimmed, empty ones refused by the callers' parsers.
fn list_entries(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

fn kid_of(entry: &str) -> &str {
    entry.split(':').next().unwrap_or("").trim()
}

/// A kid not in `taken`.
fn fresh_kid(taken: &[String]) -> Result<String> {
    loop {
        let kid = new_kid()?;
        if !taken.iter().any(|e| kid_of(e) == kid) {
            return Ok(kid);
        }
    }
}

fn check_signing_keys(what: &str, value: &str) -> Result<tokens::SigningKeys> {
    tokens::SigningKeys::parse(value).map_err(|e| anyhow!("Failed to parse {what}: {e}"))
}

fn check_encryption_keys(what: &str, value: &str) -> Result<sealed_email::EmailKeyring> {
    sealed_email::EmailKeyring::parse(value).map_err(|e| anyhow!("Failed to parse {what}: {e}"))
}

fn check_trusted(what: &str, value: &str) -> Result<tokens::TrustedServiceKeys> {
    tokens::TrustedServiceKeys::parse(value).map_err(|e| anyhow!("Failed to parse {what}: {e}"))
}

/// The next value(s) for one stage of rotating `key`. See docs/operations.md, "Keys".
pub fn rotate(key: RotateKey, stage: Stage, input: &RotateInput<'_>) -> Result<Rotation> {
    match key {
        RotateKey::TokenSigningKeys => rotate_token_signing_keys(input.current, stage),
        RotateKey::EncryptionKey => rotate_encryption_key(input.current, stage),
        RotateKey::ServiceTokenKey => {
            rotate_service_token_key(input.current, input.trusted_current, stage)
        }
        RotateKey::StripeWebhookSecret => {
            rotate_stripe_webhook_secret(input.current, input.new_secret, stage)
        }
    }
}

/// `token_signing_keys`: the first key signs, every key is published in the JWKS.
///
/// - add: `[a]` → `[a, new]`: `new` is published but does not sign;
/// - promote: `[a, new]` → `[new, a]`: `new` signs, `a` still verifies tokens it signed;
/// - retire: `[new, a]` → `[new]`: keep only the signing key.
pub fn rotate_token_signing_keys(current: &str, stage: Stage) -> Result<Rotation> {
    const WHAT: &str = "the current token_signing_keys";
    check_signing_keys(WHAT, current)?;
    let mut entries = list_entries(current);
    let kids: Vec<String> = entries.iter().map(|e| kid_of(e).to_owned()).collect();
    let notes = match stage {
        Stage::Add => {
            ensure!(
                entries.len() == 1,
                "Failed to add a token signing key: {WHAT} already holds {} keys ({}); a rotation is under way: promote or retire first",
                entries.len(),
                kids.join(", ")
            );
            let new = SeedKey {
                kid: fresh_kid(&entries)?,
                seed: random_bytes::<32>()?,
            };
            entries.push(new.encode());
            vec![
                format!(
                    "{} still signs; {} is published in /.well-known/jwks.json but does not sign yet.",
                    kids[0], new.kid
                ),
                format!(
                    "Next: deploy this value to auth and wait at least {JWKS_CACHE_NOTE}; then run --stage promote with it."
                ),
            ]
        }
        Stage::Promote => {
            ensure!(
                entries.len() == 2,
                "Failed to promote a token signing key: expected the two keys left by --stage add (signing, new), found {} ({})",
                entries.len(),
                kids.join(", ")
            );
            entries.swap(0, 1);
            vec![
                format!("{} signs now; {} still verifies the tokens it signed.", kids[1], kids[0]),
                "Next: deploy this value to auth, wait for the longest access-token lifetime plus leeway (15 min + 30 s by default), then run --stage retire with it.".to_owned(),
            ]
        }
        Stage::Retire => {
            ensure!(
                entries.len() >= 2,
                "Failed to retire a token signing key: {WHAT} holds only {} ({}), the signing key",
                kids.join(", "),
                kids.len()
            );
            let dropped = kids[1..].join(", ");
            entries.truncate(1);
            vec![
                format!(
                    "{} signs; dropped {dropped}: tokens they signed no longer verify.",
                    kids[0]
                ),
                "Next: deploy this value to auth. The rotation is complete.".to_owned(),
            ]
        }
    };
    let value = entries.join(",");
    check_signing_keys("the new token_signing_keys", &value)?;
    Ok(Rotation {
        vars: vec![("TOKEN_SIGNING_KEYS", value)],
        notes,
    })
}

/// `encryption_key`: the first key seals, every key opens, the *last* key roots the blind index
/// (`email_hash`), so the last key never moves here.
///
/// - add: with one key `[root]` → `[new, root]`: `new` seals at once (there is no position that
///   only opens without moving the root); with more, `[a, .., root]` → `[a, new, .., root]`:
///   `new` opens only;
/// - promote: `[a, new, .., root]` → `[new, a, .., root]`: `new` seals;
/// - retire: keep the sealing key and the root, drop the keys between them. Only after every
///   stored value has been re-sealed with the first key (the re-encryption command of the
///   migrations tool, issue 5); dropping the root itself is a re-index, also that tool's.
pub fn rotate_encryption_key(current: &str, stage: Stage) -> Result<Rotation> {
    const WHAT: &str = "the current encryption_key";
    let keyring = check_encryption_keys(WHAT, current)?;
    let root = keyring.blind_index_kid().to_owned();
    let mut entries = list_entries(current);
    let kids: Vec<String> = entries.iter().map(|e| kid_of(e).to_owned()).collect();
    let new_entry = |entries: &[String]| -> Result<(String, String)> {
        let kid = fresh_kid(entries)?;
        let entry = format!("{kid}:{}", B64.encode(random_bytes::<32>()?));
        Ok((kid, entry))
    };
    let notes = match stage {
        Stage::Add if entries.len() == 1 => {
            let (kid, entry) = new_entry(&entries)?;
            entries.insert(0, entry);
            vec![
                format!(
                    "{kid} seals new values; {root} still opens the old ones and stays last: it roots the blind index (email_hash), so lookups are unchanged."
                ),
                format!(
                    "With a single key there is no open-only position ({root} must stay last), so {kid} seals as soon as a pod has this value: roll it out in one step (pods still on the old value cannot open emails sealed with {kid} until they restart)."
                ),
                "Next: deploy this value to auth. Then re-seal stored values with the migrations tool's re-encryption command (docs/upgrade.md); only then --stage retire.".to_owned(),
            ]
        }
        Stage::Add => {
            let (kid, entry) = new_entry(&entries)?;
            entries.insert(1, entry);
            vec![
                format!(
                    "{} still seals; {kid} opens only (second), {root} stays last and roots the blind index.",
                    kids[0]
                ),
                "Next: deploy this value to auth (every pod), then run --stage promote with it."
                    .to_owned(),
            ]
        }
        Stage::Promote => {
            ensure!(
                entries.len() >= 3,
                "Failed to promote an encryption key: expected <sealing>,<new>,...,<blind-index root> (three or more keys) as left by --stage add, found {} ({}); with two keys the first already seals",
                entries.len(),
                kids.join(", ")
            );
            entries.swap(0, 1);
            vec![
                format!(
                    "{} seals now; {} and the others still open; {root} stays last (blind index).",
                    kids[1], kids[0]
                ),
                "Next: deploy this value to auth, re-seal stored values with the migrations tool's re-encryption command (docs/upgrade.md), then --stage retire.".to_owned(),
            ]
        }
        Stage::Retire => {
            ensure!(
                entries.len() >= 3,
                "Failed to retire an encryption key: {WHAT} holds {} ({}): the first seals and the last ({root}) roots the blind index; dropping {root} is a re-index (the migrations tool's job, docs/upgrade.md), not a retire",
                entries.len(),
                kids.join(", ")
            );
            let dropped = kids[1..kids.len() - 1].join(", ");
            let last = entries.pop().expect("three or more");
            entries.truncate(1);
            entries.push(last);
            vec![
                format!(
                    "Dropped {dropped}. ONLY deploy this once nothing stored is sealed with {dropped} (the migrations tool's re-encryption command reports it): such values would no longer open."
                ),
                format!("{} seals, {root} opens and roots the blind index.", kids[0]),
            ]
        }
    };
    let value = entries.join(",");
    let next = check_encryption_keys("the new encryption_key", &value)?;
    ensure!(
        next.blind_index_kid() == root,
        "Failed to rotate: the blind-index root would move from {root} (a bug: refusing)"
    );
    Ok(Rotation {
        vars: vec![("ENCRYPTION_KEY", value)],
        notes,
    })
}

/// `service_token_key` (customer's `<kid>:<seed>`) with auth's `trusted_service_keys`.
///
/// - add (current = the service key): a new key; prints TRUSTED_SERVICE_KEYS with the public keys
///   of both (plus other services' entries from `trusted_current`) and the new SERVICE_TOKEN_KEY;
/// - promote: nothing to compute: deploy the SERVICE_TOKEN_KEY printed by add;
/// - retire (current = the new service key): TRUSTED_SERVICE_KEYS with only its public key for
///   `customer` (other services' entries kept).
pub fn rotate_service_token_key(
    current: &str,
    trusted_current: Option<&str>,
    stage: Stage,
) -> Result<Rotation> {
    const SERVICE: &str = "customer";
    let keys = check_signing_keys("the current service_token_key", current)?;
    let entries = list_entries(current);
    ensure!(
        entries.len() == 1,
        "Failed to rotate: service_token_key holds {} keys; it takes exactly one <kid>:<seed>",
        entries.len()
    );
    let kid = keys.active_kid().to_owned();
    let own = keys.trusted_service_entries(SERVICE);
    let others: Vec<String> = match trusted_current {
        Some(t) => {
            check_trusted("the current trusted_service_keys", t)?;
            list_entries(t)
                .into_iter()
                .filter(|e| !e.starts_with(&format!("{SERVICE}:")))
                .collect()
        }
        None => Vec::new(),
    };
    let trusted_with = |customer: Vec<String>| -> Result<String> {
        let mut all = others.clone();
        all.extend(customer);
        let value = all.join(",");
        check_trusted("the new trusted_service_keys", &value)?;
        Ok(value)
    };
    match stage {
        Stage::Add => {
            if let Some(t) = trusted_current {
                let trusted_kids: Vec<String> = list_entries(t)
                    .iter()
                    .filter_map(|e| e.strip_prefix(&format!("{SERVICE}:")))
                    .map(|rest| kid_of(rest).to_owned())
                    .collect();
                ensure!(
                    trusted_kids.len() <= 1,
                    "Failed to add a service key: trusted_service_keys already trusts {} {SERVICE} keys ({}); a rotation is under way: retire first",
                    trusted_kids.len(),
                    trusted_kids.join(", ")
                );
                ensure!(
                    trusted_kids.iter().all(|k| *k == kid),
                    "Failed to add a service key: trusted_service_keys trusts {SERVICE} key {}, but the current service_token_key is {kid}",
                    trusted_kids.join(", ")
                );
            }
            let new = SeedKey {
                kid: fresh_kid(std::slice::from_ref(&kid))?,
                seed: random_bytes::<32>()?,
            };
            let trusted = trusted_with(vec![own, new.trusted_entry(SERVICE)])?;
            let service_key = new.encode();
            check_signing_keys("the new service_token_key", &service_key)?;
            Ok(Rotation {
                vars: vec![
                    ("TRUSTED_SERVICE_KEYS", trusted),
                    ("SERVICE_TOKEN_KEY", service_key),
                ],
                notes: vec![
                    format!("auth will trust {SERVICE} keys {kid} and {} at once.", new.kid),
                    "Next: 1) deploy TRUSTED_SERVICE_KEYS to auth and wait for every auth pod; 2) deploy SERVICE_TOKEN_KEY to customer (keep it: it is the only copy of the new key); 3) after 90 s (60 s token lifetime + 30 s leeway) run --stage retire with the new SERVICE_TOKEN_KEY.".to_owned(),
                ],
            })
        }
        Stage::Promote => bail!(
            "service-token-key has no promote stage: deploy the SERVICE_TOKEN_KEY printed by --stage add to customer once auth trusts both keys"
        ),
        Stage::Retire => {
            let trusted = trusted_with(vec![own])?;
            Ok(Rotation {
                vars: vec![("TRUSTED_SERVICE_KEYS", trusted)],
                notes: vec![format!(
                    "auth will trust only {SERVICE} key {kid}: deploy this to auth once customer signs with {kid} (90 s after its rollout)."
                )],
            })
        }
    }
}

/// `stripe_webhook_secret`: comma-separated `whsec_...`; a signature made with any of them is
/// accepted, so there is no promote.
///
/// - add (needs the new secret Stripe shows when you roll it): `[old]` → `[new, old]`;
/// - retire: keep only the first (newest) secret.
pub fn rotate_stripe_webhook_secret(
    current: &str,
    new_secret: Option<&str>,
    stage: Stage,
) -> Result<Rotation> {
    fn check(what: &str, value: &str) -> Result<Vec<String>> {
        let entries = list_entries(value);
        ensure!(
            !entries.is_empty(),
            "Failed to parse {what}: no secret given"
        );
        for (i, e) in entries.iter().enumerate() {
            ensure!(
                e.len() > "whsec_".len()
                    && e.starts_with("whsec_")
                    && e.bytes().all(|b| b.is_ascii_alphanumeric()
                        || b == b'_'
                        || b == b'+'
                        || b == b'/'
                        || b == b'='),
                "Failed to parse {what}: entry {} is not a Stripe webhook signing secret (whsec_...)",
                i + 1
            );
        }
        let mut seen = entries.clone();
        seen.sort();
        seen.dedup();
        ensure!(
            seen.len() == entries.len(),
            "Failed to parse {what}: a secret appears twice"
        );
        Ok(entries)
    }
    let mut entries = check("the current stripe_webhook_secret", current)?;
    let notes = match stage {
        Stage::Add => {
            let new = new_secret.context(
                "Failed to add a webhook secret: give the new whsec_... from Stripe (second line of standard input, or --new-env NAME)",
            )?;
            let new = check("the new webhook secret", new)?;
            ensure!(
                new.len() == 1,
                "Failed to add a webhook secret: give exactly one new secret"
            );
            ensure!(
                !entries.contains(&new[0]),
                "Failed to add a webhook secret: it is already in stripe_webhook_secret"
            );
            ensure!(
                entries.len() == 1,
                "Failed to add a webhook secret: stripe_webhook_secret already holds {} secrets; retire first",
                entries.len()
            );
            entries.insert(0, new[0].clone());
            vec![
                "customer accepts signatures made with either secret.".to_owned(),
                "Next: deploy this value to customer before the old secret expires at Stripe (you chose when, rolling it); once it has expired, run --stage retire with this value.".to_owned(),
            ]
        }
        Stage::Promote => bail!(
            "stripe-webhook-secret has no promote stage: customer checks every listed secret; Stripe decides which one signs"
        ),
        Stage::Retire => {
            ensure!(
                entries.len() >= 2,
                "Failed to retire a webhook secret: stripe_webhook_secret holds only one"
            );
            let dropped = entries.len() - 1;
            entries.truncate(1);
            vec![format!(
                "Dropped {dropped} older secret(s); deploy this value to customer once Stripe no longer signs with them."
            )]
        }
    };
    Ok(Rotation {
        vars: vec![("STRIPE_WEBHOOK_SECRET", entries.join(","))],
        notes,
    })
}

/// `<name>=<value>` lines with Spin's variable names (`token_signing_keys=...`): the keys of the
/// Kubernetes Secrets in deploy/spinkube, for `kubectl create secret generic --from-env-file`.
pub fn to_var_lines(vars: &[(&str, String)]) -> String {
    vars.iter()
        .map(|(k, v)| format!("{}={v}\n", k.to_ascii_lowercase()))
        .collect()
}

/// `name = "value"` lines with Spin's variable names: a TOML file for
/// `spin aka deploy --variable @file.toml`.
pub fn to_toml_lines(vars: &[(&str, String)]) -> String {
    vars.iter()
        .map(|(k, v)| {
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{} = \"{escaped}\"\n", k.to_ascii_lowercase())
        })
        .collect()
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

#[cfg(test)]
mod rotate_tests {
    use super::*;

    fn one(rotation: &Rotation, name: &str) -> String {
        rotation
            .vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                panic!(
                    "no {name} in {:?}",
                    rotation.vars.iter().map(|(k, _)| k).collect::<Vec<_>>()
                )
            })
    }

    fn kids(value: &str) -> Vec<String> {
        list_entries(value)
            .iter()
            .map(|e| kid_of(e).to_owned())
            .collect()
    }

    fn signing(value: &str) -> tokens::SigningKeys {
        tokens::SigningKeys::parse(value).unwrap()
    }

    /// An error message must never contain the secret it was given.
    fn assert_err_without(result: Result<Rotation>, secret: &str, needle: &str) {
        let err = format!("{:#}", result.expect_err("expected an error"));
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        assert!(
            !err.contains(secret),
            "the error echoes the secret: {err:?}"
        );
    }

    #[test]
    fn token_signing_keys_add_promote_retire() {
        let old = SeedKey::generate().unwrap().encode();
        let old_kid = kids(&old)[0].clone();

        // add: the new key is published (second) but does not sign.
        let added = one(
            &rotate_token_signing_keys(&old, Stage::Add).unwrap(),
            "TOKEN_SIGNING_KEYS",
        );
        let k = kids(&added);
        assert_eq!(k.len(), 2);
        assert_eq!(k[0], old_kid);
        assert_ne!(k[1], old_kid);
        assert!(
            added.starts_with(&format!("{old},")),
            "the old entry is kept verbatim, first"
        );
        let keys = signing(&added);
        assert_eq!(keys.active_kid(), old_kid);
        let jwks = keys.jwks_json();
        assert!(
            jwks.contains(&format!("\"kid\":\"{}\"", k[1])),
            "the new key is published: {jwks}"
        );
        assert!(!jwks.contains("\"d\""), "no private material in the JWKS");

        // promote: the new key signs, the old one still verifies.
        let promoted = one(
            &rotate_token_signing_keys(&added, Stage::Promote).unwrap(),
            "TOKEN_SIGNING_KEYS",
        );
        assert_eq!(kids(&promoted), vec![k[1].clone(), old_kid.clone()]);
        assert_eq!(signing(&promoted).active_kid(), k[1]);

        // retire: only the signing key is left.
        let retired = one(
            &rotate_token_signing_keys(&promoted, Stage::Retire).unwrap(),
            "TOKEN_SIGNING_KEYS",
        );
        assert_eq!(kids(&retired), vec![k[1].clone()]);
        assert_eq!(
            list_entries(&retired)[0],
            list_entries(&added)[1],
            "the new seed is carried through unchanged"
        );
    }

    #[test]
    fn token_signing_keys_refuse_out_of_order_stages() {
        let one_key = SeedKey::generate().unwrap().encode();
        let two_keys = format!("{one_key},{}", SeedKey::generate().unwrap().encode());
        let msg = |r: Result<Rotation>| format!("{:#}", r.unwrap_err());
        assert!(
            msg(rotate_token_signing_keys(&two_keys, Stage::Add))
                .contains("a rotation is under way")
        );
        assert!(
            msg(rotate_token_signing_keys(&one_key, Stage::Promote))
                .contains("expected the two keys")
        );
        assert!(
            msg(rotate_token_signing_keys(&one_key, Stage::Retire)).contains("the signing key")
        );
        // Retire keeps the first (signing) key whatever came before it.
        let r = rotate_token_signing_keys(&two_keys, Stage::Retire).unwrap();
        assert_eq!(one(&r, "TOKEN_SIGNING_KEYS"), one_key);
    }

    #[test]
    fn encryption_key_first_rotation_keeps_the_blind_index_root_last() {
        let old = encryption_key().unwrap(); // k1:<32 bytes>
        let old_ring = sealed_email::EmailKeyring::parse(&old).unwrap();
        let email = sealed_email::normalize_email("Alice@Example.org").unwrap();
        let sealed_old = old_ring.seal(&email);

        let added = one(
            &rotate_encryption_key(&old, Stage::Add).unwrap(),
            "ENCRYPTION_KEY",
        );
        let k = kids(&added);
        assert_eq!(k.len(), 2);
        assert_eq!(k[1], "k1", "the root stays last");
        let ring = sealed_email::EmailKeyring::parse(&added).unwrap();
        assert_eq!(ring.active_kid(), k[0], "the new key seals");
        assert_eq!(ring.blind_index_kid(), "k1");
        assert_eq!(
            ring.blind_index(&email),
            old_ring.blind_index(&email),
            "lookups unchanged"
        );
        assert_eq!(
            ring.open(&sealed_old).unwrap(),
            email.as_str(),
            "old values still open"
        );
        assert!(ring.needs_reseal(&sealed_old));
        let sealed_new = ring.seal(&email);
        assert!(sealed_new.starts_with(&format!("v1.{}.", k[0])));

        // Two keys: promote has nothing to do, and retiring would drop the root.
        let msg = |r: Result<Rotation>| format!("{:#}", r.unwrap_err());
        assert!(
            msg(rotate_encryption_key(&added, Stage::Promote)).contains("the first already seals")
        );
        assert!(msg(rotate_encryption_key(&added, Stage::Retire)).contains("re-index"));
    }

    #[test]
    fn encryption_key_later_rotation_adds_open_only_then_promotes_then_retires() {
        let first = encryption_key().unwrap();
        let two = one(
            &rotate_encryption_key(&first, Stage::Add).unwrap(),
            "ENCRYPTION_KEY",
        );
        let before = kids(&two); // [a, k1]
        let ring_before = sealed_email::EmailKeyring::parse(&two).unwrap();
        let email = sealed_email::normalize_email("bob@example.com").unwrap();
        let sealed_a = ring_before.seal(&email);

        // add: the new key goes second: opens, does not seal; the root stays last.
        let added = one(
            &rotate_encryption_key(&two, Stage::Add).unwrap(),
            "ENCRYPTION_KEY",
        );
        let k = kids(&added);
        assert_eq!(k.len(), 3);
        assert_eq!((k[0].as_str(), k[2].as_str()), (before[0].as_str(), "k1"));
        let ring = sealed_email::EmailKeyring::parse(&added).unwrap();
        assert_eq!(
            ring.active_kid(),
            before[0],
            "the sealing key is unchanged by add"
        );

        // promote: the new key seals.
        let promoted = one(
            &rotate_encryption_key(&added, Stage::Promote).unwrap(),
            "ENCRYPTION_KEY",
        );
        assert_eq!(
            kids(&promoted),
            vec![k[1].clone(), k[0].clone(), "k1".to_owned()]
        );
        let ring = sealed_email::EmailKeyring::parse(&promoted).unwrap();
        assert_eq!(ring.active_kid(), k[1]);
        assert_eq!(ring.open(&sealed_a).unwrap(), email.as_str());
        assert_eq!(ring.blind_index(&email), ring_before.blind_index(&email));

        // retire: the old sealing key goes, the root stays.
        let retired = one(
            &rotate_encryption_key(&promoted, Stage::Retire).unwrap(),
            "ENCRYPTION_KEY",
        );
        assert_eq!(kids(&retired), vec![k[1].clone(), "k1".to_owned()]);
        let ring = sealed_email::EmailKeyring::parse(&retired).unwrap();
        assert!(
            ring.open(&sealed_a).is_err(),
            "values sealed with the retired key no longer open: re-seal first"
        );
        assert_eq!(ring.blind_index(&email), ring_before.blind_index(&email));
    }

    #[test]
    fn service_token_key_add_trusts_both_then_retire_trusts_the_new_one() {
        let old = SeedKey::generate().unwrap();
        let other = SeedKey::generate().unwrap().trusted_entry("billing");
        let trusted_now = format!("{other},{}", old.trusted_entry("customer"));

        let r = rotate_service_token_key(&old.encode(), Some(&trusted_now), Stage::Add).unwrap();
        let new_key = one(&r, "SERVICE_TOKEN_KEY");
        let new = SeedKey::parse(&new_key).unwrap();
        assert_ne!(new.kid, old.kid);
        let trusted = one(&r, "TRUSTED_SERVICE_KEYS");
        assert_eq!(
            trusted,
            format!(
                "{other},{},{}",
                old.trusted_entry("customer"),
                new.trusted_entry("customer")
            ),
            "other services kept, both customer keys trusted"
        );
        let parsed = tokens::TrustedServiceKeys::parse(&trusted).unwrap();
        let mut services = parsed.services();
        services.sort();
        services.dedup();
        assert_eq!(services, vec!["billing", "customer"]);
        assert_eq!(
            signing(&new_key).trusted_service_entries("customer"),
            new.trusted_entry("customer"),
            "the printed public key is the seed's"
        );

        // No promote: the operator deploys SERVICE_TOKEN_KEY.
        assert!(
            format!(
                "{:#}",
                rotate_service_token_key(&new_key, Some(&trusted), Stage::Promote).unwrap_err()
            )
            .contains("no promote stage")
        );
        // A second add while both are trusted is refused.
        assert!(
            format!(
                "{:#}",
                rotate_service_token_key(&new_key, Some(&trusted), Stage::Add).unwrap_err()
            )
            .contains("a rotation is under way")
        );

        let r = rotate_service_token_key(&new_key, Some(&trusted), Stage::Retire).unwrap();
        assert_eq!(r.vars.len(), 1, "retire prints only TRUSTED_SERVICE_KEYS");
        assert_eq!(
            one(&r, "TRUSTED_SERVICE_KEYS"),
            format!("{other},{}", new.trusted_entry("customer"))
        );

        // Without the current trusted list: derived from the key alone.
        let r = rotate_service_token_key(&old.encode(), None, Stage::Add).unwrap();
        assert_eq!(list_entries(&one(&r, "TRUSTED_SERVICE_KEYS")).len(), 2);
    }

    #[test]
    fn service_token_key_add_refuses_a_trusted_list_for_another_key() {
        let key = SeedKey::generate().unwrap();
        let stranger = SeedKey::generate().unwrap().trusted_entry("customer");
        let err = format!(
            "{:#}",
            rotate_service_token_key(&key.encode(), Some(&stranger), Stage::Add).unwrap_err()
        );
        assert!(
            err.contains("but the current service_token_key is"),
            "{err}"
        );
    }

    #[test]
    fn stripe_webhook_secret_add_and_retire() {
        let old = stripe_webhook_secret().unwrap();
        let new = stripe_webhook_secret().unwrap();
        let added = one(
            &rotate_stripe_webhook_secret(&old, Some(&new), Stage::Add).unwrap(),
            "STRIPE_WEBHOOK_SECRET",
        );
        assert_eq!(added, format!("{new},{old}"));
        let retired = one(
            &rotate_stripe_webhook_secret(&added, None, Stage::Retire).unwrap(),
            "STRIPE_WEBHOOK_SECRET",
        );
        assert_eq!(retired, new);

        let msg = |r: Result<Rotation>| format!("{:#}", r.unwrap_err());
        assert!(
            msg(rotate_stripe_webhook_secret(&old, None, Stage::Add))
                .contains("give the new whsec_")
        );
        assert!(
            msg(rotate_stripe_webhook_secret(&old, Some(&old), Stage::Add)).contains("already in")
        );
        assert!(
            msg(rotate_stripe_webhook_secret(
                &added,
                Some(&stripe_webhook_secret().unwrap()),
                Stage::Add
            ))
            .contains("retire first")
        );
        assert!(
            msg(rotate_stripe_webhook_secret(&old, None, Stage::Retire)).contains("holds only one")
        );
        assert!(
            msg(rotate_stripe_webhook_secret(&old, None, Stage::Promote))
                .contains("no promote stage")
        );
    }

    #[test]
    fn errors_never_echo_the_secret() {
        // Malformed values carrying a recognisable secret: every error names positions, not values.
        let secret = "S3cretS3cretS3cret";
        assert_err_without(
            rotate_token_signing_keys(&format!("k1:{secret}"), Stage::Add),
            secret,
            "token_signing_keys",
        );
        assert_err_without(
            rotate_token_signing_keys(&format!("k1:{secret}!!"), Stage::Add),
            secret,
            "token_signing_keys",
        );
        assert_err_without(
            rotate_encryption_key(&format!("k1:{secret}"), Stage::Add),
            secret,
            "encryption_key",
        );
        assert_err_without(
            rotate_service_token_key(&format!("k1:{secret}"), None, Stage::Add),
            secret,
            "service_token_key",
        );
        assert_err_without(
            rotate_stripe_webhook_secret(&format!("wh_{secret}"), None, Stage::Retire),
            secret,
            "not a Stripe webhook signing secret",
        );
        let good = stripe_webhook_secret().unwrap();
        assert_err_without(
            rotate_stripe_webhook_secret(&good, Some(&format!("{secret} x")), Stage::Add),
            secret,
            "the new webhook secret",
        );
        // A good value in a failing stage: neither it nor any part of it is echoed.
        let key = SeedKey::generate().unwrap().encode();
        let seed_b64 = key.split_once(':').unwrap().1.to_owned();
        assert_err_without(
            rotate_token_signing_keys(&key, Stage::Promote),
            &seed_b64,
            "expected the two keys",
        );
        // SeedKey::parse used to chain the base64 decoder's error, which names a byte of the key.
        let err = format!("{:#}", SeedKey::parse("k1:AAAA-AAA").unwrap_err());
        assert!(!err.contains("byte") && !err.contains("offset"), "{err}");
    }

    #[test]
    fn var_and_toml_lines_use_spin_variable_names() {
        let vars = vec![
            ("TOKEN_SIGNING_KEYS", "k-1:abc=".to_owned()),
            ("STRIPE_WEBHOOK_SECRET", "whsec_\"x\\".to_owned()),
        ];
        assert_eq!(
            to_var_lines(&vars),
            "token_signing_keys=k-1:abc=\nstripe_webhook_secret=whsec_\"x\\\n"
        );
        assert_eq!(
            to_toml_lines(&vars),
            "token_signing_keys = \"k-1:abc=\"\nstripe_webhook_secret = \"whsec_\\\"x\\\\\"\n"
        );
    }
}
