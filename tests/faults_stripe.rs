//! Faults, Stripe: the stand-in slow, failing (500/503, before or after acting) and answering
//! 429. Every retry reuses its Idempotency-Key (read from localstripe's request log), and
//! afterwards the stand-in holds exactly one customer per user and one live subscription per
//! price: nothing is duplicated whatever failed.

#[path = "customer_support.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{CustomerApp, spawn};

/// localstripe's log of /v1 requests: (method, path, Idempotency-Key, status).
async fn stripe_requests(app: &CustomerApp) -> Vec<(String, String, Option<String>, u64)> {
    let log: Value = reqwest::get(format!("{}/_config/requests", app.stripe.base)).await.unwrap().json().await.unwrap();
    log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
                r["idempotency_key"].as_str().map(str::to_string),
                r["status"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The keys of every POST to `path`, in order.
async fn keys_of(app: &CustomerApp, path: &str) -> Vec<Option<String>> {
    stripe_requests(app).await.into_iter().filter(|r| r.0 == "POST" && r.1 == path).map(|r| r.2).collect()
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
    let started = Instant::now();
    let (status, body, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 201, "{body}\n{}", app.app.host.log());
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await; // the delayed request finishes
    let keys = keys_of(&app, "/v1/customers").await;
    assert!(keys.len() >= 2 && keys.iter().all(|k| k == &keys[0]), "{keys:?}");
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
