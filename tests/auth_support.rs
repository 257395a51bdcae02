//! Helpers shared by the auth integration tests (`#[path]`-included; not a test target itself).

#![allow(dead_code)]

use std::collections::BTreeMap;

use integration_tests::{TestApp, db_rows, spawn_app, spawn_app_with};
use serde_json::{Value, json};

pub const PASSWORD: &str = "analytical-engine-1843";

pub async fn app() -> TestApp {
    spawn_app().await.expect("app starts")
}

pub async fn app_with(settings: &[(&str, &str)]) -> TestApp {
    let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    spawn_app_with(move |vars: &mut BTreeMap<String, String>| {
        for (k, v) in settings {
            vars.insert(k, v);
        }
    })
    .await
    .expect("app starts")
}

/// An app that trusts a service "mailer" with a key of its own and lists it in each app variable
/// of `lists` (`auth_password_reset_services`, `auth_email_verification_services`); returns the
/// app and a service token of the mailer's.
pub async fn app_with_mailer(lists: &'static [&'static str]) -> (TestApp, String) {
    let mailer = admin::keys::SeedKey::generate().expect("key");
    let mailer_entry = mailer.trusted_entry("mailer");
    let app = spawn_app_with(move |vars: &mut BTreeMap<String, String>| {
        let trusted = format!("{},{mailer_entry}", vars["trusted_service_keys"]);
        vars.insert("trusted_service_keys".into(), trusted);
        for list in lists {
            vars.insert((*list).into(), "mailer".into());
        }
    })
    .await
    .expect("app starts");
    let token = tokens::SigningKeys::parse(&mailer.encode()).expect("key").issue_service_token("mailer", now()).expect("token").token;
    (app, token)
}

/// A response as (status, headers of interest, JSON body or Null).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub allow: Option<String>,
    pub www_authenticate: Option<String>,
    pub location: Option<String>,
    pub text: String,
    pub body: Value,
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let status = response.status().as_u16();
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let allow = header("allow");
    let www_authenticate = header("www-authenticate");
    let location = header("location");
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, content_type, retry_after, allow, www_authenticate, location, text, body }
}

pub async fn send(app: &TestApp, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    answer(request.send().await.expect("request sent")).await
}

pub async fn send_raw(app: &TestApp, method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = app.client.request(method, app.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    answer(request.send().await.expect("request sent")).await
}

pub async fn post(app: &TestApp, path: &str, body: Value) -> Answer {
    send(app, "POST", path, None, Some(body)).await
}

/// Registers `email` and returns the session body.
pub async fn register(app: &TestApp, name: &str, email: &str) -> Value {
    let answer = post(app, "/api/v3/auth/register", json!({"name": name, "email": email, "password": PASSWORD})).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.body
}

pub async fn login(app: &TestApp, email: &str, password: &str) -> Answer {
    post(app, "/api/v3/auth/login", json!({"email": email, "password": password})).await
}

pub fn token(session: &Value) -> String {
    session["access_token"].as_str().expect("access token").to_owned()
}

pub fn refresh_token(session: &Value) -> String {
    session["refresh_token"].as_str().expect("refresh token").to_owned()
}

pub fn user_id(session: &Value) -> String {
    session["user"]["id"].as_str().expect("id").to_owned()
}

/// Asserts a problem+json answer with this status and code.
pub fn assert_problem(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.content_type, "application/problem+json", "{}", answer.text);
    assert_eq!(answer.body["code"], code, "{}", answer.text);
    assert_eq!(answer.body["status"], status, "{}", answer.text);
    assert!(answer.body["type"].as_str().is_some_and(|t| t.ends_with(code)), "{}", answer.text);
}

/// Decodes unpadded base64url (JWT segments).
pub fn b64url_decode(input: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in input.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url"),
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

pub fn b64url_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// (header, claims) of a compact JWT, unverified.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let header = serde_json::from_slice(&b64url_decode(parts.next().expect("header"))).expect("header json");
    let claims = serde_json::from_slice(&b64url_decode(parts.next().expect("claims"))).expect("claims json");
    (header, claims)
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// The code an authenticator app shows at `at` for a base32 `secret` (RFC 6238: SHA-1, six
/// digits, 30 s).
pub fn app_code(secret: &str, at: u64) -> String {
    let key = data_encoding::BASE32_NOPAD.decode(secret.as_bytes()).expect("base32 secret");
    totp_lite::totp_custom::<totp_lite::Sha1>(30, 6, &key, at)
}

/// Rows of a query on auth's database, each column as text (NULL as "NULL").
pub async fn rows(app: &TestApp, sql: &str) -> Vec<Vec<String>> {
    db_rows(&app.auth_db, sql).await
}

/// The audit events as (event, success, reason, subject) in order.
pub async fn audit(app: &TestApp) -> Vec<(String, String, String, String)> {
    rows(app, "SELECT event, success, COALESCE(reason, ''), COALESCE(subject, '') FROM audit_log ORDER BY id")
        .await
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone(), r[3].clone()))
        .collect()
}
