//! Stripe webhooks: signatures (forged, stale, missing, rotated), the inbox (duplicates), and
//! ordering (events delivered in reverse) converging on Stripe's state.

#[path = "customer_support.rs"]
mod support;

use serde_json::{Value, json};
use support::{CustomerApp, now, spawn, stripe_signature};

async fn deliver(app: &CustomerApp, payload: &str, signature: Option<String>) -> (u16, Value) {
    let mut request = app
        .app
        .client
        .post(app.url("/api/v3/billing/stripe/webhook"))
        .header("content-type", "application/json")
        .body(payload.to_string());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": created, "data": {"object": object}}).to_string()
}

#[tokio::test]
async fn forged_stale_and_missing_signatures_are_400() {
    let app = spawn(|_| {}).await;
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let payload = event("evt_sig", "ping", now(), json!({"id": "x"}));
    let (status, body) = deliver(&app, &payload, None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_signature")));
    let (status, _) = deliver(&app, &payload, Some(stripe_signature("whsec_forged", now(), &payload))).await;
    assert_eq!(status, 400);
    let (status, _) = deliver(&app, &payload, Some(stripe_signature(&secret, now() - 301, &payload))).await;
    assert_eq!(status, 400);
    let (status, _) = deliver(&app, &payload, Some("t=abc,v1=zz".into())).await;
    assert_eq!(status, 400);
    // Signed over another payload.
    let other = event("evt_other", "ping", now(), json!({"id": "x"}));
    let (status, _) = deliver(&app, &payload, Some(stripe_signature(&secret, now(), &other))).await;
    assert_eq!(status, 400);
    // Nothing reached the inbox.
    assert!(app.db_rows("SELECT id FROM stripe_events").await.is_empty());
    // A good one among several v1 signatures; unknown types are acknowledged and ignored.
    let t = now();
    let good = stripe_signature(&secret, t, &payload);
    let header = format!("t={t},v1={},{}", "ab".repeat(32), good.split(',').nth(1).unwrap());
    let (status, body) = deliver(&app, &payload, Some(header)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "ignored_type");
}

#[tokio::test]
async fn rotated_secrets_are_all_accepted() {
    let app = spawn(|vars| {
        let current = vars["stripe_webhook_secret"].clone();
        vars.insert("stripe_webhook_secret".into(), format!("whsec_next, {current}"));
    })
    .await;
    let payload = event("evt_rot", "ping", now(), json!({"id": "x"}));
    let (status, _) = deliver(&app, &payload, Some(stripe_signature("whsec_next", now(), &payload))).await;
    assert_eq!(status, 200);
    let old = app.app.variables["stripe_webhook_secret"].split(',').nth(1).unwrap().trim().to_string();
    let payload = event("evt_rot2", "ping", now(), json!({"id": "x"}));
    let (status, _) = deliver(&app, &payload, Some(stripe_signature(&old, now(), &payload))).await;
    assert_eq!(status, 200);
}

async fn local_subscription(app: &CustomerApp) -> (String, String, Value) {
    let customer = app.customer("u-1").await;
    let price = app.stripe.price("1200").await;
    let (status, sub, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!(status, 201, "{sub}");
    (customer["stripe_customer_id"].as_str().unwrap().to_string(), sub["stripe_subscription_id"].as_str().unwrap().to_string(), sub)
}

async fn mine(app: &CustomerApp) -> Value {
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    list["subscriptions"][0].clone()
}

#[tokio::test]
async fn duplicated_and_reversed_events_end_in_stripes_state() {
    let app = spawn(|_| {}).await;
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let (cus, sub, _) = local_subscription(&app).await;

    // At Stripe: set to cancel at period end (without telling us), then the events of both states.
    app.stripe.post(&format!("/v1/subscriptions/{sub}"), &[("cancel_at_period_end", "true")]).await;
    let t = now();
    let created = event("evt_created", "customer.subscription.created", t - 20, json!({"id": sub, "customer": cus, "status": "active"}));
    let updated = event(
        "evt_updated",
        "customer.subscription.updated",
        t - 10,
        json!({"id": sub, "customer": cus, "status": "active", "cancel_at_period_end": true}),
    );
    // Newest first, twice, then the older one.
    let (status, body) = deliver(&app, &updated, Some(stripe_signature(&secret, t, &updated))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    let (status, body) = deliver(&app, &updated, Some(stripe_signature(&secret, t, &updated))).await;
    assert_eq!((status, body["duplicate"].as_bool()), (200, Some(true)), "{body}");
    let (status, body) = deliver(&app, &created, Some(stripe_signature(&secret, t, &created))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("stale")), "{body}");

    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{sub}")).await;
    let ours = mine(&app).await;
    assert_eq!(ours["status"], at_stripe["status"]);
    assert_eq!(ours["cancel_at_period_end"], at_stripe["cancel_at_period_end"]);
    assert_eq!(ours["cancel_at_period_end"], true);

    // Canceled at Stripe; the deleted event arrives before an old "updated" that claims active.
    app.stripe.get(&format!("/v1/subscriptions/{sub}")).await;
    let client = reqwest::Client::new();
    client.delete(format!("{}/v1/subscriptions/{sub}", app.stripe.base)).bearer_auth("sk_test_x").send().await.unwrap();
    let deleted = event("evt_deleted", "customer.subscription.deleted", t, json!({"id": sub, "customer": cus, "status": "canceled"}));
    let late = event("evt_late", "customer.subscription.updated", t - 5, json!({"id": sub, "customer": cus, "status": "active"}));
    let (status, _) = deliver(&app, &deleted, Some(stripe_signature(&secret, t, &deleted))).await;
    assert_eq!(status, 200);
    let (status, body) = deliver(&app, &late, Some(stripe_signature(&secret, t, &late))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("stale")));
    assert_eq!(mine(&app).await["status"], "canceled");
    // invoice events re-read the subscription too, and count for the ordering: once the
    // invoice.paid of t + 1 is applied, an event of t (not stale before it) is.
    let paid = event("evt_inv", "invoice.paid", t + 1, json!({"id": "in_1", "customer": cus, "subscription": sub}));
    let (status, body) = deliver(&app, &paid, Some(stripe_signature(&secret, t, &paid))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    assert_eq!(mine(&app).await["status"], "canceled");
    let between = event("evt_between", "customer.subscription.updated", t, json!({"id": sub, "customer": cus, "status": "active"}));
    let (status, body) = deliver(&app, &between, Some(stripe_signature(&secret, t, &between))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("stale")), "{body}");
}

/// A subscription moved at Stripe (its dashboard, the portal) onto a price another live one of
/// the customer's has: the mirror holds one live subscription per price, so it cannot follow.
/// The event is acknowledged (and logged), never answered with an error Stripe would retry for
/// days; the row keeps its last state until either subscription ends.
#[tokio::test]
async fn a_subscription_moved_onto_the_price_of_another_live_one_is_acknowledged() {
    let app = spawn(|_| {}).await;
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let (cus, first, first_local) = local_subscription(&app).await;
    let other_price = app.stripe.price("2400").await;
    let (status, second, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": other_price})), &[]).await;
    assert_eq!(status, 201, "{second}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{first}")).await;
    let item = at_stripe["items"]["data"][0]["id"].as_str().expect("item").to_string();
    app.stripe.post(&format!("/v1/subscriptions/{first}"), &[("items[0][id]", &item), ("items[0][price]", &other_price)]).await;
    let moved = event("evt_moved", "customer.subscription.updated", now(), json!({"id": first, "customer": cus, "status": "active"}));
    let (status, body) = deliver(&app, &moved, Some(stripe_signature(&secret, now(), &moved))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("duplicate_live_price")), "{body}\n{}", app.app.host.log());
    let (_, list, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    // Both made within a second: their order in the list is not the point.
    let mut prices: Vec<String> = list["subscriptions"].as_array().expect("list").iter().map(|sub| sub["price_id"].to_string()).collect();
    let mut expected = vec![first_local["price_id"].to_string(), second["price_id"].to_string()];
    prices.sort();
    expected.sort();
    assert_eq!(prices, expected, "each keeps its price: {list}");
    assert!(app.app.host.log().contains("cannot mirror a second live subscription to one price"));
}

#[tokio::test]
async fn a_subscription_made_at_stripe_is_mirrored_from_its_event() {
    let app = spawn(|_| {}).await;
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let customer = app.customer("u-1").await;
    let cus = customer["stripe_customer_id"].as_str().unwrap();
    let price = app.stripe.price("300").await;
    let created = app.stripe.post("/v1/subscriptions", &[("customer", cus), ("items[0][price]", &price)]).await;
    let sub = created["id"].as_str().unwrap();
    let payload = event("evt_ext", "customer.subscription.created", now(), created.clone());
    let (status, body) = deliver(&app, &payload, Some(stripe_signature(&secret, now(), &payload))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    let ours = mine(&app).await;
    assert_eq!(ours["stripe_subscription_id"], sub);
    assert_eq!(ours["price_id"], price.as_str());
    assert_eq!(ours["status"], "active");
}

#[tokio::test]
async fn a_customer_deleted_at_stripe_is_removed_here() {
    let app = spawn(|_| {}).await;
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let customer = app.customer("u-1").await;
    let cus = customer["stripe_customer_id"].as_str().unwrap();
    // An event claiming deletion while Stripe still has the customer changes nothing.
    let early = event("evt_cd1", "customer.deleted", now(), json!({"id": cus}));
    let (status, body) = deliver(&app, &early, Some(stripe_signature(&secret, now(), &early))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("customer_still_exists")));
    reqwest::Client::new().delete(format!("{}/v1/customers/{cus}", app.stripe.base)).bearer_auth("sk_test_x").send().await.unwrap();
    let real = event("evt_cd2", "customer.deleted", now(), json!({"id": cus}));
    let (status, body) = deliver(&app, &real, Some(stripe_signature(&secret, now(), &real))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    let (status, _, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn stripe_down_while_applying_gives_503_and_the_retry_applies() {
    let app = spawn(|_| {}).await;
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let (cus, sub, _) = local_subscription(&app).await;
    app.stripe
        .fault(json!({"method": "GET", "path": format!("/v1/subscriptions/{sub}"), "status": 500, "times": 3}))
        .await;
    let payload = event("evt_retry", "customer.subscription.updated", now(), json!({"id": sub, "customer": cus}));
    let (status, _) = deliver(&app, &payload, Some(stripe_signature(&secret, now(), &payload))).await;
    assert_eq!(status, 503);
    // Stripe's retry is applied (the failed attempt left nothing in the inbox).
    let (status, body) = deliver(&app, &payload, Some(stripe_signature(&secret, now(), &payload))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
}

/// Makes a new card the Stripe customer's default payment method (`4000000000000341` attaches,
/// then every charge on it is declined).
async fn default_card(app: &CustomerApp, customer: &str, number: &str) {
    let pm = app
        .stripe
        .post("/v1/payment_methods", &[("type", "card"), ("card[number]", number), ("card[exp_month]", "12"), ("card[exp_year]", "2031"), ("card[cvc]", "123")])
        .await;
    let pm = pm["id"].as_str().unwrap();
    app.stripe.post(&format!("/v1/payment_methods/{pm}/attach"), &[("customer", customer)]).await;
    app.stripe.post(&format!("/v1/customers/{customer}"), &[("invoice_settings[default_payment_method]", pm)]).await;
}

/// invoice.payment_failed and invoice.paid move our mirror to Stripe's state. localstripe makes a
/// subscription past_due when a renewal invoice fails: here the switch to a yearly price
/// invoices at once, with a card that is declined; paying that invoice with a good card makes the
/// subscription active again. The events are sent by hand, each after Stripe's state changed.
#[tokio::test]
async fn invoice_events_move_the_subscription_to_stripes_state() {
    let app = spawn(|_| {}).await;
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let (cus, sub, created) = local_subscription(&app).await;
    assert_eq!(created["status"], "active");

    default_card(&app, &cus, "4000000000000341").await;
    let yearly = app
        .stripe
        .post("/v1/prices", &[("currency", "eur"), ("unit_amount", "12000"), ("recurring[interval]", "year"), ("product_data[name]", "Areas")])
        .await;
    let yearly = yearly["id"].as_str().unwrap();
    app.stripe.post(&format!("/v1/subscriptions/{sub}"), &[("items[0][price]", yearly)]).await;
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(at_stripe["status"], "past_due", "{at_stripe}");
    let (_, invoices) = app.stripe.get(&format!("/v1/invoices?customer={cus}")).await;
    let open = invoices["data"].as_array().unwrap().iter().find(|i| i["status"] == "open").expect("an open invoice").clone();
    // Nothing told us yet.
    assert_eq!(mine(&app).await["status"], "active");

    let t = now();
    let failed = event("evt_inv_failed", "invoice.payment_failed", t, open.clone());
    let (status, body) = deliver(&app, &failed, Some(stripe_signature(&secret, now(), &failed))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    let ours = mine(&app).await;
    assert_eq!((&ours["status"], &ours["price_id"]), (&json!("past_due"), &json!(yearly)), "{ours}");

    default_card(&app, &cus, "4242424242424242").await;
    let invoice = open["id"].as_str().unwrap();
    let paid_invoice = app.stripe.post(&format!("/v1/invoices/{invoice}/pay"), &[]).await;
    assert_eq!(paid_invoice["status"], "paid", "{paid_invoice}");
    let (_, at_stripe) = app.stripe.get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(at_stripe["status"], "active", "{at_stripe}");
    assert_eq!(mine(&app).await["status"], "past_due");

    let paid = event("evt_inv_paid", "invoice.paid", t + 1, paid_invoice);
    let (status, body) = deliver(&app, &paid, Some(stripe_signature(&secret, now(), &paid))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    let ours = mine(&app).await;
    assert_eq!((&ours["status"], &ours["price_id"], &ours["cancel_at_period_end"]), (&json!("active"), &json!(yearly), &at_stripe["cancel_at_period_end"]), "{ours}");
}

/// Auth owns the name and the email; Stripe keeps its own copy on the customer, which it prints on
/// invoices and mails receipts to. A change at auth reaches Stripe at the next read of the
/// profile, and, for a user who does not use billing again, when Stripe announces an invoice.
#[tokio::test]
async fn a_name_and_email_changed_at_auth_reach_stripe() {
    let app = spawn(|vars| {
        // Every read asks auth, as one does once the cache's minute is over.
        vars.insert("profile_cache_ttl_secs".into(), "0".into());
    })
    .await;
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let customer = app.customer("u-1").await;
    let cus = customer["stripe_customer_id"].as_str().unwrap().to_string();
    let at_stripe = || async {
        let (_, c) = app.stripe.get(&format!("/v1/customers/{cus}")).await;
        (c["name"].clone(), c["email"].clone())
    };
    let updates = || async {
        let path = format!("/v1/customers/{cus}");
        app.stripe.requests().await.into_iter().filter(|(method, p, key, _)| method == "POST" && *p == path && key.as_deref().is_some_and(|k| k.starts_with("customer-profile:"))).count()
    };
    assert_eq!(at_stripe().await, (json!("Ada u-1"), json!("u-1@example.org")));
    // Nothing changed: a read sends nothing.
    let (status, body, _) = app.call("GET", "/api/v3/customers/me/invoices", "u-1", None, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(updates().await, 0);

    // The user changes name and email at auth; the next read of the profile sends both, once.
    app.auth.add_user("u-1", "Ada King", "ada.king@example.net");
    let (status, body, _) = app.call("GET", "/api/v3/customers/me/invoices", "u-1", None, &[]).await;
    assert_eq!((status, &body["bill_to"]["email"]), (200, &json!("ada.king@example.net")), "{body}");
    assert_eq!(at_stripe().await, (json!("Ada King"), json!("ada.king@example.net")));
    app.call("GET", "/api/v3/customers/me/invoices", "u-1", None, &[]).await;
    assert_eq!(updates().await, 1);

    // Another change, and no read: the next invoice event sends it before the invoice is final.
    app.auth.add_user("u-1", "Ada King", "ada@lovelace.example");
    let created = event("evt_inv_created", "invoice.created", now(), json!({"id": "in_1", "customer": cus, "status": "draft"}));
    let (status, body) = deliver(&app, &created, Some(stripe_signature(&secret, now(), &created))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    assert_eq!(at_stripe().await.1, json!("ada@lovelace.example"));
    let again = event("evt_inv_upcoming", "invoice.upcoming", now(), json!({"customer": cus}));
    let (status, body) = deliver(&app, &again, Some(stripe_signature(&secret, now(), &again))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("profile_current")), "{body}");
    assert_eq!(updates().await, 2);

    // Someone edits the email in Stripe's dashboard; Stripe's customer.updated has customer send
    // auth's back (what we sent, echoed, is left alone: checked in the unit tests).
    let edited = app.stripe.post(&format!("/v1/customers/{cus}"), &[("email", "billing@elsewhere.example")]).await;
    let changed = event("evt_cus_updated", "customer.updated", now(), edited);
    // Our last update is seconds old: nothing is sent back at once...
    let (status, body) = deliver(&app, &changed, Some(stripe_signature(&secret, now(), &changed))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("recently_sent")), "{body}");
    // ...and the next invoice event sends auth's email again.
    let next = event("evt_inv_created_2", "invoice.created", now(), json!({"id": "in_2", "customer": cus, "status": "draft"}));
    let (status, body) = deliver(&app, &next, Some(stripe_signature(&secret, now(), &next))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    assert_eq!(at_stripe().await.1, json!("ada@lovelace.example"));
    assert_eq!(updates().await, 3);

    // Each sync is audited, and neither the audit nor our database holds the name or the email.
    let audited = app.db_rows("SELECT actor, detail FROM audit_log WHERE action = 'customer.stripe_profile_synced' ORDER BY id").await;
    let audited: Vec<(String, String)> = audited.into_iter().map(mysql_async::from_row).collect();
    let synced = |actor: &str| (actor.to_string(), format!("stripe_customer={cus}"));
    assert_eq!(audited, [synced("u-1"), synced("stripe"), synced("stripe")]);
    let stored = app.db_rows("SELECT profile_digest FROM stripe_profile_sync WHERE customer_id = 'u-1'").await;
    let stored: Vec<String> = stored.into_iter().map(mysql_async::from_row).collect();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].len() == 64 && stored[0].bytes().all(|b| b.is_ascii_hexdigit()), "{stored:?}");
}
