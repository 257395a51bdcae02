//! Shared by the attack_* tests (included with `#[path]`, next to `support` = auth_support.rs and
//! `cs` = customer_support.rs, which the test file includes too): the whole app (real auth and
//! customer) with a private localstripe, users who are customers, hand-made tokens, and a
//! snapshot of every row an attack could change in either database and at Stripe.
#![allow(dead_code)]

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
pub use integration_tests::db_rows;
use integration_tests::TestApp;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::cs::{Key, LocalStripe, spawn_app_on};
use crate::support::{Answer, PASSWORD};

/// The app (both components), a private localstripe, and a service key customer trusts (`ops`).
pub struct Full {
    pub app: TestApp,
    pub stripe: LocalStripe,
    /// Auth's signing key (token_signing_keys), to mint tokens by hand.
    pub auth_key: Key,
    /// A service that customer trusts (customer_trusted_service_keys = ops).
    pub ops: Key,
    /// The customer component's own service key (trusted by auth).
    pub customer_service: Key,
}

pub async fn full() -> Full {
    full_with(|_| {}).await
}

pub async fn full_with(adjust: impl FnOnce(&mut std::collections::BTreeMap<String, String>)) -> Full {
    let stripe = LocalStripe::start().await;
    let ops = Key::generate("ops-1");
    let trusted = format!("ops:{}:{}", ops.kid, ops.public_b64());
    let app = spawn_app_on(&stripe, |vars| {
        vars.insert("customer_trusted_service_keys".into(), trusted);
        adjust(vars);
    })
    .await;
    let auth_key = Key::parse(&app.variables["token_signing_keys"]);
    let customer_service = Key::parse(&app.variables["service_token_key"]);
    Full { app, stripe, auth_key, ops, customer_service }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
    pub refresh: String,
}

impl Full {
    pub async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        crate::support::send(&self.app, method, path, token, body).await
    }

    /// Any request: raw body bytes, optional content type and extra headers.
    pub async fn raw(&self, method: &str, path: &str, token: Option<&str>, content_type: Option<&str>, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.app.client.request(method, self.app.url(path)).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        answer(request.send().await.expect("request sent")).await
    }

    pub async fn user(&self, name: &str, email: &str) -> User {
        let session = crate::support::register(&self.app, name, email).await;
        User {
            id: crate::support::user_id(&session),
            email: email.to_string(),
            token: crate::support::token(&session),
            refresh: crate::support::refresh_token(&session),
        }
    }

    /// Makes `user` a customer (areas 1, 2) with a card at Stripe; returns the customer.
    pub async fn customer(&self, user: &User) -> Value {
        let answer = self.send("POST", "/api/v3/customers", Some(&user.token), Some(json!({"area_ids": [2, 1]}))).await;
        assert_eq!(answer.status, 201, "{}\n{}", answer.text, self.app.host.log());
        self.stripe.add_card(answer.body["stripe_customer_id"].as_str().expect("stripe id")).await;
        answer.body
    }

    pub async fn subscribe(&self, user: &User, price: &str) -> Value {
        let answer = self.send("POST", "/api/v3/customers/me/subscriptions", Some(&user.token), Some(json!({"price_id": price}))).await;
        assert_eq!(answer.status, 201, "{}\n{}", answer.text, self.app.host.log());
        answer.body
    }

    /// Every row an attack could touch, in both databases and at Stripe (audit and idempotency
    /// rows excluded: writing those on a refused request is by design).
    pub async fn snapshot(&self) -> Vec<(String, Vec<Vec<String>>)> {
        let mut out = Vec::new();
        for sql in [
            "SELECT id, name, email_encrypted, email_hash, COALESCE(password_hash, ''), CAST(UNIX_TIMESTAMP(updated_at) AS SIGNED) FROM client_auth ORDER BY id",
            "SELECT token_hash, family_id, COALESCE(rotated_at, 0) FROM refresh_tokens ORDER BY token_hash",
            "SELECT id, COALESCE(revoked_at, 0), COALESCE(revoked_reason, '') FROM refresh_token_families ORDER BY id",
        ] {
            out.push((format!("auth: {sql}"), db_rows(&self.app.auth_db, sql).await));
        }
        for sql in [
            "SELECT id, COALESCE(stripe_customer_id, ''), CAST(UNIX_TIMESTAMP(updated_at) AS SIGNED) FROM customers ORDER BY id",
            "SELECT customer_id, area_id FROM customer_areas ORDER BY customer_id, area_id",
            "SELECT id, customer_id, COALESCE(stripe_subscription_id, ''), price_id, status, cancel_at_period_end, last_event_at FROM subscriptions ORDER BY id",
            "SELECT id, outcome FROM stripe_events ORDER BY id",
            "SELECT COUNT(*) FROM customer_provisioning",
        ] {
            out.push((format!("customer: {sql}"), db_rows(&self.app.customer_db, sql).await));
        }
        // A failed list must fail here, not compare empty with empty.
        let (status, customers) = self.stripe.get("/v1/customers?limit=100").await;
        assert_eq!(status, 200, "localstripe's customers: {customers}");
        let mut ids: Vec<Vec<String>> = customers["data"]
            .as_array()
            .expect("a list of customers")
            .iter()
            .map(|c| vec![c["id"].to_string(), c["metadata"].to_string()])
            .collect();
        ids.sort();
        out.push(("stripe customers".into(), ids));
        let (status, subs) = self.stripe.get("/v1/subscriptions?limit=100&status=all").await;
        assert_eq!(status, 200, "localstripe's subscriptions: {subs}");
        let mut subs: Vec<Vec<String>> = subs["data"]
            .as_array()
            .expect("a list of subscriptions")
            .iter()
            .map(|s| vec![s["id"].to_string(), s["status"].to_string(), s["cancel_at_period_end"].to_string()])
            .collect();
        subs.sort();
        out.push(("stripe subscriptions".into(), subs));
        out
    }

    /// Asserts nothing changed since `before`.
    pub async fn assert_unchanged(&self, before: &[(String, Vec<Vec<String>>)], what: &str) {
        let after = self.snapshot().await;
        for ((name, rows_before), (_, rows_after)) in before.iter().zip(after.iter()) {
            assert_eq!(rows_before, rows_after, "{what}: {name} changed");
        }
    }
}

/// A response as the auth tests' `Answer`.
pub async fn answer(response: reqwest::Response) -> Answer {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let status = response.status().as_u16();
    let content_type = header("content-type").unwrap_or_default();
    let (retry_after, allow, www_authenticate, location) = (header("retry-after"), header("allow"), header("www-authenticate"), header("location"));
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, content_type, retry_after, allow, www_authenticate, location, text, body }
}

/// A problem body without its per-request `request_id` (for comparing two answers).
pub fn sans_request_id(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("request_id");
    }
    body
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWT with this header and claims, HMAC-SHA-256-signed with `key` (algorithm confusion).
pub fn hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64url(&mac.finalize().into_bytes()))
}

/// Access-token claims as auth issues them, for `sub`, valid now.
pub fn access_claims(sub: &str) -> Value {
    let now = crate::cs::now();
    json!({"iss": "auth", "aud": "auth-billing", "sub": sub, "iat": now, "nbf": now, "exp": now + 900,
           "jti": uuid::Uuid::new_v4().simple().to_string()})
}

/// `Stripe-Signature` over raw bytes (which need not be UTF-8).
pub fn stripe_signature_bytes(secret: &str, t: i64, payload: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(payload);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

pub fn strong_password() -> &'static str {
    PASSWORD
}
