//! Both components run as app users holding only what `admin grants` prints: every table read and
//! written, the audit log only appended to, no schema privilege. The whole journey works; with
//! the same credentials the audit trail cannot be changed or deleted, nor the schema touched.

#[path = "auth_support.rs"]
mod support;

#[path = "customer_support.rs"]
mod cs;

#[path = "attack_support.rs"]
mod attack;

use admin::grants::{self, Account};
use integration_tests::{HostProcess, TestDatabase, repo_root};
use mysql_async::prelude::Queryable as _;
use serde_json::{Value, json};
use support::{Answer, PASSWORD};

/// A fresh MySQL account on the stack's server, granted what `admin grants` prints for `db`;
/// returns its URL for `db`.
async fn app_user_for(db: &TestDatabase) -> (String, String) {
    let name = format!("t_app_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut admin = mysql_async::Conn::from_url(integration_tests::stack_setting("DB_ADMIN_URL").unwrap().as_str()).await.expect("admin connection");
    admin.query_drop(format!("CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{password}'")).await.expect("create user");
    admin.query_drop(format!("CREATE USER '{name}'@'localhost' IDENTIFIED BY '{password}'")).await.expect("create user");
    let mut migrator = admin::legacy::connect(&db.url).await.expect("migration connection");
    for host in ["127.0.0.1", "localhost"] {
        // mysql_async reconnects through the server's Unix socket on a loopback address: both hosts.
        let account = Account::parse(&format!("{name}@{host}")).unwrap();
        for statement in grants::statements(&mut migrator, &account).await.expect("grants") {
            admin.query_drop(&statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }
    admin.disconnect().await.ok();
    (name.clone(), format!("mysql://{name}:{password}@{}/{}", db.address, db.name))
}

async fn drop_user(name: &str) {
    let mut admin = mysql_async::Conn::from_url(integration_tests::stack_setting("DB_ADMIN_URL").unwrap().as_str()).await.expect("admin connection");
    admin.query_drop(format!("DROP USER IF EXISTS '{name}'@'127.0.0.1', '{name}'@'localhost'")).await.ok();
    admin.disconnect().await.ok();
}

async fn send(client: &reqwest::Client, host: &HostProcess, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
    let mut request = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), host.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    attack::answer(request.send().await.expect("request sent")).await
}

/// The MySQL error number of `sql` run as `url`, or 0 when it succeeds.
async fn error_of(url: &str, sql: &str) -> u16 {
    let mut conn = mysql_async::Conn::from_url(url).await.expect("app connection");
    let code = match conn.query_drop(sql).await {
        Ok(()) => 0,
        Err(mysql_async::Error::Server(err)) => err.code,
        Err(err) => panic!("{sql}: {err}"),
    };
    conn.disconnect().await.ok();
    code
}

#[tokio::test]
async fn the_app_runs_with_least_privilege_and_cannot_rewrite_its_audit_log() {
    let full = attack::full().await;
    let (auth_user, auth_url) = app_user_for(&full.app.auth_db).await;
    let (customer_user, customer_url) = app_user_for(&full.app.customer_db).await;
    let mut variables = full.app.variables.clone();
    variables.insert("auth_db_url".into(), auth_url.clone());
    variables.insert("customer_db_url".into(), customer_url.clone());
    let host = HostProcess::start(&repo_root().join("spin.toml"), &variables).await.expect("host starts");
    let client = &full.app.client;

    // Every kind of write each service makes.
    let registered = send(client, &host, "POST", "/api/v3/auth/register", None, Some(json!({"name": "Ada", "email": "ada@example.org", "password": PASSWORD}))).await;
    assert_eq!(registered.status, 201, "{}\n{}", registered.text, host.log());
    let wrong = send(client, &host, "POST", "/api/v3/auth/login", None, Some(json!({"email": "ada@example.org", "password": "not-the-password-1"}))).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    let session = send(client, &host, "POST", "/api/v3/auth/login", None, Some(json!({"email": "ada@example.org", "password": PASSWORD}))).await;
    assert_eq!(session.status, 200, "{}\n{}", session.text, host.log());
    let refreshed = send(client, &host, "POST", "/api/v3/auth/refresh", None, Some(json!({"refresh_token": session.body["refresh_token"]}))).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    let token = refreshed.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(send(client, &host, "PATCH", "/api/v3/users/me", Some(&token), Some(json!({"name": "Ada L."}))).await.status, 200);
    let customer = send(client, &host, "POST", "/api/v3/customers", Some(&token), Some(json!({"area_ids": [1, 2]}))).await;
    assert_eq!(customer.status, 201, "{}\n{}", customer.text, host.log());
    full.stripe.add_card(customer.body["stripe_customer_id"].as_str().unwrap()).await;
    let price = full.stripe.price("900").await;
    let subscribed = send(client, &host, "POST", "/api/v3/customers/me/subscriptions", Some(&token), Some(json!({"price_id": price}))).await;
    assert_eq!(subscribed.status, 201, "{}\n{}", subscribed.text, host.log());
    let event = json!({"id": "evt_least_privilege", "object": "event", "type": "bench.ping", "created": cs::now(), "data": {"object": {}}}).to_string();
    let signature = attack::stripe_signature_bytes(&variables["stripe_webhook_secret"], cs::now(), event.as_bytes());
    let delivered = client
        .post(host.url("/api/v3/billing/stripe/webhook"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(event)
        .send()
        .await
        .expect("webhook sent");
    assert_eq!(delivered.status(), 200, "the inbox takes the event");
    let profile = send(client, &host, "GET", "/api/v3/customers/me?include=profile", Some(&token), None).await;
    assert_eq!((profile.status, profile.body["profile"]["name"].as_str()), (200, Some("Ada L.")), "{}", profile.text);
    assert_eq!(send(client, &host, "DELETE", "/api/v3/customers/me", Some(&token), None).await.status, 204);
    // Support's `admin account` runs with the app user's credentials too (operations.md §14).
    let support = admin::legacy::CrossDb::new(Some(&auth_url), None, Some(&variables["encryption_key"]));
    let operator = admin::account::Operator::parse("jane", Some("SUP-1")).expect("operator");
    let shown = admin::account::show(&support, "ada@example.org").await.expect("show as the app user");
    assert_eq!(shown.live_sessions, 2, "registered, then signed in: {shown:?}");
    let email = sealed_email::normalize_email("ada@example.org").expect("email");
    for change in [admin::account::Change::SignOut, admin::account::Change::SetEmail { email, verified: true }] {
        let done = admin::account::apply(&support, "ada@example.org", &change, &operator).await.expect("a change as the app user");
        assert!(done.changed, "{done:?}");
    }
    assert_eq!(send(client, &host, "DELETE", "/api/v3/users/me", Some(&token), Some(json!({"password": PASSWORD}))).await.status, 204);

    // The audit logs got their rows; the app's credentials can add to them but not change them.
    for (url, table_rows) in [(&auth_url, "SELECT COUNT(*) FROM audit_log"), (&customer_url, "SELECT COUNT(*) FROM audit_log")] {
        let mut conn = mysql_async::Conn::from_url(url.as_str()).await.expect("app connection");
        let rows: Option<u64> = conn.query_first(table_rows).await.expect("count");
        assert!(rows.is_some_and(|n| n >= 2), "{url}: {rows:?}");
        conn.disconnect().await.ok();
        // 1142: command denied to user.
        assert_eq!(error_of(url, "UPDATE audit_log SET detail = 'rewritten'").await, 1142, "{url}: UPDATE");
        assert_eq!(error_of(url, "DELETE FROM audit_log").await, 1142, "{url}: DELETE");
        assert_eq!(error_of(url, "TRUNCATE TABLE audit_log").await, 1142, "{url}: TRUNCATE");
        assert_eq!(error_of(url, "DROP TABLE audit_log").await, 1142, "{url}: DROP");
        assert_eq!(error_of(url, "CREATE TABLE x (id INT)").await, 1142, "{url}: CREATE");
        assert_eq!(error_of(url, "DELETE FROM _sqlx_migrations").await, 1142, "{url}: the migrations table");
        // The seal's head and the seal columns are `admin audit seal`'s alone (1143: column denied).
        assert_eq!(error_of(url, "SELECT head FROM audit_seal").await, 1142, "{url}: the seal's head");
        assert_eq!(error_of(url, "UPDATE audit_seal SET rows_sealed = 0").await, 1142, "{url}: the seal's head");
        assert_eq!(error_of(url, "INSERT INTO audit_log (actor, detail, seal) VALUES ('x', 'pre-sealed', REPEAT('a', 64))").await, 1143, "{url}: a pre-sealed row");
    }
    drop(host);
    drop_user(&auth_user).await;
    drop_user(&customer_user).await;
}
