//! The foundation's promises, end to end: both components serve from real `.wasm` files on the
//! local host against real MariaDB; customer reaches auth by service chaining; a dead database
//! gives a 503 problem+json (not a hang: the client gives up after 30 s) and recovers.

use std::time::Duration;

use integration_tests::mariadb::PrivateMariaDb;
use integration_tests::{HostProcess, TestDatabase, app_variables, repo_root, spawn_app};
use serde_json::Value;

#[tokio::test]
async fn both_health_routes_report_their_database() {
    let app = spawn_app().await.expect("app starts");
    for path in ["/api/v3/auth/health", "/api/v3/customers/health"] {
        let response = app.client.get(app.url(path)).send().await.expect("health answers");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "ok", "{path}: {body}");
        assert_eq!(body["database"], "ok", "{path}: {body}");
    }
}

#[tokio::test]
async fn customer_reaches_auth_through_service_chaining() {
    let app = spawn_app().await.expect("app starts");
    let body: Value = app
        .client
        .get(app.url("/api/v3/customers/health"))
        .send()
        .await
        .expect("health answers")
        .json()
        .await
        .expect("json");
    assert_eq!(body["auth"]["status"], "ok", "{body}");
    assert!(body["auth"]["latency_ms"].as_f64().is_some(), "{body}");
    // The host dispatched the call in process: auth logged it as a chained request.
    let log = app.host.log();
    assert!(
        log.lines().any(|l| l.contains("component=auth") && l.contains("chained=true") && l.contains("/api/v3/auth/health")),
        "no chained request to auth in the host log:\n{log}"
    );
}

#[tokio::test]
async fn unknown_routes_get_404() {
    let app = spawn_app().await.expect("app starts");
    let outside = app.client.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(outside.status(), 404);
    let inside = app.client.get(app.url("/api/v3/auth/nope")).send().await.unwrap();
    assert_eq!(inside.status(), 404);
    assert_eq!(inside.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_dead_database_gives_a_503_problem_and_health_recovers() {
    let mut database = PrivateMariaDb::start().await.expect("private MariaDB starts");
    let auth_db = TestDatabase::create_on(&database.admin_url(), "auth").await.unwrap();
    let customer_db = TestDatabase::create_on(&database.admin_url(), "customer").await.unwrap();
    let variables = app_variables(&auth_db, &customer_db).unwrap();
    let host = HostProcess::start(&repo_root().join("spin.toml"), &variables).await.expect("host starts");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let health = |path: &'static str| {
        let client = client.clone();
        let url = host.url(path);
        async move { client.get(url).send().await.expect("health answers") }
    };

    assert_eq!(health("/api/v3/auth/health").await.status(), 200);

    database.kill().await;
    for path in ["/api/v3/auth/health", "/api/v3/customers/health"] {
        let response = health(path).await;
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        assert!(retry_after.is_some_and(|secs| secs > 0), "{path}: Retry-After {retry_after:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], 503, "{path}: {body}");
        assert_eq!(body["code"], "database_unavailable", "{path}: {body}");
    }

    database.resume().await.expect("MariaDB restarts");
    for path in ["/api/v3/auth/health", "/api/v3/customers/health"] {
        assert_eq!(health(path).await.status(), 200, "{path} after the restart");
    }
    drop(auth_db);
    drop(customer_db);
}
