//! Faults, Stripe: the stand-in slow, failing (500/503, before or after acting), answering 429,
//! and refusing our key (401). Every retry reuses its Idempotency-Key (read from localstripe's request log), and
//! afterwards the stand-in holds exactly one customer per user and one live subscription per
//! price: nothing is duplicated whatever failed.

#[path = "customer_support.rs"]
mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::{CustomerApp, spawn};

/// The keys of every POST to `path`, in order.
async fn keys_of(app: &CustomerApp, path: &str) -> Vec<Option<String>> {
    app.stripe.requests().await.into_iter().filter(|r| r.0 == "POST" && r.1 == path).map(|r| r.2).collect()
}

async fn live_subscriptions(app: &CustomerApp, customer: &str) -> Vec<Value> {
    let (_, list) = app.stripe.get(&format!("/v1/subscriptions?customer={customer}&limit=100")).await;
    list["data"].as_array().unwrap().iter().filter(|s| s["status"] != "canceled").cloned().collect()
}

#[tokio::test]
async fn stripe_429s_are_retried_with_the_same_key() {
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    app.stripe.fault(json!({"method": "POST", "path": "/v1/customers", "status": 429, "times": 2})).await;
    let (status, body, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 201, "{body}");
    let keys = keys_of(&app, "/v1/customers").await;
    assert_eq!(keys.len(), 3, "two 429s, then the create: {keys:?}");
    assert!(keys[0].is_some() && keys.iter().all(|k| k == &keys[0]), "one key for every attempt: {keys:?}");
    assert_eq!(app.stripe.customers_of("u-1").await.len(), 1);
}

#[tokio::test]
async fn a_slow_stripe_times_out_and_the_retry_reuses_the_key() {
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    // Longer than the client's 10 s first-byte timeout: the client gives up and retries with the
    // same key (whether the first request is then processed or dropped, the key makes it one).
    app.stripe.fault(json!({"method": "POST", "path": "/v1/customers", "status": 0, "delay": 11, "times": 1})).await;
    let (status, body, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 201, "{body}\n{}", app.app.host.log());
    // The timeout path ran: the first attempt is logged as timed out, the second answered.
    let attempts: Vec<Value> =
        support::call_lines(&app.app, "stripe").into_iter().filter(|l| l["method"] == "POST" && l["path"] == "/v1/customers").collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts[0]["error"].as_str().is_some_and(|e| e.starts_with("timed out")), "{attempts:?}");
    assert_eq!((attempts[1]["attempt"].as_u64(), attempts[1]["status"].as_u64()), (Some(2), Some(200)), "{attempts:?}");
    // localstripe saw both under one key: the first is never answered (its client gone, it is
    // dropped after the delay), the second made the customer. Processed or dropped, the first
    // could only replay that customer under its key, so the count needs no wait.
    let creates: Vec<_> = app.stripe.requests().await.into_iter().filter(|r| r.0 == "POST" && r.1 == "/v1/customers").collect();
    assert_eq!(creates.len(), 2, "{creates:?}");
    assert!(creates[0].2.is_some() && creates[0].2 == creates[1].2, "one key for both attempts: {creates:?}");
    assert_eq!((creates[0].3, creates[1].3), (None, Some(200)), "{creates:?}");
    assert_eq!(app.stripe.customers_of("u-1").await.len(), 1, "the slow request did not make a second customer");
}

#[tokio::test]
async fn a_lost_subscription_answer_is_replayed_not_repeated() {
    let app = spawn(|_| {}).await;
    let customer = app.customer("u-1").await;
    let cus = customer["stripe_customer_id"].as_str().unwrap();
    let price = app.stripe.price("800").await;
    // Stripe creates the subscription but the answer is lost, once: the retry's replay wins.
    app.stripe.fault(json!({"method": "POST", "path": "/v1/subscriptions", "status": 500, "times": 1, "when": "after"})).await;
    let (status, body, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!(status, 201, "{body}");
    let keys = keys_of(&app, "/v1/subscriptions").await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1]);
    let live = live_subscriptions(&app, cus).await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(body["stripe_subscription_id"], live[0]["id"]);
}

#[tokio::test]
async fn every_attempt_failing_after_stripe_acted_still_leaves_one_subscription() {
    let app = spawn(|_| {}).await;
    let customer = app.customer("u-1").await;
    let cus = customer["stripe_customer_id"].as_str().unwrap();
    let price = app.stripe.price("800").await;
    // All three attempts answered 503 although Stripe made the subscription on the first.
    app.stripe.fault(json!({"method": "POST", "path": "/v1/subscriptions", "status": 503, "times": 3, "when": "after"})).await;
    let (status, body, headers) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("billing_unavailable")), "{body}");
    assert!(headers.contains_key("retry-after"));
    let keys: BTreeSet<_> = keys_of(&app, "/v1/subscriptions").await.into_iter().collect();
    assert_eq!(keys.len(), 1, "the three attempts shared one key: {keys:?}");
    // The client retries later: the subscription Stripe made is found, not made again.
    let (status, body, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert!(status == 201 || (status == 409 && body["code"] == "already_subscribed"), "{status} {body}");
    let live = live_subscriptions(&app, cus).await;
    assert_eq!(live.len(), 1, "{live:?}");
    let (_, mine, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    let ours: Vec<&Value> = mine["subscriptions"].as_array().unwrap().iter().filter(|s| s["status"] != "canceled").collect();
    assert_eq!(ours.len(), 1, "{mine}");
    assert_eq!(ours[0]["stripe_subscription_id"], live[0]["id"]);
}

#[tokio::test]
async fn a_stripe_failing_before_acting_then_recovering_gives_one_subscription_and_one_cancel() {
    let app = spawn(|_| {}).await;
    let customer = app.customer("u-1").await;
    let cus = customer["stripe_customer_id"].as_str().unwrap();
    let price = app.stripe.price("800").await;
    app.stripe.fault(json!({"method": "POST", "path": "/v1/subscriptions", "status": 500, "times": 2})).await;
    let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!(status, 201, "{sub}");
    assert_eq!(live_subscriptions(&app, cus).await.len(), 1);
    // Cancelling at period end while Stripe answers 429 then 500: retried with one key.
    let stripe_sub = sub["stripe_subscription_id"].as_str().unwrap();
    let path = format!("/v1/subscriptions/{stripe_sub}");
    app.stripe.fault(json!({"method": "POST", "path": path, "status": 429, "times": 1})).await;
    app.stripe.fault(json!({"method": "POST", "path": path, "status": 500, "times": 1})).await;
    let (status, canceled, _) =
        app.call("DELETE", &format!("/api/v3/customers/me/subscriptions/{}", sub["id"].as_str().unwrap()), "u-1", None, &[]).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["cancel_at_period_end"], true);
    let keys = keys_of(&app, &path).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys[0].is_some() && keys.iter().all(|k| k == &keys[0]), "{keys:?}");
    let (_, at_stripe) = app.stripe.get(&path).await;
    assert_eq!(at_stripe["cancel_at_period_end"], true);
}

#[tokio::test]
async fn stripe_refusing_our_key_is_a_500_that_logs_why_and_never_shows_the_key() {
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    let secret = app.app.variables["stripe_secret_key"].clone();
    assert!(secret.len() >= 20, "a key long enough that finding it is no chance");
    app.stripe.fault(json!({"method": "POST", "path": "/v1/customers", "status": 401, "times": 1})).await;
    let (status, body, headers) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!((status, body["code"].as_str()), (500, Some("internal_error")), "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    // A wrong key is no outage: asked once, not retried, nothing made.
    let requests = app.stripe.requests().await;
    let creates: Vec<_> = requests.iter().filter(|r| r.0 == "POST" && r.1 == "/v1/customers").collect();
    assert_eq!(creates.len(), 1, "{requests:?}");
    assert_eq!(creates[0].3, Some(401));
    assert!(app.stripe.customers_of("u-1").await.is_empty());
    // The operator learns why from the log; nobody learns the key.
    let log = app.app.host.log();
    let cause = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|l| l["message"] == "internal error")
        .unwrap_or_else(|| panic!("no internal error logged:\n{log}"));
    assert_eq!(cause["level"], "ERROR", "{cause}");
    assert!(cause["cause"].as_str().is_some_and(|c| c.contains("stripe refused our credentials (401)")), "{cause}");
    assert!(!body.to_string().contains(&secret), "{body}");
    assert!(!log.contains(&secret), "the Stripe key is in the host log");
}
