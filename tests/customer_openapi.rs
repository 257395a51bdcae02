//! openapi/customer.yaml describes exactly the routes customer serves: the operations in the
//! document equal the routes in components/customer/src/lib.rs, each documented operation is
//! answered by the running component (never the router's "no such route"), HEAD wherever GET
//! is, and any other method on a documented path gets 405 with an `Allow` of the documented ones.

use std::collections::BTreeSet;

use integration_tests::{assert_security_headers, expected_allow, openapi_operations, repo_root, spawn_app};
use serde_json::Value;

/// The routes in customer's route table (`ROUTES` in lib.rs): `("GET", "/api/...", handler),`.
fn served() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(repo_root().join("components/customer/src/lib.rs")).unwrap();
    let table = source.split("const ROUTES").nth(1).and_then(|rest| rest.split("];").next()).expect("ROUTES in lib.rs");
    let mut ops = BTreeSet::new();
    for line in table.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("(\"") else { continue };
        let mut quoted = rest.split('"');
        let (method, path) = (quoted.next().unwrap(), quoted.nth(1).unwrap());
        let path: Vec<String> = path
            .split('/')
            .map(|seg| seg.strip_prefix(':').map_or(seg.to_string(), |name| format!("{{{name}}}")))
            .collect();
        ops.insert((method.to_string(), path.join("/")));
    }
    ops
}

#[test]
fn the_document_lists_exactly_the_served_routes() {
    let (doc, documented) = openapi_operations("customer.yaml");
    assert_eq!(doc["openapi"].as_str().unwrap_or(""), "3.1.0");
    let served = served();
    assert!(served.len() >= 12, "{served:?}");
    assert_eq!(documented, served, "openapi/customer.yaml and lib.rs disagree");
}

#[tokio::test]
async fn every_documented_operation_is_answered_by_customer() {
    let (doc, documented) = openapi_operations("customer.yaml");
    let app = spawn_app().await.expect("app starts");
    for (method, path) in documented {
        // In the combined app /api/v3/auth/login is auth's: customer serves it only when deployed alone.
        if doc["paths"][path.as_str()][method.to_lowercase().as_str()]["x-split-deployment-only"].as_bool() == Some(true) {
            continue;
        }
        let concrete = path.replace("{id}", "00000000-0000-4000-8000-000000000000");
        let response = app.client.request(method.parse().unwrap(), app.url(&concrete)).send().await.unwrap();
        let status = response.status().as_u16();
        // Billing data, names and emails: no cache may keep any answer.
        let cache_control = response.headers().get("cache-control").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(cache_control.as_deref(), Some("no-store"), "{method} {path}");
        assert_security_headers(response.headers(), &format!("{method} {path}"));
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !(status == 404 && body["code"] == "not_found" && body["detail"].as_str().unwrap_or("").starts_with("No resource")),
            "{method} {path} is not routed: {body}"
        );
    }
}

#[tokio::test]
async fn other_methods_get_405_with_allow_and_head_is_served_wherever_get_is() {
    let (doc, documented) = openapi_operations("customer.yaml");
    let app = spawn_app().await.expect("app starts");
    let paths: BTreeSet<&str> = documented.iter().map(|(_, path)| path.as_str()).collect();
    for path in paths {
        // Auth serves /api/v3/auth/login in the combined app (405s there are auth's, tested in auth_openapi.rs).
        if doc["paths"][path]["post"]["x-split-deployment-only"].as_bool() == Some(true) {
            continue;
        }
        let concrete = path.replace("{id}", "00000000-0000-4000-8000-000000000000");
        let served = |method: &str| documented.contains(&(method.to_string(), path.to_string()));
        // The literal /customers/me outranks /customers/{id}, so {id}'s methods are not offered there.
        let allow = expected_allow(&documented, path);
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            if served(method) {
                continue;
            }
            let response = app.client.request(method.parse().unwrap(), app.url(&concrete)).send().await.unwrap();
            let allowed = response.headers().get("allow").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!((status, body["code"].as_str()), (405, Some("method_not_allowed")), "{method} {path}: {body}");
            assert_eq!(allowed.as_deref(), Some(allow.as_str()), "{method} {path}: Allow");
        }
        if served("GET") {
            let head = app.client.head(app.url(&concrete)).send().await.unwrap();
            let get = app.client.get(app.url(&concrete)).send().await.unwrap();
            let content_type = |r: &reqwest::Response| r.headers().get("content-type").cloned();
            assert_eq!((head.status(), content_type(&head)), (get.status(), content_type(&get)), "HEAD {path}");
            assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path} has no body");
        }
    }
    let response = app.client.get(app.url("/api/v3/customers/me/nothing")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_security_headers(response.headers(), "a 404");
    assert!(response.headers().get("allow").is_none());
}
