//! Faults, webhooks: a storm of 1,000 signed deliveries (500 distinct events, each delivered
//! twice, shuffled, 8 at a time) about 20 subscriptions whose state changed at Stripe in several
//! steps. Afterwards every subscription in our mirror is in Stripe's final state, each event is
//! in the inbox once, and every second delivery was acknowledged as a duplicate.

#[path = "customer_support.rs"]
mod support;

use std::time::{Duration, Instant};

use integration_tests::join_all;
use serde_json::{Value, json};
use support::{CustomerApp, now, spawn, stripe_signature};

const USERS: usize = 10;
const EVENTS_PER_SUBSCRIPTION: usize = 25;
const CONCURRENCY: usize = 8;

/// A small deterministic shuffle (xorshift), so a failure can be replayed.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

async fn deliver(app: &CustomerApp, client: &reqwest::Client, secret: &str, payload: &str) -> (u16, Value) {
    let response = client
        .post(app.url("/api/v3/billing/stripe/webhook"))
        .header("content-type", "application/json")
        .header("stripe-signature", stripe_signature(secret, now(), payload))
        .body(payload.to_string())
        .send()
        .await
        .expect("the webhook answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_storm_of_duplicated_shuffled_events_ends_in_stripes_state() {
    let app = spawn(|_| {}).await;
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let prices = [app.stripe.price("500").await, app.stripe.price("700").await];
    // (stripe customer, stripe subscription)
    let mut subscriptions = Vec::new();
    for u in 0..USERS {
        let user = format!("storm-{u}");
        let customer = app.customer(&user).await;
        for price in &prices {
            let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", &user, Some(json!({"price_id": price})), &[]).await;
            assert_eq!(status, 201, "{sub}");
            subscriptions.push((customer["stripe_customer_id"].as_str().unwrap().to_string(), sub["stripe_subscription_id"].as_str().unwrap().to_string()));
        }
    }

    // Stripe's side moves on in several steps, without telling us (no webhook is registered).
    let http = reqwest::Client::new();
    for (i, (_, sub)) in subscriptions.iter().enumerate() {
        let path = format!("/v1/subscriptions/{sub}");
        match i % 4 {
            0 => {
                app.stripe.post(&path, &[("cancel_at_period_end", "true")]).await;
                http.delete(format!("{}{path}", app.stripe.base)).bearer_auth("sk_test_x").send().await.unwrap();
            }
            1 => {
                app.stripe.post(&path, &[("cancel_at_period_end", "true")]).await;
            }
            2 => {
                app.stripe.post(&path, &[("cancel_at_period_end", "true")]).await;
                app.stripe.post(&path, &[("cancel_at_period_end", "false")]).await;
            }
            _ => {}
        }
    }

    // The events of those steps: created, many updates, invoices, and a deletion where there was one.
    let t0 = now() - 3600;
    let mut payloads = Vec::new();
    for (i, (cus, sub)) in subscriptions.iter().enumerate() {
        for k in 0..EVENTS_PER_SUBSCRIPTION {
            let created = t0 + k as i64 * 10;
            let kind = match k {
                0 => "customer.subscription.created",
                k if k == EVENTS_PER_SUBSCRIPTION - 1 && i % 4 == 0 => "customer.subscription.deleted",
                k if k % 6 == 5 => "invoice.paid",
                _ => "customer.subscription.updated",
            };
            let object = if kind.starts_with("invoice") {
                json!({"id": format!("in_storm_{i}_{k}"), "object": "invoice", "customer": cus, "subscription": sub})
            } else {
                // Intermediate states in the event bodies; the handler re-reads Stripe anyway.
                json!({"id": sub, "object": "subscription", "customer": cus, "status": if k % 2 == 0 { "active" } else { "past_due" },
                       "cancel_at_period_end": k % 3 == 0})
            };
            payloads.push(json!({"id": format!("evt_storm_{i}_{k}"), "object": "event", "type": kind, "created": created,
                                 "data": {"object": object}}).to_string());
        }
    }
    let distinct = payloads.len();
    let mut deliveries: Vec<String> = payloads.iter().chain(payloads.iter()).cloned().collect();
    shuffle(&mut deliveries, 0x5eed_1234_abcd_ef01);
    assert_eq!(deliveries.len(), 1000);

    let started = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut outcomes: Vec<(u16, Value)> = Vec::new();
    let mut retried = 0;
    for chunk in deliveries.chunks(CONCURRENCY) {
        let answers = join_all(chunk.iter().map(|p| deliver(&app, &client, &secret, p))).await;
        for (payload, answer) in chunk.iter().zip(answers) {
            let mut answer = answer;
            // A 503 is Stripe's cue to deliver again (as it would, for up to three days).
            let mut tries = 0;
            while answer.0 == 503 && tries < 5 {
                retried += 1;
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                answer = deliver(&app, &client, &secret, payload).await;
            }
            outcomes.push(answer);
        }
    }
    let elapsed = started.elapsed();
    let mut by_outcome = std::collections::BTreeMap::new();
    for (_, body) in &outcomes {
        *by_outcome.entry(body["outcome"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
    }
    let failed: Vec<&(u16, Value)> = outcomes.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "{} deliveries not acknowledged: {:?}\n{}", failed.len(), &failed[..failed.len().min(5)], app.app.host.log());
    let duplicates = outcomes.iter().filter(|(_, b)| b["duplicate"] == true).count();
    assert_eq!(duplicates, 1000 - distinct, "every second delivery is a duplicate");
    let inbox = app.db_rows("SELECT COUNT(*) FROM stripe_events WHERE id LIKE 'evt_storm_%'").await;
    assert_eq!(inbox[0].get::<i64, _>(0), Some(distinct as i64));

    // Our mirror equals Stripe's final state, subscription by subscription.
    for (i, (_, sub)) in subscriptions.iter().enumerate() {
        let (_, theirs) = app.stripe.get(&format!("/v1/subscriptions/{sub}")).await;
        let ours = app.db_rows(&format!("SELECT status, cancel_at_period_end FROM subscriptions WHERE stripe_subscription_id = '{sub}'")).await;
        assert_eq!(ours.len(), 1, "{sub}");
        let status: String = ours[0].get(0).unwrap();
        let cancel: i64 = ours[0].get(1).unwrap();
        assert_eq!(status, theirs["status"].as_str().unwrap(), "subscription {i} ({sub}): status");
        assert_eq!(cancel == 1, theirs["cancel_at_period_end"].as_bool().unwrap(), "subscription {i} ({sub}): cancel_at_period_end");
        let expected = match i % 4 {
            0 => "canceled",
            _ => "active",
        };
        assert_eq!(status, expected, "subscription {i}");
    }
    eprintln!(
        "faults_webhooks: 1000 deliveries ({distinct} events, {} subscriptions) in {:.1} s, {retried} redelivered after a 503; outcomes {by_outcome:?}",
        subscriptions.len(),
        elapsed.as_secs_f64()
    );
}
