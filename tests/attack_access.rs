//! Attack cases, access control: user A aims at user B's id or resources on every endpoint that
//! takes one (IDOR), and the still-unexpired access token of a deleted user is replayed against
//! both services. Exact statuses; B's data and Stripe untouched. What each service answers to a
//! deleted user's token is listed in docs/reliability.md.

#[path = "auth_support.rs"]
mod support;

#[path = "customer_support.rs"]
mod cs;

#[path = "attack_support.rs"]
mod attack;

use attack::{full, full_with, sans_request_id};
use serde_json::json;
use support::{PASSWORD, assert_problem};

#[tokio::test]
async fn user_a_reaches_none_of_user_bs_data_through_any_id() {
    let app = full().await;
    let a = app.user("Ada", "ada@example.org").await;
    let b = app.user("Bob", "bob@example.org").await;
    app.customer(&a).await;
    let b_customer = app.customer(&b).await;
    let price = app.stripe.price("1200").await;
    // B subscribes with an Idempotency-Key A will try to reuse.
    let b_sub = app
        .raw(
            "POST",
            "/api/v3/customers/me/subscriptions",
            Some(&b.token),
            Some("application/json"),
            &[("idempotency-key", "shared-key-1")],
            json!({"price_id": price}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(b_sub.status, 201, "{}", b_sub.text);
    let b_sub_id = b_sub.body["id"].as_str().unwrap().to_string();
    let b_stripe_sub = b_sub.body["stripe_subscription_id"].as_str().unwrap().to_string();
    let ghost = "0190aaaa-0000-7000-8000-000000000000";
    let before = app.snapshot().await;

    // auth: B's id is indistinguishable from an id that does not exist.
    let other = app.send("GET", &format!("/api/v3/users/{}", b.id), Some(&a.token), None).await;
    let nobody = app.send("GET", &format!("/api/v3/users/{ghost}"), Some(&a.token), None).await;
    assert_problem(&other, 404, "user_not_found");
    assert_eq!(sans_request_id(&other.body), sans_request_id(&nobody.body));
    for variant in [b.id.to_uppercase(), format!("{}%20", b.id), format!("%20{}", b.id), b.id.replace('-', "")] {
        let answer = app.send("GET", &format!("/api/v3/users/{variant}"), Some(&a.token), None).await;
        assert_problem(&answer, 404, "user_not_found");
    }
    let batch = app.send("POST", "/api/v3/users/batch", Some(&a.token), Some(json!({"ids": [b.id, a.id, ghost]}))).await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    assert_eq!(batch.body["users"].as_array().unwrap().len(), 1);
    assert_eq!(batch.body["users"][0]["id"], a.id.as_str());
    assert_eq!(batch.body["missing"], json!([b.id, ghost]));
    assert!(!batch.text.contains("bob@example.org") && !batch.text.contains("Bob"));

    // customer: B's customer, with or without the profile; B's subscription by our id or Stripe's.
    for path in [format!("/api/v3/customers/{}", b.id), format!("/api/v3/customers/{}?include=profile", b.id)] {
        let answer = app.send("GET", &path, Some(&a.token), None).await;
        let missing = app.send("GET", &path.replace(&b.id, ghost), Some(&a.token), None).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (404, Some("not_found")), "{path}: {}", answer.text);
        assert_eq!(sans_request_id(&answer.body), sans_request_id(&missing.body), "{path}: same answer as for nobody");
    }
    for path in [
        format!("/api/v3/customers/me/subscriptions/{b_sub_id}"),
        format!("/api/v3/customers/me/subscriptions/{b_sub_id}?at_period_end=false"),
        format!("/api/v3/customers/me/subscriptions/{b_stripe_sub}"),
        format!("/api/v3/customers/me/subscriptions/{}", b_sub_id.to_uppercase()),
    ] {
        let answer = app.send("DELETE", &path, Some(&a.token), None).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (404, Some("not_found")), "{path}: {}", answer.text);
        let answer = app.send("PATCH", &path, Some(&a.token), Some(json!({"cancel_at_period_end": true}))).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (404, Some("not_found")), "PATCH {path}: {}", answer.text);
    }
    // B's card (attached to B's Stripe customer) cannot become A's, and A hears what a card
    // that does not exist gets.
    let b_stripe_customer = b_customer["stripe_customer_id"].as_str().unwrap();
    let (_, b_at_stripe) = app.stripe.get(&format!("/v1/customers/{b_stripe_customer}")).await;
    let b_card = b_at_stripe["invoice_settings"]["default_payment_method"].as_str().expect("B has a card").to_string();
    let taken = app.send("PUT", "/api/v3/customers/me/payment-method", Some(&a.token), Some(json!({"payment_method_id": b_card}))).await;
    let nothing = app.send("PUT", "/api/v3/customers/me/payment-method", Some(&a.token), Some(json!({"payment_method_id": "pm_nothing"}))).await;
    assert_eq!(taken.status, 422, "{}", taken.text);
    assert_eq!(sans_request_id(&taken.body), sans_request_id(&nothing.body));
    let (_, card_at_stripe) = app.stripe.get(&format!("/v1/payment_methods/{b_card}")).await;
    assert_eq!(card_at_stripe["customer"], b_stripe_customer, "{card_at_stripe}");
    let a_card = app.send("GET", "/api/v3/customers/me/payment-method", Some(&a.token), None).await;
    assert_ne!(a_card.body["id"], b_card.as_str(), "{}", a_card.text);

    // A's own lists show nothing of B's.
    let subs = app.send("GET", "/api/v3/customers/me/subscriptions", Some(&a.token), None).await;
    assert_eq!(subs.body, json!({"subscriptions": []}));
    let invoices = app.send("GET", "/api/v3/customers/me/invoices", Some(&a.token), None).await;
    assert_eq!(invoices.status, 200, "{}", invoices.text);
    assert!(!invoices.text.contains("Bob") && !invoices.text.contains(b_customer["stripe_customer_id"].as_str().unwrap()));
    // B's Stripe cursor in A's invoice listing: customer passes it on, and the list stays scoped
    // to A's customer (localstripe ignores a cursor not in the list: A's first page, empty).
    let b_invoices = app.send("GET", "/api/v3/customers/me/invoices", Some(&b.token), None).await;
    assert_eq!(b_invoices.status, 200, "{}", b_invoices.text);
    let b_invoice = b_invoices.body["invoices"][0]["id"].as_str().expect("B's subscription made an invoice");
    let answer = app.send("GET", &format!("/api/v3/customers/me/invoices?starting_after={b_invoice}"), Some(&a.token), None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!((&answer.body["invoices"], &answer.body["has_more"]), (&json!([]), &json!(false)), "{}", answer.text);
    assert!(!answer.text.contains(b_invoice) && !answer.text.contains("Bob"), "{}", answer.text);
    app.assert_unchanged(&before, "after A's reads and cancels aimed at B").await;

    // B's Idempotency-Key in A's hands is A's own key: a fresh request, never B's stored answer.
    let a_sub = app
        .raw(
            "POST",
            "/api/v3/customers/me/subscriptions",
            Some(&a.token),
            Some("application/json"),
            &[("idempotency-key", "shared-key-1")],
            json!({"price_id": price}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(a_sub.status, 201, "{}", a_sub.text);
    assert_ne!(a_sub.body["id"], b_sub_id.as_str());
    assert!(!a_sub.text.contains(&b_stripe_sub));
    let b_now = app.send("GET", "/api/v3/customers/me/subscriptions", Some(&b.token), None).await;
    assert_eq!(b_now.body["subscriptions"][0]["status"], "active", "{}", b_now.text);
    assert_eq!(b_now.body["subscriptions"][0]["cancel_at_period_end"], false);
}

#[tokio::test]
async fn the_token_of_a_deleted_user_is_refused_by_auth_and_limited_at_customer() {
    // A short profile cache: customer may serve a cached profile for this long after a deletion
    // (60 s by default; see docs/reliability.md).
    let app = full_with(|vars| {
        vars.insert("profile_cache_ttl_secs".into(), "2".into());
    })
    .await;
    let a = app.user("Ada", "ada@example.org").await;
    let free = app.user("Free", "free@example.org").await;
    let customer = app.customer(&a).await;
    let price = app.stripe.price("900").await;
    let sub = app.subscribe(&a, &price).await;

    for user in [&a, &free] {
        let deleted = app.send("DELETE", "/api/v3/users/me", Some(&user.token), Some(json!({"password": PASSWORD}))).await;
        assert_eq!(deleted.status, 204, "{}", deleted.text);
    }
    assert_eq!(attack::db_rows(&app.app.auth_db, "SELECT COUNT(*) FROM client_auth").await[0][0], "0");

    // auth: the token names nobody.
    assert_problem(&app.send("GET", "/api/v3/users/me", Some(&a.token), None).await, 401, "invalid_token");
    assert_problem(&app.send("PATCH", "/api/v3/users/me", Some(&a.token), Some(json!({"name": "Back"}))).await, 401, "invalid_token");
    assert_problem(
        &app.send("PUT", "/api/v3/users/me/password", Some(&a.token), Some(json!({"current_password": PASSWORD, "new_password": "resurrected-99"}))).await,
        401,
        "invalid_token",
    );
    assert_problem(&app.send("DELETE", "/api/v3/users/me", Some(&a.token), Some(json!({"password": PASSWORD}))).await, 401, "invalid_token");
    assert_problem(&app.send("GET", &format!("/api/v3/users/{}", a.id), Some(&a.token), None).await, 404, "user_not_found");
    let batch = app.send("POST", "/api/v3/users/batch", Some(&a.token), Some(json!({"ids": [a.id]}))).await;
    assert_eq!((batch.status, batch.body.clone()), (200, json!({"users": [], "missing": [a.id]})), "{}", batch.text);
    assert_problem(&app.send("POST", "/api/v3/auth/refresh", None, Some(json!({"refresh_token": a.refresh}))).await, 401, "invalid_refresh_token");
    assert_eq!(attack::db_rows(&app.app.auth_db, "SELECT COUNT(*) FROM client_auth").await[0][0], "0", "nothing came back");

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await; // past the profile cache
    // customer: the token still verifies (customer holds only auth's public keys) until it expires.
    // Billing rows are customer's and stay readable by their owner; anything that needs the
    // profile says the profile is gone; a user who never was a customer cannot become one.
    let me = app.send("GET", "/api/v3/customers/me", Some(&a.token), None).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["stripe_customer_id"], customer["stripe_customer_id"]);
    let with_profile = app.send("GET", "/api/v3/customers/me?include=profile", Some(&a.token), None).await;
    assert_eq!(with_profile.status, 200, "{}", with_profile.text);
    assert_eq!(with_profile.body["profile"], json!(null), "{}", with_profile.text);
    assert_eq!(with_profile.body["profile_error"]["code"], "profile_not_found", "{}", with_profile.text);
    let invoices = app.send("GET", "/api/v3/customers/me/invoices", Some(&a.token), None).await;
    assert_eq!((invoices.status, invoices.body["code"].as_str()), (404, Some("profile_not_found")), "{}", invoices.text);
    let subs = app.send("GET", "/api/v3/customers/me/subscriptions", Some(&a.token), None).await;
    assert_eq!(subs.status, 200, "{}", subs.text);
    // Subscribing asks auth for the profile first: a deleted account cannot start paying, and
    // nothing reaches Stripe.
    let other_price = app.stripe.price("300").await;
    let stripe_subs = app.stripe.subscriptions_of(customer["stripe_customer_id"].as_str().unwrap()).await.len();
    let late = app.send("POST", "/api/v3/customers/me/subscriptions", Some(&a.token), Some(json!({"price_id": other_price}))).await;
    assert_eq!((late.status, late.body["code"].as_str()), (404, Some("profile_not_found")), "{}", late.text);
    assert_eq!(app.stripe.subscriptions_of(customer["stripe_customer_id"].as_str().unwrap()).await.len(), stripe_subs);
    let stripe_before = app.stripe.customers_of(&free.id).await.len();
    let create = app.send("POST", "/api/v3/customers", Some(&free.token), Some(json!({"area_ids": [1]}))).await;
    assert_eq!((create.status, create.body["code"].as_str()), (404, Some("profile_not_found")), "{}", create.text);
    assert_eq!(app.stripe.customers_of(&free.id).await.len(), stripe_before, "no Stripe customer for a deleted user");
    // Leaving billing still works (cancels at Stripe, removes the rows): the user's own clean-up.
    let cancel = app.send("DELETE", &format!("/api/v3/customers/me/subscriptions/{}?at_period_end=false", sub["id"].as_str().unwrap()), Some(&a.token), None).await;
    assert_eq!(cancel.status, 200, "{}", cancel.text);
    let gone = app.send("DELETE", "/api/v3/customers/me", Some(&a.token), None).await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    assert_eq!(attack::db_rows(&app.app.customer_db, "SELECT COUNT(*) FROM customers").await[0][0], "0");
}

/// Found by schemathesis (scripts/conformance.sh): leave billing, then become a customer again.
#[tokio::test]
async fn a_user_who_left_billing_can_become_a_customer_again() {
    let app = full().await;
    let a = app.user("Ada", "ada@example.org").await;
    let first = app.customer(&a).await;
    let gone = app.send("DELETE", "/api/v3/customers/me", Some(&a.token), None).await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    let again = app.send("POST", "/api/v3/customers", Some(&a.token), Some(json!({"area_ids": [1]}))).await;
    assert_eq!(again.status, 201, "{}\n{}", again.text, app.app.host.log());
    assert_ne!(again.body["stripe_customer_id"], first["stripe_customer_id"], "a new Stripe customer, not the deleted one");
    let (status, _) = app.stripe.get(&format!("/v1/customers/{}", again.body["stripe_customer_id"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    let live: Vec<_> = app.stripe.customers_of(&a.id).await;
    assert_eq!(live.len(), 1, "{live:?}");
}
