//! Faults, auth (extends customer_faults.rs, which covers auth stopped, slow, lying, and the
//! breaker opening then closing once): bursts of concurrent requests while auth hangs. Each is
//! cut off by the timeout (a 503, never auth's late answer); once the breaker is open a burst
//! never reaches auth; after auth recovers and the cool-down passes, requests succeed again.
//! Concurrent failures are counted atomically in customer's database (key-value, where the
//! breaker's state lives, has no increment), so one concurrent burst opens the breaker.

#[path = "customer_support.rs"]
mod support;

use std::time::{Duration, Instant};

use integration_tests::join_all;
use serde_json::json;
use support::spawn;

#[tokio::test]
async fn a_burst_while_auth_hangs_never_waits_past_the_timeout_and_the_breaker_recovers() {
    let app = spawn(|vars| {
        vars.insert("auth_timeout_ms".into(), "500".into());
        vars.insert("profile_cache_ttl_secs".into(), "0".into());
    })
    .await;
    for u in 0..20 {
        app.auth.add_user(&format!("u-{u}"), "Ada", &format!("u{u}@example.org"));
    }
    // JWKS fetched and cached while auth is healthy.
    let (status, _, _) = app.call("GET", "/api/v3/customers/me", "u-0", None, &[]).await;
    assert_eq!(status, 404);
    app.auth.state.lock().unwrap().delay = Some(Duration::from_secs(30));

    // Two waves of 20 concurrent requests. The first all wait for auth until the timeout: auth
    // would answer each with its user after 30 s, so a 503 is the timeout's. Their failures are
    // counted atomically in customer's database, so this wave alone opens the breaker (five
    // failures), and the second wave is answered by it without calling auth.
    let mut calls_after_wave = vec![app.auth.profile_calls()];
    for wave in 0..2 {
        let calls = (0..20).map(|u| {
            let app = &app;
            async move {
                let (status, body, headers) = app.call("POST", "/api/v3/customers", &format!("u-{u}"), Some(json!({"area_ids": [1]})), &[]).await;
                (status, body, headers.contains_key("retry-after"))
            }
        });
        for (status, body, retry_after) in join_all(calls).await {
            assert_eq!((status, body["code"].as_str(), retry_after), (503, Some("auth_unavailable"), true), "wave {wave}: {body}");
        }
        calls_after_wave.push(app.auth.profile_calls());
        if wave == 0 {
            // Every call the first wave made to auth ended by timing out.
            let timed_out = support::call_lines(&app.app, "auth")
                .iter()
                .filter(|l| l["error"].as_str().is_some_and(|e| e.starts_with("timed out")))
                .count();
            let asked = calls_after_wave[1] - calls_after_wave[0];
            assert!(asked > 0 && timed_out == asked, "{asked} auth calls, {timed_out} timed out:\n{}", app.app.host.log());
        }
    }
    assert!(app.app.host.log().contains("circuit open"), "the breaker opened");
    assert_eq!(calls_after_wave[2], calls_after_wave[1], "the open breaker spared auth: {calls_after_wave:?}");
    let counted = app.db_rows("SELECT failures FROM auth_breaker_failures").await;
    let counted: u32 = counted.first().and_then(|row| row.get(0)).expect("the failures were counted");
    let failed_calls = calls_after_wave[1] - calls_after_wave[0];
    assert_eq!(usize::try_from(counted).unwrap(), failed_calls, "each failed call of the first wave counted once");
    // Nothing reached Stripe.
    for u in 0..20 {
        assert!(app.stripe.customers_of(&format!("u-{u}")).await.is_empty());
    }

    // Auth recovers; after the cool-down a probe goes through and the breaker closes.
    app.auth.state.lock().unwrap().delay = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, _) = app.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
        if status == 201 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "the breaker never closed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, _, _) = app.call("POST", "/api/v3/customers", "u-2", Some(json!({"area_ids": [1]})), &[]).await;
    assert_eq!(status, 201, "closed: the next request goes straight through");
    assert!(app.db_rows("SELECT failures FROM auth_breaker_failures").await.is_empty(), "the success ended the count");
}
