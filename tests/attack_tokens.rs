//! Attack cases, tokens: every forged, expired, misaddressed or malformed bearer token against
//! every authenticated endpoint of both services (real auth and customer on the local host). Each
//! must answer exactly 401 and change nothing in either database or at Stripe. Then the two kinds
//! of token swapped: a service token where a user is expected and a user token where a service is.

#[path = "auth_support.rs"]
mod support;

#[path = "customer_support.rs"]
mod cs;

#[path = "attack_support.rs"]
mod attack;

use attack::{Full, User, access_claims, b64url, db_rows, full, hs256};
use base64::Engine as _;
use cs::Key;
use serde_json::{Value, json};
use support::PASSWORD;

/// (method, path, body) of every endpoint that needs a bearer token, aimed at `victim`.
fn endpoints(victim: &User, victim_sub: &str, price: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        // auth
        ("GET", "/api/v3/users/me".into(), None),
        ("PATCH", "/api/v3/users/me".into(), Some(json!({"name": "Mallory", "email": "mallory@example.org", "current_password": PASSWORD}))),
        ("PUT", "/api/v3/users/me/password".into(), Some(json!({"current_password": PASSWORD, "new_password": "owned-by-mallory-42"}))),
        ("DELETE", "/api/v3/users/me".into(), Some(json!({"password": PASSWORD}))),
        ("GET", format!("/api/v3/users/{}", victim.id), None),
        ("POST", "/api/v3/users/batch".into(), Some(json!({"ids": [victim.id]}))),
        // customer
        ("POST", "/api/v3/customers".into(), Some(json!({"area_ids": [1]}))),
        ("GET", "/api/v3/customers".into(), None),
        ("GET", "/api/v3/customers/me?include=profile".into(), None),
        ("PATCH", "/api/v3/customers/me".into(), Some(json!({"area_ids": [99]}))),
        ("DELETE", "/api/v3/customers/me".into(), None),
        ("GET", format!("/api/v3/customers/{}", victim.id), None),
        ("POST", "/api/v3/customers/me/subscriptions".into(), Some(json!({"price_id": price}))),
        ("GET", "/api/v3/customers/me/subscriptions".into(), None),
        ("PATCH", format!("/api/v3/customers/me/subscriptions/{victim_sub}"), Some(json!({"cancel_at_period_end": true}))),
        ("DELETE", format!("/api/v3/customers/me/subscriptions/{victim_sub}?at_period_end=false"), None),
        ("GET", "/api/v3/customers/me/invoices".into(), None),
        ("POST", "/api/v3/customers/me/setup-intents".into(), None),
        ("GET", "/api/v3/customers/me/payment-method".into(), None),
        ("PUT", "/api/v3/customers/me/payment-method".into(), Some(json!({"payment_method_id": "pm_card_visa"}))),
        ("DELETE", "/api/v3/customers/me/payment-method".into(), None),
        ("POST", "/api/v3/customers/me/portal-sessions".into(), None),
    ]
}

/// A JWT with any header, the given claims and any signature bytes.
fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// Every bad token, named; each carries the victim's id as `sub`.
fn bad_tokens(app: &Full, victim: &User) -> Vec<(&'static str, String)> {
    let now = cs::now();
    let key = &app.auth_key;
    let claims = access_claims(&victim.id);
    let real = key.sign("at+jwt", &claims);
    let real_signature = real.rsplit('.').next().unwrap().to_string();
    let public = base64::engine::general_purpose::STANDARD.decode(key.public_b64()).unwrap();
    let jwks = key.jwks();
    let x = serde_json::from_str::<Value>(&jwks).unwrap()["keys"][0]["x"].as_str().unwrap().to_string();
    let with = |changes: Value| {
        let mut c = claims.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let hs_header = json!({"alg": "HS256", "kid": key.kid, "typ": "at+jwt"});
    let mut padded = claims.clone();
    padded["pad"] = json!("p".repeat(10 * 1024));
    // The attacker's own real token, with the victim's claims spliced in (signature reuse).
    let attacker_sig = real_signature.clone();
    vec![
        ("alg none, no signature", unsigned(&json!({"alg": "none", "kid": key.kid, "typ": "at+jwt"}), &claims, "")),
        ("alg none, the real signature kept", unsigned(&json!({"alg": "none", "kid": key.kid, "typ": "at+jwt"}), &claims, &real_signature)),
        ("alg None", unsigned(&json!({"alg": "None", "typ": "at+jwt"}), &claims, "")),
        ("alg absent", unsigned(&json!({"kid": key.kid, "typ": "at+jwt"}), &claims, &real_signature)),
        ("HS256 keyed with the public key bytes", hs256(&hs_header, &claims, &public)),
        ("HS256 keyed with the JWKS x value", hs256(&hs_header, &claims, x.as_bytes())),
        ("HS256 keyed with the whole JWKS", hs256(&hs_header, &claims, jwks.as_bytes())),
        ("HS256 keyed with the base64 public key", hs256(&hs_header, &claims, key.public_b64().as_bytes())),
        ("unknown kid", Key::generate("kid-nobody-knows").sign("at+jwt", &claims)),
        ("known kid, another key", Key::generate(&key.kid).sign("at+jwt", &claims)),
        ("no kid", unsigned(&json!({"alg": "EdDSA", "typ": "at+jwt"}), &claims, &real_signature)),
        ("expired an hour ago", key.sign("at+jwt", &with(json!({"iat": now - 4500, "nbf": now - 4500, "exp": now - 3600})))),
        ("expired 31 s ago (past the leeway)", key.sign("at+jwt", &with(json!({"iat": now - 931, "nbf": now - 931, "exp": now - 31})))),
        ("not valid for another hour (nbf)", key.sign("at+jwt", &with(json!({"nbf": now + 3600, "exp": now + 4500})))),
        ("issued in the future (iat)", key.sign("at+jwt", &with(json!({"iat": now + 3600, "nbf": now + 3600, "exp": now + 4500})))),
        ("no exp", key.sign("at+jwt", &with(json!({"exp": null})))),
        ("wrong iss", key.sign("at+jwt", &with(json!({"iss": "https://evil.example"})))),
        ("wrong aud (the service audience)", key.sign("at+jwt", &with(json!({"aud": "auth"})))),
        ("aud as a list of others", key.sign("at+jwt", &with(json!({"aud": ["elsewhere", "nowhere"]})))),
        ("typ service+jwt with user claims", key.sign("service+jwt", &claims)),
        ("typ JWT", key.sign("JWT", &claims)),
        ("sub service:customer", key.sign("at+jwt", &with(json!({"sub": "service:customer"})))),
        ("empty sub", key.sign("at+jwt", &with(json!({"sub": ""})))),
        ("signature of another token spliced in", {
            let other = key.sign("at+jwt", &access_claims("someone-else"));
            let parts: Vec<&str> = real.split('.').collect();
            format!("{}.{}.{}", parts[0], parts[1], other.rsplit('.').next().unwrap())
        }),
        ("claims tampered after signing", {
            let parts: Vec<&str> = real.split('.').collect();
            format!("{}.{}.{attacker_sig}", parts[0], b64url(with(json!({"exp": now + 86_400 * 365})).to_string().as_bytes()))
        }),
        ("truncated by 10 characters", real[..real.len() - 10].to_string()),
        ("signature removed", real[..real.rfind('.').unwrap() + 1].to_string()),
        ("two parts", real[..real.rfind('.').unwrap()].to_string()),
        ("four parts", format!("{real}.{real_signature}")),
        ("10 KB token, really signed", key.sign("at+jwt", &padded)),
        ("10 KB of junk", "A".repeat(10 * 1024)),
        ("not base64", "!!!.???.***".into()),
        ("header not JSON", format!("{}.{}.{real_signature}", b64url(b"not json"), real.split('.').nth(1).unwrap())),
    ]
}

#[tokio::test]
async fn forged_expired_misaddressed_and_malformed_tokens_get_401_everywhere_and_change_nothing() {
    let app = full().await;
    let victim = app.user("Victim", "victim@example.org").await;
    app.customer(&victim).await;
    let price = app.stripe.price("1000").await;
    let sub = app.subscribe(&victim, &price).await;
    let sub_id = sub["id"].as_str().unwrap().to_string();

    // Control: a token minted by hand with auth's key is accepted by both (the harness is right).
    let control = app.auth_key.sign("at+jwt", &access_claims(&victim.id));
    assert_eq!(app.send("GET", "/api/v3/users/me", Some(&control), None).await.status, 200);
    assert_eq!(app.send("GET", "/api/v3/customers/me", Some(&control), None).await.status, 200);

    let before = app.snapshot().await;
    let sizes: Vec<usize> = before.iter().map(|(_, rows)| rows.len()).collect();
    // client_auth, tokens, families; customers, areas, subscriptions, events, leases; Stripe.
    assert_eq!(sizes, vec![1, 1, 1, 1, 2, 1, sizes[6], 1, 1, 1], "{before:?}");
    let mut requests = 0;
    for (what, token) in bad_tokens(&app, &victim) {
        for (method, path, body) in endpoints(&victim, &sub_id, &price) {
            let answer = app.send(method, &path, Some(&token), body).await;
            requests += 1;
            assert_eq!(answer.status, 401, "{what}: {method} {path}: {}", answer.text);
            assert_eq!(answer.content_type, "application/problem+json", "{what}: {method} {path}");
            // One code and one challenge for both services.
            assert_eq!(answer.body["code"], "invalid_token", "{what}: {method} {path}: {}", answer.text);
            assert_eq!(answer.www_authenticate.as_deref(), Some(r#"Bearer error="invalid_token""#), "{what}: {method} {path}");
        }
    }
    app.assert_unchanged(&before, "after every bad token").await;
    eprintln!("attack_tokens: {requests} requests with bad tokens, all 401, nothing changed");
    // The victim's own session still works afterwards.
    assert_eq!(app.send("GET", "/api/v3/users/me", Some(&victim.token), None).await.status, 200);
    assert_eq!(app.send("GET", "/api/v3/customers/me", Some(&victim.token), None).await.status, 200);
}

#[tokio::test]
async fn missing_or_non_bearer_credentials_get_401_everywhere() {
    let app = full().await;
    let victim = app.user("Victim", "victim@example.org").await;
    app.customer(&victim).await;
    let before = app.snapshot().await;
    for (method, path, body) in endpoints(&victim, "0190aaaa-0000-4000-8000-000000000000", "price_x") {
        for header in [None, Some("Basic dmljdGltOnB3"), Some("Bearer"), Some("Bearer "), Some("Token abc"), Some(victim.token.as_str())] {
            let mut request = app
                .app
                .client
                .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), app.app.url(&path));
            if let Some(h) = header {
                request = request.header("authorization", h);
            }
            if let Some(b) = &body {
                request = request.header("content-type", "application/json").body(b.to_string());
            }
            let answer = attack::answer(request.send().await.unwrap()).await;
            // Anything but `Bearer <token>` is no token at all, at auth and at customer alike.
            assert_eq!(answer.status, 401, "{method} {path} with {header:?}: {}", answer.text);
            assert_eq!(answer.body["code"], "missing_token", "{method} {path} with {header:?}: {}", answer.text);
            assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"), "{method} {path}: WWW-Authenticate");
        }
    }
    app.assert_unchanged(&before, "without credentials").await;
}

#[tokio::test]
async fn a_service_token_is_not_a_user_token_and_a_user_token_is_not_a_service_token() {
    let app = full().await;
    let victim = app.user("Victim", "victim@example.org").await;
    let attacker = app.user("Mallory", "mallory@example.org").await;
    app.customer(&victim).await;
    app.customer(&attacker).await;
    let before = app.snapshot().await;
    let now = u64::try_from(cs::now()).unwrap();

    // Service tokens where a user is expected. Customer's own key (trusted by auth) and ops (trusted by customer).
    let to_auth = app.customer_service.service_token("customer");
    let to_customer = app.ops.service_token("ops");
    for (path, method, body) in [
        ("/api/v3/users/me", "GET", None),
        ("/api/v3/users/me", "PATCH", Some(json!({"name": "Svc"}))),
        ("/api/v3/users/me/password", "PUT", Some(json!({"current_password": PASSWORD, "new_password": "service-set-this-1"}))),
        ("/api/v3/users/me", "DELETE", Some(json!({"password": PASSWORD}))),
    ] {
        let answer = app.send(method, path, Some(&to_auth), body).await;
        support::assert_problem(&answer, 401, "invalid_token");
    }
    // A service token whose sub names a user instead of a service, signed by a trusted service key.
    let impersonation = app.customer_service.sign(
        "service+jwt",
        &json!({"iss": "service:customer", "sub": victim.id, "aud": "auth", "iat": now, "nbf": now, "exp": now + 60, "jti": "imp-1"}),
    );
    support::assert_problem(&app.send("GET", &format!("/api/v3/users/{}", victim.id), Some(&impersonation), None).await, 401, "invalid_token");
    support::assert_problem(&app.send("GET", "/api/v3/users/me", Some(&impersonation), None).await, 401, "invalid_token");
    // A service token living longer than 60 s, signed by the trusted key.
    let long = app.customer_service.sign(
        "service+jwt",
        &json!({"iss": "service:customer", "sub": "service:customer", "aud": "auth", "iat": now, "nbf": now, "exp": now + 3600, "jti": "long-1"}),
    );
    support::assert_problem(&app.send("GET", &format!("/api/v3/users/{}", victim.id), Some(&long), None).await, 401, "invalid_token");
    // A service claiming to be another service than its key vouches for.
    let other_service = app.customer_service.service_token("billing-admin");
    support::assert_problem(&app.send("GET", &format!("/api/v3/users/{}", victim.id), Some(&other_service), None).await, 401, "invalid_token");

    for (method, path, body) in [
        ("GET", "/api/v3/customers/me", None),
        ("PATCH", "/api/v3/customers/me", Some(json!({"area_ids": [7]}))),
        ("DELETE", "/api/v3/customers/me", None),
        ("POST", "/api/v3/customers", Some(json!({"area_ids": [1]}))),
        ("GET", "/api/v3/customers/me/subscriptions", None),
        ("POST", "/api/v3/customers/me/subscriptions", Some(json!({"price_id": "price_x"}))),
        ("GET", "/api/v3/customers/me/invoices", None),
    ] {
        let answer = app.send(method, path, Some(&to_customer), body).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (403, Some("forbidden")), "{method} {path}: {}", answer.text);
    }
    // Customer does not trust customer's own key (or any key but ops) for its service reads.
    let answer = app.send("GET", &format!("/api/v3/customers/{}", victim.id), Some(&to_auth), None).await;
    assert_eq!(answer.status, 401, "{}", answer.text);

    // User tokens where a service is expected.
    let read = app.send("GET", &format!("/api/v3/users/{}", victim.id), Some(&attacker.token), None).await;
    support::assert_problem(&read, 404, "user_not_found");
    let batch = app.send("POST", "/api/v3/users/batch", Some(&attacker.token), Some(json!({"ids": [victim.id]}))).await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    assert_eq!(batch.body, json!({"users": [], "missing": [victim.id]}));
    let list = app.send("GET", "/api/v3/customers", Some(&attacker.token), None).await;
    assert_eq!((list.status, list.body["code"].as_str()), (403, Some("forbidden")), "{}", list.text);
    let other = app.send("GET", &format!("/api/v3/customers/{}", victim.id), Some(&attacker.token), None).await;
    assert_eq!((other.status, other.body["code"].as_str()), (404, Some("not_found")), "{}", other.text);
    app.assert_unchanged(&before, "after swapped token kinds").await;

    // The legitimate uses still work: the ops service reads the victim, auth serves customer's key.
    assert_eq!(app.send("GET", &format!("/api/v3/customers/{}", victim.id), Some(&app.ops.service_token("ops")), None).await.status, 200);
    assert_eq!(app.send("GET", &format!("/api/v3/users/{}", victim.id), Some(&app.customer_service.service_token("customer")), None).await.status, 200);
}

/// GET /users/me takes an access token that auth recorded when it issued it (the SHA-256 kept
/// with the refresh token issued alongside) without checking its signature. What that record
/// is worth, at the real database: it vouches for exactly that token and that user; a token
/// without one (a forgery, or issued before migration 6) must carry a valid signature.
#[tokio::test]
async fn a_record_of_auth_vouches_only_for_its_own_token_and_user() {
    use mysql_async::prelude::Queryable as _;
    let app = full().await;
    let ada = app.user("Ada", "ada@example.org").await;
    let bob = app.user("Bob", "bob@example.org").await;
    let db = &app.app.auth_db;
    let exec = |sql: String| async move {
        let mut conn = db.connect().await.expect("auth database");
        conn.query_drop(sql).await.expect("statement");
    };
    let records_of = |token: &str| format!("SELECT COUNT(*) FROM refresh_tokens WHERE access_token_hash = SHA2('{token}', 256)");
    // Test-only SQL with our own values spliced in: tokens are base64url and dots, ids UUIDs.
    let record_for_ada = |token: &str| {
        format!(
            "UPDATE refresh_tokens t JOIN refresh_token_families f ON f.id = t.family_id \
             SET t.access_token_hash = SHA2('{token}', 256) WHERE f.user_id = '{}'",
            ada.id
        )
    };

    assert_eq!(db_rows(db, &records_of(&ada.token)).await, vec![vec!["1".to_string()]], "recorded at issuance");
    assert_eq!(app.send("GET", "/api/v3/users/me", Some(&ada.token), None).await.body["user"]["id"], ada.id);

    // Known kid, another key: refused, as before.
    let forger = Key::generate(&app.auth_key.kid);
    let forged = forger.sign("at+jwt", &access_claims(&ada.id));
    assert_eq!(app.send("GET", "/api/v3/users/me", Some(&forged), None).await.status, 401);
    // Written where only auth writes, its record makes it auth's own token...
    exec(record_for_ada(&forged)).await;
    assert_eq!(app.send("GET", "/api/v3/users/me", Some(&forged), None).await.body["user"]["id"], ada.id);
    // ...for Ada only: Ada's record of a token naming Bob vouches for nothing.
    let forged_for_bob = forger.sign("at+jwt", &access_claims(&bob.id));
    exec(record_for_ada(&forged_for_bob)).await;
    assert_eq!(app.send("GET", "/api/v3/users/me", Some(&forged_for_bob), None).await.status, 401);
    // The claims still count: a recorded token past its expiry is refused.
    let mut stale = access_claims(&ada.id);
    stale["exp"] = json!(cs::now() - 3_600);
    let stale = app.auth_key.sign("at+jwt", &stale);
    exec(record_for_ada(&stale)).await;
    assert_eq!(app.send("GET", "/api/v3/users/me", Some(&stale), None).await.status, 401);

    // No records at all (tokens issued before migration 6): real tokens are verified and pass.
    exec("UPDATE refresh_tokens SET access_token_hash = NULL".into()).await;
    for user in [&ada, &bob] {
        assert_eq!(app.send("GET", "/api/v3/users/me", Some(&user.token), None).await.body["user"]["id"], user.id);
    }
}
