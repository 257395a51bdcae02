//! Attack cases, account enumeration: login with an unknown email, with a wrong password, and for
//! an account that has no password yet (a backfilled user) must be indistinguishable: the same
//! status, the same headers (but for the date and the request id) and the same body (but for
//! request_id). Latencies are compared in `make bench`, not here (tests never time anything).

#[path = "auth_support.rs"]
mod support;

#[path = "customer_support.rs"]
mod cs;

#[path = "attack_support.rs"]
mod attack;

use attack::{full_with, sans_request_id};
use serde_json::json;
use support::PASSWORD;

async fn login(app: &attack::Full, email: &str, password: &str) -> (u16, Vec<(String, String)>, serde_json::Value) {
    let response = app
        .app
        .client
        .post(app.app.url("/api/v3/auth/login"))
        .header("content-type", "application/json")
        .body(json!({"email": email, "password": password}).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id" | "content-length" | "traceparent"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_string()))
        .collect();
    headers.sort();
    let body = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    (status, headers, sans_request_id(&body))
}

#[tokio::test]
async fn unknown_email_wrong_password_and_no_password_look_the_same() {
    let app = full_with(|vars| {
        vars.insert("auth_login_max_failures_per_account".into(), "100".into());
        vars.insert("auth_login_max_failures_per_address".into(), "100000".into());
    })
    .await;
    app.user("Ada", "ada@example.org").await;
    let backfilled = app.user("Old", "old@example.org").await;
    // A user brought over from the legacy system: no password until they reset it.
    let mut conn = app.app.auth_db.connect().await.unwrap();
    mysql_async::prelude::Queryable::exec_drop(
        &mut conn,
        "UPDATE client_auth SET password_hash = NULL, must_reset_password = 1 WHERE id = ?",
        (backfilled.id.as_str(),),
    )
    .await
    .unwrap();
    drop(conn);

    let reference = login(&app, "nobody@example.org", PASSWORD).await;
    assert_eq!(reference.0, 401);
    assert_eq!(reference.2["code"], "invalid_credentials");
    for (what, email, password) in [
        ("wrong password", "ada@example.org", "not-the-password"),
        ("wrong password, other case and spaces", "  ADA@Example.org ", "not-the-password"),
        ("the right password with a different case", "ada@example.org", &PASSWORD.to_uppercase()),
        ("the right password plus a space", "ada@example.org", &format!("{PASSWORD} ")),
        ("unknown email, known password", "ada2@example.org", PASSWORD),
        ("unknown domain", "ada@example.com", PASSWORD),
        ("an account without a password (backfilled)", "old@example.org", PASSWORD),
        ("an account without a password, empty password", "old@example.org", ""),
        ("unknown email, empty password", "nobody@example.org", ""),
    ] {
        for _ in 0..2 {
            let answer = login(&app, email, password).await;
            assert_eq!(answer, reference, "{what}");
        }
    }
    // The right password still works (nothing above locked the account).
    assert_eq!(login(&app, "ada@example.org", PASSWORD).await.0, 200);
}
