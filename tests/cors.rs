//! Browsers on other origins (CORS): off by default; with `cors_allowed_origins` set, a listed
//! origin's preflight and requests are answered for it, on both components, and nothing else is.

use integration_tests::{TestApp, assert_security_headers, spawn_app, spawn_app_with};
use reqwest::header::HeaderMap;
use serde_json::Value;

const PAGE: &str = "https://app.example.com";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A browser's preflight of a `method` request to `path` from a page of `origin`.
async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("answered")
}

#[tokio::test]
async fn a_listed_origin_may_call_both_components_and_no_other_may() {
    let app = spawn_app_with(|vars| {
        vars.insert("cors_allowed_origins".into(), format!("{PAGE}, http://localhost:5173"));
    })
    .await
    .expect("app starts");
    for path in ["/api/v3/auth/login", "/api/v3/customers/me"] {
        // The preflight of a JSON request with a token, from the listed origin.
        let allowed = preflight(&app, path, PAGE, "POST").await;
        let headers = allowed.headers().clone();
        assert_eq!(allowed.status().as_u16(), 204, "{path}");
        assert_eq!(header(&headers, "access-control-allow-origin"), Some(PAGE), "{path}");
        assert!(header(&headers, "access-control-allow-methods").is_some_and(|m| m.contains("POST")), "{path}");
        let allowed_headers = header(&headers, "access-control-allow-headers").unwrap_or("");
        for needed in ["authorization", "content-type", "idempotency-key"] {
            assert!(allowed_headers.contains(needed), "{path}: {allowed_headers}");
        }
        assert!(header(&headers, "access-control-allow-credentials").is_none(), "tokens are no cookies");
        assert_security_headers(&headers, path);

        // Another origin's preflight: 403, nothing allowed.
        let refused = preflight(&app, path, "https://app.example.com.evil.org", "POST").await;
        assert_eq!(refused.status().as_u16(), 403, "{path}");
        assert!(refused.headers().get("access-control-allow-origin").is_none(), "{path}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "origin_not_allowed", "{path}");
    }

    // The request itself: readable by the listed origin, with our headers exposed; not by others.
    for path in ["/api/v3/auth/health", "/api/v3/customers/health", "/api/v3/users/me", "/api/v3/customers/me"] {
        let answer = app.client.get(app.url(path)).header("origin", PAGE).send().await.unwrap();
        assert_eq!(header(answer.headers(), "access-control-allow-origin"), Some(PAGE), "{path}");
        let exposed = header(answer.headers(), "access-control-expose-headers").unwrap_or("");
        assert!(exposed.contains("x-request-id") && exposed.contains("retry-after"), "{path}: {exposed}");
        assert_eq!(header(answer.headers(), "vary"), Some("origin"), "{path}");
        let other = app.client.get(app.url(path)).header("origin", "http://localhost:5174").send().await.unwrap();
        assert!(other.headers().get("access-control-allow-origin").is_none(), "{path}");
        assert_eq!(other.status(), answer.status(), "{path}: the answer itself is the same");
        let no_origin = app.client.get(app.url(path)).send().await.unwrap();
        assert!(no_origin.headers().get("access-control-allow-origin").is_none(), "{path}");
    }
    // An OPTIONS that is no preflight is still a method the routes do not serve.
    let plain = app.client.request(reqwest::Method::OPTIONS, app.url("/api/v3/customers/me")).header("origin", PAGE).send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 405);
}

#[tokio::test]
async fn without_the_variable_no_origin_is_allowed_and_a_bad_value_is_named() {
    let app = spawn_app().await.expect("app starts");
    assert_eq!(preflight(&app, "/api/v3/auth/login", PAGE, "POST").await.status().as_u16(), 403);
    let answer = app.client.get(app.url("/api/v3/auth/health")).header("origin", PAGE).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert!(answer.headers().get("access-control-allow-origin").is_none());

    let app = spawn_app_with(|vars| {
        vars.insert("cors_allowed_origins".into(), "app.example.com/".into());
    })
    .await
    .expect("app starts");
    let misconfigured = preflight(&app, "/api/v3/customers/me", PAGE, "GET").await;
    assert_eq!(misconfigured.status().as_u16(), 500);
    let body: Value = misconfigured.json().await.unwrap();
    assert_eq!(body["code"], "configuration_error", "{body}");
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(detail.contains("cors_allowed_origins") && !detail.contains("app.example.com"), "names the variable, not its value: {detail}");
    // Requests without an Origin are not concerned.
    assert_eq!(app.client.get(app.url("/api/v3/auth/health")).send().await.unwrap().status().as_u16(), 200);
}
