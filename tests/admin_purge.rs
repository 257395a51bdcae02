//! `admin purge` against the databases the real components wrote: sessions, logouts, failed
//! logins and webhook deliveries made through the app, then aged in the database (as days going
//! by would). What decides nothing any more goes; everything a live session, a throttle or the
//! inbox still relies on stays, and the app answers as before.

#[path = "auth_support.rs"]
mod support;

#[path = "customer_support.rs"]
mod cs;

#[path = "attack_support.rs"]
mod attack;

use admin::legacy::CrossDb;
use admin::purge::{self, Service, Settings};
use attack::{Full, db_rows, full_with};
use serde_json::json;

const DAY: i64 = 86_400;

async fn count(db: &integration_tests::TestDatabase, sql: &str) -> u64 {
    db_rows(db, sql).await[0][0].parse().expect("a count")
}

async fn refresh(app: &Full, refresh_token: &str) -> support::Answer {
    app.send("POST", "/api/v3/auth/refresh", None, Some(json!({"refresh_token": refresh_token}))).await
}

async fn webhook(app: &Full, id: &str) {
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let body = json!({"id": id, "object": "event", "type": "bench.ping", "created": cs::now(), "data": {"object": {}}}).to_string().into_bytes();
    let signature = attack::stripe_signature_bytes(&secret, cs::now(), &body);
    let answer = app.raw("POST", "/api/v3/billing/stripe/webhook", None, Some("application/json"), &[("stripe-signature", &signature)], body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn purge_deletes_what_decides_nothing_and_keeps_what_does() {
    let app = full_with(|vars| {
        vars.insert("auth_login_max_failures_per_address".into(), "1000".into());
    })
    .await;
    let (auth_db, customer_db) = (&app.app.auth_db, &app.app.customer_db);
    let now = cs::now();

    // A live session that has refreshed once: its first token is rotated, its second current.
    let live = app.user("Live", "live@example.org").await;
    let rotated = refresh(&app, &live.refresh).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let current = rotated.body["refresh_token"].as_str().expect("a refresh token").to_string();
    // A session that signed out 10 days ago, one that signed out just now, and one that was
    // left to expire.
    let gone = app.user("Gone", "gone@example.org").await;
    assert_eq!(app.send("POST", "/api/v3/auth/logout", None, Some(json!({"refresh_token": gone.refresh}))).await.status, 204);
    let just_out = app.user("Out", "out@example.org").await;
    assert_eq!(app.send("POST", "/api/v3/auth/logout", None, Some(json!({"refresh_token": just_out.refresh}))).await.status, 204);
    let idle = app.user("Idle", "idle@example.org").await;
    let family_of = |user: &str| format!("(SELECT id FROM refresh_token_families WHERE user_id = '{user}')");
    for sql in [
        format!("UPDATE refresh_token_families SET created_at = {}, revoked_at = {} WHERE user_id = '{}'", now - 40 * DAY, now - 10 * DAY, gone.id),
        // Signed out now, but signed in long ago: its revocation is what keeps it.
        format!("UPDATE refresh_token_families SET created_at = {} WHERE user_id = '{}'", now - 40 * DAY, just_out.id),
        format!("UPDATE refresh_token_families SET created_at = {} WHERE user_id = '{}'", now - 60 * DAY, idle.id),
        format!("UPDATE refresh_tokens SET created_at = {}, expires_at = {} WHERE family_id IN {}", now - 60 * DAY, now - 30 * DAY, family_of(&idle.id)),
        // The live session's rotated token expired long ago; its family and current token did not.
        format!("UPDATE refresh_token_families SET created_at = {} WHERE user_id = '{}'", now - 40 * DAY, live.id),
        format!("UPDATE refresh_tokens SET expires_at = {} WHERE rotated_at IS NOT NULL AND family_id IN {}", now - 8 * DAY, family_of(&live.id)),
    ] {
        db_rows(auth_db, &sql).await;
    }

    // Failed logins: one account's counter idle for 8 days, another's from now.
    for email in ["old-failure@example.org", "new-failure@example.org"] {
        let answer = app.send("POST", "/api/v3/auth/login", None, Some(json!({"email": email, "password": "not-the-password-1"}))).await;
        assert_eq!(answer.status, 401, "{}", answer.text);
    }
    let throttle_rows = count(auth_db, "SELECT COUNT(*) FROM login_throttle").await;
    assert!(throttle_rows >= 3, "two accounts and an address are counted: {throttle_rows}");
    db_rows(auth_db, &format!("UPDATE login_throttle SET window_started_at = {0}, last_failure_at = {0} WHERE scope = 'account' ORDER BY last_failure_at LIMIT 1", now - 8 * DAY)).await;

    // Password-reset tokens: one that expired 8 days ago, one live.
    db_rows(
        auth_db,
        &format!(
            "INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at) VALUES (REPEAT('a', 64), '{}', {}, {}), (REPEAT('b', 64), '{}', {now}, {})",
            live.id,
            now - 9 * DAY,
            now - 8 * DAY,
            just_out.id,
            now + 3600
        ),
    )
    .await;

    // Email-verification tokens: the same.
    db_rows(
        auth_db,
        &format!(
            "INSERT INTO email_verification_tokens (token_hash, user_id, created_at, expires_at) VALUES (REPEAT('c', 64), '{}', {}, {}), (REPEAT('d', 64), '{}', {now}, {})",
            live.id,
            now - 9 * DAY,
            now - 8 * DAY,
            just_out.id,
            now + 86_400
        ),
    )
    .await;

    // Webhook deliveries: one received 31 days ago, one now.
    webhook(&app, "evt_purge_old").await;
    webhook(&app, "evt_purge_new").await;
    db_rows(customer_db, "UPDATE stripe_events SET received_at = NOW() - INTERVAL 31 DAY WHERE id = 'evt_purge_old'").await;
    // One audit row of each service from 400 days ago.
    db_rows(auth_db, "UPDATE audit_log SET occurred_at = NOW() - INTERVAL 400 DAY ORDER BY id LIMIT 1").await;
    let audit_auth = count(auth_db, "SELECT COUNT(*) FROM audit_log").await;
    db_rows(customer_db, &format!("INSERT INTO audit_log (occurred_at, actor, action, subject, detail) VALUES ({}, 'test', 'old.event', NULL, '')", now - 400 * DAY)).await;
    let audit_customer = count(customer_db, "SELECT COUNT(*) FROM audit_log").await;

    let tokens_before = count(auth_db, "SELECT COUNT(*) FROM refresh_tokens").await;
    let cross = CrossDb::new(Some(&app.app.auth_db.url), Some(&app.app.customer_db.url), None).with_batch_size(1);
    let expected = [
        ("auth", "refresh_tokens", 2),         // the idle session's and the live session's rotated one
        ("auth", "refresh_token_families", 2), // signed out 10 days ago (with its token); every token expired
        ("auth", "login_throttle", 1),
        ("auth", "password_reset_tokens", 1),
        ("auth", "email_verification_tokens", 1),
        ("customer", "stripe_events", 1),
    ];

    // A dry run counts and deletes nothing.
    let dry = purge::run(&cross, &Settings::new(Service::All, 7, 30, None, true).unwrap()).await.expect("dry run");
    for (database, table, rows) in expected {
        assert_eq!(dry.rows(database, table), rows, "dry run: {database}.{table}: {dry:?}");
    }
    assert_eq!(count(auth_db, "SELECT COUNT(*) FROM refresh_tokens").await, tokens_before, "a dry run deletes nothing");

    // The real run (batches of one, so that the batching loop runs), audit rows kept.
    let report = purge::run(&cross, &Settings::new(Service::All, 7, 30, None, false).unwrap()).await.expect("purge");
    for (database, table, rows) in expected {
        assert_eq!(report.rows(database, table), rows, "{database}.{table}: {report:?}");
    }
    assert_eq!(report.rows("auth", "audit_log") + report.rows("customer", "audit_log"), 0, "audit rows only when asked");
    let families: Vec<String> = db_rows(auth_db, "SELECT user_id FROM refresh_token_families ORDER BY user_id").await.into_iter().map(|r| r[0].clone()).collect();
    let mut kept = vec![live.id.clone(), just_out.id.clone()];
    kept.sort();
    assert_eq!(families, kept, "the live family and the one revoked just now stay");
    assert_eq!(count(auth_db, "SELECT COUNT(*) FROM refresh_tokens").await, tokens_before - 3, "the idle family's, the revoked family's and the rotated token");
    assert_eq!(count(auth_db, "SELECT COUNT(*) FROM login_throttle").await, throttle_rows - 1);
    assert_eq!(
        db_rows(auth_db, "SELECT LEFT(token_hash, 1) FROM password_reset_tokens").await,
        vec![vec!["b".to_string()]],
        "the live reset token stays"
    );
    assert_eq!(
        db_rows(auth_db, "SELECT LEFT(token_hash, 1) FROM email_verification_tokens").await,
        vec![vec!["d".to_string()]],
        "the live verification token stays"
    );
    assert_eq!(db_rows(customer_db, "SELECT id FROM stripe_events WHERE id LIKE 'evt_purge%'").await, vec![vec!["evt_purge_new".to_string()]]);
    assert_eq!(count(auth_db, "SELECT COUNT(*) FROM audit_log").await, audit_auth);

    // The app answers as before: the live session refreshes; purged tokens stay refused; the
    // recent counter still counts.
    let again = refresh(&app, &current).await;
    assert_eq!(again.status, 200, "the live session goes on: {}", again.text);
    for (what, token) in [("signed out", &gone.refresh), ("expired", &idle.refresh), ("rotated", &live.refresh)] {
        let answer = refresh(&app, token).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (401, Some("invalid_refresh_token")), "{what}: {}", answer.text);
    }
    webhook(&app, "evt_purge_new").await;
    assert_eq!(count(customer_db, "SELECT COUNT(*) FROM stripe_events WHERE id = 'evt_purge_new'").await, 1, "a redelivery is still recognised");

    // Audit rows go only with --audit-older-than-days, and only the old ones.
    let audit_auth = count(auth_db, "SELECT COUNT(*) FROM audit_log").await;
    let report = purge::run(&cross, &Settings::new(Service::All, 7, 30, Some(365), false).unwrap()).await.expect("purge with audit");
    assert_eq!((report.rows("auth", "audit_log"), report.rows("customer", "audit_log")), (1, 1), "{report:?}");
    assert_eq!(count(auth_db, "SELECT COUNT(*) FROM audit_log").await, audit_auth - 1);
    assert_eq!(count(customer_db, "SELECT COUNT(*) FROM audit_log").await, audit_customer - 1);
    // A second run finds nothing left.
    let report = purge::run(&cross, &Settings::new(Service::All, 7, 30, Some(365), false).unwrap()).await.expect("rerun");
    assert!(report.purged.iter().all(|p| p.rows == 0), "{report:?}");
}
