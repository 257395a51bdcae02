//! `admin account`, the real binary against the database the real auth component writes: an
//! operator takes a stolen account back (the intruder had changed its email and added their own
//! authenticator app), and signs a user out everywhere. What the operator does is then what auth
//! does: the intruder's sessions, password, reset token and app stop working, and the owner
//! resets the password through the ordinary API.

#[path = "auth_support.rs"]
mod support;

#[path = "customer_support.rs"]
mod cs;

#[path = "attack_support.rs"]
mod attack;

use std::process::Output;

use integration_tests::TestApp;
use serde_json::{Value, json};
use support::*;

const NEW_PASSWORD: &str = "difference-engine-1822";

/// Runs the admin binary with the app's auth database and key, from an empty folder so that no
/// `.env` is read.
async fn admin(app: &TestApp, args: &[&str]) -> Output {
    admin_with(app, false, args).await
}

/// [`admin`], with customer's database as well when `billing`.
async fn admin_with(app: &TestApp, billing: bool, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().expect("a temporary folder");
    let mut cmd = integration_tests::admin_command(args, cwd.path());
    cmd.env("SPIN_VARIABLE_AUTH_DB_URL", &app.auth_db.url)
        .env("SPIN_VARIABLE_ENCRYPTION_KEY", &app.variables["encryption_key"])
        .env("USER", "jane");
    if billing {
        cmd.env("SPIN_VARIABLE_CUSTOMER_DB_URL", &app.customer_db.url);
    }
    integration_tests::run_admin(cmd, args).await
}

fn stdout_json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The operator_* audit rows as (event, actor, subject, client_addr, detail).
async fn operator_audit(app: &TestApp) -> Vec<Vec<String>> {
    rows(app, "SELECT event, actor, subject, client_addr, COALESCE(detail, '') FROM audit_log WHERE event LIKE 'operator\\_%' ORDER BY id").await
}

#[tokio::test]
async fn an_operator_takes_a_stolen_account_back() {
    let (app, mailer_token) = app_with_mailer(&["auth_password_reset_services", "auth_email_verification_services"]).await;
    let owner = register(&app, "Ada", "ada@example.org").await;
    let id = user_id(&owner);
    register(&app, "Bob", "bob@example.org").await;

    // The intruder knows the password: signs in, adds their own app, moves the email, and has
    // a reset token and a verification token mailed to their address.
    let first_sign_in = login(&app, "ada@example.org", PASSWORD).await;
    assert_eq!(first_sign_in.status, 200, "{}", first_sign_in.text);
    let bearer = token(&first_sign_in.body);
    let enrolled = send(&app, "POST", "/api/v3/users/me/mfa/totp", Some(&bearer), Some(json!({"password": PASSWORD}))).await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.text);
    let secret = enrolled.body["secret"].as_str().expect("secret").to_string();
    let confirmed = send(&app, "POST", "/api/v3/users/me/mfa/totp/confirm", Some(&bearer), Some(json!({"code": app_code(&secret, now())}))).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    // Confirming ended every session; the intruder signs in again with the second factor.
    let recovery_code = confirmed.body["recovery_codes"][0].as_str().expect("a recovery code");
    let intruder = post(&app, "/api/v3/auth/login", json!({"email": "ada@example.org", "password": PASSWORD, "recovery_code": recovery_code})).await;
    assert_eq!(intruder.status, 200, "{}", intruder.text);
    let bearer = token(&intruder.body);
    let moved = send(&app, "PATCH", "/api/v3/users/me", Some(&bearer), Some(json!({"email": "intruder@example.net", "current_password": PASSWORD}))).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let stolen_reset = send(&app, "POST", "/api/v3/users/password-resets", Some(&mailer_token), Some(json!({"email": "intruder@example.net"}))).await;
    assert_eq!(stolen_reset.status, 201, "{}", stolen_reset.text);
    let intruders_verification = send(&app, "POST", "/api/v3/users/email-verifications", Some(&mailer_token), Some(json!({"email": "intruder@example.net"}))).await;
    assert_eq!(intruders_verification.status, 201, "{}", intruders_verification.text);
    // Adding the app signed the owner's own session out; the owner cannot sign in without it.
    let refused = post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(&owner)})).await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert_problem(&login(&app, "intruder@example.net", PASSWORD).await, 401, "mfa_required");

    // The operator looks the account up by the address the owner does not recognise.
    let shown = stdout_json(&admin(&app, &["account", "show", " Intruder@Example.net ", "--json"]).await);
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["email"], "intruder@example.net");
    assert_eq!((&shown["second_factor"], &shown["recovery_codes_left"]), (&json!("on"), &json!(9)));
    assert_eq!((&shown["password"], &shown["live_sessions"], &shown["pending_password_resets"]), (&json!("set"), &json!(1), &json!(1)), "{shown}");
    assert_eq!(shown["email_verified_at"], Value::Null);

    // The owner proved who they are out of band: the password goes (and the intruder's session
    // and reset token with it), the address goes back, the app goes.
    let reset = stdout_json(&admin(&app, &["account", "require-password-reset", &id, "--ticket", "SUP-42", "--operator", "ops.lead", "--json"]).await);
    assert_eq!((&reset["changed"], &reset["sessions_ended"], &reset["tokens_voided"]), (&json!(true), &json!(1), &json!(1)), "{reset}");
    let put_back = admin(&app, &["account", "set-email", &id, "ada@example.org", "--verified", "--ticket", "SUP-42"]).await;
    assert!(put_back.status.success(), "{}", stderr(&put_back));
    let put_back = String::from_utf8_lossy(&put_back.stdout).into_owned();
    assert!(put_back.contains("operator_email_change") && put_back.contains("1 mailed token(s) void"), "{put_back}");
    let removed = stdout_json(&admin(&app, &["account", "remove-mfa", "ada@example.org", "--ticket", "SUP-42", "--json"]).await);
    assert_eq!((&removed["changed"], &removed["event"]), (&json!(true), &json!("operator_mfa_remove")));

    // The intruder is out: session, password, address and mailed token all refused.
    let refreshed = post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(&intruder.body)})).await;
    assert_eq!(refreshed.status, 401, "{}", refreshed.text);
    let with_old_password = login(&app, "ada@example.org", PASSWORD).await;
    let wrong_password = login(&app, "bob@example.org", "not-bobs-password-1").await;
    assert_problem(&with_old_password, 401, "invalid_credentials");
    assert_eq!(
        (with_old_password.body["title"].clone(), with_old_password.body["detail"].clone()),
        (wrong_password.body["title"].clone(), wrong_password.body["detail"].clone()),
        "a removed password answers as a wrong one"
    );
    assert_problem(&login(&app, "intruder@example.net", PASSWORD).await, 401, "invalid_credentials");
    let stolen = stolen_reset.body["token"].as_str().expect("token");
    assert_problem(&post(&app, "/api/v3/auth/password-reset", json!({"token": stolen, "new_password": "jacquard-loom-1804"})).await, 400, "invalid_reset_token");
    let verification = intruders_verification.body["token"].as_str().expect("token");
    assert_problem(&post(&app, "/api/v3/auth/email-verification", json!({"token": verification})).await, 400, "invalid_verification_token");

    // The owner resets through the ordinary path and signs in without the intruder's app.
    let issued = send(&app, "POST", "/api/v3/users/password-resets", Some(&mailer_token), Some(json!({"email": "ada@example.org"}))).await;
    assert_eq!((issued.status, &issued.body["user_id"]), (201, &json!(id)), "{}", issued.text);
    let done = post(&app, "/api/v3/auth/password-reset", json!({"token": issued.body["token"], "new_password": NEW_PASSWORD})).await;
    assert_eq!(done.status, 204, "{}", done.text);
    let back = login(&app, "ada@example.org", NEW_PASSWORD).await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!((&back.body["user"]["email"], &back.body["user"]["email_verified"]), (&json!("ada@example.org"), &json!(true)));
    assert_eq!(back.body["user"]["mfa_enabled"], false, "{}", back.text);

    // Three audit rows, by whom and for which ticket; no address or secret in them.
    let audit = operator_audit(&app).await;
    let events: Vec<&str> = audit.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(events, ["operator_password_reset", "operator_email_change", "operator_mfa_remove"]);
    for row in &audit {
        assert_eq!((row[2].as_str(), row[3].as_str()), (id.as_str(), "admin"), "{row:?}");
        let detail: Value = serde_json::from_str(&row[4]).expect("detail is JSON");
        assert_eq!(detail["ticket"], "SUP-42", "{row:?}");
        assert!(!row[4].contains("example"), "no address in the trail: {row:?}");
    }
    assert_eq!((audit[0][1].as_str(), audit[1][1].as_str()), ("operator:ops.lead", "operator:jane"));
    assert_eq!(serde_json::from_str::<Value>(&audit[0][4]).expect("JSON")["sessions_ended"], 1);
    assert_eq!(serde_json::from_str::<Value>(&audit[1][4]).expect("JSON")["email_verified"], true);

    // Running an action again changes nothing and writes no row.
    let again = admin(&app, &["account", "remove-mfa", &id]).await;
    assert!(again.status.success() && String::from_utf8_lossy(&again.stdout).contains("nothing to change"), "{}", stderr(&again));
    assert_eq!(operator_audit(&app).await.len(), 3);

    // An address another account holds, or no such account: refused, nothing written.
    let taken = admin(&app, &["account", "set-email", &id, "BOB@example.org"]).await;
    assert_eq!(taken.status.code(), Some(1));
    assert!(stderr(&taken).contains("another account has \"bob@example.org\""), "{}", stderr(&taken));
    let missing = admin(&app, &["account", "sign-out", "nobody@example.org"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("Failed to find an account"), "{}", stderr(&missing));
    let bad_operator = admin(&app, &["account", "sign-out", &id, "--operator", "jane doe"]).await;
    assert_eq!(bad_operator.status.code(), Some(1));
    assert_eq!(operator_audit(&app).await.len(), 3);
    assert_eq!(login(&app, "ada@example.org", NEW_PASSWORD).await.status, 200, "nothing changed by the refusals");
    for out in [&taken, &missing, &bad_operator] {
        for secret in [app.variables["encryption_key"].as_str(), app.auth_db.url.as_str()] {
            assert!(!stderr(out).contains(secret), "no secret in an error: {}", stderr(out));
        }
    }
}

#[tokio::test]
async fn sign_out_ends_every_session_and_only_that_account_s() {
    let app = app().await;
    let first = register(&app, "Ada", "ada@example.org").await;
    let second = login(&app, "ada@example.org", PASSWORD).await.body;
    let other = register(&app, "Bob", "bob@example.org").await;

    let shown = stdout_json(&admin(&app, &["account", "show", &user_id(&first), "--json"]).await);
    assert_eq!((&shown["live_sessions"], &shown["second_factor"], &shown["password"]), (&json!(2), &json!("none"), &json!("set")));
    assert_eq!((&shown["failed_sign_ins"], &shown["last_failed_sign_in_at"]), (&json!(0), &Value::Null));
    // Someone guesses at the password: support sees it.
    for _ in 0..3 {
        assert_problem(&login(&app, "ada@example.org", "not-the-password-1").await, 401, "invalid_credentials");
    }
    let shown = stdout_json(&admin(&app, &["account", "show", "ada@example.org", "--json"]).await);
    assert_eq!(shown["failed_sign_ins"], 3, "{shown}");
    assert!(shown["last_failed_sign_in_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{shown}");
    let out = stdout_json(&admin(&app, &["account", "sign-out", "ada@example.org", "--json"]).await);
    assert_eq!((&out["changed"], &out["sessions_ended"], &out["tokens_voided"]), (&json!(true), &json!(2), &json!(0)));

    for session in [&first, &second] {
        let refreshed = post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(session)})).await;
        assert_eq!(refreshed.status, 401, "{}", refreshed.text);
    }
    assert_eq!(post(&app, "/api/v3/auth/refresh", json!({"refresh_token": refresh_token(&other)})).await.status, 200, "Bob is untouched");
    // The password still works: signing out is not a lockout.
    assert_eq!(login(&app, "ada@example.org", PASSWORD).await.status, 200);
    let text = admin(&app, &["account", "show", "ada@example.org"]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("sessions        1 live") && text.contains("email           ada@example.org (not verified)"), "{text}");
    assert!(text.contains("failed sign-ins none since the last success"), "a success clears them: {text}");

    let audit = operator_audit(&app).await;
    assert_eq!(audit.len(), 1);
    assert_eq!((audit[0][0].as_str(), audit[0][1].as_str()), ("operator_sign_out", "operator:jane"));
    assert_eq!(rows(&app, &format!("SELECT COUNT(*) FROM refresh_token_families WHERE revoked_reason = 'operator_sign_out' AND user_id = '{}'", user_id(&first))).await[0][0], "2");
}

/// Support often starts from Stripe (a dispute, the dashboard): the account is found by its
/// Stripe customer id, and `show` says what billing holds for it beside what auth holds.
#[tokio::test]
async fn an_account_is_found_by_its_stripe_customer_and_shows_its_billing() {
    let full = attack::full().await;
    let payer = full.user("Ada", "ada@example.org").await;
    let free = full.user("Bob", "bob@example.org").await;
    let customer = full.customer(&payer).await;
    let stripe_id = customer["stripe_customer_id"].as_str().expect("a Stripe customer").to_string();
    let price = full.stripe.price("900").await;
    let subscription = full.subscribe(&payer, &price).await;

    let shown = stdout_json(&admin_with(&full.app, true, &["account", "show", &stripe_id, "--json"]).await);
    assert_eq!((&shown["id"], &shown["email"]), (&json!(payer.id), &json!("ada@example.org")), "{shown}");
    let billing = &shown["billing"];
    assert_eq!(billing["stripe_customer_id"], stripe_id.as_str());
    let lines = billing["subscriptions"].as_array().expect("subscriptions");
    assert_eq!(lines.len(), 1, "{billing}");
    assert_eq!((&lines[0]["stripe_subscription_id"], &lines[0]["price_id"]), (&subscription["stripe_subscription_id"], &json!(price)));
    assert_eq!((&lines[0]["status"], &lines[0]["quantity"], &lines[0]["cancel_at_period_end"]), (&subscription["status"], &json!(1), &json!(false)));
    assert!(lines[0]["current_period_end"].as_str().is_some_and(|t| t.ends_with('Z')), "{billing}");
    let text = admin_with(&full.app, true, &["account", "show", &stripe_id]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains(&format!("billing         Stripe customer {stripe_id}, 1 subscription(s)")), "{text}");

    // A free user, and no customer database configured.
    let bob = stdout_json(&admin_with(&full.app, true, &["account", "show", "bob@example.org", "--json"]).await);
    assert_eq!(bob["billing"], json!({"stripe_customer_id": null, "subscriptions": []}), "{bob}");
    let unread = stdout_json(&admin(&full.app, &["account", "show", &free.id, "--json"]).await);
    assert_eq!(unread["billing"], Value::Null, "{unread}");

    // Acting by Stripe id signs out that account only; an unknown or unreachable one is refused.
    let out = stdout_json(&admin_with(&full.app, true, &["account", "sign-out", &stripe_id, "--json"]).await);
    assert_eq!((&out["user_id"], &out["sessions_ended"]), (&json!(payer.id), &json!(1)));
    assert_eq!(post(&full.app, "/api/v3/auth/refresh", json!({"refresh_token": payer.refresh})).await.status, 401);
    assert_eq!(post(&full.app, "/api/v3/auth/refresh", json!({"refresh_token": free.refresh})).await.status, 200);
    let unknown = admin_with(&full.app, true, &["account", "sign-out", "cus_unknown"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("Failed to find a customer with the Stripe customer id \"cus_unknown\""), "{}", stderr(&unknown));
    let no_db = admin(&full.app, &["account", "sign-out", &stripe_id]).await;
    assert_eq!(no_db.status.code(), Some(1));
    assert!(stderr(&no_db).contains("SPIN_VARIABLE_CUSTOMER_DB_URL"), "{}", stderr(&no_db));
}
