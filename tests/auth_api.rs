//! The auth API end to end: the real auth.wasm on the local host against MariaDB, one fresh
//! database per test. Every endpoint and every error the issue lists.

#[path = "auth_support.rs"]
mod support;

use serde_json::{Value, json};
use support::*;

fn is_rfc3339_utc(value: &Value) -> bool {
    let s = value.as_str().unwrap_or_default();
    s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn register_returns_the_session_and_stores_only_sealed_data() {
    let app = app().await;
    let answer = post(&app, "/api/v3/auth/register", json!({"name": "  Ada Lovelace ", "email": " Ada@Example.ORG ", "password": PASSWORD, "extra": [1, 2]})).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    let session = answer.body;
    let user = &session["user"];
    let id = user["id"].as_str().expect("id");
    assert_eq!(answer.location.as_deref(), Some(format!("/api/v3/users/{id}").as_str()));
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "7", "UUIDv7: {id}");
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["email"], "ada@example.org");
    assert!(is_rfc3339_utc(&user["created_at"]) && is_rfc3339_utc(&user["updated_at"]), "{user}");
    assert_eq!(user["email_verified"], false, "a new account's email is not verified yet");
    assert_eq!(user["mfa_enabled"], false, "no second factor until the user adds one");
    assert_eq!(user.as_object().map(|o| o.len()), Some(7), "no password hash or anything else: {user}");
    assert_eq!(session["token_type"], "Bearer");
    assert_eq!(session["expires_in"], 900);
    assert_eq!(refresh_token(&session).len(), 43);

    let (header, claims) = jwt_parts(&token(&session));
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    assert_eq!(claims["iss"], tokens::ACCESS_TOKEN_ISSUER);
    assert_eq!(claims["aud"], tokens::ACCESS_TOKEN_AUDIENCE);
    assert_eq!(claims["sub"], id);
    assert_eq!(claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"), 900);
    assert!(claims["jti"].is_string());

    // The token verifies against the published JWKS.
    let jwks = send(&app, "GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks.status, 200);
    assert!(jwks.text.contains("\"kty\":\"OKP\"") && !jwks.text.contains("\"d\""));
    let verifier = tokens::Verifier::from_jwks(&jwks.text).expect("jwks");
    let cfg = tokens::AccessTokenConfig::new(tokens::ACCESS_TOKEN_ISSUER, tokens::ACCESS_TOKEN_AUDIENCE);
    verifier.verify_access_token(&token(&session), &cfg, now()).expect("verifies");

    let stored = rows(&app, "SELECT id, name, email_encrypted, email_hash, password_hash, must_reset_password FROM client_auth").await;
    assert_eq!(stored.len(), 1);
    let row = &stored[0];
    // Not the plaintext (a random ciphertext may well contain "ada" by chance: it did once).
    assert!(row[2].starts_with("v1.") && !row[2].contains("example.org"), "sealed: {}", row[2]);
    assert_eq!(row[3].len(), 64);
    assert!(row[4].starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", row[4]);
    assert_eq!(row[5], "0");
    let tokens_rows = rows(&app, "SELECT token_hash FROM refresh_tokens").await;
    assert_eq!(tokens_rows.len(), 1);
    assert_ne!(tokens_rows[0][0], refresh_token(&session), "stored hashed");
    assert_eq!(audit(&app).await, vec![("register".into(), "1".into(), "".into(), id.to_string())]);
}

#[tokio::test]
async fn register_refuses_invalid_fields_and_taken_emails() {
    let app = app().await;
    let answer = post(&app, "/api/v3/auth/register", json!({"name": "", "email": "not-an-email", "password": "short"})).await;
    assert_problem(&answer, 422, "validation_failed");
    let fields: Vec<(String, String)> = answer.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| (e["field"].as_str().unwrap_or("").to_owned(), e["code"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(fields, vec![("name".into(), "required".into()), ("email".into(), "invalid_email".into()), ("password".into(), "too_short".into())]);

    for (password, code) in [("Password1", "too_common"), ("iloveyou12", "too_common"), (&"x".repeat(129) as &str, "too_long")] {
        let answer = post(&app, "/api/v3/auth/register", json!({"name": "A", "email": "a@example.org", "password": password})).await;
        assert_problem(&answer, 422, "validation_failed");
        assert_eq!(answer.body["errors"][0]["field"], "password");
        assert_eq!(answer.body["errors"][0]["code"], code);
    }
    let answer = post(&app, "/api/v3/auth/register", json!({"name": 3, "email": null})).await;
    assert_eq!(answer.body["errors"][0]["code"], "invalid_type", "{}", answer.text);
    assert_eq!(answer.body["errors"][1]["code"], "required", "{}", answer.text);

    register(&app, "Ada", "ada@example.org").await;
    let answer = post(&app, "/api/v3/auth/register", json!({"name": "B", "email": "  ADA@example.org", "password": "different-secret-99"})).await;
    assert_problem(&answer, 409, "email_taken");
    assert_eq!(rows(&app, "SELECT COUNT(*) FROM client_auth").await[0][0], "1");
}

#[tokio::test]
async fn bodies_are_checked_for_size_type_and_syntax() {
    let app = app().await;
    let big = format!("{{\"name\":\"{}\"}}", "a".repeat(70 * 1024));
    assert_problem(&send_raw(&app, "POST", "/api/v3/auth/register", Some("application/json"), big.into_bytes()).await, 413, "payload_too_large");
    // The limit is inclusive: a login of exactly 64 KiB (padded with JSON whitespace) is read and
    // judged on its credentials; one byte more is refused unread.
    let padded = |len: usize| {
        let login = json!({"email": "nobody@example.org", "password": "not-the-password"}).to_string();
        let body = format!("{}{login}", " \n\t\r".chars().cycle().take(len - login.len()).collect::<String>());
        assert_eq!(body.len(), len);
        body.into_bytes()
    };
    assert_problem(&send_raw(&app, "POST", "/api/v3/auth/login", Some("application/json"), padded(65_536)).await, 401, "invalid_credentials");
    assert_problem(&send_raw(&app, "POST", "/api/v3/auth/login", Some("application/json"), padded(65_537)).await, 413, "payload_too_large");
    assert_problem(&send_raw(&app, "POST", "/api/v3/auth/login", Some("text/plain"), b"{}".to_vec()).await, 415, "unsupported_media_type");
    assert_problem(&send_raw(&app, "POST", "/api/v3/auth/login", None, b"{}".to_vec()).await, 415, "unsupported_media_type");
    assert_problem(&send_raw(&app, "POST", "/api/v3/auth/login", Some("application/json"), b"{\"email\":".to_vec()).await, 400, "malformed_json");
    assert_problem(&send_raw(&app, "POST", "/api/v3/auth/login", Some("application/json"), b"[1,2]".to_vec()).await, 400, "invalid_body");
    let ok = send_raw(
        &app,
        "POST",
        "/api/v3/auth/register",
        Some("application/json; charset=utf-8"),
        json!({"name": "A", "email": "a@example.org", "password": PASSWORD, "is_admin": true}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(ok.status, 201, "unknown fields are ignored: {}", ok.text);
    // Routing: unknown paths and methods.
    assert_problem(&send(&app, "GET", "/api/v3/auth/nowhere", None, None).await, 404, "not_found");
    let wrong_method = send(&app, "GET", "/api/v3/auth/login", None, None).await;
    assert_problem(&wrong_method, 405, "method_not_allowed");
    assert_eq!(wrong_method.allow.as_deref(), Some("POST"));
}

#[tokio::test]
async fn login_is_identical_for_unknown_email_and_wrong_password() {
    let app = app().await;
    let session = register(&app, "Ada", "ada@example.org").await;
    let id = user_id(&session);
    let ok = login(&app, " ADA@example.org", PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["user"]["id"], id.as_str());
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_ne!(refresh_token(&ok.body), refresh_token(&session));

    let wrong = login(&app, "ada@example.org", "not-the-password").await;
    let unknown = login(&app, "nobody@example.org", PASSWORD).await;
    assert_problem(&wrong, 401, "invalid_credentials");
    // One identical body, but for each request's own id.
    let without_id = |body: &Value| {
        let mut body = body.clone();
        body.as_object_mut().map(|problem| problem.remove("request_id"));
        body
    };
    assert_ne!(wrong.body["request_id"], unknown.body["request_id"]);
    assert_eq!(without_id(&wrong.body), without_id(&unknown.body), "one identical body");
    assert_eq!((wrong.status, wrong.content_type.clone()), (unknown.status, unknown.content_type.clone()));
    assert_problem(&login(&app, "bad", PASSWORD).await, 422, "validation_failed");
    assert_problem(&post(&app, "/api/v3/auth/login", json!({"email": "ada@example.org"})).await, 422, "validation_failed");

    let events = audit(&app).await;
    assert!(events.contains(&("login".into(), "1".into(), "".into(), id.clone())), "{events:?}");
    assert!(events.contains(&("login".into(), "0".into(), "wrong_password".into(), id.clone())), "{events:?}");
    assert!(events.contains(&("login".into(), "0".into(), "unknown_email".into(), "".into())), "{events:?}");
    // Nothing secret in the audit trail.
    let dump = rows(&app, "SELECT CONCAT_WS('|', actor, COALESCE(subject,''), COALESCE(email_hash,''), client_addr, COALESCE(detail,'')) FROM audit_log").await;
    for row in dump {
        assert!(!row[0].contains("example.org") && !row[0].contains(PASSWORD) && !row[0].contains("not-the-password"), "{row:?}");
    }
}

/// The SHA-256 of `secret` as hex, base64 and base64url: what a careless log might hold instead.
fn sha256_forms(secret: &str) -> [String; 3] {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(secret.as_bytes());
    [
        digest.iter().map(|b| format!("{b:02x}")).collect(),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
    ]
}

#[tokio::test]
async fn the_audit_trail_holds_no_email_password_or_token() {
    // No grace window: a rotated token replayed is reuse.
    let app = app_with(&[("auth_refresh_grace_secs", "0")]).await;
    let (old_email, new_email, unknown_email) = ("Ada.Audit@Example.ORG", "Countess.Trail@Analytical.example", "Ghost.Visitor@Example.net");
    let (new_password, wrong_password) = ("difference-engine-1822", "wrong-Password-77");
    let mut sessions = Vec::new();

    let registered = register(&app, "Ada", old_email).await;
    sessions.push(registered.clone());
    assert_problem(&login(&app, old_email, wrong_password).await, 401, "invalid_credentials");
    assert_problem(&login(&app, unknown_email, PASSWORD).await, 401, "invalid_credentials");
    let signed_in = login(&app, &old_email.to_uppercase(), PASSWORD).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text);
    sessions.push(signed_in.body.clone());
    let rotated = post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(&registered)})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    sessions.push(rotated.body.clone());
    // No window: replayed at once, even within the rotation's second, it is reuse.
    assert_problem(&post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(&registered)})).await, 401, "invalid_refresh_token");

    // The digests below are the service's own: each token it issued is stored under them.
    let stored = rows(&app, "SELECT token_hash, access_token_hash FROM refresh_tokens").await;
    for session in &sessions {
        for (column, secret) in [(0, refresh_token(session)), (1, token(session))] {
            let hex = &sha256_forms(&secret)[0];
            assert!(stored.iter().any(|row| &row[column] == hex), "{hex} in {stored:?}");
        }
    }

    let access = token(&signed_in.body);
    let me = "/api/v3/users/me";
    assert_eq!(send(&app, "PATCH", me, Some(&access), Some(json!({"name": "Countess"}))).await.status, 200);
    assert_problem(&send(&app, "PATCH", me, Some(&access), Some(json!({"email": new_email, "current_password": wrong_password}))).await, 403, "wrong_password");
    let moved = send(&app, "PATCH", me, Some(&access), Some(json!({"email": new_email, "current_password": PASSWORD}))).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(post(&app, "/api/v3/auth/logout", json!({"refresh_token": refresh_token(&signed_in.body)})).await.status, 204);
    let changed = send(&app, "PUT", "/api/v3/users/me/password", Some(&access), Some(json!({"current_password": PASSWORD, "new_password": new_password}))).await;
    assert_eq!(changed.status, 204, "{}", changed.text);
    let deleted = send(&app, "DELETE", me, Some(&access), Some(json!({"password": new_password}))).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);

    // Every flow left its rows, so the check below has something to look at.
    let events: Vec<String> = audit(&app).await.into_iter().map(|e| format!("{}:{}", e.0, e.1)).collect();
    for expected in [
        "register:1", "login:0", "login:1", "refresh:1", "refresh_reuse:0", "profile_change:1", "profile_change:0", "email_change:1",
        "logout:1", "password_change:1", "account_delete:1",
    ] {
        assert!(events.contains(&expected.to_string()), "{expected} in {events:?}");
    }

    // Emails (and their local parts), passwords, tokens and their digests, in any case.
    let mut secrets: Vec<String> = [PASSWORD, new_password, wrong_password].map(String::from).to_vec();
    for email in [old_email, new_email, unknown_email] {
        secrets.push(email.to_string());
        secrets.push(email.split('@').next().expect("local part").to_string());
    }
    for session in &sessions {
        for secret in [token(session), refresh_token(session)] {
            secrets.extend(sha256_forms(&secret));
            // A signature is what makes a token a credential.
            secrets.push(secret.rsplit('.').next().expect("a token").to_string());
            secrets.push(secret);
        }
    }
    let dump = rows(&app, "SELECT * FROM audit_log ORDER BY id").await;
    assert_eq!(dump.len(), events.len());
    for row in &dump {
        for cell in row {
            let cell = cell.to_lowercase();
            for secret in &secrets {
                assert!(!cell.contains(&secret.to_lowercase()), "{secret:?} in the audit row {row:?}");
            }
        }
    }
}

#[tokio::test]
async fn login_is_throttled_per_account_and_per_address() {
    let app = app_with(&[("auth_login_max_failures_per_account", "3"), ("auth_login_max_failures_per_address", "6")]).await;
    register(&app, "Ada", "ada@example.org").await;
    // The address's window opens with its first failure, no earlier than this.
    let first_failure = now();
    for _ in 0..3 {
        assert_problem(&login(&app, "ada@example.org", "wrong-wrong-wrong").await, 401, "invalid_credentials");
    }
    let throttled = login(&app, "ada@example.org", PASSWORD).await;
    assert_problem(&throttled, 429, "too_many_attempts");
    let retry: u64 = throttled.retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((850..=900).contains(&retry), "{retry}");
    // An unknown email is throttled the same way (no enumeration through 429s).
    for _ in 0..3 {
        assert_problem(&login(&app, "ghost@example.org", "whatever-123").await, 401, "invalid_credentials");
    }
    // Six failures from this address now: every login from it is refused for the window.
    let address = login(&app, "someone-else@example.org", "whatever-123").await;
    assert_problem(&address, 429, "too_many_attempts");
    // That account has no failures: the wait is the rest of the address's fixed 900 s window.
    let retry: u64 = address.retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After in whole seconds");
    assert!((1..=900).contains(&retry) && retry + now() >= first_failure + 900, "{retry}");
    assert_eq!(address.body["retry_after"], retry, "{}", address.text);
    let counters = rows(&app, "SELECT scope, failures FROM login_throttle ORDER BY scope, failures").await;
    assert!(counters.contains(&vec!["address".to_string(), "6".to_string()]), "{counters:?}");
    assert!(audit(&app).await.iter().any(|e| e.0 == "login_throttled"));
}

#[tokio::test]
async fn refresh_rotates_and_logout_revokes() {
    let app = app().await;
    let session = register(&app, "Ada", "ada@example.org").await;
    let first = refresh_token(&session);
    let rotated = post(&app, "/api/v3/auth/refresh", json!({"refresh_token": first})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    assert_eq!(rotated.body["user"]["id"], session["user"]["id"]);
    assert_eq!(rotated.body["expires_in"], 900);
    let second = refresh_token(&rotated.body);
    assert_ne!(first, second);
    let chain = rows(&app, "SELECT COUNT(*), COUNT(parent_hash), COUNT(rotated_at) FROM refresh_tokens").await;
    assert_eq!(chain[0], vec!["2", "1", "1"]);

    for junk in [json!({"refresh_token": "nope"}), json!({"refresh_token": "A".repeat(43)})] {
        assert_problem(&post(&app, "/api/v3/auth/refresh", junk).await, 401, "invalid_refresh_token");
    }
    assert_problem(&post(&app, "/api/v3/auth/refresh", json!({})).await, 422, "validation_failed");

    let before_logout = now();
    let logout = post(&app, "/api/v3/auth/logout", json!({"refresh_token": second})).await;
    assert_eq!(logout.status, 204, "{}", logout.text);
    let family = rows(&app, "SELECT revoked_at, COALESCE(revoked_reason, '') FROM refresh_token_families").await;
    assert_eq!(family.len(), 1, "{family:?}");
    let revoked_at: u64 = family[0][0].parse().unwrap_or_else(|_| panic!("the family is revoked: {family:?}"));
    assert!((before_logout..=now()).contains(&revoked_at), "{family:?}");
    assert_eq!(family[0][1], "logout");
    assert_problem(&post(&app, "/api/v3/auth/refresh", json!({"refresh_token": second})).await, 401, "invalid_refresh_token");
    // The predecessor, replayed well within the grace window (10 s by default) that would
    // otherwise give it a sibling, is refused too: the whole family is gone.
    assert_problem(&post(&app, "/api/v3/auth/refresh", json!({"refresh_token": first})).await, 401, "invalid_refresh_token");
    assert_eq!(rows(&app, "SELECT COUNT(*) FROM refresh_tokens").await[0][0], "2", "no token issued after the logout");
    let refused: Vec<_> = audit(&app).await.into_iter().filter(|e| e.0 == "refresh" && e.1 == "0" && e.2 == "revoked").collect();
    assert_eq!(refused.len(), 2, "both refused because the family is revoked: {refused:?}");
    // Logging out again, or with a token we never issued, is quiet.
    assert_eq!(post(&app, "/api/v3/auth/logout", json!({"refresh_token": second})).await.status, 204);
    assert_eq!(post(&app, "/api/v3/auth/logout", json!({"refresh_token": "x"})).await.status, 204);
    assert!(audit(&app).await.iter().any(|e| e.0 == "logout"));
}

#[tokio::test]
async fn logout_scopes_end_this_session_the_others_or_all() {
    let app = app().await;
    let first = register(&app, "Ada", "ada@example.org").await;
    let sign_in = || async { login(&app, "ada@example.org", PASSWORD).await.body };
    let (laptop, phone, tablet) = (refresh_token(&first), refresh_token(&sign_in().await), refresh_token(&sign_in().await));
    let alive = |token: String| {
        let app = &app;
        async move {
            let answer = post(app, "/api/v3/auth/refresh", json!({"refresh_token": token})).await;
            (answer.status == 200).then(|| refresh_token(&answer.body))
        }
    };
    let invalid = post(&app, "/api/v3/auth/logout", json!({"refresh_token": phone, "scope": "everywhere"})).await;
    assert_problem(&invalid, 422, "validation_failed");
    assert_eq!((invalid.body["errors"][0]["field"].as_str(), invalid.body["errors"][0]["code"].as_str()), (Some("scope"), Some("invalid_value")));
    assert_problem(&post(&app, "/api/v3/auth/logout", json!({"refresh_token": phone, "scope": 1})).await, 422, "validation_failed");

    // Sign out everywhere else, from the phone: the laptop and the tablet are out, the phone stays.
    assert_eq!(post(&app, "/api/v3/auth/logout", json!({"refresh_token": phone, "scope": "others"})).await.status, 204);
    assert_eq!(alive(laptop.clone()).await, None);
    assert_eq!(alive(tablet).await, None);
    let phone = alive(phone).await.expect("the phone's session stays");
    let reasons = rows(&app, "SELECT COALESCE(revoked_reason, 'live'), COUNT(*) FROM refresh_token_families GROUP BY 1 ORDER BY 1").await;
    assert_eq!(reasons, vec![vec!["live".to_string(), "1".to_string()], vec!["logout_others".to_string(), "2".to_string()]]);

    // A stale token (the laptop's, already revoked) ends nothing more; "all" from a current one ends every session.
    let desktop = refresh_token(&sign_in().await);
    assert_eq!(post(&app, "/api/v3/auth/logout", json!({"refresh_token": laptop, "scope": "all"})).await.status, 204);
    assert!(alive(desktop).await.is_some(), "a revoked token signs nobody out");
    assert_eq!(post(&app, "/api/v3/auth/logout", json!({"refresh_token": phone, "scope": "all"})).await.status, 204);
    assert_eq!(rows(&app, "SELECT COUNT(*) FROM refresh_token_families WHERE revoked_at IS NULL").await[0][0], "0", "every session ended");
    let scopes: Vec<Vec<String>> = rows(&app, "SELECT COALESCE(detail, '') FROM audit_log WHERE event = 'logout' ORDER BY id").await;
    assert_eq!(scopes, vec![vec![r#"{"scope":"others"}"#.to_string()], vec![r#"{"scope":"all"}"#.to_string()]]);
}

/// A user sees where they are signed in (when, from which address, with which client) and ends
/// one session by its id, e.g. a lost phone's.
#[tokio::test]
async fn a_user_lists_their_sessions_and_ends_one() {
    let app = app().await;
    let laptop = register(&app, "Ada", "ada@example.org").await;
    let phone = app
        .client
        .post(app.url("/api/v3/auth/login"))
        .header("user-agent", "Ada\tPhone/2.1 (iOS 19)")
        .json(&json!({"email": "ada@example.org", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let phone = answer(phone).await;
    assert_eq!(phone.status, 200, "{}", phone.body);
    let phone = phone.body;

    let listed = send(&app, "GET", "/api/v3/users/me/sessions", Some(&token(&laptop)), None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let sessions = listed.body["sessions"].as_array().expect("a list").clone();
    assert_eq!(sessions.len(), 2, "{}", listed.body);
    // The phone signed in last: first; the laptop asks: current. Control characters are dropped.
    assert_eq!((&sessions[0]["user_agent"], &sessions[0]["current"]), (&json!("AdaPhone/2.1 (iOS 19)"), &json!(false)));
    assert_eq!(sessions[1]["current"], true);
    assert_eq!(sessions[0]["client_address"], "127.0.0.1");
    for field in ["created_at", "last_used_at", "expires_at"] {
        assert!(is_rfc3339_utc(&sessions[0][field]), "{field}: {}", sessions[0]);
    }

    // The laptop ends the phone's session: the phone's refresh token is refused, the list shrinks.
    let phone_session = sessions[0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/v3/users/me/sessions/{phone_session}");
    assert_eq!(send(&app, "DELETE", &path, Some(&token(&laptop)), None).await.status, 204);
    assert_problem(&post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(&phone)})).await, 401, "invalid_refresh_token");
    let listed = send(&app, "GET", "/api/v3/users/me/sessions", Some(&token(&laptop)), None).await;
    assert_eq!(listed.body["sessions"].as_array().map(Vec::len), Some(1), "{}", listed.body);
    // Ended already, another user's, or no session at all: 404 alike; no token: 401.
    assert_problem(&send(&app, "DELETE", &path, Some(&token(&laptop)), None).await, 404, "session_not_found");
    let grace = register(&app, "Grace", "grace@example.org").await;
    let laptop_session = listed.body["sessions"][0]["id"].as_str().unwrap().to_string();
    assert_problem(&send(&app, "DELETE", &format!("/api/v3/users/me/sessions/{laptop_session}"), Some(&token(&grace)), None).await, 404, "session_not_found");
    assert_problem(&send(&app, "DELETE", "/api/v3/users/me/sessions/nothing", Some(&token(&laptop)), None).await, 404, "session_not_found");
    assert_problem(&send(&app, "GET", "/api/v3/users/me/sessions", None, None).await, 401, "missing_token");
    let revoked = rows(&app, "SELECT revoked_reason FROM refresh_token_families WHERE revoked_at IS NOT NULL").await;
    assert_eq!(revoked, vec![vec!["session_revoked".to_string()]]);
    let audited = rows(&app, "SELECT detail FROM audit_log WHERE event = 'session_revoke'").await;
    assert_eq!(audited, vec![vec![format!(r#"{{"session":"{phone_session}"}}"#)]]);
}

#[tokio::test]
async fn the_signed_in_user_reads_and_changes_its_profile() {
    let app = app().await;
    let session = register(&app, "Ada", "ada@example.org").await;
    register(&app, "Bob", "bob@example.org").await;
    let token = token(&session);
    let me = send(&app, "GET", "/api/v3/users/me", Some(&token), None).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["user"], session["user"]);
    let missing = send(&app, "GET", "/api/v3/users/me", None, None).await;
    assert_problem(&missing, 401, "missing_token");
    assert_eq!(missing.www_authenticate.as_deref(), Some("Bearer"));

    let renamed = send(&app, "PATCH", "/api/v3/users/me", Some(&token), Some(json!({"name": "Countess"}))).await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(renamed.body["user"]["name"], "Countess");
    // A decomposed name (`e` + U+0308, `a` + U+0301) is stored and answered composed (NFC).
    let decomposed = send(&app, "PATCH", "/api/v3/users/me", Some(&token), Some(json!({"name": "Zoe\u{308} Ma\u{301}rquez"}))).await;
    assert_eq!((decomposed.status, decomposed.body["user"]["name"].as_str()), (200, Some("Zo\u{eb} M\u{e1}rquez")), "{}", decomposed.text);
    let stored = rows(&app, "SELECT HEX(name) FROM client_auth WHERE name LIKE 'Zo%'").await;
    assert_eq!(stored, vec![vec!["Zo\u{eb} M\u{e1}rquez".bytes().map(|b| format!("{b:02X}")).collect::<String>()]]);
    let renamed = send(&app, "PATCH", "/api/v3/users/me", Some(&token), Some(json!({"name": "Countess"}))).await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_problem(&send(&app, "PATCH", "/api/v3/users/me", Some(&token), Some(json!({}))).await, 422, "validation_failed");
    let no_password = send(&app, "PATCH", "/api/v3/users/me", Some(&token), Some(json!({"email": "new@example.org"}))).await;
    assert_problem(&no_password, 422, "validation_failed");
    assert_eq!(no_password.body["errors"][0]["field"], "current_password");
    assert_problem(
        &send(&app, "PATCH", "/api/v3/users/me", Some(&token), Some(json!({"email": "new@example.org", "current_password": "wrong-one"}))).await,
        403,
        "wrong_password",
    );
    assert_problem(
        &send(&app, "PATCH", "/api/v3/users/me", Some(&token), Some(json!({"email": "BOB@example.org", "current_password": PASSWORD}))).await,
        409,
        "email_taken",
    );
    let moved = send(&app, "PATCH", "/api/v3/users/me", Some(&token), Some(json!({"email": "New@Example.org", "current_password": PASSWORD}))).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(moved.body["user"]["email"], "new@example.org");
    assert_eq!(login(&app, "new@example.org", PASSWORD).await.status, 200);
    assert_problem(&login(&app, "ada@example.org", PASSWORD).await, 401, "invalid_credentials");
    let events: Vec<String> = audit(&app).await.into_iter().map(|e| format!("{}:{}", e.0, e.1)).collect();
    assert!(events.contains(&"profile_change:1".into()) && events.contains(&"email_change:1".into()), "{events:?}");
}

#[tokio::test]
async fn password_change_revokes_sessions_and_deletion_removes_everything() {
    let app = app().await;
    let session = register(&app, "Ada", "ada@example.org").await;
    let token = token(&session);
    let other = login(&app, "ada@example.org", PASSWORD).await.body;
    let path = "/api/v3/users/me/password";
    assert_problem(&send(&app, "PUT", path, Some(&token), Some(json!({"current_password": "nope", "new_password": "difference-engine-1822"}))).await, 403, "wrong_password");
    assert_problem(&send(&app, "PUT", path, Some(&token), Some(json!({"current_password": PASSWORD, "new_password": "password"}))).await, 422, "validation_failed");
    let changed = send(&app, "PUT", path, Some(&token), Some(json!({"current_password": PASSWORD, "new_password": "difference-engine-1822"}))).await;
    assert_eq!(changed.status, 204, "{}", changed.text);
    for refresh in [refresh_token(&session), refresh_token(&other)] {
        assert_problem(&post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh})).await, 401, "invalid_refresh_token");
    }
    assert_problem(&login(&app, "ada@example.org", PASSWORD).await, 401, "invalid_credentials");
    let fresh = login(&app, "ada@example.org", "difference-engine-1822").await;
    assert_eq!(fresh.status, 200);

    assert_problem(&send(&app, "DELETE", "/api/v3/users/me", Some(&token), Some(json!({"password": PASSWORD}))).await, 403, "wrong_password");
    assert_problem(&send(&app, "DELETE", "/api/v3/users/me", Some(&token), Some(json!({}))).await, 422, "validation_failed");
    let deleted = send(&app, "DELETE", "/api/v3/users/me", Some(&token), Some(json!({"password": "difference-engine-1822"}))).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_eq!(rows(&app, "SELECT (SELECT COUNT(*) FROM client_auth) + (SELECT COUNT(*) FROM refresh_tokens) + (SELECT COUNT(*) FROM refresh_token_families)").await[0][0], "0");
    // The still-unexpired access token of a deleted user is no longer a credential.
    assert_problem(&send(&app, "GET", "/api/v3/users/me", Some(&token), None).await, 401, "invalid_token");
    assert_problem(&post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(&fresh.body)})).await, 401, "invalid_refresh_token");
    assert_problem(&login(&app, "ada@example.org", "difference-engine-1822").await, 401, "invalid_credentials");
    let events: Vec<String> = audit(&app).await.into_iter().map(|e| format!("{}:{}:{}", e.0, e.1, e.2)).collect();
    for expected in ["password_change:0:wrong_password", "password_change:1:", "account_delete:0:wrong_password", "account_delete:1:"] {
        assert!(events.contains(&expected.to_string()), "{expected} in {events:?}");
    }
}

#[tokio::test]
async fn a_login_over_a_hash_of_weaker_parameters_stores_one_of_the_current_parameters() {
    use argon2::password_hash::PasswordHasher as _;
    use mysql_async::prelude::Queryable as _;
    // An account hashed with weaker parameters (an import, or an older release): 4 MiB and one
    // pass. The login verifies it and stores a hash of today's parameters: two argon2 runs of
    // different sizes in one instance, which the component's allocator serves differently
    // (fresh pages for the first, the system allocator for the larger second).
    let app = app().await;
    let id = user_id(&register(&app, "Ada", "ada@example.org").await);
    let weak = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon2::Params::new(4096, 1, 1, None).expect("params"))
        .hash_password_with_salt(PASSWORD.as_bytes(), b"0123456789abcdef")
        .expect("hash")
        .to_string();
    let mut conn = app.auth_db.connect().await.expect("connect");
    conn.exec_drop("UPDATE client_auth SET password_hash = ? WHERE id = ?", (&weak, &id)).await.expect("update");
    drop(conn);

    assert_eq!(login(&app, "ada@example.org", PASSWORD).await.status, 200);
    let stored = rows(&app, "SELECT password_hash FROM client_auth").await;
    assert!(stored[0][0].starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored:?}");
    assert_eq!(login(&app, "ada@example.org", PASSWORD).await.status, 200);
    assert_problem(&login(&app, "ada@example.org", "analytical-engine-1844").await, 401, "invalid_credentials");
}

#[tokio::test]
async fn health_and_jwks() {
    let app = app().await;
    let health = send(&app, "GET", "/api/v3/auth/health", None, None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, json!({"status": "ok", "database": "ok"}));
    let jwks = send(&app, "GET", "/.well-known/jwks.json", None, None).await;
    let keys = jwks.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["use"], "sig");
}

/// Password recovery: the operator's mailer (a service in `password_reset_services`) asks for a
/// token and would email it; the user sets a new password with it, once, and every session ends.
#[tokio::test]
async fn a_reset_token_from_the_mailer_sets_a_new_password_once() {
    let (app, mailer_token) = app_with_mailer(&["auth_password_reset_services"]).await;
    let session = register(&app, "Ada", "ada@example.org").await;
    let customer_token = tokens::SigningKeys::parse(&app.variables["service_token_key"]).expect("key").issue_service_token("customer", now()).expect("token").token;

    // Only the mailer may ask; an unknown email is 404 to it.
    for (who, bearer) in [("customer", customer_token.as_str()), ("the user", token(&session).as_str())] {
        let answer = send(&app, "POST", "/api/v3/users/password-resets", Some(bearer), Some(json!({"email": "ada@example.org"}))).await;
        assert_problem(&answer, 403, "forbidden");
        assert!(answer.body["detail"].is_string(), "{who}");
    }
    let answer = send(&app, "POST", "/api/v3/users/password-resets", None, Some(json!({"email": "ada@example.org"}))).await;
    assert_problem(&answer, 401, "missing_token");
    let answer = send(&app, "POST", "/api/v3/users/password-resets", Some(&mailer_token), Some(json!({"email": "nobody@example.org"}))).await;
    assert_problem(&answer, 404, "user_not_found");
    let issued = send(&app, "POST", "/api/v3/users/password-resets", Some(&mailer_token), Some(json!({"email": " ADA@Example.org"}))).await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    assert_eq!(issued.body["user_id"], session["user"]["id"]);
    assert!(is_rfc3339_utc(&issued.body["expires_at"]), "{}", issued.text);
    let reset_token = issued.body["token"].as_str().expect("token").to_string();
    assert_eq!(reset_token.len(), 43);

    // A weak new password is refused without using the token; then the token sets the password.
    let weak = post(&app, "/api/v3/auth/password-reset", json!({"token": reset_token, "new_password": "password"})).await;
    assert_eq!((weak.status, &weak.body["errors"][0]["field"]), (422, &json!("new_password")), "{}", weak.text);
    let done = post(&app, "/api/v3/auth/password-reset", json!({"token": reset_token, "new_password": "difference-engine-1822"})).await;
    assert_eq!(done.status, 204, "{}", done.text);
    let again = post(&app, "/api/v3/auth/password-reset", json!({"token": reset_token, "new_password": "jacquard-loom-1804"})).await;
    assert_problem(&again, 400, "invalid_reset_token");
    let junk = post(&app, "/api/v3/auth/password-reset", json!({"token": "not-a-token", "new_password": "jacquard-loom-1804"})).await;
    assert_problem(&junk, 400, "invalid_reset_token");

    assert_eq!(login(&app, "ada@example.org", "difference-engine-1822").await.status, 200);
    assert_problem(&login(&app, "ada@example.org", PASSWORD).await, 401, "invalid_credentials");
    let old_session = post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(&session)})).await;
    assert_problem(&old_session, 401, "invalid_refresh_token");
    let reasons = rows(&app, "SELECT DISTINCT revoked_reason FROM refresh_token_families WHERE revoked_at IS NOT NULL").await;
    assert_eq!(reasons, vec![vec!["password_reset".to_string()]]);

    assert_eq!(rows(&app, "SELECT COUNT(*) FROM password_reset_tokens").await, vec![vec!["0".to_string()]], "used tokens are gone");
    let audit = rows(&app, "SELECT event, success, COALESCE(reason, ''), actor FROM audit_log WHERE event LIKE 'password_reset%' ORDER BY id").await;
    let user_actor = format!("user:{}", session["user"]["id"].as_str().expect("id"));
    let expected: Vec<Vec<String>> = [
        ["password_reset_issue", "0", "unknown_email", "service:mailer"],
        ["password_reset_issue", "1", "", "service:mailer"],
        ["password_reset", "1", "", user_actor.as_str()],
        ["password_reset", "0", "invalid_token", "anonymous"],
        ["password_reset", "0", "invalid_token", "anonymous"],
    ]
    .iter()
    .map(|row| row.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(audit, expected);
    let dump = rows(&app, "SELECT CONCAT_WS('|', actor, COALESCE(subject,''), COALESCE(detail,'')) FROM audit_log").await;
    assert!(!format!("{dump:?}").contains(&reset_token), "the token is never written down");
    assert!(!app.host.log().contains(&reset_token), "the token is never logged");

    // A token mailed before a password change does not outlive it.
    let issued = send(&app, "POST", "/api/v3/users/password-resets", Some(&mailer_token), Some(json!({"email": "ada@example.org"}))).await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    let session = login(&app, "ada@example.org", "difference-engine-1822").await.body;
    let changed = send(
        &app,
        "PUT",
        "/api/v3/users/me/password",
        Some(&token(&session)),
        Some(json!({"current_password": "difference-engine-1822", "new_password": "jacquard-loom-1804"})),
    )
    .await;
    assert_eq!(changed.status, 204, "{}", changed.text);
    let stale = post(&app, "/api/v3/auth/password-reset", json!({"token": issued.body["token"], "new_password": "babbage-engine-1837"})).await;
    assert_problem(&stale, 400, "invalid_reset_token");
    assert_eq!(rows(&app, "SELECT COUNT(*) FROM password_reset_tokens").await, vec![vec!["0".to_string()]]);
}

/// Email verification: the operator's mailer (a service in `email_verification_services`)
/// asks for a token for the address and would email it; the link's page posts it, and the user
/// shows `email_verified: true` everywhere it is read, until the email changes.
#[tokio::test]
async fn a_verification_token_mailed_to_the_address_verifies_it() {
    let (app, mailer_token) = app_with_mailer(&["auth_email_verification_services"]).await;
    let session = register(&app, "Ada", "ada@example.org").await;
    assert_eq!(session["user"]["email_verified"], false, "{session}");
    let customer_token = tokens::SigningKeys::parse(&app.variables["service_token_key"]).expect("key").issue_service_token("customer", now()).expect("token").token;
    let ask = |bearer: Option<String>, email: &str| {
        let body = json!({"email": email});
        let app = &app;
        async move { send(app, "POST", "/api/v3/users/email-verifications", bearer.as_deref(), Some(body)).await }
    };

    // Only the mailer may ask (the reset list does not let it: each kind has its own list).
    assert_problem(&ask(Some(customer_token.clone()), "ada@example.org").await, 403, "forbidden");
    assert_problem(&ask(Some(token(&session)), "ada@example.org").await, 403, "forbidden");
    let reset = send(&app, "POST", "/api/v3/users/password-resets", Some(&mailer_token), Some(json!({"email": "ada@example.org"}))).await;
    assert_problem(&reset, 403, "forbidden");
    assert_problem(&ask(Some(mailer_token.clone()), "nobody@example.org").await, 404, "user_not_found");
    let issued = ask(Some(mailer_token.clone()), " ADA@Example.org").await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    assert_eq!(issued.body["user_id"], session["user"]["id"]);
    assert!(is_rfc3339_utc(&issued.body["expires_at"]), "{}", issued.text);
    let verification = issued.body["token"].as_str().expect("token").to_string();

    let junk = post(&app, "/api/v3/auth/email-verification", json!({"token": "not-a-token"})).await;
    assert_problem(&junk, 400, "invalid_verification_token");
    let missing = post(&app, "/api/v3/auth/email-verification", json!({})).await;
    assert_eq!((missing.status, &missing.body["errors"][0]["field"]), (422, &json!("token")), "{}", missing.text);
    let done = post(&app, "/api/v3/auth/email-verification", json!({"token": verification})).await;
    assert_eq!(done.status, 204, "{}", done.text);
    assert_problem(&post(&app, "/api/v3/auth/email-verification", json!({"token": verification})).await, 400, "invalid_verification_token");
    assert_problem(&ask(Some(mailer_token.clone()), "ada@example.org").await, 409, "email_already_verified");

    // Verified wherever the user is read: /users/me, a login, a service's read.
    let me = send(&app, "GET", "/api/v3/users/me", Some(&token(&session)), None).await;
    assert_eq!(me.body["user"]["email_verified"], true, "{}", me.text);
    assert_eq!(login(&app, "ada@example.org", PASSWORD).await.body["user"]["email_verified"], true);
    let id = session["user"]["id"].as_str().expect("id");
    let read = send(&app, "GET", &format!("/api/v3/users/{id}"), Some(&customer_token), None).await;
    assert_eq!(read.body["user"]["email_verified"], true, "{}", read.text);

    // A new email is unverified, and a token mailed to the old address no longer verifies it.
    let stale = ask(Some(mailer_token.clone()), "ada@example.org").await;
    assert_eq!(stale.status, 409);
    let changed = send(
        &app,
        "PATCH",
        "/api/v3/users/me",
        Some(&token(&session)),
        Some(json!({"email": "countess@example.org", "current_password": PASSWORD})),
    )
    .await;
    assert_eq!((changed.status, &changed.body["user"]["email_verified"]), (200, &json!(false)), "{}", changed.text);
    let for_new = ask(Some(mailer_token.clone()), "countess@example.org").await;
    assert_eq!(for_new.status, 201, "{}", for_new.text);
    let changed_back = send(
        &app,
        "PATCH",
        "/api/v3/users/me",
        Some(&token(&session)),
        Some(json!({"email": "ada@example.org", "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(changed_back.status, 200, "{}", changed_back.text);
    let old_link = post(&app, "/api/v3/auth/email-verification", json!({"token": for_new.body["token"]})).await;
    assert_problem(&old_link, 400, "invalid_verification_token");
    assert_eq!(rows(&app, "SELECT COUNT(*) FROM email_verification_tokens").await, vec![vec!["0".to_string()]]);

    let audit = rows(&app, "SELECT event, success, COALESCE(reason, '') FROM audit_log WHERE event LIKE 'email_verif%' ORDER BY id").await;
    let expected: Vec<Vec<String>> = [
        ["email_verification_issue", "0", "unknown_email"],
        ["email_verification_issue", "1", ""],
        ["email_verify", "0", "invalid_token"],
        ["email_verify", "1", ""],
        ["email_verify", "0", "invalid_token"],
        ["email_verification_issue", "1", ""],
        ["email_verify", "0", "invalid_token"],
    ]
    .iter()
    .map(|row| row.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(audit, expected);
    assert!(!app.host.log().contains(&verification), "the token is never logged");
}

/// The code an authenticator app shows for `secret` (base32) at Unix time `at`, computed by
/// another implementation of RFC 6238 than auth's.
/// A second factor, as Supabase's and Kratos's TOTP: added in two steps, then every login needs
/// a code (once each) or a recovery code (once each); turning it off needs the password and a
/// code. Nothing secret reaches the database in clear, the log or the audit trail.
#[tokio::test]
async fn an_authenticator_app_guards_every_login_once_confirmed() {
    let app = app_with(&[("auth_mfa_issuer", "Acme Billing")]).await;
    let session = register(&app, "Ada", "ada@example.org").await;
    let bearer = token(&session);
    let call = |method: &'static str, path: &'static str, body: Value| {
        let (app, bearer) = (&app, bearer.clone());
        async move { send(app, method, path, Some(&bearer), Some(body)).await }
    };
    assert_eq!(session["user"]["mfa_enabled"], false, "{session}");

    // Step 1, the password again; step 2, a code from the app.
    assert_problem(&call("POST", "/api/v3/users/me/mfa/totp", json!({"password": "wrong-password-1"})).await, 403, "wrong_password");
    let enrolled = call("POST", "/api/v3/users/me/mfa/totp", json!({"password": PASSWORD})).await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.text);
    let secret = enrolled.body["secret"].as_str().expect("secret").to_string();
    assert_eq!(secret.len(), 32, "160 bits");
    let uri = enrolled.body["otpauth_uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/Acme%20Billing:ada%40example%2Eorg?secret="), "{uri}");
    assert!(uri.contains(&format!("secret={secret}&issuer=Acme%20Billing&algorithm=SHA1&digits=6&period=30")), "{uri}");
    let other_device = login(&app, "ada@example.org", PASSWORD).await;
    assert_eq!(other_device.status, 200, "not on before it is confirmed");
    let wrong = call("POST", "/api/v3/users/me/mfa/totp/confirm", json!({"code": "12345"})).await;
    assert_eq!((wrong.status, &wrong.body["errors"][0]["field"]), (422, &json!("code")), "{}", wrong.text);
    let confirmed = call("POST", "/api/v3/users/me/mfa/totp/confirm", json!({"code": app_code(&secret, now())})).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    let recovery: Vec<String> = confirmed.body["recovery_codes"].as_array().expect("codes").iter().filter_map(|c| c.as_str().map(str::to_owned)).collect();
    assert_eq!(recovery.len(), 10, "{}", confirmed.text);
    assert_problem(&call("POST", "/api/v3/users/me/mfa/totp/confirm", json!({"code": app_code(&secret, now())})).await, 409, "mfa_enabled");
    // Every session began with the password alone: all have ended, as after a password change
    // (the access token in hand runs out within its 15 minutes).
    for ended in [refresh_token(&other_device.body), refresh_token(&session)] {
        assert_problem(&post(&app, "/api/v3/auth/refresh", json!({"refresh_token": ended})).await, 401, "invalid_refresh_token");
    }
    let me = send(&app, "GET", "/api/v3/users/me", Some(&bearer), None).await;
    assert_eq!(me.body["user"]["mfa_enabled"], true, "{}", me.text);

    // The password alone is not enough any more; the next step's code works once.
    assert_problem(&login(&app, "ada@example.org", PASSWORD).await, 401, "mfa_required");
    let next_code = app_code(&secret, now() + 30);
    let with_code = json!({"email": "ada@example.org", "password": PASSWORD, "mfa_code": next_code});
    let signed_in = post(&app, "/api/v3/auth/login", with_code.clone()).await;
    assert_eq!((signed_in.status, &signed_in.body["user"]["mfa_enabled"]), (200, &json!(true)), "{}", signed_in.text);
    assert_problem(&post(&app, "/api/v3/auth/login", with_code).await, 401, "invalid_mfa_code");
    let wrong_password = json!({"email": "ada@example.org", "password": "wrong-password-1", "mfa_code": next_code});
    assert_problem(&post(&app, "/api/v3/auth/login", wrong_password).await, 401, "invalid_credentials");

    // A recovery code (any case, dashes or not) works once.
    let with_recovery = json!({"email": "ada@example.org", "password": PASSWORD, "recovery_code": recovery[0].to_lowercase().replace('-', "")});
    assert_eq!(post(&app, "/api/v3/auth/login", with_recovery.clone()).await.status, 200);
    assert_problem(&post(&app, "/api/v3/auth/login", with_recovery).await, 401, "invalid_mfa_code");

    // At rest: the secret sealed, the recovery codes as hashes (nine left).
    let stored = rows(&app, "SELECT totp_secret, mfa_recovery_codes FROM client_auth").await;
    assert!(stored[0][0].starts_with("v1.") && !stored[0][0].contains(&secret), "{stored:?}");
    assert_eq!(stored[0][1].split(',').count(), 9);
    assert!(recovery.iter().all(|code| !stored[0][1].contains(&code.replace('-', ""))));

    // Off: the password and a code; a wrong code is refused and counted.
    let no_code = call("DELETE", "/api/v3/users/me/mfa/totp", json!({"password": PASSWORD})).await;
    assert_eq!((no_code.status, &no_code.body["errors"][0]["field"]), (422, &json!("mfa_code")), "{}", no_code.text);
    assert_problem(&call("DELETE", "/api/v3/users/me/mfa/totp", json!({"password": PASSWORD, "mfa_code": "000000"})).await, 403, "wrong_mfa_code");
    let off = call("DELETE", "/api/v3/users/me/mfa/totp", json!({"password": PASSWORD, "recovery_code": recovery[1]})).await;
    assert_eq!(off.status, 204, "{}", off.text);
    assert_eq!(login(&app, "ada@example.org", PASSWORD).await.status, 200);
    assert_problem(&call("DELETE", "/api/v3/users/me/mfa/totp", json!({"password": PASSWORD})).await, 409, "mfa_not_enrolled");
    assert_eq!(rows(&app, "SELECT COUNT(*) FROM client_auth WHERE totp_secret IS NULL AND mfa_recovery_codes IS NULL").await, vec![vec!["1".to_string()]]);

    let audit = rows(&app, "SELECT event, success, COALESCE(reason, '') FROM audit_log WHERE event LIKE 'mfa%' OR reason LIKE '%mfa%' OR reason = 'recovery_code' ORDER BY id").await;
    let audit: Vec<String> = audit.iter().map(|row| row.join(" ").trim().to_string()).collect();
    assert_eq!(
        audit,
        [
            "mfa_enroll 0 wrong_password", "mfa_enroll 1", "mfa_enable 1", "login 0 mfa_required", "login 0 wrong_mfa_code",
            "login 1 recovery_code", "login 0 wrong_mfa_code", "mfa_disable 0 wrong_mfa_code", "mfa_disable 1",
        ]
    );
    let log = app.host.log();
    assert!(!log.contains(&secret) && recovery.iter().all(|code| !log.contains(code.as_str())), "nothing secret is logged");
}

/// A key rotation re-seals the authenticator-app secrets along with the emails (`admin
/// reencrypt`), so the old key can be retired without locking anyone out of their account.
#[tokio::test]
async fn a_key_rotation_reseals_authenticator_secrets_with_the_emails() {
    let app = app().await;
    let session = register(&app, "Ada", "ada@example.org").await;
    let bearer = token(&session);
    let enrolled = send(&app, "POST", "/api/v3/users/me/mfa/totp", Some(&bearer), Some(json!({"password": PASSWORD}))).await;
    let secret = enrolled.body["secret"].as_str().expect("secret").to_string();
    let confirmed = send(&app, "POST", "/api/v3/users/me/mfa/totp/confirm", Some(&bearer), Some(json!({"code": app_code(&secret, now())}))).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);

    // A new key prepended: it seals from now on; the old one only opens.
    let rotation = admin::keys::rotate_encryption_key(&app.variables["encryption_key"], admin::keys::Stage::Add).expect("rotation");
    let rotated = rotation.vars[0].1.clone();
    let new_key = rotated.split(',').next().expect("the new key").to_string();
    let new_kid = new_key.split(':').next().expect("its kid").to_string();
    let cross = admin::legacy::CrossDb::new(Some(&app.auth_db.url), None, Some(&rotated));
    let report = admin::reencrypt::run(&cross, admin::reencrypt::Target::Auth, false).await.expect("reencrypt");
    let secrets = report.tables.iter().find(|t| t.table == "client_auth.totp_secret").expect("a line for the secrets");
    assert_eq!((secrets.checked, secrets.resealed, secrets.unreadable), (1, 1, 0), "{report:?}");
    assert_eq!(secrets.sealed_by_kid, std::collections::BTreeMap::from([(new_kid, 1)]));
    assert!(admin::reencrypt::render(&report).contains("may be retired"), "{}", admin::reencrypt::render(&report));

    // The new key alone opens it, under the secret's own context, to the same secret.
    let stored = rows(&app, "SELECT id, totp_secret FROM client_auth").await;
    let new_only = sealed_email::EmailKeyring::parse(&new_key).expect("keyring");
    let opened = new_only.open_with_aad(&stored[0][1], &sealed_email::totp_secret_context(&stored[0][0]));
    assert_eq!(opened.as_deref(), Ok(secret.as_str()));
    assert!(new_only.open_with_aad(&stored[0][1], stored[0][0].as_bytes()).is_err(), "never opens as an email");
    let again = admin::reencrypt::run(&cross, admin::reencrypt::Target::Auth, false).await.expect("reencrypt");
    assert!(again.tables.iter().all(|t| t.resealed == 0), "a second run has nothing to do");
}
