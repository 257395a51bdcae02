//! The customer API end to end: the real customer.wasm on the local host, MariaDB, a private
//! localstripe, and auth (a stand-in on 127.0.0.1, or the real auth component).

#[path = "customer_support.rs"]
mod support;

use std::time::{Duration, Instant};

use integration_tests::join_all;
use serde_json::{Value, json};
use support::{Key, spawn};

/// register at auth → customer → subscribe → signed webhook → active → invoices with bill_to → cancel.
#[tokio::test]
async fn the_whole_journey_with_the_auth_stand_in() {
    let app = spawn(|_| {}).await;
    // localstripe sends its events, signed with the app's secret, to the app.
    app.stripe
        .register_webhook(&app.url("/api/v3/billing/stripe/webhook"), &app.app.variables["stripe_webhook_secret"])
        .await;
    app.auth.add_user("u-1", "Ada Lovelace", "ada@example.org");

    // Not a customer yet: the seed's free user.
    let (status, body, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_a_customer");

    let (status, customer, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [5, 2]})), &[]).await;
    assert_eq!(status, 201, "{customer}\n{}", app.app.host.log());
    assert_eq!(customer["id"], "u-1");
    assert_eq!(customer["area_ids"], json!([2, 5]));
    let stripe_customer = customer["stripe_customer_id"].as_str().unwrap().to_string();
    let (_, at_stripe) = app.stripe.get(&format!("/v1/customers/{stripe_customer}")).await;
    assert_eq!(at_stripe["email"], "ada@example.org");
    assert_eq!(at_stripe["name"], "Ada Lovelace");
    assert_eq!(at_stripe["metadata"]["user_id"], "u-1");

    let (status, me, _) = app.call("GET", "/api/v3/customers/me?include=profile", "u-1", None, &[]).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["profile"]["name"], "Ada Lovelace");
    assert_eq!(me["profile"]["email"], "ada@example.org");
    assert_eq!(me["profile"]["email_verified"], false, "the stand-in does not say: not proven");
    assert!(me["created_at"].as_str().unwrap().ends_with('Z'));
    // The caller's own profile is read with the caller's own token (least privilege): never
    // with customer's service token.
    let seen = app.auth.state.lock().unwrap().seen.clone();
    assert!(seen.iter().any(|s| s.starts_with("GET /api/v3/users/me Bearer ey")), "{seen:?}");
    assert!(!seen.iter().any(|s| s.starts_with("GET /api/v3/users/u-1")), "{seen:?}");

    let (status, patched, _) = app.call("PATCH", "/api/v3/customers/me", "u-1", Some(json!({"area_ids": [7]})), &[]).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["area_ids"], json!([7]));

    app.stripe.add_card(&stripe_customer).await;
    let price = app.stripe.price("1500").await;
    let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!(status, 201, "{sub}\n{}", app.app.host.log());
    assert_eq!(sub["price_id"], price.as_str());
    let stripe_sub = sub["stripe_subscription_id"].as_str().unwrap().to_string();

    // The signed webhooks arrive and are applied; the subscription is active.
    support::wait_for_applied_webhook(&app.app, &stripe_sub).await;
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!(list["subscriptions"][0]["status"], "active", "{list}");
    assert!(list["subscriptions"][0]["current_period_end"].is_string());

    // A second subscription to the same price is refused (no duplicate at Stripe).
    let (status, body, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "already_subscribed");

    let (status, invoices, _) = app.call("GET", "/api/v3/customers/me/invoices", "u-1", None, &[]).await;
    assert_eq!(status, 200, "{invoices}");
    assert_eq!(invoices["bill_to"]["name"], "Ada Lovelace");
    assert_eq!(invoices["bill_to"]["email"], "ada@example.org");
    let first = &invoices["invoices"][0];
    assert_eq!(first["status"], "paid", "{invoices}");
    assert_eq!(first["amount_paid"], 1500);
    assert_eq!(first["currency"], "eur");
    // The number, hosted page and PDF are Stripe's, passed on as Stripe has them.
    let (_, at_stripe) = app.stripe.get(&format!("/v1/invoices/{}", first["id"].as_str().unwrap_or_default())).await;
    assert!(at_stripe["number"].as_str().is_some_and(|n| n.ends_with("-0001")), "{at_stripe}");
    for field in ["number", "hosted_invoice_url", "invoice_pdf"] {
        assert_eq!(first[field], at_stripe[field], "{field}: {invoices}");
    }

    let id = sub["id"].as_str().unwrap();

    // Moving to another price (Cashier's swap): Stripe's item gets it, the mirror follows, and a
    // price Stripe does not know is refused naming price_id, changing nothing.
    let pro = app.stripe.price("2500").await;
    let path = format!("/api/v3/customers/me/subscriptions/{id}");
    let (status, moved, _) = app.call("PATCH", &path, "u-1", Some(json!({"price_id": pro})), &[]).await;
    assert_eq!((status, &moved["price_id"], &moved["status"]), (200, &json!(pro), &json!("active")), "{moved}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
    assert_eq!(at_stripe["items"]["data"][0]["price"]["id"], pro.as_str(), "{at_stripe}");
    let (status, problem, _) = app.call("PATCH", &path, "u-1", Some(json!({"price_id": "price_nothing"})), &[]).await;
    assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!("price_id")), "{problem}");
    let (_, read, _) = app.call("GET", &path, "u-1", None, &[]).await;
    assert_eq!(read["price_id"], pro.as_str(), "{read}");

    let (status, canceled, _) = app.call("DELETE", &format!("/api/v3/customers/me/subscriptions/{id}"), "u-1", None, &[]).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["cancel_at_period_end"], true);
    assert_eq!(canceled["status"], "active");

    // Changing one's mind: the scheduled cancellation is withdrawn at Stripe, then scheduled
    // again (a change of its own there, not the first cancel's replay).
    let subscription = format!("/api/v3/customers/me/subscriptions/{id}");
    let cancel_at_period_end_at_stripe = || async {
        let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
        at_stripe["cancel_at_period_end"].clone()
    };
    let (status, resumed, _) = app.call("PATCH", &subscription, "u-1", Some(json!({"cancel_at_period_end": false})), &[]).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!((&resumed["cancel_at_period_end"], &resumed["status"]), (&json!(false), &json!("active")), "{resumed}");
    assert_eq!(cancel_at_period_end_at_stripe().await, false);
    let (status, again, _) = app.call("PATCH", &subscription, "u-1", Some(json!({"cancel_at_period_end": true})), &[]).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["cancel_at_period_end"], true, "{again}");
    assert_eq!(cancel_at_period_end_at_stripe().await, true, "the second cancel reached Stripe");
    let (status, problem, _) = app.call("PATCH", &subscription, "u-1", Some(json!({"cancel_at_period_end": "no"})), &[]).await;
    assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!("cancel_at_period_end")), "{problem}");
    let (status, problem, _) = app.call("PATCH", &subscription, "u-2", Some(json!({"cancel_at_period_end": false})), &[]).await;
    assert_eq!(status, 404, "another user's subscription: {problem}");
    assert_eq!(cancel_at_period_end_at_stripe().await, true);

    let (status, canceled, _) =
        app.call("DELETE", &format!("/api/v3/customers/me/subscriptions/{id}?at_period_end=false"), "u-1", None, &[]).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
    assert_eq!(at_stripe["status"], "canceled");
    let (status, problem, _) = app.call("PATCH", &subscription, "u-1", Some(json!({"cancel_at_period_end": false})), &[]).await;
    assert_eq!((status, &problem["code"]), (409, &json!("subscription_ended")), "{problem}");

    // Leaving: Stripe first, then our rows.
    let (status, _, _) = app.call("DELETE", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 204);
    let (status, _) = app.stripe.get(&format!("/v1/customers/{stripe_customer}")).await;
    assert_eq!(status, 404);
    let (status, _, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 404);
    let audit = app.db_rows("SELECT action FROM audit_log WHERE subject = 'u-1' ORDER BY id").await;
    let actions: Vec<String> = audit.into_iter().map(|r| r.get::<String, _>(0).unwrap()).collect();
    assert!(actions.contains(&"customer.created".to_string()) && actions.contains(&"customer.deleted".to_string()), "{actions:?}");
}

/// Leaving billing while a creation has inserted the customer but not yet committed (the race
/// the erasure meets: auth said the account exists, then the erasure deleted it and closed
/// billing): the close waits for the COMMIT and closes that customer, rather than seeing no row
/// and leaving it behind. The creation's transaction is played here by a connection of the test.
#[tokio::test]
async fn leaving_billing_waits_for_a_creation_in_flight_and_closes_its_customer() {
    use mysql_async::prelude::Queryable;
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-1", "Ada Lovelace", "ada@example.org");
    let stripe_customer = app.stripe.post("/v1/customers", &[("email", "ada@example.org")]).await["id"].as_str().expect("id").to_string();
    let mut creation = app.app.customer_db.connect().await.unwrap();
    let mut tx = creation.start_transaction(mysql_async::TxOpts::default()).await.unwrap();
    tx.exec_drop("INSERT INTO customers (id, stripe_customer_id) VALUES ('u-1', ?)", (stripe_customer.as_str(),)).await.unwrap();
    let leave = app.call("DELETE", "/api/v3/customers/me", "u-1", None, &[]);
    let commit = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.commit().await.unwrap();
    };
    let ((status, body, _), ()) = tokio::join!(leave, commit);
    assert_eq!(status, 204, "{body}");
    assert!(app.db_rows("SELECT id FROM customers").await.is_empty());
    let (status, _) = app.stripe.get(&format!("/v1/customers/{stripe_customer}")).await;
    assert_eq!(status, 404, "the Stripe customer is deleted");
    creation.disconnect().await.ok();
}

/// One user's script cannot spend the Stripe account's rate limit: past its budget a minute,
/// the user's requests that would reach Stripe get 429 and reach nothing; other users, and the
/// routes that never call Stripe, go on.
#[tokio::test]
async fn each_user_has_a_budget_of_requests_that_reach_stripe() {
    let app = spawn(|vars| {
        vars.insert("stripe_calls_per_user_per_minute".into(), "3".into());
    })
    .await;
    app.auth.add_user("u-1", "Ada Lovelace", "ada@example.org");
    app.auth.add_user("u-2", "Grace Hopper", "grace@example.org");
    // Begin early in a clock minute, so that the four calls below share one.
    let into_minute = support::now().rem_euclid(60);
    if into_minute > 45 {
        tokio::time::sleep(Duration::from_secs((61 - into_minute) as u64)).await;
    }
    let (status, _, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 201);
    let (status, _, _) = app.call("GET", "/api/v3/customers/me/invoices", "u-1", None, &[]).await;
    assert_eq!(status, 200);
    let (status, _, _) = app.call("GET", "/api/v3/customers/me/payment-method", "u-1", None, &[]).await;
    assert_eq!(status, 404, "no card yet");
    let before = app.stripe.requests().await.len();
    let (status, problem, headers) = app.call("GET", "/api/v3/customers/me/invoices", "u-1", None, &[]).await;
    assert_eq!((status, &problem["code"]), (429, &json!("rate_limited")), "{problem}");
    let retry_after: u64 = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(app.stripe.requests().await.len(), before, "the refused request reached nothing at Stripe");
    // A keyed write refused so is not kept for its key: sent again with the same key, it runs
    // again (429 again here, with its Retry-After, not a replay that would last a day).
    let keyed = [("idempotency-key", "subscribe-once")];
    for attempt in ["first", "retry"] {
        let (status, problem, headers) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": "price_x"})), &keyed).await;
        assert_eq!((status, &problem["code"]), (429, &json!("rate_limited")), "{attempt}: {problem}");
        assert!(headers.get("retry-after").is_some() && headers.get("idempotent-replayed").is_none(), "{attempt}: {headers:?}");
    }
    // Not counted: the read that never calls Stripe. Another user has a budget of their own.
    let (status, _, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 200);
    let (status, body, _) = app.call("POST", "/api/v3/customers", "u-2", Some(json!({"area_ids": [2]})), &[]).await;
    assert_eq!(status, 201, "{body}");
}

/// `subscription_trial_days`: a customer's first subscription starts `trialing` without a card,
/// charges nothing, ends its trial as configured, and tells Stripe to cancel it if no card is on
/// file by then; the next subscription gets no trial and is charged at once.
#[tokio::test]
async fn a_first_subscription_gets_the_configured_trial_and_only_the_first() {
    let app = spawn(|vars| {
        vars.insert("subscription_trial_days".into(), "14".into());
    })
    .await;
    let stripe_customer = app.billing_user().await;
    let price = app.stripe.price("900").await;

    let started = support::now();
    let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!(status, 201, "no card is needed for a trial: {sub}\n{}", app.app.host.log());
    assert_eq!((&sub["status"], &sub["pending_payment"]), (&json!("trialing"), &Value::Null), "{sub}");
    let stripe_sub = sub["stripe_subscription_id"].as_str().unwrap().to_string();
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
    assert_eq!(at_stripe["status"], "trialing", "{at_stripe}");
    let trial_end = at_stripe["trial_end"].as_i64().expect("trial_end at Stripe");
    assert!((started + 14 * 86_400 - 5..=support::now() + 14 * 86_400 + 5).contains(&trial_end), "{at_stripe}");
    let trial_end = rfc3339::format(trial_end);
    assert_eq!(sub["current_period_end"], trial_end.as_str(), "the trial's end: {sub}");
    assert_eq!(at_stripe["trial_settings"]["end_behavior"]["missing_payment_method"], "cancel", "{at_stripe}");
    let (_, invoices) = app.stripe.get(&format!("/v1/invoices?customer={stripe_customer}")).await;
    assert_eq!(invoices["data"], json!([]), "nothing charged during the trial");
    support::wait_for_applied_webhook(&app.app, &stripe_sub).await;
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!((&list["subscriptions"][0]["status"], &list["subscriptions"][0]["current_period_end"]), (&json!("trialing"), &json!(trial_end)), "{list}");

    // A second price: no trial, charged at once (so it needs the card).
    app.stripe.add_card(&stripe_customer).await;
    let second_price = app.stripe.price("300").await;
    let (status, second, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": second_price})), &[]).await;
    assert_eq!((status, &second["status"]), (201, &json!("active")), "{second}");
    let (_, invoices) = app.stripe.get(&format!("/v1/invoices?customer={stripe_customer}")).await;
    assert_eq!(invoices["data"].as_array().map(Vec::len), Some(1), "{invoices}");
    assert_eq!(invoices["data"][0]["amount_paid"], 300, "{invoices}");

    // Leaving billing and coming back as a new Stripe customer gives no second trial.
    let (status, _, _) = app.call("DELETE", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 204);
    let (status, again, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 201, "{again}");
    app.stripe.add_card(again["stripe_customer_id"].as_str().unwrap()).await;
    let (status, resubscribed, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!((status, &resubscribed["status"]), (201, &json!("active")), "{resubscribed}");
    let grants = integration_tests::db_rows(&app.app.customer_db, "SELECT customer_id, days FROM trial_grants").await;
    assert_eq!(grants, vec![vec!["u-1".to_string(), "14".to_string()]]);
}

/// SCA: a card whose first payment asks for 3-D Secure. The subscription starts `incomplete`
/// and its answer carries the PaymentIntent's client_secret for Stripe.js; read again later, it
/// still does; once the user passes the check, Stripe's webhook makes it active.
#[tokio::test]
async fn a_first_payment_asking_for_3ds_is_finished_in_the_browser() {
    let app = spawn(|_| {}).await;
    let stripe_customer = app.billing_user().await;
    app.stripe.add_card_numbered(&stripe_customer, "4000002500003155").await;
    let price = app.stripe.price("700").await;

    let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!(status, 201, "{sub}\n{}", app.app.host.log());
    assert_eq!(sub["status"], "incomplete", "{sub}");
    assert_eq!(sub["pending_payment"]["status"], "requires_action", "{sub}");
    let client_secret = sub["pending_payment"]["client_secret"].as_str().expect("a client_secret for Stripe.js").to_string();
    let intent = client_secret.split("_secret_").next().unwrap().to_string();
    let (_, at_stripe) = app.stripe.get(&format!("/v1/payment_intents/{intent}")).await;
    assert_eq!((&at_stripe["status"], &at_stripe["client_secret"]), (&json!("requires_action"), &json!(client_secret)), "{at_stripe}");

    // The page was closed before the check: reading the subscription gives the payment again.
    let path = format!("/api/v3/customers/me/subscriptions/{}", sub["id"].as_str().unwrap());
    let (status, read, _) = app.call("GET", &path, "u-1", None, &[]).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["pending_payment"], sub["pending_payment"], "{read}");
    let (status, _, _) = app.call("GET", &path, "u-2", None, &[]).await;
    assert_eq!(status, 404, "another user's subscription");

    // Stripe.js: the user passes 3-D Secure; Stripe charges and tells us by webhook.
    let authenticated = app
        .stripe
        .post(&format!("/v1/payment_intents/{intent}/_authenticate"), &[("client_secret", client_secret.as_str()), ("success", "true")])
        .await;
    assert_eq!(authenticated["status"], "succeeded", "{authenticated}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, read, _) = app.call("GET", &path, "u-1", None, &[]).await;
        if read["status"] == "active" {
            assert_eq!(read["pending_payment"], Value::Null, "{read}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {read} after the payment:\n{}", app.app.host.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!(list["subscriptions"][0]["status"], "active", "{list}");
}

/// The same journey with the real auth component: registration at auth gives the token, and
/// every profile (Stripe's customer, include=profile, bill_to) comes from auth over service chaining.
#[tokio::test]
async fn the_whole_journey_with_the_real_auth() {
    let stripe = support::LocalStripe::start().await;
    let app = support::spawn_app_on(&stripe, |_| {}).await;
    stripe.register_webhook(&app.url("/api/v3/billing/stripe/webhook"), &app.variables["stripe_webhook_secret"]).await;
    let register = app
        .client
        .post(app.url("/api/v3/auth/register"))
        .json(&json!({"name": "Grace Hopper", "email": "Grace@Example.org", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201, "{}", app.host.log());
    let registered: Value = register.json().await.unwrap();
    let token = registered["access_token"].as_str().unwrap().to_string();
    let user_id = registered["user"]["id"].as_str().unwrap().to_string();
    let email = registered["user"]["email"].as_str().unwrap().to_string();
    let call = |method: &str, path: &str, body: Option<Value>| {
        let mut request = app.client.request(method.parse().unwrap(), app.url(path)).bearer_auth(&token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, body) = call("GET", "/api/v3/customers/me", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_a_customer");
    let (status, customer) = call("POST", "/api/v3/customers", Some(json!({"area_ids": [1]}))).await;
    assert_eq!(status, 201, "{customer}\n{}", app.host.log());
    assert_eq!(customer["id"], user_id.as_str());
    let stripe_customer = customer["stripe_customer_id"].as_str().unwrap().to_string();
    let (_, at_stripe) = stripe.get(&format!("/v1/customers/{stripe_customer}")).await;
    assert_eq!(at_stripe["name"], "Grace Hopper");
    assert_eq!(at_stripe["email"], email.as_str());
    assert_eq!(at_stripe["metadata"]["user_id"], user_id.as_str());

    // A card, as a browser adds one: a SetupIntent for the caller's Stripe customer, confirmed
    // by Stripe.js with its client_secret (the card goes to Stripe only), made the default here.
    let (status, problem) = call("GET", "/api/v3/customers/me/payment-method", None).await;
    assert_eq!((status, &problem["code"]), (404, &json!("no_payment_method")), "{problem}");
    let (status, intent) = call("POST", "/api/v3/customers/me/setup-intents", None).await;
    assert_eq!(status, 201, "{intent}");
    let intent_id = intent["id"].as_str().unwrap();
    let (_, at_stripe) = stripe.get(&format!("/v1/setup_intents/{intent_id}")).await;
    assert_eq!((&at_stripe["customer"], &at_stripe["client_secret"]), (&json!(stripe_customer), &intent["client_secret"]), "{at_stripe}");
    let confirmed = stripe.confirm_setup_intent(intent_id, intent["client_secret"].as_str().unwrap(), "4242424242424242").await;
    assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    let card = confirmed["payment_method"].as_str().unwrap();
    let (status, method) = call("PUT", "/api/v3/customers/me/payment-method", Some(json!({"payment_method_id": card}))).await;
    assert_eq!(status, 200, "{method}");
    assert_eq!(method, json!({"id": card, "type": "card", "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2031}}));
    let (_, at_stripe) = stripe.get(&format!("/v1/customers/{stripe_customer}")).await;
    assert_eq!(at_stripe["invoice_settings"]["default_payment_method"], card, "{at_stripe}");
    let (status, shown) = call("GET", "/api/v3/customers/me/payment-method", None).await;
    assert_eq!((status, &shown), (200, &method));
    let (status, problem) = call("PUT", "/api/v3/customers/me/payment-method", Some(json!({"payment_method_id": "pm_nothing"}))).await;
    assert_eq!((status, &problem["errors"][0]["field"], &problem["errors"][0]["code"]), (422, &json!("payment_method_id"), &json!("not_found")), "{problem}");
    let (status, me) = call("GET", "/api/v3/customers/me?include=profile", None).await;
    assert_eq!(status, 200);
    let profile = &me["profile"];
    assert_eq!((&profile["id"], &profile["name"], &profile["email"]), (&json!(user_id), &json!("Grace Hopper"), &json!(email)), "{me}");
    assert_eq!(profile["stale"], false, "{me}");

    let price = stripe.price("900").await;
    let (status, sub) = call("POST", "/api/v3/customers/me/subscriptions", Some(json!({"price_id": price}))).await;
    assert_eq!(status, 201, "{sub}");
    let stripe_sub = sub["stripe_subscription_id"].as_str().unwrap().to_string();
    support::wait_for_applied_webhook(&app, &stripe_sub).await;
    let (_, list) = call("GET", "/api/v3/customers/me/subscriptions", None).await;
    assert_eq!(list["subscriptions"][0]["status"], "active", "{list}");

    let (status, invoices) = call("GET", "/api/v3/customers/me/invoices", None).await;
    assert_eq!(status, 200, "{invoices}");
    assert_eq!((&invoices["bill_to"]["name"], &invoices["bill_to"]["email"]), (&json!("Grace Hopper"), &json!(email)), "{invoices}");
    assert_eq!(invoices["invoices"][0]["status"], "paid", "{invoices}");
    assert_eq!(invoices["invoices"][0]["amount_paid"], 900);

    // A new name at auth reaches the Stripe customer (whose copy Stripe prints on invoices): the
    // next subscription's invoice.created event has customer read auth's current profile (not
    // the copy cached by the invoice list above) with its service token, and send it.
    let (status, renamed) = call("PATCH", "/api/v3/users/me", Some(json!({"name": "Grace Brewster Hopper"}))).await;
    assert_eq!(status, 200, "{renamed}");
    let second_price = stripe.price("300").await;
    let (status, second) = call("POST", "/api/v3/customers/me/subscriptions", Some(json!({"price_id": second_price}))).await;
    assert_eq!(status, 201, "{second}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let synced = "SELECT outcome FROM stripe_events WHERE type = 'invoice.created' AND outcome = 'applied'";
    while integration_tests::db_rows(&app.customer_db, synced).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no invoice.created synced the profile:\n{}", app.host.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, at_stripe) = stripe.get(&format!("/v1/customers/{stripe_customer}")).await;
    assert_eq!((&at_stripe["name"], &at_stripe["email"]), (&json!("Grace Brewster Hopper"), &json!(email)), "{at_stripe}");

    let (status, canceled) = call("DELETE", &format!("/api/v3/customers/me/subscriptions/{}", sub["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["cancel_at_period_end"], true);
    let (_, at_stripe) = stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
    assert_eq!(at_stripe["cancel_at_period_end"], true, "{at_stripe}");

    // The card cannot be removed while the second subscription would renew with it; once that
    // one ends at its period's end too, it is detached at Stripe and no longer the default.
    let second_id = second["id"].as_str().unwrap();
    let (status, problem) = call("DELETE", "/api/v3/customers/me/payment-method", None).await;
    assert_eq!((status, &problem["code"]), (409, &json!("payment_method_in_use")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains(second_id), "{problem}");
    let (_, at_stripe) = stripe.get(&format!("/v1/payment_methods/{card}")).await;
    assert_eq!(at_stripe["customer"], stripe_customer.as_str(), "refused: still attached");
    let (status, _) = call("DELETE", &format!("/api/v3/customers/me/subscriptions/{second_id}"), None).await;
    assert_eq!(status, 200);
    let (status, removed) = call("DELETE", "/api/v3/customers/me/payment-method", None).await;
    assert_eq!(status, 204, "{removed}");
    let (_, at_stripe) = stripe.get(&format!("/v1/payment_methods/{card}")).await;
    assert_eq!(at_stripe["customer"], Value::Null, "detached: {at_stripe}");
    let (_, at_stripe) = stripe.get(&format!("/v1/customers/{stripe_customer}")).await;
    assert_eq!(at_stripe["invoice_settings"]["default_payment_method"], Value::Null, "{at_stripe}");
    let (status, problem) = call("GET", "/api/v3/customers/me/payment-method", None).await;
    assert_eq!((status, &problem["code"]), (404, &json!("no_payment_method")), "{problem}");
    let (status, problem) = call("DELETE", "/api/v3/customers/me/payment-method", None).await;
    assert_eq!((status, &problem["code"]), (404, &json!("no_payment_method")), "{problem}");

    let (status, _) = call("DELETE", "/api/v3/customers/me", None).await;
    assert_eq!(status, 204);
    let (status, _) = stripe.get(&format!("/v1/customers/{stripe_customer}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_other_bodies() {
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    let key = [("idempotency-key", "create-1")];
    let (s1, first, first_headers) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1, 2]})), &key).await;
    assert_eq!(s1, 201, "{first}");
    assert_eq!(first_headers["location"], "/api/v3/customers/u-1");
    let (s2, second, headers) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1, 2]})), &key).await;
    assert_eq!(s2, 201, "{second}");
    assert_eq!(first, second);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(headers["location"], "/api/v3/customers/u-1", "a replay says where the customer is too");
    // Same key, other body: 422.
    let (s3, third, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [3]})), &key).await;
    assert_eq!(s3, 422, "{third}");
    assert_eq!(third["code"], "idempotency_key_reused");
    // Without the key, the second create is a conflict.
    let (s4, fourth, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1, 2]})), &[]).await;
    assert_eq!(s4, 409, "{fourth}");
    assert_eq!(app.stripe.customers_of("u-1").await.len(), 1);
    // Keys are per caller: another user's identical key is independent.
    app.auth.add_user("u-2", "Bob", "bob@example.org");
    let (s5, fifth, headers) = app.call("POST", "/api/v3/customers", "u-2", Some(json!({"area_ids": [1, 2]})), &key).await;
    assert_eq!(s5, 201, "{fifth}");
    assert_eq!(fifth["id"], "u-2", "u-1's answer must not be replayed to u-2");
    assert!(headers.get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn bad_requests_are_problems() {
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    let post = |body: &str, content_type: &str, token: Option<String>| {
        let mut request = app.app.client.post(app.url("/api/v3/customers")).header("content-type", content_type).body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
            (status, content_type, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let token = Some(app.token("u-1"));
    let (status, content_type, body) = post(r#"{"area_ids": []}"#, "application/json", token.clone()).await;
    assert_eq!((status, content_type.as_str()), (422, "application/problem+json"), "{body}");
    // Field errors have auth's shape: {field, code, detail}, under the same title.
    assert_eq!((body["title"].as_str(), body["code"].as_str()), (Some("Invalid fields"), Some("validation_failed")), "{body}");
    let mut keys: Vec<&String> = body["errors"][0].as_object().expect("a field error").keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "detail", "field"], "{body}");
    assert_eq!((body["errors"][0]["field"].as_str(), body["errors"][0]["code"].as_str()), (Some("area_ids"), Some("too_few")));
    let (status, _, body) = post(r#"{"area_ids": [1, 1]}"#, "application/json", token.clone()).await;
    assert_eq!((status, body["errors"][0]["code"].as_str()), (422, Some("duplicate")), "{body}");
    let (status, _, body) = post(r#"{"area_ids": [1, -4]}"#, "application/json", token.clone()).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("area_ids[1]")));
    assert_eq!(body["errors"][0]["code"], "out_of_range");
    let ids: Vec<i64> = (1..=101).collect();
    let (status, _, _) = post(&json!({"area_ids": ids}).to_string(), "application/json", token.clone()).await;
    assert_eq!(status, 422);
    let (status, _, body) = post("{not json", "application/json", token.clone()).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed_json")));
    let problem = |status: u16, code: &str| (status, "application/problem+json".to_string(), Some(code.to_string()));
    let code = |body: &Value| body["code"].as_str().map(str::to_string);
    let (status, content_type, body) = post(r#"{"area_ids": [1]}"#, "text/plain", token.clone()).await;
    assert_eq!((status, content_type, code(&body)), problem(415, "unsupported_media_type"), "{body}");
    let (status, content_type, body) = post(&"x".repeat(70_000), "application/json", token.clone()).await;
    assert_eq!((status, content_type, code(&body)), problem(413, "payload_too_large"), "{body}");
    // No token: 401 missing_token. A token from a key auth never published, a token for another
    // audience, an expired one: the same 401 invalid_token for each (auth's codes).
    let (status, content_type, body) = post(r#"{"area_ids": [1]}"#, "application/json", None).await;
    assert_eq!((status, content_type, code(&body)), problem(401, "missing_token"), "{body}");
    let forged = Key::generate(&Key::parse(&app.app.variables["token_signing_keys"]).kid).access_token("u-1");
    let (status, content_type, body) = post(r#"{"area_ids": [1]}"#, "application/json", Some(forged)).await;
    assert_eq!((status, content_type, code(&body)), problem(401, "invalid_token"), "{body}");
    let now = support::now();
    let other_audience = app.key.sign("at+jwt", &json!({"iss": "auth", "aud": "elsewhere", "sub": "u-1", "iat": now, "exp": now + 60, "jti": "x1"}));
    let (status, content_type, body) = post(r#"{"area_ids": [1]}"#, "application/json", Some(other_audience)).await;
    assert_eq!((status, content_type, code(&body)), problem(401, "invalid_token"), "{body}");
    let expired = app.key.sign("at+jwt", &json!({"iss": "auth", "aud": "auth-billing", "sub": "u-1", "iat": now - 4000, "exp": now - 3000, "jti": "x2"}));
    let (status, content_type, body) = post(r#"{"area_ids": [1]}"#, "application/json", Some(expired)).await;
    assert_eq!((status, content_type, code(&body)), problem(401, "invalid_token"), "{body}");
    // A user auth does not know.
    let (status, body, _) = app.call("POST", "/api/v3/customers", "ghost", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("profile_not_found")), "{body}");
    assert!(app.stripe.customers_of("ghost").await.is_empty());
    // Unknown routes under ours: problem+json 404.
    let (status, body, _) = app.call("GET", "/api/v3/customers/me/nothing", "u-1", None, &[]).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn user_a_cannot_see_or_change_user_b() {
    let app = spawn(|_| {}).await;
    app.customer("user-a").await;
    let b = app.customer("user-b").await;
    let price = app.stripe.price("700").await;
    let (status, b_sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "user-b", Some(json!({"price_id": price})), &[]).await;
    assert_eq!(status, 201, "{b_sub}");

    let (status, body, _) = app.call("GET", "/api/v3/customers/user-b", "user-a", None, &[]).await;
    assert_eq!(status, 404, "{body}");
    let (status, mine, _) = app.call("GET", "/api/v3/customers/user-a", "user-a", None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(mine["id"], "user-a");
    let path = format!("/api/v3/customers/me/subscriptions/{}", b_sub["id"].as_str().unwrap());
    let (status, _, _) = app.call("DELETE", &path, "user-a", None, &[]).await;
    assert_eq!(status, 404);
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "user-a", None, &[]).await;
    assert_eq!(list["subscriptions"], json!([]));
    let (_, b_list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "user-b", None, &[]).await;
    assert_eq!(b_list["subscriptions"][0]["status"], "active");
    let (_, b_now, _) = app.call("GET", "/api/v3/customers/me", "user-b", None, &[]).await;
    assert_eq!(b_now["stripe_customer_id"], b["stripe_customer_id"]);
}

#[tokio::test]
async fn twenty_concurrent_creates_make_one_customer() {
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-race", "Racer", "race@example.org");
    // One request first, so the race is between creations alone: cold, each of the twenty also
    // fetches auth's keys (customer_faults::a_cold_start_burst_… tests that on its own).
    let (status, body, _) = app.call("GET", "/api/v3/customers/me", "u-race", None, &[]).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_a_customer")), "{body}");
    let requests = (0..20).map(|_| app.call("POST", "/api/v3/customers", "u-race", Some(json!({"area_ids": [1]})), &[]));
    let results = join_all(requests).await;
    let outcomes: Vec<_> = results.iter().map(|(status, body, _)| (*status, body["code"].clone())).collect();
    let created = outcomes.iter().filter(|(s, _)| *s == 201).count();
    let conflicts = outcomes.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!((created, conflicts), (1, 19), "{outcomes:?}\n{}", app.app.host.log());
    assert_eq!(app.stripe.customers_of("u-race").await.len(), 1);
    let rows = app.db_rows("SELECT COUNT(*) FROM customers").await;
    assert_eq!(rows[0].get::<i64, _>(0), Some(1));
}

#[tokio::test]
async fn services_read_customers_with_a_service_token() {
    let ops = Key::generate("ops-1");
    let app = support::spawn_trusting(&ops).await;
    app.customer("u-7").await;
    let read = |token: String, path: &'static str| app.get_with(token, path);
    let (status, body) = read(ops.service_token("ops"), "/api/v3/customers/u-7?include=profile").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "u-7");
    assert_eq!(body["profile"]["email"], "u-7@example.org");
    let (status, _) = read(ops.service_token("ops"), "/api/v3/customers/nobody").await;
    assert_eq!(status, 404);
    // Lists: profiles through auth's batch endpoint; a user auth no longer has gets null.
    app.customer("u-8").await;
    // A customer whose user auth no longer has (never fetched, so not cached either).
    app.db_rows("INSERT INTO customers (id, stripe_customer_id) VALUES ('u-9', NULL)").await;
    let (status, page) = read(ops.service_token("ops"), "/api/v3/customers?include=profile&limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["customers"][0]["id"], "u-7");
    assert_eq!(page["customers"][1]["profile"]["name"], "Ada u-8");
    assert_eq!(page["next_cursor"], "u-8");
    let (status, rest) = read(ops.service_token("ops"), "/api/v3/customers?include=profile&after=u-8").await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["customers"].as_array().unwrap().len(), 1);
    assert_eq!(rest["customers"][0]["profile"], Value::Null);
    assert_eq!(rest["next_cursor"], Value::Null);
    assert!(app.auth.state.lock().unwrap().seen.iter().any(|s| s.starts_with("POST /api/v3/users/batch")));
    let (status, _) = read(app.token("u-7"), "/api/v3/customers").await;
    assert_eq!(status, 403);
    // A service may not act as a user, and an untrusted service key is refused.
    let (status, _) = read(ops.service_token("ops"), "/api/v3/customers/me").await;
    assert_eq!(status, 403);
    let (status, _) = read(Key::generate("ops-1").service_token("ops"), "/api/v3/customers/u-7").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn health_reports_auth_and_stripe_with_latencies() {
    let app = spawn(|_| {}).await;
    let balance_reads = || async {
        app.stripe.requests().await.into_iter().filter(|(method, path, ..)| method == "GET" && path.starts_with("/v1/balance")).count()
    };
    let before = balance_reads().await;
    let body: Value = app.app.client.get(app.url("/api/v3/customers/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["auth"]["status"], "ok", "{body}");
    assert!(body["auth"]["latency_ms"].as_f64().is_some());
    assert_eq!(body["stripe"]["status"], "ok", "{body}");
    assert!(body["stripe"]["latency_ms"].as_f64().is_some());
    // The route is public: a loop on it reaches Stripe once per 5 s, not once per request.
    // (One refresh is allowed for: a slow machine may cross the 5 s.)
    for _ in 0..5 {
        let again: Value = app.app.client.get(app.url("/api/v3/customers/health")).send().await.unwrap().json().await.unwrap();
        assert_eq!((&again["auth"]["status"], &again["stripe"]["status"]), (&json!("ok"), &json!("ok")), "{again}");
        assert!(again["dependencies_age_s"].as_i64().is_some_and(|age| (0..5).contains(&age)), "{again}");
    }
    let reads = balance_reads().await - before;
    assert!((1..=2).contains(&reads), "{reads} reads of Stripe's /v1/balance for 6 health checks");
}

#[tokio::test]
async fn a_configured_jwks_needs_no_call_to_auth() {
    let app = spawn(|vars| {
        let key = Key::parse(&vars["token_signing_keys"]);
        vars.insert("auth_jwks".into(), key.jwks());
    })
    .await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    // not_a_customer (not a 401): the token was verified with the configured keys.
    let (status, body, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_a_customer")), "{body}");
    assert_eq!(app.auth.jwks_calls(), 0);
}

/// Auth adds a signing key after customer cached its JWKS: a token naming the new kid makes
/// customer fetch the JWKS again, but at most once per 30 s (docs/customer.md), since anyone can
/// send an unknown kid. Until 30 s have passed since the fetch, such tokens are refused without
/// a call to auth.
#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_at_most_once_per_30_seconds() {
    let app = spawn(|_| {}).await;
    // The first call fetches auth's JWKS (k1 only); the next ones use the cached copy.
    app.customer("u-1").await;
    assert_eq!(app.auth.jwks_calls(), 1);
    let (status, body, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.auth.jwks_calls(), 1);

    let k2 = Key::generate("k2");
    app.auth.publish_keys(&[&app.key, &k2]);
    let get_me = |token: String| {
        let request = app.app.client.get(app.url("/api/v3/customers/me")).bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Polled: refused without a refetch while the cached copy is younger than 30 s, then one
    // refetch, and the token is accepted.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get_me(k2.access_token("u-1")).await;
        if status == 200 {
            assert_eq!(body["id"], "u-1", "{body}");
            break;
        }
        assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")), "{body}");
        assert_eq!(app.auth.jwks_calls(), 1, "an unknown kid within 30 s of the fetch must not refetch");
        assert!(Instant::now() < deadline, "a k2 token was never accepted:\n{}", app.app.host.log());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(app.auth.jwks_calls(), 2, "exactly one refetch");

    // A kid auth never published: 401, and no refetch (the copy was just fetched).
    let stranger = Key::generate("k3");
    for _ in 0..3 {
        let (status, body) = get_me(stranger.access_token("u-1")).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")), "{body}");
    }
    assert_eq!(app.auth.jwks_calls(), 2);
    // Both published keys verify from the refreshed cache.
    let (status, _) = get_me(app.token("u-1")).await;
    assert_eq!(status, 200);
    let (status, _) = get_me(k2.access_token("u-1")).await;
    assert_eq!(status, 200);
    assert_eq!(app.auth.jwks_calls(), 2);
}

/// A service reads customers with profiles from the real auth component: customer's own service
/// token is accepted by auth, and auth audits each read as customer's.
#[tokio::test]
async fn services_read_profiles_from_the_real_auth_which_audits_them() {
    let ops = Key::generate("ops-1");
    let trusted = format!("ops:{}:{}", ops.kid, ops.public_b64());
    let stripe = support::LocalStripe::start().await;
    let app = support::spawn_app_on(&stripe, move |vars| {
        vars.insert("customer_trusted_service_keys".into(), trusted);
        // No cached copies: every profile read reaches auth (and its audit log).
        vars.insert("profile_cache_ttl_secs".into(), "0".into());
    })
    .await;
    let registered =
        integration_tests::register_account(&app.client, &app.host, "Grace Hopper", "grace@example.org", "correct horse battery staple").await;
    let token = registered["access_token"].as_str().expect("registered").to_string();
    let user_id = registered["user"]["id"].as_str().unwrap().to_string();
    let email = registered["user"]["email"].as_str().unwrap().to_string();
    let created = app.client.post(app.url("/api/v3/customers")).bearer_auth(&token).json(&json!({"area_ids": [1]})).send().await.unwrap();
    assert_eq!(created.status(), 201, "{}", app.host.log());
    let service_reads = || {
        integration_tests::db_rows(&app.auth_db, "SELECT actor, COALESCE(subject, ''), detail FROM audit_log WHERE event = 'service_read' ORDER BY id")
    };
    // The user's own reads (creating the customer) are not service reads.
    assert_eq!(service_reads().await, Vec::<Vec<String>>::new());
    let read = |path: String| {
        let request = app.client.get(app.url(&path)).bearer_auth(ops.service_token("ops"));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, one) = read(format!("/api/v3/customers/{user_id}?include=profile")).await;
    assert_eq!(status, 200, "{one}\n{}", app.host.log());
    assert_eq!(one["id"], user_id.as_str());
    let profile = &one["profile"];
    assert_eq!((&profile["id"], &profile["name"], &profile["email"]), (&json!(user_id), &json!("Grace Hopper"), &json!(email)), "{one}");
    assert_eq!((&profile["source"], &profile["stale"]), (&json!("auth"), &json!(false)), "{one}");
    let reads = service_reads().await;
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!((reads[0][0].as_str(), reads[0][1].as_str()), ("service:customer", user_id.as_str()), "{reads:?}");
    let detail: Value = serde_json::from_str(&reads[0][2]).unwrap();
    assert_eq!(detail, json!({"ids": [user_id], "ids_omitted": 0, "found": 1}));

    // The list: profiles through auth's batch endpoint, also audited as customer's read.
    let (status, page) = read("/api/v3/customers?include=profile".to_string()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["customers"].as_array().unwrap().len(), 1, "{page}");
    let listed = &page["customers"][0];
    assert_eq!(listed["id"], user_id.as_str());
    assert_eq!((&listed["profile"]["name"], &listed["profile"]["email"]), (&json!("Grace Hopper"), &json!(email)), "{page}");
    let reads = service_reads().await;
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert_eq!(reads[1][0], "service:customer");
    let detail: Value = serde_json::from_str(&reads[1][2]).unwrap();
    assert_eq!(detail, json!({"ids": [user_id], "ids_omitted": 0, "found": 1}));
}

/// Leaving with an active subscription: Stripe first (cancel, delete the customer), our rows only
/// once Stripe is done. Stripe failing on the customer's deletion leaves our rows for the retry.
#[tokio::test]
async fn leaving_with_an_active_subscription_keeps_our_rows_until_stripe_is_done() {
    let app = spawn(|_| {}).await;
    let customer = app.customer("u-1").await;
    let cus = customer["stripe_customer_id"].as_str().unwrap().to_string();
    let price = app.stripe.price("1500").await;
    let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!((status, sub["status"].as_str()), (201, Some("active")), "{sub}");
    let stripe_sub = sub["stripe_subscription_id"].as_str().unwrap().to_string();

    // Every attempt (the client retries) at deleting the Stripe customer fails.
    app.stripe.fault(json!({"method": "DELETE", "path": format!("/v1/customers/{cus}"), "status": 500, "times": 10})).await;
    let (status, body, headers) = app.call("DELETE", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("billing_unavailable")), "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(headers.get("retry-after").is_some());
    let (status, still, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!((status, &still["stripe_customer_id"]), (200, &json!(cus)), "{still}");
    let (_, subs, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!(subs["subscriptions"][0]["stripe_subscription_id"], stripe_sub.as_str(), "{subs}");
    let (status, _) = app.stripe.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(status, 200, "the Stripe customer is still there");

    app.stripe.clear_faults().await;
    let (status, body, _) = app.call("DELETE", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 204, "{body}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
    assert_eq!(at_stripe["status"], "canceled", "{at_stripe}");
    let (status, _) = app.stripe.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(status, 404);
    let (status, body, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_a_customer")));
    let left = app.db_rows("SELECT (SELECT COUNT(*) FROM customers) + (SELECT COUNT(*) FROM subscriptions) + (SELECT COUNT(*) FROM customer_areas)").await;
    assert_eq!(left[0].get::<i64, _>(0), Some(0));
}

/// Invoices are paged with Stripe's cursor: `limit`, `has_more`, `next_cursor` → `starting_after`.
#[tokio::test]
async fn invoices_are_paged_with_stripes_cursor() {
    let app = spawn(|_| {}).await;
    let customer = app.customer("u-1").await;
    let cus = customer["stripe_customer_id"].as_str().unwrap().to_string();
    // One invoice per subscription: three prices, three invoices.
    for amount in ["500", "700", "900"] {
        let price = app.stripe.price(amount).await;
        let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
        assert_eq!(status, 201, "{sub}");
    }
    let (_, at_stripe) = app.stripe.get(&format!("/v1/invoices?customer={cus}&limit=100")).await;
    let mut stripes: Vec<String> = at_stripe["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(stripes.len(), 3, "{at_stripe}");

    let mut seen: Vec<String> = Vec::new();
    let mut path = "/api/v3/customers/me/invoices?limit=1".to_string();
    for page_number in 1..=3 {
        let (status, page, _) = app.call("GET", &path, "u-1", None, &[]).await;
        assert_eq!(status, 200, "{page}");
        let invoices = page["invoices"].as_array().unwrap();
        assert_eq!(invoices.len(), 1, "page {page_number}: {page}");
        let id = invoices[0]["id"].as_str().unwrap().to_string();
        assert!(!seen.contains(&id), "page {page_number} repeats {id}: {page}");
        seen.push(id.clone());
        if page_number < 3 {
            assert_eq!((&page["has_more"], &page["next_cursor"]), (&json!(true), &json!(id)), "{page}");
            path = format!("/api/v3/customers/me/invoices?limit=1&starting_after={id}");
        } else {
            assert_eq!((&page["has_more"], &page["next_cursor"]), (&json!(false), &Value::Null), "{page}");
        }
    }
    seen.sort();
    stripes.sort();
    assert_eq!(seen, stripes);

    // A cursor that names no invoice is the client's field in error, as live Stripe says.
    let (status, problem, _) = app.call("GET", "/api/v3/customers/me/invoices?starting_after=in_NoSuchInvoice", "u-1", None, &[]).await;
    assert_eq!((status, &problem["code"]), (422, &json!("billing_rejected")), "{problem}");
    assert_eq!((&problem["errors"][0]["field"], &problem["errors"][0]["code"]), (&json!("starting_after"), &json!("not_found")), "{problem}");
}

/// Idempotency-Key on PATCH /customers/me and POST /customers/me/subscriptions: the same request
/// replays the first answer without doing it again; another request with the key is a 422.
#[tokio::test]
async fn idempotency_keys_cover_patch_and_subscribe() {
    let app = spawn(|_| {}).await;
    let customer = app.customer("u-1").await;
    let cus = customer["stripe_customer_id"].as_str().unwrap().to_string();

    let key = [("idempotency-key", "patch-1")];
    let (status, first, _) = app.call("PATCH", "/api/v3/customers/me", "u-1", Some(json!({"area_ids": [7]})), &key).await;
    assert_eq!((status, &first["area_ids"]), (200, &json!([7])), "{first}");
    // Changed since by another request: a replay answers as the first time and changes nothing.
    let (status, _, _) = app.call("PATCH", "/api/v3/customers/me", "u-1", Some(json!({"area_ids": [9]})), &[]).await;
    assert_eq!(status, 200);
    let (status, replayed, headers) = app.call("PATCH", "/api/v3/customers/me", "u-1", Some(json!({"area_ids": [7]})), &key).await;
    assert_eq!((status, &replayed), (200, &first));
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, body, headers) = app.call("PATCH", "/api/v3/customers/me", "u-1", Some(json!({"area_ids": [8]})), &key).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("idempotency_key_reused")), "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    let (_, me, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(me["area_ids"], json!([9]), "{me}");

    let price = app.stripe.price("1100").await;
    let other_price = app.stripe.price("1300").await;
    let key = [("idempotency-key", "subscribe-1")];
    let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &key).await;
    assert_eq!(status, 201, "{sub}");
    let (status, again, headers) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &key).await;
    assert_eq!((status, &again), (201, &sub));
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, body, _) =
        app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": other_price})), &key).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("idempotency_key_reused")), "{body}");
    // Stripe was asked to create one subscription, and holds one.
    let creates = app.stripe.requests().await.iter().filter(|(method, path, _, _)| method == "POST" && path == "/v1/subscriptions").count();
    assert_eq!(creates, 1);
    let at_stripe = app.stripe.subscriptions_of(&cus).await;
    assert_eq!(at_stripe.len(), 1);
    assert_eq!(at_stripe[0]["id"], sub["stripe_subscription_id"]);
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1, "{list}");
}

/// Fields we do not know are ignored (as at auth): a client sending more still gets its customer.
#[tokio::test]
async fn unknown_fields_are_ignored_on_create() {
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    let body = json!({"area_ids": [4, 2], "nickname": "Ada", "plan": {"tier": "gold"}, "stripe_customer_id": "cus_mine"});
    let (status, customer, _) = app.call("POST", "/api/v3/customers", "u-1", Some(body), &[]).await;
    assert_eq!(status, 201, "{customer}");
    assert_eq!((&customer["id"], &customer["area_ids"]), (&json!("u-1"), &json!([2, 4])));
    assert!(customer.get("nickname").is_none() && customer.get("plan").is_none(), "{customer}");
    // Ours, not the client's.
    let stripe_customers = app.stripe.customers_of("u-1").await;
    assert_eq!(stripe_customers.len(), 1);
    assert_eq!(customer["stripe_customer_id"], stripe_customers[0]["id"]);
}

/// The owner of a key is `user:<id>`: with an id of 255 characters (the most the seed's ids
/// hold) that is 260, and keyed writes of such a user must still be kept and replayed.
#[tokio::test]
async fn a_user_id_of_255_characters_keeps_its_idempotency_keys() {
    let app = spawn(|_| {}).await;
    let long = format!("legacy-{}", "x".repeat(248));
    assert_eq!(long.len(), 255);
    app.auth.add_user(&long, "Long Id", "long@example.org");
    let key = [("idempotency-key", "long-1")];
    let (status, first, _) = app.call("POST", "/api/v3/customers", &long, Some(json!({"area_ids": [1]})), &key).await;
    assert_eq!(status, 201, "{first}\n{}", app.app.host.log());
    let (status, again, headers) = app.call("POST", "/api/v3/customers", &long, Some(json!({"area_ids": [1]})), &key).await;
    assert_eq!((status, &again), (201, &first));
    assert_eq!(headers["idempotent-replayed"], "true");
}

/// Calls the app as the holder of `token`; the status, the JSON body and the headers.
async fn as_user(app: &integration_tests::TestApp, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = app.client.request(method.parse().unwrap(), app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the app answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.unwrap_or(Value::Null), headers)
}

/// A user registered at the real auth who became a customer with a card and one subscription:
/// (access token, user id, Stripe customer id, Stripe subscription id).
async fn paying_user(app: &integration_tests::TestApp, stripe: &support::LocalStripe, email: &str, password: &str) -> (String, String, String, String) {
    let registered = integration_tests::register_account(&app.client, &app.host, "Ada Lovelace", email, password).await;
    let token = registered["access_token"].as_str().expect("registered").to_string();
    let user = registered["user"]["id"].as_str().unwrap().to_string();
    let (status, customer, _) = as_user(app, &token, "POST", "/api/v3/customers", Some(json!({"area_ids": [1]}))).await;
    assert_eq!(status, 201, "{customer}");
    let cus = customer["stripe_customer_id"].as_str().unwrap().to_string();
    stripe.add_card(&cus).await;
    let price = stripe.price("500").await;
    let (status, sub, _) = as_user(app, &token, "POST", "/api/v3/customers/me/subscriptions", Some(json!({"price_id": price}))).await;
    assert_eq!(status, 201, "{sub}");
    (token, user, cus, sub["stripe_subscription_id"].as_str().unwrap().to_string())
}

/// One call erases an account at auth, at Stripe and in billing, and answers with a receipt; a
/// wrong password erases nothing; a repeat says the account was already deleted.
#[tokio::test]
async fn an_account_is_erased_at_auth_stripe_and_billing_in_one_call() {
    let stripe = support::LocalStripe::start().await;
    let app = support::spawn_app_on(&stripe, |_| {}).await;
    let password = "correct horse battery staple";
    let (token, user, cus, sub) = paying_user(&app, &stripe, "ada@example.org", password).await;

    // A wrong password is auth's 403, and nothing anywhere is erased.
    let (status, problem, _) = as_user(&app, &token, "POST", "/api/v3/customers/me/erasure", Some(json!({"password": "not the password"}))).await;
    assert_eq!((status, &problem["code"]), (403, &json!("wrong_password")), "{problem}");
    let (status, _, _) = as_user(&app, &token, "GET", "/api/v3/users/me", None).await;
    assert_eq!(status, 200, "the account is still at auth");
    let (status, _, _) = as_user(&app, &token, "GET", "/api/v3/customers/me", None).await;
    assert_eq!(status, 200, "the customer is still here");
    let (status, at_stripe) = stripe.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!((status, &at_stripe["deleted"]), (200, &Value::Null), "{at_stripe}");

    // A trial once given is kept while the account lives; its erasure forgets it.
    integration_tests::db_rows(&app.customer_db, &format!("INSERT INTO trial_grants (customer_id, granted_at, days) VALUES ('{user}', 1, 14)")).await;
    let (status, receipt, _) = as_user(&app, &token, "POST", "/api/v3/customers/me/erasure", Some(json!({"password": password}))).await;
    assert_eq!(status, 200, "{receipt}\n{}", app.host.log());
    assert_eq!((&receipt["user_id"], &receipt["auth"]), (&json!(user), &json!("deleted")), "{receipt}");
    assert!(integration_tests::db_rows(&app.customer_db, "SELECT customer_id FROM trial_grants").await.is_empty(), "the trial record is erased too");
    assert_eq!(receipt["billing"], json!({"stripe_customer_id": cus, "subscriptions_canceled": 1}));
    let receipt_id = receipt["receipt_id"].as_str().unwrap();
    // Gone at auth (the password no longer logs in), at Stripe, and here.
    let login = app.client.post(app.url("/api/v3/auth/login")).json(&json!({"email": "ada@example.org", "password": password})).send().await.unwrap();
    assert_eq!(login.status(), 401);
    let (status, _) = stripe.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(status, 404);
    assert_eq!(stripe.subscriptions_of(&cus).await.iter().find(|s| s["id"] == sub.as_str()).map(|s| s["status"].clone()), Some(json!("canceled")));
    let (status, problem, _) = as_user(&app, &token, "GET", "/api/v3/customers/me", None).await;
    assert_eq!((status, &problem["code"]), (404, &json!("not_a_customer")));
    let audited = integration_tests::db_rows(&app.customer_db, "SELECT actor, detail FROM audit_log WHERE action = 'account.erased'").await;
    assert_eq!(audited, [vec![user.clone(), format!("receipt={receipt_id} auth=deleted stripe_customer={cus} subscriptions_canceled=1")]]);

    // Sent again (the access token lives on for minutes): nothing left to erase, and said so.
    let (status, again, _) = as_user(&app, &token, "POST", "/api/v3/customers/me/erasure", Some(json!({"password": password}))).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!((&again["auth"], &again["billing"]), (&json!("already_deleted"), &Value::Null), "{again}");
}

/// Stripe's customer portal: the caller's own Stripe customer, sent back to the operator's
/// return URL, never one the client names.
#[tokio::test]
async fn a_portal_session_sends_the_user_to_stripe_and_back_to_the_app() {
    let app = spawn(|vars| {
        vars.insert("customer_billing_portal_return_url".into(), "https://app.example.org/billing".into());
    })
    .await;
    app.auth.add_user("u-1", "Ada Lovelace", "ada@example.org");
    let (status, problem, _) = app.call("POST", "/api/v3/customers/me/portal-sessions", "u-1", None, &[]).await;
    assert_eq!((status, &problem["code"]), (404, &json!("not_a_customer")), "{problem}");
    let (status, customer, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 201, "{customer}");
    let body = json!({"return_url": "https://evil.example.net/"});
    let (status, session, _) = app.call("POST", "/api/v3/customers/me/portal-sessions", "u-1", Some(body), &[]).await;
    assert_eq!(status, 201, "{session}\n{}", app.app.host.log());
    assert!(session["url"].as_str().unwrap().starts_with("https://billing.stripe.com/p/session/"), "{session}");
    let sent = app.stripe.requests().await;
    let portal: Vec<_> = sent.iter().filter(|(method, path, _, _)| method == "POST" && path == "/v1/billing_portal/sessions").collect();
    assert_eq!(portal.len(), 1, "{sent:?}");
    assert!(portal[0].2.as_deref().is_some_and(|key| key.starts_with("portal-session:")), "{sent:?}");
    assert_eq!(portal[0].3, Some(200), "{sent:?}");
    assert!(!app.app.host.log().contains(session["url"].as_str().unwrap()), "the URL is never logged");
}

/// Stripe Checkout (Cashier's `checkout`): the order is checked as a subscription is, Stripe's
/// page is paid, and the subscription it made reaches the mirror by webhook under the id chosen
/// when the page was made, with its trial counted as the user's one.
#[tokio::test]
async fn a_subscription_is_bought_on_stripes_checkout_page() {
    let app = spawn(|vars| {
        vars.insert("customer_checkout_success_url".into(), "https://app.example.org/billing?session={CHECKOUT_SESSION_ID}".into());
        vars.insert("customer_checkout_cancel_url".into(), "https://app.example.org/pricing".into());
        vars.insert("subscription_trial_days".into(), "14".into());
    })
    .await;
    let path = "/api/v3/customers/me/checkout-sessions";
    let price = app.stripe.price("1500").await;
    app.billing_user().await;
    app.auth.add_user("u-2", "Grace Hopper", "grace@example.org");
    let (status, problem, _) = app.call("POST", path, "u-2", Some(json!({"price_id": price})), &[]).await;
    assert_eq!((status, &problem["code"]), (404, &json!("not_a_customer")), "{problem}");

    // Refused with the field named: ours before Stripe, Stripe's after.
    let (status, problem, _) = app.call("POST", path, "u-1", Some(json!({"price_id": price, "quantity": 0})), &[]).await;
    assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!("quantity")), "{problem}");
    let (status, problem, _) = app.call("POST", path, "u-1", Some(json!({"price_id": "price_nope"})), &[]).await;
    assert_eq!((status, &problem["errors"][0]["field"], &problem["errors"][0]["code"]), (422, &json!("price_id"), &json!("not_found")), "{problem}");

    let (status, first, _) = app.call("POST", path, "u-1", Some(json!({"price_id": price, "quantity": 2})), &[]).await;
    assert_eq!(status, 201, "{first}\n{}", app.app.host.log());
    let first_id = first["id"].as_str().unwrap_or_default().to_string();
    assert!(first["url"].as_str().is_some_and(|url| url == format!("https://checkout.stripe.com/c/pay/{first_id}")), "{first}");
    assert!(first["expires_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{first}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/checkout/sessions/{first_id}")).await;
    assert_eq!(at_stripe["success_url"], "https://app.example.org/billing?session={CHECKOUT_SESSION_ID}", "{at_stripe}");
    assert_eq!((&at_stripe["cancel_url"], &at_stripe["client_reference_id"]), (&json!("https://app.example.org/pricing"), &json!("u-1")));

    // A second page closes the first: the two could not both be paid.
    let (status, second, _) = app.call("POST", path, "u-1", Some(json!({"price_id": price, "quantity": 2})), &[]).await;
    assert_eq!(status, 201, "{second}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/checkout/sessions/{first_id}")).await;
    assert_eq!(at_stripe["status"], "expired", "{at_stripe}");
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!(list["subscriptions"], json!([]), "nothing until the page is paid");

    // The user pays on Stripe's page; the webhook brings the subscription.
    let paid = app.stripe.post(&format!("/_checkout/{}/complete", second["id"].as_str().unwrap_or_default()), &[]).await;
    let stripe_subscription = paid["subscription"].as_str().unwrap_or_default().to_string();
    assert!(stripe_subscription.starts_with("sub_"), "{paid}");
    support::wait_for_applied_webhook(&app.app, &stripe_subscription).await;
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    let mirrored = &list["subscriptions"][0];
    assert_eq!((&mirrored["stripe_subscription_id"], &mirrored["price_id"], &mirrored["quantity"]), (&json!(stripe_subscription), &json!(price), &json!(2)), "{list}");
    assert_eq!(mirrored["status"], "trialing", "the first subscription's trial: {list}");
    let (_, remote) = app.stripe.get(&format!("/v1/subscriptions/{stripe_subscription}")).await;
    assert_eq!(mirrored["id"], remote["metadata"]["subscription_id"], "our id, chosen with the page: {remote}");
    let granted = app.db_rows("SELECT days FROM trial_grants WHERE customer_id = 'u-1'").await;
    assert_eq!(granted.len(), 1, "the trial is used up");

    // Paid for: another page for that price is refused before Stripe is asked.
    let (status, problem, _) = app.call("POST", path, "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!((status, &problem["code"]), (409, &json!("already_subscribed")), "{problem}");
    let made: Vec<_> = app.stripe.requests().await.into_iter().filter(|(m, p, _, _)| m == "POST" && p == "/v1/checkout/sessions").collect();
    assert_eq!(made.len(), 3, "two pages and the refused price: {made:?}");

    // A second price: no trial any more, so the page's card is charged and it starts active.
    let team = app.stripe.price("4000").await;
    let (status, page, _) = app.call("POST", path, "u-1", Some(json!({"price_id": team})), &[]).await;
    assert_eq!(status, 201, "{page}");
    let paid = app.stripe.post(&format!("/_checkout/{}/complete", page["id"].as_str().unwrap_or_default()), &[]).await;
    let team_subscription = paid["subscription"].as_str().unwrap_or_default().to_string();
    support::wait_for_applied_webhook(&app.app, &team_subscription).await;
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    let statuses: Vec<_> = list["subscriptions"].as_array().into_iter().flatten().map(|s| (s["price_id"].clone(), s["status"].clone())).collect();
    assert_eq!(statuses, [(json!(price), json!("trialing")), (json!(team), json!("active"))], "{list}");

    // Leaving billing closes a page left open: it cannot start a subscription afterwards.
    let (status, left_open, _) = app.call("POST", path, "u-1", Some(json!({"price_id": app.stripe.price("900").await})), &[]).await;
    assert_eq!(status, 201, "{left_open}");
    let (status, _, _) = app.call("DELETE", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 204);
    let (_, at_stripe) = app.stripe.get(&format!("/v1/checkout/sessions/{}", left_open["id"].as_str().unwrap_or_default())).await;
    assert_eq!(at_stripe["status"], "expired", "{at_stripe}");
}

/// The success page reads its session: once paid, the subscription is in the mirror then and
/// there, with no webhook at all (none is registered here), so the page never shows "not yet".
#[tokio::test]
async fn the_success_page_finds_the_subscription_before_any_webhook() {
    let app = spawn(|vars| {
        vars.insert("customer_checkout_success_url".into(), "https://app.example.org/done?session={CHECKOUT_SESSION_ID}".into());
    })
    .await;
    let price = app.stripe.price("2500").await;
    app.auth.add_user("u-1", "Ada Lovelace", "ada@example.org");
    app.auth.add_user("u-2", "Grace Hopper", "grace@example.org");
    for user in ["u-1", "u-2"] {
        let (status, body, _) = app.call("POST", "/api/v3/customers", user, Some(json!({"area_ids": [1]})), &[]).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, page, _) = app.call("POST", "/api/v3/customers/me/checkout-sessions", "u-1", Some(json!({"price_id": price, "quantity": 5})), &[]).await;
    assert_eq!(status, 201, "{page}");
    let id = page["id"].as_str().unwrap_or_default().to_string();
    let path = format!("/api/v3/customers/me/checkout-sessions/{id}");
    let (status, open, _) = app.call("GET", &path, "u-1", None, &[]).await;
    assert_eq!((status, &open["status"], &open["subscription"]), (200, &json!("open"), &Value::Null), "{open}");
    let (status, _, _) = app.call("GET", &path, "u-2", None, &[]).await;
    assert_eq!(status, 404, "another customer's session");
    let (status, _, _) = app.call("GET", "/api/v3/customers/me/checkout-sessions/cs_test_nothing", "u-1", None, &[]).await;
    assert_eq!(status, 404);

    let paid = app.stripe.post(&format!("/_checkout/{id}/complete"), &[]).await;
    let (status, done, _) = app.call("GET", &path, "u-1", None, &[]).await;
    assert_eq!((status, &done["status"], &done["payment_status"]), (200, &json!("complete"), &json!("paid")), "{done}\n{}", app.app.host.log());
    let sub = &done["subscription"];
    assert_eq!((&sub["stripe_subscription_id"], &sub["status"], &sub["quantity"]), (&paid["subscription"], &json!("active"), &json!(5)), "{done}");
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!(list["subscriptions"], json!([sub]), "{list}");
    // A reload reads the same subscription; nothing is mirrored twice.
    let (_, reload, _) = app.call("GET", &path, "u-1", None, &[]).await;
    assert_eq!(reload["subscription"]["id"], sub["id"]);
    let rows = app.db_rows("SELECT id FROM subscriptions WHERE customer_id = 'u-1'").await;
    assert_eq!(rows.len(), 1);
}

/// Without `customer_checkout_success_url` there is no page to come back to: the operator's
/// error, named, and Stripe is not asked.
#[tokio::test]
async fn checkout_without_a_success_url_names_the_variable() {
    let app = spawn(|_| {}).await;
    let price = app.stripe.price("1500").await;
    app.billing_user().await;
    let (status, problem, _) = app.call("POST", "/api/v3/customers/me/checkout-sessions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!(status, 500, "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("checkout_success_url")), "{problem}");
    assert!(!app.stripe.requests().await.iter().any(|(_, p, _, _)| p.starts_with("/v1/checkout")));
}

/// What the next invoice will be (Cashier's `upcomingInvoice`), and what it would be after a
/// change of price (`previewInvoice`), read from Stripe without changing anything there.
#[tokio::test]
async fn the_next_invoice_is_previewed_for_the_renewal_and_for_a_change_of_price() {
    let app = spawn(|_| {}).await;
    app.stripe.add_card(&app.billing_user().await).await;
    let basic = app.stripe.price("1500").await;
    let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": basic})), &[]).await;
    assert_eq!(status, 201, "{sub}\n{}", app.app.host.log());
    let stripe_sub = sub["stripe_subscription_id"].as_str().unwrap_or_default().to_string();
    support::wait_for_applied_webhook(&app.app, &stripe_sub).await;
    let path = format!("/api/v3/customers/me/subscriptions/{}/upcoming-invoice", sub["id"].as_str().unwrap_or_default());
    let (_, sub, _) = app.call("GET", &format!("/api/v3/customers/me/subscriptions/{}", sub["id"].as_str().unwrap_or_default()), "u-1", None, &[]).await;
    assert_eq!(sub["status"], "active", "{sub}");

    // The renewal: the price again, charged when the period ends.
    let (status, renewal, _) = app.call("GET", &path, "u-1", None, &[]).await;
    assert_eq!(status, 200, "{renewal}\n{}", app.app.host.log());
    assert_eq!((&renewal["amount_due"], &renewal["currency"]), (&json!(1500), &json!("eur")), "{renewal}");
    assert_eq!(renewal["next_payment_attempt"], sub["current_period_end"], "{renewal}");
    assert_eq!(renewal["lines"].as_array().map(Vec::len), Some(1), "{renewal}");
    assert_eq!((&renewal["lines"][0]["price_id"], &renewal["lines"][0]["proration"]), (&json!(basic), &json!(false)), "{renewal}");

    // A move to another price: the unused time on the old price is credited, the new one
    // charged; the total is what the lines add up to. Nothing moved at Stripe.
    let pro = app.stripe.price("2500").await;
    let (status, moved, _) = app.call("GET", &format!("{path}?price_id={pro}"), "u-1", None, &[]).await;
    assert_eq!(status, 200, "{moved}\n{}", app.app.host.log());
    let lines = moved["lines"].as_array().cloned().unwrap_or_default();
    let credit = lines.iter().find(|line| line["price_id"] == json!(basic) && line["proration"] == json!(true));
    assert!(credit.is_some_and(|line| line["amount"].as_i64().is_some_and(|a| a < 0)), "{moved}");
    assert!(lines.iter().any(|line| line["price_id"] == json!(pro) && line["amount"].as_i64().is_some_and(|a| a > 0)), "{moved}");
    let sum: i64 = lines.iter().filter_map(|line| line["amount"].as_i64()).sum();
    assert_eq!(moved["amount_due"], json!(sum), "{moved}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
    assert_eq!(at_stripe["items"]["data"][0]["price"]["id"], basic.as_str(), "{at_stripe}");

    // Bad input: a price Stripe does not know names price_id; a malformed one is 400; another
    // user's subscription and a path that is no id are not found.
    let (status, problem, _) = app.call("GET", &format!("{path}?price_id=price_nothing"), "u-1", None, &[]).await;
    assert_eq!((status, &problem["errors"][0]["field"], &problem["errors"][0]["code"]), (422, &json!("price_id"), &json!("not_found")), "{problem}");
    let (status, problem, _) = app.call("GET", &format!("{path}?price_id=no%20price"), "u-1", None, &[]).await;
    assert_eq!((status, &problem["code"]), (400, &json!("invalid_query")), "{problem}");
    let (status, _, _) = app.call("GET", &path, "u-2", None, &[]).await;
    assert_eq!(status, 404);
    let (status, _, _) = app.call("GET", "/api/v3/customers/me/subscriptions/sub_x/upcoming-invoice", "u-1", None, &[]).await;
    assert_eq!(status, 404);

    // Set to end at the period's end: nothing more will be invoiced.
    let (status, _, _) = app.call("DELETE", &path.replace("/upcoming-invoice", ""), "u-1", None, &[]).await;
    assert_eq!(status, 200);
    let (status, problem, _) = app.call("GET", &path, "u-1", None, &[]).await;
    assert_eq!((status, &problem["code"]), (404, &json!("no_upcoming_invoice")), "{problem}");
}

/// Seats (Cashier's `quantity`): a subscription bills its quantity from the first invoice,
/// a change of quantity is previewed and made at Stripe, and the mirror follows; a change of
/// price keeps the seats.
#[tokio::test]
async fn a_subscription_bills_its_seats_and_their_number_changes() {
    let app = spawn(|_| {}).await;
    app.stripe.add_card(&app.billing_user().await).await;
    let team = app.stripe.price("1500").await;
    let subscriptions = "/api/v3/customers/me/subscriptions";
    let (status, problem, _) = app.call("POST", subscriptions, "u-1", Some(json!({"price_id": team, "quantity": 10_001})), &[]).await;
    assert_eq!((status, &problem["errors"][0]["field"], &problem["errors"][0]["code"]), (422, &json!("quantity"), &json!("out_of_range")), "{problem}");
    let (status, sub, _) = app.call("POST", subscriptions, "u-1", Some(json!({"price_id": team, "quantity": 3})), &[]).await;
    assert_eq!((status, &sub["quantity"]), (201, &json!(3)), "{sub}\n{}", app.app.host.log());
    let stripe_sub = sub["stripe_subscription_id"].as_str().unwrap_or_default().to_string();
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
    assert_eq!(at_stripe["items"]["data"][0]["quantity"], 3, "{at_stripe}");
    support::wait_for_applied_webhook(&app.app, &stripe_sub).await;
    // The first invoice charged three seats.
    let (_, invoices, _) = app.call("GET", "/api/v3/customers/me/invoices", "u-1", None, &[]).await;
    assert_eq!(invoices["invoices"][0]["amount_paid"], 4500, "{invoices}");

    // Five seats, previewed: the renewal bills five; the proration charges the two added.
    let path = format!("{subscriptions}/{}", sub["id"].as_str().unwrap_or_default());
    let (status, preview, _) = app.call("GET", &format!("{path}/upcoming-invoice?quantity=5"), "u-1", None, &[]).await;
    assert_eq!(status, 200, "{preview}\n{}", app.app.host.log());
    let lines = preview["lines"].as_array().cloned().unwrap_or_default();
    assert!(lines.iter().any(|line| line["proration"] == json!(false) && line["amount"] == json!(7500)), "{preview}");
    let sum: i64 = lines.iter().filter_map(|line| line["amount"].as_i64()).sum();
    assert_eq!(preview["amount_due"], json!(sum), "{preview}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
    assert_eq!(at_stripe["items"]["data"][0]["quantity"], 3, "only previewed: {at_stripe}");

    // Made: Stripe's item has five seats of the same price, and so has the mirror.
    let (status, grown, _) = app.call("PATCH", &path, "u-1", Some(json!({"quantity": 5})), &[]).await;
    assert_eq!((status, &grown["quantity"], &grown["price_id"]), (200, &json!(5), &json!(team)), "{grown}\n{}", app.app.host.log());
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
    let item = &at_stripe["items"]["data"][0];
    assert_eq!((&item["quantity"], &item["price"]["id"]), (&json!(5), &json!(team)), "{at_stripe}");

    // Another price keeps the five seats.
    let pro = app.stripe.price("2500").await;
    let (status, moved, _) = app.call("PATCH", &path, "u-1", Some(json!({"price_id": pro})), &[]).await;
    assert_eq!((status, &moved["quantity"], &moved["price_id"]), (200, &json!(5), &json!(pro)), "{moved}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{stripe_sub}")).await;
    assert_eq!(at_stripe["items"]["data"][0]["quantity"], 5, "{at_stripe}");
    let (_, read, _) = app.call("GET", &path, "u-1", None, &[]).await;
    assert_eq!((&read["quantity"], &read["price_id"]), (&json!(5), &json!(pro)), "{read}");

    // Bad input loses nothing.
    for (body, code) in [(json!({"quantity": 0}), "out_of_range"), (json!({"quantity": "5"}), "invalid_type"), (json!({"quantity": 1.5}), "invalid_type")] {
        let (status, problem, _) = app.call("PATCH", &path, "u-1", Some(body.clone()), &[]).await;
        assert_eq!((status, &problem["errors"][0]["field"], &problem["errors"][0]["code"]), (422, &json!("quantity"), &json!(code)), "{body}: {problem}");
    }
    let (status, problem, _) = app.call("GET", &format!("{path}/upcoming-invoice?quantity=many"), "u-1", None, &[]).await;
    assert_eq!((status, &problem["code"]), (400, &json!("invalid_query")), "{problem}");
    let (_, read, _) = app.call("GET", &path, "u-1", None, &[]).await;
    assert_eq!(read["quantity"], 5, "{read}");

    // Seats changed at Stripe (its dashboard, the customer portal) reach the mirror by webhook.
    let item = at_stripe["items"]["data"][0]["id"].as_str().unwrap_or_default().to_string();
    app.stripe.post(&format!("/v1/subscriptions/{stripe_sub}"), &[("items[0][id]", &item), ("items[0][quantity]", "7")]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        // The list reads only the mirror (a read of one subscription may ask Stripe, within the
        // user's budget of Stripe-bound requests).
        let (_, list, _) = app.call("GET", subscriptions, "u-1", None, &[]).await;
        if list["subscriptions"][0]["quantity"] == 7 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the mirror kept {list}\n{}", app.app.host.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A promotion code the user types (Cashier's `withPromotionCode`): its coupon discounts the
/// invoices; an unknown or used-up code is refused naming `promotion_code`, and nothing is made.
#[tokio::test]
async fn a_promotion_code_discounts_the_subscription_and_a_bad_one_makes_nothing() {
    let app = spawn(|_| {}).await;
    let stripe_customer = app.billing_user().await;
    app.stripe.add_card(&stripe_customer).await;
    app.stripe.post("/v1/coupons", &[("id", "launch20"), ("percent_off", "20"), ("duration", "forever")]).await;
    app.stripe.post("/v1/promotion_codes", &[("coupon", "launch20"), ("code", "LAUNCH20")]).await;
    app.stripe.post("/v1/promotion_codes", &[("coupon", "launch20"), ("code", "ONCEONLY"), ("max_redemptions", "1")]).await;
    let basic = app.stripe.price("1500").await;
    let pro = app.stripe.price("2500").await;
    let team = app.stripe.price("4000").await;
    let subscribe = |price: &str, code: &str| json!({"price_id": price, "promotion_code": code});
    let path = "/api/v3/customers/me/subscriptions";

    let (status, problem, _) = app.call("POST", path, "u-1", Some(subscribe(&basic, "NOSUCHCODE")), &[]).await;
    let error = &problem["errors"][0];
    assert_eq!((status, &error["field"], &error["code"]), (422, &json!("promotion_code"), &json!("not_found")), "{problem}");
    assert!(app.stripe.subscriptions_of(&stripe_customer).await.is_empty(), "nothing made at Stripe");

    // 20% off a 1,500 price: the first invoice charged 1,200, and so will the renewal.
    let (status, sub, _) = app.call("POST", path, "u-1", Some(subscribe(&basic, "LAUNCH20")), &[]).await;
    assert_eq!((status, &sub["status"]), (201, &json!("active")), "{sub}\n{}", app.app.host.log());
    let (_, invoices, _) = app.call("GET", "/api/v3/customers/me/invoices", "u-1", None, &[]).await;
    assert_eq!(invoices["invoices"][0]["amount_paid"], 1200, "{invoices}");
    let renewal = format!("{path}/{}/upcoming-invoice", sub["id"].as_str().unwrap_or_default());
    let (_, preview, _) = app.call("GET", &renewal, "u-1", None, &[]).await;
    assert_eq!(preview["amount_due"], 1200, "{preview}");

    // A code with one redemption: the second is refused by Stripe, naming the field.
    let (status, _, _) = app.call("POST", path, "u-1", Some(subscribe(&pro, "ONCEONLY")), &[]).await;
    assert_eq!(status, 201);
    let (status, problem, _) = app.call("POST", path, "u-1", Some(subscribe(&team, "ONCEONLY")), &[]).await;
    assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!("promotion_code")), "{problem}");
    assert_eq!(app.stripe.subscriptions_of(&stripe_customer).await.len(), 2, "no third subscription");
    let (_, list, _) = app.call("GET", path, "u-1", None, &[]).await;
    assert_eq!(list["subscriptions"].as_array().map(Vec::len), Some(2), "{list}");
}

/// The billing address Stripe prints on invoices: kept at Stripe on the caller's customer only,
/// replaced whole, refused with the field named.
#[tokio::test]
async fn a_customer_keeps_its_billing_address_at_stripe() {
    let app = spawn(|_| {}).await;
    let stripe_customer = app.billing_user().await;
    let path = "/api/v3/customers/me/billing-address";
    let (status, problem, _) = app.call("GET", path, "u-1", None, &[]).await;
    assert_eq!((status, &problem["code"]), (404, &json!("no_billing_address")), "{problem}");

    let address = json!({"line1": "Unter den Linden 1", "postal_code": "10117", "city": "Berlin", "country": "de"});
    let (status, stored, _) = app.call("PUT", path, "u-1", Some(address), &[]).await;
    assert_eq!(status, 200, "{stored}\n{}", app.app.host.log());
    assert_eq!((&stored["country"], &stored["line2"], &stored["city"]), (&json!("DE"), &Value::Null, &json!("Berlin")), "{stored}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/customers/{stripe_customer}")).await;
    assert_eq!((&at_stripe["address"]["line1"], &at_stripe["address"]["country"]), (&json!("Unter den Linden 1"), &json!("DE")), "{at_stripe}");
    let (status, read, _) = app.call("GET", path, "u-1", None, &[]).await;
    assert_eq!((status, &read), (200, &stored));

    // Replaced whole: a line left out is cleared at Stripe too.
    let (status, moved, _) = app.call("PUT", path, "u-1", Some(json!({"line1": "1 Rue de Rivoli", "country": "FR"})), &[]).await;
    assert_eq!((status, &moved["city"], &moved["postal_code"]), (200, &Value::Null, &Value::Null), "{moved}");
    let (_, read, _) = app.call("GET", path, "u-1", None, &[]).await;
    assert_eq!(read, moved);

    // Bad input names its fields and changes nothing; a user who is not a customer has none.
    let (status, problem, _) = app.call("PUT", path, "u-1", Some(json!({"line1": "", "country": "France"})), &[]).await;
    let fields: Vec<_> = problem["errors"].as_array().into_iter().flatten().map(|e| e["field"].clone()).collect();
    assert_eq!((status, fields), (422, vec![json!("line1"), json!("country")]), "{problem}");
    // Two letters that name no country (Stripe would keep `ZZ` and print it) and a withdrawn code.
    for country in ["ZZ", "yu"] {
        let (status, problem, _) = app.call("PUT", path, "u-1", Some(json!({"line1": "1 Main St", "country": country})), &[]).await;
        assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!("country")), "{problem}");
    }
    let (_, read, _) = app.call("GET", path, "u-1", None, &[]).await;
    assert_eq!(read, moved);
    let (status, _, _) = app.call("PUT", path, "u-3", Some(json!({"line1": "x", "country": "FR"})), &[]).await;
    assert_eq!(status, 404);
}

/// Tax ids for invoices (Cashier's `createTaxId`, `taxIds`, `deleteTaxId`): kept at Stripe on
/// the caller's Stripe customer, refused as Stripe refuses them, never reachable by another user.
#[tokio::test]
async fn a_customer_adds_lists_and_deletes_tax_ids_for_its_invoices() {
    let app = spawn(|_| {}).await;
    let stripe_customer = app.billing_user().await;
    app.auth.add_user("u-2", "Grace Hopper", "grace@example.org");
    let (status, _, _) = app.call("POST", "/api/v3/customers", "u-2", Some(json!({"area_ids": [2]})), &[]).await;
    assert_eq!(status, 201);
    let path = "/api/v3/customers/me/tax-ids";
    let (status, list, _) = app.call("GET", path, "u-1", None, &[]).await;
    assert_eq!((status, &list["tax_ids"]), (200, &json!([])), "{list}\n{}", app.app.host.log());

    // A pasted VAT number, spaces around it: trimmed, added at Stripe, listed.
    let (status, added, _) = app.call("POST", path, "u-1", Some(json!({"type": "eu_vat", "value": " DE123456789 "})), &[]).await;
    assert_eq!(status, 201, "{added}\n{}", app.app.host.log());
    assert_eq!((&added["type"], &added["value"], &added["country"]), (&json!("eu_vat"), &json!("DE123456789"), &json!("DE")), "{added}");
    assert_eq!(added["verification_status"], "pending", "{added}");
    let id = added["id"].as_str().unwrap_or_default().to_string();
    let (_, at_stripe) = app.stripe.get(&format!("/v1/customers/{stripe_customer}/tax_ids")).await;
    assert_eq!(at_stripe["data"][0]["id"], id.as_str(), "{at_stripe}");
    let (_, list, _) = app.call("GET", path, "u-1", None, &[]).await;
    assert_eq!(list["tax_ids"], json!([added]), "{list}");

    // Refused by Stripe, naming the field; refused by us before Stripe; nothing added.
    let (status, problem, _) = app.call("POST", path, "u-1", Some(json!({"type": "eu_vat", "value": "DE1"})), &[]).await;
    assert_eq!((status, &problem["code"], &problem["errors"][0]["field"]), (422, &json!("billing_rejected"), &json!("value")), "{problem}");
    let (status, problem, _) = app.call("POST", path, "u-1", Some(json!({"type": "zz_vat", "value": "123456"})), &[]).await;
    assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!("type")), "{problem}");
    let (status, problem, _) = app.call("POST", path, "u-1", Some(json!({"type": "EU VAT", "value": 5})), &[]).await;
    let fields: Vec<_> = problem["errors"].as_array().into_iter().flatten().map(|e| e["field"].clone()).collect();
    assert_eq!((status, fields), (422, vec![json!("type"), json!("value")]), "{problem}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/customers/{stripe_customer}/tax_ids")).await;
    assert_eq!(at_stripe["data"].as_array().map(Vec::len), Some(1), "{at_stripe}");

    // Another customer neither sees nor deletes it; its owner deletes it, once.
    let (_, list, _) = app.call("GET", path, "u-2", None, &[]).await;
    assert_eq!(list["tax_ids"], json!([]), "{list}");
    let (status, _, _) = app.call("DELETE", &format!("{path}/{id}"), "u-2", None, &[]).await;
    assert_eq!(status, 404);
    let (status, _, _) = app.call("DELETE", &format!("{path}/{id}"), "u-1", None, &[]).await;
    assert_eq!(status, 204, "{}", app.app.host.log());
    let (status, _, _) = app.call("DELETE", &format!("{path}/{id}"), "u-1", None, &[]).await;
    assert_eq!(status, 404);
    let (status, _, _) = app.call("DELETE", &format!("{path}/not-an-id"), "u-1", None, &[]).await;
    assert_eq!(status, 404);
    let (_, at_stripe) = app.stripe.get(&format!("/v1/customers/{stripe_customer}/tax_ids")).await;
    assert_eq!(at_stripe["data"], json!([]), "{at_stripe}");
    // A user who is not a customer has no tax ids to keep.
    let (status, problem, _) = app.call("GET", path, "u-3", None, &[]).await;
    assert_eq!(status, 404, "{problem}");
}

/// A declined first payment, a new card, then the open invoice paid at once (rather than at
/// Stripe's next retry, days later): the subscription is active in our mirror on the answer.
#[tokio::test]
async fn an_open_invoice_is_paid_after_the_card_is_replaced() {
    let app = spawn(|_| {}).await;
    let stripe_customer = app.billing_user().await;
    app.auth.add_user("u-2", "Grace Hopper", "grace@example.org");
    // Attached fine, declined at every charge.
    app.stripe.add_card_numbered(&stripe_customer, "4000000000000341").await;
    let price = app.stripe.price("1500").await;
    let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!((status, &sub["status"]), (201, &json!("incomplete")), "{sub}\n{}", app.app.host.log());
    let (_, invoices, _) = app.call("GET", "/api/v3/customers/me/invoices", "u-1", None, &[]).await;
    let open = &invoices["invoices"][0];
    assert_eq!(open["status"], "open", "{invoices}");
    let pay = format!("/api/v3/customers/me/invoices/{}/pay", open["id"].as_str().unwrap_or_default());

    // The same card again: declined, nothing paid.
    let (status, problem, _) = app.call("POST", &pay, "u-1", None, &[]).await;
    assert_eq!((status, &problem["code"]), (402, &json!("payment_failed")), "{problem}");
    // Not the caller's, or no invoice id: not found.
    let (status, _, _) = app.call("POST", &pay, "u-2", None, &[]).await;
    assert_eq!(status, 404);
    let (status, _, _) = app.call("POST", "/api/v3/customers/me/invoices/sub_1/pay", "u-1", None, &[]).await;
    assert_eq!(status, 404);

    // A card whose bank asks for 3-D Secure: still open, the payment handed to Stripe.js.
    app.stripe.add_card_numbered(&stripe_customer, "4000002500003155").await;
    let (status, asked, _) = app.call("POST", &pay, "u-1", None, &[]).await;
    assert_eq!((status, &asked["status"], &asked["pending_payment"]["status"]), (200, &json!("open"), &json!("requires_action")), "{asked}");
    assert!(asked["pending_payment"]["client_secret"].as_str().is_some_and(|s| s.contains("_secret_")), "{asked}");

    // A card that works: paid, and the subscription is active in the mirror on the answer.
    app.stripe.add_card(&stripe_customer).await;
    let (status, paid, _) = app.call("POST", &pay, "u-1", None, &[]).await;
    assert_eq!(status, 200, "{paid}\n{}", app.app.host.log());
    assert_eq!((&paid["status"], &paid["amount_paid"], &paid["pending_payment"]), (&json!("paid"), &json!(1500), &Value::Null), "{paid}");
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!(list["subscriptions"][0]["status"], "active", "{list}");
    let (status, problem, _) = app.call("POST", &pay, "u-1", None, &[]).await;
    assert_eq!((status, &problem["code"]), (409, &json!("invoice_paid")), "{problem}");
}

/// Entitlements: another service of the app (with its own service token) reads whether a user
/// pays, for which price and how many seats, from our mirror: alone, in a list, with profiles.
#[tokio::test]
async fn services_read_a_customers_subscriptions_to_unlock_paid_features() {
    let ops = Key::generate("ops-1");
    let app = support::spawn_trusting(&ops).await;
    app.stripe.add_card(&app.billing_user().await).await;
    let price = app.stripe.price("1500").await;
    let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price, "quantity": 4})), &[]).await;
    assert_eq!(status, 201, "{sub}");
    app.customer("u-8").await;
    let read = |path: &'static str| app.get_with(ops.service_token("ops"), path);
    let (status, one) = read("/api/v3/customers/u-1?include=subscriptions").await;
    assert_eq!(status, 200, "{one}");
    let paid = &one["subscriptions"][0];
    assert_eq!((&paid["id"], &paid["price_id"], &paid["quantity"]), (&sub["id"], &json!(price), &json!(4)), "{one}");
    assert!(one.get("profile").is_none(), "only what was asked: {one}");
    let (status, page) = read("/api/v3/customers?include=subscriptions,profile").await;
    assert_eq!(status, 200, "{page}");
    let customers = page["customers"].as_array().cloned().unwrap_or_default();
    let of = |id: &str| customers.iter().find(|c| c["id"] == id).cloned().unwrap_or(Value::Null);
    assert_eq!(of("u-1")["subscriptions"][0]["id"], sub["id"], "{page}");
    assert_eq!(of("u-1")["profile"]["name"], "Ada Lovelace", "{page}");
    assert_eq!(of("u-8")["subscriptions"], json!([]), "a customer without any: {page}");
    // The user itself may ask too; an unknown include is refused.
    let (status, me, _) = app.call("GET", "/api/v3/customers/me?include=profile,subscriptions", "u-1", None, &[]).await;
    assert_eq!((status, &me["subscriptions"][0]["quantity"], &me["profile"]["name"]), (200, &json!(4), &json!("Ada Lovelace")), "{me}");
    let (status, problem) = read("/api/v3/customers/u-1?include=subscriptions,invoices").await;
    assert_eq!((status, &problem["code"]), (400, &json!("invalid_query")), "{problem}");
}

/// `customer_require_verified_email`: with the real auth, a user whose email is not verified
/// cannot become a customer; once the mailer's token verified it, the same request can.
#[tokio::test]
async fn billing_can_require_an_email_verified_at_auth() {
    let mailer = admin::keys::SeedKey::generate().expect("key");
    let mailer_entry = mailer.trusted_entry("mailer");
    let stripe = support::LocalStripe::start().await;
    let app = support::spawn_app_on(&stripe, move |vars| {
        let trusted = format!("{},{mailer_entry}", vars["trusted_service_keys"]);
        vars.insert("trusted_service_keys".into(), trusted);
        vars.insert("auth_email_verification_services".into(), "mailer".into());
        vars.insert("customer_require_verified_email".into(), "true".into());
    })
    .await;
    let registered = integration_tests::register_account(&app.client, &app.host, "Ada Lovelace", "ada@example.org", "correct horse battery staple").await;
    let token = registered["access_token"].as_str().expect("registered").to_string();
    let user = registered["user"]["id"].as_str().unwrap().to_string();

    let (status, problem, _) = as_user(&app, &token, "POST", "/api/v3/customers", Some(json!({"area_ids": [1]}))).await;
    assert_eq!((status, &problem["code"]), (403, &json!("email_not_verified")), "{problem}\n{}", app.host.log());
    assert_eq!(stripe.customers_of(&user).await, Vec::<Value>::new(), "nothing reached Stripe");

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mailer_token = tokens::SigningKeys::parse(&mailer.encode()).expect("key").issue_service_token("mailer", now).expect("token").token;
    let issued = app
        .client
        .post(app.url("/api/v3/users/email-verifications"))
        .bearer_auth(&mailer_token)
        .json(&json!({"email": "ada@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 201);
    let issued: Value = issued.json().await.unwrap();
    let verified = app.client.post(app.url("/api/v3/auth/email-verification")).json(&json!({"token": issued["token"]})).send().await.unwrap();
    assert_eq!(verified.status(), 204);

    let (status, customer, _) = as_user(&app, &token, "POST", "/api/v3/customers", Some(json!({"area_ids": [1]}))).await;
    assert_eq!(status, 201, "{customer}");
    assert_eq!(stripe.customers_of(&user).await.len(), 1);
    // A billing page can tell a proven address from a typed one.
    let (status, me, _) = as_user(&app, &token, "GET", "/api/v3/customers/me?include=profile", None).await;
    assert_eq!((status, &me["profile"]["email_verified"]), (200, &json!(true)), "{me}");
}

/// An erasure that runs while the account's customer is being made (Stripe slow to create it):
/// the erasure finds no customer yet, and the creation, asking auth again before it commits,
/// finds the account gone and keeps nothing, at Stripe or here.
#[tokio::test]
async fn an_account_erased_while_its_customer_is_made_keeps_no_customer() {
    let stripe = support::LocalStripe::start().await;
    let app = support::spawn_app_on(&stripe, |_| {}).await;
    let password = "correct horse battery staple";
    let registered = integration_tests::register_account(&app.client, &app.host, "Ada Lovelace", "ada@example.org", password).await;
    let token = registered["access_token"].as_str().expect("registered").to_string();
    let user = registered["user"]["id"].as_str().unwrap().to_string();
    stripe.fault(json!({"method": "POST", "path": "/v1/customers", "delay": 2, "times": 1})).await;

    let (created, erased) = tokio::join!(as_user(&app, &token, "POST", "/api/v3/customers", Some(json!({"area_ids": [1]}))), async {
        // The creation is waiting on Stripe by now.
        tokio::time::sleep(Duration::from_millis(700)).await;
        as_user(&app, &token, "POST", "/api/v3/customers/me/erasure", Some(json!({"password": password}))).await
    });
    let (status, receipt, _) = erased;
    assert_eq!(status, 200, "{receipt}\n{}", app.host.log());
    assert_eq!((&receipt["auth"], &receipt["billing"]), (&json!("deleted"), &Value::Null), "no customer yet: {receipt}");
    let (status, problem, _) = created;
    assert_eq!((status, &problem["code"]), (404, &json!("profile_not_found")), "{problem}\n{}", app.host.log());
    assert_eq!(stripe.customers_of(&user).await, Vec::<Value>::new(), "the Stripe customer made for it was deleted");
    let rows = integration_tests::db_rows(&app.customer_db, &format!("SELECT id FROM customers WHERE id = '{user}'")).await;
    assert!(rows.is_empty(), "{rows:?}");
    let leases = integration_tests::db_rows(&app.customer_db, "SELECT customer_id FROM customer_provisioning").await;
    assert!(leases.is_empty(), "{leases:?}");
}

/// Stripe failing while billing is closed, after auth deleted the account: 503
/// `erasure_incomplete`, and the same request sent again finishes the erasure.
#[tokio::test]
async fn an_erasure_interrupted_at_stripe_is_finished_by_sending_it_again() {
    let stripe = support::LocalStripe::start().await;
    let app = support::spawn_app_on(&stripe, |_| {}).await;
    let password = "correct horse battery staple";
    let (token, _, cus, _) = paying_user(&app, &stripe, "grace@example.org", password).await;
    stripe.fault(json!({"method": "DELETE", "path": format!("/v1/customers/{cus}"), "status": 500, "times": 3})).await;

    let erase = || as_user(&app, &token, "POST", "/api/v3/customers/me/erasure", Some(json!({"password": password})));
    let (status, problem, headers) = erase().await;
    assert_eq!((status, &problem["code"]), (503, &json!("erasure_incomplete")), "{problem}");
    assert!(headers.contains_key("retry-after"));
    let (status, _, _) = as_user(&app, &token, "GET", "/api/v3/users/me", None).await;
    assert_eq!(status, 401, "deleted at auth");
    assert_eq!(integration_tests::db_rows(&app.customer_db, "SELECT COUNT(*) FROM customers").await, [vec!["1".to_string()]]);

    let (status, receipt, _) = erase().await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!((&receipt["auth"], &receipt["billing"]["stripe_customer_id"]), (&json!("already_deleted"), &json!(cus)), "{receipt}");
    let (status, _) = stripe.get(&format!("/v1/customers/{cus}")).await;
    assert_eq!(status, 404);
    assert_eq!(integration_tests::db_rows(&app.customer_db, "SELECT COUNT(*) FROM customers").await, [vec!["0".to_string()]]);

    // A user who never became a customer is erased at auth alone.
    let other = integration_tests::register_account(&app.client, &app.host, "Alan Turing", "alan@example.org", password).await;
    let other_token = other["access_token"].as_str().unwrap();
    let (status, receipt, _) = as_user(&app, other_token, "POST", "/api/v3/customers/me/erasure", Some(json!({"password": password}))).await;
    assert_eq!((status, &receipt["auth"], &receipt["billing"]), (200, &json!("deleted"), &Value::Null), "{receipt}");
}
