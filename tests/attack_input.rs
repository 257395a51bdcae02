//! Attack cases, input: SQL metacharacters and NUL in every string field of both services,
//! over-long values, invalid UTF-8, deeply nested JSON, numbers out of range, duplicated keys,
//! huge bodies (413) and wrong content types (415). Each answer's status is exact; stored data is
//! either exactly what was sent (text is data, never SQL) or untouched.

#[path = "auth_support.rs"]
mod support;

#[path = "customer_support.rs"]
mod cs;

#[path = "attack_support.rs"]
mod attack;

use attack::{Full, db_rows, full_with};
use serde_json::{Value, json};
use support::{PASSWORD, assert_problem};

/// SQL metacharacters and injection classics (no NUL: names refuse control characters).
const SQLISH: &[&str] = &[
    "' OR '1'='1",
    "\"; DROP TABLE client_auth; --",
    "Robert'); DROP TABLE customers;--",
    "\\' OR 1=1 #",
    "%_%",
    "1; SELECT SLEEP(5)",
    "' UNION SELECT password_hash, email_hash FROM client_auth --",
    "`id`",
    "0x27 /*",
];

/// The same, plus NUL and other control bytes.
fn with_nul() -> Vec<String> {
    let mut all: Vec<String> = SQLISH.iter().map(|s| s.to_string()).collect();
    all.extend(["\0".to_string(), "a\0b".to_string(), "' OR 1=1\0--".to_string(), "\u{1b}[31m".to_string()]);
    all
}

async fn app() -> Full {
    // Wrong passwords are part of the attack: keep the login throttle out of the way.
    full_with(|vars| {
        vars.insert("auth_login_max_failures_per_account".into(), "100".into());
        vars.insert("auth_login_max_failures_per_address".into(), "100000".into());
    })
    .await
}

fn tables_of(rows: Vec<Vec<String>>) -> Vec<String> {
    rows.into_iter().map(|r| r[0].clone()).collect()
}

async fn table_lists(app: &Full) -> (Vec<String>, Vec<String>) {
    (tables_of(db_rows(&app.app.auth_db, "SHOW TABLES").await), tables_of(db_rows(&app.app.customer_db, "SHOW TABLES").await))
}

#[tokio::test]
async fn sql_metacharacters_and_nul_in_every_auth_field_are_data_or_refused() {
    let app = app().await;
    let tables = table_lists(&app).await;

    // name: stored and read back verbatim; NUL, control characters and bidi overrides refused.
    let spoofs = ["Alice\u{202E}gnp.exe", "a\u{2066}b\u{2069}", "line\u{2028}break"].map(String::from);
    for (i, value) in with_nul().iter().chain(&spoofs).enumerate() {
        let email = format!("name{i}@example.org");
        let answer = app.send("POST", "/api/v3/auth/register", None, Some(json!({"name": value, "email": email, "password": PASSWORD}))).await;
        if value.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')) {
            assert_problem(&answer, 422, "validation_failed");
            assert_eq!(answer.body["errors"][0]["code"], "invalid_characters", "{value:?}");
            continue;
        }
        assert_eq!(answer.status, 201, "{value:?}: {}", answer.text);
        let token = answer.body["access_token"].as_str().unwrap();
        let me = app.send("GET", "/api/v3/users/me", Some(token), None).await;
        assert_eq!(me.body["user"]["name"], value.as_str(), "{value:?}");
        // PATCH with the same values.
        let patched = app.send("PATCH", "/api/v3/users/me", Some(token), Some(json!({"name": format!("{value}!")}))).await;
        assert_eq!(patched.body["user"]["name"], format!("{value}!"), "{value:?}");
    }
    let registered = db_rows(&app.app.auth_db, "SELECT COUNT(*) FROM client_auth").await[0][0].clone();
    assert_eq!(registered, SQLISH.len().to_string());
    // Nor may a change of name bring one in.
    let someone = app.send("POST", "/api/v3/auth/register", None, Some(json!({"name": "Plain", "email": "plain@example.org", "password": PASSWORD}))).await;
    let token = someone.body["access_token"].as_str().expect("registered");
    for spoof in &spoofs {
        let patched = app.send("PATCH", "/api/v3/users/me", Some(token), Some(json!({"name": spoof}))).await;
        assert_problem(&patched, 422, "validation_failed");
        assert_eq!(patched.body["errors"][0]["code"], "invalid_characters", "{spoof:?}");
    }

    // email: quotes, %, _ and = are legal in a local part and stored verbatim; the rest is 422.
    let legal = "o'brien+%_'or'1'='1@example.org";
    let answer = app.send("POST", "/api/v3/auth/register", None, Some(json!({"name": "Quote", "email": legal, "password": PASSWORD}))).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.body["user"]["email"], legal);
    let again = support::login(&app.app, legal, PASSWORD).await;
    assert_eq!(again.status, 200, "{}", again.text);
    // A near miss of the same email must not match it (no LIKE, no truncation).
    assert_problem(&support::login(&app.app, "o'brien+%_'or'1'='%@example.org", PASSWORD).await, 401, "invalid_credentials");
    for (i, value) in with_nul().iter().enumerate() {
        let email = format!("{value}{i}@example.org");
        let answer = app.send("POST", "/api/v3/auth/register", None, Some(json!({"name": "N", "email": email, "password": PASSWORD}))).await;
        match sealed_email::normalize_email(&email) {
            // A legal address (e.g. `%_%0@example.org`): stored and found exactly.
            Ok(normalized) => {
                assert_eq!(answer.status, 201, "{email:?}: {}", answer.text);
                assert_eq!(answer.body["user"]["email"], normalized.as_str());
                assert_eq!(support::login(&app.app, &email, PASSWORD).await.status, 200, "{email:?}");
            }
            Err(_) => {
                assert_problem(&answer, 422, "validation_failed");
                assert_problem(&support::login(&app.app, &email, PASSWORD).await, 422, "validation_failed");
            }
        }
        assert_problem(&support::login(&app.app, value, PASSWORD).await, 422, "validation_failed");
    }

    // password: any text is a password (NUL included); it works exactly, and nothing else does.
    for (i, value) in with_nul().iter().enumerate() {
        let password = format!("{value}-long-enough-{i}");
        let email = format!("pw{i}@example.org");
        let answer = app.send("POST", "/api/v3/auth/register", None, Some(json!({"name": "P", "email": email, "password": password}))).await;
        assert_eq!(answer.status, 201, "{password:?}: {}", answer.text);
        assert_eq!(support::login(&app.app, &email, &password).await.status, 200, "{password:?}");
        assert_problem(&support::login(&app.app, &email, value).await, 401, "invalid_credentials");
        assert_problem(&support::login(&app.app, &email, "' OR '1'='1").await, 401, "invalid_credentials");
    }

    // Tokens and ids: never found, never an error.
    let victim = app.user("Victim", "victim@example.org").await;
    let families = db_rows(&app.app.auth_db, "SELECT COUNT(*), COUNT(revoked_at) FROM refresh_token_families").await;
    for value in with_nul() {
        assert_problem(&app.send("POST", "/api/v3/auth/refresh", None, Some(json!({"refresh_token": value}))).await, 401, "invalid_refresh_token");
        assert_eq!(app.send("POST", "/api/v3/auth/logout", None, Some(json!({"refresh_token": value}))).await.status, 204);
        let confirm = app.send("DELETE", "/api/v3/users/me", Some(&victim.token), Some(json!({"password": value}))).await;
        assert_problem(&confirm, 403, "wrong_password");
        let change = app.send("PUT", "/api/v3/users/me/password", Some(&victim.token), Some(json!({"current_password": value, "new_password": "brand-new-secret-1"}))).await;
        assert_problem(&change, 403, "wrong_password");
        let email = app.send("PATCH", "/api/v3/users/me", Some(&victim.token), Some(json!({"email": "moved@example.org", "current_password": value}))).await;
        assert_problem(&email, 403, "wrong_password");
    }
    assert_eq!(db_rows(&app.app.auth_db, "SELECT COUNT(*), COUNT(revoked_at) FROM refresh_token_families").await, families);
    assert_eq!(app.send("GET", "/api/v3/users/me", Some(&victim.token), None).await.body["user"]["email"], "victim@example.org");

    let service = app.customer_service.service_token("customer");
    let ids: Vec<String> = with_nul();
    let batch = app.send("POST", "/api/v3/users/batch", Some(&service), Some(json!({"ids": ids}))).await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    assert_eq!(batch.body["users"], json!([]));
    assert_eq!(batch.body["missing"].as_array().unwrap().len(), ids.len());
    for value in with_nul() {
        let path = format!("/api/v3/users/{}", percent(&value));
        let answer = app.send("GET", &path, Some(&service), None).await;
        assert_problem(&answer, 404, "user_not_found");
    }
    // Every metacharacter name is in the table as text, exactly as last sent (a statement run
    // instead, SLEEP or DROP, would have left something else), and no table was dropped.
    let stored: Vec<String> = db_rows(&app.app.auth_db, "SELECT name FROM client_auth").await.into_iter().map(|r| r[0].clone()).collect();
    for value in SQLISH {
        let sent = format!("{value}!");
        assert_eq!(stored.iter().filter(|n| **n == sent).count(), 1, "{sent:?} in {stored:?}");
    }
    assert_eq!(table_lists(&app).await, tables);
}

/// Percent-encodes every byte that is not unreserved (RFC 3986).
fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[tokio::test]
async fn sql_metacharacters_and_nul_in_every_customer_field_are_refused_and_change_nothing() {
    let app = app().await;
    let user = app.user("Ada", "ada@example.org").await;
    app.customer(&user).await;
    let tables = table_lists(&app).await;
    let before = app.snapshot().await;
    let ops = app.ops.service_token("ops");
    for value in with_nul() {
        let answer = app.send("POST", "/api/v3/customers/me/subscriptions", Some(&user.token), Some(json!({"price_id": value}))).await;
        assert_eq!((answer.status, answer.body["errors"][0]["field"].as_str()), (422, Some("price_id")), "{value:?}: {}", answer.text);
        let answer = app.send("PATCH", "/api/v3/customers/me", Some(&user.token), Some(json!({"area_ids": [value]}))).await;
        assert_eq!((answer.status, answer.body["errors"][0]["field"].as_str()), (422, Some("area_ids[0]")), "{value:?}: {}", answer.text);
        let q = percent(&value);
        for (method, path, token) in [
            ("GET", format!("/api/v3/customers/me?include={q}"), &user.token),
            ("GET", format!("/api/v3/customers/me/invoices?starting_after={q}"), &user.token),
            ("GET", format!("/api/v3/customers/me/invoices?limit={q}"), &user.token),
            ("GET", format!("/api/v3/customers?limit={q}"), &ops),
            ("GET", format!("/api/v3/customers?include={q}"), &ops),
        ] {
            let answer = app.send(method, &path, Some(token), None).await;
            assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("invalid_query")), "{path}: {}", answer.text);
        }
        // `after` is a cursor compared as text: a value that could be an id is a cursor like any other.
        let page = app.send("GET", &format!("/api/v3/customers?after={q}"), Some(&ops), None).await;
        if value.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/') {
            assert_eq!((page.status, page.body["code"].as_str()), (400, Some("invalid_query")), "{value:?}: {}", page.text);
        } else {
            // (ordered by the column's collation, as the page's ORDER BY)
            assert_eq!(page.status, 200, "{value:?}: {}", page.text);
            assert!(page.body["customers"].as_array().unwrap().len() <= 1, "{value:?}: {}", page.text);
        }
        let answer = app.send("GET", &format!("/api/v3/customers/{q}"), Some(&ops), None).await;
        assert_eq!(answer.status, 404, "{value:?}: {}", answer.text);
        let answer = app.send("DELETE", &format!("/api/v3/customers/me/subscriptions/{q}"), Some(&user.token), None).await;
        assert_eq!(answer.status, 404, "{value:?}: {}", answer.text);
        let answer = app.send("DELETE", &format!("/api/v3/customers/me/subscriptions/{}?at_period_end={q}", uuid::Uuid::new_v4()), Some(&user.token), None).await;
        assert!(answer.status == 400 || answer.status == 404, "{value:?}: {}", answer.text);
        // Idempotency-Key: visible ASCII only (a NUL cannot even be sent as a header).
        if !value.contains('\0') && !value.contains('\u{1b}') {
            let answer = app
                .raw("PATCH", "/api/v3/customers/me", Some(&user.token), Some("application/json"), &[("idempotency-key", &value)], b"{\"area_ids\":[\"x\"]}".to_vec())
                .await;
            let expected = if value.bytes().all(|b| (0x21..=0x7e).contains(&b)) { 422 } else { 400 };
            assert_eq!(answer.status, expected, "{value:?}: {}", answer.text);
        }
    }
    app.assert_unchanged(&before, "after metacharacters in customer fields").await;
    assert_eq!(table_lists(&app).await, tables);
}

#[tokio::test]
async fn over_long_values_are_422_at_the_limit_plus_one() {
    let app = app().await;
    let register = |name: String, email: String, password: String| {
        let app = &app;
        async move { app.send("POST", "/api/v3/auth/register", None, Some(json!({"name": name, "email": email, "password": password}))).await }
    };
    let ok = register("é".repeat(255), "max@example.org".into(), PASSWORD.into()).await;
    assert_eq!(ok.status, 201, "255 characters is the limit: {}", ok.text);
    for (name, email, password, field, code) in [
        ("é".repeat(256), "a@example.org".to_string(), PASSWORD.to_string(), "name", "too_long"),
        ("n".repeat(60_000), "a@example.org".to_string(), PASSWORD.to_string(), "name", "too_long"),
        ("N".to_string(), format!("{}@example.org", "a".repeat(65)), PASSWORD.to_string(), "email", "invalid_email"),
        ("N".to_string(), format!("a@{}.org", "b".repeat(250)), PASSWORD.to_string(), "email", "too_long"),
        ("N".to_string(), format!("a@{}", "b".repeat(60_000)), PASSWORD.to_string(), "email", "too_long"),
        ("N".to_string(), "a@example.org".to_string(), "p".repeat(129), "password", "too_long"),
        ("N".to_string(), "a@example.org".to_string(), "🦀".repeat(129), "password", "too_long"),
    ] {
        let answer = register(name, email, password).await;
        assert_problem(&answer, 422, "validation_failed");
        assert_eq!((answer.body["errors"][0]["field"].as_str(), answer.body["errors"][0]["code"].as_str()), (Some(field), Some(code)), "{}", answer.text);
    }
    assert_eq!(db_rows(&app.app.auth_db, "SELECT COUNT(*) FROM client_auth").await[0][0], "1");
    // 128 characters of a 4-byte character is a password (limits count characters, not bytes).
    assert_eq!(register("N".into(), "crab@example.org".into(), "🦀".repeat(128)).await.status, 201);

    let service = app.customer_service.service_token("customer");
    let too_many: Vec<String> = (0..101).map(|i| format!("id-{i}")).collect();
    assert_problem(&app.send("POST", "/api/v3/users/batch", Some(&service), Some(json!({"ids": too_many}))).await, 422, "validation_failed");
    let longest = "é".repeat(255);
    let batch = app.send("POST", "/api/v3/users/batch", Some(&service), Some(json!({"ids": [longest]}))).await;
    assert_eq!((batch.status, batch.body["missing"][0].as_str()), (200, Some(longest.as_str())), "{}", batch.text);
    // The fullest batch the body limit lets through: 85 ids of 255 three-byte characters and one
    // to fill up to 64 KiB. Its audit row cannot list every id (the column holds 65,535 bytes):
    // it lists what fits and counts the rest, and the read is answered.
    let mut ids: Vec<String> = (0..85).map(|i| format!("{i:02}{}", "€".repeat(253))).collect();
    let body_len = |ids: &[String]| serde_json::to_vec(&json!({"ids": ids})).expect("json").len();
    ids.push(String::new());
    let room = (64 * 1024 - body_len(&ids)) / 3;
    ids[85] = "€".repeat(room);
    assert!(body_len(&ids) > 65_525 && body_len(&ids) <= 64 * 1024, "{}", body_len(&ids));
    let batch = app.send("POST", "/api/v3/users/batch", Some(&service), Some(json!({"ids": ids}))).await;
    assert_eq!((batch.status, batch.body["missing"].as_array().map(Vec::len)), (200, Some(86)), "{}", batch.text);
    let detail = db_rows(&app.app.auth_db, "SELECT detail FROM audit_log WHERE event = 'service_read' ORDER BY id DESC LIMIT 1").await;
    let detail: serde_json::Value = serde_json::from_str(&detail[0][0]).expect("json");
    let listed = detail["ids"].as_array().expect("ids").len();
    assert!(listed >= 80 && listed + detail["ids_omitted"].as_u64().unwrap_or(0) as usize == 86, "{detail}");

    let user = app.user("Ada", "ada@example.org").await;
    app.customer(&user).await;
    let before = app.snapshot().await;
    let long_price = format!("price_{}", "x".repeat(250));
    let answer = app.send("POST", "/api/v3/customers/me/subscriptions", Some(&user.token), Some(json!({"price_id": long_price}))).await;
    assert_eq!((answer.status, answer.body["errors"][0]["field"].as_str()), (422, Some("price_id")), "{}", answer.text);
    let ids: Vec<u32> = (1..=101).collect();
    let answer = app.send("PATCH", "/api/v3/customers/me", Some(&user.token), Some(json!({"area_ids": ids}))).await;
    assert_eq!((answer.status, answer.body["errors"][0]["field"].as_str()), (422, Some("area_ids")), "{}", answer.text);
    let key = "k".repeat(256);
    let answer = app.raw("PATCH", "/api/v3/customers/me", Some(&user.token), Some("application/json"), &[("idempotency-key", &key)], b"{\"area_ids\":[5]}".to_vec()).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("invalid_idempotency_key")), "{}", answer.text);
    let too_long_id = app.send("POST", "/api/v3/users/batch", Some(&service), Some(json!({"ids": ["a", "x".repeat(256)]}))).await;
    assert_problem(&too_long_id, 422, "validation_failed");
    assert_eq!(too_long_id.body["errors"][0]["field"], "ids[1]");
    assert_problem(&app.send("GET", &format!("/api/v3/users/{}", "u".repeat(10_000)), Some(&service), None).await, 404, "user_not_found");
    let answer = app.send("GET", &format!("/api/v3/customers/{}", "c".repeat(300)), Some(&app.ops.service_token("ops")), None).await;
    assert_eq!(answer.status, 404, "{}", answer.text);
    let answer = app.send("GET", &format!("/api/v3/customers/me/invoices?starting_after=in_{}", "x".repeat(300)), Some(&user.token), None).await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    app.assert_unchanged(&before, "after over-long customer values").await;
}

/// Every route that reads a JSON body: (method, path, needs a user token, a valid body).
fn body_routes() -> Vec<(&'static str, &'static str, bool, Value)> {
    vec![
        ("POST", "/api/v3/auth/register", false, json!({"name": "Body", "email": "body@example.org", "password": PASSWORD})),
        ("POST", "/api/v3/auth/login", false, json!({"email": "body@example.org", "password": PASSWORD})),
        ("POST", "/api/v3/auth/refresh", false, json!({"refresh_token": "x"})),
        ("POST", "/api/v3/auth/logout", false, json!({"refresh_token": "x"})),
        ("PATCH", "/api/v3/users/me", true, json!({"name": "New"})),
        ("PUT", "/api/v3/users/me/password", true, json!({"current_password": PASSWORD, "new_password": "another-secret-2"})),
        ("DELETE", "/api/v3/users/me", true, json!({"password": PASSWORD})),
        ("POST", "/api/v3/users/batch", true, json!({"ids": ["x"]})),
        ("POST", "/api/v3/customers", true, json!({"area_ids": [1]})),
        ("PATCH", "/api/v3/customers/me", true, json!({"area_ids": [1]})),
        ("POST", "/api/v3/customers/me/subscriptions", true, json!({"price_id": "price_x"})),
    ]
}

/// POSTs `total` bytes of JSON whitespace in 16 KiB chunks with no Content-Length (what a client
/// streaming an upload sends) and returns the status and the raw answer. The answer may come
/// before the body is all sent: the sender is dropped then.
async fn chunked_post(app: &Full, path: &str, total: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let base = app.app.url("");
    let address = base.trim_start_matches("http://").trim_end_matches('/').to_string();
    let stream = tokio::net::TcpStream::connect(&address).await.expect("the host listens");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 16 * 1024];
        for _ in 0..total / chunk.len() {
            writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
            writer.write_all(&chunk).await?;
            writer.write_all(b"\r\n").await?;
        }
        writer.write_all(b"0\r\n\r\n").await?;
        // Kept open until the answer is read: a half-closed connection is dropped by the
        // server unanswered (hyper's default), as by Spin's.
        Ok::<_, std::io::Error>(writer)
    });
    let mut answer = Vec::new();
    let _ = reader.read_to_end(&mut answer).await;
    sender.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, text)
}

/// spin-sdk's own request reader keeps a body whole in memory: a large enough upload would fill
/// the instance's memory (a trap, a 500) before any route could refuse it. Each component reads
/// at most the largest body one of its routes takes (auth 64 KiB, customer 512 KiB for the
/// webhook), and refuses the rest unread with its 413.
#[tokio::test]
async fn a_streamed_body_over_the_limit_is_refused_before_it_is_read_whole() {
    let app = app().await;
    for (component, path, limit) in [("auth", "/api/v3/auth/login", 64 * 1024), ("customer", "/api/v3/billing/stripe/webhook", 512 * 1024)] {
        let (status, text) = chunked_post(&app, path, 8 * limit).await;
        assert_eq!(status, 413, "{path}: {text}");
        assert!(text.contains("application/problem+json") && text.contains("payload_too_large"), "{path}: {text}");
        let lowercase = text.to_ascii_lowercase();
        assert!(lowercase.contains("cache-control: no-store") && lowercase.contains("x-content-type-options: nosniff"), "{path}: {text}");
        let refused = app.app.host.log().lines().any(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|l| l["component"] == component && l["message"] == "request body too large")
        });
        assert!(refused, "{component} did not stop reading:\n{}", app.app.host.log());
    }
    // Within the limit, a streamed body is read whole as before: judged on its content.
    let (status, text) = chunked_post(&app, "/api/v3/auth/login", 32 * 1024).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("malformed_json"), "{text}");
}

fn is_customer(path: &str) -> bool {
    path.starts_with("/api/v3/customers")
}

#[tokio::test]
async fn huge_bodies_are_413_and_wrong_content_types_are_415_on_every_body_route() {
    let app = app().await;
    let user = app.user("Ada", "ada@example.org").await;
    app.customer(&user).await;
    let before = app.snapshot().await;
    let just_over = {
        let mut body = br#"{"name":""#.to_vec();
        body.resize(64 * 1024 + 1 - 2, b'a');
        body.extend_from_slice(br#""}"#);
        body
    };
    assert_eq!(just_over.len(), 64 * 1024 + 1);
    let five_mb = vec![b' '; 5 * 1024 * 1024];
    for (method, path, needs_token, valid) in body_routes() {
        let token = needs_token.then_some(user.token.as_str());
        for body in [&just_over, &five_mb] {
            let answer = app.raw(method, path, token, Some("application/json"), &[], body.clone()).await;
            assert_eq!((answer.status, answer.body["code"].as_str()), (413, Some("payload_too_large")), "{method} {path} {} bytes: {}", body.len(), answer.text);
        }
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/xml"),
            Some("application/jsonx"),
            Some("application/json-patch+json"),
            Some("text/json"),
            Some(""),
        ] {
            let answer = app.raw(method, path, token, content_type, &[], valid.to_string().into_bytes()).await;
            assert_eq!(
                (answer.status, answer.body["code"].as_str()),
                (415, Some("unsupported_media_type")),
                "{method} {path} as {content_type:?}: {}",
                answer.text
            );
        }
        // Parameters and case are fine.
        let answer = app.raw(method, path, token, Some("Application/JSON; charset=utf-8"), &[], b"{}".to_vec()).await;
        assert_eq!(answer.status, 422, "{method} {path}: {}", answer.text);
    }
    // The webhook reads up to 512 KiB (Stripe's events can be large), then 413.
    let answer = app.raw("POST", "/api/v3/billing/stripe/webhook", None, Some("application/json"), &[("stripe-signature", "t=1,v1=00")], vec![b' '; 512 * 1024 + 1]).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (413, Some("payload_too_large")), "{}", answer.text);
    app.assert_unchanged(&before, "after huge bodies and wrong content types").await;
    assert_eq!(db_rows(&app.app.auth_db, "SELECT COUNT(*) FROM client_auth").await[0][0], "1", "no registration went through");
}

/// A header that has one value, sent twice: 400 `repeated_header` naming it, whichever line
/// holds the good value. spin-sdk keeps only the last line of a name, so without the entry
/// point's check a bogus token followed by a good one was let in.
fn assert_repeated(answer: &support::Answer, field: &str, what: &str) {
    assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("repeated_header")), "{what}: {}", answer.text);
    assert_problem(answer, 400, "repeated_header");
    assert!(answer.text.contains(&format!("`{field}`")), "{what}: the detail names {field}: {}", answer.text);
    let challenge = (field == "authorization").then_some(r#"Bearer error="invalid_request""#);
    assert_eq!(answer.www_authenticate.as_deref(), challenge, "{what}");
}

#[tokio::test]
async fn headers_with_one_value_sent_twice_are_400_and_change_nothing() {
    let app = app().await;
    let user = app.user("Ada", "ada@example.org").await;
    app.customer(&user).await;
    let before = app.snapshot().await;
    let good = format!("Bearer {}", user.token);
    let bogus = "Bearer not-a-token";
    let mut routes = body_routes();
    routes.push(("GET", "/api/v3/users/me", true, Value::Null));
    routes.push(("GET", "/api/v3/customers/me", true, Value::Null));
    for (method, path, _, valid) in routes {
        let body = if valid.is_null() { Vec::new() } else { valid.to_string().into_bytes() };
        let json = Some("application/json");
        for (first, second) in [(good.as_str(), bogus), (bogus, good.as_str())] {
            let headers = [("authorization", first), ("authorization", second)];
            let answer = app.raw(method, path, None, json, &headers, body.clone()).await;
            assert_repeated(&answer, "authorization", &format!("{method} {path}, {first:.12}… then {second:.12}…"));
        }
        if valid.is_null() {
            continue;
        }
        let answer = app.raw(method, path, Some(&user.token), json, &[("content-type", "application/json")], body.clone()).await;
        assert_repeated(&answer, "content-type", &format!("{method} {path}"));
        if is_customer(path) {
            let answer = app.raw(method, path, Some(&user.token), json, &[("idempotency-key", "one"), ("idempotency-key", "two")], body.clone()).await;
            assert_repeated(&answer, "idempotency-key", &format!("{method} {path}"));
        }
    }
    // A webhook with two Stripe-Signature lines, each valid on its own.
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    let event = br#"{"id":"evt_twice","object":"event","type":"bench.ping","created":1,"data":{"object":{}}}"#.to_vec();
    let signature = attack::stripe_signature_bytes(&secret, cs::now(), &event);
    let headers = [("stripe-signature", signature.as_str()), ("stripe-signature", signature.as_str())];
    let answer = app.raw("POST", "/api/v3/billing/stripe/webhook", None, Some("application/json"), &headers, event).await;
    assert_repeated(&answer, "stripe-signature", "webhook");
    app.assert_unchanged(&before, "after repeated headers").await;
    // One line each still works.
    let answer = app.raw("GET", "/api/v3/users/me", Some(&user.token), None, &[], Vec::new()).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn invalid_utf8_deep_nesting_odd_numbers_and_duplicate_keys() {
    let app = app().await;
    let user = app.user("Ada", "ada@example.org").await;
    app.customer(&user).await;
    let before = app.snapshot().await;
    let deep_array = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let deep_object = |depth: usize| format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes();
    let in_field = |field: &str, depth: usize| format!("{{\"{field}\":{}1{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    for (method, path, needs_token, _) in body_routes() {
        let token = needs_token.then_some(user.token.as_str());
        let field = if is_customer(path) { "area_ids" } else { "name" };
        for (what, body) in [
            ("invalid UTF-8 in a string", b"{\"name\":\"\xff\xfe\",\"area_ids\":[1]}".to_vec()),
            ("overlong UTF-8 encoding of '/'", b"{\"name\":\"\xc0\xaf\"}".to_vec()),
            ("a lone surrogate escape", br#"{"name":"\ud800","area_ids":[1]}"#.to_vec()),
            ("UTF-16 body", "{\"a\":1}".encode_utf16().flat_map(u16::to_le_bytes).collect()),
            ("30,000 nested arrays", deep_array(30_000)),
            ("10,000 nested objects", deep_object(10_000)),
            ("129 nested arrays in a field", in_field(field, 129)),
            ("a number beyond f64", format!("{{\"{field}\":[1e400]}}").into_bytes()),
            ("truncated", b"{\"name\":\"abc".to_vec()),
            ("trailing garbage", b"{}{}".to_vec()),
        ] {
            let answer = app.raw(method, path, token, Some("application/json"), &[], body).await;
            assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("malformed_json")), "{what}: {method} {path}: {}", answer.text);
        }
    }
    // Webhook: signed, but not an event we can read.
    let secret = app.app.variables["stripe_webhook_secret"].clone();
    for body in [b"{\"id\":\"evt_\xff\",\"type\":\"ping\",\"created\":1}".to_vec(), deep_array(30_000), deep_object(10_000)] {
        let signature = attack::stripe_signature_bytes(&secret, cs::now(), &body);
        let answer = app.raw("POST", "/api/v3/billing/stripe/webhook", None, Some("application/json"), &[("stripe-signature", &signature)], body).await;
        assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("invalid_event")), "{}", answer.text);
    }

    // Numbers out of range or of the wrong kind, where an area id (1..=2^31-1) is expected.
    for (value, field) in [
        ("0", "area_ids[0]"),
        ("-1", "area_ids[0]"),
        ("-0", "area_ids[0]"),
        ("2147483648", "area_ids[0]"),
        ("4294967297", "area_ids[0]"),
        ("9223372036854775808", "area_ids[0]"),
        ("-9223372036854775809", "area_ids[0]"),
        ("18446744073709551616", "area_ids[0]"),
        ("1.5", "area_ids[0]"),
        ("1.0", "area_ids[0]"),
        ("1e3", "area_ids[0]"),
        ("true", "area_ids[0]"),
        ("null", "area_ids[0]"),
    ] {
        let body = format!("{{\"area_ids\":[{value}]}}").into_bytes();
        let answer = app.raw("PATCH", "/api/v3/customers/me", Some(&user.token), Some("application/json"), &[], body).await;
        assert_eq!((answer.status, answer.body["errors"][0]["field"].as_str()), (422, Some(field)), "{value}: {}", answer.text);
    }
    // Where a string is expected, a number (even a huge one) is a type error.
    let answer = app.raw("POST", "/api/v3/auth/register", None, Some("application/json"), &[], br#"{"name":1e300,"email":18446744073709551616,"password":-0}"#.to_vec()).await;
    assert_problem(&answer, 422, "validation_failed");
    let codes: Vec<&str> = answer.body["errors"].as_array().unwrap().iter().map(|e| e["code"].as_str().unwrap()).collect();
    assert_eq!(codes, vec!["invalid_type"; 3]);

    // Duplicated keys: refused by both services (a proxy and the service could otherwise read
    // different values from one body).
    let dup_register = br#"{"name":"Ada","name":"Mallory","email":"dup@example.org","password":"analytical-engine-1843"}"#.to_vec();
    let answer = app.raw("POST", "/api/v3/auth/register", None, Some("application/json"), &[], dup_register).await;
    assert_problem(&answer, 400, "malformed_json");
    let dup_patch = br#"{"name":"Ada","name":"Mallory"}"#.to_vec();
    let answer = app.raw("PATCH", "/api/v3/users/me", Some(&user.token), Some("application/json"), &[], dup_patch).await;
    assert_problem(&answer, 400, "malformed_json");
    let dup_areas = br#"{"area_ids":[1],"area_ids":[2]}"#.to_vec();
    let answer = app.raw("PATCH", "/api/v3/customers/me", Some(&user.token), Some("application/json"), &[], dup_areas).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("malformed_json")), "{}", answer.text);
    let dup_price = br#"{"price_id":"price_a","price_id":"price_b"}"#.to_vec();
    let answer = app.raw("POST", "/api/v3/customers/me/subscriptions", Some(&user.token), Some("application/json"), &[], dup_price).await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (400, Some("malformed_json")), "{}", answer.text);

    app.assert_unchanged(&before, "after malformed bodies").await;
    assert_eq!(db_rows(&app.app.auth_db, "SELECT COUNT(*) FROM client_auth").await[0][0], "1");
    assert_eq!(app.send("GET", "/api/v3/users/me", Some(&user.token), None).await.body["user"]["name"], "Ada");
    let answer = app.send("PATCH", "/api/v3/customers/me", Some(&user.token), Some(json!({"area_ids": [2147483647]}))).await;
    assert_eq!((answer.status, answer.body["area_ids"].clone()), (200, json!([2147483647])), "the largest id is fine: {}", answer.text);
}
