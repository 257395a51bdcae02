//! Auth under attack: races, token forgeries, refresh-token theft, access control between users
//! and services, rate limits, and bad key configuration.

#[path = "auth_support.rs"]
mod support;

use integration_tests::{TestApp, join_all};
use serde_json::{Value, json};
use support::*;
use tokens::{AccessTokenConfig, SigningKeys};

fn access_config() -> AccessTokenConfig {
    AccessTokenConfig::new(tokens::ACCESS_TOKEN_ISSUER, tokens::ACCESS_TOKEN_AUDIENCE)
}

/// A fresh random Ed25519 signing key nobody trusts.
fn stranger_key() -> SigningKeys {
    let seed = admin::keys::SeedKey::generate().expect("seed");
    SigningKeys::parse(&seed.encode()).expect("key")
}

#[tokio::test]
async fn fifty_concurrent_registrations_of_one_email_make_one_account() {
    let app = app().await;
    let attempts = (0..50).map(|i| {
        let body = json!({"name": format!("Racer {i}"), "email": if i % 2 == 0 { "race@example.org" } else { " RACE@example.org" }, "password": PASSWORD});
        let app = &app;
        async move { post(app, "/api/v3/auth/register", body).await }
    });
    let answers = join_all(attempts).await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    let conflicts = answers.iter().filter(|a| a.status == 409 && a.body["code"] == "email_taken").count();
    let others: Vec<_> = answers.iter().filter(|a| a.status != 201 && a.status != 409).map(|a| a.text.clone()).collect();
    assert_eq!((created, conflicts), (1, 49), "unexpected answers: {others:?}");
    assert_eq!(rows(&app, "SELECT COUNT(*) FROM client_auth").await[0][0], "1");
}

#[tokio::test]
async fn concurrent_guesses_get_no_more_password_checks_than_the_limit() {
    // Per account 10 (the default); per address raised so that only the account limit applies.
    let app = app_with(&[("auth_login_max_failures_per_address", "1000")]).await;
    register(&app, "Ada", "ada@example.org").await;
    // 40 guesses at once. Counted only once checked, every one of them would be checked (each
    // reads the counter before any has failed). Counted before the check, at most 10 are.
    let guesses = (0..40).map(|i| {
        let app = &app;
        async move { login(app, "ada@example.org", &format!("burst-guess-{i}")).await }
    });
    let answers = join_all(guesses).await;
    let checked = answers.iter().filter(|a| a.status == 401 && a.body["code"] == "invalid_credentials").count();
    let refused: Vec<u64> = answers
        .iter()
        .filter(|a| a.status == 429 && a.body["code"] == "too_many_attempts")
        .map(|a| a.retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After"))
        .collect();
    let others: Vec<_> = answers.iter().filter(|a| a.status != 401 && a.status != 429).map(|a| a.text.clone()).collect();
    assert_eq!(checked + refused.len(), 40, "unexpected answers: {others:?}\n{}", app.host.log());
    // At most ten are checked; the first to begin always is. (A failure is recorded a moment
    // before its check stops counting as in flight, so a later one can see it twice and be
    // refused early: never more, sometimes fewer.)
    assert!((1..=10).contains(&checked), "{checked} guesses checked in the burst");
    // Refused while checks were in flight: retry in a second; once 10 failed: the window.
    assert!(refused.iter().all(|r| *r == 1 || (890..=900).contains(r)), "{refused:?}");
    // The refused guesses were counted nowhere: guessing on, one at a time, the account gets
    // exactly 10 checks in all before its window's wait.
    let mut sequential = 0;
    loop {
        let answer = login(&app, "ada@example.org", &format!("next-guess-{sequential}")).await;
        if answer.status == 429 {
            let retry: u64 = answer.retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After");
            assert!((890..=900).contains(&retry), "{retry}");
            break;
        }
        assert_problem(&answer, 401, "invalid_credentials");
        sequential += 1;
        assert!(checked + sequential <= 10, "more than 10 guesses checked");
    }
    assert_eq!(checked + sequential, 10);
    let events = audit(&app).await;
    assert_eq!(events.iter().filter(|e| e.0 == "login" && e.2 == "wrong_password").count(), 10);
    let counters = rows(&app, "SELECT scope, failures FROM login_throttle ORDER BY scope").await;
    assert_eq!(counters, vec![vec!["account", "10"], vec!["address", "10"]]);
    assert_eq!(rows(&app, "SELECT COUNT(*) FROM login_checks").await, vec![vec!["0"]], "no check left in flight");
    assert_problem(&login(&app, "ada@example.org", PASSWORD).await, 429, "too_many_attempts");
}

#[tokio::test]
async fn registration_cannot_probe_for_taken_emails_past_the_address_limit() {
    let app = app_with(&[("auth_login_max_failures_per_address", "5")]).await;
    register(&app, "Ada", "ada@example.org").await;
    // Each 409 says "this email has an account": it counts against the client's address.
    for i in 0..5 {
        let probe = post(&app, "/api/v3/auth/register", json!({"name": "Probe", "email": "ada@example.org", "password": format!("probe-password-{i}")})).await;
        assert_problem(&probe, 409, "email_taken");
    }
    let refused = post(&app, "/api/v3/auth/register", json!({"name": "Probe", "email": "bob@example.org", "password": "probe-password-x"})).await;
    assert_problem(&refused, 429, "too_many_attempts");
    let retry: u64 = refused.retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((890..=900).contains(&retry), "{retry}");
    // One budget per address, shared with login.
    assert_problem(&login(&app, "ada@example.org", PASSWORD).await, 429, "too_many_attempts");
    assert_eq!(rows(&app, "SELECT COUNT(*) FROM client_auth").await, vec![vec!["1"]]);
    let events = audit(&app).await;
    assert_eq!(events.iter().filter(|e| e.0 == "register" && e.2 == "email_taken").count(), 5);
    assert!(events.iter().any(|e| e.0 == "register" && e.2 == "throttled"));
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    let app = app_with(&[("auth_refresh_grace_secs", "0")]).await;
    let session = register(&app, "Ada", "ada@example.org").await;
    let stolen = refresh_token(&session);
    let legit = post(&app, "/api/v3/auth/refresh", json!({"refresh_token": stolen})).await;
    assert_eq!(legit.status, 200, "{}", legit.text);
    let current = refresh_token(&legit.body);
    // The thief replays the old token, at once (no grace window, so even within the same
    // second): refused, and the family dies with it.
    assert_problem(&post(&app, "/api/v3/auth/refresh", json!({"refresh_token": stolen})).await, 401, "invalid_refresh_token");
    assert_problem(&post(&app, "/api/v3/auth/refresh", json!({"refresh_token": current})).await, 401, "invalid_refresh_token");
    let family = rows(&app, "SELECT revoked_reason FROM refresh_token_families").await;
    assert_eq!(family, vec![vec!["reuse".to_string()]]);
    assert!(audit(&app).await.iter().any(|e| e.0 == "refresh_reuse" && e.3 == user_id(&session)));
    // Other sessions of the user are untouched.
    let other = login(&app, "ada@example.org", PASSWORD).await;
    assert_eq!(post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(&other.body)})).await.status, 200);
}

#[tokio::test]
async fn concurrent_refreshes_within_the_grace_window_all_succeed() {
    let app = app().await;
    let session = register(&app, "Ada", "ada@example.org").await;
    let token = refresh_token(&session);
    let answers = join_all((0..4).map(|_| {
        let app = &app;
        let body = json!({"refresh_token": token});
        async move { post(app, "/api/v3/auth/refresh", body).await }
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let family = rows(&app, "SELECT COUNT(*), COUNT(revoked_at) FROM refresh_token_families").await;
    assert_eq!(family[0], vec!["1", "0"]);
    // Each successor works on its own.
    for answer in &answers {
        assert_eq!(post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(&answer.body)})).await.status, 200);
    }
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_refused() {
    let app = app().await;
    let session = register(&app, "Ada", "ada@example.org").await;
    let id = user_id(&session);
    let real = SigningKeys::parse(&app.variables["token_signing_keys"]).expect("auth's keys");
    let now = now();
    let good = real.issue_access_token(&access_config(), &id, now).expect("token").token;
    assert_eq!(send(&app, "GET", "/api/v3/users/me", Some(&good), None).await.status, 200, "the test's own token is valid");

    let unknown_key = stranger_key().issue_access_token(&access_config(), &id, now).expect("token").token;
    let expired = real.issue_access_token(&access_config(), &id, now - 3600).expect("token").token;
    let wrong_audience = real.issue_access_token(&AccessTokenConfig::new(tokens::ACCESS_TOKEN_ISSUER, "someone-else"), &id, now).expect("token").token;
    let wrong_issuer = real.issue_access_token(&AccessTokenConfig::new("evil", tokens::ACCESS_TOKEN_AUDIENCE), &id, now).expect("token").token;
    let (_, claims) = jwt_parts(&good);
    let alg_none = format!("{}.{}.", b64url_encode(br#"{"alg":"none","typ":"at+jwt"}"#), b64url_encode(claims.to_string().as_bytes()));
    let mut tampered_claims = claims.clone();
    tampered_claims["sub"] = json!("someone-else");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64url_encode(tampered_claims.to_string().as_bytes()), parts[2]);
    let service_keys = SigningKeys::parse(&app.variables["service_token_key"]).expect("customer's key");
    let service_token = service_keys.issue_service_token("customer", now).expect("token").token;
    let huge = "a".repeat(10 * 1024);

    for (what, token) in [
        ("unknown key", unknown_key.as_str()),
        ("alg none", alg_none.as_str()),
        ("expired", expired.as_str()),
        ("wrong audience", wrong_audience.as_str()),
        ("wrong issuer", wrong_issuer.as_str()),
        ("tampered claims", tampered.as_str()),
        ("service token as a user token", service_token.as_str()),
        ("10 KB of junk", huge.as_str()),
        ("truncated", &good[..good.len() - 10]),
    ] {
        let answer = send(&app, "GET", "/api/v3/users/me", Some(token), None).await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.text);
        assert_eq!(answer.body["code"], "invalid_token", "{what}");
        assert_eq!(answer.www_authenticate.as_deref(), Some(r#"Bearer error="invalid_token""#), "{what}");
        // Same on the service endpoints.
        let answer = send(&app, "GET", &format!("/api/v3/users/{id}"), Some(token), None).await;
        let expected = if what == "service token as a user token" { 200 } else { 401 };
        assert_eq!(answer.status, expected, "{what} on /users/{{id}}: {}", answer.text);
    }
    let basic = app.client.get(app.url("/api/v3/users/me")).header("authorization", "Basic YTpi").send().await.expect("sent");
    assert_eq!(basic.status(), 401);
}

#[tokio::test]
async fn users_read_only_themselves_and_services_read_anyone() {
    let app = app_with(&[("auth_service_calls_per_minute", "4")]).await;
    let a = register(&app, "Ada", "ada@example.org").await;
    let b = register(&app, "Bob", "bob@example.org").await;
    let (a_id, b_id) = (user_id(&a), user_id(&b));

    // A user: its own id only; another id is the same 404 as a missing one.
    let own = send(&app, "GET", &format!("/api/v3/users/{a_id}"), Some(&token(&a)), None).await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.body["user"], a["user"]);
    let other = send(&app, "GET", &format!("/api/v3/users/{b_id}"), Some(&token(&a)), None).await;
    let nobody = send(&app, "GET", "/api/v3/users/0190aaaa-0000-7000-8000-000000000000", Some(&token(&a)), None).await;
    assert_problem(&other, 404, "user_not_found");
    // The same body but for the request's own id.
    let without_id = |body: &Value| {
        let mut body = body.clone();
        body.as_object_mut().map(|problem| problem.remove("request_id"));
        body
    };
    assert_eq!(without_id(&other.body), without_id(&nobody.body));
    let batch = send(&app, "POST", "/api/v3/users/batch", Some(&token(&a)), Some(json!({"ids": [b_id, a_id]}))).await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    assert_eq!(batch.body["users"].as_array().map(Vec::len), Some(1));
    assert_eq!(batch.body["users"][0]["id"], a_id.as_str());
    assert_eq!(batch.body["missing"], json!([b_id]));
    assert_problem(&send(&app, "GET", &format!("/api/v3/users/{a_id}"), None, None).await, 401, "missing_token");

    // The customer service, with its own short-lived token. Its calls count per clock minute.
    let service = SigningKeys::parse(&app.variables["service_token_key"]).expect("customer key");
    let mut st = service.issue_service_token("customer", now()).expect("token").token;
    let mut minute = now() / 60;
    let one = send(&app, "GET", &format!("/api/v3/users/{b_id}"), Some(&st), None).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.body, json!({"user": b["user"]}));
    assert_problem(&send(&app, "GET", "/api/v3/users/no-such-user", Some(&st), None).await, 404, "user_not_found");
    let batch = send(&app, "POST", "/api/v3/users/batch", Some(&st), Some(json!({"ids": [b_id, "ghost", a_id, b_id]}))).await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    let ids: Vec<&str> = batch.body["users"].as_array().expect("users").iter().map(|u| u["id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids, vec![b_id.as_str(), a_id.as_str()]);
    assert_eq!(batch.body["missing"], json!(["ghost"]));
    assert_problem(&send(&app, "POST", "/api/v3/users/batch", Some(&st), Some(json!({"ids": []}))).await, 422, "validation_failed");
    let too_many: Vec<String> = (0..101).map(|i| format!("id-{i}")).collect();
    assert_problem(&send(&app, "POST", "/api/v3/users/batch", Some(&st), Some(json!({"ids": too_many}))).await, 422, "validation_failed");

    // The limit (4 a minute), exactly: the 4th call of a clock minute is served, the 5th is 429
    // until the minute ends. Three calls so far (the 422s never reached the limiter).
    let mut counted = 3;
    for attempt in 1..=3 {
        let mut served = Vec::new();
        for _ in counted..4 {
            served.push(send(&app, "GET", &format!("/api/v3/users/{a_id}"), Some(&st), None).await);
        }
        let asked_at = now();
        let limited = send(&app, "GET", &format!("/api/v3/users/{a_id}"), Some(&st), None).await;
        let answered_at = now();
        if answered_at / 60 == minute {
            for answer in &served {
                assert_eq!(answer.status, 200, "{}", answer.text);
            }
            assert_problem(&limited, 429, "rate_limited");
            let retry: u64 = limited.retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After");
            // The rest of the minute in which auth counted the call.
            assert!((60 - answered_at % 60..=60 - asked_at % 60).contains(&retry), "{retry} at {asked_at}..={answered_at}");
            break;
        }
        // The minute turned over mid-section, splitting the count. Start again at the start of
        // the next whole minute, when the count is zero.
        assert!(attempt < 3, "the clock minute turned over in each of {attempt} attempts");
        let next = answered_at / 60 + 1;
        for _ in 0..1300 {
            if now() / 60 >= next {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        minute = now() / 60;
        assert_eq!(minute, next, "the clock reached the next minute");
        counted = 0;
        // The token lives 60 s: the wait may have outlived it.
        st = service.issue_service_token("customer", now()).expect("token").token;
    }
    let limited = rows(&app, "SELECT actor, reason FROM audit_log WHERE event = 'service_rate_limited'").await;
    assert!(limited.contains(&vec!["service:customer".to_string(), "rate_limited".to_string()]), "{limited:?}");

    // A service key auth does not trust, and a token for another audience.
    let untrusted = stranger_key().issue_service_token("customer", now()).expect("token").token;
    assert_problem(&send(&app, "GET", &format!("/api/v3/users/{a_id}"), Some(&untrusted), None).await, 401, "invalid_token");

    let reads = rows(&app, "SELECT actor, COALESCE(subject, ''), detail FROM audit_log WHERE event = 'service_read' ORDER BY id").await;
    assert!(reads.len() >= 3, "{reads:?}");
    assert_eq!(reads[0][0], "service:customer");
    assert_eq!(reads[0][1], b_id);
    assert!(reads[2][2].contains("ghost") && reads[2][2].contains(&a_id), "{reads:?}");
}

#[tokio::test]
async fn a_bad_key_configuration_is_a_500_naming_the_variable_only() {
    let secret_looking = "k1:c2hvcnQ=";
    let app = app_with(&[("encryption_key", secret_looking)]).await;
    let answer = post(&app, "/api/v3/auth/register", json!({"name": "A", "email": "a@example.org", "password": PASSWORD})).await;
    assert_problem(&answer, 500, "configuration_error");
    assert!(answer.text.contains("encryption_key"), "{}", answer.text);
    assert!(!answer.text.contains("c2hvcnQ"), "{}", answer.text);
    let log = app.host.log();
    assert!(log.contains("encryption_key"), "the log names the variable");
    assert!(!log.contains("c2hvcnQ"), "the log never holds the value");
    // Routes that do not need the key keep working.
    assert_eq!(send(&app, "GET", "/.well-known/jwks.json", None, None).await.status, 200);

    let app = app_with(&[("trusted_service_keys", "customer:c1")]).await;
    let service = SigningKeys::parse(&app.variables["service_token_key"]).expect("key");
    let st = service.issue_service_token("customer", now()).expect("token").token;
    let answer = send(&app, "GET", "/api/v3/users/x", Some(&st), None).await;
    assert_problem(&answer, 500, "configuration_error");
    assert!(answer.text.contains("trusted_service_keys"), "{}", answer.text);

    // A database URL that names no MySQL database, or an address spin.toml does not allow, is a
    // configuration error too (not 503 "retry shortly" for ever), and never shows the password.
    for url in ["postgres://auth:hunter2@127.0.0.1:5432/auth", "mysql://auth:hunter2@192.0.2.1:3306/auth"] {
        let app = app_with(&[("auth_db_url", url)]).await;
        let answer = send(&app, "GET", "/api/v3/auth/health", None, None).await;
        assert_problem(&answer, 500, "configuration_error");
        assert!(answer.text.contains("db_url") && !answer.text.contains("hunter2"), "{}", answer.text);
        assert!(!app.host.log().contains("hunter2"), "{}", app.host.log());
    }
}

/// A failed login sent as if through a reverse proxy that wrote `forwarded_for`.
async fn failed_login_via(app: &TestApp, forwarded_for: &str, email: &str) -> Answer {
    let request = app
        .client
        .post(app.url("/api/v3/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"email": email, "password": "not-the-password-1"}));
    answer(request.send().await.expect("request sent")).await
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    // Every request here comes from 127.0.0.1, which plays the ingress in front of auth.
    // Trusted: each client behind it is throttled on its own address.
    // 10.0.0.2 plays a second proxy of the chain, nearer the client.
    let behind_ingress = app_with(&[("auth_trusted_proxies", "127.0.0.1, 10.0.0.2"), ("auth_login_max_failures_per_address", "3")]).await;
    for i in 0..3 {
        let answer = failed_login_via(&behind_ingress, "203.0.113.7", &format!("nobody{i}@example.org")).await;
        assert_eq!(answer.status, 401, "{}", answer.text);
    }
    assert_problem(&failed_login_via(&behind_ingress, "203.0.113.7", "nobody9@example.org").await, 429, "too_many_attempts");
    // Another client behind the same ingress is not throttled by the first one's failures, and
    // what a client writes left of the ingress's entry is not believed.
    assert_eq!(failed_login_via(&behind_ingress, "203.0.113.8", "nobody9@example.org").await.status, 401);
    assert_eq!(failed_login_via(&behind_ingress, "203.0.113.7, 203.0.113.8", "nobody9@example.org").await.status, 401);
    let addresses = rows(&behind_ingress, "SELECT client_addr, COUNT(*) FROM audit_log GROUP BY client_addr ORDER BY client_addr").await;
    assert_eq!(
        addresses,
        vec![vec!["203.0.113.7".to_string(), "4".to_string()], vec!["203.0.113.8".to_string(), "2".to_string()]],
        "each client's failures and throttle events under its own address, none under the ingress's"
    );

    // IPv6 clients are counted by their /64: a subscriber's network holds 2^64 addresses, each a
    // fresh counter otherwise. The audit log keeps each full address.
    for i in 1..=3 {
        let answer = failed_login_via(&behind_ingress, &format!("2001:db8:1:2::{i}"), &format!("v6-{i}@example.org")).await;
        assert_eq!(answer.status, 401, "{}", answer.text);
    }
    assert_problem(&failed_login_via(&behind_ingress, "2001:db8:1:2:ffff::9", "v6-9@example.org").await, 429, "too_many_attempts");
    assert_eq!(failed_login_via(&behind_ingress, "2001:db8:1:3::1", "v6-9@example.org").await.status, 401, "another /64");
    let counted = rows(&behind_ingress, "SELECT subject, failures FROM login_throttle WHERE scope = 'address' AND subject LIKE '2001:%' ORDER BY subject").await;
    assert_eq!(counted, vec![vec!["2001:db8:1:2::/64".to_string(), "3".to_string()], vec!["2001:db8:1:3::/64".to_string(), "1".to_string()]]);
    let audited = rows(&behind_ingress, "SELECT DISTINCT client_addr FROM audit_log WHERE client_addr LIKE '2001:db8:1:2:%' ORDER BY client_addr").await;
    assert_eq!(audited.len(), 4, "{audited:?}");

    // A chain whose proxies each wrote a line of their own: the lines are one list (RFC 9110
    // §5.3), so the client is found behind both proxies, not taken to be the nearer proxy.
    let chain_login = answer(
        behind_ingress
            .client
            .post(behind_ingress.url("/api/v3/auth/login"))
            .header("x-forwarded-for", "198.51.100.23")
            .header("x-forwarded-for", "10.0.0.2")
            .json(&json!({"email": "chain@example.org", "password": "not-the-password-1"}))
            .send()
            .await
            .expect("request sent"),
    )
    .await;
    assert_eq!(chain_login.status, 401, "{}", chain_login.text);
    let chained = rows(&behind_ingress, "SELECT client_addr FROM audit_log WHERE client_addr IN ('198.51.100.23', '10.0.0.2')").await;
    assert_eq!(chained, vec![vec!["198.51.100.23".to_string()]]);

    // Not trusted (the default): the header is the client's word, and every request counts
    // against the peer that sent it.
    let direct = app_with(&[("auth_login_max_failures_per_address", "3")]).await;
    for (i, claimed) in ["203.0.113.7", "203.0.113.8", "198.51.100.1"].iter().enumerate() {
        assert_eq!(failed_login_via(&direct, claimed, &format!("nobody{i}@example.org")).await.status, 401);
    }
    assert_problem(&failed_login_via(&direct, "192.0.2.99", "nobody9@example.org").await, 429, "too_many_attempts");
    // Nor can a client name its own address in the runtime's `spin-client-addr`: Spin (and the
    // local host, as Spin) appends its own line after the client's, and only that one counts.
    let forged = direct
        .client
        .post(direct.url("/api/v3/auth/login"))
        .header("spin-client-addr", "203.0.113.50:443")
        .json(&json!({"email": "nobody@example.org", "password": "not-the-password-1"}));
    assert_problem(&answer(forged.send().await.expect("request sent")).await, 429, "too_many_attempts");
    let addresses = rows(&direct, "SELECT DISTINCT client_addr FROM audit_log").await;
    assert_eq!(addresses, vec![vec!["127.0.0.1".to_string()]]);

    // A list that is not addresses is a configuration error naming the variable, for requests
    // that carry the header; requests without it need no list.
    let misconfigured = app_with(&[("auth_trusted_proxies", "10.0.0.0/8, the-ingress")]).await;
    let answer = failed_login_via(&misconfigured, "203.0.113.7", "nobody@example.org").await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (500, Some("configuration_error")), "{}", answer.text);
    assert!(answer.text.contains("trusted_proxies") && !answer.text.contains("the-ingress"), "{}", answer.text);
    assert_eq!(login(&misconfigured, "nobody@example.org", "not-the-password-1").await.status, 401);
}
