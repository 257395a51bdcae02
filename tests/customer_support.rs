//! Shared by the customer_* tests (included with `#[path]`): a private localstripe per test, a
//! small auth stand-in on 127.0.0.1 (profiles, batch, JWKS, health, login), tokens and webhook
//! signatures made by hand, and `spawn` wiring them into a host from `integration_tests`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use integration_tests::{TestApp, repo_root, spawn_app_with};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

pub const ISSUER: &str = "auth";
pub const AUDIENCE: &str = "auth-billing";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An Ed25519 key from a `<kid>:<base64 seed>` variable value (its first entry).
pub struct Key {
    pub kid: String,
    pair: ed25519_compact::KeyPair,
}

impl Key {
    pub fn parse(var: &str) -> Key {
        let first = var.split(',').next().unwrap().trim();
        let (kid, b64) = first.split_once(':').unwrap();
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD.decode(b64).unwrap().try_into().unwrap();
        Key { kid: kid.to_string(), pair: ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed)) }
    }

    pub fn generate(kid: &str) -> Key {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&uuid::Uuid::new_v4().as_bytes().repeat(2));
        Key { kid: kid.to_string(), pair: ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed)) }
    }

    pub fn seed_var(&self) -> String {
        format!("{}:{}", self.kid, base64::engine::general_purpose::STANDARD.encode(self.pair.sk.seed().as_ref()))
    }

    pub fn public_b64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pair.pk.as_ref())
    }

    pub fn jwks(&self) -> String {
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url(self.pair.pk.as_ref()), "kid": self.kid, "alg": "EdDSA", "use": "sig"}]})
            .to_string()
    }

    pub fn sign(&self, typ: &str, claims: &Value) -> String {
        let header = json!({"alg": "EdDSA", "kid": self.kid, "typ": typ});
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let signature = self.pair.sk.sign(input.as_bytes(), None);
        format!("{input}.{}", b64url(signature.as_ref()))
    }

    /// An access token as auth issues it.
    pub fn access_token(&self, user: &str) -> String {
        let now = now();
        self.sign(
            "at+jwt",
            &json!({"iss": ISSUER, "aud": AUDIENCE, "sub": user, "iat": now, "nbf": now, "exp": now + 900,
                    "jti": uuid::Uuid::new_v4().simple().to_string()}),
        )
    }

    pub fn service_token(&self, service: &str) -> String {
        let now = now();
        let principal = format!("service:{service}");
        self.sign(
            "service+jwt",
            &json!({"iss": principal, "sub": principal, "aud": "auth", "iat": now, "nbf": now, "exp": now + 60,
                    "jti": uuid::Uuid::new_v4().simple().to_string()}),
        )
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `Stripe-Signature` for `payload` at time `t`.
pub fn stripe_signature(secret: &str, t: i64, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{payload}").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---- localstripe ---------------------------------------------------------------------------------

/// A private localstripe (scripts/localstripe_serve.py), killed on drop.
pub struct LocalStripe {
    pub base: String,
    child: Child,
    client: reqwest::Client,
}

impl LocalStripe {
    pub async fn start() -> LocalStripe {
        let python = repo_root().join(".local/venv/bin/python");
        assert!(python.exists(), "{} is missing: run `make test` (scripts/stack.sh deps)", python.display());
        let port = free_port();
        let child = Command::new(python)
            .arg(repo_root().join("scripts/localstripe_serve.py"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("localstripe starts");
        let stripe = LocalStripe { base: format!("http://127.0.0.1:{port}"), child, client: reqwest::Client::new() };
        for _ in 0..150 {
            if stripe.client.get(format!("{}/v1/balance", stripe.base)).bearer_auth("sk_test_x").send().await.is_ok() {
                return stripe;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("localstripe did not start on port {port}");
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let response = self.client.post(format!("{}{path}", self.base)).bearer_auth("sk_test_x").form(form).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(format!("{}{path}", self.base)).bearer_auth("sk_test_x").send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn price(&self, amount: &str) -> String {
        let price = self
            .post("/v1/prices", &[("currency", "eur"), ("unit_amount", amount), ("recurring[interval]", "month"), ("product_data[name]", "Areas")])
            .await;
        price["id"].as_str().unwrap().to_string()
    }

    /// Gives the Stripe customer a default card straight at Stripe, with the secret key: the
    /// tests' shortcut. A client goes through `POST /customers/me/setup-intents`, Stripe.js
    /// ([`Self::confirm_setup_intent`]) and `PUT /customers/me/payment-method`.
    pub async fn add_card(&self, customer: &str) {
        self.add_card_numbered(customer, "4242424242424242").await;
    }

    /// As [`Self::add_card`], with one of Stripe's test card numbers (4000002500003155: every
    /// payment asks for 3-D Secure).
    pub async fn add_card_numbered(&self, customer: &str, number: &str) {
        let pm = self
            .post("/v1/payment_methods", &[("type", "card"), ("card[number]", number), ("card[exp_month]", "12"), ("card[exp_year]", "2031"), ("card[cvc]", "123")])
            .await;
        let pm = pm["id"].as_str().unwrap();
        self.post(&format!("/v1/payment_methods/{pm}/attach"), &[("customer", customer)]).await;
        self.post(&format!("/v1/customers/{customer}"), &[("invoice_settings[default_payment_method]", pm)]).await;
    }

    /// What Stripe.js does in the browser with a SetupIntent's `client_secret`
    /// (`stripe.confirmCardSetup`): the card goes to Stripe, never to us. Returns the intent.
    pub async fn confirm_setup_intent(&self, id: &str, client_secret: &str, card_number: &str) -> Value {
        self.post(
            &format!("/v1/setup_intents/{id}/confirm"),
            &[
                ("client_secret", client_secret),
                ("payment_method_data[type]", "card"),
                ("payment_method_data[card][number]", card_number),
                ("payment_method_data[card][exp_month]", "12"),
                ("payment_method_data[card][exp_year]", "2031"),
                ("payment_method_data[card][cvc]", "123"),
            ],
        )
        .await
    }

    /// Stripe customers whose metadata names this user.
    pub async fn customers_of(&self, user: &str) -> Vec<Value> {
        let (_, list) = self.get("/v1/customers?limit=100").await;
        list["data"].as_array().unwrap().iter().filter(|c| c["metadata"]["user_id"] == user).cloned().collect()
    }

    /// Stripe subscriptions of this Stripe customer, in any status.
    pub async fn subscriptions_of(&self, customer: &str) -> Vec<Value> {
        let (_, list) = self.get("/v1/subscriptions?limit=100&status=all").await;
        list["data"].as_array().unwrap().iter().filter(|s| s["customer"] == customer).cloned().collect()
    }

    /// Registers a fault (scripts/localstripe_serve.py); a refused one would leave a test
    /// checking a path that never ran.
    pub async fn fault(&self, fault: Value) {
        let response = self.client.post(format!("{}/_config/faults", self.base)).json(&fault).send().await.unwrap();
        let status = response.status();
        assert!(status.is_success(), "localstripe refused the fault {fault}: {status} {}", response.text().await.unwrap_or_default());
    }

    pub async fn clear_faults(&self) {
        let response = self.client.delete(format!("{}/_config/faults", self.base)).send().await.unwrap();
        assert!(response.status().is_success(), "localstripe kept its faults: {}", response.status());
    }

    /// localstripe's log of /v1 requests, in order: (method, path, Idempotency-Key, status), the
    /// status `None` until answered (for good when the client gave up first: localstripe drops it).
    pub async fn requests(&self) -> Vec<(String, String, Option<String>, Option<u16>)> {
        let response = self.client.get(format!("{}/_config/requests", self.base)).send().await.unwrap();
        assert!(response.status().is_success(), "localstripe's request log: {}", response.status());
        let log: Value = response.json().await.unwrap();
        log["requests"]
            .as_array()
            .expect("a request log")
            .iter()
            .map(|r| {
                (
                    r["method"].as_str().unwrap().to_string(),
                    r["path"].as_str().unwrap().to_string(),
                    r["idempotency_key"].as_str().map(str::to_string),
                    r["status"].as_u64().map(|s| s as u16),
                )
            })
            .collect()
    }

    pub async fn register_webhook(&self, url: &str, secret: &str) {
        let response = self
            .client
            .post(format!("{}/_config/webhooks/test", self.base))
            .form(&[("url", url), ("secret", secret)])
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

// ---- auth stand-in --------------------------------------------------------------------------------

#[derive(Default)]
pub struct AuthState {
    pub users: HashMap<String, Value>,
    pub jwks: String,
    /// "METHOD path authorization" of every request.
    pub seen: Vec<String>,
    /// Answer nothing for this long (a slow auth).
    pub delay: Option<Duration>,
    /// The delays of the next JWKS answers, first call first (then `delay`).
    pub jwks_delays: std::collections::VecDeque<Duration>,
    /// Send the head at once, then the body a byte at a time, this long apart (an auth that
    /// trickles its answer, each byte inside the client's between-bytes timeout).
    pub trickle: Option<Duration>,
    /// Answer this instead of the user (a broken auth).
    pub garbage: Option<Value>,
}

/// A minimal HTTP/1.1 server with auth's service endpoints. `stop` closes the port (refused).
pub struct AuthStub {
    pub base: String,
    pub state: Arc<Mutex<AuthState>>,
    task: Option<tokio::task::JoinHandle<()>>,
    port: u16,
}

pub fn user_json(id: &str, name: &str, email: &str) -> Value {
    json!({"id": id, "name": name, "email": email, "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"})
}

impl AuthStub {
    pub async fn start() -> AuthStub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(AuthState::default()));
        let task = Some(tokio::spawn(serve(listener, state.clone())));
        AuthStub { base: format!("http://127.0.0.1:{port}"), state, task, port }
    }

    pub fn add_user(&self, id: &str, name: &str, email: &str) {
        self.state.lock().unwrap().users.insert(id.to_string(), user_json(id, name, email));
    }

    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.task = Some(tokio::spawn(serve(listener, self.state.clone())));
    }

    pub fn profile_calls(&self) -> usize {
        self.state.lock().unwrap().seen.iter().filter(|s| s.contains("/api/v3/users/")).count()
    }

    /// Serves these keys as auth's JWKS (auth publishes several while it rotates keys).
    pub fn publish_keys(&self, keys: &[&Key]) {
        let entries: Vec<Value> =
            keys.iter().map(|k| serde_json::from_str::<Value>(&k.jwks()).unwrap()["keys"][0].clone()).collect();
        self.state.lock().unwrap().jwks = json!({"keys": entries}).to_string();
    }

    /// How many times customer fetched the JWKS.
    pub fn jwks_calls(&self) -> usize {
        self.state.lock().unwrap().seen.iter().filter(|s| s.starts_with("GET /.well-known/jwks.json ")).count()
    }
}

impl Drop for AuthStub {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<AuthState>>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let state = state.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, content_length) = loop {
                let Ok(n) = socket.read(&mut chunk).await else { return };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                        .unwrap_or(0);
                    break (pos + 4, length);
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
            loop {
                let done = if chunked {
                    buf[head_end..].windows(5).any(|w| w == b"0\r\n\r\n")
                } else {
                    buf.len() >= head_end + content_length
                };
                if done {
                    break;
                }
                let Ok(n) = socket.read(&mut chunk).await else { return };
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = if chunked { dechunk(&buf[head_end..]) } else { buf[head_end..].to_vec() };
            let mut lines = head.lines();
            let mut first = lines.next().unwrap_or("").split(' ');
            let method = first.next().unwrap_or("").to_string();
            let path = first.next().unwrap_or("").to_string();
            let header = |name: &str| {
                lines.clone().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string()))
            };
            let authorization = header("authorization").unwrap_or_default();
            let forwarded_for = header("x-forwarded-for");
            let (delay, trickle, answer) = {
                let mut s = state.lock().unwrap();
                s.seen.push(format!("{method} {path} {authorization}"));
                let delay = if path == "/.well-known/jwks.json" { s.jwks_delays.pop_front().or(s.delay) } else { s.delay };
                (delay, s.trickle, route(&s, &method, &path, &authorization, forwarded_for.as_deref(), &body))
            };
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let (status, content) = answer;
            let text = content.to_string();
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            if let Some(gap) = trickle {
                let (head, body) = response.split_at(response.len() - text.len());
                let _ = socket.write_all(head.as_bytes()).await;
                for byte in body.as_bytes() {
                    tokio::time::sleep(gap).await;
                    if socket.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                }
            } else {
                let _ = socket.write_all(response.as_bytes()).await;
            }
            let _ = socket.shutdown().await;
        });
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
}

/// The `sub` of a bearer JWT, unverified (the stand-in trusts customer to have verified it).
fn bearer_subject(authorization: &str) -> Option<String> {
    tokens::claimed_subject(authorization.strip_prefix("Bearer ")?)
}

fn route(s: &AuthState, method: &str, path: &str, authorization: &str, forwarded_for: Option<&str>, body: &[u8]) -> (u16, Value) {
    match (method, path) {
        ("GET", "/api/v3/users/me") => {
            if let Some(garbage) = &s.garbage {
                return (200, garbage.clone());
            }
            // As auth: the token's own user, or 401 (no such user, or no token).
            match bearer_subject(authorization).and_then(|sub| s.users.get(&sub)) {
                Some(user) => (200, json!({"user": user})),
                None => (401, json!({"type": "about:blank", "status": 401, "code": "invalid_token"})),
            }
        }
        ("GET", "/.well-known/jwks.json") => (200, serde_json::from_str(&s.jwks).unwrap_or(Value::Null)),
        ("GET", "/api/v3/auth/health") => (200, json!({"status": "ok", "database": "ok"})),
        ("POST", "/api/v3/auth/login") => (
            200,
            json!({"proxied": true, "echo": serde_json::from_slice::<Value>(body).unwrap_or(Value::Null), "forwarded_for": forwarded_for}),
        ),
        ("POST", "/api/v3/users/batch") => {
            let ids: Vec<String> = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| serde_json::from_value(v["ids"].clone()).ok())
                .unwrap_or_default();
            let users: Vec<Value> = ids.iter().filter_map(|id| s.users.get(id).cloned()).collect();
            let missing: Vec<&String> = ids.iter().filter(|id| !s.users.contains_key(*id)).collect();
            (200, json!({"users": users, "missing": missing}))
        }
        ("GET", p) if p.starts_with("/api/v3/users/") => {
            if let Some(garbage) = &s.garbage {
                return (200, garbage.clone());
            }
            let id = &p["/api/v3/users/".len()..];
            match s.users.get(id) {
                Some(user) => (200, json!({"user": user})),
                None => (404, json!({"type": "about:blank", "status": 404, "code": "not_found"})),
            }
        }
        _ => (404, json!({"status": 404})),
    }
}

// ---- the app ---------------------------------------------------------------------------------------

pub struct CustomerApp {
    pub app: TestApp,
    pub stripe: LocalStripe,
    pub auth: AuthStub,
    /// Auth's signing key (the app's token_signing_keys), for minting access tokens.
    pub key: Key,
}

/// The host's `call` log lines for calls from customer to `target` (`auth`, `stripe`), in order.
pub fn call_lines(app: &TestApp, target: &str) -> Vec<Value> {
    app.host
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|l| l["message"] == "call" && l["target"] == target)
        .collect()
}

/// Waits (up to 20 s) until a signed webhook about `stripe_subscription` has been applied: the
/// proof that localstripe's events reach the app and pass its signature check.
pub async fn wait_for_applied_webhook(app: &TestApp, stripe_subscription: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let sql = format!("SELECT outcome FROM stripe_events WHERE object_id = '{stripe_subscription}' AND outcome = 'applied'");
    while integration_tests::db_rows(&app.customer_db, &sql).await.is_empty() {
        assert!(Instant::now() < deadline, "no webhook applied for {stripe_subscription}:\n{}", app.host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The app (both components) with customer pointed at this localstripe, then `adjust`ed.
pub async fn spawn_app_on(stripe: &LocalStripe, adjust: impl FnOnce(&mut BTreeMap<String, String>)) -> TestApp {
    let stripe_base = stripe.base.clone();
    spawn_app_with(|vars| {
        vars.insert("stripe_api_base".into(), stripe_base);
        adjust(vars);
    })
    .await
    .expect("app starts")
}

/// The app with customer pointed at a private localstripe and at the auth stand-in (which
/// serves the app's JWKS, so customer fetches and caches it).
pub async fn spawn(adjust: impl FnOnce(&mut BTreeMap<String, String>)) -> CustomerApp {
    let stripe = LocalStripe::start().await;
    let auth = AuthStub::start().await;
    let auth_base = auth.base.clone();
    let app = spawn_app_on(&stripe, |vars| {
        vars.insert("auth_service_url".into(), auth_base);
        adjust(vars);
    })
    .await;
    let key = Key::parse(&app.variables["token_signing_keys"]);
    auth.state.lock().unwrap().jwks = key.jwks();
    CustomerApp { app, stripe, auth, key }
}

/// As [`spawn`], with `ops` trusted as the service `ops` (`customer_trusted_service_keys`).
pub async fn spawn_trusting(ops: &Key) -> CustomerApp {
    let trusted = format!("ops:{}:{}", ops.kid, ops.public_b64());
    spawn(move |vars| {
        vars.insert("customer_trusted_service_keys".into(), trusted);
    })
    .await
}

impl CustomerApp {
    pub fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    /// A GET with a bearer `token` (a service's, say): the status and the JSON body.
    pub async fn get_with(&self, token: String, path: &str) -> (u16, Value) {
        let response = self.app.client.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// localstripe's webhooks sent to the app, and `u-1` (Ada Lovelace at auth) made a customer:
    /// where most billing journeys start. Answers the Stripe customer's id.
    pub async fn billing_user(&self) -> String {
        self.stripe.register_webhook(&self.url("/api/v3/billing/stripe/webhook"), &self.app.variables["stripe_webhook_secret"]).await;
        self.auth.add_user("u-1", "Ada Lovelace", "ada@example.org");
        let (status, customer, _) = self.call("POST", "/api/v3/customers", "u-1", Some(json!({"area_ids": [1]})), &[]).await;
        assert_eq!(status, 201, "{customer}");
        customer["stripe_customer_id"].as_str().unwrap_or_default().to_string()
    }

    pub fn token(&self, user: &str) -> String {
        self.key.access_token(user)
    }

    pub async fn call(&self, method: &str, path: &str, user: &str, body: Option<Value>, headers: &[(&str, &str)]) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut request = self
            .app
            .client
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(self.token(user));
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("request answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), headers)
    }

    /// A user known to auth who became a customer, with a card at Stripe.
    pub async fn customer(&self, user: &str) -> Value {
        self.auth.add_user(user, &format!("Ada {user}"), &format!("{user}@example.org"));
        let (status, body, _) = self.call("POST", "/api/v3/customers", user, Some(json!({"area_ids": [3, 1, 2]})), &[]).await;
        assert_eq!(status, 201, "{body}\n{}", self.app.host.log());
        self.stripe.add_card(body["stripe_customer_id"].as_str().unwrap()).await;
        body
    }

    pub async fn db_rows(&self, sql: &str) -> Vec<mysql_async::Row> {
        use mysql_async::prelude::Queryable;
        let mut conn = self.app.customer_db.connect().await.unwrap();
        let rows = conn.query(sql).await.unwrap();
        conn.disconnect().await.ok();
        rows
    }
}
