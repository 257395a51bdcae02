//! Faults: Stripe failing a create, auth stopped, slow or lying, and the login proxy of a split
//! deployment.

#[path = "customer_support.rs"]
mod support;

use std::time::{Duration, Instant};

use integration_tests::{HostProcess, TestDatabase, component_wasm, fresh_key_variables, repo_root};
use serde_json::{Value, json};
use support::{CustomerApp, spawn};

/// The `error` of every logged call to `target` that got no answer (`could not connect: ...`,
/// `timed out: ...`), from the host's JSON log lines.
fn call_errors(app: &CustomerApp, target: &str) -> Vec<String> {
    support::call_lines(&app.app, target).iter().filter_map(|l| l["error"].as_str().map(str::to_string)).collect()
}

/// The POSTs to `/v1/customers` localstripe saw, in order: (Idempotency-Key, status).
async fn customer_creates(app: &CustomerApp) -> Vec<(Option<String>, Option<u16>)> {
    app.stripe.requests().await.into_iter().filter(|r| r.0 == "POST" && r.1 == "/v1/customers").map(|r| (r.2, r.3)).collect()
}

/// Exactly one Stripe customer for u-1, and it is the one our customer row names.
async fn assert_one_customer(app: &CustomerApp) {
    let at_stripe = app.stripe.customers_of("u-1").await;
    assert_eq!(at_stripe.len(), 1, "{at_stripe:?}");
    let (status, me, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["stripe_customer_id"], at_stripe[0]["id"]);
}

/// Stripe answers the first create with a 500, once, `when` = before or after acting: the
/// retry within the same request, under the same key, makes (or replays) the one customer.
async fn create_through_one_500(when: &str) {
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    app.stripe.fault(json!({"method": "POST", "path": "/v1/customers", "status": 500, "times": 1, "when": when})).await;
    let (status, body, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 201, "{body}\n{}", app.app.host.log());
    // The fault fired: the first create got the injected 500, the retry reused its key.
    let creates = customer_creates(&app).await;
    assert_eq!(creates.len(), 2, "{creates:?}");
    assert!(creates[0].0.is_some() && creates[0].0 == creates[1].0, "one key for both attempts: {creates:?}");
    assert_eq!((creates[0].1, creates[1].1), (Some(500), Some(200)), "{creates:?}");
    assert_one_customer(&app).await;
}

#[tokio::test]
async fn stripe_failing_the_first_create_before_acting_gives_one_customer() {
    create_through_one_500("before").await;
}

#[tokio::test]
async fn stripe_losing_the_answer_to_the_first_create_gives_one_customer() {
    create_through_one_500("after").await;
}

#[tokio::test]
async fn stripe_failing_every_retry_then_recovering_gives_one_customer() {
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    // Stripe makes the customer on the first attempt, but every answer is lost.
    app.stripe.fault(json!({"method": "POST", "path": "/v1/customers", "status": 502, "times": 10, "when": "after"})).await;
    let (status, body, headers) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("billing_unavailable")), "{body}\n{}", app.app.host.log());
    assert_eq!(headers["content-type"], "application/problem+json");
    let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| s > 0), "Retry-After in seconds: {headers:?}");
    let creates = customer_creates(&app).await;
    assert_eq!(creates.len(), 3, "every attempt was made: {creates:?}");
    assert!(creates.iter().all(|c| c.0.is_some() && c.0 == creates[0].0 && c.1 == Some(502)), "{creates:?}");
    let (status, me, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!((status, me["code"].as_str()), (404, Some("not_a_customer")), "nothing recorded on a 503: {me}");

    // Stripe recovers; the client sends the same request again: the customer Stripe made on the
    // first attempt is found, not made again.
    app.stripe.clear_faults().await;
    let (status, body, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 201, "{body}\n{}", app.app.host.log());
    assert_one_customer(&app).await;
}

#[tokio::test]
async fn stripe_rejections_are_422_and_a_declined_card_leaves_nothing_active() {
    let app = spawn(|_| {}).await;
    let customer = app.customer("u-1").await;
    let (status, body, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": "price_doesnotexist"})), &[]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "billing_rejected");
    // Stripe's `items[0][price]` is reported as the field the client sent.
    assert_eq!(
        body["errors"],
        json!([{"field": "price_id", "code": "not_found", "detail": "No such price: 'price_doesnotexist'"}]),
        "{body}"
    );
    let (status, mine, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!((status, mine), (200, json!({"subscriptions": []})), "a refused subscription leaves no row");
    // A card that is declined when charged.
    let stripe_customer = customer["stripe_customer_id"].as_str().unwrap();
    let pm = app
        .stripe
        .post("/v1/payment_methods", &[("type", "card"), ("card[number]", "4000000000000341"), ("card[exp_month]", "12"), ("card[exp_year]", "2031"), ("card[cvc]", "123")])
        .await;
    let pm = pm["id"].as_str().unwrap();
    app.stripe.post(&format!("/v1/payment_methods/{pm}/attach"), &[("customer", stripe_customer)]).await;
    app.stripe.post(&format!("/v1/customers/{stripe_customer}"), &[("invoice_settings[default_payment_method]", pm)]).await;
    let price = app.stripe.price("2500").await;
    let (status, body, _) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    // With default_incomplete (as live Stripe) the decline is no error: the subscription is
    // created `incomplete` and its first invoice stays open.
    assert_eq!((status, body["status"].as_str()), (201, Some("incomplete")), "{body}");
    let (status, mine, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!(status, 200, "{mine}");
    let ours: Vec<&str> = mine["subscriptions"].as_array().expect("a list").iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(ours, ["incomplete"], "{mine}");
    let at_stripe = app.stripe.subscriptions_of(stripe_customer).await;
    let statuses: Vec<&str> = at_stripe.iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["incomplete"], "{at_stripe:?}");
    assert_eq!(at_stripe[0]["id"], body["stripe_subscription_id"]);
}

#[tokio::test]
async fn a_card_error_from_stripe_is_a_402_and_leaves_no_subscription() {
    let app = spawn(|_| {}).await;
    let customer = app.customer("u-1").await;
    let price = app.stripe.price("2500").await;
    // localstripe's faults answer with a fixed body (type api_error): the 402 status alone is
    // what makes it a card error, as Stripe only sends 402 for those.
    app.stripe.fault(json!({"method": "POST", "path": "/v1/subscriptions", "status": 402, "times": 1})).await;
    let (status, body, headers) = app.call("POST", "/api/v3/customers/me/subscriptions", "u-1", Some(json!({"price_id": price})), &[]).await;
    assert_eq!((status, body["code"].as_str()), (402, Some("payment_failed")), "{body}\n{}", app.app.host.log());
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["status"], 402);
    // A decline is final: asked once, not retried.
    let creates: Vec<_> = app.stripe.requests().await.into_iter().filter(|r| r.0 == "POST" && r.1 == "/v1/subscriptions").collect();
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(creates[0].3, Some(402));
    let (status, mine, _) = app.call("GET", "/api/v3/customers/me/subscriptions", "u-1", None, &[]).await;
    assert_eq!((status, &mine), (200, &json!({"subscriptions": []})), "no row, not even a pending one");
    assert!(app.stripe.subscriptions_of(customer["stripe_customer_id"].as_str().unwrap()).await.is_empty());
}

#[tokio::test]
async fn auth_stopped_gives_a_503_then_a_cached_profile_after_warm_up() {
    let mut app = spawn(|vars| {
        vars.insert("profile_cache_ttl_secs".into(), "1".into());
    })
    .await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    app.auth.add_user("u-2", "Bob", "bob@example.org");
    let (status, _, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 201);
    let (status, _, _) = app.call("GET", "/api/v3/customers/me?include=profile", "u-1", None, &[]).await;
    assert_eq!(status, 200);

    app.auth.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the profile TTL

    // Never seen by the cache: 503 with Retry-After, the refused connection taken as the answer
    // (no waiting for a timeout).
    let (status, body, headers) = app.call("POST", "/api/v3/customers", "u-2", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "auth_unavailable");
    assert!(headers.contains_key("retry-after"));
    let errors = call_errors(&app, "auth");
    assert!(errors.iter().any(|e| e.starts_with("could not connect")), "{errors:?}");
    assert!(!errors.iter().any(|e| e.starts_with("timed out")), "{errors:?}");
    assert!(app.stripe.customers_of("u-2").await.is_empty());

    // Warmed up: the cached profile, marked as such.
    let (status, me, _) = app.call("GET", "/api/v3/customers/me?include=profile", "u-1", None, &[]).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["profile"]["name"], "Ada");
    assert_eq!(me["profile"]["stale"], true, "{me}");
    assert_eq!(me["profile"]["source"], "stale_cache");

    // GET /me without a profile never needs auth.
    let (status, _, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 200);

    // The breaker opens: later calls do not wait for auth at all.
    for _ in 0..6 {
        let _ = app.call("POST", "/api/v3/customers", "u-2", Some(json!({"area_ids": [1]})), &[]).await;
    }
    assert!(app.app.host.log().contains("circuit open"), "{}", app.app.host.log());

    // Auth is back: after the cool-down one probe goes through and the breaker closes.
    app.auth.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) = app.call("POST", "/api/v3/customers", "u-2", Some(json!({"area_ids": [1]})), &[]).await;
        if status == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "auth never came back");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(app.stripe.customers_of("u-2").await.len(), 1);
}

/// Customer with a 500 ms auth timeout and a user `u-1`, the JWKS fetched while auth is fast.
async fn with_a_500_ms_auth_timeout() -> CustomerApp {
    let app = spawn(|vars| {
        vars.insert("auth_timeout_ms".into(), "500".into());
    })
    .await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    let (status, _, _) = app.call("GET", "/api/v3/customers/me", "u-1", None, &[]).await;
    assert_eq!(status, 404);
    app
}

#[tokio::test]
async fn a_cold_start_burst_is_served_when_one_fetch_of_the_keys_answers() {
    let app = spawn(|vars| {
        vars.insert("auth_timeout_ms".into(), "1000".into());
    })
    .await;
    // Nothing cached yet: each of ten requests fetches auth's keys. The first fetch is answered
    // after 300 ms; every later one would be after 3 s, past the 1 s timeout.
    app.auth.state.lock().unwrap().jwks_delays = [300].into_iter().chain([3000; 9]).map(Duration::from_millis).collect();
    let requests = (0..10).map(|i| app.call("GET", "/api/v3/customers/me", if i % 2 == 0 { "u-1" } else { "u-2" }, None, &[]));
    let outcomes: Vec<_> = integration_tests::join_all(requests).await.into_iter().map(|(status, body, _)| (status, body["code"].clone())).collect();
    // Each request whose own fetch timed out used the keys the first one cached meanwhile.
    assert!(outcomes.iter().all(|(status, code)| (*status, code.as_str()) == (404, Some("not_a_customer"))), "{outcomes:?}\n{}", app.app.host.log());
    assert!(call_errors(&app, "auth").iter().any(|e| e.starts_with("timed out")), "some fetches timed out\n{}", app.app.host.log());
}

/// `POST /customers` for `u-1` while auth misbehaves: a 503 `auth_unavailable` with
/// `Retry-After`, and no Stripe customer. Returns the errors of the calls to auth.
async fn create_refused_as_auth_unavailable(app: &CustomerApp) -> Vec<String> {
    let (status, body, headers) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("auth_unavailable")), "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(app.stripe.customers_of("u-1").await.is_empty());
    call_errors(app, "auth")
}

#[tokio::test]
async fn a_slow_auth_is_cut_off_at_the_timeout_with_a_503() {
    let app = with_a_500_ms_auth_timeout().await;
    // Auth would answer (with the user) after 10 s: a 503 means customer stopped waiting first.
    app.auth.state.lock().unwrap().delay = Some(Duration::from_secs(10));
    let errors = create_refused_as_auth_unavailable(&app).await;
    assert!(errors.iter().any(|e| e.starts_with("timed out")), "the profile call timed out: {errors:?}\n{}", app.app.host.log());
}

#[tokio::test]
async fn an_auth_that_trickles_its_answer_is_cut_off_at_the_whole_answer_deadline() {
    let app = with_a_500_ms_auth_timeout().await;
    // Every byte comes 300 ms after the last, inside the 500 ms between-bytes timeout: the
    // profile (over 150 bytes) would take most of a minute, each wait on its own never too long.
    app.auth.state.lock().unwrap().trickle = Some(Duration::from_millis(300));
    let errors = create_refused_as_auth_unavailable(&app).await;
    // `auth_timeout_ms` bounds the whole answer, not only each wait.
    assert!(
        errors.iter().any(|e| e == "timed out: no whole answer within 500 ms"),
        "the profile call hit the whole-answer deadline: {errors:?}\n{}",
        app.app.host.log()
    );
}

#[tokio::test]
async fn an_answer_from_auth_that_does_not_validate_is_never_passed_on() {
    let app = spawn(|_| {}).await;
    app.auth.add_user("u-1", "Ada", "ada@example.org");
    app.auth.state.lock().unwrap().garbage =
        Some(json!({"user": support::user_json("someone-else", "Mallory", "mallory@example.org")}));
    let (status, body, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.to_string().contains("Mallory"));
    app.auth.state.lock().unwrap().garbage = Some(json!({"user": {"id": "u-1", "name": "", "email": "x"}}));
    let (status, _, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 503);
    assert!(app.stripe.customers_of("u-1").await.is_empty());
}

/// A split deployment: customer alone, auth elsewhere; customer's login proxy forwards.
#[tokio::test]
async fn the_login_proxy_forwards_to_auth_in_a_split_deployment() {
    let auth = support::AuthStub::start().await;
    let stripe = support::LocalStripe::start().await;
    let db = TestDatabase::create("customer").await.unwrap();
    admin::migrate::up(&db.url, admin::migrate::Service::Customer.migrator(), Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    let wasm = component_wasm("customer").unwrap();
    let full = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    // customer's own section, its variables, and routes that include the login path.
    let variables: String = full
        .split("[[trigger.http]]")
        .next()
        .unwrap()
        .to_string();
    let component: String = full
        .split("[component.customer]")
        .nth(1)
        .unwrap()
        .split("[component.customer.build]")
        .next()
        .unwrap()
        .replace("target/wasm32-wasip2/release/customer.wasm", &wasm.display().to_string());
    std::fs::write(
        &manifest,
        format!(
            "{variables}\n[[trigger.http]]\nroute = \"/api/v3/auth/login\"\ncomponent = \"customer\"\n\n\
             [[trigger.http]]\nroute = \"/api/v3/customers/...\"\ncomponent = \"customer\"\n\n[component.customer]{component}"
        ),
    )
    .unwrap();
    let mut variables = fresh_key_variables().unwrap();
    variables.insert("customer_db_url".into(), db.url.clone());
    variables.insert("customer_db_address".into(), db.address.clone());
    variables.insert("auth_db_url".into(), "mysql://unused@127.0.0.1:1/none".into());
    variables.insert("auth_service_url".into(), auth.base.clone());
    variables.insert("stripe_api_base".into(), stripe.base.clone());
    let host = HostProcess::start(&manifest, &variables).await.expect("split customer starts");
    let client = reqwest::Client::new();
    let response = client
        .post(host.url("/api/v3/auth/login"))
        .json(&json!({"email": "ada@example.org", "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", host.log());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["proxied"], true);
    assert_eq!(body["echo"]["email"], "ada@example.org");
    // The client's address goes on in X-Forwarded-For, as any proxy's would: auth counts failed
    // logins against it when customer is in its `auth_trusted_proxies`.
    assert_eq!(body["forwarded_for"], "127.0.0.1", "{body}");
    // Behind an ingress, customer appends its peer (the ingress) to what the ingress wrote.
    let behind_ingress: Value = client
        .post(host.url("/api/v3/auth/login"))
        .header("x-forwarded-for", "203.0.113.7")
        .json(&json!({"email": "ada@example.org", "password": "pw"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(behind_ingress["forwarded_for"], "203.0.113.7, 127.0.0.1", "{behind_ingress}");
    // A login that already passed customer's proxy (auth_service_url pointing back at customer,
    // or a client saying so) is refused, not forwarded again, and is no internal error.
    let calls_before = auth.state.lock().unwrap().seen.len();
    let looped = client
        .post(host.url("/api/v3/auth/login"))
        .header("x-forwarded-by", "customer")
        .json(&json!({"email": "ada@example.org", "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(looped.status(), 508);
    assert_eq!(looped.headers()["content-type"], "application/problem+json");
    let looped: Value = looped.json().await.unwrap();
    assert_eq!(looped["code"], "proxy_loop", "{looped}");
    assert_eq!(auth.state.lock().unwrap().seen.len(), calls_before, "not forwarded");
    assert!(!host.log().contains("\"message\":\"internal error\""), "{}", host.log());
    assert!(host.log().contains("login proxy loop"), "{}", host.log());
    assert!(auth.state.lock().unwrap().seen.iter().any(|s| s.starts_with("POST /api/v3/auth/login")));
    let health: Value = client.get(host.url("/api/v3/customers/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["auth"]["status"], "ok", "{health}");
}
