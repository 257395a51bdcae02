//! What each fuzz target does, as plain functions (the targets in `fuzz_targets/` are one line
//! each). Crashes found once are kept in `fuzz/regressions/<target>/` and replayed by
//! `scripts/fuzz.sh` before every run.
//!
//! Every function must return normally for any input: a panic is a crash. Where an input can be
//! turned into something the code under test would accept (a correctly signed token or webhook,
//! a sealed email), the function builds it from the fuzzed bytes and checks the answer too, so
//! the fuzzer gets past the signature checks into the claim and timestamp logic.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Auth's signing key for the fuzz targets (a fixed test seed; never used anywhere else).
pub const SIGNING_KEYS: &str = "fz1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Customer's service key (fixed test seed).
pub const SERVICE_KEY: &str = "svc1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
/// Email keys (fixed test seed).
pub const EMAIL_KEYS: &str = "e1:QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

/// Splits the input at the first `\n` (or keeps it whole): (first line, rest).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A u64 from the first 8 bytes (little endian; short inputs padded with zeros).
fn number(data: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    for (i, b) in data.iter().take(8).enumerate() {
        bytes[i] = *b;
    }
    u64::from_le_bytes(bytes)
}

// ---- auth: body rules, DTO parsers, routes, headers ------------------------------------------------

/// auth's request decoding: the body rules (`json_object`), every DTO parser on the result,
/// the route table and the header helpers (bearer tokens, client addresses behind proxies).
pub fn auth_request(data: &[u8]) {
    let (head, body) = split(data);
    let head = text(head);
    for content_type in [Some("application/json"), Some(head.as_str()), None] {
        if let Ok(map) = auth::api::json_object(content_type, body) {
            let _ = auth::api::parse_registration(map.clone());
            let _ = auth::api::parse_credentials(map.clone());
            let _ = auth::api::parse_refresh_token(map.clone());
            let _ = auth::api::parse_logout(map.clone());
            let _ = auth::api::parse_profile_change(map.clone());
            let _ = auth::api::parse_password_change(map.clone());
            let _ = auth::api::parse_password_confirmation(map.clone());
            let _ = auth::api::parse_mailer_request(map.clone());
            let _ = auth::api::parse_mfa_confirmation(map.clone());
            let _ = auth::api::parse_mfa_removal(map.clone());
            if let Ok((Some(token), _)) = auth::api::parse_password_reset(map.clone()) {
                assert_eq!(token.as_str().len(), 43, "a reset token of another shape passed");
            }
            if let Ok(Some(token)) = auth::api::parse_verification(map.clone()) {
                assert_eq!(token.as_str().len(), 43, "a verification token of another shape passed");
            }
            if let Ok(ids) = auth::api::parse_batch(map) {
                assert!(!ids.is_empty() && ids.len() <= 100, "a batch of {} ids passed", ids.len());
            }
        }
    }
    let (method, path) = head.split_once(' ').unwrap_or(("GET", head.as_str()));
    let _ = auth::routes::resolve(method, path);
    let _ = auth::api::bearer(Some(&head));
    let _ = auth::domain::client_addr::parse_addr(&head);
    let _ = auth::domain::client_addr::TrustedProxies::parse(&head);
    let everyone = auth::domain::client_addr::TrustedProxies::parse("0.0.0.0/0, ::/0").expect("networks");
    let _ = everyone.client_behind(std::net::IpAddr::from([10, 0, 0, 1]), &head);
    let _ = auth::domain::fields::Name::parse("name", &head);
    let _ = auth::domain::fields::parse_email("email", &head);
    let _ = auth::domain::password::Password::new_secret(&head);
}

// ---- customer: body rules, DTOs, value parsers, webhook events --------------------------------------

/// customer's request decoding: the JSON body rules into each DTO and on into the domain
/// values, the value parsers (ids, keys), the idempotency fingerprint and the webhook event.
pub fn customer_request(data: &[u8]) {
    use customer::domain::model::{
        AreaIds, IdempotencyKey, PaymentMethodId, PriceId, Quantity, StripePaymentMethod, StripeSubscription, SubscriptionOrder, UserId, is_stripe_id,
    };
    let (head, body) = split(data);
    let head = text(head);
    if let Ok(dto) = customer::api::parse_json_object::<customer::api::AreaIdsDto>(body)
        && let Ok(areas) = AreaIds::try_from(dto)
    {
        let ids = areas.as_slice();
        assert!(!ids.is_empty() && ids.len() <= 100, "{} area ids passed", ids.len());
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "area ids not sorted and distinct: {ids:?}");
        assert!(ids.iter().all(|&id| id >= 1 && i64::from(id) <= AreaIds::MAX_VALUE));
    }
    let seats_ok = |q: Quantity| (1..=Quantity::MAX).contains(&q.get());
    if let Ok(dto) = customer::api::parse_json_object::<customer::api::SubscribeDto>(body)
        && let Ok(order) = SubscriptionOrder::try_from(dto)
    {
        assert!(seats_ok(order.quantity), "quantity {} passed", order.quantity.get());
        if let Some(code) = &order.promotion_code {
            let plain = code.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            assert!(plain && (1..=64).contains(&code.as_str().len()), "promotion code {:?} passed", code.as_str());
        }
    }
    if let Ok(dto) = customer::api::parse_json_object::<customer::api::SubscriptionChangeDto>(body)
        && let Ok(change) = customer::api::SubscriptionChange::try_from(dto)
    {
        assert!(change.price.is_some() || change.quantity.is_some() || change.cancel_at_period_end.is_some(), "an empty change passed");
        assert!(change.quantity.is_none_or(seats_ok), "quantity {:?} passed", change.quantity);
    }
    if let Ok(dto) = customer::api::parse_json_object::<customer::api::BillingAddressDto>(body)
        && let Ok(address) = customer::domain::model::BillingAddress::try_from(dto)
    {
        assert!(!address.line1.is_empty() && address.line1.chars().count() <= 200, "line1 {:?} passed", address.line1);
        assert!(address.country.len() == 2 && address.country.bytes().all(|b| b.is_ascii_uppercase()), "country {:?} passed", address.country);
    }
    if let Ok(dto) = customer::api::parse_json_object::<customer::api::TaxIdDto>(body)
        && let Ok(tax_id) = customer::domain::model::NewTaxId::try_from(dto)
    {
        let value = tax_id.value();
        assert!(!value.is_empty() && value.len() <= 64 && value.trim() == value, "tax id value {value:?} passed");
        assert!(tax_id.kind().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "tax id type {:?} passed", tax_id.kind());
    }
    if let Ok(dto) = customer::api::parse_json_object::<customer::api::PaymentMethodDto>(body)
        && let Ok(id) = PaymentMethodId::try_from(dto)
    {
        assert!(id.as_str().starts_with("pm_") && is_stripe_id(id.as_str()), "payment method id {:?} passed", id.as_str());
    }
    // Stripe's answers, read as the client reads them: ids that can reach a URL are plain.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(method) = StripePaymentMethod::from_json(&value) {
            assert!(is_stripe_id(&method.summary.id));
        }
        if let Some(sub) = StripeSubscription::from_json(&value) {
            assert!(is_stripe_id(&sub.id) && sub.item_id.as_deref().is_none_or(is_stripe_id));
        }
    }
    if let Ok(event) = customer::domain::webhook::Event::parse(body) {
        assert!(is_stripe_id(&event.id), "event id {:?} passed", event.id);
    }
    let _ = UserId::parse(&head);
    let _ = IdempotencyKey::parse(&head);
    let _ = PriceId::parse(&head);
    let _ = is_stripe_id(&head);
    let a = customer::domain::idempotency::fingerprint("POST", &head, body);
    let b = customer::domain::idempotency::fingerprint("POST", &head, body);
    assert_eq!(a, b, "fingerprints are deterministic");
}

// ---- tokens ---------------------------------------------------------------------------------------

/// The token parser and verifier: the raw input as an access and a service token; then a token
/// whose header and claims are the fuzzed JSON, correctly signed by a trusted key, so every claim
/// check runs. Also the key and JWKS parsers and the refresh-token parser.
pub fn token_verify(data: &[u8]) {
    let keys = tokens::SigningKeys::parse(SIGNING_KEYS).expect("fixed key");
    let verifier = keys.verifier();
    let service = tokens::SigningKeys::parse(SERVICE_KEY).expect("fixed key");
    let trusted = tokens::TrustedServiceKeys::parse(&service.trusted_service_entries("customer")).expect("fixed key");
    let config = tokens::AccessTokenConfig::new(tokens::ACCESS_TOKEN_ISSUER, tokens::ACCESS_TOKEN_AUDIENCE);
    let now = number(data);
    let raw = text(data);
    let _ = verifier.verify_access_token(&raw, &config, now);
    let _ = trusted.verify_service_token(&raw, now);
    let _ = tokens::Verifier::from_jwks(&raw);
    let _ = tokens::SigningKeys::parse(&raw);
    let _ = tokens::TrustedServiceKeys::parse(&raw);
    let _ = tokens::RefreshToken::parse(&raw);

    // Signed for real: header line, claims line, then the clock.
    let (header, rest) = split(data);
    let (claims, clock) = split(rest);
    let now = number(clock) % 8_000_000_000;
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    let pair = ed25519_pair(seed);
    let input = format!("{}.{}", b64url(header), b64url(claims));
    let token = format!("{input}.{}", b64url(pair.sk.sign(input.as_bytes(), None).as_ref()));
    if let Ok(accepted) = verifier.verify_access_token(&token, &config, now) {
        // Whatever was accepted really says so.
        let header: serde_json::Value = serde_json::from_slice(header).expect("accepted header is JSON");
        assert_eq!(header["alg"], "EdDSA", "accepted alg {header}");
        assert_eq!(header["typ"], "at+jwt", "accepted typ {header}");
        let claims: serde_json::Value = serde_json::from_slice(claims).expect("accepted claims are JSON");
        assert_eq!(claims["iss"], tokens::ACCESS_TOKEN_ISSUER);
        assert!(!accepted.subject.starts_with(tokens::SERVICE_SUBJECT_PREFIX), "service subject accepted");
        let exp = claims["exp"].as_u64().expect("exp");
        assert!(now <= exp + tokens::LEEWAY_SECS, "expired token accepted: now {now}, exp {exp}");
    }
    let _ = keys.issue_access_token(&config, &raw, now);
}

/// The same Ed25519 crate the tokens crate uses (through jwt-simple); seed 0..32 is the key of
/// [`SIGNING_KEYS`].
fn ed25519_pair(seed: [u8; 32]) -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed))
}

// ---- Stripe-Signature -----------------------------------------------------------------------------

/// The `Stripe-Signature` parser and check: the raw header; then a header signed with the real
/// secret at a fuzzed timestamp, which must be accepted exactly when it is within the tolerance.
pub fn stripe_signature(data: &[u8]) {
    use customer::domain::webhook::{SignatureError, TOLERANCE_SECS, verify_signature};
    let (header, payload) = split(data);
    let header = text(header);
    let now = i64::from_le_bytes(number(payload).to_le_bytes());
    let secrets = ["whsec_fuzz", "whsec_other"];
    let _ = verify_signature(Some(&header), payload, &secrets, now, TOLERANCE_SECS);
    let _ = verify_signature(Some(&header), payload, &[], now, TOLERANCE_SECS);

    // Signed for real at a timestamp taken from the input.
    let t = i64::from_le_bytes(number(header.as_bytes()).to_le_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_fuzz").expect("any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(payload);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let signed = format!("t={t},v1={hex}");
    let fresh = now.abs_diff(t) <= TOLERANCE_SECS.unsigned_abs();
    match verify_signature(Some(&signed), payload, &secrets, now, TOLERANCE_SECS) {
        Ok(accepted) => assert!(fresh && accepted == t, "t={t} now={now} accepted"),
        Err(SignatureError::Stale) => assert!(!fresh, "t={t} now={now} called stale"),
        Err(other) => panic!("a correct signature refused: {other:?} (t={t})"),
    }
    // The same signature over other bytes never verifies.
    let mut other = payload.to_vec();
    other.push(b'x');
    assert!(verify_signature(Some(&signed), &other, &secrets, now, TOLERANCE_SECS).is_err());
}

// ---- sealed email ---------------------------------------------------------------------------------

/// The email ciphertext decoder (`open`, `open_with_aad`) on raw input; normalization; and a
/// seal/open round trip of whatever normalizes, which must give back exactly the normalized form
/// and never open under another context.
pub fn sealed_email(data: &[u8]) {
    let keyring = sealed_email::EmailKeyring::parse(EMAIL_KEYS).expect("fixed key");
    let raw = text(data);
    let _ = keyring.open(&raw);
    let _ = keyring.open_with_aad(&raw, data);
    let _ = keyring.needs_reseal(&raw);
    if let Ok(email) = sealed_email::normalize_email(&raw) {
        let sealed = keyring.seal_with_aad(&email, b"user-1");
        assert_eq!(keyring.open_with_aad(&sealed, b"user-1").as_deref(), Ok(email.as_str()));
        assert!(keyring.open_with_aad(&sealed, b"user-2").is_err(), "opened under another context");
        assert_eq!(sealed_email::normalize_email(email.as_str()).map(|e| e.as_str().to_owned()), Ok(email.as_str().to_owned()), "normalization is idempotent");
        let _ = keyring.blind_index(&email);
    }
}
