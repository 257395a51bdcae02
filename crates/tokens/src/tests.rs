use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::keys::{STD, URL};
use crate::*;

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://auth.example";
const AUD: &str = "api";

// Independent vectors (Python `cryptography`): seed [42; 32] and its public key, and an access
// token signed with it (kid `ext1`, iat 1700000000, exp +900, iss/aud as above, sub `user-1`).
const KAT_SEED: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
const KAT_PUB: &str = "GX9rI+FshTLGq8g4+s1ep4m+DHaykgM0A5v6iz02jWE=";
const KAT_X: &str = "GX9rI-FshTLGq8g4-s1ep4m-DHaykgM0A5v6iz02jWE";
const KAT_JWT: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6ImV4dDEifQ.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZSIsImF1ZCI6ImFwaSIsInN1YiI6InVzZXItMSIsImlhdCI6MTcwMDAwMDAwMCwibmJmIjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDA5MDAsImp0aSI6ImFiYyJ9.hlGtEaLw_3l9w5IHDdA6r7FAhl_nJf_14_dJ33iQ5UQtynPEb_Mfqy2Jsd1k0K-lfZ5Dqz0LFrQfrbb2hvKyAQ";

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

fn spec(kid: &str, n: u8) -> String {
    format!("{kid}:{}", STD.encode(seed(n)))
}

fn pub_b64(n: u8) -> String {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed(n)));
    STD.encode(&kp.pk[..])
}

fn signing(s: &str) -> SigningKeys {
    SigningKeys::parse(s).unwrap()
}

fn cfg() -> AccessTokenConfig {
    AccessTokenConfig::new(ISS, AUD)
}

fn json_part(v: &Value) -> String {
    URL.encode(v.to_string())
}

/// Signs arbitrary header and claims with the Ed25519 key of `seed(n)`, bypassing our issuer.
fn craft(n: u8, header: &Value, claims: &Value) -> String {
    craft_raw(n, &json_part(header), &json_part(claims))
}

fn craft_raw(n: u8, header_b64: &str, claims_b64: &str) -> String {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed(n)));
    let input = format!("{header_b64}.{claims_b64}");
    let sig = kp.sk.sign(input.as_bytes(), None);
    format!("{input}.{}", URL.encode(&sig[..]))
}

fn header(typ: &str, kid: &str) -> Value {
    json!({"alg": "EdDSA", "typ": typ, "kid": kid})
}

fn access_claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "user-1", "iat": NOW, "nbf": NOW, "exp": NOW + 900,
           "jti": "j1"})
}

fn service_claims(service: &str) -> Value {
    let p = format!("service:{service}");
    json!({"iss": p, "aud": "auth", "sub": p, "iat": NOW, "nbf": NOW, "exp": NOW + 60,
           "jti": "j1"})
}

fn decode_part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&URL.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

fn trusted() -> TrustedServiceKeys {
    TrustedServiceKeys::parse(&format!(
        "customer:c1:{},billing:b1:{}",
        pub_b64(7),
        pub_b64(8)
    ))
    .unwrap()
}

// ---- access tokens: happy paths --------------------------------------------------------------

#[test]
fn access_token_round_trip() {
    let keys = signing(&spec("k1", 1));
    let issued = keys.issue_access_token(&cfg(), "user-1", NOW).unwrap();
    assert_eq!(issued.kid, "k1");
    assert_eq!(
        (issued.issued_at, issued.expires_at, issued.expires_in),
        (NOW, NOW + 900, 900)
    );
    let claims = keys
        .verifier()
        .verify_access_token(&issued.token, &cfg(), NOW)
        .unwrap();
    assert_eq!(
        claims,
        AccessClaims {
            subject: "user-1".into(),
            issuer: ISS.into(),
            issued_at: NOW,
            expires_at: NOW + 900,
            not_before: Some(NOW),
            jti: issued.jti.clone(),
            kid: "k1".into(),
        }
    );
}

#[test]
fn access_token_header_and_claims_on_the_wire() {
    let issued = signing(&spec("k1", 1))
        .issue_access_token(&cfg(), "user-1", NOW)
        .unwrap();
    let h = decode_part(&issued.token, 0);
    assert_eq!(h["alg"], "EdDSA");
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(h["kid"], "k1");
    let c = decode_part(&issued.token, 1);
    assert_eq!(c["iss"], ISS);
    assert_eq!(c["aud"], AUD);
    assert_eq!(c["sub"], "user-1");
    assert_eq!(c["iat"], NOW);
    assert_eq!(c["nbf"], NOW);
    assert_eq!(c["exp"], NOW + 900);
    assert_eq!(c["jti"].as_str().unwrap().len(), 22);
    assert_eq!(
        URL.decode(issued.token.split('.').nth(2).unwrap())
            .unwrap()
            .len(),
        64
    );
}

#[test]
fn jti_is_random_and_ttl_configurable() {
    let keys = signing(&spec("k1", 1));
    let a = keys.issue_access_token(&cfg(), "u", NOW).unwrap();
    let b = keys.issue_access_token(&cfg(), "u", NOW).unwrap();
    assert_ne!(a.jti, b.jti);
    assert_ne!(a.token, b.token);
    let short = keys
        .issue_access_token(&cfg().with_ttl_secs(300), "u", NOW)
        .unwrap();
    assert_eq!(short.expires_at, NOW + 300);
}

#[test]
fn issue_refuses_bad_input() {
    let keys = signing(&spec("k1", 1));
    for sub in ["", "service:customer", "a\nb"] {
        assert_eq!(
            keys.issue_access_token(&cfg(), sub, NOW),
            Err(IssueError::InvalidSubject)
        );
    }
    let long = "x".repeat(MAX_SUBJECT_LEN + 1);
    assert_eq!(
        keys.issue_access_token(&cfg(), &long, NOW),
        Err(IssueError::InvalidSubject)
    );
    let bad = AccessTokenConfig::new("", AUD);
    assert_eq!(
        keys.issue_access_token(&bad, "u", NOW),
        Err(IssueError::InvalidConfig)
    );
    for ttl in [0, 86_401] {
        assert!(matches!(
            keys.issue_access_token(&cfg().with_ttl_secs(ttl), "u", NOW),
            Err(IssueError::InvalidLifetime(_))
        ));
    }
    assert_eq!(
        keys.issue_access_token(&cfg(), "u", u64::MAX),
        Err(IssueError::InvalidTime)
    );
    assert_eq!(
        keys.issue_service_token("customer", 1 << 40),
        Err(IssueError::InvalidTime)
    );
    for name in ["", "cust omer", "a:b", "x".repeat(33).as_str()] {
        assert_eq!(
            keys.issue_service_token(name, NOW),
            Err(IssueError::InvalidServiceName)
        );
    }
}

#[test]
fn issued_token_debug_hides_the_token() {
    let issued = signing(&spec("k1", 1))
        .issue_access_token(&cfg(), "user-1", NOW)
        .unwrap();
    let dbg = format!("{issued:?}");
    assert!(!dbg.contains(&issued.token[..20]), "{dbg}");
    assert!(dbg.contains("redacted"));
}

#[test]
fn token_from_an_independent_implementation_verifies() {
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": KAT_X, "kid": "ext1"}]});
    let verifier = Verifier::from_jwks(&jwks.to_string()).unwrap();
    let claims = verifier
        .verify_access_token(KAT_JWT, &cfg(), NOW + 10)
        .unwrap();
    assert_eq!(claims.subject, "user-1");
    assert_eq!(claims.jti, "abc");
    // Our seed expansion matches: the same seed gives the same public key and verifies too.
    let keys = signing(&format!("ext1:{KAT_SEED}"));
    let ours = decode_part(&format!("{}..", URL.encode(keys.jwks_json())), 0);
    assert_eq!(ours["keys"][0]["x"], KAT_X);
    assert_eq!(
        keys.trusted_service_entries("x"),
        format!("x:ext1:{KAT_PUB}")
    );
    assert!(
        keys.verifier()
            .verify_access_token(KAT_JWT, &cfg(), NOW)
            .is_ok()
    );
}

// ---- access tokens: refusals -----------------------------------------------------------------

#[test]
fn wrong_key_with_the_same_kid_is_a_bad_signature() {
    let token = signing(&spec("k1", 1))
        .issue_access_token(&cfg(), "u", NOW)
        .unwrap()
        .token;
    let other = signing(&spec("k1", 2)).verifier();
    assert_eq!(
        other.verify_access_token(&token, &cfg(), NOW),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn unknown_kid_is_distinct_and_rotation_works() {
    let old = signing(&spec("k1", 1));
    let new = signing(&format!("{},{}", spec("k2", 2), spec("k1", 1)));
    let from_new = new.issue_access_token(&cfg(), "u", NOW).unwrap();
    assert_eq!(from_new.kid, "k2");
    // A verifier with a stale JWKS learns the kid is unknown (and would refetch) ...
    let stale = Verifier::from_jwks(&old.jwks_json()).unwrap();
    assert_eq!(
        stale.verify_access_token(&from_new.token, &cfg(), NOW),
        Err(VerifyError::UnknownKid)
    );
    // ... and the fresh JWKS verifies tokens from both keys.
    let fresh = Verifier::from_jwks(&new.jwks_json()).unwrap();
    assert!(
        fresh
            .verify_access_token(&from_new.token, &cfg(), NOW)
            .is_ok()
    );
    let from_old = old.issue_access_token(&cfg(), "u", NOW).unwrap();
    assert!(
        fresh
            .verify_access_token(&from_old.token, &cfg(), NOW)
            .is_ok()
    );
    assert!(fresh.contains_kid("k1") && fresh.contains_kid("k2") && !fresh.contains_kid("k3"));
}

#[test]
fn alg_none_is_refused() {
    let v = signing(&spec("k1", 1)).verifier();
    let claims = json_part(&access_claims());
    for alg in ["none", "None", "NONE", ""] {
        let h = json_part(&json!({"alg": alg, "typ": "at+jwt", "kid": "k1"}));
        for sig in ["", "AAAA"] {
            let token = format!("{h}.{claims}.{sig}");
            assert_eq!(
                v.verify_access_token(&token, &cfg(), NOW),
                Err(VerifyError::AlgorithmNotAllowed),
                "{alg} {sig:?}"
            );
        }
    }
    let no_alg = json_part(&json!({"typ": "at+jwt", "kid": "k1"}));
    assert_eq!(
        v.verify_access_token(&format!("{no_alg}.{claims}."), &cfg(), NOW),
        Err(VerifyError::Malformed)
    );
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    use jwt_simple::prelude::{HS256Key, HeaderOptions, MACLike};
    let keys = signing(&spec("k1", 1));
    let public = URL
        .decode(
            serde_json::from_str::<Value>(&keys.jwks_json()).unwrap()["keys"][0]["x"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    // Through jwt-simple, with the raw key and with its JWKS text as the "secret".
    for secret in [public.clone(), keys.jwks_json().into_bytes()] {
        let mac = HS256Key::from_bytes(&secret).with_key_id("k1");
        let claims =
            jwt_simple::prelude::Claims::create(jwt_simple::prelude::Duration::from_mins(5))
                .with_issuer(ISS)
                .with_audience(AUD)
                .with_subject("admin");
        let options = HeaderOptions {
            signature_type: Some("at+jwt".into()),
            content_type: None,
        };
        let token = mac.authenticate_with_options(claims, &options).unwrap();
        assert_eq!(
            keys.verifier().verify_access_token(
                &token,
                &cfg(),
                jwt_simple::prelude::Clock::now_since_epoch().as_secs()
            ),
            Err(VerifyError::AlgorithmNotAllowed)
        );
    }
    // Other algorithms by name, with our claims and an Ed25519 signature by the right key.
    for alg in [
        "HS256", "HS512", "RS256", "PS256", "ES256", "ES256K", "Ed25519", "eddsa", "EDDSA",
        "EdDSA ",
    ] {
        let token = craft(
            1,
            &json!({"alg": alg, "typ": "at+jwt", "kid": "k1"}),
            &access_claims(),
        );
        assert_eq!(
            keys.verifier().verify_access_token(&token, &cfg(), NOW),
            Err(VerifyError::AlgorithmNotAllowed),
            "{alg}"
        );
    }
}

#[test]
fn time_checks_with_leeway() {
    let keys = signing(&spec("k1", 1));
    let v = keys.verifier();
    let t = keys.issue_access_token(&cfg(), "u", NOW).unwrap().token;
    let exp = NOW + 900;
    assert!(v.verify_access_token(&t, &cfg(), exp).is_ok());
    assert!(v.verify_access_token(&t, &cfg(), exp + LEEWAY_SECS).is_ok());
    assert_eq!(
        v.verify_access_token(&t, &cfg(), exp + LEEWAY_SECS + 1),
        Err(VerifyError::Expired)
    );
    assert_eq!(
        v.verify_access_token(&t, &cfg(), exp + 86_400),
        Err(VerifyError::Expired)
    );
    assert!(v.verify_access_token(&t, &cfg(), NOW - LEEWAY_SECS).is_ok());
    assert_eq!(
        v.verify_access_token(&t, &cfg(), NOW - LEEWAY_SECS - 1),
        Err(VerifyError::NotYetValid)
    );
    // nbf later than iat.
    let mut c = access_claims();
    c["nbf"] = json!(NOW + 300);
    let t = craft(1, &header("at+jwt", "k1"), &c);
    assert_eq!(
        v.verify_access_token(&t, &cfg(), NOW + 200),
        Err(VerifyError::NotYetValid)
    );
    assert!(v.verify_access_token(&t, &cfg(), NOW + 270).is_ok());
}

#[test]
fn wrong_issuer_or_audience() {
    let keys = signing(&spec("k1", 1));
    let t = keys.issue_access_token(&cfg(), "u", NOW).unwrap().token;
    let v = keys.verifier();
    let other_iss = AccessTokenConfig::new("https://evil.example", AUD);
    assert_eq!(
        v.verify_access_token(&t, &other_iss, NOW),
        Err(VerifyError::WrongIssuer)
    );
    let other_aud = AccessTokenConfig::new(ISS, "other-api");
    assert_eq!(
        v.verify_access_token(&t, &other_aud, NOW),
        Err(VerifyError::WrongAudience)
    );
    // Audience arrays: accepted when ours is among them.
    let mut c = access_claims();
    c["aud"] = json!(["x", AUD]);
    assert!(
        v.verify_access_token(&craft(1, &header("at+jwt", "k1"), &c), &cfg(), NOW)
            .is_ok()
    );
    c["aud"] = json!(["x", "y"]);
    assert_eq!(
        v.verify_access_token(&craft(1, &header("at+jwt", "k1"), &c), &cfg(), NOW),
        Err(VerifyError::WrongAudience)
    );
}

#[test]
fn required_claims_and_subject_shape() {
    let v = signing(&spec("k1", 1)).verifier();
    for (claim, want) in [
        ("exp", VerifyError::MissingClaim("exp")),
        ("iat", VerifyError::MissingClaim("iat")),
        ("jti", VerifyError::MissingClaim("jti")),
        ("sub", VerifyError::MissingClaim("sub")),
        ("iss", VerifyError::WrongIssuer),
        ("aud", VerifyError::WrongAudience),
    ] {
        let mut c = access_claims();
        c.as_object_mut().unwrap().remove(claim);
        let t = craft(1, &header("at+jwt", "k1"), &c);
        assert_eq!(
            v.verify_access_token(&t, &cfg(), NOW),
            Err(want),
            "without {claim}"
        );
    }
    for (sub, want) in [
        (json!(""), Err(VerifyError::InvalidSubject)),
        (json!("service:customer"), Err(VerifyError::InvalidSubject)),
        (json!(42), Err(VerifyError::Malformed)),
    ] {
        let mut c = access_claims();
        c["sub"] = sub;
        let t = craft(1, &header("at+jwt", "k1"), &c);
        assert_eq!(v.verify_access_token(&t, &cfg(), NOW).map(|_| ()), want);
    }
    // nbf is optional.
    let mut c = access_claims();
    c.as_object_mut().unwrap().remove("nbf");
    let claims = v
        .verify_access_token(&craft(1, &header("at+jwt", "k1"), &c), &cfg(), NOW)
        .unwrap();
    assert_eq!(claims.not_before, None);
}

#[test]
fn header_checks() {
    let v = signing(&spec("k1", 1)).verifier();
    let c = access_claims();
    let cases = [
        (json!({"alg": "EdDSA", "kid": "k1"}), VerifyError::WrongType),
        (
            json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}),
            VerifyError::WrongType,
        ),
        (
            json!({"alg": "EdDSA", "typ": "service+jwt", "kid": "k1"}),
            VerifyError::WrongType,
        ),
        (
            json!({"alg": "EdDSA", "typ": "application/at+jwt", "kid": "k1"}),
            VerifyError::WrongType,
        ),
        (
            json!({"alg": "EdDSA", "typ": "at+jwt"}),
            VerifyError::MissingKid,
        ),
        (
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": ""}),
            VerifyError::MissingKid,
        ),
        (
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k9"}),
            VerifyError::UnknownKid,
        ),
        (
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k1", "crit": ["exp"]}),
            VerifyError::Malformed,
        ),
        (
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": 1}),
            VerifyError::Malformed,
        ),
    ];
    for (h, want) in cases {
        assert_eq!(
            v.verify_access_token(&craft(1, &h, &c), &cfg(), NOW),
            Err(want),
            "{h}"
        );
    }
    // typ is compared case-insensitively (media types are).
    let upper = json!({"alg": "EdDSA", "typ": "AT+JWT", "kid": "k1"});
    assert!(
        v.verify_access_token(&craft(1, &upper, &c), &cfg(), NOW)
            .is_ok()
    );
    // A header `jwk` or `jku` never supplies the key: it still comes from our set by kid.
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": KAT_X});
    for (extra, want) in [
        (
            json!({"jwk": jwk.to_string(), "jku": "https://evil.example/jwks"}),
            VerifyError::BadSignature,
        ),
        (json!({"jwk": jwk}), VerifyError::Malformed),
    ] {
        let mut h = header("at+jwt", "k1");
        h.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let forged = craft(42, &h, &c);
        assert_eq!(
            v.verify_access_token(&forged, &cfg(), NOW),
            Err(want),
            "{h}"
        );
    }
}

#[test]
fn tampering_and_truncation() {
    let keys = signing(&spec("k1", 1));
    let v = keys.verifier();
    let t = keys
        .issue_access_token(&cfg(), "user-1", NOW)
        .unwrap()
        .token;
    // Swap in other claims, keep the signature.
    let parts: Vec<&str> = t.split('.').collect();
    let mut c = decode_part(&t, 1);
    c["sub"] = json!("user-2");
    let swapped = format!("{}.{}.{}", parts[0], json_part(&c), parts[2]);
    assert_eq!(
        v.verify_access_token(&swapped, &cfg(), NOW),
        Err(VerifyError::BadSignature)
    );
    // Every proper prefix fails.
    for len in 0..t.len() {
        assert!(
            v.verify_access_token(&t[..len], &cfg(), NOW).is_err(),
            "prefix {len}"
        );
    }
    // Flipping any character of the signature fails.
    let sig_start = t.rfind('.').unwrap() + 1;
    for i in sig_start..t.len() {
        let mut b = t.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(b).unwrap();
        assert!(
            v.verify_access_token(&forged, &cfg(), NOW).is_err(),
            "position {i}"
        );
    }
    // Extra parts, whitespace.
    for bad in [
        format!("{t}."),
        format!("{t}.x"),
        format!(" {t}"),
        format!("{t}\n"),
    ] {
        assert!(v.verify_access_token(&bad, &cfg(), NOW).is_err(), "{bad:?}");
    }
}

#[test]
fn garbage_is_refused() {
    let v = signing(&spec("k1", 1)).verifier();
    let ten_kb = "A".repeat(10 * 1024);
    assert_eq!(
        v.verify_access_token(&ten_kb, &cfg(), NOW),
        Err(VerifyError::TooLong)
    );
    let ten_kb_dots = format!(
        "{}.{}.{}",
        "a".repeat(3000),
        "b".repeat(3000),
        "c".repeat(4200)
    );
    assert_eq!(
        v.verify_access_token(&ten_kb_dots, &cfg(), NOW),
        Err(VerifyError::TooLong)
    );
    let just_under = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(2000),
        "c".repeat(2000)
    );
    assert_eq!(
        v.verify_access_token(&just_under, &cfg(), NOW),
        Err(VerifyError::Malformed)
    );
    for junk in [
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "Bearer x",
        "eyJ.eyJ.sig",
        "\u{0}\u{1}.x.y",
        "é.é.é",
    ] {
        assert!(
            v.verify_access_token(junk, &cfg(), NOW).is_err(),
            "{junk:?}"
        );
    }
    let big_header = format!(
        "{}.{}.AAAA",
        json_part(&json!({"alg": "EdDSA", "pad": "x".repeat(5000)})),
        "e30"
    );
    assert_eq!(
        v.verify_access_token(&big_header, &cfg(), NOW),
        Err(VerifyError::Malformed)
    );
}

// ---- service tokens --------------------------------------------------------------------------

#[test]
fn service_token_round_trip() {
    let customer = signing(&spec("c1", 7));
    let issued = customer.issue_service_token("customer", NOW).unwrap();
    assert_eq!(issued.expires_in, 60);
    let h = decode_part(&issued.token, 0);
    assert_eq!(
        (h["typ"].as_str(), h["kid"].as_str()),
        (Some("service+jwt"), Some("c1"))
    );
    let c = decode_part(&issued.token, 1);
    assert_eq!(
        (c["sub"].as_str(), c["iss"].as_str()),
        (Some("service:customer"), Some("service:customer"))
    );
    assert_eq!(c["aud"], "auth");
    let claims = trusted()
        .verify_service_token(&issued.token, NOW + 5)
        .unwrap();
    assert_eq!(
        claims,
        ServiceClaims {
            service: "customer".into(),
            issued_at: NOW,
            expires_at: NOW + 60,
            jti: issued.jti,
            kid: "c1".into()
        }
    );
    assert_eq!(
        trusted().verify_service_token(&issued.token, NOW + 91),
        Err(VerifyError::Expired)
    );
    assert!(
        trusted()
            .verify_service_token(&issued.token, NOW + 90)
            .is_ok()
    );
}

#[test]
fn trusted_entries_round_trip_for_the_admin_tool() {
    let customer = signing(&format!("{},{}", spec("c2", 9), spec("c1", 7)));
    let var = customer.trusted_service_entries("customer");
    assert!(var.starts_with("customer:c2:") && var.contains(",customer:c1:"));
    let trusted = TrustedServiceKeys::parse(&var).unwrap();
    let t = customer.issue_service_token("customer", NOW).unwrap().token;
    assert_eq!(trusted.verify_service_token(&t, NOW).unwrap().kid, "c2");
    assert_eq!(trusted.services(), ["customer"]);
}

#[test]
fn a_service_key_vouches_only_for_its_own_service() {
    let billing_key = signing(&spec("b1", 8));
    // billing's key minting a customer token: issuer check fails first.
    let as_customer = billing_key
        .issue_service_token("customer", NOW)
        .unwrap()
        .token;
    assert_eq!(
        trusted().verify_service_token(&as_customer, NOW),
        Err(VerifyError::WrongIssuer)
    );
    // Crafted with billing's iss but customer's sub.
    let mut c = service_claims("billing");
    c["sub"] = json!("service:customer");
    let t = craft(8, &header("service+jwt", "b1"), &c);
    assert_eq!(
        trusted().verify_service_token(&t, NOW),
        Err(VerifyError::InvalidSubject)
    );
    // And its own name is fine.
    let own = billing_key
        .issue_service_token("billing", NOW)
        .unwrap()
        .token;
    assert_eq!(
        trusted().verify_service_token(&own, NOW).unwrap().service,
        "billing"
    );
}

#[test]
fn service_token_lifetime_and_audience() {
    let h = header("service+jwt", "c1");
    let mut c = service_claims("customer");
    c["exp"] = json!(NOW + 61);
    assert_eq!(
        trusted().verify_service_token(&craft(7, &h, &c), NOW),
        Err(VerifyError::LifetimeTooLong)
    );
    c["exp"] = json!(NOW + 3600);
    assert_eq!(
        trusted().verify_service_token(&craft(7, &h, &c), NOW),
        Err(VerifyError::LifetimeTooLong)
    );
    let mut c = service_claims("customer");
    c["aud"] = json!("customer");
    assert_eq!(
        trusted().verify_service_token(&craft(7, &h, &c), NOW),
        Err(VerifyError::WrongAudience)
    );
    let mut c = service_claims("customer");
    c["iat"] = json!(NOW + 600);
    c["exp"] = json!(NOW + 630);
    assert_eq!(
        trusted().verify_service_token(&craft(7, &h, &c), NOW),
        Err(VerifyError::NotYetValid)
    );
    let wrong_key = signing(&spec("c1", 99))
        .issue_service_token("customer", NOW)
        .unwrap()
        .token;
    assert_eq!(
        trusted().verify_service_token(&wrong_key, NOW),
        Err(VerifyError::BadSignature)
    );
    let unknown = signing(&spec("zz", 7))
        .issue_service_token("customer", NOW)
        .unwrap()
        .token;
    assert_eq!(
        trusted().verify_service_token(&unknown, NOW),
        Err(VerifyError::UnknownKid)
    );
}

#[test]
fn one_kind_is_never_the_other() {
    // Even when the same key is trusted on both sides (a misconfiguration), the kinds differ.
    let shared = signing(&spec("c1", 7));
    let access_verifier = shared.verifier();
    let service_token = shared.issue_service_token("customer", NOW).unwrap().token;
    assert_eq!(
        access_verifier.verify_access_token(&service_token, &cfg(), NOW),
        Err(VerifyError::WrongType)
    );
    let access_token = shared
        .issue_access_token(&cfg(), "user-1", NOW)
        .unwrap()
        .token;
    assert_eq!(
        trusted().verify_service_token(&access_token, NOW),
        Err(VerifyError::WrongType)
    );
    // Same claims relabelled with the other typ, validly signed: the subject shape still refuses.
    let as_access = craft(7, &header("at+jwt", "c1"), &{
        let mut c = service_claims("customer");
        c["iss"] = json!(ISS);
        c["aud"] = json!(AUD);
        c
    });
    assert_eq!(
        access_verifier.verify_access_token(&as_access, &cfg(), NOW),
        Err(VerifyError::InvalidSubject)
    );
    let as_service = craft(7, &header("service+jwt", "c1"), &{
        let mut c = access_claims();
        c["iss"] = json!("service:customer");
        c["aud"] = json!("auth");
        c["exp"] = json!(NOW + 60);
        c
    });
    assert_eq!(
        trusted().verify_service_token(&as_service, NOW),
        Err(VerifyError::InvalidSubject)
    );
}

// ---- key configuration -------------------------------------------------------------------------

#[test]
fn signing_keys_parse() {
    let keys = signing(&format!(
        " {} ,\n{}\n",
        spec("k2", 2),
        spec("k1", 1).trim_end_matches('=')
    ));
    assert_eq!(keys.active_kid(), "k2");
    assert_eq!(keys.kids().collect::<Vec<_>>(), ["k2", "k1"]);
    let dbg = format!("{keys:?}");
    assert!(
        dbg.contains("k2") && !dbg.contains(&STD.encode(seed(2))[..10]),
        "{dbg}"
    );
}

#[test]
fn key_config_errors() {
    use KeyConfigError::*;
    let s1 = STD.encode(seed(1));
    let cases: Vec<(String, KeyConfigError)> = vec![
        ("".into(), Empty),
        (" , ".into(), EmptyEntry { index: 1 }),
        (format!("{},", spec("k1", 1)), EmptyEntry { index: 2 }),
        (
            s1.clone(),
            WrongShape {
                index: 1,
                expected: "kid:base64 seed",
            },
        ),
        (format!(":{s1}"), InvalidKid { index: 1 }),
        (format!("{s1}:k1"), InvalidKid { index: 1 }),
        (format!("k.1:{s1}"), InvalidKid { index: 1 }),
        (
            "k1:***".into(),
            InvalidBase64 {
                index: 1,
                kid: "k1".into(),
            },
        ),
        (
            format!("k1:{}", STD.encode([1u8; 31])),
            WrongLength {
                index: 1,
                kid: "k1".into(),
                len: 31,
            },
        ),
        (
            format!("k1:{}", STD.encode([1u8; 64])),
            WrongLength {
                index: 1,
                kid: "k1".into(),
                len: 64,
            },
        ),
        (
            format!("k1:{}", STD.encode([0u8; 32])),
            AllZeroKey {
                index: 1,
                kid: "k1".into(),
            },
        ),
        (
            format!("{},{}", spec("k1", 1), spec("k1", 2)),
            DuplicateKid { kid: "k1".into() },
        ),
        (
            (0..=MAX_KEYS)
                .map(|i| spec(&format!("k{i}"), 1))
                .collect::<Vec<_>>()
                .join(","),
            TooManyKeys,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(SigningKeys::parse(&input).unwrap_err(), want, "{input:?}");
    }
}

#[test]
fn trusted_service_key_errors() {
    use KeyConfigError::*;
    let p = pub_b64(7);
    // The identity point, a small-order point: not acceptable as a public key.
    let weak = STD.encode({
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    });
    let cases: Vec<(String, KeyConfigError)> = vec![
        (
            format!("c1:{p}"),
            WrongShape {
                index: 1,
                expected: "service:kid:base64 public key",
            },
        ),
        (format!("cust omer:c1:{p}"), InvalidServiceName { index: 1 }),
        (format!(":c1:{p}"), InvalidServiceName { index: 1 }),
        (format!("customer::{p}"), InvalidKid { index: 1 }),
        (
            format!("customer:c1:{p}:x"),
            InvalidBase64 {
                index: 1,
                kid: "c1".into(),
            },
        ),
        (
            format!("customer:c1:{weak}"),
            InvalidPublicKey {
                index: 1,
                kid: "c1".into(),
            },
        ),
        (
            format!("customer:c1:{p},billing:c1:{}", pub_b64(8)),
            DuplicateKid { kid: "c1".into() },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            TrustedServiceKeys::parse(&input).unwrap_err(),
            want,
            "{input:?}"
        );
    }
    let dbg = format!("{:?}", trusted());
    assert!(
        dbg.contains("customer:c1") && !dbg.contains(&p[..10]),
        "{dbg}"
    );
}

#[test]
fn key_errors_never_contain_key_material() {
    let s = STD.encode(seed(5));
    let inputs = [
        s.clone(),
        format!("{s}:k1"),
        format!("k1:{s},{s}"),
        format!("k1:{}!", &s[..40]),
        format!("k1:{s},k1:{s}"),
        format!("svc:{s}"),
    ];
    for input in &inputs {
        let errs = [
            SigningKeys::parse(input).err(),
            TrustedServiceKeys::parse(input).err(),
        ];
        for err in errs.into_iter().flatten() {
            for text in [err.to_string(), format!("{err:?}")] {
                for w in s.as_bytes().windows(8) {
                    assert!(!text.contains(std::str::from_utf8(w).unwrap()), "{text}");
                }
            }
        }
    }
}

// ---- JWKS ------------------------------------------------------------------------------------

#[test]
fn jwks_document_shape() {
    let keys = signing(&format!("{},{}", spec("k2", 2), spec("k1", 1)));
    let doc: Value = serde_json::from_str(&keys.jwks_json()).unwrap();
    let list = doc["keys"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for (jwk, kid) in list.iter().zip(["k2", "k1"]) {
        let mut names: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x"]);
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], kid);
        let x = jwk["x"].as_str().unwrap();
        assert_eq!(x.len(), 43);
        assert!(!x.contains(['=', '+', '/']));
    }
    let v = Verifier::from_jwks(&keys.jwks_json()).unwrap();
    assert_eq!(v.kids().collect::<Vec<_>>(), ["k2", "k1"]);
    assert!(!keys.jwks_json().contains(&URL.encode(seed(2))));
}

#[test]
fn jwks_skips_foreign_keys_and_refuses_bad_ones() {
    let good = json!({"kty": "OKP", "crv": "Ed25519", "x": KAT_X, "kid": "ext1", "alg": "EdDSA", "use": "sig"});
    let foreign = [
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r1"}),
        json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "e1"}),
        json!({"kty": "OKP", "crv": "X25519", "x": KAT_X, "kid": "x1"}),
        json!({"kty": "OKP", "crv": "Ed448", "x": "AA", "kid": "x2"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": KAT_X, "kid": "enc", "use": "enc"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": KAT_X, "kid": "alg", "alg": "Ed25519"}),
    ];
    let mut list = foreign.to_vec();
    list.push(good.clone());
    let v = Verifier::from_jwks(&json!({"keys": list}).to_string()).unwrap();
    assert_eq!(v.kids().collect::<Vec<_>>(), ["ext1"]);
    assert!(v.verify_access_token(KAT_JWT, &cfg(), NOW).is_ok());

    use KeyConfigError::*;
    let with = |extra: Value| json!({"keys": [good.clone(), extra]}).to_string();
    let mut private = good.clone();
    private["d"] = json!(URL.encode(seed(42)));
    private["kid"] = json!("p1");
    let weak_x = URL.encode({
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    });
    let cases: Vec<(String, KeyConfigError)> = vec![
        ("".into(), InvalidJwks("not JSON")),
        ("{".into(), InvalidJwks("not JSON")),
        ("[]".into(), InvalidJwks("no keys array")),
        (
            json!({"keys": {}}).to_string(),
            InvalidJwks("no keys array"),
        ),
        (
            json!({"keys": []}).to_string(),
            InvalidJwks("no usable Ed25519 signing key"),
        ),
        (
            json!({"keys": foreign}).to_string(),
            InvalidJwks("no usable Ed25519 signing key"),
        ),
        (
            json!({"keys": [1]}).to_string(),
            InvalidJwks("a key is not an object"),
        ),
        (
            with(private),
            InvalidJwks("a key contains private key material"),
        ),
        (
            with(json!({"kty": "OKP", "crv": "Ed25519", "x": KAT_X})),
            InvalidJwks("an Ed25519 key has no kid"),
        ),
        (
            with(json!({"kty": "OKP", "crv": "Ed25519", "x": KAT_X, "kid": "a.b"})),
            InvalidJwks("an Ed25519 key has an invalid kid"),
        ),
        (
            with(json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "s"})),
            InvalidJwks("an Ed25519 key has an invalid x"),
        ),
        (
            with(json!({"kty": "OKP", "crv": "Ed25519", "kid": "s"})),
            InvalidJwks("an Ed25519 key has an invalid x"),
        ),
        (
            with(json!({"kty": "OKP", "crv": "Ed25519", "x": weak_x, "kid": "w"})),
            InvalidJwks("an Ed25519 key is not a usable public key"),
        ),
        (with(good.clone()), DuplicateKid { kid: "ext1".into() }),
        (
            format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(MAX_JWKS_LEN)),
            InvalidJwks("document too large"),
        ),
        (
            json!({"keys": vec![json!({"kty": "RSA"}); MAX_KEYS + 1]}).to_string(),
            TooManyKeys,
        ),
    ];
    for (input, want) in cases {
        let shown = input.chars().take(120).collect::<String>();
        assert_eq!(Verifier::from_jwks(&input).unwrap_err(), want, "{shown}");
    }
}

// ---- refresh tokens --------------------------------------------------------------------------

#[test]
fn refresh_tokens() {
    let a = RefreshToken::generate();
    let b = RefreshToken::generate();
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), REFRESH_TOKEN_LEN);
    assert!(
        a.as_str()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    assert_eq!(URL.decode(a.as_str()).unwrap().len(), 32);
    assert_eq!(RefreshToken::parse(a.as_str()).unwrap(), a);
    assert_eq!(a.hash().len(), 64);
    assert_eq!(a.hash(), RefreshToken::parse(a.as_str()).unwrap().hash());
    assert_ne!(a.hash(), b.hash());
    assert!(a.matches_hash(&a.hash()));
    assert!(!a.matches_hash(&b.hash()));
    assert!(!a.matches_hash(""));
    assert_eq!(format!("{a:?}"), "RefreshToken(<redacted>)");
}

#[test]
fn refresh_token_hash_known_answer() {
    let t = RefreshToken::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
    assert_eq!(
        t.hash(),
        "ea866a757e4c38babfa8127cbe9a409d3e1f93a00ff1488ff735fcf917afffd0"
    );
}

#[test]
fn refresh_token_parse_refuses_junk() {
    let good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    for bad in [
        "",
        &good[..42],
        &format!("{good}A"),
        &format!("{good}="),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+", // standard alphabet
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9", // non-canonical last character
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh.",
        " AECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
    ] {
        assert_eq!(RefreshToken::parse(bad), Err(RefreshTokenError), "{bad:?}");
    }
}

#[test]
fn constant_time_eq_cases() {
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    assert!(!constant_time_eq(b"", b"a"));
}

#[test]
fn types_are_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<SigningKeys>();
    check::<Verifier>();
    check::<TrustedServiceKeys>();
    check::<RefreshToken>();
}

#[test]
fn now_unix_is_plausible() {
    assert!(now_unix() > 1_700_000_000);
}

// ---- properties --------------------------------------------------------------------------------

fn b64_segment() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| URL.encode(b))
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(u64::MAX)),
        Just(json!(NOW)),
        Just(json!("1700000000")),
        Just(Value::Null),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn verify_never_panics_on_arbitrary_strings(s in any::<String>(), now in any::<u64>()) {
        let keys = signing(&spec("k1", 1));
        let _ = keys.verifier().verify_access_token(&s, &cfg(), now);
        let _ = trusted().verify_service_token(&s, now);
    }

    #[test]
    fn verify_never_panics_on_token_shaped_input(
        h in b64_segment(), c in b64_segment(), sig in b64_segment(), now in any::<u64>(),
    ) {
        let t = format!("{h}.{c}.{sig}");
        let _ = signing(&spec("k1", 1)).verifier().verify_access_token(&t, &cfg(), now);
        let _ = trusted().verify_service_token(&t, now);
    }

    /// Validly signed tokens with hostile claim values (huge, negative, fractional times, wrong
    /// types) are refused or accepted, never a panic.
    #[test]
    fn verify_never_panics_on_signed_hostile_claims(
        iat in json_number(), exp in json_number(), nbf in json_number(),
        now in prop_oneof![any::<u64>(), Just(NOW), Just(u64::MAX), Just(0u64)],
        raw_claims in b64_segment(),
    ) {
        let v = signing(&spec("k1", 1)).verifier();
        let mut c = access_claims();
        c["iat"] = iat;
        c["exp"] = exp;
        c["nbf"] = nbf;
        let _ = v.verify_access_token(&craft(1, &header("at+jwt", "k1"), &c), &cfg(), now);
        let h = json_part(&header("at+jwt", "k1"));
        let _ = v.verify_access_token(&craft_raw(1, &h, &raw_claims), &cfg(), now);
        let mut s = service_claims("customer");
        s["iat"] = c["iat"].clone();
        s["exp"] = c["exp"].clone();
        let _ = trusted().verify_service_token(&craft(7, &header("service+jwt", "c1"), &s), now);
    }

    #[test]
    fn access_round_trip_for_any_subject_and_time(
        sub in "[a-zA-Z0-9_@.-]{1,64}", now in 1_000_000_000u64..4_000_000_000,
    ) {
        let keys = signing(&spec("k1", 1));
        let issued = keys.issue_access_token(&cfg(), &sub, now).unwrap();
        let claims = keys.verifier().verify_access_token(&issued.token, &cfg(), now).unwrap();
        prop_assert_eq!(claims.subject, sub);
        prop_assert_eq!(claims.expires_at, now + 900);
    }

    #[test]
    fn key_parsers_never_panic(s in any::<String>()) {
        let _ = SigningKeys::parse(&s);
        let _ = TrustedServiceKeys::parse(&s);
        let _ = Verifier::from_jwks(&s);
    }

    #[test]
    fn refresh_parse_never_panics(s in any::<String>()) {
        let _ = RefreshToken::parse(&s);
    }
}

#[test]
fn signing_keys_verify_like_their_verifier_and_derive_lazily() {
    let keys = signing(&format!("{},{}", spec("new", 2), spec("old", 1)));
    let verifier = keys.verifier();
    let own = keys.issue_access_token(&cfg(), "user-1", NOW).unwrap().token;
    let by_old = craft(1, &header("at+jwt", "old"), &access_claims());
    let unknown = craft(3, &header("at+jwt", "gone"), &access_claims());
    let forged = craft(3, &header("at+jwt", "old"), &access_claims());
    let service = craft(2, &header("service+jwt", "new"), &service_claims("customer"));
    for token in [&own, &by_old, &unknown, &forged, &service, &"not.a.token".to_owned()] {
        assert_eq!(
            keys.verify_access_token(token, &cfg(), NOW).map(|c| c.subject),
            verifier.verify_access_token(token, &cfg(), NOW).map(|c| c.subject),
            "{token}"
        );
    }
    assert_eq!(keys.verify_access_token(&by_old, &cfg(), NOW).unwrap().subject, "user-1");
    assert!(matches!(keys.verify_access_token(&unknown, &cfg(), NOW), Err(VerifyError::UnknownKid)));
    assert!(matches!(keys.verify_access_token(&service, &cfg(), NOW), Err(VerifyError::WrongType)));
    // The lazily derived public key is the seed's (independent vector).
    let kat = signing(&format!("ext1:{KAT_SEED}"));
    assert_eq!(kat.trusted_service_entries("customer"), format!("customer:ext1:{KAT_PUB}"));
    assert_eq!(kat.verify_access_token(KAT_JWT, &cfg(), NOW + 1).unwrap().subject, "user-1");
}

#[test]
fn the_active_key_fingerprint_names_kid_and_seed_and_reveals_neither_seed_nor_public_key() {
    let a = signing(&spec("k1", 1)).active_key_fingerprint();
    assert!(a.starts_with("k1.") && a.len() == 3 + 16, "{a}");
    assert_eq!(a, signing(&format!("{},{}", spec("k1", 1), spec("k2", 2))).active_key_fingerprint());
    assert_ne!(a, signing(&spec("k1", 2)).active_key_fingerprint(), "same kid, other seed");
    assert_ne!(a, signing(&spec("k9", 1)).active_key_fingerprint(), "other kid");
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(!a.contains(&hex(&seed(1))[..16]));
    assert!(!a.contains(&hex(&STD.decode(pub_b64(1)).unwrap())[..16]));
}

// ---- the signature check against jwt-simple's own verification ------------------------------

/// The claims both checks read: subject, issuer, issued at, expiry, not before, token id.
type ClaimsRead = (String, String, u64, u64, Option<u64>, String);

/// What this crate said of `token` before it checked signatures with ed25519-dalek: the header
/// checks, then jwt-simple's `verify_token` with the options it used (the oracle of the
/// differential test below), mapped to the same outcome: the claims we read, or the refusal.
fn jwt_simple_verdict(token: &str, n: u8, typ: &str, issuer: &str, audience: &str, now: u64) -> Result<ClaimsRead, VerifyError> {
    use std::collections::HashSet;

    use jwt_simple::JWTError;
    use jwt_simple::prelude::{Duration, Ed25519PublicKey, EdDSAPublicKeyLike, NoCustomClaims, VerificationOptions};

    if crate::jwt::precheck(token, typ)? != "k1" {
        return Err(VerifyError::UnknownKid);
    }
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed(n)));
    let key = Ed25519PublicKey::from_bytes(&kp.pk[..]).unwrap();
    let options = VerificationOptions {
        required_signature_type: Some(typ.to_owned()),
        required_key_id: Some("k1".to_owned()),
        allowed_issuers: Some(HashSet::from([issuer.to_owned()])),
        allowed_audiences: Some(HashSet::from([audience.to_owned()])),
        time_tolerance: Some(Duration::from_secs(LEEWAY_SECS)),
        artificial_time: Some(Duration::from_secs(now.min(u32::MAX as u64 - 2 * 86_400))),
        max_token_length: Some(MAX_TOKEN_LEN),
        accept_future: false,
        ..VerificationOptions::default()
    };
    let claims = key.verify_token::<NoCustomClaims>(token, Some(options)).map_err(|err| match err.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature) => VerifyError::BadSignature,
        Some(JWTError::TokenHasExpired) => VerifyError::Expired,
        Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => VerifyError::NotYetValid,
        Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => VerifyError::WrongIssuer,
        Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => VerifyError::WrongAudience,
        Some(JWTError::RequiredSignatureTypeMismatch | JWTError::NotJWT) => VerifyError::WrongType,
        _ => VerifyError::Malformed,
    })?;
    let exp = claims.expires_at.ok_or(VerifyError::MissingClaim("exp"))?.as_secs();
    let iat = claims.issued_at.ok_or(VerifyError::MissingClaim("iat"))?.as_secs();
    let jti = claims.jwt_id.filter(|j| !j.is_empty()).ok_or(VerifyError::MissingClaim("jti"))?;
    let sub = claims.subject.ok_or(VerifyError::MissingClaim("sub"))?;
    let iss = claims.issuer.ok_or(VerifyError::WrongIssuer)?;
    Ok((sub, iss, iat, exp, claims.invalid_before.map(|t| t.as_secs()), jti))
}

/// A time claim around `center` (mostly), or absent, odd, or of the wrong type.
fn claim_time(center: u64) -> impl Strategy<Value = Option<Value>> {
    let center = center as i64;
    prop_oneof![
        8 => (-40i64..40).prop_map(move |d| Some(json!(center + d))),
        2 => (-2_000i64..2_000).prop_map(move |d| Some(json!(center + d))),
        1 => Just(None),
        1 => any::<u32>().prop_map(|t| Some(json!(t))),
        1 => Just(Some(json!(NOW as f64 + 0.5))),
        1 => Just(Some(json!(-1))),
        1 => Just(Some(json!("1700000000"))),
    ]
}

/// `good` (mostly), or absent, another value, a list with or without it, or a wrong type.
fn claim_text(good: &'static str) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        16 => Just(Some(json!(good))),
        1 => Just(None),
        1 => Just(Some(json!(format!("{good}x")))),
        1 => Just(Some(json!(good.to_uppercase()))),
        1 => Just(Some(json!([good]))),
        1 => Just(Some(json!(["other", good]))),
        1 => Just(Some(json!(["other"]))),
        1 => Just(Some(json!(7))),
        1 => Just(Some(Value::Null)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The ed25519-dalek signature check plus our claim checks give exactly jwt-simple's verdict
    /// on every token: accepted with the same claims, or refused for the same reason.
    #[test]
    fn verification_gives_jwt_simple_s_verdict(
        typ in prop_oneof![8 => Just("at+jwt"), 1 => Just("AT+JWT"), 1 => Just("service+jwt"), 1 => Just("jwt")],
        crit in prop_oneof![16 => Just(None), 1 => Just(Some(json!([]))), 1 => Just(Some(json!(["exp"])))],
        iss in claim_text(ISS), aud in claim_text(AUD), sub in claim_text("user-1"), jti in claim_text("j1"),
        iat in claim_time(NOW), nbf in claim_time(NOW), exp in claim_time(NOW + 900),
        signer in prop_oneof![6 => Just(1u8), 1 => Just(2u8)],
        tamper in prop_oneof![6 => Just(None), 1 => (0usize..86).prop_map(Some)],
        now in prop_oneof![4 => Just(NOW), 4 => NOW - 100..NOW + 1_100, 1 => any::<u64>()],
    ) {
        let mut h = header(typ, "k1");
        if let Some(crit) = crit {
            h["crit"] = crit;
        }
        let mut c = json!({});
        for (name, value) in [("iss", iss), ("aud", aud), ("sub", sub), ("jti", jti), ("iat", iat), ("nbf", nbf), ("exp", exp)] {
            if let Some(value) = value {
                c[name] = value;
            }
        }
        let mut token = craft(signer, &h, &c);
        if let Some(i) = tamper {
            // Another valid base64url character somewhere in the signature.
            let at = token.rfind('.').unwrap() + 1 + i;
            let mut bytes = token.into_bytes();
            bytes[at] = if bytes[at] == b'Q' { b'g' } else { b'Q' };
            token = String::from_utf8(bytes).unwrap();
        }
        let ours = signing(&spec("k1", 1)).verifier().verify_access_token(&token, &cfg(), now)
            .map(|c| (c.subject, c.issuer, c.issued_at, c.expires_at, c.not_before, c.jti));
        let theirs = jwt_simple_verdict(&token, 1, "at+jwt", ISS, AUD, now);
        prop_assert_eq!(ours, theirs, "{}", token);
    }
}

/// y + p (for the y < 19 that have one) is another encoding of a valid y: such keys are refused
/// (jwt-simple refused them; ed25519-dalek alone would decode them), the canonical one is not.
#[test]
fn non_canonical_public_key_encodings_are_refused() {
    let mut decodable = 0;
    for y in 0u8..19 {
        // p = 2^255 - 19: y + p in little-endian is [0xed + y, 0xff x 30, 0x7f].
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xed + y;
        non_canonical[31] = 0x7f;
        let mut canonical = [0u8; 32];
        canonical[0] = y;
        for sign in [0u8, 0x80] {
            let (mut nc, mut c) = (non_canonical, canonical);
            nc[31] |= sign;
            c[31] |= sign;
            let Ok(point) = ed25519_dalek::VerifyingKey::from_bytes(&nc) else { continue };
            decodable += 1;
            let entry = |raw: &[u8; 32]| format!("customer:c1:{}", STD.encode(raw));
            assert!(
                matches!(TrustedServiceKeys::parse(&entry(&nc)), Err(KeyConfigError::InvalidPublicKey { .. })),
                "y = {y} + p, sign {sign:#x}"
            );
            if !point.is_weak() {
                assert!(TrustedServiceKeys::parse(&entry(&c)).is_ok(), "y = {y}, sign {sign:#x}");
            }
        }
    }
    assert!(decodable > 0, "some y + p must decode, or this test checks nothing");
}

// ---- the issuer's two-step check -------------------------------------------------------------

#[test]
fn the_issuer_can_check_claims_first_and_recognize_its_own_tokens_by_digest() {
    let keys = signing(&format!("{},{}", spec("k1", 1), spec("old", 2)));
    let issued = keys.issue_access_token(&cfg(), "user-1", NOW).unwrap();
    let pending = keys.check_access_token_claims(&issued.token, &cfg(), NOW).unwrap();
    assert_eq!(pending.subject(), "user-1");
    assert_eq!(pending.digest(), issued.digest(), "the digest recorded at issuance finds the token");
    assert_eq!(issued.digest().len(), 64);
    let debug = format!("{pending:?}");
    assert!(!debug.contains(&issued.token) && debug.contains("user-1"), "{debug}");
    let recorded = pending.recorded();
    assert_eq!(recorded, keys.verify_access_token(&issued.token, &cfg(), NOW).unwrap());

    // The claim checks all apply before any record is consulted.
    for (token, now, want) in [
        (issued.token.clone(), NOW + 3_600, VerifyError::Expired),
        (craft(1, &header("at+jwt", "gone"), &access_claims()), NOW, VerifyError::UnknownKid),
        (craft(1, &header("service+jwt", "k1"), &access_claims()), NOW, VerifyError::WrongType),
        (craft(1, &header("at+jwt", "k1"), &json!({"iss": ISS, "aud": "other", "sub": "u", "iat": NOW, "exp": NOW + 60, "jti": "j"})), NOW, VerifyError::WrongAudience),
        (craft(1, &header("at+jwt", "k1"), &json!({"iss": ISS, "aud": AUD, "sub": "service:x", "iat": NOW, "exp": NOW + 60, "jti": "j"})), NOW, VerifyError::InvalidSubject),
    ] {
        assert_eq!(keys.check_access_token_claims(&token, &cfg(), now).unwrap_err(), want, "{token}");
    }

    // A token that is not recorded must carry the signature of the key it names.
    let forged = craft(3, &header("at+jwt", "k1"), &access_claims());
    let pending = keys.check_access_token_claims(&forged, &cfg(), NOW).unwrap();
    assert_eq!(pending.verify_signature().unwrap_err(), VerifyError::BadSignature);
    let by_old = craft(2, &header("at+jwt", "old"), &access_claims());
    let pending = keys.check_access_token_claims(&by_old, &cfg(), NOW).unwrap();
    assert_eq!(pending.verify_signature().unwrap().subject, "user-1");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Claims first and then the signature accept exactly the tokens (and claims) that
    /// `verify_access_token` accepts.
    #[test]
    fn claims_then_signature_accepts_what_verification_accepts(
        typ in prop_oneof![4 => Just("at+jwt"), 1 => Just("service+jwt")],
        iss in claim_text(ISS), aud in claim_text(AUD), sub in claim_text("user-1"),
        iat in claim_time(NOW), exp in claim_time(NOW + 900),
        signer in prop_oneof![4 => Just(1u8), 1 => Just(2u8)],
        now in prop_oneof![4 => Just(NOW), 4 => NOW - 100..NOW + 1_100],
    ) {
        let mut c = json!({"jti": "j1"});
        for (name, value) in [("iss", iss), ("aud", aud), ("sub", sub), ("iat", iat), ("exp", exp)] {
            if let Some(value) = value {
                c[name] = value;
            }
        }
        let token = craft(signer, &header(typ, "k1"), &c);
        let keys = signing(&spec("k1", 1));
        let direct = keys.verify_access_token(&token, &cfg(), now).ok();
        let two_steps = keys.check_access_token_claims(&token, &cfg(), now).and_then(|p| p.verify_signature()).ok();
        prop_assert_eq!(direct, two_steps);
    }
}

#[test]
fn the_claimed_subject_is_read_from_any_token_shape_without_checks() {
    let keys = signing(&spec("k1", 1));
    let issued = keys.issue_access_token(&cfg(), "user-1", NOW).unwrap();
    assert_eq!(claimed_subject(&issued.token).as_deref(), Some("user-1"));
    // Forged or expired: the claim is read all the same (this is no verification).
    assert_eq!(claimed_subject(&craft(9, &header("at+jwt", "k1"), &json!({"sub": "someone"}))).as_deref(), Some("someone"));
    for junk in ["", "a.b.c", "x", &format!("{}.{}.", json_part(&json!({})), json_part(&json!({"sub": 5})))] {
        assert_eq!(claimed_subject(junk), None, "{junk:?}");
    }
    assert_eq!(claimed_subject(&format!("a.{}.c", json_part(&json!({"sub": "u"})))).as_deref(), Some("u"));
    assert_eq!(claimed_subject(&"A".repeat(MAX_TOKEN_LEN + 1)), None);
}
