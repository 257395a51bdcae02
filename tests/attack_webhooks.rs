//! Attack cases, Stripe webhooks: forged, stale, future, replayed and truncated signatures,
//! signatures in the wrong scheme or over other bytes, and a valid signature over a modified
//! body. Every one is 400 `invalid_signature` and leaves the inbox and the subscription as they
//! were; a replay of a delivery that was accepted is acknowledged once and never applied twice.

#[path = "auth_support.rs"]
mod support;

#[path = "customer_support.rs"]
mod cs;

#[path = "attack_support.rs"]
mod attack;

use attack::{Full, db_rows, full, stripe_signature_bytes};
use serde_json::json;

async fn deliver(app: &Full, body: &[u8], signature: Option<&str>) -> support::Answer {
    let headers: Vec<(&str, &str)> = signature.map(|s| vec![("stripe-signature", s)]).unwrap_or_default();
    app.raw("POST", "/api/v3/billing/stripe/webhook", None, Some("application/json"), &headers, body.to_vec()).await
}

fn v1_of(signature: &str) -> String {
    signature.split(',').find_map(|p| p.strip_prefix("v1=")).unwrap().to_string()
}

#[tokio::test]
async fn every_bad_signature_is_400_and_changes_nothing_and_a_replay_is_applied_once() {
    let app = full().await;
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let user = app.user("Ada", "ada@example.org").await;
    let customer = app.customer(&user).await;
    let price = app.stripe.price("1100").await;
    let sub = app.subscribe(&user, &price).await;
    let (cus, stripe_sub) = (customer["stripe_customer_id"].as_str().unwrap(), sub["stripe_subscription_id"].as_str().unwrap());
    // At Stripe the subscription now cancels at period end; the event below tells us.
    app.stripe.post(&format!("/v1/subscriptions/{stripe_sub}"), &[("cancel_at_period_end", "true")]).await;
    let now = cs::now();
    let body = json!({"id": "evt_attack_1", "object": "event", "type": "customer.subscription.updated", "created": now,
                      "data": {"object": {"id": stripe_sub, "customer": cus, "status": "active", "cancel_at_period_end": true}}})
    .to_string();
    let bytes = body.as_bytes();
    let good = stripe_signature_bytes(&secret, now, bytes);
    let good_v1 = v1_of(&good);
    let other_secret = stripe_signature_bytes("whsec_attacker", now, bytes);
    let mut modified_bodies: Vec<(&str, Vec<u8>)> = vec![
        ("a space appended", format!("{body} ").into_bytes()),
        ("a newline appended", format!("{body}\n").into_bytes()),
        ("a space prepended", format!(" {body}").into_bytes()),
        ("another event id", body.replace("evt_attack_1", "evt_attack_2").into_bytes()),
        ("status changed", body.replace("\"active\"", "\"canceled\"").into_bytes()),
        ("an equivalent escape", body.replace("evt_attack_1", "evt_\\u0061ttack_1").into_bytes()),
        ("a duplicated key appended", format!("{},\"type\":\"customer.deleted\"}}", &body[..body.len() - 1]).into_bytes()),
        ("one byte flipped", {
            let mut b = bytes.to_vec();
            b[10] ^= 1;
            b
        }),
        ("truncated", bytes[..bytes.len() - 1].to_vec()),
        ("empty", Vec::new()),
    ];
    let payload_only = {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(bytes);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let seventeen = format!("t={now},{}v1={good_v1}", "v1=00000000000000000000000000000000000000000000000000000000000000ff,".repeat(16));
    let bad_headers: Vec<(&str, String)> = vec![
        ("signed with another secret", other_secret),
        ("signed with an empty secret", stripe_signature_bytes("", now, bytes)),
        ("stale: 301 s old", stripe_signature_bytes(&secret, now - 301, bytes)),
        ("an hour old", stripe_signature_bytes(&secret, now - 3600, bytes)),
        ("301 s in the future", stripe_signature_bytes(&secret, now + 301, bytes)),
        ("t = 0", stripe_signature_bytes(&secret, 0, bytes)),
        ("t negative", stripe_signature_bytes(&secret, -1, bytes)),
        ("t = i64::MIN", stripe_signature_bytes(&secret, i64::MIN, bytes)),
        ("t = i64::MAX", stripe_signature_bytes(&secret, i64::MAX, bytes)),
        ("t = i64::MIN + now (wraps to i64::MIN)", stripe_signature_bytes(&secret, i64::MIN.wrapping_add(now), bytes)),
        ("header t differs from the signed t", format!("t={},v1={good_v1}", now - 1)),
        ("two t values", format!("t={now},t={},v1={good_v1}", now - 1)),
        ("v1 truncated by one", format!("t={now},v1={}", &good_v1[..63])),
        ("v1 truncated by two", format!("t={now},v1={}", &good_v1[..62])),
        ("v1 half", format!("t={now},v1={}", &good_v1[..32])),
        ("v1 empty", format!("t={now},v1=")),
        ("v1 missing", format!("t={now}")),
        ("t missing", format!("v1={good_v1}")),
        ("header cut inside t", format!("t={}", &now.to_string()[..5])),
        ("v1 with one more byte", format!("t={now},v1={good_v1}00")),
        ("v0 instead of v1", format!("t={now},v0={good_v1}")),
        ("scheme V1", format!("t={now},V1={good_v1}")),
        ("HMAC over the payload without t", format!("t={now},v1={payload_only}")),
        ("seventeen v1 entries, the good one last", seventeen),
        ("t not a number", format!("t=now,v1={good_v1}")),
        ("no equals signs", "garbage".into()),
        ("empty header", String::new()),
        ("8 KB header", format!("t={now},{}", "x=y,".repeat(2000))),
    ];

    let before = app.snapshot().await;
    let subs_before = db_rows(&app.app.customer_db, "SELECT status, cancel_at_period_end, last_event_at FROM subscriptions").await;
    let mut refused = 0;
    let answer = deliver(&app, bytes, None).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("invalid_signature")), "no header: {}", answer.text);
    for (what, header) in &bad_headers {
        let answer = deliver(&app, bytes, Some(header)).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("invalid_signature")), "{what}: {}", answer.text);
        refused += 1;
    }
    for (what, modified) in &mut modified_bodies {
        let answer = deliver(&app, modified, Some(&good)).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("invalid_signature")), "{what}: {}", answer.text);
        refused += 1;
    }
    app.assert_unchanged(&before, "after bad signatures").await;
    assert_eq!(db_rows(&app.app.customer_db, "SELECT status, cancel_at_period_end, last_event_at FROM subscriptions").await, subs_before);
    eprintln!("attack_webhooks: {refused} bad deliveries refused");

    // The genuine delivery, then the same bytes replayed (by Stripe or by someone who saw them).
    let first = deliver(&app, bytes, Some(&good)).await;
    assert_eq!((first.status, first.body["outcome"].as_str()), (200, Some("applied")), "{}", first.text);
    let applied = db_rows(&app.app.customer_db, "SELECT status, cancel_at_period_end, last_event_at FROM subscriptions").await;
    assert_eq!(applied[0][1], "1", "{applied:?}");
    for _ in 0..3 {
        let replay = deliver(&app, bytes, Some(&good)).await;
        assert_eq!((replay.status, replay.body["duplicate"].as_bool()), (200, Some(true)), "{}", replay.text);
    }
    // Re-signed now with the secret (what a Stripe retry looks like): still the same event.
    let resigned = stripe_signature_bytes(&secret, cs::now(), bytes);
    let replay = deliver(&app, bytes, Some(&resigned)).await;
    assert_eq!((replay.status, replay.body["duplicate"].as_bool()), (200, Some(true)), "{}", replay.text);
    assert_eq!(db_rows(&app.app.customer_db, "SELECT status, cancel_at_period_end, last_event_at FROM subscriptions").await, applied);
    assert_eq!(db_rows(&app.app.customer_db, "SELECT COUNT(*) FROM stripe_events WHERE id = 'evt_attack_1'").await[0][0], "1");
    // A replay of the captured delivery after the tolerance is refused outright.
    let late = format!("t={},v1={}", now - 301, v1_of(&stripe_signature_bytes(&secret, now - 301, bytes)));
    let answer = deliver(&app, bytes, Some(&late)).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("invalid_signature")), "{}", answer.text);
}
